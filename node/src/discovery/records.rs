//! The Kademlia record store: provider records and signed name records, bounded,
//! sweepable and saveable.
//!
//! rust-libp2p's `MemoryStore` caps provided keys at 1,024 and never drops expired records
//! of keys nobody asks for, and it cannot list the records it holds for others, so they
//! could not survive a restart. It also stores any value record a peer PUTs, unchecked.
//! This store keeps provider records within [`ProviderLimits`], and as value records only
//! signed name records (`commons_protocol::provenance::record`) that verify under their
//! key, are unexpired, and are newer than the one held: an old or forged record a peer
//! replays is refused (the put fails), so it cannot roll a name back here.
//!
//! One peer may make this node store at most [`MAX_NEW_RECORDS_PER_PEER`] new provider
//! records per [`NEW_RECORD_WINDOW`] (Kademlia accepts an `ADD_PROVIDER` only from the
//! provider itself, so the sender is the provider): one identity cannot fill
//! [`ProviderLimits::max_keys`] in a burst and lock honest publishers out until records
//! lapse.

use std::{
    borrow::Cow,
    collections::{hash_map, hash_set, HashMap, HashSet, VecDeque},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use libp2p::{
    kad::{
        store::{Error, RecordStore, Result},
        KBucketKey, ProviderRecord, Record, RecordKey,
    },
    Multiaddr, PeerId,
};
use serde::{Deserialize, Serialize};

/// Bounds on what other peers can make this node remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderLimits {
    /// Keys with provider records held for others, at most. Each costs roughly 200 bytes
    /// plus its records, so the default (250,000) bounds this at about 100 MB.
    pub max_keys: usize,
    /// Providers remembered per key; further providers of a full key are ignored (the
    /// holder exchange of the transfer protocol finds the rest of a popular swarm).
    pub max_providers_per_key: usize,
    /// Addresses kept per provider record.
    pub max_addrs_per_record: usize,
    /// Signed name records held, at most ([`MAX_NAME_RECORDS`]).
    #[serde(default = "default_max_names")]
    pub max_names: usize,
}

fn default_max_names() -> usize {
    MAX_NAME_RECORDS
}

impl Default for ProviderLimits {
    fn default() -> Self {
        Self {
            max_keys: 250_000,
            max_providers_per_key: 64,
            max_addrs_per_record: 8,
            max_names: MAX_NAME_RECORDS,
        }
    }
}

/// Name records held at most (each at most
/// `commons_protocol::provenance::record::MAX_NAME_RECORD_BYTES`, so about 50 MB).
pub const MAX_NAME_RECORDS: usize = 50_000;

/// New provider records (a key this peer had no record for here) one peer may have this node
/// store per [`NEW_RECORD_WINDOW`]: 20,000. Re-announcements of records held do not count,
/// nor this node's own records, nor records loaded at start. Sized for one burst of a large
/// mirror: a node announcing 10,000 roots at once (the discovery benchmark's figure) and, for
/// Hub imports, as many commit keys, to a network of 20 servers or fewer sends every one of
/// them to each server. At this rate one identity needs 12.5 h to fill the default
/// `max_keys` (250,000) alone. Beyond it, records are refused (the sender is not told:
/// Kademlia's `ADD_PROVIDER` has no answer) until the window ends; the publisher
/// re-announces each record within 12 h.
pub const MAX_NEW_RECORDS_PER_PEER: usize = 20_000;
/// The window [`MAX_NEW_RECORDS_PER_PEER`] counts in: 1 hour, from a peer's first new record.
pub const NEW_RECORD_WINDOW: Duration = Duration::from_secs(3600);
/// Peers whose new records are being counted, at most: 10,000. PeerIds cost nothing, so the
/// counters are bounded: past it, the peer whose window began first is forgotten (its count
/// starts again; an attacker who can cycle 10,000 identities has their allowance anyway).
pub const MAX_COUNTED_PROVIDERS: usize = 10_000;

/// How many new provider records each peer has had stored in its current window.
#[derive(Debug, Default)]
struct NewRecordCounts {
    /// Per peer: when its window began and how many new records since.
    windows: HashMap<PeerId, (Instant, usize)>,
    /// The same peers, oldest window first.
    order: VecDeque<(Instant, PeerId)>,
}

impl NewRecordCounts {
    /// Counts one new record of `peer` at `now` (never earlier than a previous call's);
    /// `false` when the peer's allowance for its window is spent.
    fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        while let Some(&(start, _)) = self.order.front() {
            if now.saturating_duration_since(start) < NEW_RECORD_WINDOW {
                break;
            }
            self.forget_oldest();
        }
        if !self.windows.contains_key(&peer) {
            while self.windows.len() >= MAX_COUNTED_PROVIDERS {
                self.forget_oldest();
            }
            self.windows.insert(peer, (now, 0));
            self.order.push_back((now, peer));
        }
        match self.windows.get_mut(&peer) {
            Some((_, count)) if *count < MAX_NEW_RECORDS_PER_PEER => {
                *count += 1;
                true
            }
            _ => false,
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((start, peer)) = self.order.pop_front() {
            if self.windows.get(&peer).is_some_and(|(s, _)| *s == start) {
                self.windows.remove(&peer);
            }
        }
    }
}

/// A provider record held for another peer, in a form that survives a restart: the expiry
/// is wall-clock time, since `Instant`s mean nothing to the next process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedProvider {
    /// The key (a dataset root or blob hash).
    pub key: Vec<u8>,
    /// The provider's PeerId, binary.
    pub provider: Vec<u8>,
    /// Its addresses, binary multiaddrs.
    pub addrs: Vec<Vec<u8>>,
    /// Unix seconds when the record lapses.
    pub expires_unix: u64,
}

/// Provider records: this node's own (re-announced by the publisher) and those it keeps
/// for others as a DHT server.
#[derive(Debug)]
pub struct ProviderStore {
    local: PeerId,
    limits: ProviderLimits,
    providers: HashMap<RecordKey, Vec<ProviderRecord>>,
    provided: HashSet<ProviderRecord>,
    /// Name records by key, with their expiry (unix seconds).
    names: HashMap<RecordKey, (Record, u64)>,
    /// New provider records per peer in its current window.
    new_records: NewRecordCounts,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl ProviderStore {
    /// An empty store for the node `local`.
    pub fn new(local: PeerId, limits: ProviderLimits) -> Self {
        Self {
            local,
            limits,
            providers: HashMap::new(),
            provided: HashSet::new(),
            names: HashMap::new(),
            new_records: NewRecordCounts::default(),
        }
    }

    /// Name records held.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// Checks a name record and stores it if it is newer than the one held (the same
    /// record again is accepted and changes nothing). Why a record was refused is logged.
    /// The cheap checks (shape, key, time, newer than held) run before the signature's.
    /// When [`MAX_NAME_RECORDS`] are held, a record for a new key takes the place of the
    /// held record whose key is farthest from this node if its own is nearer (a node keeps
    /// the records it is among the closest to), else it is refused.
    pub fn put_name(&mut self, record: Record, now_unix: u64) -> Result<()> {
        self.insert_name(record, now_unix, true)
    }

    fn insert_name(&mut self, record: Record, now_unix: u64, check_signature: bool) -> Result<()> {
        use commons_protocol::provenance::SignedNameRecord;
        let refused = |e: &dyn std::fmt::Display| {
            tracing::debug!(error = %e, "refused a name record");
            Error::ValueTooLarge
        };
        let new = SignedNameRecord::decode_unverified(&record.value, record.key.as_ref(), now_unix)
            .map_err(|e| refused(&e))?;
        if let Some((held, _)) = self.names.get(&record.key) {
            if held.value == record.value {
                return Ok(());
            }
            if let Ok(old) = SignedNameRecord::decode_signed(&held.value) {
                if !new.supersedes(&old) {
                    tracing::debug!(
                        name = %new.record.name_ref(),
                        offered = new.record.seq,
                        held = old.record.seq,
                        "refused an older name record"
                    );
                    return Err(Error::ValueTooLarge);
                }
            }
        }
        if check_signature {
            new.verify_signature().map_err(|e| refused(&e))?;
        }
        let max = self.limits.max_names;
        if !self.names.contains_key(&record.key) && self.names.len() >= max {
            self.names.retain(|_, (_, expires)| *expires > now_unix);
            if self.names.len() >= max {
                let me = KBucketKey::from(self.local);
                let distance = |k: &RecordKey| me.distance(&KBucketKey::new(k.clone()));
                let farthest = self
                    .names
                    .keys()
                    .max_by_key(|k| distance(k))
                    .filter(|far| distance(far) > distance(&record.key))
                    .cloned();
                match farthest {
                    Some(far) => {
                        self.names.remove(&far);
                    }
                    None => return Err(Error::MaxRecords),
                }
            }
        }
        let expires = new.record.expires_unix;
        let stored = Record {
            key: record.key.clone(),
            value: record.value,
            publisher: None,
            expires: None,
        };
        self.names.insert(record.key, (stored, expires));
        Ok(())
    }

    /// The name records held, to be saved.
    pub fn name_snapshot(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let now = unix_now();
        self.names
            .iter()
            .filter(|(_, (_, expires))| *expires > now)
            .map(|(k, (r, _))| (k.to_vec(), r.value.clone()))
            .collect()
    }

    /// Loads saved name records; returns how many loaded. Each is checked again but for its
    /// signature, checked before it was saved in this node's own private store: 50,000
    /// P-256 checks would hold the swarm task for 20 s at start.
    pub fn restore_names(&mut self, saved: Vec<(Vec<u8>, Vec<u8>)>) -> usize {
        let now = unix_now();
        saved
            .into_iter()
            .filter(|(key, value)| {
                self.insert_name(Record::new(RecordKey::new(key), value.clone()), now, false)
                    .is_ok()
            })
            .count()
    }

    /// Keys with at least one provider record.
    pub fn key_count(&self) -> usize {
        self.providers.len()
    }

    /// Drops every record that has expired by `now`; returns how many went.
    pub fn sweep_expired(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        self.providers.retain(|_, records| {
            records.retain(|r| {
                let keep = !r.is_expired(now);
                removed += usize::from(!keep);
                keep
            });
            !records.is_empty()
        });
        self.provided.retain(|r| !r.is_expired(now));
        let wall = unix_now();
        self.names.retain(|_, (_, expires)| {
            let keep = *expires > wall;
            removed += usize::from(!keep);
            keep
        });
        removed
    }

    /// The records held for other peers, unexpired, ready to be saved.
    pub fn snapshot(&self) -> Vec<SavedProvider> {
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.providers
            .values()
            .flatten()
            .filter(|r| r.provider != self.local && !r.is_expired(now))
            .map(|r| SavedProvider {
                key: r.key.to_vec(),
                provider: r.provider.to_bytes(),
                addrs: r.addresses.iter().map(|a| a.to_vec()).collect(),
                expires_unix: r
                    .expires
                    .map(|e| (wall + e.saturating_duration_since(now)).as_secs())
                    .unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// Loads saved records; expired or unparsable ones are skipped. Returns how many loaded.
    pub fn restore(&mut self, saved: Vec<SavedProvider>) -> usize {
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut loaded = 0;
        for s in saved {
            if s.expires_unix <= wall {
                continue;
            }
            let Ok(provider) = PeerId::from_bytes(&s.provider) else {
                continue;
            };
            // A far-off (or damaged) expiry that a clock cannot hold means no expiry.
            let expires = now.checked_add(Duration::from_secs(s.expires_unix - wall));
            let record = ProviderRecord {
                key: RecordKey::new(&s.key),
                provider,
                expires,
                addresses: s
                    .addrs
                    .into_iter()
                    .filter_map(|a| Multiaddr::try_from(a).ok())
                    .collect(),
            };
            // Records this node held before its restart are not new: they do not count
            // against their providers' allowance.
            if self.insert_provider(record, now, false).is_ok() {
                loaded += 1;
            }
        }
        loaded
    }
}

fn borrow_record(record: &ProviderRecord) -> Cow<'_, ProviderRecord> {
    Cow::Borrowed(record)
}

fn borrow_name(entry: &(Record, u64)) -> Cow<'_, Record> {
    Cow::Borrowed(&entry.0)
}

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = std::iter::Map<
        hash_map::Values<'a, RecordKey, (Record, u64)>,
        fn(&'a (Record, u64)) -> Cow<'a, Record>,
    >;
    type ProvidedIter<'a> = std::iter::Map<
        hash_set::Iter<'a, ProviderRecord>,
        fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>,
    >;

    fn get(&self, key: &RecordKey) -> Option<Cow<'_, Record>> {
        let now = unix_now();
        self.names
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(borrow_name)
    }

    /// Only checked, newer name records are stored ([`ProviderStore::put_name`]).
    fn put(&mut self, record: Record) -> Result<()> {
        self.put_name(record, unix_now())
    }

    fn remove(&mut self, key: &RecordKey) {
        self.names.remove(key);
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.names.values().map(borrow_name)
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        self.insert_provider(record, Instant::now(), true)
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.providers.get(key).cloned().unwrap_or_default()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.provided.iter().map(borrow_record)
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if let hash_map::Entry::Occupied(mut e) = self.providers.entry(key.clone()) {
            e.get_mut().retain(|r| &r.provider != provider);
            if e.get().is_empty() {
                e.remove();
            }
        }
        if provider == &self.local {
            self.provided.retain(|r| &r.key != key);
        }
    }
}

impl ProviderStore {
    /// Stores a provider record within [`ProviderLimits`] and, when `counted`, within its
    /// provider's allowance of new records ([`MAX_NEW_RECORDS_PER_PEER`]).
    fn insert_provider(
        &mut self,
        mut record: ProviderRecord,
        now: Instant,
        counted: bool,
    ) -> Result<()> {
        record.addresses.truncate(self.limits.max_addrs_per_record);
        let own = record.provider == self.local;
        let held = self
            .providers
            .get(&record.key)
            .is_some_and(|rs| rs.iter().any(|r| r.provider == record.provider));
        if !own && !held {
            match self.providers.get(&record.key) {
                // Full: first come, first kept (resists record flooding).
                Some(rs) if rs.len() >= self.limits.max_providers_per_key => return Ok(()),
                Some(_) => {}
                None => {
                    if self.providers.len() >= self.limits.max_keys {
                        self.sweep_expired(now);
                    }
                    if self.providers.len() >= self.limits.max_keys {
                        return Err(Error::MaxProvidedKeys);
                    }
                }
            }
            if counted && !self.new_records.allow(record.provider, now) {
                tracing::debug!(
                    provider = %record.provider,
                    "refused a provider record: the peer's allowance of new records is spent"
                );
                return Err(Error::MaxRecords);
            }
        }
        let records = match self.providers.entry(record.key.clone()) {
            hash_map::Entry::Occupied(e) => e.into_mut(),
            hash_map::Entry::Vacant(e) => e.insert(Vec::new()),
        };
        if let Some(existing) = records.iter_mut().find(|r| r.provider == record.provider) {
            *existing = record.clone();
        } else {
            records.push(record.clone());
        }
        if own {
            self.provided.replace(record);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &[u8], provider: PeerId, ttl: Duration) -> ProviderRecord {
        ProviderRecord {
            key: RecordKey::new(&key),
            provider,
            expires: Some(Instant::now() + ttl),
            addresses: vec!["/ip4/127.0.0.1/udp/1/quic-v1".parse().expect("addr")],
        }
    }

    #[test]
    fn limits_hold_for_others_but_not_for_own_keys() {
        let local = PeerId::random();
        let limits = ProviderLimits {
            max_keys: 2,
            max_providers_per_key: 2,
            ..ProviderLimits::default()
        };
        let mut store = ProviderStore::new(local, limits);
        let hour = Duration::from_secs(3600);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        store.add_provider(record(b"k1", a, hour)).expect("k1");
        store.add_provider(record(b"k1", b, hour)).expect("k1 b");
        store
            .add_provider(record(b"k1", c, hour))
            .expect("full key ignores");
        assert_eq!(store.providers(&RecordKey::new(&b"k1")).len(), 2);
        store.add_provider(record(b"k2", a, hour)).expect("k2");
        assert!(matches!(
            store.add_provider(record(b"k3", a, hour)),
            Err(Error::MaxProvidedKeys)
        ));
        store.add_provider(record(b"k3", local, hour)).expect("own");
        assert_eq!(store.provided().count(), 1);
        store.remove_provider(&RecordKey::new(&b"k3"), &local);
        assert_eq!(store.provided().count(), 0);
        assert_eq!(store.key_count(), 2);
    }

    #[test]
    fn expired_records_are_swept_and_make_room() {
        let mut store = ProviderStore::new(
            PeerId::random(),
            ProviderLimits {
                max_keys: 1,
                ..ProviderLimits::default()
            },
        );
        store
            .add_provider(record(b"old", PeerId::random(), Duration::ZERO))
            .expect("old");
        store
            .add_provider(record(b"new", PeerId::random(), Duration::from_secs(60)))
            .expect("sweeping the expired key makes room");
        assert_eq!(store.key_count(), 1);
        assert!(store.providers(&RecordKey::new(&b"old")).is_empty());
    }

    #[test]
    fn records_for_others_survive_a_snapshot_and_restore() {
        let local = PeerId::random();
        let mut store = ProviderStore::new(local, ProviderLimits::default());
        let other = PeerId::random();
        store
            .add_provider(record(b"theirs", other, Duration::from_secs(600)))
            .expect("theirs");
        store
            .add_provider(record(b"mine", local, Duration::from_secs(600)))
            .expect("mine");
        store
            .add_provider(record(b"lapsed", other, Duration::ZERO))
            .expect("lapsed");
        let saved = store.snapshot();
        assert_eq!(saved.len(), 1, "own and expired records are not saved");
        let mut restored = ProviderStore::new(local, ProviderLimits::default());
        assert_eq!(restored.restore(saved), 1);
        let got = restored.providers(&RecordKey::new(&b"theirs"));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].provider, other);
        assert_eq!(got[0].addresses.len(), 1);
        let left = got[0].expires.expect("expiry") - Instant::now();
        assert!(left > Duration::from_secs(590) && left <= Duration::from_secs(601));
    }

    /// `n` new records of `provider` at `now`; how many were stored.
    fn offer(
        store: &mut ProviderStore,
        provider: PeerId,
        n: usize,
        tag: &str,
        now: Instant,
    ) -> usize {
        (0..n)
            .filter(|i| {
                let key = format!("{tag} {i}");
                store
                    .insert_provider(
                        record(key.as_bytes(), provider, Duration::from_secs(3600)),
                        now,
                        true,
                    )
                    .is_ok()
            })
            .count()
    }

    #[test]
    fn one_peer_gets_at_most_max_new_records_per_window() {
        let local = PeerId::random();
        let mut store = ProviderStore::new(local, ProviderLimits::default());
        let (flooder, other) = (PeerId::random(), PeerId::random());
        let start = Instant::now();
        assert_eq!(
            offer(
                &mut store,
                flooder,
                MAX_NEW_RECORDS_PER_PEER + 1,
                "a",
                start
            ),
            MAX_NEW_RECORDS_PER_PEER,
            "one over the allowance is refused"
        );
        assert!(matches!(
            store.insert_provider(record(b"b", flooder, Duration::from_secs(60)), start, true),
            Err(Error::MaxRecords)
        ));
        // Re-announcing a record held is not new; other peers and this node are not held
        // to the flooder's allowance.
        assert_eq!(offer(&mut store, flooder, 10, "a", start), 10);
        assert_eq!(offer(&mut store, other, 10, "a", start), 10);
        assert_eq!(offer(&mut store, local, 10, "mine", start), 10);
        let late = start + NEW_RECORD_WINDOW - Duration::from_secs(1);
        assert_eq!(
            offer(&mut store, flooder, 1, "c", late),
            0,
            "still the same window"
        );
        let next = start + NEW_RECORD_WINDOW;
        assert_eq!(offer(&mut store, flooder, 5, "c", next), 5, "a new window");
    }

    #[test]
    fn a_full_key_ignores_a_new_provider_without_spending_its_allowance() {
        let limits = ProviderLimits {
            max_providers_per_key: 1,
            ..ProviderLimits::default()
        };
        let mut store = ProviderStore::new(PeerId::random(), limits);
        let (first, late) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        assert_eq!(offer(&mut store, first, 1, "k", now), 1);
        assert_eq!(
            offer(&mut store, late, 1, "k", now),
            1,
            "ignored, not refused"
        );
        assert_eq!(store.providers(&RecordKey::new(&b"k 0")).len(), 1);
        assert!(!store.new_records.windows.contains_key(&late));
    }

    #[test]
    fn records_loaded_at_start_do_not_spend_an_allowance() {
        let local = PeerId::random();
        let mut store = ProviderStore::new(local, ProviderLimits::default());
        let heavy = PeerId::random();
        let saved: Vec<SavedProvider> = (0..MAX_NEW_RECORDS_PER_PEER + 5)
            .map(|i| SavedProvider {
                key: format!("k{i}").into_bytes(),
                provider: heavy.to_bytes(),
                addrs: Vec::new(),
                expires_unix: unix_now() + 3600,
            })
            .collect();
        assert_eq!(store.restore(saved), MAX_NEW_RECORDS_PER_PEER + 5);
        assert_eq!(offer(&mut store, heavy, 3, "fresh", Instant::now()), 3);
    }

    #[test]
    fn the_new_record_counters_are_bounded() {
        let mut counts = NewRecordCounts::default();
        let start = Instant::now();
        let first = PeerId::random();
        for _ in 0..MAX_NEW_RECORDS_PER_PEER {
            assert!(counts.allow(first, start));
        }
        assert!(!counts.allow(first, start));
        for i in 0..MAX_COUNTED_PROVIDERS {
            let now = start + Duration::from_millis(i as u64);
            assert!(counts.allow(PeerId::random(), now));
            assert!(counts.windows.len() <= MAX_COUNTED_PROVIDERS);
            assert_eq!(counts.order.len(), counts.windows.len());
        }
        // The oldest window went to make room: its peer starts again.
        assert!(!counts.windows.contains_key(&first));
        assert!(counts.allow(first, start + Duration::from_secs(20)));
        // Once every window has ended, the counters are empty again but for the newest.
        let later = start + Duration::from_secs(20) + NEW_RECORD_WINDOW;
        assert!(counts.allow(PeerId::random(), later));
        assert_eq!(counts.windows.len(), 1);
        assert_eq!(counts.order.len(), 1);
    }

    fn name_record(
        key: &commons_protocol::provenance::SecretKey,
        seq: u64,
        issued_unix: u64,
        expires_unix: u64,
    ) -> Record {
        use commons_protocol::{
            provenance::{name_key, NameRecord},
            Hash, NameRef,
        };
        let public = key.public();
        let name = NameRef::parse("lab-x/corpus").expect("name");
        let root = Hash::of(&seq.to_be_bytes());
        let signed =
            NameRecord::new(&public, &name, root, seq, None, issued_unix..expires_unix).sign(key);
        let k = name_key(&public, &signed.record.name_ref());
        Record::new(RecordKey::new(&k.as_bytes()), signed.encode())
    }

    #[test]
    fn only_checked_newer_name_records_are_stored() {
        use commons_protocol::provenance::{KeyAlgorithm, SecretKey};
        let key = SecretKey::from_seed(KeyAlgorithm::P256, &[1; 32]).expect("key");
        let mut store = ProviderStore::new(PeerId::random(), ProviderLimits::default());
        let now = unix_now();
        let (from, to) = (now - 60, now + 3600);
        let v1 = name_record(&key, 1, from, to);
        let v2 = name_record(&key, 2, from, to);
        store.put_name(v1.clone(), now).expect("v1");
        store.put_name(v2.clone(), now).expect("v2");
        store.put_name(v2.clone(), now).expect("the same again");
        assert!(store.put_name(v1.clone(), now).is_err(), "a replayed v1");
        assert_eq!(store.get(&v1.key).expect("held").value, v2.value);
        let mut forged = v2.clone();
        let last = forged.value.len() - 1;
        forged.value[last] ^= 1;
        assert!(store.put_name(forged, now).is_err(), "a bad signature");
        let mut moved = name_record(&key, 3, from, to);
        moved.key = RecordKey::new(&b"another key");
        assert!(store.put_name(moved, now).is_err(), "under the wrong key");
        let mut huge = name_record(&key, 4, from, to);
        huge.value.resize(64 * 1024, 0);
        assert!(store.put_name(huge, now).is_err(), "over the size limit");
        assert!(
            store
                .put_name(name_record(&key, 5, now - 7200, now - 3600), now)
                .is_err(),
            "expired"
        );
        assert_eq!(store.get(&v1.key).expect("held").value, v2.value);
        let mut live = ProviderStore::new(PeerId::random(), ProviderLimits::default());
        let wall = unix_now();
        live.put(name_record(&key, 1, wall, wall + 3600))
            .expect("live");
        let saved = live.name_snapshot();
        let mut restored = ProviderStore::new(PeerId::random(), ProviderLimits::default());
        assert_eq!(restored.restore_names(saved), 1);
        assert_eq!(restored.records().count(), 1);
    }

    #[test]
    fn a_full_name_store_keeps_the_records_nearest_to_this_node() {
        use commons_protocol::provenance::{KeyAlgorithm, SecretKey};
        let local = PeerId::random();
        let limits = ProviderLimits {
            max_names: 8,
            ..ProviderLimits::default()
        };
        let mut store = ProviderStore::new(local, limits);
        let now = unix_now();
        let me = KBucketKey::from(local);
        let mut offered = Vec::new();
        for i in 0..40u8 {
            let key = SecretKey::from_seed(KeyAlgorithm::Ed25519, &[i; 32]).expect("key");
            let record = name_record(&key, 1, now, now + 3600);
            let _ = store.put_name(record.clone(), now);
            offered.push(record.key);
            assert!(store.name_count() <= 8, "bounded");
        }
        // Whatever the order they came in, the 8 nearest keys are the ones kept.
        offered.sort_by_key(|k| me.distance(&KBucketKey::new(k.clone())));
        let mut kept: Vec<RecordKey> = store.names.keys().cloned().collect();
        kept.sort_by_key(|k| me.distance(&KBucketKey::new(k.clone())));
        assert_eq!(kept, offered[..8].to_vec());
    }
}
