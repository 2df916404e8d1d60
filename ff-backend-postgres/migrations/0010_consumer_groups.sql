-- Consumer groups: a group's definition, its members' heartbeats and each
-- unit's lease and committed cursor.
--
-- A unit's lease lives as long as its owner's heartbeat in group_members,
-- so heartbeats never touch group_units: the row a consumer's transaction
-- locks through group_commit changes only when the unit changes hands or
-- its cursor moves. The epoch moves exactly when the owner changes.

CREATE TABLE {{schema}}.groups (
    name       text    PRIMARY KEY,
    family     text    NOT NULL,   -- lease-history | completion | signal-delivery | instance-tags
    filter     text    NOT NULL,   -- the filter's canonical text
    units      integer NOT NULL CHECK (units > 0),
    created_at bigint  NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
);

CREATE TABLE {{schema}}.group_units (
    group_name text    NOT NULL,
    unit       integer NOT NULL,
    owner      text,                -- the holder's session, NULL when free
    epoch      bigint  NOT NULL DEFAULT 0,
    cursor     text    NOT NULL,    -- the unit resumes exactly after it
    PRIMARY KEY (group_name, unit)
);

CREATE TABLE {{schema}}.group_members (
    group_name text        NOT NULL,
    session    text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (group_name, session)
);

-- Move a unit's cursor from p_prev to p_next, only while p_owner holds the
-- unit under p_epoch and the stored cursor is p_prev; otherwise raise
-- SQLSTATE FFG01, which aborts the caller's transaction so its effects
-- cannot commit without the position.
CREATE FUNCTION {{schema}}.group_commit(
    p_group text, p_unit integer, p_owner text, p_epoch bigint, p_prev text, p_next text
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cur record;
BEGIN
    UPDATE {{schema}}.group_units SET cursor = p_next
     WHERE group_name = p_group AND unit = p_unit
       AND owner = p_owner AND epoch = p_epoch AND cursor = p_prev;
    IF NOT FOUND THEN
        SELECT owner, epoch, cursor = p_prev AS same INTO cur
          FROM {{schema}}.group_units WHERE group_name = p_group AND unit = p_unit;
        RAISE EXCEPTION 'the unit is held by % under epoch % (stored cursor is the one last committed: %)',
            coalesce(cur.owner, 'nobody'), cur.epoch, coalesce(cur.same, false)
            USING ERRCODE = 'FFG01';
    END IF;
END $$;
