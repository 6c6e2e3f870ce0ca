//! DNS as official clients see it: MagicDNS names of peers and of the node
//! itself, nameservers, split DNS, search domains, the extra records file
//! (edited while clients run), a hostname the client changes, a TUN client's
//! resolver at 100.100.100.100 inside a network namespace, and `tailscale
//! cert` through headway's own DNS listener and Pebble.

use crate::clients::{assert_logged_in, key};
use crate::support::pebble::{OrderLocationProxy, Pebble};
use crate::support::tailscale::{Client, free_port, versions};
use crate::support::{Run, Spawn, TestServer, poll_until};
use std::path::Path;
use std::time::Duration;

/// Runs `run` until `done` accepts its result, for at most `timeout`; the
/// last result goes into the failure.
fn wait_for(what: &str, timeout: Duration, run: impl Fn() -> Run, done: impl Fn(&Run) -> bool) {
    let mut last = None;
    let seen = poll_until(timeout, || done(last.insert(run())));
    assert!(seen, "never saw {what}: {last:?}");
}

/// `tailscale dns query NAME [TYPE]` answered by the client's own resolver.
fn query(client: &Client, name: &str, kind: &str) -> Run {
    client.cli(&["dns", "query", name, kind])
}

/// The minor version of `v1.MINOR.PATCH`.
fn minor(version: &str) -> u32 {
    version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// dnsmasq on `addr`:53, answering `db.corp.example` with 10.1.2.3 and nothing
/// else (no upstream): the split-DNS route's real server. Killed on drop.
struct Dnsmasq(std::process::Child);

impl Dnsmasq {
    fn start(addr: &str) -> Dnsmasq {
        Dnsmasq::start_with(std::process::Command::new("dnsmasq"), addr)
    }

    /// dnsmasq run by `command` (inside a namespace, say).
    fn start_with(mut command: std::process::Command, addr: &str) -> Dnsmasq {
        let child = command
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port=53",
                "--pid-file=",
                "--user=root",
                "--address=/db.corp.example/10.1.2.3",
            ])
            .arg(format!("--listen-address={addr}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start dnsmasq (scripts/install-test-deps installs dnsmasq-base)");
        Dnsmasq(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_records(path: &Path, records: &str) {
    // Written aside and renamed, so the server never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, records).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn clients_resolve_magic_dns_names_records_from_a_watched_file_and_new_hostnames() {
    // Only this test uses this loopback address.
    let _split_server = Dnsmasq::start("127.0.0.77");
    for version in versions() {
        let records_dir = tempfile::tempdir().unwrap();
        let records = records_dir.path().join("records.json");
        write_records(
            &records,
            r#"[{"name": "grafana.ts.test", "type": "A", "value": "100.64.50.1"}]"#,
        );
        let port = free_port();
        let server = TestServer::spawn_with(Spawn {
            port: Some(port),
            extra_config: format!(
                "dns:\n  magic_dns: true\n  base_domain: ts.test\n  override_local_dns: true\n  \
                 nameservers:\n    global: [192.0.2.53]\n    split:\n      corp.example: [127.0.0.77]\n  \
                 search_domains: [search.example]\n  extra_records_path: {}\n",
                records.display()
            ),
            ..Spawn::default()
        });
        let key = key(&server, &["--reusable"]);
        let a = Client::start(&version, "dns-a");
        let b = Client::start(&version, "dns-b");
        for client in [&a, &b] {
            let up = client.up_with(&server.url(), &key, &["--accept-dns"]);
            assert_logged_in(client, &up);
        }
        let (ip_a, ip_b) = (a.ipv4(), b.ipv4());
        a.wait_status("dns-b", Duration::from_secs(30), |s| {
            s["Peer"]
                .as_object()
                .is_some_and(|p| p.values().any(|p| p["DNSName"] == "dns-b.ts.test."))
        });
        assert_eq!(a.status()["Self"]["DNSName"], "dns-a.ts.test.");

        // What the client says it was given.
        let status = a.cli(&["dns", "status"]);
        for expected in [
            "192.0.2.53",
            "corp.example",
            "127.0.0.77",
            "search.example",
            "ts.test",
        ] {
            assert!(
                status.stdout.contains(expected),
                "{version}: `tailscale dns status` lacks {expected}: {status:?}"
            );
        }

        // MagicDNS answers for a peer, the node itself, IPv6, and the records file.
        let peer = query(&a, "dns-b.ts.test.", "A");
        assert!(peer.stdout.contains(&ip_b), "{version}: {peer:?}");
        let own = query(&a, "dns-a.ts.test.", "A");
        assert!(own.stdout.contains(&ip_a), "{version}: {own:?}");
        // Clients from capability 116 (v1.84) answer AAAA for peers when the
        // server sends `magicdns-aaaa`; older ones answer only A for them.
        if minor(&version) >= 84 {
            let ip6_b = b.cli(&["ip", "-6"]).stdout.trim().to_owned();
            let peer6 = query(&a, "dns-b.ts.test.", "AAAA");
            assert!(
                ip6_b.starts_with("fd7a:") && peer6.stdout.contains(&ip6_b),
                "{version}: {ip6_b} {peer6:?}"
            );
        }
        assert!(
            query(&a, "grafana.ts.test.", "A")
                .stdout
                .contains("100.64.50.1")
        );
        // Split DNS: the client forwards corp.example to its own server.
        let split = query(&a, "db.corp.example.", "A");
        assert!(split.stdout.contains("10.1.2.3"), "{version}: {split:?}");

        // An edited file reaches running clients; a broken one changes nothing.
        write_records(
            &records,
            r#"[{"name": "grafana.ts.test", "type": "A", "value": "100.64.50.2"}]"#,
        );
        wait_for(
            "the edited record",
            Duration::from_secs(20),
            || query(&b, "grafana.ts.test.", "A"),
            |out| out.stdout.contains("100.64.50.2"),
        );
        write_records(
            &records,
            r#"[{"name": "grafana.ts.test", "type": "A", "value": "100.64.50.300"}]"#,
        );
        let refused = poll_until(Duration::from_secs(10), || {
            server
                .log()
                .contains("the extra DNS records file was refused")
        });
        assert!(refused, "{}", server.log());
        assert!(
            server
                .log()
                .contains("\\\"100.64.50.300\\\" is not an IPv4 address")
                || server
                    .log()
                    .contains("\"100.64.50.300\" is not an IPv4 address"),
            "{}",
            server.log()
        );
        assert!(
            query(&b, "grafana.ts.test.", "A")
                .stdout
                .contains("100.64.50.2")
        );

        // A hostname the client changes moves its MagicDNS name for its peers.
        let set = b.cli(&["set", "--hostname", "renamed-b"]);
        assert_eq!(set.code, 0, "{set:?}");
        a.wait_status("renamed-b", Duration::from_secs(30), |s| {
            s["Peer"]
                .as_object()
                .is_some_and(|p| p.values().any(|p| p["DNSName"] == "renamed-b.ts.test."))
        });
        wait_for(
            "the new name",
            Duration::from_secs(20),
            || query(&a, "renamed-b.ts.test.", "A"),
            |out| out.stdout.contains(&ip_b),
        );
        let list = server.cli(&["nodes", "list"]).ok().stdout;
        assert!(list.contains("renamed-b"), "{list}");
    }
}

#[test]
fn tailscale_cert_gets_a_certificate_through_headways_dns_listener() {
    for version in versions() {
        let dns_port = free_port();
        let pebble = Pebble::start_with_dns(&format!("127.0.0.1:{dns_port}"));
        let port = free_port();
        let server = TestServer::spawn_with(Spawn {
            port: Some(port),
            extra_config: format!(
                "dns:\n  magic_dns: true\n  base_domain: ts.test\n  authoritative:\n    \
                 listen_addr: 127.0.0.1:{dns_port}\n    nameserver: ns.test\n"
            ),
            ..Spawn::default()
        });
        let key = key(&server, &[]);
        let ca = pebble.api_ca();
        let acme = OrderLocationProxy::start(&pebble);
        let client = Client::start_with_env(
            &version,
            "certbox",
            &[
                ("TS_DEBUG_ACME_DIRECTORY_URL", &acme.directory()),
                ("SSL_CERT_FILE", ca.to_str().unwrap()),
            ],
        );
        let up = client.up_with_key(&server.url(), &key);
        assert_logged_in(&client, &up);
        assert_eq!(client.status()["CertDomains"][0], "certbox.ts.test");

        let out = tempfile::tempdir().unwrap();
        let (cert, key_file) = (out.path().join("cert.pem"), out.path().join("key.pem"));
        let run = client.cli(&[
            "cert",
            "--cert-file",
            cert.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
            "certbox.ts.test",
        ]);
        assert_eq!(
            run.code,
            0,
            "{version}: {run:?}\n{}\n{}\n{}",
            client.log_tail(),
            server.log(),
            pebble.log()
        );
        let text = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(&cert)
            .output()
            .expect("run openssl");
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("DNS:certbox.ts.test"), "{version}: {text}");
        assert!(
            server.log().contains("published an ACME challenge record"),
            "{}",
            server.log()
        );

        // Another node's name is not this node's to prove.
        let other = client.cli(&["cert", "someone-else.ts.test"]);
        assert_ne!(other.code, 0, "{other:?}");
    }
}

/// Asks `server` (from inside `ns`) for the A records of `name` over UDP; the
/// addresses in the answer.
fn resolve_a_in(ns: &crate::support::netns::Netns, server: &str, name: &str) -> Vec<String> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    query.metadata.recursion_desired = true;
    let bytes = query.to_vec().unwrap();
    let server = server.to_owned();
    ns.enter(move || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket.send_to(&bytes, (server.as_str(), 53)).ok();
        let mut buf = [0u8; 1500];
        let Ok(len) = socket.recv(&mut buf) else {
            return Vec::new();
        };
        Message::from_vec(&buf[..len])
            .map(|m| {
                m.answers
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(a.0.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// A TUN client in a network namespace of its own resolves its peer's MagicDNS
/// name and an extra record through its resolver at 100.100.100.100, over the
/// tunnel interface; with `--accept-dns` it points its machine's resolv.conf at
/// that resolver, and the machine's own lookups reach MagicDNS (through the
/// search domain) and, for the split domain, a real DNS server on another
/// namespace's address.
#[test]
fn a_tun_client_answers_magic_dns_at_its_resolver_address() {
    for version in versions() {
        tun_client_resolves(&version);
    }
}

/// The split-DNS server's machine on the uplink switch.
const CORP_DNS: &str = "10.99.0.53";

fn tun_client_resolves(version: &str) {
    let (hub, server) = crate::routes::hub_with_server_config(&format!(
        "dns:\n  magic_dns: true\n  base_domain: ts.test\n  \
         nameservers:\n    split:\n      corp.example: [{CORP_DNS}]\n  extra_records:\n    \
         - {{name: wiki.ts.test, type: A, value: 100.64.77.7}}\n"
    ));
    let key = key(&server, &["--reusable"]);
    let corp_ns = crate::routes::machine(&hub, "corpdns", 53);
    let _corp_dns = Dnsmasq::start_with(corp_ns.command("dnsmasq"), CORP_DNS);
    let laptop_ns = crate::routes::machine(&hub, "laptop", 11);
    let desk_ns = crate::routes::machine(&hub, "desk", 12);
    let laptop = Client::start_in(&laptop_ns, version, "laptop");
    let desk = Client::start_in(&desk_ns, version, "desk");
    let up = laptop.up_with(&server.url(), &key, &["--accept-dns"]);
    assert_logged_in(&laptop, &up);
    let up = desk.up_with_key(&server.url(), &key);
    assert_logged_in(&desk, &up);
    let desk_ip = desk.ipv4();
    let mut answer = Vec::new();
    let resolved = poll_until(Duration::from_secs(30), || {
        answer = resolve_a_in(&laptop_ns, "100.100.100.100", "desk.ts.test.");
        answer == [desk_ip.clone()]
    });
    assert!(
        resolved,
        "{version}: 100.100.100.100 answered {answer:?} for desk.ts.test, not {desk_ip}\n{}",
        laptop.log_tail()
    );
    assert_eq!(
        resolve_a_in(&laptop_ns, "100.100.100.100", "wiki.ts.test."),
        ["100.64.77.7"]
    );

    // The machine's own resolver: resolv.conf names 100.100.100.100 and the
    // tailnet's search domain, a bare peer name resolves through that domain,
    // and the split domain reaches the server at CORP_DNS.
    let mut conf = String::new();
    let managed = poll_until(Duration::from_secs(20), || {
        conf = laptop.resolv_conf();
        conf.contains("nameserver 100.100.100.100")
    });
    assert!(
        managed,
        "{version}: resolv.conf is\n{conf}\n{}",
        laptop.log_tail()
    );
    assert!(conf.contains("ts.test"), "{version}: {conf}");
    assert_eq!(laptop.os_resolve("desk"), [desk_ip], "{version}");
    let mut corp = Vec::new();
    let split = poll_until(Duration::from_secs(20), || {
        corp = laptop.os_resolve("db.corp.example");
        corp == ["10.1.2.3"]
    });
    assert!(
        split,
        "{version}: db.corp.example resolved to {corp:?}\n{}",
        laptop.log_tail()
    );
}
