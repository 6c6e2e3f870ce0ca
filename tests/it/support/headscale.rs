//! A real Headscale v0.29.2 server on loopback, the reference the REST API is
//! compared with: started in a temp directory on free ports, killed on drop.

use super::tailscale::free_port;
use super::{Run, headscale_bin, wait_until};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

pub struct Headscale {
    pub dir: TempDir,
    pub url: String,
    config: PathBuf,
    child: Child,
}

impl Headscale {
    /// Starts `headscale serve` with a database-mode policy and a relay map of
    /// one loopback region (Headscale refuses to start without one; clients in
    /// tests never need it).
    pub fn start() -> Headscale {
        let dir = tempfile::Builder::new().prefix("hs").tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        std::fs::write(
            dir.path().join("derp.yaml"),
            "regions:\n  900:\n    regionid: 900\n    regioncode: test\n    regionname: Test\n    \
             nodes:\n      - name: 900a\n        regionid: 900\n        hostname: 127.0.0.1\n        \
             ipv4: 127.0.0.1\n        stunport: -1\n        derpport: 1\n",
        )
        .unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "server_url: {url}\nlisten_addr: 127.0.0.1:{port}\nmetrics_listen_addr: 127.0.0.1:{metrics}\n\
                 grpc_listen_addr: 127.0.0.1:{grpc}\nnoise:\n  private_key_path: {d}/noise.key\n\
                 prefixes:\n  v4: 100.64.0.0/10\n  v6: fd7a:115c:a1e0::/48\n\
                 database:\n  type: sqlite\n  sqlite:\n    path: {d}/db.sqlite\n\
                 dns:\n  magic_dns: true\n  base_domain: tailnet.test\n  nameservers:\n    global: [127.0.0.53]\n\
                 derp:\n  urls: []\n  paths: [{d}/derp.yaml]\n  auto_update_enabled: false\n\
                 unix_socket: {d}/headscale.sock\ndisable_check_updates: true\n\
                 policy:\n  mode: database\nlog:\n  level: warn\n",
                metrics = free_port(),
                grpc = free_port(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("headscale.log")).unwrap();
        let child = Command::new(headscale_bin())
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env("HEADSCALE_CONFIG", &config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start headscale serve");
        let server = Headscale {
            dir,
            url,
            config,
            child,
        };
        let health = format!("127.0.0.1:{port}");
        wait_until("Headscale answers /health", Duration::from_secs(30), || {
            std::net::TcpStream::connect(&health).is_ok()
                && server.dir.path().join("headscale.sock").exists()
        });
        server
    }

    /// Runs Headscale's CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Run {
        Run::from(
            Command::new(headscale_bin())
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("headscale.log")).unwrap_or_default()
    }
}

impl Drop for Headscale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
