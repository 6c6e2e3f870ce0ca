//! The web UI's credentials: one-time sign-in links and browser sessions.

use super::Timestamp;

/// What an `admin_sessions` row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminSessionKind {
    /// A one-time sign-in link (`headway admin login-link`), redeemed once.
    Link,
    /// A signed-in browser.
    Session,
}

impl AdminSessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminSessionKind::Link => "link",
            AdminSessionKind::Session => "session",
        }
    }

    pub fn parse(text: &str) -> Option<AdminSessionKind> {
        match text {
            "link" => Some(AdminSessionKind::Link),
            "session" => Some(AdminSessionKind::Session),
            _ => None,
        }
    }

    /// The `hskey-<kind>-…` word of its secret.
    pub fn secret_kind(self) -> &'static str {
        match self {
            AdminSessionKind::Link => "weblink",
            AdminSessionKind::Session => "websession",
        }
    }
}

/// A sign-in link or a browser session, as stored: the secret only as a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSession {
    pub prefix: String,
    pub kind: AdminSessionKind,
    pub hash: String,
    /// The token every form of this session must send back (empty for a link).
    pub csrf: String,
    /// Who signed in, as the logs and the UI name them (`login link`, an email).
    pub who: String,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
    /// The hard end: a session ends here even when in use.
    pub expires_at: Timestamp,
}
