//! localstripe (PyPI), a stateful fake Stripe server, for one test: started through
//! `scripts/localstripe-adapter` on a loopback port it picks, with its state in memory.
//!
//! The Python that has localstripe installed is `NONGSAN_LOCALSTRIPE_PYTHON`, else the
//! virtual environment `scripts/test` installs it into
//! (`~/.cache/nongsan/localstripe-venv`), else `python3`.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

/// The secret key the tests' apps use with localstripe (any `sk_test_` key works).
pub const SECRET_KEY: &str = "sk_test_nongsan";

/// A running localstripe.
#[derive(Debug)]
pub struct LocalStripe {
    /// Its API base, ending in `/` (as async-stripe wants it).
    pub url: String,
    child: Child,
    log: PathBuf,
    http: reqwest::Client,
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> String {
    if let Ok(p) = std::env::var("NONGSAN_LOCALSTRIPE_PYTHON") {
        return p;
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
        });
    let venv = cache.join("nongsan/localstripe-venv/bin/python");
    if venv.exists() {
        venv.display().to_string()
    } else {
        "python3".to_owned()
    }
}

impl LocalStripe {
    /// Starts it on a port it picks itself (so no other process can take it in between)
    /// and waits until it answers.
    pub async fn start() -> Self {
        let log =
            std::env::temp_dir().join(format!("localstripe-{}.log", uuid::Uuid::now_v7().simple()));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/localstripe-adapter");
        let python = python();
        let mut child = Command::new(&python)
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start localstripe with {python}: {e} (scripts/test installs it)")
            });
        // Its first line names its port; nothing else goes to stdout.
        let stdout = child.stdout.take().unwrap();
        let first = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                    .map(|_| line)
            }),
        )
        .await;
        let port = match first {
            Ok(Ok(Ok(line))) => line.trim().strip_prefix("listening on ").map(str::to_owned),
            _ => None,
        };
        let mut me = Self {
            url: format!("http://127.0.0.1:{}/", port.as_deref().unwrap_or("0")),
            child,
            log,
            http: reqwest::Client::new(),
        };
        if port.is_none() {
            let _ = me.child.kill();
            panic!(
                "localstripe did not say its port within 30 s (is it installed for {python}? scripts/test installs it):\n{}",
                std::fs::read_to_string(&me.log).unwrap_or_default()
            );
        }
        for _ in 0..300 {
            if let Some(status) = me.child.try_wait().unwrap() {
                panic!(
                    "localstripe exited with {status}:\n{}",
                    std::fs::read_to_string(&me.log).unwrap_or_default()
                );
            }
            if me.get("v1/refunds").await.is_some() {
                return me;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("localstripe did not answer in 30 s");
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let res = self
            .http
            .get(format!("{}{path}", self.url))
            .basic_auth(SECRET_KEY, Some(""))
            .send()
            .await
            .ok()?;
        res.json().await.ok()
    }

    /// POSTs a form to its API; answers (status, JSON).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let res = self
            .http
            .post(format!("{}{path}", self.url))
            .basic_auth(SECRET_KEY, Some(""))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("localstripe answers");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Sends its webhooks to `url`, signed with `secret`.
    pub async fn webhook_to(&self, url: &str, secret: &str) {
        let (status, body) = self
            .post(
                "_config/webhooks/nongsan",
                &[("url", url), ("secret", secret)],
            )
            .await;
        assert!(
            (200..300).contains(&status),
            "register the webhook: {status} {body}"
        );
    }

    /// What the buyer's app does with Stripe.js: attaches `card` (a test payment method such
    /// as `pm_card_visa`) to the PaymentIntent and confirms it; answers the confirmation.
    pub async fn pay(&self, intent: &str, card: &str) -> (u16, Value) {
        let (status, body) = self
            .post(
                &format!("v1/payment_intents/{intent}"),
                &[("payment_method", card)],
            )
            .await;
        assert_eq!(status, 200, "attach the card: {body}");
        self.post(&format!("v1/payment_intents/{intent}/confirm"), &[])
            .await
    }

    /// The refunds it made.
    pub async fn refunds(&self) -> Vec<Value> {
        self.get("v1/refunds")
            .await
            .and_then(|v| v["data"].as_array().cloned())
            .unwrap_or_default()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The PaymentIntent id of a client secret (`pi_..._secret_...`).
pub fn intent_of(client_secret: &str) -> &str {
    client_secret
        .split_once("_secret_")
        .map_or(client_secret, |(id, _)| id)
}
