//! Random secrets and their one-way digests, for pre-auth keys, API keys and
//! registration ids, and the credentials clients present, in every form Headscale
//! ever handed out.
//!
//! Secrets are 256-bit random strings, so a fast SHA-256 digest is as safe to
//! store as a slow password hash and keeps authentication off the CPU. Keys
//! imported from Headscale keep its bcrypt hash until their first use.

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

    /// The form shown in listings: `hskey-<kind>-<prefix>-***`, or for a key of
    /// Headscale's older forms (whose stored prefix has another length) its
    /// beginning: `<prefix>***` for a pre-auth key, `<prefix>.***` for an API key.
    pub fn masked(kind: &str, prefix: &str) -> String {
        match (prefix.len() == PREFIX_LEN, kind) {
            (true, _) => format!("hskey-{kind}-{prefix}-***"),
            (false, Self::API) => format!("{prefix}.***"),
            (false, _) => format!("{prefix}***"),
        }
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

/// How many leading characters of a plain pre-auth key (Headscale before 0.28: 48
/// hex digits, stored in clear there) headway stores as its prefix; the rest is
/// the secret. Any length but [`PREFIX_LEN`], so listings can tell the forms apart.
pub const LEGACY_AUTH_PREFIX_LEN: usize = 16;
/// The longest prefix of Headscale's API keys before 0.28, `<prefix>.<secret>`
/// (10 characters as it made them: 7 random bytes in base64).
pub const LEGACY_API_PREFIX_MAX: usize = 32;

/// A credential as a client or an admin presents it: the prefix that finds its
/// row, and the secret that row's hash must match.
#[derive(Clone, PartialEq, Eq)]
pub struct Presented {
    pub prefix: String,
    secret: String,
}

/// Whether a presented secret matches a stored hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    No,
    Yes,
    /// It matches a hash Headscale made (bcrypt): store [`Presented::digest`]
    /// instead, so the next check is fast.
    YesRehash,
}

impl Presented {
    /// A pre-auth key: `hskey-auth-<prefix>-<secret>` or Headscale's older plain key.
    pub fn auth_key(text: &str) -> Option<Self> {
        if let Some(key) = PrefixedSecret::parse(PrefixedSecret::AUTH, text) {
            return Some(Self::from(key));
        }
        let text = text.trim();
        let plain = text.len() > LEGACY_AUTH_PREFIX_LEN
            && !text.starts_with("hskey-")
            && text.bytes().all(|b| b.is_ascii_alphanumeric());
        plain.then(|| {
            let (prefix, secret) = text.split_at(LEGACY_AUTH_PREFIX_LEN);
            Self {
                prefix: prefix.to_owned(),
                secret: secret.to_owned(),
            }
        })
    }

    /// An API key: `hskey-api-<prefix>-<secret>` or Headscale's older `<prefix>.<secret>`
    /// (base64url on both sides).
    pub fn api_key(text: &str) -> Option<Self> {
        if let Some(key) = PrefixedSecret::parse(PrefixedSecret::API, text) {
            return Some(Self::from(key));
        }
        let (prefix, secret) = text.trim().split_once('.')?;
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (prefix.len() <= LEGACY_API_PREFIX_MAX && ok(prefix) && ok(secret)).then(|| Self {
            prefix: prefix.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// headway's digest of the secret, as stored for keys it made.
    pub fn digest(&self) -> String {
        digest(&self.secret)
    }

    /// Whether a stored hash is bcrypt's (`$2a$`, `$2b$`, `$2y$`), which takes tens
    /// of milliseconds of CPU to check: callers run [`Presented::check`] off the
    /// async workers then.
    pub fn is_slow(stored: &str) -> bool {
        stored.starts_with("$2")
    }

    /// Checks the secret against a stored hash: headway's SHA-256 digest, or a
    /// bcrypt hash Headscale made (imported).
    pub fn check(&self, stored: &str) -> Match {
        if Self::is_slow(stored) {
            match bcrypt::verify(&self.secret, stored) {
                Ok(true) => Match::YesRehash,
                _ => Match::No,
            }
        } else if digests_match(stored, &self.digest()) {
            Match::Yes
        } else {
            Match::No
        }
    }
}

impl From<PrefixedSecret> for Presented {
    fn from(key: PrefixedSecret) -> Self {
        Self {
            prefix: key.prefix,
            secret: key.secret,
        }
    }
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Presented({}…)", self.prefix)
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

    #[test]
    fn every_form_headscale_handed_out_is_checked() {
        // headway's own and Headscale 0.28's form, against a SHA-256 digest.
        let key = PrefixedSecret::generate(PrefixedSecret::AUTH);
        let presented = Presented::auth_key(&key.reveal()).unwrap();
        assert_eq!(presented.prefix, key.prefix);
        assert_eq!(presented.check(&key.digest()), Match::Yes);
        assert_eq!(presented.check(&digest("other")), Match::No);

        // Headscale's plain pre-auth key (before 0.28): 48 hex digits.
        let plain = "0123456789abcdef0123456789abcdef0123456789abcdef";
        let legacy = Presented::auth_key(plain).unwrap();
        assert_eq!(legacy.prefix, &plain[..LEGACY_AUTH_PREFIX_LEN]);
        assert_eq!(
            legacy.check(&digest(&plain[LEGACY_AUTH_PREFIX_LEN..])),
            Match::Yes
        );
        assert_eq!(
            PrefixedSecret::masked(PrefixedSecret::AUTH, &legacy.prefix),
            "0123456789abcdef***"
        );
        assert!(Presented::auth_key("short").is_none());
        assert!(Presented::auth_key("hskey-auth-broken").is_none());

        // A bcrypt hash (as Headscale stores it) matches once, asking to be replaced.
        let hash = bcrypt::hash_with_salt("s3cret-part", 4, [7u8; 16])
            .unwrap()
            .to_string();
        let api = Presented::api_key("abcdefg.s3cret-part").unwrap();
        assert_eq!(api.prefix, "abcdefg");
        assert_eq!(
            Presented::api_key("9QMviRMTZw.iEBaIkqmp_UnAYpWYOzzDXRQpwbhH0tdJugxPwZ3yYo")
                .unwrap()
                .prefix,
            "9QMviRMTZw"
        );
        assert!(Presented::is_slow(&hash));
        assert_eq!(api.check(&hash), Match::YesRehash);
        assert_eq!(
            Presented::api_key("abcdefg.wrong").unwrap().check(&hash),
            Match::No
        );
        assert_eq!(
            PrefixedSecret::masked(PrefixedSecret::API, "abcdefg"),
            "abcdefg.***"
        );
        assert!(Presented::api_key("abc/defgh.secret").is_none());
        assert!(Presented::api_key("nodot").is_none());
    }
}
