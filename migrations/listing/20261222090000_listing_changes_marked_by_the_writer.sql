-- A listing's change now marks it for the search indexer in the change's own transaction
-- (`catalog::store::emit_changed`); the listing service no longer follows its own
-- `listing.changed` events to mark it. An event written before this migration and not yet
-- handled by the listing service's inbox (unpublished, on its way, or waiting for a retry)
-- would now be skipped, and its change never reach the index: its listing is marked here.
-- One pass over the outbox's `listing.changed` rows (those the retention keeps), once.
INSERT INTO search_dirty (listing_id)
SELECT DISTINCT l.id
FROM outbox o
JOIN listings l ON l.id::text = o.aggregate_id
WHERE o.event_type = 'listing.changed'
  AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.event_id = o.id AND i.status = 'done')
ON CONFLICT (listing_id) DO NOTHING;
