//! Who else holds a dataset root or blob, as far as this node knows: providers found in
//! the DHT or in tickets, holders other peers told us about, and peers that fetch the same
//! data from us. Shared through the transfer protocol's holder exchange
//! (`Request::Holders`), so a swarm is not limited to what one DHT lookup returns.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use commons_protocol::{
    wire::{HolderRecord, MAX_HOLDERS, MAX_HOLDER_ADDRS},
    Hash,
};
use libp2p::{Multiaddr, PeerId};

use crate::net::PeerAddrs;

/// Hashes tracked at most; the least recently touched is forgotten first.
pub const MAX_TRACKED_HASHES: usize = 4_096;
/// Holders remembered per hash; the least recently seen is forgotten first.
pub const MAX_HOLDERS_PER_HASH: usize = 64;

/// The registry. Bounded in both dimensions, so peers cannot grow it without limit.
#[derive(Debug, Default)]
pub struct Holders {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_hash: HashMap<Hash, Vec<PeerAddrs>>,
    /// Hashes, least recently touched first.
    order: VecDeque<Hash>,
}

impl Holders {
    /// Records that `peer` holds (all or part of) `hash`; it becomes the most recent.
    /// Peers without any address are not recorded: nobody could dial them.
    pub fn add(&self, hash: Hash, peer: PeerId, addrs: Vec<Multiaddr>) {
        if addrs.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner { by_hash, order } = &mut *inner;
        if let Some(i) = order.iter().position(|h| *h == hash) {
            order.remove(i);
        } else if order.len() >= MAX_TRACKED_HASHES {
            if let Some(old) = order.pop_front() {
                by_hash.remove(&old);
            }
        }
        order.push_back(hash);
        let list = by_hash.entry(hash).or_default();
        list.retain(|p| p.peer != peer);
        if list.len() >= MAX_HOLDERS_PER_HASH {
            list.remove(0);
        }
        let mut addrs = addrs;
        addrs.truncate(MAX_HOLDER_ADDRS);
        list.push(PeerAddrs { peer, addrs });
    }

    /// Forgets `peer` as a holder of `hash` (it said it has nothing, or misbehaved).
    pub fn remove(&self, hash: &Hash, peer: &PeerId) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = inner.by_hash.get_mut(hash) {
            list.retain(|p| p.peer != *peer);
        }
    }

    /// Up to `limit` holders of `hash`, most recent first, leaving out `except`.
    pub fn known(&self, hash: &Hash, except: &[PeerId], limit: usize) -> Vec<PeerAddrs> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .by_hash
            .get(hash)
            .map(|list| {
                list.iter()
                    .rev()
                    .filter(|p| !except.contains(&p.peer))
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The holders of `hash` to tell `asker` about, in wire form.
    pub fn records_for(&self, hash: &Hash, asker: &PeerId, me: &PeerId) -> Vec<HolderRecord> {
        self.known(hash, &[*asker, *me], MAX_HOLDERS)
            .into_iter()
            .map(|p| HolderRecord {
                peer: p.peer.to_bytes(),
                addrs: p.addrs.iter().map(|a| a.to_vec()).collect(),
            })
            .collect()
    }
}

/// Parses holder records from a peer, dropping those that do not parse or have no address.
pub fn parse_records(records: Vec<HolderRecord>) -> Vec<PeerAddrs> {
    records
        .into_iter()
        .filter_map(|r| {
            let peer = PeerId::from_bytes(&r.peer).ok()?;
            let addrs: Vec<Multiaddr> = r
                .addrs
                .into_iter()
                .filter_map(|a| Multiaddr::try_from(a).ok())
                .collect();
            (!addrs.is_empty()).then_some(PeerAddrs { peer, addrs })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
            .parse()
            .expect("addr")
    }

    #[test]
    fn holders_are_bounded_recent_first_and_round_trip_the_wire_form() {
        let holders = Holders::default();
        let root = Hash::of(b"root");
        let peers: Vec<PeerId> = (0..MAX_HOLDERS_PER_HASH + 2)
            .map(|_| PeerId::random())
            .collect();
        for (i, p) in peers.iter().enumerate() {
            holders.add(root, *p, vec![addr(i as u16 + 1)]);
        }
        holders.add(root, PeerId::random(), vec![]); // no address: not recorded
        let all = holders.known(&root, &[], usize::MAX);
        assert_eq!(all.len(), MAX_HOLDERS_PER_HASH);
        assert_eq!(
            all[0].peer,
            *peers.last().expect("peer"),
            "most recent first"
        );
        assert!(!all.iter().any(|p| p.peer == peers[0]), "oldest forgotten");

        let asker = peers[peers.len() - 1];
        let me = peers[peers.len() - 2];
        let records = holders.records_for(&root, &asker, &me);
        assert_eq!(records.len(), MAX_HOLDERS);
        let parsed = parse_records(records);
        assert!(!parsed.iter().any(|p| p.peer == asker || p.peer == me));
        assert_eq!(parsed[0].addrs.len(), 1);

        holders.remove(&root, &peers[5]);
        assert!(!holders
            .known(&root, &[], usize::MAX)
            .iter()
            .any(|p| p.peer == peers[5]));
    }

    #[test]
    fn the_least_recently_touched_hash_is_forgotten() {
        let holders = Holders::default();
        let peer = PeerId::random();
        for i in 0..=MAX_TRACKED_HASHES {
            holders.add(Hash::of(&i.to_be_bytes()), peer, vec![addr(1)]);
        }
        assert!(holders
            .known(&Hash::of(&0usize.to_be_bytes()), &[], 1)
            .is_empty());
        assert_eq!(
            holders
                .known(&Hash::of(&1usize.to_be_bytes()), &[], 1)
                .len(),
            1
        );
    }

    #[test]
    fn unparsable_records_are_dropped() {
        let bad = vec![
            HolderRecord {
                peer: vec![1, 2, 3],
                addrs: vec![addr(1).to_vec()],
            },
            HolderRecord {
                peer: PeerId::random().to_bytes(),
                addrs: vec![vec![0xff; 5]],
            },
        ];
        assert!(parse_records(bad).is_empty());
    }
}
