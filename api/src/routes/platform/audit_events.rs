//! `/v1/audit-events`: the audit trail of an org (its admins), or of the platform (operators);
//! verifying its hash chains; exporting a range as a self-verifying bundle.

use super::convert;
use crate::AppState;
use crate::audit::KeySigner;
use crate::auth::Caller;
use crate::extract::ApiQuery;
use crate::problem::{ApiError, ApiResult};
use api_types::Page;
use api_types::platform::{AuditAnchor, AuditBundle, AuditEvent, AuditVerifyReport};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use platform_audit::Filter;

#[derive(serde::Deserialize)]
pub struct ListParams {
    action: Option<String>,
    actor: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    cursor: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Page<AuditEvent>>> {
    let filter = filter(&caller, params)?;
    let limit = filter.limit;
    let items = platform_audit::list(&state.pool, &filter).await?;
    Ok(Json(Page::of(
        items,
        limit,
        |e| e.seq.to_string(),
        convert::audit_event,
    )))
}

/// The caller's org (or, for operators naming none, the platform) and the query's narrowing.
fn filter(caller: &Caller, params: ListParams) -> ApiResult<Filter> {
    let after_seq = params
        .cursor
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| crate::extract::invalid_cursor())
        })
        .transpose()?;
    Ok(Filter {
        org: caller.ctx.org,
        platform_only: caller.ctx.org.is_none(),
        action: params.action,
        actor: params.actor,
        since: params.since,
        until: params.until,
        after_seq,
        limit: crate::extract::page_limit(params.limit)?,
    })
}

/// `GET /v1/audit-events/verify`: walks the chains and checks them against the signed anchors.
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<AuditVerifyReport>> {
    let report =
        platform_audit::verify(&state.pool, &KeySigner(state.keys.clone()), caller.ctx.org).await?;
    Ok(Json(AuditVerifyReport {
        ok: report.ok,
        events_checked: report.events_checked,
        chains_checked: report.chains_checked,
        problems: report.problems,
    }))
}

#[derive(serde::Deserialize)]
pub struct ExportParams {
    since: DateTime<Utc>,
    until: DateTime<Utc>,
}

/// `GET /v1/audit-events/export`: anchors the chains now, then exports the range with what
/// verifies it offline.
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ExportParams>,
) -> ApiResult<Json<AuditBundle>> {
    if params.until <= params.since || params.until - params.since > chrono::Duration::days(93) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_range",
            "until must be after since, at most 93 days later",
        ));
    }
    crate::audit::anchor_now(&state).await;
    let b = platform_audit::export(&state.pool, caller.ctx.org, params.since, params.until).await?;
    Ok(Json(AuditBundle {
        format: b.format,
        org: b.org,
        since: b.since,
        until: b.until,
        events: b.events.into_iter().map(convert::audit_event).collect(),
        context: b.context.into_iter().map(convert::audit_event).collect(),
        heads: b.heads.into_iter().map(convert::anchor).collect(),
    }))
}

/// `POST /v1/audit-events/anchor` (operators): signs and publishes the chain heads now.
pub async fn anchor(State(state): State<AppState>) -> ApiResult<Json<Vec<AuditAnchor>>> {
    let anchors = platform_audit::anchor(&state.pool, &KeySigner(state.keys.clone())).await?;
    Ok(Json(anchors.into_iter().map(convert::anchor).collect()))
}
