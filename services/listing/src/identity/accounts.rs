//! Accounts: registration of buyers and households (self-service) and of households by a helper
//! or cooperative (with an activation code), and the account's own view.

use axum::{Json as AxumJson, extract::State, http::StatusCode};
use nongsan_shared::{
    AccountId, PhoneNumber,
    auth::{Actor, Role},
    http::Json,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::identity::store::{AccountView, insert_account};
use crate::{
    app::AppState,
    audit::audit,
    error::{ListingError, Problems, Result},
    identity::{
        activation::new_activation_code,
        passwords::{check_password, hash_password},
    },
    sellers::{
        households::{HouseholdView, insert_household},
        profile::{HouseholdInput, check_household, check_name},
    },
};

/// A self-registration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Vietnamese (0912 345 678) or E.164 phone number.
    #[schema(value_type = String, example = "0912345678")]
    pub phone: PhoneNumber,
    /// At least 8 characters.
    pub password: String,
    /// Name shown to others.
    pub display_name: String,
    /// `buyer` or `household`.
    pub role: Role,
    /// Required for a household: its farm.
    pub household: Option<HouseholdInput>,
}

/// The answer to a registration.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    /// The account.
    pub account: AccountView,
    /// The household profile, for a household.
    pub household: Option<HouseholdView>,
}

/// Register a buyer or a household.
#[utoipa::path(post, path = "/v1/accounts", tag = "identity", request_body = Registration,
    responses((status = 201, body = Registered), (status = 409, description = "Phone number taken", body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)))]
pub async fn register_account(
    State(app): State<AppState>,
    Json(r): Json<Registration>,
) -> Result<(StatusCode, AxumJson<Registered>)> {
    let mut p = Problems::default();
    check_password(&mut p, "password", &r.password);
    check_name(&mut p, "display_name", &r.display_name);
    p.check(
        !matches!(r.role, Role::Buyer | Role::Household),
        "role",
        "not_self_service",
        "must be buyer or household; other roles are granted by an operator",
        "phải là buyer hoặc household; các vai trò khác do quản trị viên cấp",
    );
    match (&r.role, &r.household) {
        (Role::Household, None) => p.check(
            true,
            "household",
            "required",
            "is required for a household",
            "là bắt buộc với hộ sản xuất",
        ),
        (Role::Household, Some(h)) => check_household(&mut p, "household", h),
        (_, Some(_)) => p.check(
            true,
            "household",
            "not_allowed",
            "is only for a household",
            "chỉ dành cho hộ sản xuất",
        ),
        _ => {}
    }
    p.finish()?;
    let hash = hash_password(r.password).await?;
    let mut tx = app.pool.begin().await?;
    let account = insert_account(
        &mut tx,
        &r.phone,
        Some(&hash),
        r.role,
        &r.display_name,
        None,
    )
    .await?;
    let household = match &r.household {
        Some(h) => Some(insert_household(&mut tx, account.id, h).await?),
        None => None,
    };
    let actor = Actor {
        account_id: account.id,
        role: account.role,
        on_behalf_of: None,
    };
    audit(
        &mut tx,
        &actor,
        None,
        "account.registered",
        ("account", account.id.to_string()),
        &serde_json::json!({ "role": account.role }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        AxumJson(Registered { account, household }),
    ))
}

/// The signed-in account.
#[utoipa::path(get, path = "/v1/me", tag = "identity", responses((status = 200, body = AccountView), (status = 401, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn get_me(State(app): State<AppState>, actor: Actor) -> Result<AxumJson<AccountView>> {
    let account = sqlx::query_as!(
        AccountView,
        r#"SELECT id AS "id: AccountId", phone, role AS "role: Role", display_name, status, created_at FROM accounts WHERE id = $1"#,
        actor.account_id as _,
    )
    .fetch_optional(&app.pool)
    .await?
    .ok_or(ListingError::NotFound("account"))?;
    Ok(AxumJson(account))
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
    let account = insert_account(
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
        sqlx::query!(
            "INSERT INTO helper_assignments (helper_id, household_id) VALUES ($1, $2)",
            actor.account_id as _,
            account.id as _,
        )
        .execute(&mut *tx)
        .await?;
    }
    let activation_code = new_activation_code(&mut tx, &app.keys, account.id).await?;
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
