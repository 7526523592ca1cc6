-- Best-fit placement orders by (free_gpus, id): with id in the index the fullest fitting node is
-- the first index entry, instead of a sort over every node with the same free count
-- (10,000-node fleet: 6.4 ms -> 0.06 ms per pick; doc/benchmarks.md).
DROP INDEX gpuaas.nodes_placement;
CREATE INDEX nodes_placement ON gpuaas.nodes (gpu_model, free_gpus, id) WHERE state = 'ready';
