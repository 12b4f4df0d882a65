-- Virtual keys and usage records.
CREATE TABLE virtual_keys (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    note TEXT,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    created_by TEXT,
    rev BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX virtual_keys_live_slug ON virtual_keys (slug) WHERE deleted_at IS NULL;
CREATE INDEX virtual_keys_workspace ON virtual_keys (workspace, created_at);
CREATE INDEX virtual_keys_rev ON virtual_keys (rev);

CREATE TABLE usage_records (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    at BIGINT NOT NULL,
    request_id TEXT,
    platform_key_id TEXT,
    virtual_key_id TEXT,
    provider_key_id TEXT,
    hub TEXT,
    model TEXT,
    endpoint TEXT NOT NULL,
    status_code BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cost_nano BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    estimated BIGINT NOT NULL,
    stream BIGINT NOT NULL,
    error_kind TEXT
);
CREATE INDEX usage_records_workspace_at ON usage_records (workspace, at);
CREATE INDEX usage_records_vk ON usage_records (virtual_key_id, at);
CREATE INDEX usage_records_pk ON usage_records (platform_key_id, at);
