//! The Gitmind live server (ARCHITECTURE.md, "The server, as data flows
//! through it").
//!
//! - [`change`]: the record of one ordered change, handed from the graph
//!   owner to the git persistence thread and kept for the replay window.
//! - [`owner`]: the graph owner, where each graph's changes are validated,
//!   ordered, merged and applied (pure logic, no I/O).

pub mod change;
pub mod owner;
