//! The DNS and relays page: what clients are sent right now (the DNS
//! configuration every node shares, extra records, the DERP map).

use super::layout::{self, Live, Notice, Section};
use super::{Session, Ui};
use crate::tailcfg::Resolver;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

fn resolvers(list: &[Resolver]) -> Markup {
    html! {
        @if list.is_empty() { span.muted { "none" } }
        @for r in list { code { (r.addr) } " " }
    }
}

/// `GET /admin/network`.
pub async fn show(
    State(ui): State<Ui>,
    session: Session,
    Query(notice): Query<Notice>,
) -> Response {
    let dns = ui.map.dns.clone().unwrap_or_default();
    let records = ui.map.extra_records.load_full();
    let derp = ui.derp.current();
    let content = html! {
        section #dns {
            h2 { "DNS" }
            dl.facts {
                dt { "MagicDNS" } dd { @if dns.proxied { "on, names end in " code { (ui.map.base_domain) } } @else { "off" } }
                dt { "Nameservers" } dd { (resolvers(&dns.resolvers)) @if !dns.resolvers.is_empty() { " " span.muted { "(override the device's own)" } } }
                dt { "Fallback nameservers" } dd { (resolvers(&dns.fallback_resolvers)) }
                dt { "Search domains" } dd { @for d in &dns.domains { code { (d) } " " } }
                dt { "Split DNS" } dd {
                    @for (domain, servers) in &dns.routes {
                        code { (domain) } " → " @if servers.is_empty() { "MagicDNS (100.100.100.100)" } @else { (resolvers(servers)) } br;
                    }
                }
                dt { "Certificates" } dd { @if ui.map.cert_domains { "tailscale cert works (dns.authoritative)" } @else { "off" } }
            }
            h2 { "Extra records" }
            @if records.is_empty() { p.muted { "None (dns.extra_records, dns.extra_records_path)." } } @else {
                div.table { table #extra-records {
                    thead { tr { th { "Name" } th { "Type" } th { "Value" } } }
                    tbody { @for r in records.iter() { tr { td { (r.name) } td { (r.r#type) } td { code { (r.value) } } } } }
                } }
            }
        }
        section #derp {
            h2 { "Relays (DERP map)" }
            @if derp.regions.is_empty() { p.warn { "The DERP map is empty: clients can only connect directly." } }
            div.table { table {
                thead { tr { th { "Region" } th { "Code" } th { "Relay servers" } } }
                tbody { @for (id, region) in &derp.regions {
                    tr data-region=(id) {
                        td { (id) " " (region.region_name) }
                        td { code { (region.region_code) } }
                        td { @for n in &region.nodes {
                            code { (n.host_name) } @if !n.ipv4.is_empty() { " (" (n.ipv4) ")" } br;
                        } }
                    }
                } }
            } }
        }
    };
    layout::page(
        &session,
        Section::Network,
        "DNS & relays",
        &notice,
        Live::On,
        content,
    )
    .into_response()
}
