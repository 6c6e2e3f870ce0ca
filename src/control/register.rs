//! `POST /machine/register`: pre-auth keys, interactive registration (an auth URL,
//! then a follow-up request that waits for the admin or the person's sign-in),
//! restarts with a known key, logout and expired keys; a new node key is a new
//! login. Every outcome is HTTP 200 with a
//! `RegisterResponse`; only `Error` text reaches the user (`backend error: …`).
//! The one exception: a source address past its registration rate limit is
//! answered `429 Too Many Requests` with `Retry-After`, before anything is read.

use super::{Control, MIN_CAPABILITY_VERSION, NoisePeer};
use crate::metrics::{RegisterMethod as Method, RegisterOutcome as Outcome};
use crate::state::{self, Admission, RegistrationId, RegistrationOutcome};
use crate::tailcfg::{Login, RegisterRequest, RegisterResponse, User};
use crate::types::{Node, RegisterMethod};
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// `POST /machine/register`.
pub async fn register(
    State(ctl): State<Control>,
    Extension(peer): Extension<NoisePeer>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> Response {
    let client = client.map(|Extension(ConnectInfo(client))| client);
    let outcomes = &ctl.state.metrics().registrations;
    // Every attempt counts, whatever it carries: each may cost a key check or
    // a pending registration.
    if let Some(client) = client
        && let Err(wait) = ctl.register_limit.take(client.ip())
    {
        if let Some(suppressed) = ctl.register_limit.log_refusal() {
            tracing::warn!(
                %client,
                machine_key = %peer.machine_key,
                suppressed,
                "refused registration attempts past limits.register_burst (429)"
            );
        }
        outcomes.record(Method::Unknown, Outcome::RateLimited);
        return too_many_attempts(wait);
    }
    let req: RegisterRequest = match super::parse_request(&body, "register") {
        Ok(req) => req,
        Err(refusal) => {
            outcomes.record(Method::Unknown, Outcome::Rejected);
            return refusal.into_response();
        }
    };
    if let Some(refusal) = version_refusal(req.version) {
        outcomes.record(Method::Unknown, Outcome::Rejected);
        return Json(refusal).into_response();
    }
    let method = method_of(&ctl, &req);
    let response = match handle(&ctl, &peer, &req).await {
        Ok(response) => {
            outcomes.record(method, outcome_of(method, &response));
            response
        }
        Err(err) => {
            let outcome = match err {
                state::Error::Internal(_) => Outcome::Error,
                _ => Outcome::Rejected,
            };
            outcomes.record(method, outcome);
            match &err {
                state::Error::Internal(cause) => tracing::error!(%cause, "registration failed"),
                // One line per refused key, with its source, for tools such as
                // fail2ban; the rate limit above bounds how many one source gets.
                state::Error::Unauthenticated(why) => tracing::warn!(
                    client = %client.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
                    machine_key = %peer.machine_key,
                    "refused a registration: {why}"
                ),
                _ => {}
            }
            RegisterResponse::error(err.to_string())
        }
    };
    Json(response).into_response()
}

/// How a request asks to join, in the order [`handle`] decides it.
fn method_of(ctl: &Control, req: &RegisterRequest) -> Method {
    if req.is_logout(chrono::Utc::now()) {
        Method::Logout
    } else if req.auth_key().is_some() {
        Method::AuthKey
    } else if req.followup().is_some() {
        Method::Interactive
    } else if ctl.state.snapshot().by_node_key(&req.node_key).is_some() {
        Method::Known
    } else {
        Method::Interactive
    }
}

/// What the client was told, as an outcome: logged in (or out), handed an
/// auth URL, or refused.
fn outcome_of(method: Method, response: &RegisterResponse) -> Outcome {
    if !response.error.is_empty() {
        Outcome::Rejected
    } else if !response.auth_url.is_empty() {
        Outcome::Pending
    } else if response.machine_authorized || (method == Method::Logout && response.node_key_expired)
    {
        Outcome::Success
    } else {
        // An expired key: the client must log in again.
        Outcome::Rejected
    }
}

/// `429 Too Many Requests` with `Retry-After` in whole seconds (at least 1);
/// clients since capability version 137 wait that long before trying again.
fn too_many_attempts(wait: Duration) -> Response {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = super::refuse(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("too many registration attempts from this address; retry in {seconds}s"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The answer for a client older than Tailscale v1.80, in words it prints.
fn version_refusal(version: u32) -> Option<RegisterResponse> {
    (version < u32::from(MIN_CAPABILITY_VERSION)).then(|| {
        RegisterResponse::error(format!(
            "this Tailscale client is too old for this server (capability version {version}): \
             headway needs Tailscale v1.80 or newer (capability version {MIN_CAPABILITY_VERSION}); please update Tailscale"
        ))
    })
}

async fn handle(
    ctl: &Control,
    peer: &NoisePeer,
    req: &RegisterRequest,
) -> state::Result<RegisterResponse> {
    let state = &ctl.state;
    let now = chrono::Utc::now();
    let known = state.snapshot().by_node_key(&req.node_key).cloned();
    if let Some(node) = &known
        && node.machine_key != peer.machine_key
    {
        return Ok(RegisterResponse::error(
            "node exists with a different machine key",
        ));
    }

    // Logout: a past expiry wins over everything else.
    if req.is_logout(now) {
        let Some(node) = known else {
            // Unknown key: answer 200 so that `tailscale logout` completes.
            return Ok(RegisterResponse {
                node_key_expired: true,
                ..RegisterResponse::default()
            });
        };
        let change = state.logout(node.id).await?;
        state.notifier().publish(change);
        return Ok(RegisterResponse {
            node_key_expired: true,
            ..ctl.node_state(&node).await
        });
    }

    if let Some(key_text) = req.auth_key() {
        // A restart of a still-valid node (containers run `up --authkey` every time)
        // needs no key check: a spent single-use key keeps working for it.
        if let Some(node) = &known
            && !node.is_expired(now)
        {
            return Ok(ctl.node_state(node).await);
        }
        let key = state.authenticate_preauth_key(key_text).await?;
        let hostinfo = req.hostinfo.as_ref();
        let admission = Admission {
            machine_key: peer.machine_key,
            node_key: req.node_key,
            hostname: hostinfo
                .map(|h| h.hostname().to_owned())
                .unwrap_or_default(),
            hostinfo: hostinfo.map(|h| h.as_json().to_owned()),
            advertised_routes: hostinfo
                .map(|h| h.routable_ips().to_vec())
                .unwrap_or_default(),
            user_id: key.user_id,
            tags: key.tags.clone(),
            requested_tags: hostinfo
                .map(|h| h.request_tags().to_vec())
                .unwrap_or_default(),
            ephemeral: key.ephemeral,
            register_method: RegisterMethod::AuthKey,
            requested_expiry: req.expiry.filter(|e| *e > now),
            auth_key: Some(key),
        };
        let (node, change) = state.admit(admission).await?;
        state.notifier().publish(change);
        return Ok(ctl.node_state(&node).await);
    }

    if let Some(url) = req.followup() {
        return follow_up(ctl, peer, req, url).await;
    }

    if let Some(node) = known {
        if node.is_expired(now) {
            return Ok(RegisterResponse {
                node_key_expired: true,
                machine_authorized: false,
                ..RegisterResponse::default()
            });
        }
        if req.expiry.is_some_and(|e| e > now) {
            return Ok(RegisterResponse::error("extending key is not allowed"));
        }
        return Ok(ctl.node_state(&node).await);
    }

    // A new node key without a pre-auth key (`tailscale up --force-reauth`, or a
    // login after expiry) is a new login, as in Headscale: the person or an admin
    // authenticates it again, even though the machine still holds its old key.
    Ok(RegisterResponse::auth_url(
        begin_interactive(ctl, peer, req).await?,
    ))
}

/// Queues an interactive registration and returns the URL the client shows.
async fn begin_interactive(
    ctl: &Control,
    peer: &NoisePeer,
    req: &RegisterRequest,
) -> state::Result<String> {
    let hostinfo = req.hostinfo.as_ref();
    let (id, _) = ctl
        .state
        .begin_registration(state::RegistrationRequest {
            machine_key: peer.machine_key,
            node_key: req.node_key,
            hostname: hostinfo
                .map(|h| h.hostname())
                .unwrap_or_default()
                .to_owned(),
            hostinfo: hostinfo.map(|h| h.as_json().to_owned()),
            advertised_routes: hostinfo
                .map(|h| h.routable_ips().to_vec())
                .unwrap_or_default(),
            requested_tags: hostinfo
                .map(|h| h.request_tags().to_vec())
                .unwrap_or_default(),
            requested_expiry: req.expiry.filter(|e| *e > chrono::Utc::now()),
        })
        .await?;
    Ok(format!("{}/register/{id}", ctl.server_url))
}

/// The client waits on its auth URL: block until an admin registers or rejects it.
async fn follow_up(
    ctl: &Control,
    peer: &NoisePeer,
    req: &RegisterRequest,
    url: &str,
) -> state::Result<RegisterResponse> {
    let id = url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .and_then(RegistrationId::parse);
    let Some(id) = id else {
        return Ok(RegisterResponse::error("invalid followup URL"));
    };
    let Some(mut outcome) = ctl.state.watch_registration(&id).await? else {
        // Unknown or expired: start over with a fresh URL.
        return Ok(RegisterResponse::auth_url(
            begin_interactive(ctl, peer, req).await?,
        ));
    };
    loop {
        let current = outcome.borrow_and_update().clone();
        match current {
            Some(RegistrationOutcome::Registered(node_id)) => {
                let node = ctl.state.snapshot().get(node_id).cloned();
                return Ok(match node {
                    Some(node) => ctl.node_state(&node).await,
                    None => RegisterResponse::error(
                        "the node was removed before it finished logging in",
                    ),
                });
            }
            Some(RegistrationOutcome::Rejected(reason)) => {
                return Ok(RegisterResponse::error(reason));
            }
            None => {}
        }
        if outcome.changed().await.is_err() {
            // The registration expired unanswered: hand out a new URL.
            return Ok(RegisterResponse::auth_url(
                begin_interactive(ctl, peer, req).await?,
            ));
        }
    }
}

impl Control {
    /// The logged-in answer for `node`: authorised, with its user and login.
    async fn node_state(&self, node: &Arc<Node>) -> RegisterResponse {
        let expired = node.is_expired(chrono::Utc::now());
        let user = match node.user_id {
            Some(id) => self.state.get_user(id).await.ok(),
            None => None,
        };
        let (id, name, display, pic, created) = match &user {
            Some(u) => (
                u.id.0,
                u.login_name(),
                u.display(),
                u.profile_pic_url.clone(),
                Some(u.created_at),
            ),
            None => (
                super::map::TAGGED_USER_ID,
                "tagged-devices".into(),
                "tagged-devices".into(),
                String::new(),
                None,
            ),
        };
        RegisterResponse {
            user: User {
                id,
                display_name: display.clone(),
                profile_pic_url: pic.clone(),
                created,
            },
            login: Login {
                id,
                provider: "headway".into(),
                login_name: name,
                display_name: display,
                profile_pic_url: pic,
            },
            node_key_expired: expired,
            machine_authorized: !expired,
            ..RegisterResponse::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_clients_are_told_to_update() {
        let refusal = version_refusal(112).expect("v1.78 is refused");
        assert!(
            refusal.error.contains("v1.80 or newer"),
            "{}",
            refusal.error
        );
        assert!(refusal.auth_url.is_empty() && !refusal.machine_authorized);
        assert!(version_refusal(113).is_none());
        assert!(version_refusal(142).is_none());
    }
}
