//! The embedded relay: a DERP server (`/derp`) for official Tailscale clients,
//! the STUN binding responder, and the TLS certificate DERP needs when headway
//! has no domain.
//!
//! Knows `types` only; who may connect is decided by an [`Admission`] the
//! composition root passes in.

pub mod cert;
pub mod frame;
pub mod routes;
pub mod server;
pub mod stun;
#[cfg(test)]
mod tests;

pub use routes::routes;
pub use server::Relay;

use crate::types::NodeKey;

/// Decides whether a DERP client (identified by its node key) may connect.
pub trait Admission: Send + Sync + 'static {
    /// `true` when `client` may use the relay.
    fn admits(&self, client: &NodeKey) -> bool;
}

/// Admits every client (`verify_clients: false`).
#[derive(Clone, Copy, Debug, Default)]
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn admits(&self, _client: &NodeKey) -> bool {
        true
    }
}
