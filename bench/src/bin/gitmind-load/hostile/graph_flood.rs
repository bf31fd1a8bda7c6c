//! Graph-name flood: connections to ever new graph names
//! (`/v1/graphs/flood-N`), each closed as soon as its `graph.sync` came,
//! as fast as they go, up to a bounded count of names. A name costs the
//! server a graph (an owner, a roster) for as long as it holds it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use gitmind_bench::conn::{refused_status, source_addr_in, Codec, Conn};
use gitmind_bench::report::Percentiles;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::{timeout, Instant};

use super::flood::{CLOSE_WAIT, RETRY};
use super::tally::Tally;
use crate::clients::read_sync;
use crate::fleet::histogram;

/// A graph-name flood: its names and what the server did.
#[derive(Debug)]
pub struct GraphFlood {
    /// The names are `{prefix}-{n}`.
    pub prefix: String,
    /// Names to open at most.
    pub names: usize,
    /// The next name to open.
    next: AtomicUsize,
    /// The numbers of the names whose `graph.sync` came.
    opened: Mutex<Vec<usize>>,
    /// Connect to `graph.sync`, microseconds.
    pub open_time: Arc<Mutex<Histogram<u64>>>,
    /// Connects, refusals, closes.
    pub tally: Tally,
}

/// [`GraphFlood`]'s figures at the end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct GraphFloodReport {
    /// Names to open at most.
    pub names: usize,
    /// Names opened (their `graph.sync` came).
    pub opened: u64,
    /// Connect to `graph.sync`, microseconds.
    pub open_time_us: Percentiles,
    /// What the server did.
    pub tally: super::tally::TallyReport,
}

impl GraphFlood {
    /// A flood of up to `names` names starting with `prefix`.
    pub fn new(prefix: String, names: usize) -> Self {
        GraphFlood {
            prefix,
            names,
            next: AtomicUsize::new(0),
            opened: Mutex::new(Vec::new()),
            open_time: histogram(),
            tally: Tally::default(),
        }
    }

    /// The path of the `n`-th name.
    pub fn path(&self, n: usize) -> String {
        format!("/v1/graphs/{}-{n}?user=flood", self.prefix)
    }

    /// The numbers of the names opened so far.
    pub fn opened(&self) -> Vec<usize> {
        self.opened.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// The figures, for the JSON result.
    pub fn report(&self) -> GraphFloodReport {
        GraphFloodReport {
            names: self.names,
            opened: self.opened().len() as u64,
            open_time_us: self
                .open_time
                .lock()
                .map(|h| Percentiles::of(&h))
                .unwrap_or_default(),
            tally: self.tally.report(),
        }
    }
}

/// One flooding task: opens the next name, waits for its sync, closes,
/// until the names run out or `until`.
pub async fn run(
    server: SocketAddr,
    block: u8,
    codec: Codec,
    until: Instant,
    flood: Arc<GraphFlood>,
) {
    loop {
        let n = flood.next.fetch_add(1, Relaxed);
        if n >= flood.names || Instant::now() >= until {
            return;
        }
        flood.tally.connects.fetch_add(1, Relaxed);
        let began = Instant::now();
        let path = flood.path(n);
        let open = async {
            let mut conn =
                Conn::connect(server, Some(source_addr_in(block, n)), &path, codec).await?;
            read_sync(&mut conn).await?;
            anyhow::Ok(conn)
        };
        match tokio::time::timeout_at(until, open).await {
            Err(_) => return,
            Ok(Ok(mut conn)) => {
                if let Ok(mut opened) = flood.opened.lock() {
                    opened.push(n);
                }
                if let Ok(mut h) = flood.open_time.lock() {
                    let _ = h.record((began.elapsed().as_micros() as u64).max(1));
                }
                let _ = timeout(CLOSE_WAIT, conn.ws.close(None)).await;
            }
            Ok(Err(e)) => {
                flood.tally.connect_failed(refused_status(&e));
                tokio::time::sleep_until((Instant::now() + RETRY).min(until)).await;
            }
        }
    }
}

/// How many of `sample` names, spread over those opened, the server still
/// holds: `GET /v1/graphs/NAME` answers 200 for a graph the server knows
/// and 404 for one it does not (docs/protocol.md 1.4).
pub async fn still_held(server: SocketAddr, flood: &GraphFlood, sample: usize) -> (usize, usize) {
    let opened = flood.opened();
    let step = opened.len().div_ceil(sample.max(1)).max(1);
    let mut held = 0;
    let mut asked = 0;
    for n in opened.iter().step_by(step) {
        asked += 1;
        let path = format!("/v1/graphs/{}-{n}", flood.prefix);
        if gitmind_bench::metrics::get(server, &path).await.is_ok() {
            held += 1;
        }
    }
    (held, asked)
}
