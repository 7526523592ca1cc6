//! App platform activities (not built yet, issue "App platform"): adapters over
//! `domains/products/appplatform` for the deployment workflows in `workflows/src/appplatform/`,
//! with the product's vocabulary in `vocabulary.rs` here, as `gpuaas/` does.
