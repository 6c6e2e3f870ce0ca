//! Signing in and out of the web UI: the sign-in page, one-time links
//! redeemed for a session cookie, and sign-out.

use super::layout;
use super::{Session, Ui};
use crate::state::admin::SESSION_LIFETIME;
use crate::types::session_set_cookie;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// Where to go after signing in: a page of the UI, never another site.
fn after_sign_in(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with("/admin")
                && !path.starts_with("/admin/login")
                && !path.contains("//")
                && !path.contains('\\') =>
        {
            path
        }
        _ => "/admin",
    }
}

/// `GET /admin/login`: how to sign in.
pub async fn page(State(ui): State<Ui>) -> Response {
    layout::bare(
        "Sign in",
        html! {
            @if ui.oidc {
                section {
                    a.button #sign-in-oidc href="/admin/login/oidc" { "Sign in with your identity provider" }
                }
            }
            section {
                p { "Sign-in links come from the server's command line. On the server, run:" }
                pre { code { "headway admin login-link" } }
                p.muted { "and open the link it prints. A link works once, for ten minutes." }
            }
        },
    )
    .into_response()
}

/// `GET /admin/login/{secret}`: a button that redeems the link, so a link
/// preview (a chat client fetching the URL) does not use it up.
pub async fn confirm(Path(secret): Path<String>) -> Response {
    let action = format!("/admin/login/{secret}");
    layout::bare(
        "Sign in",
        html! {
            section {
                p { "Sign in to headway's web UI with this one-time link." }
                form #sign-in method="post" action=(action) {
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
    .into_response()
}

/// `POST /admin/login/{secret}`: redeems the link for a session cookie.
pub async fn redeem(
    State(ui): State<Ui>,
    Path(secret): Path<String>,
    Query(next): Query<Next>,
    headers: HeaderMap,
) -> Response {
    if !super::same_origin(&headers, &ui.server_url) {
        return super::refused("this sign-in did not come from headway's own page");
    }
    match ui.state.redeem_login_link(&secret).await {
        Ok(opened) => {
            tracing::info!(who = %opened.session.who, "web UI session opened");
            let mut response = Redirect::to(after_sign_in(next.next.as_deref())).into_response();
            let cookie = session_set_cookie(&opened.secret, SESSION_LIFETIME.as_secs(), ui.secure);
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(err) => {
            let status = crate::grpc::convert::status(err);
            tracing::info!(why = status.message(), "web UI sign-in refused");
            let code = match status.code() {
                tonic::Code::Unavailable | tonic::Code::Internal => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::FORBIDDEN,
            };
            let body = layout::bare(
                "Sign in",
                html! { p.error role="alert" { (status.message()) } },
            );
            (code, body).into_response()
        }
    }
}

/// `POST /admin/logout`: ends the session and forgets the cookie.
pub async fn logout(State(ui): State<Ui>, session: Session) -> Response {
    if let Err(err) = ui.state.end_admin_session(&session).await {
        tracing::warn!(%err, "web UI sign-out could not delete the session");
    }
    tracing::info!(who = %session.who, "web UI session closed");
    let mut response = layout::bare(
        "Signed out",
        html! {
            p.flash role="status" { "You are signed out." }
            p { a href="/admin/login" { "Sign in again" } }
        },
    )
    .into_response();
    let cookie = session_set_cookie("", 0, ui.secure);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn sign_in_goes_back_only_to_the_ui() {
        assert_eq!(
            super::after_sign_in(Some("/admin/machines/3")),
            "/admin/machines/3"
        );
        assert_eq!(super::after_sign_in(None), "/admin");
        for elsewhere in [
            "https://evil.example/",
            "//evil.example/admin",
            "/admin/..//x",
            "/adminx\\y",
            "/admin/login/x",
        ] {
            let target = super::after_sign_in(Some(elsewhere));
            assert_eq!(target, "/admin", "{elsewhere}");
        }
    }
}
