//! Storage faults an admin meets in the field: the database's disk fills up,
//! another process holds the database's lock, or the database sits on a
//! read-only file system. Writes fail with words that say which, to the caller
//! and in the log; reads keep working; nothing is lost; the server stays up and
//! recovers once the condition is gone (from a read-only file system: at its
//! next start).

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
/// loop). Once the file system is writable again, a restart writes again.
#[test]
fn a_read_only_database_is_named_reads_keep_working_and_the_server_stays_up() {
    // The database in a directory of its own: the log and the admin socket stay writable.
    let config = crate::support::test_config(std::path::Path::new("{dir}"), "")
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
#[ignore = "server gap: a write to a database whose file system turned read-only under the \
            server fails with SQLite's `disk I/O error` (778), which callers see as \
            `internal error; the server log has the details`"]
fn a_file_system_turning_read_only_under_the_server_is_named() {
    let config = crate::support::test_config(std::path::Path::new("{dir}"), "")
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
