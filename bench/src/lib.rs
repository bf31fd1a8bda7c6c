//! Benchmarks and the load generator of Gitmind live (docs/architecture.md,
//! "Measured, not assumed").
//!
//! This library holds what `gitmind-load` and the soak test share:
//!
//! - [`machine`]: the facts of the machine a measurement ran on.
//! - [`procstat`]: memory and CPU of a process, from `/proc`.
//! - [`server`]: a fresh server under test, from the same build.
//! - [`conn`]: a lean protocol connection for load generation.
//! - [`metrics`]: reading the server's `/metrics` and snapshots.
//! - [`report`]: results as JSON and Markdown, with SVG charts.
//! - [`owner_work`]: the graph owner's benchmark workload.
//! - [`ysync`]: the peers' protocols (y-websocket, Hocuspocus, a relay)
//!   over Yjs updates, for `gitmind-load peers`.

pub mod conn;
pub mod machine;
pub mod metrics;
pub mod owner_work;
pub mod procstat;
pub mod report;
pub mod server;
pub mod ysync;
