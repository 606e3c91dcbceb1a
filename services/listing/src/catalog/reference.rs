//! Reference lists, read-only: Vietnam's 2025 provinces and communes (with the conversion from
//! pre-2025 communes), categories, selling units, certifications.

/// The reference data itself lives in the shared crate: every service validates addresses.
pub use nongsan_shared::reference::*;

use axum::Json;
use nongsan_shared::http::{Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ListingError, Problems, Result};

/// The 34 provinces and centrally-run cities (2025).
#[utoipa::path(get, path = "/v1/regions/provinces", tag = "regions", responses((status = 200, body = [Province])))]
pub async fn list_provinces() -> Json<&'static [Province]> {
    Json(&reference().provinces)
}

/// The communes of a province.
#[utoipa::path(get, path = "/v1/regions/provinces/{code}/communes", tag = "regions", params(("code" = String, Path, description = "Province code")),
    responses((status = 200, body = [Commune]), (status = 404, body = nongsan_shared::error::ProblemSchema)))]
pub async fn list_province_communes(
    Path(code): Path<String>,
) -> Result<Json<Vec<&'static Commune>>> {
    let r = reference();
    r.province(&code)
        .ok_or(ListingError::NotFound("province"))?;
    Ok(Json(r.communes_of(&code).collect()))
}

/// Search parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommuneSearch {
    /// Words of the name, with or without diacritics ("don duong", "Đơn Dương").
    pub q: String,
    /// Only in this province.
    pub province: Option<String>,
    /// At most this many (1–100, default 20).
    pub limit: Option<usize>,
}

/// Communes by name.
#[utoipa::path(get, path = "/v1/regions/communes", tag = "regions", params(CommuneSearch), responses((status = 200, body = [Commune]), (status = 422, body = nongsan_shared::error::ProblemSchema)))]
pub async fn search_communes(
    Query(s): Query<CommuneSearch>,
) -> Result<Json<Vec<&'static Commune>>> {
    let mut p = Problems::default();
    let q_len = s.q.trim().chars().count();
    p.check(
        q_len == 0 || q_len > 100,
        "q",
        "invalid_length",
        "must have 1 to 100 characters",
        "phải có từ 1 đến 100 ký tự",
    );
    if let Some(code) = &s.province {
        p.verify("province", reference().check_province(code));
    }
    let limit = s.limit.unwrap_or(20);
    p.check(
        !(1..=100).contains(&limit),
        "limit",
        "out_of_range",
        "must be 1 to 100",
        "phải từ 1 đến 100",
    );
    p.finish()?;
    Ok(Json(reference().search_communes(
        &s.q,
        s.province.as_deref(),
        limit,
    )))
}

/// A commune by code.
#[utoipa::path(get, path = "/v1/regions/communes/{code}", tag = "regions", params(("code" = String, Path)), responses((status = 200, body = Commune), (status = 404, body = nongsan_shared::error::ProblemSchema)))]
pub async fn get_commune(Path(code): Path<String>) -> Result<Json<&'static Commune>> {
    reference()
        .commune(&code)
        .map(Json)
        .ok_or(ListingError::NotFound("commune"))
}

/// What an old commune code became.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyConversion {
    /// The pre-2025 code.
    pub old_code: String,
    /// The pre-2025 name.
    pub old_name: String,
    /// The 2025 communes it went into; more than one when it was split.
    pub candidates: Vec<Conversion>,
}

/// The 2025 communes a pre-2025 commune code became.
#[utoipa::path(get, path = "/v1/regions/legacy-communes/{code}", tag = "regions", params(("code" = String, Path, description = "Pre-2025 commune code")),
    responses((status = 200, body = LegacyConversion), (status = 404, body = nongsan_shared::error::ProblemSchema)))]
pub async fn convert_legacy_commune(Path(code): Path<String>) -> Result<Json<LegacyConversion>> {
    let (old_name, candidates) = reference()
        .convert_legacy(&code)
        .ok_or(ListingError::NotFound("pre-2025 commune"))?;
    Ok(Json(LegacyConversion {
        old_code: code,
        old_name,
        candidates,
    }))
}

/// Produce categories.
#[utoipa::path(get, path = "/v1/categories", tag = "catalog", responses((status = 200, body = [Category])))]
pub async fn list_categories() -> Json<&'static [Category]> {
    Json(&reference().categories)
}

/// Selling units.
#[utoipa::path(get, path = "/v1/units", tag = "catalog", responses((status = 200, body = [Unit])))]
pub async fn list_units() -> Json<&'static [Unit]> {
    Json(&reference().units)
}

/// Certification kinds.
#[utoipa::path(get, path = "/v1/certifications", tag = "catalog", responses((status = 200, body = [CertificationKind])))]
pub async fn list_certifications() -> Json<&'static [CertificationKind]> {
    Json(&reference().certifications)
}
