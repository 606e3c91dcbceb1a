-- Who holds a reservation until its order is confirmed (a cash-on-delivery buyer), so that one
-- buyer cannot hold a listing's whole stock for days.
ALTER TABLE reservations ADD COLUMN holder_id uuid;
CREATE INDEX reservations_active_by_holder ON reservations (holder_id) WHERE status = 'active' AND holder_id IS NOT NULL;
