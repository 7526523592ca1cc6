//! What every domain crate builds on: the error vocabulary ([`DomainError`]), the database pool
//! and the single, ordered migration stream. Technical plumbing only; no business rules.

pub mod db;
pub mod error;

pub use error::{DomainError, DomainResult};
