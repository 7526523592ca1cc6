//! Extractors whose rejections are problem+json: JSON bodies, query strings, idempotency keys.
//! (Authentication is the `auth` middleware's; handlers take its `auth::Caller`.)
//!
//! Bodies and query strings are checked against `api_types::limits` here, before any handler
//! runs: a body is a JSON object whose every string field has its length and characters, and
//! every query parameter is bounded. Nothing the database would refuse (NUL) or that could be
//! echoed at length gets further.

use crate::problem::{ApiError, echo_quoted};
use api_types::limits::{self, Limited, Limits};
use axum::extract::{FromRequest, FromRequestParts, Request, rejection::JsonRejection};
use axum::http::{StatusCode, request::Parts};
use serde_json::Value;

/// `Json<T>`, but a malformed or mistyped body is a problem+json 400/422, never a plain-text
/// error; the body must be a JSON object, and its strings must keep `T`'s limits.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned + Limited, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match axum::Json::<Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => value,
            Err(e) => return Err(json_rejection(e)),
        };
        if !value.is_object() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
        check_body(&T::LIMITS, &value)?;
        serde_json::from_value(value).map(Self).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                echo_quoted(&e.to_string()),
            )
        })
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    match e {
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request("malformed_json", echo_quoted(&e.body_text()))
        }
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            echo_quoted(&e.body_text()),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ),
        e if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is larger than this API accepts",
        ),
        e if is_timeout(&e) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        ),
        _ => ApiError::bad_request("malformed_body", "the request body could not be read"),
    }
}

/// Whether reading the body failed because the body timeout (`crate::serve`) ran out.
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if err.is::<crate::BodyTimedOut>() {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Every string at `path` (`a`, `a[]`, `a[].b`) of `value`; other values are left to serde.
fn strings_at<'a>(value: &'a Value, path: &str, out: &mut Vec<&'a str>) {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let (name, items) = match head.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (head, false),
    };
    let Some(found) = value.get(name) else {
        return;
    };
    let found: Vec<&Value> = match (items, found) {
        (true, Value::Array(list)) => list.iter().collect(),
        (true, _) => return,
        (false, v) => vec![v],
    };
    for v in found {
        match (rest, v) {
            (Some(rest), v) => strings_at(v, rest, out),
            (None, Value::String(s)) => out.push(s),
            (None, _) => {}
        }
    }
}

/// `limits` over a body (a JSON object), then no NUL anywhere (not even in fields the type
/// ignores).
fn check_body(limits: &Limits, body: &Value) -> Result<(), ApiError> {
    let invalid = |code: &str, detail: String| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code.to_string(), detail)
    };
    for items in limits.arrays {
        if let Some(Value::Array(list)) = body.get(items.path)
            && list.len() > items.max
        {
            return Err(invalid(
                items.code,
                format!("`{}` may have at most {} items", items.path, items.max),
            ));
        }
    }
    for field in limits.strings {
        let mut found = Vec::new();
        strings_at(body, field.path, &mut found);
        for s in found {
            field
                .rule
                .check(field.path, s)
                .map_err(|e| invalid(field.rule.code, e))?;
        }
    }
    if has_nul(body) {
        return Err(invalid(
            limits::INVALID_FIELD,
            "strings may not contain NUL".into(),
        ));
    }
    Ok(())
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(list) => list.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// `Query<T>`, but a malformed query string is a problem+json 400, and every parameter keeps its
/// limits (`api_types::limits::QUERY`; any other parameter, `OTHER_QUERY`).
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        check_query(parts.uri.query().unwrap_or(""))?;
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|e| ApiError::bad_request("invalid_query", echo_quoted(&e.body_text())))
    }
}

/// Every parameter of a query string against its rule.
pub fn check_query(query: &str) -> Result<(), ApiError> {
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let (label, rule) = match limits::QUERY.iter().find(|f| f.path == name) {
            Some(known) => (known.path, &known.rule),
            None => ("query parameter", &limits::OTHER_QUERY),
        };
        limits::OTHER_QUERY
            .check("query parameter name", &name)
            .and_then(|()| rule.check(label, &value))
            .map_err(|detail| ApiError::new(query_status(rule.code), rule.code, detail))?;
    }
    Ok(())
}

/// A query parameter naming something that cannot exist answers 404, like an unknown one.
pub fn query_status(code: &str) -> StatusCode {
    if code.ends_with("_not_found") {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// The optional `Idempotency-Key` header. Keys are 1-255 printable ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        match value.to_str() {
            Ok(key)
                if !key.is_empty()
                    && key.len() <= 255
                    && key.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Ok(Self(Some(key.to_string())))
            }
            _ => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1-255 printable ASCII characters",
            )),
        }
    }
}

/// A page size: 1 to 200, 50 when absent.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be between 1 and 200",
        ));
    }
    Ok(limit)
}

pub fn invalid_cursor() -> ApiError {
    ApiError::bad_request("invalid_cursor", "cursor is not one this API issued")
}
