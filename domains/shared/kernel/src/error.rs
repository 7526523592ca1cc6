//! Error kinds every domain maps into. The API turns them into problem+json, the activities into
//! retryable or non-retryable Temporal failures; the domain itself knows neither.

/// A domain failure with a stable machine code (`snake_case`) and a human message.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The caller's input is invalid; retrying the same input cannot succeed.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The referenced object does not exist (or the caller may not see it).
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// The request conflicts with the current state (idempotency mismatch, wrong state).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Contention that outlasted the domain's own retries: worth retrying later.
    #[error("{message}")]
    Busy { code: &'static str, message: String },
    /// Infrastructure trouble (database unreachable, serialization failure): worth a retry.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl DomainError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// The stable machine code, e.g. `unknown_sku`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { code, .. }
            | Self::NotFound { code, .. }
            | Self::Conflict { code, .. }
            | Self::Busy { code, .. } => code,
            Self::Database(_) => "internal",
        }
    }

    /// Whether doing the same thing again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Database(_) | Self::Busy { .. })
    }
}

pub type DomainResult<T> = Result<T, DomainError>;
