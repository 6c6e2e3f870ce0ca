//! `POST /machine/map`: the long-poll map stream, lite updates and one-shot maps.

use super::hub::Inlet;
use super::{Control, MIN_CAPABILITY_VERSION, NoisePeer, frame, refuse};
use crate::metrics::{MapFrame, SessionEnd};
use crate::state::{self, Presence};
use crate::tailcfg::{Hostinfo, MapRequest, MapRequestKind};
use crate::types::NodeId;
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// Keep-alives every 50 s plus up to 9 s of jitter (the client gives up after 120 s),
/// so that thousands of sessions do not wake in lockstep.
fn next_keep_alive() -> Instant {
    let jitter = u64::from(crate::types::secret::random_bytes::<1>()[0]) * 9000 / 255;
    Instant::now() + Duration::from_secs(50) + Duration::from_millis(jitter)
}

/// `POST /machine/map`.
pub async fn map(
    State(ctl): State<Control>,
    Extension(peer): Extension<NoisePeer>,
    body: Bytes,
) -> Response {
    let req: MapRequest = match super::parse_request(&body, "map") {
        Ok(req) => req,
        Err(refusal) => return refusal.into_response(),
    };
    if req.version < u32::from(MIN_CAPABILITY_VERSION) {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("unsupported client version {}", req.version),
        );
    }
    let node = match ctl.state.node_for(&req.node_key, &peer.machine_key) {
        Ok(node) => node,
        Err(err) => return refuse(StatusCode::NOT_FOUND, &err.to_string()),
    };

    // What the client reports about itself, kept before answering anything.
    let previous = node
        .hostinfo
        .as_deref()
        .and_then(|h| Hostinfo::from_json(h).ok());
    let hostinfo = req.hostinfo.clone().map(|h| match &previous {
        Some(old) => h.with_previous_net_info(old),
        None => h,
    });
    let report = Presence {
        endpoints: Some(req.endpoints.clone()),
        disco_key: req.disco_key,
        advertised_routes: hostinfo.as_ref().map(|h| h.routable_ips().to_vec()),
        hostname: hostinfo.as_ref().map(|h| h.hostname().to_owned()),
        hostinfo: hostinfo.map(|h| h.as_json().to_owned()),
    };
    let stored = match ctl.state.report_presence(node.id, report).await {
        Ok(change) => {
            ctl.state.notifier().publish(change);
            true
        }
        Err(state::Error::NotFound(_)) => return refuse(StatusCode::NOT_FOUND, "node not found"),
        Err(err) => {
            tracing::warn!(node = %node.id, %err, "could not store a map request's report");
            false
        }
    };

    let metrics = &ctl.state.metrics().map;
    match req.kind() {
        MapRequestKind::LiteUpdate => {
            metrics.endpoint_update(stored);
            StatusCode::OK.into_response()
        }
        MapRequestKind::OneShot => match ctl.full_map_json(node.id, req.version) {
            Some(json) => {
                let frame = if req.wants_zstd() {
                    frame::encode(&json)
                } else {
                    frame::encode_plain(&json)
                };
                metrics.sent(MapFrame::Full, frame.len());
                frame.into_response()
            }
            None => refuse(StatusCode::NOT_FOUND, "node not found"),
        },
        MapRequestKind::Stream => stream(ctl, node.id, req.version, req.wants_zstd()).await,
    }
}

/// Ends a session when its response body is dropped (client gone or server done).
struct SessionGuard {
    ctl: Control,
    node: NodeId,
    session: u64,
    /// Why it ends, for `headscale_mapresponse_ended_total`: the client or the
    /// server going away, unless the stream learns the node was removed.
    end: SessionEnd,
}

impl SessionGuard {
    fn new(ctl: Control, node: NodeId, session: u64) -> SessionGuard {
        ctl.state.metrics().map.sessions_open.inc();
        SessionGuard {
            ctl,
            node,
            session,
            end: SessionEnd::Done,
        }
    }

    fn ends_because(&mut self, why: SessionEnd) {
        self.end = why;
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let metrics = &self.ctl.state.metrics().map;
        metrics.sessions_open.dec();
        metrics.session_ended(self.end);
        self.ctl.hub.close(self.node, self.session);
        let state = self.ctl.state.clone();
        let node = self.node;
        // Also while the server stops: the node's last-seen time is recorded.
        self.ctl.state.tasks().spawn_finishing(async move {
            let change = state.session_closed(node).await;
            state.notifier().publish(change);
        });
    }
}

struct Session {
    ctl: Control,
    inlet: Inlet,
    /// The client's capability version.
    capver: u32,
    /// The client asked for zstd; otherwise frames go out as plain JSON.
    zstd: bool,
    first: Option<Bytes>,
    keep_alive_at: Instant,
    guard: SessionGuard,
}

async fn stream(ctl: Control, node: NodeId, capver: u32, zstd: bool) -> Response {
    // Register before the full map is built, so no change can fall in between.
    let inlet = ctl.hub.open(node);
    let guard = SessionGuard::new(ctl.clone(), node, inlet.session);
    ctl.state.notifier().publish(ctl.state.session_opened(node));
    let Some(first) = ctl.full_map(node, capver) else {
        return refuse(StatusCode::NOT_FOUND, "node not found");
    };
    let session = Session {
        ctl,
        inlet,
        capver,
        zstd,
        first: Some(first),
        keep_alive_at: next_keep_alive(),
        guard,
    };
    let frames = futures_util::stream::unfold(session, |mut s| async move {
        let Some((kind, mut frame)) = s.next_frame().await else {
            // Dropping the session now counts it as removed.
            s.guard.ends_because(SessionEnd::Removed);
            return None;
        };
        if !s.zstd {
            // Shared frames are compressed once for everyone; the rare client
            // that cannot read zstd gets its copy decompressed.
            frame = frame::to_plain(&frame)?;
        }
        s.ctl.state.metrics().map.sent(kind, frame.len());
        Some((Ok::<Bytes, std::convert::Infallible>(frame), s))
    });
    Body::from_stream(frames).into_response()
}

impl Session {
    /// The next frame to write: the first map, a queued delta, a full map after an
    /// overflow, or a keep-alive. `None` ends the stream (the node was removed).
    async fn next_frame(&mut self) -> Option<(MapFrame, Bytes)> {
        if let Some(first) = self.first.take() {
            return Some((MapFrame::Full, first));
        }
        loop {
            if self.inlet.resync.swap(false, Ordering::AcqRel) {
                while self.inlet.rx.try_recv().is_ok() {}
                self.keep_alive_at = next_keep_alive();
                return self
                    .ctl
                    .full_map(self.inlet.node, self.capver)
                    .map(|full| (MapFrame::Full, full));
            }
            tokio::select! {
                frame = self.inlet.rx.recv() => match frame {
                    // An empty frame only wakes the session to look at the resync flag.
                    Some(frame) if frame.is_empty() => continue,
                    Some(frame) => {
                        self.keep_alive_at = next_keep_alive();
                        return Some((MapFrame::Delta, frame));
                    }
                    None => return None,
                },
                () = tokio::time::sleep_until(self.keep_alive_at) => {
                    self.keep_alive_at = next_keep_alive();
                    return Some((MapFrame::KeepAlive, frame::keep_alive()));
                }
            }
        }
    }
}
