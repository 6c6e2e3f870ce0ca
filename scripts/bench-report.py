#!/usr/bin/env python3
"""Writes docs/benchmarks.md from raw benchmark results. Each script owns one
section of the file and rewrites only that one:

  bench-report.py RESULTS_DIR DOCS_DIR           # scripts/bench-vs-headscale: the
                                                 # control plane, with PNG plots (gnuplot)
  bench-report.py --relay RESULTS_DIR DOCS_DIR   # scripts/bench-relay-vs-derper
  bench-report.py --policy RESULTS_DIR DOCS_DIR  # scripts/bench-policy"""

import glob
import json
import os
import subprocess
import sys

SERVERS = ["headway", "headscale"]


def load(results):
    runs = {}
    for path in glob.glob(os.path.join(results, "*-*.json")):
        name = os.path.basename(path)[: -len(".json")]
        server, n = name.rsplit("-", 1)
        with open(path) as f:
            runs[(server, int(n))] = json.load(f)
    return runs


def load_cpu(results, server, n):
    """The CPU seconds scripts/bench-vs-headscale measured over the whole
    load-generator run: (server process, PostgreSQL server), None where unknown."""
    path = os.path.join(results, f"{server}-{n}.cpu")
    if not os.path.exists(path):
        return None, None
    values = (open(path).read().split() + ["-", "-"])[:2]
    return tuple(None if v == "-" else float(v) for v in values)


def fanout(report, key):
    """The median over rounds of each round's `key` (median_ms or p99_ms)."""
    values = sorted(r[key] for r in report["fan_out"] if r[key] is not None)
    return values[len(values) // 2] if values else None


def status(report):
    storm = report["join_storm"]
    if storm["convergence_secs"] is None:
        return f"incomplete: {storm['converged']}/{report['nodes']} converged, {report['failed']} failed"
    missing = sum(r["missing"] for r in report["fan_out"])
    churn = report.get("churn") or {}
    unfinished = max(
        (churn.get(k) or {}).get("missing", 0) for k in ("rejoin", "propagation")
    )
    if report["failed"] or missing or unfinished:
        return (
            f"{report['failed']} failed, {missing} fan-out samples missing, "
            f"{unfinished} churn cycles unfinished"
        )
    return "complete"


def metrics(report):
    storm, steady = report["join_storm"], report["steady"]
    rss = steady.get("rss_kib")
    return {
        "convergence_s": storm["convergence_secs"],
        "register_p50_ms": storm["registration"]["median_ms"],
        "register_p99_ms": storm["registration"]["p99_ms"],
        "register_retries": storm.get("retried"),
        "fanout_p50_ms": fanout(report, "median_ms"),
        "fanout_p99_ms": fanout(report, "p99_ms"),
        "steady_cpu_s": steady.get("cpu_secs"),
        "rss_mib": rss / 1024 if rss else None,
        "rss_per_node_kib": steady.get("rss_per_node_kib"),
        "bytes_per_node": steady.get("bytes_per_node"),
        "reconnects": report.get("reconnects"),
        **churn_metrics(report.get("churn")),
        "generator_join_cpu_s": report.get("load_generator", {}).get("join_cpu_secs"),
        "generator_cpu_s": report.get("load_generator", {}).get("cpu_secs"),
    }


def churn_metrics(churn):
    if not churn or not churn.get("cycles"):
        return {}
    return {
        "churn_cycles": churn["cycles"],
        "churn_rejoin_p50_ms": churn["rejoin"]["median_ms"],
        "churn_rejoin_p99_ms": churn["rejoin"]["p99_ms"],
        "churn_propagation_p50_ms": churn["propagation"]["median_ms"],
        "churn_propagation_p99_ms": churn["propagation"]["p99_ms"],
        "churn_cpu_s": churn.get("cpu_secs"),
    }


def fmt(value, digits=1):
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) < 1:
        return f"{value:.2f}"
    return f"{value:.{digits}f}"


def ratio(headscale, headway):
    if headscale is None or headway is None or headway <= 0:
        return "—"
    return f"{headscale / headway:.1f}×"


def plot(docs, sizes, runs, key, title, ylabel, png):
    data = os.path.join(docs, "bench", png + ".dat")
    with open(data, "w") as f:
        for n in sizes:
            row = [str(n)]
            for server in SERVERS:
                report = runs.get((server, n))
                value = metrics(report).get(key) if report else None
                row.append("NaN" if value is None else repr(value))
            f.write(" ".join(row) + "\n")
    script = f"""
set terminal pngcairo size 800,500 noenhanced
set output '{os.path.join(docs, "bench", png + ".png")}'
set title '{title}'
set xlabel 'nodes'
set ylabel '{ylabel}'
set logscale x
set yrange [0:*]
set grid
set key left top
plot '{data}' using 1:2 with linespoints title 'headway', \\
     '{data}' using 1:3 with linespoints title 'Headscale v0.29.2'
"""
    gnuplot(script, docs, png)
    os.remove(data)


def gnuplot(script, docs, png):
    """Runs a gnuplot script that draws docs/bench/PNG.png."""
    for terminal in ("pngcairo", "png"):
        # A minimal gnuplot may lack pngcairo; the plain png terminal always exists.
        done = subprocess.run(
            ["gnuplot"], input=script.replace("pngcairo", terminal), text=True
        )
        if done.returncode == 0:
            return
    print(f"bench-report: no plot {png}.png (no data to draw)", file=sys.stderr)
    # gnuplot opens its output before it finds nothing to draw.
    target = os.path.join(docs, "bench", png + ".png")
    if os.path.exists(target) and os.path.getsize(target) == 0:
        os.remove(target)


TITLE = "# Benchmarks: headway against Headscale and Tailscale's derper"
# Sections in the order they appear; each is delimited by HTML comments that
# Markdown does not show.
SECTIONS = ["control-plane", "scaling", "postgres", "policy", "relay"]


def begin(name):
    return f"<!-- {name}: generated, do not edit by hand -->"


def end(name):
    return f"<!-- end {name} -->"


def write_section(docs, name, lines):
    """Replaces section `name` of docs/benchmarks.md, keeping the others."""
    path = os.path.join(docs, "benchmarks.md")
    text = open(path).read() if os.path.exists(path) else ""
    bodies = {}
    for other in SECTIONS:
        start, stop = text.find(begin(other)), text.find(end(other))
        if start >= 0 and stop > start:
            bodies[other] = text[start + len(begin(other)) : stop].strip("\n")
    bodies[name] = "\n".join(lines).strip("\n")
    out = [TITLE, ""]
    for section in SECTIONS:
        if section in bodies:
            out += [begin(section), bodies[section], end(section), ""]
    with open(path, "w") as f:
        f.write("\n".join(out))


# The rows of the control-plane tables: label, key of metrics().
ROWS = [
    ("Join storm convergence (s)", "convergence_s"),
    ("Registration p50 (ms)", "register_p50_ms"),
    ("Registration p99 (ms)", "register_p99_ms"),
    ("Registrations tried again", "register_retries"),
    ("Fan-out p50 (ms)", "fanout_p50_ms"),
    ("Fan-out p99 (ms)", "fanout_p99_ms"),
    ("Steady CPU in window (s)", "steady_cpu_s"),
    ("Steady RSS (MiB)", "rss_mib"),
    ("RSS per node (KiB)", "rss_per_node_kib"),
    ("Bytes per node in window", "bytes_per_node"),
    ("Map sessions the server ended", "reconnects"),
    ("Churn cycles (leave + rejoin)", "churn_cycles"),
    ("Churn rejoin p50 (ms)", "churn_rejoin_p50_ms"),
    ("Churn rejoin p99 (ms)", "churn_rejoin_p99_ms"),
    ("Churn propagation p50 (ms)", "churn_propagation_p50_ms"),
    ("Churn propagation p99 (ms)", "churn_propagation_p99_ms"),
    ("Churn CPU in window (s)", "churn_cpu_s"),
    ("Load generator CPU, join storm (s)", "generator_join_cpu_s"),
    ("Load generator CPU, whole run (s)", "generator_cpu_s"),
]


def control_plane(results, docs):
    runs = load(results)
    with open(os.path.join(results, "machine.txt")) as f:
        machine = f.read().strip().splitlines()
    if any(server in PG_SERVERS for (server, _) in runs):
        postgres(results, docs, runs, machine)
    # A run without Headscale (headway against headway-pg and headway-pg2, say)
    # leaves the comparison with Headscale as it was.
    runs = {k: v for k, v in runs.items() if k[0] in SERVERS}
    scaling(results, docs, runs, machine)
    if not any(server == "headscale" for (server, _) in runs):
        return
    machine = [line for line in machine if not line.startswith("postgresql: ")]
    sizes = sorted({n for (_, n) in runs})
    os.makedirs(os.path.join(docs, "bench"), exist_ok=True)

    plots = [
        ("convergence_s", "Join storm: time until every node lists every peer", "seconds", "convergence"),
        ("fanout_p99_ms", "Fan-out: p99 latency of an endpoint change", "milliseconds", "fanout-p99"),
        ("steady_cpu_s", "Steady state: server CPU seconds in the window", "CPU seconds", "steady-cpu"),
        ("rss_mib", "Steady state: server resident memory", "MiB", "rss"),
        ("churn_propagation_p99_ms", "Churn: p99 time until peers see a rejoined node", "milliseconds", "churn-propagation-p99"),
        ("churn_cpu_s", "Churn: server CPU seconds in the window", "CPU seconds", "churn-cpu"),
    ]
    for key, title, ylabel, png in plots:
        plot(docs, sizes, runs, key, title, ylabel, png)

    out = ["## Control plane: headway against Headscale", ""]
    out += [
        "Written by `scripts/bench-vs-headscale`; reproduce everything with:",
        "",
        "```sh",
        "scripts/bench-vs-headscale",
        "```",
        "",
        "Both servers run on this machine with the same config values (SQLite, the same",
        "prefixes, the same placeholder DERP region, log level warn), one at a time, in",
        "alternating order, against the same load generator (`headway bench`: simulated",
        "nodes that do the TS2021 handshake, register with a reusable pre-auth key from the",
        "server's own CLI, and hold a streaming map session; like tailscaled, a node whose",
        "session the server ends opens a new one a second later). The load generator shares the",
        "machine with the server, so absolute numbers include its cost; the last rows say how",
        "much CPU it used itself.",
        "",
    ]
    out += [f"- {line}" for line in machine]
    out += [
        "",
        "Scenarios: **join storm** (all N nodes connect, 64 at a time, and register; convergence",
        "is the time from the first connection until every node's map lists all N−1 peers);",
        "**fan-out** (one node announces a new endpoint with a lite map request; latency until",
        "each of the N−1 peers has it; rounds are a second apart, so each measures one change",
        "on its own; the table shows the median over rounds of each round's",
        "p50 and p99); **steady state** (every node connected and idle for the window; server",
        "CPU seconds, resident memory, and memory per node: the growth of the server's RSS",
        "from before the first node connected to the end of the window, divided by N);",
        "**churn** (after the steady state, nodes leave and come back at a fixed rate, as a",
        "restarted tailscaled does: the connection closes, a second later a new one registers",
        "again with the same keys and opens a map stream announcing a new endpoint; *rejoin*",
        "is from the new connection until the node's map lists all its peers again,",
        "*propagation* from its map request until every peer that stayed connected meanwhile",
        "has its new endpoint; server CPU seconds over the churn window).",
        "",
    ]
    for n in sizes:
        out.append(f"### {n} nodes")
        out.append("")
        out.append("| | headway | Headscale v0.29.2 | Headscale ÷ headway |")
        out.append("|---|---|---|---|")
        hw, hs = runs.get(("headway", n)), runs.get(("headscale", n))
        mh = metrics(hw) if hw else {}
        ms = metrics(hs) if hs else {}
        for label, key in ROWS:
            a, b = mh.get(key), ms.get(key)
            out.append(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio(b, a)} |")
        out.append(
            f"| Outcome | {status(hw) if hw else 'not run'} | {status(hs) if hs else 'not run'} | |"
        )
        out.append("")
    out += ["### Plots", ""]
    for _, title, _, png in plots:
        out.append(f"![{title}](bench/{png}.png)")
        out.append("")
    write_section(docs, "control-plane", out)


# How each cost grows with N: label, key of metrics() (or "server_cpu_s", the
# server's CPU over the whole load-generator run).
GROWTH = [
    ("Join storm convergence", "convergence_s"),
    ("Registration p99", "register_p99_ms"),
    ("Fan-out p99", "fanout_p99_ms"),
    ("Churn propagation p99", "churn_propagation_p99_ms"),
    ("Server RSS", "rss_mib"),
    ("Server CPU, whole run", "server_cpu_s"),
    ("Load generator CPU, whole run", "generator_cpu_s"),
]


def fit_exponent(points):
    """The least-squares slope of log(value) against log(N): value ≈ a·N^slope.
    None with fewer than two positive points."""
    import math

    pts = [(math.log(n), math.log(v)) for n, v in points if v is not None and v > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def growth_values(results, runs, server):
    """Per size of `server`'s complete runs: the GROWTH values."""
    out = {}
    for (name, n), report in sorted(runs.items()):
        if name != server or status(report) != "complete":
            continue
        values = metrics(report)
        values["server_cpu_s"] = load_cpu(results, server, n)[0]
        out[n] = values
    return out


def scaling(results, docs, runs, machine):
    """The scaling section: how headway's (and Headscale's) costs grow with N, on a
    log-log plot, with the fitted exponent. Needs three sizes of headway."""
    series = {server: growth_values(results, runs, server) for server in SERVERS}
    sizes = sorted(series["headway"])
    if len(sizes) < 3:
        return
    os.makedirs(os.path.join(docs, "bench"), exist_ok=True)
    out = ["## How cost grows with the number of nodes", ""]
    out += [
        "Written by `scripts/bench-vs-headscale` from its complete runs (headway alone at large",
        "N: `BENCH_SERVERS=headway BENCH_NODES=\"100 300 1000 2000 5000 10000\" BENCH_PROCESSES=2",
        "scripts/bench-vs-headscale`). Each exponent is the least-squares slope of log(value)",
        "against log(N): 1 means the cost grows in proportion to N, 2 with N². A join storm",
        "must deliver N² peer entries, so its floor is 2; fan-out to N peers is 1 at best.",
        "",
    ]
    out += [f"- {line}" for line in machine]
    out += ["", "| | " + " | ".join(str(n) for n in sizes) + " | exponent (headway) | exponent (Headscale) |"]
    out.append("|---" * (len(sizes) + 3) + "|")
    data = os.path.join(docs, "bench", "growth.dat")
    with open(data, "w") as f:
        for label, key in GROWTH:
            hw = [(n, series["headway"][n].get(key)) for n in sizes]
            hs = [(n, v.get(key)) for n, v in sorted(series["headscale"].items())]
            e_hw, e_hs = fit_exponent(hw), fit_exponent(hs)
            cells = " | ".join(fmt(v) for _, v in hw)
            out.append(
                f"| {label} | {cells} | {'—' if e_hw is None else f'{e_hw:.2f}'} | {'—' if e_hs is None else f'{e_hs:.2f}'} |"
            )
            # gnuplot: one block per series, each relative to its first value.
            base = next((v for _, v in hw if v), None)
            if base:
                f.write(f'"{label} ({e_hw:.2f})"\n' if e_hw is not None else f'"{label}"\n')
                for n, v in hw:
                    if v:
                        f.write(f"{n} {v / base}\n")
                f.write("\n\n")
    blocks = sum(1 for label, key in GROWTH if any(series["headway"][n].get(key) for n in sizes))
    script = f"""
set terminal pngcairo size 900,600 noenhanced
set output '{os.path.join(docs, "bench", "growth.png")}'
set title 'headway: each cost relative to its value at {sizes[0]} nodes (log-log; fitted exponent in brackets)'
set xlabel 'nodes'
set ylabel 'relative to {sizes[0]} nodes'
set logscale xy
set xrange [{sizes[0]}:{sizes[-1]}]
set grid
set key left top
plot for [i=0:{blocks - 1}] '{data}' index i using 1:2 with linespoints title columnheader(1), \\
     (x/{sizes[0]}) with lines dashtype 2 title 'N', \\
     (x/{sizes[0]})**2 with lines dashtype 3 title 'N²'
"""
    gnuplot(script, docs, "growth")
    os.remove(data)
    out += ["", "![How each cost grows with N](bench/growth.png)", ""]
    write_section(docs, "scaling", out)


# headway on PostgreSQL: one replica, and two replicas on one database.
PG_SERVERS = ["headway-pg", "headway-pg2"]
# The goal for headway on PostgreSQL, as a ratio to headway on SQLite.
PG_GOAL = 1.5
# The goal for a change crossing replicas (issue 16): p99 under this at GOAL_NODES.
CROSS_GOAL_MS = 200
CROSS_GOAL_NODES = 5000
# Rows that count events rather than cost: shown, but not held to the goal.
PG_NOT_COSTS = {"reconnects", "churn_cycles", "register_retries"}


def pg_ratio(pg, sqlite):
    if pg is None or sqlite is None or sqlite <= 0:
        return None
    return pg / sqlite


def na(value, digits=1):
    """A table cell: the value, or "n/a" when it was not measured."""
    return "n/a" if value is None else fmt(value, digits)


def cross_metrics(report):
    """Fan-out of a two-replica run split by the receiver's replica (the report's
    `cross_replica`, all rounds pooled); empty for a run of one server."""
    cross = (report or {}).get("cross_replica") or {}
    same, other = cross.get("same_server") or {}, cross.get("other_server") or {}
    return {
        "same_p50_ms": same.get("median_ms"),
        "same_p99_ms": same.get("p99_ms"),
        "other_p50_ms": other.get("median_ms"),
        "other_p99_ms": other.get("p99_ms"),
        "other_missing": other.get("missing"),
    }


# The columns of the one-and-two-replicas table: each cell holds the value for
# SQLite, PostgreSQL and two replicas on PostgreSQL.
REPLICA_COLUMNS = [
    ("Join storm convergence (s)", "convergence_s"),
    ("Registration p99 (ms)", "register_p99_ms"),
    ("Fan-out p50 (ms)", "fanout_p50_ms"),
    ("Fan-out p99 (ms)", "fanout_p99_ms"),
    ("Churn rejoin p99 (ms)", "churn_rejoin_p99_ms"),
    ("Churn propagation p99 (ms)", "churn_propagation_p99_ms"),
]


def replicas_table(runs, sizes):
    """headway on SQLite, on PostgreSQL, and as two replicas on PostgreSQL: one
    row per size, with the fan-out ratios and the cross-replica split."""
    out = [
        "### One and two replicas",
        "",
        "*Two replicas*: two `headway serve` processes on one database (the second started",
        "with a copy of the first's Noise key); the load generator puts node i on replica",
        "i mod 2, so a node's change reaches half of its peers through the other replica,",
        "which learns it from the database's change feed. The fan-out announcer is on",
        "replica 0; *same replica* is the latency to receivers on replica 0, *other",
        "replica* to receivers on replica 1 (all rounds pooled): the cross-replica",
        f"propagation of a change, whose goal is a p99 under {CROSS_GOAL_MS} ms at",
        f"{CROSS_GOAL_NODES:,} nodes. Each of the first columns reads SQLite / PostgreSQL /",
        "two replicas; a two-replica run's CPU and memory are its two processes' sum.",
        "",
    ]
    header = ["Nodes"] + [label for label, _ in REPLICA_COLUMNS] + [
        "Fan-out p99: PostgreSQL ÷ SQLite",
        "Fan-out p99: two ÷ one replica",
        "Same replica p50 / p99 (ms)",
        "Other replica p50 / p99 (ms)",
    ]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "---|" * len(header))
    outcomes = []
    for n in sizes:
        reports = [runs.get((server, n)) for server in ["headway"] + PG_SERVERS]
        values = [metrics(r) if r else {} for r in reports]
        row = [str(n)]
        for _, key in REPLICA_COLUMNS:
            row.append(" / ".join(na(v.get(key)) for v in values))
        sq, pg, pg2 = (v.get("fanout_p99_ms") for v in values)
        for r in (pg_ratio(pg, sq), pg_ratio(pg2, pg)):
            row.append("n/a" if r is None else f"{r:.2f}×")
        cross = cross_metrics(reports[2])
        row.append(f"{na(cross['same_p50_ms'])} / {na(cross['same_p99_ms'])}")
        row.append(f"{na(cross['other_p50_ms'])} / {na(cross['other_p99_ms'])}")
        out.append("| " + " | ".join(row) + " |")
        for server, report in zip(["headway"] + PG_SERVERS, reports):
            if report and status(report) != "complete":
                outcomes.append(f"{server} at {n} nodes: {status(report)}")
    out.append("")
    measured = [n for n in sizes if cross_metrics(runs.get(("headway-pg2", n)))["other_p99_ms"] is not None]
    if measured:
        n = max(measured)
        p99 = cross_metrics(runs[("headway-pg2", n)])["other_p99_ms"]
        verdict = "within" if p99 < CROSS_GOAL_MS else "beyond"
        out.append(
            f"Cross-replica p99 at {n:,} nodes (the largest size run): {fmt(p99)} ms, "
            f"{verdict} the goal of {CROSS_GOAL_MS} ms"
            + ("." if n == CROSS_GOAL_NODES else f" (set for {CROSS_GOAL_NODES:,} nodes).")
        )
        out.append("")
    if outcomes:
        out += ["Runs that did not complete:", ""] + [f"- {o}" for o in outcomes] + [""]
    return out


def postgres(results, docs, runs, machine):
    """The section comparing headway on PostgreSQL (headway-pg, and two replicas:
    headway-pg2) with headway on SQLite (headway) at each size."""
    sizes = sorted({n for (server, n) in runs if server in PG_SERVERS})
    out = ["## Control plane: headway on PostgreSQL against headway on SQLite", ""]
    out += [
        "Written by `scripts/bench-vs-headscale`; reproduce with:",
        "",
        "```sh",
        'BENCH_SERVERS="headway headway-pg headway-pg2" scripts/bench-vs-headscale',
        "```",
        "",
        f"**The goal: one replica on PostgreSQL within {PG_GOAL:g}× of SQLite** on every",
        "cost below (times, CPU, memory).",
        "",
        "The same load generator and scenarios as the comparison with Headscale, and the same",
        "config except the database: *SQLite* is headway's file in WAL mode",
        "(synchronous=NORMAL), *PostgreSQL* a server the script starts on this machine for",
        "the runs (a fresh database per run, reached over loopback TCP). PostgreSQL keeps its",
        "durable defaults, fsync and synchronous_commit=on, so every commit waits for its",
        "WAL flush; SQLite in WAL mode with synchronous=NORMAL syncs only at checkpoints, so",
        "PostgreSQL's commits are the more durable of the two. The runs alternate with",
        "SQLite's. *Steady*/*churn* CPU and RSS are headway's process alone; PostgreSQL's",
        "processes (and its shared buffers) are not in them. The *whole run* rows add",
        "PostgreSQL's CPU: the server process and the PostgreSQL server, from the load",
        "generator's start to its end.",
        "",
    ]
    out += [f"- {line}" for line in machine]
    out.append("")
    out += replicas_table(runs, sizes)
    rows = ROWS + [
        ("Whole run CPU: server process (s)", "run_cpu_s"),
        ("Whole run CPU: PostgreSQL (s)", "run_db_cpu_s"),
        ("Whole run CPU: both (s)", "run_total_cpu_s"),
    ]
    for n in sizes:
        sq, pg = runs.get(("headway", n)), runs.get(("headway-pg", n))
        if not pg:
            continue  # Two replicas alone: the table above has them.
        values = {}
        for server, report in (("headway", sq), ("headway-pg", pg)):
            m = metrics(report) if report else {}
            if report:
                cpu, db_cpu = load_cpu(results, server, n)
                m["run_cpu_s"], m["run_db_cpu_s"] = cpu, db_cpu
                if cpu is not None:
                    m["run_total_cpu_s"] = cpu + (db_cpu or 0)
            values[server] = m
        out += [f"### {n} nodes", ""]
        out.append("| | SQLite | PostgreSQL | PostgreSQL ÷ SQLite |")
        out.append("|---|---|---|---|")
        beyond = []
        for label, key in rows:
            a, b = values["headway"].get(key), values["headway-pg"].get(key)
            r = pg_ratio(b, a)
            if key == "run_db_cpu_s":
                r = None  # SQLite has no server of its own: the total row compares.
            out.append(f"| {label} | {fmt(a)} | {fmt(b)} | {'—' if r is None else f'{r:.2f}×'} |")
            if r is not None and r > PG_GOAL and key not in PG_NOT_COSTS:
                name = label.split(" (")[0]
                beyond.append(f"{name[0].lower()}{name[1:]} {r:.2f}×")
        out.append(
            f"| Outcome | {status(sq) if sq else 'not run'} | {status(pg) if pg else 'not run'} | |"
        )
        out.append("")
        if sq and pg:
            if beyond:
                out.append(f"Beyond {PG_GOAL:g}× of SQLite: " + "; ".join(beyond) + ".")
            else:
                out.append(f"Within {PG_GOAL:g}× of SQLite on every cost measured.")
            out.append("")
    write_section(docs, "postgres", out)


RELAYS = ["headway", "derper"]


def load_relay(results):
    """Reports by relay name: one per repetition."""
    runs = {name: [] for name in RELAYS}
    for path in sorted(glob.glob(os.path.join(results, "*-*.json"))):
        name = os.path.basename(path).rsplit("-", 1)[0]
        if name in runs:
            with open(path) as f:
                runs[name].append(json.load(f))
    return runs


def relay_values(reports, pairs, key):
    if pairs is None:
        values = [(r.get("memory") or {}).get(key) for r in reports]
    else:
        values = [
            t.get(key) for r in reports for t in r["throughput"] if t["pairs"] == pairs
        ]
    return sorted(v for v in values if v is not None)


def median(values):
    return values[len(values) // 2] if values else None


def spread(values, digits):
    """The median, and the range over repetitions when there are several."""
    if not values:
        return "—"
    text = fmt(median(values), digits)
    if len(values) > 1:
        text += f" ({fmt(values[0], digits)}–{fmt(values[-1], digits)})"
    return text


def compare(hw, derper, higher_is_better):
    if hw is None or derper is None or hw <= 0 or derper <= 0:
        return "—"
    if higher_is_better:
        return f"{hw / derper:.2f}× derper's"
    return f"{derper / hw:.2f}× less than derper"


def relay(results, docs):
    runs = load_relay(results)
    with open(os.path.join(results, "machine.txt")) as f:
        machine = f.read().strip().splitlines()
    pair_counts = sorted(
        {t["pairs"] for reports in runs.values() for r in reports for t in r["throughput"]}
    )
    packet_size = next(
        (r["packet_size"] for reports in runs.values() for r in reports), None
    )
    rows = []
    for pairs in pair_counts:
        label = f"{pairs} pair" + ("s" if pairs > 1 else "")
        rows += [
            (f"{label}: packets/s received", pairs, "packets_per_sec", True, 0),
            (f"{label}: MB/s received", pairs, "mb_per_sec", True, 1),
            (f"{label}: packets/s sent", pairs, "sent_per_sec", True, 0),
            (f"{label}: slowest pair, packets/s", pairs, "slowest_pair_per_sec", True, 0),
            (f"{label}: relay CPU seconds per second", pairs, "server_cpu_secs", None, 2),
            (f"{label}: packets per relay CPU second", pairs, "packets_per_cpu_sec", True, 0),
        ]
    rows.append(("Memory per connected client (KiB)", None, "rss_per_client_kib", False, 1))
    rows.append(("Relay RSS with the idle clients (KiB)", None, "rss_after_kib", False, 0))

    derper_version = next(
        (line.split(": ", 1)[1] for line in machine if line.startswith("derper: ")), ""
    )
    out = [f"## Relay: headway's embedded DERP against derper {derper_version}", ""]
    out += [
        "Written by `scripts/bench-relay-vs-derper`; reproduce with:",
        "",
        "```sh",
        "scripts/bench-relay-vs-derper",
        "```",
        "",
        "Both relays run on this machine, one at a time and in alternating order, with TLS",
        "on a self-signed certificate for 127.0.0.1 (headway: the embedded relay of a",
        "plain-HTTP `server_url`; derper: `--certmode=manual --hostname=127.0.0.1`) and no",
        "client admission. The same client, `headway bench-relay`, logs in DERP clients",
        "with fresh keys. **Memory**: the relay's RSS growth while idle clients log in,",
        "divided by their number. **Throughput**: each sender writes packets of",
        f"{packet_size} bytes (a WireGuard packet of a 1280-byte tunnel MTU) to its receiver",
        "as fast as its TCP connection takes them; the relays queue a bounded number per",
        "receiver and drop the rest, so *received* is what the relay delivered. The client",
        "shares the two cores with the relay (its TLS costs about as much as the relay's),",
        "so *packets per relay CPU second* is the fairest efficiency figure. This is a",
        "flood, not a paced load: a relay whose readers take packets faster than its",
        "writers deliver them spends its CPU on packets it then drops (compare *sent* with",
        "*received*). Each cell is the median over repetitions, with the range in",
        "parentheses.",
        "",
    ]
    out += [f"- {line}" for line in machine]
    out += ["", "| | headway | derper | headway against derper |", "|---|---|---|---|"]
    for label, pairs, key, higher, digits in rows:
        hw = relay_values(runs["headway"], pairs, key)
        dp = relay_values(runs["derper"], pairs, key)
        if key == "server_cpu_secs":
            window = median(relay_values(runs["headway"] + runs["derper"], pairs, "window_secs"))
            hw = [v / window for v in hw] if window else []
            dp = [v / window for v in dp] if window else []
        verdict = "" if higher is None else compare(median(hw), median(dp), higher)
        out.append(f"| {label} | {spread(hw, digits)} | {spread(dp, digits)} | {verdict} |")
    misdelivered = sum(
        t["misdelivered"] for reports in runs.values() for r in reports for t in r["throughput"]
    )
    out += ["", f"Packets delivered to the wrong receiver, over all runs: {misdelivered}."]
    notes = [
        f"{name}: {note}" for name in RELAYS for r in runs[name] for note in r.get("notes", [])
    ]
    if notes:
        out += ["", "Notes from the runs:", ""] + [f"- {note}" for note in notes]
    out.append("")
    write_section(docs, "relay", out)


def load_policy(results):
    """(server, scenario, n) → (report, seconds `policy set` took before the run,
    milliseconds an in-process compile took for that size)."""
    runs = {}
    for path in glob.glob(os.path.join(results, "*-*-*.json")):
        name = os.path.basename(path)[: -len(".json")]
        server, scenario, n = name.split("-")
        with open(path) as f:
            report = json.load(f)
        set_secs = None
        stamp = os.path.join(results, name + ".policy-set")
        if os.path.exists(stamp):
            started, ended = (float(x) for x in open(stamp).read().split())
            set_secs = ended - started
        compile_ms = None
        compiled = os.path.join(results, name + ".compile")
        if os.path.exists(compiled):
            with open(compiled) as f:
                compile_ms = json.load(f).get("median_ms")
        runs[(server, scenario, int(n))] = (report, set_secs, compile_ms)
    return runs


def policy_metrics(report, set_secs, compile_ms=None):
    change = report.get("policy_change") or {}
    latency = change.get("latency") or {}
    storm_bytes = report["join_storm"].get("bytes_per_node")
    return {
        **metrics(report),
        "storm_kib_per_node": storm_bytes / 1024 if storm_bytes else None,
        "set_s": set_secs,
        "compile_ms": compile_ms,
        "change_cmd_s": change.get("command_secs"),
        "change_all_s": change.get("all_secs"),
        "change_p50_ms": latency.get("median_ms"),
        "change_p99_ms": latency.get("p99_ms"),
        "change_cpu_s": change.get("cpu_secs"),
    }


def policy(results, docs):
    runs = load_policy(results)
    with open(os.path.join(results, "machine.txt")) as f:
        machine = f.read().strip().splitlines()
    out = [
        "## Access policy: headway vs Headscale v0.29.2",
        "",
        "Written by `scripts/bench-policy`. The same load generator and the same policy for both",
        "servers, in database mode. **shared**: 50 users each in a group, 20 tags, per-group and",
        "per-tag rules, `autogroup:self`, an admin group that reaches everything, and a monitoring",
        "port every node opens (so every node still sees every node, each with its own packet",
        "filter), plus SSH rules; nodes register with the 50 users' and 20 tags' keys in turn. The",
        "change adds a port every node opens, so every node's filter changes. **partitioned**: each",
        "user's nodes see only each other (50 cohorts); the change opens a port inside each.",
        "",
        "- `policy set`: the CLI round trip that parses the policy, runs its tests (if any) and",
        "  stores it (on the empty server, then during the run for the change);",
        "- compile ms: headway applying the policy to a tailnet of that size and shape, in process",
        "  (`headway bench-compile`, median of 5), as the server does on every policy change and",
        "  every change to who is in the tailnet; Headscale has no separate measure;",
        "- change → all: from the start of the change until every node had its new packet filter;",
        "- map KiB/node: compressed map bytes a node received by the end of the join storm.",
        "",
    ]
    out += [f"- {line}" for line in machine]
    out.append("")
    for scenario in ["shared", "partitioned"]:
        sizes = sorted({n for (_, s, n) in runs if s == scenario})
        if not sizes:
            continue
        out += [f"### {scenario}", ""]
        out.append("| nodes | server | status | convergence s | fan-out p99 ms | RSS/node KiB | map KiB/node | policy set s | compile ms | change: command s | change → all s | change p99 ms | change CPU s |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for n in sizes:
            for server in SERVERS:
                if (server, scenario, n) not in runs:
                    continue
                report, set_secs, compile_ms = runs[(server, scenario, n)]
                m = policy_metrics(report, set_secs, compile_ms)
                out.append(
                    f"| {n} | {server} | {status(report)} | {fmt(m['convergence_s'])} | "
                    f"{fmt(m['fanout_p99_ms'])} | {fmt(m['rss_per_node_kib'])} | "
                    f"{fmt(m['storm_kib_per_node'])} | {fmt(m['set_s'], 2)} | {fmt(m['compile_ms'])} | {fmt(m['change_cmd_s'], 2)} | "
                    f"{fmt(m['change_all_s'], 2)} | {fmt(m['change_p99_ms'])} | {fmt(m['change_cpu_s'], 2)} |"
                )
        out.append("")
        both = [n for n in sizes if ("headway", scenario, n) in runs and ("headscale", scenario, n) in runs]
        for n in both:
            hw = policy_metrics(*runs[("headway", scenario, n)])
            hs = policy_metrics(*runs[("headscale", scenario, n)])
            out.append(
                f"At {n} nodes, Headscale / headway: convergence {ratio(hs['convergence_s'], hw['convergence_s'])}, "
                f"fan-out p99 {ratio(hs['fanout_p99_ms'], hw['fanout_p99_ms'])}, "
                f"RSS per node {ratio(hs['rss_per_node_kib'], hw['rss_per_node_kib'])}, "
                f"policy set {ratio(hs['set_s'], hw['set_s'])}, "
                f"change → all {ratio(hs['change_all_s'], hw['change_all_s'])}."
            )
            out.append("")
    notes = []
    for (server, scenario, n), (report, *_) in sorted(runs.items()):
        for note in report.get("notes", [])[:3]:
            notes.append(f"{server}, {scenario}, {n}: {note}")
    if notes:
        out += ["Notes from the runs:", ""] + [f"- {note}" for note in notes] + [""]
    write_section(docs, "policy", out)


def main():
    args = sys.argv[1:]
    if args and args[0] == "--relay":
        relay(args[1], args[2])
    elif args and args[0] == "--policy":
        policy(args[1], args[2])
    else:
        control_plane(args[0], args[1])


if __name__ == "__main__":
    main()
