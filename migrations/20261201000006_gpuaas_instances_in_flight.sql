-- The reconciler's pass over instances in flight (`instance::unfinished`): a partial index, so
-- the pass reads the few instances in these states, oldest first, not the whole table.
CREATE INDEX instances_in_flight ON gpuaas.instances (updated_at)
    WHERE state IN ('pending', 'provisioning', 'terminating');
