//! Every integration and end-to-end test, in one binary (each binary links the whole platform):
//! real Postgres, real Temporal, real HTTP, real processes. Run through `scripts/test`, which
//! starts Postgres and the Temporal test server if missing. One module per resource, then the
//! cross-cutting suites.

use e2e::harness;

// Resources.
mod audit;
mod billing_api;
mod billing_workflows;
mod hostile_hosts;
mod iam;
mod instances;
mod nodes;
mod reconcile;
// The layers, each through its own seam.
mod activities;
mod agent;
mod isolation;
mod replay;
mod sdk;
// The contract and the operator's surfaces.
mod cli;
mod openapi;
mod platform;
mod vocabulary;
// Hostile input and clients; fuzzing the contract.
mod fuzz;
mod hostile;
// Failure and recording.
mod faults;
mod histories;
mod outages;
