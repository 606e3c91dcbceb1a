//! Stock levels and movements: every change of on-hand or reserved stock is a movement, applied
//! under the listing's stock row lock, with a `stock.changed` event.

use nongsan_shared::contracts::reservations::ReservedLine;
use nongsan_shared::{
    AccountId, ListingId, Quantity, ReservationId, auth::Actor, events, invalid::Invalid,
};
use sqlx::PgConnection;

/// A listing's stock levels: the same shape in its views and in `stock.changed`.
pub use nongsan_shared::contracts::events::StockLevels;
use nongsan_shared::contracts::events::{EventType, StockChanged};

use crate::error::{ListingError, Result};

/// A lot code: GS1 AI 10, printable ASCII without spaces, 1 to 20 characters.
pub fn parse_lot_code(code: &str) -> std::result::Result<String, Invalid> {
    let ok =
        !code.is_empty() && code.len() <= 20 && code.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(code.to_owned())
    } else {
        Err(Invalid::new(
            "invalid_lot_code",
            "must be 1 to 20 printable ASCII characters, without diacritics or spaces",
            "phải gồm 1 đến 20 ký tự ASCII, không dấu, không khoảng trắng",
        ))
    }
}

/// One stock movement to apply.
#[derive(Debug, Clone)]
pub struct Movement<'a> {
    /// The listing.
    pub listing: ListingId,
    /// The lot, for on-hand changes.
    pub lot: Option<uuid::Uuid>,
    /// intake, adjustment, reservation, sale, release or return.
    pub kind: &'static str,
    /// Change of on-hand.
    pub on_hand: Quantity,
    /// Change of reserved.
    pub reserved: Quantity,
    /// Why (adjustments).
    pub reason: Option<&'a str>,
    /// The reservation it belongs to.
    pub reservation: Option<ReservationId>,
    /// Who.
    pub actor: Option<&'a Actor>,
}

/// Locks a listing's stock row and returns (on-hand, reserved, low-stock threshold).
pub async fn lock_stock(
    conn: &mut PgConnection,
    listing: ListingId,
) -> Result<(Quantity, Quantity, Option<Quantity>)> {
    sqlx::query!(
        r#"SELECT s.on_hand AS "on_hand: Quantity", s.reserved AS "reserved: Quantity", l.low_stock_threshold AS "threshold: Quantity"
           FROM stock s JOIN listings l ON l.id = s.listing_id WHERE s.listing_id = $1 FOR UPDATE OF s"#,
        listing as _,
    )
    .fetch_optional(conn)
    .await?
    .map(|r| (r.on_hand, r.reserved, r.threshold))
    .ok_or(ListingError::NotFound("listing"))
}

/// Locks the stock rows of `listings` in listing-id order, the order a reservation takes
/// them in, so that two writers of several listings cannot deadlock. A writer that then
/// moves them in another order (an import's rows in file order) finds its locks held.
pub async fn lock_in_order(conn: &mut PgConnection, listings: &[ListingId]) -> Result<()> {
    let mut ids: Vec<uuid::Uuid> = listings.iter().map(|l| l.0).collect();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query_scalar!(
        "SELECT listing_id FROM stock WHERE listing_id = ANY((SELECT $1::uuid[])::uuid[]) ORDER BY listing_id FOR UPDATE",
        &ids,
    )
    .fetch_all(conn)
    .await?;
    Ok(())
}

/// A listing's stock row as its caller locked it: the levels before the movements.
#[derive(Debug, Clone, Copy)]
pub struct Locked {
    /// The listing.
    pub listing: ListingId,
    /// On-hand stock.
    pub on_hand: Quantity,
    /// Reserved stock.
    pub reserved: Quantity,
    /// The seller's low-stock threshold.
    pub threshold: Option<Quantity>,
}

impl Locked {
    fn available(&self) -> Quantity {
        StockLevels::available_of(self.on_hand, self.reserved)
    }
}

/// Who tells the rest of the system that stock levels changed: the relay (their
/// `stock.changed`) and every listing process (their kept pages, `catalog::cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// PostgreSQL, when the transaction commits: the statement notifies the relay, and the
    /// stock table's trigger the listing pages. Every writer but the hottest.
    OnCommit,
    /// The caller, right after its commit: `ViewCache::announce` for each listing and
    /// `events::committed` for the relay. The transaction takes no turn on PostgreSQL's
    /// notification lock (see `events::committed`), unless a listing's availability flips:
    /// search's mark of it still notifies the indexer. For the rest of the transaction no
    /// change of stock levels notifies the listing pages: the caller announces every listing
    /// whose levels its transaction changed.
    ByCaller,
}

/// Applies movements to one listing whose stock row the caller has locked with
/// [`lock_stock`]; fails with `insufficient_stock` (and changes nothing) when on-hand or
/// reserved would leave their bounds. Emits one `stock.changed`.
pub async fn apply(
    conn: &mut PgConnection,
    listing: ListingId,
    moves: &[Movement<'_>],
) -> Result<StockLevels> {
    let (on_hand, reserved, threshold) = lock_stock(conn, listing).await?;
    let locked = Locked {
        listing,
        on_hand,
        reserved,
        threshold,
    };
    apply_locked(conn, &[locked], moves, Announce::OnCommit, None)
        .await?
        .0
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no levels for listing {listing}").into())
}

/// A new reservation's lines, written by [`apply_locked`] in the statement of its movements.
#[derive(Debug, Clone, Copy)]
pub struct NewLines<'a> {
    /// The reservation.
    pub reservation: ReservationId,
    /// Its lines.
    pub lines: &'a [&'a ReservedLine],
    /// Who holds them until a seller confirms (cash on delivery); none for a reservation paid
    /// online, which holds for minutes.
    pub holder: Option<AccountId>,
    /// The share of a listing's on-hand stock, in percent, that one holder may hold in such
    /// lines.
    pub share_percent: i32,
}

/// Applies movements to the listings of `locked` (each listing once), whose stock rows the
/// caller holds locked as read there, whatever their number: one statement for the movements,
/// the levels and their `stock.changed` events (one per listing), and a new reservation's
/// lines (`new_lines`); and one marking for search those whose availability flipped. Answers
/// the new levels in the order of `locked`, and the listings of which the new lines' holder
/// would now hold more than its share (the caller refuses the reservation, which rolls it all
/// back). With new lines, the movements must leave on-hand stock as it is (a reservation's
/// do): the share is checked against on-hand as it was before the statement. Fails with
/// `insufficient_stock` for the first listing of `locked` whose on-hand or reserved would
/// leave their bounds, before writing anything. `announce` says who tells of the change.
pub async fn apply_locked(
    conn: &mut PgConnection,
    locked: &[Locked],
    moves: &[Movement<'_>],
    announce: Announce,
    new_lines: Option<NewLines<'_>>,
) -> Result<(Vec<StockLevels>, Vec<ListingId>)> {
    debug_assert!(
        new_lines.is_none() || moves.iter().all(|m| m.on_hand == Quantity::ZERO),
        "a reservation's share check reads on-hand stock as it was before the statement"
    );
    debug_assert!(
        locked
            .iter()
            .enumerate()
            .all(|(i, l)| locked[..i].iter().all(|o| o.listing != l.listing)),
        "each listing is locked once"
    );
    let mut after: Vec<(Quantity, Quantity)> =
        locked.iter().map(|l| (l.on_hand, l.reserved)).collect();
    let index: std::collections::HashMap<ListingId, usize> = locked
        .iter()
        .enumerate()
        .map(|(i, l)| (l.listing, i))
        .collect();
    for m in moves {
        let at = *index
            .get(&m.listing)
            .ok_or_else(|| anyhow::anyhow!("listing {} moved without its lock", m.listing))?;
        let (on_hand, reserved) = &mut after[at];
        let ceiling = || {
            ListingError::field(
                "quantity",
                Invalid::new(
                    "too_large",
                    "would take this listing's stock above 1,000,000,000",
                    "sẽ làm tồn kho của tin này vượt quá 1.000.000.000",
                ),
            )
        };
        *on_hand = on_hand.checked_add(m.on_hand).ok_or_else(ceiling)?;
        *reserved = reserved.checked_add(m.reserved).ok_or_else(ceiling)?;
    }
    for (l, &(on_hand, reserved)) in locked.iter().zip(&after) {
        if on_hand < Quantity::ZERO || reserved < Quantity::ZERO || reserved > on_hand {
            return Err(ListingError::InsufficientStock {
                listing: l.listing,
                available: l.available(),
            });
        }
    }
    // The lots' own stock, one statement for every lot moved (an import moves thousands):
    // each lot's movements added up, and none may leave it below zero.
    let mut per_lot: Vec<(uuid::Uuid, ListingId, Quantity)> = Vec::new();
    let mut at: std::collections::HashMap<uuid::Uuid, usize> = std::collections::HashMap::new();
    for m in moves {
        if let Some(lot) = m.lot {
            match at.get(&lot) {
                Some(&i) => {
                    let q = &mut per_lot[i].2;
                    *q = q.checked_add(m.on_hand).ok_or_else(|| {
                        anyhow::anyhow!("a lot's movements add up beyond any stock")
                    })?;
                }
                None => {
                    at.insert(lot, per_lot.len());
                    per_lot.push((lot, m.listing, m.on_hand));
                }
            }
        }
    }
    if !per_lot.is_empty() {
        let ids: Vec<uuid::Uuid> = per_lot.iter().map(|(id, _, _)| *id).collect();
        let short = sqlx::query_scalar!(
            r#"WITH v AS (SELECT * FROM UNNEST($1::uuid[], $2::numeric[]) AS v (id, delta)),
                 moved AS (UPDATE lots l SET on_hand = l.on_hand + v.delta FROM v
                           WHERE l.id = v.id AND l.on_hand + v.delta >= 0 RETURNING l.id)
               SELECT v.id AS "id!" FROM v WHERE v.id NOT IN (SELECT id FROM moved) LIMIT 1"#,
            &ids,
            &per_lot
                .iter()
                .map(|(_, _, q)| q.as_decimal())
                .collect::<Vec<_>>(),
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(lot) = short {
            let listing = per_lot
                .iter()
                .find(|(id, _, _)| *id == lot)
                .map(|(_, l, _)| *l)
                .unwrap_or(locked[0].listing);
            let available = locked
                .iter()
                .find(|l| l.listing == listing)
                .map_or(Quantity::ZERO, Locked::available);
            return Err(ListingError::InsufficientStock { listing, available });
        }
    }
    let levels: Vec<StockLevels> = locked
        .iter()
        .zip(&after)
        .map(|(l, &(on_hand, reserved))| StockLevels::new(on_hand, reserved, l.threshold))
        .collect();
    let events: Vec<_> = locked
        .iter()
        .zip(&levels)
        .map(|(l, &stock)| {
            (
                EventType::StockChanged,
                l.listing.to_string(),
                1,
                StockChanged {
                    listing_id: l.listing,
                    stock,
                },
            )
        })
        .collect();
    let events = events::OutboxRows::of(&events)?;
    // The movements, the new levels and their `stock.changed` (with the relay's wake-up, when
    // PostgreSQL announces), and a new reservation's lines: one statement, which each
    // connection plans a few times and then keeps a generic plan for, not planned at every
    // call (see the reservation's lock statement for why `ANY((SELECT $1)::uuid[])`).
    // `nongsan.levels_announced`, set for the rest of the transaction before any row changes,
    // is what the stock trigger reads (migration `levels_announced_by_the_writer`).
    let column =
        |f: fn(&Movement<'_>) -> Option<uuid::Uuid>| moves.iter().map(f).collect::<Vec<_>>();
    let (lots, reservations) = (column(|m| m.lot), column(|m| m.reservation.map(|r| r.0)));
    let actors = column(|m| m.actor.map(|a| a.account_id.0));
    // The household a movement was made for: only on that household's own listing, where
    // access checked the `X-On-Behalf-Of` it came from. On a cooperative's listing a manager
    // may name a household (pooling its lot), but nothing checks whom; it is not recorded.
    let named: Vec<uuid::Uuid> = moves
        .iter()
        .filter(|m| m.actor.is_some_and(|a| a.on_behalf_of.is_some()))
        .map(|m| m.listing.0)
        .collect();
    let households = if named.is_empty() {
        Vec::new()
    } else {
        sqlx::query!(
            "SELECT id, household_id FROM listings WHERE id = ANY($1)",
            &named
        )
        .fetch_all(&mut *conn)
        .await?
    };
    let on_behalf_of: Vec<Option<uuid::Uuid>> = moves
        .iter()
        .map(|m| {
            let named = m.actor.and_then(|a| a.on_behalf_of)?.0;
            households
                .iter()
                .any(|l| l.id == m.listing.0 && l.household_id == Some(named))
                .then_some(named)
        })
        .collect();
    let reasons: Vec<Option<String>> = moves.iter().map(|m| m.reason.map(str::to_owned)).collect();
    let listings: Vec<uuid::Uuid> = locked.iter().map(|l| l.listing.0).collect();
    let lines = new_lines.map_or(&[][..], |n| n.lines);
    let holder = new_lines.and_then(|n| n.holder);
    // A reservation's lines, and with a holder that holder's share of each listing, read from
    // the holder's own open lines of the listing (each line carries its holder,
    // `reservation_lines_held`), not from all of the listing's, which on a listing many
    // buyers hold are many. The stock rows are locked: another reservation of the same holder
    // for these listings waits for this one and then counts it; this statement's snapshot,
    // taken after the locks, counts every one committed before. The lines it inserts are not
    // in that snapshot, so they are added from its parameters; nor is the levels' update, but
    // a reservation does not change on-hand stock. An open line is one of an active
    // reservation (`store::refresh_status` derives the status from the lines, in the
    // transaction that changes them), so the reservations themselves are not read.
    let over = sqlx::query!(
        r#"WITH moved AS (
             INSERT INTO stock_movements (id, listing_id, lot_id, kind, on_hand_delta, reserved_delta, reason, reservation_id, actor_id, on_behalf_of)
             SELECT * FROM UNNEST($4::uuid[], $5::uuid[], $6::uuid[], $7::text[], $8::numeric[], $9::numeric[], $10::text[], $11::uuid[], $12::uuid[], $13::uuid[])),
         levels AS (
             UPDATE stock s SET (on_hand, reserved) = (
                 SELECT v.on_hand, v.reserved FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[]) AS v (listing_id, on_hand, reserved)
                 WHERE v.listing_id = s.listing_id)
             WHERE s.listing_id = ANY((SELECT $1::uuid[])::uuid[])
               AND set_config('nongsan.levels_announced', CASE WHEN $19 THEN 'on' ELSE 'off' END, true) IS NOT NULL),
         changed AS (
             INSERT INTO outbox (id, event_type, aggregate_id, version, payload)
             SELECT * FROM UNNEST($14::uuid[], $15::text[], $16::text[], $17::int8[], $18::jsonb[])),
         mine AS (
             SELECT * FROM UNNEST($21::int4[], $22::uuid[], $23::numeric[], $24::int8[]) AS m (line_no, listing_id, quantity, unit_price)),
         lines AS (
             INSERT INTO reservation_lines (reservation_id, line_no, listing_id, quantity, unit_price, holder_id)
             SELECT $20, line_no, listing_id, quantity, unit_price, $25 FROM mine)
         SELECT (SELECT count(*) FROM (SELECT pg_notify('nongsan_outbox_' || current_schema(), '') WHERE NOT $19) n) AS "notified!",
             ARRAY(SELECT s.listing_id FROM stock s
                   WHERE $25::uuid IS NOT NULL AND s.listing_id = ANY((SELECT $22::uuid[])::uuid[])
                     AND ((SELECT COALESCE(SUM(rl.quantity), 0) FROM reservation_lines rl
                           WHERE rl.holder_id = $25 AND rl.listing_id = s.listing_id AND rl.state = 'reserved')
                          + (SELECT COALESCE(SUM(m.quantity), 0) FROM mine m WHERE m.listing_id = s.listing_id)) * 100
                         > s.on_hand * $26::int4) AS "over!"
"#,
        &listings,
        &after.iter().map(|a| a.0.as_decimal()).collect::<Vec<_>>(),
        &after.iter().map(|a| a.1.as_decimal()).collect::<Vec<_>>(),
        &moves.iter().map(|_| uuid::Uuid::now_v7()).collect::<Vec<_>>(),
        &moves.iter().map(|m| m.listing.0).collect::<Vec<_>>(),
        &lots as &[Option<uuid::Uuid>],
        &moves.iter().map(|m| m.kind.to_owned()).collect::<Vec<_>>(),
        &moves.iter().map(|m| m.on_hand.as_decimal()).collect::<Vec<_>>(),
        &moves.iter().map(|m| m.reserved.as_decimal()).collect::<Vec<_>>(),
        &reasons as &[Option<String>],
        &reservations as &[Option<uuid::Uuid>],
        &actors as &[Option<uuid::Uuid>],
        &on_behalf_of as &[Option<uuid::Uuid>],
        &events.ids,
        &events.types,
        &events.aggregates,
        &events.versions,
        &events.payloads,
        announce == Announce::ByCaller,
        new_lines.map(|n| n.reservation.0),
        &lines.iter().map(|l| l.line_no).collect::<Vec<_>>(),
        &lines.iter().map(|l| l.listing_id.0).collect::<Vec<_>>(),
        &lines.iter().map(|l| l.quantity.as_decimal()).collect::<Vec<_>>(),
        &lines.iter().map(|l| l.unit_price.get()).collect::<Vec<_>>(),
        holder.map(|h| h.0),
        new_lines.map_or(100, |n| n.share_percent),
    )
    .fetch_one(&mut *conn)
    .await?
    .over;
    // The index filters on whether anything is available and nothing else of the stock (a
    // hit's figures are read live): it is rewritten only when that flips, not on every
    // reservation of a busy listing.
    let flipped: Vec<ListingId> = locked
        .iter()
        .zip(&after)
        .filter(|&(l, &(on_hand, reserved))| (l.reserved < l.on_hand) != (reserved < on_hand))
        .map(|(l, _)| l.listing)
        .collect();
    if !flipped.is_empty() {
        crate::search::dirty::mark_dirty(conn, &flipped).await?;
    }
    Ok((levels, over.into_iter().map(ListingId).collect()))
}

/// Whether the stock table agrees with what it sums up, listing by listing: what operators,
/// the crash tests and the benchmark's reliability rounds check after a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consistency {
    /// Listings with a stock row.
    pub listings: i64,
    /// Listings whose on-hand or reserved stock differs from the sum of their movements.
    pub off_movements: i64,
    /// Listings whose reserved stock differs from what their active reservations hold.
    pub off_reservations: i64,
}

/// Checks every listing's stock against its movements and its active reservations (on a
/// connection that sees the `listing` schema by name). One statement over the whole table:
/// for checks after a fault, not for a request path.
pub async fn consistency(conn: &mut PgConnection) -> sqlx::Result<Consistency> {
    let (listings, off_movements, off_reservations): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE s.on_hand <> m.on_hand OR s.reserved <> m.reserved),
                count(*) FILTER (WHERE s.reserved <> COALESCE(r.held, 0))
         FROM listing.stock s
         JOIN (SELECT listing_id, sum(on_hand_delta) AS on_hand, sum(reserved_delta) AS reserved
               FROM listing.stock_movements GROUP BY listing_id) m USING (listing_id)
         LEFT JOIN (SELECT rl.listing_id, sum(rl.quantity) AS held FROM listing.reservation_lines rl
                    JOIN listing.reservations r ON r.id = rl.reservation_id
                    WHERE r.status = 'active' AND rl.state = 'reserved' GROUP BY rl.listing_id) r USING (listing_id)",
    )
    .fetch_one(conn)
    .await?;
    Ok(Consistency {
        listings,
        off_movements,
        off_reservations,
    })
}
