//! Prometheus metrics: one registry per server and the handles every layer
//! records into. Knows counters, gauges and histograms; nothing of nodes,
//! routes, clients or the database.
//!
//! - [`Metrics`] builds and registers every metric family once; each part
//!   ([`MapMetrics`], [`DbMetrics`], …) is a cheap clone of handles to it,
//!   passed down by the composition root (`server.rs`) or reached through
//!   `State::metrics`. There is no process-wide registry, so two servers in one
//!   test process count separately.
//! - [`record`] the recording layers: HTTP requests by their matched route, gRPC
//!   calls by method.
//! - [`listener`] the `metrics_listen_addr` router: `GET /metrics` and
//!   `GET /debug/runtime`.
//!
//! Counters and gauges are atomics, resolved to their label values when the
//! handles are built, so recording on a hot path (a map frame, a relayed packet)
//! takes no lock. A histogram observation takes that histogram's own short lock
//! (prometheus-client); histograms sit on request, statement and rebuild paths
//! only. Label values come from fixed lists or the route table, never from a
//! node id or a raw path, so the number of series is bounded.

pub mod listener;
pub mod record;
mod runtime;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// Request latency buckets in seconds: client_golang's default buckets, which
/// Headscale's HTTP histogram used, so dashboards made for it read ours alike.
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Statement buckets: 50 µs to about 1.6 s, doubling.
fn statement_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Rebuild buckets (a policy compile, a change's delivery): 100 µs to about 13 s.
fn rebuild_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

/// Every metric of one server. Cheap to clone: all clones share the registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub map: MapMetrics,
    pub registrations: RegistrationMetrics,
    pub http: HttpMetrics,
    pub grpc: GrpcMetrics,
    pub db: DbMetrics,
    pub relay: RelayMetrics,
    pub policy: PolicyMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A new registry holding every metric, all at zero, and
    /// `headway_build_info{version="…"} 1`.
    pub fn new() -> Metrics {
        let (map, registrations, http, grpc, db, relay, policy) = Default::default();
        let mut registry = Registry::default();
        // Headscale's names where the meaning is the same, so its dashboards work.
        {
            let headscale = registry.sub_registry_with_prefix("headscale");
            MapMetrics::register_headscale(&map, headscale);
            HttpMetrics::register(&http, headscale);
        }
        let headway = registry.sub_registry_with_prefix("headway");
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        headway.register(
            "build_info",
            "The running headway's version (always 1)",
            build_info,
        );
        MapMetrics::register_headway(&map, headway);
        RegistrationMetrics::register(&registrations, headway);
        GrpcMetrics::register(&grpc, headway);
        DbMetrics::register(&db, headway);
        RelayMetrics::register(&relay, headway);
        PolicyMetrics::register(&policy, headway);
        headway.register_collector(Box::new(runtime::RuntimeCollector));
        Metrics {
            registry: Arc::new(registry),
            map,
            registrations,
            http,
            grpc,
            db,
            relay,
            policy,
        }
    }

    /// The whole exposition in the OpenMetrics text format (`# EOF` last).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SentLabels {
    status: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// What kind of frame a map session wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapFrame {
    /// A whole map: the first of a session, one after an overflow, a one-shot map.
    Full,
    /// A queued change (peers, patches, filters, DNS, …).
    Delta,
    KeepAlive,
}

/// Why a streaming map session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client went away, or the server is stopping (the response was dropped).
    Done,
    /// The server ended it: the node was deleted, logged out or expired.
    Removed,
}

/// Map sessions and what they send.
#[derive(Clone, Debug)]
pub struct MapMetrics {
    /// Nodes this server knows (its snapshot), online or not.
    pub nodes: Gauge,
    /// Nodes with at least one open map session on this server.
    pub connected_nodes: Gauge,
    /// Open streaming map sessions (a node reconnecting briefly has two).
    pub sessions_open: Gauge,
    sent: Family<SentLabels, Counter>,
    sent_full: Counter,
    sent_delta: Counter,
    sent_keep_alive: Counter,
    bytes: Family<TypeLabel, Counter>,
    bytes_full: Counter,
    bytes_delta: Counter,
    bytes_keep_alive: Counter,
    endpoint_updates: Family<StatusLabel, Counter>,
    endpoint_updates_ok: Counter,
    endpoint_updates_error: Counter,
    ended: Family<ReasonLabel, Counter>,
    ended_done: Counter,
    ended_removed: Counter,
    /// How long one batch of changes took to plan, encode and queue for every
    /// open session.
    pub dispatch_duration: Histogram,
}

impl Default for MapMetrics {
    fn default() -> Self {
        let sent = Family::<SentLabels, Counter>::default();
        let sent_as = |kind| {
            sent.get_or_create_owned(&SentLabels {
                status: "ok",
                r#type: kind,
            })
        };
        let (sent_full, sent_delta, sent_keep_alive) =
            (sent_as("full"), sent_as("delta"), sent_as("keepalive"));
        let bytes = Family::<TypeLabel, Counter>::default();
        let bytes_as = |kind| bytes.get_or_create_owned(&TypeLabel { r#type: kind });
        let (bytes_full, bytes_delta, bytes_keep_alive) =
            (bytes_as("full"), bytes_as("delta"), bytes_as("keepalive"));
        let endpoint_updates = Family::<StatusLabel, Counter>::default();
        let endpoint_updates_ok =
            endpoint_updates.get_or_create_owned(&StatusLabel { status: "ok" });
        let endpoint_updates_error =
            endpoint_updates.get_or_create_owned(&StatusLabel { status: "error" });
        let ended = Family::<ReasonLabel, Counter>::default();
        let ended_done = ended.get_or_create_owned(&ReasonLabel { reason: "done" });
        let ended_removed = ended.get_or_create_owned(&ReasonLabel { reason: "removed" });
        MapMetrics {
            nodes: Gauge::default(),
            connected_nodes: Gauge::default(),
            sessions_open: Gauge::default(),
            sent,
            sent_full,
            sent_delta,
            sent_keep_alive,
            bytes,
            bytes_full,
            bytes_delta,
            bytes_keep_alive,
            endpoint_updates,
            endpoint_updates_ok,
            endpoint_updates_error,
            ended,
            ended_done,
            ended_removed,
            dispatch_duration: rebuild_histogram(),
        }
    }
}

impl MapMetrics {
    fn register_headscale(&self, registry: &mut Registry) {
        registry.register(
            "nodestore_nodes",
            "Number of nodes in the NodeStore (every node this server knows, online or not)",
            self.nodes.clone(),
        );
        registry.register(
            "mapresponse_sent",
            "Map responses written to clients, by type (full, delta, keepalive)",
            self.sent.clone(),
        );
        registry.register(
            "mapresponse_endpoint_updates",
            "Lite map requests (endpoint updates) received, by whether they were stored",
            self.endpoint_updates.clone(),
        );
        registry.register(
            "mapresponse_ended",
            "Streaming map sessions ended, by reason (done: the client left or the server stopped; removed: the node was deleted or logged out)",
            self.ended.clone(),
        );
    }

    fn register_headway(&self, registry: &mut Registry) {
        registry.register(
            "connected_nodes",
            "Nodes with at least one open map session on this server",
            self.connected_nodes.clone(),
        );
        registry.register(
            "map_sessions_open",
            "Open streaming map sessions",
            self.sessions_open.clone(),
        );
        registry.register(
            "mapresponse_sent_bytes",
            "Bytes of map responses written to clients (framed, as sent), by type",
            self.bytes.clone(),
        );
        registry.register(
            "map_dispatch_duration_seconds",
            "Time to plan, encode and queue one batch of changes for every open map session",
            self.dispatch_duration.clone(),
        );
    }

    /// A map session handed one frame of `bytes` bytes to its connection.
    pub fn sent(&self, kind: MapFrame, bytes: usize) {
        let (count, total) = match kind {
            MapFrame::Full => (&self.sent_full, &self.bytes_full),
            MapFrame::Delta => (&self.sent_delta, &self.bytes_delta),
            MapFrame::KeepAlive => (&self.sent_keep_alive, &self.bytes_keep_alive),
        };
        count.inc();
        total.inc_by(bytes as u64);
    }

    /// A lite update (new endpoints, Hostinfo) arrived; `stored` says whether
    /// it was written.
    pub fn endpoint_update(&self, stored: bool) {
        if stored {
            self.endpoint_updates_ok.inc();
        } else {
            self.endpoint_updates_error.inc();
        }
    }

    pub fn session_ended(&self, why: SessionEnd) {
        match why {
            SessionEnd::Done => self.ended_done.inc(),
            SessionEnd::Removed => self.ended_removed.inc(),
        };
    }
}

/// How a `/machine/register` request asked to join.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterMethod {
    /// With a pre-auth key (`tailscale up --authkey`).
    AuthKey,
    /// Interactively: a new login waiting for an admin or a sign-in, or its
    /// follow-up request.
    Interactive,
    /// A node the server knows, logging back in with its current key.
    Known,
    /// `tailscale logout` (a past expiry).
    Logout,
    /// Refused before the request was read (rate limit, a bad body, an old client).
    Unknown,
}

impl RegisterMethod {
    fn as_str(self) -> &'static str {
        match self {
            RegisterMethod::AuthKey => "authkey",
            RegisterMethod::Interactive => "interactive",
            RegisterMethod::Known => "known",
            RegisterMethod::Logout => "logout",
            RegisterMethod::Unknown => "unknown",
        }
    }
}

/// What a `/machine/register` request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOutcome {
    /// The node is registered (or logged out, for a logout).
    Success,
    /// Handed an auth URL: waiting for an admin or a sign-in.
    Pending,
    /// Refused with a reason the client shows (a bad key, a rejection, an
    /// expired key, an old client, a malformed request).
    Rejected,
    /// Refused past `limits.register_burst` (429).
    RateLimited,
    /// A storage or other internal failure.
    Error,
}

impl RegisterOutcome {
    fn as_str(self) -> &'static str {
        match self {
            RegisterOutcome::Success => "success",
            RegisterOutcome::Pending => "pending",
            RegisterOutcome::Rejected => "rejected",
            RegisterOutcome::RateLimited => "rate_limited",
            RegisterOutcome::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistrationLabels {
    method: &'static str,
    outcome: &'static str,
}

/// `/machine/register` requests by method and outcome.
#[derive(Clone, Debug, Default)]
pub struct RegistrationMetrics {
    outcomes: Family<RegistrationLabels, Counter>,
}

impl RegistrationMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "registrations",
            "Registration requests (/machine/register) by method and outcome",
            self.outcomes.clone(),
        );
    }

    pub fn record(&self, method: RegisterMethod, outcome: RegisterOutcome) {
        self.outcomes
            .get_or_create(&RegistrationLabels {
                method: method.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// How many requests had this method and outcome (tests).
    pub fn count(&self, method: RegisterMethod, outcome: RegisterOutcome) -> u64 {
        self.outcomes
            .get(&RegistrationLabels {
                method: method.as_str(),
                outcome: outcome.as_str(),
            })
            .map_or(0, |c| c.get())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PathLabel {
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub code: u16,
    pub method: &'static str,
    pub path: String,
}

/// HTTP requests on `listen_addr` and inside Noise, by matched route (Headscale
/// 0.28's names: `headscale_http_duration_seconds`, `headscale_http_requests_total`).
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    pub(crate) duration: Family<PathLabel, Histogram>,
    pub(crate) requests: Family<RequestLabels, Counter>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            duration: Family::new_with_constructor(latency_histogram),
            requests: Family::default(),
        }
    }
}

impl HttpMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_duration_seconds",
            "Time until the response headers of HTTP requests, by route (a streaming map's body is not counted)",
            self.duration.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests, by status code, method and route",
            self.requests.clone(),
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabel {
    pub method: &'static str,
}

/// Admin API calls (Unix socket and TCP), by gRPC method.
#[derive(Clone, Debug)]
pub struct GrpcMetrics {
    pub(crate) duration: Family<MethodLabel, Histogram>,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        GrpcMetrics {
            duration: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl GrpcMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_duration_seconds",
            "Time until the response headers of admin API calls, by gRPC method",
            self.duration.clone(),
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OnLabel {
    on: &'static str,
}

/// Database statements, by where they ran.
#[derive(Clone, Debug)]
pub struct DbMetrics {
    family: Family<OnLabel, Histogram>,
    /// Statements on a reading connection.
    pub read: Histogram,
    /// Single statements on a writing connection.
    pub write: Histogram,
    /// Statements inside a write transaction (and its commit).
    pub transaction: Histogram,
}

impl Default for DbMetrics {
    fn default() -> Self {
        let family = Family::<OnLabel, Histogram>::new_with_constructor(statement_histogram);
        let on = |on| family.get_or_create_owned(&OnLabel { on });
        let (read, write, transaction) = (on("read"), on("write"), on("transaction"));
        DbMetrics {
            family,
            read,
            write,
            transaction,
        }
    }
}

impl DbMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "db_statement_duration_seconds",
            "Time to run one database statement to its end, by where it ran (read, write, transaction)",
            self.family.clone(),
        );
    }
}

/// Why the relay dropped a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayDrop {
    /// The receiver's queue was full: its oldest packet was dropped.
    QueueFull,
    /// No connected client has the destination key.
    UnknownDestination,
}

/// The embedded DERP relay.
#[derive(Clone, Debug)]
pub struct RelayMetrics {
    /// Logged-in relay connections (a key connected twice counts twice).
    pub clients: Gauge,
    /// Packets queued for a connected receiver.
    pub forwarded: Counter,
    /// Bytes of those packets.
    pub forwarded_bytes: Counter,
    dropped: Family<ReasonLabel, Counter>,
    dropped_queue_full: Counter,
    dropped_unknown: Counter,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        let dropped = Family::<ReasonLabel, Counter>::default();
        let dropped_queue_full = dropped.get_or_create_owned(&ReasonLabel {
            reason: "queue_full",
        });
        let dropped_unknown = dropped.get_or_create_owned(&ReasonLabel {
            reason: "unknown_dest",
        });
        RelayMetrics {
            clients: Gauge::default(),
            forwarded: Counter::default(),
            forwarded_bytes: Counter::default(),
            dropped,
            dropped_queue_full,
            dropped_unknown,
        }
    }
}

impl RelayMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "relay_clients",
            "Logged-in connections to the embedded DERP relay",
            self.clients.clone(),
        );
        registry.register(
            "relay_packets_forwarded",
            "Packets the embedded relay queued for a connected receiver",
            self.forwarded.clone(),
        );
        registry.register(
            "relay_bytes_forwarded",
            "Bytes of the packets the embedded relay queued for a connected receiver",
            self.forwarded_bytes.clone(),
        );
        registry.register(
            "relay_packets_dropped",
            "Packets the embedded relay dropped, by reason (queue_full: a slow receiver's oldest packet; unknown_dest: no such client connected)",
            self.dropped.clone(),
        );
    }

    pub fn dropped(&self, why: RelayDrop) {
        match why {
            RelayDrop::QueueFull => self.dropped_queue_full.inc(),
            RelayDrop::UnknownDestination => self.dropped_unknown.inc(),
        };
    }
}

/// The access policy.
#[derive(Clone, Debug)]
pub struct PolicyMetrics {
    /// How long compiling the policy for the current tailnet took (each rebuild
    /// of the view maps are built from).
    pub compile_duration: Histogram,
}

impl Default for PolicyMetrics {
    fn default() -> Self {
        PolicyMetrics {
            compile_duration: rebuild_histogram(),
        }
    }
}

impl PolicyMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "policy_compile_duration_seconds",
            "Time to compile the access policy for the current users and nodes (each rebuild of the view maps are built from)",
            self.compile_duration.clone(),
        );
    }
}

/// Observes the time since `start` in seconds.
pub fn observe_since(histogram: &Histogram, start: std::time::Instant) {
    observe(histogram, start.elapsed());
}

pub fn observe(histogram: &Histogram, took: Duration) {
    histogram.observe(took.as_secs_f64());
}

#[cfg(test)]
pub(crate) mod tests;
