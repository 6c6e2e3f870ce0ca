//! `IpSet`: a set of IPv4 and IPv6 addresses as sorted, disjoint, inclusive
//! ranges, with the conversions the packet filter's wire forms need (`*`, an
//! address, a CIDR, an `a-b` range). Knows addresses, not nodes.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A set of addresses of both families. Always normalised: ranges sorted,
/// disjoint and not adjacent, so equal sets compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every address of both families (`0.0.0.0/0` and `::/0`).
    pub fn all() -> Self {
        IpSet {
            v4: vec![(0, u32::MAX)],
            v6: vec![(0, u128::MAX)],
        }
    }

    pub fn from_prefix(prefix: IpNet) -> Self {
        let mut b = IpSetBuilder::default();
        b.add_prefix(prefix);
        b.build()
    }

    pub fn from_addrs(addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut b = IpSetBuilder::default();
        for a in addrs {
            b.add_addr(a);
        }
        b.build()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }

    /// Whether any address of `prefix` is in the set.
    pub fn overlaps_prefix(&self, prefix: &IpNet) -> bool {
        match prefix {
            IpNet::V4(p) => overlaps(&self.v4, v4_range(p)),
            IpNet::V6(p) => overlaps(&self.v6, v6_range(p)),
        }
    }

    /// Whether every address of `prefix` is in the set.
    pub fn contains_prefix(&self, prefix: &IpNet) -> bool {
        match prefix {
            IpNet::V4(p) => covers(&self.v4, v4_range(p)),
            IpNet::V6(p) => covers(&self.v6, v6_range(p)),
        }
    }

    /// Whether every address of `other` is in the set.
    pub fn is_superset_of(&self, other: &IpSet) -> bool {
        other.v4.iter().all(|r| covers(&self.v4, *r))
            && other.v6.iter().all(|r| covers(&self.v6, *r))
    }

    pub fn overlaps(&self, other: &IpSet) -> bool {
        other.v4.iter().any(|r| overlaps(&self.v4, *r))
            || other.v6.iter().any(|r| overlaps(&self.v6, *r))
    }

    pub fn union(&self, other: &IpSet) -> IpSet {
        let mut b = IpSetBuilder::default();
        b.add_set(self);
        b.add_set(other);
        b.build()
    }

    pub fn intersection(&self, other: &IpSet) -> IpSet {
        IpSet {
            v4: intersect(&self.v4, &other.v4),
            v6: intersect(&self.v6, &other.v6),
        }
    }

    /// The addresses of `self` that are not in `other`.
    pub fn difference(&self, other: &IpSet) -> IpSet {
        IpSet {
            v4: subtract(&self.v4, &other.v4),
            v6: subtract(&self.v6, &other.v6),
        }
    }

    /// The fewest CIDR prefixes covering exactly the set, IPv4 first.
    pub fn prefixes(&self) -> Vec<IpNet> {
        let mut out = Vec::new();
        for &(from, to) in &self.v4 {
            split_range(u128::from(from), u128::from(to), 32, &mut |start, len| {
                out.push(IpNet::V4(
                    Ipv4Net::new(Ipv4Addr::from(start as u32), len).expect("length within 32"),
                ));
            });
        }
        for &(from, to) in &self.v6 {
            split_range(from, to, 128, &mut |start, len| {
                out.push(IpNet::V6(
                    Ipv6Net::new(Ipv6Addr::from(start), len).expect("length within 128"),
                ));
            });
        }
        out
    }

    /// Each range in the packet filter's text form: a lone address, a CIDR when
    /// the range is exactly one prefix, otherwise `first-last`.
    pub fn strings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for &(from, to) in &self.v4 {
            out.push(range_text(
                IpAddr::V4(Ipv4Addr::from(from)),
                IpAddr::V4(Ipv4Addr::from(to)),
                u128::from(from),
                u128::from(to),
                32,
            ));
        }
        for &(from, to) in &self.v6 {
            out.push(range_text(
                IpAddr::V6(Ipv6Addr::from(from)),
                IpAddr::V6(Ipv6Addr::from(to)),
                from,
                to,
                128,
            ));
        }
        out
    }

    /// Every single address, in order; meant for small sets (a node's addresses).
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self
            .v4
            .iter()
            .flat_map(|&(a, b)| (a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))));
        let v6 = self.v6.iter().flat_map(|&(a, b)| {
            let mut next = Some(a);
            std::iter::from_fn(move || {
                let cur = next?;
                next = if cur < b { Some(cur + 1) } else { None };
                Some(IpAddr::V6(Ipv6Addr::from(cur)))
            })
        });
        v4.chain(v6)
    }

    /// The values of `sorted` (ordered by address) whose address is in the set:
    /// one binary search per range, so selecting a few nodes out of many is cheap.
    pub fn select<'s, T>(&'s self, sorted: &'s [(IpAddr, T)]) -> impl Iterator<Item = &'s T> + 's {
        let v4 = self
            .v4
            .iter()
            .map(|&(a, b)| (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b))));
        let v6 = self
            .v6
            .iter()
            .map(|&(a, b)| (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b))));
        v4.chain(v6).flat_map(move |(from, to)| {
            let lo = sorted.partition_point(|(a, _)| *a < from);
            let hi = sorted.partition_point(|(a, _)| *a <= to);
            sorted[lo..hi.max(lo)].iter().map(|(_, v)| v)
        })
    }

    /// The number of ranges; a cost measure.
    pub fn range_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Parses one packet-filter address form: `*` (everything), an address, a
    /// CIDR (host bits ignored) or `first-last`.
    pub fn parse_filter_form(text: &str) -> Option<IpSet> {
        if text == "*" {
            return Some(IpSet::all());
        }
        let mut b = IpSetBuilder::default();
        if let Some((from, to)) = text.split_once('-') {
            let from: IpAddr = from.parse().ok()?;
            let to: IpAddr = to.parse().ok()?;
            if from.is_ipv4() != to.is_ipv4() || from > to {
                return None;
            }
            b.add_range(from, to);
        } else if text.contains('/') {
            b.add_prefix(text.parse::<IpNet>().ok()?.trunc());
        } else {
            b.add_addr(text.parse().ok()?);
        }
        Some(b.build())
    }
}

/// Collects ranges in any order; [`IpSetBuilder::build`] normalises once.
#[derive(Clone, Debug, Default)]
pub struct IpSetBuilder {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSetBuilder {
    pub fn add_prefix(&mut self, prefix: IpNet) {
        match prefix {
            IpNet::V4(p) => self.v4.push(v4_range(&p)),
            IpNet::V6(p) => self.v6.push(v6_range(&p)),
        }
    }

    pub fn add_addr(&mut self, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => self.v4.push((u32::from(a), u32::from(a))),
            IpAddr::V6(a) => self.v6.push((u128::from(a), u128::from(a))),
        }
    }

    /// Adds `from..=to`; both must be of one family (otherwise nothing is added).
    pub fn add_range(&mut self, from: IpAddr, to: IpAddr) {
        match (from, to) {
            (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => self.v4.push((a.into(), b.into())),
            (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => self.v6.push((a.into(), b.into())),
            _ => {}
        }
    }

    pub fn add_set(&mut self, set: &IpSet) {
        self.v4.extend_from_slice(&set.v4);
        self.v6.extend_from_slice(&set.v6);
    }

    pub fn build(mut self) -> IpSet {
        IpSet {
            v4: normalise(&mut self.v4),
            v6: normalise(&mut self.v6),
        }
    }
}

trait Bound: Copy + Ord {
    fn succ(self) -> Option<Self>;
    fn pred(self) -> Option<Self>;
}

impl Bound for u32 {
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn pred(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

impl Bound for u128 {
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn pred(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

fn normalise<T: Bound>(ranges: &mut [(T, T)]) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for &(from, to) in ranges.iter() {
        if let Some(last) = out.last_mut() {
            // Merge overlapping and adjacent ranges.
            if last.1.succ().is_none_or(|next| from <= next) {
                if to > last.1 {
                    last.1 = to;
                }
                continue;
            }
        }
        out.push((from, to));
    }
    out
}

fn find<T: Bound>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|r| r.1 < x);
    ranges.get(i).is_some_and(|r| r.0 <= x)
}

fn overlaps<T: Bound>(ranges: &[(T, T)], (from, to): (T, T)) -> bool {
    let i = ranges.partition_point(|r| r.1 < from);
    ranges.get(i).is_some_and(|r| r.0 <= to)
}

fn covers<T: Bound>(ranges: &[(T, T)], (from, to): (T, T)) -> bool {
    let i = ranges.partition_point(|r| r.1 < from);
    ranges.get(i).is_some_and(|r| r.0 <= from && to <= r.1)
}

fn intersect<T: Bound>(a: &[(T, T)], b: &[(T, T)]) -> Vec<(T, T)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let from = a[i].0.max(b[j].0);
        let to = a[i].1.min(b[j].1);
        if from <= to {
            out.push((from, to));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn subtract<T: Bound>(a: &[(T, T)], b: &[(T, T)]) -> Vec<(T, T)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(from, to) in a {
        let mut start = Some(from);
        while j < b.len() && b[j].1 < from {
            j += 1;
        }
        let mut k = j;
        while let Some(s) = start {
            if k >= b.len() || b[k].0 > to {
                out.push((s, to));
                break;
            }
            if b[k].0 > s {
                out.push((s, b[k].0.pred().expect("above s")));
            }
            start = if b[k].1 >= to { None } else { b[k].1.succ() };
            k += 1;
        }
    }
    out
}

fn v4_range(p: &Ipv4Net) -> (u32, u32) {
    (u32::from(p.network()), u32::from(p.broadcast()))
}

fn v6_range(p: &Ipv6Net) -> (u128, u128) {
    (u128::from(p.network()), u128::from(p.broadcast()))
}

/// Calls `emit(start, prefix_len)` for the fewest aligned blocks covering
/// `from..=to` in an address space of `bits` bits.
fn split_range(from: u128, to: u128, bits: u8, emit: &mut dyn FnMut(u128, u8)) {
    let mut start = from;
    loop {
        // The largest aligned block starting at `start` that stays within `to`.
        let mut size_bits = if start == 0 {
            u32::from(bits)
        } else {
            start.trailing_zeros().min(u32::from(bits))
        };
        loop {
            let last = if size_bits >= 128 {
                u128::MAX
            } else {
                start + ((1u128 << size_bits) - 1)
            };
            if last <= to {
                break;
            }
            size_bits -= 1;
        }
        emit(start, bits - size_bits as u8);
        let last = if size_bits >= 128 {
            u128::MAX
        } else {
            start + ((1u128 << size_bits) - 1)
        };
        if last >= to {
            return;
        }
        start = last + 1;
    }
}

fn range_text(from: IpAddr, to: IpAddr, a: u128, b: u128, bits: u8) -> String {
    if a == b {
        return from.to_string();
    }
    let mut single: Option<(u128, u8)> = None;
    let mut count = 0;
    split_range(a, b, bits, &mut |start, len| {
        count += 1;
        single = Some((start, len));
    });
    match single {
        Some((_, len)) if count == 1 => format!("{from}/{len}"),
        _ => format!("{from}-{to}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> IpSet {
        let mut b = IpSetBuilder::default();
        for i in items {
            b.add_set(&IpSet::parse_filter_form(i).unwrap());
        }
        b.build()
    }

    #[test]
    fn ranges_merge_and_print_as_tailscale_does() {
        let s = set(&[
            "100.64.0.10",
            "100.64.0.11",
            "100.64.0.12",
            "fd7a:115c:a1e0::1",
        ]);
        assert_eq!(
            s.strings(),
            ["100.64.0.10-100.64.0.12", "fd7a:115c:a1e0::1"]
        );
        assert_eq!(
            s.prefixes()
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            ["100.64.0.10/31", "100.64.0.12/32", "fd7a:115c:a1e0::1/128"]
        );
        assert_eq!(set(&["100.64.0.0/10"]).strings(), ["100.64.0.0/10"]);
        assert_eq!(set(&["*"]).strings(), ["0.0.0.0/0", "::/0"]);
        assert_eq!(set(&["10.0.0.0/8", "10.1.0.0/16"]), set(&["10.0.0.0/8"]));
    }

    #[test]
    fn membership_and_overlap() {
        let s = set(&["100.64.0.0/10", "10.33.0.0/16"]);
        assert!(s.contains("100.100.1.1".parse().unwrap()));
        assert!(!s.contains("100.128.0.0".parse().unwrap()));
        assert!(s.overlaps_prefix(&"10.0.0.0/8".parse().unwrap()));
        assert!(!s.contains_prefix(&"10.0.0.0/8".parse().unwrap()));
        assert!(s.contains_prefix(&"10.33.1.0/24".parse().unwrap()));
        assert!(!s.overlaps_prefix(&"::/0".parse().unwrap()));
    }

    #[test]
    fn set_algebra() {
        let a = set(&["10.0.0.0-10.0.0.20"]);
        let b = set(&["10.0.0.5-10.0.0.9", "10.0.0.15"]);
        assert_eq!(
            a.difference(&b).strings(),
            [
                "10.0.0.0-10.0.0.4",
                "10.0.0.10-10.0.0.14",
                "10.0.0.16-10.0.0.20"
            ]
        );
        assert_eq!(a.intersection(&b), b);
        assert!(a.is_superset_of(&b));
        assert_eq!(IpSet::all().difference(&IpSet::all()), IpSet::new());
        assert_eq!(
            IpSet::all().difference(&set(&["0.0.0.0/1"])).strings(),
            ["128.0.0.0/1", "::/0"]
        );
    }

    #[test]
    fn bad_filter_forms_are_refused() {
        for bad in [
            "",
            "10.0.0.1-",
            "10.0.0.2-10.0.0.1",
            "10.0.0.1-::1",
            "300.1.1.1",
            "a/b",
        ] {
            assert!(IpSet::parse_filter_form(bad).is_none(), "{bad}");
        }
    }
}
