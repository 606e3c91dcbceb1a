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

/// A hit as the search endpoint answers it: typed, or as Meilisearch answered it (copied
/// through, not parsed into a [`SearchDoc`] and written again: that was a fifth of nongsan's
/// CPU per search through Meilisearch). Either way the caller sets its stock figures.
#[derive(Debug, Clone)]
pub enum PageHit {
    /// From [`SearchEngine::search`].
    Typed(Box<Hit>),
    /// From Meilisearch, untouched.
    Raw(RawHit),
}

/// A Meilisearch hit copied through.
#[derive(Debug, Clone)]
pub struct RawHit {
    /// The listing's id.
    pub id: String,
    /// The document's fields as Meilisearch answered them, all of [`SearchDoc`]'s but
    /// `available` and `in_stock` (a JSON object).
    pub fields: Box<serde_json::value::RawValue>,
    /// As [`Hit::title_highlighted`].
    pub title_highlighted: String,
    /// As [`Hit::distance_km`].
    pub distance_km: Option<f64>,
    /// As [`SearchDoc::available`]: nothing until the caller sets it.
    pub available: String,
    /// As [`SearchDoc::in_stock`].
    pub in_stock: bool,
}

/// The fields of a [`SearchDoc`] a raw hit carries as Meilisearch answered them: all but the
/// stock figures, which are set from the stock table.
pub const RAW_FIELDS: [&str; 18] = [
    "id",
    "title",
    "description",
    "seller_name",
    "category",
    "category_parent",
    "category_name",
    "unit",
    "price_vnd",
    "province_code",
    "province_name",
    "commune_code",
    "commune_name",
    "certifications",
    "ocop_stars",
    "visible",
    "created_at",
    "_geo",
];

impl PageHit {
    /// A typed hit.
    pub fn typed(hit: Hit) -> Self {
        Self::Typed(Box::new(hit))
    }

    /// The listing's id.
    pub fn id(&self) -> &str {
        match self {
            Self::Typed(h) => &h.doc.id,
            Self::Raw(h) => &h.id,
        }
    }

    /// Sets the stock figures.
    pub fn set_stock(&mut self, available: String, in_stock: bool) {
        match self {
            Self::Typed(h) => (h.doc.available, h.doc.in_stock) = (available, in_stock),
            Self::Raw(h) => (h.available, h.in_stock) = (available, in_stock),
        }
    }
}

impl PageHit {
    /// Appends the hit as JSON text: a copied hit as it came, its stock figures, highlight
    /// and distance added. The search endpoint writes its answer this way; through
    /// [`Serialize`], the text is checked again as JSON.
    pub fn write_json(&self, out: &mut String) -> serde_json::Result<()> {
        let h = match self {
            Self::Typed(h) => {
                out.push_str(&serde_json::to_string(h)?);
                return Ok(());
            }
            Self::Raw(h) => h,
        };
        // The fields as they came, then the ones set here: one object, no key twice.
        let fields = h.fields.get().trim_end();
        let open = fields.strip_suffix('}').ok_or_else(|| {
            <serde_json::Error as serde::ser::Error>::custom(
                "a Meilisearch hit that is not an object",
            )
        })?;
        out.reserve(fields.len() + h.title_highlighted.len() + 96);
        out.push_str(open);
        if !open.trim_end().ends_with('{') {
            out.push(',');
        }
        push_json(out, "\"available\":", &h.available)?;
        push_json(out, ",\"in_stock\":", &h.in_stock)?;
        push_json(out, ",\"title_highlighted\":", &h.title_highlighted)?;
        push_json(out, ",\"distance_km\":", &h.distance_km)?;
        out.push('}');
        Ok(())
    }
}

impl Serialize for PageHit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        if let Self::Typed(h) = self {
            return h.serialize(serializer);
        }
        let mut out = String::new();
        self.write_json(&mut out).map_err(S::Error::custom)?;
        serde_json::value::RawValue::from_string(out)
            .map_err(S::Error::custom)?
            .serialize(serializer)
    }
}

/// Appends `key` and `value` as JSON text.
fn push_json<T: Serialize + ?Sized>(
    out: &mut String,
    key: &str,
    value: &T,
) -> serde_json::Result<()> {
    out.push_str(key);
    out.push_str(&serde_json::to_string(value)?);
    Ok(())
}

/// Facet counts: for each facet, the number of matching listings per value.
pub type Facets = BTreeMap<String, BTreeMap<String, u64>>;

/// The answer to a search.
#[derive(Debug, Clone)]
pub struct SearchResults<H = Hit> {
    /// This page's hits.
    pub hits: Vec<H>,
    /// For each facet asked (of category, province_code, certifications, ocop_stars), the
    /// number of matching listings per value.
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

impl<H> SearchResults<H> {
    /// The same answer, each hit made another way.
    pub fn map_hits<T>(self, f: impl FnMut(H) -> T) -> SearchResults<T> {
        SearchResults {
            hits: self.hits.into_iter().map(f).collect(),
            facets: self.facets,
            total: self.total,
            processing_time_ms: self.processing_time_ms,
            page: self.page,
            per_page: self.per_page,
            engine: self.engine,
        }
    }
}

/// How many of a search's hits may be paged through: the search endpoint serves no page that
/// ends past it, and Meilisearch is set to serve no more (`maxTotalHits`).
pub const MAX_HITS: usize = 10_000;

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
    /// How many of the listings `ids` it holds (each id once).
    async fn holding(&self, ids: &[String]) -> Result<u64, EngineError>;
    /// Searches.
    async fn search(&self, q: &SearchQuery) -> Result<SearchResults, EngineError>;
    /// Searches for the search endpoint: the hits of [`SearchEngine::search`], in the form
    /// cheapest to answer (Meilisearch's copied through).
    async fn search_page(&self, q: &SearchQuery) -> Result<SearchResults<PageHit>, EngineError> {
        Ok(self.search(q).await?.map_hits(PageHit::typed))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> SearchDoc {
        SearchDoc {
            id: "01a2".into(),
            title: "Xoài cát \"Hòa Lộc\"".into(),
            description: "Ngọt, thơm".into(),
            seller_name: "Hộ Nguyễn".into(),
            category: "trai-cay".into(),
            category_parent: None,
            category_name: "Trái cây".into(),
            unit: "kg".into(),
            price_vnd: 65_000,
            province_code: "82".into(),
            province_name: "Đồng Tháp".into(),
            commune_code: "28435".into(),
            commune_name: "Hòa An".into(),
            certifications: vec!["vietgap".into()],
            ocop_stars: Some(4),
            available: "12".into(),
            in_stock: true,
            visible: true,
            created_at: 1_764_979_200,
            geo: Some(Geo {
                lat: 10.46,
                lng: 105.63,
            }),
        }
    }

    /// A hit copied through from Meilisearch answers the same JSON as the same document read
    /// and written again: the fields it carries are the document's but its stock figures,
    /// which are set after.
    #[test]
    fn a_raw_hit_answers_what_a_typed_one_does() {
        let typed = Hit {
            doc: doc(),
            title_highlighted: "<em>Xoài</em> cát &quot;Hòa Lộc&quot;".into(),
            distance_km: None,
        };
        let mut stored = serde_json::to_value(doc()).unwrap();
        let fields = stored.as_object_mut().unwrap();
        fields.remove("available");
        fields.remove("in_stock");
        let mut carried: Vec<&str> = fields.keys().map(String::as_str).collect();
        let mut named = RAW_FIELDS.to_vec();
        carried.sort_unstable();
        named.sort_unstable();
        assert_eq!(
            carried, named,
            "RAW_FIELDS are the document's but the stock figures"
        );
        let mut raw = PageHit::Raw(RawHit {
            id: "01a2".into(),
            fields: serde_json::value::RawValue::from_string(
                serde_json::to_string(&stored).unwrap(),
            )
            .unwrap(),
            title_highlighted: typed.title_highlighted.clone(),
            distance_km: None,
            available: "0".into(),
            in_stock: false,
        });
        raw.set_stock("12".into(), true);
        assert_eq!(raw.id(), "01a2");
        assert_eq!(
            serde_json::to_value(&raw).unwrap(),
            serde_json::to_value(PageHit::typed(typed)).unwrap()
        );
    }
}
