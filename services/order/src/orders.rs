//! Orders after checkout: buyers and sellers read them; sellers confirm, ship, deliver or
//! decline; buyers cancel before shipping; payment events mark them paid. Every change is
//! recorded with who made it and told as an event, on which the listing service sells or
//! gives back the stock.

use axum::{Json as AxumJson, body::Bytes, extract::State};
use nongsan_shared::{
    CheckoutId, OrderId, ReservationId,
    auth::{Actor, Role},
    events::{self, Envelope, Handler},
    http::{Path, Query},
    paging,
};
use serde::Deserialize;
use sqlx::PgConnection;
use utoipa::IntoParams;

use crate::{
    AppState,
    error::{OrderError, Result},
    lifecycle::{Action, Lifecycle, Party},
    views::{OrderFilter, OrderView, load_order, load_orders},
};
use nongsan_shared::contracts::{
    events::{EventType, OrderEvent, PaymentEvent, RefundDue, RefundEvent},
    orders::OrderStatus,
    payments::{PaymentMethod, RefundReason, RefundStatus},
    reservations::ReservationView,
    sellers::SellerKind,
};

/// Applies an action to an order (in the caller's transaction): checks the transition,
/// records it, and emits its event. `actor` is `None` for nongsan itself.
pub async fn transition(
    conn: &mut PgConnection,
    id: OrderId,
    action: Action,
    actor: Option<&Actor>,
    reason: Option<&str>,
) -> Result<OrderView> {
    let row = sqlx::query!(
        r#"SELECT o.status AS "status: OrderStatus", o.checkout_id AS "checkout_id: CheckoutId",
                c.payment_method AS "payment_method: PaymentMethod", o.version
           FROM orders o JOIN checkouts c ON c.id = o.checkout_id WHERE o.id = $1 FOR UPDATE OF o"#,
        id.0,
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(OrderError::NotFound("order"))?;
    let (status, checkout, method, version) =
        (row.status, row.checkout_id, row.payment_method, row.version);
    let next = action
        .next(status)
        .ok_or_else(|| OrderError::InvalidTransition(status.as_str().to_owned()))?;
    let cash_collected = action == Action::Deliver && method == PaymentMethod::Cod;
    sqlx::query!(
        "UPDATE orders SET status = $2, cash_collected = cash_collected OR $3, reason = COALESCE($4, reason), version = version + 1, updated_at = now() WHERE id = $1",
        id.0,
        next as _,
        cash_collected,
        reason,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO order_transitions (id, order_id, from_status, to_status, actor_id, actor_role, on_behalf_of, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        uuid::Uuid::now_v7(),
        id.0,
        status as _,
        next as _,
        actor.map(|a| a.account_id) as _,
        actor.map(|a| a.role.as_str()).unwrap_or("system"),
        actor.and_then(|a| a.on_behalf_of) as _,
        reason,
    )
    .execute(&mut *conn)
    .await?;
    let view = load_order(conn, id).await?;
    {
        let reservation = sqlx::query_scalar!(
            r#"SELECT reservation_id AS "reservation_id: ReservationId" FROM checkouts WHERE id = $1"#,
            checkout.0,
        )
        .fetch_one(&mut *conn)
        .await?;
        let listing_ids: Vec<_> = view.lines.iter().map(|l| l.listing_id).collect();
        let body = OrderEvent {
            order_id: id,
            checkout_id: checkout,
            reservation_id: reservation,
            listing_ids,
            buyer_id: view.buyer_id,
            seller: view.seller.clone(),
            from: Some(status),
            status: next,
            action: Some(action),
            reason: reason.map(str::to_owned),
            payment_method: method,
            total_vnd: view.total,
            cash_collected: view.cash_collected,
        };
        events::emit(conn, action.event(), &id.to_string(), version + 1, &body).await?;
    }
    if let Some(reason) = refund_owed(method, status, next) {
        owe_refund(conn, &view, reason).await?;
    }
    Ok(view)
}

/// Whether moving an order from `from` to `to` owes its buyer the money paid for it: an
/// online order taken out of the paid path (cancelled, declined, returned) after its
/// payment arrived. Cash on delivery owes nothing: no money was taken.
pub fn refund_owed(
    method: PaymentMethod,
    from: OrderStatus,
    to: OrderStatus,
) -> Option<RefundReason> {
    use OrderStatus as S;
    if method == PaymentMethod::Cod {
        return None;
    }
    let was_paid = matches!(
        from,
        S::Paid | S::Confirmed | S::Shipped | S::DeliveryFailed
    );
    match to {
        S::Cancelled if was_paid => Some(RefundReason::Cancelled),
        S::Declined if was_paid => Some(RefundReason::Declined),
        S::Returned if was_paid => Some(RefundReason::Returned),
        _ => None,
    }
}

/// Tells the payment service it owes the buyer `order`'s total, for `reason` (in the
/// caller's transaction). One per order and reason: the payment service keys the refund
/// on them.
async fn owe_refund(
    conn: &mut PgConnection,
    order: &OrderView,
    reason: RefundReason,
) -> anyhow::Result<()> {
    let body = RefundDue {
        checkout_id: order.checkout_id,
        order_id: order.id,
        amount_vnd: order.total,
        reason,
    };
    events::emit(
        conn,
        EventType::RefundDue,
        &format!("{}:{}", order.id, reason.as_str()),
        1,
        &body,
    )
    .await?;
    Ok(())
}

/// Whether the actor may act for a seller (see [`nongsan_shared::runtime::Peers::may_act_for_seller`]).
async fn may_act_for_seller(
    app: &AppState,
    actor: &Actor,
    kind: SellerKind,
    id: uuid::Uuid,
) -> Result<bool> {
    Ok(app.peers.may_act_for_seller(actor, kind, id).await?)
}

/// How the actor relates to an order: its buyer, its seller, or a stranger (who gets 404,
/// so order ids cannot be probed).
async fn relation(app: &AppState, actor: &Actor, order: &OrderView) -> Result<Party> {
    if actor.account_id == order.buyer_id && actor.on_behalf_of.is_none() {
        return Ok(Party::Buyer);
    }
    if may_act_for_seller(app, actor, order.seller.kind, order.seller.id).await? {
        return Ok(Party::Seller);
    }
    Err(OrderError::NotFound("order"))
}

/// Adds the lots that filled each line, once the stock is sold. Best effort: without the
/// listing service the lines are shown without lots.
pub async fn attach_lots(app: &AppState, order: &mut OrderView) {
    attach_lots_of_checkout(app, std::slice::from_mut(order)).await;
}

/// [`attach_lots`] for the orders of one checkout: they share its reservation, read once.
pub async fn attach_lots_of_checkout(app: &AppState, orders: &mut [OrderView]) {
    use OrderStatus as S;
    let sold = |o: &OrderView| {
        matches!(
            o.status,
            S::Paid | S::Confirmed | S::Shipped | S::Delivered | S::DeliveryFailed | S::Returned
        )
    };
    let Some(checkout) = orders.iter().find(|o| sold(o)).map(|o| o.checkout_id) else {
        return;
    };
    let path = format!("/v1/internal/reservations/{checkout}");
    match app.peers.listing.get::<ReservationView>(&path).await {
        Ok(r) => {
            for order in orders
                .iter_mut()
                .filter(|o| sold(o) && o.checkout_id == checkout)
            {
                for line in &mut order.lines {
                    if let Some(reserved) = r.lines.iter().find(|l| l.listing_id == line.listing_id)
                        && !reserved.allocations.is_empty()
                    {
                        line.lots = Some(reserved.allocations.clone());
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(checkout.id = %checkout, error = %e, "cannot read the lots of an order now")
        }
    }
}

/// One order: its buyer or its seller (anyone else gets 404). Lines show their lots once
/// the stock is sold.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "order", params(("id" = String, Path)),
    responses((status = 200, body = OrderView), (status = 404, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn get_order(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<OrderId>,
) -> Result<AxumJson<OrderView>> {
    let mut conn = app.pool.acquire().await?;
    let mut order = load_order(&mut conn, id).await?;
    drop(conn);
    relation(&app, &actor, &order).await?;
    attach_lots(&app, &mut order).await;
    Ok(AxumJson(order))
}

/// Which orders to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrderQuery {
    /// Only in this status.
    pub status: Option<OrderStatus>,
    /// A seller's orders instead of the caller's purchases: `household` or `cooperative`.
    pub seller_kind: Option<SellerKind>,
    /// The seller's id (a household's account id, a cooperative's id).
    pub seller_id: Option<uuid::Uuid>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A page of orders, newest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    /// The orders.
    pub items: Vec<OrderView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// The caller's purchases, or (with `seller_kind` and `seller_id`) a seller's orders for
/// those who may act for it; newest first.
#[utoipa::path(get, path = "/v1/orders", tag = "order", params(OrderQuery),
    responses((status = 200, body = OrderPage), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn list_orders(
    State(app): State<AppState>,
    actor: Actor,
    Query(q): Query<OrderQuery>,
) -> Result<AxumJson<OrderPage>> {
    let mut p = nongsan_shared::Problems::default();
    let limit = paging::limit(&mut p, q.limit);
    // An order cursor holds the last order's time (microseconds) and id.
    let before = paging::position(&mut p, q.cursor.as_deref(), |s| {
        let (at, id) = s.strip_prefix("before:")?.split_once('/')?;
        let at = chrono::DateTime::from_timestamp_micros(at.parse().ok()?)?;
        Some((at, id.parse::<OrderId>().ok()?))
    });
    p.finish()?;
    let filter = match (q.seller_kind, q.seller_id) {
        (Some(kind), Some(id)) => {
            if !may_act_for_seller(&app, &actor, kind, id).await? {
                return Err(OrderError::Forbidden);
            }
            OrderFilter {
                seller: Some((kind, id)),
                status: q.status,
                ..Default::default()
            }
        }
        // The service identity buys nothing; a user route is not for it.
        (None, None) if actor.role == Role::Service => return Err(OrderError::Forbidden),
        (None, None) => OrderFilter {
            buyer: Some(actor.account_id),
            status: q.status,
            ..Default::default()
        },
        _ => {
            return Err(OrderError::Invalid(vec![nongsan_shared::FieldError::new(
                "seller_id",
                "needs_both",
                nongsan_shared::Text::new(
                    "seller_kind and seller_id go together",
                    "seller_kind và seller_id phải đi cùng nhau",
                ),
            )]));
        }
    };
    let filter = OrderFilter {
        before,
        limit: Some(paging::rows_to_fetch(limit)),
        ..filter
    };
    let mut conn = app.pool.acquire().await?;
    let mut items = load_orders(&mut conn, &filter).await?;
    let next_cursor = paging::next_cursor(&mut items, limit, |o| {
        format!("before:{}/{}", o.created_at.timestamp_micros(), o.id)
    });
    Ok(AxumJson(OrderPage { items, next_cursor }))
}

/// A reason, for declining or cancelling.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Why (at most 500 characters).
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// Act on an order: `confirm`, `ship`, `deliver`, `fail_delivery`, `return`, `decline` (the
/// seller; decline needs a reason) or `cancel` (the buyer, before shipping).
#[utoipa::path(post, path = "/v1/orders/{id}/{action}", tag = "order",
    params(("id" = String, Path), ("action" = crate::lifecycle::Action, Path)), request_body(content = ActionBody, description = "Optional"),
    responses((status = 200, body = OrderView), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 404, body = nongsan_shared::error::ProblemSchema),
        (status = 409, description = "invalid_transition", body = nongsan_shared::error::ProblemSchema),
        (status = 422, description = "No reason to decline, or a reason over 500 characters", body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn act_on_order(
    State(app): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(OrderId, Action)>,
    body: Bytes,
) -> Result<AxumJson<OrderView>> {
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        nongsan_shared::http::parse_json(&body)?
    };
    let reason = body
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    let order = {
        let mut conn = app.pool.acquire().await?;
        load_order(&mut conn, id).await?
    };
    let party = relation(&app, &actor, &order).await?;
    if action.party() != party {
        return Err(OrderError::Forbidden);
    }
    let mut p = nongsan_shared::Problems::default();
    p.check_reason("reason", reason);
    if !p.0.is_empty() {
        return Err(OrderError::Invalid(p.0));
    }
    if action == Action::Decline && reason.is_none() {
        return Err(OrderError::Invalid(vec![nongsan_shared::FieldError::new(
            "reason",
            "required",
            nongsan_shared::Text::new(
                "is required to decline an order",
                "là bắt buộc khi từ chối đơn",
            ),
        )]));
    }
    let mut tx = app.pool.begin().await?;
    let mut view = transition(&mut tx, id, action, Some(&actor), reason).await?;
    tx.commit().await?;
    attach_lots(&app, &mut view).await;
    Ok(AxumJson(view))
}

impl From<nongsan_shared::ApiError> for OrderError {
    fn from(e: nongsan_shared::ApiError) -> Self {
        OrderError::Invalid(e.field_errors().to_vec())
    }
}

/// `payment.succeeded`: the checkout's orders are paid. An order no longer waiting for the
/// payment (the checkout expired, the buyer cancelled or the seller declined before the
/// money came) cannot take it: its total is owed back (`order.refund_due`, not payable). If
/// the checkout is not stored yet (the event overtook it), the handler fails and the inbox
/// retries it later.
#[derive(Debug, Clone, Copy)]
pub struct MarkPaid;

#[async_trait::async_trait]
impl Handler for MarkPaid {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
        let paid: PaymentEvent = event.body()?;
        let orders = sqlx::query!(
            r#"SELECT id AS "id: OrderId", status AS "status: OrderStatus" FROM orders WHERE checkout_id = $1 ORDER BY id FOR UPDATE"#,
            paid.checkout_id.0,
        )
        .fetch_all(&mut *tx)
        .await?;
        anyhow::ensure!(
            !orders.is_empty(),
            "checkout {} is not stored yet",
            paid.checkout_id
        );
        for order in orders {
            if order.status == OrderStatus::PendingPayment {
                transition(tx, order.id, Action::MarkPaid, None, None)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            } else if matches!(
                order.status,
                OrderStatus::Expired | OrderStatus::Cancelled | OrderStatus::Declined
            ) && !was_paid_before(tx, order.id).await?
            {
                let view = load_order(tx, order.id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                owe_refund(tx, &view, RefundReason::NotPayable).await?;
            }
        }
        sqlx::query!(
            "UPDATE checkouts SET status = 'paid', updated_at = now() WHERE id = $1 AND status = 'pending_payment'",
            paid.checkout_id.0,
        )
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Whether the order was ever paid (a refund for it is then owed by its own transition).
async fn was_paid_before(tx: &mut PgConnection, order: OrderId) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM order_transitions WHERE order_id = $1 AND to_status = 'paid') AS "paid!""#,
        order.0,
    )
    .fetch_one(tx)
    .await?)
}

/// `payment.refunded`: the refund is shown on its order. A refund ends once, or fails after
/// it succeeded (the payment side's rule): one shown failed stays failed, whichever of its
/// events comes last.
#[derive(Debug, Clone, Copy)]
pub struct RecordRefund;

#[async_trait::async_trait]
impl Handler for RecordRefund {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
        let refund: RefundEvent = event.body()?;
        let Some(order) = refund.order_id else {
            return Ok(());
        };
        if refund.status == RefundStatus::Pending {
            return Ok(());
        }
        sqlx::query!(
            "INSERT INTO order_refunds (id, order_id, checkout_id, amount_vnd, reason, status) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status WHERE order_refunds.status <> 'failed'",
            refund.refund_id.0,
            order.0,
            refund.checkout_id.0,
            refund.amount_vnd as _,
            refund.reason as _,
            refund.status as _,
        )
        .execute(tx)
        .await?;
        Ok(())
    }
}
