//! `nongsan` as real processes: one command, or the three services of the split shape.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{
    AUTH_SECRET, TestDb,
    client::{Client, Request},
    free_port, free_ports, servers,
};

/// Sends a signal to a process.
pub fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// The `nongsan` binary with an environment cleared of nongsan's own variables.
pub fn nongsan() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nongsan"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NONGSAN_")
            || [
                "DATABASE_URL",
                "REDIS_URL",
                "MEILI_URL",
                "MEILI_KEY",
                "RUST_LOG",
            ]
            .contains(&k.as_str())
        {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A `nongsan` process that is killed when dropped; its stderr goes to a file.
#[derive(Debug)]
pub struct NongsanProcess {
    /// The child.
    pub child: Child,
    /// Its base URL.
    pub url: String,
    /// Where its log goes.
    pub log: PathBuf,
}

impl NongsanProcess {
    /// Starts `nongsan <args>` on a free port with `env`, and waits until it serves.
    pub async fn start(args: &[&str], env: &[(&str, String)]) -> Self {
        for _ in 0..ATTEMPTS {
            if let Ok(p) = Self::try_start_on(args, free_port(), env).await {
                return p;
            }
        }
        panic!("{ATTEMPTS} free ports in a row were taken before nongsan could listen on them");
    }

    /// Waits until this child says it serves and `/healthz` answers. The log line tells it
    /// from another test's process that took the port between [`free_port`] and the bind:
    /// that one would answer `/healthz` too (so the child must log at `info`). `Err` when the
    /// child could not listen.
    async fn wait_serving(&mut self) -> Result<(), PortTaken> {
        let api = Client::new(&self.url);
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log_text();
                if log.contains("cannot listen on") {
                    return Err(PortTaken);
                }
                panic!("nongsan exited with {status} before answering:\n{log}");
            }
            if self.log_text().contains("nongsan is serving")
                && let Ok(r) = api.try_send(Request::get("/healthz")).await
                && (200..300).contains(&r.status)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nongsan did not serve within 30 s:\n{}", self.log_text());
    }

    /// What it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for it to exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        signal(self.child.id() as i32, rustix::process::Signal::TERM);
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "nongsan did not stop within 30 s of SIGTERM:\n{}",
            self.log_text()
        );
    }
}

impl Drop for NongsanProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment of `nongsan up` on `port` over the test database `db` (the shared token
/// key, a data folder of its own, events polled every 50 ms), to extend per test.
pub fn up_env(db: &TestDb, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("NONGSAN_PORT", port.to_string()),
        ("DATABASE_URL", db.url.clone()),
        ("NONGSAN_AUTH_SECRET", AUTH_SECRET.to_owned()),
        (
            "NONGSAN_DATA_DIR",
            std::env::temp_dir()
                .join(format!("nongsan-up-{}", db.name))
                .display()
                .to_string(),
        ),
        ("NONGSAN_EVENTS_POLL_MS", "50".to_owned()),
    ]
}

/// The split shape: `nongsan serve listing|order|payment` as three processes on one
/// database and one Redis, each knowing the others' addresses.
#[derive(Debug)]
pub struct SplitApp {
    /// The listing process.
    pub listing: NongsanProcess,
    /// The order process.
    pub order: NongsanProcess,
    /// The payment process.
    pub payment: NongsanProcess,
    /// Their database.
    pub db: TestDb,
    /// Their API, each call to the process that serves it.
    pub api: Client,
    /// The payment process's port and environment, to start it again.
    payment_start: PaymentStart,
}

/// A process's port and environment.
type PaymentStart = (u16, Vec<(String, String)>);

impl SplitApp {
    /// Starts the three processes on a fresh database.
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// Like [`SplitApp::spawn`], with more environment for the order process.
    pub async fn spawn_with(order_env: &[(&str, String)]) -> Self {
        Self::spawn_configured(&[], order_env).await
    }

    /// Like [`SplitApp::spawn`], with more environment for every process (`every`) and for
    /// the order process.
    pub async fn spawn_configured(every: &[(&str, String)], order_env: &[(&str, String)]) -> Self {
        let db = TestDb::new().await;
        for _ in 0..ATTEMPTS {
            if let Ok((listing, order, payment, payment_start)) =
                Self::try_spawn(&db, every, order_env).await
            {
                return Self {
                    api: Client::split(&listing.url, &order.url, &payment.url),
                    listing,
                    order,
                    payment,
                    db,
                    payment_start,
                };
            }
        }
        panic!(
            "{ATTEMPTS} sets of free ports in a row were taken before the three processes could listen on them"
        );
    }

    /// The three processes on `db` and three new ports, or `Err` when one of the ports was
    /// taken first (the processes already started stop when dropped).
    async fn try_spawn(
        db: &TestDb,
        every: &[(&str, String)],
        order_env: &[(&str, String)],
    ) -> Result<(NongsanProcess, NongsanProcess, NongsanProcess, PaymentStart), PortTaken> {
        let servers = servers().await;
        let ports = free_ports::<3>();
        let urls = ports.map(|p| format!("http://127.0.0.1:{p}"));
        let env = |port: u16| {
            let mut vars = vec![
                ("NONGSAN_PORT", port.to_string()),
                ("DATABASE_URL", db.url.clone()),
                ("REDIS_URL", servers.redis.clone()),
                ("NONGSAN_REDIS_PREFIX", db.name.clone()),
                ("NONGSAN_AUTH_SECRET", AUTH_SECRET.to_owned()),
                ("NONGSAN_LISTING_URL", urls[0].clone()),
                ("NONGSAN_ORDER_URL", urls[1].clone()),
                ("NONGSAN_PAYMENT_URL", urls[2].clone()),
                ("NONGSAN_EVENTS_POLL_MS", "50".to_owned()),
                ("NONGSAN_VNPAY_TMN_CODE", super::VNPAY_TMN.to_owned()),
                ("NONGSAN_VNPAY_HASH_SECRET", super::VNPAY_SECRET.to_owned()),
                (
                    "NONGSAN_DATA_DIR",
                    std::env::temp_dir()
                        .join(format!("nongsan-split-{}", db.name))
                        .display()
                        .to_string(),
                ),
            ];
            vars.extend(every.iter().cloned());
            vars
        };
        // Started one after another: each runs its own migrations.
        let listing =
            NongsanProcess::try_start_on(&["serve", "listing"], ports[0], &env(ports[0])).await?;
        let mut order_vars = env(ports[1]);
        order_vars.extend(order_env.iter().cloned());
        let order =
            NongsanProcess::try_start_on(&["serve", "order"], ports[1], &order_vars).await?;
        let payment_env = env(ports[2]);
        let payment =
            NongsanProcess::try_start_on(&["serve", "payment"], ports[2], &payment_env).await?;
        let payment_start = (
            ports[2],
            payment_env
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        );
        Ok((listing, order, payment, payment_start))
    }

    /// Kills the payment process with SIGKILL (nothing it was doing finishes) and starts it
    /// again on the same port and data.
    pub async fn kill_and_restart_payment(&mut self) {
        signal(
            self.payment.child.id() as i32,
            rustix::process::Signal::KILL,
        );
        let _ = self.payment.child.wait();
        let (port, env) = &self.payment_start;
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        self.payment = NongsanProcess::start_on(&["serve", "payment"], *port, &env).await;
    }
}

impl NongsanProcess {
    /// Like [`NongsanProcess::start`] on a given port, which must stay free.
    pub async fn start_on(args: &[&str], port: u16, env: &[(&str, String)]) -> Self {
        match Self::try_start_on(args, port, env).await {
            Ok(p) => p,
            Err(PortTaken) => panic!("port {port} was taken before nongsan could listen on it"),
        }
    }

    /// Like [`NongsanProcess::start_on`]; `Err` when something else took the port first.
    async fn try_start_on(
        args: &[&str],
        port: u16,
        env: &[(&str, String)],
    ) -> Result<Self, PortTaken> {
        let log = std::env::temp_dir().join(format!(
            "nongsan-proc-{}.log",
            uuid::Uuid::now_v7().simple()
        ));
        let mut cmd = nongsan();
        cmd.args(args)
            .env("NONGSAN_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("NONGSAN_PORT", port.to_string());
        let child = cmd.spawn().expect("spawn nongsan");
        let mut p = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        p.wait_serving().await?;
        Ok(p)
    }
}

/// How many times a start picks new ports when one it picked was taken.
const ATTEMPTS: usize = 5;

/// Another process listened on the port first.
#[derive(Debug)]
struct PortTaken;
