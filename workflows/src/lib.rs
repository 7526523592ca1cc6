//! Deterministic orchestration only: no I/O, no clock, no randomness outside the workflow
//! context. Every side effect is an activity; every step that has one pushes its undo first.
//!
//! One module per product (and per platform domain that has workflows). A workflow's starter
//! (its id, options and search attributes) lives in the workflow's own module, so the API, the
//! reconciler and every later caller start it the same way.

pub mod appplatform;
pub mod billing;
pub mod failure;
pub mod gpuaas;
pub mod schedule;
pub mod tokenfactory;
