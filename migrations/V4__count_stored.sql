-- Kept apart from V3: CockroachDB prefers schema changes and writes in
-- separate transactions. Every message stored before deletions existed is
-- stored and not deleted.
UPDATE feed_sequence SET stored = (SELECT count(*) FROM messages) WHERE id = 1;
