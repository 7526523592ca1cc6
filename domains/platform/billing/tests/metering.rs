//! Metering and the price book against a real Postgres: rating, reruns that write only the
//! difference, late and removed usage, price corrections, concurrency, and refusals.

use chrono::{DateTime, Duration, Utc};
use platform_billing::metering::{self, RatedLine};
use platform_billing::price_book::{self, NewPriceBook, Price};
use platform_billing::usage::{self, SpanStart, UsageEvent};
use platform_billing::{Decimal, Period};
use shared_ids::OrgId;
use sqlx::PgPool;

const H100: &str = "h100-80gb-sxm";
const A100: &str = "a100-40gb";
const BY: &str = "system:test";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("an RFC 3339 instant")
}

fn d(s: &str) -> Decimal {
    s.parse().expect("a decimal")
}

/// A past hour (version 1 is in effect since 2026-01-01).
fn hour(start: &str) -> Period {
    let start = t(start);
    Period::new(start, start + Duration::hours(1)).unwrap()
}

async fn open(pool: &PgPool, id: &str, org: OrgId, sku: &str, units: i32, at: DateTime<Utc>) {
    let mut conn = pool.acquire().await.unwrap();
    let opened = usage::open_span(
        &mut conn,
        &SpanStart {
            id: id.into(),
            org,
            project: None,
            meter: usage::GPU_SECONDS.into(),
            sku: sku.into(),
            units,
            started_at: at,
        },
    )
    .await
    .unwrap();
    assert!(opened, "span {id} opened once");
}

async fn close(pool: &PgPool, id: &str, at: DateTime<Utc>) {
    let mut conn = pool.acquire().await.unwrap();
    assert!(
        usage::close_span(&mut conn, id, at).await.unwrap(),
        "span {id} closed once"
    );
}

fn event(id: &str, org: OrgId, meter: &str, quantity: i64, at: DateTime<Utc>) -> UsageEvent {
    UsageEvent {
        id: id.into(),
        org,
        project: None,
        meter: meter.into(),
        sku: String::new(),
        quantity: Decimal::from(quantity),
        started_at: at,
        ended_at: at,
        source: "test".into(),
    }
}

async fn record(pool: &PgPool, e: &UsageEvent) -> bool {
    let mut conn = pool.acquire().await.unwrap();
    usage::record(&mut conn, e).await.unwrap()
}

/// Row counts of every table of schema billing.
async fn billing_rows(pool: &PgPool) -> Vec<(String, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'billing' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        tables.len() >= 10,
        "the billing schema's tables: {tables:?}"
    );
    let mut counts = Vec::new();
    for table in tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM billing.{table}"))
            .fetch_one(pool)
            .await
            .unwrap();
        counts.push((table, n));
    }
    counts
}

fn only<'a>(lines: &'a [RatedLine], meter: &str, sku: &str) -> Vec<&'a RatedLine> {
    lines
        .iter()
        .filter(|l| l.meter == meter && l.sku == sku)
        .collect()
}

fn sum_amount(lines: &[RatedLine]) -> Decimal {
    lines.iter().map(|l| l.amount_exact).sum()
}

#[test]
fn rate_is_exact_and_never_rounds_sub_minor_amounts_to_zero() {
    let tokens = Price {
        meter: "input_tokens".into(),
        sku: String::new(),
        unit_price_minor: Decimal::from(15),
        per_units: 1_000_000,
        unit_label: "million input tokens".into(),
        currency: "USD".into(),
    };
    assert_eq!(tokens.rate(Decimal::from(37)), d("0.000555"));
    assert_eq!(tokens.rate(Decimal::ONE), d("0.000015"));
    assert_eq!(tokens.rate(Decimal::ZERO), Decimal::ZERO);
    let gpu = Price {
        meter: "gpu_seconds".into(),
        sku: H100.into(),
        unit_price_minor: Decimal::from(299),
        per_units: 3600,
        unit_label: "GPU-hour".into(),
        currency: "USD".into(),
    };
    assert_eq!(gpu.rate(Decimal::from(180)), d("14.95"));
    assert_eq!(gpu.rate(Decimal::from(3600)), Decimal::from(299));
    // 1 s of 299/3600 = 0.0830555…: kept to 12 places, half away from zero.
    assert_eq!(gpu.rate(Decimal::ONE), d("0.083055555556"));
}

#[tokio::test]
async fn a_rerun_with_unchanged_inputs_writes_nothing_anywhere() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let p = hour("2026-11-10T10:00:00Z");
    open(
        &pool,
        "instance/a",
        org,
        H100,
        8,
        p.start + Duration::minutes(5),
    )
    .await;
    close(&pool, "instance/a", p.start + Duration::minutes(35)).await;
    // Open, in a past period: counts up to the period's end.
    open(
        &pool,
        "instance/b",
        org,
        A100,
        1,
        p.start + Duration::minutes(30),
    )
    .await;
    assert!(record(&pool, &event("e1", org, "input_tokens", 1234, p.start)).await);
    assert!(
        record(
            &pool,
            &event(
                "e2",
                org,
                "output_tokens",
                99,
                p.start + Duration::minutes(59)
            )
        )
        .await
    );
    // Outside the period (and another org): not counted.
    assert!(record(&pool, &event("e3", org, "input_tokens", 5, p.end)).await);
    assert!(
        record(
            &pool,
            &event("e4", OrgId::new(), "input_tokens", 7, p.start)
        )
        .await
    );

    let first = metering::run(&pool, org, p, None, BY).await.unwrap();
    assert_eq!(first.price_version, 1);
    assert!(first.run_id.is_some());
    assert_eq!(first.changes.len(), 4, "{:?}", first.changes);
    assert!(first.changes.iter().all(|c| c.kind == "original"));
    let lines = metering::lines(&pool, org, p).await.unwrap();
    let q = |meter: &str, sku: &str| only(&lines, meter, sku)[0].quantity;
    assert_eq!(q("gpu_seconds", H100), Decimal::from(8 * 30 * 60));
    assert_eq!(q("gpu_seconds", A100), Decimal::from(30 * 60));
    assert_eq!(q("input_tokens", ""), Decimal::from(1234));
    assert_eq!(q("output_tokens", ""), Decimal::from(99));
    let expected = Decimal::from(8 * 30 * 60 * 299) / Decimal::from(3600)
        + Decimal::from(30 * 60 * 129) / Decimal::from(3600)
        + d("0.01851")
        + d("0.00594");
    assert_eq!(first.total_before, Decimal::ZERO);
    assert_eq!(first.total_after, expected);
    assert_eq!(sum_amount(&lines), expected);
    assert!(
        lines
            .iter()
            .all(|l| l.run_id == first.run_id.unwrap() && l.created_by == BY)
    );
    // rate() computes the same without writing.
    let rated = metering::rate(&pool, org, p, None).await.unwrap();
    assert_eq!(rated.len(), 4);
    assert_eq!(
        rated.iter().map(|r| r.amount_exact).sum::<Decimal>(),
        expected
    );

    let before = billing_rows(&pool).await;
    for _ in 0..2 {
        let again = metering::run(&pool, org, p, None, BY).await.unwrap();
        assert_eq!(again.run_id, None);
        assert!(again.changes.is_empty(), "{:?}", again.changes);
        assert_eq!(again.total_before, expected);
        assert_eq!(again.total_after, expected);
        // Naming the same version explicitly changes nothing either.
        let explicit = metering::run(&pool, org, p, Some(1), BY).await.unwrap();
        assert!(explicit.changes.is_empty());
    }
    assert_eq!(
        billing_rows(&pool).await,
        before,
        "a rerun writes no row in any table"
    );
    // An org without usage writes nothing at all (this org's open span runs on into later periods).
    let empty = metering::run(&pool, OrgId::new(), p, None, BY)
        .await
        .unwrap();
    assert!(empty.changes.is_empty() && empty.run_id.is_none());
    assert_eq!(billing_rows(&pool).await, before);
}

#[tokio::test]
async fn late_usage_gives_exactly_one_adjustment_linked_to_the_original() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let p = hour("2026-11-10T10:00:00Z");
    assert!(record(&pool, &event("tok-1", org, "input_tokens", 1_000, p.start)).await);
    open(&pool, "instance/a", org, H100, 1, p.start).await;
    close(&pool, "instance/a", p.start + Duration::seconds(600)).await;
    let first = metering::run(&pool, org, p, None, BY).await.unwrap();
    assert_eq!(first.changes.len(), 2);

    // A late event (recorded after the run, started inside the period).
    assert!(
        record(
            &pool,
            &event(
                "tok-2",
                org,
                "input_tokens",
                2_000,
                p.start + Duration::minutes(40)
            )
        )
        .await
    );
    let rerun = metering::run(&pool, org, p, None, BY).await.unwrap();
    assert_eq!(rerun.changes.len(), 1, "{:?}", rerun.changes);
    let change = &rerun.changes[0];
    assert_eq!(
        (change.kind.as_str(), change.meter.as_str()),
        ("adjustment", "input_tokens")
    );
    assert_eq!(
        (change.quantity_before, change.quantity_after),
        (d("1000"), d("3000"))
    );
    assert_eq!(
        (change.amount_before, change.amount_after),
        (d("0.015"), d("0.045"))
    );
    let lines = metering::lines(&pool, org, p).await.unwrap();
    let tokens = only(&lines, "input_tokens", "");
    assert_eq!(tokens.len(), 2);
    let (original, adjustment) = (tokens[0], tokens[1]);
    assert_eq!(original.kind, "original");
    assert_eq!(original.corrects, None);
    assert_eq!(adjustment.kind, "adjustment");
    assert_eq!(adjustment.id, change.line_id);
    assert_eq!(adjustment.corrects, Some(original.id));
    assert_eq!(adjustment.quantity, d("2000"));
    assert_eq!(adjustment.amount_exact, d("0.03"));
    assert_eq!(adjustment.reason, "late usage");
    assert_eq!(adjustment.run_id, rerun.run_id.unwrap());
    assert_ne!(adjustment.run_id, original.run_id);
    assert_eq!(rerun.total_after - rerun.total_before, d("0.03"));

    // A late span of an already rated SKU (opened late, closed inside the period).
    open(
        &pool,
        "instance/b",
        org,
        H100,
        2,
        p.start + Duration::minutes(50),
    )
    .await;
    close(
        &pool,
        "instance/b",
        p.start + Duration::minutes(50) + Duration::seconds(36),
    )
    .await;
    let rerun = metering::run(&pool, org, p, None, BY).await.unwrap();
    assert_eq!(rerun.changes.len(), 1, "{:?}", rerun.changes);
    let lines = metering::lines(&pool, org, p).await.unwrap();
    let gpu = only(&lines, "gpu_seconds", H100);
    assert_eq!(gpu.len(), 2);
    assert_eq!(gpu[1].corrects, Some(gpu[0].id));
    assert_eq!(gpu[1].quantity, d("72"));
    assert_eq!(
        gpu[1].amount_exact,
        d("5.98"),
        "72 GPU-seconds at 299 per 3600"
    );
    assert_eq!(gpu.iter().map(|l| l.quantity).sum::<Decimal>(), d("672"));
    assert_eq!(
        lines.len(),
        4,
        "originals first, then adjustments, oldest first"
    );
    assert_eq!(
        lines.iter().map(|l| l.kind.as_str()).collect::<Vec<_>>(),
        ["original", "original", "adjustment", "adjustment"]
    );
    assert!(
        metering::run(&pool, org, p, None, BY)
            .await
            .unwrap()
            .changes
            .is_empty()
    );
}

#[tokio::test]
async fn duplicate_events_count_once_within_and_across_batches() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let p = hour("2026-11-10T10:00:00Z");
    let a = event("req-a", org, "input_tokens", 100, p.start);
    let b = event(
        "req-b",
        org,
        "input_tokens",
        10,
        p.start + Duration::minutes(1),
    );
    let c = event(
        "req-c",
        org,
        "input_tokens",
        1,
        p.start + Duration::minutes(2),
    );
    let one = usage::record_batch(&pool, org, &[a.clone(), b.clone(), a.clone()])
        .await
        .unwrap();
    assert_eq!((one.accepted, one.duplicates), (2, 1));
    let two = usage::record_batch(&pool, org, &[b.clone(), c.clone(), a.clone()])
        .await
        .unwrap();
    assert_eq!((two.accepted, two.duplicates), (1, 2));
    assert!(
        !record(&pool, &a).await,
        "a single record of a known id is a duplicate"
    );
    let run = metering::run(&pool, org, p, None, BY).await.unwrap();
    assert_eq!(run.changes.len(), 1);
    assert_eq!(run.changes[0].quantity_after, d("111"));
    assert_eq!(run.changes[0].amount_after, d("0.001665"));
}

#[tokio::test]
async fn spans_count_per_second_at_the_skus_hourly_price() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let p = hour("2026-11-10T10:00:00Z");
    let start = p.start + Duration::seconds(100);
    open(&pool, "instance/a", org, H100, 2, start).await;
    close(&pool, "instance/a", start + Duration::seconds(90)).await;
    let rated = metering::rate(&pool, org, p, None).await.unwrap();
    assert_eq!(rated.len(), 1);
    assert_eq!(rated[0].quantity, d("180"));
    assert_eq!(rated[0].amount_exact, d("14.95"), "180 × 299 / 3600");
    assert_eq!(
        (rated[0].unit_label.as_str(), rated[0].currency.as_str()),
        ("GPU-hour", "USD")
    );
    let run = metering::run(&pool, org, p, None, BY).await.unwrap();
    assert_eq!(run.total_after, d("14.95"));
    assert_eq!(
        metering::cost_of_span(&pool, "instance/a").await.unwrap(),
        Some(d("14.95"))
    );
    assert_eq!(
        metering::cost_of_span(&pool, "instance/none")
            .await
            .unwrap(),
        None
    );
    // Sub-second precision: 1.5 s of 1 GPU.
    let at = p.start + Duration::minutes(10);
    open(&pool, "instance/b", org, A100, 1, at).await;
    close(&pool, "instance/b", at + Duration::milliseconds(1500)).await;
    let rated = metering::rate(&pool, org, p, None).await.unwrap();
    let a100 = rated.iter().find(|r| r.sku == A100).unwrap();
    assert_eq!(a100.quantity, d("1.5"));
    assert_eq!(a100.amount_exact, d("0.05375"), "1.5 × 129 / 3600");
}

#[tokio::test]
async fn a_span_across_a_period_close_counts_once_on_each_side() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let p1 = hour("2026-11-10T10:00:00Z");
    let p2 = p1.next();
    open(
        &pool,
        "instance/across",
        org,
        H100,
        1,
        p1.end - Duration::seconds(10),
    )
    .await;
    close(&pool, "instance/across", p1.end + Duration::seconds(20)).await;
    // Never closed: in past periods it counts up to each period's end.
    open(
        &pool,
        "instance/open",
        org,
        A100,
        3,
        p1.end - Duration::seconds(30),
    )
    .await;

    let r1 = metering::run(&pool, org, p1, None, BY).await.unwrap();
    let r2 = metering::run(&pool, org, p2, None, BY).await.unwrap();
    let q = |o: &metering::RunOutcome, sku: &str| {
        o.changes
            .iter()
            .find(|c| c.sku == sku)
            .map(|c| c.quantity_after)
    };
    assert_eq!(q(&r1, H100), Some(d("10")));
    assert_eq!(q(&r2, H100), Some(d("20")));
    assert_eq!(q(&r1, A100), Some(d("90")));
    assert_eq!(q(&r2, A100), Some(d("10800")), "the whole of p2, 3 units");
    // Nothing twice: rated over both periods = the span's whole length.
    assert_eq!(q(&r1, H100).unwrap() + q(&r2, H100).unwrap(), d("30"));
    assert_eq!(
        metering::cost_of_span(&pool, "instance/across")
            .await
            .unwrap(),
        Some(d("2.491666666667")),
        "30 × 299 / 3600, to 12 places"
    );
    // A period before the spans: nothing.
    assert!(
        metering::rate(&pool, org, hour("2026-11-10T09:00:00Z"), None)
            .await
            .unwrap()
            .is_empty()
    );
    // Daily usage splits at UTC midnight.
    open(
        &pool,
        "instance/midnight",
        org,
        "l40s-48gb",
        2,
        t("2026-11-11T23:59:00Z"),
    )
    .await;
    close(&pool, "instance/midnight", t("2026-11-12T00:01:30Z")).await;
    let days = metering::daily(
        &pool,
        org,
        t("2026-11-11T00:00:00Z"),
        t("2026-11-13T00:00:00Z"),
    )
    .await
    .unwrap();
    let l40s: Vec<_> = days
        .iter()
        .filter(|u| u.sku == "l40s-48gb")
        .map(|u| (u.day.to_string(), u.quantity))
        .collect();
    assert_eq!(
        l40s,
        [
            ("2026-11-11".to_string(), d("120")),
            ("2026-11-12".to_string(), d("180"))
        ]
    );
    assert_eq!(
        metering::daily(&pool, org, p1.end, p1.start)
            .await
            .unwrap_err()
            .code(),
        "invalid_interval"
    );
}

#[tokio::test]
async fn a_span_closed_earlier_than_a_run_assumed_gives_a_negative_adjustment() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let p = hour("2026-11-10T10:00:00Z");
    let start = p.start + Duration::minutes(10);
    open(&pool, "instance/fenced", org, H100, 4, start).await;
    let first = metering::run(&pool, org, p, None, BY).await.unwrap();
    assert_eq!(
        first.changes[0].quantity_after,
        d("12000"),
        "4 GPUs × 50 min, up to the end"
    );
    assert_eq!(first.total_after, d("996.666666666667"));
    // The node was fenced: the instance really stopped 15 minutes in.
    close(&pool, "instance/fenced", start + Duration::minutes(15)).await;
    let rerun = metering::run(&pool, org, p, None, BY).await.unwrap();
    assert_eq!(rerun.changes.len(), 1);
    let lines = metering::lines(&pool, org, p).await.unwrap();
    assert_eq!(lines.len(), 2);
    let adj = &lines[1];
    assert_eq!(adj.id, rerun.changes[0].line_id);
    assert_eq!(adj.kind, "adjustment");
    assert_eq!(adj.corrects, Some(lines[0].id));
    assert_eq!(adj.quantity, d("-8400"));
    assert_eq!(adj.reason, "usage removed");
    // 3600 × 299 / 3600 = 299 is the truth; the lines now sum to it exactly.
    assert_eq!(sum_amount(&lines), d("299"));
    assert_eq!(adj.amount_exact, d("299") - d("996.666666666667"));
    assert!(adj.amount_exact.is_sign_negative());

    // A span a run counted that turns out to have stopped before the period began: the group's
    // usage vanishes, and an adjustment takes it back to zero.
    open(
        &pool,
        "instance/gone",
        org,
        A100,
        1,
        p.start - Duration::minutes(10),
    )
    .await;
    let counted = metering::run(&pool, org, p, None, BY).await.unwrap();
    assert_eq!(counted.changes.len(), 1);
    assert_eq!(counted.changes[0].amount_after, d("129"));
    close(&pool, "instance/gone", p.start - Duration::minutes(5)).await;
    let gone = metering::run(&pool, org, p, None, BY).await.unwrap();
    assert_eq!(gone.changes.len(), 1, "{:?}", gone.changes);
    let change = &gone.changes[0];
    assert_eq!(
        (change.sku.as_str(), change.kind.as_str()),
        (A100, "adjustment")
    );
    assert_eq!(
        (change.quantity_after, change.amount_after),
        (Decimal::ZERO, Decimal::ZERO)
    );
    let lines = metering::lines(&pool, org, p).await.unwrap();
    let a100 = only(&lines, "gpu_seconds", A100);
    assert_eq!(a100.len(), 2);
    assert_eq!(a100[1].corrects, Some(a100[0].id));
    assert_eq!(
        (a100[1].quantity, a100[1].amount_exact),
        (d("-3600"), d("-129"))
    );
    assert_eq!(a100[1].reason, "usage removed");
    assert_eq!(a100[1].currency, "USD");
    assert_eq!(sum_amount(&lines), d("299"));
    assert!(
        metering::rate(&pool, org, p, None)
            .await
            .unwrap()
            .iter()
            .all(|r| r.sku != A100)
    );
    assert!(
        metering::run(&pool, org, p, None, BY)
            .await
            .unwrap()
            .changes
            .is_empty()
    );
}

#[tokio::test]
async fn sub_minor_amounts_are_written_exactly() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let p = hour("2026-11-10T10:00:00Z");
    assert!(record(&pool, &event("t", org, "input_tokens", 37, p.start)).await);
    let run = metering::run(&pool, org, p, None, BY).await.unwrap();
    assert_eq!(run.total_after, d("0.000555"));
    let lines = metering::lines(&pool, org, p).await.unwrap();
    assert_eq!(lines[0].amount_exact, d("0.000555"));
    assert!(!lines[0].amount_exact.is_zero());
    let stored: String = sqlx::query_scalar("SELECT amount_exact::text FROM billing.rated_lines")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, "0.000555000000");
}

fn v1_prices() -> Vec<Price> {
    let price = |meter: &str, sku: &str, minor: i64, per: i64, label: &str| Price {
        meter: meter.into(),
        sku: sku.into(),
        unit_price_minor: Decimal::from(minor),
        per_units: per,
        unit_label: label.into(),
        currency: "USD".into(),
    };
    vec![
        price("gpu_seconds", H100, 299, 3600, "GPU-hour"),
        price("gpu_seconds", A100, 129, 3600, "GPU-hour"),
        price("gpu_seconds", "l40s-48gb", 99, 3600, "GPU-hour"),
        price("input_tokens", "", 15, 1_000_000, "million input tokens"),
        price("output_tokens", "", 60, 1_000_000, "million output tokens"),
    ]
}

#[tokio::test]
async fn a_price_correction_adjusts_only_the_amount_difference() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let p = hour("2026-11-10T10:00:00Z");
    open(&pool, "instance/a", org, H100, 1, p.start).await;
    close(&pool, "instance/a", p.end).await;
    assert!(record(&pool, &event("t", org, "input_tokens", 1_000_000, p.start)).await);
    let first = metering::run(&pool, org, p, None, BY).await.unwrap();
    assert_eq!(first.total_after, d("314"));

    // Finance corrects the H100 price from the launch, as version 2.
    let v1 = price_book::get(&pool, 1).await.unwrap();
    let mut prices = v1_prices();
    prices[0].unit_price_minor = d("249.5");
    let v2 = price_book::publish(
        &pool,
        &NewPriceBook {
            effective_from: v1.effective_from,
            note: "H100 correction".into(),
            prices,
        },
        "user:finance",
    )
    .await
    .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.created_by, "user:finance");
    assert_eq!(
        price_book::in_effect(&pool, p.start).await.unwrap().version,
        2
    );

    let rerun = metering::run(&pool, org, p, Some(2), "user:finance")
        .await
        .unwrap();
    assert_eq!(rerun.price_version, 2);
    assert_eq!(
        rerun.changes.len(),
        1,
        "the tokens' price did not change: {:?}",
        rerun.changes
    );
    let lines = metering::lines(&pool, org, p).await.unwrap();
    let gpu = only(&lines, "gpu_seconds", H100);
    assert_eq!(gpu.len(), 2);
    let adj = gpu[1];
    assert_eq!(adj.kind, "adjustment");
    assert_eq!(adj.corrects, Some(gpu[0].id));
    assert_eq!(adj.quantity, Decimal::ZERO, "the usage did not change");
    assert_eq!(adj.amount_exact, d("-49.5"));
    assert_eq!(adj.price_version, 2);
    assert_eq!(adj.reason, "price version 2");
    assert_eq!(rerun.total_before, d("314"));
    assert_eq!(rerun.total_after, d("264.5"));
    // Rerunning with version 2 (explicitly or as the version in effect) changes nothing more.
    assert!(
        metering::run(&pool, org, p, None, BY)
            .await
            .unwrap()
            .changes
            .is_empty()
    );
    assert!(
        metering::run(&pool, org, p, Some(2), BY)
            .await
            .unwrap()
            .changes
            .is_empty()
    );
    // Back to version 1 adjusts back.
    let back = metering::run(&pool, org, p, Some(1), BY).await.unwrap();
    assert_eq!(back.total_after, d("314"));
    assert_eq!(back.changes[0].price_version, 1);
}

#[tokio::test]
async fn concurrent_runs_of_one_org_and_period_write_one_set_of_originals() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let mut p = hour("2026-11-10T00:00:00Z");
    for round in 0..5 {
        open(&pool, &format!("instance/{round}"), org, H100, 1, p.start).await;
        assert!(
            record(
                &pool,
                &event(&format!("t{round}"), org, "input_tokens", 10, p.start)
            )
            .await
        );
        let (a, b, c) = tokio::join!(
            metering::run(&pool, org, p, None, "runner-a"),
            metering::run(&pool, org, p, None, "runner-b"),
            metering::run(&pool, org, p, None, "runner-c"),
        );
        let outcomes = [a.unwrap(), b.unwrap(), c.unwrap()];
        let writers: Vec<_> = outcomes.iter().filter(|o| o.run_id.is_some()).collect();
        assert_eq!(writers.len(), 1, "round {round}: exactly one run writes");
        assert_eq!(writers[0].changes.len(), 2);
        let lines = metering::lines(&pool, org, p).await.unwrap();
        assert_eq!(lines.len(), 2, "round {round}: {lines:?}");
        assert!(lines.iter().all(|l| l.kind == "original"));
        p = p.next();
    }
}

#[tokio::test]
async fn unpriced_usage_is_refused_and_writes_nothing() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let p = hour("2026-11-10T10:00:00Z");
    open(&pool, "instance/a", org, H100, 1, p.start).await;
    open(&pool, "instance/b", org, "b200-192gb", 1, p.start).await;
    // The ingest path refuses an unpriced meter (see
    // `events_of_an_unpriced_meter_are_refused_at_ingest`): written raw, as a product might have
    // before that check, or before a price was withdrawn.
    sqlx::query(
        "INSERT INTO billing.usage_events (id, org_id, meter, sku, quantity, started_at, ended_at,
                                           source)
         VALUES ('x', $1, 'mystery_calls', '', 3, $2, $2, 'test')",
    )
    .bind(org.uuid())
    .bind(p.start)
    .execute(&pool)
    .await
    .unwrap();
    let before = billing_rows(&pool).await;
    let err = metering::run(&pool, org, p, None, BY).await.unwrap_err();
    assert_eq!(err.code(), "unpriced_usage");
    let message = err.to_string();
    assert!(message.contains("gpu_seconds/b200-192gb"), "{message}");
    assert!(message.contains("mystery_calls/"), "{message}");
    assert!(!message.contains(H100), "{message}");
    assert_eq!(
        billing_rows(&pool).await,
        before,
        "a refused run writes nothing"
    );
    assert_eq!(
        metering::rate(&pool, org, p, None)
            .await
            .unwrap_err()
            .code(),
        "unpriced_usage"
    );
    assert_eq!(
        metering::cost_of_span(&pool, "instance/b")
            .await
            .unwrap_err()
            .code(),
        "unpriced_usage"
    );
    assert_eq!(
        metering::run(&pool, org, p, Some(7), BY)
            .await
            .unwrap_err()
            .code(),
        "price_book_version_not_found"
    );
    // Before the first version took effect, nothing is in effect.
    let early = hour("2025-06-01T00:00:00Z");
    assert_eq!(
        metering::run(&pool, org, early, None, BY)
            .await
            .unwrap_err()
            .code(),
        "price_book_version_not_found"
    );
    assert_eq!(billing_rows(&pool).await, before);
}

#[tokio::test]
async fn publish_validates_and_numbers_versions_under_concurrency() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let v1 = price_book::get(&pool, 1).await.unwrap();
    assert_eq!(v1.prices.len(), 5);
    assert_eq!(v1.price("input_tokens", "").unwrap().per_units, 1_000_000);
    assert_eq!(
        v1.price("gpu_seconds", H100).unwrap().unit_price_minor,
        d("299")
    );
    assert!(v1.price("gpu_seconds", "nope").is_none());
    assert_eq!(
        price_book::get(&pool, 2).await.unwrap_err().code(),
        "price_book_version_not_found"
    );
    let book = |f: &dyn Fn(&mut NewPriceBook)| {
        let mut b = NewPriceBook {
            effective_from: t("2026-12-01T00:00:00Z"),
            note: "december".into(),
            prices: v1_prices(),
        };
        f(&mut b);
        b
    };
    let cases: Vec<(&str, NewPriceBook)> = vec![
        ("empty_price_book", book(&|b| b.prices.clear())),
        (
            "invalid_meter",
            book(&|b| b.prices[0].meter = "GPU-Seconds".into()),
        ),
        (
            "invalid_meter",
            book(&|b| b.prices[0].meter = String::new()),
        ),
        (
            "invalid_price",
            book(&|b| b.prices[1].unit_price_minor = d("-1")),
        ),
        (
            "invalid_price",
            book(&|b| b.prices[1].unit_price_minor = d("0.0000000000001")),
        ),
        ("invalid_per_units", book(&|b| b.prices[2].per_units = 0)),
        (
            "invalid_per_units",
            book(&|b| b.prices[2].per_units = -3600),
        ),
        (
            "invalid_currency",
            book(&|b| b.prices[3].currency = "usd".into()),
        ),
        (
            "invalid_currency",
            book(&|b| b.prices[3].currency = "USDT".into()),
        ),
        (
            "invalid_unit_label",
            book(&|b| b.prices[3].unit_label = " ".into()),
        ),
        ("invalid_sku", book(&|b| b.prices[3].sku = "x".repeat(101))),
        ("invalid_note", book(&|b| b.note = "n".repeat(501))),
        (
            "duplicate_price",
            book(&|b| {
                let again = b.prices[0].clone();
                b.prices.push(again);
            }),
        ),
        (
            "effective_from_before_latest",
            book(&|b| b.effective_from = t("2025-12-31T23:59:59Z")),
        ),
    ];
    for (code, bad) in &cases {
        let err = price_book::publish(&pool, bad, "user:finance")
            .await
            .unwrap_err();
        assert_eq!(err.code(), *code, "{err}");
    }
    assert_eq!(
        price_book::versions(&pool).await.unwrap().len(),
        1,
        "nothing published"
    );
    // A free price is allowed.
    let ok = price_book::publish(
        &pool,
        &book(&|b| b.prices[4].unit_price_minor = Decimal::ZERO),
        "user:finance",
    )
    .await
    .unwrap();
    assert_eq!(ok.version, 2);
    assert_eq!(ok.prices.len(), 5);
    assert_eq!(
        ok.price("output_tokens", "").unwrap().unit_price_minor,
        Decimal::ZERO
    );
    assert_eq!(price_book::get(&pool, 2).await.unwrap(), ok);
    // Concurrent publishes take distinct, consecutive numbers.
    let december = book(&|_| {});
    let (a, b, c) = tokio::join!(
        price_book::publish(&pool, &december, "a"),
        price_book::publish(&pool, &december, "b"),
        price_book::publish(&pool, &december, "c"),
    );
    let mut numbers = vec![a.unwrap().version, b.unwrap().version, c.unwrap().version];
    numbers.sort();
    assert_eq!(numbers, [3, 4, 5]);
    let all = price_book::versions(&pool).await.unwrap();
    assert_eq!(
        all.iter().map(|v| v.version).collect::<Vec<_>>(),
        [5, 4, 3, 2, 1]
    );
    assert!(all.iter().all(|v| v.prices.len() == 5));
    // In effect: v1 before December, the newest of those taking effect on December 1st after.
    assert_eq!(
        price_book::in_effect(&pool, t("2026-11-30T23:59:59Z"))
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        price_book::in_effect(&pool, t("2026-12-01T00:00:00Z"))
            .await
            .unwrap()
            .version,
        5
    );
    assert_eq!(
        price_book::in_effect(&pool, t("2025-01-01T00:00:00Z"))
            .await
            .unwrap_err()
            .code(),
        "price_book_version_not_found"
    );
}

#[tokio::test]
async fn events_of_an_unpriced_meter_are_refused_at_ingest() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let p = hour("2026-11-10T10:00:00Z");
    let events = |pool: &PgPool| {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.usage_events")
                .fetch_one(&pool)
                .await
                .unwrap();
            n
        }
    };
    // One event: refused, naming the meter, nothing written.
    let mut conn = pool.acquire().await.unwrap();
    let err = usage::record(&mut conn, &event("x", org, "mystery_calls", 3, p.start))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unpriced_meter");
    assert!(
        matches!(err, shared_kernel::DomainError::Invalid { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("mystery_calls/"), "{err}");
    // A known meter with an unknown SKU.
    let mut b200 = event("y", org, "gpu_seconds", 3, p.start);
    b200.sku = "b200-192gb".into();
    let err = usage::record(&mut conn, &b200).await.unwrap_err();
    assert_eq!(err.code(), "unpriced_meter");
    assert!(err.to_string().contains("gpu_seconds/b200-192gb"), "{err}");
    // Before any version is in effect, nothing is priced.
    let early = event("z", org, "input_tokens", 3, t("2025-06-01T00:00:00Z"));
    assert_eq!(
        usage::record(&mut conn, &early).await.unwrap_err().code(),
        "unpriced_meter"
    );
    drop(conn);
    // A batch is all or nothing: one unpriced event refuses it.
    let good = event("g1", org, "input_tokens", 10, p.start);
    let err = usage::record_batch(
        &pool,
        org,
        &[good.clone(), event("g2", org, "mystery_calls", 1, p.start)],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "unpriced_meter");
    assert!(err.to_string().contains("mystery_calls/"), "{err}");
    assert_eq!(events(&pool).await, 0, "nothing written");

    // Several versions in one batch: each event is checked against the version in effect at its
    // start. Version 2 (from 2026-11-20) prices mystery_calls; version 1 does not.
    let mut prices = price_book::get(&pool, 1).await.unwrap().prices;
    prices.push(Price {
        meter: "mystery_calls".into(),
        sku: String::new(),
        unit_price_minor: Decimal::from(1),
        per_units: 1,
        unit_label: "call".into(),
        currency: "USD".into(),
    });
    price_book::publish(
        &pool,
        &NewPriceBook {
            effective_from: t("2026-11-20T00:00:00Z"),
            note: "mystery calls".into(),
            prices,
        },
        BY,
    )
    .await
    .unwrap();
    let late = event("m1", org, "mystery_calls", 1, t("2026-11-25T00:00:00Z"));
    let done = usage::record_batch(&pool, org, &[good.clone(), late.clone()])
        .await
        .unwrap();
    assert_eq!((done.accepted, done.duplicates), (2, 0));
    let err = usage::record_batch(
        &pool,
        org,
        &[late, event("m0", org, "mystery_calls", 1, p.start)],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "unpriced_meter");
    assert!(err.to_string().contains("version 1"), "{err}");
    assert_eq!(events(&pool).await, 2);
}
