//! headway's configuration: the typed `Config`, its defaults, and loading it from
//! YAML files (Headscale 0.29 keys and the legacy keys guides still use) and
//! from `HEADWAY_*` / `HEADSCALE_*` environment variables.
//!
//! Knows files and environment variables; nothing about the database or the network.
//!
//! Loading runs in this order: `load` picks the file; `lines` indexes key lines;
//! `keys` says which paths exist; `legacy` maps old names per source; `env`
//! reads overrides; `apply` builds the typed `Config` and checks cross-key rules,
//! with `values` doing every conversion and error message.

mod apply;
mod env;
mod keys;
mod legacy;
mod lines;
mod load;
mod nesting;
mod oidc;
mod records;
mod server_url;
#[cfg(test)]
mod tests;
mod values;

pub use load::{
    ConfigError, Loaded, MAX_CONFIG_BYTES, Warning, load, load_from_str, load_with, search_path,
};
pub use oidc::{Oidc, PkceMethod};
pub use records::{MAX_RECORDS_BYTES, parse_extra_records, read_extra_records};
pub use server_url::ServerUrl;

use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Directory that holds every file headway writes when no config says otherwise.
pub const DEFAULT_DATA_DIR: &str = "headway-data";

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Public URL clients use (`server_url`).
    pub server_url: ServerUrl,
    /// Main HTTP listener (`listen_addr`).
    pub listen_addr: SocketAddr,
    /// Prometheus listener (`metrics_listen_addr`); `None` when empty.
    pub metrics_listen_addr: Option<SocketAddr>,
    /// Remote gRPC listener (`grpc_listen_addr`); `None` when unset or empty.
    pub grpc_listen_addr: Option<SocketAddr>,
    /// Serve remote gRPC without TLS (`grpc_allow_insecure`).
    pub grpc_allow_insecure: bool,
    /// Noise (TS2021) control key file (`noise.private_key_path`).
    pub noise_private_key_path: PathBuf,
    pub prefixes: Prefixes,
    pub database: Database,
    pub derp: Derp,
    pub tls: Tls,
    pub log: Log,
    pub policy: Policy,
    pub dns: Dns,
    /// Admin socket (`unix_socket`).
    pub unix_socket: PathBuf,
    /// Mode bits applied to the socket (`unix_socket_permission`, octal text like "0770").
    pub unix_socket_permission: u32,
    pub node: NodeSettings,
    pub cli: Cli,
    /// `disable_check_updates`: accepted for compatibility; headway never phones home.
    pub disable_check_updates: bool,
    /// `logtail.enabled`: whether clients may send logs to Tailscale Inc.
    pub logtail_enabled: bool,
    /// `taildrop.enabled`.
    pub taildrop_enabled: bool,
    /// `auto_update.enabled`: whether clients update themselves by default.
    pub auto_update_enabled: bool,
    /// `randomize_client_port` (legacy; the policy holds it in Headscale 0.29).
    pub randomize_client_port: bool,
    /// `trusted_proxies`: CIDRs whose forwarding headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub limits: Limits,
    /// `oidc.*`; `None` unless `oidc.issuer` is set.
    pub oidc: Option<Oidc>,
    pub web_ui: WebUi,
}

/// `web_ui.*`: the built-in admin pages under `/admin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebUi {
    /// `web_ui.enabled` (default true): off, `/admin` is not served and no
    /// sign-in link is issued.
    pub enabled: bool,
    /// `web_ui.oidc_admin_users`: emails (verified) that may sign in through the
    /// OIDC provider; the `oidc.allowed_*` rules apply first.
    pub oidc_admin_users: Vec<String>,
    /// `web_ui.oidc_admin_groups`: provider groups whose members may sign in.
    pub oidc_admin_groups: Vec<String>,
}

impl Default for WebUi {
    fn default() -> WebUi {
        WebUi {
            enabled: true,
            oidc_admin_users: Vec::new(),
            oidc_admin_groups: Vec::new(),
        }
    }
}

impl WebUi {
    /// Whether anyone may sign in to the web UI through the OIDC provider.
    pub fn oidc_sign_in(&self) -> bool {
        self.enabled && !(self.oidc_admin_users.is_empty() && self.oidc_admin_groups.is_empty())
    }
}

/// `limits.*`: abuse limits on client connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `limits.handshake_timeout`: accept → first request (first byte, TLS,
    /// HTTP/2 preface, headers); a `/ts2021` upgrade → first request inside
    /// Noise; a `/derp` upgrade → the client's login.
    pub handshake_timeout: Duration,
    /// `limits.request_timeout`: each later request's headers, and every body.
    pub request_timeout: Duration,
    /// `limits.idle_timeout`: a connection with no request in progress.
    pub idle_timeout: Duration,
    /// `limits.max_connections`: TCP connections held at once; 0 = the open-file
    /// limit minus a reserve.
    pub max_connections: u32,
    /// `limits.max_pending_per_source`: unproven connections per source address.
    pub max_pending_per_source: u32,
    /// `limits.register_burst`: registration attempts a source may make at once;
    /// 0 = no limit.
    pub register_burst: u32,
    /// `limits.register_interval`: one more attempt is allowed each interval.
    pub register_interval: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 0,
            max_pending_per_source: 64,
            register_burst: 20,
            register_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Prefixes {
    /// `prefixes.v4` (legacy: an IPv4 entry of `ip_prefixes`).
    pub v4: Option<Ipv4Net>,
    /// `prefixes.v6` (legacy: an IPv6 entry of `ip_prefixes`).
    pub v6: Option<Ipv6Net>,
    /// `prefixes.allocation`.
    pub allocation: Allocation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    Sequential,
    Random,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Database {
    /// `database.type: sqlite` (or `sqlite3`; legacy `db_type`).
    Sqlite {
        /// `database.sqlite.path` (legacy `db_path`).
        path: PathBuf,
        /// `database.sqlite.write_ahead_log`.
        write_ahead_log: bool,
        /// `database.sqlite.wal_autocheckpoint`.
        wal_autocheckpoint: u32,
    },
    /// `database.type: postgres` (legacy `db_type: postgres` and `db_host`…).
    Postgres(Postgres),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Postgres {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    pub pass: String,
    /// `database.postgres.ssl`.
    pub ssl: PgSsl,
    pub max_open_conns: u32,
    pub max_idle_conns: u32,
    pub conn_max_idle_time_secs: u64,
}

impl Database {
    /// A database named on the command line: a `postgres://` (or `postgresql://`)
    /// URL, `postgres://user:pass@host:port/name?sslmode=…` (a `host=` parameter
    /// names a Unix socket directory), or else the path of a SQLite file. Missing
    /// parts take the defaults of `database.postgres.*`.
    pub fn from_location(text: &str) -> Result<Database, String> {
        let Some(rest) = ["postgres://", "postgresql://"]
            .iter()
            .find_map(|scheme| text.strip_prefix(scheme))
        else {
            return Ok(Database::Sqlite {
                path: PathBuf::from(text),
                write_ahead_log: true,
                wal_autocheckpoint: 1000,
            });
        };
        let url = url::Url::parse(&format!("postgres://{rest}"))
            .map_err(|e| format!("{text:?} is not a PostgreSQL URL: {e}"))?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|d| d.into_owned())
                .map_err(|_| format!("{text:?}: {s:?} is not UTF-8 once percent-decoded"))
        };
        let mut pg = Postgres::default();
        if let Some(host) = url.host_str().filter(|h| !h.is_empty()) {
            pg.host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
        }
        if let Some(port) = url.port() {
            pg.port = port;
        }
        if !url.username().is_empty() {
            pg.user = decode(url.username())?;
        }
        if let Some(pass) = url.password() {
            pg.pass = decode(pass)?;
        }
        let name = url.path().trim_start_matches('/');
        if !name.is_empty() {
            pg.name = decode(name)?;
        }
        for (key, value) in url.query_pairs() {
            match &*key {
                "sslmode" => {
                    pg.ssl = PgSsl::parse(&value).ok_or_else(|| {
                        format!("{text:?}: sslmode={value} is not a libpq sslmode")
                    })?;
                }
                "host" => pg.host = value.into_owned(),
                "port" => {
                    pg.port = value
                        .parse()
                        .map_err(|_| format!("{text:?}: port={value} is not a port"))?;
                }
                "user" => pg.user = value.into_owned(),
                "password" => pg.pass = value.into_owned(),
                "dbname" => pg.name = value.into_owned(),
                other => {
                    return Err(format!(
                        "{text:?}: the parameter {other:?} is not supported (sslmode, host, port, user, password, dbname are)"
                    ));
                }
            }
        }
        Ok(Database::Postgres(pg))
    }

    /// Where the data lives, for messages: the SQLite file, or the PostgreSQL
    /// server and database (never the password).
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite { path, .. } => path.display().to_string(),
            Database::Postgres(pg) => pg.address(),
        }
    }
}

impl Default for Postgres {
    /// Headscale's defaults for `database.postgres.*` (user and database `headway`).
    fn default() -> Postgres {
        Postgres {
            host: "localhost".into(),
            port: 5432,
            name: "headway".into(),
            user: "headway".into(),
            pass: String::new(),
            ssl: PgSsl::Disable,
            max_open_conns: 10,
            max_idle_conns: 10,
            conn_max_idle_time_secs: 3600,
        }
    }
}

/// `database.postgres.ssl` as Headscale reads it: a boolean (`false` turns TLS
/// off; `true` leaves libpq's default, `prefer`) or a libpq `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgSsl {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl PgSsl {
    /// Go's `strconv.ParseBool` spellings, then libpq's modes.
    pub fn parse(text: &str) -> Option<PgSsl> {
        Some(match text {
            "1" | "t" | "T" | "true" | "TRUE" | "True" | "prefer" => PgSsl::Prefer,
            "0" | "f" | "F" | "false" | "FALSE" | "False" | "disable" => PgSsl::Disable,
            "allow" => PgSsl::Allow,
            "require" => PgSsl::Require,
            "verify-ca" => PgSsl::VerifyCa,
            "verify-full" => PgSsl::VerifyFull,
            _ => return None,
        })
    }
}

impl Postgres {
    /// `postgres://user@host:port/name`, without the password.
    pub fn address(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.name
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Derp {
    pub server: DerpServer,
    /// `derp.urls`: JSON DERP maps to fetch.
    pub urls: Vec<String>,
    /// `derp.paths`: local YAML DERP maps.
    pub paths: Vec<PathBuf>,
    /// `derp.auto_update_enabled`.
    pub auto_update_enabled: bool,
    /// `derp.update_frequency`.
    pub update_frequency: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DerpServer {
    /// `derp.server.enabled`. When the key is absent it is on exactly when neither
    /// `derp.urls` nor `derp.paths` names a relay, so clients always have one.
    pub enabled: bool,
    /// `enabled` came from that default rather than the config: start-up then only
    /// warns when the STUN port is taken.
    pub enabled_by_default: bool,
    pub region_id: i32,
    pub region_code: String,
    pub region_name: String,
    pub verify_clients: bool,
    pub stun_listen_addr: Option<SocketAddr>,
    pub private_key_path: PathBuf,
    pub automatically_add_embedded_derp_region: bool,
    pub ipv4: Option<std::net::Ipv4Addr>,
    pub ipv6: Option<std::net::Ipv6Addr>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tls {
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
    pub letsencrypt_hostname: Option<String>,
    pub letsencrypt_cache_dir: PathBuf,
    /// `tls_letsencrypt_challenge_type`.
    pub letsencrypt_challenge_type: AcmeChallenge,
    /// `tls_letsencrypt_listen` (Go's `:http`, `:80`, `host:port` spellings).
    pub letsencrypt_listen: SocketAddr,
    pub acme_url: String,
    pub acme_email: String,
}

/// How the ACME service checks that headway holds its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// `HTTP-01`: a token on `tls_letsencrypt_listen` (port 80).
    Http01,
    /// `TLS-ALPN-01`: a certificate on `listen_addr` (port 443).
    TlsAlpn01,
}

impl Tls {
    /// Whether headway has a certificate, from files or ACME.
    pub fn has_certificate(&self) -> bool {
        (self.cert_path.is_some() && self.key_path.is_some()) || self.letsencrypt_hostname.is_some()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Log {
    /// `log.level` (legacy `log_level`): trace, debug, info, warn, error.
    pub level: String,
    /// `log.format`: `text` or `json`.
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// `policy.mode`.
    pub mode: PolicyMode,
    /// `policy.path` (legacy `acl_policy_path`); `None` means allow-all.
    pub path: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyMode {
    File,
    Database,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dns {
    /// `dns.magic_dns` (legacy `dns_config.magic_dns`).
    pub magic_dns: bool,
    /// `dns.base_domain` (legacy `dns_config.base_domain`).
    pub base_domain: String,
    /// `dns.override_local_dns` (legacy `dns_config.override_local_dns`).
    pub override_local_dns: bool,
    /// `dns.nameservers.global` (legacy `dns_config.nameservers`).
    pub nameservers_global: Vec<String>,
    /// `dns.nameservers.split` (legacy `dns_config.restricted_nameservers`).
    pub nameservers_split: BTreeMap<String, Vec<String>>,
    /// `dns.search_domains` (legacy `dns_config.domains`).
    pub search_domains: Vec<String>,
    /// `dns.extra_records` (legacy `dns_config.extra_records`).
    pub extra_records: Vec<ExtraRecord>,
    /// `dns.extra_records_path`.
    pub extra_records_path: Option<PathBuf>,
    /// `dns.authoritative.*`: headway answers DNS for `base_domain` itself, so
    /// `tailscale cert` works; `None` (the default) = off.
    pub authoritative: Option<Authoritative>,
}

/// headway's own DNS listener for the tailnet's domain (`dns.authoritative.*`):
/// the admin delegates `base_domain` to it with an NS record, and it serves the
/// `_acme-challenge` TXT records `tailscale cert` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authoritative {
    /// `dns.authoritative.listen_addr`: UDP and TCP, e.g. `0.0.0.0:53`.
    pub listen_addr: SocketAddr,
    /// `dns.authoritative.nameserver`: the host name in the zone's NS and SOA
    /// records (default: `server_url`'s host).
    pub nameserver: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraRecord {
    pub name: String,
    /// `A` or `AAAA`.
    pub record_type: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeSettings {
    /// `node.expiry`: default key expiry for user-owned nodes; `None` = never.
    pub expiry: Option<Duration>,
    /// `node.ephemeral.inactivity_timeout` (legacy `ephemeral_node_inactivity_timeout`).
    pub ephemeral_inactivity_timeout: Duration,
    /// `node.routes.ha.*`: health probes of subnet routers that share a prefix.
    pub ha_probe: HaProbe,
}

/// How subnet routers that serve the same prefix are probed (`node.routes.ha`):
/// every `interval` each one is asked, through its map session, to answer within
/// `timeout`; one that does not loses its primary role to one that does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HaProbe {
    /// `node.routes.ha.probe_interval`; zero turns probing off.
    pub interval: Duration,
    /// `node.routes.ha.probe_timeout`.
    pub timeout: Duration,
}

impl HaProbe {
    pub fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cli {
    /// `cli.address`: remote gRPC address; unset means the Unix socket.
    pub address: Option<String>,
    /// `cli.api_key`: Bearer key for the remote address.
    pub api_key: Option<String>,
    /// `cli.timeout`.
    pub timeout: Duration,
    /// `cli.insecure`: skip certificate checks on the remote address.
    pub insecure: bool,
}
