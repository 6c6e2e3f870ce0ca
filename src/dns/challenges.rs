//! The TXT values published for ACME DNS-01 challenges, by name, with their
//! lifetimes and caps. Knows names and strings, not DNS messages or nodes.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a value stays published after its last publication. A CA checks
/// within minutes; a node that has not cleaned up after an hour never will.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(3600);
/// Values kept per name; a client retrying an order may publish a few before
/// the CA looks, and the oldest is the least likely to be wanted.
pub const MAX_VALUES_PER_NAME: usize = 8;
/// Names kept in all, so that publishing cannot grow memory without bound.
pub const MAX_NAMES: usize = 10_000;
/// A TXT character-string holds at most 255 bytes.
const MAX_VALUE_LEN: usize = 255;

/// Why a value was not published.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChallengeError {
    #[error("{0:?} is not a DNS name (labels of 1 to 63 bytes, 253 bytes in all)")]
    InvalidName(String),
    #[error("the challenge value is empty")]
    EmptyValue,
    #[error("the challenge value is {0} bytes long; a TXT string holds at most 255")]
    ValueTooLong(usize),
    #[error("the challenge value may contain only printable ASCII characters")]
    ValueNotPrintable,
    #[error("{MAX_NAMES} challenge names are already published; try again when some expire")]
    Full,
}

/// The published values, shared between whoever publishes them (the control
/// protocol) and the DNS listener that answers with them.
#[derive(Debug, Default)]
pub struct Challenges {
    /// Keyed by the name with its labels reversed (`com.example.ts.node._acme-challenge`),
    /// so that every name below another sits in one contiguous range of the map.
    /// Values are in publication order, oldest first. A std `Mutex`: every section
    /// is short and none is held across an `.await`.
    names: Mutex<BTreeMap<String, Vec<Published>>>,
}

#[derive(Debug)]
struct Published {
    value: String,
    at: Instant,
}

impl Published {
    fn is_live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.at) < CHALLENGE_TTL
    }
}

impl Challenges {
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `value` at `name` (any case, with or without a trailing dot) for
    /// [`CHALLENGE_TTL`]; publishing a value again refreshes it.
    pub fn publish(&self, name: &str, value: &str, now: Instant) -> Result<(), ChallengeError> {
        check_value(value)?;
        let key = reversed(&normalise(name)?);
        let mut names = self.lock();
        if !names.contains_key(&key) && names.len() >= MAX_NAMES {
            names.retain(|_, values| {
                values.retain(|v| v.is_live(now));
                !values.is_empty()
            });
            if names.len() >= MAX_NAMES {
                return Err(ChallengeError::Full);
            }
        }
        let values = names.entry(key).or_default();
        values.retain(|v| v.is_live(now) && v.value != value);
        if values.len() >= MAX_VALUES_PER_NAME {
            values.remove(0);
        }
        values.push(Published {
            value: value.to_owned(),
            at: now,
        });
        Ok(())
    }

    /// The live values at `name`, oldest first.
    pub fn txt(&self, name: &str, now: Instant) -> Vec<String> {
        let Ok(name) = normalise(name) else {
            return Vec::new();
        };
        self.lock()
            .get(&reversed(&name))
            .into_iter()
            .flatten()
            .filter(|v| v.is_live(now))
            .map(|v| v.value.clone())
            .collect()
    }

    /// `true` when some name strictly below `name` has live values: `name` is then an
    /// empty non-terminal, which exists in DNS (NODATA, not NXDOMAIN).
    pub fn has_names_below(&self, name: &str, now: Instant) -> bool {
        let Ok(name) = normalise(name) else {
            return false;
        };
        let prefix = format!("{}.", reversed(&name));
        self.lock()
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(&prefix))
            .any(|(_, values)| values.iter().any(|v| v.is_live(now)))
    }

    /// Drops every value at `name`, e.g. when its node is deleted.
    pub fn remove(&self, name: &str) {
        if let Ok(name) = normalise(name) {
            self.lock().remove(&reversed(&name));
        }
    }

    /// The number of names with values, counting expired ones not yet dropped.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Published>>> {
        // The map is consistent after every statement, so a panic elsewhere
        // while holding the lock leaves nothing half-done.
        self.names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Lower case, without the trailing dot; refuses what no query could ask for.
fn normalise(name: &str) -> Result<String, ChallengeError> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let labels_fit = name.split('.').all(|l| (1..=63).contains(&l.len()));
    if name.is_empty() || name.len() > 253 || !labels_fit {
        return Err(ChallengeError::InvalidName(name));
    }
    Ok(name)
}

fn check_value(value: &str) -> Result<(), ChallengeError> {
    if value.is_empty() {
        return Err(ChallengeError::EmptyValue);
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(ChallengeError::ValueTooLong(value.len()));
    }
    if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(ChallengeError::ValueNotPrintable);
    }
    Ok(())
}

/// `node.ts.example.com` → `com.example.ts.node`.
fn reversed(name: &str) -> String {
    name.rsplit('.').collect::<Vec<_>>().join(".")
}
