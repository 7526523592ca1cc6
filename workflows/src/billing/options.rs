//! Activity options of the billing workflows. Always explicit: every step is a database call (or
//! a provider call) retried until it answers, for up to `patience`; a domain error that is not
//! worth a retry (bad input, wrong state) fails at once (`activities::finish`).

use std::time::Duration;

fn database_activity(
    patience: Duration,
    start_to_close: Duration,
) -> temporalio_sdk::ActivityOptions {
    temporalio_sdk::ActivityOptions::with_close_timeouts(
        temporalio_common::ActivityCloseTimeouts::ScheduleAndStartToClose {
            schedule_to_close: patience,
            start_to_close,
        },
    )
    .retry_policy(
        temporalio_common::RetryPolicy::builder()
            .initial_interval(Duration::from_millis(500))
            .maximum_interval(Duration::from_secs(60))
            .build(),
    )
    .build()
}

/// The cycle's and the collection's steps: retried for a week (a cycle that gave up during a long
/// outage would leave a period unbilled). Each is a few statements; a worker killed during one is
/// noticed after 20 s, and the step runs again (it is idempotent).
pub(crate) fn billing_options() -> temporalio_sdk::ActivityOptions {
    database_activity(Duration::from_secs(7 * 24 * 3600), Duration::from_secs(20))
}

/// A payment attempt: one call to the provider, short. A worker killed during one is noticed
/// after this long, and the attempt runs again under the same idempotency key.
pub(crate) fn payment_options() -> temporalio_sdk::ActivityOptions {
    database_activity(Duration::from_secs(7 * 24 * 3600), Duration::from_secs(15))
}

/// A metering run rates a whole period of an org: more time per try.
pub(crate) fn metering_options() -> temporalio_sdk::ActivityOptions {
    database_activity(Duration::from_secs(7 * 24 * 3600), Duration::from_secs(300))
}

/// The scheduled sweeps' steps: retried for an hour (the next pass starts anyway).
pub(crate) fn sweep_options() -> temporalio_sdk::ActivityOptions {
    database_activity(Duration::from_secs(3600), Duration::from_secs(60))
}

/// Credit enforcement's steps about one org (its instances, one termination): retried for a few
/// minutes only, so one org's trouble holds the pass up briefly; the pass then goes on with the
/// others and the next pass tries it again.
pub(crate) fn per_org_options() -> temporalio_sdk::ActivityOptions {
    database_activity(Duration::from_secs(120), Duration::from_secs(30))
}
