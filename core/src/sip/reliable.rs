//! Reliable provisional responses (RFC 3262, the `100rel` extension), both roles:
//! - UAS ([`ReliableUas`]): a 1xx sent reliably carries `Require: 100rel` and an `RSeq`; it is
//!   retransmitted (T1 doubling, [`Sent2xx`]) until a PRACK with the matching `RAck` arrives
//!   (§3), and after 64·T1 without one the INVITE is rejected with a 5xx.
//! - UAC ([`ReliableUac`]): every 1xx with `Require: 100rel` and a new in-order `RSeq` of its
//!   dialog gets a PRACK (§4); retransmissions and out-of-order ones are discarded.
//!
//! Pure rules and header values; `incoming`, `calls` and `leg` send the messages.

use super::build::header_values;
use super::message::{HeaderName, Headers, Request};
use super::midcall::{Sent2xx, Tick};
use std::collections::BTreeMap;
use std::time::Instant;

/// The option tag (RFC 3262 §10).
pub(super) const TAG: &str = "100rel";

/// Whether `name` headers list the `100rel` option tag.
fn lists_100rel(h: &Headers, name: HeaderName) -> bool {
    header_values(h, name).iter().flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(TAG))
}

/// Whether an INVITE allows reliable provisionals (`Supported` or `Require: 100rel`, §3).
pub(super) fn invite_offers_100rel(req: &Request) -> bool {
    lists_100rel(&req.headers, HeaderName::Supported) || lists_100rel(&req.headers, HeaderName::Require)
}

/// The `RSeq` of a reliable provisional response (`Require: 100rel` and a valid `RSeq`, §7.1).
pub(super) fn reliable_rseq(h: &Headers) -> Option<u32> {
    if !lists_100rel(h, HeaderName::Require) {
        return None;
    }
    h.get_str(&HeaderName::RSeq)?.trim().parse().ok().filter(|n| *n > 0)
}

/// A PRACK's `RAck` (§7.2): the response's RSeq, and the CSeq number and method it answers.
pub(super) fn rack(h: &Headers) -> Option<(u32, u32, String)> {
    let v = h.get_str(&HeaderName::RAck)?;
    let mut parts = v.split_ascii_whitespace();
    let rseq = parts.next()?.parse().ok()?;
    let cseq = parts.next()?.parse().ok()?;
    let method = parts.next()?.to_string();
    parts.next().is_none().then_some((rseq, cseq, method))
}

/// What the UAS does with a PRACK (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PrackVerdict {
    /// It acknowledges our reliable provisional (now or before): 200.
    Acknowledged,
    /// It matches none: 481.
    NoMatch,
}

/// The UAS side of one INVITE: the RSeq space and the reliable provisional not PRACKed yet.
#[derive(Debug)]
pub(super) struct ReliableUas {
    /// The RSeq of the last reliable provisional sent (0: none yet).
    last_rseq: u32,
    /// The first RSeq (a PRACK for any of ours from it to `last_rseq` is answered 200).
    first_rseq: u32,
    /// The INVITE's CSeq number (the RAck names it).
    invite_cseq: u32,
    /// The one waiting for its PRACK (§3: no second one before it is acknowledged).
    unacked: Option<Sent2xx>,
}

impl ReliableUas {
    /// For an INVITE with CSeq `invite_cseq`; the first RSeq is `first` (1 ≤ first < 2^31).
    pub(super) fn new(invite_cseq: u32, first: u32) -> Self {
        let first = first.clamp(1, (1 << 31) - 1);
        Self { last_rseq: first - 1, first_rseq: first, invite_cseq, unacked: None }
    }

    /// The RSeq for the next reliable provisional, or `None` while one waits for its PRACK.
    pub(super) fn next_rseq(&mut self) -> Option<u32> {
        if self.unacked.is_some() {
            return None;
        }
        self.last_rseq += 1;
        Some(self.last_rseq)
    }

    /// The provisional with the last RSeq went out as `sent`: retransmitted until PRACKed.
    pub(super) fn sent(&mut self, sent: Sent2xx) {
        self.unacked = Some(sent);
    }

    /// A PRACK with `RAck` `rack` (§3).
    pub(super) fn on_prack(&mut self, rack: Option<(u32, u32, String)>) -> PrackVerdict {
        let Some((rseq, cseq, method)) = rack else { return PrackVerdict::NoMatch };
        let ours = cseq == self.invite_cseq
            && method.eq_ignore_ascii_case("INVITE")
            && (self.first_rseq..=self.last_rseq).contains(&rseq);
        if !ours {
            return PrackVerdict::NoMatch;
        }
        if rseq == self.last_rseq {
            self.unacked = None;
        }
        PrackVerdict::Acknowledged
    }

    /// A final response went out: no more retransmissions (§3).
    pub(super) fn stop(&mut self) {
        self.unacked = None;
    }

    /// When [`ReliableUas::on_timeout`] should run.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.unacked.as_ref().and_then(Sent2xx::next_deadline)
    }

    /// Runs the due timer: resend (the bytes and destination), give up, or nothing.
    pub(super) fn on_timeout(&mut self, now: Instant) -> Tick {
        let Some(sent) = self.unacked.as_mut() else { return Tick::Nothing };
        let tick = sent.on_timeout(now);
        if tick == Tick::GiveUp {
            self.unacked = None;
        }
        tick
    }

    /// The provisional waiting for its PRACK, as sent.
    pub(super) fn unacked(&self) -> Option<&Sent2xx> {
        self.unacked.as_ref()
    }
}

/// The UAC side of one INVITE: the last RSeq seen per early dialog (by the peer's tag).
#[derive(Debug, Default)]
pub(super) struct ReliableUac {
    last: BTreeMap<String, u32>,
}

impl ReliableUac {
    /// A reliable provisional with `rseq` in the dialog with the peer's tag `tag`: true if it is
    /// new and in order (PRACK it), false for a retransmission or a gap (discard it, §4).
    pub(super) fn accept(&mut self, tag: &str, rseq: u32) -> bool {
        match self.last.get(tag) {
            Some(&last) if rseq != last.wrapping_add(1) => false,
            _ => {
                self.last.insert(tag.to_string(), rseq);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse::parse_message;
    use crate::sip::transaction::Timers;
    use crate::sip::transport::Peer;

    fn headers(text: &str) -> Headers {
        let msg = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{text}Content-Length: 0\r\n\r\n"
        );
        match parse_message(msg.as_bytes()).unwrap() {
            crate::sip::message::SipMessage::Request(r) => r.headers,
            crate::sip::message::SipMessage::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn reads_the_headers() {
        assert_eq!(reliable_rseq(&headers("Require: timer, 100rel\r\nRSeq: 7\r\n")), Some(7));
        assert_eq!(reliable_rseq(&headers("RSeq: 7\r\n")), None, "no Require: not reliable");
        assert_eq!(reliable_rseq(&headers("Require: 100rel\r\nRSeq: x\r\n")), None);
        assert_eq!(rack(&headers("RAck: 7 3 INVITE\r\n")), Some((7, 3, "INVITE".into())));
        assert_eq!(rack(&headers("RAck: 7 INVITE\r\n")), None);
        assert_eq!(rack(&headers("RAck: 7 3 INVITE x\r\n")), None);
    }

    #[test]
    fn uas_retransmits_until_prack_then_gives_up() {
        let t0 = crate::time::test_epoch();
        let timers = Timers::default();
        let peer =
            Peer { transport: crate::sip::target::Transport::Udp, addr: "192.0.2.1:5060".parse().unwrap(), conn: None };
        let mut r = ReliableUas::new(3, 10);
        assert_eq!(r.next_rseq(), Some(10));
        r.sent(Sent2xx::new(b"180".to_vec(), peer, t0, timers));
        assert_eq!(r.next_rseq(), None, "one at a time");
        assert_eq!(r.on_timeout(t0 + timers.t1), Tick::Resend);
        assert_eq!(r.on_prack(Some((10, 2, "INVITE".into()))), PrackVerdict::NoMatch, "another CSeq");
        assert_eq!(r.on_prack(Some((11, 3, "INVITE".into()))), PrackVerdict::NoMatch, "not sent");
        assert_eq!(r.on_prack(None), PrackVerdict::NoMatch);
        assert_eq!(r.on_prack(Some((10, 3, "INVITE".into()))), PrackVerdict::Acknowledged);
        assert_eq!(r.next_deadline(), None);
        assert_eq!(r.on_prack(Some((10, 3, "INVITE".into()))), PrackVerdict::Acknowledged, "again: still ours");
        assert_eq!(r.next_rseq(), Some(11));
        r.sent(Sent2xx::new(b"183".to_vec(), peer, t0, timers));
        assert_eq!(r.on_timeout(t0 + timers.t64()), Tick::GiveUp);
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn uac_pracks_new_in_order_responses_only() {
        let mut u = ReliableUac::default();
        assert!(u.accept("a", 5));
        assert!(!u.accept("a", 5), "a retransmission");
        assert!(!u.accept("a", 7), "a gap");
        assert!(u.accept("a", 6));
        assert!(u.accept("b", 1), "another early dialog has its own space");
    }
}
