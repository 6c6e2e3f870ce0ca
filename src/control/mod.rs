//! The Tailscale client protocol (TS2021): transport, registration and map streaming.

pub mod frame;
pub mod hub;
