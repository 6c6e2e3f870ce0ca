//! Code-shape invariants: every source file says what it owns, ARCHITECTURE.md
//! names every module, modules import only what sits below them, and the
//! reverse-proxy page shows the configurations the proxy tests run.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("tests"), &mut files);
    files.push(root().join("build.rs"));
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .map(|f| f.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line: {missing:?}"
    );
}

#[test]
fn architecture_names_every_module() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    for entry in std::fs::read_dir(root().join("src")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "lib.rs" || name == "main.rs" {
            continue;
        }
        let heading = if path.is_dir() {
            format!("### `{name}/`")
        } else {
            format!("### `{name}`")
        };
        assert!(
            arch.contains(&heading),
            "ARCHITECTURE.md has no `{heading}` section"
        );
    }
}

/// Each module and the crate modules it may import (ARCHITECTURE.md's layering).
const LAYERS: &[(&str, &[&str])] = &[
    ("types", &["types"]),
    ("websocket", &["websocket"]),
    ("tls_trust", &["tls_trust"]),
    ("fetch", &["fetch"]),
    ("limits", &["limits"]),
    ("tasks", &["tasks"]),
    ("metrics", &["metrics"]),
    ("tailcfg", &["tailcfg", "types"]),
    ("policy", &["policy", "tailcfg", "types"]),
    ("config", &["config", "types"]),
    ("derp", &["derp", "tailcfg", "config", "types", "fetch"]),
    (
        "relay",
        &["relay", "types", "websocket", "limits", "tasks", "metrics"],
    ),
    ("acme", &["acme"]),
    ("dns", &["dns"]),
    ("oidc", &["oidc", "config", "types", "fetch"]),
    ("db", &["db", "types", "config", "metrics"]),
    ("import", &["import", "db", "policy", "tailcfg", "types"]),
    (
        "state",
        &[
            "state", "db", "policy", "types", "config", "tasks", "metrics",
        ],
    ),
    (
        "control",
        &[
            "control",
            "state",
            "policy",
            "types",
            "config",
            "tailcfg",
            "derp",
            "dns",
            "websocket",
            "limits",
            "tasks",
            "metrics",
        ],
    ),
    (
        "bench",
        &["bench", "control", "policy", "relay", "types", "tls_trust"],
    ),
    (
        "conformance",
        &[
            "conformance",
            "control",
            "policy",
            "state",
            "tailcfg",
            "types",
        ],
    ),
    (
        "grpc",
        &["grpc", "state", "types", "limits", "tasks", "metrics"],
    ),
    (
        "api",
        &["api", "grpc", "state", "policy", "types", "limits"],
    ),
    (
        "admin",
        &[
            "admin", "grpc", "state", "control", "derp", "policy", "tailcfg", "types", "config",
        ],
    ),
    (
        "http",
        &[
            "http", "control", "state", "types", "config", "tailcfg", "limits", "tasks", "oidc",
            "metrics",
        ],
    ),
    (
        "cli",
        &[
            "cli",
            "grpc",
            "db",
            "import",
            "config",
            "types",
            "policy",
            "server",
            "bench",
            "conformance",
            "tls_trust",
        ],
    ),
];

#[test]
fn modules_import_only_what_sits_below_them() {
    let mut violations = Vec::new();
    for (module, allowed) in LAYERS {
        let mut files = Vec::new();
        let dir = root().join("src").join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(root().join("src").join(format!("{module}.rs")));
        }
        // Test files may build lower layers to set up a fixture (a `control` test
        // opens a database); the rule is about what production code depends on.
        for file in files
            .into_iter()
            .filter(|f| f.file_name().is_none_or(|n| n != "tests.rs"))
        {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let mut rest = line;
                while let Some(pos) = rest.find("crate::") {
                    rest = &rest[pos + "crate::".len()..];
                    let target: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !allowed.contains(&target.as_str()) {
                        violations.push(format!(
                            "{}:{}: {module} imports crate::{target}",
                            file.display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

/// docs/reverse-proxy.md shows the nginx and Caddy configurations that the proxy
/// tests (tests/it/proxies.rs) load, word for word.
#[test]
fn the_reverse_proxy_page_shows_the_tested_configurations() {
    let page = std::fs::read_to_string(root().join("docs/reverse-proxy.md")).unwrap();
    for file in [
        "docs/reverse-proxy/nginx.conf",
        "docs/reverse-proxy/Caddyfile",
    ] {
        let config = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(
            page.contains(config.trim_end()),
            "docs/reverse-proxy.md does not show {file} as it is; copy it in again"
        );
    }
}
