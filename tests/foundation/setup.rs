//! The README's test command sets up a fresh Debian machine itself, or says in one line what
//! to install.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The command of the README's "Test it" section.
fn readme_test_command() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## Test it\n")
        .nth(1)
        .expect("the README has a Test it section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the Test it section has a sh block");
    block.trim().to_owned()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[test]
fn the_readme_test_command_is_one_script_that_does_its_own_set_up() {
    assert_eq!(readme_test_command(), "scripts/test");
    let script = repo().join("scripts/test");
    let mode = std::fs::metadata(&script)
        .expect("scripts/test exists")
        .permissions()
        .mode();
    assert_ne!(mode & 0o111, 0, "scripts/test is not executable");
    let text = std::fs::read_to_string(&script).unwrap();
    for needed in [
        "redis-server",
        "postgresql",
        "chromium",
        "cargo install cargo-nextest --locked",
        "apt-get install",
        "cargo nextest run --workspace --locked \"$@\"",
    ] {
        assert!(
            text.contains(needed),
            "scripts/test does not mention {needed:?}"
        );
    }
    // CI runs the same script for its tests.
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    assert!(
        ci.contains("scripts/test"),
        ".ci/run does not run scripts/test"
    );
}

#[test]
fn without_root_on_a_machine_missing_packages_it_says_in_one_line_what_to_install() {
    // A machine with bash but none of what the tests need, and a user who is not root (as
    // root, the test runs the script as `nobody`).
    let tmp = std::env::temp_dir().join(format!("nongsan-fresh-{}", uuid::Uuid::now_v7().simple()));
    let bin = tmp.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(tmp.join("repo/scripts")).unwrap();
    for tool in ["bash", "id", "dirname"] {
        let real = on_path(tool).unwrap_or_else(|| panic!("{tool} is on PATH"));
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    let script = tmp.join("repo/scripts/test");
    std::fs::copy(repo().join("scripts/test"), &script).expect("scripts/test exists");
    for dir in [&tmp, &bin, &tmp.join("repo"), &tmp.join("repo/scripts")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut cmd = std::process::Command::new(bin.join("bash"));
    cmd.arg(&script)
        .env_clear()
        .env("PATH", &bin)
        .env("HOME", &tmp)
        .env("CI", "true")
        .current_dir(&tmp)
        .stdin(std::process::Stdio::null());
    if rustix::process::geteuid().is_root() {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    for named in ["redis-server", "chromium", "apt-get install"] {
        assert!(lines[0].contains(named), "{named} is not named: {stderr}");
    }
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The shared test cluster drops the databases of tests that ended (made more than an hour
/// ago, as their UUIDv7 names say) and keeps those of tests that may still run.
#[tokio::test]
async fn the_test_cluster_drops_the_databases_of_tests_that_ended() {
    use sqlx::Connection;
    let admin = &crate::support::servers().await.pg_admin;
    let running = crate::support::TestDb::new().await;
    // Made ten days ago, and dropped with those older than nine: only it, on a cluster that
    // also holds the databases of tests that ended minutes ago (a developer's, run after
    // run). With 40 minutes and 20, this call dropped every database of the previous hour
    // after a run or two, one after the other, and ran past the 300 s the test may take.
    // Another test process starting meanwhile may drop it first (those older than
    // TEST_DATABASE_KEPT): then this call finds it gone, as it should be.
    let ten_days_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 10 * 24 * 3600;
    let old = format!(
        "test_{}",
        uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, ten_days_ago, 0)).simple()
    );
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    let create_old = format!("CREATE DATABASE {old}");
    let create = sqlx::query(&create_old).execute(&mut conn);
    match tokio::time::timeout(std::time::Duration::from_secs(120), create).await {
        Ok(made) => {
            made.unwrap();
        }
        Err(_) => panic!(
            "CREATE DATABASE waited 120 s; the cluster's sessions:\n{}",
            crate::support::pg_sessions(admin).await
        ),
    }
    // A drop gives up after DROP_WAITS_AT_MOST when a session elsewhere in the cluster holds
    // it up (the database is then dropped by a later call); a few calls are given the chance.
    let mut left = Vec::new();
    for _ in 0..8 {
        crate::support::drop_test_databases_older_than(
            admin,
            std::time::Duration::from_secs(9 * 24 * 3600),
        )
        .await;
        left = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname = ANY($1)")
            .bind(vec![old.clone(), running.name.clone()])
            .fetch_all(&mut conn)
            .await
            .unwrap();
        if !left.contains(&old) {
            break;
        }
    }
    assert_eq!(
        left,
        vec![running.name.clone()],
        "the old database is still there; the cluster's sessions:\n{}",
        crate::support::pg_sessions(admin).await
    );
}
