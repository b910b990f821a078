-- Kinds of records that writers may produce (docs/OPERATIONS.md, "Rolling
-- upgrade and rollback"). A release that brings a new kind of record, or a
-- new version of one, adds it here: enabled on a fresh install, disabled on
-- an upgrade until the operator turns it on once every instance runs a
-- release that reads it. Every instance reads this table, so one switch
-- holds for all of them.
CREATE TABLE IF NOT EXISTS features (
    name TEXT PRIMARY KEY,
    enabled BOOL NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
