//! `headway bench-compile`: how long applying a policy to a tailnet of N nodes
//! takes, in process, as the server does on every policy change and every
//! change to who is in the tailnet. The tailnet is synthetic, shaped like the
//! one `scripts/bench-policy` registers: node `i` belongs to user `u{k}` for
//! `k = i % (users + tags) < users`, else carries tag `t{k - users}`.

use crate::policy::{Compiled, Device, Options, Policy, Tailnet};
use crate::types::{NodeId, User, UserId, UserName};
use anyhow::{Context, Result};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What one measurement found.
#[derive(Debug, Serialize)]
pub struct CompileReport {
    pub nodes: usize,
    pub runs: usize,
    pub median_ms: f64,
    pub max_ms: f64,
    /// How many nodes see at least one peer: a check that the policy applied.
    pub nodes_with_peers: usize,
}

/// Compiles the policy at `path` `runs` times for `nodes` nodes.
pub fn measure(
    path: &Path,
    nodes: usize,
    users: usize,
    tags: usize,
    runs: usize,
) -> Result<CompileReport> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading policy file {}", path.display()))?;
    let policy =
        Arc::new(Policy::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
    let (users, devices) = tailnet(nodes, users, tags)?;
    let tailnet = Tailnet {
        users: &users,
        devices: &devices,
    };
    let mut times = Vec::with_capacity(runs.max(1));
    let mut nodes_with_peers = 0;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let compiled = Compiled::new(policy.clone(), tailnet, &Options::default());
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        nodes_with_peers = devices
            .iter()
            .filter(|d| !compiled.peers_of(d.id).is_empty())
            .count();
    }
    times.sort_by(f64::total_cmp);
    Ok(CompileReport {
        nodes,
        runs: times.len(),
        median_ms: times[times.len() / 2],
        max_ms: times[times.len() - 1],
        nodes_with_peers,
    })
}

/// Users `u0`… and `nodes` devices, at 100.64.0.1… and fd7a:115c:a1e0::1….
fn tailnet(nodes: usize, users: usize, tags: usize) -> Result<(Vec<User>, Vec<Device>)> {
    anyhow::ensure!(users + tags > 0, "give at least one user or tag");
    let now = chrono::Utc::now();
    let user_list = (0..users)
        .map(|u| -> Result<User> {
            Ok(User {
                id: UserId(u as u64 + 1),
                name: UserName::parse(&format!("u{u}"))?,
                display_name: String::new(),
                email: String::new(),
                provider: "cli".into(),
                provider_id: String::new(),
                profile_pic_url: String::new(),
                groups: Vec::new(),
                created_at: now,
                updated_at: now,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let base_v4 = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let base_v6 = u128::from("fd7a:115c:a1e0::".parse::<Ipv6Addr>().expect("constant"));
    let devices = (0..nodes)
        .map(|i| {
            let k = i % (users + tags);
            let (user, tags) = if k < users {
                (Some(UserId(k as u64 + 1)), Vec::new())
            } else {
                (None, vec![format!("tag:t{}", k - users)])
            };
            let n = i as u32 + 1;
            Device {
                id: NodeId(u64::from(n)),
                user,
                tags,
                addrs: vec![
                    IpAddr::V4(Ipv4Addr::from(base_v4 + n)),
                    IpAddr::V6(Ipv6Addr::from(base_v6 + u128::from(n))),
                ],
                subnet_routes: Vec::new(),
                exit_node: false,
            }
        })
        .collect();
    Ok((user_list, devices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_tailnet_applies_the_policy_to_every_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.hujson");
        std::fs::write(
            &path,
            r#"{"tagOwners": {"tag:t0": []},
                "acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
                         {"action": "accept", "src": ["u0@"], "dst": ["tag:t0:22"]}]}"#,
        )
        .unwrap();
        let report = measure(&path, 30, 2, 1, 2).unwrap();
        assert_eq!((report.nodes, report.runs), (30, 2));
        // u0's and u1's nodes see their own user's others; tag:t0 nodes see u0's.
        assert_eq!(report.nodes_with_peers, 30);
        assert!(report.median_ms <= report.max_ms);
        let err = measure(&dir.path().join("missing"), 1, 1, 0, 1).unwrap_err();
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
    }
}
