//! A cooperative's pooled stock: what each pooled listing holds by member household, and moving a
//! member's lot into the cooperative's listing.

use axum::{Json as AxumJson, extract::State};
use chrono::NaiveDate;
use nongsan_shared::{
    AccountId, CooperativeId, ListingId, Quantity,
    auth::Actor,
    http::{Json, Path, Query},
    invalid::Invalid,
    paging::{self, PageParams},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    access::{Owner, is_member, may_manage, owner_of},
    app::AppState,
    audit::audit,
    error::{ListingError, Problems, Result},
    sellers::cooperatives::load_cooperative,
    stock::{
        levels::{Movement, StockLevels, apply, lock_in_order, parse_lot_code},
        lots,
        lots::LotIntake,
    },
};

/// One listing in the cooperative's stock view.
#[derive(Debug, Serialize, ToSchema)]
pub struct CoopStockLine {
    /// The listing.
    pub listing_id: ListingId,
    /// Its title.
    pub title: String,
    /// Its unit.
    pub unit: String,
    /// `pooled` (the cooperative's own) or `member`.
    pub kind: &'static str,
    /// The member household, for a member listing.
    pub household_id: Option<AccountId>,
    /// Its stock.
    pub stock: StockLevels,
}

/// A page of a cooperative's stock: its pooled listings first, then its members', each by
/// title.
#[derive(Debug, Serialize, ToSchema)]
pub struct CoopStockPage {
    /// The listings.
    pub items: Vec<CoopStockLine>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// Where a page of a cooperative's stock ends: its last listing's place in the order.
struct StockPlace {
    member: bool,
    title: String,
    id: uuid::Uuid,
}

impl StockPlace {
    fn position(&self) -> String {
        // The title last: it may hold the separator.
        format!("after:{}:{}:{}", u8::from(self.member), self.id, self.title)
    }

    fn parse(s: &str) -> Option<Self> {
        let mut parts = s.strip_prefix("after:")?.splitn(3, ':');
        let member = match parts.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let id = parts.next()?.parse().ok()?;
        Some(Self {
            member,
            id,
            title: parts.next()?.to_owned(),
        })
    }
}

/// Stock of the cooperative's pooled listings and its members' listings (the manager), a
/// page at a time (a cooperative of many households lists thousands).
#[utoipa::path(get, path = "/v1/cooperatives/{id}/stock", tag = "cooperatives", params(("id" = String, Path), PageParams),
    responses((status = 200, body = CoopStockPage), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn get_cooperative_stock(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<CooperativeId>,
    Query(q): Query<PageParams>,
) -> Result<AxumJson<CoopStockPage>> {
    let mut p = Problems::default();
    let limit = paging::limit(&mut p, q.limit);
    let after = paging::position(&mut p, q.cursor.as_deref(), StockPlace::parse);
    p.finish()?;
    let mut conn = app.pool.acquire().await?;
    load_cooperative(&mut conn, id).await?;
    may_manage(&mut conn, &actor, Owner::Cooperative(id)).await?;
    let mut rows = sqlx::query!(
        r#"SELECT l.id AS "id: ListingId", l.title, l.unit_code, l.household_id AS "household_id: AccountId",
            l.cooperative_id IS NULL AS "member!",
            s.on_hand AS "on_hand: Quantity", s.reserved AS "reserved: Quantity", l.low_stock_threshold AS "threshold: Quantity"
         FROM listings l JOIN stock s ON s.listing_id = l.id
         WHERE (l.cooperative_id = $1
                OR l.household_id IN (SELECT household_id FROM cooperative_members WHERE cooperative_id = $1 AND left_at IS NULL AND status = 'active'))
           AND ($2::bool IS NULL OR (l.cooperative_id IS NULL, l.title, l.id) > ($2, $3, $4))
         ORDER BY l.cooperative_id IS NULL, l.title, l.id
         LIMIT $5"#,
        id as _,
        after.as_ref().map(|a| a.member),
        after.as_ref().map(|a| a.title.as_str()),
        after.as_ref().map(|a| a.id),
        paging::rows_to_fetch(limit),
    )
    .fetch_all(&mut *conn)
    .await?;
    let next_cursor = paging::next_cursor(&mut rows, limit, |r| {
        StockPlace {
            member: r.member,
            title: r.title.clone(),
            id: r.id.0,
        }
        .position()
    });
    let items = rows
        .into_iter()
        .map(|r| CoopStockLine {
            listing_id: r.id,
            title: r.title,
            unit: r.unit_code,
            kind: if r.household_id.is_some() {
                "member"
            } else {
                "pooled"
            },
            household_id: r.household_id,
            stock: StockLevels::new(r.on_hand, r.reserved, r.threshold),
        })
        .collect();
    Ok(AxumJson(CoopStockPage { items, next_cursor }))
}

/// Moving part of a member's lot into a pooled listing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolRequest {
    /// The member's listing.
    pub from_listing_id: ListingId,
    /// The member's lot.
    pub lot_code: String,
    /// How much to move.
    pub quantity: Quantity,
    /// The cooperative's pooled listing (same unit).
    pub to_listing_id: ListingId,
}

/// Take (part of) a member household's lot into a pooled listing of the cooperative. The lot
/// keeps its code, harvest date and household.
#[utoipa::path(post, path = "/v1/cooperatives/{id}/pooling", tag = "cooperatives", params(("id" = String, Path)), request_body = PoolRequest,
    responses((status = 200, body = StockLevels), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 409, body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn pool_lot(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<CooperativeId>,
    Json(r): Json<PoolRequest>,
) -> Result<AxumJson<StockLevels>> {
    let mut p = Problems::default();
    p.check(
        !r.quantity.is_positive(),
        "quantity",
        "not_positive",
        "must be more than 0",
        "phải lớn hơn 0",
    );
    if let Err(e) = parse_lot_code(&r.lot_code) {
        p.push("lot_code", e);
    }
    p.finish()?;
    let mut tx = app.pool.begin().await?;
    load_cooperative(&mut tx, id).await?;
    may_manage(&mut tx, &actor, Owner::Cooperative(id)).await?;
    if owner_of(&mut tx, r.to_listing_id).await? != Owner::Cooperative(id) {
        return Err(ListingError::field(
            "to_listing_id",
            Invalid::new(
                "not_pooled",
                "is not a listing of this cooperative",
                "không phải tin của hợp tác xã này",
            ),
        ));
    }
    let Owner::Household(member) = owner_of(&mut tx, r.from_listing_id).await? else {
        return Err(ListingError::field(
            "from_listing_id",
            Invalid::new(
                "not_member_listing",
                "is not a member household's listing",
                "không phải tin của hộ thành viên",
            ),
        ));
    };
    if !is_member(&mut tx, id, member).await? {
        return Err(ListingError::Forbidden);
    }
    let units: Vec<String> = sqlx::query_scalar!(
        "SELECT unit_code FROM listings WHERE id = ANY($1)",
        &[r.from_listing_id.0, r.to_listing_id.0][..],
    )
    .fetch_all(&mut *tx)
    .await?;
    if units.len() != 2 || units[0] != units[1] {
        return Err(ListingError::field(
            "to_listing_id",
            Invalid::new(
                "unit_mismatch",
                "is sold in another unit",
                "bán theo đơn vị tính khác",
            ),
        ));
    }
    let (lot, harvest): (uuid::Uuid, NaiveDate) = sqlx::query!(
        "SELECT id, harvest_date FROM lots WHERE listing_id = $1 AND lot_code = $2",
        r.from_listing_id as _,
        &r.lot_code,
    )
    .fetch_optional(&mut *tx)
    .await?
    .map(|l| (l.id, l.harvest_date))
    .ok_or_else(|| {
        ListingError::field(
            "lot_code",
            Invalid::new(
                "unknown_lot",
                "is not a lot of that listing",
                "không phải lô của tin đó",
            ),
        )
    })?;
    // Both listings' stock in listing-id order, as a checkout of both would take them.
    lock_in_order(&mut tx, &[r.from_listing_id, r.to_listing_id]).await?;
    let reason = format!("pooled into {}", r.to_listing_id);
    apply(
        &mut tx,
        r.from_listing_id,
        &[Movement {
            listing: r.from_listing_id,
            lot: Some(lot),
            kind: "adjustment",
            on_hand: -r.quantity,
            reserved: Quantity::ZERO,
            reason: Some(&reason),
            reservation: None,
            actor: Some(&actor),
        }],
    )
    .await?;
    let intake = LotIntake {
        lot_code: r.lot_code.clone(),
        harvest_date: harvest,
        quantity: r.quantity,
        household_id: Some(member),
    };
    lots::intake(
        &mut tx,
        &actor,
        r.to_listing_id,
        Owner::Cooperative(id),
        &intake,
        None,
    )
    .await?;
    audit(&mut tx, &actor, Some(member), "stock.pooled", ("listing", r.to_listing_id.to_string()), &serde_json::json!({ "from": r.from_listing_id, "lot_code": r.lot_code, "quantity": r.quantity })).await?;
    let levels = lots::stock_view(&mut tx, r.to_listing_id).await?.stock;
    tx.commit().await?;
    app.views.forget(r.from_listing_id);
    app.views.forget(r.to_listing_id);
    Ok(AxumJson(levels))
}
