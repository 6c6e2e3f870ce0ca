//! A real OpenID provider for the OIDC tests, and a browser to sign in with.
//!
//! [`Provider`] runs oidc-provider 9 on Node.js (`tests/oidc-provider/provider.mjs`,
//! installed by `scripts/install-test-deps`) on loopback, with the clients and
//! people a test names; it keeps its signing keys across restarts and can be told
//! to spoil the ID tokens it issues. [`Browser`] is a cookie-keeping HTTP client
//! that follows redirects and submits forms as a person's browser would. The ID
//! token helpers decode and verify what the provider signs. Knows nothing about
//! headway: a test points headway at [`Provider::issuer`].

use super::tailscale::tools_dir;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};
use url::Url;

/// How long a request or the provider's start may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A person the provider can sign in, as written to its users file.
#[derive(Clone, Debug, Serialize)]
pub struct Person {
    /// The stable subject identifier (`sub`), deliberately not the login.
    pub sub: String,
    /// What the person types into the login form.
    pub login: String,
    pub password: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    /// `None`: no `groups` claim at all (not the same as an empty list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

impl Person {
    /// `login` with `sub` `sub-<login>`, password `<login>-password`,
    /// `preferred_username` `<login>`, and no email, name, picture or groups.
    pub fn new(login: &str) -> Person {
        Person {
            sub: format!("sub-{login}"),
            login: login.to_owned(),
            password: format!("{login}-password"),
            email: None,
            email_verified: None,
            name: None,
            preferred_username: Some(login.to_owned()),
            picture: None,
            groups: None,
        }
    }

    /// The address, verified (see [`Person::email_verified`]).
    pub fn email(mut self, email: &str) -> Person {
        self.email = Some(email.to_owned());
        self.email_verified.get_or_insert(true);
        self
    }

    pub fn email_verified(mut self, verified: bool) -> Person {
        self.email_verified = Some(verified);
        self
    }

    pub fn name(mut self, name: &str) -> Person {
        self.name = Some(name.to_owned());
        self
    }

    pub fn picture(mut self, url: &str) -> Person {
        self.picture = Some(url.to_owned());
        self
    }

    pub fn groups(mut self, groups: &[&str]) -> Person {
        self.groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
        self
    }
}

/// A client (relying party) registered with the provider.
#[derive(Clone, Debug, Serialize)]
pub struct Client {
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub redirect_uris: Vec<String>,
    /// `client_secret_basic`, `client_secret_post` or `none` (public, PKCE required).
    pub token_endpoint_auth_method: String,
    /// `RS256` (the provider's default) or `ES256`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token_signed_response_alg: Option<String>,
}

impl Client {
    /// A client with a secret, sent with HTTP Basic authentication.
    pub fn confidential(client_id: &str, secret: &str, redirect_uri: &str) -> Client {
        Client {
            client_id: client_id.to_owned(),
            client_secret: Some(secret.to_owned()),
            redirect_uris: vec![redirect_uri.to_owned()],
            token_endpoint_auth_method: "client_secret_basic".to_owned(),
            id_token_signed_response_alg: None,
        }
    }

    pub fn id_token_alg(mut self, alg: &str) -> Client {
        self.id_token_signed_response_alg = Some(alg.to_owned());
        self
    }
}

/// Where the claims of the `email`, `profile` and `groups` scopes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claims {
    /// In the ID token and from userinfo, as most providers do
    /// (oidc-provider's `conformIdTokenClaims: false`).
    InIdToken,
    /// From userinfo only, the specification's rule for the code flow and
    /// oidc-provider's default: the ID token carries just `sub`.
    UserinfoOnly,
}

/// What the token endpoint does to the ID tokens it issues from now on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Nothing: tokens as the provider made them.
    Off,
    /// The signature no longer matches (one byte flipped).
    BadSignature,
    /// `aud` names another client; re-signed with the provider's key.
    WrongAudience,
    /// `exp` an hour ago; re-signed with the provider's key.
    Expired,
    /// `iss` is not the issuer; re-signed with the provider's key.
    WrongIssuer,
}

impl Tamper {
    fn as_str(self) -> &'static str {
        match self {
            Tamper::Off => "none",
            Tamper::BadSignature => "bad-signature",
            Tamper::WrongAudience => "wrong-audience",
            Tamper::Expired => "expired",
            Tamper::WrongIssuer => "wrong-issuer",
        }
    }
}

/// oidc-provider on `http://127.0.0.1:PORT`, killed on drop. Its files (config,
/// users, keys, log) live in the directory it was started with.
pub struct Provider {
    dir: PathBuf,
    clients: Vec<Client>,
    claims: Claims,
    /// 0 until the first start has picked one; kept by [`Provider::start_again`].
    port: u16,
    child: Option<Child>,
}

/// The directory install-test-deps made for the current package-lock.json.
fn install_dir() -> PathBuf {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc-provider/package-lock.json");
    let hash = hex::encode(Sha256::digest(std::fs::read(&lock).unwrap()));
    let dir = tools_dir().join(format!("oidc-provider-{}", &hash[..16]));
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "oidc-provider is not installed in {}: run scripts/install-test-deps (it needs Node.js and npm)",
        dir.display()
    );
    dir
}

/// A copy of provider.mjs inside the install directory, so its imports resolve
/// to that node_modules (ES modules ignore NODE_PATH). Named after its content
/// and renamed into place, so tests running side by side never see half a file.
fn installed_script() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc-provider/provider.mjs");
    let text = std::fs::read(&source).unwrap();
    let dir = install_dir();
    let script = dir.join(format!(
        "provider-{}.mjs",
        &hex::encode(Sha256::digest(&text))[..16]
    ));
    if !script.exists() {
        let partial = tempfile::NamedTempFile::new_in(&dir).unwrap();
        std::fs::write(partial.path(), &text).unwrap();
        partial.persist(&script).unwrap();
    }
    script
}

fn write_json_atomically(path: &Path, value: &impl Serialize) {
    let dir = path.parent().unwrap();
    let partial = tempfile::NamedTempFile::new_in(dir).unwrap();
    std::fs::write(partial.path(), serde_json::to_vec_pretty(value).unwrap()).unwrap();
    partial.persist(path).unwrap();
}

impl Provider {
    /// Starts the provider with the claims in the ID token too ([`Claims::InIdToken`]).
    pub fn start(dir: &Path, clients: &[Client], people: &[Person]) -> Provider {
        Provider::start_with(dir, clients, people, Claims::InIdToken)
    }

    /// Starts the provider on a free port, keeping its files in `dir`.
    pub fn start_with(
        dir: &Path,
        clients: &[Client],
        people: &[Person],
        claims: Claims,
    ) -> Provider {
        let mut provider = Provider {
            dir: dir.to_owned(),
            clients: clients.to_vec(),
            claims,
            port: 0,
            child: None,
        };
        provider.set_people(people);
        provider.spawn();
        provider
    }

    /// `http://127.0.0.1:PORT`, the issuer and the base of every endpoint.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Replaces the people (atomically); the provider reads them on every lookup.
    pub fn set_people(&self, people: &[Person]) {
        write_json_atomically(&self.dir.join("oidc-people.json"), &people);
    }

    /// Kills the provider and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the provider again on the same port with the same signing keys.
    /// Sessions, codes, tokens and the [`Tamper`] setting lived in its memory
    /// and are gone; tokens issued before still verify.
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Changes what the token endpoint does to ID tokens from now on.
    pub fn tamper(&self, tamper: Tamper) {
        let url = format!("{}/test/tamper", self.issuer());
        let (status, body) = block_on(async move {
            let response = http_client()
                .post(&url)
                .body(tamper.as_str())
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {url}: {e}"));
            (response.status().as_u16(), response.text().await.unwrap())
        });
        assert_eq!(
            status,
            204,
            "tamper {tamper:?}: {body}\n{}",
            self.log_tail()
        );
    }

    /// What the provider wrote to stderr, over all its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("oidc-provider.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("oidc-provider's stderr (last lines):\n{tail}")
    }

    fn spawn(&mut self) {
        let script = installed_script();
        let config = serde_json::json!({
            "port": self.port,
            "state_dir": self.dir.join("oidc-state"),
            "users_file": self.dir.join("oidc-people.json"),
            "clients": self.clients,
            "id_token_claims": self.claims == Claims::InIdToken,
        });
        let config_path = self.dir.join("oidc-provider.json");
        write_json_atomically(&config_path, &config);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("oidc-provider.log"))
            .unwrap();
        let mut child = Command::new("node")
            .arg(&script)
            .arg(&config_path)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node (run scripts/install-test-deps): {e}"));
        // The script prints one `listening URL` line; the reader keeps draining
        // stdout afterwards so nothing the provider prints can block it.
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("listening ") {
                    let _ = sender.send(url.to_owned());
                }
            }
        });
        self.child = Some(child);
        let url = receiver.recv_timeout(TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "oidc-provider did not start (port {}):\n{}",
                self.port,
                self.log_tail()
            )
        });
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("oidc-provider printed a strange address: {url}"));
        assert!(
            self.port == 0 || self.port == port,
            "oidc-provider came back on {port}, not {}",
            self.port
        );
        self.port = port;
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client for loopback HTTP. Each call runs on its own short-lived runtime
/// (see [`block_on`]), so connections are never pooled across calls.
fn http_client() -> reqwest::Client {
    // reqwest is built without a crypto provider; installing ring fails only when
    // a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Runs `future` to completion on a fresh runtime in a thread of its own, so the
/// harness is as usable from `#[test]` as from inside `#[tokio::test]`.
fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(future)
            })
            .join()
            .unwrap()
    })
}

/// A page the browser ended on (status 0: the server could not be reached).
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    /// The final URL, after every redirect.
    pub url: Url,
    pub body: String,
    pub headers: HeaderMap,
}

impl Page {
    /// The body without tags, entities decoded and white space collapsed.
    pub fn text(&self) -> String {
        let mut text = String::new();
        let mut rest = self.body.as_str();
        while let Some(start) = rest.find('<') {
            text.push_str(&rest[..start]);
            text.push(' ');
            rest = rest[start..]
                .find('>')
                .map_or("", |end| &rest[start + end + 1..]);
        }
        text.push_str(rest);
        unescape(&text)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether the page holds a form with a password field: a login page.
    pub fn is_login_form(&self) -> bool {
        parse_form(&self.body).is_some_and(|form| form.inputs.iter().any(|i| i.kind == "password"))
    }
}

/// One cookie in the jar.
#[derive(Debug)]
struct Cookie {
    /// `host:port` that set it; host-only, as `Domain` is ignored (see [`Browser`]).
    origin: String,
    name: String,
    value: String,
    path: String,
    expires: Option<SystemTime>,
}

/// A person's browser: keeps cookies per `host:port`, follows redirects across
/// hosts, submits forms. Cookie rules are those oidc-provider and a server on
/// loopback need: `Path` (default: the directory of the request's path),
/// `Max-Age` before `Expires`, deletion by either. `Domain` is ignored (cookies
/// stay with the host and port that set them); `Secure` is ignored as browsers
/// do on loopback; `SameSite` never matters because every loopback address
/// here is `127.0.0.1`, one site whatever the port.
pub struct Browser {
    http: reqwest::Client,
    cookies: Vec<Cookie>,
}

impl Default for Browser {
    fn default() -> Browser {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: http_client(),
            cookies: Vec::new(),
        }
    }

    /// Opens `url` and follows redirects to the page they end on.
    pub fn get(&mut self, url: &str) -> Page {
        let url = Url::parse(url).unwrap_or_else(|e| panic!("not a URL: {url}: {e}"));
        self.navigate(reqwest::Method::GET, url, None)
    }

    /// Fills in the page's first form (its hidden and pre-filled fields kept,
    /// `fields` set), submits it and follows redirects.
    pub fn submit(&mut self, page: &Page, fields: &[(&str, &str)]) -> Page {
        let form = parse_form(&page.body)
            .unwrap_or_else(|| panic!("no form on {} ({}):\n{}", page.url, page.status, page.body));
        let mut values: Vec<(String, String)> = form
            .inputs
            .iter()
            .filter(|input| !fields.iter().any(|(name, _)| *name == input.name))
            .map(|input| (input.name.clone(), input.value.clone()))
            .collect();
        values.extend(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut encoded = url::form_urlencoded::Serializer::new(String::new());
        encoded.extend_pairs(&values);
        let encoded = encoded.finish();
        let mut action = match form.action.as_deref() {
            Some(action) if !action.is_empty() => page
                .url
                .join(action)
                .unwrap_or_else(|e| panic!("form action {action} on {}: {e}", page.url)),
            _ => page.url.clone(),
        };
        if form.method.eq_ignore_ascii_case("post") {
            self.navigate(reqwest::Method::POST, action, Some(encoded))
        } else {
            action.set_query(Some(&encoded));
            self.navigate(reqwest::Method::GET, action, None)
        }
    }

    /// Opens `auth_url` and, when it leads to a login form, signs in with
    /// `login` and `password`; the page the flow ends on (the login form again
    /// after a wrong password, the client's page after a right one).
    pub fn sign_in(&mut self, auth_url: &str, login: &str, password: &str) -> Page {
        let page = self.get(auth_url);
        if page.is_login_form() {
            self.submit(&page, &[("login", login), ("password", password)])
        } else {
            page
        }
    }

    fn navigate(
        &mut self,
        mut method: reqwest::Method,
        mut url: Url,
        mut body: Option<String>,
    ) -> Page {
        for _ in 0..20 {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(cookies) = self.cookie_header(&url) {
                request = request.header("cookie", cookies);
            }
            if let Some(body) = &body {
                request = request
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body.clone());
            }
            let answer = block_on(async move {
                let response = request.send().await?;
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                Ok::<_, reqwest::Error>((status, headers, response.text().await?))
            });
            // A server that cannot be reached is a browser's error page: status 0.
            let (status, headers, text) = match answer {
                Ok(answer) => answer,
                Err(e) => (0, HeaderMap::new(), format!("{method} {url}: {e}")),
            };
            for set_cookie in headers.get_all("set-cookie") {
                self.store_cookie(&url, set_cookie);
            }
            let location = headers.get("location").and_then(|l| l.to_str().ok());
            let Some(location) = location.filter(|_| matches!(status, 301 | 302 | 303 | 307 | 308))
            else {
                return Page {
                    status,
                    url,
                    body: text,
                    headers,
                };
            };
            url = url
                .join(location)
                .unwrap_or_else(|e| panic!("{url} redirected to {location}: {e}"));
            // 307 and 308 repeat the request; the others turn it into a GET, as
            // browsers do.
            if !matches!(status, 307 | 308) {
                method = reqwest::Method::GET;
                body = None;
            }
        }
        panic!("more than 20 redirects, the last to {url}");
    }

    fn cookie_header(&mut self, url: &Url) -> Option<String> {
        let now = SystemTime::now();
        self.cookies.retain(|c| c.expires.is_none_or(|at| at > now));
        let origin = origin(url);
        let mut matching: Vec<&Cookie> = self
            .cookies
            .iter()
            .filter(|c| c.origin == origin && path_matches(&c.path, url.path()))
            .collect();
        // Longer paths first, as RFC 6265 section 5.4 orders them.
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        let header: Vec<String> = matching
            .iter()
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!header.is_empty()).then(|| header.join("; "))
    }

    fn store_cookie(&mut self, url: &Url, header: &HeaderValue) {
        let Ok(header) = header.to_str() else { return };
        let mut parts = header.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let mut cookie = Cookie {
            origin: origin(url),
            name: name.trim().to_owned(),
            value: value.trim().to_owned(),
            path: default_path(url.path()),
            expires: None,
        };
        let mut max_age = None;
        for attribute in parts {
            let (key, value) = attribute.split_once('=').unwrap_or((attribute, ""));
            let value = value.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "path" if value.starts_with('/') => cookie.path = value.to_owned(),
                "max-age" => max_age = value.parse::<i64>().ok(),
                "expires" => {
                    if let Ok(at) = chrono::DateTime::parse_from_rfc2822(value) {
                        cookie.expires = Some(at.into());
                    }
                }
                _ => {}
            }
        }
        if let Some(seconds) = max_age {
            cookie.expires = Some(match u64::try_from(seconds) {
                Ok(seconds) if seconds > 0 => SystemTime::now() + Duration::from_secs(seconds),
                _ => SystemTime::UNIX_EPOCH,
            });
        }
        self.cookies.retain(|c| {
            !(c.origin == cookie.origin && c.name == cookie.name && c.path == cookie.path)
        });
        if cookie.expires.is_none_or(|at| at > SystemTime::now()) {
            self.cookies.push(cookie);
        }
    }
}

fn origin(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

/// RFC 6265 section 5.1.4: the request path up to its last `/`.
fn default_path(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(end) => path[..end].to_owned(),
    }
}

/// RFC 6265 section 5.1.4 path-match.
fn path_matches(cookie_path: &str, request_path: &str) -> bool {
    request_path == cookie_path
        || request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request_path[cookie_path.len()..].starts_with('/'))
}

/// The first `<form>` of a page: where it goes and what it sends as it stands.
struct Form {
    action: Option<String>,
    method: String,
    inputs: Vec<Input>,
}

/// A named `<input>` or `<button>` of a form.
struct Input {
    name: String,
    kind: String,
    value: String,
}

/// Finds the first form and the fields a browser would send from it untouched:
/// inputs other than unchecked check boxes and radio buttons, and the first
/// named submit button (the one the person presses).
fn parse_form(html: &str) -> Option<Form> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<form")?;
    let end = lower[start..]
        .find("</form")
        .map_or(html.len(), |e| start + e);
    let (form_tag, _) = next_tag(&html[start..end])?;
    let form_attributes = attributes(&form_tag);
    let mut form = Form {
        action: attribute(&form_attributes, "action"),
        method: attribute(&form_attributes, "method").unwrap_or_else(|| "get".to_owned()),
        inputs: Vec::new(),
    };
    let mut rest = &html[start + 1..end];
    let mut pressed_button = false;
    while let Some(open) = rest.find('<') {
        rest = &rest[open..];
        let Some((tag, length)) = next_tag(rest) else {
            break;
        };
        rest = &rest[length..];
        let tag_name = tag
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let attrs = attributes(&tag);
        let Some(name) = attribute(&attrs, "name") else {
            continue;
        };
        let kind = attribute(&attrs, "type")
            .unwrap_or_else(|| {
                if tag_name == "button" {
                    "submit"
                } else {
                    "text"
                }
                .to_owned()
            })
            .to_ascii_lowercase();
        let value = attribute(&attrs, "value").unwrap_or_default();
        let checked = attrs.iter().any(|(k, _)| k == "checked");
        let sent = match (tag_name.as_str(), kind.as_str()) {
            ("input" | "button", "submit") => !std::mem::replace(&mut pressed_button, true),
            ("input", "checkbox" | "radio") => checked,
            ("input", "button" | "reset" | "image" | "file") => false,
            ("input", _) => true,
            _ => false,
        };
        if sent {
            form.inputs.push(Input { name, kind, value });
        }
    }
    Some(form)
}

/// The tag at the start of `html` (without `<` and `>`), and its length.
fn next_tag(html: &str) -> Option<(String, usize)> {
    let mut quote = None;
    for (i, c) in html.char_indices().skip(1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some((html[1..i].trim_end_matches('/').to_owned(), i + 1)),
            (None, _) => {}
        }
    }
    None
}

/// A tag's attributes, names lower-cased, values unquoted and unescaped.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // Skip the tag name.
    let mut rest = tag
        .trim_start()
        .split_once(char::is_whitespace)
        .map_or("", |(_, r)| r);
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return out;
        }
        let name_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        rest = rest[name_end..].trim_start();
        let value = if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (value, remainder) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let close = after[1..].find(q).map_or(after.len(), |i| i + 1);
                    (&after[1..close], after.get(close + 1..).unwrap_or(""))
                }
                _ => {
                    let end = after.find(char::is_whitespace).unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            rest = remainder;
            unescape(value)
        } else {
            String::new()
        };
        out.push((name, value));
    }
}

fn attribute(attributes: &[(String, String)], name: &str) -> Option<String> {
    attributes
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Decodes the HTML character references pages use: the named five and numeric ones.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semicolon) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semicolon];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semicolon + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
