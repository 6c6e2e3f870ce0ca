//! Validated names: user names and node given names (MagicDNS labels).

use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("user name {0:?} is too short: it needs at least 2 characters")]
    UserTooShort(String),
    #[error("user name {0:?} must start with a letter")]
    UserMustStartWithLetter(String),
    #[error(
        "user name {0:?} contains {1:?}: only letters, digits, '-', '.', '_' and one '@' are allowed"
    )]
    UserInvalidChar(String, char),
    #[error("user name {0:?} contains more than one '@'")]
    UserTooManyAt(String),
    #[error(
        "{0:?} is not a valid DNS label: use 1 to 63 lowercase letters, digits and '-', not starting or ending with '-'"
    )]
    InvalidLabel(String),
}

/// A user's (namespace's) name, unique across the server.
///
/// Same rules as Headscale: at least two characters, a letter first, then
/// letters, digits, `-`, `.`, `_` and at most one `@`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct UserName(String);

impl UserName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let name = name.trim();
        let mut chars = name.chars();
        match chars.next() {
            None => return Err(NameError::UserTooShort(name.into())),
            Some(first) if !first.is_alphabetic() => {
                return Err(NameError::UserMustStartWithLetter(name.into()));
            }
            Some(_) => {}
        }
        if name.chars().count() < 2 {
            return Err(NameError::UserTooShort(name.into()));
        }
        let mut at = 0;
        for c in name.chars() {
            match c {
                c if c.is_alphanumeric() || matches!(c, '-' | '.' | '_') => {}
                '@' => {
                    at += 1;
                    if at > 1 {
                        return Err(NameError::UserTooManyAt(name.into()));
                    }
                }
                other => return Err(NameError::UserInvalidChar(name.into(), other)),
            }
        }
        Ok(Self(name.to_owned()))
    }

    /// Wraps a name read back from the database, which was validated on the way in.
    pub fn from_trusted(name: String) -> Self {
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node's MagicDNS label: 1–63 of `[a-z0-9-]`, not starting or ending with `-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct GivenName(String);

impl GivenName {
    /// The label used when a hostname sanitises to nothing, as Headscale 0.29 does.
    pub const FALLBACK: &'static str = "node";

    /// Strict parse for names an admin types (`nodes rename`): no silent rewriting.
    pub fn parse(label: &str) -> Result<Self, NameError> {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(label.to_owned()))
        } else {
            Err(NameError::InvalidLabel(label.to_owned()))
        }
    }

    /// Derives a label from a client's hostname: lowercase, every run of other
    /// characters becomes one `-`, trimmed to 63, and `node` if nothing is left.
    pub fn sanitize(hostname: &str) -> Self {
        let mut out = String::with_capacity(hostname.len().min(63));
        for c in hostname.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                out.push(c);
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        let mut label: String = out.trim_matches('-').chars().take(63).collect();
        while label.ends_with('-') {
            label.pop();
        }
        if label.is_empty() {
            Self(Self::FALLBACK.to_owned())
        } else {
            Self(label)
        }
    }

    /// The first of `base`, `base-1`, `base-2`, … that `taken` does not hold.
    /// The suffix is fitted inside 63 characters by shortening the base.
    pub fn unique(base: &GivenName, taken: impl Fn(&str) -> bool) -> GivenName {
        Self::unique_skipping(base, 0, taken)
    }

    /// Like [`GivenName::unique`], but passes over the first `skip` free names:
    /// two replicas registering at once both want the lowest free one, and a
    /// retry that skips a random few rarely meets the other again.
    pub fn unique_skipping(
        base: &GivenName,
        mut skip: u64,
        taken: impl Fn(&str) -> bool,
    ) -> GivenName {
        if !taken(&base.0) {
            if skip == 0 {
                return base.clone();
            }
            skip -= 1;
        }
        for n in 1u64.. {
            let suffix = format!("-{n}");
            let keep = 63usize.saturating_sub(suffix.len()).min(base.0.len());
            let stem = base.0[..keep].trim_end_matches('-');
            let candidate = format!("{stem}{suffix}");
            if !taken(&candidate) {
                if skip == 0 {
                    return GivenName(candidate);
                }
                skip -= 1;
            }
        }
        unreachable!("u64 suffixes are never exhausted")
    }

    /// Wraps a label read back from the database, which was validated on the way in.
    pub fn from_trusted(label: String) -> Self {
        Self(label)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GivenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_follow_headscale_rules() {
        assert!(UserName::parse("default").is_ok());
        assert!(UserName::parse("alice@example.com").is_ok());
        assert!(matches!(
            UserName::parse("a"),
            Err(NameError::UserTooShort(_))
        ));
        assert!(matches!(
            UserName::parse("1abc"),
            Err(NameError::UserMustStartWithLetter(_))
        ));
        assert!(matches!(
            UserName::parse("a b"),
            Err(NameError::UserInvalidChar(_, ' '))
        ));
        assert!(matches!(
            UserName::parse("a@b@c"),
            Err(NameError::UserTooManyAt(_))
        ));
        assert!(matches!(
            UserName::parse(""),
            Err(NameError::UserTooShort(_))
        ));
    }

    #[test]
    fn hostnames_sanitize_to_labels() {
        assert_eq!(
            GivenName::sanitize("My Laptop.local").as_str(),
            "my-laptop-local"
        );
        assert_eq!(GivenName::sanitize("--__--").as_str(), "node");
        assert_eq!(GivenName::sanitize(&"x".repeat(80)).as_str().len(), 63);
    }

    #[test]
    fn collisions_get_numeric_suffixes() {
        let base = GivenName::sanitize("laptop");
        let taken = ["laptop", "laptop-1"];
        assert_eq!(
            GivenName::unique(&base, |n| taken.contains(&n)).as_str(),
            "laptop-2"
        );
        let long = GivenName::sanitize(&"a".repeat(63));
        let got = GivenName::unique(&long, |n| n == long.as_str());
        assert_eq!(got.as_str().len(), 63);
        assert!(got.as_str().ends_with("a-1"));
        // Skipping passes over free names only.
        let taken = ["laptop-1", "laptop-3"];
        let skipping = |skip| GivenName::unique_skipping(&base, skip, |n| taken.contains(&n));
        assert_eq!(skipping(0).as_str(), "laptop");
        assert_eq!(skipping(1).as_str(), "laptop-2");
        assert_eq!(skipping(2).as_str(), "laptop-4");
    }

    #[test]
    fn strict_labels_refuse_rewrites() {
        assert!(GivenName::parse("web-1").is_ok());
        assert!(GivenName::parse("Web").is_err());
        assert!(GivenName::parse("-web").is_err());
        assert!(GivenName::parse("").is_err());
        assert!(GivenName::parse(&"a".repeat(64)).is_err());
    }
}
