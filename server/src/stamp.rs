//! The server's clock, and the messages the server makes itself: every one
//! carries `timestamp` (docs/protocol.md 2.1).

use std::time::{SystemTime, UNIX_EPOCH};

use gitmind_schema::message::UpdateRollback;
use gitmind_schema::{Body, Envelope};

/// The server clock in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A message from the server, stamped with the server's clock.
pub fn stamped(id: impl Into<String>, body: Body) -> Envelope {
    let mut envelope = Envelope::new(id, body);
    envelope.timestamp = Some(now_ms());
    envelope
}

/// A rollback the server gives without the owner (a mutation it could not
/// take at all), as the message `r-{ref}`.
pub fn rollback(body: UpdateRollback) -> Envelope {
    stamped(format!("r-{}", body.reference), Body::UpdateRollback(body))
}
