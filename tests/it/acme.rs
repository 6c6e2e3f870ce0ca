//! ACME against Pebble, Let's Encrypt's test service: headway orders a
//! certificate for `localhost` over HTTP-01 and over TLS-ALPN-01, serves it on
//! `listen_addr` (HTTPS next to plain HTTP), keeps it across a restart without a
//! new order, and official Tailscale clients that trust only Pebble's root log in
//! over https and relay through the embedded DERP on the same port.

use crate::clients::{assert_pings_via_derp, assert_tcp_crosses, joined_pair_at};
use crate::support::pebble::{Pebble, https_get};
use crate::support::tailscale::{free_port, versions};
use crate::support::{Spawn, TestServer, field_after, test_config};
use std::path::Path;
use std::time::{Duration, Instant};

const GOT_CERTIFICATE: &str = "got a certificate from the ACME service";

/// A headway at `https://localhost:<port>` that gets its certificate from `pebble`.
fn acme_server(
    pebble: &Pebble,
    port: u16,
    acme: &str,
    dir: Option<tempfile::TempDir>,
) -> TestServer {
    let dir = dir.unwrap_or_else(|| tempfile::Builder::new().prefix("hw").tempdir().unwrap());
    let config = test_config(
        dir.path(),
        &format!(
            "acme_url: {}\nacme_email: admin@example.com\ntls_letsencrypt_hostname: localhost\n\
             tls_letsencrypt_cache_dir: {}\n{acme}",
            pebble.directory(),
            dir.path().join("acme").display()
        ),
    )
    .replace(
        "server_url: http://127.0.0.1:8080",
        &format!("server_url: https://localhost:{port}"),
    )
    .replace(
        "listen_addr: 127.0.0.1:0",
        &format!("listen_addr: 127.0.0.1:{port}"),
    );
    TestServer::spawn_with(Spawn {
        config_file: Some(config),
        dir: Some(dir),
        // headway must trust Pebble's API, as it trusts Let's Encrypt's through
        // the system roots.
        env: vec![(
            "SSL_CERT_FILE".into(),
            pebble.api_ca().display().to_string(),
        )],
        ..Spawn::default()
    })
}

/// Waits for `marker` in the server's log.
fn wait_for_log(server: &TestServer, pebble: &Pebble, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.log().contains(marker) {
        assert!(
            Instant::now() < deadline,
            "no {marker:?} within 60 s:\n{}\npebble:\n{}",
            server.log(),
            pebble.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_https_works(root: &Path, port: u16) {
    assert_eq!(https_get(root, port, "/health"), Ok(200));
}

#[test]
fn http01_gets_a_certificate_that_clients_and_the_relay_use_and_a_restart_keeps_it() {
    let (port, http01) = (free_port(), free_port());
    let pebble = Pebble::start(http01, free_port());
    let server = acme_server(
        &pebble,
        port,
        // Quoted, so that acme_server's rewrite of `listen_addr: 127.0.0.1:0`
        // leaves it alone.
        &format!(
            "tls_letsencrypt_listen: 127.0.0.1:{http01}\n\
             grpc_listen_addr: \"127.0.0.1:0\"\ngrpc_allow_insecure: false\n\
             limits:\n  handshake_timeout: 2s\n"
        ),
        None,
    );
    // Plain HTTP works at once, HTTPS once the certificate is there.
    let (status, _, _) = crate::support::http_get(&server.http_addr, "/health");
    assert_eq!(status, 200);
    wait_for_log(&server, &pebble, GOT_CERTIFICATE);
    let root = pebble.issuing_root();
    assert_https_works(&root, port);
    // The HTTP-01 listener sends everything else to the https server URL.
    let redirect = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .arg(format!("http://127.0.0.1:{http01}/register/abc"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&redirect.stdout),
        format!("308 https://localhost:{port}/register/abc")
    );
    // A connection to it that says nothing is closed at the handshake timeout,
    // as on listen_addr.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", http01)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let opened = Instant::now();
    let read = std::io::Read::read(&mut silent, &mut [0u8; 1]);
    assert!(
        matches!(read, Ok(0)) && opened.elapsed() < Duration::from_secs(8),
        "{read:?} after {:?}",
        opened.elapsed()
    );
    // Remote gRPC presents the same certificate: the CLI, trusting only
    // Pebble's root and checking the name, works over it with an API key.
    let log = server.log();
    let grpc = field_after(&log, "admin API on TCP", "addr=").expect("remote gRPC is on");
    assert!(log.contains("tls=true"), "{log}");
    let grpc_port = grpc.rsplit(':').next().unwrap();
    let api_key = server.cli(&["apikeys", "create", "-e", "1h"]).ok().stdout;
    let remote = std::process::Command::new(crate::support::headway_bin())
        .current_dir(server.dir.path())
        .env("HOME", server.dir.path())
        .env("SSL_CERT_FILE", &root)
        .env("HEADWAY_CLI_ADDRESS", format!("localhost:{grpc_port}"))
        .env("HEADWAY_CLI_API_KEY", api_key.trim())
        .env("HEADWAY_UNIX_SOCKET", server.dir.path().join("absent.sock"))
        .args(["users", "list"])
        .output()
        .unwrap();
    assert!(
        remote.status.success(),
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    let key_mode = std::fs::metadata(server.dir.path().join("acme/localhost.key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(key_mode.ok(), Some(0o600));

    // Official clients trusting only Pebble's root: they log in over https and,
    // with UDP off, every packet crosses the embedded relay on the same port.
    let version = versions().pop().expect("a client version");
    let root_text = root.display().to_string();
    let env = [
        ("SSL_CERT_FILE", root_text.as_str()),
        ("TS_DEBUG_ALWAYS_USE_DERP", "true"),
    ];
    let login = format!("https://localhost:{port}");
    let (a, _b, _ip_a, ip_b) = joined_pair_at(&server, &login, &version, &env);
    assert_pings_via_derp(&a, &ip_b, "headway", 3, &server.log());
    assert_tcp_crosses(&a, &ip_b, &version);
    drop(a);

    // A restart serves the cached certificate: no new order.
    let dir = server.kill();
    let again = acme_server(
        &pebble,
        port,
        &format!("tls_letsencrypt_listen: 127.0.0.1:{http01}\n"),
        Some(dir),
    );
    wait_for_log(&again, &pebble, "serving the cached ACME certificate");
    assert_https_works(&root, port);
    std::thread::sleep(Duration::from_secs(1));
    assert!(!again.log().contains(GOT_CERTIFICATE), "{}", again.log());
}

#[test]
fn tls_alpn01_is_answered_on_the_https_port() {
    let port = free_port();
    // Pebble validates TLS-ALPN-01 on headway's own port, as Let's Encrypt does on 443.
    let pebble = Pebble::start(free_port(), port);
    let server = acme_server(
        &pebble,
        port,
        "tls_letsencrypt_challenge_type: TLS-ALPN-01\n",
        None,
    );
    wait_for_log(&server, &pebble, GOT_CERTIFICATE);
    assert_https_works(&pebble.issuing_root(), port);
}

#[test]
fn an_unreachable_acme_service_is_retried_and_plain_http_keeps_working() {
    let port = free_port();
    let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
    let config = test_config(
        dir.path(),
        &format!(
            "acme_url: https://127.0.0.1:{}/dir\ntls_letsencrypt_hostname: localhost\n\
             tls_letsencrypt_cache_dir: {}\ntls_letsencrypt_listen: 127.0.0.1:{}\n",
            free_port(),
            dir.path().join("acme").display(),
            free_port()
        ),
    )
    .replace(
        "listen_addr: 127.0.0.1:0",
        &format!("listen_addr: 127.0.0.1:{port}"),
    );
    let server = TestServer::spawn_with(Spawn {
        config_file: Some(config),
        dir: Some(dir),
        ..Spawn::default()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .log()
        .contains("could not get a certificate from the ACME service")
    {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.log().contains("retry_in=60s"), "{}", server.log());
    let (status, _, _) = crate::support::http_get(&server.http_addr, "/health");
    assert_eq!(status, 200);
}
