//! Search: one contract, two engines. Meilisearch (through meilisearch-sdk) when `MEILI_URL`
//! is set, else an embedded tantivy index in the data folder. Both understand how
//! Vietnamese buyers type: without diacritics, with typos (one from 4 letters, two from 8),
//! with their region's word (synonyms), and word by word as they type (prefix on the last
//! word). The index follows the listing events (see [`indexer`]).

pub mod embedded;
pub mod indexer;
pub mod meili;
mod text;

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json as AxumJson, extract::State};
use nongsan_shared::{
    ApiError, Text,
    auth::{Actor, Role},
    http::{Mode, Query},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use text::{Expanded, expand_query, synonym_groups, typo_budget};

use crate::{
    access::AppState,
    error::{ListingError, Problems},
    listings::ListingView,
    reference::reference,
};

/// A point for Meilisearch's `_geo`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Geo {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lng: f64,
}

/// What the index holds of a listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct SearchDoc {
    /// Listing id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Seller's name.
    pub seller_name: String,
    /// Category code.
    pub category: String,
    /// Parent category code.
    pub category_parent: Option<String>,
    /// Category name (Vietnamese).
    pub category_name: String,
    /// Unit code.
    pub unit: String,
    /// Price per unit, đồng.
    pub price_vnd: i64,
    /// Province code of the origin.
    pub province_code: String,
    /// Province name.
    pub province_name: String,
    /// Commune code of the origin.
    pub commune_code: String,
    /// Commune name.
    pub commune_name: String,
    /// Certification kinds.
    pub certifications: Vec<String>,
    /// OCOP stars.
    pub ocop_stars: Option<i16>,
    /// Available quantity.
    pub available: String,
    /// Whether anything is available.
    pub in_stock: bool,
    /// Whether buyers see it (status active).
    pub visible: bool,
    /// Created, Unix seconds.
    pub created_at: i64,
    /// Where it grows.
    #[serde(rename = "_geo")]
    pub geo: Option<Geo>,
}

impl SearchDoc {
    /// The index document of a listing.
    pub fn from_listing(l: &ListingView) -> Self {
        let r = reference();
        let category = r.categories.iter().find(|c| c.code == l.category);
        let point = l.origin.point.or_else(|| {
            let c = r.commune(&l.origin.commune_code)?;
            Some(crate::sellers::Point {
                lat: c.lat?,
                lon: c.lon?,
            })
        });
        Self {
            id: l.id.to_string(),
            title: l.title.clone(),
            description: l.description.clone(),
            seller_name: l.seller.name.clone(),
            category: l.category.clone(),
            category_parent: category.and_then(|c| c.parent.clone()),
            category_name: category.map(|c| c.name_vi.clone()).unwrap_or_default(),
            unit: l.unit.clone(),
            price_vnd: l.price_vnd.get(),
            province_code: l.origin.province_code.clone(),
            province_name: l.origin.province_name.clone(),
            commune_code: l.origin.commune_code.clone(),
            commune_name: l.origin.commune_name.clone(),
            certifications: l.certifications.iter().map(|c| c.kind.clone()).collect(),
            ocop_stars: l.ocop_stars,
            available: l.stock.available.to_string(),
            in_stock: l.stock.available.is_positive(),
            visible: l.status == "active",
            created_at: l.created_at.timestamp(),
            geo: point.map(|p| Geo {
                lat: p.lat,
                lng: p.lon,
            }),
        }
    }
}

/// How hits are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Best match first.
    Relevance,
    /// Cheapest first.
    PriceAsc,
    /// Dearest first.
    PriceDesc,
    /// Newest first.
    Newest,
    /// Nearest to the point first.
    Distance,
}

/// A search, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// The words, NFC.
    pub q: String,
    /// Category (or parent category).
    pub category: Option<String>,
    /// Province code.
    pub province: Option<String>,
    /// Commune code.
    pub commune: Option<String>,
    /// Certification kind.
    pub certification: Option<String>,
    /// At least this many OCOP stars.
    pub min_ocop: Option<i16>,
    /// Lowest price.
    pub price_min: Option<i64>,
    /// Highest price.
    pub price_max: Option<i64>,
    /// Only listings with stock.
    pub in_stock_only: bool,
    /// Also listings buyers do not see (operators).
    pub include_hidden: bool,
    /// A point, and a radius in km around it.
    pub near: Option<(Geo, Option<f64>)>,
    /// Order.
    pub sort: Sort,
    /// Page, from 1.
    pub page: usize,
    /// Hits per page.
    pub per_page: usize,
}

impl Default for SearchQuery {
    fn default() -> Self {
        Self {
            q: String::new(),
            category: None,
            province: None,
            commune: None,
            certification: None,
            min_ocop: None,
            price_min: None,
            price_max: None,
            in_stock_only: true,
            include_hidden: false,
            near: None,
            sort: Sort::Relevance,
            page: 1,
            per_page: 20,
        }
    }
}

/// One hit.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Hit {
    /// The listing as indexed.
    #[serde(flatten)]
    pub doc: SearchDoc,
    /// The title with matched words in `<em>`.
    pub title_highlighted: String,
    /// Distance from the point, when one was given, in km.
    pub distance_km: Option<f64>,
}

/// Facet counts: for each facet, the number of matching listings per value.
pub type Facets = BTreeMap<String, BTreeMap<String, u64>>;

/// The answer to a search.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchResults {
    /// This page's hits.
    pub hits: Vec<Hit>,
    /// Counts per category, province_code, certifications and ocop_stars over all matches.
    #[schema(value_type = Object)]
    pub facets: Facets,
    /// How many listings match.
    pub total: u64,
    /// Milliseconds the engine took.
    pub processing_time_ms: u64,
    /// The page.
    pub page: usize,
    /// Hits per page.
    pub per_page: usize,
    /// `embedded` or `external` (Meilisearch).
    pub engine: Mode,
}

/// The facets every search counts.
pub const FACETS: [&str; 4] = ["category", "province_code", "certifications", "ocop_stars"];

/// Why an engine failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine cannot be reached now.
    #[error("search engine unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Unavailable(why) => ApiError::unavailable(
                "search_unavailable",
                Text::new(
                    "Search is unavailable right now; try again shortly.",
                    "Tìm kiếm tạm thời không khả dụng; vui lòng thử lại sau.",
                ),
            )
            .with_cause(anyhow::anyhow!(why)),
            EngineError::Other(e) => ApiError::internal(e),
        }
    }
}

/// A search engine: the same contract for Meilisearch and the embedded index.
#[async_trait::async_trait]
pub trait SearchEngine: Send + Sync {
    /// How it runs.
    fn mode(&self) -> Mode;
    /// Adds or replaces documents; done when they are searchable.
    async fn upsert(&self, docs: &[SearchDoc]) -> Result<(), EngineError>;
    /// Removes every document.
    async fn clear(&self) -> Result<(), EngineError>;
    /// How many documents it holds.
    async fn count(&self) -> Result<u64, EngineError>;
    /// Searches.
    async fn search(&self, q: &SearchQuery) -> Result<SearchResults, EngineError>;
}

/// The engine for these settings: Meilisearch when configured, else the embedded index in
/// `<data>/search`.
pub async fn engine_for(
    settings: &nongsan_shared::config::Settings,
) -> anyhow::Result<Arc<dyn SearchEngine>> {
    use secrecy::ExposeSecret;
    Ok(match &settings.meili_url {
        Some(url) => Arc::new(meili::MeiliEngine::new(
            url,
            settings
                .meili_key
                .as_ref()
                .map(|k| k.expose_secret().to_owned()),
            &format!("{}_listings", settings.redis_prefix),
        )?),
        None => Arc::new(embedded::EmbeddedEngine::open(
            &settings.data_dir.join("search"),
        )?),
    })
}

/// Search parameters, as sent.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Words, at most 512 characters; with or without diacritics.
    pub q: Option<String>,
    /// Category code (includes its subcategories).
    pub category: Option<String>,
    /// Province code (2025).
    pub province: Option<String>,
    /// Commune code (2025).
    pub commune: Option<String>,
    /// Certification kind.
    pub certification: Option<String>,
    /// At least this many OCOP stars (1–5).
    pub min_ocop: Option<i16>,
    /// Lowest price per unit, đồng.
    pub price_min: Option<i64>,
    /// Highest price per unit, đồng.
    pub price_max: Option<i64>,
    /// Only listings with stock (default true).
    pub in_stock: Option<bool>,
    /// Also listings hidden from buyers (operators only).
    pub include_hidden: Option<bool>,
    /// Latitude of a point.
    pub lat: Option<f64>,
    /// Longitude of a point.
    pub lon: Option<f64>,
    /// Radius around the point, km (0–1000].
    pub radius_km: Option<f64>,
    /// relevance (default), price_asc, price_desc, newest, distance.
    pub sort: Option<Sort>,
    /// Page, from 1.
    pub page: Option<usize>,
    /// Hits per page, 1–100 (default 20).
    pub per_page: Option<usize>,
}

impl SearchParams {
    /// Checks the parameters; 422 names each bad one.
    pub fn check(self, actor: Option<&Actor>) -> Result<SearchQuery, ListingError> {
        let r = reference();
        let mut p = Problems::default();
        let q: String = unicode_normalization::UnicodeNormalization::nfc(
            self.q.as_deref().unwrap_or("").trim(),
        )
        .collect();
        p.check(
            q.chars().count() > 512,
            "q",
            "too_long",
            "must be at most 512 characters",
            "tối đa 512 ký tự",
        );
        if let Some(c) = &self.category {
            p.verify("category", r.check_category(c));
        }
        if let Some(c) = &self.province {
            p.verify("province", r.check_province(c));
        }
        if let Some(c) = &self.commune {
            p.verify("commune", r.check_commune(c));
        }
        if let Some(c) = &self.certification {
            p.verify("certification", r.check_certification(c));
        }
        if let Some(s) = self.min_ocop {
            p.check(
                !(1..=5).contains(&s),
                "min_ocop",
                "out_of_range",
                "must be 1 to 5",
                "phải từ 1 đến 5",
            );
        }
        for (field, v) in [("price_min", self.price_min), ("price_max", self.price_max)] {
            p.check(
                v.is_some_and(|v| v < 0),
                field,
                "negative",
                "must not be negative",
                "không được âm",
            );
        }
        if let (Some(lo), Some(hi)) = (self.price_min, self.price_max) {
            p.check(
                lo > hi,
                "price_max",
                "below_price_min",
                "must not be below price_min",
                "không được nhỏ hơn price_min",
            );
        }
        let point = match (self.lat, self.lon) {
            (Some(lat), Some(lng)) => {
                p.check(
                    !(-90.0..=90.0).contains(&lat),
                    "lat",
                    "out_of_range",
                    "must be −90 to 90",
                    "phải từ −90 đến 90",
                );
                p.check(
                    !(-180.0..=180.0).contains(&lng),
                    "lon",
                    "out_of_range",
                    "must be −180 to 180",
                    "phải từ −180 đến 180",
                );
                Some(Geo { lat, lng })
            }
            (None, None) => None,
            (None, Some(_)) => {
                p.check(
                    true,
                    "lat",
                    "required",
                    "is required with lon",
                    "là bắt buộc khi có lon",
                );
                None
            }
            (Some(_), None) => {
                p.check(
                    true,
                    "lon",
                    "required",
                    "is required with lat",
                    "là bắt buộc khi có lat",
                );
                None
            }
        };
        if let Some(radius) = self.radius_km {
            p.check(
                point.is_none() && self.lat.is_none() && self.lon.is_none(),
                "radius_km",
                "needs_point",
                "needs lat and lon",
                "cần lat và lon",
            );
            p.check(
                !(radius > 0.0 && radius <= 1000.0),
                "radius_km",
                "out_of_range",
                "must be above 0 and at most 1000",
                "phải lớn hơn 0 và tối đa 1000",
            );
        }
        let sort = self.sort.unwrap_or(Sort::Relevance);
        p.check(
            sort == Sort::Distance && point.is_none(),
            "sort",
            "needs_point",
            "distance needs lat and lon",
            "sắp xếp theo khoảng cách cần lat và lon",
        );
        let page = self.page.unwrap_or(1);
        p.check(
            page == 0 || page > 1000,
            "page",
            "out_of_range",
            "must be 1 to 1000",
            "phải từ 1 đến 1000",
        );
        let per_page = self.per_page.unwrap_or(20);
        p.check(
            !(1..=100).contains(&per_page),
            "per_page",
            "out_of_range",
            "must be 1 to 100",
            "phải từ 1 đến 100",
        );
        p.finish()?;
        let include_hidden = self.include_hidden.unwrap_or(false);
        if include_hidden && actor.is_none_or(|a| a.role != Role::Operator) {
            return Err(ListingError::Forbidden);
        }
        Ok(SearchQuery {
            q,
            category: self.category,
            province: self.province,
            commune: self.commune,
            certification: self.certification,
            min_ocop: self.min_ocop,
            price_min: self.price_min,
            price_max: self.price_max,
            in_stock_only: self.in_stock.unwrap_or(true) && !include_hidden,
            include_hidden,
            near: point.map(|g| (g, self.radius_km)),
            sort,
            page,
            per_page,
        })
    }
}

/// Search the catalog.
#[utoipa::path(get, path = "/v1/search", tag = "search", params(SearchParams),
    responses((status = 200, body = SearchResults), (status = 422, body = nongsan_shared::error::ProblemSchema),
        (status = 503, description = "search_unavailable: Meilisearch cannot be reached", body = nongsan_shared::error::ProblemSchema)))]
pub async fn search_listings(
    State(app): State<AppState>,
    actor: Option<Actor>,
    Query(params): Query<SearchParams>,
) -> Result<AxumJson<SearchResults>, ApiError> {
    let query = params.check(actor.as_ref())?;
    Ok(AxumJson(app.search.search(&query).await?))
}

/// Great-circle distance in km (haversine).
#[expect(
    clippy::float_arithmetic,
    reason = "geodesic distance is floating-point by nature"
)]
pub fn distance_km(a: Geo, b: Geo) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = (b.lat - a.lat).to_radians();
    let dlng = (b.lng - a.lng).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlng / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}
