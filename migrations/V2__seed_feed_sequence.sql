-- Kept apart from V1: CockroachDB prefers schema changes and writes in
-- separate transactions.
INSERT INTO feed_sequence (id, last_seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
