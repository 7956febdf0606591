//! The call tables of a gateway and the calls' named timers.

use crate::call::{Call, CallId};
use crate::ids::{ConnId, SocketId};
use crate::sip::calls::LegId;

/// A call's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(in crate::gateway) enum CallTimer {
    /// The browser leg's (str0m's) next deadline.
    Browser,
    /// Check for media from the SIP side (`Config::media_timeout`).
    Media,
    /// Our next RTCP report on the SIP side.
    Rtcp,
}

impl CallTimer {
    pub(in crate::gateway) const FIRST: Self = Self::Browser;
    pub(in crate::gateway) const LAST: Self = Self::Rtcp;
}

/// The call tables of a gateway.
#[derive(Debug, Default)]
pub(in crate::gateway) struct Calls {
    /// Boxed: a `Call` is tens of KiB (its str0m `Rtc` inline), and a B-tree node holds room
    /// for 11 values, so unboxed calls cost about twice their size (issue #14).
    pub(in crate::gateway) calls: std::collections::BTreeMap<CallId, Box<Call>>,
    /// (connection, session id) → call.
    pub(in crate::gateway) sessions: std::collections::BTreeMap<(ConnId, String), CallId>,
    /// SIP leg → call.
    pub(in crate::gateway) legs: std::collections::BTreeMap<LegId, CallId>,
    /// RTP socket id → call (RTCP is RTP + 1).
    pub(in crate::gateway) sockets: std::collections::BTreeMap<SocketId, CallId>,
    /// The shared WebRTC socket's demultiplexer.
    pub(in crate::gateway) demux: crate::media::demux::Demux<CallId>,
    /// The calls' timers (kept apart from the connections': their deadlines depend on media,
    /// which captures leave out, so captures do not show them).
    pub(in crate::gateway) timers: crate::time::TimerTable<(CallId, CallTimer)>,
    /// The next call's id.
    pub(in crate::gateway) next: u64,
}
