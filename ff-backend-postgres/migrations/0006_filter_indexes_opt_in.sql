-- Filter indexes are opt-in: every writer pays for each secondary index
-- (measured: the same 200,000-row insert took 2.6 times as long with them),
-- and filtered subscriptions are correct without them. `ff migrate
-- --filter-indexes` (PostgresBackend::create_filter_indexes) creates the
-- indexes the filtered reads use; the ones dropped here indexed the raw
-- execution_id, which filters no longer compare (they compare it in lower
-- case, as the decoder reads it).
DROP INDEX IF EXISTS {{schema}}.lease_history_execution_id;
DROP INDEX IF EXISTS {{schema}}.lease_history_namespace;
DROP INDEX IF EXISTS {{schema}}.lease_history_tags;
DROP INDEX IF EXISTS {{schema}}.completion_execution_id;
DROP INDEX IF EXISTS {{schema}}.completion_namespace;
DROP INDEX IF EXISTS {{schema}}.completion_tags;
DROP INDEX IF EXISTS {{schema}}.signal_delivery_execution_id;
DROP INDEX IF EXISTS {{schema}}.signal_delivery_namespace;
DROP INDEX IF EXISTS {{schema}}.signal_delivery_tags;
DROP INDEX IF EXISTS {{schema}}.instance_tags_execution_id;
DROP INDEX IF EXISTS {{schema}}.instance_tags_namespace;
DROP INDEX IF EXISTS {{schema}}.instance_tags_tags;
