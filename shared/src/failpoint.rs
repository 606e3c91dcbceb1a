//! Named fail points, so tests can stop a process at the worst moment (between publishing
//! an event and marking it published, between reserving stock and storing a checkout).
//!
//! Off unless `NONGSAN_FAILPOINTS` names them (`relay.after_publish=abort,x=error`) or a test
//! sets one in-process with [`set`]. A fail point that is off costs one map lookup under a
//! read lock.

use std::{
    collections::HashMap,
    sync::{LazyLock, RwLock},
};

/// What a fail point does when reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Kill the process on the spot, as SIGKILL would.
    Abort,
    /// Return an error from the step, `times` times, then turn off.
    Error {
        /// How many more times to fail.
        times: u32,
    },
    /// Wait this many milliseconds, then go on (to let another event overtake this step).
    Delay(u64),
}

static POINTS: LazyLock<RwLock<HashMap<String, Action>>> = LazyLock::new(|| {
    let mut map = HashMap::new();
    if let Ok(spec) = std::env::var("NONGSAN_FAILPOINTS") {
        for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, action) = part.split_once('=').unwrap_or((part, "abort"));
            let action = match action.trim() {
                "abort" => Action::Abort,
                d if d.starts_with("delay:") => match d["delay:".len()..].parse() {
                    Ok(ms) => Action::Delay(ms),
                    Err(_) => continue,
                },
                other => {
                    let times = other
                        .strip_prefix("error")
                        .map(|n| n.trim_start_matches(':').parse().unwrap_or(1));
                    match times {
                        Some(times) => Action::Error { times },
                        None => continue,
                    }
                }
            };
            map.insert(name.trim().to_owned(), action);
        }
    }
    RwLock::new(map)
});

/// Turns a fail point on in this process.
pub fn set(name: &str, action: Action) {
    POINTS
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_owned(), action);
}

/// What a fail point is set to now (an `Error` counts down as it is reached): for a test to
/// see how often a step was reached.
pub fn state(name: &str) -> Option<Action> {
    POINTS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .copied()
}

/// Turns a fail point off.
pub fn clear(name: &str) {
    POINTS
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(name);
}

/// Reached a fail point that may delay: waits when set to [`Action::Delay`], else as [`hit`].
pub async fn hit_async(name: &str) -> anyhow::Result<()> {
    let action = state(name);
    if let Some(Action::Delay(ms)) = action {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        return Ok(());
    }
    hit(name)
}

/// Reached a fail point: aborts, fails, or (normally) does nothing.
pub fn hit(name: &str) -> anyhow::Result<()> {
    let action = state(name);
    match action {
        None => Ok(()),
        Some(Action::Abort) => {
            tracing::error!(failpoint = name, "fail point reached: aborting the process");
            std::process::abort()
        }
        Some(Action::Delay(_)) => Ok(()),
        Some(Action::Error { times }) => {
            let mut points = POINTS.write().unwrap_or_else(|e| e.into_inner());
            if times <= 1 {
                points.remove(name);
            } else {
                points.insert(name.to_owned(), Action::Error { times: times - 1 });
            }
            anyhow::bail!("fail point {name} reached")
        }
    }
}
