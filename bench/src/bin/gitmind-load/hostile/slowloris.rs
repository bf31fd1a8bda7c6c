//! Slowloris: connections that send a WebSocket upgrade request one byte
//! at a time, slowly, to hold a place without ever finishing the
//! handshake. The server gives a request head a fixed time
//! (docs/protocol.md 1.3, `handshake_timeout_ms`) and then cuts the
//! connection; this counts how many were cut and how long each lived.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitmind_bench::report::Percentiles;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::Instant;

use super::tally::Tally;
use crate::fleet::histogram;

/// What the slowloris connections met.
#[derive(Debug)]
pub struct Slowloris {
    /// Connections, bytes sent, handshakes refused.
    pub tally: Tally,
    /// Connections the server cut before their head was complete.
    pub cut: AtomicU64,
    /// How long each cut connection lived, in microseconds.
    pub lived: Arc<Mutex<Histogram<u64>>>,
    /// Connections whose whole head went out and that the server took.
    pub completed: AtomicU64,
    /// Connections still dribbling when the run ended.
    pub open_at_end: AtomicU64,
    /// The age of the oldest of those, in microseconds.
    pub oldest_open_us: AtomicU64,
}

impl Default for Slowloris {
    fn default() -> Self {
        Slowloris {
            tally: Tally::default(),
            cut: AtomicU64::new(0),
            lived: histogram(),
            completed: AtomicU64::new(0),
            open_at_end: AtomicU64::new(0),
            oldest_open_us: AtomicU64::new(0),
        }
    }
}

/// [`Slowloris`]' figures at the end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct SlowlorisReport {
    /// Connections opened.
    pub connects: u64,
    /// Bytes of request heads sent.
    pub bytes_sent: u64,
    /// Connections cut by the server.
    pub cut: u64,
    /// How long the cut ones lived, in microseconds.
    pub lived_us: Percentiles,
    /// Heads completed and answered 101.
    pub completed: u64,
    /// Handshakes refused, by HTTP status.
    pub refused: std::collections::BTreeMap<String, u64>,
    /// Connects that failed.
    pub connect_failures: u64,
    /// Connections still dribbling at the end.
    pub open_at_end: u64,
    /// The oldest of those, in microseconds.
    pub oldest_open_us: u64,
}

impl Slowloris {
    /// The figures, for the JSON result.
    pub fn report(&self) -> SlowlorisReport {
        let tally = self.tally.report();
        SlowlorisReport {
            connects: tally.connects,
            bytes_sent: tally.sent,
            cut: self.cut.load(Relaxed),
            lived_us: self
                .lived
                .lock()
                .map(|h| Percentiles::of(&h))
                .unwrap_or_default(),
            completed: self.completed.load(Relaxed),
            refused: tally.refused,
            connect_failures: tally.connect_failures,
            open_at_end: self.open_at_end.load(Relaxed),
            oldest_open_us: self.oldest_open_us.load(Relaxed),
        }
    }
}

/// The upgrade request a slowloris dribbles: a complete, valid one, so
/// that only its slowness gets it cut.
pub fn request(server: SocketAddr, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: gitmind.v1.json\r\n\r\n"
    )
    .into_bytes()
}

/// One slowloris slot until `until`: connects from `source`, dribbles the
/// request a byte every `every`, and when the server cuts it, starts again.
pub async fn run(
    server: SocketAddr,
    source: IpAddr,
    path: String,
    every: Duration,
    until: Instant,
    state: Arc<Slowloris>,
) {
    let request = request(server, &path);
    while Instant::now() < until {
        state.tally.connects.fetch_add(1, Relaxed);
        let opened = Instant::now();
        let connected = async {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source, 0))?;
            socket.connect(server).await
        };
        let mut stream = match tokio::time::timeout_at(until, connected).await {
            Err(_) => return,
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) => {
                state.tally.connect_failed(None);
                tokio::time::sleep_until((Instant::now() + every).min(until)).await;
                continue;
            }
        };
        let mut sent = 0;
        let mut answer = Vec::new();
        let mut buf = [0u8; 512];
        let mut next_byte = Instant::now();
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => {
                    match read {
                        Ok(n) if n > 0 => {
                            answer.extend_from_slice(&buf[..n]);
                            if !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                                continue;
                            }
                            match status_of(&answer) {
                                Some(101) => {
                                    state.completed.fetch_add(1, Relaxed);
                                }
                                status => state.tally.connect_failed(status),
                            }
                        }
                        // Closed (or reset) before the head was complete: cut.
                        _ => {
                            state.cut.fetch_add(1, Relaxed);
                            if let Ok(mut h) = state.lived.lock() {
                                let _ = h.record((opened.elapsed().as_micros() as u64).max(1));
                            }
                        }
                    }
                    break;
                }
                () = tokio::time::sleep_until(next_byte), if sent < request.len() => {
                    if stream.write_all(&request[sent..=sent]).await.is_err() {
                        // The read side sees the cut next.
                        next_byte = until + every;
                        continue;
                    }
                    state.tally.sent.fetch_add(1, Relaxed);
                    sent += 1;
                    next_byte += every;
                }
                () = tokio::time::sleep_until(until) => {
                    state.open_at_end.fetch_add(1, Relaxed);
                    state
                        .oldest_open_us
                        .fetch_max(opened.elapsed().as_micros() as u64, Relaxed);
                    return;
                }
            }
        }
    }
}

/// The status code of an HTTP response head.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_dribbled_request_is_a_whole_valid_upgrade_and_no_prefix_is() {
        let server: SocketAddr = "127.0.0.1:7432".parse().unwrap();
        let head = request(server, "/v1/graphs/slow?user=slow1");
        let parsed = gitmind_server::http::parse_head(&head).unwrap().unwrap();
        assert!(parsed.is_upgrade());
        assert_eq!(parsed.path, "/v1/graphs/slow");
        for cut in 1..head.len() {
            assert!(
                gitmind_server::http::parse_head(&head[..cut])
                    .unwrap()
                    .is_none(),
                "{cut} bytes already make a head"
            );
        }
    }

    #[test]
    fn a_status_is_read_off_a_response_head() {
        assert_eq!(
            status_of(b"HTTP/1.1 429 Too Many Requests\r\n\r\n"),
            Some(429)
        );
        assert_eq!(
            status_of(b"HTTP/1.1 101 Switching Protocols\r\n"),
            Some(101)
        );
        assert_eq!(status_of(b"garbage"), None);
    }
}
