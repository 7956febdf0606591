//! Entry points for the fuzz targets and the test crate. The bodies live here so they compile
//! and run under plain `cargo test`; the fuzz shims only call them.
//!
//! The real clock is read here only to get an epoch: every time fed to the core is an offset
//! from it, so runs stay deterministic.
#![allow(clippy::disallowed_methods)]

use crate::api;
use crate::capture;
use crate::drive::{Input, Output};
use crate::ids::{ConnId, Listener};
use crate::ws::frames::{client_frame, FrameOut};
use crate::{Config, Gateway};
use std::time::{Duration, Instant};

/// Fuzz body: any text as a sylkRTC request, decoded, handled by a client, and every resulting
/// event encoded in both dialects.
pub fn fuzz_sylkrtc_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = api::decode(text);
    let config = Config::default();
    for dialect in [api::Dialect::V1, api::Dialect::V2] {
        let mut client = crate::client::Client::new(dialect);
        let mut out = Vec::new();
        let mut sip = crate::sip::stack::SipStack::new(config.sip.clone());
        let mut rng = crate::rng::Rng::new([2; 32]);
        let mut regs = std::collections::BTreeMap::new();
        let mut ctx = crate::client::SipCtx {
            sip: &mut sip,
            rng: &mut rng,
            now: Instant::now(),
            conn: ConnId(1),
            regs: &mut regs,
        };
        client.handle_text(text, &config, &mut ctx, &mut out);
        client.handle_text(text, &config, &mut ctx, &mut out);
        for e in &out {
            let _ = dialect.encode(e);
        }
    }
}

/// The upgrade request the fuzz targets and tests open connections with.
pub const UPGRADE_V2: &str = "GET /webrtcgateway/ws HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Protocol: sylkRTC-2\r\n\r\n";

/// Fuzz body: an arbitrary byte stream on one connection, cut into chunks by the first byte of
/// each chunk. Checks that the core never panics and that every drain ends with a deadline that
/// is not in the past unless output was produced.
pub fn fuzz_ws_stream(data: &[u8]) {
    let start = Instant::now();
    let Ok(mut gw) = Gateway::new(Config::default(), [1; 32], start, Duration::ZERO) else { return };
    let conn = ConnId(1);
    let mut now = start;
    gw.handle_input(now, Input::Accepted { conn, listener: Listener::Web, peer: ([127, 0, 0, 1], 1).into() });
    drain(&mut gw);
    // Half the inputs start with a valid upgrade so the frame layer is reached.
    if data.first().is_some_and(|b| b & 1 == 1) {
        gw.handle_input(now, Input::StreamData { conn, data: UPGRADE_V2.as_bytes() });
        drain(&mut gw);
    }
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        gw.handle_input(now, Input::StreamData { conn, data: chunk });
        let deadline = drain(&mut gw);
        now += Duration::from_millis(u64::from(len) * 50);
        if deadline <= now {
            gw.handle_input(now, Input::Timeout);
            // A timeout that leaves its own deadline in the past would make a runtime spin.
            assert!(drain(&mut gw) > now, "deadline did not move past a handled timeout");
        }
        rest = next;
    }
}

/// Drains `gw`; returns every output before the final `Timeout`.
pub fn drain_outputs(gw: &mut Gateway) -> Vec<Output> {
    let mut out = Vec::new();
    loop {
        match gw.poll_output() {
            Output::Timeout(_) => return out,
            o => out.push(o),
        }
    }
}

/// Drains `gw`; returns the deadline.
pub fn drain(gw: &mut Gateway) -> Instant {
    loop {
        if let Output::Timeout(at) = gw.poll_output() {
            return at;
        }
    }
}

/// Fuzz body: capture text parsed and, if it parses, replayed twice with identical results.
pub fn fuzz_capture(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cap) = capture::parse(text) else { return };
    if cap.inputs.len() > 64 {
        return;
    }
    let epoch = Instant::now();
    let a = capture::replay(&cap, epoch);
    let b = capture::replay(&cap, epoch);
    assert_eq!(a, b, "replay is not deterministic");
}

/// A masked client text frame, for tests that speak WebSocket to the core directly.
pub fn client_text_frame(text: &str) -> Vec<u8> {
    client_frame(&FrameOut::Text(text.to_string()))
}

/// Fuzz body: any bytes as one SIP datagram. Checks that parsing and every typed view never
/// panic, that printing is stable (print → parse → print gives the same bytes), and that the
/// typed views print to text that parses back to the same value.
pub fn fuzz_sip_message(data: &[u8]) {
    use crate::sip::message::{CSeq, ContactList, NameAddr, SipMessage, Via};
    use crate::sip::parse::{parse_message, parse_message_with, validate_request, validate_response, ParseOptions};
    use crate::sip::uri::Uri;

    let Ok(msg) = parse_message(data) else {
        let _ = parse_message_with(data, &ParseOptions { any_version: true, ..ParseOptions::default() });
        return;
    };
    match &msg {
        SipMessage::Request(r) => {
            let _ = validate_request(r);
            let uri: Uri = r.uri.to_string().parse().expect("a printed Request-URI parses");
            assert_eq!(uri, r.uri, "Request-URI does not survive printing");
        }
        SipMessage::Response(r) => {
            let _ = validate_response(r);
        }
    }
    let h = msg.headers();
    let _ = (h.top_via(), h.call_id(), h.max_forwards(), h.expires(), h.min_expires(), h.content_length());
    for via in h.vias().unwrap_or_default() {
        assert_eq!(Via::parse(via.to_string().as_bytes()).as_ref(), Ok(&via), "Via does not survive printing");
        let _ = (via.branch(), via.received_ip(), via.rport());
    }
    let mut addrs: Vec<NameAddr> = [h.from_header(), h.to_header()].into_iter().flatten().collect();
    addrs.extend(h.routes().unwrap_or_default());
    addrs.extend(h.record_routes().unwrap_or_default());
    if let Ok(ContactList::Bindings(list)) = h.contacts() {
        addrs.extend(list);
    }
    for a in addrs {
        assert_eq!(NameAddr::parse(a.to_string().as_bytes()).as_ref(), Ok(&a), "name-addr does not survive printing");
        let _ = (a.tag(), a.expires(), a.uri.equivalent(&a.uri));
    }
    if let Ok(cseq) = h.cseq() {
        assert_eq!(CSeq::parse(cseq.to_string().as_bytes()).as_ref(), Ok(&cseq));
    }
    let printed = msg.to_bytes();
    let reparsed = parse_message(&printed).expect("a printed message parses");
    assert_eq!(reparsed.to_bytes(), printed, "printing is not stable");
    assert_eq!(reparsed.body(), msg.body(), "the body changed");
}

/// Fuzz body: the first byte picks a chunking, the rest is a TCP byte stream. Checks that the
/// framer never panics and that the messages and errors it finds do not depend on how the
/// stream was cut into reads (keep-alives may: a split CRLFCRLF reads as pong then ping).
pub fn fuzz_sip_stream(data: &[u8]) {
    use crate::sip::framing::{Framed, FramingError, StreamFramer};

    let Some((&mode, stream)) = data.split_first() else { return };
    let keep = |r: &Result<Framed, FramingError>| !matches!(r, Ok(Framed::KeepAlivePing | Framed::KeepAlivePong));
    let mut whole = StreamFramer::new(2048);
    whole.push(stream);
    let expected: Vec<_> = std::iter::from_fn(|| whole.next()).filter(keep).collect();

    let mut chunked = StreamFramer::new(2048);
    let mut got = Vec::new();
    let mut rest = stream;
    let mut k = usize::from(mode);
    while !rest.is_empty() {
        let n = if mode & 1 == 1 { 1 } else { 1 + (k * 31 + 7) % 97 };
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        chunked.push(chunk);
        got.extend(std::iter::from_fn(|| chunked.next()).filter(keep));
        rest = tail;
        k += 1;
    }
    assert_eq!(got, expected, "framing depends on how the stream is cut");
    for item in expected {
        if let Ok(Framed::Message(bytes)) = item {
            let _ = crate::sip::parse::parse_message(&bytes);
        }
    }
}

/// Fuzz body: any bytes as a SIP peer's SDP offer. Checks that parsing never panics, and that the
/// answer we would build from it (codec intersection, RFC 3264 §6.1 directions, rejected lines,
/// an SDES answer key) is SDP we parse back to the same media count, ports, codecs, directions
/// and crypto.
pub fn fuzz_sip_sdp(data: &[u8]) {
    use crate::media::sdp::{
        answer_direction, intersect, Codec, Direction, LocalMedia, LocalSession, MediaKind, Proto, SessionDescription,
    };
    use crate::media::srtp::CryptoAttribute;

    let Ok(offer) = SessionDescription::parse(data) else { return };
    let supported = [
        Codec::opus(111),
        Codec::g722(),
        Codec::pcmu(),
        Codec::pcma(),
        Codec::telephone_event(101),
        Codec::vp8(96),
        Codec::h264(97, None),
    ];
    let mut rng = crate::rng::Rng::new([3; 32]);
    let mut media = Vec::new();
    for (i, m) in offer.media.iter().enumerate() {
        let _ = (offer.rtp_addr(m), offer.rtcp_addr(m, m.rtcp_mux), offer.effective_direction(m));
        let codecs = intersect(&m.codecs(), &supported);
        let crypto = m.usable_crypto();
        if m.is_rejected()
            || !m.proto.is_rtp()
            || codecs.is_empty()
            || matches!(m.kind, MediaKind::Other(_))
            || (m.proto.is_secure() && crypto.is_none())
        {
            media.push(LocalMedia::rejected(m));
            continue;
        }
        let mut l = LocalMedia::new(m.kind.clone(), 20000 + 2 * i as u16, codecs);
        l.direction = answer_direction(offer.effective_direction(m), Direction::SendRecv);
        l.rtcp_mux = m.rtcp_mux;
        l.ptime = m.ptime;
        if let (true, Some(c)) = (m.proto.is_secure(), crypto) {
            l.proto = Proto::RtpSavp;
            l.crypto = vec![CryptoAttribute::answer(c, &mut rng)];
        }
        media.push(l);
    }
    let address = offer.connection.unwrap_or(std::net::IpAddr::from([192, 0, 2, 1]));
    let local = LocalSession { username: "-".into(), session_name: "sylkgw".into(), address, media };
    let text = local.write(1, 2);
    let back = SessionDescription::parse(text.as_bytes()).expect("our own SDP parses");
    assert_eq!(back.media.len(), local.media.len(), "m= lines lost");
    for (b, l) in back.media.iter().zip(&local.media) {
        assert_eq!((b.port, &b.kind, &b.proto), (l.port, &l.kind, &l.proto), "m= line changed");
        if l.port != 0 {
            assert_eq!(b.codecs(), l.codecs, "codecs changed");
            assert_eq!(back.media_direction(b), l.direction, "direction changed");
            assert_eq!(b.crypto, l.crypto, "crypto changed");
            assert_eq!(b.rtcp_mux, l.rtcp_mux);
        }
    }
}

/// Fuzz body: the first byte picks the SRTP suite and timing, the rest is one datagram seen as
/// RTP, RTCP and SRTP/SRTCP, then as a stream of 8-byte records (seq, ts, SSRC choice, delay)
/// for the sequence rewriter and the reception statistics. Checks that nothing panics, that
/// rebuilt headers and RTCP reports parse back to the same fields, and that SRTP and SRTCP
/// round-trip any packet they accept.
pub fn fuzz_rtp_rtcp(data: &[u8]) {
    use crate::media::rtcp::{self, RtcpPacket};
    use crate::media::rtp::{self, RtpOut};
    use crate::media::srtp::{MasterKey, SrtpContext, SrtpProfile};

    let Some((&mode, pkt)) = data.split_first() else { return };
    let _ = (rtp::looks_like_rtcp(pkt), rtp::parse_header(pkt));
    let mut buf = vec![0u8; pkt.len() + 64];

    // RTP: rebuild a fresh header around the payload and parse it back.
    if let Ok(v) = rtp::parse(pkt) {
        let h = v.header;
        let _ = (v.csrcs().count(), v.extension());
        let out = RtpOut { marker: h.marker, pt: h.pt, seq: h.seq, ts: h.ts, ssrc: h.ssrc };
        let n = rtp::write_packet(&mut buf, &out, v.payload()).expect("room for a rebuilt packet");
        let back = rtp::parse(&buf[..n]).expect("a rebuilt packet parses");
        let b = back.header;
        assert_eq!((b.marker, b.pt, b.seq, b.ts, b.ssrc), (h.marker, h.pt, h.seq, h.ts, h.ssrc));
        assert_eq!(back.payload(), v.payload());
    }

    // RTCP: every SR/RR rebuilds to the same fields.
    let _ = (rtcp::validate_compound(pkt), rtcp::summarize(pkt));
    for p in rtcp::parse_compound(pkt).map_while(Result::ok) {
        let mut out = Vec::new();
        match p {
            RtcpPacket::SenderReport { ssrc, info, blocks } => {
                let blocks: Vec<_> = blocks.collect();
                rtcp::write_sr(&mut out, ssrc, &info, &blocks);
                let again = rtcp::parse_compound(&out).next().and_then(Result::ok);
                let Some(RtcpPacket::SenderReport { ssrc: s2, info: i2, blocks: b2 }) = again else {
                    panic!("a rebuilt SR does not parse")
                };
                assert_eq!((s2, i2, b2.collect::<Vec<_>>()), (ssrc, info, blocks));
            }
            RtcpPacket::ReceiverReport { ssrc, blocks } => {
                let blocks: Vec<_> = blocks.collect();
                rtcp::write_rr(&mut out, ssrc, &blocks);
                let again = rtcp::parse_compound(&out).next().and_then(Result::ok);
                let Some(RtcpPacket::ReceiverReport { ssrc: s2, blocks: b2 }) = again else {
                    panic!("a rebuilt RR does not parse")
                };
                assert_eq!((s2, b2.collect::<Vec<_>>()), (ssrc, blocks));
            }
            RtcpPacket::Bye { ssrcs, reason } => {
                let ssrcs: Vec<_> = ssrcs.collect();
                rtcp::write_bye(&mut out, &ssrcs, reason);
                assert_eq!(rtcp::validate_compound(&out), Err(rtcp::RtcpError::NotCompound));
                assert!(rtcp::summarize(&out).bye);
            }
            RtcpPacket::Fir { entries, .. } => {
                let _ = entries.count();
            }
            RtcpPacket::Pli { .. } | RtcpPacket::Other { .. } => {}
        }
    }

    // SRTP/SRTCP: foreign bytes never unprotect; our own protection round-trips.
    let profile = if mode & 1 == 0 { SrtpProfile::AesCm128HmacSha1_80 } else { SrtpProfile::AesCm128HmacSha1_32 };
    let key = MasterKey { key: [7; 16], salt: [9; 14] };
    let (Ok(mut tx), Ok(mut rx)) = (SrtpContext::new(profile, &key), SrtpContext::new(profile, &key)) else {
        panic!("context setup failed")
    };
    let mut copy = pkt.to_vec();
    let _ = rx.unprotect_rtp(&mut copy);
    let mut copy = pkt.to_vec();
    let _ = rx.unprotect_rtcp(&mut copy);
    buf[..pkt.len()].copy_from_slice(pkt);
    if let Ok(n) = tx.protect_rtp(&mut buf, pkt.len()) {
        let got = rx.unprotect_rtp(&mut buf[..n]).expect("our SRTP unprotects");
        assert_eq!(&buf[..got], pkt, "SRTP round trip changed the packet");
        assert_eq!(rx.unprotect_rtp(&mut buf[..n]), Err(crate::media::srtp::SrtpError::Replayed));
    }
    buf[..pkt.len()].copy_from_slice(pkt);
    if let Ok(n) = tx.protect_rtcp(&mut buf, pkt.len()) {
        let got = rx.unprotect_rtcp(&mut buf[..n]).expect("our SRTCP unprotects");
        assert_eq!(&buf[..got], pkt, "SRTCP round trip changed the packet");
    }

    // The rewriter and the statistics over a stream of records.
    let epoch = Instant::now();
    let mut now = epoch;
    let clock = [8000, 48000, 90000][usize::from(mode >> 1) % 3];
    let mut rewriter = rtp::SeqTsRewriter::new(u16::from(mode), u32::from(mode) << 8);
    let mut stats = rtcp::ReceiveStats::new(1, clock);
    let mut send = rtcp::SendStats::new(clock);
    let mut last_new = None;
    for r in pkt.chunks_exact(8) {
        let seq = u16::from_be_bytes([r[0], r[1]]);
        let ts = u32::from_be_bytes([r[2], r[3], r[4], r[5]]);
        let ssrc = u32::from(r[6] % 3);
        now += Duration::from_millis(u64::from(r[7]));
        if r[6] == 0xff {
            rewriter.reset_source();
        }
        if let Some(out) = rewriter.rewrite(now, ssrc, seq, ts, clock) {
            assert_eq!(out.seq, out.ext_seq as u16);
            if out.new_source {
                assert!(last_new.is_none_or(|l| out.ext_seq > l), "a new source went backwards");
                last_new = Some(out.ext_seq);
            }
            send.on_sent(now, out.ts, 160);
        }
        if ssrc == 1 {
            stats.on_rtp(now, seq, ts);
        }
        if r[7] > 250 {
            stats.on_sender_report(now, rtcp::ntp_from_unix(now - epoch));
            let blocks: Vec<_> = stats.report_block(now).into_iter().collect();
            let info = send.sender_info(now, now - epoch);
            let mut out = Vec::new();
            rtcp::write_report(&mut out, 9, info.as_ref(), &blocks, b"fuzz");
            assert_eq!(rtcp::validate_compound(&out), Ok(()));
        }
    }
}

// ===== Media sockets (the call layer's entry points, until requests trigger them) =====

/// `Gateway::request_rtp_pair` for tests: emits the two `Output::BindUdp` and returns the RTP
/// id, the RTCP id and the RTP port asked for (`None`: no free pair).
pub fn request_rtp_pair_for_test(gw: &mut Gateway) -> Option<(crate::SocketId, crate::SocketId, u16)> {
    gw.request_rtp_pair()
}

/// `Gateway::release_rtp_pair` for tests: closes the pair whose RTP id is `rtp`.
pub fn release_rtp_pair_for_test(gw: &mut Gateway, rtp: crate::SocketId) {
    gw.release_rtp_pair(rtp)
}

// ===== Stateful fuzzing of the whole gateway =====

/// Reads the fuzz input one byte at a time; past the end every read is 0.
struct ByteCursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl ByteCursor<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A number below `n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len())]
    }

    /// Up to `max` raw bytes, the count chosen by the first.
    fn bytes(&mut self, max: usize) -> &[u8] {
        let n = self.below(max + 1).min(self.data.len().saturating_sub(self.pos));
        let start = self.pos.min(self.data.len());
        self.pos += n;
        &self.data[start..start + n]
    }
}

/// What opened a stream connection the harness tracks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ConnKind {
    Web,
    SipTcp,
    /// The core asked for it with `Output::Connect`.
    Outgoing,
}

/// The harness' model of the runtime side, and the invariants checked against it.
struct GatewayHarness {
    gw: Gateway,
    epoch: Instant,
    now: Instant,
    deadline: Instant,
    /// Live stream connections.
    live: std::collections::BTreeMap<ConnId, ConnKind>,
    /// Every connection ever accepted or asked for.
    known: std::collections::BTreeSet<ConnId>,
    /// Connect requests not answered yet.
    connects: Vec<ConnId>,
    /// Resolve requests not answered yet.
    resolves: Vec<u64>,
    /// BindUdp requests not answered yet.
    binds: Vec<(crate::SocketId, crate::UdpPurpose, std::net::SocketAddr)>,
    /// Sockets the core may send from.
    bound: std::collections::BTreeSet<crate::SocketId>,
    /// Ids closed while their bind was unanswered: the answer is still given, then ignored.
    closed_pending: std::collections::BTreeSet<crate::SocketId>,
    /// RTP ids of pairs asked for with `request_rtp_pair`.
    rtp_pairs: Vec<crate::SocketId>,
    /// The last SIP requests the gateway sent (newest last).
    sip_requests: Vec<String>,
    /// Users of the Contacts the gateway registered.
    contact_users: Vec<String>,
    /// Call-IDs of INVITEs the harness sent.
    calls: Vec<String>,
    /// The last INVITEs the harness sent (for CANCEL).
    invites: Vec<String>,
    /// What each web connection was sent and has not been cut into frames yet; `None` once the
    /// connection got an HTTP answer other than 101 (no frames follow).
    web_rx: std::collections::BTreeMap<ConnId, Option<Vec<u8>>>,
    /// Sessions each web connection knows: ones it created, ones offered to it.
    sessions: std::collections::BTreeMap<(ConnId, String), SessionSeen>,
    /// Dialogs the far end can send requests in.
    far_dialogs: Vec<FarDialog>,
    counter: u32,
}

/// A session as the harness' client sees it.
struct SessionSeen {
    /// `terminated` arrived.
    ended: bool,
    /// The gateway's offer, for an incoming session.
    offer: Option<String>,
}

/// A dialog seen from the far end (header values carry their tags).
#[derive(Clone)]
struct FarDialog {
    call_id: String,
    /// The gateway's side (`To` of the far end's requests).
    gateway: String,
    /// The far end's side (`From` of its requests).
    far: String,
    /// Where requests go.
    target: String,
}

const FUZZ_SIP_SOCKET: crate::SocketId = crate::SocketId(0);
const FUZZ_WEBRTC_SOCKET: crate::SocketId = crate::SocketId(1);
const FUZZ_PROXY: ([u8; 4], u16) = ([192, 0, 2, 5], 5060);

impl GatewayHarness {
    fn new(proxy: &str) -> Option<Self> {
        use crate::UdpPurpose;
        let mut config = Config::default();
        config.sip.listen = ([192, 0, 2, 1], 5060).into();
        config.sip.outbound_sip_proxy = Some(proxy.to_string());
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
            counter: 0,
        };
        h.drain();
        let sip = h.gw.sip_listen();
        h.input(Input::UdpBound { socket: FUZZ_SIP_SOCKET, purpose: UdpPurpose::Sip, local: sip });
        let webrtc = h.gw.webrtc_listen();
        h.input(Input::UdpBound { socket: FUZZ_WEBRTC_SOCKET, purpose: UdpPurpose::WebRtc, local: webrtc });
        Some(h)
    }

    fn next_id(&mut self) -> u32 {
        self.counter += 1;
        self.counter
    }

    /// Feeds one input, drains, checks, and feeds `Timeout` while one is due.
    fn input(&mut self, input: Input<'_>) {
        self.gw.handle_input(self.now, input);
        self.drain();
        self.run_due_timers();
    }

    fn run_due_timers(&mut self) {
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
    fn drain(&mut self) {
        loop {
            match self.gw.poll_output() {
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
                Output::BindUdp { socket, purpose, local } => {
                    assert!(socket.0 >= 16, "BindUdp chose {socket}, below 16");
                    assert!(!self.bound.contains(&socket), "BindUdp names {socket}, which is bound");
                    self.binds.push((socket, purpose, local));
                }
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
    fn check_calls(&self) {
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
    fn forget(&mut self, conn: ConnId) {
        self.web_rx.remove(&conn);
        self.sessions.retain(|(c, _), _| *c != conn);
    }

    /// Cuts what a web connection was sent into WebSocket frames and checks each text event.
    fn saw_web(&mut self, conn: ConnId, data: &[u8]) {
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
    /// and none follows its `terminated`.
    fn saw_event(&mut self, conn: ConnId, text: &[u8]) {
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

    fn check_live(&self, conn: ConnId, what: &str) {
        assert!(self.known.contains(&conn), "invariant (c): {what} for {conn}, never accepted nor asked for");
        assert!(self.live.contains_key(&conn), "invariant (c): {what} for {conn} after it was closed");
    }

    /// Remembers a SIP request the gateway sent, for responses to echo.
    fn saw_sip(&mut self, data: &[u8]) {
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
    fn saw_sip_response(&mut self, text: &str) {
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
    fn far_dialog_from_invite(&mut self, req: &str, fork: u32) {
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

    fn add_far_dialog(&mut self, d: FarDialog) {
        if self.far_dialogs.iter().any(|x| x.call_id == d.call_id && x.gateway == d.gateway && x.far == d.far) {
            return;
        }
        if self.far_dialogs.len() == 8 {
            self.far_dialogs.remove(0);
        }
        self.far_dialogs.push(d);
    }

    fn live_of(&self, kind: ConnKind) -> Vec<ConnId> {
        self.live.iter().filter(|(_, k)| **k == kind).map(|(c, _)| *c).collect()
    }

    /// A live web connection chosen by the cursor.
    fn pick_web(&self, c: &mut ByteCursor<'_>) -> Option<ConnId> {
        let web = self.live_of(ConnKind::Web);
        (!web.is_empty()).then(|| *c.pick(&web))
    }

    fn send_text(&mut self, conn: ConnId, text: &str) {
        let frame = client_text_frame(text);
        self.input(Input::StreamData { conn, data: &frame });
    }

    /// Delivers SIP bytes: on a live SIP stream when the cursor says so and there is one,
    /// otherwise as a datagram on the SIP socket.
    fn deliver_sip(&mut self, c: &mut ByteCursor<'_>, msg: &[u8]) {
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

const FUZZ_ACCOUNTS: [&str; 5] = ["alice@example.com", "bob@sip.test", "carol@192.0.2.5", "dave", "é@x"];
const FUZZ_PASSWORDS: [&str; 4] = ["b1726872c344b6dc8365b774f8fd6412", "secret", "", "\u{0}\"\\"];

/// A sylkRTC request from the template list, fields chosen by the cursor.
fn fuzz_sylkrtc_text(c: &mut ByteCursor<'_>) -> String {
    let tr = c.byte();
    let account = *c.pick(&FUZZ_ACCOUNTS);
    match c.below(12) {
        0 => format!(r#"{{"sylkrtc":"ping","transaction":"{tr}"}}"#),
        1 | 2 => {
            let password = c.pick(&FUZZ_PASSWORDS).escape_default();
            format!(r#"{{"sylkrtc":"account-add","transaction":"{tr}","account":"{account}","password":"{password}"}}"#)
        }
        3 => format!(r#"{{"sylkrtc":"account-remove","transaction":"{tr}","account":"{account}"}}"#),
        4 | 5 => format!(r#"{{"sylkrtc":"account-register","transaction":"{tr}","account":"{account}"}}"#),
        6 => format!(r#"{{"sylkrtc":"account-unregister","transaction":"{tr}","account":"{account}"}}"#),
        7 => {
            let platform = c.pick(&["ios", "android", ""]);
            let silent = c.byte() & 1 == 1;
            format!(
                r#"{{"sylkrtc":"account-devicetoken","transaction":"{tr}","account":"{account}","token":"t{tr}","platform":"{platform}","device":"d","silent":{silent},"app":"com.example"}}"#
            )
        }
        8 => {
            let sdp = c.pick(&["v=0\\r\\nm=audio 9 UDP/TLS/RTP/SAVPF 111\\r\\n", "", "garbage", "v=0\\r\\n\\r\\n"]);
            let session = c.byte() % 4;
            format!(
                r#"{{"sylkrtc":"session-create","transaction":"{tr}","account":"{account}","session":"s{session}","uri":"sip:bob@example.com","sdp":"{sdp}"}}"#
            )
        }
        9 => format!(r#"{{"sylkrtc":"session-terminate","transaction":"{tr}","session":"s{}"}}"#, c.byte() % 4),
        10 => format!(r#"{{"sylkrtc":"{}","transaction":"{tr}"}}"#, c.pick(&["nope", "session-answer", "", "ack"])),
        _ => c.pick(&["{", "[]", "null", r#"{"sylkrtc":7}"#, r#"{"transaction":"1"}"#, "\u{feff}{}"]).to_string(),
    }
}

/// Header lines of `req` a response copies (Via, From, To, Call-ID, CSeq), To tagged.
fn fuzz_echo_headers(req: &str, tag: u32) -> String {
    let mut out = String::new();
    for line in req.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
        if ["via", "v", "from", "f", "call-id", "i", "cseq"].contains(&name.as_str()) {
            out.push_str(line);
            out.push_str("\r\n");
        } else if name == "to" || name == "t" {
            out.push_str(line);
            if !line.contains(";tag=") {
                out.push_str(&format!(";tag=fz{tag}"));
            }
            out.push_str("\r\n");
        }
    }
    out
}

/// A SIP message from the template list, fields chosen by the cursor.
fn fuzz_sip_text(h: &mut GatewayHarness, c: &mut ByteCursor<'_>) -> Vec<u8> {
    let n = h.next_id();
    match c.below(8) {
        0..=2 => {
            // A response to a request the gateway sent (a REGISTER, preferably).
            let pick = c.byte();
            let registers: Vec<&String> = h.sip_requests.iter().filter(|r| r.starts_with("REGISTER ")).collect();
            let req = if !registers.is_empty() && pick & 1 == 0 {
                registers[usize::from(pick >> 1) % registers.len()].clone()
            } else if !h.sip_requests.is_empty() {
                h.sip_requests[usize::from(pick >> 1) % h.sip_requests.len()].clone()
            } else {
                "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnone\r\n\
                 From: <sip:alice@example.com>;tag=a\r\nTo: <sip:alice@example.com>\r\nCall-ID: none\r\n\
                 CSeq: 1 REGISTER\r\n\r\n"
                    .to_string()
            };
            let echoed = fuzz_echo_headers(&req, n);
            let (code, extra) = match c.below(6) {
                0 | 1 => {
                    let expires = c.pick(&[0, 1, 30, 600, 3600]);
                    let contact = req
                        .split("\r\n")
                        .find(|l| l.to_ascii_lowercase().starts_with("contact:"))
                        .map(|l| format!("{l};expires={expires}\r\n"))
                        .unwrap_or_default();
                    (200, format!("{contact}Expires: {expires}\r\n"))
                }
                2 | 3 => {
                    let alg = c.pick(&["MD5", "SHA-256", "MD5-sess", "bogus"]);
                    let stale = c.byte() & 1 == 1;
                    (
                        401,
                        format!(
                            "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"n{n}\", algorithm={alg}, qop=\"auth\", stale={stale}\r\n"
                        ),
                    )
                }
                4 => (423, format!("Min-Expires: {}\r\n", c.pick(&[0, 60, 3600, 99999]))),
                _ => (*c.pick(&[500, 503, 403, 100, 183]), String::new()),
            };
            format!("SIP/2.0 {code} Fuzz\r\n{echoed}{extra}Content-Length: 0\r\n\r\n").into_bytes()
        }
        3 => format!(
            "OPTIONS sip:192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKo{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=o{n}\r\nTo: <sip:192.0.2.1>\r\n\
             Call-ID: opt{n}@fuzz\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes(),
        4 | 5 => {
            let user = match h.contact_users.is_empty() {
                true => "nobody".to_string(),
                false => h.contact_users[c.below(h.contact_users.len())].clone(),
            };
            let sdp = *c.pick(&[
                "v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
                "",
                "garbage\r\n",
            ]);
            fuzz_incoming_invite(h, n, &user, sdp)
        }
        6 => {
            let call = match h.calls.is_empty() {
                true => "nocall@fuzz".to_string(),
                false => h.calls[c.below(h.calls.len())].clone(),
            };
            format!(
                "BYE sip:x@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKb{n}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:caller@example.com>;tag=c{n}\r\nTo: <sip:x@example.com>;tag=g\r\n\
                 Call-ID: {call}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes()
        }
        _ => c.bytes(64).to_vec(),
    }
}

/// An INVITE from the far end to `user` (a registered Contact user, or not), remembered for
/// BYE and CANCEL.
fn fuzz_incoming_invite(h: &mut GatewayHarness, n: u32, user: &str, sdp: &str) -> Vec<u8> {
    let call = format!("call{n}@fuzz");
    h.calls.push(call.clone());
    let invite = format!(
        "INVITE sip:{user}@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKi{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@example.com>;tag=c{n}\r\nTo: <sip:{user}@example.com>\r\n\
         Call-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@192.0.2.5:5060>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    if h.invites.len() == 8 {
        h.invites.remove(0);
    }
    h.invites.push(invite.clone());
    invite.into_bytes()
}

/// The value of the first header of `msg` with one of `names` (lower case, compact forms too).
fn fuzz_header(msg: &str, names: &[&str]) -> Option<String> {
    msg.split("\r\n").skip(1).take_while(|l| !l.is_empty()).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        names.contains(&name.trim().to_ascii_lowercase().as_str()).then(|| value.trim().to_string())
    })
}

/// The URI inside a name-addr (`<…>`), or the value itself.
fn fuzz_addr_uri(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_string(),
        _ => value.split(';').next().unwrap_or_default().to_string(),
    }
}

/// A browser's offer (str0m's, as a web phone would send it), audio or audio and video, in the
/// direction the byte picks.
fn fuzz_browser_offer(pick: u8) -> String {
    const OFFER: &str = "v=0\r\no=str0m-0.25.0 3199069421313415948 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE Llc{bundle}\r\na=msid-semantic: WMS BjHabRKjHTSEDvgrdJOO\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 0 126\r\nc=IN IP4 0.0.0.0\r\n\
        a=candidate:fffeff7e32c583ef85edbb1a 1 udp 2130706175 127.0.0.1 50000 typ host\r\n\
        a=ice-ufrag:GX5GpifvBcXsLzzq\r\na=ice-pwd:9MfmQRVAU8vICAMaoUDfLb\r\na=ice-options:trickle\r\n\
        a=fingerprint:sha-256 8A:AF:C6:7E:4F:05:9F:30:B1:2E:B2:58:16:12:EF:D9:C1:4C:15:D3:08:89:B9:C3:0C:B9:95:2F:3A:17:F5:D7\r\n\
        a=setup:actpass\r\na=mid:Llc\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na={dir}\r\n\
        a=msid:BjHabRKjHTSEDvgrdJOO PTHesMVXGPEk16bTHUGO\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
        a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:126 telephone-event/8000\r\n\
        a=fmtp:126 0-16\r\na=ssrc:1716307424 cname:PTHesMVXGPEk16bTHUGO\r\n{video}";
    const VIDEO: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:GX5GpifvBcXsLzzq\r\na=ice-pwd:9MfmQRVAU8vICAMaoUDfLb\r\n\
        a=fingerprint:sha-256 8A:AF:C6:7E:4F:05:9F:30:B1:2E:B2:58:16:12:EF:D9:C1:4C:15:D3:08:89:B9:C3:0C:B9:95:2F:3A:17:F5:D7\r\n\
        a=setup:actpass\r\na=mid:Vv\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendrecv\r\n\
        a=msid:BjHabRKjHTSEDvgrdJOO VvHesMVXGPEk16bTHUGO\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n\
        a=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\na=rtpmap:102 H264/90000\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=ssrc:1716307425 cname:PTHesMVXGPEk16bTHUGO\r\n";
    let dir = ["sendrecv", "sendonly", "recvonly", "inactive"][usize::from(pick % 4)];
    let video = pick & 4 != 0;
    OFFER
        .replace("{dir}", dir)
        .replace("{bundle}", if video { " Vv" } else { "" })
        .replace("{video}", if video { VIDEO } else { "" })
}

/// A browser's answer to the gateway's `offer`: every m-line kept (port 0 stays 0), its first
/// format chosen.
fn fuzz_browser_answer(offer: &str) -> String {
    let mut sections = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in offer.split("\r\n") {
        if let Some(m) = line.strip_prefix("m=") {
            sections.extend(current.take());
            current = Some((m.to_string(), Vec::new()));
        } else if let Some((_, attrs)) = current.as_mut() {
            attrs.push(line);
        }
    }
    sections.extend(current);
    let mut mids = Vec::new();
    let mut body = String::new();
    for (m, attrs) in &sections {
        let parts: Vec<&str> = m.split(' ').collect();
        let (kind, port, pt) = (parts[0], parts.get(1).copied().unwrap_or("9"), parts.get(3).copied().unwrap_or("0"));
        body.push_str(&format!(
            "m={kind} {port} UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:fzuf\r\n\
             a=ice-pwd:fuzzfuzzfuzzfuzzfuzzfuzz\r\na=fingerprint:sha-256 \
             8A:AF:C6:7E:4F:05:9F:30:B1:2E:B2:58:16:12:EF:D9:C1:4C:15:D3:08:89:B9:C3:0C:B9:95:2F:3A:17:F5:D7\r\n\
             a=setup:active\r\na=sendrecv\r\na=rtcp-mux\r\n"
        ));
        for a in attrs {
            let keep = a.starts_with("a=mid:")
                || a.starts_with(&format!("a=rtpmap:{pt} "))
                || a.starts_with(&format!("a=fmtp:{pt} "));
            if keep {
                body.push_str(a);
                body.push_str("\r\n");
            }
            if let Some(mid) = a.strip_prefix("a=mid:") {
                mids.push(mid.to_string());
            }
        }
    }
    format!("v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\n{body}", mids.join(" "))
}

/// A SIP far end's SDP (offer or answer): codecs, port (0 rejects), direction and maybe video,
/// all picked by the cursor.
fn fuzz_far_sdp(c: &mut ByteCursor<'_>, n: u32) -> String {
    let port = *c.pick(&[30000, 0, 30002]);
    let (pts, maps) = *c.pick(&[
        ("0 101", "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"),
        ("8", ""),
        ("111 101", "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n"),
        ("9 0", ""),
        ("96", ""),
    ]);
    let dir = *c.pick(&["sendrecv", "sendonly", "recvonly", "inactive"]);
    let video = match c.byte() % 4 {
        0 => "m=video 30010 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack pli\r\n",
        1 => "m=video 0 RTP/AVP 96\r\n",
        _ => "",
    };
    format!(
        "v=0\r\no=far {n} {n} IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {pts}\r\n{maps}a={dir}\r\n{video}"
    )
}

/// One operation on calls, chosen by the cursor: a browser's session request (create with a
/// real offer, answer, update, trickle, DTMF, terminate), a far end's answer to an INVITE the
/// gateway sent (provisional, early media, 2xx with SDP on one of two forks, challenge, failure),
/// a request inside a dialog (BYE, re-INVITE, UPDATE, INFO, ACK, OPTIONS), CANCEL of an incoming
/// INVITE, an incoming INVITE with a full SDP, or RTP/RTCP on a media socket.
fn fuzz_call_op(h: &mut GatewayHarness, c: &mut ByteCursor<'_>) {
    use serde_json::json;
    let n = h.next_id();
    match c.below(7) {
        0 => {
            let Some(conn) = h.pick_web(c) else { return };
            let account = *c.pick(&FUZZ_ACCOUNTS);
            let session = format!("s{}", c.byte() % 4);
            let uri = *c.pick(&["bob@example.com", "sip:bob@example.com;transport=tcp", "+15551234", "x"]);
            let sdp = fuzz_browser_offer(c.byte());
            let key = (conn, session.clone());
            if h.sessions.get(&key).is_none_or(|s| s.ended) {
                h.sessions.insert(key, SessionSeen { ended: false, offer: None });
            }
            let req = json!({"sylkrtc": "session-create", "transaction": format!("c{n}"), "account": account,
                "session": session, "uri": uri, "sdp": sdp});
            h.send_text(conn, &req.to_string());
        }
        1 => {
            let known: Vec<(ConnId, String)> =
                h.sessions.iter().filter(|(_, s)| !s.ended).map(|(k, _)| k.clone()).collect();
            if known.is_empty() {
                return;
            }
            let (conn, session) = c.pick(&known).clone();
            let tr = format!("c{n}");
            let req = match c.below(7) {
                0 | 1 => {
                    let offer = h.sessions.get(&(conn, session.clone())).and_then(|s| s.offer.clone());
                    let sdp = offer.as_deref().map(fuzz_browser_answer).unwrap_or_else(|| "v=0\r\n".into());
                    let headers = match c.byte() % 3 {
                        0 => json!({"X-Fuzz": "1", "Via": "SIP/2.0/UDP evil", "Bad Name": "x\r\nInjected: 1"}),
                        _ => json!({}),
                    };
                    json!({"sylkrtc": "session-answer", "transaction": tr, "session": session, "sdp": sdp, "headers": headers})
                }
                2 => {
                    let sdp = fuzz_browser_offer(c.byte());
                    json!({"sylkrtc": "session-update", "transaction": tr, "session": session, "sdp": sdp})
                }
                3 => {
                    let candidates = match c.byte() % 2 {
                        0 => json!([]),
                        _ => json!([{"candidate": "candidate:1 1 udp 2130706431 192.0.2.99 50000 typ host",
                            "sdpMid": "Llc", "sdpMLineIndex": 0}]),
                    };
                    json!({"sylkrtc": "session-trickle", "transaction": tr, "session": session, "candidates": candidates})
                }
                4 => {
                    let tones = *c.pick(&["1", "123#", "A*", "x", ""]);
                    json!({"sylkrtc": "session-dtmf-info", "transaction": tr, "session": session, "tones": tones})
                }
                _ => json!({"sylkrtc": "session-terminate", "transaction": tr, "session": session}),
            };
            h.send_text(conn, &req.to_string());
        }
        2 => {
            let invites: Vec<String> = h.sip_requests.iter().filter(|r| r.starts_with("INVITE ")).cloned().collect();
            if invites.is_empty() {
                return;
            }
            let req = c.pick(&invites).clone();
            let fork = u32::from(c.byte() % 2);
            let echoed = fuzz_echo_headers(&req, fork);
            let contact = "Contact: <sip:far@192.0.2.5:5060>\r\n";
            let (code, extra, body) = match c.below(8) {
                0 => (100, String::new(), String::new()),
                1 => (180, contact.to_string(), String::new()),
                2 => (183, contact.to_string(), fuzz_far_sdp(c, n)),
                3 | 4 => (200, contact.to_string(), fuzz_far_sdp(c, n)),
                5 => (
                    407,
                    format!("Proxy-Authenticate: Digest realm=\"example.com\", nonce=\"i{n}\", qop=\"auth\"\r\n"),
                    String::new(),
                ),
                6 => (486, String::new(), String::new()),
                _ => (*c.pick(&[487, 480, 503, 302, 603, 488]), String::new(), String::new()),
            };
            if (101..300).contains(&code) {
                h.far_dialog_from_invite(&req, fork);
            }
            let ctype = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
            let msg =
                format!("SIP/2.0 {code} Fuzz\r\n{echoed}{extra}{ctype}Content-Length: {}\r\n\r\n{body}", body.len());
            h.deliver_sip(c, msg.as_bytes());
        }
        3 => {
            if h.far_dialogs.is_empty() {
                return;
            }
            let d = c.pick(&h.far_dialogs).clone();
            let method = *c.pick(&["BYE", "INVITE", "UPDATE", "INFO", "ACK", "OPTIONS", "INVITE", "BYE"]);
            let cseq = if method == "ACK" { 1 } else { 100 + n };
            let (ctype, body) = match method {
                "INVITE" | "UPDATE" => ("application/sdp", fuzz_far_sdp(c, n)),
                "INFO" => ("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n".to_string()),
                _ => ("", String::new()),
            };
            let ctype = if ctype.is_empty() { String::new() } else { format!("Content-Type: {ctype}\r\n") };
            let msg = format!(
                "{method} {} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKd{n}\r\nMax-Forwards: 70\r\n\
                 From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
                 Contact: <sip:far@192.0.2.5:5060>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
                d.target,
                d.far,
                d.gateway,
                d.call_id,
                body.len()
            );
            h.deliver_sip(c, msg.as_bytes());
        }
        4 => {
            if h.invites.is_empty() {
                return;
            }
            let invite = c.pick(&h.invites).clone();
            let mut msg = String::new();
            for (i, line) in invite.split("\r\n").enumerate() {
                if i == 0 {
                    msg.push_str(&line.replacen("INVITE", "CANCEL", 1));
                } else if line.is_empty() {
                    break;
                } else if line.starts_with("CSeq:") {
                    msg.push_str("CSeq: 1 CANCEL");
                } else if line.starts_with("Content-") || line.starts_with("Contact:") {
                    continue;
                } else {
                    msg.push_str(line);
                }
                msg.push_str("\r\n");
            }
            msg.push_str("Content-Length: 0\r\n\r\n");
            h.deliver_sip(c, msg.as_bytes());
        }
        5 => {
            let user = match h.contact_users.is_empty() {
                true => "nobody".to_string(),
                false => h.contact_users[c.below(h.contact_users.len())].clone(),
            };
            let sdp = fuzz_far_sdp(c, n);
            let msg = fuzz_incoming_invite(h, n, &user, &sdp);
            h.deliver_sip(c, &msg);
        }
        _ => {
            let sockets: Vec<crate::SocketId> = h.bound.iter().copied().filter(|s| *s != FUZZ_SIP_SOCKET).collect();
            if sockets.is_empty() {
                return;
            }
            let socket = *c.pick(&sockets);
            let from = *c.pick(&[([192, 0, 2, 5], 30000), ([198, 51, 100, 9], 7000), ([192, 0, 2, 5], 30001)]);
            let pt = *c.pick(&[0u8, 8, 101, 111, 96, 200, 201, 206]);
            let ssrc = 0x1122_3344u32 + u32::from(c.byte() % 2);
            let mut pkt = Vec::new();
            if pt >= 200 {
                // RTCP: SR, RR or PSFB (PLI), one packet, length in 32-bit words minus one.
                let words: u16 = match pt {
                    200 => 6,
                    201 => 1,
                    _ => 2,
                };
                pkt.extend_from_slice(&[if pt == 206 { 0x81 } else { 0x80 }, pt]);
                pkt.extend_from_slice(&words.to_be_bytes());
                pkt.extend_from_slice(&ssrc.to_be_bytes());
                pkt.resize(4 * (usize::from(words) + 1), c.byte());
            } else {
                let seq = (n as u16).wrapping_mul(u16::from(c.byte()) | 1);
                pkt.extend_from_slice(&[0x80, pt | (c.byte() & 0x80)]);
                pkt.extend_from_slice(&seq.to_be_bytes());
                pkt.extend_from_slice(&(n.wrapping_mul(160)).to_be_bytes());
                pkt.extend_from_slice(&ssrc.to_be_bytes());
                match pt {
                    101 => pkt.extend_from_slice(&[c.byte() % 16, c.byte(), 0, 160]),
                    _ => pkt.resize(12 + 160, c.byte()),
                }
            }
            h.input(Input::Datagram { socket, from: from.into(), data: &pkt });
        }
    }
}

/// The upgrade request in either dialect.
fn fuzz_upgrade(v1: bool) -> String {
    match v1 {
        true => UPGRADE_V2.replace("sylkRTC-2", "sylkRTC-1"),
        false => UPGRADE_V2.to_string(),
    }
}

/// Fuzz body: the bytes choose a sequence of operations against one whole [`Gateway`]: web
/// connections (upgrades, sylkRTC requests from templates, raw bytes, closes), SIP datagrams and
/// stream bytes from templates (responses echo the requests the gateway sent), answers to
/// `Resolve`/`Connect`/`BindUdp`, time passing and `Shutdown`, and calls ([`fuzz_call_op`]:
/// browser offers and answers, far-end answers on two forks, in-dialog requests, CANCEL,
/// incoming INVITEs, RTP/RTCP on media sockets). The first byte picks the outbound proxy (mostly
/// `192.0.2.5:5060`; sometimes over TCP, by name, or none). After every step it checks: no panic;
/// (b) a handled `Timeout` moves the deadline past `now`; (c) writes and closes name only live
/// connections the runtime accepted or the core asked for; (d) datagrams leave only from bound
/// sockets; (e) `stats()` counts no more connections than are live; (f) every session event
/// names a session its connection created or was offered, and nothing follows its `terminated`;
/// (g) no call outlives its WebSocket; (h) no two calls share a SIP leg and no two legs share a
/// dialog.
pub fn fuzz_gateway_ops(data: &[u8]) {
    let mut c = ByteCursor { data, pos: 0 };
    let proxy = match c.byte() % 8 {
        5 => "192.0.2.5:5060;transport=tcp",
        6 => "proxy.example:5060",
        7 => "proxy.example;transport=tcp",
        _ => "192.0.2.5:5060",
    };
    let Some(mut h) = GatewayHarness::new(proxy) else { return };
    let mut steps = 0;
    while !c.done() && steps < 256 {
        steps += 1;
        match c.below(16) {
            0 => {
                let conn = ConnId(u64::from(c.byte() % 6) + 1);
                if h.live.contains_key(&conn) {
                    continue;
                }
                let (listener, kind) = match conn.0 {
                    6 => (Listener::SipTcp, ConnKind::SipTcp),
                    _ => (Listener::Web, ConnKind::Web),
                };
                h.live.insert(conn, kind);
                h.known.insert(conn);
                let peer = ([203, 0, 113, conn.0 as u8], 40000).into();
                h.input(Input::Accepted { conn, listener, peer });
            }
            1 => {
                let v1 = c.byte().is_multiple_of(4);
                let Some(conn) = h.pick_web(&mut c) else { continue };
                h.input(Input::StreamData { conn, data: fuzz_upgrade(v1).as_bytes() });
            }
            2..=4 => {
                let text = fuzz_sylkrtc_text(&mut c);
                let Some(conn) = h.pick_web(&mut c) else { continue };
                h.send_text(conn, &text);
            }
            5 => {
                let conns: Vec<ConnId> = h.live.keys().copied().collect();
                if conns.is_empty() {
                    continue;
                }
                let conn = *c.pick(&conns);
                let raw = c.bytes(48).to_vec();
                h.input(Input::StreamData { conn, data: &raw });
            }
            6 => {
                let conns: Vec<ConnId> = h.live.keys().copied().collect();
                if conns.is_empty() {
                    continue;
                }
                let conn = *c.pick(&conns);
                h.forget(conn);
                h.live.remove(&conn);
                h.connects.retain(|x| *x != conn);
                h.input(Input::StreamClosed { conn });
            }
            7 | 8 => {
                let msg = fuzz_sip_text(&mut h, &mut c);
                h.deliver_sip(&mut c, &msg);
            }
            9 => fuzz_answer(&mut h, &mut c),
            10 | 11 => {
                let b = c.byte();
                let step = match b % 4 {
                    0 => Duration::from_millis(u64::from(b) * 10),
                    1 => Duration::from_secs(u64::from(b)),
                    2 => Duration::from_secs(u64::from(b) * 60),
                    // Straight to the deadline (the idle one is years away: checks it moves on).
                    _ => h.deadline.saturating_duration_since(h.now),
                };
                h.now += step;
                h.run_due_timers();
            }
            12 => {
                if c.byte() < 16 {
                    h.input(Input::Shutdown);
                } else {
                    fuzz_call_op(&mut h, &mut c);
                }
            }
            13 => {
                if c.byte() & 1 == 0 || h.rtp_pairs.is_empty() {
                    if let Some((rtp, _, _)) = request_rtp_pair_for_test(&mut h.gw) {
                        h.rtp_pairs.push(rtp);
                    }
                } else {
                    let rtp = h.rtp_pairs.remove(c.below(h.rtp_pairs.len()));
                    release_rtp_pair_for_test(&mut h.gw, rtp);
                }
                h.drain();
                h.run_due_timers();
            }
            _ => {
                let sockets: Vec<crate::SocketId> = h.bound.iter().copied().collect();
                let socket = *c.pick(&sockets);
                let data = c.bytes(64).to_vec();
                h.input(Input::Datagram { socket, from: ([198, 51, 100, 9], 7000).into(), data: &data });
            }
        }
    }
}

/// Answers one pending `Resolve`, `Connect` or `BindUdp`, success or failure by the cursor.
fn fuzz_answer(h: &mut GatewayHarness, c: &mut ByteCursor<'_>) {
    let ok = !c.byte().is_multiple_of(4);
    match c.below(3) {
        0 if !h.resolves.is_empty() => {
            let query = h.resolves.remove(c.below(h.resolves.len()));
            let result = match ok {
                true => Ok(vec![std::net::IpAddr::from(FUZZ_PROXY.0)]),
                false => Err(c.pick(&["NXDOMAIN", ""]).to_string()),
            };
            let result = if c.byte() == 0 { Ok(Vec::new()) } else { result };
            h.input(Input::Resolved { query, result });
        }
        1 if !h.connects.is_empty() => {
            let conn = h.connects.remove(c.below(h.connects.len()));
            if !ok {
                h.live.remove(&conn);
            }
            let result = if ok { Ok(()) } else { Err("connection refused".to_string()) };
            h.input(Input::Connected { conn, result });
        }
        _ if !h.binds.is_empty() => {
            let (socket, purpose, local) = h.binds.remove(c.below(h.binds.len()));
            let closed = h.closed_pending.remove(&socket);
            if ok {
                if !closed {
                    h.bound.insert(socket);
                }
                h.input(Input::UdpBound { socket, purpose, local });
            } else {
                h.input(Input::UdpBindFailed { socket, error: "address in use".into() });
            }
        }
        _ => {}
    }
}
