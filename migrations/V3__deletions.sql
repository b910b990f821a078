-- Deletions (docs/ARCHITECTURE.md, "Deletions"). A deletion takes its own
-- number in the one feed order, so sequence numbers now number events:
-- the committed numbers of `messages` and `deletions` together form the
-- gap-free range `1..=feed_sequence.last_seq`.

-- When a message was deleted; its content is emptied in the same
-- transaction, and the row stays as the tombstone, so that a replayed record
-- or a retried post with the same id can never store it again.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS deleted_at TIMESTAMPTZ;

-- One row per deleted message: `seq` is the deletion's place in the feed,
-- `of_seq` the deleted message's.
CREATE TABLE IF NOT EXISTS deletions (
    message_id UUID PRIMARY KEY,
    seq INT8 NOT NULL,
    of_seq INT8 NOT NULL,
    user_id TEXT NOT NULL,
    deleted_at TIMESTAMPTZ NOT NULL
);

-- Serves resume (`seq > cursor`) and the gap fill, merged with `messages`.
CREATE UNIQUE INDEX IF NOT EXISTS deletions_seq_key ON deletions (seq);

-- The same restricted to one author (`?user_id=`).
CREATE INDEX IF NOT EXISTS deletions_user_seq_idx ON deletions (user_id, seq);

-- The counts of the status page, kept by the worker's transaction.
ALTER TABLE feed_sequence ADD COLUMN IF NOT EXISTS stored INT8 NOT NULL DEFAULT 0;
ALTER TABLE feed_sequence ADD COLUMN IF NOT EXISTS deleted INT8 NOT NULL DEFAULT 0;
