//! Usage ingest throughput: events per second through `POST /v1/usage-events` (batches, a
//! `usage:write` key, idempotent by event id), against the same batches written straight through
//! `platform_billing::usage::record_batch` (no HTTP, no auth, no JSON) in the same run. Aim:
//! over 20,000 events/s on the 2-core machine. Every event is new in the measured rounds; a last
//! pass re-posts one round's batches and checks that all of them are duplicates.
//!
//!     scripts/bench ingest [--seconds 5] [--rounds 3] [--batch 1000] [--concurrency 4]

use e2e::harness::{Options, Platform};
use platform_billing::Decimal;
use platform_billing::usage::{self, UsageEvent};
use serde_json::{Value, json};
use shared_ids::OrgId;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Events per second that `concurrency` writers get from `write(batch_no)` (each writes one
/// batch of `batch` events) for `seconds`.
async fn rate<F, Fut>(seconds: u64, concurrency: u64, batch: u64, write: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let write = Arc::new(write);
    let (next, events) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (write, next, events) = (write.clone(), next.clone(), events.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let accepted = write(next.fetch_add(1, Ordering::Relaxed)).await;
                    assert_eq!(accepted, batch, "every event of a fresh batch is accepted");
                    events.fetch_add(accepted, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    events.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn event_json(tag: &str, batch_no: u64, i: u64) -> Value {
    json!({
        "id": format!("{tag}-{batch_no}-{i}"),
        "meter": if i.is_multiple_of(2) { "input_tokens" } else { "output_tokens" },
        "quantity": (37 + i % 1000).to_string(),
        "started_at": "2026-11-15T12:00:00Z",
        "ended_at": "2026-11-15T12:00:01Z",
    })
}

fn event(org: OrgId, tag: &str, batch_no: u64, i: u64) -> UsageEvent {
    let at = "2026-11-15T12:00:00Z".parse().unwrap();
    UsageEvent {
        id: format!("{tag}-{batch_no}-{i}"),
        org,
        project: None,
        meter: if i.is_multiple_of(2) {
            "input_tokens"
        } else {
            "output_tokens"
        }
        .into(),
        sku: String::new(),
        quantity: Decimal::from(37 + i % 1000),
        started_at: at,
        ended_at: at + chrono::Duration::seconds(1),
        source: "bench".into(),
    }
}

#[tokio::main]
async fn main() {
    let seconds = arg("--seconds", 5);
    let rounds = arg("--rounds", 3);
    let batch = arg("--batch", 1000);
    let concurrency = arg("--concurrency", 4);
    let mut options = Options::default();
    options.auth.rate_limit_per_second = 10_000_000;
    options.auth.rate_limit_burst = 10_000_000;
    let p = Platform::start(options).await;
    let http = reqwest::Client::new();
    let key: Value = http
        .post(format!("{}/v1/api-keys", p.api_url))
        .bearer_auth(&p.tenant_token)
        .json(&json!({"name": "ingest-bench", "scopes": ["usage:write"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key: {key}"))
        .to_string();
    let org: OrgId = platform_iam::DEFAULT_ORG;
    println!(
        "usage ingest bench: {seconds}s per variant, {rounds} rounds, batches of {batch}, {concurrency} writers"
    );

    let over_http = |tag: String| {
        let (http, url, key) = (
            http.clone(),
            format!("{}/v1/usage-events", p.api_url),
            key.clone(),
        );
        move |batch_no: u64| {
            let body = json!({"events": (0..batch).map(|i| event_json(&tag, batch_no, i)).collect::<Vec<_>>()});
            let req = http.post(&url).bearer_auth(&key).json(&body);
            async move {
                let resp = req.send().await.unwrap();
                let status = resp.status();
                let body: Value = resp.json().await.unwrap();
                assert!(status.is_success(), "{status}: {body}");
                body["accepted"].as_u64().unwrap()
            }
        }
    };
    let direct = |tag: String| {
        let pool = p.pool.clone();
        move |batch_no: u64| {
            let events: Vec<UsageEvent> =
                (0..batch).map(|i| event(org, &tag, batch_no, i)).collect();
            let pool = pool.clone();
            async move {
                usage::record_batch(&pool, org, &events)
                    .await
                    .unwrap()
                    .accepted
            }
        }
    };

    let (mut http_sum, mut direct_sum) = (0.0, 0.0);
    for round in 1..=rounds {
        let d = rate(
            seconds,
            concurrency,
            batch,
            direct(format!("direct{round}")),
        )
        .await;
        let h = rate(
            seconds,
            concurrency,
            batch,
            over_http(format!("http{round}")),
        )
        .await;
        println!(
            "round {round}: direct {d:.0} events/s · HTTP {h:.0} events/s ({:.2}×)",
            h / d
        );
        http_sum += h;
        direct_sum += d;
    }
    let (h, d) = (http_sum / rounds as f64, direct_sum / rounds as f64);
    println!(
        "mean: HTTP {h:.0} events/s · direct {d:.0} events/s ({:.2}×)",
        h / d
    );

    // Idempotent: the first batch of round 1 again is all duplicates, and nothing is added.
    let body = json!({"events": (0..batch).map(|i| event_json("http1", 0, i)).collect::<Vec<_>>()});
    let again: Value = http
        .post(format!("{}/v1/usage-events", p.api_url))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(batch)),
        "{again}"
    );
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM billing.usage_events WHERE org_id = $1")
            .bind(org.uuid())
            .fetch_one(&p.pool)
            .await
            .unwrap();
    println!("stored events: {stored}; a re-posted batch: 0 accepted, {batch} duplicates");
}
