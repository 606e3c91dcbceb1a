-- The listing service: identity, sellers, catalog, inventory and reservations.

-- Identity ---------------------------------------------------------------------------------
CREATE TABLE accounts (
    id            uuid PRIMARY KEY,
    phone         text        NOT NULL UNIQUE,          -- E.164
    password_hash text,                                 -- argon2id PHC string; NULL until activated
    role          text        NOT NULL CHECK (role IN ('household', 'cooperative_manager', 'buyer', 'helper', 'operator')),
    display_name  text        NOT NULL,
    status        text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'pending_activation', 'disabled')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    uuid        REFERENCES accounts (id)
);

CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    account_id  uuid        NOT NULL REFERENCES accounts (id),
    token_hash  bytea       NOT NULL UNIQUE,            -- SHA-256 of the token; the token itself is never stored
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One-time codes a household registered by a helper uses to set its own password.
CREATE TABLE activation_codes (
    account_id  uuid        PRIMARY KEY REFERENCES accounts (id),
    code_hash   bytea       NOT NULL,
    expires_at  timestamptz NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0
);

-- Sellers ----------------------------------------------------------------------------------
CREATE TABLE households (
    account_id     uuid        PRIMARY KEY REFERENCES accounts (id),
    name           text        NOT NULL,
    province_code  text        NOT NULL,
    commune_code   text        NOT NULL,
    admin_version  text        NOT NULL DEFAULT '2025',
    street         text        NOT NULL DEFAULT '',
    lat            double precision,
    lon            double precision,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cooperatives (
    id             uuid PRIMARY KEY,
    name           text        NOT NULL,
    tax_code       text        UNIQUE,
    province_code  text        NOT NULL,
    commune_code   text        NOT NULL,
    admin_version  text        NOT NULL DEFAULT '2025',
    street         text        NOT NULL DEFAULT '',
    manager_id     uuid        NOT NULL REFERENCES accounts (id),
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cooperative_members (
    cooperative_id uuid        NOT NULL REFERENCES cooperatives (id),
    household_id   uuid        NOT NULL REFERENCES households (account_id),
    joined_at      timestamptz NOT NULL DEFAULT now(),
    left_at        timestamptz,
    PRIMARY KEY (cooperative_id, household_id)
);

CREATE TABLE helper_assignments (
    helper_id      uuid        NOT NULL REFERENCES accounts (id),
    household_id   uuid        NOT NULL REFERENCES households (account_id),
    assigned_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (helper_id, household_id)
);

-- Every write: who did it, and for whom.
CREATE TABLE audit_log (
    id            uuid PRIMARY KEY,
    actor_id      uuid        NOT NULL,
    actor_role    text        NOT NULL,
    on_behalf_of  uuid,
    action        text        NOT NULL,
    subject_type  text        NOT NULL,
    subject_id    text        NOT NULL,
    details       jsonb       NOT NULL DEFAULT '{}',
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_on_behalf_of ON audit_log (on_behalf_of, at) WHERE on_behalf_of IS NOT NULL;
CREATE INDEX audit_log_actor ON audit_log (actor_id, at);

-- Catalog ----------------------------------------------------------------------------------
CREATE TABLE listings (
    id                  uuid PRIMARY KEY,
    household_id        uuid REFERENCES households (account_id),
    cooperative_id      uuid REFERENCES cooperatives (id),
    title               text        NOT NULL,
    description         text        NOT NULL DEFAULT '',
    category_code       text        NOT NULL,
    unit_code           text        NOT NULL,
    price_vnd           bigint      NOT NULL CHECK (price_vnd > 0),
    min_order           numeric(15, 3) NOT NULL CHECK (min_order > 0),
    step                numeric(15, 3) NOT NULL CHECK (step > 0),
    photos              text[]      NOT NULL DEFAULT '{}',
    origin_province     text        NOT NULL,
    origin_commune      text        NOT NULL,
    admin_version       text        NOT NULL DEFAULT '2025',
    lat                 double precision,
    lon                 double precision,
    ocop_stars          smallint    CHECK (ocop_stars BETWEEN 3 AND 5),
    status              text        NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'active', 'paused', 'hidden')),
    hidden_reason       text,
    low_stock_threshold numeric(15, 3),
    version             bigint      NOT NULL DEFAULT 1,
    created_by          uuid        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((household_id IS NULL) <> (cooperative_id IS NULL))
);
CREATE INDEX listings_household ON listings (household_id);
CREATE INDEX listings_cooperative ON listings (cooperative_id);
CREATE INDEX listings_status ON listings (status, id);

CREATE TABLE listing_certifications (
    listing_id  uuid    NOT NULL REFERENCES listings (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    kind        text    NOT NULL,
    number      text    NOT NULL,
    issuer      text    NOT NULL,
    valid_from  date    NOT NULL,
    valid_until date    NOT NULL CHECK (valid_until >= valid_from),
    PRIMARY KEY (listing_id, position)
);

-- Inventory --------------------------------------------------------------------------------
-- One row per listing: the running totals of its movements, locked to serialise changes.
CREATE TABLE stock (
    listing_id  uuid PRIMARY KEY REFERENCES listings (id),
    on_hand     numeric(15, 3) NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved    numeric(15, 3) NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    CHECK (reserved <= on_hand)
);

CREATE TABLE lots (
    id            uuid PRIMARY KEY,
    listing_id    uuid        NOT NULL REFERENCES listings (id),
    lot_code      text        NOT NULL CHECK (lot_code ~ '^[!-~]{1,20}$'),   -- GS1 AI 10: printable ASCII, at most 20
    harvest_date  date        NOT NULL,
    household_id  uuid        REFERENCES households (account_id),           -- who grew it
    on_hand       numeric(15, 3) NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (listing_id, lot_code)
);

CREATE TABLE reservations (
    id          uuid PRIMARY KEY,                 -- chosen by the caller: the idempotency key
    status      text        NOT NULL CHECK (status IN ('active', 'committed', 'released', 'expired')),
    request     jsonb       NOT NULL,             -- the lines asked for, to detect a reused id
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz
);
CREATE INDEX reservations_expiring ON reservations (expires_at) WHERE status = 'active';

CREATE TABLE reservation_lines (
    reservation_id uuid    NOT NULL REFERENCES reservations (id),
    line_no        integer NOT NULL,
    listing_id     uuid    NOT NULL REFERENCES listings (id),
    quantity       numeric(15, 3) NOT NULL CHECK (quantity > 0),
    unit_price     bigint  NOT NULL,
    PRIMARY KEY (reservation_id, line_no)
);

-- Which lots filled which reserved line, once committed.
CREATE TABLE allocations (
    reservation_id uuid    NOT NULL,
    line_no        integer NOT NULL,
    lot_id         uuid    NOT NULL REFERENCES lots (id),
    quantity       numeric(15, 3) NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, line_no, lot_id),
    FOREIGN KEY (reservation_id, line_no) REFERENCES reservation_lines (reservation_id, line_no)
);

-- Every change of stock. on_hand = sum(on_hand_delta), reserved = sum(reserved_delta).
CREATE TABLE stock_movements (
    id              uuid PRIMARY KEY,
    listing_id      uuid        NOT NULL REFERENCES listings (id),
    lot_id          uuid        REFERENCES lots (id),
    kind            text        NOT NULL CHECK (kind IN ('intake', 'adjustment', 'reservation', 'sale', 'release', 'return')),
    on_hand_delta   numeric(15, 3) NOT NULL DEFAULT 0,
    reserved_delta  numeric(15, 3) NOT NULL DEFAULT 0,
    reason          text,
    reservation_id  uuid,
    actor_id        uuid,
    on_behalf_of    uuid,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stock_movements_listing ON stock_movements (listing_id, at);
