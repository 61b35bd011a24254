//! Which IP addresses an outbound fetch may connect to.
//!
//! The classifier is a pure function so it can be tested exhaustively. IPv4 uses a
//! deny-list of every special-purpose range (RFC 6890 and successors). IPv6 uses an
//! allow-list: only global unicast (`2000::/3`) minus its special-purpose blocks, plus
//! the IPv6 forms that embed an IPv4 address (mapped `::ffff:0:0/96`, NAT64
//! `64:ff9b::/96`), which are judged by the embedded IPv4 address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not a valid destination for an outbound fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForbiddenRange {
    /// `0.0.0.0` or `::`.
    Unspecified,
    /// `0.0.0.0/8` ("this network") other than the unspecified address.
    ThisNetwork,
    /// `127.0.0.0/8` or `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`.
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT.
    SharedAddressSpace,
    /// `169.254.0.0/16` (including cloud metadata `169.254.169.254`) or `fe80::/10`.
    LinkLocal,
    /// `192.0.0.0/24` or `2001::/23`.
    ProtocolAssignments,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15`, network benchmarking.
    Benchmarking,
    /// `224.0.0.0/4` or `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `fc00::/7`, IPv6 unique local addresses.
    UniqueLocal,
    /// Anything else that is not globally routable unicast: `240.0.0.0/4`,
    /// `192.88.99.0/24`, IPv4-compatible IPv6, 6to4, local-use NAT64, site-local,
    /// discard-only and unassigned IPv6 space.
    Reserved,
}

impl fmt::Display for ForbiddenRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ForbiddenRange::Unspecified => "unspecified address",
            ForbiddenRange::ThisNetwork => "this-network range",
            ForbiddenRange::Loopback => "loopback address",
            ForbiddenRange::Private => "private network",
            ForbiddenRange::SharedAddressSpace => "carrier-grade nat range",
            ForbiddenRange::LinkLocal => "link-local address",
            ForbiddenRange::ProtocolAssignments => "protocol assignment range",
            ForbiddenRange::Documentation => "documentation range",
            ForbiddenRange::Benchmarking => "benchmarking range",
            ForbiddenRange::Multicast => "multicast address",
            ForbiddenRange::Broadcast => "broadcast address",
            ForbiddenRange::UniqueLocal => "unique local address",
            ForbiddenRange::Reserved => "reserved range",
        };
        f.write_str(text)
    }
}

/// Returns the range that makes `ip` unfit as a fetch destination, or `None` when it is
/// a globally routable unicast address.
pub fn forbidden_range(ip: IpAddr) -> Option<ForbiddenRange> {
    match ip {
        IpAddr::V4(v4) => forbidden_range_v4(v4),
        IpAddr::V6(v6) => forbidden_range_v6(v6),
    }
}

/// Checks `ip` as a fetch destination. With `allow_loopback` (the test-only switch),
/// loopback addresses, and only those, are let through.
pub fn check_address(ip: IpAddr, allow_loopback: bool) -> Result<(), ForbiddenRange> {
    match forbidden_range(ip) {
        None => Ok(()),
        Some(ForbiddenRange::Loopback) if allow_loopback => Ok(()),
        Some(range) => Err(range),
    }
}

fn in_v4_net(ip: Ipv4Addr, network: [u8; 4], prefix_len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix_len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(network)) & mask
}

fn forbidden_range_v4(ip: Ipv4Addr) -> Option<ForbiddenRange> {
    // Ordered most specific first where ranges nest (broadcast inside 240/4,
    // unspecified inside 0/8).
    const TABLE: &[([u8; 4], u32, ForbiddenRange)] = &[
        ([0, 0, 0, 0], 32, ForbiddenRange::Unspecified),
        ([255, 255, 255, 255], 32, ForbiddenRange::Broadcast),
        ([0, 0, 0, 0], 8, ForbiddenRange::ThisNetwork),
        ([10, 0, 0, 0], 8, ForbiddenRange::Private),
        ([100, 64, 0, 0], 10, ForbiddenRange::SharedAddressSpace),
        ([127, 0, 0, 0], 8, ForbiddenRange::Loopback),
        ([169, 254, 0, 0], 16, ForbiddenRange::LinkLocal),
        ([172, 16, 0, 0], 12, ForbiddenRange::Private),
        ([192, 0, 0, 0], 24, ForbiddenRange::ProtocolAssignments),
        ([192, 0, 2, 0], 24, ForbiddenRange::Documentation),
        ([192, 88, 99, 0], 24, ForbiddenRange::Reserved),
        ([192, 168, 0, 0], 16, ForbiddenRange::Private),
        ([198, 18, 0, 0], 15, ForbiddenRange::Benchmarking),
        ([198, 51, 100, 0], 24, ForbiddenRange::Documentation),
        ([203, 0, 113, 0], 24, ForbiddenRange::Documentation),
        ([224, 0, 0, 0], 4, ForbiddenRange::Multicast),
        ([240, 0, 0, 0], 4, ForbiddenRange::Reserved),
    ];
    TABLE
        .iter()
        .find(|(network, prefix_len, _)| in_v4_net(ip, *network, *prefix_len))
        .map(|(_, _, range)| *range)
}

fn in_v6_net(ip: Ipv6Addr, network: u128, prefix_len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix_len).unwrap_or(0);
    u128::from(ip) & mask == network & mask
}

fn forbidden_range_v6(ip: Ipv6Addr) -> Option<ForbiddenRange> {
    let bits = u128::from(ip);
    if ip.is_unspecified() {
        return Some(ForbiddenRange::Unspecified);
    }
    if ip.is_loopback() {
        return Some(ForbiddenRange::Loopback);
    }
    // Forms that carry an IPv4 address in their low 32 bits and reach it: judge the
    // IPv4 address, so `::ffff:127.0.0.1` is loopback and `64:ff9b::a00:1` private.
    if in_v6_net(ip, 0xffff_0000_0000, 96) || in_v6_net(ip, 0x0064_ff9b << 96, 96) {
        return forbidden_range_v4(Ipv4Addr::from(bits as u32));
    }
    const SPECIAL: &[(u128, u32, ForbiddenRange)] = &[
        // `::/96`, IPv4-compatible (deprecated): refused whatever the IPv4 part.
        (0, 96, ForbiddenRange::Reserved),
        (0xfe80 << 112, 10, ForbiddenRange::LinkLocal),
        (0xfc00 << 112, 7, ForbiddenRange::UniqueLocal),
        (0xff00 << 112, 8, ForbiddenRange::Multicast),
        (0x2001_0db8 << 96, 32, ForbiddenRange::Documentation),
        (0x3fff << 112, 20, ForbiddenRange::Documentation),
        (0x2001 << 112, 23, ForbiddenRange::ProtocolAssignments),
        // 6to4 embeds an IPv4 relay path; nothing an IdP needs.
        (0x2002 << 112, 16, ForbiddenRange::Reserved),
    ];
    if let Some((_, _, range)) = SPECIAL
        .iter()
        .find(|(network, prefix_len, _)| in_v6_net(ip, *network, *prefix_len))
    {
        return Some(*range);
    }
    if in_v6_net(ip, 0x2000 << 112, 3) {
        None
    } else {
        // Local-use NAT64, site-local, discard-only and all unassigned space.
        Some(ForbiddenRange::Reserved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range_of(text: &str) -> Option<ForbiddenRange> {
        forbidden_range(text.parse().expect("test address parses"))
    }

    #[test]
    fn classifier_table() {
        use ForbiddenRange::*;
        let cases: &[(&str, Option<ForbiddenRange>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(ThisNetwork)),
            ("10.0.0.1", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("100.128.0.1", None),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("169.254.169.254", Some(LinkLocal)),
            ("172.15.255.255", None),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("192.0.0.8", Some(ProtocolAssignments)),
            ("192.0.2.10", Some(Documentation)),
            ("192.88.99.1", Some(Reserved)),
            ("192.168.1.1", Some(Private)),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("198.20.0.1", None),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.9", Some(Documentation)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("1.1.1.1", None),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Reserved)),
            ("::8.8.8.8", Some(Reserved)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("64:ff9b::808:808", None),
            ("64:ff9b:1::1", Some(Reserved)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(Reserved)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("2001::1", Some(ProtocolAssignments)),
            ("2002:7f00:1::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001:81c::200e", None),
        ];
        for (address, expected) in cases {
            assert_eq!(range_of(address), *expected, "address {address}");
        }
    }

    #[test]
    fn loopback_switch_allows_only_loopback() {
        let check = |text: &str| check_address(text.parse().unwrap(), true);
        assert_eq!(check("127.0.0.1"), Ok(()));
        assert_eq!(check("::1"), Ok(()));
        assert_eq!(check("10.0.0.1"), Err(ForbiddenRange::Private));
        assert_eq!(check("169.254.169.254"), Err(ForbiddenRange::LinkLocal));
        assert_eq!(check("0.0.0.0"), Err(ForbiddenRange::Unspecified));
        assert_eq!(
            check_address("127.0.0.1".parse().unwrap(), false),
            Err(ForbiddenRange::Loopback)
        );
    }

    fn v4_in(network: [u8; 4], prefix_len: u32) -> impl Strategy<Value = Ipv4Addr> {
        let base = u32::from(Ipv4Addr::from(network));
        (0..(1u64 << (32 - prefix_len)))
            .prop_map(move |offset| Ipv4Addr::from(base + offset as u32))
    }

    proptest! {
        #[test]
        fn every_address_in_10_slash_8_is_private(ip in v4_in([10, 0, 0, 0], 8)) {
            prop_assert_eq!(forbidden_range(ip.into()), Some(ForbiddenRange::Private));
        }

        #[test]
        fn every_address_in_172_16_slash_12_is_private(ip in v4_in([172, 16, 0, 0], 12)) {
            prop_assert_eq!(forbidden_range(ip.into()), Some(ForbiddenRange::Private));
        }

        #[test]
        fn every_address_in_192_168_slash_16_is_private(ip in v4_in([192, 168, 0, 0], 16)) {
            prop_assert_eq!(forbidden_range(ip.into()), Some(ForbiddenRange::Private));
        }

        #[test]
        fn every_address_in_127_slash_8_is_loopback(ip in v4_in([127, 0, 0, 0], 8)) {
            prop_assert_eq!(forbidden_range(ip.into()), Some(ForbiddenRange::Loopback));
        }

        #[test]
        fn every_address_in_169_254_slash_16_is_link_local(ip in v4_in([169, 254, 0, 0], 16)) {
            prop_assert_eq!(forbidden_range(ip.into()), Some(ForbiddenRange::LinkLocal));
        }

        #[test]
        fn every_address_in_100_64_slash_10_is_shared(ip in v4_in([100, 64, 0, 0], 10)) {
            prop_assert_eq!(forbidden_range(ip.into()), Some(ForbiddenRange::SharedAddressSpace));
        }

        #[test]
        fn every_address_in_fc00_slash_7_is_unique_local(low in any::<u128>()) {
            let ip = Ipv6Addr::from((0xfc00u128 << 112) | (low >> 7));
            prop_assert_eq!(forbidden_range(ip.into()), Some(ForbiddenRange::UniqueLocal));
        }

        #[test]
        fn ipv4_mapped_and_nat64_forms_are_judged_like_the_ipv4_address(bits in any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            let expected = forbidden_range(v4.into());
            prop_assert_eq!(forbidden_range(v4.to_ipv6_mapped().into()), expected);
            let nat64 = Ipv6Addr::from((0x0064_ff9bu128 << 96) | u128::from(bits));
            prop_assert_eq!(forbidden_range(nat64.into()), expected);
        }

        #[test]
        fn ipv4_compatible_forms_are_always_refused(bits in any::<u32>()) {
            let compatible = Ipv4Addr::from(bits).to_ipv6_compatible();
            prop_assert!(forbidden_range(compatible.into()).is_some());
        }

        #[test]
        fn loopback_switch_never_allows_a_non_loopback_forbidden_address(bits in any::<u32>()) {
            let ip = IpAddr::from(Ipv4Addr::from(bits));
            let range = forbidden_range(ip);
            if range.is_some() && range != Some(ForbiddenRange::Loopback) {
                prop_assert!(check_address(ip, true).is_err());
            }
        }
    }
}
