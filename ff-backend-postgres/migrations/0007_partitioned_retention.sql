-- Retention by whole time ranges, for outboxes that take millions of
-- events a day: a family converted with partition_by_time is partitioned
-- by `at` (one range per interval, plus a default partition for anything
-- outside them), and prune_partitions_older_than drops (or detaches) whole
-- old ranges instead of deleting rows. The horizon is recorded as by
-- prune_before; rows of younger ranges that sort behind it (time and
-- transaction order differ) are deleted with it, so a reader from the
-- horizon misses nothing retained. prune_before / prune_older_than keep
-- working on either layout.

-- Families converted, and the width of their ranges.
CREATE TABLE {{schema}}.partitioning (
    family      text   PRIMARY KEY,  -- lease-history | completion | signal-delivery | instance-tags
    interval_ms bigint NOT NULL CHECK (interval_ms > 0)
);

CREATE FUNCTION {{schema}}.family_table(p_family text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    tbl text;
BEGIN
    tbl := CASE p_family
        WHEN 'lease-history' THEN 'lease_history'
        WHEN 'completion' THEN 'completion'
        WHEN 'signal-delivery' THEN 'signal_delivery'
        WHEN 'instance-tags' THEN 'instance_tags'
    END;
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'unknown ff family %', p_family USING ERRCODE = '22023';
    END IF;
    RETURN tbl;
END
$$;

-- Create the missing ranges of p_family that cover [p_from_ms, p_until_ms].
-- A range whose rows already sit in the default partition is left there.
CREATE FUNCTION {{schema}}.ensure_partitions(p_family text, p_from_ms bigint, p_until_ms bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    tbl     text := {{schema}}.family_table(p_family);
    step    bigint;
    start   bigint;
    created integer := 0;
BEGIN
    SELECT interval_ms INTO step FROM {{schema}}.partitioning WHERE family = p_family;
    IF step IS NULL THEN
        RAISE EXCEPTION 'ff family % is not partitioned by time (see partition_by_time)', p_family
            USING ERRCODE = '22023';
    END IF;
    start := (p_from_ms / step) * step;
    WHILE start <= p_until_ms LOOP
        IF to_regclass(format('{{schema}}.%I', tbl || '_p' || start)) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE {{schema}}.%I PARTITION OF {{schema}}.%I FOR VALUES FROM (%s) TO (%s)',
                               tbl || '_p' || start, tbl, start, start + step);
                created := created + 1;
            EXCEPTION WHEN check_violation THEN
                NULL;  -- the default partition holds rows of this range
            END;
        END IF;
        start := start + step;
    END LOOP;
    RETURN created;
END
$$;

-- Convert the empty outbox of p_family into one partitioned by `at` in
-- ranges of p_interval_ms, with ranges from one interval ago to a week of
-- intervals ahead. Grants on the old table are not carried over: grant
-- again afterwards (ff migrate does).
CREATE FUNCTION {{schema}}.partition_by_time(p_family text, p_interval_ms bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    tbl  text := {{schema}}.family_table(p_family);
    old  text := {{schema}}.family_table(p_family) || '_unpartitioned';
    now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    is_empty boolean;
BEGIN
    IF EXISTS (SELECT 1 FROM {{schema}}.partitioning WHERE family = p_family) THEN
        RETURN;
    END IF;
    EXECUTE format('LOCK TABLE {{schema}}.%I IN ACCESS EXCLUSIVE MODE', tbl);
    EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM {{schema}}.%I)', tbl) INTO is_empty;
    IF NOT is_empty THEN
        RAISE EXCEPTION 'ff family % has events: only an empty outbox is converted to time partitions', p_family
            USING ERRCODE = '55000';
    END IF;
    EXECUTE format('ALTER TABLE {{schema}}.%I RENAME TO %I', tbl, old);
    EXECUTE format(
        'CREATE TABLE {{schema}}.%I (LIKE {{schema}}.%I INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS, '
        'PRIMARY KEY (xid, id, at)) PARTITION BY RANGE (at)', tbl, old);
    EXECUTE format('CREATE TABLE {{schema}}.%I PARTITION OF {{schema}}.%I DEFAULT', tbl || '_default', tbl);
    EXECUTE format('CREATE TRIGGER notify_subscribers AFTER INSERT ON {{schema}}.%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.notify_subscribers()', tbl);
    EXECUTE format('DROP TABLE {{schema}}.%I', old);
    INSERT INTO {{schema}}.partitioning (family, interval_ms) VALUES (p_family, p_interval_ms);
    PERFORM {{schema}}.ensure_partitions(p_family, now_ms - p_interval_ms, now_ms + 7 * p_interval_ms);
END
$$;

-- Remove the ranges of p_family that end at or before now - p_age_ms,
-- oldest first: DROP them, or with p_detach DETACH them (they stay as
-- plain tables, named <table>_p<start ms>, e.g. for archiving). Stops at a
-- range holding a row of a transaction not older than every open one (a
-- later call goes on). Records the horizon, deletes rows of younger
-- ranges that sort behind it, and creates the next week of ranges.
-- Returns the number of ranges removed.
CREATE FUNCTION {{schema}}.prune_partitions_older_than(p_family text, p_age_ms bigint, p_detach boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    tbl      text := {{schema}}.family_table(p_family);
    step     bigint;
    now_ms   bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    frontier xid8;
    part     record;
    last_xid xid8;
    last_id  bigint;
    last_at  bigint;
    removed  integer := 0;
BEGIN
    SELECT interval_ms INTO step FROM {{schema}}.partitioning WHERE family = p_family;
    IF step IS NULL THEN
        RAISE EXCEPTION 'ff family % is not partitioned by time (see partition_by_time)', p_family
            USING ERRCODE = '22023';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('{{schema}}.prune.' || p_family, 0));
    -- The parent first, as every reader and writer locks it first.
    EXECUTE format('LOCK TABLE {{schema}}.%I IN ACCESS EXCLUSIVE MODE', tbl);
    frontier := pg_snapshot_xmin(pg_current_snapshot());
    FOR part IN
        SELECT c.relname AS name, substring(c.relname FROM length(tbl) + 3)::bigint AS start
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = format('{{schema}}.%I', tbl)::regclass
          AND c.relname ~ ('^' || tbl || '_p[0-9]+$')
        ORDER BY 2
    LOOP
        EXIT WHEN part.start + step > now_ms - p_age_ms;
        EXECUTE format('SELECT xid, id, at FROM {{schema}}.%I ORDER BY xid DESC, id DESC LIMIT 1', part.name)
            INTO last_xid, last_id, last_at;
        EXIT WHEN last_xid IS NOT NULL AND last_xid >= frontier;
        IF p_detach THEN
            EXECUTE format('ALTER TABLE {{schema}}.%I DETACH PARTITION {{schema}}.%I', tbl, part.name);
        ELSE
            EXECUTE format('DROP TABLE {{schema}}.%I', part.name);
        END IF;
        removed := removed + 1;
        IF last_xid IS NOT NULL THEN
            INSERT INTO {{schema}}.horizons AS h (family, xid, id, pruned_at, at)
            VALUES (p_family, last_xid, last_id, now_ms, last_at)
            ON CONFLICT (family) DO UPDATE
                SET xid = EXCLUDED.xid, id = EXCLUDED.id, pruned_at = EXCLUDED.pruned_at, at = EXCLUDED.at
                WHERE (h.xid, h.id) < (EXCLUDED.xid, EXCLUDED.id);
        END IF;
    END LOOP;
    SELECT xid, id INTO last_xid, last_id FROM {{schema}}.horizons WHERE family = p_family;
    IF removed > 0 AND last_xid IS NOT NULL THEN
        EXECUTE format('DELETE FROM {{schema}}.%I WHERE (xid, id) <= ($1, $2) AND xid < $3', tbl)
            USING last_xid, last_id, frontier;
    END IF;
    PERFORM {{schema}}.ensure_partitions(p_family, now_ms, now_ms + 7 * step);
    RETURN removed;
END
$$;
