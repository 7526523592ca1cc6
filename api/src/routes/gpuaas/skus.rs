//! `/v1/skus`: what can be launched, at what price (billing's price book in effect), and how much of it could be had now
//! (capacity per SKU, never which nodes).

use super::convert;
use crate::AppState;
use crate::auth::Caller;
use crate::problem::ApiResult;
use crate::routes::platform::price_book;
use api_types::List;
use api_types::gpuaas::Sku;
use axum::Json;
use axum::extract::State;

pub async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<List<Sku>>> {
    let skus = product_gpuaas::sku::list(&state.pool).await?;
    let capacity = product_gpuaas::sku::capacity(&state.pool).await?;
    let book = price_book::in_effect_now(&state.pool).await?;
    Ok(Json(List {
        items: skus
            .into_iter()
            .map(|s| {
                let c = capacity.get(&s.id).copied().unwrap_or_default();
                let price = price_book::gpu_hour(book.as_ref(), &s.id);
                convert::sku(s, c, price)
            })
            .collect(),
    }))
}
