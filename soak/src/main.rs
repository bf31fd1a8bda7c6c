//! `gitmind-soak`: the soak test of docs/architecture.md, "Measured, not
//! assumed".
//!
//! It starts a fresh server from the same build, imports the real graph
//! (Debian's package index, or a connected slice of it), and runs mixed
//! load for a set time: writers change labels, text, layout, edges and
//! nodes on a fixed schedule, readers watch, everyone moves a cursor, half
//! on each codec. Meanwhile it injects faults: client connections cut at
//! random, slow readers that stop reading for seconds, and server restarts
//! (alternately SIGKILL and SIGTERM). At the end it checks that every
//! client's replica equals the server's graph, that the server's graph
//! equals git's, and that every change the server confirmed is in the git
//! history where its outcome said; and it fails on any of that, or when
//! the p99 of write -> delivery or write -> confirmation, outside the
//! faults, passes `--max-p99-ms`.
//!
//! With `--cluster N` it runs N servers as one service on one
//! `nats-server` (docs/scale-out.md): clients spread over the nodes, cuts
//! and stalls on every node, each restart stops the graph's owner, which
//! comes back once another node has taken the graph over; at the end every
//! node's graph must equal git's too.
//!
//! - `dataset`: the starting graph, all of it or a connected slice.
//! - `load`: the writers, readers and faults.
//! - `check`: the end-of-run comparison of replicas, server and git.
//! - `nodes`: the servers, one or a cluster.

mod check;
mod dataset;
mod load;
mod nodes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use gitmind_bench::machine::Machine;
use gitmind_bench::report::{Markdown, Percentiles};
use gitmind_bench::server::Stop;
use gitmind_client::import::Importer;
use gitmind_client::{Client, ClientConfig, Codec, State};
use gitmind_schema::model::Node;
use gitmind_testkit::{Proxy, Rng};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::load::{FaultLog, ReaderReport, Shared, Who, WriterReport};
use crate::nodes::Nodes;

/// The graph the soak runs on.
const GRAPH: &str = "soak";
/// Time allowed for clients to settle, and for all to resume after a restart.
const SETTLE: Duration = Duration::from_secs(60);

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Soak test: the real graph, mixed load with faults, and a check that nothing was lost"
)]
struct Cli {
    /// Seconds of load.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// The dataset (JSON Lines, `.zst` for zstd).
    #[arg(long, default_value_os_t = gitmind_testkit::default_dataset())]
    dataset: PathBuf,
    /// Nodes of the dataset to start from, a connected slice (0: all of it).
    #[arg(long, default_value_t = 2_000)]
    nodes: usize,
    /// Clients that change the graph.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Clients that only watch it (and move a cursor).
    #[arg(long, default_value_t = 10)]
    readers: usize,
    /// How many of the readers are slow: now and then they stop reading.
    #[arg(long, default_value_t = 2)]
    slow: usize,
    /// Changes per second per writer.
    #[arg(long, default_value_t = 25.0)]
    rate: f64,
    /// Mean seconds between cuts of a random client connection (0: none).
    #[arg(long, default_value_t = 2.0)]
    cut_every: f64,
    /// Mean seconds between stalls of a slow reader (0: none).
    #[arg(long, default_value_t = 4.0)]
    stall_every: f64,
    /// Server restarts, evenly spread, alternately SIGKILL and SIGTERM
    /// (in a cluster, of the graph's owner).
    #[arg(long, default_value_t = 1)]
    restarts: u32,
    /// Run N servers as one service on a `nats-server` started here
    /// (0: one server alone).
    #[arg(long, default_value_t = 0)]
    cluster: usize,
    /// Fail when the p99 of write -> delivery or write -> confirmation
    /// outside faults passes this.
    #[arg(long, default_value_t = 100.0)]
    max_p99_ms: f64,
    /// Seed of every random choice (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Also write the JSON result here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write `NAME.md` and `NAME.json` into `perf-reports/`.
    #[arg(long)]
    report: Option<String>,
    /// Skip `verify` of the repository (it diffs the trees of every commit,
    /// about 10 ms a commit on the 2,000-node slice: long on the whole
    /// graph); the other git checks still run.
    #[arg(long)]
    skip_verify: bool,
    /// Extra arguments for the server (e.g. `--server-args=--no-fsync`).
    #[arg(long, allow_hyphen_values = true)]
    server_args: Vec<String>,
}

#[derive(Serialize)]
struct Restart {
    signal: &'static str,
    /// The server stopped (in a cluster, the graph's owner).
    node: usize,
    /// In a cluster: from the stop until another node owned the graph.
    takeover_ms: Option<u64>,
    /// When the server was stopped, in seconds since the run's start.
    at_s: f64,
    /// From the stop to the server listening again.
    down_ms: u64,
    /// From the stop to every client connected again.
    all_resumed_ms: u64,
}

#[derive(Serialize, Default)]
struct Faults {
    cuts: u64,
    stalls: u64,
    restarts: Vec<Restart>,
    /// Times a client was not connected (each cut, stall timeout, restart).
    client_disconnects: u64,
}

#[derive(Serialize)]
struct Result {
    scenario: &'static str,
    seed: u64,
    /// Servers in the cluster (0: one server alone).
    cluster: usize,
    duration_s: u64,
    start_nodes: usize,
    start_edges: usize,
    writers: usize,
    readers: usize,
    slow_readers: usize,
    rate_per_writer: f64,
    /// Write -> delivery at readers that are not slow, outside faults.
    latency_us: Percentiles,
    /// Write -> delivery a fault touched.
    latency_faulted_us: Percentiles,
    /// Write -> delivery at slow readers.
    latency_slow_readers_us: Percentiles,
    /// Scheduled write -> outcome, outside faults.
    confirm_latency_us: Percentiles,
    /// Scheduled write -> outcome a fault touched.
    confirm_faulted_us: Percentiles,
    sent: u64,
    confirmed: u64,
    resolved: u64,
    rolled_back: std::collections::BTreeMap<String, u64>,
    unresolved: u64,
    skipped: u64,
    faults: Faults,
    /// Syncs after the first, at every client.
    resumes: u64,
    /// Of those, the ones that took the whole graph (not a delta).
    resumes_by_snapshot: u64,
    /// The slowest delivery outside faults, and when it was scheduled
    /// (seconds since the run's start: the import and connects come first).
    slowest_delivery_ms: f64,
    /// When the load began, in seconds since the run's start.
    load_at_s: f64,
    slowest_delivery_at_s: f64,
    final_seq: u64,
    final_nodes: usize,
    final_edges: usize,
    checks: check::Findings,
    max_p99_ms: f64,
    passed: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("gitmind-soak: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn config(url: &str, user: String, codec: Codec) -> ClientConfig {
    ClientConfig {
        user: Some(user),
        codec,
        sync_timeout: SETTLE,
        ..ClientConfig::new(url, GRAPH)
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    anyhow::ensure!(cli.rate > 0.0, "--rate must be above 0");
    anyhow::ensure!(cli.slow <= cli.readers, "--slow cannot be above --readers");
    let seed = cli.seed.unwrap_or_else(rand::random);
    let mut rng = Rng::new(seed);
    let machine = Machine::describe();
    println!("gitmind-soak: seed {seed}; {}", machine.line());

    let started = Instant::now();
    let slice = dataset::read(&cli.dataset, cli.nodes)?;
    let (start_nodes, start_edges) = (slice.nodes.len(), slice.edges.len());
    anyhow::ensure!(start_nodes > 0, "the dataset has no nodes");
    let mut nodes = Nodes::start(cli.cluster, &cli.server_args).await?;
    let data_dir = nodes.data.clone();
    // The import's join makes the first node the graph's owner.
    let direct = format!("ws://{}", nodes.addr(0));

    // The starting graph, and one counter node per writer.
    let shared = Arc::new(Shared {
        start: Instant::now(),
        faults: FaultLog::default(),
        node_ids: slice.nodes.iter().map(|(n, _)| n.id.clone()).collect(),
        edges: slice.edges.iter().map(|(e, _)| e.clone()).collect(),
    });
    let (importer, _events) =
        Client::connect(config(&direct, "soak-import".into(), Codec::Binary)).await?;
    let mut import = Importer::new(importer.clone());
    for (node, size) in slice.nodes {
        import.node(node, size).await?;
    }
    for w in 0..cli.writers {
        let node = Node {
            id: load::counter_id(w),
            kind: Some("concept".into()),
            label: Some(format!("soak writer {w}")),
            ..Node::default()
        };
        import.node(node, 100).await?;
    }
    for (edge, size) in slice.edges {
        import.edge(edge, size).await?;
    }
    import.finish().await?;
    importer.close().await;
    println!(
        "imported {start_nodes} nodes and {start_edges} edges in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The clients: writers, then readers; the last readers are the slow
    // ones. Client i is on node i mod n, through its proxies.
    let mut normal = Vec::new();
    let mut slow = Vec::new();
    for n in 0..nodes.len() {
        normal.push(Proxy::start(nodes.addr(n)).await?);
        slow.push(Proxy::start(nodes.addr(n)).await?);
    }
    let total = cli.writers + cli.readers;
    let mut clients = Vec::with_capacity(total);
    let mut drains = JoinSet::new();
    let stop_events = CancellationToken::new();
    for i in 0..total {
        let is_slow = i >= total - cli.slow;
        let node = i % nodes.len();
        let (user, url) = match i {
            i if i < cli.writers => (format!("soak-w{i}"), normal[node].url()),
            i if is_slow => (format!("soak-slow{}", i - cli.writers), slow[node].url()),
            i => (format!("soak-r{}", i - cli.writers), normal[node].url()),
        };
        let codec = if i % 2 == 0 {
            Codec::Binary
        } else {
            Codec::Json
        };
        let (client, events) = Client::connect(config(&url, user, codec))
            .await
            .with_context(|| format!("connecting client {i}"))?;
        let report = load::drain(i, events, shared.clone(), is_slow, stop_events.clone());
        drains.spawn(async move { (i, report.await) });
        clients.push(client);
    }
    let mut watchers = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        watchers.spawn(load::watch(
            i,
            client.clone(),
            shared.clone(),
            rng.next_u64(),
            stop_events.clone(),
        ));
    }
    let stop_load = CancellationToken::new();
    let mut writers = JoinSet::new();
    for (i, client) in clients.iter().take(cli.writers).enumerate() {
        writers.spawn(load::writer(
            i,
            client.clone(),
            shared.clone(),
            cli.rate,
            rng.next_u64(),
            stop_load.clone(),
        ));
    }
    let load_at_s = shared.start.elapsed().as_secs_f64();
    println!(
        "{} writers at {}/s, {} readers ({} slow); {} s of load with faults",
        cli.writers, cli.rate, cli.readers, cli.slow, cli.duration
    );

    let mut faults = inject(
        &cli, &mut rng, &mut nodes, &normal, &slow, &clients, &shared,
    )
    .await?;
    stop_load.cancel();
    let mut writer_reports: Vec<WriterReport> = Vec::new();
    while let Some(r) = writers.join_next().await {
        writer_reports.push(r?);
    }
    writer_reports.sort_by_key(|w| w.index);
    for proxy in normal.iter().chain(&slow) {
        proxy.unstall_all();
    }

    // The checks, with every outcome in.
    let snapshot = check::snapshot(nodes.addr(0), GRAPH).await?;
    let mut findings = check::Findings::default();
    check::replicas(&clients, &snapshot, SETTLE, &mut findings).await;
    for n in 1..nodes.len() {
        check::node(n, nodes.addr(n), GRAPH, &snapshot, SETTLE, &mut findings).await;
    }
    stop_events.cancel();
    let mut readers: Vec<(usize, ReaderReport)> = Vec::new();
    while let Some(r) = drains.join_next().await {
        readers.push(r?);
    }
    while let Some(lost) = watchers.join_next().await {
        faults.client_disconnects += lost?;
    }
    for client in clients {
        client.close().await;
    }
    drop((normal, slow));
    nodes.stop().await;
    check::git(
        &data_dir,
        GRAPH,
        &snapshot,
        &writer_reports,
        !cli.skip_verify,
        &mut findings,
    )?;

    let merge = |hs: &mut dyn Iterator<Item = &Histogram<u64>>| {
        let mut all = load::histogram();
        for h in hs {
            let _ = all.add(h);
        }
        Percentiles::of(&all)
    };
    // The readers that read at full speed (writers drain their events too).
    let steady = || {
        readers
            .iter()
            .filter(|(i, r)| *i >= cli.writers && !r.slow)
            .map(|(_, r)| r)
    };
    let slowest = steady().map(|r| r.slowest).max().unwrap_or_default();
    let mut rolled_back = std::collections::BTreeMap::new();
    for (reason, n) in writer_reports.iter().flat_map(|w| &w.rolled_back) {
        *rolled_back.entry(format!("{reason:?}")).or_insert(0) += n;
    }
    let sum = |f: fn(&WriterReport) -> u64| writer_reports.iter().map(f).sum::<u64>();
    let mut result = Result {
        scenario: if cli.cluster > 0 {
            "soak-cluster"
        } else {
            "soak"
        },
        seed,
        cluster: cli.cluster,
        duration_s: cli.duration,
        start_nodes,
        start_edges,
        writers: cli.writers,
        readers: cli.readers,
        slow_readers: cli.slow,
        rate_per_writer: cli.rate,
        latency_us: merge(&mut steady().map(|r| &r.delivery)),
        latency_faulted_us: merge(&mut steady().map(|r| &r.delivery_faulted)),
        latency_slow_readers_us: merge(
            &mut readers
                .iter()
                .filter(|(_, r)| r.slow)
                .flat_map(|(_, r)| [&r.delivery, &r.delivery_faulted]),
        ),
        confirm_latency_us: merge(&mut writer_reports.iter().map(|w| &w.confirm)),
        confirm_faulted_us: merge(&mut writer_reports.iter().map(|w| &w.confirm_faulted)),
        sent: sum(|w| w.sent),
        confirmed: sum(|w| w.confirmed),
        resolved: sum(|w| w.resolved),
        rolled_back,
        unresolved: sum(|w| w.unresolved),
        skipped: sum(|w| w.skipped),
        faults,
        resumes: readers.iter().map(|(_, r)| r.resyncs).sum(),
        resumes_by_snapshot: readers.iter().map(|(_, r)| r.snapshots).sum(),
        slowest_delivery_ms: slowest.0 as f64 / 1e3,
        load_at_s,
        slowest_delivery_at_s: slowest.1 as f64 / 1e6,
        final_seq: snapshot.seq,
        final_nodes: snapshot.nodes.len(),
        final_edges: snapshot.edges.len(),
        checks: findings,
        max_p99_ms: cli.max_p99_ms,
        passed: false,
    };
    let limit = (cli.max_p99_ms * 1e3) as u64;
    let mut verdict = Vec::new();
    if result.checks.lost > 0 {
        verdict.push(format!("{} confirmed changes lost", result.checks.lost));
    }
    if result.checks.diverged > 0 {
        verdict.push(format!("{} clients diverged", result.checks.diverged));
    }
    if !result.checks.problems.is_empty() {
        verdict.push(format!("{} problems found", result.checks.problems.len()));
    }
    if result.unresolved > 0 {
        verdict.push(format!("{} changes got no outcome", result.unresolved));
    }
    if result.latency_us.count == 0 || result.confirm_latency_us.count == 0 {
        verdict.push("no latency measured outside faults".into());
    }
    if result.latency_us.p99 > limit {
        verdict.push(format!(
            "delivery p99 {:.1} ms over {} ms",
            result.latency_us.p99 as f64 / 1e3,
            cli.max_p99_ms
        ));
    }
    if result.confirm_latency_us.p99 > limit {
        verdict.push(format!(
            "confirmation p99 {:.1} ms over {} ms",
            result.confirm_latency_us.p99 as f64 / 1e3,
            cli.max_p99_ms
        ));
    }
    result.passed = verdict.is_empty();

    let text = summary(&result, &verdict);
    print!("{text}");
    if let Some(name) = &cli.report {
        let cluster = match cli.cluster {
            0 => String::new(),
            n => format!(", a cluster of {n} servers"),
        };
        let mut md = Markdown::new(
            &format!("Soak: {} s, {} nodes{cluster}", cli.duration, start_nodes),
            &machine,
        );
        md.push(&text);
        md.write(
            &gitmind_bench::report::reports_dir(),
            name,
            &result,
            cli.json.as_deref(),
        )?;
    } else if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)?;
    }
    Ok(result.passed)
}

/// Injects faults until the run's time is up: cuts and stalls at random
/// (exponential gaps) on a random node's proxies, restarts evenly spread.
async fn inject(
    cli: &Cli,
    rng: &mut Rng,
    nodes: &mut Nodes,
    normal: &[Proxy],
    slow: &[Proxy],
    clients: &[Client],
    shared: &Shared,
) -> anyhow::Result<Faults> {
    // One server alone draws nothing for it (a seed replays as before).
    let count = nodes.len();
    let pick = |rng: &mut Rng| match count {
        1 => 0,
        n => rng.below(n),
    };
    let start = Instant::now();
    let end = start + Duration::from_secs(cli.duration);
    let gap = |rng: &mut Rng, mean: f64| {
        if mean > 0.0 {
            Duration::from_secs_f64(-mean * (1.0 - rng.unit()).ln())
        } else {
            Duration::from_secs(u64::from(u32::MAX))
        }
    };
    let restarts: Vec<Instant> = (1..=cli.restarts)
        .map(|k| start + Duration::from_secs(cli.duration) * k / (cli.restarts + 1))
        .collect();
    let mut next_cut = start + gap(rng, cli.cut_every);
    let stall_every = if cli.slow > 0 { cli.stall_every } else { 0.0 };
    let mut next_stall = start + gap(rng, stall_every);
    let mut faults = Faults::default();
    loop {
        let next_restart = restarts.get(faults.restarts.len()).copied();
        let wake = [Some(end), Some(next_cut), Some(next_stall), next_restart]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        if next_restart.is_some_and(|t| now >= t) {
            let (how, signal) = if faults.restarts.len() % 2 == 0 {
                (Stop::Kill, "SIGKILL")
            } else {
                (Stop::Graceful, "SIGTERM")
            };
            let fault = shared.faults.open(Who::All);
            let stopped = Instant::now();
            let restarted = nodes.restart(how).await?;
            let down = stopped.elapsed();
            // In a cluster the failover lasts until every client is back:
            // the nodes load the graph again from git meanwhile
            // (docs/scale-out.md, "Failover").
            let fault = match restarted.takeover {
                Some(_) => Some(fault),
                None => {
                    shared.faults.close(fault);
                    None
                }
            };
            let deadline = Instant::now() + SETTLE;
            while clients
                .iter()
                .any(|c| !matches!(*c.state().borrow(), State::Connected { .. }))
            {
                if Instant::now() >= deadline {
                    let behind: Vec<String> = clients
                        .iter()
                        .filter(|c| !matches!(*c.state().borrow(), State::Connected { .. }))
                        .map(|c| format!("{}: {:?}", c.identity().0, *c.state().borrow()))
                        .collect();
                    anyhow::bail!(
                        "clients did not all resume within {SETTLE:?} of a restart: {}",
                        behind.join("; ")
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let resumed = stopped.elapsed();
            if let Some(fault) = fault {
                shared.faults.close(fault);
            }
            faults.restarts.push(Restart {
                signal,
                node: restarted.node,
                takeover_ms: restarted.takeover.map(|t| t.as_millis() as u64),
                at_s: stopped.duration_since(shared.start).as_secs_f64(),
                down_ms: down.as_millis() as u64,
                all_resumed_ms: resumed.as_millis() as u64,
            });
            println!(
                "restart {} ({signal}): server down {} ms, all clients resumed after {} ms",
                faults.restarts.len(),
                down.as_millis(),
                resumed.as_millis()
            );
        }
        if now >= next_cut {
            next_cut = now + gap(rng, cli.cut_every);
            let proxies = if rng.below(clients.len()) < cli.slow {
                slow
            } else {
                normal
            };
            faults.cuts += u64::from(proxies[pick(rng)].cut_one(rng));
        }
        if now >= next_stall {
            next_stall = now + gap(rng, stall_every);
            let time = Duration::from_millis(500 + rng.below(3_500) as u64);
            faults.stalls += u64::from(slow[pick(rng)].stall_one(rng, time));
        }
    }
    Ok(faults)
}

fn summary(r: &Result, verdict: &[String]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Result: {}\n",
        if r.passed { "passed" } else { "FAILED" }
    );
    for v in verdict {
        let _ = writeln!(s, "- **{v}**");
    }
    for p in &r.checks.problems {
        let _ = writeln!(s, "- problem: {p}");
    }
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| seed | {} |", r.seed);
    let _ = writeln!(
        s,
        "| starting graph | {} nodes, {} edges (Debian) |",
        r.start_nodes, r.start_edges
    );
    let _ = writeln!(
        s,
        "| clients | {} writers at {}/s each, {} readers ({} slow), codecs alternate |",
        r.writers, r.rate_per_writer, r.readers, r.slow_readers
    );
    let _ = writeln!(s, "| changes | {} sent: {} confirmed, {} merged, {} rolled back {:?}, {} without outcome, {} skipped |", r.sent, r.confirmed, r.resolved, r.rolled_back.values().sum::<u64>(), r.rolled_back, r.unresolved, r.skipped);
    let _ = writeln!(
        s,
        "| faults | {} cuts, {} stalls, {} restarts, {} client disconnects in all; {} resumes, {} of them by a whole snapshot |",
        r.faults.cuts,
        r.faults.stalls,
        r.faults.restarts.len(),
        r.faults.client_disconnects,
        r.resumes,
        r.resumes_by_snapshot
    );
    for (i, x) in r.faults.restarts.iter().enumerate() {
        let takeover = match x.takeover_ms {
            Some(ms) => format!(
                "node n{}, another node owned the graph after {ms} ms; ",
                x.node
            ),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "| restart {} ({}) | at {:.1} s: {takeover}down {} ms, every client resumed after {} ms |",
            i + 1,
            x.signal,
            x.at_s,
            x.down_ms,
            x.all_resumed_ms
        );
    }
    let latency_row = |s: &mut String, what: &str, p: &Percentiles| {
        let _ = writeln!(s, "| {what} | {} ({} samples) |", p.ms(), p.count);
    };
    latency_row(&mut s, "write -> delivery", &r.latency_us);
    let _ = writeln!(
        s,
        "| slowest delivery outside faults | {:.1} ms, scheduled {:.1} s into the run (the load began at {:.1} s) |",
        r.slowest_delivery_ms, r.slowest_delivery_at_s, r.load_at_s
    );
    for (what, p) in [
        ("write -> confirmation", &r.confirm_latency_us),
        ("delivery through a fault", &r.latency_faulted_us),
        ("confirmation through a fault", &r.confirm_faulted_us),
        ("delivery at slow readers", &r.latency_slow_readers_us),
    ] {
        latency_row(&mut s, what, p);
    }
    let _ = writeln!(
        s,
        "| final graph | seq {}, {} nodes, {} edges, {} commits |",
        r.final_seq, r.final_nodes, r.final_edges, r.checks.commits
    );
    let _ = writeln!(
        s,
        "| checks | replicas == server{}: {} diverged; server == git; confirmed in git: {} lost |",
        if r.cluster > 0 { " (every node)" } else { "" },
        r.checks.diverged,
        r.checks.lost
    );
    s
}
