//! `idle`: open N connections and hold them: memory per connection, CPU,
//! idle bandwidth.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitmind_bench::conn::{self, Conn};
use gitmind_bench::procstat::{self, CpuMeter};
use gitmind_bench::server::ServerUnderTest;
use gitmind_schema::Body;
use tokio::sync::Semaphore;

use crate::clients::{codec_of, read_sync, send_heartbeat, wait_all_ready, CLIENT_HEARTBEAT};
use crate::result::{LoadResult, ServerStats};
use crate::Args;

pub async fn run(
    args: &Args,
    server: &ServerUnderTest,
    connections: usize,
    per_graph: usize,
) -> anyhow::Result<(&'static str, LoadResult, String)> {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let disconnects = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(connections);
    let tenth = (connections / 10).max(1);
    let mut rss_at_tenth = 0;
    let opened = Instant::now();
    for i in 0..connections {
        if i == tenth {
            wait_all_ready(&limit, 256).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            rss_at_tenth = procstat::rss_bytes(server.pid).unwrap_or(0);
        }
        let permit = limit.clone().acquire_owned().await?;
        let (stop, received, disconnects, addr) = (
            stop.clone(),
            received.clone(),
            disconnects.clone(),
            server.addr,
        );
        let codec = codec_of(args, i);
        let path = format!("/v1/graphs/idle-{}?user=idle{i}", i / per_graph.max(1));
        tasks.push(tokio::spawn(async move {
            let mut conn = match Conn::connect(addr, Some(conn::source_addr(i)), &path, codec).await
            {
                Ok(conn) => conn,
                Err(e) => {
                    drop(permit);
                    return Err(e);
                }
            };
            let sync = read_sync(&mut conn).await;
            drop(permit);
            sync?;
            let mut counted = conn.bytes_in;
            // The protocol (10.1): a client sends something at least every
            // heartbeat interval (25 s), whatever the server sends it.
            let mut last_beat = Instant::now();
            while !stop.load(Relaxed) {
                let frame = tokio::time::timeout(Duration::from_millis(500), conn.recv()).await;
                received.fetch_add(conn.bytes_in - counted, Relaxed);
                counted = conn.bytes_in;
                let beat_due = last_beat.elapsed() >= CLIENT_HEARTBEAT;
                match frame {
                    Err(_) if beat_due => {
                        send_heartbeat(&mut conn).await?;
                        last_beat = Instant::now();
                    }
                    Err(_) => {}
                    Ok(Ok(Some(batch))) => {
                        if beat_due
                            || batch
                                .iter()
                                .any(|e| matches!(e.body, Body::SystemHeartbeat(_)))
                        {
                            send_heartbeat(&mut conn).await?;
                            last_beat = Instant::now();
                        }
                    }
                    Ok(_) => {
                        disconnects.fetch_add(1, Relaxed);
                        return Ok(());
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    wait_all_ready(&limit, 256).await;
    let connect_secs = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = procstat::rss_bytes(server.pid).unwrap_or(0);
    let spread = gitmind_bench::metrics::scrape(server.addr)
        .await
        .map(|m| gitmind_bench::metrics::per_shard(&m, "gitmind_connections"))
        .unwrap_or_default();
    let cpu = CpuMeter::start(server.pid);
    let hold = Instant::now();
    let bytes_before = received.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let cpu_percent = cpu.percent();
    let held = hold.elapsed().as_secs_f64();
    let bytes_held = received.load(Relaxed) - bytes_before;
    stop.store(true, Relaxed);
    let mut failed = 0;
    for task in tasks {
        if !matches!(task.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    let per_connection =
        (rss.saturating_sub(rss_at_tenth)) as f64 / (connections - tenth).max(1) as f64;
    let bytes_per_client_sec = bytes_held as f64 / connections as f64 / held;
    let mut result = LoadResult {
        scenario: "idle".into(),
        server: ServerStats {
            cpu_percent,
            rss_bytes: rss,
            rss_per_connection_bytes: per_connection,
        },
        ..LoadResult::default()
    };
    let details = &mut result.details;
    details.insert("connections".into(), connections.into());
    details.insert("connections_failed".into(), failed.into());
    details.insert("disconnects".into(), disconnects.load(Relaxed).into());
    details.insert(
        "bytes_per_idle_client_per_sec".into(),
        bytes_per_client_sec.into(),
    );
    details.insert("connect_seconds".into(), connect_secs.into());
    details.insert("per_graph".into(), per_graph.into());
    details.insert("connections_per_shard".into(), spread.clone().into());
    let md = format!(
        "| measure | value |\n|---|---|\n\
         | connections held | {connections} ({failed} failed to open, {} disconnected while held) |\n\
         | time to open them | {connect_secs:.1} s |\n\
         | server memory per connection | {:.0} bytes ({:.2} KiB), from RSS at {tenth} and at {connections} connections |\n\
         | server RSS | {:.1} MiB |\n\
         | server CPU while idle | {cpu_percent:.2}% of one core over {held:.0} s |\n\
         | bytes per idle client per second | {bytes_per_client_sec:.1} |\n\
         | connections per shard | {spread:?} |\n\n\
         Sessions are spread over graphs of {per_graph} (each session sees the others' presence).\n",
        disconnects.load(Relaxed),
        per_connection,
        per_connection / 1024.0,
        rss as f64 / f64::from(1u32 << 20),
    );
    Ok(("idle", result, md))
}
