//! Health probes of subnet routers that share a prefix (`node.routes.ha`): each
//! round asks every such router, through its map session, to send `HEAD
//! /machine/ping-response?id=…` over Noise within the probe timeout. A router
//! whose link died while its connection still looks open stays silent, is marked
//! unhealthy, and hands its prefixes to a router that answered.
//!
//! A timeout only counts for a session that was already open at the previous
//! round (a client that just reconnected is still settling), and a round with any
//! such doubtful result changes nothing: the election sees complete rounds only.

use super::{Control, NoisePeer, frame, map::to_json};
use crate::config::HaProbe;
use crate::state::{Change, Snapshot};
use crate::tailcfg::{MapResponse, PingRequest};
use crate::types::{MachineKey, NodeId};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::{Extension, response::IntoResponse, response::Response};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};

/// The path clients answer pings at.
pub const PING_RESPONSE_PATH: &str = "/machine/ping-response";

/// Pings sent and not yet answered, by their one-use id.
#[derive(Debug, Default)]
pub struct Pings {
    // std Mutex: inserts and removals only, never across an await.
    pending: Mutex<HashMap<String, Pending>>,
}

#[derive(Debug)]
struct Pending {
    machine_key: MachineKey,
    answered: oneshot::Sender<()>,
}

impl Pings {
    /// A new ping for the node of `machine_key`: its id, and what completes when
    /// that machine answers it.
    pub fn start(&self, machine_key: MachineKey) -> (String, oneshot::Receiver<()>) {
        let id = crate::types::secret::random_alphanumeric(32);
        let (answered, rx) = oneshot::channel();
        self.lock().insert(
            id.clone(),
            Pending {
                machine_key,
                answered,
            },
        );
        (id, rx)
    }

    /// Completes ping `id` if `machine_key` is the machine it was sent to; a
    /// ping is answered once.
    pub fn answer(&self, id: &str, machine_key: &MachineKey) -> bool {
        let mut pending = self.lock();
        if pending
            .get(id)
            .is_none_or(|p| p.machine_key != *machine_key)
        {
            return false;
        }
        let ping = pending.remove(id).expect("just found");
        ping.answered.send(()).is_ok()
    }

    /// Forgets ping `id` (its round is over).
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `HEAD /machine/ping-response?id=…` (inside Noise): 200 when the id names a
/// ping sent to this machine, 404 otherwise.
pub async fn ping_response(
    State(ctl): State<Control>,
    Extension(peer): Extension<NoisePeer>,
    request: Request,
) -> Response {
    let id = url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(key, _)| key == "id")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if ctl.pings.answer(&id, &peer.machine_key) {
        StatusCode::OK.into_response()
    } else {
        super::refuse(StatusCode::NOT_FOUND, "no such ping")
    }
}

/// Routers that share an approved subnet prefix with another online router:
/// the ones a failover can choose between.
pub fn shared_routers(snapshot: &Snapshot, online: &dyn Fn(NodeId) -> bool) -> BTreeSet<NodeId> {
    snapshot
        .candidates(online)
        .into_values()
        .filter(|routers| routers.len() > 1)
        .flatten()
        .collect()
}

/// One router's ping in a round.
struct Probe {
    node: NodeId,
    /// Its session generation when pinged.
    epoch: u64,
    /// Whether that session was already open at the previous round.
    settled: bool,
    id: String,
    answered: oneshot::Receiver<()>,
}

impl Control {
    /// Probes shared routers every `probe.interval` until the task is dropped.
    pub async fn probe_routers(self, probe: HaProbe) {
        // Over Noise, the URL's host is not dialled; `https` makes clients use
        // their Noise connection for it.
        let host = self.server_url.host();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let base = format!("https://{host}{PING_RESPONSE_PATH}?id=");
        let mut tick = tokio::time::interval(probe.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut epochs = HashMap::new();
        loop {
            tick.tick().await;
            let change = self.probe_round(&base, probe.timeout, &mut epochs).await;
            self.state.notifier().publish(change);
        }
    }

    /// One round: pings every shared router at once, waits up to `timeout`, and
    /// records who answered. `epochs` carries each router's session generation
    /// from round to round.
    async fn probe_round(
        &self,
        base: &str,
        timeout: std::time::Duration,
        epochs: &mut HashMap<NodeId, u64>,
    ) -> Change {
        let snapshot = self.state.snapshot();
        let routers = shared_routers(&snapshot, &|id| self.state.is_online(id));
        if !routers.is_empty() && !routers.iter().eq(epochs.keys().collect::<BTreeSet<_>>()) {
            tracing::info!(routers = ?routers, "probing subnet routers that share a prefix");
        }
        epochs.retain(|id, _| routers.contains(id));
        let mut probes = Vec::with_capacity(routers.len());
        for node in routers {
            let (Some(epoch), Some(router)) = (self.state.session_epoch(node), snapshot.get(node))
            else {
                continue;
            };
            let settled = epochs.insert(node, epoch) == Some(epoch);
            let (id, answered) = self.pings.start(router.machine_key);
            let ping = MapResponse::ping(PingRequest {
                url: format!("{base}{id}"),
                url_is_noise: true,
            });
            self.hub.send(node, &frame::encode(&to_json(&ping)));
            probes.push(Probe {
                node,
                epoch,
                settled,
                id,
                answered,
            });
        }
        let deadline = Instant::now() + timeout;
        let mut results = Vec::with_capacity(probes.len());
        let mut doubtful = false;
        for probe in probes {
            let answered = tokio::time::timeout_at(deadline, probe.answered)
                .await
                .is_ok_and(|r| r.is_ok());
            self.pings.forget(&probe.id);
            if answered {
                results.push((probe.node, true));
                continue;
            }
            match self.state.session_epoch(probe.node) {
                // Gone offline: the election has moved its prefixes already.
                None => continue,
                Some(now) if now != probe.epoch || !probe.settled => {
                    tracing::debug!(node = %probe.node, "a reconnecting router missed its health probe; not counted");
                    doubtful = true;
                }
                Some(_) => results.push((probe.node, false)),
            }
        }
        if doubtful {
            return Change::none();
        }
        for (node, healthy) in &results {
            if *healthy != self.state.is_healthy(*node) {
                if *healthy {
                    tracing::info!(node = %node, "a subnet router answers its health probes again");
                } else {
                    tracing::warn!(node = %node, ?timeout, "a subnet router did not answer its health probe; its prefixes move to a router that did");
                }
            }
        }
        self.state.set_router_health(&results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PrivateKey;

    fn machine() -> MachineKey {
        MachineKey::from_bytes(*PrivateKey::generate().as_bytes())
    }

    #[test]
    fn a_ping_is_answered_once_and_only_by_its_machine() {
        let pings = Pings::default();
        let (mine, other) = (machine(), machine());
        let (id, mut answered) = pings.start(mine);
        assert!(!pings.answer(&id, &other), "another machine cannot answer");
        assert!(answered.try_recv().is_err());
        assert!(pings.answer(&id, &mine));
        assert!(answered.try_recv().is_ok());
        assert!(!pings.answer(&id, &mine), "answered once");
        assert!(!pings.answer("", &mine));

        let (late, _rx) = pings.start(mine);
        pings.forget(&late);
        assert!(!pings.answer(&late, &mine), "its round is over");
    }
}
