//! The harness' model of the runtime side of one whole gateway, and the invariants checked
//! against it after every output.

use super::cursor::ByteCursor;
use super::templates::{fuzz_addr_uri, fuzz_header};
use crate::wire::client_text_frame;
use std::time::{Duration, Instant};
use sylkgw_core::gateway::INTERNAL_ERROR_REASON;
use sylkgw_core::ids::ConnId;
use sylkgw_core::media::webrtc::DtlsIdentity;
use sylkgw_core::{Config, Gateway, Input, Output};

/// What opened a stream connection the harness tracks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum ConnKind {
    Web,
    SipTcp,
    /// The core asked for it with `Output::Connect`.
    Outgoing,
}

/// The harness' model of the runtime side, and the invariants checked against it.
pub(super) struct GatewayHarness {
    pub(super) gw: Gateway,
    pub(super) epoch: Instant,
    pub(super) now: Instant,
    pub(super) deadline: Instant,
    /// Live stream connections.
    pub(super) live: std::collections::BTreeMap<ConnId, ConnKind>,
    /// Every connection ever accepted or asked for.
    pub(super) known: std::collections::BTreeSet<ConnId>,
    /// Connect requests not answered yet.
    pub(super) connects: Vec<ConnId>,
    /// Resolve requests not answered yet.
    pub(super) resolves: Vec<u64>,
    /// The last `Output::Store` id (ids must be unique: they only grow).
    last_store: u64,
    /// Storage requests not answered yet (`fuzz_answer` answers them, rightly or not).
    pub(super) stores: Vec<(sylkgw_core::storage::StoreId, sylkgw_core::storage::StoreRequest)>,
    /// BindUdp requests not answered yet.
    pub(super) binds: Vec<(sylkgw_core::SocketId, sylkgw_core::UdpPurpose, std::net::SocketAddr)>,
    /// Sockets the core may send from.
    pub(super) bound: std::collections::BTreeSet<sylkgw_core::SocketId>,
    /// Ids closed while their bind was unanswered: the answer is still given, then ignored.
    pub(super) closed_pending: std::collections::BTreeSet<sylkgw_core::SocketId>,
    /// RTP ids of pairs asked for with `request_rtp_pair`.
    pub(super) rtp_pairs: Vec<sylkgw_core::SocketId>,
    /// The last SIP requests the gateway sent (newest last).
    pub(super) sip_requests: Vec<String>,
    /// Users of the Contacts the gateway registered.
    pub(super) contact_users: Vec<String>,
    /// Call-IDs of INVITEs the harness sent.
    pub(super) calls: Vec<String>,
    /// The last INVITEs the harness sent (for CANCEL).
    pub(super) invites: Vec<String>,
    /// What each web connection was sent and has not been cut into frames yet; `None` once the
    /// connection got an HTTP answer other than 101 (no frames follow).
    pub(super) web_rx: std::collections::BTreeMap<ConnId, Option<Vec<u8>>>,
    /// Sessions each web connection knows: ones it created, ones offered to it.
    pub(super) sessions: std::collections::BTreeMap<(ConnId, String), SessionSeen>,
    /// Dialogs the far end can send requests in.
    pub(super) far_dialogs: Vec<FarDialog>,
    /// `feed-attached` offers the gateway made: (connection, session, feed, SDP), newest last.
    pub(super) room_offers: Vec<(ConnId, String, String, String)>,
    pub(super) counter: u32,
}

/// A session as the harness' client sees it.
pub(super) struct SessionSeen {
    /// `terminated` arrived.
    pub(super) ended: bool,
    /// The gateway's offer, for an incoming session.
    pub(super) offer: Option<String>,
}

/// A dialog seen from the far end (header values carry their tags).
#[derive(Clone)]
pub(super) struct FarDialog {
    pub(super) call_id: String,
    /// The gateway's side (`To` of the far end's requests).
    pub(super) gateway: String,
    /// The far end's side (`From` of its requests).
    pub(super) far: String,
    /// Where requests go.
    pub(super) target: String,
}

/// Invariant (j): most outputs one input (and its drain) may yield. The harness has at most six
/// connections and a handful of calls; a request's cost must not scale with its size.
const MAX_OUTPUTS_PER_DRAIN: usize = 1024;
/// Invariant (j): most bytes (stream writes and datagrams) one input may yield: a few times the
/// largest WebSocket message (256 KiB), which an error may quote back.
const MAX_BYTES_PER_DRAIN: usize = 2 << 20;

pub(super) const FUZZ_SIP_SOCKET: sylkgw_core::SocketId = sylkgw_core::SocketId(0);
pub(super) const FUZZ_WEBRTC_SOCKET: sylkgw_core::SocketId = sylkgw_core::SocketId(1);
pub(super) const FUZZ_PROXY: ([u8; 4], u16) = ([192, 0, 2, 5], 5060);

/// One DTLS certificate per process (making one draws OS randomness and takes a while; the
/// harness never completes a DTLS handshake, so its bytes only show in the gateway's SDP).
fn dtls_cert() -> DtlsIdentity {
    static CERT: std::sync::OnceLock<DtlsIdentity> = std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        str0m::crypto::from_feature_flags().dtls_provider.generate_certificate().expect("a DTLS certificate").into()
    })
    .clone()
}

impl GatewayHarness {
    pub(super) fn new(proxy: &str) -> Option<Self> {
        use sylkgw_core::UdpPurpose;
        let mut config = Config::default();
        config.sip.listen = ([192, 0, 2, 1], 5060).into();
        config.sip.outbound_sip_proxy = Some(proxy.to_string());
        // Without a certificate no browser leg is built and every call ends at `session-create`.
        config.webrtc.dtls_cert = Some(dtls_cert());
        let epoch = Instant::now();
        let gw = Gateway::new(config, [0x5a; 32], epoch, Duration::from_secs(1_767_225_600)).ok()?;
        let mut h = Self {
            gw,
            epoch,
            now: epoch,
            deadline: epoch,
            live: Default::default(),
            known: Default::default(),
            connects: Vec::new(),
            resolves: Vec::new(),
            last_store: 0,
            stores: Vec::new(),
            binds: Vec::new(),
            bound: [FUZZ_SIP_SOCKET, FUZZ_WEBRTC_SOCKET].into(),
            closed_pending: Default::default(),
            rtp_pairs: Vec::new(),
            sip_requests: Vec::new(),
            contact_users: Vec::new(),
            calls: Vec::new(),
            invites: Vec::new(),
            web_rx: Default::default(),
            sessions: Default::default(),
            far_dialogs: Vec::new(),
            room_offers: Vec::new(),
            counter: 0,
        };
        h.drain();
        let sip = h.gw.sip_listen();
        h.input(Input::UdpBound { socket: FUZZ_SIP_SOCKET, purpose: UdpPurpose::Sip, local: sip });
        let webrtc = h.gw.webrtc_listen();
        h.input(Input::UdpBound { socket: FUZZ_WEBRTC_SOCKET, purpose: UdpPurpose::WebRtc, local: webrtc });
        Some(h)
    }

    pub(super) fn next_id(&mut self) -> u32 {
        self.counter += 1;
        self.counter
    }

    /// Feeds one input, drains, checks, and feeds `Timeout` while one is due.
    pub(super) fn input(&mut self, input: Input<'_>) {
        self.gw.handle_input(self.now, input);
        self.drain();
        self.run_due_timers();
    }

    pub(super) fn run_due_timers(&mut self) {
        // A handful of rounds: each must move the deadline past `now`, so one is enough.
        for _ in 0..4 {
            if self.deadline > self.now {
                return;
            }
            self.gw.handle_input(self.now, Input::Timeout);
            self.drain();
            assert!(
                self.deadline > self.now,
                "invariant (b): Timeout at +{:?} left the deadline at +{:?} ({})",
                self.now - self.epoch,
                self.deadline.saturating_duration_since(self.epoch),
                self.gw.last_timeout_reason()
            );
        }
    }

    /// Drains the core, updating the model and checking every output against it.
    pub(super) fn drain(&mut self) {
        let (mut outputs, mut bytes) = (0usize, 0usize);
        loop {
            let output = self.gw.poll_output();
            outputs += 1;
            bytes += match &output {
                Output::StreamWrite { data, .. } => data.len(),
                Output::Datagram(t) => t.payload.len(),
                _ => 0,
            };
            assert!(
                outputs <= MAX_OUTPUTS_PER_DRAIN && bytes <= MAX_BYTES_PER_DRAIN,
                "invariant (j): one input yields more than {MAX_OUTPUTS_PER_DRAIN} outputs or \
                 {MAX_BYTES_PER_DRAIN} bytes ({outputs} outputs, {bytes} bytes so far)"
            );
            match output {
                Output::Timeout(at) => {
                    self.deadline = at;
                    break;
                }
                Output::StreamWrite { conn, data } => {
                    self.check_live(conn, "StreamWrite");
                    if self.live.get(&conn) != Some(&ConnKind::Web) {
                        self.saw_sip(&data);
                    } else {
                        self.saw_web(conn, &data);
                    }
                }
                Output::StreamClose { conn } => {
                    self.check_live(conn, "StreamClose");
                    self.forget(conn);
                    self.live.remove(&conn);
                    self.connects.retain(|c| *c != conn);
                }
                Output::Datagram(t) => {
                    assert!(
                        self.bound.contains(&t.socket),
                        "invariant (d): Datagram to {} from {}, which is not bound (bound: {:?})",
                        t.to,
                        t.socket,
                        self.bound
                    );
                    if t.socket == FUZZ_SIP_SOCKET {
                        self.saw_sip(&t.payload);
                    }
                }
                Output::Connect { conn, .. } => {
                    assert!(!self.live.contains_key(&conn), "Connect names {conn}, which is live");
                    self.live.insert(conn, ConnKind::Outgoing);
                    self.known.insert(conn);
                    self.connects.push(conn);
                }
                Output::Resolve { query, .. } => self.resolves.push(query),
                Output::Store { id, request } => {
                    assert!(id.0 > self.last_store, "Store id {id} reused (last {})", self.last_store);
                    self.last_store = id.0;
                    self.stores.push((id, request));
                }
                Output::BindUdp { socket, purpose, local } => {
                    assert!(socket.0 >= 16, "BindUdp chose {socket}, below 16");
                    assert!(!self.bound.contains(&socket), "BindUdp names {socket}, which is bound");
                    self.binds.push((socket, purpose, local));
                }
                Output::ToWorker { worker, .. } => panic!("ToWorker({worker}) from a gateway with one worker"),
                Output::CloseUdp { socket } => {
                    if self.binds.iter().any(|b| b.0 == socket) {
                        self.closed_pending.insert(socket);
                    }
                    self.bound.remove(&socket);
                }
            }
        }
        let web = self.live.values().filter(|k| **k == ConnKind::Web).count();
        let stats = self.gw.stats();
        assert!(
            stats.connections <= web,
            "invariant (e): stats report {} connections, the harness has {web} live web connections",
            stats.connections
        );
        self.check_calls();
    }

    /// Invariants on the call tables: no call outlives its WebSocket, no two calls share a SIP
    /// leg, no two legs share a dialog.
    pub(super) fn check_calls(&self) {
        if !self.live.values().any(|k| *k == ConnKind::Web) {
            assert_eq!(
                self.gw.conference_census(),
                Default::default(),
                "invariant (g): conference sessions live on after every WebSocket closed"
            );
        }
        let (calls, dialogs) = self.gw.call_table_for_test();
        let mut legs = std::collections::BTreeSet::new();
        for (conn, session, leg) in &calls {
            assert!(
                self.live.get(conn) == Some(&ConnKind::Web),
                "invariant (g): call {session:?} lives on after its connection {conn} closed"
            );
            if let Some(leg) = leg {
                assert!(legs.insert(*leg), "invariant (h): two calls share SIP leg {leg:?}");
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for (leg, id) in &dialogs {
            let key = (id.call_id.as_str(), id.local_tag.as_str(), id.remote_tag.as_str());
            assert!(ids.insert(key), "invariant (h): leg {leg:?} holds dialog {key:?}, which another leg holds");
        }
    }

    /// A connection closed: its sessions and unparsed bytes go with it.
    pub(super) fn forget(&mut self, conn: ConnId) {
        self.web_rx.remove(&conn);
        self.room_offers.retain(|(c, ..)| *c != conn);
        self.sessions.retain(|(c, _), _| *c != conn);
    }

    /// Cuts what a web connection was sent into WebSocket frames and checks each text event.
    pub(super) fn saw_web(&mut self, conn: ConnId, data: &[u8]) {
        let Some(buf) = self.web_rx.entry(conn).or_insert_with(|| Some(Vec::new())) else { return };
        buf.extend_from_slice(data);
        let mut texts = Vec::new();
        loop {
            if buf.starts_with(b"HTTP/") {
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { break };
                if !buf.starts_with(b"HTTP/1.1 101 ") {
                    self.web_rx.insert(conn, None);
                    return;
                }
                buf.drain(..end + 4);
                continue;
            }
            if buf.len() < 2 {
                break;
            }
            assert_eq!(buf[1] & 0x80, 0, "a frame from the gateway is masked");
            let (len, header) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 if buf.len() >= 10 => {
                    let len = u64::from_be_bytes(buf[2..10].try_into().unwrap_or_default());
                    (usize::try_from(len).unwrap_or(usize::MAX), 10)
                }
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            if buf.len() - header < len {
                break;
            }
            if buf[0] & 0x0f == 1 {
                texts.push(buf[header..header + len].to_vec());
            }
            buf.drain(..header + len);
        }
        for text in texts {
            self.saw_event(conn, &text);
        }
    }

    /// Invariant (f): session events name a session their connection created or was offered,
    /// and none follows its `terminated`. Invariant (i): no session ends with
    /// [`INTERNAL_ERROR_REASON`], which is how containment reports a panic in a call's media
    /// outside `cfg(fuzzing)` (the harness' far end never answers `500 Internal error`: its
    /// reason phrases are `Fuzz`), so the corpus replay under `cargo test` sees such a panic.
    pub(super) fn saw_event(&mut self, conn: ConnId, text: &[u8]) {
        let v: serde_json::Value = match serde_json::from_slice(text) {
            Ok(v) => v,
            Err(e) => panic!("the gateway sent a text frame that is not JSON ({e}): {}", String::from_utf8_lossy(text)),
        };
        let field =
            |name: &str| v.get(name).or_else(|| v.get("data").and_then(|d| d.get(name))).and_then(|f| f.as_str());
        let kind = field("sylkrtc").unwrap_or_default();
        let event = field("event").unwrap_or_default();
        let session = field("session").unwrap_or_default().to_string();
        match kind {
            "session-event" | "session_event" => {
                let seen = self.sessions.get_mut(&(conn, session.clone()));
                let Some(seen) = seen.filter(|s| !s.ended) else {
                    panic!("invariant (f): {conn} got an event for session {session:?}, which it does not have: {v}")
                };
                if event == "state" && field("state") == Some("terminated") {
                    seen.ended = true;
                    assert_ne!(
                        field("reason"),
                        Some(INTERNAL_ERROR_REASON),
                        "invariant (i): session {session:?} of {conn} ended by a contained panic in its media: {v}"
                    );
                }
            }
            "videoroom-event" if event == "feed-attached" => {
                let feed = field("feed").unwrap_or_default().to_string();
                let sdp = field("sdp").unwrap_or_default().to_string();
                self.room_offers.push((conn, session, feed, sdp));
                if self.room_offers.len() > 16 {
                    self.room_offers.remove(0);
                }
            }
            "account-event" | "account_event" if event == "incoming-session" || event == "incoming_session" => {
                let key = (conn, session.clone());
                assert!(
                    self.sessions.get(&key).is_none_or(|s| s.ended),
                    "invariant (f): {conn} was offered session {session:?} while it has it"
                );
                let offer = field("sdp").map(str::to_string);
                self.sessions.insert(key, SessionSeen { ended: false, offer });
            }
            _ => {}
        }
    }

    pub(super) fn check_live(&self, conn: ConnId, what: &str) {
        assert!(self.known.contains(&conn), "invariant (c): {what} for {conn}, never accepted nor asked for");
        assert!(self.live.contains_key(&conn), "invariant (c): {what} for {conn} after it was closed");
    }

    /// Remembers a SIP request the gateway sent, for responses to echo.
    pub(super) fn saw_sip(&mut self, data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else { return };
        if text.starts_with("SIP/") {
            self.saw_sip_response(text);
            return;
        }
        if text.trim().is_empty() {
            return;
        }
        if text.starts_with("REGISTER ") {
            let contact = text.lines().find(|l| l.to_ascii_lowercase().starts_with("contact:") || l.starts_with("m:"));
            let user = contact.and_then(|l| l.split("sip:").nth(1)).and_then(|u| u.split('@').next());
            if let Some(user) = user {
                if !self.contact_users.iter().any(|u| u == user) {
                    self.contact_users.push(user.to_string());
                }
            }
        }
        if self.sip_requests.len() == 8 {
            self.sip_requests.remove(0);
        }
        self.sip_requests.push(text.to_string());
    }

    /// A response the gateway sent: a tagged 1xx/2xx to an INVITE opens a dialog the far end
    /// may send requests in.
    pub(super) fn saw_sip_response(&mut self, text: &str) {
        let code: u16 = text.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
        let is_invite = fuzz_header(text, &["cseq"]).is_some_and(|c| c.ends_with("INVITE"));
        if !(101..300).contains(&code) || !is_invite {
            return;
        }
        let (Some(call_id), Some(gateway), Some(far)) =
            (fuzz_header(text, &["call-id", "i"]), fuzz_header(text, &["to", "t"]), fuzz_header(text, &["from", "f"]))
        else {
            return;
        };
        if !gateway.contains(";tag=") {
            return;
        }
        let target = fuzz_header(text, &["contact", "m"]).map(|c| fuzz_addr_uri(&c));
        let target = target.unwrap_or_else(|| "sip:gw@192.0.2.1:5060".to_string());
        self.add_far_dialog(FarDialog { call_id, gateway, far, target });
    }

    /// The far end answered the gateway's INVITE `req` on fork `fork` with a tagged 1xx/2xx.
    pub(super) fn far_dialog_from_invite(&mut self, req: &str, fork: u32) {
        let (Some(call_id), Some(gateway), Some(to)) =
            (fuzz_header(req, &["call-id", "i"]), fuzz_header(req, &["from", "f"]), fuzz_header(req, &["to", "t"]))
        else {
            return;
        };
        let far = if to.contains(";tag=") { to } else { format!("{to};tag=fz{fork}") };
        let target = fuzz_header(req, &["contact", "m"]).map(|c| fuzz_addr_uri(&c));
        let target = target.unwrap_or_else(|| "sip:gw@192.0.2.1:5060".to_string());
        self.add_far_dialog(FarDialog { call_id, gateway, far, target });
    }

    pub(super) fn add_far_dialog(&mut self, d: FarDialog) {
        if self.far_dialogs.iter().any(|x| x.call_id == d.call_id && x.gateway == d.gateway && x.far == d.far) {
            return;
        }
        if self.far_dialogs.len() == 8 {
            self.far_dialogs.remove(0);
        }
        self.far_dialogs.push(d);
    }

    pub(super) fn live_of(&self, kind: ConnKind) -> Vec<ConnId> {
        self.live.iter().filter(|(_, k)| **k == kind).map(|(c, _)| *c).collect()
    }

    /// A live web connection chosen by the cursor.
    pub(super) fn pick_web(&self, c: &mut ByteCursor<'_>) -> Option<ConnId> {
        let web = self.live_of(ConnKind::Web);
        (!web.is_empty()).then(|| *c.pick(&web))
    }

    pub(super) fn send_text(&mut self, conn: ConnId, text: &str) {
        let frame = client_text_frame(text);
        self.input(Input::StreamData { conn, data: &frame });
    }

    /// Delivers SIP bytes: on a live SIP stream when the cursor says so and there is one,
    /// otherwise as a datagram on the SIP socket.
    pub(super) fn deliver_sip(&mut self, c: &mut ByteCursor<'_>, msg: &[u8]) {
        let mut streams = self.live_of(ConnKind::Outgoing);
        streams.retain(|s| !self.connects.contains(s));
        streams.extend(self.live_of(ConnKind::SipTcp));
        let how = c.byte();
        if !streams.is_empty() && how & 1 == 1 {
            let conn = streams[usize::from(how >> 1) % streams.len()];
            self.input(Input::StreamData { conn, data: msg });
            return;
        }
        let from = match how % 8 {
            7 => ([198, 51, 100, 7], 5062).into(),
            _ => FUZZ_PROXY.into(),
        };
        self.input(Input::Datagram { socket: FUZZ_SIP_SOCKET, from, data: msg });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A harness whose connection 1 has session `s0`.
    fn with_session() -> GatewayHarness {
        let mut h = GatewayHarness::new("192.0.2.5:5060").expect("a gateway");
        h.sessions.insert((ConnId(1), "s0".into()), SessionSeen { ended: false, offer: None });
        h
    }

    fn terminated(reason: &str) -> Vec<u8> {
        serde_json::json!({"sylkrtc": "session-event", "session": "s0", "event": "state",
            "data": {"state": "terminated", "reason": reason}})
        .to_string()
        .into_bytes()
    }

    /// An ordinary ending ends the session and nothing more.
    #[test]
    fn terminated_ends_the_session() {
        let mut h = with_session();
        h.saw_event(ConnId(1), &terminated("486 Busy Here"));
        assert!(h.sessions[&(ConnId(1), "s0".to_string())].ended);
    }

    /// Containment turns a panic in a call's media into `terminated` `500 Internal error`
    /// (outside `cfg(fuzzing)`): the corpus replay under `cargo test` must fail on it, not pass.
    #[test]
    #[should_panic(expected = "invariant (i)")]
    fn a_contained_panic_fails_the_run() {
        let mut h = with_session();
        h.saw_event(ConnId(1), &terminated(INTERNAL_ERROR_REASON));
    }
}
