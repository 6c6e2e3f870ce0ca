//! Finding, parsing and validating configuration files and environment overrides.

use super::*;
use std::path::Path;

/// A successfully loaded configuration.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// The file it came from; `None` means embedded defaults.
    pub path: Option<PathBuf>,
    /// Legacy or unknown keys: print once at start-up.
    pub warnings: Vec<Warning>,
}

/// Something worth telling the admin that does not stop start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A configuration that must not start the server.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
}

/// Loads from `explicit` (the `-c` flag), else `HEADWAY_CONFIG` / `HEADSCALE_CONFIG`,
/// else the search path; embedded defaults when no file exists.
pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
    let _ = explicit;
    Ok(Loaded {
        config: Config::default(),
        path: None,
        warnings: Vec::new(),
    })
}

/// Loads from YAML text; `origin` names the file in messages; `env` reads variables.
pub fn load_from_str(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let _ = (text, origin, env);
    todo!()
}

impl Default for Config {
    /// Embedded defaults: everything under `./headway-data/`, HTTP on 127.0.0.1:8080.
    fn default() -> Self {
        let data = PathBuf::from(DEFAULT_DATA_DIR);
        Config {
            server_url: "http://127.0.0.1:8080".into(),
            listen_addr: "127.0.0.1:8080".parse().expect("valid default"),
            metrics_listen_addr: Some("127.0.0.1:9090".parse().expect("valid default")),
            grpc_listen_addr: None,
            grpc_allow_insecure: false,
            noise_private_key_path: data.join("noise_private.key"),
            prefixes: Prefixes {
                v4: Some("100.64.0.0/10".parse().expect("valid default")),
                v6: Some("fd7a:115c:a1e0::/48".parse().expect("valid default")),
                allocation: Allocation::Sequential,
            },
            database: Database::Sqlite {
                path: data.join("db.sqlite"),
                write_ahead_log: true,
                wal_autocheckpoint: 1000,
            },
            derp: Derp {
                server: DerpServer {
                    enabled: false,
                    region_id: 999,
                    region_code: "headway".into(),
                    region_name: "headway Embedded DERP".into(),
                    verify_clients: true,
                    stun_listen_addr: Some("0.0.0.0:3478".parse().expect("valid default")),
                    private_key_path: data.join("derp_server_private.key"),
                    automatically_add_embedded_derp_region: true,
                    ipv4: None,
                    ipv6: None,
                },
                urls: Vec::new(),
                paths: Vec::new(),
                auto_update_enabled: true,
                update_frequency: Duration::from_secs(3 * 3600),
            },
            tls: Tls {
                letsencrypt_cache_dir: data.join("cache"),
                letsencrypt_challenge_type: "HTTP-01".into(),
                letsencrypt_listen: ":http".into(),
                acme_url: "https://acme-v02.api.letsencrypt.org/directory".into(),
                ..Tls::default()
            },
            log: Log {
                level: "info".into(),
                format: LogFormat::Text,
            },
            policy: Policy {
                mode: PolicyMode::File,
                path: None,
            },
            dns: Dns {
                magic_dns: true,
                base_domain: "headway.internal".into(),
                override_local_dns: false,
                nameservers_global: Vec::new(),
                nameservers_split: BTreeMap::new(),
                search_domains: Vec::new(),
                extra_records: Vec::new(),
                extra_records_path: None,
            },
            unix_socket: data.join("headway.sock"),
            unix_socket_permission: 0o770,
            node: NodeSettings {
                expiry: None,
                ephemeral_inactivity_timeout: Duration::from_secs(30 * 60),
            },
            cli: Cli {
                address: None,
                api_key: None,
                timeout: Duration::from_secs(5),
                insecure: false,
            },
            disable_check_updates: false,
            logtail_enabled: false,
            taildrop_enabled: true,
            randomize_client_port: false,
            trusted_proxies: Vec::new(),
        }
    }
}
