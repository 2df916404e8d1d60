-- Removing whole tables must not be decided by a snapshot older than the
-- lock that protects the removal: at REPEATABLE READ or SERIALIZABLE the
-- transaction's snapshot predates the lock wait, so rows committed while
-- waiting would be invisible to the checks yet dropped with their table.
-- Both functions that drop tables therefore refuse to run at those
-- levels. (Row pruning is unaffected: it deletes only rows it can see,
-- and every row of a transaction older than its snapshot's xmin is
-- visible, so nothing committed later can sort behind its horizon.)

CREATE OR REPLACE FUNCTION {{schema}}.partition_by_time(p_family text, p_interval_ms bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    tbl  text := {{schema}}.family_table(p_family);
    old  text := {{schema}}.family_table(p_family) || '_unpartitioned';
    now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    is_empty boolean;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'ff partition_by_time must run at READ COMMITTED, not %: a snapshot older than its lock would decide what it drops, losing rows committed meanwhile; call it in a transaction of its own begun with BEGIN ISOLATION LEVEL READ COMMITTED', upper(current_setting('transaction_isolation'))
            USING ERRCODE = '25000';
    END IF;
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

CREATE OR REPLACE FUNCTION {{schema}}.prune_partitions_older_than(p_family text, p_age_ms bigint, p_detach boolean DEFAULT false)
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
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'ff prune_partitions_older_than must run at READ COMMITTED, not %: a snapshot older than its lock would decide what it drops, losing rows committed meanwhile; call it in a transaction of its own begun with BEGIN ISOLATION LEVEL READ COMMITTED', upper(current_setting('transaction_isolation'))
            USING ERRCODE = '25000';
    END IF;
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
