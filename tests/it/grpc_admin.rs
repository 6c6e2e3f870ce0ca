//! The `headscale.v1` API through a real gRPC client: every RPC this release
//! supports does the real thing, bad requests get clear status codes.

use crate::support::{Spawn, TestServer, field_after};
use headway::grpc::pb;
use headway::grpc::pb::headscale_service_client::HeadscaleServiceClient;
use tonic::Code;
use tonic::transport::Channel;

type Client = HeadscaleServiceClient<Channel>;

fn registration_id(n: usize) -> String {
    format!("hskey-authreq-{:0>24}", format!("t{n}"))
}

async fn create_user(c: &mut Client, name: &str) -> pb::User {
    c.create_user(pb::CreateUserRequest {
        name: name.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .user
    .unwrap()
}

/// Registers a made-up node through the interactive path (DebugCreateNode, then RegisterNode).
async fn register(
    c: &mut Client,
    n: usize,
    user: &str,
    hostname: &str,
    routes: &[&str],
) -> pb::Node {
    let key = registration_id(n);
    c.debug_create_node(pb::DebugCreateNodeRequest {
        user: user.into(),
        key: key.clone(),
        name: hostname.into(),
        routes: routes.iter().map(|r| r.to_string()).collect(),
    })
    .await
    .unwrap();
    c.register_node(pb::RegisterNodeRequest {
        user: user.into(),
        key,
    })
    .await
    .unwrap()
    .into_inner()
    .node
    .unwrap()
}

#[tokio::test]
async fn users_are_unique_valid_and_renameable() {
    let server = TestServer::spawn();
    let mut c = server.grpc().await;
    let alice = create_user(&mut c, "alice").await;
    assert_eq!(alice.name, "alice");
    assert!(alice.created_at.is_some());

    let dup = c
        .create_user(pb::CreateUserRequest {
            name: "alice".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(dup.unwrap_err().code(), Code::AlreadyExists);
    let bad = c
        .create_user(pb::CreateUserRequest {
            name: "9lives".into(),
            ..Default::default()
        })
        .await;
    let bad = bad.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("start with a letter"),
        "{}",
        bad.message()
    );

    create_user(&mut c, "bob").await;
    let renamed = c
        .rename_user(pb::RenameUserRequest {
            old_id: alice.id,
            new_name: "carol".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!((renamed.id, renamed.name.as_str()), (alice.id, "carol"));
    let clash = c
        .rename_user(pb::RenameUserRequest {
            old_id: alice.id,
            new_name: "bob".into(),
        })
        .await;
    assert_eq!(clash.unwrap_err().code(), Code::AlreadyExists);

    let only_bob = c
        .list_users(pb::ListUsersRequest {
            name: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only_bob.into_inner().users.len(), 1);
    c.delete_user(pb::DeleteUserRequest { id: alice.id })
        .await
        .unwrap();
    let gone = c
        .delete_user(pb::DeleteUserRequest { id: alice.id })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let zero = c
        .delete_user(pb::DeleteUserRequest { id: 0 })
        .await
        .unwrap_err();
    assert_eq!(zero.code(), Code::InvalidArgument);
    let users = c
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(
        users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["bob"]
    );
}

#[tokio::test]
async fn preauth_keys_show_their_secret_once() {
    let server = TestServer::spawn();
    let mut c = server.grpc().await;
    let user = create_user(&mut c, "default").await;
    let created = c
        .create_pre_auth_key(pb::CreatePreAuthKeyRequest {
            user: user.id,
            reusable: true,
            expiration: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() + 3600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .pre_auth_key
        .unwrap();
    assert!(
        created.key.starts_with("hskey-auth-") && created.key.len() > 40,
        "{}",
        created.key
    );
    assert_eq!(created.user.as_ref().unwrap().name, "default");
    assert!(created.reusable);

    let listed = c
        .list_pre_auth_keys(pb::ListPreAuthKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .pre_auth_keys;
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].key.ends_with("-***"),
        "listing must not reveal the secret: {}",
        listed[0].key
    );
    assert!(
        created
            .key
            .starts_with(listed[0].key.trim_end_matches("***"))
    );

    let tagged = c
        .create_pre_auth_key(pb::CreatePreAuthKeyRequest {
            acl_tags: vec!["tag:server".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .pre_auth_key
        .unwrap();
    assert!(tagged.user.is_none());
    assert_eq!(tagged.acl_tags, ["tag:server"]);

    let ownerless = c
        .create_pre_auth_key(pb::CreatePreAuthKeyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(ownerless.code(), Code::InvalidArgument);
    let bad_tag = c
        .create_pre_auth_key(pb::CreatePreAuthKeyRequest {
            user: user.id,
            acl_tags: vec!["server".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(bad_tag.message().contains("tag:"), "{}", bad_tag.message());
    let no_user = c
        .create_pre_auth_key(pb::CreatePreAuthKeyRequest {
            user: 999,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(no_user.code(), Code::NotFound);

    c.expire_pre_auth_key(pb::ExpirePreAuthKeyRequest { id: created.id })
        .await
        .unwrap();
    let listed = c
        .list_pre_auth_keys(pb::ListPreAuthKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .pre_auth_keys;
    let expiry = listed
        .iter()
        .find(|k| k.id == created.id)
        .unwrap()
        .expiration
        .unwrap();
    assert!(expiry.seconds <= chrono::Utc::now().timestamp());
    c.delete_pre_auth_key(pb::DeletePreAuthKeyRequest { id: created.id })
        .await
        .unwrap();
    let again = c
        .delete_pre_auth_key(pb::DeletePreAuthKeyRequest { id: created.id })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
}

#[tokio::test]
async fn interactive_registration_allocates_addresses_and_names() {
    let server = TestServer::spawn();
    let mut c = server.grpc().await;
    create_user(&mut c, "default").await;
    let a = register(&mut c, 1, "default", "My Laptop", &[]).await;
    assert_eq!(a.ip_addresses, ["100.64.0.1", "fd7a:115c:a1e0::1"]);
    assert_eq!(a.given_name, "my-laptop");
    assert_eq!(a.name, "My Laptop");
    assert_eq!(a.user.as_ref().unwrap().name, "default");
    assert_eq!(a.register_method, pb::RegisterMethod::Cli as i32);
    let b = register(&mut c, 2, "default", "my laptop", &[]).await;
    assert_eq!(
        b.given_name, "my-laptop-1",
        "a name collision gets a suffix"
    );
    assert_eq!(b.ip_addresses, ["100.64.0.2", "fd7a:115c:a1e0::2"]);

    let unknown = c
        .register_node(pb::RegisterNodeRequest {
            user: "default".into(),
            key: registration_id(99),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let garbage = c
        .register_node(pb::RegisterNodeRequest {
            user: "default".into(),
            key: "xyz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument);
    let no_user = c
        .register_node(pb::RegisterNodeRequest {
            user: "nobody".into(),
            key: registration_id(3),
        })
        .await;
    assert_eq!(no_user.unwrap_err().code(), Code::NotFound);

    let bad = c
        .rename_node(pb::RenameNodeRequest {
            node_id: a.id,
            new_name: "-bad".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let taken = c
        .rename_node(pb::RenameNodeRequest {
            node_id: a.id,
            new_name: "my-laptop-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    let renamed = c
        .rename_node(pb::RenameNodeRequest {
            node_id: a.id,
            new_name: "web".into(),
        })
        .await
        .unwrap();
    assert_eq!(renamed.into_inner().node.unwrap().given_name, "web");

    let tagged = c
        .set_tags(pb::SetTagsRequest {
            node_id: b.id,
            tags: vec!["tag:prod".into(), "tag:db".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    assert_eq!(tagged.tags, ["tag:db", "tag:prod"]);
    let bad_tag = c
        .set_tags(pb::SetTagsRequest {
            node_id: b.id,
            tags: vec!["prod".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(bad_tag.code(), Code::InvalidArgument);

    let expired = c
        .expire_node(pb::ExpireNodeRequest {
            node_id: a.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(expired.node.unwrap().expiry.unwrap().seconds <= chrono::Utc::now().timestamp());
    let never = c
        .expire_node(pb::ExpireNodeRequest {
            node_id: a.id,
            disable_expiry: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(never.into_inner().node.unwrap().expiry.is_none());

    c.delete_node(pb::DeleteNodeRequest { node_id: a.id })
        .await
        .unwrap();
    let nodes = c
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [b.id]);
    let missing = c
        .get_node(pb::GetNodeRequest { node_id: a.id })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let users_nodes = c
        .list_nodes(pb::ListNodesRequest {
            user: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(users_nodes.code(), Code::NotFound);
    // b is tagged: it belongs to its tags, so its former user goes without it.
    c.delete_user(pb::DeleteUserRequest {
        id: b.user.unwrap().id,
    })
    .await
    .unwrap();
    let nodes = c
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [b.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_never_share_an_address() {
    let server = TestServer::spawn();
    let mut c = server.grpc().await;
    create_user(&mut c, "default").await;
    let mut tasks = Vec::new();
    for n in 0..40 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            register(&mut c, n, "default", "box", &[]).await
        }));
    }
    let mut v4 = std::collections::HashSet::new();
    let mut names = std::collections::HashSet::new();
    for t in tasks {
        let node = t.await.unwrap();
        assert!(
            v4.insert(node.ip_addresses[0].clone()),
            "address handed out twice: {:?}",
            node.ip_addresses
        );
        assert!(
            names.insert(node.given_name.clone()),
            "name handed out twice: {}",
            node.given_name
        );
    }
    assert_eq!(v4.len(), 40);
}

#[tokio::test]
async fn routes_are_approved_only_when_advertised() {
    let server = TestServer::spawn();
    let mut c = server.grpc().await;
    create_user(&mut c, "default").await;
    let router = register(
        &mut c,
        1,
        "default",
        "router",
        &["192.168.100.0/24", "0.0.0.0/0", "::/0"],
    )
    .await;
    assert_eq!(router.available_routes.len(), 3);
    assert!(router.approved_routes.is_empty());

    let approve = |routes: &[&str]| pb::SetApprovedRoutesRequest {
        node_id: router.id,
        routes: routes.iter().map(|r| r.to_string()).collect(),
    };
    let node = c
        .set_approved_routes(approve(&["192.168.100.0/24"]))
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    assert_eq!(node.approved_routes, ["192.168.100.0/24"]);
    assert!(
        node.subnet_routes.is_empty(),
        "a router with no map session serves nothing, as in Headscale 0.29: {:?}",
        node.subnet_routes
    );

    let refused = c
        .set_approved_routes(approve(&["10.9.0.0/16"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("does not advertise"),
        "{}",
        refused.message()
    );
    let host_bits = c
        .set_approved_routes(approve(&["192.168.100.1/24"]))
        .await
        .unwrap_err();
    assert!(
        host_bits.message().contains("192.168.100.0/24"),
        "{}",
        host_bits.message()
    );

    let exit = c
        .set_approved_routes(approve(&["0.0.0.0/0"]))
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    let mut approved = exit.approved_routes.clone();
    approved.sort();
    assert_eq!(
        approved,
        ["0.0.0.0/0", "::/0"],
        "approving one exit route approves both"
    );

    // The 0.18-0.25 route API sees the same rows.
    let routes = c
        .get_routes(pb::GetRoutesRequest {})
        .await
        .unwrap()
        .into_inner()
        .routes;
    assert_eq!(routes.len(), 3);
    let lan = routes
        .iter()
        .find(|r| r.prefix == "192.168.100.0/24")
        .unwrap();
    assert!(!lan.enabled);
    c.enable_route(pb::EnableRouteRequest { route_id: lan.id })
        .await
        .unwrap();
    let node = c
        .get_node(pb::GetNodeRequest { node_id: router.id })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    assert_eq!(node.approved_routes.len(), 3);
    let v4_exit = routes.iter().find(|r| r.prefix == "0.0.0.0/0").unwrap();
    c.disable_route(pb::DisableRouteRequest {
        route_id: v4_exit.id,
    })
    .await
    .unwrap();
    let node = c
        .get_node(pb::GetNodeRequest { node_id: router.id })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    assert_eq!(
        node.approved_routes,
        ["192.168.100.0/24"],
        "disabling one exit route disables both"
    );
    let cleared = c
        .set_approved_routes(approve(&[]))
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    assert!(cleared.approved_routes.is_empty());
    let missing = c
        .enable_route(pb::EnableRouteRequest { route_id: 4242 })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn without_a_policy_file_the_policy_api_explains_itself() {
    let server = TestServer::spawn();
    let mut c = server.grpc().await;
    let err = c.get_policy(pb::GetPolicyRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("no policy"), "{}", err.message());
    let err = c
        .set_policy(pb::SetPolicyRequest {
            policy: "{}".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("update is disabled for modes other than 'database'"),
        "{}",
        err.message()
    );
    let err = c
        .check_policy(pb::CheckPolicyRequest {
            policy: r#"{"acls": [{"action": "deny", "src": ["*"], "dst": ["*:*"]}]}"#.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains(r#"action="deny" is not supported"#),
        "{}",
        err.message()
    );
    c.check_policy(pb::CheckPolicyRequest {
        policy: r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#.into(),
    })
    .await
    .unwrap();
    let health = c.health(pb::HealthRequest {}).await.unwrap().into_inner();
    assert!(health.database_connectivity);
}

#[tokio::test]
async fn remote_grpc_requires_a_valid_api_key() {
    let server = TestServer::spawn_with(Spawn {
        extra_config: "grpc_listen_addr: 127.0.0.1:0\ngrpc_allow_insecure: true\n".into(),
        ..Spawn::default()
    });
    let tcp_addr =
        field_after(&server.log(), "admin API on TCP", "addr=").expect("TCP listener logged");
    let mut local = server.grpc().await;
    let key = local
        .create_api_key(pb::CreateApiKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .api_key;
    assert!(key.starts_with("hskey-api-"), "{key}");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{tcp_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let call = |token: Option<String>| {
        let mut client = HeadscaleServiceClient::with_interceptor(
            channel.clone(),
            move |mut req: tonic::Request<()>| {
                if let Some(t) = &token {
                    req.metadata_mut()
                        .insert("authorization", format!("Bearer {t}").parse().unwrap());
                }
                Ok(req)
            },
        );
        async move { client.list_users(pb::ListUsersRequest::default()).await }
    };
    assert_eq!(call(None).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(
        call(Some("hskey-api-garbage".into()))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let (head, last) = key.split_at(key.len() - 1);
    let forged = format!("{head}{}", if last == "x" { "y" } else { "x" });
    assert_eq!(
        call(Some(forged)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    call(Some(key.clone()))
        .await
        .expect("a valid key is accepted");

    let listed = local
        .list_api_keys(pb::ListApiKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert!(listed[0].last_seen.is_some(), "use is recorded");
    assert!(listed[0].prefix.ends_with("-***"));
    local
        .expire_api_key(pb::ExpireApiKeyRequest {
            id: listed[0].id,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        call(Some(key)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn remote_grpc_stays_off_without_tls_or_opt_in() {
    let server = TestServer::spawn_with(Spawn {
        extra_config: "grpc_listen_addr: 127.0.0.1:0\ngrpc_allow_insecure: false\n".into(),
        ..Spawn::default()
    });
    let log = server.log();
    assert!(log.contains("remote gRPC is off"), "{log}");
    assert!(field_after(&log, "admin API on TCP", "addr=").is_none());
    // The Unix socket still serves.
    server
        .grpc()
        .await
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn remote_grpc_uses_tls_when_given_a_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    let server = TestServer::spawn_with(Spawn {
        extra_config: format!(
            "grpc_listen_addr: 127.0.0.1:0\ngrpc_allow_insecure: false\ntls_cert_path: {d}/tls.crt\ntls_key_path: {d}/tls.key\n",
            d = dir.path().display()
        ),
        dir: Some(dir),
        ..Spawn::default()
    });
    let log = server.log();
    let addr = field_after(&log, "admin API on TCP", "addr=").expect("TCP listener logged");
    assert!(log.contains("tls=true"), "{log}");
    let key = server
        .grpc()
        .await
        .create_api_key(pb::CreateApiKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .api_key;

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert.cert.pem()))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS handshake with the configured certificate");
    let bearer = format!("Bearer {key}");
    let mut client =
        HeadscaleServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut()
                .insert("authorization", bearer.parse().unwrap());
            Ok(req)
        });
    client
        .list_users(pb::ListUsersRequest::default())
        .await
        .expect("authenticated call over TLS");
    // A wrong key over TLS is refused and logged with its source address.
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(cert.cert.pem()))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut wrong =
        HeadscaleServiceClient::with_interceptor(channel, |mut req: tonic::Request<()>| {
            req.metadata_mut().insert(
                "authorization",
                "Bearer hskey-api-wrong-key".parse().unwrap(),
            );
            Ok(req)
        });
    let refused = wrong
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    crate::support::wait_until(
        "the refusal is logged",
        std::time::Duration::from_secs(5),
        || {
            server
                .log()
                .lines()
                .any(|l| l.contains("refused an admin API call") && l.contains("source=127.0.0.1"))
        },
    );

    // Plaintext gRPC is not served on that port.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut client = HeadscaleServiceClient::new(channel);
        assert!(
            client
                .list_users(pb::ListUsersRequest::default())
                .await
                .is_err()
        );
    }

    // The headway CLI: its CA bundle does not vouch for this self-signed
    // certificate, so it refuses; with `cli.insecure` (TLS, no certificate
    // check, as Headscale's CLI) it works.
    let cli = |insecure: &str| {
        std::process::Command::new(crate::support::headway_bin())
            .current_dir(server.dir.path())
            .env("HOME", server.dir.path())
            .env("HEADWAY_CLI_ADDRESS", &addr)
            .env("HEADWAY_CLI_API_KEY", &key)
            .env("HEADWAY_CLI_INSECURE", insecure)
            .env("HEADWAY_UNIX_SOCKET", server.dir.path().join("absent.sock"))
            .args(["users", "list"])
            .output()
            .unwrap()
    };
    let checked = cli("false");
    let said = String::from_utf8_lossy(&checked.stderr);
    assert!(!checked.status.success(), "{said}");
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    let unchecked = cli("true");
    assert!(
        unchecked.status.success(),
        "{}",
        String::from_utf8_lossy(&unchecked.stderr)
    );
}
