//! What the server did to one kind of attacker, counted as it happens:
//! handshakes refused, messages answered, `system.error` codes, rollbacks,
//! complete syncs, and connections closed with their close codes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use gitmind_schema::{Body, Envelope, ErrorCode};
use serde::Serialize;

/// The close code recorded for a connection that ended without a close
/// frame (reset, or closed under us).
pub const NO_CLOSE_FRAME: u16 = 0;

/// Counters shared by the tasks of one attacker kind.
#[derive(Debug, Default)]
pub struct Tally {
    /// Connections attempted.
    pub connects: AtomicU64,
    /// Connections that failed without an HTTP answer.
    pub connect_failures: AtomicU64,
    /// Messages or frames sent (or, for a handshake attack, bytes).
    pub sent: AtomicU64,
    /// Messages the schedule wanted sent but that were dropped because the
    /// connection was down or the sender fell behind.
    pub skipped: AtomicU64,
    /// Messages received from the server.
    pub answered: AtomicU64,
    /// `graph.sync`s received whole, after the one every session opens with.
    pub syncs: AtomicU64,
    /// `update.rollback`s received.
    pub rollbacks: AtomicU64,
    /// `system.error`s received, by code (in the order of `ErrorCode::ALL`).
    errors: [AtomicU64; ErrorCode::ALL.len()],
    /// The most bad-input answers (errors and rollbacks) one connection got.
    pub max_refusals_per_connection: AtomicU64,
    /// Handshakes refused, by HTTP status.
    refused: Mutex<BTreeMap<u16, u64>>,
    /// Connections that ended, by the server's close code
    /// ([`NO_CLOSE_FRAME`] when there was none).
    closes: Mutex<BTreeMap<u16, u64>>,
}

impl Tally {
    /// Counts what one received frame held.
    pub fn saw(&self, batch: &[std::sync::Arc<Envelope>]) -> u64 {
        let mut refusals = 0;
        self.answered.fetch_add(batch.len() as u64, Relaxed);
        for envelope in batch {
            match &envelope.body {
                Body::SystemError(e) => {
                    refusals += 1;
                    if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == e.code) {
                        self.errors[i].fetch_add(1, Relaxed);
                    }
                }
                Body::UpdateRollback(_) => {
                    refusals += 1;
                    self.rollbacks.fetch_add(1, Relaxed);
                }
                Body::GraphSync(sync) if sync.is_last_chunk() => {
                    self.syncs.fetch_add(1, Relaxed);
                }
                _ => {}
            }
        }
        refusals
    }

    /// Counts a connection that ended with `code` (`None`: no close frame),
    /// after `refusals` bad-input answers.
    pub fn closed(&self, code: Option<u16>, refusals: u64) {
        *lock(&self.closes)
            .entry(code.unwrap_or(NO_CLOSE_FRAME))
            .or_default() += 1;
        self.max_refusals_per_connection
            .fetch_max(refusals, Relaxed);
    }

    /// Counts a connection that ended because the run did (not the server).
    pub fn ended(&self, refusals: u64) {
        self.max_refusals_per_connection
            .fetch_max(refusals, Relaxed);
    }

    /// Counts a failed connect: a refused handshake by its status, anything
    /// else as a failure.
    pub fn connect_failed(&self, status: Option<u16>) {
        match status {
            Some(status) => *lock(&self.refused).entry(status).or_default() += 1,
            None => {
                self.connect_failures.fetch_add(1, Relaxed);
            }
        }
    }

    /// `system.error`s received with `code`.
    pub fn errors(&self, code: ErrorCode) -> u64 {
        ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.errors[i].load(Relaxed))
    }

    /// Connections the server ended, by close code.
    pub fn closes(&self) -> BTreeMap<u16, u64> {
        lock(&self.closes).clone()
    }

    /// Handshakes refused, by HTTP status.
    pub fn refused(&self) -> BTreeMap<u16, u64> {
        lock(&self.refused).clone()
    }

    /// The figures, for the JSON result.
    pub fn report(&self) -> TallyReport {
        TallyReport {
            connects: self.connects.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            refused: self
                .refused()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            sent: self.sent.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            answered: self.answered.load(Relaxed),
            syncs: self.syncs.load(Relaxed),
            rollbacks: self.rollbacks.load(Relaxed),
            errors: ErrorCode::ALL
                .iter()
                .map(|c| (c.name().to_owned(), self.errors(*c)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            closes: self
                .closes()
                .into_iter()
                .map(|(k, v)| (close_name(k), v))
                .collect(),
            max_refusals_per_connection: self.max_refusals_per_connection.load(Relaxed),
        }
    }
}

/// [`Tally`]'s figures at the end of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TallyReport {
    /// Connections attempted.
    pub connects: u64,
    /// Connections that failed without an HTTP answer.
    pub connect_failures: u64,
    /// Handshakes refused, by HTTP status.
    pub refused: BTreeMap<String, u64>,
    /// Messages, frames or bytes sent.
    pub sent: u64,
    /// Messages the schedule dropped (connection down, sender behind).
    pub skipped: u64,
    /// Messages received.
    pub answered: u64,
    /// Whole `graph.sync`s received after the first.
    pub syncs: u64,
    /// `update.rollback`s received.
    pub rollbacks: u64,
    /// `system.error`s received, by code.
    pub errors: BTreeMap<String, u64>,
    /// Connections ended, by close code (`none`: no close frame).
    pub closes: BTreeMap<String, u64>,
    /// The most bad-input answers one connection got.
    pub max_refusals_per_connection: u64,
}

impl TallyReport {
    /// One line for a Markdown table: what came back.
    pub fn line(&self) -> String {
        let join = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = vec![format!("{} messages received", self.answered)];
        if !self.errors.is_empty() {
            parts.push(format!("errors: {}", join(&self.errors)));
        }
        if self.rollbacks > 0 {
            parts.push(format!("{} rollbacks", self.rollbacks));
        }
        if self.syncs > 0 {
            parts.push(format!("{} syncs", self.syncs));
        }
        if !self.closes.is_empty() {
            parts.push(format!("closed: {}", join(&self.closes)));
        }
        if !self.refused.is_empty() {
            parts.push(format!("handshakes refused: HTTP {}", join(&self.refused)));
        }
        if self.connect_failures > 0 {
            parts.push(format!("{} connects failed", self.connect_failures));
        }
        parts.join("; ")
    }
}

/// A close code as the report shows it.
fn close_name(code: u16) -> String {
    if code == NO_CLOSE_FRAME {
        "none".into()
    } else {
        code.to_string()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gitmind_schema::message::{GraphSync, SystemError};
    use std::sync::Arc;

    #[test]
    fn a_tally_counts_errors_by_code_syncs_and_closes() {
        let tally = Tally::default();
        let error = |code| {
            Arc::new(Envelope::new(
                "e",
                Body::SystemError(SystemError {
                    code,
                    message: String::new(),
                    reference: None,
                    retry_after_ms: None,
                }),
            ))
        };
        let sync = Arc::new(Envelope::new("s", Body::GraphSync(GraphSync::default())));
        let refusals = tally.saw(&[
            error(ErrorCode::BadFrame),
            error(ErrorCode::BadFrame),
            error(ErrorCode::RateLimited),
            sync,
        ]);
        assert_eq!(refusals, 3);
        tally.closed(Some(1008), refusals);
        tally.closed(None, 1);
        tally.connect_failed(Some(429));
        let report = tally.report();
        assert_eq!(report.answered, 4);
        assert_eq!(report.syncs, 1);
        assert_eq!(report.errors["bad_frame"], 2);
        assert_eq!(report.errors["rate_limited"], 1);
        assert_eq!(report.closes["1008"], 1);
        assert_eq!(report.closes["none"], 1);
        assert_eq!(report.refused["429"], 1);
        assert_eq!(report.max_refusals_per_connection, 3);
        assert!(report.line().contains("bad_frame x2"));
    }
}
