-- The relay deletes a row once the broker acknowledged it, instead of marking it published and
-- pruning it later: a row in the outbox is a row to send. Rows marked by an older relay are sent
-- already; they go now, with the mark and its indexes.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX outbox_published_at;
DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP COLUMN published_at;
