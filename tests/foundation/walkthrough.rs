//! The README's walk-through, run as written: its marked shell block in bash, with the freshly
//! built `nongsan` on PATH, on a fresh data folder and a free port.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use crate::support::free_port;

/// The comment that marks the walk-through in README.md; the next ```sh block is it.
const MARK: &str = "<!-- walkthrough:";

/// The walk-through's shell block in README.md.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let (_, after) = readme
        .split_once(MARK)
        .expect("README.md marks its walk-through");
    let mut lines = after.lines().skip(1);
    assert_eq!(
        lines.next(),
        Some("```sh"),
        "the walk-through's mark is followed by its ```sh block"
    );
    let block: Vec<&str> = lines.take_while(|l| *l != "```").collect();
    assert!(block.len() > 5, "the walk-through block is empty");
    block.join("\n") + "\n"
}

/// Whether `name` is a program on PATH.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

#[tokio::test]
async fn the_readme_walk_through_runs_as_written_and_delivers_both_orders() {
    let missing: Vec<&str> = ["bash", "curl", "jq"]
        .into_iter()
        .filter(|p| !on_path(p))
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{missing:?} not installed, and CI must run this test"
        );
        eprintln!("skipped: {missing:?} not installed (apt-get install curl jq)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("nongsan-walk-{}", uuid::Uuid::now_v7().simple()));
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    // The README puts `nongsan` on PATH (`cargo build --release` and target/release); here it
    // is the binary this test run built. The trap stops the server however the block ends.
    let script = dir.join("walkthrough.sh");
    std::fs::write(
        &script,
        format!(
            "trap 'kill \"${{SERVER:-}}\" 2>/dev/null; wait' EXIT\n{}",
            walkthrough()
        ),
    )
    .unwrap();
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_nongsan"))
        .parent()
        .unwrap()
        .to_owned();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-euo", "pipefail"])
        .arg(&script)
        .current_dir(&dir)
        .env("PATH", path)
        .env("NONGSAN_DATA_DIR", &data_dir)
        .env("NONGSAN_PORT", free_port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout can stop the shell and the server.
        .process_group(0);
    for (k, _) in std::env::vars() {
        if k.starts_with("NONGSAN_") && k != "NONGSAN_DATA_DIR" && k != "NONGSAN_PORT"
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
    let child = tokio::process::Command::from(cmd).spawn().unwrap();
    let pid = child.id().unwrap();
    let output =
        match tokio::time::timeout(Duration::from_secs(300), child.wait_with_output()).await {
            Ok(out) => out.unwrap(),
            Err(_) => {
                // SIGTERM first: the server stops its PostgreSQL cluster on it.
                let group = rustix::process::Pid::from_raw(pid as i32).unwrap();
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
                tokio::time::sleep(Duration::from_secs(15)).await;
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                panic!(
                    "the walk-through did not finish in 300 s; server log:\n{}",
                    std::fs::read_to_string(dir.join(".nongsan/up.log")).unwrap_or_default()
                );
            }
        };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = || {
        format!(
            "stdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
            std::fs::read_to_string(dir.join(".nongsan/up.log")).unwrap_or_default()
        )
    };
    assert!(output.status.success(), "{}\n{}", output.status, report());

    // The seed told a password and the sellers, and the search found both products.
    assert!(stdout.contains("DEMO_PASSWORD='demo-"), "{}", report());
    assert!(stdout.contains("Xoài cát Hòa Lộc"), "{}", report());
    assert!(stdout.contains("Cà phê Robusta rang xay"), "{}", report());
    // Two sellers each confirmed, shipped and delivered their order.
    for status in ["confirmed", "shipped", "delivered"] {
        let n = stdout
            .lines()
            .filter(|l| l.contains("(demo) (+849000") && l.ends_with(&format!(": {status}")))
            .count();
        assert_eq!(n, 2, "two orders {status}\n{}", report());
    }
    // It ends with the buyer's view: both orders delivered and paid in cash.
    let last: Vec<&str> = stdout.lines().rev().take(2).collect();
    assert!(
        last.iter()
            .all(|l| l.ends_with(": delivered, cash collected: true")),
        "{}",
        report()
    );
    assert_ne!(last[0], last[1], "two different sellers\n{}", report());

    // The walk-through stopped the server, and the server its PostgreSQL.
    assert!(
        !data_dir.join("postgres/postmaster.pid").exists(),
        "PostgreSQL still runs\n{}",
        report()
    );
    if let Ok(cluster) = std::fs::canonicalize(data_dir.join("postgres"))
        && !cluster.starts_with(&dir)
    {
        let _ = std::fs::remove_dir_all(&cluster);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
