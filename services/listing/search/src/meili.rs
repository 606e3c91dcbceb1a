//! The Meilisearch engine, through meilisearch-sdk. Index settings (searchable, filterable and
//! sortable attributes, synonyms, typo tolerance tuned for Vietnamese syllables, ranking
//! rules) are applied before the first write or search. The indexer's writes wait for their
//! task; a reindex sends its batches without waiting, into a new index that then takes the
//! serving one's place in one step (Meilisearch's index swap), so search never goes empty.

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use http::{HeaderValue, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client as Pool, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use meilisearch_sdk::{
    client::{Client, SwapIndexes},
    documents::DocumentsQuery,
    errors::Error as MeiliError,
    indexes::Index,
    request::{HttpClient, Method},
    search::Selectors,
    settings::{MinWordSizeForTypos, PaginationSetting, Settings, TypoToleranceSettings},
    task_info::TaskInfo,
    tasks::Task,
};
use serde_json::value::RawValue;
use tokio::sync::OnceCell;

use crate::{
    EngineError, EngineMode, FACETS, Facets, Hit, MAX_HITS, PageHit, RAW_FIELDS, RawHit, SearchDoc,
    SearchEngine, SearchQuery, SearchResults, Sort, distance_km, expand_query, highlight,
    synonym_groups,
};

/// How long a write waits for Meilisearch to process it.
const TASK_TIMEOUT: Duration = Duration::from_secs(120);

/// Documents per task when many are written at once.
const BULK_BATCH: usize = 10_000;
/// How long a search waits for Meilisearch, the index's first preparation included, before
/// it is answered 503. Searches through Meilisearch at 100,000 listings answered at p99 18 ms
/// on 8 connections and 52 ms on 32 (BENCHMARKS.md, 2026-12-06 16:12); a Meilisearch that
/// takes connections and never answers would otherwise hold every search for the HTTP
/// client's 60 s, or 120 s while the settings are read and sent at first use, and the
/// requests would pile up.
const SEARCH_WAIT: Duration = Duration::from_secs(5);

/// meilisearch-sdk's HTTP, done here: the SDK's own client streams every request body
/// through a buffer of 8 MiB that it allocates and zeroes per request (a quarter of nongsan's
/// CPU per search in `perf`). Bodies here are small JSON, sent whole, through hyper's pooled
/// client: reqwest's layers over the same client printed each search's URL and parsed it back,
/// for the request and again for the answer (a tenth of nongsan's CPU per search). Meilisearch
/// is reached directly at `MEILI_URL`: no proxy from the environment, no redirect followed.
#[derive(Debug, Clone)]
pub struct Http {
    client: Pool<Bounded, Full<bytes::Bytes>>,
    /// `Bearer <key>`, marked sensitive so that it is never logged.
    authorization: Option<HeaderValue>,
}

/// The connector with the whole of a connection's making bounded by [`CONNECT_TIMEOUT`]: the
/// name looked up, TCP, and TLS for an `https` URL (hyper's own connect timeout covers TCP
/// only).
#[derive(Debug, Clone)]
struct Bounded(HttpsConnector<HttpConnector>);

type Connecting = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>,
                    Box<dyn std::error::Error + Send + Sync>,
                >,
            > + Send,
    >,
>;

impl tower::Service<Uri> for Bounded {
    type Response = hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(connected) => connected,
                Err(_) => {
                    Err(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()).into())
                }
            }
        })
    }
}

/// nongsan's `User-Agent` in Meilisearch's logs.
const AGENT: &str = concat!("nongsan/", env!("CARGO_PKG_VERSION"));
/// How long a request waits to connect to Meilisearch.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for Meilisearch's whole answer. A Meilisearch that takes
/// connections but never answers is away: a search gets 503, and a write is tried again,
/// instead of waiting for ever (an empty index's fill would hold the indexer back meanwhile).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Meilisearch could not be reached, or did not answer in time: the search is answered 503
/// and the indexer tries again.
#[derive(Debug, thiserror::Error)]
#[error("meilisearch is unreachable: {0}")]
struct Unreachable(String);

impl Unreachable {
    /// The error with its causes, the innermost last ("client error (Connect): tcp connect
    /// error: Connection refused").
    fn from_chain(e: &dyn std::error::Error) -> MeiliError {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        MeiliError::Other(Box::new(Unreachable(text)))
    }
}

impl Http {
    fn new(key: Option<String>) -> anyhow::Result<Self> {
        // A key that cannot be a header would fail every request as if Meilisearch were away.
        let authorization = key
            .map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                    anyhow::anyhow!("MEILI_KEY: not a valid HTTP header value (a stray newline?)")
                })?;
                v.set_sensitive(true);
                anyhow::Ok(v)
            })
            .transpose()?;
        let mut tcp = HttpConnector::new();
        // Small requests, each waiting for its answer: not held back to fill a segment.
        tcp.set_nodelay(true);
        // A pooled connection to a Meilisearch that vanished (its host gone, a NAT entry
        // dropped) is found dead within a minute or so, not at the next request's timeout.
        tcp.set_keepalive(Some(Duration::from_secs(15)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
        tcp.set_keepalive_retries(Some(3));
        #[cfg(target_os = "linux")]
        tcp.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Pool::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(Bounded(connector));
        Ok(Self {
            client,
            authorization,
        })
    }

    /// One exchange with Meilisearch: the status and the whole answer.
    async fn exchange(
        &self,
        method: http::Method,
        uri: Uri,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<(u16, bytes::Bytes), MeiliError> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::USER_AGENT, AGENT);
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let body = match body {
            Some((bytes, content_type)) => {
                request = request.header(header::CONTENT_TYPE, content_type);
                Full::new(bytes::Bytes::from(bytes))
            }
            None => Full::default(),
        };
        let request = request
            .body(body)
            .map_err(|e| MeiliError::Other(Box::new(e)))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Unreachable::from_chain(&e))?;
            let status = response.status().as_u16();
            // Not followed: Meilisearch itself never redirects, and a POST sent on after a
            // 301 or 302 becomes a GET. What stands in front of it is named instead.
            if response.status().is_redirection() {
                let to = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or("?");
                return Err(MeiliError::Other(Box::new(Unreachable(format!(
                    "answered {status}, a redirect to {to}: set MEILI_URL to where Meilisearch answers"
                )))));
            }
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Unreachable::from_chain(&e))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(MeiliError::Other(Box::new(Unreachable(format!(
                    "no answer within {} s",
                    REQUEST_TIMEOUT.as_secs()
                )))))
            })
    }

    async fn send<Q: serde::Serialize + Send + Sync, B>(
        &self,
        url: &str,
        method: &Method<Q, B>,
        body: Option<(Vec<u8>, &str)>,
        expected_status_code: u16,
    ) -> Result<String, MeiliError> {
        let url = format!("{url}{}", yaup::to_string(method.query())?);
        let uri = meili_uri(&url).map_err(|e| MeiliError::Other(e.into()))?;
        let verb = match method {
            Method::Get { .. } => http::Method::GET,
            Method::Delete { .. } => http::Method::DELETE,
            Method::Post { .. } => http::Method::POST,
            Method::Put { .. } => http::Method::PUT,
            Method::Patch { .. } => http::Method::PATCH,
        };
        let (status, body) = self.exchange(verb, uri, body).await?;
        let text = if body.is_empty() {
            "null".to_owned()
        } else {
            String::from_utf8_lossy(&body).into_owned()
        };
        checked(status, expected_status_code, &text, url)?;
        Ok(text)
    }

    /// A search: its body as sent, its answer as received (not copied into a `String`).
    async fn search(&self, uri: &Uri, body: Vec<u8>) -> Result<bytes::Bytes, MeiliError> {
        let (status, answer) = self
            .exchange(
                http::Method::POST,
                uri.clone(),
                Some((body, "application/json")),
            )
            .await?;
        if status != 200 {
            checked(
                status,
                200,
                &String::from_utf8_lossy(&answer),
                uri.to_string(),
            )?;
        }
        Ok(answer)
    }
}

/// `url` as a request target: an absolute `http` or `https` URL.
fn meili_uri(url: &str) -> anyhow::Result<Uri> {
    let uri: Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("not a URL ({e}): {url}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => anyhow::bail!("not an http:// or https:// URL: {url}"),
    }
}

/// The SDK's error for an answer whose status is not the one expected, as its own client
/// makes it.
fn checked(status: u16, expected: u16, text: &str, url: String) -> Result<(), MeiliError> {
    if status != expected {
        meilisearch_sdk::request::parse_response::<serde::de::IgnoredAny>(
            status, expected, text, url,
        )?;
    }
    Ok(())
}

/// What nongsan reads of Meilisearch's answer to a search. The SDK's own type keeps each
/// hit's document in a `#[serde(flatten)]` field, which serde reads through a buffered copy
/// of every hit (3–4% of nongsan's CPU per search in `perf`); here the hits are read
/// straight into documents, and any other key of a hit (`_geoDistance`) is skipped.
///
/// For the search endpoint the hits are kept as they came ([`RawValue`]), borrowed from the
/// answer, and only their id and title are read ([`HitKeys`]).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer<H> {
    hits: Vec<H>,
    total_hits: Option<u64>,
    estimated_total_hits: Option<u64>,
    facet_distribution: Option<HashMap<String, HashMap<String, u64>>>,
    processing_time_ms: u64,
}

impl<H> Answer<H> {
    /// The answer as the engine gives it, with `hits` made of its own.
    fn results<T>(self, q: &SearchQuery, asked: &[&str], hits: Vec<T>) -> SearchResults<T> {
        let mut facets: Facets = asked
            .iter()
            .map(|f| ((*f).to_owned(), Default::default()))
            .collect();
        for (facet, counts) in self.facet_distribution.unwrap_or_default() {
            facets.entry(facet).or_default().extend(counts);
        }
        SearchResults {
            hits,
            facets,
            total: self.total_hits.or(self.estimated_total_hits).unwrap_or(0),
            processing_time_ms: self.processing_time_ms,
            page: q.page,
            per_page: q.per_page,
            engine: EngineMode::External,
        }
    }
}

/// What is read of a hit copied through: its id, and its title to highlight (borrowed from
/// the answer unless JSON escapes were undone).
#[derive(Debug, serde::Deserialize)]
struct HitKeys<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    title: Cow<'a, str>,
}

#[async_trait::async_trait]
impl HttpClient for Http {
    async fn request<Q, B, O>(
        &self,
        url: &str,
        method: Method<Q, B>,
        expected_status_code: u16,
    ) -> Result<O, MeiliError>
    where
        Q: serde::Serialize + Send + Sync,
        B: serde::Serialize + Send + Sync,
        O: serde::de::DeserializeOwned + 'static + Send,
    {
        let body = match method.body() {
            Some(b) => Some((serde_json::to_vec(b)?, "application/json")),
            None => None,
        };
        let text = self.send(url, &method, body, expected_status_code).await?;
        Ok(serde_json::from_str(&text)?)
    }

    async fn stream_request<
        Q: serde::Serialize + Send + Sync,
        B: futures_io::AsyncRead + Send + Sync + 'static,
        O: serde::de::DeserializeOwned + 'static,
    >(
        &self,
        url: &str,
        method: Method<Q, B>,
        content_type: &str,
        expected_status_code: u16,
    ) -> Result<O, MeiliError> {
        // Read whole, in 64 KiB steps (nongsan streams nothing to Meilisearch today).
        let (method, body) = match method {
            Method::Post { query, body } => (Method::Post { query, body: () }, Some(body)),
            Method::Put { query, body } => (Method::Put { query, body: () }, Some(body)),
            Method::Patch { query, body } => (Method::Patch { query, body: () }, Some(body)),
            Method::Get { query } => (Method::Get { query }, None),
            Method::Delete { query } => (Method::Delete { query }, None),
        };
        let bytes = match body {
            Some(body) => {
                let mut body = Box::pin(body);
                let mut bytes = Vec::new();
                let mut chunk = vec![0_u8; 64 * 1024];
                loop {
                    let n = std::future::poll_fn(|cx| body.as_mut().poll_read(cx, &mut chunk))
                        .await
                        .map_err(|e| MeiliError::Other(Box::new(e)))?;
                    if n == 0 {
                        break;
                    }
                    bytes.extend_from_slice(&chunk[..n]);
                }
                Some((bytes, content_type))
            }
            None => None,
        };
        let text = self.send(url, &method, bytes, expected_status_code).await?;
        Ok(serde_json::from_str(&text)?)
    }

    fn is_tokio(&self) -> bool {
        true
    }
}

/// Meilisearch behind the search contract.
pub struct MeiliEngine {
    client: Client<Http>,
    /// The client's HTTP, for searches read without the SDK's answer type.
    http: Http,
    index_uid: String,
    /// `POST /indexes/{uid}/search`, parsed once (parsing it for every search was 3.7 % of
    /// nongsan's CPU per search through Meilisearch).
    search_url: Uri,
    prepared: Arc<OnceCell<()>>,
    /// Tasks sent by `upsert_queued`, not yet awaited.
    queued: std::sync::Mutex<Vec<TaskInfo>>,
    /// Between `rebuild_begin` and `rebuild_finish`: queued writes go to the new index.
    rebuilding: AtomicBool,
}

impl std::fmt::Debug for MeiliEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeiliEngine")
            .field("index", &self.index_uid)
            .finish_non_exhaustive()
    }
}

/// The index settings nongsan needs.
pub fn index_settings() -> Settings {
    let mut synonyms: HashMap<String, Vec<String>> = HashMap::new();
    for group in synonym_groups() {
        for term in group {
            let others: Vec<String> = group.iter().filter(|t| *t != term).cloned().collect();
            synonyms.entry(term.clone()).or_default().extend(others);
        }
    }
    Settings::new()
        .with_searchable_attributes([
            "title",
            "description",
            "seller_name",
            "category_name",
            "commune_name",
            "province_name",
        ])
        .with_filterable_attributes([
            "visible",
            "in_stock",
            "category",
            "category_parent",
            "province_code",
            "commune_code",
            "certifications",
            "ocop_stars",
            "price_vnd",
            "_geo",
        ])
        .with_sortable_attributes(["price_vnd", "created_at", "_geo"])
        .with_ranking_rules([
            "words",
            "typo",
            "proximity",
            "attribute",
            "sort",
            "exactness",
        ])
        .with_typo_tolerance(TypoToleranceSettings {
            enabled: Some(true),
            min_word_size_for_typos: Some(MinWordSizeForTypos {
                one_typo: Some(4),
                two_typos: Some(8),
            }),
            ..Default::default()
        })
        .with_synonyms(synonyms)
        .with_pagination(PaginationSetting {
            max_total_hits: MAX_HITS,
        })
}

/// Whether `index` exists with every setting of `wanted`. An index that cannot be read, or
/// whose settings the SDK cannot read, is taken as not having them.
async fn has_settings(index: &Index<Http>, wanted: &Settings) -> bool {
    let current = match index.get_settings().await {
        Ok(current) => current,
        Err(e) => {
            // A new index has none (404); anything else is said, since the settings are then
            // sent at every start.
            tracing::info!(index = %index.uid, error = %e, "reading the search index's settings; sending them");
            return false;
        }
    };
    match (serde_json::to_value(&current), serde_json::to_value(wanted)) {
        (Ok(current), Ok(wanted)) => holds(&current, &wanted, ""),
        _ => false,
    }
}

/// Whether `current` holds `wanted`, as a `PATCH` of `wanted` would leave it: each of its keys,
/// recursively; a key the patch does not name stays as it is, except in the synonyms, which a
/// patch replaces whole. A `null` (the SDK writes one for some unset fields, such as the
/// typo tolerance's `disableOnWords`) resets the setting to its default, so it holds only
/// where the index has none: `null`, or an empty list or object. Lists are replaced whole too,
/// and are sets, in any order, except where the order ranks: the searchable attributes and
/// the ranking rules (Meilisearch gives the sortable attributes back sorted).
fn holds(current: &serde_json::Value, wanted: &serde_json::Value, key: &str) -> bool {
    use serde_json::Value;
    match (current, wanted) {
        (Value::Object(current), Value::Object(wanted)) => {
            (key != "synonyms" || current.len() == wanted.len())
                && wanted
                    .iter()
                    .all(|(k, w)| current.get(k).is_some_and(|c| holds(c, w, k)))
        }
        (current, Value::Null) => match current {
            Value::Null => true,
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        },
        (Value::Array(current), Value::Array(wanted))
            if !matches!(key, "searchableAttributes" | "rankingRules") =>
        {
            current.len() == wanted.len()
                && wanted
                    .iter()
                    .all(|w| current.iter().any(|c| holds(c, w, "")))
        }
        (current, wanted) => current == wanted,
    }
}

fn quoted(v: &str) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The Meilisearch filter expression of a query.
#[expect(
    clippy::float_arithmetic,
    reason = "the radius is given in km and Meilisearch wants metres"
)]
pub fn filter_expression(q: &SearchQuery) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !q.include_hidden {
        parts.push("visible = true".to_owned());
    }
    if q.in_stock_only {
        parts.push("in_stock = true".to_owned());
    }
    if let Some(c) = &q.category {
        parts.push(format!(
            "(category = {0} OR category_parent = {0})",
            quoted(c)
        ));
    }
    if let Some(p) = &q.province {
        parts.push(format!("province_code = {}", quoted(p)));
    }
    if let Some(c) = &q.commune {
        parts.push(format!("commune_code = {}", quoted(c)));
    }
    if let Some(c) = &q.certification {
        parts.push(format!("certifications = {}", quoted(c)));
    }
    if let Some(s) = q.min_ocop {
        parts.push(format!("ocop_stars >= {s}"));
    }
    if let Some(p) = q.price_min {
        parts.push(format!("price_vnd >= {p}"));
    }
    if let Some(p) = q.price_max {
        parts.push(format!("price_vnd <= {p}"));
    }
    if let Some((point, Some(radius))) = q.near {
        parts.push(format!(
            "_geoRadius({}, {}, {})",
            point.lat,
            point.lng,
            (radius * 1000.0).round()
        ));
    }
    parts.join(" AND ")
}

/// The Meilisearch sort of a query.
pub fn sort_expression(q: &SearchQuery) -> Vec<String> {
    match (q.sort, q.near) {
        (Sort::PriceAsc, _) => vec!["price_vnd:asc".to_owned()],
        (Sort::PriceDesc, _) => vec!["price_vnd:desc".to_owned()],
        (Sort::Newest, _) => vec!["created_at:desc".to_owned()],
        (Sort::Distance, Some((p, _))) => vec![format!("_geoPoint({}, {}):asc", p.lat, p.lng)],
        _ => Vec::new(),
    }
}

/// The facets a query asks for, of those nongsan knows: each costs Meilisearch work.
fn asked_facets(q: &SearchQuery) -> Vec<&str> {
    q.facets
        .iter()
        .map(String::as_str)
        .filter(|f| FACETS.contains(f))
        .collect()
}

/// The Meilisearch search nongsan sends for `q`.
fn request<'a, H: HttpClient>(
    index: &'a Index<H>,
    q: &'a SearchQuery,
    filter: &'a str,
    sort: &'a [&'a str],
    asked: &'a [&'a str],
    retrieve: Option<&'a [&'a str]>,
) -> meilisearch_sdk::search::SearchQuery<'a, H> {
    let mut search = index.search();
    if let Some(fields) = retrieve {
        search.with_attributes_to_retrieve(Selectors::Some(fields));
    }
    if !asked.is_empty() {
        search.with_facets(Selectors::Some(asked));
    }
    search
        .with_query(&q.q)
        .with_page(q.page)
        .with_hits_per_page(q.per_page);
    if !filter.is_empty() {
        search.with_filter(filter);
    }
    if !sort.is_empty() {
        search.with_sort(sort);
    }
    search
}

/// The fields the search endpoint asks Meilisearch for, for `q`: those a hit copied through
/// carries ([`RAW_FIELDS`]), or, for a search near a point, every field (Meilisearch adds
/// `_geoDistance` to hits sorted by distance, which would be copied into the answer; those
/// hits are read into documents instead).
fn page_fields(q: &SearchQuery) -> Option<&'static [&'static str]> {
    q.near.is_none().then_some(&RAW_FIELDS[..])
}

/// The body of the `POST /indexes/{uid}/search` that the search endpoint sends for `q`: what
/// the benchmark sends Meilisearch directly to compare `/v1/search` with it.
pub fn request_body(q: &SearchQuery) -> anyhow::Result<serde_json::Value> {
    let client = Client::new_with_client("http://127.0.0.1:7700", None::<String>, Http::new(None)?);
    let index = client.index("listings");
    let (filter, sort, asked) = (filter_expression(q), sort_expression(q), asked_facets(q));
    let sort_refs: Vec<&str> = sort.iter().map(String::as_str).collect();
    Ok(serde_json::to_value(request(
        &index,
        q,
        &filter,
        &sort_refs,
        &asked,
        page_fields(q),
    ))?)
}

/// Meilisearch's answer to a search, read. It is checked as UTF-8 once, whole, with SIMD:
/// `from_slice` checks each string on its own, and `std`'s check of Vietnamese text was a
/// twentieth of the CPU per search.
fn parse<'a, H: serde::Deserialize<'a>>(answer: &'a [u8]) -> Result<Answer<H>, EngineError> {
    let answer = simdutf8::compat::from_utf8(answer).map_err(|e| {
        EngineError::Other(anyhow::anyhow!("meilisearch answered with bad UTF-8: {e}"))
    })?;
    serde_json::from_str(answer).map_err(|e| classify(MeiliError::ParseError(e)))
}

fn classify(e: MeiliError) -> EngineError {
    match e {
        MeiliError::Other(ref inner) if inner.is::<Unreachable>() => {
            EngineError::Unavailable(e.to_string())
        }
        MeiliError::Timeout => EngineError::Unavailable(e.to_string()),
        MeiliError::MeilisearchCommunication(_) => EngineError::Unavailable(e.to_string()),
        other => EngineError::Other(anyhow::anyhow!("meilisearch: {other}")),
    }
}

impl MeiliEngine {
    /// A client for the index `index_uid` at `url`.
    pub fn new(url: &str, key: Option<String>, index_uid: &str) -> anyhow::Result<Self> {
        let http = Http::new(key.clone())?;
        let url = url.trim_end_matches('/');
        let search_url = meili_uri(&format!("{url}/indexes/{index_uid}/search"))
            .map_err(|e| anyhow::anyhow!("MEILI_URL: {e}"))?;
        let client = Client::new_with_client(url, key, http.clone());
        Ok(Self {
            client,
            http,
            index_uid: index_uid.to_owned(),
            search_url,
            prepared: Arc::new(OnceCell::new()),
            queued: std::sync::Mutex::new(Vec::new()),
            rebuilding: AtomicBool::new(false),
        })
    }

    /// Meilisearch's answer to the search for `q`, as it came: the facets `asked`, the fields
    /// `retrieve` (all when `None`).
    async fn answer(
        &self,
        q: &SearchQuery,
        asked: &[&str],
        retrieve: Option<&[&str]>,
    ) -> Result<bytes::Bytes, EngineError> {
        let answered = async {
            self.prepare().await?;
            let index = self.client.index(&self.index_uid);
            let (filter, sort) = (filter_expression(q), sort_expression(q));
            let sort_refs: Vec<&str> = sort.iter().map(String::as_str).collect();
            let search = request(&index, q, &filter, &sort_refs, asked, retrieve);
            let body = serde_json::to_vec(&search)
                .map_err(|e| EngineError::Other(anyhow::anyhow!("meilisearch search body: {e}")))?;
            self.http
                .search(&self.search_url, body)
                .await
                .map_err(classify)
        };
        tokio::time::timeout(SEARCH_WAIT, answered)
            .await
            .unwrap_or_else(|_| {
                Err(EngineError::Unavailable(format!(
                    "meilisearch did not answer the search within {} s",
                    SEARCH_WAIT.as_secs()
                )))
            })
    }

    /// The index a rebuild fills before it takes the serving one's place.
    fn rebuild_uid(&self) -> String {
        format!("{}_rebuild", self.index_uid)
    }

    /// Waits until `task` has finished, succeeded or not.
    async fn finished(&self, task: TaskInfo) -> Result<Task, EngineError> {
        task.wait_for_completion(
            &self.client,
            Some(Duration::from_millis(50)),
            Some(TASK_TIMEOUT),
        )
        .await
        .map_err(classify)
    }

    async fn wait(&self, task: TaskInfo) -> Result<(), EngineError> {
        match self.finished(task).await? {
            Task::Succeeded { .. } => Ok(()),
            Task::Failed { content } => Err(EngineError::Other(anyhow::anyhow!(
                "meilisearch task failed: {}",
                content.error
            ))),
            _ => Err(EngineError::Unavailable(
                "meilisearch task did not finish".to_owned(),
            )),
        }
    }

    /// Applies the index settings once per process, unless the index has them already.
    ///
    /// Meilisearch works through every document again for a settings update, even one that
    /// changes nothing: 5.3 s for 100,000 listings, at every start of the listing service
    /// and at the start of every reindex, with the index's writes queued behind it
    /// (BENCHMARKS.md, 2026-12-06).
    async fn prepare(&self) -> Result<(), EngineError> {
        self.prepared
            .get_or_try_init(|| async {
                let wanted = index_settings();
                let index = self.client.index(&self.index_uid);
                if has_settings(&index, &wanted).await {
                    return Ok(());
                }
                let task = index.set_settings(&wanted).await.map_err(classify)?;
                self.wait(task).await
            })
            .await
            .map(|_| ())
    }
}

#[async_trait::async_trait]
impl SearchEngine for MeiliEngine {
    fn mode(&self) -> EngineMode {
        EngineMode::External
    }

    async fn upsert(&self, docs: &[SearchDoc]) -> Result<(), EngineError> {
        self.prepare().await?;
        let task = self
            .client
            .index(&self.index_uid)
            .add_or_replace(docs, Some("id"))
            .await
            .map_err(classify)?;
        self.wait(task).await
    }

    async fn upsert_bulk(&self, docs: &[SearchDoc]) -> Result<(), EngineError> {
        self.upsert_queued(docs).await?;
        self.settle().await
    }

    async fn upsert_queued(&self, docs: &[SearchDoc]) -> Result<(), EngineError> {
        self.prepare().await?;
        // Batches of 10,000, all sent before any is awaited: Meilisearch indexes them in
        // turn (several queued additions in one batch) while the next are on their way.
        let index = self
            .client
            .index(if self.rebuilding.load(Ordering::SeqCst) {
                self.rebuild_uid()
            } else {
                self.index_uid.clone()
            });
        for batch in docs.chunks(BULK_BATCH) {
            let task = index
                .add_or_replace(batch, Some("id"))
                .await
                .map_err(classify)?;
            self.queued
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(task);
        }
        Ok(())
    }

    async fn settle(&self) -> Result<(), EngineError> {
        let tasks = std::mem::take(
            &mut *self
                .queued
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in tasks {
            self.wait(task).await?;
        }
        Ok(())
    }

    /// The rebuild fills an index of its own (`<index>_rebuild`, with the same settings);
    /// searches are answered from the serving index until [`SearchEngine::rebuild_finish`]
    /// swaps the two.
    async fn rebuild_begin(&self) -> Result<(), EngineError> {
        // The swap needs the serving index to exist.
        self.prepare().await?;
        let fresh = self.rebuild_uid();
        // What a rebuild stopped half-way left behind; the task fails when there is none.
        let task = self.client.index(&fresh).delete().await.map_err(classify)?;
        self.finished(task).await?;
        let task = self
            .client
            .index(&fresh)
            .set_settings(&index_settings())
            .await
            .map_err(classify)?;
        self.wait(task).await?;
        self.rebuilding.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn rebuild_finish(&self) -> Result<(), EngineError> {
        self.settle().await?;
        let fresh = self.rebuild_uid();
        if self.rebuilding.swap(false, Ordering::SeqCst) {
            let task = self
                .client
                .swap_indexes([&SwapIndexes {
                    indexes: (self.index_uid.clone(), fresh.clone()),
                    rename: None,
                }])
                .await
                .map_err(classify)?;
            self.wait(task).await?;
            // The old documents, under the rebuild's name since the swap.
            let task = self.client.index(&fresh).delete().await.map_err(classify)?;
            self.wait(task).await?;
        }
        Ok(())
    }

    async fn clear(&self) -> Result<(), EngineError> {
        self.prepare().await?;
        let task = self
            .client
            .index(&self.index_uid)
            .delete_all_documents()
            .await
            .map_err(classify)?;
        self.wait(task).await
    }

    async fn count(&self) -> Result<u64, EngineError> {
        // A Meilisearch that has never held the index makes it here, with its settings: an
        // empty index, not a missing one, so readiness and the start-up backfill can go on.
        self.prepare().await?;
        let stats = self
            .client
            .index(&self.index_uid)
            .get_stats()
            .await
            .map_err(classify)?;
        Ok(u64::try_from(stats.number_of_documents).unwrap_or(0))
    }

    async fn holding(&self, ids: &[String]) -> Result<u64, EngineError> {
        self.prepare().await?;
        let index = self.client.index(&self.index_uid);
        let mut held = 0;
        // By id, counted and not read: 8 ms for 10,000 ids (BENCHMARKS.md, 2026-12-06).
        for chunk in ids.chunks(BULK_BATCH) {
            let found = DocumentsQuery::new(&index)
                .with_ids(chunk.iter().map(String::as_str))
                .with_fields(["id"])
                .with_limit(0)
                .execute::<serde::de::IgnoredAny>()
                .await
                .map_err(classify)?;
            held += u64::from(found.total);
        }
        Ok(held)
    }

    async fn search(&self, q: &SearchQuery) -> Result<SearchResults, EngineError> {
        let asked = asked_facets(q);
        let answer = self.answer(q, &asked, None).await?;
        let mut res: Answer<SearchDoc> = parse(&answer)?;
        // The titles are highlighted here, by the embedded engine's rule, and not by
        // Meilisearch: asked to highlight, it returns with each hit a second, formatted copy
        // of every attribute, which would be read for one field.
        let expanded = expand_query(&q.q);
        let hits = std::mem::take(&mut res.hits)
            .into_iter()
            .map(|doc| Hit {
                title_highlighted: highlight(&doc.title, &expanded),
                distance_km: q.near.and_then(|(p, _)| doc.geo.map(|g| distance_km(p, g))),
                doc,
            })
            .collect();
        Ok(res.results(q, &asked, hits))
    }

    async fn search_page(&self, q: &SearchQuery) -> Result<SearchResults<PageHit>, EngineError> {
        let Some(fields) = page_fields(q) else {
            return Ok(self.search(q).await?.map_hits(PageHit::typed));
        };
        let asked = asked_facets(q);
        let answer = self.answer(q, &asked, Some(fields)).await?;
        let res: Answer<&RawValue> = parse(&answer)?;
        let expanded = expand_query(&q.q);
        let mut hits = Vec::with_capacity(res.hits.len());
        for raw in &res.hits {
            let keys: HitKeys<'_> =
                serde_json::from_str(raw.get()).map_err(|e| classify(MeiliError::ParseError(e)))?;
            hits.push(PageHit::Raw(RawHit {
                id: keys.id.into_owned(),
                fields: (*raw).to_owned(),
                title_highlighted: highlight(&keys.title, &expanded),
                distance_km: None,
                available: "0".to_owned(),
                in_stock: false,
            }));
        }
        Ok(res.results(q, &asked, hits))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{holds, meili_uri};

    #[test]
    fn a_meilisearch_url_must_be_absolute_http_or_https() {
        for good in [
            "http://127.0.0.1:7700/indexes/listings/search",
            "https://search.example.vn/indexes/listings/documents?primaryKey=id",
        ] {
            assert_eq!(meili_uri(good).unwrap().to_string(), good);
        }
        for (bad, says) in [
            ("127.0.0.1:7700/indexes/listings/search", "not a URL"),
            ("localhost:7700", "not an http:// or https:// URL"),
            (
                "ftp://127.0.0.1:7700/indexes",
                "not an http:// or https:// URL",
            ),
            ("http://127.0.0.1:7700/a b", "not a URL"),
        ] {
            let e = meili_uri(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn settings_hold_as_sets_except_where_the_order_ranks() {
        let current = json!({
            "sortableAttributes": ["_geo", "created_at", "price_vnd"],
            "rankingRules": ["words", "typo"],
            "typoTolerance": { "enabled": true, "disableOnWords": [] },
            "stopWords": [],
        });
        // Sortable attributes in another order; a key left unset; one reset to its default.
        let wanted = json!({
            "sortableAttributes": ["price_vnd", "created_at", "_geo"],
            "rankingRules": ["words", "typo"],
            "typoTolerance": { "enabled": true, "disableOnWords": null },
        });
        assert!(holds(&current, &wanted, ""));
        // A null resets: words set by hand are a difference.
        assert!(
            !holds(
                &json!({ "typoTolerance": { "enabled": true, "disableOnWords": ["xoài"] } }),
                &json!({ "typoTolerance": { "enabled": true, "disableOnWords": null } }),
                ""
            ),
            "a null resets the setting"
        );
        let reordered = json!({ "rankingRules": ["typo", "words"] });
        assert!(
            !holds(&current, &reordered, ""),
            "the ranking rules' order counts"
        );
        let changed = json!({ "typoTolerance": { "enabled": false } });
        assert!(!holds(&current, &changed, ""));
        let missing = json!({ "synonyms": { "bắp": ["ngô"] } });
        assert!(!holds(&current, &missing, ""), "a setting the index lacks");
        // Synonyms are replaced whole: one the index has and nongsan no longer wants counts.
        let synonyms = json!({ "synonyms": { "bắp": ["ngô"], "ngô": ["bắp"], "khóm": ["dứa"] } });
        let same = json!({ "synonyms": { "khóm": ["dứa"], "ngô": ["bắp"], "bắp": ["ngô"] } });
        let fewer_synonyms = json!({ "synonyms": { "bắp": ["ngô"], "ngô": ["bắp"] } });
        assert!(holds(&synonyms, &same, ""));
        assert!(
            !holds(&synonyms, &fewer_synonyms, ""),
            "a synonym no longer wanted"
        );
        let fewer = json!({ "sortableAttributes": ["price_vnd", "_geo"] });
        assert!(
            !holds(&current, &fewer, ""),
            "a list is the same set, not a part of it"
        );
    }
}
