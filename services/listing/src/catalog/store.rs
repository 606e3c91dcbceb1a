//! Listings in PostgreSQL: writing them, reading them back as views, and the `listing.changed`
//! event every change emits.

use chrono::{DateTime, NaiveDate, Utc};
use nongsan_shared::{AccountId, CooperativeId, ListingId, Quantity, Vnd, auth::Actor, events};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{
    access::Owner,
    audit::audit,
    catalog::{
        input::{Certification, ListingInput, check_listing, default_min_order, default_step},
        reference::{ADMIN_VERSION, reference},
    },
    error::{ListingError, Problems, Result},
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
    /// Certifications.
    pub certifications: Vec<Certification>,
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

/// Writes a new listing for `owner`; the caller has checked the actor may.
pub async fn insert_listing(
    conn: &mut PgConnection,
    actor: &Actor,
    owner: Owner,
    l: &ListingInput,
) -> Result<ListingView> {
    let mut p = Problems::default();
    check_listing(&mut p, l);
    p.finish()?;
    let id = ListingId::new();
    let commune = reference()
        .commune(&l.origin_commune)
        .expect("checked above");
    let (household, coop) = match owner {
        Owner::Household(h) => (Some(h), None),
        Owner::Cooperative(c) => (None, Some(c)),
    };
    sqlx::query(
        "INSERT INTO listings (id, household_id, cooperative_id, title, description, category_code, unit_code, price_vnd, min_order, step,
            photos, origin_province, origin_commune, admin_version, lat, lon, ocop_stars, status, low_stock_threshold, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
    )
    .bind(id)
    .bind(household)
    .bind(coop)
    .bind(l.title.trim())
    .bind(l.description.trim())
    .bind(&l.category)
    .bind(&l.unit)
    .bind(l.price_vnd)
    .bind(l.min_order.unwrap_or_else(default_min_order))
    .bind(l.step.unwrap_or_else(default_step))
    .bind(&l.photos)
    .bind(&commune.province_code)
    .bind(&l.origin_commune)
    .bind(ADMIN_VERSION)
    .bind(l.origin_point.map(|p| p.lat))
    .bind(l.origin_point.map(|p| p.lon))
    .bind(l.ocop_stars)
    .bind(l.status.as_deref().unwrap_or("draft"))
    .bind(l.low_stock_threshold)
    .bind(actor.account_id)
    .execute(&mut *conn)
    .await?;
    write_certifications(conn, id, &l.certifications).await?;
    sqlx::query("INSERT INTO stock (listing_id) VALUES ($1)")
        .bind(id)
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
    sqlx::query("DELETE FROM listing_certifications WHERE listing_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for (i, c) in certs.iter().enumerate() {
        sqlx::query("INSERT INTO listing_certifications (listing_id, position, kind, number, issuer, valid_from, valid_until) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(id)
            .bind(i32::try_from(i).unwrap_or(i32::MAX))
            .bind(&c.kind)
            .bind(c.number.trim())
            .bind(c.issuer.trim())
            .bind(c.valid_from)
            .bind(c.valid_until)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// `listing.changed`: its followers read the listing as it is now.
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
    ocop_stars: Option<i16>,
    status: String,
    low_stock_threshold: Option<Quantity>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    on_hand: Quantity,
    reserved: Quantity,
}

pub(crate) const LISTING_SELECT: &str = "SELECT l.id, l.household_id, l.cooperative_id, COALESCE(h.name, c.name) AS seller_name, l.title, l.description,
    l.category_code, l.unit_code, l.price_vnd, l.min_order, l.step, l.photos, l.origin_province, l.origin_commune, l.lat, l.lon,
    l.ocop_stars, l.status, l.low_stock_threshold, l.version, l.created_at, l.updated_at, s.on_hand, s.reserved
    FROM listings l JOIN stock s ON s.listing_id = l.id
    LEFT JOIN households h ON h.account_id = l.household_id LEFT JOIN cooperatives c ON c.id = l.cooperative_id";

pub(crate) async fn views(
    conn: &mut PgConnection,
    rows: Vec<ListingRow>,
) -> Result<Vec<ListingView>> {
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id.0).collect();
    let certs: Vec<(ListingId, String, String, String, NaiveDate, NaiveDate)> = sqlx::query_as(
        "SELECT listing_id, kind, number, issuer, valid_from, valid_until FROM listing_certifications WHERE listing_id = ANY($1) ORDER BY listing_id, position",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    let r = reference();
    Ok(rows
        .into_iter()
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
                certifications: certs
                    .iter()
                    .filter(|c| c.0 == row.id)
                    .map(|c| Certification {
                        kind: c.1.clone(),
                        number: c.2.clone(),
                        issuer: c.3.clone(),
                        valid_from: c.4,
                        valid_until: c.5,
                    })
                    .collect(),
                ocop_stars: row.ocop_stars,
                status: row.status,
                stock: StockLevels::new(row.on_hand, row.reserved, row.low_stock_threshold),
                version: row.version,
                created_at: row.created_at,
                updated_at: row.updated_at,
            }
        })
        .collect())
}

/// Loads one listing.
pub async fn load_listing(conn: &mut PgConnection, id: ListingId) -> Result<ListingView> {
    let row = sqlx::query_as::<_, ListingRow>(&format!("{LISTING_SELECT} WHERE l.id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(ListingError::NotFound("listing"))?;
    Ok(views(conn, vec![row]).await?.remove(0))
}
