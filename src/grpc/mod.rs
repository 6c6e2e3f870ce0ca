//! The `headscale.v1` admin API: a thin tonic adapter over `state`.

/// Generated protobuf types and the tonic client and server for `headscale.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("headscale.v1");
}
