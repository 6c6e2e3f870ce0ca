//! The embedded relay's region in the DERP map: where clients reach it (the host
//! and port of `server_url`), how they verify its certificate, and its STUN port.

use crate::config::DerpServer;
use crate::tailcfg::{DERPNode, DERPRegion};
use std::net::IpAddr;

/// Where the embedded relay answers, as the composition root found it at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `server_url`'s host: a DNS name, or an IP address without brackets.
    pub host: String,
    /// `server_url`'s port (443 for `https://`, 80 for `http://` without one).
    pub port: u16,
    /// `sha256-raw:<hex>` when the relay presents its self-signed certificate.
    pub pin: Option<String>,
    /// The bound STUN port; `None` when STUN is not running.
    pub stun_port: Option<u16>,
}

/// The region clients get for the embedded relay: one node, named after the region.
pub fn region(config: &DerpServer, at: &Endpoint) -> DERPRegion {
    let literal = at.host.parse::<IpAddr>().ok();
    let ipv4 = config
        .ipv4
        .map(|ip| ip.to_string())
        .or_else(|| literal.filter(IpAddr::is_ipv4).map(|ip| ip.to_string()))
        .unwrap_or_default();
    let ipv6 = config
        .ipv6
        .map(|ip| ip.to_string())
        .or_else(|| literal.filter(IpAddr::is_ipv6).map(|ip| ip.to_string()))
        .unwrap_or_default();
    let region_id = u32::try_from(config.region_id).unwrap_or_default();
    DERPRegion {
        region_id,
        region_code: config.region_code.clone(),
        region_name: config.region_name.clone(),
        nodes: vec![DERPNode {
            name: region_id.to_string(),
            region_id,
            host_name: at.host.clone(),
            cert_name: at.pin.clone().unwrap_or_default(),
            ipv4,
            ipv6,
            stun_port: at.stun_port.map_or(-1, i32::from),
            derp_port: at.port,
            ..DERPNode::default()
        }],
        ..DERPRegion::default()
    }
}

/// Why another replica's relay region cannot sit beside this replica's `own` in
/// one DERP map, if it cannot: the same region id (one would hide the other), or
/// the same address (a client could not tell which relay it reaches).
pub fn clash(own: &DERPRegion, other: &DERPRegion) -> Option<String> {
    if own.region_id == other.region_id {
        return Some(format!(
            "its relay is region {} like this replica's: give each replica its own \
             derp.server.region_id (and region_code)",
            own.region_id
        ));
    }
    let address = |r: &DERPRegion| {
        r.nodes.first().map(|n| {
            (
                n.host_name.clone(),
                n.ipv4.clone(),
                n.ipv6.clone(),
                n.derp_port,
            )
        })
    };
    match (address(own), address(other)) {
        (Some(a), Some(b)) if a == b => Some(format!(
            "its relay is reached at the same address as this replica's ({}:{}): behind a \
             load balancer, set derp.server.ipv4 (and ipv6) to each replica's own address, \
             where clients reach it directly at port {}",
            a.0, a.3, a.3
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DerpServer {
        crate::config::Config::default().derp.server
    }

    #[test]
    fn an_ip_only_server_pins_its_certificate_and_skips_dns() {
        let at = Endpoint {
            host: "203.0.113.5".into(),
            port: 8080,
            pin: Some("sha256-raw:ab".into()),
            stun_port: Some(3478),
        };
        let region = region(&config(), &at);
        assert_eq!(region.region_id, 999);
        assert_eq!(region.region_code, "headway");
        let node = &region.nodes[0];
        assert_eq!(node.name, "999");
        assert_eq!(node.host_name, "203.0.113.5");
        assert_eq!(node.ipv4, "203.0.113.5");
        assert_eq!(node.ipv6, "");
        assert_eq!(node.cert_name, "sha256-raw:ab");
        assert_eq!((node.derp_port, node.stun_port), (8080, 3478));
        assert!(!node.insecure_for_tests);
    }

    #[test]
    fn configured_addresses_win_and_no_stun_is_minus_one() {
        let mut config = config();
        config.ipv4 = Some("198.51.100.9".parse().unwrap());
        let at = Endpoint {
            host: "hs.example.com".into(),
            port: 443,
            pin: None,
            stun_port: None,
        };
        let node = region(&config, &at).nodes.remove(0);
        assert_eq!(node.ipv4, "198.51.100.9");
        assert_eq!(node.cert_name, "");
        assert_eq!(node.stun_port, -1);
    }

    #[test]
    fn replicas_clash_on_one_region_id_or_one_address_and_not_otherwise() {
        let at = |host: &str| Endpoint {
            host: host.into(),
            port: 443,
            pin: None,
            stun_port: None,
        };
        let with = |id: i32, ipv4: Option<&str>| {
            let mut config = config();
            config.region_id = id;
            config.ipv4 = ipv4.map(|ip| ip.parse().unwrap());
            config
        };
        let own = region(&with(900, Some("192.0.2.1")), &at("hw.example.com"));
        let same_id = region(&with(900, Some("192.0.2.2")), &at("hw.example.com"));
        assert!(
            clash(&own, &same_id)
                .unwrap()
                .contains("derp.server.region_id")
        );
        // Behind one balancer, with no address of their own: the same place twice.
        let behind = region(&with(901, None), &at("hw.example.com"));
        let own_behind = region(&with(900, None), &at("hw.example.com"));
        let why = clash(&own_behind, &behind).unwrap();
        assert!(
            why.contains("derp.server.ipv4") && why.contains("hw.example.com:443"),
            "{why}"
        );
        // Each with its own address: both belong in the map.
        let apart = region(&with(901, Some("192.0.2.2")), &at("hw.example.com"));
        assert_eq!(clash(&own, &apart), None);
    }
}
