//! The split shape: three `nongsan serve` processes that call each other.

use crate::support::{
    client::{Client, Request},
    process::SplitApp,
};

#[tokio::test]
async fn three_serve_processes_answer_and_call_each_other_carrying_the_request_id() {
    // Every request logged, as the README says to: answers that succeed are logged at debug.
    let app = SplitApp::spawn_configured(
        &[("RUST_LOG", "info,nongsan_shared::http=debug".to_owned())],
        &[],
    )
    .await;
    for p in [&app.listing, &app.order, &app.payment] {
        let (status, _) = Client::new(&p.url).get("/healthz", None).await;
        assert_eq!(status, 200);
    }

    // The order service's readiness asks listing and payment over HTTP.
    let request_id = format!("split-{}", uuid::Uuid::now_v7().simple());
    let res = Client::new(&app.order.url)
        .send(Request::get("/readyz").header("x-request-id", &request_id))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-request-id"), Some(request_id.as_str()));
    let body = res.json();
    let checks = body["checks"].as_array().unwrap();
    for peer in ["listing", "payment"] {
        let c = checks
            .iter()
            .find(|c| c["name"] == peer)
            .unwrap_or_else(|| panic!("no {peer} check in {body}"));
        assert_eq!(c["ok"], true, "{body}");
    }
    let events = checks.iter().find(|c| c["name"] == "events").unwrap();
    assert_eq!(events["mode"], "external");

    // The callee saw the caller's request id.
    for callee in [&app.listing, &app.payment] {
        let log = callee.log_text();
        assert!(
            log.contains(&request_id),
            "the request id did not reach {}:\n{log}",
            callee.url
        );
    }
}
