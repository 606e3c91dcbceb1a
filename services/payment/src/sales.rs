//! What the ledger learns of sales, and the rates it books them at.
//!
//! `stock.sold` (listing) brings an order's lines and the lots that filled them; each line
//! is stored with the commission rate in force then (the seller's own rate, else its
//! category's, else the configured default) and, for a cooperative, the cooperative's fee.
//! `order.delivered` (order) books the sale. Operators set commission rates; a
//! cooperative's manager sets its fee.

use axum::{Json as AxumJson, extract::State};
use nongsan_shared::{
    ApiError, FieldError, Problems, Quantity, Text,
    auth::{Actor, Role},
    contracts::{
        events::{OrderEvent, StockSold},
        sellers::SellerKind,
    },
    events::{Envelope, Handler},
    failpoint,
    http::{Json, Path},
    reference::reference,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{AppState, ledger, operator_only};

/// `stock.sold`: stores the order's lines with their rates and lots, and books them when the
/// order was delivered already.
#[derive(Debug, Clone, Copy)]
pub struct RecordSale {
    /// Commission when no rate is set, basis points.
    pub default_bps: u32,
}

#[async_trait::async_trait]
impl Handler for RecordSale {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
        let sold: StockSold = event.body()?;
        ledger::lock_order(tx, sold.order_id).await?;
        let coop_fee = if sold.seller.kind == SellerKind::Cooperative {
            Some(
                sqlx::query_scalar!(
                    "SELECT rate_bps FROM cooperative_fees WHERE cooperative_id = $1",
                    sold.seller.id
                )
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0),
            )
        } else {
            None
        };
        for line in &sold.lines {
            let rate = sqlx::query_scalar!(
                r#"SELECT COALESCE(
                       (SELECT rate_bps FROM seller_commission_rates WHERE seller_kind = $1 AND seller_id = $2),
                       (SELECT rate_bps FROM commission_rates WHERE category = $3),
                       $4) AS "rate!""#,
                sold.seller.kind.as_str(),
                sold.seller.id,
                line.category,
                i32::try_from(self.default_bps).unwrap_or(0),
            )
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query!(
                "INSERT INTO sale_lines (order_id, listing_id, title, category, unit, quantity, line_total, rate_bps, coop_fee_bps)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                sold.order_id.0,
                line.listing_id.0,
                line.title,
                line.category,
                line.unit,
                line.quantity as _,
                line.line_total as _,
                rate,
                coop_fee,
            )
            .execute(&mut *tx)
            .await?;
            // One row per lot code (a code is one lot of the listing).
            let mut lots: Vec<(String, Option<uuid::Uuid>, Quantity)> = Vec::new();
            for lot in &line.lots {
                match lots.iter_mut().find(|l| l.0 == lot.lot_code) {
                    Some(l) => l.2 = l.2.checked_add(lot.quantity).unwrap_or(l.2),
                    None => lots.push((
                        lot.lot_code.clone(),
                        lot.household_id.map(|h| h.0),
                        lot.quantity,
                    )),
                }
            }
            for (code, household, quantity) in lots {
                sqlx::query!(
                    "INSERT INTO sale_lots (order_id, listing_id, lot_code, household_id, quantity) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    sold.order_id.0,
                    line.listing_id.0,
                    code,
                    household,
                    quantity as _,
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        ledger::settle_order(tx, sold.order_id, "lines sold").await?;
        // For a test: the sale's transaction held open after it settled.
        failpoint::hit_async("payment.sale.after_settle").await?;
        Ok(())
    }
}

/// `order.delivered`: the sale is booked (and the cash, for cash on delivery); its money is
/// held for `hold_secs`, then available to pay out.
#[derive(Debug, Clone, Copy)]
pub struct RecordDelivery {
    /// The hold, seconds.
    pub hold_secs: u64,
}

#[async_trait::async_trait]
impl Handler for RecordDelivery {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
        let order: OrderEvent = event.body()?;
        let hold = chrono::Duration::seconds(i64::try_from(self.hold_secs).unwrap_or(i64::MAX / 2));
        let available_at = event.occurred_at.checked_add_signed(hold);
        ledger::lock_order(tx, order.order_id).await?;
        ledger::remember_order(tx, &order, Some((event.occurred_at, available_at))).await?;
        // For a test: the delivery's new row left uncommitted a while before it settles.
        failpoint::hit_async("payment.delivery.before_settle").await?;
        ledger::settle_order(tx, order.order_id, "delivered").await?;
        Ok(())
    }
}

/// A rate in basis points (1/100 of a percent: 500 is 5%).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateRequest {
    /// 0 to 10000.
    pub rate_bps: i32,
}

fn checked_rate(r: &RateRequest) -> Result<i32, ApiError> {
    let mut p = Problems::new();
    p.check(
        !(0..=10_000).contains(&r.rate_bps),
        "rate_bps",
        "out_of_range",
        "must be 0 to 10000 basis points (0% to 100%)",
        "phải từ 0 đến 10000 phần vạn (0% đến 100%)",
    );
    p.finish()?;
    Ok(r.rate_bps)
}

/// The commission rates in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommissionRates {
    /// When neither the category nor the seller has one, basis points.
    pub default_bps: u32,
    /// By category.
    pub categories: Vec<CategoryRate>,
    /// Sellers' own rates, which win over their categories'.
    pub sellers: Vec<SellerRate>,
}

/// A category's rate.
#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryRate {
    /// The category code.
    pub category: String,
    /// Basis points.
    pub rate_bps: i32,
}

/// A seller's own rate.
#[derive(Debug, Serialize, ToSchema)]
pub struct SellerRate {
    /// Household or cooperative.
    pub seller_kind: SellerKind,
    /// Its id.
    pub seller_id: uuid::Uuid,
    /// Basis points.
    pub rate_bps: i32,
}

/// The commission rates (an operator's).
#[utoipa::path(get, path = "/v1/payments/commission", tag = "payment",
    responses((status = 200, body = CommissionRates), (status = 403, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn list_rates(
    State(app): State<AppState>,
    actor: Actor,
) -> Result<AxumJson<CommissionRates>, ApiError> {
    operator_only(&actor)?;
    let mut conn = app.pool.acquire().await?;
    let categories = sqlx::query_as!(
        CategoryRate,
        "SELECT category, rate_bps FROM commission_rates ORDER BY category"
    )
    .fetch_all(&mut *conn)
    .await?;
    let sellers = sqlx::query!(
        r#"SELECT seller_kind AS "seller_kind: SellerKind", seller_id, rate_bps FROM seller_commission_rates ORDER BY seller_kind, seller_id LIMIT 10000"#
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| SellerRate {
        seller_kind: r.seller_kind,
        seller_id: r.seller_id,
        rate_bps: r.rate_bps,
    })
    .collect();
    Ok(AxumJson(CommissionRates {
        default_bps: app.settings.commission_default_bps,
        categories,
        sellers,
    }))
}

/// Sets a category's commission rate (an operator's); lines sold from now on take it.
#[utoipa::path(put, path = "/v1/payments/commission/categories/{code}", tag = "payment",
    params(("code" = String, Path, description = "A category code of `/v1/categories`")),
    request_body = RateRequest,
    responses((status = 200, body = CategoryRate), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 404, description = "No such category", body = nongsan_shared::error::ProblemSchema),
        (status = 422, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn set_category_rate(
    State(app): State<AppState>,
    actor: Actor,
    Path(code): Path<String>,
    Json(req): Json<RateRequest>,
) -> Result<AxumJson<CategoryRate>, ApiError> {
    operator_only(&actor)?;
    if !reference().categories.iter().any(|c| c.code == code) {
        return Err(ApiError::not_found("category"));
    }
    let rate = checked_rate(&req)?;
    sqlx::query!(
        "INSERT INTO commission_rates (category, rate_bps, set_by) VALUES ($1, $2, $3)
         ON CONFLICT (category) DO UPDATE SET rate_bps = EXCLUDED.rate_bps, set_by = EXCLUDED.set_by, updated_at = now()",
        code,
        rate,
        actor.account_id.0,
    )
    .execute(&app.pool)
    .await?;
    tracing::info!(category = %code, rate_bps = rate, operator = %actor.account_id, "commission rate set");
    Ok(AxumJson(CategoryRate {
        category: code,
        rate_bps: rate,
    }))
}

/// Sets a seller's own commission rate (an operator's), which wins over its categories'.
#[utoipa::path(put, path = "/v1/payments/commission/sellers/{kind}/{id}", tag = "payment",
    params(("kind" = SellerKind, Path, description = "household or cooperative"), ("id" = uuid::Uuid, Path, description = "The seller")),
    request_body = RateRequest,
    responses((status = 200, body = SellerRate), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 422, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn set_seller_rate(
    State(app): State<AppState>,
    actor: Actor,
    Path((kind, id)): Path<(SellerKind, uuid::Uuid)>,
    Json(req): Json<RateRequest>,
) -> Result<AxumJson<SellerRate>, ApiError> {
    operator_only(&actor)?;
    let rate = checked_rate(&req)?;
    sqlx::query!(
        "INSERT INTO seller_commission_rates (seller_kind, seller_id, rate_bps, set_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (seller_kind, seller_id) DO UPDATE SET rate_bps = EXCLUDED.rate_bps, set_by = EXCLUDED.set_by, updated_at = now()",
        kind.as_str(),
        id,
        rate,
        actor.account_id.0,
    )
    .execute(&app.pool)
    .await?;
    tracing::info!(seller.kind = kind.as_str(), seller.id = %id, rate_bps = rate, operator = %actor.account_id, "seller commission rate set");
    Ok(AxumJson(SellerRate {
        seller_kind: kind,
        seller_id: id,
        rate_bps: rate,
    }))
}

/// A cooperative's fee on its members' sales.
#[derive(Debug, Serialize, ToSchema)]
pub struct CooperativeFee {
    /// The cooperative.
    pub cooperative_id: uuid::Uuid,
    /// Basis points.
    pub rate_bps: i32,
}

/// Sets the cooperative's fee on what its member households' lots sell for (its manager's,
/// or an operator's); lines sold from now on take it.
#[utoipa::path(put, path = "/v1/payments/cooperatives/{id}/fee", tag = "payment",
    params(("id" = uuid::Uuid, Path, description = "The cooperative")),
    request_body = RateRequest,
    responses((status = 200, body = CooperativeFee), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 422, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn set_cooperative_fee(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<uuid::Uuid>,
    Json(req): Json<RateRequest>,
) -> Result<AxumJson<CooperativeFee>, ApiError> {
    let allowed = match actor.role {
        Role::Operator => true,
        Role::CooperativeManager => {
            app.peers
                .may_act_for_seller(&actor, SellerKind::Cooperative, id)
                .await?
        }
        _ => false,
    };
    if !allowed {
        return Err(ApiError::forbidden());
    }
    let rate = checked_rate(&req)?;
    sqlx::query!(
        "INSERT INTO cooperative_fees (cooperative_id, rate_bps, set_by) VALUES ($1, $2, $3)
         ON CONFLICT (cooperative_id) DO UPDATE SET rate_bps = EXCLUDED.rate_bps, set_by = EXCLUDED.set_by, updated_at = now()",
        id,
        rate,
        actor.account_id.0,
    )
    .execute(&app.pool)
    .await?;
    tracing::info!(cooperative = %id, rate_bps = rate, actor = %actor.account_id, "cooperative fee set");
    Ok(AxumJson(CooperativeFee {
        cooperative_id: id,
        rate_bps: rate,
    }))
}

/// A field error for a bad value.
pub(crate) fn bad(field: &str, code: &'static str, en: &str, vi: &str) -> ApiError {
    ApiError::validation(vec![FieldError::new(field, code, Text::new(en, vi))])
}
