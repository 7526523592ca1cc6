//! Token Factory workflows (not built yet, issue "Token Factory"): `model_rollout.rs`, with its
//! starter, over the activities in `activities/src/tokenfactory/`.
