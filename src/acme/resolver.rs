//! [`CertResolver`]: the certificate `listen_addr` presents when it comes from
//! ACME. It swaps in renewed certificates without a restart, and answers a
//! TLS-ALPN-01 validation (ALPN `acme-tls/1`) with the challenge certificate.

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The ALPN protocol of a TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The current certificate, and the challenge certificates of validations
/// under way, by host name.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: ArcSwapOption<CertifiedKey>,
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertResolver {
    /// Serves `key` from the next handshake on.
    pub fn set_current(&self, key: Arc<CertifiedKey>) {
        self.current.store(Some(key));
    }

    /// The certificate being served, if there is one yet.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }

    /// Answers TLS-ALPN-01 validations of `host` with `key` until [`Self::clear_challenge`].
    pub fn set_challenge(&self, host: &str, key: Arc<CertifiedKey>) {
        self.challenges().insert(host.to_ascii_lowercase(), key);
    }

    pub fn clear_challenge(&self, host: &str) {
        self.challenges().remove(&host.to_ascii_lowercase());
    }

    fn challenges(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CertifiedKey>>> {
        self.challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validation = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|protocol| protocol == ACME_TLS_ALPN));
        if validation {
            let host = hello.server_name()?.to_ascii_lowercase();
            return self.challenges().get(&host).cloned();
        }
        // None before the first certificate arrives: the handshake fails, as
        // there is nothing trustworthy to present yet.
        self.current.load_full()
    }
}

/// A certificate chain and its private key (PEM) as rustls signs with them.
pub fn certified_key(
    chain_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("private key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| e.to_string())
}

/// The self-signed certificate that answers a TLS-ALPN-01 validation of `host`:
/// `host` as its only name and the SHA-256 digest of the key authorization in
/// the critical `acmeIdentifier` extension.
pub fn alpn_challenge_key(
    host: &str,
    key_authorization_digest: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(
        key_authorization_digest,
    )];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    // Not `CertifiedKey::from_der`: its key check parses the certificate with
    // webpki, which refuses the critical acmeIdentifier extension.
    let signer = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}
