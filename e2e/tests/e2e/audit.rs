//! The audit trail over real HTTP: every mutating route of the contract writes one entry
//! (success and failure alike), org admins read their org's trail, operators the platform's, and
//! the hash chains verify until a row is tampered with.

use crate::harness::{Options, PASSWORD, Platform};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../doc/api/openapi.yaml");

/// `(METHOD, path, x-gpuaas-access, x-gpuaas-audit-action)` of every operation in the contract
/// (the iam tests generate their cases from it too).
pub fn operations() -> Vec<(Method, String, String, String)> {
    let text = std::fs::read_to_string(SPEC_PATH).unwrap();
    let spec: Value =
        serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&text).unwrap()).unwrap();
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(m) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            let text = |k: &str| {
                op[k]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path}: no {k}"))
                    .to_string()
            };
            out.push((
                m,
                path.clone(),
                text("x-gpuaas-access"),
                text("x-gpuaas-audit-action"),
            ));
        }
    }
    out
}

fn fill_random(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                Uuid::now_v7().to_string()
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn audited(p: &Platform, request_id: &str) -> Vec<(String, String, i32)> {
    sqlx::query_as("SELECT action, outcome, status FROM audit.events WHERE request_id = $1")
        .bind(request_id)
        .fetch_all(&p.pool)
        .await
        .unwrap()
}

/// Each mutating route, called once by whoever may reach it (and once without a credential),
/// leaves exactly one entry with its action, under the request's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_route_of_the_contract_writes_an_audit_entry() {
    let p = Platform::start(Options::default()).await;
    let mut covered = 0;
    for (method, path, access, action) in operations() {
        if method == Method::GET {
            continue;
        }
        let token = if access.starts_with("platform:") || access == "node" {
            p.operator_token.clone()
        } else {
            p.tenant_token.clone()
        };
        for credential in [Some(token.as_str()), None] {
            let request_id = format!("audit-test-{}", Uuid::now_v7().simple());
            let mut req = p
                .http
                .request(
                    method.clone(),
                    format!("{}{}", p.api_url, fill_random(&path)),
                )
                .header("x-request-id", &request_id)
                .json(&json!({}));
            if let Some(t) = credential {
                req = req.bearer_auth(t);
            }
            let status = req.send().await.unwrap().status().as_u16();
            let entries = audited(&p, &request_id).await;
            assert_eq!(entries.len(), 1, "{method} {path} ({status}): {entries:?}");
            let (got, outcome, recorded) = &entries[0];
            assert_eq!(got, &action, "{method} {path}");
            assert_eq!(*recorded as u16, status);
            assert_eq!(
                outcome == "success",
                status < 400,
                "{method} {path} {status}"
            );
        }
        covered += 1;
    }
    assert!(covered >= 20, "only {covered} mutating routes");
    // Reads are not audited.
    let request_id = format!("audit-test-{}", Uuid::now_v7().simple());
    p.http
        .get(format!("{}/v1/instances", p.api_url))
        .header("x-request-id", &request_id)
        .bearer_auth(&p.tenant_token)
        .send()
        .await
        .unwrap();
    assert!(audited(&p, &request_id).await.is_empty());
}

/// Org admins read their org's trail and nobody else's; operators read the platform's; the
/// chains verify, and a row edited in the database (as a superuser could) fails verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_is_per_org_verifies_and_shows_tampering() {
    let p = Platform::start(Options::default()).await;
    let signup = |name: &'static str| {
        let http = p.http.clone();
        let url = format!("{}/v1/auth/signup", p.api_url);
        async move {
            let body: Value = http.post(url)
                .json(&json!({"email": format!("owner@{name}.test"), "password": PASSWORD, "org_name": name}))
                .send().await.unwrap().json().await.unwrap();
            (
                body["access_token"].as_str().unwrap().to_string(),
                body["org"]["id"].as_str().unwrap().to_string(),
            )
        }
    };
    let (a, org_a) = signup("audit-a").await;
    let (b, _) = signup("audit-b").await;
    let post = |token: String, path: &'static str, body: Value| {
        let http = p.http.clone();
        let url = format!("{}{path}", p.api_url);
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        post(
            a.clone(),
            "/v1/service-accounts",
            json!({"name": "bot", "role": "viewer"})
        )
        .await,
        201
    );
    assert_eq!(
        post(a.clone(), "/v1/api-keys", json!({"name": "k"})).await,
        201
    );
    assert_eq!(
        post(
            b.clone(),
            "/v1/service-accounts",
            json!({"name": "theirs", "role": "viewer"})
        )
        .await,
        201
    );
    assert_eq!(
        post(p.operator_token.clone(), "/v1/nodes/join-tokens", json!({})).await,
        201
    );
    let get = |token: String, path: String| {
        let http = p.http.clone();
        let url = format!("{}{path}", p.api_url);
        async move {
            let resp = http.get(url).bearer_auth(token).send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (s, trail) = get(a.clone(), "/v1/audit-events".into()).await;
    assert_eq!(s, 200, "{trail}");
    let actions: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["service_account.create", "api_key.create"],
        "only A's own org: {trail}"
    );
    assert!(
        trail["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["org_id"] == org_a.as_str())
    );
    let (s, _) = get(b.clone(), format!("/v1/audit-events?org={org_a}")).await;
    assert_eq!(s, 404, "another org's trail does not exist for B");
    let (_, platform) = get(p.operator_token.clone(), "/v1/audit-events".into()).await;
    let platform_actions: Vec<&str> = platform["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        platform_actions.contains(&"join_token.create"),
        "{platform_actions:?}"
    );
    assert!(
        platform_actions.contains(&"auth.signup"),
        "sign-ups belong to no org yet: {platform_actions:?}"
    );

    // A refused request names who was refused (not "anonymous"): B trying A's org.
    let request_id = format!("audit-test-{}", Uuid::now_v7().simple());
    let status = p
        .http
        .post(format!("{}/v1/orgs/{org_a}/projects", p.api_url))
        .header("x-request-id", &request_id)
        .bearer_auth(&b)
        .json(&json!({"name": "intrusion"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    let (actor, outcome): (String, String) =
        sqlx::query_as("SELECT actor_kind, outcome FROM audit.events WHERE request_id = $1")
            .bind(&request_id)
            .fetch_one(&p.pool)
            .await
            .unwrap();
    assert_eq!((actor.as_str(), outcome.as_str()), ("user", "failure"));

    // Verify: clean, then tampered.
    let (s, report) = get(p.operator_token.clone(), "/v1/audit-events/verify".into()).await;
    assert_eq!((s, report["ok"].as_bool()), (200, Some(true)), "{report}");
    let (_, report_a) = get(a.clone(), "/v1/audit-events/verify".into()).await;
    assert_eq!(report_a["ok"], true, "{report_a}");
    sqlx::query("ALTER TABLE audit.events DISABLE TRIGGER USER")
        .execute(&p.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit.events SET outcome = 'failure' WHERE action = 'api_key.create'")
        .execute(&p.pool)
        .await
        .unwrap();
    let (_, report) = get(a.clone(), "/v1/audit-events/verify".into()).await;
    assert_eq!(report["ok"], false, "an edited row is detected: {report}");
    assert!(!report["problems"].as_array().unwrap().is_empty());
}
