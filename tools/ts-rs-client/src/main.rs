//! A tailnet node built on Tailscale's Rust implementation (the `tailscale`
//! crate), for headway's interop test: it joins with a pre-auth key, echoes
//! TCP on its tailnet address, and can send one line to another node.
//!
//! ```text
//! ts-rs-client CONTROL_URL AUTH_KEY HOSTNAME KEY_FILE ECHO_PORT [DIAL_ADDR MESSAGE]
//! ```
//!
//! Prints `ready <ipv4>` once it has an address, then, with `DIAL_ADDR`,
//! `echoed <message>` (or `dial failed: <why>`) once the line came back, and
//! keeps echoing until killed. Both ends speak the test suite's line protocol:
//! the dialer sends one line, the echo server sends it back and closes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // Logs go to stderr, as RUST_LOG says (the test keeps them for its failures).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 && args.len() != 7 {
        eprintln!(
            "usage: ts-rs-client CONTROL_URL AUTH_KEY HOSTNAME KEY_FILE ECHO_PORT [DIAL_ADDR MESSAGE]"
        );
        std::process::exit(2);
    }
    let fail = |what: &str, err: &dyn std::fmt::Display| -> ! {
        eprintln!("{what}: {err}");
        std::process::exit(1);
    };
    let url = url::Url::parse(&args[0]).unwrap_or_else(|e| fail("control url", &e));
    let port: u16 = args[4].parse().unwrap_or_else(|e| fail("echo port", &e));
    let mut config = tailscale::Config::default_with_key_file(&args[3])
        .await
        .unwrap_or_else(|e| fail("key file", &e));
    config.control_server_url = url;
    config.requested_hostname = Some(args[2].clone());
    let device = tailscale::Device::new(&config, Some(args[1].clone()))
        .await
        .unwrap_or_else(|e| fail("joining the tailnet", &e));
    let ip = device
        .ipv4_addr()
        .await
        .unwrap_or_else(|e| fail("tailnet address", &e));
    println!("ready {ip}");

    let listener = device
        .tcp_listen((ip, port).into())
        .await
        .unwrap_or_else(|e| fail("listening", &e));
    tokio::spawn(async move {
        while let Ok(conn) = listener.accept().await {
            tokio::spawn(async move {
                let (reader, mut writer) = tokio::io::split(conn);
                let mut line = String::new();
                if BufReader::new(reader).read_line(&mut line).await.is_ok() {
                    let _ = writer.write_all(line.as_bytes()).await;
                    let _ = writer.shutdown().await;
                }
            });
        }
    });

    if let [.., target, message] = args.as_slice()
        && args.len() == 7
    {
        let target: SocketAddr = target.parse().unwrap_or_else(|e| fail("dial address", &e));
        match dial(&device, target, message).await {
            Ok(back) => println!("echoed {back}"),
            Err(err) => println!("dial failed: {err}"),
        }
    }
    std::future::pending::<()>().await;
}

/// Sends `message` to `target` and reads it back, retrying for a minute while
/// the path to the peer comes up.
async fn dial(
    device: &tailscale::Device,
    target: SocketAddr,
    message: &str,
) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let mut conn = device
                .tcp_connect(target)
                .await
                .map_err(|e| e.to_string())?;
            conn.write_all(format!("{message}\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut back = String::new();
            BufReader::new(conn)
                .read_line(&mut back)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(back.trim_end_matches('\n').to_owned())
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(back)) => return Ok(back),
            Ok(Err(err)) if Instant::now() > deadline => return Err(err),
            Err(_) if Instant::now() > deadline => return Err("timed out".into()),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
