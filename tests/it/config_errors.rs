//! Configuration mistakes are caught at start-up with the key, the line and
//! what is allowed; `configtest` reports them with exit code 0 or 1.

use crate::support::{headway_bin, sqlite_test_config, test_config};
use std::process::Command;

/// Runs `headway -c <dir>/config.yaml <command>` on `text` (with `{dir}` made
/// `dir`) in `dir`; its exit code and everything it printed.
fn run_in(dir: &std::path::Path, text: &str, command: &str) -> (i32, String) {
    let text = text.replace("{dir}", &dir.display().to_string());
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(headway_bin())
        .current_dir(dir)
        .env("HOME", dir)
        .env("NO_COLOR", "1")
        .arg("-c")
        .arg(&path)
        .arg(command)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn configtest(text: &str) -> (i32, String) {
    run_in(tempfile::tempdir().unwrap().path(), text, "configtest")
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
    let text = valid().replace("listen_addr: 127.0.0.1:0", "listen_addr: nowhere");
    let (code, out) = run_in(dir.path(), &text, "serve");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("listen_addr"), "{out}");
}

#[test]
fn a_unix_socket_on_the_database_is_refused_and_no_regular_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    // The file the socket must not replace is SQLite's.
    let valid = || sqlite_test_config(std::path::Path::new("{dir}"), "");
    let text = valid().replace(
        "unix_socket: {dir}/headway.sock",
        "unix_socket: {dir}/db.sqlite",
    );
    let (code, out) = run_in(dir.path(), &text, "configtest");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("unix_socket") && out.contains("is also database.sqlite.path"),
        "{out}"
    );

    // A path that is some other file (a typo, say) is left alone by `serve`.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "keep me").unwrap();
    let text = valid().replace(
        "unix_socket: {dir}/headway.sock",
        "unix_socket: {dir}/notes.txt",
    );
    let (code, out) = run_in(dir.path(), &text, "serve");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("is not a socket"), "{out}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "keep me");
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
    let (code, said) = run_in(dir.path(), &text, "serve");
    assert_eq!(code, 1, "{said}");
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
