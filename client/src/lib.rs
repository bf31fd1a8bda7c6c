//! The Gitmind live client library (ARCHITECTURE.md, "Clients").
//!
//! - [`replica`]: the client's local graph, server state plus optimistic
//!   pending changes, with the OT client for text (pure logic, no I/O).

pub mod replica;
