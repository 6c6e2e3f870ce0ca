//! Who sees whom: a node sees a peer when some rule lets traffic flow between
//! them in either direction, counting the subnet routes a node serves and the
//! internet an exit node serves. Kept as one bit row per node.

use super::ipset::IpSet;
use super::resolve::{Resolver, covers_internet};

/// The address sides of one rule, before it is reduced to any node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Matcher {
    pub src: IpSet,
    pub dst: IpSet,
}

/// A symmetric relation over device indices, one bit row per device.
#[derive(Clone, Debug, Default)]
pub(super) struct Visibility {
    words: usize,
    bits: Vec<u64>,
}

impl Visibility {
    fn new(n: usize) -> Self {
        let words = n.div_ceil(64);
        Visibility {
            words,
            bits: vec![0; words * n],
        }
    }

    fn row_mut(&mut self, a: usize) -> &mut [u64] {
        &mut self.bits[a * self.words..(a + 1) * self.words]
    }

    pub fn get(&self, a: usize, b: usize) -> bool {
        self.bits
            .get(a * self.words + b / 64)
            .is_some_and(|w| w & (1 << (b % 64)) != 0)
    }

    /// Bits set in this row `a` and not in `other`'s row `b`, and the reverse
    /// (indices valid when `other`'s devices are a prefix of this one's).
    pub fn row_diff(&self, a: usize, other: &Visibility, b: usize) -> (Vec<usize>, Vec<usize>) {
        let mine = &self.bits[a * self.words..(a + 1) * self.words];
        let theirs = &other.bits[b * other.words..(b + 1) * other.words];
        let (mut gained, mut lost) = (Vec::new(), Vec::new());
        for (w, word) in mine.iter().enumerate() {
            let old = theirs.get(w).copied().unwrap_or(0);
            for (diff, out) in [(word & !old, &mut gained), (old & !word, &mut lost)] {
                let mut bits = diff;
                while bits != 0 {
                    out.push(w * 64 + bits.trailing_zeros() as usize);
                    bits &= bits - 1;
                }
            }
        }
        (gained, lost)
    }

    /// The devices `a` sees, in index order.
    pub fn row(&self, a: usize) -> impl Iterator<Item = usize> + '_ {
        let row = &self.bits[a * self.words..(a + 1) * self.words];
        row.iter().enumerate().flat_map(|(w, bits)| {
            let mut bits = *bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + b)
            })
        })
    }
}

fn bitset(n: usize, members: &[usize]) -> Vec<u64> {
    let mut out = vec![0u64; n.div_ceil(64)];
    for &m in members {
        out[m / 64] |= 1 << (m % 64);
    }
    out
}

/// Devices whose own addresses are in `set`, or whose approved subnet routes
/// overlap it: the sources a rule matches.
pub(super) fn devices_matching(r: &Resolver<'_>, set: &IpSet) -> Vec<usize> {
    let mut out = r.devices_in(set);
    for (i, d) in r.devices().iter().enumerate() {
        if d.subnet_routes.iter().any(|p| set.overlaps_prefix(p)) && out.binary_search(&i).is_err()
        {
            out.push(i);
        }
    }
    out.sort_unstable();
    out
}

/// Devices a rule's destinations reach: their addresses, their subnet routes,
/// or (for exit nodes) the internet.
fn devices_reached(r: &Resolver<'_>, set: &IpSet) -> Vec<usize> {
    let mut out = devices_matching(r, set);
    if covers_internet(set) {
        for (i, d) in r.devices().iter().enumerate() {
            if d.exit_node && out.binary_search(&i).is_err() {
                out.push(i);
            }
        }
        out.sort_unstable();
    }
    out
}

/// Builds the relation from the tailnet-wide `matchers` and the per-node
/// pairs (`autogroup:self` and via rules: sources × destinations by index).
pub(super) fn visibility(
    r: &Resolver<'_>,
    matchers: &[Matcher],
    pairs: &[(Vec<usize>, Vec<usize>)],
) -> Visibility {
    let n = r.devices().len();
    let mut vis = Visibility::new(n);
    let mut seen: Vec<&Matcher> = Vec::new();
    let connect = |vis: &mut Visibility, src: &[usize], dst: &[usize]| {
        if src.is_empty() || dst.is_empty() {
            return;
        }
        let src_bits = bitset(n, src);
        let dst_bits = bitset(n, dst);
        for &a in src {
            for (w, bits) in vis.row_mut(a).iter_mut().zip(&dst_bits) {
                *w |= bits;
            }
        }
        for &b in dst {
            for (w, bits) in vis.row_mut(b).iter_mut().zip(&src_bits) {
                *w |= bits;
            }
        }
    };
    for m in matchers {
        if seen.contains(&m) {
            continue;
        }
        seen.push(m);
        let src = devices_matching(r, &m.src);
        let dst = devices_reached(r, &m.dst);
        connect(&mut vis, &src, &dst);
    }
    for (src, dst) in pairs {
        connect(&mut vis, src, dst);
    }
    for a in 0..n {
        vis.row_mut(a)[a / 64] &= !(1 << (a % 64));
    }
    vis
}

/// For each route served in the tailnet, the devices that may use it (as one
/// bit row): a device sees a route when some rule lets it send into the route
/// (it, or a subnet it serves, is a source and the route a destination), or lets
/// the route's hosts reach it. A router also sees routes it serves itself.
pub(super) fn route_viewers(
    r: &Resolver<'_>,
    matchers: &[Matcher],
    routes: &[ipnet::IpNet],
) -> Vec<(ipnet::IpNet, Vec<u64>)> {
    let n = r.devices().len();
    routes
        .iter()
        .map(|route| {
            let mut bits = vec![0u64; n.div_ceil(64)];
            let mut add = |members: Vec<usize>| {
                for m in members {
                    bits[m / 64] |= 1 << (m % 64);
                }
            };
            for m in matchers {
                if m.dst.overlaps_prefix(route) {
                    add(devices_matching(r, &m.src));
                }
                if m.src.overlaps_prefix(route) {
                    add(devices_reached(r, &m.dst));
                }
            }
            for (i, d) in r.devices().iter().enumerate() {
                if d.subnet_routes.contains(route) {
                    bits[i / 64] |= 1 << (i % 64);
                }
            }
            (*route, bits)
        })
        .collect()
}
