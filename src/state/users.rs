//! User (namespace) rules: unique valid names, deletion only when empty.

use super::{Change, Error, Result, State, storage};
use crate::db::NewUser;
use crate::types::{User, UserId, UserName};

/// Optional filters of `list_users`; all set filters must match.
#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    pub id: Option<UserId>,
    pub name: Option<String>,
    pub email: Option<String>,
}

impl State {
    pub async fn create_user(
        &self,
        name: &str,
        display_name: &str,
        email: &str,
        picture_url: &str,
    ) -> Result<(User, Change)> {
        let name = UserName::parse(name).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let new = NewUser {
            name: name.clone(),
            display_name: display_name.trim().to_owned(),
            email: email.trim().to_owned(),
            // Empty, as Headscale writes users created through its API.
            provider: String::new(),
            provider_id: String::new(),
            profile_pic_url: picture_url.trim().to_owned(),
            groups: Vec::new(),
            created_at: Self::now(),
        };
        let _users = self.users_writer.lock().await;
        let user = self.db.insert_user(&new).await.map_err(|e| {
            storage(
                e,
                || format!("user {name} not found"),
                |_| format!("user \"{name}\" already exists"),
            )
        })?;
        self.remember_user(user.id, Some(user.clone()));
        Ok((user, Change::none()))
    }

    /// Replaces (or, with `None`, forgets) one user in the in-memory copy. The caller
    /// holds `users_writer`.
    pub(super) fn remember_user(&self, id: UserId, user: Option<User>) {
        let mut users = (*self.users.load_full()).clone();
        match user {
            Some(user) => users.insert(id, user),
            None => users.remove(&id),
        };
        self.users.store(std::sync::Arc::new(users));
    }

    pub async fn list_users(&self, filter: &UserFilter) -> Result<Vec<User>> {
        let users = self.db.list_users().await?;
        Ok(users
            .into_iter()
            .filter(|u| filter.id.is_none_or(|id| u.id == id))
            .filter(|u| filter.name.as_deref().is_none_or(|n| u.name.as_str() == n))
            .filter(|u| filter.email.as_deref().is_none_or(|e| u.email == e))
            .collect())
    }

    pub async fn get_user(&self, id: UserId) -> Result<User> {
        self.list_users(&UserFilter {
            id: Some(id),
            ..UserFilter::default()
        })
        .await?
        .pop()
        .ok_or_else(|| Error::NotFound(format!("user with id {id} not found")))
    }

    /// Finds a user by exact name, or by id when `reference` is a number that is
    /// not also some user's name (names must start with a letter, so this is unambiguous).
    pub async fn find_user(&self, reference: &str) -> Result<User> {
        let reference = reference.trim();
        if reference.is_empty() {
            return Err(Error::InvalidArgument("a user is required".into()));
        }
        let users = self.db.list_users().await?;
        if let Some(user) = users.iter().find(|u| u.name.as_str() == reference) {
            return Ok(user.clone());
        }
        if let Ok(id) = reference.parse::<UserId>()
            && let Some(user) = users.iter().find(|u| u.id == id)
        {
            return Ok(user.clone());
        }
        Err(Error::NotFound(format!("user {reference:?} not found")))
    }

    /// Renames a user; peers learn the new profile of its nodes.
    pub async fn rename_user(&self, id: UserId, new_name: &str) -> Result<(User, Change)> {
        let name = UserName::parse(new_name).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let _users = self.users_writer.lock().await;
        let user = self
            .db
            .rename_user(id, &name, Self::now())
            .await
            .map_err(|e| {
                storage(
                    e,
                    || format!("user with id {id} not found"),
                    |_| format!("user \"{name}\" already exists"),
                )
            })?;
        self.remember_user(id, Some(user.clone()));
        drop(_users);
        Ok((user, self.profile_changed(id).await?))
    }

    /// What a changed user (name, email, display name, picture, groups) means for
    /// clients: peers learn the new profile of its nodes, and with a policy every
    /// view is checked again (a policy naming users by name, email or group may now
    /// mean someone else). Called after `users_writer` is released.
    pub(super) async fn profile_changed(&self, id: UserId) -> Result<Change> {
        let mut change = Change {
            users_changed: [id].into(),
            ..Change::none()
        };
        for node in self.snapshot().nodes().filter(|n| n.user_id == Some(id)) {
            change.merge(Change::node_changed(node.id));
        }
        if self.current_policy().is_some() {
            change.merge(Change::policy());
            change.merge(self.reapprove_all().await?);
        }
        Ok(change)
    }

    /// Deletes a user that owns no nodes, with its pre-auth keys.
    pub async fn delete_user(&self, id: UserId) -> Result<Change> {
        let owned = self
            .snapshot()
            .nodes()
            .filter(|n| n.user_id == Some(id))
            .count();
        if owned > 0 {
            return Err(Error::FailedPrecondition(format!(
                "user with id {id} still owns {owned} node(s); delete them first (headway nodes list --user {id})"
            )));
        }
        let _users = self.users_writer.lock().await;
        self.db.delete_user(id).await.map_err(|e| {
            storage(
                e,
                || format!("user with id {id} not found"),
                |_| format!("user with id {id} still owns nodes; delete them first"),
            )
        })?;
        self.remember_user(id, None);
        Ok(Change::none())
    }
}
