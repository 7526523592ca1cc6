//! Request limits: a rate per credential (per source IP for anonymous calls), login throttling
//! per account and per IP, all answered 429 with `Retry-After`. In-process (`governor`): each API
//! replica limits on its own, so N replicas allow up to N times the rate.

use crate::auth::Caller;
use crate::problem::ApiError;
use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

pub struct Limits {
    per_caller: DefaultKeyedRateLimiter<String>,
    login_per_account: DefaultKeyedRateLimiter<String>,
    login_per_ip: DefaultKeyedRateLimiter<String>,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("at least 1")
}

impl Limits {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_caller: RateLimiter::keyed(
                Quota::per_second(nz(per_second)).allow_burst(nz(burst)),
            ),
            // Ten logins per account, then one every 6 s; thirty per IP, then one every 10 s.
            login_per_account: RateLimiter::keyed(
                Quota::with_period(Duration::from_secs(6))
                    .expect("non-zero")
                    .allow_burst(nz(10)),
            ),
            login_per_ip: RateLimiter::keyed(
                Quota::with_period(Duration::from_secs(10))
                    .expect("non-zero")
                    .allow_burst(nz(30)),
            ),
        }
    }

    /// The per-credential rate.
    pub fn check(&self, caller: &Caller, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let key = match (&caller.ctx.credential_id, caller.authority.is_some()) {
            (Some(id), _) => format!("credential:{id}"),
            (None, true) => caller.ctx.principal.label(),
            (None, false) => format!("ip:{}", ip.map(|i| i.to_string()).unwrap_or_default()),
        };
        check(
            &self.per_caller,
            key,
            "rate_limited",
            "too many requests for this credential",
        )
    }

    /// Before a password is checked: the IP's and the account's budget of attempts.
    pub fn check_login(&self, email: &str, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let ip = ip.map(|i| i.to_string()).unwrap_or_default();
        check(
            &self.login_per_ip,
            ip,
            "login_throttled",
            "too many login attempts from this address",
        )?;
        check(
            &self.login_per_account,
            email.trim().to_lowercase(),
            "login_throttled",
            "too many login attempts for this account",
        )
    }

    /// Forgets idle keys (call now and then, so the maps do not grow without bound).
    pub fn retain_recent(&self) {
        self.per_caller.retain_recent();
        self.login_per_account.retain_recent();
        self.login_per_ip.retain_recent();
    }
}

fn check(
    limiter: &DefaultKeyedRateLimiter<String>,
    key: String,
    code: &'static str,
    detail: &'static str,
) -> Result<(), ApiError> {
    limiter.check_key(&key).map_err(|not_until| {
        throttled(
            not_until.wait_time_from(DefaultClock::default().now()),
            code,
            detail,
        )
    })
}

fn throttled(wait: Duration, code: &'static str, detail: &'static str) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, detail);
    e.retry_after = Some(wait.as_secs().max(1));
    e
}
