//! The Gitmind live client library (docs/architecture.md, "Crates"), used by
//! the `gitmind` CLI, the load generator, the soak test and Gonzai agents.
//!
//! - [`client`]: a connected client: reconnects by itself with full-jitter
//!   backoff, resumes with `since`, resends pending changes, and shows its
//!   connection state; every mutation returns a future of its outcome.
//! - [`replica`]: the client's local graph, server state plus optimistic
//!   pending changes, with the OT client for text (pure logic, no I/O).
//! - [`transport`]: one WebSocket connection in either codec.
//! - [`import`]: loading many nodes and edges in pipelined batches.
//! - [`dataset`]: reading a graph dataset (JSON Lines, maybe zstd), for
//!   `gitmind import`, the soak test, benchmarks and test traffic.
//! - [`backoff`]: reconnect delays.

pub mod backoff;
pub mod client;
pub mod dataset;
pub mod import;
pub mod replica;
pub mod transport;

pub use client::{Client, ClientConfig, Event, Events, Outcome, State, TokenSource};
pub use gitmind_schema::Codec;
