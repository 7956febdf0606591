//! Whole-gateway call simulation: the real `Gateway` (sylkRTC over WebSocket, SIP stack, call
//! layer, str0m browser legs, SIP-side media) between a str0m "browser" (full ICE, DTLS-SRTP, RTP
//! mode) and a scripted SIP far end, on a virtual clock with an in-memory network. Every byte the
//! gateway emits goes through its `Output`s, as a runtime would send it.
//!
//! What it proves: outgoing and incoming calls with the events of spec §3.3 in order; RTP both
//! ways through the bridge (payloads intact, payload types mapped, the SIP leg latched); BYE both
//! ways; busy; CANCEL by the caller (`487` + `missed-session`); decline with 486; the media
//! timeout; the WebSocket going away mid-call (BYE); `session-dtmf-info` (one INFO per digit);
//! a re-INVITE to hold from the SIP side answered through `update`/`session-update`.

#![allow(clippy::disallowed_methods)] // Instant::now is only the epoch of the virtual clock

use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input as RtcInput, Output as RtcOutput, Rtc, RtcConfig};
use sylkgw_core::capture;
use sylkgw_core::config::Config;
use sylkgw_core::media::rtp;
use sylkgw_core::media::sdp::SessionDescription;
use sylkgw_core::media::srtp::{CryptoAttribute, SrtpContext};
use sylkgw_core::media::webrtc::DtlsIdentity;
use sylkgw_core::test_exports::{client_text_frame, UPGRADE_V2};
use sylkgw_core::{ConnId, Gateway, Input, Listener, Output, SocketId, UdpPurpose};

const GW_SIP: &str = "127.0.0.1:5060";
const GW_WEBRTC: &str = "127.0.0.1:40000";
const FAR_SIP: &str = "127.0.0.1:5070";
const FAR_RTP: &str = "127.0.0.1:30000";
const BROWSER: &str = "127.0.0.1:50000";
const WS: ConnId = ConnId(1);
const LATENCY: Duration = Duration::from_millis(5);
const TELE: u8 = 126;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Datagram {
    at: Instant,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// A browser on str0m: full ICE (controlling against our ICE-lite), Opus, PCMU, telephone-event.
struct Browser {
    rtc: Rtc,
    mid: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    timeout: Instant,
    connected: bool,
    got: Vec<(u8, Vec<u8>)>,
    seq: u64,
}

impl Browser {
    fn config() -> RtcConfig {
        let mut config =
            RtcConfig::new().set_rtp_mode(true).clear_codecs().enable_opus(true, false).enable_pcmu(true, false);
        config.codec_config().add_config(
            TELE.into(),
            None,
            Codec::Tele,
            Frequency::EIGHT_KHZ,
            None,
            FormatParams::parse_line("0-16"),
        );
        config
    }

    fn new(now: Instant) -> Self {
        let mut rtc = Self::config().build(now);
        rtc.add_local_candidate(Candidate::host(addr(BROWSER), "udp").unwrap()).unwrap();
        Self { rtc, mid: None, pending: None, timeout: now, connected: false, got: Vec::new(), seq: 1 }
    }

    fn offer(&mut self) -> String {
        let mut api = self.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        self.mid = Some(mid);
        self.pending = Some(pending);
        offer.to_sdp_string()
    }

    fn accept_answer(&mut self, answer: &str) {
        let pending = self.pending.take().expect("an offer was made");
        self.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(answer).unwrap()).unwrap();
    }

    /// Answers the gateway's offer as a browser does (`a=setup:active`: the browser is the DTLS
    /// client).
    fn answer(&mut self, offer: &str) -> String {
        let offer = if self.mid.is_none() { offer.replace("a=setup:actpass", "a=setup:passive") } else { offer.into() };
        let answer = self.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
        let answer = answer.to_sdp_string();
        let mid = answer.lines().find_map(|l| l.strip_prefix("a=mid:")).unwrap().trim().to_string();
        self.mid = Some(Mid::from(mid.as_str()));
        answer
    }

    fn drain(&mut self, now: Instant, wire: &mut VecDeque<Datagram>) {
        loop {
            match self.rtc.poll_output().expect("browser poll") {
                RtcOutput::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
                RtcOutput::Transmit(t) => wire.push_back(Datagram {
                    at: now + LATENCY,
                    from: t.source,
                    to: t.destination,
                    data: t.contents.into(),
                }),
                RtcOutput::Event(Event::Connected) => self.connected = true,
                RtcOutput::Event(Event::RtpPacket(p)) => self.got.push((*p.header.payload_type, p.payload.to_vec())),
                RtcOutput::Event(_) => {}
            }
        }
    }

    fn send_rtp(&mut self, now: Instant, pt: u8, payload: &[u8], wire: &mut VecDeque<Datagram>) {
        let Some(mid) = self.mid else { return };
        let seq = self.seq;
        self.seq += 1;
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else { return };
        tx.write_rtp(RtpWrite::new(pt.into(), seq.into(), (seq * 160) as u32, now, payload));
        self.drain(now, wire);
        self.rtc.handle_input(RtcInput::Timeout(now)).unwrap();
        self.drain(now, wire);
    }
}

/// What the SIP far end does with an INVITE.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// 180, then 200 with a PCMU + telephone-event/101 answer.
    Answer,
    /// 183 with that SDP, then the 200 with the same SDP.
    EarlyMedia,
    /// 486 Busy Here.
    Busy,
    /// 180 only.
    Ring,
    /// 407 with a digest challenge, then (authenticated) as `Answer`.
    Challenge,
    /// As `Answer`, with SDES-SRTP (RTP/SAVP, the offer's tag-1 suite, a key of its own).
    AnswerSrtp,
}

struct Sim {
    gw: Gateway,
    now: Instant,
    deadline: Instant,
    browser: Browser,
    wire: VecDeque<Datagram>,
    /// Bound sockets of the gateway.
    sockets: BTreeMap<SocketId, SocketAddr>,
    /// Server → client WebSocket bytes not yet decoded, and the events decoded.
    ws_buf: Vec<u8>,
    events: Vec<Value>,
    ws_closed: bool,
    ws_open: bool,
    /// SIP the far end received, in order.
    sip_in: Vec<String>,
    /// RTP the far end received (pt, payload).
    far_rtp: Vec<(u8, Vec<u8>)>,
    /// Where the far end sends RTP (from the gateway's SDP).
    far_rtp_target: Option<SocketAddr>,
    script: Script,
    far_seq: u16,
    far_sends: bool,
    /// The far end's final response to send later (early media), and the INVITE it got last.
    far_sip_later: Option<String>,
    last_invite: Option<String>,
    /// SDES-SRTP of the far end: (its sending context, the gateway's).
    far_srtp: Option<(SrtpContext, SrtpContext)>,
    /// RTCP packets the far end received (decrypted when SRTP is on).
    far_rtcp: Vec<Vec<u8>>,
    transaction: u32,
}

fn test_cert() -> DtlsIdentity {
    str0m::crypto::from_feature_flags().dtls_provider.generate_certificate().expect("certificate").into()
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.split("\r\n")
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {name} in\n{msg}"))
}

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn reply(req: &str, code: u16, reason: &str, extra: &str, body: &str) -> String {
    let to = header(req, "To");
    let to = if to.contains(";tag=") || code == 100 { to.to_string() } else { format!("{to};tag=far1") };
    format!(
        "SIP/2.0 {code} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        header(req, "Via"),
        header(req, "From"),
        header(req, "Call-ID"),
        header(req, "CSeq"),
        body.len()
    )
}

fn far_sdp(direction: &str) -> String {
    format!(
        "v=0\r\no=far 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 101\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\n"
    )
}

/// The RTP address in an SDP body.
fn sdp_rtp_addr(sdp: &str) -> SocketAddr {
    let ip = sdp.lines().find_map(|l| l.strip_prefix("c=IN IP4 ")).unwrap().trim();
    let port = sdp.lines().find_map(|l| l.strip_prefix("m=audio ")).unwrap().split(' ').next().unwrap();
    addr(&format!("{ip}:{port}"))
}

impl Sim {
    fn new(script: Script) -> Self {
        Self::with_config(script, |_| {})
    }

    fn with_config(script: Script, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        config.sip.listen = addr(GW_SIP);
        config.sip.outbound_sip_proxy = Some(FAR_SIP.into());
        config.media.webrtc_listen = Some(addr(GW_WEBRTC));
        config.media.media_advertised_addresses = vec!["127.0.0.1".into()];
        config.media.rtp_ports = (20000, 20099);
        config.webrtc.dtls_cert = Some(test_cert());
        config.capture = true;
        tweak(&mut config);
        let now = Instant::now();
        let gw = Gateway::new(config, [7; 32], now, Duration::from_secs(1_700_000_000)).unwrap();
        let mut sim = Self {
            gw,
            now,
            deadline: now,
            browser: Browser::new(now),
            wire: VecDeque::new(),
            sockets: BTreeMap::new(),
            ws_buf: Vec::new(),
            events: Vec::new(),
            ws_closed: false,
            ws_open: false,
            sip_in: Vec::new(),
            far_rtp: Vec::new(),
            far_rtp_target: None,
            script,
            far_seq: 100,
            far_sends: true,
            far_sip_later: None,
            last_invite: None,
            far_srtp: None,
            far_rtcp: Vec::new(),
            transaction: 0,
        };
        sim.drain();
        sim.input(Input::UdpBound { socket: SocketId(1), purpose: UdpPurpose::Sip, local: addr(GW_SIP) });
        sim.sockets.insert(SocketId(1), addr(GW_SIP));
        sim.input(Input::UdpBound { socket: SocketId(2), purpose: UdpPurpose::WebRtc, local: addr(GW_WEBRTC) });
        sim.sockets.insert(SocketId(2), addr(GW_WEBRTC));
        sim.input(Input::Accepted { conn: WS, listener: Listener::Web, peer: addr("127.0.0.1:61000") });
        sim.input(Input::StreamData { conn: WS, data: UPGRADE_V2.as_bytes() });
        assert_eq!(sim.take_events()[0]["sylkrtc"], "ready-event");
        sim.request(
            r#"{"sylkrtc":"account-add","account":"alice@example.com","password":"b1726872c344b6dc8365b774f8fd6412"}"#,
        );
        sim
    }

    fn input(&mut self, input: Input<'_>) {
        self.gw.handle_input(self.now, input);
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            match self.gw.poll_output() {
                Output::Timeout(at) => {
                    self.deadline = at;
                    break;
                }
                Output::StreamWrite { conn, data } => {
                    assert_eq!(conn, WS);
                    self.ws_buf.extend_from_slice(&data);
                    self.decode_ws();
                }
                Output::StreamClose { conn } => {
                    assert_eq!(conn, WS);
                    self.ws_closed = true;
                }
                Output::BindUdp { socket, local, purpose } => {
                    self.sockets.insert(socket, local);
                    let now = self.now;
                    self.gw.handle_input(now, Input::UdpBound { socket, purpose, local });
                }
                Output::CloseUdp { socket } => {
                    self.sockets.remove(&socket);
                }
                Output::Datagram(t) => {
                    let from = self.sockets[&t.socket];
                    self.wire.push_back(Datagram { at: self.now + LATENCY, from, to: t.to, data: t.payload });
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
    }

    fn decode_ws(&mut self) {
        if !self.ws_open {
            let Some(end) = self.ws_buf.windows(4).position(|w| w == b"\r\n\r\n") else { return };
            assert!(self.ws_buf.starts_with(b"HTTP/1.1 101"));
            self.ws_buf.drain(..end + 4);
            self.ws_open = true;
        }
        loop {
            let b = &self.ws_buf;
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
            self.ws_buf.drain(..hdr + len);
            if opcode == 1 {
                self.events.push(serde_json::from_slice(&payload).unwrap());
            }
        }
    }

    fn request(&mut self, json: &str) -> Value {
        self.transaction += 1;
        let t = self.transaction.to_string();
        let mut v: Value = serde_json::from_str(json).unwrap();
        v["transaction"] = Value::String(t.clone());
        let frame = client_text_frame(&v.to_string());
        self.input(Input::StreamData { conn: WS, data: &frame });
        let i = self.events.iter().position(|e| e["transaction"] == t.as_str()).expect("an answer to the request");
        self.events.remove(i)
    }

    fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    /// Session `state` values received so far (taken).
    fn states(&mut self) -> Vec<String> {
        self.take_events()
            .into_iter()
            .filter(|e| e["sylkrtc"] == "session-event" && e["event"] == "state")
            .map(|e| e["state"].as_str().unwrap().to_string())
            .collect()
    }

    /// Runs the virtual world for `d`: the gateway's timers, the browser, the far end's media
    /// (a PCMU packet every 20 ms while it is answering), and the wire.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        let mut next_media = self.now;
        loop {
            let wire_at = self.wire.iter().map(|d| d.at).min();
            let mut t = end.min(self.deadline).min(self.browser.timeout).min(next_media);
            if let Some(w) = wire_at {
                t = t.min(w);
            }
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            if self.deadline <= self.now {
                self.input(Input::Timeout);
            }
            if self.browser.timeout <= self.now {
                self.browser.rtc.handle_input(RtcInput::Timeout(self.now)).unwrap();
                self.browser.drain(self.now, &mut self.wire);
            }
            if next_media <= self.now {
                next_media = self.now + Duration::from_millis(20);
                self.media_tick();
            }
            while let Some(i) = self.wire.iter().position(|d| d.at <= self.now) {
                let d = self.wire.remove(i).unwrap();
                self.deliver(d);
            }
            if self.now >= end {
                break;
            }
        }
    }

    fn media_tick(&mut self) {
        if self.browser.connected {
            let now = self.now;
            self.browser.send_rtp(now, 0, b"from-browser", &mut self.wire);
        }
        if let (Some(to), true) = (self.far_rtp_target, self.far_sends) {
            let mut buf = vec![0; 200];
            self.far_seq = self.far_seq.wrapping_add(1);
            let h =
                rtp::RtpOut { marker: false, pt: 0, seq: self.far_seq, ts: u32::from(self.far_seq) * 160, ssrc: 0xfa7 };
            let mut n = rtp::write_packet(&mut buf, &h, b"from-far-end").unwrap();
            if let Some((tx, _)) = &mut self.far_srtp {
                n = tx.protect_rtp(&mut buf, n).unwrap();
            }
            buf.truncate(n);
            self.wire.push_back(Datagram { at: self.now + LATENCY, from: addr(FAR_RTP), to, data: buf });
        }
    }

    fn deliver(&mut self, d: Datagram) {
        if d.to == addr(BROWSER) {
            let r = Receive::new(Protocol::Udp, d.from, d.to, &d.data).unwrap();
            self.browser.rtc.handle_input(RtcInput::Receive(self.now, r)).unwrap();
            self.browser.drain(self.now, &mut self.wire);
        } else if d.to == addr(FAR_SIP) {
            let text = String::from_utf8(d.data).unwrap();
            self.far_sip(text);
        } else if d.to == addr(FAR_RTP) {
            let mut data = d.data;
            if let Some((_, rx)) = &mut self.far_srtp {
                let n = rx.unprotect_rtp(&mut data).expect("SRTP from the gateway authenticates");
                data.truncate(n);
            }
            if let Ok(v) = rtp::parse(&data) {
                self.far_rtp.push((v.header.pt, v.payload().to_vec()));
            }
        } else if d.to == addr("127.0.0.1:30001") {
            let mut data = d.data;
            if let Some((_, rx)) = &mut self.far_srtp {
                let n = rx.unprotect_rtcp(&mut data).expect("SRTCP from the gateway authenticates");
                data.truncate(n);
            }
            self.far_rtcp.push(data);
        } else if let Some((&socket, _)) = self.sockets.iter().find(|(_, a)| **a == d.to) {
            self.input(Input::Datagram { socket, from: d.from, data: &d.data });
        }
    }

    fn far_send(&mut self, text: String) {
        self.wire.push_back(Datagram {
            at: self.now + LATENCY,
            from: addr(FAR_SIP),
            to: addr(GW_SIP),
            data: text.into_bytes(),
        });
    }

    /// The far end's SIP behaviour.
    fn far_sip(&mut self, text: String) {
        self.sip_in.push(text.clone());
        if text.starts_with("SIP/2.0") {
            return;
        }
        let method = text.split(' ').next().unwrap().to_string();
        match method.as_str() {
            "REGISTER" => {
                let contact = header(&text, "Contact").to_string();
                self.far_send(reply(&text, 200, "OK", &format!("Contact: {contact};expires=600\r\n"), ""));
            }
            "INVITE" if header(&text, "To").contains("tag=") => {
                // A re-INVITE from the gateway.
                self.far_send(reply(
                    &text,
                    200,
                    "OK",
                    "Contact: <sip:bob@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\n",
                    &far_sdp("sendrecv"),
                ));
            }
            "INVITE" => {
                self.last_invite = Some(text.clone());
                self.far_rtp_target = Some(sdp_rtp_addr(body(&text)));
                let contact = "Contact: <sip:bob@127.0.0.1:5070>\r\n";
                self.far_send(reply(&text, 100, "Trying", "", ""));
                match self.script {
                    Script::Answer => {
                        self.far_send(reply(&text, 180, "Ringing", contact, ""));
                        let extra = format!("{contact}Content-Type: application/sdp\r\n");
                        self.far_send(reply(&text, 200, "OK", &extra, &far_sdp("sendrecv")));
                    }
                    Script::EarlyMedia => {
                        let extra = format!("{contact}Content-Type: application/sdp\r\n");
                        self.far_send(reply(&text, 183, "Session Progress", &extra, &far_sdp("sendrecv")));
                        self.far_sip_later = Some(reply(&text, 200, "OK", &extra, &far_sdp("sendrecv")));
                    }
                    Script::Busy => self.far_send(reply(&text, 486, "Busy Here", "", "")),
                    Script::Ring => self.far_send(reply(&text, 180, "Ringing", contact, "")),
                    Script::Challenge if !text.contains("Proxy-Authorization:") => {
                        let challenge = "Proxy-Authenticate: Digest realm=\"example.com\", nonce=\"n0nce\", qop=\"auth\", algorithm=MD5\r\n";
                        self.far_send(reply(&text, 407, "Proxy Authentication Required", challenge, ""));
                    }
                    Script::Challenge => {
                        let extra = format!("{contact}Content-Type: application/sdp\r\n");
                        self.far_send(reply(&text, 200, "OK", &extra, &far_sdp("sendrecv")));
                    }
                    Script::AnswerSrtp => {
                        let offer = SessionDescription::parse(body(&text).as_bytes()).unwrap();
                        let gw = offer.media[0].crypto.iter().find(|c| c.tag == 1).expect("a tag-1 crypto").clone();
                        let mut rng = sylkgw_core::rng::Rng::new([5; 32]);
                        let ours = CryptoAttribute::answer(&gw, &mut rng);
                        self.far_srtp =
                            Some((SrtpContext::from_crypto(&ours).unwrap(), SrtpContext::from_crypto(&gw).unwrap()));
                        let sdp = far_sdp("sendrecv").replace("RTP/AVP", "RTP/SAVP") + &format!("a=crypto:{ours}\r\n");
                        let extra = format!("{contact}Content-Type: application/sdp\r\n");
                        self.far_send(reply(&text, 200, "OK", &extra, &sdp));
                    }
                }
            }
            "ACK" => {}
            "CANCEL" => {
                self.far_send(reply(&text, 200, "OK", "", ""));
                if let Some(invite) = self.last_invite.clone() {
                    self.far_send(reply(&invite, 487, "Request Terminated", "", ""));
                }
            }
            _ => self.far_send(reply(&text, 200, "OK", "", "")),
        }
    }
}

impl Sim {
    /// Runs until an event matches `pred` (at most `max`); returns every event taken meanwhile.
    fn until(&mut self, max: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let end = self.now + max;
        let mut seen = Vec::new();
        loop {
            seen.extend(self.take_events());
            if seen.iter().any(&pred) {
                return seen;
            }
            assert!(self.now < end, "timed out; events so far: {seen:#?}");
            self.run(Duration::from_millis(10));
        }
    }

    fn until_state(&mut self, state: &str) -> Vec<Value> {
        self.until(Duration::from_secs(10), |e| e["event"] == "state" && e["state"] == state)
    }

    /// The SIP requests the far end got with this method.
    fn far_requests(&self, method: &str) -> Vec<&String> {
        self.sip_in.iter().filter(|m| m.starts_with(&format!("{method} "))).collect()
    }

    /// Places a call from the browser and runs it up to `established`; returns the session id.
    fn outgoing_call(&mut self) -> String {
        let offer = self.browser.offer();
        let req = serde_json::json!({
            "sylkrtc": "session-create", "account": "alice@example.com", "session": "s1",
            "uri": "bob@example.com", "sdp": offer,
        });
        let ack = self.request(&req.to_string());
        assert_eq!(ack["sylkrtc"], "ack", "{ack}");
        let seen = self.until_state("accepted");
        let states: Vec<&str> = seen.iter().filter_map(|e| e["state"].as_str()).collect();
        if matches!(self.script, Script::Challenge | Script::AnswerSrtp) {
            assert_eq!(states, ["progress", "accepted"]);
        } else {
            assert_eq!(states, ["progress", "proceeding", "ringing", "accepted"]);
            assert_eq!(seen[1]["code"], 180);
        }
        let accepted = seen.last().unwrap();
        let answer = accepted["sdp"].as_str().expect("the first answer carries the SDP");
        assert!(accepted["call_id"].as_str().is_some_and(|c| !c.is_empty()));
        self.browser.accept_answer(answer);
        self.until_state("established");
        "s1".into()
    }

    fn terminated_reason(&mut self) -> String {
        let seen = self.until_state("terminated");
        seen.iter().find(|e| e["state"] == "terminated").unwrap()["reason"].as_str().unwrap().to_string()
    }
}

/// Audio-codec formats (PTs) on the m=audio line of an SDP.
fn audio_pts(sdp: &str) -> Vec<String> {
    let m = sdp.lines().find(|l| l.starts_with("m=audio")).unwrap();
    m.split(' ').skip(3).map(String::from).collect()
}

#[test]
fn outgoing_call_bridges_media_and_ends_with_local_bye() {
    let mut sim = Sim::new(Script::Answer);
    let session = sim.outgoing_call();
    // The SIP offer carried the browser's codecs we carry, at its numbers (Opus 111, PCMU 0,
    // telephone-event 126), and the browser's answer only what the far end accepted.
    let invite = sim.far_requests("INVITE")[0].clone();
    assert_eq!(audio_pts(body(&invite)), ["111", "0", "126"], "{invite}");
    assert!(header(&invite, "Max-Forwards") == "70");
    assert_eq!(sim.far_requests("ACK").len(), 1, "the 200 is ACKed");
    sim.run(Duration::from_secs(1));
    // Media both ways, payloads intact, PCMU at 0 on both sides.
    assert!(sim.far_rtp.len() > 20, "far end got {} packets", sim.far_rtp.len());
    assert!(sim.far_rtp.iter().all(|(pt, p)| *pt == 0 && p == b"from-browser"));
    let got = sim.browser.got.len();
    assert!(got > 20, "browser got {got} packets");
    assert!(sim.browser.got.iter().all(|(pt, p)| *pt == 0 && p == b"from-far-end"));
    // Hang up: BYE, then `terminated` once.
    let ack = sim.request(&format!(r#"{{"sylkrtc":"session-terminate","session":"{session}"}}"#));
    assert_eq!(ack["sylkrtc"], "ack");
    assert_eq!(sim.terminated_reason(), "200 OK");
    assert_eq!(sim.far_requests("BYE").len(), 1);
    sim.run(Duration::from_secs(1));
    assert!(sim.states().is_empty(), "terminated is sent once");
    let stats = sim.gw.stats();
    assert_eq!((stats.calls, stats.rtp_pairs), (0, 0), "{stats:?}");
    let err = sim.request(&format!(r#"{{"sylkrtc":"session-terminate","session":"{session}"}}"#));
    assert_eq!(err["error"], format!("Unknown session {session}"));
    sim.check_capture("call_outgoing_local_bye");
}

#[test]
fn remote_bye_terminates() {
    let mut sim = Sim::new(Script::Answer);
    sim.outgoing_call();
    let invite = sim.far_requests("INVITE")[0].clone();
    let bye = format!(
        "BYE sip:alice@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye1\r\nFrom: {};tag=far1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(&invite, "To"),
        header(&invite, "From"),
        header(&invite, "Call-ID")
    );
    sim.far_send(bye);
    assert_eq!(sim.terminated_reason(), "200 OK");
    assert!(sim.sip_in.iter().any(|m| m.starts_with("SIP/2.0 200 OK") && m.contains("BYE")));
    assert_eq!(sim.gw.stats().calls, 0);
    sim.check_capture("call_remote_bye");
}

#[test]
fn busy() {
    let mut sim = Sim::new(Script::Busy);
    let offer = sim.browser.offer();
    let req = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s1", "uri": "bob@example.com", "sdp": offer});
    assert_eq!(sim.request(&req.to_string())["sylkrtc"], "ack");
    assert_eq!(sim.terminated_reason(), "486 Busy Here");
    sim.run(Duration::from_millis(100));
    assert_eq!(sim.far_requests("ACK").len(), 1, "the 486 is ACKed");
    assert_eq!(sim.gw.stats().rtp_pairs, 0);
    sim.check_capture("call_busy");
}

#[test]
fn cancel_before_answer() {
    let mut sim = Sim::new(Script::Ring);
    let offer = sim.browser.offer();
    let req = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s1", "uri": "bob@example.com", "sdp": offer});
    assert_eq!(sim.request(&req.to_string())["sylkrtc"], "ack");
    sim.until_state("ringing");
    assert_eq!(sim.request(r#"{"sylkrtc":"session-terminate","session":"s1"}"#)["sylkrtc"], "ack");
    assert_eq!(sim.terminated_reason(), "487 Request Terminated");
    assert_eq!(sim.far_requests("CANCEL").len(), 1);
    sim.check_capture("call_cancel");
}

#[test]
fn early_media_then_200_sends_one_answer() {
    let mut sim = Sim::new(Script::EarlyMedia);
    let offer = sim.browser.offer();
    let req = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s1", "uri": "bob@example.com", "sdp": offer});
    assert_eq!(sim.request(&req.to_string())["sylkrtc"], "ack");
    let seen = sim.until_state("early-media");
    let early = seen.iter().find(|e| e["state"] == "early-media").unwrap();
    sim.browser.accept_answer(early["sdp"].as_str().unwrap());
    sim.until_state("established");
    sim.run(Duration::from_millis(500));
    assert!(!sim.browser.got.is_empty(), "early media reaches the browser");
    let ok = sim.far_sip_later.take().unwrap();
    sim.far_send(ok);
    let seen = sim.until_state("accepted");
    let accepted = seen.iter().find(|e| e["state"] == "accepted").unwrap();
    assert!(accepted.get("sdp").is_none(), "no second answer: {accepted}");
    sim.check_capture("call_early_media_then_200");
}

#[test]
fn dtmf_info_one_per_digit() {
    let mut sim = Sim::new(Script::Answer);
    let session = sim.outgoing_call();
    let ack = sim.request(&format!(r#"{{"sylkrtc":"session-dtmf-info","session":"{session}","digit":"123"}}"#));
    assert_eq!(ack["sylkrtc"], "ack");
    sim.run(Duration::from_secs(2));
    let infos = sim.far_requests("INFO");
    assert_eq!(infos.len(), 3);
    for (info, d) in infos.iter().zip(["1", "2", "3"]) {
        assert_eq!(header(info, "Content-Type"), "application/dtmf-relay");
        assert_eq!(body(info), format!("Signal={d}\r\nDuration=160\r\n"));
    }
    sim.check_capture("call_info_dtmf");
}

#[test]
fn media_timeout_hangs_up() {
    let mut sim = Sim::new(Script::Answer);
    sim.outgoing_call();
    sim.run(Duration::from_secs(1));
    sim.far_sends = false;
    let seen = sim.until(Duration::from_secs(40), |e| e["state"] == "terminated");
    let t = seen.iter().find(|e| e["state"] == "terminated").unwrap();
    assert_eq!(t["reason"], "408 Media Timeout");
    assert_eq!(sim.far_requests("BYE").len(), 1);
    sim.check_capture("call_media_timeout");
}

#[test]
fn websocket_gone_mid_call_sends_bye() {
    let mut sim = Sim::new(Script::Answer);
    sim.outgoing_call();
    sim.input(Input::StreamClosed { conn: WS });
    sim.run(Duration::from_secs(1));
    assert_eq!(sim.far_requests("BYE").len(), 1);
    assert_eq!(sim.gw.stats().calls, 0);
    sim.check_capture("call_websocket_gone");
}

impl Sim {
    /// Registers alice with the far end as registrar; returns the Contact user.
    fn register(&mut self) -> String {
        assert_eq!(sim_ack(self.request(r#"{"sylkrtc":"account-register","account":"alice@example.com"}"#)), "ack");
        self.until(Duration::from_secs(5), |e| e["state"] == "registered");
        let reg = self.far_requests("REGISTER")[0].clone();
        let contact = header(&reg, "Contact");
        contact.split("sip:").nth(1).unwrap().split('@').next().unwrap().to_string()
    }

    /// The far end calls alice; returns the INVITE sent.
    fn incoming_invite(&mut self, contact_user: &str) -> String {
        let invite = format!(
            "INVITE sip:{contact_user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\n\
             From: \"Bob\" <sip:bob@example.com>;tag=bobtag\r\nTo: <sip:alice@example.com>\r\nCall-ID: incoming-1@far\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:5070>\r\nMax-Forwards: 70\r\nX-Custom: hello\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{}",
            far_sdp("sendrecv").len(),
            far_sdp("sendrecv")
        );
        self.far_send(invite.clone());
        invite
    }
}

fn sim_ack(v: Value) -> String {
    v["sylkrtc"].as_str().unwrap().to_string()
}

#[test]
fn incoming_call_answered_with_media_then_remote_bye() {
    let mut sim = Sim::new(Script::Answer);
    let user = sim.register();
    let invite = sim.incoming_invite(&user);
    let seen = sim.until(Duration::from_secs(5), |e| e["event"] == "incoming-session");
    let inc = seen.iter().find(|e| e["event"] == "incoming-session").unwrap().clone();
    assert_eq!(inc["session"], sylkgw_core::call::incoming_session_id("incoming-1@far"));
    assert_eq!(inc["originator"]["uri"], "bob@example.com");
    assert_eq!(inc["originator"]["display_name"], "Bob");
    assert_eq!(inc["call_id"], "incoming-1@far");
    let offer = inc["sdp"].as_str().unwrap();
    assert_eq!(audio_pts(offer), ["0", "101"], "the browser is offered the SIP side's codecs at its numbers");
    assert!(sim.sip_in.iter().any(|m| m.starts_with("SIP/2.0 180 Ringing")));
    let answer = sim.browser.answer(offer);
    let session = inc["session"].as_str().unwrap().to_string();
    let req = serde_json::json!({"sylkrtc": "session-answer", "session": session, "sdp": answer});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    let seen = sim.until_state("established");
    assert!(seen.iter().any(|e| e["state"] == "accepted" && e.get("sdp").is_none()));
    let ok = sim.sip_in.iter().find(|m| m.starts_with("SIP/2.0 200 OK") && m.contains("INVITE")).unwrap().clone();
    sim.far_rtp_target = Some(sdp_rtp_addr(body(&ok)));
    assert_eq!(audio_pts(body(&ok)), ["0", "101"]);
    // ACK the 200.
    let ack = format!(
        "ACK sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack1\r\nFrom: {}\r\nTo: {}\r\nCall-ID: incoming-1@far\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(&invite, "From"),
        header(&ok, "To")
    );
    sim.far_send(ack);
    sim.run(Duration::from_secs(1));
    assert!(sim.far_rtp.len() > 20 && sim.far_rtp.iter().all(|(pt, p)| *pt == 0 && p == b"from-browser"));
    assert!(sim.browser.got.len() > 20 && sim.browser.got.iter().all(|(pt, p)| *pt == 0 && p == b"from-far-end"));
    let bye = format!(
        "BYE sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye2\r\nFrom: {}\r\nTo: {}\r\nCall-ID: incoming-1@far\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(&invite, "From"),
        header(&ok, "To")
    );
    sim.far_send(bye);
    assert_eq!(sim.terminated_reason(), "200 OK");
    sim.check_capture("call_incoming_answered");
}

#[test]
fn incoming_call_cancelled_is_missed() {
    let mut sim = Sim::new(Script::Answer);
    let user = sim.register();
    let invite = sim.incoming_invite(&user);
    sim.until(Duration::from_secs(5), |e| e["event"] == "incoming-session");
    let cancel = format!(
        "CANCEL sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\nFrom: {}\r\nTo: {}\r\nCall-ID: incoming-1@far\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(&invite, "From"),
        header(&invite, "To")
    );
    sim.far_send(cancel);
    let seen = sim.until(Duration::from_secs(5), |e| e["event"] == "missed-session");
    let t = seen.iter().find(|e| e["state"] == "terminated").expect("terminated before missed-session");
    assert_eq!(t["reason"], "487 Request Terminated");
    let missed = seen.iter().find(|e| e["event"] == "missed-session").unwrap();
    assert_eq!(missed["originator"]["uri"], "bob@example.com");
    assert!(sim.sip_in.iter().any(|m| m.starts_with("SIP/2.0 487")));
    sim.check_capture("call_incoming_missed");
}

#[test]
fn incoming_call_declined_with_486() {
    let mut sim = Sim::new(Script::Answer);
    let user = sim.register();
    sim.incoming_invite(&user);
    let seen = sim.until(Duration::from_secs(5), |e| e["event"] == "incoming-session");
    let session =
        seen.iter().find(|e| e["event"] == "incoming-session").unwrap()["session"].as_str().unwrap().to_string();
    let req = format!(r#"{{"sylkrtc":"session-terminate","session":"{session}"}}"#);
    assert_eq!(sim_ack(sim.request(&req)), "ack");
    assert_eq!(sim.terminated_reason(), "486 Busy Here");
    sim.run(Duration::from_millis(100));
    assert!(sim.sip_in.iter().any(|m| m.starts_with("SIP/2.0 486 Busy Here")));
    sim.check_capture("call_incoming_declined");
}

#[test]
fn decline_code_603_configurable() {
    let mut sim = Sim::with_config(Script::Answer, |c| c.decline_code = 603);
    let user = sim.register();
    sim.incoming_invite(&user);
    let seen = sim.until(Duration::from_secs(5), |e| e["event"] == "incoming-session");
    let session =
        seen.iter().find(|e| e["event"] == "incoming-session").unwrap()["session"].as_str().unwrap().to_string();
    assert_eq!(sim_ack(sim.request(&format!(r#"{{"sylkrtc":"session-terminate","session":"{session}"}}"#))), "ack");
    assert_eq!(sim.terminated_reason(), "603 Decline");
}

#[test]
fn session_errors() {
    let mut sim = Sim::new(Script::Answer);
    let offer = sim.browser.offer();
    let create = |session: &str, account: &str| {
        serde_json::json!({"sylkrtc": "session-create", "account": account, "session": session, "uri": "bob@example.com", "sdp": offer}).to_string()
    };
    assert_eq!(
        sim.request(&create("s1", "nobody@example.com"))["error"],
        "Unknown account specified: nobody@example.com"
    );
    assert_eq!(sim_ack(sim.request(&create("s1", "alice@example.com"))), "ack");
    assert_eq!(sim.request(&create("s1", "alice@example.com"))["error"], "Session ID s1 already in use");
    let answer = serde_json::json!({"sylkrtc": "session-answer", "session": "s1", "sdp": "v=0"}).to_string();
    assert_eq!(sim.request(&answer)["error"], "Cannot answer outgoing session s1");
    let bad = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s2", "uri": "bob@example.com", "sdp": "garbage"}).to_string();
    assert!(sim.request(&bad)["error"].as_str().unwrap().starts_with("Invalid SDP"));
    assert_eq!(
        sim.request(r#"{"sylkrtc":"session-trickle","session":"nope","candidates":[]}"#)["error"],
        "Unknown session nope"
    );
}

impl Sim {
    /// The far end re-INVITEs the call it answered (`dir` in its SDP), and ACKs the 200 that
    /// comes back once the browser has answered the `update`; returns the gateway's 200.
    fn far_reinvite(&mut self, session: &str, dir: &str, cseq: u32) -> String {
        let invite = self.far_requests("INVITE")[0].clone();
        let sdp = far_sdp(dir);
        let reinvite = format!(
            "INVITE sip:alice@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKre{cseq}\r\nFrom: {};tag=far1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:bob@127.0.0.1:5070>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            header(&invite, "To"),
            header(&invite, "From"),
            header(&invite, "Call-ID"),
            sdp.len()
        );
        self.far_send(reinvite);
        let seen = self.until(Duration::from_secs(5), |e| e["event"] == "update");
        let update = seen.iter().find(|e| e["event"] == "update").unwrap();
        assert_eq!(update["state"], "received");
        let answer = self.browser.answer(update["sdp"].as_str().unwrap());
        let req = serde_json::json!({"sylkrtc": "session-update", "session": session, "sdp": answer});
        assert_eq!(sim_ack(self.request(&req.to_string())), "ack");
        self.run(Duration::from_millis(50));
        let ok = self
            .sip_in
            .iter()
            .rev()
            .find(|m| m.starts_with("SIP/2.0 200 OK") && header(m, "CSeq") == format!("{cseq} INVITE"))
            .expect("a 200 for the re-INVITE")
            .clone();
        let ack = format!(
            "ACK sip:alice@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack{cseq}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            header(&ok, "From"),
            header(&ok, "To"),
            header(&ok, "Call-ID")
        );
        self.far_send(ack);
        ok
    }
}

#[test]
fn hold_and_resume_from_the_sip_side() {
    let mut sim = Sim::new(Script::Answer);
    let session = sim.outgoing_call();
    sim.run(Duration::from_millis(500));
    let ok = sim.far_reinvite(&session, "sendonly", 2);
    assert!(body(&ok).contains("a=recvonly"), "we answer hold with recvonly:\n{ok}");
    sim.run(Duration::from_millis(300));
    // On hold: nothing goes to the far end any more, its media still reaches the browser.
    let (far, browser) = (sim.far_rtp.len(), sim.browser.got.len());
    sim.run(Duration::from_secs(1));
    assert_eq!(sim.far_rtp.len(), far, "no media towards the holding party");
    assert!(sim.browser.got.len() > browser + 20);
    let ok = sim.far_reinvite(&session, "sendrecv", 3);
    assert!(body(&ok).contains("a=sendrecv"), "{ok}");
    sim.run(Duration::from_secs(1));
    assert!(sim.far_rtp.len() > far + 20, "media flows again after resume");
    assert!(sim.states().is_empty(), "no state change during updates");
    sim.check_capture("call_reinvite_remote_hold");
}

#[test]
fn hold_from_the_browser_is_a_reinvite() {
    let mut sim = Sim::new(Script::Answer);
    let session = sim.outgoing_call();
    let mid = sim.browser.mid.unwrap();
    let mut api = sim.browser.rtc.sdp_api();
    api.set_direction(mid, Direction::SendOnly);
    let (offer, pending) = api.apply().unwrap();
    sim.browser.pending = Some(pending);
    let req = serde_json::json!({"sylkrtc": "session-update", "session": session, "sdp": offer.to_sdp_string()});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    let seen = sim.until(Duration::from_secs(5), |e| e["event"] == "update");
    let update = seen.iter().find(|e| e["event"] == "update").unwrap();
    assert_eq!(update["state"], "accepted");
    sim.browser.accept_answer(update["sdp"].as_str().unwrap());
    let reinvites: Vec<&String> = sim.far_requests("INVITE").into_iter().skip(1).collect();
    assert_eq!(reinvites.len(), 1);
    assert!(body(reinvites[0]).contains("a=sendonly"), "{}", reinvites[0]);
    assert!(header(reinvites[0], "To").contains("tag=far1"), "in the dialog");
    sim.run(Duration::from_millis(100));
    assert_eq!(sim.far_requests("ACK").len(), 2, "the re-INVITE's 200 is ACKed");
    sim.check_capture("call_reinvite_local_hold");
}

impl Sim {
    /// Checks the gateway's capture of this run: it replays to the same record (str0m's random
    /// SDP parts masked), and with `WRITE_CAPTURES=1` it becomes `tests/captures/<name>.cap`
    /// (replayed by `tests/replay.rs`).
    fn check_capture(&mut self, name: &str) {
        let text = self.gw.take_capture();
        let cap = capture::parse(&text).expect("the capture parses");
        let got = capture::replay(&cap, Instant::now()).expect("replay");
        let (want, got) = (capture::mask_media(&text), capture::mask_media(&got));
        if want != got {
            let first = want.lines().zip(got.lines()).position(|(a, b)| a != b).unwrap_or(0);
            let show = |t: &str| t.lines().skip(first.saturating_sub(2)).take(6).collect::<Vec<_>>().join("\n");
            panic!(
                "{name}: replay differs at line {}:\n--- capture\n{}\n+++ replay\n{}",
                first + 1,
                show(&want),
                show(&got)
            );
        }
        assert!(!text.contains("udp:2<"), "no media in captures");
        if std::env::var_os("WRITE_CAPTURES").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures").join(format!("{name}.cap"));
            std::fs::write(path, text).unwrap();
        }
    }
}

#[test]
fn outgoing_call_after_407() {
    let mut sim = Sim::new(Script::Challenge);
    sim.outgoing_call();
    let invites = sim.far_requests("INVITE");
    assert_eq!(invites.len(), 2);
    assert!(invites[1].contains("Proxy-Authorization: Digest"));
    assert_eq!(sim.far_requests("ACK").len(), 2, "the 407 and the 200 are ACKed");
    sim.run(Duration::from_millis(200));
    assert!(!sim.browser.got.is_empty());
    sim.check_capture("call_407_then_ok");
}

#[test]
fn sdes_srtp_mandatory_both_ways_with_srtcp() {
    let mut sim = Sim::with_config(Script::AnswerSrtp, |c| c.sdes_srtp = sylkgw_core::config::SdesMode::Mandatory);
    sim.outgoing_call();
    let invite = sim.far_requests("INVITE")[0].clone();
    let offer = body(&invite);
    assert!(offer.contains("m=audio 20000 RTP/SAVP 111 0 126"), "{offer}");
    assert!(
        offer.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:")
            && offer.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:")
    );
    sim.run(Duration::from_secs(6));
    // Decrypted and authenticated on both sides (the far end's contexts panic otherwise).
    assert!(sim.far_rtp.len() > 100 && sim.far_rtp.iter().all(|(pt, p)| *pt == 0 && p == b"from-browser"));
    assert!(sim.browser.got.len() > 100 && sim.browser.got.iter().all(|(pt, p)| *pt == 0 && p == b"from-far-end"));
    // Our RTCP (SRTCP here) every 5 s: an SR (we send) with the far end's report block, and SDES.
    assert!(!sim.far_rtcp.is_empty(), "an RTCP report within 6 s");
    let summary = sylkgw_core::media::rtcp::summarize(&sim.far_rtcp[0]);
    assert!(summary.sender_report.is_some(), "an SR: {:?}", sim.far_rtcp[0]);
    sim.check_capture("call_sdes_srtp");
}

#[test]
fn sdes_mandatory_refuses_a_plain_answer() {
    let mut sim = Sim::with_config(Script::Answer, |c| c.sdes_srtp = sylkgw_core::config::SdesMode::Mandatory);
    let offer = sim.browser.offer();
    let req = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s1", "uri": "bob@example.com", "sdp": offer});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    assert_eq!(sim.terminated_reason(), "488 Not Acceptable Here");
    sim.run(Duration::from_millis(200));
    assert_eq!(sim.far_requests("BYE").len(), 1, "the answered call is hung up");
}

/// The browser never completes ICE/DTLS (it drops our answer): the call does not hang forever;
/// a media timeout after the answer it ends, with BYE (found by the load benchmark: calls that
/// never reached `established` under overload were never reported).
#[test]
fn browser_never_connects_times_out() {
    let mut sim = Sim::new(Script::Answer);
    let offer = sim.browser.offer();
    let req = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s1", "uri": "bob@example.com", "sdp": offer});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    sim.until_state("accepted");
    let seen = sim.until(Duration::from_secs(40), |e| e["state"] == "terminated");
    assert_eq!(seen.iter().find(|e| e["state"] == "terminated").unwrap()["reason"], "408 Media Timeout");
    sim.run(Duration::from_millis(100));
    assert_eq!(sim.far_requests("BYE").len(), 1);
    assert_eq!(sim.gw.stats().calls, 0);
    sim.check_capture("call_browser_never_connects");
}

/// `headers` of `session-create` go into the INVITE and those of `session-answer` into the 200;
/// names that are not tokens or belong to the stack (Via, Call-ID, …) are dropped.
#[test]
fn custom_headers_out_both_ways() {
    let mut sim = Sim::new(Script::Answer);
    let offer = sim.browser.offer();
    let headers = serde_json::json!([
        {"name": "X-Account-Tag", "value": "blue"},
        {"name": "Via", "value": "SIP/2.0/UDP evil"},
        {"name": "X-Bad\r\nInjected", "value": "1"},
    ]);
    let req = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s1",
        "uri": "bob@example.com", "sdp": offer, "headers": headers});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    sim.until_state("accepted");
    let invite = sim.far_requests("INVITE")[0].clone();
    assert_eq!(header(&invite, "X-Account-Tag"), "blue");
    assert!(!invite.contains("evil") && !invite.contains("Injected"), "{invite}");

    let mut sim = Sim::new(Script::Answer);
    let user = sim.register();
    sim.incoming_invite(&user);
    let seen = sim.until(Duration::from_secs(5), |e| e["event"] == "incoming-session");
    let inc = seen.iter().find(|e| e["event"] == "incoming-session").unwrap().clone();
    assert!(inc["headers"].is_null() || inc["headers"] == serde_json::json!({}), "no prefixes: no headers: {inc}");
    let answer = sim.browser.answer(inc["sdp"].as_str().unwrap());
    let req = serde_json::json!({"sylkrtc": "session-answer", "session": inc["session"], "sdp": answer,
        "headers": [{"name": "X-Answered-By", "value": "web"}, {"name": "CSeq", "value": "1 BYE"}]});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    sim.run(Duration::from_millis(100));
    let ok = sim.sip_in.iter().find(|m| m.starts_with("SIP/2.0 200 OK") && m.contains("INVITE")).unwrap();
    assert_eq!(header(ok, "X-Answered-By"), "web");
    assert_eq!(header(ok, "CSeq"), "1 INVITE");
}
