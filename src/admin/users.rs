//! The users pages: list, create, rename, and delete after seeing the user's
//! machines.

use super::layout::{self, Live, Notice, Section, csrf, when};
use super::{Session, Ui, back, form};
use crate::grpc::pb;
use crate::grpc::pb::headscale_service_server::HeadscaleService;
use crate::state::NodeView;
use crate::state::UserFilter;
use crate::types::{User, UserId};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use tonic::Request;

/// `GET /admin/users`.
pub async fn list(
    State(ui): State<Ui>,
    session: Session,
    Query(notice): Query<Notice>,
) -> Response {
    let (users, nodes) = match (
        ui.state.list_users(&UserFilter::default()).await,
        ui.state.list_nodes(None).await,
    ) {
        (Ok(users), Ok(nodes)) => (users, nodes),
        (Err(err), _) | (_, Err(err)) => return super::unavailable(&session, Section::Users, err),
    };
    let content = html! {
        section {
            h2 { "New user" }
            form #create-user method="post" action="/admin/users" {
                (csrf(&session))
                div.row {
                    label { "Name" input type="text" name="name" required; }
                    label { "Display name" input type="text" name="display_name"; }
                    label { "Email" input type="text" name="email"; }
                    button type="submit" { "Create user" }
                }
            }
        }
        div.table { table #users {
            thead { tr { th { "Name" } th { "Display name" } th.wide { "Email" } th { "Machines" } th.wide { "Sign-in" } th.wide { "Created" } } }
            tbody { @for user in &users {
                tr data-user=(user.name.as_str()) {
                    td { a href=(format!("/admin/users/{}", user.id)) { (user.name.as_str()) } }
                    td { (user.display_name) }
                    td.wide { (user.email) }
                    td { (nodes.iter().filter(|v| v.node.user_id == Some(user.id)).count()) }
                    td.wide { @if user.provider == "oidc" { "OIDC" } @else { "local" } }
                    td.wide { (when(Some(user.created_at))) }
                }
            } }
        } }
    };
    layout::page(
        &session,
        Section::Users,
        "Users",
        &notice,
        Live::On,
        content,
    )
    .into_response()
}

/// `POST /admin/users`.
pub async fn create(State(ui): State<Ui>, body: Bytes) -> Response {
    let fields = form(&body);
    let name = fields.get("name").unwrap_or_default();
    let answer = ui
        .admin
        .create_user(Request::new(pb::CreateUserRequest {
            name: name.clone(),
            display_name: fields.get("display_name").unwrap_or_default(),
            email: fields.get("email").unwrap_or_default(),
            picture_url: String::new(),
        }))
        .await
        .map(|_| format!("User {name} created"));
    back("/admin/users", answer)
}

/// `GET /admin/users/{id}`.
pub async fn show(
    State(ui): State<Ui>,
    session: Session,
    Path(id): Path<u64>,
    Query(notice): Query<Notice>,
) -> Response {
    let (user, nodes) = match user_and_nodes(&ui, id).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let path = format!("/admin/users/{id}");
    let content = html! {
        section { dl.facts {
            dt { "Display name" } dd { (user.display_name) }
            dt { "Email" } dd { (user.email) }
            dt { "Sign-in" } dd { @if user.provider == "oidc" { "OIDC" } @else { "local" } }
            @if !user.groups.is_empty() { dt { "Groups" } dd { (user.groups.join(", ")) } }
            dt { "Machines" } dd { @for v in &nodes {
                a href=(format!("/admin/machines/{}", v.node.id)) { (v.node.given_name.as_str()) } " "
            } }
        } }
        h2 { "Rename" }
        form #rename-user method="post" action=(format!("{path}/rename")) {
            (csrf(&session))
            div.row {
                label { "Name" input type="text" name="name" value=(user.name.as_str()) required; }
                button type="submit" { "Rename" }
            }
        }
        h2 { "Delete" }
        p { a href=(format!("{path}/delete")) { "Delete this user…" } }
    };
    layout::page(
        &session,
        Section::Users,
        user.name.as_str(),
        &notice,
        Live::On,
        content,
    )
    .into_response()
}

/// A user and the machines it owns, or the way back to the list.
async fn user_and_nodes(ui: &Ui, id: u64) -> Result<(User, Vec<NodeView>), Response> {
    let user = match ui.state.get_user(UserId(id)).await {
        Ok(user) => user,
        Err(err) => return Err(back("/admin/users", Err(crate::grpc::convert::status(err)))),
    };
    let nodes = match ui.state.list_nodes(Some(user.name.as_str())).await {
        Ok(nodes) => nodes,
        Err(err) => return Err(back("/admin/users", Err(crate::grpc::convert::status(err)))),
    };
    Ok((user, nodes))
}

/// `POST /admin/users/{id}/rename`.
pub async fn rename(State(ui): State<Ui>, Path(id): Path<u64>, body: Bytes) -> Response {
    super::renamed(
        &body,
        &format!("/admin/users/{id}"),
        |new_name| async move {
            let request = pb::RenameUserRequest {
                old_id: id,
                new_name,
            };
            ui.admin.rename_user(Request::new(request)).await
        },
    )
    .await
}

/// `GET /admin/users/{id}/delete`: the user's machines, then the button.
pub async fn confirm_delete(
    State(ui): State<Ui>,
    session: Session,
    Path(id): Path<u64>,
    Query(notice): Query<Notice>,
) -> Response {
    let (user, nodes) = match user_and_nodes(&ui, id).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let content = html! {
        @if nodes.is_empty() {
            p { "User " b { (user.name.as_str()) } " owns no machines." }
        } @else {
            p.warn { "User " b { (user.name.as_str()) } " owns these machines. A user with machines cannot be deleted: delete or re-register them first." }
            ul #user-nodes { @for v in &nodes {
                li { a href=(format!("/admin/machines/{}", v.node.id)) { (v.node.given_name.as_str()) } }
            } }
        }
        form #delete-user method="post" action=(format!("/admin/users/{id}/delete")) {
            (csrf(&session))
            button.danger type="submit" { "Delete user " (user.name.as_str()) }
        }
    };
    layout::page(
        &session,
        Section::Users,
        &format!("Delete {}", user.name.as_str()),
        &notice,
        Live::Off,
        content,
    )
    .into_response()
}

/// `POST /admin/users/{id}/delete`.
pub async fn delete(State(ui): State<Ui>, Path(id): Path<u64>) -> Response {
    match ui
        .admin
        .delete_user(Request::new(pb::DeleteUserRequest { id }))
        .await
    {
        Ok(_) => back("/admin/users", Ok(format!("User {id} deleted"))),
        Err(status) => back(&format!("/admin/users/{id}/delete"), Err(status)),
    }
}
