//! Official Tailscale clients for tests: `tailscaled` in userspace-networking mode
//! with its own state directory, socket and SOCKS5 port, or in TUN mode inside a
//! network namespace the test made, driven by the real `tailscale` CLI. Processes
//! are killed and directories removed on drop, on every path. Binaries come from
//! `scripts/install-test-deps`.

use super::Run;
use super::netns::Netns;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The client versions every real-client test runs against: the oldest that
/// Headscale 0.29 supports and the newest release this machine's Go builds.
pub fn versions() -> Vec<String> {
    std::env::var("HEADWAY_TAILSCALE_VERSIONS")
        .unwrap_or_else(|_| "v1.80.3 v1.102.5".into())
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Where `scripts/install-test-deps` puts Go-built tools: `$HEADWAY_TOOLS`, or
/// `~/.cache/headway-tools`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("HEADWAY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/headway-tools")
        })
}

pub fn bin_dir(version: &str) -> PathBuf {
    let dir = tools_dir().join(format!("tailscale-{version}"));
    assert!(
        dir.join("tailscaled").exists() && dir.join("tailscale").exists(),
        "Tailscale {version} is not installed in {}: run scripts/install-test-deps (it needs Go)",
        dir.display()
    );
    dir
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One official client.
pub struct Client {
    pub version: String,
    pub name: String,
    dir: TempDir,
    bin: PathBuf,
    socket: PathBuf,
    socks: SocketAddr,
    /// Extra environment for `tailscaled` (debug knobs such as `TS_DEBUG_ALWAYS_USE_DERP`).
    env: Vec<(String, String)>,
    /// TUN mode inside this network namespace (userspace networking when `None`).
    netns: Option<String>,
    daemon: Option<Child>,
}

/// Mounts an overlay on /etc (upper and work directories are `$1` and `$2`) in
/// the private mount namespace `unshare` made, then runs the rest of the
/// arguments; every `exec` keeps the process id, so the daemon's is the child's.
const OWN_ETC: &str = "mount -t overlay overlay -o lowerdir=/etc,upperdir=\"$1\",workdir=\"$2\" /etc && shift 2 && exec \"$@\"";

impl Client {
    /// Starts `tailscaled` (not logged in yet).
    pub fn start(version: &str, name: &str) -> Client {
        Client::start_with_env(version, name, &[])
    }

    /// Starts `tailscaled` with extra environment variables.
    pub fn start_with_env(version: &str, name: &str, env: &[(&str, &str)]) -> Client {
        let bin = bin_dir(version);
        let dir = tempfile::Builder::new().prefix("ts").tempdir().unwrap();
        let socket = dir.path().join("tailscaled.sock");
        let socks: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut client = Client {
            version: version.to_owned(),
            name: name.to_owned(),
            dir,
            bin,
            socket,
            socks,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            netns: None,
            daemon: None,
        };
        client.start_daemon();
        client
    }

    /// Starts `tailscaled` in TUN mode (`tailscale0`) inside `ns`: it sets routes
    /// and firewall rules there, and only there.
    pub fn start_in(ns: &Netns, version: &str, name: &str) -> Client {
        let mut client = Client {
            version: version.to_owned(),
            name: name.to_owned(),
            dir: tempfile::Builder::new().prefix("ts").tempdir().unwrap(),
            bin: bin_dir(version),
            socket: PathBuf::new(),
            socks: "127.0.0.1:0".parse().unwrap(),
            env: Vec::new(),
            netns: Some(ns.name.clone()),
            daemon: None,
        };
        client.socket = client.dir.path().join("tailscaled.sock");
        client.start_daemon();
        client
    }

    fn start_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tailscaled.log"))
            .unwrap();
        let daemon = self.bin.join("tailscaled");
        let mut cmd = match &self.netns {
            Some(ns) => {
                // Its own view of /etc (an overlay whose writes land in the
                // client's directory), so a client that manages DNS rewrites
                // its own resolv.conf and never the machine's.
                let (upper, work) = (
                    self.dir.path().join("etc"),
                    self.dir.path().join("etc-work"),
                );
                for d in [&upper, &work] {
                    std::fs::create_dir_all(d).unwrap();
                }
                let mut cmd = Command::new("ip");
                cmd.args([
                    "netns",
                    "exec",
                    ns,
                    "unshare",
                    "--mount",
                    "--propagation=private",
                ])
                .args(["sh", "-c", OWN_ETC, "sh"])
                .args([&upper, &work, &daemon])
                .arg("--tun=tailscale0");
                cmd
            }
            None => {
                let mut cmd = Command::new(daemon);
                cmd.arg("--tun=userspace-networking")
                    .arg(format!("--socks5-server={}", self.socks));
                cmd
            }
        };
        let child = cmd
            .arg(format!(
                "--statedir={}",
                self.dir.path().join("state").display()
            ))
            .arg(format!("--socket={}", self.socket.display()))
            .arg("--port=0")
            .arg("--no-logs-no-support")
            .env("TS_NO_LOGS_NO_SUPPORT", "true")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tailscaled");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "tailscaled did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Looks `name` up through the operating system's resolver as this TUN
    /// client's machine sees it (its namespace and its /etc, whose resolv.conf
    /// the client manages with `--accept-dns`): the IPv4 addresses `getent`
    /// prints, empty when the lookup fails.
    pub fn os_resolve(&self, name: &str) -> Vec<String> {
        let pid = self.daemon_pid();
        let out = Command::new("nsenter")
            .args([
                "--target", &pid, "--mount", "--net", "getent", "ahostsv4", name,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter (util-linux)");
        let mut addrs: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        addrs.dedup();
        addrs
    }

    /// `/etc/resolv.conf` as this TUN client's machine sees it.
    pub fn resolv_conf(&self) -> String {
        let pid = self.daemon_pid();
        let out = Command::new("nsenter")
            .args(["--target", &pid, "--mount", "cat", "/etc/resolv.conf"])
            .output()
            .expect("run nsenter (util-linux)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The process id of `tailscaled` while it runs (in TUN mode too: every
    /// `exec` on the way keeps it).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    fn daemon_pid(&self) -> String {
        assert!(
            self.netns.is_some(),
            "only TUN clients have a machine of their own"
        );
        let daemon = self.daemon.as_ref().expect("tailscaled is running");
        daemon.id().to_string()
    }

    fn stop_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `tailscale --socket=… args…`.
    pub fn cli(&self, args: &[&str]) -> Run {
        let out = Command::new(self.bin.join("tailscale"))
            .arg(format!("--socket={}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tailscale");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `tailscale up` against `server` with a pre-auth key.
    pub fn up_with_key(&self, server: &str, key: &str) -> Run {
        self.up_with(server, key, &[])
    }

    /// `tailscale up` with a pre-auth key and more flags (`--advertise-routes=…`).
    pub fn up_with(&self, server: &str, key: &str, flags: &[&str]) -> Run {
        let login = format!("--login-server={server}");
        let key = format!("--authkey={key}");
        let hostname = format!("--hostname={}", self.name);
        let mut args = vec![
            "up",
            &login,
            &key,
            &hostname,
            // `up` returns once the client is Running (logged in, relay connected);
            // the timeout only keeps a broken run from hanging.
            "--timeout=60s",
        ];
        // DNS settings stay off unless asked for (newer clients refuse a flag twice).
        if !flags.iter().any(|f| f.starts_with("--accept-dns")) {
            args.push("--accept-dns=false");
        }
        args.extend_from_slice(flags);
        self.cli(&args)
    }

    /// SIGKILL to `tailscaled`: the machine dies without saying goodbye.
    pub fn kill_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `tailscale status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let run = self.cli(&["status", "--json"]);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("status --json: {e}\n{run:?}"))
    }

    /// The client's IPv4 Tailscale address.
    pub fn ipv4(&self) -> String {
        self.cli(&["ip", "-4"]).stdout.trim().to_owned()
    }

    /// Waits until `check` holds on the status, or panics with the last status.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status();
            if check(&status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} ({}) never saw {what}:\n{status:#}\n{}",
                self.name,
                self.version,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Opens a TCP connection to `target` through this client's tunnel (its
    /// SOCKS5 proxy), sends `payload` and returns what comes back.
    pub fn tcp_exchange(&self, target: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
        self.tcp_exchange_within(target, payload, Duration::from_secs(20))
    }

    /// [`Client::tcp_exchange`] giving up after `timeout` without an answer.
    pub fn tcp_exchange_within(
        &self,
        target: SocketAddr,
        payload: &[u8],
        timeout: Duration,
    ) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(self.socks)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(&[5, 1, 0])?;
        let mut reply = [0u8; 2];
        s.read_exact(&mut reply)?;
        let SocketAddr::V4(v4) = target else {
            panic!("IPv4 targets only")
        };
        let mut req = vec![5, 1, 0, 1];
        req.extend_from_slice(&v4.ip().octets());
        req.extend_from_slice(&v4.port().to_be_bytes());
        s.write_all(&req)?;
        let mut head = [0u8; 10];
        s.read_exact(&mut head)?;
        if head[1] != 0 {
            return Err(std::io::Error::other(format!(
                "SOCKS5 connect refused: code {}",
                head[1]
            )));
        }
        // One line, no half-close (tailscaled's forwarder ends the whole connection on
        // FIN): the echo server answers the line and closes.
        s.write_all(payload)?;
        s.write_all(b"\n")?;
        let mut back = Vec::new();
        s.read_to_end(&mut back)?;
        if back.last() == Some(&b'\n') {
            back.pop();
        }
        Ok(back)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tailscaled.log")).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn bin_path(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Starts `tailscale up` against `server` with no key, in the background: it
    /// prints an auth URL and waits for the login (`wait_auth_url` reads it).
    /// Kill the returned process once the client is logged in.
    pub fn login_interactively(&self, server: &str) -> std::process::Child {
        std::process::Command::new(self.bin_path("tailscale"))
            .arg(format!("--socket={}", self.socket_path().display()))
            .args([
                "up",
                &format!("--login-server={server}"),
                &format!("--hostname={}", self.name),
                "--accept-dns=false",
                "--timeout=30s",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Waits for the auth URL an interactive login is showing.
    pub fn wait_auth_url(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status();
            if let Some(url) = status["AuthURL"].as_str().filter(|u| !u.is_empty()) {
                return url.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no auth URL from {}:\n{status:#}\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop_daemon();
    }
}

/// A line echo server on loopback: in userspace mode, tailscaled delivers
/// connections to its Tailscale address to the host's loopback port.
pub fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut reader = std::io::BufReader::new(&conn);
                if std::io::BufRead::read_line(&mut reader, &mut line).is_ok() {
                    let _ = (&conn).write_all(line.as_bytes());
                }
            });
        }
    });
    port
}

/// The `headway nodes register` command a registration page prints, with `user`
/// filled in, as arguments after `headway`.
pub fn printed_register_command(page: &str, user: &str) -> Vec<String> {
    let start = page
        .find("headway nodes register --user USERNAME --key ")
        .unwrap_or_else(|| panic!("the page shows no register command:\n{page}"));
    let command: String = page[start..].chars().take_while(|c| *c != '<').collect();
    command
        .replace("USERNAME", user)
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect()
}
