//! `DNSConfig`: resolvers, split DNS, search domains and MagicDNS, sent in
//! `MapResponse.DNSConfig` of `POST /machine/map` (protocol §10.1).
//!
//! Written only. Split-DNS route values are always written as lists, `[]` for "answered
//! by MagicDNS only", never `null`.

use super::wire::is_zero;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The client's DNS configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DNSConfig {
    /// Global resolvers that override the OS's (`dns.override_local_dns`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<Resolver>,
    /// Split DNS: suffix → resolvers; an empty list means MagicDNS (100.100.100.100) answers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, Vec<Resolver>>,
    /// Used only when split DNS needs a default and no `resolvers` are set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallback_resolvers: Vec<Resolver>,
    /// Search domains, without trailing dots; the base domain first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// MagicDNS enabled.
    #[serde(skip_serializing_if = "is_zero")]
    pub proxied: bool,
    /// Names `tailscale cert` may request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cert_domains: Vec<String>,
    /// Extra records MagicDNS answers (`dns.extra_records`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_records: Vec<DNSRecord>,
}

/// `dnstype.Resolver`: one upstream DNS server.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resolver {
    /// `1.1.1.1`, `1.1.1.1:53`, `https://dns.example/dns-query`, …
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// Addresses of a DoH server's host name, so no other DNS is needed to reach it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bootstrap_resolution: Vec<IpAddr>,
    /// Also use this resolver while an exit node is in use.
    #[serde(skip_serializing_if = "is_zero")]
    pub use_with_exit_node: bool,
}

impl Resolver {
    pub fn new(addr: impl Into<String>) -> Resolver {
        Resolver {
            addr: addr.into(),
            ..Resolver::default()
        }
    }
}

/// `tailcfg.DNSRecord`: one extra record.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DNSRecord {
    /// Fully qualified name.
    pub name: String,
    /// `""` (= A or AAAA, from the value), `A` or `AAAA`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_route_lists_are_written_as_arrays() {
        let mut config = DNSConfig {
            resolvers: vec![Resolver::new("1.1.1.1")],
            domains: vec!["tailnet.example.com".into()],
            proxied: true,
            extra_records: vec![DNSRecord {
                name: "git.tailnet.example.com".into(),
                value: "100.64.0.5".into(),
                ..DNSRecord::default()
            }],
            ..DNSConfig::default()
        };
        config
            .routes
            .insert("tailnet.example.com".into(), Vec::new());
        assert_eq!(
            serde_json::to_value(&config).unwrap(),
            json!({"Resolvers": [{"Addr": "1.1.1.1"}], "Routes": {"tailnet.example.com": []},
                   "Domains": ["tailnet.example.com"], "Proxied": true,
                   "ExtraRecords": [{"Name": "git.tailnet.example.com", "Value": "100.64.0.5"}]})
        );
    }
}
