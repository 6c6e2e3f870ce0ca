//! Turns resolved settings (modern keys only) into a typed `Config` on top of the
//! embedded defaults, then checks the rules that span several keys.
//!
//! Knows what each applied key means; where values came from is `Setting`'s business.

use super::legacy::Layer;
use super::load::{ConfigError, Warning};
use super::values::{Setting, describe, go_listen_addr, in_tailscale_range, scalar_text};
use super::*;
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use yaml_serde::Value;

/// Headscale's ORM settings and their Headscale defaults: a config that keeps
/// them as they are expects nothing of them.
const GORM_DEFAULTS: [(&str, &str); 4] = [
    ("database.gorm.prepare_stmt", "true"),
    ("database.gorm.parameterized_queries", "true"),
    ("database.gorm.skip_err_record_not_found", "true"),
    ("database.gorm.slow_threshold", "1000"),
];

/// Headscale settings that mean nothing to headway (its internal tuning, its
/// ORM) or that it does not support yet: said at start-up, once per group and
/// with the first key's line, instead of being accepted in silence.
fn inert_settings(s: &Layer, warnings: &mut Vec<Warning>) {
    let text = |key: &str| s.get(key).and_then(|v| v.text().ok());
    let tuning: Vec<&Setting> = keys::KEYS
        .iter()
        .filter(|k| k.path.starts_with("tuning."))
        .filter_map(|k| s.get(k.path))
        .collect();
    if let Some(first) = tuning.first() {
        let names: Vec<&str> = tuning.iter().map(|v| v.written.as_str()).collect();
        warnings.push(first.warning(format!(
            "has no effect, nor has the rest of tuning ({}): they size Headscale's internal caches and batches; headway's queues size themselves",
            names.join(", ")
        )));
    }
    let gorm: Vec<&Setting> = GORM_DEFAULTS
        .iter()
        .filter(|(key, default)| text(key).is_some_and(|t| t != *default))
        .filter_map(|(key, _)| s.get(key))
        .collect();
    if let Some(first) = gorm.first() {
        warnings.push(first.warning(
            "has no effect: database.gorm configures Headscale's ORM (gorm), which headway does not use",
        ));
    }
    if let Some(v) = s.get("database.debug")
        && text("database.debug").as_deref() == Some("true")
    {
        warnings.push(
            v.warning("is not supported: headway does not log its SQL statements; it is ignored"),
        );
    }
    if let Some(v) = s.get("derp.server.stun.enabled")
        && text("derp.server.stun.enabled").as_deref() == Some("false")
    {
        warnings.push(v.warning(
            "is ignored: STUN runs with the embedded relay (derp.server.stun_listen_addr) and cannot be turned off alone",
        ));
    }
    if let Some(v) = s.get("preauth_keys.revoked_retention") {
        warnings.push(v.warning(
            "is not supported yet: expired and used pre-auth keys are kept until deleted; it is ignored",
        ));
    }
}

/// Headscale's floor: the client keep-alive (60s) plus a margin, so a live node is never reaped.
const MIN_EPHEMERAL_INACTIVITY: Duration = Duration::from_secs(65);

pub(crate) fn build(s: &Layer, warnings: &mut Vec<Warning>) -> Result<Config, ConfigError> {
    let mut c = Config::default();
    inert_settings(s, warnings);

    if let Some(v) = s.get("server_url") {
        c.server_url = ServerUrl::parse(&v.text()?).map_err(|why| v.error(why))?;
    }
    if let Some(v) = s.get("listen_addr") {
        c.listen_addr = v
            .socket_addr()?
            .ok_or_else(|| v.error("must not be empty (expected host:port, e.g. 0.0.0.0:8080)"))?;
    }
    if let Some(v) = s.get("metrics_listen_addr") {
        c.metrics_listen_addr = v.socket_addr()?;
    }
    if let Some(v) = s.get("grpc_listen_addr") {
        c.grpc_listen_addr = v.socket_addr()?;
    }
    flag(s, "grpc_allow_insecure", &mut c.grpc_allow_insecure)?;
    if let (Some(addr), Some(v)) = (c.grpc_listen_addr, s.get("grpc_allow_insecure"))
        && c.grpc_allow_insecure
        && !addr.ip().is_loopback()
        && s.get("tls_cert_path").is_none()
        && s.get("tls_letsencrypt_hostname").is_none()
    {
        warnings.push(v.warning(format!(
            "plaintext gRPC on {addr}, which is not a loopback address: API keys and every admin call cross the network readable; give the server a certificate (tls_cert_path) or listen on 127.0.0.1"
        )));
    }
    if let Some(v) = s.get("trusted_proxies") {
        c.trusted_proxies = trusted_proxies(v)?;
    }
    if let Some(v) = s.get("noise.private_key_path") {
        c.noise_private_key_path = v.path()?;
    }

    prefixes(s, &mut c.prefixes, warnings)?;
    derp(s, &mut c.derp, warnings)?;
    flag(s, "disable_check_updates", &mut c.disable_check_updates)?;

    if let Some(v) = s.get("node.expiry") {
        // Zero, like an empty value, means user-owned nodes never expire by default.
        c.node.expiry = v.duration()?.filter(|d| !d.is_zero());
    }
    duration(
        s,
        "node.ephemeral.inactivity_timeout",
        &mut c.node.ephemeral_inactivity_timeout,
    )?;
    if let Some(v) = s.get("node.routes.ha.probe_interval") {
        // Zero, like an empty value, turns probing off.
        c.node.ha_probe.interval = v.duration()?.unwrap_or_default();
    }
    duration(
        s,
        "node.routes.ha.probe_timeout",
        &mut c.node.ha_probe.timeout,
    )?;

    c.database = database(s, warnings)?;
    tls(s, &mut c.tls)?;
    log(s, &mut c.log)?;

    if let Some(v) = s.get("policy.mode") {
        c.policy.mode = match v.choice(&["file", "database"])? {
            "database" => PolicyMode::Database,
            _ => PolicyMode::File,
        };
    }
    if let Some(v) = s.get("policy.path") {
        c.policy.path = v.optional_path()?;
    }

    dns(s, &mut c.dns, warnings)?;

    if let Some(v) = s.get("unix_socket") {
        c.unix_socket = v.path()?;
    }
    if let Some(v) = s.get("unix_socket_permission")
        && let Some(mode) = v.octal_mode()?
    {
        c.unix_socket_permission = mode;
        if mode & 0o002 != 0 {
            warnings.push(v.warning(format!(
                "{mode:o} lets every local user write to the admin socket, and so administer headway; 0770 with a group is the usual choice"
            )));
        }
    }

    if let Some(v) = s.get("cli.address") {
        c.cli.address = v.optional_text()?.map(|t| t.trim().to_owned());
    }
    if let Some(v) = s.get("cli.api_key") {
        c.cli.api_key = v.optional_text()?.map(|t| t.trim().to_owned());
    }
    duration(s, "cli.timeout", &mut c.cli.timeout)?;
    flag(s, "cli.insecure", &mut c.cli.insecure)?;

    limits(s, &mut c.limits)?;

    flag(s, "logtail.enabled", &mut c.logtail_enabled)?;
    flag(s, "taildrop.enabled", &mut c.taildrop_enabled)?;
    flag(s, "auto_update.enabled", &mut c.auto_update_enabled)?;
    flag(s, "randomize_client_port", &mut c.randomize_client_port)?;

    c.oidc = super::oidc::build(s, warnings)?;
    flag(s, "web_ui.enabled", &mut c.web_ui.enabled)?;
    for (key, field) in [
        ("web_ui.oidc_admin_users", &mut c.web_ui.oidc_admin_users),
        ("web_ui.oidc_admin_groups", &mut c.web_ui.oidc_admin_groups),
    ] {
        if let Some(v) = s.get(key) {
            *field = v.names()?;
        }
    }
    if c.oidc.is_none() && c.web_ui.oidc_sign_in() {
        warnings.push(Warning {
            message: "web_ui.oidc_admin_users/oidc_admin_groups are set but oidc.issuer is not: \
                      the web UI signs in only with `headway admin login-link`"
                .to_owned(),
        });
    }

    check(&c, s, warnings)?;
    if let Some(auth) = &mut c.dns.authoritative
        && auth.nameserver.is_empty()
    {
        auth.nameserver = c.server_url.host().to_owned();
    }
    Ok(c)
}

pub(super) fn flag(s: &Layer, key: &str, field: &mut bool) -> Result<(), ConfigError> {
    if let Some(v) = s.get(key)
        && let Some(b) = v.flag()?
    {
        *field = b;
    }
    Ok(())
}

fn duration(s: &Layer, key: &str, field: &mut Duration) -> Result<(), ConfigError> {
    if let Some(v) = s.get(key)
        && let Some(d) = v.duration()?
    {
        *field = d;
    }
    Ok(())
}

fn text(s: &Layer, key: &str, field: &mut String) -> Result<(), ConfigError> {
    if let Some(v) = s.get(key) {
        *field = v.text()?.trim().to_owned();
    }
    Ok(())
}

fn limits(s: &Layer, l: &mut Limits) -> Result<(), ConfigError> {
    for (key, field) in [
        ("limits.handshake_timeout", &mut l.handshake_timeout),
        ("limits.request_timeout", &mut l.request_timeout),
        ("limits.idle_timeout", &mut l.idle_timeout),
        ("limits.register_interval", &mut l.register_interval),
    ] {
        if let Some(v) = s.get(key)
            && let Some(d) = v.duration()?
        {
            // Zero would close every connection (or refill nothing) at once.
            if d.is_zero() {
                return Err(v.error("must be longer than zero (expected e.g. 10s)"));
            }
            *field = d;
        }
    }
    for (key, min, field) in [
        ("limits.max_connections", 0, &mut l.max_connections),
        (
            "limits.max_pending_per_source",
            1,
            &mut l.max_pending_per_source,
        ),
        ("limits.register_burst", 0, &mut l.register_burst),
    ] {
        if let Some(v) = s.get(key)
            && let Some(n) = v.number(min, 1_000_000)?
        {
            *field = u32::try_from(n).expect("range checked");
        }
    }
    Ok(())
}

fn trusted_proxies(v: &Setting) -> Result<Vec<IpNet>, ConfigError> {
    v.list()?
        .into_iter()
        .map(|entry| {
            let trimmed = entry.trim();
            // A bare address means just that host.
            let net = trimmed
                .parse::<IpNet>()
                .ok()
                .or_else(|| trimmed.parse::<IpAddr>().ok().map(IpNet::from))
                .ok_or_else(|| {
                    v.error(format!(
                        "{entry:?} is not an address range (expected e.g. 127.0.0.1/32 or 10.0.0.0/8)"
                    ))
                })?;
            if net.prefix_len() == 0 {
                return Err(v.error(format!(
                    "{entry:?} would trust every address, letting any client forge its source (expected your proxies' addresses, e.g. 10.0.0.1/32)"
                )));
            }
            Ok(net.trunc())
        })
        .collect()
}

fn prefixes(s: &Layer, p: &mut Prefixes, warnings: &mut Vec<Warning>) -> Result<(), ConfigError> {
    let (v4, v6) = (s.get("prefixes.v4"), s.get("prefixes.v6"));
    // Writing either family means the other is off unless written too (single stack), as in
    // Headscale; writing neither keeps both defaults rather than refusing to start.
    if v4.is_some() || v6.is_some() {
        p.v4 = v4.map(Setting::prefix_v4).transpose()?.flatten();
        p.v6 = v6.map(Setting::prefix_v6).transpose()?.flatten();
        if p.v4.is_none() && p.v6.is_none() {
            let at = v4.or(v6).expect("one of them is set");
            return Err(at.error(
                "no address pool left: set prefixes.v4 and/or prefixes.v6 (expected e.g. 100.64.0.0/10 and fd7a:115c:a1e0::/48)",
            ));
        }
    }
    for (setting, prefix) in [(v4, p.v4.map(IpNet::V4)), (v6, p.v6.map(IpNet::V6))] {
        if let (Some(setting), Some(prefix)) = (setting, prefix)
            && !in_tailscale_range(&prefix)
        {
            warnings.push(setting.warning(format!(
                "{prefix} is outside Tailscale's ranges (100.64.0.0/10 and fd7a:115c:a1e0::/48); headway accepts it, but Tailscale clients assume those ranges and may misbehave (MagicDNS, exit nodes, subnet routes)"
            )));
        }
    }
    if let Some(v) = s.get("prefixes.allocation") {
        p.allocation = match v.choice(&["sequential", "random"])? {
            "random" => Allocation::Random,
            _ => Allocation::Sequential,
        };
    }
    Ok(())
}

fn derp(s: &Layer, d: &mut Derp, warnings: &mut Vec<Warning>) -> Result<(), ConfigError> {
    let server = &mut d.server;
    flag(s, "derp.server.enabled", &mut server.enabled)?;
    if let Some(v) = s.get("derp.server.region_id")
        && let Some(id) = v.number(1, i64::from(i32::MAX))?
    {
        server.region_id = i32::try_from(id).expect("range checked");
    }
    text(s, "derp.server.region_code", &mut server.region_code)?;
    text(s, "derp.server.region_name", &mut server.region_name)?;
    flag(s, "derp.server.verify_clients", &mut server.verify_clients)?;
    if let Some(v) = s.get("derp.server.stun_listen_addr") {
        server.stun_listen_addr = v.socket_addr()?;
    }
    if let Some(v) = s.get("derp.server.private_key_path") {
        server.private_key_path = v.path()?;
    }
    flag(
        s,
        "derp.server.automatically_add_embedded_derp_region",
        &mut server.automatically_add_embedded_derp_region,
    )?;
    if let Some(v) = s.get("derp.server.ipv4") {
        server.ipv4 = v.ipv4()?;
    }
    if let Some(v) = s.get("derp.server.ipv6") {
        server.ipv6 = v.ipv6()?;
    }
    if let Some(v) = s.get("derp.urls") {
        d.urls = v.list()?;
        if let Some(bad) = d.urls.iter().find(|u| !is_http_url(u)) {
            return Err(v.error(format!(
                "{bad:?} is not an http(s) URL (expected e.g. https://controlplane.tailscale.com/derpmap/default)"
            )));
        }
    }
    if let Some(v) = s.get("derp.paths") {
        d.paths = v.list()?.into_iter().map(PathBuf::from).collect();
    }
    // Without any relay `tailscale up` never reaches Running, so the embedded relay
    // runs unless the admin names other relays.
    let other_relays = !d.urls.is_empty() || !d.paths.is_empty();
    match s.get("derp.server.enabled") {
        None => {
            d.server.enabled = !other_relays;
            d.server.enabled_by_default = !other_relays;
        }
        Some(v) if !d.server.enabled && !other_relays => {
            warnings.push(v.warning(
                "is false, but derp.urls and derp.paths name no other relay, and without one \
                 `tailscale up` never finishes: the embedded relay runs anyway (it needs no \
                 domain), with STUN on derp.server.stun_listen_addr (UDP port 3478 unless set); \
                 list relays under derp.urls or derp.paths to replace it",
            ));
            d.server.enabled = true;
            d.server.enabled_by_default = true;
        }
        Some(_) => d.server.enabled_by_default = false,
    }
    flag(s, "derp.auto_update_enabled", &mut d.auto_update_enabled)?;
    if let Some(v) = s.get("derp.update_frequency")
        && let Some(every) = v.duration()?
    {
        if every.is_zero() {
            return Err(v.error("must be longer than zero (expected e.g. 3h)"));
        }
        d.update_frequency = every;
    }
    Ok(())
}

fn database(s: &Layer, warnings: &mut Vec<Warning>) -> Result<Database, ConfigError> {
    let kind = match s.get("database.type") {
        None => "sqlite",
        Some(v) if v.text()?.trim().is_empty() => {
            return Err(v.error(
                "is empty; headway needs to know which database to use (expected one of: sqlite, sqlite3, postgres)",
            ));
        }
        Some(v) => v.choice(&["sqlite", "sqlite3", "postgres"])?,
    };

    let Database::Sqlite {
        mut path,
        mut write_ahead_log,
        wal_autocheckpoint,
    } = Config::default().database
    else {
        unreachable!("the embedded default is SQLite");
    };
    if let Some(v) = s.get("database.sqlite.path") {
        path = v.path()?;
    }
    flag(s, "database.sqlite.write_ahead_log", &mut write_ahead_log)?;
    let wal_autocheckpoint = match s.get("database.sqlite.wal_autocheckpoint") {
        Some(v) => v
            .number(0, i64::from(u32::MAX))?
            .map_or(wal_autocheckpoint, |n| {
                u32::try_from(n).expect("range checked")
            }),
        None => wal_autocheckpoint,
    };

    // Postgres keys are checked even when SQLite is chosen, so a typo shows up before a switch.
    let mut pg = Postgres::default();
    text(s, "database.postgres.host", &mut pg.host)?;
    if let Some(v) = s.get("database.postgres.port")
        && let Some(port) = v.number(1, i64::from(u16::MAX))?
    {
        pg.port = u16::try_from(port).expect("range checked");
    }
    text(s, "database.postgres.name", &mut pg.name)?;
    text(s, "database.postgres.user", &mut pg.user)?;
    // A password may legitimately start or end with spaces, so it is kept verbatim.
    if let Some(v) = s.get("database.postgres.pass") {
        pg.pass = v.text()?;
    }
    if let Some(v) = s.get("database.postgres.ssl") {
        let text = v.text()?;
        pg.ssl = PgSsl::parse(text.trim()).ok_or_else(|| {
            v.error(format!(
                "{text:?} is not allowed (expected true, false, or a libpq sslmode: disable, allow, prefer, require, verify-ca, verify-full)"
            ))
        })?;
    }
    for (key, field) in [
        ("database.postgres.max_open_conns", &mut pg.max_open_conns),
        ("database.postgres.max_idle_conns", &mut pg.max_idle_conns),
    ] {
        if let Some(v) = s.get(key)
            && let Some(n) = v.number(0, i64::from(u32::MAX))?
        {
            *field = u32::try_from(n).expect("range checked");
        }
    }
    if let Some(v) = s.get("database.postgres.conn_max_idle_time_secs")
        && let Some(n) = v.number(0, i64::MAX)?
    {
        pg.conn_max_idle_time_secs = u64::try_from(n).expect("range checked");
    }

    // Go's pool closes idle connections beyond max_idle_conns at once; sqlx keeps
    // them until they have been idle conn_max_idle_time_secs.
    if kind == "postgres"
        && let Some(v) = s.get("database.postgres.max_idle_conns")
        && (pg.max_idle_conns < pg.max_open_conns || pg.max_open_conns == 0)
    {
        warnings.push(v.warning(format!(
            "is not supported: headway keeps idle connections (up to max_open_conns) until they have been idle for conn_max_idle_time_secs ({} s)",
            pg.conn_max_idle_time_secs
        )));
    }

    Ok(match kind {
        "postgres" => Database::Postgres(pg),
        _ => Database::Sqlite {
            path,
            write_ahead_log,
            wal_autocheckpoint,
        },
    })
}

fn tls(s: &Layer, t: &mut Tls) -> Result<(), ConfigError> {
    if let Some(v) = s.get("tls_cert_path") {
        t.cert_path = v.optional_path()?;
    }
    if let Some(v) = s.get("tls_key_path") {
        t.key_path = v.optional_path()?;
    }
    if let Some(v) = s.get("tls_letsencrypt_hostname") {
        t.letsencrypt_hostname = v.optional_text()?.map(|h| h.trim().to_owned());
    }
    if let Some(v) = s.get("tls_letsencrypt_cache_dir") {
        t.letsencrypt_cache_dir = v.path()?;
    }
    if let Some(v) = s.get("tls_letsencrypt_challenge_type") {
        t.letsencrypt_challenge_type = match v.choice(&["HTTP-01", "TLS-ALPN-01"])? {
            "TLS-ALPN-01" => AcmeChallenge::TlsAlpn01,
            _ => AcmeChallenge::Http01,
        };
    }
    if let Some(v) = s.get("tls_letsencrypt_listen") {
        let text = v.text()?;
        t.letsencrypt_listen = go_listen_addr(&text).ok_or_else(|| {
            v.error(format!(
                "{text:?} is not a listen address (expected host:port or :port, e.g. :http, :80, 0.0.0.0:80)"
            ))
        })?;
    }
    text(s, "acme_url", &mut t.acme_url)?;
    text(s, "acme_email", &mut t.acme_email)?;
    Ok(())
}

fn log(s: &Layer, l: &mut Log) -> Result<(), ConfigError> {
    if let Some(v) = s.get("log.level") {
        let level = v.text()?.trim().to_ascii_lowercase();
        // Headscale (zerolog) also knows panic, fatal and warning; they fold into our five levels.
        l.level = match level.as_str() {
            "trace" | "debug" | "info" | "warn" | "error" => level,
            "warning" => "warn".into(),
            "panic" | "fatal" => "error".into(),
            "" => l.level.clone(),
            _ => {
                return Err(v.error(format!(
                    "{level:?} is not a log level (expected one of: trace, debug, info, warn, error)"
                )));
            }
        };
    }
    // An empty format keeps text, as Headscale does.
    if let Some(v) = s.get("log.format")
        && v.optional_text()?.is_some()
    {
        l.format = match v.choice(&["text", "json"])? {
            "json" => LogFormat::Json,
            _ => LogFormat::Text,
        };
    }
    Ok(())
}

fn dns(s: &Layer, d: &mut Dns, warnings: &mut Vec<Warning>) -> Result<(), ConfigError> {
    flag(s, "dns.magic_dns", &mut d.magic_dns)?;
    text(s, "dns.base_domain", &mut d.base_domain)?;
    flag(s, "dns.override_local_dns", &mut d.override_local_dns)?;
    if let Some(v) = s.get("dns.nameservers.global") {
        d.nameservers_global = nameservers(v, v.list()?)?;
    }
    if let Some(v) = s.get("dns.nameservers.split") {
        d.nameservers_split = split_dns(v)?;
    }
    if let Some(v) = s.get("dns.search_domains") {
        d.search_domains = v.list()?;
    }
    if let Some(v) = s.get("dns.extra_records") {
        d.extra_records = extra_records(v, warnings)?;
    }
    if let Some(v) = s.get("dns.extra_records_path") {
        d.extra_records_path = v.optional_path()?;
    }
    let listen = match s.get("dns.authoritative.listen_addr") {
        Some(v) => v.socket_addr()?,
        None => None,
    };
    let nameserver = match s.get("dns.authoritative.nameserver") {
        Some(v) => v.optional_text()?,
        None => None,
    };
    if let Some(listen_addr) = listen {
        d.authoritative = Some(Authoritative {
            listen_addr,
            nameserver: nameserver.unwrap_or_default(),
        });
    }
    Ok(())
}

/// Resolvers are IP addresses or DNS-over-HTTPS URLs, as Tailscale clients accept.
fn nameservers(v: &Setting, entries: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for entry in &entries {
        if entry.parse::<IpAddr>().is_err() && !entry.starts_with("https://") {
            return Err(v.error(format!(
                "{entry:?} is not a nameserver (expected an IP address such as 1.1.1.1 or a DNS-over-HTTPS URL such as https://dns.nextdns.io/abc123)"
            )));
        }
    }
    Ok(entries)
}

fn split_dns(v: &Setting) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let map = match &v.value {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Mapping(map) => map,
        other => {
            return Err(v.error(format!(
                "expected a mapping of domain to nameservers (e.g. corp.example: [10.0.0.53]), found {}",
                describe(other)
            )));
        }
    };
    let mut out = BTreeMap::new();
    for (domain, servers) in map {
        let domain = scalar_text(domain).unwrap_or_default();
        let entry = Setting {
            value: servers.clone(),
            written: format!("{}.{domain}", v.written),
            ..v.clone()
        };
        out.insert(domain, nameservers(&entry, entry.list()?)?);
    }
    Ok(out)
}

fn extra_records(
    v: &Setting,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<ExtraRecord>, ConfigError> {
    let items = match &v.value {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        other => {
            return Err(v.error(format!(
                "expected a list of records like {{name: grafana.example, type: A, value: 100.64.0.3}}, found {}",
                describe(other)
            )));
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| -> Result<String, ConfigError> {
            item.get(name)
                .and_then(scalar_text)
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    v.error(format!(
                        "entry {i} needs a `{name}` (expected e.g. {{name: grafana.example, type: A, value: 100.64.0.3}})"
                    ))
                })
        };
        let record = ExtraRecord {
            name: field("name")?,
            record_type: field("type")?.to_ascii_uppercase(),
            value: field("value")?,
        };
        if record.record_type != "A" && record.record_type != "AAAA" {
            warnings.push(v.warning(format!(
                "record {} has type {}; Tailscale clients only use A and AAAA records",
                record.name, record.record_type
            )));
        } else {
            super::records::check_record(&record)
                .map_err(|why| v.error(format!("entry {i}: {why}")))?;
        }
        out.push(record);
    }
    Ok(out)
}

/// Files headway writes or replaces must be distinct: a unix_socket that names the
/// database would be removed as a stale socket, a key file written over the
/// policy would lose it.
fn check_distinct_files(
    c: &Config,
    at: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    // Files that hold data first, then those headway writes: a clash is blamed on
    // the later key, the one that would do the damage.
    let mut files: Vec<(&str, &Path)> = Vec::new();
    if let Database::Sqlite { path, .. } = &c.database {
        files.push(("database.sqlite.path", path));
    }
    let optional = [
        ("policy.path", &c.policy.path),
        ("dns.extra_records_path", &c.dns.extra_records_path),
        ("tls_cert_path", &c.tls.cert_path),
        ("tls_key_path", &c.tls.key_path),
    ];
    files.extend(
        optional
            .into_iter()
            .filter_map(|(key, path)| Some((key, path.as_deref()?))),
    );
    files.push(("noise.private_key_path", &c.noise_private_key_path));
    if c.derp.server.enabled {
        files.push((
            "derp.server.private_key_path",
            &c.derp.server.private_key_path,
        ));
    }
    files.push(("unix_socket", &c.unix_socket));
    for (i, (key, path)) in files.iter().enumerate() {
        if let Some((other, _)) = files[..i].iter().find(|(_, p)| same_file(p, path)) {
            return Err(at(
                key,
                format!(
                    "{} is also {other}: each needs a file of its own",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Whether two configured paths name one file: the same text once `.` parts
/// are dropped, or (when both exist) the same inode.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let plain = |p: &Path| -> PathBuf {
        p.components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect()
    };
    if plain(a) == plain(b) {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn is_http_url(text: &str) -> bool {
    text.strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .is_some_and(|rest| !rest.is_empty())
}

/// Rules that involve more than one key; the message points at the key to change.
fn check(c: &Config, s: &Layer, warnings: &mut Vec<Warning>) -> Result<(), ConfigError> {
    // Points at the key's setting when it was written, else names the key alone.
    let at = |key: &str, what: String| match s.get(key) {
        Some(v) => v.error(what),
        None => ConfigError {
            message: format!("{key}: {what}"),
        },
    };

    if c.dns.magic_dns && c.dns.base_domain.is_empty() {
        return Err(at(
            "dns.base_domain",
            "must be set when dns.magic_dns is true (expected a domain such as tailnet.example.com)".into(),
        ));
    }
    if !c.dns.base_domain.is_empty()
        && let host = c.server_url.host()
    {
        // Clients resolve the whole base domain inside the tailnet, so a control server
        // living there would become unreachable.
        let base = c.dns.base_domain.trim_end_matches('.').to_ascii_lowercase();
        if host == base || host.ends_with(&format!(".{base}")) {
            let key = if s.contains_key("dns.base_domain") {
                "dns.base_domain"
            } else {
                "server_url"
            };
            return Err(at(
                key,
                format!(
                    "the server_url host {host:?} lies inside dns.base_domain {base:?}; clients would send it to MagicDNS and lose the server (expected a base domain of its own, e.g. tailnet.example.com for headway.example.com)"
                ),
            ));
        }
    }
    if c.dns.override_local_dns && c.dns.nameservers_global.is_empty() {
        return Err(at(
            "dns.override_local_dns",
            "is true but dns.nameservers.global is empty, which would leave clients without DNS (expected nameservers such as [1.1.1.1, 1.0.0.1], or override_local_dns: false)".into(),
        ));
    }
    if let Some(auth) = &c.dns.authoritative {
        if !c.dns.magic_dns || c.dns.base_domain.trim_matches('.').is_empty() {
            return Err(at(
                "dns.authoritative.listen_addr",
                "needs dns.magic_dns: true and a dns.base_domain (the zone it answers for, delegated to headway with an NS record)".into(),
            ));
        }
        if auth.nameserver.is_empty() && c.server_url.host_is_address() {
            return Err(at(
                "dns.authoritative.nameserver",
                "is needed when server_url has no host name: the zone's NS record must name a host (expected e.g. headway.example.com)".into(),
            ));
        }
    } else if let Some(v) = s.get("dns.authoritative.nameserver")
        && !v.text()?.is_empty()
    {
        warnings.push(v.warning(
            "is ignored: dns.authoritative.listen_addr is not set, so headway answers no DNS",
        ));
    }
    check_distinct_files(c, &at)?;
    if !c.dns.extra_records.is_empty() && c.dns.extra_records_path.is_some() {
        return Err(at(
            "dns.extra_records_path",
            "cannot be combined with dns.extra_records (expected one of the two)".into(),
        ));
    }

    if c.tls.letsencrypt_hostname.is_some()
        && (c.tls.cert_path.is_some() || c.tls.key_path.is_some())
    {
        return Err(at(
            "tls_letsencrypt_hostname",
            "cannot be combined with tls_cert_path/tls_key_path (expected either a Let's Encrypt hostname or your own certificate files)".into(),
        ));
    }
    if c.tls.cert_path.is_some() != c.tls.key_path.is_some() {
        let (set, missing) = if c.tls.cert_path.is_some() {
            ("tls_cert_path", "tls_key_path")
        } else {
            ("tls_key_path", "tls_cert_path")
        };
        return Err(at(
            set,
            format!("is set but {missing} is not (expected both, or neither)"),
        ));
    }
    if let Some(host) = &c.tls.letsencrypt_hostname {
        let expected = format!("https://{host}");
        let url = c.server_url.as_str();
        let matches = url == expected
            || url
                .strip_prefix(&expected)
                .is_some_and(|rest| rest.starts_with(':'));
        if !matches {
            // Only a warning: a proxy or another name may be in front on purpose.
            warnings.push(Warning {
                message: format!(
                    "tls_letsencrypt_hostname: the certificate is for {host}, but server_url is {}; clients verify it only at {expected}",
                    c.server_url
                ),
            });
        }
    }
    if c.tls.letsencrypt_hostname.is_some()
        && c.tls.letsencrypt_challenge_type == AcmeChallenge::TlsAlpn01
        && c.listen_addr.port() != 443
    {
        // Only a warning: a port forward in front of headway can make this work.
        warnings.push(Warning {
            message: format!(
                "tls_letsencrypt_challenge_type: TLS-ALPN-01 needs headway reachable on port 443, but listen_addr is {}",
                c.listen_addr
            ),
        });
    }

    let probe = c.node.ha_probe;
    if probe.enabled() && probe.interval < Duration::from_secs(2) {
        return Err(at(
            "node.routes.ha.probe_interval",
            format!(
                "{:?} is too short (expected at least 2s, e.g. 10s, or 0 to turn probing off)",
                probe.interval
            ),
        ));
    }
    if probe.enabled() && probe.timeout < Duration::from_secs(1) {
        return Err(at(
            "node.routes.ha.probe_timeout",
            format!(
                "{:?} is too short (expected at least 1s, e.g. 5s)",
                probe.timeout
            ),
        ));
    }
    if probe.enabled() && probe.timeout >= probe.interval {
        return Err(at(
            "node.routes.ha.probe_timeout",
            format!(
                "{:?} must be shorter than node.routes.ha.probe_interval ({:?})",
                probe.timeout, probe.interval
            ),
        ));
    }

    if c.node.ephemeral_inactivity_timeout < MIN_EPHEMERAL_INACTIVITY {
        return Err(at(
            "node.ephemeral.inactivity_timeout",
            format!(
                "{:?} is too short; connected clients send keep-alives every 60s (expected at least 65s, e.g. 30m)",
                c.node.ephemeral_inactivity_timeout
            ),
        ));
    }

    let derp = &c.derp.server;
    if derp.enabled && derp.stun_listen_addr.is_none() {
        return Err(at(
            "derp.server.stun_listen_addr",
            "must be set when derp.server.enabled is true (expected e.g. 0.0.0.0:3478)".into(),
        ));
    }
    if derp.enabled && !derp.automatically_add_embedded_derp_region && c.derp.paths.is_empty() {
        return Err(at(
            "derp.server.automatically_add_embedded_derp_region",
            "is false, so the embedded relay must be described in a derp.paths file, but derp.paths is empty (expected a path, or true here)".into(),
        ));
    }
    Ok(())
}
