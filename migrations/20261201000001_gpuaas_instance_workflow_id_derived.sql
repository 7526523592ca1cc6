-- An instance's provisioning workflow id is derived from the instance id by the Temporal
-- vocabulary (activities::gpuaas::vocabulary), which the domain no longer knows; storing it
-- again beside the id was derivable state.
ALTER TABLE gpuaas.instances DROP COLUMN workflow_id;
