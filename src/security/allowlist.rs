//! CIDR allowlist for hook rules.
//!
//! Defends against requests from outside the sender's published address ranges (GitHub's
//! `hooks` ranges, an internal network). It checks the address resolved by
//! [`crate::security::client_ip::resolve`], never a client-supplied header. IPv4-mapped IPv6
//! addresses and networks are canonicalised to IPv4 first, so `::ffff:1.2.3.4` cannot slip
//! past an IPv4 rule (or be refused by one) depending on how the listener reports it.

use std::net::IpAddr;

use ipnet::IpNet;

use super::client_ip::canonical_net;

/// A list of networks. An empty list allows every address: that is the "no `allow_from`
/// configured" case, so a rule without an allowlist stays open as salt-api's hooks are.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

impl AllowList {
    /// An allowlist of `nets` (canonicalised; host bits are kept as given by `IpNet`).
    pub fn new(nets: Vec<IpNet>) -> AllowList {
        AllowList {
            nets: nets.into_iter().map(canonical_net).collect(),
        }
    }

    /// The list that allows every address.
    pub fn allow_all() -> AllowList {
        AllowList::default()
    }

    /// True when the list is empty and therefore allows everything.
    pub fn is_allow_all(&self) -> bool {
        self.nets.is_empty()
    }

    /// The configured networks, canonicalised.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether `ip` may pass.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.nets.is_empty() {
            return true;
        }
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use ipnet::Ipv4Net;
    use proptest::prelude::*;

    use super::*;

    fn list(nets: &[&str]) -> AllowList {
        AllowList::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    #[track_caller]
    fn check(list: &AllowList, ip: &str, expected: bool) {
        assert_eq!(list.contains(ip.parse().unwrap()), expected, "{ip}");
    }

    #[test]
    fn table() {
        let l = list(&["192.30.252.0/22", "2001:db8::/32"]);
        check(&l, "192.30.252.1", true);
        check(&l, "192.30.255.255", true);
        check(&l, "192.30.251.255", false);
        check(&l, "::ffff:192.30.252.1", true);
        check(&l, "::ffff:192.30.251.1", false);
        check(&l, "2001:db8::1", true);
        check(&l, "2001:db9::1", false);
        // an IPv4-compatible (not mapped) address is not canonicalised
        check(&l, "::192.30.252.1", false);
    }

    #[test]
    fn empty_allows_all() {
        let l = AllowList::allow_all();
        assert!(l.is_allow_all());
        check(&l, "203.0.113.1", true);
        check(&l, "::1", true);
    }

    #[test]
    fn mapped_network_is_canonicalised() {
        let l = list(&["::ffff:10.0.0.0/104"]);
        assert_eq!(l.nets(), &["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        check(&l, "10.1.2.3", true);
        check(&l, "::ffff:10.1.2.3", true);
        check(&l, "11.1.2.3", false);
    }

    proptest! {
        #[test]
        fn mapped_and_plain_agree(addr in any::<u32>(), net in any::<u32>(), len in 0u8..=32) {
            let v4 = Ipv4Addr::from(addr);
            let n = Ipv4Net::new(Ipv4Addr::from(net), len).unwrap();
            let l = AllowList::new(vec![IpNet::V4(n)]);
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            prop_assert_eq!(l.contains(IpAddr::V4(v4)), n.contains(&v4));
            prop_assert_eq!(l.contains(mapped), n.contains(&v4));
        }

        #[test]
        fn contains_is_any(addr in any::<u128>(), nets in proptest::collection::vec((any::<u128>(), 0u8..=128), 0..4)) {
            let ip = IpAddr::V6(Ipv6Addr::from(addr));
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(a, l)| IpNet::V6(ipnet::Ipv6Net::new(Ipv6Addr::from(a), l).unwrap()))
                .collect();
            let l = AllowList::new(nets.clone());
            let expected = nets.is_empty()
                || nets.iter().any(|n| canonical_net(*n).contains(&ip.to_canonical()));
            prop_assert_eq!(l.contains(ip), expected);
        }
    }
}
