//! The app platform route family (not built yet, issue "App platform"): `apps.rs` (the catalog)
//! and `deployments.rs`, over `domains/products/appplatform` and the deployment workflows'
//! starters in `workflows/src/appplatform/`.
