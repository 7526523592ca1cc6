//! What auditing costs a mutation, against a real Postgres.
//!
//! `cargo bench -p platform-audit --bench append [-- --seconds T --tasks N --orgs M
//! --statements K --keep]`
//!
//! Setup (not timed): a fresh database on the server `GPUAAS_TEST_DATABASE_URL` names, a scratch
//! table `audit.bench_scratch` (one row per task; created here, dropped at the end), and the
//! chains of `--orgs` orgs (`ensure_chains`).
//!
//! Timed, each for `--seconds` with `--tasks` concurrent tasks, each task updating its own row:
//! 1. baseline: the mutation alone, a transaction of `--statements` (default 1) single-row
//!    `UPDATE audit.bench_scratch …`, then COMMIT;
//! 2. audited, one org, same transaction: the UPDATE, then `append_in`, then COMMIT;
//! 3. audited, `--orgs` orgs, same transaction (each task cycles through the orgs);
//! 4. and 5. the same with the append in its own transaction after the mutation's commit
//!    (`append_in` on the connection outside a transaction, which is what `append` does);
//! 6. the baseline again (the machine's drift: ratios use the mean of both baselines).
//!
//! Then `anchor` and `verify` of everything written (timed), which must report no problem, and
//! every chain must be contiguous; a failed check exits non-zero. The database is dropped at the
//! end unless `--keep` is given.

use platform_audit::{
    AnchorSigner, AnchorVerifier, AuthMethod, NewEntry, OperationContext, Outcome, Principal,
    PrincipalKind,
};
use shared_ids::{OrgId, ProjectId};
use sqlx::{Connection, PgPool};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

struct Args {
    seconds: u64,
    tasks: usize,
    orgs: usize,
    /// UPDATEs per mutation transaction.
    statements: usize,
    keep: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        seconds: 5,
        tasks: 16,
        orgs: 64,
        statements: 1,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => args.seconds = value(&arg).parse().expect("--seconds T"),
            "--tasks" => args.tasks = value(&arg).parse().expect("--tasks N"),
            "--orgs" => args.orgs = value(&arg).parse().expect("--orgs M"),
            "--statements" => args.statements = value(&arg).parse().expect("--statements K"),
            "--keep" => args.keep = true,
            // `cargo bench` passes `--bench`; ignore it and anything else cargo adds.
            _ => {}
        }
    }
    assert!(args.tasks > 0 && args.orgs > 0 && args.seconds > 0 && args.statements > 0);
    args
}

/// A signer for the bench only: the anchors are checked by `verify`, not trusted.
struct HmacLike;

impl AnchorSigner for HmacLike {
    fn key_id(&self) -> String {
        "bench".into()
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest([b"bench-key".as_slice(), message].concat()).to_vec()
    }
}

impl AnchorVerifier for HmacLike {
    fn verify(&self, key_id: &str, message: &[u8], signature: &[u8]) -> bool {
        key_id == "bench" && self.sign(message) == signature
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Audit {
    None,
    SameTx,
    OwnTx,
}

struct Variant {
    name: &'static str,
    audit: Audit,
    orgs: usize,
}

#[derive(Default)]
struct Outcomes {
    latencies: Vec<Duration>,
    errors: Vec<String>,
    wall: Duration,
    /// CPU ms per mutation: (postgres, bench, whole machine).
    cpu_ms: (f64, f64, f64),
}

fn ctx(org: OrgId, task: usize) -> OperationContext {
    OperationContext {
        principal: Principal {
            kind: PrincipalKind::User,
            id: Uuid::from_u128(task as u128 + 1),
            name: format!("bench-{task}@example.com"),
        },
        auth_method: AuthMethod::ApiKey,
        credential_id: Some(format!("key_{task}")),
        org: Some(org),
        project: Some(ProjectId::from_u128(7)),
        operator: false,
        request_id: format!("req-{task}"),
        source_ip: Some("203.0.113.7".parse().unwrap()),
    }
}

async fn mutation(
    pool: &PgPool,
    task: usize,
    statements: usize,
    audit: Audit,
    ctx: &OperationContext,
    resource: &str,
) -> Result<(), String> {
    let entry = NewEntry {
        ctx,
        action: "instance.update",
        resource,
        outcome: Outcome::Success,
        status: 200,
        error_code: None,
    };
    let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    for row in task * statements..(task + 1) * statements {
        sqlx::query("UPDATE audit.bench_scratch SET n = n + 1 WHERE id = $1")
            .bind(row as i32)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
    }
    if audit == Audit::SameTx {
        platform_audit::append_in(&mut tx, &entry)
            .await
            .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    if audit == Audit::OwnTx {
        platform_audit::append_in(&mut conn, &entry)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn run(pool: &PgPool, args: &Args, v: &Variant, orgs: Arc<Vec<OrgId>>) -> Outcomes {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let cpu = cpu_now();
    let start = Instant::now();
    let handles: Vec<_> = (0..args.tasks)
        .map(|task| {
            let pool = pool.clone();
            let orgs = orgs.clone();
            let (audit, n_orgs, statements) = (v.audit, v.orgs, args.statements);
            tokio::spawn(async move {
                let mut out = Outcomes::default();
                let mut i = 0usize;
                while Instant::now() < deadline {
                    let org = orgs[(task + i * args_stride(n_orgs)) % n_orgs];
                    let c = ctx(org, task);
                    let resource = format!("/v1/instances/{task}/{i}");
                    let t = Instant::now();
                    match mutation(&pool, task, statements, audit, &c, &resource).await {
                        Ok(()) => out.latencies.push(t.elapsed()),
                        Err(e) => out.errors.push(e),
                    }
                    i += 1;
                }
                out
            })
        })
        .collect();
    let mut all = Outcomes::default();
    for h in handles {
        let part = h.await.expect("task panicked");
        all.latencies.extend(part.latencies);
        all.errors.extend(part.errors);
    }
    all.wall = start.elapsed();
    let after = cpu_now();
    let n = all.latencies.len().max(1) as f64;
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 * 10.0 / n;
    all.cpu_ms = (
        per(cpu.postgres, after.postgres),
        per(cpu.bench, after.bench),
        per(cpu.machine, after.machine),
    );
    all.latencies.sort();
    all
}

/// Tasks step through the orgs by a stride that is coprime to their number where it can.
fn args_stride(orgs: usize) -> usize {
    if orgs > 1 && !orgs.is_multiple_of(7) {
        7
    } else {
        1
    }
}

/// CPU ticks (1/100 s) of the machine (busy), this process and every `postgres` process.
#[derive(Clone, Copy)]
struct Cpu {
    machine: u64,
    bench: u64,
    postgres: u64,
}

fn cpu_now() -> Cpu {
    fn proc_ticks(stat: &str) -> Option<u64> {
        let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }
    let machine = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<u64> = s
                .lines()
                .next()?
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            Some(f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4)?)
        })
        .unwrap_or(0);
    let bench = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| proc_ticks(&s))
        .unwrap_or(0);
    let mut postgres = 0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if !entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                continue;
            }
            if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
                && stat.contains("(postgres)")
            {
                postgres += proc_ticks(&stat).unwrap_or(0);
            }
        }
    }
    Cpu {
        machine,
        bench,
        postgres,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

async fn drop_database(url: &str) -> Result<(), sqlx::Error> {
    let server = shared_kernel::db::testing::server_url();
    let name = &url[url.rfind('/').expect("database URL") + 1..];
    let mut admin = sqlx::PgConnection::connect(&server).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = parse_args();
    let (setup_pool, url) = shared_kernel::db::testing::fresh_database().await;
    setup_pool.close().await;
    let pool = shared_kernel::db::connect_and_migrate(&url, args.tasks as u32 + 4)
        .await
        .expect("connect");
    let ok = bench(&pool, &args).await;
    pool.close().await;
    if args.keep {
        println!("\nkept database: {url}");
    } else if let Err(e) = drop_database(&url).await {
        eprintln!("could not drop {url}: {e}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn bench(pool: &PgPool, args: &Args) -> bool {
    sqlx::query("CREATE TABLE audit.bench_scratch (id integer PRIMARY KEY, n bigint NOT NULL)")
        .execute(pool)
        .await
        .expect("create scratch table");
    sqlx::query(
        "INSERT INTO audit.bench_scratch (id, n) SELECT g, 0 FROM generate_series(0, $1 - 1) g",
    )
    .bind((args.tasks * args.statements) as i32)
    .execute(pool)
    .await
    .expect("fill scratch table");
    let orgs: Arc<Vec<OrgId>> = Arc::new((0..args.orgs).map(|_| OrgId::new()).collect());
    for &org in orgs.iter() {
        platform_audit::ensure_chains(pool, Some(org))
            .await
            .expect("chains");
    }
    let variants = [
        Variant {
            name: "baseline: mutation alone",
            audit: Audit::None,
            orgs: 1,
        },
        Variant {
            name: "audited, 1 org, same tx",
            audit: Audit::SameTx,
            orgs: 1,
        },
        Variant {
            name: "audited, many orgs, same tx",
            audit: Audit::SameTx,
            orgs: args.orgs,
        },
        Variant {
            name: "audited, 1 org, own tx",
            audit: Audit::OwnTx,
            orgs: 1,
        },
        Variant {
            name: "audited, many orgs, own tx",
            audit: Audit::OwnTx,
            orgs: args.orgs,
        },
        Variant {
            name: "baseline again",
            audit: Audit::None,
            orgs: 1,
        },
    ];
    println!(
        "platform-audit append: {} tasks, {} s per variant, {} UPDATE(s) per mutation, {} orgs in \
         the many-org variants, {} lanes per org, Postgres at {}\n",
        args.tasks,
        args.seconds,
        args.statements,
        args.orgs,
        platform_audit::LANES,
        shared_kernel::db::testing::server_url()
    );
    let mut rates = Vec::new();
    let mut ok = true;
    let mut audited_events = 0usize;
    for v in &variants {
        let o = run(pool, args, v, orgs.clone()).await;
        let rate = o.latencies.len() as f64 / o.wall.as_secs_f64();
        if v.audit != Audit::None {
            audited_events += o.latencies.len();
        }
        if !o.errors.is_empty() {
            ok = false;
            eprintln!(
                "{}: {} errors, first: {}",
                v.name,
                o.errors.len(),
                o.errors[0]
            );
        }
        rates.push((
            v.name,
            v.audit,
            rate,
            percentile(&o.latencies, 50.0),
            percentile(&o.latencies, 99.0),
            o.errors.len(),
            o.cpu_ms,
        ));
    }
    let baseline = rates
        .iter()
        .filter(|r| r.1 == Audit::None)
        .map(|r| r.2)
        .sum::<f64>()
        / 2.0;
    println!(
        "{:<30} {:>11} {:>6} {:>6} {:>6} {:>6}  CPU ms/mutation: postgres + bench (machine)",
        "variant", "mutations/s", "×base", "p50 ms", "p99 ms", "errors"
    );
    for (name, _, rate, p50, p99, errors, (pg, bench, machine)) in &rates {
        println!(
            "{name:<30} {rate:>11.0} {:>6.2} {p50:>6.2} {p99:>6.2} {errors:>6}  \
             {pg:.3} + {bench:.3} ({machine:.3})",
            rate / baseline
        );
    }
    println!(
        "({} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let t = Instant::now();
    let anchors = platform_audit::anchor(pool, &HmacLike)
        .await
        .expect("anchor");
    let anchor_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let report = platform_audit::verify(pool, &HmacLike, None)
        .await
        .expect("verify");
    let verify_s = t.elapsed().as_secs_f64();
    println!(
        "\nanchor: {} chains in {anchor_ms:.1} ms; verify: {} events, {} chains in {verify_s:.2} s \
         ({:.0} events/s), unanchored after anchoring: {}",
        anchors.len(),
        report.events_checked,
        report.chains_checked,
        report.events_checked as f64 / verify_s.max(1e-9),
        report.unanchored_events
    );
    let gaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT chain FROM audit.events GROUP BY chain
                               HAVING max(chain_seq) <> count(*) OR min(chain_seq) <> 1) g",
    )
    .fetch_one(pool)
    .await
    .expect("gap check");
    let checks = [
        (
            "verify reports no problem",
            report.ok,
            format!("{:?}", report.problems.first()),
        ),
        (
            "every chain contiguous",
            gaps == 0,
            format!("{gaps} chains with gaps"),
        ),
        (
            "every audited mutation has its event",
            report.events_checked as usize == audited_events,
            format!(
                "{} events for {audited_events} audited mutations",
                report.events_checked
            ),
        ),
        (
            "nothing left unanchored",
            report.unanchored_events == 0,
            String::new(),
        ),
    ];
    for (name, passed, detail) in &checks {
        println!(
            "check {name}: {}",
            if *passed {
                "ok".into()
            } else {
                format!("FAILED {detail}")
            }
        );
        ok &= passed;
    }
    sqlx::query("DROP TABLE audit.bench_scratch")
        .execute(pool)
        .await
        .expect("drop scratch table");
    ok
}
