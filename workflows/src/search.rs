//! Custom search attributes, registered with the server at startup (`scripts/dev`, the test
//! harness), so operators can find every workflow of an instance, node or project in the UI.

use temporalio_common::search_attributes::SearchAttributeKey;

pub const INSTANCE_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("GpuaasInstanceId");
pub const NODE_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("GpuaasNodeId");
pub const PROJECT_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("GpuaasProjectId");
pub const STEP: SearchAttributeKey<String> = SearchAttributeKey::keyword("GpuaasStep");

/// `NAME=TYPE` pairs for `temporal server start-dev --search-attribute`.
pub const REGISTRATION: [&str; 4] = [
    "GpuaasInstanceId=Keyword",
    "GpuaasNodeId=Keyword",
    "GpuaasProjectId=Keyword",
    "GpuaasStep=Keyword",
];
