//! Answers kept for their TTLs: positive ones at most [`MAX_TTL`], empty ones ("no such name",
//! "no records") at most [`NEGATIVE_TTL`]; errors (timeouts, refused queries) are not kept. The
//! cache holds at most [`MAX_ENTRIES`] names: clients choose the domains, so it is bounded; when
//! full, expired entries go first, then the one that expires soonest.

use super::{Answer, QueryType};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest time an answer is kept, whatever its TTL (seconds).
pub const MAX_TTL: u32 = 3600;
/// Longest time an empty answer is kept (seconds).
pub const NEGATIVE_TTL: u32 = 30;
/// Most answers kept.
pub const MAX_ENTRIES: usize = 512;

/// The cache, keyed by query type and lower-cased name.
#[derive(Debug, Default)]
pub struct DnsCache {
    entries: BTreeMap<(QueryType, String), (Answer, Instant)>,
}

impl DnsCache {
    /// The answer for `name` if one is kept and not expired at `now`.
    pub fn get(&self, t: QueryType, name: &str, now: Instant) -> Option<&Answer> {
        let (answer, until) = self.entries.get(&(t, name.to_ascii_lowercase()))?;
        (*until > now).then_some(answer)
    }

    /// Keeps `answer` for its (capped) TTL from `now`; a TTL of 0 keeps nothing.
    pub fn put(&mut self, t: QueryType, name: &str, answer: &Answer, now: Instant) {
        let cap = if answer.records.is_empty() { NEGATIVE_TTL } else { MAX_TTL };
        let ttl = answer.ttl.min(cap);
        if ttl == 0 {
            return;
        }
        let key = (t, name.to_ascii_lowercase());
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, until)| *until > now);
            if self.entries.len() >= MAX_ENTRIES {
                let soonest = self.entries.iter().min_by_key(|(_, (_, until))| *until).map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(key, (answer.clone(), now + Duration::from_secs(ttl.into())));
    }

    /// Entries held (expired ones included until they are pushed out), for leak checks.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Records;
    use super::*;

    fn ips(ttl: u32) -> Answer {
        Answer { records: Records::Ip(vec!["192.0.2.1".parse().unwrap()]), ttl }
    }

    #[test]
    fn answers_are_kept_for_their_capped_ttl_and_empty_ones_briefly() {
        let t0 = crate::time::test_epoch();
        let mut c = DnsCache::default();
        c.put(QueryType::Ip, "Example.COM", &ips(60), t0);
        assert_eq!(c.get(QueryType::Ip, "example.com", t0 + Duration::from_secs(59)), Some(&ips(60)));
        assert_eq!(c.get(QueryType::Ip, "example.com", t0 + Duration::from_secs(60)), None);
        assert_eq!(c.get(QueryType::Srv, "example.com", t0), None, "another type is another entry");
        c.put(QueryType::Ip, "long.example", &ips(1_000_000), t0);
        assert!(c.get(QueryType::Ip, "long.example", t0 + Duration::from_secs(u64::from(MAX_TTL) - 1)).is_some());
        assert!(c.get(QueryType::Ip, "long.example", t0 + Duration::from_secs(MAX_TTL.into())).is_none());
        let none = Answer { records: Records::Srv(Vec::new()), ttl: 86_400 };
        c.put(QueryType::Srv, "nothing.example", &none, t0);
        assert!(c
            .get(QueryType::Srv, "nothing.example", t0 + Duration::from_secs(u64::from(NEGATIVE_TTL) - 1))
            .is_some());
        assert!(c.get(QueryType::Srv, "nothing.example", t0 + Duration::from_secs(NEGATIVE_TTL.into())).is_none());
        c.put(QueryType::Ip, "zero.example", &ips(0), t0);
        assert!(c.get(QueryType::Ip, "zero.example", t0).is_none(), "TTL 0 is not kept");
    }

    #[test]
    fn a_full_cache_drops_the_soonest_to_expire() {
        let t0 = crate::time::test_epoch();
        let mut c = DnsCache::default();
        for n in 0..MAX_ENTRIES {
            c.put(QueryType::Ip, &format!("n{n}.example"), &ips(100 + n as u32), t0);
        }
        c.put(QueryType::Ip, "new.example", &ips(50), t0);
        assert_eq!(c.len(), MAX_ENTRIES);
        assert!(c.get(QueryType::Ip, "n0.example", t0).is_none(), "the soonest to expire went");
        assert!(c.get(QueryType::Ip, "new.example", t0).is_some());
        assert!(c.get(QueryType::Ip, "n1.example", t0).is_some());
    }
}
