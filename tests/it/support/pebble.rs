//! Pebble, Let's Encrypt's ACME test service, on loopback: its directory URL,
//! the CA files its API and its certificates chain to, killed on drop. Built by
//! `scripts/install-test-deps`.

use super::tailscale::{free_port, tools_dir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const VERSION: &str = "v2.10.1";

pub struct Pebble {
    child: Child,
    pub dir: TempDir,
    port: u16,
    management_port: u16,
}

/// Where install-test-deps put Pebble and its certificates.
fn tool_dir() -> PathBuf {
    let dir = tools_dir().join(format!("pebble-{VERSION}"));
    assert!(
        dir.join("pebble").exists() && dir.join("certs/pebble.minica.pem").exists(),
        "Pebble {VERSION} is not installed in {}: run scripts/install-test-deps (it needs Go)",
        dir.display()
    );
    dir
}

impl Pebble {
    /// Starts Pebble; it validates HTTP-01 on `http_port` and TLS-ALPN-01 on
    /// `tls_port` of the name being validated.
    pub fn start(http_port: u16, tls_port: u16) -> Pebble {
        let tools = tool_dir();
        let dir = tempfile::Builder::new().prefix("pebble").tempdir().unwrap();
        let (port, management_port) = (free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": tools.join("certs/cert.pem"),
                "privateKey": tools.join("certs/key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("pebble.log")).unwrap();
        let child = Command::new(tools.join("pebble"))
            .arg("-config")
            .arg(&config_path)
            // No random pauses before validating, and no nonces refused on purpose.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pebble");
        let pebble = Pebble {
            child,
            dir,
            port,
            management_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", management_port)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "pebble did not start:\n{}",
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pebble
    }

    /// The ACME directory URL (`acme_url`).
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The CA of Pebble's own HTTPS API (what an ACME client must trust).
    pub fn api_ca(&self) -> PathBuf {
        tool_dir().join("certs/pebble.minica.pem")
    }

    /// The root that issued certificates chain to (new on every start), saved
    /// as PEM in Pebble's directory.
    pub fn issuing_root(&self) -> PathBuf {
        let path = self.dir.path().join("root.pem");
        let out = Command::new("curl")
            .args(["-fsS", "--cacert"])
            .arg(self.api_ca())
            .arg(format!(
                "https://127.0.0.1:{}/roots/0",
                self.management_port
            ))
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "cannot fetch Pebble's root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&path, out.stdout).unwrap();
        path
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl --cacert root https://localhost:port/path` from this machine, with
/// `localhost` pinned to 127.0.0.1: the status code, or the error curl printed.
pub fn https_get(root: &Path, port: u16, path: &str) -> Result<u16, String> {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(root)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("run curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
