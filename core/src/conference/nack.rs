//! Loss repair in the conference media plane: NACK (RFC 4585 §6.2.1) answered with RTX (RFC
//! 4588), on video only.
//!
//! str0m does the work in RTP mode once a leg negotiated RTX ([`SfuOptions::rtx`]):
//! - towards a subscriber (feed leg): every video packet is written resendable
//!   ([`BrowserLeg::forward_rtp`](crate::media::webrtc::BrowserLeg::forward_rtp)) into the
//!   stream's resend history, which shares the publisher's payload (`Arc`), so one history per
//!   feed costs packet headers, not payloads. The subscriber's NACK is answered from it on the
//!   RTX SSRC/PT of our offer; a NACK for a packet older than the history is ignored (the
//!   subscriber then asks for a key frame, which is relayed).
//! - from a publisher: str0m NACKs the gaps in its video and the resends come back as the
//!   original packets (RTP mode un-wraps RTX), late; they are forwarded like any other packet
//!   (the per-feed sequence rewriting keeps their place).
//!
//! Audio has no NACK (Opus has in-band FEC; browsers do not offer NACK for audio), so no audio
//! history is kept.

use crate::media::webrtc::SfuOptions;
use std::time::Duration;

/// Video packets a feed keeps to resend: about 1 s of video at 2 Mbit/s (200 packets/s).
pub const FEED_RTX_HISTORY: usize = 256;

/// How long a forwarded video packet stays resendable: a NACK comes one round trip after the
/// gap; later than this a key frame is the better repair.
pub const FEED_RTX_AGE: Duration = Duration::from_secs(1);

/// A publisher leg: RTX negotiated (str0m NACKs the browser's video), the browser's send-side
/// bandwidth estimation (transport-cc) kept; our REMB caps it (`conference::bitrate`).
pub const PUBLISHER: SfuOptions = SfuOptions { rtx: true, rtx_history: 0, rtx_age: Duration::ZERO, remb_only: false };

/// A feed leg: RTX with a history of [`FEED_RTX_HISTORY`] packets, and REMB-only feedback so
/// the subscribing browser reports what it can receive (relayed to the publisher).
pub const FEED: SfuOptions =
    SfuOptions { rtx: true, rtx_history: FEED_RTX_HISTORY, rtx_age: FEED_RTX_AGE, remb_only: true };
