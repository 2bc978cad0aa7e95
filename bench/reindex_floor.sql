-- The floor of a set-based reindex on this machine (docs/reindex.md, Performance): what PostgreSQL alone costs to
-- write and to compare every index row of a store, the extraction aside. On a store kept by `bench_reindex --keep`,
-- with nothing else running:  psql "$DATABASE_URL"_bench_reindex -f bench/reindex_floor.sql
\timing on
SET jit = off;
SELECT count(*) AS resources FROM fhirstore_resource WHERE NOT deleted;
SELECT 'token' t, count(*) FROM fhirstore_tokenindex UNION ALL SELECT 'string', count(*) FROM fhirstore_stringindex
 UNION ALL SELECT 'date', count(*) FROM fhirstore_dateindex UNION ALL SELECT 'reference', count(*) FROM fhirstore_referenceindex
 UNION ALL SELECT 'number', count(*) FROM fhirstore_numberindex UNION ALL SELECT 'quantity', count(*) FROM fhirstore_quantityindex;
-- precomputed rows, in a scratch copy without indexes (what an extraction would produce)
DROP TABLE IF EXISTS pre_token, pre_string, pre_date, pre_reference, f_token, f_string, f_date, f_reference;
CREATE UNLOGGED TABLE pre_token AS SELECT * FROM fhirstore_tokenindex ORDER BY resource_id;
CREATE UNLOGGED TABLE pre_string AS SELECT * FROM fhirstore_stringindex ORDER BY resource_id;
CREATE UNLOGGED TABLE pre_date AS SELECT * FROM fhirstore_dateindex ORDER BY resource_id;
CREATE UNLOGGED TABLE pre_reference AS SELECT * FROM fhirstore_referenceindex ORDER BY resource_id;
CREATE INDEX ON pre_token (resource_id); CREATE INDEX ON pre_string (resource_id); CREATE INDEX ON pre_date (resource_id); CREATE INDEX ON pre_reference (resource_id);
VACUUM ANALYZE pre_token, pre_string, pre_date, pre_reference;
CHECKPOINT;
-- W: write floor: every index row of every resource into empty copies of the index tables (keys, indexes, WAL)
CREATE TABLE f_token (LIKE fhirstore_tokenindex INCLUDING ALL);
CREATE TABLE f_string (LIKE fhirstore_stringindex INCLUDING ALL);
CREATE TABLE f_date (LIKE fhirstore_dateindex INCLUDING ALL);
CREATE TABLE f_reference (LIKE fhirstore_referenceindex INCLUDING ALL);
SELECT now() AS w_start \gset
BEGIN;
INSERT INTO f_token SELECT * FROM pre_token;
INSERT INTO f_string SELECT * FROM pre_string;
INSERT INTO f_date SELECT * FROM pre_date;
INSERT INTO f_reference SELECT * FROM pre_reference;
COMMIT;
SELECT extract(epoch FROM clock_timestamp() - :'w_start'::timestamptz) AS write_floor_seconds;
DROP TABLE f_token, f_string, f_date, f_reference;
-- C1: compare floor, whole store at once (hash full joins, the best plan; no page overheads)
SELECT now() AS c_start \gset
SELECT (SELECT count(*) FROM pre_token w FULL JOIN fhirstore_tokenindex x USING (resource_id, param, system, code) WHERE w.resource_type IS NULL OR x.resource_type IS NULL)
 + (SELECT count(*) FROM pre_string w FULL JOIN fhirstore_stringindex x USING (resource_id, param, normalized, exact) WHERE w.resource_type IS NULL OR x.resource_type IS NULL)
 + (SELECT count(*) FROM pre_date w FULL JOIN fhirstore_dateindex x USING (resource_id, param, low, high) WHERE w.resource_type IS NULL OR x.resource_type IS NULL)
 + (SELECT count(*) FROM pre_reference w FULL JOIN fhirstore_referenceindex x USING (resource_id, param, target_type, target_id) WHERE w.resource_type IS NULL OR x.resource_type IS NULL) AS differing;
SELECT extract(epoch FROM clock_timestamp() - :'c_start'::timestamptz) AS compare_floor_whole_seconds;
-- R: read floor: every body read and detoasted once (jsonb_typeof of a key forces the detoast)
SELECT now() AS r_start \gset
SELECT count(*) FROM fhirstore_resource WHERE NOT deleted AND body ? 'zzz';
SELECT extract(epoch FROM clock_timestamp() - :'r_start'::timestamptz) AS read_bodies_seconds;
DROP TABLE pre_token, pre_string, pre_date, pre_reference;
