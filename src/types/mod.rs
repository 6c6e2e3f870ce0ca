//! Domain vocabulary: ids, keys, users, nodes, pre-auth keys, API keys, OAuth
//! clients, routes.
//!
//! Knows no IO, no database, no wire format: nothing here derives `Serialize`.
//! Values are parsed once at the boundary (`NodeKey::from_str`, `UserName::parse`)
//! and passed along as proof that they are valid.

pub mod admin_session;
pub mod api_key;
pub mod duration;
pub mod id;
pub mod key;
pub mod name;
pub mod node;
pub mod oauth;
pub mod preauth_key;
pub mod route;
pub mod secret;
pub mod user;

pub use admin_session::{AdminSession, AdminSessionKind, SESSION_COOKIE, session_set_cookie};
pub use api_key::ApiKey;
pub use id::{ApiKeyId, NodeId, OAuthClientId, PreAuthKeyId, RouteId, UserId};
pub use key::{DiscoKey, KeyParseError, MachineKey, NodeKey, PrivateKey};
pub use name::{GivenName, NameError, UserName};
pub use node::{Node, RegisterMethod};
pub use oauth::{OAuthClient, OAuthToken, Scope};
pub use preauth_key::PreAuthKey;
pub use route::Route;
pub use user::{Identity, User, provider_identifier};

/// Timestamps are UTC everywhere inside headway.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
