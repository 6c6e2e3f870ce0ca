//! OpenID Connect login: ID tokens checked against the provider's published keys
//! (`jwt`), and their claims against the login that asked for them (`claims`).
//! Pure: no IO; the caller fetches the discovery document, JWKS and userinfo.

pub mod claims;
pub mod jwt;
