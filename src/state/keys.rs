//! Pre-auth keys and admin API keys: creation (the secret is shown once),
//! expiry, deletion and authentication against the stored digest.

use super::{Error, Result, State, storage};
use crate::db::{NewApiKey, NewPreAuthKey};
use crate::types::secret::{Match, PrefixedSecret, Presented};
use crate::types::{ApiKey, ApiKeyId, PreAuthKey, PreAuthKeyId, Timestamp, UserId};

/// A freshly created credential: the stored record and the full secret text,
/// which is never available again.
#[derive(Clone, Debug)]
pub struct NewCredential<T> {
    pub record: T,
    pub secret: String,
}

/// Checks ACL tag syntax: `tag:` followed by letters, digits, `-` or `_`.
pub(crate) fn validate_tags(tags: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        let name = tag.strip_prefix("tag:").ok_or_else(|| {
            Error::InvalidArgument(format!(
                "tag {tag:?} must start with \"tag:\", e.g. tag:server"
            ))
        })?;
        let valid = !name.is_empty()
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "tag {tag:?} is not valid: after \"tag:\" use a letter, then letters, digits, '-' or '_'"
            )));
        }
        if !out.iter().any(|t| t == tag) {
            out.push(tag.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Accepts `hskey-api-<prefix>-***`, `hskey-api-<prefix>`, a full key, or the bare
/// prefix; and an older Headscale key, `<prefix>.<secret>` or `<prefix>.***`.
fn api_prefix(text: &str) -> &str {
    let text = text.trim();
    if let Some((prefix, _)) = text.split_once('.')
        && !text.starts_with("hskey-")
    {
        return prefix;
    }
    let rest = text.strip_prefix("hskey-api-").unwrap_or(text);
    let rest = rest.strip_suffix("-***").unwrap_or(rest);
    let len = crate::types::secret::PREFIX_LEN;
    if rest.len() > len && rest.as_bytes()[len] == b'-' {
        &rest[..len]
    } else {
        rest
    }
}

impl State {
    /// Creates a pre-auth key for `user`, or a tagged key owned by no user.
    pub async fn create_preauth_key(
        &self,
        user: Option<UserId>,
        reusable: bool,
        ephemeral: bool,
        expiration: Option<Timestamp>,
        tags: &[String],
    ) -> Result<NewCredential<PreAuthKey>> {
        let tags = validate_tags(tags)?;
        match user {
            Some(id) => {
                self.get_user(id).await?;
            }
            None if tags.is_empty() => {
                return Err(Error::InvalidArgument(
                    "a pre-auth key needs a user (--user) or at least one tag (--tags tag:x)"
                        .into(),
                ));
            }
            None => {}
        }
        let secret = PrefixedSecret::generate(PrefixedSecret::AUTH);
        let new = NewPreAuthKey {
            user_id: user,
            prefix: secret.prefix.clone(),
            hash: secret.digest(),
            reusable,
            ephemeral,
            tags,
            expiration,
            created_at: Self::now(),
        };
        let record = self.db.insert_preauth_key(&new).await?;
        Ok(NewCredential {
            record,
            secret: secret.reveal(),
        })
    }

    pub async fn list_preauth_keys(&self) -> Result<Vec<PreAuthKey>> {
        Ok(self.db.list_preauth_keys().await?)
    }

    pub async fn expire_preauth_key(&self, id: PreAuthKeyId) -> Result<()> {
        self.db
            .expire_preauth_key(id, Self::now())
            .await
            .map_err(|e| {
                storage(
                    e,
                    || format!("pre-auth key with id {id} not found"),
                    |c| c.to_owned(),
                )
            })
    }

    pub async fn delete_preauth_key(&self, id: PreAuthKeyId) -> Result<()> {
        self.db.delete_preauth_key(id).await.map_err(|e| {
            storage(
                e,
                || format!("pre-auth key with id {id} not found"),
                |c| c.to_owned(),
            )
        })
    }

    /// The usable pre-auth key that `text` names, or why it cannot be used.
    pub async fn authenticate_preauth_key(&self, text: &str) -> Result<PreAuthKey> {
        let invalid = || {
            Error::Unauthenticated("invalid pre-auth key: it is not known to this server".into())
        };
        let presented = Presented::auth_key(text).ok_or_else(invalid)?;
        let key = self
            .db
            .find_preauth_key_by_prefix(&presented.prefix)
            .await?
            .ok_or_else(invalid)?;
        match check(&presented, &key.hash).await {
            Match::No => return Err(invalid()),
            Match::Yes => {}
            Match::YesRehash => {
                self.db
                    .set_preauth_key_hash(key.id, &presented.digest())
                    .await?
            }
        }
        key.check_usable(Self::now()).map_err(|refusal| {
            Error::Unauthenticated(format!("pre-auth key refused: {refusal}"))
        })?;
        Ok(key)
    }

    pub async fn create_api_key(
        &self,
        expiration: Option<Timestamp>,
    ) -> Result<NewCredential<ApiKey>> {
        let secret = PrefixedSecret::generate(PrefixedSecret::API);
        let new = NewApiKey {
            prefix: secret.prefix.clone(),
            hash: secret.digest(),
            expiration,
            created_at: Self::now(),
        };
        let record = self.db.insert_api_key(&new).await?;
        Ok(NewCredential {
            record,
            secret: secret.reveal(),
        })
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        Ok(self.db.list_api_keys().await?)
    }

    /// The API key selected by `id` (non-zero) or by its prefix in any displayed form.
    pub async fn find_api_key(&self, id: Option<ApiKeyId>, prefix: &str) -> Result<ApiKey> {
        match id {
            Some(id) => self
                .list_api_keys()
                .await?
                .into_iter()
                .find(|k| k.id == id)
                .ok_or_else(|| Error::NotFound(format!("API key with id {id} not found"))),
            None if prefix.trim().is_empty() => Err(Error::InvalidArgument(
                "select an API key by --id or --prefix".into(),
            )),
            None => {
                let prefix = api_prefix(prefix);
                self.db
                    .find_api_key_by_prefix(prefix)
                    .await?
                    .ok_or_else(|| {
                        Error::NotFound(format!("API key with prefix {prefix:?} not found"))
                    })
            }
        }
    }

    pub async fn expire_api_key(&self, id: Option<ApiKeyId>, prefix: &str) -> Result<()> {
        let key = self.find_api_key(id, prefix).await?;
        self.db
            .expire_api_key(key.id, Self::now())
            .await
            .map_err(|e| {
                storage(
                    e,
                    || format!("API key with id {} not found", key.id),
                    |c| c.to_owned(),
                )
            })
    }

    pub async fn delete_api_key(&self, id: Option<ApiKeyId>, prefix: &str) -> Result<()> {
        let key = self.find_api_key(id, prefix).await?;
        self.db.delete_api_key(key.id).await.map_err(|e| {
            storage(
                e,
                || format!("API key with id {} not found", key.id),
                |c| c.to_owned(),
            )
        })
    }

    /// The valid, unexpired API key that `text` is, recording its use.
    pub async fn authenticate_api_key(&self, text: &str) -> Result<ApiKey> {
        let invalid = || Error::Unauthenticated("invalid API key".into());
        let presented = Presented::api_key(text).ok_or_else(invalid)?;
        let key = self
            .db
            .find_api_key_by_prefix(&presented.prefix)
            .await?
            .ok_or_else(invalid)?;
        let rehash = match check(&presented, &key.hash).await {
            Match::No => return Err(invalid()),
            Match::Yes => false,
            Match::YesRehash => true,
        };
        let now = Self::now();
        if key.is_expired(now) {
            return Err(Error::Unauthenticated("API key expired".into()));
        }
        if rehash {
            self.db
                .set_api_key_hash(key.id, &presented.digest())
                .await?;
        }
        self.db.touch_api_key(key.id, now).await?;
        Ok(key)
    }
}

/// Checks a presented key against its stored hash; an imported bcrypt hash (tens
/// of milliseconds of CPU) is checked on the blocking pool, off the async workers.
async fn check(presented: &Presented, stored: &str) -> Match {
    if !Presented::is_slow(stored) {
        return presented.check(stored);
    }
    let (presented, stored) = (presented.clone(), stored.to_owned());
    tokio::task::spawn_blocking(move || presented.check(&stored))
        .await
        .unwrap_or(Match::No)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_validated_and_normalised() {
        let tags =
            validate_tags(&["tag:b".into(), "tag:a".into(), "tag:a".into(), " ".into()]).unwrap();
        assert_eq!(tags, vec!["tag:a".to_owned(), "tag:b".to_owned()]);
        assert!(validate_tags(&["server".into()]).is_err());
        assert!(validate_tags(&["tag:".into()]).is_err());
        assert!(validate_tags(&["tag:a b".into()]).is_err());
    }

    #[test]
    fn api_prefixes_in_every_displayed_form() {
        assert_eq!(api_prefix("hskey-api-abcdefghijkl-***"), "abcdefghijkl");
        assert_eq!(api_prefix("hskey-api-abcdefghijkl"), "abcdefghijkl");
        assert_eq!(api_prefix("abcdefghijkl"), "abcdefghijkl");
        assert_eq!(
            api_prefix("hskey-api-abcdefghijkl-SECRETsecret"),
            "abcdefghijkl"
        );
        assert_eq!(api_prefix("abcdefg.***"), "abcdefg");
        assert_eq!(api_prefix("abcdefg.SECRETsecret"), "abcdefg");
    }
}
