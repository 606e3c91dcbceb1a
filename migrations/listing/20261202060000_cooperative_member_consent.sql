-- A household belongs to a cooperative only with its consent: a manager adding it is an
-- invitation ('invited') that the household (or its assigned helper, with the household
-- present) accepts ('active') or declines ('declined'), or that an operator approves.
-- Only active members give the manager rights over a household. Rows from before this
-- migration stay active; a row inserted without a status is an invitation.
ALTER TABLE cooperative_members
    ADD COLUMN status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('invited', 'active', 'declined'));
ALTER TABLE cooperative_members ALTER COLUMN status SET DEFAULT 'invited';
