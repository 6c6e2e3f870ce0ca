//! Taildrop with official clients: `tailscale file cp` between two nodes of one
//! user arrives and `tailscale file get` saves it; another user's node is no
//! target.

use crate::clients::{assert_logged_in, server};
use crate::support::poll_until;
use crate::support::tailscale::{Client, versions};
use std::time::Duration;

#[test]
fn files_cross_between_one_users_nodes_and_not_to_another_user() {
    for version in versions() {
        let server = server();
        let (alice, bob) = (
            server.reusable_key("alice", &[]),
            server.reusable_key("bob", &[]),
        );
        let sender = Client::start(&version, "alice-laptop");
        let receiver = Client::start(&version, "alice-desktop");
        let stranger = Client::start(&version, "bob-laptop");
        for (client, key) in [(&sender, &alice), (&receiver, &alice), (&stranger, &bob)] {
            let up = client.up_with_key(&server.url(), key);
            assert_logged_in(client, &up);
        }
        sender.wait_status("both peers", Duration::from_secs(30), |s| {
            s["Peer"].as_object().is_some_and(|p| p.len() == 2)
        });

        // Only the user's own node is offered as a target.
        let mut targets = None;
        poll_until(Duration::from_secs(30), || {
            let listed = targets.insert(sender.cli(&["file", "cp", "--targets"]));
            listed.stdout.contains("alice-desktop")
        });
        let targets = targets.expect("listed at least once");
        assert!(
            targets.stdout.contains("alice-desktop") && !targets.stdout.contains("bob-laptop"),
            "{version}: {targets:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        let payload = format!("sent with Taildrop through headway by {version}\n");
        std::fs::write(&file, &payload).unwrap();
        let file_arg = file.to_str().unwrap();
        let sent = sender.cli(&["file", "cp", file_arg, "alice-desktop:"]);
        assert_eq!(sent.code, 0, "{version}: {sent:?}\n{}", sender.log_tail());

        let inbox = tempfile::tempdir().unwrap();
        let received = inbox.path().join("notes.txt");
        let mut got = None;
        let arrived = poll_until(Duration::from_secs(30), || {
            got = Some(receiver.cli(&["file", "get", inbox.path().to_str().unwrap()]));
            received.exists()
        });
        assert!(
            arrived,
            "{version}: nothing arrived: {got:?}\n{}",
            receiver.log_tail()
        );
        assert_eq!(std::fs::read_to_string(&received).unwrap(), payload);

        let refused = sender.cli(&["file", "cp", file_arg, "bob-laptop:"]);
        assert_ne!(refused.code, 0, "{version}: {refused:?}");
    }
}
