//! Realistic listings for tests and benchmarks: N listings made from the 50 demo products
//! (`data/vn/catalog/demo_products.csv`), the same for the same seed on every machine.
//!
//! Each is a demo product with a title a farm would write ("Xoài cát Hòa Lộc loại 1 nhà
//! vườn"), a description in Vietnamese, a price within the product's range, its origin
//! commune and point, its certification and OCOP stars when it has them, and one of
//! `households` sellers; about 90% are in stock. [`Generated::listing_body`] is what
//! `POST /v1/listings` takes; [`Generated::search_doc`] is what the index holds.

use serde_json::{Value, json};

use crate::{FACETS, Geo, SearchDoc, SearchQuery, Sort};

const DEMO_PRODUCTS_CSV: &str = include_str!("../../../../data/vn/catalog/demo_products.csv");

/// One demo product, as the CSV gives it.
#[derive(Debug, Clone)]
struct Product {
    name: String,
    category: String,
    unit: String,
    price_min: i64,
    price_max: i64,
    province_code: String,
    province_name: String,
    commune_code: String,
    commune_name: String,
    point: Option<Geo>,
    certification: Option<String>,
    ocop_stars: Option<i16>,
    season: String,
}

fn products() -> Vec<Product> {
    let mut r = csv::ReaderBuilder::new().from_reader(DEMO_PRODUCTS_CSV.as_bytes());
    r.records()
        .filter_map(Result::ok)
        .filter_map(|rec| {
            let get = |i: usize| rec.get(i).unwrap_or("").trim().to_owned();
            let point = match (get(11).parse(), get(12).parse()) {
                (Ok(lat), Ok(lng)) => Some(Geo { lat, lng }),
                _ => None,
            };
            Some(Product {
                name: get(1),
                category: get(3),
                unit: get(4),
                price_min: get(5).parse().ok()?,
                price_max: get(6).parse().ok()?,
                province_code: get(7),
                province_name: get(8),
                commune_code: get(9),
                commune_name: get(10),
                point,
                certification: Some(get(13)).filter(|c| !c.is_empty()),
                ocop_stars: get(14).parse().ok(),
                season: get(15),
            })
        })
        .collect()
}

/// Words farms add to a title.
const QUALITIES: [&str; 12] = [
    "loại 1",
    "tươi",
    "sạch",
    "nhà vườn",
    "mới thu hoạch",
    "đặc sản",
    "chín cây",
    "hữu cơ",
    "giá tại vườn",
    "chọn lọc",
    "size lớn",
    "",
];

/// Sentences of a description.
const SENTENCES: [&str; 8] = [
    "Hàng được hái buổi sáng và giao trong ngày.",
    "Gia đình chúng tôi canh tác theo hướng an toàn, không dùng thuốc cấm.",
    "Đóng gói cẩn thận, đổi trả nếu hàng hư hỏng khi nhận.",
    "Có hỗ trợ mua sỉ cho nhà hàng và cửa hàng.",
    "Sản phẩm của hợp tác xã địa phương, truy xuất được nguồn gốc.",
    "Vườn nằm ở vùng đất đỏ, khí hậu mát quanh năm.",
    "Bảo quản nơi thoáng mát hoặc trong ngăn mát tủ lạnh.",
    "Mỗi lô đều ghi ngày thu hoạch trên nhãn.",
];

/// SplitMix64: small, fast, and the same on every machine and every version.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[usize::try_from(self.below(items.len() as u64)).unwrap_or(0)]
    }
}

/// A generated listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Its number in the sequence (0-based).
    pub n: usize,
    /// Which of the sellers sells it (0-based, below `households`).
    pub household: usize,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Category code.
    pub category: String,
    /// Unit code.
    pub unit: String,
    /// Price per unit, đồng (a multiple of 500).
    pub price_vnd: i64,
    /// Origin province code and name.
    pub province: (String, String),
    /// Origin commune code and name.
    pub commune: (String, String),
    /// Where it grows.
    pub point: Option<Geo>,
    /// Certification kind, if any.
    pub certification: Option<String>,
    /// OCOP stars, if any.
    pub ocop_stars: Option<i16>,
    /// Stock, in whole units (0 for the ~10% out of stock).
    pub stock: u32,
    /// Seconds after the first listing it was created.
    pub age_secs: i64,
}

/// `n` listings from `seed`, sold by `households` sellers.
pub fn listings(seed: u64, n: usize, households: usize) -> Vec<Generated> {
    let products = products();
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let p = rng.pick(&products).clone();
            let quality = *rng.pick(&QUALITIES);
            let title = [p.name.as_str(), quality]
                .iter()
                .filter(|w| !w.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            let mut description = format!(
                "{} trồng tại {}, {}. Mùa vụ: {}.",
                p.name, p.commune_name, p.province_name, p.season
            );
            for _ in 0..2 {
                description.push(' ');
                let sentence: &&str = rng.pick(&SENTENCES);
                description.push_str(sentence);
            }
            let span = (p.price_max - p.price_min).max(0) / 500;
            let price = p.price_min
                + 500 * i64::try_from(rng.below(u64::try_from(span).unwrap_or(0) + 1)).unwrap_or(0);
            let in_stock = rng.below(10) != 0;
            Generated {
                n: i,
                household: usize::try_from(rng.below(households.max(1) as u64)).unwrap_or(0),
                title,
                description,
                category: p.category,
                unit: p.unit,
                price_vnd: price,
                province: (p.province_code, p.province_name),
                commune: (p.commune_code, p.commune_name),
                point: p.point,
                certification: p.certification,
                ocop_stars: p.ocop_stars,
                stock: if in_stock {
                    u32::try_from(1 + rng.below(500)).unwrap_or(1)
                } else {
                    0
                },
                age_secs: i64::try_from(i).unwrap_or(0),
            }
        })
        .collect()
}

impl Generated {
    /// The body of `POST /v1/listings` for it.
    pub fn listing_body(&self) -> Value {
        let mut body = json!({
            "title": self.title,
            "description": self.description,
            "category": self.category,
            "unit": self.unit,
            "price_vnd": self.price_vnd,
            "min_order": "1",
            "step": "1",
            "origin_commune": self.commune.0,
            "status": "active",
        });
        if let Some(c) = &self.certification {
            body["certifications"] = json!([{ "kind": c, "number": format!("GEN-{}", self.n),
                "issuer": "Trung tâm chứng nhận", "valid_from": "2025-01-01", "valid_until": "2030-01-01" }]);
        }
        if let Some(s) = self.ocop_stars {
            body["ocop_stars"] = json!(s);
        }
        body
    }

    /// What the index holds of it, with `id` and `seller_name`.
    pub fn search_doc(&self, id: &str, seller_name: &str) -> SearchDoc {
        SearchDoc {
            id: id.to_owned(),
            title: self.title.clone(),
            description: self.description.clone(),
            seller_name: seller_name.to_owned(),
            category: self.category.clone(),
            category_parent: None,
            category_name: String::new(),
            unit: self.unit.clone(),
            price_vnd: self.price_vnd,
            province_code: self.province.0.clone(),
            province_name: self.province.1.clone(),
            commune_code: self.commune.0.clone(),
            commune_name: self.commune.1.clone(),
            certifications: self.certification.iter().cloned().collect(),
            ocop_stars: self.ocop_stars,
            available: self.stock.to_string(),
            in_stock: self.stock > 0,
            visible: true,
            created_at: 1_800_000_000 + self.age_secs,
            geo: self.point,
        }
    }
}

/// The search mix of the benchmark and the engine's measuring example: accented,
/// diacritic-free, typo, prefix and multi-word queries, a third with filters and facets.
pub fn query_mix() -> Vec<SearchQuery> {
    let words = |q: &str| SearchQuery {
        q: q.to_owned(),
        ..SearchQuery::default()
    };
    let facets = |names: &[&str]| names.iter().map(|f| (*f).to_owned()).collect();
    vec![
        words("xoài"),
        words("xoai"),
        words("xaoi"),
        words("cà phê"),
        words("ca phe rang"),
        words("buo"),
        words("rau muống"),
        words("gao st25"),
        SearchQuery {
            facets: facets(&["category", "province_code"]),
            ..words("mat ong")
        },
        SearchQuery {
            province: Some("68".to_owned()),
            facets: facets(&["certifications"]),
            ..words("xoai")
        },
        SearchQuery {
            category: Some("trai-cay".to_owned()),
            sort: Sort::PriceAsc,
            price_max: Some(200_000),
            facets: facets(&FACETS),
            ..words("ca")
        },
        SearchQuery {
            min_ocop: Some(3),
            facets: facets(&["ocop_stars"]),
            ..words("thanh long")
        },
    ]
}

/// The path and query of the `GET /v1/search` that asks for `q` (of what [`query_mix`]
/// sets).
pub fn search_path(q: &SearchQuery) -> String {
    let pairs: Vec<String> = search_params(q)
        .into_iter()
        .map(|(k, v)| format!("{k}={}", percent_encoded(&v)))
        .collect();
    format!("/v1/search?{}", pairs.join("&"))
}

/// `text` with every byte but letters, digits and `-._~` written `%XX`.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn search_params(q: &SearchQuery) -> Vec<(&'static str, String)> {
    let mut out = vec![("q", q.q.clone())];
    for (name, value) in [
        ("category", &q.category),
        ("province", &q.province),
        ("commune", &q.commune),
        ("certification", &q.certification),
    ] {
        if let Some(v) = value {
            out.push((name, v.clone()));
        }
    }
    if let Some(v) = q.min_ocop {
        out.push(("min_ocop", v.to_string()));
    }
    if let Some(v) = q.price_min {
        out.push(("price_min", v.to_string()));
    }
    if let Some(v) = q.price_max {
        out.push(("price_max", v.to_string()));
    }
    let sort = match q.sort {
        Sort::Relevance => None,
        Sort::PriceAsc => Some("price_asc"),
        Sort::PriceDesc => Some("price_desc"),
        Sort::Newest => Some("newest"),
        Sort::Distance => Some("distance"),
    };
    if let Some(sort) = sort {
        out.push(("sort", sort.to_owned()));
    }
    if !q.facets.is_empty() {
        out.push(("facets", q.facets.join(",")));
    }
    if !q.in_stock_only {
        out.push(("in_stock", "false".to_owned()));
    }
    out.push(("limit", q.per_page.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_listings_and_another_seed_others() {
        let a = listings(7, 200, 10);
        assert_eq!(a, listings(7, 200, 10));
        assert_ne!(a, listings(8, 200, 10));
        assert_eq!(a.len(), 200);
    }

    #[test]
    fn listings_are_realistic() {
        let all = listings(1, 2_000, 20);
        let products = products();
        assert_eq!(products.len(), 50, "every demo product is read");
        assert!(all.iter().all(|g| g.household < 20));
        assert!(
            all.iter()
                .all(|g| g.price_vnd > 0 && g.price_vnd % 500 == 0)
        );
        let in_stock = all.iter().filter(|g| g.stock > 0).count();
        assert!(
            (1_700..=1_900).contains(&in_stock),
            "about 90% in stock: {in_stock}"
        );
        let kinds: std::collections::BTreeSet<_> = all.iter().map(|g| &g.category).collect();
        assert!(kinds.len() > 5, "many categories: {kinds:?}");
        let with_quality = all.iter().filter(|g| g.title.contains("loại 1")).count();
        assert!(with_quality > 50, "titles vary: {with_quality}");
    }
}
