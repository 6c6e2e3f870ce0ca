//! Old Headscale key names (0.13–0.28 guides) and what headway makes of each:
//! read as the modern key, split into the modern keys, or accepted and ignored.
//! Every legacy key present yields exactly one warning naming its modern form.
//!
//! Works on one layer (the file, or one environment prefix) at a time, so
//! "the modern key wins" compares keys written at the same level.

use super::keys::{self, Role};
use super::load::{ConfigError, Warning};
use super::values::{Setting, Source};
use ipnet::IpNet;
use std::collections::BTreeMap;
use yaml_serde::Value;

/// Settings of one source, keyed by their path in the key table.
pub(crate) type Layer = BTreeMap<&'static str, Setting>;

/// What becomes of a legacy key.
enum Fate {
    /// Read as this modern key.
    Renamed(&'static str),
    /// `ip_prefixes` / `ip_prefix`: entries split into `prefixes.v4` and `prefixes.v6`.
    Prefixes,
    /// Accepted and not used, for the stated reason.
    Unused(&'static str),
}

fn fate(path: &str) -> Fate {
    match path {
        "ip_prefixes" | "ip_prefix" => Fate::Prefixes,
        "db_type" => Fate::Renamed("database.type"),
        "db_path" => Fate::Renamed("database.sqlite.path"),
        "db_host" => Fate::Renamed("database.postgres.host"),
        "db_port" => Fate::Renamed("database.postgres.port"),
        "db_name" => Fate::Renamed("database.postgres.name"),
        "db_user" => Fate::Renamed("database.postgres.user"),
        "db_pass" => Fate::Renamed("database.postgres.pass"),
        "db_ssl" => Fate::Renamed("database.postgres.ssl"),
        "dns_config.nameservers" => Fate::Renamed("dns.nameservers.global"),
        "dns_config.restricted_nameservers" => Fate::Renamed("dns.nameservers.split"),
        "dns_config.domains" => Fate::Renamed("dns.search_domains"),
        "dns_config.magic_dns" => Fate::Renamed("dns.magic_dns"),
        "dns_config.base_domain" => Fate::Renamed("dns.base_domain"),
        "dns_config.override_local_dns" => Fate::Renamed("dns.override_local_dns"),
        "dns_config.extra_records" => Fate::Renamed("dns.extra_records"),
        "acl_policy_path" => Fate::Renamed("policy.path"),
        "log_level" => Fate::Renamed("log.level"),
        "ephemeral_node_inactivity_timeout" => Fate::Renamed("node.ephemeral.inactivity_timeout"),
        "oidc.expiry" => Fate::Renamed("node.expiry"),
        "private_key_path" => Fate::Unused(
            "it held the key of the old TS2019 protocol; clients now use Noise (TS2021), \
             whose key is `noise.private_key_path`",
        ),
        "node_update_check_interval" => Fate::Unused(
            "changes are pushed to clients as they happen, so there is no interval to set",
        ),
        "tls_client_auth_mode" => Fate::Unused(
            "client-certificate authentication was removed from Headscale and headway does not \
             offer it; remote admin access is protected by API keys instead",
        ),
        "oidc.strip_email_domain" | "oidc.map_legacy_users" => Fate::Unused(
            "Headscale removed it in 0.26: a user's name comes from the provider's preferred_username, and users are matched by issuer and subject only",
        ),
        "dns_config.use_username_in_magic_dns" | "dns.use_username_in_magic_dns" => {
            Fate::Unused("Headscale removed it in 0.24; MagicDNS names come from node names")
        }
        // The key table and this match list the same keys; a test checks it.
        other => unreachable!("legacy key {other} has no fate"),
    }
}

/// Replaces the legacy keys of `layer` by their modern keys, warning once for each.
pub(crate) fn resolve(mut layer: Layer, warnings: &mut Vec<Warning>) -> Result<Layer, ConfigError> {
    let mut legacy: Vec<&'static str> = layer
        .keys()
        .copied()
        .filter(|path| keys::lookup(path).is_some_and(|k| k.role == Role::Legacy))
        .collect();
    // Warn in the order the keys appear in the file, which is how the admin reads it.
    legacy.sort_by_key(|path| match &layer[path].source {
        Source::File { line, .. } => line.unwrap_or(usize::MAX),
        Source::Env { .. } => 0,
    });
    for old in legacy {
        let setting = layer.remove(old).expect("key listed above");
        let at = &setting.source;
        match fate(old) {
            Fate::Renamed(new) if layer.contains_key(new) => warnings.push(Warning {
                message: format!(
                    "{at}: `{old}` is a legacy key and `{new}` is also set; headway used `{new}` and ignored `{old}`"
                ),
            }),
            Fate::Renamed(new) => {
                warnings.push(Warning {
                    message: format!("{at}: `{old}` is a legacy key; headway read it as `{new}`"),
                });
                layer.insert(new, setting);
            }
            Fate::Prefixes => split_prefixes(old, setting, &mut layer, warnings)?,
            Fate::Unused(why) => warnings.push(Warning {
                message: format!("{at}: `{old}` is a legacy key and is ignored: {why}"),
            }),
        }
    }
    Ok(layer)
}

/// `ip_prefixes: [fd7a:115c:a1e0::/48, 100.64.0.0/10]` becomes `prefixes.v6` and `prefixes.v4`.
fn split_prefixes(
    old: &str,
    setting: Setting,
    layer: &mut Layer,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let at = setting.source.clone();
    if layer.contains_key("prefixes.v4") || layer.contains_key("prefixes.v6") {
        warnings.push(Warning {
            message: format!(
                "{at}: `{old}` is a legacy key and `prefixes` is also set; headway used `prefixes.v4`/`prefixes.v6` and ignored `{old}`"
            ),
        });
        return Ok(());
    }
    let mut v4: Vec<String> = Vec::new();
    let mut v6: Vec<String> = Vec::new();
    for entry in setting.list()? {
        match entry.trim().parse::<IpNet>() {
            Ok(IpNet::V4(_)) => v4.push(entry),
            Ok(IpNet::V6(_)) => v6.push(entry),
            Err(_) => {
                return Err(setting.error(format!(
                    "{entry:?} is not an IP prefix (expected e.g. 100.64.0.0/10 or fd7a:115c:a1e0::/48)"
                )));
            }
        }
    }
    // headway keeps one pool per family, as Headscale has since 0.23; extra ones are named.
    let mut message =
        format!("{at}: `{old}` is a legacy key; headway read it as `prefixes.v4`/`prefixes.v6`");
    let extra: Vec<&str> = v4
        .iter()
        .skip(1)
        .chain(v6.iter().skip(1))
        .map(String::as_str)
        .collect();
    if !extra.is_empty() {
        message.push_str(&format!(
            " (one prefix per family is used; ignored: {})",
            extra.join(", ")
        ));
    }
    warnings.push(Warning { message });
    // A family missing from the list is switched off, as a single-stack list meant.
    for (key, first) in [("prefixes.v4", v4.first()), ("prefixes.v6", v6.first())] {
        layer.insert(
            key,
            Setting {
                value: Value::String(first.cloned().unwrap_or_default()),
                raw: None,
                ..setting.clone()
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_legacy_key_has_a_fate_and_renames_point_at_applied_keys() {
        for k in keys::KEYS.iter().filter(|k| k.role == Role::Legacy) {
            if let Fate::Renamed(new) = fate(k.path) {
                let target = keys::lookup(new).expect("modern key is in the table");
                assert_eq!(target.role, Role::Applied, "{} -> {new}", k.path);
            }
        }
    }
}
