//! Cooperatives and their member households.

use axum::{Json as AxumJson, extract::State, http::StatusCode};
use nongsan_shared::{
    AccountId, CooperativeId,
    auth::{Actor, Role},
    http::{Json, Path},
    reference::ADMIN_VERSION,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{
    access::{Owner, may_consent_for, may_manage},
    app::AppState,
    audit::audit,
    error::{ListingError, Problems, Result},
    sellers::profile::{AddressInput, check_address, check_name},
};

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
    /// Current member households (those that accepted; not those only invited).
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
    let row = sqlx::query!(
        r#"SELECT id AS "id: CooperativeId", name, tax_code, province_code, commune_code, street, manager_id AS "manager_id: AccountId"
           FROM cooperatives WHERE id = $1"#,
        id as _,
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ListingError::NotFound("cooperative"))?;
    let members = sqlx::query_scalar!(
        r#"SELECT household_id AS "household_id: AccountId" FROM cooperative_members
           WHERE cooperative_id = $1 AND left_at IS NULL AND status = 'active' ORDER BY joined_at"#,
        id as _,
    )
    .fetch_all(&mut *conn)
    .await?;
    let (id, name, tax_code, province_code, commune_code, street, manager_id) = (
        row.id,
        row.name,
        row.tax_code,
        row.province_code,
        row.commune_code,
        row.street,
        row.manager_id,
    );
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
    let res = sqlx::query!(
        "INSERT INTO cooperatives (id, name, tax_code, province_code, commune_code, admin_version, street, manager_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        id as _,
        c.name.trim(),
        c.tax_code.as_deref().map(str::trim),
        &c.address.province_code,
        &c.address.commune_code,
        ADMIN_VERSION,
        c.address.street.trim(),
        actor.account_id as _,
    )
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

/// Where a household stands with a cooperative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MembershipStatus {
    /// The manager invited it; it has not answered. The manager has no rights over it.
    Invited,
    /// It accepted (or an operator approved): the manager acts for it.
    Active,
    /// It declined.
    Declined,
}

impl MembershipStatus {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "invited" => Self::Invited,
            "active" => Self::Active,
            "declined" => Self::Declined,
            other => return Err(anyhow::anyhow!("unknown membership status {other:?}").into()),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Invited => "invited",
            Self::Active => "active",
            Self::Declined => "declined",
        }
    }
}

/// A household's membership of a cooperative.
#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipView {
    /// The cooperative.
    pub cooperative_id: CooperativeId,
    /// The household.
    pub household_id: AccountId,
    /// Invited, active or declined.
    pub status: MembershipStatus,
}

/// The manager invites a household to join. The household becomes a member (and the
/// manager gets rights over it) only when it accepts, or when an operator approves; a
/// household already a member stays one.
#[utoipa::path(post, path = "/v1/cooperatives/{id}/members", tag = "sellers", params(("id" = String, Path)), request_body = MemberInput,
    responses((status = 200, body = MembershipView), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 404, body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn add_member(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<CooperativeId>,
    Json(m): Json<MemberInput>,
) -> Result<AxumJson<MembershipView>> {
    let mut tx = app.pool.begin().await?;
    load_cooperative(&mut tx, id).await?;
    may_manage(&mut tx, &actor, Owner::Cooperative(id)).await?;
    let exists: bool = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM households WHERE account_id = $1) AS "exists!""#,
        m.household_id as _,
    )
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
    // A current member stays active; anyone else (new, left, declined) is invited.
    let status = sqlx::query_scalar!(
        "INSERT INTO cooperative_members (cooperative_id, household_id, status) VALUES ($1, $2, 'invited')
         ON CONFLICT (cooperative_id, household_id) DO UPDATE SET
             status = CASE WHEN cooperative_members.left_at IS NULL AND cooperative_members.status = 'active' THEN 'active' ELSE 'invited' END,
             joined_at = CASE WHEN cooperative_members.left_at IS NULL AND cooperative_members.status = 'active' THEN cooperative_members.joined_at ELSE now() END,
             left_at = NULL
         RETURNING status",
        id as _,
        m.household_id as _,
    )
    .fetch_one(&mut *tx)
    .await?;
    let status = MembershipStatus::parse(&status)?;
    if status == MembershipStatus::Invited {
        audit(
            &mut tx,
            &actor,
            Some(m.household_id),
            "cooperative.member_invited",
            ("cooperative", id.to_string()),
            &serde_json::json!({ "household_id": m.household_id }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(AxumJson(MembershipView {
        cooperative_id: id,
        household_id: m.household_id,
        status,
    }))
}

/// The current (not left) membership row of `household` in `coop`, locked.
async fn membership_for_update(
    conn: &mut PgConnection,
    coop: CooperativeId,
    household: AccountId,
) -> Result<Option<MembershipStatus>> {
    sqlx::query_scalar!(
        "SELECT status FROM cooperative_members WHERE cooperative_id = $1 AND household_id = $2 AND left_at IS NULL FOR UPDATE",
        coop as _,
        household as _,
    )
    .fetch_optional(conn)
    .await?
    .map(|s| MembershipStatus::parse(&s))
    .transpose()
}

async fn set_membership(
    conn: &mut PgConnection,
    coop: CooperativeId,
    household: AccountId,
    status: MembershipStatus,
) -> Result<()> {
    sqlx::query!(
        "UPDATE cooperative_members SET status = $3, joined_at = now() WHERE cooperative_id = $1 AND household_id = $2 AND left_at IS NULL",
        coop as _,
        household as _,
        status.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

fn not_invited() -> ListingError {
    ListingError::conflict(
        "not_invited",
        "The household has no open invitation from this cooperative.",
        "Hộ không có lời mời nào đang chờ từ hợp tác xã này.",
    )
}

/// Answers an invitation as the household (or its assigned helper, acting for it with the
/// household present; the audit trail records that the helper answered in its name).
async fn answer_invitation(
    app: &AppState,
    actor: &Actor,
    id: CooperativeId,
    household: AccountId,
    accept: bool,
) -> Result<AxumJson<MembershipView>> {
    let mut tx = app.pool.begin().await?;
    load_cooperative(&mut tx, id).await?;
    may_consent_for(&mut tx, actor, household).await?;
    let current = membership_for_update(&mut tx, id, household)
        .await?
        .ok_or(ListingError::NotFound("invitation"))?;
    let wanted = if accept {
        MembershipStatus::Active
    } else {
        MembershipStatus::Declined
    };
    match current {
        MembershipStatus::Invited => {
            set_membership(&mut tx, id, household, wanted).await?;
            let by_helper = actor.role == Role::Helper;
            audit(
                &mut tx,
                actor,
                Some(household),
                if accept {
                    "cooperative.invitation_accepted"
                } else {
                    "cooperative.invitation_declined"
                },
                ("cooperative", id.to_string()),
                &serde_json::json!({
                    "household_id": household,
                    "answered_by": if by_helper { "helper_with_household_present" } else { "household" },
                    "helper_id": by_helper.then_some(actor.account_id),
                }),
            )
            .await?;
        }
        same if same == wanted => {}
        _ => return Err(not_invited()),
    }
    tx.commit().await?;
    Ok(AxumJson(MembershipView {
        cooperative_id: id,
        household_id: household,
        status: wanted,
    }))
}

/// The household accepts a cooperative's invitation and becomes a member: from then on the
/// cooperative's manager acts for it. Its assigned helper may accept for it
/// (`X-On-Behalf-Of`), with the household present.
#[utoipa::path(post, path = "/v1/cooperatives/{id}/members/{household_id}/accept", tag = "sellers", params(("id" = String, Path), ("household_id" = String, Path)),
    responses((status = 200, body = MembershipView), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 404, body = nongsan_shared::error::ProblemSchema), (status = 409, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn accept_membership(
    State(app): State<AppState>,
    actor: Actor,
    Path((id, household)): Path<(CooperativeId, AccountId)>,
) -> Result<AxumJson<MembershipView>> {
    answer_invitation(&app, &actor, id, household, true).await
}

/// The household declines a cooperative's invitation: the manager gets no rights over it.
/// Its assigned helper may decline for it (`X-On-Behalf-Of`).
#[utoipa::path(post, path = "/v1/cooperatives/{id}/members/{household_id}/decline", tag = "sellers", params(("id" = String, Path), ("household_id" = String, Path)),
    responses((status = 200, body = MembershipView), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 404, body = nongsan_shared::error::ProblemSchema), (status = 409, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn decline_membership(
    State(app): State<AppState>,
    actor: Actor,
    Path((id, household)): Path<(CooperativeId, AccountId)>,
) -> Result<AxumJson<MembershipView>> {
    answer_invitation(&app, &actor, id, household, false).await
}

/// An operator approves an open invitation (for a household that agreed outside the app):
/// the household becomes a member. A declined invitation cannot be approved.
#[utoipa::path(post, path = "/v1/cooperatives/{id}/members/{household_id}/approve", tag = "sellers", params(("id" = String, Path), ("household_id" = String, Path)),
    responses((status = 200, body = MembershipView), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 404, body = nongsan_shared::error::ProblemSchema), (status = 409, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn approve_membership(
    State(app): State<AppState>,
    actor: Actor,
    Path((id, household)): Path<(CooperativeId, AccountId)>,
) -> Result<AxumJson<MembershipView>> {
    if actor.role != Role::Operator {
        return Err(ListingError::Forbidden);
    }
    let mut tx = app.pool.begin().await?;
    load_cooperative(&mut tx, id).await?;
    let current = membership_for_update(&mut tx, id, household)
        .await?
        .ok_or(ListingError::NotFound("invitation"))?;
    match current {
        MembershipStatus::Invited => {
            set_membership(&mut tx, id, household, MembershipStatus::Active).await?;
            audit(
                &mut tx,
                &actor,
                Some(household),
                "cooperative.membership_approved",
                ("cooperative", id.to_string()),
                &serde_json::json!({ "household_id": household }),
            )
            .await?;
        }
        MembershipStatus::Active => {}
        MembershipStatus::Declined => return Err(not_invited()),
    }
    tx.commit().await?;
    Ok(AxumJson(MembershipView {
        cooperative_id: id,
        household_id: household,
        status: MembershipStatus::Active,
    }))
}

/// The manager removes a member household (or withdraws an invitation), or the household
/// (or its assigned helper, acting for it) leaves the cooperative.
#[utoipa::path(delete, path = "/v1/cooperatives/{id}/members/{household_id}", tag = "sellers", params(("id" = String, Path), ("household_id" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 404, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn remove_member(
    State(app): State<AppState>,
    actor: Actor,
    Path((id, household)): Path<(CooperativeId, AccountId)>,
) -> Result<StatusCode> {
    let mut tx = app.pool.begin().await?;
    load_cooperative(&mut tx, id).await?;
    // The manager removes a member; the household (or its assigned helper for it) leaves:
    // the consent it gave to join, it can take back.
    let leaving = match may_manage(&mut tx, &actor, Owner::Cooperative(id)).await {
        Ok(()) => false,
        Err(ListingError::Forbidden) => {
            may_consent_for(&mut tx, &actor, household).await?;
            true
        }
        Err(e) => return Err(e),
    };
    let n = sqlx::query!(
        "UPDATE cooperative_members SET left_at = now() WHERE cooperative_id = $1 AND household_id = $2 AND left_at IS NULL",
        id as _,
        household as _,
    )
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
        if leaving {
            "cooperative.member_left"
        } else {
            "cooperative.member_removed"
        },
        ("cooperative", id.to_string()),
        &serde_json::json!({ "household_id": household }),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
