//! An authoritative DNS server for the tailnet's MagicDNS zone (`dns.base_domain`),
//! so that `tailscale cert` works without a cloud DNS provider.
//!
//! A node asks the control server to publish `_acme-challenge.<node>.<base_domain>`
//! TXT values ([`Challenges`]); the ACME CA then looks them up here. For the CA to
//! find this server, the admin delegates the zone to headway in the parent zone:
//!
//! ```text
//! ts.example.com.  NS  headway.example.com.   ; base_domain → headway's host
//! ```
//!
//! The name server should sit outside the zone it serves (no glue is given).
//! headway answers only for that zone: authoritatively for the apex (SOA, NS) and
//! every name below it, REFUSED for anything else, and it never recurses.
//!
//! [`answer`] turns one query into one response and does no IO; [`serve`] runs it
//! on a UDP socket and a TCP listener. Knows DNS, not nodes or the database.

mod answer;
mod challenges;
mod listener;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use answer::answer;
pub use challenges::{CHALLENGE_TTL, ChallengeError, Challenges, MAX_NAMES, MAX_VALUES_PER_NAME};
pub use listener::serve;

/// The zone headway is authoritative for.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The zone's apex, `dns.base_domain`, e.g. `ts.example.com`.
    pub apex: String,
    /// The host name the parent zone's NS record names, e.g. `headway.example.com`;
    /// the apex's NS record and the SOA's primary name.
    pub nameserver: String,
    /// The ACME DNS-01 values published below the apex.
    pub challenges: Arc<Challenges>,
}

/// How a query arrived, which bounds the size of its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}
