-- keygate foundation: meta, master keys, secrets, workspaces, provider keys, platform keys, audit.
-- Times are Unix milliseconds; flags are 0/1 integers; JSON is TEXT.
CREATE TABLE kg_meta (
    key TEXT PRIMARY KEY,
    ivalue BIGINT NOT NULL DEFAULT 0,
    tvalue TEXT
);
INSERT INTO kg_meta (key, ivalue) VALUES ('rev', 0);

CREATE TABLE master_keys (
    version BIGINT PRIMARY KEY,
    check_value BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    rev BIGINT NOT NULL
);
INSERT INTO workspaces (id, workspace, name, created_at, updated_at, rev)
VALUES ('default', 'default', 'Default workspace', 0, 0, 0);

CREATE TABLE secrets (
    workspace TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    field TEXT NOT NULL,
    version BIGINT NOT NULL,
    master_version BIGINT NOT NULL,
    sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (workspace, owner_id, field, version)
);
CREATE INDEX secrets_master_version ON secrets (master_version);

CREATE TABLE provider_keys (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    name TEXT NOT NULL,
    hub TEXT NOT NULL,
    base_url TEXT,
    hub_settings TEXT NOT NULL,
    rate_limit_per_interval BIGINT,
    rate_limit_interval BIGINT,
    private BIGINT NOT NULL DEFAULT 0,
    secret_version BIGINT NOT NULL,
    secret_hint TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_used_at BIGINT,
    created_by TEXT,
    rev BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX provider_keys_live_name ON provider_keys (workspace, name) WHERE deleted_at IS NULL;
CREATE INDEX provider_keys_rev ON provider_keys (rev);

CREATE TABLE platform_keys (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    key_type TEXT NOT NULL,
    org_admin BIGINT NOT NULL DEFAULT 0,
    description TEXT NOT NULL,
    key_hash BYTEA NOT NULL,
    last6 TEXT NOT NULL,
    prev_key_hash BYTEA,
    prev_valid_until BIGINT,
    settings TEXT NOT NULL,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_used_at BIGINT,
    created_by TEXT,
    rev BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX platform_keys_hash ON platform_keys (key_hash);
CREATE INDEX platform_keys_workspace ON platform_keys (workspace, created_at);
CREATE INDEX platform_keys_rev ON platform_keys (rev);

CREATE TABLE audit_events (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    at BIGINT NOT NULL,
    actor_key_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT,
    request_id TEXT,
    details TEXT NOT NULL
);
CREATE INDEX audit_events_workspace_at ON audit_events (workspace, at);
