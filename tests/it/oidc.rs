//! Single sign-on with a real OpenID provider (oidc-provider 9 on Node.js) and
//! official clients: `tailscale up` leads the person to the provider and back,
//! the node joins as their user, the provider's groups open and close access
//! through the policy, a Tailscale SSH `check` is allowed by its owner's sign-in,
//! the allow rules admit and refuse, and every failure (a
//! refused person, a forged or reused `state`, a spoiled ID token, a wrong client
//! secret, the provider down at start-up or at sign-in) is a page or a start-up
//! message, with nothing registered.

use crate::policy::{crosses, finish, ssh, ssh_check_id};
use crate::support::oidc::{Browser, Claims, Client as OidcClient, Page, Person, Provider, Tamper};
use crate::support::tailscale::{Client, echo_server, free_port, versions};
use crate::support::{Spawn, TestServer, headway_bin, test_config, wait_until};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CLIENT_ID: &str = "headway";
const SECRET: &str = "headway-client-secret";

/// A provider and a headway server that signs people in with it.
struct Sso {
    provider: Provider,
    server: TestServer,
}

/// `oidc:` for `issuer`, with `more` (indented lines) added.
fn oidc_yaml(issuer: &str, secret: &str, more: &str) -> String {
    format!(
        "oidc:\n  issuer: {issuer}\n  client_id: {CLIENT_ID}\n  client_secret: {secret}\n  scope: [openid, profile, email, groups]\n{more}"
    )
}

impl Sso {
    /// The provider knows `people`; headway's `oidc` section gets `more`, and a
    /// policy file `policy` when given.
    fn start(people: &[Person], more: &str, policy: Option<&str>) -> Sso {
        let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
        let port = free_port();
        let redirect = format!("http://127.0.0.1:{port}/oidc/callback");
        let provider = Provider::start(
            dir.path(),
            &[OidcClient::confidential(CLIENT_ID, SECRET, &redirect)],
            people,
        );
        let mut extra = oidc_yaml(&provider.issuer(), SECRET, more);
        if let Some(policy) = policy {
            let file = dir.path().join("acl.hujson");
            std::fs::write(&file, policy).unwrap();
            extra.push_str(&format!(
                "policy:\n  mode: file\n  path: {}\n",
                file.display()
            ));
        }
        let server = TestServer::spawn_with(Spawn {
            port: Some(port),
            extra_config: extra,
            dir: Some(dir),
            ..Spawn::default()
        });
        Sso { provider, server }
    }
}

/// `tailscale up` (interactive) in the background; the child and its auth URL.
fn begin_up(client: &Client, server: &TestServer, flags: &[&str]) -> (Child, String) {
    let said = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(client.bin_path("tailscale"))
        .arg(format!("--socket={}", client.socket_path().display()))
        .arg("up")
        .arg(format!("--login-server={}", server.url()))
        .arg(format!("--hostname={}", client.name))
        .args(["--accept-dns=false", "--timeout=60s"])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(said.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut url = String::new();
    let found = crate::support::poll_until(Duration::from_secs(30), || {
        url = client.status()["AuthURL"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        !url.is_empty()
    });
    if !found {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{} ({}): no auth URL; tailscale up said:\n{}\n{}",
            client.name,
            client.version,
            std::fs::read_to_string(said.path()).unwrap_or_default(),
            client.log_tail()
        );
    }
    assert!(
        url.starts_with(&format!("{}/register/hskey-authreq-", server.url())),
        "{url}"
    );
    (child, url)
}

/// Signs `person` in at the provider from a fresh browser and confirms the
/// machine on headway's page; the page the confirmation ends on.
fn sign_in_and_confirm(auth_url: &str, person: &Person) -> Page {
    let mut browser = Browser::new();
    let page = browser.sign_in(auth_url, &person.login, &person.password);
    assert_eq!(page.status, 200, "{}: {}", page.url, page.text());
    assert!(
        page.text().contains("Register this machine"),
        "not the confirmation page: {}",
        page.text()
    );
    browser.submit(&page, &[])
}

/// Runs `tailscale up` on `client`, signs `person` in, confirms, and waits until
/// the client runs; the final page's text.
fn join_as(client: &Client, server: &TestServer, person: &Person, flags: &[&str]) -> String {
    let (mut up, url) = begin_up(client, server, flags);
    let done = sign_in_and_confirm(&url, person);
    assert_eq!(done.status, 200, "{}", done.text());
    client.wait_status("running", Duration::from_secs(30), |s| {
        s["BackendState"] == "Running"
    });
    let _ = up.kill();
    let _ = up.wait();
    done.text()
}

/// Waits until headway sees the provider again: a failed look is remembered
/// for a few seconds, not tried at every click.
fn wait_for_provider(auth_url: &str) {
    wait_until(
        "headway reaches the provider again",
        Duration::from_secs(30),
        || Browser::new().get(auth_url).status != 503,
    );
}

fn users(server: &TestServer) -> Vec<Value> {
    let out = server.cli(&["users", "list", "-o", "json"]).ok().stdout;
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn owner_of(server: &TestServer, hostname: &str) -> String {
    server
        .nodes()
        .iter()
        .find(|n| n["name"] == hostname)
        .map(|n| n["user"]["name"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("no node {hostname}: {:#?}", server.nodes()))
}

#[test]
fn people_sign_in_at_the_provider_and_its_groups_open_and_close_access() {
    for version in versions() {
        let port = echo_server();
        let policy = format!(
            r#"{{
  // Engineering, as the provider says, reaches the database.
  "groups": {{"group:engineering": []}},
  "tagOwners": {{"tag:db": ["ops@"]}},
  "acls": [
    {{"action": "accept", "src": ["group:engineering"], "dst": ["tag:db:{port}"]}},
    {{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:db:22"]}},
  ],
  // Tailscale SSH to the database needs its owner's fresh sign-in.
  "ssh": [{{"action": "check", "src": ["autogroup:member"], "dst": ["tag:db"], "users": ["root"], "checkPeriod": "always"}}],
}}"#
        );
        let alice = Person::new("alice")
            .email("alice@example.com")
            .name("Alice Liddell")
            .picture("https://example.com/alice.png")
            .groups(&["engineering"]);
        let bob = Person::new("bob")
            .email("bob@example.com")
            .groups(&["sales"]);
        let sso = Sso::start(
            &[alice.clone(), bob.clone()],
            "  pkce:\n    enabled: true\n",
            Some(&policy),
        );
        let server = &sso.server;
        server.cli(&["users", "create", "ops"]).ok();
        let key = server.reusable_key("ops", &["--tags", "tag:db"]);
        let db = Client::start(&version, "db");
        crate::clients::assert_logged_in(&db, &db.up_with(&server.url(), &key, &["--ssh"]));
        let db_ip = db.ipv4();

        // Alice: the provider, the confirmation, and she is in.
        let laptop = Client::start(&version, "laptop");
        let said = join_as(&laptop, server, &alice, &[]);
        assert!(
            said.contains("laptop is now in the tailnet as Alice Liddell"),
            "{version}: {said}"
        );
        let listed = users(server);
        let user = listed
            .iter()
            .find(|u| u["name"] == "alice")
            .unwrap_or_else(|| panic!("{listed:#?}"));
        assert_eq!(user["email"], "alice@example.com");
        assert_eq!(user["display_name"], "Alice Liddell");
        assert_eq!(user["profile_pic_url"], "https://example.com/alice.png");
        assert_eq!(user["provider"], "oidc");
        assert_eq!(
            user["provider_id"],
            format!("{}/sub-alice", sso.provider.issuer())
        );
        assert_eq!(owner_of(server, "laptop"), "alice");
        wait_until(
            "alice (engineering) reaches the database",
            Duration::from_secs(30),
            || crosses(&laptop, &db_ip, port),
        );

        // Bob is not in engineering: he joins, but does not get through.
        let phone = Client::start(&version, "phone");
        join_as(&phone, server, &bob, &[]);
        assert_eq!(owner_of(server, "phone"), "bob");
        assert!(!crosses(&phone, &db_ip, port), "{version}: bob got through");

        // An SSH `check`: only the owner of the machine it comes from, signed in
        // at the provider, lets it through.
        let session = ssh(&laptop, &format!("root@{db_ip}"), &["echo", "ssh-checked"]);
        let check_url = format!("{}/auth/{}", server.url(), ssh_check_id(server));
        let not_hers = Browser::new().sign_in(&check_url, &bob.login, &bob.password);
        assert_eq!(not_hers.status, 403, "{}", not_hers.text());
        assert!(
            not_hers.text().contains("Only the owner"),
            "{}",
            not_hers.text()
        );
        let allowed = Browser::new().sign_in(&check_url, &alice.login, &alice.password);
        assert_eq!(allowed.status, 200, "{}", allowed.text());
        assert!(
            allowed.text().contains("SSH session authorized"),
            "{}",
            allowed.text()
        );
        let ran = finish(session, Duration::from_secs(60));
        assert!(
            ran.0 == Some(0) && ran.1.contains("ssh-checked"),
            "{version}: alice's checked ssh: {ran:?}"
        );

        // Alice again, from a second machine: the same user.
        let tablet = Client::start(&version, "tablet");
        join_as(&tablet, server, &alice, &[]);
        assert_eq!(owner_of(server, "tablet"), "alice");
        assert_eq!(users(server).len(), 3, "{:#?}", users(server));

        // The directory drops alice from engineering; at her next sign-in her
        // access closes, on every machine of hers.
        sso.provider
            .set_people(&[alice.clone().groups(&[]), bob.clone()]);
        let said = join_as(&laptop, server, &alice, &["--force-reauth"]);
        assert!(said.contains("signed in again"), "{version}: {said}");
        assert_eq!(users(server).len(), 3, "{:#?}", users(server));
        assert_eq!(owner_of(server, "laptop"), "alice");
        wait_until(
            "alice no longer reaches the database",
            Duration::from_secs(30),
            || !crosses(&laptop, &db_ip, port) && !crosses(&tablet, &db_ip, port),
        );
    }
}

#[test]
fn refusals_and_broken_answers_are_pages_and_register_nothing() {
    let version = versions().pop().unwrap();
    let person =
        |login: &str, email: &str, groups: &[&str]| Person::new(login).email(email).groups(groups);
    let carol = person("carol", "carol@example.com", &["staff"]);
    let eve = person("eve", "eve@example.com", &["visitors"]);
    let mallory = person("mallory", "mallory@evil.example", &["staff"]);
    let frank = person("frank", "frank@example.com", &["staff"]);
    let grace = person("grace", "grace@example.com", &["staff"]).email_verified(false);
    let mut sso = Sso::start(
        &[
            carol.clone(),
            eve.clone(),
            mallory.clone(),
            frank.clone(),
            grace.clone(),
        ],
        "  allowed_groups: [staff]\n  allowed_domains: [example.com]\n  allowed_users: [carol@example.com, grace@example.com]\n",
        None,
    );
    let server = &sso.server;
    let laptop = Client::start(&version, "laptop");
    let (mut up, url) = begin_up(&laptop, server, &[]);

    let refused = |person: &Person, status: u16, says: &str| {
        let page = Browser::new().sign_in(&url, &person.login, &person.password);
        assert_eq!(page.status, status, "{}: {}", person.login, page.text());
        assert!(
            page.text().contains(says),
            "{}: expected {says:?} in {}",
            person.login,
            page.text()
        );
        assert!(
            server.nodes().is_empty(),
            "{} registered a node",
            person.login
        );
    };
    // Each allow rule refuses whom it should.
    refused(&eve, 403, "you are not in a group this tailnet allows");
    refused(
        &mallory,
        403,
        "your email address \"mallory@evil.example\" is not in a domain this tailnet allows",
    );
    refused(
        &frank,
        403,
        "your account \"frank@example.com\" is not one this tailnet allows",
    );
    refused(
        &grace,
        403,
        "your email address \"grace@example.com\" is not verified at the identity provider",
    );
    // No user was made for any of them.
    assert!(users(server).is_empty(), "{:#?}", users(server));

    // A callback headway did not start in this browser.
    let forged = Browser::new().get(&format!(
        "{}/oidc/callback?code=abc&state=forged-state-value",
        server.url()
    ));
    assert_eq!(forged.status, 403, "{}", forged.text());
    assert!(forged.text().contains("not started in this browser"));
    // An answer naming another issuer (RFC 9207) is refused before anything else.
    let mixed_up = Browser::new().get(&format!(
        "{}/oidc/callback?code=abc&state=forged-state-value&iss=https%3A%2F%2Fidp.evil.example",
        server.url()
    ));
    assert_eq!(mixed_up.status, 403, "{}", mixed_up.text());
    assert!(
        mixed_up.text().contains("does not use"),
        "{}",
        mixed_up.text()
    );

    // ID tokens the provider spoils on the way are refused.
    for (tamper, says) in [
        (Tamper::BadSignature, "signature"),
        (Tamper::WrongAudience, "audience"),
        (Tamper::Expired, "expired"),
        (Tamper::WrongIssuer, "issuer"),
    ] {
        sso.provider.tamper(tamper);
        let page = Browser::new().sign_in(&url, &carol.login, &carol.password);
        assert_eq!(page.status, 403, "{tamper:?}: {}", page.text());
        assert!(
            page.text().contains("could not be trusted") && page.text().contains(says),
            "{tamper:?}: {}",
            page.text()
        );
    }
    sso.provider.tamper(Tamper::Off);
    assert!(server.nodes().is_empty());

    // The provider down at sign-in: a page says so and what an admin can do
    // (headway looks at the provider at most once a second).
    sso.provider.stop();
    let mut down = Browser::new().get(&url);
    wait_until(
        "headway notices the provider is down",
        Duration::from_secs(10),
        || {
            down = Browser::new().get(&url);
            down.status != 0
        },
    );
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(
        down.text().contains("cannot be reached")
            && down.text().contains("headway auth register --auth-id"),
        "{}",
        down.text()
    );
    sso.provider.start_again();
    wait_for_provider(&url);

    // Carol is allowed; the callback she came back with cannot be used twice.
    let mut browser = Browser::new();
    let confirm = browser.sign_in(&url, &carol.login, &carol.password);
    assert_eq!(confirm.status, 200, "{}", confirm.text());
    // The confirmation's token rides in a cookie no script and no other site sees.
    let cookie = confirm.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let replay = browser.get(confirm.url.as_str());
    assert_eq!(replay.status, 410, "{}", replay.text());
    assert!(
        replay.text().contains("already been used"),
        "{}",
        replay.text()
    );
    let done = browser.submit(&confirm, &[]);
    assert_eq!(done.status, 200, "{}", done.text());
    assert!(
        done.text().contains("laptop is now in the tailnet"),
        "{}",
        done.text()
    );
    // The confirmation is single-use too: its cookie is gone, and so is the
    // waiting registration.
    let again = browser.submit(&confirm, &[]);
    assert_eq!(again.status, 403, "{}", again.text());
    assert!(
        again.text().contains("did not come from the page"),
        "{}",
        again.text()
    );
    laptop.wait_status("running", Duration::from_secs(30), |s| {
        s["BackendState"] == "Running"
    });
    let _ = up.kill();
    let _ = up.wait();
    assert_eq!(owner_of(server, "laptop"), "carol");

    // The CLI keeps working beside OIDC.
    server.cli(&["users", "create", "admin"]).ok();
    let desk = Client::start(&version, "desk");
    let (mut up, url) = begin_up(&desk, server, &[]);
    let id = url.rsplit('/').next().unwrap().to_owned();
    server
        .cli(&["nodes", "register", "--user", "admin", "--key", &id])
        .ok();
    desk.wait_status("running", Duration::from_secs(30), |s| {
        s["BackendState"] == "Running"
    });
    let _ = up.kill();
    let _ = up.wait();
    assert_eq!(owner_of(server, "desk"), "admin");
}

#[test]
fn a_provider_down_at_start_up_stops_the_server_unless_told_otherwise() {
    let version = versions().pop().unwrap();
    let dave = Person::new("dave").email("dave@example.com");
    let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
    let (port, wrong_port) = (free_port(), free_port());
    // Profile claims come from the userinfo endpoint only, here.
    let mut provider = Provider::start_with(
        dir.path(),
        &[
            // ES256 ID tokens here (RS256, the default, elsewhere).
            OidcClient::confidential(
                CLIENT_ID,
                SECRET,
                &format!("http://127.0.0.1:{port}/oidc/callback"),
            )
            .id_token_alg("ES256"),
            OidcClient::confidential(
                "misconfigured",
                SECRET,
                &format!("http://127.0.0.1:{wrong_port}/oidc/callback"),
            ),
        ],
        std::slice::from_ref(&dave),
        Claims::UserinfoOnly,
    );
    let issuer = provider.issuer();
    provider.stop();

    // Down, and only_start_if_oidc_is_available at its default: no start.
    let refused_dir = tempfile::tempdir().unwrap();
    let config = refused_dir.path().join("config.yaml");
    std::fs::write(
        &config,
        test_config(refused_dir.path(), &oidc_yaml(&issuer, SECRET, "")),
    )
    .unwrap();
    let out = Command::new(headway_bin())
        .current_dir(refused_dir.path())
        .env("HOME", refused_dir.path())
        .env("NO_COLOR", "1")
        .arg("-c")
        .arg(&config)
        .arg("serve")
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started without its provider:\n{said}"
    );
    assert!(
        said.contains(&format!("the OIDC provider {issuer} cannot be reached"))
            && said.contains("only_start_if_oidc_is_available"),
        "{said}"
    );

    // Told to start anyway: it does, says so, and signs dave in once the
    // provider is back (PKCE off here; the node expires with the ID token).
    let server = TestServer::spawn_with(Spawn {
        port: Some(port),
        extra_config: oidc_yaml(
            &issuer,
            SECRET,
            "  only_start_if_oidc_is_available: false\n  use_expiry_from_token: true\n",
        ),
        ..Spawn::default()
    });
    assert!(server.log().contains("starting anyway"), "{}", server.log());
    let laptop = Client::start(&version, "laptop");
    let (mut up, url) = begin_up(&laptop, &server, &[]);
    let down = Browser::new().get(&url);
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(
        down.text()
            .contains(&format!("The identity provider {issuer} cannot be reached")),
        "{}",
        down.text()
    );
    provider.start_again();
    wait_for_provider(&url);
    let done = sign_in_and_confirm(&url, &dave);
    assert_eq!(done.status, 200, "{}", done.text());
    laptop.wait_status("running", Duration::from_secs(30), |s| {
        s["BackendState"] == "Running"
    });
    let _ = up.kill();
    let _ = up.wait();
    assert_eq!(owner_of(&server, "laptop"), "dave");
    // The node expires with the ID token (the provider's default: one hour).
    let laptop_node = server.nodes();
    let expiry = laptop_node[0]["expiry"]["seconds"]
        .as_i64()
        .unwrap_or_else(|| panic!("no expiry: {laptop_node:#?}"));
    let hour = chrono::Utc::now().timestamp() + 3600;
    assert!(
        (hour - 120..=hour + 5).contains(&expiry),
        "expiry {expiry}, token's about {hour}"
    );
    let dave_user = users(&server);
    assert_eq!(dave_user[0]["email"], "dave@example.com", "{dave_user:#?}");

    // A wrong client secret: the provider refuses headway, the person sees why.
    let wrong = TestServer::spawn_with(Spawn {
        port: Some(wrong_port),
        extra_config: oidc_yaml(&issuer, "not-the-secret", "").replace(
            &format!("client_id: {CLIENT_ID}"),
            "client_id: misconfigured",
        ),
        ..Spawn::default()
    });
    let phone = Client::start(&version, "phone");
    let (mut up, url) = begin_up(&phone, &wrong, &[]);
    let page = Browser::new().sign_in(&url, &dave.login, &dave.password);
    assert_eq!(page.status, 502, "{}", page.text());
    assert!(
        page.text()
            .contains("refused this server's client credentials")
            && page.text().contains("oidc.client_secret"),
        "{}",
        page.text()
    );
    assert!(wrong.nodes().is_empty() && users(&wrong).is_empty());
    let _ = up.kill();
    let _ = up.wait();
}

#[test]
fn the_web_ui_signs_in_admins_through_the_provider_and_no_one_else() {
    let alice = Person::new("alice")
        .email("alice@example.com")
        .groups(&["admins"]);
    let bob = Person::new("bob")
        .email("bob@example.com")
        .groups(&["sales"]);
    let carol = Person::new("carol").email("carol@example.com");
    let sso = Sso::start(
        &[alice.clone(), bob.clone(), carol.clone()],
        "web_ui:\n  oidc_admin_groups: [admins]\n  oidc_admin_users: [carol@example.com]\n",
        None,
    );
    let url = sso.server.url();
    let mut browser = Browser::new();
    let login = browser.get(&format!("{url}/admin/login"));
    assert!(
        login.body.contains("id=\"sign-in-oidc\""),
        "{}",
        login.text()
    );
    // Alice is in the admins group: the provider sends her back to the overview.
    let page = browser.sign_in(
        &format!("{url}/admin/login/oidc"),
        &alice.login,
        &alice.password,
    );
    assert_eq!(page.status, 200, "{}: {}", page.url, page.text());
    assert_eq!(page.url.path(), "/admin");
    assert!(page.text().contains("Overview"), "{}", page.text());
    assert!(
        page.body.contains("alice@example.com (OIDC)"),
        "{}",
        page.body
    );
    let machines = browser.get(&format!("{url}/admin/machines"));
    assert_eq!(machines.status, 200);
    // Carol is listed by email.
    let mut browser = Browser::new();
    let page = browser.sign_in(
        &format!("{url}/admin/login/oidc"),
        &carol.login,
        &carol.password,
    );
    assert_eq!(page.url.path(), "/admin", "{}", page.text());
    // Bob signs in at the provider but is no admin: a page says so, no session.
    let mut browser = Browser::new();
    let page = browser.sign_in(
        &format!("{url}/admin/login/oidc"),
        &bob.login,
        &bob.password,
    );
    assert_eq!(page.status, 403, "{}", page.text());
    assert!(
        page.text().contains("may not administer"),
        "{}",
        page.text()
    );
    let after = browser.get(&format!("{url}/admin"));
    assert_eq!(after.url.path(), "/admin/login", "{}", after.text());
    // Signing in to the UI made no user and registered nothing.
    assert!(users(&sso.server).is_empty(), "{:?}", users(&sso.server));
}
