-- Lines of one reservation belong to different sellers' orders and change on their own:
-- one order may be confirmed (committed) while another is declined (released).
ALTER TABLE reservation_lines
    ADD COLUMN state text NOT NULL DEFAULT 'reserved' CHECK (state IN ('reserved', 'committed', 'released', 'returned'));
