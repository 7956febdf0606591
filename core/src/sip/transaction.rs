//! The four transaction state machines of RFC 3261 §17, with RFC 6026's Accepted states (timers
//! L and M). They know bytes, response codes and time, not message syntax: the SIP stack parses,
//! matches (§17.1.3, §17.2.3) and builds ACKs; a machine decides what happens and when.
//!
//! Retransmissions (timers A, E, G) run only on unreliable transports; the waiting timers D, I,
//! J, K are zero on reliable ones (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2). Timeouts (B, F, H,
//! L, M) run on all transports.

use std::time::{Duration, Instant};

/// RFC 3261 Table 4 timer bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate, 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

impl Timers {
    /// 64·T1: timers B, F, H, J (UDP), L, M.
    pub fn t64(&self) -> Duration {
        self.t1 * 64
    }
}

/// INVITE or not: the two families have different machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// INVITE transactions (§17.1.1, §17.2.1).
    Invite,
    /// Every other method except ACK (§17.1.2, §17.2.2).
    NonInvite,
}

// ===== Client transactions (§17.1) =====

/// Client transaction states. `Calling` is the INVITE name of `Trying`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Request sent, nothing heard (Calling for INVITE, Trying for non-INVITE).
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived; absorbing retransmissions (timer D or K).
    Completed,
    /// INVITE only (RFC 6026 §7.2): a 2xx arrived; further 2xx go to the TU until timer M.
    Accepted,
    /// Done; the stack removes the transaction.
    Terminated,
}

/// What the stack must do with a response the machine was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseVerdict {
    /// Pass it to the transaction user.
    Deliver,
    /// Pass it to the TU, and (INVITE, non-2xx final) send the ACK (§17.1.1.3).
    DeliverAndAck,
    /// A retransmitted non-2xx final response: send the ACK again, tell the TU nothing.
    AckAgain,
    /// Drop it.
    Absorb,
}

/// What a client transaction asks for when a timer fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Send the request again (timer A or E).
    Retransmit,
    /// Timer B or F: tell the TU the request timed out (it reports 408).
    TimedOut,
    /// The transaction ended; remove it.
    Terminated,
}

/// One client transaction.
#[derive(Debug, Clone)]
pub struct ClientTransaction {
    kind: Kind,
    reliable: bool,
    timers: Timers,
    state: ClientState,
    /// Next retransmission (A/E) and its current interval.
    retransmit: Option<(Instant, Duration)>,
    /// Transaction timeout (B/F).
    timeout: Option<Instant>,
    /// End of the Completed/Accepted wait (D, K, M).
    linger: Option<Instant>,
}

impl ClientTransaction {
    /// A transaction whose request was just sent at `now`.
    pub fn new(kind: Kind, reliable: bool, timers: Timers, now: Instant) -> Self {
        let retransmit = (!reliable).then_some((now + timers.t1, timers.t1));
        Self {
            kind,
            reliable,
            timers,
            state: ClientState::Trying,
            retransmit,
            timeout: Some(now + timers.t64()),
            linger: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// INVITE or not.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The earliest armed timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit.map(|r| r.0), self.timeout, self.linger].into_iter().flatten().min()
    }

    /// A response matched this transaction.
    pub fn on_response(&mut self, code: u16, now: Instant) -> ResponseVerdict {
        let provisional = code < 200;
        match (self.kind, self.state) {
            (_, ClientState::Terminated) => ResponseVerdict::Absorb,
            // §17.1.1.2: 1xx in Calling or Proceeding → Proceeding, stop retransmitting the
            // INVITE (timer A); a non-INVITE keeps retransmitting at T2 (§17.1.2.2).
            (_, ClientState::Trying | ClientState::Proceeding) if provisional => {
                self.state = ClientState::Proceeding;
                match self.kind {
                    Kind::Invite => self.retransmit = None,
                    Kind::NonInvite => {
                        if let Some((_, _)) = self.retransmit {
                            self.retransmit = Some((now + self.timers.t2, self.timers.t2));
                        }
                    }
                }
                ResponseVerdict::Deliver
            }
            // RFC 6026 §7.2: 2xx → Accepted, timer M; later 2xx still go to the TU (it ACKs).
            (Kind::Invite, ClientState::Trying | ClientState::Proceeding) if code < 300 => {
                self.state = ClientState::Accepted;
                self.retransmit = None;
                self.timeout = None;
                self.linger = Some(now + self.timers.t64());
                ResponseVerdict::Deliver
            }
            (Kind::Invite, ClientState::Trying | ClientState::Proceeding) => {
                // §17.1.1.2: 300–699 → Completed, ACK, timer D (32 s on UDP, 0 reliable).
                self.state = ClientState::Completed;
                self.retransmit = None;
                self.timeout = None;
                let d = if self.reliable { Duration::ZERO } else { Duration::from_secs(32).max(self.timers.t64()) };
                self.linger = Some(now + d);
                ResponseVerdict::DeliverAndAck
            }
            (Kind::Invite, ClientState::Accepted) if (200..300).contains(&code) => ResponseVerdict::Deliver,
            (Kind::Invite, ClientState::Completed) if code >= 300 => ResponseVerdict::AckAgain,
            (Kind::NonInvite, ClientState::Trying | ClientState::Proceeding) => {
                // §17.1.2.2: final → Completed, timer K (T4 on UDP, 0 reliable).
                self.state = ClientState::Completed;
                self.retransmit = None;
                self.timeout = None;
                let k = if self.reliable { Duration::ZERO } else { self.timers.t4 };
                self.linger = Some(now + k);
                ResponseVerdict::Deliver
            }
            _ => ResponseVerdict::Absorb,
        }
    }

    /// The transport failed (§17.1.4): the TU learns it as a timeout-like failure.
    pub fn on_transport_error(&mut self) {
        self.terminate();
    }

    /// Fires every due timer, pushing what the stack must do.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<ClientEvent>) {
        if self.timeout.is_some_and(|t| t <= now) {
            // Timer B / F: the request timed out.
            self.terminate();
            out.push(ClientEvent::TimedOut);
            out.push(ClientEvent::Terminated);
            return;
        }
        if self.linger.is_some_and(|t| t <= now) {
            // Timers D, K, M.
            self.terminate();
            out.push(ClientEvent::Terminated);
            return;
        }
        if let Some((at, interval)) = self.retransmit {
            if at <= now {
                // Timer A doubles without bound (B ends it); E doubles up to T2, and stays
                // at T2 once a provisional response arrived.
                let next = match (self.kind, self.state) {
                    (Kind::Invite, _) => interval * 2,
                    (Kind::NonInvite, ClientState::Proceeding) => self.timers.t2,
                    (Kind::NonInvite, _) => (interval * 2).min(self.timers.t2),
                };
                self.retransmit = Some((now + next, next));
                out.push(ClientEvent::Retransmit);
            }
        }
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.retransmit = None;
        self.timeout = None;
        self.linger = None;
    }
}

// ===== Server transactions (§17.2) =====

/// Server transaction states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE: request received, nothing sent yet.
    Trying,
    /// A provisional response was sent (INVITE starts here).
    Proceeding,
    /// A final response was sent (non-2xx for INVITE); retransmitting it / absorbing requests.
    Completed,
    /// INVITE: the ACK for our non-2xx arrived (timer I).
    Confirmed,
    /// INVITE (RFC 6026 §7.1): a 2xx was sent; timer L absorbs INVITE retransmissions, ACKs
    /// pass to the TU.
    Accepted,
    /// Done; the stack removes the transaction.
    Terminated,
}

/// What a server transaction asks for when a timer fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// Send the last response again (timer G).
    Retransmit,
    /// Timer H: no ACK for our non-2xx final response.
    AckTimeout,
    /// The transaction ended; remove it.
    Terminated,
}

/// One server transaction. It keeps the last response it sent so retransmitted requests are
/// answered again without the TU.
#[derive(Debug, Clone)]
pub struct ServerTransaction {
    kind: Kind,
    reliable: bool,
    timers: Timers,
    state: ServerState,
    last_response: Option<Vec<u8>>,
    /// Timer G and its interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer H (waiting for the ACK) or L (Accepted).
    timeout: Option<Instant>,
    /// Timers I, J.
    linger: Option<Instant>,
}

impl ServerTransaction {
    /// A transaction for a request that just arrived.
    pub fn new(kind: Kind, reliable: bool, timers: Timers) -> Self {
        let state = match kind {
            Kind::Invite => ServerState::Proceeding,
            Kind::NonInvite => ServerState::Trying,
        };
        Self { kind, reliable, timers, state, last_response: None, retransmit: None, timeout: None, linger: None }
    }

    /// Current state.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// INVITE or not.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The earliest armed timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit.map(|r| r.0), self.timeout, self.linger].into_iter().flatten().min()
    }

    /// The TU sends a response with status `code`; returns whether it may go on the wire
    /// (`false` once a final response was sent).
    pub fn send_response(&mut self, code: u16, bytes: Vec<u8>, now: Instant) -> bool {
        let final_ = code >= 200;
        let ok = match (self.kind, self.state) {
            (_, ServerState::Trying | ServerState::Proceeding) if !final_ => {
                self.state = ServerState::Proceeding;
                true
            }
            (Kind::Invite, ServerState::Proceeding) if code < 300 => {
                // RFC 6026 §7.1: 2xx → Accepted, timer L; the UA core retransmits the 2xx.
                self.state = ServerState::Accepted;
                self.timeout = Some(now + self.timers.t64());
                true
            }
            (Kind::Invite, ServerState::Proceeding) => {
                // §17.2.1: non-2xx final → Completed, timer G (UDP) and H.
                self.state = ServerState::Completed;
                if !self.reliable {
                    self.retransmit = Some((now + self.timers.t1, self.timers.t1));
                }
                self.timeout = Some(now + self.timers.t64());
                true
            }
            (Kind::NonInvite, ServerState::Trying | ServerState::Proceeding) => {
                // §17.2.2: final → Completed, timer J (64·T1 on UDP, 0 reliable).
                self.state = ServerState::Completed;
                let j = if self.reliable { Duration::ZERO } else { self.timers.t64() };
                self.linger = Some(now + j);
                true
            }
            _ => false,
        };
        if ok {
            self.last_response = Some(bytes);
        }
        ok
    }

    /// The request was received again: the response to resend, if any (§17.2.1, §17.2.2).
    pub fn on_retransmitted_request(&self) -> Option<&[u8]> {
        match self.state {
            ServerState::Proceeding | ServerState::Completed => self.last_response.as_deref(),
            _ => None,
        }
    }

    /// An ACK matched this (INVITE) transaction. Returns `true` if the TU should see it (the
    /// ACK of a 2xx in Accepted is the UA core's business, RFC 6026 §7.1).
    pub fn on_ack(&mut self, now: Instant) -> bool {
        match self.state {
            ServerState::Completed => {
                // §17.2.1: → Confirmed, stop G and H, timer I (T4 on UDP, 0 reliable).
                self.state = ServerState::Confirmed;
                self.retransmit = None;
                self.timeout = None;
                let i = if self.reliable { Duration::ZERO } else { self.timers.t4 };
                self.linger = Some(now + i);
                false
            }
            ServerState::Accepted => true,
            _ => false,
        }
    }

    /// The transport failed while sending a response (§17.2.4).
    pub fn on_transport_error(&mut self) {
        self.terminate();
    }

    /// Fires every due timer.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<ServerEvent>) {
        if self.timeout.is_some_and(|t| t <= now) {
            let was = self.state;
            self.terminate();
            if was == ServerState::Completed {
                out.push(ServerEvent::AckTimeout);
            }
            out.push(ServerEvent::Terminated);
            return;
        }
        if self.linger.is_some_and(|t| t <= now) {
            self.terminate();
            out.push(ServerEvent::Terminated);
            return;
        }
        if let Some((at, interval)) = self.retransmit {
            if at <= now {
                // Timer G doubles up to T2.
                let next = (interval * 2).min(self.timers.t2);
                self.retransmit = Some((now + next, next));
                out.push(ServerEvent::Retransmit);
            }
        }
    }

    /// The last response sent, for retransmission.
    pub fn last_response(&self) -> Option<&[u8]> {
        self.last_response.as_deref()
    }

    fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.retransmit = None;
        self.timeout = None;
        self.linger = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs `tx` on a virtual clock until it terminates or `limit` passes; returns the times
    /// (ms since `t0`) of each event.
    fn run_client(tx: &mut ClientTransaction, t0: Instant, limit: Duration) -> Vec<(u128, ClientEvent)> {
        let mut log = Vec::new();
        while let Some(at) = tx.next_deadline() {
            if at > t0 + limit {
                break;
            }
            let mut out = Vec::new();
            tx.on_timeout(at, &mut out);
            for e in out {
                log.push(((at - t0).as_millis(), e));
            }
        }
        log
    }

    #[test]
    fn invite_client_timer_a_doubles_and_timer_b_gives_408() {
        let t0 = crate::time::test_epoch();
        let mut tx = ClientTransaction::new(Kind::Invite, false, Timers::default(), t0);
        let log = run_client(&mut tx, t0, Duration::from_secs(100));
        let retransmits: Vec<u128> =
            log.iter().filter(|(_, e)| *e == ClientEvent::Retransmit).map(|(t, _)| *t).collect();
        // A fires at T1, 3·T1, 7·T1, … (intervals 500, 1000, 2000, … ms) until B at 64·T1.
        assert_eq!(retransmits, [500, 1500, 3500, 7500, 15500, 31500]);
        assert!(log.contains(&(32000, ClientEvent::TimedOut)), "{log:?}");
        assert_eq!(log.last(), Some(&(32000, ClientEvent::Terminated)));
    }

    #[test]
    fn invite_client_reliable_never_retransmits() {
        let t0 = crate::time::test_epoch();
        let mut tx = ClientTransaction::new(Kind::Invite, true, Timers::default(), t0);
        let log = run_client(&mut tx, t0, Duration::from_secs(100));
        assert_eq!(log, [(32000, ClientEvent::TimedOut), (32000, ClientEvent::Terminated)]);
    }

    #[test]
    fn invite_client_provisional_then_failure_acks_and_waits_timer_d() {
        let t0 = crate::time::test_epoch();
        let mut tx = ClientTransaction::new(Kind::Invite, false, Timers::default(), t0);
        assert_eq!(tx.on_response(100, t0 + 100 * MS), ResponseVerdict::Deliver);
        assert_eq!(tx.state(), ClientState::Proceeding);
        assert_eq!(tx.next_deadline(), Some(t0 + 32000 * MS), "timer A stopped, B still armed");
        assert_eq!(tx.on_response(486, t0 + 200 * MS), ResponseVerdict::DeliverAndAck);
        assert_eq!(tx.state(), ClientState::Completed);
        assert_eq!(tx.on_response(486, t0 + 300 * MS), ResponseVerdict::AckAgain);
        let log = run_client(&mut tx, t0, Duration::from_secs(100));
        assert_eq!(log, [(32200, ClientEvent::Terminated)], "timer D is 32 s on UDP");
    }

    #[test]
    fn invite_client_2xx_goes_to_accepted_and_passes_retransmissions() {
        let t0 = crate::time::test_epoch();
        let mut tx = ClientTransaction::new(Kind::Invite, true, Timers::default(), t0);
        assert_eq!(tx.on_response(180, t0), ResponseVerdict::Deliver);
        assert_eq!(tx.on_response(200, t0 + MS), ResponseVerdict::Deliver);
        assert_eq!(tx.state(), ClientState::Accepted);
        assert_eq!(
            tx.on_response(200, t0 + 2 * MS),
            ResponseVerdict::Deliver,
            "RFC 6026: 2xx retransmissions reach the TU"
        );
        assert_eq!(tx.on_response(180, t0 + 3 * MS), ResponseVerdict::Absorb);
        let log = run_client(&mut tx, t0, Duration::from_secs(100));
        assert_eq!(log, [(32001, ClientEvent::Terminated)], "timer M = 64·T1");
    }

    #[test]
    fn non_invite_client_timer_e_caps_at_t2_and_timer_f_gives_408() {
        let t0 = crate::time::test_epoch();
        let mut tx = ClientTransaction::new(Kind::NonInvite, false, Timers::default(), t0);
        let log = run_client(&mut tx, t0, Duration::from_secs(100));
        let retransmits: Vec<u128> =
            log.iter().filter(|(_, e)| *e == ClientEvent::Retransmit).map(|(t, _)| *t).collect();
        assert_eq!(retransmits, [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
        assert!(log.contains(&(32000, ClientEvent::TimedOut)));
    }

    #[test]
    fn non_invite_client_proceeding_retransmits_at_t2_then_final_waits_timer_k() {
        let t0 = crate::time::test_epoch();
        let mut tx = ClientTransaction::new(Kind::NonInvite, false, Timers::default(), t0);
        assert_eq!(tx.on_response(100, t0 + 100 * MS), ResponseVerdict::Deliver);
        let mut out = Vec::new();
        tx.on_timeout(t0 + 4100 * MS, &mut out);
        assert_eq!(out, [ClientEvent::Retransmit]);
        assert_eq!(tx.next_deadline(), Some(t0 + 8100 * MS), "T2 in Proceeding");
        assert_eq!(tx.on_response(200, t0 + 5000 * MS), ResponseVerdict::Deliver);
        assert_eq!(tx.on_response(200, t0 + 5001 * MS), ResponseVerdict::Absorb);
        let log = run_client(&mut tx, t0, Duration::from_secs(100));
        assert_eq!(log, [(10000, ClientEvent::Terminated)], "timer K = T4");
    }

    #[test]
    fn non_invite_client_reliable_terminates_at_once() {
        let t0 = crate::time::test_epoch();
        let mut tx = ClientTransaction::new(Kind::NonInvite, true, Timers::default(), t0);
        assert_eq!(tx.next_deadline(), Some(t0 + 32000 * MS));
        assert_eq!(tx.on_response(200, t0 + MS), ResponseVerdict::Deliver);
        assert_eq!(run_client(&mut tx, t0, Duration::from_secs(1)), [(1, ClientEvent::Terminated)]);
    }

    #[test]
    fn invite_server_non_2xx_retransmits_until_ack_then_timer_i() {
        let t0 = crate::time::test_epoch();
        let mut tx = ServerTransaction::new(Kind::Invite, false, Timers::default());
        assert!(tx.send_response(100, b"100".to_vec(), t0));
        assert_eq!(tx.on_retransmitted_request(), Some(&b"100"[..]));
        assert!(tx.send_response(486, b"486".to_vec(), t0));
        assert!(!tx.send_response(200, b"200".to_vec(), t0), "one final response only");
        let mut out = Vec::new();
        tx.on_timeout(t0 + 500 * MS, &mut out);
        tx.on_timeout(t0 + 1500 * MS, &mut out);
        assert_eq!(out, [ServerEvent::Retransmit, ServerEvent::Retransmit]);
        assert_eq!(tx.next_deadline(), Some(t0 + 3500 * MS), "G doubles");
        assert!(!tx.on_ack(t0 + 2000 * MS), "the ACK of a non-2xx stays in the transaction");
        assert_eq!(tx.state(), ServerState::Confirmed);
        assert_eq!(tx.next_deadline(), Some(t0 + 7000 * MS), "timer I = T4");
    }

    #[test]
    fn invite_server_timer_h_reports_missing_ack() {
        let t0 = crate::time::test_epoch();
        let mut tx = ServerTransaction::new(Kind::Invite, true, Timers::default());
        assert!(tx.send_response(603, b"603".to_vec(), t0));
        assert_eq!(tx.next_deadline(), Some(t0 + 32000 * MS), "no G on reliable transports");
        let mut out = Vec::new();
        tx.on_timeout(t0 + 32000 * MS, &mut out);
        assert_eq!(out, [ServerEvent::AckTimeout, ServerEvent::Terminated]);
    }

    #[test]
    fn invite_server_2xx_accepted_passes_acks_until_timer_l() {
        let t0 = crate::time::test_epoch();
        let mut tx = ServerTransaction::new(Kind::Invite, false, Timers::default());
        assert!(tx.send_response(200, b"200".to_vec(), t0));
        assert_eq!(tx.state(), ServerState::Accepted);
        assert_eq!(tx.on_retransmitted_request(), None, "the UA core retransmits 2xx, not the transaction");
        assert!(tx.on_ack(t0 + MS));
        let mut out = Vec::new();
        tx.on_timeout(t0 + 32000 * MS, &mut out);
        assert_eq!(out, [ServerEvent::Terminated]);
    }

    #[test]
    fn non_invite_server_answers_retransmissions_until_timer_j() {
        let t0 = crate::time::test_epoch();
        let mut tx = ServerTransaction::new(Kind::NonInvite, false, Timers::default());
        assert_eq!(tx.on_retransmitted_request(), None, "Trying: nothing to resend");
        assert!(tx.send_response(200, b"200".to_vec(), t0));
        assert_eq!(tx.on_retransmitted_request(), Some(&b"200"[..]));
        let mut out = Vec::new();
        tx.on_timeout(t0 + 31999 * MS, &mut out);
        assert!(out.is_empty());
        tx.on_timeout(t0 + 32000 * MS, &mut out);
        assert_eq!(out, [ServerEvent::Terminated]);
        let mut tcp = ServerTransaction::new(Kind::NonInvite, true, Timers::default());
        assert!(tcp.send_response(200, b"200".to_vec(), t0));
        assert_eq!(tcp.next_deadline(), Some(t0), "timer J is 0 on reliable transports");
    }
}
