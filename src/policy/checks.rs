//! The policy's own `tests` and `sshTests`, run against a compiled view before
//! a policy is accepted: a failing test refuses the policy.
//!
//! `tests` are evaluated against the tailnet-wide rules (every grant and ACL,
//! not reduced to any node; `via` grants do not count): from **every** address
//! of the source, each `accept` destination must be reachable on its port and
//! protocol, and from **no** address may a `deny` destination be. `sshTests`
//! are evaluated against each destination node's compiled SSH policy.

use super::ipset::{IpSet, IpSetBuilder};
use super::parse::{self, AclTest, Alias, AutoGroup, Policy, ProtoPorts, SshTest};
use super::resolve::Resolver;
use super::{Compiled, Error, Tailnet};
use crate::tailcfg::{SSHPolicy, SSHRule};
use crate::types::UserId;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

/// Runs `tests` and `sshTests` of `policy` against `compiled` (the same policy
/// applied to `tailnet`).
pub fn run_tests(policy: &Policy, tailnet: Tailnet<'_>, compiled: &Compiled) -> Result<(), Error> {
    if policy.tests.is_empty() && policy.ssh_tests.is_empty() {
        return Ok(());
    }
    let r = Resolver::new(policy, tailnet);
    let mut lines = Vec::new();
    if !policy.tests.is_empty() {
        let rules = global_rules(&r);
        for test in &policy.tests {
            run_acl_test(&r, &rules, test, &mut lines);
        }
    }
    for test in &policy.ssh_tests {
        run_ssh_test(&r, compiled, test, &mut lines);
    }
    if lines.is_empty() {
        Ok(())
    } else {
        Err(Error::TestsFailed(lines))
    }
}

/// One grant (or ACL destination) as the tests see it.
struct TestRule {
    /// Sources (approved subnets included for `*`).
    src: IpSet,
    ip: Vec<ProtoPorts>,
    /// The destinations other than `autogroup:self`.
    dst: IpSet,
    /// Whether `autogroup:self` is a destination: each source device then also
    /// reaches the devices of its own user.
    to_self: bool,
}

/// Every grant with network access, resolved for the whole tailnet.
fn global_rules(r: &Resolver<'_>) -> Vec<TestRule> {
    let approved_subnets = r.approved_subnets();
    r.policy
        .all_grants()
        .into_iter()
        .filter(|g| g.via.is_empty() && !g.ip.is_empty())
        .filter_map(|g| {
            let mut src = r.resolve_all(&g.src);
            if g.src.contains(&Alias::Wildcard) {
                src = src.union(&approved_subnets);
            }
            let to_self = g.dst.iter().any(is_self);
            let mut dst = IpSetBuilder::default();
            for d in g.dst.iter().filter(|d| !is_self(d)) {
                if *d == Alias::Wildcard {
                    dst.add_set(&IpSet::all());
                } else {
                    dst.add_set(&r.resolve(d));
                }
            }
            let dst = dst.build();
            (!src.is_empty() && (to_self || !dst.is_empty())).then_some(TestRule {
                src,
                ip: g.ip,
                dst,
                to_self,
            })
        })
        .collect()
}

fn is_self(alias: &Alias) -> bool {
    *alias == Alias::AutoGroup(AutoGroup::SelfDevices)
}

/// The addresses of an alias, or why it names nothing that exists. An empty
/// set is not an error here (an undefined group or a tag without nodes).
fn resolve_checked(r: &Resolver<'_>, alias: &Alias) -> Result<IpSet, String> {
    match alias {
        Alias::User(u) if r.user(u).is_none() => Err(format!("user not found: {:?}", u.0)),
        Alias::Host(h) if !r.policy.hosts.contains_key(h) => {
            Err(format!("host not defined in policy: {h:?}"))
        }
        Alias::AutoGroup(AutoGroup::SelfDevices) => {
            Err("autogroup:self cannot be resolved without a destination node".into())
        }
        Alias::AutoGroup(ag @ (AutoGroup::NonRoot | AutoGroup::Other(_))) => {
            Err(format!("{} is not an address selector", ag.name()))
        }
        _ => Ok(r.resolve(alias)),
    }
}

/// The user a source alias names, for `autogroup:self` destinations.
fn source_user(r: &Resolver<'_>, alias: &Alias) -> Option<UserId> {
    match alias {
        Alias::User(u) => r.user(u).map(|u| u.id),
        _ => None,
    }
}

/// The pieces a test source is checked in: each node address for aliases that
/// select nodes, each prefix of the set for addresses and ranges.
fn source_units(alias: &Alias, set: &IpSet) -> Vec<IpSet> {
    match alias {
        Alias::Prefix(_)
        | Alias::Host(_)
        | Alias::Wildcard
        | Alias::AutoGroup(AutoGroup::Internet | AutoGroup::DangerAll) => {
            set.prefixes().into_iter().map(IpSet::from_prefix).collect()
        }
        _ => set.addrs().map(|a| IpSet::from_addrs([a])).collect(),
    }
}

fn run_acl_test(r: &Resolver<'_>, rules: &[TestRule], test: &AclTest, lines: &mut Vec<String>) {
    let src = &test.src;
    let proto = match test.protocol_name() {
        name if name.is_empty() => String::new(),
        name => format!(" ({name})"),
    };
    let resolved = parse::parse_alias(src)
        .map_err(|e| e.to_string())
        .and_then(|alias| resolve_checked(r, &alias).map(|set| (alias, set)));
    let (alias, set) = match resolved {
        Ok(found) => found,
        Err(e) => {
            lines.push(format!(
                "{src}{proto}: failed to resolve source {src:?}: {e}"
            ));
            return;
        }
    };
    if set.is_empty() {
        lines.push(format!(
            "{src}{proto}: source {src:?} resolved to no IP addresses"
        ));
        return;
    }
    let units = source_units(&alias, &set);
    let protocols: Vec<u8> = match test.protocol.0 {
        Some(n) => vec![n],
        None => vec![
            parse::Protocol::TCP,
            parse::Protocol::UDP,
            parse::Protocol::ICMP,
            parse::Protocol::ICMPV6,
        ],
    };
    for (expect_allowed, list) in [(true, &test.accept), (false, &test.deny)] {
        for d in list {
            let dst = match &d.alias {
                Alias::AutoGroup(AutoGroup::SelfDevices) => match source_user(r, &alias) {
                    Some(u) => Ok(r.addrs_of(r.devices_of(u))),
                    None => Err("autogroup:self needs a user as the source".to_owned()),
                },
                other => resolve_checked(r, other),
            };
            let dst = match dst {
                Ok(set) if set.is_empty() => Err("resolved to no IP addresses".to_owned()),
                other => other,
            };
            let dst = match dst {
                Ok(set) => set,
                Err(e) => {
                    lines.push(format!("{src}{proto}: error testing {:?}: {e}", d.text));
                    continue;
                }
            };
            let port = d.ports.first().map_or(0, |p| p.first);
            let allowed = |unit: &IpSet| reaches(r, rules, unit, &dst, port, &protocols);
            let ok = if expect_allowed {
                units.iter().all(allowed)
            } else {
                !units.iter().any(allowed)
            };
            if !ok {
                let (want, got) = if expect_allowed {
                    ("ALLOWED", "DENIED")
                } else {
                    ("DENIED", "ALLOWED")
                };
                lines.push(format!(
                    "{src} -> {}{proto}: expected {want}, got {got}",
                    d.text
                ));
            }
        }
    }
}

/// Whether some rule lets traffic from `unit` reach `dst` on `port` with one of
/// `protocols`.
fn reaches(
    r: &Resolver<'_>,
    rules: &[TestRule],
    unit: &IpSet,
    dst: &IpSet,
    port: u16,
    protocols: &[u8],
) -> bool {
    rules.iter().any(|rule| {
        if !rule.src.overlaps(unit) {
            return false;
        }
        let opens = rule.ip.iter().any(|pp| {
            protocols.iter().any(|n| pp.protocol.matches(*n))
                && pp.ports.iter().any(|p| p.first <= port && port <= p.last)
        });
        if !opens {
            return false;
        }
        if rule.dst.overlaps(dst) {
            return true;
        }
        rule.to_self && {
            // Source devices reach the devices of their own user.
            let devices = r.devices();
            r.devices_in(&unit.intersection(&rule.src))
                .into_iter()
                .filter(|i| !devices[*i].is_tagged())
                .filter_map(|i| devices[i].user)
                .any(|u| r.addrs_of(r.devices_of(u)).overlaps(dst))
        }
    })
}

fn run_ssh_test(r: &Resolver<'_>, compiled: &Compiled, test: &SshTest, lines: &mut Vec<String>) {
    let src = &test.src_text;
    let set = match resolve_checked(r, &test.src) {
        Ok(set) => set,
        Err(e) => {
            lines.push(format!("{src}: failed to resolve source {src:?}: {e}"));
            return;
        }
    };
    if set.is_empty() {
        lines.push(format!("{src}: source {src:?} resolved to no IP addresses"));
        return;
    }
    if test.accept.is_empty() && test.deny.is_empty() && test.check.is_empty() {
        lines.push(format!(
            "{src}: no accept, deny, or check assertions specified"
        ));
        return;
    }

    // Destination nodes (by device index), each once, with the alias that
    // named it first.
    let devices = r.devices();
    let mut targets: BTreeMap<usize, String> = BTreeMap::new();
    let mut order: Vec<usize> = Vec::new();
    let mut failed = false;
    for d in &test.dst {
        let found: Vec<usize> = match d {
            Alias::AutoGroup(AutoGroup::SelfDevices) => source_user(r, &test.src)
                .map(|u| r.devices_of(u).to_vec())
                .unwrap_or_default(),
            // Tailscale matches no node by a bare IPv6 address.
            Alias::Prefix(p) if p.addr().is_ipv6() => Vec::new(),
            other => r.devices_in(&r.resolve(other)),
        };
        if found.is_empty() {
            lines.push(format!("{src}: dst alias \"{d}\" resolved to no nodes"));
            failed = true;
            continue;
        }
        for i in found {
            if let Entry::Vacant(slot) = targets.entry(i) {
                slot.insert(d.to_string());
                order.push(i);
            }
        }
    }
    if failed {
        return;
    }

    for i in order {
        let node = format!("{} (node {})", targets[&i], devices[i].id);
        let policy = compiled.ssh_policy(devices[i].id).map(|p| &**p);
        let asserts = [
            (Expect::Allowed, &test.accept),
            (Expect::Denied, &test.deny),
            (Expect::Check, &test.check),
        ];
        for (expect, users) in asserts {
            for user in users {
                let (allowed, via_check) = logins(policy, user);
                let got_allowed = allowed.is_superset_of(&set);
                let problem = match expect {
                    Expect::Allowed if !got_allowed => Some(("ALLOWED", "DENIED")),
                    Expect::Denied if allowed.overlaps(&set) => Some(("DENIED", "ALLOWED")),
                    Expect::Check if !via_check.is_superset_of(&set) => Some((
                        "ALLOWED via check",
                        if got_allowed {
                            "ALLOWED via accept"
                        } else {
                            "DENIED"
                        },
                    )),
                    _ => None,
                };
                if let Some((want, got)) = problem {
                    let shown = if user.is_empty() { "\"\"" } else { user };
                    lines.push(format!(
                        "{src}/{shown} -> {node}: expected {want}, got {got}"
                    ));
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Expect {
    Allowed,
    Denied,
    Check,
}

/// The addresses from which `user` may log in under `policy` (by an accept or
/// a check rule), and those from which a check rule lets them in.
fn logins(policy: Option<&SSHPolicy>, user: &str) -> (IpSet, IpSet) {
    let mut any = IpSetBuilder::default();
    let mut check = IpSetBuilder::default();
    for rule in policy.into_iter().flat_map(|p| &p.rules) {
        if !allows_user(rule, user) {
            continue;
        }
        let principals = principal_addrs(rule);
        if !rule.action.hold_and_delegate.is_empty() {
            check.add_set(&principals);
        }
        any.add_set(&principals);
    }
    (any.build(), check.build())
}

/// Whether a rule's `sshUsers` let `user` in: its own entry (non-empty), or,
/// for anyone but root, a non-empty `*` entry. An empty name never matches.
fn allows_user(rule: &SSHRule, user: &str) -> bool {
    if user.is_empty() {
        return false;
    }
    match rule.ssh_users.get(user) {
        Some(local) => !local.is_empty(),
        None if user == "root" => false,
        None => rule.ssh_users.get("*").is_some_and(|l| !l.is_empty()),
    }
}

fn principal_addrs(rule: &SSHRule) -> IpSet {
    if rule.principals.iter().any(|p| p.any) {
        return IpSet::all();
    }
    IpSet::from_addrs(
        rule.principals
            .iter()
            .filter_map(|p| p.node_ip.parse().ok()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{device, user};
    use crate::policy::{Device, Options};
    use crate::types::User;
    use std::sync::Arc;

    /// odin (1) owns node 1, thor (2) node 2 and node 5; node 3 is tag:server,
    /// node 4 tag:prod.
    fn tailnet() -> (Vec<User>, Vec<Device>) {
        (
            vec![
                user(1, "odin", "odin@example.com"),
                user(2, "thor", "thor@example.org"),
            ],
            vec![
                device(1, Some(1), &[]),
                device(2, Some(2), &[]),
                device(3, None, &["tag:server"]),
                device(4, None, &["tag:prod"]),
                device(5, Some(2), &[]),
            ],
        )
    }

    const HEAD: &str = r#""tagOwners": {"tag:server": ["odin@example.com"], "tag:prod": ["odin@example.com"]},
        "hosts": {"webserver": "100.64.0.3", "lan": "10.0.0.0/8"}"#;

    /// The outcome of the policy's tests; `Err` holds the failure lines.
    fn run(body: &str) -> Result<(), Vec<String>> {
        let policy = Arc::new(Policy::parse(&format!("{{{HEAD}, {body}}}")).unwrap());
        let (users, devices) = tailnet();
        let tailnet = Tailnet {
            users: &users,
            devices: &devices,
        };
        let compiled = Compiled::new(policy.clone(), tailnet, &Options::default());
        run_tests(&policy, tailnet, &compiled).map_err(|e| match e {
            Error::TestsFailed(lines) => lines,
            other => panic!("unexpected error {other}"),
        })
    }

    #[test]
    fn acl_tests_pass_and_fail_on_ports_and_protocols() {
        let acls = r#""acls": [{"action": "accept", "proto": "tcp", "src": ["thor@example.org"], "dst": ["webserver:80", "tag:prod:22"]}]"#;
        assert_eq!(
            run(&format!(
                r#"{acls}, "tests": [{{"src": "thor@example.org", "accept": ["webserver:80", "tag:prod:22"], "deny": ["webserver:443"]}}]"#
            )),
            Ok(())
        );
        assert_eq!(
            run(&format!(
                r#"{acls}, "tests": [{{"src": "thor@example.org", "proto": "udp", "accept": ["webserver:80"]}}, {{"src": "thor@example.org", "deny": ["webserver:80"]}}]"#
            )),
            Err(vec![
                "thor@example.org -> webserver:80 (udp): expected ALLOWED, got DENIED".to_owned(),
                "thor@example.org -> webserver:80: expected DENIED, got ALLOWED".to_owned(),
            ])
        );
    }

    #[test]
    fn every_source_address_must_be_allowed_and_none_for_a_deny() {
        // Only one of thor's two nodes may reach the server.
        let body = r#""acls": [{"action": "accept", "src": ["100.64.0.2"], "dst": ["webserver:22"]}],
            "tests": [{"src": "thor@example.org", "accept": ["webserver:22"]}, {"src": "thor@example.org", "deny": ["webserver:22"]}]"#;
        assert_eq!(
            run(body),
            Err(vec![
                "thor@example.org -> webserver:22: expected ALLOWED, got DENIED".to_owned(),
                "thor@example.org -> webserver:22: expected DENIED, got ALLOWED".to_owned(),
            ])
        );
    }

    #[test]
    fn the_default_allow_and_autogroup_self_count() {
        assert_eq!(
            run(r#""tests": [{"src": "tag:prod", "accept": ["odin@example.com:5432"]}]"#),
            Ok(())
        );
        let body = r#""acls": [{"action": "accept", "src": ["thor@example.org"], "dst": ["autogroup:self:22"]}],
            "tests": [{"src": "thor@example.org", "deny": ["autogroup:self:22"]}, {"src": "thor@example.org", "accept": ["autogroup:self:22"], "deny": ["odin@example.com:22"]}]"#;
        assert_eq!(
            run(body),
            Err(vec![
                "thor@example.org -> autogroup:self:22: expected DENIED, got ALLOWED".to_owned()
            ])
        );
    }

    #[test]
    fn unknown_sources_and_destinations_fail() {
        let lines = run(r#""acls": [], "tests": [
            {"src": "nobody@example.com", "accept": ["webserver:22"]},
            {"src": "group:none", "accept": ["webserver:22"]},
            {"src": "", "accept": ["webserver:22"]},
            {"src": "tag:server", "deny": ["nohost:22", "tag:prod:22"]}
        ]"#)
        .unwrap_err();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].starts_with("nobody@example.com: failed to resolve source"));
        assert_eq!(
            lines[1],
            r#"group:none: source "group:none" resolved to no IP addresses"#
        );
        assert!(lines[2].starts_with(r#": failed to resolve source "": host not defined"#));
        assert!(lines[3].starts_with(r#"tag:server: error testing "nohost:22""#));
    }

    const SSH: &str = r#""ssh": [
        {"action": "accept", "src": ["thor@example.org"], "dst": ["tag:server"], "users": ["root", "autogroup:nonroot"]},
        {"action": "check", "src": ["odin@example.com"], "dst": ["tag:server"], "users": ["ubuntu"]},
        {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot"]}
    ]"#;

    #[test]
    fn ssh_tests_accept_deny_and_check() {
        let ok = format!(
            r#"{SSH}, "sshTests": [
                {{"src": "thor@example.org", "dst": ["tag:server", "webserver"], "accept": ["root", "alice"]}},
                {{"src": "odin@example.com", "dst": ["tag:server"], "check": ["ubuntu"], "deny": ["root", "alice"]}},
                {{"src": "thor@example.org", "dst": ["autogroup:self"], "accept": ["alice"], "deny": ["root"]}},
                {{"src": "tag:prod", "dst": ["tag:server"], "deny": ["root"]}}
            ]"#
        );
        assert_eq!(run(&ok), Ok(()));
        let bad = format!(
            r#"{SSH}, "sshTests": [
                {{"src": "thor@example.org", "dst": ["tag:server"], "deny": ["root"], "check": ["alice"], "accept": [""]}},
                {{"src": "odin@example.com", "dst": ["tag:prod"], "accept": ["ubuntu"]}}
            ]"#
        );
        assert_eq!(
            run(&bad),
            Err(vec![
                r#"thor@example.org/"" -> tag:server (node 3): expected ALLOWED, got DENIED"#.to_owned(),
                "thor@example.org/root -> tag:server (node 3): expected DENIED, got ALLOWED".to_owned(),
                "thor@example.org/alice -> tag:server (node 3): expected ALLOWED via check, got ALLOWED via accept"
                    .to_owned(),
                "odin@example.com/ubuntu -> tag:prod (node 4): expected ALLOWED, got DENIED".to_owned(),
            ])
        );
    }

    #[test]
    fn ssh_test_destinations_must_name_nodes() {
        let body = format!(
            r#"{SSH}, "sshTests": [
                {{"src": "thor@example.org", "dst": ["fd7a:115c:a1e0::3"], "accept": ["root"]}},
                {{"src": "thor@example.org", "dst": ["100.64.0.3"], "accept": ["root"]}},
                {{"src": "tag:server", "dst": ["autogroup:self"], "accept": ["root"]}},
                {{"src": "thor@example.org", "dst": ["tag:server"]}}
            ]"#
        );
        assert_eq!(
            run(&body),
            Err(vec![
                r#"thor@example.org: dst alias "fd7a:115c:a1e0::3" resolved to no nodes"#
                    .to_owned(),
                r#"tag:server: dst alias "autogroup:self" resolved to no nodes"#.to_owned(),
                "thor@example.org: no accept, deny, or check assertions specified".to_owned(),
            ])
        );
    }

    #[test]
    fn without_an_ssh_section_nobody_logs_in() {
        assert_eq!(
            run(
                r#""sshTests": [{"src": "thor@example.org", "dst": ["tag:server"], "deny": ["root"]}]"#
            ),
            Ok(())
        );
        assert!(
            run(r#""sshTests": [{"src": "thor@example.org", "dst": ["tag:server"], "accept": ["root"]}]"#)
                .is_err()
        );
    }
}
