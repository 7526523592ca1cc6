//! Technical plumbing shared by every domain crate. No business rules live here.

pub mod db;
pub mod error;
pub mod ids;

pub use error::{DomainError, DomainResult};
