-- iam: real identity. Users, memberships with roles, service accounts, API keys, refresh tokens,
-- invitations, node join tokens and per-node credentials. Secrets are stored only as SHA-256
-- hashes (random, high-entropy tokens) or argon2id hashes (passwords); node credentials only as
-- public keys.

ALTER TABLE iam.projects ADD COLUMN is_default boolean NOT NULL DEFAULT false;
UPDATE iam.projects SET is_default = true WHERE id = '00000000-0000-7000-8000-000000000002';
CREATE UNIQUE INDEX projects_one_default_per_org ON iam.projects (org_id) WHERE is_default;

CREATE TABLE iam.users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    password_hash text NOT NULL,
    -- A platform role, separate from every tenant role: operator (the fleet) or finance (money).
    platform_role text CHECK (platform_role IN ('operator', 'finance')),
    -- Access tokens issued at or before this instant are refused (removal, deletion, role change).
    tokens_not_before timestamptz NOT NULL DEFAULT '-infinity',
    created_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE UNIQUE INDEX users_email ON iam.users (lower(email)) WHERE deleted_at IS NULL;

CREATE TABLE iam.org_members (
    org_id     uuid NOT NULL REFERENCES iam.orgs (id),
    user_id    uuid NOT NULL REFERENCES iam.users (id),
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_by_user ON iam.org_members (user_id);

CREATE TABLE iam.project_members (
    project_id uuid NOT NULL REFERENCES iam.projects (id),
    user_id    uuid NOT NULL REFERENCES iam.users (id),
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_by_user ON iam.project_members (user_id);

CREATE TABLE iam.service_accounts (
    id         uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES iam.projects (id),
    name       text NOT NULL,
    role       text NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
    created_by uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE UNIQUE INDEX service_accounts_name ON iam.service_accounts (project_id, name) WHERE deleted_at IS NULL;

CREATE TABLE iam.api_keys (
    id                 uuid PRIMARY KEY,
    -- The first characters of the key (`gpk_` and 8 more): shown in lists, not a secret.
    prefix             text NOT NULL,
    secret_hash        bytea NOT NULL UNIQUE,
    name               text NOT NULL,
    user_id            uuid REFERENCES iam.users (id),
    service_account_id uuid REFERENCES iam.service_accounts (id),
    org_id             uuid NOT NULL REFERENCES iam.orgs (id),
    project_id         uuid REFERENCES iam.projects (id),
    scopes             text[],
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz,
    last_used_at       timestamptz,
    revoked_at         timestamptz,
    CHECK ((user_id IS NULL) <> (service_account_id IS NULL))
);
CREATE INDEX api_keys_by_org ON iam.api_keys (org_id, created_at);

CREATE TABLE iam.refresh_tokens (
    id          uuid PRIMARY KEY,
    -- Every rotation stays in its family; a reused (already rotated) token revokes the family.
    family_id   uuid NOT NULL,
    user_id     uuid NOT NULL REFERENCES iam.users (id),
    secret_hash bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    rotated_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family ON iam.refresh_tokens (family_id);

CREATE TABLE iam.invitations (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES iam.orgs (id),
    email       text NOT NULL,
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    secret_hash bytea NOT NULL UNIQUE,
    invited_by  uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    accepted_at timestamptz,
    revoked_at  timestamptz
);

CREATE TABLE iam.join_tokens (
    id          uuid PRIMARY KEY,
    secret_hash bytea NOT NULL UNIQUE,
    created_by  uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    -- Single use: the node that exchanged it.
    used_at     timestamptz,
    used_by     uuid
);

-- A node's identity: the public half of a keypair generated on the host at join. The private key
-- never leaves the host.
CREATE TABLE iam.node_credentials (
    node_id    uuid PRIMARY KEY,
    public_key bytea NOT NULL,
    join_token uuid NOT NULL REFERENCES iam.join_tokens (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
