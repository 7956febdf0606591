//! The browser leg (`media::webrtc::BrowserLeg`) against a str0m "browser" (full ICE, controlling,
//! RTP mode) over an in-memory network on a virtual clock: SDP offer/answer with codec narrowing,
//! ICE + DTLS + SRTP up (`Connected`), RTP both ways with the payload bytes checked, and two legs
//! behind one `Demux` on one shared "socket" receiving only their own traffic.
//!
//! Also the other way round (incoming calls): the leg offers (`create_offer`) with the SIP side's
//! codecs at its PTs and accepts the browser's answer, with the browser answering `a=setup:active`
//! (as browsers do) or `a=setup:passive`; renegotiation for hold and resume from either side
//! (`create_reoffer` + `accept_answer`, or a browser re-offer through `accept_offer`) with ICE and
//! DTLS staying up; and the errors of `accept_answer`.

#![allow(clippy::disallowed_methods)] // Instant::now is only the epoch of the virtual clock

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::media::Direction;
use sylkgw_core::media::demux::Demux;
use sylkgw_core::media::sdp::{Codec as SdpCodec, Direction as SdpDirection};
use sylkgw_core::media::webrtc::{BrowserLeg, DtlsIdentity, LegOutput, WebRtcError};
use sylkgw_core::rng::Rng;
use sylkgw_tests::webrtc_client::{Datagram, Got, Video, WebRtcClient as Browser, TELE};

/// The shared WebRTC socket's advertised addresses.
const GW_V4: &str = "198.51.100.1:40000";
const GW_V6: &str = "[2001:db8::1]:40000";
/// One-way delay of the in-memory network.
const LATENCY: Duration = Duration::from_millis(15);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A fixed certificate for the whole test (a runtime makes one with `driver::webrtc_dtls_identity`).
fn test_cert() -> DtlsIdentity {
    str0m::crypto::from_feature_flags().dtls_provider.generate_certificate().expect("certificate").into()
}

/// A browser-like offerer: full ICE, Opus + PCMU + telephone-event/8000, one audio m-line.
fn new_browser(now: Instant, addr: SocketAddr) -> (Browser, String) {
    let mut b = Browser::browser(now, addr, Video::None);
    let offer = b.offer(false).expect("an offer");
    (b, offer)
}

/// A browser answering the gateway's offer (an incoming call), with the same codecs as
/// [`new_browser`] (Opus at 111, telephone-event at 126: the offer's PTs must win); with
/// `setup_active` it answers `a=setup:active` as browsers do ([`Browser::answer`]).
fn answering(now: Instant, addr: SocketAddr, offer: &str, setup_active: bool) -> (Browser, String) {
    let mut b = Browser::browser(now, addr, Video::None);
    let answer = b.answer(offer, setup_active);
    (b, answer)
}

/// The gateway's side: legs behind one demux on one socket (both advertised addresses).
struct Gateway {
    demux: Demux<usize>,
    legs: Vec<BrowserLeg>,
    outputs: Vec<Vec<LegOutput>>,
    timeouts: Vec<Option<Instant>>,
    /// Datagrams the demux could not route, and routed ones the leg refused.
    unrouted: usize,
    refused: usize,
}

impl Gateway {
    fn new() -> Self {
        Self {
            demux: Demux::new(),
            legs: Vec::new(),
            outputs: Vec::new(),
            timeouts: Vec::new(),
            unrouted: 0,
            refused: 0,
        }
    }

    fn add(&mut self, leg: BrowserLeg) -> usize {
        let id = self.legs.len();
        self.demux.register(leg.ufrag(), id).expect("unique ufrag");
        self.legs.push(leg);
        self.outputs.push(Vec::new());
        self.timeouts.push(None);
        id
    }

    fn drain(&mut self, now: Instant, wire: &mut VecDeque<Datagram>) {
        for (i, leg) in self.legs.iter_mut().enumerate() {
            self.timeouts[i] = None;
            while let Some(o) = leg.poll(now) {
                match o {
                    LegOutput::Transmit { to, from, payload } => {
                        wire.push_back(Datagram { at: now + LATENCY, from, to, data: payload })
                    }
                    LegOutput::Timeout(t) => {
                        self.timeouts[i] = Some(t);
                        break;
                    }
                    other => self.outputs[i].push(other),
                }
            }
        }
    }

    /// A datagram arriving on the shared socket at `local`: routed by the demux, never by asking
    /// every leg.
    fn receive(&mut self, now: Instant, d: &Datagram) {
        let Some(call) = self.demux.route(d.from, &d.data) else {
            self.unrouted += 1;
            return;
        };
        if self.legs[call].handle_datagram(now, d.from, d.to, &d.data) {
            self.demux.learn(d.from, call);
        } else {
            self.refused += 1;
        }
    }

    fn rtp(&self, call: usize) -> Vec<Got> {
        self.outputs[call]
            .iter()
            .filter_map(|o| match o {
                LegOutput::Rtp { pt, seq, ts, marker, ssrc, payload, .. } => {
                    Some(Got { pt: *pt, seq: *seq, ts: *ts, marker: *marker, ssrc: *ssrc, payload: payload.to_vec() })
                }
                _ => None,
            })
            .collect()
    }

    fn connected(&self, call: usize) -> bool {
        self.outputs[call].contains(&LegOutput::Connected)
    }
}

/// Browsers, the gateway and the wire between them, on a virtual clock: the epoch plus offsets,
/// advancing to the earliest timeout or arrival.
struct Sim {
    now: Instant,
    epoch: Instant,
    browsers: Vec<Browser>,
    gw: Gateway,
    wire: VecDeque<Datagram>,
    gw_addrs: [SocketAddr; 2],
    /// While set, the network loses everything.
    outage: bool,
}

impl Sim {
    fn new() -> Self {
        let epoch = Instant::now();
        Self {
            now: epoch,
            epoch,
            browsers: Vec::new(),
            gw: Gateway::new(),
            wire: VecDeque::new(),
            gw_addrs: [addr(GW_V4), addr(GW_V6)],
            outage: false,
        }
    }

    /// One browser and its leg: offer, narrowed answer (PCMU + telephone-event only), accepted.
    fn call(&mut self, browser_addr: &str, rng: &mut Rng, cert: &DtlsIdentity) -> (usize, String) {
        let (mut browser, offer) = new_browser(self.now, addr(browser_addr));
        let mut leg = BrowserLeg::new(cert, &self.gw_addrs, rng);
        let allowed = [SdpCodec::pcmu(), SdpCodec::telephone_event(TELE)];
        let answer = leg.accept_offer(&offer, &allowed, self.now).expect("answer");
        browser.accept_answer(&answer).unwrap();
        self.browsers.push(browser);
        (self.gw.add(leg), answer)
    }

    /// An incoming call: the leg offers `allowed` (the SIP offer's codecs), a browser answers, the
    /// leg accepts the answer. Returns the call, the offer and the answer.
    fn incoming(
        &mut self,
        browser_addr: &str,
        rng: &mut Rng,
        cert: &DtlsIdentity,
        allowed: &[SdpCodec],
        setup_active: bool,
    ) -> (usize, String, String) {
        let mut leg = BrowserLeg::new(cert, &self.gw_addrs, rng);
        let offer = leg.create_offer(allowed, self.now).expect("offer");
        assert!(leg.has_pending_offer() && leg.direction().is_none());
        let (browser, answer) = answering(self.now, addr(browser_addr), &offer, setup_active);
        // sylkrtc.js trickles after session-answer; an early one is kept until the answer.
        leg.add_remote_candidate(&format!(
            "candidate:1 1 udp 2130706431 {} {} typ host",
            browser.addr.ip(),
            browser.addr.port()
        ))
        .unwrap();
        leg.accept_answer(&answer, self.now).expect("answer accepted");
        assert!(!leg.has_pending_offer());
        self.browsers.push(browser);
        (self.gw.add(leg), offer, answer)
    }

    /// The gateway re-offers `dir` (SIP hold/resume), the browser answers, the leg accepts.
    fn gw_reoffer(&mut self, call: usize, browser: usize, dir: SdpDirection) -> (String, String) {
        let before = self.gw.legs[call].direction();
        let offer = self.gw.legs[call].create_reoffer(dir, self.now).expect("re-offer");
        assert_eq!(self.gw.legs[call].direction(), before, "a pending re-offer changes nothing yet");
        let answer = self.browsers[browser].answer(&offer, false);
        self.gw.legs[call].accept_answer(&answer, self.now).expect("re-answer accepted");
        assert_eq!(self.gw.legs[call].direction(), Some(dir), "{answer}");
        (offer, answer)
    }

    /// The browser re-offers `dir`, the leg answers through `accept_offer`, the browser accepts.
    fn browser_reoffer(&mut self, call: usize, browser: usize, dir: Direction) -> String {
        let offer = self.browsers[browser].reoffer(dir);
        let answer = self.gw.legs[call].accept_offer(&offer, &[], self.now).expect("answer to a re-offer");
        self.browsers[browser].accept_answer(&answer).unwrap();
        answer
    }

    /// `n` packets each way (browser at `pt_browser`, gateway at `pt_gw`), 20 ms apart, starting
    /// at sequence number `first`. Returns what the gateway and the browser received meanwhile.
    fn exchange(&mut self, call: usize, browser: usize, pt: u8, first: u16, n: u16) -> (Vec<Got>, Vec<Got>) {
        let (gw_before, br_before) = (self.gw.rtp(call).len(), self.browsers[browser].got.len());
        for k in first..first + n {
            let now = self.now;
            self.browsers[browser].send_rtp(
                now,
                (pt, u64::from(k), u32::from(k) * 160, u64::from(k) == 1),
                &payload(0x5A, k),
                LATENCY,
                &mut self.wire,
            );
            let sent = self.gw.legs[call].write_rtp(
                now,
                false,
                pt,
                u64::from(k),
                u32::from(k) * 160,
                false,
                &payload(0xC3, k),
            );
            assert_eq!(sent, Ok(()), "gateway packet {k}");
            self.advance(Duration::from_millis(20));
        }
        (self.gw.rtp(call)[gw_before..].to_vec(), self.browsers[browser].got[br_before..].to_vec())
    }

    fn drain_all(&mut self) {
        for b in &mut self.browsers {
            b.drain(self.now, LATENCY, &mut self.wire);
        }
        self.gw.drain(self.now, &mut self.wire);
    }

    /// Runs until `done` holds (checked whenever nothing is due) or `limit` of virtual time.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            self.drain_all();
            if let Some(d) =
                self.wire.front().is_some_and(|d| d.at <= self.now).then(|| self.wire.pop_front()).flatten()
            {
                if self.outage {
                    continue;
                }
                if self.gw_addrs.contains(&d.to) {
                    self.gw.receive(self.now, &d);
                } else if let Some(b) = self.browsers.iter_mut().find(|b| b.addr == d.to) {
                    b.receive(self.now, d.from, d.to, &d.data).unwrap();
                }
                continue;
            }
            if done(self) {
                return true;
            }
            let next = self
                .browsers
                .iter()
                .map(|b| b.timeout)
                .chain(self.wire.front().map(|d| d.at))
                .chain(self.gw.timeouts.iter().flatten().copied())
                .min()
                .unwrap_or(end);
            if next > end {
                return done(self);
            }
            self.now = self.now.max(next);
            for b in &mut self.browsers {
                if b.timeout <= self.now {
                    b.handle_timeout(self.now).unwrap();
                }
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        self.run_until(d, |_| false);
        self.now = self.now.max(target);
    }
}

fn audio_formats(sdp: &str) -> Vec<String> {
    let m = sdp.lines().find(|l| l.starts_with("m=audio")).expect("audio m-line");
    m.split_whitespace().skip(3).map(str::to_string).collect()
}

fn payload(tag: u8, n: u16) -> Vec<u8> {
    (0..160u16).map(|i| tag ^ (i as u8).wrapping_add(n as u8)).collect()
}

fn rtpmaps(sdp: &str) -> Vec<String> {
    sdp.lines().filter_map(|l| l.strip_prefix("a=rtpmap:")).map(|l| l.trim().to_string()).collect()
}

/// The direction attribute of the audio section.
fn audio_direction(sdp: &str) -> &str {
    let audio = sdp.split("m=audio").nth(1).expect("audio m-line");
    let audio = audio.split("\nm=").next().unwrap();
    ["sendrecv", "sendonly", "recvonly", "inactive"]
        .into_iter()
        .find(|d| audio.lines().any(|l| l.trim() == format!("a={d}")))
        .expect("a direction")
}

fn payloads(got: &[Got]) -> Vec<Vec<u8>> {
    got.iter().map(|g| g.payload.clone()).collect()
}

#[test]
fn ice_dtls_srtp_and_rtp_both_ways() {
    let cert = test_cert();
    let mut rng = Rng::new([1; 32]);
    let mut sim = Sim::new();
    let (call, answer) = sim.call("192.0.2.10:50000", &mut rng, &cert);

    // The answer: PCMU and telephone-event only, at the offer's PTs; ICE-lite; both candidates.
    assert_eq!(audio_formats(&answer), ["0", "126"], "{answer}");
    assert!(answer.contains("a=rtpmap:0 PCMU/8000"), "{answer}");
    assert!(answer.contains("a=rtpmap:126 telephone-event/8000"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("opus"), "{answer}");
    assert!(answer.contains("a=ice-lite") && answer.contains("a=setup:passive"), "{answer}");
    assert!(answer.contains("198.51.100.1 40000 typ host") && answer.contains("2001:db8::1 40000 typ host"));

    // ICE + DTLS + SRTP.
    let up = sim.run_until(Duration::from_secs(5), |s| s.gw.connected(call) && s.browsers[0].connected);
    assert!(up, "not connected after 5 s: {:?}", sim.gw.outputs[call]);
    // STUN check and response, DTLS flight 1-4 (no cookie exchange): about 3 round trips.
    let setup = sim.now - sim.epoch;
    assert!(setup >= 4 * LATENCY && setup < Duration::from_secs(1), "setup took {setup:?} of virtual time");
    assert_eq!((sim.gw.unrouted, sim.gw.refused), (0, 0));

    // Browser → gateway: 10 PCMU packets, 20 ms apart, and one telephone-event.
    let browser_ssrc = sim.browsers[0].audio_ssrc();
    for n in 1..=10u16 {
        let now = sim.now;
        sim.browsers[0].send_rtp(
            now,
            (0, u64::from(n), u32::from(n) * 160, u64::from(n) == 1),
            &payload(0xA5, n),
            LATENCY,
            &mut sim.wire,
        );
        sim.advance(Duration::from_millis(20));
    }
    let now = sim.now;
    sim.browsers[0].send_rtp(now, (TELE, 11, 1760, false), &[5, 0x8a, 0, 160], LATENCY, &mut sim.wire);
    sim.advance(Duration::from_millis(20));
    let got = sim.gw.rtp(call);
    assert_eq!(got.len(), 11, "{got:?}");
    for (i, g) in got[..10].iter().enumerate() {
        let n = i as u16 + 1;
        assert_eq!((g.pt, g.seq, g.ts, g.ssrc), (0, n, u32::from(n) * 160, browser_ssrc));
        assert_eq!(g.payload, payload(0xA5, n));
        assert_eq!(g.marker, n == 1);
    }
    assert_eq!((got[10].pt, got[10].payload.as_slice()), (TELE, &[5, 0x8a, 0, 160][..]));

    // Gateway → browser: 10 PCMU packets on the leg's own SSRC, sequence starting small.
    for n in 1..=10u16 {
        let now = sim.now;
        sim.gw.legs[call]
            .write_rtp(now, false, 0, 100 + u64::from(n), 8000 + u32::from(n) * 160, n == 1, &payload(0x3C, n))
            .unwrap();
        sim.advance(Duration::from_millis(20));
    }
    let got = &sim.browsers[0].got;
    assert_eq!(got.len(), 10, "{got:?}");
    for (i, g) in got.iter().enumerate() {
        let n = i as u16 + 1;
        assert_eq!((g.pt, g.seq, g.ts, g.marker), (0, 100 + n, 8000 + u32::from(n) * 160, n == 1));
        assert_eq!(g.payload, payload(0x3C, n));
    }
    // A PT that was not negotiated is refused.
    assert!(sim.gw.legs[call].write_rtp(sim.now, false, 111, 200, 0, false, &[1]).is_err());
    assert_eq!((sim.gw.unrouted, sim.gw.refused), (0, 0));

    // The browser vanishes: after 15 s without a consent check ICE is lost; str0m never gives up
    // by itself, so the leg reports it and comes back when the checks do.
    sim.outage = true;
    let cut = sim.now;
    let lost = sim.run_until(Duration::from_secs(30), |s| s.gw.outputs[call].last() == Some(&LegOutput::Disconnected));
    let after = sim.now - cut;
    assert!(
        lost && after >= Duration::from_secs(15) && after < Duration::from_secs(20),
        "Disconnected after {after:?}"
    );
    sim.outage = false;
    let back = sim.run_until(Duration::from_secs(30), |s| s.gw.outputs[call].last() == Some(&LegOutput::Reconnected));
    assert!(back, "no Reconnected: {:?}", &sim.gw.outputs[call][11..]);
    assert!(sim.gw.legs[call].write_rtp(sim.now, false, 0, 111, 9760, false, &payload(0x3C, 11)).is_ok());

    // Closing: DTLS close_notify reaches the browser, the leg reports Closed.
    sim.gw.legs[call].close();
    sim.advance(Duration::from_millis(50));
    assert_eq!(sim.gw.outputs[call].last(), Some(&LegOutput::Closed));
    assert!(!sim.gw.legs[call].is_alive());
}

#[test]
fn two_legs_behind_one_demux_get_only_their_own_traffic() {
    let cert = test_cert();
    let mut rng = Rng::new([2; 32]);
    let mut sim = Sim::new();
    let (a, _) = sim.call("192.0.2.10:50000", &mut rng, &cert);
    let (b, _) = sim.call("192.0.2.11:50002", &mut rng, &cert);
    assert_ne!(sim.gw.legs[a].ufrag(), sim.gw.legs[b].ufrag());

    let up = sim.run_until(Duration::from_secs(5), |s| {
        s.gw.connected(a) && s.gw.connected(b) && s.browsers.iter().all(|x| x.connected)
    });
    assert!(up, "not connected: {:?} / {:?}", sim.gw.outputs[a], sim.gw.outputs[b]);

    // Both browsers talk at once; each leg answers its own.
    let ssrcs = [sim.browsers[0].audio_ssrc(), sim.browsers[1].audio_ssrc()];
    for n in 1..=5u16 {
        let now = sim.now;
        for (i, tag) in [(0usize, 0x11u8), (1, 0x22)] {
            sim.browsers[i].send_rtp(
                now,
                (0, u64::from(n), u32::from(n) * 160, u64::from(n) == 1),
                &payload(tag, n),
                LATENCY,
                &mut sim.wire,
            );
        }
        for (call, tag) in [(a, 0xAAu8), (b, 0xBB)] {
            sim.gw.legs[call]
                .write_rtp(now, false, 0, u64::from(n), u32::from(n) * 160, false, &payload(tag, n))
                .unwrap();
        }
        sim.advance(Duration::from_millis(20));
    }

    for (call, browser, tag) in [(a, 0usize, 0x11u8), (b, 1, 0x22)] {
        let got = sim.gw.rtp(call);
        assert_eq!(got.len(), 5, "leg {call}: {got:?}");
        assert!(got.iter().all(|g| g.ssrc == ssrcs[browser]), "leg {call} got another browser's stream");
        assert_eq!(
            got.iter().map(|g| g.payload.clone()).collect::<Vec<_>>(),
            (1..=5).map(|n| payload(tag, n)).collect::<Vec<_>>()
        );
    }
    for (browser, tag) in [(0usize, 0xAAu8), (1, 0xBB)] {
        let got = &sim.browsers[browser].got;
        assert_eq!(
            got.iter().map(|g| g.payload.clone()).collect::<Vec<_>>(),
            (1..=5).map(|n| payload(tag, n)).collect::<Vec<_>>()
        );
    }
    // Every datagram reached the right leg at the first try: none unroutable, none refused.
    assert_eq!((sim.gw.unrouted, sim.gw.refused), (0, 0));

    // Browser 1 hangs up (DTLS close_notify): only its leg closes.
    let now = sim.now;
    sim.browsers[1].rtc.close().unwrap();
    sim.browsers[1].drain(now, LATENCY, &mut sim.wire);
    sim.advance(Duration::from_millis(100));
    assert_eq!(sim.gw.outputs[b].last(), Some(&LegOutput::Closed));
    assert!(sim.gw.legs[a].is_alive() && !sim.gw.legs[b].is_alive());
    sim.gw.demux.remove(b);

    // A leg that is gone no longer receives anything.
    sim.gw.demux.remove(a);
    let now = sim.now;
    sim.browsers[0].send_rtp(now, (0, 6, 960, false), &payload(0x11, 6), LATENCY, &mut sim.wire);
    sim.advance(Duration::from_millis(20));
    assert_eq!(sim.gw.rtp(a).len(), 5);
    assert!(sim.gw.unrouted >= 1);
}

/// An incoming call: the leg offers PCMU + telephone-event at the SIP side's PTs (0, 101), a
/// browser answers `a=setup:active` (it is the DTLS client), ICE + DTLS come up, RTP flows both
/// ways at those PTs.
#[test]
fn incoming_call_leg_offers_and_browser_answers_setup_active() {
    let cert = test_cert();
    let mut rng = Rng::new([7; 32]);
    let mut sim = Sim::new();
    let allowed = [SdpCodec::pcmu(), SdpCodec::telephone_event(101)];
    let (call, offer, answer) = sim.incoming("192.0.2.20:50000", &mut rng, &cert, &allowed, true);

    // Our offer: only the SIP side's codecs at its PTs, ICE-lite, actpass, every host candidate.
    assert_eq!(audio_formats(&offer), ["0", "101"], "{offer}");
    assert_eq!(rtpmaps(&offer), ["0 PCMU/8000", "101 telephone-event/8000"], "{offer}");
    assert!(offer.contains("a=fmtp:101 0-16"), "{offer}");
    assert!(!offer.to_ascii_lowercase().contains("opus"), "{offer}");
    assert!(offer.contains("a=ice-lite") && offer.contains("a=setup:actpass"), "{offer}");
    assert!(offer.contains("a=fingerprint:sha-256 "), "{offer}");
    assert!(offer.contains(&format!("a=ice-ufrag:{}", sim.gw.legs[call].ufrag())), "{offer}");
    assert_eq!(offer.matches("a=candidate:").count(), 2, "{offer}");
    assert!(offer.contains("198.51.100.1 40000 typ host") && offer.contains("2001:db8::1 40000 typ host"));
    assert_eq!(audio_direction(&offer), "sendrecv");
    // The browser answered with our PTs (not its own 126) and as the DTLS client.
    assert_eq!(audio_formats(&answer), ["0", "101"], "{answer}");
    assert!(answer.contains("a=setup:active") && !answer.contains("a=ice-lite"), "{answer}");
    assert_eq!(sim.gw.legs[call].payload_types(), [0, 101]);
    assert_eq!(sim.gw.legs[call].direction(), Some(SdpDirection::SendRecv));

    let up = sim.run_until(Duration::from_secs(5), |s| s.gw.connected(call) && s.browsers[0].connected);
    assert!(up, "not connected after 5 s: {:?}", sim.gw.outputs[call]);
    assert!(sim.now - sim.epoch < Duration::from_secs(1), "setup took {:?}", sim.now - sim.epoch);
    assert_eq!((sim.gw.unrouted, sim.gw.refused), (0, 0));

    let browser_ssrc = sim.browsers[0].audio_ssrc();
    let (at_gw, at_browser) = sim.exchange(call, 0, 0, 1, 10);
    assert_eq!(at_gw.len(), 10, "{at_gw:?}");
    assert!(at_gw.iter().all(|g| g.pt == 0 && g.ssrc == browser_ssrc));
    assert_eq!(payloads(&at_gw), (1..=10).map(|n| payload(0x5A, n)).collect::<Vec<_>>());
    assert_eq!(at_browser.len(), 10, "{at_browser:?}");
    assert!(at_browser.iter().all(|g| g.pt == 0));
    assert_eq!(payloads(&at_browser), (1..=10).map(|n| payload(0xC3, n)).collect::<Vec<_>>());
    // telephone-event at the SIP side's 101, both ways.
    let (at_gw, at_browser) = sim.exchange(call, 0, 101, 11, 1);
    assert_eq!((at_gw.len(), at_gw[0].pt), (1, 101));
    assert_eq!((at_browser.len(), at_browser[0].pt), (1, 101));
    assert_eq!(sim.gw.legs[call].write_rtp(sim.now, false, 126, 12, 0, false, &[1]), Err(WebRtcError::UnknownPt(126)));
    assert_eq!((sim.gw.unrouted, sim.gw.refused), (0, 0));
    assert_eq!(sim.gw.outputs[call].iter().filter(|o| **o == LegOutput::Connected).count(), 1);
}

/// The SIP side offered Opus at 96: the browser is offered Opus at 96 and uses it; the browser
/// answers `a=setup:passive` here, so the leg is the DTLS client.
#[test]
fn incoming_call_keeps_the_sip_sides_opus_pt_and_setup_passive_works() {
    let cert = test_cert();
    let mut rng = Rng::new([8; 32]);
    let mut sim = Sim::new();
    let allowed = [SdpCodec::opus(96), SdpCodec::pcmu(), SdpCodec::telephone_event(101)];
    let (call, offer, answer) = sim.incoming("192.0.2.21:50000", &mut rng, &cert, &allowed, false);
    assert_eq!(audio_formats(&offer), ["96", "0", "101"], "{offer}");
    assert_eq!(rtpmaps(&offer), ["96 opus/48000/2", "0 PCMU/8000", "101 telephone-event/8000"], "{offer}");
    assert!(!offer.contains("a=rtpmap:111"), "{offer}");
    assert_eq!(audio_formats(&answer), ["96", "0", "101"], "{answer}");
    assert!(answer.contains("a=setup:passive"), "{answer}");
    assert_eq!(sim.gw.legs[call].payload_types(), [96, 0, 101]);

    let up = sim.run_until(Duration::from_secs(5), |s| s.gw.connected(call) && s.browsers[0].connected);
    assert!(up, "not connected after 5 s: {:?}", sim.gw.outputs[call]);
    let (at_gw, at_browser) = sim.exchange(call, 0, 96, 1, 5);
    assert_eq!(at_gw.iter().map(|g| g.pt).collect::<Vec<_>>(), [96; 5]);
    assert_eq!(payloads(&at_gw), (1..=5).map(|n| payload(0x5A, n)).collect::<Vec<_>>());
    assert_eq!(at_browser.iter().map(|g| g.pt).collect::<Vec<_>>(), [96; 5]);
    assert_eq!(payloads(&at_browser), (1..=5).map(|n| payload(0xC3, n)).collect::<Vec<_>>());
    assert_eq!((sim.gw.unrouted, sim.gw.refused), (0, 0));
}

/// Hold and resume from the SIP side: re-offers `sendonly`, `inactive`, `sendrecv` (and a refresh
/// with no change); ICE and DTLS stay up and RTP flows again after the resume.
#[test]
fn gateway_reoffers_hold_and_resume() {
    let cert = test_cert();
    let mut rng = Rng::new([9; 32]);
    let mut sim = Sim::new();
    let allowed = [SdpCodec::pcmu(), SdpCodec::telephone_event(101)];
    let (call, _, _) = sim.incoming("192.0.2.22:50000", &mut rng, &cert, &allowed, true);
    let up = sim.run_until(Duration::from_secs(5), |s| s.gw.connected(call) && s.browsers[0].connected);
    assert!(up, "not connected: {:?}", sim.gw.outputs[call]);
    let (at_gw, at_browser) = sim.exchange(call, 0, 0, 1, 3);
    assert_eq!((at_gw.len(), at_browser.len()), (3, 3));

    // Hold, SIP `sendonly`: we keep sending (music on hold), the browser answers recvonly.
    let (offer, answer) = sim.gw_reoffer(call, 0, SdpDirection::SendOnly);
    assert_eq!((audio_direction(&offer), audio_direction(&answer)), ("sendonly", "recvonly"));
    assert!(offer.contains("a=setup:actpass") && offer.contains("a=ice-lite"), "{offer}");
    assert_eq!(audio_formats(&offer), ["0", "101"], "codecs kept: {offer}");
    for k in 4..=6u16 {
        sim.gw.legs[call]
            .write_rtp(sim.now, false, 0, u64::from(k), u32::from(k) * 160, false, &payload(0xC3, k))
            .unwrap();
        sim.advance(Duration::from_millis(20));
    }
    assert_eq!(payloads(&sim.browsers[0].got[3..]), (4..=6).map(|n| payload(0xC3, n)).collect::<Vec<_>>());

    // Hold, SIP `inactive`: nothing may be sent.
    let (offer, answer) = sim.gw_reoffer(call, 0, SdpDirection::Inactive);
    assert_eq!((audio_direction(&offer), audio_direction(&answer)), ("inactive", "inactive"));
    assert_eq!(sim.gw.legs[call].write_rtp(sim.now, false, 0, 7, 1120, false, &[0; 160]), Err(WebRtcError::NotReady));
    sim.advance(Duration::from_secs(3));

    // A re-offer that the SIP side cancels: rolled back, nothing changes.
    sim.gw.legs[call].create_reoffer(SdpDirection::SendRecv, sim.now).unwrap();
    sim.gw.legs[call].rollback_offer();
    assert!(!sim.gw.legs[call].has_pending_offer());
    assert_eq!(sim.gw.legs[call].direction(), Some(SdpDirection::Inactive));
    assert_eq!(sim.gw.legs[call].accept_answer("v=0\r\n", sim.now), Err(WebRtcError::NotReady));

    // Resume: RTP both ways again, on the same ICE/DTLS.
    let (offer, answer) = sim.gw_reoffer(call, 0, SdpDirection::SendRecv);
    assert_eq!((audio_direction(&offer), audio_direction(&answer)), ("sendrecv", "sendrecv"));
    let (at_gw, at_browser) = sim.exchange(call, 0, 0, 10, 5);
    assert_eq!(payloads(&at_gw), (10..=14).map(|n| payload(0x5A, n)).collect::<Vec<_>>());
    assert_eq!(payloads(&at_browser), (10..=14).map(|n| payload(0xC3, n)).collect::<Vec<_>>());

    // A refresh (same direction) still makes an offer, and nothing breaks.
    let (offer, answer) = sim.gw_reoffer(call, 0, SdpDirection::SendRecv);
    assert_eq!((audio_direction(&offer), audio_direction(&answer)), ("sendrecv", "sendrecv"));
    let (at_gw, at_browser) = sim.exchange(call, 0, 0, 15, 3);
    assert_eq!((at_gw.len(), at_browser.len()), (3, 3));

    // Glare: the browser's offer (its hold) wins over our pending one; then it resumes.
    sim.gw.legs[call].create_reoffer(SdpDirection::Inactive, sim.now).unwrap();
    let answer = sim.browser_reoffer(call, 0, Direction::SendOnly);
    assert_eq!(audio_direction(&answer), "recvonly");
    assert!(!sim.gw.legs[call].has_pending_offer());
    assert_eq!(sim.gw.legs[call].direction(), Some(SdpDirection::RecvOnly));
    let answer = sim.browser_reoffer(call, 0, Direction::SendRecv);
    assert_eq!(audio_direction(&answer), "sendrecv");
    assert_eq!(sim.gw.legs[call].direction(), Some(SdpDirection::SendRecv));
    let (at_gw, at_browser) = sim.exchange(call, 0, 0, 18, 3);
    assert_eq!((at_gw.len(), at_browser.len()), (3, 3));

    let outputs = &sim.gw.outputs[call];
    assert_eq!(outputs.iter().filter(|o| **o == LegOutput::Connected).count(), 1);
    assert!(!outputs.iter().any(|o| matches!(o, LegOutput::Closed | LegOutput::Disconnected)), "{outputs:?}");
    assert_eq!((sim.gw.unrouted, sim.gw.refused), (0, 0));
}

/// The browser puts an outgoing call on hold and back (sylkRTC `session-update`): its re-offers go
/// through `accept_offer`; the leg's direction follows, ICE and DTLS stay up.
#[test]
fn browser_reoffers_hold_and_resume() {
    let cert = test_cert();
    let mut rng = Rng::new([10; 32]);
    let mut sim = Sim::new();
    let (call, _) = sim.call("192.0.2.23:50000", &mut rng, &cert);
    assert_eq!(sim.gw.legs[call].direction(), Some(SdpDirection::SendRecv));
    let up = sim.run_until(Duration::from_secs(5), |s| s.gw.connected(call) && s.browsers[0].connected);
    assert!(up, "not connected: {:?}", sim.gw.outputs[call]);
    let (at_gw, at_browser) = sim.exchange(call, 0, 0, 1, 3);
    assert_eq!((at_gw.len(), at_browser.len()), (3, 3));

    // The browser holds with sendonly: we only receive.
    let answer = sim.browser_reoffer(call, 0, Direction::SendOnly);
    assert_eq!(audio_direction(&answer), "recvonly");
    assert_eq!(sim.gw.legs[call].direction(), Some(SdpDirection::RecvOnly));
    assert_eq!(sim.gw.legs[call].write_rtp(sim.now, false, 0, 4, 640, false, &[0; 160]), Err(WebRtcError::NotReady));
    for k in 4..=6u16 {
        let now = sim.now;
        sim.browsers[0].send_rtp(
            now,
            (0, u64::from(k), u32::from(k) * 160, u64::from(k) == 1),
            &payload(0x5A, k),
            LATENCY,
            &mut sim.wire,
        );
        sim.advance(Duration::from_millis(20));
    }
    assert_eq!(payloads(&sim.gw.rtp(call)[3..]), (4..=6).map(|n| payload(0x5A, n)).collect::<Vec<_>>());

    // Inactive, for a while (consent checks go on).
    let answer = sim.browser_reoffer(call, 0, Direction::Inactive);
    assert_eq!(audio_direction(&answer), "inactive");
    assert_eq!(sim.gw.legs[call].direction(), Some(SdpDirection::Inactive));
    sim.advance(Duration::from_secs(20));

    // Resume.
    let answer = sim.browser_reoffer(call, 0, Direction::SendRecv);
    assert_eq!(audio_direction(&answer), "sendrecv");
    assert_eq!(sim.gw.legs[call].direction(), Some(SdpDirection::SendRecv));
    assert_eq!(audio_formats(&answer), ["0", "126"], "codecs kept: {answer}");
    let (at_gw, at_browser) = sim.exchange(call, 0, 0, 7, 5);
    assert_eq!(payloads(&at_gw), (7..=11).map(|n| payload(0x5A, n)).collect::<Vec<_>>());
    assert_eq!(payloads(&at_browser), (7..=11).map(|n| payload(0xC3, n)).collect::<Vec<_>>());

    // The gateway can re-offer on a leg that began as the answerer, too.
    let (offer, answer) = sim.gw_reoffer(call, 0, SdpDirection::SendOnly);
    assert_eq!((audio_direction(&offer), audio_direction(&answer)), ("sendonly", "recvonly"));
    sim.gw_reoffer(call, 0, SdpDirection::SendRecv);
    let (at_gw, at_browser) = sim.exchange(call, 0, 0, 12, 3);
    assert_eq!((at_gw.len(), at_browser.len()), (3, 3));

    let outputs = &sim.gw.outputs[call];
    assert_eq!(outputs.iter().filter(|o| **o == LegOutput::Connected).count(), 1);
    assert!(!outputs.iter().any(|o| matches!(o, LegOutput::Closed | LegOutput::Disconnected)), "{outputs:?}");
}

/// `accept_answer` and the offer calls refuse what they must, without panicking or killing the leg.
#[test]
fn offer_and_answer_errors() {
    #[allow(clippy::disallowed_methods)] // str0m maps Instants to NTP from the real clock
    let now = Instant::now();
    let cert = test_cert();
    let gw = [addr(GW_V4), addr(GW_V6)];
    let mut leg = BrowserLeg::new(&cert, &gw, &mut Rng::new([11; 32]));
    let allowed = [SdpCodec::pcmu(), SdpCodec::telephone_event(101)];

    // Nothing offered yet.
    assert_eq!(leg.accept_answer("v=0\r\n", now), Err(WebRtcError::NotReady));
    assert_eq!(leg.create_reoffer(SdpDirection::SendOnly, now), Err(WebRtcError::NotReady));
    assert_eq!(leg.create_offer(&[SdpCodec::vp8(96), SdpCodec::telephone_event(101)], now), Err(WebRtcError::NoCodec));
    assert_eq!(leg.poll(now), None);

    // Garbage keeps the offer pending; the real answer then works.
    let offer = leg.create_offer(&allowed, now).unwrap();
    let (_browser, answer) = answering(now, addr("192.0.2.30:50000"), &offer, true);
    assert!(matches!(leg.accept_answer("v=0\r\nnonsense", now), Err(WebRtcError::BadOffer(_))));
    assert!(matches!(leg.accept_answer("", now), Err(WebRtcError::BadOffer(_))));
    assert!(leg.is_alive() && leg.has_pending_offer());
    assert!(matches!(leg.poll(now), Some(LegOutput::Timeout(_))));

    // An answer refusing our audio m-line: the leg is back to new, and may offer again.
    let refused = answer.replacen("m=audio 9 ", "m=audio 0 ", 1);
    assert_ne!(refused, answer);
    assert_eq!(leg.accept_answer(&refused, now), Err(WebRtcError::NoCodec));
    assert!(leg.is_alive() && !leg.has_pending_offer());
    assert!(leg.payload_types().is_empty() && leg.direction().is_none());
    let offer = leg.create_offer(&allowed, now).unwrap();
    let (_browser, answer) = answering(now, addr("192.0.2.30:50000"), &offer, true);

    // An answer without a fingerprint: str0m refuses it.
    let no_fp: String =
        answer.lines().filter(|l| !l.starts_with("a=fingerprint")).map(|l| format!("{l}\r\n")).collect();
    assert!(matches!(leg.accept_answer(&no_fp, now), Err(WebRtcError::Rejected(_))), "{no_fp}");
    assert!(!leg.has_pending_offer());
    let offer = leg.create_offer(&allowed, now).unwrap();
    let (_browser, answer) = answering(now, addr("192.0.2.30:50000"), &offer, true);
    leg.accept_answer(&answer, now).unwrap();
    assert_eq!(leg.direction(), Some(SdpDirection::SendRecv));

    // Answered already: no second answer, no second first offer.
    assert_eq!(leg.accept_answer(&answer, now), Err(WebRtcError::NotReady));
    assert!(matches!(leg.create_offer(&allowed, now), Err(WebRtcError::Rejected(_))));
    // A re-offer's answer that is garbage, then one with another mid: refused, direction kept.
    leg.create_reoffer(SdpDirection::SendOnly, now).unwrap();
    assert!(matches!(leg.accept_answer("garbage", now), Err(WebRtcError::BadOffer(_))));
    let mid = answer.lines().find_map(|l| l.strip_prefix("a=mid:")).unwrap().trim();
    let other_mid = answer.replace(&format!("a=mid:{mid}"), "a=mid:zz").replace(&format!("BUNDLE {mid}"), "BUNDLE zz");
    assert_ne!(other_mid, answer);
    assert!(matches!(leg.accept_answer(&other_mid, now), Err(WebRtcError::Rejected(_))), "{answer}");
    assert_eq!(leg.direction(), Some(SdpDirection::SendRecv));
    assert!(leg.is_alive() && !leg.has_pending_offer());

    leg.close();
    assert_eq!(leg.create_offer(&allowed, now), Err(WebRtcError::Closed));
    assert_eq!(leg.accept_answer(&answer, now), Err(WebRtcError::Closed));
    assert_eq!(leg.create_reoffer(SdpDirection::SendRecv, now), Err(WebRtcError::Closed));
    assert_eq!(leg.direction(), None);
}

/// On an incoming call the audio m-line is ours (str0m created it): a browser going from
/// `inactive` to `recvonly` must still make us send (str0m alone ignores that transition).
#[test]
fn browser_reoffers_on_an_incoming_call() {
    let cert = test_cert();
    let mut rng = Rng::new([12; 32]);
    let mut sim = Sim::new();
    let allowed = [SdpCodec::pcmu(), SdpCodec::telephone_event(101)];
    let (call, _, _) = sim.incoming("192.0.2.24:50000", &mut rng, &cert, &allowed, true);
    let up = sim.run_until(Duration::from_secs(5), |s| s.gw.connected(call) && s.browsers[0].connected);
    assert!(up, "not connected: {:?}", sim.gw.outputs[call]);

    let answer = sim.browser_reoffer(call, 0, Direction::Inactive);
    assert_eq!(audio_direction(&answer), "inactive");
    assert_eq!(sim.gw.legs[call].direction(), Some(SdpDirection::Inactive));
    let answer = sim.browser_reoffer(call, 0, Direction::RecvOnly);
    assert_eq!(audio_direction(&answer), "sendonly");
    assert_eq!(sim.gw.legs[call].direction(), Some(SdpDirection::SendOnly));
    for k in 1..=3u16 {
        sim.gw.legs[call]
            .write_rtp(sim.now, false, 0, u64::from(k), u32::from(k) * 160, false, &payload(0xC3, k))
            .unwrap();
        sim.advance(Duration::from_millis(20));
    }
    assert_eq!(payloads(&sim.browsers[0].got), (1..=3).map(|n| payload(0xC3, n)).collect::<Vec<_>>());

    let answer = sim.browser_reoffer(call, 0, Direction::SendRecv);
    assert_eq!(audio_direction(&answer), "sendrecv");
    let (at_gw, at_browser) = sim.exchange(call, 0, 0, 4, 3);
    assert_eq!((at_gw.len(), at_browser.len()), (3, 3));
    assert_eq!(sim.gw.outputs[call].iter().filter(|o| **o == LegOutput::Connected).count(), 1);
}
