//! OAuth clients of `/api/v2` and their access tokens: a client is made with
//! scopes and tags (its secret shown once), trades its credentials for a
//! short-lived token (client-credentials grant), and the token authenticates
//! calls with a subset of the client's scopes.

use super::keys::{NewCredential, validate_tags};
use super::{Error, Result, State};
use crate::types::oauth::{self, Access, OAuthClient, OAuthToken, Resource, Scope};
use crate::types::secret::{PrefixedSecret, digests_match};
use crate::types::{OAuthClientId, Timestamp};
use std::time::Duration;

/// How long an access token lives, as Tailscale's do.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// An access token just issued: its text (shown once) and what it grants.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub token: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Timestamp,
}

/// What an authenticated token may do.
#[derive(Clone, Debug)]
pub struct TokenGrant {
    pub scopes: Vec<Scope>,
    /// The client's tags: those it may give to keys it makes.
    pub tags: Vec<String>,
}

impl State {
    /// Makes an OAuth client. A client that may make auth keys needs tags, as in
    /// Tailscale: the keys it makes are tagged with them.
    pub async fn create_oauth_client(
        &self,
        scopes: &[String],
        tags: &[String],
        description: &str,
    ) -> Result<NewCredential<OAuthClient>> {
        let scopes = oauth::parse_scopes(scopes.iter().map(String::as_str))
            .map_err(Error::InvalidArgument)?;
        let tags = validate_tags(tags)?;
        let makes_keys = oauth::allows(&scopes, Scope::new(Resource::AuthKeys, Access::Write));
        if makes_keys && tags.is_empty() {
            return Err(Error::InvalidArgument(
                "an OAuth client with the auth_keys scope needs at least one tag: the keys it makes are tagged".into(),
            ));
        }
        if description.chars().count() > 50 {
            return Err(Error::InvalidArgument(
                "description is longer than 50 characters".into(),
            ));
        }
        let secret = PrefixedSecret::generate(OAuthClient::KIND);
        let client = OAuthClient {
            id: OAuthClientId(0),
            prefix: secret.prefix.clone(),
            hash: secret.digest(),
            scopes,
            tags,
            description: description.to_owned(),
            created_at: Self::now(),
        };
        let record = self.db.insert_oauth_client(&client).await?;
        Ok(NewCredential {
            record,
            secret: secret.reveal(),
        })
    }

    pub async fn list_oauth_clients(&self) -> Result<Vec<OAuthClient>> {
        Ok(self.db.list_oauth_clients().await?)
    }

    /// The client whose client id (its prefix) is `client_id`.
    pub async fn find_oauth_client(&self, client_id: &str) -> Result<OAuthClient> {
        self.db
            .find_oauth_client(client_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("OAuth client {client_id:?} not found")))
    }

    /// Deletes a client; its tokens stop working at once.
    pub async fn delete_oauth_client(&self, id: OAuthClientId) -> Result<()> {
        self.db.delete_oauth_client(id).await.map_err(|e| match e {
            crate::db::Error::NotFound(_) => {
                Error::NotFound(format!("OAuth client with id {id} not found"))
            }
            other => other.into(),
        })
    }

    /// The client-credentials grant: checks the client's secret and issues a
    /// token for `requested` scopes (all of the client's when empty), each of
    /// which the client must hold.
    pub async fn issue_oauth_token(
        &self,
        client_id: &str,
        secret: &str,
        requested: &[String],
    ) -> Result<IssuedToken> {
        let invalid = || Error::Unauthenticated("invalid client credentials".into());
        let parsed = PrefixedSecret::parse(OAuthClient::KIND, secret).ok_or_else(invalid)?;
        if !client_id.is_empty() && client_id != parsed.prefix {
            return Err(invalid());
        }
        let client = self
            .db
            .find_oauth_client(&parsed.prefix)
            .await?
            .ok_or_else(invalid)?;
        if !digests_match(&client.hash, &parsed.digest()) {
            return Err(invalid());
        }
        let scopes = if requested.iter().all(|s| s.trim().is_empty()) {
            client.scopes.clone()
        } else {
            let wanted = oauth::parse_scopes(requested.iter().map(String::as_str))
                .map_err(Error::InvalidArgument)?;
            if let Some(extra) = wanted.iter().find(|w| !oauth::allows(&client.scopes, **w)) {
                return Err(Error::PermissionDenied(format!(
                    "the client does not hold the scope {extra}"
                )));
            }
            wanted
        };
        let token = PrefixedSecret::generate(OAuthToken::KIND);
        let now = Self::now();
        let expires_at = now + TOKEN_LIFETIME;
        let record = OAuthToken {
            prefix: token.prefix.clone(),
            hash: token.digest(),
            client_id: client.id,
            scopes: scopes.clone(),
            expires_at,
        };
        self.db.insert_oauth_token(&record, now).await?;
        Ok(IssuedToken {
            token: token.reveal(),
            scopes,
            expires_at,
        })
    }

    /// What a Bearer access token grants; refused when unknown, expired or its
    /// client was deleted.
    pub async fn authenticate_oauth_token(&self, text: &str) -> Result<TokenGrant> {
        let invalid = || Error::Unauthenticated("invalid access token".into());
        let parsed = PrefixedSecret::parse(OAuthToken::KIND, text).ok_or_else(invalid)?;
        let token = self
            .db
            .find_oauth_token(&parsed.prefix)
            .await?
            .ok_or_else(invalid)?;
        if !digests_match(&token.hash, &parsed.digest()) {
            return Err(invalid());
        }
        if token.is_expired(Self::now()) {
            return Err(Error::Unauthenticated(
                "access token expired: ask /api/v2/oauth/token for a new one".into(),
            ));
        }
        let client = self
            .db
            .get_oauth_client(token.client_id)
            .await?
            .ok_or_else(invalid)?;
        Ok(TokenGrant {
            scopes: token.scopes,
            tags: client.tags,
        })
    }
}

/// Whether `text` has the form of an access token (rather than an API key).
pub fn is_oauth_token(text: &str) -> bool {
    PrefixedSecret::parse(OAuthToken::KIND, text).is_some()
}
