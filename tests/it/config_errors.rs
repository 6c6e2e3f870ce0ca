//! Configuration mistakes are caught at start-up with the key, the line and
//! what is allowed; `configtest` reports them with exit code 0 or 1.

use crate::support::{headway_bin, test_config};
use std::process::Command;

fn configtest(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = text.replace("{dir}", &dir.path().display().to_string());
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(headway_bin())
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("NO_COLOR", "1")
        .arg("-c")
        .arg(&path)
        .arg("configtest")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn valid() -> String {
    test_config(std::path::Path::new("{dir}"), "")
}

#[test]
fn a_valid_config_passes() {
    let (code, out) = configtest(&valid());
    assert_eq!(code, 0, "{out}");
}

#[test]
fn the_shipped_example_passes_without_warnings() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config-example.yaml"))
            .unwrap();
    let (code, out) = configtest(&example);
    assert_eq!(code, 0, "{out}");
    assert!(!out.to_lowercase().contains("warn"), "{out}");
}

#[test]
fn broken_yaml_names_the_line() {
    let (code, out) =
        configtest("server_url: http://127.0.0.1:8080\nprefixes:\n  v4: [100.64.0.0/10\n");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("line"), "{out}");
}

#[test]
fn a_bad_cidr_names_key_line_and_allowed_form() {
    let text = valid().replace("v4: 100.64.0.0/10", "v4: 100.64.0.0/33");
    let (code, out) = configtest(&text);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("prefixes.v4"), "{out}");
    assert!(out.contains(":7"), "the line of the bad value (7): {out}");
    assert!(out.contains("100.64.0.0/33"), "{out}");
}

#[test]
fn an_unknown_key_warns_with_its_path_and_line() {
    let text = valid() + "dns_extra:\n  magicdns: true\n";
    let (code, out) = configtest(&text);
    assert_eq!(code, 0, "unknown keys do not stop start-up: {out}");
    assert!(out.contains("dns_extra"), "{out}");
}

#[test]
fn a_bad_value_stops_serve() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        test_config(dir.path(), "").replace("listen_addr: 127.0.0.1:0", "listen_addr: nowhere");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(headway_bin())
        .arg("-c")
        .arg(&path)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listen_addr"), "{text}");
}

#[test]
fn a_broken_policy_file_names_its_line_and_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("acl.hujson");
    std::fs::write(
        &policy,
        "{\n  // fine so far\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"] \"dst\": [\"*:*\"]}\n  ]\n}\n",
    )
    .unwrap();
    let text = format!("{}policy:\n  path: {}\n", valid(), policy.display());
    let (code, out) = configtest(&text);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("acl.hujson:4:"), "{out}");

    // `serve` refuses to start on it too, with the same position.
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        text.replace("{dir}", &dir.path().display().to_string()),
    )
    .unwrap();
    let out = Command::new(headway_bin())
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("NO_COLOR", "1")
        .arg("-c")
        .arg(&config)
        .arg("serve")
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("acl.hujson:4:"), "{said}");

    // A valid one passes, and is named.
    std::fs::write(
        &policy,
        r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
    )
    .unwrap();
    let (code, out) = configtest(&text);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("policy OK"), "{out}");
}
