//! Access policies with official clients (userspace networking): allowed ports
//! are reachable and denied ones are not, peers appear and disappear as the
//! policy changes (file edit, SIGHUP, `policy set`), tags follow `tagOwners`, and
//! Tailscale SSH is accepted, held for a check, or refused as the policy says.

use crate::clients::assert_logged_in;
use crate::support::tailscale::{Client, echo_server, free_port, versions};
use crate::support::{Spawn, TestServer, http_get, wait_until};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A server whose policy comes from a file the test rewrites.
fn server_with_policy_file(policy: &str) -> (TestServer, PathBuf) {
    let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
    let file = dir.path().join("acl.hujson");
    std::fs::write(&file, policy).unwrap();
    let server = TestServer::spawn_with(Spawn {
        port: Some(free_port()),
        extra_config: format!("policy:\n  mode: file\n  path: {}\n", file.display()),
        dir: Some(dir),
        ..Spawn::default()
    });
    (server, file)
}

/// Starts a client and logs it in with `key` (and more `tailscale up` flags).
fn join(server: &TestServer, version: &str, name: &str, key: &str, flags: &[&str]) -> Client {
    let client = Client::start(version, name);
    let up = client.up_with(&server.url(), key, flags);
    assert_logged_in(&client, &up);
    client
}

/// Whether a TCP line from `from` to `to_ip:port` comes back within a few
/// seconds (a denied port gets no answer at all: the peer drops the packets).
pub(crate) fn crosses(from: &Client, to_ip: &str, port: u16) -> bool {
    let target = format!("{to_ip}:{port}").parse().unwrap();
    from.tcp_exchange_within(target, b"ping", Duration::from_secs(6))
        .is_ok_and(|back| back == b"ping")
}

fn peer_names(client: &Client) -> Vec<String> {
    let status = client.status();
    let mut names: Vec<String> = status["Peer"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, p)| p["HostName"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

fn policy_v1(admin_port: u16, bob_port: u16) -> String {
    format!(
        r#"{{
  // Admins reach the server on one port, bob on another; everyone reaches
  // their own devices.
  "groups": {{"group:admins": ["alice@"]}},
  "tagOwners": {{"tag:server": ["group:admins"]}},
  "acls": [
    {{"action": "accept", "src": ["group:admins"], "dst": ["tag:server:{admin_port}"]}},
    {{"action": "accept", "src": ["bob@"], "dst": ["tag:server:{bob_port}"]}},
    {{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}},
  ],
}}"#
    )
}

fn policy_v2(admin_port: u16, bob_port: u16) -> String {
    format!(
        r#"{{
  // Bob may use the admin port too; nobody reaches their own other devices.
  "groups": {{"group:admins": ["alice@"]}},
  "tagOwners": {{"tag:server": ["group:admins"]}},
  "acls": [
    {{"action": "accept", "src": ["group:admins", "bob@"], "dst": ["tag:server:{admin_port}"]}},
    {{"action": "accept", "src": ["bob@"], "dst": ["tag:server:{bob_port}"]}},
  ],
}}"#
    )
}

/// Writes `text` to the policy file, keeping its length and modification time,
/// so that only a SIGHUP (not the file watcher) can notice the change.
fn rewrite_unnoticed(file: &Path, text: &str) {
    let old = std::fs::metadata(file).unwrap();
    let len = old.len() as usize;
    assert!(text.len() <= len, "the new policy must not be longer");
    let padded = format!("{text}{}", " ".repeat(len - text.len()));
    std::fs::write(file, padded).unwrap();
    let f = std::fs::File::options().write(true).open(file).unwrap();
    f.set_modified(old.modified().unwrap()).unwrap();
}

#[test]
fn a_policy_file_decides_who_reaches_what_and_changes_take_effect_at_once() {
    for version in versions() {
        let (admin_port, bob_port) = (echo_server(), echo_server());
        let (server, file) = server_with_policy_file(&policy_v1(admin_port, bob_port));
        assert!(
            server.log().contains("access policy in force from file"),
            "the start-up line names the policy:\n{}",
            server.log()
        );
        let alice = server.reusable_key("alice", &[]);
        let bob = server.reusable_key("bob", &[]);
        let tagged = server.reusable_key("alice", &["--tags", "tag:server"]);
        let srv = join(&server, &version, "srv", &tagged, &[]);
        let laptop = join(&server, &version, "laptop", &alice, &[]);
        let tablet = join(&server, &version, "tablet", &alice, &[]);
        let phone = join(&server, &version, "phone", &bob, &[]);
        let (srv_ip, tablet_ip, laptop_ip) = (srv.ipv4(), tablet.ipv4(), laptop.ipv4());

        // Allowed ports cross, denied ones do not, for a group, a user and
        // autogroup:self; a tag is the destination.
        wait_until(
            "laptop reaches the admin port",
            Duration::from_secs(30),
            || crosses(&laptop, &srv_ip, admin_port),
        );
        assert!(
            !crosses(&laptop, &srv_ip, bob_port),
            "{version}: alice got bob's port"
        );
        wait_until("phone reaches bob's port", Duration::from_secs(30), || {
            crosses(&phone, &srv_ip, bob_port)
        });
        assert!(
            !crosses(&phone, &srv_ip, admin_port),
            "{version}: bob got the admin port"
        );
        wait_until(
            "laptop reaches alice's tablet",
            Duration::from_secs(30),
            || crosses(&laptop, &tablet_ip, admin_port),
        );
        assert!(
            !crosses(&phone, &laptop_ip, admin_port),
            "{version}: bob reached alice's laptop"
        );
        // Bob's phone is not told about alice's devices at all.
        assert_eq!(peer_names(&phone), ["srv"], "{version}");
        assert_eq!(peer_names(&laptop), ["srv", "tablet"], "{version}");

        // A file edit: bob gains the admin port, alice's devices lose each other.
        std::fs::write(&file, policy_v2(admin_port, bob_port)).unwrap();
        wait_until(
            "bob reaches the admin port after the edit",
            Duration::from_secs(20),
            || crosses(&phone, &srv_ip, admin_port),
        );
        wait_until(
            "the tablet leaves the laptop's peers",
            Duration::from_secs(20),
            || peer_names(&laptop) == ["srv"],
        );
        assert!(
            !crosses(&laptop, &tablet_ip, admin_port),
            "{version}: self rule still on"
        );
        assert!(
            server.log().contains("reloaded the access policy"),
            "{}",
            server.log()
        );

        // A broken edit is refused and the running policy stays.
        std::fs::write(&file, "{ \"acls\": [ { \"action\": \"accept\" ").unwrap();
        wait_until(
            "the broken policy is refused",
            Duration::from_secs(20),
            || server.log().contains("the new access policy was refused"),
        );
        assert!(
            server.log().contains("acl.hujson:1:"),
            "the refusal names file and line:\n{}",
            server.log()
        );
        assert!(
            crosses(&phone, &srv_ip, admin_port),
            "{version}: policy lost"
        );

        // SIGHUP reads the file again (here, a change the watcher cannot see).
        std::fs::write(&file, format!("{:<4096}", policy_v2(admin_port, bob_port))).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        rewrite_unnoticed(&file, &policy_v1(admin_port, bob_port));
        let before = server.log().matches("SIGHUP").count();
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        wait_until("SIGHUP reloads the policy", Duration::from_secs(20), || {
            server.log().matches("SIGHUP").count() > before
        });
        wait_until(
            "bob loses the admin port again",
            Duration::from_secs(20),
            || !crosses(&phone, &srv_ip, admin_port),
        );
        wait_until(
            "alice's devices see each other again",
            Duration::from_secs(20),
            || peer_names(&laptop) == ["srv", "tablet"],
        );
    }
}

/// `tailscale ssh user@ip -- command…` from `client`, bounded in time.
pub(crate) fn ssh(client: &Client, target: &str, command: &[&str]) -> std::process::Child {
    let mut cmd = std::process::Command::new(client.bin_path("tailscale"));
    cmd.arg(format!("--socket={}", client.socket_path().display()))
        .args(["ssh", target, "--"])
        .args(command)
        .env("HOME", client.socket_path().parent().unwrap())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd.spawn().expect("run tailscale ssh")
}

/// Waits for an ssh run to end (killing it after `timeout`): exit code and output.
pub(crate) fn finish(mut child: std::process::Child, timeout: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status.code(), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return (
                None,
                format!(
                    "(killed after {timeout:?}) {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The id of the SSH check the server opened last, from its log.
pub(crate) fn ssh_check_id(server: &TestServer) -> String {
    wait_until(
        "the server opens an SSH check",
        Duration::from_secs(30),
        || server.log().contains("SSH check pending"),
    );
    let log = server.log();
    let mut auth_id = None;
    for line in log.lines().filter(|l| l.contains("SSH check pending")) {
        if let Some(id) = line
            .split(|c: char| c.is_whitespace() || c == '"')
            .find(|w| w.starts_with("hskey-authreq-") && w.len() > 20)
        {
            auth_id = Some(id.trim_end_matches(',').to_owned());
        }
    }
    auth_id.unwrap_or_else(|| panic!("no auth id in the log:\n{log}"))
}

const SSH_POLICY: &str = r#"{
  "groups": {"group:admins": ["alice@"]},
  "tagOwners": {"tag:server": ["group:admins"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  "ssh": [
    {"action": "accept", "src": ["group:admins"], "dst": ["tag:server"], "users": ["root"]},
    {"action": "check", "src": ["bob@"], "dst": ["tag:server"], "users": ["root"], "checkPeriod": "always"},
  ],
  "sshTests": [{"src": "alice@", "dst": ["tag:server"], "accept": ["root"]}],
}"#;

#[test]
fn tailscale_ssh_is_accepted_checked_or_refused_as_the_policy_says() {
    for version in versions() {
        let (server, _file) = server_with_policy_file(SSH_POLICY);
        let tagged = server.reusable_key("alice", &["--tags", "tag:server"]);
        let srv = join(&server, &version, "srv", &tagged, &["--ssh"]);
        let laptop = join(
            &server,
            &version,
            "laptop",
            &server.reusable_key("alice", &[]),
            &[],
        );
        let phone = join(
            &server,
            &version,
            "phone",
            &server.reusable_key("bob", &[]),
            &[],
        );
        let other = join(
            &server,
            &version,
            "other",
            &server.reusable_key("carol", &[]),
            &[],
        );
        let target = format!("root@{}", srv.ipv4());

        // An accept rule: in at once.
        let mut out = (None, String::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        while out.0 != Some(0) && Instant::now() < deadline {
            out = finish(
                ssh(&laptop, &target, &["echo", "ssh-accepted"]),
                Duration::from_secs(30),
            );
        }
        assert!(
            out.0 == Some(0) && out.1.contains("ssh-accepted"),
            "{version}: alice's ssh: {out:?}\n{}",
            srv.log_tail()
        );

        // No rule: refused.
        let refused = finish(
            ssh(&other, &target, &["echo", "in"]),
            Duration::from_secs(30),
        );
        assert!(
            refused.0 != Some(0) && !refused.1.contains("\nin"),
            "{version}: carol got in: {refused:?}"
        );

        // A check rule: held until an admin approves the check it names.
        let pending = ssh(&phone, &target, &["echo", "ssh-checked"]);
        let auth_id = ssh_check_id(&server);
        let (status, _, page) = http_get(&server.http_addr, &format!("/auth/{auth_id}"));
        assert!(
            status == 200 && page.contains(&format!("auth approve --auth-id {auth_id}")),
            "{status} {page}"
        );
        server.cli(&["auth", "approve", "--auth-id", &auth_id]).ok();
        let checked = finish(pending, Duration::from_secs(60));
        assert!(
            checked.0 == Some(0) && checked.1.contains("ssh-checked"),
            "{version}: bob's checked ssh: {checked:?}\n{}",
            server.log()
        );

        // A policy whose sshTests fail is refused by `policy check`.
        let bad = server.dir.path().join("bad.hujson");
        std::fs::write(
            &bad,
            SSH_POLICY.replace(
                r#""sshTests": [{"src": "alice@""#,
                r#""sshTests": [{"src": "carol@""#,
            ),
        )
        .unwrap();
        let check = server
            .cli(&["policy", "check", "-f", bad.to_str().unwrap()])
            .failed();
        assert!(check.stderr.contains("test(s) failed"), "{check:?}");
    }
}

const TAG_POLICY: &str = r#"{
  "groups": {"group:admins": ["alice@"]},
  "tagOwners": {"tag:server": ["group:admins"], "tag:web": ["tag:server"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}"#;

/// The `nodes list -o json` entry named `name`.
fn listed(server: &TestServer, name: &str) -> serde_json::Value {
    let out = server.cli(&["nodes", "list", "-o", "json"]).ok().stdout;
    let nodes: serde_json::Value = serde_json::from_str(&out).unwrap();
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["given_name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no node {name}: {out}"))
}

#[test]
fn requested_tags_need_their_owners_and_a_tagged_node_belongs_to_its_tags() {
    for version in versions() {
        let (server, _file) = server_with_policy_file(TAG_POLICY);
        let alice = server.reusable_key("alice", &[]);
        let bob = server.reusable_key("bob", &[]);

        // Bob owns no tag: asking for one refuses the registration.
        let intruder = Client::start(&version, "intruder");
        let up = intruder.up_with(&server.url(), &bob, &["--advertise-tags=tag:server"]);
        let said = format!("{}{}", up.stdout, up.stderr);
        assert!(
            up.code != 0 && said.contains("requested tags"),
            "{version}: bob got tag:server: {up:?}"
        );
        assert!(
            !server
                .cli(&["nodes", "list", "-o", "json"])
                .ok()
                .stdout
                .contains("intruder"),
            "{version}: a refused node was created"
        );

        // Alice owns tag:server through group:admins: granted, and the node is the tag's.
        let web = join(
            &server,
            &version,
            "web",
            &alice,
            &["--advertise-tags=tag:server"],
        );
        let node = listed(&server, "web");
        assert_eq!(
            node["tags"],
            serde_json::json!(["tag:server"]),
            "{version}: {node}"
        );
        assert_eq!(node["user"]["name"], "tagged-devices", "{version}: {node}");
        let status = web.status();
        let user_id = status["Self"]["UserID"].as_u64().unwrap();
        assert_eq!(
            status["User"][user_id.to_string()]["LoginName"],
            "tagged-devices",
            "{version}: {status:#}"
        );

        // An admin may only apply tags the policy defines, and never none.
        let id = node["id"].to_string();
        let undefined = server
            .cli(&["nodes", "tag", "-i", &id, "-t", "tag:nope"])
            .failed();
        assert!(undefined.stderr.contains("tagOwners"), "{undefined:?}");
        let none = server.cli(&["nodes", "tag", "-i", &id]).failed();
        assert!(none.stderr.contains("at least one tag"), "{none:?}");
        server
            .cli(&["nodes", "tag", "-i", &id, "-t", "tag:web"])
            .ok();
        assert_eq!(
            listed(&server, "web")["tags"],
            serde_json::json!(["tag:web"])
        );
    }
}

#[test]
fn in_database_mode_policy_set_opens_and_closes_access_and_bad_policies_are_refused() {
    for version in versions() {
        let server = TestServer::spawn_with(Spawn {
            port: Some(free_port()),
            extra_config: "policy:\n  mode: database\n".into(),
            ..Spawn::default()
        });
        assert!(
            server.log().contains("no policy has been set yet"),
            "{}",
            server.log()
        );
        let port = echo_server();
        let a = join(
            &server,
            &version,
            "node-a",
            &server.reusable_key("alice", &[]),
            &[],
        );
        let b = join(
            &server,
            &version,
            "node-b",
            &server.reusable_key("bob", &[]),
            &[],
        );
        let b_ip = b.ipv4();
        wait_until(
            "all traffic allowed before any policy",
            Duration::from_secs(30),
            || crosses(&a, &b_ip, port),
        );

        let dir = server.dir.path();
        let set = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            server.cli(&["policy", "set", "-f", path.to_str().unwrap()])
        };
        // Only bob → alice: a may no longer reach b, and no longer sees it.
        let one_way = r#"{"acls": [{"action": "accept", "src": ["bob@"], "dst": ["alice@:*"]}]}"#;
        let done = set("one-way.hujson", one_way).ok();
        assert!(done.stdout.contains("Policy updated."), "{done:?}");
        wait_until("a loses b", Duration::from_secs(10), || {
            !crosses(&a, &b_ip, port)
        });
        // Visibility is mutual even for a one-way rule: a still sees b.
        assert_eq!(peer_names(&a), ["node-b"], "{version}");
        let got = server.cli(&["policy", "get"]).ok();
        assert_eq!(got.stdout.trim(), one_way);

        // Nobody → nobody: the peers go away.
        set("deny.hujson", r#"{"acls": []}"#).ok();
        wait_until("b leaves a's peers", Duration::from_secs(10), || {
            peer_names(&a).is_empty()
        });

        // Refused: a syntax error (with its line), a failing test; the policy stays.
        let broken = set(
            "broken.hujson",
            "{\n  \"acls\": [\n    {\"action\": \"accept\",,}\n  ]\n}",
        )
        .failed();
        assert!(broken.stderr.contains(":3:"), "{broken:?}");
        let failing = set(
            "failing.hujson",
            r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:*"]}],
                "tests": [{"src": "bob@", "accept": ["alice@:22"]}]}"#,
        )
        .failed();
        assert!(failing.stderr.contains("test(s) failed"), "{failing:?}");
        let failing_ssh = set(
            "failing-ssh.hujson",
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
                "ssh": [{"action": "accept", "src": ["alice@"], "dst": ["alice@"], "users": ["root"]}],
                "sshTests": [{"src": "bob@", "dst": ["alice@"], "accept": ["root"]}]}"#,
        )
        .failed();
        assert!(
            failing_ssh.stderr.contains("test(s) failed"),
            "{failing_ssh:?}"
        );
        assert_eq!(
            server.cli(&["policy", "get"]).ok().stdout.trim(),
            r#"{"acls": []}"#
        );

        // Everyone again: access comes back at once.
        set(
            "open.hujson",
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
        )
        .ok();
        wait_until("a reaches b again", Duration::from_secs(10), || {
            crosses(&a, &b_ip, port)
        });

        // A policy may name a user who does not exist yet: carol matches once she
        // joins, with no reload.
        set(
            "carol.hujson",
            r#"{"acls": [{"action": "accept", "src": ["carol@"], "dst": ["bob@:*"]}]}"#,
        )
        .ok();
        let c = join(
            &server,
            &version,
            "node-c",
            &server.reusable_key("carol", &[]),
            &[],
        );
        wait_until(
            "carol's new node reaches b",
            Duration::from_secs(30),
            || crosses(&c, &b_ip, port),
        );
        assert!(!crosses(&a, &b_ip, port), "{version}: alice reaches b");
    }
}
