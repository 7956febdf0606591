//! The requests of an established call besides BYE, as pure state shared by outgoing and
//! incoming legs; the SIP stack ([`super::indialog`]) builds and sends the messages.
//!
//! - INFO goes out one at a time: the next waits for the final response (or the timeout) of the
//!   previous one (RFC 6086 §4.2.1), so DTMF digits arrive in order and never overlap.
//! - The peer's offer in a re-INVITE (RFC 3261 §14.2) or an UPDATE (RFC 3311 §5.2) waits for the
//!   transaction user's answer. While it waits, or while our 2xx is not ACKed yet, another offer
//!   gets 500 with Retry-After; an offer racing our own re-INVITE gets 491 (glare).
//! - Our 2xx to a re-INVITE is retransmitted by the UA core until the ACK (§13.3.1.4), T1
//!   doubling to T2, for at most 64·T1.
//! - Our own re-INVITE (§14.1): at most one INVITE transaction in either direction; 401/407
//!   answered once with credentials (again only for `stale=true`); 491 retried after 2.1–4 s
//!   when we own the Call-ID, 0–2 s otherwise (§14.1), at most [`MAX_GLARE_RETRIES`] times;
//!   481 or 408 ends the dialog (§12.2.1.2); any other failure leaves the session unchanged.

use super::digest::Challenge;
use super::events::InfoError;
use super::message::{Method, Request};
use super::services::ServerKey;
use super::transaction::Timers;
use super::transport::Peer;
use crate::rng::Rng;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most INFOs a leg queues behind the one in flight (each DTMF digit is one INFO): past it
/// `queue_info` refuses, so a client cannot grow a leg's memory without bound.
pub const MAX_QUEUED_INFOS: usize = 64;

/// How often a re-INVITE answered 491 is retried before the failure is reported.
pub const MAX_GLARE_RETRIES: u32 = 3;

/// The mid-call state of one call leg.
#[derive(Debug, Default)]
pub(super) struct MidCall {
    /// INFOs waiting for the one in flight: (Content-Type, body).
    infos: VecDeque<(String, Vec<u8>)>,
    /// The branch of the INFO in flight.
    info_in_flight: Option<String>,
    /// The peer's offer we are answering (or whose ACK we wait for).
    pub(super) reoffer: Option<Reoffer>,
    /// Our re-INVITE.
    pub(super) reinvite: Option<Reinvite>,
}

/// What to answer to an offer from the peer (re-INVITE, or UPDATE with SDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OfferVerdict {
    /// Hand it to the transaction user.
    Accept,
    /// Our re-INVITE is in progress: 491 Request Pending (§14.2, RFC 3311 §5.2).
    Glare,
    /// The previous offer is not finished: 500 with Retry-After (§14.2, RFC 3311 §5.2).
    Busy,
}

impl MidCall {
    /// Queues an INFO; [`MidCall::next_info`] tells when it may go. Refused (nothing queued)
    /// when [`MAX_QUEUED_INFOS`] already wait.
    pub(super) fn queue_info(&mut self, content_type: &str, body: Vec<u8>) -> Result<(), InfoError> {
        if self.infos.len() >= MAX_QUEUED_INFOS {
            return Err(InfoError::QueueFull);
        }
        self.infos.push_back((content_type.to_string(), body));
        Ok(())
    }

    /// The next INFO to send, if none is in flight.
    pub(super) fn next_info(&mut self) -> Option<(String, Vec<u8>)> {
        if self.info_in_flight.is_some() {
            return None;
        }
        self.infos.pop_front()
    }

    /// The INFO with `branch` went out.
    pub(super) fn info_sent(&mut self, branch: String) {
        self.info_in_flight = Some(branch);
    }

    /// The transaction of the INFO with `branch` completed (final response, timeout or transport
    /// error); returns whether it was the one in flight.
    pub(super) fn info_done(&mut self, branch: &str) -> bool {
        if self.info_in_flight.as_deref() == Some(branch) {
            self.info_in_flight = None;
            return true;
        }
        false
    }

    /// How an offer from the peer is received.
    pub(super) fn offer_verdict(&self) -> OfferVerdict {
        if self.reinvite.as_ref().is_some_and(Reinvite::in_progress) {
            OfferVerdict::Glare
        } else if self.reoffer.is_some() {
            OfferVerdict::Busy
        } else {
            OfferVerdict::Accept
        }
    }

    /// Whether we may send a re-INVITE now: no INVITE transaction in either direction (§14.1)
    /// and none of ours waiting to be retried.
    pub(super) fn may_reinvite(&self) -> bool {
        self.reoffer.is_none() && !self.reinvite.as_ref().is_some_and(|r| r.phase != Phase::Done)
    }
}

/// A random Retry-After for a 500 to an overlapping offer: 0–10 s (§14.2).
pub(super) fn retry_after_secs(rng: &mut Rng) -> u64 {
    rng.next_u64() % 11
}

/// §14.1: the wait before retrying a re-INVITE answered 491, in units of 10 ms: 2.1–4 s if we
/// own the Call-ID (we sent the initial INVITE), 0–2 s otherwise.
pub(super) fn glare_delay(owner: bool, rng: &mut Rng) -> Duration {
    let r = rng.next_u64();
    if owner {
        Duration::from_millis(2100 + 10 * (r % 191))
    } else {
        Duration::from_millis(10 * (r % 201))
    }
}

// ===== The peer's offer =====

/// An offer from the peer (re-INVITE, or UPDATE with SDP) and our answer to it.
#[derive(Debug)]
pub(super) struct Reoffer {
    /// Its server transaction.
    pub(super) key: ServerKey,
    /// The request.
    pub(super) req: Request,
    /// A re-INVITE without SDP: our 2xx carries the offer, the ACK the answer (RFC 3264 §4).
    pub(super) late: bool,
    /// Our 2xx, once sent (re-INVITE only): retransmitted until the ACK.
    pub(super) sent: Option<Sent2xx>,
}

impl Reoffer {
    /// The request's CSeq number (its ACK carries the same).
    pub(super) fn cseq(&self) -> u32 {
        self.req.headers.cseq().map(|c| c.seq).unwrap_or_default()
    }

    /// Whether the request is a re-INVITE (an UPDATE needs no ACK).
    pub(super) fn is_invite(&self) -> bool {
        self.req.method == Method::Invite
    }
}

/// Our 2xx to a re-INVITE, retransmitted by the UA core until the ACK (§13.3.1.4).
#[derive(Debug)]
pub(super) struct Sent2xx {
    /// The response as sent.
    pub(super) bytes: Vec<u8>,
    /// Where it went.
    pub(super) dest: Peer,
    /// Next retransmission and its interval (unreliable transports only).
    retransmit: Option<(Instant, Duration)>,
    /// 64·T1 after the 2xx: no ACK by then ends the call (§13.3.1.4).
    give_up: Instant,
    t2: Duration,
}

/// What a [`Sent2xx`] timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tick {
    /// Nothing due.
    Nothing,
    /// Send the 2xx again.
    Resend,
    /// No ACK within 64·T1: end the call with BYE.
    GiveUp,
}

impl Sent2xx {
    /// A 2xx sent at `now` over a `reliable` transport or not.
    pub(super) fn new(bytes: Vec<u8>, dest: Peer, now: Instant, timers: Timers) -> Self {
        let retransmit = (!dest.transport.reliable()).then_some((now + timers.t1, timers.t1));
        Self { bytes, dest, retransmit, give_up: now + timers.t64(), t2: timers.t2 }
    }

    /// When [`Sent2xx::on_timeout`] should run.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        Some(self.retransmit.map_or(self.give_up, |(at, _)| at.min(self.give_up)))
    }

    /// Runs the due timer.
    pub(super) fn on_timeout(&mut self, now: Instant) -> Tick {
        if self.give_up <= now {
            self.retransmit = None;
            return Tick::GiveUp;
        }
        match self.retransmit {
            Some((at, interval)) if at <= now => {
                let next = (interval * 2).min(self.t2);
                self.retransmit = Some((now + next, next));
                Tick::Resend
            }
            _ => Tick::Nothing,
        }
    }
}

// ===== Our re-INVITE =====

/// Where our re-INVITE stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// In flight.
    Sending,
    /// Answered 491; waiting to retry.
    Backoff,
    /// Answered; kept to ACK 2xx retransmissions.
    Done,
}

/// What to do after a final response to our re-INVITE (or its failure without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ReinviteStep {
    /// A 2xx: ACK it; `first` reports the answer, later ones are retransmissions (§13.2.2.4).
    Accepted { first: bool },
    /// Send it again with credentials (`proxy`: Proxy-Authorization).
    Authenticate { challenge: Challenge, proxy: bool, nc: u32 },
    /// 491: retry after this wait (§14.1).
    Backoff(Duration),
    /// Failed: `"<code> <phrase>"`; the session is unchanged (§14.1).
    Failed(String),
    /// 481 or 408: the dialog is gone; the call ends (§12.2.1.2).
    DialogGone(String),
    /// Nothing (a response after we gave up).
    Nothing,
}

/// Our re-INVITE.
#[derive(Debug)]
pub(super) struct Reinvite {
    /// The offer.
    pub(super) sdp: Vec<u8>,
    /// Where it stands.
    pub(super) phase: Phase,
    /// The request as last sent, and its branch.
    pub(super) sent: Option<(Request, String)>,
    /// The ACK of its 2xx, sent again for every retransmission of the 2xx.
    pub(super) ack: Option<Vec<u8>>,
    /// The ACK of a non-2xx final response, by branch, for its retransmissions (§17.1.1.3).
    pub(super) non_2xx_ack: Option<(String, Vec<u8>)>,
    /// The digest challenges answered so far.
    auth: super::invite::ChallengeMemory,
    /// 491 responses so far.
    glares: u32,
}

impl Reinvite {
    /// A re-INVITE offering `sdp`, about to be sent.
    pub(super) fn new(sdp: Vec<u8>) -> Self {
        Self {
            sdp,
            phase: Phase::Sending,
            sent: None,
            ack: None,
            non_2xx_ack: None,
            auth: super::invite::ChallengeMemory::default(),
            glares: 0,
        }
    }

    /// Whether its INVITE transaction is in progress (for glare, §14.2).
    pub(super) fn in_progress(&self) -> bool {
        self.phase == Phase::Sending
    }

    /// The branch of the request as last sent.
    pub(super) fn branch(&self) -> Option<&str> {
        self.sent.as_ref().map(|(_, b)| b.as_str())
    }

    /// A final response `code` (or a failure reported as one), with the WWW-/Proxy-Authenticate
    /// values; `owner` says whether we own the Call-ID.
    pub(super) fn on_final(
        &mut self,
        code: u16,
        reason: &str,
        challenges: &[String],
        owner: bool,
        rng: &mut Rng,
    ) -> ReinviteStep {
        if (200..300).contains(&code) {
            return match self.phase {
                Phase::Sending => {
                    self.phase = Phase::Done;
                    ReinviteStep::Accepted { first: true }
                }
                Phase::Done if self.ack.is_some() => ReinviteStep::Accepted { first: false },
                _ => ReinviteStep::Nothing,
            };
        }
        if self.phase != Phase::Sending {
            return ReinviteStep::Nothing;
        }
        let failed = format!("{code} {reason}");
        match code {
            401 | 407 => match self.auth.next(challenges) {
                Some((challenge, nc)) => ReinviteStep::Authenticate { challenge, proxy: code == 407, nc },
                None => {
                    self.phase = Phase::Done;
                    ReinviteStep::Failed(failed)
                }
            },
            491 if self.glares < MAX_GLARE_RETRIES => {
                self.glares += 1;
                self.phase = Phase::Backoff;
                self.auth.restart();
                ReinviteStep::Backoff(glare_delay(owner, rng))
            }
            408 | 481 => {
                self.phase = Phase::Done;
                ReinviteStep::DialogGone(failed)
            }
            _ => {
                self.phase = Phase::Done;
                ReinviteStep::Failed(failed)
            }
        }
    }

    /// The back-off is over: the re-INVITE goes out again (a new transaction, new CSeq).
    pub(super) fn retry(&mut self) {
        self.phase = Phase::Sending;
        self.ack = None;
    }

    /// The retry cannot go out (an offer from the peer is being answered): report the 491.
    pub(super) fn give_up(&mut self) -> String {
        self.phase = Phase::Done;
        "491 Request Pending".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::target::Transport;

    #[test]
    fn infos_go_one_at_a_time() {
        let mut m = MidCall::default();
        m.queue_info("application/dtmf-relay", b"Signal=1".to_vec()).unwrap();
        m.queue_info("application/dtmf-relay", b"Signal=2".to_vec()).unwrap();
        let first = m.next_info().unwrap();
        assert_eq!(first.1, b"Signal=1");
        m.info_sent("b1".into());
        assert_eq!(m.next_info(), None, "the second waits for the first");
        assert!(!m.info_done("other"));
        assert!(m.info_done("b1"));
        assert_eq!(m.next_info().unwrap().1, b"Signal=2");
        assert_eq!(m.next_info(), None, "queue empty");
    }

    #[test]
    fn info_queue_is_bounded() {
        let mut m = MidCall::default();
        for i in 0..MAX_QUEUED_INFOS {
            assert_eq!(m.queue_info("application/dtmf-relay", vec![i as u8]), Ok(()));
        }
        assert_eq!(m.queue_info("application/dtmf-relay", b"over".to_vec()), Err(InfoError::QueueFull));
        assert_eq!(m.next_info().unwrap().1, [0], "the queue kept the first ones, in order");
        m.info_sent("b1".into());
        assert_eq!(m.queue_info("application/dtmf-relay", b"fits".to_vec()), Ok(()), "one left the queue");
        assert_eq!(m.queue_info("application/dtmf-relay", b"over".to_vec()), Err(InfoError::QueueFull));
    }

    #[test]
    fn offer_verdicts() {
        let mut m = MidCall::default();
        assert_eq!(m.offer_verdict(), OfferVerdict::Accept);
        m.reinvite = Some(Reinvite::new(Vec::new()));
        assert_eq!(m.offer_verdict(), OfferVerdict::Glare);
        assert!(!m.may_reinvite());
        m.reinvite.as_mut().unwrap().phase = Phase::Backoff;
        assert_eq!(m.offer_verdict(), OfferVerdict::Accept, "waiting to retry is not in progress");
        assert!(!m.may_reinvite());
        m.reinvite.as_mut().unwrap().phase = Phase::Done;
        assert!(m.may_reinvite());
    }

    #[test]
    fn glare_delays_follow_section_14_1() {
        let mut rng = Rng::new([3; 32]);
        for _ in 0..500 {
            let owner = glare_delay(true, &mut rng).as_millis();
            assert!((2100..=4000).contains(&owner) && owner.is_multiple_of(10), "{owner}");
            let other = glare_delay(false, &mut rng).as_millis();
            assert!(other <= 2000 && other.is_multiple_of(10), "{other}");
            assert!(retry_after_secs(&mut rng) <= 10);
        }
    }

    #[test]
    fn reinvite_outcomes() {
        let mut rng = Rng::new([4; 32]);
        let ch = vec![r#"Digest realm="r", nonce="n", qop="auth""#.to_string()];
        let mut r = Reinvite::new(b"v=0".to_vec());
        assert!(matches!(r.on_final(407, "Proxy Auth", &ch, true, &mut rng), ReinviteStep::Authenticate { nc: 1, .. }));
        assert_eq!(
            r.on_final(401, "Unauthorized", &ch, true, &mut rng),
            ReinviteStep::Failed("401 Unauthorized".into())
        );
        let mut r = Reinvite::new(Vec::new());
        assert!(matches!(r.on_final(491, "Request Pending", &[], false, &mut rng), ReinviteStep::Backoff(_)));
        assert_eq!(r.phase, Phase::Backoff);
        r.retry();
        assert_eq!(r.on_final(200, "OK", &[], false, &mut rng), ReinviteStep::Accepted { first: true });
        r.ack = Some(b"ACK".to_vec());
        assert_eq!(r.on_final(200, "OK", &[], false, &mut rng), ReinviteStep::Accepted { first: false });
        let mut r = Reinvite::new(Vec::new());
        assert_eq!(
            r.on_final(488, "Not Acceptable Here", &[], true, &mut rng),
            ReinviteStep::Failed("488 Not Acceptable Here".into())
        );
        let mut r = Reinvite::new(Vec::new());
        assert_eq!(
            r.on_final(481, "Call/Transaction Does Not Exist", &[], true, &mut rng),
            ReinviteStep::DialogGone("481 Call/Transaction Does Not Exist".into())
        );
        let mut r = Reinvite::new(Vec::new());
        for _ in 0..MAX_GLARE_RETRIES {
            assert!(matches!(r.on_final(491, "Request Pending", &[], true, &mut rng), ReinviteStep::Backoff(_)));
            r.retry();
        }
        assert_eq!(
            r.on_final(491, "Request Pending", &[], true, &mut rng),
            ReinviteStep::Failed("491 Request Pending".into())
        );
    }

    #[test]
    fn sent_2xx_retransmits_then_gives_up() {
        let t0 = crate::time::test_epoch();
        let peer = Peer { transport: Transport::Udp, addr: "192.0.2.9:5060".parse().unwrap(), conn: None };
        let mut s = Sent2xx::new(b"200".to_vec(), peer, t0, Timers::default());
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(s.on_timeout(t0 + Duration::from_millis(500)), Tick::Resend);
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_millis(1500)), "T1 doubling");
        assert_eq!(s.on_timeout(t0 + Duration::from_secs(32)), Tick::GiveUp);
        let tcp = Peer { transport: Transport::Tcp, ..peer };
        let s = Sent2xx::new(b"200".to_vec(), tcp, t0, Timers::default());
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(32)), "no retransmission on TCP");
    }
}
