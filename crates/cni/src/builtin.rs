//! The built-in default network: what a pod without `hostNetwork` gets when the configuration
//! directory holds no network configuration (a configuration there always wins).
//!
//! A bridge (`staticlet0`) with the node as gateway, host-local addresses from one subnet
//! (`10.87.0.0/16` unless `--pod-cidr` says otherwise: not podman's `10.88.0.0/16` nor its
//! `10.89.x` networks, nor CRI-O's `10.85.0.0/16`), masquerading for traffic leaving the node,
//! and portmap for `hostPort`s: run by the standard CNI plugins (Debian's
//! `containernetworking-plugins`).
//!
//! A subnet that overlaps a route of the host (other than the default route and the bridge's
//! own) would make part of the network unreachable: [`colliding_route`] finds it.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::json;

use crate::config::NetworkConfig;

/// The network's name (the result cache's and host-local's directory).
pub const NAME: &str = "staticlet";
/// The bridge's name.
pub const BRIDGE: &str = "staticlet0";
/// The subnet when none is configured.
pub const DEFAULT_SUBNET: &str = "10.87.0.0/16";

/// An IPv4 subnet, `a.b.c.d/n` with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/n`: a network address (no host bits), a prefix of 8 to 28 (room for
    /// pods, and not a whole /0-/7 of the address space).
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/n)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("{s:?}: {p:?} is not a prefix length"))?;
        if !(8..=28).contains(&prefix) {
            return Err(format!(
                "{s:?}: a prefix of /{prefix} (pods need between /8 and /28)"
            ));
        }
        let subnet = Subnet { addr, prefix };
        if subnet.network() != addr {
            return Err(format!(
                "{s:?} has host bits set (the network is {}/{prefix})",
                subnet.network()
            ));
        }
        Ok(subnet)
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & Self::mask(self.prefix))
    }

    /// Whether the two address ranges share an address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        let m = Self::mask(p);
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The built-in network on `subnet` (module doc).
pub fn network(subnet: &Subnet) -> NetworkConfig {
    let list = json!({
        "cniVersion": "1.0.0",
        "name": NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    NetworkConfig::from_conflist_bytes(list.to_string().as_bytes(), Path::new("<built-in>"))
        .expect("the built-in network configuration is valid")
}

/// One IPv4 route of the host (`/proc/net/route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub iface: String,
    pub dest: Subnet,
}

/// The routes of `/proc/net/route`'s text (addresses are the kernel's raw network-order words
/// printed in hex).
pub fn parse_routes(text: &str) -> Vec<Route> {
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(|v| v.to_ne_bytes());
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (iface, dest, mask) = (f.first()?, word(f.get(1)?)?, word(f.get(7)?)?);
            Some(Route {
                iface: iface.to_string(),
                dest: Subnet {
                    addr: Ipv4Addr::from(dest),
                    prefix: u32::from_be_bytes(mask).count_ones() as u8,
                },
            })
        })
        .collect()
}

/// The first route of `routes` whose destination overlaps `subnet`, leaving out default
/// routes and the bridge's own.
pub fn colliding_route<'a>(subnet: &Subnet, routes: &'a [Route]) -> Option<&'a Route> {
    routes
        .iter()
        .find(|r| r.dest.prefix > 0 && r.iface != BRIDGE && r.dest.overlaps(subnet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_with_clear_errors() {
        assert_eq!(
            Subnet::parse("10.87.0.0/16").unwrap(),
            Subnet {
                addr: Ipv4Addr::new(10, 87, 0, 0),
                prefix: 16
            }
        );
        for (bad, why) in [
            ("10.87.0.0", "not a CIDR"),
            ("10.87.0/16", "not an IPv4 address"),
            ("10.87.0.0/x", "not a prefix length"),
            ("10.0.0.0/4", "between /8 and /28"),
            ("10.87.0.0/30", "between /8 and /28"),
            (
                "10.87.1.0/16",
                "host bits set (the network is 10.87.0.0/16)",
            ),
        ] {
            let e = Subnet::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        let s = |t| Subnet::parse(t).unwrap();
        let cases = [
            ("10.87.0.0/16", "10.87.4.0/24", true),
            ("10.87.4.0/24", "10.87.0.0/16", true),
            ("10.87.0.0/16", "10.88.0.0/16", false),
            ("10.0.0.0/8", "10.87.0.0/16", true),
            ("192.168.0.0/16", "10.87.0.0/16", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(s(a).overlaps(&s(b)), want, "{a} {b}");
        }
    }

    #[test]
    fn routes_from_proc_and_collisions() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            staticlet0\t0000570A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            wg0\t0000570A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = parse_routes(text);
        assert_eq!(routes.len(), 4);
        assert_eq!(routes[1].dest, Subnet::parse("10.0.0.0/16").unwrap());
        assert_eq!(routes[3].dest, Subnet::parse("10.87.0.0/24").unwrap());
        let ours = Subnet::parse("10.87.0.0/16").unwrap();
        // The default route and the bridge's own route never collide; wg0's /24 does.
        assert_eq!(colliding_route(&ours, &routes).unwrap().iface, "wg0");
        assert_eq!(colliding_route(&ours, &routes[..3]), None);
        let other = Subnet::parse("10.0.0.0/16").unwrap();
        assert_eq!(colliding_route(&other, &routes).unwrap().iface, "eth0");
    }

    #[test]
    fn the_built_in_network_is_a_bridge_with_portmap() {
        let n = network(&Subnet::parse("10.87.0.0/16").unwrap());
        assert_eq!(n.name, NAME);
        let types: Vec<&str> = n.plugins.iter().map(|p| p.plugin_type.as_str()).collect();
        assert_eq!(types, ["bridge", "portmap"]);
        assert_eq!(n.plugins[0].raw["bridge"], BRIDGE);
        assert_eq!(
            n.plugins[0].raw["ipam"]["ranges"][0][0]["subnet"],
            "10.87.0.0/16"
        );
        assert!(n.plugins[1].has_capability("portMappings"));
    }
}
