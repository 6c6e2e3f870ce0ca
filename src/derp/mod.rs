//! The DERP relay map clients receive: loaded from `derp.urls` and `derp.paths`,
//! refreshed every `derp.update_frequency`, and handed out through [`DerpMaps`].
//!
//! Knows configuration, files and HTTP fetches; nothing about nodes or sessions.
//! The embedded relay's own region comes from [`embedded`].

pub mod embedded;
pub mod map;
#[cfg(test)]
mod tests;

pub use map::{Error, Source, SourceMap};

use crate::config;
use crate::tailcfg::{DERPMap, DERPRegion};
use arc_swap::ArcSwap;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// The current DERP map and a way to learn when it changes. Cheap to clone.
#[derive(Clone)]
pub struct DerpMaps {
    shared: Arc<Shared>,
}

struct Shared {
    /// Read on every full map: lock-free.
    current: ArcSwap<DERPMap>,
    /// Woken only when the map actually changed.
    updates: watch::Sender<Arc<DERPMap>>,
    /// Where the map comes from, and the last good read of each source.
    sources: Mutex<Sources>,
}

/// The configured sources and what each last gave.
struct Sources {
    /// Built only when `derp.urls` is not empty.
    client: Option<reqwest::Client>,
    entries: Vec<Entry>,
}

struct Entry {
    source: Source,
    /// The last successful read; kept when a later read fails.
    last_good: Option<SourceMap>,
}

impl Entry {
    /// A source of one relay region known without reading anything: this
    /// replica's embedded relay, or another replica's.
    fn one_region(source: Source, region: DERPRegion) -> Entry {
        Entry {
            source,
            last_good: Some(SourceMap {
                regions: [(region.region_id, Some(region))].into(),
                home_params: None,
            }),
        }
    }
}

impl Sources {
    fn new(config: &config::Derp, embedded: Option<DERPRegion>) -> Result<Sources, Error> {
        let client = if config.urls.is_empty() {
            None
        } else {
            Some(map::http_client()?)
        };
        // Urls first, then paths: a local file can override or remove a fetched region.
        let entries = config
            .urls
            .iter()
            .map(|url| Source::Url(url.clone()))
            .chain(config.paths.iter().map(|path| Source::Path(path.clone())))
            .map(|source| Entry {
                source,
                last_good: None,
            })
            .chain(embedded.map(|region| Entry::one_region(Source::Embedded, region)))
            .collect();
        Ok(Sources { client, entries })
    }

    /// Reads every source once. Returns the first failure of each source, leaving its
    /// previous read in place.
    async fn read_all(&mut self) -> Vec<Error> {
        let mut failures = Vec::new();
        for entry in &mut self.entries {
            let read = match (&entry.source, &self.client) {
                (Source::Url(url), Some(client)) => map::fetch(client, url).await,
                (Source::Url(url), None) => Err(Error::Url {
                    url: url.clone(),
                    message: "no HTTP client".into(),
                }),
                (Source::Path(path), _) => map::read_file(path).await,
                // Built at start-up from the config, or announced by another
                // replica: nothing to read again.
                (Source::Embedded | Source::Replica(_), _) => continue,
            };
            match read {
                Ok(read) => entry.last_good = Some(read),
                Err(err) => failures.push(err),
            }
        }
        failures
    }

    fn merge(&self) -> (DERPMap, Vec<String>) {
        map::merge(
            self.entries
                .iter()
                .filter_map(|e| e.last_good.as_ref().map(|m| (&e.source, m))),
        )
    }
}

/// Loads the DERP map from `config` (`derp.urls`, then `derp.paths`, then the
/// `embedded` relay's region, which wins its region id).
///
/// A URL that fails now is logged and skipped (it is tried again on refresh); a local
/// file that cannot be read or parsed is an error. With no source at all the map is
/// empty and one warning says so.
pub async fn load(config: &config::Derp, embedded: Option<DERPRegion>) -> Result<DerpMaps, Error> {
    let mut sources = Sources::new(config, embedded)?;
    if sources.entries.is_empty() {
        tracing::warn!(
            "no DERP relays are configured (derp.server.enabled is false and derp.paths and \
             derp.urls are empty): clients only connect directly, and `tailscale up` waits \
             in Starting until a relay is configured"
        );
    }
    for err in sources.read_all().await {
        match err {
            Error::Url { .. } => tracing::warn!("{err}; going on without it"),
            _ => return Err(err),
        }
    }
    for entry in &sources.entries {
        if entry
            .last_good
            .as_ref()
            .is_some_and(|m| m.regions.is_empty())
        {
            tracing::warn!("{} lists no DERP regions", entry.source);
        }
    }
    let (map, notes) = sources.merge();
    for note in notes {
        tracing::info!("{note}");
    }
    tracing::info!(regions = map.regions.len(), "DERP map loaded");
    Ok(DerpMaps::with_sources(map, sources))
}

impl DerpMaps {
    /// A map that never changes (tests, or a control plane without DERP sources).
    pub fn fixed(map: DERPMap) -> DerpMaps {
        DerpMaps::with_sources(
            map,
            Sources {
                client: None,
                entries: Vec::new(),
            },
        )
    }

    fn with_sources(map: DERPMap, sources: Sources) -> DerpMaps {
        let map = Arc::new(map);
        DerpMaps {
            shared: Arc::new(Shared {
                current: ArcSwap::new(map.clone()),
                updates: watch::Sender::new(map),
                sources: Mutex::new(sources),
            }),
        }
    }

    /// The map to send now.
    pub fn current(&self) -> Arc<DERPMap> {
        self.shared.current.load_full()
    }

    /// A receiver woken each time a different map is published; `borrow()` is the map.
    pub fn subscribe(&self) -> watch::Receiver<Arc<DERPMap>> {
        self.shared.updates.subscribe()
    }

    /// Reads every source again and publishes the result if it differs from the
    /// current map. A source that fails keeps its previous contribution. Returns
    /// whether a new map was published.
    pub async fn refresh(&self) -> bool {
        let mut sources = self.shared.sources.lock().await;
        if sources.entries.is_empty() {
            // A fixed map, or no sources: nothing to read, nothing to replace.
            return false;
        }
        for err in sources.read_all().await {
            tracing::warn!("{err}; keeping its previous DERP regions");
        }
        let (map, notes) = sources.merge();
        drop(sources);
        self.publish(map, notes)
    }

    /// Replaces the regions of the other replicas' embedded relays (ARCHITECTURE.md,
    /// "Several replicas"), by replica name: merged after `derp.urls` and
    /// `derp.paths`, before this replica's own region. Returns whether a new map
    /// was published.
    pub async fn set_replica_regions(&self, regions: Vec<(String, DERPRegion)>) -> bool {
        let mut sources = self.shared.sources.lock().await;
        sources
            .entries
            .retain(|e| !matches!(e.source, Source::Replica(_)));
        let at = sources
            .entries
            .iter()
            .position(|e| e.source == Source::Embedded)
            .unwrap_or(sources.entries.len());
        let replicas = regions
            .into_iter()
            .map(|(name, region)| Entry::one_region(Source::Replica(name), region));
        sources.entries.splice(at..at, replicas);
        let (map, notes) = sources.merge();
        drop(sources);
        self.publish(map, notes)
    }

    /// Makes `map` the current one, if it differs from it.
    fn publish(&self, map: DERPMap, notes: Vec<String>) -> bool {
        if *self.current() == map {
            return false;
        }
        for note in notes {
            tracing::info!("{note}");
        }
        tracing::info!(regions = map.regions.len(), "DERP map changed");
        let map = Arc::new(map);
        self.shared.current.store(map.clone());
        self.shared.updates.send_replace(map);
        true
    }

    /// Refreshes the sources [`load`] read every `derp.update_frequency` until
    /// `shutdown` completes. Does nothing (returns `None`) when
    /// `derp.auto_update_enabled` is false or there is no source to refresh.
    pub fn spawn_refresh(
        &self,
        config: &config::Derp,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Option<JoinHandle<()>> {
        let has_sources = !config.urls.is_empty() || !config.paths.is_empty();
        if !config.auto_update_enabled || !has_sources || config.update_frequency.is_zero() {
            return None;
        }
        let every = config.update_frequency;
        let maps = self.clone();
        Some(tokio::spawn(async move {
            tokio::pin!(shutdown);
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    _ = async {
                        ticker.tick().await;
                        maps.refresh().await
                    } => {}
                }
            }
        }))
    }
}
