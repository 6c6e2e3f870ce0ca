//! A user: owner of nodes and pre-auth keys ("namespace" in old Headscale).

use super::{Timestamp, UserId, UserName};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: UserName,
    pub display_name: String,
    pub email: String,
    /// `"cli"` for users created through the admin API, `"oidc"` for OIDC users.
    pub provider: String,
    /// The identity provider's subject; empty for local users.
    pub provider_id: String,
    pub profile_pic_url: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}
