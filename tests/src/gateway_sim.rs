//! The shared core of the whole-gateway simulations (`tests/call_sim.rs`, `tests/limits.rs`): the
//! real `Gateway` on a virtual clock, its WebSockets decoded into sylkRTC events, and an
//! in-memory network of [`Datagram`]s between it and the test's peers: str0m browsers
//! ([`crate::webrtc_client`]) and a scripted SIP far end, which each test writes itself as a
//! [`World`]. Every byte the gateway emits goes through its `Output`s, as a runtime would send it.
//!
//! Addresses: the gateway's SIP socket is [`GW_SIP`], its WebRTC socket [`GW_WEBRTC`], its RTP
//! pairs from 127.0.0.1:20000; the far end's SIP is [`FAR_SIP`]. A datagram takes [`LATENCY`].

use crate::sip_text::{header, response};
use crate::webrtc_client::{m_line, Datagram, WebRtcClient};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use sylkgw_core::config::Config;
use sylkgw_core::drive::WorkerMsg;
use sylkgw_core::media::webrtc::DtlsIdentity;
use sylkgw_core::storage::{StoreError, StoreId, StoreRequest, StoreResult};
use sylkgw_core::{ConnId, Gateway, Input, Listener, Output, SocketId, UdpPurpose};
use sylkgw_kit::{client_text_frame, UPGRADE_V2};

/// The gateway's SIP socket.
pub const GW_SIP: &str = "127.0.0.1:5060";
/// The gateway's WebRTC socket (every browser leg).
pub const GW_WEBRTC: &str = "127.0.0.1:40000";
/// The SIP far end: the gateway's outbound proxy.
pub const FAR_SIP: &str = "127.0.0.1:5070";
/// How long every datagram takes on the in-memory network.
pub const LATENCY: Duration = Duration::from_millis(5);
/// The password (an HA1) the simulations' accounts are added with.
pub const HA1: &str = "b1726872c344b6dc8365b774f8fd6412";
/// How often the peers send media ([`World::media_tick`]).
pub const MEDIA_INTERVAL: Duration = Duration::from_millis(20);

/// `s` as a socket address (panics if it is not one).
pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A fresh DTLS certificate for the gateway.
pub fn test_cert() -> DtlsIdentity {
    str0m::crypto::from_feature_flags().dtls_provider.generate_certificate().expect("certificate").into()
}

/// The far end's response to `req`: its To gets the far end's tag `far1` unless it has a tag
/// already or the response is a 100.
pub fn reply(req: &str, code: u16, reason: &str, extra: &str, body: &str) -> String {
    let to = header(req, "To");
    let to = if to.contains(";tag=") || code == 100 { to.to_string() } else { format!("{to};tag=far1") };
    response(req, code, reason, &to, extra, body)
}

/// The far end's SDP: PCMU and telephone-event/101 on 127.0.0.1:`port`, direction `direction`.
pub fn far_sdp(port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=far 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\n"
    )
}

/// The RTP address of the `kind` m-line in an SDP body (its session-level IPv4 `c=`).
pub fn sdp_addr_of(sdp: &str, kind: &str) -> SocketAddr {
    let ip = sdp.lines().find_map(|l| l.strip_prefix("c=IN IP4 ")).unwrap().trim();
    let port = m_line(sdp, kind).unwrap().split(' ').nth(1).unwrap();
    addr(&format!("{ip}:{port}"))
}

/// The audio RTP address in an SDP body.
pub fn sdp_rtp_addr(sdp: &str) -> SocketAddr {
    sdp_addr_of(sdp, "audio")
}

/// One WebSocket, as its client sees it.
#[derive(Default)]
pub struct Ws {
    /// Server → client bytes not yet decoded.
    buf: Vec<u8>,
    /// The upgrade's `101` came.
    open: bool,
    /// The gateway closed the connection.
    pub closed: bool,
    /// The sylkRTC messages received and not taken yet.
    pub events: Vec<Value>,
    /// Requests sent so far ([`GatewaySim::next_transaction`]).
    transaction: u32,
}

impl Ws {
    /// Decodes what has come: the `101` response, then each whole text frame into `events`.
    fn decode(&mut self) {
        if !self.open {
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else { return };
            assert!(self.buf.starts_with(b"HTTP/1.1 101"));
            self.buf.drain(..end + 4);
            self.open = true;
        }
        loop {
            let b = &self.buf;
            if b.len() < 2 {
                return;
            }
            let (len, hdr) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
                126 | 127 => return,
                n => (usize::from(n), 2),
            };
            if b.len() < hdr + len {
                return;
            }
            let opcode = b[0] & 0x0f;
            let payload = b[hdr..hdr + len].to_vec();
            self.buf.drain(..hdr + len);
            if opcode == 1 {
                self.events.push(serde_json::from_slice(&payload).unwrap());
            }
        }
    }
}

/// When the simulation answers the gateway's `BindUdp` (both orders occur in a runtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindAnswer {
    /// `UdpBound` at once, while the outputs are being drained.
    AtOnce,
    /// `UdpBound` once the gateway has nothing more to output, the last bind first.
    AfterDrain,
}

/// The gateway side of a simulation: the gateway, the virtual clock, the network, the WebSockets.
pub struct GatewaySim {
    /// The gateway under test.
    pub gw: Gateway,
    /// The virtual clock.
    pub now: Instant,
    /// The gateway's next timer.
    pub deadline: Instant,
    /// Datagrams in flight.
    pub wire: VecDeque<Datagram>,
    /// The gateway's bound sockets.
    pub sockets: BTreeMap<SocketId, SocketAddr>,
    /// The WebSockets, by connection.
    pub conns: BTreeMap<ConnId, Ws>,
    bind_answer: BindAnswer,
    /// Binds not answered yet ([`BindAnswer::AfterDrain`]).
    binds: Vec<(SocketId, UdpPurpose, SocketAddr)>,
    /// What the gateway's capture recorded so far (taken at each drain).
    pub capture: String,
    /// Carries out `Output::Store` (a test puts a real backend here); with `None` requests are
    /// left unanswered (the core only logs what it asks without waiting: account logins).
    pub storage: Option<StoreFn>,
    /// Storage outcomes not fed back yet: each comes as `Input::Stored` after the drain that
    /// asked, as a runtime's pool answers.
    stored: VecDeque<(StoreId, Result<StoreResult, StoreError>)>,
    /// While set, storage outcomes are kept back (the store did the work, its answer is not in
    /// yet) until [`GatewaySim::release_stores`].
    pub hold_stores: bool,
    held: VecDeque<(StoreId, Result<StoreResult, StoreError>)>,
    /// `Output::ToWorker` messages (worker, message) not carried yet: a test with several
    /// gateways hands them over as `Input::FromWorker`.
    pub to_workers: VecDeque<(usize, WorkerMsg)>,
}

/// A storage backend for [`GatewaySim::storage`].
pub type StoreFn = Box<dyn FnMut(&StoreRequest) -> Result<StoreResult, StoreError>>;

impl GatewaySim {
    /// A gateway with the simulation's addresses (SIP through the far end as outbound proxy, RTP
    /// ports 20000-20099, capture on) and RNG seed `seed`, changed by `tweak`; its SIP and WebRTC
    /// sockets are bound.
    #[allow(clippy::disallowed_methods)] // Instant::now is only the epoch of the virtual clock
    pub fn new(seed: [u8; 32], bind_answer: BindAnswer, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        config.sip.listen = addr(GW_SIP);
        config.sip.outbound_sip_proxy = Some(FAR_SIP.into());
        config.media.webrtc_listen = Some(addr(GW_WEBRTC));
        config.media.media_advertised_addresses = vec!["127.0.0.1".into()];
        config.media.rtp_ports = (20000, 20099);
        config.webrtc.dtls_cert = Some(test_cert());
        config.capture = true;
        tweak(&mut config);
        // A test may move the WebRTC socket (two gateways side by side).
        let webrtc = config.media.webrtc_listen.unwrap_or(addr(GW_WEBRTC));
        let now = Instant::now();
        let gw = Gateway::new(config, seed, now, Duration::from_secs(1_700_000_000)).unwrap();
        let mut sim = Self {
            gw,
            now,
            deadline: now,
            wire: VecDeque::new(),
            sockets: BTreeMap::new(),
            conns: BTreeMap::new(),
            bind_answer,
            binds: Vec::new(),
            capture: String::new(),
            storage: None,
            stored: VecDeque::new(),
            hold_stores: false,
            held: VecDeque::new(),
            to_workers: VecDeque::new(),
        };
        sim.drain();
        sim.sockets.insert(SocketId(1), addr(GW_SIP));
        sim.input(Input::UdpBound { socket: SocketId(1), purpose: UdpPurpose::Sip, local: addr(GW_SIP) });
        sim.sockets.insert(SocketId(2), webrtc);
        sim.input(Input::UdpBound { socket: SocketId(2), purpose: UdpPurpose::WebRtc, local: webrtc });
        sim
    }

    /// Feeds `input` to the gateway and carries out its outputs.
    pub fn input(&mut self, input: Input<'_>) {
        self.gw.handle_input(self.now, input);
        self.drain();
    }

    /// Carries out the gateway's outputs until its next timer.
    pub fn drain(&mut self) {
        loop {
            match self.gw.poll_output() {
                Output::Timeout(at) => {
                    self.deadline = at;
                    self.capture.push_str(&self.gw.take_capture());
                    if let Some((id, result)) = self.stored.pop_front() {
                        self.gw.handle_input(self.now, Input::Stored { id, result });
                        continue;
                    }
                    let Some((socket, purpose, local)) = self.binds.pop() else { break };
                    self.gw.handle_input(self.now, Input::UdpBound { socket, purpose, local });
                }
                other => self.carry(other),
            }
        }
    }

    /// Carries out one output of the gateway other than `Output::Timeout` (which
    /// [`GatewaySim::drain`] handles): datagrams onto the wire, stream bytes into the WebSockets,
    /// binds answered, storage run. A harness that polls the gateway itself (a benchmark timing
    /// only the gateway's own calls) hands each output here.
    pub fn carry(&mut self, output: Output) {
        match output {
            Output::Timeout(at) => self.deadline = at,
            Output::Store { id, request } => {
                if let Some(store) = self.storage.as_mut() {
                    let result = store(&request);
                    match self.hold_stores {
                        true => self.held.push_back((id, result)),
                        false => self.stored.push_back((id, result)),
                    }
                }
            }
            Output::StreamWrite { conn, data } => {
                let ws = self.conns.get_mut(&conn).expect("a known connection");
                ws.buf.extend_from_slice(&data);
                ws.decode();
            }
            Output::StreamClose { conn } => self.conns.get_mut(&conn).expect("a known connection").closed = true,
            Output::BindUdp { socket, local, purpose } => {
                self.sockets.insert(socket, local);
                match self.bind_answer {
                    BindAnswer::AtOnce => self.gw.handle_input(self.now, Input::UdpBound { socket, purpose, local }),
                    BindAnswer::AfterDrain => self.binds.push((socket, purpose, local)),
                }
            }
            Output::CloseUdp { socket } => {
                self.sockets.remove(&socket);
            }
            Output::Datagram(t) => {
                let from = self.sockets[&t.socket];
                self.wire.push_back(Datagram { at: self.now + LATENCY, from, to: t.to, data: t.payload });
            }
            Output::ToWorker { worker, msg } => self.to_workers.push_back((worker, msg)),
            other => panic!("unexpected output {other:?}"),
        }
    }

    /// Everything the capture recorded since the last call.
    pub fn take_capture(&mut self) -> String {
        let mut text = std::mem::take(&mut self.capture);
        text.push_str(&self.gw.take_capture());
        text
    }

    /// Hands back every storage outcome kept while [`GatewaySim::hold_stores`] was set (which
    /// it clears), each as `Input::Stored`, and drains.
    pub fn release_stores(&mut self) {
        self.hold_stores = false;
        self.stored.extend(self.held.drain(..));
        self.drain();
    }

    /// Sends `req` on `conn` as transaction `transaction` without waiting for its answer.
    pub fn send_request(&mut self, conn: ConnId, mut req: Value, transaction: &str) {
        req["transaction"] = Value::String(transaction.to_string());
        let frame = client_text_frame(&req.to_string());
        self.input(Input::StreamData { conn, data: &frame });
    }

    /// Opens WebSocket `conn` (sylkRTC v2) and checks its `ready-event`.
    pub fn open_ws(&mut self, conn: ConnId) {
        self.conns.insert(conn, Ws::default());
        self.input(Input::Accepted { conn, listener: Listener::Web, peer: addr("127.0.0.1:61000") });
        self.input(Input::StreamData { conn, data: UPGRADE_V2.as_bytes() });
        assert_eq!(self.take_events(conn)[0]["sylkrtc"], "ready-event");
    }

    /// The number of the next request on `conn` (1, 2, …).
    pub fn next_transaction(&mut self, conn: ConnId) -> u32 {
        let ws = self.conns.get_mut(&conn).expect("a known connection");
        ws.transaction += 1;
        ws.transaction
    }

    /// Sends `req` on `conn` as transaction `transaction` and returns its answer (taken from the
    /// events; the others stay).
    pub fn request(&mut self, conn: ConnId, mut req: Value, transaction: &str) -> Value {
        req["transaction"] = Value::String(transaction.to_string());
        let frame = client_text_frame(&req.to_string());
        self.input(Input::StreamData { conn, data: &frame });
        let events = &mut self.conns.get_mut(&conn).unwrap().events;
        let i = events.iter().position(|e| e["transaction"] == transaction).expect("an answer to the request");
        events.remove(i)
    }

    /// The events received on `conn` so far (taken).
    pub fn take_events(&mut self, conn: ConnId) -> Vec<Value> {
        std::mem::take(&mut self.conns.get_mut(&conn).unwrap().events)
    }

    /// The far end sends `text` from [`FAR_SIP`] to the gateway's SIP socket.
    pub fn far_send(&mut self, text: String) {
        let d = Datagram { at: self.now + LATENCY, from: addr(FAR_SIP), to: addr(GW_SIP), data: text.into_bytes() };
        self.wire.push_back(d);
    }

    /// Hands `d` to the gateway socket it is addressed to; drops it if there is none.
    pub fn deliver(&mut self, d: Datagram) {
        if let Some((&socket, _)) = self.sockets.iter().find(|(_, a)| **a == d.to) {
            self.input(Input::Datagram { socket, from: d.from, data: &d.data });
        }
    }
}

/// A whole simulation: the gateway side and the test's own peers (browsers, SIP far end).
pub trait World {
    /// The gateway side and every browser.
    fn parts(&mut self) -> (&mut GatewaySim, Vec<&mut WebRtcClient>);

    /// Every [`MEDIA_INTERVAL`]: the peers send their media.
    fn media_tick(&mut self);

    /// A datagram whose time has come: to a peer, else [`GatewaySim::deliver`].
    fn deliver(&mut self, d: Datagram);

    /// [`World::deliver`] for worlds of browsers only: `d` to the browser with its address
    /// (which answers at once), else to the gateway.
    fn deliver_to_browsers(&mut self, d: Datagram) {
        let (net, browsers) = self.parts();
        let now = net.now;
        match browsers.into_iter().find(|b| b.addr == d.to) {
            Some(b) => {
                b.receive(now, d.from, d.to, &d.data).unwrap();
                b.drain(now, LATENCY, &mut net.wire);
            }
            None => net.deliver(d),
        }
    }

    /// The gateway side.
    fn net(&mut self) -> &mut GatewaySim {
        self.parts().0
    }

    /// Runs the virtual world for `d`: the gateway's timers, the browsers', media every
    /// [`MEDIA_INTERVAL`] (starting now), and the wire.
    fn run(&mut self, d: Duration) {
        let end = self.net().now + d;
        let mut next_media = self.net().now;
        loop {
            let (net, browsers) = self.parts();
            let browsers_at = browsers.iter().map(|b| b.timeout).min();
            let wire_at = net.wire.iter().map(|d| d.at).min();
            let t = [Some(end), Some(net.deadline), browsers_at, wire_at, Some(next_media)].into_iter().flatten().min();
            let t = t.unwrap();
            if t > end {
                break;
            }
            net.now = net.now.max(t);
            if net.deadline <= net.now {
                net.input(Input::Timeout);
            }
            let (net, browsers) = self.parts();
            let now = net.now;
            for b in browsers {
                if b.timeout <= now {
                    b.handle_timeout(now).unwrap();
                    b.drain(now, LATENCY, &mut net.wire);
                }
            }
            if next_media <= now {
                next_media = now + MEDIA_INTERVAL;
                self.media_tick();
            }
            loop {
                let net = self.net();
                let Some(i) = net.wire.iter().position(|d| d.at <= net.now) else { break };
                let d = net.wire.remove(i).unwrap();
                self.deliver(d);
            }
            if self.net().now >= end {
                break;
            }
        }
    }

    /// Runs until an event on `conn` matches `pred` (at most `max`); returns every event taken
    /// meanwhile.
    fn until_event(&mut self, conn: ConnId, max: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let end = self.net().now + max;
        let mut seen = Vec::new();
        loop {
            seen.extend(self.net().take_events(conn));
            if seen.iter().any(&pred) {
                return seen;
            }
            assert!(self.net().now < end, "timed out; events on {conn} so far: {seen:#?}");
            self.run(Duration::from_millis(10));
        }
    }
}
