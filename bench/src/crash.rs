//! The reliability scenario (`--scenarios crash`): a steady mixed load (two-seller cash
//! checkouts, a buyer paying through VNPay, sellers confirming orders, listing edits,
//! searches and listing reads) runs while one fault per round is made, `--crash-rounds`
//! times: in the one-process shape `nongsan up` is killed with SIGKILL and started again on
//! the same data; in the three-process shape the listing, order and payment processes are
//! killed in turn, then Redis is killed and started again `--redis-outage-secs` later on its
//! append-only file. The harness plays VNPay: each payment's IPN is first forged (it must be
//! refused with 97), then sent genuinely three times at once, payments are settled out of
//! order, and a late "cancelled" IPN follows (it must be refused as already recorded).
//!
//! During each fault the harness asks every process's `/readyz`; after the round it waits
//! for the events to settle and for the orphan reconciliation window, then checks the
//! invariants and prints each with its count: acknowledged checkouts, payments and edits all
//! present; stock equals the sum of movements; reserved equals what active reservations
//! hold; no reservation without a checkout; every event consumed once (each consumer's inbox
//! against the producer's outbox); no forged callback accepted; no payment credited twice;
//! every ledger transaction sums to zero. A broken invariant fails the run.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;
use sqlx::{Connection, PgConnection};

use super::{Api, Args, Server, in_parallel};

/// Seconds after which the server asks about a reservation's checkout, in this scenario
/// (the default is 60; the scenario would wait longer for the same check).
pub const ORPHAN_SECS: u64 = 10;

/// How many households' listings the load buys from (at most).
const SELLERS: usize = 32;

/// Per edited listing: the last price acknowledged, and the one in flight (if any).
type Prices = HashMap<String, (Option<i64>, Option<i64>)>;

/// One operation of a load task: `Some(Ok(()))` done, `Some(Err(why))` refused or
/// unanswered, `None` nothing to do this time.
type Op = Arc<
    dyn Fn(u64) -> futures_util::future::BoxFuture<'static, Option<std::result::Result<(), String>>>
        + Send
        + Sync,
>;

/// What the load saw, shared by its tasks.
#[derive(Default)]
struct Seen {
    /// Checkouts answered 201.
    checkouts: Mutex<Vec<String>>,
    /// The price edits.
    prices: Mutex<Prices>,
    /// Operations that succeeded, by kind.
    ok: [AtomicU64; 6],
    /// Operations refused (HTTP 4xx/5xx) or unanswered (connection refused while down).
    failed: [AtomicU64; 6],
    /// The last refusal of each kind that was an answer (not the process being down).
    refusal: Mutex<[Option<String>; 6]>,
    /// VNPay payments opened and not yet confirmed by an IPN answer: their payment URLs.
    unpaid: Mutex<Vec<String>>,
    /// The `vnp_TxnRef` of payments a genuine 'paid' IPN was answered 00 or 02 for.
    paid: Mutex<Vec<String>>,
    /// Genuine 'paid' IPNs answered, answered 00 (recorded), answered 02 (already
    /// recorded).
    paid_ipns: AtomicU64,
    paid_00: AtomicU64,
    paid_02: AtomicU64,
    /// Late 'cancelled' IPNs after a payment answered, and answered 02 (already recorded).
    late_cancels: AtomicU64,
    late_cancels_refused: AtomicU64,
    /// Forged IPNs sent, and those answered anything but 97 (bad signature).
    forged: AtomicU64,
    forged_accepted: AtomicU64,
    /// Settling turns taken: the newer of the two waiting payments on even turns, the older
    /// on odd ones, so IPNs come in another order than the payments.
    settles: AtomicU64,
    /// Payments whose IPNs were answered while an older payment still waited for its own.
    before_older: AtomicU64,
}

const KINDS: [&str; 6] = [
    "checkout",
    "confirm",
    "edit",
    "search",
    "read",
    "VNPay checkout or IPN",
];

/// The faults of the rounds, taken in turn.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The process is killed with SIGKILL and started again.
    Kill(&'static str),
    /// Redis is killed and started again after `--redis-outage-secs`.
    RedisAway,
}

impl Fault {
    fn name(self) -> String {
        match self {
            Self::Kill("up") => "`nongsan up` killed".to_owned(),
            Self::Kill(p) => format!("`{p}` killed"),
            Self::RedisAway => "Redis away".to_owned(),
        }
    }
}

/// The faults of a shape: `nongsan up` killed; or each service's process killed, then Redis
/// away.
fn faults(server: &Server) -> Vec<Fault> {
    let mut f: Vec<Fault> = server.names().into_iter().map(Fault::Kill).collect();
    if server.redis.is_some() {
        f.push(Fault::RedisAway);
    }
    f
}

/// Runs the rounds; answers the report's section.
pub async fn run(
    api: &Api,
    server: &mut Server,
    args: &Args,
    households: &[(String, String)],
    listings: &[(String, usize)],
) -> Result<String> {
    let buyers = in_parallel((0..9).collect(), 4, |n| {
        let api = api.clone();
        async move { api.account(300_000 + n, "buyer").await }
    })
    .await?;
    let mut by_seller: Vec<Vec<String>> = vec![Vec::new(); households.len()];
    for (id, h) in listings {
        by_seller[*h].push(id.clone());
    }
    let sellers: Vec<(usize, Vec<String>)> = by_seller
        .into_iter()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .take(SELLERS)
        .collect();
    if sellers.len() < 2 {
        bail!("the crash scenario needs listings of at least two households");
    }
    let faults = faults(server);
    let rounds = args.crash_rounds.unwrap_or(faults.len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Reliability: {}), under a mixed load, {} round{}, faults in turn: {}\n",
        server.describe(),
        rounds,
        if rounds == 1 { "" } else { "s" },
        faults
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "Load: 8 buyers checking out (cash on delivery, one unit from each of two sellers, a different pair of the first {SELLERS} households each time), 1 buyer paying through VNPay (one unit, of those households' listings in turn; the harness plays VNPay: every payment's IPN is first forged (a wrong signature), then sent three times at once, the payments' IPNs in a different order than the payments, and a late 'cancelled' IPN follows a paid one), 1 seller confirming its orders, 1 seller editing prices, 2 searching, 2 reading listings. Each round runs {} s, makes its fault (a kill: SIGKILL, then the process started again on the same data; Redis: killed, and started again {} s later on its append-only file), and runs {} s more. Orphan window: `NONGSAN_RESERVATION_ORPHAN_SECS={ORPHAN_SECS}`. Events: each flow's handled inbox rows / the producer's outbox rows of the types its consumer handles (the inbox key makes a second handling impossible; the counts show none lost). Readiness: what each process's `/readyz` answered during the fault, and how long it took. Back in: seconds from the start again (of the killed process, or of Redis) to every process ready.\n",
        args.secs, args.redis_outage_secs, args.secs
    );
    let _ = writeln!(
        out,
        "| round | fault | operations so far (all rounds) | refused or unanswered during the fault | back in s | `/readyz` during the fault | acknowledged checkouts present | live checkouts without their stock | stock = movements | reserved = active reservations | orphans at restart → after the window | events consumed once | acknowledged payments paid | forged IPNs accepted | payments credited twice | unbalanced ledger transactions | edited listings at their last acknowledged price |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let seen = Arc::new(Seen::default());
    let mut broken = Vec::new();
    for round in 1..=rounds {
        let fault = faults[(round - 1) % faults.len()];
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = load(api, &seen, &stop, &buyers, &sellers, households);
        tokio::time::sleep(Duration::from_secs(args.secs)).await;
        let before: u64 = seen.ok.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let failed_before: u64 = seen.failed.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        // Back in: from the start again (of the killed process, or of Redis) to every
        // process ready.
        let (readiness, restart) = match fault {
            Fault::Kill(name) => {
                server.kill(name).await?;
                let r = server.readiness().await;
                let restart = Instant::now();
                server.restart(name).await?;
                (r, restart)
            }
            Fault::RedisAway => {
                let redis = server.redis.as_mut().context("Redis")?;
                redis.kill().await;
                let away = tokio::time::Instant::now();
                tokio::time::sleep(Duration::from_secs(args.redis_outage_secs / 2)).await;
                let r = server.readiness().await;
                // The outage lasts what was asked, the probe's time included.
                tokio::time::sleep_until(away + Duration::from_secs(args.redis_outage_secs)).await;
                let restart = Instant::now();
                server.redis.as_mut().context("Redis")?.launch().await?;
                server.wait_ready().await?;
                (r, restart)
            }
        };
        let restart_secs = restart.elapsed().as_secs_f64();
        let failed_down = seen
            .failed
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
            - failed_before;
        let mut db = PgConnection::connect(&server.postgres_url()?).await?;
        let orphans_at_restart = orphans(&mut db).await?;
        tokio::time::sleep(Duration::from_secs(args.secs)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        // Settle: every event published and handled, and the orphan window passed.
        let settle = Instant::now();
        let window = Duration::from_secs(ORPHAN_SECS * 2 + 5);
        let (mut orphans_after, mut events) = (orphans(&mut db).await?, flows(&mut db).await?);
        while (orphans_after > 0 || !events.settled)
            && settle.elapsed() < window + Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
            orphans_after = orphans(&mut db).await?;
            events = flows(&mut db).await?;
        }
        let c = check(&mut db, &seen).await?;
        let row = format!(
            "| {round} | {} | {before} | {failed_down} | {restart_secs:.1} | {} | {} of {} | {} | {} of {} listings off | {} listings off | {orphans_at_restart} → {orphans_after} | {} | {} of {} | {} of {} | {} | {} | {} of {} |",
            fault.name(),
            readiness.join(", "),
            c.checkouts_present,
            c.checkouts_acked,
            c.live_without_stock,
            c.stock_off,
            c.listings,
            c.reserved_off,
            events.summary,
            c.payments_paid,
            c.payments_acked,
            seen.forged_accepted.load(Ordering::Relaxed),
            seen.forged.load(Ordering::Relaxed),
            c.paid_twice,
            c.unbalanced,
            c.edits_kept,
            c.edits
        );
        eprintln!("{row}");
        let _ = writeln!(out, "{row}");
        if c.checkouts_present != c.checkouts_acked
            || c.live_without_stock > 0
            || c.stock_off > 0
            || c.reserved_off > 0
            || orphans_after > 0
            || !events.settled
            || c.payments_paid != c.payments_acked
            || seen.forged_accepted.load(Ordering::Relaxed) > 0
            || c.paid_twice > 0
            || c.unbalanced > 0
            || c.edits_kept != c.edits
        {
            broken.push(format!("round {round}: {row}"));
        }
        db.close().await?;
    }
    // The payment invariants hold vacuously when no payment went through: the load must
    // have paid, forged and sent late cancels, and every late cancel must have been refused.
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (recorded, forged, late, late_refused, before_older) = (
        count(&seen.paid_00),
        count(&seen.forged),
        count(&seen.late_cancels),
        count(&seen.late_cancels_refused),
        count(&seen.before_older),
    );
    if recorded == 0 || forged == 0 || late == 0 || before_older == 0 {
        broken.push(format!(
            "the VNPay payer tested nothing: {recorded} payments recorded, {forged} forged IPNs answered, {late} late cancels answered, {before_older} paid before an older one"
        ));
    }
    if late_refused != late {
        broken.push(format!(
            "{} of {late} late 'cancelled' IPNs after a payment were not refused as already recorded (02)",
            late - late_refused
        ));
    }
    let totals: Vec<String> = KINDS
        .iter()
        .enumerate()
        .map(|(i, k)| {
            format!(
                "{k} {} ok / {} refused or unanswered",
                seen.ok[i].load(Ordering::Relaxed),
                seen.failed[i].load(Ordering::Relaxed)
            )
        })
        .collect();
    let _ = writeln!(out, "\nOperations over all rounds: {}.", totals.join("; "));
    let _ = writeln!(
        out,
        "VNPay IPNs answered: {} genuine 'paid' IPNs ({} 00 recorded, {} 02 already recorded), {} late 'cancelled' IPNs after payment ({} refused as already recorded), {} forged ({} accepted); {} payments paid while an older one still waited.",
        count(&seen.paid_ipns),
        recorded,
        count(&seen.paid_02),
        late,
        late_refused,
        forged,
        count(&seen.forged_accepted),
        before_older,
    );
    let refusals: Vec<String> = seen
        .refusal
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .zip(KINDS)
        .filter_map(|(r, k)| r.as_ref().map(|r| format!("{k}: {r}")))
        .collect();
    if !refusals.is_empty() {
        let _ = writeln!(
            out,
            "Last answered refusal of each kind: {}.",
            refusals.join("; ")
        );
    }
    if !broken.is_empty() {
        bail!("{out}\nbroken invariants: {}", broken.join("; "));
    }
    Ok(out)
}

/// Starts the load's tasks; they run until `stop`, retrying through the outage.
fn load(
    api: &Api,
    seen: &Arc<Seen>,
    stop: &Arc<AtomicBool>,
    buyers: &[(String, String)],
    sellers: &[(usize, Vec<String>)],
    households: &[(String, String)],
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let spawn = |kind: usize, f: Op| {
        let (seen, stop) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                match f(i).await {
                    Some(Ok(())) => seen.ok[kind].fetch_add(1, Ordering::Relaxed),
                    Some(Err(why)) => {
                        if !why.starts_with("error sending request") {
                            seen.refusal
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)[kind] =
                                Some(why);
                        }
                        seen.failed[kind].fetch_add(1, Ordering::Relaxed)
                    }
                    // Nothing to do this time.
                    None => 0,
                };
                i += 1;
            }
        })
    };
    // Each checkout buys one unit from each of two sellers, a different pair each time, so
    // that a long run spreads over many listings instead of selling a few out.
    let stock: Arc<[Vec<String>]> = sellers.iter().map(|(_, l)| l.clone()).collect();
    for (b, buyer) in buyers.iter().take(8).enumerate() {
        let (api, seen, token, stock) = (api.clone(), seen.clone(), buyer.1.clone(), stock.clone());
        tasks.push(spawn(0, Arc::new(move |i| {
            let (api, seen, token) = (api.clone(), seen.clone(), token.clone());
            let idx = usize::try_from(i).unwrap_or(0);
            let (first, second) = (&stock[(b + 2 * idx) % stock.len()], &stock[(b + 2 * idx + 1) % stock.len()]);
            let body = json!({
                "lines": [{ "listing_id": first[idx % first.len()], "quantity": "1" }, { "listing_id": second[(idx * 7) % second.len()], "quantity": "1" }],
                "delivery": { "province_code": "68", "commune_code": "24931", "street": "12 Lê Lợi", "recipient_name": "Nguyễn Thị Hoa", "recipient_phone": "0987654321" },
                "payment_method": "cod",
            });
            Box::pin(async move {
                let key = uuid::Uuid::now_v7().to_string();
                match api.call(reqwest::Method::POST, "/v1/checkouts", Some(&token), Some(&body), 500 + b, Some(&key)).await {
                    Ok((201, made)) => {
                        if let Some(id) = made["id"].as_str() {
                            seen.checkouts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(id.to_owned());
                        }
                        Some(Ok(()))
                    }
                    other => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Some(Err(answer(other)))
                    }
                }
            })
        })));
    }
    // The first seller confirms its placed orders, one at a time.
    {
        let (api, (seller_id, token)) = (api.clone(), households[sellers[0].0].clone());
        tasks.push(spawn(1, Arc::new(move |_| {
            let (api, seller_id, token) = (api.clone(), seller_id.clone(), token.clone());
            Box::pin(async move {
                let path = format!("/v1/orders?seller_kind=household&seller_id={seller_id}&status=placed&limit=1");
                let page = match api.call(reqwest::Method::GET, &path, Some(&token), None, 700, None).await {
                    Ok((200, page)) => page,
                    other => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return Some(Err(answer(other)));
                    }
                };
                let Some(order) = page["items"][0]["id"].as_str().map(str::to_owned) else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return None;
                };
                let res = api
                    .call(reqwest::Method::POST, &format!("/v1/orders/{order}/confirm"), Some(&token), Some(&json!({})), 700, None)
                    .await;
                Some(if matches!(res, Ok((200, _))) { Ok(()) } else { Err(answer(res)) })
            })
        })));
    }
    // The second seller edits the price of its first listing; what was acknowledged must stay.
    {
        let (api, seen, token) = (
            api.clone(),
            seen.clone(),
            households[sellers[1].0].1.clone(),
        );
        let listing = sellers[1].1[0].clone();
        tasks.push(spawn(
            2,
            Arc::new(move |i| {
                let (api, seen, token, listing) =
                    (api.clone(), seen.clone(), token.clone(), listing.clone());
                let price = 50_000 + i64::try_from(i % 1000).unwrap_or(0) * 10;
                Box::pin(async move {
                    let set = |acked: Option<i64>, flying: Option<i64>| {
                        let mut p = seen
                            .prices
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let entry = p.entry(listing.clone()).or_insert((None, None));
                        if acked.is_some() {
                            entry.0 = acked;
                        }
                        entry.1 = flying;
                    };
                    set(None, Some(price));
                    let res = api
                        .call(
                            reqwest::Method::PATCH,
                            &format!("/v1/listings/{listing}"),
                            Some(&token),
                            Some(&json!({ "price_vnd": price })),
                            701,
                            None,
                        )
                        .await;
                    if matches!(res, Ok((200, _))) {
                        set(Some(price), None);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Some(Ok(()))
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Some(Err(answer(res)))
                    }
                })
            }),
        ));
    }
    if let Some(payer) = buyers.get(8) {
        let listings: Vec<String> = stock.iter().map(|l| l[l.len() - 1].clone()).collect();
        tasks.push(spawn(5, pay(api, seen, &payer.1, listings)));
    }
    for s in 0..2 {
        let api = api.clone();
        tasks.push(spawn(
            3,
            Arc::new(move |i| {
                let api = api.clone();
                Box::pin(async move {
                    let q = ["xoai", "ca%20phe", "rau", "gao%20st25"]
                        [usize::try_from(i % 4).unwrap_or(0)];
                    let res = api.get(&format!("/v1/search?q={q}"), 800 + s).await;
                    if res.is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Some(res)
                })
            }),
        ));
    }
    for r in 0..2 {
        let (api, ids) = (api.clone(), sellers[r % sellers.len()].1.clone());
        tasks.push(spawn(
            4,
            Arc::new(move |i| {
                let api = api.clone();
                let id = ids[usize::try_from(i).unwrap_or(0) % ids.len()].clone();
                Box::pin(async move {
                    let res = api.get(&format!("/v1/listings/{id}"), 900 + r).await;
                    if res.is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Some(res)
                })
            }),
        ));
    }
    tasks
}

/// The VNPay secret of the run's payment service: the harness plays VNPay.
pub const VNPAY_SECRET: &str = "bench-vnpay-hash-secret-0123456789";
/// The run's VNPay merchant code.
pub const VNPAY_TMN: &str = "BENCH001";

/// A buyer paying through VNPay, and VNPay: while fewer than two payments wait, it opens one
/// (a checkout); otherwise it settles one of the two, the newer on even turns (so IPNs come
/// in another order than the payments): a forged IPN first (signed with the wrong secret),
/// then the genuine 'paid' IPN three times at once, then a late 'cancelled' one. A payment
/// whose IPNs got no answer (the process down) waits for a later turn, as VNPay retries.
fn pay(api: &Api, seen: &Arc<Seen>, token: &str, listings: Vec<String>) -> Op {
    let (api, seen, token) = (api.clone(), seen.clone(), token.to_owned());
    Arc::new(move |i| {
        let (api, seen, token) = (api.clone(), seen.clone(), token.clone());
        let listing = listings[usize::try_from(i).unwrap_or(0) % listings.len()].clone();
        Box::pin(async move {
            let waiting = {
                let unpaid = seen
                    .unpaid
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                (unpaid.len() >= 2).then(|| {
                    let turn = seen.settles.fetch_add(1, Ordering::Relaxed);
                    unpaid[if turn % 2 == 0 { unpaid.len() - 1 } else { 0 }].clone()
                })
            };
            let Some(url) = waiting else {
                let body = json!({
                    "lines": [{ "listing_id": listing, "quantity": "1" }],
                    "delivery": { "province_code": "68", "commune_code": "24931", "street": "12 Lê Lợi", "recipient_name": "Nguyễn Thị Hoa", "recipient_phone": "0987654321" },
                    "payment_method": "vnpay",
                });
                let key = uuid::Uuid::now_v7().to_string();
                let res = api
                    .call(
                        reqwest::Method::POST,
                        "/v1/checkouts",
                        Some(&token),
                        Some(&body),
                        600,
                        Some(&key),
                    )
                    .await;
                return Some(match res {
                    Ok((201, made)) => {
                        let (Some(id), Some(url)) =
                            (made["id"].as_str(), made["payment_url"].as_str())
                        else {
                            return Some(Err(format!(
                                "a VNPay checkout without its payment URL: {made}"
                            )));
                        };
                        seen.checkouts
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(id.to_owned());
                        seen.unpaid
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(url.to_owned());
                        Ok(())
                    }
                    other => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Err(answer(other))
                    }
                });
            };
            let sent: BTreeMap<String, String> = reqwest::Url::parse(&url)
                .map(|u| {
                    u.query_pairs()
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let number = format!("{}", 15_000_000 + i);
            let ipn = |secret: &str, code: &str| {
                let query = nongsan_payment::vnpay::ipn_query(&sent, secret, code, None, &number);
                let api = api.clone();
                async move {
                    match api
                        .call(
                            reqwest::Method::GET,
                            &format!("/v1/payments/vnpay/ipn?{query}"),
                            None,
                            None,
                            601,
                            None,
                        )
                        .await
                    {
                        Ok((200, a)) => Ok(a["RspCode"].as_str().unwrap_or("").to_owned()),
                        other => Err(answer(other)),
                    }
                }
            };
            match ipn("not the merchant's secret", "00").await {
                Ok(code) => {
                    seen.forged.fetch_add(1, Ordering::Relaxed);
                    if code != "97" {
                        seen.forged_accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Some(Err(e));
                }
            }
            let answers = futures_util::future::join_all([
                ipn(VNPAY_SECRET, "00"),
                ipn(VNPAY_SECRET, "00"),
                ipn(VNPAY_SECRET, "00"),
            ])
            .await;
            let mut recorded = false;
            for code in answers.iter().flatten() {
                seen.paid_ipns.fetch_add(1, Ordering::Relaxed);
                match code.as_str() {
                    "00" => seen.paid_00.fetch_add(1, Ordering::Relaxed),
                    "02" => seen.paid_02.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
                recorded |= code == "00" || code == "02";
            }
            if !recorded {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Some(Err(answers
                    .into_iter()
                    .find_map(|a| a.err())
                    .unwrap_or_else(|| "a genuine IPN was not recorded".to_owned())));
            }
            {
                let mut unpaid = seen
                    .unpaid
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if unpaid.first().is_some_and(|u| *u != url) {
                    seen.before_older.fetch_add(1, Ordering::Relaxed);
                }
                unpaid.retain(|u| *u != url);
            }
            if let Some(txn) = sent.get("vnp_TxnRef") {
                seen.paid
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(txn.clone());
            }
            if let Ok(code) = ipn(VNPAY_SECRET, "24").await {
                seen.late_cancels.fetch_add(1, Ordering::Relaxed);
                if code == "02" {
                    seen.late_cancels_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Ok(()))
        })
    })
}

/// What a refused call answered.
fn answer(res: std::result::Result<(u16, serde_json::Value), String>) -> String {
    match res {
        Ok((status, body)) => format!("{status} {}", body["code"].as_str().unwrap_or("")),
        Err(e) => e,
    }
}

/// Active reservations with no stored checkout.
async fn orphans(db: &mut PgConnection) -> Result<i64> {
    Ok(sqlx::query_scalar(
        r#"SELECT count(*) FROM listing.reservations r WHERE r.status = 'active'
           AND NOT EXISTS (SELECT 1 FROM "order".checkouts c WHERE c.reservation_id = r.id)"#,
    )
    .fetch_one(db)
    .await?)
}

/// Each consumer's inbox against its producers' outboxes.
pub(crate) struct Events {
    /// Every event sent has been handled by each of its consumers.
    pub(crate) settled: bool,
    /// Per flow, handled of sent.
    pub(crate) summary: String,
}

/// (producer, consumer, event types the consumer handles, and what else it leaves aside: an
/// SQL condition on the producer's outbox rows).
const FLOWS: [(&str, &str, &[&str], &str); 5] = [
    (
        "order",
        "payment",
        &["order.placed", "order.refund_due", "order.delivered"],
        // The payment service does not take a cash-on-delivery order's placement.
        "AND NOT (event_type = 'order.placed' AND payload->>'payment_method' = 'cod')",
    ),
    (
        "order",
        "listing",
        &[
            "order.confirmed",
            "order.cancelled",
            "order.returned",
            "order.paid",
        ],
        "",
    ),
    ("listing", "payment", &["stock.sold"], ""),
    ("listing", "order", &["stock.sold"], ""),
    (
        "payment",
        "order",
        &["payment.succeeded", "payment.refunded"],
        "",
    ),
];

pub(crate) async fn flows(db: &mut PgConnection) -> Result<Events> {
    let mut settled = true;
    let mut parts = Vec::new();
    for (producer, consumer, types, aside) in FLOWS {
        let types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
        let sent: i64 = sqlx::query_scalar(&format!(
            r#"SELECT count(*) FROM "{producer}".outbox WHERE event_type = ANY($1) {aside}"#
        ))
        .bind(&types)
        .fetch_one(&mut *db)
        .await?;
        // The types the consumer has a handler for, each in its inbox once.
        let (received, done): (i64, i64) = sqlx::query_as(&format!(
            r#"SELECT count(*), count(*) FILTER (WHERE status = 'done') FROM "{consumer}".inbox WHERE source = $1 AND event_type = ANY($2)"#
        ))
        .bind(producer)
        .bind(&types)
        .fetch_one(&mut *db)
        .await?;
        settled &= received == done && received == sent;
        parts.push(format!("{producer}→{consumer} {done}/{sent}"));
    }
    let unpublished: i64 = sqlx::query_scalar(
        r#"SELECT (SELECT count(*) FROM listing.outbox WHERE published_at IS NULL)
                + (SELECT count(*) FROM "order".outbox WHERE published_at IS NULL)
                + (SELECT count(*) FROM payment.outbox WHERE published_at IS NULL)"#,
    )
    .fetch_one(&mut *db)
    .await?;
    settled &= unpublished == 0;
    Ok(Events {
        settled,
        summary: parts.join(", "),
    })
}

/// The invariants' counts.
struct Checked {
    checkouts_acked: i64,
    checkouts_present: i64,
    /// Checkouts still alive (placed or awaiting payment) whose reservation no longer holds.
    live_without_stock: i64,
    listings: i64,
    stock_off: i64,
    reserved_off: i64,
    /// VNPay payments a genuine IPN was recorded for, and those of them stored as succeeded.
    payments_acked: i64,
    payments_paid: i64,
    paid_twice: i64,
    unbalanced: i64,
    edits: usize,
    edits_kept: usize,
}

async fn check(db: &mut PgConnection, seen: &Seen) -> Result<Checked> {
    let acked = seen
        .checkouts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let present: i64 =
        sqlx::query_scalar(r#"SELECT count(*) FROM "order".checkouts WHERE id::text = ANY($1)"#)
            .bind(&acked)
            .fetch_one(&mut *db)
            .await?;
    let live_without_stock: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "order".checkouts c WHERE c.status IN ('placed', 'pending_payment')
           AND NOT EXISTS (SELECT 1 FROM listing.reservations r WHERE r.id = c.reservation_id AND r.status IN ('active', 'committed'))"#,
    )
    .fetch_one(&mut *db)
    .await?;
    let nongsan_listing::stock::levels::Consistency {
        listings,
        off_movements: stock_off,
        off_reservations: reserved_off,
    } = nongsan_listing::stock::levels::consistency(&mut *db).await?;
    let paid_twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT checkout_id FROM payment.payments WHERE status = 'succeeded' GROUP BY checkout_id HAVING count(*) > 1) t",
    )
    .fetch_one(&mut *db)
    .await?;
    let unbalanced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT transaction_id FROM payment.ledger_entries GROUP BY transaction_id HAVING sum(amount_vnd) <> 0) t",
    )
    .fetch_one(&mut *db)
    .await?;
    let paid = seen
        .paid
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let payments_paid: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payment.payments WHERE method = 'vnpay' AND status = 'succeeded' AND txn_ref = ANY($1)",
    )
    .bind(&paid)
    .fetch_one(&mut *db)
    .await?;
    let prices = seen
        .prices
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut edits_kept = 0;
    for (listing, (acked, flying)) in &prices {
        let stored: i64 =
            sqlx::query_scalar("SELECT price_vnd FROM listing.listings WHERE id::text = $1")
                .bind(listing)
                .fetch_one(&mut *db)
                .await
                .context("an edited listing")?;
        // The last acknowledged price, or a later one whose answer the kill cut off.
        if acked.is_none_or(|a| a == stored) || *flying == Some(stored) {
            edits_kept += 1;
        }
    }
    Ok(Checked {
        checkouts_acked: i64::try_from(acked.len()).unwrap_or(i64::MAX),
        checkouts_present: present,
        live_without_stock,
        listings,
        stock_off,
        reserved_off,
        payments_acked: i64::try_from(paid.len()).unwrap_or(i64::MAX),
        payments_paid,
        paid_twice,
        unbalanced,
        edits: prices.len(),
        edits_kept,
    })
}
