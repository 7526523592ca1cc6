//! Fuzzing the contract: schemathesis generates requests from `doc/api/openapi.yaml` (valid and
//! invalid ones, and the boundary values of every limit) against a whole platform with a fresh
//! database, each operation called as its `x-gpuaas-access` says (tenant, operator, node join
//! token, nobody). It checks that no response is a 5xx, that responses conform to the contract
//! (status, content type, schema), that every error is problem+json with a documented code at
//! its documented status, and that no refused request wrote a row (`fuzz_hooks.py`).
//!
//! schemathesis comes from PyPI into `.tools/schemathesis` (`scripts/lib.sh`
//! `ensure_schemathesis`; `scripts/test` installs it and sets `GPUAAS_REQUIRE_FUZZ=1`, so a
//! missing one fails there). Elsewhere the test is skipped when it is missing.

use crate::harness::{Options, PASSWORD, Platform};
use api::LifecycleArgs;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// Generated cases per operation (fuzzing phase; the coverage phase adds its boundary cases).
const MAX_EXAMPLES: &str = "50";
const SEED: u64 = 20261201;
/// schemathesis' own checks, then those of `fuzz_hooks.py`.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
    response_schema_conformance,refused_requests_write_nothing,errors_are_documented_problems";

/// `GPUAAS_SCHEMATHESIS`, else the one `scripts/lib.sh` installs.
fn schemathesis() -> Option<PathBuf> {
    let path = std::env::var_os("GPUAAS_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join(".tools/schemathesis/bin/schemathesis"));
    path.exists().then_some(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_survives_fuzzing() {
    let required = std::env::var("GPUAAS_REQUIRE_FUZZ").is_ok_and(|v| v == "1");
    let Some(schemathesis) = schemathesis() else {
        assert!(
            !required,
            "GPUAAS_REQUIRE_FUZZ=1 but schemathesis is missing (scripts/lib.sh ensure_schemathesis)"
        );
        eprintln!("skipped: schemathesis is not installed (scripts/test installs it)");
        return;
    };
    let p = Platform::start(Options {
        // No agent runs: nodes that register must not go down (and write events) mid-run.
        lifecycle: LifecycleArgs {
            heartbeat_timeout_seconds: 3600,
            report_every_seconds: 3600,
            ..Options::default().lifecycle
        },
        auth: api::AuthConfig {
            metrics_token: Some("fuzz-scrape-token".into()),
            ..api::AuthConfig::for_tests()
        },
        ..Options::default()
    })
    .await;
    // The user the fuzzed member and project-member routes name: not the tenant, whose token a
    // change of role would end.
    let member = platform_iam::users::create(&p.pool, "member@gpuaas.test", PASSWORD)
        .await
        .unwrap()
        .id;
    platform_iam::users::add_to_org(
        &p.pool,
        platform_iam::DEFAULT_ORG,
        member,
        platform_iam::Role::Member,
    )
    .await
    .unwrap();
    let mut join_tokens = Vec::new();
    for _ in 0..100 {
        join_tokens.push(p.join_token().await);
    }
    let codes: Vec<String> = crate::openapi::documented_codes(&crate::openapi::spec())
        .into_iter()
        .map(|(code, status)| format!("{code}:{status}"))
        .collect();
    // The run's events stay behind for a look after a failure.
    let reports = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz");
    std::fs::create_dir_all(&reports).unwrap();
    let config = reports.join("schemathesis.toml");
    // The hooks pick each operation's caller; schemathesis must not sign up one of its own.
    // (And hypothesis keeps no example database in the tree.)
    std::fs::write(
        &config,
        "[auth]\nauto-signup = false\n\n[generation]\ndatabase = \"none\"\n",
    )
    .unwrap();
    let env = [
        ("SCHEMATHESIS_HOOKS", "fuzz_hooks".to_string()),
        (
            "PYTHONPATH",
            Path::new(ROOT).join("e2e/tests/e2e").display().to_string(),
        ),
        ("GPUAAS_FUZZ_TENANT_TOKEN", p.tenant_token.clone()),
        ("GPUAAS_FUZZ_OPERATOR_TOKEN", p.operator_token.clone()),
        ("GPUAAS_FUZZ_JOIN_TOKENS", join_tokens.join(",")),
        ("GPUAAS_FUZZ_ORG", platform_iam::DEFAULT_ORG.to_string()),
        (
            "GPUAAS_FUZZ_PROJECT",
            platform_iam::DEFAULT_PROJECT.to_string(),
        ),
        ("GPUAAS_FUZZ_USER", member.to_string()),
        ("GPUAAS_FUZZ_CODES", codes.join(",")),
        ("GPUAAS_FUZZ_SCRAPE_TOKEN", "fuzz-scrape-token".to_string()),
        ("GPUAAS_FUZZ_DATABASE_URL", p.db_url.clone()),
        ("NO_COLOR", "1".to_string()),
    ];
    let start = Instant::now();
    let mut figures = Figures::default();
    // A first pass over every operation; then, with other seeds, the operations whose inputs
    // ran out before 50 cases (hypothesis stops early when few distinct requests exist, e.g. a
    // DELETE whose ids come from the pool of created objects).
    let mut only: Vec<String> = Vec::new();
    for pass in 0..4u64 {
        let ndjson = reports.join(format!("events-{pass}.ndjson"));
        let mut command = tokio::process::Command::new(&schemathesis);
        command
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(Path::new(ROOT).join("doc/api/openapi.yaml"))
            .args(["--url", &p.api_url])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--mode", "all"])
            .args(["--max-examples", MAX_EXAMPLES])
            .args(["--seed", &(SEED + pass).to_string()])
            .args(["--workers", "1"])
            .args(["--suppress-health-check", "all"])
            .args(["--request-timeout", "10"])
            .args(["--no-shrink"])
            .args(["--checks", CHECKS])
            .args(["--report", "ndjson", "--report-ndjson-path"])
            .arg(&ndjson)
            .envs(env.iter().cloned())
            .current_dir(&reports)
            .kill_on_drop(true);
        for name in &only {
            command.args(["--include-name", name]);
        }
        let left = Duration::from_secs(270).saturating_sub(start.elapsed());
        let out = tokio::time::timeout(left, command.output())
            .await
            .expect("schemathesis ran past 270 s")
            .expect("schemathesis starts");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("pass {pass}:\n{stdout}\n{stderr}");
        assert!(
            out.status.success(),
            "schemathesis found failures (pass {pass}, exit {:?}; events in {}):\n{stdout}\n{stderr}",
            out.status.code(),
            ndjson.display()
        );
        figures.add(&ndjson);
        only = figures
            .cases
            .iter()
            .filter(|(_, n)| **n < 50)
            .map(|(operation, _)| operation.clone())
            .collect();
        if only.is_empty() {
            break;
        }
    }
    println!(
        "fuzzing: {} operations, {} cases ({} per operation at least, {} at most), {} 5xx, {:.0} s",
        figures.cases.len(),
        figures.cases.values().sum::<u64>(),
        figures.cases.values().min().unwrap_or(&0),
        figures.cases.values().max().unwrap_or(&0),
        figures.server_errors,
        start.elapsed().as_secs_f64()
    );
    for (operation, n) in &figures.cases {
        println!("  {n:5}  {operation}");
    }
    let spec_operations = crate::openapi::operation_count(&crate::openapi::spec());
    assert_eq!(
        figures.cases.len(),
        spec_operations,
        "not every operation was fuzzed"
    );
    assert!(only.is_empty(), "fewer than 50 cases for {only:?}");
    assert_eq!(figures.server_errors, 0);
}

/// What the run's event stream says: cases per operation, and 5xx answers.
#[derive(Default)]
struct Figures {
    cases: BTreeMap<String, u64>,
    server_errors: u64,
}

impl Figures {
    /// Adds the cases of one run's event stream.
    fn add(&mut self, ndjson: &Path) {
        let Ok(text) = std::fs::read_to_string(ndjson) else {
            return;
        };
        for line in text.lines() {
            if let Ok(event) = serde_json::from_str::<Value>(line) {
                self.scan(&event);
            }
        }
    }

    /// Counts the requests of a finished scenario by its operation's label.
    fn scan(&mut self, event: &Value) {
        let Some(finished) = event.get("ScenarioFinished") else {
            return;
        };
        let label = finished
            .pointer("/recorder/label")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let interactions = finished
            .pointer("/recorder/interactions")
            .and_then(Value::as_object);
        let n = interactions.map_or(0, |i| i.len() as u64);
        *self.cases.entry(label).or_default() += n;
        for interaction in interactions.into_iter().flat_map(|i| i.values()) {
            if interaction
                .pointer("/response/status_code")
                .and_then(Value::as_u64)
                .is_some_and(|s| s >= 500)
            {
                self.server_errors += 1;
            }
        }
    }
}
