-- A seller's new name is on its own listings' pages only: tell the processes to forget those
-- pages, not every page (`*`). Before, any household renaming itself, which anyone who signs
-- up can do in a loop, made every process forget every page and read the whole catalog
-- again. A seller with many listings sends one notification per listing; PostgreSQL folds
-- notifications repeated within one transaction.
CREATE FUNCTION listing_view_household_renamed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    listing uuid;
BEGIN
    FOR listing IN SELECT id FROM listings WHERE household_id = NEW.account_id LOOP
        PERFORM pg_notify('listing_view', listing::text);
    END LOOP;
    RETURN NULL;
END $$;

CREATE FUNCTION listing_view_cooperative_renamed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    listing uuid;
BEGIN
    FOR listing IN SELECT id FROM listings WHERE cooperative_id = NEW.id LOOP
        PERFORM pg_notify('listing_view', listing::text);
    END LOOP;
    RETURN NULL;
END $$;

DROP TRIGGER households_view ON households;
CREATE TRIGGER households_view AFTER UPDATE OF name ON households
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name) EXECUTE FUNCTION listing_view_household_renamed();
DROP TRIGGER cooperatives_view ON cooperatives;
CREATE TRIGGER cooperatives_view AFTER UPDATE OF name ON cooperatives
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name) EXECUTE FUNCTION listing_view_cooperative_renamed();
