//! Media building blocks, all sans-IO (no IO, no clock: `now` and the wall clock are passed in;
//! the core's randomness only from the caller's [`Rng`](crate::rng::Rng); str0m's own draws are
//! listed in [`webrtc`]).
//!
//! The browser leg is str0m's (media spec §1); the SIP leg is plain RTP/AVP or SDES RTP/SAVP that
//! the gateway speaks itself (media spec §0 point 5, §2.3):
//!
//! - [`rtp`]: RTP header parse/build (RFC 3550 §5.1), sequence/timestamp rewriting across source
//!   changes, payload-type maps, symmetric-RTP latching.
//! - [`rtcp`]: compound RTCP parsing (SR, RR, BYE, PLI, FIR), our SR/RR with RFC 3550 A.1/A.3/A.8
//!   statistics, PLI/FIR builders.
//! - [`srtp`]: SDES-SRTP (RFC 3711) with AES_CM_128_HMAC_SHA1_80/_32 and the `a=crypto`
//!   attribute (RFC 4568).
//! - [`sdp`]: the SIP-side SDP parser and offer/answer builder (RFC 8866, RFC 3264).
//! - [`sip_video_fb`]: `a=rtcp-fb` and RTX (RFC 4585, RFC 4588) on the SIP video line: NACKs
//!   answered from a send history, the peer's RTX unwrapped.
//! - [`ports`]: the RTP/RTCP port pairs of one core, handed out round-robin.
//!
//! The browser side:
//!
//! - [`webrtc`]: the browser leg, one str0m `Rtc` per call (ICE-lite, DTLS-SRTP, RTP mode).
//! - [`demux`]: which leg a datagram on the shared WebRTC UDP socket belongs to (STUN USERNAME
//!   ufrag, learned source address).

pub mod bridge;
pub mod demux;
pub mod dtmf;
pub mod dtmf_rate;
pub mod ports;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod sip_video_fb;
pub mod srtp;
pub mod webrtc;
