//! Recording layers: HTTP requests by the route axum matched, admin API calls
//! by gRPC method. Knows routers and paths; the list of gRPC methods is the
//! caller's (`grpc::METHODS`), so a client inventing paths adds no series.

use super::{GrpcMetrics, HttpMetrics, MethodLabel, PathLabel, RequestLabels};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// The route label of requests no route matched (404s, scanners).
const UNMATCHED: &str = "unmatched";

/// `router`, recording every request's time to response headers and its status
/// by matched route (`/register/{id}`, never the id itself).
pub fn instrument_http<S>(router: Router<S>, metrics: HttpMetrics) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::from_fn_with_state(metrics, record_http))
}

async fn record_http(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let start = Instant::now();
    let response = next.run(request).await;
    let path = PathLabel { path };
    metrics
        .duration
        .get_or_create(&path)
        .observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            code: response.status().as_u16(),
            method,
            path: path.path,
        })
        .inc();
    response
}

/// Standard methods by name; anything else is `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// A tower layer for a tonic server: each call's time to response headers, by
/// method name (`ListNodes`); paths outside `service`'s `methods` are `unknown`.
#[derive(Clone, Debug)]
pub struct GrpcLayer {
    metrics: GrpcMetrics,
    /// The service's path prefix, `/headscale.v1.HeadscaleService/`.
    service: &'static str,
    methods: &'static [&'static str],
}

impl GrpcLayer {
    pub fn new(
        metrics: GrpcMetrics,
        service: &'static str,
        methods: &'static [&'static str],
    ) -> GrpcLayer {
        GrpcLayer {
            metrics,
            service,
            methods,
        }
    }

    fn label(&self, path: &str) -> &'static str {
        path.strip_prefix('/')
            .and_then(|p| p.strip_prefix(self.service))
            .and_then(|p| p.strip_prefix('/'))
            .and_then(|name| self.methods.iter().find(|m| **m == name))
            .copied()
            .unwrap_or("unknown")
    }
}

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcRecorder<S>;

    fn layer(&self, inner: S) -> GrpcRecorder<S> {
        GrpcRecorder {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcRecorder<S> {
    inner: S,
    layer: GrpcLayer,
}

impl<S, B> tower::Service<axum::http::Request<B>> for GrpcRecorder<S>
where
    S: tower::Service<axum::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let histogram = self
            .layer
            .metrics
            .duration
            .get_or_create_owned(&MethodLabel {
                method: self.layer.label(request.uri().path()),
            });
        let start = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            histogram.observe(start.elapsed().as_secs_f64());
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_labels_are_known_method_names_only() {
        let layer = GrpcLayer::new(
            GrpcMetrics::default(),
            "headscale.v1.HeadscaleService",
            &["ListNodes", "CreateUser"],
        );
        assert_eq!(
            layer.label("/headscale.v1.HeadscaleService/ListNodes"),
            "ListNodes"
        );
        assert_eq!(
            layer.label("/headscale.v1.HeadscaleService/Invented"),
            "unknown"
        );
        assert_eq!(layer.label("/other.Service/ListNodes"), "unknown");
        assert_eq!(layer.label("/headscale.v1.HeadscaleService"), "unknown");
        assert_eq!(layer.label(""), "unknown");
    }
}
