//! Small tailnets for unit tests of the policy and of what is built on it, and
//! for the policy fuzz target.

use super::Device;
use crate::types::{NodeId, User, UserId, UserName};

/// A user with a name and an email.
pub fn user(id: u64, name: &str, email: &str) -> User {
    let now = chrono::Utc::now();
    User {
        id: UserId(id),
        name: UserName::parse(name).unwrap(),
        display_name: String::new(),
        email: email.into(),
        provider: "cli".into(),
        provider_id: String::new(),
        profile_pic_url: String::new(),
        groups: Vec::new(),
        created_at: now,
        updated_at: now,
    }
}

/// Device `id` at 100.64.0.`id` and fd7a:115c:a1e0::`id`, owned by `user` or
/// carrying `tags`.
pub fn device(id: u64, user: Option<u64>, tags: &[&str]) -> Device {
    Device {
        id: NodeId(id),
        user: user.map(UserId),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        addrs: vec![
            format!("100.64.0.{id}").parse().unwrap(),
            format!("fd7a:115c:a1e0::{id:x}").parse().unwrap(),
        ],
        subnet_routes: Vec::new(),
        exit_node: false,
    }
}
