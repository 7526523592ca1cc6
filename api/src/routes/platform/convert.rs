//! Domain objects of the platform domains → wire types.

use api_types::platform as wire;
use platform_iam::api_keys::{ApiKey, KeyOwner};
use platform_iam::{members, orgs, service_accounts, users};

pub fn user(u: users::User) -> wire::User {
    wire::User {
        id: u.id,
        email: u.email,
        platform_role: u.platform_role.map(|r| r.as_str().to_string()),
        created_at: u.created_at,
    }
}

pub fn org(o: orgs::Org) -> wire::Org {
    wire::Org {
        id: o.id,
        name: o.name,
        created_at: o.created_at,
    }
}

pub fn project(p: orgs::Project) -> wire::Project {
    wire::Project {
        id: p.id,
        org_id: p.org_id,
        name: p.name,
        is_default: p.is_default,
        created_at: p.created_at,
    }
}

pub fn member(m: members::Member) -> wire::Member {
    wire::Member {
        user_id: m.user_id,
        email: m.email,
        role: m.role.as_str().to_string(),
        joined_at: m.joined_at,
    }
}

pub fn project_member(m: members::ProjectMember) -> wire::ProjectMember {
    wire::ProjectMember {
        user_id: m.user_id,
        email: m.email,
        role: m.role.as_str().to_string(),
        joined_at: m.joined_at,
    }
}

pub fn invitation(i: members::Invitation) -> wire::Invitation {
    wire::Invitation {
        id: i.id,
        org_id: i.org_id,
        email: i.email,
        role: i.role.as_str().to_string(),
        created_at: i.created_at,
        expires_at: i.expires_at,
        accepted_at: i.accepted_at,
    }
}

pub fn service_account(s: service_accounts::ServiceAccount) -> wire::ServiceAccount {
    wire::ServiceAccount {
        id: s.id,
        project_id: s.project_id,
        name: s.name,
        role: s.role.as_str().to_string(),
        created_at: s.created_at,
    }
}

pub fn api_key(k: ApiKey) -> wire::ApiKey {
    let (owner_kind, owner_id) = match k.owner {
        KeyOwner::User(id) => ("user", id),
        KeyOwner::ServiceAccount(id) => ("service_account", id),
    };
    wire::ApiKey {
        id: k.id,
        prefix: k.prefix,
        name: k.name,
        owner_kind: owner_kind.to_string(),
        owner_id,
        org_id: k.org_id,
        project_id: k.project_id,
        scopes: k
            .scopes
            .map(|s| s.into_iter().map(|p| p.as_str().to_string()).collect()),
        created_at: k.created_at,
        expires_at: k.expires_at,
        last_used_at: k.last_used_at,
        revoked_at: k.revoked_at,
    }
}

pub fn audit_event(e: platform_audit::AuditEvent) -> wire::AuditEvent {
    wire::AuditEvent {
        seq: e.seq,
        chain: e.chain.to_string(),
        chain_seq: e.chain_seq,
        at: e.at,
        actor: e.actor,
        actor_name: e.actor_name,
        actor_kind: e.actor_kind,
        auth_method: e.auth_method,
        credential_id: e.credential_id,
        org_id: e.org_id,
        project_id: e.project_id,
        action: e.action,
        resource: e.resource,
        outcome: match e.outcome {
            platform_audit::Outcome::Success => "success".into(),
            platform_audit::Outcome::Failure => "failure".into(),
        },
        status: e.status,
        error_code: e.error_code,
        request_id: e.request_id,
        source_ip: e.source_ip,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

pub fn anchor(a: platform_audit::Anchor) -> wire::AuditAnchor {
    wire::AuditAnchor {
        chain: a.chain.to_string(),
        chain_seq: a.chain_seq,
        hash: a.hash,
        at: a.at,
        key_id: a.key_id,
        signature: a.signature,
    }
}

pub fn role(name: &str) -> Result<platform_iam::Role, crate::problem::ApiError> {
    platform_iam::Role::parse(name).ok_or_else(|| {
        crate::problem::ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_role",
            "role is owner, admin, member or viewer",
        )
    })
}

// Billing. Exact amounts and quantities travel as decimal strings (normalized: no trailing
// zeros); rounded ones as integers of minor units.

use super::billing::round_minor;
use api_types::billing as bill;
use platform_billing::account::{BillingMode, Standing};
use platform_billing::invoice::{InvoiceKind, InvoiceState};
use platform_billing::payment::AttemptResult;
use platform_billing::{Decimal, Period, account, invoice, metering, payment, price_book};

fn exact(d: Decimal) -> String {
    d.normalize().to_string()
}

pub fn billing_mode(m: BillingMode) -> &'static str {
    match m {
        BillingMode::Prepaid => "prepaid",
        BillingMode::Postpaid => "postpaid",
    }
}

pub fn standing(s: Standing) -> &'static str {
    match s {
        Standing::Good => "good",
        Standing::CreditExhausted => "credit_exhausted",
        Standing::SpendLimitReached => "spend_limit_reached",
        Standing::Delinquent => "delinquent",
    }
}

pub fn balance(b: account::Balance) -> bill::BillingAccount {
    bill::BillingAccount {
        org_id: b.org,
        mode: billing_mode(b.mode).into(),
        currency: b.currency,
        credit_minor: b.credit_minor,
        unbilled_minor: b.unbilled_minor,
        available_minor: b.available_minor,
        spent_this_month_minor: b.spent_this_month_minor,
        monthly_spend_limit_minor: b.monthly_spend_limit_minor,
        receivable_minor: b.receivable_minor,
        standing: standing(b.standing).into(),
    }
}

pub fn daily_usage(d: metering::DailyUsage) -> bill::DailyUsage {
    bill::DailyUsage {
        day: d.day,
        meter: d.meter,
        sku: d.sku,
        quantity: exact(d.quantity),
    }
}

pub fn live_usage(period: Period, rated: Vec<metering::RatedUsage>) -> bill::LiveUsage {
    let total: Decimal = rated.iter().map(|r| r.amount_exact).sum();
    let currency = rated
        .first()
        .map_or("USD".to_string(), |r| r.currency.clone());
    bill::LiveUsage {
        period: period.label(),
        period_start: period.start,
        period_end: period.end,
        currency,
        total_minor: round_minor(total),
        total_exact_minor: exact(total),
        items: rated.into_iter().map(rated_usage).collect(),
    }
}

fn rated_usage(r: metering::RatedUsage) -> bill::RatedUsage {
    bill::RatedUsage {
        amount_minor: round_minor(r.amount_exact),
        amount_exact_minor: exact(r.amount_exact),
        meter: r.meter,
        sku: r.sku,
        quantity: exact(r.quantity),
        unit_label: r.unit_label,
        price_version: r.price_version,
        currency: r.currency,
    }
}

pub fn payment_outcome(r: AttemptResult) -> bill::PaymentOutcome {
    let (result, reason) = match r {
        AttemptResult::Paid => ("paid", None),
        AttemptResult::Pending => ("pending", None),
        AttemptResult::RetryLater { reason } => ("retry_later", Some(reason)),
        AttemptResult::Stop { reason } => ("declined", Some(reason)),
    };
    bill::PaymentOutcome {
        result: result.into(),
        reason,
    }
}

pub fn invoice_payment(
    (id, result): (shared_ids::InvoiceId, AttemptResult),
) -> bill::InvoicePayment {
    bill::InvoicePayment {
        invoice_id: id,
        outcome: payment_outcome(result),
    }
}

pub fn payment_method(m: payment::PaymentMethod) -> bill::PaymentMethod {
    bill::PaymentMethod {
        id: m.id,
        org_id: m.org,
        provider: m.provider,
        label: m.label,
        is_default: m.is_default,
        created_at: m.created_at,
    }
}

pub fn invoice_kind(k: InvoiceKind) -> &'static str {
    match k {
        InvoiceKind::Invoice => "invoice",
        InvoiceKind::Adjusting => "adjusting",
        InvoiceKind::CreditNote => "credit_note",
    }
}

pub fn invoice_state(s: InvoiceState) -> &'static str {
    match s {
        InvoiceState::Draft => "draft",
        InvoiceState::Open => "open",
        InvoiceState::Paid => "paid",
        InvoiceState::Void => "void",
        InvoiceState::Uncollectible => "uncollectible",
    }
}

pub fn invoice(i: invoice::Invoice) -> bill::Invoice {
    bill::Invoice {
        id: i.id,
        org_id: i.org,
        period: i.period.label(),
        period_start: i.period.start,
        period_end: i.period.end,
        kind: invoice_kind(i.kind).into(),
        corrects: i.corrects,
        state: invoice_state(i.state).into(),
        currency: i.currency,
        total_minor: i.total_minor,
        credit_applied_minor: i.credit_applied_minor,
        amount_due_minor: i.amount_due_minor,
        created_at: i.created_at,
        finalized_at: i.finalized_at,
        paid_at: i.paid_at,
        lines: i.lines.into_iter().map(invoice_line).collect(),
    }
}

fn invoice_line(l: invoice::InvoiceLine) -> bill::InvoiceLine {
    bill::InvoiceLine {
        line_no: l.line_no,
        meter: l.meter,
        sku: l.sku,
        price_version: l.price_version,
        description: l.description,
        quantity: exact(l.quantity),
        amount_exact_minor: exact(l.amount_exact),
        amount_minor: l.amount_minor,
    }
}

pub fn metering_run(o: metering::RunOutcome) -> bill::MeteringRunOutcome {
    bill::MeteringRunOutcome {
        org_id: o.org,
        period: o.period.label(),
        price_version: o.price_version,
        run_id: o.run_id,
        changes: o.changes.into_iter().map(line_change).collect(),
        total_before_exact_minor: exact(o.total_before),
        total_after_exact_minor: exact(o.total_after),
    }
}

fn line_change(c: metering::LineChange) -> bill::LineChange {
    bill::LineChange {
        line_id: c.line_id,
        kind: c.kind,
        meter: c.meter,
        sku: c.sku,
        price_version: c.price_version,
        quantity_before: exact(c.quantity_before),
        quantity_after: exact(c.quantity_after),
        amount_before_exact_minor: exact(c.amount_before),
        amount_after_exact_minor: exact(c.amount_after),
    }
}

pub fn price_book(b: price_book::PriceBook) -> bill::PriceBookVersion {
    bill::PriceBookVersion {
        version: b.version,
        effective_from: b.effective_from,
        note: b.note,
        created_by: b.created_by,
        created_at: b.created_at,
        prices: b
            .prices
            .into_iter()
            .map(|p| bill::Price {
                meter: p.meter,
                sku: p.sku,
                unit_price_minor: exact(p.unit_price_minor),
                per_units: p.per_units,
                unit_label: p.unit_label,
                currency: p.currency,
            })
            .collect(),
    }
}

/// A version as finance writes it; a unit price that is no decimal number is `invalid_price`
/// (the domain checks the rest).
pub fn new_price_book(
    v: bill::NewPriceBookVersion,
) -> Result<price_book::NewPriceBook, crate::problem::ApiError> {
    Ok(price_book::NewPriceBook {
        effective_from: v.effective_from,
        note: v.note,
        prices: v
            .prices
            .into_iter()
            .map(new_price)
            .collect::<Result<_, _>>()?,
    })
}

fn new_price(p: bill::Price) -> Result<price_book::Price, crate::problem::ApiError> {
    let unit_price_minor = p.unit_price_minor.parse::<Decimal>().map_err(|_| {
        crate::problem::ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_price",
            "`unit_price_minor` must be a decimal number",
        )
    })?;
    Ok(price_book::Price {
        meter: p.meter,
        sku: p.sku,
        unit_price_minor,
        per_units: p.per_units,
        unit_label: p.unit_label,
        currency: p.currency,
    })
}
