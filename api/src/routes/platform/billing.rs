//! `/v1/orgs/{org}/billing…`, `/v1/orgs/{org}/payment-methods`, `/v1/orgs/{org}/metering-runs`:
//! an org's billing account and balance, its usage (per day, and the current period rated live),
//! its spend limit, top-ups, payment methods and paying unpaid invoices (its admins); every org's
//! of them, billing modes and metering reruns (finance).
//!
//! Finance reaches the org-scoped reads as `org:<p>|platform:billing:manage`: the middleware then
//! leaves the org unresolved, and the path names it ([`org_of`]).

use super::convert;
use crate::AppState;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, IdempotencyKey};
use crate::problem::{ApiError, ApiResult};
use api_types::List;
use api_types::billing::{
    AddPaymentMethodRequest, BillingAccount, LiveUsage, MeteringRunOutcome, MeteringRunRequest,
    PayRequest, PaymentMethod, Payments, SetBillingModeRequest, SetSpendLimitRequest, TopUp,
    TopUpRequest, UsageReport,
};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use platform_billing::account::{self, BillingMode};
use platform_billing::payment::{self, SandboxProvider};
use platform_billing::{Decimal, Period, metering};
use shared_ids::OrgId;

/// The most one top-up or spend limit may be, in minor units ($10M).
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000;
/// The longest range `GET …/billing/usage` reads.
const MAX_USAGE_DAYS: i64 = 93;
/// How long the sandbox provider's `pm_sandbox_slow_confirm` stays pending.
const SANDBOX_CONFIRM_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Exact minor units for display, rounded by billing's one rule (`invoice::round_minor`),
/// saturating where they leave 64 bits.
pub fn round_minor(exact: Decimal) -> i64 {
    platform_billing::invoice::round_minor(exact).unwrap_or(if exact.is_sign_negative() {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// A new org's billing account: prepaid, with the configured trial credit, so it can launch at
/// once (sign-up and operator-created orgs).
pub async fn open_account(state: &AppState, org: OrgId) -> ApiResult<()> {
    let credit = state.config.auth.trial_credit_minor;
    account::ensure(&state.pool, org, BillingMode::Prepaid, credit).await?;
    Ok(())
}

/// The org a billing route acts in: the middleware's (a member), else the path's (finance).
pub(super) fn org_of(caller: &Caller, path: &str) -> ApiResult<OrgId> {
    match caller.ctx.org {
        Some(org) => Ok(org),
        None => path
            .parse()
            .map_err(|_| platform_iam::orgs::org_not_found(path).into()),
    }
}

/// The payment provider: the sandbox (a Stripe adapter would be chosen here by configuration).
fn provider(state: &AppState) -> SandboxProvider {
    SandboxProvider {
        pool: state.pool.clone(),
        confirm_after: SANDBOX_CONFIRM_AFTER,
    }
}

async fn balance(state: &AppState, org: OrgId) -> ApiResult<BillingAccount> {
    Ok(convert::balance(account::balance(&state.pool, org).await?))
}

/// `GET /v1/orgs/{org}/billing`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<BillingAccount>> {
    Ok(Json(balance(&state, org_of(&caller, &org)?).await?))
}

#[derive(serde::Deserialize)]
pub struct UsageParams {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /v1/orgs/{org}/billing/usage?from=&to=`: per UTC day, meter and SKU; default the current
/// month up to now.
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> ApiResult<Json<UsageReport>> {
    let org = org_of(&caller, &org)?;
    let (from, to) = usage_range(&params)?;
    let days = metering::daily(&state.pool, org, from, to).await?;
    Ok(Json(UsageReport {
        from,
        to,
        items: days.into_iter().map(convert::daily_usage).collect(),
    }))
}

fn usage_range(params: &UsageParams) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
    let now = Utc::now();
    let from = match &params.from {
        Some(t) => parse_time("from", t)?,
        None => Period::month_of(now).start,
    };
    let to = match &params.to {
        Some(t) => parse_time("to", t)?,
        None => now,
    };
    if to <= from || to - from > chrono::Duration::days(MAX_USAGE_DAYS) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_period",
            format!("`to` must be after `from`, at most {MAX_USAGE_DAYS} days later"),
        ));
    }
    Ok((from, to))
}

/// An RFC 3339 time, or a date (midnight UTC).
fn parse_time(name: &str, text: &str) -> ApiResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("`{name}` is neither an RFC 3339 time nor a YYYY-MM-DD date"),
            )
        })
}

/// `GET /v1/orgs/{org}/billing/usage/live`: the current month, rated up to now.
pub async fn live(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<LiveUsage>> {
    let org = org_of(&caller, &org)?;
    let period = Period::month_of(Utc::now());
    let rated = metering::rate(&state.pool, org, period, None).await?;
    Ok(Json(convert::live_usage(period, rated)))
}

/// `PUT /v1/orgs/{org}/billing/spend-limit`: `null` removes it.
pub async fn set_spend_limit(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<SetSpendLimitRequest>,
) -> ApiResult<Json<BillingAccount>> {
    if let Some(limit) = req.monthly_spend_limit_minor {
        check_amount("monthly_spend_limit_minor", limit, 0)?;
    }
    let org = caller.org();
    account::set_spend_limit(&state.pool, org, req.monthly_spend_limit_minor).await?;
    Ok(Json(balance(&state, org).await?))
}

fn check_amount(name: &str, amount: i64, min: i64) -> ApiResult<()> {
    if (min..=MAX_AMOUNT_MINOR).contains(&amount) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_amount",
        format!("`{name}` must be between {min} and {MAX_AMOUNT_MINOR} minor units"),
    ))
}

/// The key that makes a charge happen once: the header, else the body's.
fn charge_key(header: IdempotencyKey, body: Option<String>) -> ApiResult<String> {
    header.0.or(body).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_idempotency_key",
            "a charge needs an Idempotency-Key header (or `idempotency_key`), so a retry charges once",
        )
    })
}

/// `POST /v1/orgs/{org}/billing/top-ups`: charges the method, credits the account.
pub async fn top_up(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<TopUpRequest>,
) -> ApiResult<Json<TopUp>> {
    check_amount("amount_minor", req.amount_minor, 1)?;
    let key = charge_key(key, req.idempotency_key)?;
    let (org, provider) = (caller.org(), provider(&state));
    let key = format!("{org}/{key}");
    let result = payment::top_up(
        &state.pool,
        &provider,
        org,
        req.amount_minor,
        req.payment_method_id,
        &key,
    )
    .await?;
    Ok(Json(TopUp {
        outcome: convert::payment_outcome(result),
        billing: balance(&state, org).await?,
    }))
}

/// `POST /v1/orgs/{org}/billing/payments`: pays every unpaid invoice now; a success clears
/// delinquency.
pub async fn pay(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<PayRequest>,
) -> ApiResult<Json<Payments>> {
    let key = charge_key(key, req.idempotency_key)?;
    let (org, provider) = (caller.org(), provider(&state));
    let key = format!("{org}/{key}");
    let method = req.payment_method_id;
    let results = payment::pay_unpaid(&state.pool, &provider, org, method, &key).await?;
    Ok(Json(Payments {
        items: results.into_iter().map(convert::invoice_payment).collect(),
        billing: balance(&state, org).await?,
    }))
}

/// `PUT /v1/orgs/{org}/billing/mode` (finance).
pub async fn set_mode(
    State(state): State<AppState>,
    Path(org): Path<String>,
    ApiJson(req): ApiJson<SetBillingModeRequest>,
) -> ApiResult<Json<BillingAccount>> {
    let org = path_org(&state, &org).await?;
    let mode = match req.mode.as_str() {
        "prepaid" => BillingMode::Prepaid,
        "postpaid" => BillingMode::Postpaid,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_billing_mode",
                "mode is prepaid or postpaid",
            ));
        }
    };
    account::set_mode(&state.pool, org, mode).await?;
    Ok(Json(balance(&state, org).await?))
}

/// The `{org}` of a platform route: an org that exists.
async fn path_org(state: &AppState, org: &str) -> ApiResult<OrgId> {
    let id: OrgId = org
        .parse()
        .map_err(|_| platform_iam::orgs::org_not_found(org))?;
    platform_iam::orgs::get(&state.pool, id).await?;
    Ok(id)
}

/// `GET /v1/orgs/{org}/payment-methods`.
pub async fn methods(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<List<PaymentMethod>>> {
    let org = org_of(&caller, &org)?;
    let methods = payment::methods(&state.pool, org).await?;
    Ok(Json(List {
        items: methods.into_iter().map(convert::payment_method).collect(),
    }))
}

/// `POST /v1/orgs/{org}/payment-methods`: a token the provider accepts.
pub async fn add_method(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<AddPaymentMethodRequest>,
) -> ApiResult<(StatusCode, Json<PaymentMethod>)> {
    let label = req.label.as_deref().unwrap_or("card");
    let default = req.make_default.unwrap_or(false);
    let provider = provider(&state);
    let method = payment::add_method(
        &state.pool,
        &provider,
        caller.org(),
        &req.token,
        label,
        default,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(convert::payment_method(method))))
}

/// `POST /v1/orgs/{org}/metering-runs` (finance): rates the period again and answers what
/// changed (nothing, for a rerun with unchanged usage and prices).
pub async fn rerun(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
    ApiJson(req): ApiJson<MeteringRunRequest>,
) -> ApiResult<Json<MeteringRunOutcome>> {
    let org = path_org(&state, &org).await?;
    let period = Period::parse(&req.period)?;
    let by = caller.ctx.principal.label();
    let outcome = run_metering(&state, org, period, req.price_version, &by).await?;
    Ok(Json(convert::metering_run(outcome)))
}

/// The one place the API runs metering: through the `MeteringRun` workflow (its id derived from
/// the org and period), so a finance rerun and the billing cycle's runs serialize in Temporal and
/// every rerun is findable in its UI.
async fn run_metering(
    state: &AppState,
    org: OrgId,
    period: Period,
    price_version: Option<i32>,
    by: &str,
) -> ApiResult<metering::RunOutcome> {
    let input = workflows::billing::MeteringRunInput {
        org,
        period,
        price_version,
        by: by.to_string(),
    };
    // Rated first without writing: what the run would refuse (an unpriced meter, an unknown
    // price version) is the caller's problem+json, not a failed workflow.
    metering::rate(&state.pool, org, period, price_version).await?;
    let queue = &state.config.billing_task_queue;
    workflows::billing::metering_run::run(&state.temporal, queue, input)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, %org, %period, "metering run failed");
            ApiError::unavailable(
                "the metering run did not complete; retry (a rerun writes only differences)",
            )
        })
}
