//! `nongsan-bench`: the benchmark harness. It starts `nongsan up` (one process, its private
//! PostgreSQL cluster) on a fresh data folder, loads generated listings through the API,
//! drives each scenario with a number of connections for a number of seconds, and reports
//! throughput, latency percentiles (HDR histograms), errors and CPU time per operation of
//! nongsan and of PostgreSQL, beside a reference measured in the same run: a bare endpoint
//! of the same process for reads and searches, `pgbench` TPC-B on the same cluster for
//! checkouts. Figures are only ever compared within one run.
//!
//! ```text
//! cargo build --release -p nongsan -p nongsan-bench
//! target/release/nongsan-bench --listings 100000 --secs 20 --append BENCHMARKS.md
//! target/release/nongsan-bench --smoke          # what CI runs: seconds, little data
//! target/release/nongsan-bench --listings 2000 --scenarios crash --secs 10 --append RELIABILITY.md
//! ```
//!
//! The `crash` scenario ([`crash`]) kills `nongsan up` under a mixed load and checks the
//! invariants after each restart; it is not part of `all`.
#![expect(
    clippy::float_arithmetic,
    reason = "a benchmark's figures are rates, milliseconds and ratios"
)]
#![expect(clippy::print_stdout, reason = "the report is the program's output")]

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

mod crash;

/// What to run.
#[derive(Debug, Parser)]
#[command(
    name = "nongsan-bench",
    about = "Benchmark nongsan against references measured in the same run"
)]
struct Args {
    /// Scenarios, comma-separated: bare, listing-read, listing-page, search, index-lag,
    /// checkout, hot-item, pgbench, reindex (the server stopped, `nongsan reindex` timed, the
    /// server started again); or all (every one of these); and crash (the reliability
    /// rounds, never part of all).
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// Listings generated (seeded) and loaded through the API before the scenarios run.
    #[arg(long, default_value_t = 10_000)]
    listings: usize,
    /// Households that sell them.
    #[arg(long, default_value_t = 200)]
    households: usize,
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Connections of the search scenario, comma-separated.
    #[arg(long, default_value = "8,32")]
    search_connections: String,
    /// Connections of the other scenarios.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Listing edits a second in the index-lag scenario.
    #[arg(long, default_value_t = 100)]
    lag_writes: u32,
    /// Rounds of the crash scenario (a kill and a restart each).
    #[arg(long, default_value_t = 3)]
    crash_rounds: usize,
    /// Buyers racing for the hot item, whose stock is a tenth of them.
    #[arg(long, default_value_t = 1000)]
    hot_buyers: usize,
    /// Search through Meilisearch at `MEILI_URL` (with `MEILI_KEY`) instead of the embedded
    /// engine, in an index of the run's own; the search scenario then also sends Meilisearch
    /// the same searches directly, as its reference.
    #[arg(long)]
    meili: bool,
    /// The nongsan binary (default: the one beside this program).
    #[arg(long)]
    nongsan: Option<PathBuf>,
    /// Appends the report to this Markdown file (BENCHMARKS.md).
    #[arg(long)]
    append: Option<PathBuf>,
    /// What CI runs: a few seconds of every scenario on little data. Figures are printed,
    /// never judged; a broken scenario (errors, an oversold hot item) fails it.
    #[arg(long)]
    smoke: bool,
}

/// The password of every account the harness makes.
const PASSWORD: &str = "mật khẩu của bench";

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.listings = args.listings.min(300);
        args.households = args.households.min(10);
        args.secs = args.secs.min(2);
        args.hot_buyers = args.hot_buyers.min(60);
        args.search_connections = "4".to_owned();
        args.connections = args.connections.min(4);
        args.crash_rounds = args.crash_rounds.min(1);
    }
    let wanted: Vec<String> = if args.scenarios == "all" {
        let mut all = vec![
            "bare",
            "listing-read",
            "listing-page",
            "search",
            "index-lag",
            "checkout",
            "hot-item",
            "pgbench",
            "reindex",
        ];
        // CI's smoke run tries the crash rounds too, for seconds.
        if args.smoke {
            all.push("crash");
        }
        all.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.scenarios
            .split(',')
            .map(|s| s.trim().to_owned())
            .collect()
    };
    let bin = match &args.nongsan {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the program's folder")?
            .join("nongsan"),
    };
    if !bin.is_file() {
        bail!(
            "no nongsan binary at {} (build it: cargo build --release -p nongsan, or pass --nongsan)",
            bin.display()
        );
    }
    let data =
        std::env::temp_dir().join(format!("nongsan-bench-{}", uuid::Uuid::now_v7().simple()));
    let mut env = Vec::new();
    if wanted.iter().any(|w| w == "crash") {
        env.push((
            "NONGSAN_RESERVATION_ORPHAN_SECS",
            crash::ORPHAN_SECS.to_string(),
        ));
    }
    let meili = if args.meili {
        let url = std::env::var("MEILI_URL")
            .context("--meili needs MEILI_URL (and MEILI_KEY when Meilisearch has a master key)")?;
        let prefix = format!("bench{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let m = Meili {
            url: url.trim_end_matches('/').to_owned(),
            key: std::env::var("MEILI_KEY").ok(),
            index: format!("{prefix}_listings"),
        };
        env.push(("MEILI_URL", m.url.clone()));
        if let Some(k) = &m.key {
            env.push(("MEILI_KEY", k.clone()));
        }
        env.push(("NONGSAN_REDIS_PREFIX", prefix));
        Some(m)
    } else {
        None
    };
    let mut server = Server::start(&bin, &data, env).await?;
    let outcome = run(&args, &wanted, &mut server, meili.as_ref()).await;
    server.stop().await;
    if let Some(m) = &meili {
        m.drop_index().await;
    }
    let report = outcome?;
    println!("{report}");
    if let Some(path) = &args.append {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        std::io::Write::write_all(&mut file, format!("\n{report}").as_bytes())?;
        eprintln!("appended to {}", path.display());
    }
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// `nongsan up`, as a child process on its own data folder.
struct Server {
    child: tokio::process::Child,
    url: String,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    env: Vec<(&'static str, String)>,
}

impl Server {
    async fn start(bin: &Path, data: &Path, mut env: Vec<(&'static str, String)>) -> Result<Self> {
        std::fs::create_dir_all(data)?;
        // One signing key for the run: tokens stay valid across a restart.
        env.push((
            "NONGSAN_AUTH_SECRET",
            format!("bench-{}", uuid::Uuid::now_v7().simple()),
        ));
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Self::spawn(bin, data, port, &env)?;
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            data: data.to_owned(),
            bin: bin.to_owned(),
            port,
            env,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Kills the process with SIGKILL (nothing it was doing finishes; its PostgreSQL
    /// cluster runs on) and starts it again on the same data and port.
    async fn kill_and_restart(&mut self) -> Result<()> {
        if let Some(pid) = self
            .pid()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait().await;
        self.child = Self::spawn(&self.bin, &self.data, self.port, &self.env)?;
        self.wait_ready().await
    }

    fn spawn(
        bin: &Path,
        data: &Path,
        port: u16,
        env: &[(&'static str, String)],
    ) -> Result<tokio::process::Child> {
        Self::command(bin, data, port, env, "up")?
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))
    }

    /// `nongsan <what>` on the server's data, settings and log.
    fn command(
        bin: &Path,
        data: &Path,
        port: u16,
        env: &[(&'static str, String)],
        what: &str,
    ) -> Result<tokio::process::Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("server.log"))?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg(what);
        for (k, _) in std::env::vars() {
            if k.starts_with("NONGSAN_")
                || k.starts_with("MEILI_")
                || k == "DATABASE_URL"
                || k == "REDIS_URL"
            {
                cmd.env_remove(k);
            }
        }
        cmd.env("NONGSAN_DATA_DIR", data)
            .env("NONGSAN_HOST", "127.0.0.1")
            .env("NONGSAN_PORT", port.to_string())
            .env("NONGSAN_ACCESS_TOKEN_TTL_SECS", "3600")
            // The harness's buyers check out far more than a person would.
            .env("NONGSAN_MAX_OPEN_COD_CHECKOUTS", "1000000")
            .env("NONGSAN_MAX_HOLD_SHARE_PERCENT", "100")
            .env("NONGSAN_CLIENT_IP_HEADER", "x-bench-client")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// Stops the server (SIGTERM), runs `nongsan reindex` on its data, starts it again;
    /// answers how long the reindex took.
    async fn reindex(&mut self) -> Result<Duration> {
        self.terminate().await;
        let start = Instant::now();
        let status = Self::command(&self.bin, &self.data, self.port, &self.env, "reindex")?
            .status()
            .await?;
        let took = start.elapsed();
        self.child = Self::spawn(&self.bin, &self.data, self.port, &self.env)?;
        self.wait_ready().await?;
        if !status.success() {
            bail!(
                "nongsan reindex failed ({status}); its log is {}",
                self.data.join("server.log").display()
            );
        }
        Ok(took)
    }

    /// Resident memory of the server now and at its peak, in MiB (`/proc/<pid>/status`).
    fn memory(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        Some((kib("VmRSS:")? / 1024, kib("VmHWM:")? / 1024))
    }

    async fn terminate(&mut self) {
        // SIGTERM lets it stop its cluster (no `kill` program needed).
        if let Some(pid) = self
            .pid()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let _ = self.child.kill().await;
    }

    async fn wait_ready(&self) -> Result<()> {
        let (server, data) = (self, &self.data);
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", server.url)).send().await
                && r.status().is_success()
            {
                break;
            }
            if start.elapsed() > Duration::from_secs(180) {
                bail!(
                    "nongsan did not become ready in 180 s; its log is {}",
                    data.join("server.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "nongsan up at {} (ready in {:.1} s)",
            server.url,
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The private cluster's URL (from `<data>/postgres.json`).
    fn postgres_url(&self) -> Result<String> {
        let info: Value = serde_json::from_slice(&std::fs::read(self.data.join("postgres.json"))?)?;
        Ok(format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            info["user"].as_str().unwrap_or("nongsan"),
            info["password"].as_str().unwrap_or(""),
            info["port"],
            info["database"].as_str().unwrap_or("nongsan"),
        ))
    }

    /// The cluster's postmaster.
    fn postmaster(&self) -> Option<u32> {
        let pid =
            std::fs::read_to_string(self.data.join("postgres").join("postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }

    async fn stop(mut self) {
        self.terminate().await;
    }
}

/// CPU seconds used so far by a process (user + system).
fn cpu_of(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command (which may hold spaces) in parentheses.
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime is field 14 and stime 15 of the whole line: 12 and 13 after the command.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// CPU seconds of a process and its children (PostgreSQL's backends).
fn cpu_of_tree(root: u32) -> f64 {
    let mut total = cpu_of(root);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            let parent = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|p| p.trim().parse::<u32>().ok());
            if parent == Some(root) {
                total += cpu_of(pid);
            }
        }
    }
    total
}

/// CPU seconds of nongsan and of PostgreSQL.
fn cpu(server: &Server) -> (f64, f64) {
    (
        server.pid().map_or(0.0, cpu_of),
        server.postmaster().map_or(0.0, cpu_of_tree),
    )
}

/// One scenario's figures.
struct Figures {
    name: String,
    connections: usize,
    ops: u64,
    errors: u64,
    secs: f64,
    histogram: Histogram<u64>,
    cpu_nongsan: f64,
    cpu_postgres: f64,
    first_error: Option<String>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }

    fn ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    fn row(&self, reference: Option<(&str, f64)>) -> String {
        let per_op = |cpu: f64| {
            if self.ops == 0 {
                "–".to_owned()
            } else {
                format!("{:.2}", cpu * 1000.0 / self.ops as f64)
            }
        };
        let ratio = reference.map_or_else(
            || "–".to_owned(),
            |(name, rate)| format!("{:.2} of {name}", self.rate() / rate.max(1e-9)),
        );
        format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
            self.name,
            self.connections,
            self.rate(),
            self.ms(0.50),
            self.ms(0.95),
            self.ms(0.99),
            self.errors,
            per_op(self.cpu_nongsan),
            per_op(self.cpu_postgres),
            ratio
        )
    }
}

/// Adds a scenario's row; a scenario with errors is noted as broken.
fn keep(
    rows: &mut Vec<String>,
    broken: &mut Vec<String>,
    f: &Figures,
    reference: Option<(&str, f64)>,
) {
    rows.push(f.row(reference));
    if f.errors > 0 {
        broken.push(format!(
            "{}: {} errors, the first {}",
            f.name,
            f.errors,
            f.first_error.as_deref().unwrap_or("?")
        ));
    }
}

/// Runs `op` on `connections` connections for `secs` seconds; an operation answers whether
/// it succeeded (and why not).
async fn drive<F, Fut>(server: &Server, name: &str, connections: usize, secs: u64, op: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = std::result::Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let (cpu_n0, cpu_p0) = cpu(server);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::with_capacity(connections);
    for c in 0..connections {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)
                .unwrap_or_else(|_| unreachable!());
            let (mut ops, mut errors, mut first_error) = (0_u64, 0_u64, None);
            let mut i = 0_u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match op(c, i).await {
                    Ok(()) => {
                        ops += 1;
                        let _ = h.record(
                            u64::try_from(t.elapsed().as_micros())
                                .unwrap_or(u64::MAX)
                                .max(1),
                        );
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                i += 1;
            }
            (h, ops, errors, first_error)
        }));
    }
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).unwrap_or_else(|_| unreachable!());
    let (mut ops, mut errors, mut first_error) = (0, 0, None);
    for t in tasks {
        if let Ok((h, o, e, fe)) = t.await {
            let _ = histogram.add(h);
            ops += o;
            errors += e;
            if first_error.is_none() {
                first_error = fe;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (cpu_n1, cpu_p1) = cpu(server);
    let f = Figures {
        name: name.to_owned(),
        connections,
        ops,
        errors,
        secs,
        histogram,
        cpu_nongsan: cpu_n1 - cpu_n0,
        cpu_postgres: cpu_p1 - cpu_p0,
        first_error,
    };
    eprintln!(
        "{name} ×{connections}: {:.0}/s, p99 {:.2} ms, {} errors{}",
        f.rate(),
        f.ms(0.99),
        f.errors,
        f.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    f
}

/// An HTTP client for the harness, with a client address per caller (the server's per-address
/// limits are for people, not for a load generator).
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
            url: url.to_owned(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        who: usize,
        key: Option<&str>,
    ) -> std::result::Result<(u16, Value), String> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header(
                "x-bench-client",
                format!(
                    "10.{}.{}.{}",
                    (who >> 16) & 255,
                    (who >> 8) & 255,
                    who & 255
                ),
            );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(|e| e.to_string())?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    async fn get(&self, path: &str, who: usize) -> std::result::Result<(), String> {
        let (status, body) = self
            .call(reqwest::Method::GET, path, None, None, who, None)
            .await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    }

    /// Registers an account and signs it in; answers (account id, access token).
    async fn account(&self, n: usize, role: &str) -> Result<(String, String)> {
        let phone = format!("09{}{:07}", if role == "buyer" { 1 } else { 8 }, n);
        let mut body = json!({ "phone": phone, "password": PASSWORD, "display_name": format!("Bench {role} {n}"), "role": role });
        if role == "household" {
            body["household"] = json!({ "name": format!("Hộ {n}"), "address": { "province_code": "68", "commune_code": "24931", "street": "Thôn 1" } });
        }
        let (status, made) = self
            .call(
                reqwest::Method::POST,
                "/v1/accounts",
                None,
                Some(&body),
                n,
                None,
            )
            .await
            .map_err(anyhow::Error::msg)?;
        if status != 201 {
            bail!("registering {role} {n}: {status} {made}");
        }
        let (status, session) = self
            .call(
                reqwest::Method::POST,
                "/v1/sessions",
                None,
                Some(&json!({ "phone": phone, "password": PASSWORD })),
                n,
                None,
            )
            .await
            .map_err(anyhow::Error::msg)?;
        if status != 200 {
            bail!("signing in {role} {n}: {status} {session}");
        }
        Ok((
            session["account"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            session["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ))
    }
}

/// Runs `f` over `items` with `width` at a time, in order of completion; stops at the first
/// error.
async fn in_parallel<T, R, F, Fut>(items: Vec<T>, width: usize, f: F) -> Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<R>>,
{
    use futures_util::StreamExt;
    futures_util::stream::iter(items.into_iter().map(f))
        .buffer_unordered(width.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// The Meilisearch a `--meili` run searches through, and the run's index in it.
#[derive(Clone)]
struct Meili {
    url: String,
    key: Option<String>,
    index: String,
}

impl Meili {
    /// A request to `path` with the key, if any.
    fn request(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let req = http.request(method, format!("{}{path}", self.url));
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    /// `POST /indexes/{index}/search` with `body`; answers the hits' total.
    async fn search(
        &self,
        http: &reqwest::Client,
        body: &Value,
    ) -> std::result::Result<u64, String> {
        let res = self
            .request(
                http,
                reqwest::Method::POST,
                &format!("/indexes/{}/search", self.index),
            )
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status();
        let answer: Value = res.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status} {answer}"));
        }
        Ok(answer["totalHits"]
            .as_u64()
            .or_else(|| answer["estimatedTotalHits"].as_u64())
            .unwrap_or(0))
    }

    /// Deletes the run's index: it holds every listing of the run.
    async fn drop_index(&self) {
        let path = format!("/indexes/{}", self.index);
        match self
            .request(&reqwest::Client::new(), reqwest::Method::DELETE, &path)
            .send()
            .await
        {
            Ok(res) if res.status().is_success() => {}
            Ok(res) => eprintln!(
                "the run's Meilisearch index {} was not deleted: {}",
                self.index,
                res.status()
            ),
            Err(e) => eprintln!(
                "the run's Meilisearch index {} was not deleted: {e}",
                self.index
            ),
        }
    }

    /// Meilisearch's version, as it says.
    async fn version(&self) -> String {
        let answer = self
            .request(&reqwest::Client::new(), reqwest::Method::GET, "/version")
            .send()
            .await;
        match answer {
            Ok(res) => res.json::<Value>().await.map_or_else(
                |_| "?".to_owned(),
                |v| v["pkgVersion"].as_str().unwrap_or("?").to_owned(),
            ),
            Err(_) => "?".to_owned(),
        }
    }
}

async fn run(
    args: &Args,
    wanted: &[String],
    server: &mut Server,
    meili: Option<&Meili>,
) -> Result<String> {
    let api = Api::new(&server.url);
    let started = Instant::now();
    // Sellers and their listings, generated from the demo products (seeded).
    let households = in_parallel((0..args.households).collect(), 4, |n| {
        let api = api.clone();
        async move { api.account(n, "household").await }
    })
    .await?;
    let generated = nongsan_search::generate::listings(2026, args.listings, args.households.max(1));
    let done = Arc::new(AtomicUsize::new(0));
    let total = generated.len();
    let listings: Vec<(String, usize)> = in_parallel(generated, 8, |g| {
        let api = api.clone();
        let seller = g.household % households.len();
        let token = households[seller].1.clone();
        let done = done.clone();
        async move {
            let (status, made) = api
                .call(reqwest::Method::POST, "/v1/listings", Some(&token), Some(&g.listing_body()), g.household, None)
                .await
                .map_err(anyhow::Error::msg)?;
            if status != 201 {
                bail!("creating a listing: {status} {made}");
            }
            let id = made["id"].as_str().unwrap_or_default().to_owned();
            // Every listing gets stock here (the checkouts need it).
            let stock = g.stock.max(1000);
            let lot = json!({ "lot_code": format!("G-{}", g.n), "harvest_date": "2026-11-20", "quantity": stock.to_string() });
            let (status, body) = api
                .call(reqwest::Method::POST, &format!("/v1/listings/{id}/lots"), Some(&token), Some(&lot), g.household, None)
                .await
                .map_err(anyhow::Error::msg)?;
            if status != 201 {
                bail!("adding a lot: {status} {body}");
            }
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(5000) || n == total {
                eprintln!("loaded {n} of {total} listings");
            }
            Ok((id, seller))
        }
    })
    .await?;
    let load_secs = started.elapsed().as_secs_f64();
    // The index follows: wait until every listing is searchable.
    let start = Instant::now();
    loop {
        let (_, r) = api
            .call(
                reqwest::Method::GET,
                "/v1/search?limit=1&in_stock=false",
                None,
                None,
                0,
                None,
            )
            .await
            .map_err(anyhow::Error::msg)?;
        if r["total"].as_u64() >= Some(listings.len() as u64) {
            break;
        }
        if start.elapsed() > Duration::from_secs(1800) {
            bail!("the search index did not catch up in 30 min");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caught_up = start.elapsed().as_secs_f64();
    eprintln!(
        "{} listings loaded in {load_secs:.1} s; searchable {caught_up:.1} s after the last write",
        listings.len()
    );
    let ids: Arc<Vec<String>> = Arc::new(listings.iter().map(|l| l.0.clone()).collect());

    let mut rows: Vec<String> = Vec::new();
    let mut broken: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut bare: Option<f64> = None;
    if wanted
        .iter()
        .any(|w| w == "bare" || w.starts_with("listing") || w == "search")
    {
        let a = api.clone();
        let f = drive(
            server,
            "bare endpoint (`/healthz`)",
            args.connections,
            args.secs,
            move |c, _| {
                let a = a.clone();
                async move { a.get("/healthz", c).await }
            },
        )
        .await;
        bare = Some(f.rate());
        keep(&mut rows, &mut broken, &f, None);
    }
    let reference = bare.map(|b| ("bare", b));
    if wanted.iter().any(|w| w == "listing-read") {
        let (a, ids) = (api.clone(), ids.clone());
        let f = drive(
            server,
            "`GET /v1/listings/{id}`",
            args.connections,
            args.secs,
            move |c, i| {
                let (a, ids) = (a.clone(), ids.clone());
                async move {
                    let id =
                        &ids[(c * 7919 + usize::try_from(i).unwrap_or(0) * 104_729) % ids.len()];
                    a.get(&format!("/v1/listings/{id}"), c).await
                }
            },
        )
        .await;
        keep(&mut rows, &mut broken, &f, reference);
    }
    if wanted.iter().any(|w| w == "listing-page") {
        let a = api.clone();
        let f = drive(
            server,
            "`GET /v1/listings?limit=20`",
            args.connections,
            args.secs,
            move |c, _| {
                let a = a.clone();
                async move { a.get("/v1/listings?limit=20", c).await }
            },
        )
        .await;
        keep(&mut rows, &mut broken, &f, reference);
    }
    if wanted.iter().any(|w| w == "search") {
        // The search mix (accented, diacritic-free, typo, prefix and multi-word queries, a
        // third with filters and facets), as `/v1/search` paths and as the bodies nongsan's
        // Meilisearch adapter sends for them.
        let mix = nongsan_search::generate::query_mix();
        let paths: Arc<Vec<String>> = Arc::new(
            mix.iter()
                .map(nongsan_search::generate::search_path)
                .collect(),
        );
        let bodies: Arc<Vec<Value>> = Arc::new(
            mix.iter()
                .map(nongsan_search::meili::request_body)
                .collect::<Result<_>>()?,
        );
        let direct = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        if let Some(m) = meili {
            // The same searches: nongsan and Meilisearch count the same hits for each.
            for (path, body) in paths.iter().zip(bodies.iter()) {
                let (_, through) = api
                    .call(reqwest::Method::GET, path, None, None, 0, None)
                    .await
                    .map_err(anyhow::Error::msg)?;
                let direct_total = m.search(&direct, body).await.map_err(anyhow::Error::msg)?;
                if through["total"].as_u64() != Some(direct_total) {
                    broken.push(format!(
                        "{path} counts {} through nongsan and {direct_total} in Meilisearch directly",
                        through["total"]
                    ));
                }
            }
        }
        let name = if meili.is_some() {
            "search mix through Meilisearch"
        } else {
            "search mix"
        };
        for conns in args
            .search_connections
            .split(',')
            .filter_map(|c| c.trim().parse::<usize>().ok())
        {
            let mut reference = reference;
            if let Some(m) = meili {
                let (m, http, bodies) = (Arc::new(m.clone()), direct.clone(), bodies.clone());
                let f = drive(
                    server,
                    "Meilisearch directly, the same searches",
                    conns,
                    args.secs,
                    move |c, i| {
                        let (m, http, bodies) = (m.clone(), http.clone(), bodies.clone());
                        async move {
                            let body =
                                &bodies[(c + usize::try_from(i).unwrap_or(0)) % bodies.len()];
                            m.search(&http, body).await.map(|_| ())
                        }
                    },
                )
                .await;
                reference = Some(("Meilisearch directly", f.rate()));
                keep(&mut rows, &mut broken, &f, None);
            }
            let (a, paths) = (api.clone(), paths.clone());
            let f = drive(server, name, conns, args.secs, move |c, i| {
                let (a, paths) = (a.clone(), paths.clone());
                async move {
                    let path = &paths[(c + usize::try_from(i).unwrap_or(0)) % paths.len()];
                    a.get(path, c).await
                }
            })
            .await;
            keep(&mut rows, &mut broken, &f, reference);
        }
    }
    let mut tpcb: Option<f64> = None;
    if wanted.iter().any(|w| w == "pgbench" || w == "checkout") {
        match pgbench(server, args.connections, args.secs).await {
            Ok(tps) => {
                tpcb = Some(tps);
                rows.push(format!(
                    "| pgbench TPC-B (same cluster) | {} | {tps:.0} | – | – | – | – | – | – | – |",
                    args.connections
                ));
            }
            Err(e) => notes.push(format!("pgbench did not run: {e:#}")),
        }
    }
    if wanted.iter().any(|w| w == "checkout") {
        // Buyers, each with a token; every checkout takes one unit of two sellers' listings.
        let buyers = in_parallel((0..args.connections * 4).collect(), 4, |n| {
            let api = api.clone();
            async move { api.account(100_000 + n, "buyer").await }
        })
        .await?;
        // Listings by seller: every checkout takes one unit from each of two sellers.
        let mut by_seller: Vec<Vec<String>> = vec![Vec::new(); households.len()];
        for (id, h) in &listings {
            by_seller[*h].push(id.clone());
        }
        by_seller.retain(|l| !l.is_empty());
        if by_seller.len() < 2 {
            bail!("the checkout scenario needs listings of at least two households");
        }
        let (a, buyers, sellers) = (api.clone(), Arc::new(buyers), Arc::new(by_seller));
        let f = drive(server, "checkout, 2 sellers, cash on delivery", args.connections, args.secs, move |c, i| {
            let (a, buyers, sellers) = (a.clone(), buyers.clone(), sellers.clone());
            async move {
                let i = usize::try_from(i).unwrap_or(0);
                let buyer = &buyers[(c + i * 13) % buyers.len()];
                let s = (c * 31 + i * 17) % sellers.len();
                let t = (s + 1) % sellers.len();
                let first = &sellers[s][(c + i) % sellers[s].len()];
                let second = &sellers[t][(c * 7 + i) % sellers[t].len()];
                let body = json!({
                    "lines": [{ "listing_id": first, "quantity": "1" }, { "listing_id": second, "quantity": "1" }],
                    "delivery": { "province_code": "68", "commune_code": "24931", "street": "12 Lê Lợi", "recipient_name": "Nguyễn Thị Hoa", "recipient_phone": "0987654321" },
                    "payment_method": "cod",
                });
                let key = format!("bench-{c}-{i}");
                let (status, made) = a
                    .call(reqwest::Method::POST, "/v1/checkouts", Some(&buyer.1), Some(&body), c, Some(&key))
                    .await?;
                if status == 201 { Ok(()) } else { Err(format!("{status} {made}")) }
            }
        })
        .await;
        keep(
            &mut rows,
            &mut broken,
            &f,
            tpcb.map(|t| ("pgbench TPC-B", t)),
        );
    }
    if wanted.iter().any(|w| w == "index-lag") {
        let f = index_lag(&api, server, args, &households, &listings).await;
        keep(&mut rows, &mut broken, &f, None);
    }
    if wanted.iter().any(|w| w == "hot-item") {
        notes.push(hot_item(&api, server, args, &households).await?);
    }
    // The server's memory after the load and every scenario above (the reindex and the crash
    // rounds start it again).
    let memory = server.memory();
    if wanted.iter().any(|w| w == "reindex") {
        let took = server.reindex().await?;
        notes.push(format!(
            "Reindex: `nongsan reindex` rebuilt the search index of {} listings in {:.1} s (the server stopped; the time includes starting and stopping the private PostgreSQL).",
            listings.len(),
            took.as_secs_f64()
        ));
    }
    if wanted.iter().any(|w| w == "crash") {
        notes.push(crash::run(&api, server, args, &households, &listings).await?);
    }

    let mut out = String::new();
    let machine = machine();
    let _ = writeln!(
        out,
        "## {} — {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        if args.smoke {
            "smoke run (figures not comparable)"
        } else {
            "full run"
        }
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "- machine: {machine}");
    let _ = writeln!(
        out,
        "- nongsan: `nongsan up` (one process, private PostgreSQL {}), release build {}; search {}",
        postgres_version().await,
        env!("CARGO_PKG_VERSION"),
        match meili {
            Some(m) => format!(
                "through Meilisearch {} at {} (index `{}`)",
                m.version().await,
                m.url,
                m.index
            ),
            None => "on the embedded engine".to_owned(),
        }
    );
    let _ = writeln!(
        out,
        "- command: `nongsan-bench {}`",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(
        out,
        "- data: {} generated listings (seed 2026) of {} households, loaded through the API in {load_secs:.1} s ({:.0}/s, listing and lot); all searchable {caught_up:.1} s after the last write",
        listings.len(),
        args.households,
        listings.len() as f64 / load_secs.max(1e-9)
    );
    if let Some((now, peak)) = memory {
        let _ = writeln!(
            out,
            "- nongsan's resident memory after the load and the scenarios: {now} MiB, at its peak {peak} MiB"
        );
    }
    let _ = writeln!(
        out,
        "- each scenario {} s; CPU is per operation, of the nongsan process and of PostgreSQL (postmaster and backends)",
        args.secs
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| scenario | connections | ops/s | p50 ms | p95 ms | p99 ms | errors | nongsan CPU ms/op | PostgreSQL CPU ms/op | ratio to reference |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in rows {
        let _ = writeln!(out, "{r}");
    }
    for n in notes {
        let _ = writeln!(out, "\n{n}");
    }
    if !broken.is_empty() {
        bail!("{out}\nscenarios with errors: {}", broken.join("; "));
    }
    Ok(out)
}

/// Renames followed by searches: one in this many.
const PROBED: u64 = 5;

/// Sellers rename `--lag-writes` listings a second for `--secs`; after every fifth rename is
/// answered, the new title's word is searched every 20 ms until the listing is found. The
/// figures are of that delay (change answered → found), under the write load; an edit not
/// found in 30 s is an error.
async fn index_lag(
    api: &Api,
    server: &Server,
    args: &Args,
    households: &[(String, String)],
    listings: &[(String, usize)],
) -> Figures {
    let (cpu_n0, cpu_p0) = cpu(server);
    let start = Instant::now();
    let writes = u64::from(args.lag_writes.max(1));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / writes as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let run = &uuid::Uuid::now_v7().simple().to_string()[24..];
    for n in 0..writes * args.secs {
        tick.tick().await;
        let Some((id, seller)) =
            listings.get(usize::try_from(n).unwrap_or(0) * 7 % listings.len().max(1))
        else {
            break;
        };
        let (api, id, token) = (api.clone(), id.clone(), households[*seller].1.clone());
        // One rename in PROBED is followed by searches: probing every rename every 20 ms
        // would be a search load of its own that grows with the lag it measures.
        let probed = n % PROBED == 0;
        // A word no other title has (the run, then the edit's number).
        let word = format!("lag{run}x{n:07}");
        tasks.spawn(async move {
            let body = json!({ "title": format!("Bưởi da xanh {word}") });
            let (status, answer) = api
                .call(
                    reqwest::Method::PATCH,
                    &format!("/v1/listings/{id}"),
                    Some(&token),
                    Some(&body),
                    0,
                    None,
                )
                .await?;
            if status != 200 {
                return Err(format!("renaming: {status} {answer}"));
            }
            let changed = Instant::now();
            if !probed {
                return Ok(None);
            }
            loop {
                let (status, found) = api
                    .call(
                        reqwest::Method::GET,
                        &format!("/v1/search?q={word}&in_stock=false&limit=5"),
                        None,
                        None,
                        1,
                        None,
                    )
                    .await?;
                if status != 200 {
                    return Err(format!("searching: {status} {found}"));
                }
                let hits = found["items"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                if hits.iter().any(|h| h["id"].as_str() == Some(id.as_str())) {
                    return Ok(Some(changed.elapsed()));
                }
                if changed.elapsed() > Duration::from_secs(30) {
                    return Err(format!("{word} not found 30 s after the change"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let renaming = start.elapsed().as_secs_f64();
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).unwrap_or_else(|_| unreachable!());
    let (mut ops, mut errors, mut first_error) = (0, 0, None);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(lag)) => {
                ops += 1;
                if let Some(lag) = lag {
                    let _ =
                        histogram.record(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX).max(1));
                }
            }
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let (cpu_n1, cpu_p1) = cpu(server);
    let f = Figures {
        name: format!(
            "index lag: a rename answered → found by search, {writes} renames/s, one in {PROBED} searched every 20 ms (ops/s: renames; latency: the lag)"
        ),
        connections: 0,
        ops,
        errors,
        secs: renaming,
        histogram,
        cpu_nongsan: cpu_n1 - cpu_n0,
        cpu_postgres: cpu_p1 - cpu_p0,
        first_error,
    };
    eprintln!(
        "index lag: {} renames found, p50 {:.0} ms, p99 {:.0} ms, {} errors",
        f.ops,
        f.ms(0.5),
        f.ms(0.99),
        f.errors
    );
    f
}

/// 1,000 buyers (or `--hot-buyers`) for a tenth as many units of one listing: exactly that
/// many checkouts succeed, and the listing's stock is all reserved, never more.
async fn hot_item(
    api: &Api,
    server: &Server,
    args: &Args,
    households: &[(String, String)],
) -> Result<String> {
    let buyers = args.hot_buyers.max(10);
    let units = buyers / 10;
    let (_, seller_token) = households.first().context("a household")?.clone();
    let mut body = nongsan_search::generate::listings(7, 1, 1)[0].listing_body();
    body["title"] = json!("Sầu riêng Ri6 (hàng hiếm)");
    let (status, made) = api
        .call(
            reqwest::Method::POST,
            "/v1/listings",
            Some(&seller_token),
            Some(&body),
            0,
            None,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    if status != 201 {
        bail!("hot item: {status} {made}");
    }
    let listing = made["id"].as_str().unwrap_or_default().to_owned();
    let lot =
        json!({ "lot_code": "HOT-1", "harvest_date": "2026-11-20", "quantity": units.to_string() });
    api.call(
        reqwest::Method::POST,
        &format!("/v1/listings/{listing}/lots"),
        Some(&seller_token),
        Some(&lot),
        0,
        None,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let accounts = in_parallel((0..buyers).collect(), 4, |n| {
        let api = api.clone();
        async move { api.account(200_000 + n, "buyer").await }
    })
    .await?;
    let (cpu_n0, _) = cpu(server);
    let start = Instant::now();
    let results = in_parallel(accounts.into_iter().enumerate().collect(), 64, |(n, (_, token))| {
        let (api, listing) = (api.clone(), listing.clone());
        async move {
            let body = json!({
                "lines": [{ "listing_id": listing, "quantity": "1" }],
                "delivery": { "province_code": "68", "commune_code": "24931", "street": "12 Lê Lợi", "recipient_name": "Nguyễn Thị Hoa", "recipient_phone": "0987654321" },
                "payment_method": "cod",
            });
            let (status, _) = api
                .call(reqwest::Method::POST, "/v1/checkouts", Some(&token), Some(&body), n, Some(&format!("hot-{n}")))
                .await
                .map_err(anyhow::Error::msg)?;
            Ok(status)
        }
    })
    .await?;
    let secs = start.elapsed().as_secs_f64();
    let (cpu_n1, _) = cpu(server);
    let sold = results.iter().filter(|s| **s == 201).count();
    let refused = results.iter().filter(|s| **s == 409).count();
    let other = results.len() - sold - refused;
    let (_, stock) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/listings/{listing}"),
            None,
            None,
            0,
            None,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    let reserved = stock["stock"]["reserved"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    let available = stock["stock"]["available"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    let line = format!(
        "Hot item: {buyers} buyers at once (64 in flight) for {units} units: {sold} checkouts taken, {refused} refused (409), {other} other; the listing then holds {reserved} reserved and {available} available. {:.1} s, nongsan CPU {:.1} s.",
        secs,
        cpu_n1 - cpu_n0
    );
    eprintln!("{line}");
    if sold != units || reserved != units.to_string() || available != "0" || other != 0 {
        bail!("the hot item was not sold exactly: {line}");
    }
    Ok(line)
}

/// pgbench's TPC-B-like transactions per second on the same cluster, `clients` clients.
async fn pgbench(server: &Server, clients: usize, secs: u64) -> Result<f64> {
    let url = server.postgres_url()?;
    let bindir = [
        "/usr/lib/postgresql/17/bin",
        "/usr/lib/postgresql/16/bin",
        "/usr/lib/postgresql/15/bin",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|d| d.join("pgbench").is_file())
    .context("pgbench not found in /usr/lib/postgresql/*/bin")?;
    let init = tokio::process::Command::new(bindir.join("pgbench"))
        .args(["-i", "-q", "-s", "1", "-I", "dtgvp", &url])
        .output()
        .await?;
    if !init.status.success() {
        bail!("pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    }
    let run = tokio::process::Command::new(bindir.join("pgbench"))
        .args([
            "-n",
            "-b",
            "tpcb-like",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &secs.to_string(),
            &url,
        ])
        .output()
        .await?;
    let out = String::from_utf8_lossy(&run.stdout);
    let tps = out
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse::<f64>().ok())
        .with_context(|| {
            format!(
                "no tps in pgbench's output: {out}{}",
                String::from_utf8_lossy(&run.stderr)
            )
        })?;
    eprintln!("pgbench TPC-B ×{clients}: {tps:.0} tps");
    Ok(tps)
}

/// Cores, memory and CPU model.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0 / 1024.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores, {mem_gib:.1} GiB, {model}")
}

async fn postgres_version() -> String {
    for dir in [
        "/usr/lib/postgresql/17/bin",
        "/usr/lib/postgresql/16/bin",
        "/usr/lib/postgresql/15/bin",
    ] {
        if let Ok(out) = tokio::process::Command::new(format!("{dir}/postgres"))
            .arg("--version")
            .output()
            .await
            && out.status.success()
        {
            return String::from_utf8_lossy(&out.stdout)
                .trim()
                .trim_start_matches("postgres (PostgreSQL) ")
                .to_owned();
        }
    }
    "?".to_owned()
}
