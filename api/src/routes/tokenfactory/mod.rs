//! The Token Factory route family (not built yet, issue "Token Factory"): `models.rs` and
//! `model_deployments.rs` under `/v1`, and the OpenAI-compatible surface, over
//! `domains/products/tokenfactory` and the rollout workflows' starters in
//! `workflows/src/tokenfactory/`.
