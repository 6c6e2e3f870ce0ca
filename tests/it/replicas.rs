//! Several headway replicas on one PostgreSQL database (issue 16), with official
//! clients: HAProxy spreads connections over them and the database keeps its
//! constraints across them; a change made through one replica reaches the clients
//! of another; clients behind HAProxy move to a surviving replica when theirs is
//! killed. The last two wait for the change feed.

use crate::clients::{assert_logged_in, key, sees_peer};
use crate::policy::crosses;
use crate::routes::primaries;
use crate::support::replicas::{Haproxy, Replicas, region_id};
use crate::support::tailscale::{Client, echo_server, printed_register_command, versions};
use crate::support::{TestServer, http_get, poll_until, wait_until};
use std::time::{Duration, Instant};

/// The newest client version this machine has.
fn newest() -> String {
    versions().pop().expect("a client version")
}

/// The id of the node `server` lists under `given_name`, or a panic with the list.
#[track_caller]
fn node_id(server: &TestServer, given_name: &str) -> String {
    let listed = server.nodes();
    listed
        .iter()
        .find(|n| n["given_name"] == given_name)
        .map(|n| n["id"].to_string().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("{} lists no node {given_name}: {listed:#?}", server.url()))
}

/// Whether a peer of the client whose status this is has a DNS name starting
/// with `name.`.
fn peer_named(status: &serde_json::Value, name: &str) -> bool {
    status["Peer"].as_object().is_some_and(|peers| {
        peers.values().any(|p| {
            p["DNSName"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{name}.")))
        })
    })
}

/// The relay regions in `client`'s DERP map: (id, code), by id.
fn relay_regions(client: &Client) -> Vec<(u64, String)> {
    let map: serde_json::Value =
        serde_json::from_str(&client.cli(&["debug", "derp-map"]).ok().stdout).unwrap();
    let mut regions: Vec<(u64, String)> = map["Regions"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, r)| {
            (
                r["RegionID"].as_u64().unwrap_or_default(),
                r["RegionCode"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    regions.sort();
    regions
}

#[test]
fn haproxy_spreads_connections_over_replicas_on_one_database() {
    let begun = Instant::now();
    let replicas = Replicas::start(2, "");
    for i in 0..replicas.len() {
        let (status, _, body) = http_get(&replicas.server(i).http_addr, "/health");
        assert_eq!(status, 200, "replica {i}: {body}\n{}", replicas.log(i));
    }

    let proxy = Haproxy::start(&replicas.addrs());
    for i in 0..replicas.len() {
        proxy.wait_status(i, "UP", Duration::from_secs(10));
    }
    let before = proxy.stats();
    for n in 0..20 {
        let (status, _, body) = http_get(&proxy.addr(), "/health");
        assert_eq!(status, 200, "request {n}: {body}\n{}", proxy.log());
    }
    // Round robin: each replica took every other connection.
    let served: Vec<u64> = proxy
        .stats()
        .iter()
        .map(|after| {
            let earlier = before.iter().find(|b| b.index == after.index);
            after.total - earlier.map_or(0, |b| b.total)
        })
        .collect();
    assert_eq!(served, [10, 10], "{:?}\n{}", proxy.stats(), proxy.log());
    // HAProxy's log names the replica of every connection as it closes.
    wait_until(
        "HAProxy logs connections to both replicas",
        Duration::from_secs(5),
        || {
            let log = proxy.log();
            (0..2).all(|i| log.matches(&format!(" replicas/replica{i} ")).count() >= 10)
        },
    );

    // The database's UNIQUE constraint holds across replicas, feed or not: a user
    // made through one replica cannot be made again through another.
    let (r0, r1) = (replicas.server(0), replicas.server(1));
    r0.cli(&["users", "create", "alice"]).ok();
    let again = r1.cli(&["users", "create", "alice"]).failed();
    assert!(
        again.stderr.contains("already exists"),
        "{again:?}\n{}",
        replicas.logs()
    );
    assert_eq!(
        replicas.sql("SELECT count(*) FROM users WHERE name = 'alice'"),
        "1"
    );
    eprintln!(
        "replicas and HAProxy: {:.1} s",
        begun.elapsed().as_secs_f64()
    );
}

#[test]
fn a_change_through_one_replica_reaches_clients_of_another() {
    let version = newest();
    let replicas = Replicas::start(2, "policy:\n  mode: database\n");
    let (r0, r1) = (replicas.server(0), replicas.server(1));
    let alice = r0.reusable_key("alice", &[]);
    let bob = r0.reusable_key("bob", &[]);

    // A on replica 0, B on replica 1 (with a key made through replica 0), with
    // UDP off: every packet between them crosses a relay. Each replica's relay is
    // its own region, and each serves the other's too, so A and B can relay to
    // each other whichever region each made its home.
    let derp_only = [("TS_DEBUG_ALWAYS_USE_DERP", "true")];
    let a = Client::start_with_env(&version, "node-a", &derp_only);
    assert_logged_in(&a, &a.up_with_key(&r0.url(), &alice));
    let b = Client::start_with_env(&version, "node-b", &derp_only);
    assert_logged_in(&b, &b.up_with_key(&r1.url(), &bob));
    let both = [
        (region_id(0) as u64, "replica-0".to_owned()),
        (region_id(1) as u64, "replica-1".to_owned()),
    ];
    for client in [&a, &b] {
        wait_until(
            "both replicas' relay regions in the DERP map",
            Duration::from_secs(10),
            || both.iter().all(|r| relay_regions(client).contains(r)),
        );
    }
    // Homes on different replicas: A reaches B only through replica 1's relay,
    // which A's own replica serves in its map.
    for (client, (id, code)) in [(&a, &both[0]), (&b, &both[1])] {
        client
            .cli(&["debug", "force-prefer-derp", &id.to_string()])
            .ok();
        client.wait_status("its home relay", Duration::from_secs(20), |s| {
            s["Self"]["Relay"] == code.as_str()
        });
    }
    let (ip_a, ip_b) = (a.ipv4(), b.ipv4());
    assert_ne!(ip_a, ip_b, "two replicas gave out one address");
    a.wait_status("node-b, on replica 1", Duration::from_secs(10), |s| {
        sees_peer(s, "node-b", &ip_b)
    });
    b.wait_status("node-a, on replica 0", Duration::from_secs(10), |s| {
        sees_peer(s, "node-a", &ip_a)
    });
    let ping = a.cli(&["ping", "--c", "10", "--timeout", "5s", &ip_b]);
    assert!(
        ping.stdout.contains("pong from node-b") && ping.stdout.contains("via DERP(replica-1)"),
        "{ping:?}\n{}",
        a.log_tail()
    );
    let port = echo_server();
    wait_until("A reaches B over TCP", Duration::from_secs(30), || {
        crosses(&a, &ip_b, port)
    });

    // A rename through replica 0 of B, whose session is on replica 1: A sees it
    // from replica 0, and B its own new name from replica 1.
    let id_b = node_id(r0, "node-b");
    r0.cli(&["nodes", "rename", "-i", &id_b, "renamed-b"]).ok();
    a.wait_status("B's new name", Duration::from_secs(10), |s| {
        peer_named(s, "renamed-b")
    });
    b.wait_status("its own new name", Duration::from_secs(10), |s| {
        s["Self"]["DNSName"]
            .as_str()
            .is_some_and(|n| n.starts_with("renamed-b."))
    });

    // A policy through replica 1 allowing only bob → alice: A no longer reaches B.
    let set = |name: &str, text: &str| {
        let path = r1.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        r1.cli(&["policy", "set", "-f", path.to_str().unwrap()])
            .ok();
    };
    let one_way = r#"{"acls": [{"action": "accept", "src": ["bob@"], "dst": ["alice@:*"]}]}"#;
    set("one-way.hujson", one_way);
    wait_until("A loses B", Duration::from_secs(10), || {
        !crosses(&a, &ip_b, port)
    });
    assert_eq!(
        r0.cli(&["policy", "get"]).ok().stdout.trim(),
        one_way,
        "replica 0 serves the policy set through replica 1"
    );
    // Nobody → nobody: B leaves the peers of A, whose session is on replica 0.
    set("deny.hujson", r#"{"acls": []}"#);
    a.wait_status("B gone", Duration::from_secs(10), |s| {
        !sees_peer(s, "node-b", &ip_b)
    });
}

#[test]
fn clients_through_haproxy_survive_the_death_of_their_replica() {
    let version = newest();
    let mut replicas = Replicas::start(2, "");
    let proxy = Haproxy::start(&replicas.addrs());
    for i in 0..replicas.len() {
        proxy.wait_status(i, "UP", Duration::from_secs(10));
    }
    let key = key(replicas.server(0), &["--reusable"]);
    let a = Client::start(&version, "node-a");
    let b = Client::start(&version, "node-b");
    for client in [&a, &b] {
        let up = client.up_with_key(&proxy.url(), &key);
        assert_logged_in(client, &up);
    }
    let (ip_a, ip_b) = (a.ipv4(), b.ipv4());
    assert_ne!(ip_a, ip_b, "two replicas gave out one address");
    a.wait_status("node-b", Duration::from_secs(10), |s| {
        sees_peer(s, "node-b", &ip_b)
    });
    b.wait_status("node-a", Duration::from_secs(10), |s| {
        sees_peer(s, "node-a", &ip_a)
    });
    let port = echo_server();
    wait_until("A reaches B over TCP", Duration::from_secs(30), || {
        crosses(&a, &ip_b, port)
    });

    // The replica each client's control connection went to, as HAProxy says.
    let home = |client: &Client| proxy.backends_of_process(client.pid().expect("running"));
    let (home_a, home_b) = (home(&a), home(&b));
    eprintln!("failover: A's control connection is on replica {home_a:?}, B's on {home_b:?}");
    let victim = home_a.first().copied().unwrap_or(0);
    let survivor = 1 - victim;

    let killed = Instant::now();
    replicas.kill(victim);
    // A change made after the death, through the survivor: once A sees it, A's
    // control session is back, on the survivor.
    let survivor_server = replicas.server(survivor);
    let id_b = node_id(survivor_server, "node-b");
    survivor_server
        .cli(&["nodes", "rename", "-i", &id_b, "after-failover"])
        .ok();

    let bound = Duration::from_secs(60);
    let contact = poll_until(bound, || {
        sees_peer(&a.status(), "node-b", &ip_b) && crosses(&a, &ip_b, port)
    });
    let in_contact = killed.elapsed();
    let control = poll_until(bound.saturating_sub(in_contact), || {
        peer_named(&a.status(), "after-failover")
            && proxy.backends_of_process(a.pid().expect("running")) == [survivor]
    }) && poll_until(bound.saturating_sub(killed.elapsed()), || {
        crosses(&a, &ip_b, port)
    });
    let back = killed.elapsed();
    eprintln!(
        "failover: A in contact with B {:.1} s after replica {victim} was killed (B visible, TCP \
         crosses); A's control session back on replica {survivor} (a rename made after the \
         death seen, TCP crosses) after {:.1} s",
        in_contact.as_secs_f64(),
        back.as_secs_f64()
    );
    assert!(
        contact && control,
        "A not back within {bound:?} (contact {contact}, control {control}):\nHAProxy: {:?}\n{}\n{}\n{}",
        proxy.stats(),
        proxy.log(),
        a.log_tail(),
        replicas.logs()
    );
    // HAProxy takes the dead replica out at its next failed checks.
    proxy.wait_status(victim, "DOWN", Duration::from_secs(10));
    assert_ne!(a.status()["BackendState"], "NeedsLogin", "no new login");
    // The survivor runs the periodic jobs (it held them, or took them over from
    // the dead replica) and reaps the dead one, so its sessions end everywhere.
    wait_until(
        "the survivor runs the periodic jobs and reaps the dead replica",
        Duration::from_secs(30),
        || {
            let log = replicas.log(survivor);
            log.contains("this replica runs the periodic jobs now")
                && log.contains("replicas stopped answering")
        },
    );
    eprintln!(
        "failover: the dead replica reaped by the survivor {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
}

/// 1,000 simulated nodes register at once through HAProxy, spread over two
/// replicas that learn of each other's nodes only through the database: every
/// registration succeeds, no address or name is given twice, every node ends
/// with the whole tailnet as its peers, and no replica logged a deadlock.
#[test]
fn a_thousand_registrations_spread_over_replicas_converge_without_duplicates() {
    let nodes: u64 = 1000;
    // Every connection comes from HAProxy's one address: the per-address
    // registration limit would refuse the storm, as it should a real one.
    let replicas = Replicas::start(2, "limits:\n  register_burst: 0\n");
    let proxy = Haproxy::start(&replicas.addrs());
    for i in 0..replicas.len() {
        proxy.wait_status(i, "UP", Duration::from_secs(10));
    }
    let server = replicas.server(0);
    let key = server.reusable_key("bench", &[]);
    let report = server.bench(
        &proxy.url(),
        &key,
        &[
            "--nodes",
            &nodes.to_string(),
            "--concurrency",
            "64",
            "--fanout-rounds",
            "1",
            "--steady",
            "1s",
            "--churn",
            "0s",
            "--deadline",
            "3m",
        ],
    );
    let storm = &report["join_storm"];
    assert_eq!(
        (storm["registered"].as_u64(), storm["converged"].as_u64()),
        (Some(nodes), Some(nodes)),
        "{report:#}\n{}",
        replicas.logs()
    );
    assert_eq!(report["failed"], 0, "{report:#}");
    eprintln!(
        "{nodes} nodes through 2 replicas: converged in {} s",
        storm["convergence_secs"]
    );
    assert_eq!(
        replicas.sql(
            "SELECT count(*), count(DISTINCT ipv4), count(DISTINCT ipv6), count(DISTINCT given_name) FROM nodes"
        ),
        format!("{nodes}|{nodes}|{nodes}|{nodes}")
    );
    // Both replicas took registrations.
    let stats = proxy.stats();
    assert!(stats.iter().all(|b| b.total > 10), "{stats:?}");
    let logs = replicas.logs();
    assert!(!logs.to_lowercase().contains("deadlock"), "{logs}");
}

/// The peer (first label of its DNS name) that `status` routes `prefix` through.
fn primary_for(status: &serde_json::Value, prefix: &str) -> Option<String> {
    status["Peer"].as_object()?.values().find_map(|p| {
        let routes = p["PrimaryRoutes"].as_array()?;
        routes.iter().any(|r| r == prefix).then(|| {
            let name = p["DNSName"].as_str().unwrap_or_default();
            name.split('.').next().unwrap_or_default().to_owned()
        })
    })
}

/// Two subnet routers for one LAN, the primary on replica 0 and the standby on
/// replica 1 with the client that uses the LAN: replica 0 is killed, its router
/// loses its only control session with it, and once the survivor takes the dead
/// replica's sessions away the standby becomes primary, for the survivor and for
/// the client.
#[test]
fn a_subnet_router_on_a_dead_replica_fails_over_to_a_standby_on_a_live_one() {
    const LAN: &str = "192.168.100.0/24";
    let version = newest();
    let mut replicas = Replicas::start(2, "");
    let key = key(replicas.server(0), &["--reusable"]);
    let advertise = format!("--advertise-routes={LAN}");
    let router_a = Client::start(&version, "router-a");
    let router_b = Client::start(&version, "router-b");
    let laptop = Client::start(&version, "laptop");
    let (r0_url, r1_url) = (replicas.server(0).url(), replicas.server(1).url());
    assert_logged_in(&router_a, &router_a.up_with(&r0_url, &key, &[&advertise]));
    assert_logged_in(&router_b, &router_b.up_with(&r1_url, &key, &[&advertise]));
    assert_logged_in(
        &laptop,
        &laptop.up_with(&r1_url, &key, &["--accept-routes"]),
    );

    // router-a's route approved through replica 0 first, so it is primary;
    // router-b's through replica 1.
    for (i, name) in [(0, "router-a"), (1, "router-b")] {
        let server = replicas.server(i);
        wait_until(&format!("{name}'s route"), Duration::from_secs(20), || {
            let routes = server.cli(&["routes", "list", "-o", "json"]).ok().stdout;
            routes.contains(name) && routes.contains(LAN)
        });
        let id = node_id(server, name);
        server
            .cli(&["nodes", "approve-routes", "-i", &id, "-r", LAN])
            .ok();
        if name == "router-a" {
            wait_until("router-a primary", Duration::from_secs(10), || {
                primaries(replicas.server(1)) == ["router-a"]
            });
        }
    }
    laptop.wait_status("the LAN through router-a", Duration::from_secs(10), |s| {
        primary_for(s, LAN).as_deref() == Some("router-a")
    });

    let killed = Instant::now();
    replicas.kill(0);
    let survivor = replicas.server(1);
    let bound = Duration::from_secs(60);
    let moved = poll_until(bound, || primaries(survivor) == ["router-b"]);
    let server_side = killed.elapsed();
    let seen = moved
        && poll_until(bound.saturating_sub(server_side), || {
            primary_for(&laptop.status(), LAN).as_deref() == Some("router-b")
        });
    assert!(
        moved && seen,
        "no failover within {bound:?} (survivor {moved}, client {seen}): {:?}\n{}\n{}",
        primaries(survivor),
        laptop.log_tail(),
        replicas.logs()
    );
    eprintln!(
        "subnet router failover across replicas: router-b primary on the survivor {:.1} s after \
         router-a's replica was killed, and for the client after {:.1} s",
        server_side.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    drop((router_a, router_b));
}

/// A client logs in interactively on replica 0; the admin opens its link on
/// replica 1 and runs what that page prints on replica 1's socket: the client,
/// still waiting on replica 0, is logged in.
#[test]
fn an_interactive_login_waiting_on_one_replica_is_registered_through_another() {
    let version = newest();
    let replicas = Replicas::start(2, "");
    let (r0, r1) = (replicas.server(0), replicas.server(1));
    r0.cli(&["users", "create", "default"]).ok();
    let client = Client::start(&version, "laptop");
    let mut login = client.login_interactively(&r0.url());
    let url = client.wait_auth_url(Duration::from_secs(30));
    let path = url.trim_start_matches(&r0.url()).to_owned();
    let (status, _, page) = http_get(&r1.http_addr, &path);
    assert_eq!(status, 200, "replica 1 shows the link of replica 0: {page}");
    let args = printed_register_command(&page, "default");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let registered = r1.cli(&args).ok();
    assert!(registered.stdout.contains("laptop"), "{registered:?}");
    let begun = Instant::now();
    client.wait_status("logged in", Duration::from_secs(10), |s| {
        s["BackendState"] == "Running"
            && s["Self"]["TailscaleIPs"]
                .as_array()
                .is_some_and(|ips| !ips.is_empty())
    });
    eprintln!(
        "interactive login across replicas: logged in {:.1} s after the command",
        begun.elapsed().as_secs_f64()
    );
    let _ = login.kill();
    let _ = login.wait();
    // Registered once, and the link is spent on both replicas.
    assert_eq!(replicas.sql("SELECT count(*) FROM nodes"), "1");
    for server in [r0, r1] {
        let (status, _, _) = http_get(&server.http_addr, &path);
        assert_eq!(status, 404, "{}", server.url());
    }
}
