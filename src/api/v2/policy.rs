//! `/api/v2/tailnet/-/acl`: the policy file, read and set through the same
//! operations as `policy get` and `policy set`, as HuJSON or JSON, with an ETag
//! so that two editors do not overwrite each other; and `acl/validate`.

use super::{Answer, ApiError, Caller, Ctx};
use crate::grpc::pb;
use crate::grpc::pb::headscale_service_server::HeadscaleService;
use crate::types::oauth::{Access, Resource};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const HUJSON: &str = "application/hujson";

/// The policy's ETag: a digest of its text, quoted.
fn etag(text: &str) -> String {
    format!(
        "\"{}\"",
        hex::encode(&Sha256::digest(text.as_bytes())[..16])
    )
}

/// Whether the caller asked for HuJSON (the text as written, comments kept).
fn wants_hujson(headers: &HeaderMap, name: header::HeaderName) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(HUJSON))
}

/// The policy in the form asked for, with its ETag.
fn answer(text: &str, hujson: bool) -> Answer<Response> {
    let (body, content_type) = if hujson {
        (text.to_owned(), HUJSON)
    } else {
        let json = crate::policy::hujson::standardize(text)
            .map_err(|e| ApiError::bad_request(format!("the stored policy is not HuJSON: {e}")))?;
        (json, "application/json")
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(tag) = HeaderValue::from_str(&etag(text)) {
        headers.insert(header::ETAG, tag);
    }
    Ok(response)
}

async fn current(ctx: &Ctx) -> Answer<String> {
    Ok(ctx
        .admin
        .get_policy(tonic::Request::new(pb::GetPolicyRequest {}))
        .await?
        .into_inner()
        .policy)
}

pub(super) async fn get(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Answer<Response> {
    caller.require(Resource::PolicyFile, Access::Read)?;
    let text = current(&ctx).await?;
    answer(&text, wants_hujson(&headers, header::ACCEPT))
}

fn body_text(body: &Bytes) -> Answer<String> {
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("the policy is not UTF-8"))
}

/// Sets the policy (database mode). With `If-Match`, only if the policy is
/// still the one that ETag names: 412 otherwise.
pub(super) async fn set(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer<Response> {
    caller.require(Resource::PolicyFile, Access::Write)?;
    let text = body_text(&body)?;
    if let Some(expected) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        let expected = expected.trim();
        if expected != "*" && expected != "\"ts-default\"" {
            let now = match current(&ctx).await {
                Ok(text) => etag(&text),
                Err(e) if e.status == StatusCode::NOT_FOUND => String::new(),
                Err(e) => return Err(e),
            };
            if now != expected {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition failed: the policy changed since the ETag given in If-Match; read it again".into(),
                ));
            }
        }
    }
    let stored = ctx
        .admin
        .set_policy(tonic::Request::new(pb::SetPolicyRequest { policy: text }))
        .await?
        .into_inner()
        .policy;
    let hujson =
        wants_hujson(&headers, header::ACCEPT) || wants_hujson(&headers, header::CONTENT_TYPE);
    answer(&stored, hujson)
}

/// Checks a policy, and runs its `tests`, without putting it in force: 200
/// with an empty body when it holds.
pub(super) async fn validate(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Answer<StatusCode> {
    caller.require(Resource::PolicyFile, Access::Read)?;
    let text = body_text(&body)?;
    if text.trim_start().starts_with('[') {
        return Err(ApiError::bad_request(
            "headway validates whole policies: put the tests in the policy's \"tests\" and send the policy",
        ));
    }
    ctx.admin
        .check_policy(tonic::Request::new(pb::CheckPolicyRequest { policy: text }))
        .await?;
    Ok(StatusCode::OK)
}
