//! `/v1/price-book`: every version of the price book with its prices (any signed-in caller), and
//! publishing the next version (finance, operators). A version is never edited: a correction is a
//! new version, and a metering rerun with it bills only the difference.

use super::convert;
use crate::AppState;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::ApiResult;
use api_types::List;
use api_types::billing::{NewPriceBookVersion, PriceBookVersion};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use platform_billing::price_book::{self, PriceBook};
use platform_billing::{Decimal, usage};
use shared_kernel::DomainError;

pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<List<PriceBookVersion>>> {
    let versions = price_book::versions(&state.pool).await?;
    Ok(Json(List {
        items: versions.into_iter().map(convert::price_book).collect(),
    }))
}

pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewPriceBookVersion>,
) -> ApiResult<(StatusCode, Json<PriceBookVersion>)> {
    let book = convert::new_price_book(req)?;
    let by = caller.ctx.principal.label();
    let published = price_book::publish(&state.pool, &book, &by).await?;
    Ok((StatusCode::CREATED, Json(convert::price_book(published))))
}

/// The version in effect now; `None` before any was published.
pub async fn in_effect_now(pool: &sqlx::PgPool) -> ApiResult<Option<PriceBook>> {
    match price_book::in_effect(pool, chrono::Utc::now()).await {
        Ok(book) => Ok(Some(book)),
        Err(DomainError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A SKU's price per GPU-hour in `book`, rounded to minor units, with the version.
pub fn gpu_hour(book: Option<&PriceBook>, sku: &str) -> Option<(i64, i32)> {
    let book = book?;
    let price = book.price(usage::GPU_SECONDS, sku)?;
    let hourly = price.checked_rate(Decimal::from(3600))?;
    Some((super::billing::round_minor(hourly), book.version))
}
