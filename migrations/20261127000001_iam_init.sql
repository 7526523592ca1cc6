-- iam: orgs and projects. Real IAM (users, keys, roles) comes later; a default org and project
-- are seeded so every resource belongs to a project from day one.
CREATE SCHEMA IF NOT EXISTS iam;

CREATE TABLE iam.orgs (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE iam.projects (
    id         uuid PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES iam.orgs (id),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

INSERT INTO iam.orgs (id, name) VALUES ('00000000-0000-7000-8000-000000000001', 'default');
INSERT INTO iam.projects (id, org_id, name)
VALUES ('00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-000000000001', 'default');
