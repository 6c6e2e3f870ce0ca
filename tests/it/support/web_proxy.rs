//! nginx and Caddy in front of a server, as docs/reverse-proxy.md tells users to
//! run them: each proxy is started in the foreground by the test, on a loopback
//! port, terminating TLS with a self-signed certificate for 127.0.0.1 made here,
//! with the configuration file of docs/reverse-proxy/ that the documentation
//! shows (only the address, the certificate and the upstream are replaced, and a
//! wrapper keeps pid, logs, temporary files and storage in the proxy's own
//! directory). Killed when dropped.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The nginx site of docs/reverse-proxy.md, read inside nginx's `http` block.
pub const NGINX_SITE: &str = include_str!("../../../docs/reverse-proxy/nginx.conf");

/// The Caddyfile of docs/reverse-proxy.md.
pub const CADDYFILE: &str = include_str!("../../../docs/reverse-proxy/Caddyfile");

/// Which reverse proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Caddy,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Nginx => "nginx",
            Kind::Caddy => "caddy",
        })
    }
}

/// A reverse proxy process serving `https://127.0.0.1:port`.
pub struct WebProxy {
    pub kind: Kind,
    dir: TempDir,
    port: u16,
    child: Child,
    /// The DER form of the proxy's certificate, for in-process TLS clients.
    cert_der: Vec<u8>,
}

impl WebProxy {
    /// Starts `kind` on 127.0.0.1:`port` (chosen beforehand: the server behind
    /// it announces the proxy's URL) in front of `upstream` (`127.0.0.1:PORT`,
    /// plain HTTP), and waits until it accepts connections.
    ///
    /// # Panics
    /// When the proxy is not installed (scripts/install-test-deps installs both)
    /// or does not start; the message has its output.
    pub fn start(kind: Kind, port: u16, upstream: &str) -> WebProxy {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{kind}-"))
            .tempdir()
            .unwrap();
        let cert_der = write_self_signed(dir.path());
        let d = dir.path();
        let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
        let log = std::fs::File::create(d.join("proxy.log")).unwrap();
        let mut command = match kind {
            Kind::Nginx => {
                let site = fill(
                    NGINX_SITE,
                    &[
                        ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
                        (
                            "/etc/letsencrypt/live/headway.example.com/fullchain.pem",
                            cert.display().to_string(),
                        ),
                        (
                            "/etc/letsencrypt/live/headway.example.com/privkey.pem",
                            key.display().to_string(),
                        ),
                        (
                            "proxy_pass http://127.0.0.1:8080;",
                            format!("proxy_pass http://{upstream};"),
                        ),
                    ],
                );
                std::fs::write(d.join("headway.conf"), site).unwrap();
                std::fs::write(d.join("nginx.conf"), nginx_main(d)).unwrap();
                let mut command = Command::new(program(kind));
                command
                    .arg("-p")
                    .arg(d)
                    .arg("-c")
                    .arg(d.join("nginx.conf"))
                    .arg("-e")
                    .arg(d.join("error.log"))
                    .args(["-g", "daemon off;"]);
                command
            }
            Kind::Caddy => {
                let site = fill(
                    CADDYFILE,
                    &[
                        (
                            "headway.example.com {",
                            format!(
                                "https://127.0.0.1:{port} {{\n\tbind 127.0.0.1\n\ttls {} {}",
                                cert.display(),
                                key.display()
                            ),
                        ),
                        (
                            "reverse_proxy 127.0.0.1:8080",
                            format!("reverse_proxy {upstream}"),
                        ),
                    ],
                );
                // No admin endpoint, no certificate automation, TCP only (no
                // HTTP/3 listener); storage and any state under the directory.
                let global = "{\n\tadmin off\n\tauto_https off\n\tservers {\n\t\tprotocols h1 h2\n\t}\n}\n\n";
                std::fs::write(d.join("Caddyfile"), format!("{global}{site}")).unwrap();
                let mut command = Command::new(program(kind));
                command
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(d.join("Caddyfile"))
                    .env("HOME", d)
                    .env("XDG_DATA_HOME", d.join("data"))
                    .env("XDG_CONFIG_HOME", d.join("config"));
                command
            }
        };
        let child = command
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("run {kind}: {e}"));
        let mut proxy = WebProxy {
            kind,
            dir,
            port,
            child,
            cert_der,
        };
        proxy.wait_ready();
        proxy
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}):\n{}", self.kind, self.log());
            }
            if std::net::TcpStream::connect(self.addr()).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening on {} after 20 s:\n{}",
                self.kind,
                self.addr(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL clients use (`--login-server`): `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy's certificate (PEM), for `SSL_CERT_FILE` of Go clients.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The proxy's certificate (DER), for rustls clients that trust only it.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// What the proxy printed and logged so far (nginx's error and access logs
    /// included).
    pub fn log(&self) -> String {
        ["proxy.log", "error.log", "access.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.path().join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for WebProxy {
    fn drop(&mut self) {
        // nginx runs as one process (`master_process off`), so this ends it all.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `template` with every `(from, to)` replaced; panics when a `from` is not in
/// it, so the documented file and the tests cannot drift apart silently.
pub fn fill(template: &str, pairs: &[(&str, String)]) -> String {
    pairs.iter().fold(template.to_owned(), |text, (from, to)| {
        assert!(
            text.contains(from),
            "the documented config no longer has `{from}`; update the test with it:\n{text}"
        );
        text.replace(from, to)
    })
}

/// nginx's main file: one process (no master and workers, so killing the child
/// leaves nothing behind), everything in `dir`, the site included in the `http`
/// block as Debian's conf.d is.
fn nginx_main(dir: &Path) -> String {
    format!(
        "master_process off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{\n    worker_connections 512;\n}}\n\
         http {{\n\
         \x20   access_log {d}/access.log;\n\
         \x20   client_body_temp_path {d}/client_body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   include {d}/headway.conf;\n\
         }}\n",
        d = dir.display()
    )
}

/// Writes `cert.pem` and `key.pem`, a self-signed certificate for the IP
/// address 127.0.0.1, into `dir`; returns the certificate's DER.
fn write_self_signed(dir: &Path) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "headway proxy test");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    cert.der().to_vec()
}

/// The proxy's program, from PATH or Debian's place for it (nginx lives in
/// /usr/sbin, which is not on every user's PATH).
fn program(kind: Kind) -> PathBuf {
    let name = kind.to_string();
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(&name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed (not on PATH nor in /usr/sbin): run scripts/install-test-deps")
        })
}
