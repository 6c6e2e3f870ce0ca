//! Finding, parsing and validating configuration files and environment overrides.

use super::keys;
use super::legacy::{self, Layer};
use super::lines::LineIndex;
use super::values::{self, Setting, Source};
use super::*;
use super::{apply, env};
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

/// Largest configuration file read; real ones are a few KiB, so more is a mistake.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// Variables that name the configuration file, strongest first.
const FILE_VARIABLES: [&str; 2] = ["HEADWAY_CONFIG", "HEADSCALE_CONFIG"];

/// Loads from `explicit` (the `-c` flag), else `HEADWAY_CONFIG` / `HEADSCALE_CONFIG`,
/// else the search path; embedded defaults when no file exists.
pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    load_with(explicit, &search_path(home.as_deref()), &|name| {
        std::env::var(name).ok()
    })
}

/// Where headway looks for a file when neither `-c` nor a variable names one: its own
/// places first, then Headscale's, so an existing Headscale install is picked up.
pub fn search_path(home: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/etc/headway")];
    dirs.extend(home.map(|h| h.join(".headway")));
    dirs.push(PathBuf::from("."));
    dirs.push(PathBuf::from("/etc/headscale"));
    dirs.extend(home.map(|h| h.join(".headscale")));
    dirs.iter()
        .flat_map(|dir| [dir.join("config.yaml"), dir.join("config.json")])
        .collect()
}

/// `load` with the candidate files and the environment supplied by the caller.
pub fn load_with(
    explicit: Option<&Path>,
    candidates: &[PathBuf],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let named = match explicit {
        Some(path) => Some((path.to_path_buf(), "-c/--config".to_owned())),
        None => FILE_VARIABLES.iter().find_map(|var| {
            env(var)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (PathBuf::from(v), format!("environment variable {var}")))
        }),
    };
    let path = match named {
        Some((path, from)) => {
            if !path.is_file() {
                return Err(ConfigError {
                    message: format!(
                        "config file {} (from {from}) does not exist or is not a file",
                        path.display()
                    ),
                });
            }
            Some(path)
        }
        None => candidates.iter().find(|p| p.is_file()).cloned(),
    };
    let Some(path) = path else {
        // No file anywhere: the embedded defaults, still adjustable from the environment.
        return load_from_str("", "embedded defaults", env);
    };
    let origin = path.display().to_string();
    let text = read_capped(&path, &origin)?;
    let mut loaded = load_from_str(&text, &origin, env)?;
    // As Headscale does, a relative policy.path is relative to the config file.
    if let Some(policy) = &loaded.config.policy.path
        && policy.is_relative()
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        loaded.config.policy.path = Some(dir.join(policy));
    }
    loaded.path = Some(path);
    Ok(loaded)
}

fn read_capped(path: &Path, origin: &str) -> Result<String, ConfigError> {
    use std::io::Read;
    let fail = |e: std::io::Error| ConfigError {
        message: format!("{origin}: cannot read the config file: {e}"),
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(fail)?
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(too_large(origin));
    }
    String::from_utf8(bytes).map_err(|e| ConfigError {
        message: format!(
            "{origin}: the config file is not UTF-8 text (first bad byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

fn too_large(origin: &str) -> ConfigError {
    ConfigError {
        message: format!(
            "{origin}: the config file is larger than {} KiB; is it the right file?",
            MAX_CONFIG_BYTES / 1024
        ),
    }
}

/// Loads from YAML text; `origin` names the file in messages; `env` reads variables.
///
/// The returned `path` is `None`; `load` fills it in for files it read.
pub fn load_from_str(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(too_large(origin));
    }
    let mut warnings = Vec::new();
    let mut settings = legacy::resolve(file_layer(text, origin, &mut warnings)?, &mut warnings)?;
    // Weakest first, so each later layer overwrites what it sets: file, HEADSCALE_*, HEADWAY_*.
    for prefix in env::PREFIXES {
        let layer = legacy::resolve(env::layer(prefix, env)?, &mut warnings)?;
        settings.extend(layer);
    }
    let config = apply::build(&settings, &mut warnings)?;
    Ok(Loaded {
        config,
        path: None,
        warnings,
    })
}

/// Parses the file into settings for known keys and warns about unknown ones.
fn file_layer(text: &str, origin: &str, warnings: &mut Vec<Warning>) -> Result<Layer, ConfigError> {
    if let Err((line, depth)) = super::nesting::check(text) {
        return Err(ConfigError {
            message: format!(
                "{origin}:{line}: not valid YAML: nested more than {} levels deep (reached {depth}); no setting needs that",
                super::nesting::MAX_NESTING
            ),
        });
    }
    let lines = LineIndex::build(text);
    let mut root: yaml_serde::Value =
        yaml_serde::from_str(text).map_err(|e| yaml_error(&e, origin, &lines))?;
    root.apply_merge().map_err(|e| ConfigError {
        message: format!("{origin}: a YAML merge key (<<) could not be applied: {e}"),
    })?;
    let mut layer = Layer::new();
    match &root {
        // An empty file, or one holding only comments, means "all defaults".
        yaml_serde::Value::Null => {}
        yaml_serde::Value::Mapping(map) => {
            let walk = Walk { origin, lines };
            walk.mapping(map, "", &mut layer, warnings)?;
        }
        other => {
            return Err(ConfigError {
                message: format!(
                    "{origin}: expected settings as `key: value` lines, found {}",
                    values::describe(other)
                ),
            });
        }
    }
    Ok(layer)
}

fn yaml_error(e: &yaml_serde::Error, origin: &str, lines: &LineIndex) -> ConfigError {
    let message = e.to_string();
    // The parser places a repeated key at the start of its mapping; the scan knows the repeat.
    if let Some(name) = message
        .strip_prefix("duplicate entry with key \"")
        .and_then(|rest| rest.split('"').next())
        && let Some((path, first, again)) = lines.repeated(name)
    {
        return ConfigError {
            message: format!(
                "{origin}:{again}: not valid YAML: `{path}` is written twice (first on line {first}); keep one"
            ),
        };
    }
    let at = match e.location() {
        Some(l) => format!("{origin}:{}", l.line()),
        None => origin.to_owned(),
    };
    ConfigError {
        message: format!("{at}: not valid YAML: {message}"),
    }
}

/// Walks the parsed file, matching dotted paths against the key table.
struct Walk<'a> {
    origin: &'a str,
    lines: LineIndex,
}

impl Walk<'_> {
    fn source(&self, path: &str) -> Source {
        Source::File {
            origin: self.origin.to_owned(),
            line: self.lines.line(path),
        }
    }

    fn mapping(
        &self,
        map: &yaml_serde::Mapping,
        prefix: &str,
        layer: &mut Layer,
        warnings: &mut Vec<Warning>,
    ) -> Result<(), ConfigError> {
        for (name, value) in map {
            let name = values::scalar_text(name).unwrap_or_else(|| values::describe(name));
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}.{name}")
            };
            if let Some(key) = keys::lookup(&path) {
                layer.insert(
                    key.path,
                    Setting {
                        value: value.clone(),
                        source: self.source(&path),
                        written: path.clone(),
                        raw: self.lines.raw(&path).map(str::to_owned),
                    },
                );
            } else if keys::is_section(&path) {
                match value {
                    yaml_serde::Value::Mapping(inner) => {
                        self.mapping(inner, &path, layer, warnings)?;
                    }
                    // `oidc:` with every line commented out is an empty section.
                    yaml_serde::Value::Null => {}
                    other => {
                        return Err(ConfigError {
                            message: format!(
                                "{}: {path}: expected a section of `key: value` settings, found {}",
                                self.source(&path),
                                values::describe(other)
                            ),
                        });
                    }
                }
            } else {
                let mut message =
                    format!("{}: unknown key `{path}` is ignored", self.source(&path));
                if let Some(near) = keys::suggest(&path) {
                    message.push_str(&format!(" (did you mean `{near}`?)"));
                }
                warnings.push(Warning { message });
            }
        }
        Ok(())
    }
}

impl Default for Config {
    /// Embedded defaults: everything under `./headway-data/`, HTTP on 127.0.0.1:8080.
    fn default() -> Self {
        let data = PathBuf::from(DEFAULT_DATA_DIR);
        Config {
            server_url: ServerUrl::parse("http://127.0.0.1:8080").expect("a valid URL"),
            listen_addr: "127.0.0.1:8080".parse().expect("valid default"),
            metrics_listen_addr: None,
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
                    enabled: true,
                    enabled_by_default: true,
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
                letsencrypt_challenge_type: AcmeChallenge::Http01,
                letsencrypt_listen: SocketAddr::from(([0, 0, 0, 0], 80)),
                acme_url: "https://acme-v02.api.letsencrypt.org/directory".into(),
                cert_path: None,
                key_path: None,
                letsencrypt_hostname: None,
                acme_email: String::new(),
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
                authoritative: None,
            },
            unix_socket: data.join("headway.sock"),
            unix_socket_permission: 0o770,
            node: NodeSettings {
                expiry: None,
                ephemeral_inactivity_timeout: Duration::from_secs(30 * 60),
                ha_probe: HaProbe {
                    interval: Duration::from_secs(10),
                    timeout: Duration::from_secs(5),
                },
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
            auto_update_enabled: false,
            randomize_client_port: false,
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            oidc: None,
            web_ui: super::WebUi::default(),
        }
    }
}
