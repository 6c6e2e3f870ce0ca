//! What an ID token says, and whether to believe it: its claims read tolerantly
//! (as real providers send them), checked against the login that asked for it,
//! and completed from the userinfo endpoint. Knows JSON and times; not
//! signatures (see `jwt`), HTTP or the users table.

use serde_json::{Map, Value};

/// The claims of an ID token (OpenID Connect Core §2), after its signature
/// was checked. Unknown claims are ignored.
///
/// The claims that decide whether to believe the token (`iss`, `sub`, `aud`,
/// `azp`, the times, `nonce`) must have their standard types, or the token is
/// refused; the profile claims are read tolerantly and dropped when unreadable.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "Value")]
pub struct IdClaims {
    /// The issuer; empty when the token has none.
    pub iss: String,
    /// The user's stable id at the provider; empty when the token has none.
    pub sub: String,
    /// The audiences: `aud` as a string or a list.
    pub aud: Vec<String>,
    /// The authorized party: the client the token was issued to.
    pub azp: Option<String>,
    /// Unix seconds; fractions (which the JWT spec allows) are dropped.
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    pub nonce: Option<String>,
    /// Who the person is, as far as the token says.
    pub profile: Profile,
}

/// The profile claims, in an ID token or a userinfo answer, read tolerantly:
/// a value of the wrong type is dropped, not an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub email: Option<String>,
    /// A boolean, or the strings `"true"`/`"false"` (JumpCloud, AWS Cognito).
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub picture: Option<String>,
    /// A list of strings (other entries dropped), or a single string.
    pub groups: Option<Vec<String>>,
}

impl Profile {
    fn read(claims: &Map<String, Value>) -> Profile {
        Profile {
            email: lenient_string(claims, "email"),
            email_verified: lenient_bool(claims, "email_verified"),
            name: lenient_string(claims, "name"),
            preferred_username: lenient_string(claims, "preferred_username"),
            picture: lenient_string(claims, "picture"),
            groups: lenient_strings(claims, "groups"),
        }
    }
}

/// The userinfo endpoint's answer (OpenID Connect Core §5.3.2), read with the
/// same tolerance as [`IdClaims`]' profile claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "Value")]
pub struct UserInfo {
    /// Must equal the ID token's `sub` for the rest to be used.
    pub sub: String,
    pub profile: Profile,
}

/// What the login that received the token expects of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected<'a> {
    /// The configured issuer URL (`oidc.issuer`).
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce this login sent in its authorization request.
    pub nonce: &'a str,
    /// Unix seconds.
    pub now: i64,
    /// Clock difference tolerated with the provider, in seconds.
    pub leeway_secs: i64,
}

/// Why an ID token's claims are not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("the ID token's claims cannot be read: {0}")]
    Malformed(String),
    #[error("the ID token was issued by {found:?}, not by the configured issuer {expected:?}")]
    WrongIssuer { found: String, expected: String },
    #[error("the ID token's audience is {found:?}, which does not include this server's client_id")]
    WrongAudience { found: Vec<String> },
    #[error(
        "the ID token has several audiences and was issued to {found:?} (azp), \
         not to this server's client_id"
    )]
    WrongAuthorizedParty { found: String },
    #[error(
        "the ID token expired at {at} (unix time); if fresh logins fail this way, \
         check this server's clock"
    )]
    Expired { at: i64 },
    #[error(
        "the ID token is not valid yet (issued or valid from a time in the future); \
         check the clocks of this server and the provider"
    )]
    NotYetValid,
    #[error(
        "the ID token's nonce does not match this login's; start the login again \
         in one browser tab"
    )]
    NonceMismatch,
    #[error("the ID token has no {0} claim, which is required")]
    MissingClaim(&'static str),
}

impl IdClaims {
    /// Reads the payload [`super::jwt::verify`] returned.
    pub fn from_json(payload: &[u8]) -> Result<IdClaims, ClaimError> {
        serde_json::from_slice(payload).map_err(|e| ClaimError::Malformed(e.to_string()))
    }

    /// Whether to believe the token: issued by our provider, to us, for this
    /// login, and within its lifetime (OpenID Connect Core §3.1.3.7).
    pub fn validate(&self, expected: &Expected<'_>) -> Result<(), ClaimError> {
        if self.iss.is_empty() {
            return Err(ClaimError::MissingClaim("iss"));
        }
        if !same_issuer(&self.iss, expected.issuer) {
            return Err(ClaimError::WrongIssuer {
                found: self.iss.clone(),
                expected: expected.issuer.to_owned(),
            });
        }
        if self.sub.is_empty() {
            return Err(ClaimError::MissingClaim("sub"));
        }
        if self.aud.is_empty() {
            return Err(ClaimError::MissingClaim("aud"));
        }
        if !self.aud.iter().any(|aud| aud == expected.client_id) {
            return Err(ClaimError::WrongAudience {
                found: self.aud.clone(),
            });
        }
        if self.aud.len() > 1 {
            match &self.azp {
                None => return Err(ClaimError::MissingClaim("azp")),
                Some(azp) if azp != expected.client_id => {
                    return Err(ClaimError::WrongAuthorizedParty { found: azp.clone() });
                }
                Some(_) => {}
            }
        }
        let leeway = expected.leeway_secs.max(0);
        let exp = self.exp.ok_or(ClaimError::MissingClaim("exp"))?;
        if exp <= expected.now.saturating_sub(leeway) {
            return Err(ClaimError::Expired { at: exp });
        }
        let latest = expected.now.saturating_add(leeway);
        if self.iat.is_some_and(|iat| iat > latest) || self.nbf.is_some_and(|nbf| nbf > latest) {
            return Err(ClaimError::NotYetValid);
        }
        let nonce = self
            .nonce
            .as_deref()
            .ok_or(ClaimError::MissingClaim("nonce"))?;
        if !constant_time_eq(nonce.as_bytes(), expected.nonce.as_bytes()) {
            return Err(ClaimError::NonceMismatch);
        }
        Ok(())
    }

    /// Completes the profile from the userinfo endpoint, as Headscale does:
    /// only when it is about the same user (`sub`), and then its values win
    /// where it has them (empty strings do not count); its `groups`, when
    /// present, replace the token's. Returns whether anything was taken.
    pub fn merge_userinfo(&mut self, info: UserInfo) -> bool {
        if info.sub.is_empty() || info.sub != self.sub {
            return false;
        }
        let take = |mine: &mut Option<String>, theirs: Option<String>| {
            if let Some(value) = theirs.filter(|v| !v.is_empty()) {
                *mine = Some(value);
            }
        };
        let (mine, theirs) = (&mut self.profile, info.profile);
        take(&mut mine.email, theirs.email);
        take(&mut mine.name, theirs.name);
        take(&mut mine.preferred_username, theirs.preferred_username);
        take(&mut mine.picture, theirs.picture);
        if theirs.email_verified.is_some() {
            mine.email_verified = theirs.email_verified;
        }
        if theirs.groups.is_some() {
            mine.groups = theirs.groups;
        }
        true
    }
}

impl UserInfo {
    /// Reads the userinfo endpoint's JSON body.
    pub fn from_json(body: &[u8]) -> Result<UserInfo, ClaimError> {
        serde_json::from_slice(body).map_err(|e| ClaimError::Malformed(e.to_string()))
    }
}

impl TryFrom<Value> for IdClaims {
    type Error = ClaimError;

    fn try_from(value: Value) -> Result<IdClaims, ClaimError> {
        let claims = object(value)?;
        Ok(IdClaims {
            iss: strict_string(&claims, "iss")?.unwrap_or_default(),
            sub: strict_string(&claims, "sub")?.unwrap_or_default(),
            aud: audiences(&claims)?,
            azp: strict_string(&claims, "azp")?,
            exp: time(&claims, "exp")?,
            iat: time(&claims, "iat")?,
            nbf: time(&claims, "nbf")?,
            nonce: strict_string(&claims, "nonce")?,
            profile: Profile::read(&claims),
        })
    }
}

impl TryFrom<Value> for UserInfo {
    type Error = ClaimError;

    fn try_from(value: Value) -> Result<UserInfo, ClaimError> {
        let claims = object(value)?;
        Ok(UserInfo {
            sub: strict_string(&claims, "sub")?.unwrap_or_default(),
            profile: Profile::read(&claims),
        })
    }
}

fn object(value: Value) -> Result<Map<String, Value>, ClaimError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ClaimError::Malformed("not a JSON object".to_owned())),
    }
}

/// The claim's value, with `null` read as absent.
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).filter(|v| !v.is_null())
}

fn strict_string(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, ClaimError> {
    match claim(claims, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ClaimError::Malformed(format!("{name} is not a string"))),
    }
}

fn audiences(claims: &Map<String, Value>) -> Result<Vec<String>, ClaimError> {
    let not_strings =
        || ClaimError::Malformed("aud is not a string or a list of strings".to_owned());
    match claim(claims, "aud") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(not_strings))
            .collect(),
        Some(_) => Err(not_strings()),
    }
}

/// A NumericDate (RFC 7519 §2): seconds, an integer or not; huge values
/// saturate rather than wrap.
fn time(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, ClaimError> {
    match claim(claims, name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let seconds = match n.as_i64() {
                Some(i) => i,
                // `as` saturates, and JSON has no NaN or infinities.
                None => n.as_f64().map_or(i64::MAX, |f| f.floor() as i64),
            };
            Ok(Some(seconds))
        }
        Some(_) => Err(ClaimError::Malformed(format!("{name} is not a number"))),
    }
}

fn lenient_string(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claim(claims, name)?.as_str().map(str::to_owned)
}

/// A boolean, or one of the strings Go's `strconv.ParseBool` accepts (what
/// Headscale's `FlexibleBoolean` reads); anything else is absent.
fn lenient_bool(claims: &Map<String, Value>, name: &str) -> Option<bool> {
    match claim(claims, name)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.as_str() {
            "true" | "True" | "TRUE" | "t" | "T" | "1" => Some(true),
            "false" | "False" | "FALSE" | "f" | "F" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A list (keeping its strings) or a single string.
fn lenient_strings(claims: &Map<String, Value>, name: &str) -> Option<Vec<String>> {
    match claim(claims, name)? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(list) => Some(
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

/// Issuers match exactly, or differ by one trailing slash (providers and
/// configurations disagree on it: Auth0 writes one, most do not).
fn same_issuer(found: &str, expected: &str) -> bool {
    found == expected
        || found.strip_suffix('/') == Some(expected)
        || expected.strip_suffix('/') == Some(found)
}

/// Compares without stopping at the first difference, so timing tells an
/// attacker nothing about how much of a guessed nonce was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISSUER: &str = "https://idp.example";
    const CLIENT: &str = "headway";
    const NOW: i64 = 1_700_000_000;

    fn expected() -> Expected<'static> {
        Expected {
            issuer: ISSUER,
            client_id: CLIENT,
            nonce: "n-0S6_WzA2Mj",
            now: NOW,
            leeway_secs: 60,
        }
    }

    fn good() -> Value {
        json!({
            "iss": ISSUER, "sub": "248289761001", "aud": CLIENT,
            "exp": NOW + 300, "iat": NOW - 10, "nonce": "n-0S6_WzA2Mj",
        })
    }

    fn check(claims: Value) -> Result<(), ClaimError> {
        IdClaims::from_json(claims.to_string().as_bytes())?.validate(&expected())
    }

    fn with(changes: Value) -> Value {
        let mut claims = good();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    #[test]
    fn a_good_token_is_believed() {
        assert_eq!(check(good()), Ok(()));
    }

    #[test]
    fn audience_is_a_string_or_a_list_and_azp_decides_between_several() {
        assert_eq!(check(with(json!({"aud": [CLIENT]}))), Ok(()));
        assert_eq!(
            check(with(json!({"aud": "other"}))),
            Err(ClaimError::WrongAudience {
                found: vec!["other".to_owned()]
            })
        );
        assert_eq!(
            check(with(json!({"aud": ["other", "third"]}))),
            Err(ClaimError::WrongAudience {
                found: vec!["other".to_owned(), "third".to_owned()]
            })
        );
        assert_eq!(
            check(with(json!({"aud": [CLIENT, "api"]}))),
            Err(ClaimError::MissingClaim("azp"))
        );
        assert_eq!(
            check(with(json!({"aud": [CLIENT, "api"], "azp": "api"}))),
            Err(ClaimError::WrongAuthorizedParty {
                found: "api".to_owned()
            })
        );
        assert_eq!(
            check(with(json!({"aud": [CLIENT, "api"], "azp": CLIENT}))),
            Ok(())
        );
        assert_eq!(
            check(with(json!({"aud": null}))),
            Err(ClaimError::MissingClaim("aud"))
        );
        assert_eq!(
            check(with(json!({"aud": []}))),
            Err(ClaimError::MissingClaim("aud"))
        );
        assert!(matches!(
            check(with(json!({"aud": [CLIENT, 7]}))),
            Err(ClaimError::Malformed(_))
        ));
    }

    #[test]
    fn expiry_and_start_allow_the_leeway() {
        assert_eq!(check(with(json!({"exp": NOW - 59}))), Ok(()));
        assert_eq!(
            check(with(json!({"exp": NOW - 60}))),
            Err(ClaimError::Expired { at: NOW - 60 })
        );
        assert_eq!(
            check(with(json!({"exp": null}))),
            Err(ClaimError::MissingClaim("exp"))
        );
        assert_eq!(check(with(json!({"exp": (NOW + 30) as f64 + 0.5}))), Ok(()));
        assert_eq!(check(with(json!({"exp": 1e300}))), Ok(()));
        assert_eq!(
            check(with(json!({"exp": -1e300}))),
            Err(ClaimError::Expired { at: i64::MIN })
        );
        assert_eq!(check(with(json!({"exp": u64::MAX}))), Ok(()));
        assert!(matches!(
            check(with(json!({"exp": "tomorrow"}))),
            Err(ClaimError::Malformed(_))
        ));

        assert_eq!(check(with(json!({"iat": NOW + 60}))), Ok(()));
        assert_eq!(
            check(with(json!({"iat": NOW + 61}))),
            Err(ClaimError::NotYetValid)
        );
        assert_eq!(check(with(json!({"iat": null}))), Ok(()));
        assert_eq!(check(with(json!({"nbf": (NOW + 60) as f64}))), Ok(()));
        assert_eq!(
            check(with(json!({"nbf": NOW + 61}))),
            Err(ClaimError::NotYetValid)
        );

        // Extreme clocks and leeways saturate instead of overflowing.
        let claims = IdClaims::from_json(good().to_string().as_bytes()).unwrap();
        for (now, leeway) in [(i64::MIN, i64::MAX), (i64::MAX, i64::MAX), (NOW, i64::MIN)] {
            let _ = claims.validate(&Expected {
                now,
                leeway_secs: leeway,
                ..expected()
            });
        }
    }

    #[test]
    fn nonce_issuer_and_subject_are_required() {
        assert_eq!(
            check(with(json!({"nonce": "n-other"}))),
            Err(ClaimError::NonceMismatch)
        );
        assert_eq!(
            check(with(json!({"nonce": ""}))),
            Err(ClaimError::NonceMismatch)
        );
        assert_eq!(
            check(with(json!({"nonce": null}))),
            Err(ClaimError::MissingClaim("nonce"))
        );
        assert_eq!(
            check(with(json!({"sub": ""}))),
            Err(ClaimError::MissingClaim("sub"))
        );
        assert_eq!(
            check(with(json!({"iss": null}))),
            Err(ClaimError::MissingClaim("iss"))
        );
        assert_eq!(check(with(json!({"iss": "https://idp.example/"}))), Ok(()));
        let slash = Expected {
            issuer: "https://idp.example/",
            ..expected()
        };
        let claims = IdClaims::from_json(good().to_string().as_bytes()).unwrap();
        assert_eq!(claims.validate(&slash), Ok(()));
        for wrong in [
            "https://idp.example//",
            "https://idp.example.evil",
            "https://IDP.example",
        ] {
            assert_eq!(
                check(with(json!({ "iss": wrong }))),
                Err(ClaimError::WrongIssuer {
                    found: wrong.to_owned(),
                    expected: ISSUER.to_owned()
                })
            );
        }
    }

    #[test]
    fn profile_claims_are_read_tolerantly() {
        let claims = IdClaims::from_json(
            with(json!({
                "email": "alice@example.com", "email_verified": "true",
                "name": "Alice", "preferred_username": "alice", "picture": 42,
                "groups": "admins", "custom": {"nested": [1, 2]},
            }))
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(claims.profile.email.as_deref(), Some("alice@example.com"));
        assert_eq!(claims.profile.email_verified, Some(true));
        assert_eq!(claims.profile.name.as_deref(), Some("Alice"));
        assert_eq!(claims.profile.preferred_username.as_deref(), Some("alice"));
        assert_eq!(claims.profile.picture, None);
        assert_eq!(claims.profile.groups, Some(vec!["admins".to_owned()]));

        for (value, read) in [
            (json!(false), Some(false)),
            (json!("false"), Some(false)),
            (json!("yes"), None),
            (json!(1), None),
            (json!(null), None),
        ] {
            let claims = IdClaims::from_json(
                with(json!({ "email_verified": value }))
                    .to_string()
                    .as_bytes(),
            )
            .unwrap();
            assert_eq!(claims.profile.email_verified, read, "{value}");
        }
        let claims = IdClaims::from_json(
            with(json!({"groups": ["a", 1, null, "b", {"c": 1}]}))
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            claims.profile.groups,
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        let claims =
            IdClaims::from_json(with(json!({"groups": 5})).to_string().as_bytes()).unwrap();
        assert_eq!(claims.profile.groups, None);

        for bad in [&b"[]"[..], b"", b"null", b"{", b"\"x\""] {
            assert!(matches!(
                IdClaims::from_json(bad),
                Err(ClaimError::Malformed(_))
            ));
        }
        assert!(matches!(
            IdClaims::from_json(with(json!({"sub": 12})).to_string().as_bytes()),
            Err(ClaimError::Malformed(_))
        ));
    }

    #[test]
    fn userinfo_completes_the_profile_of_the_same_user_only() {
        let mut claims = IdClaims::from_json(
            with(json!({
                "email": "old@example.com", "email_verified": true, "name": "Old",
                "groups": ["token-group"],
            }))
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let original = claims.clone();

        let stranger =
            UserInfo::from_json(br#"{"sub":"someone-else","email":"x@example.com"}"#).unwrap();
        assert!(!claims.merge_userinfo(stranger));
        assert!(!claims.merge_userinfo(UserInfo::from_json(b"{}").unwrap()));
        assert_eq!(claims, original);

        let info = UserInfo::from_json(
            br#"{"sub":"248289761001","email":"new@example.com","email_verified":"False",
                 "name":"","preferred_username":"alice","groups":"admins","extra":1}"#,
        )
        .unwrap();
        assert!(claims.merge_userinfo(info));
        assert_eq!(claims.profile.email.as_deref(), Some("new@example.com"));
        assert_eq!(claims.profile.email_verified, Some(false));
        assert_eq!(
            claims.profile.name.as_deref(),
            Some("Old"),
            "empty values do not win"
        );
        assert_eq!(claims.profile.preferred_username.as_deref(), Some("alice"));
        assert_eq!(claims.profile.groups, Some(vec!["admins".to_owned()]));

        // Without a groups claim in userinfo, the token's groups stay.
        let mut claims = original.clone();
        assert!(claims.merge_userinfo(UserInfo::from_json(br#"{"sub":"248289761001"}"#).unwrap()));
        assert_eq!(claims.profile.groups, Some(vec!["token-group".to_owned()]));
        assert_eq!(claims, original);
    }

    #[test]
    fn mutated_payloads_never_panic() {
        let payload = with(json!({
            "aud": [CLIENT, "x"], "groups": ["a"], "email_verified": "true", "nbf": 1.5,
        }))
        .to_string()
        .into_bytes();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..3000 {
            let mut bytes = payload.clone();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = usize::try_from(state % bytes.len() as u64).unwrap();
                bytes[at] = b"\"{}[],:0.e-9tn \\"[usize::try_from(state >> 60).unwrap()];
            }
            if let Ok(claims) = IdClaims::from_json(&bytes) {
                let _ = claims.validate(&expected());
            }
            let _ = UserInfo::from_json(&bytes);
        }
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            ClaimError::WrongIssuer {
                found: "https://a".to_owned(),
                expected: "https://b".to_owned()
            }
            .to_string(),
            "the ID token was issued by \"https://a\", not by the configured issuer \"https://b\""
        );
        assert_eq!(
            ClaimError::MissingClaim("nonce").to_string(),
            "the ID token has no nonce claim, which is required"
        );
    }
}
