//! The small `/machine/*` requests: `POST /machine/set-dns` (a node publishes
//! the `_acme-challenge` TXT record of its own name, for `tailscale cert`),
//! `POST /machine/audit-log` (logged), and every other `/machine/*` path,
//! answered 501 as Headscale does.

use super::{Control, NoisePeer, refuse};
use crate::tailcfg::{AuditLogRequest, SetDNSRequest, SetDNSResponse};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

/// `POST /machine/set-dns`.
pub async fn set_dns(
    State(ctl): State<Control>,
    Extension(peer): Extension<NoisePeer>,
    body: Bytes,
) -> Response {
    let req: SetDNSRequest = match super::parse_request(&body, "set-dns") {
        Ok(req) => req,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(acme) = &ctl.acme else {
        return refuse(
            StatusCode::NOT_IMPLEMENTED,
            "this server publishes no DNS records: its admin can turn on dns.authoritative.listen_addr and delegate the tailnet's domain to it",
        );
    };
    let node = match ctl.state.node_for(&req.node_key, &peer.machine_key) {
        Ok(node) => node,
        Err(err) => return refuse(StatusCode::FORBIDDEN, &err.to_string()),
    };
    if !req.r#type.eq_ignore_ascii_case("TXT") {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("only TXT records can be set, not {:?}", req.r#type),
        );
    }
    let own = super::acme::challenge_name(node.given_name.as_str(), &ctl.settings.base_domain);
    let name = req.name.trim_end_matches('.');
    if !name.eq_ignore_ascii_case(&own) {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "node {} may only set {own}, not {name:?}",
                node.given_name.as_str()
            ),
        );
    }
    if let Err(err) = acme.publish(node.id, &own, &req.value, std::time::Instant::now()) {
        return refuse(StatusCode::BAD_REQUEST, &err.to_string());
    }
    tracing::info!(node = %node.id, name = %own, "published an ACME challenge record");
    Json(SetDNSResponse {}).into_response()
}

/// `POST /machine/audit-log`: recorded in the server log.
pub async fn audit_log(
    State(ctl): State<Control>,
    Extension(peer): Extension<NoisePeer>,
    body: Bytes,
) -> Response {
    let req: AuditLogRequest = match super::parse_request(&body, "audit-log") {
        Ok(req) => req,
        Err(refusal) => return refusal.into_response(),
    };
    let node = match ctl.state.node_for(&req.node_key, &peer.machine_key) {
        Ok(node) => node,
        Err(err) => return refuse(StatusCode::FORBIDDEN, &err.to_string()),
    };
    if req.action.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "an audit-log request needs an Action",
        );
    }
    tracing::info!(
        node = %node.id,
        name = node.given_name.as_str(),
        action = %req.action.escape_default(),
        details = %req.details.escape_default(),
        "client audit log"
    );
    StatusCode::OK.into_response()
}

/// Any other `/machine/*` request.
pub async fn not_implemented(request: Request) -> Response {
    tracing::debug!(method = %request.method(), path = %request.uri().path(), "unknown client request");
    refuse(
        StatusCode::NOT_IMPLEMENTED,
        &format!("{} is not implemented by this server", request.uri().path()),
    )
}
