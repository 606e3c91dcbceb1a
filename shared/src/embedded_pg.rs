//! A private PostgreSQL cluster in the data folder, for `nongsan up` with no `DATABASE_URL`
//! and for the test harness.
//!
//! The cluster is made once with `initdb` (a generated password, TCP on 127.0.0.1) and reused
//! on every later start. Where the cluster's folder allows (a short path of plain
//! characters), `pg_ctl` also gives the server a Unix socket in that folder, which only its
//! owner can enter, and nongsan connects through it: a statement's round trip then skips
//! the loopback TCP stack (the kernel took about a third of a checkout's CPU in `perf`).
//!
//! PostgreSQL refuses to run as root, so when nongsan runs as root the cluster is owned by
//! and run as the unprivileged `nobody`.
//! `nobody` must be able to reach the cluster's folder; when it cannot enter the data folder
//! (one under `/root`, or any folder of mode 0700), the cluster is kept in
//! `/var/lib/nongsan/clusters/<hash of the data folder's path>` instead, and
//! `<data>/postgres` is a symbolic link to it, which later starts follow.
//!
//! Several processes may use one cluster at once (`nongsan up` serving while `nongsan seed`
//! runs): each holds a shared lock on `<data>/postgres.lock` while it uses the cluster, and
//! only the last one to leave stops it, so no process stops the cluster under another.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, bail};
use rand::{Rng, distr::Alphanumeric};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

/// What was missing, said in one line, with how to fix it.
pub const NO_BINARIES: &str = "PostgreSQL server binaries (initdb, pg_ctl) were not found in NONGSAN_POSTGRES_BIN, PATH, `pg_config --bindir` or /usr/lib/postgresql/*/bin: install PostgreSQL (for example `apt-get install postgresql`) or set DATABASE_URL to a running server";

/// Where clusters live that `nobody` could not reach in their data folder (as root only).
pub const ROOT_CLUSTERS: &str = "/var/lib/nongsan/clusters";

/// How the cluster is tuned.
#[derive(Debug, Clone)]
pub struct Options {
    /// `max_connections` of the server.
    pub max_connections: u32,
    /// Whether commits are made durable (fsync). The test harness turns it off for speed.
    pub durable: bool,
    /// Where the binaries are; searched for when `None`.
    pub bindir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_connections: 100,
            durable: true,
            bindir: None,
        }
    }
}

/// How to connect to the cluster; kept in `<data>/postgres.json`, readable by its owner only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnInfo {
    /// The server's port: TCP on 127.0.0.1, and the number in its socket's name.
    pub port: u16,
    /// Superuser name.
    pub user: String,
    /// Superuser password.
    pub password: String,
    /// Database nongsan uses.
    pub database: String,
}

impl ConnInfo {
    /// The URL of `database` on this cluster: through the Unix socket in `socket` (a folder
    /// [`socket_dir`] allows: a plain path, nothing to escape) when given, else TCP on
    /// 127.0.0.1.
    pub fn url_of(&self, database: &str, socket: Option<&Path>) -> SecretString {
        let Self {
            port,
            user,
            password,
            ..
        } = self;
        SecretString::from(match socket {
            Some(dir) => format!(
                "postgres://{user}:{password}@localhost:{port}/{database}?host={}",
                dir.display()
            ),
            None => format!("postgres://{user}:{password}@127.0.0.1:{port}/{database}"),
        })
    }
}

/// A running private cluster.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bindir: PathBuf,
    cluster: PathBuf,
    run_as: Option<(u32, u32)>,
    /// How to connect.
    pub info: ConnInfo,
    /// Whether this start made a new cluster (false: existing data was reused).
    pub created: bool,
    /// Whether this start started the server (false: it was already running and was adopted).
    pub started: bool,
    /// The shared lock on `<data>/postgres.lock` held while this process uses the cluster.
    users: std::fs::File,
    /// The folder of the server's Unix socket, when it listens on one.
    socket: Option<PathBuf>,
}

/// What [`EmbeddedPostgres::release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// This process was the last to use the cluster and stopped it.
    Stopped,
    /// Another process still uses the cluster, which was left running for it.
    InUse,
}

/// Finds the directory holding `initdb` and `pg_ctl`: `explicit` when given, else PATH,
/// `pg_config --bindir`, and the newest /usr/lib/postgresql/*/bin.
pub async fn find_bindir(explicit: Option<&Path>) -> Option<PathBuf> {
    let has = |d: &Path| {
        d.join("initdb").is_file() && d.join("pg_ctl").is_file() && d.join("postgres").is_file()
    };
    if let Some(d) = explicit {
        return has(d).then(|| d.to_owned());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has(&d) {
                // Resolve symlinks such as /usr/local/bin/initdb → /usr/lib/postgresql/15/bin.
                let real = std::fs::canonicalize(d.join("initdb"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf));
                return Some(real.filter(|r| has(r)).unwrap_or(d));
            }
        }
    }
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .await
        && out.status.success()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has(&d) {
            return Some(d);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, d): &(u32, PathBuf)| has(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

/// The uid and gid of `nobody`, which runs the cluster when nongsan runs as root.
fn unprivileged_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"nobody"))
                .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
        })
        .unwrap_or((65534, 65534))
}

/// A port for the cluster, free now and drawn outside the ephemeral range
/// ([`crate::net::free_loopback_ports`]): the cluster keeps it from one start to the next.
fn free_port() -> anyhow::Result<u16> {
    Ok(crate::net::free_loopback_ports(1)?[0])
}

impl EmbeddedPostgres {
    /// Starts the cluster in `<data_dir>/postgres`, making it first if needed, or adopts one
    /// already running there (left by a process that was killed).
    pub async fn start(data_dir: &Path, opts: Options) -> anyhow::Result<Self> {
        let bindir = find_bindir(opts.bindir.as_deref())
            .await
            .ok_or_else(|| anyhow::anyhow!(NO_BINARIES))?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data folder {}", data_dir.display()))?;
        let data_dir = std::fs::canonicalize(data_dir)?;
        // Taken before looking at the cluster: a process that is stopping it holds the lock
        // exclusively, and this waits until it has stopped.
        let users = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join("postgres.lock"))
            .context("opening postgres.lock")?;
        let users = tokio::task::spawn_blocking(move || users.lock_shared().map(|()| users))
            .await?
            .context("locking postgres.lock")?;
        let info_path = data_dir.join("postgres.json");
        let run_as = rustix::process::geteuid().is_root().then(unprivileged_user);
        let cluster = locate_cluster(&data_dir, run_as, &bindir).await?;
        let mut pg = Self {
            bindir,
            cluster,
            run_as,
            info: ConnInfo {
                port: 0,
                user: "nongsan".into(),
                password: String::new(),
                database: "nongsan".into(),
            },
            created: false,
            started: false,
            users,
            socket: None,
        };
        let initialised = pg.cluster.join("PG_VERSION").is_file() && info_path.is_file();
        if initialised {
            pg.info = serde_json::from_slice(&std::fs::read(&info_path)?)
                .context("reading postgres.json")?;
        } else {
            pg.init(&info_path, opts).await?;
            pg.created = true;
        }
        if !pg.is_running().await {
            let port = pg.port_to_start_on()?;
            pg.pg_ctl_start(port).await?;
            pg.started = true;
            if port != pg.info.port {
                tracing::warn!(
                    taken = pg.info.port,
                    port,
                    "the private PostgreSQL cluster's port was taken: it moved to another"
                );
                // Recorded once the server runs on it: a start that failed (another process
                // started the cluster meanwhile) leaves the record as it was.
                pg.info.port = port;
                write_private_atomically(&info_path, &serde_json::to_vec_pretty(&pg.info)?)?;
            }
        }
        // A server adopted from a nongsan that started it without the socket has none: TCP.
        pg.socket = listening_socket(&pg.cluster, pg.info.port);
        pg.ensure_database().await?;
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.current_dir(&self.cluster)
            .stdin(Stdio::null())
            .env("LC_ALL", "C")
            .env_remove("PGDATA");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    async fn init(&mut self, info_path: &Path, opts: Options) -> anyhow::Result<()> {
        if self.cluster.exists() {
            // A half-made cluster from an interrupted first start: make it again.
            std::fs::remove_dir_all(&self.cluster)?;
        }
        create_private_dir(&self.cluster)?;
        let password: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let pwfile = self.cluster.with_extension("pwfile");
        write_private(&pwfile, password.as_bytes())?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&self.cluster, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&self.cluster)
            .args([
                "-U",
                "nongsan",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .await
            .context("running initdb")?;
        let _ = std::fs::remove_file(&pwfile);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no output");
            let hint = if self.run_as.is_some() {
                format!(
                    " (as root, the cluster runs as `nobody`, who must be able to reach {})",
                    self.cluster.display()
                )
            } else {
                String::new()
            };
            bail!("initdb failed: {last}{hint}");
        }
        let port = free_port()?;
        let mut conf = format!(
            "\n# nongsan: a private cluster on 127.0.0.1, and on a Unix socket in this folder when\n# nongsan starts it (pg_ctl -o '-k <folder>')\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\nmax_connections = {}\n",
            opts.max_connections
        );
        if !opts.durable {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        let conf_path = self.cluster.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path)?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)?;
        self.info.port = port;
        self.info.password = password;
        write_private(info_path, &serde_json::to_vec_pretty(&self.info)?)?;
        Ok(())
    }

    /// The recorded port, or another one when it is taken: PostgreSQL would not start on
    /// it. The cluster keeps the port it was made with from one start to the next, and
    /// meanwhile any connection or server may have taken it. The port is given to the
    /// server on its command line (`pg_ctl_start`), and `postgresql.conf` is left as it is:
    /// its folder belongs to `nobody` when nongsan runs as root.
    fn port_to_start_on(&self) -> anyhow::Result<u16> {
        let taken = std::net::TcpListener::bind(("127.0.0.1", self.info.port))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse);
        if taken {
            free_port()
        } else {
            Ok(self.info.port)
        }
    }

    async fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.cluster)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    }

    async fn pg_ctl_start(&self, port: u16) -> anyhow::Result<()> {
        let log = self.cluster.join("server.log");
        let mut start = self.command("pg_ctl");
        start
            .arg("start")
            .arg("-D")
            .arg(&self.cluster)
            .arg("-l")
            .arg(&log);
        // pg_ctl runs the server through the shell: only plain paths are given.
        let mut options = format!("-p {port}");
        if let Some(dir) = socket_dir(&self.cluster) {
            options.push_str(&format!(" -k {}", dir.display()));
        }
        start.arg("-o").arg(options);
        let status = start
            .args(["-w", "-t", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("running pg_ctl start")?;
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let last = text
                .lines()
                .rfind(|l| l.contains("FATAL") || l.contains("ERROR"))
                .unwrap_or("see server.log");
            bail!(
                "PostgreSQL in {} did not start: {}",
                self.cluster.display(),
                last.trim()
            );
        }
        Ok(())
    }

    async fn ensure_database(&self) -> anyhow::Result<()> {
        use sqlx::{Connection, postgres::PgConnection};
        let admin = self.url_of("postgres");
        let mut conn = PgConnection::connect(secrecy::ExposeSecret::expose_secret(&admin))
            .await
            .context("connecting to the private PostgreSQL")?;
        let exists = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#,
            &self.info.database,
        )
        .fetch_one(&mut conn)
        .await?;
        if !exists {
            // dynamic: DDL naming the database, which cannot be a bind parameter.
            sqlx::query(&format!("CREATE DATABASE \"{}\"", self.info.database))
                .execute(&mut conn)
                .await?;
        }
        conn.close().await?;
        Ok(())
    }

    /// Stops the server cleanly (fast shutdown: open transactions roll back, data is flushed)
    /// if no other process uses it; else leaves it running for them. See [`Self::release`].
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.release().await.map(|_| ())
    }

    /// Leaves the cluster: the last process to leave stops it cleanly (fast shutdown: open
    /// transactions roll back, data is flushed), whether it started it or adopted it; while
    /// another process uses it, it is left running. Call once, when leaving.
    pub async fn release(&self) -> anyhow::Result<Released> {
        // Upgrading to an exclusive lock succeeds only when no other process holds its shared
        // lock. A process starting meanwhile waits for the exclusive lock to go (at exit).
        match self.users.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(Released::InUse),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).context("locking postgres.lock");
            }
        }
        let status = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&self.cluster)
            .args(["-m", "fast", "-w", "-t", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("running pg_ctl stop")?;
        if !status.success() {
            bail!("pg_ctl stop failed for {}", self.cluster.display());
        }
        Ok(Released::Stopped)
    }

    /// The cluster's folder.
    pub fn cluster_dir(&self) -> &Path {
        &self.cluster
    }

    /// The folder of the server's Unix socket, when connections go through one.
    pub fn socket_dir(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    /// The URL of nongsan's database: through the Unix socket when the server has one, else
    /// TCP on loopback.
    pub fn url(&self) -> SecretString {
        self.url_of(&self.info.database)
    }

    /// The URL of `database` on this cluster (see [`Self::url`]).
    pub fn url_of(&self, database: &str) -> SecretString {
        self.info.url_of(database, self.socket.as_deref())
    }
}

/// The folder of the Unix socket the server of `cluster` listens on: the one its
/// `postmaster.pid` records (line 5, empty without a socket), when that is the folder nongsan
/// gives it ([`socket_dir`]) and the socket is there. A socket file left by a server that was
/// killed and started again without one is not taken for a live socket.
pub fn listening_socket(cluster: &Path, port: u16) -> Option<PathBuf> {
    let dir = socket_dir(cluster)?;
    let pid = std::fs::read_to_string(cluster.join("postmaster.pid")).ok()?;
    let recorded = pid.lines().nth(4)?.trim();
    (Path::new(recorded) == dir && dir.join(format!(".s.PGSQL.{port}")).exists()).then_some(dir)
}

/// Where the server of `cluster` listens on a Unix socket: the cluster's folder itself, when
/// its path is absolute, of plain characters (it goes through pg_ctl's shell and into a
/// URL unescaped) and short enough for a socket's name (`.s.PGSQL.<port>` in it, at most
/// 107 bytes on Linux).
pub fn socket_dir(cluster: &Path) -> Option<PathBuf> {
    let text = cluster.to_str()?;
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    (cluster.is_absolute() && plain && text.len() + "/.s.PGSQL.65535".len() <= 107)
        .then(|| cluster.to_path_buf())
}

/// The folder of the cluster of `data_dir`: `<data>/postgres`, unless nongsan runs as root
/// (the cluster then runs as `run_as`) and that user cannot enter the data folder; the cluster
/// then lives under [`ROOT_CLUSTERS`], linked from `<data>/postgres`.
async fn locate_cluster(
    data_dir: &Path,
    run_as: Option<(u32, u32)>,
    bindir: &Path,
) -> anyhow::Result<PathBuf> {
    let link = data_dir.join("postgres");
    let base = Path::new(ROOT_CLUSTERS);
    if link.is_symlink() {
        let target = std::fs::read_link(&link)?;
        // Only a link nongsan made is followed: an interrupted first start removes and remakes
        // the cluster's folder, which must never be somebody else's.
        if !(target.is_absolute() && target.parent() == Some(base)) {
            bail!(
                "{} links to {}, which is not a cluster folder of nongsan's (in {ROOT_CLUSTERS}): remove the link",
                link.display(),
                target.display()
            );
        }
        if run_as.is_some() {
            prepare_root_clusters(base, run_as, bindir).await?;
        }
        return Ok(target);
    }
    let Some(user) = run_as else {
        return Ok(link);
    };
    if can_enter(data_dir, user, bindir).await {
        return Ok(link);
    }
    if link.join("PG_VERSION").is_file() {
        bail!(
            "as root the private PostgreSQL cluster runs as `nobody`, who cannot enter {}: let others enter it and its parent folders (chmod o+x) or move {} away to make a new cluster",
            data_dir.display(),
            link.display()
        );
    }
    if link.exists() {
        // Left by a first start that failed on this very problem.
        std::fs::remove_dir_all(&link)?;
    }
    prepare_root_clusters(base, run_as, bindir).await?;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(data_dir.as_os_str().as_encoded_bytes());
    let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let target = base.join(name);
    std::os::unix::fs::symlink(&target, &link)
        .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
    Ok(target)
}

/// Makes [`ROOT_CLUSTERS`] (root's; others may pass through, not list it) and checks that
/// `nobody` can reach it; else says in one line what to do.
async fn prepare_root_clusters(
    base: &Path,
    run_as: Option<(u32, u32)>,
    bindir: &Path,
) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let Some(user) = run_as else { return Ok(()) };
    let made = std::fs::DirBuilder::new()
        .mode(0o711)
        .recursive(true)
        .create(base)
        .and_then(|()| {
            // Whatever the umask made of them, others may pass through (not list) both.
            for dir in [base.parent().unwrap_or(base), base] {
                let mode = std::fs::metadata(dir)?.permissions().mode();
                if mode & 0o001 == 0 {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))?;
                }
            }
            Ok(())
        });
    let problem = match made {
        Err(e) => Some(e.to_string()),
        Ok(()) if !can_enter(base, user, bindir).await => {
            Some("`nobody` cannot enter it".to_owned())
        }
        Ok(()) => None,
    };
    if let Some(problem) = problem {
        bail!(
            "as root the private PostgreSQL cluster runs as `nobody`, who cannot enter the data folder, and {ROOT_CLUSTERS} cannot hold it instead ({problem}): set NONGSAN_DATA_DIR to a folder others may enter, or run nongsan as another user, or set DATABASE_URL"
        );
    }
    Ok(())
}

/// Whether `user` (uid, gid) can enter `dir`: a process run as that user in that folder.
async fn can_enter(dir: &Path, (uid, gid): (u32, u32), bindir: &Path) -> bool {
    Command::new(bindir.join("pg_ctl"))
        .arg("--version")
        .current_dir(dir)
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(path)?;
    Ok(())
}

/// [`write_private`] to a file beside `path`, then renamed over it: a crash leaves the old
/// contents or the new, never a part.
fn write_private_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let part = path.with_extension("json.part");
    write_private(&part, bytes)?;
    std::fs::rename(&part, path)?;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_goes_only_in_a_short_plain_absolute_folder() {
        let plain = Path::new("/var/lib/nongsan/clusters/0123abcd");
        assert_eq!(socket_dir(plain).as_deref(), Some(plain));
        // Through pg_ctl's shell and into a URL unescaped: a space, a quote or a `?` is TCP.
        for odd in [
            "/data/my farm/postgres",
            "/data/o'neil/postgres",
            "/data/a?b/postgres",
        ] {
            assert_eq!(socket_dir(Path::new(odd)), None, "{odd}");
        }
        assert_eq!(socket_dir(Path::new("data/postgres")), None);
        // `<folder>/.s.PGSQL.65535` must fit in 107 bytes.
        let longest = format!("/{}", "a".repeat(107 - "/.s.PGSQL.65535".len() - 1));
        assert!(socket_dir(Path::new(&longest)).is_some());
        assert_eq!(socket_dir(Path::new(&format!("{longest}a"))), None);
    }

    #[test]
    fn a_socket_file_counts_only_where_the_running_server_recorded_it() {
        let dir = std::env::temp_dir().join(format!("nongsan-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".s.PGSQL.5999"), b"").unwrap();
        let pid = |socket: &str| {
            let lines = [
                "4242",
                &dir.display().to_string(),
                "1764800000",
                "5999",
                socket,
                "127.0.0.1",
                "0 1",
                "ready",
            ];
            std::fs::write(dir.join("postmaster.pid"), lines.join("\n")).unwrap();
        };
        // Left by a server started with one, now running without: TCP.
        pid("");
        assert_eq!(listening_socket(&dir, 5999), None);
        pid(&dir.display().to_string());
        assert_eq!(listening_socket(&dir, 5999), Some(dir.clone()));
        // Another port's socket, or none at all.
        assert_eq!(listening_socket(&dir, 6000), None);
        std::fs::remove_file(dir.join("postmaster.pid")).unwrap();
        assert_eq!(listening_socket(&dir, 5999), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
