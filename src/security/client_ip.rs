//! The client's address, from the TCP peer and, behind trusted proxies, `X-Forwarded-For`.
//!
//! Defends against address spoofing: any client can send `X-Forwarded-For`, so the header is
//! read only when the TCP peer itself is a trusted proxy, and then only from the right, where
//! the trusted proxies appended what they saw. The left-most entry is never trusted (that is
//! the one a client writes). The result feeds the allowlist, the rate limiter and the event's
//! `Remote-Addr`.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// The most hops walked. Longer chains stop at the last trusted hop seen, which bounds the
/// work an attacker can cause with a huge header.
pub const MAX_HOPS: usize = 32;

/// Resolves the client address.
///
/// - `peer` is not a trusted proxy: `peer`, whatever the headers say.
/// - otherwise the `X-Forwarded-For` hops (every header value, in order, each comma-separated)
///   are walked right to left, and the first hop that is not a trusted proxy is returned.
/// - if every hop is a trusted proxy, or the header is absent: the left-most trusted hop seen
///   (the peer when there are no hops).
/// - a malformed hop (`unknown`, obfuscated identifiers, garbage) stops the walk and the last
///   trusted hop seen is returned. That is the safe choice: what lies left of a malformed hop
///   was not written by a proxy we trust, and the trusted hop is an address no client
///   chooses. Keep trusted proxies out of hook allowlists so such a request is refused there.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are canonicalised to IPv4 throughout.
pub fn resolve(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut last_trusted = peer;
    let hops = forwarded_for
        .iter()
        .rev()
        .flat_map(|value| value.rsplit(','))
        .take(MAX_HOPS);
    for hop in hops {
        let Some(ip) = parse_hop(hop) else {
            return last_trusted;
        };
        if !is_trusted(ip, trusted) {
            return ip;
        }
        last_trusted = ip;
    }
    last_trusted
}

/// [`resolve`] with the `X-Forwarded-For` values taken from `headers`, in order. A value that is
/// not visible ASCII counts as a malformed hop (it stops the walk when reached).
pub fn resolve_from_headers(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let values: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    resolve(peer, &values, trusted)
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net_contains(net, ip))
}

/// `net.contains(ip)` with IPv4-mapped networks treated as the IPv4 network they map.
pub(crate) fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    canonical_net(*net).contains(&ip.to_canonical())
}

/// An IPv6 network inside `::ffff:0:0/96` becomes the IPv4 network it maps.
pub(crate) fn canonical_net(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else {
        return net;
    };
    let Some(v4) = v6.network().to_ipv4_mapped() else {
        return net;
    };
    match v6.prefix_len().checked_sub(96) {
        Some(len) => ipnet::Ipv4Net::new(v4, len).map_or(net, IpNet::V4),
        None => net,
    }
}

/// One hop: an IP, optionally with a port (`1.2.3.4:80`, `[::1]:80`) or brackets (`[::1]`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sock) = hop.parse::<SocketAddr>() {
        return Some(sock.ip().to_canonical());
    }
    let inner = hop.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[track_caller]
    fn check(peer: &str, xff: &[&str], expected: &str) {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        let got = resolve(peer.parse().unwrap(), xff, &trusted);
        assert_eq!(
            got,
            expected.parse::<IpAddr>().unwrap(),
            "peer {peer} xff {xff:?}"
        );
    }

    #[test]
    fn untrusted_peer_ignores_header() {
        check("203.0.113.9", &[], "203.0.113.9");
        check("203.0.113.9", &["198.51.100.1"], "203.0.113.9");
        // spoofing: a direct client claims to be a trusted proxy or a friendly address
        check("203.0.113.9", &["10.0.0.1"], "203.0.113.9");
        check("::ffff:203.0.113.9", &["1.1.1.1"], "203.0.113.9");
    }

    #[test]
    fn trusted_peer_takes_rightmost_untrusted_hop() {
        check("10.0.0.2", &[], "10.0.0.2");
        check("10.0.0.2", &["198.51.100.1"], "198.51.100.1");
        check("10.0.0.2", &["198.51.100.1, 10.0.0.3"], "198.51.100.1");
        check("10.0.0.2", &["198.51.100.1", "10.0.0.3"], "198.51.100.1");
        check("10.0.0.2", &["10.0.0.5, 10.0.0.4"], "10.0.0.5");
        check("fd00::1", &["2001:db8::7"], "2001:db8::7");
    }

    #[test]
    fn spoofed_left_entries_are_ignored() {
        // the client prepends a fake address; the proxy appends the real one
        check("10.0.0.2", &["1.2.3.4, 198.51.100.1"], "198.51.100.1");
        check("10.0.0.2", &["1.2.3.4", "198.51.100.1"], "198.51.100.1");
        check("10.0.0.2", &["10.9.9.9, 198.51.100.1"], "198.51.100.1");
    }

    #[test]
    fn malformed_hop_stops_at_last_trusted() {
        check("10.0.0.2", &["unknown"], "10.0.0.2");
        check("10.0.0.2", &["1.2.3.4, garbage, 10.0.0.3"], "10.0.0.3");
        check("10.0.0.2", &["1.2.3.4, "], "10.0.0.2");
        check("10.0.0.2", &["_hidden"], "10.0.0.2");
    }

    #[test]
    fn ports_brackets_and_mapped_addresses() {
        check("10.0.0.2", &["198.51.100.1:4711"], "198.51.100.1");
        check("10.0.0.2", &["[2001:db8::1]:443"], "2001:db8::1");
        check("10.0.0.2", &["[2001:db8::1]"], "2001:db8::1");
        check("::ffff:10.0.0.2", &["::ffff:198.51.100.1"], "198.51.100.1");
        check("10.0.0.2", &["::ffff:10.1.1.1"], "10.1.1.1");
    }

    #[test]
    fn mapped_trusted_network() {
        let trusted = nets(&["::ffff:10.0.0.0/104"]);
        let got = resolve("10.0.0.2".parse().unwrap(), &["198.51.100.1"], &trusted);
        assert_eq!(got, "198.51.100.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn from_headers() {
        let trusted = nets(&["10.0.0.0/8"]);
        let mut map = HeaderMap::new();
        map.append(X_FORWARDED_FOR, "1.2.3.4, 198.51.100.1".parse().unwrap());
        map.append(X_FORWARDED_FOR, "10.0.0.3".parse().unwrap());
        let peer = "10.0.0.2".parse().unwrap();
        assert_eq!(
            resolve_from_headers(peer, &map, &trusted),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        map.append(
            X_FORWARDED_FOR,
            http::HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        assert_eq!(resolve_from_headers(peer, &map, &trusted), peer);
    }

    proptest::proptest! {
        #[test]
        fn untrusted_peer_always_wins(peer in proptest::prelude::any::<u32>(), xff in "\\PC{0,64}") {
            let peer = IpAddr::V4(std::net::Ipv4Addr::from(peer));
            let trusted = nets(&["10.0.0.0/8"]);
            let got = resolve(peer, &[&xff], &trusted);
            if !is_trusted(peer, &trusted) {
                proptest::prop_assert_eq!(got, peer);
            } else {
                // the answer is the peer or an address that appears in the header
                let named = xff.split(',').filter_map(parse_hop).any(|ip| ip == got);
                proptest::prop_assert!(got == peer || named);
            }
        }
    }

    #[test]
    fn long_chains_are_bounded() {
        let chain = vec!["10.0.0.1"; MAX_HOPS + 5].join(",");
        let value = format!("198.51.100.1,{chain}");
        check("10.0.0.2", &[&value], "10.0.0.1");
    }
}
