-- Kept apart from V6: CockroachDB prefers schema changes and writes in
-- separate transactions. Deletions are a kind of record that releases before
-- this one cannot read: on an install that has messages already (an upgrade,
-- where older instances may still run), they wait for the operator's switch;
-- on a fresh one they are on. Rerunnable: a second run changes nothing.
INSERT INTO features (name, enabled)
SELECT 'deletions', NOT EXISTS (SELECT 1 FROM messages)
ON CONFLICT (name) DO NOTHING;
