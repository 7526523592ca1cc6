//! Billing over real HTTP: posting usage (only a `usage:write`-scoped key, the org from the key,
//! duplicates counted once, bad quantities refused with nothing written), who reads an org's
//! billing and invoices (its admins; not its members, not another tenant: 404 like nothing),
//! finance's metering reruns (a second one changes nothing), and prices on `GET /v1/skus`.

use crate::harness::{Options, PASSWORD, Platform};
use platform_iam::{PlatformRole, Role};
use serde_json::{Value, json};
use uuid::Uuid;

async fn send(
    p: &Platform,
    method: reqwest::Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, String) {
    let mut req = p
        .http
        .request(method, format!("{}{path}", p.api_url))
        .bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        status,
        resp.json().await.unwrap_or(Value::Null),
        content_type,
    )
}

async fn get(p: &Platform, token: &str, path: &str) -> (u16, Value) {
    let (s, body, _) = send(p, reqwest::Method::GET, token, path, None).await;
    (s, body)
}

async fn post(p: &Platform, token: &str, path: &str, body: Value) -> (u16, Value, String) {
    send(p, reqwest::Method::POST, token, path, Some(body)).await
}

struct Tenant {
    token: String,
    org: String,
    project: String,
}

async fn sign_up(p: &Platform, name: &str) -> Tenant {
    let (s, body, _) = post(
        p,
        "",
        "/v1/auth/signup",
        json!({"email": format!("owner@{name}.test"), "password": PASSWORD, "org_name": name}),
    )
    .await;
    assert_eq!(s, 201, "sign-up: {body}");
    Tenant {
        token: body["access_token"].as_str().unwrap().into(),
        org: body["org"]["id"].as_str().unwrap().into(),
        project: body["project"]["id"].as_str().unwrap().into(),
    }
}

fn without_request_id(mut body: Value) -> Value {
    body.as_object_mut().map(|o| o.remove("request_id"));
    body
}

async fn events_of(p: &Platform, org: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM billing.usage_events WHERE org_id = $1::uuid")
        .bind(org)
        .fetch_one(&p.pool)
        .await
        .unwrap()
}

fn event(id: &str, quantity: Value) -> Value {
    json!({
        "id": id,
        "meter": "input_tokens",
        "quantity": quantity,
        "started_at": "2026-01-05T10:00:00Z",
        "ended_at": "2026-01-05T10:00:01Z",
    })
}

/// A service account of the tenant's project and a key for it with `scopes` (`None`: unscoped).
async fn producer_key(p: &Platform, t: &Tenant, name: &str, scopes: Option<Value>) -> String {
    let (s, sa, _) = post(
        p,
        &t.token,
        "/v1/service-accounts",
        json!({"name": name, "role": "member"}),
    )
    .await;
    assert_eq!(s, 201, "{sa}");
    let mut body = json!({"name": name, "service_account_id": sa["id"]});
    if let Some(scopes) = scopes {
        body["scopes"] = scopes;
    }
    let (s, key, _) = post(p, &t.token, "/v1/api-keys", body).await;
    assert_eq!(s, 201, "{key}");
    key["key"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_events_take_only_a_usage_scoped_key_count_duplicates_once_and_refuse_bad_quantities()
{
    let p = Platform::start(Options::default()).await;
    let a = sign_up(&p, "producer-a").await;
    let b = sign_up(&p, "producer-b").await;
    let key = producer_key(&p, &a, "ingest", Some(json!(["usage:write"]))).await;
    let unscoped = producer_key(&p, &a, "plain", None).await;

    let batch = json!({"events": [event("e-1", json!(1500)), event("e-2", json!("37.5"))]});
    // A user's token and a key without the scope: 403 forbidden (they see the project), nothing
    // written.
    for token in [&a.token, &unscoped] {
        let (s, body, ct) = post(&p, token, "/v1/usage-events", batch.clone()).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (403, Some("forbidden")),
            "{body}"
        );
        assert!(ct.starts_with("application/problem+json"), "{ct}");
    }
    assert_eq!(events_of(&p, &a.org).await, 0);

    let (s, done, _) = post(&p, &key, "/v1/usage-events", batch.clone()).await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(
        (done["accepted"].as_u64(), done["duplicates"].as_u64()),
        (Some(2), Some(0))
    );
    // The same batch again, and a batch holding one id twice: each id counts once.
    let (_, again, _) = post(&p, &key, "/v1/usage-events", batch).await;
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
    let twice = json!({"events": [event("e-3", json!(1)), event("e-3", json!(1))]});
    let (s, twice, _) = post(&p, &key, "/v1/usage-events", twice).await;
    assert_eq!(s, 200, "{twice}");
    assert_eq!(
        (twice["accepted"].as_u64(), twice["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    // The org is the key's: A's, never B's.
    assert_eq!(events_of(&p, &a.org).await, 3);
    assert_eq!(events_of(&p, &b.org).await, 0);
    // Naming B's project is naming a project that does not exist.
    let mut foreign = event("e-4", json!(1));
    foreign["project_id"] = json!(b.project);
    let (s, body, _) = post(&p, &key, "/v1/usage-events", json!({"events": [foreign]})).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (404, Some("project_not_found")),
        "{body}"
    );

    // Negative, absurd or non-numeric quantities, and floats: refused, problem+json, and the
    // good event beside them is not written either.
    for bad in [
        json!(-5),
        json!("-0.1"),
        json!("1e30"),
        json!(10_000_000_000_000i64),
        json!("abc"),
        json!(1.5),
    ] {
        let batch = json!({"events": [event("ok-1", json!(1)), event("bad-1", bad.clone())]});
        let (s, body, ct) = post(&p, &key, "/v1/usage-events", batch).await;
        assert_eq!(s, 422, "{bad}: {body}");
        assert!(ct.starts_with("application/problem+json"), "{bad}: {ct}");
        let code = body["code"].as_str().unwrap();
        assert!(
            ["invalid_quantity", "invalid_body"].contains(&code),
            "{bad}: {body}"
        );
    }
    assert_eq!(
        events_of(&p, &a.org).await,
        3,
        "nothing of a refused batch is written"
    );
    let too_many: Vec<Value> = (0..5001)
        .map(|i| event(&format!("m-{i}"), json!(1)))
        .collect();
    let (s, body, _) = post(&p, &key, "/v1/usage-events", json!({"events": too_many})).await;
    assert!(s == 422 || s == 413, "{s} {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_is_for_the_orgs_admins_and_finance_only() {
    let p = Platform::start(Options::default()).await;
    let a = sign_up(&p, "bill-a").await;
    let b = sign_up(&p, "bill-b").await;

    // Sign-up opened a prepaid account with the trial credit.
    let (s, account) = get(&p, &b.token, &format!("/v1/orgs/{}/billing", b.org)).await;
    assert_eq!(s, 200, "{account}");
    assert_eq!(account["mode"], "prepaid");
    assert_eq!(account["credit_minor"], 10_000);
    assert_eq!(account["standing"], "good");

    // A cannot tell B's billing and invoices from nothing at all.
    let nobody = Uuid::now_v7().to_string();
    for tail in [
        "/billing",
        "/billing/usage",
        "/billing/usage/live",
        "/invoices",
        "/payment-methods",
        &format!("/invoices/{}", Uuid::now_v7()),
    ] {
        let (s_b, body_b) = get(&p, &a.token, &format!("/v1/orgs/{}{tail}", b.org)).await;
        let (s_n, body_n) = get(&p, &a.token, &format!("/v1/orgs/{nobody}{tail}")).await;
        assert_eq!((s_b, s_n), (404, 404), "{tail}: {body_b} / {body_n}");
        assert_eq!(
            without_request_id(body_b),
            without_request_id(body_n),
            "{tail}"
        );
    }
    // B's own invoice ids that do not exist: 404 invoice_not_found, whatever the id.
    let (s, body) = get(
        &p,
        &b.token,
        &format!("/v1/orgs/{}/invoices/{}", b.org, Uuid::now_v7()),
    )
    .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (404, Some("invoice_not_found")),
        "{body}"
    );
    let (s, body) = get(
        &p,
        &b.token,
        &format!("/v1/orgs/{}/invoices/not-a-uuid", b.org),
    )
    .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (404, Some("invoice_not_found")),
        "{body}"
    );

    // A member of B (not an admin) sees the org but not its billing: 403.
    let member = platform_iam::users::create(&p.pool, "member@bill-b.test", PASSWORD)
        .await
        .unwrap()
        .id;
    platform_iam::users::add_to_org(&p.pool, b.org.parse().unwrap(), member, Role::Member)
        .await
        .unwrap();
    let member_token = p.keys.issue_access(member, Uuid::now_v7());
    for tail in ["/billing", "/invoices", "/billing/usage/live"] {
        let (s, body) = get(&p, &member_token, &format!("/v1/orgs/{}{tail}", b.org)).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (403, Some("forbidden")),
            "{tail}: {body}"
        );
    }

    // Finance reads any org's billing; operators do not.
    let finance = platform_iam::users::ensure_platform_user(
        &p.pool,
        "finance@gpuaas.test",
        PASSWORD,
        PlatformRole::Finance,
    )
    .await
    .unwrap();
    let finance_token = p.keys.issue_access(finance, Uuid::now_v7());
    let (s, body) = get(&p, &finance_token, &format!("/v1/orgs/{}/billing", b.org)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["org_id"], b.org.as_str());
    let (s, _) = get(&p, &finance_token, &format!("/v1/orgs/{}/invoices", a.org)).await;
    assert_eq!(s, 200);
    let (s, body) = get(
        &p,
        &p.operator_token,
        &format!("/v1/orgs/{}/billing", b.org),
    )
    .await;
    assert_eq!(s, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finance_reruns_metering_and_a_second_rerun_changes_nothing() {
    let p = Platform::start(Options::default()).await;
    let t = sign_up(&p, "rerun").await;
    let key = producer_key(&p, &t, "tokens", Some(json!(["usage:write"]))).await;
    let batch = json!({"events": [
        event("r-1", json!(2_000_000)),
        event("r-2", json!("500000.5")),
    ]});
    let (s, body, _) = post(&p, &key, "/v1/usage-events", batch).await;
    assert_eq!(s, 200, "{body}");

    let finance = platform_iam::users::ensure_platform_user(
        &p.pool,
        "finance@gpuaas.test",
        PASSWORD,
        PlatformRole::Finance,
    )
    .await
    .unwrap();
    let finance = p.keys.issue_access(finance, Uuid::now_v7());
    let path = format!("/v1/orgs/{}/metering-runs", t.org);
    let run = json!({"period": "2026-01"});
    // Tenants (even the owner) and operators: no such route.
    for token in [&t.token, &p.operator_token] {
        let (s, body, _) = post(&p, token, &path, run.clone()).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (404, Some("route_not_found")),
            "{body}"
        );
    }
    let (s, first, _) = post(&p, &finance, &path, run.clone()).await;
    assert_eq!(s, 200, "{first}");
    assert!(!first["changes"].as_array().unwrap().is_empty(), "{first}");
    assert_eq!(first["period"], "2026-01");
    let (s, second, _) = post(&p, &finance, &path, run.clone()).await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["changes"], json!([]), "nothing changed: {second}");
    assert!(second["run_id"].is_null());
    assert_eq!(
        second["total_before_exact_minor"],
        first["total_after_exact_minor"]
    );
    // A period no label could be: 422 invalid_period.
    let (s, body, _) = post(&p, &finance, &path, json!({"period": "2026-13"})).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (422, Some("invalid_period")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skus_show_the_price_book_in_effect_and_the_book_is_public_to_callers() {
    let p = Platform::start(Options::default()).await;
    let t = sign_up(&p, "prices").await;
    let (s, skus) = get(&p, &t.token, "/v1/skus").await;
    assert_eq!(s, 200, "{skus}");
    let h100 = skus["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "h100-80gb-sxm")
        .unwrap_or_else(|| panic!("{skus}"));
    assert_eq!(h100["price_per_gpu_hour_minor"], 299, "{h100}");
    assert_eq!(h100["price_version"], 1, "{h100}");
    let (s, book) = get(&p, &t.token, "/v1/price-book").await;
    assert_eq!(s, 200, "{book}");
    assert!(
        book["items"][0]["prices"].as_array().unwrap().len() >= 3,
        "{book}"
    );
    // Publishing is finance's or an operator's.
    let next = json!({
        "effective_from": "2099-01-01T00:00:00Z",
        "note": "later",
        "prices": [{"meter": "gpu_seconds", "sku": "h100-80gb-sxm", "unit_price_minor": "249",
                    "per_units": 3600, "unit_label": "GPU-hour", "currency": "USD"}],
    });
    let (s, body, _) = post(&p, &t.token, "/v1/price-book/versions", next.clone()).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (404, Some("route_not_found")),
        "{body}"
    );
    let (s, body, _) = post(&p, &p.operator_token, "/v1/price-book/versions", next).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["prices"][0]["unit_price_minor"], "249");
    // Not in effect yet: the SKU's price is still version 1's.
    let (_, skus) = get(&p, &t.token, "/v1/skus").await;
    assert!(
        skus["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["price_version"] == 1)
    );
}

/// Rated GPU-seconds of `instance`'s span in the month it ran (the live rating).
async fn span_seconds(p: &Platform, instance: shared_ids::InstanceId) -> f64 {
    let span =
        platform_billing::usage::span(&p.pool, &product_gpuaas::instance::usage_span_id(instance))
            .await
            .unwrap()
            .expect("a span for an instance that ran");
    let ended = span.ended_at.expect("closed when the instance ended");
    (ended - span.started_at).num_milliseconds() as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_run_for_90_seconds_is_charged_90_gpu_seconds_and_one_that_never_ran_nothing() {
    use std::time::{Duration, Instant};
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("meter-a", "4xH100-80GB", 200).await;
    p.wait_node_state("meter-a", "ready").await;

    // Failed boot: its command exits during settle, so it never reaches running.
    let broken = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "command": "exit 3"}))
        .await;
    let id = p
        .create_running(json!({"sku": "h100-80gb-sxm", "gpu_count": 2, "command": "sleep 600"}))
        .await;
    let seen_running = Instant::now();
    let failed = p
        .wait_state(broken, &["failed"], Duration::from_secs(60))
        .await;
    assert_eq!(failed.state, "failed");
    let never_ran =
        platform_billing::usage::span(&p.pool, &product_gpuaas::instance::usage_span_id(broken))
            .await
            .unwrap();
    assert_eq!(never_ran, None, "an instance that never ran is not charged");

    tokio::time::sleep(Duration::from_secs(90).saturating_sub(seen_running.elapsed())).await;
    assert_eq!(p.delete(id).await, 202);
    p.wait_state(id, &["terminated"], Duration::from_secs(60))
        .await;
    let seconds = span_seconds(&p, id).await;
    // From the agent-confirmed running to the agent-confirmed stop: 90 s plus the stop (TERM
    // and a wait), less the moments between the state change and this test seeing it.
    assert!(
        (88.0..=92.0).contains(&seconds),
        "ran {seconds} s for a 90 s run"
    );
    // Rated exactly: 2 GPUs × those seconds at 299 cents per GPU-hour, nothing for the other.
    let month = platform_billing::Period::month_of(chrono::Utc::now());
    let rated = platform_billing::metering::rate(&p.pool, platform_iam::DEFAULT_ORG, month, None)
        .await
        .unwrap();
    let gpu: Vec<_> = rated.iter().filter(|r| r.meter == "gpu_seconds").collect();
    assert_eq!(gpu.len(), 1, "{rated:?}");
    let quantity: f64 = gpu[0].quantity.to_string().parse().unwrap();
    assert!(
        (quantity - 2.0 * seconds).abs() < 0.01,
        "{quantity} vs 2 × {seconds}"
    );
    let expected = gpu[0].quantity * platform_billing::Decimal::from(299)
        / platform_billing::Decimal::from(3600);
    assert_eq!(gpu[0].amount_exact.round_dp(9), expected.round_dp(9));
    // The instance shows what it cost.
    let shown = p.get_json(&format!("/v1/instances/{id}")).await;
    let cost: f64 = shown["cost_exact_minor"].as_str().unwrap().parse().unwrap();
    let expected: f64 = expected.to_string().parse().unwrap();
    assert!((cost - expected).abs() < 0.001, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_that_runs_out_refuses_new_instances_until_a_top_up_restores_it() {
    let p = Platform::start(Options::default()).await;
    let t = sign_up(&p, "burner").await;
    let org: shared_ids::OrgId = t.org.parse().unwrap();
    let (_, billing) = get(&p, &t.token, &format!("/v1/orgs/{}/billing", t.org)).await;
    let trial = billing["credit_minor"].as_i64().unwrap();
    assert!(trial > 0, "a new org has trial credit: {billing}");
    // It spends more than its credit (150.00 of input tokens), and enforcement notices.
    let key = producer_key(&p, &t, "tokens", Some(json!(["usage:write"]))).await;
    let now = chrono::Utc::now();
    let (s, body, _) = post(
        &p,
        &key,
        "/v1/usage-events",
        json!({"events": [{
            "id": "burn-1", "meter": "input_tokens", "quantity": "1000000000",
            "started_at": now.to_rfc3339(), "ended_at": now.to_rfc3339(),
        }]}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    platform_billing::account::refresh_standing(&p.pool, org, &[])
        .await
        .unwrap();
    let create = json!({"sku": "a100-40gb", "gpu_count": 1});
    let (s, refused, content_type) = post(&p, &t.token, "/v1/instances", create.clone()).await;
    assert_eq!(
        (s, refused["code"].as_str(), content_type.as_str()),
        (409, Some("credit_exhausted"), "application/problem+json"),
        "{refused}"
    );
    let instances: i64 =
        sqlx::query_scalar("SELECT count(*) FROM gpuaas.instances WHERE project_id = $1::uuid")
            .bind(&t.project)
            .fetch_one(&p.pool)
            .await
            .unwrap();
    assert_eq!(instances, 0, "nothing half-written");
    // A top-up with a sandbox card restores service at once.
    let (s, method, _) = post(
        &p,
        &t.token,
        &format!("/v1/orgs/{}/payment-methods", t.org),
        json!({"token": "pm_sandbox_success", "label": "test card"}),
    )
    .await;
    assert_eq!(s, 201, "{method}");
    let (s, topped, _) = send(
        &p,
        reqwest::Method::POST,
        &t.token,
        &format!("/v1/orgs/{}/billing/top-ups", t.org),
        Some(json!({"amount_minor": 10000, "payment_method_id": method["id"], "idempotency_key": "top-1"})),
    )
    .await;
    assert_eq!(s, 200, "{topped}");
    let (_, billing) = get(&p, &t.token, &format!("/v1/orgs/{}/billing", t.org)).await;
    assert_eq!(billing["standing"], "good", "{billing}");
    let (s, created, _) = post(&p, &t.token, "/v1/instances", create).await;
    assert_eq!(s, 202, "{created}");
}
