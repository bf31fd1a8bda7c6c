//! `viewports`: S sessions, each subscribed to a bbox of its own over the
//! Debian graph laid out in the plane, while writers move nodes at R
//! updates/s (issue #17). Measures write -> delivery (a `node.update` or a
//! `region.enter`), deliveries per second, the region cuts the server
//! encoded per commit group, and counts every delivery a session should
//! not have had (a node outside its box, or one it does not hold): that
//! count must be zero.
//!
//! The layout: node i of the dataset at (10 * (i mod C), 10 * (i div C)),
//! C the square root of the node count, so ~100 nodes per 100 x 100 box.
//! A move shifts a node by up to `--jump` in x and y, staying in the plane,
//! and writes the scheduled time into its label (`t{µs}`) for the latency.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use gitmind_bench::conn::{self, Conn};
use gitmind_bench::metrics;
use gitmind_bench::procstat::{self, CpuMeter};
use gitmind_bench::report::Percentiles;
use gitmind_bench::server::ServerUnderTest;
use gitmind_client::dataset::Dataset;
use gitmind_client::import::Importer;
use gitmind_client::{Client, ClientConfig};
use gitmind_schema::message::{NodeUpdate, RegionFilter, RegionSubscribe, RegionUnsubscribe};
use gitmind_schema::model::NodeSet;
use gitmind_schema::{binary, json, Body, Envelope, Limits};
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::clients::{codec_of, graph_path, read_sync, send_heartbeat, CLIENT_HEARTBEAT};
use crate::fleet::{dedicated_runtime, histogram};
use crate::result::{LoadResult, ServerStats};
use crate::Args;

/// The scenario's options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Sessions, each with a bbox of its own.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Moves per second over all writers.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Writer connections.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// The side of each session's box.
    #[arg(long, default_value_t = 100.0)]
    pub side: f64,
    /// The farthest a move shifts a node, in x and in y.
    #[arg(long, default_value_t = 30.0)]
    pub jump: f64,
    /// The dataset.
    #[arg(long, default_value_os_t = gitmind_testkit::default_dataset())]
    pub dataset: PathBuf,
    /// Import only the nodes (no edges): a quicker setup.
    #[arg(long)]
    pub no_edges: bool,
}

/// Node spacing in the layout.
const SPACING: f64 = 10.0;

type BBox = [f64; 4];

fn inside(b: &BBox, (x, y): (f64, f64)) -> bool {
    x >= b[0] && x <= b[2] && y >= b[1] && y <= b[3]
}

/// What the sessions saw, shared by their tasks.
#[derive(Default)]
struct Seen {
    /// Updates and enters and leaves received.
    received: AtomicU64,
    /// Deliveries a session should not have had.
    wrong: AtomicU64,
    enters: AtomicU64,
    leaves: AtomicU64,
    updates: AtomicU64,
    /// Sessions whose connection ended.
    disconnected: AtomicU64,
}

pub async fn run(
    args: &Args,
    server: &ServerUnderTest,
    o: &Options,
) -> anyhow::Result<(&'static str, LoadResult, String)> {
    let addr = server.addr;
    let graph = format!("viewports-{}", rand::random::<u32>());
    // 1. The graph, laid out.
    let started = Instant::now();
    let data = Dataset::read(&o.dataset).context("reading the dataset")?;
    let columns = (data.nodes.len() as f64).sqrt().ceil() as usize;
    let side_of_plane = columns as f64 * SPACING;
    let mut position: Vec<(f64, f64)> = Vec::with_capacity(data.nodes.len());
    let ids: Vec<String> = data.nodes.iter().map(|n| n.id.clone()).collect();
    let mut config = ClientConfig::new(format!("ws://{addr}"), graph.clone());
    config.user = Some("importer".into());
    let (importer, _events) = Client::connect(config).await?;
    let mut import = Importer::new(importer.clone());
    for (i, mut node) in data.nodes.into_iter().enumerate() {
        let at = (
            (i % columns) as f64 * SPACING,
            (i / columns) as f64 * SPACING,
        );
        position.push(at);
        node.x = Some(at.0);
        node.y = Some(at.1);
        let size = serde_json::to_vec(&node).map_or(256, |v| v.len());
        import.node(node, size).await?;
    }
    let edges = if o.no_edges { 0 } else { data.edges.len() };
    for edge in data.edges.into_iter().take(edges) {
        let size = serde_json::to_vec(&edge).map_or(128, |v| v.len());
        import.edge(edge, size).await?;
    }
    import.finish().await?;
    let (epoch, seq) = {
        let replica = importer.replica();
        (
            replica.epoch().unwrap_or_default().to_owned(),
            replica.server_seq(),
        )
    };
    importer.close().await;
    let import_secs = started.elapsed().as_secs_f64();
    println!(
        "imported {} nodes and {edges} edges in {import_secs:.1} s",
        ids.len()
    );
    let resume = format!("&since={seq}&epoch={epoch}");

    // 2. The sessions, each with its box; "all" unsubscribed.
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let boxes: Arc<Vec<BBox>> = Arc::new(
        (0..o.sessions)
            .map(|_| {
                let x = rng.random_range(0.0..(side_of_plane - o.side).max(1.0));
                let y = rng.random_range(0.0..(side_of_plane - o.side).max(1.0));
                [x, y, x + o.side, y + o.side]
            })
            .collect(),
    );
    let start = Instant::now();
    let delivery = histogram();
    let seen = Arc::new(Seen::default());
    let limit = Arc::new(Semaphore::new(64));
    let mut joins = Vec::new();
    let mut synced_nodes = 0u64;
    for (i, bbox) in boxes.iter().copied().enumerate() {
        let permit = limit.clone().acquire_owned().await?;
        let codec = codec_of(args, i);
        let path = graph_path(args, &graph, &format!("view{i}"), true) + &resume;
        let (delivery, seen) = (delivery.clone(), seen.clone());
        joins.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr, Some(conn::source_addr(i)), &path, codec).await?;
            read_sync(&mut conn).await?;
            let subscribe = Envelope::new(
                "view",
                Body::RegionSubscribe(RegionSubscribe {
                    region_id: "view".into(),
                    filter: RegionFilter {
                        bbox: Some(bbox),
                        ..RegionFilter::default()
                    },
                }),
            );
            conn.send(&subscribe).await?;
            let mut held: HashSet<String>;
            'sync: loop {
                let Some(batch) = conn.recv().await? else {
                    anyhow::bail!("closed before region.sync")
                };
                for (k, e) in batch.iter().enumerate() {
                    if let Body::RegionSync(s) = &e.body {
                        held = s.nodes.iter().map(|n| n.id.clone()).collect();
                        conn.unread(&batch[k + 1..]);
                        break 'sync;
                    }
                }
            }
            let all = Envelope::new(
                "no-all",
                Body::RegionUnsubscribe(RegionUnsubscribe {
                    region_id: "all".into(),
                }),
            );
            conn.send(&all).await?;
            drop(permit);
            let count = held.len() as u64;
            tokio::spawn(async move {
                let mut local = Vec::with_capacity(256);
                let mut last_beat = Instant::now();
                while let Ok(Some(batch)) = conn.recv().await {
                    let now = start.elapsed().as_micros() as u64;
                    if last_beat.elapsed() >= CLIENT_HEARTBEAT
                        || batch
                            .iter()
                            .any(|e| matches!(e.body, Body::SystemHeartbeat(_)))
                    {
                        let _ = send_heartbeat(&mut conn).await;
                        last_beat = Instant::now();
                    }
                    for e in batch.iter() {
                        let stamp = |label: Option<&String>| {
                            label
                                .and_then(|l| l.strip_prefix('t'))
                                .and_then(|t| t.parse::<u64>().ok())
                        };
                        match &e.body {
                            Body::NodeUpdate(u) => {
                                seen.updates.fetch_add(1, Relaxed);
                                seen.received.fetch_add(1, Relaxed);
                                let set = u.set.as_ref();
                                let at = set.and_then(|s| s.x.zip(s.y));
                                if !held.contains(&u.id) || !at.is_some_and(|p| inside(&bbox, p)) {
                                    seen.wrong.fetch_add(1, Relaxed);
                                }
                                if let Some(t) = stamp(set.and_then(|s| s.label.as_ref())) {
                                    local.push(now.saturating_sub(t).max(1));
                                }
                            }
                            Body::RegionEnter(m) => {
                                seen.enters.fetch_add(1, Relaxed);
                                seen.received.fetch_add(1, Relaxed);
                                let at = m.node.x.zip(m.node.y);
                                if !at.is_some_and(|p| inside(&bbox, p))
                                    || !held.insert(m.node.id.clone())
                                {
                                    seen.wrong.fetch_add(1, Relaxed);
                                }
                                if let Some(t) = stamp(m.node.label.as_ref()) {
                                    local.push(now.saturating_sub(t).max(1));
                                }
                            }
                            // The rest of a region.sync sent in parts.
                            Body::RegionSync(s) => {
                                held.extend(s.nodes.iter().map(|n| n.id.clone()));
                            }
                            Body::RegionLeave(m) => {
                                seen.leaves.fetch_add(1, Relaxed);
                                seen.received.fetch_add(1, Relaxed);
                                if !held.remove(&m.id) {
                                    seen.wrong.fetch_add(1, Relaxed);
                                }
                            }
                            Body::NodeCreate(_)
                            | Body::NodeDelete(_)
                            | Body::BatchUpdate(_)
                            | Body::EdgeCreate(_)
                            | Body::EdgeUpdate(_)
                            | Body::EdgeDelete(_) => {
                                // Nothing else changes while the scenario runs.
                                seen.wrong.fetch_add(1, Relaxed);
                            }
                            _ => {}
                        }
                    }
                    if !local.is_empty() {
                        if let Ok(mut h) = delivery.lock() {
                            for v in local.drain(..) {
                                let _ = h.record(v);
                            }
                        }
                    }
                }
                seen.disconnected.fetch_add(1, Relaxed);
            });
            anyhow::Ok(count)
        }));
    }
    for join in joins {
        synced_nodes += join.await??;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 3. The writers: writer w moves the nodes i with i mod W == w, so
    // each node's moves are ordered by one connection and the writer knows
    // where each of its nodes is. Every move's expected deliveries: the
    // sessions whose box holds its old or its new place.
    let writer_runtime = dedicated_runtime("viewport-writers")?;
    let sent = Arc::new(AtomicU64::new(0));
    let confirm = histogram();
    let expected = Arc::new(AtomicU64::new(0));
    let rolled_back = Arc::new(AtomicU64::new(0));
    let before = metrics::scrape(addr).await.unwrap_or_default();
    let cpu = CpuMeter::start(server.pid);
    let duration = Duration::from_secs(args.duration);
    let per_writer = o.rate / o.writers.max(1) as f64;
    let period = Duration::from_secs_f64(1.0 / per_writer);
    let position = Arc::new(position);
    let ids = Arc::new(ids);
    let began = Instant::now();
    let mut handles = Vec::new();
    for w in 0..o.writers {
        let i = o.sessions + w;
        let codec = codec_of(args, i);
        let path = graph_path(args, &graph, &format!("mover{w}"), false) + &resume;
        let (sent, expected, rolled_back, boxes) = (
            sent.clone(),
            expected.clone(),
            rolled_back.clone(),
            boxes.clone(),
        );
        let (position, ids, confirm) = (position.clone(), ids.clone(), confirm.clone());
        let (writers, jump, plane) = (o.writers, o.jump, side_of_plane);
        handles.push(writer_runtime.spawn(async move {
            let mut conn = Conn::connect(addr, Some(conn::source_addr(i)), &path, codec).await?;
            read_sync(&mut conn).await?;
            let all = Envelope::new(
                "no-all",
                Body::RegionUnsubscribe(RegionUnsubscribe {
                    region_id: "all".into(),
                }),
            );
            conn.send(&all).await?;
            let (mut sink, mut stream) = conn.ws.split();
            let base = Arc::new(AtomicU64::new(seq));
            let base_seen = base.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    let decoded = match message {
                        Message::Text(t) => json::decode(t.as_str(), &Limits::default()),
                        Message::Binary(b) => binary::decode(&b, &Limits::default()),
                        _ => continue,
                    };
                    for e in decoded.into_iter().flatten().flatten() {
                        if let Some(s) = e.seq {
                            base_seen.fetch_max(s, Relaxed);
                        }
                        // Mutation ids are "u-{scheduled µs}".
                        let settled = match &e.body {
                            Body::UpdateConfirmed(c) => Some(&c.reference),
                            Body::UpdateConflictResolved(c) => Some(&c.reference),
                            _ => None,
                        };
                        if let Some(t) = settled
                            .and_then(|r| r.strip_prefix("u-"))
                            .and_then(|t| t.parse::<u64>().ok())
                        {
                            let now = start.elapsed().as_micros() as u64;
                            if let Ok(mut h) = confirm.lock() {
                                let _ = h.record(now.saturating_sub(t).max(1));
                            }
                        }
                        if matches!(e.body, Body::UpdateRollback(_)) {
                            rolled_back.fetch_add(1, Relaxed);
                        }
                    }
                }
            });
            let mut mine: HashMap<usize, (f64, f64)> = (w..ids.len())
                .step_by(writers)
                .map(|k| (k, position[k]))
                .collect();
            let keys: Vec<usize> = mine.keys().copied().collect();
            let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + w as u64);
            let first =
                tokio::time::Instant::from_std(began) + period.mul_f64(w as f64 / writers as f64);
            let mut k = 0u32;
            loop {
                let scheduled = first + period * k;
                if scheduled.duration_since(tokio::time::Instant::from_std(began)) >= duration {
                    break;
                }
                tokio::time::sleep_until(scheduled).await;
                let at = scheduled.into_std().duration_since(start).as_micros() as u64;
                let node = keys[rng.random_range(0..keys.len())];
                let old = mine[&node];
                let new = (
                    (old.0 + rng.random_range(-jump..=jump)).clamp(0.0, plane),
                    (old.1 + rng.random_range(-jump..=jump)).clamp(0.0, plane),
                );
                mine.insert(node, new);
                let hits = boxes
                    .iter()
                    .filter(|b| inside(b, old) || inside(b, new))
                    .count();
                expected.fetch_add(hits as u64, Relaxed);
                let update = Envelope::new(
                    format!("u-{at}"),
                    Body::NodeUpdate(NodeUpdate {
                        base_seq: Some(base.load(Relaxed)),
                        id: ids[node].clone(),
                        set: Some(NodeSet {
                            x: Some(new.0),
                            y: Some(new.1),
                            label: Some(format!("t{at}")),
                            ..NodeSet::default()
                        }),
                        ..NodeUpdate::default()
                    }),
                );
                if sink.send(conn::message_of(codec, &update)?).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Relaxed);
                k += 1;
            }
            // Keep the connection until the deliveries drained.
            tokio::time::sleep(Duration::from_secs(6)).await;
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(duration).await;
    // Drain: until every expected delivery came or nothing moved for 5 s.
    let mut last = 0;
    let mut still = Instant::now();
    while seen.received.load(Relaxed) < expected.load(Relaxed)
        && still.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = seen.received.load(Relaxed);
        if now != last {
            last = now;
            still = Instant::now();
        }
    }
    let cpu_percent = cpu.percent();
    let after = metrics::scrape(addr).await.unwrap_or_default();
    for h in handles {
        h.await??;
    }
    let counter = |samples: &[(String, f64)], name: &str| {
        samples
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    let delta = |name: &str| counter(&after, name) - counter(&before, name);
    let groups = delta("gitmind_region_groups_total");
    let cuts = delta("gitmind_region_cuts_encoded_total");
    let changes = delta("gitmind_changes_committed_total");
    let rss = procstat::rss_bytes(server.pid).unwrap_or(0);
    let latency = delivery
        .lock()
        .map(|h| Percentiles::of(&h))
        .unwrap_or_default();
    let confirmed = confirm
        .lock()
        .map(|h| Percentiles::of(&h))
        .unwrap_or_default();
    let elapsed = began.elapsed().as_secs_f64();
    let (sent, expected, received, wrong) = (
        sent.load(Relaxed),
        expected.load(Relaxed),
        seen.received.load(Relaxed),
        seen.wrong.load(Relaxed),
    );
    let mut result = LoadResult {
        scenario: "viewports".into(),
        latency_us: latency,
        confirm_latency_us: confirmed,
        expected,
        received,
        lost: expected.saturating_sub(received),
        duplicates: received.saturating_sub(expected),
        deliveries_per_sec: received as f64 / args.duration.max(1) as f64,
        updates_per_sec: sent as f64 / args.duration.max(1) as f64,
        server: ServerStats {
            cpu_percent,
            rss_bytes: rss,
            rss_per_connection_bytes: rss as f64 / (o.sessions + o.writers) as f64,
        },
        ..LoadResult::default()
    };
    let d = &mut result.details;
    d.insert("sessions".into(), o.sessions.into());
    d.insert("writers".into(), o.writers.into());
    d.insert("box_side".into(), o.side.into());
    d.insert("jump".into(), o.jump.into());
    d.insert("nodes".into(), ids.len().into());
    d.insert("edges".into(), edges.into());
    d.insert("import_secs".into(), import_secs.into());
    d.insert("nodes_in_first_region_syncs".into(), synced_nodes.into());
    d.insert("wrong_deliveries".into(), wrong.into());
    d.insert("enters".into(), seen.enters.load(Relaxed).into());
    d.insert("leaves".into(), seen.leaves.load(Relaxed).into());
    d.insert("updates".into(), seen.updates.load(Relaxed).into());
    d.insert("rolled_back".into(), rolled_back.load(Relaxed).into());
    d.insert(
        "disconnected".into(),
        seen.disconnected.load(Relaxed).into(),
    );
    d.insert("commit_groups".into(), groups.into());
    d.insert("changes_committed".into(), changes.into());
    d.insert("cuts_encoded".into(), cuts.into());
    let per_group = if groups > 0.0 { cuts / groups } else { 0.0 };
    let per_change = if changes > 0.0 { cuts / changes } else { 0.0 };
    d.insert("cuts_encoded_per_group".into(), per_group.into());
    d.insert("cuts_encoded_per_change".into(), per_change.into());
    let ms = |us: u64| us as f64 / 1000.0;
    let md = format!(
        "{} sessions, each a {} x {} box over {} nodes and {edges} edges laid out on a {:.0} x {:.0} plane; \
         {} writers moving nodes by up to {} at {} moves/s in all, {} s ({:.1} s with the drain).\n\n\
         | measure | value |\n|---|---|\n\
         | moves sent | {sent} ({:.0}/s) |\n\
         | deliveries expected / received | {expected} / {received} |\n\
         | of which updates / enters / leaves | {} / {} / {} |\n\
         | deliveries per second | {:.0} |\n\
         | **deliveries a session could not see** | **{wrong}** |\n\
         | write -> delivery p50 / p99 / p99.9 / max | {:.2} / {:.2} / {:.2} / {:.2} ms |\n\
         | write -> confirmation (the git commit, fsync'd) p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |\n\
         | commit groups / changes committed | {groups} / {changes} |\n\
         | region cuts encoded | {cuts} ({per_group:.2} per commit group, {per_change:.2} per change) |\n\
         | rolled back | {} |\n\
         | sessions disconnected | {} |\n\
         | server CPU | {cpu_percent:.1}% of one core |\n\
         | server RSS | {:.0} MiB |\n\
         | import | {import_secs:.1} s |\n",
        o.sessions,
        o.side,
        o.side,
        ids.len(),
        side_of_plane,
        side_of_plane,
        o.writers,
        o.jump,
        o.rate,
        args.duration,
        elapsed,
        sent as f64 / args.duration.max(1) as f64,
        seen.updates.load(Relaxed),
        seen.enters.load(Relaxed),
        seen.leaves.load(Relaxed),
        result.deliveries_per_sec,
        ms(latency.p50),
        ms(latency.p99),
        ms(latency.p999),
        ms(latency.max),
        ms(confirmed.p50),
        ms(confirmed.p99),
        ms(confirmed.max),
        rolled_back.load(Relaxed),
        seen.disconnected.load(Relaxed),
        rss as f64 / (1024.0 * 1024.0),
    );
    Ok(("viewports", result, md))
}
