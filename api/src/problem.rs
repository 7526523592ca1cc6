//! RFC 9457 `application/problem+json` errors with a stable machine `code` and the request id.

use api_types::Problem;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared_kernel::DomainError;

tokio::task_local! {
    /// The current request's id, set by the request-id middleware for the handler's task.
    pub static REQUEST_ID: String;
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
    /// Seconds, for 429 and 503 answers.
    pub retry_after: Option<u64>,
}

/// The problem code of an error response, for the audit entry (a response extension).
#[derive(Debug, Clone)]
pub struct ErrorCode(pub String);

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            detail: detail.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    /// Temporal could not be reached or refused: the change is safe to retry.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "workflow_unavailable",
            detail,
        );
        e.retry_after = Some(RETRY_UNAVAILABLE_S);
        e
    }
    /// The database could not be reached (pool timeout, connection lost or refused): 503 with
    /// `Retry-After`. The statement that failed did not commit, or its commit was not confirmed:
    /// a create retried with the same Idempotency-Key is safe either way.
    pub fn database_unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "database unavailable");
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is not answering; retry after Retry-After seconds",
        );
        e.retry_after = Some(RETRY_UNAVAILABLE_S);
        e
    }
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log for this request_id",
        )
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status = match &e {
            DomainError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            DomainError::NotFound { .. } => StatusCode::NOT_FOUND,
            DomainError::Conflict { .. } => StatusCode::CONFLICT,
            DomainError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            DomainError::Database(db) if database_unreachable(db) => {
                return Self::database_unavailable(e);
            }
            DomainError::Database(_) => return Self::internal(e),
        };
        Self::new(status, e.code(), e.to_string())
    }
}

/// Seconds a 503 asks the client to wait before retrying.
const RETRY_UNAVAILABLE_S: u64 = 2;

/// Whether a database error means the database is unreachable or refusing connections, rather
/// than a bad statement: the pool found no connection in time, the connection broke, or the server
/// answered with a connection exception (SQLSTATE class 08), a lack of resources (class 53, e.g.
/// too many connections) or an operator intervention (57P0x: shutdown, cannot connect now).
fn database_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("53") || code.starts_with("57P0")
        }),
        _ => false,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
        let code = ErrorCode(self.code.clone());
        let retry_after = self.retry_after;
        let problem = Problem {
            type_uri: format!("https://docs.gpuaas.dev/problems/{}", self.code),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_string(),
            status: self.status.as_u16(),
            detail: cap(&self.detail, DETAIL_MAX),
            code: self.code,
            request_id,
        };
        let mut response = (self.status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(code);
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The most characters of a caller's value an error message repeats.
pub const ECHO_MAX: usize = 64;
/// The longest `detail` a problem carries.
pub const DETAIL_MAX: usize = 512;

/// A caller's value as an error message may repeat it: at most [`ECHO_MAX`] characters (then
/// `…`), control characters escaped.
pub fn echo(value: &str) -> String {
    cap(value, ECHO_MAX)
}

fn cap(value: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A parser's message with every quoted value in it (`"…"`, `` `…` ``) capped like [`echo`].
pub fn echo_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(DETAIL_MAX));
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest[open..].chars().next().expect("found a quote");
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        match after.find(quote) {
            Some(close) => {
                out.push_str(&echo(&after[..close]));
                out.push(quote);
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&echo(after));
                rest = "";
            }
        }
    }
    out.push_str(rest);
    cap(&out, DETAIL_MAX)
}
