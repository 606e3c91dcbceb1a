//! `/docs` renders the API in a real browser with no network but the server's own port: its
//! page and scripts come from the binary, not from a CDN.

use std::{path::PathBuf, time::Duration};

use crate::support::TestApp;

/// The headless Chromium for a browser test; without one the test is skipped (it says so),
/// except under CI=true, where it fails: CI must run it (scripts/test installs chromium).
pub fn chromium_or_skip() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed, and CI must run this test (scripts/test installs it)"
        );
        eprintln!(
            "skipped: chromium is not installed (apt-get install chromium, or run scripts/test)"
        );
    }
    found
}

/// The headless Chromium on PATH, if any.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Runs headless Chromium on `page` with `extra` arguments (`--dump-dom`, `--screenshot=...`)
/// and no network but the page's own address and port: every name resolves to nothing and
/// every other connection goes to a closed proxy. Panics unless it finishes within 90 s.
pub async fn headless(
    chromium: &std::path::Path,
    page: &str,
    extra: &[&str],
) -> std::process::Output {
    let port = reqwest::Url::parse(page).unwrap().port().unwrap();
    let profile = std::env::temp_dir().join(format!(
        "nongsan-chromium-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let mut cmd = tokio::process::Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--proxy-server=127.0.0.1:9",
    ])
    .arg(format!("--proxy-bypass-list=<-loopback>;127.0.0.1:{port}"))
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(page)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finishes within 90 s")
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    out
}

#[tokio::test]
async fn docs_render_the_api_in_a_browser_with_no_network_but_the_server() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let app = TestApp::spawn().await;
    let out = headless(
        &chromium,
        &app.api.url("/docs"),
        &["--virtual-time-budget=15000", "--dump-dom"],
    )
    .await;
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Only the rendered document has the operations: the page itself names none.
    for expected in ["opblock-summary-path", "/v1/search", "/v1/checkouts"] {
        assert!(
            dom.contains(expected),
            "the rendered /docs has no {expected:?}; the page showed:\n{}",
            &dom[..dom.len().min(3000)]
        );
    }
    app.stop().await;
}
