//! Reconciliation: a callback can be lost (the provider gave up, the process died between
//! the provider's answer and ours). Every payment still pending `payment_reconcile_after_secs`
//! after it was opened is asked of its provider, and settled as the provider says, through
//! the same path as the callback.

use std::time::Duration;

use chrono::Utc;
use nongsan_shared::{
    CheckoutId, PaymentId, Vnd,
    contracts::payments::{PaymentMethod, PaymentStatus},
};
use secrecy::ExposeSecret;

use crate::{
    AppState, momo,
    payments::{Settled, settle},
    vnpay,
};

/// After a payment's page closed, how long a provider may still be finishing it.
const GRACE: chrono::Duration = chrono::Duration::minutes(5);

/// Runs [`reconcile_once`] every `payment_sweep_ms`.
pub async fn run(app: AppState) {
    let every = Duration::from_millis(app.settings.payment_sweep_ms.max(10));
    loop {
        tokio::time::sleep(every).await;
        match reconcile_once(&app).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                payments = n,
                "pending payments settled by asking their provider"
            ),
            Err(e) => tracing::warn!(error = %e, "reconciliation failed; it tries again"),
        }
    }
}

/// Asks the provider about each payment pending for too long; answers how many it settled.
pub async fn reconcile_once(app: &AppState) -> anyhow::Result<usize> {
    let after = i64::try_from(app.settings.payment_reconcile_after_secs).unwrap_or(600);
    let due = sqlx::query_scalar!(
        r#"SELECT id AS "id: PaymentId" FROM payments
           WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1)
             AND (checked_at IS NULL OR checked_at < now() - make_interval(secs => $1))
           ORDER BY created_at LIMIT 50"#,
        after as f64,
    )
    .fetch_all(&app.pool)
    .await?;
    let mut settled = 0;
    for id in due {
        if check(app, id).await? {
            settled += 1;
        }
    }
    Ok(settled)
}

/// What the provider says of a payment.
enum Verdict {
    /// It took the money: its transaction.
    Paid(String),
    /// It never will.
    Failed(String),
    /// Not finished yet, or no usable answer.
    Unknown,
}

/// Asks the provider about one pending payment (locked: a callback arriving meanwhile waits
/// and then finds it settled); answers whether it was settled.
async fn check(app: &AppState, id: PaymentId) -> anyhow::Result<bool> {
    let mut tx = app.pool.begin().await?;
    let Some(p) = sqlx::query!(
        r#"SELECT checkout_id AS "checkout_id: CheckoutId", method AS "method: PaymentMethod", amount_vnd AS "amount_vnd: Vnd",
                txn_ref, provider_created, expires_at
           FROM payments WHERE id = $1 AND status = 'pending' FOR UPDATE SKIP LOCKED"#,
        id.0,
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(false);
    };
    let closed = p.expires_at.is_some_and(|e| e + GRACE < Utc::now());
    let verdict = match p.method {
        PaymentMethod::Vnpay => {
            let s = &app.settings;
            match (&s.vnpay_tmn_code, &s.vnpay_hash_secret) {
                (Some(tmn), Some(secret)) => {
                    let body = vnpay::api_request(
                        tmn,
                        secret.expose_secret(),
                        &vnpay::ApiCall::Query {
                            txn_ref: &p.txn_ref,
                            transaction_date: p.provider_created.as_deref().unwrap_or(""),
                        },
                        &uuid::Uuid::now_v7().simple().to_string(),
                        Utc::now(),
                        "127.0.0.1",
                    );
                    match vnpay::call_api(&app.http, &s.vnpay_api_url, &body).await {
                        Ok(a) if a.response_code == "00" && a.transaction_status == "00" => {
                            if a.amount.parse::<i64>().ok() == p.amount_vnd.get().checked_mul(100) {
                                Verdict::Paid(a.transaction_no)
                            } else {
                                tracing::error!(payment = %id, amount = a.amount, "VNPay reports another amount for this payment; left for an operator");
                                Verdict::Unknown
                            }
                        }
                        // Found, not finished: once its page closed, it never will be.
                        Ok(a) if a.response_code == "00" && a.transaction_status == "01" => {
                            if closed {
                                Verdict::Failed(a.transaction_no)
                            } else {
                                Verdict::Unknown
                            }
                        }
                        Ok(a) if a.response_code == "00" => Verdict::Failed(a.transaction_no),
                        // 91: VNPay has no such transaction: the buyer never paid.
                        Ok(a) if a.response_code == "91" && closed => {
                            Verdict::Failed(String::new())
                        }
                        Ok(a) => {
                            tracing::info!(payment = %id, code = a.response_code, "VNPay could not say yet");
                            Verdict::Unknown
                        }
                        Err(e) => {
                            tracing::warn!(payment = %id, error = %e, "VNPay's merchant API did not answer");
                            Verdict::Unknown
                        }
                    }
                }
                _ => Verdict::Unknown,
            }
        }
        PaymentMethod::Stripe => match &app.stripe {
            Some(stripe) => match stripe.state(&p.txn_ref).await {
                Ok((stripe_core::PaymentIntentStatus::Succeeded, received))
                    if received == p.amount_vnd.get() =>
                {
                    Verdict::Paid(p.txn_ref.clone())
                }
                Ok((stripe_core::PaymentIntentStatus::Canceled, _)) => {
                    Verdict::Failed(p.txn_ref.clone())
                }
                // Never paid, and its checkout closed: it never will be.
                Ok((stripe_core::PaymentIntentStatus::RequiresPaymentMethod, _)) if closed => {
                    Verdict::Failed(p.txn_ref.clone())
                }
                Ok(_) => Verdict::Unknown,
                Err(e) => {
                    tracing::warn!(payment = %id, error = %e, "Stripe did not answer");
                    Verdict::Unknown
                }
            },
            None => Verdict::Unknown,
        },
        PaymentMethod::Momo => {
            let s = &app.settings;
            match (&s.momo_partner_code, &s.momo_access_key, &s.momo_secret_key) {
                (Some(partner), Some(access), Some(secret)) => {
                    let keys = momo::Keys {
                        partner_code: partner,
                        access_key: access,
                        secret: secret.expose_secret(),
                    };
                    let body = momo::query_body(
                        keys,
                        &p.txn_ref,
                        &uuid::Uuid::now_v7().simple().to_string(),
                    );
                    match momo::call(&app.http, &s.momo_endpoint, "/v2/gateway/api/query", &body)
                        .await
                    {
                        Ok(a) if a.result_code == 0 && a.amount == Some(p.amount_vnd.get()) => {
                            // Without MoMo's transaction there is nothing to refund against.
                            a.trans_id
                                .map_or(Verdict::Unknown, |t| Verdict::Paid(t.to_string()))
                        }
                        Ok(a) if a.result_code == 0 => {
                            tracing::error!(payment = %id, amount = ?a.amount, "MoMo reports another amount for this payment; left for an operator");
                            Verdict::Unknown
                        }
                        // Waiting for the buyer: once the page closed, it never will be paid.
                        Ok(a) if a.result_code == 1000 => {
                            if closed {
                                Verdict::Failed(String::new())
                            } else {
                                Verdict::Unknown
                            }
                        }
                        // Being processed, or MoMo's own error: ask again later.
                        Ok(a) if a.result_code == 99 || momo::in_progress(a.result_code) => {
                            Verdict::Unknown
                        }
                        Ok(a) => {
                            Verdict::Failed(a.trans_id.map(|t| t.to_string()).unwrap_or_default())
                        }
                        Err(e) => {
                            tracing::warn!(payment = %id, error = %e, "MoMo did not answer");
                            Verdict::Unknown
                        }
                    }
                }
                _ => Verdict::Unknown,
            }
        }
        _ => Verdict::Unknown,
    };
    let (succeeded, provider_ref) = match verdict {
        Verdict::Paid(r) => (true, r),
        Verdict::Failed(r) => (false, r),
        Verdict::Unknown => {
            sqlx::query!("UPDATE payments SET checked_at = now() WHERE id = $1", id.0)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(false);
        }
    };
    settle(
        &mut tx,
        &Settled {
            id,
            checkout: p.checkout_id,
            amount: p.amount_vnd,
            method: p.method,
            from: PaymentStatus::Pending,
            succeeded,
            provider_ref,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(payment = %id, succeeded, "a pending payment was settled by asking its provider");
    Ok(true)
}
