-- Retention: pruning deletes a prefix of a family's outbox (in (xid, id)
-- order) and records the newest deleted position as the family's horizon,
-- in the same transaction. Subscribers read the horizon in the same
-- statement as the rows, so a position behind it is always reported as
-- expired, never silently skipped.

CREATE TABLE {{schema}}.horizons (
    family    text   PRIMARY KEY,  -- lease-history | completion | signal-delivery | instance-tags
    xid       xid8   NOT NULL,     -- every row at or before (xid, id) may be gone
    id        bigint NOT NULL,
    pruned_at bigint NOT NULL      -- ms since the Unix epoch
);

-- Delete the rows of p_family strictly before (p_xid, p_id) — only rows of
-- transactions older than every open one, so no row can later appear
-- behind the new horizon. Returns the number of rows deleted.
CREATE FUNCTION {{schema}}.prune_before(p_family text, p_xid xid8, p_id bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    tbl      text;
    frontier xid8;
    deleted  bigint;
    last_xid xid8;
    last_id  bigint;
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
    -- One pruner per family at a time, so the horizon only moves forward.
    PERFORM pg_advisory_xact_lock(hashtextextended('{{schema}}.prune.' || p_family, 0));
    frontier := pg_snapshot_xmin(pg_current_snapshot());
    EXECUTE format(
        'WITH d AS (DELETE FROM {{schema}}.%I WHERE (xid, id) < ($1, $2) AND xid < $3 RETURNING xid, id)
         SELECT count(*) OVER (), xid, id FROM d ORDER BY xid DESC, id DESC LIMIT 1', tbl)
        INTO deleted, last_xid, last_id
        USING p_xid, p_id, frontier;
    IF last_xid IS NOT NULL THEN
        INSERT INTO {{schema}}.horizons AS h (family, xid, id, pruned_at)
        VALUES (p_family, last_xid, last_id, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
        ON CONFLICT (family) DO UPDATE
            SET xid = EXCLUDED.xid, id = EXCLUDED.id, pruned_at = EXCLUDED.pruned_at
            WHERE (h.xid, h.id) < (EXCLUDED.xid, EXCLUDED.id);
    END IF;
    RETURN coalesce(deleted, 0);
END
$$;

-- Delete the rows of p_family before the first row (in (xid, id) order)
-- recorded at or after now - p_age_ms; with no such row, every row that
-- prune_before may delete. Returns the number of rows deleted.
CREATE FUNCTION {{schema}}.prune_older_than(p_family text, p_age_ms bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    tbl      text;
    cutoff   bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint - p_age_ms;
    keep_xid xid8;
    keep_id  bigint;
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
    EXECUTE format('SELECT xid, id FROM {{schema}}.%I WHERE at >= $1 ORDER BY xid, id LIMIT 1', tbl)
        INTO keep_xid, keep_id
        USING cutoff;
    IF keep_xid IS NULL THEN
        keep_xid := pg_snapshot_xmax(pg_current_snapshot());
        keep_id := -9223372036854775808;
    END IF;
    RETURN {{schema}}.prune_before(p_family, keep_xid, keep_id);
END
$$;
