//! The Gitmind live client library (ARCHITECTURE.md, "Clients").
