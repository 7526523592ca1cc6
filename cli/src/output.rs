//! Tables for people, JSON for scripts.

use crate::config::Config;
use api_types::gpuaas::{Instance, Node, NodeEvent, NodeSummary, Sku};
use api_types::platform::{
    ApiKey, AuditEvent, AuditVerifyReport, CreateOrgResponse, CreatedApiKey, CreatedInvitation,
    Invitation, JoinToken, Me, Member, Org, Project, Quota, ServiceAccount,
};
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Clone, Copy)]
pub enum Format {
    Table,
    Json,
}

pub fn json<T: Serialize + ?Sized>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("API types serialise")
    );
}

/// Prints rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

pub fn print_skus(format: Format, skus: &[Sku]) {
    if let Format::Json = format {
        return json(skus);
    }
    table(
        &[
            "SKU",
            "GPU",
            "MEMORY",
            "FORM",
            "GPUS/INSTANCE",
            "PRICE/GPU-HOUR",
            "AVAILABLE NOW",
        ],
        skus.iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.display_name.clone(),
                    format!("{} GiB", s.memory_gib),
                    s.form_factor.clone(),
                    s.allowed_gpu_counts
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    format!(
                        "{}.{:02} {}",
                        s.price_per_gpu_hour_minor / 100,
                        s.price_per_gpu_hour_minor % 100,
                        s.currency
                    ),
                    format!(
                        "{} GPUs (≤{} per instance)",
                        s.available_gpus, s.max_gpus_now
                    ),
                ]
            })
            .collect(),
    );
}

/// Nodes with their GPUs (`node get`, `cordon`, ...): JSON in full, the table as a list shows it.
pub fn print_nodes(format: Format, nodes: &[Node]) {
    if let Format::Json = format {
        return json(nodes);
    }
    let summaries: Vec<NodeSummary> = nodes.iter().map(Node::summary).collect();
    print_node_list(format, &summaries);
}

/// `node list`: GPUs counted, not listed.
pub fn print_node_list(format: Format, nodes: &[NodeSummary]) {
    if let Format::Json = format {
        return json(nodes);
    }
    table(
        &["ID", "NAME", "STATE", "GPU", "FREE/TOTAL", "DISCOVERY"],
        nodes
            .iter()
            .map(|n| {
                let mut state = match &n.cordon_reason {
                    Some(why) if n.state == "cordoned" => format!("cordoned ({why})"),
                    _ => n.state.clone(),
                };
                if n.unhealthy_gpus > 0 {
                    state.push_str(&format!(", {} GPU(s) unhealthy", n.unhealthy_gpus));
                }
                vec![
                    n.id.to_string(),
                    n.name.clone(),
                    state,
                    n.gpu_model.clone().unwrap_or_default(),
                    format!("{}/{}", n.free_gpus, n.gpu_count),
                    n.discovery.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
}

pub fn print_node_events(format: Format, events: &[NodeEvent]) {
    if let Format::Json = format {
        return json(events);
    }
    table(
        &["AT", "KIND", "ACTOR", "MESSAGE"],
        events
            .iter()
            .map(|e| {
                vec![
                    e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    e.kind.clone(),
                    e.actor.clone(),
                    e.message.clone(),
                ]
            })
            .collect(),
    );
}

pub fn print_instances(format: Format, instances: &[Instance]) {
    if let Format::Json = format {
        return json(instances);
    }
    table(
        &[
            "ID", "NAME", "SKU", "GPUS", "STATE", "STEP", "NODE", "CREATED",
        ],
        instances
            .iter()
            .map(|i| {
                vec![
                    i.id.to_string(),
                    i.name.clone(),
                    i.sku.clone(),
                    i.gpu_count.to_string(),
                    match &i.failure_reason {
                        Some(r) => format!("{} ({r})", i.state),
                        None => i.state.clone(),
                    },
                    i.current_step.clone(),
                    i.node_id
                        .map(|n| n.to_string()[..8].to_string())
                        .unwrap_or_else(|| "-".into()),
                    i.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]
            })
            .collect(),
    );
}

pub fn print_instance(format: Format, i: &Instance) {
    if let Format::Json = format {
        return json(i);
    }
    let fields = [
        ("id", i.id.to_string()),
        ("name", i.name.clone()),
        ("state", i.state.clone()),
        (
            "failure_reason",
            i.failure_reason.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "status",
            i.status_message.clone().unwrap_or_else(|| "-".into()),
        ),
        ("step", i.current_step.clone()),
        ("sku", format!("{} x{}", i.sku, i.gpu_count)),
        (
            "node",
            i.node_id
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("gpus", format!("{:?}", i.gpu_indices)),
        ("command", i.command.clone()),
        ("workflow", i.workflow_id.clone()),
        ("created", i.created_at.to_rfc3339()),
        (
            "cost so far",
            match (i.cost_so_far_minor, &i.cost_exact_minor) {
                (Some(minor), Some(exact)) => {
                    format!("{} ({exact} exact)", crate::billing::money(minor, "USD"))
                }
                _ => "-".into(),
            },
        ),
    ];
    for (k, v) in fields {
        println!("{k:<15} {v}");
    }
}

fn ts(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn opt_ts(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(ts).unwrap_or_else(|| "-".into())
}

fn or_dash(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into())
}

/// `key  value` lines, the keys aligned.
fn fields(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}

pub fn print_profiles(format: Format, config: &Config) {
    let current = config.current.as_deref();
    if let Format::Json = format {
        let items: Vec<serde_json::Value> = config
            .profiles
            .iter()
            .map(|(name, p)| {
                serde_json::json!({
                    "name": name,
                    "current": Some(name.as_str()) == current,
                    "api_url": p.api_url,
                    "credential": p.credential_kind(),
                    "access_expires_at": p.access_expires_at,
                    "project": p.project,
                    "org": p.org,
                })
            })
            .collect();
        return json(&items);
    }
    table(
        &["", "NAME", "API URL", "CREDENTIAL", "PROJECT", "ORG"],
        config
            .profiles
            .iter()
            .map(|(name, p)| {
                vec![
                    if Some(name.as_str()) == current {
                        "*"
                    } else {
                        ""
                    }
                    .to_string(),
                    name.clone(),
                    or_dash(p.api_url.clone()),
                    p.credential_kind().to_string(),
                    or_dash(p.project.clone()),
                    or_dash(p.org.clone()),
                ]
            })
            .collect(),
    );
}

pub fn print_me(format: Format, profile: Option<&str>, me: &Me) {
    if let Format::Json = format {
        return json(me);
    }
    let memberships: Vec<String> = me
        .memberships
        .iter()
        .map(|m| match &m.project_id {
            Some(p) => format!("{} in project {p} (org {})", m.role, m.org_id),
            None => format!("{} of org {}", m.role, m.org_id),
        })
        .collect();
    fields(&[
        ("profile", or_dash(profile.map(String::from))),
        ("kind", me.kind.clone()),
        ("id", me.id.to_string()),
        ("name", me.name.clone()),
        ("platform_role", or_dash(me.platform_role.clone())),
        ("auth_method", me.auth_method.clone()),
        (
            "default_project",
            or_dash(me.default_project_id.map(|p| p.to_string())),
        ),
        (
            "memberships",
            if memberships.is_empty() {
                "-".into()
            } else {
                memberships.join("; ")
            },
        ),
    ]);
}

pub fn print_orgs(format: Format, orgs: &[Org]) {
    if let Format::Json = format {
        return json(orgs);
    }
    table(
        &["ID", "NAME", "CREATED"],
        orgs.iter()
            .map(|o| vec![o.id.to_string(), o.name.clone(), ts(&o.created_at)])
            .collect(),
    );
}

pub fn print_created_org(format: Format, created: &CreateOrgResponse) {
    if let Format::Json = format {
        return json(created);
    }
    fields(&[
        ("org", format!("{} ({})", created.org.id, created.org.name)),
        (
            "project",
            format!("{} ({})", created.project.id, created.project.name),
        ),
        (
            "owner_invited",
            format!(
                "{} (expires {})",
                created.invitation.invitation.email,
                ts(&created.invitation.invitation.expires_at)
            ),
        ),
        ("invitation_token", created.invitation.token.clone()),
    ]);
}

pub fn print_projects(format: Format, projects: &[Project]) {
    if let Format::Json = format {
        return json(projects);
    }
    table(
        &["ID", "NAME", "ORG", "DEFAULT", "CREATED"],
        projects
            .iter()
            .map(|p| {
                vec![
                    p.id.to_string(),
                    p.name.clone(),
                    p.org_id.to_string(),
                    if p.is_default { "yes" } else { "" }.to_string(),
                    ts(&p.created_at),
                ]
            })
            .collect(),
    );
}

pub fn print_members(format: Format, members: &[Member]) {
    if let Format::Json = format {
        return json(members);
    }
    table(
        &["USER", "EMAIL", "ROLE", "JOINED"],
        members
            .iter()
            .map(|m| {
                vec![
                    m.user_id.to_string(),
                    m.email.clone(),
                    m.role.clone(),
                    ts(&m.joined_at),
                ]
            })
            .collect(),
    );
}

pub fn print_invitations(format: Format, invitations: &[Invitation]) {
    if let Format::Json = format {
        return json(invitations);
    }
    table(
        &["ID", "EMAIL", "ROLE", "CREATED", "EXPIRES", "ACCEPTED"],
        invitations
            .iter()
            .map(|i| {
                vec![
                    i.id.to_string(),
                    i.email.clone(),
                    i.role.clone(),
                    ts(&i.created_at),
                    ts(&i.expires_at),
                    opt_ts(&i.accepted_at),
                ]
            })
            .collect(),
    );
}

pub fn print_created_invitation(format: Format, created: &CreatedInvitation) {
    if let Format::Json = format {
        return json(created);
    }
    let i = &created.invitation;
    fields(&[
        ("id", i.id.to_string()),
        ("org", i.org_id.to_string()),
        ("email", i.email.clone()),
        ("role", i.role.clone()),
        ("expires", ts(&i.expires_at)),
        ("token", created.token.clone()),
    ]);
}

pub fn print_service_accounts(format: Format, accounts: &[ServiceAccount]) {
    if let Format::Json = format {
        return json(accounts);
    }
    table(
        &["ID", "NAME", "ROLE", "PROJECT", "CREATED"],
        accounts
            .iter()
            .map(|a| {
                vec![
                    a.id.to_string(),
                    a.name.clone(),
                    a.role.clone(),
                    a.project_id.to_string(),
                    ts(&a.created_at),
                ]
            })
            .collect(),
    );
}

fn key_state(k: &ApiKey) -> String {
    match (&k.revoked_at, &k.expires_at) {
        (Some(at), _) => format!("revoked {}", ts(at)),
        (None, Some(at)) if *at <= Utc::now() => format!("expired {}", ts(at)),
        _ => "active".into(),
    }
}

pub fn print_api_keys(format: Format, keys: &[ApiKey]) {
    if let Format::Json = format {
        return json(keys);
    }
    table(
        &[
            "ID",
            "PREFIX",
            "NAME",
            "OWNER",
            "PROJECT",
            "SCOPES",
            "EXPIRES",
            "LAST USED",
            "STATE",
        ],
        keys.iter()
            .map(|k| {
                vec![
                    k.id.to_string(),
                    k.prefix.clone(),
                    k.name.clone(),
                    k.owner_kind.clone(),
                    or_dash(k.project_id.map(|p| p.to_string())),
                    or_dash(k.scopes.as_ref().map(|s| s.join(","))),
                    opt_ts(&k.expires_at),
                    opt_ts(&k.last_used_at),
                    key_state(k),
                ]
            })
            .collect(),
    );
}

pub fn print_created_api_key(format: Format, created: &CreatedApiKey) {
    if let Format::Json = format {
        return json(created);
    }
    let k = &created.api_key;
    fields(&[
        ("id", k.id.to_string()),
        ("name", k.name.clone()),
        ("owner", format!("{} {}", k.owner_kind, k.owner_id)),
        ("org", k.org_id.to_string()),
        ("project", or_dash(k.project_id.map(|p| p.to_string()))),
        ("scopes", or_dash(k.scopes.as_ref().map(|s| s.join(",")))),
        ("expires", opt_ts(&k.expires_at)),
        ("key", created.key.clone()),
    ]);
}

pub fn print_join_token(format: Format, token: &JoinToken) {
    if let Format::Json = format {
        return json(token);
    }
    fields(&[
        ("id", token.id.to_string()),
        ("expires", ts(&token.expires_at)),
        ("token", token.token.clone()),
    ]);
}

pub fn print_quota(format: Format, quota: &Quota) {
    if let Format::Json = format {
        return json(quota);
    }
    fields(&[
        ("project", quota.project_id.to_string()),
        ("plan", quota.plan.clone()),
        (
            "entitled_skus",
            quota
                .entitled_skus
                .as_ref()
                .map(|s| s.join(","))
                .unwrap_or_else(|| "all".into()),
        ),
        (
            "max_concurrent_gpus",
            quota
                .max_concurrent_gpus
                .map(|n| n.to_string())
                .unwrap_or_else(|| "no limit".into()),
        ),
    ]);
}

pub fn print_audit_events(format: Format, events: &[AuditEvent]) {
    if let Format::Json = format {
        return json(events);
    }
    table(
        &["SEQ", "AT", "ACTOR", "ACTION", "RESOURCE", "OUTCOME"],
        events
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    ts(&e.at),
                    if e.actor_name.is_empty() {
                        e.actor.clone()
                    } else {
                        e.actor_name.clone()
                    },
                    e.action.clone(),
                    e.resource.clone(),
                    match &e.error_code {
                        Some(code) => format!("{} ({} {code})", e.outcome, e.status),
                        None => format!("{} ({})", e.outcome, e.status),
                    },
                ]
            })
            .collect(),
    );
}

pub fn print_verify_report(format: Format, report: &AuditVerifyReport) {
    if let Format::Json = format {
        return json(report);
    }
    println!(
        "{}: {} event(s) in {} chain(s) checked",
        if report.ok { "OK" } else { "TAMPERED" },
        report.events_checked,
        report.chains_checked
    );
    for problem in &report.problems {
        println!("  - {problem}");
    }
}

// Billing.

use crate::billing::money;
use api_types::billing::{
    BillingAccount, Invoice, LiveUsage, MeteringRunOutcome, PaymentMethod, Payments, TopUp,
    UsageReport,
};

pub fn print_billing(format: Format, b: &BillingAccount) {
    if let Format::Json = format {
        return json(b);
    }
    let c = &b.currency;
    fields(&[
        ("org", b.org_id.to_string()),
        ("mode", b.mode.clone()),
        ("standing", b.standing.clone()),
        ("credit", money(b.credit_minor, c)),
        ("unbilled", money(b.unbilled_minor, c)),
        ("available", money(b.available_minor, c)),
        ("spent this month", money(b.spent_this_month_minor, c)),
        (
            "spend limit",
            b.monthly_spend_limit_minor
                .map(|l| money(l, c))
                .unwrap_or_else(|| "none".into()),
        ),
        ("owed", money(b.receivable_minor, c)),
    ]);
}

pub fn print_usage(format: Format, u: &UsageReport) {
    if let Format::Json = format {
        return json(u);
    }
    table(
        &["DAY", "METER", "SKU", "QUANTITY"],
        u.items
            .iter()
            .map(|d| {
                vec![
                    d.day.to_string(),
                    d.meter.clone(),
                    or_dash(Some(d.sku.clone())),
                    d.quantity.clone(),
                ]
            })
            .collect(),
    );
}

pub fn print_live_usage(format: Format, l: &LiveUsage) {
    if let Format::Json = format {
        return json(l);
    }
    table(
        &["METER", "SKU", "QUANTITY", "PRICE", "AMOUNT", "EXACT"],
        l.items
            .iter()
            .map(|r| {
                vec![
                    r.meter.clone(),
                    or_dash(Some(r.sku.clone())),
                    r.quantity.clone(),
                    format!("v{} per {}", r.price_version, r.unit_label),
                    money(r.amount_minor, &r.currency),
                    r.amount_exact_minor.clone(),
                ]
            })
            .collect(),
    );
    println!(
        "period {}: {} ({} exact)",
        l.period,
        money(l.total_minor, &l.currency),
        l.total_exact_minor
    );
}

pub fn print_invoices(format: Format, invoices: &[Invoice]) {
    if let Format::Json = format {
        return json(invoices);
    }
    table(
        &["ID", "PERIOD", "KIND", "STATE", "TOTAL", "DUE", "CREATED"],
        invoices
            .iter()
            .map(|i| {
                vec![
                    i.id.to_string(),
                    i.period.clone(),
                    i.kind.clone(),
                    i.state.clone(),
                    money(i.total_minor, &i.currency),
                    money(i.amount_due_minor, &i.currency),
                    ts(&i.created_at),
                ]
            })
            .collect(),
    );
}

pub fn print_invoice(format: Format, i: &Invoice) {
    if let Format::Json = format {
        return json(i);
    }
    print_invoices(Format::Table, std::slice::from_ref(i));
    println!();
    table(
        &["#", "DESCRIPTION", "QUANTITY", "PRICE", "AMOUNT", "EXACT"],
        i.lines
            .iter()
            .map(|l| {
                vec![
                    l.line_no.to_string(),
                    l.description.clone(),
                    l.quantity.clone(),
                    format!("v{}", l.price_version),
                    money(l.amount_minor, &i.currency),
                    l.amount_exact_minor.clone(),
                ]
            })
            .collect(),
    );
}

pub fn print_metering_run(format: Format, r: &MeteringRunOutcome) {
    if let Format::Json = format {
        return json(r);
    }
    if r.changes.is_empty() {
        println!(
            "no changes: {} of org {} is rated as before (total {}, price v{})",
            r.period, r.org_id, r.total_after_exact_minor, r.price_version
        );
        return;
    }
    table(
        &[
            "KIND",
            "METER",
            "SKU",
            "QUANTITY",
            "AMOUNT BEFORE",
            "AMOUNT AFTER",
        ],
        r.changes
            .iter()
            .map(|c| {
                vec![
                    c.kind.clone(),
                    c.meter.clone(),
                    or_dash(Some(c.sku.clone())),
                    format!("{} -> {}", c.quantity_before, c.quantity_after),
                    c.amount_before_exact_minor.clone(),
                    c.amount_after_exact_minor.clone(),
                ]
            })
            .collect(),
    );
    println!(
        "total {} -> {} (minor units, exact; price v{})",
        r.total_before_exact_minor, r.total_after_exact_minor, r.price_version
    );
}

pub fn print_top_up(format: Format, t: &TopUp) {
    if let Format::Json = format {
        return json(t);
    }
    println!(
        "top-up {}{}",
        t.outcome.result,
        t.outcome
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    print_billing(Format::Table, &t.billing);
}

pub fn print_payments(format: Format, p: &Payments) {
    if let Format::Json = format {
        return json(p);
    }
    if p.items.is_empty() {
        println!("nothing due");
    }
    for i in &p.items {
        println!(
            "invoice {}: {}{}",
            i.invoice_id,
            i.outcome.result,
            i.outcome
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    print_billing(Format::Table, &p.billing);
}

/// One method (what `methods add` made): the object itself in JSON, a one-row table otherwise.
pub fn print_payment_method(format: Format, method: &PaymentMethod) {
    if let Format::Json = format {
        return json(method);
    }
    print_payment_methods(format, std::slice::from_ref(method));
}

pub fn print_payment_methods(format: Format, methods: &[PaymentMethod]) {
    if let Format::Json = format {
        return json(methods);
    }
    table(
        &["ID", "PROVIDER", "LABEL", "DEFAULT", "ADDED"],
        methods
            .iter()
            .map(|m| {
                vec![
                    m.id.to_string(),
                    m.provider.clone(),
                    m.label.clone(),
                    if m.is_default { "yes" } else { "" }.into(),
                    ts(&m.created_at),
                ]
            })
            .collect(),
    );
}
