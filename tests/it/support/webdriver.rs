//! A real browser for tests: a small W3C WebDriver client of our own that starts
//! Debian's `chromedriver` (on this machine's loopback, or inside a network
//! namespace the test made), opens one headless Chromium session and drives it
//! over plain HTTP/1.1: navigate, find, click, type, read, cookies, screenshots.
//! The driver and its browser are ended on drop. Both come from the Debian
//! packages `chromium-driver` and `chromium` (`scripts/install-test-deps`).

use super::netns::Netns;
use super::tailscale::free_port;
use base64::Engine;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The key under which WebDriver names an element in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium's flags: headless, runnable as root, and quiet on the network (no
/// component updates or reports: tests reach only loopback and their namespaces).
const CHROMIUM_ARGS: [&str; 9] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--no-first-run",
];

/// An error the driver answered (its W3C code, such as `no such element`), or a
/// failure to reach it (`transport`).
#[derive(Debug)]
pub struct WdError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// An element of the page that was current when it was found.
#[derive(Clone, Debug)]
pub struct Element(String);

/// One `chromedriver` and its browser session.
pub struct WebDriver {
    driver: Child,
    port: u16,
    /// The network namespace the driver (and so the browser) runs in.
    netns: Option<String>,
    session: String,
    /// The driver's log; also the browser's HOME.
    dir: TempDir,
}

/// `$env`, or `default`, which must exist.
fn installed(env: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} is missing (set {env} to use another): run scripts/install-test-deps, \
         which installs the Debian package {package}",
        path.display()
    );
    path
}

/// Runs `f` on a thread that has moved into the network namespace `name`: a
/// socket it opens lives there, and keeps living there when handed back.
fn in_netns<T: Send>(
    name: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(&path)?;
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
                f()
            })
            .join()
            .expect("namespace thread")
    })
}

impl WebDriver {
    /// A browser inside `ns`: it reaches what listens there (a server on a test
    /// switch), and the test reaches its driver through sockets opened there.
    pub fn start_in(ns: &Netns) -> WebDriver {
        WebDriver::launch(Some(ns.name.clone()))
    }

    fn launch(netns: Option<String>) -> WebDriver {
        let driver_bin = installed(
            "HEADWAY_CHROMEDRIVER",
            "/usr/bin/chromedriver",
            "chromium-driver",
        );
        let browser_bin = installed("HEADWAY_CHROMIUM", "/usr/bin/chromium", "chromium");
        let dir = tempfile::Builder::new().prefix("wd").tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).unwrap();
        let port = free_port();
        let mut cmd = match &netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns.as_str()]).arg(&driver_bin);
                cmd
            }
            None => Command::new(&driver_bin),
        };
        // A process group of its own (`ip netns exec` execs the driver, which
        // keeps the id): drop ends the driver and every browser process with it.
        let driver = cmd
            .arg(format!("--port={port}"))
            .env("HOME", dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {}: {e} (run scripts/install-test-deps)",
                    driver_bin.display()
                )
            });
        let mut wd = WebDriver {
            driver,
            port,
            netns,
            session: String::new(),
            dir,
        };
        wd.wait_ready();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"implicit": 0, "pageLoad": 30_000, "script": 10_000},
            "goog:chromeOptions": {"binary": &browser_bin, "args": CHROMIUM_ARGS},
        }}});
        let created = wd
            .command("POST", "/session", Some(capabilities))
            .unwrap_or_else(|e| {
                panic!(
                    "{} did not start a session with {}: {e}\n{}",
                    driver_bin.display(),
                    browser_bin.display(),
                    wd.log()
                )
            });
        wd.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {created}"))
            .to_owned();
        wd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.driver.try_wait().unwrap() {
                panic!("chromedriver exited ({status}):\n{}", self.log());
            }
            if self
                .command("GET", "/status", None)
                .is_ok_and(|status| status["ready"] == true)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready after 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the driver logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        match &self.netns {
            Some(ns) => in_netns(ns, || TcpStream::connect(addr)),
            None => TcpStream::connect(addr),
        }
    }

    /// One WebDriver command: its answer's `value`, or the error it names.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let transport = |e: std::io::Error| WdError {
            error: "transport".into(),
            message: format!("{method} {path}: {e}"),
        };
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut conn = self.connect().map_err(transport)?;
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(transport)?;
        // The driver keeps connections open whatever the request says: the answer
        // ends where its Content-Length says.
        write!(
            conn,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             Content-Type: application/json; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .map_err(transport)?;
        let mut reader = BufReader::new(conn);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).map_err(transport)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(transport)?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.trim().eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let length = length.ok_or_else(|| WdError {
            error: "transport".into(),
            message: format!("{method} {path}: answered without a Content-Length"),
        })?;
        let mut raw = vec![0; length];
        reader.read_exact(&mut raw).map_err(transport)?;
        let mut answer: Value = serde_json::from_slice(&raw).map_err(|e| WdError {
            error: "transport".into(),
            message: format!(
                "{method} {path}: {status} {e}: {}",
                String::from_utf8_lossy(&raw)
            ),
        })?;
        let value = answer["value"].take();
        if let Some(error) = value["error"].as_str() {
            return Err(WdError {
                error: error.to_owned(),
                message: value["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        if status != 200 {
            return Err(WdError {
                error: format!("HTTP {status}"),
                message: value.to_string(),
            });
        }
        Ok(value)
    }

    /// A command of this session, which must succeed.
    fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        self.command(method, &full, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// Opens `url` and waits until it has loaded.
    pub fn navigate(&self, url: &str) {
        self.must("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        self.must("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The current page's HTML as the browser has it now.
    pub fn page_source(&self) -> String {
        self.must("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching the CSS selector `css`, if any.
    pub fn try_find(&self, css: &str) -> Option<Element> {
        let path = format!("/session/{}/element", self.session);
        let body = json!({"using": "css selector", "value": css});
        match self.command("POST", &path, Some(body)) {
            Ok(found) => Some(Element(
                found[ELEMENT_KEY]
                    .as_str()
                    .unwrap_or_else(|| panic!("not an element: {found}"))
                    .to_owned(),
            )),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("WebDriver find `{css}`: {e}"),
        }
    }

    /// The first element matching `css`; panics with the page when there is none.
    pub fn find(&self, css: &str) -> Element {
        self.try_find(css).unwrap_or_else(|| {
            panic!(
                "no `{css}` on {}:\n{}",
                self.current_url(),
                self.page_source()
            )
        })
    }

    /// Every element matching `css`, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self.must(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        found
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| Element(e[ELEMENT_KEY].as_str().unwrap_or_default().to_owned()))
            .collect()
    }

    /// Polls until `css` matches (pages render and redirect asynchronously).
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.try_find(css) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no `{css}` within {timeout:?} on {}:\n{}",
                self.current_url(),
                self.page_source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls until `check` holds, or panics naming `what` with the page.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "not within {timeout:?}: {what}\non {}:\n{}",
                self.current_url(),
                self.page_source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn element_command(
        &self,
        method: &str,
        element: &Element,
        rest: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        let path = format!("/session/{}/element/{}{rest}", self.session, element.0);
        self.command(method, &path, body)
    }

    /// Finds `css` and does `act` on it, again on a fresh find while the page
    /// replaces it under the test (live updates swap `#main`).
    fn on_fresh<T>(&self, css: &str, mut act: impl FnMut(&Element) -> Result<T, WdError>) -> T {
        for _ in 0..5 {
            match act(&self.find(css)) {
                Ok(done) => return done,
                Err(e) if e.error == "stale element reference" => continue,
                Err(e) => panic!("WebDriver on `{css}`: {e}"),
            }
        }
        panic!("`{css}` kept being replaced on {}", self.current_url())
    }

    /// Clicks `element` as a person would (a link or a submit button navigates,
    /// and the click returns once the new page has loaded).
    pub fn click(&self, element: &Element) {
        self.element_command("POST", element, "/click", Some(json!({})))
            .unwrap_or_else(|e| panic!("WebDriver click: {e}"));
    }

    /// Clicks the first element matching `css`.
    pub fn click_on(&self, css: &str) {
        self.on_fresh(css, |e| {
            self.element_command("POST", e, "/click", Some(json!({})))
        });
    }

    /// Clicks the submit button of the form `form` (a CSS selector).
    pub fn submit(&self, form: &str) {
        self.click_on(&format!(
            "{form} button[type=\"submit\"], {form} button:not([type]), {form} input[type=\"submit\"]"
        ));
    }

    /// Empties the field `css` and types `text` into it, key by key; typed again
    /// if the page replaced the field meanwhile.
    pub fn fill(&self, css: &str, text: &str) {
        for _ in 0..3 {
            self.on_fresh(css, |e| {
                self.element_command("POST", e, "/clear", Some(json!({})))?;
                self.element_command("POST", e, "/value", Some(json!({ "text": text })))
            });
            let typed = self.on_fresh(css, |e| {
                self.element_command("GET", e, "/property/value", None)
            });
            if typed == text {
                return;
            }
        }
        panic!("`{css}` does not keep what was typed into it");
    }

    /// Presses Enter in the field `css` (a form with no button submits so).
    pub fn press_enter(&self, css: &str) {
        self.on_fresh(css, |e| {
            self.element_command("POST", e, "/value", Some(json!({ "text": "\u{E007}" })))
        });
    }

    /// Chooses the option of value `value` in the `<select>` `css`, by clicking it.
    pub fn select(&self, css: &str, value: &str) {
        self.click_on(&format!("{css} option[value=\"{value}\"]"));
        let chosen = self.on_fresh(css, |e| {
            self.element_command("GET", e, "/property/value", None)
        });
        assert_eq!(chosen, value, "`{css}` did not take {value:?}");
    }

    /// The text of `css` as rendered (what a person reads).
    pub fn text(&self, css: &str) -> String {
        let text = self.on_fresh(css, |e| self.element_command("GET", e, "/text", None));
        text.as_str().unwrap_or_default().to_owned()
    }

    /// An HTML attribute of `element` as written in the page, if present.
    pub fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        let value = self
            .element_command("GET", element, &format!("/attribute/{name}"), None)
            .unwrap_or_else(|e| panic!("WebDriver attribute {name}: {e}"));
        value.as_str().map(str::to_owned)
    }

    /// A DOM property of the first `css` as it is now (`value`, `checked`).
    pub fn property(&self, css: &str, name: &str) -> Value {
        self.on_fresh(css, |e| {
            self.element_command("GET", e, &format!("/property/{name}"), None)
        })
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn execute(&self, script: &str) -> Value {
        self.must(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Every cookie the browser holds for the current page, HttpOnly ones too,
    /// as WebDriver shows them (`name`, `value`, `httpOnly`, `sameSite`, …).
    pub fn cookies(&self) -> Vec<Value> {
        self.must("GET", "/cookie", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Gives the browser `cookie` for the current page's site.
    pub fn add_cookie(&self, cookie: Value) {
        self.must("POST", "/cookie", Some(json!({ "cookie": cookie })));
    }

    /// Forgets every cookie of the current page's site.
    pub fn delete_cookies(&self) {
        self.must("DELETE", "/cookie", None);
    }

    /// Resizes the browser window (the page reflows; nothing reloads).
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.must(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Writes the whole page as it looks now, beyond the window's height too, to
    /// the PNG file `path` (Chromium's own capture, through the driver).
    pub fn screenshot(&self, path: &Path) {
        let cdp = |cmd: &str, params: Value| {
            self.must(
                "POST",
                "/goog/cdp/execute",
                Some(json!({"cmd": cmd, "params": params})),
            )
        };
        let metrics = cdp("Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let (width, height) = (
            size["width"].as_f64().unwrap_or(1.0).ceil(),
            size["height"].as_f64().unwrap_or(1.0).ceil(),
        );
        let shot = cdp(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("screenshot of {}: {e}", self.current_url()));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        // Ending the session closes the browser; then the driver's process group
        // goes, with anything left in it.
        if !self.session.is_empty() {
            let _ = self.command("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
