-- Each role's consumer positions are its own: a row records the role that
-- wrote it, row-level security lets a role see and change only its own
-- rows, and the same consumer name may be used by different roles. (The
-- table's owner bypasses the policy; ff's queries name current_user
-- themselves, so every role reads the same way.) Rows written before this
-- migration belong to the role that runs it.
ALTER TABLE {{schema}}.consumer_cursors ADD COLUMN owner text NOT NULL DEFAULT current_user;
ALTER TABLE {{schema}}.consumer_cursors DROP CONSTRAINT consumer_cursors_pkey;
ALTER TABLE {{schema}}.consumer_cursors ADD PRIMARY KEY (owner, name);
ALTER TABLE {{schema}}.consumer_cursors ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON {{schema}}.consumer_cursors
    USING (owner = current_user) WITH CHECK (owner = current_user);
