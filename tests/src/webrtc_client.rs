//! A scripted WebRTC browser on str0m, shared by the media and call simulations and the call load
//! benchmark: full ICE (so controlling against the gateway's ICE-lite), DTLS-SRTP, RTP mode.
//! Audio is Opus at 111, PCMU at 0 and telephone-event/8000 at [`TELE`] (Chrome's numbers); with
//! [`Video`] it also carries VP8 and/or H.264 on a video m-line, as a browser's camera would.
//!
//! The client is sans-IO like str0m: [`WebRtcClient::poll`] hands out what str0m produced
//! ([`ClientOutput`]); [`WebRtcClient::drain`] is the usual loop for an in-memory network (transmits
//! onto a [`Datagram`] queue, RTP and keyframe requests kept in [`WebRtcClient::got`] and
//! [`WebRtcClient::keyframe_requests`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::bwe::BweKind;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig, RtcError};

/// The telephone-event PT of the client (Chrome's number).
pub const TELE: u8 = 126;
/// VP8's PT in the client's offer (str0m's and Chrome's default).
pub const VP8: u8 = 96;
/// Opus, in the payloads the conference tests' publishers send.
pub const OPUS: u8 = 111;
/// H.264 (packetization-mode 1, constrained baseline 42e01f) in the client's offer.
pub const H264: u8 = 108;
/// The H.264 fmtp of [`H264`] as str0m writes it.
pub const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// Which video codecs the client has (none: an audio-only browser).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Video {
    /// Audio only.
    #[default]
    None,
    /// VP8 at [`VP8`].
    Vp8,
    /// H.264 at [`H264`].
    H264,
    /// Both, VP8 first.
    Both,
}

/// The client's codec configuration. `pcmu_only` leaves out Opus (the load benchmark's client).
pub fn config(video: Video, pcmu_only: bool) -> RtcConfig {
    let mut config = RtcConfig::new().set_rtp_mode(true).clear_codecs();
    if !pcmu_only {
        config = config.enable_opus(true, false);
    }
    config = config.enable_pcmu(true, false);
    let codecs = config.codec_config();
    codecs.add_config(TELE.into(), None, Codec::Tele, Frequency::EIGHT_KHZ, None, FormatParams::parse_line("0-16"));
    if matches!(video, Video::Vp8 | Video::Both) {
        codecs.add_config(VP8.into(), None, Codec::Vp8, Frequency::NINETY_KHZ, None, FormatParams::default());
    }
    if matches!(video, Video::H264 | Video::Both) {
        codecs.add_h264(H264.into(), None, true, 0x42e01f);
    }
    config
}

/// A datagram on the in-memory network of a simulation.
#[derive(Debug)]
pub struct Datagram {
    /// When it arrives.
    pub at: Instant,
    /// Sender.
    pub from: SocketAddr,
    /// Receiver.
    pub to: SocketAddr,
    /// The bytes.
    pub data: Vec<u8>,
}

/// An RTP packet the client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// Payload type.
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub ts: u32,
    /// M bit.
    pub marker: bool,
    /// The sender's SSRC.
    pub ssrc: u32,
    /// The payload.
    pub payload: Vec<u8>,
}

/// What [`WebRtcClient::poll`] reports.
#[derive(Debug)]
pub enum ClientOutput {
    /// Send `data` from `from` to `to`.
    Transmit {
        /// Our candidate.
        from: SocketAddr,
        /// The peer.
        to: SocketAddr,
        /// The datagram.
        data: Vec<u8>,
    },
    /// ICE and DTLS are up.
    Connected,
    /// An RTP packet arrived.
    Rtp(Got),
    /// The peer asks for a keyframe on our stream of `mid` (PLI or FIR).
    KeyframeRequest(Mid, KeyframeRequestKind),
}

/// One browser. See the module documentation.
pub struct WebRtcClient {
    /// The str0m instance (tests reach in for what the helpers do not cover).
    pub rtc: Rtc,
    /// Our host candidate.
    pub addr: SocketAddr,
    /// The audio m-line, once offered or answered.
    pub audio: Option<Mid>,
    /// The video m-line, once offered or answered (also when the peer refused it).
    pub video: Option<Mid>,
    /// Our offer waiting for its answer.
    pub pending: Option<SdpPendingOffer>,
    /// str0m's next deadline.
    pub timeout: Instant,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// RTP received, in order (kept by [`WebRtcClient::drain`]).
    pub got: Vec<Got>,
    /// Keyframe requests the peer sent us (kept by [`WebRtcClient::drain`]).
    pub keyframe_requests: Vec<(Mid, KeyframeRequestKind)>,
    /// REMBs the peer sent about our stream of a mid (bit/s), in order (kept by
    /// [`WebRtcClient::poll`]).
    pub remb: Vec<(Mid, u64)>,
}

impl WebRtcClient {
    /// A client with `config` ([`config`]) on host candidate `addr`; `cert` shares one DTLS
    /// certificate between many clients (the benchmark), else str0m makes one.
    pub fn new(config: RtcConfig, cert: Option<&DtlsCert>, now: Instant, addr: SocketAddr) -> Result<Self, String> {
        let config = match cert {
            Some(c) => config.set_dtls_cert(c.clone()),
            None => config,
        };
        let mut rtc = config.build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").map_err(|e| e.to_string())?).ok_or("candidate refused")?;
        Ok(Self {
            rtc,
            addr,
            audio: None,
            video: None,
            pending: None,
            timeout: now,
            connected: false,
            got: Vec::new(),
            keyframe_requests: Vec::new(),
            remb: Vec::new(),
        })
    }

    /// A client with the usual codecs ([`config`], Opus included) and its own certificate.
    pub fn browser(now: Instant, addr: SocketAddr, video: Video) -> Self {
        Self::new(config(video, false), None, now, addr).expect("a client")
    }

    /// Offers a sendrecv audio m-line, and a sendrecv video m-line when `video`.
    pub fn offer(&mut self, video: bool) -> Result<String, String> {
        let mut api = self.rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let video = video.then(|| api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None));
        let (offer, pending) = api.apply().ok_or("no offer")?;
        self.audio = Some(audio);
        self.video = video;
        self.pending = Some(pending);
        Ok(offer.to_sdp_string())
    }

    /// A re-offer changing the direction of our m-lines (a browser holding the call and back).
    pub fn reoffer(&mut self, dir: Direction) -> String {
        let mut api = self.rtc.sdp_api();
        for mid in [self.audio, self.video].into_iter().flatten() {
            api.set_direction(mid, dir);
        }
        let (offer, pending) = api.apply().expect("a re-offer");
        self.pending = Some(pending);
        offer.to_sdp_string()
    }

    /// Applies the answer to our pending offer.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), String> {
        let pending = self.pending.take().ok_or("no offer pending")?;
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| e.to_string())?;
        self.rtc.sdp_api().accept_answer(pending, answer).map_err(|e| e.to_string())
    }

    /// Answers an offer. str0m answers an `actpass` offer with `a=setup:passive`; a real browser
    /// answers `a=setup:active` and is the DTLS client. With `setup_active` (first offer only) the
    /// client takes that role: it reads the offer as `a=setup:passive`, so its str0m becomes the
    /// DTLS client and writes `a=setup:active` into the (otherwise untouched) answer.
    pub fn answer(&mut self, offer: &str, setup_active: bool) -> String {
        let first = self.audio.is_none();
        let offer =
            if setup_active && first { offer.replace("a=setup:actpass", "a=setup:passive") } else { offer.into() };
        let answer = self.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).expect("an answer");
        let answer = answer.to_sdp_string();
        if first {
            for (kind, mid) in mids(&answer) {
                match kind.as_str() {
                    "audio" => self.audio = self.audio.or(Some(mid)),
                    "video" => self.video = self.video.or(Some(mid)),
                    _ => {}
                }
            }
        }
        answer
    }

    /// A datagram for us.
    pub fn receive(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: &[u8]) -> Result<(), RtcError> {
        let r = Receive::new(Protocol::Udp, from, to, data)?;
        self.rtc.handle_input(Input::Receive(now, r))
    }

    /// Lets str0m's timers run (call when `now` reached [`WebRtcClient::timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), RtcError> {
        self.rtc.handle_input(Input::Timeout(now))
    }

    /// Drains str0m until its next timeout, handing out each output.
    pub fn poll(&mut self, mut on: impl FnMut(ClientOutput)) -> Result<(), RtcError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    on(ClientOutput::Transmit { from: t.source, to: t.destination, data: t.contents.into() })
                }
                Output::Event(Event::Connected) => {
                    self.connected = true;
                    on(ClientOutput::Connected);
                }
                Output::Event(Event::RtpPacket(p)) => on(ClientOutput::Rtp(Got {
                    pt: *p.header.payload_type,
                    seq: p.header.sequence_number,
                    ts: p.header.timestamp,
                    marker: p.header.marker,
                    ssrc: *p.header.ssrc,
                    payload: p.payload.to_vec(),
                })),
                Output::Event(Event::KeyframeRequest(k)) => on(ClientOutput::KeyframeRequest(k.mid, k.kind)),
                Output::Event(Event::EgressBitrateEstimate(BweKind::Remb { estimate, mid })) => {
                    self.remb.push((mid, estimate.as_u64()))
                }
                Output::Event(_) => {}
            }
        }
    }

    /// [`WebRtcClient::poll`] onto an in-memory network: transmits arrive `latency` after `now`;
    /// RTP and keyframe requests are kept.
    pub fn drain(&mut self, now: Instant, latency: Duration, wire: &mut VecDeque<Datagram>) {
        let mut got = Vec::new();
        let mut keyframes = Vec::new();
        self.poll(|o| match o {
            ClientOutput::Transmit { from, to, data } => wire.push_back(Datagram { at: now + latency, from, to, data }),
            ClientOutput::Rtp(g) => got.push(g),
            ClientOutput::KeyframeRequest(mid, kind) => keyframes.push((mid, kind)),
            ClientOutput::Connected => {}
        })
        .expect("client poll");
        self.got.extend(got);
        self.keyframe_requests.extend(keyframes);
    }

    /// A conference publisher's offer as sylkrtc.js makes it: send-only audio and video (the
    /// mids kept in `audio`/`video`, the offer pending until the answer).
    pub fn sendonly_offer(&mut self) -> String {
        let mut api = self.rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        self.audio = Some(audio);
        self.video = Some(video);
        self.pending = Some(pending);
        offer.to_sdp_string()
    }

    /// A connected publisher's media tick: packet `seq` of Opus and of VP8 whose payloads start
    /// with `index`, so a subscriber can tell whose media it got; then [`WebRtcClient::drain`].
    pub fn publish_marked(
        &mut self,
        now: Instant,
        (index, seq): (u8, u64),
        latency: Duration,
        wire: &mut VecDeque<Datagram>,
    ) {
        let (audio, video) = (self.audio.expect("an audio mid"), self.video.expect("a video mid"));
        self.write_rtp(now, audio, (OPUS, seq, (seq * 960) as u32, false), &[index, 1, 2, 3]);
        self.write_rtp(now, video, (VP8, seq, (seq * 3000) as u32, true), &[index, 0x10, 0, 0x9d]);
        self.drain(now, latency, wire);
    }

    /// Queues one RTP packet on our stream of `mid` (`seq` extended: start small) and lets str0m
    /// send it; drain afterwards. False if there is no such stream.
    pub fn write_rtp(
        &mut self,
        now: Instant,
        mid: Mid,
        (pt, seq, ts, marker): (u8, u64, u32, bool),
        payload: &[u8],
    ) -> bool {
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else { return false };
        tx.write_rtp(RtpWrite::new(pt.into(), seq.into(), ts, now, payload).marker(marker));
        self.rtc.handle_input(Input::Timeout(now)).is_ok()
    }

    /// [`WebRtcClient::write_rtp`] on the audio stream, then [`WebRtcClient::drain`].
    pub fn send_rtp(
        &mut self,
        now: Instant,
        header: (u8, u64, u32, bool),
        payload: &[u8],
        latency: Duration,
        wire: &mut VecDeque<Datagram>,
    ) {
        let Some(mid) = self.audio else { return };
        self.write_rtp(now, mid, header, payload);
        self.drain(now, latency, wire);
    }

    /// Asks the peer for a keyframe (PLI) on the stream we receive on `mid`. False if we receive
    /// nothing there yet.
    pub fn request_keyframe(&mut self, mid: Mid) -> bool {
        let mut api = self.rtc.direct_api();
        let Some(rx) = api.stream_rx_by_mid(mid, None) else { return false };
        rx.request_keyframe(KeyframeRequestKind::Pli);
        true
    }

    /// The SSRC we send audio with.
    pub fn audio_ssrc(&mut self) -> u32 {
        let mid = self.audio.expect("an audio m-line");
        self.ssrc(mid)
    }

    /// The SSRC we send with on `mid`.
    pub fn ssrc(&mut self, mid: Mid) -> u32 {
        *self.rtc.direct_api().stream_tx_by_mid(mid, None).expect("send stream").ssrc()
    }
}

/// The (media kind, mid) of each m-line of an SDP, in order.
pub fn mids(sdp: &str) -> Vec<(String, Mid)> {
    let mut out = Vec::new();
    let mut kind: Option<String> = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            kind = m.split(' ').next().map(str::to_string);
        } else if let (Some(k), Some(mid)) = (kind.as_ref(), line.strip_prefix("a=mid:")) {
            out.push((k.clone(), Mid::from(mid)));
            kind = None;
        }
    }
    out
}

/// The m-line of `kind` in an SDP (`m=video 9 UDP/TLS/RTP/SAVPF 96`), if any.
pub fn m_line<'a>(sdp: &'a str, kind: &str) -> Option<&'a str> {
    sdp.lines().find(|l| l.starts_with(&format!("m={kind} "))).map(str::trim_end)
}

/// The section of `kind` in an SDP: its m-line and attributes.
pub fn section<'a>(sdp: &'a str, kind: &str) -> Option<&'a str> {
    let start = sdp.find(&format!("m={kind} "))?;
    let rest = &sdp[start..];
    Some(match rest[2..].find("\nm=") {
        Some(end) => &rest[..end + 3],
        None => rest,
    })
}
