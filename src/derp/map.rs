//! Reading DERP map sources and merging them into one `tailcfg::DERPMap`.
//!
//! Two source formats: `derp.urls` serve Tailscale's JSON (`Regions`, `RegionID`, …,
//! as `https://controlplane.tailscale.com/derpmap/default` does) and `derp.paths` are
//! YAML files in Headscale's spelling (`regions: {900: {regionid, hostname, …}}`, Go's
//! field names in lower case). Both read into the same types. A region set to `null`
//! removes that region from the sources merged before it; otherwise the later source
//! wins per region id. Knows files and HTTP, not clients or sessions.

use crate::fetch;
use crate::tailcfg::{DERPHomeParams, DERPMap, DERPRegion};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest DERP map body headway reads from a URL.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How long one fetch of a `derp.urls` entry may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a DERP map source could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A `derp.paths` file that cannot be read, does not parse, or describes a broken map.
    #[error("derp.paths: {}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    File {
        path: PathBuf,
        /// 1-based line of the problem, when the parser knows it.
        line: Option<usize>,
        message: String,
    },
    /// A `derp.urls` entry that cannot be fetched or does not hold a usable map.
    #[error("derp.urls: {url}: {message}")]
    Url { url: String, message: String },
    /// The HTTP client for `derp.urls` could not be built.
    #[error("derp.urls: cannot build the HTTP client: {0}")]
    Client(String),
}

/// Where a map came from, for log lines and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Url(String),
    Path(PathBuf),
    /// The embedded relay of another headway replica on the same database, by the
    /// replica's name; merged after the files and before this replica's own.
    Replica(String),
    /// headway's own relay (`derp.server`); merged last, so it wins its region id.
    Embedded,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Url(url) => write!(f, "derp.urls {url}"),
            Source::Path(path) => write!(f, "derp.paths {}", path.display()),
            Source::Replica(name) => write!(f, "the relay of replica {name}"),
            Source::Embedded => write!(f, "the embedded relay (derp.server)"),
        }
    }
}

/// One source's regions as read; `None` marks a region the source removes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceMap {
    pub regions: BTreeMap<u32, Option<DERPRegion>>,
    pub home_params: Option<DERPHomeParams>,
}

/// The on-disk / on-wire shape, before region ids are checked.
#[derive(Deserialize, Default)]
struct RawSource {
    #[serde(rename = "Regions", alias = "regions", default)]
    regions: Option<BTreeMap<i64, Option<DERPRegion>>>,
    #[serde(rename = "HomeParams", alias = "homeparams", default)]
    home_params: Option<DERPHomeParams>,
}

/// A problem found in a parsed map, before it is tied to its source.
struct Invalid(String);

impl RawSource {
    fn check(self) -> Result<SourceMap, Invalid> {
        let mut regions = BTreeMap::new();
        for (key, region) in self.regions.unwrap_or_default() {
            let id = u32::try_from(key)
                .ok()
                .filter(|&id| id > 0)
                .ok_or_else(|| Invalid(format!("region id {key} must be a positive number")))?;
            let region = region.map(|r| check_region(id, r)).transpose()?;
            regions.insert(id, region);
        }
        Ok(SourceMap {
            regions,
            home_params: self.home_params,
        })
    }
}

/// Fills ids the file left out and refuses what clients could not use.
fn check_region(id: u32, mut region: DERPRegion) -> Result<DERPRegion, Invalid> {
    if region.region_id == 0 {
        region.region_id = id;
    } else if region.region_id != id {
        return Err(Invalid(format!(
            "region {id} says regionid {}; they must be the same",
            region.region_id
        )));
    }
    for (n, node) in region.nodes.iter_mut().enumerate() {
        let name = if node.name.is_empty() {
            format!("#{}", n + 1)
        } else {
            format!("{:?}", node.name)
        };
        if node.host_name.trim().is_empty() {
            return Err(Invalid(format!(
                "region {id} node {name} has no hostname (expected e.g. hostname: derp.example.com)"
            )));
        }
        if node.region_id == 0 {
            node.region_id = id;
        } else if node.region_id != id {
            return Err(Invalid(format!(
                "region {id} node {name} says regionid {}; it must be {id}",
                node.region_id
            )));
        }
    }
    Ok(region)
}

/// Parses a `derp.paths` file's text. An empty file is an empty map, as in Headscale.
pub fn parse_yaml(path: &Path, text: &str) -> Result<SourceMap, Error> {
    let file_error = |line, message| Error::File {
        path: path.to_owned(),
        line,
        message,
    };
    let raw: RawSource = if text.trim().is_empty() {
        RawSource::default()
    } else {
        yaml_serde::from_str(text).map_err(|err| {
            let line = err.location().map(|l| l.line());
            file_error(line, format!("not a DERP map: {err}"))
        })?
    };
    raw.check()
        .map_err(|Invalid(message)| file_error(None, message))
}

/// Parses a `derp.urls` body (Tailscale's JSON).
pub fn parse_json(url: &str, body: &[u8]) -> Result<SourceMap, Error> {
    let url_error = |message| Error::Url {
        url: url.to_owned(),
        message,
    };
    let raw: RawSource =
        serde_json::from_slice(body).map_err(|err| url_error(format!("not a DERP map: {err}")))?;
    raw.check().map_err(|Invalid(message)| url_error(message))
}

/// Reads and parses one `derp.paths` file.
pub async fn read_file(path: &Path) -> Result<SourceMap, Error> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|err| Error::File {
            path: path.to_owned(),
            line: None,
            message: format!("cannot read it: {err}"),
        })?;
    parse_yaml(path, &text)
}

/// The HTTP client for `derp.urls`: rustls on ring, 10 s per fetch.
pub fn http_client() -> Result<reqwest::Client, Error> {
    fetch::client(FETCH_TIMEOUT, fetch::Redirects::Follow).map_err(Error::Client)
}

/// Fetches and parses one `derp.urls` entry (`http://` or `https://` only; at most
/// [`MAX_BODY_BYTES`]).
pub async fn fetch(client: &reqwest::Client, url: &str) -> Result<SourceMap, Error> {
    let url_error = |message: String| Error::Url {
        url: url.to_owned(),
        message,
    };
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(url_error(
            "only http:// and https:// URLs are fetched".into(),
        ));
    }
    let response = client.get(url).send().await.map_err(|err| {
        url_error(format!(
            "fetch failed: {}",
            fetch::error_chain(&err.without_url())
        ))
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(url_error(format!("the server answered HTTP {status}")));
    }
    let body = fetch::read_capped(response, MAX_BODY_BYTES)
        .await
        .map_err(|err| match err {
            fetch::ReadError::TooLarge => url_error(format!(
                "the map is larger than {} MiB",
                MAX_BODY_BYTES >> 20
            )),
            fetch::ReadError::Failed(why) => url_error(format!("reading the map failed: {why}")),
        })?;
    parse_json(url, &body)
}

/// Merges sources in order (later wins per region id; `null` removes). Returns the map
/// and one note per replaced or removed region, for the log.
pub fn merge<'a>(
    sources: impl IntoIterator<Item = (&'a Source, &'a SourceMap)>,
) -> (DERPMap, Vec<String>) {
    let mut regions: BTreeMap<u32, (DERPRegion, &Source)> = BTreeMap::new();
    let mut scores: BTreeMap<u32, f64> = BTreeMap::new();
    let mut notes = Vec::new();
    for (source, map) in sources {
        for (&id, region) in &map.regions {
            match (region, regions.remove(&id)) {
                (Some(region), previous) => {
                    if let Some((_, earlier)) = previous {
                        notes.push(format!(
                            "DERP region {id} from {source} replaces the one from {earlier}"
                        ));
                    }
                    regions.insert(id, (region.clone(), source));
                }
                (None, Some((_, earlier))) => {
                    notes.push(format!(
                        "DERP region {id} from {earlier} is removed by {source}"
                    ));
                }
                (None, None) => {}
            }
        }
        if let Some(params) = &map.home_params {
            scores.extend(params.region_score.iter().map(|(&id, &score)| (id, score)));
        }
    }
    scores.retain(|id, _| regions.contains_key(id));
    let map = DERPMap {
        home_params: (!scores.is_empty()).then_some(DERPHomeParams {
            region_score: scores,
        }),
        regions: regions
            .into_iter()
            .map(|(id, (region, _))| (id, region))
            .collect(),
        omit_default_regions: false,
    };
    (map, notes)
}
