//! The packet filter (`FilterRule`, in `MapResponse.PacketFilters`) and the SSH policy
//! (`SSHPolicy`, in `MapResponse.SSHPolicy`) of `POST /machine/map` (protocol §10.2–10.3).
//!
//! Read and written, so recorded policy results can be compared with what headway
//! builds. The deprecated `SrcBits` and `DstPorts[].Bits` have no field here: a client
//! that sees them rejects the whole filter.

use super::wire::{self, is_zero, null_as_default};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One inbound rule of the *receiving* node's packet filter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FilterRule {
    /// Sources: `*`, an IP, a masked CIDR, an inclusive `a-b` range, or `cap:<name>`.
    /// Shared: the same list appears in the filters of many nodes.
    #[serde(rename = "SrcIPs", default, deserialize_with = "null_as_default")]
    pub src_ips: Arc<[String]>,
    /// Destinations and ports; exclusive with `cap_grant`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dst_ports: Vec<NetPortRange>,
    /// IP protocol numbers; empty = TCP, UDP, ICMPv4 and ICMPv6.
    #[serde(
        rename = "IPProto",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_proto: Vec<i32>,
    /// Application capabilities granted to the sources; exclusive with `dst_ports`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cap_grant: Vec<CapGrant>,
}

impl FilterRule {
    /// `tailcfg.FilterAllowAll`'s one rule: everything from everywhere.
    pub fn allow_all() -> FilterRule {
        FilterRule {
            src_ips: Arc::from(["*".to_owned()]),
            dst_ports: vec![NetPortRange {
                ip: "*".into(),
                ports: PortRange::ANY,
            }],
            ..FilterRule::default()
        }
    }
}

/// A destination: an address form like `SrcIPs` (without `cap:`) and a port range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetPortRange {
    #[serde(rename = "IP")]
    pub ip: String,
    pub ports: PortRange,
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange {
        first: 0,
        last: 65535,
    };

    pub const fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }
}

/// Peer capabilities granted for traffic to `dsts`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapGrant {
    #[serde(default, deserialize_with = "null_as_default")]
    pub dsts: Vec<IpNet>,
    /// Capability name → JSON arguments.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub cap_map: BTreeMap<String, Vec<Value>>,
}

/// The SSH policy of the receiving node: the first matching rule wins.
/// Go tags these fields in lower camel case.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SSHPolicy {
    /// Always written, `[]` when empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub rules: Vec<SSHRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SSHRule {
    #[serde(
        default,
        with = "wire::opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub rule_expires: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub principals: Vec<SSHPrincipal>,
    /// Requested user → local user: `"="` keeps the name, `""` denies.
    #[serde(rename = "sshUsers", default, deserialize_with = "null_as_default")]
    pub ssh_users: BTreeMap<String, String>,
    #[serde(default)]
    pub action: SSHAction,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub accept_env: Vec<String>,
}

/// Who a rule matches; any one non-empty field matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SSHPrincipal {
    /// A node's `StableID`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub node: String,
    #[serde(
        rename = "nodeIP",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub node_ip: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub user_login: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub any: bool,
}

/// What to do with a matching SSH connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SSHAction {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub message: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub reject: bool,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub accept: bool,
    /// Written as integer nanoseconds, like Go's `time.Duration`.
    #[serde(
        default,
        with = "wire::duration_nanos",
        skip_serializing_if = "Duration::is_zero"
    )]
    pub session_duration: Duration,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub allow_agent_forwarding: bool,
    /// Makes the node ask this URL (over Noise) for the verdict: Headscale's "check" mode.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub hold_and_delegate: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub allow_local_port_forwarding: bool,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub allow_remote_port_forwarding: bool,
    #[serde(
        default,
        deserialize_with = "wire::addr_ports",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub recorders: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_recording_failure: Option<SSHRecorderFailureAction>,
}

/// What to do when session recording fails (Go tags these in PascalCase).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SSHRecorderFailureAction {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub reject_session_with_message: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub terminate_session_with_message: String,
    #[serde(
        rename = "NotifyURL",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub notify_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allow_all_matches_tailscale() {
        assert_eq!(
            serde_json::to_value(vec![FilterRule::allow_all()]).unwrap(),
            json!([{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}])
        );
    }

    #[test]
    fn cap_grant_rule_writes_no_dst_ports() {
        let rule = FilterRule {
            src_ips: Arc::from(["100.64.0.1".to_owned()]),
            cap_grant: vec![CapGrant {
                dsts: vec!["100.64.0.2/32".parse().unwrap()],
                cap_map: BTreeMap::from([("tailscale.com/cap/webui".to_owned(), vec![json!({})])]),
            }],
            ..FilterRule::default()
        };
        assert_eq!(
            serde_json::to_value(&rule).unwrap(),
            json!({"SrcIPs": ["100.64.0.1"],
                   "CapGrant": [{"Dsts": ["100.64.0.2/32"], "CapMap": {"tailscale.com/cap/webui": [{}]}}]})
        );
    }

    #[test]
    fn ssh_policy_uses_lower_camel_case_and_reads_recorded_results() {
        let recorded = json!({"rules": [{"action": {"accept": true, "allowAgentForwarding": true,
            "allowLocalPortForwarding": true, "allowRemotePortForwarding": true},
            "principals": [{"nodeIP": "100.65.91.20"}], "sshUsers": {"root": "root"}}]});
        let policy: SSHPolicy = serde_json::from_value(recorded.clone()).unwrap();
        assert_eq!(policy.rules[0].principals[0].node_ip, "100.65.91.20");
        assert_eq!(serde_json::to_value(&policy).unwrap(), recorded);

        let check = SSHAction {
            hold_and_delegate: "https://hs/machine/ssh/action/1/to/2".into(),
            session_duration: Duration::from_secs(2),
            ..SSHAction::default()
        };
        assert_eq!(
            serde_json::to_value(&check).unwrap(),
            json!({"sessionDuration": 2_000_000_000u64, "holdAndDelegate": "https://hs/machine/ssh/action/1/to/2"})
        );
        assert_eq!(
            serde_json::to_value(SSHPolicy::default()).unwrap(),
            json!({"rules": []})
        );
    }
}
