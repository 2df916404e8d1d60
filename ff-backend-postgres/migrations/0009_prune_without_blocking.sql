-- Pruning time ranges must not stall a family behind one open reader.
-- ACCESS EXCLUSIVE on the parent conflicts with every reader and writer,
-- and a lock request that waits also makes every later request wait
-- behind it. So prune_partitions_older_than now:
-- - decides from the catalog alone (no table lock) whether a range is due,
--   and whether ranges ahead are missing, and takes the exclusive lock only
--   then;
-- - waits for that lock at most p_lock_timeout_ms (default 5 s): on
--   timeout it removes nothing, warns, and returns -1 (the next run
--   retries);
-- - removes rows past retention that sit in the default partition too,
--   by row deletion (no exclusive lock), recording the horizon as
--   prune_before does;
-- - creates ranges seven intervals ahead, skipping a range whose rows
--   already sit in the default partition (they are pruned by age there).
-- It still runs only at READ COMMITTED (see 0008).

DROP FUNCTION {{schema}}.prune_partitions_older_than(text, bigint, boolean);

-- The missing ranges of p_family in [p_from_ms, p_until_ms] that can be
-- created: no row of theirs sits in the default partition. Reads no
-- table but the default partition (ACCESS SHARE, which conflicts with no
-- reader or writer).
CREATE FUNCTION {{schema}}.missing_partitions(p_family text, p_from_ms bigint, p_until_ms bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    tbl     text := {{schema}}.family_table(p_family);
    step    bigint;
    start   bigint;
    missing integer := 0;
    taken   boolean;
BEGIN
    SELECT interval_ms INTO step FROM {{schema}}.partitioning WHERE family = p_family;
    start := (p_from_ms / step) * step;
    WHILE start <= p_until_ms LOOP
        IF to_regclass(format('{{schema}}.%I', tbl || '_p' || start)) IS NULL THEN
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM {{schema}}.%I WHERE at >= $1 AND at < $2)', tbl || '_default')
                INTO taken USING start, start + step;
            IF NOT taken THEN
                missing := missing + 1;
            END IF;
        END IF;
        start := start + step;
    END LOOP;
    RETURN missing;
END
$$;

-- Remove the ranges of p_family that end at or before now - p_age_ms,
-- oldest first: DROP them, or with p_detach DETACH them (they stay as
-- plain tables, named <table>_p<start ms>, e.g. for archiving). Stops at a
-- range holding a row of a transaction not older than every open one (a
-- later call goes on). Records the horizon, deletes rows of younger
-- ranges that sort behind it, deletes rows of the default partition that
-- lie in due time ranges, and creates the ranges of the next seven
-- intervals. The table lock is taken only when a range is due or missing,
-- and waited for at most p_lock_timeout_ms. Returns the number of ranges
-- removed, or -1 when the lock was not granted in time (nothing removed).
CREATE FUNCTION {{schema}}.prune_partitions_older_than(p_family text, p_age_ms bigint, p_detach boolean DEFAULT false, p_lock_timeout_ms bigint DEFAULT 5000)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    tbl        text := {{schema}}.family_table(p_family);
    step       bigint;
    now_ms     bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    due_before bigint;
    due        boolean;
    missing    integer;
    frontier   xid8;
    part       record;
    last_xid   xid8;
    last_id    bigint;
    last_at    bigint;
    removed    integer := 0;
    in_default boolean := false;
    prev_lock_timeout text := current_setting('lock_timeout');
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'ff prune_partitions_older_than must run at READ COMMITTED, not %: a snapshot older than its lock would decide what it drops, losing rows committed meanwhile; call it in a transaction of its own begun with BEGIN ISOLATION LEVEL READ COMMITTED', upper(current_setting('transaction_isolation'))
            USING ERRCODE = '25000';
    END IF;
    IF p_lock_timeout_ms IS NULL OR p_lock_timeout_ms <= 0 THEN
        RAISE EXCEPTION 'ff prune_partitions_older_than: the lock timeout must be a positive number of milliseconds, not %', p_lock_timeout_ms
            USING ERRCODE = '22023';
    END IF;
    SELECT interval_ms INTO step FROM {{schema}}.partitioning WHERE family = p_family;
    IF step IS NULL THEN
        RAISE EXCEPTION 'ff family % is not partitioned by time (see partition_by_time)', p_family
            USING ERRCODE = '22023';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('{{schema}}.prune.' || p_family, 0));
    -- A range [s, s + step) is due when s + step <= now - age.
    due_before := ((now_ms - p_age_ms) / step) * step;
    SELECT EXISTS (
        SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = format('{{schema}}.%I', tbl)::regclass
          AND c.relname ~ ('^' || tbl || '_p[0-9]+$')
          AND substring(c.relname FROM length(tbl) + 3)::bigint + step <= now_ms - p_age_ms
    ) INTO due;
    missing := {{schema}}.missing_partitions(p_family, now_ms, now_ms + 7 * step);
    IF due OR missing > 0 THEN
        BEGIN
            PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
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
            IF missing > 0 THEN
                PERFORM {{schema}}.ensure_partitions(p_family, now_ms, now_ms + 7 * step);
            END IF;
            PERFORM set_config('lock_timeout', prev_lock_timeout, true);
        EXCEPTION WHEN lock_not_available THEN
            PERFORM set_config('lock_timeout', prev_lock_timeout, true);
            RAISE WARNING 'ff prune_partitions_older_than(%) removed nothing: table %.% stayed locked by another transaction for % ms (an open transaction that read it, pg_dump, or an idle-in-transaction session); the next run retries', p_family, '{{schema}}', tbl, p_lock_timeout_ms;
            RETURN -1;
        END;
    END IF;
    -- Rows of due time ranges that sit in the default partition, deleted as
    -- rows: only of transactions older than every open one, so none can
    -- commit behind the horizon later.
    frontier := pg_snapshot_xmin(pg_current_snapshot());
    EXECUTE format('SELECT xid, id, at FROM {{schema}}.%I WHERE at < $1 AND xid < $2 ORDER BY xid DESC, id DESC LIMIT 1', tbl || '_default')
        INTO last_xid, last_id, last_at USING due_before, frontier;
    IF last_xid IS NOT NULL THEN
        in_default := true;
        INSERT INTO {{schema}}.horizons AS h (family, xid, id, pruned_at, at)
        VALUES (p_family, last_xid, last_id, now_ms, last_at)
        ON CONFLICT (family) DO UPDATE
            SET xid = EXCLUDED.xid, id = EXCLUDED.id, pruned_at = EXCLUDED.pruned_at, at = EXCLUDED.at
            WHERE (h.xid, h.id) < (EXCLUDED.xid, EXCLUDED.id);
    END IF;
    SELECT xid, id INTO last_xid, last_id FROM {{schema}}.horizons WHERE family = p_family;
    IF (removed > 0 OR in_default) AND last_xid IS NOT NULL THEN
        EXECUTE format('DELETE FROM {{schema}}.%I WHERE (xid, id) <= ($1, $2) AND xid < $3', tbl)
            USING last_xid, last_id, frontier;
    END IF;
    RETURN removed;
END
$$;
