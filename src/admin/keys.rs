//! The keys page: pre-auth keys (reusable, ephemeral, tagged, expiring) and
//! API keys; a new key's secret is shown once, on the answer to its form.

use super::layout::{self, Live, Notice, Section, button_form, csrf, when};
use super::{Session, Ui, back, form};
use crate::grpc::pb;
use crate::grpc::pb::headscale_service_server::HeadscaleService;
use crate::state::UserFilter;
use crate::types::secret::PrefixedSecret;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use tonic::Request;

/// `GET /admin/keys`.
pub async fn list(
    State(ui): State<Ui>,
    session: Session,
    Query(notice): Query<Notice>,
) -> Response {
    render(&ui, &session, &notice, None).await
}

/// The keys page, with a secret just made (shown once) or an error.
async fn render(
    ui: &Ui,
    session: &Session,
    notice: &Notice,
    secret: Option<(&str, &str)>,
) -> Response {
    let (users, preauth, api) = match (
        ui.state.list_users(&UserFilter::default()).await,
        ui.state.list_preauth_keys().await,
        ui.state.list_api_keys().await,
    ) {
        (Ok(u), Ok(p), Ok(a)) => (u, p, a),
        (Err(err), _, _) | (_, Err(err), _) | (_, _, Err(err)) => {
            return super::unavailable(session, Section::Keys, err);
        }
    };
    let now = chrono::Utc::now();
    let user_name = |id| {
        users
            .iter()
            .find(|u| Some(u.id) == id)
            .map(|u| u.name.as_str().to_owned())
    };
    let state_of = |expiration: Option<crate::types::Timestamp>, used: bool| -> Markup {
        html! {
            @if expiration.is_some_and(|e| e <= now) { span.muted { "expired" } }
            @else if used { span.muted { "used" } }
            @else { span.online { "valid" } }
        }
    };
    let content = html! {
        @if let Some((what, text)) = secret {
            section {
                p { "The new " (what) ". Copy it now: it is not shown again." }
                code.secret #new-secret { (text) }
            }
        }
        section {
            h2 { "New pre-auth key" }
            form #create-preauth-key method="post" action="/admin/keys/preauth" {
                (csrf(session))
                div.row {
                    label { "User" select name="user" {
                        option value="" { "none (tagged key)" }
                        @for u in &users { option value=(u.name.as_str()) { (u.name.as_str()) } }
                    } }
                    label { "Tags" input type="text" name="tags" placeholder="tag:server"; }
                    label { "Expires in" input type="text" name="expiration" value="1h" size="6"; }
                }
                div.row {
                    label.check { input type="checkbox" name="reusable"; " reusable" }
                    label.check { input type="checkbox" name="ephemeral"; " ephemeral" }
                    button type="submit" { "Create pre-auth key" }
                }
            }
        }
        h2 { "Pre-auth keys" }
        div.table { table #preauth-keys {
            thead { tr { th { "Key" } th { "User / tags" } th { "Kind" } th { "Expires" } th { "State" } th {} } }
            tbody { @for k in &preauth {
                tr data-key-id=(k.id) {
                    td { code { (PrefixedSecret::masked(PrefixedSecret::AUTH, &k.prefix)) } }
                    td { @if let Some(name) = user_name(k.user_id) { (name) " " } @for t in &k.tags { code { (t) } " " } }
                    td { @if k.reusable { "reusable " } @if k.ephemeral { "ephemeral" } }
                    td { (when(k.expiration)) }
                    td { (state_of(k.expiration, k.used && !k.reusable)) }
                    td { @if k.expiration.is_none_or(|e| e > now) {
                        (button_form(session, &format!("expire-preauth-{}", k.id), &format!("/admin/keys/preauth/{}/expire", k.id), "Expire"))
                    } }
                }
            } }
        } }
        section {
            h2 { "New API key" }
            p.muted { "API keys drive the admin API from elsewhere: the CLI's cli.api_key, /api/v1 and /api/v2." }
            form #create-api-key method="post" action="/admin/keys/api" {
                (csrf(session))
                div.row {
                    label { "Expires in" input type="text" name="expiration" value="90d" size="6"; }
                    button type="submit" { "Create API key" }
                }
            }
        }
        h2 { "API keys" }
        div.table { table #api-keys {
            thead { tr { th { "Key" } th { "Created" } th { "Last used" } th { "Expires" } th {} } }
            tbody { @for k in &api {
                tr data-key-id=(k.id) {
                    td { code { (PrefixedSecret::masked(PrefixedSecret::API, &k.prefix)) } }
                    td { (when(Some(k.created_at))) }
                    td { (when(k.last_seen)) }
                    td { (when(k.expiration)) " " (state_of(k.expiration, false)) }
                    td { @if k.expiration.is_none_or(|e| e > now) {
                        (button_form(session, &format!("expire-api-{}", k.id), &format!("/admin/keys/api/{}/expire", k.id), "Expire"))
                    } }
                }
            } }
        } }
    };
    let live = if secret.is_some() || notice.error.is_some() {
        Live::Off
    } else {
        Live::On
    };
    let page = layout::page(session, Section::Keys, "Keys", notice, live, content);
    let code = if notice.error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (code, page).into_response()
}

/// An expiration field (`1h`, `90d`) as the time it ends.
fn expiration(text: &str) -> Result<prost_types::Timestamp, String> {
    let lifetime =
        crate::types::duration::parse(text).map_err(|e| format!("expiration {text:?}: {e}"))?;
    let lifetime = chrono::TimeDelta::from_std(lifetime)
        .map_err(|_| format!("expiration {text:?} is too long"))?;
    let at = chrono::Utc::now()
        .checked_add_signed(lifetime)
        .ok_or_else(|| format!("expiration {text:?} is too long"))?;
    Ok(crate::grpc::convert::timestamp(at))
}

fn error(text: String) -> Notice {
    Notice {
        ok: None,
        error: Some(text),
    }
}

/// `POST /admin/keys/preauth`: makes the key and shows it once.
pub async fn create_preauth(State(ui): State<Ui>, session: Session, body: Bytes) -> Response {
    let fields = form(&body);
    let made = async {
        let user = match fields.get("user").filter(|u| !u.is_empty()) {
            Some(name) => {
                ui.state
                    .find_user(&name)
                    .await
                    .map_err(|e| crate::grpc::convert::status(e).message().to_owned())?
                    .id
                    .0
            }
            None => 0,
        };
        let acl_tags: Vec<String> = fields
            .get("tags")
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        let request = pb::CreatePreAuthKeyRequest {
            user,
            reusable: fields.checked("reusable"),
            ephemeral: fields.checked("ephemeral"),
            expiration: Some(expiration(
                &fields.get("expiration").unwrap_or_else(|| "1h".into()),
            )?),
            acl_tags,
        };
        ui.admin
            .create_pre_auth_key(Request::new(request))
            .await
            .map_err(|s| s.message().to_owned())
            .and_then(|r| {
                r.into_inner()
                    .pre_auth_key
                    .map(|k| k.key)
                    .ok_or_else(|| "the server made no key".to_owned())
            })
    }
    .await;
    match made {
        Ok(key) => {
            render(
                &ui,
                &session,
                &Notice::default(),
                Some(("pre-auth key", &key)),
            )
            .await
        }
        Err(why) => render(&ui, &session, &error(why), None).await,
    }
}

/// `POST /admin/keys/api`: makes the key and shows it once.
pub async fn create_api(State(ui): State<Ui>, session: Session, body: Bytes) -> Response {
    let fields = form(&body);
    let made = match expiration(&fields.get("expiration").unwrap_or_else(|| "90d".into())) {
        Ok(at) => ui
            .admin
            .create_api_key(Request::new(pb::CreateApiKeyRequest {
                expiration: Some(at),
            }))
            .await
            .map(|r| r.into_inner().api_key)
            .map_err(|s| s.message().to_owned()),
        Err(why) => Err(why),
    };
    match made {
        Ok(key) => render(&ui, &session, &Notice::default(), Some(("API key", &key))).await,
        Err(why) => render(&ui, &session, &error(why), None).await,
    }
}

/// `POST /admin/keys/preauth/{id}/expire`.
pub async fn expire_preauth(State(ui): State<Ui>, Path(id): Path<u64>) -> Response {
    let answer = ui
        .admin
        .expire_pre_auth_key(Request::new(pb::ExpirePreAuthKeyRequest { id }))
        .await
        .map(|_| format!("Pre-auth key {id} expired"));
    back("/admin/keys", answer)
}

/// `POST /admin/keys/api/{id}/expire`.
pub async fn expire_api(State(ui): State<Ui>, Path(id): Path<u64>) -> Response {
    let answer = ui
        .admin
        .expire_api_key(Request::new(pb::ExpireApiKeyRequest {
            prefix: String::new(),
            id,
        }))
        .await
        .map(|_| format!("API key {id} expired"));
    back("/admin/keys", answer)
}
