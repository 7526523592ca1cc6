//! Temporal Schedules the workers create (the reconciler's, billing's sweep and enforcement):
//! one create-or-update for all of them.

use std::time::Duration;
use temporalio_client::schedules::ScheduleError;

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleChange {
    Created,
    Updated,
}

/// Creates the Schedule `id` with `action` every `every`, or updates its interval and action.
pub(crate) async fn ensure(
    client: &temporalio_client::Client,
    id: String,
    action: temporalio_client::schedules::ScheduleAction,
    every: Duration,
    note: &str,
) -> Result<ScheduleChange, ScheduleError> {
    use temporalio_client::schedules::{
        CreateScheduleOptions, ScheduleOverlapPolicy, ScheduleSpec,
    };
    let options = CreateScheduleOptions::builder()
        .action(action.clone())
        .spec(ScheduleSpec::from_interval(every))
        .overlap_policy(ScheduleOverlapPolicy::Skip)
        .note(note.to_string())
        .build();
    match client.create_schedule(id.clone(), options).await {
        Ok(_) => Ok(ScheduleChange::Created),
        Err(ScheduleError::Rpc(status))
            if status.code() == temporalio_client::tonic::Code::AlreadyExists =>
        {
            let spec = ScheduleSpec::from_interval(every);
            client
                .get_schedule_handle(id)
                .update(
                    move |u| {
                        u.set_spec(spec);
                        u.set_action(action);
                    },
                    Default::default(),
                )
                .await?;
            Ok(ScheduleChange::Updated)
        }
        Err(e) => Err(e),
    }
}
