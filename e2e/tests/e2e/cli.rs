//! The `gpuaas` CLI against a real platform: node operations, `-o json`, and exit codes that
//! scripts can trust; logging in, profiles, API keys, join tokens, quotas and the audit trail.

use crate::harness::{OPERATOR_EMAIL, Options, PASSWORD, Platform, TENANT_EMAIL};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The CLI with no env of the caller's leaking in: only what the test sets.
fn command(p: &Platform, config: &Path) -> std::process::Command {
    let binary = crate::harness::binary("gpuaas");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --bins` (scripts/test does)",
        binary.display()
    );
    let mut command = std::process::Command::new(binary);
    command
        .env("GPUAAS_API_URL", &p.api_url)
        .env("GPUAAS_CONFIG", config)
        .env_remove("GPUAAS_TOKEN")
        .env_remove("GPUAAS_PROFILE")
        .env_remove("GPUAAS_PROJECT");
    command
}

async fn output(mut command: std::process::Command, stdin: Option<&str>) -> Run {
    use std::io::Write;
    use std::process::Stdio;
    let stdin = stdin.map(str::to_string);
    let out = tokio::task::spawn_blocking(move || {
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// As the operator (`GPUAAS_TOKEN`), with no config file.
async fn gpuaas(p: &Platform, args: &[&str]) -> Run {
    let mut command = command(p, Path::new("/nonexistent/gpuaas/config.json"));
    command.args(args).env("GPUAAS_TOKEN", &p.operator_token);
    output(command, None).await
}

/// With the profiles of `config` (and `stdin`, if any).
async fn gpuaas_at(p: &Platform, config: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = command(p, config);
    command.args(args);
    output(command, stdin).await
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", run.stdout, run.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_node_operations_with_scriptable_exit_codes() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("h100", "8xH100-80GB", 200).await;
    let id = p.node("h100").await["id"].as_str().unwrap().to_string();

    let listed = gpuaas(&p, &["node", "list", "-o", "json"]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(json(&listed)[0]["state"], "ready");

    let cordoned = gpuaas(&p, &["node", "cordon", &id, "-o", "json"]).await;
    assert_eq!(cordoned.code, 0, "{}", cordoned.stderr);
    assert_eq!(json(&cordoned)[0]["cordon_reason"], "operator");

    let unknown = gpuaas(&p, &["node", "cordon", &uuid::Uuid::nil().to_string()]).await;
    assert_eq!(unknown.code, 4, "not found: {}", unknown.stderr);
    assert!(
        unknown.stderr.contains("node_not_found"),
        "{}",
        unknown.stderr
    );

    // An empty node drains at once; --wait returns when it is cordoned by the drain.
    let drained = tokio::time::timeout(
        Duration::from_secs(60),
        gpuaas(
            &p,
            &[
                "node",
                "drain",
                &id,
                "--deadline",
                "5",
                "--wait",
                "-o",
                "json",
            ],
        ),
    )
    .await
    .expect("drain --wait returns");
    assert_eq!(drained.code, 0, "{}", drained.stderr);
    assert_eq!(json(&drained)[0]["state"], "cordoned");
    assert_eq!(json(&drained)[0]["cordon_reason"], "drained");

    let events = gpuaas(&p, &["node", "events", &id, "-o", "json"]).await;
    assert_eq!(events.code, 0);
    let events = json(&events);
    let cordon = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "node.cordoned")
        .expect("cordon audited");
    // The principal behind the CLI's credential, not a name the client chose.
    assert_eq!(
        cordon["actor"],
        format!(
            "operator:user:{} ({})",
            p.operator_id,
            crate::harness::OPERATOR_EMAIL
        )
    );
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "node.drained"),
        "{events}"
    );

    // A node that is up and schedulable cannot be decommissioned: refused, exit 3.
    assert_eq!(gpuaas(&p, &["node", "uncordon", &id]).await.code, 0);
    let refused = gpuaas(&p, &["node", "decommission", &id]).await;
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("node_state_conflict"),
        "{}",
        refused.stderr
    );
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_config(path: &Path, config: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Logging in (password on stdin, an API key), profiles, keys, join tokens, quotas, the audit
/// trail and token refresh, through the real binary and a config file of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_logs_in_keeps_profiles_and_manages_iam() {
    let p = Platform::start(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // In a folder that does not exist yet: the CLI creates it.
    let config: PathBuf = dir.path().join("gpuaas").join("config.json");
    let cli = |args: &'static [&'static str]| gpuaas_at(&p, &config, args, None);

    // Not logged in: refused, with advice.
    let anonymous = cli(&["instance", "list"]).await;
    assert_eq!(anonymous.code, 3, "{}", anonymous.stderr);
    assert!(
        anonymous.stderr.contains("gpuaas login"),
        "{}",
        anonymous.stderr
    );

    // Log in as the tenant, the password on stdin: the profile `default`, made current.
    let login = gpuaas_at(
        &p,
        &config,
        &["login", "--email", TENANT_EMAIL, "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    )
    .await;
    assert_eq!(login.code, 0, "{}", login.stderr);
    assert!(!login.stdout.contains(PASSWORD));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the config file holds secrets");
    }
    let saved = read_json(&config);
    assert_eq!(saved["current"], "default");
    let default = &saved["profiles"]["default"];
    assert_eq!(default["api_url"], p.api_url.as_str());
    assert!(
        default["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("gpr_")
    );
    assert!(default["access_expires_at"].as_i64().unwrap() > now_unix());

    let wrong = gpuaas_at(
        &p,
        &config,
        &[
            "login",
            "--email",
            TENANT_EMAIL,
            "--password-stdin",
            "--profile",
            "wrong",
        ],
        Some("not the password at all"),
    )
    .await;
    assert_eq!(wrong.code, 3, "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("invalid_credentials"),
        "{}",
        wrong.stderr
    );
    assert!(read_json(&config)["profiles"].get("wrong").is_none());

    let me = cli(&["profile", "whoami", "-o", "json"]).await;
    assert_eq!(me.code, 0, "{}", me.stderr);
    let me = json(&me);
    assert_eq!(me["name"], TENANT_EMAIL);
    assert_eq!(me["id"], p.tenant_id.to_string());
    assert_eq!(me["auth_method"], "access_token");
    let default_project = me["default_project_id"].as_str().unwrap().to_string();

    // Org-scoped commands find the org from the tenant's one membership.
    let projects = cli(&["project", "list", "-o", "json"]).await;
    assert_eq!(projects.code, 0, "{}", projects.stderr);
    let projects = json(&projects);
    assert!(
        projects
            .as_array()
            .unwrap()
            .iter()
            .any(|pr| pr["id"] == default_project.as_str() && pr["is_default"] == true),
        "{projects}"
    );
    let members = json(&cli(&["member", "list", "-o", "json"]).await);
    assert!(
        members
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["email"] == TENANT_EMAIL && m["role"] == "owner"),
        "{members}"
    );

    // An API key, shown once; saved as a second profile, which works on its own.
    let created = cli(&["apikey", "create", "--name", "ci", "-o", "json"]).await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert!(
        created.stderr.contains("shown only now"),
        "{}",
        created.stderr
    );
    let created = json(&created);
    let key = created["key"].as_str().unwrap().to_string();
    let key_id = created["api_key"]["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("gpk_"), "{created}");
    let saved_key = gpuaas_at(
        &p,
        &config,
        &["login", "--api-key", &key, "--profile", "ci"],
        None,
    )
    .await;
    assert_eq!(saved_key.code, 0, "{}", saved_key.stderr);
    assert_eq!(
        read_json(&config)["current"],
        "ci",
        "login makes the profile current"
    );
    let listed = cli(&["--profile", "ci", "instance", "list", "-o", "json"]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(json(&listed).is_array());
    let used = cli(&["profile", "use", "default"]).await;
    assert_eq!(used.code, 0, "{}", used.stderr);
    assert_eq!(read_json(&config)["current"], "default");
    let unknown = cli(&["--profile", "nope", "instance", "list"]).await;
    assert_eq!(
        unknown.code, 2,
        "an unknown profile is a usage error: {}",
        unknown.stderr
    );

    // Profiles are listed without their secrets.
    let profiles = cli(&["profile", "list", "-o", "json"]).await;
    assert_eq!(profiles.code, 0, "{}", profiles.stderr);
    let refresh_token = read_json(&config)["profiles"]["default"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    for secret in [key.as_str(), &refresh_token[4..]] {
        assert!(
            !profiles.stdout.contains(secret),
            "a secret is listed: {}",
            profiles.stdout
        );
    }
    let profiles = json(&profiles);
    let kinds: Vec<(&str, bool, &str)> = profiles
        .as_array()
        .unwrap()
        .iter()
        .map(|pr| {
            (
                pr["name"].as_str().unwrap(),
                pr["current"].as_bool().unwrap(),
                pr["credential"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("ci", false, "api key"), ("default", true, "login")]
    );

    // Revoked: the key's profile is refused at once (401: exit 3).
    let revoked = cli(&["apikey", "revoke", "ci", "-o", "json"]).await;
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    assert_eq!(json(&revoked)[0]["id"], key_id.as_str());
    assert!(json(&revoked)[0]["revoked_at"].is_string());
    let refused = cli(&["--profile", "ci", "instance", "list"]).await;
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("unauthorized"),
        "{}",
        refused.stderr
    );

    // The trail of the tenant's org has the key's creation, and verifies.
    let trail = cli(&["audit", "list", "-o", "json"]).await;
    assert_eq!(trail.code, 0, "{}", trail.stderr);
    let trail = json(&trail);
    assert!(
        trail
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "api_key.create"
                && e["outcome"] == "success"
                && e["actor_name"] == TENANT_EMAIL),
        "{trail}"
    );
    let filtered = json(&cli(&["audit", "list", "--action", "api_key.revoke", "-o", "json"]).await);
    let actions: Vec<&str> = filtered
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["api_key.revoke"]);
    let verified = cli(&["audit", "verify"]).await;
    assert_eq!(verified.code, 0, "{} {}", verified.stdout, verified.stderr);
    assert!(verified.stdout.starts_with("OK"), "{}", verified.stdout);
    let bundle_path = dir.path().join("bundle.json");
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let until = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
    let export = gpuaas_at(
        &p,
        &config,
        &[
            "audit",
            "export",
            "--since",
            &since,
            "--until",
            &until,
            "--out",
            bundle_path.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert_eq!(export.code, 0, "{}", export.stderr);
    let bundle = read_json(&bundle_path);
    assert_eq!(bundle["format"], "gpuaas-audit-bundle-v1");
    assert!(
        bundle["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "api_key.create"),
        "{bundle}"
    );

    // The operator, as a second profile: join tokens and quotas, which tenants cannot reach.
    let ops = gpuaas_at(
        &p,
        &config,
        &[
            "login",
            "--email",
            OPERATOR_EMAIL,
            "--password-stdin",
            "--profile",
            "ops",
        ],
        Some(PASSWORD),
    )
    .await;
    assert_eq!(ops.code, 0, "{}", ops.stderr);
    let token = cli(&[
        "--profile",
        "ops",
        "node",
        "join-token",
        "create",
        "--ttl",
        "30m",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(token.code, 0, "{}", token.stderr);
    let token = json(&token);
    assert!(!token["token"].as_str().unwrap().is_empty(), "{token}");
    let expires: chrono::DateTime<chrono::Utc> =
        token["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = (expires - chrono::Utc::now()).num_seconds();
    assert!((1700..=1800).contains(&ttl), "30m is {ttl}s");
    let tenant_token = cli(&[
        "--profile",
        "default",
        "node",
        "join-token",
        "create",
        "--ttl",
        "30m",
    ])
    .await;
    assert_eq!(
        tenant_token.code, 4,
        "tenants get 404 on operator routes: {}",
        tenant_token.stderr
    );
    let quota = gpuaas_at(
        &p,
        &config,
        &[
            "--profile",
            "ops",
            "quota",
            "set",
            "--project",
            &default_project,
            "--gpus",
            "4",
        ],
        None,
    )
    .await;
    assert_eq!(quota.code, 0, "{}", quota.stderr);
    let quota = json(&cli(&["--profile", "default", "quota", "get", "-o", "json"]).await);
    assert_eq!(quota["max_concurrent_gpus"], 4, "{quota}");
    assert_eq!(quota["project_id"], default_project.as_str());

    // An expired access token is refreshed before the request; the rotated tokens are saved.
    let mut saved = read_json(&config);
    saved["profiles"]["default"]["access_token"] = "expired.garbage.token".into();
    saved["profiles"]["default"]["access_expires_at"] = (now_unix() - 60).into();
    write_config(&config, &saved);
    let before = saved["profiles"]["default"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let refreshed = cli(&["--profile", "default", "profile", "whoami", "-o", "json"]).await;
    assert_eq!(refreshed.code, 0, "{}", refreshed.stderr);
    assert_eq!(json(&refreshed)["name"], TENANT_EMAIL);
    let after = read_json(&config);
    let profile = &after["profiles"]["default"];
    assert_ne!(
        profile["refresh_token"].as_str().unwrap(),
        before,
        "rotated"
    );
    assert_ne!(profile["access_token"], "expired.garbage.token");
    assert!(profile["access_expires_at"].as_i64().unwrap() > now_unix());
    // A token the API refuses (401) though it has not expired: refreshed and retried once.
    let mut saved = after.clone();
    saved["profiles"]["default"]["access_token"] = "refused.garbage.token".into();
    saved["profiles"]["default"]["access_expires_at"] = (now_unix() + 3000).into();
    write_config(&config, &saved);
    let retried = cli(&["--profile", "default", "instance", "list", "-o", "json"]).await;
    assert_eq!(retried.code, 0, "{}", retried.stderr);
    let rotated = read_json(&config)["profiles"]["default"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(rotated, profile["refresh_token"].as_str().unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "still private after a refresh");
    }

    // Logout ends the session: its refresh token is dead, and the profile holds no secret.
    let logout = cli(&["--profile", "default", "logout"]).await;
    assert_eq!(logout.code, 0, "{}", logout.stderr);
    let profile = read_json(&config)["profiles"]["default"].clone();
    assert!(
        profile.get("access_token").is_none() && profile.get("refresh_token").is_none(),
        "{profile}"
    );
    let resp = p
        .http
        .post(format!("{}/v1/auth/refresh", p.api_url))
        .json(&serde_json::json!({"refresh_token": rotated}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let gone = cli(&["--profile", "default", "profile", "whoami"]).await;
    assert_eq!(gone.code, 3, "{}", gone.stderr);
    // The operator's profile is untouched.
    assert_eq!(cli(&["--profile", "ops", "node", "list"]).await.code, 0);
}

/// As whoever `token` belongs to, with no config file.
async fn gpuaas_as(p: &Platform, token: &str, args: &[&str]) -> Run {
    let mut command = command(p, Path::new("/nonexistent/gpuaas/config.json"));
    command.args(args).env("GPUAAS_TOKEN", token);
    output(command, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_prices_tops_up_credit_and_finance_reruns_metering() {
    use platform_billing::account::{self, BillingMode};
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("cli-bill", "8xH100-80GB", 200).await;
    p.wait_node_state("cli-bill", "ready").await;
    let org = platform_iam::DEFAULT_ORG.to_string();
    account::ensure(
        &p.pool,
        platform_iam::DEFAULT_ORG,
        BillingMode::Prepaid,
        1000,
    )
    .await
    .unwrap();
    let tenant = p.tenant_token.clone();

    // The price before launching, on stderr; the cost so far once it runs.
    let created = gpuaas_as(
        &p,
        &tenant,
        &[
            "instance",
            "create",
            "--sku",
            "h100-80gb-sxm",
            "--gpus",
            "2",
            "--wait",
        ],
    )
    .await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert!(
        created.stderr.contains("price: 5.98 USD per hour"),
        "2 × 2.99: {}",
        created.stderr
    );

    // A sandbox card, a top-up, the balance.
    let added = gpuaas_as(
        &p,
        &tenant,
        &[
            "billing",
            "methods",
            "add",
            "pm_sandbox_success",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(added.code, 0, "{}", added.stderr);
    let method = json(&added)["id"].as_str().unwrap().to_string();
    let topup = gpuaas_as(
        &p,
        &tenant,
        &[
            "billing", "topup", "--amount", "2500", "--method", &method, "-o", "json",
        ],
    )
    .await;
    assert_eq!(topup.code, 0, "{}", topup.stderr);
    let balance = gpuaas_as(&p, &tenant, &["billing", "balance", "-o", "json"]).await;
    assert_eq!(balance.code, 0, "{}", balance.stderr);
    let balance = json(&balance);
    assert_eq!(balance["credit_minor"], 3500, "{balance}");
    assert_eq!(balance["standing"], "good", "{balance}");

    // Finance reruns a past period; the second run changes nothing. A tenant has no such route.
    let finance = platform_iam::users::ensure_platform_user(
        &p.pool,
        "finance@cli.test",
        PASSWORD,
        platform_iam::PlatformRole::Finance,
    )
    .await
    .unwrap();
    let finance = p.keys.issue_access(finance, uuid::Uuid::now_v7());
    let rerun = [
        "billing",
        "rerun",
        "--org",
        org.as_str(),
        "--period",
        "2026-11",
    ];
    let first = gpuaas_as(&p, &finance, &rerun).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let second = gpuaas_as(&p, &finance, &rerun).await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(second.stdout.starts_with("no changes"), "{}", second.stdout);
    let refused = gpuaas_as(&p, &tenant, &rerun).await;
    assert_eq!(refused.code, 4, "tenants: not found. {}", refused.stderr);
}
