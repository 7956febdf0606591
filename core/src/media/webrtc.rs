//! The browser leg: ICE-lite, DTLS-SRTP and RTP towards the browser, one [`str0m::Rtc`] per call
//! (media spec §1, §4.1), wrapped in the core's sans-IO style.
//!
//! - Built per call with `RtcConfig::new().set_ice_lite(true).set_rtp_mode(true)
//!   .set_dtls_cert(shared)`, `clear_codecs()` and then **only the codecs the SIP side accepted**
//!   (Opus, G722, PCMU, PCMA, telephone-event, and VP8/H.264 video, at the PTs of the browser's
//!   offer, or of the SIP offer when we offer), so the answer cannot steer the browser towards a
//!   codec the SIP leg does not carry (media spec §2.3 point 2); a video m-line with no allowed
//!   format is refused (port 0). The `Rtc` is therefore built in
//!   [`BrowserLeg::accept_offer`] or [`BrowserLeg::create_offer`], not in [`BrowserLeg::new`].
//! - Two ways to start, one per call direction (media spec §2.3 point 2):
//!   - answerer (outgoing calls, the browser offers): [`BrowserLeg::accept_offer`];
//!   - offerer (incoming calls, the SIP offer comes first): [`BrowserLeg::create_offer`] with the
//!     SIP offer's codecs at its PTs, then [`BrowserLeg::accept_answer`] with the browser's answer
//!     (sylkRTC `incoming-session` / `session-answer`).
//!
//!   Either way everything after it (ICE, DTLS, [`LegOutput::Rtp`], [`BrowserLeg::write_rtp`]) is
//!   the same: we are ICE-lite and controlled, the browser is the full ICE agent; the DTLS role
//!   follows the answer (`a=setup:active` from the browser, as browsers do, makes us the DTLS
//!   server; `a=setup:passive` makes us the client).
//! - Renegotiation (media spec §2.3 point 7): a browser re-offer (sylkRTC `session-update`) goes
//!   to [`BrowserLeg::accept_offer`] again; a SIP re-INVITE (hold, resume) becomes our re-offer,
//!   [`BrowserLeg::create_reoffer`], answered through [`BrowserLeg::accept_answer`].
//!   [`BrowserLeg::direction`] is the negotiated direction. str0m keeps one pending offer: a
//!   browser offer while ours is pending (glare) drops ours ([`BrowserLeg::rollback_offer`]).
//! - Video (media spec §2.3 point 4): at most one video m-line, decided by the first negotiation
//!   ([`BrowserLeg::has_video`]) and kept through re-offers (which apply the audio direction to it;
//!   a refused one is never revived). RTP comes out as [`LegOutput::Rtp`] with `video` set (told
//!   apart by PT: one PT table per session) and goes in through [`BrowserLeg::write_rtp`] with
//!   `video`; no RTX towards the browser (the SIP side has nothing to resend from). Keyframes: the
//!   browser's PLI/FIR on our video stream is [`LegOutput::KeyframeRequest`];
//!   [`BrowserLeg::request_keyframe`] asks the browser (str0m's `StreamRx::request_keyframe`, RTP
//!   mode).
//! - Local ICE credentials come from the core's [`Rng`]; the host candidates are the advertised
//!   addresses (IPv4 and IPv6) of the one shared WebRTC UDP socket. Datagrams on that socket reach
//!   the right leg through [`super::demux::Demux`] (media spec §1.4), keyed by [`BrowserLeg::ufrag`].
//! - One DTLS certificate serves every leg ([`DtlsIdentity`], made by `driver::webrtc_dtls_identity`
//!   outside the sans-IO part, handed in through `Config::webrtc`).
//! - str0m's rule is kept: after every mutation (`handle_input`, `accept_offer`, candidates,
//!   `write_rtp`, `close`) `poll_output` is drained until `Output::Timeout`; what it produced waits
//!   in a queue that [`BrowserLeg::poll`] hands out as [`LegOutput`]s.
//! - str0m is fail-fast (a panic is one of its bugs, its README says): every call into the `Rtc` runs
//!   under `catch_unwind`, and an error or a panic closes only this leg ([`LegOutput::Closed`]).
//!
//! # Determinism
//! The core's own choices (ICE credentials) come from the seeded [`Rng`], and str0m never reads
//! the clock for its timers (time is the `now` passed in). str0m draws mids, SSRCs, CNAME/msid and
//! STUN transaction ids from `fastrand`'s thread-local generator: every call into it runs with that
//! generator reseeded from the leg's own stream (drawn from our [`Rng`]) and the stream saved after,
//! so those draws replay. What is left is known and accepted (captures leave media out, and a
//! replay masks the fingerprint, `capture::mask_media`):
//! - DTLS (dimpl over aws-lc-rs) takes its client/server randoms and ECDHE keys from the OS
//!   (`SystemRandom`), as it must.
//! - To turn `Instant`s into NTP time for RTCP sender reports it reads `Instant::now()` and
//!   `SystemTime::now()` once per process (a lazily set "beginning of time"). The `now` handed to a
//!   leg must therefore not lie more than about an hour before the process's first use of str0m.

use super::sdp::{Codec as SdpCodec, Direction};
use crate::rng::Rng;
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction as RtcDirection, Frequency, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig, RtcError};

/// Hex digits of the local ICE ufrag (64 bits: unique enough to demultiplex on, RFC 8839 §5.4).
pub const UFRAG_HEX: usize = 16;
/// Hex digits of the local ICE password (128 bits; RFC 8839 asks for at least 128).
pub const PWD_HEX: usize = 32;
/// Trickled candidates kept while no offer has been accepted yet (the browser trickles while the
/// SIP side is still deciding); more are dropped.
pub const MAX_PENDING_CANDIDATES: usize = 32;
/// Trickled candidates one leg takes in all (kept pending or given to str0m); more are refused
/// with [`WebRtcError::TooManyCandidates`]. A browser gathers a handful per interface and
/// family (host, srflx, relay, TCP); ICE-lite needs none of them.
pub const MAX_REMOTE_CANDIDATES: usize = 64;

/// How long a leg waits before running str0m's timers again when, having just run them, str0m
/// asks to run them at the same instant once more (see [`BrowserLeg::poll`]).
pub const STALLED_TIMER_STEP: Duration = Duration::from_millis(5);

/// How a leg of the conference media plane (an SFU leg, `crate::conference`) differs from a
/// call's. Set with [`BrowserLeg::set_sfu_options`] before the first offer or answer; the default
/// is a call's leg.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SfuOptions {
    /// Video is negotiated with RTX (RFC 4588): received video lost on the way is NACKed (RFC
    /// 4585 §6.2.1) and comes back resent; video sent through [`BrowserLeg::forward_rtp`] answers
    /// the browser's NACKs. A call's leg has none (the SIP side has nothing to resend from).
    /// Audio never (no NACK for audio codecs).
    pub rtx: bool,
    /// With `rtx`: how many video packets sent are kept to resend (0: str0m's default).
    pub rtx_history: usize,
    /// With `rtx_history`: how long a sent video packet stays resendable.
    pub rtx_age: Duration,
    /// Leave out transport-wide congestion control (`transport-cc`, its header extension): a
    /// browser receiving from this leg then estimates the bandwidth itself (abs-send-time) and
    /// reports it as REMB, which comes out as [`LegOutput::ReceiverEstimate`].
    pub remb_only: bool,
}

/// The DTLS certificate and private key (DER) shared by every browser leg. Made outside the core
/// (it needs OS randomness): `driver::webrtc_dtls_identity` in a runtime, a fixed one in tests and
/// replays. Its `Debug` never prints the key.
#[derive(Clone)]
pub struct DtlsIdentity(Arc<DtlsCert>);

impl DtlsIdentity {
    /// A fresh self-signed identity from str0m's crypto provider. It draws from the OS's
    /// randomness, so it is made outside the sans-IO state machine: by a runtime at start
    /// (`driver::webrtc_dtls_identity`) or for a replay (whose fingerprints are masked).
    pub fn generate() -> Option<Self> {
        str0m::crypto::from_feature_flags().dtls_provider.generate_certificate().map(Self::from)
    }

    /// From a DER certificate and its DER (PKCS#8) private key.
    pub fn from_der(certificate: Vec<u8>, private_key: Vec<u8>) -> Self {
        Self(Arc::new(DtlsCert { certificate, private_key }))
    }

    /// The DER certificate.
    pub fn certificate_der(&self) -> &[u8] {
        &self.0.certificate
    }

    /// str0m's form.
    pub fn as_dtls_cert(&self) -> &DtlsCert {
        &self.0
    }
}

impl From<DtlsCert> for DtlsIdentity {
    fn from(c: DtlsCert) -> Self {
        Self(Arc::new(c))
    }
}

impl PartialEq for DtlsIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.0.certificate == other.0.certificate && self.0.private_key == other.0.private_key
    }
}

impl Eq for DtlsIdentity {}

impl fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsIdentity").field("certificate", &self.0.certificate.len()).finish_non_exhaustive()
    }
}

/// Why a browser-leg operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebRtcError {
    /// The offer (or, for [`BrowserLeg::accept_answer`], the answer) is not SDP str0m can read.
    BadOffer(String),
    /// str0m refused the offer or answer (no fingerprint, no BUNDLE, ICE-lite offerer, an answer
    /// that does not match our offer, ...), or an offer cannot be made now (already negotiated).
    Rejected(String),
    /// None of the allowed codecs is one the browser leg carries (Opus, G722, PCMU, PCMA), or the
    /// offer has none of them, or the browser's answer refused our audio m-line (port 0).
    NoCodec,
    /// The offer (or answer) has no audio m-line.
    NoAudio,
    /// A trickled candidate line could not be read.
    BadCandidate(String),
    /// The leg already took [`MAX_REMOTE_CANDIDATES`] candidates.
    TooManyCandidates,
    /// No offer accepted yet, or the leg does not send (direction), or ICE/DTLS is not up yet; or
    /// an answer without a pending offer of ours, or a re-offer before the first negotiation.
    NotReady,
    /// A payload type that was not negotiated.
    UnknownPt(u8),
    /// The leg is closed.
    Closed,
}

impl fmt::Display for WebRtcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadOffer(e) => write!(f, "unreadable offer: {e}"),
            Self::Rejected(e) => write!(f, "offer refused: {e}"),
            Self::NoCodec => f.write_str("no common audio codec"),
            Self::NoAudio => f.write_str("no audio in the offer"),
            Self::BadCandidate(e) => write!(f, "bad ICE candidate: {e}"),
            Self::TooManyCandidates => write!(f, "more than {MAX_REMOTE_CANDIDATES} candidates"),
            Self::NotReady => f.write_str("media not negotiated or not connected"),
            Self::UnknownPt(pt) => write!(f, "payload type {pt} not negotiated"),
            Self::Closed => f.write_str("browser leg closed"),
        }
    }
}

impl std::error::Error for WebRtcError {}

/// What a [`BrowserLeg`] wants done or reports, from [`BrowserLeg::poll`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LegOutput {
    /// Send `payload` to `to` from the shared WebRTC socket. `from` is the local candidate (an
    /// advertised address) it must leave from: pick the socket of that address family.
    Transmit {
        /// The browser's address.
        to: SocketAddr,
        /// Our candidate address.
        from: SocketAddr,
        /// The datagram.
        payload: Vec<u8>,
    },
    /// An RTP packet from the browser, decrypted (header fields as received).
    Rtp {
        /// On the video m-line (by its payload type: the leg's PTs are session-wide), else audio.
        video: bool,
        /// Payload type (one the leg negotiated).
        pt: u8,
        /// Sequence number.
        seq: u16,
        /// RTP timestamp.
        ts: u32,
        /// M bit.
        marker: bool,
        /// The browser's SSRC.
        ssrc: u32,
        /// The payload, without the header.
        payload: Arc<[u8]>,
        /// Its RFC 6464 audio level (0 = loudest, 127 = silence, in -dBov), when the packet
        /// carried the `ssrc-audio-level` header extension.
        audio_level: Option<i8>,
    },
    /// The browser's estimate of the bandwidth it receives from us (REMB, bit/s): the most we
    /// should send it.
    ReceiverEstimate {
        /// Bit/s.
        bitrate: u64,
    },
    /// ICE and DTLS are up, SRTP keys derived: sylkRTC's `established`. Reported once.
    Connected,
    /// The browser stopped ICE consent checks (no binding request for 15 s, media spec §1.5). str0m
    /// never gives up by itself: the call decides how long to wait for [`LegOutput::Reconnected`].
    Disconnected,
    /// ICE works again after [`LegOutput::Disconnected`].
    Reconnected,
    /// The browser asks for a key frame on our video stream (PLI, or FIR when `full_intra`):
    /// forward to the SIP side.
    KeyframeRequest {
        /// FIR rather than PLI.
        full_intra: bool,
    },
    /// Call [`BrowserLeg::poll`] again with a `now` at or after this instant.
    Timeout(Instant),
    /// The leg is over (DTLS closed by the browser, [`BrowserLeg::close`] drained, or an error in
    /// str0m). Transmits queued before it are still to be sent; after it `poll` returns `None`.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IceUp {
    Never,
    Up,
    Lost,
}

/// Our offer waiting for the browser's answer.
struct PendingOffer {
    offer: SdpPendingOffer,
    /// The audio m-line it offers.
    mid: Mid,
    /// The video m-line it offers, if any.
    video: Option<Mid>,
    /// The first offer ([`BrowserLeg::create_offer`]): nothing negotiated yet.
    initial: bool,
}

/// One call's browser leg. See the module documentation.
pub struct BrowserLeg {
    /// Shared by every leg (each `Rtc` still takes its own copy when it is built).
    cert: Arc<DtlsCert>,
    candidates: Vec<SocketAddr>,
    creds: IceCreds,
    /// The state of str0m's RNG for this leg (see [`guarded`]).
    seed: Cell<u64>,
    rtc: Option<Rtc>,
    /// The audio m-line (from the answer), once a negotiation completed.
    mid: Option<Mid>,
    /// The video m-line, when the first negotiation accepted one (port and a codec). It then
    /// stays: re-offers keep it, and a video m-line refused at first is never revived.
    video: Option<Mid>,
    /// Our offer (first or re-offer) waiting for the browser's answer.
    pending: Option<PendingOffer>,
    /// Direction of the audio m-line from our side, as of the last completed negotiation.
    negotiated: Option<RtcDirection>,
    pending_candidates: Vec<Candidate>,
    /// Trickled candidates taken (pending or given to str0m), at most [`MAX_REMOTE_CANDIDATES`].
    remote_candidates: usize,
    queue: VecDeque<LegOutput>,
    next_timeout: Option<Instant>,
    /// Whether a stalled str0m timer was logged (once per leg).
    stall_logged: bool,
    connected: bool,
    ice: IceUp,
    closed: bool,
    /// Conference-leg options (default: a call's leg).
    sfu: SfuOptions,
}

impl fmt::Debug for BrowserLeg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The ICE password is a secret: never print it.
        f.debug_struct("BrowserLeg")
            .field("ufrag", &self.creds.ufrag)
            .field("candidates", &self.candidates)
            .field("mid", &self.mid.map(|m| m.to_string()))
            .field("video", &self.video.map(|m| m.to_string()))
            .field("direction", &self.negotiated)
            .field("offer_pending", &self.pending.is_some())
            .field("connected", &self.connected)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl BrowserLeg {
    /// A leg that will answer with `cert`'s fingerprint and `candidates` (the advertised
    /// addresses of the shared WebRTC socket, all families) as host candidates. Draws the local
    /// ICE ufrag and password from `rng`. Cheap: the `Rtc` (about 1.5 ms) is built by
    /// [`BrowserLeg::accept_offer`].
    pub fn new(cert: &DtlsIdentity, candidates: &[SocketAddr], rng: &mut Rng) -> Self {
        let creds = IceCreds { ufrag: rng.hex(UFRAG_HEX), pass: rng.hex(PWD_HEX) };
        let mut unique: Vec<SocketAddr> = Vec::with_capacity(candidates.len());
        for a in candidates {
            if !unique.contains(a) {
                unique.push(*a);
            }
        }
        Self {
            cert: Arc::clone(&cert.0),
            candidates: unique,
            creds,
            seed: Cell::new(rng.next_u64()),
            rtc: None,
            mid: None,
            video: None,
            pending: None,
            negotiated: None,
            pending_candidates: Vec::new(),
            remote_candidates: 0,
            queue: VecDeque::new(),
            next_timeout: None,
            stall_logged: false,
            connected: false,
            ice: IceUp::Never,
            closed: false,
            sfu: SfuOptions::default(),
        }
    }

    /// Makes this a conference (SFU) leg: RTX for video, REMB-only feedback ([`SfuOptions`]).
    /// Takes effect at the first offer or answer ([`BrowserLeg::accept_offer`],
    /// [`BrowserLeg::create_offer`]), which build the `Rtc`.
    pub fn set_sfu_options(&mut self, options: SfuOptions) {
        self.sfu = options;
    }

    /// Our ICE ufrag: the key of this leg in [`super::demux::Demux`].
    pub fn ufrag(&self) -> &str {
        &self.creds.ufrag
    }

    /// True once ICE and DTLS are up ([`LegOutput::Connected`] was queued).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// False once the leg is over ([`LegOutput::Closed`] was queued).
    pub fn is_alive(&self) -> bool {
        !self.closed
    }

    /// The payload types of the session (str0m renumbers its configuration to the offer's PTs when
    /// it answers; when it offers they are the configured ones); empty before the first offer was
    /// accepted or made.
    pub fn payload_types(&self) -> Vec<u8> {
        self.rtc.as_ref().map(|r| r.codec_config().params().iter().map(|p| *p.pt()).collect()).unwrap_or_default()
    }

    /// Answers the browser's offer and returns the answer SDP. The first offer builds the `Rtc`
    /// with only the `allowed` codecs (what the SIP side accepted; PTs of the browser's offer):
    /// Opus, G722, PCMU, PCMA and telephone-event/8000 are carried, anything else in `allowed` is
    /// ignored. A later offer (renegotiation, e.g. a direction change for hold) keeps the first
    /// negotiation's codecs (str0m keeps one PT table per session, whoever offered first); `allowed`
    /// is then ignored, and [`BrowserLeg::direction`] follows the offer.
    ///
    /// An offer of ours still waiting for its answer is dropped first (glare: the browser's offer
    /// wins, [`BrowserLeg::rollback_offer`]); if that was the first offer, the leg starts over as an
    /// answerer.
    pub fn accept_offer(&mut self, offer_sdp: &str, allowed: &[SdpCodec], now: Instant) -> Result<String, WebRtcError> {
        if self.closed {
            return Err(WebRtcError::Closed);
        }
        let offer = SdpOffer::from_sdp_string(offer_sdp).map_err(|e| WebRtcError::BadOffer(e.to_string()))?;
        self.rollback_offer();
        let fresh = self.rtc.is_none();
        if fresh {
            let offered: Vec<SdpCodec> = match self.sfu.rtx {
                false => Vec::new(),
                true => super::sdp::SessionDescription::parse(offer_sdp.as_bytes())
                    .map(|d| d.media.iter().flat_map(|m| m.codecs()).collect())
                    .unwrap_or_default(),
            };
            let config = self.rtc_config(allowed, &offered)?;
            let rtc = guarded(&self.seed, || config.build(now))
                .ok_or_else(|| WebRtcError::Rejected("str0m panicked".into()))?;
            self.rtc = Some(rtc);
            self.next_timeout = Some(now);
            self.add_local_candidates();
        } else {
            for mid in [self.mid, self.video].into_iter().flatten() {
                if self.rtc_direction(mid) != Some(RtcDirection::Inactive) {
                    continue;
                }
                // str0m ignores a remote `recvonly` on an `inactive` m-line it created (an incoming
                // call's): leave `inactive` locally first (no offer is made), the offer sets the rest.
                self.mutate(|rtc| {
                    rtc.sdp_api().set_direction(mid, RtcDirection::SendRecv);
                    Ok(())
                });
            }
        }
        let mut answer = None;
        self.mutate(|rtc| {
            answer = Some(rtc.sdp_api().accept_offer(offer));
            Ok(())
        });
        let answer = match answer {
            Some(Ok(a)) => a,
            other => {
                let reason = match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "str0m panicked".into(),
                };
                if fresh {
                    // Nothing was answered: forget the Rtc so that a corrected offer can retry.
                    self.reset();
                } else {
                    self.restore_direction();
                }
                return Err(WebRtcError::Rejected(reason));
            }
        };
        let sdp = answer.to_sdp_string();
        let error = match answer_line(&sdp, "audio") {
            Some((mid, true)) => {
                self.mid = Some(Mid::from(mid.as_str()));
                if fresh {
                    self.video =
                        answer_line(&sdp, "video").filter(|(_, used)| *used).map(|(m, _)| Mid::from(m.as_str()));
                }
                self.note_direction();
                if fresh {
                    self.flush_pending_candidates();
                }
                if self.closed {
                    return Err(WebRtcError::Closed);
                }
                return Ok(sdp);
            }
            Some((_, false)) => WebRtcError::NoCodec,
            None => WebRtcError::NoAudio,
        };
        if fresh {
            self.reset();
        }
        Err(error)
    }

    /// Makes the first offer to the browser (incoming calls: the SIP offer came first) and returns
    /// its SDP, for sylkRTC's `incoming-session`. Builds the `Rtc` with only the `allowed` codecs
    /// (the SIP offer's, at its PTs; as for [`BrowserLeg::accept_offer`], Opus, G722, PCMU, PCMA
    /// and telephone-event/8000 are carried, the rest ignored; G722/PCMU/PCMA at their static PTs)
    /// and offers one `sendrecv` audio m-line with them, and a `sendrecv` video m-line when `allowed`
    /// has VP8 or H.264 (at the SIP offer's PTs and fmtp), our host candidates (all of them: we are
    /// ICE-lite and never trickle), `a=ice-lite`, our fingerprint and `a=setup:actpass`. The
    /// browser's answer goes to [`BrowserLeg::accept_answer`]; trickled candidates that arrive
    /// before it are kept until then.
    ///
    /// Only before the first negotiation (a second call replaces a first offer still waiting for
    /// its answer); afterwards [`WebRtcError::Rejected`], see [`BrowserLeg::create_reoffer`].
    pub fn create_offer(&mut self, allowed: &[SdpCodec], now: Instant) -> Result<String, WebRtcError> {
        if self.closed {
            return Err(WebRtcError::Closed);
        }
        if self.mid.is_some() {
            return Err(WebRtcError::Rejected("already negotiated: re-offer instead".into()));
        }
        // A first offer still pending, or a leftover Rtc: start over.
        self.reset();
        let config = self.rtc_config(allowed, allowed)?;
        let rtc =
            guarded(&self.seed, || config.build(now)).ok_or_else(|| WebRtcError::Rejected("str0m panicked".into()))?;
        self.rtc = Some(rtc);
        self.next_timeout = Some(now);
        self.add_local_candidates();
        let with_video = allowed.iter().any(|c| video_codec(c).is_some());
        let mut made = None;
        self.mutate(|rtc| {
            let mut api = rtc.sdp_api();
            let mid = api.add_media(MediaKind::Audio, RtcDirection::SendRecv, None, None, None);
            let video = with_video.then(|| api.add_media(MediaKind::Video, RtcDirection::SendRecv, None, None, None));
            made = Some((mid, video, api.apply()));
            Ok(())
        });
        match made {
            Some((mid, video, Some((offer, pending)))) if !self.closed => {
                self.pending = Some(PendingOffer { offer: pending, mid, video, initial: true });
                Ok(offer.to_sdp_string())
            }
            _ => {
                self.reset();
                Err(WebRtcError::Rejected("str0m made no offer".into()))
            }
        }
    }

    /// Re-offers our audio m-line (and the video one, if in use) with `direction` (ours:
    /// [`Direction::SendOnly`] = we send to the
    /// browser and do not receive, as when the SIP side holds with `sendonly`) and returns the offer
    /// SDP for the browser (media spec §2.3 point 7). Codecs, ICE and DTLS stay as they are. The
    /// same direction as now still makes an offer (a refresh). The browser's answer goes to
    /// [`BrowserLeg::accept_answer`]; until then [`BrowserLeg::direction`] stays the negotiated one.
    /// An earlier offer of ours still pending is replaced.
    ///
    /// [`WebRtcError::NotReady`] before the first negotiation completed.
    pub fn create_reoffer(&mut self, direction: Direction, now: Instant) -> Result<String, WebRtcError> {
        if self.closed {
            return Err(WebRtcError::Closed);
        }
        let Some(mid) = self.mid else {
            return Err(WebRtcError::NotReady);
        };
        self.rollback_offer();
        self.mutate(|rtc| rtc.handle_input(Input::Timeout(now)));
        let dir = to_rtc_direction(direction);
        let current = self.rtc_direction(mid);
        let video = self.video;
        let mut made = None;
        self.mutate(|rtc| {
            let mut api = rtc.sdp_api();
            if current == Some(dir) {
                // str0m offers only changes: step away and back, so the offer is made.
                let other = if dir == RtcDirection::Inactive { RtcDirection::SendRecv } else { RtcDirection::Inactive };
                api.set_direction(mid, other);
            }
            api.set_direction(mid, dir);
            // Video follows audio (hold holds both).
            if let Some(v) = video {
                api.set_direction(v, dir);
            }
            made = Some(api.apply());
            Ok(())
        });
        if self.closed {
            return Err(WebRtcError::Closed);
        }
        match made {
            Some(Some((offer, pending))) => {
                self.pending = Some(PendingOffer { offer: pending, mid, video: None, initial: false });
                Ok(offer.to_sdp_string())
            }
            _ => {
                self.restore_direction();
                Err(WebRtcError::Rejected("str0m made no offer".into()))
            }
        }
    }

    /// Applies the browser's answer to our pending offer ([`BrowserLeg::create_offer`] or
    /// [`BrowserLeg::create_reoffer`]). After the first answer the leg is negotiated exactly as after
    /// [`BrowserLeg::accept_offer`]: trickled candidates kept so far are added, ICE and DTLS come up
    /// ([`LegOutput::Connected`]), RTP flows. After a re-offer's answer [`BrowserLeg::direction`] is
    /// the new direction.
    ///
    /// Errors: [`WebRtcError::NotReady`] without a pending offer; [`WebRtcError::BadOffer`] for text
    /// that is not SDP (the offer stays pending, a corrected answer may follow);
    /// [`WebRtcError::NoAudio`] / [`WebRtcError::NoCodec`] if the answer lacks or refuses our audio
    /// m-line, [`WebRtcError::Rejected`] if str0m refuses it. After those the offer is gone: a
    /// refused first answer puts the leg back to its state after [`BrowserLeg::new`], a refused
    /// re-answer leaves the previous negotiation in place.
    pub fn accept_answer(&mut self, answer_sdp: &str, now: Instant) -> Result<(), WebRtcError> {
        if self.closed {
            return Err(WebRtcError::Closed);
        }
        if self.pending.is_none() {
            return Err(WebRtcError::NotReady);
        }
        let answer = SdpAnswer::from_sdp_string(answer_sdp).map_err(|e| WebRtcError::BadOffer(e.to_string()))?;
        let Some(pending) = self.pending.take() else {
            return Err(WebRtcError::NotReady);
        };
        let initial = pending.initial;
        let mid = pending.mid;
        let video = pending.video;
        let checked = match answer_line(answer_sdp, "audio") {
            Some((m, true)) if Mid::from(m.as_str()) == mid => Ok(()),
            Some((m, true)) => Err(WebRtcError::Rejected(format!("answer's audio is mid {m}, not {mid}"))),
            Some((_, false)) => Err(WebRtcError::NoCodec),
            None => Err(WebRtcError::NoAudio),
        };
        if let Err(e) = checked {
            self.abandon(initial);
            return Err(e);
        }
        self.mutate(|rtc| rtc.handle_input(Input::Timeout(now)));
        let mut result = None;
        self.mutate(|rtc| {
            result = Some(rtc.sdp_api().accept_answer(pending.offer, answer));
            Ok(())
        });
        match result {
            Some(Ok(())) if !self.closed => {
                self.mid = Some(mid);
                if initial {
                    // The browser may refuse our video m-line (port 0): then the call has no video.
                    let used = answer_line(answer_sdp, "video").filter(|(_, used)| *used);
                    self.video = video.filter(|v| used.is_some_and(|(m, _)| Mid::from(m.as_str()) == *v));
                }
                self.note_direction();
                if initial {
                    self.flush_pending_candidates();
                    self.size_rtx_history();
                }
                if self.closed {
                    return Err(WebRtcError::Closed);
                }
                Ok(())
            }
            other => {
                let reason = match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "str0m panicked or closed".into(),
                };
                self.abandon(initial);
                Err(WebRtcError::Rejected(reason))
            }
        }
    }

    /// True while an offer of ours waits for the browser's answer.
    pub fn has_pending_offer(&self) -> bool {
        self.pending.is_some()
    }

    /// Forgets our pending offer, if any (the browser will not answer it: glare, a cancelled SIP
    /// re-INVITE, an error on the browser's side). A pending re-offer leaves the previous
    /// negotiation (and [`BrowserLeg::direction`]) in place; a pending first offer puts the leg
    /// back to its state after [`BrowserLeg::new`] (trickled candidates are kept).
    pub fn rollback_offer(&mut self) {
        if let Some(p) = self.pending.take() {
            self.abandon(p.initial);
        }
    }

    /// The negotiated direction of our audio m-line, from our side: whether we may send to the
    /// browser ([`Direction::SendRecv`], [`Direction::SendOnly`]) and whether it sends to us
    /// ([`Direction::SendRecv`], [`Direction::RecvOnly`]). As of the last completed offer/answer
    /// (a pending re-offer does not change it); `None` before the first one and once closed.
    /// [`BrowserLeg::write_rtp`] refuses packets while it does not send.
    pub fn direction(&self) -> Option<Direction> {
        if self.closed {
            return None;
        }
        self.negotiated.map(from_rtc_direction)
    }

    /// A datagram that arrived at `local` (our address the browser sent it to; when the socket is
    /// bound to a wildcard or sits behind a 1:1 NAT, the advertised address of that family is used)
    /// from `from`. Returns true if this leg took it (str0m checked it: for STUN, ufrag and
    /// MESSAGE-INTEGRITY), so the demultiplexer may learn `from` for this call; false if it was
    /// dropped.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, local: SocketAddr, data: &[u8]) -> bool {
        if self.closed || self.rtc.is_none() {
            return false;
        }
        let local = self.local_candidate(local);
        let Ok(receive) = Receive::new(Protocol::Udp, from, local, data) else {
            return false;
        };
        let input = Input::Receive(now, receive);
        let accepted = self.rtc.as_ref().and_then(|rtc| guarded(&self.seed, || rtc.accepts(&input))).unwrap_or(false);
        if !accepted {
            return false;
        }
        self.mutate(|rtc| rtc.handle_input(input));
        true
    }

    /// A trickled remote candidate: a `candidate:...` line (with or without `a=`), as sylkRTC's
    /// `session-trickle` carries it. An empty line or `end-of-candidates` is the end of the
    /// browser's candidates, which str0m ignores (media spec §1.5). Candidates that arrive before
    /// the first offer/answer completed (offer accepted, or answer to ours accepted) are kept (at
    /// most [`MAX_PENDING_CANDIDATES`]) and added then. With ICE-lite they are not needed (the
    /// browser's checks reveal its addresses), but they let str0m accept early traffic from them.
    /// A leg takes at most [`MAX_REMOTE_CANDIDATES`] in all; more get
    /// [`WebRtcError::TooManyCandidates`] and are not kept.
    pub fn add_remote_candidate(&mut self, line: &str) -> Result<(), WebRtcError> {
        if self.closed {
            return Err(WebRtcError::Closed);
        }
        let line = line.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() || line == "end-of-candidates" {
            self.end_of_candidates();
            return Ok(());
        }
        if self.remote_candidates >= MAX_REMOTE_CANDIDATES {
            return Err(WebRtcError::TooManyCandidates);
        }
        let c = Candidate::from_sdp_string(line).map_err(|e| WebRtcError::BadCandidate(e.to_string()))?;
        if self.rtc.is_none() || self.mid.is_none() {
            if self.pending_candidates.len() < MAX_PENDING_CANDIDATES {
                self.pending_candidates.push(c);
                self.remote_candidates += 1;
            }
            return Ok(());
        }
        self.remote_candidates += 1;
        self.mutate(|rtc| {
            rtc.add_remote_candidate(c);
            Ok(())
        });
        Ok(())
    }

    /// Trickled candidates the leg took (at most [`MAX_REMOTE_CANDIDATES`]).
    pub fn remote_candidate_count(&self) -> usize {
        self.remote_candidates
    }

    /// The browser has no more candidates (sylkRTC `session-trickle` with an empty list). A no-op:
    /// str0m is always trickling and has no end-of-candidates (media spec §1.5).
    pub fn end_of_candidates(&mut self) {}

    /// Sends one RTP packet to the browser on the audio stream, or the video one when `video`
    /// (str0m's SSRC; [`WebRtcError::NotReady`] if the call has no video). `seq` is the
    /// extended sequence number: its upper bits are the SRTP rollover counter, so a stream must
    /// start below 2^16 (media spec §1.9; [`super::rtp::SeqTsRewriter`] does). `ts` is passed
    /// through verbatim (G722 uses the 8 kHz wire clock). Before ICE and DTLS are up packets are
    /// refused ([`WebRtcError::NotReady`]) rather than queued, so no stale audio follows the
    /// handshake; so are they while the negotiated [`BrowserLeg::direction`] does not send (hold).
    #[allow(clippy::too_many_arguments)]
    pub fn write_rtp(
        &mut self,
        now: Instant,
        video: bool,
        pt: u8,
        seq: u64,
        ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<(), WebRtcError> {
        let packet = RtpWrite::new(Pt::from(pt), seq.into(), ts, now, payload).marker(marker);
        self.send_rtp(now, video, pt, packet)
    }

    /// [`BrowserLeg::write_rtp`] for a packet forwarded to many legs: the payload is shared
    /// (str0m keeps the `Arc`, also in its resend history), and with [`SfuOptions::rtx`] a video
    /// packet stays resendable for the browser's NACKs.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_rtp(
        &mut self,
        now: Instant,
        video: bool,
        pt: u8,
        seq: u64,
        ts: u32,
        marker: bool,
        payload: &Arc<[u8]>,
    ) -> Result<(), WebRtcError> {
        let nackable = video && self.sfu.rtx;
        let packet = RtpWrite::new(Pt::from(pt), seq.into(), ts, now, Arc::clone(payload)).marker(marker);
        self.send_rtp(now, video, pt, packet.nackable(nackable))
    }

    /// Queues `packet` on the stream of the audio (or video) m-line and lets str0m's pacer send
    /// it: the write and the `Input::Timeout(now)` the pacer needs to take it (str0m sends queued
    /// RTP only when time advances) are one mutation, drained once (issue #14: a drain between
    /// them walked str0m's whole output pipeline for nothing on every packet).
    fn send_rtp(&mut self, now: Instant, video: bool, pt: u8, packet: RtpWrite) -> Result<(), WebRtcError> {
        if self.closed {
            return Err(WebRtcError::Closed);
        }
        let line = if video { self.video } else { self.mid };
        let (Some(mid), true) = (line, self.connected) else {
            return Err(WebRtcError::NotReady);
        };
        if self.negotiated.is_some_and(|d| !d.is_sending()) {
            return Err(WebRtcError::NotReady);
        }
        let Some(rtc) = self.rtc.as_mut() else {
            return Err(WebRtcError::NotReady);
        };
        if !rtc.codec_config().params().iter().any(|p| *p.pt() == pt) {
            return Err(WebRtcError::UnknownPt(pt));
        }
        let mut written = false;
        self.mutate(|rtc| {
            let mut api = rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else { return Ok(()) };
            tx.write_rtp(packet);
            written = true;
            rtc.handle_input(Input::Timeout(now))
        });
        match (written, self.closed) {
            (true, _) => Ok(()),
            (false, true) => Err(WebRtcError::Closed),
            (false, false) => Err(WebRtcError::NotReady),
        }
    }

    /// Whether the call has video with the browser (a video m-line accepted in the first
    /// negotiation).
    pub fn has_video(&self) -> bool {
        self.video.is_some() && !self.closed
    }

    /// Asks the browser for a key frame on the video it sends us (the SIP side sent a PLI or FIR;
    /// media spec §2.3 point 4): str0m sends a PLI, or a FIR when `full_intra`, with its next RTCP.
    /// False when there is no video stream from the browser yet.
    pub fn request_keyframe(&mut self, full_intra: bool) -> bool {
        let (Some(mid), false) = (self.video, self.closed) else {
            return false;
        };
        let kind = if full_intra { KeyframeRequestKind::Fir } else { KeyframeRequestKind::Pli };
        let mut found = false;
        self.mutate(|rtc| {
            if let Some(rx) = rtc.direct_api().stream_rx_by_mid(mid, None) {
                rx.request_keyframe(kind);
                found = true;
            }
            Ok(())
        });
        found
    }

    /// Tells the browser the most it should send us on its video stream (REMB, RFC draft
    /// alvestrand-rmcat-remb; str0m sends it with its next RTCP). False when there is no video
    /// stream from the browser yet.
    pub fn request_remb(&mut self, bitrate: u64) -> bool {
        let (Some(mid), false) = (self.video, self.closed) else {
            return false;
        };
        let mut found = false;
        self.mutate(|rtc| {
            if let Some(rx) = rtc.direct_api().stream_rx_by_mid(mid, None) {
                rx.request_remb(Bitrate::bps(bitrate));
                found = true;
            }
            Ok(())
        });
        found
    }

    /// Starts closing: RTCP BYE and DTLS close_notify are queued, then [`LegOutput::Closed`].
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        if self.rtc.is_none() {
            self.finish();
            return;
        }
        self.mutate(|rtc| rtc.close());
    }

    /// The next output. Queued outputs first; then, once `now` has reached the last
    /// [`LegOutput::Timeout`], str0m's timers run (a mutation, drained at once); then
    /// `Timeout(at)` for the next one. `None` before an offer was accepted or made (nothing to
    /// do, no timer) and after [`LegOutput::Closed`].
    pub fn poll(&mut self, now: Instant) -> Option<LegOutput> {
        if let Some(o) = self.queue.pop_front() {
            return Some(o);
        }
        self.rtc.as_ref()?;
        if self.next_timeout.is_some_and(|t| now >= t) {
            self.mutate(|rtc| rtc.handle_input(Input::Timeout(now)));
            if self.next_timeout.is_some_and(|t| t <= now) {
                // str0m ran its timers at `now` and asks to run them at `now` again: it does
                // while something it must send cannot go out yet (a keyframe request before
                // ICE has a pair). Running them again at the same instant changes nothing, and
                // the event loop would spin (fuzz finding `gateway_ops/drain-spin`).
                self.next_timeout = Some(now + STALLED_TIMER_STEP);
                if !self.stall_logged {
                    self.stall_logged = true;
                    let reason = self.rtc.as_ref().map(|rtc| rtc.last_timeout_reason());
                    log::debug!(
                        "browser leg {}: str0m timer stalled ({reason:?}), retried every {STALLED_TIMER_STEP:?}",
                        self.creds.ufrag
                    );
                }
            }
            if let Some(o) = self.queue.pop_front() {
                return Some(o);
            }
        }
        self.rtc.as_ref()?;
        self.next_timeout.map(LegOutput::Timeout)
    }

    /// Our host candidates into a new `Rtc` (written into every SDP of ours).
    fn add_local_candidates(&mut self) {
        for addr in self.candidates.clone() {
            // Cannot fail for a UDP host candidate; ice-lite takes only host candidates.
            if let Ok(c) = Candidate::host(addr, "udp") {
                self.mutate(|rtc| {
                    rtc.add_local_candidate(c);
                    Ok(())
                });
            }
        }
    }

    /// The candidates trickled before the first negotiation completed, into the `Rtc`.
    fn flush_pending_candidates(&mut self) {
        for c in std::mem::take(&mut self.pending_candidates) {
            self.mutate(|rtc| {
                rtc.add_remote_candidate(c);
                Ok(())
            });
        }
    }

    /// str0m's current direction of `mid` (ours).
    fn rtc_direction(&self, mid: Mid) -> Option<RtcDirection> {
        let rtc = self.rtc.as_ref()?;
        guarded(&self.seed, || rtc.media(mid).map(|m| m.direction())).flatten()
    }

    /// A negotiation completed: remember its direction.
    fn note_direction(&mut self) {
        if let Some(mid) = self.mid {
            self.negotiated = self.rtc_direction(mid).or(self.negotiated);
        }
    }

    /// str0m applies a direction change to the session when the offer is made: put the negotiated
    /// one back (a change that is never applied makes no offer).
    fn restore_direction(&mut self) {
        let Some(dir) = self.negotiated else {
            return;
        };
        for mid in [self.mid, self.video].into_iter().flatten() {
            if self.rtc_direction(mid) == Some(dir) {
                continue;
            }
            self.mutate(|rtc| {
                rtc.sdp_api().set_direction(mid, dir);
                Ok(())
            });
        }
    }

    /// Our offer will not be answered (or its answer was refused).
    fn abandon(&mut self, initial: bool) {
        if initial {
            self.reset();
        } else {
            self.restore_direction();
        }
    }

    /// str0m's configuration with the `allowed` codecs. `offered`: every codec of the browser's
    /// offer when answering (RTX payload types are taken from it, or kept clear of it), else
    /// `allowed` again.
    fn rtc_config(&self, allowed: &[SdpCodec], offered: &[SdpCodec]) -> Result<RtcConfig, WebRtcError> {
        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_dtls_cert(DtlsCert::clone(&self.cert))
            .set_local_ice_credentials(self.creds.clone())
            .clear_codecs();
        if self.sfu.rtx && self.sfu.rtx_history > 0 {
            config = config.set_send_buffer_video(self.sfu.rtx_history);
        }
        if self.sfu.remb_only {
            // str0m's standard map without transport-wide sequence numbers.
            config = config
                .clear_extension_map()
                .set_extension(1, Extension::AudioLevel)
                .set_extension(2, Extension::AbsoluteSendTime)
                .set_extension(4, Extension::RtpMid)
                .set_extension(13, Extension::VideoOrientation);
        }
        let rtx_pts = if self.sfu.rtx { rtx_payload_types(allowed, offered) } else { Vec::new() };
        let mut audio = 0;
        let mut seen: Vec<&str> = Vec::new();
        for c in allowed {
            // Video: every allowed format (several H.264 profiles may be), no RTX (the SIP side
            // has none to resend from).
            if let Some(codec) = video_codec(c) {
                let params = FormatParams::parse_line(c.fmtp.as_deref().unwrap_or(""));
                let rtx = rtx_pts.iter().find(|(pt, _)| *pt == c.pt).map(|(_, rtx)| Pt::from(*rtx));
                config.codec_config().add_config(Pt::from(c.pt), rtx, codec, Frequency::NINETY_KHZ, None, params);
                continue;
            }
            let name = c.name.to_ascii_lowercase();
            // One entry per codec: the first (preferred) one of the SIP answer.
            if seen.iter().any(|s| s.eq_ignore_ascii_case(&c.name)) {
                continue;
            }
            match (name.as_str(), c.clock_rate, c.channels) {
                ("opus", 48000, 2) => config.codec_config().add_config(
                    Pt::from(c.pt),
                    None,
                    Codec::Opus,
                    Frequency::FORTY_EIGHT_KHZ,
                    Some(2),
                    FormatParams { min_p_time: Some(10), use_inband_fec: Some(true), ..FormatParams::default() },
                ),
                ("g722", 8000, 1) => config = config.enable_g722(true, false),
                ("pcmu", 8000, 1) => config = config.enable_pcmu(true, false),
                ("pcma", 8000, 1) => config = config.enable_pcma(true, false),
                ("telephone-event", 8000, 1) => {
                    let events = c.fmtp.as_deref().unwrap_or("0-16");
                    config.codec_config().add_config(
                        Pt::from(c.pt),
                        None,
                        Codec::Tele,
                        Frequency::EIGHT_KHZ,
                        None,
                        FormatParams::parse_line(events),
                    );
                    seen.push(&c.name);
                    continue;
                }
                _ => continue,
            }
            seen.push(&c.name);
            audio += 1;
        }
        if audio == 0 {
            return Err(WebRtcError::NoCodec);
        }
        if self.sfu.remb_only {
            for p in config.codec_config().iter_mut() {
                p.set_fb_transport_cc(false);
            }
        }
        if !allowed.iter().any(SdpCodec::is_video) {
            config = audio_only_extensions(config);
        }
        Ok(config)
    }

    /// Our video stream's resend history as [`SfuOptions`] asks (str0m sizes it by count; the
    /// age is ours).
    fn size_rtx_history(&mut self) {
        let (Some(mid), n, age) = (self.video, self.sfu.rtx_history, self.sfu.rtx_age) else { return };
        if !self.sfu.rtx || n == 0 {
            return;
        }
        self.mutate(|rtc| {
            if let Some(tx) = rtc.direct_api().stream_tx_by_mid(mid, None) {
                tx.set_rtx_cache(n, age, Some(RTX_RATIO_CAP));
            }
            Ok(())
        });
    }

    /// The local candidate a datagram sent to `local` arrived on: `local` itself if it is one,
    /// else the first advertised address of its family with its port, else of its family.
    fn local_candidate(&self, local: SocketAddr) -> SocketAddr {
        let same_family = |a: &&SocketAddr| a.is_ipv4() == local.is_ipv4();
        if self.candidates.contains(&local) {
            return local;
        }
        self.candidates
            .iter()
            .filter(same_family)
            .find(|a| a.port() == local.port())
            .or_else(|| self.candidates.iter().find(same_family))
            .copied()
            .unwrap_or(local)
    }

    /// One mutation of the `Rtc`, then a full drain of `poll_output` (str0m's single-mutation
    /// rule). An error or a panic closes the leg.
    fn mutate(&mut self, f: impl FnOnce(&mut Rtc) -> Result<(), RtcError>) {
        let Some(rtc) = self.rtc.as_mut() else {
            return;
        };
        match guarded(&self.seed, || f(rtc)) {
            Some(Ok(())) => self.drain(),
            Some(Err(e)) => {
                log::debug!("browser leg {}: {e}", self.creds.ufrag);
                self.finish();
            }
            None => self.finish(),
        }
    }

    /// Drains str0m's outputs until its next timeout into the queue. One `catch_unwind` around
    /// the whole drain, each output turned into a [`LegOutput`] where str0m returns it (its
    /// `Output` is 520 bytes: every layer it went through copied it); str0m's RNG is still
    /// reseeded around every `poll_output` as [`guarded`] does, so its draws do not change.
    fn drain(&mut self) {
        let Self { rtc: Some(rtc), seed, queue, creds, connected, ice, video, .. } = self else {
            return;
        };
        let video = *video;
        let mut end: Option<Result<Instant, RtcError>> = None;
        let unwound = catch_unwind(AssertUnwindSafe(|| loop {
            fastrand::seed(seed.get());
            let output = rtc.poll_output();
            seed.set(fastrand::u64(..));
            match output {
                Ok(Output::Timeout(t)) => {
                    end = Some(Ok(t));
                    return;
                }
                Ok(Output::Transmit(t)) => queue.push_back(LegOutput::Transmit {
                    to: t.destination,
                    from: t.source,
                    payload: t.contents.into(),
                }),
                Ok(Output::Event(e)) => on_event(e, rtc, video, (queue, connected, ice)),
                Err(e) => {
                    end = Some(Err(e));
                    return;
                }
            }
        }))
        .is_err();
        // A leg whose str0m panicked is not asked anything more: it finishes below.
        let alive = !unwound && rtc.is_alive();
        match end {
            Some(Ok(t)) if !unwound => {
                self.next_timeout = Some(t);
                if !alive {
                    self.finish();
                }
            }
            Some(Err(e)) => {
                log::debug!("browser leg {}: {e}", creds.ufrag);
                self.finish();
            }
            _ => self.finish(),
        }
    }

    /// The leg is over: drop the `Rtc` (its memory, 60-130 kB) and report it once.
    fn finish(&mut self) {
        if !self.closed {
            self.closed = true;
            self.queue.push_back(LegOutput::Closed);
        }
        self.rtc = None;
        self.next_timeout = None;
    }

    /// Back to the state before the first offer (a refused first offer or answer).
    fn reset(&mut self) {
        self.rtc = None;
        self.mid = None;
        self.video = None;
        self.pending = None;
        self.negotiated = None;
        self.next_timeout = None;
        self.queue.clear();
        self.closed = false;
        self.connected = false;
        self.ice = IceUp::Never;
    }
}

/// One str0m event of a leg into its queue (`queue`, `connected`, `ice` are the leg's; `video` its
/// video m-line).
fn on_event(
    e: Event,
    rtc: &Rtc,
    video: Option<Mid>,
    (queue, connected, ice): (&mut VecDeque<LegOutput>, &mut bool, &mut IceUp),
) {
    match e {
        Event::Connected if !*connected => {
            *connected = true;
            queue.push_back(LegOutput::Connected);
        }
        Event::IceConnectionStateChange(s) => match (s, *ice) {
            (IceConnectionState::Disconnected, IceUp::Up) => {
                *ice = IceUp::Lost;
                queue.push_back(LegOutput::Disconnected);
            }
            (IceConnectionState::Connected | IceConnectionState::Completed, IceUp::Lost) => {
                *ice = IceUp::Up;
                queue.push_back(LegOutput::Reconnected);
            }
            (IceConnectionState::Connected | IceConnectionState::Completed, IceUp::Never) => *ice = IceUp::Up,
            _ => {}
        },
        Event::RtpPacket(p) => queue.push_back(LegOutput::Rtp {
            video: is_video_pt(rtc, video, *p.header.payload_type),
            pt: *p.header.payload_type,
            seq: p.header.sequence_number,
            ts: p.header.timestamp,
            marker: p.header.marker,
            ssrc: *p.header.ssrc,
            audio_level: p.header.ext_vals.audio_level,
            payload: p.payload,
        }),
        Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
            queue.push_back(LegOutput::ReceiverEstimate { bitrate: estimate.as_u64() })
        }
        Event::KeyframeRequest(k) if Some(k.mid) == video => {
            queue.push_back(LegOutput::KeyframeRequest { full_intra: k.kind == KeyframeRequestKind::Fir })
        }
        // The browser closed DTLS: str0m still drains its own close output (BYE,
        // close_notify), then stops being alive, and `drain` reports Closed.
        Event::Closed => {}
        _ => {}
    }
}

/// Whether `pt` is one of the session's video payload types (a leg with a video m-line).
fn is_video_pt(rtc: &Rtc, video: Option<Mid>, pt: u8) -> bool {
    video.is_some() && rtc.codec_config().params().iter().any(|p| *p.pt() == pt && p.spec().codec.is_video())
}

/// Runs a call into str0m, turning a panic into `None` (str0m's README: catch_unwind per `Rtc`
/// and drop only the faulty instance).
/// Runs a call into str0m: a panic becomes `None`, and str0m's thread-local RNG (fastrand, which
/// it draws mids, SSRCs, msids and STUN transaction ids from) runs on the leg's own stream,
/// seeded from the core's [`Rng`], so a leg's draws are the same in a replay.
fn guarded<T>(seed: &Cell<u64>, f: impl FnOnce() -> T) -> Option<T> {
    fastrand::seed(seed.get());
    let out = catch_unwind(AssertUnwindSafe(f)).ok();
    seed.set(fastrand::u64(..));
    out
}

fn to_rtc_direction(d: Direction) -> RtcDirection {
    match d {
        Direction::SendRecv => RtcDirection::SendRecv,
        Direction::SendOnly => RtcDirection::SendOnly,
        Direction::RecvOnly => RtcDirection::RecvOnly,
        Direction::Inactive => RtcDirection::Inactive,
    }
}

fn from_rtc_direction(d: RtcDirection) -> Direction {
    match d {
        RtcDirection::SendRecv => Direction::SendRecv,
        RtcDirection::SendOnly => Direction::SendOnly,
        RtcDirection::RecvOnly => Direction::RecvOnly,
        RtcDirection::Inactive => Direction::Inactive,
    }
}

/// Resends may be at most this share of what a stream sends; beyond, queued resends are dropped
/// (str0m's default ratio: a link losing that much needs a lower bitrate, not more resends).
const RTX_RATIO_CAP: f32 = 0.15;

/// An RTX payload type (RFC 4588 §8.6) for each video codec of `allowed`, (codec PT, RTX PT):
/// the one `offered` (the browser's offer, or the codecs we offer) lists for it (`rtx` with
/// `apt=`), else the lowest dynamic PT neither uses.
fn rtx_payload_types(allowed: &[SdpCodec], offered: &[SdpCodec]) -> Vec<(u8, u8)> {
    let mut used: Vec<u8> = allowed.iter().chain(offered).map(|c| c.pt).collect();
    let mut out = Vec::new();
    for c in allowed.iter().filter(|c| video_codec(c).is_some()) {
        let listed = offered.iter().find(|r| {
            r.name.eq_ignore_ascii_case("rtx")
                && super::sdp::fmtp_param(r.fmtp.as_deref(), "apt") == Some(&*c.pt.to_string())
        });
        let rtx = match listed {
            Some(r) => r.pt,
            None => match (96..=127).find(|pt| !used.contains(pt)) {
                Some(pt) => pt,
                None => continue,
            },
        };
        used.push(rtx);
        out.push((c.pt, rtx));
    }
    out
}

/// The RTP header extensions of an audio-only leg: str0m's standard set without transport-wide
/// sequence numbers (TWCC, draft-holmer-rmcat-transport-wide-cc-extensions) and without the
/// absolute send time (abs-send-time, the input of REMB's receive-side estimate). Both feed a
/// sender's bandwidth estimation; an audio call has none to do (its rate is the codec's), yet with
/// TWCC negotiated str0m numbers and registers every packet sent, answers the browser's feedback,
/// and sends its own every 100 ms (issue #14's profile: about 6 % of the gateway's CPU), and with
/// abs-send-time it turns the clock into NTP time for every packet it sends and every packet it
/// receives (about 3 % of the gateway's instructions: `bench_core_calls` under callgrind). Not
/// offering them, the answer leaves them out and neither side sends them. Legs with video keep
/// both.
fn audio_only_extensions(config: RtcConfig) -> RtcConfig {
    config
        .clear_extension_map()
        .set_extension(1, Extension::AudioLevel)
        .set_extension(4, Extension::RtpMid)
        .set_extension(10, Extension::RtpStreamId)
        .set_extension(11, Extension::RepairedRtpStreamId)
        .set_extension(13, Extension::VideoOrientation)
}

/// str0m's codec for a video codec the gateway carries (VP8, H.264 at 90 kHz).
fn video_codec(c: &SdpCodec) -> Option<Codec> {
    if !c.is_video() {
        return None;
    }
    Some(if c.name.eq_ignore_ascii_case("VP8") { Codec::Vp8 } else { Codec::H264 })
}

/// The first m-line of `kind` (`audio`, `video`) of an SDP: its mid, and whether it is in use (a
/// port and at least one format; str0m answers an offer it shares no codec with by disabling the
/// m-line).
fn answer_line(answer: &str, kind: &str) -> Option<(String, bool)> {
    let mut in_audio: Option<bool> = None;
    for line in answer.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if in_audio.is_some() {
                return None; // the section had no a=mid
            }
            let mut parts = m.split_whitespace();
            if parts.next() == Some(kind) {
                let port = parts.next().unwrap_or("0");
                in_audio = Some(port != "0" && parts.nth(1).is_some());
            }
        } else if let (Some(used), Some(mid)) = (in_audio, line.strip_prefix("a=mid:")) {
            return Some((mid.to_string(), used));
        }
    }
    None
}

#[cfg(test)]
mod tests;
