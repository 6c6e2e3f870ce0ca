//! The access-control page: the policy in an editor, checked (with its own
//! `tests`) before it is saved, errors shown beside it, and a view of whom a
//! chosen node sees and who may connect to it.

use super::layout::{self, Live, Notice, Section, csrf, when};
use super::{Session, Ui, form};
use crate::config::PolicyMode;
use crate::grpc::pb;
use crate::grpc::pb::headscale_service_server::HeadscaleService;
use crate::types::NodeId;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tonic::Request;

#[derive(Debug, Default, Deserialize)]
pub struct Show {
    node: Option<u64>,
    ok: Option<String>,
    error: Option<String>,
}

/// What the editor shows after a submit.
struct Outcome {
    text: String,
    status: StatusCode,
    notice: Notice,
    /// The parser's or the tests' words, shown under the editor.
    problem: Option<String>,
    tests: Option<String>,
}

/// `GET /admin/policy`.
pub async fn show(State(ui): State<Ui>, session: Session, Query(q): Query<Show>) -> Response {
    let text = match ui.state.get_policy().await {
        Ok((text, _)) => text,
        Err(crate::state::Error::NotFound(_)) => String::new(),
        Err(err) => return super::unavailable(&session, Section::Policy, err),
    };
    let outcome = Outcome {
        text,
        status: StatusCode::OK,
        notice: Notice {
            ok: q.ok,
            error: q.error,
        },
        problem: None,
        tests: None,
    };
    render(&ui, &session, outcome, q.node.map(NodeId), Live::On)
}

/// `POST /admin/policy`: `action=check` checks; `action=save` checks and saves.
pub async fn submit(State(ui): State<Ui>, session: Session, body: Bytes) -> Response {
    let fields = form(&body);
    let text = fields.get("policy").unwrap_or_default();
    let save = fields.get("action").as_deref() == Some("save");
    let tests = ui.state.check_policy(&text).ok().map(|p| tests_line(&p));
    let answer = if save {
        ui.admin
            .set_policy(Request::new(pb::SetPolicyRequest {
                policy: text.clone(),
            }))
            .await
            .map(|_| "Policy saved and in force".to_owned())
    } else {
        ui.admin
            .check_policy(Request::new(pb::CheckPolicyRequest {
                policy: text.clone(),
            }))
            .await
            .map(|_| "The policy is valid (not saved)".to_owned())
    };
    let outcome = match answer {
        Ok(done) => Outcome {
            text,
            status: StatusCode::OK,
            notice: Notice {
                ok: Some(done),
                error: None,
            },
            problem: None,
            tests,
        },
        Err(status) => Outcome {
            text,
            status: match status.code() {
                tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
                tonic::Code::Unavailable | tonic::Code::Internal => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            },
            notice: Notice {
                ok: None,
                error: Some(if save {
                    "Not saved: the policy in force is unchanged".to_owned()
                } else {
                    "The policy has errors".to_owned()
                }),
            },
            problem: Some(status.message().to_owned()),
            tests,
        },
    };
    render(&ui, &session, outcome, None, Live::Off)
}

/// The lines around a parse error (`policy:LINE:COLUMN: …`), numbered, with a
/// mark under the column.
fn error_context(text: &str, problem: &str) -> Option<String> {
    let rest = problem.strip_prefix("policy:")?;
    let mut parts = rest.splitn(3, ':');
    let line: usize = parts.next()?.trim().parse().ok()?;
    let column: usize = parts.next()?.trim().parse().ok()?;
    let lines: Vec<&str> = text.lines().collect();
    if line == 0 || line > lines.len() {
        return None;
    }
    let mut out = String::new();
    for n in line.saturating_sub(2).max(1)..=line {
        out.push_str(&format!("{n:>4} | {}\n", lines[n - 1]));
    }
    out.push_str(&format!("     | {}^", " ".repeat(column.saturating_sub(1))));
    Some(out)
}

/// How many tests a policy carries, once they passed.
fn tests_line(policy: &crate::policy::Policy) -> String {
    match (policy.tests.len(), policy.ssh_tests.len()) {
        (0, 0) => "The policy has no tests of its own (\"tests\", \"sshTests\").".to_owned(),
        (acl, ssh) => format!("All the policy's own tests passed: {acl} tests, {ssh} sshTests."),
    }
}

fn render(
    ui: &Ui,
    session: &Session,
    outcome: Outcome,
    node: Option<NodeId>,
    live: Live,
) -> Response {
    let loaded = ui.state.current_policy();
    let from_file = ui.state.policy_source().mode == PolicyMode::File;
    let content = html! {
        section {
            @if from_file {
                p.muted { "The policy comes from a file (policy.mode: file): edit the file; it is read again when it changes. Check works here; saving needs policy.mode: database." }
            }
            @if let Some(at) = loaded.as_ref().and_then(|l| l.updated_at) {
                p.muted { "In force since " (when(Some(at))) "." }
            }
            form #policy method="post" action="/admin/policy" {
                (csrf(session))
                textarea name="policy" spellcheck="false" aria-label="Policy (HuJSON)" { (outcome.text) }
                @if let Some(problem) = &outcome.problem {
                    pre.error #policy-error role="alert" { (problem) }
                    @if let Some(context) = error_context(&outcome.text, problem) {
                        pre #policy-error-context { (context) }
                    }
                }
                @if let Some(tests) = &outcome.tests { p #policy-tests { (tests) } }
                div.row {
                    button.secondary type="submit" name="action" value="check" { "Check" }
                    button type="submit" name="action" value="save" disabled[from_file] { "Save" }
                }
            }
        }
        h2 { "Who can reach whom" }
        (reach(ui, node))
    };
    let page = layout::page(
        session,
        Section::Policy,
        "Access control",
        &outcome.notice,
        live,
        content,
    );
    (outcome.status, page).into_response()
}

/// For a chosen node: the peers it sees and the rules that let others in.
fn reach(ui: &Ui, node: Option<NodeId>) -> Markup {
    let snapshot = ui.state.snapshot();
    let mut nodes: Vec<_> = snapshot.nodes().collect();
    nodes.sort_by_key(|n| n.id);
    let name = |id: NodeId| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map_or_else(|| id.to_string(), |n| n.given_name.as_str().to_owned())
    };
    let view = ui.state.policy_view();
    html! {
        form #reach-select method="get" action="/admin/policy" {
            div.row {
                label { "Node" select name="node" {
                    @for n in &nodes { option value=(n.id) selected[node == Some(n.id)] { (n.given_name.as_str()) } }
                } }
                button.secondary type="submit" { "Show" }
            }
        }
        @if let Some(id) = node {
            @match &view {
                None => p #reach { "No policy is in force: every node sees every other node and all traffic is allowed." },
                Some(view) => {
                    @let peers = view.peers_of(id);
                    p { b { (name(id)) } " sees " (peers.len()) " peers: "
                        @for p in &peers { a href=(format!("/admin/machines/{p}")) { (name(*p)) } " " } }
                    h2 { "Who may connect to " (name(id)) }
                    div.table { table #reach {
                        thead { tr { th { "From" } th { "To (address:ports)" } } }
                        tbody { @for rule in view.filter(id).unwrap_or_default() {
                            tr {
                                td { @for s in rule.src_ips.iter() { code { (s) } " " } }
                                td { @for d in &rule.dst_ports {
                                    code { (d.ip) ":" @if d.ports.first == 0 && d.ports.last == u16::MAX { "*" } @else if d.ports.first == d.ports.last { (d.ports.first) } @else { (d.ports.first) "-" (d.ports.last) } } " "
                                } }
                            }
                        } }
                    } }
                }
            }
        }
    }
}
