//! OAuth clients of Tailscale's API (`/api/v2`): their scopes, the client
//! itself and the short-lived access tokens it is given.

use super::secret::PrefixedSecret;
use super::{OAuthClientId, Timestamp};
use std::fmt;

/// What a scope grants: reading, or reading and changing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    Read,
    Write,
}

/// The part of the API a scope covers, in Tailscale's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// Everything below.
    All,
    /// `devices:core`: listing, naming, tagging, expiring and deleting devices.
    DevicesCore,
    /// `devices:routes`: a device's subnet routes and exit node.
    DevicesRoutes,
    /// `auth_keys`: pre-auth keys.
    AuthKeys,
    /// `oauth_keys`: OAuth clients.
    OAuthKeys,
    /// `policy_file`: the access policy.
    PolicyFile,
    /// `users`.
    Users,
    /// `feature_settings`: the tailnet's settings.
    FeatureSettings,
}

impl Resource {
    const NAMES: [(Resource, &'static str); 8] = [
        (Resource::All, "all"),
        (Resource::DevicesCore, "devices:core"),
        (Resource::DevicesRoutes, "devices:routes"),
        (Resource::AuthKeys, "auth_keys"),
        (Resource::OAuthKeys, "oauth_keys"),
        (Resource::PolicyFile, "policy_file"),
        (Resource::Users, "users"),
        (Resource::FeatureSettings, "feature_settings"),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("all", |(_, n)| n)
    }

    fn parse(text: &str) -> Option<Resource> {
        // Tailscale's older names for the same resources.
        let text = match text {
            "devices" => "devices:core",
            "routes" => "devices:routes",
            "acl" => "policy_file",
            other => other,
        };
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == text)
            .map(|(r, _)| *r)
    }
}

/// One OAuth scope, such as `devices:core:read` or `auth_keys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    pub resource: Resource,
    pub access: Access,
}

impl Scope {
    pub const fn new(resource: Resource, access: Access) -> Scope {
        Scope { resource, access }
    }

    /// Parses `<resource>` (read and write) or `<resource>:read`.
    pub fn parse(text: &str) -> Result<Scope, String> {
        let text = text.trim();
        let (name, access) = match text.strip_suffix(":read") {
            Some(name) => (name, Access::Read),
            None => (text, Access::Write),
        };
        let resource = Resource::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Resource::NAMES.iter().map(|(_, n)| *n).collect();
            format!(
                "unknown scope {text:?} (expected one of {}, each optionally with :read)",
                known.join(", ")
            )
        })?;
        Ok(Scope { resource, access })
    }

    /// Whether holding `self` allows what `wanted` asks for.
    pub fn covers(self, wanted: Scope) -> bool {
        (self.resource == Resource::All || self.resource == wanted.resource)
            && self.access >= wanted.access
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.resource.name())?;
        if self.access == Access::Read {
            f.write_str(":read")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(text: &str) -> Result<Scope, String> {
        Scope::parse(text)
    }
}

/// Parses a list of scopes, refusing an empty one and naming the first bad entry.
pub fn parse_scopes<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Vec<Scope>, String> {
    let mut scopes = Vec::new();
    for text in texts {
        if text.trim().is_empty() {
            continue;
        }
        let scope = Scope::parse(text)?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err("at least one scope is required".into());
    }
    Ok(scopes)
}

/// Whether any of `held` allows `wanted`.
pub fn allows(held: &[Scope], wanted: Scope) -> bool {
    held.iter().any(|s| s.covers(wanted))
}

/// An OAuth client: `hskey-client-<prefix>-<secret>`; its client id is the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthClient {
    pub id: OAuthClientId,
    /// The client id, stored in clear and unique.
    pub prefix: String,
    /// SHA-256 of the secret part.
    pub hash: String,
    pub scopes: Vec<Scope>,
    /// Tags the client may give to keys and devices.
    pub tags: Vec<String>,
    pub description: String,
    pub created_at: Timestamp,
}

impl OAuthClient {
    /// The secret's kind: `hskey-client-…`.
    pub const KIND: &'static str = "client";

    pub fn masked(&self) -> String {
        PrefixedSecret::masked(Self::KIND, &self.prefix)
    }
}

/// An access token issued to an OAuth client: `hskey-oauthtok-<prefix>-<secret>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthToken {
    pub prefix: String,
    pub hash: String,
    pub client_id: OAuthClientId,
    /// A subset of the client's scopes.
    pub scopes: Vec<Scope>,
    pub expires_at: Timestamp,
}

impl OAuthToken {
    /// The token's kind: `hskey-oauthtok-…`.
    pub const KIND: &'static str = "oauthtok";

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

/// Scopes as stored: space-separated, as OAuth writes them.
pub fn scopes_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(Scope::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_with_tailscales_names_and_cover_reads() {
        let write = Scope::parse("devices:core").unwrap();
        let read = Scope::parse("devices:core:read").unwrap();
        assert!(write.covers(read));
        assert!(!read.covers(write));
        assert_eq!(Scope::parse("acl").unwrap().to_string(), "policy_file");
        assert!(Scope::parse("all:read").unwrap().covers(read));
        assert!(!Scope::parse("all:read").unwrap().covers(write));
        assert!(!Scope::parse("devices:routes").unwrap().covers(read));
        let err = Scope::parse("devices:everything").unwrap_err();
        assert!(err.contains("devices:everything"), "{err}");
        assert_eq!(
            scopes_text(&parse_scopes(["auth_keys", "users:read", "auth_keys"]).unwrap()),
            "auth_keys users:read"
        );
        assert!(parse_scopes([" "]).is_err());
    }
}
