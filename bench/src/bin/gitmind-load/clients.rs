//! What every scenario does with its connections: the codec of each,
//! reading the whole `graph.sync`, heartbeats, and waiting for connects in
//! flight.

use std::time::Duration;

use anyhow::{bail, Context as _};
use gitmind_bench::conn::{Codec, Conn};
use gitmind_schema::message::{GraphSync, SystemHeartbeat};
use gitmind_schema::{Body, Envelope};
use tokio::sync::Semaphore;

use crate::Args;

/// The codec of the i-th connection.
pub fn codec_of(args: &Args, i: usize) -> Codec {
    args.codec.unwrap_or(if i % 2 == 0 {
        Codec::Binary
    } else {
        Codec::Json
    })
}

/// The path a client of `user` connects to on `graph`: in local mode
/// `?user=NAME`; with `--jwt-secret-file`, also a token for that user
/// (`access_token`), with `--read-prefix` as its read claim when it only
/// `reads`.
pub fn graph_path(args: &Args, graph: &str, user: &str, reads: bool) -> String {
    let mut path = format!("/v1/graphs/{graph}?user={user}");
    if let Some(secret) = &args.secret {
        let read = (reads && !args.read_prefix.is_empty()).then_some(&args.read_prefix);
        path.push_str("&access_token=");
        path.push_str(&token(secret, user, read));
    }
    path
}

/// An HS256 token for `user`, writing on every graph for a day.
fn token(secret: &[u8], user: &str, read: Option<&Vec<String>>) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 86_400;
    let mut claims = serde_json::json!({"sub": user, "exp": exp, "graphs": {"*": "write"}});
    if let Some(read) = read {
        claims["read"] = serde_json::json!(read);
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap_or_default()
}

/// Reads messages until a complete `graph.sync` (all chunks) arrived;
/// what came after it in the same frame is left for the next `recv`.
pub async fn read_sync(conn: &mut Conn) -> anyhow::Result<GraphSync> {
    let mut whole: Option<GraphSync> = None;
    loop {
        let Some(batch) = conn.recv().await? else {
            bail!("closed before graph.sync")
        };
        for (i, envelope) in batch.iter().enumerate() {
            let Body::GraphSync(part) = &envelope.body else {
                continue;
            };
            let part = part.clone();
            let last = part.is_last_chunk();
            match &mut whole {
                None => whole = Some(part),
                Some(w) => {
                    w.nodes
                        .get_or_insert_with(Vec::new)
                        .extend(part.nodes.unwrap_or_default());
                    w.edges
                        .get_or_insert_with(Vec::new)
                        .extend(part.edges.unwrap_or_default());
                    w.events
                        .get_or_insert_with(Vec::new)
                        .extend(part.events.unwrap_or_default());
                }
            }
            if last {
                conn.unread(&batch[i + 1..]);
                return whole.context("no sync");
            }
        }
    }
}

/// Waits until every permit is back: all connections in flight are done.
pub async fn wait_all_ready(limit: &Semaphore, permits: u32) {
    if let Ok(all) = limit.acquire_many(permits).await {
        drop(all);
    }
}

/// How often a client that has nothing else to send sends a heartbeat of
/// its own: well inside the server's default heartbeat interval of 25 s
/// (docs/protocol.md 10.1).
pub const CLIENT_HEARTBEAT: Duration = Duration::from_secs(20);

/// Sends `system.heartbeat` `{}`.
pub async fn send_heartbeat(conn: &mut Conn) -> anyhow::Result<()> {
    let beat = Envelope::new("hb", Body::SystemHeartbeat(SystemHeartbeat::default()));
    conn.send(&beat).await
}
