//! The hub: every open map session, reachable by node, with a bounded queue each.
//!
//! Frames are `Bytes`, so one serialised and compressed delta is shared by every
//! session that receives it. A session whose queue is full is never waited for:
//! it is flagged for a resync and rebuilds a full map when it catches up, so one
//! slow client costs memory bounded by its queue and never delays the others.

use crate::types::NodeId;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Frames a session may have queued before it is flagged for a resync.
pub const QUEUE_DEPTH: usize = 32;

/// The sending side of one session, held by the hub.
#[derive(Debug)]
struct Outlet {
    session: u64,
    tx: mpsc::Sender<Bytes>,
    resync: Arc<AtomicBool>,
}

/// The receiving side of one session, held by its response stream.
#[derive(Debug)]
pub struct Inlet {
    pub node: NodeId,
    pub session: u64,
    pub rx: mpsc::Receiver<Bytes>,
    /// Set when frames were dropped: the session must send a full map next.
    pub resync: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
pub struct Hub {
    // std Mutex: held to clone senders or edit the table, never across an await.
    outlets: Mutex<HashMap<NodeId, Vec<Outlet>>>,
    next_session: AtomicU64,
    /// Open sessions, kept beside the table so counting takes no lock.
    sessions: AtomicUsize,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens a session for `node`.
    pub fn open(&self, node: NodeId) -> Inlet {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let resync = Arc::new(AtomicBool::new(false));
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(node).or_default().push(Outlet {
            session,
            tx,
            resync: resync.clone(),
        });
        self.sessions.fetch_add(1, Ordering::Relaxed);
        Inlet {
            node,
            session,
            rx,
            resync,
        }
    }

    /// Forgets a session (its stream ended).
    pub fn close(&self, node: NodeId, session: u64) {
        let mut outlets = self.lock();
        if let Some(list) = outlets.get_mut(&node) {
            let before = list.len();
            list.retain(|o| o.session != session);
            self.sessions
                .fetch_sub(before - list.len(), Ordering::Relaxed);
            if list.is_empty() {
                outlets.remove(&node);
            }
        }
    }

    /// Nodes with at least one open session.
    pub fn connected(&self) -> Vec<NodeId> {
        self.lock().keys().copied().collect()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Queues `frame` for every session of `node`.
    pub fn send(&self, node: NodeId, frame: &Bytes) {
        if let Some(list) = self.lock().get(&node) {
            for outlet in list {
                offer(outlet, frame);
            }
        }
    }

    /// Queues `frame` for every session of every node `filter` accepts.
    pub fn send_where(&self, frame: &Bytes, filter: impl Fn(NodeId) -> bool) {
        for (node, list) in self.lock().iter() {
            if filter(*node) {
                for outlet in list {
                    offer(outlet, frame);
                }
            }
        }
    }

    /// Flags every session of `node` for a full map.
    pub fn resync(&self, node: NodeId) {
        if let Some(list) = self.lock().get(&node) {
            for outlet in list {
                outlet.resync.store(true, Ordering::Release);
                // Wake the session even if its queue is empty.
                let _ = outlet.tx.try_send(Bytes::new());
            }
        }
    }

    /// Ends every session of `node` (it was deleted or logged out).
    pub fn disconnect(&self, node: NodeId) {
        if let Some(list) = self.lock().remove(&node) {
            self.sessions.fetch_sub(list.len(), Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Vec<Outlet>>> {
        self.outlets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn offer(outlet: &Outlet, frame: &Bytes) {
    if outlet.tx.try_send(frame.clone()).is_err() {
        // Full (a slow client) or closing: the session rebuilds a full map instead.
        outlet.resync.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_reach_every_session_of_a_node_and_only_those() {
        let hub = Hub::new();
        let mut a1 = hub.open(NodeId(1));
        let mut a2 = hub.open(NodeId(1));
        let mut b = hub.open(NodeId(2));
        hub.send(NodeId(1), &Bytes::from_static(b"x"));
        assert_eq!(a1.rx.recv().await.unwrap(), "x");
        assert_eq!(a2.rx.recv().await.unwrap(), "x");
        hub.send_where(&Bytes::from_static(b"y"), |n| n != NodeId(1));
        assert_eq!(b.rx.recv().await.unwrap(), "y");
        assert!(a1.rx.try_recv().is_err());
        hub.close(NodeId(1), a1.session);
        assert_eq!(hub.session_count(), 2);
        hub.close(NodeId(1), a1.session);
        assert_eq!(hub.session_count(), 2, "closing twice counts once");
        hub.disconnect(NodeId(1));
        assert_eq!(hub.session_count(), 1);
    }

    #[tokio::test]
    async fn a_full_queue_flags_a_resync_instead_of_blocking() {
        let hub = Hub::new();
        let slow = hub.open(NodeId(1));
        for _ in 0..QUEUE_DEPTH + 5 {
            hub.send(NodeId(1), &Bytes::from_static(b"delta"));
        }
        assert!(slow.resync.load(Ordering::Acquire));
        assert_eq!(slow.rx.len(), QUEUE_DEPTH, "memory stays bounded");
    }
}
