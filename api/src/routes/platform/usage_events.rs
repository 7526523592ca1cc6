//! `POST /v1/usage-events`: discrete usage from a producer, in batches of up to 5000, all or
//! nothing, idempotent by event id. Only an API key whose scopes name `usage:write` posts (no
//! role grants it); the org is the key's, and an event's project must be one the key reaches.

use crate::AppState;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::{ApiError, ApiResult};
use api_types::billing::{Quantity, UsageBatchOutcome, UsageEvent, UsageEventBatch};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use platform_billing::{Decimal, usage};
use shared_ids::ProjectId;
use std::collections::BTreeSet;
use std::str::FromStr;

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(batch): ApiJson<UsageEventBatch>,
) -> ApiResult<Json<UsageBatchOutcome>> {
    check_projects(&state, &caller, &batch.events).await?;
    let source = caller.ctx.principal.label();
    let events = batch
        .events
        .into_iter()
        .map(|e| event(&caller, &source, e))
        .collect::<ApiResult<Vec<_>>>()?;
    let done = usage::record_batch(&state.pool, caller.org(), &events).await?;
    Ok(Json(UsageBatchOutcome {
        accepted: done.accepted,
        duplicates: done.duplicates,
    }))
}

fn event(caller: &Caller, source: &str, e: UsageEvent) -> ApiResult<usage::UsageEvent> {
    Ok(usage::UsageEvent {
        quantity: quantity(&e.id, &e.quantity)?,
        org: caller.org(),
        project: Some(e.project_id.unwrap_or_else(|| caller.project())),
        meter: e.meter,
        sku: e.sku.unwrap_or_default(),
        started_at: e.started_at,
        ended_at: e.ended_at,
        source: source.to_string(),
        id: e.id,
    })
}

/// A decimal string or an integer, exactly (the domain bounds it).
fn quantity(id: &str, q: &Quantity) -> ApiResult<Decimal> {
    match q {
        Quantity::Whole(n) => Ok(Decimal::from(*n)),
        Quantity::Decimal(text) => Decimal::from_str(text).map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_quantity",
                format!(
                    "event {}: quantity is not a decimal number",
                    crate::problem::echo(id)
                ),
            )
        }),
    }
}

/// Every project an event names is the request's, or (for a key not bound to a project) another
/// project of the same org; any other answers 404 like a project that does not exist.
async fn check_projects(state: &AppState, caller: &Caller, events: &[UsageEvent]) -> ApiResult<()> {
    let named: BTreeSet<ProjectId> = events
        .iter()
        .filter_map(|e| e.project_id)
        .filter(|p| *p != caller.project())
        .collect();
    for project in named {
        let reachable = caller.authority().bound_project.is_none()
            && platform_iam::orgs::get_project(&state.pool, project)
                .await
                .is_ok_and(|p| p.org_id == caller.org());
        if !reachable {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "project_not_found",
                "project not found",
            ));
        }
    }
    Ok(())
}
