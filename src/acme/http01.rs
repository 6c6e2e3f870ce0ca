//! The HTTP-01 side of ACME: the key authorizations of validations under way,
//! answered at `/.well-known/acme-challenge/{token}` on `tls_letsencrypt_listen`;
//! every other request there is redirected to the HTTPS server URL, as Headscale
//! does.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Tokens of HTTP-01 validations under way and their key authorizations.
#[derive(Debug, Default)]
pub struct Tokens(Mutex<HashMap<String, String>>);

impl Tokens {
    pub fn insert(&self, token: String, key_authorization: String) {
        self.map().insert(token, key_authorization);
    }

    /// Forgets every token (the order they belong to has ended).
    pub fn clear(&self) {
        self.map().clear();
    }

    fn get(&self, token: &str) -> Option<String> {
        self.map().get(token).cloned()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone)]
struct Http01 {
    tokens: Arc<Tokens>,
    /// `https://host[:port]`, where everything else is sent.
    https_base: String,
}

/// The router of the `tls_letsencrypt_listen` listener.
pub fn router(tokens: Arc<Tokens>, https_base: &str) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(answer))
        .fallback(redirect)
        .with_state(Http01 {
            tokens,
            https_base: https_base.trim_end_matches('/').to_owned(),
        })
}

async fn answer(State(state): State<Http01>, Path(token): Path<String>) -> Response {
    match state.tokens.get(&token) {
        Some(key_authorization) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            key_authorization,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn redirect(State(state): State<Http01>, uri: Uri) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, format!("{}{path}", state.https_base))],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_path(router: &Router, path: &str) -> (StatusCode, String, String) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            location,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn answers_known_tokens_only_and_redirects_the_rest_to_https() {
        let tokens = Arc::new(Tokens::default());
        let router = router(Arc::clone(&tokens), "https://hw.example.com/");
        tokens.insert("tok-1".into(), "tok-1.thumb".into());
        assert_eq!(
            get_path(&router, "/.well-known/acme-challenge/tok-1").await,
            (StatusCode::OK, String::new(), "tok-1.thumb".into())
        );
        assert_eq!(
            get_path(&router, "/.well-known/acme-challenge/other")
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        tokens.clear();
        assert_eq!(
            get_path(&router, "/.well-known/acme-challenge/tok-1")
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        let (status, location, _) = get_path(&router, "/register/abc?x=1").await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(location, "https://hw.example.com/register/abc?x=1");
    }
}
