//! Reference data embedded in the binary: Vietnam's 2025 administrative units (34 provinces,
//! 3,321 communes) with the pre-2025 → 2025 commune conversion, and the produce catalog
//! (categories, selling units, certifications). Sources and licences are in `data/README.md`.

use std::{collections::HashMap, sync::LazyLock};

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::invalid::Invalid;

/// Version of the administrative units the codes belong to, stored next to each code.
pub const ADMIN_VERSION: &str = "2025";

const PROVINCES_CSV: &str = include_str!("../../data/vn/admin/2025/provinces.csv");
const WARDS_CSV: &str = include_str!("../../data/vn/admin/2025/wards.csv");
const CONVERSION_CSV: &str =
    include_str!("../../data/vn/admin/conversion/ward_old_to_new_2025.csv");
const CATEGORIES_CSV: &str = include_str!("../../data/vn/catalog/categories.csv");
const UNITS_CSV: &str = include_str!("../../data/vn/catalog/units.csv");
const CERTIFICATIONS_CSV: &str = include_str!("../../data/vn/catalog/certifications.csv");
/// The 50 demo products `nongsan seed --demo` lists.
pub const DEMO_PRODUCTS_CSV: &str = include_str!("../../data/vn/catalog/demo_products.csv");
pub use nongsan_search::fold;

/// A province or centrally-run city.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Province {
    /// Two-digit code.
    pub code: String,
    /// Short name, e.g. "Lâm Đồng".
    pub name: String,
    /// Full name, e.g. "Tỉnh Lâm Đồng".
    pub full_name: String,
    /// "Tỉnh" or "Thành phố trực thuộc trung ương".
    pub unit_type: String,
    /// English name.
    pub name_en: String,
    /// Latitude of its centre.
    pub lat: f64,
    /// Longitude of its centre.
    pub lon: f64,
}

/// A commune-level unit: xã, phường or đặc khu.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Commune {
    /// Five-digit code.
    pub code: String,
    /// Short name, e.g. "Đơn Dương".
    pub name: String,
    /// Full name, e.g. "Xã Đơn Dương".
    pub full_name: String,
    /// "Xã", "Phường" or "Đặc khu".
    pub unit_type: String,
    /// Code of its province.
    pub province_code: String,
    /// Latitude, where known.
    pub lat: Option<f64>,
    /// Longitude, where known.
    pub lon: Option<f64>,
}

/// A new commune a pre-2025 commune went into.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Conversion {
    /// The new commune.
    pub commune: Commune,
    /// True when the whole old commune went into it ("Nhập toàn bộ"); false when only part
    /// did, so the old code alone does not decide which new commune an address is in.
    pub whole: bool,
}

/// A produce category.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Category {
    /// Code, e.g. `rau-la`.
    pub code: String,
    /// Parent category code, if any.
    pub parent: Option<String>,
    /// Vietnamese name.
    pub name_vi: String,
    /// English name.
    pub name_en: String,
}

/// A selling unit.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Unit {
    /// Code, e.g. `kg`, `bo`.
    pub code: String,
    /// Vietnamese name.
    pub name_vi: String,
    /// English name.
    pub name_en: String,
    /// mass, count, package or volume.
    pub kind: String,
}

/// A certification kind.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertificationKind {
    /// Code, e.g. `vietgap`.
    pub code: String,
    /// Name.
    pub name: String,
}

/// All reference data, parsed once.
#[derive(Debug)]
pub struct Reference {
    /// Provinces in code order.
    pub provinces: Vec<Province>,
    /// Communes in code order.
    pub communes: Vec<Commune>,
    by_commune: HashMap<String, usize>,
    folded_communes: Vec<String>,
    conversions: HashMap<String, Vec<(String, bool, String)>>,
    /// Categories.
    pub categories: Vec<Category>,
    /// Units.
    pub units: Vec<Unit>,
    /// Certification kinds.
    pub certifications: Vec<CertificationKind>,
}

fn rows(csv_text: &str) -> Vec<HashMap<String, String>> {
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = r.headers().expect("embedded CSV has headers").clone();
    r.records()
        .map(|rec| {
            let rec = rec.expect("embedded CSV is well-formed");
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn num(s: &str) -> Option<f64> {
    s.trim().parse().ok()
}

/// The reference data.
pub fn reference() -> &'static Reference {
    static REF: LazyLock<Reference> = LazyLock::new(Reference::load);
    &REF
}

impl Reference {
    fn load() -> Self {
        let provinces: Vec<Province> = rows(PROVINCES_CSV)
            .into_iter()
            .map(|r| Province {
                code: r["code"].clone(),
                name: r["name"].clone(),
                full_name: r["full_name"].clone(),
                unit_type: r["unit_type"].clone(),
                name_en: r["name_en"].clone(),
                lat: num(&r["lat"]).unwrap_or_default(),
                lon: num(&r["lon"]).unwrap_or_default(),
            })
            .collect();
        let communes: Vec<Commune> = rows(WARDS_CSV)
            .into_iter()
            .map(|r| Commune {
                code: r["code"].clone(),
                name: r["name"].clone(),
                full_name: r["full_name"].clone(),
                unit_type: r["unit_type"].clone(),
                province_code: r["province_code"].clone(),
                lat: num(&r["lat"]),
                lon: num(&r["lon"]),
            })
            .collect();
        let by_commune = communes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.code.clone(), i))
            .collect();
        let folded_communes = communes.iter().map(|c| fold(&c.full_name)).collect();
        let mut conversions: HashMap<String, Vec<(String, bool, String)>> = HashMap::new();
        for r in rows(CONVERSION_CSV) {
            conversions
                .entry(r["old_ward_code"].clone())
                .or_default()
                .push((
                    r["new_ward_code"].clone(),
                    r["note"] != "Nhập một phần",
                    r["old_ward_name"].clone(),
                ));
        }
        let categories = rows(CATEGORIES_CSV)
            .into_iter()
            .map(|r| Category {
                code: r["code"].clone(),
                parent: Some(r["parent"].clone()).filter(|p| !p.is_empty()),
                name_vi: r["name_vi"].clone(),
                name_en: r["name_en"].clone(),
            })
            .collect();
        let units = rows(UNITS_CSV)
            .into_iter()
            .map(|r| Unit {
                code: r["code"].clone(),
                name_vi: r["name_vi"].clone(),
                name_en: r["name_en"].clone(),
                kind: r["kind"].clone(),
            })
            .collect();
        let certifications = rows(CERTIFICATIONS_CSV)
            .into_iter()
            .map(|r| CertificationKind {
                code: r["code"].clone(),
                name: r["name"].clone(),
            })
            .collect();
        Self {
            provinces,
            communes,
            by_commune,
            folded_communes,
            conversions,
            categories,
            units,
            certifications,
        }
    }

    /// A province by code.
    pub fn province(&self, code: &str) -> Option<&Province> {
        self.provinces.iter().find(|p| p.code == code)
    }

    /// A commune by code.
    pub fn commune(&self, code: &str) -> Option<&Commune> {
        self.by_commune.get(code).map(|&i| &self.communes[i])
    }

    /// The communes of a province.
    pub fn communes_of(&self, province: &str) -> impl Iterator<Item = &Commune> {
        self.communes
            .iter()
            .filter(move |c| c.province_code == province)
    }

    /// Communes whose name contains every word of `query`, with or without diacritics; a
    /// query typed with diacritics must match them exactly ("Hòa" does not find "Hóa").
    pub fn search_communes(
        &self,
        query: &str,
        province: Option<&str>,
        limit: usize,
    ) -> Vec<&Commune> {
        let exact: String = query.nfc().collect::<String>().to_lowercase();
        let folded = fold(query);
        let has_marks = exact != folded;
        let words: Vec<&str> = folded.split_whitespace().collect();
        let exact_words: Vec<&str> = exact.split_whitespace().collect();
        if words.is_empty() {
            return Vec::new();
        }
        let mut hits: Vec<(u8, &Commune)> = self
            .communes
            .iter()
            .zip(&self.folded_communes)
            .filter(|(c, _)| province.is_none_or(|p| c.province_code == p))
            .filter(|(_, f)| words.iter().all(|w| f.contains(w)))
            .filter(|(c, _)| {
                !has_marks || {
                    let name = c.full_name.nfc().collect::<String>().to_lowercase();
                    exact_words.iter().all(|w| name.contains(w))
                }
            })
            .map(|(c, _)| {
                let name_folded = fold(&c.name);
                let rank = if name_folded == folded {
                    0
                } else if name_folded.starts_with(&folded) {
                    1
                } else {
                    2
                };
                (rank, c)
            })
            .collect();
        hits.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.code.cmp(&b.1.code)));
        hits.into_iter().take(limit).map(|(_, c)| c).collect()
    }

    /// The 2025 communes a pre-2025 commune code went into, and the old name.
    pub fn convert_legacy(&self, old_code: &str) -> Option<(String, Vec<Conversion>)> {
        let rows = self.conversions.get(old_code)?;
        let old_name = rows.first().map(|r| r.2.clone()).unwrap_or_default();
        let list = rows
            .iter()
            .filter_map(|(code, whole, _)| {
                Some(Conversion {
                    commune: self.commune(code)?.clone(),
                    whole: *whole,
                })
            })
            .collect();
        Some((old_name, list))
    }

    /// Whether a category code exists.
    pub fn has_category(&self, code: &str) -> bool {
        self.categories.iter().any(|c| c.code == code)
    }

    /// A known category code, or why not.
    pub fn check_category(&self, code: &str) -> Result<(), Invalid> {
        known(
            self.has_category(code),
            "unknown_category",
            "is not a category code",
            "không phải mã danh mục",
        )
    }

    /// A known unit code, or why not.
    pub fn check_unit(&self, code: &str) -> Result<(), Invalid> {
        let ok = self.units.iter().any(|u| u.code == code);
        known(
            ok,
            "unknown_unit",
            "is not a unit code",
            "không phải mã đơn vị tính",
        )
    }

    /// A known certification kind, or why not.
    pub fn check_certification(&self, code: &str) -> Result<(), Invalid> {
        let ok = self.certifications.iter().any(|c| c.code == code);
        known(
            ok,
            "unknown_certification",
            "is not a certification code",
            "không phải mã chứng nhận",
        )
    }

    /// A 2025 province code, or why not.
    pub fn check_province(&self, code: &str) -> Result<&Province, Invalid> {
        self.province(code).ok_or_else(|| {
            Invalid::new(
                "unknown_province",
                "is not a 2025 province code",
                "không phải mã tỉnh/thành (2025)",
            )
        })
    }

    /// A 2025 commune code, or why not.
    pub fn check_commune(&self, code: &str) -> Result<&Commune, Invalid> {
        self.commune(code).ok_or_else(|| {
            Invalid::new(
                "unknown_commune",
                "is not a 2025 commune code",
                "không phải mã xã/phường (2025)",
            )
        })
    }

    /// The problems of an address's province and commune codes, as `(field, reason)` with
    /// the fields `province_code` and `commune_code`: each must exist, and the commune must
    /// be in the province.
    pub fn check_address(&self, province: &str, commune: &str) -> Vec<(&'static str, Invalid)> {
        let mut out = Vec::new();
        if let Err(e) = self.check_province(province) {
            out.push(("province_code", e));
        }
        match self.check_commune(commune) {
            Err(e) => out.push(("commune_code", e)),
            Ok(c) if c.province_code != province => out.push((
                "commune_code",
                Invalid::new(
                    "commune_not_in_province",
                    "is not in the given province",
                    "không thuộc tỉnh/thành đã chọn",
                ),
            )),
            Ok(_) => {}
        }
        out
    }
}

fn known(ok: bool, code: &'static str, en: &str, vi: &str) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(code, en, vi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_2025_units_are_all_there() {
        let r = reference();
        assert_eq!(r.provinces.len(), 34);
        assert_eq!(r.communes.len(), 3321);
        assert_eq!(r.province("01").unwrap().name, "Hà Nội");
        assert!(
            r.communes
                .iter()
                .all(|c| r.province(&c.province_code).is_some())
        );
    }

    #[test]
    fn folding_removes_marks_and_maps_d() {
        assert_eq!(fold("Rau muống Đà Lạt"), "rau muong da lat");
        assert_eq!(fold("ÐẮK LẮK"), "dak lak");
        assert_eq!(fold("Xoài cát Hòa Lộc"), "xoai cat hoa loc");
        // NFD input folds the same as NFC.
        assert_eq!(fold("Xoa\u{300}i"), "xoai");
    }

    #[test]
    fn communes_are_found_with_or_without_diacritics() {
        let r = reference();
        let with = r.search_communes("Đơn Dương", None, 5);
        let without = r.search_communes("don duong", None, 5);
        assert_eq!(with[0].code, "24931");
        assert_eq!(without[0].code, "24931");
        assert!(
            r.search_communes("ba dinh", Some("01"), 5)
                .iter()
                .any(|c| c.code == "00004")
        );
        assert!(
            r.search_communes("ba dinh", Some("79"), 5)
                .iter()
                .all(|c| c.province_code == "79")
        );
    }

    #[test]
    fn an_old_commune_converts_to_its_new_candidates() {
        let r = reference();
        let (old_name, list) = r.convert_legacy("00016").unwrap();
        assert_eq!(old_name, "Phường Ngọc Hà");
        assert!(list.iter().any(|c| c.commune.code == "00004" && !c.whole));
        assert!(
            list.len() >= 2,
            "a partly merged commune has several candidates"
        );
    }
}
