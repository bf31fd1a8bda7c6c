//! The Gitmind live server (ARCHITECTURE.md, "The server, as data flows
//! through it").
//!
//! - [`change`]: the record of one ordered change, handed from the graph
//!   owner to the git persistence thread and kept for the replay window.

pub mod change;
