-- The horizon also records the deleted row's `at`: cursors carry their
-- row's `at` as a fingerprint, and a server proves that a cursor equal to
-- the horizon belongs to its history by comparing it. (0 for horizons
-- recorded before this migration: such cursors are judged by position
-- only.)
ALTER TABLE {{schema}}.horizons ADD COLUMN at bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION {{schema}}.prune_before(p_family text, p_xid xid8, p_id bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    tbl      text;
    frontier xid8;
    deleted  bigint;
    last_xid xid8;
    last_id  bigint;
    last_at  bigint;
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
        'WITH d AS (DELETE FROM {{schema}}.%I WHERE (xid, id) < ($1, $2) AND xid < $3 RETURNING xid, id, at)
         SELECT count(*) OVER (), xid, id, at FROM d ORDER BY xid DESC, id DESC LIMIT 1', tbl)
        INTO deleted, last_xid, last_id, last_at
        USING p_xid, p_id, frontier;
    IF last_xid IS NOT NULL THEN
        INSERT INTO {{schema}}.horizons AS h (family, xid, id, pruned_at, at)
        VALUES (p_family, last_xid, last_id, (extract(epoch FROM clock_timestamp()) * 1000)::bigint, last_at)
        ON CONFLICT (family) DO UPDATE
            SET xid = EXCLUDED.xid, id = EXCLUDED.id, pruned_at = EXCLUDED.pruned_at, at = EXCLUDED.at
            WHERE (h.xid, h.id) < (EXCLUDED.xid, EXCLUDED.id);
    END IF;
    RETURN coalesce(deleted, 0);
END
$$;
