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
}
