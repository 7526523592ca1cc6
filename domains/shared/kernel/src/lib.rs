//! What every domain crate builds on: the error vocabulary ([`DomainError`]), the database pool
//! and the single, ordered migration stream. Technical plumbing only; no business rules.

pub mod context;
pub mod db;
pub mod error;

pub use context::{AuthMethod, OperationContext, Principal, PrincipalKind};
pub use error::{DomainError, DomainResult};
