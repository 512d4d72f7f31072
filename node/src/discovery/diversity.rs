//! Address diversity of the routing table: at most [`MAX_PEERS_PER_RANGE`] peers from one
//! IPv4 /24 or IPv6 /48, and at most [`MAX_PEERS_PER_RANGE_PER_BUCKET`] of them in one
//! k-bucket.
//!
//! PeerIds cost nothing, so one machine (or one rented /24) can mint ids close to a key and
//! fill the buckets that lookups of that key walk through: an eclipse. Addresses are what
//! such an attacker cannot mint in numbers. go-libp2p-kad-dht has this rule (its
//! `peerdiversity` filter, 3 per group in the table and 2 per bucket); rust-libp2p's
//! Kademlia has none, so the host inserts peers itself (`BucketInserts::Manual`) and every
//! insertion passes [`RangeCounts::has_room`].
//!
//! A peer counts in every range one of its addresses lies in; a new peer is admitted only if
//! each of those ranges has room (as go does: decoy addresses in other ranges do not get a
//! crowded range's peer in). A peer already in the table keeps its place; a new address of
//! it in a full range is not added. Addresses without an IP, and local ones (loopback,
//! private, link-local, shared: [`crate::net::is_local_ip`]) while exempt, belong to no
//! range: a LAN's nodes share one range by nature, and a DHT on a LAN must work with the
//! defaults ([`super::DiscoveryConfig::exempt_local_addresses`]).
//!
//! This module is the rule alone, on plain values; `net::task` applies it to the table.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

/// Routing-table peers with an address in one IPv4 /24 or IPv6 /48, at most: 3 (go-libp2p-
/// kad-dht's figure). A /24 is what one hosting customer typically holds, a /48 one site.
pub const MAX_PEERS_PER_RANGE: usize = 3;
/// Peers from one range in one k-bucket, at most: 2 (go-libp2p-kad-dht's figure). Lookups
/// of keys near an attacker's minted ids walk the few buckets closest to them: this keeps
/// honest peers there too.
pub const MAX_PEERS_PER_RANGE_PER_BUCKET: usize = 2;

/// One IPv4 /24 or IPv6 /48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressRange {
    /// The first three bytes of an IPv4 address.
    V4([u8; 3]),
    /// The first six bytes of an IPv6 address.
    V6([u8; 6]),
}

impl AddressRange {
    /// The range of `ip`; an IPv4-mapped IPv6 address is in its IPv4 address's range.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Self::V4([a, b, c])
            }
            IpAddr::V6(v6) => {
                let mut prefix = [0; 6];
                prefix.copy_from_slice(&v6.octets()[..6]);
                Self::V6(prefix)
            }
        }
    }

    /// The range `ip` counts in, or `None` when it counts in none: a local address while
    /// `exempt_local` holds.
    pub fn counted(ip: IpAddr, exempt_local: bool) -> Option<Self> {
        if exempt_local && crate::net::is_local_ip(ip) {
            None
        } else {
            Some(Self::of(ip))
        }
    }
}

/// How many table peers each range has, in all and per bucket (a bucket is named by its
/// index: the base-2 logarithm of the XOR distance to this node).
#[derive(Debug, Default)]
pub struct RangeCounts {
    table: HashMap<AddressRange, usize>,
    per_bucket: HashMap<(u32, AddressRange), usize>,
}

impl RangeCounts {
    /// Counts one table peer in `bucket` with addresses in `ranges` (each range once).
    pub fn add_peer(&mut self, bucket: u32, ranges: &BTreeSet<AddressRange>) {
        for range in ranges {
            *self.table.entry(*range).or_default() += 1;
            *self.per_bucket.entry((bucket, *range)).or_default() += 1;
        }
    }

    /// Whether one more peer in `bucket` may have an address in `range`.
    pub fn has_room(&self, bucket: u32, range: AddressRange) -> bool {
        self.table.get(&range).copied().unwrap_or(0) < MAX_PEERS_PER_RANGE
            && self.per_bucket.get(&(bucket, range)).copied().unwrap_or(0)
                < MAX_PEERS_PER_RANGE_PER_BUCKET
    }

    /// Whether a peer not yet in the table, in `bucket`, with addresses in `ranges`, may
    /// enter it: every range must have room. `Err` names the first full one.
    pub fn admits(&self, bucket: u32, ranges: &BTreeSet<AddressRange>) -> Result<(), AddressRange> {
        match ranges.iter().find(|r| !self.has_room(bucket, **r)) {
            Some(full) => Err(*full),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for AddressRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::V4([a, b, c]) => write!(f, "{a}.{b}.{c}.0/24"),
            Self::V6(p) => {
                let seg = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
                write!(f, "{:x}:{:x}:{:x}::/48", seg(0), seg(2), seg(4))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(ip: &str) -> AddressRange {
        AddressRange::of(ip.parse().expect("ip"))
    }

    fn set(ips: &[&str]) -> BTreeSet<AddressRange> {
        ips.iter().map(|ip| range(ip)).collect()
    }

    #[test]
    fn ranges_are_ipv4_slash_24_and_ipv6_slash_48() {
        assert_eq!(range("203.0.113.1"), range("203.0.113.254"));
        assert_ne!(range("203.0.113.1"), range("203.0.114.1"));
        assert_eq!(range("2001:db8:1::1"), range("2001:db8:1:ffff::2"));
        assert_ne!(range("2001:db8:1::1"), range("2001:db8:2::1"));
        assert_eq!(range("::ffff:203.0.113.9"), range("203.0.113.1"));
        assert_eq!(range("203.0.113.7").to_string(), "203.0.113.0/24");
        assert_eq!(range("2001:db8:1::1").to_string(), "2001:db8:1::/48");
    }

    #[test]
    fn local_addresses_count_in_no_range_while_exempt() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.0.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.1.1",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(AddressRange::counted(ip, true), None, "{ip}");
            assert_eq!(AddressRange::counted(ip, false), Some(AddressRange::of(ip)));
        }
        for ip in ["8.8.8.8", "100.128.0.1", "2001:db8::1", "172.32.0.1"] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(AddressRange::counted(ip, true).is_some(), "{ip}");
        }
    }

    #[test]
    fn a_fourth_peer_from_one_slash_24_is_refused() {
        let mut counts = RangeCounts::default();
        let crowded = set(&["203.0.113.1"]);
        for bucket in [250, 251, 252] {
            assert_eq!(counts.admits(bucket, &crowded), Ok(()));
            counts.add_peer(bucket, &crowded);
        }
        assert_eq!(counts.admits(253, &crowded), Err(range("203.0.113.9")));
        assert_eq!(
            counts.admits(253, &set(&["203.0.114.1"])),
            Ok(()),
            "next /24"
        );
        // Decoy addresses elsewhere do not let a crowded range's peer in.
        assert!(counts
            .admits(253, &set(&["198.51.100.1", "203.0.113.50"]))
            .is_err());
        // A peer with no counted address (all local, exempt) is always admitted.
        assert_eq!(counts.admits(253, &BTreeSet::new()), Ok(()));
    }

    #[test]
    fn a_third_peer_from_one_range_in_one_bucket_is_refused() {
        let mut counts = RangeCounts::default();
        let lab = set(&["2001:db8:7::1"]);
        counts.add_peer(255, &lab);
        counts.add_peer(255, &lab);
        assert!(!counts.has_room(255, range("2001:db8:7:1::9")));
        assert!(
            counts.has_room(254, range("2001:db8:7::2")),
            "another bucket"
        );
        counts.add_peer(254, &lab);
        assert!(
            !counts.has_room(253, range("2001:db8:7::2")),
            "the table's 3"
        );
        assert!(counts.has_room(255, range("2001:db8:8::1")), "another /48");
    }
}
