//! The vocabulary of the drive loop: what a runtime hands the core ([`Input`]) and what the core
//! asks of it ([`Output`]).

pub use crate::conference::remote::WorkerMsg;
pub use crate::dns::{Answer, QueryType};
use crate::ids::{ConnId, Listener, SocketId};
use crate::storage::{StoreError, StoreId, StoreRequest, StoreResult};
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

/// Something that happened outside the core.
#[derive(Debug)]
pub enum Input<'a> {
    /// The deadline of the last [`Output::Timeout`] has passed.
    Timeout,
    /// The runtime accepted a stream connection and chose `conn` for it.
    Accepted {
        /// New id; unique among live connections.
        conn: ConnId,
        /// Which listener accepted it.
        listener: Listener,
        /// The remote address.
        peer: SocketAddr,
    },
    /// Bytes read from a connection (ciphertext on a TLS listener).
    StreamData {
        /// Which connection.
        conn: ConnId,
        /// The bytes, in order.
        data: &'a [u8],
    },
    /// The peer closed the connection, or it failed. The core forgets it and emits nothing more
    /// for it.
    StreamClosed {
        /// Which connection.
        conn: ConnId,
    },
    /// A datagram arrived on a socket the runtime bound for the core.
    Datagram {
        /// Which socket.
        socket: SocketId,
        /// Sender.
        from: SocketAddr,
        /// Payload.
        data: &'a [u8],
    },
    /// The runtime bound a UDP socket for the core: at start for the SIP and WebRTC sockets
    /// (ids of the runtime's choosing, below 16), or answering [`Output::BindUdp`].
    UdpBound {
        /// Id the core will send from.
        socket: SocketId,
        /// What it is for.
        purpose: UdpPurpose,
        /// The address actually bound.
        local: SocketAddr,
    },
    /// The answer to [`Output::BindUdp`] when the socket could not be bound (typically the port
    /// is in use). The id is free again; the core tries another port pair under the same id.
    UdpBindFailed {
        /// The id the core chose.
        socket: SocketId,
        /// The error text.
        error: String,
    },
    /// The answer to [`Output::Connect`].
    Connected {
        /// The id the core chose.
        conn: ConnId,
        /// `Ok` when the connection is up; the error text otherwise.
        result: Result<(), String>,
    },
    /// The answer to [`Output::Resolve`]: the records (an empty list when the name or the
    /// records do not exist) with their TTL, or the resolver's error text (timeout, refused…).
    Resolved {
        /// The query id the core chose.
        query: u64,
        /// Records of the type asked for, or the error text.
        result: Result<Answer, String>,
    },
    /// The outcome of [`Output::Store`]. The core tolerates an id it never asked for or has
    /// forgotten (logged and dropped).
    Stored {
        /// The id the core chose.
        id: StoreId,
        /// What the storage answered; [`StoreError::Unavailable`] when the runtime has no storage
        /// or its queue is full.
        result: Result<StoreResult, StoreError>,
    },
    /// A message from the gateway of worker `worker` (`sylkgw`'s workers, rooms across workers:
    /// `crate::conference::remote`).
    FromWorker {
        /// The sending worker's index.
        worker: usize,
        /// The message.
        msg: WorkerMsg,
    },
    /// An [`Output::ToWorker`] the runtime could not deliver (that worker's queue is full or
    /// the worker is gone), handed back.
    ToWorkerFailed {
        /// The worker it was for.
        worker: usize,
        /// The message.
        msg: WorkerMsg,
    },
    /// The process is stopping (SIGINT/SIGTERM): close every WebSocket with 1001 and accept no
    /// more. The runtime keeps driving until [`crate::Gateway::connection_count`] is 0 or its
    /// own grace period ends.
    Shutdown,
    /// The runtime read its configuration again (SIGHUP): the core takes the options a reload
    /// changes (`Gateway::reload`) and ignores the rest. Recorded in captures, so a replay
    /// changes them at the same point.
    Reload {
        /// The whole new configuration, as the runtime loaded it.
        config: &'a crate::config::Config,
    },
}

impl Input<'static> {
    /// The answer to an [`Output::BindUdp`]: [`Input::UdpBound`] or [`Input::UdpBindFailed`].
    pub fn udp_bind_result(socket: SocketId, result: Result<(UdpPurpose, SocketAddr), String>) -> Self {
        match result {
            Ok((purpose, local)) => Self::UdpBound { socket, purpose, local },
            Err(error) => Self::UdpBindFailed { socket, error },
        }
    }
}

/// What a UDP socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum UdpPurpose {
    /// The SIP socket (`sip.listen`).
    Sip,
    /// The WebRTC socket shared by every browser leg (`media.webrtc_listen`), bound by the
    /// runtime at start.
    WebRtc,
    /// The RTP socket of a SIP leg (an even port of `media.rtp_ports`), bound on request.
    Rtp,
    /// The RTCP socket of a SIP leg (the RTP port + 1), bound on request.
    Rtcp,
}

impl UdpPurpose {
    /// Name in captures.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sip => "sip",
            Self::WebRtc => "webrtc",
            Self::Rtp => "rtp",
            Self::Rtcp => "rtcp",
        }
    }

    /// Inverse of [`UdpPurpose::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        [Self::Sip, Self::WebRtc, Self::Rtp, Self::Rtcp].into_iter().find(|p| p.name() == s)
    }
}

/// A UDP datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// From which socket.
    pub socket: SocketId,
    /// To whom.
    pub to: SocketAddr,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Something the core wants done. A drain ends with [`Output::Timeout`].
#[derive(Debug)]
#[must_use]
pub enum Output {
    /// Write these bytes to the connection, after anything written before.
    StreamWrite {
        /// Which connection.
        conn: ConnId,
        /// The bytes (ciphertext on a TLS listener).
        data: Vec<u8>,
    },
    /// Finish writing what was queued, then close the connection. The core has forgotten it.
    StreamClose {
        /// Which connection.
        conn: ConnId,
    },
    /// Send a datagram from the socket `t.socket` names (any bound socket: SIP, WebRTC, RTP,
    /// RTCP).
    Datagram(Transmit),
    /// Bind a UDP socket at `local` and call it `socket`. Answer with [`Input::UdpBound`] or
    /// [`Input::UdpBindFailed`], exactly once and after the current drain; then deliver what it
    /// receives as [`Input::Datagram`]. Ids the core chooses are 16 or more; one is asked for
    /// again (at another port) only after its bind failed, and never after [`Output::CloseUdp`].
    BindUdp {
        /// The id the core chose.
        socket: SocketId,
        /// What it is for (passed back in [`Input::UdpBound`]).
        purpose: UdpPurpose,
        /// Where to bind (a specific port).
        local: SocketAddr,
    },
    /// Close a socket bound for [`Output::BindUdp`] and forget it; nothing more is delivered for
    /// it. An id whose bind is still unanswered is closed once bound (its answer is still given,
    /// and ignored).
    CloseUdp {
        /// Which socket.
        socket: SocketId,
    },
    /// Open a TCP connection to `to` and call it `conn` (the id has
    /// [`crate::sip::transport::OUTGOING_CONN_BIT`] set, so it never collides with accepted
    /// ones); answer with [`Input::Connected`], then deliver its bytes as
    /// [`Input::StreamData`].
    Connect {
        /// The id the core chose.
        conn: ConnId,
        /// Where to.
        to: SocketAddr,
    },
    /// Look `name` up for records of type `qtype` (A and AAAA, SRV or NAPTR; RFC 3263 lookups
    /// are the core's, one query at a time); answer with [`Input::Resolved`], after the
    /// current drain.
    Resolve {
        /// Query id the core chose.
        query: u64,
        /// What to ask for.
        qtype: QueryType,
        /// Domain name (no trailing dot).
        name: String,
    },
    /// Carry out `request` on the message store, off the event loop; answer with exactly one
    /// [`Input::Stored`] for `id`, after the current drain, in any order relative to other
    /// requests (a request is atomic: on `Err` nothing was changed). A runtime that cannot take
    /// it (no storage, queue full) answers [`StoreError::Unavailable`] right after the drain.
    Store {
        /// Id the core chose; unique for the core's lifetime.
        id: StoreId,
        /// What to do.
        request: StoreRequest,
    },
    /// Hand `msg` to the gateway of worker `worker` (as its [`Input::FromWorker`], in order);
    /// one it cannot take now comes back as [`Input::ToWorkerFailed`], after the drain. Only with
    /// more than one worker (`ConferenceConfig::workers`).
    ToWorker {
        /// The receiving worker's index.
        worker: usize,
        /// The message.
        msg: WorkerMsg,
    },
    /// Nothing more to do now: call `handle_input(Input::Timeout)` at this instant, or earlier
    /// with any other input. [`crate::Gateway::last_timeout_reason`] says why.
    Timeout(Instant),
}

/// Why the core asked to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TimeoutReason {
    /// Nothing is scheduled; the deadline is far away.
    Idle,
    /// A client has not finished its HTTP upgrade.
    HttpHandshake,
    /// Time to send a WebSocket Ping.
    WsPing,
    /// A Pong is overdue.
    WsPong,
    /// Waiting for the peer's half of the close handshake.
    WsClose,
    /// A SIP transaction, registration or connection timer.
    Sip,
    /// A call's timer: its browser leg (ICE, DTLS, RTCP) or the media timeout.
    Call,
}

impl TimeoutReason {
    /// Short name for logs and captures.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::HttpHandshake => "http-handshake",
            Self::WsPing => "ws-ping",
            Self::WsPong => "ws-pong",
            Self::WsClose => "ws-close",
            Self::Sip => "sip",
            Self::Call => "call",
        }
    }
}

impl fmt::Display for TimeoutReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
