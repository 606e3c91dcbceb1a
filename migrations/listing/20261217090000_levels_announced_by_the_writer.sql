-- A reservation changes stock levels hundreds of times a second. Each NOTIFY makes its
-- transaction take a turn on one cluster-wide lock that PostgreSQL holds from before the
-- commit until the commit is flushed, so notifying commits go one at a time (BENCHMARKS.md,
-- 2026-12-05, measures what it cost a checkout). A writer that announces the change itself right after its commit
-- (stock::levels::Announce::ByCaller: its own pages forgotten at once, the other listing
-- processes told in batches) sets `nongsan.levels_announced` for its transaction, and the
-- trigger stays quiet for it. Every other writer, an operator's SQL included, is unchanged.
DROP TRIGGER stock_view_levels ON stock;
CREATE TRIGGER stock_view_levels AFTER UPDATE ON stock
    FOR EACH ROW WHEN ((OLD.on_hand IS DISTINCT FROM NEW.on_hand OR OLD.reserved IS DISTINCT FROM NEW.reserved)
                       AND current_setting('nongsan.levels_announced', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION listing_view_part_changed();
