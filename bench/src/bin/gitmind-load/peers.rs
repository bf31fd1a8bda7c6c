//! `peers`: the `fanout` workload against another collaboration server
//! (y-websocket, Hocuspocus, or a bare relay: `bench/peers/`), speaking
//! its protocol ([`gitmind_bench::ysync`]), measured as `fanout` measures
//! Gitmind live (perf-reports/peers.md).
//!
//! Each writer has a Yjs document of its own and sends one update per
//! change, setting its key of a `Y.Map` to a stamp of the time the change
//! was scheduled; each subscriber reads the stamps of what it receives,
//! for the latency, and counts gaps and repeats in each writer's sequence.

use std::sync::Arc;

use anyhow::Context as _;
use futures_util::StreamExt;
use gitmind_bench::conn;
use gitmind_bench::server::ServerUnderTest;
use gitmind_bench::ysync::{Expected, Protocol, Received, Seen, Writer};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::fanout::{self, Workload};
use crate::fleet::{Fleet, NextUpdate, Tally};
use crate::result::LoadResult;
use crate::Args;

pub async fn run(
    args: &Args,
    server: &ServerUnderTest,
    protocol: Protocol,
    workload: Workload,
) -> anyhow::Result<(&'static str, LoadResult, String)> {
    let doc = format!("peers-{}", rand::random::<u32>());
    let fleet = connect(server, protocol, &doc, workload).await?;
    let (name, mut result, md) =
        fanout::measure(args, server, fleet, "peers", workload, None).await?;
    result.codec = protocol.name().to_owned();
    result
        .details
        .insert("protocol".into(), protocol.name().into());
    let md = format!(
        "Server: {} (`bench/peers/`), document `{doc}`, pid {}.\n\n{md}",
        protocol.name(),
        server.pid
    );
    Ok((name, result, md))
}

/// Connects the subscribers, then the writers, all in sync on `doc`.
async fn connect(
    server: &ServerUnderTest,
    protocol: Protocol,
    doc: &str,
    workload: Workload,
) -> anyhow::Result<Fleet> {
    let mut fleet = Fleet::new(doc.to_owned())?;
    let path = protocol.path(doc);
    let limit = Arc::new(Semaphore::new(128));
    let mut joins = Vec::new();
    for i in 0..workload.subscribers {
        let permit = limit.clone().acquire_owned().await?;
        let (tally, path, doc, addr) = (fleet.tally(), path.clone(), doc.to_owned(), server.addr);
        let writers = workload.writers;
        joins.push(tokio::spawn(async move {
            let mut ws = conn::open(addr, Some(conn::source_addr(i)), &path, None).await?;
            protocol.join(&mut ws, &doc).await?;
            drop(permit);
            tokio::spawn(subscribe(ws, protocol, tally, writers));
            anyhow::Ok(())
        }));
    }
    for join in joins {
        join.await?
            .with_context(|| format!("a subscriber of {}", protocol.name()))?;
    }
    for w in 0..workload.writers {
        let i = workload.subscribers + w;
        let (path, doc, addr) = (path.clone(), doc.to_owned(), server.addr);
        let writer = fleet.writer_runtime().spawn(async move {
            let mut ws = conn::open(addr, Some(conn::source_addr(i)), &path, None).await?;
            protocol.join(&mut ws, &doc).await?;
            let (sink, mut stream) = ws.split();
            // The servers send a writer its own updates back, and
            // Hocuspocus a `SyncStatus` for each: read and let go.
            tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
            let mut writer = Writer::new(w as u32);
            let next: NextUpdate = Box::new(move |at_us| {
                let update = writer.next_update(at_us);
                Ok(Message::Binary(protocol.update_frame(&doc, update).into()))
            });
            anyhow::Ok((sink, next))
        });
        let (sink, next) = writer.await??;
        fleet.add_writer(sink, next);
    }
    // Let the join storm settle, as `fanout` does.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    Ok(fleet)
}

/// A subscriber's life: every update's stamp into the tally, each
/// writer's sequence checked for gaps and repeats, until the connection
/// ends.
async fn subscribe(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    protocol: Protocol,
    tally: Tally,
    writers: usize,
) {
    let mut expected = Expected::new(writers);
    let mut local = Vec::with_capacity(1024);
    while let Some(Ok(message)) = ws.next().await {
        let Message::Binary(bytes) = message else {
            continue;
        };
        let now = tally.now_us();
        let Ok(Received::Update(stamp)) = protocol.receive_cached(bytes) else {
            continue;
        };
        match expected.see(&stamp) {
            Seen::New { lost } => {
                if lost > 0 {
                    tally.lost(lost);
                }
                tally.delivered(stamp.at_us, now, &mut local);
                tally.flush(&mut local);
            }
            Seen::Duplicate => tally.duplicate(),
            Seen::Stranger => {}
        }
    }
    tally.disconnected();
}
