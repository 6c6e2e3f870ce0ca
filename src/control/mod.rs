//! The Tailscale client protocol ("TS2021"): `GET /key`, the `/ts2021` HTTP
//! upgrade, the Noise IK transport and HTTP/2 inside it.
//!
//! - `key.rs` [`ServerKey`], the server's Noise key pair.
//! - [`noise`] the handshake and record layer over any byte stream, both sides;
//!   no HTTP, so tests and the load generator reuse it.
//! - `upgrade.rs` [`public_routes`]: the HTTP side, serving a caller's router inside
//!   each Noise connection with [`NoisePeer`] on every request.
//!
//! - `frame.rs` map-response framing; `hub.rs` the open map sessions.
//!
//! The transport knows keys and bytes; what `/machine/*` requests mean is decided
//! by the routes registered on top of it.

mod dispatch;
pub mod frame;
pub mod hub;
mod key;
pub mod map;
pub mod noise;
mod poll;
mod register;
mod upgrade;

pub use key::ServerKey;
pub use upgrade::{HANDSHAKE_HEADER, NoisePeer, UPGRADE_PROTOCOL, public_routes};

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

use crate::derp::DerpMaps;
use crate::state::{Snapshot, State};
use crate::types::{NodeId, User, UserId};
use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use std::collections::HashMap;
use std::sync::Arc;

/// What the `/machine/*` handlers share; cheap to clone.
#[derive(Clone)]
pub struct Control {
    pub state: Arc<State>,
    pub hub: Arc<hub::Hub>,
    pub derp: DerpMaps,
    pub settings: Arc<map::MapSettings>,
    /// `server_url` without a trailing slash, for auth URLs.
    pub server_url: Arc<str>,
}

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
        server_url: &str,
    ) -> Control {
        Control {
            state,
            hub: Arc::new(hub::Hub::new()),
            derp,
            settings: Arc::new(settings),
            server_url: server_url.trim_end_matches('/').into(),
        }
    }

    /// The routes served inside each Noise connection.
    pub fn machine_routes(&self) -> Router {
        Router::new()
            .route("/machine/register", post(register::register))
            .route("/machine/map", post(poll::map))
            .with_state(self.clone())
    }

    /// Delivers published changes to the open sessions until the process ends.
    pub fn spawn_dispatcher(&self) {
        tokio::spawn(dispatch::run(self.clone()));
    }

    async fn users(&self) -> HashMap<UserId, User> {
        match self
            .state
            .list_users(&crate::state::UserFilter::default())
            .await
        {
            Ok(users) => users.into_iter().map(|u| (u.id, u)).collect(),
            Err(err) => {
                tracing::warn!(%err, "could not read users for a map");
                HashMap::new()
            }
        }
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
        }
    }

    /// A framed full map for `node`, or `None` if it no longer exists.
    async fn full_map(&self, node: NodeId) -> Option<Bytes> {
        let users = self.users().await;
        let snapshot = self.state.snapshot();
        let online = |id| self.state.is_online(id);
        let derp = self.derp.current();
        let message = self.inputs(&snapshot, &users, &online).full(node, &derp)?;
        Some(frame::encode(&map::to_json(&message)))
    }
}

#[cfg(test)]
mod tests;
