//! [`PortPool`]: the RTP/RTCP port pairs of one core (one worker), handed out deterministically.
//!
//! A pair is an even port for RTP and the odd port above it for RTCP (RFC 3550 §11). The pool
//! walks its range round-robin from the start, so consecutive calls get consecutive pairs and a
//! port just released is the last to be reused (late packets of an ended call then hit a closed
//! port, not the next call). Pairs in use are skipped, and so are pairs whose bind failed (another
//! process holds a port) within the last [`PortPool::FAILED_COOLDOWN`]. Time comes from the
//! caller, so the choice depends only on the calls made.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The RTP port pairs of an inclusive port range.
#[derive(Debug, Clone)]
pub struct PortPool {
    /// First and last port (inclusive); the first is even.
    range: (u16, u16),
    /// The RTP port the next search starts at.
    next: u16,
    /// RTP ports of the pairs handed out and not released.
    in_use: BTreeSet<u16>,
    /// RTP ports of pairs whose bind failed, with when; skipped until the cool-down has passed.
    failed: BTreeMap<u16, Instant>,
}

impl PortPool {
    /// How long a pair whose bind failed is skipped.
    pub const FAILED_COOLDOWN: Duration = Duration::from_secs(60);

    /// A pool over `low..=high`. `low` must be even and below `high` (see
    /// [`crate::config::MediaConfig::validate`]); an odd `low` is rounded up.
    pub fn new(range: (u16, u16)) -> Self {
        let low = range.0.saturating_add(range.0 & 1);
        Self { range: (low, range.1), next: low, in_use: BTreeSet::new(), failed: BTreeMap::new() }
    }

    /// The range, inclusive.
    pub fn range(&self) -> (u16, u16) {
        self.range
    }

    /// How many pairs the range holds (a last even port without its odd partner is not one).
    pub fn pairs(&self) -> usize {
        let (low, high) = self.range;
        if high <= low {
            return 0;
        }
        (usize::from(high) - usize::from(low)).div_ceil(2)
    }

    /// Pairs handed out and not released.
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// The next free pair at or after the cursor (wrapping), as its RTP (even) port; `None` when
    /// every pair is in use or cooling down after a failed bind.
    pub fn allocate(&mut self, now: Instant) -> Option<u16> {
        let pairs = self.pairs();
        if pairs == 0 {
            return None;
        }
        self.failed.retain(|_, at| now.saturating_duration_since(*at) < Self::FAILED_COOLDOWN);
        let low = usize::from(self.range.0);
        let start = (usize::from(self.next) - low) / 2 % pairs;
        for i in 0..pairs {
            let port = self.port_of((start + i) % pairs);
            if self.in_use.contains(&port) || self.failed.contains_key(&port) {
                continue;
            }
            self.in_use.insert(port);
            self.next = self.port_of((start + i + 1) % pairs);
            return Some(port);
        }
        None
    }

    /// Gives the pair of RTP port `port` back.
    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }

    /// Gives the pair back and skips it for [`Self::FAILED_COOLDOWN`]: binding one of its ports
    /// failed at `now`.
    pub fn fail(&mut self, port: u16, now: Instant) {
        self.in_use.remove(&port);
        self.failed.insert(port, now);
    }

    fn port_of(&self, index: usize) -> u16 {
        // `index < pairs()`, so `2 * index <= high - low` fits, and so does the sum.
        self.range.0 + (2 * index) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_of_a_range() {
        assert_eq!(PortPool::new((20000, 29999)).pairs(), 5000);
        assert_eq!(PortPool::new((20000, 20001)).pairs(), 1);
        assert_eq!(PortPool::new((20000, 20002)).pairs(), 1, "20002 has no odd partner");
        assert_eq!(PortPool::new((20000, 20000)).pairs(), 0);
        assert_eq!(PortPool::new((65534, 65535)).pairs(), 1);
        assert_eq!(PortPool::new((20001, 20005)).range(), (20002, 20005), "odd low rounded up");
    }

    #[test]
    fn round_robin_from_the_start() {
        let now = crate::time::test_epoch();
        let mut p = PortPool::new((20000, 20007));
        assert_eq!(p.allocate(now), Some(20000));
        assert_eq!(p.allocate(now), Some(20002));
        p.release(20000);
        // Released pairs come back only after the others.
        assert_eq!(p.allocate(now), Some(20004));
        assert_eq!(p.allocate(now), Some(20006));
        assert_eq!(p.allocate(now), Some(20000));
        assert_eq!(p.in_use(), 4);
        assert_eq!(p.allocate(now), None, "all in use");
        p.release(20004);
        assert_eq!(p.allocate(now), Some(20004));
    }

    #[test]
    fn failed_pairs_cool_down() {
        let now = crate::time::test_epoch();
        let mut p = PortPool::new((20000, 20005));
        assert_eq!(p.allocate(now), Some(20000));
        p.fail(20000, now);
        assert_eq!(p.allocate(now), Some(20002));
        p.fail(20002, now);
        assert_eq!(p.allocate(now), Some(20004));
        assert_eq!(p.allocate(now), None, "the others failed recently");
        let later = now + PortPool::FAILED_COOLDOWN;
        assert_eq!(p.allocate(later), Some(20000));
        assert_eq!(p.allocate(later), Some(20002));
    }

    #[test]
    fn the_top_of_the_port_space() {
        let now = crate::time::test_epoch();
        let mut p = PortPool::new((65532, 65535));
        assert_eq!(p.allocate(now), Some(65532));
        assert_eq!(p.allocate(now), Some(65534));
        assert_eq!(p.allocate(now), None);
    }

    #[test]
    fn deterministic() {
        let now = crate::time::test_epoch();
        let run = || {
            let mut p = PortPool::new((30000, 30099));
            let mut got = Vec::new();
            for i in 0..200u16 {
                match i % 3 {
                    0 => got.push(p.allocate(now)),
                    1 => p.release(30000 + 2 * (i % 50)),
                    _ => p.fail(30000 + 2 * (i % 7), now),
                }
            }
            got
        };
        assert_eq!(run(), run());
    }
}
