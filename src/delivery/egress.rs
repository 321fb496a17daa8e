//! Where webhook deliveries may go (SSRF protection).
//!
//! A Webhook's URL is written by a tenant, and the operator runs inside the cluster with
//! its network position: without a check, `http://169.254.169.254/...` or
//! `http://10.0.0.12:6443/` would let any namespace reach the cloud's metadata service or
//! cluster-internal services. So every destination address is checked *after* DNS
//! resolution (a public name can resolve to a private address) and the connection goes to
//! exactly the checked addresses (see [`super::sender`]): no window for DNS rebinding.
//!
//! Refused by default: loopback, private (RFC 1918), link-local, CGNAT (100.64.0.0/10),
//! unique-local IPv6, unspecified, multicast, broadcast, documentation, benchmarking and
//! reserved ranges, cloud metadata endpoints, and the IPv6 forms that embed an IPv4 address
//! (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
//! `2002::/16`), which are judged by the address they embed.
//!
//! The operator's allowlist (`--webhook-allow-cidrs`) opens CIDRs and host names for
//! internal receivers (and the loopback receivers of the tests). Cloud metadata addresses
//! stay refused even inside an allowlisted CIDR unless the allowlist names the exact
//! address: `0.0.0.0/0` must not hand out the node's cloud credentials.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is not a public destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockedRange {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    /// RFC 6598 shared address space, 100.64.0.0/10: carrier-grade NAT, and in many
    /// clusters the pod or service network.
    SharedAddressSpace,
    CloudMetadata,
    UniqueLocal,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    Reserved,
}

impl BlockedRange {
    pub fn describe(self) -> &'static str {
        match self {
            BlockedRange::Unspecified => "an unspecified address",
            BlockedRange::Loopback => "a loopback address",
            BlockedRange::Private => "a private address",
            BlockedRange::LinkLocal => "a link-local address",
            BlockedRange::SharedAddressSpace => "a shared (CGNAT) address",
            BlockedRange::CloudMetadata => "a cloud metadata endpoint",
            BlockedRange::UniqueLocal => "a unique-local IPv6 address",
            BlockedRange::Multicast => "a multicast address",
            BlockedRange::Broadcast => "the broadcast address",
            BlockedRange::Documentation => "a documentation address",
            BlockedRange::Benchmarking => "a benchmarking address",
            BlockedRange::Reserved => "a reserved address",
        }
    }
}

/// A destination the policy refuses. Its text is safe for status and events: it names
/// the address and the reason, nothing else.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Refused {
    pub addr: IpAddr,
    pub range: BlockedRange,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "destination {} is {}; refused (an operator can allow it with --webhook-allow-cidrs)",
            self.addr,
            self.range.describe()
        )
    }
}

/// Cloud metadata services: AWS/GCP/Azure/OpenStack/DigitalOcean (169.254.169.254),
/// AWS ECS task metadata (169.254.170.2), Alibaba (100.100.100.200), AWS over IPv6
/// (fd00:ec2::254).
const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// The range `addr` belongs to when it is not a public unicast address, else `None`.
pub fn classify(addr: IpAddr) -> Option<BlockedRange> {
    match addr {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<BlockedRange> {
    let o = ip.octets();
    let in_net = |net: [u8; 4], prefix: u32| {
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        u32::from(ip) & mask == u32::from_be_bytes(net) & mask
    };
    if METADATA_V4.contains(&ip) {
        return Some(BlockedRange::CloudMetadata);
    }
    let range = if in_net([0, 0, 0, 0], 8) {
        // 0.0.0.0 connects to the local host on Linux; the rest of 0/8 is "this network".
        if ip.is_unspecified() {
            BlockedRange::Unspecified
        } else {
            BlockedRange::Reserved
        }
    } else if in_net([127, 0, 0, 0], 8) {
        BlockedRange::Loopback
    } else if in_net([10, 0, 0, 0], 8)
        || in_net([172, 16, 0, 0], 12)
        || in_net([192, 168, 0, 0], 16)
    {
        BlockedRange::Private
    } else if in_net([169, 254, 0, 0], 16) {
        BlockedRange::LinkLocal
    } else if in_net([100, 64, 0, 0], 10) {
        BlockedRange::SharedAddressSpace
    } else if in_net([192, 0, 2, 0], 24)
        || in_net([198, 51, 100, 0], 24)
        || in_net([203, 0, 113, 0], 24)
    {
        BlockedRange::Documentation
    } else if in_net([198, 18, 0, 0], 15) {
        BlockedRange::Benchmarking
    } else if ip.is_broadcast() {
        BlockedRange::Broadcast
    } else if in_net([224, 0, 0, 0], 4) {
        BlockedRange::Multicast
    } else if in_net([240, 0, 0, 0], 4)
        || in_net([192, 0, 0, 0], 24)
        || o[0] == 192 && o[1] == 88 && o[2] == 99
    {
        // Class E, IETF protocol assignments (192.0.0.0/24), deprecated 6to4 relay anycast.
        BlockedRange::Reserved
    } else {
        return None;
    };
    Some(range)
}

fn classify_v6(ip: Ipv6Addr) -> Option<BlockedRange> {
    if METADATA_V6.contains(&ip) {
        return Some(BlockedRange::CloudMetadata);
    }
    if let Some(v4) = embedded_v4(ip) {
        // Judge the IPv4 address the connection really goes to; an embedded public
        // address through a translator is still refused (it only reaches an IPv4 host
        // through infrastructure we do not control).
        return Some(classify_v4(v4).unwrap_or(BlockedRange::Reserved));
    }
    let s = ip.segments();
    let range = if ip.is_unspecified() {
        BlockedRange::Unspecified
    } else if ip.is_loopback() {
        BlockedRange::Loopback
    } else if s[0] & 0xffc0 == 0xfe80 {
        BlockedRange::LinkLocal
    } else if s[0] & 0xffc0 == 0xfec0 {
        // Deprecated site-local: private by intent.
        BlockedRange::Private
    } else if s[0] & 0xfe00 == 0xfc00 {
        BlockedRange::UniqueLocal
    } else if s[0] & 0xff00 == 0xff00 {
        BlockedRange::Multicast
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || s[0] & 0xfff0 == 0x3ff0 {
        // 2001:db8::/32 and 3fff::/20 (RFC 9637).
        BlockedRange::Documentation
    } else if s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0 {
        BlockedRange::Benchmarking
    } else if (s[0] == 0x2001 && s[1] < 0x0200) || s[0] == 0x0100 && s[1..4] == [0, 0, 0] {
        // IETF protocol assignments incl. Teredo (2001::/23) and the discard prefix 100::/64.
        BlockedRange::Reserved
    } else if s[0] & 0xe000 != 0x2000 {
        // Only 2000::/3 is allocated as global unicast.
        BlockedRange::Reserved
    } else {
        return None;
    };
    Some(range)
}

/// The IPv4 address an IPv6 address stands for, if it is one of the forms that embed one:
/// IPv4-mapped, IPv4-compatible (deprecated), NAT64 well-known prefix, 6to4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[0..5] == [0, 0, 0, 0, 0]
        && (s[5] == 0xffff || (s[5] == 0 && !ip.is_loopback() && !ip.is_unspecified()))
    {
        return Some(tail);
    }
    if s[0..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// The operator's egress policy: public destinations, plus what the allowlist opens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    cidrs: Vec<IpNet>,
    /// Lowercase host names; `*.example.internal` allows every name below that domain.
    hosts: Vec<String>,
}

impl EgressPolicy {
    /// Parses allowlist entries: CIDRs (`10.0.0.0/8`, `fd00::/8`), single addresses
    /// (`127.0.0.1`), host names (`receiver.tools.svc`) or wildcard domains
    /// (`*.svc.cluster.local`).
    pub fn from_allowlist<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut policy = EgressPolicy::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            if let Ok(net) = entry.parse::<IpNet>() {
                policy.cidrs.push(net.trunc());
            } else if let Ok(addr) = entry.parse::<IpAddr>() {
                policy.cidrs.push(IpNet::from(addr));
            } else if is_host_pattern(entry) {
                policy.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "{entry:?} is neither a CIDR (10.0.0.0/8), an address nor a host name (hooks.internal, *.svc.cluster.local)"
                ));
            }
        }
        Ok(policy)
    }

    /// Whether the allowlist names `host` (as written in the URL, without port).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(domain) => {
                    host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}"))
                }
                None => *pattern == host,
            })
    }

    /// Whether a connection to `addr` may be made for a URL whose host is `host`.
    pub fn check(&self, host: &str, addr: IpAddr) -> Result<(), Refused> {
        let addr = canonical(addr);
        let Some(range) = classify(addr) else {
            return Ok(());
        };
        let exact = self
            .cidrs
            .iter()
            .any(|net| net.contains(&addr) && net.prefix_len() == net.max_prefix_len());
        // A host-name entry opens what an internal receiver's name resolves to (the
        // cluster's private, CGNAT and unique-local ranges), never loopback, link-local,
        // metadata or the other special ranges: a name is only as trustworthy as whoever
        // controls its DNS. Those need the address or CIDR itself in the allowlist.
        let by_name = matches!(
            range,
            BlockedRange::Private | BlockedRange::SharedAddressSpace | BlockedRange::UniqueLocal
        ) && self.allows_host(host);
        let allowed = if range == BlockedRange::CloudMetadata {
            exact
        } else {
            exact || by_name || self.cidrs.iter().any(|net| net.contains(&addr))
        };
        if allowed {
            Ok(())
        } else {
            Err(Refused { addr, range })
        }
    }

    /// Checks every resolved address; one refused address refuses the destination (a
    /// name that resolves to both a public and a private address is an attack pattern).
    pub fn check_all(&self, host: &str, addrs: &[IpAddr]) -> Result<(), Refused> {
        addrs.iter().try_for_each(|addr| self.check(host, *addr))
    }
}

/// Whether `addr` is on the public internet: in none of the ranges refused by default.
/// Only a public receiver's answer is stored in a delivery's status: an allowlisted
/// internal one could otherwise be read through it by whoever may read deliveries.
pub fn is_public(addr: IpAddr) -> bool {
    classify(canonical(addr)).is_none()
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they are, so `::ffff:127.0.0.1` matches
/// an allowlisted `127.0.0.0/8`.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn is_host_pattern(entry: &str) -> bool {
    let name = entry.strip_prefix("*.").unwrap_or(entry);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use BlockedRange::*;

    #[test]
    fn classification_table() {
        let table: &[(&str, Option<BlockedRange>)] = &[
            // Public destinations.
            ("93.184.215.14", None),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001:82b::200e", None),
            // IPv4 special ranges.
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Reserved)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("169.254.0.1", Some(LinkLocal)),
            ("169.254.169.254", Some(CloudMetadata)),
            ("169.254.170.2", Some(CloudMetadata)),
            ("100.100.100.200", Some(CloudMetadata)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("192.0.2.10", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.200", Some(Documentation)),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("240.0.0.1", Some(Reserved)),
            ("192.0.0.8", Some(Reserved)),
            // IPv6 special ranges.
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(Private)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(CloudMetadata)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("2001:2::1", Some(Benchmarking)),
            ("2001:0:4136:e378::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("4000::1", Some(Reserved)),
            // IPv6 forms that embed an IPv4 address are judged by that address.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:7f00:1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            ("::ffff:100.64.1.1", Some(SharedAddressSpace)),
            ("::ffff:8.8.8.8", Some(Reserved)),
            ("::127.0.0.1", Some(Loopback)),
            ("::10.0.0.1", Some(Private)),
            ("64:ff9b::a9fe:a9fe", Some(CloudMetadata)),
            ("64:ff9b::192.168.0.1", Some(Private)),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:a00:1::1", Some(Private)),
        ];
        for (text, expected) in table {
            let addr: IpAddr = text.parse().unwrap();
            assert_eq!(classify(addr), *expected, "{text}");
        }
    }

    #[test]
    fn default_policy_refuses_internal_destinations() {
        let policy = EgressPolicy::default();
        assert!(
            policy
                .check("hooks.example.com", "93.184.215.14".parse().unwrap())
                .is_ok()
        );
        let refused = policy
            .check("evil.example.com", "169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert_eq!(refused.range, CloudMetadata);
        assert_eq!(
            refused.to_string(),
            "destination 169.254.169.254 is a cloud metadata endpoint; refused (an operator can allow it with --webhook-allow-cidrs)"
        );
        // A name resolving to one public and one private address is refused as a whole.
        let mixed = [
            "93.184.215.14".parse().unwrap(),
            "10.0.0.5".parse().unwrap(),
        ];
        assert_eq!(
            policy
                .check_all("rebind.example.com", &mixed)
                .unwrap_err()
                .range,
            Private
        );
    }

    #[test]
    fn allowlisted_cidrs_open_their_addresses_including_mapped_forms() {
        let policy = EgressPolicy::from_allowlist(&["127.0.0.0/8", "::1", "10.20.0.0/16"]).unwrap();
        assert!(
            policy
                .check("localhost", "127.0.0.1".parse().unwrap())
                .is_ok()
        );
        assert!(
            policy
                .check("localhost", "::ffff:127.0.0.1".parse().unwrap())
                .is_ok()
        );
        assert!(policy.check("localhost", "::1".parse().unwrap()).is_ok());
        assert!(policy.check("svc", "10.20.3.4".parse().unwrap()).is_ok());
        assert!(policy.check("svc", "10.21.3.4".parse().unwrap()).is_err());
        assert!(policy.check("svc", "192.168.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn metadata_needs_the_exact_address_in_the_allowlist() {
        let broad = EgressPolicy::from_allowlist(&["0.0.0.0/0", "::/0", "169.254.0.0/16"]).unwrap();
        assert!(broad.check("x", "10.0.0.1".parse().unwrap()).is_ok());
        assert!(broad.check("x", "169.254.1.1".parse().unwrap()).is_ok());
        assert_eq!(
            broad
                .check("x", "169.254.169.254".parse().unwrap())
                .unwrap_err()
                .range,
            CloudMetadata
        );
        assert_eq!(
            broad
                .check("x", "fd00:ec2::254".parse().unwrap())
                .unwrap_err()
                .range,
            CloudMetadata
        );
        let hosts = EgressPolicy::from_allowlist(&["metadata.internal"]).unwrap();
        assert!(
            hosts
                .check("metadata.internal", "169.254.169.254".parse().unwrap())
                .is_err()
        );
        let exact = EgressPolicy::from_allowlist(&["169.254.169.254"]).unwrap();
        assert!(exact.check("x", "169.254.169.254".parse().unwrap()).is_ok());
    }

    #[test]
    fn allowlisted_hosts_and_wildcard_domains() {
        let policy =
            EgressPolicy::from_allowlist(&["hooks.tools.svc", "*.svc.cluster.local"]).unwrap();
        let private: IpAddr = "10.96.0.10".parse().unwrap();
        assert!(policy.check("hooks.tools.svc", private).is_ok());
        assert!(policy.check("HOOKS.tools.svc.", private).is_ok());
        assert!(policy.check("recv.ns.svc.cluster.local", private).is_ok());
        assert!(policy.check("svc.cluster.local", private).is_err());
        assert!(policy.check("evilsvc.cluster.local", private).is_err());
        assert!(policy.check("other.tools.svc", private).is_err());
        // A name opens the private ranges its receiver lives in, not loopback or the
        // link-local range, whatever the name resolves to.
        for special in ["127.0.0.1", "::1", "169.254.10.10", "0.0.0.0"] {
            let addr: IpAddr = special.parse().unwrap();
            assert!(policy.check("hooks.tools.svc", addr).is_err(), "{special}");
        }
        assert!(
            policy
                .check("hooks.tools.svc", "100.64.3.4".parse().unwrap())
                .is_ok()
        );
        assert!(
            policy
                .check("hooks.tools.svc", "fd12::1".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn only_public_addresses_are_public() {
        for public in ["8.8.8.8", "2001:4860:4860::8888"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for internal in [
            "10.0.0.1",
            "127.0.0.1",
            "::ffff:192.168.1.1",
            "169.254.169.254",
            "fd00::1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
    }

    #[test]
    fn allowlist_entries_are_parsed_strictly() {
        assert!(EgressPolicy::from_allowlist(&["10.0.0.0/33"]).is_err());
        assert!(EgressPolicy::from_allowlist(&["http://x"]).is_err());
        assert!(EgressPolicy::from_allowlist(&["a..b"]).is_err());
        assert_eq!(
            EgressPolicy::from_allowlist(&["", " "]).unwrap(),
            EgressPolicy::default()
        );
        // A CIDR with host bits set is normalised, not refused.
        let policy = EgressPolicy::from_allowlist(&["10.1.2.3/8"]).unwrap();
        assert!(policy.check("x", "10.200.0.1".parse().unwrap()).is_ok());
    }
}
