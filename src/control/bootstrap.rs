//! `GET /bootstrap-dns`: addresses of the relay and control host names, for a
//! client whose own DNS cannot resolve them (Tailscale's relays answer it too).
//! Only names of this server's DERP map and `server_url` are resolved, so it
//! is no open resolver.

use super::Control;
use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Debug, Deserialize)]
pub struct BootstrapQuery {
    /// One name to resolve; all of them when absent.
    q: Option<String>,
}

/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /bootstrap-dns[?q=NAME]`: `{"NAME": ["ADDR", …]}`; a name this server
/// does not use is left out.
pub async fn bootstrap_dns(
    State(ctl): State<Control>,
    Query(query): Query<BootstrapQuery>,
) -> Json<BTreeMap<String, Vec<String>>> {
    let mut names: BTreeSet<String> = ctl
        .derp
        .current()
        .regions
        .values()
        .flat_map(|r| &r.nodes)
        .map(|n| n.host_name.to_ascii_lowercase())
        .collect();
    names.insert(ctl.server_url.host().to_owned());
    names.retain(|n| !n.is_empty());
    if let Some(q) = &query.q {
        let q = q.trim_end_matches('.').to_ascii_lowercase();
        names.retain(|n| *n == q);
    }
    let mut out = BTreeMap::new();
    for name in names {
        let lookup = tokio::net::lookup_host((name.as_str(), 0));
        let addrs: BTreeSet<String> = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(addrs)) => addrs.map(|a| a.ip().to_string()).collect(),
            Ok(Err(err)) => {
                tracing::debug!(%name, %err, "bootstrap-dns: lookup failed");
                continue;
            }
            Err(_) => continue,
        };
        out.insert(name, addrs.into_iter().collect());
    }
    Json(out)
}
