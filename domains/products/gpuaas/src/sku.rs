//! GPU SKUs: a GPU model, its memory and form factor, the GPU counts an instance may ask for, and a
//! price per GPU-hour in integer minor units (billing reads it later).

use serde::Serialize;
use shared_kernel::{DomainError, DomainResult};
use sqlx::PgPool;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Sku {
    pub id: String,
    pub gpu_model: String,
    pub display_name: String,
    pub memory_gib: i32,
    pub form_factor: String,
    pub allowed_gpu_counts: Vec<i32>,
    pub price_per_gpu_hour_minor: i64,
    pub currency: String,
}

const COLUMNS: &str = "id, gpu_model, display_name, memory_gib, form_factor, allowed_gpu_counts, \
                       price_per_gpu_hour_minor, currency";

pub async fn list(pool: &PgPool) -> DomainResult<Vec<Sku>> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM gpuaas.skus ORDER BY id"))
            .fetch_all(pool)
            .await?,
    )
}

pub async fn get(pool: &PgPool, id: &str) -> DomainResult<Sku> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM gpuaas.skus WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| DomainError::invalid("unknown_sku", format!("unknown SKU '{id}'")))
}

/// What could be had of a SKU right now, without naming a node: the free GPUs of its model on
/// ready nodes, and the most one instance could get on one node.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Capacity {
    pub available_gpus: i64,
    pub largest_free_block: i32,
}

/// Capacity by SKU id (SKUs with no ready node are absent: nothing available).
pub async fn capacity(pool: &PgPool) -> DomainResult<std::collections::HashMap<String, Capacity>> {
    let rows: Vec<(String, i64, i32)> = sqlx::query_as(
        "SELECT s.id, c.free, c.largest FROM gpuaas.skus s
         JOIN (SELECT gpu_model, sum(free_gpus)::int8 AS free, max(free_gpus) AS largest
               FROM gpuaas.nodes WHERE state = 'ready' GROUP BY gpu_model) c
           ON c.gpu_model = s.gpu_model",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, available_gpus, largest_free_block)| {
            (
                id,
                Capacity {
                    available_gpus,
                    largest_free_block,
                },
            )
        })
        .collect())
}

impl Sku {
    /// Checks that an instance of this SKU may have `gpu_count` GPUs.
    pub fn check_gpu_count(&self, gpu_count: i32) -> DomainResult<()> {
        if self.allowed_gpu_counts.contains(&gpu_count) {
            return Ok(());
        }
        Err(DomainError::invalid(
            "invalid_gpu_count",
            format!(
                "SKU '{}' allows {:?} GPUs per instance, not {gpu_count}",
                self.id, self.allowed_gpu_counts
            ),
        ))
    }
}
