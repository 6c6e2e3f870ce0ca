//! The web UI in process: no route without a session, CSRF and origin checks,
//! one-time links, sign-out, and the pages' changes reaching `state`.

use super::*;
use crate::config::PolicyMode;
use crate::db::Db;
use crate::state::{PolicySource, Settings};
use axum::http::Request as HttpRequest;
use tower::ServiceExt;

struct Rig {
    app: Router,
    state: Arc<State>,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&crate::config::Database::Sqlite {
        path: dir.path().join("db.sqlite"),
        write_ahead_log: true,
        wal_autocheckpoint: 1000,
    })
    .await
    .unwrap();
    let settings = Settings {
        policy: PolicySource {
            mode: PolicyMode::Database,
            path: None,
        },
        ..Settings::for_test()
    };
    let state = Arc::new(State::load(db, settings).await.unwrap());
    let ui = Ui::new(
        state.clone(),
        Arc::new(MapSettings::default()),
        DerpMaps::fixed(crate::tailcfg::DERPMap::default()),
        false,
    );
    Rig {
        app: router(ui),
        state,
        _dir: dir,
    }
}

/// An answer: status, `location`, body.
struct Answer {
    status: StatusCode,
    location: String,
    body: String,
    cookie: Option<String>,
}

impl Rig {
    async fn send(&self, request: HttpRequest<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let header_text = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let location = header_text(header::LOCATION).unwrap_or_default();
        let cookie = header_text(header::SET_COOKIE);
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .unwrap();
        Answer {
            status,
            location,
            body: String::from_utf8_lossy(&body).into_owned(),
            cookie,
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut request = HttpRequest::get(path);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, format!("{COOKIE}={cookie}"));
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: &str) -> Answer {
        let mut request = HttpRequest::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, format!("{COOKIE}={cookie}"));
        }
        self.send(request.body(Body::from(form.to_owned())).unwrap())
            .await
    }

    /// Signs in with a fresh link: the session cookie and its CSRF token.
    async fn sign_in(&self) -> (String, String) {
        let link = self.state.create_login_link(None).await.unwrap();
        let answer = self
            .post(&format!("/admin/login/{}", link.secret), None, "")
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.location, "/admin");
        let set = answer.cookie.expect("a session cookie");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set
            .split(';')
            .next()
            .and_then(|pair| pair.split_once('='))
            .map(|(_, v)| v.to_owned())
            .unwrap();
        let session = self.state.admin_session(&cookie, true).await.unwrap();
        (cookie, session.csrf)
    }
}

/// Every path `router` declares, its parameters filled in.
fn declared_paths() -> Vec<String> {
    let source = include_str!("mod.rs");
    let mut paths: Vec<String> = source
        .match_indices("\"/admin")
        .map(|(at, _)| {
            let rest = &source[at + 1..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .filter(|p| !p.contains('?'))
        .map(|p| {
            p.replace("{id}", "1")
                .replace("{secret}", "hskey-weblink-x-y")
                .replace("{*rest}", "anything/else")
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

#[tokio::test]
async fn no_page_or_change_is_reachable_without_a_session() {
    let rig = rig().await;
    let open = [
        "/admin/login",
        "/admin/login/hskey-weblink-x-y",
        "/admin/assets/style.css",
        "/admin/assets/live.js",
    ];
    let paths = declared_paths();
    assert!(paths.len() > 20, "{paths:?}");
    for path in paths.iter().filter(|p| !open.contains(&p.as_str())) {
        let answer = rig.get(path, None).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "GET {path}");
        assert!(
            answer.location.starts_with("/admin/login"),
            "GET {path}: {}",
            answer.location
        );
        let answer = rig.post(path, None, "csrf=x&name=intruder").await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "POST {path}");
        assert!(answer.location.starts_with("/admin/login"), "POST {path}");
        // A cookie that is no session is no better.
        let answer = rig
            .get(path, Some("hskey-websession-abcdefghijkl-zzz"))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::SEE_OTHER,
            "GET {path} (bad cookie)"
        );
    }
    assert!(
        rig.state
            .list_users(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    // The page asked for is remembered.
    let answer = rig.get("/admin/machines?q=web", None).await;
    assert_eq!(
        answer.location,
        "/admin/login?next=%2Fadmin%2Fmachines%3Fq%3Dweb"
    );
}

#[tokio::test]
async fn a_forged_or_missing_csrf_token_changes_nothing() {
    let rig = rig().await;
    let (cookie, csrf) = rig.sign_in().await;
    for form in [
        "name=forged&csrf=forged",
        "name=forged",
        &format!("name=forged&csrf={csrf}x"),
    ] {
        let answer = rig.post("/admin/users", Some(&cookie), form).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{form}");
        assert!(answer.body.contains("CSRF"), "{}", answer.body);
    }
    assert!(
        rig.state
            .list_users(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    // Another site's page may not post, even with the right token.
    let request = HttpRequest::post("/admin/users")
        .header(header::COOKIE, format!("{COOKIE}={cookie}"))
        .header(header::ORIGIN, "https://evil.example")
        .header(header::HOST, "127.0.0.1:1")
        .body(Body::from(format!("name=forged&csrf={csrf}")))
        .unwrap();
    assert_eq!(rig.send(request).await.status, StatusCode::FORBIDDEN);
    // The real form works.
    let request = HttpRequest::post("/admin/users")
        .header(header::COOKIE, format!("{COOKIE}={cookie}"))
        .header(header::ORIGIN, "http://127.0.0.1:1")
        .body(Body::from(format!(
            "name=alice&display_name=Alice&csrf={csrf}"
        )))
        .unwrap();
    let answer = rig.send(request).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location, "/admin/users?ok=User+alice+created");
    let users = rig.state.list_users(&Default::default()).await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].display_name, "Alice");
    let page = rig.get(&answer.location, Some(&cookie)).await;
    assert!(page.body.contains("data-user=\"alice\""), "{}", page.body);
    assert!(page.body.contains("User alice created"));
}

#[tokio::test]
async fn a_sign_in_link_works_once_and_sign_out_ends_the_session() {
    let rig = rig().await;
    let link = rig.state.create_login_link(None).await.unwrap();
    let path = format!("/admin/login/{}", link.secret);
    // Opening the link shows a button; it does not use the link up.
    let answer = rig.get(&path, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.contains("id=\"sign-in\""));
    let first = rig.post(&path, None, "").await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    let again = rig.post(&path, None, "").await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert!(
        again.body.contains("used already, has expired"),
        "{}",
        again.body
    );
    assert!(again.cookie.is_none());
    // A made-up link of the right shape.
    let forged = rig
        .post("/admin/login/hskey-weblink-abcdefghijkl-nope", None, "")
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let (cookie, csrf) = rig.sign_in().await;
    assert_eq!(
        rig.get("/admin", Some(&cookie)).await.status,
        StatusCode::OK
    );
    let out = rig
        .post("/admin/logout", Some(&cookie), &format!("csrf={csrf}"))
        .await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(out.cookie.unwrap().contains("Max-Age=0"));
    let after = rig.get("/admin", Some(&cookie)).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
}

#[test]
fn a_session_ends_when_idle_or_at_its_hard_end() {
    use crate::state::admin::{SESSION_IDLE, SESSION_LIFETIME, session_over};
    let now = chrono::Utc::now();
    let session = AdminSession {
        prefix: "p".into(),
        kind: crate::types::AdminSessionKind::Session,
        hash: String::new(),
        csrf: String::new(),
        who: "login link".into(),
        created_at: now,
        last_used_at: now,
        expires_at: now + chrono::TimeDelta::from_std(SESSION_LIFETIME).unwrap(),
    };
    assert!(!session_over(&session, now));
    let idle = chrono::TimeDelta::from_std(SESSION_IDLE).unwrap();
    assert!(session_over(&session, now + idle));
    let busy = AdminSession {
        last_used_at: session.expires_at - chrono::TimeDelta::minutes(1),
        ..session.clone()
    };
    assert!(!session_over(&busy, busy.last_used_at));
    assert!(session_over(&busy, busy.expires_at));
}

#[tokio::test]
async fn a_policy_with_an_error_is_shown_and_not_saved() {
    let rig = rig().await;
    let (cookie, csrf) = rig.sign_in().await;
    let good = r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}"#;
    let form = |text: &str, action: &str| {
        format!("csrf={csrf}&action={action}&policy={}", super::encode(text))
    };
    let saved = rig
        .post("/admin/policy", Some(&cookie), &form(good, "save"))
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    assert!(saved.body.contains("Policy saved"), "{}", saved.body);
    let broken = "{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]\n  ]\n}";
    let answer = rig
        .post("/admin/policy", Some(&cookie), &form(broken, "save"))
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer.body.contains("id=\"policy-error\""),
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains("policy:4:3: expected"),
        "{}",
        answer.body
    );
    // The line is shown with a mark under the place.
    assert!(
        answer.body.contains("id=\"policy-error-context\""),
        "{}",
        answer.body
    );
    // The editor keeps what was typed; the policy in force is the good one.
    assert!(
        answer
            .body
            .contains("&quot;dst&quot;: [&quot;*:*&quot;]\n  ]"),
        "{}",
        answer.body
    );
    assert_eq!(rig.state.get_policy().await.unwrap().0, good);
    // Check alone never saves.
    let other = r#"{"acls":[]}"#;
    let checked = rig
        .post("/admin/policy", Some(&cookie), &form(other, "check"))
        .await;
    assert_eq!(checked.status, StatusCode::OK);
    assert!(checked.body.contains("valid (not saved)"));
    assert_eq!(rig.state.get_policy().await.unwrap().0, good);
}

#[tokio::test]
async fn a_new_pre_auth_key_is_shown_once_and_works() {
    let rig = rig().await;
    let (cookie, csrf) = rig.sign_in().await;
    rig.post(
        "/admin/users",
        Some(&cookie),
        &format!("csrf={csrf}&name=bob"),
    )
    .await;
    let answer = rig
        .post(
            "/admin/keys/preauth",
            Some(&cookie),
            &format!("csrf={csrf}&user=bob&reusable=on&expiration=2h"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let start = answer.body.find("id=\"new-secret\">").unwrap() + "id=\"new-secret\">".len();
    let key = &answer.body[start..start + answer.body[start..].find('<').unwrap()];
    let found = rig.state.authenticate_preauth_key(key).await.unwrap();
    assert!(found.reusable);
    // The listing shows it masked only.
    let page = rig.get("/admin/keys", Some(&cookie)).await;
    assert!(!page.body.contains(key));
    assert!(
        page.body
            .contains(&format!("hskey-auth-{}-***", found.prefix))
    );
    // A bad expiration is said, and nothing is made.
    let bad = rig
        .post(
            "/admin/keys/preauth",
            Some(&cookie),
            &format!("csrf={csrf}&user=bob&expiration=soon"),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.body.contains("expiration &quot;soon&quot;"),
        "{}",
        bad.body
    );
    assert_eq!(rig.state.list_preauth_keys().await.unwrap().len(), 1);
}
