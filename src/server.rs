//! The composition root: builds `Db`, `State` and every listener from a
//! `Config`, runs them, and shuts them down together.
//!
//! The only module that imports everything; it owns no rules of its own.

use crate::acme::{Acme, AcmeSettings, Challenge};
use crate::config::Config;
use crate::control::map::MapSettings;
use crate::control::{Control, ServerKey};
use crate::db::Db;
use crate::grpc::AdminApi;
use crate::grpc::auth::ApiKeyLayer;
use crate::relay::cert::Identity;
use crate::relay::server::Relay;
use crate::relay::{Admission, AdmitAll};
use crate::state::{Settings, State};
use crate::types::{NodeKey, PrivateKey};
use anyhow::{Context, Result, bail};
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket, UnixListener, UnixStream};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

/// How long work in progress may take to finish once the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<()> {
    let server = Server::build(config).await?;
    server.run_until_stopped(shutdown_signal()).await
}

/// A built server whose listeners are bound but not yet serving.
pub struct Server {
    state: Arc<State>,
    http: TcpListener,
    http_addr: SocketAddr,
    unix: UnixListener,
    socket_path: PathBuf,
    grpc_tcp: Option<(TcpListener, Option<Arc<rustls::ServerConfig>>)>,
    server_url: String,
    control: Control,
    noise_key: Arc<ServerKey>,
    derp_config: crate::config::Derp,
    /// The embedded relay's own region, when it is in the DERP map.
    relay_region: Option<crate::tailcfg::DERPRegion>,
    /// The certificate `listen_addr` also serves TLS with (files, or the relay's own).
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The embedded DERP relay and its STUN socket, when `derp.server.enabled`.
    relay: Option<(Arc<Relay>, Option<UdpSocket>)>,
    /// ACME certificates (`tls_letsencrypt_hostname`), with the HTTP-01 listener.
    acme: Option<(Arc<Acme>, Option<TcpListener>)>,
    /// The DNS listener for the tailnet's zone (`dns.authoritative`).
    dns: Option<(Arc<crate::dns::Zone>, UdpSocket, TcpListener)>,
    /// `dns.extra_records_path`, watched for changes.
    extra_records_path: Option<PathBuf>,
    /// The connection limits `listen_addr` and TCP gRPC admit through.
    limits: Arc<crate::limits::Limits>,
    /// Health probes of subnet routers that share a prefix (`node.routes.ha`).
    ha_probe: crate::config::HaProbe,
    /// Sign-in through the OIDC provider (`oidc.*`).
    sign_in: Option<Arc<crate::http::oidc::SignIn>>,
    /// `metrics_listen_addr`: `/metrics` and `/debug/runtime`, when set.
    metrics: Option<TcpListener>,
    /// What `/api/v2` reports about the tailnet from the configuration.
    tailnet: crate::api::v2::Tailnet,
    /// `web_ui.enabled`: `/admin` served and sign-in links issued.
    web_ui: bool,
    /// The connection settings the metrics listener's own table starts from.
    metrics_limits: crate::limits::Settings,
}

/// The OIDC provider's client, its discovery document fetched once: a provider
/// that cannot be reached stops start-up when `oidc.only_start_if_oidc_is_available`
/// (the default), else start-up goes on and every sign-in tries again.
async fn connect_oidc(
    oidc: &crate::config::Oidc,
    server_url: &str,
    web_ui: &crate::config::WebUi,
) -> Result<Arc<crate::http::oidc::SignIn>> {
    let client = crate::oidc::client::Client::new(oidc.clone(), server_url)?;
    match client.discover().await {
        Ok(found) => tracing::info!(
            issuer = %found.issuer,
            redirect_uri = client.redirect_uri(),
            "nodes sign in through the OIDC provider"
        ),
        Err(err) if oidc.only_start_if_available => {
            anyhow::bail!(
                "{err}; oidc.only_start_if_oidc_is_available is true, so headway does not start without it (set it to false to start anyway and let sign-ins retry)"
            );
        }
        Err(err) => tracing::warn!(
            "{err}; starting anyway (oidc.only_start_if_oidc_is_available is false): sign-ins will try it again, and nodes can still register with pre-auth keys or from the CLI"
        ),
    }
    let admins = if web_ui.enabled {
        crate::http::oidc::Admins {
            users: web_ui.oidc_admin_users.clone(),
            groups: web_ui.oidc_admin_groups.clone(),
        }
    } else {
        crate::http::oidc::Admins::default()
    };
    Ok(Arc::new(
        crate::http::oidc::SignIn::new(client, server_url).with_admins(admins),
    ))
}

/// Admits relay clients that are current nodes of this server (`verify_clients`).
struct NodeAdmission(Arc<State>);

impl Admission for NodeAdmission {
    fn admits(&self, client: &NodeKey) -> bool {
        self.0.is_current_node_key(client)
    }
}

impl Server {
    /// Opens the database, loads state and binds every listener, so that errors
    /// (a taken port, a bad database path) surface before anything is served.
    pub async fn build(config: Config) -> Result<Server> {
        let noise_key =
            load_or_create_private_key(&config.noise_private_key_path).with_context(|| {
                format!(
                    "noise.private_key_path {}",
                    config.noise_private_key_path.display()
                )
            })?;

        let db = Db::open(&config.database)
            .await
            .context("opening the database")?;
        tracing::info!(backend = db.backend(), database = %config.database.describe(), "database ready");
        let state = Arc::new(State::load(db, Settings::from_config(&config)).await?);
        let status = state.start_policy().await.context("policy")?;
        log_policy_status(&status);
        let sign_in = match &config.oidc {
            Some(oidc) => {
                Some(connect_oidc(oidc, config.server_url.as_str(), &config.web_ui).await?)
            }
            None => None,
        };
        let (host, port) = (
            config.server_url.host().to_owned(),
            config.server_url.port(),
        );
        let identity = load_identity(&config, &host)?;
        let relay = if config.derp.server.enabled {
            Some(build_relay(&config, &state).await?)
        } else {
            None
        };
        let embedded_region = match &relay {
            Some((_, stun)) if config.derp.server.automatically_add_embedded_derp_region => {
                let at = crate::derp::embedded::Endpoint {
                    host,
                    port,
                    pin: identity.as_ref().and_then(|i| i.pin.clone()),
                    stun_port: stun
                        .as_ref()
                        .and_then(|s| s.local_addr().ok())
                        .map(|a| a.port()),
                };
                Some(crate::derp::embedded::region(&config.derp.server, &at))
            }
            _ => None,
        };
        if let Some(region) = &embedded_region {
            // Other replicas on the same database serve this region beside theirs.
            state.announce_relay_region(serde_json::to_string(region)?);
        }
        let derp = crate::derp::load(&config.derp, embedded_region.clone())
            .await
            .context("derp")?;
        let map_settings = MapSettings::from_config(&config);
        if let Some(path) = &config.dns.extra_records_path {
            let records = crate::config::read_extra_records(path)
                .map_err(anyhow::Error::msg)
                .context("dns.extra_records_path")?;
            tracing::info!(path = %path.display(), records = records.len(), "extra DNS records in force (reloaded when the file changes)");
            map_settings
                .extra_records
                .store(Arc::new(crate::control::map::extra_records(&records)));
        }
        let mut control =
            Control::new(state.clone(), derp, map_settings, config.server_url.clone());
        control.register_limit = Arc::new(crate::limits::RateLimit::new(
            config.limits.register_burst,
            config.limits.register_interval,
        ));
        let limits = connection_limits(&config);
        let dns = match &config.dns.authoritative {
            None => None,
            Some(auth) => {
                let challenges = Arc::new(crate::dns::Challenges::new());
                control.acme = Some(Arc::new(crate::control::acme::AcmeRecords::new(
                    challenges.clone(),
                )));
                let zone = crate::dns::Zone {
                    apex: config
                        .dns
                        .base_domain
                        .trim_matches('.')
                        .to_ascii_lowercase(),
                    nameserver: auth.nameserver.clone(),
                    challenges,
                };
                let addr = auth.listen_addr;
                let cannot = || format!("dns.authoritative.listen_addr {addr}: cannot listen");
                let udp = UdpSocket::bind(addr).await.with_context(cannot)?;
                // Port 0 picks one port for both.
                let tcp = TcpListener::bind(udp.local_addr()?)
                    .await
                    .with_context(cannot)?;
                Some((Arc::new(zone), udp, tcp))
            }
        };

        let http = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("listen_addr {}: cannot listen", config.listen_addr))?;
        let http_addr = http.local_addr()?;

        let metrics = match config.metrics_listen_addr {
            None => None,
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("metrics_listen_addr {addr}: cannot listen"))?,
            ),
        };

        let unix = bind_unix_socket(&config.unix_socket, config.unix_socket_permission).await?;

        let acme = build_acme(&config).await?;
        // The certificate listen_addr serves: ACME's, the files', or the relay's own.
        let tls = match &acme {
            Some((acme, _)) => Some(acme.server_config().context("TLS for listen_addr")?),
            None => identity
                .as_ref()
                .map(Identity::server_config)
                .transpose()
                .context("TLS for listen_addr")?,
        };
        let grpc_tcp = match config.grpc_listen_addr {
            None => None,
            Some(addr) => {
                // The server's own certificate (ACME's or the files'), never the
                // relay's self-signed one.
                let tls = tls
                    .as_deref()
                    .filter(|_| config.tls.has_certificate())
                    .map(crate::grpc::tls::for_grpc);
                if tls.is_none() && !config.grpc_allow_insecure {
                    tracing::warn!(
                        %addr,
                        "remote gRPC is off: it needs a certificate (tls_cert_path and tls_key_path, \
                         or tls_letsencrypt_hostname) or grpc_allow_insecure: true; the Unix socket \
                         works as usual"
                    );
                    None
                } else {
                    let listener = TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("grpc_listen_addr {addr}: cannot listen"))?;
                    Some((listener, tls))
                }
            }
        };

        let metrics_limits = crate::limits::Settings {
            // A scraper or two and an admin's curl: a small table of its own, so
            // they never take listen_addr's connections or it theirs.
            max_connections: 64,
            max_pending_per_source: 16,
            ..limits.settings().clone()
        };
        Ok(Server {
            state,
            http,
            http_addr,
            unix,
            socket_path: config.unix_socket.clone(),
            grpc_tcp,
            server_url: config.server_url.as_str().to_owned(),
            control,
            noise_key: Arc::new(ServerKey::from_private(&noise_key)),
            derp_config: config.derp.clone(),
            relay_region: embedded_region,
            tls,
            relay,
            acme,
            dns,
            extra_records_path: config.dns.extra_records_path.clone(),
            limits,
            ha_probe: config.node.ha_probe,
            sign_in,
            metrics,
            metrics_limits,
            web_ui: config.web_ui.enabled,
            tailnet: crate::api::v2::Tailnet {
                base_domain: config.dns.base_domain.trim_end_matches('.').to_owned(),
                https: config.dns.authoritative.is_some(),
                policy_from_file: config.policy.mode == crate::config::PolicyMode::File,
            },
        })
    }

    /// The bound `metrics_listen_addr` (useful with port 0); `None` when off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Serves until `shutdown` completes or a listener fails, then stops every listener.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        // Everything but the listeners: owned, stopped with the server.
        let owned = self.state.tasks().clone();
        let stopped = {
            let owned = owned.clone();
            move || {
                let owned = owned.clone();
                async move { owned.stopping().await }
            }
        };
        // Listeners: the server stops when one fails.
        let mut tasks: JoinSet<Result<()>> = JoinSet::new();
        // Ephemeral clean-up and key-expiry announcements.
        self.state.spawn_lifecycle();
        self.state.spawn_feed();
        // The policy is read again on SIGHUP and when its file changes.
        owned.spawn(watch_policy(self.state.clone()));
        // A changed records file reaches every client; a broken one changes nothing.
        if let Some(path) = self.extra_records_path.clone() {
            owned.spawn(watch_extra_records(self.control.clone(), path));
        }
        if let Some((zone, udp, tcp)) = self.dns {
            tracing::info!(addr = %udp.local_addr()?, zone = %zone.apex, "answering DNS for the tailnet's zone");
            let dns_stop = stopped();
            tasks.spawn(async move {
                crate::dns::serve(zone, udp, tcp, dns_stop).await;
                Ok(())
            });
        }
        // Changes reach map sessions through the dispatcher.
        self.control.spawn_dispatcher();
        // Routers that share a prefix are probed; a silent primary is replaced.
        if self.ha_probe.enabled() {
            owned.spawn(self.control.clone().probe_routers(self.ha_probe));
        }
        // A new DERP map reaches every client as a full map.
        if let Some(refresh) = self
            .control
            .derp
            .spawn_refresh(&self.derp_config, stopped())
        {
            owned.spawn(async move { drop(refresh.await) });
        }
        if self.state.is_replicated() {
            owned.spawn(follow_replica_relays(
                self.state.clone(),
                self.control.derp.clone(),
                self.relay_region.clone(),
            ));
        }
        let mut derp_updates = self.control.derp.subscribe();
        let notify_state = self.state.clone();
        owned.spawn(async move {
            while derp_updates.changed().await.is_ok() {
                notify_state.notifier().publish(crate::state::Change {
                    full: true,
                    ..Default::default()
                });
            }
        });

        let mut control_routes = crate::control::public_routes(
            self.noise_key.clone(),
            self.control.machine_routes(),
            owned.clone(),
        )
        .merge(self.control.bootstrap_routes());
        if let Some((relay, stun)) = self.relay {
            control_routes =
                control_routes.merge(crate::relay::routes::routes(relay, owned.clone()));
            if let Some(stun) = stun {
                tracing::info!(addr = %stun.local_addr()?, "serving STUN");
                let stun_stop = stopped();
                tasks.spawn(async move {
                    crate::relay::stun::serve(stun, stun_stop).await;
                    Ok(())
                });
            }
        }
        if let Some((acme, http01)) = self.acme {
            if let Some(listener) = http01 {
                let addr = listener.local_addr()?;
                let router = acme.http01_router(&self.server_url);
                let http01_stop = stopped();
                // Held to the same connection limits as listen_addr: it is public too.
                let (http01_limits, http01_tasks) = (self.limits.clone(), owned.clone());
                tasks.spawn(async move {
                    crate::http::listener::serve(
                        listener,
                        router,
                        None,
                        http01_limits,
                        &http01_tasks,
                        http01_stop,
                    )
                    .await
                    .context("tls_letsencrypt_listen failed")
                });
                tracing::info!(%addr, "answering ACME HTTP-01 challenges");
            }
            let acme_stop = stopped();
            tasks.spawn(async move {
                tokio::select! {
                    () = acme.run() => {}
                    () = acme_stop => {}
                }
                Ok(())
            });
        }

        if let Some(listener) = self.metrics {
            let addr = listener.local_addr()?;
            let router = crate::metrics::listener::router(self.state.metrics().clone());
            let limits = crate::limits::Limits::new(self.metrics_limits);
            let (metrics_stop, metrics_tasks) = (stopped(), owned.clone());
            // Owned, and not among the listeners whose failure stops the server:
            // control keeps working whatever happens to the metrics.
            owned.spawn_finishing(async move {
                if let Err(err) = crate::http::listener::serve(
                    listener,
                    router,
                    None,
                    limits,
                    &metrics_tasks,
                    metrics_stop,
                )
                .await
                {
                    tracing::error!(%err, "metrics_listen_addr stopped serving");
                }
            });
            tracing::info!(%addr, "serving Prometheus metrics on /metrics");
        }

        let api = AdminApi::new(self.state.clone());
        let unix_stop = stopped();
        let unix_api = api.clone().into_service();
        let own_api = crate::grpc::headway::HeadwayApi::new(self.state.clone(), self.web_ui);
        let (unix, unix_tasks) = (self.unix, owned.clone());
        let unix_own_api = own_api.clone().into_service();
        let grpc_metrics = crate::grpc::metrics_layer(self.state.metrics().grpc.clone());
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .layer(grpc_metrics)
                .add_service(unix_api)
                .add_service(unix_own_api)
                .serve_with_incoming_shutdown(
                    // Go gRPC clients need their `:authority` fixed before h2 sees it.
                    UnixListenerStream::new(unix).map(move |conn| {
                        conn.map(|conn| crate::grpc::authority::relay(conn, &unix_tasks))
                    }),
                    unix_stop,
                )
                .await
                .context("admin socket failed")
        });
        tracing::info!(path = %self.socket_path.display(), "serving the admin API on the Unix socket");

        if let Some((listener, tls)) = self.grpc_tcp {
            let addr = listener.local_addr()?;
            // Admitted, timed and counted like listen_addr's connections.
            let incoming = self.limits.clone().incoming(listener, "gRPC");
            let secure = tls.is_some();
            let incoming = crate::grpc::tls::incoming(incoming, tls, &owned);
            let router = tonic::transport::Server::builder()
                .layer(crate::grpc::metrics_layer(
                    self.state.metrics().grpc.clone(),
                ))
                .layer(crate::limits::TrackRequestsLayer)
                .layer(ApiKeyLayer::new(self.state.clone()))
                .add_service(api.into_service())
                .add_service(own_api.into_service());
            let tcp_stop = stopped();
            tasks.spawn(async move {
                router
                    .serve_with_incoming_shutdown(incoming, tcp_stop)
                    .await
                    .context("remote gRPC listener failed")
            });
            tracing::info!(%addr, tls = secure, "serving the admin API on TCP (API key required)");
        }

        // Last, so that "serving HTTP" (what tests and scripts wait for) comes
        // after every other listener is up and logged.
        let router = crate::http::router(
            self.state.clone(),
            &self.server_url,
            control_routes
                .merge(crate::api::router(self.state.clone(), self.tailnet.clone()))
                .merge(if self.web_ui {
                    crate::admin::router(crate::admin::Ui::new(
                        self.state.clone(),
                        self.control.settings.clone(),
                        self.control.derp.clone(),
                        self.sign_in.as_ref().is_some_and(|s| s.admits_admins()),
                    ))
                } else {
                    axum::Router::new()
                }),
            self.sign_in.clone(),
        );
        let http_stop = stopped();
        let (http, tls) = (self.http, self.tls);
        let secure = tls.is_some();
        let (http_limits, http_tasks) = (self.limits.clone(), owned.clone());
        tasks.spawn(async move {
            crate::http::listener::serve(http, router, tls, http_limits, &http_tasks, http_stop)
                .await
                .context("HTTP listener failed")
        });
        tracing::info!(addr = %self.http_addr, tls = secure, "serving HTTP");

        let outcome = tokio::select! {
            () = shutdown => {
                tracing::info!("shutting down");
                Ok(())
            }
            Some(result) = tasks.join_next() => match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(err),
                Err(join) => Err(anyhow::anyhow!("a listener task panicked: {join}")),
            },
        };
        // Timers, the dispatcher and upgraded connections end at once; HTTP
        // exchanges, admin calls and session records get a bounded grace
        // period, and so do the listeners; then whatever is left is dropped.
        let (left, drained) = tokio::join!(owned.stop(SHUTDOWN_GRACE), async {
            let drain = async { while tasks.join_next().await.is_some() {} };
            tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_ok()
        });
        if !drained {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        if left > 0 || !drained {
            tracing::info!(
                tasks = left,
                "ended work still running after the grace period"
            );
        }
        if std::fs::symlink_metadata(&self.socket_path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&self.socket_path);
        }
        self.state.leave().await;
        outcome
    }
}

/// The connection limits from `limits.*`, with `max_connections` kept below the
/// open-file limit (raised to its hard limit first), so that the database, the
/// admin socket and /health keep their descriptors when clients take the rest.
fn connection_limits(config: &Config) -> Arc<crate::limits::Limits> {
    let l = &config.limits;
    let soft = crate::limits::raise_open_file_limit();
    // No limit at all: the kernel's own per-process cap (nr_open) is about 2^20.
    let fits = crate::limits::connections_within(soft.unwrap_or(1 << 20));
    let configured = usize::try_from(l.max_connections).unwrap_or(usize::MAX);
    let max_connections = match configured {
        0 => fits,
        n if n > fits => {
            tracing::warn!(
                configured = n,
                open_file_limit = soft,
                using = fits,
                "limits.max_connections does not fit under the open-file limit (ulimit -n) with room for the database and the admin socket; raise the limit to allow more"
            );
            fits
        }
        n => n,
    };
    let settings = crate::limits::Settings {
        handshake_timeout: l.handshake_timeout,
        request_timeout: l.request_timeout,
        idle_timeout: l.idle_timeout,
        max_connections,
        max_pending_per_source: usize::try_from(l.max_pending_per_source).unwrap_or(usize::MAX),
        trusted_proxies: config.trusted_proxies.clone(),
    };
    tracing::info!(
        max_connections,
        open_file_limit = soft,
        max_pending_per_source = settings.max_pending_per_source,
        handshake_timeout = ?settings.handshake_timeout,
        request_timeout = ?settings.request_timeout,
        idle_timeout = ?settings.idle_timeout,
        "connection limits"
    );
    crate::limits::Limits::new(settings)
}

/// Reads the key at `path`, or creates it (mode 0600) with its directory.
pub fn load_or_create_private_key(path: &Path) -> Result<PrivateKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = PrivateKey::generate();
            write_private_key(path, &key, false)?;
            tracing::info!(path = %path.display(), "created a new private key");
            Ok(key)
        }
        Err(err) => Err(anyhow::anyhow!("cannot read {}: {err}", path.display())),
    }
}

/// Writes a key file (mode 0600, its directory made if needed, synced to disk): a
/// new file, or with `replace` over whatever is there.
pub fn write_private_key(path: &Path, key: &PrivateKey, replace: bool) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{}\n", key.to_text()).as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// ACME for `tls_letsencrypt_hostname`, with the HTTP-01 listener bound now so a
/// taken port stops start-up.
async fn build_acme(config: &Config) -> Result<Option<(Arc<Acme>, Option<TcpListener>)>> {
    let Some(hostname) = config
        .tls
        .letsencrypt_hostname
        .clone()
        .filter(|h| !h.is_empty())
    else {
        return Ok(None);
    };
    let challenge = match config.tls.letsencrypt_challenge_type {
        crate::config::AcmeChallenge::TlsAlpn01 => Challenge::TlsAlpn01,
        crate::config::AcmeChallenge::Http01 => Challenge::Http01,
    };
    let acme = Acme::new(AcmeSettings {
        hostname,
        directory_url: config.tls.acme_url.clone(),
        email: config.tls.acme_email.clone(),
        cache_dir: config.tls.letsencrypt_cache_dir.clone(),
        challenge,
    })?;
    let http01 = match challenge {
        Challenge::TlsAlpn01 => None,
        Challenge::Http01 => {
            let addr = config.tls.letsencrypt_listen;
            Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("tls_letsencrypt_listen {addr}: cannot listen"))?,
            )
        }
    };
    Ok(Some((acme, http01)))
}

/// The certificate for `listen_addr`: the admin's files, or (for the embedded relay
/// on a plain-HTTP `server_url`) a self-signed one kept beside the relay's key.
fn load_identity(config: &Config, host: &str) -> Result<Option<Identity>> {
    if let (Some(cert), Some(key)) = (&config.tls.cert_path, &config.tls.key_path) {
        return Ok(Some(
            Identity::from_files(cert, key).context("tls_cert_path / tls_key_path")?,
        ));
    }
    let server = &config.derp.server;
    if !server.enabled || config.server_url.is_https() || config.tls.letsencrypt_hostname.is_some()
    {
        // An https:// server_url without files: ACME or a proxy in front holds the
        // certificate.
        return Ok(None);
    }
    let dir = server
        .private_key_path
        .parent()
        .unwrap_or_else(|| Path::new("."));
    let identity = Identity::self_signed(
        &dir.join("derp_server_cert.pem"),
        &dir.join("derp_server_cert.key"),
        host,
    )
    .context("the embedded relay's self-signed certificate")?;
    Ok(Some(identity))
}

/// The embedded relay with its key, and its STUN socket. A taken STUN port stops
/// start-up when the admin turned the relay on, and is only a warning when it is on
/// by default.
async fn build_relay(
    config: &Config,
    state: &Arc<State>,
) -> Result<(Arc<Relay>, Option<UdpSocket>)> {
    let server = &config.derp.server;
    let key = load_or_create_private_key(&server.private_key_path).with_context(|| {
        format!(
            "derp.server.private_key_path {}",
            server.private_key_path.display()
        )
    })?;
    let admission: Arc<dyn Admission> = if server.verify_clients {
        Arc::new(NodeAdmission(state.clone()))
    } else {
        Arc::new(AdmitAll)
    };
    let stun = match server.stun_listen_addr {
        None => None,
        Some(addr) => match UdpSocket::bind(addr).await {
            Ok(socket) => Some(socket),
            Err(err) if server.enabled_by_default => {
                tracing::warn!(
                    %addr, %err,
                    "derp.server.stun_listen_addr: cannot listen; the embedded relay runs without STUN"
                );
                None
            }
            Err(err) => bail!("derp.server.stun_listen_addr {addr}: cannot listen: {err}"),
        },
    };
    tracing::info!(
        region_id = server.region_id,
        verify_clients = server.verify_clients,
        by_default = server.enabled_by_default,
        "embedded DERP relay on"
    );
    Ok((
        Relay::with_metrics(key, admission, state.metrics().relay.clone()),
        stun,
    ))
}

/// Binds the admin socket, replacing a stale socket file but never a live server's.
async fn bind_unix_socket(path: &Path, mode: u32) -> Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("unix_socket: cannot create {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // Only a socket is ever replaced: this path may be a typo for the
        // database or a key file.
        if !meta.file_type().is_socket() {
            bail!(
                "unix_socket {}: exists and is not a socket; refusing to replace it (point unix_socket at a path of its own)",
                path.display()
            );
        }
        if UnixStream::connect(path).await.is_ok() {
            bail!(
                "unix_socket {}: another server is already listening there",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| {
            format!(
                "unix_socket {}: cannot remove the stale socket",
                path.display()
            )
        })?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("unix_socket {}: cannot listen", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(|| {
        format!(
            "unix_socket_permission: cannot apply {mode:o} to {}",
            path.display()
        )
    })?;
    open_way_to_socket(path, mode);
    Ok(listener)
}

/// The group or others that `unix_socket_permission` lets use the socket must be
/// able to pass through its directory (which may be the data directory, made
/// 0700): adds just the search bit they need, and says so.
fn open_way_to_socket(path: &Path, mode: u32) {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return;
    };
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let current = meta.permissions().mode() & 0o7777;
    let mut wanted = current;
    if mode & 0o060 != 0 {
        wanted |= 0o010;
    }
    if mode & 0o006 != 0 {
        wanted |= 0o001;
    }
    if wanted == current {
        return;
    }
    match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(wanted)) {
        Ok(()) => tracing::info!(
            dir = %dir.display(),
            mode = format!("{wanted:o}"),
            "let the users unix_socket_permission admits reach the admin socket"
        ),
        Err(err) => tracing::warn!(
            dir = %dir.display(),
            %err,
            "unix_socket_permission {mode:o} admits users who cannot enter the socket's directory"
        ),
    }
}

/// Completes on SIGINT or SIGTERM.
/// The start-up line saying which policy is in force.
fn log_policy_status(status: &crate::state::PolicyStatus) {
    use crate::state::PolicyStatus;
    match status {
        PolicyStatus::None => tracing::warn!(
            "no access policy (policy.path is empty): every node may reach every node; \
             set policy.path, or policy.mode: database and `headway policy set`, to restrict access"
        ),
        PolicyStatus::File(path) => {
            tracing::info!(path = %path.display(), "access policy in force from file (reloaded on SIGHUP and when it changes)")
        }
        PolicyStatus::Database => tracing::info!("access policy in force from the database"),
        PolicyStatus::DatabaseEmpty => tracing::warn!(
            "policy.mode is database but no policy has been set yet: every node may reach every node \
             until `headway policy set -f FILE`"
        ),
    }
}

/// Reloads the policy on SIGHUP, and (file mode) when the file's contents
/// Serves the other replicas' embedded relays beside this one's (several replicas
/// on one PostgreSQL database), so that two clients on different replicas can
/// relay to each other: what the replicas announced is read at every heartbeat,
/// and a region gone with its replica leaves the map. A region that clashes with
/// this replica's own is left out, with one warning saying what to change.
async fn follow_replica_relays(
    state: Arc<State>,
    derp: crate::derp::DerpMaps,
    own: Option<crate::tailcfg::DERPRegion>,
) {
    let mut warned: std::collections::HashSet<(String, String)> = Default::default();
    let mut tick = tokio::time::interval(crate::state::feed::HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let announced = match state.relay_regions_elsewhere().await {
            Ok(announced) => announced,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the other replicas' relay regions");
                continue;
            }
        };
        let mut regions = Vec::with_capacity(announced.len());
        for (replica, text) in announced {
            let why = match serde_json::from_str::<crate::tailcfg::DERPRegion>(&text) {
                Err(err) => format!("its relay region does not parse: {err}"),
                Ok(region) => {
                    let clash = own
                        .as_ref()
                        .and_then(|own| crate::derp::embedded::clash(own, &region));
                    match clash {
                        Some(why) => why,
                        None => {
                            regions.push((replica, region));
                            continue;
                        }
                    }
                }
            };
            if warned.insert((replica.clone(), why.clone())) {
                tracing::warn!(%replica, "leaving replica {replica}'s relay out of the DERP map: {why}");
            }
        }
        derp.set_replica_regions(regions).await;
    }
}

/// change: a broken policy is logged and the running one stays.
async fn watch_policy(state: Arc<State>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).ok();
    let watched = state.policy_source().path.clone();
    let mut last = watched.as_deref().and_then(file_stamp);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let reason = tokio::select! {
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = tick.tick() => {
                let Some(path) = watched.as_deref() else { continue };
                let now = file_stamp(path);
                if now == last {
                    continue;
                }
                last = now;
                "the policy file changed"
            }
        };
        match state.reload_policy().await {
            Ok(Some(change)) => {
                tracing::info!(reason, "reloaded the access policy");
                state.notifier().publish(change);
            }
            Ok(None) => tracing::debug!(reason, "the access policy is unchanged"),
            Err(e) => {
                tracing::error!(reason, error = %e, "the new access policy was refused; the running one stays")
            }
        }
    }
}

/// When the file changed (modification time or size).
fn file_stamp(path: &Path) -> Option<(Option<std::time::SystemTime>, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

/// Reads `dns.extra_records_path` again whenever it changes and sends the
/// records to every client; a file that does not parse is logged and the
/// records in force stay.
async fn watch_extra_records(control: Control, path: PathBuf) {
    let mut last = file_stamp(&path);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let now = file_stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        match crate::config::read_extra_records(&path) {
            Ok(records) => {
                let records = crate::control::map::extra_records(&records);
                if control.set_extra_records(records) {
                    tracing::info!(path = %path.display(), "reloaded the extra DNS records");
                }
            }
            Err(e) => tracing::error!(
                error = %e,
                "the extra DNS records file was refused; the records in force stay"
            ),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::Server;
    use crate::bench::node::{Node, Target, fetch_server_key};
    use std::sync::Arc;
    use std::time::Duration;

    /// A server started in this process, with its relay on, a node registered
    /// through Noise whose map session stays open, an ephemeral node's
    /// countdown, the dispatcher, the probes and the timers running: once it
    /// stops, every task has ended, the map stream is over, and nothing holds
    /// on to its state.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_server_leaves_no_task_behind() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "server_url: http://127.0.0.1:8080\n\
             listen_addr: 127.0.0.1:0\n\
             noise:\n  private_key_path: {d}/noise.key\n\
             database:\n  sqlite:\n    path: {d}/db.sqlite\n\
             unix_socket: {d}/headway.sock\n\
             derp:\n  server:\n    enabled: true\n    private_key_path: {d}/derp.key\n    stun_listen_addr: 127.0.0.1:0\n",
            d = dir.path().display()
        );
        let config = crate::config::load_from_str(&yaml, "test.yaml", &|_| None)
            .unwrap()
            .config;
        let server = Server::build(config).await.unwrap();
        let addr = server.http_addr();
        let state = Arc::clone(server.state());
        let tasks = state.tasks().clone();
        let (user, _) = state.create_user("default", "", "", "").await.unwrap();
        let key = state
            .create_preauth_key(Some(user.id), true, false, None, &[])
            .await
            .unwrap()
            .secret;
        let ephemeral = state
            .create_preauth_key(Some(user.id), false, true, None, &[])
            .await
            .unwrap()
            .secret;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(server.run_until_stopped(async {
            let _ = stopped.await;
        }));

        let target = Target {
            addr,
            host: "127.0.0.1:8080".into(),
            server_key: fetch_server_key(addr, "127.0.0.1:8080").await.unwrap(),
        };
        let mut node = Node::connect(0, &target, None).await.unwrap();
        node.register(&key).await.unwrap();
        let mut stream = node.stream(41641).await.unwrap();
        // The first map arrives: the session is open.
        use http_body_util::BodyExt;
        stream.frame().await.unwrap().unwrap();
        // An ephemeral node that comes and goes leaves a countdown behind.
        let mut gone = Node::connect(1, &target, None).await.unwrap();
        gone.register(&ephemeral).await.unwrap();
        let mut short = gone.stream(41642).await.unwrap();
        short.frame().await.unwrap().unwrap();
        drop((short, gone));
        let weak = Arc::downgrade(&state);
        drop(state);
        assert!(tasks.len() >= 4, "{} tasks", tasks.len());

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the server stops within its grace period")
            .unwrap()
            .unwrap();
        assert!(
            tasks.is_empty(),
            "{} tasks outlived the server",
            tasks.len()
        );
        // The map stream has ended (the server closed the connection).
        let rest = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = stream.frame().await {}
        })
        .await;
        assert!(rest.is_ok(), "the map stream is still open");
        assert!(
            weak.upgrade().is_none(),
            "something still holds the server's state"
        );
        drop(node);
    }
}
