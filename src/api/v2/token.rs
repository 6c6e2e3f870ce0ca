//! `POST /api/v2/oauth/token`: OAuth 2.0's client-credentials grant. An OAuth
//! client trades its id and secret (form fields, or HTTP Basic) for an access
//! token that lives an hour and carries the scopes asked for.

use super::Ctx;
use crate::state::oauth::TOKEN_LIFETIME;
use crate::types::oauth::scopes_text;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error as OAuth 2.0 writes it (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// Client id and secret from HTTP Basic (each form-url-encoded, RFC 6749 §2.3.1).
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let text = super::basic(headers)?.ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

pub(super) async fn issue(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let grant = field("grant_type");
    if grant != "client_credentials" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported",
        );
    }
    let (client_id, secret) = match basic(&headers) {
        Some(credentials) => credentials,
        None => (field("client_id"), field("client_secret")),
    };
    if secret.is_empty() {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "send client_id and client_secret (form fields or HTTP Basic)",
        );
    }
    let requested: Vec<String> = field("scope")
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    match ctx
        .state
        .issue_oauth_token(&client_id, &secret, &requested)
        .await
    {
        Ok(issued) => Json(json!({
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME.as_secs(),
            "scope": scopes_text(&issued.scopes),
        }))
        .into_response(),
        Err(err) => {
            use crate::state::Error as E;
            tracing::warn!(client_id = %client_id, "refused an OAuth token request: {err}");
            match err {
                E::Unauthenticated(m) => {
                    oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &m)
                }
                E::PermissionDenied(m) | E::InvalidArgument(m) => {
                    oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", &m)
                }
                other => {
                    let status = crate::grpc::convert::status(other);
                    oauth_error(
                        super::super::v1::http_status(status.code()),
                        "server_error",
                        status.message(),
                    )
                }
            }
        }
    }
}
