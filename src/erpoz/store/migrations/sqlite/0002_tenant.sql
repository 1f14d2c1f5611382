-- Every run belongs to a tenant (its "tenant" tag; "-" when it has none): the server lists and
-- touches only its caller's tenant's runs, so the tenant is a column with an index.
ALTER TABLE runs ADD COLUMN tenant TEXT NOT NULL DEFAULT '-';
UPDATE runs SET tenant = coalesce(
    (SELECT json_extract(e.data, '$.tags.tenant') FROM events e
     WHERE e.run_id = runs.run_id AND e.seq = 1 AND e.kind = 'run_started'), '-');
CREATE INDEX runs_by_tenant ON runs (tenant, created);
