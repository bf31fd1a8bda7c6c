//! The Gitmind live server (docs/architecture.md).
//!
//! A connection is accepted onto one [`shard`] (a pinned thread with a
//! single-threaded runtime) and lives there as a [`session`]. Mutations go
//! through a bounded channel to the [`hub`], where each graph's owner
//! (the `gitmind-owner` crate) validates, orders and merges them; ordered
//! changes go in groups to the [`persist`] thread, which commits them to
//! git. Once committed, the hub encodes each event once per codec and
//! pushes it through a lock-free ring ([`fanout`]) to every shard with
//! sessions on that graph; each session's writer sends what its [`outbox`]
//! holds in as few frames as it can.
//!
//! - [`auth`]: origins, hosts, credentials and what they allow.
//! - [`config`]: every knob, with defaults that need no configuration.
//! - [`server`]: start, listeners, accept, shutdown.
//! - [`backend`]: the shards' I/O backends, epoll or io_uring
//!   (`--io`), and what a connection is when accepted.
//! - `uring` (the `uring` feature, Linux): io_uring shards and a stream
//!   over its owned-buffer reads and writes.
//! - [`tls`]: the certificate, its reload, and a connection's stream,
//!   plain or TLS.
//! - [`http`]: request heads, plain endpoints, the WebSocket handshake.
//! - [`session`]: one connection's loop, from the accepted handshake to
//!   the close.
//! - [`outbox`]: a session's bounded outgoing queue.
//! - `sync_stream`: a `graph.sync` cut into chunks as it goes out.
//! - [`presence`]: who is on a graph, what a session may show, the relay.
//! - [`quota`]: rates and connection counts per user and per address.
//! - [`shard`]: a shard's sessions and the dispatcher of its ring.
//! - [`fanout`]: what the hub sends shards, encoded once, and the rings.
//! - [`hub`]: the thread of the graph owners.
//! - [`graphs`]: which graphs the hub holds open, loads, and releases.
//! - [`frames`]: WebSocket frames written straight from shared buffers.
//! - [`persist`]: the git persistence thread: group commits into one bare
//!   repository, and graphs read back when asked for.
//! - [`metrics`]: what `GET /metrics` reports.
//! - [`stamp`]: the server's clock and the messages it makes itself.
//! - [`trim`]: memory given back to the system after a crowd comes or goes.
//! - [`view`]: what a session with read prefixes sees of its graph.

pub mod auth;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod fanout;
pub mod frames;
pub mod gonzai;
pub mod graphs;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod persist;
pub mod presence;
pub mod query;
pub mod quota;
pub mod region;
pub mod server;
pub mod session;
pub mod shard;
pub mod stamp;
pub mod subscriptions;
mod sync_stream;
pub mod tls;
pub mod trim;
#[cfg(all(feature = "uring", target_os = "linux"))]
pub mod uring;
pub mod view;
pub mod web;

pub use config::Config;
pub use server::{Server, StartError};
