-- The hold-share check of a cash-on-delivery reservation sums what its holder already holds
-- of each listing. It found those lines through the listing's open lines
-- (`reservation_lines_reserved`), so on a listing many buyers hold at once (every
-- cash-on-delivery order stays open until its seller confirms) each reservation read every
-- other buyer's lines, with the listing's stock row locked: the more a listing was ordered,
-- the longer each of its reservations kept the others waiting. A line now carries its
-- holder, and the check reads only the holder's open lines of the listing, however many
-- other buyers have.
--
-- Lines closed before this migration keep no holder: the check reads open lines only.
--
-- The index on reservations goes first, so that the two tables are locked in the order a
-- reservation locks them (its row, then its lines): taking the lines' lock first (the ALTER
-- TABLE) and the reservations' last could deadlock with a listing process still reserving.
-- (Not `LOCK TABLE`: the compile-time SQL check applies migrations outside a transaction.)
--
-- During a rolling upgrade, a listing process still on the code before this migration
-- writes cash-on-delivery lines without their holder: until those lines close they are not
-- counted, so a buyer may go over the share for as long as old and new processes run side
-- by side, and the old processes' check, without its index, reads the whole table.
-- Read by the hold-share check only, like `reservation_lines_reserved` below.
DROP INDEX reservations_active_by_holder;
ALTER TABLE reservation_lines ADD COLUMN holder_id uuid;
UPDATE reservation_lines rl SET holder_id = r.holder_id
  FROM reservations r
 WHERE r.id = rl.reservation_id AND r.holder_id IS NOT NULL AND rl.state = 'reserved';
CREATE INDEX reservation_lines_held ON reservation_lines (holder_id, listing_id)
    WHERE state = 'reserved' AND holder_id IS NOT NULL;
-- No request reads it any more (the stock consistency check of the tests and the harness
-- reads every open line whatever the index).
DROP INDEX reservation_lines_reserved;
