-- policy: plans (which SKUs an org may launch, and the default per-project GPU quota), the plan
-- each org is on, and per-project quota overrides. Owned by platform-policy. Org and project ids
-- are iam's: no foreign key crosses schemas (doc/architecture/0007), so rows here are checked
-- through the API that writes them, not by constraints.
CREATE SCHEMA IF NOT EXISTS policy;

CREATE TABLE policy.plans (
    name                  text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$'),
    description           text NOT NULL,
    -- The SKU names (gpuaas SKU ids) the plan entitles; NULL or '{*}' entitles every SKU.
    skus                  text[],
    -- Concurrent GPUs a project may hold unless its own quota says otherwise; NULL: no limit.
    default_project_gpus  integer CHECK (default_project_gpus >= 0),
    created_at            timestamptz NOT NULL DEFAULT now()
);

INSERT INTO policy.plans (name, description, skus, default_project_gpus) VALUES
    ('free',      'Small GPUs only, 8 concurrent GPUs per project', '{l40s-48gb,a100-40gb}', 8),
    ('standard',  'Every SKU, 64 concurrent GPUs per project',      NULL,                    64),
    ('unlimited', 'Every SKU, no GPU quota',                        NULL,                    NULL);

-- An org without a row here is on the default plan (`standard`, platform_policy::DEFAULT_PLAN).
CREATE TABLE policy.org_plans (
    org_id     uuid PRIMARY KEY,
    plan       text NOT NULL REFERENCES policy.plans (name),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The seeded default org (iam's first migration) runs the dev stack and the end-to-end tests,
-- which launch whole 8-GPU hosts side by side: it is not limited.
INSERT INTO policy.org_plans (org_id, plan) VALUES ('00000000-0000-7000-8000-000000000001', 'unlimited');

-- A project's own quota, overriding its org's plan. max_concurrent_gpus NULL: no limit.
CREATE TABLE policy.project_quotas (
    project_id          uuid PRIMARY KEY,
    org_id              uuid NOT NULL,
    max_concurrent_gpus integer CHECK (max_concurrent_gpus >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX project_quotas_by_org ON policy.project_quotas (org_id);
