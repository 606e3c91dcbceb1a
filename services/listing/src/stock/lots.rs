//! Lots (harvests taken into stock), adjustments, and the stock and movements of a listing.

use std::collections::HashMap;

use axum::{
    Json as AxumJson,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, NaiveDate, Utc};
use nongsan_shared::{
    AccountId, CooperativeId, ListingId, Quantity, ReservationId,
    auth::Actor,
    http::{Json, Path, Query},
    idempotency_key::IdempotencyKey,
    invalid::Invalid,
    paging::{self, PageParams},
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{
    access::{Owner, household_of, is_member, may_manage, owner_of},
    app::AppState,
    audit::{audit, audit_many},
    error::{ListingError, Problems, Result},
    stock::{
        levels::{
            Announce, Locked, Movement, StockLevels, apply, apply_locked, lock_stock,
            parse_lot_code,
        },
        requests::{self, Claimed},
    },
};

/// The earliest harvest date a lot may have: its link writes the year with two digits.
const EARLIEST_HARVEST: NaiveDate = NaiveDate::from_ymd_opt(2000, 1, 1).expect("a date");

/// A lot taken into stock.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LotIntake {
    /// Lot code (GS1 AI 10): at most 20 ASCII characters.
    pub lot_code: String,
    /// Harvest date: from 2000, and not in the future.
    pub harvest_date: NaiveDate,
    /// Quantity in the listing's unit, above 0.
    pub quantity: Quantity,
    /// For a cooperative listing: the member household that grew it.
    pub household_id: Option<AccountId>,
}

/// A lot.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct LotView {
    /// Lot id.
    pub id: uuid::Uuid,
    /// Lot code.
    pub lot_code: String,
    /// Harvest date.
    pub harvest_date: NaiveDate,
    /// The household that grew it.
    pub household_id: Option<AccountId>,
    /// On hand.
    pub on_hand: Quantity,
}

/// The checks of a lot taken in ([`intake`], [`intake_many`]), each problem pushed at the
/// field `field` names; answers the household the lot is of. `members` remembers which
/// households are members of which cooperative, for an import's many rows.
async fn check_intake(
    conn: &mut PgConnection,
    owner: Owner,
    i: &LotIntake,
    field: &(dyn Fn(&str) -> String + Sync),
    p: &mut Problems,
    members: &mut HashMap<(CooperativeId, AccountId), bool>,
) -> Result<AccountId> {
    if let Err(e) = parse_lot_code(&i.lot_code) {
        p.push(field("lot_code"), e);
    }
    p.check(
        !i.quantity.is_positive(),
        &field("quantity"),
        "not_positive",
        "must be more than 0",
        "phải lớn hơn 0",
    );
    p.check(
        i.harvest_date > Utc::now().date_naive() + chrono::Days::new(1),
        &field("harvest_date"),
        "in_future",
        "must not be in the future",
        "không được ở tương lai",
    );
    // A lot's link carries the harvest date with two digits of its year (GS1 `7007`).
    p.check(
        i.harvest_date < EARLIEST_HARVEST,
        &field("harvest_date"),
        "out_of_range",
        "must be in 2000 or later",
        "phải từ năm 2000 trở đi",
    );
    Ok(match owner {
        Owner::Household(h) => {
            p.check(
                i.household_id.is_some_and(|x| x != h),
                &field("household_id"),
                "not_owner",
                "must be the listing's household",
                "phải là hộ sở hữu tin",
            );
            h
        }
        Owner::Cooperative(c) => match i.household_id {
            None => {
                p.check(
                    true,
                    &field("household_id"),
                    "required",
                    "is required for a cooperative listing",
                    "là bắt buộc với tin của hợp tác xã",
                );
                AccountId(uuid::Uuid::nil())
            }
            Some(h) => {
                let member = match members.get(&(c, h)) {
                    Some(&m) => m,
                    None => {
                        let m = is_member(conn, c, h).await?;
                        members.insert((c, h), m);
                        m
                    }
                };
                p.check(
                    !member,
                    &field("household_id"),
                    "not_a_member",
                    "is not a member of the cooperative",
                    "không phải thành viên của hợp tác xã",
                );
                h
            }
        },
    })
}

fn lot_exists() -> Invalid {
    Invalid::new(
        "lot_exists",
        "exists on this listing with another harvest date or household",
        "đã có trong tin này với ngày thu hoạch hoặc hộ khác",
    )
}

/// Takes a lot into a listing's stock (adding to the lot when its code exists with the
/// same harvest date). The caller has checked the actor may.
pub async fn intake(
    conn: &mut PgConnection,
    actor: &Actor,
    listing: ListingId,
    owner: Owner,
    i: &LotIntake,
    row: Option<usize>,
) -> Result<LotView> {
    let field = |f: &str| match row {
        Some(n) => format!("rows[{n}].{f}"),
        None => f.to_owned(),
    };
    let mut p = Problems::default();
    let household = check_intake(conn, owner, i, &field, &mut p, &mut HashMap::new()).await?;
    p.finish()?;
    lock_stock(conn, listing).await?;
    let lot = sqlx::query_as!(
        LotView,
        r#"INSERT INTO lots (id, listing_id, lot_code, harvest_date, household_id) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (listing_id, lot_code) DO UPDATE SET lot_code = EXCLUDED.lot_code
         RETURNING id, lot_code, harvest_date, household_id AS "household_id: AccountId", on_hand AS "on_hand: Quantity""#,
        uuid::Uuid::now_v7(),
        listing as _,
        &i.lot_code,
        i.harvest_date,
        household as _,
    )
    .fetch_one(&mut *conn)
    .await?;
    if lot.harvest_date != i.harvest_date || lot.household_id != Some(household) {
        return Err(ListingError::field(field("lot_code"), lot_exists()));
    }
    apply(
        conn,
        listing,
        &[Movement {
            listing,
            lot: Some(lot.id),
            kind: "intake",
            on_hand: i.quantity,
            reserved: Quantity::ZERO,
            reason: None,
            reservation: None,
            actor: Some(actor),
        }],
    )
    .await?;
    audit(
        conn,
        actor,
        Some(household),
        "stock.intake",
        ("listing", listing.to_string()),
        &serde_json::json!({ "lot_code": i.lot_code, "quantity": i.quantity }),
    )
    .await?;
    Ok(LotView {
        on_hand: lot.on_hand.checked_add(i.quantity).unwrap_or(lot.on_hand),
        ..lot
    })
}

/// Takes an import's rows into stock at once, each `(line, listing, owner, intake)` checked
/// as [`intake`] checks one and named by its line: one statement for the lots, one for their
/// stock (with the movements, the levels and one `stock.changed` per listing) and one for the
/// audit entries. Taken one row at a time, 10,000 rows were about 80,000 statements and
/// 10,000 `stock.changed`, with the listings' stock locked throughout (37.6 s here, against
/// checkouts of those listings). The listings' stock is locked here in id order.
pub async fn intake_many(
    conn: &mut PgConnection,
    actor: &Actor,
    rows: &[(usize, ListingId, Owner, LotIntake)],
) -> Result<()> {
    let mut p = Problems::default();
    let mut members = HashMap::new();
    let mut households = Vec::with_capacity(rows.len());
    for (line, _, owner, i) in rows {
        let field = |f: &str| format!("rows[{line}].{f}");
        households.push(check_intake(conn, *owner, i, &field, &mut p, &mut members).await?);
    }
    std::mem::take(&mut p).finish()?;
    // Each lot once, made (when new) with its first row's date and household; every row is
    // then checked against the lot as it stands, as one row at a time would have been.
    let mut lots: Vec<(ListingId, &str, NaiveDate, AccountId)> = Vec::new();
    let mut lot_of: HashMap<(ListingId, &str), usize> = HashMap::new();
    for ((_, listing, _, i), &household) in rows.iter().zip(&households) {
        lot_of
            .entry((*listing, i.lot_code.as_str()))
            .or_insert_with(|| {
                lots.push((*listing, &i.lot_code, i.harvest_date, household));
                lots.len() - 1
            });
    }
    let mut listings: Vec<uuid::Uuid> = lots.iter().map(|l| l.0.0).collect();
    listings.sort_unstable();
    listings.dedup();
    let locked: Vec<Locked> = sqlx::query!(
        r#"SELECT s.listing_id AS "listing_id: ListingId", s.on_hand AS "on_hand: Quantity", s.reserved AS "reserved: Quantity",
                  l.low_stock_threshold AS "threshold: Quantity"
           FROM stock s JOIN listings l ON l.id = s.listing_id WHERE s.listing_id = ANY($1) ORDER BY s.listing_id FOR UPDATE OF s"#,
        &listings,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| Locked {
        listing: r.listing_id,
        on_hand: r.on_hand,
        reserved: r.reserved,
        threshold: r.threshold,
    })
    .collect();
    if locked.len() != listings.len() {
        return Err(ListingError::NotFound("listing"));
    }
    let made = sqlx::query!(
        r#"INSERT INTO lots (id, listing_id, lot_code, harvest_date, household_id)
           SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::date[], $5::uuid[])
           ON CONFLICT (listing_id, lot_code) DO UPDATE SET lot_code = EXCLUDED.lot_code
           RETURNING id, listing_id AS "listing_id: ListingId", lot_code, harvest_date, household_id AS "household_id: AccountId""#,
        &lots.iter().map(|_| uuid::Uuid::now_v7()).collect::<Vec<_>>(),
        &lots.iter().map(|l| l.0.0).collect::<Vec<_>>(),
        &lots.iter().map(|l| l.1.to_owned()).collect::<Vec<_>>(),
        &lots.iter().map(|l| l.2).collect::<Vec<_>>(),
        &lots.iter().map(|l| l.3.0).collect::<Vec<_>>(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let made: HashMap<(ListingId, &str), _> = made
        .iter()
        .map(|m| ((m.listing_id, m.lot_code.as_str()), m))
        .collect();
    let mut ids: HashMap<(ListingId, &str), uuid::Uuid> = HashMap::new();
    for ((line, listing, _, i), &household) in rows.iter().zip(&households) {
        let lot = made
            .get(&(*listing, i.lot_code.as_str()))
            .ok_or_else(|| anyhow::anyhow!("lot {} was not made", i.lot_code))?;
        if lot.harvest_date != i.harvest_date || lot.household_id != Some(household) {
            p.push(format!("rows[{line}].lot_code"), lot_exists());
        }
        ids.insert((*listing, i.lot_code.as_str()), lot.id);
    }
    std::mem::take(&mut p).finish()?;
    let mut moves = Vec::with_capacity(rows.len());
    for (_, listing, _, i) in rows {
        let lot = ids
            .get(&(*listing, i.lot_code.as_str()))
            .copied()
            .ok_or_else(|| anyhow::anyhow!("lot {} was not made", i.lot_code))?;
        moves.push(Movement {
            listing: *listing,
            lot: Some(lot),
            kind: "intake",
            on_hand: i.quantity,
            reserved: Quantity::ZERO,
            reason: None,
            reservation: None,
            actor: Some(actor),
        });
    }
    apply_locked(conn, &locked, &moves, Announce::OnCommit, None).await?;
    let entries: Vec<_> = rows
        .iter()
        .zip(&households)
        .map(|((_, listing, _, i), h)| {
            (
                Some(*h),
                ("listing", listing.to_string()),
                serde_json::json!({ "lot_code": i.lot_code, "quantity": i.quantity }),
            )
        })
        .collect();
    audit_many(conn, actor, "stock.intake", &entries).await?;
    Ok(())
}

/// Take a lot into stock. With an `Idempotency-Key`, the same request sent again (a retry
/// after a lost answer) is answered as the first was and takes nothing in again.
#[utoipa::path(post, path = "/v1/listings/{id}/lots", tag = "inventory",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "The same key and request again is answered as the first was, and adds nothing")),
    request_body = LotIntake,
    responses((status = 201, body = LotView), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 422, description = "validation_failed, idempotency_key_reused", body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn create_lot(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<ListingId>,
    headers: HeaderMap,
    Json(i): Json<LotIntake>,
) -> Result<(StatusCode, AxumJson<serde_json::Value>)> {
    let key = IdempotencyKey::optional(&headers)?;
    let mut tx = app.pool.begin().await?;
    let owner = owner_of(&mut tx, id).await?;
    may_manage(&mut tx, &actor, owner).await?;
    let request = serde_json::json!({ "lot": {
        "lot_code": i.lot_code, "harvest_date": i.harvest_date, "quantity": i.quantity, "household_id": i.household_id,
    }});
    if let Some(key) = &key
        && let Claimed::Done(status, answer) =
            requests::claim(&mut tx, actor.account_id, key, id, &request).await?
    {
        return Ok((
            StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED),
            AxumJson(answer),
        ));
    }
    let lot = serde_json::to_value(intake(&mut tx, &actor, id, owner, &i, None).await?)
        .map_err(anyhow::Error::from)?;
    if let Some(key) = &key {
        requests::complete(
            &mut tx,
            actor.account_id,
            key,
            StatusCode::CREATED.as_u16(),
            &lot,
        )
        .await?;
    }
    tx.commit().await?;
    app.views.forget(id);
    Ok((StatusCode::CREATED, AxumJson(lot)))
}

/// A correction of a lot's stock.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Adjustment {
    /// The lot.
    pub lot_code: String,
    /// Signed change, not 0: −2.5 for 2.5 kg spoiled.
    pub quantity: Quantity,
    /// Why: spoilage, recount... (at most 500 characters).
    #[schema(max_length = 500)]
    pub reason: String,
}

/// Adjust a lot's stock with a reason. With an `Idempotency-Key`, the same request sent
/// again is answered as the first was and changes nothing again.
#[utoipa::path(post, path = "/v1/listings/{id}/adjustments", tag = "inventory",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "The same key and request again is answered as the first was, and changes nothing")),
    request_body = Adjustment,
    responses((status = 200, body = StockLevels), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 409, body = nongsan_shared::error::ProblemSchema),
        (status = 422, description = "validation_failed, idempotency_key_reused", body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn adjust_stock(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<ListingId>,
    headers: HeaderMap,
    Json(a): Json<Adjustment>,
) -> Result<AxumJson<serde_json::Value>> {
    let key = IdempotencyKey::optional(&headers);
    let mut p = Problems::default();
    let key = match key {
        Ok(key) => key,
        Err(problems) => {
            p.0.extend(problems.into_errors());
            None
        }
    };
    p.check(
        a.quantity == Quantity::ZERO,
        "quantity",
        "zero",
        "must not be 0",
        "không được bằng 0",
    );
    p.check(
        a.reason.trim().is_empty(),
        "reason",
        "required",
        "must not be empty",
        "không được để trống",
    );
    p.check_reason("reason", Some(a.reason.trim()));
    if let Err(e) = parse_lot_code(&a.lot_code) {
        p.push("lot_code", e);
    }
    p.finish()?;
    let mut tx = app.pool.begin().await?;
    let owner = owner_of(&mut tx, id).await?;
    may_manage(&mut tx, &actor, owner).await?;
    let request = serde_json::json!({ "adjustment": {
        "lot_code": a.lot_code, "quantity": a.quantity, "reason": a.reason.trim(),
    }});
    if let Some(key) = &key
        && let Claimed::Done(_, answer) =
            requests::claim(&mut tx, actor.account_id, key, id, &request).await?
    {
        return Ok(AxumJson(answer));
    }
    let lot: uuid::Uuid = sqlx::query_scalar!(
        "SELECT id FROM lots WHERE listing_id = $1 AND lot_code = $2",
        id as _,
        &a.lot_code,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| {
        ListingError::field(
            "lot_code",
            Invalid::new(
                "unknown_lot",
                "is not a lot of this listing",
                "không phải lô của tin này",
            ),
        )
    })?;
    let levels = apply(
        &mut tx,
        id,
        &[Movement {
            listing: id,
            lot: Some(lot),
            kind: "adjustment",
            on_hand: a.quantity,
            reserved: Quantity::ZERO,
            reason: Some(a.reason.trim()),
            reservation: None,
            actor: Some(&actor),
        }],
    )
    .await?;
    audit(
        &mut tx,
        &actor,
        household_of(owner),
        "stock.adjusted",
        ("listing", id.to_string()),
        &serde_json::json!({ "lot_code": a.lot_code, "quantity": a.quantity, "reason": a.reason }),
    )
    .await?;
    let levels = serde_json::to_value(levels).map_err(anyhow::Error::from)?;
    if let Some(key) = &key {
        requests::complete(
            &mut tx,
            actor.account_id,
            key,
            StatusCode::OK.as_u16(),
            &levels,
        )
        .await?;
    }
    tx.commit().await?;
    app.views.forget(id);
    Ok(AxumJson(levels))
}

/// A listing's stock with its lots.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockView {
    /// The listing.
    pub listing_id: ListingId,
    /// Levels.
    pub stock: StockLevels,
    /// Lots with stock, oldest harvest first.
    pub lots: Vec<LotView>,
}

/// Loads a listing's stock and lots.
pub async fn stock_view(conn: &mut PgConnection, id: ListingId) -> Result<StockView> {
    let levels = sqlx::query!(
        r#"SELECT s.on_hand AS "on_hand: Quantity", s.reserved AS "reserved: Quantity", l.low_stock_threshold AS "threshold: Quantity"
           FROM stock s JOIN listings l ON l.id = s.listing_id WHERE s.listing_id = $1"#,
        id as _,
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ListingError::NotFound("listing"))?;
    let (on_hand, reserved, threshold) = (levels.on_hand, levels.reserved, levels.threshold);
    let lots = sqlx::query_as!(
        LotView,
        r#"SELECT id, lot_code, harvest_date, household_id AS "household_id: AccountId", on_hand AS "on_hand: Quantity"
           FROM lots WHERE listing_id = $1 AND on_hand > 0 ORDER BY harvest_date, created_at"#,
        id as _,
    )
    .fetch_all(conn)
    .await?;
    Ok(StockView {
        listing_id: id,
        stock: StockLevels::new(on_hand, reserved, threshold),
        lots,
    })
}

/// A listing's stock and lots (those who manage it).
#[utoipa::path(get, path = "/v1/listings/{id}/stock", tag = "inventory", params(("id" = String, Path)),
    responses((status = 200, body = StockView), (status = 403, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn get_stock(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<ListingId>,
) -> Result<AxumJson<StockView>> {
    let mut conn = app.pool.acquire().await?;
    let owner = owner_of(&mut conn, id).await?;
    may_manage(&mut conn, &actor, owner).await?;
    Ok(AxumJson(stock_view(&mut conn, id).await?))
}

/// One stock movement.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct MovementView {
    /// Kind.
    pub kind: String,
    /// Lot code, for on-hand changes.
    pub lot_code: Option<String>,
    /// Change of on-hand.
    pub on_hand_delta: Quantity,
    /// Change of reserved.
    pub reserved_delta: Quantity,
    /// Why.
    pub reason: Option<String>,
    /// The reservation.
    pub reservation_id: Option<ReservationId>,
    /// Who.
    pub actor_id: Option<AccountId>,
    /// For whom.
    pub on_behalf_of: Option<AccountId>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A listing's stock movements, oldest first (those who manage it).
#[utoipa::path(get, path = "/v1/listings/{id}/movements", tag = "inventory", params(("id" = String, Path), PageParams),
    responses((status = 200, body = MovementPage), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn list_movements(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<ListingId>,
    Query(q): Query<PageParams>,
) -> Result<AxumJson<MovementPage>> {
    let mut p = Problems::default();
    let limit = paging::limit(&mut p, q.limit);
    let after = paging::position(&mut p, q.cursor.as_deref(), |s| {
        s.strip_prefix("after:")?.parse::<uuid::Uuid>().ok()
    });
    p.finish()?;
    let mut conn = app.pool.acquire().await?;
    let owner = owner_of(&mut conn, id).await?;
    may_manage(&mut conn, &actor, owner).await?;
    // Movement ids are UUIDv7: their order is the order the movements were made in.
    let mut rows = sqlx::query!(
        r#"SELECT m.id, m.kind, l.lot_code AS "lot_code?", m.on_hand_delta AS "on_hand_delta: Quantity", m.reserved_delta AS "reserved_delta: Quantity",
            m.reason, m.reservation_id AS "reservation_id: ReservationId", m.actor_id AS "actor_id: AccountId",
            m.on_behalf_of AS "on_behalf_of: AccountId", m.at
         FROM stock_movements m LEFT JOIN lots l ON l.id = m.lot_id
         WHERE m.listing_id = $1 AND ($2::uuid IS NULL OR m.id > $2) ORDER BY m.id LIMIT $3"#,
        id as _,
        after,
        paging::rows_to_fetch(limit),
    )
    .fetch_all(&mut *conn)
    .await?;
    let next_cursor = paging::next_cursor(&mut rows, limit, |m| format!("after:{}", m.id));
    let items = rows
        .into_iter()
        .map(|m| MovementView {
            kind: m.kind,
            lot_code: m.lot_code,
            on_hand_delta: m.on_hand_delta,
            reserved_delta: m.reserved_delta,
            reason: m.reason,
            reservation_id: m.reservation_id,
            actor_id: m.actor_id,
            on_behalf_of: m.on_behalf_of,
            at: m.at,
        })
        .collect();
    Ok(AxumJson(MovementPage { items, next_cursor }))
}

/// A page of stock movements, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MovementPage {
    /// The movements.
    pub items: Vec<MovementView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}
