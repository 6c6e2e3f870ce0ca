//! The policy language's syntax tree and its parser: HuJSON text → [`Policy`],
//! with every alias, port list and protocol parsed once, and every rule that
//! needs no knowledge of users or nodes checked here.
//!
//! Two phases, as Headscale and Tailscale have them: decoding stops at the first
//! malformed value; validation then collects every problem (several are reported
//! as `multiple errors:` with one line each). Messages use Tailscale's wording
//! where it has one (`src=tag not found: "tag:x"`, `port range "ssh": invalid
//! first integer`), so an admin searching for an error finds the same answers.

use super::hujson;
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

/// Why a policy was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The text is not HuJSON.
    #[error("parsing policy: {0}")]
    Syntax(hujson::SyntaxError),
    /// The text is HuJSON but not a valid policy.
    #[error("{0}")]
    Invalid(String),
    /// The policy's own `tests` or `sshTests` failed; one line per failure.
    #[error("test(s) failed:\n{}", .0.join("\n"))]
    TestsFailed(Vec<String>),
}

impl Error {
    pub(super) fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid(message.into())
    }

    /// One error for several messages: the message itself, or `multiple errors:`
    /// and one tab-indented line each.
    fn from_many(mut messages: Vec<String>) -> Option<Error> {
        match messages.len() {
            0 => None,
            1 => Some(Error::Invalid(messages.remove(0))),
            _ => Some(Error::Invalid(format!(
                "multiple errors:\n\t{}",
                messages.join("\n\t")
            ))),
        }
    }
}

type Result<T> = std::result::Result<T, Error>;

/// A parsed policy. Built only by [`Policy::parse`], so every value in it is valid
/// on its own, and every group, tag and host it names is defined.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    pub groups: BTreeMap<String, Vec<UserRef>>,
    pub hosts: BTreeMap<String, IpNet>,
    /// Tag → who may apply it (users, groups, other tags).
    pub tag_owners: BTreeMap<String, Vec<Owner>>,
    pub acls: Vec<Acl>,
    pub grants: Vec<Grant>,
    pub auto_approvers: AutoApprovers,
    pub node_attrs: Vec<NodeAttr>,
    pub ssh: Vec<SshRule>,
    /// Whether an `ssh` section is present at all (an empty one still gives
    /// every node an empty SSH policy).
    pub has_ssh: bool,
    pub tests: Vec<AclTest>,
    pub ssh_tests: Vec<SshTest>,
    pub randomize_client_port: bool,
    /// Neither `acls` nor `grants` is present: Tailscale then allows all traffic
    /// between Tailscale addresses (an empty list of either allows none).
    pub default_allow: bool,
}

/// A reference to one user: `alice@` (a name) or `alice@example.com` (an email,
/// or a name that contains `@`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserRef(pub String);

impl UserRef {
    /// The token to compare with user names, emails and identity-provider ids:
    /// the reference without a trailing `@`.
    pub fn token(&self) -> &str {
        self.0.strip_suffix('@').unwrap_or(&self.0)
    }
}

/// A selector of addresses, as written in `src`, `dst`, `target` and the like.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Alias {
    /// `*`: every Tailscale address (and approved subnets, as a source).
    Wildcard,
    User(UserRef),
    /// `user:*@domain`: every user whose email is at `domain`.
    Domain(String),
    Group(String),
    Tag(String),
    /// A name from `hosts`.
    Host(String),
    /// An address (as a single-address prefix) or a CIDR.
    Prefix(IpNet),
    AutoGroup(AutoGroup),
}

impl std::fmt::Display for Alias {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Alias::Wildcard => f.write_str("*"),
            Alias::User(u) => f.write_str(&u.0),
            Alias::Domain(d) => write!(f, "user:*@{d}"),
            Alias::Group(g) | Alias::Tag(g) | Alias::Host(g) => f.write_str(g),
            Alias::Prefix(p) => {
                if p.prefix_len() == p.max_prefix_len() {
                    write!(f, "{}", p.addr())
                } else {
                    write!(f, "{p}")
                }
            }
            Alias::AutoGroup(a) => f.write_str(&a.name()),
        }
    }
}

/// The `autogroup:` selectors.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AutoGroup {
    /// Destinations outside the tailnet, through exit nodes.
    Internet,
    /// Every node owned by a user (not tagged).
    Member,
    /// Every tagged node.
    Tagged,
    /// The nodes of the same user as the source.
    SelfDevices,
    /// Every address, including ones outside the tailnet (sources only).
    DangerAll,
    /// In SSH `users`: any local user but root.
    NonRoot,
    /// A name headway does not know (`autogroup:admin`, typos); refused wherever
    /// it is used, with the list of what that place accepts.
    Other(String),
}

impl AutoGroup {
    pub fn name(&self) -> String {
        match self {
            AutoGroup::Internet => "autogroup:internet".into(),
            AutoGroup::Member => "autogroup:member".into(),
            AutoGroup::Tagged => "autogroup:tagged".into(),
            AutoGroup::SelfDevices => "autogroup:self".into(),
            AutoGroup::DangerAll => "autogroup:danger-all".into(),
            AutoGroup::NonRoot => "autogroup:nonroot".into(),
            AutoGroup::Other(name) => name.clone(),
        }
    }

    fn parse(text: &str) -> AutoGroup {
        match text {
            "autogroup:internet" => AutoGroup::Internet,
            "autogroup:member" => AutoGroup::Member,
            "autogroup:tagged" => AutoGroup::Tagged,
            "autogroup:self" => AutoGroup::SelfDevices,
            "autogroup:danger-all" => AutoGroup::DangerAll,
            "autogroup:nonroot" => AutoGroup::NonRoot,
            other => AutoGroup::Other(other.to_owned()),
        }
    }
}

/// Who may apply a tag, or approve a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    User(UserRef),
    Group(String),
    Tag(String),
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ports {
    pub first: u16,
    pub last: u16,
}

impl Ports {
    pub const ANY: Ports = Ports {
        first: 0,
        last: 65535,
    };
}

/// A destination of an `acls` rule or a test: an alias and its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasPorts {
    pub alias: Alias,
    pub ports: Vec<Ports>,
    /// As written, for messages.
    pub text: String,
}

/// An IP protocol selector: `None` means Tailscale's default set (TCP, UDP,
/// ICMPv4, ICMPv6); otherwise the protocol number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Protocol(pub Option<u8>);

impl Protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;

    /// Whether the protocol has ports (only then may an ACL name ports).
    pub fn has_ports(self) -> bool {
        matches!(
            self.0,
            None | Some(Self::TCP) | Some(Self::UDP) | Some(Self::SCTP)
        )
    }

    /// The wire `IPProto` list (empty for the default set).
    pub fn numbers(self) -> Vec<i32> {
        self.0.map(|n| vec![i32::from(n)]).unwrap_or_default()
    }

    /// The protocols a packet of this selector may have.
    pub fn matches(self, number: u8) -> bool {
        match self.0 {
            None => matches!(number, Self::TCP | Self::UDP | Self::ICMP | Self::ICMPV6),
            Some(n) => n == number,
        }
    }

    fn name_to_number(name: &str) -> Option<u8> {
        Some(match name {
            "icmp" => 1,
            "igmp" => 2,
            "ipv4" | "ip-in-ip" => 4,
            "tcp" => 6,
            "egp" => 8,
            "igp" => 9,
            "udp" => 17,
            "gre" => 47,
            "esp" => 50,
            "ah" => 51,
            "ipv6-icmp" => 58,
            "sctp" => 132,
            "fc" => 133,
            _ => return None,
        })
    }

    /// A protocol as written in `proto` (case-insensitive) or, with `exact`, in a
    /// grant's `ip` (where only lower-case names are known).
    fn parse(text: &str, exact: bool) -> Result<Protocol> {
        let lower = text.to_ascii_lowercase();
        let t = if exact { text } else { lower.as_str() };
        if t.is_empty() {
            return Ok(Protocol(None));
        }
        if let Some(n) = Self::name_to_number(t) {
            return Ok(Protocol(Some(n)));
        }
        if t == "*" {
            return Err(Error::invalid(
                "proto name \"*\" not known; use protocol number 0-255 or protocol name (icmp, tcp, udp, etc.)",
            ));
        }
        if t.starts_with('0') {
            return Err(Error::invalid(format!(
                "leading 0 not permitted in protocol number: {t:?}"
            )));
        }
        let digits = t.strip_prefix('+').unwrap_or(t);
        match digits.parse::<i64>() {
            Ok(n) if (0..=255).contains(&n) => Ok(Protocol(Some(n as u8))),
            Ok(n) => Err(Error::invalid(format!(
                "protocol number out of range (0-255): {n}"
            ))),
            Err(_) => Err(Error::invalid(format!(
                "invalid protocol number: {t:?} must be a known protocol name or valid protocol number 0-255"
            ))),
        }
    }

    fn name(self) -> String {
        match self.0 {
            None => String::new(),
            Some(1) => "icmp".into(),
            Some(6) => "tcp".into(),
            Some(17) => "udp".into(),
            Some(132) => "sctp".into(),
            Some(n) => n.to_string(),
        }
    }
}

/// One `acls` entry (`action` is always `accept`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    pub protocol: Protocol,
    pub src: Vec<Alias>,
    pub dst: Vec<AliasPorts>,
}

/// One `ip` entry of a grant: a protocol and its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtoPorts {
    pub protocol: Protocol,
    pub ports: Vec<Ports>,
}

/// One `grants` entry; ACLs become grants too ([`Acl::to_grants`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub src: Vec<Alias>,
    pub dst: Vec<Alias>,
    pub ip: Vec<ProtoPorts>,
    /// Peer capabilities: name → JSON values.
    pub app: BTreeMap<String, Vec<Value>>,
    /// Tags of the routers traffic must go through.
    pub via: Vec<String>,
}

impl Acl {
    /// The equivalent grants: one per destination, in Tailscale's order (when
    /// any destination is not an autogroup, `autogroup:self` ones come last).
    pub fn to_grants(&self) -> Vec<Grant> {
        let is_self = |d: &&AliasPorts| d.alias == Alias::AutoGroup(AutoGroup::SelfDevices);
        let all_autogroups = self
            .dst
            .iter()
            .all(|d| matches!(d.alias, Alias::AutoGroup(_)));
        let ordered: Vec<&AliasPorts> = if all_autogroups {
            self.dst.iter().collect()
        } else {
            self.dst
                .iter()
                .filter(|d| !is_self(d))
                .chain(self.dst.iter().filter(is_self))
                .collect()
        };
        ordered
            .into_iter()
            .map(|d| Grant {
                src: self.src.clone(),
                dst: vec![d.alias.clone()],
                ip: vec![ProtoPorts {
                    protocol: self.protocol,
                    ports: d.ports.clone(),
                }],
                app: BTreeMap::new(),
                via: Vec::new(),
            })
            .collect()
    }
}

/// `autoApprovers`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoApprovers {
    /// Prefix → who may have it (or any prefix inside it) approved automatically.
    pub routes: Vec<(IpNet, Vec<Owner>)>,
    pub exit_node: Vec<Owner>,
}

/// One `nodeAttrs` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAttr {
    pub target: Vec<Alias>,
    pub attr: Vec<String>,
    /// Where addresses of the targeted nodes come from (`ipPool`).
    pub ip_pool: Vec<IpNet>,
}

/// `accept` or `check` (re-authenticate before the session starts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SshAction {
    Accept,
    Check,
}

/// A local user an SSH rule allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SshUser {
    /// A literal local user name, `root` included.
    Name(String),
    /// `autogroup:nonroot`: any local user but root.
    NonRoot,
    /// `localpart:*@domain`: the local part of the connecting user's email,
    /// for users whose email is at `domain`.
    Localpart(String),
}

/// How long a `check` approval lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckPeriod {
    /// Ask every time.
    Always,
    For(Duration),
}

/// One `ssh` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshRule {
    pub action: SshAction,
    pub src: Vec<Alias>,
    pub dst: Vec<Alias>,
    pub users: Vec<SshUser>,
    pub check_period: Option<CheckPeriod>,
    pub accept_env: Vec<String>,
}

impl SshRule {
    /// How long an approval of this `check` rule is remembered (12 hours unless
    /// the rule says otherwise; zero for `always`).
    pub fn check_period(&self) -> Duration {
        match self.check_period {
            None => Duration::from_secs(12 * 3600),
            Some(CheckPeriod::Always) => Duration::ZERO,
            Some(CheckPeriod::For(d)) => d,
        }
    }
}

/// One `tests` entry: from `src`, each of `accept` must be reachable and each of
/// `deny` must not be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclTest {
    /// As written; resolved when the tests run (a bad source fails the test).
    pub src: String,
    pub protocol: Protocol,
    pub accept: Vec<AliasPorts>,
    pub deny: Vec<AliasPorts>,
}

impl AclTest {
    pub fn protocol_name(&self) -> String {
        self.protocol.name()
    }
}

/// One `sshTests` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTest {
    pub src: Alias,
    pub src_text: String,
    pub dst: Vec<Alias>,
    pub accept: Vec<String>,
    pub check: Vec<String>,
    pub deny: Vec<String>,
}

/// Looks up an object's fields the way Tailscale and Headscale read policies:
/// names match regardless of case, `_` and `-`; unknown names are refused.
struct Fields<'a> {
    found: HashMap<&'static str, &'a Value>,
}

impl<'a> Fields<'a> {
    fn of(value: &'a Value, known: &[&'static str], comments: bool) -> Result<Fields<'a>> {
        let mut found = HashMap::new();
        let map = match value {
            Value::Null => return Ok(Fields { found }),
            Value::Object(map) => map,
            other => {
                return Err(Error::invalid(format!(
                    "expected an object, got {}",
                    kind(other)
                )));
            }
        };
        for (key, v) in map {
            if comments && key.starts_with('#') {
                continue;
            }
            let norm = normalise_field(key);
            let Some(name) = known.iter().find(|k| normalise_field(k) == norm) else {
                return Err(Error::invalid(format!("unknown field: {key:?}")));
            };
            if found.insert(*name, v).is_some() {
                return Err(Error::invalid(format!(
                    "duplicate object member name {key:?}"
                )));
            }
        }
        Ok(Fields { found })
    }

    /// The field's value; `null` counts as absent.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.found.get(name).copied().filter(|v| !v.is_null())
    }
}

fn normalise_field(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn list<'a>(value: Option<&'a Value>, at: &str) -> Result<&'a [Value]> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(Error::invalid(format!(
            "{at}: expected a list, got {}",
            kind(other)
        ))),
    }
}

fn strings(value: Option<&Value>, at: &str) -> Result<Vec<String>> {
    list(value, at)?
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(Error::invalid(format!(
                "{at}: expected strings, got {}",
                kind(other)
            ))),
        })
        .collect()
}

/// Where in the policy an alias sits: what it may be, and how errors start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    AclSrc,
    AclDst,
    GrantSrc,
    GrantDst,
    SshSrc,
    SshDst,
    Target,
}

impl Policy {
    /// Parses and checks a policy. An empty text is an empty policy (which, with
    /// neither `acls` nor `grants`, allows all traffic).
    pub fn parse(text: &str) -> Result<Policy> {
        if text.is_empty() {
            return Ok(Policy {
                default_allow: true,
                ..Policy::default()
            });
        }
        let value = hujson::parse(text).map_err(Error::Syntax)?;
        if value.is_null() {
            return Ok(Policy {
                default_allow: true,
                ..Policy::default()
            });
        }
        if !value.is_object() {
            return Err(Error::invalid(format!(
                "a policy is a JSON object, not {}",
                kind(&value)
            )));
        }
        const TOP: &[&str] = &[
            "groups",
            "hosts",
            "tagOwners",
            "acls",
            "grants",
            "autoApprovers",
            "nodeAttrs",
            "ssh",
            "tests",
            "sshTests",
            "randomizeClientPort",
        ];
        let top = Fields::of(&value, TOP, false).map_err(|e| explain_unsupported(e, &value))?;
        let mut p = Policy {
            default_allow: top.get("acls").is_none() && top.get("grants").is_none(),
            has_ssh: top.get("ssh").is_some(),
            ..Policy::default()
        };
        if let Some(v) = top.get("groups") {
            p.groups = parse_groups(v)?;
        }
        if let Some(v) = top.get("hosts") {
            p.hosts = parse_hosts(v)?;
        }
        if let Some(v) = top.get("tagOwners") {
            p.tag_owners = parse_tag_owners(v)?;
        }
        for (i, v) in list(top.get("acls"), "acls")?.iter().enumerate() {
            p.acls.push(parse_acl(v, i)?);
        }
        for (i, v) in list(top.get("grants"), "grants")?.iter().enumerate() {
            p.grants.push(parse_grant(v, i)?);
        }
        if let Some(v) = top.get("autoApprovers") {
            p.auto_approvers = parse_auto_approvers(v)?;
        }
        for (i, v) in list(top.get("nodeAttrs"), "nodeAttrs")?.iter().enumerate() {
            p.node_attrs.push(parse_node_attr(v, i)?);
        }
        for (i, v) in list(top.get("ssh"), "ssh")?.iter().enumerate() {
            p.ssh.push(parse_ssh(v, i)?);
        }
        for (i, v) in list(top.get("tests"), "tests")?.iter().enumerate() {
            p.tests.push(parse_acl_test(v, i)?);
        }
        for (i, v) in list(top.get("sshTests"), "sshTests")?.iter().enumerate() {
            p.ssh_tests.push(parse_ssh_test(v, i)?);
        }
        if let Some(v) = top.get("randomizeClientPort") {
            p.randomize_client_port = v.as_bool().ok_or_else(|| {
                Error::invalid(format!(
                    "randomizeClientPort: expected true or false, got {}",
                    kind(v)
                ))
            })?;
        }
        let mut errors = Vec::new();
        p.validate(&mut errors);
        match Error::from_many(errors) {
            Some(e) => Err(e),
            None => Ok(p),
        }
    }

    /// Checks `localpart:*@domain` SSH users and `user:*@domain` aliases
    /// against the domains associated with the tailnet: as in Tailscale, a
    /// domain outside them (compared exactly) is refused. With no domains
    /// known, nothing is checked (as in Headscale).
    pub fn check_domains(&self, domains: &[String]) -> Result<()> {
        if domains.is_empty() {
            return Ok(());
        }
        let mut errors = Vec::new();
        let mut check = |domain: &str| {
            if !domains.iter().any(|d| d == domain) {
                errors.push(format!(
                    "{domain} is not associated with this Tailnet and cannot be used in user:*@<domain> expressions"
                ));
            }
        };
        for rule in &self.ssh {
            for user in &rule.users {
                if let SshUser::Localpart(d) = user {
                    check(d);
                }
            }
        }
        let aliases = self
            .acls
            .iter()
            .flat_map(|a| a.src.iter().chain(a.dst.iter().map(|d| &d.alias)))
            .chain(self.grants.iter().flat_map(|g| g.src.iter().chain(&g.dst)))
            .chain(self.ssh.iter().flat_map(|r| r.src.iter().chain(&r.dst)));
        for alias in aliases {
            if let Alias::Domain(d) = alias {
                check(d);
            }
        }
        match Error::from_many(errors) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every grant of the policy: `grants` first, then the `acls` as grants.
    pub fn all_grants(&self) -> Vec<Grant> {
        if self.default_allow {
            return vec![Grant {
                src: vec![Alias::Wildcard],
                dst: vec![Alias::Wildcard],
                ip: vec![ProtoPorts {
                    protocol: Protocol(None),
                    ports: vec![Ports::ANY],
                }],
                app: BTreeMap::new(),
                via: Vec::new(),
            }];
        }
        let mut out = self.grants.clone();
        for acl in &self.acls {
            out.extend(acl.to_grants());
        }
        out
    }

    /// The checks that span parts of the policy, in Headscale's order.
    fn validate(&self, errors: &mut Vec<String>) {
        for acl in &self.acls {
            for s in &acl.src {
                self.check_alias(s, Place::AclSrc, errors);
            }
            for d in &acl.dst {
                self.check_alias(&d.alias, Place::AclDst, errors);
            }
            if !acl.protocol.has_ports() && acl.dst.iter().any(|d| d.ports != [Ports::ANY]) {
                errors.push(format!(
                    "protocol does not support specific ports: {:?}, only \"*\" is allowed",
                    acl.protocol.name()
                ));
            }
            if acl.dst.iter().any(|d| is_self(&d.alias))
                && !acl.src.iter().all(|s| {
                    matches!(
                        s,
                        Alias::User(_)
                            | Alias::Domain(_)
                            | Alias::Group(_)
                            | Alias::Wildcard
                            | Alias::AutoGroup(AutoGroup::Member)
                    )
                })
            {
                errors.push(SELF_SOURCES.into());
            }
        }
        for rule in &self.ssh {
            self.validate_ssh(rule, errors);
        }
        for grant in &self.grants {
            self.validate_grant(grant, errors);
        }
        for attr in &self.node_attrs {
            for t in &attr.target {
                self.check_alias(t, Place::Target, errors);
            }
            // As in Headscale: Funnel needs Tailscale's own ingress relays, and
            // addresses come from prefixes.v4/v6, not from the policy.
            if attr.attr.iter().any(|a| a == "funnel") {
                errors.push(
                    "nodeAttrs: the \"funnel\" attribute is not supported: headway (like Headscale) cannot serve Tailscale Funnel".into(),
                );
            }
            if !attr.ip_pool.is_empty() {
                errors.push(
                    "nodeAttrs: ipPool is not supported: headway (like Headscale) allocates addresses from prefixes.v4 and prefixes.v6".into(),
                );
                for pool in &attr.ip_pool {
                    check_ip_pool(pool, errors);
                }
            }
        }
        for (tag, owners) in &self.tag_owners {
            for owner in owners {
                self.check_owner(owner, errors);
                if let Owner::Tag(t) = owner
                    && !self.tag_owners.contains_key(t)
                {
                    errors.push(format!("tag {tag:?} references undefined tag {t:?}"));
                }
            }
        }
        for (_, approvers) in &self.auto_approvers.routes {
            for a in approvers {
                self.check_owner(a, errors);
            }
        }
        for a in &self.auto_approvers.exit_node {
            self.check_owner(a, errors);
        }
        for (i, test) in self.tests.iter().enumerate() {
            validate_test(i, test, &self.hosts, errors);
        }
        for (i, test) in self.ssh_tests.iter().enumerate() {
            self.validate_ssh_test(i, test, errors);
        }
    }

    fn check_owner(&self, owner: &Owner, errors: &mut Vec<String>) {
        match owner {
            Owner::Group(g) if !self.groups.contains_key(g) => {
                errors.push(format!("group not defined in policy: {g:?}"));
            }
            Owner::Tag(t) if !self.tag_owners.contains_key(t) => {
                errors.push(format!("tag not found: {t:?}"));
            }
            _ => {}
        }
    }

    fn check_alias(&self, alias: &Alias, place: Place, errors: &mut Vec<String>) {
        match alias {
            Alias::Host(h) => {
                if place == Place::SshDst {
                    errors.push(format!("invalid dst {h:?}"));
                } else if !self.hosts.contains_key(h) {
                    if h.is_empty() || !h.chars().all(is_host_char) {
                        errors.push(format!("{h:?}: invalid address"));
                    } else {
                        errors.push(format!("host not defined in policy: {h:?}"));
                    }
                }
            }
            Alias::Group(g) if !self.groups.contains_key(g) => {
                errors.push(format!("group not defined in policy: {g:?}"));
            }
            Alias::Tag(t) if !self.tag_owners.contains_key(t) => {
                errors.push(match place {
                    Place::AclSrc | Place::GrantSrc => format!("src=tag not found: {t:?}"),
                    Place::AclDst => format!("dst={t:?}: tag not found: {t:?}"),
                    _ => format!("tag not found: {t:?}"),
                });
            }
            Alias::AutoGroup(ag) => {
                if let Some(e) = autogroup_error(ag, place) {
                    errors.push(e);
                }
            }
            _ => {}
        }
    }

    fn validate_grant(&self, grant: &Grant, errors: &mut Vec<String>) {
        if grant.ip.is_empty() && grant.app.is_empty() {
            errors.push("ip and app can not both be empty".into());
        }
        for name in grant.app.keys() {
            if let Some(e) = capability_name_error(name) {
                errors.push(e);
            }
        }
        if !grant.app.is_empty() && grant.dst.contains(&Alias::AutoGroup(AutoGroup::Internet)) {
            errors.push("cannot use app grants with autogroup:internet".into());
        }
        if let Some(Alias::Prefix(p)) = grant
            .dst
            .iter()
            .find(|d| matches!(d, Alias::Prefix(p) if p.prefix_len() == 0))
        {
            errors.push(format!(
                "dst \"{p}\": to allow all IP addresses, use \"*\" or \"autogroup:internet\""
            ));
        }
        for s in &grant.src {
            self.check_alias(s, Place::GrantSrc, errors);
        }
        for d in &grant.dst {
            self.check_alias(d, Place::GrantDst, errors);
        }
        for tag in &grant.via {
            if !self.tag_owners.contains_key(tag) {
                errors.push(format!("tag {tag:?} not found"));
            }
        }
        if grant.dst.iter().any(is_self)
            && !grant.src.iter().all(|s| {
                matches!(
                    s,
                    Alias::User(_)
                        | Alias::Domain(_)
                        | Alias::Group(_)
                        | Alias::AutoGroup(AutoGroup::Member)
                )
            })
        {
            errors.push(SELF_SOURCES.into());
        }
    }

    fn validate_ssh(&self, rule: &SshRule, errors: &mut Vec<String>) {
        for s in &rule.src {
            self.check_alias(s, Place::SshSrc, errors);
        }
        for d in &rule.dst {
            self.check_alias(d, Place::SshDst, errors);
        }
        let tagged = rule
            .src
            .iter()
            .any(|s| matches!(s, Alias::Tag(_) | Alias::AutoGroup(AutoGroup::Tagged)));
        let groupish = rule
            .src
            .iter()
            .any(|s| matches!(s, Alias::Group(_) | Alias::AutoGroup(AutoGroup::Member)));
        let users: Vec<&UserRef> = rule
            .src
            .iter()
            .filter_map(|s| match s {
                Alias::User(u) => Some(u),
                _ => None,
            })
            .collect();
        for d in &rule.dst {
            let message = match d {
                Alias::User(u) if tagged => format!(
                    "tags in SSH source cannot access user-owned devices ({}); use autogroup:tagged or specific tags as destinations instead",
                    u.0
                ),
                Alias::User(u) if groupish || users.len() != 1 || users[0] != u => format!(
                    "user destination requires source to contain only that same user {:?}; use autogroup:self instead for same-user SSH access",
                    u.0
                ),
                Alias::AutoGroup(AutoGroup::SelfDevices) if tagged => {
                    "autogroup:self destination requires source to contain only users or groups, not tags or autogroup:tagged".to_owned()
                }
                Alias::AutoGroup(AutoGroup::Member) if tagged => {
                    "tags in SSH source cannot access autogroup:member (user-owned devices)".to_owned()
                }
                _ => continue,
            };
            errors.push(message);
            break;
        }
    }

    fn validate_ssh_test(&self, i: usize, test: &SshTest, errors: &mut Vec<String>) {
        let mut problems = Vec::new();
        if test.dst.is_empty() {
            problems.push("SSH tests entry must have at least one dst".to_owned());
        }
        for d in &test.dst {
            match d {
                Alias::AutoGroup(AutoGroup::Internet) => problems.push(
                    "SSH tests dst contains disallowed element \"autogroup:internet\"".into(),
                ),
                Alias::Prefix(p) if p.prefix_len() < p.max_prefix_len() => problems.push(format!(
                    "SSH tests dst contains disallowed element \"{}\"",
                    p.trunc()
                )),
                Alias::Host(h)
                    if self
                        .hosts
                        .get(h)
                        .is_some_and(|p| p.prefix_len() < p.max_prefix_len()) =>
                {
                    problems.push(format!("SSH tests dst contains disallowed element {h:?}"));
                }
                Alias::Tag(t) if !self.tag_owners.contains_key(t) => {
                    problems.push(format!("SSH tests dst contains unknown tag {t:?}"));
                }
                _ => {}
            }
        }
        for p in problems {
            errors.push(format!("test(s) failed:\nsshTest {i}: {p}"));
        }
    }
}

const SELF_SOURCES: &str =
    "autogroup:self can only be used with users, groups, or supported autogroups";

fn is_self(a: &Alias) -> bool {
    *a == Alias::AutoGroup(AutoGroup::SelfDevices)
}

/// Where each autogroup may appear, with Headscale's and Tailscale's messages.
fn autogroup_error(ag: &AutoGroup, place: Place) -> Option<String> {
    use AutoGroup::*;
    let name = ag.name();
    let ok = match place {
        Place::AclSrc | Place::GrantSrc => matches!(ag, Member | Tagged | DangerAll),
        Place::AclDst | Place::GrantDst => matches!(ag, Internet | Member | Tagged | SelfDevices),
        Place::SshSrc | Place::Target => matches!(ag, Member | Tagged),
        Place::SshDst => matches!(ag, Member | Tagged | SelfDevices),
    };
    if ok {
        return None;
    }
    let roles = matches!(ag, Other(n) if ROLE_AUTOGROUPS.contains(&n.as_str()));
    Some(match (place, ag) {
        (Place::AclSrc | Place::GrantSrc | Place::SshSrc, SelfDevices) => {
            "\"autogroup:self\" not valid on the src side of a rule".into()
        }
        (_, Internet) => "autogroup:internet can only be used in ACL destinations".into(),
        (Place::AclDst | Place::GrantDst, DangerAll) => {
            "cannot use autogroup:danger-all as a dst".into()
        }
        _ if roles => format!(
            "{name} is not supported: headway (like Headscale) has no user roles or device sharing"
        ),
        (Place::AclSrc | Place::GrantSrc, _) => format!(
            "autogroup not supported for ACL sources: {name:?}, can be [autogroup:member autogroup:tagged autogroup:danger-all]"
        ),
        (Place::AclDst | Place::GrantDst, _) => format!(
            "autogroup not supported for ACL destinations: {name:?}, can be [autogroup:internet autogroup:member autogroup:tagged autogroup:self]"
        ),
        (Place::SshSrc, _) => format!(
            "autogroup not supported for SSH sources: {name:?}, can be [autogroup:member autogroup:tagged]"
        ),
        (Place::SshDst, _) => format!(
            "autogroup not supported for SSH destinations: {name:?}, can be [autogroup:member autogroup:tagged autogroup:self]"
        ),
        (Place::Target, _) => format!(
            "nodeAttrs target does not support this autogroup: {name:?}, can be [autogroup:member autogroup:tagged]"
        ),
    })
}

/// Tailscale's role autogroups, which need user roles headway does not have.
const ROLE_AUTOGROUPS: &[&str] = &[
    "autogroup:admin",
    "autogroup:owner",
    "autogroup:auditor",
    "autogroup:it-admin",
    "autogroup:network-admin",
    "autogroup:billing-admin",
    "autogroup:shared",
];

/// An unsupported top-level key gets a sentence saying it is not supported,
/// rather than only "unknown field".
fn explain_unsupported(e: Error, value: &Value) -> Error {
    const TAILSCALE_ONLY: &[&str] = &[
        "postures",
        "defaultSrcPosture",
        "ipsets",
        "derpMap",
        "disableIPv4",
        "OneCGNATRoute",
        "attrConfig",
    ];
    let Some(map) = value.as_object() else {
        return e;
    };
    match map.keys().find(|k| TAILSCALE_ONLY.contains(&k.as_str())) {
        Some(key) => Error::invalid(format!(
            "unknown field: {key:?} (a Tailscale feature that headway, like Headscale, does not support)"
        )),
        None => e,
    }
}

/// Grants may name capabilities of any domain, and these of `tailscale.com`.
fn capability_name_error(name: &str) -> Option<String> {
    const ALLOWED: &[&str] = &[
        "tailscale.com/cap/drive",
        "tailscale.com/cap/relay",
        "tailscale.com/cap/webui",
        "tailscale.com/cap/kubernetes",
        "tailscale.com/cap/tsidp",
    ];
    if name.contains("://") {
        return Some("capability name must have the form {domain}/{path}".into());
    }
    if name.starts_with("tailscale.com/") && !ALLOWED.contains(&name) {
        return Some("capability name must not be in the tailscale.com domain".into());
    }
    None
}

/// An `ipPool` must be inside Tailscale's CGNAT range and clear of the
/// addresses Tailscale reserves there.
fn check_ip_pool(pool: &IpNet, errors: &mut Vec<String>) {
    let cgnat: IpNet = "100.64.0.0/10".parse().expect("constant");
    if pool.prefix_len() < 10 || !cgnat.contains(&pool.network()) {
        errors.push(format!(
            "nodeAttrs ipPool must be within 100.64.0.0/10: \"{pool}\""
        ));
        return;
    }
    for reserved in ["100.100.100.0/24", "100.115.92.0/23"] {
        let r: IpNet = reserved.parse().expect("constant");
        if r.contains(&pool.network()) || pool.contains(&r.network()) {
            errors.push(format!(
                "nodeAttrs ipPool must not overlap reserved Tailscale ranges: \"{pool}\" overlaps \"{reserved}\""
            ));
        }
    }
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// An address or CIDR as Go's `netip` reads it; `None` for anything else.
fn parse_prefix(s: &str) -> Option<IpNet> {
    if s.contains('/') {
        let (addr, bits) = s.split_once('/')?;
        if bits.is_empty() || (bits.len() > 1 && bits.starts_with('0')) {
            return None;
        }
        let addr: IpAddr = addr.parse().ok()?;
        let bits: u8 = bits.parse().ok()?;
        IpNet::new(addr, bits).ok()
    } else {
        let addr: IpAddr = s.split('%').next()?.parse().ok()?;
        Some(IpNet::from(addr))
    }
}

/// Classifies and parses one alias (already trimmed where the place trims).
pub(super) fn parse_alias(s: &str) -> Result<Alias> {
    if let Some(prefix) = parse_prefix(s) {
        return Ok(Alias::Prefix(prefix));
    }
    if s == "*" {
        return Ok(Alias::Wildcard);
    }
    if s.contains('@') {
        if let Some(rest) = s.strip_prefix("user:") {
            if let Some(domain) = rest.strip_prefix("*@") {
                return Ok(Alias::Domain(domain.to_owned()));
            }
            return Ok(Alias::User(UserRef(rest.to_owned())));
        }
        return Ok(Alias::User(UserRef(s.to_owned())));
    }
    if s.starts_with("group:") {
        return Ok(Alias::Group(s.to_owned()));
    }
    if s.starts_with("tag:") {
        check_tag_letter(s, None)?;
        return Ok(Alias::Tag(s.to_owned()));
    }
    if s.starts_with("autogroup:") {
        return Ok(Alias::AutoGroup(AutoGroup::parse(s)));
    }
    if !s.contains(':') {
        return Ok(Alias::Host(s.to_owned()));
    }
    Err(Error::invalid(format!("invalid alias format: {s:?}")))
}

/// The first character after `tag:` must be an ASCII letter.
fn check_tag_letter(tag: &str, key: Option<&str>) -> Result<()> {
    let rest = &tag["tag:".len()..];
    if rest.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "tagOwners[{:?}]: tag names must start with a letter, after 'tag:'",
        key.unwrap_or(tag)
    )))
}

fn trimmed_aliases(value: Option<&Value>, at: &str) -> Result<Vec<Alias>> {
    strings(value, at)?
        .iter()
        .map(|s| parse_alias(s.trim()))
        .collect()
}

/// `host:ports` (the last colon separates the ports; `[v6]:ports` also works).
/// Ports are read before the alias, so a bad port is what is reported.
pub(super) fn parse_alias_ports(text: &str) -> Result<AliasPorts> {
    let mut s = text.to_owned();
    if !s.contains(':') {
        return Err(Error::invalid("hostport must contain a colon"));
    }
    if let Some(inner) = text.strip_prefix('[') {
        const BRACKETS: &str = "square brackets are only valid around IPv6 addresses";
        let Some((host, rest)) = inner.split_once(']') else {
            return Err(Error::invalid(BRACKETS));
        };
        if !host.parse::<IpAddr>().is_ok_and(|a| a.is_ipv6()) {
            return Err(Error::invalid(format!("{BRACKETS}: {host:?}")));
        }
        if !rest.starts_with([':', '/']) {
            return Err(Error::invalid(format!("{BRACKETS}: {text:?}")));
        }
        s = format!("{host}{rest}");
    }
    let colon = s.rfind(':').expect("checked above");
    if colon == 0 {
        return Err(Error::invalid("input cannot start with a colon character"));
    }
    if colon == s.len() - 1 {
        return Err(Error::invalid("input cannot end with a colon character"));
    }
    let (host, ports) = (&s[..colon], &s[colon + 1..]);
    let ports = parse_ports(ports)
        .map_err(|e| Error::invalid(format!("dst={text:?}: port range {ports:?}: {e}")))?;
    let alias = parse_alias(host)?;
    if let Alias::AutoGroup(AutoGroup::Other(name)) = &alias
        && !ROLE_AUTOGROUPS.contains(&name.as_str())
    {
        return Err(Error::invalid(format!(
            "invalid autogroup: got {name:?}, must be one of [autogroup:internet autogroup:member autogroup:nonroot autogroup:tagged autogroup:self autogroup:danger-all]"
        )));
    }
    Ok(AliasPorts {
        alias,
        ports,
        text: text.to_owned(),
    })
}

/// A port list: `*`, `22`, `80,443`, `1000-2000`.
fn parse_ports(text: &str) -> std::result::Result<Vec<Ports>, &'static str> {
    if text == "*" {
        return Ok(vec![Ports::ANY]);
    }
    fn port(t: &str) -> std::result::Result<u16, &'static str> {
        let digits = t.strip_prefix('+').unwrap_or(t);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(
                if t.starts_with('-') && t[1..].bytes().all(|b| b.is_ascii_digit()) && t.len() > 1 {
                    "port number out of range"
                } else {
                    "invalid first integer"
                },
            );
        }
        digits
            .parse::<u32>()
            .ok()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or("port number out of range")
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        if part.contains('-') {
            let pieces: Vec<&str> = part.split('-').filter(|p| !p.is_empty()).collect();
            if pieces.len() != 2 {
                return Err("invalid port range format");
            }
            let first = port(pieces[0])?;
            let last = port(pieces[1])?;
            if first > last {
                return Err("invalid port range: first port is greater than last port");
            }
            out.push(Ports { first, last });
        } else {
            let p = port(part)?;
            if p == 0 {
                return Err("first port must be >0, or use '*' for wildcard");
            }
            out.push(Ports { first: p, last: p });
        }
    }
    Ok(out)
}

fn parse_groups(value: &Value) -> Result<BTreeMap<String, Vec<UserRef>>> {
    let Value::Object(map) = value else {
        return Err(Error::invalid(format!(
            "groups: expected an object, got {}",
            kind(value)
        )));
    };
    for name in map.keys() {
        if !name.starts_with("group:") {
            return Err(Error::invalid(format!(
                "group must start with 'group:', got: {name:?}"
            )));
        }
    }
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, v) in map {
        let Value::Array(items) = v else {
            return Err(Error::invalid(format!(
                "group value must be an array of users: group {name:?} got {}",
                kind(v)
            )));
        };
        let mut out = Vec::new();
        for item in items {
            let Value::String(s) = item else {
                return Err(Error::invalid(format!(
                    "invalid group member type: group {name:?} expected string but got {}",
                    kind(item)
                )));
            };
            out.push(s.clone());
        }
        members.insert(name.clone(), out);
    }
    // Nested groups are not supported; Tailscale reports the first one found
    // walking the group names from the end.
    for (name, list) in members.iter().rev() {
        if let Some(m) = list.iter().find(|m| m.starts_with("group:")) {
            return Err(Error::invalid(format!(
                "groups[{name:?}]: {m:?}: group members cannot be recursive"
            )));
        }
    }
    let mut out = BTreeMap::new();
    for (name, list) in members {
        let mut users = Vec::new();
        for m in list {
            if !m.contains('@') {
                return Err(Error::invalid(format!(
                    "username must contain @, got: {m:?} (in {name}; write \"{m}@\" for a user named {m})"
                )));
            }
            users.push(UserRef(m));
        }
        out.insert(name, users);
    }
    Ok(out)
}

fn parse_hosts(value: &Value) -> Result<BTreeMap<String, IpNet>> {
    let Value::Object(map) = value else {
        return Err(Error::invalid(format!(
            "hosts: expected an object, got {}",
            kind(value)
        )));
    };
    let mut out = BTreeMap::new();
    for (name, addr) in map {
        if name.contains(['@', ':']) {
            return Err(Error::invalid(format!("invalid hostname: {name:?}")));
        }
        let Value::String(text) = addr else {
            return Err(Error::invalid(format!(
                "hosts[{name:?}]: expected an address, got {}",
                kind(addr)
            )));
        };
        let prefix = parse_prefix(text).ok_or_else(|| {
            Error::invalid(format!(
                "hostname contains invalid IP address: hostname {name:?} address {text:?}"
            ))
        })?;
        out.insert(name.clone(), prefix);
    }
    Ok(out)
}

fn parse_owner(s: &str, what: &str) -> Result<Owner> {
    if s.contains('@') {
        Ok(Owner::User(UserRef(s.to_owned())))
    } else if s.starts_with("group:") {
        Ok(Owner::Group(s.to_owned()))
    } else if s.starts_with("tag:") {
        check_tag_letter(s, None)?;
        Ok(Owner::Tag(s.to_owned()))
    } else {
        Err(Error::invalid(format!("invalid {what} format: {s:?}")))
    }
}

fn parse_tag_owners(value: &Value) -> Result<BTreeMap<String, Vec<Owner>>> {
    let Value::Object(map) = value else {
        return Err(Error::invalid(format!(
            "tagOwners: expected an object, got {}",
            kind(value)
        )));
    };
    let mut out = BTreeMap::new();
    for (tag, owners) in map {
        if !tag.starts_with("tag:") {
            return Err(Error::invalid(format!(
                "tag must start with 'tag:', got: {tag:?}"
            )));
        }
        check_tag_letter(tag, Some(tag))?;
        let owners = strings(Some(owners), &format!("tagOwners[{tag:?}]"))?
            .iter()
            .map(|o| parse_owner(o, "owner"))
            .collect::<Result<Vec<_>>>()?;
        out.insert(tag.clone(), owners);
    }
    Ok(out)
}

fn parse_acl(value: &Value, i: usize) -> Result<Acl> {
    let f = Fields::of(value, &["action", "proto", "src", "dst"], true)?;
    match f.found.get("action") {
        // Headscale accepts a rule without an action as `accept`.
        None => {}
        Some(Value::String(a)) if a == "accept" => {}
        Some(Value::String(a)) => {
            return Err(Error::invalid(format!("action={a:?} is not supported")));
        }
        Some(other) => {
            return Err(Error::invalid(format!(
                "action={:?} is not supported",
                other.to_string()
            )));
        }
    }
    let protocol = match f.get("proto") {
        None => Protocol(None),
        Some(Value::String(s)) => Protocol::parse(s, false)?,
        Some(Value::Number(n)) => Protocol::parse(&n.to_string(), false)?,
        Some(other) => {
            return Err(Error::invalid(format!(
                "acls[{i}].proto: expected a string, got {}",
                kind(other)
            )));
        }
    };
    let src = trimmed_aliases(f.get("src"), &format!("acls[{i}].src"))?;
    let dst = strings(f.get("dst"), &format!("acls[{i}].dst"))?
        .iter()
        .map(|d| parse_alias_ports(d))
        .collect::<Result<Vec<_>>>()?;
    Ok(Acl { protocol, src, dst })
}

/// One `ip` entry of a grant: `*`, `22`, `tcp:22`, `udp:*`.
fn parse_proto_ports(text: &str) -> Result<ProtoPorts> {
    if text == "*" {
        return Ok(ProtoPorts {
            protocol: Protocol(None),
            ports: vec![Ports::ANY],
        });
    }
    let (protocol, ports) = match text.split(':').collect::<Vec<_>>().as_slice() {
        [ports] => (Protocol(None), *ports),
        [proto, ports] => (Protocol::parse(proto, true)?, *ports),
        parts => {
            return Err(Error::invalid(format!(
                "expected only one colon in Internet protocol and port type, got: [{}]({})",
                parts.join(" "),
                parts.len()
            )));
        }
    };
    let ports =
        parse_ports(ports).map_err(|e| Error::invalid(format!("port range {ports:?}: {e}")))?;
    Ok(ProtoPorts { protocol, ports })
}

fn parse_grant(value: &Value, i: usize) -> Result<Grant> {
    let f = Fields::of(value, &["src", "dst", "ip", "app", "via"], false)?;
    let src = trimmed_aliases(f.get("src"), &format!("grants[{i}].src"))?;
    let dst = trimmed_aliases(f.get("dst"), &format!("grants[{i}].dst"))?;
    let ip = strings(f.get("ip"), &format!("grants[{i}].ip"))?
        .iter()
        .map(|s| parse_proto_ports(s))
        .collect::<Result<Vec<_>>>()?;
    let mut app = BTreeMap::new();
    match f.get("app") {
        None => {}
        Some(Value::Object(caps)) => {
            for (name, values) in caps {
                let values = match values {
                    Value::Array(v) => v.clone(),
                    Value::Null => Vec::new(),
                    other => {
                        return Err(Error::invalid(format!(
                            "grants[{i}].app[{name:?}]: expected a list of values, got {}",
                            kind(other)
                        )));
                    }
                };
                app.insert(name.clone(), values);
            }
        }
        Some(other) => {
            return Err(Error::invalid(format!(
                "grants[{i}].app: expected an object, got {}",
                kind(other)
            )));
        }
    }
    let mut via = Vec::new();
    for v in list(f.get("via"), &format!("grants[{i}].via"))? {
        match v {
            Value::String(t)
                if t.starts_with("tag:")
                    && t[4..]
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic()) =>
            {
                via.push(t.clone())
            }
            _ => return Err(Error::invalid("via can only be a tag")),
        }
    }
    Ok(Grant {
        src,
        dst,
        ip,
        app,
        via,
    })
}

fn parse_auto_approvers(value: &Value) -> Result<AutoApprovers> {
    let f = Fields::of(value, &["routes", "exitNode"], false)?;
    let mut out = AutoApprovers::default();
    if let Some(routes) = f.get("routes") {
        let Value::Object(map) = routes else {
            return Err(Error::invalid(format!(
                "autoApprovers.routes: expected an object, got {}",
                kind(routes)
            )));
        };
        for (prefix, approvers) in map {
            let net = if prefix.contains('/') {
                parse_prefix(prefix)
            } else {
                None
            }
            .ok_or_else(|| {
                Error::invalid(format!(
                    "autoApprovers.routes: {prefix:?} is not a CIDR prefix (write it as address/bits)"
                ))
            })?;
            let approvers = strings(Some(approvers), "autoApprovers.routes")?
                .iter()
                .map(|a| parse_owner(a, "auto approver"))
                .collect::<Result<Vec<_>>>()?;
            out.routes.push((net, approvers));
        }
    }
    out.exit_node = strings(f.get("exitNode"), "autoApprovers.exitNode")?
        .iter()
        .map(|a| parse_owner(a, "auto approver"))
        .collect::<Result<Vec<_>>>()?;
    Ok(out)
}

fn parse_node_attr(value: &Value, i: usize) -> Result<NodeAttr> {
    let f = Fields::of(value, &["target", "attr", "ipPool"], false)?;
    let target = trimmed_aliases(f.get("target"), &format!("nodeAttrs[{i}].target"))?;
    let attr = strings(f.get("attr"), &format!("nodeAttrs[{i}].attr"))?;
    let ip_pool = strings(f.get("ipPool"), &format!("nodeAttrs[{i}].ipPool"))?
        .iter()
        .map(|p| {
            p.contains('/')
                .then(|| parse_prefix(p))
                .flatten()
                .ok_or_else(|| {
                    Error::invalid(format!("nodeAttrs[{i}].ipPool: {p:?} is not a CIDR prefix"))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(NodeAttr {
        target,
        attr,
        ip_pool,
    })
}

fn parse_ssh(value: &Value, i: usize) -> Result<SshRule> {
    let f = Fields::of(
        value,
        &["action", "src", "dst", "users", "checkPeriod", "acceptEnv"],
        false,
    )?;
    let mut errors = Vec::new();
    let action = match f.found.get("action") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) => match a.trim() {
            "accept" => Some(SshAction::Accept),
            "check" => Some(SshAction::Check),
            "" => None,
            other => return Err(Error::invalid(format!("{other:?} is not a valid action"))),
        },
        Some(other) => {
            return Err(Error::invalid(format!(
                "{:?} is not a valid action",
                other.to_string()
            )));
        }
    };
    let mut src = Vec::new();
    for s in strings(f.get("src"), &format!("ssh[{i}].src"))? {
        let a = parse_alias(s.trim())?;
        if matches!(a, Alias::Wildcard | Alias::Host(_) | Alias::Prefix(_)) {
            return Err(Error::invalid(format!(
                "alias not supported for SSH source: {a:?} (use users, groups, tags or autogroup:member/tagged)"
            )));
        }
        src.push(a);
    }
    let mut dst = Vec::new();
    for d in strings(f.get("dst"), &format!("ssh[{i}].dst"))? {
        let a = parse_alias(d.trim())?;
        match a {
            Alias::Wildcard => {
                return Err(Error::invalid(
                    "wildcard (*) is not supported as SSH destination; use 'autogroup:member' for user-owned devices, 'autogroup:tagged' for tagged devices, or specific tags/users",
                ));
            }
            Alias::Group(_) | Alias::Prefix(_) => {
                return Err(Error::invalid(format!(
                    "alias not supported for SSH destination: {a}"
                )));
            }
            _ => dst.push(a),
        }
    }
    let raw_users = strings(f.get("users"), &format!("ssh[{i}].users"))?;
    let check_period = match f.get("checkPeriod") {
        None => None,
        Some(Value::String(s)) => Some(parse_check_period(s)?),
        Some(Value::Number(n)) => {
            return Err(Error::invalid(format!(
                "time: missing unit in duration \"{n}\""
            )));
        }
        Some(other) => {
            return Err(Error::invalid(format!(
                "ssh[{i}].checkPeriod: expected a string, got {}",
                kind(other)
            )));
        }
    };
    let accept_env = strings(f.get("acceptEnv"), &format!("ssh[{i}].acceptEnv"))?;

    // Validation: everything wrong with the rule, in Headscale's order.
    if action.is_none() {
        errors.push("action must be specified".to_owned());
    }
    if raw_users.is_empty() {
        errors.push("users must be specified".to_owned());
    }
    let mut users = Vec::new();
    for u in &raw_users {
        let u = u.trim();
        if u.is_empty() || u == "*" {
            errors.push(format!("user {u:?} is not valid"));
            continue;
        }
        users.push(parse_ssh_user(u));
    }
    if accept_env.iter().any(String::is_empty) {
        errors.push("acceptEnv values cannot be empty".to_owned());
    }
    if let Some(period) = check_period {
        if action != Some(SshAction::Check) {
            errors.push("checkPeriod is only valid with action \"check\"".to_owned());
        } else if let CheckPeriod::For(d) = period
            && d > Duration::from_secs(168 * 3600)
        {
            errors.push(format!(
                "checkPeriod {} is above the max (168h)",
                go_duration(d)
            ));
        }
    }
    if let Some(e) = Error::from_many(errors) {
        return Err(e);
    }
    Ok(SshRule {
        action: action.expect("checked above"),
        src,
        dst,
        users,
        check_period,
        accept_env,
    })
}

/// `localpart:*@domain` (the local part must be exactly `*`, the domain is what
/// follows the last `@`) and `autogroup:nonroot` are special; everything else is
/// a literal login name.
fn parse_ssh_user(u: &str) -> SshUser {
    if u == "autogroup:nonroot" {
        return SshUser::NonRoot;
    }
    if let Some(rest) = u.strip_prefix("localpart:")
        && let Some((local, domain)) = rest.rsplit_once('@')
        && local == "*"
        && !domain.is_empty()
    {
        return SshUser::Localpart(domain.to_owned());
    }
    SshUser::Name(u.to_owned())
}

/// `always`, or a Go duration; negative ones are refused.
fn parse_check_period(s: &str) -> Result<CheckPeriod> {
    if s == "always" {
        return Ok(CheckPeriod::Always);
    }
    if let Some(rest) = s.strip_prefix('-')
        && let Some(d) = parse_go_duration(rest)
    {
        return Err(Error::invalid(format!(
            "checkPeriod -{} must be a positive duration",
            go_duration(d)
        )));
    }
    parse_go_duration(s)
        .map(CheckPeriod::For)
        .ok_or_else(|| Error::invalid(format!("time: invalid duration {s:?}")))
}

/// Go's `time.ParseDuration` for non-negative values (`1h30m`, `90s`, `1.5h`).
pub(super) fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let number: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * scale;
    }
    // Too long for a `Duration` (Go: "invalid duration"), not a panic.
    Duration::try_from_secs_f64(total).ok()
}

/// A duration as Go prints it (`168h0m1s`, `1m30s`, `0s`).
pub(super) fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = d.subsec_nanos();
    let s = if frac == 0 {
        s.to_string()
    } else {
        format!("{}", s as f64 + f64::from(frac) / 1e9)
    };
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn parse_acl_test(value: &Value, i: usize) -> Result<AclTest> {
    let f = Fields::of(value, &["src", "proto", "accept", "deny"], false)?;
    let src = match f.get("src") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(Error::invalid(format!(
                "tests[{i}].src: expected a string, got {}",
                kind(other)
            )));
        }
    };
    let proto = match f.get("proto") {
        None => Ok(Protocol(None)),
        Some(Value::String(s)) => Protocol::parse(s, false),
        Some(Value::Number(n)) => Protocol::parse(&n.to_string(), false),
        Some(other) => Err(Error::invalid(format!(
            "tests[{i}].proto: expected a string, got {}",
            kind(other)
        ))),
    }?;
    let mut problems = Vec::new();
    let mut parse_list = |key: &str| -> Result<Vec<AliasPorts>> {
        let mut out = Vec::new();
        for d in strings(f.get(key), &format!("tests[{i}].{key}"))? {
            match parse_alias_ports(&d) {
                Ok(ap) => out.push(ap),
                Err(e) => problems.push(format!("test {i}, {key} {d:?}: {e}")),
            }
        }
        Ok(out)
    };
    let accept = parse_list("accept")?;
    let deny = parse_list("deny")?;
    if !problems.is_empty() {
        return Err(Error::TestsFailed(problems));
    }
    Ok(AclTest {
        src,
        protocol: proto,
        accept,
        deny,
    })
}

/// The shape rules of `tests` entries (Tailscale reports these as failed tests).
fn validate_test(
    i: usize,
    test: &AclTest,
    hosts: &BTreeMap<String, IpNet>,
    errors: &mut Vec<String>,
) {
    let mut problems = Vec::new();
    if test.accept.is_empty() && test.deny.is_empty() {
        problems.push(format!(
            "test {i}: test entry must have at least one of \"accept\" or \"deny\""
        ));
    }
    if !matches!(
        test.protocol.0,
        None | Some(Protocol::TCP) | Some(Protocol::UDP) | Some(Protocol::SCTP)
    ) {
        problems.push(format!(
            "test {i}: test protocol must be tcp, udp, sctp, or empty: {:?}",
            test.protocol.name()
        ));
    }
    for (key, list) in [("accept", &test.accept), ("deny", &test.deny)] {
        for d in list {
            let at = format!("test {i}, {key} {:?}", d.text);
            if d.alias == Alias::AutoGroup(AutoGroup::Internet) {
                problems.push(format!(
                    "{at}: autogroup:internet not valid as a test destination"
                ));
                continue;
            }
            if d.ports.len() != 1 || d.ports[0].first != d.ports[0].last {
                problems.push(format!("{at}: test destination port must be a single port"));
                continue;
            }
            let wide_host = matches!(&d.alias, Alias::Host(h)
                if hosts.get(h).is_some_and(|p| p.prefix_len() < p.max_prefix_len()));
            let cidr = matches!(&d.alias, Alias::Prefix(_)) && d.text.contains('/');
            if wide_host || cidr {
                problems.push(format!(
                    "{at}: test destination must be a single host, not a CIDR range"
                ));
            }
        }
    }
    if !problems.is_empty() {
        errors.push(format!("test(s) failed:\n{}", problems.join("\n")));
    }
}

fn parse_ssh_test(value: &Value, i: usize) -> Result<SshTest> {
    let f = Fields::of(value, &["src", "dst", "accept", "check", "deny"], false)?;
    let src_text = match f.get("src") {
        None => String::new(),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(other) => {
            return Err(Error::invalid(format!(
                "sshTests[{i}].src: expected a string, got {}",
                kind(other)
            )));
        }
    };
    if src_text.is_empty() {
        return Err(Error::invalid(format!(
            "test(s) failed:\nsshTest {i}: SSH tests entry must have a non-empty src"
        )));
    }
    let src = parse_alias(&src_text)?;
    let dst = trimmed_aliases(f.get("dst"), &format!("sshTests[{i}].dst"))?;
    let users = |key: &str| -> Result<Vec<String>> {
        Ok(strings(f.get(key), &format!("sshTests[{i}].{key}"))?
            .iter()
            .map(|u| u.trim().to_owned())
            .collect())
    };
    Ok(SshTest {
        src,
        src_text,
        dst,
        accept: users("accept")?,
        check: users("check")?,
        deny: users("deny")?,
    })
}

#[allow(dead_code)]
fn _object_type_check(_: &Map<String, Value>) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Policy::parse(text).unwrap_err().to_string()
    }

    /// Found by the `policy` fuzz target: a checkPeriod too long for a `Duration`
    /// panicked while parsing, so `policy set`/`policy check` failed without an
    /// explanation and a policy file with it panicked at start-up or on reload,
    /// instead of being refused with Go's "invalid duration".
    #[test]
    fn a_check_period_too_long_to_represent_is_refused_not_a_crash() {
        for period in [
            format!("{}12h", "2".repeat(150)),
            format!("{}h", "9".repeat(400)),
        ] {
            let text = format!(
                r#"{{"ssh":[{{"action":"check","src":["autogroup:member"],"dst":["autogroup:self"],"users":["root"],"checkPeriod":"{period}"}}]}}"#
            );
            assert!(
                err(&text).contains("time: invalid duration"),
                "{}",
                err(&text)
            );
        }
    }

    #[test]
    fn a_headscale_guide_policy_parses() {
        let p = Policy::parse(
            r#"{
  // Headscale's documentation example, with comments and trailing commas.
  "groups": {"group:admin": ["alice@", "bob@example.com"],},
  "tagOwners": {"tag:server": ["group:admin"]},
  "hosts": {"nas": "192.168.1.10", "lan": "192.168.1.0/24"},
  "acls": [
    {"action": "accept", "src": ["group:admin"], "dst": ["*:*"]},
    {"action": "accept", "proto": "tcp", "src": ["autogroup:member"], "dst": ["tag:server:22,80,8000-8080", "nas:445", "[fd7a:115c:a1e0::1]:53"]},
  ],
}"#,
        )
        .unwrap();
        assert_eq!(p.groups["group:admin"][0].token(), "alice");
        assert_eq!(p.acls[1].protocol, Protocol(Some(6)));
        assert_eq!(
            p.acls[1].dst[0].ports,
            [
                Ports {
                    first: 22,
                    last: 22
                },
                Ports {
                    first: 80,
                    last: 80
                },
                Ports {
                    first: 8000,
                    last: 8080
                }
            ]
        );
        assert_eq!(
            p.acls[1].dst[2].alias,
            Alias::Prefix("fd7a:115c:a1e0::1/128".parse().unwrap())
        );
        assert!(!p.default_allow);
        assert!(Policy::parse("{}").unwrap().default_allow);
        assert!(!Policy::parse(r#"{"acls": []}"#).unwrap().default_allow);
    }

    #[test]
    fn field_names_ignore_case_and_separators() {
        let p = Policy::parse(r#"{"tag_owners": {"tag:a": []}, "ACLS": []}"#).unwrap();
        assert!(p.tag_owners.contains_key("tag:a"));
        assert_eq!(err(r#"{"bogus": 1}"#), r#"unknown field: "bogus""#);
        assert!(err(r#"{"postures": {}}"#).contains("does not support"));
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = err("{\n  \"acls\": [\n    {\"action\": \"accept\" \"src\": []}\n  ]\n}");
        assert!(e.contains("line 3, column"), "{e}");
    }

    #[test]
    fn tailscale_messages_for_common_mistakes() {
        let cases = [
            (
                r#"{"acls":[{"action":"deny","src":["*"],"dst":["*:*"]}]}"#,
                r#"action="deny" is not supported"#,
            ),
            (
                r#"{"acls":[{"action":"accept","src":["tag:nope"],"dst":["*:*"]}]}"#,
                r#"src=tag not found: "tag:nope""#,
            ),
            (
                r#"{"acls":[{"action":"accept","src":["*"],"dst":["tag:x:ssh"]}],"tagOwners":{"tag:x":[]}}"#,
                r#"port range "ssh": invalid first integer"#,
            ),
            (
                r#"{"acls":[{"action":"accept","src":["autogroup:self"],"dst":["*:*"]}]}"#,
                r#""autogroup:self" not valid on the src side of a rule"#,
            ),
            (
                r#"{"acls":[{"action":"accept","src":["tag:a"],"dst":["autogroup:self:*"]}],"tagOwners":{"tag:a":[]}}"#,
                SELF_SOURCES,
            ),
            (
                r#"{"grants":[{"src":["*"],"dst":["*"]}]}"#,
                "ip and app can not both be empty",
            ),
            (
                r#"{"grants":[{"src":["*"],"dst":["0.0.0.0/0"],"ip":["*"]}]}"#,
                r#"dst "0.0.0.0/0": to allow all IP addresses"#,
            ),
            (
                r#"{"groups":{"group:a":["group:b"],"group:b":["x@"]}}"#,
                r#"groups["group:a"]: "group:b": group members cannot be recursive"#,
            ),
            (
                r#"{"ssh":[{"action":"Accept","src":["autogroup:member"],"dst":["autogroup:self"],"users":["root"]}]}"#,
                r#""Accept" is not a valid action"#,
            ),
            (
                r#"{"ssh":[{"action":"check","src":["autogroup:member"],"dst":["autogroup:self"],"users":["root"],"checkPeriod":"200h"}]}"#,
                "checkPeriod 200h0m0s is above the max (168h)",
            ),
            (
                r#"{"nodeAttrs":[{"target":["autogroup:admin"],"attr":["x"]}]}"#,
                "autogroup:admin is not supported",
            ),
            (
                r#"{"nodeAttrs":[{"target":["%bogus%"],"attr":["x"]}]}"#,
                r#""%bogus%": invalid address"#,
            ),
            (
                r#"{"tagOwners":{"tag:1x":[]}}"#,
                r#"tagOwners["tag:1x"]: tag names must start with a letter, after 'tag:'"#,
            ),
        ];
        for (policy, want) in cases {
            let got = err(policy);
            assert!(
                got.contains(want),
                "{policy}\n  want: {want}\n  got:  {got}"
            );
        }
    }

    #[test]
    fn several_problems_are_all_reported() {
        let e = err(
            r#"{"acls":[{"action":"accept","src":["group:nope","tag:nope"],"dst":["tag:nope2:*"]}]}"#,
        );
        assert!(e.starts_with("multiple errors:\n\t"), "{e}");
        assert!(
            e.contains(r#"group not defined in policy: "group:nope""#),
            "{e}"
        );
        assert!(
            e.contains(r#"dst="tag:nope2": tag not found: "tag:nope2""#),
            "{e}"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("abc"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(go_duration(Duration::from_secs(168 * 3600 + 1)), "168h0m1s");
    }
}
