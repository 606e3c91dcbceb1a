//! nongsan's search: one contract, two engines. Meilisearch (through meilisearch-sdk) or an
//! embedded tantivy index. Both understand how Vietnamese buyers type: without diacritics,
//! with typos (one from 4 letters, two from 8), with their region's word (synonyms), and word
//! by word as they type (prefix on the last word).
//!
//! This crate knows documents and queries only: no SQL and no HTTP server. The listing service
//! feeds it (its indexer) and serves it (`/v1/search`).

pub mod embedded;
pub mod generate;
pub mod meili;
mod text;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use text::{Expanded, escape_html, expand_query, fold, highlight, synonym_groups, typo_budget};

/// How an engine runs: in this process (embedded) or as a server reached by URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EngineMode {
    /// The tantivy index in the data folder.
    Embedded,
    /// Meilisearch.
    External,
}

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
    /// The facets to count (of [`FACETS`]); none costs nothing.
    pub facets: Vec<String>,
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
            facets: Vec::new(),
        }
    }
}

/// One hit.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Hit {
    /// The listing as indexed.
    #[serde(flatten)]
    pub doc: SearchDoc,
    /// The title as HTML: matched words in `<em>`, the rest escaped.
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
    /// For each facet asked (of category, province_code, certifications, ocop_stars), the
    /// number of matching listings per value.
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
    pub engine: EngineMode,
}

/// The facets a search may count.
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

/// A search engine: the same contract for Meilisearch and the embedded index.
#[async_trait::async_trait]
pub trait SearchEngine: Send + Sync {
    /// How it runs.
    fn mode(&self) -> EngineMode;
    /// Adds or replaces documents; done when they are searchable.
    async fn upsert(&self, docs: &[SearchDoc]) -> Result<(), EngineError>;
    /// Adds or replaces many documents at once (a reindex): as large batches as the engine
    /// takes, done when all are searchable.
    async fn upsert_bulk(&self, docs: &[SearchDoc]) -> Result<(), EngineError> {
        self.upsert(docs).await
    }
    /// Adds or replaces many documents without waiting for the engine to index them, where
    /// the engine queues its work (Meilisearch's tasks): a reindex sends its next page while
    /// the last is indexed. [`SearchEngine::settle`] waits for every queued write.
    async fn upsert_queued(&self, docs: &[SearchDoc]) -> Result<(), EngineError> {
        self.upsert_bulk(docs).await
    }
    /// Waits until every write [`SearchEngine::upsert_queued`] sent is indexed, and fails if
    /// one failed.
    async fn settle(&self) -> Result<(), EngineError> {
        Ok(())
    }
    /// Starts a rebuild. Where the engine can swap indexes (Meilisearch), the queued writes
    /// ([`SearchEngine::upsert_queued`]) go from here to a new, empty index while searches are
    /// still answered from the current one; elsewhere the index is cleared (the embedded index
    /// is rebuilt with the server stopped).
    async fn rebuild_begin(&self) -> Result<(), EngineError> {
        self.clear().await
    }
    /// Ends a rebuild: waits for its writes, then the new index serves, in one step, and the
    /// old one is dropped.
    async fn rebuild_finish(&self) -> Result<(), EngineError> {
        self.settle().await
    }
    /// Removes every document.
    async fn clear(&self) -> Result<(), EngineError>;
    /// How many documents it holds.
    async fn count(&self) -> Result<u64, EngineError>;
    /// Searches.
    async fn search(&self, q: &SearchQuery) -> Result<SearchResults, EngineError>;
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
