//! The listing endpoints: create, read, page through, change, and change status.

use axum::{
    Json as AxumJson,
    body::Bytes,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use nongsan_shared::{
    AccountId, CooperativeId, ListingId, Quantity,
    auth::{Actor, Role},
    http::{Json, Path, Query},
    paging,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

use crate::{
    access::{Owner, acting_household, household_of, may_manage, owner_of},
    app::AppState,
    audit::audit,
    catalog::{
        cache::Ticket,
        input::{CheckedListing, ListingInput, ListingPatch},
        reference::reference,
        store::{
            ListingView, Selection, claim_gtin, emit_changed, insert_listing, load_listing,
            load_listings, page_bytes, select, select_ids, today_in_vietnam, views,
            write_certifications,
        },
    },
    error::{ListingError, Problems, Result},
};

/// List a product: a household (or a helper or manager acting for it), or a cooperative's
/// manager for the cooperative.
#[utoipa::path(post, path = "/v1/listings", tag = "catalog", request_body = ListingInput,
    responses((status = 201, body = ListingView), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 404, description = "not_found: no such cooperative", body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn create_listing(
    State(app): State<AppState>,
    actor: Actor,
    Json(l): Json<ListingInput>,
) -> Result<(StatusCode, AxumJson<ListingView>)> {
    let mut tx = app.pool.begin().await?;
    let owner = match l.cooperative_id {
        Some(c) => {
            sqlx::query_scalar!(
                r#"SELECT EXISTS (SELECT 1 FROM cooperatives WHERE id = $1) AS "exists!""#,
                c as _,
            )
            .fetch_one(&mut *tx)
            .await?
            .then_some(())
            .ok_or(ListingError::NotFound("cooperative"))?;
            may_manage(&mut tx, &actor, Owner::Cooperative(c)).await?;
            Owner::Cooperative(c)
        }
        None => Owner::Household(acting_household(&mut tx, &actor).await?),
    };
    let l = CheckedListing::try_from(l)?;
    let view = insert_listing(&mut tx, &actor, owner, &l).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AxumJson(view)))
}

/// One listing. Hidden, draft and paused listings are shown to those who manage them only.
/// An active listing's page is served from memory when it is kept there ([`cache`](crate::catalog::cache)).
#[utoipa::path(get, path = "/v1/listings/{id}", tag = "catalog", params(("id" = String, Path)), responses((status = 200, body = ListingView), (status = 404, body = nongsan_shared::error::ProblemSchema)))]
pub async fn get_listing(
    State(app): State<AppState>,
    actor: Option<Actor>,
    Path(id): Path<ListingId>,
) -> Result<Response> {
    let today = today_in_vietnam();
    if let Some(body) = app.views.get(id, today) {
        return Ok(json_body(body));
    }
    let ticket = app.views.ticket(id, today);
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
        return Ok(AxumJson(view).into_response());
    }
    drop(conn);
    let body = page_bytes(&view)?;
    app.views.put(ticket, body.clone());
    Ok(json_body(body))
}

/// A JSON body already serialised, answered as [`AxumJson`] answers.
fn json_body(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
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
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A page of listings.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListingPage {
    /// The listings, oldest first.
    pub items: Vec<ListingView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// The catalog: active listings, newest last, filtered and paged.
#[utoipa::path(get, path = "/v1/listings", tag = "catalog", params(ListingFilter), responses((status = 200, body = ListingPage),
    (status = 403, description = "forbidden: `all_statuses` for a seller the caller does not act for", body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)))]
pub async fn list_listings(
    State(app): State<AppState>,
    actor: Option<Actor>,
    Query(f): Query<ListingFilter>,
) -> Result<Response> {
    let mut p = Problems::default();
    let limit = paging::limit(&mut p, f.limit);
    let after = paging::position(&mut p, f.cursor.as_deref(), |s| {
        s.strip_prefix("after:")?.parse::<ListingId>().ok()
    });
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
    let selection = Selection {
        all_statuses: f.all_statuses,
        household_id: f.household_id,
        cooperative_id: f.cooperative_id,
        subcategories: f.category.as_deref().map(subcategories).unwrap_or_default(),
        category: f.category,
        after,
        limit: paging::rows_to_fetch(limit),
    };
    if f.all_statuses {
        // A seller's own listings, drafts and all: never kept in memory.
        let rows = select(&mut conn, &selection).await?;
        let mut items = views(rows);
        let next_cursor = paging::next_cursor(&mut items, limit, |l| format!("after:{}", l.id));
        return Ok(AxumJson(ListingPage { items, next_cursor }).into_response());
    }
    let mut ids = select_ids(&mut conn, &selection).await?;
    let next_cursor = paging::next_cursor(&mut ids, limit, |id| format!("after:{id}"));
    let items = active_pages(&app, &mut conn, &ids).await?;
    // As `ListingPage` serialises: the kept pages are its items.
    let mut body = Vec::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 64);
    body.extend_from_slice(b"{\"items\":[");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"],\"next_cursor\":");
    serde_json::to_writer(&mut body, &next_cursor).map_err(anyhow::Error::from)?;
    body.push(b'}');
    Ok(json_body(Bytes::from(body)))
}

/// The pages of these listings, in their order: from memory where kept, the rest read in one
/// statement (and kept, when active). A listing gone meanwhile is left out.
async fn active_pages(
    app: &AppState,
    conn: &mut PgConnection,
    ids: &[ListingId],
) -> Result<Vec<Bytes>> {
    let today = today_in_vietnam();
    let mut pages: Vec<Option<Bytes>> = ids.iter().map(|id| app.views.get(*id, today)).collect();
    let missing: Vec<ListingId> = ids
        .iter()
        .zip(&pages)
        .filter(|(_, p)| p.is_none())
        .map(|(id, _)| *id)
        .collect();
    if !missing.is_empty() {
        let mut tickets: HashMap<ListingId, Ticket> = missing
            .iter()
            .map(|id| (*id, app.views.ticket(*id, today)))
            .collect();
        let mut read: HashMap<ListingId, Bytes> = HashMap::with_capacity(missing.len());
        for view in load_listings(conn, &missing).await? {
            let body = page_bytes(&view)?;
            if let (true, Some(ticket)) = (view.status == "active", tickets.remove(&view.id)) {
                app.views.put(ticket, body.clone());
            }
            read.insert(view.id, body);
        }
        for (id, page) in ids.iter().zip(pages.iter_mut()) {
            if page.is_none() {
                *page = read.remove(id);
            }
        }
    }
    Ok(pages.into_iter().flatten().collect())
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
    // The row is locked before the listing is read: a change made at the same time waits
    // for this one to commit and merges over it, instead of writing back what it read
    // before (and so undoing this one). `NO KEY`: the rows that refer to the listing
    // (reservation lines, stock movements, lots) check it with a key-share lock, which this
    // one lets through, so checkouts and intakes of the listing do not wait for the change.
    let threshold = sqlx::query_scalar!(
        r#"SELECT low_stock_threshold AS "threshold: Quantity" FROM listings WHERE id = $1 FOR NO KEY UPDATE"#,
        id as _,
    )
    .fetch_one(&mut *tx)
    .await?;
    let cur = load_listing(&mut tx, id).await?;
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
        origin_point: nongsan_shared::patch::apply(patch.origin_point, cur.origin.point),
        certifications: patch.certifications.unwrap_or_else(|| {
            cur.certifications
                .into_iter()
                .map(|c| c.certification())
                .collect()
        }),
        ocop_stars: nongsan_shared::patch::apply(patch.ocop_stars, cur.ocop_stars),
        low_stock_threshold: nongsan_shared::patch::apply(patch.low_stock_threshold, threshold),
        status: None,
        cooperative_id: None,
        gtin: patch.gtin.or(cur.gtin),
    };
    let next = CheckedListing::try_from(next)?;
    nongsan_shared::failpoint::hit_async("listing.before_update").await?;
    claim_gtin(&mut tx, owner, next.gtin14().as_deref()).await?;
    sqlx::query!(
        "UPDATE listings SET title = $2, description = $3, category_code = $4, unit_code = $5, price_vnd = $6, min_order = $7, step = $8,
            photos = $9, origin_province = $10, origin_commune = $11, lat = $12, lon = $13, ocop_stars = $14, low_stock_threshold = $15,
            gtin = $16, version = version + 1, updated_at = now()
         WHERE id = $1",
        id as _,
        next.title.trim(),
        next.description.trim(),
        &next.category,
        &next.unit,
        next.price_vnd as _,
        next.min_order() as _,
        next.step() as _,
        &next.photos,
        next.origin_province(),
        &next.origin_commune,
        next.origin_point.map(|p| p.lat),
        next.origin_point.map(|p| p.lon),
        next.ocop_stars,
        next.low_stock_threshold as _,
        next.gtin14(),
    )
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
    app.views.forget(id);
    Ok(AxumJson(view))
}

/// A status change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// `active`, `paused`, or (operators) `hidden`.
    pub status: String,
    /// Why, when an operator hides a listing (at most 500 characters).
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// Publish, pause or (operators) hide a listing. A hidden listing is changed back by an
/// operator only.
#[utoipa::path(post, path = "/v1/listings/{id}/status", tag = "catalog", params(("id" = String, Path)), request_body = StatusChange,
    responses((status = 200, body = ListingView), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 409, body = nongsan_shared::error::ProblemSchema),
        (status = 422, description = "A bad status, or a reason over 500 characters", body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
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
    p.check_reason("reason", c.reason.as_deref());
    p.finish()?;
    let mut tx = app.pool.begin().await?;
    let owner = owner_of(&mut tx, id).await?;
    let current = sqlx::query_scalar!(
        "SELECT status FROM listings WHERE id = $1 FOR NO KEY UPDATE",
        id as _
    )
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
    sqlx::query!(
        "UPDATE listings SET status = $2, hidden_reason = $3, version = version + 1, updated_at = now() WHERE id = $1",
        id as _,
        &c.status,
        c.reason.as_deref().filter(|_| c.status == "hidden"),
    )
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
    app.views.forget(id);
    Ok(AxumJson(view))
}
