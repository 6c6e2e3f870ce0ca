//! Sign-in through the OIDC provider, as a person's browser sees it:
//! `/register/{id}` sends the browser to the provider, `/oidc/callback` checks
//! what comes back and asks the person to confirm the machine, and
//! `POST /register/confirm/{id}` registers it. Every failure is a page that says
//! what happened; none registers anything.

use super::Site;
use super::pages::{escape, page};
use crate::oidc::client::{Client, LOGIN_LIFETIME, random_token};
use crate::oidc::waiting::Waiting;
use crate::oidc::{OidcError, Refusal};
use crate::state::RegistrationId;
use crate::tailcfg::Hostinfo;
use crate::types::{Timestamp, UserId};
use axum::extract::{Path, Query, State as Shared};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use std::collections::HashMap;

/// The confirmation form's field and cookie (Headscale's name).
const CONFIRM_COOKIE: &str = "headscale_register_confirm";
/// A confirmation form is at most this large.
const MAX_FORM_BYTES: usize = 4096;
/// Confirmations waiting at once; past it the oldest is forgotten.
const MAX_CONFIRMATIONS: usize = 1024;

/// The OIDC part of the site: the provider client and the signed-in people who
/// have not yet confirmed their machine.
#[derive(Debug)]
pub struct SignIn {
    client: Client,
    secure_cookies: bool,
    confirmations: Waiting<RegistrationId, Confirmation>,
    /// Who may sign in to the web UI this way (`web_ui.oidc_admin_*`).
    admins: Admins,
}

/// `web_ui.oidc_admin_users` and `oidc_admin_groups`; both empty: nobody.
#[derive(Clone, Debug, Default)]
pub struct Admins {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

impl Admins {
    pub fn any(&self) -> bool {
        !(self.users.is_empty() && self.groups.is_empty())
    }

    /// Whether a signed-in person is an admin: a (trusted) email listed, or a
    /// group listed.
    fn admit(&self, identity: &crate::types::Identity) -> bool {
        (!identity.email.is_empty() && self.users.contains(&identity.email))
            || identity.groups.iter().any(|g| self.groups.contains(g))
    }
}

#[derive(Debug)]
struct Confirmation {
    csrf: String,
    user: UserId,
    expiry: Option<Timestamp>,
}

impl SignIn {
    /// Cookies are `Secure` when `server_url` is https.
    pub fn new(client: Client, server_url: &str) -> Self {
        Self {
            client,
            secure_cookies: server_url.starts_with("https://"),
            confirmations: Waiting::new(LOGIN_LIFETIME, MAX_CONFIRMATIONS),
            admins: Admins::default(),
        }
    }

    /// Lets `admins` sign in to the web UI through the provider.
    pub fn with_admins(mut self, admins: Admins) -> Self {
        self.admins = admins;
        self
    }

    /// Whether the web UI offers sign-in through the provider.
    pub fn admits_admins(&self) -> bool {
        self.admins.any()
    }

    fn cookie(&self, name: &str, value: &str, path: &str, same_site: &str) -> HeaderValue {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        let max_age = if value.is_empty() {
            0
        } else {
            LOGIN_LIFETIME.as_secs()
        };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}"
        ))
        .expect("cookie names and values are URL-safe text")
    }
}

/// What a sign-in is for: a waiting machine, a Tailscale SSH `check`, or the
/// web UI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    Register(RegistrationId),
    SshCheck(RegistrationId),
    Admin,
}

impl Purpose {
    const SSH: &'static str = "ssh:";
    const ADMIN: &'static str = "admin:";

    fn encode(&self) -> String {
        match self {
            Purpose::Register(id) => id.to_string(),
            Purpose::SshCheck(id) => format!("{}{id}", Self::SSH),
            Purpose::Admin => Self::ADMIN.to_owned(),
        }
    }

    fn decode(text: &str) -> Option<Purpose> {
        if text == Self::ADMIN {
            return Some(Purpose::Admin);
        }
        match text.strip_prefix(Self::SSH) {
            Some(id) => RegistrationId::parse(id).map(Purpose::SshCheck),
            None => RegistrationId::parse(text).map(Purpose::Register),
        }
    }

    /// What an admin runs instead when the provider cannot be reached.
    fn admin_command(&self) -> String {
        match self {
            Purpose::Register(id) => {
                format!("headway auth register --auth-id {id} --user USERNAME")
            }
            Purpose::SshCheck(id) => format!("headway auth approve --auth-id {id}"),
            Purpose::Admin => "headway admin login-link".to_owned(),
        }
    }
}

/// `GET /admin/login/oidc`: the web UI's sign-in through the provider.
pub async fn admin_start(Shared(site): Shared<Site>) -> Response {
    match site.sign_in.as_deref() {
        Some(sign_in) if sign_in.admits_admins() => start(sign_in, Purpose::Admin).await,
        _ => failure(
            StatusCode::NOT_FOUND,
            "Sign-in through a provider is off",
            "This server signs in to its web UI only with a one-time link: run `headway admin login-link` on the server.",
        ),
    }
}

/// The callback of a web UI sign-in: a session for an admin, a refusal page
/// for anyone else.
async fn admin_signed_in(
    site: &Site,
    sign_in: &SignIn,
    identity: &crate::types::Identity,
) -> Response {
    let who = if identity.email.is_empty() {
        identity.preferred_username.clone()
    } else {
        identity.email.clone()
    };
    if !sign_in.admins.admit(identity) {
        tracing::warn!(%who, "refused a web UI sign-in: not in web_ui.oidc_admin_users or oidc_admin_groups");
        return failure(
            StatusCode::FORBIDDEN,
            "Not an administrator",
            &format!(
                "You signed in as {who}, who may not administer this server (web_ui.oidc_admin_users, web_ui.oidc_admin_groups)."
            ),
        );
    }
    match site.state.open_session(&format!("{who} (OIDC)")).await {
        Ok(opened) => {
            tracing::info!(%who, "web UI session opened through the identity provider");
            let cookie = crate::types::session_set_cookie(
                &opened.secret,
                crate::state::admin::SESSION_LIFETIME.as_secs(),
                sign_in.secure_cookies,
            );
            match HeaderValue::from_str(&cookie) {
                Ok(cookie) => (
                    StatusCode::SEE_OTHER,
                    [
                        (header::LOCATION, HeaderValue::from_static("/admin")),
                        (header::SET_COOKIE, cookie),
                    ],
                )
                    .into_response(),
                Err(_) => failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Sign-in failed",
                    "The session cookie could not be written.",
                ),
            }
        }
        Err(err) => super::pages::unavailable(&err),
    }
}

/// The cookie that ties a sign-in's `state` to the browser that started it.
fn state_cookie_name(state: &str) -> String {
    let prefix: String = state.chars().take(6).collect();
    format!("state_{prefix}")
}

/// `GET /register/{id}` (and `/auth/{id}` for an SSH check) with OIDC on: off
/// to the provider.
pub async fn start(sign_in: &SignIn, purpose: Purpose) -> Response {
    match sign_in.client.begin(&purpose.encode()).await {
        Ok(redirect) => {
            let cookie = sign_in.cookie(
                &state_cookie_name(&redirect.state),
                &redirect.state,
                "/oidc/callback",
                "Lax",
            );
            let location = HeaderValue::from_str(&redirect.url);
            match location {
                Ok(location) => (
                    StatusCode::FOUND,
                    [(header::LOCATION, location), (header::SET_COOKIE, cookie)],
                )
                    .into_response(),
                Err(_) => failure(
                    StatusCode::BAD_GATEWAY,
                    "Sign-in failed",
                    "The provider's sign-in address cannot be used in a redirect.",
                ),
            }
        }
        Err(err) => provider_error(&purpose, err),
    }
}

/// `GET /oidc/callback?code&state`: the provider sends the browser back here.
pub async fn callback(
    Shared(site): Shared<Site>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(sign_in) = site.sign_in.clone() else {
        return failure(
            StatusCode::NOT_FOUND,
            "Sign-in is not configured",
            "This server does not sign people in with an identity provider (oidc.issuer is not set).",
        );
    };
    let state = query.get("state").map(String::as_str).unwrap_or_default();
    if let Some(error) = query.get("error") {
        // The provider refused (the person cancelled, or the client is misconfigured).
        if has_state_cookie(&headers, state) {
            sign_in.client.take_login(state);
        }
        let described = match query.get("error_description") {
            Some(d) if !d.is_empty() => format!("{error}: {d}"),
            _ => error.clone(),
        };
        tracing::warn!(error = %described, "the identity provider did not sign a person in");
        return failure(
            StatusCode::UNAUTHORIZED,
            "Sign-in failed",
            &format!(
                "The identity provider did not sign you in ({described}). Run `tailscale up` again to retry."
            ),
        );
    }
    let code = query.get("code").map(String::as_str).unwrap_or_default();
    if code.is_empty() || state.len() < 6 {
        return failure(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The provider's answer has no code or state. Open the link `tailscale up` printed again.",
        );
    }
    // RFC 9207: a provider that names itself must be ours (a mix-up defence).
    if let Some(iss) = query.get("iss")
        && iss.trim_end_matches('/') != sign_in.client.settings().issuer.trim_end_matches('/')
    {
        tracing::warn!(%iss, "a sign-in came back from another issuer");
        return failure(
            StatusCode::FORBIDDEN,
            "Sign-in failed",
            "This answer comes from an identity provider this server does not use. Nothing was registered.",
        );
    }
    if !has_state_cookie(&headers, state) {
        return failure(
            StatusCode::FORBIDDEN,
            "Sign-in failed",
            "This sign-in was not started in this browser, or it has already been used. Open the link `tailscale up` printed again.",
        );
    }
    let Some(login) = sign_in.client.take_login(state) else {
        return failure(
            StatusCode::GONE,
            "Sign-in expired",
            "This sign-in has expired or has already been used (they last 15 minutes). Open the link `tailscale up` printed again.",
        );
    };
    let Some(purpose) = Purpose::decode(&login.purpose) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "Unknown sign-in.",
        );
    };
    let claims = match sign_in.client.finish(&login, code).await {
        Ok(claims) => claims,
        Err(err) => return provider_error(&purpose, err),
    };
    let identity = match crate::oidc::rules::admit(sign_in.client.settings(), &claims) {
        Ok(identity) => identity,
        Err(refusal) => {
            tracing::warn!(subject = %claims.sub, why = %refusal, "refused a sign-in");
            return refused(&refusal);
        }
    };
    let id = match purpose {
        Purpose::Register(id) => id,
        Purpose::SshCheck(id) => return ssh_check(&site, &id, &identity).await,
        Purpose::Admin => return admin_signed_in(&site, &sign_in, &identity).await,
    };
    let pending = match site.state.pending_registration(&id).await {
        Ok(pending) => pending,
        Err(err) => return super::pages::unavailable(&err),
    };
    let Some(pending) = pending else {
        return failure(
            StatusCode::GONE,
            "Registration expired",
            "The machine stopped waiting for this sign-in. Run `tailscale up` again and open the new link.",
        );
    };
    let user = match record_sign_in(&site, &identity).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let expiry = sign_in
        .client
        .settings()
        .use_expiry_from_token
        .then(|| {
            claims
                .exp
                .and_then(|exp| chrono::DateTime::from_timestamp(exp, 0))
        })
        .flatten();
    let csrf = random_token();
    sign_in.confirmations.insert(
        id.clone(),
        Confirmation {
            csrf: csrf.clone(),
            user: user.id,
            expiry,
        },
    );
    let who = user.display();
    let os = pending
        .hostinfo
        .as_deref()
        .and_then(|h| Hostinfo::from_json(h).ok())
        .map(|h| h.os().to_owned())
        .unwrap_or_default();
    let body = format!(
        "<p>You are signed in as <b>{who}</b>.</p>\
         <p>The machine <b>{host}</b>{os} (machine key <code>{mkey}</code>) asks to join this tailnet as yours. \
         Register it only if you started this from that machine.</p>\
         <form method=\"post\" action=\"/register/confirm/{id}\">\
         <input type=\"hidden\" name=\"{CONFIRM_COOKIE}\" value=\"{csrf}\">\
         <button type=\"submit\">Register this machine</button></form>",
        who = escape(&who),
        host = escape(&pending.hostname),
        os = if os.is_empty() {
            String::new()
        } else {
            format!(" ({})", escape(&os))
        },
        mkey = escape(&pending.machine_key.short()),
        id = escape(id.as_str()),
    );
    let cookie = sign_in.cookie(
        CONFIRM_COOKIE,
        &csrf,
        &format!("/register/confirm/{id}"),
        "Strict",
    );
    (
        [(header::SET_COOKIE, cookie)],
        Html(page("Register this machine?", &body)),
    )
        .into_response()
}

/// The user `identity` signs in as (created or refreshed; clients learn the
/// change), or the page that says it could not be recorded.
async fn record_sign_in(
    site: &Site,
    identity: &crate::types::Identity,
) -> Result<crate::types::User, Response> {
    match site.state.sign_in(identity).await {
        Ok((user, change)) => {
            site.state.notifier().publish(change);
            Ok(user)
        }
        Err(err) => {
            tracing::error!(error = %err, "could not store the user of a sign-in");
            Err(failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in failed",
                &format!("You were signed in, but the server could not record it: {err}"),
            ))
        }
    }
}

/// The callback of a sign-in for a Tailscale SSH `check`: approved when the
/// person who signed in owns the machine the session comes from (Headscale 0.29).
async fn ssh_check(
    site: &Site,
    id: &RegistrationId,
    identity: &crate::types::Identity,
) -> Response {
    let Some((src, _dst)) = site.state.pending_ssh_check(id) else {
        return failure(
            StatusCode::GONE,
            "Check expired",
            "This SSH check has expired or was already decided. Connect again and open the new link.",
        );
    };
    let user = match record_sign_in(site, identity).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let owner = site.state.snapshot().get(src).and_then(|n| n.user_id);
    if owner != Some(user.id) {
        tracing::warn!(check = %id, user = %user.name, "refused an SSH check: the person does not own its source machine");
        return failure(
            StatusCode::FORBIDDEN,
            "SSH session refused",
            "Only the owner of the machine this SSH session comes from can allow it. Nothing was approved.",
        );
    }
    match site.state.approve_registration(id.as_str()).await {
        Ok(_) => {
            tracing::info!(check = %id, user = %user.name, "SSH check approved by its owner's sign-in");
            let body = format!(
                "<p>The SSH session is allowed, as <b>{who}</b>. You may return to your terminal.</p>",
                who = escape(&user.display()),
            );
            Html(page("SSH session authorized", &body)).into_response()
        }
        Err(err) => failure(
            StatusCode::GONE,
            "Check expired",
            &format!("The SSH check could not be approved: {err}"),
        ),
    }
}

/// `POST /register/confirm/{id}`: the person confirmed; the machine is registered.
pub async fn confirm(
    Shared(site): Shared<Site>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(sign_in) = site.sign_in.clone() else {
        return failure(
            StatusCode::NOT_FOUND,
            "Sign-in is not configured",
            "This server does not sign people in with an identity provider.",
        );
    };
    let Some(id) = RegistrationId::parse(&id) else {
        return failure(
            StatusCode::NOT_FOUND,
            "Registration not found",
            "This is not a registration link.",
        );
    };
    if body.len() > MAX_FORM_BYTES {
        return failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Registration failed",
            "The form is too large.",
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = form
        .get(CONFIRM_COOKIE)
        .map(String::as_str)
        .unwrap_or_default();
    let cookie = cookies(&headers)
        .find(|(name, _)| *name == CONFIRM_COOKIE)
        .map(|(_, value)| value.to_owned())
        .unwrap_or_default();
    if field.is_empty() || cookie.is_empty() || field != cookie {
        return failure(
            StatusCode::FORBIDDEN,
            "Registration failed",
            "This confirmation did not come from the page this server showed you. Open the link `tailscale up` printed again.",
        );
    }
    let confirmation = sign_in.confirmations.take_if(&id, |c| c.csrf == field);
    let Some(confirmation) = confirmation else {
        return failure(
            StatusCode::GONE,
            "Registration expired",
            "This confirmation has expired or has already been used. Run `tailscale up` again and open the new link.",
        );
    };
    let clear = sign_in.cookie(
        CONFIRM_COOKIE,
        "",
        &format!("/register/confirm/{id}"),
        "Strict",
    );
    match site
        .state
        .complete_sign_in(&id, confirmation.user, confirmation.expiry)
        .await
    {
        Ok((node, new, change)) => {
            site.state.notifier().publish(change);
            let who = site
                .state
                .users()
                .get(&confirmation.user)
                .map(crate::types::User::display)
                .unwrap_or_default();
            let (title, verb) = if new {
                ("Machine registered", "is now in the tailnet")
            } else {
                ("Machine signed in again", "is signed in again")
            };
            let body = format!(
                "<p><b>{host}</b> {verb} as <b>{who}</b>. You can close this window.</p>",
                host = escape(node.node.given_name.as_str()),
                who = escape(&who),
            );
            ([(header::SET_COOKIE, clear)], Html(page(title, &body))).into_response()
        }
        Err(err) => {
            tracing::warn!(error = %err, registration = %id, "a confirmed sign-in could not register its machine");
            failure(
                StatusCode::CONFLICT,
                "Registration failed",
                &format!("The machine could not be registered: {err}"),
            )
        }
    }
}

fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            Some((name.trim(), value.trim()))
        })
}

fn has_state_cookie(headers: &HeaderMap, state: &str) -> bool {
    let name = state_cookie_name(state);
    !state.is_empty() && cookies(headers).any(|(n, v)| n == name && v == state)
}

fn failure(status: StatusCode, title: &str, message: &str) -> Response {
    (
        status,
        Html(page(title, &format!("<p>{}</p>", escape(message)))),
    )
        .into_response()
}

/// A page for a failure on the provider's side or of its tokens.
fn provider_error(purpose: &Purpose, err: OidcError) -> Response {
    match err {
        OidcError::Unreachable { issuer, why } => {
            tracing::warn!(%issuer, %why, "the identity provider cannot be reached");
            let body = format!(
                "<p>The identity provider <code>{issuer}</code> cannot be reached right now, so you cannot sign in. \
                 Try again in a minute.</p><p>An administrator can also let you in from the server:</p>\
                 <pre><code>{command}</code></pre>",
                issuer = escape(&issuer),
                command = escape(&purpose.admin_command()),
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(page("Sign-in provider unavailable", &body)),
            )
                .into_response()
        }
        OidcError::Refused(refusal) => {
            tracing::error!(why = %refusal, "the identity provider refused headway");
            refused(&refusal)
        }
        OidcError::BadToken(why) => {
            tracing::warn!(%why, "refused an ID token");
            failure(
                StatusCode::FORBIDDEN,
                "Sign-in failed",
                &format!(
                    "The identity provider's answer could not be trusted: {why}. Nothing was registered."
                ),
            )
        }
    }
}

fn refused(refusal: &Refusal) -> Response {
    let status = match refusal {
        Refusal::ClientRejected(_) => StatusCode::BAD_GATEWAY,
        Refusal::CodeRejected(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::FORBIDDEN,
    };
    failure(
        status,
        "Sign-in refused",
        &format!("{refusal}. Nothing was registered."),
    )
}
