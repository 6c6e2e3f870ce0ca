//! Aliases → address sets for one tailnet: which users a reference names, which
//! nodes a group, tag or autogroup selects, and the fixed sets (`*`, the
//! internet). `autogroup:self` depends on the node looking, so it resolves to
//! nothing here and is expanded by its callers.

use super::ipset::{IpSet, IpSetBuilder};
use super::parse::{Alias, AutoGroup, Owner, Policy, UserRef};
use super::{Device, Tailnet};
use crate::types::{User, UserId};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::LazyLock;

/// Tailscale's address ranges: CGNAT for IPv4, a ULA /48 for IPv6.
pub(super) const CGNAT: &str = "100.64.0.0/10";
pub(super) const TAILSCALE_ULA: &str = "fd7a:115c:a1e0::/48";
/// Inside CGNAT but never a node address (ChromeOS VMs, Quad100 services).
const CHROMEOS_VM_RANGE: &str = "100.115.92.0/23";

/// What `*` means as an address set: every Tailscale address.
pub(super) static WILDCARD: LazyLock<IpSet> = LazyLock::new(|| {
    let mut b = IpSetBuilder::default();
    b.add_prefix(CGNAT.parse().expect("constant"));
    b.add_prefix(TAILSCALE_ULA.parse().expect("constant"));
    b.build().difference(&IpSet::from_prefix(
        CHROMEOS_VM_RANGE.parse().expect("constant"),
    ))
});

/// `autogroup:internet`: public unicast space, without private, link-local and
/// Tailscale ranges.
pub(super) static INTERNET: LazyLock<IpSet> = LazyLock::new(|| {
    let mut all = IpSetBuilder::default();
    all.add_prefix("0.0.0.0/0".parse().expect("constant"));
    all.add_prefix("2000::/3".parse().expect("constant"));
    let mut private = IpSetBuilder::default();
    for p in [
        "fc00::/7",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        TAILSCALE_ULA,
        CGNAT,
        "fe80::/10",
        "169.254.0.0/16",
    ] {
        private.add_prefix(p.parse().expect("constant"));
    }
    all.build().difference(&private.build())
});

/// Resolves aliases against one policy and one tailnet.
pub(super) struct Resolver<'a> {
    pub policy: &'a Policy,
    pub tailnet: Tailnet<'a>,
    /// Untagged devices by owner, in `tailnet.devices` order.
    by_user: HashMap<UserId, Vec<usize>>,
    /// Every device address with its device index, sorted by address.
    addr_index: Vec<(IpAddr, usize)>,
}

impl<'a> Resolver<'a> {
    pub fn new(policy: &'a Policy, tailnet: Tailnet<'a>) -> Self {
        let mut by_user: HashMap<UserId, Vec<usize>> = HashMap::new();
        let mut addr_index = Vec::with_capacity(tailnet.devices.len() * 2);
        for (i, d) in tailnet.devices.iter().enumerate() {
            if !d.is_tagged()
                && let Some(u) = d.user
            {
                by_user.entry(u).or_default().push(i);
            }
            for a in &d.addrs {
                addr_index.push((*a, i));
            }
        }
        addr_index.sort_unstable();
        Resolver {
            policy,
            tailnet,
            by_user,
            addr_index,
        }
    }

    pub fn devices(&self) -> &'a [Device] {
        self.tailnet.devices
    }

    /// The user a reference names: an identity-provider id first, then an email
    /// or a name. A reference matching several users names none.
    pub fn user(&self, r: &UserRef) -> Option<&'a User> {
        let token = r.token();
        if let Some(u) = self
            .tailnet
            .users
            .iter()
            .find(|u| !u.provider_id.is_empty() && u.provider_id == token)
        {
            return Some(u);
        }
        let mut matches = self
            .tailnet
            .users
            .iter()
            .filter(|u| u.email == token || u.name.as_str() == token);
        let first = matches.next()?;
        matches.next().is_none().then_some(first)
    }

    /// The users a `user:*@domain` alias names.
    pub fn users_at(&self, domain: &str) -> impl Iterator<Item = &'a User> + '_ {
        let suffix = format!("@{domain}");
        self.tailnet
            .users
            .iter()
            .filter(move |u| u.email.ends_with(&suffix) && u.email.len() > suffix.len())
    }

    /// Indices of the untagged devices of `user`.
    pub fn devices_of(&self, user: UserId) -> &[usize] {
        self.by_user.get(&user).map_or(&[], Vec::as_slice)
    }

    /// Every user that owns untagged devices, with their device indices.
    pub fn users_with_devices(&self) -> impl Iterator<Item = (UserId, &[usize])> + '_ {
        self.by_user.iter().map(|(u, d)| (*u, d.as_slice()))
    }

    /// The users a group names (existing ones only), and the users an identity
    /// provider puts in a group of the same name: `group:engineering` includes
    /// whoever's `groups` claim says `engineering` (or Keycloak's `/engineering`).
    /// Only groups the policy defines have members.
    pub fn group_users(&self, group: &str) -> Vec<&'a User> {
        let Some(listed) = self.policy.groups.get(group) else {
            return Vec::new();
        };
        let mut users: Vec<&'a User> = listed.iter().filter_map(|r| self.user(r)).collect();
        let name = group.strip_prefix("group:").unwrap_or(group);
        for user in self.tailnet.users {
            // Checked against the members found so far, not by resolving the
            // listed references again for every user.
            if user
                .groups
                .iter()
                .any(|g| g.strip_prefix('/').unwrap_or(g) == name)
                && !users.iter().any(|m| m.id == user.id)
            {
                users.push(user);
            }
        }
        users
    }

    /// The devices whose own addresses are in `set`, each once, in index order.
    pub fn devices_in(&self, set: &IpSet) -> Vec<usize> {
        let mut out: Vec<usize> = set.select(&self.addr_index).copied().collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The addresses of the devices at `indices`.
    pub fn addrs_of(&self, indices: &[usize]) -> IpSet {
        let devices = self.tailnet.devices;
        IpSet::from_addrs(
            indices
                .iter()
                .flat_map(|i| devices[*i].addrs.iter().copied()),
        )
    }

    /// The address set of one alias. `*` is [`WILDCARD`] (the caller adds approved
    /// subnets where a source needs them); `autogroup:self` is empty.
    pub fn resolve(&self, alias: &Alias) -> IpSet {
        let devices = self.tailnet.devices;
        match alias {
            Alias::Wildcard => WILDCARD.clone(),
            Alias::User(r) => match self.user(r) {
                Some(u) => self.addrs_of(self.devices_of(u.id)),
                None => IpSet::new(),
            },
            Alias::Domain(domain) => {
                let idx: Vec<usize> = self
                    .users_at(domain)
                    .flat_map(|u| self.devices_of(u.id).iter().copied())
                    .collect();
                self.addrs_of(&idx)
            }
            Alias::Group(g) => {
                let idx: Vec<usize> = self
                    .group_users(g)
                    .iter()
                    .flat_map(|u| self.devices_of(u.id).iter().copied())
                    .collect();
                self.addrs_of(&idx)
            }
            Alias::Tag(t) => {
                let idx: Vec<usize> = (0..devices.len())
                    .filter(|i| devices[*i].has_tag(t))
                    .collect();
                self.addrs_of(&idx)
            }
            Alias::Host(h) => self
                .policy
                .hosts
                .get(h)
                .map(|p| IpSet::from_prefix(*p))
                .unwrap_or_default(),
            Alias::Prefix(p) => IpSet::from_prefix(*p),
            Alias::AutoGroup(ag) => match ag {
                AutoGroup::Internet => INTERNET.clone(),
                AutoGroup::Member => {
                    let idx: Vec<usize> = (0..devices.len())
                        .filter(|i| !devices[*i].is_tagged())
                        .collect();
                    self.addrs_of(&idx)
                }
                AutoGroup::Tagged => {
                    let idx: Vec<usize> = (0..devices.len())
                        .filter(|i| devices[*i].is_tagged())
                        .collect();
                    self.addrs_of(&idx)
                }
                AutoGroup::DangerAll => IpSet::all(),
                AutoGroup::SelfDevices | AutoGroup::NonRoot | AutoGroup::Other(_) => IpSet::new(),
            },
        }
    }

    /// The union of several aliases.
    pub fn resolve_all<'b>(&self, aliases: impl IntoIterator<Item = &'b Alias>) -> IpSet {
        let mut b = IpSetBuilder::default();
        for a in aliases {
            b.add_set(&self.resolve(a));
        }
        b.build()
    }

    /// Every approved subnet route of the tailnet: what `*` adds as a source.
    pub fn approved_subnets(&self) -> IpSet {
        let mut b = IpSetBuilder::default();
        for d in self.tailnet.devices {
            for r in &d.subnet_routes {
                b.add_prefix(*r);
            }
        }
        b.build()
    }

    /// Whether `user` is (directly, through a group, or through a tag that owns
    /// the tag, recursively) an owner of `tag`. `user_tags` are the tags of the
    /// node asking, for tags owned by tags.
    pub fn owns_tag(&self, tag: &str, user: Option<&User>, node_tags: &[String]) -> bool {
        self.owns_tag_depth(tag, user, node_tags, 0)
    }

    fn owns_tag_depth(
        &self,
        tag: &str,
        user: Option<&User>,
        node_tags: &[String],
        depth: usize,
    ) -> bool {
        if depth > 16 {
            return false;
        }
        let Some(owners) = self.policy.tag_owners.get(tag) else {
            return false;
        };
        owners.iter().any(|o| match o {
            Owner::User(r) => user.is_some_and(|u| self.user(r).is_some_and(|m| m.id == u.id)),
            Owner::Group(g) => {
                user.is_some_and(|u| self.group_users(g).iter().any(|m| m.id == u.id))
            }
            Owner::Tag(t) => {
                node_tags.iter().any(|nt| nt == t)
                    || self.owns_tag_depth(t, user, node_tags, depth + 1)
            }
        })
    }
}

/// Whether `prefix` lies inside the public internet (`autogroup:internet`).
pub(super) fn is_internet(set: &IpSet) -> bool {
    !set.is_empty() && INTERNET.is_superset_of(set)
}

/// Whether a destination set means "the internet" for exit nodes: a whole
/// address family, or every internet range.
pub(super) fn covers_internet(set: &IpSet) -> bool {
    set.contains_prefix(&IpNet::V4(Default::default()))
        || set.contains_prefix(&"::/0".parse().expect("constant"))
        || set.is_superset_of(&INTERNET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wildcard_leaves_out_the_chromeos_range() {
        assert_eq!(
            WILDCARD.strings(),
            [
                "100.64.0.0-100.115.91.255",
                "100.115.94.0-100.127.255.255",
                "fd7a:115c:a1e0::/48"
            ]
        );
    }

    #[test]
    fn the_internet_excludes_private_ranges() {
        assert!(INTERNET.contains("8.8.8.8".parse().unwrap()));
        assert!(!INTERNET.contains("10.1.2.3".parse().unwrap()));
        assert!(!INTERNET.contains("100.100.100.100".parse().unwrap()));
        assert!(INTERNET.contains("2001:db8::1".parse().unwrap()));
        assert!(!INTERNET.contains("fd7a:115c:a1e0::1".parse().unwrap()));
        assert!(covers_internet(&IpSet::all()));
    }
}
