//! headway's integration tests: one binary that spawns the real `headway`
//! server on port 0 in a temp directory and drives it through the CLI, a gRPC
//! client and Headscale's own CLI, as users and tools would.
//!
//! Two tiers. `cargo test` runs the in-process tier: the server, its CLI and
//! its gRPC API, needing nothing installed and no root. The `full-suite`
//! feature (scripts/test, the README's test command) adds the tests that need
//! real clients and tools from scripts/install-test-deps, or root.

#[cfg_attr(not(feature = "full-suite"), allow(dead_code, unused_imports))]
mod support;

mod bench;
mod cli;
mod config_errors;
mod grpc_admin;
mod limits;
mod metrics;
mod pages;
mod persistence;
mod rest_api;
mod rest_api_v2;
mod tidy;

#[cfg(feature = "full-suite")]
mod acme;
#[cfg(feature = "full-suite")]
mod api_v2_client;
#[cfg(feature = "full-suite")]
mod clients;
#[cfg(feature = "full-suite")]
mod dns;
#[cfg(feature = "full-suite")]
mod faults;
#[cfg(feature = "full-suite")]
mod headscale_cli;
#[cfg(feature = "full-suite")]
mod import;
#[cfg(feature = "full-suite")]
mod oidc;
#[cfg(feature = "full-suite")]
mod policy;
#[cfg(feature = "full-suite")]
mod proxies;
#[cfg(feature = "full-suite")]
mod relay;
#[cfg(feature = "full-suite")]
mod replicas;
#[cfg(feature = "full-suite")]
mod rest_compat;
#[cfg(feature = "full-suite")]
mod routes;
#[cfg(feature = "full-suite")]
mod rust_client;
#[cfg(feature = "full-suite")]
mod taildrop;
#[cfg(feature = "full-suite")]
mod web_ui;
