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
