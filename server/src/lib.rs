//! The Gitmind live server (ARCHITECTURE.md, "The server, as data flows
//! through it").
//!
//! - [`change`]: the record of one ordered change, handed from the graph
//!   owner to the git persistence thread and kept for the replay window.
//! - [`persist`]: the git persistence thread: group commits into one bare
//!   repository, and every graph loaded back on start.

pub mod change;
pub mod persist;
