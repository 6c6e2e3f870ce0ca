//! Sign-in through an identity provider: the user an identity (issuer + subject)
//! belongs to, created at the first login and refreshed at each later one, and the
//! waiting registration it completes.

use super::register::RegistrationId;
use super::{Change, Error, NodeView, Result, State, storage};
use crate::db::NewUser;
use crate::types::{Identity, RegisterMethod, Timestamp, User, UserId, UserName};

/// The provider's name for users created through OIDC (Headscale's spelling).
pub const OIDC_PROVIDER: &str = "oidc";

impl State {
    /// The user `identity` belongs to: the one with the same provider identifier,
    /// with its profile and groups refreshed, or a new user. A user created from
    /// the CLI is never taken over by name or email (as in Headscale 0.26+); when
    /// the name the provider suggests is another user's, the new user gets the
    /// first free `name-2`, `name-3`, ….
    pub async fn sign_in(&self, identity: &Identity) -> Result<(User, Change)> {
        if identity.provider_id.is_empty() {
            return Err(Error::InvalidArgument(
                "the identity provider sent no subject".into(),
            ));
        }
        let _users = self.users_writer.lock().await;
        let users = self.users();
        let existing = users
            .values()
            .find(|u| u.provider == OIDC_PROVIDER && u.provider_id == identity.provider_id)
            .cloned();
        let base = preferred_name(identity);
        let taken = |name: &str| {
            users
                .values()
                .any(|u| u.name.as_str() == name && existing.as_ref().is_none_or(|e| e.id != u.id))
        };
        let name = match &existing {
            // A name of the same stem that it already holds stays.
            Some(user) if is_variant_of(user.name.as_str(), &base) => user.name.clone(),
            _ => unique_name(&base, taken),
        };
        let profile = NewUser {
            name,
            display_name: identity.display_name.trim().to_owned(),
            email: identity.email.trim().to_owned(),
            provider: OIDC_PROVIDER.into(),
            provider_id: identity.provider_id.clone(),
            profile_pic_url: identity.picture.trim().to_owned(),
            groups: normalise_groups(&identity.groups),
            created_at: Self::now(),
        };
        let conflict = |_: &str| format!("user {:?} already exists", profile.name.as_str());
        let Some(old) = existing else {
            let user = self
                .db
                .insert_user(&profile)
                .await
                .map_err(|e| storage(e, || "user not found".into(), conflict))?;
            self.remember_user(user.id, Some(user.clone()));
            tracing::info!(user = %user.name, id = %user.id, "created a user at its first OIDC login");
            // A user with no nodes yet changes no one's view.
            return Ok((user, Change::none()));
        };
        let unchanged = old.name == profile.name
            && old.display_name == profile.display_name
            && old.email == profile.email
            && old.profile_pic_url == profile.profile_pic_url
            && old.groups == profile.groups;
        if unchanged {
            return Ok((old, Change::none()));
        }
        let user = self
            .db
            .update_user_profile(old.id, &profile, Self::now())
            .await
            .map_err(|e| storage(e, || format!("user with id {} not found", old.id), conflict))?;
        self.remember_user(user.id, Some(user.clone()));
        drop(_users);
        let change = self.profile_changed(user.id).await?;
        Ok((user, change))
    }

    /// Registers the machine waiting under `id` to `user`, after a sign-in:
    /// `expiry` is the ID token's when `oidc.use_expiry_from_token`, else
    /// `node.expiry` applies. Returns the node and whether it is new.
    pub async fn complete_sign_in(
        &self,
        id: &RegistrationId,
        user: UserId,
        expiry: Option<Timestamp>,
    ) -> Result<(NodeView, bool, Change)> {
        let reg = self.take_pending(id.as_str()).await?;
        let known = self
            .snapshot()
            .by_machine_key(&reg.machine_key)
            .any(|n| n.user_id == Some(user));
        let (node, change) = self
            .register_pending(reg, user, RegisterMethod::Oidc, expiry)
            .await?;
        Ok((self.node_view(node.id).await?, !known, change))
    }
}

/// The name a new user would like: `preferred_username`, else the email, else
/// the identifier's last part, each only if it is a valid user name.
fn preferred_name(identity: &Identity) -> UserName {
    let subject = identity.provider_id.rsplit('/').next().unwrap_or_default();
    [
        identity.preferred_username.as_str(),
        identity.email.as_str(),
        subject,
    ]
    .into_iter()
    .find_map(|candidate| UserName::parse(candidate).ok())
    .unwrap_or_else(|| UserName::from_trusted("user".into()))
}

/// Whether `name` is `base` or `base-N`.
fn is_variant_of(name: &str, base: &UserName) -> bool {
    name == base.as_str()
        || name
            .strip_prefix(base.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `base`, or the first of `base-2`, `base-3`, … that `taken` does not refuse.
fn unique_name(base: &UserName, taken: impl Fn(&str) -> bool) -> UserName {
    if !taken(base.as_str()) {
        return base.clone();
    }
    (2u32..)
        .map(|n| format!("{base}-{n}"))
        .find(|candidate| !taken(candidate))
        .map(UserName::from_trusted)
        .expect("some suffix is free")
}

/// Trimmed, without empties or repeats, in the provider's order; at most 256
/// groups of at most 256 bytes each are kept.
fn normalise_groups(groups: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in groups.iter().map(|g| g.trim()) {
        if !g.is_empty() && g.len() <= 256 && !out.iter().any(|o| o == g) && out.len() < 256 {
            out.push(g.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fall_back_and_take_suffixes() {
        let id = |pref: &str, email: &str| Identity {
            provider_id: "https://idp.example/abc123".into(),
            preferred_username: pref.into(),
            email: email.into(),
            display_name: String::new(),
            picture: String::new(),
            groups: Vec::new(),
        };
        assert_eq!(
            preferred_name(&id("alice", "a@example.com")).as_str(),
            "alice"
        );
        assert_eq!(
            preferred_name(&id("", "a@example.com")).as_str(),
            "a@example.com"
        );
        assert_eq!(preferred_name(&id("1bad", "")).as_str(), "abc123");
        let alice = UserName::parse("alice").unwrap();
        assert!(is_variant_of("alice-3", &alice));
        assert!(!is_variant_of("alice-x", &alice) && !is_variant_of("alicex", &alice));
        let taken = ["alice", "alice-2"];
        assert_eq!(
            unique_name(&alice, |n| taken.contains(&n)).as_str(),
            "alice-3"
        );
        assert_eq!(
            normalise_groups(&[" a ".into(), "".into(), "a".into(), "b".into()]),
            ["a", "b"]
        );
    }
}
