//! Platform billing. Owns schema `billing` (doc/architecture/0011-billing.md).
//!
//! - [`usage`]: the outbox products write into inside their own transactions (ADR 0007): spans
//!   for usage over time (a GPU instance's GPUs, per second), events for discrete usage (tokens).
//! - [`price_book`]: versioned prices per meter and SKU, in exact decimals of minor units.
//! - [`metering`]: rates a period's usage with a price book version into append-only rated lines;
//!   a rerun writes only the difference, as adjustments linked to the originals.
//! - [`ledger`]: double-entry, append-only; the database refuses an unbalanced transaction and any
//!   UPDATE or DELETE.
//! - [`account`]: billing mode (prepaid credit or postpaid), spend limit, balance, standing (what
//!   admission asks before a product allocates).
//! - [`invoice`]: draft → open → paid | void | uncollectible, built from rated lines, rounded once
//!   per line.
//! - [`payment`]: the [`payment::PaymentProvider`] interface, its sandbox, and charge attempts.
//!
//! Nothing here knows Temporal, HTTP or any product: products call in, workflows drive the cycle.

pub mod account;
pub mod invoice;
pub mod ledger;
pub mod metering;
pub mod payment;
pub mod period;
pub mod price_book;
pub mod usage;

pub use period::Period;
pub use rust_decimal::Decimal;
