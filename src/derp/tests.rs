//! DERP map tests: YAML fixtures, merge rules, and URL sources served by a local axum
//! server on 127.0.0.1 (never Tailscale's own map).

use super::map::{self, Error, Source};
use super::{DerpMaps, load};
use crate::config;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/derp")
        .join(name)
}

fn derp_config(urls: &[String], paths: &[&str]) -> config::Derp {
    let mut derp = config::Config::default().derp;
    derp.urls = urls.to_vec();
    derp.paths = paths.iter().map(|p| fixture(p)).collect();
    derp
}

async fn read_fixture(name: &str) -> map::SourceMap {
    map::read_file(&fixture(name)).await.unwrap()
}

type Reply = Arc<Mutex<(StatusCode, String)>>;

/// A local HTTP server whose `/map` answers with whatever the test sets.
struct MapServer {
    base: String,
    reply: Reply,
    hits: Arc<AtomicUsize>,
}

impl MapServer {
    async fn start(body: String) -> MapServer {
        let reply = Arc::new(Mutex::new((StatusCode::OK, body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let state = (reply.clone(), hits.clone());
        let app = Router::new()
            .route(
                "/map",
                get(
                    |State((reply, hits)): State<(Reply, Arc<AtomicUsize>)>| async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        reply.lock().unwrap().clone()
                    },
                ),
            )
            .route(
                "/big",
                get(|| async { " ".repeat(map::MAX_BODY_BYTES + 1) }),
            )
            .route("/broken", get(|| async { "{\"Regions\": [" }))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MapServer { base, reply, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn set(&self, status: StatusCode, body: String) {
        *self.reply.lock().unwrap() = (status, body);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn tailscale_json() -> String {
    std::fs::read_to_string(fixture("tailscale.json")).unwrap()
}

#[tokio::test]
async fn headscale_style_yaml_reads_into_the_expected_map() {
    let source = Source::Path(fixture("regions.yaml"));
    let read = read_fixture("regions.yaml").await;
    let (map, notes) = map::merge([(&source, &read)]);
    assert!(notes.is_empty());
    assert_eq!(
        serde_json::to_value(&map).unwrap(),
        json!({"Regions": {
            "900": {"RegionID": 900, "RegionCode": "thk", "RegionName": "Tokyo relay",
                    "Nodes": [{"Name": "900a", "RegionID": 900, "HostName": "derp-tokyo.example.com",
                               "IPv4": "203.0.113.10", "IPv6": "2001:db8::10"}]},
            "901": {"RegionID": 901, "RegionCode": "ip-only", "RegionName": "Relay without a domain",
                    "Nodes": [{"Name": "901a", "RegionID": 901, "HostName": "198.51.100.20",
                               "IPv4": "198.51.100.20", "STUNPort": -1, "DERPPort": 8443,
                               "InsecureForTests": true}]}}})
    );
}

#[tokio::test]
async fn null_removes_and_later_sources_win() {
    let fetched = Source::Url("http://127.0.0.1:1/map".into());
    let fetched_map =
        map::parse_json("http://127.0.0.1:1/map", tailscale_json().as_bytes()).unwrap();
    let regions = Source::Path(fixture("regions.yaml"));
    let regions_map = read_fixture("regions.yaml").await;
    let overrides = Source::Path(fixture("overrides.yaml"));
    let overrides_map = read_fixture("overrides.yaml").await;

    let (map, notes) = map::merge([
        (&fetched, &fetched_map),
        (&regions, &regions_map),
        (&overrides, &overrides_map),
    ]);
    assert_eq!(
        map.regions.keys().copied().collect::<Vec<_>>(),
        [2, 900, 901]
    );
    assert_eq!(map.regions[&900].region_code, "thk2");
    assert_eq!(
        map.regions[&900].nodes[0].host_name,
        "derp2-tokyo.example.com"
    );
    assert_eq!(
        map.home_params
            .unwrap()
            .region_score
            .into_iter()
            .collect::<Vec<_>>(),
        [(2, 1.5)],
        "scores of removed regions are dropped"
    );
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("region 1 ") && notes[0].contains("removed by derp.paths"));
    assert!(notes[1].contains("region 900 from derp.paths") && notes[1].contains("overrides.yaml"));

    // A null for a region nobody defined is harmless; a later definition brings it back.
    let (map, _) = map::merge([(&overrides, &overrides_map), (&fetched, &fetched_map)]);
    assert!(map.regions.contains_key(&1));
}

#[tokio::test]
async fn broken_yaml_is_an_error_naming_the_file_and_line() {
    let Err(err) = load(&derp_config(&[], &["regions.yaml", "broken.yaml"]), None).await else {
        panic!("a broken derp.paths file must stop start-up");
    };
    let Error::File { path, line, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(path, &fixture("broken.yaml"));
    assert_eq!(*line, Some(5), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("derp.paths: ") && text.contains("broken.yaml:5:"),
        "{text}"
    );

    let Err(err) = load(&derp_config(&[], &["missing.yaml"]), None).await else {
        panic!("a missing derp.paths file must stop start-up");
    };
    assert!(
        err.to_string().contains("missing.yaml: cannot read it"),
        "{err}"
    );
}

#[tokio::test]
async fn a_node_without_hostname_is_an_error() {
    let err = map::read_file(&fixture("no-hostname.yaml"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("no-hostname.yaml")
            && text.contains("region 902 node \"902a\" has no hostname"),
        "{text}"
    );
}

#[test]
fn region_ids_must_be_positive_and_consistent() {
    let path = Path::new("inline.yaml");
    let err = map::parse_yaml(path, "regions:\n  0:\n    regioncode: x\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("region id 0 must be a positive number"),
        "{err}"
    );
    let err = map::parse_yaml(path, "regions:\n  900:\n    regionid: 901\n").unwrap_err();
    assert!(
        err.to_string().contains("region 900 says regionid 901"),
        "{err}"
    );
    let numeric = map::parse_yaml(
        path,
        "regions:\n  900:\n    regioncode: 900\n    nodes:\n      - name: 1\n        hostname: 192.0.2.1\n",
    )
    .unwrap();
    let region = numeric.regions[&900].as_ref().unwrap();
    assert_eq!(
        (region.region_code.as_str(), region.nodes[0].name.as_str()),
        ("900", "1")
    );
    let empty = map::parse_yaml(path, "\n").unwrap();
    assert!(empty.regions.is_empty());
}

#[tokio::test]
async fn url_map_is_fetched_and_merged_before_paths() {
    let server = MapServer::start(tailscale_json()).await;
    let maps = load(
        &derp_config(&[server.url("/map")], &["overrides.yaml"]),
        None,
    )
    .await
    .unwrap();
    let map = maps.current();
    assert_eq!(map.regions.keys().copied().collect::<Vec<_>>(), [2, 900]);
    assert_eq!(map.regions[&2].nodes[0].host_name, "derp2d.example.net");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_failing_url_at_start_is_skipped() {
    let server = MapServer::start(tailscale_json()).await;
    let urls = [
        server.url("/missing"),
        server.url("/broken"),
        server.url("/big"),
        server.url("/map"),
    ];
    let maps = load(&derp_config(&urls, &[]), None).await.unwrap();
    assert_eq!(maps.current().regions.len(), 2);

    let client = map::http_client().unwrap();
    let err = map::fetch(&client, &server.url("/big")).await.unwrap_err();
    assert!(err.to_string().contains("larger than 4 MiB"), "{err}");
    let err = map::fetch(&client, &server.url("/missing"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");
    let err = map::fetch(&client, "file:///etc/passwd").await.unwrap_err();
    assert!(
        err.to_string().contains("only http:// and https://"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failing_refresh_keeps_the_previous_map() {
    let server = MapServer::start(tailscale_json()).await;
    let maps = load(&derp_config(&[server.url("/map")], &["regions.yaml"]), None)
        .await
        .unwrap();
    let before = maps.current();
    let updates = maps.subscribe();

    server.set(StatusCode::INTERNAL_SERVER_ERROR, "down".into());
    assert!(!maps.refresh().await);
    assert_eq!(maps.current(), before);
    server.set(StatusCode::OK, "not json".into());
    assert!(!maps.refresh().await);
    assert_eq!(*maps.current(), *before);
    assert!(!updates.has_changed().unwrap());
}

#[tokio::test]
async fn refresh_publishes_a_change_once() {
    let server = MapServer::start(tailscale_json()).await;
    let mut config = derp_config(&[server.url("/map")], &[]);
    config.update_frequency = Duration::from_millis(20);
    let maps = load(&config, None).await.unwrap();
    let mut updates = maps.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = maps
        .spawn_refresh(&config, async move {
            let _ = stopped.await;
        })
        .expect("auto update is on");

    let mut changed: serde_json::Value = serde_json::from_str(&tailscale_json()).unwrap();
    changed["Regions"]["2"]["RegionName"] = json!("San Francisco, renamed");
    server.set(StatusCode::OK, changed.to_string());

    tokio::time::timeout(Duration::from_secs(10), updates.changed())
        .await
        .expect("the change is published")
        .unwrap();
    assert_eq!(
        updates.borrow_and_update().regions[&2].region_name,
        "San Francisco, renamed"
    );
    assert_eq!(
        maps.current().regions[&2].region_name,
        "San Francisco, renamed"
    );

    // Several more refreshes of the same map publish nothing.
    let seen = server.hits();
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.hits() < seen + 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("refresh keeps running");
    assert!(!updates.has_changed().unwrap());

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("refresh stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn no_source_gives_an_empty_map_and_no_refresh() {
    let config = derp_config(&[], &[]);
    let maps = load(&config, None).await.unwrap();
    assert!(maps.current().regions.is_empty());
    assert_eq!(
        serde_json::to_value(&*maps.current()).unwrap(),
        json!({"Regions": {}})
    );
    assert!(maps.spawn_refresh(&config, async {}).is_none());

    let mut off = derp_config(&[], &["regions.yaml"]);
    off.auto_update_enabled = false;
    let maps = load(&off, None).await.unwrap();
    assert!(maps.spawn_refresh(&off, async {}).is_none());
    assert!(!maps.refresh().await, "same files, same map");
    let fixed = DerpMaps::fixed(maps.current().as_ref().clone());
    assert!(!fixed.refresh().await);
}

#[tokio::test]
async fn other_replicas_regions_join_the_map_and_leave_it_with_them() {
    let region = |id: u32, code: &str| crate::tailcfg::DERPRegion {
        region_id: id,
        region_code: code.into(),
        ..Default::default()
    };
    let config = derp_config(&[], &["regions.yaml"]);
    let maps = load(&config, Some(region(990, "own"))).await.unwrap();
    let from_file: Vec<u32> = maps.current().regions.keys().copied().collect();
    let mut updates = maps.subscribe();
    let ids = |maps: &DerpMaps| maps.current().regions.keys().copied().collect::<Vec<_>>();

    let others = vec![
        ("b".to_owned(), region(991, "b")),
        ("c".to_owned(), region(992, "c")),
    ];
    assert!(maps.set_replica_regions(others.clone()).await);
    assert!(updates.has_changed().unwrap());
    updates.borrow_and_update();
    let mut expected = from_file.clone();
    expected.extend([991, 992]);
    expected.sort_unstable();
    assert_eq!(ids(&maps), expected);
    assert_eq!(maps.current().regions[&990].region_code, "own");

    // The same regions again publish nothing; a refresh of the files keeps them.
    assert!(!maps.set_replica_regions(others).await);
    assert!(!maps.refresh().await);
    assert!(!updates.has_changed().unwrap());
    assert_eq!(ids(&maps), expected);

    // A replica whose region says this one's id does not replace it.
    let clashing = vec![
        ("b".to_owned(), region(991, "b")),
        ("d".to_owned(), region(990, "d")),
    ];
    assert!(maps.set_replica_regions(clashing).await, "c is gone");
    assert_eq!(maps.current().regions[&990].region_code, "own");
    assert!(!ids(&maps).contains(&992));

    // Replicas gone: back to the files and this replica's own region.
    assert!(maps.set_replica_regions(Vec::new()).await);
    let mut alone = from_file;
    alone.sort_unstable();
    assert_eq!(ids(&maps), alone);
}
