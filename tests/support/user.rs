//! Who a request is sent as.

use nongsan_shared::{auth::Role, ids::AccountId};
use serde_json::Value;

use super::keys;

/// A signed-in account: its token, id and role, the phone number it registered with (when
/// it registered through the API), and the household it acts for (a helper or a manager
/// acting for one).
#[derive(Debug, Clone)]
pub struct User {
    /// Account id.
    pub id: String,
    /// Role.
    pub role: Role,
    /// Bearer token.
    pub token: String,
    /// Phone number as registered; `None` for a token made by [`User::minted`].
    pub phone: Option<String>,
    /// The household it acts for (`X-On-Behalf-Of`), if any.
    pub on_behalf_of: Option<String>,
}

impl User {
    /// A token for a new account with `role`, signed with the test apps' key: an operator
    /// or a service, who are not registered through the API.
    pub fn minted(role: Role) -> Self {
        let id = AccountId::new();
        Self {
            id: id.to_string(),
            role,
            token: keys().issue(id, role),
            phone: None,
            on_behalf_of: None,
        }
    }

    /// The account of a session answered by `/v1/sessions` (or activation), registered with
    /// `phone`.
    pub fn from_session(session: &Value, phone: &str) -> Self {
        let field = |v: &Value| {
            v.as_str()
                .unwrap_or_else(|| panic!("not a session: {session}"))
                .to_owned()
        };
        Self {
            id: field(&session["account"]["id"]),
            role: serde_json::from_value(session["account"]["role"].clone())
                .unwrap_or_else(|e| panic!("no role in the session ({e}): {session}")),
            token: field(&session["access_token"]),
            phone: Some(phone.to_owned()),
            on_behalf_of: None,
        }
    }

    /// The same account acting for `household`.
    pub fn acting_for(&self, household: &str) -> Self {
        Self {
            on_behalf_of: Some(household.to_owned()),
            ..self.clone()
        }
    }

    /// The phone number it registered with.
    pub fn phone(&self) -> &str {
        self.phone
            .as_deref()
            .expect("an account registered through the API")
    }
}
