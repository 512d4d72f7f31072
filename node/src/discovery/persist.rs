//! The network state kept across restarts: the routing table's peers (so a restarted node
//! finds the network without a bootstrap list) and the provider records held for others
//! (so a restart does not make them vanish from the DHT). Saved in the store's `meta`
//! column family under [`META_NET_STATE`].

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::records::SavedProvider;
use crate::store::{Store, StoreError};

/// Key of the saved [`NetState`] in the store's `meta` column family.
pub const META_NET_STATE: &[u8] = b"net_state";
/// Peers saved at most: a full routing table is 256 buckets × 20, but a few hundred live
/// peers are plenty to rejoin.
pub const MAX_SAVED_PEERS: usize = 1_000;

/// A peer of the routing table and its addresses, binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPeer {
    /// PeerId bytes.
    pub peer: Vec<u8>,
    /// Multiaddr bytes.
    pub addrs: Vec<Vec<u8>>,
}

impl SavedPeer {
    /// Saves a peer.
    pub fn new(peer: &PeerId, addrs: &[Multiaddr]) -> Self {
        Self {
            peer: peer.to_bytes(),
            addrs: addrs.iter().map(|a| a.to_vec()).collect(),
        }
    }

    /// The peer and its addresses, if they parse.
    pub fn parse(&self) -> Option<(PeerId, Vec<Multiaddr>)> {
        let peer = PeerId::from_bytes(&self.peer).ok()?;
        let addrs: Vec<Multiaddr> = self
            .addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
            .collect();
        (!addrs.is_empty()).then_some((peer, addrs))
    }
}

/// Everything saved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    /// Routing table peers.
    pub peers: Vec<SavedPeer>,
    /// Provider records held for others.
    pub providers: Vec<SavedProvider>,
    /// Name records held (key, record bytes), saved under [`META_NET_NAMES`] so a state
    /// saved before names existed still reads.
    #[serde(skip)]
    pub names: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Key of the saved name records in the store's `meta` column family.
pub const META_NET_NAMES: &[u8] = b"net_names";

impl Store {
    /// Saves the network state, replacing the previous one.
    pub fn save_net_state(&self, state: &NetState) -> Result<(), StoreError> {
        self.put_meta(META_NET_STATE, &crate::store::layout::encode(state))?;
        self.put_meta(META_NET_NAMES, &crate::store::layout::encode(&state.names))
    }

    /// The saved network state; empty if none was saved or it does not parse (it is only
    /// a cache: losing it costs a bootstrap, never data).
    pub fn load_net_state(&self) -> Result<NetState, StoreError> {
        let mut state: NetState = self
            .get_meta(META_NET_STATE)?
            .and_then(|bytes| crate::store::layout::decode(&bytes))
            .unwrap_or_default();
        state.names = self
            .get_meta(META_NET_NAMES)?
            .and_then(|bytes| crate::store::layout::decode(&bytes))
            .unwrap_or_default();
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_state_round_trips_through_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), crate::StoreOptions::default()).expect("open");
        assert_eq!(store.load_net_state().expect("load"), NetState::default());
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/9/quic-v1".parse().expect("addr");
        let state = NetState {
            peers: vec![SavedPeer::new(&peer, std::slice::from_ref(&addr))],
            providers: vec![],
            names: vec![(vec![1; 32], vec![2; 40])],
        };
        store.save_net_state(&state).expect("save");
        drop(store);
        let store = Store::open(dir.path(), crate::StoreOptions::default()).expect("reopen");
        let loaded = store.load_net_state().expect("load");
        assert_eq!(loaded, state);
        assert_eq!(loaded.peers[0].parse(), Some((peer, vec![addr])));
    }
}
