//! `snodo validate`: the demo is valid; a broken config shows every problem with its path.

mod common;
use common::*;

#[test]
fn the_demo_config_is_valid() {
    let home = Home::new();
    let o = home.snodo(&[
        "validate",
        "-c",
        common::repo().join("config/demo.toml").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("3 entities, 4 pipelines"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn every_problem_is_printed_with_its_path() {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap()
        .replace("IT90J0200812100000041234567", "IT00X0200812100000041234567")
        .replace("name = \"Comune di Feltre\"", "name = \"Comune di Feltre\"\nsegregaton_code = \"02\"")
        .replace("entity = \"r_veneto\"", "entity = \"r_venetto\"")
        .replace("schedule = \"* * * * * *\", settle = \"0s\" }\ndecode = \"mypay-import\"\nto = \"registry\"\noutcomes = { connector = \"dir\", path = \"var/c_d530/out\" }",
                 "schedule = \"every minute\" }\ndecode = \"mypay-import\"\nto = \"registry\"\noutcomes = { connector = \"dri\", path = \"var/c_d530/out\" }");
    std::fs::write(home.path().join("bad.toml"), cfg).unwrap();
    let o = home.snodo(&["validate", "-c", "bad.toml"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    for expected in [
        "entities[0].debt_types[1].iban: \"IT00X0200812100000041234567\"",
        "entities[1].segregaton_code: unknown key `segregaton_code` (did you mean `segregation_code`?)",
        "pipelines[2].entity: unknown entity \"r_venetto\" (did you mean \"r_veneto\"?)",
        "pipelines[1].from.schedule: \"every minute\" is not a cron expression",
        "pipelines[1].outcomes.connector: unknown connector \"dri\" (did you mean \"dir\"?)",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(out.contains("checksum"), "the IBAN problem says why: {out}");
}

#[test]
fn environment_overrides_and_missing_variables() {
    let home = Home::new();
    let o = std::process::Command::new(BIN)
        .args(["validate", "-c", "config.toml"])
        .current_dir(home.path())
        .env("SNODO__HTTP__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("http.listen: \"not-an-address\" is not an address:port"),
        "{}",
        stdout(&o)
    );

    let cfg = std::fs::read_to_string(home.config()).unwrap().replace(
        &format!("listen = \"127.0.0.1:{}\"", home.port),
        "listen = \"${SNODO_TEST_SURELY_UNSET_VAR}\"",
    );
    std::fs::write(home.path().join("env.toml"), cfg).unwrap();
    let o = home.snodo(&["validate", "-c", "env.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o)
            .contains("http.listen: environment variable SNODO_TEST_SURELY_UNSET_VAR is not set"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn api_keys_spontaneous_and_external_settings_are_checked() {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config())
        .unwrap()
        .replace(
            "${SNODO_DEMO_KEY_C_D530:-demo-key-c_d530-feltre}",
            "${SNODO_DEMO_KEY_C_G224:-demo-key-c_g224-padova}",
        )
        .replace(
            "causale = \"Mensa {anno_scolastico} - {alunno}\"",
            "causale = \"Mensa {anno} - {alunno}\"",
        )
        .replace(
            "timeout = \"2s\" }",
            "timeout = \"30s\", mode = \"mypay-soap\" }",
        );
    std::fs::write(home.path().join("api.toml"), cfg).unwrap();
    let o = home.snodo(&["validate", "-c", "api.toml"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    for expected in [
        "entities[1].api_keys[0]: the same key is also given to c_g224",
        "entities[0].debt_types[1].spontaneous: causale uses {anno}, which is not a declared field",
        "entities[2].debt_types[2].external.timeout: must be above 0 and at most 4s",
        // MyPay's verification answer names no payer.
        "entities[2].debt_types[2].anonymous_payer_allowed: a MyPay mode needs it true",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // The key itself is never printed.
    assert!(!out.contains("demo-key-c_g224-padova"), "{out}");
}
