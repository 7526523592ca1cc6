//! A billing period: a half-open UTC interval `[start, end)`. Monthly by default; any length for
//! tests and demos. Its label names it in workflow ids and URLs.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use shared_kernel::{DomainError, DomainResult};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

const STAMP: &str = "%Y%m%dT%H%M%SZ";

impl Period {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> DomainResult<Self> {
        if end <= start {
            return Err(DomainError::invalid(
                "invalid_period",
                format!("a period ends after it starts ({start} .. {end})"),
            ));
        }
        Ok(Self { start, end })
    }

    /// The calendar month holding `at`.
    pub fn month_of(at: DateTime<Utc>) -> Self {
        let start = Utc
            .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
            .single()
            .expect("the first of a month exists");
        Self {
            start,
            end: next_month(start),
        }
    }

    /// The period of `length` holding `at`, aligned to the Unix epoch (short test periods).
    pub fn aligned(at: DateTime<Utc>, length: chrono::Duration) -> Self {
        let secs = length.num_seconds().max(1);
        let start_s = at.timestamp().div_euclid(secs) * secs;
        let start = DateTime::from_timestamp(start_s, 0).expect("in range");
        Self {
            start,
            end: start + chrono::Duration::seconds(secs),
        }
    }

    /// The period that follows this one, of the same kind (a month, or the same length).
    pub fn next(&self) -> Self {
        if self.is_month() {
            Self {
                start: self.end,
                end: next_month(self.end),
            }
        } else {
            Self {
                start: self.end,
                end: self.end + (self.end - self.start),
            }
        }
    }

    fn is_month(&self) -> bool {
        Self::month_of(self.start) == *self
    }

    /// `2026-12` for a calendar month, else `20261201T173000Z-20261201T174000Z`.
    pub fn label(&self) -> String {
        if self.is_month() {
            self.start.format("%Y-%m").to_string()
        } else {
            format!("{}-{}", self.start.format(STAMP), self.end.format(STAMP))
        }
    }

    /// Parses a [`Period::label`].
    pub fn parse(label: &str) -> DomainResult<Self> {
        let bad = || {
            DomainError::invalid(
                "invalid_period",
                format!(
                    "period '{}' is neither YYYY-MM nor START-END as YYYYMMDDTHHMMSSZ",
                    label.chars().take(64).collect::<String>()
                ),
            )
        };
        if let Ok(day) = NaiveDate::parse_from_str(&format!("{label}-01"), "%Y-%m-%d") {
            if label.len() != 7 {
                return Err(bad());
            }
            return Ok(Self::month_of(
                day.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc(),
            ));
        }
        let (a, b) = label.split_once('-').ok_or_else(bad)?;
        let parse = |s: &str| {
            chrono::NaiveDateTime::parse_from_str(s, STAMP)
                .map(|t| t.and_utc())
                .map_err(|_| bad())
        };
        Self::new(parse(a)?, parse(b)?).map_err(|_| bad())
    }

    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

fn next_month(start: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if start.month() == 12 {
        (start.year() + 1, 1)
    } else {
        (start.year(), start.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .expect("the first of a month exists")
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_months_roll_over() {
        let dec = Period::parse("2026-12").unwrap();
        assert_eq!(dec.label(), "2026-12");
        assert_eq!(dec.next().label(), "2027-01");
        assert_eq!(dec.end - dec.start, chrono::Duration::days(31));
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 17, 31, 5).unwrap();
        let short = Period::aligned(t, chrono::Duration::minutes(10));
        assert_eq!(short.label(), "20261201T173000Z-20261201T174000Z");
        assert_eq!(Period::parse(&short.label()).unwrap(), short);
        assert_eq!(short.next().start, short.end);
        assert!(short.contains(t) && !short.contains(short.end));
        for bad in [
            "2026-13",
            "2026-1",
            "x",
            "20261201T174000Z-20261201T173000Z",
            "",
        ] {
            assert_eq!(
                Period::parse(bad).unwrap_err().code(),
                "invalid_period",
                "{bad}"
            );
        }
    }
}
