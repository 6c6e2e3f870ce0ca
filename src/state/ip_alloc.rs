//! Address allocation from the configured IPv4 and IPv6 prefixes.
//!
//! The allocator is the only source of new addresses and lives behind the
//! state's write lock, so two registrations never receive the same address;
//! the database's unique indexes are the second line of defence.

use crate::config::Allocation;
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// 100.100.100.100: Tailscale's MagicDNS and service address.
const SERVICE_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);
/// fd7a:115c:a1e0::53: the IPv6 service address.
const SERVICE_V6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x53);

/// Addresses Tailscale clients treat specially and that no node may hold.
fn reserved_v4(ip: Ipv4Addr) -> bool {
    // ChromeOS VMs use 100.115.92.0/23 inside the CGNAT range.
    let chromeos = Ipv4Net::new(Ipv4Addr::new(100, 115, 92, 0), 23).expect("valid prefix");
    ip == SERVICE_V4 || chromeos.contains(&ip)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no free address left in {0}")]
pub struct Exhausted(pub String);

#[derive(Debug)]
pub struct IpAllocator {
    v4: Option<Ipv4Net>,
    v6: Option<Ipv6Net>,
    strategy: Allocation,
    used4: HashSet<Ipv4Addr>,
    used6: HashSet<Ipv6Addr>,
    // Sequential allocation resumes after the last address handed out.
    last4: Option<u32>,
    last6: Option<u128>,
}

impl IpAllocator {
    pub fn new(v4: Option<Ipv4Net>, v6: Option<Ipv6Net>, strategy: Allocation) -> Self {
        Self {
            v4,
            v6,
            strategy,
            used4: HashSet::new(),
            used6: HashSet::new(),
            last4: None,
            last6: None,
        }
    }

    /// Marks addresses of existing nodes as taken (at start-up).
    pub fn reserve(&mut self, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) {
        if let Some(ip) = v4 {
            self.used4.insert(ip);
        }
        if let Some(ip) = v6 {
            self.used6.insert(ip);
        }
    }

    /// Returns addresses to the pool (node deleted).
    pub fn release(&mut self, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) {
        if let Some(ip) = v4 {
            self.used4.remove(&ip);
        }
        if let Some(ip) = v6 {
            self.used6.remove(&ip);
        }
    }

    pub fn has_v4(&self) -> bool {
        self.v4.is_some()
    }

    pub fn has_v6(&self) -> bool {
        self.v6.is_some()
    }

    /// Whether `ip` lies in the configured IPv4 prefix.
    pub fn in_v4_prefix(&self, ip: Ipv4Addr) -> bool {
        self.v4.is_some_and(|p| p.contains(&ip))
    }

    /// Whether `ip` lies in the configured IPv6 prefix.
    pub fn in_v6_prefix(&self, ip: Ipv6Addr) -> bool {
        self.v6.is_some_and(|p| p.contains(&ip))
    }

    /// One address of each configured family, marked as used.
    pub fn allocate(&mut self) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), Exhausted> {
        let v4 = match self.v4 {
            Some(_) => Some(self.allocate_v4()?),
            None => None,
        };
        let v6 = match self.v6 {
            Some(_) => match self.allocate_v6() {
                Ok(ip) => Some(ip),
                Err(e) => {
                    // Do not leak the IPv4 address taken above.
                    self.release(v4, None);
                    return Err(e);
                }
            },
            None => None,
        };
        Ok((v4, v6))
    }

    /// [`allocate`](Self::allocate) from a random place whatever the strategy: a
    /// retry after another replica, allocating sequentially from the same place,
    /// took the address (it would take the next ones too).
    pub fn allocate_scattered(
        &mut self,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), Exhausted> {
        let strategy = std::mem::replace(&mut self.strategy, Allocation::Random);
        let allocated = self.allocate();
        self.strategy = strategy;
        allocated
    }

    pub fn allocate_v4(&mut self) -> Result<Ipv4Addr, Exhausted> {
        let prefix = self
            .v4
            .ok_or_else(|| Exhausted("an unconfigured IPv4 prefix".into()))?;
        let network = u32::from(prefix.network());
        let broadcast = u32::from(prefix.broadcast());
        // Skip the network and broadcast addresses unless the prefix is a single host.
        let (first, last) = if broadcast - network >= 2 {
            (network + 1, broadcast - 1)
        } else {
            (network, broadcast)
        };
        let size = u64::from(last - first) + 1;
        let start = match self.strategy {
            Allocation::Sequential => self
                .last4
                .map_or(first, |l| if l >= last { first } else { l + 1 }),
            Allocation::Random => first + (random_u64() % size) as u32,
        };
        let mut candidate = start;
        for _ in 0..size {
            let ip = Ipv4Addr::from(candidate);
            if !self.used4.contains(&ip) && !reserved_v4(ip) {
                self.used4.insert(ip);
                self.last4 = Some(candidate);
                return Ok(ip);
            }
            candidate = if candidate >= last {
                first
            } else {
                candidate + 1
            };
        }
        Err(Exhausted(prefix.to_string()))
    }

    pub fn allocate_v6(&mut self) -> Result<Ipv6Addr, Exhausted> {
        let prefix = self
            .v6
            .ok_or_else(|| Exhausted("an unconfigured IPv6 prefix".into()))?;
        let network = u128::from(prefix.network());
        let last_addr = u128::from(prefix.broadcast());
        // The subnet-router anycast (all zeros) address is skipped.
        let first = if last_addr > network {
            network + 1
        } else {
            network
        };
        let span = last_addr - first;
        let start = match self.strategy {
            Allocation::Sequential => self
                .last6
                .map_or(first, |l| if l >= last_addr { first } else { l + 1 }),
            Allocation::Random => {
                let r = (u128::from(random_u64()) << 64) | u128::from(random_u64());
                first + if span == u128::MAX { r } else { r % (span + 1) }
            }
        };
        let mut candidate = start;
        // Bounded walk: IPv6 pools are vast, so a free address is found within the
        // number of nodes, but never loop forever on a tiny, full prefix.
        let limit = span.min(self.used6.len() as u128 + 2);
        for _ in 0..=limit {
            let ip = Ipv6Addr::from(candidate);
            if !self.used6.contains(&ip) && ip != SERVICE_V6 {
                self.used6.insert(ip);
                self.last6 = Some(candidate);
                return Ok(ip);
            }
            candidate = if candidate >= last_addr {
                first
            } else {
                candidate + 1
            };
        }
        Err(Exhausted(prefix.to_string()))
    }
}

fn random_u64() -> u64 {
    u64::from_le_bytes(crate::types::secret::random_bytes::<8>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(v4: &str, v6: &str, s: Allocation) -> IpAllocator {
        IpAllocator::new(Some(v4.parse().unwrap()), Some(v6.parse().unwrap()), s)
    }

    #[test]
    fn sequential_starts_after_network_address() {
        let mut a = alloc(
            "100.64.0.0/10",
            "fd7a:115c:a1e0::/48",
            Allocation::Sequential,
        );
        let (v4, v6) = a.allocate().unwrap();
        assert_eq!(v4.unwrap(), "100.64.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(
            v6.unwrap(),
            "fd7a:115c:a1e0::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            a.allocate().unwrap().0.unwrap(),
            "100.64.0.2".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn reserved_and_used_addresses_are_skipped() {
        let mut a = IpAllocator::new(
            Some("100.100.100.96/28".parse().unwrap()),
            None,
            Allocation::Sequential,
        );
        a.reserve(Some("100.100.100.97".parse().unwrap()), None);
        let got: Vec<Ipv4Addr> = (0..12).map(|_| a.allocate_v4().unwrap()).collect();
        assert!(!got.contains(&SERVICE_V4));
        assert!(!got.contains(&"100.100.100.97".parse().unwrap()));
        assert!(
            !got.contains(&"100.100.100.96".parse().unwrap()),
            "network address"
        );
        assert!(
            !got.contains(&"100.100.100.111".parse().unwrap()),
            "broadcast address"
        );
        assert_eq!(a.allocate_v4(), Err(Exhausted("100.100.100.96/28".into())));
    }

    #[test]
    fn random_never_repeats_and_exhausts_cleanly() {
        let mut a = IpAllocator::new(
            Some("10.1.0.0/27".parse().unwrap()),
            None,
            Allocation::Random,
        );
        let mut seen = HashSet::new();
        for _ in 0..30 {
            assert!(seen.insert(a.allocate_v4().unwrap()));
        }
        assert!(a.allocate_v4().is_err());
    }

    #[test]
    fn released_addresses_come_back() {
        let mut a = IpAllocator::new(
            Some("10.1.0.0/30".parse().unwrap()),
            None,
            Allocation::Sequential,
        );
        let x = a.allocate_v4().unwrap();
        let _y = a.allocate_v4().unwrap();
        assert!(a.allocate_v4().is_err());
        a.release(Some(x), None);
        assert_eq!(a.allocate_v4().unwrap(), x);
    }
}
