//! The price book: versions of every price per meter and SKU, with the instant each takes effect.
//! A version is never edited; a correction is a new version, and a metering rerun with it writes
//! only the difference. Prices are exact decimals of minor units per `per_units` of the meter.

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use shared_kernel::{DomainError, DomainResult};
use sqlx::PgPool;
use std::collections::HashSet;

/// Decimal places of a minor unit an amount keeps before rounding: what `rated_lines.amount_exact`
/// (`numeric(38, 12)`) stores, so an amount computed here and the same amount read back compare
/// equal.
pub const AMOUNT_SCALE: u32 = 12;

/// One price of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub meter: String,
    /// `''` for a meter without SKUs.
    pub sku: String,
    /// Minor units (cents) per `per_units` of the meter, exact.
    pub unit_price_minor: Decimal,
    pub per_units: i64,
    /// What `per_units` of the meter is called: `GPU-hour`, `million input tokens`.
    pub unit_label: String,
    pub currency: String,
}

impl Price {
    /// The exact amount in minor units for `quantity` of the meter, unrounded (sub-minor).
    /// `quantity × unit_price_minor / per_units`, multiplied before it is divided and kept to
    /// [`AMOUNT_SCALE`] decimal places (half away from zero beyond that, as Postgres does):
    /// 37 tokens at 15 per million are 0.000555, never 0.
    ///
    /// Panics only past `Decimal`'s range (~7.9e28); [`Price::checked_rate`] answers `None`.
    pub fn rate(&self, quantity: Decimal) -> Decimal {
        self.checked_rate(quantity)
            .expect("rated amount out of Decimal range")
    }

    /// [`Price::rate`], or `None` if the amount leaves `Decimal`'s range (or `per_units` is 0).
    pub fn checked_rate(&self, quantity: Decimal) -> Option<Decimal> {
        if self.per_units <= 0 {
            return None;
        }
        let product = quantity.checked_mul(self.unit_price_minor)?;
        let amount = product.checked_div(Decimal::from(self.per_units))?;
        Some(
            amount
                .round_dp_with_strategy(AMOUNT_SCALE, RoundingStrategy::MidpointAwayFromZero)
                .normalize(),
        )
    }
}

/// A whole version of the book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBook {
    pub version: i32,
    pub effective_from: DateTime<Utc>,
    pub note: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub prices: Vec<Price>,
}

impl PriceBook {
    /// The price of a meter and SKU, if the version has one.
    pub fn price(&self, meter: &str, sku: &str) -> Option<&Price> {
        self.prices
            .iter()
            .find(|p| p.meter == meter && p.sku == sku)
    }
}

/// A new version, as an operator or finance writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPriceBook {
    pub effective_from: DateTime<Utc>,
    pub note: String,
    pub prices: Vec<Price>,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    version: i32,
    effective_from: DateTime<Utc>,
    note: String,
    created_by: String,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct PriceRow {
    version: i32,
    meter: String,
    sku: String,
    unit_price_minor: Decimal,
    per_units: i64,
    unit_label: String,
    currency: String,
}

impl From<PriceRow> for Price {
    fn from(r: PriceRow) -> Self {
        Price {
            meter: r.meter,
            sku: r.sku,
            unit_price_minor: r.unit_price_minor.normalize(),
            per_units: r.per_units,
            unit_label: r.unit_label,
            currency: r.currency,
        }
    }
}

const VERSION_COLUMNS: &str = "version, effective_from, note, created_by, created_at";
const PRICE_COLUMNS: &str =
    "version, meter, sku, unit_price_minor, per_units, unit_label, currency";

/// Attaches each version's prices (ordered by meter, SKU).
async fn with_prices<'e, E>(executor: E, rows: Vec<VersionRow>) -> DomainResult<Vec<PriceBook>>
where
    E: sqlx::PgExecutor<'e>,
{
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<i32> = rows.iter().map(|r| r.version).collect();
    let prices: Vec<PriceRow> = sqlx::query_as(&format!(
        "SELECT {PRICE_COLUMNS} FROM billing.prices WHERE version = ANY($1) ORDER BY version, meter, sku"
    ))
    .bind(&ids)
    .fetch_all(executor)
    .await?;
    let mut books: Vec<PriceBook> = rows
        .into_iter()
        .map(|r| PriceBook {
            version: r.version,
            effective_from: r.effective_from,
            note: r.note,
            created_by: r.created_by,
            created_at: r.created_at,
            prices: vec![],
        })
        .collect();
    for p in prices {
        if let Some(book) = books.iter_mut().find(|b| b.version == p.version) {
            book.prices.push(p.into());
        }
    }
    Ok(books)
}

/// A version; `price_book_version_not_found` if there is none.
pub async fn get(pool: &PgPool, version: i32) -> DomainResult<PriceBook> {
    let row: Option<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM billing.price_book_versions WHERE version = $1"
    ))
    .bind(version)
    .fetch_optional(pool)
    .await?;
    let row = row.ok_or_else(|| {
        DomainError::not_found(
            "price_book_version_not_found",
            format!("there is no price book version {version}"),
        )
    })?;
    Ok(with_prices(pool, vec![row]).await?.remove(0))
}

/// The version in effect at `at` (the newest whose `effective_from <= at`; of several with the
/// same `effective_from`, the highest version: a correction replaces what it corrects).
/// `price_book_version_not_found` if none is in effect yet at `at`.
pub async fn in_effect(pool: &PgPool, at: DateTime<Utc>) -> DomainResult<PriceBook> {
    let row: Option<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM billing.price_book_versions WHERE effective_from <= $1
         ORDER BY effective_from DESC, version DESC LIMIT 1"
    ))
    .bind(at)
    .fetch_optional(pool)
    .await?;
    let row = row.ok_or_else(|| {
        DomainError::not_found(
            "price_book_version_not_found",
            format!("no price book version is in effect at {at}"),
        )
    })?;
    Ok(with_prices(pool, vec![row]).await?.remove(0))
}

/// Every version, newest first, with its prices.
pub async fn versions(pool: &PgPool) -> DomainResult<Vec<PriceBook>> {
    let rows: Vec<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM billing.price_book_versions ORDER BY version DESC"
    ))
    .fetch_all(pool)
    .await?;
    with_prices(pool, rows).await
}

/// The most prices one version may hold (a bound on absurd input).
pub const MAX_PRICES: usize = 10_000;

/// Checks a new version on its own (everything but its place after the newest version):
/// `empty_price_book`, `invalid_meter`, `invalid_sku`, `invalid_price`, `invalid_per_units`,
/// `invalid_currency`, `invalid_unit_label`, `duplicate_price`, `invalid_note`.
pub fn validate(book: &NewPriceBook) -> DomainResult<()> {
    if book.prices.is_empty() {
        return Err(DomainError::invalid(
            "empty_price_book",
            "a price book version holds at least one price",
        ));
    }
    if book.prices.len() > MAX_PRICES {
        return Err(DomainError::invalid(
            "invalid_price_book",
            format!("a price book version holds at most {MAX_PRICES} prices"),
        ));
    }
    if book.note.chars().count() > 500 {
        return Err(DomainError::invalid(
            "invalid_note",
            "a price book note is at most 500 characters",
        ));
    }
    let mut seen = HashSet::new();
    for p in &book.prices {
        let meter_ok = p.meter.len() <= 63
            && p.meter.starts_with(|c: char| c.is_ascii_lowercase())
            && p.meter
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !meter_ok {
            return Err(DomainError::invalid(
                "invalid_meter",
                format!("meter '{}' is not [a-z][a-z0-9_]*", short(&p.meter)),
            ));
        }
        let what = || format!("{}/{}", p.meter, short(&p.sku));
        if p.sku.chars().count() > 100 {
            return Err(DomainError::invalid(
                "invalid_sku",
                format!("{}: a SKU is at most 100 characters", what()),
            ));
        }
        if p.unit_price_minor.is_sign_negative() && !p.unit_price_minor.is_zero() {
            return Err(DomainError::invalid(
                "invalid_price",
                format!(
                    "{}: a price is not negative ({})",
                    what(),
                    p.unit_price_minor
                ),
            ));
        }
        if p.unit_price_minor.normalize().scale() > AMOUNT_SCALE {
            return Err(DomainError::invalid(
                "invalid_price",
                format!(
                    "{}: a price has at most {AMOUNT_SCALE} decimal places",
                    what()
                ),
            ));
        }
        // numeric(38, 12): 26 integer digits; far beyond any price, so bound it well below.
        if p.unit_price_minor > Decimal::from(1_000_000_000_000_000i64) {
            return Err(DomainError::invalid(
                "invalid_price",
                format!("{}: a price is at most 1e15 minor units", what()),
            ));
        }
        if p.per_units <= 0 {
            return Err(DomainError::invalid(
                "invalid_per_units",
                format!(
                    "{}: a price is per at least 1 unit, not {}",
                    what(),
                    p.per_units
                ),
            ));
        }
        if !(p.currency.len() == 3 && p.currency.chars().all(|c| c.is_ascii_uppercase())) {
            return Err(DomainError::invalid(
                "invalid_currency",
                format!(
                    "{}: currency '{}' is not [A-Z]{{3}}",
                    what(),
                    short(&p.currency)
                ),
            ));
        }
        if p.unit_label.trim().is_empty() || p.unit_label.chars().count() > 100 {
            return Err(DomainError::invalid(
                "invalid_unit_label",
                format!("{}: a unit label is 1 to 100 characters", what()),
            ));
        }
        if !seen.insert((p.meter.as_str(), p.sku.as_str())) {
            return Err(DomainError::invalid(
                "duplicate_price",
                format!("{}: priced twice in one version", what()),
            ));
        }
    }
    Ok(())
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Publishes the next version. `created_by` is the principal's label.
///
/// Refuses what [`validate`] refuses, and `effective_from_before_latest` (a conflict) when
/// `effective_from` is before the newest version's: the book only moves forward (a correction of
/// the newest version takes effect from the same instant). Concurrent publishes serialize on a
/// transaction-scoped advisory lock, so each takes the next number and sees the one before.
pub async fn publish(
    pool: &PgPool,
    book: &NewPriceBook,
    created_by: &str,
) -> DomainResult<PriceBook> {
    validate(book)?;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('billing.price_book.publish', 0))")
        .execute(&mut *tx)
        .await?;
    let newest: Option<(i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT version, effective_from FROM billing.price_book_versions
         ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((version, from)) = newest
        && book.effective_from < from
    {
        return Err(DomainError::conflict(
            "effective_from_before_latest",
            format!(
                "version {version} takes effect at {from}; a new version cannot take effect \
                 before it ({})",
                book.effective_from
            ),
        ));
    }
    let version = newest.map_or(1, |(v, _)| v + 1);
    let row: VersionRow = sqlx::query_as(&format!(
        "INSERT INTO billing.price_book_versions (version, effective_from, note, created_by)
         VALUES ($1, $2, $3, $4) RETURNING {VERSION_COLUMNS}"
    ))
    .bind(version)
    .bind(book.effective_from)
    .bind(&book.note)
    .bind(created_by)
    .fetch_one(&mut *tx)
    .await?;
    let (mut meters, mut skus, mut prices, mut pers, mut labels, mut currencies) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for p in &book.prices {
        meters.push(p.meter.as_str());
        skus.push(p.sku.as_str());
        prices.push(p.unit_price_minor);
        pers.push(p.per_units);
        labels.push(p.unit_label.as_str());
        currencies.push(p.currency.as_str());
    }
    sqlx::query(
        "INSERT INTO billing.prices (version, meter, sku, unit_price_minor, per_units, unit_label, currency)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::numeric[], $5::bigint[], $6::text[], $7::text[])",
    )
    .bind(version)
    .bind(meters)
    .bind(skus)
    .bind(prices)
    .bind(pers)
    .bind(labels)
    .bind(currencies)
    .execute(&mut *tx)
    .await?;
    let published = with_prices(&mut *tx, vec![row]).await?.remove(0);
    tx.commit().await?;
    tracing::info!(version, created_by, "price book version published");
    Ok(published)
}
