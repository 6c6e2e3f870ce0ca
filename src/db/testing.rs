//! A throwaway PostgreSQL server for tests: one per test process, started on first
//! use on 127.0.0.1 from a temporary directory, gone when the process is.
//!
//! Knows PostgreSQL's command-line tools and nothing of headway's schema: tests get
//! an empty database each (`Cluster::create_database`) and reach it by URL or by
//! the `database:` section of a headway config. Never skips: without PostgreSQL
//! installed, the first test that asks for it panics saying what is missing.
//!
//! initdb and postgres refuse to run as root, so as root every server-side tool runs
//! as the `postgres` system user (`setpriv`); the clients (`createdb`, `psql`)
//! connect over TCP as the database user `postgres`, which `trust` lets in.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where data directories go: `/tmp/headway-pg-<pid>-<random>`. The pid lets a
/// later run remove the directories of runs that have ended.
const DIR_PREFIX: &str = "headway-pg-";

/// How long the server may take to accept connections before start-up fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The one server of this process, or why it could not start (kept, so every
/// test that asks says why, instead of each trying again for 30 s).
static CLUSTER: LazyLock<Result<Cluster, String>> = LazyLock::new(start);

/// A running PostgreSQL server that lives as long as the test process.
#[derive(Debug)]
pub struct Cluster {
    /// The `bin` directory of the PostgreSQL installation (`createdb`, `psql`, …).
    bin: PathBuf,
    /// The data directory, which also holds the Unix socket and `server.log`.
    dir: PathBuf,
    port: u16,
    /// Numbers the databases this process creates.
    databases: AtomicU32,
}

/// The PostgreSQL server of this test process, started on the first call.
///
/// # Panics
/// When PostgreSQL is not installed or the server does not start; the message
/// says what is missing or includes the server's log.
pub fn cluster() -> &'static Cluster {
    match &*CLUSTER {
        Ok(cluster) => cluster,
        Err(why) => panic!("the test PostgreSQL server is unavailable: {why}"),
    }
}

impl Cluster {
    /// Creates a new empty database with a name no other database of this process
    /// has, and returns the name.
    ///
    /// # Panics
    /// When `createdb` fails (its output is in the message).
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("headway_{n}");
        self.client("createdb", &[&name]);
        name
    }

    /// Drops `database`, closing its connections first; a name that does not exist
    /// is no error.
    ///
    /// # Panics
    /// When `dropdb` fails (its output is in the message).
    pub fn drop_database(&self, database: &str) {
        self.client("dropdb", &["--force", "--if-exists", database]);
    }

    /// The connection URL of `database` (user `postgres`, no password).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The TCP port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server has logged so far, for a failing test's message.
    pub fn log(&self) -> String {
        read_log(&self.dir.join("server.log"))
    }

    /// The `database:` section of a headway config (Headscale's keys) for `database`.
    pub fn config_yaml(&self, database: &str) -> String {
        format!(
            "database:\n  type: postgres\n  postgres:\n    host: 127.0.0.1\n    port: {}\n    \
             name: {database}\n    user: postgres\n    pass: \"\"\n    ssl: \"disable\"\n",
            self.port
        )
    }

    /// [`Cluster::config_yaml`] reaching the server through its Unix socket, for a
    /// headway running in another network namespace, where 127.0.0.1 is not this
    /// server's (the socket is a file, seen from every namespace).
    pub fn config_yaml_over_socket(&self, database: &str) -> String {
        self.config_yaml(database)
            .replace("host: 127.0.0.1", &format!("host: {}", self.dir.display()))
    }

    /// Runs a client tool of the installation (`createdb`, `dropdb`, `psql`)
    /// against this server with `args` after the connection options; its stdout.
    fn client(&self, tool: &str, args: &[&str]) -> String {
        let port = self.port.to_string();
        let mut command = Command::new(self.bin.join(tool));
        command
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-w"])
            .args(args);
        match output(&mut command) {
            Ok(stdout) => stdout,
            Err(why) => panic!("{why}"),
        }
    }
}

/// Finds PostgreSQL, makes a data directory and starts the server from a thread of
/// its own (see `serve`).
fn start() -> Result<Cluster, String> {
    let bin = find_bin()?;
    let as_root = rustix::process::geteuid().is_root();
    sweep_stale_dirs(Path::new("/tmp"));

    let mut random = [0u8; 6];
    getrandom::fill(&mut random).map_err(|e| format!("no random numbers: {e}"))?;
    let dir = PathBuf::from(format!(
        "/tmp/{DIR_PREFIX}{}-{}",
        std::process::id(),
        hex::encode(random)
    ));

    // initdb makes the directory itself, so as root it belongs to `postgres`. The C
    // locale sorts text by bytes, as SQLite does.
    let mut initdb = as_user(as_root, &bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&dir)
        .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
        .arg("--locale=C");
    output(&mut initdb)?;

    let (tx, rx) = mpsc::channel();
    let (serve_bin, serve_dir) = (bin.clone(), dir.clone());
    std::thread::Builder::new()
        .name("postgres".into())
        .spawn(move || serve(&serve_bin, &serve_dir, as_root, &tx))
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let port = rx
        .recv()
        .map_err(|_| "the thread starting PostgreSQL panicked".to_string())??;
    Ok(Cluster {
        bin,
        dir,
        port,
        databases: AtomicU32::new(1),
    })
}

/// Starts the server, reports its port (or why it did not start) on `tx`, and then
/// never returns. The server is told to stop fast (SIGINT) when the thread that
/// started it ends (`PR_SET_PDEATHSIG` follows the thread, not the process), so
/// this thread lives until the process exits and the server goes with it.
fn serve(bin: &Path, dir: &Path, as_root: bool, tx: &mpsc::Sender<Result<u16, String>>) {
    let started = start_server(bin, dir, as_root);
    let mut child = match started {
        Ok((child, port)) => {
            let _ = tx.send(Ok(port));
            Some(child)
        }
        Err(why) => {
            let _ = tx.send(Err(why));
            None
        }
    };
    if let Some(child) = &mut child {
        // Reaps the server should it stop on its own; tests then fail to connect.
        let _ = child.wait();
    }
    loop {
        std::thread::park();
    }
}

/// Starts `postgres` on a free port and waits until it accepts connections. A port
/// taken between choosing and binding it is tried again with another.
fn start_server(bin: &Path, dir: &Path, as_root: bool) -> Result<(Child, u16), String> {
    let log_path = dir.join("server.log");
    for _ in 0..5 {
        let port = free_port()?;
        let log = File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", log_path.display()))?;
        let mut command = Command::new("setpriv");
        if as_root {
            command.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
        }
        command
            .args(["--pdeathsig", "INT", "--"])
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(dir)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
            ])
            .arg(dir)
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=400"])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run setpriv (util-linux) to start postgres: {e}"))?;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = read_log(&log_path);
                if log.contains("could not bind") || log.contains("already in use") {
                    break;
                }
                return Err(format!(
                    "postgres exited with {status} before accepting connections; its log:\n{log}"
                ));
            }
            if ready(bin, port) {
                return Ok((child, port));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "postgres did not accept connections on 127.0.0.1:{port} within {}s; its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    read_log(&log_path)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Err(format!(
        "every port tried was taken; the last server log:\n{}",
        read_log(&log_path)
    ))
}

/// Whether the server on `port` accepts connections (`pg_isready` exits 0).
fn ready(bin: &Path, port: u16) -> bool {
    Command::new(bin.join("pg_isready"))
        .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "postgres", "-d", "postgres"])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout), or else
/// `pg_config --bindir`; the directory must hold `initdb` and `postgres`.
fn find_bin() -> Result<PathBuf, String> {
    let complete = |bin: &Path| bin.join("initdb").is_file() && bin.join("postgres").is_file();
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<f64>().ok()?;
            let bin = entry.path().join("bin");
            complete(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((_, bin)) = newest {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if complete(&bin) {
            return Ok(bin);
        }
    }
    Err(
        "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb, and `pg_config \
         --bindir` names no directory with initdb and postgres; install Debian's postgresql \
         (scripts/install-test-deps does)"
            .into(),
    )
}

/// Removes the data directories of test processes that have ended (their servers
/// ended with them). Directories of live processes, and what cannot be removed,
/// are left alone.
fn sweep_stale_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A command that runs `program` as the `postgres` user when we are root.
fn as_user(as_root: bool, program: &Path) -> Command {
    let mut command = if as_root {
        let mut setpriv = Command::new("setpriv");
        setpriv
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
        setpriv
    } else {
        Command::new(program)
    };
    // The postgres user may not be allowed into the caller's working directory.
    command.current_dir("/");
    command
}

/// Runs `command` to its end; its stdout, or what it said when it failed.
fn output(command: &mut Command) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

#[cfg(all(test, feature = "full-suite"))]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_starts_and_gives_each_caller_its_own_database() {
        let begun = Instant::now();
        let cluster = cluster();
        let started = begun.elapsed();
        let begun = Instant::now();
        let first = cluster.create_database();
        let created = begun.elapsed();
        let second = cluster.create_database();
        eprintln!("started in {started:?}, a database created in {created:?}");
        assert_ne!(first, second);
        assert!(cluster.dir.starts_with("/tmp"), "{}", cluster.dir.display());
        assert!(
            cluster.log().contains("ready to accept connections"),
            "{}",
            cluster.log()
        );
        assert_eq!(
            cluster.url(&first),
            format!("postgres://postgres@127.0.0.1:{}/{first}", cluster.port())
        );

        cluster.client(
            "psql",
            &[
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &first,
                "-c",
                "CREATE TABLE t (x int)",
            ],
        );
        let tables = |database: &str| {
            cluster.client(
                "psql",
                &[
                    "-At",
                    "-d",
                    database,
                    "-c",
                    "SELECT count(*) FROM pg_tables WHERE tablename = 't'",
                ],
            )
        };
        assert_eq!(tables(&first).trim(), "1");
        assert_eq!(tables(&second).trim(), "0", "databases are separate");

        cluster.drop_database(&second);
        cluster.drop_database(&second);
        let names = cluster.client(
            "psql",
            &[
                "-At",
                "-d",
                "postgres",
                "-c",
                "SELECT datname FROM pg_database",
            ],
        );
        assert!(names.lines().any(|n| n == first), "{names}");
        assert!(!names.lines().any(|n| n == second), "{names}");
    }

    #[test]
    fn stale_directories_of_ended_processes_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        // No process has pid 4194305 (above the kernel's maximum).
        let stale = tmp.path().join(format!("{DIR_PREFIX}4194305-abc"));
        let live = tmp
            .path()
            .join(format!("{DIR_PREFIX}{}-abc", std::process::id()));
        let other = tmp.path().join("headway-pg-notapid");
        for dir in [&stale, &live, &other] {
            std::fs::create_dir_all(dir.join("base")).unwrap();
        }
        sweep_stale_dirs(tmp.path());
        assert!(!stale.exists());
        assert!(live.exists());
        assert!(other.exists());
    }
}
