//! Payouts: an operator takes every available balance (sellers' own, and what cooperatives
//! owe their member households) into a batch, exports it as a bank transfer file, and marks
//! each line paid or failed as the bank answers; a failed line's money returns to the
//! balance it came from. Every step is a ledger transaction.
//!
//! A seller who delivered cash-on-delivery orders holds their cash (`seller_cash`); the batch
//! first takes that cash out of the seller's available balance, and pays only what remains.
//! A seller whose cash covers its balance is paid nothing, and the rest of its cash (what
//! its cash sales owe the platform) waits for its next online sales. A cooperative's
//! members' shares are paid first from the cash the cooperative holds (the cooperative pays
//! them, `paid_by_cooperative`), and only the rest by the platform.

use axum::{
    Json as AxumJson,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use nongsan_shared::{
    ApiError, Problems, Text,
    auth::Actor,
    contracts::sellers::SellerKind,
    http::{Json, Path},
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{
    AppState,
    ledger::{self, Account, Kind, Owner},
    operator_only,
};

/// One transfer of a batch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PayoutLine {
    /// Id.
    pub id: uuid::Uuid,
    /// Who is paid: a household or a cooperative.
    pub owner_kind: SellerKind,
    /// Its id.
    pub owner_id: uuid::Uuid,
    /// A member's share: the cooperative that owes it.
    pub cooperative_id: Option<uuid::Uuid>,
    /// Đồng.
    pub amount_vnd: i64,
    /// The bank.
    pub bank: String,
    /// The account number.
    pub account_number: String,
    /// The account holder.
    pub account_name: String,
    /// The transfer's reference (its description at the bank).
    pub reference: String,
    /// `pending`, `paid` or `failed`.
    pub status: String,
    /// The operator's note (why it failed).
    pub note: Option<String>,
}

/// A payout batch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PayoutBatch {
    /// Id.
    pub id: uuid::Uuid,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Its transfers.
    pub lines: Vec<PayoutLine>,
    /// Their sum.
    pub total_vnd: i64,
    /// Balances available but left out because their owner has no payout account yet.
    pub without_account: i64,
}

async fn load_batch(
    conn: &mut PgConnection,
    id: uuid::Uuid,
    without_account: i64,
) -> Result<PayoutBatch, ApiError> {
    let created_at = sqlx::query_scalar!("SELECT created_at FROM payout_batches WHERE id = $1", id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found("payout batch"))?;
    let lines: Vec<PayoutLine> = sqlx::query!(
        "SELECT id, owner_kind, owner_id, cooperative_id, amount_vnd, bank, account_number, account_name, reference, status, note
         FROM payout_lines WHERE batch_id = $1 ORDER BY reference",
        id,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|l| PayoutLine {
        id: l.id,
        owner_kind: ledger::seller_kind(&l.owner_kind),
        owner_id: l.owner_id,
        cooperative_id: l.cooperative_id,
        amount_vnd: l.amount_vnd,
        bank: l.bank,
        account_number: l.account_number,
        account_name: l.account_name,
        reference: l.reference,
        status: l.status,
        note: l.note,
    })
    .collect();
    Ok(PayoutBatch {
        id,
        created_at,
        total_vnd: lines.iter().map(|l| l.amount_vnd).sum(),
        lines,
        without_account,
    })
}

/// Makes a payout batch of every available balance whose owner has a payout account: each
/// balance moves into the batch (in flight) in one ledger transaction. Balances within
/// their hold stay. A seller's available balance is first reduced by the cash it collected
/// on delivery and keeps (whether or not it has a payout account); a member's share of a
/// cooperative's cash sale is paid by the cooperative from what is left of that cash. Two operators at once
/// make two batches that never share a đồng; a batch with nothing due is still answered
/// (with no lines).
#[utoipa::path(post, path = "/v1/payments/payouts", tag = "payment",
    responses((status = 201, body = PayoutBatch), (status = 403, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn create_batch(
    State(app): State<AppState>,
    actor: Actor,
) -> Result<(StatusCode, AxumJson<PayoutBatch>), ApiError> {
    operator_only(&actor)?;
    let mut tx = app.pool.begin().await?;
    // One batch is made at a time.
    sqlx::query!("SELECT pg_advisory_xact_lock(7331, 1)")
        .execute(&mut *tx)
        .await?;
    // The balances it takes are locked first: an operator's refund locks them too before
    // it checks them, so the two never both take the same money.
    sqlx::query!("SELECT id FROM ledger_accounts WHERE kind IN ('seller_payable', 'member_payable', 'seller_cash') ORDER BY id FOR UPDATE")
        .fetch_all(&mut *tx)
        .await?;
    let due = sqlx::query!(
        r#"SELECT a.id, a.kind, a.owner_kind AS "owner_kind!", a.owner_id AS "owner_id!", a.member_id, b.available AS "available!",
              h.cash AS "cash!", hc.cash AS "coop_cash!", cs.cash_shares AS "cash_shares!",
              p.bank AS "bank?", p.account_number AS "account_number?", p.account_name AS "account_name?"
           FROM ledger_accounts a
           JOIN LATERAL (
               SELECT (-COALESCE(sum(e.amount_vnd) FILTER (WHERE t.available_at IS NULL OR t.available_at <= now()), 0))::bigint AS available
               FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id WHERE e.account_id = a.id
           ) b ON true
           JOIN LATERAL (
               SELECT COALESCE(sum(e.amount_vnd), 0)::bigint AS cash
               FROM ledger_accounts c JOIN ledger_entries e ON e.account_id = c.id
               WHERE c.kind = 'seller_cash'
                 AND (c.owner_kind, c.owner_id) = (CASE WHEN a.member_id IS NULL THEN a.owner_kind ELSE 'household' END, COALESCE(a.member_id, a.owner_id))
           ) h ON true
           JOIN LATERAL (
               SELECT COALESCE(sum(e.amount_vnd), 0)::bigint AS cash
               FROM ledger_accounts c JOIN ledger_entries e ON e.account_id = c.id
               WHERE a.member_id IS NOT NULL AND c.kind = 'seller_cash' AND c.owner_kind = 'cooperative' AND c.owner_id = a.owner_id
           ) hc ON true
           JOIN LATERAL (
               SELECT (COALESCE(-sum(e.amount_vnd) FILTER (WHERE t.kind = 'order' AND o.method = 'cod'), 0)
                       - COALESCE(sum(e.amount_vnd) FILTER (WHERE t.kind = 'paid_by_cooperative'), 0))::bigint AS cash_shares
               FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id
               LEFT JOIN payment_orders o ON o.order_id = t.order_id
               WHERE a.member_id IS NOT NULL AND e.account_id = a.id
           ) cs ON true
           LEFT JOIN payout_accounts p ON (p.owner_kind, p.owner_id) = (CASE WHEN a.member_id IS NULL THEN a.owner_kind ELSE 'household' END, COALESCE(a.member_id, a.owner_id))
           WHERE a.kind IN ('seller_payable', 'member_payable') AND b.available > 0
           ORDER BY a.member_id IS NOT NULL, a.id"#,
    )
    .fetch_all(&mut *tx)
    .await?;
    let batch = uuid::Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO payout_batches (id, created_by) VALUES ($1, $2)",
        batch,
        actor.account_id.0
    )
    .execute(&mut *tx)
    .await?;
    let mut without_account = 0;
    // The cash each payee keeps, as this batch has left it: one household may be paid both
    // its own balance and member shares, and its cash is taken out once.
    let mut cash_left: std::collections::HashMap<Owner, i64> = std::collections::HashMap::new();
    for d in due {
        let owner = Owner {
            kind: ledger::seller_kind(&d.owner_kind),
            id: d.owner_id,
        };
        let payee = match d.member_id {
            Some(member) => Owner {
                kind: SellerKind::Household,
                id: member,
            },
            None => owner,
        };
        let source = match d.member_id {
            Some(member) => Account::MemberPayable {
                cooperative: d.owner_id,
                member,
            },
            None => Account::SellerPayable(owner),
        };
        // A member's share of sales whose cash its cooperative collected is the
        // cooperative's to pay, from that cash (what is left of it once the cooperative's
        // own balance was taken out of it, sellers' own rows coming first): the platform
        // does not pay out money it never received. Only those shares: a share of an online
        // sale is the platform's to pay, whatever cash the cooperative holds.
        let mut available = d.available;
        if d.member_id.is_some() {
            let coop_cash = cash_left.entry(owner).or_insert(d.coop_cash.max(0));
            let by_coop = (*coop_cash).min(available).min(d.cash_shares.max(0));
            *coop_cash -= by_coop;
            available -= by_coop;
            if by_coop > 0 {
                ledger::post(
                    &mut tx,
                    Kind::PaidByCooperative(batch),
                    None,
                    "the cooperative pays this share from the cash it collected on delivery",
                    &[
                        (source.clone(), by_coop),
                        (Account::SellerCash(owner), -by_coop),
                    ],
                )
                .await?;
            }
        }
        // The cash the payee keeps from its own cash sales comes out of what it is owed
        // first (its own balance, or the shares a cooperative owes it).
        let cash = cash_left.entry(payee).or_insert(d.cash.max(0));
        let netted = (*cash).min(available);
        *cash -= netted;
        if netted > 0 {
            ledger::post(
                &mut tx,
                Kind::CashNetted(batch),
                None,
                "cash collected on delivery, taken out of what the seller is owed",
                &[
                    (source.clone(), netted),
                    (Account::SellerCash(payee), -netted),
                ],
            )
            .await?;
        }
        let amount = available - netted;
        if amount == 0 {
            continue;
        }
        let (Some(bank), Some(number), Some(name)) = (d.bank, d.account_number, d.account_name)
        else {
            without_account += 1;
            continue;
        };
        let cooperative = d.member_id.map(|_| d.owner_id);
        let line = uuid::Uuid::now_v7();
        let reference = format!("NONGSAN {}", line.simple()).to_uppercase();
        sqlx::query!(
            "INSERT INTO payout_lines (id, batch_id, account_id, owner_kind, owner_id, cooperative_id, amount_vnd, bank, account_number, account_name, reference)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            line,
            batch,
            d.id,
            payee.kind.as_str(),
            payee.id,
            cooperative,
            amount,
            bank,
            number,
            name,
            reference,
        )
        .execute(&mut *tx)
        .await?;
        ledger::post(
            &mut tx,
            Kind::Payout(line),
            None,
            "taken into a payout batch",
            &[
                (source.clone(), amount),
                (Account::PayoutInFlight(Box::new(source)), -amount),
            ],
        )
        .await?;
    }
    let view = load_batch(&mut tx, batch, without_account).await?;
    tx.commit().await?;
    tracing::info!(batch = %batch, lines = view.lines.len(), total_vnd = view.total_vnd, without_account, operator = %actor.account_id, "payout batch made");
    Ok((StatusCode::CREATED, AxumJson(view)))
}

/// A payout batch with its lines.
#[utoipa::path(get, path = "/v1/payments/payouts/{id}", tag = "payment",
    params(("id" = uuid::Uuid, Path, description = "The batch")),
    responses((status = 200, body = PayoutBatch), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 404, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn get_batch(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<uuid::Uuid>,
) -> Result<AxumJson<PayoutBatch>, ApiError> {
    operator_only(&actor)?;
    let mut conn = app.pool.acquire().await?;
    Ok(AxumJson(load_batch(&mut conn, id, 0).await?))
}

/// A text cell of a file a spreadsheet opens: one that would start a formula is quoted.
pub fn safe_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

/// The batch's bank transfer file (CSV: bank, account number, account name, amount,
/// reference), the lines still pending.
#[utoipa::path(get, path = "/v1/payments/payouts/{id}/transfers", tag = "payment",
    params(("id" = uuid::Uuid, Path, description = "The batch")),
    responses((status = 200, body = String, content_type = "text/csv"), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 404, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn transfer_file(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<uuid::Uuid>,
) -> Result<Response, ApiError> {
    operator_only(&actor)?;
    let mut conn = app.pool.acquire().await?;
    let batch = load_batch(&mut conn, id, 0).await?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let file = (|| -> anyhow::Result<String> {
        w.write_record([
            "bank",
            "account_number",
            "account_name",
            "amount_vnd",
            "reference",
        ])?;
        for l in batch.lines.iter().filter(|l| l.status == "pending") {
            w.write_record([
                safe_cell(&l.bank),
                l.account_number.clone(),
                safe_cell(&l.account_name),
                l.amount_vnd.to_string(),
                l.reference.clone(),
            ])?;
        }
        Ok(String::from_utf8(w.into_inner()?)?)
    })()
    .map_err(ApiError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"payout-{id}.csv\""),
            ),
        ],
        file,
    )
        .into_response())
}

/// What the bank said of one transfer.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineOutcome {
    /// `paid` or `failed`.
    pub status: String,
    /// Why it failed (the bank's words), at most 500 characters.
    #[serde(default)]
    pub note: Option<String>,
}

/// Marks one transfer paid or failed. A failed transfer's money returns to the balance it
/// came from (available at once); marking it the same again answers the same, the other way
/// is refused.
#[utoipa::path(post, path = "/v1/payments/payouts/{id}/lines/{line_id}", tag = "payment",
    params(("id" = uuid::Uuid, Path, description = "The batch"), ("line_id" = uuid::Uuid, Path, description = "The line")),
    request_body = LineOutcome,
    responses((status = 200, body = PayoutLine), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 404, body = nongsan_shared::error::ProblemSchema),
        (status = 409, description = "already_settled: it was marked the other way", body = nongsan_shared::error::ProblemSchema),
        (status = 422, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn settle_line(
    State(app): State<AppState>,
    actor: Actor,
    Path((batch, line)): Path<(uuid::Uuid, uuid::Uuid)>,
    Json(req): Json<LineOutcome>,
) -> Result<AxumJson<PayoutLine>, ApiError> {
    operator_only(&actor)?;
    let mut p = Problems::new();
    p.check(
        !matches!(req.status.as_str(), "paid" | "failed"),
        "status",
        "unknown_status",
        "must be paid or failed",
        "phải là paid hoặc failed",
    );
    p.check_reason("note", req.note.as_deref().map(str::trim));
    p.finish()?;
    let mut tx = app.pool.begin().await?;
    let l = sqlx::query!(
        "SELECT l.status, l.amount_vnd, a.kind, a.owner_kind, a.owner_id, a.member_id
         FROM payout_lines l JOIN ledger_accounts a ON a.id = l.account_id WHERE l.id = $1 AND l.batch_id = $2 FOR UPDATE OF l",
        line,
        batch,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("payout line"))?;
    if l.status != "pending" {
        if l.status != req.status {
            return Err(ApiError::conflict(
                "already_settled",
                Text::new(
                    format!("this transfer was marked {} already", l.status),
                    format!("giao dịch này đã được đánh dấu {}", l.status),
                ),
            ));
        }
    } else {
        let source = match (l.kind.as_str(), l.member_id, l.owner_id) {
            ("member_payable", Some(member), Some(cooperative)) => Account::MemberPayable {
                cooperative,
                member,
            },
            (_, _, Some(id)) => Account::SellerPayable(Owner {
                kind: ledger::seller_kind(l.owner_kind.as_deref().unwrap_or_default()),
                id,
            }),
            _ => {
                return Err(ApiError::internal(anyhow::anyhow!(
                    "payout line {line} has no owner"
                )));
            }
        };
        let in_flight = Account::PayoutInFlight(Box::new(source.clone()));
        let (kind, memo, to) = if req.status == "paid" {
            (
                Kind::PayoutPaid(line),
                "paid by the bank",
                Account::PayoutsSent,
            )
        } else {
            (
                Kind::PayoutFailed(line),
                "transfer failed: back to the balance",
                source,
            )
        };
        ledger::post(
            &mut tx,
            kind,
            None,
            memo,
            &[(in_flight, l.amount_vnd), (to, -l.amount_vnd)],
        )
        .await?;
        sqlx::query!(
            "UPDATE payout_lines SET status = $2, note = $3, updated_by = $4, updated_at = now() WHERE id = $1",
            line,
            req.status,
            req.note.as_deref().map(str::trim),
            actor.account_id.0,
        )
        .execute(&mut *tx)
        .await?;
        tracing::info!(payout.line = %line, status = %req.status, operator = %actor.account_id, "payout line settled");
    }
    let view = load_batch(&mut tx, batch, 0)
        .await?
        .lines
        .into_iter()
        .find(|x| x.id == line)
        .ok_or_else(|| ApiError::not_found("payout line"))?;
    tx.commit().await?;
    Ok(AxumJson(view))
}
