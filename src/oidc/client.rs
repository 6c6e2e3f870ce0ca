//! The relying party: the provider's discovery document, its signing keys (kept
//! by the JWKS rules: as long as `Cache-Control: max-age` allows, fetched again
//! for a key id not seen yet), the sign-ins in progress (`state`, `nonce`, PKCE
//! verifier), the code exchange and the userinfo request.

use super::claims::{Expected, IdClaims, UserInfo};
use super::jwt::{self, JwtError, KeySet};
use super::waiting::Waiting;
use super::{OidcError, Refusal};
use crate::config::{Oidc, PkceMethod};
use crate::fetch;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a sign-in may take from the redirect to the callback (Headscale's 15 minutes).
pub const LOGIN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Sign-ins in progress at once; past it the oldest is forgotten.
pub const MAX_LOGINS: usize = 1024;
/// Every request to the provider is answered within this, or fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A discovery document, a JWKS or a token response is at most this large.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Keys without a `max-age` are kept this long.
const DEFAULT_KEYS_AGE: Duration = Duration::from_secs(60 * 60);
/// A token signed with an unknown key fetches the keys again at most this often.
const MIN_KEYS_REFRESH: Duration = Duration::from_secs(10);
/// After a failed discovery, the next sign-in tries again no sooner than this.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);
/// A sign-in starts with a fresh look at the discovery document, unless another
/// one looked this recently (so a burst of clicks asks the provider once).
const LIVENESS: Duration = Duration::from_secs(1);
/// Clock difference tolerated between headway and the provider.
const LEEWAY_SECS: i64 = 120;

/// What `<issuer>/.well-known/openid-configuration` says, as headway uses it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// A sign-in between the redirect to the provider and its callback.
#[derive(Clone, Debug)]
pub struct Login {
    /// What the sign-in is for (the waiting registration's id).
    pub purpose: String,
    nonce: String,
    verifier: Option<String>,
}

/// Where to send the browser, and the `state` it will come back with.
#[derive(Clone, Debug)]
pub struct Redirect {
    pub url: String,
    pub state: String,
}

/// The last discovery document, and how the last try to fetch it went.
#[derive(Default)]
struct DiscoverySlot {
    document: Option<Arc<Discovery>>,
    attempted: Option<Instant>,
    answered: bool,
}

struct Keys {
    set: Option<Arc<KeySet>>,
    fetched: Option<Instant>,
    max_age: Duration,
}

/// The provider headway signs people in with (`oidc.*`).
pub struct Client {
    settings: Oidc,
    redirect_uri: String,
    http: reqwest::Client,
    discovery: tokio::sync::Mutex<DiscoverySlot>,
    keys: tokio::sync::Mutex<Keys>,
    logins: Waiting<String, Login>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("oidc::Client")
            .field("issuer", &self.settings.issuer)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `settings`, whose callback is `<server_url>/oidc/callback`.
    /// Nothing is fetched yet: see [`Client::discover`].
    pub fn new(settings: Oidc, server_url: &str) -> Result<Self, OidcError> {
        // Redirects from the provider's API are not followed (nor needed).
        let http = fetch::client(REQUEST_TIMEOUT, fetch::Redirects::Refuse).map_err(|why| {
            OidcError::Unreachable {
                issuer: settings.issuer.clone(),
                why,
            }
        })?;
        Ok(Self {
            redirect_uri: format!("{}/oidc/callback", server_url.trim_end_matches('/')),
            settings,
            http,
            discovery: tokio::sync::Mutex::new(DiscoverySlot::default()),
            keys: tokio::sync::Mutex::new(Keys {
                set: None,
                fetched: None,
                max_age: DEFAULT_KEYS_AGE,
            }),
            logins: Waiting::new(LOGIN_LIFETIME, MAX_LOGINS),
        })
    }

    pub fn settings(&self) -> &Oidc {
        &self.settings
    }

    /// `<server_url>/oidc/callback`, the redirect URI to register at the provider.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The discovery document: the one fetched last, or (none yet) fetched now;
    /// a failure is remembered for a few seconds before the next try.
    pub async fn discover(&self) -> Result<Arc<Discovery>, OidcError> {
        {
            let slot = self.discovery.lock().await;
            if let Some(found) = &slot.document {
                return Ok(found.clone());
            }
        }
        self.discover_within(DISCOVERY_RETRY).await
    }

    /// The discovery document as the provider serves it now (fetched again unless
    /// the last try is younger than `age`): a sign-in starts only while the
    /// provider answers, so a person whose provider is down gets a page that says
    /// so instead of a browser error.
    async fn discover_within(&self, age: Duration) -> Result<Arc<Discovery>, OidcError> {
        let mut slot = self.discovery.lock().await;
        if let Some(at) = slot.attempted
            && at.elapsed() < age
        {
            return match (&slot.document, slot.answered) {
                (Some(found), true) => Ok(found.clone()),
                _ => Err(self.unreachable("it did not answer a moment ago".into())),
            };
        }
        slot.attempted = Some(Instant::now());
        match self.fetch_discovery().await {
            Ok(found) => {
                let found = Arc::new(found);
                slot.document = Some(found.clone());
                slot.answered = true;
                Ok(found)
            }
            Err(err) => {
                slot.answered = false;
                Err(err)
            }
        }
    }

    async fn fetch_discovery(&self) -> Result<Discovery, OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
        let found: Discovery = serde_json::from_slice(&body)
            .map_err(|e| self.unreachable(format!("{url} is not a discovery document: {e}")))?;
        if found.issuer.trim_end_matches('/') != self.settings.issuer.trim_end_matches('/') {
            return Err(self.unreachable(format!(
                "its discovery document names the issuer {:?}, not {:?}: check oidc.issuer",
                found.issuer, self.settings.issuer
            )));
        }
        for (what, url) in [
            ("authorization_endpoint", &found.authorization_endpoint),
            ("token_endpoint", &found.token_endpoint),
            ("jwks_uri", &found.jwks_uri),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(self.unreachable(format!(
                    "its discovery document's {what} {url:?} is not an http(s) URL"
                )));
            }
        }
        Ok(found)
    }

    /// Starts a sign-in for `purpose`: the provider's authorization URL with
    /// `state`, `nonce`, the scopes, `oidc.extra_params` and, with PKCE, the
    /// code challenge.
    pub async fn begin(&self, purpose: &str) -> Result<Redirect, OidcError> {
        let discovery = self.discover_within(LIVENESS).await?;
        let state = random_token();
        let nonce = random_token();
        let verifier = self.settings.pkce.map(|_| random_token());
        let url = authorization_url(
            &discovery.authorization_endpoint,
            &self.settings,
            &self.redirect_uri,
            &state,
            &nonce,
            verifier.as_deref(),
        )
        .map_err(|e| self.unreachable(format!("its authorization_endpoint is not a URL: {e}")))?;
        self.logins.insert(
            state.clone(),
            Login {
                purpose: purpose.to_owned(),
                nonce,
                verifier,
            },
        );
        Ok(Redirect { url, state })
    }

    /// The sign-in `state` names, removed: a `state` is good for one callback,
    /// within [`LOGIN_LIFETIME`].
    pub fn take_login(&self, state: &str) -> Option<Login> {
        self.logins.take(state)
    }

    /// Exchanges the callback's `code`, verifies the ID token (signature by the
    /// provider's keys, issuer, audience, expiry, nonce) and adds what the
    /// userinfo endpoint says.
    pub async fn finish(&self, login: &Login, code: &str) -> Result<IdClaims, OidcError> {
        let discovery = self.discover().await?;
        let tokens = self.exchange(&discovery, login, code).await?;
        let payload = self.verify_signature(&discovery, &tokens.id_token).await?;
        let mut claims = IdClaims::from_json(&payload)
            .map_err(|e| OidcError::BadToken(format!("its claims do not parse: {e}")))?;
        claims
            .validate(&Expected {
                issuer: &self.settings.issuer,
                client_id: &self.settings.client_id,
                nonce: &login.nonce,
                now: chrono::Utc::now().timestamp(),
                leeway_secs: LEEWAY_SECS,
            })
            .map_err(|e| OidcError::BadToken(e.to_string()))?;
        if let (Some(endpoint), Some(access)) = (&discovery.userinfo_endpoint, &tokens.access_token)
        {
            match self.userinfo(endpoint, access).await {
                Ok(info) => {
                    if !claims.merge_userinfo(info) {
                        tracing::warn!(
                            "the provider's userinfo is about another subject; only the ID token's claims are used"
                        );
                    }
                }
                Err(err) => tracing::warn!(
                    error = %err,
                    "could not read the provider's userinfo; only the ID token's claims are used"
                ),
            }
        }
        Ok(claims)
    }

    async fn exchange(
        &self,
        discovery: &Discovery,
        login: &Login,
        code: &str,
    ) -> Result<TokenResponse, OidcError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
        ];
        if let Some(verifier) = &login.verifier {
            form.push(("code_verifier", verifier));
        }
        let secret = &self.settings.client_secret;
        let basic = !secret.is_empty()
            && discovery
                .token_endpoint_auth_methods_supported
                .as_ref()
                .is_none_or(|m| m.iter().any(|m| m == "client_secret_basic") || m.is_empty());
        if !basic {
            form.push(("client_id", &self.settings.client_id));
            if !secret.is_empty() {
                form.push(("client_secret", secret));
            }
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request = self
            .http
            .post(&discovery.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body);
        if basic {
            // RFC 6749 2.3.1: both parts form-encoded before base64.
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", encode(&self.settings.client_id), encode(secret));
            request = request.header(
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ),
            );
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.unreachable(fetch::error_chain(&e)))?;
        let status = response.status();
        let body = read_body(response).await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            let error: ProviderError = serde_json::from_slice(&body).unwrap_or_default();
            return Err(OidcError::Refused(match error.error.as_str() {
                "invalid_client" | "unauthorized_client" => {
                    Refusal::ClientRejected(error.describe())
                }
                _ => Refusal::CodeRejected(if error.error.is_empty() {
                    format!("HTTP {status}")
                } else {
                    error.describe()
                }),
            }));
        }
        let tokens: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| OidcError::BadToken(format!("the token response does not parse: {e}")))?;
        Ok(tokens)
    }

    /// The token's payload once its signature checks out with the provider's
    /// keys; an unknown key id fetches the keys again (rate-limited) and retries.
    async fn verify_signature(
        &self,
        discovery: &Discovery,
        token: &str,
    ) -> Result<Vec<u8>, OidcError> {
        let mut keys = self.keys.lock().await;
        let stale = keys.fetched.is_none_or(|at| at.elapsed() >= keys.max_age);
        if keys.set.is_none() || stale {
            self.refresh_keys(discovery, &mut keys).await?;
        }
        let set = keys.set.clone().expect("fetched above");
        match jwt::verify(token, &set) {
            Err(JwtError::UnknownKey(_))
                if keys
                    .fetched
                    .is_none_or(|at| at.elapsed() >= MIN_KEYS_REFRESH) =>
            {
                self.refresh_keys(discovery, &mut keys).await?;
                let set = keys.set.clone().expect("fetched above");
                jwt::verify(token, &set).map_err(|e| OidcError::BadToken(e.to_string()))
            }
            other => other.map_err(|e| OidcError::BadToken(e.to_string())),
        }
    }

    async fn refresh_keys(&self, discovery: &Discovery, keys: &mut Keys) -> Result<(), OidcError> {
        let response = self
            .http
            .get(&discovery.jwks_uri)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| self.unreachable(fetch::error_chain(&e)))?;
        let max_age = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(DEFAULT_KEYS_AGE);
        let status = response.status();
        let body = read_body(response).await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(self.unreachable(format!(
                "its keys ({}) answered HTTP {status}",
                discovery.jwks_uri
            )));
        }
        let set = KeySet::parse(&body).map_err(|e| {
            self.unreachable(format!(
                "its keys ({}) are unusable: {e}",
                discovery.jwks_uri
            ))
        })?;
        keys.set = Some(Arc::new(set));
        keys.fetched = Some(Instant::now());
        keys.max_age = max_age;
        Ok(())
    }

    async fn userinfo(&self, endpoint: &str, access_token: &str) -> Result<UserInfo, String> {
        let response = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| fetch::error_chain(&e))?;
        let status = response.status();
        let body = read_body(response).await?;
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        // A signed (JWT) userinfo answer is not read; the ID token still counts.
        UserInfo::from_json(&body).map_err(|e| format!("not JSON claims: {e}"))
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, OidcError> {
        let response = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| self.unreachable(fetch::error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.unreachable(format!("{url} answered HTTP {status}")));
        }
        read_body(response).await.map_err(|e| self.unreachable(e))
    }

    fn unreachable(&self, why: String) -> OidcError {
        OidcError::Unreachable {
            issuer: self.settings.issuer.clone(),
            why,
        }
    }
}

/// The provider's authorization URL for one sign-in: the code flow with `state`
/// and `nonce`, the scopes, `oidc.extra_params` and, with PKCE, the challenge of
/// `verifier`.
fn authorization_url(
    endpoint: &str,
    settings: &Oidc,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    verifier: Option<&str>,
) -> Result<String, url::ParseError> {
    let mut url = url::Url::parse(endpoint)?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &settings.scope.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce);
        if let (Some(method), Some(verifier)) = (settings.pkce, verifier) {
            query
                .append_pair("code_challenge", &code_challenge(method, verifier))
                .append_pair("code_challenge_method", method.as_str());
        }
        for (name, value) in &settings.extra_params {
            query.append_pair(name, value);
        }
    }
    Ok(url.into())
}

/// RFC 7636's code challenge of `verifier`.
fn code_challenge(method: PkceMethod, verifier: &str) -> String {
    match method {
        PkceMethod::S256 => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier)),
        PkceMethod::Plain => verifier.to_owned(),
    }
}

/// The token endpoint's answer; only the two tokens matter.
#[derive(serde::Deserialize)]
struct TokenResponse {
    id_token: String,
    #[serde(default)]
    access_token: Option<String>,
}

/// RFC 6749's error body.
#[derive(Default, serde::Deserialize)]
struct ProviderError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl ProviderError {
    fn describe(&self) -> String {
        match &self.error_description {
            Some(d) if !d.is_empty() => format!("{} ({d})", self.error),
            _ => self.error.clone(),
        }
    }
}

/// `max-age=N` of a `Cache-Control` header (`no-store`/`no-cache` mean keep
/// nothing: the keys are fetched again next time).
fn max_age(header: &str) -> Option<Duration> {
    let mut age = None;
    for directive in header.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            age = n
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

/// 32 random bytes, base64url: a `state`, `nonce` or PKCE verifier (43 characters,
/// within RFC 7636's 43..=128).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The body of a provider's answer, capped at [`MAX_RESPONSE_BYTES`].
async fn read_body(response: reqwest::Response) -> Result<Vec<u8>, String> {
    fetch::read_capped(response, MAX_RESPONSE_BYTES)
        .await
        .map_err(|err| match err {
            fetch::ReadError::TooLarge => {
                format!("its answer is larger than {MAX_RESPONSE_BYTES} bytes")
            }
            fetch::ReadError::Failed(why) => why,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_url_carries_pkce_and_the_extra_parameters() {
        // base64url(SHA-256(verifier)), unpadded; worked out apart with Python's hashlib.
        let verifier = "dBjftJeZ4CVP-mJ92IZ1ZaZfmSzw3p-0Qr4WEB9ztxs";
        assert_eq!(
            code_challenge(PkceMethod::S256, verifier),
            "s-Yz6a64xoa7mCCxVwC9McNnkZO9uLDVFkANtCmaL-A"
        );
        assert_eq!(code_challenge(PkceMethod::Plain, verifier), verifier);
        let mut settings =
            Oidc::with_defaults("https://idp.example".into(), "headway".into(), "s".into());
        settings.pkce = Some(PkceMethod::Plain);
        settings.extra_params = [("domain_hint".to_owned(), "example.com".to_owned())].into();
        let url = authorization_url(
            "https://idp.example/auth?tenant=1",
            &settings,
            "https://hw.example/oidc/callback",
            "the-state",
            "the-nonce",
            Some(verifier),
        )
        .unwrap();
        let query: Vec<(String, String)> = url::Url::parse(&url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("tenant"), Some("1"), "the endpoint's own query stays");
        assert_eq!(get("response_type"), Some("code"));
        assert_eq!(get("scope"), Some("openid profile email"));
        assert_eq!(
            get("redirect_uri"),
            Some("https://hw.example/oidc/callback")
        );
        assert_eq!(
            (get("state"), get("nonce")),
            (Some("the-state"), Some("the-nonce"))
        );
        assert_eq!(get("code_challenge"), Some(verifier));
        assert_eq!(get("code_challenge_method"), Some("plain"));
        assert_eq!(get("domain_hint"), Some("example.com"));
        settings.pkce = None;
        let url =
            authorization_url("https://idp.example/auth", &settings, "r", "s", "n", None).unwrap();
        assert!(!url.contains("code_challenge"), "{url}");
    }

    #[test]
    fn cache_control_gives_the_keys_age() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(random_token().len(), 43);
    }
}
