//! A lost callback: the payment is settled by asking the provider.

use std::time::Duration;

use crate::support::{
    calls::basket,
    eventually,
    fake_vnpay::{FakeVnpay, ipn_query},
    process::SplitApp,
};

use super::refunds::txn_ref;

#[tokio::test]
async fn a_payment_whose_ipn_was_lost_while_the_payment_process_was_dead_is_settled_by_asking_vnpay()
 {
    let vnpay = FakeVnpay::start().await;
    let every = [
        ("NONGSAN_VNPAY_API_URL", vnpay.url.clone()),
        ("NONGSAN_PAYMENT_RECONCILE_AFTER_SECS", "1".to_owned()),
        ("NONGSAN_PAYMENT_SWEEP_MS", "200".to_owned()),
    ];
    let mut app = SplitApp::spawn_configured(&every, &[]).await;
    let (seller, buyer, listing) = app.api.shop().await;
    let (status, c) = app
        .api
        .checkout(&buyer, "lost-ipn", &basket(&[(&listing, "2")], "vnpay"))
        .await;
    assert_eq!(status, 201, "{c}");
    let url = c["payment_url"].as_str().unwrap();

    // VNPay takes the money; its IPN finds the payment process killed and is lost.
    app.kill_and_restart_payment().await;
    vnpay.pay(&txn_ref(url), c["grand_total"].as_i64().unwrap());

    let id = c["id"].as_str().unwrap();
    let api = &app.api;
    api.paid_and_sold(&buyer, id, &seller, &listing, "8").await;
    assert!(vnpay.calls("querydr") >= 1);
    assert_eq!(vnpay.refunds().len(), 0, "nothing is owed back");
}

#[tokio::test]
async fn a_payment_vnpay_never_saw_stays_pending_until_its_page_closes() {
    let vnpay = FakeVnpay::start().await;
    let app = super::refunds::app_with(&vnpay, |s| s.payment_reconcile_after_secs = 1).await;
    let api = &app.api;
    let (_, buyer, listing) = api.shop().await;
    let (status, c) = api
        .checkout(&buyer, "unpaid", &basket(&[(&listing, "1")], "vnpay"))
        .await;
    assert_eq!(status, 201, "{c}");
    let payments = app.db.pool("payment").await;
    eventually(Duration::from_secs(15), "VNPay to be asked", || async {
        (vnpay.calls("querydr") >= 1).then_some(())
    })
    .await;
    let status: String = sqlx::query_scalar("SELECT status FROM payments")
        .fetch_one(&payments)
        .await
        .unwrap();
    assert_eq!(
        status, "pending",
        "VNPay does not know it yet, and its page is still open"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_capture_reported_after_a_failure_is_still_accounted_for() {
    let vnpay = FakeVnpay::start().await;
    let app = super::refunds::app_with(&vnpay, |_| {}).await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let (status, c) = api
        .checkout(&buyer, "late-capture", &basket(&[(&listing, "2")], "vnpay"))
        .await;
    assert_eq!(status, 201, "{c}");
    let url = c["payment_url"].as_str().unwrap();
    // The buyer gave up (24: cancelled), then paid after all: the money was taken, so it
    // must reach the orders (or be refunded), not be dropped as "already confirmed".
    assert_eq!(
        api.vnpay_ipn(&ipn_query(url, "24", None)).await["RspCode"],
        "00"
    );
    assert_eq!(
        api.vnpay_ipn(&ipn_query(url, "00", None)).await["RspCode"],
        "00"
    );
    assert_eq!(
        api.vnpay_ipn(&ipn_query(url, "00", None)).await["RspCode"],
        "02",
        "a capture is recorded once"
    );
    let id = c["id"].as_str().unwrap();
    api.paid_and_sold(&buyer, id, &seller, &listing, "8").await;
    app.stop().await;
}
