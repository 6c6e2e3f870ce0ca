//! The test OpenID provider checked on its own, without headway: people sign in
//! through `Browser`, codes become tokens whose signatures verify, claims land
//! where the provider was told, PKCE works, the tamper hooks spoil what they
//! promise, and a restart keeps the keys. headway's own OIDC tests replace this.

use crate::support::oidc::{
    Browser, Claims, Client, Page, Person, Provider, Tamper, jwt_parts, jwt_signature_verifies,
};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

/// The client's redirect URI: a loopback listener that answers 200 and hands
/// over the request line of every call it gets.
struct Callback {
    url: String,
    requests: Receiver<String>,
}

impl Callback {
    fn start() -> Callback {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/callback", listener.local_addr().unwrap());
        let (sender, requests) = channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\ncallback\n",
                );
                if sender.send(line.trim_end().to_owned()).is_err() {
                    return;
                }
            }
        });
        Callback { url, requests }
    }
}

fn random() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).unwrap();
    hex::encode(bytes)
}

/// One authorization request of `client`, with PKCE (S256) when asked.
struct Flow {
    url: String,
    client: Client,
    state: String,
    nonce: String,
    verifier: Option<String>,
}

impl Flow {
    fn new(provider: &Provider, client: &Client, pkce: bool) -> Flow {
        let (state, nonce) = (random(), random());
        let verifier = pkce.then(random);
        let endpoint = provider.discovery()["authorization_endpoint"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut url = url::Url::parse(&endpoint).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", &client.redirect_uris[0])
            .append_pair("scope", "openid email profile groups")
            .append_pair("state", &state)
            .append_pair("nonce", &nonce);
        if let Some(verifier) = &verifier {
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(verifier.as_bytes()));
            url.query_pairs_mut()
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
        }
        Flow {
            url: url.into(),
            client: client.clone(),
            state,
            nonce,
            verifier,
        }
    }

    /// The code the browser brought back to the callback, with this flow's state.
    fn code(&self, page: &Page, callback: &Callback, issuer: &str) -> String {
        assert_eq!(page.status, 200, "{}: {}", page.url, page.body);
        assert!(
            page.url.as_str().starts_with(&self.client.redirect_uris[0]),
            "not back at the client: {} {}",
            page.url,
            page.text()
        );
        assert_eq!(page.query("state").as_deref(), Some(self.state.as_str()));
        assert_eq!(page.query("iss").as_deref(), Some(issuer));
        let code = page.query("code").expect("a code");
        let request = callback
            .requests
            .recv_timeout(Duration::from_secs(5))
            .unwrap();
        assert!(request.starts_with("GET /callback?"), "{request}");
        assert!(request.contains(&format!("code={code}")), "{request}");
        assert!(
            request.contains(&format!("state={}", self.state)),
            "{request}"
        );
        code
    }

    /// Exchanges `code` at the token endpoint as the flow's client: the tokens.
    fn exchange(&self, provider: &Provider, code: &str) -> Value {
        let mut fields = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.client.redirect_uris[0].as_str()),
        ];
        if let Some(verifier) = &self.verifier {
            fields.push(("code_verifier", verifier));
        }
        let (status, tokens) = provider.token(&self.client, &fields);
        assert_eq!(status, 200, "{tokens}");
        tokens
    }
}

/// Signs `person` in for `client` and returns the tokens and the flow's nonce.
/// Without a person the browser's session must do: no login form on the way.
fn sign_in(
    provider: &Provider,
    browser: &mut Browser,
    callback: &Callback,
    client: &Client,
    person: Option<&Person>,
) -> (Value, String) {
    let flow = Flow::new(
        provider,
        client,
        client.token_endpoint_auth_method == "none",
    );
    let page = match person {
        Some(person) => browser.sign_in(&flow.url, &person.login, &person.password),
        None => browser.get(&flow.url),
    };
    let code = flow.code(&page, callback, &provider.issuer());
    (flow.exchange(provider, &code), flow.nonce)
}

fn id_token(tokens: &Value) -> &str {
    tokens["id_token"].as_str().expect("an ID token")
}

#[test]
fn the_test_provider_signs_people_in_and_its_tokens_verify() {
    let callback = Callback::start();
    let dir = tempfile::tempdir().unwrap();
    let web = Client::confidential("headway", "secret", &callback.url);
    let es256 = Client::confidential("headway-es", "secret", &callback.url).id_token_alg("ES256");
    let cli = Client::public("cli", &callback.url);
    let alice = Person::new("alice")
        .email("alice@example.com")
        .name("Alice Liddell")
        .picture("http://127.0.0.1/alice.png")
        .groups(&["engineering"]);
    let clients = [web.clone(), es256.clone(), cli.clone()];
    let mut provider = Provider::start(dir.path(), &clients, std::slice::from_ref(&alice));
    let issuer = provider.issuer();
    let discovery = provider.discovery();
    assert_eq!(discovery["issuer"], issuer);
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        json!(["S256"])
    );
    let jwks = provider.jwks();

    // A wrong password shows the form again; the right one lands on the callback
    // with a code that a wrong secret cannot redeem and the right one can.
    let mut browser = Browser::new();
    let flow = Flow::new(&provider, &web, false);
    let page = browser.sign_in(&flow.url, "alice", "wrong");
    assert!(page.is_login_form(), "{}", page.body);
    assert!(
        page.text().contains("Wrong login or password."),
        "{}",
        page.text()
    );
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = browser.submit(&page, &[("login", "alice"), ("password", &alice.password)]);
    let code = flow.code(&page, &callback, &issuer);
    let wrong_secret = Client::confidential("headway", "not-the-secret", &callback.url);
    let (status, answer) = provider.token(
        &wrong_secret,
        &[("grant_type", "authorization_code"), ("code", &code)],
    );
    assert_eq!(status, 401, "{answer}");
    assert_eq!(
        answer,
        json!({"error": "invalid_client", "error_description": "client authentication failed"})
    );
    let tokens = flow.exchange(&provider, &code);
    let (header, claims) = jwt_parts(id_token(&tokens));
    assert_eq!(header["alg"], "RS256");
    assert!(jwt_signature_verifies(id_token(&tokens), &jwks));
    assert_eq!(claims["iss"], issuer);
    assert_eq!(claims["aud"], "headway");
    assert_eq!(claims["sub"], "sub-alice");
    assert_eq!(claims["nonce"], flow.nonce);
    assert_eq!(claims["groups"], json!(["engineering"]));
    assert_eq!(claims["email"], "alice@example.com");
    let access_token = tokens["access_token"].as_str().unwrap();
    let (status, userinfo) = provider.userinfo(access_token);
    assert_eq!(status, 200, "{userinfo}");
    assert_eq!(
        userinfo,
        json!({
            "sub": "sub-alice", "email": "alice@example.com", "email_verified": true,
            "name": "Alice Liddell", "preferred_username": "alice",
            "picture": "http://127.0.0.1/alice.png", "groups": ["engineering"],
        })
    );

    // ES256 for the client that asks for it. Alice's session spares her the login
    // form from now on, for clients she has not used yet too.
    let (tokens, _) = sign_in(&provider, &mut browser, &callback, &es256, None);
    assert_eq!(jwt_parts(id_token(&tokens)).0["alg"], "ES256");
    assert!(jwt_signature_verifies(id_token(&tokens), &jwks));

    // PKCE: the public client must use it, with S256; `plain` is refused.
    let (tokens, nonce) = sign_in(&provider, &mut browser, &callback, &cli, None);
    assert_eq!(jwt_parts(id_token(&tokens)).1["nonce"], json!(nonce));
    let mut plain = url::Url::parse(&Flow::new(&provider, &cli, false).url).unwrap();
    plain
        .query_pairs_mut()
        .append_pair("code_challenge", &random())
        .append_pair("code_challenge_method", "plain");
    let page = browser.get(plain.as_str());
    assert_eq!(
        page.query("error").as_deref(),
        Some("invalid_request"),
        "{}",
        page.url
    );
    assert_eq!(
        page.query("error_description").as_deref(),
        Some("not supported value of code_challenge_method")
    );
    callback
        .requests
        .recv_timeout(Duration::from_secs(5))
        .unwrap();

    // The tamper hooks spoil exactly what they name.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let tampers = [
        Tamper::BadSignature,
        Tamper::WrongAudience,
        Tamper::Expired,
        Tamper::WrongIssuer,
    ];
    for tamper in tampers {
        provider.tamper(tamper);
        let (tokens, _) = sign_in(&provider, &mut browser, &callback, &web, None);
        let token = id_token(&tokens);
        let claims = jwt_parts(token).1;
        let spoiled = [
            !jwt_signature_verifies(token, &jwks),
            claims["aud"] != "headway",
            claims["exp"].as_u64().unwrap() <= now,
            claims["iss"] != issuer,
        ];
        assert_eq!(
            spoiled,
            tampers.map(|t| t == tamper),
            "{tamper:?}: {claims}"
        );
    }
    provider.tamper(Tamper::Off);

    // A restart keeps the port and the keys; people are read afresh.
    let before = id_token(&tokens).to_owned();
    provider.stop();
    provider.start_again();
    assert_eq!(provider.issuer(), issuer);
    assert_eq!(provider.jwks(), jwks);
    assert!(jwt_signature_verifies(&before, &provider.jwks()));
    provider.set_people(&[alice.clone().groups(&["ops"]).email_verified(false)]);
    let (tokens, _) = sign_in(
        &provider,
        &mut Browser::new(),
        &callback,
        &web,
        Some(&alice),
    );
    assert_eq!(jwt_parts(id_token(&tokens)).1["groups"], json!(["ops"]));
    let (_, userinfo) = provider.userinfo(tokens["access_token"].as_str().unwrap());
    assert_eq!(
        (&userinfo["groups"], &userinfo["email_verified"]),
        (&json!(["ops"]), &json!(false))
    );
    drop(provider);

    // Userinfo only: the ID token carries no profile, email or groups claims.
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::start_with(
        dir.path(),
        &clients,
        std::slice::from_ref(&alice),
        Claims::UserinfoOnly,
    );
    let (tokens, _) = sign_in(
        &provider,
        &mut Browser::new(),
        &callback,
        &web,
        Some(&alice),
    );
    let claims = jwt_parts(id_token(&tokens)).1;
    for claim in [
        "email",
        "email_verified",
        "name",
        "preferred_username",
        "picture",
        "groups",
    ] {
        assert!(claims.get(claim).is_none(), "{claim} in {claims}");
    }
    let (_, userinfo) = provider.userinfo(tokens["access_token"].as_str().unwrap());
    assert_eq!(userinfo["groups"], json!(["engineering"]));
}
