//! Faults an admin meets in the field. Storage: the database's disk fills up,
//! another process holds the database's lock, or the database sits on a
//! read-only file system. Writes fail with words that say which, to the caller
//! and in the log; reads keep working; nothing is lost; the server stays up and
//! recovers once the condition is gone (from a read-only file system: at its
//! next start). Crashes: `kill -9` at random moments while simulated nodes
//! register, churn and change routes loses nothing the server acknowledged,
//! leaves an intact database with no address or name held twice, and real
//! clients converge again.

use crate::support::{Spawn, TestServer, poll_until};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

/// A small tmpfs mounted on a directory of the test's (needs root, as the
/// namespace tests do); lazily unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, size: &str) -> SmallDisk {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(at.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes to `path` until the disk refuses.
fn fill(path: &std::path::Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

#[test]
fn a_full_disk_fails_writes_clearly_keeps_reads_and_recovers() {
    let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
    let _disk_mount = SmallDisk::mount(dir.path(), "8m");
    let server = TestServer::spawn_with(Spawn {
        dir: Some(dir),
        sqlite: true,
        ..Spawn::default()
    });
    server.cli(&["users", "create", "before"]).ok();
    let filler = server.dir.path().join("filler");
    fill(&filler);

    // SQLite may still have room in pages it already holds (its write-ahead log is
    // reused after each checkpoint): write until it has not.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (acknowledged, status) = runtime.block_on(async {
        let mut grpc = server.grpc().await;
        for i in 0..20_000 {
            let request = headway::grpc::pb::CreateUserRequest {
                name: format!("during-{i}"),
                display_name: "x".repeat(200),
                ..Default::default()
            };
            if let Err(status) = grpc.create_user(request).await {
                return (i, Some(status));
            }
        }
        (20_000, None)
    });
    let status = status.expect("a write fails once the disk is full");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("the disk holding the database is full"),
        "{status:?}"
    );
    // The CLI says it in the same words, and so does the log.
    let refused = server.cli(&["users", "create", "refused"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("the disk holding the database is full"),
        "{refused:?}"
    );
    assert!(
        server
            .log()
            .contains("the disk holding the database is full"),
        "{}",
        server.log()
    );
    // Reads still work.
    let list = server.cli(&["users", "list"]).ok().stdout;
    assert!(list.contains("before"), "{list}");

    // Space returns: writes work again without a restart, and nothing was lost.
    std::fs::remove_file(&filler).unwrap();
    server.cli(&["users", "create", "after"]).ok();
    let list = server.cli(&["users", "list"]).ok().stdout;
    assert!(list.contains("before") && list.contains("after"), "{list}");
    // Every write the server acknowledged is there (an INSERT that stopped at its
    // first row once lost its failed commit and still said "created").
    let names: std::collections::HashSet<String> = runtime.block_on(async {
        let mut grpc = server.grpc().await;
        let users = grpc
            .list_users(headway::grpc::pb::ListUsersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .users;
        users.into_iter().map(|u| u.name).collect()
    });
    for i in 0..acknowledged {
        assert!(
            names.contains(&format!("during-{i}")),
            "during-{i} was acknowledged but is gone"
        );
    }
}

#[test]
fn a_database_locked_by_another_process_is_named_and_released_writes_work() {
    let server = TestServer::spawn_with(Spawn {
        // SQLite waits 10 s for a lock; the CLI must wait longer to hear why.
        env: vec![("HEADWAY_CLI_TIMEOUT".into(), "30s".into())],
        sqlite: true,
        ..Spawn::default()
    });
    server.cli(&["users", "create", "before"]).ok();
    let db = server.dir.path().join("db.sqlite");

    // Another process (here: a SQLite shell-alike) holds an exclusive lock.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut conn)
                .await
                .unwrap();
            locked_tx.send(()).unwrap();
            let _ = tokio::task::spawn_blocking(move || release_rx.recv()).await;
            sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
        });
    });
    locked_rx.recv().unwrap();
    let refused = server.cli(&["users", "create", "during"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused.stderr.contains("locked by another process"),
        "{refused:?}"
    );

    release_tx.send(()).unwrap();
    holder.join().unwrap();
    assert!(
        poll_until(Duration::from_secs(10), || server
            .cli(&["users", "create", "after"])
            .code
            == 0),
        "writes resume once the lock is released"
    );
    let list = server.cli(&["users", "list"]).ok().stdout;
    assert!(list.contains("before") && list.contains("after"), "{list}");
}

/// A read-only bind mount of a directory over itself (needs root, as the other
/// mounts here do): what a file system remounted read-only looks like to a
/// process that opens files in it afterwards. Lazily unmounted on drop.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn mount(at: &std::path::Path) -> ReadOnly {
        for args in [&["--bind"][..], &["-o", "remount,ro,bind"][..]] {
            let out = Command::new("mount")
                .args(args)
                .arg(at)
                .arg(at)
                .output()
                .expect("run mount");
            assert!(
                out.status.success(),
                "a read-only bind mount needs root: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ReadOnly(at.to_owned())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Whether the process `pid` is alive (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .trim_start()
            .starts_with('Z')
    })
}

/// The database left by a crash (a hot write-ahead log beside it) on a file
/// system that has since gone read-only: the server starts, serves what was
/// committed, refuses every write in words that say why, and stays up (no crash
/// loop). Once the file system is writable again, a restart writes again and
/// loses nothing.
#[test]
fn a_read_only_database_is_named_reads_keep_working_and_the_server_stays_up() {
    // The database in a directory of its own: the log and the admin socket stay writable.
    let config = crate::support::sqlite_test_config(std::path::Path::new("{dir}"), "")
        .replace("{dir}/db.sqlite", "{dir}/data/db.sqlite");
    let spawn = |dir: Option<tempfile::TempDir>| {
        TestServer::spawn_with(Spawn {
            config_file: Some(config.clone()),
            dir,
            ..Spawn::default()
        })
    };
    let server = spawn(None);
    server.cli(&["users", "create", "before"]).ok();
    let key = server.reusable_key("before", &[]);
    let dir = server.kill();
    let data = dir.path().join("data");
    assert!(
        data.join("db.sqlite-wal").exists(),
        "the crash leaves a write-ahead log"
    );

    let read_only = ReadOnly::mount(&data);
    assert!(std::fs::write(data.join("probe"), b"x").is_err());
    let server = spawn(Some(dir));
    let list = server.cli(&["users", "list"]).ok().stdout;
    assert!(list.contains("before"), "{list}");
    let said = "the database cannot be written (a read-only file or file system)";
    for attempt in 0..3 {
        let refused = server.cli(&["users", "create", &format!("during-{attempt}")]);
        assert_ne!(refused.code, 0, "{refused:?}");
        assert!(refused.stderr.contains(said), "{refused:?}");
        assert_eq!(
            crate::support::http_get(&server.http_addr, "/health").0,
            200
        );
        assert!(alive(server.pid()), "the server exited:\n{}", server.log());
    }
    // A client that registers is told the same.
    let answer = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use crate::support::control_client::{noise_client, post, register_body, target};
        let node_key =
            headway::types::NodeKey::from_bytes(*headway::types::PrivateKey::generate().as_bytes());
        let mut control = noise_client(&target(&server).await, std::net::Ipv4Addr::LOCALHOST).await;
        let answer = post(
            &mut control,
            "/machine/register",
            register_body(&node_key, &key),
        )
        .await;
        serde_json::from_slice::<serde_json::Value>(answer.body()).unwrap()
    });
    assert!(
        answer["Error"].as_str().is_some_and(|e| e.contains(said)),
        "{answer}"
    );
    assert!(server.log().contains(said), "{}", server.log());
    let list = server.cli(&["users", "list"]).ok().stdout;
    assert!(
        list.contains("before") && !list.contains("during"),
        "{list}"
    );

    // Writable again: after a restart (here a crash), writes work and nothing is lost.
    drop(read_only);
    let server = spawn(Some(server.kill()));
    server.cli(&["users", "create", "after"]).ok();
    let list = server.cli(&["users", "list"]).ok().stdout;
    assert!(list.contains("before") && list.contains("after"), "{list}");
}

/// A small ext4 file system in a loop device, mounted with
/// `errors=remount-ro` as root file systems usually are (needs root);
/// unmounted and detached on drop.
struct Ext4Disk {
    at: std::path::PathBuf,
    device: String,
    _image: tempfile::TempDir,
}

impl Ext4Disk {
    fn mount(at: &std::path::Path) -> Ext4Disk {
        let image = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
        let file = image.path().join("disk.img");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("run a disk tool");
            assert!(
                out.status.success(),
                "{cmd:?} (needs root and util-linux, e2fsprogs): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&file));
        let device = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file));
        let disk = Ext4Disk {
            at: at.to_owned(),
            device,
            _image: image,
        };
        run(Command::new("mount")
            .args(["-o", "errors=remount-ro", &disk.device])
            .arg(at));
        disk
    }

    /// What the kernel does when it finds the file system damaged: remounts it
    /// read-only at once, under the files open in it.
    fn fail(&self) {
        let name = self.device.trim_start_matches("/dev/");
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "1")
            .expect("ext4's trigger_fs_error");
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let line = mounts
            .lines()
            .find(|l| l.starts_with(&format!("{} ", self.device)))
            .unwrap_or_default();
        assert!(
            line.contains(" ro,") || line.contains("emergency_ro"),
            "still writable: {line}"
        );
    }
}

impl Drop for Ext4Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// The file system holding the database turns read-only under the running
/// server (ext4 finding an error, with `errors=remount-ro`): writes are refused
/// in words that say so, reads keep working and the server stays up.
#[test]
fn a_file_system_turning_read_only_under_the_server_is_named() {
    let config = crate::support::sqlite_test_config(std::path::Path::new("{dir}"), "")
        .replace("{dir}/db.sqlite", "{dir}/data/db.sqlite");
    let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let disk = Ext4Disk::mount(&dir.path().join("data"));
    let server = TestServer::spawn_with(Spawn {
        config_file: Some(config),
        dir: Some(dir),
        ..Spawn::default()
    });
    server.cli(&["users", "create", "before"]).ok();
    disk.fail();

    let refused = server.cli(&["users", "create", "during"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("read-only"), "{refused:?}");
    let list = server.cli(&["users", "list"]).ok().stdout;
    assert!(list.contains("before"), "{list}");
    assert_eq!(
        crate::support::http_get(&server.http_addr, "/health").0,
        200
    );
    assert!(alive(server.pid()), "the server exited:\n{}", server.log());
}

/// `kill -9` at random moments while simulated nodes register, churn and change
/// routes: afterwards the database passes SQLite's checks, no address or name is
/// held twice, every acknowledged outcome is there, and real clients converge.
mod kill_loop {
    use crate::clients::assert_logged_in;
    use crate::support::control_client::{
        Control, lite_update_body, logout_body, register_with_key, rotate_body, target,
        try_noise_client, try_post,
    };
    use crate::support::tailscale::{Client, free_port, versions};
    use crate::support::{Spawn, TestServer, http_get, poll_until, wait_until};
    use headway::bench::node::Target;
    use headway::grpc::pb;
    use headway::grpc::pb::headscale_service_client::HeadscaleServiceClient;
    use headway::types::{MachineKey, NodeKey, PrivateKey};
    use std::collections::HashMap;
    use std::net::Ipv4Addr;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    use tonic::transport::Channel;

    /// Loader tasks, each with a user and pre-auth key of its own.
    const WORKERS: usize = 3;
    /// A request the server has not answered within this has an unknown outcome.
    const OP_TIMEOUT: Duration = Duration::from_secs(10);
    /// A prefix many machines advertise, so that routers of it come and go.
    const SHARED_PREFIX: &str = "192.168.77.0/24";

    /// xorshift64*: small and seedable. A run prints its seed, and
    /// `HEADWAY_KILL_SEED` gives another run the same kill moments and the same
    /// sequence of loader choices (the timing of requests still varies).
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(seed | 1)
        }

        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// One simulated machine: its keys, and what the server acknowledged about it.
    struct Machine {
        private: PrivateKey,
        /// `mkey:…`, as the admin API shows it.
        machine_key: String,
        node_key: NodeKey,
        /// Keys it held before a rotation or a new login: no node may hold them now.
        old_keys: Vec<NodeKey>,
        hostname: String,
        /// Prefixes of its own it may advertise.
        prefixes: [String; 2],
        id: Option<u64>,
        /// Every request about it was answered: the server must show exactly
        /// what it acknowledged. Otherwise (the server died mid-request) only
        /// that it is there at most once.
        certain: bool,
        /// Its registration was acknowledged: it has a node, whatever else happened.
        registered: bool,
        /// A deletion of it was sent but not answered.
        maybe_deleted: bool,
        logged_out: bool,
        deleted: bool,
        /// The name an acknowledged admin rename gave it.
        given_name: Option<String>,
        /// The routes an acknowledged approval left approved.
        approved: Option<Vec<String>>,
    }

    impl Machine {
        fn new(serial: u64, rng: &mut Rng) -> Machine {
            let private = PrivateKey::generate();
            let secret = x25519_dalek::StaticSecret::from(*private.as_bytes());
            let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
            let (hi, lo) = ((serial >> 8) & 0xff, serial & 0xff);
            Machine {
                machine_key: MachineKey::from_bytes(public).to_string(),
                private,
                node_key: fresh_node_key(),
                old_keys: Vec::new(),
                // A few hostnames for everyone, so MagicDNS names collide and get suffixes.
                hostname: format!("busy-{}", rng.below(6)),
                prefixes: [format!("10.{hi}.{lo}.0/25"), format!("10.{hi}.{lo}.128/25")],
                id: None,
                certain: true,
                registered: false,
                maybe_deleted: false,
                logged_out: false,
                deleted: false,
                given_name: None,
                approved: None,
            }
        }

        /// Takes a new node key, keeping the old one as one no node may hold.
        fn rekey(&mut self, new: NodeKey) {
            let old = std::mem::replace(&mut self.node_key, new);
            self.old_keys.push(old);
        }
    }

    fn fresh_node_key() -> NodeKey {
        NodeKey::from_bytes(*PrivateKey::generate().as_bytes())
    }

    /// How one request ended.
    enum Outcome {
        /// Answered: it happened (the ledger records it).
        Done,
        /// Answered: it did not happen.
        Refused(String),
        /// Sent, but no answer: it may or may not have happened.
        Unknown(String),
        /// Never reached the server (it was down): nothing happened.
        Down,
    }

    /// What each loader task did, and its machines.
    #[derive(Default)]
    struct Tally {
        registered: usize,
        logins: usize,
        rotations: usize,
        logouts: usize,
        renames: usize,
        approvals: usize,
        deletions: usize,
        refused: usize,
        unknown: usize,
        down: usize,
        /// Refusals and unknown outcomes by kind (digits masked), for the summary.
        reasons: HashMap<String, usize>,
        machines: Vec<Machine>,
    }

    impl Tally {
        fn add(&mut self, other: Tally) {
            self.registered += other.registered;
            self.logins += other.logins;
            self.rotations += other.rotations;
            self.logouts += other.logouts;
            self.renames += other.renames;
            self.approvals += other.approvals;
            self.deletions += other.deletions;
            self.refused += other.refused;
            self.unknown += other.unknown;
            self.down += other.down;
            for (reason, count) in other.reasons {
                *self.reasons.entry(reason).or_default() += count;
            }
            self.machines.extend(other.machines);
        }
    }

    /// What every loader task shares.
    struct Shared {
        target: Target,
        socket: PathBuf,
        stop: AtomicBool,
        /// Acknowledged outcomes so far, over all tasks.
        done: AtomicUsize,
    }

    /// A `/machine/register` exchange as `machine`: the answer's JSON, or how it failed.
    async fn register_call(
        shared: &Shared,
        machine: &PrivateKey,
        body: String,
    ) -> Result<serde_json::Value, Outcome> {
        let mut control = connect(shared, machine).await.ok_or(Outcome::Down)?;
        let answer = try_post(&mut control, "/machine/register", body, OP_TIMEOUT)
            .await
            .map_err(|e| Outcome::Unknown(format!("register: {e:#}")))?;
        if answer.status() != 200 {
            return Err(Outcome::Unknown(format!(
                "register answered {}",
                answer.status()
            )));
        }
        serde_json::from_slice(answer.body())
            .map_err(|e| Outcome::Unknown(format!("register: {e}")))
    }

    /// A control connection as `machine`; `None` while the server is down.
    async fn connect(shared: &Shared, machine: &PrivateKey) -> Option<Control> {
        tokio::time::timeout(
            OP_TIMEOUT,
            try_noise_client(&shared.target, Ipv4Addr::LOCALHOST, machine),
        )
        .await
        .ok()?
        .ok()
    }

    /// The admin API over the Unix socket; `None` while the server is down.
    async fn admin(shared: &Shared) -> Option<HeadscaleServiceClient<Channel>> {
        let path = shared.socket.clone();
        let endpoint = tonic::transport::Endpoint::try_from("http://[::]:50051").unwrap();
        let connecting = endpoint.connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }));
        let channel = tokio::time::timeout(OP_TIMEOUT, connecting)
            .await
            .ok()?
            .ok()?;
        Some(HeadscaleServiceClient::new(channel))
    }

    /// An admin call's failure: refusals are answers; transport failures (the
    /// server died) and internal errors leave the outcome unknown.
    fn refusal_or_unknown(status: &tonic::Status) -> Outcome {
        use tonic::Code;
        let said = format!("{:?}: {}", status.code(), status.message());
        match status.code() {
            Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded => Outcome::Unknown(said),
            _ => Outcome::Refused(said),
        }
    }

    /// Runs an admin call with the operation timeout.
    async fn call<T>(
        within: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Outcome> {
        match tokio::time::timeout(OP_TIMEOUT, within).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(refusal_or_unknown(&status)),
            Err(_) => Err(Outcome::Unknown("admin call timed out".into())),
        }
    }

    /// An answer that admits the node: no error, authorized, key not expired.
    fn admitted(answer: &serde_json::Value) -> Outcome {
        let error = answer["Error"].as_str().unwrap_or_default();
        if !error.is_empty() {
            Outcome::Refused(error.to_owned())
        } else if answer["MachineAuthorized"] == true && answer["NodeKeyExpired"] != true {
            Outcome::Done
        } else {
            Outcome::Refused(format!("not admitted: {answer}"))
        }
    }

    /// Fills in the node ids of `machines` from the admin API, if it answers;
    /// a machine still without one is skipped by the admin operations.
    async fn look_up_ids(shared: &Shared, user: &str, machines: &mut [Machine]) {
        let Some(mut grpc) = admin(shared).await else {
            return;
        };
        let Ok(listed) = call(grpc.list_nodes(pb::ListNodesRequest { user: user.into() })).await
        else {
            return;
        };
        let ids: HashMap<&str, u64> = listed
            .nodes
            .iter()
            .map(|n| (n.node_key.as_str(), n.id))
            .collect();
        for machine in machines.iter_mut().filter(|m| m.id.is_none()) {
            machine.id = ids.get(machine.node_key.to_string().as_str()).copied();
        }
    }

    /// The operations the loader picks from, for a machine it has.
    #[derive(Clone, Copy)]
    enum Op {
        Rotate,
        LogOutOrIn,
        Rename,
        Routes,
        Delete,
    }

    /// One loader task: registers new machines and churns its own (rotations,
    /// logouts and logins, admin renames, advertised and approved routes,
    /// deletions) until told to stop, tolerating a server that comes and goes.
    async fn load(worker: usize, auth_key: String, shared: Arc<Shared>, seed: u64) -> Tally {
        let user = format!("load{worker}");
        let mut rng = Rng::new(seed);
        let mut tally = Tally::default();
        let mut active: Vec<Machine> = Vec::new();
        let mut serial = worker as u64;
        while !shared.stop.load(Ordering::Relaxed) {
            let outcome = if active.len() < 4 || rng.chance(30) {
                serial += WORKERS as u64;
                let mut machine = Machine::new(serial, &mut rng);
                let body = register_with_key(
                    &machine.node_key,
                    &auth_key,
                    &machine.hostname,
                    std::slice::from_ref(&machine.prefixes[0]),
                );
                let outcome = match register_call(&shared, &machine.private, body).await {
                    Ok(answer) => admitted(&answer),
                    Err(outcome) => outcome,
                };
                match outcome {
                    Outcome::Done => {
                        tally.registered += 1;
                        machine.registered = true;
                        active.push(machine);
                    }
                    Outcome::Unknown(_) => {
                        machine.certain = false;
                        tally.machines.push(machine);
                    }
                    Outcome::Refused(_) | Outcome::Down => {}
                }
                outcome
            } else {
                let index = rng.below(active.len() as u64) as usize;
                let op = [
                    Op::Rotate,
                    Op::LogOutOrIn,
                    Op::Rename,
                    Op::Routes,
                    Op::Delete,
                ][rng.below(5) as usize];
                if matches!(op, Op::Rename | Op::Routes | Op::Delete) && active[index].id.is_none()
                {
                    look_up_ids(&shared, &user, &mut active).await;
                }
                let machine = &mut active[index];
                let outcome = churn(&shared, op, machine, &auth_key, &mut rng, &mut tally).await;
                if let Outcome::Unknown(_) = outcome {
                    machine.certain = false;
                    machine.maybe_deleted = matches!(op, Op::Delete);
                }
                if !machine.certain || machine.deleted {
                    tally.machines.push(active.swap_remove(index));
                }
                outcome
            };
            match outcome {
                Outcome::Done => {
                    shared.done.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Refused(why) => {
                    tally.refused += 1;
                    *tally.reasons.entry(kind("refused", &why)).or_default() += 1;
                }
                Outcome::Unknown(why) => {
                    tally.unknown += 1;
                    *tally.reasons.entry(kind("unknown", &why)).or_default() += 1;
                }
                Outcome::Down => {
                    tally.down += 1;
                    // The server is restarting: wait a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        tally.machines.extend(active);
        tally
    }

    /// `what: why` with digits masked, so that like reasons count together.
    fn kind(what: &str, why: &str) -> String {
        let masked: String = why
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        format!("{what}: {masked}")
    }

    /// One churn operation on `machine`; updates what it records on `Done`.
    async fn churn(
        shared: &Shared,
        op: Op,
        machine: &mut Machine,
        auth_key: &str,
        rng: &mut Rng,
        tally: &mut Tally,
    ) -> Outcome {
        // A logged-out machine can only log in again (or be renamed or deleted).
        let op = match op {
            Op::Rotate | Op::Routes if machine.logged_out => Op::LogOutOrIn,
            op => op,
        };
        match op {
            Op::Rotate => {
                let new = fresh_node_key();
                let body = rotate_body(&machine.node_key, &new, auth_key, &machine.hostname);
                let outcome = match register_call(shared, &machine.private, body).await {
                    Ok(answer) => admitted(&answer),
                    Err(outcome) => return outcome,
                };
                if let Outcome::Done = outcome {
                    machine.rekey(new);
                    tally.rotations += 1;
                }
                outcome
            }
            Op::LogOutOrIn if machine.logged_out => {
                let new = fresh_node_key();
                let body = register_with_key(
                    &new,
                    auth_key,
                    &machine.hostname,
                    std::slice::from_ref(&machine.prefixes[0]),
                );
                let outcome = match register_call(shared, &machine.private, body).await {
                    Ok(answer) => admitted(&answer),
                    Err(outcome) => return outcome,
                };
                if let Outcome::Done = outcome {
                    machine.rekey(new);
                    machine.logged_out = false;
                    tally.logins += 1;
                }
                outcome
            }
            Op::LogOutOrIn => {
                let body = logout_body(&machine.node_key, &machine.hostname);
                let answer = match register_call(shared, &machine.private, body).await {
                    Ok(answer) => answer,
                    Err(outcome) => return outcome,
                };
                let error = answer["Error"].as_str().unwrap_or_default();
                if !error.is_empty() {
                    return Outcome::Refused(error.to_owned());
                }
                if answer["NodeKeyExpired"] != true {
                    return Outcome::Refused(format!("logout not confirmed: {answer}"));
                }
                machine.logged_out = true;
                tally.logouts += 1;
                Outcome::Done
            }
            Op::Rename => {
                let Some(id) = machine.id else {
                    return Outcome::Refused("not listed yet".into());
                };
                let Some(mut grpc) = admin(shared).await else {
                    return Outcome::Down;
                };
                // Half from a few names for everyone, so that renames collide
                // and are refused; half a name of its own.
                let new_name = if rng.chance(50) {
                    format!("admin-{}", rng.below(20))
                } else {
                    format!("admin-{id}-{}", rng.below(1000))
                };
                let request = pb::RenameNodeRequest {
                    node_id: id,
                    new_name,
                };
                match call(grpc.rename_node(request)).await {
                    Ok(renamed) => {
                        machine.given_name = renamed.node.map(|n| n.given_name);
                        tally.renames += 1;
                        Outcome::Done
                    }
                    Err(outcome) => outcome,
                }
            }
            Op::Routes => {
                let Some(id) = machine.id else {
                    return Outcome::Refused("not listed yet".into());
                };
                // Advertise a new set in a lite map update (sometimes with a new
                // hostname, which moves a derived MagicDNS name), then approve
                // part of it. The update's outcome is not recorded: it changes
                // nothing the ledger checks.
                let mut advertised: Vec<String> = machine
                    .prefixes
                    .iter()
                    .cloned()
                    .chain([SHARED_PREFIX.to_owned()])
                    .filter(|_| rng.chance(60))
                    .collect();
                if advertised.is_empty() {
                    advertised.push(machine.prefixes[1].clone());
                }
                if rng.chance(30) {
                    machine.hostname = format!("busy-{}", rng.below(6));
                }
                let Some(mut control) = connect(shared, &machine.private).await else {
                    return Outcome::Down;
                };
                let body = lite_update_body(&machine.node_key, &machine.hostname, &advertised);
                match try_post(&mut control, "/machine/map", body, OP_TIMEOUT).await {
                    Ok(answer) if answer.status() == 200 => {}
                    Ok(answer) => {
                        return Outcome::Refused(format!("lite update: {}", answer.status()));
                    }
                    Err(_) => return Outcome::Down,
                }
                let Some(mut grpc) = admin(shared).await else {
                    return Outcome::Down;
                };
                let routes: Vec<String> =
                    advertised.into_iter().filter(|_| rng.chance(50)).collect();
                let request = pb::SetApprovedRoutesRequest {
                    node_id: id,
                    routes,
                };
                match call(grpc.set_approved_routes(request)).await {
                    Ok(set) => {
                        let mut approved = set.node.map(|n| n.approved_routes).unwrap_or_default();
                        approved.sort();
                        machine.approved = Some(approved);
                        tally.approvals += 1;
                        Outcome::Done
                    }
                    Err(outcome) => outcome,
                }
            }
            Op::Delete => {
                let Some(id) = machine.id else {
                    return Outcome::Refused("not listed yet".into());
                };
                let Some(mut grpc) = admin(shared).await else {
                    return Outcome::Down;
                };
                match call(grpc.delete_node(pb::DeleteNodeRequest { node_id: id })).await {
                    Ok(_) => {
                        machine.deleted = true;
                        tally.deletions += 1;
                        Outcome::Done
                    }
                    Err(outcome) => outcome,
                }
            }
        }
    }

    /// Values held by more than one node: `value: ids`.
    fn held_twice<'a>(values: impl Iterator<Item = (&'a str, u64)>) -> Vec<String> {
        let mut holders: HashMap<&str, Vec<u64>> = HashMap::new();
        for (value, id) in values {
            holders.entry(value).or_default().push(id);
        }
        let mut twice: Vec<String> = holders
            .into_iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(value, ids)| format!("{value} held by nodes {ids:?}"))
            .collect();
        twice.sort();
        twice
    }

    /// Everything wrong with the server's nodes against the loader's ledger.
    fn problems(nodes: &[pb::Node], machines: &[Machine]) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(held_twice(
            nodes
                .iter()
                .flat_map(|n| n.ip_addresses.iter().map(|ip| (ip.as_str(), n.id))),
        ));
        problems.extend(held_twice(
            nodes.iter().map(|n| (n.given_name.as_str(), n.id)),
        ));
        problems.extend(held_twice(
            nodes.iter().map(|n| (n.node_key.as_str(), n.id)),
        ));
        let by_key: HashMap<&str, &pb::Node> =
            nodes.iter().map(|n| (n.node_key.as_str(), n)).collect();
        let mut by_machine: HashMap<&str, Vec<&pb::Node>> = HashMap::new();
        for node in nodes {
            by_machine.entry(&node.machine_key).or_default().push(node);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for m in machines {
            let held = by_machine.get(m.machine_key.as_str()).map_or(0, Vec::len);
            if held > 1 {
                problems.push(format!("{} has {held} nodes", m.machine_key));
            }
            for old in &m.old_keys {
                if let Some(node) = by_key.get(old.to_string().as_str()) {
                    problems.push(format!(
                        "node {} still holds {old}, which its machine replaced",
                        node.id
                    ));
                }
            }
            if !m.certain {
                if m.registered && !m.maybe_deleted && held == 0 {
                    problems.push(format!(
                        "{} (node {:?}) was acknowledged, then its node was lost",
                        m.machine_key, m.id
                    ));
                }
                continue;
            }
            let key = m.node_key.to_string();
            let node = by_key.get(key.as_str());
            if m.deleted {
                if let Some(node) = node {
                    problems.push(format!("node {} was deleted but is back", node.id));
                }
                continue;
            }
            let Some(node) = node else {
                problems.push(format!(
                    "the acknowledged registration of {key} (node {:?}) is gone",
                    m.id
                ));
                continue;
            };
            if let Some(id) = m.id
                && id != node.id
            {
                problems.push(format!("{key} was node {id}, now node {}", node.id));
            }
            if let Some(name) = &m.given_name
                && *name != node.given_name
            {
                problems.push(format!(
                    "node {} was renamed {name}, but is {}",
                    node.id, node.given_name
                ));
            }
            if let Some(approved) = &m.approved {
                let mut now_approved = node.approved_routes.clone();
                now_approved.sort();
                if *approved != now_approved {
                    problems.push(format!(
                        "node {} had {approved:?} approved, now {now_approved:?}",
                        node.id
                    ));
                }
            }
            let expired = node.expiry.as_ref().is_some_and(|e| e.seconds <= now);
            if m.logged_out != expired {
                problems.push(format!(
                    "node {}: logged out {}, but expired {expired}",
                    node.id, m.logged_out
                ));
            }
        }
        problems
    }

    /// Whether `status` shows the peer `name` at `ip`, online.
    fn sees_online(status: &serde_json::Value, name: &str, ip: &str) -> bool {
        status["Peer"].as_object().is_some_and(|peers| {
            peers.values().any(|p| {
                p["HostName"] == name
                    && p["Online"] == true
                    && p["TailscaleIPs"]
                        .as_array()
                        .is_some_and(|ips| ips.iter().any(|i| i == ip))
            })
        })
    }

    /// A node as the database and the admin API must both show it: id, node
    /// key, MagicDNS name, addresses.
    type NodeRow = (i64, String, String, Vec<String>);

    /// SQLite's own checks on the database file (`integrity_check`'s lines, and
    /// how many rows `foreign_key_check` found), and its nodes.
    async fn inspect(db: &Path) -> (Vec<String>, usize, Vec<NodeRow>) {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let foreign = sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .len();
        type Row = (i64, String, String, Option<String>, Option<String>);
        let rows: Vec<Row> =
            sqlx::query_as("SELECT id, node_key, given_name, ipv4, ipv6 FROM nodes ORDER BY id")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let nodes = rows
            .into_iter()
            .map(|(id, key, name, v4, v6)| (id, key, name, v4.into_iter().chain(v6).collect()))
            .collect();
        (integrity, foreign, nodes)
    }

    /// What the servers of a run logged (one file per server life).
    struct ServerLogs {
        count: usize,
        /// `ERROR` lines and panics.
        errors: Vec<String>,
        /// Warnings by kind (digits masked): how many, and the first as it was.
        warnings: Vec<(usize, String)>,
    }

    impl ServerLogs {
        fn read(dir: &Path) -> ServerLogs {
            let logs: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("server-"))
                .map(|e| crate::support::strip_ansi(&std::fs::read_to_string(e.path()).unwrap()))
                .collect();
            let lines = || logs.iter().flat_map(|log| log.lines());
            let errors = lines()
                .filter(|l| l.contains(" ERROR ") || l.contains("panicked"))
                .map(str::to_owned)
                .collect();
            let mut by_kind: HashMap<String, (usize, String)> = HashMap::new();
            for line in lines() {
                if let Some((_, rest)) = line.split_once(" WARN ") {
                    by_kind
                        .entry(kind("WARN", rest))
                        .or_insert_with(|| (0, line.to_owned()))
                        .0 += 1;
                }
            }
            let mut warnings: Vec<_> = by_kind.into_values().collect();
            warnings.sort_by_key(|w| std::cmp::Reverse(w.0));
            ServerLogs {
                count: logs.len(),
                errors,
                warnings,
            }
        }
    }

    fn seed() -> u64 {
        std::env::var("HEADWAY_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    ^ u64::from(std::process::id())
            })
    }

    /// The hardening issue's crash test. `HEADWAY_KILL_LOOPS` kills (8 by
    /// default; 50 for the full run), each at a random moment 100–1500 ms into
    /// a server's life, while loader tasks register, churn and change routes and
    /// two real clients stay joined; each time the server restarts on the same
    /// data and port.
    #[test]
    fn kill_9_at_random_moments_under_load_loses_nothing_acknowledged() {
        let kills: usize = std::env::var("HEADWAY_KILL_LOOPS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(8);
        let seed = seed();
        let started = Instant::now();
        let port = free_port();
        let spawn = |dir: Option<tempfile::TempDir>| {
            TestServer::spawn_with(Spawn {
                // The loader registers from one address far past the abuse limit.
                extra_config: "limits:\n  register_burst: 0\n".into(),
                port: Some(port),
                dir,
                // The verdict is SQLite's own checks on the file.
                sqlite: true,
                ..Spawn::default()
            })
        };
        let mut server = spawn(None);
        let keys: Vec<String> = (0..WORKERS)
            .map(|w| server.reusable_key(&format!("load{w}"), &[]))
            .collect();

        let version = versions().pop().expect("a client version");
        let steady_key = server.reusable_key("steady", &[]);
        let a = Client::start(&version, "steady-a");
        let b = Client::start(&version, "steady-b");
        for client in [&a, &b] {
            assert_logged_in(client, &client.up_with_key(&server.url(), &steady_key));
        }
        let (ip_a, ip_b) = (a.ipv4(), b.ipv4());
        a.wait_status("steady-b", Duration::from_secs(30), |s| {
            sees_online(s, "steady-b", &ip_b)
        });

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let shared = Arc::new(Shared {
            target: runtime.block_on(target(&server)),
            socket: server.socket.clone(),
            stop: AtomicBool::new(false),
            done: AtomicUsize::new(0),
        });
        let mut rng = Rng::new(seed);
        let loaders: Vec<_> = keys
            .into_iter()
            .enumerate()
            .map(|(w, key)| runtime.spawn(load(w, key, shared.clone(), rng.next())))
            .collect();
        wait_until(
            "the loader's first acknowledged outcome",
            Duration::from_secs(30),
            || shared.done.load(Ordering::Relaxed) > 0,
        );

        // The killer. Each server lives a random while (the point of the test:
        // kills land at arbitrary moments of the load), then dies by SIGKILL.
        let mut restarts = Vec::new();
        let mut done_per_life = Vec::new();
        let mut done_before = shared.done.load(Ordering::Relaxed);
        for _ in 0..kills {
            std::thread::sleep(Duration::from_millis(100 + rng.below(1400)));
            let dir = server.kill();
            let done_now = shared.done.load(Ordering::Relaxed);
            done_per_life.push(done_now - done_before);
            done_before = done_now;
            let restarted = Instant::now();
            server = spawn(Some(dir));
            assert_eq!(http_get(&server.http_addr, "/health").0, 200);
            restarts.push(restarted.elapsed());
        }
        shared.stop.store(true, Ordering::Relaxed);
        let mut tally = Tally::default();
        for loader in loaders {
            tally.add(runtime.block_on(loader).expect("a loader task"));
        }
        let loop_time = started.elapsed();

        // Real clients converge: connected to the last server (it shows them
        // online), running, each seeing the other online at its old address and
        // a node that registered after the last restart, and pings answered.
        let converging = Instant::now();
        let latecomer = runtime.block_on(async {
            let machine = PrivateKey::generate();
            let body = register_with_key(&fresh_node_key(), &steady_key, "latecomer", &[]);
            match register_call(&shared, &machine, body).await {
                Ok(answer) => answer["MachineAuthorized"] == true,
                Err(_) => false,
            }
        });
        assert!(latecomer, "a node could not register after the loop");
        let see_each_other = poll_until(Duration::from_secs(120), || {
            let steady = runtime.block_on(async {
                let mut grpc = server.grpc().await;
                let request = pb::ListNodesRequest {
                    user: "steady".into(),
                };
                grpc.list_nodes(request).await.unwrap().into_inner().nodes
            });
            let clients: Vec<_> = steady.iter().filter(|n| n.name != "latecomer").collect();
            clients.len() == 2
                && clients.iter().all(|n| n.online)
                && [(&a, "steady-b", &ip_b), (&b, "steady-a", &ip_a)]
                    .iter()
                    .all(|(client, peer, ip)| {
                        let status = client.status();
                        status["BackendState"] == "Running"
                            && sees_online(&status, peer, ip)
                            && status["Peer"].as_object().is_some_and(|peers| {
                                peers.values().any(|p| p["HostName"] == "latecomer")
                            })
                    })
        });
        let ping = see_each_other
            && poll_until(Duration::from_secs(60), || {
                a.cli(&["ping", "--c", "3", "--timeout", "5s", &ip_b])
                    .stdout
                    .contains("pong from steady-b")
            });
        let converged = converging.elapsed();

        let nodes = runtime.block_on(async {
            let mut grpc = server.grpc().await;
            grpc.list_nodes(pb::ListNodesRequest::default())
                .await
                .unwrap()
                .into_inner()
                .nodes
        });
        let found = problems(&nodes, &tally.machines);

        // One last crash, then SQLite's verdict on the file as it was left.
        let dir = server.kill();
        let (integrity, foreign, rows) = runtime.block_on(inspect(&dir.path().join("db.sqlite")));
        let listed: Vec<NodeRow> = nodes
            .iter()
            .map(|n| {
                (
                    n.id as i64,
                    n.node_key.clone(),
                    n.given_name.clone(),
                    n.ip_addresses.clone(),
                )
            })
            .collect();
        let logs = ServerLogs::read(dir.path());

        let mut lives = done_per_life.clone();
        lives.sort_unstable();
        let uncertain = tally.machines.iter().filter(|m| !m.certain).count();
        eprintln!(
            "kill loop: {kills} kills in {loop_time:.1?} (seed {seed}); restarts took {:?}..{:?}; \
             acknowledged: {} registrations, {} logins after logout, {} key rotations, \
             {} logouts, {} renames, {} route approvals, {} deletions; {} refused, \
             {} unknown outcomes ({uncertain} machines left unchecked), {} attempts while down; \
             outcomes per server life: min {}, median {}; {} nodes at the end ({} of them \
             the loader's, checked); clients converged: {} in {converged:.1?}; \
             integrity_check {integrity:?}, {foreign} foreign key problems; {} ERROR lines in \
             {} server logs; total {:.1?}",
            restarts.iter().min().copied().unwrap_or_default(),
            restarts.iter().max().copied().unwrap_or_default(),
            tally.registered,
            tally.logins,
            tally.rotations,
            tally.logouts,
            tally.renames,
            tally.approvals,
            tally.deletions,
            tally.refused,
            tally.unknown,
            tally.down,
            lives.first().copied().unwrap_or_default(),
            lives.get(lives.len() / 2).copied().unwrap_or_default(),
            nodes.len(),
            tally
                .machines
                .iter()
                .filter(|m| m.certain && !m.deleted)
                .count(),
            see_each_other && ping,
            logs.errors.len(),
            logs.count,
            started.elapsed(),
        );
        let mut reasons: Vec<_> = tally.reasons.iter().collect();
        reasons.sort_by_key(|r| std::cmp::Reverse(*r.1));
        for (reason, count) in reasons {
            eprintln!("  {count:>5} × {reason}");
        }
        for line in logs.errors.iter().take(10) {
            eprintln!("  log: {line}");
        }
        for (count, line) in logs.warnings.iter().take(10) {
            eprintln!("  {count:>5} × {line}");
        }

        assert!(
            see_each_other,
            "the clients did not converge:\n{:#}\n{}\n{:#}\n{}",
            a.status(),
            a.log_tail(),
            b.status(),
            b.log_tail()
        );
        assert!(ping, "steady-a cannot ping steady-b:\n{}", a.log_tail());
        assert_eq!((a.ipv4(), b.ipv4()), (ip_a, ip_b));
        assert_eq!(integrity, ["ok"], "PRAGMA integrity_check");
        assert_eq!(foreign, 0, "PRAGMA foreign_key_check found rows");
        let only_in = |these: &[NodeRow], those: &[NodeRow]| -> Vec<NodeRow> {
            let those: std::collections::HashSet<&NodeRow> = those.iter().collect();
            these
                .iter()
                .filter(|r| !those.contains(r))
                .cloned()
                .collect()
        };
        let (only_db, only_api) = (only_in(&rows, &listed), only_in(&listed, &rows));
        assert!(
            only_db.is_empty() && only_api.is_empty(),
            "the database and the admin API disagree: only in the database {only_db:?}, \
             only in the API {only_api:?}"
        );
        assert!(
            found.is_empty(),
            "{} problems:\n{}",
            found.len(),
            found.join("\n")
        );
        assert!(
            !logs.errors.iter().any(|l| l.contains("panicked")),
            "the server panicked:\n{}",
            logs.errors.join("\n")
        );
        assert!(
            tally.registered >= kills,
            "the loader barely ran: {} registrations",
            tally.registered
        );
    }
}
