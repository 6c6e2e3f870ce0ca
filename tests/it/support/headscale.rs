//! A real Headscale server for tests: the reference v0.29.2 on loopback (the
//! REST API is compared with it), or any installed release inside a network
//! namespace at a given address (an install the import tests move to headway).
//! Started in a temp directory, stopped with SIGTERM on request (the directory,
//! its database and keys kept), killed on drop.

use super::netns::Netns;
use super::tailscale::{free_port, tools_dir};
use super::{Run, headscale_bin};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Headscale `version` (`v0.23.0`, `v0.29.2`, …) as `scripts/install-test-deps`
/// builds it into the tool cache.
pub fn headscale_bin_version(version: &str) -> PathBuf {
    let path = tools_dir().join(format!("headscale-{version}/headscale"));
    assert!(
        path.exists(),
        "Headscale {version} is not installed at {}: run scripts/install-test-deps (it needs Go)",
        path.display()
    );
    path
}

/// How to start Headscale; the default is [`Headscale::start`]'s.
#[derive(Default)]
pub struct HeadscaleSpawn<'a> {
    /// This release from the tool cache instead of the reference v0.29.2.
    pub version: Option<&'a str>,
    /// Run `headscale serve` inside this namespace: its metrics and gRPC
    /// listeners take fixed ports on the namespace's own loopback.
    pub netns: Option<&'a Netns>,
    /// Listen on this address instead of 127.0.0.1 (`server_url` follows).
    pub host: Option<&'a str>,
    /// Listen on this port instead of a free one.
    pub port: Option<u16>,
}

pub struct Headscale {
    pub dir: TempDir,
    pub url: String,
    /// The config file `serve` and the CLI read (`HEADSCALE_CONFIG`).
    pub config: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
}

impl Headscale {
    /// Starts the reference `headscale serve` on loopback with a database-mode
    /// policy and a relay map of one loopback region (Headscale refuses to start
    /// without one; clients in tests talk directly). Its STUN port answers
    /// nothing, but a client whose probes leave finds UDP usable: with no STUN
    /// port at all it would rebind its sockets every few seconds.
    pub fn start() -> Headscale {
        Headscale::start_with(HeadscaleSpawn::default())
    }

    /// [`Headscale::start`] as `opts` say; returns once it answers on its HTTP
    /// address and its Unix socket.
    pub fn start_with(opts: HeadscaleSpawn) -> Headscale {
        let bin = match opts.version {
            Some(version) => headscale_bin_version(version),
            None => headscale_bin(),
        };
        let dir = tempfile::Builder::new().prefix("hs").tempdir().unwrap();
        let d = dir.path().display().to_string();
        let host = opts.host.unwrap_or("127.0.0.1");
        let port = opts.port.unwrap_or_else(free_port);
        let url = format!("http://{host}:{port}");
        // In a namespace of its own, nothing else listens on its loopback.
        let (metrics, grpc) = match opts.netns {
            Some(_) => (9090, 50443),
            None => (free_port(), free_port()),
        };
        std::fs::write(
            dir.path().join("derp.yaml"),
            "regions:\n  900:\n    regionid: 900\n    regioncode: test\n    regionname: Test\n    \
             nodes:\n      - name: 900a\n        regionid: 900\n        hostname: 127.0.0.1\n        \
             ipv4: 127.0.0.1\n        stunport: 3478\n        derpport: 1\n",
        )
        .unwrap();
        let config = dir.path().join("config.yaml");
        // Keys every release since 0.23 reads the same way.
        std::fs::write(
            &config,
            format!(
                "server_url: {url}\nlisten_addr: {host}:{port}\nmetrics_listen_addr: 127.0.0.1:{metrics}\n\
                 grpc_listen_addr: 127.0.0.1:{grpc}\nnoise:\n  private_key_path: {d}/noise.key\n\
                 prefixes:\n  v4: 100.64.0.0/10\n  v6: fd7a:115c:a1e0::/48\n\
                 database:\n  type: sqlite\n  sqlite:\n    path: {d}/db.sqlite\n\
                 dns:\n  magic_dns: true\n  base_domain: tailnet.test\n  nameservers:\n    global: [127.0.0.53]\n\
                 derp:\n  urls: []\n  paths: [{d}/derp.yaml]\n  auto_update_enabled: false\n\
                 unix_socket: {d}/headscale.sock\ndisable_check_updates: true\n\
                 policy:\n  mode: database\nlog:\n  level: {level}\n",
                // The import tests read its log when something fails.
                level = if opts.netns.is_some() { "info" } else { "warn" },
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("headscale.log")).unwrap();
        let mut cmd = match opts.netns {
            // `ip netns exec` execs the server: the child's pid is Headscale's.
            Some(ns) => ns.command(&bin),
            None => Command::new(&bin),
        };
        let child = cmd
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env("HEADSCALE_CONFIG", &config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start headscale serve");
        let mut server = Headscale {
            dir,
            url,
            config,
            bin,
            child: Some(child),
        };
        let addr = format!("{host}:{port}");
        let answers = || match opts.netns {
            Some(ns) => ns.enter(|| std::net::TcpStream::connect(&addr).is_ok()),
            None => std::net::TcpStream::connect(&addr).is_ok(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(answers() && server.socket().exists()) {
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("headscale serve exited early ({status}):\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "Headscale did not answer on {addr} within 30 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// The admin socket, a file the host reaches wherever the server runs.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("headscale.sock")
    }

    /// Runs Headscale's CLI (of this server's release) against this server.
    pub fn cli(&self, args: &[&str]) -> Run {
        Run::from(
            Command::new(&self.bin)
                .current_dir(self.dir.path())
                .env("HOME", self.dir.path())
                .env("HEADSCALE_CONFIG", &self.config)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("run headscale"),
        )
    }

    /// A new API key (`apikeys create`).
    pub fn api_key(&self) -> String {
        self.cli(&["apikeys", "create"])
            .ok()
            .stdout
            .trim()
            .to_owned()
    }

    /// SIGTERM, and waits for the server to exit (its directory stays, as an
    /// admin's install does when the service stops); returns its exit code.
    pub fn stop(&mut self) -> i32 {
        let Some(mut child) = self.child.take() else {
            return 0;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("Headscale ignored SIGTERM for 30 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("headscale.log")).unwrap_or_default()
    }
}

impl Drop for Headscale {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
