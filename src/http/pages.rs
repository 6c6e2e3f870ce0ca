//! Pages people open in a browser: the registration page a `tailscale up` prints,
//! and the Apple and Windows set-up pages with this server's URL.
//!
//! Every value that comes from a client (hostnames) is HTML-escaped.

use super::Site;
use crate::state::RegistrationId;
use axum::extract::{Path, State as Shared};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `title` as heading, `body` as given (already escaped).
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}\
         pre{{background:#f3f3f3;padding:.75rem;overflow-x:auto}}code{{font-size:.95em}}\
         </style></head><body><h1>{title}</h1>\n{body}\n</body></html>\n",
        title = escape(title)
    )
}

fn code(command: &str) -> String {
    format!("<pre><code>{}</code></pre>", escape(command))
}

/// `GET /register/{id}`: what to run on the server to let this machine in.
pub async fn register(Shared(site): Shared<Site>, Path(id): Path<String>) -> Response {
    let Some(id) = RegistrationId::parse(&id) else {
        return not_found(
            "This is not a registration link. Run `tailscale up` again and open the link it prints.",
        );
    };
    let pending = match site.state.pending_registration(&id).await {
        Ok(pending) => pending,
        Err(err) => return unavailable(&err),
    };
    let Some(pending) = pending else {
        return not_found(
            "This registration is unknown or has expired (they last 15 minutes). Run `tailscale up` again and open the new link.",
        );
    };
    if let Some(sign_in) = &site.sign_in {
        return super::oidc::start(sign_in, super::oidc::Purpose::Register(id)).await;
    }
    let body = format!(
        "<p>The machine <b>{host}</b> (machine key <code>{mkey}</code>) asks to join this tailnet.</p>\
         <p>To let it in, run this on the server, with the user (namespace) it should belong to:</p>{modern}\
         <p>The spellings of older guides work too:</p>{register}{guide}{nodekey}\
         <p>The machine finishes logging in by itself once you have run the command.</p>",
        host = escape(&pending.hostname),
        mkey = escape(&pending.machine_key.short()),
        modern = code(&format!(
            "headway auth register --auth-id {id} --user USERNAME"
        )),
        register = code(&format!(
            "headway nodes register --user USERNAME --key {id}"
        )),
        guide = code(&format!("headway -n NAMESPACE nodes register --key {id}")),
        nodekey = code(&format!(
            "headway nodes register --user USERNAME --key {}",
            pending.node_key
        )),
    );
    Html(page("Machine registration", &body)).into_response()
}

/// `GET /auth/{id}`: a Tailscale SSH session held by a `check` rule waits for an
/// admin; this page says what to run.
pub async fn auth(Shared(site): Shared<Site>, Path(id): Path<String>) -> Response {
    let Some(id) = RegistrationId::parse(&id) else {
        return not_found("This is not an authentication link.");
    };
    let Some((src, dst)) = site.state.pending_ssh_check(&id) else {
        return not_found(
            "This check is unknown or has expired (they last 15 minutes). Connect again and open the new link.",
        );
    };
    // With OIDC, the owner of the source machine signs in to allow it.
    if let Some(sign_in) = &site.sign_in {
        return super::oidc::start(sign_in, super::oidc::Purpose::SshCheck(id)).await;
    }
    let body = format!(
        "<p>An SSH session from node {src} to node {dst} waits for a check required by the policy.</p>\
         <p>To let it in, run this on the server:</p>{approve}<p>To refuse it:</p>{reject}",
        approve = code(&format!("headway auth approve --auth-id {id}")),
        reject = code(&format!("headway auth reject --auth-id {id}")),
    );
    Html(page("Authentication check", &body)).into_response()
}

/// A registration page the server cannot answer now (its database failed).
pub(super) fn unavailable(err: &crate::state::Error) -> Response {
    tracing::warn!(error = %err, "could not read a waiting registration");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(page(
            "Try again in a moment",
            "<p>The server cannot read its database right now. Reload this page in a moment.</p>",
        )),
    )
        .into_response()
}

fn not_found(message: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(page(
            "Registration not found",
            &format!("<p>{}</p>", escape(message)),
        )),
    )
        .into_response()
}

/// `GET /apple`: how to point macOS and iOS clients at this server.
pub async fn apple(Shared(site): Shared<Site>) -> Html<String> {
    let url = &site.server_url;
    let body = format!(
        "<h2>iOS</h2><p>Install a configuration profile that sets this server, then open the Tailscale app and sign in: \
         <a href=\"/apple/ios\">download the iOS profile</a>. Or, in the app: Settings → Accounts → the menu → \
         Use a custom coordination server, and enter <code>{u}</code>.</p>\
         <h2>macOS (App Store app)</h2><p><a href=\"/apple/macos-app-store\">Download the profile</a>, or run:</p>{store}\
         <h2>macOS (standalone app)</h2><p><a href=\"/apple/macos-standalone\">Download the profile</a>, or run:</p>{standalone}\
         <p>Then start Tailscale and log in; the login opens a page of this server.</p>\
         <h2>Command line</h2>{cli}",
        u = escape(url),
        store = code(&format!(
            "defaults write io.tailscale.ipn.macos ControlURL {url}"
        )),
        standalone = code(&format!(
            "defaults write io.tailscale.ipn.macsys ControlURL {url}"
        )),
        cli = code(&format!("tailscale up --login-server {url}")),
    );
    Html(page("Tailscale on Apple devices", &body))
}

/// `GET /apple/{platform}`: a `.mobileconfig` profile that sets `ControlURL`.
pub async fn apple_profile(Shared(site): Shared<Site>, Path(platform): Path<String>) -> Response {
    let payload_type = match platform.as_str() {
        "ios" => "io.tailscale.ipn.ios",
        "macos-app-store" => "io.tailscale.ipn.macos",
        "macos-standalone" => "io.tailscale.ipn.macsys",
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "platform must be ios, macos-app-store or macos-standalone\n",
            )
                .into_response();
        }
    };
    let url = escape(&site.server_url);
    let profile = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadDisplayName</key><string>headway: {url}</string>
  <key>PayloadDescription</key><string>Points Tailscale at the coordination server {url}</string>
  <key>PayloadIdentifier</key><string>io.headway.profile.{outer}</string>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadUUID</key><string>{outer}</string>
  <key>PayloadVersion</key><integer>1</integer>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>PayloadType</key><string>{payload_type}</string>
      <key>PayloadIdentifier</key><string>io.headway.profile.{inner}</string>
      <key>PayloadUUID</key><string>{inner}</string>
      <key>PayloadVersion</key><integer>1</integer>
      <key>ControlURL</key><string>{url}</string>
    </dict>
  </array>
</dict>
</plist>
"#,
        outer = uuid_v4(),
        inner = uuid_v4(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/x-apple-aspen-config; charset=utf-8",
        )],
        profile,
    )
        .into_response()
}

/// `GET /windows`: how to point Windows clients at this server.
pub async fn windows(Shared(site): Shared<Site>) -> Html<String> {
    let url = &site.server_url;
    let body = format!(
        "<p>Install Tailscale for Windows, then in a terminal run:</p>{cli}\
         <p>To preset the server for every user (for example with group policy), set the registry value \
         <code>LoginURL</code> (a string) under <code>HKEY_LOCAL_MACHINE\\SOFTWARE\\Tailscale IPN</code> to \
         <code>{u}</code>:</p>{reg}<p>Then restart the Tailscale service and log in.</p>",
        cli = code(&format!("tailscale login --login-server {url}")),
        u = escape(url),
        reg = code(&format!(
            r#"reg add "HKLM\SOFTWARE\Tailscale IPN" /v LoginURL /t REG_SZ /d "{url}" /f"#
        )),
    );
    Html(page("Tailscale on Windows", &body))
}

/// A random (version 4) UUID for profile identifiers.
fn uuid_v4() -> String {
    let mut b = crate::types::secret::random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b).to_uppercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn uuids_have_the_version_4_shape() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, uuid_v4());
    }
}
