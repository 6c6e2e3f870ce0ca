//! Bearer API-key authentication for the remote (TCP) gRPC listener and the REST API.
//!
//! The Unix socket is trusted by file permissions and never passes through here.

use crate::state::State;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::codegen::http;
use tower::{Layer, Service};

/// Wraps a service so that every request must carry `authorization: Bearer <api key>`.
#[derive(Clone, Debug)]
pub struct ApiKeyLayer {
    state: Arc<State>,
}

impl ApiKeyLayer {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for ApiKeyLayer {
    type Service = ApiKeyAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyAuth {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ApiKeyAuth<S> {
    inner: S,
    state: Arc<State>,
}

/// The API key text of an `authorization` header value, if it is a Bearer credential.
pub fn bearer(value: Option<&http::HeaderValue>) -> Result<&str, Status> {
    let value = value
        .ok_or_else(|| {
            Status::unauthenticated("missing authorization header: send `Bearer <api key>`")
        })?
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization header is not text"))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Status::unauthenticated(
            "authorization header must be `Bearer <api key>`",
        ));
    }
    Ok(token.trim())
}

/// Whether an `authorization` header carries a current API key (gRPC over TCP
/// and the REST API both ask this).
pub async fn check(state: &State, header: Option<&http::HeaderValue>) -> Result<(), Status> {
    let token = bearer(header)?;
    state
        .authenticate_api_key(token)
        .await
        .map(|_| ())
        .map_err(super::convert::status)
}

impl<S, B> Service<http::Request<B>> for ApiKeyAuth<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The clone that was polled ready handles this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            match check(&state, req.headers().get(http::header::AUTHORIZATION)).await {
                Ok(()) => inner.call(req).await,
                Err(status) => {
                    // One line per refused key, with its source, for tools such
                    // as fail2ban; the connection limits bound how fast one
                    // source can make them.
                    let source = req
                        .extensions()
                        .get::<crate::limits::Conn>()
                        .map_or_else(|| "unknown".to_owned(), |c| c.source().to_string());
                    tracing::warn!(%source, "refused an admin API call: {}", status.message());
                    Ok(status.into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        let ok = http::HeaderValue::from_static("Bearer hskey-api-x-y");
        assert_eq!(bearer(Some(&ok)).unwrap(), "hskey-api-x-y");
        let lower = http::HeaderValue::from_static("bearer   abc ");
        assert_eq!(bearer(Some(&lower)).unwrap(), "abc");
        assert!(bearer(None).is_err());
        assert!(bearer(Some(&http::HeaderValue::from_static("Basic abc"))).is_err());
        assert!(bearer(Some(&http::HeaderValue::from_static("Bearer"))).is_err());
    }
}
