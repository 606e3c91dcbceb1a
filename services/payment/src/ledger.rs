//! The double-entry ledger: every movement of money is one transaction whose entries sum to
//! zero, written in the same database transaction as the change that moved it; entries are
//! never updated or deleted (the database refuses); every balance is a sum of entries.
//!
//! An order's money is booked by convergence: whenever one of its facts changes (its
//! payment captured, a refund asked, succeeded or failed, its lines sold, its delivery),
//! [`settle_order`] computes what each account should hold for the order from all its facts
//! ([`book`], a pure function) and posts the difference from what the ledger already holds
//! for it as one transaction. However the facts arrive (the order side's and the listing
//! side's events come on different streams, in any order), the ledger ends where the facts
//! say, and a repeated fact posts nothing.
//!
//! | while the order is | its money is in |
//! | --- | --- |
//! | paid online, not delivered | the provider's clearing account and the seller's pending balance |
//! | refunded, provider not yet confirmed | refunds payable (out of the seller's balance) |
//! | delivered | the seller's payable balance (held until `available_at`, then available), the platform's commission, and, for a cooperative, what it owes each member household |
//! | cash on delivery, delivered | the seller's cash (it took the buyer's cash and keeps it) instead of the provider's clearing account; netted against the seller's payable balance at the next payout |
//!
//! Rounding: commission is computed per order line on the line's gross (its total less the
//! refunds of that line), at the line's rate in basis points, rounded half up to whole
//! đồng. A refund that names no line counts against the delivery fee first, then against
//! the lines in order. A cooperative's line net (gross less commission) is split among the
//! lots that filled it in proportion to their quantities (largest remainder, so the parts
//! add up to the net exactly); the cooperative's fee on a member's part is rounded half up,
//! and the member's share is the part less the fee.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use nongsan_shared::{OrderId, Quantity, contracts::sellers::SellerKind};
use sqlx::PgConnection;
use uuid::Uuid;

/// An account of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// Captured by a provider (`vnpay`, `stripe`, `momo`) and not refunded.
    ProviderClearing(String),
    /// Cash collected on delivery, as booked before the seller was known to keep it: the
    /// entries written before migration `20261226090000_seller_cash`, which moved each
    /// order's balance here to its seller's [`Account::SellerCash`]. Nothing books it now.
    CodInTransit,
    /// Cash a seller collected on delivery and keeps: the platform is owed it, and takes it
    /// out of what it owes the seller (its payable balance) at the next payout batch.
    SellerCash(Owner),
    /// A seller's paid, not yet delivered orders.
    SellerPending(Owner),
    /// A seller's delivered orders' net: held, then available, until paid out.
    SellerPayable(Owner),
    /// What a cooperative owes a member household for its lots' sales.
    MemberPayable {
        /// The cooperative.
        cooperative: Uuid,
        /// The member household.
        member: Uuid,
    },
    /// Taken from a payable balance into a payout batch, not yet confirmed paid.
    PayoutInFlight(Box<Account>),
    /// The platform's commission.
    Commission,
    /// Refunds asked and not yet confirmed by the provider.
    RefundsPayable,
    /// Sent to sellers' and members' banks.
    PayoutsSent,
}

/// A seller: a household or a cooperative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Household or cooperative.
    pub kind: SellerKind,
    /// Its id.
    pub id: Uuid,
}

impl PartialOrd for Owner {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Owner {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.kind.as_str(), self.id).cmp(&(other.kind.as_str(), other.id))
    }
}

/// The columns of `ledger_accounts` that name an account.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Columns {
    kind: &'static str,
    provider: Option<String>,
    owner_kind: Option<&'static str>,
    owner_id: Option<Uuid>,
    member_id: Option<Uuid>,
}

impl Account {
    fn columns(&self) -> Columns {
        let plain = |kind| Columns {
            kind,
            provider: None,
            owner_kind: None,
            owner_id: None,
            member_id: None,
        };
        match self {
            Account::ProviderClearing(p) => Columns {
                provider: Some(p.clone()),
                ..plain("provider_clearing")
            },
            Account::CodInTransit => plain("cod_in_transit"),
            Account::SellerCash(o) => Columns {
                owner_kind: Some(o.kind.as_str()),
                owner_id: Some(o.id),
                ..plain("seller_cash")
            },
            Account::SellerPending(o) => Columns {
                owner_kind: Some(o.kind.as_str()),
                owner_id: Some(o.id),
                ..plain("seller_pending")
            },
            Account::SellerPayable(o) => Columns {
                owner_kind: Some(o.kind.as_str()),
                owner_id: Some(o.id),
                ..plain("seller_payable")
            },
            Account::MemberPayable {
                cooperative,
                member,
            } => Columns {
                owner_kind: Some("cooperative"),
                owner_id: Some(*cooperative),
                member_id: Some(*member),
                ..plain("member_payable")
            },
            Account::PayoutInFlight(from) => Columns {
                kind: "payout_in_flight",
                ..from.columns()
            },
            Account::Commission => plain("commission"),
            Account::RefundsPayable => plain("refunds_payable"),
            Account::PayoutsSent => plain("payouts_sent"),
        }
    }

    /// The account named by a row of `ledger_accounts`.
    fn from_columns(
        kind: &str,
        provider: Option<String>,
        owner_kind: Option<&str>,
        owner_id: Option<Uuid>,
        member_id: Option<Uuid>,
    ) -> anyhow::Result<Account> {
        let owner = || -> anyhow::Result<Owner> {
            let kind = match owner_kind {
                Some("household") => SellerKind::Household,
                Some("cooperative") => SellerKind::Cooperative,
                other => anyhow::bail!("ledger account without a seller kind ({other:?})"),
            };
            Ok(Owner {
                kind,
                id: owner_id.ok_or_else(|| anyhow::anyhow!("ledger account without an owner"))?,
            })
        };
        Ok(match kind {
            "provider_clearing" => Account::ProviderClearing(provider.unwrap_or_default()),
            "cod_in_transit" => Account::CodInTransit,
            "seller_cash" => Account::SellerCash(owner()?),
            "seller_pending" => Account::SellerPending(owner()?),
            "seller_payable" => Account::SellerPayable(owner()?),
            "member_payable" => Account::MemberPayable {
                cooperative: owner()?.id,
                member: member_id
                    .ok_or_else(|| anyhow::anyhow!("member account without a member"))?,
            },
            "payout_in_flight" => {
                let from = match member_id {
                    Some(member) => Account::MemberPayable {
                        cooperative: owner()?.id,
                        member,
                    },
                    None => Account::SellerPayable(owner()?),
                };
                Account::PayoutInFlight(Box::new(from))
            }
            "commission" => Account::Commission,
            "refunds_payable" => Account::RefundsPayable,
            "payouts_sent" => Account::PayoutsSent,
            other => anyhow::bail!("unknown ledger account kind {other}"),
        })
    }
}

/// The id of an account, made on first use.
pub async fn account_id(conn: &mut PgConnection, account: &Account) -> anyhow::Result<i64> {
    let c = account.columns();
    let key = format!(
        "{}:{}:{}:{}:{}",
        c.kind,
        c.provider.as_deref().unwrap_or(""),
        c.owner_kind.unwrap_or(""),
        c.owner_id.map(|u| u.to_string()).unwrap_or_default(),
        c.member_id.map(|u| u.to_string()).unwrap_or_default(),
    );
    for _ in 0..2 {
        let found = sqlx::query_scalar!("SELECT id FROM ledger_accounts WHERE key = $1", key)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(id) = found {
            return Ok(id);
        }
        let made = sqlx::query_scalar!(
            "INSERT INTO ledger_accounts (kind, provider, owner_kind, owner_id, member_id) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING RETURNING id",
            c.kind,
            c.provider,
            c.owner_kind,
            c.owner_id,
            c.member_id,
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = made {
            return Ok(id);
        }
    }
    anyhow::bail!("cannot make the ledger account {account:?}")
}

/// What a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An order's money moved.
    Order(OrderId),
    /// A balance taken into a payout batch.
    Payout(Uuid),
    /// A payout line confirmed paid.
    PayoutPaid(Uuid),
    /// A payout line that failed: back to the balance.
    PayoutFailed(Uuid),
    /// Cash a seller holds taken out of its payable balance, in the payout batch named.
    CashNetted(Uuid),
    /// A member's share a cooperative pays from the cash it holds, in the batch named.
    PaidByCooperative(Uuid),
}

/// Posts one transaction (entries on the same account are added, zero entries dropped);
/// answers its id and the accounts it touched, or `None` when nothing moved. Entries that do
/// not sum to zero are refused here, and by the database at commit.
pub async fn post(
    conn: &mut PgConnection,
    kind: Kind,
    available_at: Option<DateTime<Utc>>,
    memo: &str,
    entries: &[(Account, i64)],
) -> anyhow::Result<Option<(Uuid, Vec<i64>)>> {
    let mut merged: BTreeMap<&Account, i64> = BTreeMap::new();
    for (account, amount) in entries {
        *merged.entry(account).or_default() += amount;
    }
    merged.retain(|_, amount| *amount != 0);
    if merged.is_empty() {
        return Ok(None);
    }
    let sum: i64 = merged.values().sum();
    anyhow::ensure!(
        sum == 0,
        "a ledger transaction must sum to zero, these sum to {sum}: {merged:?}"
    );
    let id = Uuid::now_v7();
    let (name, order, line, batch) = match kind {
        Kind::Order(o) => ("order", Some(o.0), None, None),
        Kind::Payout(l) => ("payout", None, Some(l), None),
        Kind::PayoutPaid(l) => ("payout_paid", None, Some(l), None),
        Kind::PayoutFailed(l) => ("payout_failed", None, Some(l), None),
        Kind::CashNetted(b) => ("cash_netted", None, None, Some(b)),
        Kind::PaidByCooperative(b) => ("paid_by_cooperative", None, None, Some(b)),
    };
    sqlx::query!(
        "INSERT INTO ledger_transactions (id, kind, order_id, payout_line, payout_batch, available_at, memo) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        id,
        name,
        order,
        line,
        batch,
        available_at,
        memo,
    )
    .execute(&mut *conn)
    .await?;
    let mut accounts = Vec::with_capacity(merged.len());
    let mut amounts = Vec::with_capacity(merged.len());
    for (account, amount) in merged {
        accounts.push(account_id(conn, account).await?);
        amounts.push(amount);
    }
    sqlx::query!(
        "INSERT INTO ledger_entries (transaction_id, account_id, amount_vnd) SELECT $1, * FROM unnest($2::bigint[], $3::bigint[])",
        id,
        &accounts,
        &amounts,
    )
    .execute(&mut *conn)
    .await?;
    Ok(Some((id, accounts)))
}

/// An account's balance as its holder reads it (credits positive), split by the hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balance {
    /// Entries whose transaction's `available_at` has not come yet.
    pub held: i64,
    /// Every other entry.
    pub available: i64,
}

/// The balances of accounts, by id (credits positive).
pub async fn balances(
    conn: &mut PgConnection,
    accounts: &[i64],
) -> anyhow::Result<BTreeMap<i64, Balance>> {
    let rows = sqlx::query!(
        r#"SELECT e.account_id,
              (-COALESCE(sum(e.amount_vnd) FILTER (WHERE t.available_at > now()), 0))::bigint AS "held!",
              (-COALESCE(sum(e.amount_vnd) FILTER (WHERE t.available_at IS NULL OR t.available_at <= now()), 0))::bigint AS "available!"
           FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id
           WHERE e.account_id = ANY($1) GROUP BY e.account_id"#,
        accounts,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.account_id,
                Balance {
                    held: r.held,
                    available: r.available,
                },
            )
        })
        .collect())
}

/// Serializes everything that books a checkout's orders (its capture, its orders' arrival):
/// the capture and an order's first event may come at the same moment, and each must see
/// the other.
pub async fn lock_checkout(conn: &mut PgConnection, checkout: Uuid) -> anyhow::Result<()> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7331))",
        checkout.to_string()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Serializes an order's sale and its delivery, which come from two services' events at
/// any moment: each settles the order from what the other wrote, and must see it. A
/// cash-on-delivery order's row is made by its delivery, so before that there is no row for
/// the sale to wait on: without this lock, a sale handled during its delivery found no row
/// and booked nothing, while the delivery found no lines and booked only the pending money,
/// and nothing came after to book the rest.
pub async fn lock_order(conn: &mut PgConnection, order: OrderId) -> anyhow::Result<()> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7332))",
        order.0.to_string()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A refund of an order, as the ledger counts it (failed refunds do not count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundFact {
    /// Đồng.
    pub amount: i64,
    /// Confirmed by the provider (else still pending).
    pub succeeded: bool,
    /// The listing of the line it is for, when it names one.
    pub listing: Option<Uuid>,
}

/// A lot's part of a sold line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotFact {
    /// Its code.
    pub code: String,
    /// The household that grew it.
    pub household: Option<Uuid>,
    /// How much of the line, in thousandths of the unit.
    pub thousandths: i64,
}

/// A sold line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFact {
    /// Its listing.
    pub listing: Uuid,
    /// Price × quantity.
    pub line_total: i64,
    /// Commission, basis points.
    pub rate_bps: i64,
    /// The cooperative's fee on its members' parts, basis points.
    pub coop_fee_bps: i64,
    /// The lots that filled it.
    pub lots: Vec<LotFact>,
}

/// Everything the ledger books an order from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    /// Lines and delivery fee.
    pub total: i64,
    /// The seller.
    pub seller: Owner,
    /// `cod`, `vnpay`, `stripe`, `momo`.
    pub method: String,
    /// Its payment was captured (online orders).
    pub captured: bool,
    /// It was delivered (and, for cash on delivery, the cash collected).
    pub delivered: bool,
    /// Its refunds that did not fail.
    pub refunds: Vec<RefundFact>,
    /// Its lines as sold (empty until the listing side tells).
    pub lines: Vec<LineFact>,
}

/// What was booked for one line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LineBooked {
    /// Its listing.
    pub listing: Uuid,
    /// Line total less refunds of it.
    pub gross: i64,
    /// Commission on the gross.
    pub commission: i64,
    /// Each lot's part, the cooperative's fee on it and the member's share.
    pub lots: Vec<LotBooked>,
}

/// What was booked for one lot of a line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LotBooked {
    /// Its code.
    pub code: String,
    /// Its part of the line's net.
    pub part: i64,
    /// The cooperative's fee on it (0 for the cooperative's own lot).
    pub fee: i64,
    /// The member's share (part less fee; 0 for the cooperative's own lot).
    pub share: i64,
}

/// `amount × bps / 10000`, rounded half up to whole đồng.
pub fn rate_of(amount: i64, bps: i64) -> i64 {
    let x = i128::from(amount) * i128::from(bps);
    i64::try_from((x + 5_000).div_euclid(10_000)).unwrap_or(i64::MAX)
}

/// Splits `amount` in proportion to `weights` (largest remainder, ties to the earlier): the
/// parts add up to `amount` exactly.
pub fn split(amount: i64, weights: &[i64]) -> Vec<i64> {
    let total: i128 = weights.iter().map(|w| i128::from((*w).max(0))).sum();
    if total == 0 {
        let mut parts = vec![0; weights.len()];
        if let Some(first) = parts.first_mut() {
            *first = amount;
        }
        return parts;
    }
    let exact: Vec<(i128, i128)> = weights
        .iter()
        .map(|w| {
            let x = i128::from(amount) * i128::from((*w).max(0));
            (x.div_euclid(total), x.rem_euclid(total))
        })
        .collect();
    let mut parts: Vec<i64> = exact
        .iter()
        .map(|(q, _)| i64::try_from(*q).unwrap_or(0))
        .collect();
    let left = amount - parts.iter().sum::<i64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|a, b| exact[*b].1.cmp(&exact[*a].1).then(a.cmp(b)));
    for i in order
        .into_iter()
        .take(usize::try_from(left.max(0)).unwrap_or(0))
    {
        if let Some(p) = parts.get_mut(i) {
            *p += 1;
        }
    }
    parts
}

/// What each account should hold for an order, from its facts, and what each line and lot
/// comes to (see the module's text for the rules).
pub fn book(f: &OrderFacts) -> (Vec<(Account, i64)>, Vec<LineBooked>) {
    let live: i64 = f.refunds.iter().map(|r| r.amount).sum();
    let succeeded: i64 = f
        .refunds
        .iter()
        .filter(|r| r.succeeded)
        .map(|r| r.amount)
        .sum();
    let cod = f.method == "cod";
    let mut e: Vec<(Account, i64)> = Vec::new();
    let paid = if cod { f.delivered } else { f.captured };
    if !paid {
        return (e, Vec::new());
    }
    // The seller delivers a cash order and takes the cash: it holds the whole total.
    let holder = if cod {
        Account::SellerCash(f.seller)
    } else {
        Account::ProviderClearing(f.method.clone())
    };
    e.push((holder, f.total - succeeded));
    e.push((Account::RefundsPayable, -(live - succeeded)));
    let sold = f.delivered && !f.lines.is_empty();
    if !sold {
        e.push((Account::SellerPending(f.seller), -(f.total - live)));
        return (e, Vec::new());
    }
    // The gross of each line: its total less the refunds naming it, then less what the
    // refunds naming no line took beyond the delivery fee.
    let mut named: BTreeMap<Uuid, i64> = BTreeMap::new();
    for r in &f.refunds {
        if let Some(l) = r.listing
            && f.lines.iter().any(|line| line.listing == l)
        {
            *named.entry(l).or_default() += r.amount;
        }
    }
    let unnamed = live - named.values().sum::<i64>();
    let lines_total: i64 = f.lines.iter().map(|l| l.line_total).sum();
    let delivery_fee = (f.total - lines_total).max(0);
    let mut beyond_fee = (unnamed - delivery_fee).max(0);
    let mut booked = Vec::with_capacity(f.lines.len());
    let mut commission = 0;
    let mut shares: BTreeMap<Uuid, i64> = BTreeMap::new();
    for line in &f.lines {
        let mut gross = (line.line_total - named.get(&line.listing).copied().unwrap_or(0)).max(0);
        let take = beyond_fee.min(gross);
        gross -= take;
        beyond_fee -= take;
        let c = rate_of(gross, line.rate_bps);
        commission += c;
        let mut lots = Vec::new();
        if f.seller.kind == SellerKind::Cooperative && !line.lots.is_empty() {
            let weights: Vec<i64> = line.lots.iter().map(|l| l.thousandths).collect();
            for (lot, part) in line.lots.iter().zip(split(gross - c, &weights)) {
                let (fee, share) = match lot.household {
                    Some(h) => {
                        let fee = rate_of(part, line.coop_fee_bps);
                        *shares.entry(h).or_default() += part - fee;
                        (fee, part - fee)
                    }
                    None => (0, 0),
                };
                lots.push(LotBooked {
                    code: lot.code.clone(),
                    part,
                    fee,
                    share,
                });
            }
        }
        booked.push(LineBooked {
            listing: line.listing,
            gross,
            commission: c,
            lots,
        });
    }
    let net = f.total - live - commission;
    let to_members: i64 = shares.values().sum();
    e.push((Account::Commission, -commission));
    e.push((Account::SellerPayable(f.seller), -(net - to_members)));
    for (member, share) in shares {
        e.push((
            Account::MemberPayable {
                cooperative: f.seller.id,
                member,
            },
            -share,
        ));
    }
    (e, booked)
}

/// Thousandths of a unit in a quantity (at most three decimal places).
pub fn thousandths(q: Quantity) -> i64 {
    use rust_decimal::prelude::ToPrimitive;
    (q.as_decimal() * rust_decimal::Decimal::from(1000))
        .trunc()
        .to_i64()
        .unwrap_or(0)
}

/// A seller kind as the payment schema writes it.
pub fn seller_kind(s: &str) -> SellerKind {
    if s == "cooperative" {
        SellerKind::Cooperative
    } else {
        SellerKind::Household
    }
}

/// Remembers an order from one of its events (`order.placed`, `order.delivered`): its
/// checkout, total, seller and method, and, when `delivered` says when, its delivery and
/// the moment its money leaves the hold. Whichever event comes first makes the row; a
/// later one fills in only what is missing.
pub async fn remember_order(
    conn: &mut PgConnection,
    order: &nongsan_shared::contracts::events::OrderEvent,
    delivered: Delivered,
) -> anyhow::Result<()> {
    sqlx::query!(
        "INSERT INTO payment_orders (order_id, checkout_id, total_vnd, seller_kind, seller_id, seller_name, method, delivered_at, available_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (order_id) DO UPDATE SET
             seller_kind = COALESCE(payment_orders.seller_kind, EXCLUDED.seller_kind),
             seller_id = COALESCE(payment_orders.seller_id, EXCLUDED.seller_id),
             seller_name = COALESCE(payment_orders.seller_name, EXCLUDED.seller_name),
             method = COALESCE(payment_orders.method, EXCLUDED.method),
             delivered_at = COALESCE(payment_orders.delivered_at, EXCLUDED.delivered_at),
             available_at = COALESCE(payment_orders.available_at, EXCLUDED.available_at)",
        order.order_id.0,
        order.checkout_id.0,
        order.total_vnd.get(),
        order.seller.kind.as_str(),
        order.seller.id,
        order.seller.name,
        order.payment_method.as_str(),
        delivered.map(|d| d.0),
        delivered.and_then(|d| d.1),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// When an order was delivered, and when its money leaves the hold, if known.
pub type Delivered = Option<(DateTime<Utc>, Option<DateTime<Utc>>)>;

/// Loads an order's facts, books them ([`book`]) and posts what the ledger does not hold yet
/// as one transaction (memo `why`). The order's row is locked meanwhile. Answers the accounts
/// the transaction touched (empty when nothing moved, or the order is not known yet).
pub async fn settle_order(
    conn: &mut PgConnection,
    order: OrderId,
    why: &str,
) -> anyhow::Result<Vec<i64>> {
    let Some(o) = sqlx::query!(
        "SELECT checkout_id, total_vnd, seller_kind, seller_id, method, delivered_at, available_at
         FROM payment_orders WHERE order_id = $1 FOR UPDATE",
        order.0,
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(Vec::new());
    };
    let (Some(kind), Some(seller_id), Some(method)) = (o.seller_kind, o.seller_id, o.method) else {
        // Placed before the ledger existed: its money was never booked here.
        return Ok(Vec::new());
    };
    let seller = Owner {
        kind: seller_kind(&kind),
        id: seller_id,
    };
    let captured = method != "cod"
        && sqlx::query_scalar!(
            "SELECT EXISTS (SELECT 1 FROM payments WHERE checkout_id = $1 AND status = 'succeeded') AS \"x!\"",
            o.checkout_id,
        )
        .fetch_one(&mut *conn)
        .await?;
    let refunds = sqlx::query!(
        "SELECT amount_vnd, status, listing_id FROM refunds WHERE order_id = $1 AND status <> 'failed' ORDER BY created_at, id",
        order.0,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| RefundFact {
        amount: r.amount_vnd,
        succeeded: r.status == "succeeded",
        listing: r.listing_id,
    })
    .collect();
    let lots = sqlx::query!(
        r#"SELECT listing_id, lot_code, household_id, quantity AS "quantity: Quantity" FROM sale_lots WHERE order_id = $1 ORDER BY listing_id, lot_code"#,
        order.0,
    )
    .fetch_all(&mut *conn)
    .await?;
    let lines = sqlx::query!(
        "SELECT listing_id, line_total, rate_bps, coop_fee_bps FROM sale_lines WHERE order_id = $1 ORDER BY listing_id",
        order.0,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|l| LineFact {
        listing: l.listing_id,
        line_total: l.line_total,
        rate_bps: i64::from(l.rate_bps),
        coop_fee_bps: i64::from(l.coop_fee_bps.unwrap_or(0)),
        lots: lots
            .iter()
            .filter(|lot| lot.listing_id == l.listing_id)
            .map(|lot| LotFact {
                code: lot.lot_code.clone(),
                household: lot.household_id,
                thousandths: thousandths(lot.quantity),
            })
            .collect(),
    })
    .collect();
    let facts = OrderFacts {
        total: o.total_vnd,
        seller,
        method,
        captured,
        delivered: o.delivered_at.is_some(),
        refunds,
        lines,
    };
    // A delivered order's booking writes to the seller's balances, which a payout batch
    // locks in id order: locked here in the same order first, so that the two never each
    // hold one the other waits for (writing an entry share-locks its account, in the order
    // the accounts sort in, not their ids).
    if facts.delivered {
        lock_seller_balances(conn, order).await?;
    }
    let (target, booked) = book(&facts);

    // What the ledger holds for the order now.
    let held = sqlx::query!(
        r#"SELECT a.kind, a.provider, a.owner_kind, a.owner_id, a.member_id, sum(e.amount_vnd)::bigint AS "sum!"
           FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id JOIN ledger_accounts a ON a.id = e.account_id
           WHERE t.order_id = $1 GROUP BY a.id"#,
        order.0,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut delta: Vec<(Account, i64)> = target;
    for h in held {
        let account = Account::from_columns(
            &h.kind,
            h.provider,
            h.owner_kind.as_deref(),
            h.owner_id,
            h.member_id,
        )?;
        delta.push((account, -h.sum));
    }
    let posted = post(conn, Kind::Order(order), o.available_at, why, &delta).await?;
    for line in booked {
        sqlx::query!(
            "UPDATE sale_lines SET gross_vnd = $3, commission_vnd = $4
             WHERE order_id = $1 AND listing_id = $2 AND (gross_vnd, commission_vnd) IS DISTINCT FROM ($3, $4)",
            order.0,
            line.listing,
            line.gross,
            line.commission,
        )
        .execute(&mut *conn)
        .await?;
        for lot in line.lots {
            sqlx::query!(
                "UPDATE sale_lots SET part_vnd = $4, fee_vnd = $5, share_vnd = $6
                 WHERE order_id = $1 AND listing_id = $2 AND lot_code = $3 AND (part_vnd, fee_vnd, share_vnd) IS DISTINCT FROM ($4, $5, $6)",
                order.0,
                line.listing,
                lot.code,
                lot.part,
                lot.fee,
                lot.share,
            )
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(posted.map(|(_, accounts)| accounts).unwrap_or_default())
}

/// Locks the balances of `order`'s seller (and of its members, for a cooperative), in id
/// order, before a write that will check them with [`overdrawn`]. Writing entries first
/// takes a share lock on each account (their foreign key): two such writes for one seller
/// then each waited for the other's share lock to lock the account, and PostgreSQL killed
/// one. Locked first, the second waits for the first to end.
pub async fn lock_seller_balances(conn: &mut PgConnection, order: OrderId) -> anyhow::Result<()> {
    sqlx::query_scalar!(
        "SELECT a.id FROM ledger_accounts a JOIN payment_orders o ON a.owner_kind = o.seller_kind AND a.owner_id = o.seller_id
         WHERE o.order_id = $1 AND a.kind IN ('seller_payable', 'member_payable', 'seller_pending', 'seller_cash')
         ORDER BY a.id FOR UPDATE OF a",
        order.0,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(())
}

/// The first of `accounts` that someone is owed from and that reads negative: a pending
/// balance in total, a payable one held or available. The accounts' rows are locked first
/// (in id order), so two takings from one balance (two refunds, a refund and a payout batch)
/// are checked one after the other, each seeing the other's entries.
pub async fn overdrawn(conn: &mut PgConnection, accounts: &[i64]) -> anyhow::Result<Option<i64>> {
    let owed = sqlx::query!(
        "SELECT id, kind FROM ledger_accounts WHERE id = ANY($1) AND kind IN ('seller_payable', 'member_payable', 'seller_pending')
         ORDER BY id FOR UPDATE",
        accounts,
    )
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<i64> = owed.iter().map(|a| a.id).collect();
    let balances = balances(conn, &ids).await?;
    Ok(owed.into_iter().find_map(|a| {
        let b = balances.get(&a.id).copied().unwrap_or_default();
        // Pending money has no hold: its entries carry the order's date only once the
        // order is delivered, when they take it out again.
        let bad = if a.kind == "seller_pending" {
            b.held + b.available < 0
        } else {
            b.held < 0 || b.available < 0
        };
        bad.then_some(a.id)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    #[test]
    fn rates_round_half_up_to_whole_dong() {
        assert_eq!(rate_of(10_000, 500), 500);
        assert_eq!(rate_of(12_345, 500), 617); // 617.25
        assert_eq!(rate_of(12_350, 500), 618); // 617.5 → 618
        assert_eq!(rate_of(0, 800), 0);
        assert_eq!(rate_of(99, 10_000), 99);
    }

    #[test]
    fn a_split_adds_up_and_follows_the_weights() {
        assert_eq!(split(100, &[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(split(10, &[3000, 1000]), vec![8, 2]); // 7.5, 2.5: tie to the earlier
        assert_eq!(split(7, &[0, 0]), vec![7, 0]);
        let mut rng = StdRng::seed_from_u64(12);
        for _ in 0..2_000 {
            let n = rng.random_range(1..6);
            let weights: Vec<i64> = (0..n).map(|_| rng.random_range(1..100_000)).collect();
            let amount = rng.random_range(0..10_000_000);
            let parts = split(amount, &weights);
            assert_eq!(parts.iter().sum::<i64>(), amount);
            let total: i64 = weights.iter().sum();
            for (p, w) in parts.iter().zip(&weights) {
                let exact = amount as f64 * *w as f64 / total as f64;
                assert!((*p as f64 - exact).abs() < 1.0, "{p} vs {exact}");
            }
        }
    }

    fn owner(kind: SellerKind) -> Owner {
        Owner {
            kind,
            id: Uuid::from_u128(7),
        }
    }

    /// Random facts of an order, in any state.
    fn random_facts(rng: &mut StdRng) -> OrderFacts {
        let kind = if rng.random_bool(0.5) {
            SellerKind::Cooperative
        } else {
            SellerKind::Household
        };
        let lines: Vec<LineFact> = (0..rng.random_range(1..4))
            .map(|i| LineFact {
                listing: Uuid::from_u128(100 + i),
                line_total: rng.random_range(1_000..2_000_000),
                rate_bps: rng.random_range(0..2_000),
                coop_fee_bps: rng.random_range(0..1_500),
                lots: (0..rng.random_range(1..4))
                    .map(|j| LotFact {
                        code: format!("L{j}"),
                        household: rng.random_bool(0.8).then(|| Uuid::from_u128(200 + j)),
                        thousandths: rng.random_range(1..50_000),
                    })
                    .collect(),
            })
            .collect();
        let fee = rng.random_range(0..50_000);
        let total = lines.iter().map(|l| l.line_total).sum::<i64>() + fee;
        let mut left = total;
        let mut refunds = Vec::new();
        for _ in 0..rng.random_range(0..3) {
            let named = rng
                .random_bool(0.5)
                .then(|| &lines[rng.random_range(0..lines.len())]);
            let room = match named {
                Some(l) => {
                    let already: i64 = refunds
                        .iter()
                        .filter(|r: &&RefundFact| r.listing == Some(l.listing))
                        .map(|r| r.amount)
                        .sum();
                    (l.line_total - already).min(left)
                }
                None => left,
            };
            if room <= 0 {
                continue;
            }
            let amount = rng.random_range(1..=room);
            left -= amount;
            refunds.push(RefundFact {
                amount,
                succeeded: rng.random_bool(0.5),
                listing: named.map(|l| l.listing),
            });
        }
        OrderFacts {
            total,
            seller: owner(kind),
            method: if rng.random_bool(0.3) { "cod" } else { "vnpay" }.to_owned(),
            captured: rng.random_bool(0.8),
            delivered: rng.random_bool(0.6),
            refunds,
            lines: if rng.random_bool(0.9) {
                lines
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn every_booking_sums_to_zero_and_owes_no_one_a_negative_amount() {
        let mut rng = StdRng::seed_from_u64(2026);
        for _ in 0..20_000 {
            let f = random_facts(&mut rng);
            let (entries, lines) = book(&f);
            assert_eq!(entries.iter().map(|e| e.1).sum::<i64>(), 0, "{f:?}");
            for (account, amount) in &entries {
                match account {
                    Account::ProviderClearing(_)
                    | Account::CodInTransit
                    | Account::SellerCash(_) => {
                        assert!(*amount >= 0, "{account:?} {amount} {f:?}")
                    }
                    _ => assert!(*amount <= 0, "{account:?} {amount} {f:?}"),
                }
            }
            for (line, fact) in lines.iter().zip(&f.lines) {
                if !line.lots.is_empty() {
                    let parts: i64 = line.lots.iter().map(|l| l.part).sum();
                    assert_eq!(parts, line.gross - line.commission, "{f:?}");
                }
                for (lot, lot_fact) in line.lots.iter().zip(&fact.lots) {
                    let owed = if lot_fact.household.is_some() {
                        lot.part
                    } else {
                        0
                    };
                    assert_eq!(lot.fee + lot.share, owed, "{f:?}");
                    assert!(lot.share >= 0 && lot.fee >= 0, "{f:?}");
                }
            }
        }
    }
}
