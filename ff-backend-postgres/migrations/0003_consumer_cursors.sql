-- The cursor store: each named consumer's last processed position, as
-- cursor text. Writing it in the same transaction as the consumer's own
-- effects makes processing effectively exactly-once.
CREATE TABLE {{schema}}.consumer_cursors (
    name       text   PRIMARY KEY,
    cursor     text   NOT NULL,
    updated_at bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
);
