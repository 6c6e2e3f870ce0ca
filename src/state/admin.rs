//! The web UI's sign-in: one-time links (`headway admin login-link`), the
//! browser sessions they open, idle and hard expiry, and sign-out.

use super::{Error, Result, State};
use crate::types::secret::{PrefixedSecret, digests_match, random_alphanumeric};
use crate::types::{AdminSession, AdminSessionKind, Timestamp};
use std::time::Duration;

/// How long a sign-in link lives when the admin does not say.
pub const LINK_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// The longest a sign-in link may live.
pub const LINK_LIFETIME_MAX: Duration = Duration::from_secs(60 * 60);
/// A session unused this long is over.
pub const SESSION_IDLE: Duration = Duration::from_secs(60 * 60);
/// A session ends this long after sign-in, in use or not.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// A session's last use is written at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// A link or session just made: its secret (shown once) and the stored row.
#[derive(Clone, Debug)]
pub struct Opened {
    pub secret: String,
    pub session: AdminSession,
}

impl State {
    /// Makes a one-time sign-in link valid for `lifetime` (at most an hour).
    pub async fn create_login_link(&self, lifetime: Option<Duration>) -> Result<Opened> {
        let lifetime = lifetime.unwrap_or(LINK_LIFETIME);
        if lifetime.is_zero() || lifetime > LINK_LIFETIME_MAX {
            return Err(Error::InvalidArgument(format!(
                "a sign-in link lives between 1s and {}m",
                LINK_LIFETIME_MAX.as_secs() / 60
            )));
        }
        self.open_admin(AdminSessionKind::Link, "login link", lifetime)
            .await
    }

    /// Redeems a sign-in link, once, for a browser session.
    pub async fn redeem_login_link(&self, text: &str) -> Result<Opened> {
        let link = self.admin_credential(AdminSessionKind::Link, text).await?;
        let refused = link_refused;
        // Deleting is the redemption: of two browsers, exactly one gets a session.
        match self
            .db
            .delete_admin_session(AdminSessionKind::Link, &link.prefix)
            .await
        {
            Ok(()) => {}
            Err(crate::db::Error::NotFound(_)) => return Err(refused()),
            Err(err) => return Err(err.into()),
        }
        if link.expires_at <= Self::now() {
            return Err(refused());
        }
        self.open_session(&link.who).await
    }

    /// Opens a browser session for `who` (a redeemed link, an OIDC sign-in).
    pub async fn open_session(&self, who: &str) -> Result<Opened> {
        self.open_admin(AdminSessionKind::Session, who, SESSION_LIFETIME)
            .await
    }

    async fn open_admin(
        &self,
        kind: AdminSessionKind,
        who: &str,
        lifetime: Duration,
    ) -> Result<Opened> {
        let secret = PrefixedSecret::generate(kind.secret_kind());
        let now = Self::now();
        let session = AdminSession {
            prefix: secret.prefix.clone(),
            kind,
            hash: secret.digest(),
            csrf: match kind {
                AdminSessionKind::Link => String::new(),
                AdminSessionKind::Session => random_alphanumeric(32),
            },
            who: who.to_owned(),
            created_at: now,
            last_used_at: now,
            expires_at: now + lifetime,
        };
        self.db.insert_admin_session(&session, now).await?;
        Ok(Opened {
            secret: secret.reveal(),
            session,
        })
    }

    /// The stored row of a link or session whose secret is `text`.
    async fn admin_credential(&self, kind: AdminSessionKind, text: &str) -> Result<AdminSession> {
        let invalid = || match kind {
            AdminSessionKind::Link => link_refused(),
            AdminSessionKind::Session => Error::Unauthenticated("not signed in".into()),
        };
        let parsed = PrefixedSecret::parse(kind.secret_kind(), text).ok_or_else(invalid)?;
        let row = self
            .db
            .find_admin_session(kind, &parsed.prefix)
            .await?
            .ok_or_else(invalid)?;
        if !digests_match(&row.hash, &parsed.digest()) {
            return Err(invalid());
        }
        Ok(row)
    }

    /// The session whose cookie is `text`; refused once it has been idle for
    /// [`SESSION_IDLE`] or is past its hard end. Use is recorded when `used`
    /// (a page's own refresh is not use, so an open tab still goes idle).
    pub async fn admin_session(&self, text: &str, used: bool) -> Result<AdminSession> {
        let mut session = self
            .admin_credential(AdminSessionKind::Session, text)
            .await?;
        let now = Self::now();
        if session_over(&session, now) {
            let _ = self
                .db
                .delete_admin_session(AdminSessionKind::Session, &session.prefix)
                .await;
            return Err(Error::Unauthenticated("the session has expired".into()));
        }
        if used && now - session.last_used_at > delta(TOUCH_EVERY) {
            self.db.touch_admin_session(&session.prefix, now).await?;
            session.last_used_at = now;
        }
        Ok(session)
    }

    /// Signs a browser out: its session (as the request's check found it) is
    /// deleted; one already gone is no error.
    pub async fn end_admin_session(&self, session: &AdminSession) -> Result<()> {
        match self
            .db
            .delete_admin_session(AdminSessionKind::Session, &session.prefix)
            .await
        {
            Ok(()) | Err(crate::db::Error::NotFound(_)) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

/// Why a sign-in link is refused: the same words whether it was used, expired
/// or never issued, so a guess learns nothing.
fn link_refused() -> Error {
    Error::PermissionDenied(
        "this sign-in link was used already, has expired, or is not one of this server's: \
         run `headway admin login-link` for a new one"
            .into(),
    )
}

fn delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// Whether a session has been idle too long or reached its hard end.
pub fn session_over(session: &AdminSession, now: Timestamp) -> bool {
    now >= session.expires_at || now - session.last_used_at >= delta(SESSION_IDLE)
}
