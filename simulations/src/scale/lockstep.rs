//! Runs the partitions of a discrete-event model on threads, in lockstep windows of virtual
//! time (conservative parallel simulation with a lookahead, the synchronous form of
//! Chandy–Misra–Bryant).
//!
//! Each partition owns some of the model's nodes and its own event queue. An event one
//! partition causes in another is a message due at least the *lookahead* `L` after the
//! event that sent it. So once every partition has handled its events due before `T + L`,
//! where `T` is the earliest event due anywhere, no message can still arrive for that span:
//! the partitions run it at once, then swap their messages at a barrier, where each also
//! says when its next event is due, so the next window's start is known after that one
//! barrier. Messages go into each queue in the order of their senders' partitions, then of
//! sending, so a run is the same whatever the threads' timing.

use std::{
    hint::spin_loop,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Mutex, MutexGuard,
    },
    thread,
};

/// Messages one partition sends another in one window: (due, in nanoseconds, message).
pub type Mail<M> = Vec<(u64, M)>;

/// What the partitions share: the barrier, each one's next event, and the mail between
/// them. The next events and the mail come in two sets, used by turns: a partition that
/// has passed a barrier fills one set while a slower one still reads the other, so one
/// barrier a window is enough.
pub struct Lockstep<M> {
    parts: usize,
    barrier: SpinBarrier,
    /// When each partition's next event, or the earliest of the mail it sent, is due
    /// (nanoseconds; `u64::MAX`: none).
    next: [Vec<AtomicU64>; 2],
    /// Mail from partition `p` to `q` at `p * parts + q`.
    mail: [Vec<Mutex<Mail<M>>>; 2],
}

impl<M: Send> Lockstep<M> {
    /// For `parts` partitions.
    pub fn new(parts: usize) -> Self {
        let next = || (0..parts).map(|_| AtomicU64::new(u64::MAX)).collect();
        let mail = || (0..parts * parts).map(|_| Mutex::new(Vec::new())).collect();
        Self {
            parts,
            barrier: SpinBarrier::new(parts),
            next: [next(), next()],
            mail: [mail(), mail()],
        }
    }

    /// Partition `part`'s side, for its thread.
    pub fn partition(&self, part: usize) -> Partition<'_, M> {
        Partition {
            step: self,
            part,
            barriers: 0,
        }
    }

    /// Held by each partition's thread while it runs: if the thread panics, the others
    /// stop waiting for it at the barrier and panic too, so the run fails instead of
    /// hanging.
    pub fn stop_all_on_panic(&self) -> StopAllOnPanic<'_> {
        StopAllOnPanic(&self.barrier.stopped)
    }

    fn slot(&self, set: usize, from: usize, to: usize) -> MutexGuard<'_, Mail<M>> {
        // Only this module locks the slots, and nothing panics while one is held.
        self.mail[set][from * self.parts + to]
            .lock()
            .expect("a mail slot is never poisoned")
    }

    /// The earliest of what the partitions said before the barrier that used `set`.
    fn earliest(&self, set: usize) -> u64 {
        self.next[set]
            .iter()
            .map(|n| n.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// One partition's side of a [`Lockstep`]: it counts the barriers it passed, which says
/// which set of slots it uses (every partition passes the same barriers).
pub struct Partition<'a, M> {
    step: &'a Lockstep<M>,
    part: usize,
    barriers: usize,
}

impl<M: Send> Partition<'_, M> {
    /// Before the first window: this partition's next event is due at `next`. Waits for
    /// every partition to say, and returns the earliest (`u64::MAX`: no event anywhere).
    /// Every partition gets the same answer.
    pub fn start(&mut self, next: u64) -> u64 {
        let set = self.set();
        self.step.next[set][self.part].store(next, Ordering::Release);
        self.step.barrier.wait();
        self.barriers += 1;
        self.step.earliest(set)
    }

    /// The partition has handled its window, and its next event is due at `next`: hands
    /// `outbox[q]` to each partition `q`, waits for every partition to do the same, hands
    /// `deliver` the mail for this one, in the order of the senders' partitions, then of
    /// sending, and returns when the next event is due anywhere, the mail included
    /// (`u64::MAX`: none). Every partition gets the same answer.
    pub fn swap(
        &mut self,
        next: u64,
        outbox: &mut [Mail<M>],
        mut deliver: impl FnMut(u64, M),
    ) -> u64 {
        let (step, part, set) = (self.step, self.part, self.set());
        // The mail it sends counts as its own: the next window starts at the earliest
        // over every partition's queue and outgoing mail.
        let mut earliest = next;
        for (q, out) in outbox.iter_mut().enumerate() {
            if q != part && !out.is_empty() {
                earliest = out.iter().fold(earliest, |e, (when, _)| e.min(*when));
                step.slot(set, part, q).append(out);
            }
        }
        step.next[set][part].store(earliest, Ordering::Release);
        step.barrier.wait();
        self.barriers += 1;
        for p in (0..step.parts).filter(|&p| p != part) {
            for (when, message) in step.slot(set, p, part).drain(..) {
                deliver(when, message);
            }
        }
        step.earliest(set)
    }

    /// The set of slots the next barrier uses; a slower partition may still read the
    /// other, from the barrier before.
    pub fn set(&self) -> usize {
        self.barriers % 2
    }
}

/// See [`Lockstep::stop_all_on_panic`].
pub struct StopAllOnPanic<'a>(&'a AtomicBool);

impl Drop for StopAllOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// A barrier that spins: a window is about a millisecond of work or less, and the standard
/// barrier's sleep and wake-up cost tens of microseconds.
struct SpinBarrier {
    parties: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    /// A party panicked: it will never arrive.
    stopped: AtomicBool,
}

/// Spins before yielding the core while waiting at the barrier (a few microseconds).
const SPINS_BEFORE_YIELD: u32 = 1 << 12;

impl SpinBarrier {
    fn new(parties: usize) -> Self {
        Self {
            parties,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            assert!(
                !self.stopped.load(Ordering::Acquire),
                "another partition's thread panicked"
            );
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                spin_loop();
            } else {
                thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many times a number in the test's tree was passed on: n's children are 2n + 1
    /// and 2n + 2.
    fn depth(n: u64) -> u64 {
        u64::from((n + 1).ilog2())
    }

    /// Two partitions pass numbers back and forth through the mail, one window at a time:
    /// each arrives once, in its window, in the order sent, and both stop together.
    #[test]
    fn messages_arrive_once_in_the_order_sent_and_all_agree_on_the_earliest() {
        let step = Lockstep::<u64>::new(2);
        let logs: Vec<Vec<(u64, u64)>> = thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|part| {
                    let step = &step;
                    s.spawn(move || {
                        let mut log = Vec::new();
                        let _stop = step.stop_all_on_panic();
                        let mut side = step.partition(part);
                        let mut outbox: Vec<Mail<u64>> = vec![Vec::new(), Vec::new()];
                        let mut inbox: Vec<(u64, u64)> = Vec::new();
                        if part == 0 {
                            inbox.push((0, 0));
                        }
                        let due = |inbox: &[(u64, u64)]| {
                            inbox.iter().map(|m| m.0).min().unwrap_or(u64::MAX)
                        };
                        let mut earliest = side.start(due(&inbox));
                        while earliest != u64::MAX {
                            for (when, n) in inbox.drain(..) {
                                // Handled in the window it is due in, [earliest, + 5).
                                assert!((earliest..earliest + 5).contains(&when), "{n}");
                                log.push((when, n));
                                if n < 10 {
                                    outbox[1 - part].push((when + 5, 2 * n + 1));
                                    outbox[1 - part].push((when + 5, 2 * n + 2));
                                }
                            }
                            earliest = side
                                .swap(due(&inbox), &mut outbox, |when, n| inbox.push((when, n)));
                        }
                        log
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a partition thread"))
                .collect()
        });
        let mut all: Vec<u64> = logs.iter().flatten().map(|m| m.1).collect();
        all.sort_unstable();
        // 0 sends 1 and 2; each n < 10 sends 2n + 1 and 2n + 2: every number to 20, once.
        assert_eq!(all, (0..=20).collect::<Vec<_>>());
        assert_eq!(&logs[1][..2], &[(5, 1), (5, 2)], "in the order sent");
        for (when, n) in logs.iter().flatten() {
            assert_eq!(*when, 5 * depth(*n), "{n}");
        }
    }

    /// A partition that panics stops the others at the barrier: the run fails, it does
    /// not hang.
    #[test]
    fn a_partition_that_panics_stops_the_others() {
        let step = Lockstep::<u64>::new(2);
        let joined: Vec<bool> = thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|part| {
                    let step = &step;
                    s.spawn(move || {
                        let _stop = step.stop_all_on_panic();
                        assert!(part == 0, "partition 1 fails at once");
                        // Partition 0 waits for partition 1, which never comes.
                        step.partition(part).start(0);
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().is_err()).collect()
        });
        assert_eq!(joined, [true, true], "both panicked");
    }
}
