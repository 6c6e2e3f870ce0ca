//! Test support: spawning a real server, running the real CLI, a gRPC client.

pub mod control_client;
#[cfg(feature = "full-suite")]
pub mod headscale;
pub mod netns;
pub mod oidc;
pub mod pebble;
#[cfg(feature = "full-suite")]
pub mod replicas;
pub mod tailscale;
#[cfg(feature = "full-suite")]
pub mod web_proxy;
#[cfg(feature = "full-suite")]
pub mod webdriver;

use headway::grpc::pb::headscale_service_client::HeadscaleServiceClient;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::transport::Channel;

/// Path of the `headway` binary under test.
pub fn headway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_headway"))
}

/// A config file for a test server: everything inside `dir`, HTTP on port 0.
/// A `dns:` section in `extra` replaces the default one. The database is the
/// SQLite file `dir/db.sqlite`, or with `HEADWAY_TEST_DATABASE=postgres` a
/// PostgreSQL database of `dir`'s own (`test_database`).
pub fn test_config(dir: &Path, extra: &str) -> String {
    config_with_database(dir, extra, &test_database(dir))
}

/// `test_config` on SQLite whatever `HEADWAY_TEST_DATABASE` says, for tests of the
/// SQLite file itself (its path, lock, disk or integrity).
pub fn sqlite_test_config(dir: &Path, extra: &str) -> String {
    config_with_database(dir, extra, &sqlite_database(dir))
}

/// `test_config` with the given `database:` section.
pub fn config_with_database(dir: &Path, extra: &str, database: &str) -> String {
    let dns = if extra.starts_with("dns:") || extra.contains("\ndns:") {
        ""
    } else {
        "dns:\n  magic_dns: true\n  base_domain: tailnet.test\n"
    };
    format!(
        "server_url: http://127.0.0.1:8080\n\
         listen_addr: 127.0.0.1:0\n\
         metrics_listen_addr: \"\"\n\
         noise:\n  private_key_path: {d}/noise_private.key\n\
         prefixes:\n  v4: 100.64.0.0/10\n  v6: fd7a:115c:a1e0::/48\n\
         {database}\
         unix_socket: {d}/headway.sock\n\
         unix_socket_permission: \"0770\"\n\
         {dns}{extra}",
        d = dir.display()
    )
}

fn sqlite_database(dir: &Path) -> String {
    format!(
        "database:\n  type: sqlite\n  sqlite:\n    path: {}/db.sqlite\n",
        dir.display()
    )
}

/// The file in a test directory that names its PostgreSQL database, so a server
/// restarted on the directory finds its data, and the database is dropped with
/// the server that owns the directory.
const POSTGRES_DATABASE_FILE: &str = "postgres-database";

/// The `database:` section of a test server in `dir`, as `HEADWAY_TEST_DATABASE`
/// (`sqlite`, the default, or `postgres`) says. A PostgreSQL database is created
/// in the test process's own server (`headway::db::testing`) the first time a
/// directory asks and named in it; a directory that does not exist (a template's
/// `{dir}`) gets a new database each time.
fn test_database(dir: &Path) -> String {
    match std::env::var("HEADWAY_TEST_DATABASE").as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("" | "sqlite") => sqlite_database(dir),
        Ok("postgres") => postgres_database(dir),
        other => panic!("HEADWAY_TEST_DATABASE is {other:?}; expected sqlite or postgres"),
    }
}

#[cfg(feature = "full-suite")]
fn postgres_database(dir: &Path) -> String {
    let cluster = headway::db::testing::cluster();
    let record = dir.join(POSTGRES_DATABASE_FILE);
    let name = match std::fs::read_to_string(&record) {
        Ok(name) => name.trim().to_owned(),
        Err(_) => {
            let name = cluster.create_database();
            if dir.is_dir() {
                std::fs::write(&record, &name).unwrap();
            }
            name
        }
    };
    cluster.config_yaml(&name)
}

#[cfg(not(feature = "full-suite"))]
fn postgres_database(_: &Path) -> String {
    panic!(
        "HEADWAY_TEST_DATABASE=postgres needs --features full-suite, which builds \
         headway::db::testing (the tests' PostgreSQL server)"
    )
}

/// `text` with the tests' PostgreSQL reached through its Unix socket, if it names it.
#[cfg(feature = "full-suite")]
fn over_socket(text: String) -> String {
    let Some(name) = text
        .lines()
        .skip_while(|l| *l != "  type: postgres")
        .find_map(|l| l.strip_prefix("    name: "))
    else {
        return text;
    };
    let cluster = headway::db::testing::cluster();
    let over_tcp = cluster.config_yaml(name);
    text.replace(&over_tcp, &cluster.config_yaml_over_socket(name))
}

#[cfg(not(feature = "full-suite"))]
fn over_socket(text: String) -> String {
    text
}

/// Drops the PostgreSQL database named in `dir`, if any: its directory is going away.
#[cfg(feature = "full-suite")]
fn drop_postgres_database(dir: &Path) {
    if let Ok(name) = std::fs::read_to_string(dir.join(POSTGRES_DATABASE_FILE)) {
        headway::db::testing::cluster().drop_database(name.trim());
    }
}

#[cfg(not(feature = "full-suite"))]
fn drop_postgres_database(_: &Path) {}

/// Polls `check` every 200 ms until it holds or `timeout` has passed; whether
/// it held.
pub fn poll_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `what` holds (things reach clients asynchronously), or panics
/// naming it.
pub fn wait_until(what: &str, timeout: Duration, check: impl FnMut() -> bool) {
    assert!(poll_until(timeout, check), "not within {timeout:?}: {what}");
}

/// What a CLI run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with the whole output unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command failed.
    #[track_caller]
    pub fn failed(self) -> Run {
        assert_ne!(
            self.code, 0,
            "command unexpectedly succeeded:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A running `headway serve`, killed when dropped.
pub struct TestServer {
    pub dir: TempDir,
    pub config_path: Option<PathBuf>,
    pub socket: PathBuf,
    pub http_addr: String,
    child: Child,
    log_path: PathBuf,
    env: Vec<(String, String)>,
}

/// How to start a server.
#[derive(Default)]
pub struct Spawn {
    /// YAML appended to the generated test config.
    pub extra_config: String,
    /// A complete config file instead of the generated one (`{dir}` is replaced).
    pub config_file: Option<String>,
    /// Start with no config file at all (embedded defaults) in the temp dir.
    pub no_config: bool,
    pub env: Vec<(String, String)>,
    /// Reuse this directory (restart after a kill).
    pub dir: Option<TempDir>,
    /// Listen on this port with a matching `server_url`, as real clients need.
    pub port: Option<u16>,
    /// With `port`: listen on this address instead of 127.0.0.1.
    pub host: Option<String>,
    /// Announce this `server_url` (a reverse proxy's URL) whatever the server
    /// listens on.
    pub server_url: Option<String>,
    /// Run the server inside this network namespace.
    pub netns: Option<String>,
    /// Run the server with this open-file limit (soft and hard, `prlimit`), as
    /// under `ulimit -n`.
    pub nofile: Option<u64>,
    /// The generated config keeps SQLite whatever `HEADWAY_TEST_DATABASE` says: for
    /// tests of the SQLite file itself. (A `config_file` names its own database:
    /// build it with `sqlite_test_config` for the same effect.)
    pub sqlite: bool,
}

impl TestServer {
    pub fn spawn() -> TestServer {
        Self::spawn_with(Spawn::default())
    }

    pub fn spawn_with(opts: Spawn) -> TestServer {
        let dir = opts
            .dir
            .unwrap_or_else(|| tempfile::Builder::new().prefix("hw").tempdir().unwrap());
        let path = dir.path();
        let config_path = if opts.no_config {
            None
        } else {
            let text = match &opts.config_file {
                Some(text) => text.replace("{dir}", &path.display().to_string()),
                None if opts.sqlite => sqlite_test_config(path, &opts.extra_config),
                None => test_config(path, &opts.extra_config),
            };
            // A server in another network namespace reaches the tests' PostgreSQL
            // through its socket file: 127.0.0.1 there is the namespace's own.
            let text = match &opts.netns {
                Some(_) => over_socket(text),
                None => text,
            };
            let host = opts.host.as_deref().unwrap_or("127.0.0.1");
            let text = match opts.port {
                Some(port) => text
                    .replace(
                        "listen_addr: 127.0.0.1:0",
                        &format!("listen_addr: {host}:{port}"),
                    )
                    .replace(
                        "server_url: http://127.0.0.1:8080",
                        &format!("server_url: http://{host}:{port}"),
                    ),
                None => text,
            };
            let text = match &opts.server_url {
                Some(url) => {
                    let generated = "server_url: http://127.0.0.1:8080";
                    assert!(
                        text.contains(generated),
                        "Spawn::server_url replaces `{generated}`, which this config lacks:\n{text}"
                    );
                    text.replace(generated, &format!("server_url: {url}"))
                }
                None => text,
            };
            let p = path.join("config.yaml");
            std::fs::write(&p, text).unwrap();
            Some(p)
        };
        let socket = if opts.no_config {
            path.join("headway-data/headway.sock")
        } else {
            let text = std::fs::read_to_string(config_path.as_ref().unwrap()).unwrap();
            socket_from_config(&text, path)
        };
        let log_path = path.join(format!("server-{}.log", std::process::id() ^ rand_suffix()));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = match (&opts.netns, opts.nofile) {
            (Some(ns), None) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(headway_bin());
                cmd
            }
            // prlimit sets the limit on itself and execs the server (same pid).
            (None, Some(n)) => {
                let mut cmd = Command::new("prlimit");
                cmd.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(headway_bin());
                cmd
            }
            (Some(_), Some(_)) => panic!("Spawn: netns and nofile together are not supported"),
            (None, None) => Command::new(headway_bin()),
        };
        cmd.current_dir(path)
            .env("HOME", path)
            .env("NO_COLOR", "1")
            .env_remove("HEADWAY_CONFIG");
        cmd.env_remove("HEADSCALE_CONFIG");
        // Servers run side by side: the embedded relay's STUN port must not collide,
        // and tests listen on loopback only.
        let stun = format!("{}:0", opts.host.as_deref().unwrap_or("127.0.0.1"));
        cmd.env("HEADWAY_DERP_SERVER_STUN_LISTEN_ADDR", stun);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if let Some(cfg) = &config_path {
            cmd.arg("-c").arg(cfg);
        }
        let child = cmd
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn headway serve");
        let mut server = TestServer {
            dir,
            config_path,
            socket,
            http_addr: String::new(),
            child,
            log_path,
            env: opts.env,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("headway serve exited early ({status}):\n{}", self.log());
            }
            let log = self.log();
            if let Some(addr) = field_after(&log, "serving HTTP", "addr=")
                && std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
            {
                self.http_addr = addr;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready after 30 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id (of `ip netns exec` when in a namespace).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The URL clients use (`--login-server`).
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        strip_ansi(&text)
    }

    /// Every node as `nodes list -o json` shows it.
    pub fn nodes(&self) -> Vec<serde_json::Value> {
        let listed = self.cli(&["nodes", "list", "-o", "json"]).ok().stdout;
        serde_json::from_str::<serde_json::Value>(&listed)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Runs the load generator (`headway bench`) against `url` with `key` and
    /// `args`, and returns its JSON report (written into this server's directory).
    pub fn bench(&self, url: &str, key: &str, args: &[&str]) -> serde_json::Value {
        let out = self.dir.path().join("report.json");
        let out_arg = out.display().to_string();
        let mut command = vec!["bench", "--server", url, "--authkey", key];
        command.extend_from_slice(args);
        command.extend_from_slice(&["--out", &out_arg]);
        self.cli(&command).ok();
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
    }

    /// A reusable one-hour pre-auth key of `user` (created if needed), with extra flags.
    pub fn reusable_key(&self, user: &str, flags: &[&str]) -> String {
        self.cli(&["users", "create", user]);
        let mut args = vec![
            "preauthkeys",
            "create",
            "--user",
            user,
            "--reusable",
            "-e",
            "1h",
        ];
        args.extend_from_slice(flags);
        self.cli(&args).ok().stdout.trim().to_owned()
    }

    /// A new one-hour API key (`apikeys create`).
    pub fn api_key(&self) -> String {
        self.cli(&["apikeys", "create", "-e", "1h"])
            .ok()
            .stdout
            .trim()
            .to_owned()
    }

    /// Runs `headway [-c config] args…` with the server's environment.
    pub fn cli(&self, args: &[&str]) -> Run {
        self.cli_as(&headway_bin(), args)
    }

    /// Runs a CLI binary (`headway` under another name, or Headscale's) against this server.
    pub fn cli_as(&self, bin: &Path, args: &[&str]) -> Run {
        let mut cmd = Command::new(bin);
        cmd.current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env("NO_COLOR", "1");
        cmd.env_remove("HEADWAY_CONFIG")
            .env_remove("HEADSCALE_CONFIG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(cfg) = &self.config_path {
            cmd.arg("-c").arg(cfg);
        }
        Run::from(
            cmd.args(args)
                .stdin(Stdio::null())
                .output()
                .expect("run CLI"),
        )
    }

    /// A gRPC client over the admin socket.
    pub async fn grpc(&self) -> HeadscaleServiceClient<Channel> {
        grpc_over_socket(&self.socket).await
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(mut self) -> i32 {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "server ignored SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The directory goes with the server (`kill` hands it back first), and so
        // does the database it names (kept after a failure, for a look).
        if !std::thread::panicking() {
            drop_postgres_database(self.dir.path());
        }
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

fn socket_from_config(text: &str, dir: &Path) -> PathBuf {
    let line = text
        .lines()
        .find(|l| l.starts_with("unix_socket:"))
        .expect("config names unix_socket");
    let value = line["unix_socket:".len()..].trim().trim_matches('"');
    let p = PathBuf::from(value);
    if p.is_absolute() { p } else { dir.join(p) }
}

/// The value after `key` on the first line containing `marker`.
pub fn field_after(log: &str, marker: &str, key: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(marker))?;
    let rest = &line[line.find(key)? + key.len()..];
    Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
}

pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for n in chars.by_ref() {
                if n.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub async fn grpc_over_socket(path: &Path) -> HeadscaleServiceClient<Channel> {
    let path = path.to_owned();
    let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connect to the admin socket");
    HeadscaleServiceClient::new(channel)
}

/// Headscale v0.29.2's CLI, installed by `scripts/install-test-deps`.
pub fn headscale_bin() -> PathBuf {
    let path = std::env::var_os("HEADWAY_TEST_HEADSCALE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("HEADWAY_TOOLS")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                        .join(".cache/headway-tools")
                });
            cache.join("headscale-v0.29.2/headscale")
        });
    assert!(
        path.exists(),
        "Headscale's CLI is not installed at {}: run scripts/install-test-deps (it needs Go)",
        path.display()
    );
    path
}

/// A plain HTTP/1.1 GET: (status, lower-cased headers, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    http_request(addr, &format!("GET {path} HTTP/1.1\r\n"), "")
}

/// `POST path` with a JSON body; returns status, lower-cased head and body.
pub fn http_post_json(addr: &str, path: &str, body: &str) -> (u16, String, String) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    http_request(addr, &head, body)
}

fn http_request(addr: &str, head_lines: &str, body: &str) -> (u16, String, String) {
    use std::io::Write;
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the HTTP listener");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "{head_lines}Host: {addr}\r\nConnection: close\r\n\r\n{body}"
    )
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_owned())
}
