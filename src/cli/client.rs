//! Connecting to a running server: its Unix socket by default (no authentication),
//! or `cli.address` over TCP with `authorization: Bearer <cli.api_key>` on every call.
//!
//! Knows the config's `unix_socket` and `cli.*` keys and tonic; nothing about commands.

use crate::config::Config;
use crate::grpc::headway::pb::headway_service_client::HeadwayServiceClient;
use crate::grpc::pb::headscale_service_client::HeadscaleServiceClient;
use std::path::{Path, PathBuf};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// The admin API client every command uses.
pub type Client = HeadscaleServiceClient<InterceptedService<Channel, Bearer>>;
/// headway's own calls (`headway.v1`), over the same connection.
pub type OwnClient = HeadwayServiceClient<InterceptedService<Channel, Bearer>>;

/// Both clients of one connection.
pub fn clients(channel: Channel, bearer: Bearer) -> (Client, OwnClient) {
    (
        HeadscaleServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        HeadwayServiceClient::with_interceptor(channel, bearer),
    )
}

/// Adds the API key to each request when talking to a remote address.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The API key itself is never printed.
        f.write_str(if self.0.is_some() {
            "Bearer(***)"
        } else {
            "Bearer(none)"
        })
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Why the CLI cannot talk to the server. The text is what the admin reads.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "cannot reach the headway server on unix socket {}: {reason}\nIs it running? Start it with: {start}",
        path.display()
    )]
    Socket {
        path: PathBuf,
        reason: String,
        start: String,
    },
    #[error(
        "cannot open the headway socket {}: permission denied\nRun the command as a user that may write to it (the server's user, or with sudo).",
        path.display()
    )]
    SocketPermission { path: PathBuf },
    #[error("cannot reach the headway server at {address}: {reason}")]
    Remote { address: String, reason: String },
    #[error(
        "cli.address is set ({address}) but cli.api_key is not: create a key on the server with \"headway apikeys create\" and set cli.api_key (or HEADSCALE_CLI_API_KEY)"
    )]
    MissingApiKey { address: String },
    #[error("invalid cli.address {address:?}: {reason}")]
    BadAddress { address: String, reason: String },
    #[error("cli.api_key contains characters that cannot be sent in a header")]
    BadApiKey,
}

/// Connects as the config says. `config_path` and `prog` only shape the error's hint.
pub async fn connect(
    config: &Config,
    config_path: Option<&Path>,
    prog: &str,
) -> Result<(Channel, Bearer), ConnectError> {
    match config.cli.address.as_deref().filter(|a| !a.is_empty()) {
        None => connect_socket(config, config_path, prog).await,
        Some(address) => connect_remote(config, address).await,
    }
}

async fn connect_socket(
    config: &Config,
    config_path: Option<&Path>,
    prog: &str,
) -> Result<(Channel, Bearer), ConnectError> {
    let path = config.unix_socket.clone();
    let timeout = config.cli.timeout;
    // The URI is required by tonic but unused: the connector below ignores it.
    let endpoint = Endpoint::from_static("http://[::]:50051")
        .connect_timeout(timeout)
        .timeout(timeout);
    let socket = path.clone();
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| {
            if io_kind(&e) == Some(std::io::ErrorKind::PermissionDenied) {
                return ConnectError::SocketPermission { path: path.clone() };
            }
            let start = match config_path {
                Some(file) => format!("{prog} serve -c {}", file.display()),
                None => format!("{prog} serve"),
            };
            ConnectError::Socket {
                path: path.clone(),
                reason: innermost(&e),
                start,
            }
        })?;
    Ok((channel, Bearer(None)))
}

async fn connect_remote(config: &Config, address: &str) -> Result<(Channel, Bearer), ConnectError> {
    let api_key = config
        .cli
        .api_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ConnectError::MissingApiKey {
            address: address.to_owned(),
        })?;
    let bearer: MetadataValue<Ascii> = format!("Bearer {api_key}")
        .parse()
        .map_err(|_| ConnectError::BadApiKey)?;
    // TLS unless the address says `http://` (a server with `grpc_allow_insecure: true`);
    // `cli.insecure` keeps TLS but checks no certificate, as Headscale's CLI does.
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("https://{address}")
    };
    let bad = |reason: String| ConnectError::BadAddress {
        address: address.to_owned(),
        reason,
    };
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| bad(innermost(&e)))?
        .connect_timeout(config.cli.timeout)
        .timeout(config.cli.timeout);
    let remote_error = |e: tonic::transport::Error| ConnectError::Remote {
        address: address.to_owned(),
        reason: innermost(&e),
    };
    let channel = match uri.strip_prefix("https://") {
        Some(rest) if config.cli.insecure => {
            // tonic's own TLS always verifies: TLS comes from our connector, and the
            // endpoint speaks HTTP/2 over what it hands back.
            let endpoint = Endpoint::from_shared(format!("http://{rest}"))
                .map_err(|e| bad(innermost(&e)))?
                .connect_timeout(config.cli.timeout)
                .timeout(config.cli.timeout);
            endpoint
                .connect_with_connector(unverified_tls())
                .await
                .map_err(remote_error)?
        }
        Some(_) => endpoint
            .tls_config(tls_config())
            .map_err(|e| bad(innermost(&e)))?
            .connect()
            .await
            .map_err(remote_error)?,
        None => endpoint.connect().await.map_err(remote_error)?,
    };
    Ok((channel, Bearer(Some(bearer))))
}

/// Connects TCP, then TLS accepting any certificate (`cli.insecure`), offering h2.
fn unverified_tls() -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl Future + Send,
> + Clone
+ Send {
    let config = crate::tls_trust::client_config(crate::tls_trust::Trust::Anything, &[b"h2"])
        .expect("the ring provider supports the default protocol versions");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    tower::service_fn(move |uri: tonic::transport::Uri| {
        let tls = tls.clone();
        async move {
            let invalid =
                |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
            let host = uri
                .host()
                .ok_or_else(|| invalid("the address has no host"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|_| invalid("the address's host is not a valid server name"))?;
            let stream = tls.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        }
    })
}

/// TLS trusting the system's CA bundle (`SSL_CERT_FILE`, else the usual Linux paths).
fn tls_config() -> ClientTlsConfig {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(PathBuf::from),
        );
    let mut tls = ClientTlsConfig::new();
    if let Some(pem) = candidates.into_iter().find_map(|p| std::fs::read(p).ok()) {
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    tls
}

/// The deepest cause, which names what actually failed ("No such file or directory").
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        current = e.source();
    }
    None
}

/// A gRPC error as the admin should read it: the server's message, never a Debug dump.
pub fn status_message(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        status.code().description().to_owned()
    } else {
        status.message().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_hint_names_the_config_file_and_our_own_name() {
        // The plain case (`headway serve`, exit 1) is checked end to end in `cli::tests`.
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            unix_socket: dir.path().join("headway.sock"),
            ..Config::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let text = runtime
            .block_on(connect(
                &config,
                Some(Path::new("/etc/headway/config.yaml")),
                "headscale",
            ))
            .expect_err("nothing listens there")
            .to_string();
        assert!(text.contains("No such file or directory"), "{text}");
        assert!(
            text.ends_with("Start it with: headscale serve -c /etc/headway/config.yaml"),
            "{text}"
        );
    }

    #[test]
    fn remote_address_needs_an_api_key() {
        let mut config = Config::default();
        config.cli.address = Some("headway.example.com:50443".into());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = runtime
            .block_on(connect(&config, None, "headway"))
            .err()
            .unwrap();
        assert!(matches!(err, ConnectError::MissingApiKey { .. }), "{err}");
        assert!(err.to_string().contains("cli.api_key"));
    }

    #[test]
    fn status_errors_print_their_message() {
        let status = tonic::Status::not_found("user not found");
        assert_eq!(status_message(&status), "user not found");
        let bare = tonic::Status::new(tonic::Code::Unimplemented, "");
        assert_eq!(
            status_message(&bare),
            "Operation is not implemented or not supported"
        );
    }
}
