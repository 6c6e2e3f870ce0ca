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

/// Keep-alives follow 50 s plus up to 9 s of jitter after the last frame (the client
/// gives up after 120 s), so that thousands of sessions do not wake in lockstep.
const KEEP_ALIVE: Duration = Duration::from_secs(50);
const KEEP_ALIVE_JITTER_MS: u64 = 9000;

/// Queued deltas are written together (one HTTP/2 DATA frame, one Noise record
/// when they fit) up to this many bytes.
const COALESCE_BYTES: usize = 32 * 1024;

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
    /// When the last frame was written.
    last_sent: Instant,
    /// Wakes the session for a keep-alive. Re-armed only when it fires, not on
    /// every frame: a busy session costs no timer work per delta.
    keep_alive: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The state of the keep-alive jitter (splitmix64, seeded once per session).
    jitter: u64,
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
    let mut session = Session {
        ctl,
        inlet,
        capver,
        zstd,
        first: Some(first),
        last_sent: Instant::now(),
        keep_alive: Box::pin(tokio::time::sleep(KEEP_ALIVE)),
        jitter: u64::from_le_bytes(crate::types::secret::random_bytes::<8>()),
        guard,
    };
    let due = session.keep_alive_due();
    session.keep_alive.as_mut().reset(due);
    let frames = futures_util::stream::unfold(session, |mut s| async move {
        let Some(frame) = s.next_frame().await else {
            // Dropping the session now counts it as removed.
            s.guard.ends_because(SessionEnd::Removed);
            return None;
        };
        s.last_sent = Instant::now();
        Some((Ok::<Bytes, std::convert::Infallible>(frame), s))
    });
    Body::from_stream(frames).into_response()
}

impl Session {
    /// The next bytes to write: the first map, queued deltas (several at once
    /// when they piled up), a full map after an overflow, or a keep-alive.
    /// `None` ends the stream (the node was removed).
    async fn next_frame(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return self.out(MapFrame::Full, first);
        }
        loop {
            if self.inlet.resync.swap(false, Ordering::AcqRel) {
                while self.inlet.rx.try_recv().is_ok() {}
                let full = self.ctl.full_map(self.inlet.node, self.capver)?;
                return self.out(MapFrame::Full, full);
            }
            tokio::select! {
                frame = self.inlet.rx.recv() => match frame {
                    // An empty frame only wakes the session to look at the resync flag.
                    Some(frame) if frame.is_empty() => continue,
                    Some(frame) => return self.deltas(frame),
                    None => return None,
                },
                () = self.keep_alive.as_mut() => {
                    // Quiet since the timer was set: a keep-alive now. Otherwise a
                    // frame went out meanwhile, and the wait counts from that one.
                    let now = Instant::now();
                    let quiet = now.saturating_duration_since(self.last_sent) >= KEEP_ALIVE;
                    if quiet {
                        self.last_sent = now;
                    }
                    let due = self.keep_alive_due();
                    self.keep_alive.as_mut().reset(due);
                    if quiet {
                        return self.out(MapFrame::KeepAlive, frame::keep_alive());
                    }
                }
            }
        }
    }

    /// `first` and whatever else is queued behind it, up to [`COALESCE_BYTES`],
    /// as one write: the map stream is a sequence of length-prefixed messages, so
    /// the client reads several from one chunk as it reads them from several.
    fn deltas(&mut self, first: Bytes) -> Option<Bytes> {
        let first = self.out(MapFrame::Delta, first)?;
        if first.len() >= COALESCE_BYTES || self.inlet.rx.is_empty() {
            return Some(first);
        }
        let mut chunk = bytes::BytesMut::from(&first[..]);
        while chunk.len() < COALESCE_BYTES {
            match self.inlet.rx.try_recv() {
                // A resync wake-up: what is already here goes out, the full map next.
                Ok(frame) if frame.is_empty() => {
                    self.inlet.resync.store(true, Ordering::Release);
                    break;
                }
                Ok(frame) => {
                    if let Some(frame) = self.out(MapFrame::Delta, frame) {
                        chunk.extend_from_slice(&frame);
                    }
                }
                Err(_) => break,
            }
        }
        Some(chunk.freeze())
    }

    /// A frame as this client reads it, counted as sent.
    fn out(&self, kind: MapFrame, frame: Bytes) -> Option<Bytes> {
        // Shared frames are compressed once for everyone; the rare client that
        // cannot read zstd gets its copy decompressed.
        let frame = if self.zstd {
            frame
        } else {
            frame::to_plain(&frame)?
        };
        self.ctl.state.metrics().map.sent(kind, frame.len());
        Some(frame)
    }

    /// When the next keep-alive is due: [`KEEP_ALIVE`] plus jitter after the
    /// last frame written.
    fn keep_alive_due(&mut self) -> Instant {
        self.jitter = self.jitter.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.jitter;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        self.last_sent + KEEP_ALIVE + Duration::from_millis(z % (KEEP_ALIVE_JITTER_MS + 1))
    }
}
