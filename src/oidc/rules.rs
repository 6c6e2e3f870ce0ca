//! Who may sign in (`oidc.allowed_groups`, `allowed_domains`, `allowed_users`,
//! `email_verified_required`, in Headscale's order), and the identity a verified
//! ID token gives.

use super::Refusal;
use super::claims::IdClaims;
use crate::config::Oidc;
use crate::types::{Identity, provider_identifier};

/// Applies the allow rules to a verified token's claims and returns the identity
/// to sign in. An email is trusted (for the rules, and kept on the user) when it
/// is verified or `email_verified_required` is off.
pub fn admit(settings: &Oidc, claims: &IdClaims) -> Result<Identity, Refusal> {
    let groups = claims.profile.groups.clone().unwrap_or_default();
    if !settings.allowed_groups.is_empty()
        && !settings.allowed_groups.iter().any(|g| groups.contains(g))
    {
        return Err(Refusal::Group);
    }
    let email = claims.profile.email.clone().unwrap_or_default();
    let trusted = !settings.email_verified_required || claims.profile.email_verified == Some(true);
    let email_rules = !settings.allowed_domains.is_empty() || !settings.allowed_users.is_empty();
    if email_rules && !trusted {
        return Err(Refusal::UnverifiedEmail(email));
    }
    if !settings.allowed_domains.is_empty() {
        let domain = email.rsplit_once('@').map(|(_, d)| d);
        if !domain.is_some_and(|d| settings.allowed_domains.iter().any(|a| a == d)) {
            return Err(Refusal::Domain(email));
        }
    }
    if !settings.allowed_users.is_empty() && !settings.allowed_users.contains(&email) {
        return Err(Refusal::User(email));
    }
    let kept_email = if trusted && looks_like_email(&email) {
        email
    } else {
        String::new()
    };
    Ok(Identity {
        provider_id: provider_identifier(&claims.iss, &claims.sub),
        preferred_username: claims
            .profile
            .preferred_username
            .clone()
            .unwrap_or_default(),
        email: kept_email,
        display_name: claims.profile.name.clone().unwrap_or_default(),
        picture: claims.profile.picture.clone().unwrap_or_default(),
        groups,
    })
}

/// `local@domain` with nothing odd in it: enough to keep it as the user's email.
fn looks_like_email(text: &str) -> bool {
    text.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !text
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>\"".contains(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Oidc {
        Oidc::with_defaults("https://idp.example".into(), "headway".into(), "s".into())
    }

    fn claims(email: &str, verified: bool, groups: &[&str]) -> IdClaims {
        let json = serde_json::json!({
            "iss": "https://idp.example/", "sub": "abc", "aud": "headway", "exp": 1, "nonce": "n",
            "email": email, "email_verified": verified,
            "groups": groups, "preferred_username": "alice", "name": "Alice A",
        });
        IdClaims::from_json(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn allow_rules_admit_and_refuse_as_headscale_does() {
        let mut s = settings();
        let ok = admit(&s, &claims("alice@example.com", true, &["eng"])).unwrap();
        assert_eq!(ok.provider_id, "https://idp.example/abc");
        assert_eq!(ok.email, "alice@example.com");
        assert_eq!(ok.groups, ["eng"]);
        // Without rules an unverified email is not refused, only not kept.
        let unverified = admit(&s, &claims("alice@example.com", false, &[])).unwrap();
        assert_eq!(unverified.email, "");

        s.allowed_domains = vec!["example.com".into()];
        assert!(admit(&s, &claims("bob@example.com", true, &[])).is_ok());
        assert_eq!(
            admit(&s, &claims("bob@evil.example", true, &[])),
            Err(Refusal::Domain("bob@evil.example".into()))
        );
        assert_eq!(
            admit(&s, &claims("bob@example.com", false, &[])),
            Err(Refusal::UnverifiedEmail("bob@example.com".into()))
        );
        s.email_verified_required = false;
        assert!(admit(&s, &claims("bob@example.com", false, &[])).is_ok());

        s.allowed_users = vec!["alice@example.com".into()];
        assert_eq!(
            admit(&s, &claims("bob@example.com", true, &[])),
            Err(Refusal::User("bob@example.com".into()))
        );
        s.allowed_groups = vec!["eng".into()];
        assert_eq!(
            admit(&s, &claims("alice@example.com", true, &["ops"])),
            Err(Refusal::Group)
        );
        assert!(admit(&s, &claims("alice@example.com", true, &["ops", "eng"])).is_ok());
    }
}
