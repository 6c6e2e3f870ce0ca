//! The small client → server requests beside register and map:
//! `POST /machine/set-dns` (`SetDNSRequest`, for `tailscale cert`) and
//! `POST /machine/audit-log` (`AuditLogRequest`).

use super::keys;
use super::wire::null_as_default;
use crate::types::NodeKey;
use serde::{Deserialize, Serialize};

/// `POST /machine/set-dns`: publish a DNS record for the node (only TXT
/// records under `_acme-challenge.<its name>` are asked for, by `tailscale cert`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SetDNSRequest {
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: u32,
    #[serde(default = "NodeKey::zero", with = "keys::node")]
    pub node_key: NodeKey,
    /// Fully qualified, e.g. `_acme-challenge.laptop.ts.example.com`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// `TXT`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub r#type: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub value: String,
}

/// The answer to a `SetDNSRequest`: an empty object.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SetDNSResponse {}

/// `POST /machine/audit-log`: an action the client wants on the tailnet's
/// audit trail (e.g. `DISCONNECT_NODE` with the reason a user gave).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuditLogRequest {
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: u32,
    #[serde(default = "NodeKey::zero", with = "keys::node")]
    pub node_key: NodeKey,
    #[serde(default, deserialize_with = "null_as_default")]
    pub action: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub details: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_dns_and_audit_log_read_what_clients_send() {
        let key = format!("nodekey:{}", "11".repeat(32));
        let req: SetDNSRequest = serde_json::from_str(&format!(
            r#"{{"Version":131,"NodeKey":"{key}","Name":"_acme-challenge.a.ts.example.com","Type":"TXT","Value":"abc"}}"#
        ))
        .unwrap();
        assert_eq!(req.node_key.to_string(), key);
        assert_eq!(
            (req.name.as_str(), req.r#type.as_str(), req.value.as_str()),
            ("_acme-challenge.a.ts.example.com", "TXT", "abc")
        );
        let log: AuditLogRequest = serde_json::from_str(&format!(
            r#"{{"Version":131,"NodeKey":"{key}","Action":"DISCONNECT_NODE","Details":"going home","Timestamp":"2026-12-06T10:00:00Z"}}"#
        ))
        .unwrap();
        assert_eq!(log.action, "DISCONNECT_NODE");
        assert_eq!(serde_json::to_string(&SetDNSResponse {}).unwrap(), "{}");
    }
}
