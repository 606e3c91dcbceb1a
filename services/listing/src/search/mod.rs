//! Search over the catalog: the `/v1/search` handler and the indexer that keeps the engine
//! (crate `nongsan-search`: Meilisearch or the embedded index) following the listing events.

pub mod dirty;
pub mod indexer;

use std::{collections::HashMap, sync::Arc};

use axum::extract::State;
use nongsan_shared::{
    ApiError, ListingId, Quantity, Text,
    auth::{Actor, Role},
    http::{Mode, Query},
    paging,
    reference::reference,
};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::{
    app::{App, AppState},
    catalog::{cache::Ticket, store::ListingView},
    error::{ListingError, Problems},
    stock::levels::StockLevels,
};

pub use nongsan_search::{
    EngineError, EngineMode, FACETS, Geo, MAX_HITS, PageHit, RAW_FIELDS, SearchDoc, SearchEngine,
    SearchQuery, SearchResults, Sort, embedded, fold, generate, meili,
};

/// The index document of a listing.
pub fn document(l: &ListingView) -> SearchDoc {
    let r = reference();
    let category = r.categories.iter().find(|c| c.code == l.category);
    let point = l.origin.point.or_else(|| {
        let c = r.commune(&l.origin.commune_code)?;
        Some(crate::sellers::profile::Point {
            lat: c.lat?,
            lon: c.lon?,
        })
    });
    SearchDoc {
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
        // Only certificates in force (and not rejected) count for the facet.
        certifications: l
            .certifications
            .iter()
            .filter(|c| c.counts())
            .map(|c| c.kind.clone())
            .collect(),
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

/// The problem an engine failure answers: 503 while the engine is away.
pub fn engine_problem(e: EngineError) -> ApiError {
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
        None => Arc::new(embedded::EmbeddedEngine::open_with(
            &settings.data_dir.join("search"),
            usize::try_from(settings.search_writer_mb)
                .unwrap_or(64)
                .saturating_mul(1024 * 1024),
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
    /// relevance (default), price_asc, price_desc, newest, distance. Words rank first (more
    /// typos last, title before the rest, exact diacritics first), then this order.
    pub sort: Option<Sort>,
    /// Facets to count over all matches, comma-separated: category, province_code,
    /// certifications, ocop_stars, or `all`. None by default (a plain search costs less).
    pub facets: Option<String>,
    /// Hits per page, 1–100 (default 20).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
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
        if let Some(c) = &self.commune
            && let Some(commune) = p.verify("commune", r.check_commune(c))
        {
            // A commune outside the province asked matched nothing, silently.
            p.check(
                self.province
                    .as_ref()
                    .is_some_and(|province| *province != commune.province_code),
                "commune",
                "commune_not_in_province",
                "is not in the given province",
                "không thuộc tỉnh/thành đã chọn",
            );
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
        let limit = paging::limit(&mut p, self.limit);
        // A search cursor holds the next page's number and its size.
        let at = paging::position(&mut p, self.cursor.as_deref(), |s| {
            let (page, size) = s.strip_prefix("page:")?.split_once(':')?;
            Some((page.parse::<usize>().ok()?, size.parse::<u32>().ok()?))
        });
        if let Some((_, size)) = at {
            p.check(
                self.limit.is_some_and(|l| l != size),
                "limit",
                "cursor_limit_mismatch",
                "must be the limit of the page the cursor came from",
                "phải bằng kích thước của trang đã cho con trỏ",
            );
        }
        let (page, per_page) = match at {
            Some((page, size)) => (page, usize::try_from(size).unwrap_or(0)),
            None => (1, usize::try_from(limit).unwrap_or(20)),
        };
        // A cursor is base64, not sealed: one written by hand must hold a page size the
        // `limit` could have asked for, and a page no deeper than a search reaches.
        p.check(
            !(1..=paging::MAX_LIMIT as usize).contains(&per_page)
                || page == 0
                || !within_reach(page, per_page),
            "cursor",
            "out_of_range",
            "goes past the last page a search may reach",
            "vượt quá trang cuối cùng mà tìm kiếm có thể tới",
        );
        let facets: Vec<String> = match self.facets.as_deref().map(str::trim) {
            None | Some("") => Vec::new(),
            Some("all") => nongsan_search::FACETS
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
            Some(list) => {
                // Each name once. More names than there are facets hold an unknown one:
                // the rest are not read.
                let mut named: Vec<String> = Vec::new();
                for f in list.split(',').map(str::trim) {
                    if !named.iter().any(|n| n == f) {
                        named.push(f.to_owned());
                        if named.len() > nongsan_search::FACETS.len() {
                            break;
                        }
                    }
                }
                named
            }
        };
        // Named once, however many of the names are wrong.
        p.check(
            facets
                .iter()
                .any(|f| !nongsan_search::FACETS.contains(&f.as_str())),
            "facets",
            "unknown_facet",
            "names an unknown facet: use category, province_code, certifications, ocop_stars or all",
            "có facet không tồn tại: dùng category, province_code, certifications, ocop_stars hoặc all",
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
            facets,
        })
    }
}

/// Search the catalog.
#[utoipa::path(get, path = "/v1/search", tag = "search", params(SearchParams),
    responses((status = 200, body = SearchPage), (status = 422, body = nongsan_shared::error::ProblemSchema),
        (status = 403, description = "forbidden: `include_hidden` is for operators", body = nongsan_shared::error::ProblemSchema),
        (status = 503, description = "search_unavailable: Meilisearch cannot be reached, or has not answered within 5 s", body = nongsan_shared::error::ProblemSchema)))]
pub async fn search_listings(
    State(app): State<AppState>,
    actor: Option<Actor>,
    Query(params): Query<SearchParams>,
) -> Result<axum::response::Response, ApiError> {
    let query = params.check(actor.as_ref())?;
    let mut found = app
        .search
        .search_page(&query)
        .await
        .map_err(engine_problem)?;
    live_stock(&app, &mut found.hits).await?;
    let next_cursor = next_page(query.page, query.per_page, found.total)
        .map(|next| paging::cursor(&format!("page:{next}:{}", query.per_page)));
    let page = SearchPage {
        items: found.hits,
        next_cursor,
        total: found.total,
        facets: found.facets,
        processing_time_ms: found.processing_time_ms,
        engine: found.engine,
    };
    let json = page.into_json().map_err(anyhow::Error::from)?;
    Ok(axum::response::IntoResponse::into_response((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json,
    )))
}

/// Sets each hit's stock figures as the stock table has them: the index is rewritten when a
/// listing's stock runs out or comes back, not on every reservation of a busy listing, so its
/// own figure may be behind. The figures come from the listing pages' cache when it has them
/// (kept as fresh as the pages, by the same notifications), and the others from PostgreSQL
/// in one statement. The array is read through a subquery so that PostgreSQL plans the
/// statement once per connection, not again for every page's ids.
async fn live_stock(app: &App, hits: &mut [nongsan_search::PageHit]) -> Result<(), ApiError> {
    // The hits whose level is not kept, each with its ticket, taken before the statement.
    let mut unknown: Vec<(usize, Ticket)> = Vec::new();
    for (i, h) in hits.iter_mut().enumerate() {
        let Ok(id) = h.id().parse::<uuid::Uuid>() else {
            continue;
        };
        match app.views.level(ListingId(id)) {
            Some(available) => set_stock(h, available),
            None => unknown.push((i, app.views.level_ticket(ListingId(id)))),
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = unknown.iter().map(|(_, t)| t.listing().0).collect();
    let levels: HashMap<uuid::Uuid, Quantity> = sqlx::query!(
        r#"SELECT listing_id, on_hand AS "on_hand: Quantity", reserved AS "reserved: Quantity" FROM stock WHERE listing_id = ANY((SELECT $1::uuid[])::uuid[])"#,
        &ids,
    )
    .fetch_all(&app.pool)
    .await?
    .into_iter()
    .map(|r| {
        let available = StockLevels::available_of(r.on_hand, r.reserved);
        (r.listing_id, available)
    })
    .collect();
    for (i, ticket) in &unknown {
        if let (Some(available), Some(h)) = (levels.get(&ticket.listing().0), hits.get_mut(*i)) {
            app.views.put_level(ticket, *available);
            set_stock(h, *available);
        }
    }
    Ok(())
}

fn set_stock(h: &mut nongsan_search::PageHit, available: Quantity) {
    h.set_stock(available.to_string(), available.is_positive());
}

/// Whether page `page` of `per_page` hits ends within [`MAX_HITS`]: how deep into its hits a
/// search reaches, whatever the page size (past it, refine the words or filters). A page's
/// cost grows with its depth: the engine ranks every hit down to the page's last.
fn within_reach(page: usize, per_page: usize) -> bool {
    page.checked_mul(per_page)
        .is_some_and(|end| end <= MAX_HITS)
}

/// The page after `page`, when more than the hits shown so far match and it is within reach.
fn next_page(page: usize, per_page: usize, total: u64) -> Option<usize> {
    let seen = u64::try_from(page.saturating_mul(per_page)).unwrap_or(u64::MAX);
    let next = page.checked_add(1)?;
    (seen < total && within_reach(next, per_page)).then_some(next)
}

/// A page of search results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchPage {
    /// This page's hits, best first (or in the order asked).
    #[schema(value_type = Vec<nongsan_search::Hit>)]
    pub items: Vec<nongsan_search::PageHit>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
    /// How many listings match.
    pub total: u64,
    /// Counts per category, province_code, certifications and ocop_stars over all matches.
    #[schema(value_type = Object)]
    pub facets: nongsan_search::Facets,
    /// Milliseconds the engine took.
    pub processing_time_ms: u64,
    /// `embedded` or `external` (Meilisearch).
    pub engine: EngineMode,
}

impl SearchPage {
    /// The page as JSON text, each hit written by [`PageHit::write_json`]: a hit copied
    /// through from Meilisearch is not read again to be checked, as it would be through
    /// `Serialize` (6 % of nongsan's CPU per search through Meilisearch). The rest is
    /// serde's, after the (emptied) items.
    pub fn into_json(mut self) -> serde_json::Result<String> {
        let items = std::mem::take(&mut self.items);
        let rest = serde_json::to_string(&self)?;
        let rest = rest.strip_prefix("{\"items\":[]").ok_or_else(|| {
            <serde_json::Error as serde::ser::Error>::custom(
                "a search page's first field is not items",
            )
        })?;
        let mut out = String::with_capacity(rest.len() + items.len() * 1_500);
        out.push_str("{\"items\":[");
        for (i, hit) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            hit.write_json(&mut out)?;
        }
        out.push(']');
        out.push_str(rest);
        Ok(out)
    }
}

/// How the engine runs, as `/readyz` tells it.
pub fn readiness_mode(engine: &dyn SearchEngine) -> Mode {
    match engine.mode() {
        EngineMode::Embedded => Mode::Embedded,
        EngineMode::External => Mode::External,
    }
}

#[cfg(test)]
mod tests {
    use axum::{extract::Query, http::Uri};

    use super::{EngineMode, PageHit, SearchPage, SearchParams, next_page};

    /// The page written by hand (each hit copied or typed) is the page serde writes.
    #[test]
    fn a_page_written_as_text_is_the_page_serde_writes() {
        let docs: Vec<_> = nongsan_search::generate::listings(3, 2, 1)
            .iter()
            .map(|g| g.search_doc(&format!("gen-{}", g.n), "Hộ Lê"))
            .collect();
        let mut fields = serde_json::to_value(&docs[0]).unwrap();
        let object = fields.as_object_mut().unwrap();
        object.remove("available");
        object.remove("in_stock");
        let mut raw = PageHit::Raw(nongsan_search::RawHit {
            id: docs[0].id.clone(),
            fields: serde_json::value::RawValue::from_string(fields.to_string()).unwrap(),
            title_highlighted: "<em>x</em>".into(),
            distance_km: None,
            available: "0".into(),
            in_stock: false,
        });
        raw.set_stock("7.5".into(), true);
        let typed = PageHit::typed(nongsan_search::Hit {
            doc: docs[1].clone(),
            title_highlighted: "y".into(),
            distance_km: Some(1.5),
        });
        let page = || SearchPage {
            items: vec![raw.clone(), typed.clone()],
            next_cursor: Some("page:2:20".into()),
            total: 2,
            facets: [("category".to_owned(), [("rau".to_owned(), 2)].into())].into(),
            processing_time_ms: 3,
            engine: EngineMode::External,
        };
        let written: serde_json::Value =
            serde_json::from_str(&page().into_json().unwrap()).unwrap();
        assert_eq!(written, serde_json::to_value(page()).unwrap());
        assert_eq!(written["items"][0]["available"], "7.5");
        assert_eq!(written["items"][0]["title"], docs[0].title.as_str());
    }

    /// The next page is offered while hits remain and it ends within reach, at any page size.
    #[test]
    fn the_next_page_stops_at_the_last_hit_and_at_the_deepest_reach() {
        assert_eq!(next_page(1, 20, 100), Some(2));
        assert_eq!(next_page(5, 20, 100), None, "all 100 seen");
        assert_eq!(next_page(99, 100, 50_000), Some(100));
        assert_eq!(
            next_page(100, 100, 50_000),
            None,
            "hits 10,001 on are not served"
        );
        assert_eq!(next_page(499, 20, 50_000), Some(500));
        assert_eq!(next_page(500, 20, 50_000), None);
        assert_eq!(
            next_page(333, 30, 50_000),
            None,
            "page 334 would end at hit 10,020"
        );
        assert_eq!(next_page(usize::MAX, 1, u64::MAX), None);
    }

    #[test]
    fn the_benchmark_mix_asks_the_api_for_the_same_searches() {
        for q in nongsan_search::generate::query_mix() {
            let path = nongsan_search::generate::search_path(&q);
            let uri: Uri = path.parse().expect("a path");
            let Query(params) = Query::<SearchParams>::try_from_uri(&uri).expect("parameters");
            let checked = params.check(None).expect("a valid search");
            assert_eq!(checked, q, "{path}");
        }
    }
}
