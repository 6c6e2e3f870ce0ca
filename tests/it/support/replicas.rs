//! Several headway replicas on one PostgreSQL database, and HAProxy in front of
//! them (ARCHITECTURE.md, "Several replicas on one PostgreSQL database"):
//! `Replicas` starts the servers on one fresh database with one Noise key and a
//! relay region each; `Haproxy` balances TCP over them, checks their health, and
//! says through its admin socket which replica holds which connection.

use super::tailscale::free_port;
use super::{Spawn, TestServer, config_with_database};
use std::collections::HashMap;
use std::fmt::Display;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The file each replica's config names as its Noise private key.
const NOISE_KEY: &str = "noise_private.key";

/// The relay region of replica `i`: 900 + i, code `replica-i`.
pub fn region_id(i: usize) -> usize {
    900 + i
}

/// `n` headway servers on one PostgreSQL database of their own, each in its own
/// directory with its own admin socket and listen port, all serving the same
/// Noise key. Killed, and the database dropped, when dropped (a failing test
/// keeps the database for a look).
pub struct Replicas {
    /// `None` once `kill`ed.
    servers: Vec<Option<TestServer>>,
    /// What each replica had logged when it was killed.
    last_words: Vec<Option<String>>,
    /// The directories of killed replicas, kept until the end.
    killed: Vec<TempDir>,
    database: String,
}

impl Replicas {
    /// Starts `n` replicas one after the other on a new database. `extra_config`
    /// is YAML appended to every replica's config (it may have a `derp:` section,
    /// but not the region keys: each replica's relay is region 900 + i, code
    /// `replica-i`). The first replica makes the Noise key; the others start with
    /// a copy of its file.
    pub fn start(n: usize, extra_config: &str) -> Replicas {
        assert!(n > 0, "at least one replica");
        assert!(
            !extra_config.contains("region_id:") && !extra_config.contains("region_code:"),
            "Replicas sets derp.server.region_id and region_code itself:\n{extra_config}"
        );
        let cluster = headway::db::testing::cluster();
        let database = cluster.create_database();
        let mut servers: Vec<Option<TestServer>> = Vec::with_capacity(n);
        for i in 0..n {
            let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
            if let Some(Some(first)) = servers.first() {
                let key = first.dir.path().join(NOISE_KEY);
                std::fs::copy(&key, dir.path().join(NOISE_KEY))
                    .unwrap_or_else(|e| panic!("copy the first replica's {}: {e}", key.display()));
            }
            let config = config_with_database(
                dir.path(),
                &with_relay_region(extra_config, i),
                &cluster.config_yaml(&database),
            );
            let server = TestServer::spawn_with(Spawn {
                port: Some(free_port()),
                config_file: Some(config),
                dir: Some(dir),
                ..Spawn::default()
            });
            if i == 0 {
                assert!(
                    server.dir.path().join(NOISE_KEY).is_file(),
                    "the first replica wrote no {NOISE_KEY}:\n{}",
                    server.log()
                );
            }
            servers.push(Some(server));
        }
        Replicas {
            last_words: (0..n).map(|_| None).collect(),
            servers,
            killed: Vec::new(),
            database,
        }
    }

    /// Replica `i`.
    ///
    /// # Panics
    /// When it was killed.
    #[track_caller]
    pub fn server(&self, i: usize) -> &TestServer {
        self.servers[i]
            .as_ref()
            .unwrap_or_else(|| panic!("replica {i} was killed"))
    }

    /// How many replicas were started (killed ones included).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// The HTTP address (`127.0.0.1:port`) of every replica, in order, as
    /// `Haproxy::start` takes them. A killed replica's address is no longer known:
    /// call this before killing.
    pub fn addrs(&self) -> Vec<String> {
        (0..self.len())
            .map(|i| self.server(i).http_addr.clone())
            .collect()
    }

    /// SIGKILL to replica `i`; the others keep running. Its log stays readable
    /// through `log`.
    #[track_caller]
    pub fn kill(&mut self, i: usize) {
        let server = self.servers[i]
            .take()
            .unwrap_or_else(|| panic!("replica {i} was killed already"));
        let pid = server.pid();
        let dir = server.kill();
        // The log file is in the directory `kill` hands back.
        let log = std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("server-"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect::<Vec<_>>()
            .join("\n");
        self.last_words[i] = Some(format!(
            "{}\n(killed with SIGKILL, pid {pid})",
            super::strip_ansi(&log)
        ));
        self.killed.push(dir);
    }

    /// What replica `i` logged (up to its death, if it was killed).
    pub fn log(&self, i: usize) -> String {
        match (&self.servers[i], &self.last_words[i]) {
            (Some(server), _) => server.log(),
            (None, Some(words)) => words.clone(),
            (None, None) => String::new(),
        }
    }

    /// Every replica's log, each under a heading, for a failure message.
    pub fn logs(&self) -> String {
        (0..self.len())
            .map(|i| format!("--- replica {i} ---\n{}", self.log(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The URL of the shared database (`postgres://…`).
    pub fn database_url(&self) -> String {
        headway::db::testing::cluster().url(&self.database)
    }

    /// Runs `query` on the shared database with `psql` (unaligned, tuples only:
    /// one line per row, columns split by `|`) and returns what it printed,
    /// trimmed; panics with psql's message when it fails.
    pub fn sql(&self, query: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.database_url())
            .args(["-c", query])
            .stdin(Stdio::null())
            .output()
            .expect("run psql (PostgreSQL's client, installed with the server)");
        assert!(
            out.status.success(),
            "psql {query:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        self.servers.clear();
        if !std::thread::panicking() {
            headway::db::testing::cluster().drop_database(&self.database);
        }
    }
}

/// `extra` with replica `i`'s relay region under `derp.server`, in the caller's
/// `derp:` section when there is one (YAML allows a key only once).
fn with_relay_region(extra: &str, i: usize) -> String {
    let region = format!(
        "    region_id: {}\n    region_code: replica-{i}\n    region_name: headway replica {i}\n",
        region_id(i)
    );
    let lines: Vec<&str> = extra.lines().collect();
    let Some(derp) = lines.iter().position(|l| l.trim_end() == "derp:") else {
        let sep = if extra.is_empty() || extra.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        return format!("{extra}{sep}derp:\n  server:\n{region}");
    };
    let section = lines[derp + 1..]
        .iter()
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .count();
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    match lines[derp + 1..derp + 1 + section]
        .iter()
        .position(|l| l.trim_end() == "  server:")
    {
        Some(server) => out.insert(derp + 2 + server, region.trim_end().to_owned()),
        None => out.insert(derp + 1, format!("  server:\n{}", region.trim_end())),
    }
    out.join("\n") + "\n"
}

/// HAProxy in TCP mode on a free loopback port, balancing round robin over
/// backends it checks every 500 ms (two failures take one out, one success puts
/// it back), with long client and server timeouts for long polls. Killed when
/// dropped; its output (a line per connection, naming the backend) is in `log`.
pub struct Haproxy {
    dir: TempDir,
    port: u16,
    child: Child,
    backends: Vec<String>,
}

/// One backend as HAProxy's statistics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Its index in the list `Haproxy::start` was given.
    pub index: usize,
    /// `UP`, `DOWN`, `UP 1/2` (going down), `DOWN 1/1` (going up), …
    pub status: String,
    /// Connections open to it now.
    pub current: u64,
    /// Connections it was given since the start.
    pub total: u64,
}

/// One connection HAProxy is carrying (`show sess`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The client's address (`127.0.0.1:port`).
    pub source: String,
    /// The backend it went to, if one was chosen yet.
    pub backend: Option<usize>,
}

/// Where the admin socket is in HAProxy's directory.
const ADMIN_SOCKET: &str = "admin.sock";

impl Haproxy {
    /// Starts HAProxy in front of `backends` (`127.0.0.1:port` strings or socket
    /// addresses) and waits until its frontend accepts connections.
    ///
    /// # Panics
    /// When HAProxy is not installed (scripts/install-test-deps installs it) or
    /// does not start; the message has its output.
    pub fn start<A: Display>(backends: &[A]) -> Haproxy {
        assert!(!backends.is_empty(), "HAProxy needs a backend");
        let bin = which("haproxy").unwrap_or_else(|| {
            panic!("haproxy is not installed (no haproxy on PATH): run scripts/install-test-deps")
        });
        let backends: Vec<String> = backends.iter().map(ToString::to_string).collect();
        let dir = tempfile::Builder::new().prefix("hap").tempdir().unwrap();
        let mut dir = dir;
        let mut last = String::new();
        // A port taken between choosing and binding it: try again with another.
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("haproxy.cfg");
            std::fs::write(&config, config_text(dir.path(), port, &backends)).unwrap();
            let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
            let child = Command::new(&bin)
                .arg("-f")
                .arg(&config)
                .arg("-db")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
            let mut proxy = Haproxy {
                dir,
                port,
                child,
                backends: backends.clone(),
            };
            match proxy.wait_ready() {
                Ok(()) => return proxy,
                Err(why) => {
                    last = why;
                    let _ = proxy.child.kill();
                    let _ = proxy.child.wait();
                    dir = take_dir(proxy);
                }
            }
        }
        panic!("HAProxy did not start: {last}");
    }

    /// Waits until the admin socket answers and says the frontend is open (its
    /// port bound), without a connection through it, which would count as one.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!(
                    "haproxy exited ({status}):
{}",
                    self.log()
                ));
            }
            let open = self.try_admin("show stat").ok().is_some_and(|text| {
                stat_rows(&text).is_ok_and(|rows| {
                    rows.iter().any(|r| {
                        r["pxname"] == "fe" && r["svname"] == "FRONTEND" && r["status"] == "OPEN"
                    })
                })
            });
            if open {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not listening after 15 s:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL clients use (`--login-server`): `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The frontend's address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything HAProxy printed so far: start-up warnings, health-check state
    /// changes and one line per connection (`fe replicas/replica0 …`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// Runs one command on the admin socket (`show stat`, `show sess`, …) and
    /// returns the answer.
    pub fn admin(&self, command: &str) -> String {
        self.try_admin(command)
            .unwrap_or_else(|e| panic!("HAProxy's admin socket, {command:?}: {e}\n{}", self.log()))
    }

    fn try_admin(&self, command: &str) -> std::io::Result<String> {
        let mut socket = UnixStream::connect(self.dir.path().join(ADMIN_SOCKET))?;
        socket.set_read_timeout(Some(Duration::from_secs(10)))?;
        socket.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// Every backend's state and connection counts (`show stat`).
    pub fn stats(&self) -> Vec<Backend> {
        let text = self.admin("show stat");
        let rows = stat_rows(&text).unwrap_or_else(|e| panic!("{e}"));
        let number = |row: &HashMap<String, String>, column: &str| {
            row[column]
                .parse()
                .unwrap_or_else(|_| panic!("`show stat`: {column} is not a number in {row:?}"))
        };
        rows.iter()
            .filter(|r| r["pxname"] == "replicas")
            .filter_map(|r| {
                Some(Backend {
                    index: server_index(&r["svname"])?,
                    status: r["status"].clone(),
                    current: number(r, "scur"),
                    total: number(r, "stot"),
                })
            })
            .collect()
    }

    /// Backend `i`'s statistics.
    pub fn backend(&self, i: usize) -> Backend {
        self.stats()
            .into_iter()
            .find(|b| b.index == i)
            .unwrap_or_else(|| panic!("HAProxy has no backend {i}"))
    }

    /// Waits until HAProxy's health checks say backend `i` is `status` (`UP` or
    /// `DOWN`), or panics with its log.
    pub fn wait_status(&self, i: usize, status: &str, timeout: Duration) {
        let reached = super::poll_until(timeout, || self.backend(i).status == status);
        assert!(
            reached,
            "HAProxy's backend {i} ({}) is not {status} within {timeout:?}: {:?}\n{}",
            self.backends[i],
            self.backend(i),
            self.log()
        );
    }

    /// The connections HAProxy is carrying now and where each went (`show sess`).
    pub fn sessions(&self) -> Vec<Session> {
        self.admin("show sess")
            .lines()
            .filter_map(|line| {
                let field = |key: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(key))
                        .map(str::to_owned)
                };
                if field("fe=")?.as_str() != "fe" {
                    return None;
                }
                Some(Session {
                    source: field("src=")?,
                    backend: field("srv=").as_deref().and_then(server_index),
                })
            })
            .collect()
    }

    /// The backends that process `pid`'s open connections to the frontend go to
    /// (a Tailscale client's control connection: `Client::pid`), sorted, once
    /// each. Empty when it has none open.
    pub fn backends_of_process(&self, pid: u32) -> Vec<usize> {
        let sources = connections_of(pid, self.port);
        let mut found: Vec<usize> = self
            .sessions()
            .into_iter()
            .filter(|s| sources.contains(&s.source))
            .filter_map(|s| s.backend)
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory of a proxy that did not start, for the next try.
fn take_dir(mut proxy: Haproxy) -> TempDir {
    let spare = tempfile::Builder::new().prefix("hap").tempdir().unwrap();
    std::mem::replace(&mut proxy.dir, spare)
}

/// HAProxy's config: TCP frontend `fe` on `port`, backend `replicas` with one
/// server `replica<i>` per backend address.
fn config_text(dir: &Path, port: u16, backends: &[String]) -> String {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("    server replica{i} {addr} check inter 500ms fall 2 rise 1\n"))
        .collect();
    format!(
        "global\n\
         \x20   stats socket {dir}/{ADMIN_SOCKET} mode 600 level admin\n\
         \x20   log stderr format raw local0 info\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   option tcplog\n\
         \x20   option tcpka\n\
         \x20   timeout connect 1s\n\
         \x20   timeout client 10m\n\
         \x20   timeout server 10m\n\
         \x20   # A connection refused by a replica that just died goes to another.\n\
         \x20   retries 2\n\
         \x20   option redispatch 1\n\
         \n\
         frontend fe\n\
         \x20   bind 127.0.0.1:{port}\n\
         \x20   default_backend replicas\n\
         \n\
         backend replicas\n\
         \x20   balance roundrobin\n\
         {servers}",
        dir = dir.display()
    )
}

/// The rows of `show stat`'s CSV, each a map from column name to value, every
/// row holding the columns this file reads.
fn stat_rows(text: &str) -> Result<Vec<HashMap<String, String>>, String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .ok_or_else(|| format!("no header in `show stat`:\n{text}"))?
        .split(',')
        .collect();
    for column in ["pxname", "svname", "status", "scur", "stot"] {
        if !header.contains(&column) {
            return Err(format!("no {column} column in `show stat`:\n{text}"));
        }
    }
    Ok(lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .map(|(k, v)| ((*k).to_owned(), v.to_owned()))
                .collect::<HashMap<_, _>>()
        })
        .filter(|row| row.len() == header.len())
        .collect())
}

/// `replica<i>` → `i`.
fn server_index(name: &str) -> Option<usize> {
    name.strip_prefix("replica")?.parse().ok()
}

/// The local addresses (`127.0.0.1:port`) of process `pid`'s established TCP
/// connections to 127.0.0.1:`port` (`ss`, iproute2).
fn connections_of(pid: u32, port: u16) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-Htnp", "state", "established", "dst"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .expect("run ss (iproute2)");
    let marker = format!("pid={pid},");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&marker))
        // Recv-Q Send-Q Local Peer Process
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect()
}

/// `program`'s path on PATH, if it is there.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::with_relay_region;

    #[test]
    fn the_relay_region_goes_into_the_callers_derp_section() {
        let region =
            "    region_id: 901\n    region_code: replica-1\n    region_name: headway replica 1\n";
        assert_eq!(
            with_relay_region("", 1),
            format!("derp:\n  server:\n{region}")
        );
        assert_eq!(
            with_relay_region("policy:\n  mode: database", 1),
            format!("policy:\n  mode: database\nderp:\n  server:\n{region}")
        );
        assert_eq!(
            with_relay_region(
                "derp:\n  server:\n    enabled: true\nlog:\n  level: debug\n",
                1
            ),
            format!("derp:\n  server:\n{region}    enabled: true\nlog:\n  level: debug\n")
        );
        assert_eq!(
            with_relay_region("derp:\n  urls: []\n", 1),
            format!("derp:\n  server:\n{region}  urls: []\n")
        );
    }
}
