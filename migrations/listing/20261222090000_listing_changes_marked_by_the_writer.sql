-- A listing's change now marks it for the search indexer in the change's own transaction
-- (`catalog::store::emit_changed`); the listing service no longer follows its own
-- `listing.changed` events to mark it. An event written before this migration and not yet
-- handled by the listing service's inbox (unpublished, on its way, waiting in the inbox for
-- a retry, or dead-lettered) would now be skipped, and its change never reach the index: its
-- listing is marked here, found from the outbox (those the retention keeps) and from the
-- inbox (in case the outbox row is gone). One pass over those rows, once.
INSERT INTO search_dirty (listing_id)
SELECT l.id
FROM listings l
WHERE l.id::text IN (
    SELECT o.aggregate_id FROM outbox o
    WHERE o.event_type = 'listing.changed'
      AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.event_id = o.id AND i.status = 'done')
    UNION
    SELECT i.event->>'aggregate_id' FROM inbox i
    WHERE i.event_type = 'listing.changed' AND i.status <> 'done')
ON CONFLICT (listing_id) DO NOTHING;

-- Their inbox rows are done: the marks stand for them. Left pending, with no handler, each
-- would be retried and then dead-lettered, and while one waited, every event of the inbox
-- would go through its worker instead of being handled on receipt.
UPDATE inbox SET status = 'done', handled_at = now(), last_error = NULL
WHERE event_type = 'listing.changed' AND status <> 'done';
