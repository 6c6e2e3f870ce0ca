//! The table of every configuration key headway recognises (its own, Headscale
//! 0.29's, and the legacy spellings older guides use), and "did you mean" lookups.
//!
//! Knows key names and shapes only; what a key does is decided in `apply.rs` and `legacy.rs`.

/// How a key's value is written, which decides how an environment variable is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A single scalar: string, number, bool or duration.
    Scalar,
    /// A list of scalars; from the environment, comma- or space-separated.
    List,
    /// A mapping or a list of mappings; from the environment, YAML or JSON text.
    Structured,
}

/// What headway does with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Read into a `Config` field.
    Applied,
    /// A Headscale key headway knows but does not act on: accepted, and named in a
    /// start-up warning when set to anything that would matter
    /// (`apply::inert_settings`, `oidc::build` for `oidc.enabled`).
    Accepted,
    /// An old spelling; `legacy.rs` maps it onto its modern key with a warning.
    Legacy,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Key {
    /// Dotted path, as written in YAML (`database.sqlite.path`).
    pub path: &'static str,
    pub shape: Shape,
    pub role: Role,
}

const fn key(path: &'static str, shape: Shape, role: Role) -> Key {
    Key { path, shape, role }
}

use Role::{Accepted, Applied, Legacy};
use Shape::{List, Scalar, Structured};

/// Every leaf key. Sections (`dns`, `derp.server`, …) are the prefixes of these paths.
pub(crate) const KEYS: &[Key] = &[
    // Listeners and identity.
    key("server_url", Scalar, Applied),
    key("listen_addr", Scalar, Applied),
    key("metrics_listen_addr", Scalar, Applied),
    key("grpc_listen_addr", Scalar, Applied),
    key("grpc_allow_insecure", Scalar, Applied),
    key("trusted_proxies", List, Applied),
    key("noise.private_key_path", Scalar, Applied),
    // Address pools.
    key("prefixes.v4", Scalar, Applied),
    key("prefixes.v6", Scalar, Applied),
    key("prefixes.allocation", Scalar, Applied),
    // DERP.
    key("derp.server.enabled", Scalar, Applied),
    key("derp.server.region_id", Scalar, Applied),
    key("derp.server.region_code", Scalar, Applied),
    key("derp.server.region_name", Scalar, Applied),
    key("derp.server.verify_clients", Scalar, Applied),
    key("derp.server.stun_listen_addr", Scalar, Applied),
    key("derp.server.private_key_path", Scalar, Applied),
    key(
        "derp.server.automatically_add_embedded_derp_region",
        Scalar,
        Applied,
    ),
    key("derp.server.ipv4", Scalar, Applied),
    key("derp.server.ipv6", Scalar, Applied),
    key("derp.server.stun.enabled", Scalar, Accepted),
    key("derp.urls", List, Applied),
    key("derp.paths", List, Applied),
    key("derp.auto_update_enabled", Scalar, Applied),
    key("derp.update_frequency", Scalar, Applied),
    key("disable_check_updates", Scalar, Applied),
    // Node lifecycle.
    key("node.expiry", Scalar, Applied),
    key("node.ephemeral.inactivity_timeout", Scalar, Applied),
    key("node.routes.ha.probe_interval", Scalar, Applied),
    key("node.routes.ha.probe_timeout", Scalar, Applied),
    // Database.
    key("database.type", Scalar, Applied),
    key("database.debug", Scalar, Accepted),
    key("database.gorm.prepare_stmt", Scalar, Accepted),
    key("database.gorm.parameterized_queries", Scalar, Accepted),
    key("database.gorm.skip_err_record_not_found", Scalar, Accepted),
    key("database.gorm.slow_threshold", Scalar, Accepted),
    key("database.sqlite.path", Scalar, Applied),
    key("database.sqlite.write_ahead_log", Scalar, Applied),
    key("database.sqlite.wal_autocheckpoint", Scalar, Applied),
    key("database.postgres.host", Scalar, Applied),
    key("database.postgres.port", Scalar, Applied),
    key("database.postgres.name", Scalar, Applied),
    key("database.postgres.user", Scalar, Applied),
    key("database.postgres.pass", Scalar, Applied),
    key("database.postgres.ssl", Scalar, Applied),
    key("database.postgres.max_open_conns", Scalar, Applied),
    key("database.postgres.max_idle_conns", Scalar, Applied),
    key("database.postgres.conn_max_idle_time_secs", Scalar, Applied),
    // TLS and ACME.
    key("acme_url", Scalar, Applied),
    key("acme_email", Scalar, Applied),
    key("tls_letsencrypt_hostname", Scalar, Applied),
    key("tls_letsencrypt_cache_dir", Scalar, Applied),
    key("tls_letsencrypt_challenge_type", Scalar, Applied),
    key("tls_letsencrypt_listen", Scalar, Applied),
    key("tls_cert_path", Scalar, Applied),
    key("tls_key_path", Scalar, Applied),
    // Logging and policy.
    key("log.level", Scalar, Applied),
    key("log.format", Scalar, Applied),
    key("policy.mode", Scalar, Applied),
    key("policy.path", Scalar, Applied),
    // DNS.
    key("dns.magic_dns", Scalar, Applied),
    key("dns.base_domain", Scalar, Applied),
    key("dns.override_local_dns", Scalar, Applied),
    key("dns.nameservers.global", List, Applied),
    key("dns.nameservers.split", Structured, Applied),
    key("dns.search_domains", List, Applied),
    key("dns.extra_records", Structured, Applied),
    key("dns.extra_records_path", Scalar, Applied),
    key("dns.authoritative.listen_addr", Scalar, Applied),
    key("dns.authoritative.nameserver", Scalar, Applied),
    // Abuse limits on client connections.
    key("limits.handshake_timeout", Scalar, Applied),
    key("limits.request_timeout", Scalar, Applied),
    key("limits.idle_timeout", Scalar, Applied),
    key("limits.max_connections", Scalar, Applied),
    key("limits.max_pending_per_source", Scalar, Applied),
    key("limits.register_burst", Scalar, Applied),
    key("limits.register_interval", Scalar, Applied),
    // Local admin socket and remote CLI.
    key("unix_socket", Scalar, Applied),
    key("unix_socket_permission", Scalar, Applied),
    key("cli.address", Scalar, Applied),
    key("cli.api_key", Scalar, Applied),
    key("cli.timeout", Scalar, Applied),
    key("cli.insecure", Scalar, Applied),
    // Client capabilities.
    key("logtail.enabled", Scalar, Applied),
    key("taildrop.enabled", Scalar, Applied),
    key("auto_update.enabled", Scalar, Applied),
    key("randomize_client_port", Scalar, Applied),
    // OIDC (`oidc.rs`): `oidc.enabled` only gets a warning, as Headscale reads it for nothing.
    key("oidc.enabled", Scalar, Accepted),
    key("oidc.only_start_if_oidc_is_available", Scalar, Applied),
    key("oidc.issuer", Scalar, Applied),
    key("oidc.client_id", Scalar, Applied),
    key("oidc.client_secret", Scalar, Applied),
    key("oidc.client_secret_path", Scalar, Applied),
    key("oidc.use_expiry_from_token", Scalar, Applied),
    key("oidc.scope", List, Applied),
    key("oidc.email_verified_required", Scalar, Applied),
    key("oidc.extra_params", Structured, Applied),
    key("oidc.allowed_domains", List, Applied),
    key("oidc.allowed_users", List, Applied),
    key("oidc.allowed_groups", List, Applied),
    key("oidc.pkce.enabled", Scalar, Applied),
    key("oidc.pkce.method", Scalar, Applied),
    // The built-in web UI (`/admin`).
    key("web_ui.enabled", Scalar, Applied),
    key("web_ui.oidc_admin_users", List, Applied),
    key("web_ui.oidc_admin_groups", List, Applied),
    // Headscale's performance knobs; headway's internals differ, so they have no effect.
    key("tuning.register_cache_max_entries", Scalar, Accepted),
    key("tuning.register_cache_expiration", Scalar, Accepted),
    key("tuning.node_store_batch_size", Scalar, Accepted),
    key("tuning.node_store_batch_timeout", Scalar, Accepted),
    key("tuning.notifier_send_timeout", Scalar, Accepted),
    key("tuning.batch_change_delay", Scalar, Accepted),
    key(
        "tuning.node_mapsession_buffered_chan_size",
        Scalar,
        Accepted,
    ),
    key("tuning.batcher_workers", Scalar, Accepted),
    // Headscale 0.30 development key; accepted so configs written for it load too.
    key("preauth_keys.revoked_retention", Scalar, Accepted),
    // Legacy spellings (see legacy.rs for what each becomes).
    key("ip_prefixes", List, Legacy),
    key("ip_prefix", List, Legacy),
    key("db_type", Scalar, Legacy),
    key("db_path", Scalar, Legacy),
    key("db_host", Scalar, Legacy),
    key("db_port", Scalar, Legacy),
    key("db_name", Scalar, Legacy),
    key("db_user", Scalar, Legacy),
    key("db_pass", Scalar, Legacy),
    key("db_ssl", Scalar, Legacy),
    key("dns_config.nameservers", List, Legacy),
    key("dns_config.restricted_nameservers", Structured, Legacy),
    key("dns_config.domains", List, Legacy),
    key("dns_config.magic_dns", Scalar, Legacy),
    key("dns_config.base_domain", Scalar, Legacy),
    key("dns_config.override_local_dns", Scalar, Legacy),
    key("dns_config.extra_records", Structured, Legacy),
    key("dns_config.use_username_in_magic_dns", Scalar, Legacy),
    key("dns.use_username_in_magic_dns", Scalar, Legacy),
    key("acl_policy_path", Scalar, Legacy),
    key("log_level", Scalar, Legacy),
    key("ephemeral_node_inactivity_timeout", Scalar, Legacy),
    key("private_key_path", Scalar, Legacy),
    key("node_update_check_interval", Scalar, Legacy),
    key("tls_client_auth_mode", Scalar, Legacy),
    key("oidc.expiry", Scalar, Legacy),
    key("oidc.strip_email_domain", Scalar, Legacy),
    key("oidc.map_legacy_users", Scalar, Legacy),
];

/// The table entry for a leaf key.
pub(crate) fn lookup(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

/// Whether `path` is a section, i.e. some known key lives below it.
pub(crate) fn is_section(path: &str) -> bool {
    KEYS.iter().any(|k| {
        k.path.len() > path.len()
            && k.path.starts_with(path)
            && k.path.as_bytes()[path.len()] == b'.'
    })
}

/// The environment variable suffix for a key: dots become underscores, upper case.
pub(crate) fn env_suffix(path: &str) -> String {
    path.replace('.', "_").to_ascii_uppercase()
}

/// A known key or section close to an unknown `path`, for "did you mean".
pub(crate) fn suggest(path: &str) -> Option<String> {
    let mut candidates: Vec<String> = KEYS.iter().map(|k| k.path.to_owned()).collect();
    for k in KEYS {
        let mut rest = k.path;
        while let Some(dot) = rest.rfind('.') {
            rest = &rest[..dot];
            candidates.push(rest.to_owned());
        }
    }
    candidates.sort();
    candidates.dedup();

    // A small typo anywhere in the path: allow more edits for longer names.
    let budget = match path.len() {
        0..=3 => 1,
        4..=8 => 2,
        _ => 3,
    };
    let best = candidates
        .iter()
        .map(|c| (distance(path, c), c))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, c)| (*d, c.len()));
    if let Some((_, c)) = best {
        return Some(c.clone());
    }

    // The right name in the wrong section (`magic_dns` at the top level): match the last segment.
    let last = path.rsplit('.').next().unwrap_or(path);
    KEYS.iter()
        .filter(|k| k.role != Role::Legacy)
        .find(|k| k.path.rsplit('.').next() == Some(last) && k.path != path)
        .map(|k| k.path.to_owned())
}

/// Edit distance counting an adjacent swap as one edit (optimal string alignment).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn environment_names_of_current_keys_are_unique() {
        let mut seen = BTreeSet::new();
        for k in KEYS.iter().filter(|k| k.role != Role::Legacy) {
            assert!(
                seen.insert(env_suffix(k.path)),
                "two keys map to {}",
                k.path
            );
        }
        assert!(!seen.contains("CONFIG"), "CONFIG names the file, not a key");
    }

    #[test]
    fn suggestions_catch_typos_and_misplaced_keys() {
        assert_eq!(suggest("dns.magic_dnss").as_deref(), Some("dns.magic_dns"));
        assert_eq!(suggest("dsn").as_deref(), Some("dns"));
        assert_eq!(suggest("magic_dns").as_deref(), Some("dns.magic_dns"));
        assert_eq!(suggest("listen_adr").as_deref(), Some("listen_addr"));
        assert_eq!(suggest("completely_unrelated_thing"), None);
    }

    #[test]
    fn sections_are_prefixes_of_keys() {
        assert!(is_section("dns"));
        assert!(is_section("derp.server"));
        assert!(is_section("derp.server.stun"));
        assert!(!is_section("dns.magic_dns"));
        assert!(!is_section("dn"));
    }
}
