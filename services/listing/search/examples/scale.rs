//! Measures the embedded engine on generated listings: how long indexing N takes, and the
//! latency of the benchmark's query mix ([`generate::query_mix`]) run one after another.
//! A measuring tool, not a test (`ROUNDS` rounds of the mix, `BATCH` documents a commit):
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

use nongsan_search::{SearchEngine, embedded::EmbeddedEngine, generate};

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
    let batch: usize = std::env::var("BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(10_000);
    for batch in docs.chunks(batch) {
        engine.upsert_bulk(batch).await?;
    }
    println!(
        "indexed {n} listings in {:.1} s, {} segments",
        start.elapsed().as_secs_f64(),
        engine.segments()
    );

    // Merges that the last commits started finish before the searches are timed.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    engine.reload()?;
    println!("{} segments after merging", engine.segments());
    let mut mix = generate::query_mix();
    // `ONLY=i`: the i-th search of the mix alone.
    if let Some(only) = std::env::var("ONLY")
        .ok()
        .and_then(|i| i.parse::<usize>().ok())
    {
        mix = vec![mix.swap_remove(only)];
    }
    // `Q=words`: that search alone.
    if let Ok(q) = std::env::var("Q") {
        mix = vec![nongsan_search::SearchQuery {
            q,
            ..Default::default()
        }];
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let mut times = Vec::new();
    // The first round finds nothing cached (words, filters, columns); the later ones find
    // every word of the mix in the engine's word cache.
    let mut first_round = 0.0;
    let mut per_query = vec![0.0; mix.len()];
    let mut cpu_per_query = vec![0.0; mix.len()];
    for round in 0..rounds {
        for (i, query) in mix.iter().enumerate() {
            let t = Instant::now();
            let cpu = thread_cpu_ns();
            let r = engine.search(query).await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            cpu_per_query[i] += (thread_cpu_ns() - cpu) as f64 / 1e6;
            times.push(ms);
            per_query[i] += ms;
            if round == 0 {
                first_round += ms;
                println!("{:>16}: {} matches", query.q, r.total);
            }
        }
    }
    for ((query, total), cpu) in mix.iter().zip(&per_query).zip(&cpu_per_query) {
        println!(
            "{:>16}: {:.2} ms, CPU {:.2} ms{}",
            query.q,
            total / rounds as f64,
            cpu / rounds as f64,
            if query.facets.is_empty() {
                ""
            } else {
                " (with filters or facets)"
            }
        );
    }
    println!(
        "CPU per search, the mix's mean: {:.2} ms (the thread's own time, whatever else runs)",
        cpu_per_query.iter().sum::<f64>() / (rounds * mix.len()) as f64
    );
    println!(
        "the first round's mean, nothing cached yet: {:.2} ms; all rounds' mean: {:.2} ms",
        first_round / mix.len() as f64,
        times.iter().sum::<f64>() / times.len() as f64
    );
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

/// The CPU time this thread has had, in nanoseconds (Linux's schedstat; 0 elsewhere).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
