//! Placement throughput on a synthetic fleet, against a real Postgres.
//!
//! `cargo bench -p gpuaas-domain --bench placement [-- --allocations N --allocators K --nodes M
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
//! Prototypes, measured in the scratch database only (nothing here changes the library):
//! `--index-with-id` rebuilds `nodes_placement` as `(gpu_model, free_gpus, id)`; `--proto` and
//! `--proto-fn` time the scratch allocators in [`proto`] instead of the library.
//! `--no-full` skips phases 3 and 4 (with `--keep`, to profile a half-full fleet).

use gpuaas_domain::{Placement, placement};
use gpuaas_shared::ids::InstanceId;
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
    /// Prototype: rebuild `nodes_placement` as `(gpu_model, free_gpus, id)` in the scratch
    /// database, so the best-fit `ORDER BY free_gpus, id LIMIT 1` needs no sort.
    index_with_id: bool,
    /// Which allocator to time: the library, or a prototype from [`proto`].
    variant: Variant,
    /// Prototype (with `--proto` only): on the no-capacity path, ask "does any node
    /// fit, locked or not?" as `max(free_gpus) >= n` (one index step) instead of `EXISTS (...)`
    /// (whose generic plan is a sequential scan of the fleet), and explain with
    /// [`CHEAP_EXPLAIN_SQL`] instead of the library's whole-fleet aggregate.
    cheap_explain: bool,
}

/// Set from `--cheap-no-capacity`; read by [`explain`] and [`proto`].
static CHEAP_EXPLAIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// `gpuaas_domain::placement::allocate`.
    Library,
    /// `--proto`: [`proto::allocate`], the library's SQL in 5 round trips instead of 8.
    FewerRoundTrips,
    /// `--proto-fn`: [`proto::allocate_fn`], the same steps in a PL/pgSQL function: 1 round trip.
    Function,
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
        index_with_id: false,
        variant: Variant::Library,
        cheap_explain: false,
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
            "--index-with-id" => args.index_with_id = true,
            "--proto" => args.variant = Variant::FewerRoundTrips,
            "--proto-fn" => args.variant = Variant::Function,
            "--cheap-no-capacity" => args.cheap_explain = true,
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
    assert!(
        !args.cheap_explain || args.variant == Variant::FewerRoundTrips,
        "--cheap-no-capacity needs --proto: the library's no-capacity path is its own"
    );
    CHEAP_EXPLAIN.store(args.cheap_explain, Ordering::Relaxed);
    args
}

fn command_line(a: &Args) -> String {
    let mix: Vec<String> = a.mix.iter().map(|(g, w)| format!("{g}={w}")).collect();
    let mut cmd = format!(
        "cargo bench -p gpuaas-domain --bench placement -- --allocations {} --allocators {} --nodes {} --mix {} --overflow {}",
        a.allocations,
        a.allocators,
        a.nodes,
        mix.join(","),
        a.overflow
    );
    for (on, flag) in [
        (a.no_full, " --no-full"),
        (a.index_with_id, " --index-with-id"),
        (a.variant == Variant::FewerRoundTrips, " --proto"),
        (a.variant == Variant::Function, " --proto-fn"),
        (a.cheap_explain, " --cheap-no-capacity"),
        (a.keep, " --keep"),
    ] {
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
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|i| i.0).collect();
    sqlx::query(
        "INSERT INTO gpuaas.instances (id, project_id, name, sku_id, gpu_count, command, state,
             workflow_id, current_step)
         SELECT u.id, $3, 'bench-' || u.id, $4, u.gpus, 'sleep infinity', 'pending',
                'provision-' || u.id, 'queued'
         FROM unnest($1::uuid[], $2::int[]) AS u(id, gpus)",
    )
    .bind(&uuids)
    .bind(sizes)
    .bind(gpuaas_iam::DEFAULT_PROJECT)
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

async fn allocate_all(
    pool: &PgPool,
    ids: Vec<InstanceId>,
    tasks: usize,
    variant: Variant,
) -> Outcome {
    let ids = Arc::new(ids);
    let n = ids.len();
    let pool = pool.clone();
    run_concurrently(tasks, n, move |i| {
        let pool = pool.clone();
        let id = ids[i];
        async move {
            let placed = match variant {
                Variant::Library => placement::allocate(&pool, id).await,
                Variant::FewerRoundTrips => proto::allocate(&pool, id).await,
                Variant::Function => proto::allocate_fn(&pool, id).await,
            };
            match placed {
                Ok(Placement::Placed(_)) => Ok(true),
                Ok(Placement::NoCapacity { .. }) => Ok(false),
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

/// The library's no-capacity explanation query (its text formatting left out), or with
/// `--cheap-no-capacity` the most free GPUs on a ready node of the model.
async fn explain(pool: &PgPool, gpu_model: &str) -> Result<String, sqlx::Error> {
    if CHEAP_EXPLAIN.load(Ordering::Relaxed) {
        let max_free: Option<i32> = sqlx::query_scalar(CHEAP_EXPLAIN_SQL)
            .bind(gpu_model)
            .fetch_one(pool)
            .await?;
        return Ok(format!(
            "ready {gpu_model} nodes have at most {max_free:?} free"
        ));
    }
    let rows: Vec<(String, bool, i64, Option<i32>)> = sqlx::query_as(EXPLAIN_SQL)
        .bind(gpu_model)
        .fetch_all(pool)
        .await?;
    Ok(format!("{rows:?}"))
}

/// A cheaper explanation to compare with: the most free GPUs on any ready node of the model, one
/// backward step on `nodes_placement` instead of aggregating the whole fleet.
const CHEAP_EXPLAIN_SQL: &str =
    "SELECT max(free_gpus) FROM gpuaas.nodes WHERE state = 'ready' AND gpu_model = $1";

/// Mean time of a query alone (sequential, warm, one connection).
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
    let server = gpuaas_shared::db::testing::server_url();
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
    let (setup_pool, url) = gpuaas_shared::db::testing::fresh_database().await;
    setup_pool.close().await;
    let pool = gpuaas_shared::db::connect_and_migrate(&url, args.allocators as u32 + 2)
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
    if args.index_with_id {
        sqlx::query("DROP INDEX gpuaas.nodes_placement")
            .execute(pool)
            .await?;
        sqlx::query(
            "CREATE INDEX nodes_placement ON gpuaas.nodes (gpu_model, free_gpus, id) WHERE state = 'ready'",
        )
        .execute(pool)
        .await?;
        println!("prototype: nodes_placement rebuilt as (gpu_model, free_gpus, id)");
    }
    if args.variant == Variant::Function {
        sqlx::raw_sql(proto::FUNCTION_SQL).execute(pool).await?;
        println!("prototype: allocating with the PL/pgSQL function bench_allocate");
    } else if args.variant == Variant::FewerRoundTrips {
        println!("prototype: allocating with the 5-round-trip copy of placement::allocate");
    }
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
    let mut main = allocate_all(pool, ids, args.allocators, args.variant).await;
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
    let mut fill = allocate_all(pool, fill_ids, args.allocators, args.variant).await;
    report_phase("fleet filling up", &fill);

    // ---- fleet full: `overflow` more 8-GPU requests; every answer must be "no capacity"
    let full_ids = insert_instances(pool, &vec![GPUS_PER_NODE; overflow]).await?;
    let mut full = allocate_all(pool, full_ids, args.allocators, args.variant).await;
    report_phase("fleet full", &full);
    let explain_cost = query_cost(pool, EXPLAIN_SQL, 200).await?;
    let cheap_explain_cost = query_cost(pool, CHEAP_EXPLAIN_SQL, 200).await?;
    let placed_all = placed_main + fill.placed.len();
    let checks_full = verify(pool, placed_all).await?;

    // ---- report
    let base_rate = base.calls() as f64 / base.wall.as_secs_f64();
    let main_rate = placed_main as f64 / main.wall.as_secs_f64();
    let mix: Vec<String> = args.mix.iter().map(|(g, w)| format!("{w}% x{g}")).collect();
    let variant = match args.variant {
        Variant::Library => String::new(),
        Variant::FewerRoundTrips => " [prototype: 5 round trips]".into(),
        Variant::Function => " [prototype: PL/pgSQL function]".into(),
    } + if args.index_with_id {
        " [prototype index (gpu_model, free_gpus, id)]"
    } else {
        ""
    } + if args.cheap_explain {
        " [prototype cheap no-capacity path]"
    } else {
        ""
    };
    let mut rows = vec![
        row(
            "baseline: 1-row INSERT txn",
            &mut base,
            Rate::Calls,
            "durable commit, same concurrency; rate = txn/s".into(),
        ),
        row(
            &format!("allocate, fleet mostly free{variant}"),
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
            &format!(
                "allocate, fleet full{}",
                if args.cheap_explain {
                    " [prototype cheap no-capacity path]"
                } else {
                    ""
                }
            ),
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

/// A scratch copy of `placement::allocate` for measuring a change before making it: the same
/// locking (instance row, then best-fit node `FOR UPDATE SKIP LOCKED`, then a fresh statement to
/// pick GPUs) and the same retry rules, in 5 round trips instead of 8:
/// - the instance lock also says whether a live allocation exists (the idempotent-retry path
///   fetches it only then);
/// - picking GPUs, inserting the allocations, and updating the node counter and the instance are
///   one statement (data-modifying CTEs), the updates guarded by "all GPUs were picked".
mod proto {
    use gpuaas_domain::{Allocation, Placement};
    use gpuaas_shared::ids::{InstanceId, NodeId};
    use gpuaas_shared::{DomainError, DomainResult};
    use sqlx::PgPool;

    pub async fn allocate(pool: &PgPool, instance: InstanceId) -> DomainResult<Placement> {
        for attempt in 0..2000u32 {
            match try_allocate(pool, instance).await {
                Ok(Some(placement)) => return Ok(placement),
                Ok(None) => {
                    tokio::time::sleep(std::time::Duration::from_millis(1 + (attempt % 4) as u64))
                        .await;
                }
                Err(DomainError::Database(sqlx::Error::Database(e)))
                    if e.is_unique_violation()
                        || matches!(e.code().as_deref(), Some("40P01" | "40001")) => {}
                Err(e) => return Err(e),
            }
        }
        Err(DomainError::Busy {
            code: "allocation_contention",
            message: format!("could not allocate for instance {instance}"),
        })
    }

    /// The library's steps as one PL/pgSQL function, called in autocommit: one round trip. In
    /// READ COMMITTED every statement of a volatile function takes a fresh snapshot, so picking
    /// GPUs after the node lock still sees every allocation committed before the lock.
    pub const FUNCTION_SQL: &str = r#"
CREATE FUNCTION bench_allocate(p_instance uuid)
RETURNS TABLE (outcome text, node_id uuid, node_name text, gpu_index int, gpu_uuid text)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_state text; v_model text; v_count int; v_node uuid; v_indices int[];
BEGIN
    SELECT i.state, s.gpu_model, i.gpu_count INTO v_state, v_model, v_count
    FROM gpuaas.instances i JOIN gpuaas.skus s ON s.id = i.sku_id
    WHERE i.id = p_instance FOR UPDATE OF i;
    IF NOT FOUND THEN
        outcome := 'not_found'; RETURN NEXT; RETURN;
    END IF;
    IF v_state NOT IN ('pending', 'provisioning') THEN
        outcome := 'not_provisionable'; RETURN NEXT; RETURN;
    END IF;
    RETURN QUERY
        SELECT 'existing', a.node_id, n.name, a.gpu_index, g.uuid
        FROM gpuaas.allocations a
        JOIN gpuaas.nodes n ON n.id = a.node_id
        JOIN gpuaas.gpus g ON g.id = a.gpu_id
        WHERE a.instance_id = p_instance AND a.released_at IS NULL ORDER BY a.gpu_index;
    IF FOUND THEN RETURN; END IF;
    SELECT n.id INTO v_node FROM gpuaas.nodes n
    WHERE n.state = 'ready' AND n.gpu_model = v_model AND n.free_gpus >= v_count
    ORDER BY n.free_gpus, n.id LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF v_node IS NULL THEN
        IF EXISTS (SELECT 1 FROM gpuaas.nodes n WHERE n.state = 'ready' AND n.gpu_model = v_model
                   AND n.free_gpus >= v_count) THEN
            outcome := 'busy';
        ELSE
            outcome := 'no_capacity';
        END IF;
        RETURN NEXT; RETURN;
    END IF;
    WITH picked AS (
        SELECT g.id, g.idx FROM gpuaas.gpus g
        WHERE g.node_id = v_node AND g.health = 'healthy'
          AND NOT EXISTS (SELECT 1 FROM gpuaas.allocations a
                          WHERE a.gpu_id = g.id AND a.released_at IS NULL)
        ORDER BY g.idx LIMIT v_count
    ), inserted AS (
        INSERT INTO gpuaas.allocations (instance_id, gpu_id, node_id, gpu_index)
        SELECT p_instance, p.id, v_node, p.idx FROM picked p
        RETURNING gpuaas.allocations.gpu_index
    )
    SELECT array_agg(i.gpu_index ORDER BY i.gpu_index) INTO v_indices FROM inserted i;
    IF coalesce(cardinality(v_indices), 0) <> v_count THEN
        -- The counter was stale: undo the inserts; the caller explains "no capacity".
        RAISE EXCEPTION 'stale placement counter' USING ERRCODE = 'GP001';
    END IF;
    UPDATE gpuaas.nodes SET free_gpus = free_gpus - v_count WHERE id = v_node;
    UPDATE gpuaas.instances SET state = 'provisioning', node_id = v_node, gpu_indices = v_indices,
           current_step = 'starting_workload', status_message = NULL, updated_at = now()
    WHERE id = p_instance;
    RETURN QUERY
        SELECT 'placed', g.node_id, n.name, g.idx, g.uuid
        FROM gpuaas.gpus g JOIN gpuaas.nodes n ON n.id = g.node_id
        WHERE g.node_id = v_node AND g.idx = ANY (v_indices) ORDER BY g.idx;
END
$fn$;
"#;

    /// outcome, node id, node name, GPU index, GPU uuid (all but the outcome NULL unless placed).
    type FnRow = (
        String,
        Option<NodeId>,
        Option<String>,
        Option<i32>,
        Option<String>,
    );

    pub async fn allocate_fn(pool: &PgPool, instance: InstanceId) -> DomainResult<Placement> {
        for attempt in 0..2000u32 {
            let rows: Result<Vec<FnRow>, _> = sqlx::query_as("SELECT * FROM bench_allocate($1)")
                .bind(instance)
                .fetch_all(pool)
                .await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(sqlx::Error::Database(e))
                    if e.is_unique_violation()
                        || matches!(e.code().as_deref(), Some("40P01" | "40001")) =>
                {
                    continue;
                }
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("GP001") => {
                    let explanation = super::explain(pool, "H100-80GB").await?;
                    return Ok(Placement::NoCapacity { explanation });
                }
                Err(e) => return Err(e.into()),
            };
            let Some(first) = rows.first() else {
                return Err(DomainError::conflict(
                    "empty",
                    "bench_allocate returned nothing",
                ));
            };
            match first.0.as_str() {
                "placed" | "existing" => {
                    return Ok(Placement::Placed(Allocation {
                        instance_id: instance,
                        node_id: first.1.expect("node"),
                        node_name: first.2.clone().expect("name"),
                        gpu_indices: rows.iter().map(|r| r.3.expect("idx")).collect(),
                        gpu_uuids: rows.iter().map(|r| r.4.clone().expect("uuid")).collect(),
                    }));
                }
                "busy" => {
                    tokio::time::sleep(std::time::Duration::from_millis(1 + (attempt % 4) as u64))
                        .await;
                }
                "no_capacity" => {
                    let explanation = super::explain(pool, "H100-80GB").await?;
                    return Ok(Placement::NoCapacity { explanation });
                }
                other => return Err(DomainError::conflict("refused", other.to_string())),
            }
        }
        Err(DomainError::Busy {
            code: "allocation_contention",
            message: format!("could not allocate for instance {instance}"),
        })
    }

    /// `None`: every fitting node is locked right now.
    async fn try_allocate(pool: &PgPool, instance: InstanceId) -> DomainResult<Option<Placement>> {
        let mut tx = pool.begin().await?;
        let row: Option<(String, String, i32, bool)> = sqlx::query_as(
            "SELECT i.state, s.gpu_model, i.gpu_count,
                    EXISTS (SELECT 1 FROM gpuaas.allocations a
                            WHERE a.instance_id = i.id AND a.released_at IS NULL)
             FROM gpuaas.instances i JOIN gpuaas.skus s ON s.id = i.sku_id
             WHERE i.id = $1 FOR UPDATE OF i",
        )
        .bind(instance)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((state, gpu_model, gpu_count, has_live)) = row else {
            return Err(DomainError::not_found("instance_not_found", "not found"));
        };
        if state != "pending" && state != "provisioning" {
            return Err(DomainError::conflict("instance_not_provisionable", state));
        }
        if has_live {
            // The library fetches and returns the live allocation here; the bench never gets here.
            tx.commit().await?;
            return Err(DomainError::conflict(
                "already_allocated",
                "bench: unexpected",
            ));
        }
        let node: Option<NodeId> = sqlx::query_scalar(
            "SELECT id FROM gpuaas.nodes
             WHERE state = 'ready' AND gpu_model = $1 AND free_gpus >= $2
             ORDER BY free_gpus, id LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(&gpu_model)
        .bind(gpu_count)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(node) = node else {
            let busy: bool = sqlx::query_scalar(
                    if super::CHEAP_EXPLAIN.load(std::sync::atomic::Ordering::Relaxed) {
                    "SELECT coalesce(max(free_gpus), 0) >= $2 FROM gpuaas.nodes
                     WHERE state = 'ready' AND gpu_model = $1"
                } else {
                    "SELECT EXISTS (SELECT 1 FROM gpuaas.nodes WHERE state = 'ready' AND gpu_model = $1 AND free_gpus >= $2)"
                },
            )
            .bind(&gpu_model)
            .bind(gpu_count)
            .fetch_one(&mut *tx)
            .await?;
            tx.rollback().await?;
            if busy {
                return Ok(None);
            }
            let explanation = super::explain(pool, &gpu_model).await?;
            return Ok(Some(Placement::NoCapacity { explanation }));
        };
        // A fresh statement after the lock, as in the library: its snapshot sees every
        // allocation committed before the lock was granted.
        let picked: Vec<(NodeId, String, i32, String)> = sqlx::query_as(
            "WITH picked AS (
                 SELECT g.id, g.idx, g.uuid, g.node_id, n.name
                 FROM gpuaas.gpus g JOIN gpuaas.nodes n ON n.id = g.node_id
                 WHERE g.node_id = $1 AND g.health = 'healthy'
                   AND NOT EXISTS (SELECT 1 FROM gpuaas.allocations a WHERE a.gpu_id = g.id AND a.released_at IS NULL)
                 ORDER BY g.idx LIMIT $2
             ), inserted AS (
                 INSERT INTO gpuaas.allocations (instance_id, gpu_id, node_id, gpu_index)
                 SELECT $3, id, node_id, idx FROM picked
                 RETURNING gpu_id, gpu_index
             ), complete AS (
                 SELECT count(*) = $2 AS ok, array_agg(gpu_index ORDER BY gpu_index) AS indices
                 FROM inserted
             ), node_counter AS (
                 UPDATE gpuaas.nodes SET free_gpus = free_gpus - $2
                 WHERE id = $1 AND (SELECT ok FROM complete)
                 RETURNING id
             ), instance_row AS (
                 UPDATE gpuaas.instances SET state = 'provisioning', node_id = $1,
                        gpu_indices = (SELECT indices FROM complete),
                        current_step = 'starting_workload', status_message = NULL, updated_at = now()
                 WHERE id = $3 AND (SELECT ok FROM complete)
                 RETURNING id
             )
             SELECT p.node_id, p.name, p.idx, p.uuid FROM picked p JOIN inserted i ON i.gpu_id = p.id
             ORDER BY p.idx",
        )
        .bind(node)
        .bind(gpu_count)
        .bind(instance)
        .fetch_all(&mut *tx)
        .await?;
        if picked.len() != gpu_count as usize {
            tx.rollback().await?;
            let explanation = super::explain(pool, &gpu_model).await?;
            return Ok(Some(Placement::NoCapacity { explanation }));
        }
        tx.commit().await?;
        Ok(Some(Placement::Placed(Allocation {
            instance_id: instance,
            node_id: picked[0].0,
            node_name: picked[0].1.clone(),
            gpu_indices: picked.iter().map(|p| p.2).collect(),
            gpu_uuids: picked.iter().map(|p| p.3.clone()).collect(),
        })))
    }
}
