//! Sellers: households (registered by themselves or by a community helper), cooperatives and
//! their members, and the audit trail a household reads of what was done in its name.

use axum::{
    Json as AxumJson,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use nongsan_shared::{
    AccountId, CooperativeId, PhoneNumber,
    auth::{Actor, Role},
    http::Json,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{
    access::{AppState, Owner, audit, may_manage},
    error::{ListingError, Problems, Result},
    identity::{self, HouseholdInput},
    reference::{ADMIN_VERSION, reference},
};

/// A point on the map (WGS 84).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// Latitude, −90 to 90.
    pub lat: f64,
    /// Longitude, −180 to 180.
    pub lon: f64,
}

/// An address in the 2025 administrative units.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressInput {
    /// Two-digit province code (2025).
    pub province_code: String,
    /// Five-digit commune code (2025), in that province.
    pub commune_code: String,
    /// Street, hamlet (thôn, ấp), house number.
    #[serde(default)]
    pub street: String,
}

/// Checks a display or household name.
pub fn check_name(p: &mut Problems, field: &str, name: &str) {
    let n = name.trim().chars().count();
    p.check(
        n == 0,
        field,
        "required",
        "must not be empty",
        "không được để trống",
    );
    p.check(
        n > 200,
        field,
        "too_long",
        "must be at most 200 characters",
        "tối đa 200 ký tự",
    );
}

/// Checks an address against the 2025 units.
pub fn check_address(p: &mut Problems, field: &str, a: &AddressInput) {
    for (part, reason) in reference().check_address(&a.province_code, &a.commune_code) {
        p.push(format!("{field}.{part}"), reason);
    }
    p.check(
        a.street.chars().count() > 300,
        &format!("{field}.street"),
        "too_long",
        "must be at most 300 characters",
        "tối đa 300 ký tự",
    );
}

/// Checks a point.
pub fn check_point(p: &mut Problems, field: &str, pt: Option<Point>) {
    if let Some(pt) = pt {
        let bad = !(-90.0..=90.0).contains(&pt.lat) || !(-180.0..=180.0).contains(&pt.lon);
        p.check(
            bad,
            field,
            "out_of_range",
            "must have lat in −90..90 and lon in −180..180",
            "vĩ độ phải trong −90..90 và kinh độ trong −180..180",
        );
    }
}

/// Checks a household profile.
pub fn check_household(p: &mut Problems, field: &str, h: &HouseholdInput) {
    check_name(p, &format!("{field}.name"), &h.name);
    check_address(p, &format!("{field}.address"), &h.address);
    check_point(p, &format!("{field}.farm_location"), h.farm_location);
}

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

type HouseholdRow = (
    AccountId,
    String,
    String,
    String,
    String,
    Option<f64>,
    Option<f64>,
    DateTime<Utc>,
);

fn household_view(r: HouseholdRow) -> HouseholdView {
    let (id, name, province_code, commune_code, street, lat, lon, created_at) = r;
    HouseholdView {
        id,
        name,
        address: AddressInput {
            province_code,
            commune_code,
            street,
        },
        farm_location: lat.zip(lon).map(|(lat, lon)| Point { lat, lon }),
        created_at,
    }
}

const HOUSEHOLD_COLUMNS: &str =
    "account_id, name, province_code, commune_code, street, lat, lon, created_at";

/// Inserts a household profile for an account.
pub async fn insert_household(
    conn: &mut PgConnection,
    id: AccountId,
    h: &HouseholdInput,
) -> Result<HouseholdView> {
    let row: HouseholdRow = sqlx::query_as(&format!(
        "INSERT INTO households (account_id, name, province_code, commune_code, admin_version, street, lat, lon)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {HOUSEHOLD_COLUMNS}"
    ))
    .bind(id)
    .bind(h.name.trim())
    .bind(&h.address.province_code)
    .bind(&h.address.commune_code)
    .bind(ADMIN_VERSION)
    .bind(h.address.street.trim())
    .bind(h.farm_location.map(|p| p.lat))
    .bind(h.farm_location.map(|p| p.lon))
    .fetch_one(conn)
    .await?;
    Ok(household_view(row))
}

/// A household to register on someone's behalf.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HouseholdRegistration {
    /// The household's phone number.
    #[schema(value_type = String)]
    pub phone: PhoneNumber,
    /// Name shown to buyers.
    pub display_name: String,
    /// The profile.
    pub household: HouseholdInput,
}

/// A household registered by a helper, with the code it activates its account with.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredHousehold {
    /// The profile.
    pub household: HouseholdView,
    /// One-time code (valid 14 days) the household uses at `/v1/accounts/activate` to set
    /// its own password. Shown once.
    pub activation_code: String,
}

/// A helper registers a household, which is then assigned to it.
#[utoipa::path(post, path = "/v1/households", tag = "sellers", request_body = HouseholdRegistration,
    responses((status = 201, body = RegisteredHousehold), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn register_household(
    State(app): State<AppState>,
    actor: Actor,
    Json(r): Json<HouseholdRegistration>,
) -> Result<(StatusCode, AxumJson<RegisteredHousehold>)> {
    if !matches!(actor.role, Role::Helper | Role::Operator) {
        return Err(ListingError::Forbidden);
    }
    let mut p = Problems::default();
    check_name(&mut p, "display_name", &r.display_name);
    check_household(&mut p, "household", &r.household);
    p.finish()?;
    let mut tx = app.pool.begin().await?;
    let account = identity::insert_account(
        &mut tx,
        &r.phone,
        None,
        Role::Household,
        &r.display_name,
        Some(actor.account_id),
    )
    .await?;
    let household = insert_household(&mut tx, account.id, &r.household).await?;
    if actor.role == Role::Helper {
        sqlx::query("INSERT INTO helper_assignments (helper_id, household_id) VALUES ($1, $2)")
            .bind(actor.account_id)
            .bind(account.id)
            .execute(&mut *tx)
            .await?;
    }
    let activation_code = identity::new_activation_code(&mut tx, account.id).await?;
    audit(
        &mut tx,
        &actor,
        Some(account.id),
        "household.registered",
        ("household", account.id.to_string()),
        &serde_json::json!({ "name": household.name }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        AxumJson(RegisteredHousehold {
            household,
            activation_code,
        }),
    ))
}

/// Loads a household.
pub async fn load_household(conn: &mut PgConnection, id: AccountId) -> Result<HouseholdView> {
    let row: HouseholdRow = sqlx::query_as(&format!(
        "SELECT {HOUSEHOLD_COLUMNS} FROM households WHERE account_id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(ListingError::NotFound("household"))?;
    Ok(household_view(row))
}

/// A household's public profile.
#[utoipa::path(get, path = "/v1/households/{id}", tag = "sellers", params(("id" = String, Path)), responses((status = 200, body = HouseholdView), (status = 404, body = nongsan_shared::error::ProblemSchema)))]
pub async fn get_household(
    State(app): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<AxumJson<HouseholdView>> {
    let mut conn = app.pool.acquire().await?;
    Ok(AxumJson(load_household(&mut conn, id).await?))
}

/// Changes to a household profile.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HouseholdPatch {
    /// New name.
    pub name: Option<String>,
    /// New address.
    pub address: Option<AddressInput>,
    /// New farm location.
    pub farm_location: Option<Point>,
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
    let current = load_household(&mut tx, id).await?;
    may_manage(&mut tx, &actor, Owner::Household(id)).await?;
    let next = HouseholdInput {
        name: patch.name.clone().unwrap_or(current.name),
        address: patch.address.clone().unwrap_or(current.address),
        farm_location: patch.farm_location.or(current.farm_location),
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
    sqlx::query("UPDATE households SET name = $2, province_code = $3, commune_code = $4, street = $5, lat = $6, lon = $7, updated_at = now() WHERE account_id = $1")
        .bind(id)
        .bind(next.name.trim())
        .bind(&next.address.province_code)
        .bind(&next.address.commune_code)
        .bind(next.address.street.trim())
        .bind(next.farm_location.map(|p| p.lat))
        .bind(next.farm_location.map(|p| p.lon))
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
    let view = load_household(&mut tx, id).await?;
    tx.commit().await?;
    Ok(AxumJson(view))
}

/// One recorded write.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct AuditEntry {
    /// Who did it.
    pub actor_id: AccountId,
    /// In which role.
    pub actor_role: String,
    /// For whom, when not for itself.
    pub on_behalf_of: Option<AccountId>,
    /// What, e.g. `listing.created`.
    pub action: String,
    /// Kind of thing changed.
    pub subject_type: String,
    /// Its id.
    pub subject_id: String,
    /// Details.
    pub details: serde_json::Value,
    /// When.
    pub at: DateTime<Utc>,
}

/// What was done by or in the name of a household, newest first (the household itself, or an
/// operator).
#[utoipa::path(get, path = "/v1/households/{id}/audit", tag = "sellers", params(("id" = String, Path)),
    responses((status = 200, body = [AuditEntry]), (status = 403, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn list_household_audit(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<AccountId>,
) -> Result<AxumJson<Vec<AuditEntry>>> {
    let own =
        actor.role == Role::Household && actor.account_id == id && actor.on_behalf_of.is_none();
    if !own && actor.role != Role::Operator {
        return Err(ListingError::Forbidden);
    }
    let rows = sqlx::query_as::<_, AuditEntry>(
        "SELECT actor_id, actor_role, on_behalf_of, action, subject_type, subject_id, details, at FROM audit_log
         WHERE on_behalf_of = $1 OR actor_id = $1 ORDER BY at DESC, id DESC LIMIT 500",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await?;
    Ok(AxumJson(rows))
}

/// A cooperative to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CooperativeInput {
    /// Name, e.g. "HTX Nông nghiệp Đơn Dương".
    pub name: String,
    /// Tax code (mã số thuế): 10 digits, or 10 digits, a dash and 3 digits.
    pub tax_code: Option<String>,
    /// Address.
    pub address: AddressInput,
}

/// A cooperative.
#[derive(Debug, Serialize, ToSchema)]
pub struct CooperativeView {
    /// Id.
    pub id: CooperativeId,
    /// Name.
    pub name: String,
    /// Tax code.
    pub tax_code: Option<String>,
    /// Address.
    pub address: AddressInput,
    /// The manager's account.
    pub manager_id: AccountId,
    /// Current member households.
    pub members: Vec<AccountId>,
}

fn valid_tax_code(t: &str) -> bool {
    let (main, branch) = t.split_once('-').unwrap_or((t, ""));
    main.len() == 10
        && main.bytes().all(|b| b.is_ascii_digit())
        && (branch.is_empty() && !t.contains('-')
            || branch.len() == 3 && branch.bytes().all(|b| b.is_ascii_digit()))
}

/// Loads a cooperative with its current members.
pub async fn load_cooperative(
    conn: &mut PgConnection,
    id: CooperativeId,
) -> Result<CooperativeView> {
    let row: (CooperativeId, String, Option<String>, String, String, String, AccountId) = sqlx::query_as(
        "SELECT id, name, tax_code, province_code, commune_code, street, manager_id FROM cooperatives WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ListingError::NotFound("cooperative"))?;
    let members = sqlx::query_scalar("SELECT household_id FROM cooperative_members WHERE cooperative_id = $1 AND left_at IS NULL ORDER BY joined_at")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    let (id, name, tax_code, province_code, commune_code, street, manager_id) = row;
    Ok(CooperativeView {
        id,
        name,
        tax_code,
        address: AddressInput {
            province_code,
            commune_code,
            street,
        },
        manager_id,
        members,
    })
}

/// A cooperative manager creates a cooperative.
#[utoipa::path(post, path = "/v1/cooperatives", tag = "sellers", request_body = CooperativeInput,
    responses((status = 201, body = CooperativeView), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn create_cooperative(
    State(app): State<AppState>,
    actor: Actor,
    Json(c): Json<CooperativeInput>,
) -> Result<(StatusCode, AxumJson<CooperativeView>)> {
    if actor.role != Role::CooperativeManager {
        return Err(ListingError::Forbidden);
    }
    let mut p = Problems::default();
    check_name(&mut p, "name", &c.name);
    check_address(&mut p, "address", &c.address);
    if let Some(t) = &c.tax_code {
        p.check(
            !valid_tax_code(t.trim()),
            "tax_code",
            "invalid_tax_code",
            "must be 10 digits, or 10 digits, a dash and 3 digits",
            "phải gồm 10 chữ số, hoặc 10 chữ số, dấu gạch và 3 chữ số",
        );
    }
    p.finish()?;
    let id = CooperativeId::new();
    let mut tx = app.pool.begin().await?;
    let res = sqlx::query(
        "INSERT INTO cooperatives (id, name, tax_code, province_code, commune_code, admin_version, street, manager_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(c.name.trim())
    .bind(c.tax_code.as_deref().map(str::trim))
    .bind(&c.address.province_code)
    .bind(&c.address.commune_code)
    .bind(ADMIN_VERSION)
    .bind(c.address.street.trim())
    .bind(actor.account_id)
    .execute(&mut *tx)
    .await;
    if let Err(sqlx::Error::Database(d)) = &res
        && d.constraint() == Some("cooperatives_tax_code_key")
    {
        return Err(ListingError::conflict(
            "tax_code_taken",
            "A cooperative with this tax code exists.",
            "Đã có hợp tác xã với mã số thuế này.",
        ));
    }
    res?;
    audit(
        &mut tx,
        &actor,
        None,
        "cooperative.created",
        ("cooperative", id.to_string()),
        &serde_json::json!({ "name": c.name }),
    )
    .await?;
    let view = load_cooperative(&mut tx, id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AxumJson(view)))
}

/// A cooperative and its members.
#[utoipa::path(get, path = "/v1/cooperatives/{id}", tag = "sellers", params(("id" = String, Path)), responses((status = 200, body = CooperativeView), (status = 404, body = nongsan_shared::error::ProblemSchema)))]
pub async fn get_cooperative(
    State(app): State<AppState>,
    Path(id): Path<CooperativeId>,
) -> Result<AxumJson<CooperativeView>> {
    let mut conn = app.pool.acquire().await?;
    Ok(AxumJson(load_cooperative(&mut conn, id).await?))
}

/// A household to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    /// The household's account id.
    pub household_id: AccountId,
}

/// The manager adds a member household.
#[utoipa::path(post, path = "/v1/cooperatives/{id}/members", tag = "sellers", params(("id" = String, Path)), request_body = MemberInput,
    responses((status = 200, body = CooperativeView), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn add_member(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<CooperativeId>,
    Json(m): Json<MemberInput>,
) -> Result<AxumJson<CooperativeView>> {
    let mut tx = app.pool.begin().await?;
    load_cooperative(&mut tx, id).await?;
    may_manage(&mut tx, &actor, Owner::Cooperative(id)).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM households WHERE account_id = $1)")
            .bind(m.household_id)
            .fetch_one(&mut *tx)
            .await?;
    if !exists {
        return Err(ListingError::field(
            "household_id",
            nongsan_shared::invalid::Invalid::new(
                "unknown_household",
                "is not a household",
                "không phải hộ sản xuất",
            ),
        ));
    }
    sqlx::query(
        "INSERT INTO cooperative_members (cooperative_id, household_id) VALUES ($1, $2)
         ON CONFLICT (cooperative_id, household_id) DO UPDATE SET left_at = NULL, joined_at = CASE WHEN cooperative_members.left_at IS NULL THEN cooperative_members.joined_at ELSE now() END",
    )
    .bind(id)
    .bind(m.household_id)
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        &actor,
        Some(m.household_id),
        "cooperative.member_added",
        ("cooperative", id.to_string()),
        &serde_json::json!({ "household_id": m.household_id }),
    )
    .await?;
    let view = load_cooperative(&mut tx, id).await?;
    tx.commit().await?;
    Ok(AxumJson(view))
}

/// The manager removes a member household.
#[utoipa::path(delete, path = "/v1/cooperatives/{id}/members/{household_id}", tag = "sellers", params(("id" = String, Path), ("household_id" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 404, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn remove_member(
    State(app): State<AppState>,
    actor: Actor,
    Path((id, household)): Path<(CooperativeId, AccountId)>,
) -> Result<StatusCode> {
    let mut tx = app.pool.begin().await?;
    load_cooperative(&mut tx, id).await?;
    may_manage(&mut tx, &actor, Owner::Cooperative(id)).await?;
    let n = sqlx::query("UPDATE cooperative_members SET left_at = now() WHERE cooperative_id = $1 AND household_id = $2 AND left_at IS NULL")
        .bind(id)
        .bind(household)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(ListingError::NotFound("member"));
    }
    audit(
        &mut tx,
        &actor,
        Some(household),
        "cooperative.member_removed",
        ("cooperative", id.to_string()),
        &serde_json::json!({ "household_id": household }),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
