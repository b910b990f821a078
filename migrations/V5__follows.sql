-- Who follows whom (home timelines, docs/API.md "Following"). One row per
-- edge; the primary key lists whom a user follows in byte order (both
-- databases compare TEXT by bytes here: CockroachDB always, PostgreSQL under
-- the C collation the scripts create), the second index lists followers.
CREATE TABLE IF NOT EXISTS follows (
    user_id TEXT NOT NULL,
    target TEXT NOT NULL,
    followed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, target)
);

CREATE INDEX IF NOT EXISTS follows_target_idx ON follows (target, user_id);

-- One row per user whose follows ever changed: `version` moves in the same
-- transaction as every change, so an instance holding a home stream learns
-- of a change by reading versions alone (docs/ARCHITECTURE.md), and the row
-- serialises concurrent changes of one user (the FOLLOW_MAX check).
CREATE TABLE IF NOT EXISTS follow_versions (
    user_id TEXT PRIMARY KEY,
    version INT8 NOT NULL
);
