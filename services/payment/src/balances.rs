//! What a seller reads of its money: its balance (pending, held, available, in a payout,
//! paid out), what a cooperative owes each member household (and what a household is owed
//! by its cooperatives), a statement of every sold line for a date range as JSON or CSV,
//! and the bank account its payouts go to.
//!
//! A seller reads its own; a helper reads for the household it is assigned to; a
//! cooperative's manager reads its cooperative's and its member households'; an operator
//! reads any. The listing service decides who may act for whom.

use std::collections::BTreeMap;

use axum::{
    Json as AxumJson,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Datelike as _, FixedOffset, NaiveDate, Utc};
use nongsan_shared::{
    ApiError, Problems, Quantity,
    auth::{Actor, Role},
    contracts::sellers::SellerKind,
    http::{Json, Path, Query},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{AppState, ledger};

/// Vietnam's time (UTC+7): statement dates are days there.
fn vietnam() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600)
        .unwrap_or_else(|| FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()))
}

/// May the actor read this seller's money?
async fn may_read(
    app: &AppState,
    actor: &Actor,
    kind: SellerKind,
    id: uuid::Uuid,
) -> Result<(), ApiError> {
    if app.peers.may_act_for_seller(actor, kind, id).await? {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// One balance, as its holder reads it.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct Amounts {
    /// Paid by the buyer, not yet delivered (đồng).
    pub pending_vnd: i64,
    /// Delivered, within the hold.
    pub held_vnd: i64,
    /// Delivered, past the hold: what the next payout batch takes (for a seller's own
    /// balance, less the cash it owes first: see `next_payout_vnd`).
    pub available_vnd: i64,
    /// In a payout batch, not yet confirmed by the bank.
    pub in_payout_vnd: i64,
    /// Paid out so far.
    pub paid_out_vnd: i64,
}

/// What a cooperative owes one member household (or a household is owed by one cooperative).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberAmounts {
    /// The cooperative.
    pub cooperative_id: uuid::Uuid,
    /// The member household.
    pub household_id: uuid::Uuid,
    /// Its shares, by state (`pending_vnd` is always 0: a share is owed once delivered).
    #[serde(flatten)]
    pub amounts: Amounts,
    /// Shares of sales whose cash the cooperative collected on delivery: the cooperative pays
    /// them from that cash, not the platform (so far, in payout batches).
    pub paid_by_cooperative_vnd: i64,
}

/// A seller's balance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BalanceView {
    /// Household or cooperative.
    pub seller_kind: SellerKind,
    /// Its id.
    pub seller_id: uuid::Uuid,
    /// Its own money (a cooperative's: after what it owes its members).
    #[serde(flatten)]
    pub amounts: Amounts,
    /// Cash it collected on delivery and still owes the platform: its cash sales' totals,
    /// less what payout batches have already taken out of what it was owed. A batch takes it
    /// out of `available_vnd` (and, for a household, of what its cooperatives owe it) before
    /// paying; for a cooperative, what is left of it then pays its members' shares of its
    /// cash sales (`paid_by_cooperative_vnd`).
    pub cash_owed_vnd: i64,
    /// What the next payout batch would send for its own balance as things stand:
    /// `available_vnd` less `cash_owed_vnd`, not below 0 (and only with a payout account).
    pub next_payout_vnd: i64,
    /// A cooperative: what it owes each member household for its lots' sales.
    pub members: Vec<MemberAmounts>,
    /// A household: what its cooperatives owe it for its lots' sales.
    pub from_cooperatives: Vec<MemberAmounts>,
}

/// The balance of every account of a seller (and, for a household, the member accounts it
/// is owed from).
async fn load_balance(
    conn: &mut sqlx::PgConnection,
    kind: SellerKind,
    id: uuid::Uuid,
) -> anyhow::Result<BalanceView> {
    let accounts = sqlx::query!(
        "SELECT id, kind, owner_id, member_id FROM ledger_accounts
         WHERE (owner_kind = $1 AND owner_id = $2) OR ($1 = 'household' AND member_id = $2)",
        kind.as_str(),
        id,
    )
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<i64> = accounts.iter().map(|a| a.id).collect();
    let balances = ledger::balances(conn, &ids).await?;
    // What each account sent to banks, and what cooperatives paid their members from cash,
    // in one read.
    let mut paid: BTreeMap<i64, i64> = BTreeMap::new();
    let mut by_cooperative: BTreeMap<i64, i64> = BTreeMap::new();
    for r in sqlx::query!(
        r#"SELECT e.account_id, t.kind, sum(e.amount_vnd)::bigint AS "sum!" FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id
           WHERE e.account_id = ANY($1) AND t.kind IN ('payout_paid', 'paid_by_cooperative') GROUP BY e.account_id, t.kind"#,
        &ids,
    )
    .fetch_all(&mut *conn)
    .await?
    {
        let into = if r.kind == "payout_paid" {
            &mut paid
        } else {
            &mut by_cooperative
        };
        into.insert(r.account_id, r.sum);
    }
    let mut paid_by: BTreeMap<(uuid::Uuid, uuid::Uuid), i64> = BTreeMap::new();
    let mut own = Amounts::default();
    let mut cash_held = 0;
    let mut members: BTreeMap<(uuid::Uuid, uuid::Uuid), Amounts> = BTreeMap::new();
    for a in &accounts {
        let b = balances.get(&a.id).copied().unwrap_or_default();
        let member = a.member_id.zip(a.owner_id).map(|(m, c)| (c, m));
        if let (Some(key), Some(sum)) = (member, by_cooperative.get(&a.id)) {
            *paid_by.entry(key).or_default() += sum;
        }
        let target = match member {
            Some(key) => members.entry(key).or_default(),
            None => &mut own,
        };
        match a.kind.as_str() {
            "seller_pending" => target.pending_vnd += b.held + b.available,
            "seller_payable" | "member_payable" => {
                target.held_vnd += b.held;
                target.available_vnd += b.available;
            }
            // A debit: what the seller holds for the platform.
            "seller_cash" if member.is_none() => cash_held -= b.held + b.available,
            "payout_in_flight" => {
                target.in_payout_vnd += b.held + b.available;
                target.paid_out_vnd += paid.get(&a.id).copied().unwrap_or(0);
            }
            _ => {}
        }
    }
    let members: Vec<MemberAmounts> = members
        .into_iter()
        .map(|((cooperative_id, household_id), amounts)| MemberAmounts {
            cooperative_id,
            household_id,
            amounts,
            paid_by_cooperative_vnd: paid_by
                .get(&(cooperative_id, household_id))
                .copied()
                .unwrap_or(0),
        })
        .collect();
    let (members, from_cooperatives) = match kind {
        SellerKind::Cooperative => (members, Vec::new()),
        SellerKind::Household => (Vec::new(), members),
    };
    Ok(BalanceView {
        seller_kind: kind,
        seller_id: id,
        amounts: own,
        cash_owed_vnd: cash_held,
        next_payout_vnd: (own.available_vnd - cash_held).max(0),
        members,
        from_cooperatives,
    })
}

/// A seller's balance: its own money by state and, for a cooperative, what it owes each
/// member household (for a household, what its cooperatives owe it).
#[utoipa::path(get, path = "/v1/payments/sellers/{kind}/{id}/balance", tag = "payment",
    params(("kind" = SellerKind, Path, description = "household or cooperative"), ("id" = uuid::Uuid, Path, description = "The seller")),
    responses((status = 200, body = BalanceView), (status = 403, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn get_balance(
    State(app): State<AppState>,
    actor: Actor,
    Path((kind, id)): Path<(SellerKind, uuid::Uuid)>,
) -> Result<AxumJson<BalanceView>, ApiError> {
    may_read(&app, &actor, kind, id).await?;
    let mut conn = app.pool.acquire().await?;
    Ok(AxumJson(load_balance(&mut conn, kind, id).await?))
}

/// The statement's range and form.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    /// First day (Vietnam time), `YYYY-MM-DD`, in 2000 to 2999.
    pub from: NaiveDate,
    /// Last day, included; at most 366 days after `from`.
    pub to: NaiveDate,
    /// `json` (default) or `csv`.
    #[serde(default)]
    pub format: Option<String>,
}

/// A lot's part of a cooperative's sold line.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatementLot {
    /// The lot's code.
    pub lot_code: String,
    /// The member household that grew it (none: the cooperative's own lot).
    pub household_id: Option<uuid::Uuid>,
    /// How much of the line it filled.
    #[schema(value_type = String)]
    pub quantity: Quantity,
    /// Its part of the line's net.
    pub part_vnd: i64,
    /// The cooperative's fee on it.
    pub fee_vnd: i64,
    /// What the cooperative owes the member for it.
    pub share_vnd: i64,
}

/// One sold line of a statement.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatementLine {
    /// When its order was delivered.
    pub delivered_at: DateTime<Utc>,
    /// The order.
    pub order_id: uuid::Uuid,
    /// The listing.
    pub listing_id: uuid::Uuid,
    /// The product, as sold.
    pub product: String,
    /// How much.
    #[schema(value_type = String)]
    pub quantity: Quantity,
    /// Its unit.
    pub unit: String,
    /// Line total less its refunds.
    pub gross_vnd: i64,
    /// The commission rate, basis points.
    pub rate_bps: i32,
    /// Commission.
    pub commission_vnd: i64,
    /// Gross less commission.
    pub net_vnd: i64,
    /// A cooperative's line: each lot's part and each member's share.
    pub lots: Vec<StatementLot>,
}

/// A seller's statement for a range of days.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Statement {
    /// Household or cooperative.
    pub seller_kind: SellerKind,
    /// Its id.
    pub seller_id: uuid::Uuid,
    /// First day.
    pub from: NaiveDate,
    /// Last day.
    pub to: NaiveDate,
    /// Every line of its orders delivered in the range, oldest first.
    pub lines: Vec<StatementLine>,
    /// Sum of the lines' gross.
    pub gross_vnd: i64,
    /// Sum of their commission.
    pub commission_vnd: i64,
    /// Sum of their net.
    pub net_vnd: i64,
    /// A cooperative: what it owes its members for these lines.
    pub owed_to_members_vnd: i64,
}

/// Lines a statement may hold; a longer one asks for a shorter range.
const STATEMENT_MAX_LINES: i64 = 20_000;

/// A seller's statement: every line of its orders delivered from `from` to `to` (Vietnam
/// days), with product, quantity, gross, commission and net, and for a cooperative each
/// lot's part and member share; as JSON or, with `format=csv`, as a CSV file.
#[utoipa::path(get, path = "/v1/payments/sellers/{kind}/{id}/statement", tag = "payment",
    params(("kind" = SellerKind, Path, description = "household or cooperative"), ("id" = uuid::Uuid, Path, description = "The seller"), StatementQuery),
    responses((status = 200, body = Statement, content_type = "application/json"),
        (status = 200, description = "format=csv: one row per line (and per lot of a cooperative's line)", body = String, content_type = "text/csv"),
        (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn get_statement(
    State(app): State<AppState>,
    actor: Actor,
    Path((kind, id)): Path<(SellerKind, uuid::Uuid)>,
    Query(q): Query<StatementQuery>,
) -> Result<Response, ApiError> {
    let mut p = Problems::new();
    p.check(
        q.to < q.from,
        "to",
        "before_from",
        "must not be before `from`",
        "không được trước `from`",
    );
    // PostgreSQL keeps no time before 4713 BC: such a day was a 500.
    for (field, day) in [("from", q.from), ("to", q.to)] {
        p.check(
            !(2000..=2999).contains(&day.year()),
            field,
            "out_of_range",
            "must be a day from 2000 to 2999",
            "phải là ngày từ năm 2000 đến năm 2999",
        );
    }
    p.check(
        (q.to - q.from).num_days() > 366,
        "to",
        "range_too_long",
        "must be at most 366 days after `from`",
        "chỉ được sau `from` tối đa 366 ngày",
    );
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            p.check(
                true,
                "format",
                "unknown_format",
                "must be json or csv",
                "phải là json hoặc csv",
            );
            false
        }
    };
    p.finish()?;
    may_read(&app, &actor, kind, id).await?;
    let tz = vietnam();
    let day_start = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(tz).single())
            .map(|t| t.with_timezone(&Utc))
    };
    let (Some(start), Some(end)) = (day_start(q.from), q.to.succ_opt().and_then(day_start)) else {
        return Err(super::sales::bad(
            "to",
            "out_of_range",
            "is not a day we can read",
            "không phải một ngày hợp lệ",
        ));
    };
    let mut conn = app.pool.acquire().await?;
    let rows = sqlx::query!(
        r#"SELECT o.delivered_at AS "delivered_at!", l.order_id, l.listing_id, l.title, l.quantity AS "quantity: Quantity", l.unit,
              l.gross_vnd, l.rate_bps, l.commission_vnd
           FROM payment_orders o JOIN sale_lines l ON l.order_id = o.order_id
           WHERE o.seller_kind = $1 AND o.seller_id = $2 AND o.delivered_at >= $3 AND o.delivered_at < $4
           ORDER BY o.delivered_at, l.order_id, l.listing_id LIMIT $5"#,
        kind.as_str(),
        id,
        start,
        end,
        STATEMENT_MAX_LINES + 1,
    )
    .fetch_all(&mut *conn)
    .await?;
    if i64::try_from(rows.len()).unwrap_or(i64::MAX) > STATEMENT_MAX_LINES {
        return Err(super::sales::bad(
            "to",
            "range_too_large",
            &format!("the range holds more than {STATEMENT_MAX_LINES} lines: ask for fewer days"),
            &format!("khoảng ngày này có hơn {STATEMENT_MAX_LINES} dòng: hãy chọn ít ngày hơn"),
        ));
    }
    let orders: Vec<uuid::Uuid> = rows.iter().map(|r| r.order_id).collect();
    let lots = sqlx::query!(
        r#"SELECT order_id, listing_id, lot_code, household_id, quantity AS "quantity: Quantity", part_vnd, fee_vnd, share_vnd
           FROM sale_lots WHERE order_id = ANY($1) ORDER BY order_id, listing_id, lot_code"#,
        &orders,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut by_line: BTreeMap<(uuid::Uuid, uuid::Uuid), Vec<StatementLot>> = BTreeMap::new();
    if kind == SellerKind::Cooperative {
        for l in lots {
            by_line
                .entry((l.order_id, l.listing_id))
                .or_default()
                .push(StatementLot {
                    lot_code: l.lot_code,
                    household_id: l.household_id,
                    quantity: l.quantity,
                    part_vnd: l.part_vnd,
                    fee_vnd: l.fee_vnd,
                    share_vnd: l.share_vnd,
                });
        }
    }
    let lines: Vec<StatementLine> = rows
        .into_iter()
        .map(|r| StatementLine {
            delivered_at: r.delivered_at,
            order_id: r.order_id,
            listing_id: r.listing_id,
            product: r.title,
            quantity: r.quantity,
            unit: r.unit,
            gross_vnd: r.gross_vnd,
            rate_bps: r.rate_bps,
            commission_vnd: r.commission_vnd,
            net_vnd: r.gross_vnd - r.commission_vnd,
            lots: by_line
                .remove(&(r.order_id, r.listing_id))
                .unwrap_or_default(),
        })
        .collect();
    let statement = Statement {
        seller_kind: kind,
        seller_id: id,
        from: q.from,
        to: q.to,
        gross_vnd: lines.iter().map(|l| l.gross_vnd).sum(),
        commission_vnd: lines.iter().map(|l| l.commission_vnd).sum(),
        net_vnd: lines.iter().map(|l| l.net_vnd).sum(),
        owed_to_members_vnd: lines
            .iter()
            .flat_map(|l| &l.lots)
            .map(|l| l.share_vnd)
            .sum(),
        lines,
    };
    if !csv {
        return Ok(AxumJson(statement).into_response());
    }
    let body = statement_csv(&statement, tz).map_err(ApiError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"statement-{}-{}-{}.csv\"",
                    id, q.from, q.to
                ),
            ),
        ],
        body,
    )
        .into_response())
}

/// The statement as CSV: one row per line, and after a cooperative's line one row per lot.
fn statement_csv(s: &Statement, tz: FixedOffset) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "row",
        "delivered_at",
        "order_id",
        "listing_id",
        "product",
        "quantity",
        "unit",
        "gross_vnd",
        "rate_bps",
        "commission_vnd",
        "net_vnd",
        "lot_code",
        "household_id",
        "part_vnd",
        "coop_fee_vnd",
        "member_share_vnd",
    ])?;
    for l in &s.lines {
        let at = l
            .delivered_at
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M")
            .to_string();
        w.write_record([
            "line".to_owned(),
            at.clone(),
            l.order_id.to_string(),
            l.listing_id.to_string(),
            crate::payouts::safe_cell(&l.product),
            l.quantity.to_string(),
            crate::payouts::safe_cell(&l.unit),
            l.gross_vnd.to_string(),
            l.rate_bps.to_string(),
            l.commission_vnd.to_string(),
            l.net_vnd.to_string(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ])?;
        for lot in &l.lots {
            w.write_record([
                "lot".to_owned(),
                at.clone(),
                l.order_id.to_string(),
                l.listing_id.to_string(),
                crate::payouts::safe_cell(&l.product),
                lot.quantity.to_string(),
                crate::payouts::safe_cell(&l.unit),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                crate::payouts::safe_cell(&lot.lot_code),
                lot.household_id.map(|h| h.to_string()).unwrap_or_default(),
                lot.part_vnd.to_string(),
                lot.fee_vnd.to_string(),
                lot.share_vnd.to_string(),
            ])?;
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// Where a seller's payouts go.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutAccount {
    /// The bank (its name or code, as the transfer file wants it), 1 to 100 characters.
    pub bank: String,
    /// The account number: 6 to 19 digits.
    pub account_number: String,
    /// The account holder's name, 1 to 100 characters.
    pub account_name: String,
}

/// Sets the bank account a seller's payouts go to. A household sets its own; a
/// cooperative's manager sets the cooperative's; an operator either. Nobody acting for a
/// household (a helper, a manager) may point its money elsewhere.
#[utoipa::path(put, path = "/v1/payments/payout-accounts/{kind}/{id}", tag = "payment",
    params(("kind" = SellerKind, Path, description = "household or cooperative"), ("id" = uuid::Uuid, Path, description = "The seller")),
    request_body = PayoutAccount,
    responses((status = 200, body = PayoutAccount), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 422, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn set_payout_account(
    State(app): State<AppState>,
    actor: Actor,
    Path((kind, id)): Path<(SellerKind, uuid::Uuid)>,
    Json(req): Json<PayoutAccount>,
) -> Result<AxumJson<PayoutAccount>, ApiError> {
    let allowed = match (actor.role, kind) {
        (Role::Operator, _) => true,
        (Role::Household, SellerKind::Household) => {
            actor.account_id.0 == id && actor.on_behalf_of.is_none()
        }
        (Role::CooperativeManager, SellerKind::Cooperative) => {
            actor.on_behalf_of.is_none() && app.peers.may_act_for_seller(&actor, kind, id).await?
        }
        _ => false,
    };
    if !allowed {
        return Err(ApiError::forbidden());
    }
    let bank = req.bank.trim().to_owned();
    let number = req.account_number.trim().to_owned();
    let name = req.account_name.trim().to_owned();
    let mut p = Problems::new();
    p.check(
        bank.is_empty() || bank.chars().count() > 100,
        "bank",
        "invalid_length",
        "must be 1 to 100 characters",
        "phải từ 1 đến 100 ký tự",
    );
    p.check(
        !(6..=19).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_digit()),
        "account_number",
        "invalid_account_number",
        "must be 6 to 19 digits",
        "phải gồm 6 đến 19 chữ số",
    );
    p.check(
        name.is_empty() || name.chars().count() > 100,
        "account_name",
        "invalid_length",
        "must be 1 to 100 characters",
        "phải từ 1 đến 100 ký tự",
    );
    // Both go into the payout file a bank reads, one line per transfer.
    p.check_one_line("bank", &bank);
    p.check_one_line("account_name", &name);
    p.finish()?;
    sqlx::query!(
        "INSERT INTO payout_accounts (owner_kind, owner_id, bank, account_number, account_name, set_by) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (owner_kind, owner_id) DO UPDATE SET bank = EXCLUDED.bank, account_number = EXCLUDED.account_number,
             account_name = EXCLUDED.account_name, set_by = EXCLUDED.set_by, updated_at = now()",
        kind.as_str(),
        id,
        bank,
        number,
        name,
        actor.account_id.0,
    )
    .execute(&app.pool)
    .await?;
    tracing::info!(seller.kind = kind.as_str(), seller.id = %id, actor = %actor.account_id, "payout account set");
    Ok(AxumJson(PayoutAccount {
        bank,
        account_number: number,
        account_name: name,
    }))
}
