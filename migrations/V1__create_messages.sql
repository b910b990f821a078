-- One schema for PostgreSQL (native mode, tests) and CockroachDB (compose):
-- only types and statements both accept (TEXT is CockroachDB's STRING).

-- Every persisted message. `id` is fixed by the API before the message is
-- queued, so a redelivered record hits the primary key instead of creating a
-- second row. `seq` is the message's place in the one feed order (the SSE
-- cursor); it is assigned by the worker under the lock of `feed_sequence`.
CREATE TABLE IF NOT EXISTS messages (
    id UUID PRIMARY KEY,
    seq INT8 NOT NULL,
    user_id TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    persisted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Serves history (`ORDER BY seq DESC LIMIT n`), resume (`seq > cursor`),
-- pages (`seq < before`) and the broadcaster's gap fill.
CREATE UNIQUE INDEX IF NOT EXISTS messages_seq_key ON messages (seq);

-- Serves the same queries restricted to one user (`?user_id=`).
CREATE INDEX IF NOT EXISTS messages_user_seq_idx ON messages (user_id, seq);

-- The single sequencer: one row, locked by every worker transaction, so that
-- commit order equals sequence order (see docs/ARCHITECTURE.md).
CREATE TABLE IF NOT EXISTS feed_sequence (
    id INT4 PRIMARY KEY,
    last_seq INT8 NOT NULL
);
