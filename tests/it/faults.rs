//! Storage faults an admin meets in the field: the database's disk fills up, or
//! another process holds the database's lock. Writes fail with words that say
//! which, to the caller and in the log; reads keep working; nothing is lost; and
//! the server recovers by itself once the condition is gone.

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
