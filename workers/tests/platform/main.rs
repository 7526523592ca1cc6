//! End-to-end tests of the platform: real Postgres, real Temporal, real HTTP, real processes.
//! Run through `scripts/test`, which starts Postgres and the Temporal test server if missing.

mod api;
mod cli;
mod faults;
mod fleet;
mod harness;
mod histories;
mod provisioning;
