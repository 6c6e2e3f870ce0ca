//! `POST /machine/register`: `RegisterRequest` in, `RegisterResponse` out (protocol §4).
//!
//! The request is read leniently (every field may be absent or `null`, unknown fields
//! are ignored) because v1.80 and v1.102 clients fill it differently. The response is
//! written in Go's shape: every field present, as Go has no omit tags on it.

use super::hostinfo::Hostinfo;
use super::keys;
use super::wire::{self, null_as_default};
use crate::types::NodeKey;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /machine/register` request body.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterRequest {
    /// The client's capability version (113 = v1.80, 142 = v1.102).
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: u32,
    /// The node key being registered.
    #[serde(default = "NodeKey::zero", with = "keys::node")]
    pub node_key: NodeKey,
    /// The previous node key on a rotation; `None` when the client sent zeros.
    #[serde(default, with = "keys::opt_node")]
    pub old_node_key: Option<NodeKey>,
    /// `NLKey`: the tailnet-lock key (`nlpub:…`), kept as text; headway runs no tailnet lock.
    #[serde(
        rename = "NLKey",
        alias = "NlKey",
        default,
        deserialize_with = "null_as_default"
    )]
    pub nl_key: String,
    /// Present only for `--authkey` logins.
    #[serde(default)]
    pub auth: Option<RegisterResponseAuth>,
    /// `None` = no request (Go's zero time); past = log out; future = shorten the key's life.
    #[serde(default, with = "wire::opt_time")]
    pub expiry: Option<DateTime<Utc>>,
    /// The `AuthURL` the client is waiting on (second step of an interactive login).
    #[serde(default, deserialize_with = "null_as_default")]
    pub followup: String,
    #[serde(default, alias = "HostInfo")]
    pub hostinfo: Option<Hostinfo>,
    /// `--state=mem:` and similar; Headscale ignores it (only ephemeral auth keys count).
    #[serde(default, deserialize_with = "null_as_default")]
    pub ephemeral: bool,
    /// Normally absent; set only when the request is signed with a device certificate.
    #[serde(default, with = "wire::opt_time")]
    pub timestamp: Option<DateTime<Utc>>,
    /// The tailnet the client wants to join (`required:` prefix = must); informational.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tailnet: String,
}

/// `RegisterRequest.Auth` (Go reuses the name `RegisterResponseAuth` for it).
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterResponseAuth {
    /// The pre-auth key given with `--authkey`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub auth_key: String,
}

impl RegisterRequest {
    /// The auth key, when the client sent a non-empty one.
    pub fn auth_key(&self) -> Option<&str> {
        self.auth
            .as_ref()
            .map(|a| a.auth_key.trim())
            .filter(|k| !k.is_empty())
    }

    /// `Followup`, when this request waits on an interactive login.
    pub fn followup(&self) -> Option<&str> {
        Some(self.followup.as_str()).filter(|f| !f.is_empty())
    }

    /// Whether this is a logout: an `Expiry` in the past (protocol §4.3).
    pub fn is_logout(&self, now: DateTime<Utc>) -> bool {
        self.expiry.is_some_and(|expiry| expiry <= now)
    }
}

/// `POST /machine/register` response body. Always sent with HTTP 200: failures go in
/// `Error`, the only server text a user ever sees.
#[derive(Clone, Debug, PartialEq, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterResponse {
    pub user: User,
    pub login: Login,
    /// The client must generate a new node key and register again. Never in answer to
    /// a `Followup` request (protocol §11.24).
    pub node_key_expired: bool,
    /// Only logged by clients; the self node's `MachineAuthorized` in the map is what counts.
    pub machine_authorized: bool,
    /// Non-empty: interactive login pending at this URL.
    #[serde(rename = "AuthURL")]
    pub auth_url: String,
    /// Non-empty: the login failed with this message (`backend error: …` on the client).
    pub error: String,
}

impl RegisterResponse {
    /// A failed registration; the client shows `message` to the user.
    pub fn error(message: impl Into<String>) -> RegisterResponse {
        RegisterResponse {
            error: message.into(),
            ..RegisterResponse::default()
        }
    }

    /// An interactive login pending at `url`.
    pub fn auth_url(url: impl Into<String>) -> RegisterResponse {
        RegisterResponse {
            auth_url: url.into(),
            ..RegisterResponse::default()
        }
    }
}

/// `tailcfg.User`, in `RegisterResponse.User`.
#[derive(Clone, Debug, PartialEq, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct User {
    #[serde(rename = "ID")]
    pub id: u64,
    pub display_name: String,
    #[serde(rename = "ProfilePicURL", skip_serializing_if = "String::is_empty")]
    pub profile_pic_url: String,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "wire::opt_time::serialize"
    )]
    pub created: Option<DateTime<Utc>>,
}

/// `tailcfg.Login`, in `RegisterResponse.Login`; the client keeps `LoginName`,
/// `DisplayName` and `ProfilePicURL` as its user profile.
#[derive(Clone, Debug, PartialEq, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Login {
    #[serde(rename = "ID")]
    pub id: u64,
    /// "oidc", or empty for local users.
    pub provider: String,
    pub login_name: String,
    pub display_name: String,
    #[serde(rename = "ProfilePicURL", skip_serializing_if = "String::is_empty")]
    pub profile_pic_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailcfg::tests::fixture;
    use serde_json::json;

    #[test]
    fn v1_102_request_decodes() {
        let req: RegisterRequest =
            serde_json::from_str(&fixture("register_request_v1.102.json")).unwrap();
        assert_eq!(req.version, 142);
        assert_eq!(
            req.node_key.to_string(),
            format!("nodekey:{}", "1a".repeat(32))
        );
        assert_eq!(req.old_node_key, None, "zero OldNodeKey reads as none");
        assert_eq!(req.auth_key(), Some("hskey-auth-abcdefghijkl-secret"));
        assert_eq!(req.expiry, None, "Go zero time reads as none");
        assert!(!req.ephemeral, "omitted false");
        assert_eq!(req.timestamp, None);
        assert_eq!(req.followup(), None);
        let hi = req.hostinfo.unwrap();
        assert_eq!(hi.hostname(), "node-a");
        assert_eq!(hi.net_info(), None, "first register before netcheck");
    }

    #[test]
    fn v1_80_logout_request_decodes() {
        let req: RegisterRequest =
            serde_json::from_str(&fixture("register_request_v1.80.json")).unwrap();
        assert_eq!(req.version, 113);
        assert!(req.old_node_key.is_some());
        assert_eq!(req.auth_key(), None);
        assert_eq!(req.expiry.unwrap().timestamp(), 123);
        assert!(req.is_logout(Utc::now()));
        assert_eq!(req.hostinfo, None, "null Hostinfo");
    }

    #[test]
    fn empty_and_sparse_requests_decode_with_defaults() {
        let req: RegisterRequest = serde_json::from_str("{}").unwrap();
        assert!(req.node_key.is_zero());
        assert_eq!(req.auth, None);
        let req: RegisterRequest = serde_json::from_value(json!({
            "Auth": {"AuthKey": "", "Oauth2Token": null}, "Ephemeral": null, "Followup": null,
            "NodeKeySignature": "AAAA", "Unknown": [1, 2, 3]
        }))
        .unwrap();
        assert_eq!(req.auth_key(), None);
    }

    #[test]
    fn response_has_go_field_names() {
        let resp = RegisterResponse {
            user: User {
                id: 1,
                display_name: "alice".into(),
                ..User::default()
            },
            login: Login {
                id: 1,
                login_name: "alice".into(),
                display_name: "alice".into(),
                ..Login::default()
            },
            machine_authorized: true,
            ..RegisterResponse::default()
        };
        assert_eq!(
            serde_json::to_value(&resp).unwrap(),
            json!({
                "User": {"ID": 1, "DisplayName": "alice"},
                "Login": {"ID": 1, "Provider": "", "LoginName": "alice", "DisplayName": "alice"},
                "NodeKeyExpired": false, "MachineAuthorized": true, "AuthURL": "", "Error": ""
            })
        );
        let err = serde_json::to_value(RegisterResponse::error("invalid pre auth key")).unwrap();
        assert_eq!(err["Error"], "invalid pre auth key");
        let pending =
            serde_json::to_value(RegisterResponse::auth_url("https://hs/register/x")).unwrap();
        assert_eq!(pending["AuthURL"], "https://hs/register/x");
    }
}
