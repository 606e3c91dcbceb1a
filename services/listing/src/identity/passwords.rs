//! Passwords and secrets: strength checks, argon2 hashing off the async runtime, random tokens.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{ListingError, Problems, Result};

pub(crate) fn check_password(p: &mut Problems, field: &str, password: &str) {
    let n = password.chars().count();
    p.check(
        n < 8,
        field,
        "too_short",
        "must be at least 8 characters",
        "phải có ít nhất 8 ký tự",
    );
    p.check(
        n > 256,
        field,
        "too_long",
        "must be at most 256 characters",
        "tối đa 256 ký tự",
    );
}

/// How many argon2 computations run at once: one per core. Each takes about 19 MiB and a
/// core for tens of milliseconds, so unbounded they would take the process's memory and
/// every core with them.
static HASHING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
});

/// How long a request waits for a turn to hash before it is answered 503 (busy).
const HASHING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `f` (argon2 work) on the blocking threads once a hashing turn is free.
async fn with_hashing_turn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let permit = tokio::time::timeout(HASHING_WAIT, HASHING.acquire())
        .await
        .map_err(|_| ListingError::Busy)?
        .map_err(anyhow::Error::from)?;
    // The turn goes with the work: a client that hangs up does not free it while argon2
    // still runs.
    let out = tokio::task::spawn_blocking(move || {
        let _turn = permit;
        f()
    })
    .await
    .map_err(anyhow::Error::from)?;
    Ok(out)
}

/// Hashes a password with argon2id (off the async threads, one per core at a time: it is
/// slow on purpose).
pub async fn hash_password(password: String) -> Result<String> {
    with_hashing_turn(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))
    })
    .await?
    .map_err(ListingError::Other)
}

/// Whether `password` matches `hash`; an unknown account (`None`) costs the same work.
pub(crate) async fn verify_password(password: String, hash: Option<String>) -> Result<bool> {
    with_hashing_turn(move || {
        // An unknown account still costs one verification, so timing does not tell.
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        PasswordHash::new(&hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
}

const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0UhvVKJ9mIJyRrSnbwnOIHe5Qdg4DA+TGx8HkpcYIPw";

pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn sha256(s: &str) -> Vec<u8> {
    Sha256::digest(s.as_bytes()).to_vec()
}
