//! Token Factory activities (not built yet, issue "Token Factory"): adapters over
//! `domains/products/tokenfactory` for the model rollout workflows in
//! `workflows/src/tokenfactory/`, with the product's vocabulary in `vocabulary.rs` here, as
//! `gpuaas/` does.
