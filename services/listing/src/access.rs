//! Who may act on what.
//!
//! A household acts for itself; a helper acts for the households assigned to it, saying so
//! with `X-On-Behalf-Of`; a cooperative manager acts for the cooperative and its current
//! members (households that accepted its invitation, or that an operator approved, never
//! one that is only invited), naming only a member in `X-On-Behalf-Of` on the cooperative's
//! own things; an operator may act for anyone. The order service asks the
//! same question through `/v1/internal/seller-access`.

use nongsan_shared::{
    AccountId, CooperativeId, ListingId,
    auth::{Actor, Role},
};
use sqlx::PgConnection;

use crate::{
    app::AppState,
    error::{ListingError, Result},
};
use nongsan_shared::contracts::{
    access::{SellerAccess, SellerAccessQuery},
    sellers::SellerKind,
};

/// Who sells a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A farm household.
    Household(AccountId),
    /// A cooperative, selling pooled stock.
    Cooperative(CooperativeId),
}

/// The household an actor is acting as when it creates something for a household: itself,
/// or the household named in `X-On-Behalf-Of` if it may act for it.
pub async fn acting_household(conn: &mut PgConnection, actor: &Actor) -> Result<AccountId> {
    let household = match actor.role {
        Role::Household if actor.on_behalf_of.is_none() => actor.account_id,
        Role::Helper | Role::CooperativeManager | Role::Operator => {
            actor.on_behalf_of.ok_or(ListingError::Forbidden)?
        }
        _ => return Err(ListingError::Forbidden),
    };
    may_manage(conn, actor, Owner::Household(household)).await?;
    Ok(household)
}

/// `Ok` when the actor may change things `owner` owns, else 403.
pub async fn may_manage(conn: &mut PgConnection, actor: &Actor, owner: Owner) -> Result<()> {
    let allowed = match (actor.role, owner) {
        (Role::Operator, _) => true,
        (Role::Household, Owner::Household(h)) => {
            actor.account_id == h && actor.on_behalf_of.is_none()
        }
        (Role::Helper, Owner::Household(h)) => {
            actor.on_behalf_of == Some(h) && is_assigned(conn, actor.account_id, h).await?
        }
        (Role::CooperativeManager, Owner::Household(h)) => {
            actor.on_behalf_of.is_none_or(|b| b == h)
                && manages_member(conn, actor.account_id, h).await?
        }
        // A household named on the cooperative's own things (pooling a member's lot) must be
        // a member: a manager who names a stranger is refused, not ignored.
        (Role::CooperativeManager, Owner::Cooperative(c)) => {
            manages(conn, actor.account_id, c).await?
                && match actor.on_behalf_of {
                    None => true,
                    Some(h) => is_member(conn, c, h).await?,
                }
        }
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ListingError::Forbidden)
    }
}

/// `Ok` when the actor may answer for `household` itself (accept or decline an invitation):
/// the household, or a helper assigned to it acting for it (`X-On-Behalf-Of`). Not a
/// manager, nor an operator (who approves instead).
pub async fn may_consent_for(
    conn: &mut PgConnection,
    actor: &Actor,
    household: AccountId,
) -> Result<()> {
    let allowed = match actor.role {
        Role::Household => actor.account_id == household && actor.on_behalf_of.is_none(),
        Role::Helper => {
            actor.on_behalf_of == Some(household)
                && is_assigned(conn, actor.account_id, household).await?
        }
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ListingError::Forbidden)
    }
}

async fn is_assigned(
    conn: &mut PgConnection,
    helper: AccountId,
    household: AccountId,
) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM helper_assignments WHERE helper_id = $1 AND household_id = $2) AS "exists!""#,
        helper as _,
        household as _,
    )
    .fetch_one(conn)
    .await?)
}

/// Whether `manager` manages cooperative `coop`.
pub async fn manages(
    conn: &mut PgConnection,
    manager: AccountId,
    coop: CooperativeId,
) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM cooperatives WHERE id = $1 AND manager_id = $2) AS "exists!""#,
        coop as _,
        manager as _,
    )
    .fetch_one(conn)
    .await?)
}

async fn manages_member(
    conn: &mut PgConnection,
    manager: AccountId,
    household: AccountId,
) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM cooperative_members m JOIN cooperatives c ON c.id = m.cooperative_id
         WHERE c.manager_id = $1 AND m.household_id = $2 AND m.left_at IS NULL AND m.status = 'active') AS "exists!""#,
        manager as _,
        household as _,
    )
    .fetch_one(conn)
    .await?)
}

/// Whether `household` is a current member of `coop`: it accepted the invitation (or an
/// operator approved it) and has not left. An invited household is not a member.
pub async fn is_member(
    conn: &mut PgConnection,
    coop: CooperativeId,
    household: AccountId,
) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM cooperative_members WHERE cooperative_id = $1 AND household_id = $2 AND left_at IS NULL AND status = 'active') AS "exists!""#,
        coop as _,
        household as _,
    )
    .fetch_one(conn)
    .await?)
}

/// Internal: may this actor act for this seller? (The order service asks before a seller
/// reads or changes its orders.)
#[utoipa::path(get, path = "/v1/internal/seller-access", tag = "sellers", params(SellerAccessQuery),
    responses((status = 200, body = SellerAccess), (status = 403, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn check_seller_access(
    axum::extract::State(app): axum::extract::State<AppState>,
    caller: Actor,
    nongsan_shared::http::Query(q): nongsan_shared::http::Query<SellerAccessQuery>,
) -> Result<axum::Json<SellerAccess>> {
    if caller.role != Role::Service {
        return Err(ListingError::Forbidden);
    }
    let owner = match q.seller_kind {
        SellerKind::Household => Owner::Household(AccountId(q.seller_id)),
        SellerKind::Cooperative => Owner::Cooperative(CooperativeId(q.seller_id)),
    };
    let actor = Actor {
        account_id: q.actor_id,
        role: q.role,
        on_behalf_of: q.on_behalf_of,
    };
    let mut conn = app.pool.acquire().await?;
    let allowed = match may_manage(&mut conn, &actor, owner).await {
        Ok(()) => true,
        Err(ListingError::Forbidden) => false,
        Err(e) => return Err(e),
    };
    Ok(axum::Json(SellerAccess { allowed }))
}

/// Who owns a listing.
pub async fn owner_of(conn: &mut PgConnection, id: ListingId) -> Result<Owner> {
    let row: (Option<AccountId>, Option<CooperativeId>) =
        sqlx::query!(
            r#"SELECT household_id AS "household_id: AccountId", cooperative_id AS "cooperative_id: CooperativeId" FROM listings WHERE id = $1"#,
            id as _,
        )
        .fetch_optional(conn)
        .await?
        .map(|r| (r.household_id, r.cooperative_id))
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
