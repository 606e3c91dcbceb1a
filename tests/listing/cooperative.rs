//! Cooperative stock: pooling member lots, and imports that are all or nothing.

use nongsan_shared::auth::Role;
use serde_json::{Value, json};

use crate::support::{
    TestApp,
    calls::{id_of, listing_body},
    client::Request,
    user::User,
};

struct Coop {
    id: String,
    manager: User,
    member: User,
    member_listing: String,
    pooled: String,
}

async fn coop(app: &TestApp) -> Coop {
    let manager = app.api.staff(Role::CooperativeManager).await;
    let member = app.api.register(Role::Household).await;
    let body = json!({ "name": "HTX Đơn Dương", "address": { "province_code": "68", "commune_code": "24931" } });
    let id = app.api.create_cooperative(&manager, &body).await;
    assert_eq!(app.api.add_member(&manager, &id, &member).await.0, 200);
    let member_listing = app.api.listing_with_stock(&member, "30").await;
    let mut body = listing_body();
    body["cooperative_id"] = json!(id);
    let pooled = id_of(&app.api.create_listing(&manager, &body).await);
    Coop {
        id,
        manager,
        member,
        member_listing,
        pooled,
    }
}

/// Imports `file` of `content_type` into the cooperative's stock, as its manager.
async fn import(
    app: &TestApp,
    c: &Coop,
    content_type: &str,
    file: impl Into<Vec<u8>>,
) -> (u16, Value) {
    app.api
        .send(
            Request::post(format!("/v1/cooperatives/{}/imports", c.id))
                .by(&c.manager)
                .body(content_type, file),
        )
        .await
        .parts()
}

const CSV: &str = "text/csv";
const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

#[tokio::test]
async fn a_csv_with_one_bad_row_imports_nothing_and_reports_that_row() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    let csv = format!(
        "listing,lot_code,household,quantity,harvest_date\n{p},IMP-1,{m},10,2026-11-20\n{p},IMP-2,{m},12.5,20/11/2026\n{p},IMP-3,{m},1.23456,2026-11-21\n{l},IMP-4,{phone},4,2026-11-22\n",
        p = c.pooled,
        m = c.member.id,
        l = c.member_listing,
        phone = c.member.phone(),
    );
    let (status, body) = import(&app, &c, CSV, csv.clone()).await;
    assert_eq!(status, 422, "{body}");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["field"], "rows[4].quantity");
    assert_eq!(errors[0]["code"], "too_many_decimals");
    let stock = app.api.stock(&c.manager, &c.pooled).await;
    assert_eq!(stock.levels.on_hand, "0", "nothing was imported");

    // Fixed, the same file imports every row.
    let (status, body) = import(&app, &c, CSV, csv.replace("1.23456", "1.5")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["imported"], 4);
    let stock = app.api.stock(&c.manager, &c.pooled).await;
    assert_eq!(stock.levels.on_hand, "24");
    assert!(
        stock
            .lots
            .iter()
            .all(|l| l.household_id.as_deref() == Some(c.member.id.as_str())),
        "{stock:?}"
    );
    let stock = app.api.stock(&c.manager, &c.member_listing).await;
    assert_eq!(stock.levels.on_hand, "34");
    app.stop().await;
}

/// A file sent again (a retry after its answer was lost, a second click) takes nothing in a
/// second time: before, every row's stock was added again, and the cooperative sold produce
/// it did not have. Its manager can still import it again on purpose, with `again=true`.
#[tokio::test]
async fn an_import_sent_again_does_not_take_its_stock_in_twice() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    let csv = format!(
        "listing,lot_code,household,quantity,harvest_date\n{p},TWICE-1,{m},10,2026-11-20\n",
        p = c.pooled,
        m = c.member.id,
    );
    let (status, body) = import(&app, &c, CSV, csv.clone()).await;
    assert_eq!(status, 200, "{body}");
    // The same rows in another shape of file are the same import.
    let (status, body) = import(&app, &c, CSV, csv.replace(",10,", ", 10 ,")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("import_repeated")),
        "{body}"
    );
    assert_eq!(
        app.api.stock(&c.manager, &c.pooled).await.levels.on_hand,
        "10"
    );
    let (status, body) = app
        .api
        .send(
            Request::post(format!("/v1/cooperatives/{}/imports?again=true", c.id))
                .by(&c.manager)
                .body(CSV, csv),
        )
        .await
        .parts();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.api.stock(&c.manager, &c.pooled).await.levels.on_hand,
        "20"
    );
    app.stop().await;
}

/// A bad row is named by its line in the file, blank lines and empty rows counted: before,
/// rows were numbered after the empty ones were left out, so the manager was sent to the
/// wrong line.
#[tokio::test]
async fn a_bad_row_is_named_by_its_line_in_the_file_whatever_is_blank_before_it() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    let csv = format!(
        "listing,lot_code,household,quantity,harvest_date\n\n{p},OK-1,{m},10,2026-11-20\n,,,,\n{p},LÔ-2,{m},1,2026-11-20\n",
        p = c.pooled,
        m = c.member.id,
    );
    let (status, body) = import(&app, &c, CSV, csv).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("rows[5].lot_code")),
        "{body}"
    );
    // Right after blank lines, in a file with Windows line ends (as Excel saves CSV), and
    // with a value over two lines before it.
    for (csv, line) in [
        (
            "{h}\n{p},OK-1,{m},10,2026-11-20\n\n\n{p},LÔ-2,{m},1,2026-11-20\n",
            5,
        ),
        (
            "{h}\r\n{p},OK-1,{m},10,2026-11-20\r\n{p},LÔ-2,{m},1,2026-11-20\r\n",
            3,
        ),
        (
            "{h}\r\n\r\n{p},OK-1,{m},10,2026-11-20\r\n{p},LÔ-2,{m},1,2026-11-20\r\n",
            4,
        ),
        (
            "{h}\n{p},\"OK-1\n\",{m},10,2026-11-20\n{p},LÔ-2,{m},1,2026-11-20\n",
            4,
        ),
    ] {
        let csv = csv
            .replace("{h}", "listing,lot_code,household,quantity,harvest_date")
            .replace("{p}", &c.pooled)
            .replace("{m}", &c.member.id);
        let (status, body) = import(&app, &c, CSV, csv.clone()).await;
        let named: Vec<&str> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(status, 422, "{csv:?}: {body}");
        assert!(
            named.contains(&format!("rows[{line}].lot_code").as_str()),
            "{csv:?}: {body}"
        );
    }
    let blank = vec![String::new(); 5];
    let header = [
        "listing",
        "lot_code",
        "household",
        "quantity",
        "harvest_date",
    ]
    .map(String::from)
    .to_vec();
    let bad = vec![
        c.pooled.clone(),
        "LÔ-3".into(),
        c.member.id.clone(),
        "1".into(),
        "2026-11-20".into(),
    ];
    let (status, body) = import(&app, &c, XLSX, xlsx(&[header, blank.clone(), blank, bad])).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("rows[4].lot_code")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn every_bad_row_is_reported_with_its_line_number() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    let csv = format!(
        "listing,lot_code,household,quantity,harvest_date\n{p},LÔ-1,{m},10,2026-11-20\nnot-a-listing,OK-2,{m},1,2026-11-20\n{p},OK-3,nobody,1,yesterday\n{p},OK-5,{m},\"1,500\",2026-11-20\n{p},OK-6,{m},1.500,2026-11-20\n{p},OK-7,{m},1.500.000,2026-11-20\n{p},OK-8,{m},\"0,250\",2026-11-20\n{p},OK-9,{m},\"2,5\",2026-11-20\n{p},OK-10,{m},2.1250,2026-11-20\n",
        p = c.pooled,
        m = c.member.id,
    );
    let (status, body) = import(&app, &c, CSV, csv).await;
    assert_eq!(status, 422);
    let fields: Vec<(&str, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    // A spreadsheet in Vietnamese writes fifteen hundred 1.500, one in English 1,500: read
    // as one and a half, before, and imported so (1,000 times too little stock). A number
    // whose separator could be either is refused; 0,250 and 2,5 cannot be thousands.
    assert_eq!(
        fields,
        vec![
            ("rows[2].lot_code", "invalid_lot_code"),
            ("rows[3].listing", "unknown_listing"),
            ("rows[4].household", "unknown_household"),
            ("rows[4].harvest_date", "invalid_date"),
            ("rows[5].quantity", "ambiguous_number"),
            ("rows[6].quantity", "ambiguous_number"),
            ("rows[7].quantity", "ambiguous_number"),
        ],
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_member_lot_taken_into_pooled_stock_stays_traceable_to_its_household() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    let (status, body) = app
        .api
        .post(&format!("/v1/cooperatives/{}/pooling", c.id), Some(&c.manager), &json!({ "from_listing_id": c.member_listing, "lot_code": "LOT-A", "quantity": "12", "to_listing_id": c.pooled }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["on_hand"], "12");
    let (_, overview) = app
        .api
        .get(
            &format!("/v1/cooperatives/{}/stock", c.id),
            Some(&c.manager),
        )
        .await;
    let by_id = |id: &str| {
        overview["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["listing_id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id(&c.pooled)["kind"], "pooled");
    assert_eq!(by_id(&c.member_listing)["stock"]["on_hand"], "18");
    let stock = app.api.stock(&c.manager, &c.pooled).await;
    assert_eq!(stock.lots[0].lot_code, "LOT-A");
    assert_eq!(
        stock.lots[0].household_id.as_deref(),
        Some(c.member.id.as_str())
    );
    // More than the lot holds is refused and changes nothing.
    let (status, body) = app
        .api
        .post(&format!("/v1/cooperatives/{}/pooling", c.id), Some(&c.manager), &json!({ "from_listing_id": c.member_listing, "lot_code": "LOT-A", "quantity": "100", "to_listing_id": c.pooled }))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("insufficient_stock"))
    );
    app.stop().await;
}

/// A cooperative's stock comes a page at a time, pooled listings first, then the members',
/// each by title: following the cursors gives every listing once, in that order.
#[tokio::test]
async fn a_cooperatives_stock_comes_in_pages() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    // Two more pooled listings, one titled to sort before the first and one after, and a
    // second member listing: five in all.
    for title in ["Bơ sáp Đắk Lắk", "Xoài cát Hòa Lộc loại 1"] {
        let mut body = listing_body();
        body["cooperative_id"] = json!(c.id);
        body["title"] = json!(title);
        app.api.create_listing(&c.manager, &body).await;
    }
    app.api.listing_with_stock(&c.member, "5").await;
    let path = format!("/v1/cooperatives/{}/stock", c.id);
    let (status, whole) = app.api.get(&path, Some(&c.manager)).await;
    assert_eq!(status, 200, "{whole}");
    let all: Vec<Value> = whole["items"].as_array().unwrap().clone();
    assert_eq!(all.len(), 5, "{whole}");
    assert_eq!(whole["next_cursor"], Value::Null, "{whole}");
    let kinds: Vec<&str> = all.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    let mut sorted = kinds.clone();
    sorted.sort_by_key(|k| *k == "member");
    assert_eq!(kinds, sorted, "pooled first: {whole}");

    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_path = match &cursor {
            Some(c) => format!("{path}?limit=1&cursor={c}"),
            None => format!("{path}?limit=1"),
        };
        let (status, page) = app.api.get(&page_path, Some(&c.manager)).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 1, "{page}");
        paged.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(paged.len() <= all.len(), "the pages repeat: {paged:?}");
    }
    assert_eq!(paged, all);

    let (status, body) = app
        .api
        .get(&format!("{path}?cursor=bm90LWEtcGxhY2U"), Some(&c.manager))
        .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("cursor")),
        "{body}"
    );
    let (status, body) = app
        .api
        .get(&format!("{path}?limit=101"), Some(&c.manager))
        .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("limit")),
        "{body}"
    );
    app.stop().await;
}

/// A minimal XLSX workbook with one sheet of inline strings, as spreadsheet programs write it;
/// a value written `#7.125` is a number cell.
fn xlsx(rows: &[Vec<String>]) -> Vec<u8> {
    let mut sheet = String::from(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>"#,
    );
    for (r, row) in rows.iter().enumerate() {
        sheet.push_str(&format!(r#"<row r="{}">"#, r + 1));
        for (c, v) in row.iter().enumerate() {
            let col = char::from(b'A' + u8::try_from(c).unwrap());
            match v.strip_prefix('#') {
                Some(number) => {
                    sheet.push_str(&format!(r#"<c r="{col}{}"><v>{number}</v></c>"#, r + 1))
                }
                None => sheet.push_str(&format!(
                    r#"<c r="{col}{}" t="inlineStr"><is><t>{v}</t></is></c>"#,
                    r + 1
                )),
            }
        }
        sheet.push_str("</row>");
    }
    sheet.push_str("</sheetData></worksheet>");
    workbook(&sheet, None)
}

/// Writes a workbook's shared-strings part into the zip.
type SharedStrings<'a> = &'a dyn Fn(&mut dyn std::io::Write);

/// A workbook of one sheet (`sheet`, its XML) with the parts around it that spreadsheet
/// programs write, and a shared-strings part written by `shared` when given.
fn workbook(sheet: &str, shared: Option<SharedStrings<'_>>) -> Vec<u8> {
    use std::io::Write;
    let (strings_type, strings_rel) = match shared {
        Some(_) => (
            r#"<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>"#,
            r#"<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>"#,
        ),
        None => ("", ""),
    };
    let files = [
        ("[Content_Types].xml", format!(r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>{strings_type}</Types>"#)),
        ("_rels/.rels", r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#.to_owned()),
        ("xl/workbook.xml", r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Kho" sheetId="1" r:id="rId1"/></sheets></workbook>"#.to_owned()),
        ("xl/_rels/workbook.xml.rels", format!(r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>{strings_rel}</Relationships>"#)),
        ("xl/worksheets/sheet1.xml", sheet.to_owned()),
    ];
    let mut out = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut out);
    for (name, body) in files {
        z.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(body.as_bytes()).unwrap();
    }
    if let Some(write) = shared {
        z.start_file(
            "xl/sharedStrings.xml",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        write(&mut z);
    }
    z.finish().unwrap();
    out.into_inner()
}

#[tokio::test]
async fn an_xlsx_file_imports_through_the_api_and_a_csv_through_the_command_line() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    let header = [
        "listing",
        "lot_code",
        "household",
        "quantity",
        "harvest_date",
    ]
    .map(String::from)
    .to_vec();
    let good = vec![
        c.pooled.clone(),
        "XL-1".into(),
        c.member.id.clone(),
        // A number cell with three decimals is not taken for thousands.
        "#7.125".into(),
        "2026-11-20".into(),
    ];
    let bad = vec![
        c.pooled.clone(),
        "XL-2".into(),
        c.member.id.clone(),
        "-1".into(),
        "2026-11-20".into(),
    ];
    let (status, body) = import(&app, &c, XLSX, xlsx(&[header.clone(), good.clone(), bad])).await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "rows[3].quantity", "{body}");
    let (status, _) = import(&app, &c, XLSX, xlsx(&[header, good])).await;
    assert_eq!(status, 200);
    let stock = app.api.stock(&c.manager, &c.pooled).await;
    assert_eq!(stock.levels.on_hand, "7.125");

    // The same import from the command line, with a bad row, then without.
    let dir =
        std::env::temp_dir().join(format!("nongsan-import-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kho.csv");
    let run = |file: &std::path::Path| {
        crate::support::process::nongsan()
            .args(["import", "--cooperative", &c.id])
            .arg(file)
            .env("DATABASE_URL", &app.db.url)
            .output()
            .unwrap()
    };
    std::fs::write(&file, format!("listing,lot_code,household,quantity,harvest_date\n{},CLI-1,{},2,2026-11-21\n{},CLI 2,{},2,2026-11-21\n", c.pooled, c.member.id, c.pooled, c.member.id)).unwrap();
    let out = run(&file);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing was imported") && err.contains("rows[3].lot_code"),
        "{err}"
    );
    std::fs::write(
        &file,
        format!(
            "listing,lot_code,household,quantity,harvest_date\n{},CLI-1,{},2,2026-11-21\n",
            c.pooled, c.member.id
        ),
    )
    .unwrap();
    let out = run(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 1 rows"));
    let stock = app.api.stock(&c.manager, &c.pooled).await;
    assert_eq!(stock.levels.on_hand, "9.125");
    app.stop().await;
}

/// A workbook of a few hundred bytes whose one sheet has cells at A1 and at the last cell a
/// sheet may have (XFD1048576), and says so in its dimension.
fn xlsx_claiming_a_huge_sheet() -> Vec<u8> {
    let sheet = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><dimension ref="A1:XFD1048576"/><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>listing</t></is></c></row><row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row></sheetData></worksheet>"#;
    workbook(sheet, None)
}

/// The peak resident memory of this process (nextest runs each test in a process of its own).
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

#[tokio::test]
async fn a_workbook_claiming_a_huge_sheet_is_refused_before_it_is_read_and_memory_stays_bounded() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    let bomb = xlsx_claiming_a_huge_sheet();
    assert!(bomb.len() < 2000, "{} bytes", bomb.len());

    // Rights come first: someone who does not manage the cooperative is refused without the
    // file being read.
    let stranger = app.api.register(Role::Buyer).await;
    let res = app
        .api
        .send(
            Request::post(format!("/v1/cooperatives/{}/imports", c.id))
                .by(&stranger)
                .body(XLSX, bomb.clone()),
        )
        .await;
    assert_eq!(res.status, 403, "{}", res.text());

    let before = peak_rss_mib();
    let (status, body) = import(&app, &c, XLSX, bomb).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "file", "{body}");
    assert_eq!(body["errors"][0]["code"], "too_large", "{body}");
    let after = peak_rss_mib();
    assert!(
        after < before + 256,
        "peak memory grew from {before} MiB to {after} MiB"
    );
    // The service is still there.
    let (status, _) = import(
        &app,
        &c,
        CSV,
        "listing,lot_code,household,quantity,harvest_date\n",
    )
    .await;
    assert_eq!(status, 422, "a header and no rows");
    app.stop().await;
}

/// A workbook of a few KiB: one shared string of `len` bytes (one letter repeated, so it
/// packs small), and a sheet whose `cells` rows all point at it.
fn xlsx_sharing_one_long_string(len: usize, cells: usize) -> Vec<u8> {
    let mut sheet = String::from(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>"#,
    );
    for r in 1..=cells {
        sheet.push_str(&format!(
            r#"<row r="{r}"><c r="A{r}" t="s"><v>0</v></c></row>"#
        ));
    }
    sheet.push_str("</sheetData></worksheet>");
    // Written in pieces: this process's peak memory is what the tests measure.
    let strings = |w: &mut dyn std::io::Write| {
        w.write_all(br#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1"><si><t>"#).unwrap();
        let piece = [b'x'; 64 * 1024];
        for _ in 0..len / piece.len() {
            w.write_all(&piece).unwrap();
        }
        w.write_all(&piece[..len % piece.len()]).unwrap();
        w.write_all(b"</t></si></sst>").unwrap();
    };
    workbook(&sheet, Some(&strings))
}

/// A long string stored once in a workbook and pointed at by every row would be copied for
/// each cell: 4 MiB × 250 rows is 1 GiB from 20 KiB sent (and 40 MiB × 10,000 rows, within
/// every other bound, would be 400 GB: the process aborts). A cell longer than any value of
/// an import is refused before it is copied.
#[tokio::test]
async fn a_workbook_whose_rows_share_one_huge_string_is_refused_and_memory_stays_bounded() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    let bomb = xlsx_sharing_one_long_string(4 * 1024 * 1024, 250);
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    let before = peak_rss_mib();
    let (status, body) = import(&app, &c, XLSX, bomb).await;
    let after = peak_rss_mib();
    assert!(
        after < before + 128,
        "peak memory grew from {before} MiB to {after} MiB"
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "file", "{body}");
    assert_eq!(body["errors"][0]["code"], "too_large", "{body}");
    let stock = app.api.stock(&c.manager, &c.pooled).await;
    assert_eq!(stock.levels.on_hand, "0", "nothing imported");
    app.stop().await;
}

/// Sets what the zip directory and the local header of part `name` say it unpacks to.
fn declare_unpacked_size(zip: &mut [u8], name: &str, size: u32) {
    let u16_at = |b: &[u8], i: usize| usize::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let u32_at =
        |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
    let end = (0..zip.len() - 3)
        .rev()
        .find(|&i| zip[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .expect("the end of the zip directory");
    let mut at = u32_at(zip, end + 16);
    for _ in 0..u16_at(zip, end + 10) {
        let (name_len, extra, comment) = (
            u16_at(zip, at + 28),
            u16_at(zip, at + 30),
            u16_at(zip, at + 32),
        );
        if &zip[at + 46..at + 46 + name_len] == name.as_bytes() {
            let local = u32_at(zip, at + 42);
            zip[at + 24..at + 28].copy_from_slice(&size.to_le_bytes());
            zip[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
            return;
        }
        at += 46 + name_len + extra + comment;
    }
    panic!("no part {name}");
}

/// The bound on what a workbook unpacks to holds for what it does unpack to, not for what
/// its zip directory says: here a part declared as 1 KiB unpacks to 100 MiB.
#[tokio::test]
async fn a_workbook_whose_parts_unpack_to_more_than_they_declare_is_refused_and_memory_stays_bounded()
 {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    let mut bomb = xlsx_sharing_one_long_string(100 * 1024 * 1024, 1);
    declare_unpacked_size(&mut bomb, "xl/sharedStrings.xml", 1024);
    assert!(bomb.len() < 2 * 1024 * 1024, "{} bytes", bomb.len());
    let before = peak_rss_mib();
    let (status, body) = import(&app, &c, XLSX, bomb).await;
    let after = peak_rss_mib();
    assert!(
        after < before + 128,
        "peak memory grew from {before} MiB to {after} MiB"
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "file", "{body}");
    assert_eq!(body["errors"][0]["code"], "too_large", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_csv_with_more_rows_than_an_import_may_have_is_422() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    let mut csv = String::from("listing,lot_code,household,quantity,harvest_date\n");
    for i in 0..=nongsan_listing::stock::imports::MAX_IMPORT_ROWS {
        csv.push_str(&format!("{},L{i},{},1,2026-11-20\n", c.pooled, c.member.id));
    }
    let (status, body) = import(&app, &c, CSV, csv).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["code"], "too_large", "{body}");
    let stock = app.api.stock(&c.manager, &c.pooled).await;
    assert_eq!(stock.levels.on_hand, "0", "nothing imported");
    app.stop().await;
}

#[tokio::test]
async fn a_manager_has_no_rights_over_a_household_that_never_agreed_to_join() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let manager = api.staff(Role::CooperativeManager).await;
    let (household, buyer, listing) = api.shop().await;
    let body = json!({ "name": "HTX Đơn Dương", "address": { "province_code": "68", "commune_code": "24931" } });
    let coop = api.create_cooperative(&manager, &body).await;
    let mut pooled = listing_body();
    pooled["cooperative_id"] = json!(coop);
    let pooled = id_of(&api.create_listing(&manager, &pooled).await);
    let order = api.cod_order(&buyer, &listing, "1").await;

    // The manager names the household a member; the household is never asked.
    let (status, body) = api.invite_member(&manager, &coop, &household.id).await;
    assert_eq!(status, 200, "{body}");

    // Its listing is not the manager's to change...
    let (status, body) = api
        .patch(
            &format!("/v1/listings/{listing}"),
            &manager,
            &json!({ "price_vnd": 1000 }),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // ...nor its lots to pool...
    let (status, body) = api
        .post(&format!("/v1/cooperatives/{coop}/pooling"), Some(&manager), &json!({ "from_listing_id": listing, "lot_code": "NEW-1", "quantity": "5", "to_listing_id": pooled }))
        .await;
    assert_eq!(status, 403, "{body}");
    // ...nor its orders to read or decide (a stranger to an order gets 404, so that order
    // ids cannot be probed).
    let (status, body) = api.seller_orders(&manager, &household.id).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = api.read_order(&manager, &order).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api.order_action(&manager, &order, "confirm", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api
        .order_action(&manager, &order, "decline", Some("hết hàng"))
        .await;
    assert_eq!(status, 404, "{body}");

    // Nothing changed.
    let (_, o) = api.read_order(&household, &order).await;
    assert_eq!(o["status"], "placed", "{o}");
    assert_eq!(api.stock(&household, &listing).await.levels.on_hand, "10");
    app.stop().await;
}

/// A manager with a cooperative, and a household with a listing of 10 kg.
async fn manager_and_household(app: &TestApp) -> (User, String, User, String) {
    let manager = app.api.staff(Role::CooperativeManager).await;
    let body = json!({ "name": "HTX Đơn Dương", "address": { "province_code": "68", "commune_code": "24931" } });
    let coop = app.api.create_cooperative(&manager, &body).await;
    let household = app.api.register(Role::Household).await;
    let listing = app.api.listing_with_stock(&household, "10").await;
    (manager, coop, household, listing)
}

/// The status of `manager` changing the price of `listing`.
async fn edit_as(app: &TestApp, manager: &User, listing: &str) -> u16 {
    app.api
        .patch(
            &format!("/v1/listings/{listing}"),
            manager,
            &json!({ "price_vnd": 60000 }),
        )
        .await
        .0
}

#[tokio::test]
async fn a_household_that_accepts_gives_the_manager_rights_one_that_declines_never_does() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (manager, coop, household, listing) = manager_and_household(&app).await;
    let (status, m) = api.invite_member(&manager, &coop, &household.id).await;
    assert_eq!(
        (status, m["status"].as_str()),
        (200, Some("invited")),
        "{m}"
    );
    let (_, view) = api.get(&format!("/v1/cooperatives/{coop}"), None).await;
    assert_eq!(
        view["members"],
        json!([]),
        "an invited household is no member"
    );
    assert_eq!(edit_as(&app, &manager, &listing).await, 403);

    // Nobody but the household answers for it: not the manager, not another household.
    let other = api.register(Role::Household).await;
    for who in [
        &manager,
        &manager.acting_for(&household.id),
        &other,
        &other.acting_for(&household.id),
    ] {
        let (status, body) = api
            .answer_invitation(who, &coop, &household.id, "accept")
            .await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = api
        .answer_invitation(&manager, &coop, &household.id, "approve")
        .await;
    assert_eq!(status, 403, "only an operator approves: {body}");

    // It accepts: the manager acts for it.
    let (status, m) = api
        .answer_invitation(&household, &coop, &household.id, "accept")
        .await;
    assert_eq!((status, m["status"].as_str()), (200, Some("active")), "{m}");
    let (_, view) = api.get(&format!("/v1/cooperatives/{coop}"), None).await;
    assert_eq!(view["members"], json!([household.id]));
    assert_eq!(edit_as(&app, &manager, &listing).await, 200);
    let (status, body) = api.seller_orders(&manager, &household.id).await;
    assert_eq!(status, 200, "{body}");
    // Inviting a member again changes nothing.
    let (status, m) = api.invite_member(&manager, &coop, &household.id).await;
    assert_eq!((status, m["status"].as_str()), (200, Some("active")), "{m}");
    assert_eq!(edit_as(&app, &manager, &listing).await, 200);

    // Another household declines: the manager never gets rights over it.
    let declining = api.register(Role::Household).await;
    let theirs = api.listing_with_stock(&declining, "10").await;
    api.invite_member(&manager, &coop, &declining.id).await;
    let (status, m) = api
        .answer_invitation(&declining, &coop, &declining.id, "decline")
        .await;
    assert_eq!(
        (status, m["status"].as_str()),
        (200, Some("declined")),
        "{m}"
    );
    assert_eq!(edit_as(&app, &manager, &theirs).await, 403);
    let (status, _) = api.seller_orders(&manager, &declining.id).await;
    assert_eq!(status, 403);
    // A declined invitation cannot be accepted or approved afterwards.
    let (status, body) = api
        .answer_invitation(&declining, &coop, &declining.id, "accept")
        .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("not_invited")));
    let operator = User::minted(Role::Operator);
    let (status, _) = api
        .answer_invitation(&operator, &coop, &declining.id, "approve")
        .await;
    assert_eq!(status, 409);
    assert_eq!(edit_as(&app, &manager, &theirs).await, 403);
    // No invitation, nothing to answer.
    let (status, _) = api
        .answer_invitation(&other, &coop, &other.id, "accept")
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn only_the_households_assigned_helper_accepts_for_it_and_that_is_recorded() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let manager = app.api.staff(Role::CooperativeManager).await;
    let body = json!({ "name": "HTX Đơn Dương", "address": { "province_code": "68", "commune_code": "24931" } });
    let coop = api.create_cooperative(&manager, &body).await;
    let helper = api.staff(Role::Helper).await;
    let other_helper = api.staff(Role::Helper).await;
    let (status, reg) = api
        .post("/v1/households", Some(&helper), &json!({ "phone": crate::support::calls::phone(), "display_name": "Bà Lan", "household": crate::support::calls::household_profile("Hộ bà Lan") }))
        .await;
    assert_eq!(status, 201, "{reg}");
    let household = reg["household"]["id"].as_str().unwrap().to_owned();
    let listing = id_of(
        &api.create_listing(&helper.acting_for(&household), &listing_body())
            .await,
    );
    api.invite_member(&manager, &coop, &household).await;

    // A helper not assigned to the household, or one not saying for whom, cannot accept.
    for who in [&other_helper.acting_for(&household), &helper] {
        let (status, body) = api
            .answer_invitation(who, &coop, &household, "accept")
            .await;
        assert_eq!(status, 403, "{body}");
    }
    assert_eq!(edit_as(&app, &manager, &listing).await, 403);

    // The assigned helper, with the household present, accepts for it.
    let (status, m) = api
        .answer_invitation(&helper.acting_for(&household), &coop, &household, "accept")
        .await;
    assert_eq!((status, m["status"].as_str()), (200, Some("active")), "{m}");
    assert_eq!(edit_as(&app, &manager, &listing).await, 200);

    // The household's audit trail says who accepted, in its name.
    let operator = User::minted(Role::Operator);
    let (status, trail) = api
        .get(
            &format!("/v1/households/{household}/audit"),
            Some(&operator),
        )
        .await;
    assert_eq!(status, 200, "{trail}");
    let accepted = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "cooperative.invitation_accepted")
        .unwrap_or_else(|| panic!("{trail}"));
    assert_eq!(accepted["actor_id"], helper.id.as_str());
    assert_eq!(accepted["actor_role"], "helper");
    assert_eq!(accepted["on_behalf_of"], household.as_str());
    assert_eq!(
        accepted["details"]["answered_by"],
        "helper_with_household_present"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_operator_approves_an_invitation_and_the_manager_gets_rights() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (manager, coop, household, listing) = manager_and_household(&app).await;
    let operator = User::minted(Role::Operator);
    let (status, _) = api
        .answer_invitation(&operator, &coop, &household.id, "approve")
        .await;
    assert_eq!(status, 404, "nothing to approve before an invitation");
    api.invite_member(&manager, &coop, &household.id).await;
    assert_eq!(edit_as(&app, &manager, &listing).await, 403);
    let (status, m) = api
        .answer_invitation(&operator, &coop, &household.id, "approve")
        .await;
    assert_eq!((status, m["status"].as_str()), (200, Some("active")), "{m}");
    assert_eq!(edit_as(&app, &manager, &listing).await, 200);
    let (status, body) = api
        .post(&format!("/v1/cooperatives/{coop}/pooling"), Some(&manager), &json!({ "from_listing_id": listing, "lot_code": "LOT-A", "quantity": "1", "to_listing_id": id_of(&api.create_listing(&manager, &{ let mut b = listing_body(); b["cooperative_id"] = json!(coop); b }).await) }))
        .await;
    assert_eq!(status, 200, "{body}");
    // Removed, it is no longer the manager's.
    let res = api
        .send(
            Request::delete(format!("/v1/cooperatives/{coop}/members/{}", household.id))
                .by(&manager),
        )
        .await;
    assert_eq!(res.status, 204);
    assert_eq!(edit_as(&app, &manager, &listing).await, 403);
    app.stop().await;
}

#[tokio::test]
async fn the_demo_cooperatives_members_are_active_members() {
    let app = TestApp::spawn().await;
    let pool = app.db.pool("listing").await;
    assert_eq!(
        nongsan_listing::seed::seed_demo_with_password(&pool, crate::support::calls::PASSWORD)
            .await
            .unwrap(),
        50
    );
    let (members, active): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'active') FROM cooperative_members",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(members > 0);
    assert_eq!(members, active);
    let (coop, listing): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "SELECT m.cooperative_id, l.id FROM cooperative_members m JOIN listings l ON l.household_id = m.household_id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let manager = app
        .api
        .sign_in(nongsan_listing::seed::demo_manager_phone().as_str())
        .await;
    assert_eq!(edit_as(&app, &manager, &listing.to_string()).await, 200);
    let (_, view) = app.api.get(&format!("/v1/cooperatives/{coop}"), None).await;
    assert_eq!(
        view["members"].as_array().map(Vec::len),
        Some(usize::try_from(members).unwrap())
    );
    app.stop().await;
}

#[tokio::test]
async fn an_import_locks_its_listings_stock_in_listing_order_not_file_order() {
    // A checkout locks its listings' stock in listing-id order; an import that locked in file
    // order could hold the later listing while waiting for the earlier one, and deadlock
    // with it. Here the earlier listing's row is held elsewhere and the file names the later
    // listing first: the waiting import must not hold the later one.
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let c = std::sync::Arc::new(coop(&app).await);
    let mut ids = [c.pooled.clone(), c.member_listing.clone()];
    ids.sort_by_key(|id| uuid::Uuid::parse_str(id).unwrap());
    let [earlier, later] = ids;
    let pool = app.db.pool("listing").await;
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM stock WHERE listing_id = $1::uuid FOR UPDATE")
        .bind(&earlier)
        .execute(&mut *holder)
        .await
        .unwrap();
    let csv = format!(
        "listing,lot_code,household,quantity,harvest_date\n{later},ORD-1,{m},2,2026-11-20\n{earlier},ORD-2,{m},3,2026-11-20\n",
        m = c.member.id,
    );
    let importing = {
        let (app, c) = (app.clone(), c.clone());
        tokio::spawn(async move { import(&app, &c, CSV, csv).await })
    };
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "the import to wait for the held stock row",
        || async { (crate::support::lock_waiters(&pool, "%").await > 0).then_some(()) },
    )
    .await;
    assert!(
        !crate::support::row_locked(&pool, "stock", "listing_id", &later).await,
        "the waiting import holds the later listing's stock"
    );
    holder.commit().await.unwrap();
    let (status, body) = importing.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["imported"], 2);
    if let Ok(app) = std::sync::Arc::try_unwrap(app) {
        app.stop().await;
    }
}

/// A manager may name a household (`X-On-Behalf-Of`) on the cooperative's own things, as the
/// authorization table allows (pooling a member's lot), but only a member: a stranger named
/// there is 403, and nothing is recorded in its name, neither in its audit nor on the stock's
/// movements (before, the name was taken and ignored: 200 and 201). On the member's own
/// listing, where access checks the name, it is recorded.
#[tokio::test]
async fn a_household_named_on_the_cooperatives_own_things_is_not_written_in_its_name() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    let stranger = app.api.register(Role::Household).await;
    let posing = c.manager.acting_for(&stranger.id);
    let res = app
        .api
        .send(
            Request::patch(format!("/v1/listings/{}", c.pooled))
                .by(&posing)
                .json(&json!({ "price_vnd": 70000 })),
        )
        .await;
    assert_eq!(res.status, 403, "{}", res.text());
    let res = app
        .api
        .send(
            Request::post(format!("/v1/listings/{}/lots", c.pooled))
                .by(&posing)
                .json(&json!({ "lot_code": "X-1", "harvest_date": "2026-11-20", "quantity": "1", "household_id": c.member.id })),
        )
        .await;
    assert_eq!(res.status, 403, "{}", res.text());
    // Naming a member there is what pooling does.
    let res = app
        .api
        .send(
            Request::post(format!("/v1/listings/{}/lots", c.pooled))
                .by(&c.manager.acting_for(&c.member.id))
                .json(&json!({ "lot_code": "X-2", "harvest_date": "2026-11-20", "quantity": "1", "household_id": c.member.id })),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let (status, audit) = app
        .api
        .get(
            &format!("/v1/households/{}/audit", stranger.id),
            Some(&stranger),
        )
        .await;
    assert_eq!(status, 200, "{audit}");
    let in_its_name: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor_id"] != stranger.id.as_str())
        .collect();
    assert!(in_its_name.is_empty(), "{in_its_name:?}");
    let pool = app.db.pool("listing").await;
    let named: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stock_movements WHERE on_behalf_of IS NOT NULL AND listing_id = $1",
    )
    .bind(uuid::Uuid::parse_str(&c.pooled).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        named, 0,
        "a movement of the cooperative's listing in the stranger's name"
    );

    // On the member's own listing the manager's name for it is checked, and recorded.
    let for_member = c.manager.acting_for(&c.member.id);
    let res = app
        .api
        .send(
            Request::post(format!("/v1/listings/{}/lots", c.member_listing))
                .by(&for_member)
                .json(&json!({ "lot_code": "M-2", "harvest_date": "2026-11-20", "quantity": "1" })),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let member: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT on_behalf_of FROM stock_movements WHERE listing_id = $1 ORDER BY at DESC LIMIT 1",
    )
    .bind(uuid::Uuid::parse_str(&c.member_listing).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(member.map(|m| m.to_string()), Some(c.member.id.clone()));
    let (_, audit) = app
        .api
        .get(
            &format!("/v1/households/{}/audit", c.member.id),
            Some(&c.member),
        )
        .await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor_id"] == c.manager.id.as_str()),
        "{audit}"
    );
    app.stop().await;
}

/// An import takes its rows in together: each listing's stock is announced once
/// (`stock.changed`), whatever its number of rows, while every row keeps its movement and its
/// audit entry. Taken one row at a time, each row wrote its own `stock.changed`: 10,000 of
/// them for a 10,000-row file, each read by the search indexer and the relay.
#[tokio::test]
async fn an_import_announces_each_listings_stock_once_and_records_every_row() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    let listing = app.db.pool("listing").await;
    let count = |sql: &'static str| {
        let listing = listing.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&listing)
                .await
                .unwrap()
        }
    };
    let changed = "SELECT count(*) FROM outbox WHERE event_type = 'stock.changed'";
    let intakes = "SELECT count(*) FROM stock_movements WHERE kind = 'intake'";
    let audited = "SELECT count(*) FROM audit_log WHERE action = 'stock.intake'";
    let before = (
        count(changed).await,
        count(intakes).await,
        count(audited).await,
    );
    // Six rows on two listings; two rows add to one lot.
    let csv = format!(
        "listing,lot_code,household,quantity,harvest_date\n{p},B-1,{m},1,2026-11-20\n{l},B-2,{m},2,2026-11-20\n{p},B-3,{m},3,2026-11-21\n{l},B-2,{m},4,2026-11-20\n{p},B-4,{m},5,2026-11-22\n{l},B-5,{m},6,2026-11-22\n",
        p = c.pooled,
        l = c.member_listing,
        m = c.member.id,
    );
    let (status, body) = import(&app, &c, CSV, csv).await;
    assert_eq!(status, 200, "{body}");
    let after = (
        count(changed).await,
        count(intakes).await,
        count(audited).await,
    );
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (2, 6, 6),
        "stock.changed, intake movements, audit entries"
    );
    assert_eq!(
        app.api.stock(&c.manager, &c.pooled).await.levels.on_hand,
        "9"
    );
    let member = app.api.stock(&c.member, &c.member_listing).await;
    assert_eq!(member.levels.on_hand, "42"); // 30 before
    let b2: Vec<&str> = member
        .lots
        .iter()
        .filter(|l| l.lot_code == "B-2")
        .map(|l| l.on_hand.as_str())
        .collect();
    assert_eq!(b2, vec!["6"]);
}

/// A row whose lot is known with another harvest date or household is named, each such row,
/// whether the lot was in the listing before or made by an earlier row of the file; a row
/// that agrees with the lot is not named.
#[tokio::test]
async fn an_import_names_each_row_whose_lot_is_known_otherwise() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    // The member's listing has LOT-A, harvested 2026-11-20.
    let csv = format!(
        "listing,lot_code,household,quantity,harvest_date\n{l},LOT-A,{m},1,2026-11-19\n{l},LOT-A,{m},1,2026-11-20\n{p},N-1,{m},1,2026-11-20\n{p},N-1,{m},1,2026-11-21\n{p},N-1,{m},1,2026-11-20\n",
        p = c.pooled,
        l = c.member_listing,
        m = c.member.id,
    );
    let (status, body) = import(&app, &c, CSV, csv).await;
    assert_eq!(status, 422, "{body}");
    let named: Vec<(&str, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        named,
        vec![
            ("rows[2].lot_code", "lot_exists"),
            ("rows[5].lot_code", "lot_exists")
        ],
        "{body}"
    );
    assert_eq!(
        app.api.stock(&c.manager, &c.pooled).await.levels.on_hand,
        "0"
    );
}

/// An adjustment that would take a lot below zero is refused, even when its listing holds
/// enough in other lots, and changes nothing.
#[tokio::test]
async fn an_adjustment_below_what_its_lot_holds_is_refused_whatever_the_listing_holds() {
    let app = TestApp::spawn().await;
    let c = coop(&app).await;
    app.api
        .add_lot(&c.member, &c.member_listing, "LOT-B", "2026-11-21", "3")
        .await;
    let res = app
        .api
        .send(
            Request::post(format!("/v1/listings/{}/adjustments", c.member_listing))
                .by(&c.member)
                .json(&json!({ "lot_code": "LOT-B", "quantity": "-5", "reason": "đếm lại" })),
        )
        .await;
    assert_eq!(res.status, 409, "{}", res.text());
    let stock = app.api.stock(&c.member, &c.member_listing).await;
    assert_eq!(stock.levels.on_hand, "33");
    assert_eq!(
        stock
            .lots
            .iter()
            .map(|l| (l.lot_code.as_str(), l.on_hand.as_str()))
            .collect::<Vec<_>>(),
        vec![("LOT-A", "30"), ("LOT-B", "3")]
    );
}
