//! Authentication shared by all services: access tokens (JWT, HS256) issued by the listing
//! service and verified by every service with the same key, the roles, and the [`Actor`]
//! extractor that every authenticated handler takes.

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts, OptionalFromRequestParts},
    http::{header, request::Parts},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{
    error::{ApiError, Text},
    ids::AccountId,
};

/// Header a helper (or a cooperative manager) sets to act for a household.
pub const ON_BEHALF_OF_HEADER: &str = "x-on-behalf-of";

/// What an account is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Role {
    /// A farm household that sells.
    Household,
    /// The manager of a cooperative.
    CooperativeManager,
    /// A buyer.
    Buyer,
    /// A community digital helper, acting for the households assigned to it.
    Helper,
    /// A platform operator.
    Operator,
    /// Another nongsan service calling an internal API.
    Service,
}

impl Role {
    /// The role's name as it appears in tokens and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Household => "household",
            Role::CooperativeManager => "cooperative_manager",
            Role::Buyer => "buyer",
            Role::Helper => "helper",
            Role::Operator => "operator",
            Role::Service => "service",
        }
    }

    /// Whether this role may act on behalf of another account.
    pub fn may_act_for_others(self) -> bool {
        matches!(
            self,
            Role::Helper | Role::CooperativeManager | Role::Operator
        )
    }
}

/// The claims inside an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The account.
    pub sub: AccountId,
    /// Its role.
    pub role: Role,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// Audience: [`SERVICE_AUDIENCE`] for a service token, absent for a user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The session a user's token belongs to (its refresh-token family); the listing service
    /// refuses the token once the session ends (logout, reuse of a refresh token, a role
    /// change). Other services rely on the token's short lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<uuid::Uuid>,
}

/// The audience of service tokens: only a token with it acts as [`Role::Service`], and a
/// token with it acts as nothing else.
pub const SERVICE_AUDIENCE: &str = "service";

/// The longest access-token lifetime the configuration accepts, in seconds: services other
/// than listing only verify the signature, so this bounds how long a token outlives the end
/// of its session there.
pub const MAX_ACCESS_TOKEN_TTL_SECS: u64 = 3600;

/// The shortest signing secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header and claims.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than HS256.
    #[error("unsupported token algorithm")]
    Algorithm,
    /// The signature does not match.
    #[error("bad token signature")]
    Signature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
}

/// The key that signs and verifies access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    secret: Arc<SecretString>,
    ttl_secs: i64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("secret", &"[redacted]")
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

type HmacSha256 = Hmac<Sha256>;

const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"; // {"alg":"HS256","typ":"JWT"}

impl TokenKeys {
    /// Keys from the shared secret; access tokens live `ttl_secs`.
    pub fn new(secret: SecretString, ttl_secs: u64) -> Self {
        Self {
            secret: Arc::new(secret),
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.secret.expose_secret().as_bytes())
            .expect("HMAC takes keys of any length")
    }

    /// A digest of `data` keyed with the server secret, for secrets stored at rest (activation
    /// codes): without the key, a copy of the database does not let anyone try all 10⁸ codes.
    /// `purpose` separates the uses of the one key.
    pub fn keyed_digest(&self, purpose: &str, data: &str) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Lifetime of an access token, in seconds.
    pub fn ttl_secs(&self) -> u64 {
        u64::try_from(self.ttl_secs).unwrap_or(0)
    }

    /// Issues an access token without a session: a service token (with the service
    /// audience) for [`Role::Service`], otherwise a user token that no session check can
    /// end (tools and tests; the listing service issues sessions with [`Self::issue_session`]).
    pub fn issue(&self, sub: AccountId, role: Role) -> String {
        self.issue_with(sub, role, None)
    }

    /// Issues a user's access token belonging to session `sid`.
    pub fn issue_session(&self, sub: AccountId, role: Role, sid: uuid::Uuid) -> String {
        self.issue_with(sub, role, Some(sid))
    }

    /// Issues the token services call each other with.
    pub fn issue_service(&self) -> String {
        self.issue(AccountId(uuid::Uuid::nil()), Role::Service)
    }

    fn issue_with(&self, sub: AccountId, role: Role, sid: Option<uuid::Uuid>) -> String {
        let now = chrono::Utc::now().timestamp();
        self.issue_claims(&Claims {
            sub,
            role,
            iat: now,
            exp: now.saturating_add(self.ttl_secs),
            aud: (role == Role::Service).then(|| SERVICE_AUDIENCE.to_owned()),
            sid: if role == Role::Service { None } else { sid },
        })
    }

    /// Signs the given claims.
    pub fn issue_claims(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signing_input = format!("{HEADER_B64}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Verifies signature and expiry and returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(h)
                .map_err(|_| TokenError::Malformed)?,
        )
        .map_err(|_| TokenError::Malformed)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(TokenError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
        let claims: Claims = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(p)
                .map_err(|_| TokenError::Malformed)?,
        )
        .map_err(|_| TokenError::Malformed)?;
        if claims.exp <= chrono::Utc::now().timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// Who is making an authenticated request, and for whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    /// The account that holds the token.
    pub account_id: AccountId,
    /// Its role.
    pub role: Role,
    /// The household a helper or manager acts for, from the `X-On-Behalf-Of` header. Whether
    /// the actor may act for it is the owning service's decision.
    pub on_behalf_of: Option<AccountId>,
}

impl Actor {
    /// The account the action is for: the household acted for, or the actor itself.
    pub fn subject(&self) -> AccountId {
        self.on_behalf_of.unwrap_or(self.account_id)
    }

    /// 403 unless the actor has one of the roles.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Expired => ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "token_expired",
            Text::new(
                "The access token has expired; refresh it.",
                "Phiên đăng nhập đã hết hạn; vui lòng làm mới.",
            ),
        ),
        _ => ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "invalid_token",
            Text::new(
                "The access token is not valid.",
                "Mã truy cập không hợp lệ.",
            ),
        ),
    }
}

impl<S> OptionalFromRequestParts<S> for Actor
where
    TokenKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| token_error(TokenError::Malformed))?;
        let claims = TokenKeys::from_ref(state)
            .verify(token.trim())
            .map_err(token_error)?;
        // A service token acts as a service and nothing else; no other token does.
        let service_audience = claims.aud.as_deref() == Some(SERVICE_AUDIENCE);
        if service_audience != (claims.role == Role::Service) {
            return Err(ApiError::forbidden());
        }
        let on_behalf_of = match parts.headers.get(ON_BEHALF_OF_HEADER) {
            None => None,
            Some(v) => {
                let id = v
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<AccountId>().ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_on_behalf_of",
                            Text::new(
                                "X-On-Behalf-Of must be an account id.",
                                "X-On-Behalf-Of phải là mã tài khoản.",
                            ),
                        )
                    })?;
                if !claims.role.may_act_for_others() {
                    return Err(ApiError::forbidden());
                }
                (id != claims.sub).then_some(id)
            }
        };
        Ok(Some(Actor {
            account_id: claims.sub,
            role: claims.role,
            on_behalf_of,
        }))
    }
}

impl<S> FromRequestParts<S> for Actor
where
    TokenKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        <Actor as OptionalFromRequestParts<S>>::from_request_parts(parts, state)
            .await?
            .ok_or_else(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(SecretString::from("test-secret-of-enough-length"), 900)
    }

    #[test]
    fn a_token_round_trips() {
        let id = AccountId::new();
        let t = keys().issue(id, Role::Helper);
        let c = keys().verify(&t).unwrap();
        assert_eq!(c.sub, id);
        assert_eq!(c.role, Role::Helper);
    }

    #[test]
    fn a_tampered_or_foreign_token_is_refused() {
        let t = keys().issue(AccountId::new(), Role::Buyer);
        let other = TokenKeys::new(SecretString::from("another-secret"), 900);
        assert_eq!(other.verify(&t), Err(TokenError::Signature));
        // Swap the claims for an operator's: the signature no longer matches.
        let forged = keys().issue(AccountId::new(), Role::Operator);
        let mixed = format!(
            "{}.{}.{}",
            HEADER_B64,
            forged.split('.').nth(1).unwrap(),
            t.split('.').nth(2).unwrap()
        );
        assert_eq!(keys().verify(&mixed), Err(TokenError::Signature));
        assert_eq!(keys().verify("a.b"), Err(TokenError::Malformed));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let now = chrono::Utc::now().timestamp();
        let t = keys().issue_claims(&Claims {
            sub: AccountId::new(),
            role: Role::Buyer,
            iat: now - 100,
            exp: now - 1,
            aud: None,
            sid: None,
        });
        assert_eq!(keys().verify(&t), Err(TokenError::Expired));
    }

    #[test]
    fn service_tokens_carry_the_service_audience_and_user_tokens_a_session() {
        let service = keys().verify(&keys().issue_service()).unwrap();
        assert_eq!(service.aud.as_deref(), Some(SERVICE_AUDIENCE));
        assert_eq!(service.sid, None);
        let sid = uuid::Uuid::now_v7();
        let user = keys()
            .verify(&keys().issue_session(AccountId::new(), Role::Buyer, sid))
            .unwrap();
        assert_eq!((user.aud, user.sid), (None, Some(sid)));
    }

    #[test]
    fn the_none_algorithm_is_refused() {
        let t = keys().issue(AccountId::new(), Role::Buyer);
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let p = t.split('.').nth(1).unwrap();
        assert_eq!(
            keys().verify(&format!("{none_header}.{p}.")),
            Err(TokenError::Algorithm)
        );
    }
}
