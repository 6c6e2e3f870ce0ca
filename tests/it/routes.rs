//! Subnet routers and exit nodes end to end: official clients in TUN mode, each in
//! a network namespace of its own, reach a LAN host that runs no Tailscale, and an
//! "internet" host, only through the nodes the admin approved. The server runs in
//! the namespace that switches the clients' uplinks; nothing touches the machine's
//! own routes or firewall.

use crate::clients::{assert_logged_in, key};
use crate::support::netns::{Netns, Switch, link};
use crate::support::tailscale::{Client, versions};
use crate::support::{Spawn, TestServer, wait_until};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LAN: &str = "192.168.100.0/24";
const LAN_HOST: &str = "192.168.100.10";
const HUB: &str = "10.99.0.1";

/// The uplink switch with headway on its gateway address.
fn hub_with_server() -> (Switch, TestServer) {
    hub_with_server_config("")
}

/// [`hub_with_server`] with more config.
pub(crate) fn hub_with_server_config(extra_config: &str) -> (Switch, TestServer) {
    let hub = Switch::new("hub", &format!("{HUB}/24"));
    let server = TestServer::spawn_with(Spawn {
        port: Some(8080),
        host: Some(HUB.into()),
        netns: Some(hub.ns.name.clone()),
        extra_config: extra_config.into(),
        ..Spawn::default()
    });
    (hub, server)
}

/// A namespace on the uplink switch at 10.99.0.`n`.
pub(crate) fn machine(hub: &Switch, role: &str, n: u8) -> Netns {
    machine_on_port(hub, role, n).0
}

/// [`machine`], and the switch port its uplink is plugged into.
fn machine_on_port(hub: &Switch, role: &str, n: u8) -> (Netns, String) {
    let ns = Netns::new(role);
    let port = hub.attach(&ns, "eth0", &format!("10.99.0.{n}/24"), true);
    (ns, port)
}

/// The `id` of the entry of `headway <listing> -o json` whose field at `path` is
/// `name`.
fn id_in(server: &TestServer, listing: &[&str], path: &[&str], name: &str) -> String {
    let mut args = listing.to_vec();
    args.extend(["-o", "json"]);
    let out = server.cli(&args).ok().stdout;
    let entries: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entry = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| path.iter().fold(*e, |v, key| &v[key]) == name)
        .unwrap_or_else(|| panic!("nothing named {name} in `{}`: {out}", listing.join(" ")));
    entry["id"].to_string().trim_matches('"').to_owned()
}

/// Node id of the node named `name`.
fn node_id(server: &TestServer, name: &str) -> String {
    id_in(server, &["nodes", "list"], &["given_name"], name)
}

/// The id of the route that node `name` advertises.
fn route_id(server: &TestServer, name: &str) -> String {
    id_in(server, &["routes", "list"], &["node", "given_name"], name)
}

/// The names of the nodes `routes list` shows as primary.
pub(crate) fn primaries(server: &TestServer) -> Vec<String> {
    let listed = server.cli(&["routes", "list", "-o", "json"]).ok().stdout;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["is_primary"] == true)
        .map(|r| {
            r["node"]["given_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// An exit node's machine and the "internet" beyond it.
struct Beyond {
    exit_ns: Netns,
    /// The router between them; kept alive as long as the path is needed.
    isp: Netns,
    /// A host at 203.0.113.10, reachable from nowhere else.
    internet: Netns,
}

/// The "internet": a host one router (an ISP) beyond the exit node's second
/// link. (An exit node refuses traffic to networks it is attached to itself
/// unless they are advertised as subnet routes, so the host must not sit on
/// the exit node's own link.)
fn exit_node_and_internet(hub: &Switch) -> Beyond {
    let exit_ns = machine(hub, "ex", 13);
    let isp = Netns::new("isp");
    let internet = Netns::new("inet");
    link(
        &exit_ns,
        "wan0",
        Some("198.51.100.2/24"),
        &isp,
        "down0",
        Some("198.51.100.1/24"),
    );
    link(
        &isp,
        "up0",
        Some("203.0.113.1/24"),
        &internet,
        "eth0",
        Some("203.0.113.10/24"),
    );
    isp.forward();
    exit_ns.forward();
    exit_ns.ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.1"]);
    internet.ip(&["route", "add", "default", "via", "203.0.113.1"]);
    Beyond {
        exit_ns,
        isp,
        internet,
    }
}

/// The source address the echo server saw for a line sent from `from`.
fn exchange_source(
    from: &Netns,
    target: SocketAddr,
    seen: &std::sync::Mutex<Vec<SocketAddr>>,
) -> String {
    let before = seen.lock().unwrap().len();
    let back = from
        .tcp_exchange(target, "hello over the routed tailnet")
        .unwrap_or_else(|e| panic!("TCP to {target}: {e}"));
    assert_eq!(back, "hello over the routed tailnet");
    seen.lock().unwrap()[before..]
        .last()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// A LAN host that runs no Tailscale (an echo server at `LAN_HOST`), two
/// routers between it and the uplink switch (10.99.0.11 and .12, LAN addresses
/// .1 and .2), and a laptop on the switch (10.99.0.10).
struct TwoRouterLan {
    /// Kept alive as long as the LAN is needed.
    _lan: Switch,
    target: SocketAddr,
    /// Who the LAN host's echo server saw connecting.
    seen: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    r1: Netns,
    /// The switch port of the first router's uplink.
    r1_uplink: String,
    r2: Netns,
    laptop_ns: Netns,
}

fn two_routers_and_a_laptop(hub: &Switch) -> TwoRouterLan {
    let lan = Switch::new("lan", &format!("{LAN_HOST}/24"));
    let (echo_port, seen) = lan.ns.echo_server(LAN_HOST);
    let (r1, r1_uplink) = machine_on_port(hub, "ra", 11);
    let r2 = machine(hub, "rb", 12);
    for (ns, addr) in [(&r1, "192.168.100.1/24"), (&r2, "192.168.100.2/24")] {
        lan.attach(ns, "lan0", addr, false);
        ns.forward();
    }
    TwoRouterLan {
        _lan: lan,
        target: format!("{LAN_HOST}:{echo_port}").parse().unwrap(),
        seen,
        r1,
        r1_uplink,
        r2,
        laptop_ns: machine(hub, "cl", 10),
    }
}

fn table_52(ns: &Netns) -> String {
    ns.ip_output(&["route", "show", "table", "52"])
}

#[test]
fn a_subnet_router_serves_its_lan_once_approved_and_a_standby_takes_over() {
    for version in versions() {
        let (hub, server) = hub_with_server();
        // The LAN: a host that runs no Tailscale, behind two routers.
        let TwoRouterLan {
            _lan,
            target,
            seen,
            r1,
            r2,
            laptop_ns,
            ..
        } = two_routers_and_a_laptop(&hub);

        let key = key(&server, &["--reusable"]);
        let url = server.url();
        let mut router_a = Client::start_in(&r1, &version, "router-a");
        let router_b = Client::start_in(&r2, &version, "router-b");
        let laptop = Client::start_in(&laptop_ns, &version, "laptop");
        let advertise = format!("--advertise-routes={LAN}");
        for router in [&router_a, &router_b] {
            assert_logged_in(router, &router.up_with(&url, &key, &[&advertise]));
        }
        assert_logged_in(&laptop, &laptop.up_with(&url, &key, &["--accept-routes"]));
        let (a, b) = (node_id(&server, "router-a"), node_id(&server, "router-b"));

        // Advertised, not approved: the LAN is out of reach.
        wait_until(
            "router-a's route is listed",
            Duration::from_secs(20),
            || {
                server
                    .cli(&["routes", "list", &format!("-i={a}")])
                    .ok()
                    .stdout
                    .contains(LAN)
            },
        );
        assert!(
            !laptop_ns.ping(LAN_HOST),
            "{version}: LAN reachable before approval"
        );
        assert!(laptop_ns.tcp_exchange(target, "too early").is_err());

        // The oldest guides' spelling approves it; the laptop reaches the LAN host
        // through router-a (the host sees router-a's LAN address).
        server.cli(&["routes", "enable", "-i", &a, "-r", LAN]).ok();
        let took = laptop_ns
            .ping_until(LAN_HOST, Duration::from_secs(30))
            .unwrap_or_else(|| {
                panic!(
                    "{version}: LAN not reachable after approval\n{}",
                    laptop.log_tail()
                )
            });
        eprintln!(
            "{version}: LAN reachable {} ms after approval",
            took.as_millis()
        );
        assert_eq!(exchange_source(&laptop_ns, target, &seen), "192.168.100.1");
        let routes = table_52(&laptop_ns);
        assert!(
            routes.contains(&format!("{LAN} dev tailscale0")),
            "{version}: table 52 is\n{routes}"
        );

        // A standby router for the same prefix, approved by route id (the 0.18-0.25
        // guides). router-a stays primary while it is online.
        let route_id = route_id(&server, "router-b");
        server.cli(&["routes", "enable", "-r", &route_id]).ok();
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(exchange_source(&laptop_ns, target, &seen), "192.168.100.1");

        // router-a's machine dies: router-b takes over by itself.
        router_a.kill_daemon();
        let killed = Instant::now();
        let back = laptop_ns.ping_until(LAN_HOST, Duration::from_secs(60));
        let failover = killed.elapsed();
        assert!(
            back.is_some(),
            "{version}: no failover to router-b\n{}",
            laptop.log_tail()
        );
        eprintln!(
            "{version}: failover to the standby router took {} ms",
            failover.as_millis()
        );
        assert_eq!(exchange_source(&laptop_ns, target, &seen), "192.168.100.2");
        assert_eq!(primaries(&server), ["router-b"]);

        // Every other spelling of the guides, each checked against the live router:
        // withdrawn, the LAN is out of reach; approved, it is back.
        let lan_route = format!("-r={LAN}");
        let b_flag = format!("-i={b}");
        let spellings: [(&[&str], bool); 5] = [
            (&["routes", "disable", &b_flag, &lan_route], false),
            (&["nodes", "approve-routes", "-i", &b, "-r", LAN], true),
            (&["nodes", "approve-routes", "-i", &b, "-r", ""], false),
            (&["routes", "enable", "-i", &b, "-a"], true),
            (&["routes", "disable", "-i", &b, "-r", LAN], false),
        ];
        for (command, reachable) in spellings {
            server.cli(command).ok();
            wait_until(
                &format!(
                    "{version}: after `{}` the LAN route is {}",
                    command.join(" "),
                    if reachable { "there" } else { "gone" }
                ),
                Duration::from_secs(20),
                || table_52(&laptop_ns).contains(LAN) == reachable,
            );
            if reachable {
                assert!(
                    laptop_ns
                        .ping_until(LAN_HOST, Duration::from_secs(10))
                        .is_some(),
                    "{version}: LAN not reachable after `{}`",
                    command.join(" ")
                );
            } else {
                assert!(
                    !laptop_ns.ping(LAN_HOST),
                    "{version}: LAN reachable after `{}`",
                    command.join(" ")
                );
            }
        }
        drop((router_b, laptop));
    }
}

/// Two routers serve one LAN, and the primary's uplink is cut beyond its own
/// interface: its daemon runs on and its connection to headway looks open, so
/// only the health probes (`node.routes.ha`) can tell. router-b takes over within
/// probe_interval + probe_timeout; with the cable back, router-a answers again
/// and stays standby (no flapping). Both client versions run side by side.
#[test]
fn a_primary_router_whose_link_is_cut_hands_its_lan_to_the_standby() {
    std::thread::scope(|s| {
        for version in versions() {
            s.spawn(move || cable_pull(&version));
        }
    });
}

fn cable_pull(version: &str) {
    let (interval, timeout) = (Duration::from_secs(3), Duration::from_secs(2));
    let (hub, server) = hub_with_server_config(&format!(
        "node:\n  routes:\n    ha:\n      probe_interval: {}s\n      probe_timeout: {}s\n",
        interval.as_secs(),
        timeout.as_secs()
    ));
    let TwoRouterLan {
        _lan,
        target,
        seen,
        r1,
        r1_uplink,
        r2,
        laptop_ns,
    } = two_routers_and_a_laptop(&hub);
    let key = key(&server, &["--reusable"]);
    let url = server.url();
    let router_a = Client::start_in(&r1, version, "router-a");
    let router_b = Client::start_in(&r2, version, "router-b");
    let laptop = Client::start_in(&laptop_ns, version, "laptop");
    let advertise = format!("--advertise-routes={LAN}");
    for router in [&router_a, &router_b] {
        assert_logged_in(router, &router.up_with(&url, &key, &[&advertise]));
    }
    assert_logged_in(&laptop, &laptop.up_with(&url, &key, &["--accept-routes"]));
    for name in ["router-a", "router-b"] {
        wait_until(
            &format!("{version}: {name}'s route is listed"),
            Duration::from_secs(20),
            || {
                let routes = server.cli(&["routes", "list", "-o", "json"]).ok().stdout;
                routes.contains(name) && routes.contains(LAN)
            },
        );
    }
    // router-a is approved first, so it is primary.
    for name in ["router-a", "router-b"] {
        let id = node_id(&server, name);
        server
            .cli(&["nodes", "approve-routes", "-i", &id, "-r", LAN])
            .ok();
        if name == "router-a" {
            wait_until(
                &format!("{version}: router-a is primary"),
                Duration::from_secs(10),
                || primaries(&server) == ["router-a"],
            );
        }
    }
    assert!(
        laptop_ns
            .ping_until(LAN_HOST, Duration::from_secs(30))
            .is_some(),
        "{version}: LAN not reachable\n{}",
        laptop.log_tail()
    );
    assert_eq!(exchange_source(&laptop_ns, target, &seen), "192.168.100.1");
    // A missed probe counts once a router's session has lived through a round.
    wait_until(
        &format!("{version}: the routers are probed"),
        Duration::from_secs(20),
        || server.log().contains("probing subnet routers"),
    );
    std::thread::sleep(interval + timeout);
    assert_eq!(primaries(&server), ["router-a"], "{version}: flapped");

    hub.cut(&r1_uplink);
    let cut = Instant::now();
    wait_until(
        &format!("{version}: router-b becomes primary"),
        Duration::from_secs(60),
        || primaries(&server) == ["router-b"],
    );
    let server_side = cut.elapsed();
    let back = laptop_ns.ping_until(LAN_HOST, Duration::from_secs(60));
    let client_side = cut.elapsed();
    assert!(
        back.is_some(),
        "{version}: no failover to router-b\n{}",
        laptop.log_tail()
    );
    eprintln!(
        "{version}: uplink cut: router-b primary after {} ms, LAN reachable again after {} ms \
         (probe_interval {interval:?}, probe_timeout {timeout:?})",
        server_side.as_millis(),
        client_side.as_millis()
    );
    // Without probes the dead session would hold the prefix until HTTP/2's own
    // keep-alive gave up, a minute and more.
    assert!(
        server_side <= interval + timeout + Duration::from_secs(3),
        "{version}: failover took {server_side:?}"
    );
    assert_eq!(exchange_source(&laptop_ns, target, &seen), "192.168.100.2");
    let log = server.log();
    assert!(
        log.contains("did not answer its health probe"),
        "{version}: {log}"
    );

    // The cable is back: router-a answers again, and router-b keeps the LAN.
    hub.mend(&r1_uplink);
    wait_until(
        &format!("{version}: router-a answers again"),
        Duration::from_secs(60),
        || server.log().contains("answers its health probes again"),
    );
    std::thread::sleep(interval);
    assert_eq!(primaries(&server), ["router-b"], "{version}: flapped back");
    assert_eq!(exchange_source(&laptop_ns, target, &seen), "192.168.100.2");
    drop((router_a, router_b, laptop));
}

#[test]
fn an_exit_node_carries_internet_traffic_and_lan_access_is_the_clients_choice() {
    let version = versions().pop().expect("a client version");
    let (hub, server) = hub_with_server();
    let Beyond {
        exit_ns,
        isp: _isp,
        internet,
    } = exit_node_and_internet(&hub);
    let (echo_port, seen) = internet.echo_server("203.0.113.10");
    let target: SocketAddr = format!("203.0.113.10:{echo_port}").parse().unwrap();
    // The laptop's own LAN (a printer at home), not routed anywhere else.
    let laptop_ns = machine(&hub, "cl", 10);
    let home = Netns::new("home");
    link(
        &laptop_ns,
        "home0",
        Some("172.16.50.1/24"),
        &home,
        "eth0",
        Some("172.16.50.10/24"),
    );

    let key = key(&server, &["--reusable"]);
    let url = server.url();
    let exit = Client::start_in(&exit_ns, &version, "exit");
    let laptop = Client::start_in(&laptop_ns, &version, "laptop");
    assert_logged_in(&exit, &exit.up_with(&url, &key, &["--advertise-exit-node"]));
    assert_logged_in(&laptop, &laptop.up_with(&url, &key, &[]));
    assert!(
        !laptop_ns.ping("203.0.113.10"),
        "the internet host is reachable without the exit node"
    );
    assert!(laptop_ns.ping("172.16.50.10"), "the home LAN is reachable");

    // Approving one exit route approves both.
    let x = node_id(&server, "exit");
    server
        .cli(&["nodes", "approve-routes", "-i", &x, "-r", "0.0.0.0/0"])
        .ok();
    let routes = server
        .cli(&["nodes", "list-routes", "-i", &x, "-o", "json"])
        .ok()
        .stdout;
    for prefix in ["0.0.0.0/0", "::/0"] {
        assert!(routes.contains(prefix), "{prefix} not approved: {routes}");
    }
    let exit_ip = exit.ipv4();
    laptop.wait_status("the exit node offered", Duration::from_secs(20), |status| {
        status["Peer"]
            .as_object()
            .is_some_and(|peers| peers.values().any(|p| p["ExitNodeOption"] == true))
    });

    // Through the exit node: the internet host sees the exit node's address.
    let exit_node = format!("--exit-node={exit_ip}");
    laptop.up_with(&url, &key, &[&exit_node]).ok();
    laptop_ns
        .ping_until("203.0.113.10", Duration::from_secs(30))
        .unwrap_or_else(|| {
            let rules = exit_ns.command("iptables-save").output().unwrap();
            panic!(
                "internet not reachable via the exit node\nexit:\n{}\n{}\nlaptop 52: {}\nexit routes: {}",
                exit.log_tail(),
                String::from_utf8_lossy(&rules.stdout),
                table_52(&laptop_ns),
                exit_ns.ip_output(&["route"])
            )
        });
    assert_eq!(exchange_source(&laptop_ns, target, &seen), "198.51.100.2");

    // Everything goes to the exit node, the home LAN too, until LAN access is allowed.
    assert!(
        !laptop_ns.ping("172.16.50.10"),
        "home LAN reachable without --exit-node-allow-lan-access"
    );
    // The guides' J6 line.
    laptop
        .up_with(
            &url,
            &key,
            &[&exit_node, "--exit-node-allow-lan-access=true"],
        )
        .ok();
    laptop_ns
        .ping_until("172.16.50.10", Duration::from_secs(20))
        .expect("home LAN reachable with --exit-node-allow-lan-access");
    assert!(
        laptop_ns.ping("203.0.113.10"),
        "the exit node still carries the rest"
    );

    // Without the exit node, the internet host is out of reach again.
    laptop
        .cli(&["set", "--exit-node=", "--exit-node-allow-lan-access=false"])
        .ok();
    wait_until("the exit node is dropped", Duration::from_secs(20), || {
        !laptop_ns.ping("203.0.113.10")
    });
}

/// A policy approving the LAN for `tag:router` nodes and exit routes for
/// `tag:exit` nodes, with everyone allowed everywhere.
const AUTO_APPROVE: &str = r#"{
  "tagOwners": {"tag:router": ["alice@"], "tag:exit": ["alice@"]},
  "autoApprovers": {
    "routes": {"192.168.0.0/16": ["tag:router"]},
    "exitNode": ["tag:exit"],
  },
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}"#;

#[test]
fn routes_the_policy_approves_work_with_no_admin_and_stop_when_it_stops() {
    for version in versions() {
        let (hub, server) = hub_with_server_config("policy:\n  mode: database\n");
        let policy_file = server.dir.path().join("auto.hujson");
        std::fs::write(&policy_file, AUTO_APPROVE).unwrap();
        server
            .cli(&["policy", "set", "-f", policy_file.to_str().unwrap()])
            .ok();

        // A LAN behind a tagged router; an "internet" host one hop beyond a tagged
        // exit node's second link.
        let lan = Switch::new("lan", &format!("{LAN_HOST}/24"));
        let router_ns = machine(&hub, "ra", 11);
        lan.attach(&router_ns, "lan0", "192.168.100.1/24", false);
        router_ns.forward();
        let Beyond {
            exit_ns,
            isp,
            internet,
        } = exit_node_and_internet(&hub);
        let laptop_ns = machine(&hub, "cl", 10);

        server.cli(&["users", "create", "alice"]).ok();
        let key = |tags: &[&str]| {
            let mut args = vec![
                "preauthkeys",
                "create",
                "--user",
                "alice",
                "--reusable",
                "-e",
                "1h",
            ];
            args.extend_from_slice(tags);
            server.cli(&args).ok().stdout.trim().to_owned()
        };
        let url = server.url();
        let router = Client::start_in(&router_ns, &version, "router");
        let exit = Client::start_in(&exit_ns, &version, "exit");
        let laptop = Client::start_in(&laptop_ns, &version, "laptop");
        let advertise = format!("--advertise-routes={LAN}");
        assert_logged_in(
            &router,
            &router.up_with(&url, &key(&["--tags", "tag:router"]), &[&advertise]),
        );
        assert_logged_in(
            &exit,
            &exit.up_with(
                &url,
                &key(&["--tags", "tag:exit"]),
                &["--advertise-exit-node"],
            ),
        );
        let laptop_key = key(&[]);
        assert_logged_in(
            &laptop,
            &laptop.up_with(&url, &laptop_key, &["--accept-routes"]),
        );

        // No admin command: the LAN is reachable and the exit node is offered.
        laptop_ns
            .ping_until(LAN_HOST, Duration::from_secs(30))
            .unwrap_or_else(|| {
                panic!(
                    "{version}: the auto-approved LAN is not reachable\n{}\n{}",
                    server.cli(&["nodes", "list-routes", "-o", "json"]).stdout,
                    laptop.log_tail()
                )
            });
        let exit_ip = exit.ipv4();
        laptop.wait_status("the exit node offered", Duration::from_secs(20), |status| {
            status["Peer"]
                .as_object()
                .is_some_and(|peers| peers.values().any(|p| p["ExitNodeOption"] == true))
        });
        let exit_node = format!("--exit-node={exit_ip}");
        laptop
            .up_with(&url, &laptop_key, &["--accept-routes", &exit_node])
            .ok();
        laptop_ns
            .ping_until("203.0.113.10", Duration::from_secs(30))
            .unwrap_or_else(|| {
                panic!(
                    "{version}: no internet through the exit node\n{}",
                    laptop.log_tail()
                )
            });

        // A policy without autoApprovers: both approvals go.
        std::fs::write(
            &policy_file,
            r#"{"tagOwners": {"tag:router": ["alice@"], "tag:exit": ["alice@"]},
                "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
        )
        .unwrap();
        server
            .cli(&["policy", "set", "-f", policy_file.to_str().unwrap()])
            .ok();
        wait_until(
            &format!("{version}: the LAN route leaves table 52"),
            Duration::from_secs(20),
            || !table_52(&laptop_ns).contains(LAN),
        );
        assert!(
            !laptop_ns.ping(LAN_HOST),
            "{version}: LAN reachable after the approval went"
        );
        laptop.wait_status(
            "the exit node withdrawn",
            Duration::from_secs(20),
            |status| {
                status["Peer"]
                    .as_object()
                    .is_some_and(|peers| peers.values().all(|p| p["ExitNodeOption"] != true))
            },
        );
        eprintln!("{version}: auto-approved routes worked and went with the policy");
        drop((router, exit, laptop, lan, internet, isp));
    }
}
