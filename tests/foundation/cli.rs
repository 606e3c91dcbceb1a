//! `nongsan up` with nothing configured, and the one-line failures.

use std::time::Duration;

use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::support::{
    ClosedPort,
    client::{Client, Request},
    free_port,
    process::{NongsanProcess, nongsan},
};

fn conn_url(data_dir: &std::path::Path) -> String {
    let info: Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("postgres.json")).unwrap()).unwrap();
    format!(
        "postgres://{}:{}@127.0.0.1:{}/{}",
        info["user"].as_str().unwrap(),
        info["password"].as_str().unwrap(),
        info["port"],
        info["database"].as_str().unwrap()
    )
}

#[tokio::test]
async fn up_with_nothing_configured_runs_on_a_private_postgres_and_reuses_it() {
    let data_dir =
        std::env::temp_dir().join(format!("nongsan-up-{}", uuid::Uuid::now_v7().simple()));
    let env = [("NONGSAN_DATA_DIR", data_dir.display().to_string())];

    let first = NongsanProcess::start(&["up"], &env).await;
    let api = Client::new(&first.url);
    let (status, ready) = api.get("/readyz", None).await;
    assert_eq!(status, 200);
    let check = |name: &str| {
        ready["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(check("postgres")["mode"], "embedded");
    assert_eq!(check("postgres")["ok"], true);
    assert_eq!(check("events")["mode"], "in-process");

    let (_, doc) = api.get("/openapi.json", None).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for service in ["listing", "order", "payment"] {
        assert!(
            paths.iter().any(|p| p.contains(&format!("/{service}/"))),
            "no path of the {service} service in {paths:?}"
        );
    }
    let docs_page = api.send(Request::get("/docs")).await;
    assert_eq!(docs_page.status, 200);
    assert!(docs_page.text().contains("swagger-ui"));
    // The page's script comes from this server and reads /openapi.json from it.
    let initializer = api
        .send(Request::get("/docs/swagger-initializer.js"))
        .await
        .text();
    assert!(initializer.contains("/openapi.json"), "{initializer}");

    // Something written now must be there after a restart.
    let url = conn_url(&data_dir);
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE public.survives_restart (v int); INSERT INTO public.survives_restart VALUES (42)")
        .execute(&mut conn)
        .await
        .unwrap();
    // nongsan's own connections come through the cluster's Unix socket (no client address),
    // only this test's over TCP; over TCP all of them where the folder's path cannot hold a
    // socket (a long or unusual TMPDIR).
    let cluster = std::fs::canonicalize(data_dir.join("postgres")).unwrap();
    let socket = nongsan_shared::embedded_pg::socket_dir(&cluster);
    let (through_socket, over_tcp): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE client_addr IS NULL), count(*) FILTER (WHERE client_addr IS NOT NULL)
         FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    if socket.is_some() {
        assert!(through_socket > 0, "no connection through the Unix socket");
        assert_eq!(over_tcp, 0, "nongsan connected over TCP");
    } else {
        assert_eq!(through_socket, 0, "a socket where its path cannot be");
        assert!(over_tcp > 0);
    }
    conn.close().await.unwrap();
    let first_log = first.log_text();
    assert!(
        first_log.contains("created and started the private PostgreSQL cluster"),
        "{first_log}"
    );
    if let Some(dir) = &socket {
        assert!(
            first_log.contains(&format!("\"socket\":\"{}\"", dir.display())),
            "{first_log}"
        );
    }

    let status = first.terminate().await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    // A clean stop removes postmaster.pid; a crash would leave it.
    assert!(
        !data_dir.join("postgres/postmaster.pid").exists(),
        "PostgreSQL was not stopped"
    );
    let server_log = std::fs::read_to_string(data_dir.join("postgres/server.log")).unwrap();
    assert!(
        server_log.contains("database system is shut down"),
        "{server_log}"
    );

    let second = NongsanProcess::start(&["up"], &env).await;
    assert!(
        second
            .log_text()
            .contains("reusing the private PostgreSQL cluster"),
        "{}",
        second.log_text()
    );
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let v: i32 = sqlx::query_scalar("SELECT v FROM public.survives_restart")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, 42);
    conn.close().await.unwrap();
    assert!(second.terminate().await.success());
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Runs `nongsan up` to completion and returns (exit code, stderr).
async fn run_to_exit(env: &[(&str, String)]) -> (Option<i32>, String) {
    let mut cmd = nongsan();
    cmd.arg("up").env("NONGSAN_PORT", free_port().to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::from(cmd).output(),
    )
    .await
    .expect("nongsan exits within 60 s")
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_clean_line(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
}

#[tokio::test]
async fn a_database_url_on_a_closed_port_gives_one_line_naming_host_and_port() {
    let closed = ClosedPort::new();
    let port = closed.port();
    let (code, stderr) = run_to_exit(&[(
        "DATABASE_URL",
        format!("postgres://nongsan:hunter2-secret@127.0.0.1:{port}/nongsan"),
    )])
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_clean_line(&stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password was shown: {stderr}"
    );
}

/// The test harness tells its own process from one that took its port by this line (see
/// `support::process`), so its words are checked here.
#[tokio::test]
async fn a_port_already_taken_gives_one_line_naming_it_before_anything_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let closed = ClosedPort::new();
    let (code, stderr) = run_to_exit(&[
        ("NONGSAN_HOST", "127.0.0.1".to_owned()),
        ("NONGSAN_PORT", port.to_string()),
        // Never reached: the port is bound before the database is asked for.
        (
            "DATABASE_URL",
            format!("postgres://nongsan:pw@127.0.0.1:{}/nongsan", closed.port()),
        ),
    ])
    .await;
    drop(taken);
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_clean_line(&stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
}

#[tokio::test]
async fn without_postgres_binaries_or_database_url_it_says_how_to_get_one() {
    let empty =
        std::env::temp_dir().join(format!("nongsan-nobin-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&empty).unwrap();
    let (code, stderr) = run_to_exit(&[
        ("NONGSAN_POSTGRES_BIN", empty.display().to_string()),
        ("NONGSAN_DATA_DIR", empty.join("data").display().to_string()),
    ])
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_clean_line(&stderr);
    assert!(stderr.contains("install PostgreSQL"), "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[tokio::test]
async fn a_bad_setting_names_its_variable() {
    let (code, stderr) = run_to_exit(&[("NONGSAN_EVENTS_MAX_ATTEMPTS", "many".to_owned())]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_clean_line(&stderr);
    assert!(stderr.contains("NONGSAN_EVENTS_MAX_ATTEMPTS"), "{stderr}");
}

#[tokio::test]
async fn an_auth_secret_shorter_than_32_bytes_is_refused_at_start() {
    let (code, stderr) = run_to_exit(&[(
        "NONGSAN_AUTH_SECRET",
        "only-31-bytes-of-signing-secret".to_owned(),
    )])
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_clean_line(&stderr);
    assert!(stderr.contains("NONGSAN_AUTH_SECRET"), "{stderr}");
    assert!(stderr.contains("32 bytes"), "{stderr}");
    assert!(
        !stderr.contains("only-31-bytes"),
        "the secret was shown: {stderr}"
    );
}

#[tokio::test]
async fn an_access_token_lifetime_above_an_hour_is_refused_at_start() {
    let (code, stderr) =
        run_to_exit(&[("NONGSAN_ACCESS_TOKEN_TTL_SECS", "86400".to_owned())]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_clean_line(&stderr);
    assert!(stderr.contains("NONGSAN_ACCESS_TOKEN_TTL_SECS"), "{stderr}");
}

#[tokio::test]
async fn a_redis_url_on_a_closed_port_gives_one_line_naming_it() {
    let db = crate::support::TestDb::new().await;
    let closed = ClosedPort::new();
    let port = closed.port();
    let (code, stderr) = run_to_exit(&[
        ("DATABASE_URL", db.url.clone()),
        ("REDIS_URL", format!("redis://127.0.0.1:{port}")),
        (
            "NONGSAN_AUTH_SECRET",
            "a-secret-for-this-test-of-32-bytes".to_owned(),
        ),
    ])
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_clean_line(&stderr);
    assert!(
        stderr.contains(&format!("cannot reach Redis at 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn seed_while_up_serves_leaves_the_private_postgres_running() {
    let data_dir =
        std::env::temp_dir().join(format!("nongsan-seed-up-{}", uuid::Uuid::now_v7().simple()));
    let env = [("NONGSAN_DATA_DIR", data_dir.display().to_string())];
    let server = NongsanProcess::start(&["up"], &env).await;
    let api = Client::new(&server.url);
    let (status, _) = api.get("/readyz", None).await;
    assert_eq!(status, 200, "{}", server.log_text());

    // A second process on the same data folder adopts the running cluster; leaving, it must
    // not stop it under the server.
    let mut cmd = nongsan();
    cmd.args(["seed", "--demo"])
        .env("NONGSAN_DATA_DIR", &data_dir)
        .env("NONGSAN_PORT", free_port().to_string());
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::from(cmd).output(),
    )
    .await
    .expect("nongsan seed exits within 120 s")
    .unwrap();
    assert!(
        out.status.success(),
        "nongsan seed --demo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        data_dir.join("postgres/postmaster.pid").exists(),
        "the seeding process stopped the server's PostgreSQL"
    );

    let (status, _) = api.get("/readyz", None).await;
    assert_eq!(status, 200, "{}", server.log_text());
    let (status, listings) = api.get("/v1/listings", None).await;
    assert_eq!(status, 200, "{}", server.log_text());
    assert!(
        listings["items"].as_array().is_some_and(|i| !i.is_empty()),
        "the seeded listings are not served: {listings}"
    );

    // The server, which started the cluster, still stops it when it stops.
    assert!(server.terminate().await.success());
    assert!(
        !data_dir.join("postgres/postmaster.pid").exists(),
        "the server did not stop the PostgreSQL it started"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn as_root_up_works_in_a_folder_that_only_root_may_enter() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: this test is about running as root, and the tests run as another user");
        return;
    }
    // Like /root: a folder of root's that others may not enter, where `nobody`, who runs the
    // cluster, cannot reach a data folder.
    let private =
        std::env::temp_dir().join(format!("nongsan-private-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(std::fs::metadata(&private).unwrap().uid(), 0);
    let data_dir = private.join("project/.nongsan");
    let env = [("NONGSAN_DATA_DIR", data_dir.display().to_string())];

    let first = NongsanProcess::start(&["up"], &env).await;
    let (status, _) = Client::new(&first.url).get("/readyz", None).await;
    assert_eq!(status, 200, "{}", first.log_text());
    let url = conn_url(&data_dir);
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE public.kept (v int); INSERT INTO public.kept VALUES (7)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert!(first.terminate().await.success());
    // The folder stays private.
    let mode = std::fs::metadata(&private).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700);

    let second = NongsanProcess::start(&["up"], &env).await;
    assert!(
        second
            .log_text()
            .contains("reusing the private PostgreSQL cluster"),
        "{}",
        second.log_text()
    );
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let v: i32 = sqlx::query_scalar("SELECT v FROM public.kept")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, 7);
    conn.close().await.unwrap();
    assert!(second.terminate().await.success());

    // The cluster may live outside the data folder; remove it too.
    if let Ok(cluster) = std::fs::canonicalize(data_dir.join("postgres"))
        && !cluster.starts_with(&private)
    {
        let _ = std::fs::remove_dir_all(&cluster);
    }
    let _ = std::fs::remove_dir_all(&private);
}

/// The port recorded in a data folder's `postgres.json`.
fn recorded_port(data_dir: &std::path::Path) -> u16 {
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("postgres.json")).unwrap()).unwrap();
    u16::try_from(info["port"].as_u64().unwrap()).unwrap()
}

/// A private cluster keeps its port from one start to the next; when something else has
/// taken it meanwhile (an outgoing connection, another server), the cluster starts on
/// another one instead of failing to start. Before, it was drawn with `bind(0)`, from the
/// range outgoing connections take their ports from, and never changed.
#[tokio::test]
async fn a_private_cluster_whose_port_was_taken_starts_on_another() {
    use nongsan_shared::embedded_pg::{EmbeddedPostgres, Options};
    let data_dir =
        std::env::temp_dir().join(format!("nongsan-port-{}", uuid::Uuid::now_v7().simple()));
    let opts = || Options {
        max_connections: 20,
        durable: false,
        bindir: None,
    };
    let pg = EmbeddedPostgres::start(&data_dir, opts()).await.unwrap();
    let port = recorded_port(&data_dir);
    pg.stop().await.unwrap();
    drop(pg);

    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let pg = EmbeddedPostgres::start(&data_dir, opts())
        .await
        .expect("the cluster starts on another port");
    let moved = recorded_port(&data_dir);
    assert_ne!(moved, port);
    // Over TCP, on the port recorded.
    let mut conn = PgConnection::connect(&conn_url(&data_dir)).await.unwrap();
    let serving: String = sqlx::query_scalar("SHOW port")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(serving, moved.to_string());
    conn.close().await.unwrap();
    pg.stop().await.unwrap();
    drop((pg, squatter));
    let _ = std::fs::remove_dir_all(&data_dir);
}
