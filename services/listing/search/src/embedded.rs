//! The embedded engine: a tantivy index in the data folder, used when Meilisearch is not
//! configured. Text is folded (NFC, marks removed, đ → d) before indexing; an exact-diacritics
//! copy of the title lets "bơ" rank above "bò".
//!
//! Ranking follows rules a buyer understands, as Meilisearch's do: more of the query words
//! first (a listing with the first k words before one with fewer; any listing with the
//! first word matches); then fewer typos; then the
//! words as typed close together; then words in the title before words only in the rest;
//! then words typed with the diacritics the title has; then the requested sort. Within a
//! bucket of words, each word scores by the best tier it reaches, so the scores order the
//! hits by those rules in turn (see [`tier`]).
//!
//! A search is evaluated a term at a time, segment by segment, without tantivy's query
//! scorers: each word's terms' postings are read block by block into the best score the word
//! earns per document, later words only narrow the first word's documents, and the filters
//! are bitsets of their terms' postings, read once per segment and kept (the least stars
//! too: the union of the star counts from there up). A word's documents are read once per
//! search, though the buckets of fewer words ask for the first words again. One pass over the
//! matches then reads only columnar (fast) fields: it counts them, counts the facets of many
//! values (category, province) when the matches are few, applies the radius on indexed
//! coordinates, and keeps the best `page × per_page` by the sort key; the facets of few
//! values (stars, certifications), and those of many when the matches are many (a
//! thirty-second of the segment or more), are then counted as each value's documents in
//! common with those counted. Stored documents are
//! loaded for the hits returned only. The cost still grows with the postings of the words'
//! terms (every match is counted for the total and the facets), but at a few nanoseconds a
//! posting rather than a scorer's call per document.
//!
//! What a word reaches in a segment (its documents, each with the score it earns) is kept
//! between searches, about 32 MiB at most ([`WordCache`]): a word searched again costs
//! neither its typos' scan of the term dictionary nor its postings. Full, the cache keeps the
//! words searched again since it was last full.
//!
//! Words are indexed without positions. The proximity rule reads instead the pairs of words
//! indexed with each document (each word with each of the next three, per field: see
//! [`near_pairs`]), as postings like any word: a phrase query over positions cost a fifth of
//! a search's time.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BinaryHeap, HashMap},
    path::Path,
    sync::{Arc, Mutex},
    time::Instant,
};

use tantivy::{
    DocAddress, DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, Searcher,
    SegmentOrdinal, SegmentReader, TantivyDocument, Term,
    collector::Count,
    columnar::{Column, StrColumn},
    directory::MmapDirectory,
    index::SegmentId,
    query::TermSetQuery,
    schema::{
        FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
        TextOptions, Value,
    },
};
use unicode_normalization::UnicodeNormalization;

use crate::{
    EngineError, EngineMode, FACETS, Facets, Geo, Hit, SearchDoc, SearchEngine, SearchQuery,
    SearchResults, Sort, distance_km, expand_query, highlight, text::edit_distance, typo_budget,
};

/// The index's layout version: a folder of its own, so an index of an older layout is left
/// alone and this one is built from PostgreSQL at start.
const LAYOUT: &str = "v3";

/// Memory the index writer uses by default before it writes a segment: 64 MiB, which with
/// the serving caches fits a 2 GB container.
pub const DEFAULT_WRITER_HEAP: usize = 64 * 1024 * 1024;

struct Fields {
    id: Field,
    title: Field,
    title_exact: Field,
    body: Field,
    /// The words near each other (see [`near_pairs`]), for the proximity rule.
    pairs: Field,
    category: Field,
    province: Field,
    commune: Field,
    certification: Field,
    ocop: Field,
    price: Field,
    in_stock: Field,
    visible: Field,
    doc: Field,
    category_leaf: Field,
    created: Field,
    lat: Field,
    lng: Field,
}

/// The terms a query word may be, by field, word and whether it is a prefix: worked out once
/// per search, though the words' buckets ask again.
type TermCache = HashMap<(Field, String, bool), Vec<Vec<Term>>>;

/// A query word as it is evaluated: the word, whether it is a prefix, whether it earns a
/// score (see [`MAX_WORDS`]).
type WordKey = (String, bool, bool);

/// The documents a word reaches in a segment, with the score it earns in each.
type Reach = Arc<Vec<(DocId, Score)>>;

/// The reach of each word of a search by segment: read once per search, though the words'
/// buckets ask again (the first word is in every bucket), or taken from the [`WordCache`].
type WordHits = HashMap<(SegmentOrdinal, WordKey), Reach>;

/// The reach of the words searched lately, by segment: a segment never changes (deletions
/// are read apart), so a word's documents and scores in it hold until it is merged away.
/// Searches repeat words (a catalog's common ones above all); a cached word costs neither
/// the scan of the term dictionary for its typos and completions nor its postings.
///
/// Full, it keeps the words searched again since the last time it was full and lets the
/// others go (a second chance, as an operating system's page clock gives): a run of words
/// searched once each, made up or many short prefixes one after another, cannot empty it
/// of the catalog's common words. When every word kept was searched again, a new one is not
/// kept; and a full cache is gone over no more often than every [`SWEEP_EVERY`] words
/// offered, so that the pass over every word kept, under the lock every search takes, stays
/// rare.
#[derive(Default)]
struct WordCache {
    reach: HashMap<(SegmentId, WordKey), Cached>,
    bytes: usize,
    /// Words offered since the last pass.
    offered: usize,
}

/// Words offered to a full cache between two passes over it.
const SWEEP_EVERY: usize = 64;

/// A word's reach in the cache: its size as counted, and whether a search read it since the
/// cache was last full.
struct Cached {
    reach: Reach,
    size: usize,
    used: bool,
}

/// The most the word cache holds: 32 MiB (a word in every one of 100,000 listings takes
/// 800 KB).
const WORD_CACHE_BYTES: usize = 32 * 1024 * 1024;

impl WordCache {
    /// The reach of `key` in `segment`, when kept; marked as read.
    fn get(&mut self, segment: SegmentId, key: &WordKey) -> Option<Reach> {
        let cached = self.reach.get_mut(&(segment, key.clone()))?;
        cached.used = true;
        Some(cached.reach.clone())
    }

    /// Keeps `reach`, counted with its key and what the map and the `Arc` take (about 200
    /// bytes): an empty reach costs that too. Words longer than a syllable is likely to be
    /// (32 bytes) are not kept, so that made-up words cannot crowd out the catalog's.
    fn keep(&mut self, segment: SegmentId, key: WordKey, reach: Reach) {
        let size = reach.len() * std::mem::size_of::<(DocId, Score)>() + key.0.len() + 200;
        if size > WORD_CACHE_BYTES / 8 || key.0.len() > 32 {
            return;
        }
        let at = (segment, key);
        // Kept meanwhile (two searches missed it at once): the same reach again.
        if self.reach.contains_key(&at) {
            return;
        }
        self.offered = self.offered.saturating_add(1);
        if self.bytes + size > WORD_CACHE_BYTES {
            if self.offered < SWEEP_EVERY {
                return;
            }
            // The words not read since the last pass go, and merged-away segments' with
            // them; the others start again unread.
            self.offered = 0;
            self.reach
                .retain(|_, c| std::mem::replace(&mut c.used, false));
            self.bytes = self.reach.values().map(|c| c.size).sum();
            if self.bytes + size > WORD_CACHE_BYTES {
                return;
            }
        }
        let cached = Cached {
            reach,
            size,
            used: false,
        };
        self.reach.insert(at, cached);
        self.bytes += size;
    }
}

/// The embedded engine: a tantivy index.
///
/// Its searches run on tokio's blocking threads, at most two per core at once; its writes
/// run in place on their async worker, whose other tasks tokio hands to another thread
/// meanwhile. On the async workers a search held up every request queued behind it: with
/// the search mix on 8 connections and listing reads on 8 others, on 1,000,000 listings, a
/// read answered in 14 ms at p50 and 37 ms at p99; with the searches on blocking threads,
/// in 0.4 ms and 8 ms (BENCHMARKS.md, 2026-12-05 16:08–16:27, one run of each build). The
/// cost is about 0.1 ms more CPU per search in hand-offs between threads. The search mix
/// alone answered 16 % fewer searches at 100,000 listings, and about as many at 1,000,000,
/// where a search takes longer; there its p99 rose from 33 to 43 ms, four searches sharing
/// two cores. Two per core keeps the cores busy between hand-offs; with no limit the
/// searches shared the cores among themselves and each finished later (at 100,000 listings,
/// 2026-12-05 15:36–16:02).
pub struct EmbeddedEngine {
    /// What searches read, shared with the threads they run on.
    engine: Arc<Engine>,
    /// The writer, not shared: a search still running when the engine is dropped does not
    /// hold the index's lock.
    writer: Mutex<IndexWriter>,
    /// Turns to search: two per core. A turn is held by the thread that searches, not by the
    /// request: a request dropped meanwhile does not let another search start beside it.
    searches: Arc<tokio::sync::Semaphore>,
}

/// The index as searches read it, and their caches.
struct Engine {
    reader: IndexReader,
    f: Fields,
    /// The documents of each filter term (visible, in stock, a category...) by segment:
    /// segments never change, so a filter's postings are read once, not on every search.
    filters: Mutex<FilterCache>,
    words: Mutex<WordCache>,
    /// The columns of each segment served (merged-away segments' are dropped when a new
    /// segment's are opened).
    columns: Mutex<HashMap<SegmentId, Arc<Columns>>>,
}

/// The columns a search reads, of one segment: opened once, not on every search.
struct Columns {
    price: Column<i64>,
    created: Column<i64>,
    lat: Column<f64>,
    lng: Column<f64>,
    /// The facets of many values.
    category: Option<StrColumn>,
    province: Option<StrColumn>,
}

impl Columns {
    fn open(segment: &SegmentReader) -> tantivy::Result<Self> {
        let ff = segment.fast_fields();
        Ok(Self {
            price: ff.i64("price")?,
            created: ff.i64("created")?,
            lat: ff.f64("lat")?,
            lng: ff.f64("lng")?,
            category: ff.str("category_leaf")?,
            province: ff.str("province")?,
        })
    }
}

/// Filter bitsets by segment and term, and the bytes they hold.
#[derive(Default)]
struct FilterCache {
    sets: HashMap<(SegmentId, Term), Arc<Bits>>,
    bytes: usize,
}

/// The most the filter cache holds before it starts again: 32 MiB (a bitset is an eighth of
/// a byte per document: a filter over 1,000,000 listings takes 125 KB).
const FILTER_CACHE_BYTES: usize = 32 * 1024 * 1024;

impl std::fmt::Debug for EmbeddedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedEngine")
    }
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("default")
            .set_index_option(IndexRecordOption::Basic),
    );
    let f = Fields {
        id: b.add_text_field("id", STRING | STORED),
        // Words only (no positions): the proximity rule reads `pairs`.
        title: b.add_text_field("title", words.clone()),
        title_exact: b.add_text_field("title_exact", words.clone()),
        body: b.add_text_field("body", words),
        pairs: b.add_text_field("pairs", STRING),
        // The category and its parent, for the filter.
        category: b.add_text_field("category", STRING),
        province: b.add_text_field("province", STRING | FAST),
        commune: b.add_text_field("commune", STRING),
        certification: b.add_text_field("certification", STRING | FAST),
        ocop: b.add_u64_field("ocop", INDEXED | FAST),
        price: b.add_i64_field("price", INDEXED | FAST),
        in_stock: b.add_u64_field("in_stock", INDEXED),
        visible: b.add_u64_field("visible", INDEXED),
        doc: b.add_text_field("doc", STORED),
        // The leaf category alone: its column for the collector, its values for the facet.
        category_leaf: b.add_text_field("category_leaf", STRING | FAST),
        created: b.add_i64_field("created", FAST),
        lat: b.add_f64_field("lat", FAST),
        lng: b.add_f64_field("lng", FAST),
    };
    (b.build(), f)
}

/// The pairs of `folded`'s words in order at most two words apart (what the proximity rule
/// calls near), each as `"{field} {first} {second}"`: a term of `pairs`, so that "words near
/// each other" is read from postings like any word, not from positions.
fn near_pairs(field: char, folded: &str) -> std::collections::BTreeSet<String> {
    let words: Vec<&str> = crate::text::words(folded).collect();
    let mut pairs = std::collections::BTreeSet::new();
    for (i, first) in words.iter().enumerate() {
        for second in words.iter().skip(i + 1).take(NEAR) {
            pairs.insert(pair_term(field, first, second));
        }
    }
    pairs
}

/// A term of `pairs`: `second` within [`NEAR`] words after `first` in `field`.
fn pair_term(field: char, first: &str, second: &str) -> String {
    format!("{field} {first} {second}")
}

/// The pairs of the title, and of the rest.
const TITLE_PAIRS: char = 't';
const BODY_PAIRS: char = 'b';

/// Words at most so many places after another are near it (at most two words between).
const NEAR: usize = 3;

fn exact(text: &str) -> String {
    text.nfc().collect::<String>().to_lowercase()
}

fn other(e: impl std::fmt::Display) -> EngineError {
    EngineError::Other(anyhow::anyhow!("embedded search index: {e}"))
}

/// What a query word scores by the best way it matches a document. Tiers are far enough
/// apart that, summed over the words of a query (at most [`MAX_WORDS`]), fewer typos always
/// win over the field, and the field over exact diacritics.
const EXACT: Score = 100_000.0;
/// What each typo costs.
const TYPO: Score = 40_000.0;
/// A word in the title rather than only in the rest.
const IN_TITLE: Score = 1_000.0;
/// The words as typed close together (in order, at most two words between each and the
/// next), in the title or the rest: more than any difference of fields, less than one typo.
const PROXIMITY: Score = 20_000.0;
/// A word typed with the diacritics the title has.
const DIACRITICS: Score = 10.0;
/// Words of a query that rank (more are matched, not ranked).
const MAX_WORDS: usize = 16;

/// The score of a word matched with `typos` typos in the title or not.
#[expect(
    clippy::float_arithmetic,
    reason = "tantivy scores are floats; the tiers are whole numbers far apart"
)]
fn tier(typos: u8, in_title: bool) -> Score {
    EXACT - TYPO * Score::from(typos) + if in_title { IN_TITLE } else { 0.0 }
}

impl EmbeddedEngine {
    /// Opens (or creates) the index in `dir`, with the default writer memory.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Self::open_with(dir, DEFAULT_WRITER_HEAP)
    }

    /// Opens (or creates) the index in `dir`; the writer uses at most `writer_heap` bytes
    /// before it writes a segment (tantivy's floor is 15 MB).
    pub fn open_with(dir: &Path, writer_heap: usize) -> anyhow::Result<Self> {
        let (engine, writer) = Engine::open_with(dir, writer_heap)?;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Ok(Self {
            engine: Arc::new(engine),
            writer: Mutex::new(writer),
            searches: Arc::new(tokio::sync::Semaphore::new(2 * cores)),
        })
    }

    /// Serves what the writer has committed and merged so far.
    pub fn reload(&self) -> anyhow::Result<()> {
        Ok(self.engine.reader.reload()?)
    }

    /// Segments the index serves from: each costs every search a little.
    pub fn segments(&self) -> usize {
        self.engine.reader.searcher().segment_readers().len()
    }

    /// Runs `write` with the writer, then serves what it committed. It runs in place, not
    /// on another thread: stopping the caller (a task aborted) never leaves a write going on
    /// without it. On a multi-threaded runtime tokio first hands this worker's other tasks to
    /// another thread.
    fn write(
        &self,
        write: impl FnOnce(&Engine, &mut IndexWriter) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let run = || {
            let mut writer = self
                .writer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            write(&self.engine, &mut writer)?;
            drop(writer);
            self.engine.reader.reload().map_err(other)
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        }
    }
}

impl Engine {
    fn open_with(dir: &Path, writer_heap: usize) -> anyhow::Result<(Self, IndexWriter)> {
        let dir = dir.join(LAYOUT);
        std::fs::create_dir_all(&dir)?;
        let (schema, f) = schema();
        let index = Index::open_or_create(MmapDirectory::open(&dir)?, schema)?;
        let writer = index.writer(writer_heap.max(15_000_000))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let engine = Self {
            reader,
            f,
            filters: Mutex::new(FilterCache::default()),
            words: Mutex::new(WordCache::default()),
            columns: Mutex::new(HashMap::new()),
        };
        Ok((engine, writer))
    }

    fn to_document(&self, d: &SearchDoc) -> Result<TantivyDocument, EngineError> {
        let f = &self.f;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, &d.id);
        let title = crate::fold(&d.title);
        let body = crate::fold(
            &[
                d.description.as_str(),
                &d.seller_name,
                &d.category_name,
                &d.commune_name,
                &d.province_name,
            ]
            .join(" "),
        );
        for pair in near_pairs(TITLE_PAIRS, &title).union(&near_pairs(BODY_PAIRS, &body)) {
            doc.add_text(f.pairs, pair);
        }
        doc.add_text(f.title, title);
        doc.add_text(f.title_exact, exact(&d.title));
        doc.add_text(f.body, body);
        doc.add_text(f.category, &d.category);
        if let Some(parent) = &d.category_parent {
            doc.add_text(f.category, parent);
        }
        doc.add_text(f.category_leaf, &d.category);
        doc.add_text(f.province, &d.province_code);
        doc.add_text(f.commune, &d.commune_code);
        for c in &d.certifications {
            doc.add_text(f.certification, c);
        }
        if let Some(s) = d.ocop_stars.and_then(|s| u64::try_from(s).ok()) {
            doc.add_u64(f.ocop, s);
        }
        doc.add_i64(f.price, d.price_vnd);
        doc.add_i64(f.created, d.created_at);
        if let Some(g) = d.geo {
            doc.add_f64(f.lat, g.lat);
            doc.add_f64(f.lng, g.lng);
        }
        doc.add_u64(f.in_stock, u64::from(d.in_stock));
        doc.add_u64(f.visible, u64::from(d.visible));
        doc.add_text(f.doc, serde_json::to_string(d).map_err(other)?);
        Ok(doc)
    }

    /// The words of a bucket's `text`, as the evaluation reads them: for each synonym
    /// alternative, each word's terms with the score each earns (see [`tier`]; words past
    /// [`MAX_WORDS`] must match and earn nothing). A word's terms are read from the index:
    /// those within its typo budget that start with its own first letter (Meilisearch counts
    /// a typo on the first letter as two, so "xoai" never finds "loai"); the last word being
    /// typed also matches the terms it begins. When `rank`, also what only orders the matches:
    /// the words as typed near each other, and the words typed with their diacritics.
    ///
    /// A word whose reach every segment has in the word cache (or this search has read) needs
    /// no terms: its reach goes into `hits`.
    fn words(
        &self,
        searcher: &Searcher,
        (cache, hits): (&mut TermCache, &mut WordHits),
        text: &str,
        rank: bool,
    ) -> Result<Option<Words>, EngineError> {
        let expanded = expand_query(text);
        if expanded.alternatives.iter().all(Vec::is_empty) {
            return Ok(None);
        }
        let mut alternatives = Vec::new();
        let mut keys = Vec::new();
        for alt in expanded.alternatives.iter().filter(|a| !a.is_empty()) {
            let mut words = Vec::with_capacity(alt.len());
            for (i, w) in alt.iter().enumerate() {
                let prefix = expanded.last_is_prefix && i + 1 == alt.len();
                let key = (w.clone(), prefix, i < MAX_WORDS);
                let known = self.known(searcher, &key, hits);
                keys.push(key);
                let mut terms: Vec<(Term, Score)> = Vec::new();
                if known {
                    words.push(terms);
                    continue;
                }
                for (field, in_title) in [(self.f.title, true), (self.f.body, false)] {
                    let key = (field, w.clone(), prefix);
                    if !cache.contains_key(&key) {
                        let found = matching_terms(searcher, field, w, prefix)?;
                        cache.insert(key.clone(), found);
                    }
                    for (typos, found) in cache.get(&key).into_iter().flatten().enumerate() {
                        let typos = u8::try_from(typos).unwrap_or(u8::MAX);
                        let score = if i < MAX_WORDS {
                            tier(typos, in_title)
                        } else {
                            0.0
                        };
                        terms.extend(found.iter().map(|t| (t.clone(), score)));
                    }
                }
                words.push(terms);
            }
            alternatives.push(words);
        }
        let mut near = Vec::new();
        let mut exact_words = Vec::new();
        if rank {
            // Words closer together: the words as typed, near each other in one field.
            let typed = &expanded.alternatives[0];
            if (2..=MAX_WORDS).contains(&typed.len()) {
                for field in [TITLE_PAIRS, BODY_PAIRS] {
                    near.push(
                        typed
                            .windows(2)
                            .map(|w| {
                                Term::from_field_text(self.f.pairs, &pair_term(field, &w[0], &w[1]))
                            })
                            .collect(),
                    );
                }
            }
            // Words typed with their diacritics: the titles that have them exactly.
            exact_words = crate::text::words(&exact(text))
                .take(MAX_WORDS)
                .map(|w| Term::from_field_text(self.f.title_exact, w))
                .collect();
        }
        Ok(Some(Words {
            alternatives,
            keys,
            near,
            exact: exact_words,
        }))
    }

    /// The documents of `segment` that pass `q`'s term filters (a bitset), or `None` when it
    /// has none. Ranges (stars, price) are read from columns by the caller.
    fn filter_set(
        &self,
        segment: &SegmentReader,
        q: &SearchQuery,
    ) -> Result<Option<Bits>, EngineError> {
        let f = &self.f;
        let mut wanted: Vec<Term> = Vec::new();
        if !q.include_hidden {
            wanted.push(Term::from_field_u64(f.visible, 1));
        }
        if q.in_stock_only {
            wanted.push(Term::from_field_u64(f.in_stock, 1));
        }
        for (field, v) in [
            (f.category, &q.category),
            (f.province, &q.province),
            (f.commune, &q.commune),
            (f.certification, &q.certification),
        ] {
            if let Some(v) = v {
                wanted.push(Term::from_field_text(field, v));
            }
        }
        let mut set: Option<Bits> = None;
        for term in wanted {
            let one = self.filter_bits(segment, term)?;
            set = Some(match set {
                Some(mut all) => {
                    all.intersect(&one);
                    all
                }
                None => Bits::clone(&one),
            });
        }
        // At least so many stars: the union of the star counts the segment has from there up.
        if let Some(min) = q.min_ocop.map(|m| u64::try_from(m).unwrap_or(0)) {
            let mut stars = Bits::new(segment.max_doc());
            for (value, bits) in self.values(segment, f.ocop)? {
                if value.as_u64().is_some_and(|v| v >= min) {
                    stars.union(&bits);
                }
            }
            set = Some(match set {
                Some(mut all) => {
                    all.intersect(&stars);
                    all
                }
                None => stars,
            });
        }
        Ok(set)
    }

    /// Every value `field` has in `segment`, each with its documents (from the filter cache):
    /// for the facets counted by their values' documents.
    fn values(
        &self,
        segment: &SegmentReader,
        field: Field,
    ) -> Result<Vec<(FacetValue, Arc<Bits>)>, EngineError> {
        let numeric = field == self.f.ocop;
        let inverted = segment.inverted_index(field).map_err(other)?;
        let mut stream = inverted.terms().stream().map_err(other)?;
        let mut terms = Vec::new();
        while stream.advance() {
            let key = stream.key();
            let (value, term) = if numeric {
                let Ok(bytes) = <[u8; 8]>::try_from(key) else {
                    continue;
                };
                let v = u64::from_be_bytes(bytes);
                (FacetValue::Number(v), Term::from_field_u64(field, v))
            } else {
                let Ok(text) = std::str::from_utf8(key) else {
                    continue;
                };
                (
                    FacetValue::Text(text.to_owned()),
                    Term::from_field_text(field, text),
                )
            };
            terms.push((value, term));
        }
        terms
            .into_iter()
            .map(|(value, term)| Ok((value, self.filter_bits(segment, term)?)))
            .collect()
    }

    /// Whether every segment's reach of the word `key` is in `hits`, after adding those the
    /// word cache has.
    fn known(&self, searcher: &Searcher, key: &WordKey, hits: &mut WordHits) -> bool {
        let mut cache = self
            .words
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all = true;
        for (ordinal, segment) in searcher.segment_readers().iter().enumerate() {
            let Ok(ordinal) = SegmentOrdinal::try_from(ordinal) else {
                return false;
            };
            let at = (ordinal, key.clone());
            if hits.contains_key(&at) {
                continue;
            }
            match cache.get(segment.segment_id(), key) {
                Some(reach) => {
                    hits.insert(at, reach);
                }
                None => all = false,
            }
        }
        all
    }

    /// The columns of `segment`, from the cache or opened once.
    fn columns(&self, segment: &SegmentReader) -> Result<Arc<Columns>, EngineError> {
        let id = segment.segment_id();
        let mut cache = self
            .columns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(columns) = cache.get(&id) {
            return Ok(columns.clone());
        }
        let columns = Arc::new(Columns::open(segment).map_err(other)?);
        let served: Vec<SegmentId> = self
            .reader
            .searcher()
            .segment_readers()
            .iter()
            .map(SegmentReader::segment_id)
            .collect();
        cache.retain(|id, _| served.contains(id));
        cache.insert(id, columns.clone());
        Ok(columns)
    }

    /// The documents of `segment` with `term`, from the cache or read once.
    fn filter_bits(&self, segment: &SegmentReader, term: Term) -> Result<Arc<Bits>, EngineError> {
        let key = (segment.segment_id(), term);
        if let Some(bits) = self
            .filters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .sets
            .get(&key)
        {
            return Ok(bits.clone());
        }
        let mut bits = Bits::new(segment.max_doc());
        for_each_posting(segment, &key.1, |doc| bits.insert(doc))?;
        let bits = Arc::new(bits);
        let mut cache = self
            .filters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // With what the map and the `Arc` take.
        let size = bits.0.len() * 8 + 200;
        if cache.bytes + size > FILTER_CACHE_BYTES {
            // Merged-away segments' sets go with the rest.
            *cache = FilterCache::default();
        }
        if cache.sets.insert(key, bits.clone()).is_none() {
            cache.bytes += size;
        }
        Ok(bits)
    }

    /// Meilisearch's "words" rule with its `last` strategy: a listing with every word comes
    /// before one whose last words are missing, and any listing with the first word
    /// matches. Each bucket (the first k words) is collected on its own (addresses only, on
    /// one searcher), ranked by the other rules, until the page is full; the total and the
    /// facets are the first word's. Only the hits of the page asked for are loaded.
    fn run(&self, q: &SearchQuery) -> Result<SearchResults, EngineError> {
        let start = Instant::now();
        let searcher = self.reader.searcher();
        let expanded = expand_query(&q.q);
        // The words as the rest of the engine reads them (folded, split on anything but
        // letters and digits).
        let words = &expanded.alternatives[0];
        // No hit past the deepest a search reaches is ranked, or served, as through Meilisearch.
        let keep = q.page.saturating_mul(q.per_page).min(crate::MAX_HITS);
        let mut best: Vec<Kept> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut all = None;
        let mut cache = TermCache::new();
        let mut hits = WordHits::new();
        for k in (1..=words.len().max(1)).rev() {
            let full = best.len() >= keep;
            if full && k > 1 {
                continue;
            }
            // Fewer words are whole words (a trailing space); all of them as typed.
            let text = if k >= words.len() {
                q.q.clone()
            } else {
                format!("{} ", words[..k].join(" "))
            };
            let found = self.collect(
                &searcher,
                (&mut cache, &mut hits),
                &text,
                q,
                if full { 0 } else { keep },
                if k == 1 { &q.facets } else { &[] },
            )?;
            for kept in &found.best {
                if best.len() < keep && seen.insert(kept.address) {
                    best.push(*kept);
                }
            }
            if k == 1 {
                all = Some(found);
            }
        }
        let all = all.ok_or_else(|| other("no bucket was searched"))?;
        let mut hits = Vec::with_capacity(q.per_page.min(keep));
        for kept in best
            .into_iter()
            .skip((q.page - 1).saturating_mul(q.per_page))
        {
            let stored: TantivyDocument = searcher.doc(kept.address).map_err(other)?;
            let json = stored
                .get_first(self.f.doc)
                .and_then(|v| v.as_str())
                .unwrap_or("{}");
            let doc: SearchDoc = serde_json::from_str(json).map_err(other)?;
            hits.push(Hit {
                title_highlighted: highlight(&doc.title, &expanded),
                distance_km: kept.distance,
                doc,
            });
        }
        Ok(SearchResults {
            hits,
            facets: all.facets,
            total: all.count,
            processing_time_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            page: q.page,
            per_page: q.per_page,
            engine: EngineMode::Embedded,
        })
    }

    /// The matches of `text` under `q`'s filters, on `searcher`: their count, the `facets`
    /// asked, and the addresses of the best `keep` by `q`'s sort.
    ///
    /// Evaluated a term at a time, segment by segment: each word's terms' postings are read
    /// straight into an array of the segment's documents (the best score the word reaches in
    /// each), the words' arrays are summed where every word matched, and the best alternative
    /// kept; the filters are bitsets of their terms' postings. One pass over the segment's
    /// documents then counts, counts facets and keeps the best of the page by the sort,
    /// reading columns (and the facets' values' bitsets, see [`PageSegment`]).
    #[expect(
        clippy::float_arithmetic,
        reason = "scores are whole-number tiers summed as tantivy sums them"
    )]
    fn collect(
        &self,
        searcher: &Searcher,
        (cache, hits): (&mut TermCache, &mut WordHits),
        text: &str,
        q: &SearchQuery,
        keep: usize,
        facets: &[String],
    ) -> Result<Found, EngineError> {
        let rank = keep > 0;
        let words = self.words(searcher, (cache, hits), text, rank)?;
        let page = Page {
            sort: q.sort,
            near: q.near,
            keep,
            // Each facet once, however often it is asked.
            facets: FACETS
                .iter()
                .filter(|name| facets.iter().any(|f| f == *name))
                .map(|name| (*name).to_owned())
                .collect(),
        };
        let prices = (q.price_min.is_some() || q.price_max.is_some())
            .then(|| q.price_min.unwrap_or(i64::MIN)..=q.price_max.unwrap_or(i64::MAX));
        let mut fruits = Vec::new();
        // The matches of a segment, in a buffer this thread keeps (they run to a segment's
        // size, and allocating that much afresh costs page faults).
        let mut found = FOUND.take();
        for (ordinal, segment) in searcher.segment_readers().iter().enumerate() {
            let ordinal = SegmentOrdinal::try_from(ordinal).map_err(other)?;
            let max_doc = usize::try_from(segment.max_doc()).map_err(other)?;
            let matches = match &words {
                Some(words) => {
                    matches(
                        (segment, ordinal),
                        words,
                        max_doc,
                        (hits, &self.words),
                        &mut found,
                    )?;
                    Some(&found)
                }
                None => None,
            };
            let boosts = match &words {
                Some(words) if rank => Some(boosts(segment, words)?),
                _ => None,
            };
            let filter = self.filter_set(segment, q)?;
            let alive = segment.alive_bitset();
            let columns = self.columns(segment)?;
            let price = &columns.price;
            // The facets of few values are counted from their values' documents; so are
            // those of many (category, province) when the matches are many: a bitset's
            // common count per value then costs less than a column read per match.
            let many = matches.is_none_or(|m| m.len() >= max_doc / 32);
            let mut few = Vec::new();
            for (name, field, by_values) in [
                ("certifications", self.f.certification, true),
                ("ocop_stars", self.f.ocop, true),
                ("category", self.f.category_leaf, many),
                ("province_code", self.f.province, many),
            ] {
                if by_values && page.facets.iter().any(|f| f == name) {
                    few.push((name.to_owned(), self.values(segment, field)?));
                }
            }
            let mut collector = page.for_segment(ordinal, segment, &columns, few);
            // The words' matches, or with no words every document.
            let every: Box<dyn Iterator<Item = (DocId, Score)>> = match &matches {
                Some(m) => Box::new(m.iter().copied()),
                None => Box::new((0..segment.max_doc()).map(|doc| (doc, 0.0))),
            };
            for (doc, score) in every {
                if filter.as_ref().is_some_and(|f| !f.contains(doc))
                    || alive.is_some_and(|a| a.is_deleted(doc))
                {
                    continue;
                }
                if let Some(range) = &prices
                    && price.first(doc).is_none_or(|p| !range.contains(&p))
                {
                    continue;
                }
                let boost = boosts.as_ref().map_or(0.0, |b| b.of(doc));
                collector.collect(doc, score + boost);
            }
            fruits.push(collector.harvest());
        }
        FOUND.replace(found);
        Ok(page.merge(fruits))
    }
}

/// The words of a bucket, ready to evaluate (see [`Engine::words`]).
struct Words {
    /// Per synonym alternative, per word: the terms it may be, with what each earns.
    alternatives: Vec<Vec<Vec<(Term, Score)>>>,
    /// What names each word of the alternatives, in their order, one after another.
    keys: Vec<WordKey>,
    /// Per field, the pairs of the words as typed one after the other, for the proximity
    /// rule (empty below two words).
    near: Vec<Vec<Term>>,
    /// The words as typed with their diacritics, in the exact title.
    exact: Vec<Term>,
}

/// A segment's documents as bits.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(max_doc: DocId) -> Self {
        Self(vec![0; usize::try_from(max_doc.div_ceil(64)).unwrap_or(0)])
    }
    fn insert(&mut self, doc: DocId) {
        if let Some(word) = usize::try_from(doc / 64)
            .ok()
            .and_then(|w| self.0.get_mut(w))
        {
            *word |= 1 << (doc % 64);
        }
    }
    fn contains(&self, doc: DocId) -> bool {
        usize::try_from(doc / 64)
            .ok()
            .and_then(|w| self.0.get(w))
            .is_some_and(|word| word & (1 << (doc % 64)) != 0)
    }
    fn intersect(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a &= b;
        }
    }
    fn union(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
    /// How many documents both have.
    fn count_common(&self, other: &Self) -> u64 {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| u64::from((a & b).count_ones()))
            .sum()
    }
}

/// A value of a field whose values are few, as its facet names it.
enum FacetValue {
    Number(u64),
    Text(String),
}

impl FacetValue {
    fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Number(v) => Some(*v),
            Self::Text(_) => None,
        }
    }
}

impl std::fmt::Display for FacetValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(v) => write!(f, "{v}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// A facet counted from its values' documents: its name, and each value with its documents.
type FewValues = (String, Vec<(FacetValue, Arc<Bits>)>);

/// Calls `each` with every document of `segment` whose field has `term`, deleted ones
/// included, reading the postings a block at a time.
fn for_each_posting(
    segment: &SegmentReader,
    term: &Term,
    mut each: impl FnMut(DocId),
) -> Result<(), EngineError> {
    let inverted = segment.inverted_index(term.field()).map_err(other)?;
    if let Some(mut block) = inverted
        .read_block_postings(term, IndexRecordOption::Basic)
        .map_err(other)?
    {
        loop {
            let docs = block.docs();
            if docs.is_empty() {
                break;
            }
            for &doc in docs {
                each(doc);
            }
            block.advance();
        }
    }
    Ok(())
}

/// Per-thread work space of [`matches`], as long as the largest segment: reused, so a search
/// neither allocates nor faults in arrays of a segment's size. Both are all "absent" between
/// uses (whatever a search marks it unmarks).
#[derive(Default)]
struct Scratch {
    /// One word's best score per document; negative where it is absent.
    word: Vec<Score>,
    /// Where each document is in the matches, plus one; 0 where it is not.
    slot: Vec<u32>,
    /// The documents one word reached (kept for their capacity).
    touched: Vec<DocId>,
    /// The documents every word so far reached, with their summed scores (kept likewise).
    candidates: Vec<(DocId, Score)>,
    /// Set while a search uses it: still set at the next, that search panicked half-way,
    /// and both arrays are filled afresh.
    in_use: bool,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
    /// The matches of a segment (see [`Engine::collect`]).
    static FOUND: std::cell::Cell<Vec<(DocId, Score)>> =
        const { std::cell::Cell::new(Vec::new()) };
}

/// The documents the words match in `segment`, into `found`, each once with its score: the
/// best alternative in which every word matched, each word by the best term it has. The cost
/// follows the postings read and the candidates kept: each word after the first only narrows
/// the first word's documents.
#[expect(
    clippy::float_arithmetic,
    reason = "scores are whole-number tiers summed as tantivy sums them"
)]
fn matches(
    (segment, ordinal): (&SegmentReader, SegmentOrdinal),
    words: &Words,
    max_doc: usize,
    (hits, cache): (&mut WordHits, &Mutex<WordCache>),
    found: &mut Vec<(DocId, Score)>,
) -> Result<(), EngineError> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let Scratch {
            word,
            slot,
            touched,
            candidates,
            in_use,
        } = &mut *scratch;
        if *in_use {
            word.fill(-1.0);
            slot.fill(0);
        }
        *in_use = true;
        if word.len() < max_doc {
            word.resize(max_doc, -1.0);
            slot.resize(max_doc, 0);
        }
        found.clear();
        candidates.clear();
        let mut result = Ok(());
        let mut first_key = 0;
        for alternative in &words.alternatives {
            let keys = words.keys.get(first_key..).unwrap_or_default();
            first_key += alternative.len();
            for (i, terms) in alternative.iter().enumerate() {
                touched.clear();
                let key = keys.get(i).map(|k| (ordinal, k.clone()));
                let known = key.as_ref().and_then(|k| hits.get(k)).cloned();
                let unread = known.is_none();
                if let Some(known) = known {
                    if i == 0 {
                        candidates.clear();
                        candidates.extend_from_slice(&known);
                        continue;
                    }
                    for &(doc, score) in known.iter() {
                        if let Some(w) = usize::try_from(doc).ok().and_then(|d| word.get_mut(d)) {
                            *w = score;
                            touched.push(doc);
                        }
                    }
                }
                for (term, score) in terms.iter().filter(|_| unread) {
                    result = for_each_posting(segment, term, |doc| {
                        if let Some(w) = usize::try_from(doc).ok().and_then(|d| word.get_mut(d)) {
                            if *w < 0.0 {
                                touched.push(doc);
                            }
                            if *w < *score {
                                *w = *score;
                            }
                        }
                    });
                    if result.is_err() {
                        break;
                    }
                }
                let of = |doc: DocId| {
                    usize::try_from(doc)
                        .ok()
                        .and_then(|d| word.get(d))
                        .copied()
                        .unwrap_or(-1.0)
                };
                // A word read is kept, for the buckets below and the searches after.
                if let Some(key) = key.filter(|_| unread && result.is_ok()) {
                    let reach: Reach =
                        Arc::new(touched.iter().map(|&doc| (doc, of(doc))).collect());
                    cache
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .keep(segment.segment_id(), key.1.clone(), reach.clone());
                    hits.insert(key, reach);
                }
                if i == 0 {
                    candidates.clear();
                    candidates.extend(touched.iter().map(|&doc| (doc, of(doc))));
                } else {
                    candidates.retain_mut(|(doc, sum)| {
                        let w = of(*doc);
                        *sum += w.max(0.0);
                        w >= 0.0
                    });
                }
                for &doc in touched.iter() {
                    if let Some(w) = usize::try_from(doc).ok().and_then(|d| word.get_mut(d)) {
                        *w = -1.0;
                    }
                }
                if candidates.is_empty() || result.is_err() {
                    break;
                }
            }
            if result.is_err() {
                break;
            }
            if words.alternatives.len() == 1 {
                found.extend_from_slice(candidates);
                break;
            }
            for &(doc, sum) in candidates.iter() {
                let Some(at) = usize::try_from(doc).ok().and_then(|d| slot.get_mut(d)) else {
                    continue;
                };
                match at
                    .checked_sub(1)
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| found.get_mut(i))
                {
                    Some(kept) => kept.1 = kept.1.max(sum),
                    None => {
                        found.push((doc, sum));
                        *at = u32::try_from(found.len()).unwrap_or(0);
                    }
                }
            }
            candidates.clear();
        }
        if words.alternatives.len() > 1 {
            for &(doc, _) in found.iter() {
                if let Some(at) = usize::try_from(doc).ok().and_then(|d| slot.get_mut(d)) {
                    *at = 0;
                }
            }
        }
        *in_use = false;
        result
    })
}

/// What only orders the matches, per document: the words as typed near each other (in the
/// title or in the rest, in order, at most two words between each and the next), and each
/// word typed with the diacritics the title has.
fn boosts(segment: &SegmentReader, words: &Words) -> Result<Boosts, EngineError> {
    let mut near = Bits::new(segment.max_doc());
    for pairs in &words.near {
        let mut all: Option<Bits> = None;
        for pair in pairs {
            let mut bits = Bits::new(segment.max_doc());
            for_each_posting(segment, pair, |doc| bits.insert(doc))?;
            all = Some(match all {
                Some(mut all) => {
                    all.intersect(&bits);
                    all
                }
                None => bits,
            });
        }
        if let Some(all) = all {
            near.union(&all);
        }
    }
    let mut exact = Vec::with_capacity(words.exact.len());
    for term in &words.exact {
        let mut bits = Bits::new(segment.max_doc());
        for_each_posting(segment, term, |doc| bits.insert(doc))?;
        exact.push(bits);
    }
    Ok(Boosts { near, exact })
}

/// What orders the matches of a segment beyond the words: see [`boosts`].
struct Boosts {
    near: Bits,
    /// Per word typed, the titles that have it with its diacritics.
    exact: Vec<Bits>,
}

impl Boosts {
    #[expect(
        clippy::float_arithmetic,
        reason = "scores are whole-number tiers summed as tantivy sums them"
    )]
    fn of(&self, doc: DocId) -> Score {
        let near = if self.near.contains(doc) {
            PROXIMITY
        } else {
            0.0
        };
        self.exact
            .iter()
            .filter(|bits| bits.contains(doc))
            .fold(near, |sum, _| sum + DIACRITICS)
    }
}

/// The terms of `field` that `word` may be, by typos (index 0: the word itself, or for a
/// `prefix` the terms it begins): within the word's typo budget, starting with its first
/// letter, from every segment of the index.
fn matching_terms(
    searcher: &Searcher,
    field: Field,
    word: &str,
    prefix: bool,
) -> Result<Vec<Vec<Term>>, EngineError> {
    let budget = typo_budget(word);
    let mut tiers = vec![Vec::new(); usize::from(budget) + 1];
    let Some(first) = word.chars().next() else {
        return Ok(tiers);
    };
    let n = word.chars().count();
    let low = first.to_string();
    let high = char::from_u32(u32::from(first) + 1).map(|c| c.to_string());
    let mut seen = std::collections::HashSet::new();
    for segment in searcher.segment_readers() {
        let inverted = segment.inverted_index(field).map_err(other)?;
        let mut range = inverted.terms().range().ge(low.as_bytes());
        if let Some(high) = &high {
            range = range.lt(high.as_bytes());
        }
        let mut stream = range.into_stream().map_err(other)?;
        while stream.advance() {
            let Ok(term) = std::str::from_utf8(stream.key()) else {
                continue;
            };
            // Segments share most of their terms: each is weighed once.
            if seen.contains(term) {
                continue;
            }
            let len = term.chars().count();
            // Too short or (unless a prefix) too long to be within the budget.
            if len + usize::from(budget) < n || (!prefix && len > n + usize::from(budget)) {
                continue;
            }
            let whole = if term == word {
                Some(0)
            } else {
                edit_distance(term, word, budget)
            };
            let begun = prefix.then(|| {
                let head = term
                    .char_indices()
                    .nth(n)
                    .map_or(term, |(at, _)| &term[..at]);
                if head == word {
                    Some(0)
                } else {
                    edit_distance(head, word, budget)
                }
            });
            seen.insert(term.to_owned());
            if let Some(typos) = [whole, begun.flatten()].into_iter().flatten().min() {
                tiers[usize::from(typos)].push(Term::from_field_text(field, term));
            }
        }
    }
    Ok(tiers)
}

/// A kept hit: its sort key (score, then the requested sort; larger is better), its address,
/// its distance.
#[derive(Debug, Clone, Copy)]
struct Kept {
    key: (f64, i64),
    address: DocAddress,
    distance: Option<f64>,
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kept {
    /// Reversed (the worst is the greatest), so a `BinaryHeap` of kept hits drops its worst
    /// first; ties go to the earlier document.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key
            .0
            .total_cmp(&self.key.0)
            .then(other.key.1.cmp(&self.key.1))
            .then(self.address.cmp(&other.address))
    }
}

/// What a search keeps of its matches.
#[derive(Debug, Default)]
struct Found {
    best: Vec<Kept>,
    count: u64,
    facets: Facets,
}

/// The one collector of a search: counts, facets, radius and the best `keep` by the sort.
struct Page {
    sort: Sort,
    near: Option<(Geo, Option<f64>)>,
    keep: usize,
    facets: Vec<String>,
}

struct PageSegment {
    segment: SegmentOrdinal,
    sort: Sort,
    near: Option<(Geo, Option<f64>)>,
    keep: usize,
    heap: BinaryHeap<Kept>,
    count: u64,
    /// The segment's columns (price, date, coordinates).
    columns: Arc<Columns>,
    /// Facet name → its column and counts by term ordinal.
    str_facets: Vec<(String, StrColumn, Vec<u64>)>,
    /// The facets counted at the end from the documents counted, as their values' documents
    /// in common with them (those of few values, and of many when the matches are many).
    few: Vec<FewValues>,
    /// The documents counted, when a facet is counted so.
    counted: Option<Bits>,
}

/// Not a tantivy `Collector`: [`Engine::collect`] feeds it the matches itself.
impl Page {
    /// The collector of one segment; `few` are the facets asked for that are counted from
    /// their values' documents, with the segment's values (the others are read from columns).
    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
        columns: &Arc<Columns>,
        few: Vec<FewValues>,
    ) -> PageSegment {
        let mut str_facets = Vec::new();
        for facet in self
            .facets
            .iter()
            .filter(|facet| few.iter().all(|(name, _)| name != *facet))
        {
            let column = match facet.as_str() {
                "category" => &columns.category,
                "province_code" => &columns.province,
                _ => continue,
            };
            if let Some(c) = column {
                let terms = c.num_terms();
                str_facets.push((facet.clone(), c.clone(), vec![0; terms]));
            }
        }
        PageSegment {
            segment,
            sort: self.sort,
            near: self.near,
            keep: self.keep,
            heap: BinaryHeap::with_capacity(self.keep.min(10_000) + 1),
            count: 0,
            columns: columns.clone(),
            str_facets,
            counted: (!few.is_empty()).then(|| Bits::new(reader.max_doc())),
            few,
        }
    }

    fn merge(&self, fruits: Vec<Found>) -> Found {
        let mut all = Found {
            facets: self
                .facets
                .iter()
                .map(|f| (f.clone(), BTreeMap::new()))
                .collect(),
            ..Found::default()
        };
        let mut best = Vec::new();
        for fruit in fruits {
            all.count += fruit.count;
            best.extend(fruit.best);
            for (facet, counts) in fruit.facets {
                let entry = all.facets.entry(facet).or_default();
                for (value, n) in counts {
                    *entry.entry(value).or_insert(0) += n;
                }
            }
        }
        // Best first.
        best.sort();
        best.truncate(self.keep);
        all.best = best;
        all
    }
}

impl PageSegment {
    #[expect(
        clippy::float_arithmetic,
        clippy::cast_possible_truncation,
        reason = "distances in km become whole metres for the sort key"
    )]
    fn collect(&mut self, doc: DocId, score: Score) {
        let distance = self.near.and_then(|(p, _)| {
            let g = Geo {
                lat: self.columns.lat.first(doc)?,
                lng: self.columns.lng.first(doc)?,
            };
            Some(distance_km(p, g))
        });
        if let Some((_, Some(radius))) = self.near
            && distance.is_none_or(|d| d > radius)
        {
            return;
        }
        self.count += 1;
        for (_, column, counts) in &mut self.str_facets {
            for ord in column.term_ords(doc) {
                if let Some(n) = usize::try_from(ord).ok().and_then(|o| counts.get_mut(o)) {
                    *n += 1;
                }
            }
        }
        if let Some(counted) = &mut self.counted {
            counted.insert(doc);
        }
        if self.keep == 0 {
            return;
        }
        // The ranking rules first (the score), then the requested sort: a full page's worst
        // hit scoring more needs no column read.
        let score = f64::from(score);
        if self.heap.len() >= self.keep && self.heap.peek().is_some_and(|worst| worst.key.0 > score)
        {
            return;
        }
        let secondary = match self.sort {
            Sort::Relevance | Sort::Newest => self.columns.created.first(doc).unwrap_or(0),
            Sort::PriceAsc => self.columns.price.first(doc).unwrap_or(0).saturating_neg(),
            Sort::PriceDesc => self.columns.price.first(doc).unwrap_or(0),
            // Metres, nearest first; no point is farthest.
            Sort::Distance => distance.map_or(i64::MIN, |d| -((d * 1000.0).round() as i64)),
        };
        let kept = Kept {
            key: (score, secondary),
            address: DocAddress::new(self.segment, doc),
            distance,
        };
        if self.heap.len() < self.keep {
            self.heap.push(kept);
        } else if self.heap.peek().is_some_and(|worst| kept < *worst) {
            self.heap.pop();
            self.heap.push(kept);
        }
    }

    fn harvest(self) -> Found {
        let mut facets = Facets::new();
        let mut text = String::new();
        for (facet, column, counts) in self.str_facets {
            let entry: &mut BTreeMap<String, u64> = facets.entry(facet).or_default();
            for (ord, n) in (0_u64..).zip(counts).filter(|(_, n)| *n > 0) {
                text.clear();
                if column.ord_to_str(ord, &mut text).unwrap_or(false) {
                    *entry.entry(text.clone()).or_insert(0) += n;
                }
            }
        }
        if let Some(counted) = &self.counted {
            for (facet, values) in self.few {
                let entry = facets.entry(facet).or_default();
                for (value, docs) in values {
                    let n = counted.count_common(&docs);
                    if n > 0 {
                        *entry.entry(value.to_string()).or_insert(0) += n;
                    }
                }
            }
        }
        Found {
            best: self.heap.into_vec(),
            count: self.count,
            facets,
        }
    }
}

#[async_trait::async_trait]
impl SearchEngine for EmbeddedEngine {
    fn mode(&self) -> EngineMode {
        EngineMode::Embedded
    }

    async fn upsert(&self, docs: &[SearchDoc]) -> Result<(), EngineError> {
        self.write(|engine, writer| {
            // Every document made first: one that cannot be leaves the writer untouched.
            let made: Vec<(Term, TantivyDocument)> = docs
                .iter()
                .map(|d| {
                    let doc = engine.to_document(d)?;
                    Ok((Term::from_field_text(engine.f.id, &d.id), doc))
                })
                .collect::<Result<_, EngineError>>()?;
            for (id, doc) in made {
                writer.delete_term(id);
                writer.add_document(doc).map_err(other)?;
            }
            writer.commit().map_err(other)?;
            Ok(())
        })
    }

    async fn clear(&self) -> Result<(), EngineError> {
        self.write(|_, writer| {
            writer.delete_all_documents().map_err(other)?;
            writer.commit().map_err(other)?;
            Ok(())
        })
    }

    async fn count(&self) -> Result<u64, EngineError> {
        Ok(self.engine.reader.searcher().num_docs())
    }

    async fn holding(&self, ids: &[String]) -> Result<u64, EngineError> {
        let engine = self.engine.clone();
        let terms: Vec<Term> = ids
            .iter()
            .map(|id| Term::from_field_text(engine.f.id, id))
            .collect();
        tokio::task::spawn_blocking(move || {
            // Live documents only: a replaced one is deleted, not yet merged away.
            let held = engine
                .reader
                .searcher()
                .search(&TermSetQuery::new(terms), &Count)
                .map_err(other)?;
            Ok(held as u64)
        })
        .await
        .map_err(other)?
    }

    async fn search(&self, q: &SearchQuery) -> Result<SearchResults, EngineError> {
        let turn = self.searches.clone().acquire_owned().await.map_err(other)?;
        let (engine, q) = (self.engine.clone(), q.clone());
        tokio::task::spawn_blocking(move || {
            let found = engine.run(&q);
            drop(turn);
            found
        })
        .await
        .map_err(other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(n: usize) -> Reach {
        Arc::new(vec![(0, 1.0); n])
    }

    fn word(w: &str) -> WordKey {
        (w.to_owned(), false, true)
    }

    /// A run of words searched once each (short prefixes one after another, say) does not
    /// empty the cache of a word searched all along; a word no longer searched goes in time.
    #[test]
    fn a_full_word_cache_keeps_the_words_searched_again() {
        let segment = SegmentId::generate_random();
        let mut cache = WordCache::default();
        cache.keep(segment, word("xoai"), reach(10_000));
        let kept_once = |cache: &WordCache, range: std::ops::Range<usize>| {
            range
                .filter(|i| cache.reach.contains_key(&(segment, word(&format!("t{i}")))))
                .count()
        };
        // 1 MiB each: the cache is full after about 31 of them, many times over.
        for i in 0..300 {
            assert!(
                cache.get(segment, &word("xoai")).is_some(),
                "after {i} words searched once"
            );
            cache.keep(segment, word(&format!("t{i}")), reach(128 * 1024));
            assert!(cache.bytes <= WORD_CACHE_BYTES);
            assert_eq!(
                cache.bytes,
                cache.reach.values().map(|c| c.size).sum::<usize>(),
                "the count of bytes follows what is kept"
            );
        }
        assert_eq!(kept_once(&cache, 0..100), 0, "searched once, they went");
        assert!(kept_once(&cache, 200..300) > 0, "new words are still kept");
        // Searched no more, it has one more round, then goes.
        for i in 300..600 {
            cache.keep(segment, word(&format!("t{i}")), reach(128 * 1024));
        }
        assert!(cache.get(segment, &word("xoai")).is_none());
        // A word kept again (two searches missed it at once) is counted once.
        let before = cache.bytes;
        let last = cache.reach.keys().next().map(|(_, k)| k.clone()).unwrap();
        cache.keep(segment, last, reach(128 * 1024));
        assert_eq!(cache.bytes, before);
    }
}
