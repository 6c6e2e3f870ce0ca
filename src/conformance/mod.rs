//! Policy conformance with Tailscale's control plane: loads recorded cases (a
//! policy, a tailnet, and what every node of it received from Tailscale), builds
//! the same tailnet in memory, applies the policy with headway's engine and map
//! builders, and compares what each node would receive.
//!
//! A client of `policy`, `state` and `control` like any other: it builds a node
//! snapshot and map inputs, and never reaches into the engine's internals.
//! `normalise.rs` owns the comparison rules (what "the same" means per field).

mod normalise;

use crate::control::map::{MapInputs, MapSettings};
use crate::policy::{self, Compiled, Policy, Tailnet};
use crate::state::Snapshot;
use crate::state::policy::devices_of;
use crate::tailcfg;
use crate::types::{
    DiscoKey, GivenName, MachineKey, Node, NodeId, NodeKey, RegisterMethod, Route, RouteId, User,
    UserId, UserName,
};
use ipnet::IpNet;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The base URL recorded cases use for `check` SSH rules.
const CASE_SERVER_URL: &str = "https://unused";

/// The outcome of one case.
#[derive(Debug)]
pub struct Outcome {
    pub id: String,
    pub path: PathBuf,
    /// Empty when everything matched; otherwise one line per difference.
    pub differences: Vec<String>,
}

/// Every `*.json` file under `dirs`, recursively, sorted.
pub fn case_files(dirs: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for dir in dirs {
        if dir.is_file() {
            out.push(dir.clone());
        } else {
            walk(dir, &mut out)?;
        }
    }
    out.sort();
    Ok(out)
}

/// Runs one case file.
pub fn run_file(path: &Path) -> Outcome {
    let id = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let differences = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()))
    {
        Ok(case) => run_case(&case),
        Err(e) => vec![format!("cannot read the case: {e}")],
    };
    Outcome {
        id,
        path: path.to_owned(),
        differences,
    }
}

/// The tailnet of a case, built as headway would hold it.
struct Topology {
    users: Vec<User>,
    nodes: Vec<Node>,
    routes: Vec<Route>,
    by_name: BTreeMap<String, NodeId>,
}

/// Runs one parsed case: the differences between what Tailscale sent and what
/// headway would send.
pub fn run_case(case: &Value) -> Vec<String> {
    let accepted = case["api_response_code"].as_u64() == Some(200);
    let text = case["policy"].as_str().unwrap_or_default();
    let mut topology = match build_topology(case) {
        Ok(t) => t,
        Err(e) => return vec![format!("bad topology: {e}")],
    };
    // Routes the policy approves by itself are approved, as the server does when
    // a node advertises them.
    if let Ok(p) = Policy::parse(text) {
        let snapshot = Snapshot::from_rows(topology.nodes.clone(), topology.routes.clone());
        let devices = devices_of(&snapshot);
        let tailnet = Tailnet {
            users: &topology.users,
            devices: &devices,
        };
        let approvals = policy::Approvals::new(&p, tailnet);
        for route in &mut topology.routes {
            if route.advertised && approvals.auto_approves(route.node_id, &route.prefix) {
                route.approved = true;
            }
        }
    }
    let mut snapshot = Snapshot::from_rows(topology.nodes.clone(), topology.routes.clone());
    let primaries = snapshot.elect(&|_| true, &|_| true);
    snapshot.set_primaries(primaries);
    let devices = devices_of(&snapshot);
    let tailnet = Tailnet {
        users: &topology.users,
        devices: &devices,
    };
    let options = policy::Options {
        server_url: CASE_SERVER_URL.into(),
    };
    let domains = tailnet_domains(case);
    let compiled = Policy::parse(text).and_then(|p| {
        p.check_domains(&domains)?;
        let p = Arc::new(p);
        let compiled = Compiled::new(p.clone(), tailnet, &options);
        policy::run_tests(&p, tailnet, &compiled)?;
        Ok(compiled)
    });
    let compiled = match (compiled, accepted) {
        (Err(_), false) => return Vec::new(),
        (Ok(_), false) => {
            let message = case["api_response_body"]["message"]
                .as_str()
                .unwrap_or("(no message)");
            return vec![format!("accepted a policy Tailscale refused: {message}")];
        }
        (Err(e), true) => return vec![format!("refused a policy Tailscale accepted: {e}")],
        (Ok(c), true) => c,
    };

    let users: HashMap<UserId, User> = topology.users.iter().map(|u| (u.id, u.clone())).collect();
    let settings = MapSettings {
        base_domain: String::new(),
        domain: String::new(),
        dns: None,
        disable_log_tail: false,
        taildrop: true,
        auto_update: case["tailnet"]["settings"]["devices_auto_updates_on"] == Value::Bool(true),
        randomize_client_port: false,
        ..MapSettings::default()
    };
    let online = |_| true;
    let inputs = MapInputs {
        snapshot: &snapshot,
        users: &users,
        online: &online,
        settings: &settings,
        now: chrono::Utc::now(),
        policy: Some(&compiled),
    };
    let names: HashMap<NodeId, &str> = topology
        .by_name
        .iter()
        .map(|(n, id)| (*id, n.as_str()))
        .collect();

    let mut out = Vec::new();
    let Some(captured) = case["nodes"].as_object() else {
        return vec!["the case records no nodes".into()];
    };
    for (name, want) in captured {
        let Some(&id) = topology.by_name.get(name) else {
            out.push(format!("{name}: not in the topology"));
            continue;
        };
        let node = snapshot.get(id).expect("built from the topology");
        let mut diff = |field: &str, detail: String| out.push(format!("{name}: {field}: {detail}"));

        // Packet filter.
        let got = serde_json::to_value(inputs.packet_filter(id)).expect("serialises");
        if let Some(d) = normalise::filter_difference(&want["packet_filter_rules"], &got) {
            diff("packet filter", d);
        }

        // Peers: who, and what each carries.
        let want_peers: BTreeMap<String, &Value> = want["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| (host_label(p["Name"].as_str().unwrap_or_default()), p))
            .collect();
        let got_peers: BTreeMap<String, tailcfg::Node> = inputs
            .visible_peers(id)
            .map(|p| (names[&p.id].to_owned(), inputs.peer_for(id, p)))
            .collect();
        let want_set: BTreeSet<&String> = want_peers.keys().collect();
        let got_set: BTreeSet<&String> = got_peers.keys().collect();
        if want_set != got_set {
            let missing: Vec<_> = want_set.difference(&got_set).collect();
            let extra: Vec<_> = got_set.difference(&want_set).collect();
            diff("peers", format!("missing {missing:?}, extra {extra:?}"));
        }
        for (peer, w) in &want_peers {
            if let Some(g) = got_peers.get(peer) {
                let g = serde_json::to_value(g).expect("serialises");
                for d in normalise::node_differences(w, &g, false) {
                    diff(&format!("peer {peer}"), d);
                }
            }
        }

        // The node itself.
        let got_self = serde_json::to_value(inputs.self_node(node)).expect("serialises");
        for d in normalise::node_differences(&want["self"], &got_self, true) {
            diff("self", d);
        }

        // SSH policy.
        let got_ssh = serde_json::to_value(inputs.ssh_policy(id)).expect("serialises");
        if let Some(d) = normalise::ssh_difference(&want["ssh_policy"], &got_ssh) {
            diff("ssh policy", d);
        }
    }
    out
}

/// The domains associated with the recorded tailnet: that of its name (the
/// `tailnet-display-name` every node is told, `odin@example.com` → `example.com`).
fn tailnet_domains(case: &Value) -> Vec<String> {
    let names = case["nodes"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, n)| n["self"]["CapMap"]["tailnet-display-name"][0].as_str());
    let mut out: Vec<String> = names
        .filter_map(|n| n.rsplit_once('@').map(|(_, d)| d.to_owned()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `bulbasaur.tail78f774.ts.net.` → `bulbasaur`.
fn host_label(name: &str) -> String {
    name.split('.').next().unwrap_or(name).to_owned()
}

fn prefixes(v: &Value) -> Vec<IpNet> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str()?.parse().ok())
        .collect()
}

/// Users, nodes and routes of a case. Node ids are given so that the routers a
/// case recorded as primary win headway's election (lowest id), since the
/// recording has no ids of its own.
fn build_topology(case: &Value) -> Result<Topology, String> {
    let topo = &case["topology"];
    let now = chrono::Utc::now();
    let mut users = Vec::new();
    for u in topo["users"].as_array().into_iter().flatten() {
        let id = u["id"].as_u64().ok_or("user without id")?;
        let name = u["name"].as_str().ok_or("user without name")?;
        users.push(User {
            id: UserId(id),
            name: UserName::parse(name).map_err(|e| e.to_string())?,
            display_name: String::new(),
            email: u["email"].as_str().unwrap_or_default().to_owned(),
            provider: "cli".into(),
            provider_id: String::new(),
            profile_pic_url: String::new(),
            groups: Vec::new(),
            created_at: now,
            updated_at: now,
        });
    }
    let captured = case["nodes"].as_object();
    let primary_somewhere: BTreeSet<String> = captured
        .into_iter()
        .flatten()
        .filter(|(_, n)| !prefixes(&n["self"]["PrimaryRoutes"]).is_empty())
        .map(|(name, _)| name.clone())
        .collect();
    let mut names: Vec<&String> = topo["nodes"]
        .as_object()
        .ok_or("no nodes")?
        .keys()
        .collect();
    names.sort_by_key(|n| (!primary_somewhere.contains(*n), (*n).clone()));

    let mut nodes = Vec::new();
    let mut routes = Vec::new();
    let mut by_name = BTreeMap::new();
    for (i, name) in names.into_iter().enumerate() {
        let n = &topo["nodes"][name];
        let id = NodeId(i as u64 + 1);
        let tags: Vec<String> = n["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
        let user_id = n["user"]
            .as_str()
            .and_then(|u| users.iter().find(|x| x.name.as_str() == u))
            .map(|u| u.id);
        let ipv4 = n["ipv4"].as_str().and_then(|a| a.parse().ok());
        let ipv6 = n["ipv6"].as_str().and_then(|a| a.parse().ok());
        let key_bytes = |kind: u8| {
            let mut hex = format!("{kind:02x}{:030x}", i + 1);
            hex.push_str(&"0".repeat(64 - hex.len()));
            hex
        };
        nodes.push(Node {
            id,
            machine_key: MachineKey::from_untyped_hex(&key_bytes(1)).map_err(|e| e.to_string())?,
            node_key: NodeKey::from_untyped_hex(&key_bytes(2)).map_err(|e| e.to_string())?,
            disco_key: DiscoKey::from_untyped_hex(&key_bytes(3)).map_err(|e| e.to_string())?,
            hostname: name.clone(),
            given_name: GivenName::sanitize(name),
            user_id: if tags.is_empty() { user_id } else { None },
            ipv4,
            ipv6,
            endpoints: Vec::new(),
            hostinfo: None,
            tags,
            expiry: None,
            last_seen: None,
            ephemeral: false,
            register_method: RegisterMethod::AuthKey,
            auth_key_id: None,
            created_at: now,
            updated_at: now,
        });
        let advertised = prefixes(&n["routable_ips"]);
        let approved = prefixes(&n["approved_routes"]);
        for prefix in advertised
            .iter()
            .chain(approved.iter())
            .collect::<BTreeSet<_>>()
        {
            routes.push(Route {
                id: RouteId(routes.len() as u64 + 1),
                node_id: id,
                prefix: *prefix,
                advertised: advertised.contains(prefix),
                approved: approved.contains(prefix),
                approved_by_policy: false,
                created_at: now,
                updated_at: now,
            });
        }
        by_name.insert(name.clone(), id);
    }
    Ok(Topology {
        users,
        nodes,
        routes,
        by_name,
    })
}
