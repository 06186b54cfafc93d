use super::*;

#[test]
fn config_problems_are_listed() {
    let cfg: SftpSourceConfig = serde_json::from_value(serde_json::json!({
        "host": "sftp.example.it", "user": "snodo", "path": "/in",
        "settle": "30", "timeout": "0s"
    }))
    .unwrap();
    let p = cfg.check().join("\n");
    assert!(p.contains("no host key pinned"), "{p}");
    assert!(p.contains("no credentials"), "{p}");
    assert!(p.contains("settle"), "{p}");
    assert!(p.contains("timeout"), "{p}");
    assert!(SftpSource::new(&cfg).is_err(), "no accept-any default");
    let mut marked = cfg.clone();
    marked.marker = Some("sha1".into());
    let p = marked.check().join("\n");
    assert!(p.contains("marker \"sha1\" is not known"), "{p}");
    for ok in ["done", "md5"] {
        marked.marker = Some(ok.into());
        assert!(!marked.check().join("\n").contains("marker"), "{ok}");
    }

    let cfg: SftpSinkConfig = serde_json::from_value(serde_json::json!({
        "host": "h", "user": "u", "path": "/out", "key": "/k",
        "known_host": "MD5:aa:bb", "passphrase_env": "P"
    }))
    .unwrap();
    let p = cfg.check().join("\n");
    assert!(p.contains("SHA256"), "{p}");
    assert_eq!(cfg.check().len(), 1, "{p}");

    let ok: SftpSinkConfig = serde_json::from_value(serde_json::json!({
        "host": "h", "user": "u", "path": "/out", "password_env": "PW",
        "known_host": "SHA256:HPauksUw203V1Vd7oc99aEKBxp4ubzTWDZawljWfqtk"
    }))
    .unwrap();
    assert!(ok.check().is_empty(), "{:?}", ok.check());
    assert!(serde_json::from_value::<SftpSinkConfig>(serde_json::json!({
        "host": "h", "user": "u", "path": "/out", "pasword_env": "PW"
    }))
    .is_err());
}

#[test]
fn fingerprints_read_like_ssh_keygen() {
    // The ed25519 key above, as `ssh-keygen -lf` prints it.
    let blob = base64::engine::general_purpose::STANDARD
        .decode("AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
        .unwrap();
    let fp = fingerprint(&blob);
    assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 43, "{fp}");
    assert_eq!(parse_fingerprint(&fp).unwrap(), fp);
    assert_eq!(parse_fingerprint(&format!("{fp}=")).unwrap(), fp);
    assert!(parse_fingerprint("SHA256:short").is_err());
}
