//! `GET /machine/ssh/action/{src}/to/{dst}`: the destination of a Tailscale SSH
//! connection that matched a `check` rule asks whether to let it in. Within the
//! rule's check period after an approval it is let in at once; otherwise the
//! server opens a check (an admin approves it with `auth approve --auth-id`, as
//! the message shown to the SSH user says) and the client waits on a follow-up
//! URL for the verdict.

use super::{Control, NoisePeer, refuse};
use crate::state::SshVerdict;
use crate::tailcfg::SSHAction;
use crate::types::NodeId;
use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct ActionQuery {
    /// Present on follow-ups: the check the client waits for.
    auth_id: Option<String>,
    /// The local user the session would run as (for the log only).
    local_user: Option<String>,
}

/// An action with the forwarding permissions a granted session gets.
fn base() -> SSHAction {
    SSHAction {
        allow_agent_forwarding: true,
        allow_local_port_forwarding: true,
        allow_remote_port_forwarding: true,
        ..SSHAction::default()
    }
}

/// `GET /machine/ssh/action/{src}/to/{dst}`.
pub async fn action(
    State(ctl): State<Control>,
    Extension(peer): Extension<NoisePeer>,
    Path((src, dst)): Path<(String, String)>,
    Query(query): Query<ActionQuery>,
) -> Response {
    let Ok(src) = src.parse::<u64>().map(NodeId) else {
        return refuse(StatusCode::BAD_REQUEST, "Invalid src_node_id");
    };
    let Ok(dst) = dst.parse::<u64>().map(NodeId) else {
        return refuse(StatusCode::BAD_REQUEST, "Invalid dst_node_id");
    };
    let Some(dst_node) = ctl.state.snapshot().get(dst).cloned() else {
        return refuse(StatusCode::NOT_FOUND, "dst node not found");
    };
    // Only the destination decides about sessions into itself.
    if dst_node.machine_key != peer.machine_key {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "machine key does not match dst node",
        );
    }
    let period = ctl.state.ssh_check_period(src, dst);

    if let Some(auth_id) = &query.auth_id {
        match ctl.state.wait_ssh_check(auth_id, src, dst).await {
            Ok(Some(SshVerdict::Approved)) => {
                tracing::info!(%src, %dst, local_user = query.local_user.as_deref().unwrap_or(""), "SSH check approved");
                return Json(SSHAction {
                    accept: true,
                    ..base()
                })
                .into_response();
            }
            Ok(Some(SshVerdict::Rejected)) => {
                return Json(SSHAction {
                    reject: true,
                    ..base()
                })
                .into_response();
            }
            // Expired or unknown (a restart): ask again while a rule still checks.
            Ok(None) if period.is_some() => {}
            Ok(None) => return refuse(StatusCode::BAD_REQUEST, "Invalid auth_id"),
            Err(crate::state::Error::Unauthenticated(m)) => {
                return refuse(StatusCode::UNAUTHORIZED, &m);
            }
            Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    } else if let Some(period) = period
        && ctl.state.ssh_recently_approved(src, dst, period)
    {
        return Json(SSHAction {
            accept: true,
            ..base()
        })
        .into_response();
    }

    let id = ctl.state.begin_ssh_check(src, dst);
    tracing::info!(%src, %dst, auth_id = %id.as_str(), "SSH check pending, waiting for an admin: auth approve --auth-id {}", id.as_str());
    let server = &ctl.server_url;
    Json(SSHAction {
        message: format!(
            "# headway SSH requires an additional check.\n# To authenticate, visit: {server}/auth/{id}\n# or ask an admin to run: headway auth approve --auth-id {id}\n",
            id = id.as_str()
        ),
        hold_and_delegate: format!(
            "{server}/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?auth_id={}&local_user=%24LOCAL_USER",
            id.as_str()
        ),
        ..base()
    })
    .into_response()
}
