//! The witness: one more honest session in the attacked graph that counts
//! what the presence stormers' messages became on its side, per stormer
//! and kind. The server relays at most `cursor_rate` cursor moves and
//! `presence_rate` selections and presence changes a second per session
//! (docs/protocol.md 8); whatever a stormer sends, the witness must see no
//! more than that.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::net::SocketAddr;

use gitmind_bench::conn::{Codec, Conn};
use gitmind_schema::message::PresenceStatus;
use gitmind_schema::{Body, Envelope};
use serde::Serialize;
use tokio::time::Instant;

use crate::clients::{read_sync, send_heartbeat, CLIENT_HEARTBEAT};

/// The kinds of presence message a stormer sends, as the witness counts them.
pub const KINDS: [&str; 3] = ["cursor.move", "selection.change", "user.presence"];

/// What the witness saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Seen {
    /// Messages relayed from each stormer (by user id), per kind in the
    /// order of [`KINDS`].
    pub per_sender: BTreeMap<String, [u64; 3]>,
    /// Seconds it watched.
    pub seconds: f64,
    /// Whether its connection ended before the watch did.
    pub disconnected: bool,
}

impl Seen {
    /// The most messages of kind `kind` (an index into [`KINDS`]) one
    /// stormer got relayed per second.
    pub fn max_rate(&self, kind: usize) -> f64 {
        self.per_sender
            .values()
            .map(|counts| counts[kind] as f64 / self.seconds.max(1e-9))
            .fold(0.0, f64::max)
    }

    /// Counts one message, if it is a stormer's presence.
    fn count(&mut self, prefix: &str, envelope: &Envelope) {
        let Some(user) = envelope.user_id.as_deref() else {
            return;
        };
        if !user.starts_with(prefix) {
            return;
        }
        let kind = match &envelope.body {
            Body::CursorMove(_) => 0,
            Body::SelectionChange(_) => 1,
            Body::UserPresence(p)
                if !matches!(p.status, PresenceStatus::Joined | PresenceStatus::Left) =>
            {
                2
            }
            _ => return,
        };
        self.per_sender.entry(user.to_owned()).or_default()[kind] += 1;
    }
}

/// Connects the witness to `graph` as user `witness`.
pub async fn connect(
    server: SocketAddr,
    source: IpAddr,
    graph: &str,
    codec: Codec,
) -> anyhow::Result<Conn> {
    let mut conn = Conn::connect(
        server,
        Some(source),
        &format!("/v1/graphs/{graph}?user=witness"),
        codec,
    )
    .await?;
    read_sync(&mut conn).await?;
    Ok(conn)
}

/// Counts the presence of users whose id starts with `prefix` until
/// `until`, sending a heartbeat as the protocol asks.
pub async fn watch(mut conn: Conn, prefix: String, until: Instant) -> Seen {
    let start = Instant::now();
    let mut seen = Seen::default();
    let mut last_beat = start;
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        // Something at least every heartbeat interval, however busy the
        // server keeps this session (docs/protocol.md 10.1).
        if now >= last_beat + CLIENT_HEARTBEAT {
            if send_heartbeat(&mut conn).await.is_err() {
                seen.disconnected = true;
                break;
            }
            last_beat = now;
        }
        match tokio::time::timeout_at(until.min(last_beat + CLIENT_HEARTBEAT), conn.recv()).await {
            Err(_) => {}
            Ok(Ok(Some(batch))) => {
                for envelope in &batch {
                    seen.count(&prefix, envelope);
                }
            }
            Ok(_) => {
                seen.disconnected = true;
                break;
            }
        }
    }
    seen.seconds = start.elapsed().as_secs_f64();
    seen
}
