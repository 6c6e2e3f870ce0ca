//! The page shell every web UI page shares (head, navigation, messages,
//! sign-out), the static style sheet and script, and value formatting.

use crate::types::{AdminSession, Timestamp};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

/// The section a page belongs to, highlighted in the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Machines,
    Users,
    Keys,
    Policy,
    Network,
}

const SECTIONS: [(Section, &str, &str); 6] = [
    (Section::Overview, "/admin", "Overview"),
    (Section::Machines, "/admin/machines", "Machines"),
    (Section::Users, "/admin/users", "Users"),
    (Section::Keys, "/admin/keys", "Keys"),
    (Section::Policy, "/admin/policy", "Access control"),
    (Section::Network, "/admin/network", "DNS & relays"),
];

/// The message a page was sent back with (`?ok=` / `?error=`).
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    pub ok: Option<String>,
    pub error: Option<String>,
}

/// Whether the page keeps itself current (it polls and swaps `#main`); off for
/// pages that show something once (a new key) or hold a submitted form.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Live {
    On,
    Off,
}

/// A whole page for a signed-in admin.
pub fn page(
    session: &AdminSession,
    section: Section,
    title: &str,
    notice: &Notice,
    live: Live,
    content: Markup,
) -> Html<String> {
    let body = html! {
        header {
            a.brand href="/admin" { "headway" }
            nav aria-label="Sections" {
                @for (s, href, label) in SECTIONS {
                    @if s == section {
                        a href=(href) aria-current="page" { (label) }
                    } @else {
                        a href=(href) { (label) }
                    }
                }
            }
            form #logout method="post" action="/admin/logout" {
                (csrf(session))
                button.link type="submit" title=(format!("Signed in: {}", session.who)) { "Sign out" }
            }
        }
        main #main data-live=(if live == Live::On { "on" } else { "off" }) {
            h1 { (title) }
            @if let Some(ok) = &notice.ok { p.flash role="status" { (ok) } }
            @if let Some(error) = &notice.error { p.error role="alert" { (error) } }
            (content)
        }
    };
    document(title, body)
}

/// A page outside the session (sign-in, refusals).
pub fn bare(title: &str, content: Markup) -> Html<String> {
    document(
        title,
        html! {
            header { a.brand href="/admin" { "headway" } }
            main #main data-live="off" { h1 { (title) } (content) }
        },
    )
}

fn document(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="referrer" content="same-origin";
                    title { (title) " · headway" }
                    link rel="stylesheet" href="/admin/assets/style.css";
                    script src="/admin/assets/live.js" defer {}
                }
                body { (body) }
            }
        }
        .into_string(),
    )
}

/// The hidden CSRF field every form carries.
pub fn csrf(session: &AdminSession) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A form of one button that posts to `action` (expire, delete, sign out).
pub fn button_form(session: &AdminSession, id: &str, action: &str, label: &str) -> Markup {
    html! {
        form.inline id=(id) method="post" action=(action) {
            (csrf(session))
            button type="submit" { (label) }
        }
    }
}

/// A time as `2026-12-07 15:04 UTC`, or `never`.
pub fn when(t: Option<Timestamp>) -> String {
    t.map_or_else(
        || "never".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// How long ago `t` was, roughly (`3 min ago`), or `never`.
pub fn ago(t: Option<Timestamp>, now: Timestamp) -> String {
    let Some(t) = t else {
        return "never".to_owned();
    };
    let secs = (now - t).num_seconds().max(0);
    match secs {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

/// `GET /admin/assets/style.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/style.css"))
}

/// `GET /admin/assets/live.js`.
pub async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/live.js"),
    )
}

fn asset(kind: &'static str, text: &'static str) -> Response {
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}
