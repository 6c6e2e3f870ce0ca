//! headway: a Headscale-compatible Tailscale coordination server.
//!
//! # Layout
//! Modules in reading order; each may import only the ones listed before it
//! (see ARCHITECTURE.md, checked by `tests/it/tidy.rs`).
//! - [`types`]: domain vocabulary (ids, keys, users, nodes, keys, routes). No IO.
//! - [`websocket`]: a WebSocket as a byte stream, for the browser forms of `/ts2021` and `/derp`.
//! - [`tasks`]: owned background tasks, all stopped when the server stops.
//! - [`metrics`]: the Prometheus registry and the handles every layer records into,
//!   and the `metrics_listen_addr` router (`/metrics`, `/debug/runtime`).
//! - [`limits`]: abuse limits on connections: caps, phase timeouts, a registration rate limit.
//! - [`tailcfg`]: Tailscale's JSON wire types (`/key`, register, map, DERP map). No IO.
//! - [`policy`]: the access-control policy language and what it gives each node. Pure.
//! - [`config`]: the YAML + environment configuration, with legacy Headscale keys.
//! - [`oidc`]: single sign-on through an OpenID Connect provider: discovery, keys,
//!   ID tokens and who may sign in.
//! - [`derp`]: the DERP relay map, from `derp.urls` and `derp.paths`, kept up to date.
//! - [`relay`]: the embedded DERP relay and STUN responder, and their TLS certificate.
//! - [`acme`]: certificates from Let's Encrypt or another ACME service, renewed in place.
//! - [`db`]: SQLite storage through sea-query, embedded migrations.
//! - [`state`]: the single coordinator; every mutation returns the `Change` clients must learn.
//! - [`control`]: the Tailscale client protocol: `/key`, the `/ts2021` upgrade, Noise, HTTP/2.
//! - [`bench`]: the load generators (`headway bench`, `headway bench-relay`), clients of any
//!   control server or DERP relay.
//! - [`conformance`]: the policy engine against cases recorded from Tailscale's
//!   control plane.
//! - [`grpc`]: the `headscale.v1` admin API over tonic (Unix socket and TCP).
//! - [`http`]: the public HTTP router (`/health`, later the control protocol).
//! - [`server`]: the composition root that builds and runs everything.
//! - [`cli`]: the `headway` command line, a gRPC client of the server.
//! - [`fetch`]: the HTTP client for documents of other servers (DERP maps, the OIDC
//!   provider): capped reads, errors on one line.
//! - [`tls_trust`]: TLS clients that pin one certificate or (`cli.insecure`) trust any.
//! - `fuzzing`: entry points for the fuzz targets in `fuzz/` (hidden; not used by the server).

pub mod dns;
pub mod fetch;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod tailcfg;
pub mod tasks;
pub mod tls_trust;
pub mod types;
pub mod websocket;

pub mod acme;
pub mod config;
pub mod db;
pub mod derp;
pub mod import;
pub mod oidc;
pub mod relay;
pub mod state;

pub mod control;

pub mod admin;
pub mod api;
pub mod bench;
pub mod conformance;
pub mod grpc;
pub mod http;

pub mod server;

pub mod cli;

#[doc(hidden)]
pub mod fuzzing;
