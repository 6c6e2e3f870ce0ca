//! `/api/v1`: Headscale's REST API, served as its grpc-gateway serves it. Each
//! route turns path, query and JSON body into the RPC's request, calls the same
//! `headscale.v1` service the Unix socket and TCP gRPC serve (in process), and
//! writes the answer or the gRPC status as grpc-gateway's JSON.

use super::json;
use super::schema::{self, Body, Operation};
use crate::grpc::AdminApi;
use crate::grpc::pb::headscale_service_server::HeadscaleServiceServer;
use crate::state::State;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawPathParams, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use prost::Message;
use prost_reflect::DynamicMessage;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::Code;

/// The largest request body: the gRPC API's own message limit, so a policy that
/// `headway policy set` accepts is accepted here too.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// The `/api/v1` routes, every one behind a Bearer API key (an unknown path
/// under `/api/v1` too, as in Headscale).
pub fn router(state: Arc<State>, admin: AdminApi) -> Router {
    let gateway = Arc::new(Gateway {
        service: admin.into_service(),
    });
    let mut paths: BTreeMap<&str, MethodRouter> = BTreeMap::new();
    for op in schema::operations() {
        let filter =
            MethodFilter::try_from(op.method.clone()).expect("HTTP rules name standard methods");
        let gateway = gateway.clone();
        let handler = move |params: RawPathParams, request: Request| async move {
            gateway.serve(op, &params, request).await
        };
        let route = paths.remove(op.path.as_str()).unwrap_or_default();
        paths.insert(&op.path, route.merge(on(filter, handler)));
    }
    let mut router = Router::new();
    for (path, route) in paths {
        router = router.route(path, route.fallback(method_not_allowed));
    }
    router
        .route("/api/v1/{*rest}", axum::routing::any(not_found))
        .route_layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(state, authenticate))
}

/// Refuses a request without a current API key as Headscale does: 401 with
/// the body `Unauthorized`; the reason goes to the log with the client's address.
async fn authenticate(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    request: Request,
    next: Next,
) -> Response {
    let header = request.headers().get(header::AUTHORIZATION);
    match crate::grpc::auth::check(&state, header).await {
        Ok(()) => next.run(request).await,
        Err(status) => {
            super::log_refused(&request, status.message());
            let mut response = (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

async fn not_found() -> Response {
    error(Code::NotFound, "Not Found")
}

async fn method_not_allowed() -> Response {
    error(Code::Unimplemented, "Method Not Allowed")
}

/// grpc-gateway's error answer: the HTTP status its gRPC code maps to, and
/// `{"code", "message", "details"}`.
fn error(code: Code, message: &str) -> Response {
    let body = serde_json::json!({"code": code as i32, "message": message, "details": []});
    (http_status(code), axum::Json(body)).into_response()
}

/// grpc-gateway's mapping of gRPC codes to HTTP statuses.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

struct Gateway {
    service: HeadscaleServiceServer<AdminApi>,
}

impl Gateway {
    async fn serve(&self, op: &Operation, params: &RawPathParams, request: Request) -> Response {
        let query = request.uri().query().unwrap_or("").to_owned();
        let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
            Ok(body) => body,
            Err(e) => return error(Code::InvalidArgument, &e.to_string()),
        };
        let message = match request_message(op, params, &query, &body) {
            Ok(message) => message,
            Err(why) => return error(Code::InvalidArgument, &why),
        };
        match self.call(op, message.encode_to_vec()).await {
            Ok(answer) => match DynamicMessage::decode(op.output(), answer.as_ref()) {
                Ok(reply) => axum::Json(json::to_json(&reply)).into_response(),
                Err(e) => error(Code::Internal, &format!("undecodable reply: {e}")),
            },
            Err(status) => error(status.code(), status.message()),
        }
    }

    /// One unary call into the gRPC service, as bytes.
    async fn call(&self, op: &Operation, request: Vec<u8>) -> Result<Bytes, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.service.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = op
            .grpc_path()
            .parse()
            .map_err(|_| tonic::Status::internal("bad method path"))?;
        let request = tonic::Request::new(Bytes::from(request));
        Ok(grpc.unary(request, path, Raw).await?.into_inner())
    }
}

/// The RPC's request: the JSON body (for `body: "*"`) or the query string,
/// then the path parameters, which win.
fn request_message(
    op: &Operation,
    params: &RawPathParams,
    query: &str,
    body: &[u8],
) -> Result<DynamicMessage, String> {
    let desc = op.input();
    let mut message = match op.body {
        Body::Whole => json::from_body(desc.clone(), body)?,
        Body::None => {
            let mut message = DynamicMessage::new(desc.clone());
            let allowed = op.query_fields();
            for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
                // grpc-gateway ignores parameters that name no field.
                let Some(field) = json::field(&desc, &key) else {
                    continue;
                };
                if allowed.contains(&field) {
                    json::set_text(&mut message, &field, &value)?;
                }
            }
            message
        }
    };
    for (name, value) in params.iter() {
        let field = desc
            .get_field_by_name(name)
            .ok_or_else(|| format!("no field {name}"))?;
        json::set_text(&mut message, &field, value)?;
    }
    Ok(message)
}

/// A codec that passes encoded messages through: the gateway encodes and
/// decodes them itself from the descriptors.
#[derive(Clone, Copy, Debug, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
