//! Accounts in PostgreSQL: inserting one, and how one is shown to its owner.

use chrono::{DateTime, Utc};
use nongsan_shared::{AccountId, PhoneNumber, auth::Role};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::error::{ListingError, Result};

/// An account as shown to its owner.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct AccountView {
    /// Account id.
    pub id: AccountId,
    /// Phone number, E.164.
    pub phone: String,
    /// Role.
    pub role: Role,
    /// Name shown to others.
    pub display_name: String,
    /// active, pending_activation or disabled.
    pub status: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// Inserts an account; a phone number already in use is 409 `phone_taken`.
pub async fn insert_account(
    conn: &mut PgConnection,
    phone: &PhoneNumber,
    password_hash: Option<&str>,
    role: Role,
    display_name: &str,
    created_by: Option<AccountId>,
) -> Result<AccountView> {
    let status = if password_hash.is_some() {
        "active"
    } else {
        "pending_activation"
    };
    let res = sqlx::query_as!(
        AccountView,
        r#"INSERT INTO accounts (id, phone, password_hash, role, display_name, status, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id AS "id: AccountId", phone, role AS "role: Role", display_name, status, created_at"#,
        AccountId::new() as _,
        phone.as_str(),
        password_hash,
        role as _,
        display_name.trim(),
        status,
        created_by as _,
    )
    .fetch_one(conn)
    .await;
    match res {
        Err(sqlx::Error::Database(d)) if d.constraint() == Some("accounts_phone_key") => {
            Err(ListingError::conflict(
                "phone_taken",
                "An account with this phone number already exists.",
                "Số điện thoại này đã được đăng ký.",
            ))
        }
        other => Ok(other?),
    }
}
