//! Farm households: their profile, read and changed by the household or those who act for it.

use axum::{Json as AxumJson, extract::State};
use chrono::{DateTime, Utc};
use nongsan_shared::{
    AccountId, ListingId,
    auth::Actor,
    http::{Json, Path},
    reference::ADMIN_VERSION,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{
    access::{Owner, may_manage},
    app::AppState,
    audit::audit,
    error::{ListingError, Problems, Result},
    sellers::profile::{AddressInput, HouseholdInput, Point, check_household},
};

/// A household profile.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HouseholdView {
    /// The household's account id.
    pub id: AccountId,
    /// Its name.
    pub name: String,
    /// Its address.
    pub address: AddressInput,
    /// Where the farm is.
    pub farm_location: Option<Point>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

struct HouseholdRow {
    account_id: AccountId,
    name: String,
    province_code: String,
    commune_code: String,
    street: String,
    lat: Option<f64>,
    lon: Option<f64>,
    created_at: DateTime<Utc>,
}

fn household_view(r: HouseholdRow) -> HouseholdView {
    HouseholdView {
        id: r.account_id,
        name: r.name,
        address: AddressInput {
            province_code: r.province_code,
            commune_code: r.commune_code,
            street: r.street,
        },
        farm_location: r.lat.zip(r.lon).map(|(lat, lon)| Point { lat, lon }),
        created_at: r.created_at,
    }
}

/// Inserts a household profile for an account.
pub async fn insert_household(
    conn: &mut PgConnection,
    id: AccountId,
    h: &HouseholdInput,
) -> Result<HouseholdView> {
    let row = sqlx::query_as!(
        HouseholdRow,
        r#"INSERT INTO households (account_id, name, province_code, commune_code, admin_version, street, lat, lon)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING account_id AS "account_id: AccountId", name, province_code, commune_code, street, lat, lon, created_at"#,
        id as _,
        h.name.trim(),
        &h.address.province_code,
        &h.address.commune_code,
        ADMIN_VERSION,
        h.address.street.trim(),
        h.farm_location.map(|p| p.lat),
        h.farm_location.map(|p| p.lon),
    )
    .fetch_one(conn)
    .await?;
    Ok(household_view(row))
}

/// Loads a household.
pub async fn load_household(conn: &mut PgConnection, id: AccountId) -> Result<HouseholdView> {
    let row = sqlx::query_as!(
        HouseholdRow,
        r#"SELECT account_id AS "account_id: AccountId", name, province_code, commune_code, street, lat, lon, created_at
           FROM households WHERE account_id = $1"#,
        id as _,
    )
    .fetch_optional(conn)
    .await?
    .ok_or(ListingError::NotFound("household"))?;
    Ok(household_view(row))
}

/// Where a household is, as anyone may see it: province and commune, no street.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublicAddress {
    /// Province code.
    pub province_code: String,
    /// Commune code.
    pub commune_code: String,
}

/// A household as anyone may see it: its name, commune and province. The street and the
/// farm's location are for the household and those who act for it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublicHouseholdView {
    /// The household's account id.
    pub id: AccountId,
    /// Its name.
    pub name: String,
    /// Its province and commune.
    pub address: PublicAddress,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

impl From<HouseholdView> for PublicHouseholdView {
    fn from(h: HouseholdView) -> Self {
        Self {
            id: h.id,
            name: h.name,
            address: PublicAddress {
                province_code: h.address.province_code,
                commune_code: h.address.commune_code,
            },
            created_at: h.created_at,
        }
    }
}

/// A household profile as the caller may see it: the full profile for the household and
/// those who act for it, the public view for everyone else.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum HouseholdProfile {
    /// For the household, its assigned helper (acting for it), the manager of a cooperative
    /// it is a member of, and operators.
    Full(HouseholdView),
    /// For everyone else.
    Public(PublicHouseholdView),
}

/// A household's profile: the public view (name, commune, province) for anyone; the full
/// profile (street, farm location) for the household and those who act for it.
#[utoipa::path(get, path = "/v1/households/{id}", tag = "sellers", params(("id" = String, Path)),
    responses((status = 200, body = HouseholdProfile), (status = 404, body = nongsan_shared::error::ProblemSchema)))]
pub async fn get_household(
    State(app): State<AppState>,
    actor: Option<Actor>,
    Path(id): Path<AccountId>,
) -> Result<AxumJson<HouseholdProfile>> {
    let mut conn = app.pool.acquire().await?;
    let view = load_household(&mut conn, id).await?;
    let full = match &actor {
        None => false,
        Some(actor) => match may_manage(&mut conn, actor, Owner::Household(id)).await {
            Ok(()) => true,
            Err(ListingError::Forbidden) => false,
            Err(e) => return Err(e),
        },
    };
    Ok(AxumJson(if full {
        HouseholdProfile::Full(view)
    } else {
        HouseholdProfile::Public(view.into())
    }))
}

/// Changes to a household profile.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HouseholdPatch {
    /// New name.
    pub name: Option<String>,
    /// New address.
    pub address: Option<AddressInput>,
    /// New farm location; `null` takes it off.
    #[serde(default, deserialize_with = "nongsan_shared::patch::clearable")]
    #[schema(value_type = Option<Point>)]
    pub farm_location: Option<Option<Point>>,
}

/// The household (or one acting for it) updates its profile.
#[utoipa::path(patch, path = "/v1/households/{id}", tag = "sellers", params(("id" = String, Path)), request_body = HouseholdPatch,
    responses((status = 200, body = HouseholdView), (status = 403, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn update_household(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<AccountId>,
    Json(patch): Json<HouseholdPatch>,
) -> Result<AxumJson<HouseholdView>> {
    let mut tx = app.pool.begin().await?;
    // Locked before it is read, as a listing's change is: two changes at once both stand.
    sqlx::query!(
        "SELECT 1 AS locked FROM households WHERE account_id = $1 FOR NO KEY UPDATE",
        id as _,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let current = load_household(&mut tx, id).await?;
    may_manage(&mut tx, &actor, Owner::Household(id)).await?;
    let renamed = patch
        .name
        .as_deref()
        .is_some_and(|n| n.trim() != current.name);
    let next = HouseholdInput {
        name: patch.name.clone().unwrap_or(current.name),
        address: patch.address.clone().unwrap_or(current.address),
        farm_location: nongsan_shared::patch::apply(patch.farm_location, current.farm_location),
    };
    let mut p = Problems::default();
    check_household(&mut p, "", &next);
    Problems(
        p.0.into_iter()
            .map(|mut e| {
                e.field = e.field.trim_start_matches('.').to_owned();
                e
            })
            .collect(),
    )
    .finish()?;
    sqlx::query!(
        "UPDATE households SET name = $2, province_code = $3, commune_code = $4, street = $5, lat = $6, lon = $7, updated_at = now() WHERE account_id = $1",
        id as _,
        next.name.trim(),
        &next.address.province_code,
        &next.address.commune_code,
        next.address.street.trim(),
        next.farm_location.map(|p| p.lat),
        next.farm_location.map(|p| p.lon),
    )
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        &actor,
        Some(id),
        "household.updated",
        ("household", id.to_string()),
        &serde_json::json!({ "name": next.name }),
    )
    .await?;
    let mut renamed_pages = Vec::new();
    if renamed {
        // The seller's name is in every one of its listings' search documents (and found by
        // a search): all of them are written again.
        crate::search::dirty::mark_household(&mut tx, id).await?;
        renamed_pages = sqlx::query_scalar!(
            r#"SELECT id AS "id: ListingId" FROM listings WHERE household_id = $1"#,
            id as _,
        )
        .fetch_all(&mut *tx)
        .await?;
    }
    let view = load_household(&mut tx, id).await?;
    tx.commit().await?;
    // The seller's name is on every page of its listings, and on no other (a name sent again
    // unchanged keeps them). Other processes are told by PostgreSQL (`households_view`).
    for listing in renamed_pages {
        app.views.forget(listing);
    }
    Ok(AxumJson(view))
}
