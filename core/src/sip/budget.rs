//! A budget of incoming SIP requests per source IP: at most `limit` a second (a fixed
//! one-second window per source). Tracks at most `MAX_SOURCES` sources; past that, sources
//! whose window is over are forgotten, and a new source that still finds no room is let through
//! untracked (spoofed UDP sources cannot be told apart anyway; the bounded tables behind this
//! keep memory fixed).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most sources tracked at once.
const MAX_SOURCES: usize = 16_384;

const WINDOW: Duration = Duration::from_secs(1);

/// What the budget says of one more request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within the budget.
    Allow,
    /// The first request over the budget in this window (log it once).
    FirstOver,
    /// Over the budget.
    Over,
}

/// Requests per second per source IP.
pub(super) struct SourceBudget {
    limit: u32,
    sources: BTreeMap<IpAddr, (Instant, u32)>,
}

impl SourceBudget {
    /// `limit` requests a second per source; 0 means no limit.
    pub(super) fn new(limit: u32) -> Self {
        Self { limit, sources: BTreeMap::new() }
    }

    /// Counts one request from `ip` at `now`.
    pub(super) fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        if self.limit == 0 {
            return Verdict::Allow;
        }
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_SOURCES {
            self.sources.retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
            if self.sources.len() >= MAX_SOURCES {
                return Verdict::Allow;
            }
        }
        let (start, count) = self.sources.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
        match (*count).cmp(&(self.limit + 1)) {
            std::cmp::Ordering::Less => Verdict::Allow,
            std::cmp::Ordering::Equal => Verdict::FirstOver,
            std::cmp::Ordering::Greater => Verdict::Over,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_per_source_per_second() {
        let t0 = crate::time::test_epoch();
        let (a, b): (IpAddr, IpAddr) = ("198.51.100.1".parse().unwrap(), "198.51.100.2".parse().unwrap());
        let mut budget = SourceBudget::new(3);
        let got: Vec<Verdict> = (0..5).map(|_| budget.check(a, t0)).collect();
        assert_eq!(got, [Verdict::Allow, Verdict::Allow, Verdict::Allow, Verdict::FirstOver, Verdict::Over]);
        assert_eq!(budget.check(b, t0), Verdict::Allow, "another source has its own budget");
        assert_eq!(budget.check(a, t0 + Duration::from_millis(999)), Verdict::Over);
        assert_eq!(budget.check(a, t0 + Duration::from_secs(1)), Verdict::Allow, "a new second");
        let mut off = SourceBudget::new(0);
        assert!((0..1000).all(|_| off.check(a, t0) == Verdict::Allow));
    }

    #[test]
    fn sources_tracked_are_bounded() {
        let t0 = crate::time::test_epoch();
        let mut budget = SourceBudget::new(1);
        for i in 0..MAX_SOURCES as u32 + 10 {
            budget.check(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(budget.sources.len() <= MAX_SOURCES);
        budget.check("198.51.100.9".parse().unwrap(), t0 + WINDOW);
        assert_eq!(budget.sources.len(), 1, "stale sources forgotten when room is needed");
    }
}
