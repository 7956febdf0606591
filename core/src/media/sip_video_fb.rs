//! Video feedback on the SIP side: `a=rtcp-fb` (RFC 4585) and retransmission (RTX, RFC 4588).
//!
//! - [`VideoFeedback::listed`] is what one side's video m-line lists for the formats in use:
//!   `nack`, `nack pli`, `ccm fir` (RFC 4585 §4.2, RFC 5104 §7.1; per format or `*`) and the
//!   `rtx/90000` formats whose `apt` names one of them (RFC 4588 §8.6). Our SDP (offer or answer)
//!   writes exactly that back ([`VideoFeedback::rtcp_fb_lines`], [`VideoFeedback::rtx_codecs`]):
//!   an answer never lists more than the offer did (RFC 4585 §4.2).
//! - [`Feedback`] is the per-line state once negotiated: a bounded history of the last
//!   [`HISTORY`] video packets we sent (kept only when `nack` was negotiated), the peer's generic
//!   NACKs (RFC 4585 §6.2.1) turned into resends — wrapped as RTX (RFC 4588 §4: OSN first, our
//!   RTX SSRC and sequence) when RTX was negotiated for the format, else the original packet —
//!   and the peer's RTX packets unwrapped into the original stream.

use super::rtcp::{self, RtcpPacket};
use super::rtp::{self, RtpOut};
use super::sdp::{Codec, MediaDescription};

/// Video packets kept for NACKs (about a second of video at 1 Mbit/s; at most 1500 bytes each).
pub const HISTORY: usize = 128;
/// At most this many packets are resent for one RTCP datagram (a NACK can name many).
pub const MAX_RESENDS: usize = 64;

/// The RTPFB FMT of a generic NACK (RFC 4585 §6.2.1).
const FMT_NACK: u8 = 1;

/// A feedback message type we honour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FbKind {
    /// `nack`: generic NACK, answered from the send history.
    Nack,
    /// `nack pli`: key frame requests, forwarded to the browser (and sent for it).
    Pli,
    /// `ccm fir`: full intra requests (RFC 5104), forwarded like PLI.
    Fir,
}

impl FbKind {
    const ALL: [FbKind; 3] = [FbKind::Nack, FbKind::Pli, FbKind::Fir];

    /// The `a=rtcp-fb` value after the format.
    pub fn as_str(self) -> &'static str {
        match self {
            FbKind::Nack => "nack",
            FbKind::Pli => "nack pli",
            FbKind::Fir => "ccm fir",
        }
    }
}

/// An RTX format (RFC 4588 §8.6): `pt` retransmits `apt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rtx {
    /// The RTX payload type.
    pub pt: u8,
    /// The associated (original) payload type.
    pub apt: u8,
}

/// The feedback of one video m-line, at the SIP side's numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VideoFeedback {
    /// (format, type) pairs.
    pub fb: Vec<(u8, FbKind)>,
    /// RTX formats, one per associated format.
    pub rtx: Vec<Rtx>,
}

impl VideoFeedback {
    /// What `m` lists for `codecs` (formats of `m` in use): the types we honour, and the RTX
    /// formats at 90 kHz whose `apt` is one of `codecs`.
    pub fn listed(m: &MediaDescription, codecs: &[Codec]) -> Self {
        let mut out = Self::default();
        for c in codecs {
            for kind in FbKind::ALL {
                let listed = m.rtcp_fb.iter().any(|(fmt, value)| {
                    (fmt == "*" || fmt.parse::<u8>().ok() == Some(c.pt))
                        && value.split_whitespace().map(str::to_ascii_lowercase).eq(kind.as_str().split(' '))
                });
                if listed {
                    out.fb.push((c.pt, kind));
                }
            }
        }
        for r in m.rtpmaps.iter().filter(|r| r.name.eq_ignore_ascii_case("rtx") && r.clock_rate == 90000) {
            let apt = super::sdp::fmtp_param(m.fmtp(r.pt), "apt").and_then(|a| a.parse::<u8>().ok());
            let Some(apt) = apt.filter(|a| codecs.iter().any(|c| c.pt == *a)) else { continue };
            let taken = out.rtx.iter().any(|x| x.apt == apt) || codecs.iter().any(|c| c.pt == r.pt);
            if !taken && m.payload_types().any(|pt| pt == r.pt) {
                out.rtx.push(Rtx { pt: r.pt, apt });
            }
        }
        out
    }

    /// Keeps only what concerns the formats `pts` (those our answer kept).
    pub fn retain(&mut self, pts: &[u8]) {
        self.fb.retain(|(pt, _)| pts.contains(pt));
        self.rtx.retain(|r| pts.contains(&r.apt));
    }

    /// True when nothing is negotiated.
    pub fn is_empty(&self) -> bool {
        self.fb.is_empty() && self.rtx.is_empty()
    }

    /// True when `nack` was negotiated for some format.
    pub fn nack(&self) -> bool {
        self.fb.iter().any(|(_, k)| *k == FbKind::Nack)
    }

    /// The `a=rtcp-fb` values our SDP writes.
    pub fn rtcp_fb_lines(&self) -> Vec<String> {
        self.fb.iter().map(|(pt, k)| format!("{pt} {}", k.as_str())).collect()
    }

    /// The RTX formats our SDP writes (rtpmap `rtx/90000`, fmtp `apt=`).
    pub fn rtx_codecs(&self) -> Vec<Codec> {
        self.rtx
            .iter()
            .map(|r| Codec {
                pt: r.pt,
                name: "rtx".into(),
                clock_rate: 90000,
                channels: 1,
                fmtp: Some(format!("apt={}", r.apt)),
            })
            .collect()
    }
}

/// Why a packet of an RTX format was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtxError {
    /// No OSN (padding-only probes, RFC 4588 §4) or not RTP.
    Empty,
    /// No original stream from the peer yet to put it in.
    NoSource,
}

/// One sent packet kept for NACKs.
#[derive(Clone, Debug, Default)]
struct Sent {
    seq: Option<u16>,
    packet: Vec<u8>,
}

/// The negotiated feedback of one SIP video line and its state.
#[derive(Debug)]
pub struct Feedback {
    fb: VideoFeedback,
    /// Ring of sent packets by sequence number (empty unless `nack`).
    history: Vec<Sent>,
    rtx_ssrc: u32,
    rtx_seq: u16,
    pending: Vec<Vec<u8>>,
}

impl Feedback {
    /// State for `fb`; our RTX stream uses `rtx_ssrc` and starts at `rtx_seq`.
    pub fn new(fb: VideoFeedback, rtx_ssrc: u32, rtx_seq: u16) -> Self {
        let history = if fb.nack() { vec![Sent::default(); HISTORY] } else { Vec::new() };
        Self { fb, history, rtx_ssrc, rtx_seq, pending: Vec::new() }
    }

    /// What was negotiated.
    pub fn negotiated(&self) -> &VideoFeedback {
        &self.fb
    }

    /// Keeps `packet` (plain RTP as sent, before SRTP) for NACKs.
    pub fn record(&mut self, packet: &[u8]) {
        let Ok(h) = rtp::parse_header(packet) else { return };
        if let Some(slot) = self.history.get_mut(usize::from(h.seq) % HISTORY) {
            slot.seq = Some(h.seq);
            slot.packet.clear();
            slot.packet.extend_from_slice(packet);
        }
    }

    /// A compound RTCP datagram from the peer: its generic NACKs for `our_ssrc` queue the packets
    /// still in the history (RFC 4585 §6.2.1: PID and the bitmask BLP of the 16 following).
    /// Returns how many were queued.
    pub fn on_rtcp(&mut self, data: &[u8], our_ssrc: u32) -> usize {
        let mut queued = 0;
        for p in rtcp::parse_compound(data).map_while(Result::ok) {
            let RtcpPacket::Other { pt: rtcp::PT_RTPFB, count: FMT_NACK, body } = p else { continue };
            let Some(media) = body.get(4..8) else { continue };
            if u32::from_be_bytes([media[0], media[1], media[2], media[3]]) != our_ssrc {
                continue;
            }
            for fci in body[8..].chunks_exact(4) {
                let pid = u16::from_be_bytes([fci[0], fci[1]]);
                let blp = u16::from_be_bytes([fci[2], fci[3]]);
                let lost = std::iter::once(pid)
                    .chain((0..16).filter(|i| blp & (1 << i) != 0).map(|i| pid.wrapping_add(i + 1)));
                for seq in lost {
                    if self.pending.len() >= MAX_RESENDS {
                        return queued;
                    }
                    if let Some(p) = self.resend(seq) {
                        self.pending.push(p);
                        queued += 1;
                    }
                }
            }
        }
        queued
    }

    /// The packet with sequence number `seq` again: as RTX when negotiated for its format.
    fn resend(&mut self, seq: u16) -> Option<Vec<u8>> {
        let slot = self.history.get(usize::from(seq) % HISTORY).filter(|s| s.seq == Some(seq))?;
        let view = rtp::parse(&slot.packet).ok()?;
        let h = view.header;
        let Some(rtx) = self.fb.rtx.iter().find(|r| r.apt == h.pt) else { return Some(slot.packet.clone()) };
        let mut payload = Vec::with_capacity(2 + view.payload().len());
        payload.extend_from_slice(&seq.to_be_bytes());
        payload.extend_from_slice(view.payload());
        let out = RtpOut { marker: h.marker, pt: rtx.pt, seq: self.rtx_seq, ts: h.ts, ssrc: self.rtx_ssrc };
        let mut buf = vec![0; 12 + payload.len()];
        let n = rtp::write_packet(&mut buf, &out, &payload).ok()?;
        buf.truncate(n);
        self.rtx_seq = self.rtx_seq.wrapping_add(1);
        Some(buf)
    }

    /// The packets queued by [`Feedback::on_rtcp`] (plain RTP), oldest first.
    pub fn take(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.pending)
    }

    /// Rewrites the RTX packet in `buf` (plain RTP) into the original it carries (RFC 4588 §4):
    /// the associated format, the OSN as sequence number, and `media_ssrc` (the peer's original
    /// stream; RFC 4588 §5.3 pairs them by CNAME, and the peer sends one video stream).
    /// `Ok(false)`: not RTX, untouched.
    pub fn unwrap_rtx(&self, buf: &mut Vec<u8>, media_ssrc: Option<u32>) -> Result<bool, RtxError> {
        let view = rtp::parse(buf).map_err(|_| RtxError::Empty)?;
        let h = view.header;
        let Some(rtx) = self.fb.rtx.iter().find(|r| r.pt == h.pt) else { return Ok(false) };
        let payload = view.payload();
        let (Some(osn), Some(original)) = (payload.get(..2), payload.get(2..).filter(|p| !p.is_empty())) else {
            return Err(RtxError::Empty);
        };
        let ssrc = media_ssrc.ok_or(RtxError::NoSource)?;
        let out = RtpOut { marker: h.marker, pt: rtx.apt, seq: u16::from_be_bytes([osn[0], osn[1]]), ts: h.ts, ssrc };
        let mut packet = vec![0; 12 + original.len()];
        let n = rtp::write_packet(&mut packet, &out, original).map_err(|_| RtxError::Empty)?;
        packet.truncate(n);
        *buf = packet;
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
