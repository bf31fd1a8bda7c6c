//! A session that sends on a fixed schedule and counts what comes back,
//! opening a new connection whenever the server closes one, until the run
//! ends: the shape of the sync flood, the presence storm and the
//! bad-frame attacker.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use gitmind_bench::conn::{refused_status, Codec, Conn};
use tokio::time::{timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::tally::Tally;
use crate::clients::read_sync;

/// The oldest part of the schedule a sender catches up on after a pause
/// (a reconnect): what is older is dropped and counted as skipped.
const MAX_BACKLOG: Duration = Duration::from_millis(100);
/// How long a sender waits after a connect failed, before the next.
pub const RETRY: Duration = Duration::from_millis(100);
/// How long a sender waits for the server's close frame once a send
/// failed, or for the close handshake at the end.
pub const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// Where a flooding session connects and how fast it sends.
#[derive(Debug, Clone)]
pub struct Flood {
    /// The server.
    pub server: SocketAddr,
    /// The address it connects from.
    pub source: IpAddr,
    /// The path of every connection (`/v1/graphs/...`).
    pub path: String,
    /// Its codec.
    pub codec: Codec,
    /// Messages a second.
    pub rate: f64,
    /// When it stops.
    pub until: Instant,
}

/// Which message a sender is about to send.
#[derive(Debug, Clone, Copy)]
pub struct Shot {
    /// The connection's codec.
    pub codec: Codec,
    /// Which connection of this sender (0 for the first).
    pub life: u64,
    /// Which message on this connection (0 for the first).
    pub index: u64,
    /// Which message of the whole schedule, unique per sender.
    pub serial: u64,
}

/// Runs one flooding session until `flood.until`: `next` makes each
/// message; what the server answers, and how each connection ended, go
/// into `tally`.
pub async fn run(
    flood: Flood,
    tally: Arc<Tally>,
    mut next: impl FnMut(Shot) -> anyhow::Result<Message>,
) {
    let mut schedule = Schedule {
        start: Instant::now(),
        rate: flood.rate,
        serial: 0,
    };
    let mut life = 0;
    while Instant::now() < flood.until {
        tally.connects.fetch_add(1, Relaxed);
        let connect = async {
            let mut conn =
                Conn::connect(flood.server, Some(flood.source), &flood.path, flood.codec).await?;
            read_sync(&mut conn).await?;
            anyhow::Ok(conn)
        };
        let mut conn = match tokio::time::timeout_at(flood.until, connect).await {
            Err(_) => return,
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tally.connect_failed(refused_status(&e));
                tokio::time::sleep_until((Instant::now() + RETRY).min(flood.until)).await;
                continue;
            }
        };
        drive(&mut conn, &flood, &tally, &mut schedule, life, &mut next).await;
        life += 1;
    }
}

/// Where a sender is in its schedule.
struct Schedule {
    start: Instant,
    rate: f64,
    /// Messages sent or skipped so far.
    serial: u64,
}

impl Schedule {
    /// How many messages are due now; what is older than [`MAX_BACKLOG`]
    /// is skipped (returned second).
    fn due(&mut self, now: Instant) -> (u64, u64) {
        let due = (now.duration_since(self.start).as_nanos() as f64 * self.rate / 1e9) as u64;
        let backlog = (self.rate * MAX_BACKLOG.as_secs_f64()).ceil().max(1.0) as u64;
        let mut skipped = 0;
        if due > self.serial + backlog {
            skipped = due - backlog - self.serial;
            self.serial += skipped;
        }
        (due.saturating_sub(self.serial), skipped)
    }
}

/// Sends and reads on one connection until the server ends it or the run
/// does.
async fn drive(
    conn: &mut Conn,
    flood: &Flood,
    tally: &Tally,
    schedule: &mut Schedule,
    life: u64,
    next: &mut impl FnMut(Shot) -> anyhow::Result<Message>,
) {
    let mut refusals = 0;
    let mut index = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            batch = conn.recv() => match batch {
                Ok(Some(batch)) => refusals += tally.saw(&batch),
                Ok(None) => return tally.closed(conn.close_code, refusals),
                Err(_) => return tally.closed(None, refusals),
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if now >= flood.until {
                    tally.ended(refusals);
                    let _ = timeout(CLOSE_WAIT, conn.ws.close(None)).await;
                    return;
                }
                let (due, skipped) = schedule.due(now);
                tally.skipped.fetch_add(skipped, Relaxed);
                let mut failed = false;
                for _ in 0..due {
                    let shot = Shot { codec: flood.codec, life, index, serial: schedule.serial };
                    schedule.serial += 1;
                    index += 1;
                    let Ok(message) = next(shot) else {
                        tally.skipped.fetch_add(1, Relaxed);
                        continue;
                    };
                    if conn.ws.feed(message).await.is_err() {
                        failed = true;
                        break;
                    }
                    tally.sent.fetch_add(1, Relaxed);
                }
                if failed || conn.ws.flush().await.is_err() {
                    // The server closed it: its close frame may still be
                    // there to read.
                    let _ = timeout(CLOSE_WAIT, async {
                        while let Ok(Some(batch)) = conn.recv().await {
                            refusals += tally.saw(&batch);
                        }
                    })
                    .await;
                    return tally.closed(conn.close_code, refusals);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_sends_what_is_due_and_skips_what_is_too_old() {
        let start = Instant::now();
        let mut schedule = Schedule {
            start,
            rate: 1000.0,
            serial: 0,
        };
        assert_eq!(schedule.due(start + Duration::from_millis(5)), (5, 0));
        schedule.serial += 5;
        assert_eq!(schedule.due(start + Duration::from_millis(7)), (2, 0));
        schedule.serial += 2;
        // A second without sending: only the last 100 ms are still due.
        assert_eq!(
            schedule.due(start + Duration::from_millis(1007)),
            (100, 900)
        );
        assert_eq!(schedule.serial, 907);
    }
}
