-- The charging mode of an override's limit (rate_limit.charge), as a limit
-- file states it: NULL when the override does not say, so the configured
-- defaults (or the mode of the limit it overrides) apply; and a usage
-- limit's max_debt, NULL for the default (1000 times the burst).
ALTER TABLE sluice_overrides
    ADD COLUMN charge   TEXT CHECK (charge IN ('admission', 'usage')),
    ADD COLUMN max_debt BIGINT CHECK (max_debt BETWEEN 1 AND 9007199254740991),
    ADD CONSTRAINT sluice_overrides_usage_has_bucket
        CHECK (charge IS DISTINCT FROM 'usage' OR (NOT unlimited AND requests_per_unit > 0)),
    ADD CONSTRAINT sluice_overrides_max_debt_usage
        CHECK (max_debt IS NULL OR charge = 'usage');
