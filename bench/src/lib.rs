//! Benchmarks and the load generator of Gitmind live (docs/architecture.md,
//! "Measured, not assumed").
//!
//! This library holds what `gitmind-load` and the soak test share: the
//! machine's description, process statistics from `/proc`, starting a
//! server under test, a minimal protocol connection, and report writing.

pub mod conn;
pub mod machine;
pub mod metrics;
pub mod procstat;
pub mod report;
pub mod server;
