//! One file per resource. Handlers stay thin: extract, authenticate, call the domain or start a
//! workflow, map the error.

pub mod health;
pub mod instances;
pub mod metrics;
pub mod nodes;
pub mod skus;
