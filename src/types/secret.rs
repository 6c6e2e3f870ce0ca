//! Random secrets and their one-way digests, for pre-auth keys, API keys and
//! registration ids.
//!
//! Secrets are 256-bit random strings, so a fast SHA-256 digest is as safe to
//! store as a slow password hash and keeps authentication off the CPU.

use sha2::{Digest, Sha256};

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// `N` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS random source failing is unrecoverable: no key may be made without it.
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes
}

/// A random string of `len` ASCII letters and digits (no `-`, so it splits cleanly).
pub fn random_alphanumeric(len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for byte in random_bytes::<64>() {
            // 248 = 62 * 4: rejecting the rest keeps the distribution uniform.
            if byte < 248 && out.len() < len {
                out.push(ALPHABET[usize::from(byte) % ALPHABET.len()] as char);
            }
        }
    }
    out
}

/// Lowercase hex SHA-256 of a secret, as stored in the database.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two digests in time independent of where they differ.
pub fn digests_match(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphanumeric_has_requested_length_and_alphabet() {
        let s = random_alphanumeric(64);
        assert_eq!(s.len(), 64);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(s, random_alphanumeric(64));
    }

    #[test]
    fn digest_is_stable() {
        assert_eq!(digest("abc"), digest("abc"));
        assert!(digests_match(&digest("abc"), &digest("abc")));
        assert!(!digests_match(&digest("abc"), &digest("abd")));
    }
}

/// Length of the public, stored part of a `hskey-…` credential.
pub const PREFIX_LEN: usize = 12;
/// Length of the secret part of a `hskey-…` credential.
pub const SECRET_LEN: usize = 64;

/// A credential in Headscale 0.28's form, `hskey-<kind>-<prefix>-<secret>`.
/// The prefix is stored in clear to find the row; the secret only as a digest.
#[derive(Clone, PartialEq, Eq)]
pub struct PrefixedSecret {
    kind: &'static str,
    pub prefix: String,
    pub secret: String,
}

impl PrefixedSecret {
    /// `auth` for pre-auth keys.
    pub const AUTH: &'static str = "auth";
    /// `api` for admin API keys.
    pub const API: &'static str = "api";

    pub fn generate(kind: &'static str) -> Self {
        Self {
            kind,
            prefix: random_alphanumeric(PREFIX_LEN),
            secret: random_alphanumeric(SECRET_LEN),
        }
    }

    /// Splits `hskey-<kind>-<prefix>-<secret>`; `None` when the text is not of that form.
    pub fn parse(kind: &'static str, text: &str) -> Option<Self> {
        let rest = text
            .trim()
            .strip_prefix("hskey-")?
            .strip_prefix(kind)?
            .strip_prefix('-')?;
        let (prefix, secret) = rest.split_at_checked(PREFIX_LEN)?;
        let secret = secret.strip_prefix('-')?;
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (ok(prefix) && ok(secret)).then(|| Self {
            kind,
            prefix: prefix.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The full credential, shown to the admin once.
    pub fn reveal(&self) -> String {
        format!("hskey-{}-{}-{}", self.kind, self.prefix, self.secret)
    }

    /// The form shown in listings: `hskey-<kind>-<prefix>-***`.
    pub fn masked(kind: &str, prefix: &str) -> String {
        format!("hskey-{kind}-{prefix}-***")
    }

    pub fn digest(&self) -> String {
        digest(&self.secret)
    }
}

impl std::fmt::Debug for PrefixedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&Self::masked(self.kind, &self.prefix))
    }
}

#[cfg(test)]
mod prefixed_tests {
    use super::*;

    #[test]
    fn generated_credentials_parse_back() {
        let key = PrefixedSecret::generate(PrefixedSecret::AUTH);
        let text = key.reveal();
        assert!(text.starts_with("hskey-auth-"));
        let back = PrefixedSecret::parse(PrefixedSecret::AUTH, &text).unwrap();
        assert_eq!(back.prefix, key.prefix);
        assert_eq!(back.digest(), key.digest());
        assert!(PrefixedSecret::parse(PrefixedSecret::API, &text).is_none());
        assert!(PrefixedSecret::parse(PrefixedSecret::AUTH, "hskey-auth-short").is_none());
        assert!(!format!("{key:?}").contains(&key.secret));
    }
}
