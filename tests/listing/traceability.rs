//! Traceability: a listing's GTIN, each lot's link and QR code, the public page a buyer's
//! phone opens from it (read here by headless Chromium), the lots on a buyer's order and an
//! operator's recall, and certifications that stop counting the day after they end.

use std::time::Duration;

use nongsan_shared::auth::Role;
use serde_json::{Value, json};

use crate::support::{
    TestApp, TestDb,
    calls::{id_of, listing_body},
    client::{Client, Request},
    eventually, test_settings,
    user::User,
};

/// The app, with lots' links on `base`.
async fn app_with(tune: impl FnOnce(&mut nongsan_shared::config::Settings)) -> TestApp {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    settings.trace_base_url = "https://truyxuat.example.vn".to_owned();
    tune(&mut settings);
    TestApp::spawn_with(settings, db).await
}

/// A listing of `seller` with `gtin` and one lot; answers (listing id, lot id).
async fn listing_with_lot(
    api: &Client,
    seller: &User,
    gtin: Option<&str>,
    lot: &str,
) -> (String, String) {
    let mut body = listing_body();
    body["title"] = json!("Vải thiều Lục Ngạn");
    if let Some(gtin) = gtin {
        body["gtin"] = json!(gtin);
    }
    let listing = id_of(&api.create_listing(seller, &body).await);
    api.add_lot(seller, &listing, lot, "2025-06-15", "50").await;
    let (_, stock) = api
        .get(&format!("/v1/listings/{listing}/stock"), Some(seller))
        .await;
    let lot_id = stock["lots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["lot_code"] == lot)
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no lot {lot}: {stock}"));
    (listing, lot_id)
}

#[tokio::test]
async fn gtins_are_checked_by_their_gs1_check_digit() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    for (gtin, stored) in [
        ("8931234567897", "08931234567897"),
        ("09506000134352", "09506000134352"),
    ] {
        let mut body = listing_body();
        body["gtin"] = json!(gtin);
        let listing = app.api.create_listing(&seller, &body).await;
        assert_eq!(listing["gtin"], stored, "{listing}");
    }
    let mut body = listing_body();
    body["gtin"] = json!("09506000134353");
    let (status, problem) = app.api.post("/v1/listings", Some(&seller), &body).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "gtin");
    assert_eq!(problem["errors"][0]["code"], "invalid_check_digit");
}

/// The PNG's QR code, read back.
fn decode_qr(png_bytes: &[u8]) -> String {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

#[tokio::test]
async fn a_lots_qr_code_decodes_to_exactly_its_link() {
    let app = app_with(|_| {}).await;
    let api = &app.api;
    let seller = api.register(Role::Household).await;
    let (listing, lot) = listing_with_lot(api, &seller, Some("8931234567897"), "VT2506-LN01").await;
    let res = api
        .send(Request::get(format!("/v1/lots/{lot}/qr.png")))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("image/png"));
    assert_eq!(
        decode_qr(&res.body),
        "https://truyxuat.example.vn/01/08931234567897/10/VT2506-LN01?7007=250615"
    );
    let res = api
        .send(Request::get(format!("/v1/lots/{lot}/qr.svg")))
        .await;
    assert_eq!(res.status, 200);
    assert!(res.text().contains("<svg"), "{}", res.text());

    // Without a GTIN, or with a lot code GS1 cannot carry, the short link.
    let (_, plain) = listing_with_lot(api, &seller, None, "LOT-7").await;
    let res = api
        .send(Request::get(format!("/v1/lots/{plain}/qr.png")))
        .await;
    assert_eq!(
        decode_qr(&res.body),
        format!("https://truyxuat.example.vn/t/{plain}")
    );
    let (_, odd) = listing_with_lot(api, &seller, Some("8931234567897"), "LOT#7").await;
    let res = api
        .send(Request::get(format!("/v1/lots/{odd}/qr.png")))
        .await;
    assert_eq!(
        decode_qr(&res.body),
        format!("https://truyxuat.example.vn/t/{odd}")
    );
    let unknown = uuid::Uuid::now_v7();
    assert_eq!(
        api.send(Request::get(format!("/v1/lots/{unknown}/qr.png")))
            .await
            .status,
        404
    );
    // The seller's label sheet: each lot with stock, its product, code and QR code.
    let res = api
        .send(Request::get(format!("/v1/listings/{listing}/labels")).by(&seller))
        .await;
    assert_eq!(res.status, 200);
    let sheet = res.text();
    assert!(
        sheet.contains("Vải thiều Lục Ngạn")
            && sheet.contains("VT2506-LN01")
            && sheet.contains("<svg"),
        "{sheet}"
    );
    let stranger = api.register(Role::Household).await;
    let res = api
        .send(Request::get(format!("/v1/listings/{listing}/labels")).by(&stranger))
        .await;
    assert_eq!(res.status, 403);
}

/// A lot code used again for a later harvest (a new listing of the same product, the same
/// GTIN): the link printed on the first harvest's label still opens the first harvest's
/// lot, by its harvest date (7007); a link without one opens the latest. Before, every link
/// opened the latest lot of that code, whatever its harvest date said.
#[tokio::test]
async fn a_link_opens_the_lot_of_its_harvest_date_when_a_code_was_used_again() {
    let app = app_with(|_| {}).await;
    let api = &app.api;
    let seller = api.register(Role::Household).await;
    let (_, first) = listing_with_lot(api, &seller, Some("8931234567897"), "LO1").await;
    let mut body = listing_body();
    body["gtin"] = json!("8931234567897");
    let again = id_of(&api.create_listing(&seller, &body).await);
    api.add_lot(&seller, &again, "LO1", "2026-06-20", "20")
        .await;
    let opened = |path: &'static str| async move {
        let res = api
            .send(Request::get(path).header("accept", "application/json"))
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let t = res.json();
        (
            t["lot"]["id"].as_str().unwrap().to_owned(),
            t["lot"]["harvest_date"].as_str().unwrap().to_owned(),
        )
    };
    let (id, harvest) = opened("/01/08931234567897/10/LO1?7007=250615").await;
    assert_eq!(
        (id.as_str(), harvest.as_str()),
        (first.as_str(), "2025-06-15")
    );
    // A day of 00 names the month (GS1).
    let (id, _) = opened("/01/08931234567897/10/LO1?7007=250600").await;
    assert_eq!(id, first);
    let (_, harvest) = opened("/01/08931234567897/10/LO1").await;
    assert_eq!(harvest, "2026-06-20");
    let (_, harvest) = opened("/01/08931234567897/10/LO1?7007=260620").await;
    assert_eq!(harvest, "2026-06-20");
    app.stop().await;
}

#[tokio::test]
async fn a_lots_page_tells_where_it_comes_from_and_nothing_private() {
    let app = app_with(|_| {}).await;
    let api = &app.api;
    let seller = api.register(Role::Household).await;
    let (_, lot) = listing_with_lot(api, &seller, Some("8931234567897"), "VT2506-LN01").await;
    let path = "/01/08931234567897/10/VT2506-LN01?7007=250615";

    // JSON by content negotiation.
    let res = api
        .send(Request::get(path).header("accept", "application/json"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let t = res.json();
    assert_eq!(t["product"]["name"], "Vải thiều Lục Ngạn");
    assert_eq!(t["lot"]["code"], "VT2506-LN01");
    assert_eq!(t["lot"]["id"], lot.as_str());
    assert_eq!(t["lot"]["harvest_date"], "2025-06-15");
    assert_eq!(t["producer"]["kind"], "household");
    assert_eq!(t["producer"]["province_code"], "68");
    assert_eq!(t["certifications"][0]["kind"], "vietgap");
    assert_eq!(t["ocop_stars"], 4);
    let steps: Vec<&str> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["harvested", "stocked"]);
    assert_eq!(t["link"], format!("https://truyxuat.example.vn{path}"));
    // Nothing private: no phone number, no street.
    let text = res.text();
    assert!(!text.contains(&seller.phone()[1..]), "{text}");
    assert!(!text.contains("Thôn Lạc Lâm"), "{text}");
    // The short link answers the same lot.
    let res = api
        .send(Request::get(format!("/t/{lot}")).header("accept", "application/json"))
        .await;
    assert_eq!(res.json()["lot"]["code"], "VT2506-LN01");

    // HTML, Vietnamese first (the test client asks for English unless told), English
    // when asked.
    let res = api
        .send(Request::get(path).header("accept-language", "vi"))
        .await;
    assert_eq!(res.status, 200);
    assert!(res.header("content-type").unwrap().starts_with("text/html"));
    assert!(
        res.text().contains("Ngày thu hoạch") && res.text().contains("15/06/2025"),
        "{}",
        res.text()
    );
    let res = api
        .send(Request::get(path).header("accept-language", "en-US,en;q=0.9"))
        .await;
    assert!(
        res.text().contains("Harvested") && res.text().contains("2025-06-15"),
        "{}",
        res.text()
    );

    // An unknown lot is a 404 page in Vietnamese; a malformed link is 400.
    let res = api
        .send(Request::get("/01/08931234567897/10/NOPE").header("accept-language", "vi"))
        .await;
    assert_eq!(res.status, 404);
    assert!(res.header("content-type").unwrap().starts_with("text/html"));
    assert!(
        res.text().contains("Không tìm thấy lô hàng"),
        "{}",
        res.text()
    );
    assert_eq!(
        api.send(Request::get(format!("/t/{}", uuid::Uuid::now_v7())))
            .await
            .status,
        404
    );
    for bad in [
        "/01/09506000134353/10/VT2506-LN01",
        "/01/12345/10/A",
        "/01/08931234567897/10/A%23B",
        "/01/08931234567897/10/A?7007=2506",
        "/t/not-a-lot",
        // Not UTF-8 once decoded, a repeated or a not-a-date harvest: still the link's page.
        "/01/08931234567897/10/%FF",
        "/t/%FF",
        "/01/08931234567897/10/A?7007=250615&7007=250616",
        "/01/08931234567897/10/A?7007=991399",
        "/01/08931234567897/10/A?7007=250230",
    ] {
        let res = api
            .send(Request::get(bad).header("accept-language", "vi"))
            .await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text());
        assert!(res.text().contains("Đường dẫn không hợp lệ"), "{bad}");
    }
    let res = api
        .send(Request::get("/01/12345/10/A").header("accept", "application/json"))
        .await;
    assert_eq!(
        (res.status, res.json()["code"].as_str()),
        (400, Some("malformed_link"))
    );
}

#[tokio::test]
async fn headless_chromium_reads_a_lots_page_from_the_running_service() {
    let Some(chromium) = crate::foundation::docs::chromium_or_skip() else {
        return;
    };
    let app = app_with(|_| {}).await;
    let api = &app.api;
    let seller = api.register(Role::Household).await;
    listing_with_lot(api, &seller, Some("8931234567897"), "VT2506-LN01").await;
    let page = api.url("/01/08931234567897/10/VT2506-LN01?7007=250615");
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("trace-page.png");
    let _ = std::fs::remove_file(&shot);
    let phone = ["--window-size=412,915", "--lang=vi-VN"];
    let out =
        crate::foundation::docs::headless(&chromium, &page, &[phone[0], phone[1], "--dump-dom"])
            .await;
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What the rendered page holds, by its elements.
    let text_of = |id: &str| {
        let start = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id} in {dom}"));
        let rest = &dom[start..];
        let open = rest.find('>').unwrap() + 1;
        let close = rest[open..].find('<').unwrap();
        rest[open..open + close].to_owned()
    };
    assert_eq!(text_of("product"), "Vải thiều Lục Ngạn");
    assert_eq!(text_of("lot"), "VT2506-LN01");
    let province = text_of("province");
    assert!(province.contains("Lâm Đồng"), "{province}");
    let screenshot = format!("--screenshot={}", shot.display());
    let out =
        crate::foundation::docs::headless(&chromium, &page, &[phone[0], phone[1], &screenshot])
            .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG"),
        "a PNG screenshot at {}",
        shot.display()
    );
}

#[tokio::test]
async fn a_buyers_order_line_links_to_its_lot_and_a_recall_finds_the_order() {
    let app = app_with(|_| {}).await;
    let api = &app.api;
    let seller = api.register(Role::Household).await;
    let (listing, lot) = listing_with_lot(api, &seller, Some("8931234567897"), "VT2506-LN01").await;
    let buyer = api.register(Role::Buyer).await;
    let order = api.cod_order(&buyer, &listing, "2").await;
    let (status, body) = api.order_action(&seller, &order, "confirm", None).await;
    assert_eq!(status, 200, "{body}");
    let line = eventually(
        Duration::from_secs(20),
        "the line to show its lot",
        || async {
            let (_, o) = api.read_order(&buyer, &order).await;
            o["lines"][0]["lots"]
                .as_array()
                .filter(|l| !l.is_empty())
                .map(|_| o["lines"][0].clone())
        },
    )
    .await;
    let filled = &line["lots"][0];
    assert_eq!(filled["lot_code"], "VT2506-LN01");
    assert_eq!(filled["lot_id"], lot.as_str());
    assert_eq!(
        filled["trace_url"],
        "https://truyxuat.example.vn/01/08931234567897/10/VT2506-LN01?7007=250615"
    );

    let operator = User::minted(Role::Operator);
    let recall = format!("/v1/ops/order/lots/{lot}/orders");
    let page: Value = eventually(
        Duration::from_secs(20),
        "the recall to find the order",
        || async {
            let (status, page) = api.get(&recall, Some(&operator)).await;
            assert_eq!(status, 200, "{page}");
            (page["items"].as_array().map(Vec::len) == Some(1)).then_some(page)
        },
    )
    .await;
    let item = &page["items"][0];
    assert_eq!(item["order_id"], order.as_str());
    assert_eq!(item["buyer_id"], buyer.id.as_str());
    assert_eq!(item["recipient_phone"], "+84987654321");
    assert_eq!(item["quantity"], "2");
    // A page size out of range, or a parameter the list does not take, is named: before, the
    // size was silently clamped and `cursor` ignored (the first page answered again).
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=abc", "cursor"),
    ] {
        let (status, r) = api.get(&format!("{recall}?{query}"), Some(&operator)).await;
        assert_eq!(
            (status, r["errors"][0]["field"].as_str()),
            (422, Some(field)),
            "{query}: {r}"
        );
    }
    // Only an operator reads who bought a lot.
    assert_eq!(api.get(&recall, Some(&buyer)).await.0, 403);
    assert_eq!(api.get(&recall, Some(&seller)).await.0, 403);
    // The lot's page counts the sale; it names no buyer.
    let res = api
        .send(Request::get(format!("/t/{lot}")).header("accept", "application/json"))
        .await;
    let t = res.json();
    let sold = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["step"] == "sold")
        .cloned()
        .unwrap();
    assert_eq!(sold["orders"], 1, "{t}");
    assert!(!res.text().contains("Nguyễn Thị Hoa") && !res.text().contains("987654321"));
}

/// The listing's `certifications` facet for a search of `title`.
async fn certification_facet(api: &Client, title: &str) -> Value {
    let (status, found) = api
        .search(&format!(
            "q={}&facets=certifications&in_stock=false",
            urlencode(title)
        ))
        .await;
    assert_eq!(status, 200, "{found}");
    found["facets"]["certifications"].clone()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Today in Vietnam (UTC+7), once at least three minutes of it are left: a test whose
/// certificates end today would fail if the day changed while it runs (its waits add up to
/// 80 s at most). Near midnight it waits for the next day.
async fn vietnam_today_for_a_while() -> chrono::NaiveDate {
    let now = (chrono::Utc::now() + chrono::Duration::hours(7)).naive_utc();
    let midnight = now
        .date()
        .succ_opt()
        .unwrap()
        .and_time(chrono::NaiveTime::MIN);
    let left = (midnight - now).to_std().unwrap_or_default();
    if left < Duration::from_secs(180) {
        tokio::time::sleep(left + Duration::from_secs(1)).await;
    }
    (chrono::Utc::now() + chrono::Duration::hours(7)).date_naive()
}

#[tokio::test]
async fn a_certification_stops_counting_for_search_the_day_after_it_ends() {
    let app = app_with(|s| s.certification_sweep_secs = 1).await;
    let api = &app.api;
    let seller = api.register(Role::Household).await;
    let today = vietnam_today_for_a_while().await;
    let yesterday = today.pred_opt().unwrap();
    let cert = |until: chrono::NaiveDate| json!([{ "kind": "vietgap", "number": "VG-9", "issuer": "Trung tâm", "valid_from": "2024-01-01", "valid_until": until }]);
    let mut body = listing_body();
    body["title"] = json!("Bưởi da xanh Bến Tre");
    body["status"] = json!("active");
    body["certifications"] = cert(today);
    let current = id_of(&api.create_listing(&seller, &body).await);
    body["title"] = json!("Bưởi da xanh Bến Tre cũ");
    body["certifications"] = cert(yesterday);
    let lapsed = api.create_listing(&seller, &body).await;
    assert_eq!(lapsed["certifications"][0]["status"], "expired", "{lapsed}");
    // Only the one in force today counts.
    eventually(
        Duration::from_secs(20),
        "the facet to count the certificate in force",
        || async {
            let f = certification_facet(api, "Bưởi da xanh").await;
            (f["vietgap"] == 1).then_some(())
        },
    )
    .await;

    // A day passes: the certificate in force ends (its last day becomes yesterday).
    let listing_db = app.db.pool("listing").await;
    sqlx::query("UPDATE listing_certifications SET valid_until = $2 WHERE listing_id = $1::uuid")
        .bind(&current)
        .bind(yesterday)
        .execute(&listing_db)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the sweep to drop the ended certificate",
        || async {
            let f = certification_facet(api, "Bưởi da xanh").await;
            (f.get("vietgap").is_none() || f["vietgap"] == 0).then_some(())
        },
    )
    .await;
    let (_, view) = api.get(&format!("/v1/listings/{current}"), None).await;
    assert_eq!(view["certifications"][0]["status"], "expired");
    let res = api
        .send(Request::get(format!("/v1/listings/{current}/labels")).by(&seller))
        .await;
    assert_eq!(res.status, 200);

    // An operator's rejection also takes a certificate off the facet; nobody else may.
    body["title"] = json!("Bưởi da xanh Bến Tre mới");
    body["certifications"] = cert(today.succ_opt().unwrap());
    let fresh = id_of(&api.create_listing(&seller, &body).await);
    eventually(
        Duration::from_secs(20),
        "the facet to count the new certificate",
        || async {
            (certification_facet(api, "Bưởi da xanh").await["vietgap"] == 1).then_some(())
        },
    )
    .await;
    let path = format!("/v1/listings/{fresh}/certifications/0/verification");
    assert_eq!(
        api.post(&path, Some(&seller), &json!({ "status": "verified" }))
            .await
            .0,
        403
    );
    let operator = User::minted(Role::Operator);
    let (status, view) = api
        .post(&path, Some(&operator), &json!({ "status": "rejected" }))
        .await;
    assert_eq!(
        (status, view["certifications"][0]["verification"].as_str()),
        (200, Some("rejected")),
        "{view}"
    );
    eventually(
        Duration::from_secs(20),
        "the rejected certificate to leave the facet",
        || async {
            let f = certification_facet(api, "Bưởi da xanh").await;
            (f.get("vietgap").is_none() || f["vietgap"] == 0).then_some(())
        },
    )
    .await;
}

/// A GTIN is its first seller's: another seller's listing cannot carry it (422 gtin_taken),
/// so the QR codes printed on the first seller's produce keep opening the first seller's lot,
/// even when another seller makes a lot with the same code. The owner's own listings share it.
#[tokio::test]
async fn a_gtin_belongs_to_its_first_seller_and_nobody_else_takes_over_its_qr_pages() {
    let app = app_with(|_| {}).await;
    let api = &app.api;
    let owner = api.register(Role::Household).await;
    let (_, lot) = listing_with_lot(api, &owner, Some("8931234567897"), "VT2506-LN01").await;
    // The owner's second listing of the product (another size, say) may carry it too.
    let mut body = listing_body();
    body["gtin"] = json!("8931234567897");
    let (status, second) = api.post("/v1/listings", Some(&owner), &body).await;
    assert_eq!(status, 201, "{second}");

    let other = api.register(Role::Household).await;
    let (status, problem) = api.post("/v1/listings", Some(&other), &body).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "gtin", "{problem}");
    assert_eq!(problem["errors"][0]["code"], "gtin_taken", "{problem}");
    // Nor by changing a listing of its own.
    let (theirs, _) = listing_with_lot(api, &other, None, "VT2506-LN01").await;
    let res = api
        .send(
            Request::patch(format!("/v1/listings/{theirs}"))
                .by(&other)
                .json(&json!({ "gtin": "8931234567897" })),
        )
        .await;
    assert_eq!(res.status, 422, "{}", res.text());
    assert_eq!(res.json()["errors"][0]["code"], "gtin_taken");

    // A listing of another seller that carries it all the same (written here directly, as
    // only a listing from before owners were kept could) does not take the page over, though
    // its lot of that code is the newest.
    let pool = app.db.pool("listing").await;
    sqlx::query("UPDATE listings SET gtin = '08931234567897' WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&theirs).unwrap())
        .execute(&pool)
        .await
        .unwrap();
    let res = api
        .send(
            Request::get("/01/08931234567897/10/VT2506-LN01").header("accept", "application/json"),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["lot"]["id"], lot.as_str(), "{}", res.text());
    app.stop().await;
}
