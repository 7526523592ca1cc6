-- Fleet reliability: node liveness and fencing, drain, GPU health with recovery, and an event
-- log that records operator actions (audit), automatic transitions and reconciler fixes.

ALTER TABLE gpuaas.nodes DROP CONSTRAINT nodes_state_check;
ALTER TABLE gpuaas.nodes ADD CONSTRAINT nodes_state_check
    CHECK (state IN ('registering', 'ready', 'cordoned', 'draining', 'down', 'decommissioned'));
ALTER TABLE gpuaas.nodes
    -- Why a cordoned node is cordoned: an operator, a failing GPU (undone automatically when the
    -- GPUs recover), or a finished drain.
    ADD COLUMN cordon_reason  text CHECK (cordon_reason IN ('operator', 'gpu_unhealthy', 'drained')),
    -- The state a down node returns to once its agent is back and its orphans are stopped.
    ADD COLUMN down_from      text CHECK (down_from IN ('ready', 'cordoned', 'draining')),
    ADD COLUMN down_since     timestamptz,
    ADD COLUMN last_seen_at   timestamptz,
    ADD COLUMN drain_deadline timestamptz;

ALTER TABLE gpuaas.gpus
    ADD COLUMN health_reason text,
    -- When an unhealthy GPU was first seen healthy again; it returns to service after the
    -- recovery period of continuous health.
    ADD COLUMN healthy_since timestamptz;
-- Unhealthy GPUs are few; "why no capacity" finds them without scanning every GPU.
CREATE INDEX gpus_unhealthy ON gpuaas.gpus (node_id) WHERE health <> 'healthy';

ALTER TABLE gpuaas.instances DROP CONSTRAINT instances_failure_reason_check;
ALTER TABLE gpuaas.instances ADD CONSTRAINT instances_failure_reason_check
    CHECK (failure_reason IN ('insufficient_capacity', 'node_unreachable', 'start_failed', 'timeout',
                              'workload_vanished'));
CREATE INDEX instances_live_by_node ON gpuaas.instances (node_id)
    WHERE state IN ('provisioning', 'running', 'terminating');

CREATE TABLE gpuaas.events (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,          -- e.g. node.cordoned, gpu.unhealthy, reconciler.orphan_stopped
    actor       text NOT NULL,          -- 'operator:<caller>', 'node-lifecycle', 'reconciler'
    node_id     uuid REFERENCES gpuaas.nodes (id),
    instance_id uuid,                   -- no FK: an orphan's instance may not exist
    gpu_index   integer,
    message     text NOT NULL,
    -- Set by callers that may run twice (activities), so a retry records the event once.
    dedupe_key  text UNIQUE
);
CREATE INDEX events_by_node ON gpuaas.events (node_id, id DESC);
CREATE INDEX events_by_kind ON gpuaas.events (kind, id DESC);
