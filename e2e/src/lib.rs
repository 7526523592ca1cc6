//! The end-to-end harness: a whole platform per test (a fresh Postgres database, the real API
//! over HTTP, the control-plane worker and node agents, in-process or as real processes,
//! against the shared Temporal test server). The test binary (`tests/e2e/`) and the
//! benchmarks (`benches/`) share it.

pub mod harness;
pub mod rogue;
