//! Rules of `State` that no admin RPC reaches yet: admission with pre-auth keys,
//! re-login of a known machine, expiry defaults and tagged nodes.

use super::*;
use crate::config::Database;
use crate::types::{MachineKey, NodeKey, RegisterMethod};
use std::sync::Arc;

/// The test database in `dir`.
fn sqlite(dir: &std::path::Path) -> Database {
    Database::Sqlite {
        path: dir.join("db.sqlite"),
        write_ahead_log: true,
        wal_autocheckpoint: 1000,
    }
}

async fn state(node_expiry: Option<Duration>) -> (tempfile::TempDir, State) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&sqlite(dir.path())).await.unwrap();
    let settings = Settings {
        node_expiry,
        ephemeral_inactivity_timeout: Duration::from_millis(300),
        ..Settings::for_test()
    };
    (dir, State::load(db, settings).await.unwrap())
}

fn admission(n: u8, user: Option<crate::types::UserId>, key: Option<PreAuthKey>) -> Admission {
    Admission {
        machine_key: MachineKey::from_bytes([n; 32]),
        node_key: NodeKey::from_bytes([n + 100; 32]),
        hostname: format!("host{n}"),
        hostinfo: None,
        advertised_routes: Vec::new(),
        user_id: user,
        tags: key.as_ref().map(|k| k.tags.clone()).unwrap_or_default(),
        requested_tags: Vec::new(),
        ephemeral: key.as_ref().is_some_and(|k| k.ephemeral),
        register_method: RegisterMethod::AuthKey,
        auth_key: key,
        requested_expiry: None,
    }
}

/// Rebuilding the policy view is timed, and a view reused is not counted again.
#[tokio::test]
async fn policy_compiles_are_timed_once_per_rebuild() {
    let (dir, state) = state(None).await;
    let path = dir.path().join("policy.hujson");
    std::fs::write(
        &path,
        r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}"#,
    )
    .unwrap();
    let settings = Settings {
        policy: PolicySource {
            mode: crate::config::PolicyMode::File,
            path: Some(path),
        },
        metrics: crate::metrics::Metrics::new(),
        ..state.settings().clone()
    };
    let metrics = settings.metrics.clone();
    drop(state);
    let db = Db::open(&sqlite(dir.path())).await.unwrap();
    let state = State::load(db, settings).await.unwrap();
    state.start_policy().await.unwrap();
    let compiles = || {
        crate::metrics::tests::sample(
            &metrics.encode().unwrap(),
            "headway_policy_compile_duration_seconds_count",
        )
    };
    assert_eq!(compiles(), Some(0.0));
    assert!(state.policy_view().is_some());
    assert!(state.policy_view().is_some());
    assert_eq!(compiles(), Some(1.0));
}

/// An interactive registration request from machine key `[machine; 32]` with
/// node key `[node; 32]`.
fn request(machine: u8, node: u8, hostname: &str) -> RegistrationRequest {
    RegistrationRequest {
        machine_key: MachineKey::from_bytes([machine; 32]),
        node_key: NodeKey::from_bytes([node; 32]),
        hostname: hostname.into(),
        hostinfo: None,
        advertised_routes: Vec::new(),
        requested_tags: Vec::new(),
        requested_expiry: None,
    }
}

/// The same key with its last character changed (never to itself).
fn forge(secret: &str) -> String {
    let (head, last) = secret.split_at(secret.len() - 1);
    format!("{head}{}", if last == "X" { "Y" } else { "X" })
}

#[tokio::test]
async fn a_single_use_key_admits_exactly_one_node() {
    let (_dir, state) = state(None).await;
    let (user, _) = state.create_user("default", "", "", "").await.unwrap();
    let key = state
        .create_preauth_key(Some(user.id), false, true, None, &[])
        .await
        .unwrap();
    let found = state.authenticate_preauth_key(&key.secret).await.unwrap();
    let (node, change) = state
        .admit(admission(1, Some(user.id), Some(found.clone())))
        .await
        .unwrap();
    assert!(node.ephemeral);
    assert!(change.peers_changed.contains(&node.id));
    let err = state
        .authenticate_preauth_key(&key.secret)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");
    // Even a caller that skipped the check cannot use it twice.
    let err = state
        .admit(admission(2, Some(user.id), Some(found)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");
    assert_eq!(state.snapshot().len(), 1);
}

#[tokio::test]
async fn unknown_expired_and_forged_keys_are_refused() {
    let (_dir, state) = state(None).await;
    let (user, _) = state.create_user("default", "", "", "").await.unwrap();
    let key = state
        .create_preauth_key(Some(user.id), true, false, None, &[])
        .await
        .unwrap();
    let forged = forge(&key.secret);
    assert!(matches!(
        state.authenticate_preauth_key(&forged).await,
        Err(Error::Unauthenticated(_))
    ));
    assert!(matches!(
        state.authenticate_preauth_key("nonsense").await,
        Err(Error::Unauthenticated(_))
    ));
    state.expire_preauth_key(key.record.id).await.unwrap();
    let err = state
        .authenticate_preauth_key(&key.secret)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn relogin_keeps_addresses_and_name() {
    let (_dir, state) = state(Some(Duration::from_secs(3600))).await;
    let (user, _) = state.create_user("default", "", "", "").await.unwrap();
    let (first, _) = state
        .admit(admission(1, Some(user.id), None))
        .await
        .unwrap();
    assert!(
        first.expiry.is_some(),
        "node.expiry applies to user-owned nodes"
    );
    let mut again = admission(1, Some(user.id), None);
    again.node_key = NodeKey::from_bytes([42; 32]);
    let (second, change) = state.admit(again).await.unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!((second.ipv4, second.ipv6), (first.ipv4, first.ipv6));
    assert_eq!(second.given_name, first.given_name);
    assert_eq!(second.node_key, NodeKey::from_bytes([42; 32]));
    assert!(change.self_changed.contains(&first.id));
    assert_eq!(state.snapshot().len(), 1);
    assert!(
        state.snapshot().by_node_key(&first.node_key).is_none(),
        "the old node key is forgotten"
    );
}

#[tokio::test]
async fn tagged_keys_make_ownerless_nodes_that_never_expire() {
    let (_dir, state) = state(Some(Duration::from_secs(3600))).await;
    let key = state
        .create_preauth_key(None, true, false, None, &["tag:server".into()])
        .await
        .unwrap();
    let found = state.authenticate_preauth_key(&key.secret).await.unwrap();
    let (node, _) = state.admit(admission(3, None, Some(found))).await.unwrap();
    assert_eq!(node.user_id, None);
    assert_eq!(node.tags, ["tag:server"]);
    assert_eq!(node.expiry, None);
}

#[tokio::test]
async fn a_node_key_of_another_machine_is_refused() {
    let (_dir, state) = state(None).await;
    let (user, _) = state.create_user("default", "", "", "").await.unwrap();
    state
        .admit(admission(1, Some(user.id), None))
        .await
        .unwrap();
    let mut thief = admission(2, Some(user.id), None);
    thief.node_key = NodeKey::from_bytes([101; 32]);
    assert!(matches!(
        state.admit(thief).await,
        Err(Error::AlreadyExists(_))
    ));
}

#[tokio::test]
async fn waiting_clients_learn_the_outcome() {
    let (_dir, state) = state(None).await;
    state.create_user("default", "", "", "").await.unwrap();
    let (id, mut rx) = state
        .begin_registration(request(5, 6, "laptop"))
        .await
        .unwrap();
    let (retry_id, _) = state
        .begin_registration(request(5, 6, "laptop"))
        .await
        .unwrap();
    assert_eq!(retry_id, id, "a retrying client keeps its registration id");
    let key = format!("nodekey:{}", hex::encode([6u8; 32]));
    let (view, _) = state.complete_registration(&key, "default").await.unwrap();
    rx.changed().await.unwrap();
    assert_eq!(
        *rx.borrow(),
        Some(RegistrationOutcome::Registered(view.node.id))
    );
    assert!(state.pending_registration(&id).await.unwrap().is_none());

    let (id, mut rx) = state.begin_registration(request(7, 8, "x")).await.unwrap();
    state.reject_registration(id.as_str()).await.unwrap();
    rx.changed().await.unwrap();
    assert!(matches!(
        &*rx.borrow(),
        Some(RegistrationOutcome::Rejected(_))
    ));
}

#[tokio::test]
async fn waiting_registrations_are_bounded_in_number_and_size() {
    use super::register::{MAX_PENDING_HOSTINFO, MAX_PENDING_REGISTRATIONS};
    let (_dir, state) = state(None).await;
    let mut big = request(1, 1, "big");
    big.hostinfo = Some(format!(
        "{{\"Hostname\": \"{}\"}}",
        "x".repeat(MAX_PENDING_HOSTINFO)
    ));
    let (id, _) = state.begin_registration(big).await.unwrap();
    let kept = state.pending_registration(&id).await.unwrap().unwrap();
    assert_eq!(kept.hostname, "big");
    assert!(kept.hostinfo.is_none(), "an oversized Hostinfo is not kept");

    for i in 1..MAX_PENDING_REGISTRATIONS {
        let mut req = request(2, 0, "many");
        req.node_key = NodeKey::from_bytes(
            [
                u8::try_from(i % 256).unwrap(),
                u8::try_from(i / 256).unwrap(),
                9,
            ]
            .into_iter()
            .chain([0; 29])
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap(),
        );
        state.begin_registration(req).await.unwrap();
    }
    let refused = state
        .begin_registration(request(3, 3, "one-too-many"))
        .await;
    assert!(
        matches!(&refused, Err(Error::ResourceExhausted(m)) if m.contains("waiting for an admin")),
        "{:?}",
        refused.map(|(id, _)| id)
    );
    // A client already waiting still gets its entry back.
    let mut again = request(1, 1, "big");
    again.hostinfo = None;
    assert_eq!(state.begin_registration(again).await.unwrap().0, id);
}

#[tokio::test]
async fn sessions_drive_online_state_and_last_seen() {
    let (_dir, state) = state(None).await;
    let state = Arc::new(state);
    let (user, _) = state.create_user("default", "", "", "").await.unwrap();
    let (node, _) = state
        .admit(admission(1, Some(user.id), None))
        .await
        .unwrap();
    assert_eq!(
        state.session_opened(node.id).online.get(&node.id),
        Some(&true)
    );
    assert!(
        state.session_opened(node.id).is_empty(),
        "a second session changes nothing"
    );
    assert!(state.is_online(node.id));
    assert!(
        state.session_closed(node.id).await.is_empty(),
        "one session is still open"
    );
    let offline = state.session_closed(node.id).await;
    assert_eq!(offline.online.get(&node.id), Some(&false));
    assert!(!state.is_online(node.id));
    assert!(state.snapshot().get(node.id).unwrap().last_seen.is_some());
}

#[tokio::test]
async fn ephemeral_nodes_go_after_the_timeout_unless_they_return() {
    let (_dir, state) = state(None).await;
    let state = Arc::new(state);
    let (user, _) = state.create_user("default", "", "", "").await.unwrap();
    let key = state
        .create_preauth_key(Some(user.id), true, true, None, &[])
        .await
        .unwrap()
        .record;
    let (gone, _) = state
        .admit(admission(1, Some(user.id), Some(key.clone())))
        .await
        .unwrap();
    let (back, _) = state
        .admit(admission(2, Some(user.id), Some(key)))
        .await
        .unwrap();
    for id in [gone.id, back.id] {
        state.session_opened(id);
        state.session_closed(id).await;
    }
    state.session_opened(back.id);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        state.snapshot().get(gone.id).is_none(),
        "removed after the inactivity timeout"
    );
    assert!(
        state.snapshot().get(back.id).is_some(),
        "a reconnect cancels the removal"
    );
    let removed = state.notifier().try_take().unwrap();
    assert!(removed.peers_removed.contains(&gone.id));
}

#[tokio::test]
async fn reports_patch_peers_and_never_erase_known_values() {
    let (_dir, state) = state(None).await;
    let (user, _) = state.create_user("default", "", "", "").await.unwrap();
    let (node, _) = state
        .admit(admission(1, Some(user.id), None))
        .await
        .unwrap();
    let endpoint: std::net::SocketAddr = "192.0.2.1:41641".parse().unwrap();
    let report = Presence {
        endpoints: Some(vec![endpoint]),
        disco_key: Some(crate::types::DiscoKey::from_bytes([9; 32])),
        ..Presence::default()
    };
    let change = state
        .report_presence(node.id, report.clone())
        .await
        .unwrap();
    assert!(change.patched.contains(&node.id) && change.peers_changed.is_empty());
    assert!(
        state
            .report_presence(node.id, report)
            .await
            .unwrap()
            .is_empty(),
        "repeats are not news"
    );
    let blank = Presence {
        endpoints: Some(vec![]),
        disco_key: Some(crate::types::DiscoKey::zero()),
        ..Presence::default()
    };
    assert!(
        state
            .report_presence(node.id, blank)
            .await
            .unwrap()
            .is_empty()
    );
    let stored = state.snapshot().get(node.id).cloned().unwrap();
    assert_eq!(stored.endpoints, [endpoint]);
    assert_eq!(
        stored.disco_key,
        crate::types::DiscoKey::from_bytes([9; 32])
    );

    let routes = Presence {
        advertised_routes: Some(vec!["10.0.0.0/24".parse().unwrap()]),
        ..Presence::default()
    };
    assert!(
        !state
            .report_presence(node.id, routes)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(state.snapshot().routes(node.id).len(), 1);
}

#[tokio::test]
async fn node_keys_are_checked_against_the_machine() {
    let (_dir, state) = state(None).await;
    let (user, _) = state.create_user("default", "", "", "").await.unwrap();
    let (node, _) = state
        .admit(admission(1, Some(user.id), None))
        .await
        .unwrap();
    assert_eq!(
        state
            .node_for(&node.node_key, &node.machine_key)
            .unwrap()
            .id,
        node.id
    );
    assert!(matches!(
        state.node_for(&node.node_key, &MachineKey::from_bytes([7; 32])),
        Err(Error::Unauthenticated(_))
    ));
    assert!(matches!(
        state.node_for(&NodeKey::from_bytes([3; 32]), &node.machine_key),
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn logout_expires_normal_nodes_and_removes_ephemeral_ones() {
    let (_dir, state) = state(None).await;
    let (user, _) = state.create_user("default", "", "", "").await.unwrap();
    let key = state
        .create_preauth_key(Some(user.id), true, true, None, &[])
        .await
        .unwrap()
        .record;
    let (normal, _) = state
        .admit(admission(1, Some(user.id), None))
        .await
        .unwrap();
    let (ephemeral, _) = state
        .admit(admission(2, Some(user.id), Some(key)))
        .await
        .unwrap();
    let change = state.logout(normal.id).await.unwrap();
    assert!(change.logged_out.contains(&normal.id));
    assert!(
        state
            .snapshot()
            .get(normal.id)
            .unwrap()
            .is_expired(chrono::Utc::now())
    );
    state.logout(ephemeral.id).await.unwrap();
    assert!(state.snapshot().get(ephemeral.id).is_none());
}

#[tokio::test]
async fn the_in_memory_users_follow_every_user_mutation() {
    let (_dir, state) = state(None).await;
    let (alice, _) = state.create_user("alice", "", "", "").await.unwrap();
    let (bob, _) = state.create_user("bob", "", "", "").await.unwrap();
    assert_eq!(state.users().len(), 2);
    state.rename_user(alice.id, "carol").await.unwrap();
    assert_eq!(state.users()[&alice.id].name.as_str(), "carol");
    state.delete_user(bob.id).await.unwrap();
    assert!(!state.users().contains_key(&bob.id));
    assert!(state.create_user("carol", "", "", "").await.is_err());
    assert_eq!(state.users().len(), 1, "a refused mutation changes nothing");
}

/// `count` routers of a new user, each advertising `lan` with it approved
/// (offline until their sessions open).
async fn routers_of(state: &State, lan: ipnet::IpNet, count: u8) -> Vec<NodeId> {
    let (user, _) = state.create_user("default", "", "", "").await.unwrap();
    let mut routers = Vec::new();
    for n in 1..=count {
        let mut adm = admission(n, Some(user.id), None);
        adm.advertised_routes = vec![lan];
        let (node, _) = state.admit(adm).await.unwrap();
        state
            .set_approved_routes(node.id, &[lan.to_string()])
            .await
            .unwrap();
        routers.push(node.id);
    }
    routers
}

#[tokio::test]
async fn a_prefix_fails_over_to_an_online_router_and_does_not_flap_back() {
    let (_dir, state) = state(None).await;
    let state = Arc::new(state);
    let lan: ipnet::IpNet = "192.168.100.0/24".parse().unwrap();
    let routers = routers_of(&state, lan, 2).await;
    let (first, second) = (routers[0], routers[1]);
    let primary = || state.snapshot().primary_for(&lan);
    let announced =
        |change: &Change| -> Vec<NodeId> { change.peers_changed.iter().copied().collect() };
    assert_eq!(primary(), None, "no router is online yet");

    // The second router comes online first and takes the prefix.
    let change = state.session_opened(second);
    assert_eq!(primary(), Some(second));
    assert_eq!(announced(&change), [second]);
    // The first (lower id) comes online: the primary stays where it is.
    assert!(state.session_opened(first).peers_changed.is_empty());
    assert_eq!(primary(), Some(second));

    // The primary goes offline: the other takes over, and peers learn both.
    let change = state.session_closed(second).await;
    assert_eq!(primary(), Some(first));
    assert_eq!(announced(&change), [first, second]);
    assert_eq!(state.snapshot().primary_routes(first), [lan]);
    assert!(state.snapshot().primary_routes(second).is_empty());

    // It comes back: no flapping.
    assert!(state.session_opened(second).peers_changed.is_empty());
    assert_eq!(primary(), Some(first));

    // Approval withdrawn from the primary: the other serves at once.
    let (_, change) = state.set_approved_routes(first, &[]).await.unwrap();
    assert_eq!(primary(), Some(second));
    assert_eq!(announced(&change), [first, second]);

    // The primary is deleted: nobody is left online for the prefix.
    state
        .set_approved_routes(first, &[lan.to_string()])
        .await
        .unwrap();
    let change = state.delete_node(second).await.unwrap();
    assert_eq!(primary(), Some(first));
    assert!(change.peers_changed.contains(&first), "{change:?}");
    state.session_closed(first).await;
    assert_eq!(primary(), None, "an offline router serves nothing");
}

#[tokio::test]
async fn a_new_hostname_moves_a_derived_name_but_never_an_admin_chosen_one() {
    let (_dir, state) = state(None).await;
    let (user, _) = state.create_user("default", "", "", "").await.unwrap();
    let (a, _) = state
        .admit(admission(1, Some(user.id), None))
        .await
        .unwrap();
    let (b, _) = state
        .admit(admission(2, Some(user.id), None))
        .await
        .unwrap();
    let named = |hostname: &str| Presence {
        hostname: Some(hostname.into()),
        ..Presence::default()
    };
    let given = |id| {
        let node = state.snapshot().get(id).cloned().unwrap();
        (node.hostname.clone(), node.given_name.as_str().to_owned())
    };

    let change = state
        .report_presence(a.id, named("Build Box"))
        .await
        .unwrap();
    assert!(change.peers_changed.contains(&a.id) && change.self_changed.contains(&a.id));
    assert_eq!(given(a.id), ("Build Box".into(), "build-box".into()));
    // Taken by another node: a suffix, as at registration.
    state
        .report_presence(b.id, named("build-box"))
        .await
        .unwrap();
    assert_eq!(given(b.id), ("build-box".into(), "build-box-1".into()));
    // And the suffixed name still follows its hostname.
    state.report_presence(b.id, named("runner")).await.unwrap();
    assert_eq!(given(b.id), ("runner".into(), "runner".into()));

    state.rename_node(a.id, "ci").await.unwrap();
    state.report_presence(a.id, named("laptop")).await.unwrap();
    assert_eq!(given(a.id), ("laptop".into(), "ci".into()));
    assert!(
        state
            .report_presence(a.id, named("laptop"))
            .await
            .unwrap()
            .is_empty(),
        "the same hostname again is not news"
    );
}

#[tokio::test]
async fn a_primary_that_misses_its_probe_hands_over_and_stays_standby_when_it_answers() {
    let (_dir, state) = state(None).await;
    let state = Arc::new(state);
    let lan: ipnet::IpNet = "192.168.100.0/24".parse().unwrap();
    let routers = routers_of(&state, lan, 3).await;
    for id in &routers {
        state.session_opened(*id);
    }
    let [a, b, c] = routers[..] else {
        unreachable!()
    };
    let primary = || state.snapshot().primary_for(&lan);
    assert_eq!(primary(), Some(a));

    // Everyone answered: nothing moves, nobody is told anything.
    let change = state.set_router_health(&[(a, true), (b, true), (c, true)]);
    assert!(change.peers_changed.is_empty(), "{change:?}");

    // The primary is silent: the lowest healthy router takes over, peers learn it.
    let change = state.set_router_health(&[(a, false), (b, true), (c, true)]);
    assert_eq!(primary(), Some(b));
    assert!(!state.is_healthy(a));
    let mut announced: Vec<_> = change.peers_changed.iter().copied().collect();
    announced.sort();
    assert_eq!(announced, [a, b]);

    // It answers again: healthy, but the prefix stays with b (no flapping).
    let change = state.set_router_health(&[(a, true), (b, true), (c, true)]);
    assert!(state.is_healthy(a));
    assert_eq!(primary(), Some(b));
    assert!(change.peers_changed.is_empty(), "{change:?}");

    // Nobody answers: the prefix stays where it is rather than moving to a
    // router known to be silent.
    state.set_router_health(&[(a, false), (b, false), (c, false)]);
    assert_eq!(primary(), Some(b));

    // An unhealthy router that goes offline comes back with a clean slate.
    state.session_closed(c).await;
    state.session_opened(c);
    assert!(state.is_healthy(c));
    assert!(!state.is_healthy(a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_renamed_to_one_hostname_at_once_all_keep_their_reports() {
    let (_dir, state) = state(None).await;
    let state = Arc::new(state);
    let (user, _) = state.create_user("default", "", "", "").await.unwrap();
    let mut nodes = Vec::new();
    for n in 1..=16 {
        let (node, _) = state
            .admit(admission(n, Some(user.id), None))
            .await
            .unwrap();
        nodes.push(node.id);
    }
    // Every node takes the same hostname and advertises a route in one report,
    // all at once: each name is chosen under the write lock, so none of the
    // reports is refused for a name another node took meanwhile.
    let reports = nodes.iter().enumerate().map(|(i, id)| {
        let (state, id) = (state.clone(), *id);
        let route: ipnet::IpNet = format!("10.{i}.0.0/24").parse().unwrap();
        tokio::spawn(async move {
            let report = super::Presence {
                hostname: Some("busy".into()),
                advertised_routes: Some(vec![route]),
                ..Default::default()
            };
            state.report_presence(id, report).await.map(|_| ())
        })
    });
    for report in reports.collect::<Vec<_>>() {
        report.await.unwrap().unwrap();
    }
    let snap = state.snapshot();
    let mut names: Vec<String> = nodes
        .iter()
        .map(|id| snap.get(*id).unwrap().given_name.as_str().to_owned())
        .collect();
    for id in &nodes {
        assert_eq!(snap.get(*id).unwrap().hostname, "busy");
        assert_eq!(snap.routes(*id).len(), 1, "node {id}'s route was dropped");
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), nodes.len(), "{names:?}");
    assert!(names.contains(&"busy".to_owned()));
}

#[tokio::test]
async fn a_person_is_one_user_across_sign_ins_and_never_takes_over_a_cli_user() {
    let (dir, state) = state(Some(Duration::from_secs(3600))).await;
    let (cli_alice, _) = state
        .create_user("alice", "", "alice@example.com", "")
        .await
        .unwrap();
    let identity = crate::types::Identity {
        provider_id: "https://idp.example/sub-1".into(),
        preferred_username: "alice".into(),
        email: "alice@example.com".into(),
        display_name: "Alice".into(),
        picture: String::new(),
        groups: vec!["engineering".into(), " ".into(), "engineering".into()],
    };
    let (user, _) = state.sign_in(&identity).await.unwrap();
    assert_ne!(user.id, cli_alice.id, "the CLI user was taken over");
    assert_eq!(user.name.as_str(), "alice-2");
    assert_eq!(user.groups, ["engineering"]);
    assert_eq!(user.provider, "oidc");

    // A sign-in completes the waiting registration as that user, token expiry kept.
    let (id, mut rx) = state
        .begin_registration(request(9, 10, "laptop"))
        .await
        .unwrap();
    let expiry = State::now() + chrono::Duration::minutes(5);
    let (view, new, _) = state
        .complete_sign_in(&id, user.id, Some(expiry))
        .await
        .unwrap();
    assert!(new);
    assert_eq!(view.node.user_id, Some(user.id));
    assert_eq!(view.node.register_method, RegisterMethod::Oidc);
    assert_eq!(
        view.node.expiry.map(|e| e.timestamp()),
        Some(expiry.timestamp())
    );
    rx.changed().await.unwrap();

    // The same person again: the same user, refreshed; groups survive a restart.
    let again = crate::types::Identity {
        display_name: "Alice L.".into(),
        groups: vec!["ops".into()],
        ..identity.clone()
    };
    let (same, change) = state.sign_in(&again).await.unwrap();
    assert_eq!(same.id, user.id);
    assert_eq!(same.name.as_str(), "alice-2");
    assert!(change.users_changed.contains(&user.id));
    assert!(
        change.self_changed.contains(&view.node.id) || change.peers_changed.contains(&view.node.id)
    );
    let (id, _) = state
        .begin_registration(request(9, 11, "laptop"))
        .await
        .unwrap();
    let (_, new, _) = state.complete_sign_in(&id, user.id, None).await.unwrap();
    assert!(!new, "the same machine signing in again is not a new node");
    drop(state);
    let db = Db::open(&sqlite(dir.path())).await.unwrap();
    let stored = db.list_users().await.unwrap();
    let stored = stored.iter().find(|u| u.id == user.id).unwrap();
    assert_eq!(stored.groups, ["ops"]);
    assert_eq!(stored.display_name, "Alice L.");
}

/// Two `State`s on one PostgreSQL database, as two replicas are.
#[cfg(feature = "full-suite")]
mod replicas {
    use super::*;
    use crate::state::feed::Watermark;

    fn settings(mode: crate::config::PolicyMode) -> Settings {
        Settings {
            ephemeral_inactivity_timeout: Duration::from_secs(60),
            policy: crate::state::PolicySource { mode, path: None },
            ..Settings::for_test()
        }
    }

    async fn pair() -> (State, State) {
        let cluster = crate::db::testing::cluster();
        let name = cluster.create_database();
        let config = crate::config::Database::from_location(&cluster.url(&name)).unwrap();
        let mut states = Vec::new();
        for _ in 0..2 {
            let db = Db::open(&config).await.unwrap();
            let settings = settings(crate::config::PolicyMode::Database);
            states.push(State::load(db, settings).await.unwrap());
        }
        let b = states.pop().unwrap();
        (states.pop().unwrap(), b)
    }

    /// Applies everything recorded after `mark` to `state`; what clients learn.
    async fn follow(state: &State, mark: &mut Watermark) -> Change {
        let entries = state
            .db
            .feed_since(mark.next_after(), 10_000)
            .await
            .unwrap();
        let change = state.apply_feed(&entries).await.unwrap();
        mark.advance(&entries, std::time::Instant::now());
        change
    }

    #[tokio::test]
    async fn what_one_replica_writes_the_other_learns_from_the_feed() {
        let (a, b) = pair().await;
        let mut mark = Watermark::new(b.feed_start);
        let (user, _) = a.create_user("alice", "", "", "").await.unwrap();
        let key = a
            .create_preauth_key(Some(user.id), true, false, None, &[])
            .await
            .unwrap();
        let found = a.authenticate_preauth_key(&key.secret).await.unwrap();
        let (node, _) = a
            .admit(admission(1, Some(user.id), Some(found)))
            .await
            .unwrap();

        let change = follow(&b, &mut mark).await;
        assert!(change.peers_changed.contains(&node.id), "{change:?}");
        assert!(change.users_changed.contains(&user.id), "{change:?}");
        assert_eq!(
            b.snapshot().get(node.id).map(|n| (**n).clone()),
            Some((*node).clone())
        );
        assert_eq!(b.users().get(&user.id), Some(&user));
        // A replica's own writes are not applied twice: nothing left for A.
        let mut own = Watermark::new(a.feed_start);
        assert!(follow(&a, &mut own).await.is_empty());

        // An admin rename through A reaches B as a changed peer; new endpoints as a patch.
        a.rename_node(node.id, "laptop").await.unwrap();
        let change = follow(&b, &mut mark).await;
        assert!(change.peers_changed.contains(&node.id), "{change:?}");
        assert_eq!(
            b.snapshot().get(node.id).unwrap().given_name.as_str(),
            "laptop"
        );
        let report = Presence {
            endpoints: Some(vec!["192.0.2.7:41641".parse().unwrap()]),
            ..Presence::default()
        };
        a.report_presence(node.id, report).await.unwrap();
        let change = follow(&b, &mut mark).await;
        assert!(change.patched.contains(&node.id), "{change:?}");
        assert!(!change.peers_changed.contains(&node.id), "{change:?}");

        // Routes approved through A, a policy set through B, a deletion through A.
        let lan: ipnet::IpNet = "10.1.0.0/24".parse().unwrap();
        a.set_advertised_routes(node.id, &[lan]).await.unwrap();
        follow(&b, &mut mark).await;
        assert_eq!(b.snapshot().routes(node.id).len(), 1);
        b.set_policy(r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}"#)
            .await
            .unwrap();
        let mut mark_a = Watermark::new(a.feed_start);
        let change = follow(&a, &mut mark_a).await;
        assert!(change.policy, "{change:?}");
        assert!(a.current_policy().is_some());
        // A session on A makes the node online on B; A falling silent makes it
        // offline again once a survivor reaps A.
        assert!(!b.is_online(node.id));
        a.db.set_session(node.id, true).await.unwrap();
        let change = follow(&b, &mut mark).await;
        assert_eq!(change.online.get(&node.id), Some(&true), "{change:?}");
        assert!(b.is_online(node.id));
        assert_eq!(
            b.db.reap_replicas(Duration::from_secs(60)).await.unwrap(),
            0
        );
        assert_eq!(
            b.db.reap_replicas(Duration::from_millis(0)).await.unwrap(),
            2,
            "both replicas' rows are older than no time at all"
        );
        let change = follow(&b, &mut mark).await;
        assert_eq!(change.online.get(&node.id), Some(&false), "{change:?}");
        assert!(!b.is_online(node.id));
        // A notices at its next heartbeat and registers again.
        assert!(!a.db.heartbeat(None).await.unwrap());
        a.beat().await.unwrap();
        assert!(a.db.heartbeat(None).await.unwrap());
        // The relay region a replica announces reaches the other at its heartbeat.
        let region = r#"{"RegionID":900,"RegionCode":"replica-a"}"#;
        a.announce_relay_region(region.into());
        assert!(b.relay_regions_elsewhere().await.unwrap().is_empty());
        a.beat().await.unwrap();
        assert_eq!(
            b.relay_regions_elsewhere().await.unwrap(),
            [(a.db.replica().to_owned(), region.to_owned())]
        );
        assert!(
            a.relay_regions_elsewhere().await.unwrap().is_empty(),
            "B announced none"
        );

        // One replica runs the periodic jobs; when it goes, another takes them.
        assert!(a.lead().await.unwrap());
        assert!(!b.lead().await.unwrap());
        assert!(a.is_leading().await && !b.is_leading().await);
        drop(a.leadership.lock().await.take());
        let mut took = false;
        for _ in 0..40 {
            if b.lead().await.unwrap() {
                took = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(took, "the lock was never freed");

        a.delete_node(node.id).await.unwrap();
        let change = follow(&b, &mut mark).await;
        assert!(change.peers_removed.contains(&node.id), "{change:?}");
        assert!(b.snapshot().get(node.id).is_none());
    }

    /// A client waits on A; an admin on B finds it, registers it, and A's client
    /// hears so once A reads the verdict, with the node in A's memory. Another
    /// is rejected through B; two admins on both at once decide one once.
    #[tokio::test]
    async fn an_admin_on_one_replica_decides_a_registration_waiting_on_another() {
        let (a, b) = pair().await;
        a.create_user("alice", "", "", "").await.unwrap();
        let (id, mut rx) = a.begin_registration(request(5, 6, "laptop")).await.unwrap();
        let seen = b
            .pending_registration(&id)
            .await
            .unwrap()
            .expect("B sees it");
        assert_eq!(seen.hostname, "laptop");
        let key = format!("nodekey:{}", hex::encode([6u8; 32]));
        let (view, _) = b.complete_registration(&key, "alice").await.unwrap();
        assert!(b.pending_registration(&id).await.unwrap().is_none());
        assert_eq!(*rx.borrow(), None, "A has not read the verdict yet");
        a.deliver_verdicts().await.unwrap();
        assert_eq!(
            *rx.borrow_and_update(),
            Some(RegistrationOutcome::Registered(view.node.id))
        );
        assert!(
            a.snapshot().get(view.node.id).is_some(),
            "A loaded the node"
        );
        assert!(a.pending_registration(&id).await.unwrap().is_none());

        let (id, mut rx) = a.begin_registration(request(7, 8, "x")).await.unwrap();
        b.reject_registration(id.as_str()).await.unwrap();
        a.deliver_verdicts().await.unwrap();
        assert!(matches!(
            &*rx.borrow_and_update(),
            Some(RegistrationOutcome::Rejected(_))
        ));

        // A client that moved to B (A died) waits there, and B decides it.
        let (id, _) = a.begin_registration(request(9, 10, "moved")).await.unwrap();
        let mut moved = b.watch_registration(&id).await.unwrap().expect("adopted");
        let (c, d) = tokio::join!(
            a.complete_registration(id.as_str(), "alice"),
            b.complete_registration(id.as_str(), "alice")
        );
        assert!(
            c.is_ok() != d.is_ok(),
            "exactly one admin registers it: {c:?} {d:?}"
        );
        b.deliver_verdicts().await.unwrap();
        assert!(matches!(
            &*moved.borrow_and_update(),
            Some(RegistrationOutcome::Registered(_))
        ));
    }

    /// 100 registrations, half through each replica at once, neither knowing the
    /// other's: every one succeeds, with addresses and names no other node holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_registrations_through_two_replicas_never_share_an_address_or_name() {
        let (a, b) = pair().await;
        let (user, _) = a.create_user("alice", "", "", "").await.unwrap();
        let mut mark = Watermark::new(b.feed_start);
        follow(&b, &mut mark).await;
        let key = a
            .create_preauth_key(Some(user.id), true, false, None, &[])
            .await
            .unwrap();
        let found = a.authenticate_preauth_key(&key.secret).await.unwrap();
        let (a, b) = (Arc::new(a), Arc::new(b));
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..100u8 {
            let state = if n % 2 == 0 { a.clone() } else { b.clone() };
            let mut adm = admission(n, Some(user.id), Some(found.clone()));
            adm.hostname = "laptop".into();
            tasks.spawn(async move { state.admit(adm).await.map(|(node, _)| node) });
        }
        let mut nodes = Vec::new();
        while let Some(done) = tasks.join_next().await {
            nodes.push(done.unwrap().expect("every registration succeeds"));
        }
        let stored = a.db.list_nodes().await.unwrap();
        assert_eq!(stored.len(), 100);
        let unique = |f: fn(&Node) -> String| {
            stored
                .iter()
                .map(f)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        };
        assert_eq!(unique(|n| format!("{:?}", n.ipv4)), 100);
        assert_eq!(unique(|n| format!("{:?}", n.ipv6)), 100);
        assert_eq!(unique(|n| n.given_name.as_str().to_owned()), 100);
        // And B, following the feed, ends with the same nodes as the database.
        follow(&b, &mut mark).await;
        assert_eq!(b.snapshot().len(), 100);
    }
}
