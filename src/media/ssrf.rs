//! Which addresses the gateway's image fetch may connect to (pure, unit-tested).
//!
//! Refused unless the operator allows them (`media.allow_ranges`, `media.allow_hosts`): every
//! IPv4 special-purpose block that is not global (RFC 6890 / IANA registry: "this network",
//! private 10/8, 172.16/12, 192.168/16, CGNAT 100.64/10, loopback 127/8, link-local 169.254/16
//! with the cloud metadata address, the IETF and documentation blocks, benchmarking 198.18/15,
//! multicast, reserved 240/4, broadcast) and IPv6 unspecified, loopback, unique-local fc00::/7,
//! link-local fe80::/10, site-local fec0::/10, multicast, documentation, discard, the IETF block
//! 2001::/23 (Teredo among it). IPv6 addresses that carry an IPv4 address (IPv4-mapped
//! ::ffff:0:0/96, NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by the
//! IPv4 address inside, so `::ffff:127.0.0.1` is loopback; IPv4-compatible ::/96 is refused whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address block, `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    /// Parses `addr/len` (a bare address is a /32 or /128).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("'{s}': prefix length must be 0..={max}"))?,
        };
        Ok(Self { net, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(a)) << 96,
                self.len,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(u128::from(n), u128::from(a), self.len),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    };
    a & mask == b & mask
}

/// An IPv4-mapped IPv6 address is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn v4_in(ip: Ipv4Addr, net: [u8; 4], len: u8) -> bool {
    prefix_eq(
        u128::from(u32::from(ip)) << 96,
        u128::from(u32::from(Ipv4Addr::from(net))) << 96,
        len,
    )
}

/// Why an IPv4 address is not a public destination, or `None` when it is.
fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    const BLOCKS: [([u8; 4], u8, &str); 17] = [
        ([0, 0, 0, 0], 8, "\"this network\" (0.0.0.0/8)"),
        ([10, 0, 0, 0], 8, "private (10.0.0.0/8)"),
        (
            [100, 64, 0, 0],
            10,
            "shared carrier-grade NAT (100.64.0.0/10)",
        ),
        ([127, 0, 0, 0], 8, "loopback (127.0.0.0/8)"),
        (
            [169, 254, 0, 0],
            16,
            "link-local, cloud metadata (169.254.0.0/16)",
        ),
        ([172, 16, 0, 0], 12, "private (172.16.0.0/12)"),
        (
            [192, 0, 0, 0],
            24,
            "IETF protocol assignments (192.0.0.0/24)",
        ),
        ([192, 0, 2, 0], 24, "documentation (192.0.2.0/24)"),
        ([192, 31, 196, 0], 24, "AS112 (192.31.196.0/24)"),
        ([192, 52, 193, 0], 24, "AMT (192.52.193.0/24)"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast (192.88.99.0/24)"),
        ([192, 168, 0, 0], 16, "private (192.168.0.0/16)"),
        ([198, 18, 0, 0], 15, "benchmarking (198.18.0.0/15)"),
        ([198, 51, 100, 0], 24, "documentation (198.51.100.0/24)"),
        ([203, 0, 113, 0], 24, "documentation (203.0.113.0/24)"),
        ([224, 0, 0, 0], 4, "multicast (224.0.0.0/4)"),
        ([240, 0, 0, 0], 4, "reserved or broadcast (240.0.0.0/4)"),
    ];
    BLOCKS
        .iter()
        .find(|(net, len, _)| v4_in(ip, *net, *len))
        .map(|(_, _, why)| *why)
}

/// The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4), if any.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped).
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // 64:ff9b::a.b.c.d, the well-known NAT64 prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 2002:aabb:ccdd::/48, 6to4.
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// Why an IPv6 address is not a public destination, or `None` when it is.
fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return v4_reason(v4);
    }
    let n = u128::from(ip);
    let blocks: [(u128, u8, &str); 11] = [
        (0, 128, "unspecified (::)"),
        (1, 128, "loopback (::1)"),
        (0, 96, "IPv4-compatible (::/96, deprecated)"),
        (
            0x0064_ff9b_0001 << 80,
            48,
            "local-use NAT64 (64:ff9b:1::/48)",
        ),
        (0x0100 << 112, 64, "discard-only (100::/64)"),
        (0x2001 << 112, 23, "IETF protocol assignments (2001::/23)"),
        (0x2001_0db8 << 96, 32, "documentation (2001:db8::/32)"),
        (0xfc00 << 112, 7, "unique-local (fc00::/7)"),
        (0xfe80 << 112, 10, "link-local (fe80::/10)"),
        (0xfec0 << 112, 10, "site-local (fec0::/10)"),
        (0xff00 << 112, 8, "multicast (ff00::/8)"),
    ];
    blocks
        .iter()
        .find(|(net, len, _)| prefix_eq(n, *net, *len))
        .map(|(_, _, why)| *why)
}

/// Why `ip` is not a public destination, or `None` when it is.
pub fn reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

/// The operator's exceptions to the refusals above.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Blocks allowed although not public (an internal image store, a test server).
    pub allow_ranges: Vec<Cidr>,
    /// Host names (lower case) whose addresses are all allowed.
    pub allow_hosts: Vec<String>,
}

impl Policy {
    /// `Ok` when `host` may be reached at `ip`; else why not.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), &'static str> {
        if self
            .allow_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
            || self.allow_ranges.iter().any(|c| c.contains(ip))
        {
            return Ok(());
        }
        match reason(ip) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_loopback_link_local_and_metadata_are_refused() {
        for bad in [
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.170",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
            "64:ff9b:1::1",
        ] {
            assert!(reason(ip(bad)).is_some(), "{bad} must be refused");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_judged_by_the_ipv4_inside() {
        for bad in [
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:192.168.0.1",
            "::127.0.0.1",
            "::10.1.2.3",
            "::8.8.8.8",
            "::258",
            "64:ff9b::169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
        ] {
            assert!(reason(ip(bad)).is_some(), "{bad} must be refused");
        }
        for good in ["::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"] {
            assert_eq!(reason(ip(good)), None, "{good} is public");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "142.250.74.78",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
        ] {
            assert_eq!(reason(ip(good)), None, "{good} is public");
        }
    }

    #[test]
    fn cidr_parsing_and_membership() {
        let c = Cidr::parse("127.0.0.1/32").unwrap();
        assert!(c.contains(ip("127.0.0.1")));
        assert!(c.contains(ip("::ffff:127.0.0.1")), "mapped forms match too");
        assert!(!c.contains(ip("127.0.0.2")));
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")) && !c.contains(ip("11.0.0.0")));
        let c = Cidr::parse("fd00::/8").unwrap();
        assert!(c.contains(ip("fd12::1")) && !c.contains(ip("fe80::1")));
        assert_eq!(Cidr::parse("::1").unwrap(), Cidr::parse("::1/128").unwrap());
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "::/129", "example.com", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_policy_allows_only_what_the_operator_names() {
        let p = Policy::default();
        assert!(p.check("localhost", ip("127.0.0.1")).is_err());
        assert!(p.check("example.com", ip("93.184.216.34")).is_ok());
        let p = Policy {
            allow_ranges: vec![Cidr::parse("127.0.0.1/32").unwrap()],
            allow_hosts: vec!["images.internal".into()],
        };
        assert!(p.check("x", ip("127.0.0.1")).is_ok());
        assert!(p.check("x", ip("127.0.0.2")).is_err());
        assert!(p.check("x", ip("169.254.169.254")).is_err());
        assert!(p.check("Images.Internal", ip("10.9.8.7")).is_ok());
    }
}
