//! The nongsan the harness runs, in either shape: `nongsan up` (the three services in one
//! process), or `nongsan serve listing|order|payment` as three processes calling each other,
//! with events through a `redis-server` the harness starts. Either way on one data folder and
//! its private PostgreSQL cluster, which outlives any one of the processes.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nongsan::ServiceName;
use nongsan_shared::embedded_pg::{self, ConnInfo};
use secrecy::ExposeSecret;
use serde_json::Value;

/// How nongsan runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// `nongsan up`: one process.
    One,
    /// `nongsan serve listing|order|payment` and Redis.
    Three,
}

/// One nongsan process.
struct Proc {
    /// `up`, `listing`, `order` or `payment`.
    name: &'static str,
    child: tokio::process::Child,
    port: u16,
}

/// The command line of the process `name`.
fn args_of(name: &'static str) -> Vec<&'static str> {
    if name == "up" {
        vec!["up"]
    } else {
        vec!["serve", name]
    }
}

impl Proc {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> Option<rustix::process::Pid> {
        self.child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
    }

    fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = self.pid() {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

/// The running nongsan: its processes, data folder and settings.
pub struct Server {
    pub shape: Shape,
    procs: Vec<Proc>,
    pub data: PathBuf,
    bin: PathBuf,
    env: Vec<(&'static str, String)>,
    /// The three-process shape's Redis.
    pub redis: Option<Redis>,
}

impl Server {
    pub async fn start(
        bin: &Path,
        data: &Path,
        mut env: Vec<(&'static str, String)>,
        shape: Shape,
    ) -> Result<Self> {
        std::fs::create_dir_all(data)?;
        // One signing key for the run: tokens stay valid across a restart.
        env.push((
            "NONGSAN_AUTH_SECRET",
            format!("bench-{}", uuid::Uuid::now_v7().simple()),
        ));
        let names: Vec<&'static str> = match shape {
            Shape::One => vec!["up"],
            Shape::Three => ServiceName::ALL.map(ServiceName::name).to_vec(),
        };
        // Free ports, one per process and one for Redis: all held open until every one is
        // chosen, so that no two are the same.
        let held = (0..=names.len())
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut ports = held
            .iter()
            .map(|l| Ok(l.local_addr()?.port()))
            .collect::<Result<Vec<u16>>>()?;
        drop(held);
        let redis_port = ports.pop().context("a port for Redis")?;
        let redis = if shape == Shape::Three {
            let redis = Redis::start(&data.join("redis"), redis_port).await?;
            env.push(("REDIS_URL", redis.url()));
            for (service, port) in ServiceName::ALL.into_iter().zip(&ports) {
                let var = match service {
                    ServiceName::Listing => "NONGSAN_LISTING_URL",
                    ServiceName::Order => "NONGSAN_ORDER_URL",
                    ServiceName::Payment => "NONGSAN_PAYMENT_URL",
                };
                env.push((var, format!("http://127.0.0.1:{port}")));
            }
            Some(redis)
        } else {
            None
        };
        let mut server = Self {
            shape,
            procs: Vec::new(),
            data: data.to_owned(),
            bin: bin.to_owned(),
            env,
            redis,
        };
        match server.launch_all(&names, ports).await {
            Ok(()) => Ok(server),
            Err(e) => {
                // Those started stop, the last one stopping the cluster; Redis too.
                server.stop().await;
                Err(e)
            }
        }
    }

    /// Starts the processes one after another (each runs its own migrations on the shared
    /// cluster), and waits until every one is ready.
    async fn launch_all(&mut self, names: &[&'static str], ports: Vec<u16>) -> Result<()> {
        for (name, port) in names.iter().zip(ports) {
            let child = self.spawn(name, port)?;
            self.procs.push(Proc { name, child, port });
            let proc = self.procs.last().context("a process")?;
            self.wait(proc, "/healthz").await?;
        }
        self.wait_ready().await
    }

    /// Starts the `i`th process again on its port, and waits until it is alive.
    async fn respawn(&mut self, i: usize) -> Result<()> {
        let (name, port) = (self.procs[i].name, self.procs[i].port);
        self.procs[i].child = self.spawn(name, port)?;
        self.wait(&self.procs[i], "/healthz").await
    }

    /// The base URL of the process serving `path`.
    pub fn url_for(&self, service: ServiceName) -> String {
        self.procs
            .iter()
            .find(|p| p.name == service.name() || p.name == "up")
            .map_or_else(String::new, Proc::url)
    }

    /// Its processes' names, in start order.
    pub fn names(&self) -> Vec<&'static str> {
        self.procs.iter().map(|p| p.name).collect()
    }

    /// What the report calls this deployment.
    pub fn describe(&self) -> &'static str {
        match self.shape {
            Shape::One => "`nongsan up` (one process",
            Shape::Three => {
                "`nongsan serve listing`, `serve order` and `serve payment` (three processes, events through Redis"
            }
        }
    }

    fn position(&self, name: &str) -> Result<usize> {
        self.procs
            .iter()
            .position(|p| p.name == name)
            .with_context(|| format!("no process {name}"))
    }

    /// Kills the process `name` with SIGKILL: nothing it was doing finishes; the PostgreSQL
    /// cluster runs on.
    pub async fn kill(&mut self, name: &str) -> Result<()> {
        let i = self.position(name)?;
        self.procs[i].signal(rustix::process::Signal::KILL);
        let _ = self.procs[i].child.wait().await;
        Ok(())
    }

    /// Starts the process `name` again on the same data and port, and waits until every
    /// process is ready.
    pub async fn restart(&mut self, name: &str) -> Result<()> {
        let i = self.position(name)?;
        self.respawn(i).await?;
        self.wait_ready().await
    }

    /// `nongsan <args>` on the server's data, settings and log.
    fn command(&self, args: &[&str], port: u16) -> Result<tokio::process::Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join("server.log"))?;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("NONGSAN_")
                || k.starts_with("MEILI_")
                || k == "DATABASE_URL"
                || k == "REDIS_URL"
            {
                cmd.env_remove(k);
            }
        }
        cmd.env("NONGSAN_DATA_DIR", &self.data)
            .env("NONGSAN_HOST", "127.0.0.1")
            .env("NONGSAN_PORT", port.to_string())
            .env("NONGSAN_ACCESS_TOKEN_TTL_SECS", "3600")
            // The harness's buyers check out far more than a person would.
            .env("NONGSAN_MAX_OPEN_COD_CHECKOUTS", "1000000")
            .env("NONGSAN_MAX_HOLD_SHARE_PERCENT", "100")
            .env("NONGSAN_CLIENT_IP_HEADER", "x-bench-client")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        Ok(cmd)
    }

    fn spawn(&self, name: &'static str, port: u16) -> Result<tokio::process::Child> {
        self.command(&args_of(name), port)?
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))
    }

    /// Stops every process (SIGTERM), runs `nongsan reindex` on the data, starts them again;
    /// answers how long the reindex took.
    pub async fn reindex(&mut self) -> Result<Duration> {
        self.terminate().await;
        let start = Instant::now();
        let status = self.command(&["reindex"], 0)?.status().await?;
        let took = start.elapsed();
        for i in 0..self.procs.len() {
            self.respawn(i).await?;
        }
        self.wait_ready().await?;
        if !status.success() {
            bail!(
                "nongsan reindex failed ({status}); its log is {}",
                self.data.join("server.log").display()
            );
        }
        Ok(took)
    }

    /// Resident memory of each process now and at its peak, in MiB (`/proc/<pid>/status`).
    pub fn memory(&self) -> Vec<(&'static str, u64, u64)> {
        self.procs
            .iter()
            .filter_map(|p| {
                let status =
                    std::fs::read_to_string(format!("/proc/{}/status", p.child.id()?)).ok()?;
                let kib = |field: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(field))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                };
                Some((p.name, kib("VmRSS:")? / 1024, kib("VmHWM:")? / 1024))
            })
            .collect()
    }

    /// Stops every process, the last first (SIGTERM lets the last one leaving stop the
    /// cluster; no `kill` program needed).
    pub async fn terminate(&mut self) {
        for p in self.procs.iter_mut().rev() {
            p.signal(rustix::process::Signal::TERM);
            let _ = tokio::time::timeout(Duration::from_secs(30), p.child.wait()).await;
            let _ = p.child.kill().await;
        }
    }

    async fn wait(&self, proc: &Proc, path: &str) -> Result<()> {
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{}{path}", proc.url())).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(180) {
                bail!(
                    "nongsan {} did not answer {path} in 180 s; its log is {}",
                    args_of(proc.name).join(" "),
                    self.data.join("server.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every process says it is ready.
    pub async fn wait_ready(&self) -> Result<()> {
        let start = Instant::now();
        for p in &self.procs {
            self.wait(p, "/readyz").await?;
        }
        eprintln!(
            "nongsan {} ready ({:.1} s)",
            self.names().join(", "),
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// What each process's `/readyz` answers now, all asked at once: `name status` and, when
    /// not ready, the checks that failed, with the time the answer took (a dependency that is
    /// down must not make readiness hang).
    pub async fn readiness(&self) -> Vec<String> {
        let http = reqwest::Client::new();
        let asks = self.procs.iter().map(|p| {
            let http = http.clone();
            async move {
                let start = Instant::now();
                let answer = http
                    .get(format!("{}/readyz", p.url()))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                let what = match answer {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        let down: Vec<&str> = body["checks"]
                            .as_array()
                            .map(|checks| {
                                checks
                                    .iter()
                                    .filter(|c| c["ok"] == Value::Bool(false))
                                    .filter_map(|c| c["name"].as_str())
                                    .collect()
                            })
                            .unwrap_or_default();
                        if down.is_empty() {
                            format!("{} {status}", p.name)
                        } else {
                            format!("{} {status} ({} down)", p.name, down.join(", "))
                        }
                    }
                    Err(e) => format!("{} no answer ({e})", p.name),
                };
                format!("{what} in {:.1} s", start.elapsed().as_secs_f64())
            }
        });
        futures_util::future::join_all(asks).await
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().filter_map(|p| p.child.id()).collect()
    }

    /// The private cluster's URL (from `<data>/postgres.json`).
    pub fn postgres_url(&self) -> Result<String> {
        let info: ConnInfo =
            serde_json::from_slice(&std::fs::read(self.data.join("postgres.json"))?)?;
        // Through the cluster's Unix socket when the server listens on one, as nongsan
        // connects: pgbench, the reference, goes the same way.
        let cluster = std::fs::canonicalize(self.data.join("postgres"))?;
        let socket = embedded_pg::listening_socket(&cluster, info.port);
        Ok(info
            .url_of(&info.database, socket.as_deref())
            .expose_secret()
            .to_owned())
    }

    /// The cluster's postmaster.
    pub fn postmaster(&self) -> Option<u32> {
        let pid =
            std::fs::read_to_string(self.data.join("postgres").join("postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }

    pub async fn stop(mut self) {
        self.terminate().await;
        if let Some(r) = &mut self.redis {
            r.kill().await;
        }
    }
}

/// A `redis-server` of the run's own, append-only with an fsync per write, so that what
/// it acknowledged survives its being killed (the event streams must).
pub struct Redis {
    child: Option<tokio::process::Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    async fn start(dir: &Path, port: u16) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut redis = Self {
            child: None,
            port,
            dir: dir.to_owned(),
        };
        redis.launch().await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Starts it (again) on its port and folder.
    pub async fn launch(&mut self) -> Result<()> {
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("the three-process shape needs redis-server (apt-get install redis-server)")?;
        self.child = Some(child);
        let start = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("redis-server on port {} did not answer", self.port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Kills it with SIGKILL.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

/// The unit of `/proc`'s CPU times (`getconf CLK_TCK`): 100 on Linux's common architectures,
/// asked rather than assumed; 100 when `getconf` cannot say.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let asked = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .filter(|t| *t > 0.0);
        asked.unwrap_or_else(|| {
            eprintln!("getconf CLK_TCK gave no answer: CPU times read as hundredths of a second");
            100.0
        })
    })
}

/// The clock-tick fields of `/proc/<pid>/stat` after the command (which may hold spaces) in
/// parentheses: utime, stime, cutime and cstime, in seconds.
fn times_of(pid: u32) -> [f64; 4] {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return [0.0; 4];
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return [0.0; 4];
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime is field 14 of the whole line, stime 15, cutime 16 and cstime 17: 12 to 15 after
    // the command.
    let per_second = clock_ticks_per_second();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0) as f64
            / per_second
    };
    [ticks(11), ticks(12), ticks(13), ticks(14)]
}

/// CPU seconds used so far by a process (user + system).
pub fn cpu_of(pid: u32) -> f64 {
    let [user, system, _, _] = times_of(pid);
    user + system
}

/// CPU seconds of a process and of its children (PostgreSQL's backends): those running, and
/// those that ended and were waited for (its cutime and cstime). A connection closed within
/// a window (pgbench's, at the end of its run) is counted whole. A child waited for while its
/// siblings are read would be counted in neither, so the reading is taken again when the
/// process's children's times moved meanwhile.
fn cpu_of_tree(root: u32) -> f64 {
    let mut total = 0.0;
    for _ in 0..5 {
        let [user, system, children_user, children_system] = times_of(root);
        total = user + system + children_user + children_system + cpu_of_children(root);
        let [_, _, children_user_after, children_system_after] = times_of(root);
        if (children_user_after, children_system_after) == (children_user, children_system) {
            break;
        }
    }
    total
}

/// CPU seconds of the running children of `root`.
fn cpu_of_children(root: u32) -> f64 {
    let mut total = 0.0;
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

/// CPU seconds of the three-process shape's Redis; 0 in one process.
pub fn cpu_redis(server: &Server) -> f64 {
    server
        .redis
        .as_ref()
        .and_then(Redis::pid)
        .map_or(0.0, cpu_of)
}

/// CPU seconds of nongsan (all its processes) and of PostgreSQL.
pub fn cpu(server: &Server) -> (f64, f64) {
    (
        server.pids().into_iter().map(cpu_of).sum(),
        server.postmaster().map_or(0.0, cpu_of_tree),
    )
}
