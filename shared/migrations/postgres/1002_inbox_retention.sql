-- Retention (shared::retention) deletes inbox rows by age.
CREATE INDEX inbox_processed_at ON inbox (processed_at);
