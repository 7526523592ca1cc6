//! The price book: versions of every price per meter and SKU, with the instant each takes effect.
//! A version is never edited; a correction is a new version, and a metering rerun with it writes
//! only the difference. Prices are exact decimals of minor units per `per_units` of the meter.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shared_kernel::DomainResult;
use sqlx::PgPool;

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
    pub fn rate(&self, quantity: Decimal) -> Decimal {
        unimplemented!("price_book::Price::rate")
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
        unimplemented!("price_book::PriceBook::price")
    }
}

/// A new version, as an operator or finance writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPriceBook {
    pub effective_from: DateTime<Utc>,
    pub note: String,
    pub prices: Vec<Price>,
}

/// A version; `price_book_version_not_found` if there is none.
pub async fn get(pool: &PgPool, version: i32) -> DomainResult<PriceBook> {
    unimplemented!("price_book::get")
}

/// The version in effect at `at` (the newest whose `effective_from <= at`).
pub async fn in_effect(pool: &PgPool, at: DateTime<Utc>) -> DomainResult<PriceBook> {
    unimplemented!("price_book::in_effect")
}

/// Every version, newest first, with its prices.
pub async fn versions(pool: &PgPool) -> DomainResult<Vec<PriceBook>> {
    unimplemented!("price_book::versions")
}

/// Publishes the next version. `created_by` is the principal's label.
pub async fn publish(
    pool: &PgPool,
    book: &NewPriceBook,
    created_by: &str,
) -> DomainResult<PriceBook> {
    unimplemented!("price_book::publish")
}
