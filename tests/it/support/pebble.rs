//! Pebble, Let's Encrypt's ACME test service, on loopback: its directory URL,
//! the CA files its API and its certificates chain to, killed on drop. Built by
//! `scripts/install-test-deps`.

use super::tailscale::{free_port, tools_dir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const VERSION: &str = "v2.10.1";

pub struct Pebble {
    child: Child,
    pub dir: TempDir,
    port: u16,
    management_port: u16,
}

/// Where install-test-deps put Pebble and its certificates.
fn tool_dir() -> PathBuf {
    let dir = tools_dir().join(format!("pebble-{VERSION}"));
    assert!(
        dir.join("pebble").exists() && dir.join("certs/pebble.minica.pem").exists(),
        "Pebble {VERSION} is not installed in {}: run scripts/install-test-deps (it needs Go)",
        dir.display()
    );
    dir
}

impl Pebble {
    /// Starts Pebble; it validates HTTP-01 on `http_port` and TLS-ALPN-01 on
    /// `tls_port` of the name being validated.
    pub fn start(http_port: u16, tls_port: u16) -> Pebble {
        Pebble::start_with(http_port, tls_port, None)
    }

    /// Starts Pebble resolving every name it validates through `dns_server`
    /// (its DNS-01 TXT lookups included).
    pub fn start_with_dns(dns_server: &str) -> Pebble {
        Pebble::start_with(free_port(), free_port(), Some(dns_server))
    }

    fn start_with(http_port: u16, tls_port: u16, dns_server: Option<&str>) -> Pebble {
        let tools = tool_dir();
        let dir = tempfile::Builder::new().prefix("pebble").tempdir().unwrap();
        let (port, management_port) = (free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": tools.join("certs/cert.pem"),
                "privateKey": tools.join("certs/key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("pebble.log")).unwrap();
        let mut command = Command::new(tools.join("pebble"));
        command.arg("-config").arg(&config_path);
        if let Some(dns) = dns_server {
            command.args(["-dnsserver", dns]);
        }
        let child = command
            // No random pauses before validating, and no nonces refused on purpose.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pebble");
        let pebble = Pebble {
            child,
            dir,
            port,
            management_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", management_port)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "pebble did not start:\n{}",
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pebble
    }

    /// The ACME directory URL (`acme_url`).
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The CA of Pebble's own HTTPS API (what an ACME client must trust).
    pub fn api_ca(&self) -> PathBuf {
        tool_dir().join("certs/pebble.minica.pem")
    }

    /// The root that issued certificates chain to (new on every start), saved
    /// as PEM in Pebble's directory.
    pub fn issuing_root(&self) -> PathBuf {
        let path = self.dir.path().join("root.pem");
        let out = Command::new("curl")
            .args(["-fsS", "--cacert"])
            .arg(self.api_ca())
            .arg(format!(
                "https://127.0.0.1:{}/roots/0",
                self.management_port
            ))
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "cannot fetch Pebble's root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&path, out.stdout).unwrap();
        path
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl --cacert root https://localhost:port/path` from this machine, with
/// `localhost` pinned to 127.0.0.1: the status code, or the error curl printed.
pub fn https_get(root: &Path, port: u16, path: &str) -> Result<u16, String> {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(root)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("run curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Pebble behind a TLS proxy that adds what Let's Encrypt's finalize responses
/// carry and Pebble's leave out: a `Location` header naming the order. Go's
/// `x/crypto/acme`, which `tailscale cert` uses, polls that URL while the
/// certificate is issued (golang/go#77704); without it the client posts to "".
/// Everything else passes through untouched, `Host` included, so Pebble's own
/// URLs point at the proxy.
pub struct OrderLocationProxy {
    pub port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl OrderLocationProxy {
    pub fn start(pebble: &Pebble) -> OrderLocationProxy {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let tools = tool_dir();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_file_iter(tools.join("certs/cert.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(tools.join("certs/key.pem")).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(pebble.api_ca()).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = pebble.port;
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, connector) = (acceptor.clone(), connector.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        forward(request, connector.clone(), upstream)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        OrderLocationProxy {
            port,
            runtime: Some(runtime),
        }
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }
}

impl Drop for OrderLocationProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One request to Pebble on its own connection, and its response, with the
/// order's `Location` added to a finalize response.
async fn forward(
    request: hyper::Request<hyper::body::Incoming>,
    connector: tokio_rustls::TlsConnector,
    upstream: u16,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::io::Error> {
    use http_body_util::BodyExt;
    let failed = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(|e| failed(&e))?.to_bytes();
    let order = parts
        .uri
        .path()
        .strip_prefix("/finalize-order/")
        .map(|id| format!("/my-order/{id}"));
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| failed(&e))?;
    tokio::spawn(connection);
    let request = hyper::Request::from_parts(parts, http_body_util::Full::new(body));
    let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
    let (mut parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| failed(&e))?.to_bytes();
    if let Some(order) = order
        && parts.status.is_success()
    {
        let location = format!("https://{host}{order}");
        parts
            .headers
            .insert(hyper::header::LOCATION, location.parse().unwrap());
    }
    Ok(hyper::Response::from_parts(
        parts,
        http_body_util::Full::new(body),
    ))
}
