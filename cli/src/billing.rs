//! `gpuaas billing …`: an org's balance, usage (per day, and the current month rated live), its
//! invoices, top-ups, spend limit, payment methods and paying now; metering reruns (finance).

use crate::Ctx;
use crate::client::{ApiClient, CliError, Req, seg};
use crate::output;
use crate::platform::{org_id, resolve_org};
use api_types::billing::{
    AddPaymentMethodRequest, BillingAccount, Invoice, LiveUsage, MeteringRunOutcome,
    MeteringRunRequest, PayRequest, PaymentMethod, Payments, SetSpendLimitRequest, TopUp,
    TopUpRequest, UsageReport,
};
use api_types::{List, Page};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BillingVerb {
    /// The org's balance: credit, unbilled usage, what may still be spent, standing.
    Balance {
        /// The org (id or name; default: the profile's, else your default project's).
        #[arg(long)]
        org: Option<String>,
    },
    /// Usage per day, meter and SKU.
    Usage {
        #[arg(long)]
        org: Option<String>,
        /// Start: an RFC 3339 time or YYYY-MM-DD (default: the start of this month).
        #[arg(long)]
        from: Option<String>,
        /// End: an RFC 3339 time or YYYY-MM-DD (default: now).
        #[arg(long)]
        to: Option<String>,
    },
    /// This month's usage, rated up to now.
    Live {
        #[arg(long)]
        org: Option<String>,
    },
    /// The org's invoices, newest first.
    Invoices {
        #[arg(long)]
        org: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One invoice.
    Invoice {
        #[command(subcommand)]
        verb: InvoiceVerb,
    },
    /// Rate a period again and show what changed (finance).
    Rerun {
        /// The org's id.
        #[arg(long)]
        org: String,
        /// `YYYY-MM`, or `START-END` as `YYYYMMDDTHHMMSSZ`.
        #[arg(long)]
        period: String,
        /// The price book version (default: the one in effect at the period's start).
        #[arg(long)]
        price_version: Option<i32>,
    },
    /// Top up prepaid credit with a payment method.
    Topup {
        /// Minor units (cents): 2500 is 25.00.
        #[arg(long)]
        amount: i64,
        /// The payment method's id (see `gpuaas billing methods list`).
        #[arg(long)]
        method: uuid::Uuid,
        /// Makes a retry charge once (default: a new key).
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        org: Option<String>,
    },
    /// The monthly spend limit.
    Limit {
        #[command(subcommand)]
        verb: LimitVerb,
    },
    /// Pay every unpaid invoice now (clears delinquency).
    Pay {
        /// Default: the org's default payment method.
        #[arg(long)]
        method: Option<uuid::Uuid>,
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        org: Option<String>,
    },
    /// Payment methods.
    Methods {
        #[command(subcommand)]
        verb: MethodsVerb,
    },
}

#[derive(Subcommand)]
pub enum InvoiceVerb {
    /// An invoice with its lines.
    Get {
        id: String,
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum LimitVerb {
    /// Set the limit in minor units (cents), or `none` to remove it.
    Set {
        amount: String,
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum MethodsVerb {
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Add a payment method by the provider's token (sandbox: `pm_sandbox_success`, …).
    Add {
        /// The provider's payment method token (positional: `--token` is the credential).
        #[arg(value_name = "PAYMENT_TOKEN")]
        payment_token: String,
        #[arg(long)]
        label: Option<String>,
        /// Make it the default (the first method always is).
        #[arg(long)]
        default: bool,
        #[arg(long)]
        org: Option<String>,
    },
}

fn path(org: &str, rest: &str) -> String {
    format!("/v1/orgs/{}{rest}", seg(org))
}

fn new_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub async fn billing(ctx: &Ctx, verb: BillingVerb) -> Result<(), CliError> {
    let api = &ctx.client()?;
    let format = ctx.format;
    match verb {
        BillingVerb::Balance { org } => {
            let org = resolve_org(ctx, api, org).await?;
            let account: BillingAccount = api.send(Req::get(path(&org, "/billing"))).await?;
            output::print_billing(format, &account);
        }
        BillingVerb::Usage { org, from, to } => {
            let org = resolve_org(ctx, api, org).await?;
            let req = Req::get(path(&org, "/billing/usage"))
                .query_opt("from", from)
                .query_opt("to", to);
            output::print_usage(format, &api.send::<UsageReport>(req).await?);
        }
        BillingVerb::Live { org } => {
            let org = resolve_org(ctx, api, org).await?;
            let live: LiveUsage = api
                .send(Req::get(path(&org, "/billing/usage/live")))
                .await?;
            output::print_live_usage(format, &live);
        }
        BillingVerb::Invoices { org, limit } => {
            let org = resolve_org(ctx, api, org).await?;
            let req = Req::get(path(&org, "/invoices")).query("limit", limit);
            let page: Page<Invoice> = api.send(req).await?;
            output::print_invoices(format, &page.items);
        }
        BillingVerb::Invoice {
            verb: InvoiceVerb::Get { id, org },
        } => {
            let org = resolve_org(ctx, api, org).await?;
            let invoice: Invoice = api
                .send(Req::get(path(&org, &format!("/invoices/{}", seg(&id)))))
                .await?;
            output::print_invoice(format, &invoice);
        }
        other => return pay_or_manage(ctx, api, other).await,
    }
    Ok(())
}

/// The verbs that change something.
async fn pay_or_manage(ctx: &Ctx, api: &ApiClient, verb: BillingVerb) -> Result<(), CliError> {
    let format = ctx.format;
    match verb {
        BillingVerb::Rerun {
            org,
            period,
            price_version,
        } => {
            let org = org_id(api, &org).await?;
            let body = MeteringRunRequest {
                period,
                price_version,
            };
            let run: MeteringRunOutcome = api
                .send(Req::post(path(&org, "/metering-runs")).json(&body))
                .await?;
            output::print_metering_run(format, &run);
        }
        BillingVerb::Topup {
            amount,
            method,
            idempotency_key,
            org,
        } => {
            let org = resolve_org(ctx, api, org).await?;
            let body = TopUpRequest {
                amount_minor: amount,
                payment_method_id: method,
                idempotency_key: None,
            };
            let key = idempotency_key.unwrap_or_else(new_key);
            let req = Req::post(path(&org, "/billing/top-ups"))
                .header("idempotency-key", key)
                .json(&body);
            let topup: TopUp = api.send(req).await?;
            output::print_top_up(format, &topup);
        }
        BillingVerb::Limit {
            verb: LimitVerb::Set { amount, org },
        } => {
            let org = resolve_org(ctx, api, org).await?;
            let limit = match amount.as_str() {
                "none" | "off" => None,
                n => Some(n.parse::<i64>().map_err(|_| {
                    CliError::Usage(format!("`{n}` is not an amount in minor units (or `none`)"))
                })?),
            };
            let body = SetSpendLimitRequest {
                monthly_spend_limit_minor: limit,
            };
            let account: BillingAccount = api
                .send(Req::put(path(&org, "/billing/spend-limit")).json(&body))
                .await?;
            output::print_billing(format, &account);
        }
        other => return pay_or_methods(ctx, api, other).await,
    }
    Ok(())
}

async fn pay_or_methods(ctx: &Ctx, api: &ApiClient, verb: BillingVerb) -> Result<(), CliError> {
    let format = ctx.format;
    match verb {
        BillingVerb::Pay {
            method,
            idempotency_key,
            org,
        } => {
            let org = resolve_org(ctx, api, org).await?;
            let body = PayRequest {
                payment_method_id: method,
                idempotency_key: None,
            };
            let req = Req::post(path(&org, "/billing/payments"))
                .header("idempotency-key", idempotency_key.unwrap_or_else(new_key))
                .json(&body);
            output::print_payments(format, &api.send::<Payments>(req).await?);
        }
        BillingVerb::Methods {
            verb: MethodsVerb::List { org },
        } => {
            let org = resolve_org(ctx, api, org).await?;
            let methods: List<PaymentMethod> =
                api.send(Req::get(path(&org, "/payment-methods"))).await?;
            output::print_payment_methods(format, &methods.items);
        }
        BillingVerb::Methods {
            verb:
                MethodsVerb::Add {
                    payment_token,
                    label,
                    default,
                    org,
                },
        } => {
            let org = resolve_org(ctx, api, org).await?;
            let body = AddPaymentMethodRequest {
                token: payment_token,
                label,
                make_default: default.then_some(true),
            };
            let method: PaymentMethod = api
                .send(Req::post(path(&org, "/payment-methods")).json(&body))
                .await?;
            output::print_payment_method(format, &method);
        }
        _ => unreachable!("billing() and pay_or_manage() handle the other verbs"),
    }
    Ok(())
}

/// `1234` minor units as `12.34 USD`.
pub fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", abs / 100, abs % 100)
}
