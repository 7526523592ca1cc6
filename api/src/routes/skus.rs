use crate::extract::Caller;
use crate::problem::ApiResult;
use crate::{AppState, convert};
use axum::Json;
use axum::extract::State;
use gpuaas_api_types::{List, Sku};

pub async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<List<Sku>>> {
    let skus = gpuaas_domain::sku::list(&state.pool).await?;
    Ok(Json(List {
        items: skus.into_iter().map(convert::sku).collect(),
    }))
}
