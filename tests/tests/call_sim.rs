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
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::media::Direction;
use sylkgw_core::capture;
use sylkgw_core::config::Config;
use sylkgw_core::media::rtp;
use sylkgw_core::media::sdp::SessionDescription;
use sylkgw_core::media::srtp::{CryptoAttribute, SrtpContext};
use sylkgw_core::{ConnId, Input};
use sylkgw_tests::gateway_sim::{
    self, addr, reply, sdp_addr_of, sdp_rtp_addr, BindAnswer, GatewaySim, World, FAR_SIP, HA1, LATENCY,
};
use sylkgw_tests::sip_text::{body, header};
use sylkgw_tests::webrtc_client::{m_line, section, Datagram, Video, WebRtcClient as Browser, H264, H264_FMTP, VP8};

const FAR_RTP: &str = "127.0.0.1:30000";
const BROWSER: &str = "127.0.0.1:50000";
const WS: ConnId = ConnId(1);

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
    /// As `Answer`, with video: VP8 at the far end's own number [`FAR_VP8`] on [`FAR_VIDEO`].
    AnswerVideo,
    /// As `Answer`, refusing the offered video (`m=video 0`).
    AnswerVideoRejected,
    /// A reliable 183 with SDP (`Require: 100rel`, `RSeq: 7`), sent twice; the 200 once the
    /// PRACK came (RFC 3262).
    Reliable,
}

/// The far end's VP8 payload type (not the browser's 96: the gateway maps them).
const FAR_VP8: u8 = 100;
const FAR_VIDEO: &str = "127.0.0.1:30002";
const FAR_VIDEO_RTCP: &str = "127.0.0.1:30003";

struct Sim {
    net: GatewaySim,
    browser: Browser,
    /// The browser's next RTP sequence number (audio).
    browser_seq: u64,
    /// The browser's video codecs (its offers carry video unless none).
    browser_video: Video,
    /// The answer the browser got in `accepted` ([`Sim::outgoing_call`]).
    browser_answer: Option<String>,
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
    /// Video RTP the far end received (pt, payload), and video RTCP.
    far_video: Vec<(u8, Vec<u8>)>,
    /// The sequence number of each of `far_video`.
    far_video_seq: Vec<u16>,
    /// The SSRC of the gateway's video towards the far end.
    far_video_ssrc: Option<u32>,
    far_video_rtcp: Vec<Vec<u8>>,
    /// Where the far end sends video RTP (from the gateway's SDP).
    far_video_target: Option<SocketAddr>,
    /// The browser's next video sequence number.
    browser_video_seq: u64,
    /// The payload type the browser sends video with ([`VP8`] unless a test answers another).
    browser_video_pt: u8,
}

/// The far end's SDP on [`FAR_RTP`] with `direction`.
fn far_sdp(direction: &str) -> String {
    gateway_sim::far_sdp(30000, direction)
}

impl Sim {
    fn new(script: Script) -> Self {
        Self::with_config(script, |_| {})
    }

    fn with_config(script: Script, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::with_binding(script, BindAnswer::AtOnce, tweak)
    }

    /// With RTP pairs bound as `bind` says. `AfterDrain` keeps a capture replayable when the
    /// input that asks for the pair also moves the next deadline (the replay drains to the
    /// timer before it feeds the binds).
    fn with_binding(script: Script, bind: BindAnswer, tweak: impl FnOnce(&mut Config)) -> Self {
        let net = GatewaySim::new([7; 32], bind, tweak);
        let mut sim = Self {
            browser: Browser::browser(net.now, addr(BROWSER), Video::None),
            net,
            browser_seq: 0,
            browser_video: Video::None,
            browser_answer: None,
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
            far_video: Vec::new(),
            far_video_seq: Vec::new(),
            far_video_ssrc: None,
            far_video_rtcp: Vec::new(),
            far_video_target: None,
            browser_video_seq: 0,
            browser_video_pt: VP8,
        };
        sim.net.open_ws(WS);
        sim.request(&format!(r#"{{"sylkrtc":"account-add","account":"alice@example.com","password":"{HA1}"}}"#));
        sim
    }

    /// The browser has a camera: `video` codecs (before the call).
    fn with_video_browser(mut self, video: Video) -> Self {
        self.browser = Browser::browser(self.net.now, addr(BROWSER), video);
        self.browser_video = video;
        self
    }

    fn request(&mut self, json: &str) -> Value {
        let t = self.net.next_transaction(WS).to_string();
        self.net.request(WS, serde_json::from_str(json).unwrap(), &t)
    }

    fn take_events(&mut self) -> Vec<Value> {
        self.net.take_events(WS)
    }

    /// Session `state` values received so far (taken).
    fn states(&mut self) -> Vec<String> {
        self.take_events()
            .into_iter()
            .filter(|e| e["sylkrtc"] == "session-event" && e["event"] == "state")
            .map(|e| e["state"].as_str().unwrap().to_string())
            .collect()
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
                self.net.far_send(reply(&text, 200, "OK", &format!("Contact: {contact};expires=600\r\n"), ""));
            }
            "INVITE" if header(&text, "To").contains("tag=") => {
                // A re-INVITE from the gateway.
                self.net.far_send(reply(
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
                self.net.far_send(reply(&text, 100, "Trying", "", ""));
                match self.script {
                    Script::Answer => {
                        self.net.far_send(reply(&text, 180, "Ringing", contact, ""));
                        let extra = format!("{contact}Content-Type: application/sdp\r\n");
                        self.net.far_send(reply(&text, 200, "OK", &extra, &far_sdp("sendrecv")));
                    }
                    Script::EarlyMedia => {
                        let extra = format!("{contact}Content-Type: application/sdp\r\n");
                        self.net.far_send(reply(&text, 183, "Session Progress", &extra, &far_sdp("sendrecv")));
                        self.far_sip_later = Some(reply(&text, 200, "OK", &extra, &far_sdp("sendrecv")));
                    }
                    Script::Reliable => {
                        let extra = format!("{contact}Require: 100rel\r\nRSeq: 7\r\nContent-Type: application/sdp\r\n");
                        let early = reply(&text, 183, "Session Progress", &extra, &far_sdp("sendrecv"));
                        self.net.far_send(early.clone());
                        self.net.far_send(early);
                        let extra = format!("{contact}Content-Type: application/sdp\r\n");
                        self.far_sip_later = Some(reply(&text, 200, "OK", &extra, &far_sdp("sendrecv")));
                    }
                    Script::Busy => self.net.far_send(reply(&text, 486, "Busy Here", "", "")),
                    Script::Ring => self.net.far_send(reply(&text, 180, "Ringing", contact, "")),
                    Script::Challenge if !text.contains("Proxy-Authorization:") => {
                        let challenge = "Proxy-Authenticate: Digest realm=\"example.com\", nonce=\"n0nce\", qop=\"auth\", algorithm=MD5\r\n";
                        self.net.far_send(reply(&text, 407, "Proxy Authentication Required", challenge, ""));
                    }
                    Script::Challenge => {
                        let extra = format!("{contact}Content-Type: application/sdp\r\n");
                        self.net.far_send(reply(&text, 200, "OK", &extra, &far_sdp("sendrecv")));
                    }
                    Script::AnswerVideo | Script::AnswerVideoRejected => {
                        let video = if self.script == Script::AnswerVideo {
                            self.far_video_target = Some(sdp_addr_of(body(&text), "video"));
                            format!("m=video 30002 RTP/AVP {FAR_VP8}\r\na=rtpmap:{FAR_VP8} VP8/90000\r\na=rtcp-fb:{FAR_VP8} nack pli\r\n")
                        } else {
                            "m=video 0 RTP/AVP 96\r\n".to_string()
                        };
                        self.net.far_send(reply(&text, 180, "Ringing", contact, ""));
                        let extra = format!("{contact}Content-Type: application/sdp\r\n");
                        self.net.far_send(reply(&text, 200, "OK", &extra, &(far_sdp("sendrecv") + &video)));
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
                        self.net.far_send(reply(&text, 200, "OK", &extra, &sdp));
                    }
                }
            }
            "ACK" => {}
            "PRACK" => {
                self.net.far_send(reply(&text, 200, "OK", "", ""));
                if self.script == Script::Reliable {
                    if let Some(ok) = self.far_sip_later.take() {
                        self.net.far_send(ok);
                    }
                }
            }
            "CANCEL" => {
                self.net.far_send(reply(&text, 200, "OK", "", ""));
                if let Some(invite) = self.last_invite.clone() {
                    self.net.far_send(reply(&invite, 487, "Request Terminated", "", ""));
                }
            }
            _ => self.net.far_send(reply(&text, 200, "OK", "", "")),
        }
    }
}

impl World for Sim {
    fn parts(&mut self) -> (&mut GatewaySim, Vec<&mut Browser>) {
        (&mut self.net, vec![&mut self.browser])
    }

    /// The browser's media, and the far end's (a PCMU packet every 20 ms while it is answering).
    fn media_tick(&mut self) {
        if self.browser.connected {
            self.browser_seq += 1;
            let (now, seq) = (self.net.now, self.browser_seq);
            self.browser.send_rtp(
                now,
                (0, seq, (seq * 160) as u32, false),
                b"from-browser",
                LATENCY,
                &mut self.net.wire,
            );
            if let Some(mid) = self.browser.video {
                self.browser_video_seq += 1;
                let seq = self.browser_video_seq;
                let header = (self.browser_video_pt, seq, (seq * 1800) as u32, true);
                self.browser.write_rtp(now, mid, header, b"vp8-from-browser");
                self.browser.drain(now, LATENCY, &mut self.net.wire);
            }
        }
        if let Some(to) = self.far_video_target {
            let mut buf = vec![0; 200];
            let seq = self.far_seq;
            let h = rtp::RtpOut { marker: true, pt: FAR_VP8, seq, ts: u32::from(seq) * 1800, ssrc: 0xfa8 };
            let n = rtp::write_packet(&mut buf, &h, b"vp8-from-far-end").unwrap();
            buf.truncate(n);
            self.net.wire.push_back(Datagram { at: self.net.now + LATENCY, from: addr(FAR_VIDEO), to, data: buf });
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
            self.net.wire.push_back(Datagram { at: self.net.now + LATENCY, from: addr(FAR_RTP), to, data: buf });
        }
    }

    fn deliver(&mut self, d: Datagram) {
        if d.to == addr(BROWSER) {
            self.browser.receive(self.net.now, d.from, d.to, &d.data).unwrap();
            self.browser.drain(self.net.now, LATENCY, &mut self.net.wire);
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
        } else if d.to == addr(FAR_VIDEO) {
            if let Ok(v) = rtp::parse(&d.data) {
                self.far_video.push((v.header.pt, v.payload().to_vec()));
                self.far_video_seq.push(v.header.seq);
                self.far_video_ssrc.get_or_insert(v.header.ssrc);
            }
        } else if d.to == addr(FAR_VIDEO_RTCP) {
            self.far_video_rtcp.push(d.data);
        } else if d.to == addr("127.0.0.1:30001") {
            let mut data = d.data;
            if let Some((_, rx)) = &mut self.far_srtp {
                let n = rx.unprotect_rtcp(&mut data).expect("SRTCP from the gateway authenticates");
                data.truncate(n);
            }
            self.far_rtcp.push(data);
        } else {
            self.net.deliver(d);
        }
    }
}

impl Sim {
    /// Runs until an event matches `pred` (at most `max`); returns every event taken meanwhile.
    fn until(&mut self, max: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.until_event(WS, max, pred)
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
        let offer = self.browser.offer(self.browser_video != Video::None).unwrap();
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
        self.browser.accept_answer(answer).unwrap();
        self.browser_answer = Some(answer.to_string());
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
    assert!(sim.browser.got.iter().all(|g| g.pt == 0 && g.payload == b"from-far-end"));
    // Hang up: BYE, then `terminated` once.
    let ack = sim.request(&format!(r#"{{"sylkrtc":"session-terminate","session":"{session}"}}"#));
    assert_eq!(ack["sylkrtc"], "ack");
    assert_eq!(sim.terminated_reason(), "200 OK");
    assert_eq!(sim.far_requests("BYE").len(), 1);
    sim.run(Duration::from_secs(1));
    assert!(sim.states().is_empty(), "terminated is sent once");
    let stats = sim.net.gw.stats();
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
    sim.net.far_send(bye);
    assert_eq!(sim.terminated_reason(), "200 OK");
    assert!(sim.sip_in.iter().any(|m| m.starts_with("SIP/2.0 200 OK") && m.contains("BYE")));
    assert_eq!(sim.net.gw.stats().calls, 0);
    sim.check_capture("call_remote_bye");
}

#[test]
fn busy() {
    let mut sim = Sim::new(Script::Busy);
    let offer = sim.browser.offer(false).unwrap();
    let req = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s1", "uri": "bob@example.com", "sdp": offer});
    assert_eq!(sim.request(&req.to_string())["sylkrtc"], "ack");
    assert_eq!(sim.terminated_reason(), "486 Busy Here");
    sim.run(Duration::from_millis(100));
    assert_eq!(sim.far_requests("ACK").len(), 1, "the 486 is ACKed");
    assert_eq!(sim.net.gw.stats().rtp_pairs, 0);
    sim.check_capture("call_busy");
}

#[test]
fn cancel_before_answer() {
    let mut sim = Sim::new(Script::Ring);
    let offer = sim.browser.offer(false).unwrap();
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
    let offer = sim.browser.offer(false).unwrap();
    let req = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s1", "uri": "bob@example.com", "sdp": offer});
    assert_eq!(sim.request(&req.to_string())["sylkrtc"], "ack");
    let seen = sim.until_state("early-media");
    let early = seen.iter().find(|e| e["state"] == "early-media").unwrap();
    sim.browser.accept_answer(early["sdp"].as_str().unwrap()).unwrap();
    sim.until_state("established");
    sim.run(Duration::from_millis(500));
    assert!(!sim.browser.got.is_empty(), "early media reaches the browser");
    let ok = sim.far_sip_later.take().unwrap();
    sim.net.far_send(ok);
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

/// `session-dtmf-info` beyond 32 digits gets an `error` naming the limit, and no INFO goes out;
/// the call goes on and a short string still works.
#[test]
fn dtmf_info_beyond_the_cap_is_an_error() {
    let mut sim = Sim::new(Script::Answer);
    let session = sim.outgoing_call();
    let digits = "1".repeat(33);
    let err = sim.request(&format!(r#"{{"sylkrtc":"session-dtmf-info","session":"{session}","digit":"{digits}"}}"#));
    assert_eq!(err["sylkrtc"], "error");
    assert_eq!(err["error"], "Too many DTMF digits: at most 32 per request");
    let ack = sim.request(&format!(r#"{{"sylkrtc":"session-dtmf-info","session":"{session}","digit":"5"}}"#));
    assert_eq!(ack["sylkrtc"], "ack");
    sim.run(Duration::from_secs(1));
    assert_eq!(sim.far_requests("INFO").len(), 1);
    sim.check_capture("call_info_dtmf_too_many");
}

/// `session-message` on an established call goes out as a MESSAGE in the call's dialog (CPIM,
/// no receipts asked), and its 200 comes back as the session's `disposition-notification`
/// `accepted`; an unknown session is still unknown.
#[test]
fn session_message_goes_in_the_dialog() {
    let mut sim = Sim::new(Script::Answer);
    let session = sim.outgoing_call();
    let msg = |s: &str| {
        serde_json::json!({"sylkrtc": "session-message", "session": s, "message_id": "m1", "content": "hi",
            "content_type": "text/plain", "timestamp": "2026-01-01T00:00:00Z"})
        .to_string()
    };
    let ack = sim.request(&msg(&session));
    assert_eq!(ack["sylkrtc"], "ack");
    let events = sim.until(Duration::from_secs(2), |e| e["event"] == "disposition-notification");
    let d = events.iter().find(|e| e["event"] == "disposition-notification").unwrap();
    assert_eq!(d["session"], session.as_str());
    assert_eq!(
        (d["state"].as_str(), d["code"].as_u64(), d["message_id"].as_str()),
        (Some("accepted"), Some(200), Some("m1"))
    );
    let sent = sim.far_requests("MESSAGE");
    assert_eq!(sent.len(), 1);
    let invite = sim.far_requests("INVITE")[0].clone();
    assert_eq!(header(sent[0], "Call-ID"), header(&invite, "Call-ID"), "in the call's dialog");
    assert!(body(sent[0]).contains("imdn.Message-ID: m1\r\n"));
    assert!(!body(sent[0]).contains("Disposition-Notification"));
    let err = sim.request(&msg("nope"));
    assert_eq!(err["error"], "Unknown session nope");
    // The far end's MESSAGE in the dialog: a chat line, then an IMDN, each a session-event.
    let in_dialog = |cseq: u32, content_type: &str, payload: &str| {
        format!(
            "MESSAGE sip:alice@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKmsg{cseq}\r\n\
             From: {};tag=far1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} MESSAGE\r\nMax-Forwards: 70\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{payload}",
            header(&invite, "To"),
            header(&invite, "From"),
            header(&invite, "Call-ID"),
            payload.len()
        )
    };
    sim.net.far_send(in_dialog(10, "text/plain", "hello from the phone"));
    let events = sim.until(Duration::from_secs(1), |e| e["event"] == "message");
    let m = events.iter().find(|e| e["event"] == "message").unwrap();
    assert_eq!((m["session"].as_str(), m["content"].as_str()), (Some(session.as_str()), Some("hello from the phone")));
    assert_eq!(m["sender"]["uri"], "bob@example.com");
    let imdn = "<?xml version=\"1.0\"?><imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>m1</message-id>\
<datetime>2026-01-01T00:00:00Z</datetime><display-notification><status><displayed/></status></display-notification></imdn>";
    sim.net.far_send(in_dialog(11, "message/imdn+xml", imdn));
    let events = sim.until(Duration::from_secs(1), |e| e["event"] == "disposition-notification");
    let d = events.iter().find(|e| e["event"] == "disposition-notification").unwrap();
    assert_eq!((d["state"].as_str(), d["message_id"].as_str()), (Some("displayed"), Some("m1")));
    sim.check_capture("call_session_message");
}

/// An incoming call refused because the connection is at `max_sessions_per_connection` is
/// declined 486 and reported as `missed-session`, as SylkServer does (spec §3.2).
#[test]
fn incoming_call_at_the_session_limit_is_missed() {
    let mut sim = Sim::with_config(Script::Answer, |c| c.max_sessions_per_connection = 1);
    let user = sim.register();
    sim.outgoing_call();
    sim.incoming_invite(&user);
    let seen = sim.until(Duration::from_secs(2), |e| e["event"] == "missed-session");
    let missed = seen.iter().find(|e| e["event"] == "missed-session").expect("missed-session");
    assert_eq!(missed["account"], "alice@example.com");
    assert_eq!(missed["originator"]["uri"], "bob@example.com");
    assert_eq!(missed["originator"]["display_name"], "Bob");
    assert!(!seen.iter().any(|e| e["event"] == "incoming-session"), "{seen:#?}");
    sim.run(Duration::from_millis(200));
    assert!(sim.sip_in.iter().any(|m| m.starts_with("SIP/2.0 486 Busy Here") && m.contains("incoming-1@far")));
    sim.check_capture("call_incoming_busy_missed");
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
    sim.net.input(Input::StreamClosed { conn: WS });
    sim.run(Duration::from_secs(1));
    assert_eq!(sim.far_requests("BYE").len(), 1);
    assert_eq!(sim.net.gw.stats().calls, 0);
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

    /// The far end ACKs `ok`, the gateway's 200 to its INVITE `invite` to Contact user `user`.
    fn far_ack(&mut self, user: &str, invite: &str, ok: &str) {
        let ack = format!(
            "ACK sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack1\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            header(invite, "From"),
            header(ok, "To"),
            header(invite, "Call-ID")
        );
        self.net.far_send(ack);
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
        self.net.far_send(invite.clone());
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
    let answer = sim.browser.answer(offer, true);
    let session = inc["session"].as_str().unwrap().to_string();
    let req = serde_json::json!({"sylkrtc": "session-answer", "session": session, "sdp": answer});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    let seen = sim.until_state("established");
    assert!(seen.iter().any(|e| e["state"] == "accepted" && e.get("sdp").is_none()));
    let ok = sim.sip_in.iter().find(|m| m.starts_with("SIP/2.0 200 OK") && m.contains("INVITE")).unwrap().clone();
    sim.far_rtp_target = Some(sdp_rtp_addr(body(&ok)));
    assert_eq!(audio_pts(body(&ok)), ["0", "101"]);
    // ACK the 200.
    sim.far_ack(&user, &invite, &ok);
    sim.run(Duration::from_secs(1));
    assert!(sim.far_rtp.len() > 20 && sim.far_rtp.iter().all(|(pt, p)| *pt == 0 && p == b"from-browser"));
    assert!(sim.browser.got.len() > 20 && sim.browser.got.iter().all(|g| g.pt == 0 && g.payload == b"from-far-end"));
    let bye = format!(
        "BYE sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye2\r\nFrom: {}\r\nTo: {}\r\nCall-ID: incoming-1@far\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(&invite, "From"),
        header(&ok, "To")
    );
    sim.net.far_send(bye);
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
    sim.net.far_send(cancel);
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
    let offer = sim.browser.offer(false).unwrap();
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
        self.far_reinvite_sdp(session, &far_sdp(dir), cseq)
    }

    /// [`Sim::far_reinvite`] with the SDP `sdp`.
    fn far_reinvite_sdp(&mut self, session: &str, sdp: &str, cseq: u32) -> String {
        let invite = self.far_requests("INVITE")[0].clone();
        let reinvite = format!(
            "INVITE sip:alice@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKre{cseq}\r\nFrom: {};tag=far1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:bob@127.0.0.1:5070>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            header(&invite, "To"),
            header(&invite, "From"),
            header(&invite, "Call-ID"),
            sdp.len()
        );
        self.net.far_send(reinvite);
        let seen = self.until(Duration::from_secs(5), |e| e["event"] == "update");
        let update = seen.iter().find(|e| e["event"] == "update").unwrap();
        assert_eq!(update["state"], "received");
        let answer = self.browser.answer(update["sdp"].as_str().unwrap(), true);
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
        self.net.far_send(ack);
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
    let mid = sim.browser.audio.unwrap();
    let mut api = sim.browser.rtc.sdp_api();
    api.set_direction(mid, Direction::SendOnly);
    let (offer, pending) = api.apply().unwrap();
    sim.browser.pending = Some(pending);
    let req = serde_json::json!({"sylkrtc": "session-update", "session": session, "sdp": offer.to_sdp_string()});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    let seen = sim.until(Duration::from_secs(5), |e| e["event"] == "update");
    let update = seen.iter().find(|e| e["event"] == "update").unwrap();
    assert_eq!(update["state"], "accepted");
    sim.browser.accept_answer(update["sdp"].as_str().unwrap()).unwrap();
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
        let text = self.net.take_capture();
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
    assert!(sim.browser.got.len() > 100 && sim.browser.got.iter().all(|g| g.pt == 0 && g.payload == b"from-far-end"));
    // Our RTCP (SRTCP here) every 5 s: an SR (we send) with the far end's report block, and SDES.
    assert!(!sim.far_rtcp.is_empty(), "an RTCP report within 6 s");
    let summary = sylkgw_core::media::rtcp::summarize(&sim.far_rtcp[0]);
    assert!(summary.sender_report.is_some(), "an SR: {:?}", sim.far_rtcp[0]);
    sim.check_capture("call_sdes_srtp");
}

#[test]
fn sdes_mandatory_refuses_a_plain_answer() {
    let mut sim = Sim::with_config(Script::Answer, |c| c.sdes_srtp = sylkgw_core::config::SdesMode::Mandatory);
    let offer = sim.browser.offer(false).unwrap();
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
    let offer = sim.browser.offer(false).unwrap();
    let req = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s1", "uri": "bob@example.com", "sdp": offer});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    sim.until_state("accepted");
    let seen = sim.until(Duration::from_secs(40), |e| e["state"] == "terminated");
    assert_eq!(seen.iter().find(|e| e["state"] == "terminated").unwrap()["reason"], "408 Media Timeout");
    sim.run(Duration::from_millis(100));
    assert_eq!(sim.far_requests("BYE").len(), 1);
    assert_eq!(sim.net.gw.stats().calls, 0);
    sim.check_capture("call_browser_never_connects");
}

/// `headers` of `session-create` go into the INVITE and those of `session-answer` into the 200;
/// names that are not tokens or belong to the stack (Via, Call-ID, …) are dropped.
#[test]
fn custom_headers_out_both_ways() {
    let mut sim = Sim::new(Script::Answer);
    let offer = sim.browser.offer(false).unwrap();
    let headers = serde_json::json!([
        {"name": "X-Account-Tag", "value": "blue"},
        {"name": "Via", "value": "SIP/2.0/UDP evil"},
        {"name": "X-Bad\r\nInjected", "value": "1"},
        {"name": "P-Asserted-Identity", "value": "<sip:ceo@example.com>"},
        {"name": "Proxy-Authorization", "value": "Digest forged"},
        {"name": "Require", "value": "forged-ext"},
        {"name": "Record-Route", "value": "<sip:forged.example>"},
        {"name": "Content-Encoding", "value": "gzip"},
        {"name": "Subject", "value": "not listed"},
    ]);
    let req = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s1",
        "uri": "bob@example.com", "sdp": offer, "headers": headers});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    sim.until_state("accepted");
    let invite = sim.far_requests("INVITE")[0].clone();
    assert_eq!(header(&invite, "X-Account-Tag"), "blue");
    assert!(!invite.contains("evil") && !invite.contains("Injected"), "{invite}");
    // Only X- headers (and configured ones): no identity, auth, routing, Require or body headers.
    for forged in ["ceo@example.com", "forged", "gzip", "Subject"] {
        assert!(!invite.contains(forged), "{forged} must not reach the INVITE:\n{invite}");
    }

    let mut sim = Sim::new(Script::Answer);
    let user = sim.register();
    sim.incoming_invite(&user);
    let seen = sim.until(Duration::from_secs(5), |e| e["event"] == "incoming-session");
    let inc = seen.iter().find(|e| e["event"] == "incoming-session").unwrap().clone();
    assert!(inc["headers"].is_null() || inc["headers"] == serde_json::json!({}), "no prefixes: no headers: {inc}");
    let answer = sim.browser.answer(inc["sdp"].as_str().unwrap(), true);
    let req = serde_json::json!({"sylkrtc": "session-answer", "session": inc["session"], "sdp": answer,
        "headers": [{"name": "X-Answered-By", "value": "web"}, {"name": "CSeq", "value": "1 BYE"}]});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    sim.run(Duration::from_millis(100));
    let ok = sim.sip_in.iter().find(|m| m.starts_with("SIP/2.0 200 OK") && m.contains("INVITE")).unwrap();
    assert_eq!(header(ok, "X-Answered-By"), "web");
    assert_eq!(header(ok, "CSeq"), "1 INVITE");
}

/// `allowed_client_headers` lets listed headers through besides `X-`; identity headers stay
/// refused even when listed.
#[test]
fn allowed_client_headers_are_configurable() {
    let mut sim = Sim::with_config(Script::Answer, |c| {
        c.allowed_client_headers = vec!["subject".into(), "P-Asserted-Identity".into()];
    });
    let offer = sim.browser.offer(false).unwrap();
    let headers = serde_json::json!([
        {"name": "Subject", "value": "listed"},
        {"name": "P-Asserted-Identity", "value": "<sip:ceo@example.com>"},
        {"name": "Organization", "value": "not listed"},
    ]);
    let req = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s1",
        "uri": "bob@example.com", "sdp": offer, "headers": headers});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    sim.until_state("accepted");
    let invite = sim.far_requests("INVITE")[0].clone();
    assert_eq!(header(&invite, "Subject"), "listed");
    assert!(!invite.contains("ceo@example.com") && !invite.contains("not listed"), "{invite}");
}

/// Browser offer with VP8 + H.264 video → the INVITE has a second m-line (RTP/AVP, its own RTP
/// pair) with those formats at the browser's numbers; the far end accepts VP8 at its own number,
/// so the browser's answer has video with exactly VP8. Video RTP flows both ways (PT mapped), and
/// keyframe requests cross: a PLI from the SIP side reaches the browser as a keyframe request on
/// its video stream, and one from the browser leaves as an RTCP PLI (RFC 4585) to the far end.
#[test]
fn outgoing_video_accepted_bridges_video_and_keyframe_requests() {
    let mut sim = Sim::new(Script::AnswerVideo).with_video_browser(Video::Both);
    let session = sim.outgoing_call();
    let invite = sim.far_requests("INVITE")[0].clone();
    let offer = body(&invite);
    assert_eq!(m_line(offer, "audio"), Some("m=audio 20000 RTP/AVP 111 0 126"), "{offer}");
    assert_eq!(m_line(offer, "video"), Some(format!("m=video 20002 RTP/AVP {VP8} {H264}").as_str()), "{offer}");
    let video = section(offer, "video").unwrap();
    assert!(video.contains(&format!("a=fmtp:{H264} {H264_FMTP}")), "H.264's fmtp goes to the SIP side:\n{video}");
    assert!(!video.contains("a=mid") && !video.contains("a=ssrc"), "{video}");
    // The browser's feedback for those formats is offered (`sip_video_fb`; the simulated browser
    // offers no RTX).
    assert!(
        video.contains(&format!("a=rtcp-fb:{VP8} nack\r\na=rtcp-fb:{VP8} nack pli\r\na=rtcp-fb:{VP8} ccm fir\r\n")),
        "{video}"
    );
    assert!(!video.contains("goog-remb") && !video.contains("transport-cc"), "only what we honour: {video}");
    assert_eq!(sim.net.gw.stats().rtp_pairs, 2, "one pair for audio, one for video");
    // The browser's answer had video with exactly what the far end took: VP8.
    let answer = sim.browser_answer.clone().unwrap();
    assert!(m_line(&answer, "video").unwrap().ends_with(&format!("UDP/TLS/RTP/SAVPF {VP8}")), "{answer}");
    assert!(m_line(&answer, "audio").unwrap().ends_with("UDP/TLS/RTP/SAVPF 0 126"), "{answer}");
    sim.run(Duration::from_secs(1));
    assert!(sim.far_video.len() > 20, "far end got {} video packets", sim.far_video.len());
    assert!(sim.far_video.iter().all(|(pt, p)| *pt == FAR_VP8 && p == b"vp8-from-browser"));
    let video_got: Vec<_> = sim.browser.got.iter().filter(|g| g.pt == VP8).collect();
    assert!(video_got.len() > 20, "browser got {} video packets", video_got.len());
    assert!(video_got.iter().all(|g| g.payload == b"vp8-from-far-end"));
    assert!(sim.browser.got.iter().filter(|g| g.pt == 0).count() > 20, "audio still flows");

    // SIP → browser: an RR + PLI for our video SSRC on the video RTCP port.
    let gw_video = sdp_addr_of(offer, "video");
    let gw_video_rtcp = addr(&format!("127.0.0.1:{}", gw_video.port() + 1));
    let mut pli = Vec::new();
    sylkgw_core::media::rtcp::write_rr(&mut pli, 0xfa8, &[]);
    sylkgw_core::media::rtcp::write_pli(&mut pli, 0xfa8, 0);
    sim.net.wire.push_back(Datagram { at: sim.net.now, from: addr(FAR_VIDEO_RTCP), to: gw_video_rtcp, data: pli });
    sim.run(Duration::from_millis(300));
    let vmid = sim.browser.video.unwrap();
    assert!(sim.browser.keyframe_requests.iter().any(|(m, _)| *m == vmid), "{:?}", sim.browser.keyframe_requests);

    // Browser → SIP: a PLI on what it receives becomes an RTCP PLI to the far end.
    let before = sim.far_video_rtcp.len();
    assert!(sim.browser.request_keyframe(vmid));
    sim.run(Duration::from_millis(300));
    let plis: Vec<_> = sim.far_video_rtcp[before..]
        .iter()
        .filter(|p| sylkgw_core::media::rtcp::summarize(p).keyframe_request)
        .collect();
    assert_eq!(plis.len(), 1, "one PLI towards the SIP side: {:?}", sim.far_video_rtcp);
    let compound = sylkgw_core::media::rtcp::parse_compound(plis[0]);
    let media_ssrcs: Vec<u32> = compound
        .filter_map(|p| match p {
            Ok(sylkgw_core::media::rtcp::RtcpPacket::Pli { media_ssrc, .. }) => Some(media_ssrc),
            _ => None,
        })
        .collect();
    assert_eq!(media_ssrcs, [0xfa8], "the PLI names the far end's video source");
    assert_eq!(sim.request(&format!(r#"{{"sylkrtc":"session-terminate","session":"{session}"}}"#))["sylkrtc"], "ack");
    assert_eq!(sim.terminated_reason(), "200 OK");
    assert_eq!(sim.net.gw.stats().rtp_pairs, 0, "both pairs released");
    sim.check_capture("call_outgoing_video");
}

/// The far end refuses video (port 0): the browser's video m-line is refused too (port 0), and
/// the call goes on with audio; the video pair is kept until the call ends but carries nothing,
/// and our re-INVITE keeps video at port 0.
#[test]
fn outgoing_video_rejected_keeps_audio() {
    let mut sim = Sim::new(Script::AnswerVideoRejected).with_video_browser(Video::Vp8);
    let offer = sim.browser.offer(true).unwrap();
    let req = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s1",
        "uri": "bob@example.com", "sdp": offer});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    let seen = sim.until_state("accepted");
    let answer = seen.iter().find(|e| e["state"] == "accepted").unwrap()["sdp"].as_str().unwrap().to_string();
    let video = m_line(&answer, "video").expect("the answer keeps the m-line");
    assert!(video.starts_with("m=video 0 "), "video refused in the browser's answer: {video}");
    sim.browser.accept_answer(&answer).unwrap();
    sim.until_state("established");
    sim.run(Duration::from_secs(1));
    assert!(sim.far_rtp.len() > 20 && sim.browser.got.iter().filter(|g| g.pt == 0).count() > 20, "audio works");
    assert!(sim.far_video.is_empty() && sim.browser.got.iter().all(|g| g.pt != VP8), "no video");
    // A re-INVITE (browser hold) keeps the refused video line at port 0.
    let reoffer = sim.browser.reoffer(Direction::SendOnly);
    let req = serde_json::json!({"sylkrtc": "session-update", "session": "s1", "sdp": reoffer});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    sim.until(Duration::from_secs(5), |e| e["event"] == "update");
    let reinvite = sim.far_requests("INVITE")[1].clone();
    assert_eq!(m_line(body(&reinvite), "video"), Some("m=video 0 RTP/AVP 96"), "{reinvite}");
}

/// An audio-only browser: the INVITE has no video line and uses one RTP pair (no change for
/// audio calls).
#[test]
fn audio_only_offer_has_no_video_line() {
    let mut sim = Sim::new(Script::Answer);
    sim.outgoing_call();
    let invite = sim.far_requests("INVITE")[0].clone();
    assert_eq!(m_line(body(&invite), "video"), None);
    assert_eq!(sim.net.gw.stats().rtp_pairs, 1);
}

/// An INVITE with VP8 and H.264 video: the browser is offered both (the SIP side's numbers and
/// fmtp), answers with video, and our 200 has video on a second port with what the browser kept.
/// A second m=video line is refused (port 0), keeping the offer's m-line count.
#[test]
fn incoming_video_call() {
    let mut sim = Sim::new(Script::Answer).with_video_browser(Video::Both);
    let user = sim.register();
    let h264 = "profile-level-id=42e01f;packetization-mode=1";
    let sdp = far_sdp("sendrecv")
        + &format!("m=video 30002 RTP/AVP 100 102\r\na=rtpmap:100 VP8/90000\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 {h264}\r\n")
        + "m=video 30004 RTP/AVP 100\r\na=rtpmap:100 VP8/90000\r\n";
    let invite = format!(
        "INVITE sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\n\
         From: \"Bob\" <sip:bob@example.com>;tag=bobtag\r\nTo: <sip:alice@example.com>\r\nCall-ID: incoming-v@far\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sim.net.far_send(invite.clone());
    let seen = sim.until(Duration::from_secs(5), |e| e["event"] == "incoming-session");
    let inc = seen.iter().find(|e| e["event"] == "incoming-session").unwrap().clone();
    let offer = inc["sdp"].as_str().unwrap();
    let video = m_line(offer, "video").expect("video offered to the browser");
    assert!(video.ends_with("UDP/TLS/RTP/SAVPF 100 102"), "{video}");
    assert_eq!(offer.matches("m=video").count(), 1, "one video line for the browser");
    let answer = sim.browser.answer(offer, true);
    assert!(!m_line(&answer, "video").unwrap().starts_with("m=video 0 "), "{answer}");
    let req = serde_json::json!({"sylkrtc": "session-answer", "session": inc["session"], "sdp": answer});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    sim.until_state("established");
    let ok = sim.sip_in.iter().find(|m| m.starts_with("SIP/2.0 200 OK") && m.contains("INVITE")).unwrap().clone();
    let ok_sdp = body(&ok);
    let lines: Vec<&str> = ok_sdp.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(
        lines,
        ["m=audio 20000 RTP/AVP 0 101", "m=video 20002 RTP/AVP 100 102", "m=video 0 RTP/AVP 100"],
        "{ok}"
    );
    let fmtp = section(ok_sdp, "video").unwrap().lines().find(|l| l.starts_with("a=fmtp:102 ")).unwrap();
    assert!(fmtp.contains("packetization-mode=1") && fmtp.contains("profile-level-id=42e01f"), "{ok_sdp}");
    sim.far_rtp_target = Some(sdp_rtp_addr(ok_sdp));
    sim.far_video_target = Some(sdp_addr_of(ok_sdp, "video"));
    sim.far_ack(&user, &invite, &ok);
    sim.run(Duration::from_secs(1));
    // Far end → browser: VP8 at 100 on both sides (the browser answered with the offer's numbers).
    let video_got: Vec<_> = sim.browser.got.iter().filter(|g| g.pt == 100).collect();
    assert!(video_got.len() > 20 && video_got.iter().all(|g| g.payload == b"vp8-from-far-end"), "{}", video_got.len());
}

/// An INVITE whose video offers `nack`, `nack pli` and RTX (RFC 4585, RFC 4588): our 200 answers
/// them for the format we keep; the far end's NACK for a packet it got is answered with that packet
/// as RTX (our RTX format and SSRC, OSN first), and the far end's RTX packet reaches the browser as
/// the original (`sip_video_fb`).
#[test]
fn incoming_video_nack_and_rtx() {
    let mut sim = Sim::new(Script::Answer).with_video_browser(Video::Vp8);
    let user = sim.register();
    let sdp = far_sdp("sendrecv")
        + "m=video 30002 RTP/AVP 100 101 102 103\r\na=rtpmap:100 VP8/90000\r\na=rtcp-fb:100 nack\r\n\
           a=rtcp-fb:100 nack pli\r\na=rtcp-fb:* goog-remb\r\na=rtpmap:101 rtx/90000\r\na=fmtp:101 apt=100\r\n\
           a=rtpmap:102 H264/90000\r\na=fmtp:102 profile-level-id=42e01f;packetization-mode=1\r\n\
           a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n";
    let invite = format!(
        "INVITE sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\n\
         From: \"Bob\" <sip:bob@example.com>;tag=bobtag\r\nTo: <sip:alice@example.com>\r\nCall-ID: incoming-rtx@far\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sim.net.far_send(invite.clone());
    let seen = sim.until(Duration::from_secs(5), |e| e["event"] == "incoming-session");
    let inc = seen.iter().find(|e| e["event"] == "incoming-session").unwrap().clone();
    let answer = sim.browser.answer(inc["sdp"].as_str().unwrap(), true);
    let req = serde_json::json!({"sylkrtc": "session-answer", "session": inc["session"], "sdp": answer});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    sim.until_state("established");
    let ok = sim.sip_in.iter().find(|m| m.starts_with("SIP/2.0 200 OK") && m.contains("INVITE")).unwrap().clone();
    let ok_sdp = body(&ok);
    // The browser kept VP8 only: its RTX and feedback are answered, H.264's RTX and REMB are not.
    let video = section(ok_sdp, "video").unwrap();
    assert_eq!(m_line(ok_sdp, "video"), Some("m=video 20002 RTP/AVP 100 101"), "{ok_sdp}");
    assert!(video.contains("a=rtpmap:101 rtx/90000\r\na=fmtp:101 apt=100\r\n"), "{video}");
    assert!(video.contains("a=rtcp-fb:100 nack\r\na=rtcp-fb:100 nack pli\r\n"), "{video}");
    assert!(!video.contains("remb") && !video.contains("fir") && !video.contains("103"), "{video}");
    sim.far_rtp_target = Some(sdp_rtp_addr(ok_sdp));
    sim.far_video_target = Some(sdp_addr_of(ok_sdp, "video"));
    sim.far_ack(&user, &invite, &ok);
    sim.browser_video_pt = 100;
    sim.run(Duration::from_secs(1));
    assert!(sim.far_video.len() > 20, "far end got {} video packets", sim.far_video.len());

    // The far end NACKs a packet it got (RFC 4585 §6.2.1): RR + NACK for our video SSRC.
    let gw_video = sdp_addr_of(ok_sdp, "video");
    let gw_video_rtcp = addr(&format!("127.0.0.1:{}", gw_video.port() + 1));
    let nacked = sim.far_video_seq[5];
    let mut nack = Vec::new();
    sylkgw_core::media::rtcp::write_rr(&mut nack, 0xfa8, &[]);
    nack.extend_from_slice(&[0x81, 205, 0, 3, 0, 0, 0x0f, 0xa8]);
    nack.extend_from_slice(&sim.far_video_ssrc.unwrap().to_be_bytes());
    nack.extend_from_slice(&nacked.to_be_bytes());
    nack.extend_from_slice(&[0, 0]);
    let before = sim.far_video.len();
    sim.net.wire.push_back(Datagram { at: sim.net.now, from: addr(FAR_VIDEO_RTCP), to: gw_video_rtcp, data: nack });
    sim.run(Duration::from_millis(100));
    let rtx: Vec<_> = sim.far_video[before..].iter().filter(|(pt, _)| *pt == 101).collect();
    assert_eq!(rtx.len(), 1, "one retransmission: {:?}", &sim.far_video[before..]);
    assert_eq!(&rtx[0].1[..2], &nacked.to_be_bytes(), "OSN first (RFC 4588 §4)");
    assert_eq!(&rtx[0].1[2..], b"vp8-from-browser");

    // The far end's RTX (its own SSRC, OSN of a packet not sent yet) reaches the browser as VP8.
    let osn = sim.far_seq.wrapping_add(1);
    let mut payload = osn.to_be_bytes().to_vec();
    payload.extend_from_slice(b"vp8-repaired");
    let mut buf = vec![0; 200];
    let h = rtp::RtpOut { marker: true, pt: 101, seq: 7, ts: u32::from(osn) * 1800, ssrc: 0xfa9 };
    let n = rtp::write_packet(&mut buf, &h, &payload).unwrap();
    buf.truncate(n);
    sim.net.wire.push_back(Datagram { at: sim.net.now, from: addr(FAR_VIDEO), to: gw_video, data: buf });
    sim.run(Duration::from_millis(300));
    assert!(
        sim.browser.got.iter().any(|g| g.pt == 100 && g.payload == b"vp8-repaired"),
        "the repaired packet reached the browser as VP8"
    );
    sim.check_capture("call_incoming_video_nack_rtx");
}

/// Re-INVITEs of a video call keep video as it is: a hold holds both lines (the browser's update
/// offer and our 200 carry the held direction on video too, with its port); a re-offer with video
/// at port 0 ends video (our 200: port 0); a later re-offer with video again still gets port 0.
#[test]
fn video_state_is_stable_across_sip_reoffers() {
    let mut sim = Sim::new(Script::AnswerVideo).with_video_browser(Video::Vp8);
    let session = sim.outgoing_call();
    sim.run(Duration::from_millis(500));
    let video = format!("m=video 30002 RTP/AVP {FAR_VP8}\r\na=rtpmap:{FAR_VP8} VP8/90000\r\n");
    let ok = sim.far_reinvite_sdp(&session, &(far_sdp("sendonly") + &video + "a=sendonly\r\n"), 2);
    let held = section(body(&ok), "video").expect("video in the 200");
    assert!(held.starts_with("m=video 20002 RTP/AVP 100") && held.contains("a=recvonly"), "{ok}");
    sim.run(Duration::from_millis(300));
    let ok = sim.far_reinvite_sdp(&session, &(far_sdp("sendrecv") + &video), 3);
    assert!(section(body(&ok), "video").unwrap().contains("a=sendrecv"), "{ok}");
    sim.run(Duration::from_millis(300));
    let (far, got) = (sim.far_video.len(), sim.browser.got.iter().filter(|g| g.pt == VP8).count());
    sim.run(Duration::from_millis(500));
    assert!(sim.far_video.len() > far + 10, "video flows after the resume");
    assert!(sim.browser.got.iter().filter(|g| g.pt == VP8).count() > got + 10);
    // Video ended by the far end: port 0, and it stays 0 when offered again.
    let ok = sim.far_reinvite_sdp(&session, &(far_sdp("sendrecv") + &format!("m=video 0 RTP/AVP {FAR_VP8}\r\n")), 4);
    assert_eq!(m_line(body(&ok), "video"), Some(format!("m=video 0 RTP/AVP {FAR_VP8}").as_str()), "{ok}");
    sim.run(Duration::from_millis(200));
    let far = sim.far_video.len();
    sim.run(Duration::from_millis(500));
    assert_eq!(sim.far_video.len(), far, "no video after it ended");
    let ok = sim.far_reinvite_sdp(&session, &(far_sdp("sendrecv") + &video), 5);
    assert!(m_line(body(&ok), "video").unwrap().starts_with("m=video 0 "), "port 0 stays 0: {ok}");
    assert_eq!(m_line(body(&ok), "audio"), Some("m=audio 20000 RTP/AVP 0 101"));
}

// ===== Carrier SIP: reliable provisionals (RFC 3262) =====

/// The CSeq number of a SIP message.
fn cseq_num(msg: &str) -> u32 {
    header(msg, "CSeq").split(' ').next().unwrap().parse().unwrap()
}

/// Outgoing: the INVITE offers `Supported: 100rel`; a reliable 183 with SDP (sent twice) gets one
/// PRACK in its early dialog (`RAck: 7 <INVITE CSeq> INVITE`, the next CSeq) and its SDP is the
/// browser's answer (early media); the 200 that follows the PRACK's answer is ACKed, and the BYE
/// has a CSeq above the PRACK's.
#[test]
fn outgoing_reliable_183_is_pracked_once() {
    let mut sim = Sim::new(Script::Reliable);
    let offer = sim.browser.offer(false).unwrap();
    let req = serde_json::json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "s1", "uri": "bob@example.com", "sdp": offer});
    assert_eq!(sim.request(&req.to_string())["sylkrtc"], "ack");
    let seen = sim.until_state("accepted");
    let early = seen.iter().find(|e| e["state"] == "early-media").expect("early media from the reliable 183");
    sim.browser.accept_answer(early["sdp"].as_str().unwrap()).unwrap();
    let accepted = seen.iter().find(|e| e["state"] == "accepted").unwrap();
    assert!(accepted.get("sdp").is_none(), "one answer only: {accepted}");
    sim.until_state("established");
    let invite = sim.far_requests("INVITE")[0].clone();
    assert_eq!(header(&invite, "Supported"), "100rel");
    let pracks = sim.far_requests("PRACK");
    assert_eq!(pracks.len(), 1, "the retransmitted 183 is not PRACKed again");
    let prack = pracks[0].clone();
    assert_eq!(header(&prack, "RAck"), format!("7 {} INVITE", cseq_num(&invite)));
    assert_eq!(cseq_num(&prack), cseq_num(&invite) + 1);
    assert!(header(&prack, "To").contains("tag=far1"), "in the early dialog: {prack}");
    assert!(prack.starts_with("PRACK sip:bob@127.0.0.1:5070 SIP/2.0"), "to the 183's Contact: {prack}");
    assert_eq!(sim.far_requests("ACK").len(), 1);
    assert_eq!(cseq_num(sim.far_requests("ACK")[0]), cseq_num(&invite));
    assert_eq!(sim.request(r#"{"sylkrtc":"session-terminate","session":"s1"}"#)["sylkrtc"], "ack");
    sim.until_state("terminated");
    let bye = sim.far_requests("BYE")[0].clone();
    assert!(cseq_num(&bye) > cseq_num(&prack), "BYE after PRACK: {bye}");
    sim.check_capture("call_outgoing_reliable_183");
}

impl Sim {
    /// The far end calls alice with `extra` header lines in the INVITE; returns the INVITE.
    fn incoming_invite_with(&mut self, contact_user: &str, extra: &str) -> String {
        let sdp = far_sdp("sendrecv");
        let invite = format!(
            "INVITE sip:{contact_user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\n\
             From: \"Bob\" <sip:bob@example.com>;tag=bobtag\r\nTo: <sip:alice@example.com>\r\nCall-ID: incoming-1@far\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n{extra}\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len(),
        );
        self.net.far_send(invite.clone());
        invite
    }

    /// A PRACK from the far end for `ringing` (the gateway's 180) with `rack`; returns the answer.
    fn far_prack(&mut self, user: &str, invite: &str, ringing: &str, rack: &str, cseq: u32) -> String {
        let prack = format!(
            "PRACK sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKpr{cseq}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: incoming-1@far\r\nCSeq: {cseq} PRACK\r\nRAck: {rack}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            header(invite, "From"),
            header(ringing, "To")
        );
        let before = self.sip_in.len();
        self.net.far_send(prack);
        self.run(Duration::from_millis(50));
        self.sip_in[before..].iter().find(|m| m.contains(" PRACK\r\n")).expect("the PRACK answered").clone()
    }

    fn ringing(&self) -> Vec<&String> {
        self.sip_in.iter().filter(|m| m.starts_with("SIP/2.0 180 ")).collect()
    }
}

/// Incoming: an INVITE with `Require: 100rel` (420 before) rings reliably: the 180 has
/// `Require: 100rel` and an `RSeq`, and is retransmitted until the PRACK; a PRACK naming another
/// RSeq gets 481, the right one 200 and the retransmissions stop; the call is then answered as
/// usual.
#[test]
fn incoming_require_100rel_rings_reliably_until_prack() {
    let mut sim = Sim::with_binding(Script::Answer, BindAnswer::AfterDrain, |_| {});
    let user = sim.register();
    let invite = sim.incoming_invite_with(&user, "Require: 100rel\r\nSupported: timer\r\n");
    let seen = sim.until(Duration::from_secs(5), |e| e["event"] == "incoming-session");
    let inc = seen.iter().find(|e| e["event"] == "incoming-session").unwrap().clone();
    assert!(!sim.sip_in.iter().any(|m| m.starts_with("SIP/2.0 420")), "100rel is supported");
    sim.run(Duration::from_millis(1600));
    let ringing = sim.ringing();
    assert!(ringing.len() >= 3, "T1, 2·T1: the 180 is retransmitted until PRACKed ({})", ringing.len());
    let first = ringing[0].clone();
    assert!(ringing.iter().all(|r| **r == first), "the same 180 each time");
    assert_eq!(header(&first, "Require"), "100rel");
    let rseq: u32 = header(&first, "RSeq").parse().unwrap();
    assert!((1..1 << 31).contains(&rseq));
    let wrong = sim.far_prack(&user, &invite, &first, &format!("{} 1 INVITE", rseq + 1), 2);
    assert!(wrong.starts_with("SIP/2.0 481 "), "{wrong}");
    let ok = sim.far_prack(&user, &invite, &first, &format!("{rseq} 1 INVITE"), 3);
    assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
    let count = sim.ringing().len();
    sim.run(Duration::from_secs(5));
    assert_eq!(sim.ringing().len(), count, "no retransmission after the PRACK");
    let offer = inc["sdp"].as_str().unwrap();
    let answer = sim.browser.answer(offer, true);
    let req = serde_json::json!({"sylkrtc": "session-answer", "session": inc["session"], "sdp": answer});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    sim.until_state("established");
    let ok = sim.sip_in.iter().find(|m| m.starts_with("SIP/2.0 200 OK") && m.contains(" INVITE\r\n")).unwrap().clone();
    sim.far_ack(&user, &invite, &ok);
    sim.run(Duration::from_millis(300));
    sim.check_capture("call_incoming_reliable_180");
}

/// Incoming with `Supported: 100rel` but no PRACK ever: the 180 is retransmitted for 64·T1, then
/// the INVITE is rejected with 504 and the browser's session ends.
#[test]
fn incoming_reliable_180_without_prack_gives_up() {
    let mut sim = Sim::new(Script::Answer);
    let user = sim.register();
    sim.incoming_invite_with(&user, "Supported: 100rel\r\n");
    sim.until(Duration::from_secs(5), |e| e["event"] == "incoming-session");
    let reason = sim.terminated_reason_within(Duration::from_secs(40));
    assert_eq!(reason, "504 Server Time-out");
    assert!(sim.sip_in.iter().any(|m| m.starts_with("SIP/2.0 504 ")));
    assert!(sim.ringing().len() > 5);
}

impl Sim {
    fn terminated_reason_within(&mut self, max: Duration) -> String {
        let seen = self.until(max, |e| e["event"] == "state" && e["state"] == "terminated");
        seen.iter().find(|e| e["state"] == "terminated").expect("terminated")["reason"].as_str().unwrap().to_string()
    }
}

// ===== Carrier SIP: DTMF INFO from the SIP side =====

impl Sim {
    /// The far end sends an INFO with `content_type` and `body` in the answered dialog of the
    /// outgoing call; returns the gateway's answer.
    fn far_info(&mut self, content_type: &str, body: &str, cseq: u32) -> String {
        let invite = self.last_invite.clone().expect("an outgoing call");
        let target = header(&invite, "Contact").trim_start_matches('<').trim_end_matches('>').to_string();
        let info = format!(
            "INFO {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinfo{cseq}\r\nFrom: {};tag=far1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} INFO\r\nMax-Forwards: 70\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            header(&invite, "To"),
            header(&invite, "From"),
            header(&invite, "Call-ID"),
            body.len()
        );
        let before = self.sip_in.len();
        self.net.far_send(info);
        self.run(Duration::from_millis(100));
        self.sip_in[before..].iter().find(|m| m.contains(" INFO\r\n")).expect("the INFO answered").clone()
    }
}

/// A DTMF INFO from the SIP side (`application/dtmf-relay` and `application/dtmf`) is answered
/// 200 and reaches the browser as RFC 4733 telephone-events at the browser's number: a start
/// (M bit) and three ends (E bit, the INFO's duration at 8 kHz), one timestamp per event, in
/// sequence with the audio around it. An INFO of another type is answered 200 and sends nothing.
#[test]
fn sip_info_dtmf_reaches_the_browser_as_rfc4733() {
    let mut sim = Sim::new(Script::Answer);
    sim.outgoing_call();
    sim.run(Duration::from_millis(300));
    let tele = sylkgw_tests::webrtc_client::TELE;
    let ok = sim.far_info("application/dtmf-relay", "Signal=5\r\nDuration=250\r\n", 2);
    assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
    let ok = sim.far_info("application/dtmf", "#", 3);
    assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
    let ok = sim.far_info("text/plain", "hello", 4);
    assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
    sim.run(Duration::from_millis(300));
    let events: Vec<_> = sim.browser.got.iter().filter(|g| g.pt == tele).cloned().collect();
    assert_eq!(events.len(), 8, "two events of four packets: {events:?}");
    let payloads: Vec<&[u8]> = events.iter().map(|g| g.payload.as_slice()).collect();
    assert_eq!(
        payloads[..4],
        [&[5, 10, 0, 160][..], &[5, 0x8a, 0x07, 0xd0], &[5, 0x8a, 0x07, 0xd0], &[5, 0x8a, 0x07, 0xd0]]
    );
    assert_eq!(
        payloads[4..],
        [&[11, 10, 0, 160][..], &[11, 0x8a, 0x05, 0x00], &[11, 0x8a, 0x05, 0x00], &[11, 0x8a, 0x05, 0x00]]
    );
    assert!(events[0].marker && events[4].marker && !events[1].marker);
    assert!(events[..4].iter().all(|g| g.ts == events[0].ts) && events[4..].iter().all(|g| g.ts == events[4].ts));
    // In sequence with the far end's audio: one stream, no gap, no reuse.
    let mut seqs: Vec<u16> = sim.browser.got.iter().filter(|g| g.pt == 0 || g.pt == tele).map(|g| g.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), sim.browser.got.iter().filter(|g| g.pt == 0 || g.pt == tele).count(), "no sequence reused");
    sim.check_capture("call_sip_info_dtmf_to_browser");
}

/// A SIP peer that offers telephone-event/48000 only (with Opus, RFC 7587 §7): the browser
/// (telephone-event/8000 only) is offered 8000 at the same number, our 200 keeps 48000, and each
/// event's duration is scaled on the way: ×6 towards the SIP side, ÷6 towards the browser.
#[test]
fn incoming_telephone_event_48000_is_mapped_to_8000() {
    let mut sim = Sim::new(Script::Answer);
    let user = sim.register();
    let sdp = far_sdp("sendrecv").replace("telephone-event/8000", "telephone-event/48000");
    assert!(sdp.contains("telephone-event/48000"), "{sdp}");
    let invite = format!(
        "INVITE sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\n\
         From: \"Bob\" <sip:bob@example.com>;tag=bobtag\r\nTo: <sip:alice@example.com>\r\nCall-ID: incoming-1@far\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sim.net.far_send(invite.clone());
    let seen = sim.until(Duration::from_secs(5), |e| e["event"] == "incoming-session");
    let inc = seen.iter().find(|e| e["event"] == "incoming-session").expect("offered to the browser").clone();
    let offer = inc["sdp"].as_str().unwrap();
    assert!(offer.contains("a=rtpmap:101 telephone-event/8000"), "the browser's rate: {offer}");
    let answer = sim.browser.answer(offer, true);
    let req = serde_json::json!({"sylkrtc": "session-answer", "session": inc["session"], "sdp": answer});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    sim.until_state("established");
    let ok = sim.sip_in.iter().find(|m| m.starts_with("SIP/2.0 200 OK") && m.contains(" INVITE\r\n")).unwrap().clone();
    assert!(body(&ok).contains("a=rtpmap:101 telephone-event/48000"), "the SIP side's rate: {ok}");
    assert!(!body(&ok).contains("telephone-event/8000"), "{ok}");
    sim.far_rtp_target = Some(sdp_rtp_addr(body(&ok)));
    sim.far_ack(&user, &invite, &ok);
    sim.run(Duration::from_millis(500));
    // The browser's event 5, ended: 800 ticks at 8 kHz (100 ms).
    sim.browser_seq += 1;
    let (now, seq) = (sim.net.now, sim.browser_seq);
    let header = (101, seq, (seq * 160) as u32, true);
    sim.browser.send_rtp(now, header, &[5, 0x8a, 0x03, 0x20], LATENCY, &mut sim.net.wire);
    // The far end's event 7, ended: 4800 ticks at 48 kHz (100 ms).
    sim.far_seq = sim.far_seq.wrapping_add(1);
    let h = rtp::RtpOut { marker: true, pt: 101, seq: sim.far_seq, ts: u32::from(sim.far_seq) * 160, ssrc: 0xfa7 };
    let mut buf = vec![0; 64];
    let n = rtp::write_packet(&mut buf, &h, &[7, 0x8a, 0x12, 0xc0]).unwrap();
    buf.truncate(n);
    let to = sim.far_rtp_target.expect("the gateway's RTP address");
    sim.net.wire.push_back(Datagram { at: now + LATENCY, from: addr(FAR_RTP), to, data: buf });
    sim.run(Duration::from_millis(300));
    let to_far: Vec<_> = sim.far_rtp.iter().filter(|(pt, _)| *pt == 101).collect();
    assert_eq!(to_far, [&(101, vec![5, 0x8a, 0x12, 0xc0])], "4800 ticks at 48 kHz");
    let to_browser: Vec<_> = sim.browser.got.iter().filter(|g| g.pt == 101).map(|g| g.payload.clone()).collect();
    assert_eq!(to_browser, [vec![7, 0x8a, 0x03, 0x20]], "800 ticks at 8 kHz");
    sim.check_capture("call_incoming_telephone_event_48000");
}

// ===== Carrier SIP: incoming late offer (RFC 3261 §13.2.1) =====

/// An incoming INVITE without SDP (488 before): the browser is offered every codec we carry; its
/// answer becomes our offer in the 200 (the codecs it kept, at the offered numbers); the far
/// end's answer in the ACK starts the SIP-side media, and RTP flows both ways.
#[test]
fn incoming_late_offer_is_offered_in_the_200_and_answered_in_the_ack() {
    let mut sim = Sim::new(Script::Answer);
    let user = sim.register();
    let invite = format!(
        "INVITE sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\n\
         From: \"Bob\" <sip:bob@example.com>;tag=bobtag\r\nTo: <sip:alice@example.com>\r\nCall-ID: incoming-1@far\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:5070>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sim.net.far_send(invite.clone());
    let seen = sim.until(Duration::from_secs(5), |e| e["event"] == "incoming-session");
    let inc = seen.iter().find(|e| e["event"] == "incoming-session").expect("offered to the browser").clone();
    let offer = inc["sdp"].as_str().unwrap();
    assert_eq!(audio_pts(offer), ["111", "9", "0", "8", "101"], "every codec we carry");
    let answer = sim.browser.answer(offer, true);
    let req = serde_json::json!({"sylkrtc": "session-answer", "session": inc["session"], "sdp": answer});
    assert_eq!(sim_ack(sim.request(&req.to_string())), "ack");
    sim.until_state("established");
    let ok = sim.sip_in.iter().find(|m| m.starts_with("SIP/2.0 200 OK") && m.contains(" INVITE\r\n")).unwrap().clone();
    assert_eq!(header(&ok, "Content-Type"), "application/sdp");
    assert_eq!(audio_pts(body(&ok)), ["111", "0", "101"], "what the browser kept: {ok}");
    sim.far_rtp_target = Some(sdp_rtp_addr(body(&ok)));
    let sdp = far_sdp("sendrecv");
    let ack = format!(
        "ACK sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack1\r\nFrom: {}\r\nTo: {}\r\nCall-ID: incoming-1@far\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        header(&invite, "From"),
        header(&ok, "To"),
        sdp.len()
    );
    sim.net.far_send(ack);
    sim.run(Duration::from_secs(1));
    assert!(sim.far_rtp.len() > 20 && sim.far_rtp.iter().all(|(pt, p)| *pt == 0 && p == b"from-browser"));
    assert!(sim.browser.got.iter().filter(|g| g.pt == 0 && g.payload == b"from-far-end").count() > 20);
    sim.check_capture("call_incoming_late_offer");
}
