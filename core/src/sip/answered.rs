//! Recent answers to requests that needed no server transaction (RFC 3261 §17.2.2: a
//! non-INVITE request answered at once — OPTIONS, 404, 405, 481, 501, … — only has to absorb
//! its retransmissions, for Timer J = 64·T1 over UDP). Bounded: at most `cap` answers, the
//! oldest forgotten first, so a flood costs a fixed amount of memory and no timers. A
//! retransmission whose answer was forgotten is answered again, with the same bytes.

use super::services::ServerKey;
use super::transport::Peer;
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// Request-URI, From tag, Call-ID, CSeq (§8.2.2.2 merged-request detection).
pub(super) type MergeKey = (String, String, String, String);

struct Entry {
    dest: Peer,
    bytes: Vec<u8>,
    merge_key: MergeKey,
}

/// The answers, by server-transaction key, in the order given (which is expiry order: every
/// entry lives equally long).
pub(super) struct Answered {
    cap: usize,
    entries: BTreeMap<ServerKey, Entry>,
    order: VecDeque<(Instant, ServerKey)>,
    merge: BTreeMap<MergeKey, usize>,
}

impl Answered {
    /// Room for `cap` answers.
    pub(super) fn new(cap: usize) -> Self {
        Self { cap, entries: BTreeMap::new(), order: VecDeque::new(), merge: BTreeMap::new() }
    }

    /// Answers kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The answer to the request `key`, if still kept at `now`: where it went and its bytes.
    pub(super) fn get(&mut self, key: &ServerKey, now: Instant) -> Option<(Peer, &[u8])> {
        self.expire(now);
        self.entries.get(key).map(|e| (e.dest, e.bytes.as_slice()))
    }

    /// Whether an answered request with `merge_key` is still kept.
    pub(super) fn has_merge_key(&self, merge_key: &MergeKey) -> bool {
        self.merge.contains_key(merge_key)
    }

    /// Keeps the answer to `key` until `until` (or until `cap` newer ones push it out).
    pub(super) fn insert(&mut self, key: ServerKey, merge_key: MergeKey, dest: Peer, bytes: Vec<u8>, until: Instant) {
        if self.cap == 0 || self.entries.contains_key(&key) {
            return;
        }
        while self.entries.len() >= self.cap {
            if !self.pop_oldest() {
                break;
            }
        }
        *self.merge.entry(merge_key.clone()).or_default() += 1;
        self.entries.insert(key.clone(), Entry { dest, bytes, merge_key });
        self.order.push_back((until, key));
    }

    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(until, _)| *until <= now) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) -> bool {
        let Some((_, key)) = self.order.pop_front() else { return false };
        if let Some(e) = self.entries.remove(&key) {
            if let Some(n) = self.merge.get_mut(&e.merge_key) {
                *n -= 1;
                if *n == 0 {
                    self.merge.remove(&e.merge_key);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::target::Transport;
    use std::time::Duration;

    fn key(i: usize) -> ServerKey {
        ServerKey { branch: format!("z9hG4bK{i}"), sent_by: "198.51.100.1:5060".into(), method: "OPTIONS".into() }
    }

    fn merge(i: usize) -> MergeKey {
        ("sip:a@b".into(), format!("t{i}"), format!("c{i}"), "1 OPTIONS".into())
    }

    #[test]
    fn bounded_oldest_first_and_expiring() {
        let t0 = crate::time::test_epoch();
        let peer = Peer { transport: Transport::Udp, addr: "198.51.100.1:5060".parse().unwrap(), conn: None };
        let mut a = Answered::new(3);
        for i in 0..5 {
            a.insert(key(i), merge(i), peer, vec![i as u8], t0 + Duration::from_secs(32));
        }
        assert_eq!(a.len(), 3, "never more than the cap");
        assert!(a.get(&key(0), t0).is_none() && a.get(&key(1), t0).is_none(), "oldest forgotten first");
        assert_eq!(a.get(&key(4), t0).map(|(_, b)| b.to_vec()), Some(vec![4]));
        assert!(a.has_merge_key(&merge(2)) && !a.has_merge_key(&merge(0)));
        assert!(a.get(&key(4), t0 + Duration::from_secs(32)).is_none(), "gone after Timer J");
        assert_eq!(a.len(), 0);
        assert!(!a.has_merge_key(&merge(2)));
        let mut none = Answered::new(0);
        none.insert(key(1), merge(1), peer, vec![1], t0 + Duration::from_secs(1));
        assert_eq!(none.len(), 0);
    }
}
