//! headway's integration tests: one binary that spawns the real `headway`
//! server on port 0 in a temp directory and drives it through the CLI, a gRPC
//! client and Headscale's own CLI, as users and tools would.

mod support;

mod acme;
mod bench;
mod cli;
mod clients;
mod config_errors;
mod dns;
mod faults;
mod grpc_admin;
mod headscale_cli;
mod pages;
mod persistence;
mod policy;
mod relay;
mod routes;
mod rust_client;
mod taildrop;
mod tidy;
