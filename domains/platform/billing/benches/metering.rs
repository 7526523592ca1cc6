//! Rating throughput against a real Postgres: what [`metering::run`] costs over a plain
//! aggregate of the same usage events.
//!
//! `cargo bench -p platform-billing --bench metering -- [--events N] [--rounds R] [--keep]`
//!
//! Setup (not timed): a fresh database on the server `GPUAAS_TEST_DATABASE_URL` names; a price
//! book version pricing 20 meter/SKU pairs (5 meters × 4 SKUs); `--events` usage events (default
//! 10,000,000) of one org spread evenly over those pairs and over one month, inserted server-side
//! (`INSERT … SELECT generate_series`), then `VACUUM ANALYZE`.
//!
//! Timed, `--rounds` times (default 3), each round on a fresh period holding every event (the
//! month, starting one more second earlier each round, so no rated line exists for it yet):
//! 1. plain: `SELECT meter, sku, sum(quantity) … GROUP BY 1, 2` over the period: the floor;
//! 2. run: [`metering::run`] (lock, aggregate spans and events, rate, read what is written, write
//!    20 originals, commit);
//! 3. rerun: [`metering::run`] again on the same period (unchanged inputs: writes nothing).
//!
//! Prints each phase's median and the ratio to the plain query. Checks that each run rated every
//! event's quantity and that a rerun wrote nothing; a failed check exits non-zero. The database
//! is dropped at the end unless `--keep` is given.

use chrono::{DateTime, Duration, Utc};
use platform_billing::price_book::{self, NewPriceBook, Price};
use platform_billing::{Decimal, Period, metering};
use shared_ids::OrgId;
use sqlx::{Connection, PgPool};
use std::process::ExitCode;
use std::time::Instant;

const METERS: i64 = 5;
const SKUS: i64 = 4;
const CHUNK: i64 = 1_000_000;

struct Args {
    events: i64,
    rounds: usize,
    keep: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 10_000_000,
        rounds: 3,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--events" => args.events = value(&arg).parse().expect("--events N"),
            "--rounds" => args.rounds = value(&arg).parse().expect("--rounds N"),
            "--keep" => args.keep = true,
            // `cargo bench` passes `--bench`; ignore it and anything else cargo adds.
            _ => {}
        }
    }
    assert!(args.events > 0 && args.rounds > 0, "need events and rounds");
    args
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
    let pool = shared_kernel::db::connect_and_migrate(&url, 4)
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

async fn drop_database(url: &str) -> Result<(), sqlx::Error> {
    let server = shared_kernel::db::testing::server_url();
    let name = &url[url.rfind('/').expect("database URL") + 1..];
    let mut admin = sqlx::PgConnection::connect(&server).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    admin.close().await
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("an RFC 3339 instant")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

async fn bench(pool: &PgPool, args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let (pg_version,): (String,) = sqlx::query_as("SELECT current_setting('server_version')")
        .fetch_one(pool)
        .await?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "metering bench: {} events over {} meter/SKU pairs, {} rounds, {cores} cores, Postgres {pg_version}",
        args.events,
        METERS * SKUS,
        args.rounds
    );
    println!(
        "command: cargo bench -p platform-billing --bench metering -- --events {} --rounds {}",
        args.events, args.rounds
    );

    // A version pricing every pair the events use, taking effect with version 1 (so it is the
    // one in effect for the bench's month).
    let mut prices = Vec::new();
    for m in 0..METERS {
        for s in 0..SKUS {
            prices.push(Price {
                meter: format!("bench_meter_{m}"),
                sku: format!("sku-{s}"),
                unit_price_minor: Decimal::from(15 + m * 10 + s),
                per_units: 1_000_000,
                unit_label: "million units".into(),
                currency: "USD".into(),
            });
        }
    }
    let book = price_book::publish(
        pool,
        &NewPriceBook {
            effective_from: t("2026-01-01T00:00:00Z"),
            note: "metering bench".into(),
            prices,
        },
        "bench",
    )
    .await?;

    let org = OrgId::new();
    let month = Period::parse("2026-10")?;
    let month_s = (month.end - month.start).num_seconds();
    let setup = Instant::now();
    let mut from = 0i64;
    while from < args.events {
        let to = (from + CHUNK).min(args.events) - 1;
        sqlx::query(
            "INSERT INTO billing.usage_events
                 (id, org_id, meter, sku, quantity, started_at, ended_at, source)
             SELECT 'bench-' || g, $1, 'bench_meter_' || (g % $5), 'sku-' || ((g / $5) % $6),
                    (g % 1000) + 1,
                    $2 + (g % $3) * interval '1 second', $2 + (g % $3) * interval '1 second',
                    'bench'
               FROM generate_series($4::bigint, $7::bigint) AS g",
        )
        .bind(org.uuid())
        .bind(month.start)
        .bind(month_s)
        .bind(from)
        .bind(METERS)
        .bind(SKUS)
        .bind(to)
        .execute(pool)
        .await?;
        from = to + 1;
        eprint!("\r  inserted {from} events");
    }
    eprintln!();
    sqlx::query("VACUUM ANALYZE billing.usage_events")
        .execute(pool)
        .await?;
    println!(
        "setup: {} events inserted and analyzed in {:.1} s",
        args.events,
        setup.elapsed().as_secs_f64()
    );

    let plain_sql = "SELECT meter, sku, sum(quantity) FROM billing.usage_events
                      WHERE org_id = $1 AND started_at >= $2 AND started_at < $3 GROUP BY 1, 2";
    let (mut plain, mut runs, mut reruns) = (vec![], vec![], vec![]);
    let mut ok = true;
    for round in 0..args.rounds {
        let period = Period::new(month.start - Duration::seconds(round as i64 + 1), month.end)?;
        let t0 = Instant::now();
        let sums: Vec<(String, String, Decimal)> = sqlx::query_as(plain_sql)
            .bind(org.uuid())
            .bind(period.start)
            .bind(period.end)
            .fetch_all(pool)
            .await?;
        plain.push(t0.elapsed().as_secs_f64());
        let expected: Decimal = sums.iter().map(|s| s.2).sum();

        let t1 = Instant::now();
        let outcome = metering::run(pool, org, period, None, "bench").await?;
        runs.push(t1.elapsed().as_secs_f64());
        let rated: Decimal = outcome.changes.iter().map(|c| c.quantity_after).sum();
        if outcome.price_version != book.version
            || outcome.changes.len() != sums.len()
            || rated != expected
        {
            eprintln!(
                "round {round}: the run rated {rated} in {} lines with version {}, the plain \
                 query sums {expected} in {} groups (version {})",
                outcome.changes.len(),
                outcome.price_version,
                sums.len(),
                book.version
            );
            ok = false;
        }

        let t2 = Instant::now();
        let again = metering::run(pool, org, period, None, "bench").await?;
        reruns.push(t2.elapsed().as_secs_f64());
        if !again.changes.is_empty() {
            eprintln!("round {round}: a rerun wrote {} lines", again.changes.len());
            ok = false;
        }
        println!(
            "round {round}: plain {:.0} ms, run {:.0} ms, rerun {:.0} ms ({} lines, total {} minor)",
            plain[round] * 1e3,
            runs[round] * 1e3,
            reruns[round] * 1e3,
            outcome.changes.len(),
            outcome.total_after.round_dp(6)
        );
    }
    let (p, r, rr) = (median(plain), median(runs), median(reruns));
    println!(
        "median: plain aggregate {:.0} ms, metering::run {:.0} ms ({:.2}x), rerun {:.0} ms ({:.2}x)",
        p * 1e3,
        r * 1e3,
        r / p,
        rr * 1e3,
        rr / p
    );
    println!(
        "throughput: metering::run rates {:.1} M events/s",
        args.events as f64 / r / 1e6
    );
    if !ok {
        eprintln!("FAILED: a check above did not hold");
    }
    Ok(ok)
}
