//! The load generator against a real headway: every simulated node registers,
//! converges on the full peer list, sees each fan-out change, and churned nodes
//! come back whole, with no server-side special case.

use crate::support::TestServer;

#[test]
fn the_load_generator_converges_every_simulated_node() {
    converges_every_simulated_node("1");
}

/// The same run spread over three load-generator processes (the coordinator and
/// two workers): every node's events reach the one report, and the schedule (fan-out
/// markers, churn orders) reaches the nodes in the workers.
#[test]
fn the_load_generator_converges_every_node_across_processes() {
    let report = converges_every_simulated_node("3");
    let cpu = report["load_generator"]["cpu_secs"].as_f64().unwrap();
    let join = report["load_generator"]["join_cpu_secs"].as_f64().unwrap();
    assert!(cpu >= join && join >= 0.0, "{report:#}");
}

fn converges_every_simulated_node(processes: &str) -> serde_json::Value {
    let server = TestServer::spawn();
    let key = server.reusable_key("bench", &[]);
    let report = server.bench(
        &server.url(),
        &key,
        &[
            "--processes",
            processes,
            "--nodes",
            "30",
            "--concurrency",
            "8",
            "--fanout-rounds",
            "3",
            "--steady",
            "1s",
            "--churn",
            "3s",
            "--churn-rate",
            "4",
            "--deadline",
            "2m",
        ],
    );
    let storm = &report["join_storm"];
    assert_eq!(
        (storm["registered"].as_u64(), storm["converged"].as_u64()),
        (Some(30), Some(30)),
        "{report:#}"
    );
    assert!(storm["convergence_secs"].as_f64().is_some(), "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    let rounds = report["fan_out"].as_array().unwrap();
    assert_eq!(rounds.len(), 3);
    for round in rounds {
        assert_eq!(
            (round["count"].as_u64(), round["missing"].as_u64()),
            (Some(29), Some(0))
        );
    }
    // Churn: nodes left and came back; each got its whole map again and every
    // peer saw its new endpoint.
    let churn = &report["churn"];
    let cycles = churn["cycles"].as_u64().unwrap();
    assert!(cycles >= 10, "{churn:#}");
    for measure in ["rejoin", "propagation"] {
        assert_eq!(
            (
                churn[measure]["count"].as_u64(),
                churn[measure]["missing"].as_u64()
            ),
            (Some(cycles), Some(0)),
            "{measure}: {churn:#}"
        );
    }
    // The server really has the nodes the generator claims to have made, and a
    // node that came back is the same node, not a new one.
    let nodes: serde_json::Value =
        serde_json::from_str(&server.cli(&["nodes", "list", "-o", "json"]).ok().stdout).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 30);
    report
}

#[test]
fn under_a_partitioning_policy_nodes_see_their_cohort_and_get_a_changed_policy() {
    let server = TestServer::spawn_with(crate::support::Spawn {
        extra_config: "policy:\n  mode: database\n".into(),
        ..Default::default()
    });
    let dir = server.dir.path();
    let mut keys = Vec::new();
    for user in ["u0", "u1", "u2"] {
        keys.push(server.reusable_key(user, &[]));
    }
    let cohorts = |port: u16| {
        let rules: Vec<String> = (0..3)
            .map(|u| {
                format!(r#"{{"action": "accept", "src": ["u{u}@"], "dst": ["u{u}@:{port}"]}}"#)
            })
            .collect();
        format!(r#"{{"acls": [{}]}}"#, rules.join(","))
    };
    std::fs::write(dir.join("first.hujson"), cohorts(22)).unwrap();
    std::fs::write(dir.join("second.hujson"), cohorts(2222)).unwrap();
    let first = dir.join("first.hujson").display().to_string();
    server.cli(&["policy", "set", "-f", &first]).ok();
    let change = format!(
        "{} -c {} policy set -f {}",
        crate::support::headway_bin().display(),
        server.config_path.as_ref().unwrap().display(),
        dir.join("second.hujson").display()
    );
    let report = server.bench(
        &server.url(),
        &keys.join(","),
        &[
            "--cohorts",
            "--nodes",
            "30",
            "--concurrency",
            "8",
            "--fanout-rounds",
            "2",
            "--steady",
            "1s",
            "--churn",
            "0s",
            "--policy-change",
            &change,
            "--deadline",
            "2m",
        ],
    );
    // 30 nodes in 3 cohorts: each sees the 9 others of its cohort and no one else.
    assert_eq!(report["join_storm"]["converged"], 30, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    for round in report["fan_out"].as_array().unwrap() {
        assert_eq!(
            (round["count"].as_u64(), round["missing"].as_u64()),
            (Some(9), Some(0))
        );
    }
    let policy = &report["policy_change"];
    assert_eq!(
        (
            policy["latency"]["count"].as_u64(),
            policy["latency"]["missing"].as_u64()
        ),
        (Some(30), Some(0)),
        "{report:#}"
    );
    assert!(policy["all_secs"].as_f64().is_some(), "{report:#}");
}
