//! `/v1/orgs/{org}/invoices`: an org's invoices and credit notes, newest first, and one with its
//! lines (its admins; finance, any org's). Another org's invoice is `invoice_not_found`, exactly
//! like one that does not exist.

use super::billing::org_of;
use super::convert;
use crate::AppState;
use crate::auth::Caller;
use crate::extract::{ApiQuery, invalid_cursor, page_limit};
use crate::problem::{ApiError, ApiResult};
use api_types::Page;
use api_types::billing::Invoice;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform_billing::invoice;
use shared_ids::InvoiceId;

#[derive(serde::Deserialize)]
pub struct ListParams {
    cursor: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Page<Invoice>>> {
    let org = org_of(&caller, &org)?;
    let limit = page_limit(params.limit)?;
    let before = params
        .cursor
        .map(|c| c.parse::<InvoiceId>().map_err(|_| invalid_cursor()))
        .transpose()?;
    let items = invoice::list(&state.pool, org, before, limit).await?;
    Ok(Json(Page::of(
        items,
        limit,
        |i| i.id.to_string(),
        convert::invoice,
    )))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((org, id)): Path<(String, String)>,
) -> ApiResult<Json<Invoice>> {
    let org = org_of(&caller, &org)?;
    let id: InvoiceId = id.parse().map_err(|_| not_found())?;
    match invoice::get(&state.pool, Some(org), id).await {
        Ok(found) => Ok(Json(convert::invoice(found))),
        Err(shared_kernel::DomainError::NotFound { .. }) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

/// What an invoice the org does not have answers, whatever the id (no id echoed): the same for
/// another org's and for none.
fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invoice_not_found",
        "invoice not found",
    )
}
