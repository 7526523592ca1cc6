//! The control-plane half of every call to a node: seal the command for that node's key and sign
//! it with the control plane's key, and hand the workflow the node key its reply must be signed
//! with (`contract_node::envelope`). A command carrying tenant data (a workload's command line)
//! is read here, from the database, so it never sits in a workflow's input or history in
//! plaintext. Idempotent: each attempt seals afresh; an unused sealing is harmless.

use super::vocabulary::activity;
use crate::{FinishHook, finish};
use contract_node::envelope::{self, AwaitRunning, ListWorkloads, StopWorkload};
use contract_node::{NodeCall, NodeCommand, SealedCommand, SessionInput, WorkloadSpec};
use platform_iam::tokens::TokenKeys;
use product_gpuaas::instance;
use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId};
use shared_kernel::{DomainError, DomainResult};
use sqlx::PgPool;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// What a workflow asks of a node, without tenant data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRequest {
    /// Start the instance's workload on these GPUs; its command is read from the database.
    StartWorkload {
        instance_id: InstanceId,
        gpu_indices: Vec<i32>,
        gpu_uuids: Vec<String>,
    },
    AwaitRunning(InstanceId),
    StopWorkload(InstanceId),
    Session(SessionInput),
    ListWorkloads,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareNodeCall {
    pub node_id: NodeId,
    pub request: NodeRequest,
}

pub struct NodeCallActivities {
    pool: PgPool,
    keys: Arc<TokenKeys>,
    hook: FinishHook,
}

impl NodeCallActivities {
    pub fn new(pool: PgPool, keys: Arc<TokenKeys>, hook: FinishHook) -> Self {
        Self { pool, keys, hook }
    }

    async fn prepare_call(&self, input: PrepareNodeCall) -> DomainResult<NodeCall> {
        let node = input.node_id;
        let keys = platform_iam::nodes::keys(&self.pool, node)
            .await?
            .ok_or_else(|| {
                DomainError::conflict(
                    "node_credential_revoked",
                    format!("node {node} holds no live credential: nothing is sent to it"),
                )
            })?;
        let encryption_key = keys.encryption_key.ok_or_else(|| {
            DomainError::conflict(
                "node_encryption_key_missing",
                format!("node {node} has not registered an encryption key: its agent predates sealed commands and must be upgraded"),
            )
        })?;
        let command = match input.request {
            NodeRequest::StartWorkload {
                instance_id,
                gpu_indices,
                gpu_uuids,
            } => {
                let spec = WorkloadSpec {
                    instance_id,
                    command: instance::command_of(&self.pool, instance_id).await?,
                    gpu_indices,
                    gpu_uuids,
                };
                self.seal(node, &encryption_key, &spec)
            }
            NodeRequest::AwaitRunning(id) => self.seal(node, &encryption_key, &AwaitRunning(id)),
            NodeRequest::StopWorkload(id) => self.seal(node, &encryption_key, &StopWorkload(id)),
            NodeRequest::Session(session) => self.seal(node, &encryption_key, &session),
            NodeRequest::ListWorkloads => self.seal(node, &encryption_key, &ListWorkloads),
        }?;
        Ok(NodeCall {
            command,
            node_key: base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                &keys.public_key,
            ),
        })
    }

    fn seal<C: NodeCommand>(
        &self,
        node: NodeId,
        encryption_key: &[u8],
        command: &C,
    ) -> DomainResult<SealedCommand> {
        // Signed by the newest key; output in the reply comes back sealed for the reply key
        // derived from that same key (any worker holding the key directory can open it).
        let (signer, reply_secret) = self
            .keys
            .derived_secret(None, envelope::REPLY_KEY_PURPOSE)
            .expect("the newest key derives");
        let reply_key = envelope::reply_key_public(reply_secret);
        SealedCommand::seal(
            node,
            encryption_key,
            command,
            (&signer, &reply_key),
            |message| self.keys.sign(message).1,
        )
        .map_err(|e| DomainError::invalid("invalid_node_key", e.to_string()))
    }
}

#[activities]
impl NodeCallActivities {
    #[activity(name = activity::PREPARE_NODE_CALL)]
    pub async fn prepare(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: PrepareNodeCall,
    ) -> Result<NodeCall, ActivityError> {
        let result = self.prepare_call(input).await;
        finish(&self.hook, activity::PREPARE_NODE_CALL, result)
    }
}
