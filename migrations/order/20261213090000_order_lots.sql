-- Which lots filled each order (from `stock.sold`, the listing service's word): what a
-- recall of a lot reaches, without reading the listing service's tables.
CREATE TABLE order_lots (
    order_id      uuid    NOT NULL REFERENCES orders (id),
    listing_id    uuid    NOT NULL,
    lot_id        uuid    NOT NULL,
    lot_code      text    NOT NULL,
    household_id  uuid,
    quantity      numeric(15, 3) NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, lot_id)
);
CREATE INDEX order_lots_lot ON order_lots (lot_id, order_id);
