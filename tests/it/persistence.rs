//! Nothing committed is lost: restarts (even SIGKILL) keep users, nodes and
//! addresses; a database file created with `touch` is a new, empty database.

use crate::support::{Spawn, TestServer};
use headway::grpc::pb;

#[tokio::test]
async fn sigkill_loses_no_committed_registration() {
    let server = TestServer::spawn();
    let mut c = server.grpc().await;
    c.create_user(pb::CreateUserRequest {
        name: "default".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut before = Vec::new();
    for n in 0..5 {
        let key = format!("hskey-authreq-{:0>24}", n);
        c.debug_create_node(pb::DebugCreateNodeRequest {
            user: "default".into(),
            key: key.clone(),
            name: format!("node{n}"),
            routes: vec![],
        })
        .await
        .unwrap();
        before.push(
            c.register_node(pb::RegisterNodeRequest {
                user: "default".into(),
                key,
            })
            .await
            .unwrap()
            .into_inner()
            .node
            .unwrap(),
        );
    }
    drop(c);
    let dir = server.kill();

    let server = TestServer::spawn_with(Spawn {
        dir: Some(dir),
        ..Spawn::default()
    });
    let mut c = server.grpc().await;
    let after = c
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(after.len(), before.len());
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(
            (a.id, &a.ip_addresses, &a.given_name, &a.node_key),
            (b.id, &b.ip_addresses, &b.given_name, &b.node_key)
        );
    }
    // New registrations after the restart get fresh addresses, never a taken one.
    let key = format!("hskey-authreq-{:0>24}", 77);
    c.debug_create_node(pb::DebugCreateNodeRequest {
        user: "default".into(),
        key: key.clone(),
        name: "late".into(),
        routes: vec![],
    })
    .await
    .unwrap();
    let late = c
        .register_node(pb::RegisterNodeRequest {
            user: "default".into(),
            key,
        })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    assert!(
        after
            .iter()
            .all(|n| n.ip_addresses[0] != late.ip_addresses[0]),
        "{:?}",
        late.ip_addresses
    );
    assert_eq!(server.terminate(), 0, "SIGTERM ends the server cleanly");
}

#[tokio::test]
async fn an_empty_touched_database_file_is_a_new_database() {
    let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
    std::fs::write(dir.path().join("db.sqlite"), b"").unwrap();
    let server = TestServer::spawn_with(Spawn {
        dir: Some(dir),
        sqlite: true,
        ..Spawn::default()
    });
    let mut c = server.grpc().await;
    c.create_user(pb::CreateUserRequest {
        name: "default".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        c.list_users(pb::ListUsersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .users
            .len(),
        1
    );
}

#[tokio::test]
async fn the_socket_has_the_configured_mode_and_a_second_server_refuses_it() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::spawn_with(Spawn {
        config_file: Some(
            crate::support::test_config(std::path::Path::new("{dir}"), "")
                .replace("\"0770\"", "\"0700\""),
        ),
        ..Spawn::default()
    });
    let mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    let second = std::process::Command::new(crate::support::headway_bin())
        .arg("-c")
        .arg(server.config_path.as_ref().unwrap())
        .arg("serve")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr) + String::from_utf8_lossy(&second.stdout);
    assert!(err.contains("another server is already listening"), "{err}");
    // The first server still answers.
    server
        .grpc()
        .await
        .health(pb::HealthRequest {})
        .await
        .unwrap();
}
