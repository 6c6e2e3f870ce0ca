//! The ACME challenge records nodes publish through `/machine/set-dns`,
//! remembered by node, so that a deleted or renamed node's records are
//! withdrawn at once instead of living out their lifetime.

use crate::dns::{ChallengeError, Challenges};
use crate::types::NodeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The one name below the tailnet's domain a node may publish a challenge at.
pub fn challenge_name(given_name: &str, base_domain: &str) -> String {
    format!("_acme-challenge.{given_name}.{base_domain}")
}

/// Published challenges and the node behind each name.
#[derive(Debug)]
pub struct AcmeRecords {
    challenges: Arc<Challenges>,
    /// The name each node last published at (std Mutex: short sections only).
    by_node: Mutex<HashMap<NodeId, String>>,
}

impl AcmeRecords {
    pub fn new(challenges: Arc<Challenges>) -> Self {
        AcmeRecords {
            challenges,
            by_node: Mutex::default(),
        }
    }

    /// What the DNS listener answers from.
    pub fn challenges(&self) -> &Arc<Challenges> {
        &self.challenges
    }

    /// Publishes `value` at `name` for `node`.
    pub fn publish(
        &self,
        node: NodeId,
        name: &str,
        value: &str,
        now: Instant,
    ) -> Result<(), ChallengeError> {
        self.challenges.publish(name, value, now)?;
        let previous = self.lock().insert(node, name.to_owned());
        if let Some(previous) = previous
            && !previous.eq_ignore_ascii_case(name)
        {
            self.challenges.remove(&previous);
        }
        Ok(())
    }

    /// Withdraws the records of every node whose name is no longer the one it
    /// published at: `current` gives a node's challenge name now, `None` once
    /// the node is gone.
    pub fn withdraw_stale(&self, current: impl Fn(NodeId) -> Option<String>) {
        self.lock().retain(|node, name| {
            let still = current(*node).is_some_and(|now| now.eq_ignore_ascii_case(name));
            if !still {
                tracing::info!(node = %node, name = %name, "withdrew an ACME challenge record");
                self.challenges.remove(name);
            }
            still
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, String>> {
        self.by_node.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_or_deleted_node_loses_its_records_and_others_keep_theirs() {
        let records = AcmeRecords::new(Arc::new(Challenges::new()));
        let now = Instant::now();
        let (laptop, desk) = (NodeId(1), NodeId(2));
        let laptop_name = challenge_name("laptop", "ts.example");
        let desk_name = challenge_name("desk", "ts.example");
        records.publish(laptop, &laptop_name, "a", now).unwrap();
        records.publish(desk, &desk_name, "b", now).unwrap();

        // Nothing changed: both stay.
        let names = |id: NodeId| match id.0 {
            1 => Some(laptop_name.clone()),
            2 => Some(desk_name.clone()),
            _ => None,
        };
        records.withdraw_stale(names);
        assert_eq!(records.challenges().txt(&laptop_name, now), ["a"]);

        // The laptop is renamed: its old name's record goes, the desk's stays.
        records.withdraw_stale(|id| {
            (id == laptop)
                .then(|| challenge_name("laptop-2", "ts.example"))
                .or_else(|| names(id))
        });
        assert!(records.challenges().txt(&laptop_name, now).is_empty());
        assert_eq!(records.challenges().txt(&desk_name, now), ["b"]);

        // The desk is deleted.
        records
            .withdraw_stale(|id| (id == laptop).then(|| challenge_name("laptop-2", "ts.example")));
        assert!(records.challenges().txt(&desk_name, now).is_empty());
    }
}
