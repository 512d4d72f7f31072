//! Which batches of a blob's missing spans are waiting, in flight (with whom, since when),
//! or done. Pure bookkeeping: time is passed in, and a random choice comes from a seeded
//! generator, so the same calls give the same answers.

use std::{
    collections::{BTreeSet, VecDeque},
    ops::Range,
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, Rng, SeedableRng};

/// Completed batch times the endgame's median is taken over.
const RECENT_BATCHES: usize = 32;

/// The most spans in one batch (a larger `per_batch` is cut to this): what a batch still
/// lacks is then one bit mask kept beside its range, not a list of its own (at 100,000
/// mirrors, the scale model's queue searches spent half their time loading those lists).
pub(crate) const MAX_BATCH_SPANS: u64 = u64::BITS as u64;

/// What a request slot should do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// Fetch this batch.
    Batch(usize),
    /// Nothing to do now, but batches are still in flight: look again later.
    Wait,
    /// Every batch is done.
    Done,
}

/// What a partial provider holds, as [`Schedule::take`] is told.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held<'a> {
    /// Its spans, as sorted ranges.
    pub(crate) spans: &'a [Range<u64>],
    /// The [`Schedule::queue_gen`] as of which it was last found to have nothing the
    /// queue lacks, with these same spans: only batches queued or changed since then need
    /// a look (the scale model's largest cost at 10,000 mirrors was searching them all).
    pub(crate) found_nothing_at: Option<u64>,
}

/// One batch: what a search of the queue reads of it, in one place.
#[derive(Debug, Clone, PartialEq)]
struct Batch {
    /// Its spans, at most [`MAX_BATCH_SPANS`].
    spans: Range<u64>,
    /// Bit `i` set: span `spans.start + i` may still be missing (all set until a partial
    /// fetch says what is left; a provider is given the batch only if it holds one of
    /// these; left as is once done: a done batch never waits again).
    lacking: u64,
    /// The [`Schedule::queue_gen`] at which it last joined the queue or what it lacks last
    /// changed.
    changed_at: u64,
}

impl Batch {
    /// The bits of the spans of `r` inside this batch. `r` may start before the batch
    /// (offset 0); saturating, so that even a range wholly before it gives none.
    fn bits_of(&self, r: &Range<u64>) -> u64 {
        let from = r.start.saturating_sub(self.spans.start);
        let to = r.end.min(self.spans.end).saturating_sub(self.spans.start);
        span_bits(from, to)
    }

    /// Whether it still lacks a span within `held`, sorted span ranges of which the first
    /// is the first to end after the batch's start ([`first_ending_after`]).
    fn lacks_some_in(&self, held: &[Range<u64>]) -> bool {
        held.iter()
            .take_while(|h| h.start < self.spans.end)
            .any(|h| self.bits_of(h) & self.lacking != 0)
    }
}

/// The first of `held` (sorted, non-overlapping span ranges, as a peer's `Have` answer is
/// checked to be and [`union`] makes) to end after `start`, given that none before `from`
/// does: a galloping search from `from`, so that a search of the queue, whose
/// batches mostly come in the order of their spans, goes on from where the last batch's
/// ended instead of searching the whole list again (a third of a queue search's samples
/// at 100,000 mirrors were that binary search).
fn first_ending_after(held: &[Range<u64>], from: usize, start: u64) -> usize {
    let rest = &held[from.min(held.len())..];
    let (mut lo, mut step) = (0, 1);
    let hi = loop {
        let probe = lo + step - 1;
        if probe >= rest.len() {
            break rest.len();
        }
        if rest[probe].end > start {
            break probe + 1;
        }
        lo = probe + 1;
        step *= 2;
    };
    held.len() - rest.len() + lo + rest[lo..hi].partition_point(|h| h.end <= start)
}

/// The bits of a batch's spans `from..to` (offsets into the batch; past 64 counts as 64).
fn span_bits(from: u64, to: u64) -> u64 {
    let below = |n: u64| u64::MAX.checked_shr(64 - n.min(64) as u32).unwrap_or(0);
    below(to) & !below(from)
}

/// The batches of one scheduling round.
#[derive(Debug)]
pub(crate) struct Schedule<P> {
    batches: Vec<Batch>,
    /// The batches waiting, each with a copy of itself as it joined the queue, so that a
    /// search reads the queue in order and nothing else (not a batch elsewhere for each
    /// entry). The copy stays true: what a batch lacks changes only in `give_back`, by a
    /// peer fetching it, so never while it waits (checked in tests). 40 bytes an entry
    /// instead of 8: 1 MB for the 25,600 batches of a 100 GiB blob, whose scarce-batch
    /// search already reads the whole queue.
    waiting: VecDeque<(usize, Batch)>,
    fetching: Vec<Vec<(P, Instant)>>,
    done: Vec<bool>,
    /// Batches not yet done, so "all done" needs no scan.
    undone: usize,
    /// Batches someone is fetching: the endgame looks only at these, never at them all.
    in_flight: BTreeSet<usize>,
    /// How long the last [`RECENT_BATCHES`] completed batches took, for the endgame's
    /// idea of "too slow".
    took: VecDeque<Duration>,
    /// Before any batch has completed, how long a batch in flight may take before an idle
    /// provider duplicates it.
    first_wait: Duration,
    /// Bumped whenever a batch joins the queue or what one lacks changes: a partial
    /// provider found nothing to take in the queue as of one value finds nothing as long as
    /// it stays (batches only leave it otherwise).
    queue_gen: u64,
    rng: StdRng,
}

impl<P: Copy + PartialEq> Schedule<P> {
    /// Cuts span ranges into batches of at most `per_batch` (and [`MAX_BATCH_SPANS`])
    /// spans, in order.
    pub(crate) fn new(
        missing: &[Range<u64>],
        per_batch: u64,
        first_wait: Duration,
        seed: u64,
    ) -> Self {
        let per_batch = per_batch.clamp(1, MAX_BATCH_SPANS);
        let mut batches = Vec::new();
        for r in missing {
            let mut start = r.start;
            while start < r.end {
                let end = r.end.min(start + per_batch);
                batches.push(Batch {
                    spans: start..end,
                    lacking: span_bits(0, end - start),
                    changed_at: 0,
                });
                start = end;
            }
        }
        let n = batches.len();
        Self {
            waiting: batches.iter().cloned().enumerate().collect(),
            batches,
            fetching: vec![Vec::new(); n],
            done: vec![false; n],
            undone: n,
            in_flight: BTreeSet::new(),
            took: VecDeque::with_capacity(RECENT_BATCHES),
            first_wait,
            queue_gen: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub(crate) fn spans(&self, batch: usize) -> Range<u64> {
        self.batches[batch].spans.clone()
    }

    /// Batches not done yet.
    pub(crate) fn undone(&self) -> usize {
        self.undone
    }

    /// Changes whenever a partial provider may find a batch it found none in before.
    pub(crate) fn queue_gen(&self) -> u64 {
        self.queue_gen
    }

    /// Whether anyone is fetching any batch.
    pub(crate) fn anything_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// How long batches take, as the endgame sees it at `now` (`None`: none has completed
    /// yet, so a batch waits the first wait).
    fn batch_times(&self, now: Instant) -> Option<BatchTimes> {
        let ages = self.in_flight.iter().filter_map(|&b| self.age(b, now));
        BatchTimes::new(self.took.iter().copied(), ages, self.first_wait)
    }

    /// How long batch `batch` has been in flight at `now` (its oldest copy).
    fn age(&self, batch: usize, now: Instant) -> Option<Duration> {
        let since = self.fetching[batch].iter().map(|(_, since)| *since).min()?;
        Some(now.saturating_duration_since(since))
    }

    /// The batches in flight `peer` may duplicate once stalled: not done, fetched by one
    /// other peer; with when that one began.
    fn duplicable_by(&self, peer: P) -> impl Iterator<Item = (usize, Instant)> + '_ {
        self.in_flight
            .iter()
            .filter_map(move |&b| match self.fetching[b][..] {
                [(other, since)] if other != peer && !self.done[b] => Some((b, since)),
                _ => None,
            })
    }

    /// When a batch in flight with one peer other than `peer` counts as stalled, as things
    /// stand at `now`, so that `peer` may duplicate it (`None`: no such batch). The other
    /// batches' ages, still growing, may push that time back: at the time returned the
    /// batch may not count as stalled yet, and asked again this gives a later time.
    pub(crate) fn next_stall_for(&self, peer: P, now: Instant) -> Option<Instant> {
        let mut candidates = self.duplicable_by(peer).peekable();
        candidates.peek()?;
        let times = self.batch_times(now);
        candidates
            .map(|(_, since)| {
                since + self.patience(times.as_ref(), now.saturating_duration_since(since))
            })
            .min()
    }

    /// How long a batch in flight for `age` may take before it counts as stalled.
    fn patience(&self, times: Option<&BatchTimes>, age: Duration) -> Duration {
        times.map_or(self.first_wait, |times| times.patience(age))
    }

    /// Starts the queue `fraction` of the way in (wrapping around), so peers fetching the
    /// same blob together ask for different parts first.
    pub(crate) fn start_at(&mut self, fraction: f64) {
        let n = self.waiting.len();
        let at = ((n as f64 * fraction) as usize).min(n.saturating_sub(1));
        self.waiting.rotate_left(at);
    }

    /// The first waiting batch `peer` can help with: any for a complete provider (`held`
    /// is `None`), else one reaching into a span it holds.
    fn first_waiting(
        &mut self,
        held: Option<Held<'_>>,
        held_by_others: Option<&[Range<u64>]>,
    ) -> Option<usize> {
        let at = match (held, held_by_others) {
            (Some(held), _) => self.position_for(held)?,
            (None, None) => 0,
            // A batch no partial provider can give, picked at random so that peers fetching
            // together from one seeder rarely ask it for the same one; none such: leave
            // the rest to the partial providers (the endgame still rescues a stalled one).
            (None, Some(held_by_others)) => {
                let scarce: Vec<usize> = (0..self.waiting.len())
                    .filter(|&i| {
                        let batch = &self.waiting[i].1;
                        let first = first_ending_after(held_by_others, 0, batch.spans.start);
                        !batch.lacks_some_in(&held_by_others[first..])
                    })
                    .collect();
                if scarce.is_empty() {
                    return None;
                }
                scarce[self.rng.random_range(0..scarce.len())]
            }
        };
        self.waiting.remove(at).map(|(b, _)| b)
    }

    /// Where in the queue the first batch is that still lacks some of the spans `held`.
    /// One that has not changed since `held` last found nothing cannot. Batches join the
    /// queue only at its front, each with a newer generation, and what a batch lacks
    /// changes only while it is in flight: so the queue is ordered newest first, and the
    /// search ends at the first batch unchanged since.
    fn position_for(&self, held: Held<'_>) -> Option<usize> {
        #[cfg(test)]
        for (b, copy) in &self.waiting {
            assert_eq!(copy, &self.batches[*b], "batch {b} changed while waiting");
        }
        // The first of `held` to end after the last batch's start, and that start.
        let (mut first, mut last_start) = (0, 0);
        self.waiting
            .iter()
            .take_while(|(_, batch)| held.found_nothing_at.is_none_or(|at| batch.changed_at > at))
            .position(|(_, batch)| {
                if batch.spans.start < last_start {
                    first = 0;
                }
                last_start = batch.spans.start;
                first = first_ending_after(held.spans, first, batch.spans.start);
                batch.lacks_some_in(&held.spans[first..])
            })
    }

    /// The next thing for `peer` to do at `now`: a waiting batch it can help with, if any
    /// (for a complete provider, preferably one none of the spans the partial providers
    /// hold together, `held_by_others` ([`union`]; `None`: there is no partial provider),
    /// covers); else (endgame, complete providers only) a batch exactly one other
    /// peer has been fetching for too long; else wait, or stop.
    pub(crate) fn take(
        &mut self,
        peer: P,
        held: Option<Held<'_>>,
        held_by_others: Option<&[Range<u64>]>,
        now: Instant,
    ) -> Take {
        let batch = match self.first_waiting(held, held_by_others) {
            Some(b) => b,
            None if held.is_some() && self.undone > 0 => return Take::Wait,
            None => {
                if self.undone == 0 {
                    return Take::Done;
                }
                let mut candidates = self.duplicable_by(peer).peekable();
                let times = candidates.peek().and_then(|_| self.batch_times(now));
                let stalled = candidates
                    .find(|&(_, since)| {
                        let age = now.saturating_duration_since(since);
                        age >= self.patience(times.as_ref(), age)
                    })
                    .map(|(b, _)| b);
                match stalled {
                    Some(b) => b,
                    None => return Take::Wait,
                }
            }
        };
        self.fetching[batch].push((peer, now));
        self.in_flight.insert(batch);
        Take::Batch(batch)
    }

    /// `peer` is done with `batch` at `now`: completed it (`ok`) or gave up; a batch nobody
    /// is fetching any more goes back to the front of the queue. Returns the other peers
    /// still fetching a batch that is now done (their copies are no longer needed).
    pub(crate) fn finish(&mut self, batch: usize, peer: P, ok: bool, now: Instant) -> Vec<P> {
        let since = self.fetching[batch]
            .iter()
            .find(|(p, _)| *p == peer)
            .map(|(_, t)| *t);
        self.fetching[batch].retain(|(p, _)| *p != peer);
        if ok {
            if !self.done[batch] {
                self.undone -= 1;
                if let Some(since) = since {
                    if self.took.len() == RECENT_BATCHES {
                        self.took.pop_front();
                    }
                    self.took.push_back(now.duration_since(since));
                }
            }
            self.done[batch] = true;
            self.in_flight.remove(&batch);
            return std::mem::take(&mut self.fetching[batch])
                .into_iter()
                .map(|(p, _)| p)
                .collect();
        }
        if self.fetching[batch].is_empty() {
            self.in_flight.remove(&batch);
            if !self.done[batch] {
                self.requeue(batch);
            }
        }
        Vec::new()
    }

    /// `peer` stops working on `batch` without having failed: unless done, or someone
    /// else has it, it goes back to the front of the queue.
    /// `left`, when known, is what the batch still lacks: only providers holding some of
    /// it are given the batch again.
    pub(crate) fn give_back(&mut self, batch: usize, peer: P, left: Option<Vec<Range<u64>>>) {
        if let Some(left) = left {
            let b = &mut self.batches[batch];
            b.lacking = left.iter().fold(0, |bits, r| bits | b.bits_of(r));
            self.queue_gen += 1;
            b.changed_at = self.queue_gen;
        }
        self.fetching[batch].retain(|(p, _)| *p != peer);
        if self.fetching[batch].is_empty() {
            self.in_flight.remove(&batch);
            if !self.done[batch] {
                self.requeue(batch);
            }
        }
    }

    /// Puts `batch` back at the front of the queue, as changed now.
    fn requeue(&mut self, batch: usize) {
        self.queue_gen += 1;
        self.batches[batch].changed_at = self.queue_gen;
        self.waiting
            .push_front((batch, self.batches[batch].clone()));
    }

    /// Stops handing out work (the blob's layout changed).
    pub(crate) fn abandon(&mut self) {
        self.waiting.clear();
        self.in_flight.clear();
        self.undone = 0;
        self.done.iter_mut().for_each(|d| *d = true);
    }
}

/// The spans (of `span_groups` groups) wholly inside the held group ranges of a blob of
/// `groups` groups, whose last span may be short.
pub(crate) fn held_spans(held: &[Range<u64>], groups: u64, span_groups: u64) -> Vec<Range<u64>> {
    let spans = groups.div_ceil(span_groups);
    held.iter()
        .filter_map(|r| {
            let first = r.start.div_ceil(span_groups);
            let end = if r.end >= groups {
                spans
            } else {
                r.end / span_groups
            };
            (first < end).then_some(first..end)
        })
        .collect()
}

/// The parts of span ranges `a` that are also in span ranges `b` (both sorted).
pub(crate) fn intersect(a: &[Range<u64>], b: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let (start, end) = (x.start.max(y.start), x.end.min(y.end));
            if start < end {
                out.push(start..end);
            }
        }
    }
    out
}

/// The union of sorted span-range lists, sorted and merged. Whether a batch lacks a span
/// some partial provider holds is whether it lacks one in their union: one search per
/// batch, not one per batch and provider (a third of the scale model's time before).
pub(crate) fn union<'a>(lists: impl IntoIterator<Item = &'a [Range<u64>]>) -> Vec<Range<u64>> {
    let mut all: Vec<Range<u64>> = lists.into_iter().flatten().cloned().collect();
    all.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(all.len());
    for r in all.into_iter().filter(|r| r.start < r.end) {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// The times the endgame judges a batch in flight against: the recent batches' times and
/// the ages of those in flight, sorted.
///
/// A batch counts as stalled after twice the median time of the others, where a batch
/// still in flight counts as having taken at least its age so far (the median of times
/// partly unknown, as Kaplan and Meier estimate it; the lower median, so one batch done
/// and one other in flight still give the time of the one done). Batches in flight
/// together share the fetcher's link and cores, and not evenly: on loopback, one of four
/// batches from four equal seeders took 27 ms while the other three took 80–88 ms, and
/// with that one time alone, all three were duplicated at 54 ms (the swarm tests fetched a
/// third of the blob twice). Counting their ages, still growing, keeps them from counting
/// as stalled until the longest wait, while a batch stuck as others complete is duplicated
/// after twice their time.
#[derive(Debug)]
struct BatchTimes {
    /// (time, completed): a completed batch's time, or an in-flight batch's age.
    times: Vec<(Duration, bool)>,
    /// The longest a batch waits, when the median is unknown (most of the others are still
    /// in flight, longer than those done took): the first wait beyond twice the completed
    /// batches' median. Added, not the larger of the two: on a slow link, where a batch
    /// takes seconds, the others' ages must still count.
    longest: Duration,
}

impl BatchTimes {
    /// From the completed batches' times and the in-flight batches' ages (`None`: none has
    /// completed).
    fn new(
        took: impl Iterator<Item = Duration>,
        ages: impl Iterator<Item = Duration>,
        first_wait: Duration,
    ) -> Option<Self> {
        let mut took: Vec<Duration> = took.collect();
        took.sort_unstable();
        let done_median = *took.get(took.len().checked_sub(1)? / 2)?;
        let mut times: Vec<(Duration, bool)> = took.into_iter().map(|t| (t, true)).collect();
        times.extend(ages.map(|age| (age, false)));
        // At equal times, a completed batch first: one still in flight took longer.
        times.sort_unstable_by_key(|&(t, done)| (t, !done));
        Some(Self {
            times,
            longest: first_wait + done_median * 2,
        })
    }

    /// How long the batch in flight for `age` may take before it counts as stalled: twice
    /// the others' median (the first completed time by which at most half of them are
    /// estimated to be still going), at most [`Self::longest`].
    fn patience(&self, age: Duration) -> Duration {
        // All but the batch judged (one entry of its age, not completed).
        let mut at_risk = self.times.len() - 1;
        let mut judged = false;
        let mut going = 1.0f64;
        for &(time, done) in &self.times {
            if !done && !judged && time == age {
                judged = true;
                continue;
            }
            if done {
                going *= 1.0 - 1.0 / at_risk as f64;
                // The tolerance makes exact halves (two of four done) count as half.
                if going <= 0.5 + 1e-9 {
                    return (time * 2).min(self.longest);
                }
            }
            at_risk = at_risk.saturating_sub(1);
        }
        self.longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST_WAIT: Duration = Duration::from_secs(5);

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of span ranges, not ranges of values
    fn what_partial_providers_hold_together_is_one_sorted_list() {
        let lists = [vec![0..2, 10..12], vec![2..4, 5..6, 11..15], vec![7..7]];
        assert_eq!(
            union(lists.iter().map(|l| l.as_slice())),
            vec![0..4, 5..6, 10..15]
        );
        assert!(union([]).is_empty());
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of span ranges, not ranges of values
    fn batches_cover_the_missing_spans_in_order() {
        let s = Schedule::<u8>::new(&[0..5, 9..10], 2, FIRST_WAIT, 0);
        let spans: Vec<Range<u64>> = s.batches.iter().map(|b| b.spans.clone()).collect();
        assert_eq!(spans, vec![0..2, 2..4, 4..5, 9..10]);
        assert_eq!(
            s.batches.iter().map(|b| b.lacking).collect::<Vec<_>>(),
            vec![0b11, 0b11, 0b1, 0b1]
        );
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of span ranges, not ranges of values
    fn peers_pull_batches_and_duplicate_only_stalled_ones() {
        let (a, b, c) = (1u8, 2u8, 3u8);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Schedule::new(&[0..3], 1, FIRST_WAIT, 0);
        assert_eq!(s.take(a, None, None, at(0)), Take::Batch(0));
        assert_eq!(s.take(b, None, None, at(0)), Take::Batch(1));
        s.finish(1, b, true, at(100)); // a batch takes 100 ms: stalled after 200 ms
        assert_eq!(s.take(b, None, None, at(100)), Take::Batch(2));
        // Nothing waits, and nothing in flight is stalled yet: c waits until a's batch 0
        // is 200 ms old.
        assert_eq!(s.take(c, None, None, at(150)), Take::Wait);
        assert_eq!(s.next_stall_for(c, at(150)), Some(at(200)));
        // a's batch 0 is 250 ms old: c duplicates it; b's batch 2 is not stalled.
        assert_eq!(s.take(c, None, None, at(250)), Take::Batch(0));
        assert_eq!(
            s.take(c, None, None, at(250)),
            Take::Wait,
            "one copy at most"
        );
        assert_eq!(
            s.finish(0, a, true, at(260)),
            vec![c],
            "c's copy is not needed"
        );
        assert!(s.waiting.is_empty(), "a done batch is never requeued");
        s.finish(2, b, true, at(280));
        assert_eq!(s.take(c, None, None, at(300)), Take::Done);
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of span ranges, not ranges of values
    fn batches_in_flight_together_are_not_stalled_by_one_that_finished_first() {
        // The swarm test's case: four seeders, four batches; one finished in 27 ms, the
        // others, sharing the fetcher with it, take 80-88 ms.
        let peers = [1u8, 2, 3, 4];
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Schedule::new(&[0..4], 1, FIRST_WAIT, 0);
        for (b, p) in peers.iter().enumerate() {
            assert_eq!(s.take(*p, None, None, at(0)), Take::Batch(b));
        }
        s.finish(0, peers[0], true, at(27));
        // Peer 1 is idle. The others have taken 27 ms too, and longer as they go on: the
        // median is unknown, so none is stalled (at 54 ms all three were duplicated when
        // only the 27 ms counted) ...
        for now in [27, 54, 60, 120, 2_000, 5_053] {
            assert_eq!(
                s.take(peers[0], None, None, at(now)),
                Take::Wait,
                "at {now} ms"
            );
            assert_eq!(s.next_stall_for(peers[0], at(now)), Some(at(5_054)));
        }
        // ... until the first wait beyond twice 27 ms, should all of them stop.
        assert_eq!(s.take(peers[0], None, None, at(5_054)), Take::Batch(1));

        // A batch stuck while the others complete is duplicated after twice their time.
        let mut s = Schedule::new(&[0..4], 1, FIRST_WAIT, 0);
        for (b, p) in peers.iter().enumerate() {
            assert_eq!(s.take(*p, None, None, at(0)), Take::Batch(b));
        }
        s.finish(0, peers[0], true, at(27));
        s.finish(1, peers[1], true, at(80));
        // Two of the three others done (27, 80 ms): batch 3 stalls at twice 80 ms.
        assert_eq!(s.take(peers[0], None, None, at(82)), Take::Wait);
        assert_eq!(s.next_stall_for(peers[0], at(82)), Some(at(160)));
        s.finish(2, peers[2], true, at(84));
        assert_eq!(s.next_stall_for(peers[0], at(84)), Some(at(160)));
        assert_eq!(s.take(peers[0], None, None, at(159)), Take::Wait);
        assert_eq!(s.take(peers[0], None, None, at(160)), Take::Batch(3));
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of span ranges, not ranges of values
    fn a_stall_timer_that_finds_no_stall_is_pushed_back() {
        let (a, b, c, d) = (1u8, 2u8, 3u8, 4u8);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Schedule::new(&[0..4], 1, FIRST_WAIT, 0);
        assert_eq!(s.take(a, None, None, at(0)), Take::Batch(0));
        assert_eq!(s.take(b, None, None, at(0)), Take::Batch(1));
        s.finish(1, b, true, at(100));
        assert_eq!(s.take(b, None, None, at(100)), Take::Batch(2));
        assert_eq!(s.take(c, None, None, at(100)), Take::Batch(3));
        // At 150 ms the two new batches are younger than the 100 ms one: a's batch 0
        // stalls at 200 ms, as far as anyone can tell.
        assert_eq!(s.take(d, None, None, at(150)), Take::Wait);
        assert_eq!(s.next_stall_for(d, at(150)), Some(at(200)));
        // At 200 ms they have taken as long as it, still going: the median is unknown, and
        // the timer moves to the longest wait (5 s beyond twice 100 ms).
        assert_eq!(s.take(d, None, None, at(200)), Take::Wait);
        assert_eq!(s.next_stall_for(d, at(200)), Some(at(5_200)));
        assert_eq!(s.take(d, None, None, at(5_200)), Take::Batch(0));
    }

    #[test]
    fn the_median_counts_batches_in_flight_as_taking_at_least_their_age() {
        let ms = Duration::from_millis;
        let times = |done: &[u64], going: &[u64]| {
            let ms_each = |list: &[u64]| list.iter().map(|t| ms(*t)).collect::<Vec<_>>();
            BatchTimes::new(
                ms_each(done).into_iter(),
                ms_each(going).into_iter(),
                FIRST_WAIT,
            )
            .expect("one done")
        };
        assert!(BatchTimes::new([].into_iter(), [ms(9)].into_iter(), FIRST_WAIT).is_none());
        // Nothing else in flight: the lower median of the times, doubled.
        assert_eq!(times(&[100], &[250]).patience(ms(250)), ms(200));
        assert_eq!(times(&[100, 300], &[250]).patience(ms(250)), ms(200));
        assert_eq!(times(&[100, 300, 200], &[250]).patience(ms(250)), ms(400));
        // Two others in flight longer than the one done: unknown, so the longest wait,
        // the first wait beyond twice the completed median.
        assert_eq!(times(&[27], &[60, 60, 55]).patience(ms(60)), ms(5_054));
        // The same on a slow link: a batch done in 3 s, three sharing the link for 9 s.
        assert_eq!(times(&[3_000], &[6_000; 3]).patience(ms(6_000)), ms(11_000));
        // One done and one other in flight: half done by 100 ms.
        assert_eq!(times(&[100], &[150, 250]).patience(ms(250)), ms(200));
        // One other in flight, younger than the one done: it does not count against it.
        assert_eq!(times(&[100], &[50, 150]).patience(ms(150)), ms(200));
        // Several in flight as old as the judged one: one of them is it.
        assert_eq!(times(&[100], &[250, 250]).patience(ms(250)), ms(200));
        // Twice a median that lies far above the completed one is capped at the longest.
        assert_eq!(
            times(&[100, 10_000], &[200, 20_000]).patience(ms(20_000)),
            ms(5_200)
        );
    }

    #[test]
    fn span_bits_are_the_offsets_from_to() {
        assert_eq!(span_bits(0, 0), 0);
        assert_eq!(span_bits(3, 3), 0);
        assert_eq!(span_bits(0, 1), 1);
        assert_eq!(span_bits(2, 5), 0b11100);
        assert_eq!(span_bits(0, 64), u64::MAX);
        assert_eq!(span_bits(63, 64), 1 << 63);
        assert_eq!(span_bits(60, 1000), 0b1111 << 60);
        assert_eq!(span_bits(5, 2), 0, "an empty range");
        let batch = Batch {
            spans: 100..116,
            lacking: 0,
            changed_at: 0,
        };
        assert_eq!(batch.bits_of(&(90..102)), 0b11, "starts before the batch");
        assert_eq!(batch.bits_of(&(114..200)), 0b11 << 14, "ends after it");
        assert_eq!(batch.bits_of(&(0..100)), 0, "wholly before");
        assert_eq!(batch.bits_of(&(116..300)), 0, "wholly after");
    }

    #[test]
    fn the_galloping_search_finds_what_a_binary_search_of_the_whole_list_finds() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            // Sorted, disjoint ranges, some touching.
            let mut held = Vec::new();
            let mut at = rng.random_range(0..4u64);
            for _ in 0..rng.random_range(0..40) {
                let end = at + rng.random_range(1..5);
                held.push(at..end);
                at = end + rng.random_range(0..4);
            }
            let start = rng.random_range(0..at + 3);
            let answer = held.partition_point(|h| h.end <= start);
            // From any place at or before the answer, and past the end of the list.
            for from in 0..=answer {
                assert_eq!(
                    first_ending_after(&held, from, start),
                    answer,
                    "{held:?} {start} {from}"
                );
            }
            if answer == held.len() {
                assert_eq!(first_ending_after(&held, held.len() + 3, start), answer);
            }
        }
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn a_search_finds_a_batch_queued_after_batches_of_later_spans() {
        let now = Instant::now();
        // One-span batches, the queue started half way: 2, 3, 0, 1.
        let mut s = Schedule::new(&[0..4], 1, FIRST_WAIT, 0);
        s.start_at(0.5);
        let held = |spans| {
            Some(Held {
                spans,
                found_nothing_at: None,
            })
        };
        // The search has passed spans 2 and 3 when it comes to batch 0: it starts over in
        // the provider's list (which it would miss if it went on from where span 3 left it).
        assert_eq!(s.take(9u8, held(&[0..1]), None, now), Take::Batch(0));
        assert_eq!(s.take(9u8, held(&[1..2, 3..4]), None, now), Take::Batch(3));
        assert_eq!(s.take(9u8, held(&[1..2, 3..4]), None, now), Take::Batch(1));
        assert_eq!(s.take(9u8, held(&[0..2]), None, now), Take::Wait);
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    #[should_panic(expected = "changed while waiting")]
    fn a_batch_changed_while_it_waits_is_caught_in_tests() {
        let mut s = Schedule::<u8>::new(&[0..2], 1, FIRST_WAIT, 0);
        // Out of contract: a peer that is not fetching batch 1 says what it lacks, so the
        // copy of batch 1 already waiting is no longer true.
        s.give_back(1, 9, Some(vec![]));
        let held = Held {
            spans: &[1..2],
            found_nothing_at: None,
        };
        s.take(8, Some(held), None, Instant::now());
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn a_batch_given_back_goes_only_to_providers_of_what_it_still_lacks() {
        let (a, partial) = (1u8, 2u8);
        let now = Instant::now();
        // Batches of at most 64 spans, whatever is asked for.
        let mut s = Schedule::new(&[0..200], 100, FIRST_WAIT, 0);
        assert_eq!(s.spans(0), 0..64);
        assert_eq!(s.spans(3), 192..200);
        assert_eq!(s.take(a, None, None, now), Take::Batch(0));
        // Spans 10 and 60..64 are still missing when `a` stops.
        s.give_back(0, a, Some(vec![10..11, 60..70]));
        let offer = |s: &mut Schedule<u8>, spans: &[Range<u64>]| {
            let held = Held {
                spans,
                found_nothing_at: None,
            };
            let take = s.take(partial, Some(held), None, now);
            if let Take::Batch(b) = take {
                s.give_back(b, partial, None);
            }
            take
        };
        // Holding spans of batch 0 it no longer lacks, and of no other batch: nothing.
        assert_eq!(offer(&mut s, &[0..10, 11..60]), Take::Wait);
        assert_eq!(offer(&mut s, &[63..64]), Take::Batch(0));
        assert_eq!(offer(&mut s, &[5..11]), Take::Batch(0));
        // Just past the batch: the first span of the next one, which lacks everything.
        assert_eq!(offer(&mut s, &[64..65]), Take::Batch(1));
        // A batch not at span 0: what it lacks is kept relative to its start.
        assert_eq!(s.take(a, None, None, now), Take::Batch(1));
        s.give_back(1, a, Some(vec![70..71]));
        assert_eq!(offer(&mut s, &[64..70]), Take::Wait);
        assert_eq!(offer(&mut s, &[70..71]), Take::Batch(1));
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn a_failed_batch_goes_back_to_the_front_for_another_peer() {
        let (a, b) = (1u8, 2u8);
        let mut s = Schedule::new(&[0..2], 1, FIRST_WAIT, 0);
        let now = Instant::now();
        assert_eq!(s.take(a, None, None, now), Take::Batch(0));
        s.finish(0, a, false, now);
        assert_eq!(s.take(b, None, None, now), Take::Batch(0), "requeued first");
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn a_partial_provider_that_found_nothing_is_offered_only_what_changed_since() {
        let (a, b, partial) = (1u8, 2u8, 3u8);
        let now = Instant::now();
        // Four batches of one span; the partial provider holds spans 0 and 3.
        let mut s = Schedule::new(&[0..4], 1, FIRST_WAIT, 0);
        let spans = [0..1, 3..4];
        let held = |found_nothing_at| {
            Some(Held {
                spans: &spans,
                found_nothing_at,
            })
        };
        assert_eq!(s.take(a, None, None, now), Take::Batch(0));
        assert_eq!(s.take(a, None, None, now), Take::Batch(1));
        assert_eq!(s.take(b, None, None, now), Take::Batch(2));
        assert_eq!(s.take(b, None, None, now), Take::Batch(3));
        let gen = s.queue_gen();
        assert_eq!(s.take(partial, held(None), None, now), Take::Wait);

        // Batch 1 comes back: nothing the provider holds, so still nothing for it.
        s.finish(1, a, false, now);
        assert_eq!(s.take(partial, held(Some(gen)), None, now), Take::Wait);
        let gen = s.queue_gen();
        // Batch 0 comes back: the one changed batch is looked at and taken.
        s.finish(0, a, false, now);
        assert_eq!(s.take(partial, held(Some(gen)), None, now), Take::Batch(0));

        // Batch 3 comes back with what it still lacks: a change, so it is looked at.
        let gen = s.queue_gen();
        s.give_back(3, b, Some(vec![3..4]));
        assert_eq!(s.take(partial, held(Some(gen)), None, now), Take::Batch(3));

        // The skip itself: batch 2, waiting and unchanged since `gen`, is not searched when
        // the caller vouches that these spans found nothing as of `gen` (here falsely, to
        // show it), and is found without that.
        s.finish(2, b, false, now);
        let gen = s.queue_gen();
        let spans = [2..3];
        let held = |found_nothing_at| {
            Some(Held {
                spans: &spans,
                found_nothing_at,
            })
        };
        assert_eq!(s.take(partial, held(Some(gen)), None, now), Take::Wait);
        assert_eq!(s.take(partial, held(None), None, now), Take::Batch(2));
    }
}
