-- A node's credential also carries its X25519 encryption key (commands to the node are sealed
-- for it) and rotates: the agent registers a new key pair with an assertion of the old one.
ALTER TABLE iam.node_credentials
    ADD COLUMN encryption_key bytea CHECK (encryption_key IS NULL OR length(encryption_key) = 32),
    ADD COLUMN rotated_at timestamptz;

-- Assertions seen in their validity window: each is good once (a replayed header is refused).
CREATE TABLE iam.node_assertions_seen (
    node_id uuid NOT NULL,
    nonce   text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, nonce)
);
CREATE INDEX node_assertions_seen_at ON iam.node_assertions_seen (seen_at);
