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

/// The browser cookie that carries a session's secret.
pub const SESSION_COOKIE: &str = "headway_session";

/// The `Set-Cookie` value that stores a session's secret for `max_age_secs`
/// (an empty secret and 0 clear it): only for `/admin`, never for scripts,
/// never sent from another site, `Secure` when the server is reached over https.
pub fn session_set_cookie(secret: &str, max_age_secs: u64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={secret}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    )
}
