//! What authentication and the audit chain cost, against the same handlers without them, in the
//! same run (these machines are noisy: only the ratios mean much).
//!
//! - `GET /v1/instances/{id}` with an API key and with an access token (JWT), against the same
//!   route served with authentication bypassed (`api::router_with_fixed_caller`). Aim ≥ 0.9×.
//! - `POST /v1/service-accounts` (one insert each) with its audit entry appended to the hash
//!   chain, against the same requests unaudited. Aim ≥ 0.8×.
//!
//!     scripts/bench auth [--seconds 5] [--rounds 3] [--concurrency 16]

use e2e::harness;

use harness::{Options, Platform};
use serde_json::json;
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

/// Requests per second that `concurrency` clients get from `request` for `seconds`.
async fn rate<F, Fut>(seconds: u64, concurrency: u64, request: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u16> + Send,
{
    let request = Arc::new(request);
    let done = Arc::new(AtomicU64::new(0));
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (request, done, counter) = (request.clone(), done.clone(), counter.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let status = request(n).await;
                    assert!(status < 300, "bench request answered {status}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap()
    });
    url
}

#[tokio::main]
async fn main() {
    let seconds = arg("--seconds", 5);
    let rounds = arg("--rounds", 3);
    let concurrency = arg("--concurrency", 16);
    // The limiter stays on (its cost is part of the authenticated path), out of reach.
    let mut options = Options::default();
    options.auth.rate_limit_per_second = 10_000_000;
    options.auth.rate_limit_burst = 10_000_000;
    let p = Platform::start(options).await;
    let http = reqwest::Client::new();
    let (status, instance) = p
        .create(json!({"sku": "a100-40gb", "gpu_count": 1}), None)
        .await;
    assert_eq!(status, 202);
    let id = instance["id"].as_str().unwrap().to_string();
    let key: serde_json::Value = http
        .post(format!("{}/v1/api-keys", p.api_url))
        .bearer_auth(&p.tenant_token)
        .json(&json!({"name": "bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_key = key["key"].as_str().unwrap().to_string();
    let authority = platform_iam::authority::of_user(&p.pool, p.tenant_id)
        .await
        .unwrap()
        .unwrap();
    let mut ctx = harness::tenant_context();
    ctx.principal = authority.principal.clone();
    let caller = api::auth::Caller {
        ctx,
        authority: Some(Arc::new(authority)),
        role: Some(platform_iam::Role::Owner),
        node: None,
    };
    let bypass_url = serve(api::router_with_fixed_caller(
        p.api.clone(),
        caller.clone(),
        false,
    ))
    .await;
    let audited_url = serve(api::router_with_fixed_caller(p.api.clone(), caller, true)).await;

    let get = |base: String, token: Option<String>| {
        let http = http.clone();
        let url = format!("{base}/v1/instances/{id}");
        move |_n: u64| {
            let mut req = http.get(&url);
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            async move { req.send().await.unwrap().status().as_u16() }
        }
    };
    let create = |base: String, tag: &'static str| {
        let http = http.clone();
        let url = format!("{base}/v1/service-accounts");
        move |n: u64| {
            let req = http.post(&url).json(&json!({"name": format!("{tag}-{n}-{}", uuid::Uuid::now_v7().simple()), "role": "viewer"}));
            async move { req.send().await.unwrap().status().as_u16() }
        }
    };
    println!("auth bench: {seconds}s per variant, {rounds} rounds, {concurrency} clients");
    let mut sums = [0.0f64; 5];
    for round in 1..=rounds {
        let bypass = rate(seconds, concurrency, get(bypass_url.clone(), None)).await;
        let with_key = rate(
            seconds,
            concurrency,
            get(p.api_url.clone(), Some(api_key.clone())),
        )
        .await;
        let with_jwt = rate(
            seconds,
            concurrency,
            get(p.api_url.clone(), Some(p.tenant_token.clone())),
        )
        .await;
        let unaudited = rate(seconds, concurrency, create(bypass_url.clone(), "plain")).await;
        let audited = rate(seconds, concurrency, create(audited_url.clone(), "audited")).await;
        println!(
            "round {round}: GET bypass {bypass:.0}/s · API key {with_key:.0}/s ({:.2}×) · JWT {with_jwt:.0}/s ({:.2}×) | \
             POST unaudited {unaudited:.0}/s · audited {audited:.0}/s ({:.2}×)",
            with_key / bypass,
            with_jwt / bypass,
            audited / unaudited
        );
        for (s, v) in sums
            .iter_mut()
            .zip([bypass, with_key, with_jwt, unaudited, audited])
        {
            *s += v;
        }
    }
    let [bypass, with_key, with_jwt, unaudited, audited] = sums.map(|s| s / rounds as f64);
    println!(
        "mean: GET bypass {bypass:.0}/s · API key {:.2}× · JWT {:.2}× | POST audited {:.2}× of unaudited",
        with_key / bypass,
        with_jwt / bypass,
        audited / unaudited
    );
    let chain = platform_audit::verify(&p.pool, &api::audit::KeySigner(p.keys.clone()), None)
        .await
        .unwrap();
    println!(
        "audit chains after the run: ok={} events={} chains={}",
        chain.ok, chain.events_checked, chain.chains_checked
    );
}
