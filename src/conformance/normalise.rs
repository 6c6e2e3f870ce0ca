//! What "the same" means when comparing a recorded map with headway's: order
//! inside address lists and of rules carries no meaning, ranges are merged,
//! `[]` equals `null`, and node attributes that only Tailscale's hosted service
//! has (roles, tailnet lock, its own tuning flags) are left out on both sides.

use crate::policy::IpSet;
use crate::policy::ipset::IpSetBuilder;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Node attributes that depend on things outside a policy (user roles, tailnet
/// settings, a server's own features): Tailscale's hosted control plane sends
/// these (Headscale's conformance tests leave out the same set), and headway
/// sends `magicdns-aaaa` and `suggest-exit-node-ui` to every node, which the
/// recorded tailnets did not have turned on.
const HOSTED_ONLY_CAPS: &[&str] = &[
    "magicdns-aaaa",
    "suggest-exit-node-ui",
    "https://tailscale.com/cap/is-admin",
    "https://tailscale.com/cap/is-owner",
    "https://tailscale.com/cap/tailnet-lock",
    "service-host",
    "store-appc-routes",
    "https://tailscale.com/cap/warn-funnel-no-https",
    "tailnet-display-name",
    "tailnet.maxKeyDuration",
    "native-ipv4",
    "probe-udp-lifetime",
    "ssh-behavior-v1",
    "ssh-env-vars",
];

fn is_hosted_only(cap: &str) -> bool {
    HOSTED_ONLY_CAPS.contains(&cap) || cap.starts_with("https://tailscale.com/cap/funnel-ports?")
}

/// An address list in canonical form: merged ranges as text.
fn addr_set(items: &[Value]) -> Result<IpSet, String> {
    let mut b = IpSetBuilder::default();
    for item in items {
        let text = item
            .as_str()
            .ok_or_else(|| format!("not an address: {item}"))?;
        let set =
            IpSet::parse_filter_form(text).ok_or_else(|| format!("not an address: {text}"))?;
        b.add_set(&set);
    }
    Ok(b.build())
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// A packet filter as a set of facts: port rules grouped by (sources,
/// protocols) with each port range's destinations merged, and capability rules
/// as (sources, destinations, capabilities).
fn filter_facts(rules: &Value) -> Result<BTreeSet<String>, String> {
    type Key = (Vec<String>, Vec<i64>);
    let mut ports: BTreeMap<Key, BTreeMap<(u64, u64), IpSetBuilder>> = BTreeMap::new();
    let mut facts = BTreeSet::new();
    for rule in array(rules) {
        let src = addr_set(array(&rule["SrcIPs"]))?.strings();
        let caps = array(&rule["CapGrant"]);
        if !caps.is_empty() {
            for grant in caps {
                let dsts = addr_set(array(&grant["Dsts"]))?.strings();
                let cap_map = canonical_caps(&grant["CapMap"], false);
                facts.insert(format!("caps {src:?} -> {dsts:?}: {cap_map}"));
            }
            continue;
        }
        let mut proto: Vec<i64> = array(&rule["IPProto"])
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        if proto.is_empty() {
            proto = vec![1, 6, 17, 58];
        }
        proto.sort_unstable();
        proto.dedup();
        let by_ports = ports.entry((src, proto)).or_default();
        for dst in array(&rule["DstPorts"]) {
            let ip = dst["IP"].as_str().ok_or("DstPorts entry without IP")?;
            let set =
                IpSet::parse_filter_form(ip).ok_or_else(|| format!("bad DstPorts IP {ip}"))?;
            let first = dst["Ports"]["First"].as_u64().unwrap_or(0);
            let last = dst["Ports"]["Last"].as_u64().unwrap_or(0);
            by_ports.entry((first, last)).or_default().add_set(&set);
        }
    }
    for ((src, proto), by_ports) in ports {
        for ((first, last), dsts) in by_ports {
            facts.insert(format!(
                "ports {src:?} proto {proto:?} -> {:?}:{first}-{last}",
                dsts.build().strings()
            ));
        }
    }
    Ok(facts)
}

/// The difference between two packet filters, if they differ in meaning.
pub fn filter_difference(want: &Value, got: &Value) -> Option<String> {
    let (w, g) = match (filter_facts(want), filter_facts(got)) {
        (Ok(w), Ok(g)) => (w, g),
        (Err(e), _) => return Some(format!("recorded filter unreadable: {e}")),
        (_, Err(e)) => return Some(format!("headway's filter unreadable: {e}")),
    };
    if w == g {
        return None;
    }
    let missing: Vec<_> = w.difference(&g).collect();
    let extra: Vec<_> = g.difference(&w).collect();
    Some(format!("missing {missing:?}; extra {extra:?}"))
}

/// A capability map as sorted JSON, `[]` read as `null`, optionally without the
/// hosted-only attributes.
fn canonical_caps(caps: &Value, strip: bool) -> String {
    let mut out = BTreeMap::new();
    if let Some(map) = caps.as_object() {
        for (k, v) in map {
            if strip && is_hosted_only(k) {
                continue;
            }
            let v = match v {
                Value::Array(a) if a.is_empty() => Value::Null,
                other => other.clone(),
            };
            out.insert(k.clone(), v);
        }
    }
    serde_json::to_string(&out).expect("serialises")
}

/// Differences between a recorded node (self or peer) and headway's.
pub fn node_differences(want: &Value, got: &Value, is_self: bool) -> Vec<String> {
    let mut out = Vec::new();
    for field in ["Addresses", "AllowedIPs", "PrimaryRoutes"] {
        let w = addr_set(array(&want[field])).map(|s| s.strings());
        let g = addr_set(array(&got[field])).map(|s| s.strings());
        if w != g {
            out.push(format!("{field}: want {w:?}, got {g:?}"));
        }
    }
    let tags = |v: &Value| -> BTreeSet<String> {
        array(&v["Tags"])
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect()
    };
    if tags(want) != tags(got) {
        out.push(format!("Tags: want {:?}, got {:?}", tags(want), tags(got)));
    }
    let mut w = canonical_caps(&want["CapMap"], true);
    let mut g = canonical_caps(&got["CapMap"], true);
    // Older recordings have no auto-update attribute at all.
    if is_self
        && !want["CapMap"]
            .as_object()
            .is_some_and(|m| m.contains_key("default-auto-update"))
    {
        let drop = |s: &str| {
            let mut v: BTreeMap<String, Value> = serde_json::from_str(s).expect("canonical");
            v.remove("default-auto-update");
            serde_json::to_string(&v).expect("serialises")
        };
        w = drop(&w);
        g = drop(&g);
    }
    if w != g {
        out.push(format!("CapMap: want {w}, got {g}"));
    }
    out
}

/// One SSH rule in a comparable form: principals sorted (kept as a multiset),
/// users as a map, the action without false or empty fields, `acceptEnv`
/// absent or empty alike.
fn canonical_ssh_rule(rule: &Value) -> String {
    let mut principals: Vec<String> = array(&rule["principals"])
        .iter()
        .map(|p| serde_json::to_string(p).expect("serialises"))
        .collect();
    principals.sort();
    let users: BTreeMap<String, Value> = rule["sshUsers"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let action: BTreeMap<String, Value> = rule["action"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| {
                    !matches!(v, Value::Bool(false) | Value::Null)
                        && v.as_i64() != Some(0)
                        && v.as_str() != Some("")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let env = array(&rule["acceptEnv"]).to_vec();
    serde_json::to_string(&(principals, users, action, env)).expect("serialises")
}

/// The difference between two SSH policies (rule order matters: the first
/// matching rule wins on the client).
pub fn ssh_difference(want: &Value, got: &Value) -> Option<String> {
    let rules =
        |v: &Value| -> Vec<String> { array(&v["rules"]).iter().map(canonical_ssh_rule).collect() };
    let (w, g) = (rules(want), rules(got));
    if w == g {
        return None;
    }
    Some(format!("want {w:?}, got {g:?}"))
}
