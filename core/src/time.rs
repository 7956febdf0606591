//! Time as the core sees it: the `now` it is handed, a wall clock derived from the start, and a
//! table of named deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The one clock read of the core's unit tests: the epoch that every test time is an offset
/// from (the code under test is only ever handed instants). Read once per test process; std has
/// no other way to make an `Instant`, and str0m maps instants to NTP from the real clock.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Derives wall-clock time from monotonic time: `unix_at_start + (now - start)`.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// The `now` given to `Gateway::new`.
    pub start: Instant,
    /// Wall time at `start`, as a duration since the Unix epoch.
    pub unix_at_start: Duration,
}

impl Clock {
    /// Wall time at `now`.
    pub fn unix(&self, now: Instant) -> Duration {
        self.unix_at_start + now.saturating_duration_since(self.start)
    }
}

/// Deadlines keyed by `K`, with O(log n) arm, cancel and earliest. `K` names the timer (which
/// connection, which purpose) so that a firing can be routed and explained.
#[derive(Debug)]
pub struct TimerTable<K: Ord + Copy> {
    by_key: BTreeMap<K, Instant>,
    by_time: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Copy> Default for TimerTable<K> {
    fn default() -> Self {
        Self { by_key: BTreeMap::new(), by_time: BTreeSet::new() }
    }
}

impl<K: Ord + Copy> TimerTable<K> {
    /// Arms (or re-arms) timer `key` for `at`. Re-arming for the deadline it has already is one
    /// lookup (a browser leg's timer is set again after every packet, mostly unchanged).
    pub fn set(&mut self, key: K, at: Instant) {
        match self.by_key.insert(key, at) {
            Some(old) if old == at => return,
            Some(old) => {
                self.by_time.remove(&(old, key));
            }
            None => {}
        }
        self.by_time.insert((at, key));
    }

    /// Disarms timer `key`; a no-op if it is not armed.
    pub fn stop(&mut self, key: K) {
        if let Some(old) = self.by_key.remove(&key) {
            self.by_time.remove(&(old, key));
        }
    }

    /// When `key` fires, if armed.
    pub fn get(&self, key: K) -> Option<Instant> {
        self.by_key.get(&key).copied()
    }

    /// The earliest armed deadline and its key.
    pub fn next(&self) -> Option<(Instant, K)> {
        self.by_time.first().copied()
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<K> {
        let &(at, key) = self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.remove(&(at, key));
        self.by_key.remove(&key);
        Some(key)
    }

    /// Disarms every timer whose key lies in `range` (an owner going away: O(log n + k)).
    pub fn stop_range(&mut self, range: std::ops::RangeInclusive<K>) {
        let doomed: Vec<K> = self.by_key.range(range).map(|(k, _)| *k).collect();
        for k in doomed {
            self.stop(k);
        }
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_rearm_moves() {
        let t0 = test_epoch();
        let mut t = TimerTable::default();
        t.set(1u8, t0 + Duration::from_secs(5));
        t.set(2u8, t0 + Duration::from_secs(3));
        assert_eq!(t.next(), Some((t0 + Duration::from_secs(3), 2)));
        t.set(2, t0 + Duration::from_secs(9));
        assert_eq!(t.next(), Some((t0 + Duration::from_secs(5), 1)));
        assert_eq!(t.pop_expired(t0 + Duration::from_secs(4)), None);
        assert_eq!(t.pop_expired(t0 + Duration::from_secs(5)), Some(1));
        t.stop(2);
        assert!(t.is_empty());
    }

    #[test]
    fn rearming_at_the_same_deadline_changes_nothing() {
        let t0 = test_epoch();
        let mut t = TimerTable::default();
        t.set(1u8, t0 + Duration::from_secs(5));
        t.set(2u8, t0 + Duration::from_secs(7));
        t.set(1, t0 + Duration::from_secs(5));
        assert_eq!((t.len(), t.next()), (2, Some((t0 + Duration::from_secs(5), 1))));
        assert_eq!(t.pop_expired(t0 + Duration::from_secs(6)), Some(1));
        assert_eq!(t.pop_expired(t0 + Duration::from_secs(6)), None, "no stale entry left behind");
        assert_eq!(t.next(), Some((t0 + Duration::from_secs(7), 2)));
    }

    #[test]
    fn stop_range_only_touches_the_range() {
        let t0 = test_epoch();
        let mut t = TimerTable::default();
        for owner in 1u32..=3 {
            for timer in 0u8..3 {
                t.set((owner, timer), t0 + Duration::from_secs(u64::from(owner * 10 + u32::from(timer))));
            }
        }
        t.stop_range((2, u8::MIN)..=(2, u8::MAX));
        assert_eq!(t.len(), 6);
        assert!(t.get((2, 1)).is_none() && t.get((1, 1)).is_some() && t.get((3, 0)).is_some());
    }
}
