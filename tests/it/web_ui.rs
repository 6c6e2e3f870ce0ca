//! The admin web UI (`/admin`) in a real browser: Debian's Chromium, driven over
//! WebDriver, signs in with a one-time link, approves a subnet route, renames a
//! machine, creates a user and a pre-auth key, and edits the access policy, and
//! official clients (TUN mode, each in a network namespace of its own, as in
//! routes.rs) show that every change took effect. Requests without a session or
//! with a forged CSRF token are refused. Screenshots of every page at desktop and
//! phone width go to `$HEADWAY_SCREENSHOTS` (default `target/web-ui-screenshots/`).

use crate::clients::{assert_logged_in, key};
use crate::routes::{hub_with_server_config, machine};
use crate::support::netns::{Netns, Switch};
use crate::support::tailscale::{Client, versions};
use crate::support::webdriver::WebDriver;
use crate::support::{TestServer, wait_until};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LAN: &str = "192.168.100.0/24";
const LAN_HOST: &str = "192.168.100.10";
const WAIT: Duration = Duration::from_secs(20);

/// Longer than a live page takes to poll itself and swap `#main`
/// (3 s, src/admin/assets/live.js).
const LIVE_POLL: Duration = Duration::from_secs(4);

/// A policy that does not parse: a stray comma on line 3.
const BROKEN_POLICY: &str = r#"{
  "acls": [
    {"action": "accept",,}
  ]
}"#;

/// The machines of user `default` reach each other and the LAN; a guest's reach
/// nobody (and nobody reaches them).
const GUESTS_APART: &str = r#"{
  // guests stay apart
  "acls": [
    {"action": "accept", "src": ["default@"], "dst": ["default@:*", "192.168.100.0/24:*"]},
  ],
}"#;

/// Whether a parse error names line 3 (`line 3`, or the parser's `policy:3:…`).
fn names_line_3(error: &str) -> bool {
    error.contains("line 3") || error.contains(":3:")
}

/// Where the screenshots go: `$HEADWAY_SCREENSHOTS`, or target/web-ui-screenshots.
fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("HEADWAY_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web-ui-screenshots")
        });
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// The current page as `name-desktop.png` (1280×900) and `name-phone.png`
/// (390×844); at phone width the page must not scroll sideways.
fn screenshots(browser: &WebDriver, dir: &Path, name: &str) {
    for (width, height, form) in [(1280, 900, "desktop"), (390, 844, "phone")] {
        browser.set_window_size(width, height);
        browser.screenshot(&dir.join(format!("{name}-{form}.png")));
    }
    let overflow = browser.execute(
        "const root = document.documentElement; return root.scrollWidth - root.clientWidth;",
    );
    assert!(
        overflow.as_i64().is_some_and(|px| px <= 0),
        "{name}: at 390 px the page is {overflow} px wider than the screen"
    );
    browser.set_window_size(1280, 900);
}

/// The path of `url` on the server at `base`, without query or fragment (a page
/// may carry its message in `?ok=`).
fn path_of<'a>(url: &'a str, base: &str) -> &'a str {
    url.strip_prefix(base)
        .and_then(|rest| rest.split(['?', '#']).next())
        .unwrap_or(url)
}

/// The HTTP status the current page came with, as the browser recorded it.
fn page_status(browser: &WebDriver) -> u64 {
    browser
        .execute("return performance.getEntriesByType('navigation')[0].responseStatus;")
        .as_u64()
        .unwrap_or_default()
}

/// Sends `request` to the server from inside `ns`, where it listens, as a script
/// would: only the cookies given, no redirects followed. The status and the
/// lower-cased head.
fn send(ns: &Netns, addr: &str, request: String) -> (u16, String) {
    let target: SocketAddr = addr.parse().unwrap();
    let mut conn = ns
        .enter(|| TcpStream::connect_timeout(&target, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

fn cookie_line(cookie: Option<&str>) -> String {
    cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default()
}

fn get(ns: &Netns, addr: &str, path: &str, cookie: Option<&str>) -> (u16, String) {
    let cookie = cookie_line(cookie);
    send(
        ns,
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie}Connection: close\r\n\r\n"),
    )
}

fn post_form(
    ns: &Netns,
    addr: &str,
    path: &str,
    cookie: Option<&str>,
    body: &str,
) -> (u16, String) {
    let cookie = cookie_line(cookie);
    send(
        ns,
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie}\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// The `Location` of a lower-cased head.
fn location(head: &str) -> &str {
    head.lines()
        .find_map(|l| l.strip_prefix("location:"))
        .map(str::trim)
        .unwrap_or_default()
}

/// The id of the node named `name`, as the admin pages show it.
fn node_id(server: &TestServer, name: &str) -> String {
    let nodes = server.nodes();
    let node = nodes
        .iter()
        .find(|n| n["given_name"] == name)
        .unwrap_or_else(|| panic!("no node {name}: {nodes:?}"));
    node["id"].to_string().trim_matches('"').to_owned()
}

fn users(server: &TestServer) -> Vec<Value> {
    let listed = server.cli(&["users", "list", "-o", "json"]).ok().stdout;
    serde_json::from_str::<Value>(&listed)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn user_exists(server: &TestServer, name: &str) -> bool {
    users(server).iter().any(|u| u["name"] == name)
}

/// Whether some peer in a status has a `field` (`HostName`, `DNSName`) that
/// passes `check`.
fn has_peer(status: &Value, field: &str, check: impl Fn(&str) -> bool) -> bool {
    status["Peer"].as_object().is_some_and(|peers| {
        peers
            .values()
            .any(|p| p[field].as_str().is_some_and(&check))
    })
}

/// A line to the LAN host from the laptop comes back, and the host saw it come
/// from the router's LAN address.
fn crosses_the_router(
    laptop_ns: &Netns,
    target: SocketAddr,
    seen: &std::sync::Mutex<Vec<SocketAddr>>,
) -> bool {
    let before = seen.lock().unwrap().len();
    laptop_ns
        .tcp_exchange(target, "through the approved route")
        .is_ok_and(|back| back == "through the approved route")
        && seen.lock().unwrap()[before..]
            .last()
            .is_some_and(|a| a.ip().to_string() == "192.168.100.1")
}

#[test]
fn an_admin_runs_the_tailnet_from_the_web_ui_and_forged_requests_are_refused() {
    let version = versions().pop().expect("a client version");
    let bare_version = version.trim_start_matches('v');
    let shots = screenshot_dir();
    let (hub, server) = hub_with_server_config("policy:\n  mode: database\n");
    let (url, addr) = (server.url(), server.http_addr.clone());

    // A LAN host that runs no Tailscale behind a subnet router, a laptop, and a
    // machine that joins later with a key made in the browser.
    let lan = Switch::new("lan", &format!("{LAN_HOST}/24"));
    let (echo_port, seen) = lan.ns.echo_server(LAN_HOST);
    let target: SocketAddr = format!("{LAN_HOST}:{echo_port}").parse().unwrap();
    let router_ns = machine(&hub, "ra", 11);
    lan.attach(&router_ns, "lan0", "192.168.100.1/24", false);
    router_ns.forward();
    let laptop_ns = machine(&hub, "cl", 10);
    let later_ns = machine(&hub, "nw", 12);
    let key = key(&server, &["--reusable"]);
    let router = Client::start_in(&router_ns, &version, "router");
    let laptop = Client::start_in(&laptop_ns, &version, "laptop");
    let advertise = format!("--advertise-routes={LAN}");
    assert_logged_in(&router, &router.up_with(&url, &key, &[&advertise]));
    assert_logged_in(&laptop, &laptop.up_with(&url, &key, &["--accept-routes"]));
    let router_id = node_id(&server, "router");
    wait_until("the router's route is listed", WAIT, || {
        server.cli(&["routes", "list"]).ok().stdout.contains(LAN)
    });

    // The browser runs on the switch, where the server listens.
    let browser = WebDriver::start_in(&hub.ns);

    // Sign-in with a one-time link. Opening it only shows the form (a link
    // preview signs nobody in); posting it does.
    let made = server.cli(&["admin", "login-link", "-o", "json"]).ok();
    let made: Value = serde_json::from_str(&made.stdout).unwrap();
    let link = made["url"].as_str().unwrap_or_default().to_owned();
    assert!(link.starts_with(&format!("{url}/admin/login/")), "{made}");
    browser.navigate(&link);
    browser.find("form#sign-in");
    let cookies = browser.cookies();
    assert!(
        cookies.iter().all(|c| c["name"] != "headway_session"),
        "opening the link signed in: {cookies:?}"
    );
    browser.submit("form#sign-in");
    browser.wait_until("signed in on the overview", WAIT, |b| {
        path_of(&b.current_url(), &url) == "/admin"
    });
    let cookies = browser.cookies();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "headway_session")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"))
        .clone();
    assert_eq!(
        (&session["httpOnly"], &session["sameSite"]),
        (&json!(true), &json!("Strict")),
        "{session}"
    );
    let cookie = format!(
        "headway_session={}",
        session["value"].as_str().unwrap_or_default()
    );

    // The same link again, by someone without that session: refused, and no
    // session comes of it.
    browser.delete_cookies();
    browser.navigate(&link);
    if browser.try_find("form#sign-in").is_some() {
        browser.submit("form#sign-in");
    }
    browser.wait_for(".error", WAIT);
    assert_eq!(page_status(&browser), 403, "{}", browser.page_source());
    browser.navigate(&format!("{url}/admin"));
    assert!(
        browser
            .current_url()
            .starts_with(&format!("{url}/admin/login")),
        "a used link signed someone in: {}",
        browser.current_url()
    );
    // Back to the admin's own session.
    browser.add_cookie(json!({
        "name": "headway_session",
        "value": session["value"],
        "path": session["path"],
        "httpOnly": true,
        "sameSite": "Strict",
    }));
    browser.navigate(&format!("{url}/admin"));
    assert_eq!(path_of(&browser.current_url(), &url), "/admin");

    // The overview: the route waits for approval; the clients' version shows.
    let waiting = browser.text("#waiting-routes");
    assert!(waiting.contains(LAN), "{waiting}");
    let versions_seen = browser.text("#versions");
    assert!(versions_seen.contains(bare_version), "{versions_seen}");

    // The machines list: one row per node; the search narrows it.
    browser.navigate(&format!("{url}/admin/machines"));
    let mut listed: Vec<String> = browser
        .find_all("#machines tr[data-node-id]")
        .iter()
        .filter_map(|row| browser.attribute(row, "data-node-id"))
        .collect();
    listed.sort();
    let mut ids = [router_id.clone(), node_id(&server, "laptop")];
    ids.sort();
    assert_eq!(listed, ids);
    let search = "form#search input[name=\"q\"]";
    browser.fill(search, "laptop");
    browser.press_enter(search);
    browser.wait_until("the search shows the laptop alone", WAIT, |b| {
        b.current_url().contains("q=laptop") && {
            b.find_all("#machines tr[data-node-id]").len() == 1
                && b.text("#machines tr[data-node-id]").contains("laptop")
        }
    });

    // The router's page, reached from the list.
    browser.navigate(&format!("{url}/admin/machines"));
    let link_to_router = browser.find(&format!(
        "#machines a[href=\"/admin/machines/{router_id}\"]"
    ));
    browser.click(&link_to_router);
    browser.wait_for("form#routes", WAIT);
    assert_eq!(
        path_of(&browser.current_url(), &url),
        format!("/admin/machines/{router_id}")
    );
    let details = browser.text("#details");
    assert!(
        details.contains(&router.ipv4()) && details.contains(bare_version),
        "{details}"
    );

    // Approving the route in the browser: the laptop reaches the LAN through it.
    let checkbox = format!("form#routes input[name=\"route\"][value=\"{LAN}\"]");
    let route_row = format!("#route-list tr[data-route=\"{LAN}\"]");
    assert_eq!(browser.property(&checkbox, "checked"), json!(false));
    let row = browser.text(&route_row);
    assert!(row.contains("waiting"), "{row}");
    assert!(
        !laptop_ns.ping(LAN_HOST),
        "the LAN is reachable before approval"
    );
    browser.click_on(&checkbox);
    browser.submit("form#routes");
    browser.wait_until("the route shows as approved", WAIT, |b| {
        b.try_find(&route_row).is_some() && {
            let row = b.text(&route_row);
            row.contains("approved") && !row.contains("waiting")
        }
    });
    assert_eq!(browser.property(&checkbox, "checked"), json!(true));
    laptop_ns
        .ping_until(LAN_HOST, Duration::from_secs(30))
        .unwrap_or_else(|| {
            panic!(
                "the LAN is not reachable after approval\n{}",
                laptop.log_tail()
            )
        });
    assert!(crosses_the_router(&laptop_ns, target, &seen));

    // Renaming it: its peer knows it by the new name.
    browser.fill("form#rename input[name=\"name\"]", "gateway");
    browser.submit("form#rename");
    laptop.wait_status("the router under its new name", WAIT, |s| {
        has_peer(s, "DNSName", |n| n.starts_with("gateway."))
    });
    assert_eq!(node_id(&server, "gateway"), router_id);
    browser.navigate(&format!("{url}/admin/machines/{router_id}"));
    screenshots(&browser, &shots, "machine");

    // A user made in the browser.
    browser.navigate(&format!("{url}/admin/users"));
    browser.fill("form#create-user input[name=\"name\"]", "guest");
    browser.fill("form#create-user input[name=\"display_name\"]", "Guest");
    browser.fill(
        "form#create-user input[name=\"email\"]",
        "guest@example.com",
    );
    browser.submit("form#create-user");
    browser.wait_for("#users tr[data-user=\"guest\"]", WAIT);
    let listed = users(&server);
    assert!(
        listed
            .iter()
            .any(|u| u["name"] == "guest" && u["email"] == "guest@example.com"),
        "{listed:?}"
    );
    screenshots(&browser, &shots, "users");

    // A pre-auth key of that user: shown once, and a new machine joins with it.
    browser.navigate(&format!("{url}/admin/keys"));
    let expiration = "form#create-preauth-key input[name=\"expiration\"]";
    assert_eq!(browser.property(expiration, "value"), json!("1h"));
    browser.select("form#create-preauth-key select[name=\"user\"]", "guest");
    browser.submit("form#create-preauth-key");
    browser.wait_for("#new-secret", WAIT);
    let shown = Instant::now();
    let secret = browser.text("#new-secret").trim().to_owned();
    assert!(secret.starts_with("hskey-auth-"), "{secret}");
    screenshots(&browser, &shots, "keys");
    let later = Client::start_in(&later_ns, &version, "later");
    assert_logged_in(&later, &later.up_with(&url, &secret, &[]));
    let nodes = server.nodes();
    assert!(
        nodes
            .iter()
            .any(|n| n["given_name"] == "later" && n["user"]["name"] == "guest"),
        "{nodes:?}"
    );
    laptop.wait_status("the new machine", WAIT, |s| {
        has_peer(s, "HostName", |n| n == "later")
    });
    // Still on screen for whoever is copying it: the page does not refresh it away.
    std::thread::sleep(LIVE_POLL.saturating_sub(shown.elapsed()));
    assert_eq!(browser.text("#new-secret").trim(), secret);
    browser.navigate(&format!("{url}/admin/keys"));
    assert!(
        !browser.page_source().contains(&secret),
        "the key is shown again"
    );

    // A policy that does not parse: the error names its line, the text stays in
    // the form, and nothing is saved.
    let textarea = "form#policy textarea[name=\"policy\"]";
    let save = "form#policy button[name=\"action\"][value=\"save\"]";
    let saved_before = server.cli(&["policy", "get"]);
    browser.navigate(&format!("{url}/admin/policy"));
    browser.fill(textarea, BROKEN_POLICY);
    browser.click_on(save);
    browser.wait_for("#policy-error", WAIT);
    let shown = Instant::now();
    assert_eq!(page_status(&browser), 422);
    let error = browser.text("#policy-error");
    assert!(names_line_3(&error), "{error}");
    assert_eq!(browser.property(textarea, "value"), json!(BROKEN_POLICY));
    let saved_after = server.cli(&["policy", "get"]);
    assert_eq!(
        (saved_after.code, saved_after.stdout),
        (saved_before.code, saved_before.stdout),
        "a policy that does not parse changed the saved one"
    );
    screenshots(&browser, &shots, "policy");
    // The error and the text stay while the admin fixes it.
    std::thread::sleep(LIVE_POLL.saturating_sub(shown.elapsed()));
    assert!(names_line_3(&browser.text("#policy-error")));
    assert_eq!(browser.property(textarea, "value"), json!(BROKEN_POLICY));

    // A valid one is saved and in force at once: the guest's machine leaves the
    // laptop's peers, and the LAN stays reachable.
    browser.fill(textarea, GUESTS_APART);
    browser.click_on(save);
    browser.wait_until("the policy is saved", WAIT, |b| {
        b.try_find(".flash").is_some() && b.text(".flash").to_lowercase().contains("saved")
    });
    let saved = server.cli(&["policy", "get"]).ok().stdout;
    assert_eq!(saved.replace("\r\n", "\n").trim(), GUESTS_APART);
    laptop.wait_status("the guest's machine gone from the peers", WAIT, |s| {
        !has_peer(s, "HostName", |n| n == "later")
    });
    wait_until("the LAN is still reachable", WAIT, || {
        crosses_the_router(&laptop_ns, target, &seen)
    });

    // What clients get for DNS, and the relays.
    browser.navigate(&format!("{url}/admin/network"));
    let dns = browser.text("#dns");
    assert!(dns.contains("tailnet.test"), "{dns}");
    browser.find("#derp");
    screenshots(&browser, &shots, "network");

    // The list and the overview, with everything in place.
    browser.navigate(&format!("{url}/admin/machines"));
    assert_eq!(browser.find_all("#machines tr[data-node-id]").len(), 3);
    screenshots(&browser, &shots, "machines");
    // A change made elsewhere (the CLI) shows on the open page without a reload.
    let laptop_id = node_id(&server, "laptop");
    server
        .cli(&["nodes", "rename", "-i", &laptop_id, "workstation"])
        .ok();
    let laptop_row = format!("#machines tr[data-node-id=\"{laptop_id}\"]");
    browser.wait_until("the list shows the CLI's rename by itself", WAIT, |b| {
        // `text` finds the row afresh: the refresh replaces the elements it swaps.
        b.try_find(&laptop_row).is_some() && b.text(&laptop_row).contains("workstation")
    });
    assert_eq!(path_of(&browser.current_url(), &url), "/admin/machines");
    server
        .cli(&["nodes", "rename", "-i", &laptop_id, "laptop"])
        .ok();
    browser.navigate(&format!("{url}/admin"));
    let online = server
        .nodes()
        .iter()
        .filter(|n| n["online"] == true)
        .count();
    assert_eq!(online, 3);
    assert_eq!(browser.text("#online-count").trim(), online.to_string());
    let waiting = browser.text("#waiting-routes");
    assert!(!waiting.contains(LAN), "{waiting}");
    screenshots(&browser, &shots, "overview");

    // A script with the admin's cookie but not the page's CSRF token is refused
    // and changes nothing; with the token, the same request is the admin's own.
    browser.navigate(&format!("{url}/admin/users"));
    let csrf = browser.property("form#create-user input[name=\"csrf\"]", "value");
    let csrf = percent_encoding::utf8_percent_encode(
        csrf.as_str().unwrap_or_default(),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    // Valid names, so only the token can be what stops them.
    for body in ["name=mallory&csrf=forged", "name=mallory"] {
        let (status, head) = post_form(&hub.ns, &addr, "/admin/users", Some(&cookie), body);
        assert_eq!(status, 403, "{body}: {head}");
    }
    assert!(
        !user_exists(&server, "mallory"),
        "a forged request made a user"
    );
    let (status, head) = post_form(
        &hub.ns,
        &addr,
        "/admin/users",
        Some(&cookie),
        &format!("name=yvonne&csrf={csrf}"),
    );
    assert_eq!(status, 303, "{head}");
    assert!(location(&head).contains("ok="), "{head}");
    assert!(user_exists(&server, "yvonne"));

    // Without a session every page and form leads to the sign-in.
    let machine_page = format!("/admin/machines/{router_id}");
    let pages = [
        "/admin",
        "/admin/machines",
        machine_page.as_str(),
        "/admin/users",
        "/admin/keys",
        "/admin/policy",
        "/admin/network",
    ];
    for path in pages {
        let (status, head) = get(&hub.ns, &addr, path, None);
        assert!(
            status == 303 && location(&head).starts_with("/admin/login"),
            "GET {path} without a session: {head}"
        );
        let (status, _) = get(&hub.ns, &addr, path, Some(&cookie));
        assert_eq!(status, 200, "GET {path} with the session");
    }
    let (status, head) = post_form(&hub.ns, &addr, "/admin/users", None, "name=z&csrf=forged");
    assert!(
        status == 303 && location(&head).starts_with("/admin/login"),
        "POST without a session: {head}"
    );
    assert!(!user_exists(&server, "z"));

    // Signing out ends the session on the server, not just in this browser.
    browser.submit("form#logout");
    // The click only starts the sign-out: wait for its page before leaving it.
    browser.wait_until("the signed-out page", WAIT, |b| {
        b.current_url().ends_with("/admin/logout") && b.try_find(".flash").is_some()
    });
    browser.navigate(&format!("{url}/admin"));
    assert!(
        browser
            .current_url()
            .starts_with(&format!("{url}/admin/login")),
        "{}",
        browser.current_url()
    );
    let (status, head) = get(&hub.ns, &addr, "/admin", Some(&cookie));
    assert_eq!(status, 303, "the session outlived its sign-out: {head}");
    drop((browser, later, laptop, router, lan));
}
