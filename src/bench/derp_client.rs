//! A DERP client for the relay benchmark: dials any DERP server (headway's
//! embedded relay or Tailscale's `derper`) over TCP or TLS, upgrades `GET /derp`,
//! logs in with a fresh key, and hands back the frame reader and writer.
//!
//! TLS trusts exactly one certificate, read from a PEM file (the relay's
//! self-signed certificate), so the benchmark needs no CA and no domain.

use crate::relay::frame::{
    self, ClientInfo, FrameError, FrameReader, FrameType, FrameWriter, KEY_LEN, MAGIC,
    PROTOCOL_VERSION,
};
use crate::types::{NodeKey, PrivateKey};
use anyhow::{Context, Result, bail, ensure};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A byte stream to the relay, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub type Reader = FrameReader<ReadHalf<Box<dyn Io>>>;
pub type Writer = FrameWriter<WriteHalf<Box<dyn Io>>>;

/// The longest upgrade response head read before giving up.
const MAX_RESPONSE_HEAD: usize = 8 << 10;

/// Where and how to reach one relay.
#[derive(Clone)]
pub struct Dialer {
    addr: SocketAddr,
    host: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// A logged-in DERP connection.
pub struct Client {
    pub key: NodeKey,
    pub reader: Reader,
    pub writer: Writer,
}

impl Dialer {
    /// A dialer for `url` (`http://host:port` or `https://host:port`; the path is
    /// always `/derp`). `https` needs `cert`, the one certificate to trust.
    pub async fn new(url: &str, cert: Option<&Path>) -> Result<Dialer> {
        let parsed = url::Url::parse(url).with_context(|| format!("--url {url}"))?;
        let host = parsed
            .host_str()
            .with_context(|| format!("--url {url}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed
            .port_or_known_default()
            .with_context(|| format!("--url {url}: no port"))?;
        let tls = match parsed.scheme() {
            "http" => None,
            "https" => {
                let cert = cert.with_context(|| {
                    format!("--url {url} is https: --cert must name the relay's certificate (PEM)")
                })?;
                let name = ServerName::try_from(host.clone())
                    .with_context(|| format!("--url {url}: {host:?} is not a host name"))?;
                Some((connector(cert)?, name))
            }
            other => bail!("--url {url}: the scheme must be http or https, not {other}"),
        };
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("--url {url}: cannot resolve {host}"))?
            .next()
            .with_context(|| format!("--url {url}: {host} has no address"))?;
        Ok(Dialer { addr, host, tls })
    }

    /// Connects, upgrades to DERP and logs in with `private`; returns once the
    /// relay's ServerInfo has arrived, so the relay can route to this key.
    pub async fn login(&self, private: &PrivateKey) -> Result<Client> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let mut io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .context("TLS handshake with the relay")?,
            ),
        };
        let request = format!(
            "GET /derp HTTP/1.1\r\nHost: {}\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\
             User-Agent: headway-bench\r\n\r\n",
            self.host
        );
        io.write_all(request.as_bytes()).await?;
        io.flush().await?;
        let head = read_response_head(&mut io).await?;
        let status = head.lines().next().unwrap_or_default();
        ensure!(
            status.split(' ').nth(1) == Some("101"),
            "the relay did not switch to DERP: {status:?}"
        );
        log_in(io, private).await
    }
}

/// The DERP login on a stream that already speaks DERP (after the `Upgrade:
/// DERP` exchange, or inside a WebSocket): reads the relay's key, sends the
/// sealed ClientInfo and returns once the ServerInfo has arrived.
pub async fn log_in(io: Box<dyn Io>, private: &PrivateKey) -> Result<Client> {
    let (read_half, write_half) = tokio::io::split(io);
    let mut reader = FrameReader::new(read_half);
    let mut writer = FrameWriter::new(write_half);
    let server = match reader.read_frame().await? {
        Some((FrameType::SERVER_KEY, greeting)) => greeting
            .strip_prefix(&MAGIC)
            .and_then(|rest| rest.first_chunk::<KEY_LEN>())
            .map(|key| NodeKey::from_bytes(*key))
            .context("the relay's greeting has no DERP magic and key")?,
        Some((other, _)) => bail!("the relay greeted with {other:?}, not ServerKey"),
        None => bail!("the relay hung up before its greeting"),
    };
    let info = ClientInfo {
        version: Some(i64::from(PROTOCOL_VERSION)),
        ..ClientInfo::default()
    };
    let sealed = frame::seal_client_info(private, &server, &info)?;
    writer
        .write_frame(FrameType::CLIENT_INFO, &[&sealed])
        .await?;
    writer.flush().await?;
    loop {
        match reader.read_frame().await {
            Ok(Some((FrameType::SERVER_INFO, payload))) => {
                frame::open_server_info(private, &server, payload)?;
                break;
            }
            // A relay may say something first (e.g. Health); nothing else
            // is expected before the ServerInfo.
            Ok(Some(_)) => continue,
            // Over TLS a relay that hangs up without close_notify ends the
            // stream "in the middle of a frame".
            Ok(None) | Err(FrameError::Truncated) => {
                bail!("the relay hung up after the ClientInfo: it refused this client")
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(Client {
        key: frame::public_key(private),
        reader,
        writer,
    })
}

/// Reads the HTTP response head byte by byte, so no DERP byte after it is taken.
async fn read_response_head(io: &mut Box<dyn Io>) -> Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(
            head.len() < MAX_RESPONSE_HEAD,
            "the relay's HTTP response head is over {MAX_RESPONSE_HEAD} bytes"
        );
        let byte = io
            .read_u8()
            .await
            .context("the relay hung up during the HTTP upgrade")?;
        head.push(byte);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A TLS connector trusting only the certificate in `path`.
fn connector(path: &Path) -> Result<TlsConnector> {
    let cert = CertificateDer::from_pem_file(path)
        .with_context(|| format!("--cert {}: no PEM certificate", path.display()))?;
    let config =
        crate::tls_trust::client_config(crate::tls_trust::Trust::Only(cert), &[b"http/1.1"])?;
    Ok(TlsConnector::from(Arc::new(config)))
}
