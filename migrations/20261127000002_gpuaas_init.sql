-- gpuaas: SKUs, nodes and their GPUs, instances, and GPU allocations.
CREATE SCHEMA IF NOT EXISTS gpuaas;

CREATE TABLE gpuaas.skus (
    id                        text PRIMARY KEY,             -- e.g. 'h100-80gb-sxm'
    gpu_model                 text NOT NULL,                -- matches gpuaas.gpus.model
    display_name              text NOT NULL,
    memory_gib                integer NOT NULL CHECK (memory_gib > 0),
    form_factor               text NOT NULL CHECK (form_factor IN ('sxm', 'pcie')),
    allowed_gpu_counts        integer[] NOT NULL,
    price_per_gpu_hour_minor  bigint NOT NULL CHECK (price_per_gpu_hour_minor >= 0),
    currency                  text NOT NULL DEFAULT 'USD'
);

INSERT INTO gpuaas.skus VALUES
    ('h100-80gb-sxm', 'H100-80GB', 'NVIDIA H100 80GB SXM5', 80, 'sxm',  '{1,2,4,8}', 299, 'USD'),
    ('a100-40gb',     'A100-40GB', 'NVIDIA A100 40GB SXM4', 40, 'sxm',  '{1,2,4,8}', 129, 'USD'),
    ('l40s-48gb',     'L40S-48GB', 'NVIDIA L40S 48GB PCIe', 48, 'pcie', '{1,2,4}',    99, 'USD');

CREATE TABLE gpuaas.nodes (
    id            uuid PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    state         text NOT NULL CHECK (state IN ('registering', 'ready', 'cordoned', 'draining', 'down')),
    gpu_model     text,                                  -- hosts are homogeneous
    -- Healthy GPUs without a live allocation. A placement index kept in step in the same
    -- transactions as gpuaas.allocations; the unique index below is the actual guarantee.
    free_gpus     integer NOT NULL DEFAULT 0 CHECK (free_gpus >= 0),
    agent_version text,
    discovery     text,                                  -- nvml | nvidia-smi | simulated
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX nodes_placement ON gpuaas.nodes (gpu_model, free_gpus) WHERE state = 'ready';

CREATE TABLE gpuaas.gpus (
    id         uuid PRIMARY KEY,
    node_id    uuid NOT NULL REFERENCES gpuaas.nodes (id),
    idx        integer NOT NULL CHECK (idx >= 0),
    uuid       text NOT NULL UNIQUE,
    model      text NOT NULL,
    memory_mib bigint NOT NULL,
    health     text NOT NULL DEFAULT 'healthy' CHECK (health IN ('healthy', 'unhealthy')),
    UNIQUE (node_id, idx)
);

CREATE TABLE gpuaas.instances (
    id                 uuid PRIMARY KEY,
    project_id         uuid NOT NULL,
    name               text NOT NULL,
    sku_id             text NOT NULL REFERENCES gpuaas.skus (id),
    gpu_count          integer NOT NULL CHECK (gpu_count > 0),
    command            text NOT NULL,
    capacity_timeout_s integer NOT NULL DEFAULT 0 CHECK (capacity_timeout_s >= 0),
    state              text NOT NULL CHECK (state IN ('pending', 'provisioning', 'running', 'terminating', 'terminated', 'failed')),
    failure_reason     text CHECK (failure_reason IN ('insufficient_capacity', 'node_unreachable', 'start_failed', 'timeout')),
    status_message     text,                             -- why it waits / why it failed, for humans
    node_id            uuid REFERENCES gpuaas.nodes (id),
    gpu_indices        integer[] NOT NULL DEFAULT '{}',
    workflow_id        text NOT NULL,
    current_step       text NOT NULL,
    idempotency_key    text,
    request_hash       text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    running_at         timestamptz,
    ended_at           timestamptz,
    UNIQUE (project_id, idempotency_key)
);
CREATE INDEX instances_project_created ON gpuaas.instances (project_id, created_at DESC, id DESC);

-- One row per GPU an instance holds. Released rows stay as history.
CREATE TABLE gpuaas.allocations (
    instance_id  uuid NOT NULL REFERENCES gpuaas.instances (id),
    gpu_id       uuid NOT NULL REFERENCES gpuaas.gpus (id),
    node_id      uuid NOT NULL REFERENCES gpuaas.nodes (id),
    gpu_index    integer NOT NULL,
    allocated_at timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz,
    PRIMARY KEY (instance_id, gpu_id)
);
-- The no-double-booking guarantee: at most one live allocation per GPU, whatever the concurrency.
CREATE UNIQUE INDEX allocations_one_live_per_gpu ON gpuaas.allocations (gpu_id) WHERE released_at IS NULL;
CREATE INDEX allocations_live_by_instance ON gpuaas.allocations (instance_id) WHERE released_at IS NULL;
