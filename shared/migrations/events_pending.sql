-- The inbox is drained in event order (`ORDER BY event_id LIMIT n`). Indexed by due time,
-- PostgreSQL fetched every due event and sorted them all to take the first hundred: with
-- 10,000 waiting that was a 40 ms sort spilling to disk per batch, so a consumer that fell
-- behind slowed down further. Walked in event order, a batch reads about what it takes.
CREATE INDEX inbox_pending ON inbox (event_id) WHERE status = 'pending';
DROP INDEX inbox_due;
