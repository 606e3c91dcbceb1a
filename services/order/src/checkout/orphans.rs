//! Reservations whose checkout never came into being. A checkout that dies between reserving
//! and storing (its process killed, its database away) leaves stock held with no checkout
//! behind it. The listing service asks, a minute after a reservation was made, whether its
//! checkout was stored; this answers, and the answer is final: a reservation without a
//! checkout is given up here, in the row a checkout claims when it is stored (see
//! [`super::store::insert_checkout`]), so none can be stored with it afterwards and its
//! stock can go back on sale. The two race for one primary key, so exactly one wins.

use axum::{Json as AxumJson, extract::State};
use nongsan_shared::{
    FieldError, ReservationId, Text,
    auth::{Actor, Role},
    contracts::reservations::{ReservationOutcomes, ReservationsAsked},
    http::Json,
};

use sqlx::PgPool;

use crate::{
    AppState,
    error::{OrderError, Result},
};

/// Reservations asked about at once, at most.
pub const MAX_ASKED: usize = 1_000;

/// For each reservation, whether a checkout was stored with it; those without one are given
/// up now, for good. Only the listing service asks.
#[utoipa::path(post, path = "/v1/internal/checkouts/reservation-outcomes", tag = "order", request_body = ReservationsAsked,
    responses((status = 200, body = ReservationOutcomes),
        (status = 403, description = "Not a service", body = nongsan_shared::error::ProblemSchema),
        (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn reservation_outcomes(
    State(app): State<AppState>,
    actor: Actor,
    Json(asked): Json<ReservationsAsked>,
) -> Result<AxumJson<ReservationOutcomes>> {
    if actor.role != Role::Service {
        return Err(OrderError::Forbidden);
    }
    if asked.reservation_ids.len() > MAX_ASKED {
        return Err(OrderError::Invalid(vec![FieldError::new(
            "reservation_ids",
            "too_many",
            Text::new(
                format!("at most {MAX_ASKED} at once"),
                format!("tối đa {MAX_ASKED} mỗi lần"),
            ),
        )]));
    }
    let ids: Vec<uuid::Uuid> = asked.reservation_ids.iter().map(|r| r.0).collect();
    let (placed, abandoned) = settle(&app.pool, ids).await?;
    Ok(AxumJson(ReservationOutcomes { placed, abandoned }))
}

/// Settles what became of these reservations, for good: (those a stored checkout holds,
/// those given up now or before). A checkout being stored right now holds its claim: this
/// waits for it to commit (then it is placed) or roll back (then it is given up).
pub async fn settle(
    pool: &PgPool,
    mut ids: Vec<uuid::Uuid>,
) -> Result<(Vec<ReservationId>, Vec<ReservationId>)> {
    // One order for every caller, so two of them cannot wait on each other.
    ids.sort_unstable();
    ids.dedup();
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "INSERT INTO reservation_claims (reservation_id, outcome) SELECT unnest($1::uuid[]), 'abandoned'
         ON CONFLICT (reservation_id) DO NOTHING",
        &ids,
    )
    .execute(&mut *tx)
    .await?;
    // A statement of its own: it sees the claims committed while the insert waited.
    let placed: Vec<ReservationId> = sqlx::query_scalar!(
        r#"SELECT reservation_id AS "id: ReservationId" FROM reservation_claims WHERE reservation_id = ANY($1) AND outcome = 'placed'"#,
        &ids,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let stored: std::collections::HashSet<ReservationId> = placed.iter().copied().collect();
    let abandoned = ids
        .into_iter()
        .map(ReservationId)
        .filter(|id| !stored.contains(id))
        .collect();
    Ok((placed, abandoned))
}
