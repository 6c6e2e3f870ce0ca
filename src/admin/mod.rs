//! The built-in web UI (`/admin`): server-rendered pages over the same
//! operations as the admin API, behind a browser session.
//!
//! Sign-in is a one-time link (`headway admin login-link`) redeemed for a
//! session cookie (HttpOnly, SameSite=Strict, Secure under https). Every route
//! but the sign-in pages and the static assets passes [`guard`]: no session,
//! and a page answers 303 to the sign-in page; a POST must also carry the
//! session's CSRF token (and, when the browser says, come from this origin).
//! Every change calls `grpc::AdminApi`, the service the CLI and `/api/v1` use,
//! so the UI holds no second copy of any rule; pages read `state`.

mod keys;
mod layout;
mod login;
mod machines;
mod network;
mod policy;
mod users;

use crate::control::map::MapSettings;
use crate::derp::DerpMaps;
use crate::grpc::AdminApi;
use crate::state::State;
use crate::types::AdminSession;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State as Shared};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::sync::Arc;

/// The session cookie's name.
pub use crate::types::SESSION_COOKIE as COOKIE;
/// The header `live.js` marks a page's own refresh with.
const LIVE_HEADER: &str = "x-headway-live";
/// The largest form a page posts (a policy file is the largest thing sent).
const MAX_FORM_BYTES: usize = 1 << 20;

/// What the pages share; cheap to clone.
#[derive(Clone)]
pub struct Ui {
    state: Arc<State>,
    admin: AdminApi,
    /// What clients are sent about DNS.
    map: Arc<MapSettings>,
    derp: DerpMaps,
    /// `server_url` without a trailing slash.
    server_url: String,
    /// Whether cookies are marked Secure (`server_url` is https).
    secure: bool,
    /// Whether admins may also sign in through the OIDC provider
    /// (`/admin/login/oidc`, served by `http::oidc`).
    oidc: bool,
}

impl Ui {
    pub fn new(state: Arc<State>, map: Arc<MapSettings>, derp: DerpMaps, oidc: bool) -> Ui {
        let server_url = state.settings().server_url.trim_end_matches('/').to_owned();
        Ui {
            admin: AdminApi::new(state.clone()),
            secure: server_url.starts_with("https://"),
            state,
            map,
            derp,
            server_url,
            oidc,
        }
    }
}

/// The routes under `/admin`.
pub fn router(ui: Ui) -> Router {
    let guarded = Router::new()
        .route("/admin", get(machines::overview))
        .route("/admin/", get(machines::overview))
        .route("/admin/machines", get(machines::list))
        .route("/admin/machines/{id}", get(machines::show))
        .route("/admin/machines/{id}/rename", post(machines::rename))
        .route("/admin/machines/{id}/tags", post(machines::set_tags))
        .route("/admin/machines/{id}/routes", post(machines::set_routes))
        .route("/admin/machines/{id}/expire", post(machines::expire))
        .route("/admin/machines/{id}/delete", post(machines::delete))
        .route("/admin/users", get(users::list).post(users::create))
        .route("/admin/users/{id}", get(users::show))
        .route("/admin/users/{id}/rename", post(users::rename))
        .route(
            "/admin/users/{id}/delete",
            get(users::confirm_delete).post(users::delete),
        )
        .route("/admin/keys", get(keys::list))
        .route("/admin/keys/preauth", post(keys::create_preauth))
        .route(
            "/admin/keys/preauth/{id}/expire",
            post(keys::expire_preauth),
        )
        .route("/admin/keys/api", post(keys::create_api))
        .route("/admin/keys/api/{id}/expire", post(keys::expire_api))
        .route("/admin/policy", get(policy::show).post(policy::submit))
        .route("/admin/network", get(network::show))
        .route("/admin/logout", post(login::logout))
        .route("/admin/{*rest}", get(not_found).post(not_found))
        .route_layer(axum::middleware::from_fn_with_state(ui.clone(), guard));
    Router::new()
        .route("/admin/login", get(login::page))
        .route(
            "/admin/login/{secret}",
            get(login::confirm).post(login::redeem),
        )
        .route("/admin/assets/style.css", get(layout::style))
        .route("/admin/assets/live.js", get(layout::script))
        .merge(guarded)
        .with_state(ui)
        .layer(axum::middleware::from_fn(headers))
}

/// Every answer: never cached, never framed, no referrer to other sites (a
/// sign-in link is in a URL; `no-referrer` would make browsers send `Origin:
/// null` on the UI's own forms), scripts and styles only from this server.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

/// The session cookie's value, if the browser sent one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// Admits a request with a live session (and on a POST, its CSRF token): the
/// session reaches the handler as an extension, a POST's body as it came.
async fn guard(Shared(ui): Shared<Ui>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    // The pages' own refreshes (live.js) do not keep a session from going idle.
    let used = !parts.headers.contains_key(LIVE_HEADER);
    let session = match session_cookie(&parts.headers) {
        Some(text) => ui.state.admin_session(text, used).await.ok(),
        None => None,
    };
    let Some(session) = session else {
        let next_path = parts
            .uri
            .path_and_query()
            .map_or("/admin", |p| p.as_str())
            .to_owned();
        let to = if parts.method == Method::GET && next_path != "/admin" {
            format!("/admin/login?next={}", encode(&next_path))
        } else {
            "/admin/login".to_owned()
        };
        return Redirect::to(&to).into_response();
    };
    if parts.method != Method::GET && parts.method != Method::HEAD {
        if !same_origin(&parts.headers, &ui.server_url) {
            return refused("this change did not come from headway's own pages");
        }
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(bytes) => bytes,
            Err(_) => {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a form is at most {MAX_FORM_BYTES} bytes"),
                )
                    .into_response();
            }
        };
        let token = Fields::parse(&bytes).get("csrf").unwrap_or_default();
        if !crate::types::secret::digests_match(&token, &session.csrf) {
            tracing::warn!(who = %session.who, path = %parts.uri.path(), "web UI change refused: bad CSRF token");
            return refused(
                "this form is stale or forged (CSRF token mismatch): reload the page and try again",
            );
        }
        parts.extensions.insert(session);
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    }
    parts.extensions.insert(session);
    next.run(Request::from_parts(parts, body)).await
}

/// Whether the browser's `Origin` (when it sent one) is this server: the
/// configured `server_url`, or the host the request was addressed to.
fn same_origin(headers: &HeaderMap, server_url: &str) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if origin == server_url {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    !host.is_empty()
        && origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host)
}

/// A 403 page for a refused change.
fn refused(why: &str) -> Response {
    let body = layout::bare("Refused", maud::html! { p.error role="alert" { (why) } });
    (StatusCode::FORBIDDEN, body).into_response()
}

async fn not_found() -> Response {
    let body = layout::bare(
        "Not found",
        maud::html! { p.error role="alert" { "There is no such page. " a href="/admin" { "Back to the overview" } } },
    );
    (StatusCode::NOT_FOUND, body).into_response()
}

/// A posted form's fields (`application/x-www-form-urlencoded`), repeated names
/// kept in order.
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn parse(body: &[u8]) -> Fields {
        Fields(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, trimmed.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
    }

    /// Whether a checkbox `name` was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A 303 back to `path` with a message for the next page (`?ok=` or `?error=`).
fn back(path: &str, outcome: Result<String, tonic::Status>) -> Response {
    let (key, text) = match outcome {
        Ok(text) => ("ok", text),
        Err(status) => ("error", status.message().to_owned()),
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{sep}{key}={}", encode(&text))).into_response()
}

/// A page that could not read what it shows (the database is unavailable).
fn unavailable(
    session: &AdminSession,
    section: layout::Section,
    err: crate::state::Error,
) -> Response {
    let status = crate::grpc::convert::status(err);
    let notice = layout::Notice {
        ok: None,
        error: Some(status.message().to_owned()),
    };
    let page = layout::page(
        session,
        section,
        "Unavailable",
        &notice,
        layout::Live::On,
        maud::html! {},
    );
    (StatusCode::SERVICE_UNAVAILABLE, page).into_response()
}

/// A rename form: its `name` handed to `call` (one admin API call), and back to
/// `path` saying how it went.
async fn renamed<T, F>(body: &Bytes, path: &str, call: impl FnOnce(String) -> F) -> Response
where
    F: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let new_name = form(body).get("name").unwrap_or_default();
    let answer = call(new_name.clone())
        .await
        .map(|_| format!("Renamed to {new_name}"));
    back(path, answer)
}

/// The session a guarded handler runs for.
type Session = axum::Extension<AdminSession>;

/// The body of a guarded POST, already read by [`guard`].
fn form(body: &Bytes) -> Fields {
    Fields::parse(body)
}

#[cfg(test)]
mod tests;
