-- Overrides of the configured limits, one per domain and descriptor path,
-- and their audit history.

CREATE TABLE sluice_overrides (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    domain            TEXT NOT NULL CHECK (domain <> ''),
    -- [{"key": "...", "value": "..."}, ...]; value "" is the key's any-value rule.
    path              JSONB NOT NULL CHECK (jsonb_typeof(path) = 'array' AND jsonb_array_length(path) > 0),
    -- The rate_limit, in the limit-file's terms.
    unit              TEXT CHECK (unit IN ('second', 'minute', 'hour', 'day', 'week', 'month', 'year')),
    unit_multiplier   BIGINT NOT NULL DEFAULT 1 CHECK (unit_multiplier BETWEEN 1 AND 4294967295),
    requests_per_unit BIGINT NOT NULL DEFAULT 0 CHECK (requests_per_unit BETWEEN 0 AND 4294967295),
    burst             BIGINT CHECK (burst BETWEEN 1 AND 4294967295),
    unlimited         BOOLEAN NOT NULL DEFAULT false,
    name              TEXT NOT NULL DEFAULT '',
    replaces          TEXT[] NOT NULL DEFAULT '{}',
    reason            TEXT NOT NULL DEFAULT '',
    updated_by        TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at        TIMESTAMPTZ,
    CHECK (unlimited = (unit IS NULL)),
    CHECK (burst IS NULL OR requests_per_unit > 0)
);

-- One override per path. The path is hashed: a long one would not fit a
-- btree entry.
CREATE UNIQUE INDEX sluice_overrides_path ON sluice_overrides (domain, md5(path::text));
CREATE INDEX sluice_overrides_expires_at ON sluice_overrides (expires_at) WHERE expires_at IS NOT NULL;

-- Every change, written in the transaction that makes it. old and new are
-- the override in the admin API's JSON form; no foreign key, since the
-- history outlives a deleted override.
CREATE TABLE sluice_override_history (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    override_id BIGINT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('create', 'update', 'delete', 'expire')),
    old         JSONB,
    new         JSONB,
    actor       TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sluice_override_history_override ON sluice_override_history (override_id, seq);
