//! The browser leg (`media::webrtc::BrowserLeg`) against a str0m "browser" (full ICE, controlling,
//! RTP mode) over an in-memory network on a virtual clock: SDP offer/answer with codec narrowing,
//! ICE + DTLS + SRTP up (`Connected`), RTP both ways with the payload bytes checked, and two legs
//! behind one `Demux` on one shared "socket" receiving only their own traffic.

#![allow(clippy::disallowed_methods)] // Instant::now is only the epoch of the virtual clock

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use sylkgw_core::media::demux::Demux;
use sylkgw_core::media::sdp::Codec as SdpCodec;
use sylkgw_core::media::webrtc::{BrowserLeg, DtlsIdentity, LegOutput};
use sylkgw_core::rng::Rng;

/// The shared WebRTC socket's advertised addresses.
const GW_V4: &str = "198.51.100.1:40000";
const GW_V6: &str = "[2001:db8::1]:40000";
/// Telephone-event PT of the browser's offer (Chrome's number).
const TELE: u8 = 126;
/// One-way delay of the in-memory network.
const LATENCY: Duration = Duration::from_millis(15);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A fixed certificate for the whole test (a runtime makes one with `driver::webrtc_dtls_identity`).
fn test_cert() -> DtlsIdentity {
    str0m::crypto::from_feature_flags().dtls_provider.generate_certificate().expect("certificate").into()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    pt: u8,
    seq: u16,
    ts: u32,
    marker: bool,
    ssrc: u32,
    payload: Vec<u8>,
}

struct Browser {
    rtc: Rtc,
    addr: SocketAddr,
    mid: Mid,
    pending: Option<SdpPendingOffer>,
    timeout: Instant,
    connected: bool,
    got: Vec<Got>,
}

impl Browser {
    /// A browser-like offerer: full ICE, Opus + PCMU + telephone-event/8000, one audio m-line.
    fn new(now: Instant, addr: SocketAddr) -> (Self, String) {
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
        let mut rtc = config.build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap()).expect("host candidate");
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        let b = Self { rtc, addr, mid, pending: Some(pending), timeout: now, connected: false, got: Vec::new() };
        (b, offer.to_sdp_string())
    }

    fn accept_answer(&mut self, answer: &str) {
        let pending = self.pending.take().unwrap();
        self.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(answer).unwrap()).unwrap();
    }

    /// Drains str0m until its timeout; transmits go on the wire.
    fn drain(&mut self, now: Instant, wire: &mut VecDeque<Datagram>) {
        loop {
            match self.rtc.poll_output().expect("browser poll") {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
                Output::Transmit(t) => wire.push_back(Datagram {
                    at: now + LATENCY,
                    from: t.source,
                    to: t.destination,
                    data: t.contents.into(),
                }),
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::RtpPacket(p)) => self.got.push(Got {
                    pt: *p.header.payload_type,
                    seq: p.header.sequence_number,
                    ts: p.header.timestamp,
                    marker: p.header.marker,
                    ssrc: *p.header.ssrc,
                    payload: p.payload.to_vec(),
                }),
                Output::Event(_) => {}
            }
        }
    }

    fn send_rtp(&mut self, now: Instant, pt: u8, seq: u64, ts: u32, payload: &[u8], wire: &mut VecDeque<Datagram>) {
        let mut api = self.rtc.direct_api();
        let tx = api.stream_tx_by_mid(self.mid, None).expect("send stream");
        tx.write_rtp(RtpWrite::new(pt.into(), seq.into(), ts, now, payload).marker(seq == 1));
        self.drain(now, wire);
        self.rtc.handle_input(Input::Timeout(now)).unwrap();
        self.drain(now, wire);
    }

    fn ssrc(&mut self) -> u32 {
        *self.rtc.direct_api().stream_tx_by_mid(self.mid, None).expect("send stream").ssrc()
    }
}

#[derive(Debug)]
struct Datagram {
    /// When it arrives.
    at: Instant,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
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
                LegOutput::Rtp { pt, seq, ts, marker, ssrc, payload } => {
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
        let (mut browser, offer) = Browser::new(self.now, addr(browser_addr));
        let mut leg = BrowserLeg::new(cert, &self.gw_addrs, rng);
        let allowed = [SdpCodec::pcmu(), SdpCodec::telephone_event(TELE)];
        let answer = leg.accept_offer(&offer, &allowed, self.now).expect("answer");
        browser.accept_answer(&answer);
        self.browsers.push(browser);
        (self.gw.add(leg), answer)
    }

    fn drain_all(&mut self) {
        for b in &mut self.browsers {
            b.drain(self.now, &mut self.wire);
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
                    let input = Input::Receive(self.now, Receive::new(Protocol::Udp, d.from, d.to, &d.data).unwrap());
                    b.rtc.handle_input(input).unwrap();
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
                    b.rtc.handle_input(Input::Timeout(self.now)).unwrap();
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
    let browser_ssrc = sim.browsers[0].ssrc();
    for n in 1..=10u16 {
        let now = sim.now;
        sim.browsers[0].send_rtp(now, 0, u64::from(n), u32::from(n) * 160, &payload(0xA5, n), &mut sim.wire);
        sim.advance(Duration::from_millis(20));
    }
    let now = sim.now;
    sim.browsers[0].send_rtp(now, TELE, 11, 1760, &[5, 0x8a, 0, 160], &mut sim.wire);
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
            .write_rtp(now, 0, 100 + u64::from(n), 8000 + u32::from(n) * 160, n == 1, &payload(0x3C, n))
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
    assert!(sim.gw.legs[call].write_rtp(sim.now, 111, 200, 0, false, &[1]).is_err());
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
    assert!(sim.gw.legs[call].write_rtp(sim.now, 0, 111, 9760, false, &payload(0x3C, 11)).is_ok());

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
    let ssrcs = [sim.browsers[0].ssrc(), sim.browsers[1].ssrc()];
    for n in 1..=5u16 {
        let now = sim.now;
        for (i, tag) in [(0usize, 0x11u8), (1, 0x22)] {
            sim.browsers[i].send_rtp(now, 0, u64::from(n), u32::from(n) * 160, &payload(tag, n), &mut sim.wire);
        }
        for (call, tag) in [(a, 0xAAu8), (b, 0xBB)] {
            sim.gw.legs[call].write_rtp(now, 0, u64::from(n), u32::from(n) * 160, false, &payload(tag, n)).unwrap();
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
    sim.browsers[1].drain(now, &mut sim.wire);
    sim.advance(Duration::from_millis(100));
    assert_eq!(sim.gw.outputs[b].last(), Some(&LegOutput::Closed));
    assert!(sim.gw.legs[a].is_alive() && !sim.gw.legs[b].is_alive());
    sim.gw.demux.remove(b);

    // A leg that is gone no longer receives anything.
    sim.gw.demux.remove(a);
    let now = sim.now;
    sim.browsers[0].send_rtp(now, 0, 6, 960, &payload(0x11, 6), &mut sim.wire);
    sim.advance(Duration::from_millis(20));
    assert_eq!(sim.gw.rtp(a).len(), 5);
    assert!(sim.gw.unrouted >= 1);
}
