//! Listings in PostgreSQL: writing them, reading them back as views, and the `listing.changed`
//! event every change emits.

use axum::body::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use nongsan_shared::{
    AccountId, CooperativeId, ListingId, Quantity, Vnd, auth::Actor, events, invalid::Invalid,
};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, types::Json};
use utoipa::ToSchema;

use crate::{
    access::Owner,
    audit::audit,
    catalog::{
        input::{Certification, CheckedListing},
        reference::{ADMIN_VERSION, reference},
    },
    error::{ListingError, Result},
    sellers::profile::Point,
    stock::levels::StockLevels,
};
use nongsan_shared::contracts::{
    events::{EventType, ListingChanged},
    sellers::{Seller, SellerKind},
};

/// Where a listing's produce grows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Origin {
    /// Province code (2025).
    pub province_code: String,
    /// Province name.
    pub province_name: String,
    /// Commune code (2025).
    pub commune_code: String,
    /// Commune name.
    pub commune_name: String,
    /// Point, if known.
    pub point: Option<Point>,
}

/// Whether a certification is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertificationStatus {
    /// Today is within its dates.
    Valid,
    /// Its last day has passed: it no longer counts.
    Expired,
    /// Its first day has not come.
    NotYetValid,
}

/// A certification as shown: what the seller wrote, whether it is in force today (Vietnam
/// time) and what an operator found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CertificationView {
    /// Kind: a code from `/v1/certifications`.
    pub kind: String,
    /// Certificate or registration number.
    pub number: String,
    /// Who issued it.
    pub issuer: String,
    /// First day it is valid.
    pub valid_from: NaiveDate,
    /// Last day it is valid.
    pub valid_until: NaiveDate,
    /// In force today, expired or not yet valid.
    pub status: CertificationStatus,
    /// `pending`, `verified` or `rejected` (by an operator).
    pub verification: String,
}

impl CertificationView {
    /// What the seller wrote.
    pub fn certification(&self) -> Certification {
        Certification {
            kind: self.kind.clone(),
            number: self.number.clone(),
            issuer: self.issuer.clone(),
            valid_from: self.valid_from,
            valid_until: self.valid_until,
        }
    }

    /// Whether it counts for the listing's badge and search facet: in force today and not
    /// rejected.
    pub fn counts(&self) -> bool {
        self.status == CertificationStatus::Valid && self.verification != "rejected"
    }
}

/// Today in Vietnam (UTC+7): the day certifications are judged by.
pub fn today_in_vietnam() -> NaiveDate {
    (Utc::now() + chrono::Duration::hours(7)).date_naive()
}

/// A listing as buyers and sellers see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ListingView {
    /// Id.
    pub id: ListingId,
    /// Seller.
    pub seller: Seller,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Category code.
    pub category: String,
    /// Unit code.
    pub unit: String,
    /// Price per unit, đồng.
    pub price_vnd: Vnd,
    /// Minimum order.
    pub min_order: Quantity,
    /// Order step.
    pub step: Quantity,
    /// Photos.
    pub photos: Vec<String>,
    /// Origin.
    pub origin: Origin,
    /// Certifications, each with whether it is in force today and whether an operator
    /// verified it.
    pub certifications: Vec<CertificationView>,
    /// The product's GTIN, 14 digits.
    pub gtin: Option<String>,
    /// OCOP stars.
    pub ocop_stars: Option<i16>,
    /// draft, active, paused or hidden.
    pub status: String,
    /// Stock.
    pub stock: StockLevels,
    /// Grows by one with each change.
    pub version: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Claims `gtin` for `owner` when nobody has it; 422 `gtin_taken` when another seller does.
/// Concurrent first claims of one GTIN take their turns on its row: the second finds the first.
pub(crate) async fn claim_gtin(
    conn: &mut PgConnection,
    owner: Owner,
    gtin: Option<&str>,
) -> Result<()> {
    let Some(gtin) = gtin else { return Ok(()) };
    let (household, coop) = match owner {
        Owner::Household(h) => (Some(h), None),
        Owner::Cooperative(c) => (None, Some(c)),
    };
    // The update changes nothing: it makes the statement answer the row a seller holds.
    let held = sqlx::query!(
        r#"INSERT INTO gtin_owners (gtin, household_id, cooperative_id) VALUES ($1, $2, $3)
           ON CONFLICT (gtin) DO UPDATE SET gtin = EXCLUDED.gtin
           RETURNING household_id AS "household_id: AccountId", cooperative_id AS "cooperative_id: CooperativeId""#,
        gtin,
        household as _,
        coop as _,
    )
    .fetch_one(&mut *conn)
    .await?;
    if (held.household_id, held.cooperative_id) != (household, coop) {
        return Err(ListingError::field(
            "gtin",
            Invalid::new(
                "gtin_taken",
                "belongs to another seller's products",
                "thuộc về sản phẩm của người bán khác",
            ),
        ));
    }
    Ok(())
}

/// Writes a new listing for `owner`; the caller has checked the actor may.
pub async fn insert_listing(
    conn: &mut PgConnection,
    actor: &Actor,
    owner: Owner,
    l: &CheckedListing,
) -> Result<ListingView> {
    let id = ListingId::new();
    claim_gtin(conn, owner, l.gtin14().as_deref()).await?;
    let (household, coop) = match owner {
        Owner::Household(h) => (Some(h), None),
        Owner::Cooperative(c) => (None, Some(c)),
    };
    sqlx::query!(
        "INSERT INTO listings (id, household_id, cooperative_id, title, description, category_code, unit_code, price_vnd, min_order, step,
            photos, origin_province, origin_commune, admin_version, lat, lon, ocop_stars, status, low_stock_threshold, created_by, gtin)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
        id as _,
        household as _,
        coop as _,
        l.title.trim(),
        l.description.trim(),
        &l.category,
        &l.unit,
        l.price_vnd as _,
        l.min_order() as _,
        l.step() as _,
        &l.photos,
        l.origin_province(),
        &l.origin_commune,
        ADMIN_VERSION,
        l.origin_point.map(|p| p.lat),
        l.origin_point.map(|p| p.lon),
        l.ocop_stars,
        l.status(),
        l.low_stock_threshold as _,
        actor.account_id as _,
        l.gtin14(),
    )
    .execute(&mut *conn)
    .await?;
    write_certifications(conn, id, &l.certifications).await?;
    sqlx::query!("INSERT INTO stock (listing_id) VALUES ($1)", id as _)
        .execute(&mut *conn)
        .await?;
    let view = load_listing(conn, id).await?;
    audit(
        conn,
        actor,
        household,
        "listing.created",
        ("listing", id.to_string()),
        &serde_json::json!({ "title": view.title, "price_vnd": view.price_vnd }),
    )
    .await?;
    emit_changed(conn, &view).await?;
    Ok(view)
}

pub(crate) async fn write_certifications(
    conn: &mut PgConnection,
    id: ListingId,
    certs: &[Certification],
) -> Result<()> {
    // An operator's verification stays with a certificate the seller did not change.
    let before = sqlx::query!(
        "DELETE FROM listing_certifications WHERE listing_id = $1
         RETURNING kind, number, issuer, valid_from, valid_until, verification, verified_by, verified_at",
        id as _
    )
    .fetch_all(&mut *conn)
    .await?;
    for (i, c) in certs.iter().enumerate() {
        let kept = before.iter().find(|b| {
            b.kind == c.kind
                && b.number == c.number.trim()
                && b.issuer == c.issuer.trim()
                && b.valid_from == c.valid_from
                && b.valid_until == c.valid_until
        });
        sqlx::query!(
            "INSERT INTO listing_certifications (listing_id, position, kind, number, issuer, valid_from, valid_until, verification, verified_by, verified_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            id as _,
            i32::try_from(i).unwrap_or(i32::MAX),
            &c.kind,
            c.number.trim(),
            c.issuer.trim(),
            c.valid_from,
            c.valid_until,
            kept.map_or("pending", |k| k.verification.as_str()),
            kept.and_then(|k| k.verified_by),
            kept.and_then(|k| k.verified_at),
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// `listing.changed` (its followers read the listing as it is now), and the listing's mark
/// for the search indexer, in the caller's transaction: the change reaches the index however
/// the event fares, and whatever stops after the commit (a process killed in a bulk import)
/// leaves it marked, not lost to the index until a start fills it.
pub async fn emit_changed(conn: &mut PgConnection, view: &ListingView) -> Result<()> {
    events::emit(
        conn,
        EventType::ListingChanged,
        &view.id.to_string(),
        view.version,
        &ListingChanged {
            listing_id: view.id,
            version: view.version,
        },
    )
    .await?;
    crate::search::dirty::mark_dirty(conn, &[view.id]).await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
pub(crate) struct ListingRow {
    id: ListingId,
    household_id: Option<AccountId>,
    cooperative_id: Option<CooperativeId>,
    seller_name: String,
    title: String,
    description: String,
    category_code: String,
    unit_code: String,
    price_vnd: Vnd,
    min_order: Quantity,
    step: Quantity,
    photos: Vec<String>,
    origin_province: String,
    origin_commune: String,
    lat: Option<f64>,
    lon: Option<f64>,
    gtin: Option<String>,
    ocop_stars: Option<i16>,
    status: String,
    low_stock_threshold: Option<Quantity>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    on_hand: Quantity,
    reserved: Quantity,
    certifications: Json<Vec<CertificationRow>>,
}

/// A certification as the listing's statement reads it (one JSON array per listing, so a
/// listing costs one statement with its certifications).
#[derive(Debug, Deserialize)]
pub(crate) struct CertificationRow {
    kind: String,
    number: String,
    issuer: String,
    valid_from: NaiveDate,
    valid_until: NaiveDate,
    verification: String,
}

/// Which listings to read: every filter is optional.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    /// Drafts, paused and hidden listings too.
    pub all_statuses: bool,
    /// Only this household's.
    pub household_id: Option<AccountId>,
    /// Only this cooperative's.
    pub cooperative_id: Option<CooperativeId>,
    /// Only in this category or one of `subcategories`.
    pub category: Option<String>,
    /// The category's subcategories.
    pub subcategories: Vec<String>,
    /// Only ids after this one (keyset paging).
    pub after: Option<ListingId>,
    /// At most this many.
    pub limit: i64,
}

/// Reads the listings a selection picks, in id order: their ids from `listings` alone
/// ([`select_ids`]), then [`rows`].
pub(crate) async fn select(conn: &mut PgConnection, s: &Selection) -> Result<Vec<ListingRow>> {
    let ids = select_ids(conn, s).await?;
    rows(conn, &ids).await
}

/// The ids of the listings a selection picks, in id order. The whole catalog (a buyer's
/// first pages, no filter) has statements of its own, which PostgreSQL plans once per
/// connection; the catch-all statement of the filters is planned again on every call.
pub(crate) async fn select_ids(conn: &mut PgConnection, s: &Selection) -> Result<Vec<ListingId>> {
    let unfiltered = !s.all_statuses
        && s.household_id.is_none()
        && s.cooperative_id.is_none()
        && s.category.is_none();
    if unfiltered {
        return Ok(match s.after {
            None => {
                sqlx::query_scalar!(
                    r#"SELECT id AS "id: ListingId" FROM listings WHERE status = 'active' ORDER BY id LIMIT $1"#,
                    s.limit,
                )
                .fetch_all(&mut *conn)
                .await?
            }
            Some(after) => {
                sqlx::query_scalar!(
                    r#"SELECT id AS "id: ListingId" FROM listings WHERE status = 'active' AND id > $1 ORDER BY id LIMIT $2"#,
                    after as _,
                    s.limit,
                )
                .fetch_all(&mut *conn)
                .await?
            }
        });
    }
    Ok(sqlx::query_scalar!(
        r#"SELECT l.id AS "id: ListingId" FROM listings l
         WHERE ($1 OR l.status = 'active')
           AND ($2::uuid IS NULL OR l.household_id = $2) AND ($3::uuid IS NULL OR l.cooperative_id = $3)
           AND ($4::text IS NULL OR l.category_code = $4 OR l.category_code = ANY($5::text[]))
           AND ($6::uuid IS NULL OR l.id > $6)
         ORDER BY l.id LIMIT $7"#,
        s.all_statuses,
        s.household_id as _,
        s.cooperative_id as _,
        s.category.as_deref(),
        &s.subcategories,
        s.after as _,
        s.limit,
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Reads these listings with their stock and seller, in id order, whatever their status.
/// The statements have one shape whatever is asked, unlike the catch-all statement of the
/// filters, which PostgreSQL plans again on every call (its best plan depends on which
/// filters are set); for one listing that planning cost more than running it. One listing
/// (a listing page, the hottest read) has a statement of its own: PostgreSQL plans
/// `id = $1` once per connection, while `id = ANY($1)` is planned again for each array, as a
/// plan for one id costs less than one for the ten its generic plan expects.
async fn rows(conn: &mut PgConnection, ids: &[ListingId]) -> Result<Vec<ListingRow>> {
    match ids {
        [] => Ok(Vec::new()),
        [id] => Ok(sqlx::query_as!(
            ListingRow,
            r#"SELECT l.id AS "id: ListingId", l.household_id AS "household_id: AccountId", l.cooperative_id AS "cooperative_id: CooperativeId",
                COALESCE(h.name, c.name) AS "seller_name!", l.title, l.description, l.category_code, l.unit_code, l.price_vnd AS "price_vnd: Vnd",
                l.min_order AS "min_order: Quantity", l.step AS "step: Quantity", l.photos, l.origin_province, l.origin_commune, l.lat, l.lon, l.gtin,
                l.ocop_stars, l.status, l.low_stock_threshold AS "low_stock_threshold: Quantity", l.version, l.created_at, l.updated_at,
                s.on_hand AS "on_hand: Quantity", s.reserved AS "reserved: Quantity",
                COALESCE((SELECT json_agg(json_build_object('kind', lc.kind, 'number', lc.number, 'issuer', lc.issuer, 'valid_from', lc.valid_from,
                    'valid_until', lc.valid_until, 'verification', lc.verification) ORDER BY lc.position)
                    FROM listing_certifications lc WHERE lc.listing_id = l.id), '[]'::json) AS "certifications!: Json<Vec<CertificationRow>>"
             FROM listings l JOIN stock s ON s.listing_id = l.id
             LEFT JOIN households h ON h.account_id = l.household_id LEFT JOIN cooperatives c ON c.id = l.cooperative_id
             WHERE l.id = $1"#,
            id as _,
        )
        .fetch_all(conn)
        .await?),
        _ => Ok(sqlx::query_as!(
            ListingRow,
            r#"SELECT l.id AS "id: ListingId", l.household_id AS "household_id: AccountId", l.cooperative_id AS "cooperative_id: CooperativeId",
                COALESCE(h.name, c.name) AS "seller_name!", l.title, l.description, l.category_code, l.unit_code, l.price_vnd AS "price_vnd: Vnd",
                l.min_order AS "min_order: Quantity", l.step AS "step: Quantity", l.photos, l.origin_province, l.origin_commune, l.lat, l.lon, l.gtin,
                l.ocop_stars, l.status, l.low_stock_threshold AS "low_stock_threshold: Quantity", l.version, l.created_at, l.updated_at,
                s.on_hand AS "on_hand: Quantity", s.reserved AS "reserved: Quantity",
                COALESCE((SELECT json_agg(json_build_object('kind', lc.kind, 'number', lc.number, 'issuer', lc.issuer, 'valid_from', lc.valid_from,
                    'valid_until', lc.valid_until, 'verification', lc.verification) ORDER BY lc.position)
                    FROM listing_certifications lc WHERE lc.listing_id = l.id), '[]'::json) AS "certifications!: Json<Vec<CertificationRow>>"
             FROM listings l JOIN stock s ON s.listing_id = l.id
             LEFT JOIN households h ON h.account_id = l.household_id LEFT JOIN cooperatives c ON c.id = l.cooperative_id
             WHERE l.id = ANY($1)
             ORDER BY l.id"#,
            &ids.iter().map(|i| i.0).collect::<Vec<_>>(),
        )
        .fetch_all(conn)
        .await?),
    }
}

/// The views of these rows, each certification's standing as of today in Vietnam.
pub(crate) fn views(rows: Vec<ListingRow>) -> Vec<ListingView> {
    let today = today_in_vietnam();
    let r = reference();
    rows.into_iter()
        .map(|row| {
            let province_name = r
                .province(&row.origin_province)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            let commune_name = r
                .commune(&row.origin_commune)
                .map(|c| c.full_name.clone())
                .unwrap_or_default();
            let (kind, id) = match (row.household_id, row.cooperative_id) {
                (Some(h), _) => (SellerKind::Household, h.0),
                (_, Some(c)) => (SellerKind::Cooperative, c.0),
                _ => (SellerKind::Household, uuid::Uuid::nil()),
            };
            ListingView {
                id: row.id,
                seller: Seller {
                    kind,
                    id,
                    name: row.seller_name,
                },
                title: row.title,
                description: row.description,
                category: row.category_code,
                unit: row.unit_code,
                price_vnd: row.price_vnd,
                min_order: row.min_order,
                step: row.step,
                photos: row.photos,
                origin: Origin {
                    province_code: row.origin_province,
                    province_name,
                    commune_code: row.origin_commune,
                    commune_name,
                    point: row.lat.zip(row.lon).map(|(lat, lon)| Point { lat, lon }),
                },
                certifications: row
                    .certifications
                    .0
                    .into_iter()
                    .map(|c| CertificationView {
                        status: if c.valid_until < today {
                            CertificationStatus::Expired
                        } else if c.valid_from > today {
                            CertificationStatus::NotYetValid
                        } else {
                            CertificationStatus::Valid
                        },
                        kind: c.kind,
                        number: c.number,
                        issuer: c.issuer,
                        valid_from: c.valid_from,
                        valid_until: c.valid_until,
                        verification: c.verification,
                    })
                    .collect(),
                gtin: row.gtin,
                ocop_stars: row.ocop_stars,
                status: row.status,
                stock: StockLevels::new(row.on_hand, row.reserved, row.low_stock_threshold),
                version: row.version,
                created_at: row.created_at,
                updated_at: row.updated_at,
            }
        })
        .collect()
}

/// Loads listings, whatever their status, in id order (those that do not exist are left
/// out): one statement for any number.
pub async fn load_listings(conn: &mut PgConnection, ids: &[ListingId]) -> Result<Vec<ListingView>> {
    let rows = rows(conn, ids).await?;
    Ok(views(rows))
}

/// Every listing after `after` (in id order), at most `limit`, whatever its status.
pub async fn listings_after(
    conn: &mut PgConnection,
    after: Option<ListingId>,
    limit: i64,
) -> Result<Vec<ListingView>> {
    let selection = Selection {
        all_statuses: true,
        after,
        limit,
        ..Selection::default()
    };
    let rows = select(conn, &selection).await?;
    Ok(views(rows))
}

/// A listing's page as JSON, without spare capacity (kept pages hold only their bytes).
pub(crate) fn page_bytes(view: &ListingView) -> Result<Bytes> {
    let mut body = serde_json::to_vec(view).map_err(anyhow::Error::from)?;
    body.shrink_to_fit();
    Ok(Bytes::from(body))
}

/// Loads one listing.
pub async fn load_listing(conn: &mut PgConnection, id: ListingId) -> Result<ListingView> {
    let rows = rows(conn, &[id]).await?;
    if rows.is_empty() {
        return Err(ListingError::NotFound("listing"));
    }
    Ok(views(rows).remove(0))
}
