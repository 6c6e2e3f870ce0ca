//! A user: owner of nodes and pre-auth keys ("namespace" in old Headscale), and
//! the identity a provider vouches for when a person signs in.

use super::{Timestamp, UserId, UserName};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: UserName,
    pub display_name: String,
    pub email: String,
    /// Empty for users created through the admin API, as in Headscale (older
    /// headway databases hold `"cli"` there); `"oidc"` for OIDC users.
    pub provider: String,
    /// The identity provider's subject; empty for local users.
    pub provider_id: String,
    pub profile_pic_url: String,
    /// The identity provider's groups at the last login (`groups` claim); policy
    /// groups of the same name include the user. Empty for local users.
    pub groups: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl User {
    /// The name clients show as the login: the email when there is one, else the
    /// user name (Headscale's `Username`).
    pub fn login_name(&self) -> String {
        if self.email.is_empty() {
            self.name.to_string()
        } else {
            self.email.clone()
        }
    }

    /// The name people see: the display name, else the login name.
    pub fn display(&self) -> String {
        if self.display_name.is_empty() {
            self.login_name()
        } else {
            self.display_name.clone()
        }
    }
}

/// What an identity provider vouched for at a sign-in, already checked against
/// the allow rules. `email` is empty unless it may be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Issuer and subject ([`provider_identifier`]); stable for one person.
    pub provider_id: String,
    /// `preferred_username`, when the provider sent one.
    pub preferred_username: String,
    pub email: String,
    pub display_name: String,
    pub picture: String,
    /// The `groups` claim.
    pub groups: Vec<String>,
}

/// Headscale's provider identifier of a person: `<issuer>/<subject>`, with the
/// issuer's trailing and the subject's leading slashes, empty path parts and
/// surrounding spaces left out and the URL scheme lower-cased, so identities
/// stored by Headscale match.
pub fn provider_identifier(issuer: &str, subject: &str) -> String {
    let issuer = issuer.trim().trim_end_matches('/');
    let subject = subject.trim().trim_start_matches('/');
    let joined = match (issuer.is_empty(), subject.is_empty()) {
        (true, true) => return String::new(),
        (true, false) => subject.to_owned(),
        (false, true) => issuer.to_owned(),
        (false, false) => format!("{issuer}/{subject}"),
    };
    let (scheme, rest) = match joined.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            (Some(scheme.to_ascii_lowercase()), rest)
        }
        _ => (None, joined.as_str()),
    };
    let parts: Vec<&str> = rest
        .split('/')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    match scheme {
        // The host stays as written; the path is cleaned.
        Some(scheme) => match parts.split_first() {
            Some((host, [])) => format!("{scheme}://{host}"),
            Some((host, path)) => format!("{scheme}://{host}/{}", path.join("/")),
            None => format!("{scheme}://"),
        },
        // Headscale marks an identity without an issuer with a leading slash.
        None if issuer.is_empty() => format!("/{}", parts.join("/")),
        None => parts.join("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::provider_identifier;

    #[test]
    fn identifiers_are_written_as_headscale_writes_them() {
        assert_eq!(
            provider_identifier("https://idp.example/", "/abc"),
            "https://idp.example/abc"
        );
        assert_eq!(
            provider_identifier("HTTPS://idp.example/realms//main", "user 1"),
            "https://idp.example/realms/main/user 1"
        );
        assert_eq!(provider_identifier("", "abc"), "/abc");
        assert_eq!(provider_identifier("", ""), "");
    }
}
