//! [`Gateway`]: owns the connections, routes inputs to them, keeps the timer table and the
//! output queue. Each stream connection is a pipeline: TLS (optional) → HTTP upgrade →
//! WebSocket → sylkRTC client.
//!
//! The rest of the gateway, by what it holds: `gateway/calls` (the call layer),
//! `gateway/containment.rs` (panics in a call's media), `gateway/registers.rs` (`account-register`
//! answered after the name lookup), `gateway/sockets.rs` (media sockets), `gateway/stats.rs`.

use crate::api::{AccountEvent, Event, RegistrationState};
use crate::capture::Recorder;
use crate::client::{Client, SipCtx};
use crate::config::{Config, ConfigError};
use crate::drive::UdpPurpose;
use crate::drive::{Input, Output, TimeoutReason};
use crate::http::upgrade::{self, Decision, Head, Response};
use crate::ids::{ConnId, Listener, SocketId};
use crate::rng::Rng;
use crate::sip::registration::RegState;
use crate::sip::stack::{RegId, SipEvent, SipOutput, SipStack};
use crate::sip::transport::TransportOut;
use crate::time::{Clock, TimerTable};
use crate::transport::tls::{self, TlsStream};
use crate::ws::conn::{WsConn, WsEnd, WsEvent};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod addressbook;
mod calls;
mod conference;
mod conference_v1;
mod containment;
mod messaging;
mod proxied;
mod registers;
mod reload;
mod rooms_remote;
mod sockets;
mod stats;
mod storage;
pub use calls::MEDIA_TIMEOUT_REASON;
pub use containment::INTERNAL_ERROR_REASON;
pub use sockets::{FIRST_MEDIA_SOCKET, MAX_BIND_ATTEMPTS};
pub use stats::{Counters, Figures, Flow, Histogram, Stats, CALL_STATES, REGISTRATION_STATES, SETUP_BUCKETS};

/// How long we wait for the peer's close frame after sending ours.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// The deadline reported when nothing is scheduled.
const IDLE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The whole gateway as a deterministic state machine.
///
/// # Method groups
/// - **Construction**: [`Gateway::new`].
/// - **Inputs**: [`Gateway::handle_input`], one event from the outside world with the current time.
/// - **Outputs**: [`Gateway::poll_output`], which MUST be called until it returns
///   [`Output::Timeout`] after every `handle_input` (and once after `new`).
/// - **Getters**: [`Gateway::last_timeout_reason`], [`Gateway::connection_count`],
///   [`Gateway::stats`], [`Gateway::take_capture`].
///
/// `now` MUST never go backwards between calls.
pub struct Gateway {
    config: Config,
    tls: Option<Arc<rustls::ServerConfig>>,
    clock: Clock,
    now: Instant,
    rng: Rng,
    conns: BTreeMap<ConnId, Conn>,
    /// Live web connections per peer IP (`Config::max_connections_per_ip`); an IP with none
    /// has no entry.
    per_ip: BTreeMap<IpAddr, usize>,
    sip: SipStack,
    /// The SIP UDP socket, once bound.
    sip_udp: Option<SocketId>,
    /// The WebRTC socket and the RTP/RTCP pairs (`gateway::sockets`).
    media: sockets::MediaSockets,
    /// Which connection and account each registration belongs to.
    regs: BTreeMap<RegId, (ConnId, String)>,
    /// `account-register` requests waiting for their next hop's name resolution (answered then).
    pending_registers: BTreeMap<RegId, registers::PendingRegister>,
    /// Calls (`gateway/calls.rs`).
    calls: calls::table::Calls,
    /// Conferences (`gateway/conference.rs`).
    conferences: crate::conference::Conferences,
    /// Faults tests inject (`containment`).
    faults: containment::Faults,
    timers: TimerTable<TimerKey>,
    out: VecDeque<Output>,
    recorder: Option<Recorder>,
    shutting_down: bool,
    last_reason: TimeoutReason,
    /// Ids for `Output::Store` (`gateway::storage`).
    store_ids: storage::StoreIds,
    /// The messaging machine (`gateway::messaging`).
    messaging: messaging::Messaging,
    /// Addressbook and history requests waiting for the store (`gateway::addressbook`).
    book: addressbook::Book,
    /// Running totals for metrics (`gateway::stats`).
    tally: stats::Tally,
    /// Connections whose client address a trusted proxy gave during the last input
    /// (`proxied`; [`Gateway::take_readdressed`]).
    readdressed: Vec<(ConnId, IpAddr)>,
}

/// A live call as the stateful fuzz target sees it: connection, session id, SIP leg.
#[doc(hidden)]
pub type CallRowForTest = (ConnId, String, Option<crate::sip::calls::LegId>);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Conn(ConnId, ConnTimer),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ConnTimer {
    /// The HTTP upgrade must finish by then.
    Handshake,
    /// Send the next WebSocket Ping.
    Ping,
    /// The Pong to our Ping is due.
    Pong,
    /// Our close frame went out; stop waiting for the peer's.
    Linger,
}

impl ConnTimer {
    /// The smallest and largest timers in `Ord` order (declaration order), for range removal.
    const FIRST: Self = Self::Handshake;
    const LAST: Self = Self::Linger;

    fn reason(self) -> TimeoutReason {
        match self {
            Self::Handshake => TimeoutReason::HttpHandshake,
            Self::Ping => TimeoutReason::WsPing,
            Self::Pong => TimeoutReason::WsPong,
            Self::Linger => TimeoutReason::WsClose,
        }
    }
}

struct Conn {
    peer: SocketAddr,
    tls: Option<Box<TlsStream>>,
    phase: Phase,
    /// Plaintext already recorded, waiting for the end of this input to be sent.
    pending: Vec<u8>,
    /// Close the stream once `pending` is out.
    close: bool,
    /// Whether it came through a trusted reverse proxy, and the client's address (`proxied`).
    fwd: proxied::Forwarding,
}

enum Phase {
    /// Collecting the request head.
    Http(Vec<u8>),
    /// Upgraded.
    Ws(Box<WsSession>),
    /// A history request waiting for the store (`gateway::addressbook`); later bytes are ignored.
    Answering,
}

struct WsSession {
    ws: WsConn,
    client: Client,
    /// We sent a close frame.
    closing: bool,
}

impl Gateway {
    /// Creates the gateway. `now` and `unix_time` anchor the clock (wall time later is
    /// `unix_time + (now' - now)`); `seed` is the only randomness it will ever use.
    pub fn new(config: Config, seed: [u8; 32], now: Instant, unix_time: Duration) -> Result<Self, ConfigError> {
        let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
        config.media.validate()?;
        let media = sockets::MediaSockets::new(config.webrtc_listen().ip(), config.media.rtp_ports);
        if let Some(p) = &config.sip.outbound_sip_proxy {
            crate::sip::target::ProxySpec::parse(p).map_err(|expected| ConfigError::BadValue {
                key: "outbound_sip_proxy".into(),
                value: p.clone(),
                expected,
            })?;
        }
        let recorder = config.capture.then(|| Recorder::new(now, &seed, unix_time, &config));
        let mut sip = SipStack::new(config.sip.clone());
        if let (Some(_), Some(t)) = (config.sip.tls_listen, &config.tls) {
            sip.set_tls_server(tls::sip_server_config(t)?);
        }
        sip.set_clock(now, unix_time);
        sip.set_tap(config.capture);
        Ok(Self {
            config,
            tls,
            clock: Clock { start: now, unix_at_start: unix_time },
            now,
            rng: Rng::new(seed),
            conns: BTreeMap::new(),
            per_ip: BTreeMap::new(),
            sip,
            sip_udp: None,
            media,
            regs: BTreeMap::new(),
            pending_registers: BTreeMap::new(),
            calls: calls::table::Calls::default(),
            conferences: crate::conference::Conferences::default(),
            faults: containment::Faults::default(),
            timers: TimerTable::default(),
            out: VecDeque::new(),
            recorder,
            shutting_down: false,
            last_reason: TimeoutReason::Idle,
            store_ids: storage::StoreIds::default(),
            messaging: messaging::Messaging::default(),
            book: addressbook::Book::default(),
            tally: stats::Tally::default(),
            readdressed: Vec::new(),
        })
    }

    /// Feeds one input. Infallible by design: misbehaving peers get protocol answers (an HTTP
    /// error, a close code, a sylkRTC `error`), never an `Err` here.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        debug_assert!(now >= self.now, "time went backwards");
        self.now = now.max(self.now);
        self.readdressed.clear();
        // Media is left out of captures (str0m is not replayable; media spec §4.1). Asked only
        // when recording: without a recorder it is one socket lookup per datagram for nothing.
        if self.recorder.is_some() && !matches!(input, Input::Datagram { socket, .. } if self.is_media_socket(socket)) {
            if let Some(rec) = &mut self.recorder {
                rec.input(self.now, &input);
            }
        }
        let now = self.now;
        match input {
            Input::Timeout => {
                self.handle_timeout();
                self.sip.handle_timeout(now, &mut self.rng);
            }
            Input::Accepted { conn, listener: Listener::SipTcp, peer } => self.sip.handle_accepted(conn, peer, now),
            Input::Accepted { conn, listener: Listener::SipTls, peer } => {
                if !self.sip.handle_accepted_tls(conn, peer, now) {
                    if let Some(rec) = &mut self.recorder {
                        rec.close_out(now, conn);
                    }
                    self.out.push_back(Output::StreamClose { conn });
                }
            }
            Input::Accepted { conn, listener, peer } => self.accept(conn, listener, peer),
            Input::StreamData { conn, data } if self.sip.owns_conn(conn) => {
                // TLS records are below captures: their plaintext is recorded from the taps.
                if let (Some(rec), false) = (&mut self.recorder, self.sip.encrypted_conn(conn)) {
                    rec.stream_in(now, conn, data);
                }
                self.sip.handle_stream_data(conn, data, now, &mut self.rng)
            }
            Input::StreamData { conn, data } => self.stream_data(conn, data),
            Input::StreamClosed { conn } if self.sip.owns_conn(conn) => {
                self.sip.handle_closed(conn, now, &mut self.rng)
            }
            Input::StreamClosed { conn } => self.stream_closed(conn),
            Input::Datagram { socket, from, data } if Some(socket) == self.sip_udp => {
                self.sip.handle_datagram(from, data, now, &mut self.rng)
            }
            Input::Datagram { socket, from, data } if self.media.owns(socket) => {
                self.media_datagram(socket, from, data)
            }
            Input::Datagram { socket, from, data } => {
                log::debug!("{socket}: {} bytes from {from} on a socket nothing uses", data.len());
            }
            Input::UdpBound { socket, purpose: UdpPurpose::Sip, local } => {
                log::info!("SIP on udp {local}");
                self.sip_udp = Some(socket);
                self.sip.set_udp_socket(socket, local);
            }
            Input::UdpBound { socket, purpose, local } => self.media_bound(socket, purpose, local),
            Input::UdpBindFailed { socket, error } => self.media_bind_failed(socket, &error),
            Input::Connected { conn, result } => {
                if let Err(e) = &result {
                    log::info!("{conn}: connect failed: {e}");
                }
                self.sip.handle_connected(conn, result.is_ok(), now, &mut self.rng)
            }
            Input::Resolved { query, result } => self.sip.handle_resolved(query, result, now, &mut self.rng),
            Input::Stored { id, result } => self.on_stored(id, result),
            Input::Shutdown => self.shutdown(),
            Input::FromWorker { worker, msg } => self.worker_message(worker, msg),
            Input::ToWorkerFailed { worker, msg } => self.worker_undelivered(worker, msg),
            Input::Reload { config } => {
                self.reload(config);
            }
        }
        self.drain_sip();
    }

    /// Moves the SIP stack's outputs to ours and its events to the connections they concern.
    fn drain_sip(&mut self) {
        // Handling an event can make the stack send more (a declined call): go round until quiet.
        loop {
            self.drain_sip_outputs();
            if !self.drain_sip_events() {
                return;
            }
        }
    }

    fn drain_sip_outputs(&mut self) {
        while let Some(o) = self.sip.poll_output() {
            let out = match o {
                SipOutput::Transport(TransportOut::Datagram { socket, to, payload }) => {
                    Output::Datagram(crate::drive::Transmit { socket, to, payload })
                }
                SipOutput::Transport(TransportOut::Connect { conn, to }) => Output::Connect { conn, to },
                SipOutput::Transport(TransportOut::Write { conn, data }) => Output::StreamWrite { conn, data },
                SipOutput::Transport(TransportOut::Close { conn }) => Output::StreamClose { conn },
                // Below captures: seen from above TLS, nothing is written, and a failure of the
                // TLS layer is the stream going away (what a replay on a plain core is fed).
                SipOutput::Transport(TransportOut::WriteTls { conn, data }) => {
                    self.out.push_back(Output::StreamWrite { conn, data });
                    continue;
                }
                SipOutput::Transport(TransportOut::CloseTls { conn }) => {
                    if let Some(rec) = &mut self.recorder {
                        rec.input(self.now, &Input::StreamClosed { conn });
                    }
                    self.out.push_back(Output::StreamClose { conn });
                    continue;
                }
                SipOutput::Transport(TransportOut::Tap { conn, sent, plain }) => {
                    if let Some(rec) = &mut self.recorder {
                        match sent {
                            true => rec.output(self.now, &Output::StreamWrite { conn, data: plain }),
                            false => rec.stream_in(self.now, conn, &plain),
                        }
                    }
                    continue;
                }
                SipOutput::Resolve { query, qtype, name } => Output::Resolve { query, qtype, name },
            };
            if let Some(rec) = &mut self.recorder {
                rec.output(self.now, &out);
            }
            self.out.push_back(out);
        }
    }

    /// Hands the stack's events to their owners; returns whether there were any.
    fn drain_sip_events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.sip.poll_event() {
            any = true;
            match ev {
                SipEvent::Call { leg, progress } => self.call_sip_event(leg, progress),
                SipEvent::Incoming { leg, reg, call } => self.call_sip_incoming(leg, reg, call),
                ev @ (SipEvent::Info { .. }
                | SipEvent::Reoffer { .. }
                | SipEvent::ReofferAck { .. }
                | SipEvent::ReinviteResult { .. }) => self.call_sip_midcall(ev),
                // History API tokens are the addressbook module's (`gateway::addressbook`).
                SipEvent::Message { id, reg, message } if addressbook::is_api_token(&message) => {
                    self.api_token_request(id, reg, &message)
                }
                SipEvent::Message { id, reg, message } => self.messaging_incoming(id, reg, message),
                SipEvent::MessageResult { id, code, reason } => self.messaging_result(id, code, reason),
                SipEvent::DialogMessage { leg, message } => self.messaging_in_dialog(leg, message),
                SipEvent::Resolved { id, result } => self.register_resolved(id, result),
                SipEvent::Registration { id, state } => {
                    if state != RegState::Registering {
                        self.messaging_registration(id, state == RegState::Registered);
                    }
                    let Some((conn, account)) = self.regs.get(&id).cloned() else { continue };
                    let state = match state {
                        RegState::Registering => RegistrationState::Registering,
                        RegState::Registered => RegistrationState::Registered,
                        RegState::Failed(reason) => RegistrationState::Failed { reason },
                        RegState::Unregistered => continue,
                    };
                    if state == RegistrationState::Registered {
                        self.mark_authenticated(conn, &account);
                    }
                    let event = Event::Account { account, event: AccountEvent::Registration(state) };
                    if let Some(p) = self.pending_registers.get_mut(&id) {
                        p.held.push(event);
                        continue;
                    }
                    self.send_event(conn, &event);
                    self.flush(conn);
                }
            }
        }
        any
    }

    /// The next output. Ends every drain with [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        let web = self.timers.next().map(|(at, TimerKey::Conn(_, t))| (at, t.reason()));
        let sip = self.sip.next_deadline().map(|at| (at, TimeoutReason::Sip));
        let call = self.calls.timers.next().map(|(at, _)| (at, TimeoutReason::Call));
        // Conference legs' timers follow media too: reported (and left out of captures) as calls'.
        let call = earliest_of(call, self.conferences.next_deadline().map(|at| (at, TimeoutReason::Call)));
        let earliest = |a: Option<(Instant, TimeoutReason)>, b: Option<(Instant, TimeoutReason)>| match (a, b) {
            (Some(x), Some(y)) => Some(if y.0 < x.0 { y } else { x }),
            (x, None) | (None, x) => x,
        };
        // Relative to now, so a runtime woken at an idle deadline never spins on it.
        let idle = (self.now + IDLE, TimeoutReason::Idle);
        let (at, reason) = earliest(earliest(web, sip), call).unwrap_or(idle);
        self.last_reason = reason;
        if let Some(rec) = &mut self.recorder {
            // Call timers follow media, which captures leave out: only the others are recorded.
            let (at, reason) = earliest(web, sip).unwrap_or(idle);
            rec.timer(self.now, at, reason);
        }
        Output::Timeout(at)
    }

    /// Why the last [`Output::Timeout`] was scheduled.
    pub fn last_timeout_reason(&self) -> TimeoutReason {
        self.last_reason
    }

    /// The configured SIP address the runtime must bind (UDP socket and TCP listener).
    pub fn sip_listen(&self) -> SocketAddr {
        self.config.sip.listen
    }

    /// The address the runtime must bind the WebRTC UDP socket on at start (then report it with
    /// `Input::UdpBound { purpose: UdpPurpose::WebRtc, .. }`).
    pub fn webrtc_listen(&self) -> SocketAddr {
        self.config.webrtc_listen()
    }

    /// Where the runtime binds the SIP TLS listener (`sip.tls_listen`), if anywhere.
    pub fn sip_tls_listen(&self) -> Option<SocketAddr> {
        self.config.sip.tls_listen
    }

    /// `Config::max_pending_bytes`: the runtime drops a stream connection (TCP reset) whose
    /// queue of bytes not yet taken by its peer grows beyond it, and reports it with
    /// `Input::StreamClosed`.
    pub fn max_pending_bytes(&self) -> usize {
        self.config.max_pending_bytes.max(1)
    }

    /// Live stream connections (during shutdown the runtime waits for this to reach 0).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// For the stateful fuzz target: each live call's connection, session id and SIP leg, and
    /// the id of every dialog the SIP stack's call legs hold.
    #[doc(hidden)]
    pub fn call_table_for_test(
        &self,
    ) -> (Vec<CallRowForTest>, Vec<(crate::sip::calls::LegId, crate::sip::dialog::DialogId)>) {
        let calls = self.calls.calls.values().map(|c| (c.conn, c.session.clone(), c.leg)).collect();
        (calls, self.sip.dialog_ids_for_test())
    }

    /// Capture lines recorded since the last call (empty unless `Config::capture`).
    pub fn take_capture(&mut self) -> String {
        self.recorder.as_mut().map(Recorder::take).unwrap_or_default()
    }

    /// Wall-clock time now, derived from the clock given at construction.
    pub fn unix_now(&self) -> Duration {
        self.clock.unix(self.now)
    }

    /// The sylkRTC state of WebSocket `id`.
    fn client(&self, id: ConnId) -> Option<&Client> {
        match self.conns.get(&id) {
            Some(Conn { phase: Phase::Ws(s), .. }) => Some(&s.client),
            _ => None,
        }
    }

    // ===== Stream connections =====

    fn accept(&mut self, id: ConnId, listener: Listener, peer: SocketAddr) {
        if self.conns.contains_key(&id) {
            log::error!("{id}: accepted twice; dropping the old connection");
            self.forget(id);
        }
        let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        // A trusted proxy's connections are counted under their clients' addresses (`proxied`).
        let trusted = listener == Listener::Web && self.config.trusted_proxies.contains(peer.ip());
        if from_ip >= self.config.max_connections_per_ip && !trusted {
            log::warn!("{id}: {from_ip} connections from {} already; closing", peer.ip());
            if let Some(rec) = &mut self.recorder {
                rec.close_out(self.now, id);
            }
            self.out.push_back(Output::StreamClose { conn: id });
            return;
        }
        let tls = match (&self.tls, listener) {
            (Some(cfg), Listener::Web) => match TlsStream::new(cfg.clone()) {
                Ok(t) => Some(Box::new(t)),
                Err(e) => {
                    log::error!("{id}: TLS session for {peer} failed: {e}");
                    self.record_tls_loss(id);
                    self.out.push_back(Output::StreamClose { conn: id });
                    return;
                }
            },
            _ => None,
        };
        log::debug!("{id}: accepted from {peer}");
        let fwd = proxied::Forwarding::new(listener == Listener::Web, peer, trusted);
        let conn = Conn { peer, tls, phase: Phase::Http(Vec::new()), pending: Vec::new(), close: false, fwd };
        self.conns.insert(id, conn);
        *self.per_ip.entry(peer.ip()).or_default() += 1;
        if self.shutting_down {
            self.close_now(id);
            return;
        }
        let deadline = self.now + Duration::from_secs(self.config.http_handshake_timeout);
        self.timers.set(TimerKey::Conn(id, ConnTimer::Handshake), deadline);
    }

    fn stream_data(&mut self, id: ConnId, data: &[u8]) {
        let after_preamble;
        let data = match self.conns.get(&id) {
            Some(c) if c.fwd.undecided() => match self.preamble(id, data) {
                Some(rest) => {
                    after_preamble = rest;
                    after_preamble.as_slice()
                }
                None => return,
            },
            _ => data,
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            log::debug!("{id}: {} bytes for a connection already closed", data.len());
            return;
        };
        let plain_buf;
        let plain: &[u8] = match &mut conn.tls {
            Some(tls) => {
                let mut buf = Vec::new();
                match tls.receive(data, &mut buf) {
                    Ok(peer_closed) => conn.close |= peer_closed,
                    Err(failed) => {
                        log::info!("{id}: TLS from {} failed: {}", conn.peer, failed.error);
                        if !failed.alert.is_empty() {
                            self.out.push_back(Output::StreamWrite { conn: id, data: failed.alert });
                        }
                        self.record_tls_loss(id);
                        self.forget(id);
                        self.out.push_back(Output::StreamClose { conn: id });
                        return;
                    }
                }
                plain_buf = buf;
                &plain_buf
            }
            None => data,
        };
        if let Some(rec) = &mut self.recorder {
            rec.stream_in(self.now, id, plain);
        }
        if !plain.is_empty() {
            self.process_plain(id, plain);
        }
        self.flush(id);
    }

    /// A TLS failure, seen from above TLS where captures are taken, is the stream going away:
    /// recorded as `closed`, so the capture replays on a plain core (the alert and the close
    /// are TLS-level outputs and are not recorded).
    fn record_tls_loss(&mut self, id: ConnId) {
        if let Some(rec) = &mut self.recorder {
            rec.input(self.now, &Input::StreamClosed { conn: id });
        }
    }

    fn process_plain(&mut self, id: ConnId, plain: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        match &mut conn.phase {
            Phase::Http(buf) => {
                buf.extend_from_slice(plain);
                let head = upgrade::parse_head(buf, self.config.max_http_header_size);
                match head {
                    Head::Partial => {}
                    Head::TooLarge => self.reject(id, Response::text(431, "Request Header Fields Too Large")),
                    Head::Malformed => self.reject(id, Response::text(400, "Bad Request")),
                    Head::Complete { mut head, len } => {
                        let rest = buf.split_off(len);
                        if !self.forwarded_head(id, &mut head) {
                            return;
                        }
                        if let Some(route) = crate::http::history::route(&head) {
                            self.history_http(id, route);
                            return;
                        }
                        match upgrade::decide(&head, &self.config) {
                            Decision::Reject(resp) => self.reject(id, resp),
                            Decision::Page(resp) => self.serve_page(id, &head, resp),
                            Decision::Upgrade { accept, dialect } => {
                                self.upgrade(id, &accept, dialect);
                                if !rest.is_empty() {
                                    self.process_plain(id, &rest);
                                }
                            }
                        }
                    }
                }
            }
            Phase::Ws(session) => {
                session.ws.feed(plain);
                self.poll_ws(id);
            }
            Phase::Answering => {}
        }
    }

    fn reject(&mut self, id: ConnId, resp: Response) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        log::info!("{id}: HTTP {} for {}: {}", resp.status, conn.peer, resp.body);
        self.tally.error("http");
        let bytes = resp.to_bytes();
        self.write_plain(id, &bytes);
        self.close_now(id);
    }

    /// Answers a page request (the web phone) and closes, as [`Self::reject`] does.
    fn serve_page(&mut self, id: ConnId, head: &upgrade::RequestHead, resp: Response) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        log::info!("{id}: HTTP {} {} {} for {}", resp.status, head.method, head.path, conn.peer);
        let bytes = resp.to_bytes();
        self.write_plain(id, &bytes);
        self.close_now(id);
    }

    fn upgrade(&mut self, id: ConnId, accept: &str, dialect: crate::api::Dialect) {
        self.write_plain(id, &upgrade::switching_protocols(accept, dialect));
        let Some(conn) = self.conns.get_mut(&id) else { return };
        log::info!("{id}: WebSocket from {} ({})", conn.peer, dialect.token());
        conn.phase = Phase::Ws(Box::new(WsSession {
            ws: WsConn::new(self.config.max_websocket_message_size),
            client: Client::new(dialect),
            closing: false,
        }));
        self.timers.stop(TimerKey::Conn(id, ConnTimer::Handshake));
        self.timers.set(TimerKey::Conn(id, ConnTimer::Ping), self.now + self.ping_interval());
        // Ready as soon as the connection is up (spec §1.3).
        self.send_event(id, &Event::Ready);
    }

    /// Processes every complete WebSocket message fed so far.
    fn poll_ws(&mut self, id: ConnId) {
        loop {
            let Some(Conn { phase: Phase::Ws(session), close, peer, .. }) = self.conns.get_mut(&id) else { return };
            let event = match session.ws.poll() {
                Ok(Some(e)) => e,
                Ok(None) => return,
                Err(WsEnd::Closed) => {
                    *close = true;
                    return;
                }
                Err(WsEnd::Failed { code, why }) => {
                    log::warn!("{id}: WebSocket from {peer} failed ({why}); closing with {code}");
                    self.tally.error("websocket");
                    *close = true;
                    return;
                }
            };
            match event {
                WsEvent::Text(text) => {
                    if session.closing {
                        continue;
                    }
                    let mut events = Vec::new();
                    let mut ctx = SipCtx {
                        sip: &mut self.sip,
                        rng: &mut self.rng,
                        now: self.now,
                        conn: id,
                        regs: &mut self.regs,
                    };
                    let lookups = ctx.sip.lookups_started();
                    let handled = session.client.handle_text(&text, &self.config, &mut ctx, &mut events);
                    self.tally.request(session.client.last_kind());
                    for e in &events {
                        self.send_event(id, e);
                    }
                    if let Some(request) = handled.register {
                        self.answer_register(id, request, self.sip.lookups_started() > lookups);
                    }
                    if let Some(request) = handled.session {
                        match request.body {
                            crate::api::RequestBody::Videoroom(r) => self.videoroom_request(id, request.transaction, r),
                            body => self.session_request(id, request.transaction, body),
                        }
                    }
                    if let Some(crate::api::Request { transaction, body: crate::api::RequestBody::Messaging(m) }) =
                        handled.messaging
                    {
                        self.messaging_request(id, transaction, m);
                    }
                    if let Some((transaction, request)) = handled.addressbook {
                        self.addressbook_request(id, transaction, request);
                    }
                    if let Some((code, reason)) = handled.close {
                        self.close_ws(id, code, reason);
                    }
                }
                WsEvent::Binary(n) => log::warn!("{id}: received invalid binary message ({n} bytes); ignored"),
                WsEvent::Pong => self.timers.stop(TimerKey::Conn(id, ConnTimer::Pong)),
                WsEvent::Close(code) => {
                    log::debug!("{id}: peer closed the WebSocket ({code:?})");
                    session.closing = true;
                }
            }
        }
    }

    fn send_event(&mut self, id: ConnId, event: &Event) {
        if let Event::Error { .. } = event {
            self.tally.error("request");
        }
        let Some(Conn { phase: Phase::Ws(session), close, .. }) = self.conns.get_mut(&id) else { return };
        let Some(text) = session.client.dialect.encode(event) else {
            log::debug!("{id}: {event:?} has no {} encoding; not sent", session.client.dialect.token());
            return;
        };
        if session.ws.send_text(text).is_err() {
            *close = true;
        }
    }

    /// Records `bytes` and queues them for the end of this input.
    fn write_plain(&mut self, id: ConnId, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if let Some(rec) = &mut self.recorder {
            rec.stream_out(self.now, id, bytes);
        }
        conn.pending.extend_from_slice(bytes);
    }

    /// Emits what `id` has to send, and closes it if it is done.
    fn flush(&mut self, id: ConnId) {
        let ws_bytes = match self.conns.get_mut(&id) {
            Some(Conn { phase: Phase::Ws(s), .. }) => s.ws.take_outbound(),
            Some(_) => Vec::new(),
            None => return,
        };
        if !ws_bytes.is_empty() {
            self.write_plain(id, &ws_bytes);
        }
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let plain = std::mem::take(&mut conn.pending);
        let close = conn.close;
        let data = match &mut conn.tls {
            Some(tls) => {
                if !plain.is_empty() {
                    tls.send(&plain);
                }
                if close {
                    tls.close();
                }
                tls.take_ciphertext()
            }
            None => plain,
        };
        if !data.is_empty() {
            self.out.push_back(Output::StreamWrite { conn: id, data });
        }
        if close {
            log::debug!("{id}: closing");
            self.forget(id);
            if let Some(rec) = &mut self.recorder {
                rec.close_out(self.now, id);
            }
            self.out.push_back(Output::StreamClose { conn: id });
        }
    }

    /// Marks `id` to be closed at its next flush, and flushes.
    fn close_now(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.close = true;
        }
        self.flush(id);
    }

    /// Starts the WebSocket close handshake with `code`; the stream closes when the peer
    /// answers or after [`CLOSE_LINGER`].
    fn close_ws(&mut self, id: ConnId, code: u16, reason: &str) {
        match self.conns.get_mut(&id) {
            Some(Conn { phase: Phase::Ws(s), .. }) => {
                if !s.closing {
                    s.closing = true;
                    s.ws.close(code, reason);
                    self.timers.set(TimerKey::Conn(id, ConnTimer::Linger), self.now + CLOSE_LINGER);
                }
                self.flush(id);
            }
            Some(_) => self.close_now(id),
            None => {}
        }
    }

    fn stream_closed(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get(&id) {
            log::debug!("{id}: {} went away", conn.peer);
            self.forget(id);
        }
    }

    /// Drops everything `id` owned. Nothing more is emitted for it.
    fn forget(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.remove(&id) {
            if let Some(n) = self.per_ip.get_mut(&conn.peer.ip()) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&conn.peer.ip());
                }
            }
            if let Phase::Ws(mut s) = conn.phase {
                if s.client.account_count() > 0 {
                    log::info!("{id}: connection gone; {} account(s) removed", s.client.account_count());
                }
                // Registrations end with the connection that made them (Expires: 0).
                let mut ctx =
                    SipCtx { sip: &mut self.sip, rng: &mut self.rng, now: self.now, conn: id, regs: &mut self.regs };
                s.client.release(&mut ctx);
            }
            self.release_calls(id);
            self.conference_conn_gone(id);
            self.pending_registers.retain(|_, p| p.conn != id);
        }
        self.timers.stop_range(TimerKey::Conn(id, ConnTimer::FIRST)..=TimerKey::Conn(id, ConnTimer::LAST));
    }

    fn shutdown(&mut self) {
        self.shutting_down = true;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        log::info!("shutting down: closing {} connection(s)", ids.len());
        for id in ids {
            self.close_ws(id, 1001, "Server shutting down");
        }
    }

    // ===== Timers =====

    fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.config.websocket_ping_interval.max(1))
    }

    fn handle_timeout(&mut self) {
        self.conference_timeout();
        while let Some((call, timer)) = self.calls.timers.pop_expired(self.now) {
            self.contained(call, "a call timer", |gw| gw.call_timer(call, timer));
        }
        while let Some(TimerKey::Conn(id, timer)) = self.timers.pop_expired(self.now) {
            match timer {
                ConnTimer::Handshake => {
                    log::info!("{id}: no WebSocket upgrade within {} s; dropping", self.config.http_handshake_timeout);
                    self.close_now(id);
                }
                ConnTimer::Ping => {
                    let interval = self.ping_interval();
                    if let Some(Conn { phase: Phase::Ws(s), close, .. }) = self.conns.get_mut(&id) {
                        if s.closing {
                            continue;
                        }
                        if s.ws.send_ping().is_err() {
                            *close = true;
                        }
                        let pong = TimerKey::Conn(id, ConnTimer::Pong);
                        if self.timers.get(pong).is_none() {
                            self.timers.set(pong, self.now + interval / 2);
                        }
                        self.timers.set(TimerKey::Conn(id, ConnTimer::Ping), self.now + interval);
                        self.flush(id);
                    }
                }
                ConnTimer::Pong => {
                    log::info!("{id}: no Pong within {} s; dropping", self.ping_interval().as_secs() / 2);
                    self.close_now(id);
                }
                ConnTimer::Linger => self.close_now(id),
            }
        }
    }
}

/// The earlier of two deadlines.
fn earliest_of(
    a: Option<(Instant, TimeoutReason)>,
    b: Option<(Instant, TimeoutReason)>,
) -> Option<(Instant, TimeoutReason)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 < x.0 { y } else { x }),
        (x, None) | (None, x) => x,
    }
}
