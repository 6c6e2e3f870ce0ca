//! OpenID Connect sign-in for nodes: `client` is the relying party (discovery,
//! keys, sign-ins in progress, code exchange, userinfo), `jwt` checks ID token
//! signatures against the provider's keys, `claims` what a token says and whether
//! to believe it, `rules` who may sign in and the identity that results, `waiting` the bounded
//! table of sign-ins (and confirmations) waiting for the browser to come back.
//!
//! Knows the provider and `config::Oidc`; nothing of users, nodes or HTTP routes.

pub mod claims;
pub mod client;
pub mod jwt;
pub mod rules;
pub mod waiting;

/// Why a sign-in could not go on, on the provider's side.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Discovery, keys or the token endpoint did not answer usefully.
    #[error("the OIDC provider {issuer} cannot be reached: {why}")]
    Unreachable { issuer: String, why: String },
    /// The provider answered and said no.
    #[error("{0}")]
    Refused(Refusal),
    /// The ID token failed a check (signature, issuer, audience, expiry, nonce).
    #[error("the ID token was refused: {0}")]
    BadToken(String),
}

/// A sign-in that was refused, as the person is told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("your email address {0:?} is not in a domain this tailnet allows")]
    Domain(String),
    #[error("your account {0:?} is not one this tailnet allows")]
    User(String),
    #[error("you are not in a group this tailnet allows")]
    Group,
    #[error("your email address {0:?} is not verified at the identity provider")]
    UnverifiedEmail(String),
    #[error(
        "the identity provider refused this server's client credentials ({0}); the administrator should check oidc.client_id and oidc.client_secret"
    )]
    ClientRejected(String),
    #[error(
        "the identity provider refused the sign-in code ({0}); it may have expired or been used already"
    )]
    CodeRejected(String),
}
