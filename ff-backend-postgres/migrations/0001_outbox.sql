-- The outbox: one table per event family, with a typed column for every
-- event field (named after its wire name), the event's metadata, and its
-- position (xid, id).
--
-- {{schema}} stands for the configured schema; ff substitutes it (a plain
-- lower-case identifier) before running this file.
--
-- xid  the writing transaction's id (pg_current_xact_id()). Subscribers
--      read in (xid, id) order and only rows of transactions older than
--      their snapshot's xmin, so a row can never appear behind a position
--      already delivered.
-- id   row id, in insertion order within a transaction.
-- at   milliseconds since the Unix epoch, when the row was inserted.
-- v    schema version of the row (rows newer than a reader understands are
--      delivered as Corrupt, never misread).

CREATE TABLE {{schema}}.lease_history (
    xid                xid8     NOT NULL DEFAULT pg_current_xact_id(),
    id                 bigint   GENERATED ALWAYS AS IDENTITY,
    at                 bigint   NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
    v                  smallint NOT NULL DEFAULT 1,
    type               text     NOT NULL,  -- acquired | renewed | expired | reclaimed | revoked
    execution_id       text     NOT NULL,  -- {fp:N}:<uuid>
    lease_id           uuid,
    worker_instance_id text,
    prev_owner         text,
    new_lease_id       uuid,
    new_owner          text,
    revoked_by         text,               -- required when type = 'revoked'
    namespace          text,
    tags               jsonb    NOT NULL DEFAULT '{}',
    PRIMARY KEY (xid, id)
);

CREATE TABLE {{schema}}.completion (
    xid                xid8     NOT NULL DEFAULT pg_current_xact_id(),
    id                 bigint   GENERATED ALWAYS AS IDENTITY,
    at                 bigint   NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
    v                  smallint NOT NULL DEFAULT 1,
    execution_id       text     NOT NULL,
    outcome            text     NOT NULL,  -- success | failure | cancelled | any other string
    namespace          text,
    tags               jsonb    NOT NULL DEFAULT '{}',
    PRIMARY KEY (xid, id)
);

CREATE TABLE {{schema}}.signal_delivery (
    xid                xid8     NOT NULL DEFAULT pg_current_xact_id(),
    id                 bigint   GENERATED ALWAYS AS IDENTITY,
    at                 bigint   NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
    v                  smallint NOT NULL DEFAULT 1,
    execution_id       text     NOT NULL,
    signal_id          uuid     NOT NULL,
    waitpoint_id       uuid,
    source_identity    text,
    effect             text     NOT NULL,  -- satisfied | buffered | deduped | any other string
    namespace          text,
    tags               jsonb    NOT NULL DEFAULT '{}',
    PRIMARY KEY (xid, id)
);

CREATE TABLE {{schema}}.instance_tags (
    xid                xid8     NOT NULL DEFAULT pg_current_xact_id(),
    id                 bigint   GENERATED ALWAYS AS IDENTITY,
    at                 bigint   NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
    v                  smallint NOT NULL DEFAULT 1,
    type               text     NOT NULL,  -- attached | cleared
    execution_id       text     NOT NULL,
    tag                text     NOT NULL,
    namespace          text,
    tags               jsonb    NOT NULL DEFAULT '{}',
    PRIMARY KEY (xid, id)
);

-- Filtered subscriptions: by execution, by namespace (only rows that have
-- one), by metadata tag (tags @> '{"key": "value"}'). Kind filters are
-- served by the (xid, id) scan: kinds are few and common.
CREATE INDEX lease_history_execution_id ON {{schema}}.lease_history (execution_id, xid, id);
CREATE INDEX lease_history_namespace ON {{schema}}.lease_history (namespace, xid, id) WHERE namespace IS NOT NULL;
CREATE INDEX lease_history_tags ON {{schema}}.lease_history USING gin (tags jsonb_path_ops);
CREATE INDEX completion_execution_id ON {{schema}}.completion (execution_id, xid, id);
CREATE INDEX completion_namespace ON {{schema}}.completion (namespace, xid, id) WHERE namespace IS NOT NULL;
CREATE INDEX completion_tags ON {{schema}}.completion USING gin (tags jsonb_path_ops);
CREATE INDEX signal_delivery_execution_id ON {{schema}}.signal_delivery (execution_id, xid, id);
CREATE INDEX signal_delivery_namespace ON {{schema}}.signal_delivery (namespace, xid, id) WHERE namespace IS NOT NULL;
CREATE INDEX signal_delivery_tags ON {{schema}}.signal_delivery USING gin (tags jsonb_path_ops);
CREATE INDEX instance_tags_execution_id ON {{schema}}.instance_tags (execution_id, xid, id);
CREATE INDEX instance_tags_namespace ON {{schema}}.instance_tags (namespace, xid, id) WHERE namespace IS NOT NULL;
CREATE INDEX instance_tags_tags ON {{schema}}.instance_tags USING gin (tags jsonb_path_ops);

-- Wake-up: after an INSERT statement, notify channel '<schema>.<table>'
-- with an empty payload (identical notifications of one transaction
-- collapse into one). A session that sets ff.defer_notify = 'on' promises
-- to send that notification itself after it commits: a NOTIFY inside a
-- transaction takes a cluster-wide lock from its commit through the WAL
-- flush, which serialises concurrent committers. ff's own publishing
-- connections do this; every other producer (psql, other languages, ff's
-- in-transaction append) is woken for by the trigger.
CREATE FUNCTION {{schema}}.notify_subscribers() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('ff.defer_notify', true) IS DISTINCT FROM 'on' THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER notify_subscribers AFTER INSERT ON {{schema}}.lease_history
    FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.notify_subscribers();
CREATE TRIGGER notify_subscribers AFTER INSERT ON {{schema}}.completion
    FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.notify_subscribers();
CREATE TRIGGER notify_subscribers AFTER INSERT ON {{schema}}.signal_delivery
    FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.notify_subscribers();
CREATE TRIGGER notify_subscribers AFTER INSERT ON {{schema}}.instance_tags
    FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.notify_subscribers();
