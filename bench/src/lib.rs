//! Benchmarks and the load generator of Gitmind live (ARCHITECTURE.md,
//! "Measured, not assumed").
