//! The catalog: listings with title, category, unit, price per unit, minimum order and
//! step, photos, origin, certifications and OCOP stars, owned by a household or a
//! cooperative, and their status (draft, active, paused, hidden by an operator).

use axum::{Json as AxumJson, extract::State, http::StatusCode};
use chrono::{DateTime, NaiveDate, Utc};
use nongsan_shared::{
    AccountId, CooperativeId, ListingId, Quantity, Vnd,
    auth::{Actor, Role},
    events,
    http::{Json, Path, Query},
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};

use crate::{
    access::{AppState, Owner, acting_household, audit, may_manage},
    error::{ListingError, Problems, Result},
    inventory::StockLevels,
    reference::{ADMIN_VERSION, reference},
    sellers::{Point, check_point},
};

/// A certification on a listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Certification {
    /// Kind: a code from `/v1/certifications` (vietgap, globalgap, organic_vn, gi...).
    pub kind: String,
    /// Certificate or registration number.
    pub number: String,
    /// Who issued it.
    pub issuer: String,
    /// First day it is valid.
    pub valid_from: NaiveDate,
    /// Last day it is valid; not before `valid_from`.
    pub valid_until: NaiveDate,
}

/// What a seller writes to list a product.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListingInput {
    /// Vietnamese title, e.g. "Xoài cát Hòa Lộc".
    pub title: String,
    /// Vietnamese description.
    #[serde(default)]
    pub description: String,
    /// Category code from `/v1/categories`.
    pub category: String,
    /// Unit code from `/v1/units`.
    pub unit: String,
    /// Price per unit in đồng, above 0.
    pub price_vnd: Vnd,
    /// Smallest quantity a buyer may order (default 1).
    pub min_order: Option<Quantity>,
    /// Orders go up in steps of this (default 0.5).
    pub step: Option<Quantity>,
    /// Photo URLs (https), at most 10.
    #[serde(default)]
    pub photos: Vec<String>,
    /// Commune code (2025) where it grows.
    pub origin_commune: String,
    /// Where exactly, if known.
    pub origin_point: Option<Point>,
    /// Certifications.
    #[serde(default)]
    pub certifications: Vec<Certification>,
    /// OCOP stars, 3 to 5.
    pub ocop_stars: Option<i16>,
    /// Below this available quantity the seller is warned.
    pub low_stock_threshold: Option<Quantity>,
    /// `draft` (default) or `active`.
    pub status: Option<String>,
    /// List it under this cooperative (its manager only) instead of a household.
    pub cooperative_id: Option<CooperativeId>,
}

/// Changes to a listing; absent fields stay as they are.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListingPatch {
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// New unit.
    pub unit: Option<String>,
    /// New price.
    pub price_vnd: Option<Vnd>,
    /// New minimum order.
    pub min_order: Option<Quantity>,
    /// New step.
    pub step: Option<Quantity>,
    /// New photos.
    pub photos: Option<Vec<String>>,
    /// New origin commune.
    pub origin_commune: Option<String>,
    /// New origin point.
    pub origin_point: Option<Point>,
    /// New certifications (replace the old ones).
    pub certifications: Option<Vec<Certification>>,
    /// New OCOP stars.
    pub ocop_stars: Option<i16>,
    /// New low-stock threshold.
    pub low_stock_threshold: Option<Quantity>,
}

/// Who sells a listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SellerView {
    /// `household` or `cooperative`.
    pub kind: &'static str,
    /// The household's account id or the cooperative's id.
    pub id: uuid::Uuid,
    /// Its name.
    pub name: String,
}

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
    pub seller: SellerView,
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

const PHOTO_LIMIT: usize = 10;

fn check_listing(p: &mut Problems, l: &ListingInput) {
    let r = reference();
    let title = l.title.trim().chars().count();
    p.check(
        title == 0,
        "title",
        "required",
        "must not be empty",
        "không được để trống",
    );
    p.check(
        title > 200,
        "title",
        "too_long",
        "must be at most 200 characters",
        "tối đa 200 ký tự",
    );
    p.check(
        l.description.chars().count() > 5000,
        "description",
        "too_long",
        "must be at most 5000 characters",
        "tối đa 5000 ký tự",
    );
    p.verify("category", r.check_category(&l.category));
    p.verify("unit", r.check_unit(&l.unit));
    p.check(
        l.price_vnd.get() <= 0,
        "price_vnd",
        "not_positive",
        "must be more than 0 đồng",
        "phải lớn hơn 0 đồng",
    );
    for (field, q) in [
        ("min_order", l.min_order),
        ("step", l.step),
        ("low_stock_threshold", l.low_stock_threshold),
    ] {
        if let Some(q) = q {
            let bad = if field == "low_stock_threshold" {
                q.as_decimal().is_sign_negative()
            } else {
                !q.is_positive()
            };
            p.check(
                bad,
                field,
                "not_positive",
                "must be more than 0",
                "phải lớn hơn 0",
            );
        }
    }
    p.check(
        l.photos.len() > PHOTO_LIMIT,
        "photos",
        "too_many",
        "must have at most 10 photos",
        "tối đa 10 ảnh",
    );
    for (i, url) in l.photos.iter().enumerate() {
        let ok = (url.starts_with("https://") || url.starts_with("http://"))
            && url.len() <= 2000
            && !url.contains(char::is_whitespace);
        p.check(
            !ok,
            &format!("photos[{i}]"),
            "invalid_url",
            "must be an http(s) URL",
            "phải là địa chỉ http(s)",
        );
    }
    p.verify("origin_commune", r.check_commune(&l.origin_commune));
    check_point(p, "origin_point", l.origin_point);
    for (i, c) in l.certifications.iter().enumerate() {
        let f = |x: &str| format!("certifications[{i}].{x}");
        p.verify(f("kind"), r.check_certification(&c.kind));
        p.check(
            c.number.trim().is_empty(),
            &f("number"),
            "required",
            "must not be empty",
            "không được để trống",
        );
        p.check(
            c.issuer.trim().is_empty(),
            &f("issuer"),
            "required",
            "must not be empty",
            "không được để trống",
        );
        p.check(
            c.valid_until < c.valid_from,
            &f("valid_until"),
            "ends_before_start",
            "must not be before valid_from",
            "không được trước ngày bắt đầu hiệu lực",
        );
    }
    if let Some(stars) = l.ocop_stars {
        p.check(
            !(3..=5).contains(&stars),
            "ocop_stars",
            "out_of_range",
            "must be 3, 4 or 5",
            "phải là 3, 4 hoặc 5",
        );
    }
    if let Some(s) = &l.status {
        p.check(
            !matches!(s.as_str(), "draft" | "active"),
            "status",
            "invalid_status",
            "must be draft or active",
            "phải là draft hoặc active",
        );
    }
}

fn default_min_order() -> Quantity {
    "1".parse().expect("1 is a quantity")
}

fn default_step() -> Quantity {
    "0.5".parse().expect("0.5 is a quantity")
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

async fn write_certifications(
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

/// `listing.changed` with the whole listing, for search and other readers.
pub async fn emit_changed(conn: &mut PgConnection, view: &ListingView) -> Result<()> {
    events::emit(
        conn,
        "listing.changed",
        &view.id.to_string(),
        view.version,
        view,
    )
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ListingRow {
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

const LISTING_SELECT: &str = "SELECT l.id, l.household_id, l.cooperative_id, COALESCE(h.name, c.name) AS seller_name, l.title, l.description,
    l.category_code, l.unit_code, l.price_vnd, l.min_order, l.step, l.photos, l.origin_province, l.origin_commune, l.lat, l.lon,
    l.ocop_stars, l.status, l.low_stock_threshold, l.version, l.created_at, l.updated_at, s.on_hand, s.reserved
    FROM listings l JOIN stock s ON s.listing_id = l.id
    LEFT JOIN households h ON h.account_id = l.household_id LEFT JOIN cooperatives c ON c.id = l.cooperative_id";

async fn views(conn: &mut PgConnection, rows: Vec<ListingRow>) -> Result<Vec<ListingView>> {
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
                (Some(h), _) => ("household", h.0),
                (_, Some(c)) => ("cooperative", c.0),
                _ => ("household", uuid::Uuid::nil()),
            };
            ListingView {
                id: row.id,
                seller: SellerView {
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

/// Who owns a listing.
pub async fn owner_of(conn: &mut PgConnection, id: ListingId) -> Result<Owner> {
    let row: (Option<AccountId>, Option<CooperativeId>) =
        sqlx::query_as("SELECT household_id, cooperative_id FROM listings WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?
            .ok_or(ListingError::NotFound("listing"))?;
    Ok(match row {
        (Some(h), _) => Owner::Household(h),
        (_, Some(c)) => Owner::Cooperative(c),
        _ => return Err(ListingError::NotFound("listing")),
    })
}

/// The household an owner is, for the audit trail.
pub fn household_of(owner: Owner) -> Option<AccountId> {
    match owner {
        Owner::Household(h) => Some(h),
        Owner::Cooperative(_) => None,
    }
}

/// List a product: a household (or a helper or manager acting for it), or a cooperative's
/// manager for the cooperative.
#[utoipa::path(post, path = "/v1/listings", tag = "catalog", request_body = ListingInput,
    responses((status = 201, body = ListingView), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn create_listing(
    State(app): State<AppState>,
    actor: Actor,
    Json(l): Json<ListingInput>,
) -> Result<(StatusCode, AxumJson<ListingView>)> {
    let mut tx = app.pool.begin().await?;
    let owner = match l.cooperative_id {
        Some(c) => {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM cooperatives WHERE id = $1)",
            )
            .bind(c)
            .fetch_one(&mut *tx)
            .await?
            .then_some(())
            .ok_or(ListingError::NotFound("cooperative"))?;
            may_manage(&mut tx, &actor, Owner::Cooperative(c)).await?;
            Owner::Cooperative(c)
        }
        None => Owner::Household(acting_household(&mut tx, &actor).await?),
    };
    let view = insert_listing(&mut tx, &actor, owner, &l).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AxumJson(view)))
}

/// One listing. Hidden, draft and paused listings are shown to those who manage them only.
#[utoipa::path(get, path = "/v1/listings/{id}", tag = "catalog", params(("id" = String, Path)), responses((status = 200, body = ListingView), (status = 404, body = nongsan_shared::error::ProblemSchema)))]
pub async fn get_listing(
    State(app): State<AppState>,
    actor: Option<Actor>,
    Path(id): Path<ListingId>,
) -> Result<AxumJson<ListingView>> {
    let mut conn = app.pool.acquire().await?;
    let view = load_listing(&mut conn, id).await?;
    if view.status != "active" {
        let owner = owner_of(&mut conn, id).await?;
        let may = match &actor {
            Some(a) => may_manage(&mut conn, a, owner).await.is_ok(),
            None => false,
        };
        if !may {
            return Err(ListingError::NotFound("listing"));
        }
    }
    Ok(AxumJson(view))
}

/// Catalog filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListingFilter {
    /// Only this household's listings.
    pub household_id: Option<AccountId>,
    /// Only this cooperative's listings.
    pub cooperative_id: Option<CooperativeId>,
    /// Only this category (or its subcategories).
    pub category: Option<String>,
    /// Every status, for a seller reading its own listings (needs the right to manage them).
    #[serde(default)]
    pub all_statuses: bool,
    /// Listings after this id (the last id of the previous page).
    pub after: Option<ListingId>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
}

/// A page of listings.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListingPage {
    /// The listings, oldest first.
    pub items: Vec<ListingView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<ListingId>,
}

/// The catalog: active listings, newest last, filtered and paged.
#[utoipa::path(get, path = "/v1/listings", tag = "catalog", params(ListingFilter), responses((status = 200, body = ListingPage), (status = 422, body = nongsan_shared::error::ProblemSchema)))]
pub async fn list_listings(
    State(app): State<AppState>,
    actor: Option<Actor>,
    Query(f): Query<ListingFilter>,
) -> Result<AxumJson<ListingPage>> {
    let limit = f.limit.unwrap_or(20);
    let mut p = Problems::default();
    p.check(
        !(1..=100).contains(&limit),
        "limit",
        "out_of_range",
        "must be 1 to 100",
        "phải từ 1 đến 100",
    );
    if let Some(c) = &f.category {
        p.verify("category", reference().check_category(c));
    }
    p.finish()?;
    let mut conn = app.pool.acquire().await?;
    if f.all_statuses {
        let owner = match (f.household_id, f.cooperative_id) {
            (Some(h), None) => Owner::Household(h),
            (None, Some(c)) => Owner::Cooperative(c),
            _ => {
                return Err(ListingError::field(
                    "all_statuses",
                    nongsan_shared::invalid::Invalid::new(
                        "needs_one_seller",
                        "needs exactly one of household_id and cooperative_id",
                        "cần đúng một trong household_id và cooperative_id",
                    ),
                ));
            }
        };
        may_manage(&mut conn, &actor.ok_or(ListingError::Forbidden)?, owner).await?;
    }
    let rows = sqlx::query_as::<_, ListingRow>(&format!(
        "{LISTING_SELECT} WHERE ($1 OR l.status = 'active')
           AND ($2::uuid IS NULL OR l.household_id = $2) AND ($3::uuid IS NULL OR l.cooperative_id = $3)
           AND ($4::text IS NULL OR l.category_code = $4 OR l.category_code IN (SELECT unnest($5::text[])))
           AND ($6::uuid IS NULL OR l.id > $6)
         ORDER BY l.id LIMIT $7"
    ))
    .bind(f.all_statuses)
    .bind(f.household_id)
    .bind(f.cooperative_id)
    .bind(&f.category)
    .bind(f.category.as_deref().map(subcategories).unwrap_or_default())
    .bind(f.after)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let mut items = views(&mut conn, rows).await?;
    let next_after = (items.len() > usize::try_from(limit).unwrap_or(0))
        .then(|| {
            items.truncate(usize::try_from(limit).unwrap_or(0));
            items.last().map(|l| l.id)
        })
        .flatten();
    Ok(AxumJson(ListingPage { items, next_after }))
}

fn subcategories(code: &str) -> Vec<String> {
    reference()
        .categories
        .iter()
        .filter(|c| c.parent.as_deref() == Some(code))
        .map(|c| c.code.clone())
        .collect()
}

/// Change a listing (its owner, or one acting for it).
#[utoipa::path(patch, path = "/v1/listings/{id}", tag = "catalog", params(("id" = String, Path)), request_body = ListingPatch,
    responses((status = 200, body = ListingView), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn update_listing(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<ListingId>,
    Json(patch): Json<ListingPatch>,
) -> Result<AxumJson<ListingView>> {
    let mut tx = app.pool.begin().await?;
    let owner = owner_of(&mut tx, id).await?;
    may_manage(&mut tx, &actor, owner).await?;
    let cur = load_listing(&mut tx, id).await?;
    let threshold: Option<Quantity> =
        sqlx::query_scalar("SELECT low_stock_threshold FROM listings WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    let next = ListingInput {
        title: patch.title.unwrap_or(cur.title),
        description: patch.description.unwrap_or(cur.description),
        category: patch.category.unwrap_or(cur.category),
        unit: patch.unit.unwrap_or(cur.unit),
        price_vnd: patch.price_vnd.unwrap_or(cur.price_vnd),
        min_order: Some(patch.min_order.unwrap_or(cur.min_order)),
        step: Some(patch.step.unwrap_or(cur.step)),
        photos: patch.photos.unwrap_or(cur.photos),
        origin_commune: patch.origin_commune.unwrap_or(cur.origin.commune_code),
        origin_point: patch.origin_point.or(cur.origin.point),
        certifications: patch.certifications.unwrap_or(cur.certifications),
        ocop_stars: patch.ocop_stars.or(cur.ocop_stars),
        low_stock_threshold: patch.low_stock_threshold.or(threshold),
        status: None,
        cooperative_id: None,
    };
    let mut p = Problems::default();
    check_listing(&mut p, &next);
    p.finish()?;
    let commune = reference()
        .commune(&next.origin_commune)
        .expect("checked above");
    sqlx::query(
        "UPDATE listings SET title = $2, description = $3, category_code = $4, unit_code = $5, price_vnd = $6, min_order = $7, step = $8,
            photos = $9, origin_province = $10, origin_commune = $11, lat = $12, lon = $13, ocop_stars = $14, low_stock_threshold = $15,
            version = version + 1, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(next.title.trim())
    .bind(next.description.trim())
    .bind(&next.category)
    .bind(&next.unit)
    .bind(next.price_vnd)
    .bind(next.min_order)
    .bind(next.step)
    .bind(&next.photos)
    .bind(&commune.province_code)
    .bind(&next.origin_commune)
    .bind(next.origin_point.map(|p| p.lat))
    .bind(next.origin_point.map(|p| p.lon))
    .bind(next.ocop_stars)
    .bind(next.low_stock_threshold)
    .execute(&mut *tx)
    .await?;
    write_certifications(&mut tx, id, &next.certifications).await?;
    let view = load_listing(&mut tx, id).await?;
    audit(
        &mut tx,
        &actor,
        household_of(owner),
        "listing.updated",
        ("listing", id.to_string()),
        &serde_json::json!({ "version": view.version, "price_vnd": view.price_vnd }),
    )
    .await?;
    emit_changed(&mut tx, &view).await?;
    tx.commit().await?;
    Ok(AxumJson(view))
}

/// A status change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// `active`, `paused`, or (operators) `hidden`.
    pub status: String,
    /// Why, when an operator hides a listing.
    pub reason: Option<String>,
}

/// Publish, pause or (operators) hide a listing. A hidden listing is changed back by an
/// operator only.
#[utoipa::path(post, path = "/v1/listings/{id}/status", tag = "catalog", params(("id" = String, Path)), request_body = StatusChange,
    responses((status = 200, body = ListingView), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 409, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn change_listing_status(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<ListingId>,
    Json(c): Json<StatusChange>,
) -> Result<AxumJson<ListingView>> {
    let mut p = Problems::default();
    p.check(
        !matches!(c.status.as_str(), "active" | "paused" | "hidden"),
        "status",
        "invalid_status",
        "must be active, paused or hidden",
        "phải là active, paused hoặc hidden",
    );
    p.finish()?;
    let mut tx = app.pool.begin().await?;
    let owner = owner_of(&mut tx, id).await?;
    let current: String =
        sqlx::query_scalar("SELECT status FROM listings WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    let operator = actor.role == Role::Operator;
    if !operator {
        may_manage(&mut tx, &actor, owner).await?;
        if c.status == "hidden" || current == "hidden" {
            return Err(ListingError::Forbidden);
        }
    }
    if c.status == "hidden" && c.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(ListingError::field(
            "reason",
            nongsan_shared::invalid::Invalid::new(
                "required",
                "is required to hide a listing",
                "là bắt buộc khi ẩn tin",
            ),
        ));
    }
    sqlx::query("UPDATE listings SET status = $2, hidden_reason = $3, version = version + 1, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(&c.status)
        .bind(c.reason.as_deref().filter(|_| c.status == "hidden"))
        .execute(&mut *tx)
        .await?;
    let view = load_listing(&mut tx, id).await?;
    audit(
        &mut tx,
        &actor,
        household_of(owner),
        "listing.status_changed",
        ("listing", id.to_string()),
        &serde_json::json!({ "from": current, "to": c.status, "reason": c.reason }),
    )
    .await?;
    emit_changed(&mut tx, &view).await?;
    tx.commit().await?;
    Ok(AxumJson(view))
}
