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

pub mod frame;
pub mod hub;
mod key;
pub mod noise;
mod upgrade;

pub use key::ServerKey;
pub use upgrade::{HANDSHAKE_HEADER, NoisePeer, UPGRADE_PROTOCOL, public_routes};

/// The oldest client served: capability version 113 is Tailscale v1.80, the
/// floor Headscale 0.29 enforces ("the latest 10 minor versions").
pub const MIN_CAPABILITY_VERSION: u16 = 113;

/// Request bodies inside Noise are capped (as Headscale does): any machine key
/// can open a Noise connection, so these requests are unauthenticated.
pub const NOISE_BODY_LIMIT: usize = 1 << 20;

#[cfg(test)]
mod tests;
