//! The checkout endpoints: check out a basket, read a checkout, list the buyer's.

use axum::{
    Json as AxumJson,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use nongsan_shared::{
    CheckoutId,
    auth::{Actor, Role},
    http::{Json, Path},
};

use super::{
    request::{CheckoutRequest, NewCheckout, PaymentMethod},
    saga, store,
};
use crate::{
    AppState,
    error::{OrderError, Result},
    idempotency::{self, Claim, Claimed, IdempotencyKey},
    orders::attach_lots_of_checkout,
    views::{CheckoutView, load_checkout, load_checkouts},
};

/// Check out a basket: one checkout, one order per seller.
#[utoipa::path(post, path = "/v1/checkouts", tag = "order", request_body = CheckoutRequest,
    params(("Idempotency-Key" = String, Header, description = "Required; the same key returns the same checkout")),
    responses(
        (status = 201, body = CheckoutView), (status = 200, description = "The checkout made earlier with this key", body = CheckoutView),
        (status = 409, description = "insufficient_stock, listing_unavailable, reservation_expired, idempotency_key_in_use", body = nongsan_shared::error::ProblemSchema),
        (status = 422, description = "validation_failed, idempotency_key_reused", body = nongsan_shared::error::ProblemSchema),
        (status = 503, description = "The listing or payment service is unavailable; nothing was ordered", body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn create_checkout(
    State(app): State<AppState>,
    actor: Actor,
    client: nongsan_shared::http::ClientAddr,
    headers: HeaderMap,
    Json(request): Json<CheckoutRequest>,
) -> Result<(StatusCode, AxumJson<serde_json::Value>)> {
    if actor.role != Role::Buyer {
        return Err(OrderError::Forbidden);
    }
    let key = IdempotencyKey::try_from(&headers)?;
    // The claim hashes the request as sent; the saga sees only its checked form.
    let claim = Claim::new(actor.account_id, key, &request)?;
    let checkout = NewCheckout::try_from(request)?;
    // From the claim on, the checkout runs to its end whether or not its buyer is still
    // there: a request dropped half-way (its connection closed) would leave the key claimed
    // and the stock reserved, and the buyer's retry with the key would wait, then be refused.
    // Finished, the retry gets its answer.
    nongsan_shared::telemetry::run_to_completion(async move {
        let cod = checkout.payment_method == PaymentMethod::Cod;
        let (checkout_id, open_cod, hold) = match idempotency::claim(&app.hot, &claim, cod).await? {
            Claimed::Done(answer) => return Ok((StatusCode::OK, AxumJson(answer))),
            Claimed::Mine(id, open_cod, hold) => (id, open_cod, hold),
        };
        match saga::place(
            &app,
            &actor,
            checkout_id,
            &claim,
            &checkout,
            open_cod,
            client.0,
        )
        .await
        {
            Ok((_, Some(answer))) => Ok((StatusCode::CREATED, AxumJson(answer))),
            Ok((view, None)) => {
                let answer = serde_json::to_value(&view).map_err(anyhow::Error::from)?;
                if !idempotency::complete(&app.pool, &claim, checkout_id, &answer).await? {
                    saga::abandon(&app, checkout_id).await;
                    return Err(OrderError::taken_over());
                }
                Ok((StatusCode::CREATED, AxumJson(answer)))
            }
            Err(e @ OrderError::ReservationUnknown(_)) => {
                idempotency::leave_for_retry(&app.pool, &claim, hold).await;
                Err(e)
            }
            Err(e) => {
                idempotency::unclaim(&app.pool, &claim, hold).await;
                Err(e)
            }
        }
    })
    .await?
}

/// A checkout: its buyer's, or any for an operator (support); anyone else gets 404.
#[utoipa::path(get, path = "/v1/checkouts/{id}", tag = "order", params(("id" = String, Path)),
    responses((status = 200, body = CheckoutView), (status = 404, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn get_checkout(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<CheckoutId>,
) -> Result<AxumJson<CheckoutView>> {
    let mut conn = app.pool.acquire().await?;
    let buyer = store::buyer_of(&mut conn, id).await?;
    let readable = match buyer {
        Some(_) if actor.role == Role::Operator => true,
        Some(buyer) => buyer == actor.account_id && actor.on_behalf_of.is_none(),
        None => false,
    };
    if !readable {
        return Err(OrderError::NotFound("checkout"));
    }
    let mut view = load_checkout(&mut conn, id).await?;
    drop(conn);
    attach_lots_of_checkout(&app, &mut view.orders).await;
    Ok(AxumJson(view))
}

/// The buyer's checkouts, newest first.
#[utoipa::path(get, path = "/v1/checkouts", tag = "order", params(CheckoutPaging),
    responses((status = 200, body = CheckoutPage), (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn list_checkouts(
    State(app): State<AppState>,
    actor: Actor,
    nongsan_shared::http::Query(q): nongsan_shared::http::Query<CheckoutPaging>,
) -> Result<AxumJson<CheckoutPage>> {
    let mut p = nongsan_shared::Problems::default();
    let limit = nongsan_shared::paging::limit(&mut p, q.limit);
    let before = nongsan_shared::paging::position(&mut p, q.cursor.as_deref(), |s| {
        s.strip_prefix("before:")?.parse::<CheckoutId>().ok()
    });
    p.finish()?;
    if actor.role == Role::Service {
        // The service identity buys nothing; a user route is not for it.
        return Err(OrderError::Forbidden);
    }
    let mut conn = app.pool.acquire().await?;
    let mut ids = store::latest_of(
        &mut conn,
        actor.account_id,
        before,
        nongsan_shared::paging::rows_to_fetch(limit),
    )
    .await?;
    let next_cursor =
        nongsan_shared::paging::next_cursor(&mut ids, limit, |id| format!("before:{id}"));
    let items = load_checkouts(&mut conn, &ids).await?;
    Ok(AxumJson(CheckoutPage { items, next_cursor }))
}

/// Paging of the buyer's checkouts.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CheckoutPaging {
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A page of checkouts, newest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CheckoutPage {
    /// The checkouts.
    pub items: Vec<CheckoutView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}
