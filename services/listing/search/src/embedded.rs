//! The embedded engine: a tantivy index in the data folder, used when Meilisearch is not
//! configured. Text is folded (NFC, marks removed, đ → d) before indexing; an exact-diacritics
//! copy of the title lets "bơ" rank above "bò". Filters are term and range queries; the
//! radius, facets, sorting and paging are computed over the matching documents.

use std::{collections::BTreeMap, ops::Bound, path::Path, sync::Mutex, time::Instant};

use tantivy::{
    Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term,
    collector::TopDocs,
    directory::MmapDirectory,
    query::{
        AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery,
    },
    schema::{Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, Value},
};
use unicode_normalization::UnicodeNormalization;

use crate::{
    EngineError, EngineMode, FACETS, Facets, Hit, SearchDoc, SearchEngine, SearchQuery,
    SearchResults, Sort, distance_km, expand_query, fold, highlight, typo_budget,
};

/// Most documents one search looks at.
const MAX_MATCHES: usize = 100_000;

struct Fields {
    id: Field,
    title: Field,
    title_exact: Field,
    body: Field,
    category: Field,
    province: Field,
    commune: Field,
    certification: Field,
    ocop: Field,
    price: Field,
    in_stock: Field,
    visible: Field,
    doc: Field,
}

/// The tantivy index.
pub struct EmbeddedEngine {
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    f: Fields,
}

impl std::fmt::Debug for EmbeddedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedEngine")
    }
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let f = Fields {
        id: b.add_text_field("id", STRING | STORED),
        title: b.add_text_field("title", TEXT),
        title_exact: b.add_text_field("title_exact", TEXT),
        body: b.add_text_field("body", TEXT),
        category: b.add_text_field("category", STRING),
        province: b.add_text_field("province", STRING),
        commune: b.add_text_field("commune", STRING),
        certification: b.add_text_field("certification", STRING),
        ocop: b.add_u64_field("ocop", INDEXED),
        price: b.add_i64_field("price", INDEXED),
        in_stock: b.add_u64_field("in_stock", INDEXED),
        visible: b.add_u64_field("visible", INDEXED),
        doc: b.add_text_field("doc", STORED),
    };
    (b.build(), f)
}

fn exact(text: &str) -> String {
    text.nfc().collect::<String>().to_lowercase()
}

fn other(e: impl std::fmt::Display) -> EngineError {
    EngineError::Other(anyhow::anyhow!("embedded search index: {e}"))
}

impl EmbeddedEngine {
    /// Opens (or creates) the index in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (schema, f) = schema();
        let index = Index::open_or_create(MmapDirectory::open(dir)?, schema)?;
        let writer = index.writer(20_000_000)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            reader,
            writer: Mutex::new(writer),
            f,
        })
    }

    fn to_document(&self, d: &SearchDoc) -> Result<TantivyDocument, EngineError> {
        let f = &self.f;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, &d.id);
        doc.add_text(f.title, fold(&d.title));
        doc.add_text(f.title_exact, exact(&d.title));
        let body = [
            d.description.as_str(),
            &d.seller_name,
            &d.category_name,
            &d.commune_name,
            &d.province_name,
        ];
        doc.add_text(f.body, fold(&body.join(" ")));
        doc.add_text(f.category, &d.category);
        if let Some(parent) = &d.category_parent {
            doc.add_text(f.category, parent);
        }
        doc.add_text(f.province, &d.province_code);
        doc.add_text(f.commune, &d.commune_code);
        for c in &d.certifications {
            doc.add_text(f.certification, c);
        }
        doc.add_u64(
            f.ocop,
            d.ocop_stars
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0),
        );
        doc.add_i64(f.price, d.price_vnd);
        doc.add_u64(f.in_stock, u64::from(d.in_stock));
        doc.add_u64(f.visible, u64::from(d.visible));
        doc.add_text(f.doc, serde_json::to_string(d).map_err(other)?);
        Ok(doc)
    }

    fn text_query(&self, q: &str) -> Option<Box<dyn Query>> {
        let expanded = expand_query(q);
        if expanded.alternatives.iter().all(Vec::is_empty) {
            return None;
        }
        let mut alternatives: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for alt in expanded.alternatives.iter().filter(|a| !a.is_empty()) {
            let words: Vec<(Occur, Box<dyn Query>)> = alt
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let prefix = expanded.last_is_prefix && i + 1 == alt.len();
                    let d = typo_budget(w);
                    let fuzzy = |field: Field| -> Box<dyn Query> {
                        let term = Term::from_field_text(field, w);
                        if prefix {
                            Box::new(FuzzyTermQuery::new_prefix(term, d, true))
                        } else {
                            Box::new(FuzzyTermQuery::new(term, d, true))
                        }
                    };
                    // The title counts three times as much as the rest.
                    let either: Box<dyn Query> = Box::new(BooleanQuery::new(vec![
                        (
                            Occur::Should,
                            Box::new(BoostQuery::new(fuzzy(self.f.title), 3.0)) as Box<dyn Query>,
                        ),
                        (Occur::Should, fuzzy(self.f.body)),
                    ]));
                    (Occur::Must, either)
                })
                .collect();
            alternatives.push((Occur::Should, Box::new(BooleanQuery::new(words))));
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            vec![(Occur::Must, Box::new(BooleanQuery::new(alternatives)))];
        // Words typed with their diacritics rank the titles that have them exactly first.
        for w in exact(q)
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let term = Term::from_field_text(self.f.title_exact, w);
            clauses.push((
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                    5.0,
                )),
            ));
        }
        Some(Box::new(BooleanQuery::new(clauses)))
    }

    fn filters(&self, q: &SearchQuery) -> Vec<(Occur, Box<dyn Query>)> {
        let f = &self.f;
        let term = |field: Field, v: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, v),
                IndexRecordOption::Basic,
            ))
        };
        let flag = |field: Field| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_u64(field, 1),
                IndexRecordOption::Basic,
            ))
        };
        let mut out: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if !q.include_hidden {
            out.push((Occur::Must, flag(f.visible)));
        }
        if q.in_stock_only {
            out.push((Occur::Must, flag(f.in_stock)));
        }
        for (field, v) in [
            (f.category, &q.category),
            (f.province, &q.province),
            (f.commune, &q.commune),
            (f.certification, &q.certification),
        ] {
            if let Some(v) = v {
                out.push((Occur::Must, term(field, v)));
            }
        }
        if let Some(stars) = q.min_ocop {
            let lo = Term::from_field_u64(f.ocop, u64::try_from(stars).unwrap_or(0));
            out.push((
                Occur::Must,
                Box::new(RangeQuery::new(Bound::Included(lo), Bound::Unbounded)),
            ));
        }
        if q.price_min.is_some() || q.price_max.is_some() {
            let lo = q.price_min.map_or(Bound::Unbounded, |v| {
                Bound::Included(Term::from_field_i64(f.price, v))
            });
            let hi = q.price_max.map_or(Bound::Unbounded, |v| {
                Bound::Included(Term::from_field_i64(f.price, v))
            });
            out.push((Occur::Must, Box::new(RangeQuery::new(lo, hi))));
        }
        out
    }

    fn run(&self, q: &SearchQuery) -> Result<SearchResults, EngineError> {
        let start = Instant::now();
        let mut clauses = self.filters(q);
        match self.text_query(&q.q) {
            Some(text) => clauses.push((Occur::Must, text)),
            None => clauses.push((Occur::Must, Box::new(AllQuery))),
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(MAX_MATCHES).order_by_score())
            .map_err(other)?;
        let mut matches: Vec<(f32, SearchDoc, Option<f64>)> = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let stored: TantivyDocument = searcher.doc(addr).map_err(other)?;
            let json = stored
                .get_first(self.f.doc)
                .and_then(|v| v.as_str())
                .unwrap_or("{}");
            let doc: SearchDoc = serde_json::from_str(json).map_err(other)?;
            let distance = q.near.and_then(|(p, _)| doc.geo.map(|g| distance_km(p, g)));
            if let Some((_, Some(radius))) = q.near
                && distance.is_none_or(|d| d > radius)
            {
                continue;
            }
            matches.push((score, doc, distance));
        }
        let mut facets: Facets = FACETS
            .iter()
            .map(|f| ((*f).to_owned(), BTreeMap::new()))
            .collect();
        for (_, d, _) in &matches {
            let mut bump = |facet: &str, v: String| {
                *facets
                    .entry(facet.to_owned())
                    .or_default()
                    .entry(v)
                    .or_insert(0) += 1
            };
            bump("category", d.category.clone());
            bump("province_code", d.province_code.clone());
            for c in &d.certifications {
                bump("certifications", c.clone());
            }
            if let Some(s) = d.ocop_stars {
                bump("ocop_stars", s.to_string());
            }
        }
        let by_id = |a: &SearchDoc, b: &SearchDoc| a.id.cmp(&b.id);
        match q.sort {
            Sort::Relevance => {
                matches.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| by_id(&a.1, &b.1)))
            }
            Sort::PriceAsc => matches.sort_by(|a, b| {
                a.1.price_vnd
                    .cmp(&b.1.price_vnd)
                    .then_with(|| by_id(&a.1, &b.1))
            }),
            Sort::PriceDesc => matches.sort_by(|a, b| {
                b.1.price_vnd
                    .cmp(&a.1.price_vnd)
                    .then_with(|| by_id(&a.1, &b.1))
            }),
            Sort::Newest => matches.sort_by(|a, b| {
                b.1.created_at
                    .cmp(&a.1.created_at)
                    .then_with(|| b.1.id.cmp(&a.1.id))
            }),
            Sort::Distance => matches.sort_by(|a, b| {
                a.2.unwrap_or(f64::MAX)
                    .total_cmp(&b.2.unwrap_or(f64::MAX))
                    .then_with(|| by_id(&a.1, &b.1))
            }),
        }
        let total = matches.len();
        let expanded = expand_query(&q.q);
        let hits = matches
            .into_iter()
            .skip((q.page - 1).saturating_mul(q.per_page))
            .take(q.per_page)
            .map(|(_, doc, distance_km)| Hit {
                title_highlighted: highlight(&doc.title, &expanded),
                doc,
                distance_km,
            })
            .collect();
        Ok(SearchResults {
            hits,
            facets,
            total: u64::try_from(total).unwrap_or(u64::MAX),
            processing_time_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            page: q.page,
            per_page: q.per_page,
            engine: EngineMode::Embedded,
        })
    }
}

#[async_trait::async_trait]
impl SearchEngine for EmbeddedEngine {
    fn mode(&self) -> EngineMode {
        EngineMode::Embedded
    }

    async fn upsert(&self, docs: &[SearchDoc]) -> Result<(), EngineError> {
        let docs: Vec<TantivyDocument> = docs
            .iter()
            .map(|d| self.to_document(d))
            .collect::<Result<_, _>>()?;
        let ids: Vec<Term> = docs
            .iter()
            .filter_map(|d| {
                d.get_first(self.f.id)
                    .and_then(|v| v.as_str())
                    .map(|id| Term::from_field_text(self.f.id, id))
            })
            .collect();
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for (id, doc) in ids.into_iter().zip(docs) {
            writer.delete_term(id);
            writer.add_document(doc).map_err(other)?;
        }
        writer.commit().map_err(other)?;
        drop(writer);
        self.reader.reload().map_err(other)?;
        Ok(())
    }

    async fn clear(&self) -> Result<(), EngineError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        writer.delete_all_documents().map_err(other)?;
        writer.commit().map_err(other)?;
        drop(writer);
        self.reader.reload().map_err(other)?;
        Ok(())
    }

    async fn count(&self) -> Result<u64, EngineError> {
        Ok(self.reader.searcher().num_docs())
    }

    async fn search(&self, q: &SearchQuery) -> Result<SearchResults, EngineError> {
        self.run(q)
    }
}
