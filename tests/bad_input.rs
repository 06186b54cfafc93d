//! Hostile and broken flows dropped on a running hub: each is set aside with a clear reason, the
//! flow status says why, memory stays bounded, and a good flow dropped alongside is imported.

mod common;
use common::*;
use std::io::Write;

fn zip_with_entry(path: &std::path::Path, entry: &str, content: &[u8]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    z.start_file(entry, zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(content).unwrap();
    z.finish().unwrap();
}

/// A zip whose CSV entry inflates to `size` bytes of zeros (written in chunks: the test itself
/// stays small in memory).
fn zip_bomb(path: &std::path::Path, stem: &str, size: u64) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().large_file(true);
    z.start_file(format!("{stem}.csv"), opts).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..(size >> 20) {
        z.write_all(&chunk).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn broken_flows_are_set_aside_and_a_good_one_still_goes_through() {
    let home = Home::new();
    let staging = home.path().join("drop");
    std::fs::create_dir_all(&staging).unwrap();
    let put = |name: &str| staging.join(name);

    std::fs::write(
        put("c_g224-GARBAGE-1_4.zip"),
        b"\x00\x01garbage, not a zip at all",
    )
    .unwrap();
    std::fs::write(put("c_g224-EMPTY-1_4.csv"), b"").unwrap();
    zip_bomb(&put("c_g224-BOMB-1_4.zip"), "c_g224-BOMB-1_4", 2 << 30);
    zip_with_entry(
        &put("c_g224-TRAVERSAL-1_4.zip"),
        "../c_g224-TRAVERSAL-1_4.csv",
        csv_text(&[Row::tari("T1", 1, 100)]).as_bytes(),
    );
    let mut utf8 = csv_text(&[Row::tari("U1", 1, 100)]).into_bytes();
    utf8.extend_from_slice(b"U2;\xff\xfe;F\n");
    std::fs::write(put("c_g224-BADUTF8-1_4.csv"), utf8).unwrap();
    let wide = format!(
        "{}\nW2{}\n",
        csv_text(&[Row::tari("W1", 1, 100)]).trim_end(),
        ";x".repeat(10_000)
    );
    std::fs::write(put("c_g224-WIDE-1_4.csv"), wide).unwrap();
    std::fs::write(
        put("c_g224-GOOD-1_4.csv"),
        csv_text(&[Row::tari("G1", 3, 300)]),
    )
    .unwrap();

    let inbox = home.path().join("var/c_g224/in");
    std::fs::create_dir_all(&inbox).unwrap();
    for e in std::fs::read_dir(&staging).unwrap() {
        let e = e.unwrap();
        std::fs::rename(e.path(), inbox.join(e.file_name())).unwrap();
    }

    let hub = Hub::start(&home);
    let pid = hub.pid();
    let failed = inbox.join("failed");
    let out = home.path().join("var/c_g224/out");
    let mut peak_kib = 0u64;
    let done = wait_for(120, || {
        peak_kib = peak_kib.max(vm_hwm_kib(pid));
        ["GARBAGE", "EMPTY", "BOMB", "TRAVERSAL"].iter().all(|n| {
            failed
                .join(format!("c_g224-{n}-1_4.zip.error.txt"))
                .exists()
                || failed
                    .join(format!("c_g224-{n}-1_4.csv.error.txt"))
                    .exists()
        }) && failed.join("c_g224-BADUTF8-1_4.csv.error.txt").exists()
            && out.join("c_g224-WIDE-1_4_SCARTI.zip").exists()
            && out.join("c_g224-GOOD-1_4_IUV.zip").exists()
    });
    hub.terminate();
    assert!(
        done,
        "every file reached its end state; failed/ has {:?}",
        std::fs::read_dir(&failed)
            .map(|d| d
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect::<Vec<_>>())
            .ok()
    );
    assert!(
        peak_kib < 300 * 1024,
        "peak RSS {peak_kib} KiB while reading a 2 GiB zip bomb"
    );

    let reason =
        |name: &str| std::fs::read_to_string(failed.join(format!("{name}.error.txt"))).unwrap();
    assert!(
        reason("c_g224-GARBAGE-1_4.zip").contains("not a readable zip"),
        "{}",
        reason("c_g224-GARBAGE-1_4.zip")
    );
    assert!(
        reason("c_g224-EMPTY-1_4.csv").contains("empty"),
        "{}",
        reason("c_g224-EMPTY-1_4.csv")
    );
    let bomb = reason("c_g224-BOMB-1_4.zip");
    assert!(
        bomb.contains("PAA_IMPORT_ERROR") && bomb.contains("limit"),
        "{bomb}"
    );
    let trav = reason("c_g224-TRAVERSAL-1_4.zip");
    assert!(
        trav.contains("PAA_IMPORT_NO_CSV") && trav.contains(".."),
        "{trav}"
    );
    let utf = reason("c_g224-BADUTF8-1_4.csv");
    assert!(utf.contains("UTF-8") && utf.contains("line 3"), "{utf}");

    // A row with 10 000 columns is one rejected row, not a failed flow.
    let wide = unzip_text(&out.join("c_g224-WIDE-1_4_SCARTI.zip"));
    assert!(
        wide.contains("PAA_IMPORT_SINTASSI_CSV") && wide.contains("Too many columns"),
        "{}",
        &wide[..wide.len().min(300)]
    );
    assert_eq!(
        unzip_text(&out.join("c_g224-WIDE-1_4_IUV.zip"))
            .lines()
            .count(),
        2
    );

    // The flow status says the same.
    let flows = home.snodo(&[
        "flows",
        "-c",
        "config.toml",
        "--entity",
        "c_g224",
        "--iuf",
        "BADUTF8",
    ]);
    let flow: serde_json::Value =
        serde_json::from_str(stdout(&flows).lines().next().expect("a flow record")).unwrap();
    assert_eq!(flow["status"], "IMPORT_ABORTITO");
    assert_eq!(flow["error_code"], "PAA_IMPORT_ERROR");
    assert!(
        flow["error_message"].as_str().unwrap().contains("UTF-8"),
        "{flow}"
    );

    // Nothing of the broken flows reached the registry; the good ones did.
    let mut iuds: Vec<String> = home
        .positions(&[])
        .iter()
        .map(|p| p["iud"].as_str().unwrap().to_string())
        .collect();
    iuds.sort();
    assert_eq!(iuds, ["G1", "W1"]);
}

/// Peak resident set size of a process, from /proc (0 once it is gone).
fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
