//! Identity and authority over real HTTP: tenant isolation and the role matrix, both generated
//! from the OpenAPI document (`x-gpuaas-access` on every operation, which the `openapi` tests keep
//! equal to the route table); JWT attacks; API keys; node identity; quotas; rate limits; and no
//! secret in the database.

use crate::harness::{OPERATOR_EMAIL, Options, PASSWORD, Platform};
use platform_iam::{Permission, PlatformRole, Role};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// `(METHOD, path, x-gpuaas-access)` of every operation in the contract.
fn contract_operations() -> Vec<(Method, String, String)> {
    let ops = crate::audit::operations();
    assert!(
        ops.len() > 30,
        "the contract lists too few operations: {}",
        ops.len()
    );
    ops.into_iter()
        .map(|(m, path, access, _)| (m, path, access))
        .collect()
}

/// Sends `method path` with `token` and an empty JSON body for writes; returns status and body.
async fn call(p: &Platform, method: &Method, path: &str, token: &str) -> (u16, Value) {
    let mut req = p
        .http
        .request(method.clone(), format!("{}{path}", p.api_url))
        .bearer_auth(token);
    if *method != Method::GET && *method != Method::DELETE {
        req = req.json(&json!({}));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A tenant made through the public sign-up: its owner's tokens, org and default project.
struct Tenant {
    token: String,
    user: Uuid,
    org: String,
    project: String,
}

async fn sign_up(p: &Platform, name: &str) -> Tenant {
    let resp = p
        .http
        .post(format!("{}/v1/auth/signup", p.api_url))
        .json(
            &json!({"email": format!("owner@{name}.test"), "password": PASSWORD, "org_name": name}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "sign-up");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    Tenant {
        token: body["access_token"].as_str().unwrap().into(),
        user: body["user"]["id"].as_str().unwrap().parse().unwrap(),
        org: body["org"]["id"].as_str().unwrap().into(),
        project: body["project"]["id"].as_str().unwrap().into(),
    }
}

/// A user of `org` with `role`, and a token for them.
async fn member(p: &Platform, org: &str, role: Role, email: &str) -> (Uuid, String) {
    let user = platform_iam::users::create(&p.pool, email, PASSWORD)
        .await
        .unwrap()
        .id;
    platform_iam::users::add_to_org(&p.pool, org.parse().unwrap(), user, role)
        .await
        .unwrap();
    (user, p.keys.issue_access(user, Uuid::now_v7()))
}

async fn post_as(p: &Platform, token: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = p
        .http
        .post(format!("{}{path}", p.api_url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get_as(p: &Platform, token: &str, path: &str) -> (u16, Value) {
    call(p, &Method::GET, path, token).await
}

fn without_request_id(mut body: Value) -> Value {
    body.as_object_mut().map(|o| o.remove("request_id"));
    body
}

/// What stands for a path parameter: B's object, or an id that exists nowhere.
#[derive(Clone, Default)]
struct Ids {
    instance: String,
    node: String,
    service_account: String,
    api_key: String,
    invoice: String,
    org: String,
    user: String,
    project: String,
}

/// Fills the path's parameters from `ids`. A parameter the test has no case for fails it: a new
/// route needs a case here.
fn fill(path: &str, ids: &Ids) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let end = rest.find('}').unwrap();
        let name = &rest[start + 1..end];
        let before = &rest[..start];
        let value = match (name, before) {
            ("id", b) if b.ends_with("/instances/") => &ids.instance,
            ("id", b) if b.ends_with("/nodes/") => &ids.node,
            ("id", b) if b.ends_with("/service-accounts/") => &ids.service_account,
            ("id", b) if b.ends_with("/api-keys/") => &ids.api_key,
            ("invoice", _) => &ids.invoice,
            ("org", _) => &ids.org,
            ("user", _) => &ids.user,
            ("project", _) => &ids.project,
            _ => panic!("no isolation case for parameter {{{name}}} in {path}: add one"),
        };
        out.push_str(before);
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn random_ids() -> Ids {
    let r = || Uuid::now_v7().to_string();
    Ids {
        instance: r(),
        node: r(),
        service_account: r(),
        api_key: r(),
        invoice: r(),
        org: r(),
        user: r(),
        project: r(),
    }
}

/// For every route of the contract: tenant A against tenant B's objects and against objects that
/// do not exist gets 404, and the two bodies are identical apart from the request id. Nothing of
/// B's changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_objects_for_every_route_of_the_contract() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("iso", "8xH100-80GB", 100).await;
    let a = sign_up(&p, "tenant-a").await;
    let b = sign_up(&p, "tenant-b").await;
    // B's objects, one of each kind.
    let (s, instance) = post_as(
        &p,
        &b.token,
        "/v1/instances",
        json!({"sku": "h100-80gb-sxm", "gpu_count": 1}),
    )
    .await;
    assert_eq!(s, 202, "{instance}");
    let (s, sa) = post_as(
        &p,
        &b.token,
        "/v1/service-accounts",
        json!({"name": "ci", "role": "member"}),
    )
    .await;
    assert_eq!(s, 201, "{sa}");
    let (s, key) = post_as(&p, &b.token, "/v1/api-keys", json!({"name": "laptop"})).await;
    assert_eq!(s, 201, "{key}");
    let node = p.node("iso").await["id"].as_str().unwrap().to_string();
    let theirs = Ids {
        instance: instance["id"].as_str().unwrap().into(),
        node,
        service_account: sa["id"].as_str().unwrap().into(),
        api_key: key["api_key"]["id"].as_str().unwrap().into(),
        // B has no invoice yet: an id no invoice has stands for one (the org check comes first).
        invoice: Uuid::now_v7().to_string(),
        org: b.org.clone(),
        user: b.user.to_string(),
        project: b.project.clone(),
    };
    let mut checked = 0;
    for (method, path, access) in contract_operations() {
        let kind = access.split(':').next().unwrap();
        if matches!(kind, "public" | "node" | "authenticated") {
            continue; // no one else's object in reach: covered by the role matrix and tests below
        }
        let scope = |ids: &Ids| {
            let filled = fill(&path, ids);
            match kind {
                "project" => format!("{filled}?project={}", ids.project),
                _ if access.starts_with("org:") && !path.contains("{org}") => {
                    format!("{filled}?org={}", ids.org)
                }
                _ => filled,
            }
        };
        let (s_theirs, body_theirs) = call(&p, &method, &scope(&theirs), &a.token).await;
        let (s_none, body_none) = call(&p, &method, &scope(&random_ids()), &a.token).await;
        assert_eq!(
            (s_theirs, s_none),
            (404, 404),
            "{method} {path}: {body_theirs} / {body_none}"
        );
        assert_eq!(
            without_request_id(body_theirs),
            without_request_id(body_none),
            "{method} {path}: B's object and no object must look the same to A"
        );
        // And in A's own project, B's objects are not found either.
        if kind == "project" && path.contains("{id}") {
            let own = Ids {
                project: a.project.clone(),
                ..theirs.clone()
            };
            let (s, body) = call(&p, &method, &scope(&own), &a.token).await;
            assert_eq!(s, 404, "{method} {path} in A's project: {body}");
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} routes checked");
    // Nothing of B's was touched.
    let (s, still) = get_as(&p, &b.token, &format!("/v1/instances/{}", theirs.instance)).await;
    assert_eq!(s, 200);
    assert_ne!(still["state"], "terminating");
    let (_, keys) = get_as(&p, &b.token, "/v1/api-keys").await;
    assert!(keys["items"][0]["revoked_at"].is_null(), "{keys}");
    let (_, accounts) = get_as(&p, &b.token, "/v1/service-accounts").await;
    assert_eq!(accounts["items"].as_array().unwrap().len(), 1);
}

/// Who may do what, by the route's declared access.
fn expected(access: &str, role: Option<Role>, platform: Option<PlatformRole>) -> bool {
    let grants = |scope: &str| {
        let (kind, perm) = scope.split_once(':').unwrap_or((scope, ""));
        let perm = Permission::parse(perm);
        match kind {
            "authenticated" => true,
            // Operators read any project's instances (support), nothing else of a tenant's.
            "project"
                if perm == Some(Permission::InstancesRead)
                    && platform == Some(PlatformRole::Operator) =>
            {
                true
            }
            "project" | "org" => role.is_some_and(|r| r.grants(perm.unwrap())),
            "platform" => platform.is_some_and(|r| r.grants(perm.unwrap())),
            other => panic!("unknown access {other}"),
        }
    };
    access.split('|').any(grants)
}

const AUTHZ_CODES: &[&str] = &[
    "unauthorized",
    "forbidden",
    "route_not_found",
    "project_not_found",
    "org_not_found",
];

/// For every route, each role gets exactly what the route declares: allowed requests get past
/// authorization (whatever the handler then says of the empty body), refused ones get 403 where
/// the caller sees the project or org, 404 where it does not (platform routes for tenants).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_exactly_what_each_route_declares() {
    let p = Platform::start(Options::default()).await;
    let t = sign_up(&p, "matrix").await;
    let mut roles: Vec<(&str, String, Option<Role>, Option<PlatformRole>)> =
        vec![("owner", t.token.clone(), Some(Role::Owner), None)];
    for (name, role) in [
        ("admin", Role::Admin),
        ("member", Role::Member),
        ("viewer", Role::Viewer),
    ] {
        let (_, token) = member(&p, &t.org, role, &format!("{name}@matrix.test")).await;
        roles.push((name, token, Some(role), None));
    }
    roles.push((
        "operator",
        p.operator_token.clone(),
        None,
        Some(PlatformRole::Operator),
    ));
    roles.push((
        "other tenant",
        sign_up(&p, "elsewhere").await.token,
        None,
        None,
    ));
    let ids = Ids {
        org: t.org.clone(),
        project: t.project.clone(),
        ..random_ids()
    };
    let mut mismatches = Vec::new();
    for (method, path, access) in contract_operations() {
        if matches!(access.as_str(), "public" | "node") {
            continue;
        }
        // Always in the tenant's own project and org, whoever asks.
        let url = match access.split(':').next().unwrap() {
            "project" => format!("{}?project={}", fill(&path, &ids), t.project),
            "org" if !path.contains("{org}") => format!("{}?org={}", fill(&path, &ids), t.org),
            _ => fill(&path, &ids),
        };
        for (name, token, role, platform) in &roles {
            let (status, body) = call(&p, &method, &url, token).await;
            let code = body["code"].as_str().unwrap_or("");
            let refused = AUTHZ_CODES.contains(&code) && status != 200;
            let want = expected(&access, *role, *platform);
            if want == refused {
                mismatches.push(format!(
                    "{name}: {method} {path} ({access}) → {status} {code}"
                ));
            }
            if refused && role.is_some() && access.starts_with("project:") && code != "forbidden" {
                mismatches.push(format!(
                    "{name}: {method} {path}: refused in its own project with {code}, not 403"
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "role matrix:\n{}",
        mismatches.join("\n")
    );
}

/// A platform whose signing key the test can read, to forge tokens an attacker could not.
async fn platform_with_key_dir() -> (Platform, Vec<u8>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("gpuaas-keys-{}", Uuid::now_v7()));
    let mut options = Options::default();
    options.auth.signing_keys_dir = Some(dir.clone());
    let p = Platform::start(options).await;
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(file).unwrap();
    let der =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim()).unwrap();
    (p, der, dir)
}

fn claims(user: Uuid, iss: &str, aud: Option<&str>, nbf: i64, exp: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({"iss": iss, "sub": user.to_string(), "iat": now, "nbf": now + nbf,
                       "exp": now + exp, "jti": "x", "sid": Uuid::now_v7().to_string()});
    if let Some(aud) = aud {
        c["aud"] = json!(aud);
    }
    c
}

fn sign_ed(der: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der),
    )
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// Every forged, stale or misdirected token gets 401, and a well-formed one passes, so the
/// refusals are the validation's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attacks_all_get_401() {
    let (p, der, dir) = platform_with_key_dir().await;
    let jwks: Value = p
        .http
        .get(format!("{}/.well-known/jwks.json", p.api_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["alg"].as_str()),
        (Some("OKP"), Some("EdDSA"))
    );
    let kid = key["kid"].as_str().unwrap();
    let public = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        key["x"].as_str().unwrap(),
    )
    .unwrap();
    let user = p.tenant_id;
    let good = sign_ed(
        &der,
        kid,
        &claims(user, "gpuaas", Some("gpuaas-api"), 0, 600),
    );
    assert_eq!(
        get_as(&p, &good, "/v1/instances").await.0,
        200,
        "a well-formed token passes"
    );

    let header_none = b64(br#"{"alg":"none","typ":"JWT","kid":"KID"}"#).replace("KID", kid);
    let body = b64(claims(user, "gpuaas", Some("gpuaas-api"), 0, 600)
        .to_string()
        .as_bytes());
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(
            &header,
            &claims(user, "gpuaas", Some("gpuaas-api"), 0, 600),
            &jsonwebtoken::EncodingKey::from_secret(&public),
        )
        .unwrap()
    };
    let other_key = platform_iam::tokens::generate_pkcs8();
    let (_, removed_token) = {
        let (id, token) = member(
            &p,
            &platform_iam::DEFAULT_ORG.to_string(),
            Role::Member,
            "leaver@gpuaas.test",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1100)).await; // the token predates the removal
        platform_iam::members::remove(&p.pool, platform_iam::DEFAULT_ORG, id, Role::Owner)
            .await
            .unwrap();
        (id, token)
    };
    let deleted_token = {
        let id = platform_iam::users::create(&p.pool, "gone@gpuaas.test", PASSWORD)
            .await
            .unwrap()
            .id;
        platform_iam::users::add_to_org(&p.pool, platform_iam::DEFAULT_ORG, id, Role::Member)
            .await
            .unwrap();
        let token = p.keys.issue_access(id, Uuid::now_v7());
        platform_iam::users::delete(&p.pool, id).await.unwrap();
        token
    };
    let stripped = {
        let mut parts: Vec<&str> = good.split('.').collect();
        parts[2] = "";
        parts.join(".")
    };
    let attacks: Vec<(&str, String)> = vec![
        ("alg none", format!("{header_none}.{body}.")),
        ("HS256 signed with the public key", hs256),
        (
            "expired",
            sign_ed(
                &der,
                kid,
                &claims(user, "gpuaas", Some("gpuaas-api"), -1200, -600),
            ),
        ),
        (
            "nbf in the future",
            sign_ed(
                &der,
                kid,
                &claims(user, "gpuaas", Some("gpuaas-api"), 600, 1200),
            ),
        ),
        (
            "wrong iss",
            sign_ed(&der, kid, &claims(user, "evil", Some("gpuaas-api"), 0, 600)),
        ),
        (
            "wrong aud",
            sign_ed(
                &der,
                kid,
                &claims(user, "gpuaas", Some("other-api"), 0, 600),
            ),
        ),
        (
            "missing aud",
            sign_ed(&der, kid, &claims(user, "gpuaas", None, 0, 600)),
        ),
        (
            "unknown kid",
            sign_ed(
                &other_key,
                "not-a-key",
                &claims(user, "gpuaas", Some("gpuaas-api"), 0, 600),
            ),
        ),
        (
            "known kid, other key",
            sign_ed(
                &other_key,
                kid,
                &claims(user, "gpuaas", Some("gpuaas-api"), 0, 600),
            ),
        ),
        ("stripped signature", stripped),
        ("a deleted user's token", deleted_token),
        ("a removed member's token", removed_token),
        ("garbage", "not.a.token".into()),
    ];
    for (what, token) in attacks {
        let (status, body) = get_as(&p, &token, "/v1/instances").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthorized")),
            "{what}: {body}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Sign-up, login, refresh rotation (a reused refresh token ends the session) and logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refresh_rotation_and_logout() {
    let p = Platform::start(Options::default()).await;
    let t = sign_up(&p, "sessions").await;
    let login = |email: &'static str, password: &'static str| {
        let http = p.http.clone();
        let url = format!("{}/v1/auth/login", p.api_url);
        async move {
            let resp = http
                .post(url)
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (s, wrong) = login("owner@sessions.test", "not the password at all").await;
    assert_eq!(
        (s, wrong["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
    let (s, unknown) = login("nobody@sessions.test", "not the password at all").await;
    assert_eq!(
        (s, unknown["detail"].clone()),
        (401, wrong["detail"].clone()),
        "no account enumeration"
    );
    let (s, tokens) = login("owner@sessions.test", PASSWORD).await;
    assert_eq!(s, 200, "{tokens}");
    assert_eq!(tokens["expires_in"], 3600);
    let first = tokens["refresh_token"].as_str().unwrap().to_string();
    assert!(first.starts_with("gpr_"));
    let refresh = |token: String| {
        let http = p.http.clone();
        let url = format!("{}/v1/auth/refresh", p.api_url);
        async move {
            let resp = http
                .post(url)
                .json(&json!({"refresh_token": token}))
                .send()
                .await
                .unwrap();
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (s, rotated) = refresh(first.clone()).await;
    assert_eq!(s, 200);
    let second = rotated["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert_eq!(
        get_as(&p, rotated["access_token"].as_str().unwrap(), "/v1/me")
            .await
            .0,
        200
    );
    // The first token again: a replay. The whole family ends, the newest token too.
    assert_eq!(refresh(first).await.0, 401);
    assert_eq!(refresh(second).await.0, 401, "reuse revoked the family");
    // The same token presented by many at once (a thief racing the owner): at most one rotation
    // wins, the others are replays, and the replays end the winner's new token too.
    let (_, raced) = login("owner@sessions.test", PASSWORD).await;
    let raced = raced["refresh_token"].as_str().unwrap().to_string();
    let results = futures::future::join_all((0..8).map(|_| refresh(raced.clone()))).await;
    let winners: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    assert!(winners.len() <= 1, "{results:?}");
    for won in winners {
        let next = won["refresh_token"].as_str().unwrap().to_string();
        assert_eq!(
            refresh(next).await.0,
            401,
            "a replay ended the family, the new token too"
        );
    }
    // Logout ends a fresh session.
    let (_, again) = login("owner@sessions.test", PASSWORD).await;
    let token = again["refresh_token"].as_str().unwrap().to_string();
    let resp = p
        .http
        .post(format!("{}/v1/auth/logout", p.api_url))
        .json(&json!({"refresh_token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(refresh(token).await.0, 401);
    // Weak passwords and a taken email are clear 4xx, and nothing is half-written.
    let resp = p
        .http
        .post(format!("{}/v1/auth/signup", p.api_url))
        .json(&json!({"email": "x@y.test", "password": "short", "org_name": "weak"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let resp = p
        .http
        .post(format!("{}/v1/auth/signup", p.api_url))
        .json(&json!({"email": "owner@sessions.test", "password": PASSWORD, "org_name": "another"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let orgs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM iam.orgs WHERE name IN ('weak', 'another')")
            .fetch_one(&p.pool)
            .await
            .unwrap();
    assert_eq!(orgs, 0);
    let _ = t;
}

/// Everything the process logs, at every level (one test per process under nextest).
#[derive(Clone, Default)]
struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    fn install() -> Self {
        let logs = Self::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("this test captures the process's logs: run it alone in its process (nextest)");
        logs
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Keys: shown once, usable, scoped, bound to a project, revocable; and no secret is stored or
/// logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_scope_bind_and_revoke_and_no_secret_is_stored_in_plaintext() {
    let logs = CapturedLogs::install();
    let p = Platform::start(Options::default()).await;
    let t = sign_up(&p, "keys").await;
    let (s, key) = post_as(&p, &t.token, "/v1/api-keys", json!({"name": "ci"})).await;
    assert_eq!(s, 201, "{key}");
    let secret = key["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("gpk_") && secret.len() >= 40);
    assert_eq!(key["api_key"]["prefix"].as_str().unwrap(), &secret[..12]);
    assert_eq!(get_as(&p, &secret, "/v1/instances").await.0, 200);
    let (_, me) = get_as(&p, &secret, "/v1/me").await;
    assert_eq!(me["auth_method"], "api_key");
    // Scoped to reading instances: it cannot create one, nor manage keys.
    let (_, read_only) = post_as(
        &p,
        &t.token,
        "/v1/api-keys",
        json!({"name": "ro", "scopes": ["instances:read"]}),
    )
    .await;
    let ro = read_only["key"].as_str().unwrap();
    assert_eq!(get_as(&p, ro, "/v1/instances").await.0, 200);
    let (s, body) = post_as(
        &p,
        ro,
        "/v1/instances",
        json!({"sku": "a100-40gb", "gpu_count": 1}),
    )
    .await;
    assert_eq!((s, body["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(get_as(&p, ro, "/v1/api-keys").await.0, 403);
    // A key that may manage keys cannot mint one with more than it has: no wider scopes, and
    // what it mints inherits its scopes.
    let (_, manager) = post_as(
        &p,
        &t.token,
        "/v1/api-keys",
        json!({"name": "mgr", "scopes": ["apikeys:manage"]}),
    )
    .await;
    let manager = manager["key"].as_str().unwrap().to_string();
    let (s, body) = post_as(
        &p,
        &manager,
        "/v1/api-keys",
        json!({"name": "wider", "scopes": ["instances:write"]}),
    )
    .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (s, minted) = post_as(&p, &manager, "/v1/api-keys", json!({"name": "same"})).await;
    assert_eq!(s, 201, "{minted}");
    assert_eq!(minted["api_key"]["scopes"], json!(["apikeys:manage"]));
    let minted = minted["key"].as_str().unwrap();
    assert_eq!(
        get_as(&p, minted, "/v1/instances").await.0,
        403,
        "the minted key has no more than its maker"
    );
    // A service account's key is bound to its project: another project of the org is not found.
    let (_, sa) = post_as(
        &p,
        &t.token,
        "/v1/service-accounts",
        json!({"name": "deployer", "role": "member"}),
    )
    .await;
    let (_, sa_key) = post_as(
        &p,
        &t.token,
        "/v1/api-keys",
        json!({"name": "deployer", "service_account_id": sa["id"]}),
    )
    .await;
    let sa_secret = sa_key["key"].as_str().unwrap().to_string();
    let (s, other) = post_as(
        &p,
        &t.token,
        &format!("/v1/orgs/{}/projects", t.org),
        json!({"name": "other"}),
    )
    .await;
    assert_eq!(s, 201, "{other}");
    assert_eq!(get_as(&p, &sa_secret, "/v1/instances").await.0, 200);
    let (s, body) = get_as(
        &p,
        &sa_secret,
        &format!("/v1/instances?project={}", other["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!((s, body["code"].as_str()), (404, Some("project_not_found")));
    assert_eq!(
        get_as(&p, &sa_secret, "/v1/instances?project=other")
            .await
            .0,
        404
    );
    assert_eq!(
        get_as(&p, &t.token, "/v1/instances?project=other").await.0,
        200,
        "by name, for the owner"
    );
    // Listed by prefix; revoked keys get 401 at once.
    let (_, listed) = get_as(&p, &t.token, "/v1/api-keys").await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("key").is_none()),
        "never shown again"
    );
    let resp = p
        .http
        .delete(format!(
            "{}/v1/api-keys/{}",
            p.api_url,
            key["api_key"]["id"].as_str().unwrap()
        ))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(get_as(&p, &secret, "/v1/instances").await.0, 401);
    // A typo in a key is refused without a database lookup, like any unknown key.
    // The last character is changed to one it is not (a fixed `x` equals the key 1 time in 62).
    let last = if sa_secret.ends_with('x') { 'y' } else { 'x' };
    let typo = format!("{}{last}", &sa_secret[..sa_secret.len() - 1]);
    assert_ne!(typo, sa_secret);
    assert_eq!(get_as(&p, &typo, "/v1/instances").await.0, 401);

    // No secret in the database: every row of every table, as text, searched for each secret.
    let refresh: Value = p
        .http
        .post(format!("{}/v1/auth/login", p.api_url))
        .json(&json!({"email": "owner@keys.test", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let join = p.join_token().await;
    let secrets = [
        secret.as_str(),
        ro,
        &sa_secret,
        PASSWORD,
        &t.token,
        refresh["refresh_token"].as_str().unwrap(),
        refresh["access_token"].as_str().unwrap(),
        &join,
    ];
    let dump = database_as_text(&p).await;
    for s in secrets {
        assert!(
            !dump.contains(s),
            "a secret is stored in plaintext: {}…",
            &s[..8]
        );
    }
    assert!(
        dump.contains(&secret[..12]),
        "the search can find what is there (the key's prefix)"
    );
    // Nor in the logs, at any level (sqlx's statements, the API's requests, the domain's).
    let logged = logs.text();
    assert!(
        logged.contains("/v1/api-keys"),
        "the capture sees the API's request spans"
    );
    for s in secrets {
        assert!(!logged.contains(s), "a secret is logged: {}…", &s[..8]);
    }

    // A body over the limit is refused with its own code, and writes nothing.
    let big = format!("{{\"sku\": \"{}\"}}", "x".repeat(2 << 20));
    let resp = p
        .http
        .post(format!("{}/v1/instances", p.api_url))
        .bearer_auth(&t.token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "body_too_large"
    );
}

/// A project role lifts an org viewer in that project only; taking it away ends the viewer's
/// earlier access tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_role_reaches_only_its_project_and_its_removal_ends_tokens() {
    let p = Platform::start(Options::default()).await;
    let t = sign_up(&p, "projroles").await;
    let (s, project) = post_as(
        &p,
        &t.token,
        &format!("/v1/orgs/{}/projects", t.org),
        json!({"name": "research"}),
    )
    .await;
    assert_eq!(s, 201, "{project}");
    let project = project["id"].as_str().unwrap().to_string();
    let (viewer, token) = member(&p, &t.org, Role::Viewer, "viewer@projroles.test").await;
    let member_url = format!("/v1/project-members/{viewer}?project={project}");
    let resp = p
        .http
        .put(format!("{}{member_url}", p.api_url))
        .bearer_auth(&t.token)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (&body["user_id"], &body["role"]),
        (&json!(viewer), &json!("admin"))
    );
    let list = format!("/v1/project-members?project={project}");
    let (s, members) = get_as(&p, &token, &list).await;
    assert_eq!(
        s, 200,
        "an admin of the project lists its members: {members}"
    );
    assert_eq!(members["items"].as_array().unwrap().len(), 1, "{members}");
    // An admin does not grant the owner role.
    let resp = p
        .http
        .put(format!("{}{member_url}", p.api_url))
        .bearer_auth(&token)
        .json(&json!({"role": "owner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "owner_required");
    // Admin in the project, still a viewer in the org's default project.
    let keys = format!("/v1/api-keys?project={project}");
    let (s, key) = post_as(&p, &token, &keys, json!({"name": "research"})).await;
    assert_eq!(s, 201, "{key}");
    let (s, body) = post_as(&p, &token, "/v1/api-keys", json!({"name": "default"})).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await; // the token predates the removal
    let resp = p
        .http
        .delete(format!("{}{member_url}", p.api_url))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (s, body) = post_as(&p, &token, &keys, json!({"name": "again"})).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (s, members) = get_as(&p, &t.token, &list).await;
    assert_eq!((s, members["items"].as_array().unwrap().len()), (200, 0));
    let (s, body) = call(&p, &Method::DELETE, &member_url, &t.token).await;
    assert_eq!((s, body["code"].as_str()), (404, Some("member_not_found")));
}

/// Every row of every table of the platform's schemas, as text.
pub async fn database_as_text(p: &Platform) -> String {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema, table_name FROM information_schema.tables
         WHERE table_schema IN ('iam', 'audit', 'policy', 'gpuaas') AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&p.pool)
    .await
    .unwrap();
    assert!(tables.len() >= 10, "{tables:?}");
    let mut out = String::new();
    for (schema, table) in tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT t::text FROM {schema}.{table} t"))
                .fetch_all(&p.pool)
                .await
                .unwrap();
        out.push_str(&rows.join("\n"));
    }
    out
}

/// Node identity: a join token works once and only before it expires; a node's credential
/// proves that node only, and reaches no user route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_are_single_use_and_node_credentials_prove_one_node_only() {
    let p = Platform::start(Options::default()).await;
    let register = |auth: String, name: &'static str, key: Option<String>| {
        let http = p.http.clone();
        let url = format!("{}/v1/nodes/register", p.api_url);
        async move {
            let resp = http.post(url).header("authorization", auth)
                .json(&json!({"name": name, "agent_version": "t", "discovery": "simulated", "gpus": [],
                    "public_key": key, "encryption_key": key.as_ref().map(|_| encryption_key())}))
                .send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let pair = |()| {
        let der = platform_iam::tokens::generate_pkcs8();
        ring::signature::Ed25519KeyPair::from_pkcs8(&der).unwrap()
    };
    use ring::signature::KeyPair;
    let (a, b) = (pair(()), pair(()));
    // An operator creates the token over the API; tenants cannot.
    let (s, created) = post_as(
        &p,
        &p.operator_token,
        "/v1/nodes/join-tokens",
        json!({"ttl_seconds": 600}),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_string();
    assert_eq!(
        post_as(&p, &p.tenant_token, "/v1/nodes/join-tokens", json!({}))
            .await
            .0,
        404
    );
    let (s, joined) = register(
        format!("Bearer {token}"),
        "host-a",
        Some(b64(a.public_key().as_ref())),
    )
    .await;
    assert_eq!(s, 200, "{joined}");
    let node_a: shared_ids::NodeId = joined["node_id"].as_str().unwrap().parse().unwrap();
    // Used once: refused the second time, even for another host.
    let (s, _) = register(
        format!("Bearer {token}"),
        "host-b",
        Some(b64(b.public_key().as_ref())),
    )
    .await;
    assert_eq!(s, 401, "a used join token");
    // Expired: refused.
    let expired = p.join_token().await;
    sqlx::query(
        "UPDATE iam.join_tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL",
    )
    .execute(&p.pool)
    .await
    .unwrap();
    assert_eq!(
        register(
            format!("Bearer {expired}"),
            "host-b",
            Some(b64(b.public_key().as_ref()))
        )
        .await
        .0,
        401
    );
    // Host B joins properly.
    let (s, joined_b) = register(
        format!("Bearer {}", p.join_token().await),
        "host-b",
        Some(b64(b.public_key().as_ref())),
    )
    .await;
    assert_eq!(s, 200);
    let node_b: shared_ids::NodeId = joined_b["node_id"].as_str().unwrap().parse().unwrap();
    let assertion = |pair: &ring::signature::Ed25519KeyPair, node: shared_ids::NodeId| {
        let now = chrono::Utc::now().timestamp();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let msg = platform_iam::nodes::Assertion::message(node, now, &nonce);
        format!(
            "Node {node}.{now}.{nonce}.{}",
            b64(pair.sign(&msg).as_ref())
        )
    };
    // A's credential re-registers A.
    assert_eq!(register(assertion(&a, node_a), "host-a", None).await.0, 200);
    // A's key claiming to be B, and A's credential claiming B's name: refused.
    assert_eq!(register(assertion(&a, node_b), "host-b", None).await.0, 401);
    let (s, body) = register(assertion(&a, node_a), "host-b", None).await;
    assert_eq!((s, body["code"].as_str()), (409, Some("node_name_taken")));
    // A node credential reaches no user or operator route.
    for path in ["/v1/instances", "/v1/nodes", "/v1/me"] {
        let resp = p
            .http
            .get(format!("{}{path}", p.api_url))
            .header("authorization", assertion(&a, node_a))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
    }
    // A stale assertion (replayed later) is refused.
    let old = chrono::Utc::now().timestamp() - 3600;
    let msg = platform_iam::nodes::Assertion::message(node_a, old, "n0nce");
    let stale = format!("Node {node_a}.{old}.n0nce.{}", b64(a.sign(&msg).as_ref()));
    assert_eq!(register(stale, "host-a", None).await.0, 401);
    // An assertion is good once: the same header replayed within its window is refused.
    let once = assertion(&a, node_a);
    assert_eq!(register(once.clone(), "host-a", None).await.0, 200);
    assert_eq!(
        register(once, "host-a", None).await.0,
        401,
        "a replayed assertion"
    );
    let _ = OPERATOR_EMAIL;
}

/// A fresh X25519 public key (base64url), as a joining agent sends it.
fn encryption_key() -> String {
    b64(&contract_node::envelope::encryption_public_key(
        &contract_node::envelope::new_encryption_secret(),
    ))
}

/// Many parallel creates in a project with a quota never hold more GPUs than the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_creates_never_exceed_the_project_quota() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("q1", "8xH100-80GB", 100).await;
    let t = sign_up(&p, "quota").await;
    let resp = p
        .http
        .put(format!("{}/v1/projects/{}/quota", p.api_url, t.project))
        .bearer_auth(&p.operator_token)
        .json(&json!({"max_concurrent_gpus": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (_, quota) = get_as(&p, &t.token, "/v1/quota").await;
    assert_eq!(quota["max_concurrent_gpus"], 3, "{quota}");
    let creates = (0..8).map(|_| {
        post_as(
            &p,
            &t.token,
            "/v1/instances",
            json!({"sku": "h100-80gb-sxm", "gpu_count": 1}),
        )
    });
    let ids: Vec<String> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(|(s, body)| {
            assert_eq!(s, 202, "{body}");
            body["id"].as_str().unwrap().to_string()
        })
        .collect();
    let mut states = BTreeMap::new();
    for id in &ids {
        let done = p
            .wait_state_as(
                &t.token,
                id,
                &["running", "failed"],
                Duration::from_secs(60),
            )
            .await;
        if done["state"] == "failed" {
            assert!(
                done["status_message"]
                    .as_str()
                    .unwrap()
                    .starts_with("quota_exceeded"),
                "{done}"
            );
        }
        *states
            .entry(done["state"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(states.get("running"), Some(&3), "{states:?}");
    assert_eq!(states.get("failed"), Some(&5), "{states:?}");
    assert_eq!(p.double_booked_gpus().await, 0);
    // What a tenant sees of the fleet: capacity per SKU, not hosts.
    let (_, skus) = get_as(&p, &t.token, "/v1/skus").await;
    let h100 = skus["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "h100-80gb-sxm")
        .unwrap();
    assert_eq!(
        (
            h100["available_gpus"].as_i64(),
            h100["max_gpus_now"].as_i64()
        ),
        (Some(5), Some(5)),
        "{h100}"
    );
    assert!(!skus.to_string().contains("q1"));
}

/// Request N+1 in the window gets 429 with `Retry-After`; another credential is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_past_the_rate_limit_gets_429_with_retry_after() {
    let mut options = Options::default();
    options.auth.rate_limit_per_second = 1;
    options.auth.rate_limit_burst = 5;
    let p = Platform::start(options).await;
    for i in 0..5 {
        assert_eq!(
            get_as(&p, &p.tenant_token, "/v1/instances").await.0,
            200,
            "request {i}"
        );
    }
    let resp = p
        .http
        .get(format!("{}/v1/instances", p.api_url))
        .bearer_auth(&p.tenant_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(
        get_as(&p, &p.operator_token, "/v1/nodes").await.0,
        200,
        "limits are per credential"
    );
}

/// Tenants never see node names or ids: their "why pending" speaks of capacity; an operator
/// reading the same instance sees which nodes and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_read_about_capacity_operators_about_nodes() {
    let p = Platform::start(Options::default()).await;
    p.register_ghost_node("secret-host-17", 2, "H100-80GB")
        .await;
    let id = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 8, "capacity_timeout_seconds": 60}))
        .await;
    let operator_view = loop {
        let i = p.get_json(&format!("/v1/instances/{id}")).await;
        if i["status_message"]
            .as_str()
            .is_some_and(|m| m.contains("secret-host-17"))
        {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(operator_view["state"], "pending");
    let (s, tenant_view) = get_as(&p, &p.tenant_token, &format!("/v1/instances/{id}")).await;
    assert_eq!(s, 200);
    let text = tenant_view.to_string();
    assert!(
        !text.contains("secret-host-17"),
        "a node name leaked: {text}"
    );
    assert!(
        tenant_view.get("node_id").is_none_or(Value::is_null),
        "{text}"
    );
    let why = tenant_view["status_message"].as_str().unwrap();
    assert!(why.contains("capacity"), "{why}");
    let (_, list) = get_as(&p, &p.tenant_token, "/v1/instances").await;
    assert!(!list.to_string().contains("secret-host-17"));
    // Nodes themselves are not a tenant's to see.
    assert_eq!(get_as(&p, &p.tenant_token, "/v1/nodes").await.0, 404);
}

/// An org, its default project and its owner's invitation are one write: an invitation that is
/// refused leaves no org (before, `POST /v1/orgs` answered 422 with the org already written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_whose_owner_invitation_is_refused_is_not_created() {
    let p = Platform::start(Options::default()).await;
    let refused = platform_iam::orgs::create_with_owner(
        &p.pool,
        "half-written",
        "not-an-email",
        p.operator_id,
        chrono::Duration::days(1),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), "invalid_email");
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM iam.orgs WHERE name = 'half-written')
              + (SELECT count(*) FROM iam.projects p JOIN iam.orgs o ON o.id = p.org_id
                 WHERE o.name = 'half-written')",
    )
    .fetch_one(&p.pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "a half-written org");
}
