//! [`Stats`]: the size of every table of the core, for leak checks.

use super::{Gateway, Phase};

/// Table sizes, for benchmarks, soak tests and leak checks (`--stats-interval` logs them): every
/// table of the core has a field. With no connection, call or registration left, all are 0
/// but `timers`, `sip_timers` and `sip_timer_keys` (the idle gateway's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Stats {
    /// Stream connections alive (any phase).
    pub connections: usize,
    /// Of those, WebSockets.
    pub websockets: usize,
    /// Accounts added over all connections.
    pub accounts: usize,
    /// Armed timers.
    pub timers: usize,
    /// SIP transactions in flight.
    pub sip_transactions: usize,
    /// SIP registrations alive.
    pub sip_registrations: usize,
    /// SIP stream connections.
    pub sip_flows: usize,
    /// RTP/RTCP socket pairs asked for and not released.
    pub rtp_pairs: usize,
    /// Calls (sylkRTC sessions) alive.
    pub calls: usize,
    /// SIP call legs alive in the stack.
    pub sip_legs: usize,
    /// Trickled candidates held by the calls' browser legs (each at most
    /// `media::webrtc::MAX_REMOTE_CANDIDATES`).
    pub browser_candidates: usize,
    /// Peer IPs with live web connections (`max_connections_per_ip`).
    pub per_ip: usize,
    /// Registrations routed to a connection and account.
    pub registration_owners: usize,
    /// (connection, session id) → call entries.
    pub sessions: usize,
    /// SIP leg → call entries.
    pub call_legs: usize,
    /// RTP socket → call entries.
    pub call_sockets: usize,
    /// Calls in the WebRTC socket's demultiplexer.
    pub demux_calls: usize,
    /// Armed timers of the SIP stack.
    pub sip_timers: usize,
    /// The SIP stack's timer keys (both maps: key → timer and timer → key).
    pub sip_timer_keys: usize,
    /// DNS queries the SIP stack waits for.
    pub sip_dns_queries: usize,
    /// `account-register` requests waiting for their next hop's name resolution.
    pub pending_registers: usize,
    /// SIP MESSAGEs of ours waiting for their final response, and incoming ones waiting for
    /// their answer.
    pub sip_messages: usize,
}

impl Gateway {
    /// Sizes of the core's tables.
    pub fn stats(&self) -> Stats {
        let (sip_transactions, sip_registrations, sip_flows) = self.sip.sizes();
        let (sip_timers, timer_keys, timer_keys_back, sip_dns_queries) = self.sip.census();
        let mut s = Stats {
            connections: self.conns.len(),
            timers: self.timers.len() + self.calls.timers.len(),
            sip_transactions,
            sip_registrations,
            sip_flows,
            rtp_pairs: self.media.pair_count(),
            calls: self.calls.calls.len(),
            sip_legs: self.sip.leg_count(),
            browser_candidates: self.calls.calls.values().map(|c| c.browser.remote_candidate_count()).sum(),
            per_ip: self.per_ip.len(),
            registration_owners: self.regs.len(),
            sessions: self.calls.sessions.len(),
            call_legs: self.calls.legs.len(),
            call_sockets: self.calls.sockets.len(),
            demux_calls: self.calls.demux.len(),
            sip_timers,
            sip_timer_keys: timer_keys + timer_keys_back,
            sip_dns_queries,
            pending_registers: self.pending_registers.len(),
            sip_messages: {
                let (out, inbox) = self.sip.message_count();
                out + inbox
            },
            ..Stats::default()
        };
        for c in self.conns.values() {
            if let Phase::Ws(ws) = &c.phase {
                s.websockets += 1;
                s.accounts += ws.client.account_count();
            }
        }
        s
    }
}

// ===== Metrics =====

/// Upper bounds (seconds) of the call setup time histogram's buckets (`+Inf` follows).
pub const SETUP_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0];

/// A Prometheus-style histogram over [`SETUP_BUCKETS`]: per-bucket counts (not cumulative;
/// the last is `+Inf`), the sum and the count.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Histogram {
    /// Observations per bucket; `counts[i]` holds those in `(bound[i-1], bound[i]]`, the last
    /// those above every bound.
    pub counts: [u64; SETUP_BUCKETS.len() + 1],
    /// Sum of the observations, seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Adds one observation of `seconds`.
    pub fn observe(&mut self, seconds: f64) {
        let i = SETUP_BUCKETS.iter().position(|&b| seconds <= b).unwrap_or(SETUP_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// Packets and bytes forwarded one way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Flow {
    /// RTP packets.
    pub packets: u64,
    /// RTP bytes (the datagrams as sent).
    pub bytes: u64,
}

/// Running totals since the core started, for `/metrics`. Only ever grow.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Counters {
    /// sylkRTC requests by type (`account-add`, `session-create`, …; `invalid` for messages
    /// that did not decode).
    pub requests: std::collections::BTreeMap<&'static str, u64>,
    /// Errors by type: `request` (an `error` reply), `websocket` (a WebSocket closed for a
    /// protocol violation), `http` (an HTTP upgrade refused), `proxy` (a PROXY protocol header
    /// refused).
    pub errors: std::collections::BTreeMap<&'static str, u64>,
    /// RTP from the browsers to the SIP side.
    pub to_sip: Flow,
    /// RTP from the SIP side to the browsers.
    pub to_browser: Flow,
    /// Packets lost by the SIP side's sources of calls that have ended (RTCP receiver
    /// statistics, RFC 3550 A.3).
    pub lost_ended: u64,
    /// Call setup time (creation to answer) of outgoing calls.
    pub setup_outgoing: Histogram,
    /// Call setup time (INVITE to the browser's answer) of incoming calls.
    pub setup_incoming: Histogram,
}

/// Call setup clocks and the counters (a field of the gateway).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) counters: Counters,
    /// Calls not answered yet: when they started and which way.
    setup: std::collections::BTreeMap<crate::call::CallId, (std::time::Instant, crate::call::Origin)>,
}

impl Tally {
    /// Counts one request of type `kind`.
    pub(crate) fn request(&mut self, kind: &'static str) {
        *self.counters.requests.entry(kind).or_default() += 1;
    }

    /// Counts one error of type `kind`.
    pub(crate) fn error(&mut self, kind: &'static str) {
        *self.counters.errors.entry(kind).or_default() += 1;
    }

    /// Call `id` started at `now`.
    pub(crate) fn call_started(
        &mut self,
        id: crate::call::CallId,
        origin: crate::call::Origin,
        now: std::time::Instant,
    ) {
        self.setup.insert(id, (now, origin));
    }

    /// Call `id` was answered at `now`: its setup time is observed (once).
    pub(crate) fn call_answered(&mut self, id: crate::call::CallId, now: std::time::Instant) {
        if let Some((start, origin)) = self.setup.remove(&id) {
            let seconds = now.saturating_duration_since(start).as_secs_f64();
            match origin {
                crate::call::Origin::Outgoing => self.counters.setup_outgoing.observe(seconds),
                crate::call::Origin::Incoming => self.counters.setup_incoming.observe(seconds),
            }
        }
    }

    /// Call `id` ended, its SIP source having lost `lost` packets.
    pub(crate) fn call_ended(&mut self, id: crate::call::CallId, lost: u64) {
        self.setup.remove(&id);
        self.counters.lost_ended += lost;
    }
}

/// The state names of calls, in [`crate::call::State`] order.
pub const CALL_STATES: [crate::call::State; 7] = {
    use crate::call::State::*;
    [Connecting, Progress, EarlyMedia, Accepted, Established, LocalUpdating, RemoteUpdating]
};

/// The registration state names, in [`crate::sip::stack::SipStack::registration_states`] order.
pub const REGISTRATION_STATES: [&str; 4] = ["registering", "registered", "failed", "unregistered"];

/// What `/metrics` shows of one core: its table sizes, registrations and calls by state, the
/// packets lost by the live calls' SIP sources, and the running totals.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Figures {
    /// Table sizes.
    pub stats: Stats,
    /// Registrations by state, in [`REGISTRATION_STATES`] order.
    pub registrations: [usize; 4],
    /// Calls by state, in [`CALL_STATES`] order.
    pub calls: [usize; 7],
    /// Packets lost by the SIP side's sources of the live calls.
    pub lost_live: u64,
    /// Running totals.
    pub counters: Counters,
    /// The conference tables (rooms held here, remote connections served, routes elsewhere).
    pub conference: crate::conference::Census,
}

impl Gateway {
    /// The figures `/metrics` shows (reads only; no clock).
    pub fn figures(&self) -> Figures {
        let mut calls = [0; 7];
        let mut lost_live = 0;
        for c in self.calls.calls.values() {
            if let Some(i) = CALL_STATES.iter().position(|&s| s == c.state) {
                calls[i] += 1;
            }
            lost_live += c.media.as_ref().map_or(0, |m| m.lost());
            lost_live += c.video.as_ref().and_then(|v| v.media.as_ref()).map_or(0, |m| m.lost());
        }
        Figures {
            stats: self.stats(),
            registrations: self.sip.registration_states(),
            calls,
            lost_live,
            counters: self.tally.counters.clone(),
            conference: self.conferences.census(),
        }
    }
}
