//! The Tailscale client protocol ("TS2021"): `GET /key`, the `/ts2021` HTTP
//! upgrade, the Noise IK transport and HTTP/2 inside it.
//!
//! - `key.rs` [`ServerKey`], the server's Noise key pair.
//! - [`noise`] the handshake and record layer over any byte stream, both sides;
//!   no HTTP, so tests and the load generator reuse it.
//! - `upgrade.rs` [`public_routes`]: the HTTP side (the `Upgrade:` form and the
//!   WebSocket form of `/ts2021`), serving a caller's router inside each Noise
//!   connection with [`NoisePeer`] on every request.
//!
//! - `frame.rs` map-response framing; `hub.rs` the open map sessions.
//!
//! The transport knows keys and bytes; what `/machine/*` requests mean is decided
//! by the routes registered on top of it.

pub mod acme;
mod bootstrap;
mod dispatch;
pub mod frame;
pub mod hub;
mod key;
mod machine;
pub mod map;
pub mod noise;
pub mod plan;
mod poll;
pub mod probe;
mod register;
mod ssh;
mod upgrade;

pub use key::ServerKey;
pub use upgrade::{
    HANDSHAKE_HEADER, HANDSHAKE_PARAMETER, NoisePeer, UPGRADE_PROTOCOL, public_routes,
};

/// The oldest client served: capability version 113 is Tailscale v1.80, the
/// floor Headscale 0.29 enforces ("the latest 10 minor versions").
/// Older clients still complete the Noise handshake, so that registration can tell
/// them in words (`backend error: …`) to update, where Headscale closes the connection.
pub const MIN_CAPABILITY_VERSION: u16 = 113;

/// Below this, clients do not speak Noise over an arbitrary port (capability 39):
/// their connection is closed after the handshake computation.
pub const MIN_NOISE_VERSION: u16 = 39;

/// Request bodies inside Noise are capped (as Headscale does): any machine key
/// can open a Noise connection, so these requests are unauthenticated.
pub const NOISE_BODY_LIMIT: usize = 1 << 20;

/// The default registration rate limit per source address: 20 attempts at once,
/// then one a second (`limits.register_burst`, `limits.register_interval`).
pub const REGISTER_BURST: u32 = 20;
pub const REGISTER_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

use crate::derp::DerpMaps;
use crate::state::{Snapshot, State};
use crate::types::{NodeId, User, UserId};
use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use std::collections::HashMap;
use std::sync::Arc;

/// An error answer for the client: the status and one line of text (never an
/// empty 200, which clients read as EOF forever).
fn refuse(status: axum::http::StatusCode, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, format!("{message}\n")).into_response()
}

/// A request body that is not the JSON it should be: answered 400 with why.
pub(crate) struct BadRequest(String);

impl axum::response::IntoResponse for BadRequest {
    fn into_response(self) -> axum::response::Response {
        refuse(axum::http::StatusCode::BAD_REQUEST, &self.0)
    }
}

/// A `/machine/*` request body as JSON (`what` names the request: "map",
/// "register", …).
pub(crate) fn parse_request<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, BadRequest> {
    serde_json::from_slice(body).map_err(|err| BadRequest(format!("invalid {what} request: {err}")))
}

/// What the `/machine/*` handlers share; cheap to clone.
#[derive(Clone)]
pub struct Control {
    pub state: Arc<State>,
    pub hub: Arc<hub::Hub>,
    pub derp: DerpMaps,
    pub settings: Arc<map::MapSettings>,
    /// `server_url`, for auth URLs, ping URLs and the bootstrap names.
    pub server_url: Arc<crate::config::ServerUrl>,
    /// ACME challenge records nodes publish, served by the DNS listener
    /// (`dns.authoritative`); `None` when it is off.
    pub acme: Option<Arc<acme::AcmeRecords>>,
    /// Health pings sent to subnet routers and not yet answered.
    pub pings: Arc<probe::Pings>,
    /// Registration attempts per source address (`limits.register_burst`,
    /// `limits.register_interval`); map polls are not counted.
    pub register_limit: Arc<crate::limits::RateLimit>,
    /// Each peer's JSON, serialised once per version of the peer (and per way
    /// a viewer may see it) and shared by every full map (std Mutex: lookups and
    /// inserts only, never across an await).
    peer_json: Arc<std::sync::Mutex<PeerJsonCache>>,
    /// The policy view the open sessions were last told about (dispatcher only).
    last_view: Arc<std::sync::Mutex<Option<Arc<crate::policy::Compiled>>>>,
    /// The view each node's last whole map was built from (its generation), so
    /// the dispatcher does not send it differences it already has.
    session_views: Arc<std::sync::Mutex<HashMap<NodeId, u64>>>,
}

/// How a viewer sees a peer beyond the peer itself: the routes it may use on
/// it, and whether it sees IPv4 addresses.
type PeerVariant = (Vec<ipnet::IpNet>, bool);

/// Serialised peers by node: for each way it is seen, the version it was made
/// from and its JSON.
type PeerJsonCache = HashMap<NodeId, Vec<(PeerVariant, map::PeerVersion, Arc<str>)>>;

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("sessions", &self.hub.session_count())
            .finish_non_exhaustive()
    }
}

impl Control {
    pub fn new(
        state: Arc<State>,
        derp: DerpMaps,
        settings: map::MapSettings,
        server_url: crate::config::ServerUrl,
    ) -> Control {
        Control {
            state,
            hub: Arc::new(hub::Hub::new()),
            derp,
            settings: Arc::new(settings),
            server_url: Arc::new(server_url),
            acme: None,
            pings: Arc::default(),
            register_limit: Arc::new(crate::limits::RateLimit::new(
                REGISTER_BURST,
                REGISTER_INTERVAL,
            )),
            peer_json: Arc::default(),
            last_view: Arc::default(),
            session_views: Arc::default(),
        }
    }

    /// The routes served inside each Noise connection.
    pub fn machine_routes(&self) -> Router {
        let routes = Router::new()
            .route("/machine/register", post(register::register))
            .route("/machine/map", post(poll::map))
            .route(
                "/machine/ssh/action/{src}/to/{dst}",
                axum::routing::get(ssh::action),
            )
            .route("/machine/set-dns", post(machine::set_dns))
            .route("/machine/audit-log", post(machine::audit_log))
            .route(
                probe::PING_RESPONSE_PATH,
                axum::routing::get(probe::ping_response),
            )
            .fallback(machine::not_implemented)
            .with_state(self.clone());
        // Requests inside Noise count beside listen_addr's, by route.
        crate::metrics::record::instrument_http(routes, self.state.metrics().http.clone())
    }

    /// Puts new extra DNS records in force and tells every client; `false`
    /// when they are the ones in force already.
    pub fn set_extra_records(&self, records: Vec<crate::tailcfg::DNSRecord>) -> bool {
        if **self.settings.extra_records.load() == records {
            return false;
        }
        self.settings.extra_records.store(Arc::new(records));
        self.state.notifier().publish(crate::state::Change::dns());
        true
    }

    /// `/bootstrap-dns`, served beside `/key` and `/ts2021` (outside Noise).
    pub fn bootstrap_routes(&self) -> Router {
        Router::new()
            .route(
                "/bootstrap-dns",
                axum::routing::get(bootstrap::bootstrap_dns),
            )
            .with_state(self.clone())
    }

    /// Delivers published changes to the open sessions until the server stops.
    pub fn spawn_dispatcher(&self) {
        self.state.tasks().spawn(dispatch::run(self.clone()));
    }

    fn inputs<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        users: &'a HashMap<UserId, User>,
        online: &'a dyn Fn(NodeId) -> bool,
    ) -> map::MapInputs<'a> {
        map::MapInputs {
            snapshot,
            users,
            online,
            settings: &self.settings,
            now: chrono::Utc::now(),
            policy: None,
        }
    }

    /// A framed full map for `node`, or `None` if it no longer exists. Peers come
    /// from the JSON cache, so a node joining a tailnet of N costs N lookups, not N
    /// serialisations.
    /// `capver` is the client's capability version, which decides how the DERP map
    /// describes a pinned self-signed relay certificate.
    fn full_map(&self, node: NodeId, capver: u32) -> Option<Bytes> {
        let json = self.full_map_json(node, capver)?;
        Some(frame::encode(&json))
    }

    fn full_map_json(&self, node: NodeId, capver: u32) -> Option<Vec<u8>> {
        let users = self.state.users();
        let snapshot = self.state.snapshot();
        let online = |id| self.state.is_online(id);
        let derp = map::derp_map_for(&self.derp.current(), capver);
        let view = self.state.policy_view();
        if let Some(v) = &view {
            self.session_views
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(node, v.generation());
        }
        let mut inputs = self.inputs(&snapshot, &users, &online);
        inputs.policy = view.as_deref();
        let message = inputs.full_without_peers(node, &derp)?;
        let peers: Vec<Arc<str>> = inputs
            .visible_peers(node)
            .map(|peer| self.peer_json(&inputs, node, peer))
            .collect();
        Some(map::splice_peers(map::to_json(&message), &peers))
    }

    /// `peer` as `viewer` sees it, serialised once per version and variant.
    fn peer_json(
        &self,
        inputs: &map::MapInputs<'_>,
        viewer: NodeId,
        peer: &Arc<crate::types::Node>,
    ) -> Arc<str> {
        let version = inputs.peer_version(peer);
        let variant: PeerVariant = (
            inputs.routes_for(viewer, peer),
            inputs.ipv4_disabled(viewer),
        );
        let cache = || self.peer_json.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entries) = cache().get(&peer.id)
            && let Some((_, _, json)) = entries
                .iter()
                .find(|(v, cached, _)| *v == variant && *cached == version)
        {
            return json.clone();
        }
        let json: Arc<str> = serde_json::to_string(&inputs.peer_for(viewer, peer))
            .expect("nodes always serialise")
            .into();
        let mut cache = cache();
        let entries = cache.entry(peer.id).or_default();
        // Stale versions go; a few variants of the current one may live together.
        entries.retain(|(v, cached, _)| *cached == version && *v != variant);
        entries.push((variant, version, json.clone()));
        json
    }

    /// Drops cached JSON of nodes that no longer exist.
    fn forget_peers(&self, removed: impl IntoIterator<Item = NodeId>) {
        let mut cache = self.peer_json.lock().unwrap_or_else(|e| e.into_inner());
        let mut views = self.session_views.lock().unwrap_or_else(|e| e.into_inner());
        for id in removed {
            cache.remove(&id);
            views.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests;
