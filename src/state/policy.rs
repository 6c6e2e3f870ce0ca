//! The access policy in force: where it comes from (`policy.mode`: a file, or the
//! newest row of the `policies` table), loading it at start-up, reloading and
//! replacing it, checking a candidate, and the compiled view every map is built
//! from (rebuilt only when the policy, the users or a node's identity changed).

use super::node_store::Snapshot;
use super::{Change, Error, Result, State};
use crate::config::PolicyMode;
use crate::policy::{self, Compiled, Device, Policy, Tailnet};
use crate::types::{Timestamp, User, UserId};
use ipnet::IpNet;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where the policy comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySource {
    pub mode: PolicyMode,
    /// The file (file mode); `None`: no policy, all traffic allowed.
    pub path: Option<PathBuf>,
}

/// A policy that was accepted, with the text it came from.
#[derive(Debug)]
pub struct LoadedPolicy {
    pub policy: Arc<Policy>,
    pub text: String,
    /// When it was stored (database mode).
    pub updated_at: Option<Timestamp>,
}

/// What start-up found, for the line the server logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyStatus {
    /// No policy configured: every node may reach every node.
    None,
    /// A policy file is in force.
    File(PathBuf),
    /// The newest policy in the database is in force.
    Database,
    /// Database mode without a stored policy yet.
    DatabaseEmpty,
}

/// The compiled view and what it was built from, to know when it is stale.
struct CompiledCache {
    policy: Arc<Policy>,
    users: Arc<HashMap<UserId, User>>,
    snapshot: Arc<Snapshot>,
    devices: Vec<Device>,
    compiled: Arc<Compiled>,
}

/// The policy part of `State`.
pub(super) struct PolicyStore {
    source: PolicySource,
    server_url: String,
    current: arc_swap::ArcSwapOption<LoadedPolicy>,
    // std Mutex: held while compiling (CPU only, no await), so concurrent readers
    // wait for one build instead of each compiling.
    compiled: Mutex<Option<CompiledCache>>,
}

impl PolicyStore {
    pub(super) fn new(source: PolicySource, server_url: String) -> Self {
        PolicyStore {
            source,
            server_url,
            current: arc_swap::ArcSwapOption::empty(),
            compiled: Mutex::new(None),
        }
    }
}

/// The policy's view of the nodes of a snapshot.
pub fn devices_of(snapshot: &Snapshot) -> Vec<Device> {
    snapshot
        .nodes()
        .map(|n| {
            let active: Vec<IpNet> = snapshot
                .routes(n.id)
                .iter()
                .filter(|r| r.advertised && r.approved)
                .map(|r| r.prefix)
                .collect();
            Device {
                id: n.id,
                user: if n.tags.is_empty() { n.user_id } else { None },
                tags: n.tags.clone(),
                addrs: n.ip_addresses(),
                subnet_routes: active
                    .iter()
                    .filter(|p| p.prefix_len() != 0)
                    .copied()
                    .collect(),
                exit_node: active.iter().any(|p| p.prefix_len() == 0),
            }
        })
        .collect()
}

/// Reads a policy file; a missing file is an error naming it.
fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidArgument(format!("reading policy file {}: {e}", path.display())))
}

/// A parse error with the file it came from (`path:line:column: …`).
fn parse_named(text: &str, origin: &str) -> Result<Policy> {
    Policy::parse(text).map_err(|e| match e {
        policy::Error::Syntax(s) => {
            Error::InvalidArgument(format!("{origin}:{}:{}: {}", s.line, s.column, s.message))
        }
        other => Error::InvalidArgument(format!("{origin}: {other}")),
    })
}

impl State {
    /// Where the policy comes from.
    pub fn policy_source(&self) -> &PolicySource {
        &self.policy.source
    }

    /// The policy in force, if any.
    pub fn current_policy(&self) -> Option<Arc<LoadedPolicy>> {
        self.policy.current.load_full()
    }

    /// Loads the configured policy at start-up. A policy that does not parse
    /// stops the server (with file, line and column); failing `tests` only warn,
    /// as in Headscale, so a server can always start and be fixed.
    pub(super) async fn load_policy(&self) -> Result<PolicyStatus> {
        let source = self.policy.source.clone();
        let (text, status, updated_at, origin) = match source.mode {
            PolicyMode::File => match &source.path {
                None => return Ok(PolicyStatus::None),
                Some(path) => (
                    read_file(path)?,
                    PolicyStatus::File(path.clone()),
                    None,
                    path.display().to_string(),
                ),
            },
            PolicyMode::Database => match self.db.get_policy().await? {
                None => return Ok(PolicyStatus::DatabaseEmpty),
                Some((text, at)) => (
                    text,
                    PolicyStatus::Database,
                    Some(at),
                    "the policy stored in the database".to_owned(),
                ),
            },
        };
        let parsed = Arc::new(parse_named(&text, &origin)?);
        if let Err(e) = self.run_policy_tests(&parsed) {
            tracing::warn!(policy = %origin, error = %e, "the policy's tests fail; starting anyway (fix the policy and reload)");
        }
        self.install_policy(LoadedPolicy {
            policy: parsed,
            text,
            updated_at,
        });
        Ok(status)
    }

    fn install_policy(&self, loaded: LoadedPolicy) {
        self.policy.current.store(Some(Arc::new(loaded)));
        self.clear_ssh_approvals();
    }

    /// Runs the policy's `tests` and `sshTests` against the current users and nodes.
    fn run_policy_tests(&self, parsed: &Arc<Policy>) -> Result<()> {
        if parsed.tests.is_empty() && parsed.ssh_tests.is_empty() {
            return Ok(());
        }
        let users: Vec<User> = self.users().values().cloned().collect();
        let devices = devices_of(&self.snapshot());
        let tailnet = Tailnet {
            users: &users,
            devices: &devices,
        };
        let compiled = Compiled::new(parsed.clone(), tailnet, &self.compile_options());
        policy::run_tests(parsed, tailnet, &compiled)
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// Runs `f` with what the policy in force says about tags and routes for
    /// the current users and nodes; `None` without a policy.
    pub(super) fn with_approvals<T>(
        &self,
        f: impl FnOnce(&policy::Approvals<'_>) -> T,
    ) -> Option<T> {
        let loaded = self.current_policy()?;
        let users: Vec<User> = self.users().values().cloned().collect();
        let devices = devices_of(&self.snapshot());
        let approvals = policy::Approvals::new(
            &loaded.policy,
            Tailnet {
                users: &users,
                devices: &devices,
            },
        );
        Some(f(&approvals))
    }

    fn compile_options(&self) -> policy::Options {
        policy::Options {
            server_url: self.policy.server_url.clone(),
        }
    }

    /// Parses `text` and runs its tests against the current tailnet, without
    /// putting it in force (`policy check`).
    pub fn check_policy(&self, text: &str) -> Result<Arc<Policy>> {
        let parsed = Arc::new(parse_named(text, "policy")?);
        self.run_policy_tests(&parsed)?;
        Ok(parsed)
    }

    /// Puts `text` in force and stores it (database mode only). Refused, with the
    /// running policy kept, when it does not parse or its tests fail.
    pub async fn set_policy(&self, text: &str) -> Result<(Arc<LoadedPolicy>, Change)> {
        if self.policy.source.mode != PolicyMode::Database {
            return Err(Error::FailedPrecondition(
                "update is disabled for modes other than 'database' (set policy.mode: database, or edit the policy file and reload)".into(),
            ));
        }
        let parsed = self.check_policy(text)?;
        let now = Self::now();
        self.db.set_policy(text, now).await?;
        self.install_policy(LoadedPolicy {
            policy: parsed,
            text: text.to_owned(),
            updated_at: Some(now),
        });
        let change = self.policy_installed().await;
        let current = self.current_policy().expect("installed above");
        Ok((current, change))
    }

    /// The policy as its source holds it now: the file's text (read again) or
    /// the newest stored row.
    pub async fn get_policy(&self) -> Result<(String, Option<Timestamp>)> {
        match self.policy.source.mode {
            PolicyMode::File => match &self.policy.source.path {
                Some(path) => Ok((read_file(path)?, None)),
                None => Err(Error::NotFound(
                    "no policy is configured (policy.path is empty): all nodes may reach each other".into(),
                )),
            },
            PolicyMode::Database => match self.db.get_policy().await? {
                Some((text, at)) => Ok((text, Some(at))),
                None => Err(Error::NotFound(
                    "acl policy not found: no policy has been set yet (use policy set)".into(),
                )),
            },
        }
    }

    /// Reads the policy from its source again (SIGHUP, or the file changed) and
    /// puts it in force if it parses and its tests pass; otherwise the running
    /// policy stays and the error says why. `Ok(None)`: nothing changed.
    pub async fn reload_policy(&self) -> Result<Option<Change>> {
        let (text, updated_at, origin) = match self.policy.source.mode {
            PolicyMode::File => match &self.policy.source.path {
                None => return Ok(None),
                Some(path) => (read_file(path)?, None, path.display().to_string()),
            },
            PolicyMode::Database => match self.db.get_policy().await? {
                None => return Ok(None),
                Some((text, at)) => (text, Some(at), "the stored policy".to_owned()),
            },
        };
        if self
            .current_policy()
            .is_some_and(|current| current.text == text)
        {
            return Ok(None);
        }
        let parsed = Arc::new(parse_named(&text, &origin)?);
        self.run_policy_tests(&parsed)?;
        self.install_policy(LoadedPolicy {
            policy: parsed,
            text,
            updated_at,
        });
        Ok(Some(self.policy_installed().await))
    }

    /// After a new policy: routes it approves (or no longer approves) change,
    /// and every client must learn its new view.
    async fn policy_installed(&self) -> Change {
        let mut change = Change::policy();
        match self.reapprove_all().await {
            Ok(c) => change.merge(c),
            Err(e) => tracing::warn!(error = %e, "could not apply the policy's route approvals"),
        }
        change
    }

    /// The policy applied to the current tailnet; `None` when no policy is in
    /// force (every node sees every node, all traffic allowed). Rebuilt only when
    /// the policy, the users or the nodes' identities (owner, tags, addresses,
    /// routes) changed since the last build.
    pub fn policy_view(&self) -> Option<Arc<Compiled>> {
        let loaded = self.current_policy()?;
        let users = self.users();
        let snapshot = self.snapshot();
        let mut cache = self
            .policy
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_mut()
            && Arc::ptr_eq(&c.policy, &loaded.policy)
            && Arc::ptr_eq(&c.users, &users)
        {
            if Arc::ptr_eq(&c.snapshot, &snapshot) {
                return Some(c.compiled.clone());
            }
            // Endpoints and online state change snapshots too; only identity counts.
            let devices = devices_of(&snapshot);
            if devices == c.devices {
                c.snapshot = snapshot;
                return Some(c.compiled.clone());
            }
        }
        let start = std::time::Instant::now();
        let devices = devices_of(&snapshot);
        let user_list: Vec<User> = users.values().cloned().collect();
        let compiled = Arc::new(Compiled::new(
            loaded.policy.clone(),
            Tailnet {
                users: &user_list,
                devices: &devices,
            },
            &self.compile_options(),
        ));
        crate::metrics::observe_since(&self.metrics().policy.compile_duration, start);
        *cache = Some(CompiledCache {
            policy: loaded.policy.clone(),
            users,
            snapshot,
            devices,
            compiled: compiled.clone(),
        });
        Some(compiled)
    }
}
