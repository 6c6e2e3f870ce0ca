//! The `ssh` section → each node's `SSHPolicy` (who may log in as whom, accept
//! or check), as Tailscale's control plane builds it.
//!
//! Compiled per destination node: a rule applies to the nodes its `dst` names,
//! and its principals are the addresses of the source nodes, grouped by owner
//! (tagged sources come last, once per tag they carry). `localpart:*@domain`
//! users add a companion rule per source user mapping the local part of the
//! user's email to the same local name, and, as Tailscale does, make every
//! source node a destination of its own user's nodes ("self-access"). Check
//! rules come before accept rules, otherwise policy order is kept.

use super::ipset::IpSet;
use super::parse::{Alias, AutoGroup, Policy, SshAction, SshRule, SshUser};
use super::resolve::Resolver;
use super::{Device, Tailnet};
use crate::tailcfg::{SSHAction, SSHPolicy, SSHPrincipal, SSHRule};
use crate::types::{NodeId, UserId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The SSH policy of every device (by index); `None` everywhere when the policy
/// has no `ssh` section.
pub(super) fn compile(r: &Resolver<'_>, server_url: &str) -> Vec<Option<Arc<SSHPolicy>>> {
    let n = r.devices().len();
    if !r.policy.has_ssh {
        return vec![None; n];
    }
    // Each node's rules, as shared wire rules: a policy rule emits one wire
    // rule per group of principals, and many nodes receive the same ones.
    let mut per_node: Vec<Vec<Arc<SSHRule>>> = vec![Vec::new(); n];
    for rule in &r.policy.ssh {
        compile_rule(r, rule, server_url, &mut per_node);
    }
    // Nodes with the same rules share one policy.
    let mut shared: HashMap<Vec<usize>, Arc<SSHPolicy>> = HashMap::new();
    per_node
        .into_iter()
        .map(|mut rules| {
            // Check rules first; a stable sort keeps policy order otherwise.
            rules.sort_by_key(|rule| rule.action.hold_and_delegate.is_empty());
            let key: Vec<usize> = rules.iter().map(|r| Arc::as_ptr(r) as usize).collect();
            Some(
                shared
                    .entry(key)
                    .or_insert_with(|| {
                        Arc::new(SSHPolicy {
                            rules: rules.iter().map(|r| SSHRule::clone(r)).collect(),
                        })
                    })
                    .clone(),
            )
        })
        .collect()
}

/// How long an approval of a `check` connection from node `src` to node `dst`
/// lasts: the period of the first `check` rule whose sources include `src` and
/// whose destinations include `dst` (`autogroup:self`: both untagged, same
/// owner). `None` when no check rule covers the pair (or a node is unknown).
/// The rule's `users` are not considered.
pub fn check_period_for(
    policy: &Policy,
    tailnet: Tailnet<'_>,
    src: NodeId,
    dst: NodeId,
) -> Option<Duration> {
    let find = |id: NodeId| tailnet.devices.iter().find(|d| d.id == id);
    let (src, dst) = (find(src)?, find(dst)?);
    let r = Resolver::new(policy, tailnet);
    let within = |d: &Device, set: &IpSet| d.addrs.iter().any(|a| set.contains(*a));
    let same_owner =
        !src.is_tagged() && !dst.is_tagged() && src.user.is_some() && src.user == dst.user;
    policy
        .ssh
        .iter()
        .filter(|rule| rule.action == SshAction::Check)
        .find(|rule| {
            within(src, &r.resolve_all(&rule.src))
                && rule.dst.iter().any(|d| {
                    if is_self(d) {
                        same_owner
                    } else {
                        within(dst, &r.resolve(d))
                    }
                })
        })
        .map(SshRule::check_period)
}

fn is_self(alias: &Alias) -> bool {
    *alias == Alias::AutoGroup(AutoGroup::SelfDevices)
}

/// What one policy rule contributes to each node's rules.
fn compile_rule(
    r: &Resolver<'_>,
    rule: &SshRule,
    server_url: &str,
    per_node: &mut [Vec<Arc<SSHRule>>],
) {
    let devices = r.devices();
    let src = r.resolve_all(&rule.src);
    if src.is_empty() {
        return;
    }
    let in_src = |d: &Device| d.addrs.iter().any(|a| src.contains(*a));

    let action = wire_action(rule.action, server_url);
    let base_users = base_ssh_users(&rule.users);
    let localparts = localparts(r, &rule.users);
    let has_localpart = rule
        .users
        .iter()
        .any(|u| matches!(u, SshUser::Localpart(_)));

    // Source nodes: each user's addresses (a set, in address order), and tagged
    // nodes' addresses once per tag they carry.
    let mut addrs_by_user: BTreeMap<UserId, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut tagged: Vec<SSHPrincipal> = Vec::new();
    for d in devices.iter().filter(|d| in_src(d)) {
        if d.is_tagged() {
            for _ in &d.tags {
                tagged.extend(d.addrs.iter().map(principal));
            }
        } else if let Some(u) = d.user {
            addrs_by_user
                .entry(u)
                .or_default()
                .extend(d.addrs.iter().copied());
        }
    }
    let by_user: BTreeMap<UserId, Vec<SSHPrincipal>> = addrs_by_user
        .into_iter()
        .map(|(u, addrs)| (u, addrs.iter().map(principal).collect()))
        .collect();

    // A rule with the base users, then (for a source user with a local part)
    // its companion with the same principals.
    let make = |principals: &[SSHPrincipal], user: Option<UserId>| -> Vec<Arc<SSHRule>> {
        if principals.is_empty() {
            return Vec::new();
        }
        let mut out = vec![Arc::new(SSHRule {
            rule_expires: None,
            principals: principals.to_vec(),
            ssh_users: base_users.clone(),
            action: action.clone(),
            accept_env: rule.accept_env.clone(),
        })];
        if let Some(local) = user.and_then(|u| localparts.get(&u)) {
            out.push(Arc::new(SSHRule {
                rule_expires: None,
                principals: principals.to_vec(),
                ssh_users: BTreeMap::from([(local.clone(), local.clone())]),
                action: action.clone(),
                accept_env: rule.accept_env.clone(),
            }));
        }
        out
    };
    // Built once per group of principals, then shared by every node.
    let for_user: HashMap<UserId, Vec<Arc<SSHRule>>> = by_user
        .iter()
        .map(|(u, principals)| (*u, make(principals, Some(*u))))
        .collect();
    let own_user = |out: &mut Vec<Arc<SSHRule>>, u: UserId| {
        if let Some(rules) = for_user.get(&u) {
            out.extend(rules.iter().cloned());
        }
    };

    let has_self = rule.dst.iter().any(is_self);
    let others: Vec<&Alias> = rule.dst.iter().filter(|d| !is_self(d)).collect();
    let dst = r.resolve_all(others.iter().copied());
    // Without local parts, a destination gets one rule for every source.
    let merged: Vec<SSHPrincipal> = if has_localpart {
        Vec::new()
    } else {
        by_user.values().flatten().chain(&tagged).cloned().collect()
    };
    let (merged, tagged) = (make(&merged, None), make(&tagged, None));
    for (i, d) in devices.iter().enumerate() {
        let out = &mut per_node[i];
        let owner = d.user.filter(|_| !d.is_tagged());
        if has_self && let Some(u) = owner {
            own_user(out, u);
        }
        if others.is_empty() {
            continue;
        }
        if d.addrs.iter().any(|a| dst.contains(*a)) {
            if has_localpart {
                for u in by_user.keys() {
                    own_user(out, *u);
                }
                out.extend(tagged.iter().cloned());
            } else {
                out.extend(merged.iter().cloned());
            }
        } else if has_localpart && in_src(d) {
            // Tailscale lets every source node of a localpart rule in from its
            // own user's nodes (or from itself, for a tagged node).
            match owner {
                Some(u) => own_user(out, u),
                None if d.is_tagged() => {
                    let own: Vec<SSHPrincipal> = d.addrs.iter().map(principal).collect();
                    out.extend(make(&own, None));
                }
                None => {}
            }
        }
    }
}

fn principal(addr: &IpAddr) -> SSHPrincipal {
    SSHPrincipal {
        node_ip: addr.to_string(),
        ..SSHPrincipal::default()
    }
}

/// `accept` (with every forwarding allowed), or `check`: hold the connection and
/// ask the control server for a verdict.
fn wire_action(action: SshAction, server_url: &str) -> SSHAction {
    match action {
        SshAction::Accept => SSHAction {
            accept: true,
            allow_agent_forwarding: true,
            allow_local_port_forwarding: true,
            allow_remote_port_forwarding: true,
            ..SSHAction::default()
        },
        SshAction::Check => SSHAction {
            hold_and_delegate: format!(
                "{server_url}/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER"
            ),
            ..SSHAction::default()
        },
    }
}

/// The `sshUsers` of a rule: `root` is always present (empty when not allowed),
/// `autogroup:nonroot` is `"*": "="`, other names map to themselves; local parts
/// are left to the companion rules.
fn base_ssh_users(users: &[SshUser]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::from([("root".to_owned(), String::new())]);
    for u in users {
        match u {
            SshUser::NonRoot => {
                map.insert("*".into(), "=".into());
            }
            SshUser::Name(name) => {
                map.insert(name.clone(), name.clone());
            }
            SshUser::Localpart(_) => {}
        }
    }
    map
}

/// For `localpart:*@domain` entries: the local part of each user whose email is
/// at one of the domains (compared without case); a later entry wins.
fn localparts(r: &Resolver<'_>, users: &[SshUser]) -> HashMap<UserId, String> {
    let mut out = HashMap::new();
    for u in users {
        let SshUser::Localpart(domain) = u else {
            continue;
        };
        for user in r.tailnet.users {
            if let Some((local, at)) = user.email.rsplit_once('@')
                && at.eq_ignore_ascii_case(domain)
            {
                out.insert(user.id, local.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{device, user};
    use crate::types::User;

    const BASE: &str = "https://hs.example";

    /// odin (1, example.com) owns node 1, thor (2, example.org) node 2, freya
    /// (3, example.com) node 3; node 4 is tag:server, node 5 tag:exit+tag:router.
    fn tailnet() -> (Vec<User>, Vec<Device>) {
        (
            vec![
                user(1, "odin", "odin@example.com"),
                user(2, "thor", "thor@example.org"),
                user(3, "freya", "freya@example.com"),
            ],
            vec![
                device(1, Some(1), &[]),
                device(2, Some(2), &[]),
                device(3, Some(3), &[]),
                device(4, None, &["tag:server"]),
                device(5, None, &["tag:exit", "tag:router"]),
            ],
        )
    }

    const TAGS: &str = r#""tagOwners": {"tag:server": ["odin@example.com"], "tag:exit": ["odin@example.com"], "tag:router": ["odin@example.com"]}"#;

    fn compiled(ssh: &str) -> Vec<Option<Arc<SSHPolicy>>> {
        let policy = Policy::parse(&format!(r#"{{{TAGS}, "ssh": {ssh}}}"#)).unwrap();
        let (users, devices) = tailnet();
        let r = Resolver::new(
            &policy,
            Tailnet {
                users: &users,
                devices: &devices,
            },
        );
        compile(&r, BASE)
    }

    fn ips(rule: &SSHRule) -> Vec<&str> {
        rule.principals.iter().map(|p| p.node_ip.as_str()).collect()
    }

    fn users(rule: &SSHRule) -> Vec<(&str, &str)> {
        rule.ssh_users
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn no_ssh_section_gives_no_policy_and_an_empty_one_empty_policies() {
        let policy = Policy::parse(&format!("{{{TAGS}}}")).unwrap();
        let (users, devices) = tailnet();
        let r = Resolver::new(
            &policy,
            Tailnet {
                users: &users,
                devices: &devices,
            },
        );
        assert!(compile(&r, BASE).iter().all(Option::is_none));
        assert!(
            compiled("[]")
                .iter()
                .all(|p| p.as_ref().is_some_and(|p| p.rules.is_empty()))
        );
    }

    #[test]
    fn users_to_a_tag_are_grouped_by_user_in_one_rule() {
        let out = compiled(
            r#"[{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["root", "ubuntu"]}]"#,
        );
        let rules = &out[3].as_ref().unwrap().rules;
        assert_eq!(rules.len(), 1);
        assert_eq!(
            ips(&rules[0]),
            [
                "100.64.0.1",
                "fd7a:115c:a1e0::1",
                "100.64.0.2",
                "fd7a:115c:a1e0::2",
                "100.64.0.3",
                "fd7a:115c:a1e0::3"
            ]
        );
        assert_eq!(users(&rules[0]), [("root", "root"), ("ubuntu", "ubuntu")]);
        let action = &rules[0].action;
        assert!(action.accept && action.allow_agent_forwarding);
        assert!(action.allow_local_port_forwarding && action.allow_remote_port_forwarding);
        assert!(action.hold_and_delegate.is_empty());
        // Only the destination gets rules.
        for i in [0, 1, 2, 4] {
            assert!(out[i].as_ref().unwrap().rules.is_empty(), "node {i}");
        }
    }

    #[test]
    fn tagged_sources_repeat_once_per_tag() {
        let out = compiled(
            r#"[{"action": "accept", "src": ["autogroup:tagged"], "dst": ["tag:server"], "users": ["autogroup:nonroot"]}]"#,
        );
        let rules = &out[3].as_ref().unwrap().rules;
        assert_eq!(
            ips(&rules[0]),
            [
                "100.64.0.4",
                "fd7a:115c:a1e0::4",
                "100.64.0.5",
                "fd7a:115c:a1e0::5",
                "100.64.0.5",
                "fd7a:115c:a1e0::5"
            ]
        );
        assert_eq!(users(&rules[0]), [("*", "="), ("root", "")]);
    }

    #[test]
    fn autogroup_self_lets_each_user_in_from_their_own_nodes() {
        let out = compiled(
            r#"[{"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["root"]}]"#,
        );
        for (i, policy) in out.iter().take(3).enumerate() {
            let rules = &policy.as_ref().unwrap().rules;
            assert_eq!(rules.len(), 1);
            let id = i + 1;
            assert_eq!(
                ips(&rules[0]),
                [format!("100.64.0.{id}"), format!("fd7a:115c:a1e0::{id}")]
            );
            assert_eq!(
                rules[0].action,
                SSHAction {
                    hold_and_delegate: format!(
                        "{BASE}/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER"
                    ),
                    ..SSHAction::default()
                }
            );
        }
        assert!(out[3].as_ref().unwrap().rules.is_empty());
    }

    #[test]
    fn localparts_add_companion_rules_and_self_access() {
        let out = compiled(
            r#"[{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["localpart:*@EXAMPLE.com"], "acceptEnv": ["TERM"]}]"#,
        );
        let rules = &out[3].as_ref().unwrap().rules;
        type Shape<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);
        let shape: Vec<Shape<'_>> = rules.iter().map(|r| (ips(r), users(r))).collect();
        assert_eq!(
            shape,
            [
                (vec!["100.64.0.1", "fd7a:115c:a1e0::1"], vec![("root", "")]),
                (
                    vec!["100.64.0.1", "fd7a:115c:a1e0::1"],
                    vec![("odin", "odin")]
                ),
                (vec!["100.64.0.2", "fd7a:115c:a1e0::2"], vec![("root", "")]),
                (vec!["100.64.0.3", "fd7a:115c:a1e0::3"], vec![("root", "")]),
                (
                    vec!["100.64.0.3", "fd7a:115c:a1e0::3"],
                    vec![("freya", "freya")]
                ),
            ]
        );
        assert!(rules.iter().all(|r| r.accept_env == ["TERM"]));
        // Every source node gets its own user's pair; thor has no local part.
        let odin = &out[0].as_ref().unwrap().rules;
        assert_eq!(odin.len(), 2);
        assert_eq!(users(&odin[1]), [("odin", "odin")]);
        assert_eq!(out[1].as_ref().unwrap().rules.len(), 1);
        assert!(out[4].as_ref().unwrap().rules.is_empty());
    }

    #[test]
    fn check_rules_come_first_and_empty_sources_give_nothing() {
        let out = compiled(
            r#"[
                {"action": "accept", "src": ["thor@example.org"], "dst": ["tag:server"], "users": ["root"]},
                {"action": "check", "src": ["freya@example.com"], "dst": ["tag:server"], "users": ["root"]},
                {"action": "accept", "src": ["nobody@example.com"], "dst": ["tag:server"], "users": ["root"]}
            ]"#,
        );
        let rules = &out[3].as_ref().unwrap().rules;
        assert_eq!(rules.len(), 2);
        assert_eq!(ips(&rules[0]), ["100.64.0.3", "fd7a:115c:a1e0::3"]);
        assert!(!rules[0].action.hold_and_delegate.is_empty());
        assert_eq!(ips(&rules[1]), ["100.64.0.2", "fd7a:115c:a1e0::2"]);
        assert!(rules[1].action.accept);
    }

    #[test]
    fn a_domain_source_names_every_user_at_that_domain() {
        let out = compiled(
            r#"[{"action": "accept", "src": ["user:*@example.com"], "dst": ["tag:server"], "users": ["root"]}]"#,
        );
        let rules = &out[3].as_ref().unwrap().rules;
        assert_eq!(
            ips(&rules[0]),
            [
                "100.64.0.1",
                "fd7a:115c:a1e0::1",
                "100.64.0.3",
                "fd7a:115c:a1e0::3"
            ]
        );
    }

    #[test]
    fn the_check_period_comes_from_the_first_matching_check_rule() {
        let policy = Policy::parse(&format!(
            r#"{{{TAGS}, "ssh": [
                {{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["root"]}},
                {{"action": "check", "src": ["thor@example.org"], "dst": ["tag:server"], "users": ["root"], "checkPeriod": "1h"}},
                {{"action": "check", "src": ["autogroup:member"], "dst": ["tag:server", "autogroup:self"], "users": ["root"], "checkPeriod": "always"}},
                {{"action": "check", "src": ["autogroup:member"], "dst": ["tag:router"], "users": ["root"]}}
            ]}}"#
        ))
        .unwrap();
        let (users, devices) = tailnet();
        let tailnet = Tailnet {
            users: &users,
            devices: &devices,
        };
        let period = |src, dst| check_period_for(&policy, tailnet, NodeId(src), NodeId(dst));
        assert_eq!(period(2, 4), Some(Duration::from_secs(3600)));
        assert_eq!(period(1, 4), Some(Duration::ZERO));
        // autogroup:self: same owner only.
        assert_eq!(period(1, 1), Some(Duration::ZERO));
        assert_eq!(period(1, 2), None);
        assert_eq!(period(3, 5), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(period(4, 1), None);
        assert_eq!(period(9, 4), None);
    }
}
