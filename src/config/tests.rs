//! What an admin sees when headway loads a configuration: values, warnings for
//! legacy and unknown keys, refusals with file:line, environment overrides and
//! the file search order.

use super::keys::{KEYS, Role};
use super::lines::LineIndex;
use super::*;
use std::collections::HashMap;
use std::path::Path;

const EXAMPLE: &str = include_str!("../../config-example.yaml");
const LEGACY_GUIDE: &str = include_str!("../../tests/fixtures/config/legacy-guide.yaml");
const HEADSCALE_029: &str = include_str!("../../tests/fixtures/config/headscale-0.29.yaml");

fn no_env(_: &str) -> Option<String> {
    None
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

fn load_text(text: &str) -> Loaded {
    load_from_str(text, "config.yaml", &no_env).unwrap_or_else(|e| panic!("{e}"))
}

fn refusal(text: &str) -> String {
    match load_from_str(text, "config.yaml", &no_env) {
        Ok(loaded) => panic!("accepted:\n{text}\n-> {:?}", loaded.config),
        Err(e) => e.to_string(),
    }
}

fn messages(loaded: &Loaded) -> Vec<String> {
    loaded.warnings.iter().map(|w| w.message.clone()).collect()
}

fn net<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse().unwrap()
}

#[test]
fn example_config_loads_without_warnings_and_yields_its_documented_values() {
    let loaded = load_text(EXAMPLE);
    assert_eq!(messages(&loaded), Vec::<String>::new());

    let lib = Path::new("/var/lib/headway");
    let defaults = Config::default();
    let expected = Config {
        noise_private_key_path: lib.join("noise_private.key"),
        database: Database::Sqlite {
            path: lib.join("db.sqlite"),
            write_ahead_log: true,
            wal_autocheckpoint: 1000,
        },
        derp: Derp {
            server: DerpServer {
                private_key_path: lib.join("derp_server_private.key"),
                // The example names the key, so the relay is on by choice.
                enabled_by_default: false,
                ..defaults.derp.server.clone()
            },
            ..defaults.derp.clone()
        },
        tls: Tls {
            letsencrypt_cache_dir: lib.join("cache"),
            ..defaults.tls.clone()
        },
        unix_socket: PathBuf::from("/var/run/headway/headway.sock"),
        ..defaults
    };
    assert_eq!(loaded.config, expected);
}

#[test]
fn example_config_documents_every_key_headway_reads() {
    let index = LineIndex::build(EXAMPLE);
    for key in KEYS {
        match key.role {
            Role::Applied => assert!(index.contains(key.path), "{} missing", key.path),
            // Legacy spellings are named in the comments next to their modern key.
            Role::Legacy => {
                let name = key.path.rsplit('.').next().unwrap();
                assert!(EXAMPLE.contains(name), "{} not mentioned", key.path);
            }
            Role::Accepted => {}
        }
    }
    assert!(
        EXAMPLE.contains("# urls:\n  #   - https://controlplane.tailscale.com/derpmap/default")
    );
    assert!(EXAMPLE.contains("HEADWAY_<KEY>") && EXAMPLE.contains("HEADSCALE_<KEY>"));
}

#[test]
fn guide_style_legacy_config_loads_with_one_warning_per_legacy_key() {
    let loaded = load_from_str(LEGACY_GUIDE, "legacy-guide.yaml", &no_env).unwrap();
    let c = &loaded.config;
    assert_eq!(c.server_url.as_str(), "http://203.0.113.5:8080");
    assert_eq!(c.listen_addr, net("0.0.0.0:8080"));
    assert_eq!(c.metrics_listen_addr, Some(net("127.0.0.1:9090")));
    assert_eq!(c.grpc_listen_addr, Some(net("0.0.0.0:50443")));
    assert!(!c.grpc_allow_insecure);
    assert_eq!(
        c.noise_private_key_path,
        Path::new("/var/lib/headscale/noise_private.key")
    );
    assert_eq!(c.prefixes.v4, Some(net("10.1.0.0/16")));
    assert_eq!(c.prefixes.v6, Some(net("fd7a:115c:a1e0::/48")));
    assert_eq!(
        c.database,
        Database::Sqlite {
            path: "/var/lib/headscale/db.sqlite".into(),
            write_ahead_log: true,
            wal_autocheckpoint: 1000,
        }
    );
    assert!(!c.dns.magic_dns);
    assert!(c.dns.override_local_dns);
    assert_eq!(c.dns.base_domain, "example.com");
    assert_eq!(c.dns.nameservers_global, ["1.1.1.1"]);
    assert_eq!(
        c.policy.path.as_deref(),
        Some(Path::new("/etc/headscale/acl.hujson"))
    );
    assert_eq!(
        c.node.ephemeral_inactivity_timeout,
        Duration::from_secs(1800)
    );
    assert_eq!(
        c.unix_socket,
        Path::new("/var/run/headscale/headscale.sock")
    );
    assert_eq!(c.unix_socket_permission, 0o770);
    assert!(!c.derp.server.enabled);
    assert_eq!(c.derp.update_frequency, Duration::from_secs(86_400));
    assert_eq!(c.log.level, "info");
    assert!(!c.randomize_client_port);

    let warnings = messages(&loaded);
    let legacy = [
        "private_key_path",
        "ip_prefixes",
        "ephemeral_node_inactivity_timeout",
        "node_update_check_interval",
        "db_type",
        "db_path",
        "tls_client_auth_mode",
        "log_level",
        "acl_policy_path",
        "dns_config.override_local_dns",
        "dns_config.nameservers",
        "dns_config.domains",
        "dns_config.magic_dns",
        "dns_config.base_domain",
    ];
    for key in legacy {
        let needle = format!("`{key}` is a legacy key");
        let count = warnings.iter().filter(|w| w.contains(&needle)).count();
        assert_eq!(count, 1, "{key}: {warnings:#?}");
    }
    assert!(warnings.contains(
        &"legacy-guide.yaml:14: `ip_prefixes` is a legacy key; headway read it as `prefixes.v4`/`prefixes.v6`".to_owned()
    ));
    assert!(warnings.contains(
        &"legacy-guide.yaml:32: `db_path` is a legacy key; headway read it as `database.sqlite.path`".to_owned()
    ));
    let custom_range: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("10.1.0.0/16 is outside Tailscale's ranges"))
        .collect();
    assert_eq!(custom_range.len(), 1, "{warnings:#?}");
    // metrics_listen_addr is served: nothing to say about it.
    assert!(
        !warnings.iter().any(|w| w.contains("metrics_listen_addr")),
        "{warnings:#?}"
    );
    assert_eq!(warnings.len(), legacy.len() + 1, "{warnings:#?}");
}

#[test]
fn headscale_029_config_loads_without_unknown_key_warnings() {
    let loaded = load_from_str(HEADSCALE_029, "config.yaml", &no_env).unwrap();
    let warnings = messages(&loaded);
    let lines = LineIndex::build(HEADSCALE_029);
    let tuning_line = lines.line("tuning.register_cache_max_entries").unwrap();
    // What headway cannot do is said, once per group; gorm at Headscale's
    // defaults expects nothing and is not mentioned.
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        !warnings.iter().any(|w| w.contains("metrics_listen_addr")),
        "{warnings:#?}"
    );
    // Headscale's OIDC section is read as Headscale reads it.
    let oidc = loaded.config.oidc.as_ref().expect("oidc.issuer is set");
    assert_eq!(oidc.issuer, "https://sso.example.com/realms/main");
    assert_eq!(
        (oidc.client_id.as_str(), oidc.client_secret.as_str()),
        ("headscale", "not-a-real-secret")
    );
    assert_eq!(oidc.scope, ["openid", "profile", "email"]);
    assert_eq!(oidc.extra_params["domain_hint"], "example.com");
    assert_eq!(oidc.allowed_domains, ["example.com"]);
    assert_eq!(oidc.allowed_users, ["alice@example.com"]);
    assert_eq!(oidc.allowed_groups, ["/headscale"]);
    assert!(oidc.email_verified_required && oidc.only_start_if_available);
    assert!(!oidc.use_expiry_from_token);
    assert_eq!(oidc.pkce, Some(crate::config::PkceMethod::S256));
    assert!(
        warnings.iter().any(|w| w.starts_with(&format!(
            "config.yaml:{tuning_line}: tuning.register_cache_max_entries: has no effect, nor has the rest of tuning (tuning.register_cache_max_entries, "
        ))),
        "{warnings:#?}"
    );

    let c = &loaded.config;
    assert_eq!(c.prefixes.allocation, Allocation::Random);
    assert_eq!(c.trusted_proxies, [net("127.0.0.1/32"), net("10.0.0.0/8")]);
    assert!(c.derp.server.enabled);
    assert_eq!(c.derp.server.ipv4, Some(net("198.51.100.1")));
    assert_eq!(c.derp.server.ipv6, Some(net("2001:db8::1")));
    assert_eq!(c.node.expiry, Some(Duration::from_secs(180 * 86_400)));
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.policy.mode, PolicyMode::Database);
    assert_eq!(c.policy.path, None);
    assert_eq!(c.dns.nameservers_global.len(), 4);
    assert_eq!(c.dns.nameservers_split["corp.example.com"], ["10.0.0.53"]);
    assert_eq!(c.dns.search_domains, ["corp.example.com"]);
    assert_eq!(
        c.dns.extra_records[1],
        ExtraRecord {
            name: "prometheus.tailnet.example.com".into(),
            record_type: "AAAA".into(),
            value: "fd7a:115c:a1e0::3".into(),
        }
    );
    assert_eq!(
        c.cli.address.as_deref(),
        Some("headscale.example.com:50443")
    );
    assert_eq!(c.cli.timeout, Duration::from_secs(10));
    assert!(matches!(c.database, Database::Sqlite { .. }));
}

#[test]
fn unknown_keys_warn_with_path_line_and_suggestion_but_do_not_stop_loading() {
    let loaded = load_text(
        "server_url: http://127.0.0.1:8080\n\
         dns:\n  magic_dnss: true\n\
         listen_adr: 127.0.0.1:8080\n\
         frobnicate: 1\n\
         magic_dns: false\n",
    );
    assert_eq!(
        messages(&loaded),
        [
            "config.yaml:3: unknown key `dns.magic_dnss` is ignored (did you mean `dns.magic_dns`?)",
            "config.yaml:4: unknown key `listen_adr` is ignored (did you mean `listen_addr`?)",
            "config.yaml:5: unknown key `frobnicate` is ignored",
            "config.yaml:6: unknown key `magic_dns` is ignored (did you mean `dns.magic_dns`?)",
        ]
    );
    assert!(loaded.config.dns.magic_dns);
}

#[test]
fn bad_values_name_file_line_key_value_and_allowed_form() {
    let cases: &[(&str, &str)] = &[
        (
            "prefixes:\n  v4: 10.1.0.0/33\n",
            "config.yaml:2: prefixes.v4: \"10.1.0.0/33\" is not an IPv4 prefix (expected e.g. 100.64.0.0/10)",
        ),
        (
            "prefixes:\n  v4: 100.64.0.0/10\n  v6: 100.64.0.0/10\n",
            "config.yaml:3: prefixes.v6: \"100.64.0.0/10\" is an IPv4 prefix (expected an IPv6 prefix such as fd7a:115c:a1e0::/48",
        ),
        (
            "ip_prefixes:\n  - 100.64.0.0/99\n",
            "config.yaml:1: ip_prefixes: \"100.64.0.0/99\" is not an IP prefix (expected e.g. 100.64.0.0/10",
        ),
        (
            "trusted_proxies: [0.0.0.0/0]\n",
            "config.yaml:1: trusted_proxies: \"0.0.0.0/0\" would trust every address",
        ),
        (
            "# listeners\nlisten_addr: 0.0.0.0\n",
            "config.yaml:2: listen_addr: \"0.0.0.0\" is not a listen address (expected host:port, e.g. 127.0.0.1:8080",
        ),
        (
            "# ACME\ntls_letsencrypt_listen: port80\n",
            "config.yaml:2: tls_letsencrypt_listen: \"port80\" is not a listen address (expected host:port or :port",
        ),
        (
            "server_url: https://user:secret@hs.example.com\n",
            "config.yaml:1: server_url: \"https://user:secret@hs.example.com\" carries a user name or password",
        ),
        (
            "derp:\n  server:\n    stun_listen_addr: udp/3478\n",
            "config.yaml:3: derp.server.stun_listen_addr: \"udp/3478\" is not a listen address",
        ),
        (
            "node:\n  ephemeral:\n    inactivity_timeout: 30 minutes\n",
            "config.yaml:3: node.ephemeral.inactivity_timeout: \"30 minutes\" is not a duration (expected a number with a unit",
        ),
        (
            "derp:\n  update_frequency: 3\n",
            "config.yaml:2: derp.update_frequency: 3 has no unit (expected a duration such as 30s",
        ),
        (
            "ephemeral_node_inactivity_timeout: soon\n",
            "config.yaml:1: ephemeral_node_inactivity_timeout: \"soon\" is not a duration",
        ),
        (
            "grpc_allow_insecure: maybe\n",
            "config.yaml:1: grpc_allow_insecure: \"maybe\" is not a boolean (expected true or false)",
        ),
        (
            "database:\n  type: mysql\n",
            "config.yaml:2: database.type: \"mysql\" is not allowed (expected one of: sqlite, sqlite3, postgres)",
        ),
        (
            "db_type: mysql\n",
            "config.yaml:1: db_type: \"mysql\" is not allowed (expected one of: sqlite, sqlite3, postgres)",
        ),
        (
            "database:\n  postgres:\n    ssl: sometimes\n",
            "config.yaml:3: database.postgres.ssl: \"sometimes\" is not allowed (expected true, false, or a libpq sslmode: disable, allow, prefer, require, verify-ca, verify-full)",
        ),
        (
            "prefixes:\n  allocation: lottery\n",
            "config.yaml:2: prefixes.allocation: \"lottery\" is not allowed (expected one of: sequential, random)",
        ),
        (
            "log:\n  format: xml\n",
            "config.yaml:2: log.format: \"xml\" is not allowed (expected one of: text, json)",
        ),
        (
            "log:\n  level: loud\n",
            "config.yaml:2: log.level: \"loud\" is not a log level (expected one of: trace, debug, info, warn, error)",
        ),
        (
            "policy:\n  mode: git\n",
            "config.yaml:2: policy.mode: \"git\" is not allowed (expected one of: file, database)",
        ),
        (
            "tls_letsencrypt_challenge_type: DNS-01\n",
            "config.yaml:1: tls_letsencrypt_challenge_type: \"DNS-01\" is not allowed (expected one of: HTTP-01, TLS-ALPN-01)",
        ),
        (
            "unix_socket_permission: \"0778\"\n",
            "config.yaml:1: unix_socket_permission: \"0778\" is not an octal file mode (expected e.g. \"0770\")",
        ),
        (
            "server_url:\n  host: example.com\n",
            "config.yaml:1: server_url: expected a single value, found a mapping",
        ),
        (
            "dns:\n  base_domain: [a, b]\n",
            "config.yaml:2: dns.base_domain: expected a single value, found a list",
        ),
        (
            "dns: true\n",
            "config.yaml:1: dns: expected a section of `key: value` settings, found true",
        ),
        (
            "derp:\n  server:\n    region_id: -4\n",
            "config.yaml:3: derp.server.region_id: -4 is not a whole number from 1 to 2147483647",
        ),
        (
            "dns:\n  nameservers:\n    global: [1.1.1.1, dns.example]\n",
            "config.yaml:3: dns.nameservers.global: \"dns.example\" is not a nameserver (expected an IP address",
        ),
    ];
    for (text, expected) in cases {
        let message = refusal(text);
        assert!(
            message.starts_with(expected),
            "{text}\ngot:  {message}\nwant: {expected}"
        );
    }
}

#[test]
fn rules_spanning_several_keys_are_enforced() {
    let cases: &[(&str, &str)] = &[
        (
            "prefixes:\n  v4: \"\"\n  v6: \"\"\n",
            "config.yaml:2: prefixes.v4: no address pool left: set prefixes.v4 and/or prefixes.v6",
        ),
        (
            "server_url: headway.example.com\n",
            "config.yaml:1: server_url: \"headway.example.com\" must start with http:// or https://",
        ),
        (
            "dns:\n  magic_dns: true\n  base_domain: \"\"\n",
            "config.yaml:3: dns.base_domain: must be set when dns.magic_dns is true",
        ),
        (
            "server_url: https://hs.example.com\ndns:\n  base_domain: example.com\n",
            "config.yaml:3: dns.base_domain: the server_url host \"hs.example.com\" lies inside dns.base_domain \"example.com\"",
        ),
        (
            "server_url: https://example.com:443\ndns:\n  base_domain: example.com\n",
            "config.yaml:3: dns.base_domain: the server_url host \"example.com\" lies inside",
        ),
        (
            "tls_letsencrypt_hostname: hs.example.com\ntls_cert_path: /c.pem\ntls_key_path: /k.pem\n",
            "config.yaml:1: tls_letsencrypt_hostname: cannot be combined with tls_cert_path/tls_key_path",
        ),
        (
            "node:\n  ephemeral:\n    inactivity_timeout: 60s\n",
            "config.yaml:3: node.ephemeral.inactivity_timeout: 60s is too short; connected clients send keep-alives every 60s (expected at least 65s",
        ),
        (
            "node:\n  routes:\n    ha:\n      probe_interval: 1s\n",
            "config.yaml:4: node.routes.ha.probe_interval: 1s is too short (expected at least 2s",
        ),
        (
            "node:\n  routes:\n    ha:\n      probe_timeout: 500ms\n",
            "config.yaml:4: node.routes.ha.probe_timeout: 500ms is too short (expected at least 1s",
        ),
        (
            "node:\n  routes:\n    ha:\n      probe_interval: 5s\n      probe_timeout: 5s\n",
            "config.yaml:5: node.routes.ha.probe_timeout: 5s must be shorter than node.routes.ha.probe_interval (5s)",
        ),
        (
            "database:\n  type: \"\"\n",
            "config.yaml:2: database.type: is empty; headway needs to know which database to use (expected one of: sqlite, sqlite3, postgres)",
        ),
        (
            "dns:\n  override_local_dns: true\n",
            "config.yaml:2: dns.override_local_dns: is true but dns.nameservers.global is empty",
        ),
        (
            "derp:\n  server:\n    enabled: true\n    stun_listen_addr: \"\"\n",
            "config.yaml:4: derp.server.stun_listen_addr: must be set when derp.server.enabled is true",
        ),
    ];
    for (text, expected) in cases {
        let message = refusal(text);
        assert!(
            message.starts_with(expected),
            "{text}\ngot:  {message}\nwant: {expected}"
        );
    }
    // The server may sit next to the tailnet's domain, just not inside it.
    let loaded =
        load_text("server_url: https://hs.example.com\ndns:\n  base_domain: ts.example.com\n");
    assert_eq!(loaded.config.dns.base_domain, "ts.example.com");
}

#[test]
fn broken_yaml_reports_the_parser_line() {
    let message = refusal("server_url: http://x:8080\ndns:\n  magic_dns: true\n base_domain: x\n");
    assert!(
        message.starts_with("config.yaml:4: not valid YAML"),
        "{message}"
    );
    let message = refusal("listen_addr: 127.0.0.1:8080\nlisten_addr: 0.0.0.0:8080\n");
    assert!(
        message.starts_with("config.yaml:2: not valid YAML"),
        "{message}"
    );
}

#[test]
fn custom_ranges_and_single_stack_are_accepted() {
    let loaded = load_text("prefixes:\n  v4: 10.1.0.0/16\n");
    assert_eq!(loaded.config.prefixes.v4, Some(net("10.1.0.0/16")));
    assert_eq!(
        loaded.config.prefixes.v6, None,
        "the unwritten family is off"
    );
    assert_eq!(loaded.warnings.len(), 1);
    assert!(
        loaded.warnings[0]
            .message
            .starts_with("config.yaml:2: prefixes.v4: 10.1.0.0/16 is outside Tailscale's ranges")
    );

    let loaded = load_text("ip_prefixes:\n  - fd7a:115c:a1e0::/48\n");
    assert_eq!(loaded.config.prefixes.v4, None);
    assert_eq!(loaded.config.prefixes.v6, Some(net("fd7a:115c:a1e0::/48")));
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
}

#[test]
fn modern_key_wins_over_its_legacy_spelling_and_says_so() {
    let loaded = load_text(
        "db_path: /old/db.sqlite\n\
         database:\n  sqlite:\n    path: /new/db.sqlite\n\
         ip_prefixes: [10.9.0.0/16]\n\
         prefixes:\n  v4: 100.64.0.0/10\n",
    );
    assert!(matches!(&loaded.config.database,
        Database::Sqlite { path, .. } if path == Path::new("/new/db.sqlite")));
    assert_eq!(loaded.config.prefixes.v4, Some(net("100.64.0.0/10")));
    assert_eq!(
        messages(&loaded),
        [
            "config.yaml:1: `db_path` is a legacy key and `database.sqlite.path` is also set; headway used `database.sqlite.path` and ignored `db_path`",
            "config.yaml:5: `ip_prefixes` is a legacy key and `prefixes` is also set; headway used `prefixes.v4`/`prefixes.v6` and ignored `ip_prefixes`",
        ]
    );
}

#[test]
fn removed_and_renamed_keys_from_every_era_are_understood() {
    let loaded = load_text(
        "oidc:\n  expiry: 90d\n  strip_email_domain: true\n\
         dns_config:\n  use_username_in_magic_dns: false\n  extra_records:\n    - {name: a.headway.internal, type: A, value: 100.64.0.5}\n\
         db_type: postgres\ndb_host: db.internal\ndb_port: 6432\ndb_ssl: true\n\
         randomize_client_port: true\n",
    );
    assert_eq!(
        loaded.config.node.expiry,
        Some(Duration::from_secs(90 * 86_400))
    );
    assert_eq!(loaded.config.dns.extra_records.len(), 1);
    assert!(loaded.config.randomize_client_port);
    let Database::Postgres(pg) = &loaded.config.database else {
        panic!("{:?}", loaded.config.database);
    };
    assert_eq!(
        (pg.host.as_str(), pg.port, pg.ssl),
        ("db.internal", 6432, PgSsl::Prefer)
    );
    let warnings = messages(&loaded);
    assert_eq!(warnings.len(), 8, "{warnings:#?}");
    assert!(
        warnings.contains(
            &"config.yaml:2: `oidc.expiry` is a legacy key; headway read it as `node.expiry`"
                .to_owned()
        )
    );
    assert!(warnings.iter().any(|w| w.starts_with(
        "config.yaml:5: `dns_config.use_username_in_magic_dns` is a legacy key and is ignored"
    )));
}

#[test]
fn postgres_keys_read_as_headscale_reads_them() {
    let pg = |text: &str| {
        let loaded = load_text(&format!("database:\n  type: postgres\n  postgres:\n{text}"));
        let Database::Postgres(pg) = loaded.config.database.clone() else {
            panic!("{:?}", loaded.config.database);
        };
        (pg, messages(&loaded))
    };
    for (written, mode) in [
        ("false", PgSsl::Disable),
        ("true", PgSsl::Prefer),
        ("\"1\"", PgSsl::Prefer),
        ("require", PgSsl::Require),
        ("verify-full", PgSsl::VerifyFull),
    ] {
        assert_eq!(
            pg(&format!("    ssl: {written}\n")).0.ssl,
            mode,
            "{written}"
        );
    }
    let (conf, warnings) = pg(
        "    host: /run/postgresql\n    name: hs\n    user: hs\n    pass: \" p w \"\n    max_open_conns: 20\n    conn_max_idle_time_secs: 60\n",
    );
    assert_eq!(
        (conf.host.as_str(), conf.name.as_str(), conf.pass.as_str()),
        ("/run/postgresql", "hs", " p w ")
    );
    assert_eq!(
        (conf.max_open_conns, conf.conn_max_idle_time_secs),
        (20, 60)
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(conf.address(), "postgres://hs@/run/postgresql:5432/hs");
    // Fewer idle than open connections cannot be kept to: said, not ignored.
    let (_, warnings) = pg("    max_open_conns: 20\n    max_idle_conns: 5\n");
    assert_eq!(
        warnings,
        [
            "config.yaml:5: database.postgres.max_idle_conns: is not supported: headway keeps idle connections (up to max_open_conns) until they have been idle for conn_max_idle_time_secs (3600 s)"
        ]
    );
    // With SQLite chosen, the PostgreSQL keys are only checked.
    let loaded = load_text("database:\n  postgres:\n    max_idle_conns: 1\n");
    assert!(messages(&loaded).is_empty());
}

#[test]
fn unix_socket_permission_accepts_the_usual_octal_spellings() {
    for (text, mode) in [
        ("unix_socket_permission: \"0770\"", 0o770),
        ("unix_socket_permission: 0770", 0o770),
        ("unix_socket_permission: 770", 0o770),
        ("unix_socket_permission: 0o750", 0o750),
        ("unix_socket_permission: \"0o700\"", 0o700),
    ] {
        assert_eq!(
            load_text(text).config.unix_socket_permission,
            mode,
            "{text}"
        );
    }
}

#[test]
fn relative_paths_are_kept_as_written() {
    let loaded =
        load_text("db_path: ./data/db.sqlite\nnoise:\n  private_key_path: keys/noise.key\n");
    assert!(matches!(&loaded.config.database,
        Database::Sqlite { path, .. } if path == Path::new("./data/db.sqlite")));
    assert_eq!(
        loaded.config.noise_private_key_path,
        Path::new("keys/noise.key")
    );
}

#[test]
fn empty_or_comment_only_file_means_defaults() {
    for text in ["", "\n\n", "# nothing here\n  # still nothing\n", "---\n"] {
        let loaded = load_text(text);
        assert_eq!(loaded.config, Config::default(), "{text:?}");
        assert!(loaded.warnings.is_empty());
    }
}

#[test]
fn oversized_input_is_refused() {
    let text = format!("# {}\n", "x".repeat(MAX_CONFIG_BYTES));
    let message = refusal(&text);
    assert!(message.contains("larger than 1024 KiB"), "{message}");
}

#[test]
fn environment_overrides_file_and_headway_beats_headscale() {
    let file = "listen_addr: 127.0.0.1:1111\nlog:\n  level: debug\n";
    let env = env_of(&[("HEADSCALE_LISTEN_ADDR", "127.0.0.1:2222")]);
    let loaded = load_from_str(file, "config.yaml", &env).unwrap();
    assert_eq!(loaded.config.listen_addr, net("127.0.0.1:2222"));
    assert_eq!(
        loaded.config.log.level, "debug",
        "untouched keys keep the file's value"
    );

    let env = env_of(&[
        ("HEADSCALE_LISTEN_ADDR", "127.0.0.1:2222"),
        ("HEADWAY_LISTEN_ADDR", "127.0.0.1:3333"),
        ("HEADWAY_DATABASE_SQLITE_PATH", "/srv/db.sqlite"),
        ("HEADWAY_PREFIXES_V4", "100.64.0.0/24"),
        ("HEADWAY_DNS_NAMESERVERS_GLOBAL", "1.1.1.1, 1.0.0.1 9.9.9.9"),
        (
            "HEADWAY_DNS_NAMESERVERS_SPLIT",
            r#"{"corp.example": ["10.0.0.53"]}"#,
        ),
        ("HEADWAY_DERP_SERVER_ENABLED", "false"),
        ("HEADWAY_DERP_PATHS", "/etc/headway/derp.yaml"),
        ("HEADWAY_CONFIG", "/not/a/key"),
        ("HEADWAY_TLS_CERT_PATH", ""),
    ]);
    let loaded = load_from_str(file, "config.yaml", &env).unwrap();
    let c = &loaded.config;
    assert_eq!(c.listen_addr, net("127.0.0.1:3333"));
    assert!(
        matches!(&c.database, Database::Sqlite { path, .. } if path == Path::new("/srv/db.sqlite"))
    );
    assert_eq!(c.prefixes.v4, Some(net("100.64.0.0/24")));
    assert_eq!(c.prefixes.v6, None);
    assert_eq!(c.dns.nameservers_global, ["1.1.1.1", "1.0.0.1", "9.9.9.9"]);
    assert_eq!(c.dns.nameservers_split["corp.example"], ["10.0.0.53"]);
    assert_eq!(c.tls.cert_path, None);
    assert!(!c.derp.server.enabled);
    assert_eq!(c.derp.paths, [Path::new("/etc/headway/derp.yaml")]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn legacy_names_work_from_the_environment_too() {
    let env = env_of(&[
        ("HEADSCALE_DB_PATH", "/env/db.sqlite"),
        ("HEADSCALE_IP_PREFIXES", "fd7a:115c:a1e0::/48,100.64.0.0/10"),
    ]);
    // The environment outranks the file, even when the file uses the modern name.
    let loaded = load_from_str(
        "database:\n  sqlite:\n    path: /file/db.sqlite\n",
        "config.yaml",
        &env,
    )
    .unwrap();
    assert!(matches!(&loaded.config.database,
        Database::Sqlite { path, .. } if path == Path::new("/env/db.sqlite")));
    assert_eq!(loaded.config.prefixes.v4, Some(net("100.64.0.0/10")));
    assert_eq!(
        messages(&loaded),
        [
            "environment variable HEADSCALE_DB_PATH: `db_path` is a legacy key; headway read it as `database.sqlite.path`",
            "environment variable HEADSCALE_IP_PREFIXES: `ip_prefixes` is a legacy key; headway read it as `prefixes.v4`/`prefixes.v6`",
        ]
    );
}

#[test]
fn bad_environment_values_name_the_variable() {
    for (var, value, expected) in [
        (
            "HEADWAY_LISTEN_ADDR",
            "nonsense",
            "environment variable HEADWAY_LISTEN_ADDR: listen_addr: \"nonsense\" is not a listen address",
        ),
        (
            "HEADSCALE_NODE_EPHEMERAL_INACTIVITY_TIMEOUT",
            "5",
            "environment variable HEADSCALE_NODE_EPHEMERAL_INACTIVITY_TIMEOUT: node.ephemeral.inactivity_timeout: \"5\" is not a duration",
        ),
        (
            "HEADWAY_DNS_NAMESERVERS_SPLIT",
            "{oops",
            "environment variable HEADWAY_DNS_NAMESERVERS_SPLIT: dns.nameservers.split: not valid YAML or JSON",
        ),
    ] {
        let env = env_of(&[(var, value)]);
        let message = load_from_str("", "config.yaml", &env)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(expected),
            "got:  {message}\nwant: {expected}"
        );
    }
}

#[test]
fn search_path_puts_headway_places_before_headscale_ones() {
    let paths = search_path(Some(Path::new("/home/ada")));
    let shown: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(
        shown,
        [
            "/etc/headway/config.yaml",
            "/etc/headway/config.json",
            "/home/ada/.headway/config.yaml",
            "/home/ada/.headway/config.json",
            "./config.yaml",
            "./config.json",
            "/etc/headscale/config.yaml",
            "/etc/headscale/config.json",
            "/home/ada/.headscale/config.yaml",
            "/home/ada/.headscale/config.json",
        ]
    );
}

#[test]
fn file_choice_follows_flag_then_variables_then_search_path() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, port: u16| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("listen_addr: 127.0.0.1:{port}\n")).unwrap();
        path
    };
    let json = dir.path().join("b/config.json");
    std::fs::create_dir_all(json.parent().unwrap()).unwrap();
    std::fs::write(&json, r#"{"listen_addr": "127.0.0.1:2002"}"#).unwrap();
    let later = write("c/config.yaml", 2003);
    let by_headscale = write("hs.yaml", 2004);
    let by_headway = write("hw.yaml", 2005);
    let by_flag = write("flag.yaml", 2006);
    let candidates = vec![dir.path().join("a/config.yaml"), json.clone(), later];
    let port = |loaded: &Loaded| loaded.config.listen_addr.port();

    let loaded = load_with(None, &candidates, &no_env).unwrap();
    assert_eq!(
        (port(&loaded), loaded.path.as_deref()),
        (2002, Some(json.as_path()))
    );

    let hs = by_headscale.to_str().unwrap();
    let hw = by_headway.to_str().unwrap();
    let loaded = load_with(None, &candidates, &env_of(&[("HEADSCALE_CONFIG", hs)])).unwrap();
    assert_eq!(port(&loaded), 2004);
    let both = env_of(&[("HEADSCALE_CONFIG", hs), ("HEADWAY_CONFIG", hw)]);
    assert_eq!(port(&load_with(None, &candidates, &both).unwrap()), 2005);
    assert_eq!(
        port(&load_with(Some(&by_flag), &candidates, &both).unwrap()),
        2006
    );

    let missing = dir.path().join("nope.yaml");
    let message = load_with(Some(&missing), &candidates, &no_env)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(&missing.display().to_string()) && message.contains("-c/--config"),
        "{message}"
    );
    let gone = env_of(&[("HEADWAY_CONFIG", "/nonexistent/headway.yaml")]);
    let message = load_with(None, &candidates, &gone).unwrap_err().to_string();
    assert!(
        message.contains("/nonexistent/headway.yaml") && message.contains("HEADWAY_CONFIG"),
        "{message}"
    );

    // Nothing found: defaults, with the environment still applied.
    let env = env_of(&[("HEADWAY_LISTEN_ADDR", "127.0.0.1:2007")]);
    let loaded = load_with(None, &[dir.path().join("a/config.yaml")], &env).unwrap();
    assert_eq!((port(&loaded), loaded.path.as_deref()), (2007, None));
}

#[test]
fn errors_from_a_found_file_name_its_path_and_oversized_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "\nserver_url: ftp://x\n").unwrap();
    let message = load_with(Some(&path), &[], &no_env)
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(&format!("{}:2: server_url:", path.display())),
        "{message}"
    );

    std::fs::write(&path, vec![b'#'; MAX_CONFIG_BYTES + 1]).unwrap();
    let message = load_with(Some(&path), &[], &no_env)
        .unwrap_err()
        .to_string();
    assert!(message.contains("larger than 1024 KiB"), "{message}");
}
#[test]
fn flow_style_sections_are_read_and_point_at_their_line() {
    let loaded = load_text(
        "server_url: http://127.0.0.1:8080\ndns_config: {magic_dns: false, base_domain: corp.example}\n",
    );
    assert!(!loaded.config.dns.magic_dns);
    assert_eq!(loaded.config.dns.base_domain, "corp.example");
    assert_eq!(
        messages(&loaded),
        [
            "config.yaml:2: `dns_config.base_domain` is a legacy key; headway read it as `dns.base_domain`",
            "config.yaml:2: `dns_config.magic_dns` is a legacy key; headway read it as `dns.magic_dns`",
        ]
    );
}

#[test]
fn the_embedded_relay_is_on_unless_other_relays_are_named() {
    let relay = |text: &str| {
        let server = load_text(text).config.derp.server;
        (server.enabled, server.enabled_by_default)
    };
    assert_eq!(relay("log:\n  level: info\n"), (true, true));
    assert_eq!(
        relay("derp:\n  urls: [https://derp.example.com/map.json]\n"),
        (false, false)
    );
    assert_eq!(
        relay("derp:\n  paths: [/etc/headway/derp.yaml]\n"),
        (false, false)
    );
    assert_eq!(
        relay("derp:\n  server:\n    enabled: true\n  urls: [https://derp.example.com/m]\n"),
        (true, false)
    );
    assert_eq!(
        relay("derp:\n  server:\n    enabled: false\n  urls: [https://derp.example.com/m]\n"),
        (false, false)
    );
    // Off with nothing else would leave clients without a relay: it runs, with a warning.
    let text = "derp:\n  server:\n    enabled: false\n";
    assert_eq!(relay(text), (true, true));
    let warned = messages(&load_text(text));
    assert!(
        warned.len() == 1 && warned[0].contains("config.yaml:3: derp.server.enabled: is false"),
        "{warned:?}"
    );
}

#[test]
fn a_lets_encrypt_name_that_is_not_the_server_url_is_a_warning() {
    let loaded = load_text(
        "server_url: https://hw.example.com:443\ntls_letsencrypt_hostname: hw.example.com\n",
    );
    assert!(messages(&loaded).is_empty(), "{:?}", loaded.warnings);
    let loaded =
        load_text("server_url: https://hw.example.com\ntls_letsencrypt_hostname: hw.example.com\n");
    assert!(messages(&loaded).is_empty(), "{:?}", loaded.warnings);
    let loaded = load_text(
        "server_url: http://hw.example.com:8080\ntls_letsencrypt_hostname: hw.example.com\n",
    );
    assert_eq!(
        messages(&loaded),
        [
            "tls_letsencrypt_hostname: the certificate is for hw.example.com, but server_url is http://hw.example.com:8080; clients verify it only at https://hw.example.com"
        ]
    );
    // A name that merely starts the same way is another name.
    let loaded = load_text(
        "server_url: https://hw.example.com.evil\ntls_letsencrypt_hostname: hw.example.com\n",
    );
    assert_eq!(messages(&loaded).len(), 1, "{:?}", loaded.warnings);
}

#[test]
fn the_authoritative_dns_listener_is_off_by_default_and_needs_a_zone_and_a_name() {
    assert_eq!(
        load_text("log:\n  level: info\n").config.dns.authoritative,
        None
    );
    let on = load_text(
        "server_url: https://headway.example.com\ndns:\n  base_domain: ts.example.com\n  authoritative:\n    listen_addr: 0.0.0.0:53\n",
    );
    assert_eq!(
        on.config.dns.authoritative,
        Some(Authoritative {
            listen_addr: "0.0.0.0:53".parse().unwrap(),
            nameserver: "headway.example.com".into(),
        })
    );
    let message = refusal(
        "server_url: https://headway.example.com\ndns:\n  magic_dns: false\n  authoritative:\n    listen_addr: 0.0.0.0:53\n",
    );
    assert!(
        message.contains("config.yaml:5: dns.authoritative.listen_addr: needs dns.magic_dns"),
        "{message}"
    );
    let message = refusal(
        "server_url: http://127.0.0.1:8080\ndns:\n  authoritative:\n    listen_addr: 127.0.0.1:5353\n",
    );
    assert!(
        message.contains("dns.authoritative.nameserver: is needed"),
        "{message}"
    );
    let named = load_text(
        "server_url: http://127.0.0.1:8080\ndns:\n  authoritative:\n    listen_addr: 127.0.0.1:5353\n    nameserver: ns.example.com\n",
    );
    assert_eq!(
        named.config.dns.authoritative.unwrap().nameserver,
        "ns.example.com"
    );
    let idle = load_text("dns:\n  authoritative:\n    nameserver: ns.example.com\n");
    assert_eq!(
        messages(&idle),
        [
            "config.yaml:3: dns.authoritative.nameserver: is ignored: dns.authoritative.listen_addr is not set, so headway answers no DNS"
        ]
    );
}

#[test]
fn an_inline_record_with_a_bad_address_is_refused_with_its_line() {
    let text = "server_url: http://127.0.0.1:8080\n\
                dns:\n  base_domain: ts.example\n  extra_records:\n    \
                - {name: ok.ts.example, type: A, value: 100.64.0.3}\n    \
                - {name: bad.ts.example, type: AAAA, value: 100.64.0.4}\n";
    let message = refusal(text);
    assert!(
        message.starts_with("config.yaml:4: dns.extra_records: entry 1: bad.ts.example"),
        "{message}"
    );
    assert!(message.contains("not an IPv6 address"), "{message}");
}

#[test]
fn two_settings_naming_one_file_are_refused_naming_both() {
    let message = refusal(
        "server_url: http://127.0.0.1:8080\n\
         database:\n  type: sqlite\n  sqlite:\n    path: /var/lib/headway/db.sqlite\n\
         unix_socket: /var/lib/headway/./db.sqlite\n",
    );
    assert!(
        message.starts_with(
            "config.yaml:6: unix_socket: /var/lib/headway/./db.sqlite is also database.sqlite.path"
        ),
        "{message}"
    );
    let message = refusal(
        "server_url: http://127.0.0.1:8080\n\
         noise:\n  private_key_path: /etc/headway/acl.hujson\n\
         policy:\n  path: /etc/headway/acl.hujson\n",
    );
    assert!(message.contains("noise.private_key_path"), "{message}");
    assert!(message.contains("is also policy.path"), "{message}");
}

#[test]
fn deeply_nested_yaml_is_refused_at_once_with_its_line() {
    let text = format!(
        "server_url: http://127.0.0.1:8080\nx: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    // Refused by the nesting check, before the parser (which would take most of
    // a minute on this, then say "recursion limit exceeded").
    let message = refusal(&text);
    assert!(
        message.starts_with("config.yaml:2: not valid YAML: nested more than 64 levels deep"),
        "{message}"
    );
}

#[test]
fn risky_admin_access_is_warned_about() {
    let loaded = load_text(
        "server_url: http://127.0.0.1:8080\n\
         grpc_listen_addr: 0.0.0.0:50443\n\
         grpc_allow_insecure: true\n\
         unix_socket_permission: \"0777\"\n",
    );
    let warnings = messages(&loaded);
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0]
            .starts_with("config.yaml:3: grpc_allow_insecure: plaintext gRPC on 0.0.0.0:50443"),
        "{warnings:#?}"
    );
    assert!(
        warnings[1].starts_with("config.yaml:4: unix_socket_permission: 777 lets every local user"),
        "{warnings:#?}"
    );
    // On loopback, and with a group-only socket, nothing to say.
    let loaded = load_text(
        "server_url: http://127.0.0.1:8080\n\
         grpc_listen_addr: 127.0.0.1:50443\n\
         grpc_allow_insecure: true\n\
         unix_socket_permission: \"0770\"\n",
    );
    assert_eq!(messages(&loaded), Vec::<String>::new());
}

#[test]
fn connection_limits_are_read_and_zero_timeouts_refused() {
    let loaded = load_text(
        "limits:\n  handshake_timeout: 3s\n  request_timeout: 1m\n  idle_timeout: 90s\n  \
         max_connections: 500\n  max_pending_per_source: 8\n  register_burst: 0\n  \
         register_interval: 2s\n",
    );
    assert_eq!(messages(&loaded), Vec::<String>::new());
    assert_eq!(
        loaded.config.limits,
        Limits {
            handshake_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            max_connections: 500,
            max_pending_per_source: 8,
            register_burst: 0,
            register_interval: Duration::from_secs(2),
        }
    );
    let env = env_of(&[("HEADWAY_LIMITS_MAX_PENDING_PER_SOURCE", "16")]);
    let loaded = load_from_str("", "config.yaml", &env).unwrap();
    assert_eq!(loaded.config.limits.max_pending_per_source, 16);
    assert_eq!(loaded.config.limits.register_burst, 20);

    let zero = refusal("limits:\n  idle_timeout: 0s\n");
    assert!(
        zero.contains("config.yaml:2: limits.idle_timeout: must be longer than zero"),
        "{zero}"
    );
    let none = refusal("limits:\n  max_pending_per_source: 0\n");
    assert!(none.contains("limits.max_pending_per_source"), "{none}");
}

#[test]
fn tls_letsencrypt_listen_takes_go_spellings() {
    let addr = |text: &str| super::values::go_listen_addr(text).map(|a| a.to_string());
    assert_eq!(addr(":http").as_deref(), Some("0.0.0.0:80"));
    assert_eq!(addr(":https").as_deref(), Some("0.0.0.0:443"));
    assert_eq!(addr(":8080").as_deref(), Some("0.0.0.0:8080"));
    assert_eq!(addr("127.0.0.1:80").as_deref(), Some("127.0.0.1:80"));
    assert_eq!(addr("[::1]:http").as_deref(), Some("[::1]:80"));
    for bad in ["", "80", ":web", "localhost:80", ":99999"] {
        assert_eq!(addr(bad), None, "{bad:?}");
    }
}

#[test]
fn headscale_settings_that_do_nothing_here_are_named_at_start_up() {
    let loaded = load_text(
        "database:\n  debug: true\n  gorm:\n    prepare_stmt: true\n    slow_threshold: 50\n\
         derp:\n  server:\n    stun:\n      enabled: false\n\
         preauth_keys:\n  revoked_retention: 24h\n",
    );
    let warnings = messages(&loaded);
    for expected in [
        "config.yaml:2: database.debug: is not supported",
        "config.yaml:5: database.gorm.slow_threshold: has no effect: database.gorm configures Headscale's ORM",
        "config.yaml:9: derp.server.stun.enabled: is ignored: STUN runs with the embedded relay",
        "config.yaml:11: preauth_keys.revoked_retention: is not supported yet",
    ] {
        assert!(
            warnings.iter().any(|w| w.starts_with(expected)),
            "{expected}\n{warnings:#?}"
        );
    }
    assert_eq!(warnings.len(), 4, "{warnings:#?}");
}

#[test]
fn oidc_settings_are_checked_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client_secret");
    std::fs::write(&secret, "  from-a-file\n").unwrap();
    // `$VAR` in the path is expanded (systemd's ${CREDENTIALS_DIRECTORY}); HOME is set.
    let home = std::env::var("HOME").unwrap();
    let relative = secret
        .strip_prefix(&home)
        .ok()
        .map(|p| p.display().to_string());
    let path = match &relative {
        Some(rest) => format!("${{HOME}}/{rest}"),
        None => secret.display().to_string(),
    };
    let loaded = load_text(&format!(
        "oidc:\n  issuer: https://idp.example\n  client_id: headway\n  client_secret_path: {path}\n  pkce:\n    enabled: true\n    method: plain\n"
    ));
    let oidc = loaded.config.oidc.clone().unwrap();
    assert_eq!(oidc.client_secret, "from-a-file");
    assert_eq!(oidc.pkce, Some(crate::config::PkceMethod::Plain));
    assert!(messages(&loaded).is_empty(), "{:?}", messages(&loaded));

    assert_eq!(
        refusal("oidc:\n  issuer: https://idp.example\n  client_secret: s\n"),
        "config.yaml:2: oidc.issuer: needs oidc.client_id: the id the provider gave headway when you registered it as a client"
    );
    assert!(
        refusal("oidc:\n  issuer: https://idp.example\n  client_id: h\n  client_secret: s\n  client_secret_path: /x\n")
            .starts_with("config.yaml:5: oidc.client_secret_path: oidc.client_secret and oidc.client_secret_path are mutually exclusive")
    );
    assert!(
        refusal("oidc:\n  issuer: idp.example\n  client_id: h\n  client_secret: s\n")
            .starts_with("config.yaml:2: oidc.issuer: \"idp.example\" is not a URL")
    );
    assert!(
        refusal("oidc:\n  issuer: https://idp.example\n  client_id: h\n  client_secret: s\n  pkce:\n    enabled: true\n    method: S512\n")
            .starts_with("config.yaml:7: oidc.pkce.method: \"S512\" is not allowed (expected one of: S256, plain)")
    );
    assert!(
        refusal("oidc:\n  issuer: https://idp.example\n  client_id: h\n  client_secret_path: /nonexistent/secret\n")
            .starts_with("config.yaml:4: oidc.client_secret_path: cannot read /nonexistent/secret")
    );
    // `oidc.enabled` is read for nothing; a PKCE method without PKCE on is named,
    // Headscale's default beside `enabled: false` is not.
    let loaded = load_text(
        "oidc:\n  enabled: true\n  issuer: https://idp.example\n  client_id: h\n  client_secret: s\n  pkce:\n    enabled: false\n    method: plain\n",
    );
    assert_eq!(loaded.config.oidc.as_ref().unwrap().pkce, None);
    assert_eq!(
        messages(&loaded),
        [
            "config.yaml:2: oidc.enabled: has no effect: OIDC is on exactly when oidc.issuer is set, as in Headscale",
            "config.yaml:8: oidc.pkce.method: has no effect while oidc.pkce.enabled is false",
        ]
    );
    let quiet = load_text(
        "oidc:\n  issuer: https://idp.example\n  client_id: h\n  client_secret: s\n  pkce:\n    enabled: false\n    method: S256\n",
    );
    assert!(messages(&quiet).is_empty(), "{:?}", messages(&quiet));
    // Without an issuer the rest does nothing, and start-up says so.
    let loaded = load_text("oidc:\n  client_id: headway\n  allowed_domains: [example.com]\n");
    assert!(loaded.config.oidc.is_none());
    assert_eq!(
        messages(&loaded),
        [
            "config.yaml:2: oidc.client_id: has no effect without oidc.issuer, nor has the rest of oidc: nodes register with pre-auth keys or from the CLI"
        ]
    );
}

#[test]
fn web_ui_keys_turn_the_pages_off_and_name_oidc_admins() {
    let loaded = load_text("server_url: http://127.0.0.1:8080\n");
    assert!(loaded.config.web_ui.enabled, "on by default");
    assert!(!loaded.config.web_ui.oidc_sign_in());
    let loaded = load_text(
        "server_url: http://127.0.0.1:8080\nweb_ui:\n  enabled: false\n  oidc_admin_groups: [admins, ' ']\n",
    );
    assert!(!loaded.config.web_ui.enabled);
    assert_eq!(loaded.config.web_ui.oidc_admin_groups, ["admins"]);
    assert!(!loaded.config.web_ui.oidc_sign_in(), "off means off");
    // Admins named without a provider: said at start-up.
    let loaded = load_text(
        "server_url: http://127.0.0.1:8080\nweb_ui:\n  oidc_admin_users: [alice@example.com]\n",
    );
    assert!(
        messages(&loaded)
            .iter()
            .any(|m| m.contains("oidc.issuer is not")),
        "{:?}",
        messages(&loaded)
    );
    let err = refusal("server_url: http://127.0.0.1:8080\nweb_ui:\n  enabled: maybe\n");
    assert!(err.contains("web_ui.enabled"), "{err}");
}
