//! The TLS certificate the relay (and the HTTPS side of `listen_addr`) presents:
//! the admin's files, or a self-signed certificate kept in the data directory for
//! servers without a domain, which the DERP map pins as `sha256-raw:<hex>`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate chain and its key, ready for a TLS listener.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// `sha256-raw:<hex of the leaf>` when the certificate is self-signed; clients
    /// (v1.82 and later) then verify it by this pin instead of a CA.
    pub pin: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("cannot create a certificate for {host:?}: {message}")]
    Generate { host: String, message: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

fn file_error(path: &Path, message: impl ToString) -> Error {
    Error::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// The first line of a stored self-signed certificate names the host it covers.
const HOST_LINE: &str = "# headway self-signed relay certificate for host: ";

/// The pin a DERP map carries for `leaf`.
pub fn pin(leaf: &CertificateDer<'_>) -> String {
    format!("sha256-raw:{}", hex::encode(Sha256::digest(leaf.as_ref())))
}

impl Identity {
    /// Reads a PEM certificate chain and key (`tls_cert_path`, `tls_key_path`).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Identity, Error> {
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| file_error(cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(cert, e))?;
        if chain.is_empty() {
            return Err(file_error(cert, "no PEM certificate in the file"));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
        Ok(Identity {
            chain,
            key,
            pin: None,
        })
    }

    /// The self-signed certificate for `host` stored at `cert`/`key`, created (key
    /// mode 0600) when missing, unreadable, or made for another host.
    pub fn self_signed(cert: &Path, key: &Path, host: &str) -> Result<Identity, Error> {
        match Self::read_self_signed(cert, key, host) {
            Ok(Some(identity)) => return Ok(identity),
            Ok(None) => {}
            Err(err) => tracing::warn!("{err}; creating a new self-signed certificate"),
        }
        let generated = generate(host).map_err(|e| Error::Generate {
            host: host.to_owned(),
            message: e.to_string(),
        })?;
        let cert_pem = format!("{HOST_LINE}{host}\n{}", generated.cert.pem());
        write_file(key, generated.signing_key.serialize_pem().as_bytes(), 0o600)?;
        write_file(cert, cert_pem.as_bytes(), 0o644)?;
        tracing::info!(path = %cert.display(), host, "created a self-signed relay certificate");
        Self::read_self_signed(cert, key, host)?
            .ok_or_else(|| file_error(cert, "the certificate just written does not read back"))
    }

    /// `Ok(None)` when there is no stored certificate for `host`.
    fn read_self_signed(cert: &Path, key: &Path, host: &str) -> Result<Option<Identity>, Error> {
        let text = match std::fs::read_to_string(cert) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(file_error(cert, err)),
        };
        let stored_host = text.lines().next().and_then(|l| l.strip_prefix(HOST_LINE));
        if stored_host != Some(host) || !key.exists() {
            return Ok(None);
        }
        let mut identity = Identity::from_files(cert, key)?;
        identity.pin = identity.chain.first().map(pin);
        Ok(Some(identity))
    }

    /// A rustls server configuration offering HTTP/2 and HTTP/1.1 (DERP and the
    /// `/ts2021` upgrade use HTTP/1.1).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A self-signed certificate valid for `host` (a DNS name, or an IP address SAN).
fn generate(host: &str) -> Result<rcgen::CertifiedKey<rcgen::KeyPair>, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("headway relay {host}"));
    let signing_key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&signing_key)?;
    Ok(rcgen::CertifiedKey { cert, signing_key })
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    }
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&partial)
        .map_err(|e| file_error(&partial, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| file_error(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_kept_and_pinned_until_the_host_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let first = Identity::self_signed(&cert, &key, "203.0.113.5").unwrap();
        let pin_text = first.pin.clone().unwrap();
        assert!(pin_text.starts_with("sha256-raw:"));
        assert_eq!(pin_text.len(), "sha256-raw:".len() + 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // A restart keeps the certificate, so clients' pins stay valid.
        let again = Identity::self_signed(&cert, &key, "203.0.113.5").unwrap();
        assert_eq!(again.pin.as_deref(), Some(pin_text.as_str()));
        assert!(again.server_config().is_ok());

        // A new server_url host gets a new certificate.
        let moved = Identity::self_signed(&cert, &key, "relay.example.com").unwrap();
        assert_ne!(moved.pin.as_deref(), Some(pin_text.as_str()));
    }

    #[test]
    fn a_damaged_certificate_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, format!("{HOST_LINE}10.0.0.1\nnot pem\n")).unwrap();
        std::fs::write(&key, "nonsense").unwrap();
        let identity = Identity::self_signed(&cert, &key, "10.0.0.1").unwrap();
        assert!(identity.pin.is_some());
    }

    #[test]
    fn files_without_a_certificate_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("empty.pem");
        std::fs::write(&cert, "").unwrap();
        let err = Identity::from_files(&cert, &dir.path().join("none.key")).unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
    }
}
