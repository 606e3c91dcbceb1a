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

/// Hashes a password with argon2id (off the async threads: it is slow on purpose).
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(ListingError::Other)
}

pub(crate) async fn verify_password(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        // An unknown account still costs one verification, so timing does not tell.
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        PasswordHash::new(&hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
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
