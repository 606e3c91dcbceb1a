//! A listing as a seller sends it, and its checks: a [`ListingInput`] becomes a
//! [`CheckedListing`] only through [`TryFrom`], so what is written is always what was checked.

use std::ops::Deref;

use chrono::{Datelike as _, NaiveDate};
use nongsan_shared::{CooperativeId, Quantity, Vnd};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    catalog::reference::reference,
    error::Problems,
    sellers::profile::{Point, check_point},
};

/// A certification on a listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Certification {
    /// Kind: a code from `/v1/certifications` (vietgap, globalgap, organic_vn, gi...).
    pub kind: String,
    /// Certificate or registration number: one line, 1 to 100 characters.
    pub number: String,
    /// Who issued it: one line, 1 to 100 characters.
    pub issuer: String,
    /// First day it is valid, from 1900.
    pub valid_from: NaiveDate,
    /// Last day it is valid; not before `valid_from`, up to 2999.
    pub valid_until: NaiveDate,
}

/// What a seller writes to list a product.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListingInput {
    /// Vietnamese title, e.g. "Xoài cát Hòa Lộc".
    pub title: String,
    /// Vietnamese description.
    #[serde(default)]
    pub description: String,
    /// Category code from `/v1/categories`.
    pub category: String,
    /// Unit code from `/v1/units`.
    pub unit: String,
    /// Price per unit in đồng, above 0.
    pub price_vnd: Vnd,
    /// Smallest quantity a buyer may order (default 1).
    pub min_order: Option<Quantity>,
    /// Orders go up in steps of this (default 0.5).
    pub step: Option<Quantity>,
    /// Photo URLs (https), at most 10.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub photos: Vec<String>,
    /// Commune code (2025) where it grows.
    pub origin_commune: String,
    /// Where exactly, if known.
    pub origin_point: Option<Point>,
    /// Certifications, at most 20.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub certifications: Vec<Certification>,
    /// OCOP stars, 3 to 5.
    pub ocop_stars: Option<i16>,
    /// Below this available quantity the seller is warned.
    pub low_stock_threshold: Option<Quantity>,
    /// `draft` (default) or `active`.
    pub status: Option<String>,
    /// List it under this cooperative (its manager only) instead of a household.
    pub cooperative_id: Option<CooperativeId>,
    /// The product's GTIN (8, 12, 13 or 14 digits with a valid GS1 check digit), when it
    /// has one: its lots' QR codes are then GS1 Digital Links.
    #[serde(default)]
    pub gtin: Option<String>,
}

/// Changes to a listing; absent fields stay as they are, and the optional ones sent as
/// `null` are taken off.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListingPatch {
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// New unit.
    pub unit: Option<String>,
    /// New price.
    pub price_vnd: Option<Vnd>,
    /// New minimum order.
    pub min_order: Option<Quantity>,
    /// New step.
    pub step: Option<Quantity>,
    /// New photos, at most 10.
    #[schema(max_items = 10)]
    pub photos: Option<Vec<String>>,
    /// New origin commune.
    pub origin_commune: Option<String>,
    /// New origin point; `null` takes it off.
    #[serde(default, deserialize_with = "nongsan_shared::patch::clearable")]
    #[schema(value_type = Option<Point>)]
    pub origin_point: Option<Option<Point>>,
    /// New certifications (replace the old ones), at most 20.
    #[schema(max_items = 20)]
    pub certifications: Option<Vec<Certification>>,
    /// New OCOP stars; `null` takes them off (a rating that lapsed).
    #[serde(default, deserialize_with = "nongsan_shared::patch::clearable")]
    #[schema(value_type = Option<i16>)]
    pub ocop_stars: Option<Option<i16>>,
    /// New low-stock threshold; `null` takes it off.
    #[serde(default, deserialize_with = "nongsan_shared::patch::clearable")]
    #[schema(value_type = Option<Quantity>)]
    pub low_stock_threshold: Option<Option<Quantity>>,
    /// New GTIN.
    pub gtin: Option<String>,
}

const PHOTO_LIMIT: usize = 10;

/// The most certifications a listing may show.
const CERTIFICATION_LIMIT: usize = 20;

/// The longest certificate number or issuer, in characters: shown on every page of the
/// listing and every label of its lots.
const CERTIFICATION_TEXT_LIMIT: usize = 100;

/// The years a certificate's dates may fall in (PostgreSQL keeps no date before 4713 BC).
const CERTIFICATION_YEARS: std::ops::RangeInclusive<i32> = 1900..=2999;

/// A [`ListingInput`] that passed every check, with what the checks found (the origin
/// commune's province) and the defaults filled in. Only [`TryFrom`] makes one; it reads as
/// the input it came from.
#[derive(Debug, Clone)]
pub struct CheckedListing {
    input: ListingInput,
    origin_province: String,
}

impl CheckedListing {
    /// The province (2025) of the origin commune.
    pub fn origin_province(&self) -> &str {
        &self.origin_province
    }

    /// The smallest quantity a buyer may order (default 1).
    pub fn min_order(&self) -> Quantity {
        self.input.min_order.unwrap_or(DEFAULT_MIN_ORDER)
    }

    /// The order step (default 0.5).
    pub fn step(&self) -> Quantity {
        self.input.step.unwrap_or(DEFAULT_STEP)
    }

    /// `draft` (default) or `active`.
    pub fn status(&self) -> &str {
        self.input.status.as_deref().unwrap_or("draft")
    }

    /// The GTIN as 14 digits.
    pub fn gtin14(&self) -> Option<String> {
        self.input
            .gtin
            .as_deref()
            .and_then(|g| nongsan_shared::gs1::gtin14(g).ok())
    }
}

impl Deref for CheckedListing {
    type Target = ListingInput;

    fn deref(&self) -> &ListingInput {
        &self.input
    }
}

impl TryFrom<ListingInput> for CheckedListing {
    type Error = Problems;

    /// Checks every field; the error names each bad one.
    fn try_from(l: ListingInput) -> Result<Self, Problems> {
        let mut p = Problems::default();
        let origin = check_listing(&mut p, &l);
        let origin_province = p.finish_with(origin)?;
        Ok(Self {
            input: l,
            origin_province,
        })
    }
}

/// Records what is wrong with `l`; the origin commune's province when the commune exists.
fn check_listing(p: &mut Problems, l: &ListingInput) -> Option<String> {
    let r = reference();
    let title = l.title.trim().chars().count();
    p.check(
        title == 0,
        "title",
        "required",
        "must not be empty",
        "không được để trống",
    );
    p.check(
        title > 200,
        "title",
        "too_long",
        "must be at most 200 characters",
        "tối đa 200 ký tự",
    );
    // Printed on lot labels and copied into orders.
    p.check_one_line("title", &l.title);
    p.check(
        l.description.chars().count() > 5000,
        "description",
        "too_long",
        "must be at most 5000 characters",
        "tối đa 5000 ký tự",
    );
    p.verify("category", r.check_category(&l.category));
    p.verify("unit", r.check_unit(&l.unit));
    p.check(
        l.price_vnd.get() <= 0,
        "price_vnd",
        "not_positive",
        "must be more than 0 đồng",
        "phải lớn hơn 0 đồng",
    );
    for (field, q) in [
        ("min_order", l.min_order),
        ("step", l.step),
        ("low_stock_threshold", l.low_stock_threshold),
    ] {
        if let Some(q) = q {
            let bad = if field == "low_stock_threshold" {
                q.as_decimal().is_sign_negative()
            } else {
                !q.is_positive()
            };
            p.check(
                bad,
                field,
                "not_positive",
                "must be more than 0",
                "phải lớn hơn 0",
            );
        }
    }
    p.check(
        l.photos.len() > PHOTO_LIMIT,
        "photos",
        "too_many",
        "must have at most 10 photos",
        "tối đa 10 ảnh",
    );
    for (i, url) in l.photos.iter().enumerate().take(PHOTO_LIMIT) {
        let ok = (url.starts_with("https://") || url.starts_with("http://"))
            && url.len() <= 2000
            && !url.contains(char::is_whitespace);
        p.check(
            !ok,
            &format!("photos[{i}]"),
            "invalid_url",
            "must be an http(s) URL",
            "phải là địa chỉ http(s)",
        );
    }
    let origin = p
        .verify("origin_commune", r.check_commune(&l.origin_commune))
        .map(|c| c.province_code.clone());
    check_point(p, "origin_point", l.origin_point);
    p.check(
        l.certifications.len() > CERTIFICATION_LIMIT,
        "certifications",
        "too_many",
        "must have at most 20 certifications",
        "tối đa 20 chứng nhận",
    );
    for (i, c) in l
        .certifications
        .iter()
        .enumerate()
        .take(CERTIFICATION_LIMIT)
    {
        let f = |x: &str| format!("certifications[{i}].{x}");
        p.verify(f("kind"), r.check_certification(&c.kind));
        for (name, text) in [("number", &c.number), ("issuer", &c.issuer)] {
            let n = text.trim().chars().count();
            p.check(
                n == 0,
                &f(name),
                "required",
                "must not be empty",
                "không được để trống",
            );
            p.check(
                n > CERTIFICATION_TEXT_LIMIT,
                &f(name),
                "too_long",
                "must be at most 100 characters",
                "tối đa 100 ký tự",
            );
            p.check_one_line(&f(name), text);
        }
        for (name, date) in [("valid_from", c.valid_from), ("valid_until", c.valid_until)] {
            p.check(
                !CERTIFICATION_YEARS.contains(&date.year()),
                &f(name),
                "out_of_range",
                "must be a date from 1900 to 2999",
                "phải là ngày từ năm 1900 đến năm 2999",
            );
        }
        p.check(
            c.valid_until < c.valid_from,
            &f("valid_until"),
            "ends_before_start",
            "must not be before valid_from",
            "không được trước ngày bắt đầu hiệu lực",
        );
    }
    if let Some(gtin) = &l.gtin {
        use nongsan_shared::gs1::{GtinError, gtin14};
        match gtin14(gtin) {
            Ok(_) => {}
            Err(GtinError::Shape) => p.check(
                true,
                "gtin",
                "invalid_gtin",
                "must be 8, 12, 13 or 14 digits",
                "phải gồm 8, 12, 13 hoặc 14 chữ số",
            ),
            Err(GtinError::CheckDigit) => p.check(
                true,
                "gtin",
                "invalid_check_digit",
                "has a wrong GS1 check digit (its last digit)",
                "sai số kiểm tra GS1 (chữ số cuối)",
            ),
        }
    }
    if let Some(stars) = l.ocop_stars {
        p.check(
            !(3..=5).contains(&stars),
            "ocop_stars",
            "out_of_range",
            "must be 3, 4 or 5",
            "phải là 3, 4 hoặc 5",
        );
    }
    if let Some(s) = &l.status {
        p.check(
            !matches!(s.as_str(), "draft" | "active"),
            "status",
            "invalid_status",
            "must be draft or active",
            "phải là draft hoặc active",
        );
    }
    origin
}

/// The smallest order when the seller names none.
const DEFAULT_MIN_ORDER: Quantity = Quantity::ONE;

/// The order step when the seller names none.
const DEFAULT_STEP: Quantity = Quantity::HALF;
