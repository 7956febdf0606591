//! The UAC side of one INVITE session (RFC 3261 §13.2, §9.1, §22.2; RFC 6026): what to do with
//! each response to our INVITE and with the user's hang-up, as a pure machine. The SIP stack
//! builds the messages (INVITE retries, ACKs, CANCEL, BYE) from the actions it returns.
//!
//! Rules it encodes:
//! - CANCEL only after a provisional response (§9.1): a hang-up before one is remembered and
//!   the CANCEL goes out when the first 1xx arrives.
//! - Every 2xx is ACKed by the UA core, including 2xx retransmissions (§13.2.2.4). With forking,
//!   the first 2xx wins; other dialogs' 2xx are ACKed and then BYEd.
//! - A 2xx that races our CANCEL is ACKed and BYEd.
//! - 401/407 are answered once with credentials (new CSeq, same Call-ID and From tag); a second
//!   challenge without `stale=true` ends the call with that response.

use super::digest::Challenge;

/// What the transaction user hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallProgress {
    /// A provisional response (`100` excluded), with its SDP if any (early media).
    Provisional { code: u16, reason: String, sdp: Option<Vec<u8>> },
    /// The call was answered; the SDP of the (first) 2xx.
    Answered { sdp: Option<Vec<u8>> },
    /// The call ended: `"<code> <phrase>"`.
    Ended { reason: String },
}

/// Which digest challenge of a 401/407 to answer, and with which nonce count (RFC 7616 §3.4):
/// a request is answered with credentials once, again only for a `stale` nonce; the count goes
/// up each time the same nonce is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ChallengeMemory {
    /// The nonce answered by the request in flight.
    answered: Option<String>,
    /// The last nonce used and how many times.
    nonce_uses: Option<(String, u32)>,
}

impl ChallengeMemory {
    /// The challenge to answer among `challenges` (header values) and its nonce count, or `None`
    /// when the request must fail (nothing usable, or a second non-stale challenge).
    pub(super) fn next(&mut self, challenges: &[String]) -> Option<(Challenge, u32)> {
        let c = Challenge::choose(challenges.iter().map(String::as_str)).ok()?;
        if self.answered.is_some() && !c.stale {
            return None;
        }
        let nc = match &self.nonce_uses {
            Some((n, count)) if *n == c.nonce => count + 1,
            _ => 1,
        };
        self.nonce_uses = Some((c.nonce.clone(), nc));
        self.answered = Some(c.nonce.clone());
        Some((c, nc))
    }

    /// A new request starts (a retry after 491): its first challenge is answered again.
    pub(super) fn restart(&mut self) {
        self.answered = None;
    }
}

/// What the stack must send or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UacAction {
    /// Tell the transaction user.
    Report(CallProgress),
    /// Send the INVITE again with credentials for this challenge (`proxy`: Proxy-Authorization).
    Authenticate { challenge: Challenge, proxy: bool, nc: u32 },
    /// Send CANCEL for the INVITE (§9.1).
    Cancel,
    /// ACK the 2xx of the dialog with this To tag (§13.2.2.4).
    Ack { to_tag: String },
    /// Send BYE in the dialog with this To tag.
    Bye { to_tag: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// INVITE sent, no provisional response yet.
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// Answered; the dialog with this To tag is ours.
    Confirmed { to_tag: String },
    /// We sent CANCEL; waiting for the final response.
    Cancelling,
    /// We sent BYE in the confirmed dialog.
    Closing { to_tag: String },
    /// Over.
    Ended,
}

/// One outgoing INVITE session.
#[derive(Debug, Clone)]
pub struct UacInvite {
    state: State,
    /// The user hung up before any provisional response: CANCEL at the first one.
    cancel_pending: bool,
    /// The digest challenges answered so far.
    auth: ChallengeMemory,
}

impl Default for UacInvite {
    fn default() -> Self {
        Self::new()
    }
}

impl UacInvite {
    /// A session whose INVITE was just sent.
    pub fn new() -> Self {
        Self { state: State::Calling, cancel_pending: false, auth: ChallengeMemory::default() }
    }

    /// True once the call is over and nothing more will be sent.
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// The To tag of the confirmed dialog.
    pub fn confirmed_tag(&self) -> Option<&str> {
        match &self.state {
            State::Confirmed { to_tag } => Some(to_tag),
            _ => None,
        }
    }

    /// A response to our INVITE (or a 408 for a transaction timeout / transport failure).
    /// `to_tag` is the response's To tag; `challenges` the WWW-/Proxy-Authenticate values.
    pub fn on_response(
        &mut self,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
        sdp: Option<Vec<u8>>,
        challenges: &[String],
    ) -> Vec<UacAction> {
        let mut out = Vec::new();
        match code {
            100 => {}
            101..=199 => match self.state {
                State::Calling | State::Proceeding => {
                    self.state = State::Proceeding;
                    if self.cancel_pending {
                        self.cancel_pending = false;
                        self.state = State::Cancelling;
                        out.push(UacAction::Cancel);
                    } else {
                        out.push(UacAction::Report(CallProgress::Provisional {
                            code,
                            reason: reason.to_string(),
                            sdp,
                        }));
                    }
                }
                _ => {}
            },
            200..=299 => {
                let tag = to_tag.unwrap_or_default().to_string();
                match &self.state {
                    State::Calling | State::Proceeding if !self.cancel_pending => {
                        self.state = State::Confirmed { to_tag: tag.clone() };
                        out.push(UacAction::Ack { to_tag: tag });
                        out.push(UacAction::Report(CallProgress::Answered { sdp }));
                    }
                    // §13.2.2.4: a retransmitted 2xx of our dialog is ACKed again.
                    State::Confirmed { to_tag } | State::Closing { to_tag } if *to_tag == tag => {
                        out.push(UacAction::Ack { to_tag: tag });
                    }
                    // Another fork answered, or the answer raced our CANCEL or hang-up: ACK and
                    // BYE it (§13.2.2.4, §15).
                    _ => {
                        let ended_now = matches!(self.state, State::Calling | State::Proceeding | State::Cancelling);
                        out.push(UacAction::Ack { to_tag: tag.clone() });
                        out.push(UacAction::Bye { to_tag: tag });
                        if ended_now {
                            self.cancel_pending = false;
                            self.state = State::Ended;
                            out.push(UacAction::Report(CallProgress::Ended {
                                reason: "487 Request Terminated".into(),
                            }));
                        }
                    }
                }
            }
            401 | 407 if matches!(self.state, State::Calling | State::Proceeding) && !self.cancel_pending => {
                match self.auth.next(challenges) {
                    Some((challenge, nc)) => {
                        self.state = State::Calling;
                        out.push(UacAction::Authenticate { challenge, proxy: code == 407, nc });
                    }
                    None => self.end(code, reason, &mut out),
                }
            }
            _ if code >= 300 => match self.state {
                State::Confirmed { .. } | State::Closing { .. } | State::Ended => {}
                State::Cancelling => {
                    self.state = State::Ended;
                    out.push(UacAction::Report(CallProgress::Ended { reason: "487 Request Terminated".into() }));
                }
                _ => self.end(code, reason, &mut out),
            },
            _ => {}
        }
        out
    }

    /// The user hangs up (§9.1, §15.1).
    pub fn hang_up(&mut self) -> Vec<UacAction> {
        match self.state.clone() {
            State::Calling => {
                // No provisional yet: the CANCEL must wait for one (or the final response).
                self.cancel_pending = true;
                Vec::new()
            }
            State::Proceeding => {
                self.state = State::Cancelling;
                vec![UacAction::Cancel]
            }
            State::Confirmed { to_tag } => {
                self.state = State::Closing { to_tag: to_tag.clone() };
                vec![UacAction::Bye { to_tag }]
            }
            State::Cancelling | State::Closing { .. } | State::Ended => Vec::new(),
        }
    }

    /// The response to our BYE arrived (any final response ends the dialog, RFC 5057).
    pub fn on_bye_response(&mut self) -> Vec<UacAction> {
        if matches!(self.state, State::Closing { .. }) {
            self.state = State::Ended;
            return vec![UacAction::Report(CallProgress::Ended { reason: "200 OK".into() })];
        }
        Vec::new()
    }

    /// The peer sent BYE in the confirmed dialog.
    pub fn on_remote_bye(&mut self) -> Vec<UacAction> {
        match self.state {
            State::Confirmed { .. } | State::Closing { .. } => {
                self.state = State::Ended;
                vec![UacAction::Report(CallProgress::Ended { reason: "200 OK".into() })]
            }
            _ => Vec::new(),
        }
    }

    fn end(&mut self, code: u16, reason: &str, out: &mut Vec<UacAction>) {
        self.state = State::Ended;
        self.cancel_pending = false;
        out.push(UacAction::Report(CallProgress::Ended { reason: format!("{code} {reason}") }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(reason: &str) -> UacAction {
        UacAction::Report(CallProgress::Ended { reason: reason.into() })
    }

    #[test]
    fn ringing_answered_acked_and_bye() {
        let mut c = UacInvite::new();
        assert!(c.on_response(100, "Trying", None, None, &[]).is_empty());
        assert_eq!(
            c.on_response(180, "Ringing", Some("t1"), None, &[]),
            [UacAction::Report(CallProgress::Provisional { code: 180, reason: "Ringing".into(), sdp: None })]
        );
        let a = c.on_response(200, "OK", Some("t1"), Some(b"v=0".to_vec()), &[]);
        assert_eq!(
            a,
            [
                UacAction::Ack { to_tag: "t1".into() },
                UacAction::Report(CallProgress::Answered { sdp: Some(b"v=0".to_vec()) })
            ]
        );
        assert_eq!(c.on_response(200, "OK", Some("t1"), None, &[]), [UacAction::Ack { to_tag: "t1".into() }]);
        assert_eq!(c.hang_up(), [UacAction::Bye { to_tag: "t1".into() }]);
        assert_eq!(c.on_bye_response(), [ended("200 OK")]);
        assert!(c.is_ended());
    }

    #[test]
    fn forked_second_answer_is_acked_and_byed() {
        let mut c = UacInvite::new();
        c.on_response(200, "OK", Some("t1"), None, &[]);
        assert_eq!(
            c.on_response(200, "OK", Some("t2"), None, &[]),
            [UacAction::Ack { to_tag: "t2".into() }, UacAction::Bye { to_tag: "t2".into() }]
        );
        assert_eq!(c.confirmed_tag(), Some("t1"));
    }

    #[test]
    fn cancel_waits_for_a_provisional_response() {
        let mut c = UacInvite::new();
        assert!(c.hang_up().is_empty(), "no CANCEL before a 1xx");
        assert_eq!(c.on_response(180, "Ringing", Some("t1"), None, &[]), [UacAction::Cancel]);
        assert_eq!(c.on_response(487, "Request Terminated", Some("t1"), None, &[]), [ended("487 Request Terminated")]);
    }

    #[test]
    fn answer_racing_cancel_is_acked_and_byed() {
        let mut c = UacInvite::new();
        c.on_response(183, "Session Progress", Some("t1"), Some(b"v=0".to_vec()), &[]);
        assert_eq!(c.hang_up(), [UacAction::Cancel]);
        assert_eq!(
            c.on_response(200, "OK", Some("t1"), None, &[]),
            [
                UacAction::Ack { to_tag: "t1".into() },
                UacAction::Bye { to_tag: "t1".into() },
                ended("487 Request Terminated")
            ]
        );
    }

    #[test]
    fn busy_and_digest() {
        let ch = vec![r#"Digest realm="r", nonce="n", qop="auth""#.to_string()];
        let mut c = UacInvite::new();
        let a = c.on_response(407, "Proxy Authentication Required", Some("x"), None, &ch);
        assert!(matches!(&a[..], [UacAction::Authenticate { proxy: true, nc: 1, .. }]), "{a:?}");
        assert_eq!(c.on_response(486, "Busy Here", Some("y"), None, &[]), [ended("486 Busy Here")]);
        let mut c = UacInvite::new();
        c.on_response(401, "Unauthorized", None, None, &ch);
        assert_eq!(
            c.on_response(401, "Unauthorized", None, None, &ch),
            [ended("401 Unauthorized")],
            "wrong credentials"
        );
        let mut c = UacInvite::new();
        assert_eq!(c.on_response(408, "Request Timeout", None, None, &[]), [ended("408 Request Timeout")]);
    }

    #[test]
    fn remote_bye() {
        let mut c = UacInvite::new();
        c.on_response(200, "OK", Some("t1"), None, &[]);
        assert_eq!(c.on_remote_bye(), [ended("200 OK")]);
        assert!(c.hang_up().is_empty());
    }
}

// ===== UAS =====

/// What the stack must do for an incoming INVITE session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UasAction {
    /// Tell the transaction user.
    Report(CallProgress),
    /// Send this final response to the INVITE (2xx carries our SDP; the stack builds it).
    SendFinal { code: u16 },
    /// Send the 2xx again (§13.3.1.4: the UA core retransmits it until the ACK).
    Retransmit2xx,
    /// Answer the CANCEL with 200 and the INVITE with 487 (§9.2).
    CancelAccepted,
    /// Send BYE in the dialog.
    Bye,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UasState {
    /// Ringing; the user has not answered.
    Offered,
    /// 2xx sent, no ACK yet.
    Answered,
    /// ACK received.
    Confirmed,
    /// We sent BYE.
    Closing,
    /// Over.
    Ended,
}

/// One incoming INVITE session.
#[derive(Debug, Clone)]
pub struct UasInvite {
    state: UasState,
    timers: super::transaction::Timers,
    /// Next 2xx retransmission and its interval, while Answered.
    retransmit: Option<(std::time::Instant, std::time::Duration)>,
    /// When to give up waiting for the ACK (64·T1 after the 2xx).
    give_up: Option<std::time::Instant>,
}

impl UasInvite {
    /// A session for an INVITE that just arrived (the stack has sent 100/180).
    pub fn new(timers: super::transaction::Timers) -> Self {
        Self { state: UasState::Offered, timers, retransmit: None, give_up: None }
    }

    /// True once the call is over.
    pub fn is_ended(&self) -> bool {
        self.state == UasState::Ended
    }

    /// True while the user may still answer or decline.
    pub fn is_offered(&self) -> bool {
        self.state == UasState::Offered
    }

    /// True once answered (2xx sent) and until the call closes: the dialog is usable.
    pub fn is_established(&self) -> bool {
        matches!(self.state, UasState::Answered | UasState::Confirmed)
    }

    /// True once the ACK for our 2xx arrived: the INVITE transaction is over (§14.1).
    pub fn is_confirmed(&self) -> bool {
        self.state == UasState::Confirmed
    }

    /// When [`UasInvite::on_timeout`] should run.
    pub fn next_deadline(&self) -> Option<std::time::Instant> {
        [self.retransmit.map(|r| r.0), self.give_up].into_iter().flatten().min()
    }

    /// The user answers: send the 2xx and retransmit it until the ACK (unreliable transports
    /// only; `reliable` skips the retransmissions but still waits 64·T1 for the ACK).
    pub fn answer(&mut self, now: std::time::Instant, reliable: bool) -> Vec<UasAction> {
        if self.state != UasState::Offered {
            return Vec::new();
        }
        self.state = UasState::Answered;
        if !reliable {
            self.retransmit = Some((now + self.timers.t1, self.timers.t1));
        }
        self.give_up = Some(now + self.timers.t64());
        vec![UasAction::SendFinal { code: 200 }]
    }

    /// The user declines with `code` (486 by default, 603 configurable).
    pub fn decline(&mut self, code: u16, reason: &str) -> Vec<UasAction> {
        if self.state != UasState::Offered {
            return Vec::new();
        }
        self.state = UasState::Ended;
        vec![
            UasAction::SendFinal { code },
            UasAction::Report(CallProgress::Ended { reason: format!("{code} {reason}") }),
        ]
    }

    /// The caller cancelled (§9.2).
    pub fn on_cancel(&mut self) -> Vec<UasAction> {
        if self.state != UasState::Offered {
            return Vec::new(); // too late: the CANCEL gets 200, the call goes on (§9.2)
        }
        self.state = UasState::Ended;
        vec![
            UasAction::CancelAccepted,
            UasAction::Report(CallProgress::Ended { reason: "487 Request Terminated".into() }),
        ]
    }

    /// The ACK for our 2xx arrived.
    pub fn on_ack(&mut self) -> Vec<UasAction> {
        if self.state == UasState::Answered {
            self.state = UasState::Confirmed;
            self.retransmit = None;
            self.give_up = None;
        }
        Vec::new()
    }

    /// The user hangs up an answered call.
    pub fn hang_up(&mut self) -> Vec<UasAction> {
        match self.state {
            UasState::Answered | UasState::Confirmed => {
                self.state = UasState::Closing;
                self.retransmit = None;
                self.give_up = None;
                vec![UasAction::Bye]
            }
            _ => Vec::new(),
        }
    }

    /// The response to our BYE arrived.
    pub fn on_bye_response(&mut self) -> Vec<UasAction> {
        if self.state == UasState::Closing {
            self.state = UasState::Ended;
            return vec![UasAction::Report(CallProgress::Ended { reason: "200 OK".into() })];
        }
        Vec::new()
    }

    /// The caller sent BYE.
    pub fn on_remote_bye(&mut self) -> Vec<UasAction> {
        match self.state {
            UasState::Answered | UasState::Confirmed | UasState::Closing => {
                self.state = UasState::Ended;
                self.retransmit = None;
                self.give_up = None;
                vec![UasAction::Report(CallProgress::Ended { reason: "200 OK".into() })]
            }
            _ => Vec::new(),
        }
    }

    /// Retransmits the 2xx (T1 doubling up to T2) or, after 64·T1 without ACK, ends the call
    /// with BYE (§13.3.1.4).
    pub fn on_timeout(&mut self, now: std::time::Instant) -> Vec<UasAction> {
        if self.give_up.is_some_and(|t| t <= now) {
            self.state = UasState::Closing;
            self.retransmit = None;
            self.give_up = None;
            return vec![
                UasAction::Bye,
                UasAction::Report(CallProgress::Ended { reason: "408 Request Timeout".into() }),
            ];
        }
        match self.retransmit {
            Some((at, interval)) if at <= now => {
                let next = (interval * 2).min(self.timers.t2);
                self.retransmit = Some((now + next, next));
                vec![UasAction::Retransmit2xx]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod uas_tests {
    use super::*;
    use crate::sip::transaction::Timers;
    use std::time::Duration;

    #[test]
    fn answered_2xx_retransmits_until_ack() {
        let t0 = crate::time::test_epoch();
        let mut c = UasInvite::new(Timers::default());
        assert_eq!(c.answer(t0, false), [UasAction::SendFinal { code: 200 }]);
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(c.on_timeout(t0 + Duration::from_millis(500)), [UasAction::Retransmit2xx]);
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_millis(1500)), "T1 doubling");
        c.on_ack();
        assert_eq!(c.next_deadline(), None);
        assert_eq!(c.hang_up(), [UasAction::Bye]);
        assert_eq!(c.on_bye_response(), [UasAction::Report(CallProgress::Ended { reason: "200 OK".into() })]);
    }

    #[test]
    fn no_ack_ends_with_bye() {
        let t0 = crate::time::test_epoch();
        let mut c = UasInvite::new(Timers::default());
        c.answer(t0, true);
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_secs(32)), "no retransmissions on TCP");
        let a = c.on_timeout(t0 + Duration::from_secs(32));
        assert_eq!(a[0], UasAction::Bye);
    }

    #[test]
    fn cancel_and_decline() {
        let mut c = UasInvite::new(Timers::default());
        assert_eq!(
            c.on_cancel(),
            [
                UasAction::CancelAccepted,
                UasAction::Report(CallProgress::Ended { reason: "487 Request Terminated".into() })
            ]
        );
        assert!(c.is_ended());
        let mut c = UasInvite::new(Timers::default());
        assert_eq!(c.decline(603, "Decline")[0], UasAction::SendFinal { code: 603 });
        assert!(c.answer(crate::time::test_epoch(), false).is_empty(), "decided already");
    }
}
