//! A calendar queue (R. Brown, CACM 1988): pending events in buckets of virtual time, each
//! bucket sorted only when its time comes.
//!
//! The swarm model's queue. The radix heap it used before moved an event several times
//! between its buckets on the way out (`RadixHeapMap::constrain`, a tenth of a
//! 100,000-mirror run's time); here an event is put in its bucket once and sorted once,
//! among the hundred or so due in the same millisecond. Keys are unique, so the order
//! taken is the same as any other queue's: runs do not change.

use std::collections::BinaryHeap;

/// An item's key: (due, in nanoseconds; a sequence number that makes it unique).
pub type Key = (u64, u64);

/// Pending items, taken earliest key first. An item may not be put in with a key before
/// the last one taken (a discrete-event model's events never are).
pub struct Calendar<V> {
    /// Buckets are `1 << shift` nanoseconds wide.
    shift: u32,
    /// The buckets after the current one, in a ring: bucket `b` at `b % buckets.len()`
    /// (a power of two). Unsorted.
    buckets: Vec<Vec<(Key, V)>>,
    /// Items in `buckets`.
    in_ring: usize,
    /// The number of the bucket items are being taken from.
    current: u64,
    /// That bucket's items, sorted, latest first (taken from the end).
    run: Vec<(Key, V)>,
    /// Items due beyond the ring's reach, moved into it as it turns.
    far: BinaryHeap<Far<V>>,
}

/// An item beyond the ring: ordered by its key only, earliest at the top of the heap.
struct Far<V>(Key, V);

impl<V> PartialEq for Far<V> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<V> Eq for Far<V> {}

impl<V> PartialOrd for Far<V> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<V> Ord for Far<V> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.cmp(&self.0)
    }
}

/// The swarm model's buckets: about a millisecond each (events are due from a few
/// milliseconds to seconds ahead, a hundred or so per millisecond and partition at
/// 100,000 mirrors), 8,192 of them: 8.6 s ahead, beyond which only long timers go.
const SHIFT: u32 = 20;
const BUCKETS: usize = 1 << 13;

impl<V> Default for Calendar<V> {
    fn default() -> Self {
        Self::new(SHIFT, BUCKETS)
    }
}

impl<V> Calendar<V> {
    /// Buckets `1 << shift` nanoseconds wide, `buckets` of them (a power of two) in the
    /// ring.
    pub fn new(shift: u32, buckets: usize) -> Self {
        assert!(buckets.is_power_of_two(), "{buckets} buckets");
        Self {
            shift,
            buckets: (0..buckets).map(|_| Vec::new()).collect(),
            in_ring: 0,
            current: 0,
            run: Vec::new(),
            far: BinaryHeap::new(),
        }
    }

    /// Whether no item is pending.
    pub fn is_empty(&self) -> bool {
        self.run.is_empty() && self.in_ring == 0 && self.far.is_empty()
    }

    /// Puts `value` in, due at `key` (not before the last key taken).
    pub fn push(&mut self, key: Key, value: V) {
        let bucket = key.0 >> self.shift;
        if bucket <= self.current {
            // Due in the bucket being taken: into its sorted run (`bucket` is never
            // before it, as no key is before the last taken).
            let at = self.run.partition_point(|(k, _)| *k > key);
            self.run.insert(at, (key, value));
        } else if bucket - self.current < self.buckets.len() as u64 {
            self.put_in_ring(bucket, key, value);
        } else {
            self.far.push(Far(key, value));
        }
    }

    /// Takes the item with the earliest key, if any.
    pub fn pop(&mut self) -> Option<(Key, V)> {
        loop {
            if let Some(item) = self.run.pop() {
                return Some(item);
            }
            if self.in_ring > 0 {
                self.current += 1;
            } else if let Some(Far(key, _)) = self.far.peek() {
                // Nothing in the ring: straight to the far items' first bucket.
                self.current = key.0 >> self.shift;
            } else {
                return None;
            }
            self.take_current();
        }
    }

    /// Makes the current bucket the run: the far items it now reaches go into the ring
    /// first, then the bucket is sorted.
    fn take_current(&mut self) {
        let reach = self.current + self.buckets.len() as u64;
        while let Some(Far(key, _)) = self.far.peek() {
            let bucket = key.0 >> self.shift;
            if bucket >= reach {
                break;
            }
            let Far(key, value) = self.far.pop().expect("peeked");
            self.put_in_ring(bucket, key, value);
        }
        let slot = self.slot(self.current);
        // The emptied run's allocation goes back to the ring, for the bucket's next turn.
        std::mem::swap(&mut self.run, &mut self.buckets[slot]);
        self.in_ring -= self.run.len();
        self.run
            .sort_unstable_by_key(|(key, _)| std::cmp::Reverse(*key));
    }

    fn put_in_ring(&mut self, bucket: u64, key: Key, value: V) {
        let slot = self.slot(bucket);
        self.buckets[slot].push((key, value));
        self.in_ring += 1;
    }

    fn slot(&self, bucket: u64) -> usize {
        (bucket as usize) & (self.buckets.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Random puts (due now, soon, within the ring, beyond it, far beyond) and takes, as a
    /// model makes them, against a sorted map: the same items in the same order, with a
    /// ring small enough to turn many times and to send items beyond it.
    #[test]
    fn items_come_out_in_key_order_across_buckets_the_ring_and_beyond() {
        let mut rng = StdRng::seed_from_u64(5);
        // Buckets of 16 ns, 8 of them: the ring reaches 128 ns ahead.
        let mut calendar = Calendar::new(4, 8);
        let mut reference = std::collections::BTreeMap::new();
        let (mut now, mut seq, mut far, mut jumps) = (0u64, 0u64, 0, 0);
        for _ in 0..50_000 {
            if rng.random_bool(0.55) {
                seq += 1;
                let when = now
                    + match rng.random_range(0..10) {
                        0 => 0,
                        1..=3 => rng.random_range(0..16),
                        4..=7 => rng.random_range(0..128),
                        8 => rng.random_range(128..1_000),
                        _ => rng.random_range(1_000..100_000),
                    };
                far += usize::from(when >> 4 >= (now >> 4) + 8);
                calendar.push((when, seq), seq);
                reference.insert((when, seq), seq);
            } else {
                let ring_was_empty = calendar.run.is_empty() && calendar.in_ring == 0;
                let got = calendar.pop();
                assert_eq!(got, reference.pop_first());
                if let Some(((when, _), _)) = got {
                    jumps += usize::from(ring_was_empty && when >> 4 > (now >> 4) + 8);
                    now = when;
                }
            }
            assert_eq!(calendar.is_empty(), reference.is_empty());
        }
        while let Some(item) = calendar.pop() {
            assert_eq!(Some(item), reference.pop_first());
        }
        assert!(reference.is_empty() && calendar.is_empty());
        assert!(far > 1_000, "items put beyond the ring: {far}");
        assert!(jumps > 0, "takes that jumped past an empty ring: {jumps}");
    }
}
