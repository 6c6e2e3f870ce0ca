//! Pages people open in a browser: registration, Apple and Windows set-up, health.

use crate::support::{TestServer, http_get};
use headway::grpc::pb;

#[test]
fn health_and_setup_pages_show_this_server() {
    let server = TestServer::spawn();
    let (status, _, body) = http_get(&server.http_addr, "/health");
    assert_eq!((status, body.trim()), (200, r#"{"status":"pass"}"#));

    let (status, _, body) = http_get(&server.http_addr, "/apple");
    assert_eq!(status, 200);
    assert!(body.contains("http://127.0.0.1:8080"), "{body}");
    let (status, head, body) = http_get(&server.http_addr, "/apple/macos-app-store");
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/x-apple-aspen-config"),
        "{head}"
    );
    assert!(
        body.contains("<string>io.tailscale.ipn.macos</string>"),
        "{body}"
    );
    assert!(
        body.contains("<key>ControlURL</key><string>http://127.0.0.1:8080</string>"),
        "{body}"
    );
    assert!(
        http_get(&server.http_addr, "/apple/ios")
            .2
            .contains("io.tailscale.ipn.ios")
    );
    assert_eq!(http_get(&server.http_addr, "/apple/windows-phone").0, 400);

    let (status, _, body) = http_get(&server.http_addr, "/windows");
    assert_eq!(status, 200);
    assert!(
        body.contains("tailscale login --login-server http://127.0.0.1:8080"),
        "{body}"
    );
    assert!(body.contains("Tailscale IPN"), "{body}");
}

#[tokio::test]
async fn the_registration_page_shows_the_commands_and_escapes_the_hostname() {
    let server = TestServer::spawn();
    let mut c = server.grpc().await;
    c.create_user(pb::CreateUserRequest {
        name: "default".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let id = format!("hskey-authreq-{:0>24}", "page1");
    c.debug_create_node(pb::DebugCreateNodeRequest {
        user: "default".into(),
        key: id.clone(),
        name: "<b>evil</b>".into(),
        routes: vec![],
    })
    .await
    .unwrap();
    let (status, _, body) = http_get(&server.http_addr, &format!("/register/{id}"));
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!(
            "headway auth register --auth-id {id} --user USERNAME"
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "headway nodes register --user USERNAME --key {id}"
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!("headway -n NAMESPACE nodes register --key {id}")),
        "{body}"
    );
    assert!(
        body.contains("&lt;b&gt;evil&lt;/b&gt;") && !body.contains("<b>evil</b>"),
        "{body}"
    );

    let (status, _, body) = http_get(
        &server.http_addr,
        &format!("/register/hskey-authreq-{:0>24}", "nope"),
    );
    assert_eq!(status, 404);
    assert!(body.contains("tailscale up"), "{body}");
    assert_eq!(
        http_get(&server.http_addr, "/register/..%2F..%2Fetc").0,
        404
    );
}

#[test]
fn with_the_web_ui_off_there_is_no_admin_page_and_no_sign_in_link() {
    let server = TestServer::spawn_with(crate::support::Spawn {
        extra_config: "web_ui:\n  enabled: false\n".into(),
        ..crate::support::Spawn::default()
    });
    for path in ["/admin", "/admin/login", "/admin/machines"] {
        assert_eq!(http_get(&server.http_addr, path).0, 404, "{path}");
    }
    let refused = server.cli(&["admin", "login-link"]).failed();
    assert!(
        refused.stderr.contains("web_ui.enabled: false"),
        "{}",
        refused.stderr
    );

    // On (the default): the sign-in page is there and a link is issued.
    let server = TestServer::spawn();
    assert_eq!(http_get(&server.http_addr, "/admin/login").0, 200);
    let (status, head, _) = http_get(&server.http_addr, "/admin/machines");
    assert_eq!(status, 303);
    assert!(head.contains("location: /admin/login"), "{head}");
    let link = server.cli(&["admin", "login-link"]).ok();
    assert!(
        // The link is on server_url, the address clients and browsers use.
        link.stdout
            .starts_with("http://127.0.0.1:8080/admin/login/hskey-weblink-"),
        "{}",
        link.stdout
    );
}
