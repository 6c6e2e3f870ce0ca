//! Certificates from an ACME service (Let's Encrypt unless `acme_url` says
//! otherwise) for `tls_letsencrypt_hostname`: the account and certificate kept
//! in `tls_letsencrypt_cache_dir`, HTTP-01 or TLS-ALPN-01 validation, and renewal
//! a third of the lifetime before expiry, swapped in without a restart.
//!
//! Knows no other module of the crate: the composition root hands in
//! [`AcmeSettings`], serves [`Acme::server_config`] on `listen_addr` and, for
//! HTTP-01, [`Acme::http01_router`] on `tls_letsencrypt_listen`.

pub mod http01;
mod http_client;
pub mod resolver;
pub mod validity;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use resolver::CertResolver;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use validity::Validity;

/// How the ACME service checks that we hold the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// A token fetched over plain HTTP on port 80 (`tls_letsencrypt_listen`).
    Http01,
    /// A special certificate presented on port 443 (`listen_addr`).
    TlsAlpn01,
}

/// What the composition root reads from the config.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// `tls_letsencrypt_hostname`.
    pub hostname: String,
    /// `acme_url`: the directory of the ACME service.
    pub directory_url: String,
    /// `acme_email`, given to the service as a contact when not empty.
    pub email: String,
    /// `tls_letsencrypt_cache_dir`.
    pub cache_dir: PathBuf,
    pub challenge: Challenge,
}

/// Keeps a certificate for one host name, from the cache or the ACME service.
pub struct Acme {
    settings: AcmeSettings,
    resolver: Arc<CertResolver>,
    tokens: Arc<http01::Tokens>,
    provider: Arc<CryptoProvider>,
}

/// The first retry after a failed order; doubled on each failure up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// A renewal check happens at least this often, so a changed clock or a
/// certificate replaced in the cache is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(12 * 3600);
/// How long an order may take to become ready, and its certificate to be issued.
const ORDER_TIMEOUT: Duration = Duration::from_secs(180);

/// The cached account, with the directory it belongs to.
#[derive(Serialize, Deserialize)]
struct CachedAccount {
    directory_url: String,
    credentials: AccountCredentials,
}

impl Acme {
    /// Reads the cached certificate, if there is one for this host name and it
    /// has not expired; nothing is ordered before [`Acme::run`].
    pub fn new(settings: AcmeSettings) -> Result<Arc<Acme>> {
        if settings.hostname.is_empty() {
            bail!("tls_letsencrypt_hostname is empty");
        }
        create_private_dir(&settings.cache_dir)?;
        let acme = Arc::new(Acme {
            resolver: Arc::new(CertResolver::default()),
            tokens: Arc::new(http01::Tokens::default()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            settings,
        });
        match acme.load_cached() {
            Ok(Some(validity)) => tracing::info!(
                host = %acme.settings.hostname,
                not_after = %validity.not_after,
                "serving the cached ACME certificate"
            ),
            Ok(None) => {}
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "ignoring the cached ACME certificate; a new one will be ordered"
            ),
        }
        Ok(acme)
    }

    /// The TLS configuration of `listen_addr`: HTTP/2 and HTTP/1.1 with the ACME
    /// certificate (and `acme-tls/1` for TLS-ALPN-01 validations).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if self.settings.challenge == Challenge::TlsAlpn01 {
            config.alpn_protocols.push(resolver::ACME_TLS_ALPN.to_vec());
        }
        Ok(Arc::new(config))
    }

    /// The router of `tls_letsencrypt_listen` (HTTP-01): challenge tokens, and a
    /// redirect to `https_base` for everything else.
    pub fn http01_router(&self, https_base: &str) -> axum::Router {
        http01::router(Arc::clone(&self.tokens), https_base)
    }

    /// Orders a certificate when there is none or it is due for renewal, forever;
    /// failures are logged and retried with a growing pause.
    pub async fn run(self: Arc<Self>) {
        let mut retry = FIRST_RETRY;
        loop {
            let due = self.renewal_due_in();
            if !due.is_zero() {
                tokio::time::sleep(due.min(MAX_SLEEP)).await;
                continue;
            }
            match self.order().await {
                Ok(validity) => {
                    tracing::info!(
                        host = %self.settings.hostname,
                        not_after = %validity.not_after,
                        "got a certificate from the ACME service"
                    );
                    retry = FIRST_RETRY;
                }
                Err(err) => {
                    tracing::warn!(
                        host = %self.settings.hostname,
                        acme_url = %self.settings.directory_url,
                        error = format!("{err:#}"),
                        retry_in = ?retry,
                        "could not get a certificate from the ACME service"
                    );
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// Zero when a certificate must be ordered now.
    fn renewal_due_in(&self) -> Duration {
        // The certificate being served says when it is due; `serve` accepts only
        // certificates whose validity reads.
        let current = self.resolver.current();
        match current.and_then(|key| Validity::of(key.cert.first()?.as_ref())) {
            None => Duration::ZERO,
            Some(validity) => (validity.renew_at() - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO),
        }
    }

    fn cert_path(&self) -> PathBuf {
        self.settings
            .cache_dir
            .join(format!("{}.crt", self.settings.hostname))
    }

    fn key_path(&self) -> PathBuf {
        self.settings
            .cache_dir
            .join(format!("{}.key", self.settings.hostname))
    }

    fn account_path(&self) -> PathBuf {
        self.settings.cache_dir.join("acme_account.json")
    }

    /// Serves the cached certificate when there is one that has not expired.
    fn load_cached(&self) -> Result<Option<Validity>> {
        let (cert, key) = (self.cert_path(), self.key_path());
        if !cert.exists() || !key.exists() {
            return Ok(None);
        }
        let chain = std::fs::read(&cert).with_context(|| cert.display().to_string())?;
        let private = std::fs::read(&key).with_context(|| key.display().to_string())?;
        let (certified, validity) = self
            .parse(&chain, &private)
            .with_context(|| cert.display().to_string())?;
        self.serve(certified);
        Ok(Some(validity))
    }

    /// A chain and its key as rustls serves them, if the leaf has not expired.
    fn parse(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<(CertifiedKey, Validity)> {
        let certified = resolver::certified_key(chain_pem, key_pem, &self.provider)
            .map_err(anyhow::Error::msg)?;
        let leaf = certified
            .cert
            .first()
            .context("the certificate chain is empty")?;
        let validity = Validity::of(leaf.as_ref()).context("the certificate is not valid DER")?;
        if validity.not_after <= Utc::now() {
            bail!("the certificate expired at {}", validity.not_after);
        }
        Ok((certified, validity))
    }

    /// Serves `certified` from the next handshake on.
    fn serve(&self, certified: CertifiedKey) {
        self.resolver.set_current(Arc::new(certified));
    }

    /// The cached account when it belongs to `acme_url`, or a new one.
    async fn account(&self) -> Result<Account> {
        let path = self.account_path();
        let builder = || -> Result<_> {
            Ok(Account::builder_with_http(Box::new(
                http_client::ReqwestClient::new().context("the ACME HTTP client")?,
            )))
        };
        if let Ok(text) = std::fs::read(&path)
            && let Ok(cached) = serde_json::from_slice::<CachedAccount>(&text)
            && cached.directory_url == self.settings.directory_url
        {
            return builder()?
                .from_credentials(cached.credentials)
                .await
                .context("restoring the cached ACME account");
        }
        let contact = format!("mailto:{}", self.settings.email);
        let contacts: Vec<&str> = if self.settings.email.is_empty() {
            Vec::new()
        } else {
            vec![contact.as_str()]
        };
        let (account, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory_url.clone(),
                None,
            )
            .await
            .with_context(|| format!("creating an account at {}", self.settings.directory_url))?;
        let cached = CachedAccount {
            directory_url: self.settings.directory_url.clone(),
            credentials,
        };
        write_private(&path, &serde_json::to_vec_pretty(&cached)?)?;
        Ok(account)
    }

    /// One order: validate the name, have the certificate issued, keep and serve it.
    async fn order(&self) -> Result<Validity> {
        let account = self.account().await?;
        let host = &self.settings.hostname;
        let identifiers = [Identifier::Dns(host.clone())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .context("placing the order")?;
        let validated = self.validate(&mut order).await;
        let ready = match validated {
            Ok(()) => order
                .poll_ready(&RetryPolicy::new().timeout(ORDER_TIMEOUT))
                .await
                .context("waiting for the validation"),
            Err(err) => Err(err),
        };
        // One order at a time: every token set up is this order's.
        self.tokens.clear();
        self.resolver.clear_challenge(host);
        match ready? {
            OrderStatus::Ready => {}
            status => bail!(
                "the order is {status:?}: the ACME service could not validate {host} with {:?}",
                self.settings.challenge
            ),
        }

        let key = rcgen::KeyPair::generate().context("generating the certificate key")?;
        let csr = rcgen::CertificateParams::new(vec![host.clone()])
            .and_then(|params| params.serialize_request(&key))
            .context("making the certificate request")?;
        order
            .finalize_csr(csr.der())
            .await
            .context("finalizing the order")?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(ORDER_TIMEOUT))
            .await
            .context("downloading the certificate")?;
        let key_pem = key.serialize_pem();
        let (certified, validity) = self
            .parse(chain.as_bytes(), key_pem.as_bytes())
            .context("the issued certificate")?;
        // Kept before it is served, so a restart serves the same certificate.
        write_private(&self.key_path(), key_pem.as_bytes())?;
        write_private(&self.cert_path(), chain.as_bytes())?;
        self.serve(certified);
        Ok(validity)
    }

    /// Sets up the answer to each pending authorization and tells the service
    /// it may check.
    async fn validate(&self, order: &mut instant_acme::Order) -> Result<()> {
        let host = &self.settings.hostname;
        let kind = match self.settings.challenge {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.context("reading an authorization")?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => bail!("the authorization of {host} is {status:?}"),
            }
            let mut challenge = authorization
                .challenge(kind.clone())
                .with_context(|| format!("the ACME service offers no {kind:?} challenge"))?;
            let key_authorization = challenge.key_authorization();
            match self.settings.challenge {
                Challenge::Http01 => {
                    self.tokens.insert(
                        challenge.token.clone(),
                        key_authorization.as_str().to_owned(),
                    );
                }
                Challenge::TlsAlpn01 => {
                    let key = resolver::alpn_challenge_key(
                        host,
                        key_authorization.digest().as_ref(),
                        &self.provider,
                    )
                    .map_err(anyhow::Error::msg)
                    .context("the TLS-ALPN-01 certificate")?;
                    self.resolver.set_challenge(host, key);
                }
            }
            challenge
                .set_ready()
                .await
                .context("telling the ACME service to validate")?;
        }
        Ok(())
    }
}

/// Creates `dir` (mode 0700) if it is missing.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "tls_letsencrypt_cache_dir {}: cannot create it",
                dir.display()
            )
        })
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file and a rename,
/// so a crash never leaves half a key.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("{}: cannot write", partial.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("{}: cannot write", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("{}: cannot replace", path.display()))
}
