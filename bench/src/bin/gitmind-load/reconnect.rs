//! `reconnect`: all clients lose their connection at once (a server
//! restart); the time until they resume, and whether every change reached
//! every client exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use gitmind_bench::conn::{self, Codec, Conn};
use gitmind_bench::server::ServerUnderTest;
use gitmind_schema::message::NodeCreate;
use gitmind_schema::model::Node;
use gitmind_schema::{Body, Envelope};
use tokio::sync::Semaphore;

use crate::clients::{codec_of, read_sync, wait_all_ready};
use crate::result::LoadResult;
use crate::Args;

pub async fn run(
    args: &Args,
    server: &mut ServerUnderTest,
    clients: usize,
) -> anyhow::Result<(&'static str, LoadResult, String)> {
    if server.data.is_none() {
        bail!(
            "reconnect restarts the server, so it must be one this program started (no --server)"
        );
    }
    let graph = format!("reconnect-{}", rand::random::<u32>());
    let addr = server.addr;
    // A writer makes changes before the restart; every client must end with all of them, once.
    let mut writer = Conn::connect(
        addr,
        None,
        &format!("/v1/graphs/{graph}?user=writer"),
        Codec::Json,
    )
    .await?;
    read_sync(&mut writer).await?;
    let limit = Arc::new(Semaphore::new(128));
    let mut states = Vec::new();
    let mut tasks = Vec::new();
    let resumed_at: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let restart_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    for i in 0..clients {
        let permit = limit.clone().acquire_owned().await?;
        let codec = codec_of(args, i);
        let seen = Arc::new(Mutex::new(HashMap::<u64, u32>::new()));
        states.push(seen.clone());
        let (graph, resumed_at, restart_at) =
            (graph.clone(), resumed_at.clone(), restart_at.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(
                addr,
                Some(conn::source_addr(i)),
                &format!("/v1/graphs/{graph}?user=c{i}"),
                codec,
            )
            .await?;
            let sync = read_sync(&mut conn).await?;
            drop(permit);
            let epoch = sync.epoch.unwrap_or_default();
            let mut last = sync.seq.unwrap_or(0);
            let mut attempt = 0u32;
            loop {
                while let Ok(Some(batch)) = conn.recv().await {
                    for e in batch.iter() {
                        if let (Some(seq), true) = (e.seq, e.body.message_type().is_mutation()) {
                            if let Ok(mut s) = seen.lock() {
                                *s.entry(seq).or_default() += 1;
                            }
                            last = last.max(seq);
                        }
                    }
                }
                // Lost the connection: back off with full jitter and resume.
                loop {
                    attempt += 1;
                    let cap = Duration::from_millis(100 * 2u64.pow(attempt.min(5)));
                    tokio::time::sleep(cap.mul_f64(rand::random::<f64>())).await;
                    let path = format!("/v1/graphs/{graph}?user=c{i}&since={last}&epoch={epoch}");
                    if let Ok(mut c) =
                        Conn::connect(addr, Some(conn::source_addr(i)), &path, codec).await
                    {
                        if let Ok(sync) = read_sync(&mut c).await {
                            for e in sync.events.unwrap_or_default() {
                                if let Some(seq) = e.seq {
                                    if let Ok(mut s) = seen.lock() {
                                        *s.entry(seq).or_default() += 1;
                                    }
                                    last = last.max(seq);
                                }
                            }
                            if let (Ok(restart), Ok(mut r)) = (restart_at.lock(), resumed_at.lock())
                            {
                                if let Some(t) = *restart {
                                    r.push(t.elapsed().as_secs_f64());
                                }
                            }
                            conn = c;
                            attempt = 0;
                            break;
                        }
                    }
                    if attempt > 60 {
                        return anyhow::Ok(());
                    }
                }
            }
        }));
    }
    wait_all_ready(&limit, 128).await;
    let changes = 50u64;
    for k in 0..changes {
        let e = Envelope::new(
            format!("c-{k}"),
            Body::NodeCreate(NodeCreate {
                base_seq: Some(0),
                node: Node {
                    id: format!("load:before-{k}"),
                    ..Node::default()
                },
                commit: None,
            }),
        );
        writer.send(&e).await?;
    }
    let mut confirmed = 0;
    while confirmed < changes {
        let Some(batch) = writer.recv().await? else {
            break;
        };
        confirmed += batch
            .iter()
            .filter(|e| matches!(e.body, Body::UpdateConfirmed(_)))
            .count() as u64;
    }
    drop(writer);
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Ok(mut r) = restart_at.lock() {
        *r = Some(Instant::now());
    }
    server
        .restart(gitmind_bench::server::Stop::Graceful)
        .await?;
    let restarted = Instant::now();
    let mut writer = Conn::connect(
        server.addr,
        None,
        &format!("/v1/graphs/{graph}?user=writer"),
        Codec::Json,
    )
    .await?;
    let sync = read_sync(&mut writer).await?;
    let base = sync.seq.unwrap_or(0);
    for k in 0..changes {
        let e = Envelope::new(
            format!("d-{k}"),
            Body::NodeCreate(NodeCreate {
                base_seq: Some(base),
                node: Node {
                    id: format!("load:after-{k}"),
                    ..Node::default()
                },
                commit: None,
            }),
        );
        writer.send(&e).await?;
    }
    // Wait until every client resumed and saw every change, bounded.
    let total = 2 * changes;
    let wait_until = Instant::now() + Duration::from_secs(args.duration.max(30));
    while Instant::now() < wait_until {
        let done = states
            .iter()
            .filter(|s| s.lock().is_ok_and(|s| s.len() as u64 >= total))
            .count();
        if done == clients {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_resumed = restarted.elapsed().as_secs_f64();
    let (mut lost, mut duplicates, mut complete) = (0u64, 0u64, 0usize);
    for s in &states {
        let Ok(s) = s.lock() else { continue };
        let have = (1..=total).filter(|seq| s.contains_key(seq)).count() as u64;
        lost += total - have;
        duplicates += s
            .values()
            .filter(|n| **n > 1)
            .map(|n| u64::from(n - 1))
            .sum::<u64>();
        if have == total {
            complete += 1;
        }
    }
    for task in tasks {
        task.abort();
    }
    let mut times = resumed_at.lock().map(|v| v.clone()).unwrap_or_default();
    times.sort_by(f64::total_cmp);
    let p = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let mut result = LoadResult {
        scenario: "reconnect".into(),
        expected: total * clients as u64,
        received: total * clients as u64 - lost,
        lost,
        duplicates,
        ..LoadResult::default()
    };
    result.details.insert("clients".into(), clients.into());
    result
        .details
        .insert("clients_complete".into(), complete.into());
    result.details.insert("resumed".into(), times.len().into());
    result.details.insert("resume_p50_s".into(), p(0.5).into());
    result.details.insert(
        "resume_max_s".into(),
        times.last().copied().unwrap_or(f64::NAN).into(),
    );
    let md = format!(
        "{clients} clients on one graph; {changes} changes before a server restart (SIGTERM, same data and port), \
         {changes} after; each client resumes with `since`/`epoch` after a full-jitter backoff (cap 100 ms x 2^attempt).\n\n\
         | measure | value |\n|---|---|\n\
         | clients resumed | {} of {clients} |\n\
         | time from restart to resume: p50 / max | {:.2} s / {:.2} s |\n\
         | clients with every change exactly once | {complete} of {clients} |\n\
         | changes lost / duplicated (over all clients) | {lost} / {duplicates} |\n\
         | time until all complete (or the wait ended) | {all_resumed:.2} s |\n",
        times.len(),
        p(0.5),
        times.last().copied().unwrap_or(f64::NAN),
    );
    Ok(("reconnect", result, md))
}
