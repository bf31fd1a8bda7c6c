//! The Gitmind live server (ARCHITECTURE.md, "The server, as data flows
//! through it").
//!
//! A connection is accepted onto one [`shard`] (a pinned thread with a
//! single-threaded runtime) and lives there as a [`session`]. Mutations go
//! through a bounded channel to the [`hub`], where each graph's [`owner`]
//! validates, orders and merges them; ordered changes go in groups to the
//! [`persist`] thread, which commits them to git. Once committed, the hub
//! encodes each event once per codec and pushes it through a lock-free ring
//! to every shard with sessions on that graph; each session's writer sends
//! what is queued in as few frames as it can.
//!
//! - [`config`]: every knob, with defaults that need no configuration.
//! - [`frames`]: WebSocket frames written straight from shared buffers.
//! - [`http`]: request heads, plain endpoints, the WebSocket handshake.
//! - [`change`]: the record of one ordered change (owner to persistence).
//! - [`owner`]: the graph owner, where each graph's changes are validated,
//!   ordered, merged and applied (pure logic, no I/O).
//! - [`persist`]: the git persistence thread: group commits into one bare
//!   repository, and every graph loaded back on start.
//! - [`metrics`]: what `GET /metrics` reports.
//! - [`server`]: start and shutdown.

pub mod config;
pub mod fanout;
pub mod frames;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod persist;
pub mod presence;
pub mod server;
pub mod session;
pub mod shard;
pub mod stamp;
pub mod sync_stream;

pub use config::Config;
pub use server::{Server, StartError};
