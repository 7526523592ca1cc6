-- An instance's provisioning workflow id is derived from the instance id by the Temporal
-- vocabulary (activities::gpuaas::vocabulary), which the domain no longer knows; storing it
-- again beside the id was derivable state. Dropped at once rather than over two releases: no
-- deployment runs an API that still writes it (the first production release comes later).
ALTER TABLE gpuaas.instances DROP COLUMN workflow_id;
