-- The listing service keeps listing pages in memory (catalog::cache). These triggers tell
-- every listing process which page to forget: a notification on `listing_view` carrying the
-- listing's id, or `*` when a seller's name changed (every page of that seller shows it).
-- PostgreSQL delivers a notification only once its transaction is committed and visible, so
-- a page read after the notification arrives is read as the change left it. Writes with
-- triggers off (session_replication_role = replica: pg_restore --disable-triggers, logical
-- replication) are not seen; the pages' time to live bounds what they leave.
CREATE FUNCTION listing_view_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('listing_view', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END $$;

-- A row moved to another listing changes both pages.
CREATE FUNCTION listing_view_part_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('listing_view', COALESCE(NEW.listing_id, OLD.listing_id)::text);
    IF NEW.listing_id IS DISTINCT FROM OLD.listing_id AND TG_OP = 'UPDATE' THEN
        PERFORM pg_notify('listing_view', OLD.listing_id::text);
    END IF;
    RETURN NULL;
END $$;

-- Every page: a seller's name changed, or a table was emptied.
CREATE FUNCTION listing_view_all_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('listing_view', '*');
    RETURN NULL;
END $$;

CREATE TRIGGER listings_view AFTER INSERT OR UPDATE OR DELETE ON listings
    FOR EACH ROW EXECUTE FUNCTION listing_view_changed();
CREATE TRIGGER listing_certifications_view AFTER INSERT OR UPDATE OR DELETE ON listing_certifications
    FOR EACH ROW EXECUTE FUNCTION listing_view_part_changed();
-- Stock rows change with every reservation; only a change of the levels shows on the page.
CREATE TRIGGER stock_view_levels AFTER UPDATE ON stock
    FOR EACH ROW WHEN (OLD.on_hand IS DISTINCT FROM NEW.on_hand OR OLD.reserved IS DISTINCT FROM NEW.reserved)
    EXECUTE FUNCTION listing_view_part_changed();
CREATE TRIGGER stock_view_rows AFTER INSERT OR DELETE ON stock
    FOR EACH ROW EXECUTE FUNCTION listing_view_part_changed();
CREATE TRIGGER households_view AFTER UPDATE OF name ON households
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name) EXECUTE FUNCTION listing_view_all_changed();
CREATE TRIGGER cooperatives_view AFTER UPDATE OF name ON cooperatives
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name) EXECUTE FUNCTION listing_view_all_changed();
-- TRUNCATE fires no row triggers.
CREATE TRIGGER listings_view_truncated AFTER TRUNCATE ON listings
    FOR EACH STATEMENT EXECUTE FUNCTION listing_view_all_changed();
CREATE TRIGGER listing_certifications_view_truncated AFTER TRUNCATE ON listing_certifications
    FOR EACH STATEMENT EXECUTE FUNCTION listing_view_all_changed();
CREATE TRIGGER stock_view_truncated AFTER TRUNCATE ON stock
    FOR EACH STATEMENT EXECUTE FUNCTION listing_view_all_changed();
CREATE TRIGGER households_view_truncated AFTER TRUNCATE ON households
    FOR EACH STATEMENT EXECUTE FUNCTION listing_view_all_changed();
CREATE TRIGGER cooperatives_view_truncated AFTER TRUNCATE ON cooperatives
    FOR EACH STATEMENT EXECUTE FUNCTION listing_view_all_changed();
