//! Imports of a cooperative's stock from CSV or XLSX: every row, or none when one is bad.

use std::collections::HashMap;

use axum::{
    Json as AxumJson,
    body::Bytes,
    extract::State,
    http::{HeaderMap, header},
};
use chrono::NaiveDate;
use nongsan_shared::{
    AccountId, CooperativeId, ListingId, PhoneNumber, Quantity, auth::Actor, http::Path,
    invalid::Invalid,
};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{
    access::{Owner, is_member, may_manage, owner_of},
    app::AppState,
    audit::audit,
    error::{ListingError, Problems, Result},
    sellers::cooperatives::load_cooperative,
    stock::{levels::parse_lot_code, lots, lots::LotIntake},
};

/// One row of a stock import, as read from the file.
#[derive(Debug, Clone, Default)]
pub struct ImportRow {
    /// Its line in the file (the header is line 1), by which a bad row is named.
    pub line: usize,
    /// Listing id.
    pub listing: String,
    /// Lot code.
    pub lot_code: String,
    /// Household account id or phone number.
    pub household: String,
    /// Quantity: a point or a comma before its decimals, no thousands separator (a
    /// separator followed by exactly three digits after a whole number is refused, as
    /// `ambiguous_number`: write 2.1250 for three decimals).
    pub quantity: String,
    /// Harvest date, YYYY-MM-DD (or DD/MM/YYYY).
    pub harvest_date: String,
}

/// What an import did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReport {
    /// Rows imported.
    pub imported: usize,
}

/// Most data rows one import may have.
pub const MAX_IMPORT_ROWS: usize = 10_000;
/// Most bytes an import file may have: the upload limit of the endpoint, and of `nongsan
/// import`.
pub const MAX_IMPORT_BYTES: usize = 2 * 1024 * 1024;
/// Most columns a sheet may use.
const MAX_COLUMNS: u32 = 64;
/// Most parts a workbook may have, and most bytes they may unpack to together (checked before
/// the workbook is read).
const MAX_PARTS: usize = 200;
const MAX_UNPACKED_BYTES: u64 = 64 * 1024 * 1024;
/// Most bytes one cell may hold: far more than any value of an import (an id, a lot code, a
/// phone number, a quantity, a date). A workbook stores a text once and lets any number of
/// cells point at it, so a longer one would be copied for each: 40 MiB by 10,000 rows.
const MAX_CELL_BYTES: usize = 1024;

fn too_large(en: String, vi: String) -> ListingError {
    ListingError::field("file", Invalid::new("too_large", en, vi))
}

fn too_many_rows() -> ListingError {
    too_large(
        format!("has more than {MAX_IMPORT_ROWS} rows; split it into several imports"),
        format!("có hơn {MAX_IMPORT_ROWS} dòng; hãy chia thành nhiều lần nhập"),
    )
}

fn too_many_bytes() -> ListingError {
    too_large(
        format!("is larger than {} MiB", MAX_IMPORT_BYTES / (1024 * 1024)),
        format!("lớn hơn {} MiB", MAX_IMPORT_BYTES / (1024 * 1024)),
    )
}

/// The kind of an import file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// CSV text.
    Csv,
    /// An XLSX workbook.
    Xlsx,
}

/// Reads an import file of this kind: bounded in bytes, rows and columns before anything
/// grows with what the file claims. CPU-bound: call it off the async runtime.
pub fn read_file(kind: FileKind, bytes: &[u8]) -> Result<Vec<ImportRow>> {
    if bytes.len() > MAX_IMPORT_BYTES {
        return Err(too_many_bytes());
    }
    match kind {
        FileKind::Csv => read_csv(bytes),
        FileKind::Xlsx => read_xlsx(bytes),
    }
}

const COLUMNS: [&str; 5] = [
    "listing",
    "lot_code",
    "household",
    "quantity",
    "harvest_date",
];

/// Reads rows from CSV text with a header naming the five columns (in any order).
fn read_csv(bytes: &[u8]) -> Result<Vec<ImportRow>> {
    let text = std::str::from_utf8(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)).map_err(
        |_| {
            ListingError::field(
                "file",
                Invalid::new("not_utf8", "must be UTF-8 text", "phải là văn bản UTF-8"),
            )
        },
    )?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| {
            ListingError::field(
                "file",
                Invalid::new(
                    "bad_csv",
                    format!("is not CSV: {e}"),
                    format!("không phải CSV: {e}"),
                ),
            )
        })?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let mut records = Vec::new();
    // Line ends counted up to `counted`, which is on line `line` of the file.
    let file = text.as_bytes();
    let (mut counted, mut line) = (0, 1);
    for rec in reader.records() {
        let rec = rec.map_err(|e| {
            ListingError::field(
                "file",
                Invalid::new(
                    "bad_csv",
                    format!("is not CSV: {e}"),
                    format!("không phải CSV: {e}"),
                ),
            )
        })?;
        if records.len() == MAX_IMPORT_ROWS {
            return Err(too_many_rows());
        }
        // The record's line in the file, blank lines, CRLF ends and values over several lines
        // counted: the parser's position is where it started reading, before the line ends
        // and blank lines it skipped, so those are skipped here and the line ends counted
        // from the last record on (once, however long the file).
        let from = rec
            .position()
            .and_then(|p| usize::try_from(p.byte()).ok())
            .unwrap_or(0)
            .clamp(counted, file.len());
        let start = file[from..]
            .iter()
            .position(|b| !matches!(b, b'\r' | b'\n'))
            .map_or(file.len(), |i| from + i);
        line += file[counted..start].iter().filter(|b| **b == b'\n').count();
        counted = start;
        records.push((line, rec.iter().map(str::to_owned).collect::<Vec<_>>()));
    }
    to_rows(&headers, records)
}

/// Reads rows from the first sheet of an XLSX workbook, cell by cell: the sheet's claimed
/// dimension and every cell's position are checked against the bounds before anything is
/// allocated for them, and the parts' unpacked sizes before anything is unpacked.
fn read_xlsx(bytes: &[u8]) -> Result<Vec<ImportRow>> {
    use calamine::{DataRef, Reader, Xlsx};
    let bad = |e: String| {
        ListingError::field(
            "file",
            Invalid::new(
                "bad_xlsx",
                format!("is not an XLSX workbook: {e}"),
                format!("không phải tệp XLSX: {e}"),
            ),
        )
    };
    check_unpacked_size(bytes).map_err(|e| match e {
        Unpacked::Bad(e) => bad(e),
        Unpacked::TooLarge => too_large(
            format!(
                "unpacks to more than {} MiB",
                MAX_UNPACKED_BYTES / (1024 * 1024)
            ),
            format!("giải nén ra hơn {} MiB", MAX_UNPACKED_BYTES / (1024 * 1024)),
        ),
    })?;
    let mut book: Xlsx<_> =
        Xlsx::new(std::io::Cursor::new(bytes)).map_err(|e| bad(e.to_string()))?;
    let sheet = book
        .sheet_names()
        .first()
        .cloned()
        .ok_or_else(|| bad("no sheet".to_owned()))?;
    let mut cells = book
        .worksheet_cells_reader(&sheet)
        .map_err(|e| bad(e.to_string()))?;
    let max_row = u32::try_from(MAX_IMPORT_ROWS).unwrap_or(u32::MAX);
    let too_wide = || {
        too_large(
            format!("uses more than {MAX_COLUMNS} columns"),
            format!("dùng hơn {MAX_COLUMNS} cột"),
        )
    };
    let claimed = cells.dimensions();
    if claimed.end.0 > max_row {
        return Err(too_many_rows());
    }
    if claimed.end.1 >= MAX_COLUMNS {
        return Err(too_wide());
    }
    let cell_text = |c: &DataRef<'_>| match c {
        // Excel counts days from 1899-12-30.
        DataRef::DateTime(d) => NaiveDate::from_ymd_opt(1899, 12, 30)
            .and_then(|epoch| epoch.checked_add_days(chrono::Days::new(d.as_f64().trunc() as u64)))
            .map(|d| d.to_string())
            .unwrap_or_default(),
        DataRef::Float(f) if f.fract() == 0.0 => format!("{f:.0}"),
        // A number cell is not ambiguous: three decimals get a 0 after them, so that
        // `parse_quantity` does not take them for thousands.
        DataRef::Float(f) => {
            let text = f.to_string();
            match text.split_once('.') {
                Some((_, decimals)) if decimals.len() == 3 => format!("{text}0"),
                _ => text,
            }
        }
        DataRef::Int(i) => i.to_string(),
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => {
            s.trim().to_owned()
        }
        DataRef::SharedString(s) => s.trim().to_owned(),
        DataRef::Bool(b) => b.to_string(),
        DataRef::Error(e) => e.to_string(),
        DataRef::Empty => String::new(),
    };
    let text = |c: &DataRef<'_>| -> Result<String> {
        let long = match c {
            DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => {
                s.len() > MAX_CELL_BYTES
            }
            DataRef::SharedString(s) => s.len() > MAX_CELL_BYTES,
            _ => false,
        };
        if long {
            return Err(too_large(
                format!("has a cell longer than {MAX_CELL_BYTES} bytes"),
                format!("có ô dài hơn {MAX_CELL_BYTES} byte"),
            ));
        }
        Ok(cell_text(c))
    };
    let mut grid: Vec<Vec<String>> = Vec::new();
    while let Some(cell) = cells.next_cell().map_err(|e| bad(e.to_string()))? {
        let (r, c) = cell.get_position();
        if r > max_row {
            return Err(too_many_rows());
        }
        if c >= MAX_COLUMNS {
            return Err(too_wide());
        }
        let (r, c) = (r as usize, c as usize);
        if grid.len() <= r {
            grid.resize_with(r + 1, Vec::new);
        }
        let row = &mut grid[r];
        if row.len() <= c {
            row.resize(c + 1, String::new());
        }
        row[c] = text(cell.get_value())?;
    }
    let mut rows = grid.into_iter();
    let headers: Vec<String> = rows
        .next()
        .map(|r| r.iter().map(|c| c.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    // Sheet rows count from 1, the header's.
    let records = rows.enumerate().map(|(i, r)| (i + 2, r)).collect();
    to_rows(&headers, records)
}

enum Unpacked {
    Bad(String),
    TooLarge,
}

/// Checks the workbook's parts against the bounds: as its zip directory declares them, then
/// as they unpack.
fn check_unpacked_size(bytes: &[u8]) -> std::result::Result<(), Unpacked> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| Unpacked::Bad(e.to_string()))?;
    if zip.len() > MAX_PARTS {
        return Err(Unpacked::TooLarge);
    }
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let part = zip
            .by_index_raw(i)
            .map_err(|e| Unpacked::Bad(e.to_string()))?;
        total = total.saturating_add(part.size());
    }
    if total > MAX_UNPACKED_BYTES {
        return Err(Unpacked::TooLarge);
    }
    // What the directory declares is the sender's word: a part may unpack to more. Each is
    // unpacked here into nothing, and no further than the bound, before the reader keeps any.
    let mut unpacked: u64 = 0;
    for i in 0..zip.len() {
        let part = zip.by_index(i).map_err(|e| Unpacked::Bad(e.to_string()))?;
        let left = MAX_UNPACKED_BYTES - unpacked;
        unpacked += std::io::copy(
            &mut std::io::Read::take(part, left + 1),
            &mut std::io::sink(),
        )
        .map_err(|e| Unpacked::Bad(e.to_string()))?;
        if unpacked > MAX_UNPACKED_BYTES {
            return Err(Unpacked::TooLarge);
        }
    }
    Ok(())
}

/// The rows of `records` (each with its line in the file) that are not empty.
fn to_rows(headers: &[String], records: Vec<(usize, Vec<String>)>) -> Result<Vec<ImportRow>> {
    let mut idx = [0usize; 5];
    let mut p = Problems::default();
    for (k, col) in COLUMNS.iter().enumerate() {
        match headers.iter().position(|h| h == col) {
            Some(i) => idx[k] = i,
            None => p.check(
                true,
                "file",
                "missing_column",
                &format!("has no `{col}` column"),
                &format!("thiếu cột `{col}`"),
            ),
        }
    }
    p.finish()?;
    let get = |r: &Vec<String>, k: usize| r.get(idx[k]).cloned().unwrap_or_default();
    Ok(records
        .into_iter()
        .filter(|(_, r)| r.iter().any(|c| !c.trim().is_empty()))
        .map(|(line, r)| ImportRow {
            line,
            listing: get(&r, 0),
            lot_code: get(&r, 1),
            household: get(&r, 2),
            quantity: get(&r, 3),
            harvest_date: get(&r, 4),
        })
        .collect())
}

/// A quantity as a spreadsheet writes it: `12.5` or `12,5`. A separator followed by exactly
/// three digits after a whole number (`1.500`, `1,500`), or more than one separator, could be
/// thousands (as a Vietnamese or an English spreadsheet writes fifteen hundred) as well as
/// decimals: refused rather than read a thousand times too small or too large. Three decimals
/// are written with a 0 after them (`2.1250`).
fn parse_quantity(s: &str) -> Result<Quantity, Invalid> {
    let s = s.trim();
    let ambiguous = match s.match_indices([',', '.']).collect::<Vec<_>>().as_slice() {
        [] => false,
        [(at, _)] => {
            let (whole, decimals) = (&s[..*at], &s[at + 1..]);
            decimals.len() == 3
                && !whole
                    .trim_start_matches(['-', '+'])
                    .trim_start_matches('0')
                    .is_empty()
        }
        _ => true,
    };
    if ambiguous {
        return Err(Invalid::new(
            "ambiguous_number",
            "could be thousands or three decimals: write fifteen hundred as 1500, and three decimals with a 0 after them (2.1250)",
            "không rõ là hàng nghìn hay ba chữ số thập phân: viết một nghìn năm trăm là 1500, và thêm số 0 sau ba chữ số thập phân (2,1250)",
        ));
    }
    s.replace(',', ".").parse::<Quantity>()
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(s.trim(), "%d/%m/%Y"))
        .ok()
}

/// Imports rows into the cooperative's listings (pooled or members'), in one transaction:
/// if any row is bad, nothing is imported and every bad row is reported as `rows[N]`, N
/// being its line in the file (the header is line 1, blank lines counted). `progress` is
/// called after each row is read and checked; the rows are then taken in together
/// ([`lots::intake_many`]).
/// Rows the cooperative imported before, the same in the same order, are refused
/// (`import_repeated`) unless `again`: a retry must not take the stock in twice.
pub async fn import_rows(
    conn: &mut PgConnection,
    actor: &Actor,
    coop: CooperativeId,
    rows: &[ImportRow],
    again: bool,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<ImportReport> {
    let mut p = Problems::default();
    p.check(
        rows.is_empty(),
        "file",
        "empty",
        "has no rows",
        "không có dòng nào",
    );
    p.check(
        rows.len() > 10_000,
        "file",
        "too_many_rows",
        "has more than 10,000 rows",
        "có hơn 10.000 dòng",
    );
    p.finish()?;
    let mut p = Problems::default();
    let mut parsed = Vec::new();
    // What each listing, household and phone number named is, read once: a file names a few
    // of them on thousands of rows.
    let mut owners: HashMap<ListingId, Option<Owner>> = HashMap::new();
    let mut members: HashMap<AccountId, bool> = HashMap::new();
    let mut phones: HashMap<&str, Option<AccountId>> = HashMap::new();
    for (n, r) in rows.iter().enumerate() {
        let line = r.line;
        let f = |x: &str| format!("rows[{line}].{x}");
        let listing = r.listing.trim().parse::<ListingId>().ok();
        let owner = match listing {
            Some(l) => match owners.get(&l) {
                Some(o) => *o,
                None => {
                    let o = match owner_of(conn, l).await {
                        Ok(o) => Some(o),
                        Err(ListingError::NotFound(_)) => None,
                        Err(e) => return Err(e),
                    };
                    owners.insert(l, o);
                    o
                }
            },
            None => None,
        };
        let allowed = match owner {
            Some(Owner::Cooperative(c)) => c == coop,
            Some(Owner::Household(h)) => match members.get(&h) {
                Some(&m) => m,
                None => {
                    let m = is_member(conn, coop, h).await?;
                    members.insert(h, m);
                    m
                }
            },
            None => false,
        };
        p.check(
            !allowed,
            &f("listing"),
            "unknown_listing",
            "is not a listing of this cooperative or its members",
            "không phải tin của hợp tác xã hoặc thành viên",
        );
        let household = match r.household.trim() {
            "" => None,
            h => match h.parse::<AccountId>() {
                Ok(id) => Some(id),
                Err(_) => match (phones.get(h), PhoneNumber::parse(h)) {
                    (Some(found), _) => *found,
                    (None, Ok(phone)) => {
                        let found = sqlx::query_scalar!(
                            r#"SELECT h.account_id AS "account_id: AccountId" FROM households h JOIN accounts a ON a.id = h.account_id WHERE a.phone = $1"#,
                            phone.as_str(),
                        )
                        .fetch_optional(&mut *conn)
                        .await?;
                        phones.insert(h, found);
                        found
                    }
                    (None, Err(_)) => None,
                },
            },
        };
        p.check(
            household.is_none(),
            &f("household"),
            "unknown_household",
            "is not a household id or phone number",
            "không phải mã hoặc số điện thoại của hộ",
        );
        if let Err(e) = parse_lot_code(r.lot_code.trim()) {
            p.push(f("lot_code"), e);
        }
        let quantity = parse_quantity(&r.quantity);
        match &quantity {
            Err(e) => p.push(f("quantity"), e.clone()),
            Ok(q) => p.check(
                !q.is_positive(),
                &f("quantity"),
                "not_positive",
                "must be more than 0",
                "phải lớn hơn 0",
            ),
        }
        let date = parse_date(&r.harvest_date);
        p.check(
            date.is_none(),
            &f("harvest_date"),
            "invalid_date",
            "must be a date (YYYY-MM-DD or DD/MM/YYYY)",
            "phải là ngày (YYYY-MM-DD hoặc DD/MM/YYYY)",
        );
        if let (Some(l), Some(o), Some(h), Ok(q), Some(d)) =
            (listing, owner, household, quantity, date)
            && allowed
        {
            parsed.push((
                line,
                l,
                o,
                LotIntake {
                    lot_code: r.lot_code.trim().to_owned(),
                    harvest_date: d,
                    quantity: q,
                    household_id: Some(h),
                },
            ));
        }
        progress(n + 1);
    }
    p.finish()?;
    // Every row is readable; the intake checks (membership, lot clashes) may still reject
    // one, and then the whole transaction is rolled back by the caller. The rows' stock is
    // locked first, in listing-id order: taken in file order, an import could deadlock with
    // a checkout of two of its listings.
    let listings: Vec<ListingId> = parsed.iter().map(|(_, l, _, _)| *l).collect();
    crate::stock::levels::lock_in_order(conn, &listings).await?;
    // Read once the rows' stock is locked: the same file sent twice at once waits here for
    // the first to commit, and then finds it.
    let digest = digest_of(&parsed);
    if !again
        && let Some(at) = sqlx::query_scalar!(
            "SELECT created_at FROM stock_imports WHERE cooperative_id = $1 AND digest = $2 ORDER BY created_at DESC LIMIT 1",
            coop as _,
            &digest[..],
        )
        .fetch_optional(&mut *conn)
        .await?
    {
        return Err(ListingError::conflict(
            "import_repeated",
            format!("These rows were imported at {at}: nothing was taken in again. To take them in a second time, import the file again with again=true (nongsan import --again)."),
            format!("Các dòng này đã được nhập lúc {at}: không nhập lại. Muốn nhập thêm lần nữa, hãy nhập lại tệp với again=true (nongsan import --again)."),
        ));
    }
    lots::intake_many(conn, actor, &parsed).await?;
    sqlx::query!(
        "INSERT INTO stock_imports (id, cooperative_id, digest, rows, actor_id) VALUES ($1, $2, $3, $4, $5)",
        uuid::Uuid::now_v7(),
        coop as _,
        &digest[..],
        i32::try_from(parsed.len()).unwrap_or(i32::MAX),
        actor.account_id as _,
    )
    .execute(&mut *conn)
    .await?;
    audit(
        conn,
        actor,
        None,
        "stock.imported",
        ("cooperative", coop.to_string()),
        &serde_json::json!({ "rows": parsed.len() }),
    )
    .await?;
    Ok(ImportReport {
        imported: parsed.len(),
    })
}

/// The digest of an import's rows as read, in their order.
fn digest_of(parsed: &[(usize, ListingId, Owner, LotIntake)]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for (_, listing, _, i) in parsed {
        let household = i.household_id.map(|h| h.to_string()).unwrap_or_default();
        let row = format!(
            "{listing}\u{1f}{}\u{1f}{household}\u{1f}{}\u{1f}{}\u{1e}",
            i.lot_code, i.quantity, i.harvest_date
        );
        h.update(row.as_bytes());
    }
    h.finalize().into()
}

/// How an import is asked for.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Take the rows in even if the cooperative imported the same rows before (a second
    /// delivery of the same lots); without it, such a file is refused as `import_repeated`.
    #[serde(default)]
    pub again: bool,
}

/// Import stock from a CSV (`text/csv`) or XLSX file: columns listing, lot_code, household,
/// quantity, harvest_date. One bad row and nothing is imported; every bad row is reported.
/// The same rows imported before are 409 `import_repeated` unless `again=true`.
#[utoipa::path(post, path = "/v1/cooperatives/{id}/imports", tag = "cooperatives", params(("id" = String, Path), ImportQuery),
    request_body(content = String, content_type = "text/csv", description = "CSV, or an XLSX workbook as application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    responses((status = 200, body = ImportReport), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 409, description = "import_repeated", body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn import_stock(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<CooperativeId>,
    nongsan_shared::http::Query(q): nongsan_shared::http::Query<ImportQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<AxumJson<ImportReport>> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let kind = if ct.starts_with("text/csv") {
        FileKind::Csv
    } else if ct.starts_with("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet") {
        FileKind::Xlsx
    } else {
        return Err(ListingError::field(
            "content-type",
            Invalid::new(
                "unsupported_media_type",
                "must be text/csv or an XLSX type",
                "phải là text/csv hoặc XLSX",
            ),
        ));
    };
    // Who sends it is checked before the file is read; the file is read off the runtime.
    {
        let mut conn = app.pool.acquire().await?;
        load_cooperative(&mut conn, id).await?;
        may_manage(&mut conn, &actor, Owner::Cooperative(id)).await?;
    }
    let rows = tokio::task::spawn_blocking(move || read_file(kind, &body))
        .await
        .map_err(anyhow::Error::from)??;
    let mut tx = app.pool.begin().await?;
    load_cooperative(&mut tx, id).await?;
    may_manage(&mut tx, &actor, Owner::Cooperative(id)).await?;
    let report = import_rows(&mut tx, &actor, id, &rows, q.again, &|_| {}).await?;
    tx.commit().await?;
    // Every row named a listing (one that did not would have failed the import).
    for id in rows
        .iter()
        .filter_map(|r| r.listing.trim().parse::<ListingId>().ok())
    {
        app.views.forget(id);
    }
    Ok(AxumJson(report))
}
