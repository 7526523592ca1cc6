//! Placement throughput on a synthetic fleet, against a real Postgres.
//!
//! `scripts/bench placement [--allocations N --allocators K --nodes M
//! --mix 1=70,2=20,8=10 --overflow X]`
//!
//! Setup (not timed): a fresh database on the server `GPUAAS_TEST_DATABASE_URL` names, `--nodes`
//! ready `H100-80GB` nodes of 8 GPUs each and `--allocations` pending instances whose GPU counts
//! follow `--mix` (GPU count = weight), all inserted in bulk.
//!
//! Timed, each with `--allocators` concurrent tasks pulling from a shared queue:
//! 1. baseline: `--allocations` single-row INSERT transactions into a plain (logged) table, so a
//!    placement figure can be compared across machines as a ratio;
//! 2. placement: [`placement::allocate`] for every pending instance;
//! 3. fleet filling up: an 8-GPU request for every whole node left (all must fit);
//! 4. fleet full: `--overflow` more 8-GPU requests (all must answer "no capacity", which runs
//!    the explanation query).
//!
//! Afterwards the database is checked: no GPU in two live allocations, every node's `free_gpus`
//! equals its healthy GPUs without a live allocation, and live allocations match the GPUs the
//! placed instances asked for. Any failed check exits non-zero. The database is dropped at the
//! end unless `--keep` is given.
//!
//! `--no-full` skips phases 3 and 4 (with `--keep`, to profile a half-full fleet).

use product_gpuaas::{Placement, placement};
use shared_ids::InstanceId;
use sqlx::{Connection, PgPool};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const GPU_MODEL: &str = "H100-80GB";
const SKU: &str = "h100-80gb-sxm";
const GPUS_PER_NODE: i32 = 8;

struct Args {
    allocations: usize,
    allocators: usize,
    nodes: usize,
    /// (gpu_count, weight)
    mix: Vec<(i32, u32)>,
    overflow: usize,
    keep: bool,
    /// Skip the fleet-full phase (to keep a half-full fleet for profiling with `--keep`).
    no_full: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        allocations: 20_000,
        allocators: 16,
        nodes: 10_000,
        mix: vec![(1, 70), (2, 20), (8, 10)],
        overflow: 1_000,
        keep: false,
        no_full: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--allocations" => args.allocations = value(&arg).parse().expect("--allocations N"),
            "--allocators" => args.allocators = value(&arg).parse().expect("--allocators N"),
            "--nodes" => args.nodes = value(&arg).parse().expect("--nodes N"),
            "--overflow" => args.overflow = value(&arg).parse().expect("--overflow N"),
            "--mix" => {
                args.mix = value(&arg)
                    .split(',')
                    .map(|part| {
                        let (gpus, weight) = part.split_once('=').expect("--mix 1=70,2=20,8=10");
                        (
                            gpus.trim().parse().expect("mix GPU count"),
                            weight.trim().parse().expect("mix weight"),
                        )
                    })
                    .collect();
            }
            "--keep" => args.keep = true,
            "--no-full" => args.no_full = true,
            // `cargo bench` passes `--bench`; ignore it and anything else cargo adds.
            _ => {}
        }
    }
    assert!(
        args.allocators > 0 && args.nodes > 0,
        "need allocators and nodes"
    );
    assert!(
        args.mix
            .iter()
            .all(|&(g, w)| (1..=GPUS_PER_NODE).contains(&g) && w > 0),
        "mix GPU counts must be 1..=8 with positive weights"
    );
    args
}

fn command_line(a: &Args) -> String {
    let mix: Vec<String> = a.mix.iter().map(|(g, w)| format!("{g}={w}")).collect();
    let mut cmd = format!(
        "scripts/bench placement --allocations {} --allocators {} --nodes {} --mix {} --overflow {}",
        a.allocations,
        a.allocators,
        a.nodes,
        mix.join(","),
        a.overflow
    );
    for (on, flag) in [(a.no_full, " --no-full"), (a.keep, " --keep")] {
        if on {
            cmd.push_str(flag);
        }
    }
    cmd
}

/// GPU counts for `n` requests in the mix's proportions, shuffled deterministically so every run
/// sees the same sequence.
fn request_sizes(n: usize, mix: &[(i32, u32)]) -> Vec<i32> {
    let total: u32 = mix.iter().map(|m| m.1).sum();
    let mut sizes = Vec::with_capacity(n);
    let mut acc = 0.0f64;
    for (i, &(gpus, weight)) in mix.iter().enumerate() {
        let share = if i + 1 == mix.len() {
            n - sizes.len()
        } else {
            acc += n as f64 * weight as f64 / total as f64;
            (acc.round() as usize).saturating_sub(sizes.len())
        };
        sizes.extend(std::iter::repeat_n(gpus, share));
    }
    // Fisher-Yates with a fixed xorshift seed.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..sizes.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        sizes.swap(i, (state % (i as u64 + 1)) as usize);
    }
    sizes
}

async fn insert_fleet(pool: &PgPool, nodes: usize) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO gpuaas.nodes (id, name, state, gpu_model, free_gpus, agent_version, discovery)
         SELECT gen_random_uuid(), 'bench-' || lpad(n::text, 6, '0'), 'ready', $2, $3, 'bench', 'simulated'
         FROM generate_series(1, $1) n",
    )
    .bind(nodes as i32)
    .bind(GPU_MODEL)
    .bind(GPUS_PER_NODE)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO gpuaas.gpus (id, node_id, idx, uuid, model, memory_mib, health)
         SELECT gen_random_uuid(), n.id, i, 'GPU-' || n.name || '-' || i, $1, 81920, 'healthy'
         FROM gpuaas.nodes n CROSS JOIN generate_series(0, $2 - 1) i",
    )
    .bind(GPU_MODEL)
    .bind(GPUS_PER_NODE)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_instances(pool: &PgPool, sizes: &[i32]) -> Result<Vec<InstanceId>, sqlx::Error> {
    let ids: Vec<InstanceId> = sizes.iter().map(|_| InstanceId::new()).collect();
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|i| i.uuid()).collect();
    sqlx::query(
        "INSERT INTO gpuaas.instances (id, project_id, name, sku_id, gpu_count, command, state,
             current_step)
         SELECT u.id, $3, 'bench-' || u.id, $4, u.gpus, 'sleep infinity', 'pending', 'queued'
         FROM unnest($1::uuid[], $2::int[]) AS u(id, gpus)",
    )
    .bind(&uuids)
    .bind(sizes)
    .bind(platform_iam::DEFAULT_PROJECT.uuid())
    .bind(SKU)
    .execute(pool)
    .await?;
    Ok(ids)
}

/// CPU time from /proc (Linux; jiffies of 10 ms): the whole machine, this process, and every
/// `postgres` process, so a report can say where an operation's CPU went and whether something
/// else on the machine (a compiler, say) competed.
#[derive(Clone, Copy, Default)]
struct Cpu {
    machine: u64,
    bench: u64,
    postgres: u64,
}

fn cpu_now() -> Cpu {
    fn proc_ticks(stat: &str) -> Option<u64> {
        // Fields after "pid (comm)": state is field 3; utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
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
            // user nice system idle iowait irq softirq steal
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
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
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

/// Postgres + bench CPU ms per operation (what the operation itself costs, whatever else runs on
/// the machine), and "CPU/op: machine (postgres + bench + other)".
fn cpu_per_op(before: Cpu, after: Cpu, ops: usize) -> (f64, String) {
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 * 10.0 / ops.max(1) as f64;
    let machine = per(before.machine, after.machine);
    let pg = per(before.postgres, after.postgres);
    let bench = per(before.bench, after.bench);
    let text = format!(
        "CPU/op {machine:.2} ms (postgres {pg:.2}, bench {bench:.2}, other {:.2})",
        (machine - pg - bench).max(0.0)
    );
    (pg + bench, text)
}

#[derive(Default)]
struct Outcome {
    wall: Duration,
    cpu: String,
    /// Postgres + bench CPU milliseconds per call.
    cpu_ms: f64,
    /// Latency of each placed request.
    placed: Vec<Duration>,
    /// Latency of each request answered "no capacity".
    no_capacity: Vec<Duration>,
    errors: Vec<String>,
}

impl Outcome {
    fn calls(&self) -> usize {
        self.placed.len() + self.no_capacity.len() + self.errors.len()
    }
}

/// `tasks` workers share `n` jobs; `job(i)` does the i-th. Returns each worker's results merged.
async fn run_concurrently<F, Fut>(tasks: usize, n: usize, job: F) -> Outcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<bool, String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let cpu_before = cpu_now();
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let next = next.clone();
            let job = job.clone();
            tokio::spawn(async move {
                let mut out = Outcome::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let t = Instant::now();
                    let result = job(i).await;
                    let dt = t.elapsed();
                    match result {
                        Ok(true) => out.placed.push(dt),
                        Ok(false) => out.no_capacity.push(dt),
                        Err(e) => out.errors.push(e),
                    }
                }
                out
            })
        })
        .collect();
    let mut all = Outcome::default();
    for h in handles {
        let part = h.await.expect("worker panicked");
        all.placed.extend(part.placed);
        all.no_capacity.extend(part.no_capacity);
        all.errors.extend(part.errors);
    }
    all.wall = start.elapsed();
    (all.cpu_ms, all.cpu) = cpu_per_op(cpu_before, cpu_now(), n);
    all
}

async fn allocate_all(pool: &PgPool, ids: Vec<InstanceId>, tasks: usize) -> Outcome {
    let ids = Arc::new(ids);
    let n = ids.len();
    let pool = pool.clone();
    run_concurrently(tasks, n, move |i| {
        let pool = pool.clone();
        let id = ids[i];
        async move {
            match placement::allocate(&pool, id).await {
                Ok(Placement::Placed(_)) => Ok(true),
                Ok(Placement::NoCapacity { .. }) => Ok(false),
                Ok(Placement::NotWanted { state }) => Err(format!("{id} is {state:?}")),
                Ok(Placement::Refused { code, reason }) => Err(format!("{id}: {code}: {reason}")),
                Err(e) => Err(format!("{id}: {e}")),
            }
        }
    })
    .await
}

async fn baseline(pool: &PgPool, n: usize, tasks: usize, table: &str) -> Outcome {
    let pool = pool.clone();
    let sql: Arc<str> = format!("INSERT INTO {table} (worker, payload) VALUES ($1, $2)").into();
    run_concurrently(tasks, n, move |i| {
        let pool = pool.clone();
        let sql = sql.clone();
        async move {
            sqlx::query(&sql)
                .bind(i as i64)
                .bind("x")
                .execute(&pool)
                .await
                .map(|_| true)
                .map_err(|e| e.to_string())
        }
    })
    .await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

struct Row {
    name: String,
    calls: usize,
    placed: usize,
    no_capacity: usize,
    errors: usize,
    per_s: f64,
    p50: String,
    p99: String,
    cpu_ms: f64,
    note: String,
}

/// What a row's rate counts; its latencies are of the same calls.
enum Rate {
    Calls,
    Placed,
    NoCapacity,
}

fn row(name: &str, o: &mut Outcome, rate: Rate, note: String) -> Row {
    o.placed.sort();
    o.no_capacity.sort();
    let secs = o.wall.as_secs_f64();
    let (count, latencies) = match rate {
        Rate::Calls => (o.calls(), &o.placed),
        Rate::Placed => (o.placed.len(), &o.placed),
        Rate::NoCapacity => (o.no_capacity.len(), &o.no_capacity),
    };
    Row {
        name: name.into(),
        calls: o.calls(),
        placed: o.placed.len(),
        no_capacity: o.no_capacity.len(),
        errors: o.errors.len(),
        per_s: count as f64 / secs,
        p50: ms(percentile(latencies, 50.0)),
        p99: ms(percentile(latencies, 99.0)),
        cpu_ms: o.cpu_ms,
        note,
    }
}

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

async fn verify(pool: &PgPool, expect_placed: usize) -> Result<Vec<Check>, sqlx::Error> {
    let mut checks = Vec::new();
    let double: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT gpu_id FROM gpuaas.allocations WHERE released_at IS NULL
                               GROUP BY gpu_id HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await?;
    checks.push(Check {
        name: "no GPU in two live allocations",
        ok: double == 0,
        detail: format!("{double} double-booked GPU(s)"),
    });

    let (free_sum, unallocated, nodes_off): (i64, i64, i64) = sqlx::query_as(
        "WITH per_node AS (
             SELECT n.id, n.free_gpus,
                    (SELECT count(*) FROM gpuaas.gpus g WHERE g.node_id = n.id AND g.health = 'healthy'
                       AND NOT EXISTS (SELECT 1 FROM gpuaas.allocations a
                                       WHERE a.gpu_id = g.id AND a.released_at IS NULL)) AS actual
             FROM gpuaas.nodes n)
         SELECT coalesce(sum(free_gpus), 0)::bigint, coalesce(sum(actual), 0)::bigint,
                count(*) FILTER (WHERE free_gpus <> actual)
         FROM per_node",
    )
    .fetch_one(pool)
    .await?;
    checks.push(Check {
        name: "sum(free_gpus) = healthy GPUs without a live allocation",
        ok: free_sum == unallocated && nodes_off == 0,
        detail: format!(
            "sum(free_gpus) = {free_sum}, unallocated healthy GPUs = {unallocated}, nodes whose counter is off = {nodes_off}"
        ),
    });

    let (live, requested, placed, mismatched): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM gpuaas.allocations WHERE released_at IS NULL),
                (SELECT coalesce(sum(gpu_count), 0)::bigint FROM gpuaas.instances WHERE state = 'provisioning'),
                (SELECT count(*) FROM gpuaas.instances WHERE state = 'provisioning'),
                (SELECT count(*) FROM gpuaas.instances i
                  WHERE i.state = 'provisioning' AND (
                        (SELECT count(*) FROM gpuaas.allocations a
                          WHERE a.instance_id = i.id AND a.released_at IS NULL AND a.node_id = i.node_id)
                        <> i.gpu_count
                     OR cardinality(i.gpu_indices) <> i.gpu_count))",
    )
    .fetch_one(pool)
    .await?;
    checks.push(Check {
        name: "allocated GPUs = GPUs requested by placed instances",
        ok: live == requested && placed as usize == expect_placed && mismatched == 0,
        detail: format!(
            "live allocations = {live}, requested by {placed} placed instance(s) = {requested} \
             (bench saw {expect_placed} placed), instances whose allocation disagrees = {mismatched}"
        ),
    });
    Ok(checks)
}

const EXPLAIN_SQL: &str =
    "SELECT state, gpu_model IS NOT DISTINCT FROM $1, count(*), max(free_gpus)
     FROM gpuaas.nodes GROUP BY 1, 2 ORDER BY 1, 2";

/// The cheap alternative measured beside the library's explanation: the most free GPUs on any
/// ready node of the model, one backward step on `nodes_placement`.
const CHEAP_EXPLAIN_SQL: &str =
    "SELECT max(free_gpus) FROM gpuaas.nodes WHERE state = 'ready' AND gpu_model = $1";

/// Mean time of a query alone/// Mean time of a query alone (sequential, warm, one connection).
async fn query_cost(pool: &PgPool, sql: &str, runs: u32) -> Result<Duration, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    for _ in 0..5 {
        sqlx::query(sql)
            .bind(GPU_MODEL)
            .fetch_all(&mut *conn)
            .await?;
    }
    let t = Instant::now();
    for _ in 0..runs {
        sqlx::query(sql)
            .bind(GPU_MODEL)
            .fetch_all(&mut *conn)
            .await?;
    }
    Ok(t.elapsed() / runs)
}

async fn drop_database(url: &str) -> Result<(), sqlx::Error> {
    let server = shared_kernel::db::testing::server_url();
    let name = &url[url.rfind('/').expect("database URL") + 1..];
    let mut admin = sqlx::PgConnection::connect(&server).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    admin.close().await
}

fn main() -> ExitCode {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let (setup_pool, url) = shared_kernel::db::testing::fresh_database().await;
    setup_pool.close().await;
    let pool = shared_kernel::db::connect_and_migrate(&url, args.allocators as u32 + 2)
        .await
        .expect("connect to the bench database");
    let result = bench(&pool, &args).await;
    pool.close().await;
    if args.keep {
        println!("\nkept database: {url}");
    } else if let Err(e) = drop_database(&url).await {
        eprintln!("could not drop {url}: {e}");
    }
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(pool: &PgPool, args: &Args) -> Result<bool, sqlx::Error> {
    let (pg_version, sync_commit): (String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('synchronous_commit')",
    )
    .fetch_one(pool)
    .await?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "placement bench: {} nodes x {GPUS_PER_NODE} GPUs, {} allocations, {} allocators, \
         {cores} cores, Postgres {pg_version} (synchronous_commit={sync_commit})",
        args.nodes, args.allocations, args.allocators
    );

    // ---- setup (not timed)
    let t = Instant::now();
    insert_fleet(pool, args.nodes).await?;
    let sizes = request_sizes(args.allocations, &args.mix);
    let ids = insert_instances(pool, &sizes).await?;
    sqlx::query("CREATE TABLE bench_baseline (id bigserial PRIMARY KEY, worker bigint NOT NULL, payload text NOT NULL, at timestamptz NOT NULL DEFAULT now())")
        .execute(pool)
        .await?;
    sqlx::query("ANALYZE").execute(pool).await?;
    sqlx::query("CHECKPOINT").execute(pool).await.ok();
    println!("setup: {:.1}s", t.elapsed().as_secs_f64());

    // ---- baseline: durable single-row write transactions at the same concurrency
    let mut base = baseline(pool, args.allocations, args.allocators, "bench_baseline").await;
    println!(
        "baseline: {} inserts in {:.2}s; {}",
        base.calls(),
        base.wall.as_secs_f64(),
        base.cpu
    );

    // ---- placement
    let mut main = allocate_all(pool, ids, args.allocators).await;
    report_phase("placement", &main);
    let placed_main = main.placed.len();
    let checks_main = verify(pool, placed_main).await?;

    // ---- fleet filling up: an 8-GPU request for every whole node left; all must fit
    let whole: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM gpuaas.nodes WHERE state = 'ready' AND gpu_model = $1 AND free_gpus >= $2",
    )
    .bind(GPU_MODEL)
    .bind(GPUS_PER_NODE)
    .fetch_one(pool)
    .await?;
    let (fill_count, overflow) = if args.no_full {
        (0, 0)
    } else {
        (whole as usize, args.overflow)
    };
    let fill_ids = insert_instances(pool, &vec![GPUS_PER_NODE; fill_count]).await?;
    sqlx::query("ANALYZE").execute(pool).await?;
    let mut fill = allocate_all(pool, fill_ids, args.allocators).await;
    report_phase("fleet filling up", &fill);

    // ---- fleet full: `overflow` more 8-GPU requests; every answer must be "no capacity"
    let full_ids = insert_instances(pool, &vec![GPUS_PER_NODE; overflow]).await?;
    let mut full = allocate_all(pool, full_ids, args.allocators).await;
    report_phase("fleet full", &full);
    let explain_cost = query_cost(pool, EXPLAIN_SQL, 200).await?;
    let cheap_explain_cost = query_cost(pool, CHEAP_EXPLAIN_SQL, 200).await?;
    let placed_all = placed_main + fill.placed.len();
    let checks_full = verify(pool, placed_all).await?;

    // ---- report
    let base_rate = base.calls() as f64 / base.wall.as_secs_f64();
    let main_rate = placed_main as f64 / main.wall.as_secs_f64();
    let mix: Vec<String> = args.mix.iter().map(|(g, w)| format!("{w}% x{g}")).collect();
    let mut rows = vec![
        row(
            "baseline: 1-row INSERT txn",
            &mut base,
            Rate::Calls,
            "durable commit, same concurrency; rate = txn/s".into(),
        ),
        row(
            "allocate, fleet mostly free",
            &mut main,
            Rate::Placed,
            format!(
                "mix {}; rate = placed/s = {:.3}x baseline",
                mix.join(", "),
                main_rate / base_rate
            ),
        ),
    ];
    if !args.no_full {
        rows.push(row(
            "allocate, fleet filling up",
            &mut fill,
            Rate::Placed,
            format!("8-GPU requests, one per whole node left ({whole}); rate = placed/s"),
        ));
        rows.push(row(
            "allocate, fleet full",
            &mut full,
            Rate::NoCapacity,
            format!(
                "8-GPU requests that cannot fit; rate = no-capacity answers/s; \
                 the explanation query alone takes {} ms (max free GPUs via the index: {} ms)",
                ms(explain_cost),
                ms(cheap_explain_cost)
            ),
        ));
    }

    println!();
    println!(
        "| case | calls | placed | no capacity | errors | rate /s | p50 ms | p99 ms | CPU ms/call | notes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {:.2} | {} |",
            r.name,
            r.calls,
            r.placed,
            r.no_capacity,
            r.errors,
            r.per_s,
            r.p50,
            r.p99,
            r.cpu_ms,
            r.note
        );
    }
    println!();
    println!(
        "{} nodes x {GPUS_PER_NODE} GPUs, {} allocators, {cores} cores, Postgres {pg_version} \
         (synchronous_commit={sync_commit}). CPU ms/call: CPU time of Postgres and the bench per call \
         (all cores, from /proc; other processes excluded). Placement/baseline ratio: {:.3}.",
        args.nodes,
        args.allocators,
        main_rate / base_rate
    );
    println!("Command: `{}`", command_line(args));

    println!();
    let mut ok = main.errors.is_empty() && fill.errors.is_empty() && full.errors.is_empty();
    let mut checks = vec![];
    if !args.no_full {
        checks.push(Check {
            name: "every whole node took an 8-GPU request",
            ok: fill.placed.len() == fill_count,
            detail: format!("{} of {fill_count} placed", fill.placed.len()),
        });
        checks.push(Check {
            name: "a full fleet answers no capacity",
            ok: full.no_capacity.len() == overflow,
            detail: format!(
                "{} of {overflow} answered no capacity",
                full.no_capacity.len()
            ),
        });
    }
    for (phase, checks) in [
        ("after placement", &checks_main),
        ("after fleet full", &checks_full),
        ("fleet full", &checks),
    ] {
        for c in checks {
            println!(
                "check {phase}: {}: {} ({})",
                c.name,
                if c.ok { "ok" } else { "FAILED" },
                c.detail
            );
            ok &= c.ok;
        }
    }
    if !ok {
        println!("FAILED");
    }
    Ok(ok)
}

fn report_phase(name: &str, o: &Outcome) {
    println!(
        "{name}: {} calls in {:.2}s ({} placed, {} no capacity, {} errors); {}",
        o.calls(),
        o.wall.as_secs_f64(),
        o.placed.len(),
        o.no_capacity.len(),
        o.errors.len(),
        o.cpu
    );
    for e in o.errors.iter().take(5) {
        eprintln!("  error: {e}");
    }
}
