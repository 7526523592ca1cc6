//! App platform workflows (not built yet, issue "App platform"): `deployment_rollout.rs` and
//! friends, each with its starter, over the activities in `activities/src/appplatform/`.
