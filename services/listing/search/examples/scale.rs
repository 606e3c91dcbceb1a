//! Measures the embedded engine on generated listings: how long indexing N takes, and the
//! latency of a query mix (accented, diacritic-free, typo, prefix, multi-word, a third with
//! filters and facets) run one after another. A measuring tool, not a test:
//!
//! ```sh
//! cargo run --release -p nongsan-search --example scale -- 100000
//! ```

#![expect(
    clippy::print_stdout,
    clippy::float_arithmetic,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "a measuring tool prints figures it computes as floats"
)]

use std::time::Instant;

use nongsan_search::{FACETS, SearchEngine, SearchQuery, embedded::EmbeddedEngine, generate};

const QUERIES: [&str; 12] = [
    "xoài",
    "xoai",
    "xaoi",
    "cà phê",
    "ca phe rang",
    "sau rieng ri6",
    "bơ",
    "rau mu",
    "gạo st25",
    "buoi da xanh",
    "mật ong",
    "",
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map_or(Ok(100_000), |a| a.parse())?;
    let dir = std::env::temp_dir().join(format!("nongsan-scale-example-{}", std::process::id()));
    let engine = EmbeddedEngine::open(&dir)?;
    let docs: Vec<_> = generate::listings(42, n, 200)
        .iter()
        .map(|g| g.search_doc(&format!("gen-{:07}", g.n), &format!("Hộ {}", g.household)))
        .collect();
    let start = Instant::now();
    for batch in docs.chunks(10_000) {
        engine.upsert_bulk(batch).await?;
    }
    println!(
        "indexed {n} listings in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let mut times = Vec::new();
    for round in 0..20 {
        for (i, q) in QUERIES.iter().enumerate() {
            let mut query = SearchQuery {
                q: (*q).to_owned(),
                ..SearchQuery::default()
            };
            if (i + round) % 3 == 0 {
                query.province = Some("68".to_owned());
                query.price_max = Some(100_000);
                query.facets = FACETS.iter().map(|f| (*f).to_owned()).collect();
            }
            let t = Instant::now();
            let r = engine.search(&query).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            if round == 0 {
                println!("{q:>16}: {} matches", r.total);
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize];
    println!(
        "{} searches, one at a time: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times.len(),
        at(0.5),
        at(0.95),
        at(0.99),
        at(1.0)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
