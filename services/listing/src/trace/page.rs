//! The traceability pages as HTML: small, no scripts, readable on a cheap phone, Vietnamese
//! first. Every text from the database is escaped.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use nongsan_shared::error::Lang;

use super::{LotTrace, TraceCertification};
use crate::catalog::store::CertificationStatus;

// Text for HTML: the same escaping as search's highlighted titles.
use nongsan_search::escape_html as esc;

/// A page as a response, never cached long (certifications expire).
pub fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'",
            ),
        ],
        body,
    )
        .into_response()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1rem;max-width:40rem;color:#1b1b1b;line-height:1.45}\
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.05rem;margin:1.2rem 0 .3rem}dl{margin:0}dt{color:#555;font-size:.85rem}\
dd{margin:0 0 .5rem 0;font-weight:600}.badge{display:inline-block;padding:.1rem .4rem;border-radius:.3rem;font-size:.8rem}\
.ok{background:#dcf5dc}.off{background:#f5dcdc}ul{padding-left:1.1rem}.muted{color:#666;font-size:.85rem}";

fn shell(lang: Lang, title: &str, body: &str) -> String {
    let code = if lang == Lang::Vi { "vi" } else { "en" };
    format!(
        "<!doctype html><html lang=\"{code}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    )
}

fn certification(t: &TraceCertification, vi: bool) -> String {
    let c = &t.certification;
    let (class, state) = match (c.status, c.verification.as_str(), vi) {
        (_, "rejected", true) => ("off", "không được công nhận".to_owned()),
        (_, "rejected", false) => ("off", "rejected".to_owned()),
        (CertificationStatus::Expired, _, true) => (
            "off",
            format!("hết hạn từ {}", c.valid_until.format("%d/%m/%Y")),
        ),
        (CertificationStatus::Expired, _, false) => (
            "off",
            format!("expired after {}", c.valid_until.format("%Y-%m-%d")),
        ),
        (CertificationStatus::NotYetValid, _, true) => (
            "off",
            format!("hiệu lực từ {}", c.valid_from.format("%d/%m/%Y")),
        ),
        (CertificationStatus::NotYetValid, _, false) => (
            "off",
            format!("valid from {}", c.valid_from.format("%Y-%m-%d")),
        ),
        (CertificationStatus::Valid, _, true) => (
            "ok",
            format!("còn hiệu lực đến {}", c.valid_until.format("%d/%m/%Y")),
        ),
        (CertificationStatus::Valid, _, false) => (
            "ok",
            format!("valid until {}", c.valid_until.format("%Y-%m-%d")),
        ),
    };
    let verified = match (c.verification.as_str(), vi) {
        ("verified", true) => " · đã xác minh",
        ("verified", false) => " · verified",
        _ => "",
    };
    format!(
        "<li><strong>{}</strong> {} <span class=\"badge {class}\">{}{verified}</span><br><span class=\"muted\">{}: {}</span></li>",
        esc(&t.name),
        esc(&c.number),
        esc(&state),
        if vi { "Cấp bởi" } else { "Issued by" },
        esc(&c.issuer),
    )
}

/// A lot's page.
pub fn lot_page(t: &LotTrace, lang: Lang) -> String {
    let vi = lang == Lang::Vi;
    let day = |d: chrono::NaiveDate| {
        if vi {
            d.format("%d/%m/%Y").to_string()
        } else {
            d.format("%Y-%m-%d").to_string()
        }
    };
    let l = |v: &'static str, e: &'static str| if vi { v } else { e };
    let mut body = String::new();
    body.push_str(&format!(
        "<p class=\"muted\">{}</p><h1 id=\"product\">{}</h1><p>{}</p>",
        l("Truy xuất nguồn gốc", "Where it comes from"),
        esc(&t.product.name),
        esc(&t.product.category_name)
    ));
    body.push_str("<dl>");
    body.push_str(&format!(
        "<dt>{}</dt><dd id=\"lot\">{}</dd>",
        l("Mã lô", "Lot"),
        esc(&t.lot.code)
    ));
    body.push_str(&format!(
        "<dt>{}</dt><dd>{}</dd>",
        l("Ngày thu hoạch", "Harvested"),
        day(t.lot.harvest_date)
    ));
    let producer_kind = match (t.producer.kind.as_str(), vi) {
        ("cooperative", true) => "Hợp tác xã",
        ("cooperative", false) => "Cooperative",
        (_, true) => "Hộ sản xuất",
        (_, false) => "Farm household",
    };
    body.push_str(&format!(
        "<dt>{producer_kind}</dt><dd>{}</dd>",
        esc(&t.producer.name)
    ));
    if let Some(member) = &t.producer.member_household {
        body.push_str(&format!(
            "<dt>{}</dt><dd>{}</dd>",
            l("Hộ thành viên trồng lô này", "Grown by member household"),
            esc(member)
        ));
    }
    body.push_str(&format!(
        "<dt>{}</dt><dd id=\"place\">{}, <span id=\"province\">{}</span></dd>",
        l("Nơi trồng", "Grown in"),
        esc(&t.producer.commune_name),
        esc(&t.producer.province_name)
    ));
    if let Some(p) = t.producer.point {
        body.push_str(&format!(
            "<dt>{}</dt><dd><a href=\"https://www.openstreetmap.org/?mlat={lat}&amp;mlon={lon}#map=14/{lat}/{lon}\">{lat:.5}, {lon:.5}</a></dd>",
            l("Vị trí", "Map"),
            lat = p.lat,
            lon = p.lon,
        ));
    }
    if let Some(gtin) = &t.product.gtin {
        body.push_str(&format!("<dt>GTIN</dt><dd>{}</dd>", esc(gtin)));
    }
    if let Some(stars) = t.ocop_stars {
        body.push_str(&format!(
            "<dt>OCOP</dt><dd>{}</dd>",
            "★".repeat(usize::try_from(stars).unwrap_or(0))
        ));
    }
    body.push_str("</dl>");
    if !t.certifications.is_empty() {
        body.push_str(&format!(
            "<h2>{}</h2><ul>",
            l("Chứng nhận", "Certifications")
        ));
        for c in &t.certifications {
            body.push_str(&certification(c, vi));
        }
        body.push_str("</ul>");
    }
    body.push_str(&format!(
        "<h2>{}</h2><ul>",
        l("Hành trình của lô hàng", "The lot's journey")
    ));
    for e in &t.events {
        body.push_str(&format!("<li>{} — {}</li>", day(e.day), esc(&e.text)));
    }
    body.push_str("</ul>");
    body.push_str(&format!(
        "<p class=\"muted\">nongsan · {}</p>",
        esc(&t.link)
    ));
    shell(lang, &format!("{} · {}", t.product.name, t.lot.code), &body)
}

/// The page for a lot that does not exist.
pub fn not_found(lang: Lang) -> String {
    if lang == Lang::Vi {
        shell(
            lang,
            "Không tìm thấy lô hàng",
            "<h1>Không tìm thấy lô hàng</h1><p>Mã QR này không ứng với lô hàng nào trên nongsan. Hãy kiểm tra lại tem, hoặc hỏi người bán.</p>",
        )
    } else {
        shell(
            lang,
            "Lot not found",
            "<h1>Lot not found</h1><p>This QR code does not match any lot on nongsan. Check the label, or ask the seller.</p>",
        )
    }
}

/// The page for a link that is not a lot's link at all.
pub fn bad_link(lang: Lang, detail: &str) -> String {
    if lang == Lang::Vi {
        shell(
            lang,
            "Đường dẫn không hợp lệ",
            &format!("<h1>Đường dẫn không hợp lệ</h1><p>{}</p>", esc(detail)),
        )
    } else {
        shell(
            lang,
            "Not a valid link",
            &format!("<h1>Not a valid link</h1><p>{}</p>", esc(detail)),
        )
    }
}

/// A sheet of labels (product, lot, harvest date, producer, QR), to print.
pub fn labels(labels: &[(LotTrace, String)], lang: Lang) -> String {
    let vi = lang == Lang::Vi;
    let mut body = String::from(
        "<style>@page{size:A4;margin:8mm}body{max-width:none;padding:0}.sheet{display:grid;grid-template-columns:repeat(3,1fr);gap:4mm}\
         .label{border:1px dashed #999;padding:3mm;break-inside:avoid;font-size:9pt}.label svg{width:32mm;height:32mm;float:right}\
         .label strong{font-size:10.5pt}</style><div class=\"sheet\">",
    );
    if labels.is_empty() {
        body.push_str(if vi {
            "<p>Tin này chưa có lô nào còn hàng.</p>"
        } else {
            "<p>This listing has no lot with stock.</p>"
        });
    }
    for (t, svg) in labels {
        // The SVG goes inline, without its XML declaration.
        let svg = svg.find("<svg").map_or(svg.as_str(), |at| &svg[at..]);
        let day = if vi {
            t.lot.harvest_date.format("%d/%m/%Y").to_string()
        } else {
            t.lot.harvest_date.format("%Y-%m-%d").to_string()
        };
        let grower = t
            .producer
            .member_household
            .as_ref()
            .map(|m| format!("<br>{}", esc(m)))
            .unwrap_or_default();
        body.push_str(&format!(
            "<div class=\"label\">{svg}<strong>{}</strong><br>{} {}<br>{} {day}<br>{}{grower}<br>{}</div>",
            esc(&t.product.name),
            if vi { "Lô" } else { "Lot" },
            esc(&t.lot.code),
            if vi { "Thu hoạch" } else { "Harvested" },
            esc(&t.producer.name),
            esc(&t.producer.province_name),
        ));
    }
    body.push_str("</div>");
    shell(
        lang,
        if vi {
            "Tem truy xuất"
        } else {
            "Trace labels"
        },
        &body,
    )
}
