-- Wallet sign-in and rate-limit events.
CREATE TABLE wallets (
    address TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    allow_admin BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    created_by TEXT
);
CREATE INDEX wallets_workspace ON wallets (workspace);

CREATE TABLE web3_tokens (
    token_hash BYTEA PRIMARY KEY,
    workspace TEXT NOT NULL DEFAULT '*',
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE TABLE rate_limit_events (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    at BIGINT NOT NULL,
    platform_key_id TEXT,
    virtual_key_id TEXT,
    provider_key_id TEXT,
    model TEXT,
    limit_type TEXT NOT NULL,
    limit_value BIGINT NOT NULL,
    scope TEXT NOT NULL
);
CREATE INDEX rate_limit_events_workspace_at ON rate_limit_events (workspace, at);
CREATE INDEX rate_limit_events_key_at ON rate_limit_events (platform_key_id, at);
