//! RTP packets (RFC 3550 §5.1) and the per-leg forwarding helpers of the SIP side.
//!
//! - [`parse`] / [`parse_header`]: a zero-copy view of an RTP packet. Never panics, never
//!   allocates.
//! - [`write_packet`]: a fresh 12-byte header (no CSRCs, no header extension) plus payload, written
//!   into a caller buffer. Header extensions of the other leg (str0m's TWCC, mid, abs-send-time)
//!   therefore never leak (media spec §2.3 point 3).
//! - [`SeqTsRewriter`]: maps incoming sequence numbers and timestamps onto one outgoing sequence
//!   that starts small and stays continuous across source changes (media spec §1.9, §2.3 point 3).
//! - [`PtMap`]: payload-type renumbering between legs (media spec §2.3 point 2).
//! - [`Latch`]: symmetric RTP / comedia latching (media spec §2.3 point 5).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// The only RTP version (RFC 3550 §5.1).
pub const RTP_VERSION: u8 = 2;
/// Length of the fixed header without CSRCs (RFC 3550 §5.1).
pub const HEADER_LEN: usize = 12;

/// Why a datagram is not an RTP packet, or a buffer is too small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than the header, its CSRC list or its extension claim.
    TooShort,
    /// The version field is not 2.
    BadVersion,
    /// The P bit is set but the padding count is 0 or larger than the payload (RFC 3550 §5.1).
    BadPadding,
    /// The payload type does not fit in 7 bits.
    BadPayloadType,
    /// The output buffer cannot hold the packet.
    BufferTooSmall,
}

impl RtpError {
    /// A short reason for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RtpError::TooShort => "truncated RTP packet",
            RtpError::BadVersion => "RTP version is not 2",
            RtpError::BadPadding => "bad RTP padding",
            RtpError::BadPayloadType => "payload type above 127",
            RtpError::BufferTooSmall => "buffer too small",
        }
    }
}

impl std::fmt::Display for RtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields of an RTP header (RFC 3550 §5.1) and where the payload sits.
///
/// `payload_offset` is the first byte after the CSRC list and the header extension;
/// `payload_end` excludes the padding (equal to the packet length when P is clear, and — from
/// [`parse_header`], which cannot check padding of an encrypted packet — always the packet
/// length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    /// Always [`RTP_VERSION`] after a successful parse.
    pub version: u8,
    /// The P bit.
    pub padding: bool,
    /// The X bit.
    pub extension: bool,
    /// CC: number of CSRC identifiers (0–15).
    pub csrc_count: u8,
    /// The M bit.
    pub marker: bool,
    /// PT (0–127).
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub ts: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Offset of the header extension (its 4-byte profile/length word), if X is set.
    pub extension_offset: Option<usize>,
    /// Offset of the payload.
    pub payload_offset: usize,
    /// End of the payload (padding excluded when checked, see above).
    pub payload_end: usize,
}

/// A parsed RTP packet: the header plus the bytes it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpView<'a> {
    /// The header fields and offsets.
    pub header: RtpHeader,
    data: &'a [u8],
}

impl<'a> RtpView<'a> {
    /// The whole packet as given to [`parse`].
    pub fn packet(&self) -> &'a [u8] {
        self.data
    }

    /// The payload, padding excluded.
    pub fn payload(&self) -> &'a [u8] {
        self.data.get(self.header.payload_offset..self.header.payload_end).unwrap_or_default()
    }

    /// The CSRC identifiers.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let end = HEADER_LEN + 4 * usize::from(self.header.csrc_count);
        self.data.get(HEADER_LEN..end).unwrap_or_default().chunks_exact(4).map(be32)
    }

    /// The header extension as (profile-defined 16 bits, extension body), if X is set.
    pub fn extension(&self) -> Option<(u16, &'a [u8])> {
        let off = self.header.extension_offset?;
        let profile = self.data.get(off..off + 2)?;
        let body = self.data.get(off + 4..self.header.payload_offset)?;
        Some((u16::from_be_bytes([profile[0], profile[1]]), body))
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses the header of `data` without looking at the padding: usable on an SRTP packet whose
/// padding count is still encrypted. `payload_end` is `data.len()`.
pub fn parse_header(data: &[u8]) -> Result<RtpHeader, RtpError> {
    let fixed = data.get(..HEADER_LEN).ok_or(RtpError::TooShort)?;
    if fixed[0] >> 6 != RTP_VERSION {
        return Err(RtpError::BadVersion);
    }
    let csrc_count = fixed[0] & 0x0f;
    let extension = fixed[0] & 0x10 != 0;
    let mut offset = HEADER_LEN + 4 * usize::from(csrc_count);
    if offset > data.len() {
        return Err(RtpError::TooShort);
    }
    let mut extension_offset = None;
    if extension {
        let word = data.get(offset..offset + 4).ok_or(RtpError::TooShort)?;
        let words = usize::from(u16::from_be_bytes([word[2], word[3]]));
        extension_offset = Some(offset);
        offset += 4 + 4 * words;
        if offset > data.len() {
            return Err(RtpError::TooShort);
        }
    }
    Ok(RtpHeader {
        version: RTP_VERSION,
        padding: fixed[0] & 0x20 != 0,
        extension,
        csrc_count,
        marker: fixed[1] & 0x80 != 0,
        pt: fixed[1] & 0x7f,
        seq: u16::from_be_bytes([fixed[2], fixed[3]]),
        ts: be32(&fixed[4..8]),
        ssrc: be32(&fixed[8..12]),
        extension_offset,
        payload_offset: offset,
        payload_end: data.len(),
    })
}

/// Parses a plain RTP packet (RFC 3550 §5.1), checking the padding too.
///
/// It does not reject RTCP payload types: on an rtcp-mux socket classify first with
/// [`looks_like_rtcp`].
pub fn parse(data: &[u8]) -> Result<RtpView<'_>, RtpError> {
    let mut header = parse_header(data)?;
    if header.padding {
        let count = usize::from(*data.last().ok_or(RtpError::TooShort)?);
        if count == 0 || count > data.len() - header.payload_offset {
            return Err(RtpError::BadPadding);
        }
        header.payload_end = data.len() - count;
    }
    Ok(RtpView { header, data })
}

/// RFC 5761 §4: on a multiplexed socket, version 2 with a second byte in 192–223 (RTCP packet
/// types SR…XR; RTP payload types 64–95 with the marker set) is RTCP.
pub fn looks_like_rtcp(data: &[u8]) -> bool {
    matches!(data, [b0, b1, ..] if b0 >> 6 == RTP_VERSION && (192..=223).contains(b1))
}

/// The fields of an outgoing RTP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpOut {
    /// M bit.
    pub marker: bool,
    /// Payload type, 0–127.
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub ts: u32,
    /// Our SSRC.
    pub ssrc: u32,
}

/// Writes a 12-byte header (V=2, no padding, no extension, no CSRC) and `payload` to the start of
/// `buf`; returns the packet length. No allocation.
pub fn write_packet(buf: &mut [u8], h: &RtpOut, payload: &[u8]) -> Result<usize, RtpError> {
    if h.pt > 127 {
        return Err(RtpError::BadPayloadType);
    }
    let len = HEADER_LEN + payload.len();
    let out = buf.get_mut(..len).ok_or(RtpError::BufferTooSmall)?;
    out[0] = RTP_VERSION << 6;
    out[1] = (u8::from(h.marker) << 7) | h.pt;
    out[2..4].copy_from_slice(&h.seq.to_be_bytes());
    out[4..8].copy_from_slice(&h.ts.to_be_bytes());
    out[8..12].copy_from_slice(&h.ssrc.to_be_bytes());
    out[HEADER_LEN..].copy_from_slice(payload);
    Ok(len)
}

/// A forward jump larger than this (RFC 3550 A.1 `MAX_DROPOUT`) is a suspected source restart.
pub const MAX_DROPOUT: u16 = 3000;
/// A backward step larger than this (RFC 3550 A.1 `MAX_MISORDER`) is a suspected source restart.
pub const MAX_MISORDER: u16 = 100;

/// One rewritten packet: what to put in the outgoing header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// The outgoing sequence number (the low 16 bits of `ext_seq`).
    pub seq: u16,
    /// The outgoing extended sequence number: what str0m's `RtpWrite` wants (media spec §1.9).
    pub ext_seq: u64,
    /// The outgoing RTP timestamp.
    pub ts: u32,
    /// True for the first packet after a source change: audio senders set the marker bit here
    /// (RFC 3551 §4.1, start of a talkspurt).
    pub new_source: bool,
}

#[derive(Clone, Debug)]
struct Source {
    ssrc: u32,
    /// Extended incoming sequence number of the source's first packet. The extension starts at
    /// 2^16 so that late packets of the first cycle do not underflow.
    base_in: u64,
    /// Highest extended incoming sequence number seen.
    max_in: u64,
    base_out: u64,
    ts_base_in: u32,
    ts_base_out: u32,
    /// RFC 3550 A.1 `bad_seq`: after a large jump, the sequence number that confirms a restart.
    bad_seq: Option<u16>,
}

#[derive(Clone, Copy, Debug)]
struct LastOut {
    ext_seq: u64,
    ts: u32,
    at: Instant,
}

/// Per-direction sequence-number and timestamp rewriting (Janus `janus_rtp_header_update`,
/// media spec §2.3 point 3).
///
/// Contract:
/// - The first packet ever is sent with `first_seq` / `first_ts` (draw them from the caller's
///   `Rng`; keep `first_seq` below 2^15 so the str0m leg's ROC starts at 0, media spec §1.9).
/// - Within one source, `out = in − base_in + base_out` on extended (wrap-aware) sequence numbers,
///   and timestamps are offset the same way, so loss and reordering are preserved.
/// - A new source — another SSRC, a [`SeqTsRewriter::reset_source`] (re-INVITE, early→final
///   media, unhold), or a jump confirmed by two sequential packets as in RFC 3550 A.1 — continues
///   at `last_out_seq + 1`, with the timestamp advanced by the wall-clock time since the last
///   forwarded packet times `clock_rate` (at least 1 tick).
/// - Returns `None` for packets that must be dropped: older than the current source's first
///   packet (they would reuse outgoing numbers) or an unconfirmed large jump.
#[derive(Clone, Debug)]
pub struct SeqTsRewriter {
    first_seq: u16,
    first_ts: u32,
    source: Option<Source>,
    last: Option<LastOut>,
    force_new: bool,
}

impl SeqTsRewriter {
    /// A rewriter whose first outgoing packet gets `first_seq` and `first_ts`.
    pub fn new(first_seq: u16, first_ts: u32) -> Self {
        Self { first_seq, first_ts, source: None, last: None, force_new: false }
    }

    /// Treats the next packet as the start of a new source even if its SSRC is unchanged.
    pub fn reset_source(&mut self) {
        self.force_new = true;
    }

    /// The last extended sequence number sent, if any.
    pub fn last_ext_seq(&self) -> Option<u64> {
        self.last.map(|l| l.ext_seq)
    }

    /// Rewrites one incoming packet that arrived at `now`. `clock_rate` is the RTP clock of its
    /// payload type (8000 for PCMU/PCMA/G722, 48000 for Opus, 90000 for video).
    pub fn rewrite(&mut self, now: Instant, ssrc: u32, seq: u16, ts: u32, clock_rate: u32) -> Option<Rewritten> {
        let restart = match &mut self.source {
            Some(src) if src.ssrc == ssrc && !self.force_new => {
                let udelta = seq.wrapping_sub(src.max_in as u16);
                if !(MAX_DROPOUT..=u16::MAX - MAX_MISORDER).contains(&udelta) {
                    src.bad_seq = None;
                    false
                } else if src.bad_seq == Some(seq) {
                    true
                } else {
                    src.bad_seq = Some(seq.wrapping_add(1));
                    return None;
                }
            }
            _ => true,
        };
        if restart {
            self.start_source(now, ssrc, seq, ts, clock_rate);
        }
        let src = self.source.as_mut()?;
        let udelta = seq.wrapping_sub(src.max_in as u16);
        let ext_in = if udelta < 0x8000 {
            src.max_in + u64::from(udelta)
        } else {
            src.max_in - u64::from(udelta.wrapping_neg())
        };
        if ext_in < src.base_in {
            return None;
        }
        src.max_in = src.max_in.max(ext_in);
        let ext_seq = src.base_out + (ext_in - src.base_in);
        let out_ts = ts.wrapping_sub(src.ts_base_in).wrapping_add(src.ts_base_out);
        if self.last.is_none_or(|l| ext_seq > l.ext_seq) {
            self.last = Some(LastOut { ext_seq, ts: out_ts, at: now });
        }
        Some(Rewritten { seq: ext_seq as u16, ext_seq, ts: out_ts, new_source: restart })
    }

    fn start_source(&mut self, now: Instant, ssrc: u32, seq: u16, ts: u32, clock_rate: u32) {
        let (base_out, ts_base_out) = match self.last {
            Some(last) => {
                let elapsed = now.saturating_duration_since(last.at);
                let ticks = elapsed.as_nanos().saturating_mul(u128::from(clock_rate)) / 1_000_000_000;
                let ticks = u32::try_from(ticks).unwrap_or(u32::MAX).max(1);
                (last.ext_seq + 1, last.ts.wrapping_add(ticks))
            }
            None => (u64::from(self.first_seq), self.first_ts),
        };
        let base_in = (1 << 16) + u64::from(seq);
        self.source =
            Some(Source { ssrc, base_in, max_in: base_in, base_out, ts_base_in: ts, ts_base_out, bad_seq: None });
        self.force_new = false;
    }
}

/// Payload-type renumbering: incoming PT → outgoing PT, for the PTs the other side accepted
/// (media spec §2.3 point 2). Unmapped PTs are to be dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct PtMap {
    map: [u8; 128],
}

const UNMAPPED: u8 = 0xff;

impl Default for PtMap {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PtMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl PtMap {
    /// An empty map: every PT is dropped.
    pub fn new() -> Self {
        Self { map: [UNMAPPED; 128] }
    }

    /// Maps each of `pts` to itself (PTs above 127 are ignored).
    pub fn identity(pts: impl IntoIterator<Item = u8>) -> Self {
        let mut m = Self::new();
        for pt in pts {
            m.insert(pt, pt);
        }
        m
    }

    /// Maps `from` to `to`; false (and no change) if either is above 127.
    pub fn insert(&mut self, from: u8, to: u8) -> bool {
        if from > 127 || to > 127 {
            return false;
        }
        self.map[usize::from(from)] = to;
        true
    }

    /// Removes the mapping of `from`.
    pub fn remove(&mut self, from: u8) {
        if let Some(slot) = self.map.get_mut(usize::from(from)) {
            *slot = UNMAPPED;
        }
    }

    /// The outgoing PT for `pt`, or `None` to drop the packet.
    pub fn get(&self, pt: u8) -> Option<u8> {
        self.map.get(usize::from(pt)).copied().filter(|&p| p != UNMAPPED)
    }

    /// The mappings in increasing order of incoming PT.
    pub fn iter(&self) -> impl Iterator<Item = (u8, u8)> + '_ {
        (0..128u8).filter_map(|pt| self.get(pt).map(|to| (pt, to)))
    }
}

/// Which sources may be latched onto.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatchPolicy {
    /// Any source (comedia; rtpengine `immediate`).
    AnySource,
    /// Only sources whose IP equals the SDP address (rtpengine `heuristic`-like); with an SDP
    /// address of 0.0.0.0 / :: nothing is accepted.
    SdpIpOnly,
}

/// What [`Latch::on_packet`] decided about a packet's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatchVerdict {
    /// The packet comes from the latched source: process it.
    Accept,
    /// The first valid packet since [`Latch::new`] / [`Latch::reset`]: its source is now the
    /// target; process it.
    Latched(SocketAddr),
    /// Another source after latching, or a source the policy refuses: drop the packet.
    Reject,
}

/// Symmetric-RTP latching for one SIP-side socket (RTP, or RTCP with its own latch).
///
/// Contract: send to the SDP address until the first *valid* packet (the caller has parsed it,
/// and authenticated it when SRTP is on) arrives from an acceptable source; from then on send
/// to that source and accept only packets from it, until [`Latch::reset`] (a re-INVITE with new
/// `c=`/port) starts over. IPv4-mapped IPv6 addresses compare equal to their IPv4 form.
#[derive(Clone, Debug)]
pub struct Latch {
    sdp: SocketAddr,
    latched: Option<SocketAddr>,
    policy: LatchPolicy,
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Latch {
    /// Starts unlatched, targeting `sdp_addr`.
    pub fn new(sdp_addr: SocketAddr, policy: LatchPolicy) -> Self {
        Self { sdp: canonical(sdp_addr), latched: None, policy }
    }

    /// Forgets the latched source and targets `new_sdp_addr` until the next valid packet.
    pub fn reset(&mut self, new_sdp_addr: SocketAddr) {
        self.sdp = canonical(new_sdp_addr);
        self.latched = None;
    }

    /// Where to send: the latched source, else the SDP address unless it is a hold address
    /// (0.0.0.0 / ::) or port 0.
    pub fn target(&self) -> Option<SocketAddr> {
        self.latched.or_else(|| Some(self.sdp).filter(|a| !a.ip().is_unspecified() && a.port() != 0))
    }

    /// The latched source, if any.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// The address from the SDP.
    pub fn sdp_addr(&self) -> SocketAddr {
        self.sdp
    }

    /// Decides about a valid packet from `source`.
    pub fn on_packet(&mut self, source: SocketAddr) -> LatchVerdict {
        let source = canonical(source);
        match self.latched {
            Some(l) if l == source => LatchVerdict::Accept,
            Some(_) => LatchVerdict::Reject,
            None => {
                let ok = match self.policy {
                    LatchPolicy::AnySource => true,
                    LatchPolicy::SdpIpOnly => !self.sdp.ip().is_unspecified() && source.ip() == self.sdp.ip(),
                };
                if ok {
                    self.latched = Some(source);
                    LatchVerdict::Latched(source)
                } else {
                    LatchVerdict::Reject
                }
            }
        }
    }

    /// True if `ip` is the SDP IP (after IPv4-mapped normalisation).
    pub fn is_sdp_ip(&self, ip: IpAddr) -> bool {
        ip.to_canonical() == self.sdp.ip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use std::time::Duration;

    fn packet(b0: u8, b1: u8, seq: u16, ts: u32, ssrc: u32, rest: &[u8]) -> Vec<u8> {
        let mut v = vec![b0, b1];
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&ts.to_be_bytes());
        v.extend_from_slice(&ssrc.to_be_bytes());
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn parses_the_fixed_header() {
        let p = packet(0x80, 0x80 | 96, 0x1234, 0xdecafbad, 0xcafebabe, &[1, 2, 3]);
        let v = parse(&p).unwrap();
        let h = v.header;
        assert_eq!((h.version, h.padding, h.extension, h.csrc_count), (2, false, false, 0));
        assert_eq!((h.marker, h.pt, h.seq, h.ts, h.ssrc), (true, 96, 0x1234, 0xdecafbad, 0xcafebabe));
        assert_eq!(v.payload(), &[1, 2, 3]);
        assert_eq!(v.csrcs().count(), 0);
        assert_eq!(v.extension(), None);
        assert_eq!(v.packet(), &p[..]);
    }

    #[test]
    fn parses_csrcs_extension_and_padding() {
        // CC=2, X=1, P=1: two CSRCs, a one-word extension, 3 payload bytes, 3 padding bytes.
        let mut rest = Vec::new();
        rest.extend_from_slice(&1u32.to_be_bytes());
        rest.extend_from_slice(&2u32.to_be_bytes());
        rest.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
        rest.extend_from_slice(&[7, 8, 9, 0, 0, 3]);
        let p = packet(0x80 | 0x20 | 0x10 | 2, 0, 1, 2, 3, &rest);
        let v = parse(&p).unwrap();
        assert_eq!(v.csrcs().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(v.extension(), Some((0xbede, &[0x10, 0xaa, 0, 0][..])));
        assert_eq!(v.payload(), &[7, 8, 9]);
        assert_eq!(v.header.payload_offset, 12 + 8 + 8);
        // parse_header leaves the (possibly encrypted) padding alone.
        assert_eq!(parse_header(&p).unwrap().payload_end, p.len());
    }

    #[test]
    fn rejects_malformed_packets() {
        assert_eq!(parse(&[0x80; 11]), Err(RtpError::TooShort));
        assert_eq!(parse(&packet(0x40, 0, 0, 0, 0, &[])), Err(RtpError::BadVersion));
        assert_eq!(parse(&packet(0x81, 0, 0, 0, 0, &[])), Err(RtpError::TooShort));
        assert_eq!(parse(&packet(0x90, 0, 0, 0, 0, &[0, 0, 0])), Err(RtpError::TooShort));
        assert_eq!(parse(&packet(0x90, 0, 0, 0, 0, &[0, 0, 0, 1])), Err(RtpError::TooShort));
        assert_eq!(parse(&packet(0xa0, 0, 0, 0, 0, &[1, 0])), Err(RtpError::BadPadding));
        assert_eq!(parse(&packet(0xa0, 0, 0, 0, 0, &[1, 3])), Err(RtpError::BadPadding));
        assert_eq!(parse(&packet(0xa0, 0, 0, 0, 0, &[])), Err(RtpError::BadPadding));
        assert!(parse(&packet(0xa0, 0, 0, 0, 0, &[1, 2])).unwrap().payload().is_empty());
    }

    #[test]
    fn classifies_rtcp_on_a_muxed_socket() {
        assert!(looks_like_rtcp(&[0x80, 200]));
        assert!(looks_like_rtcp(&[0x81, 206, 0, 2]));
        assert!(!looks_like_rtcp(&[0x80, 0]));
        assert!(!looks_like_rtcp(&[0x80, 0x80 | 96]));
        assert!(!looks_like_rtcp(&[0x00, 200]));
        assert!(!looks_like_rtcp(&[0x80]));
    }

    #[test]
    fn writes_a_fresh_header() {
        let mut buf = [0u8; 64];
        let h = RtpOut { marker: true, pt: 0, seq: 7, ts: 160, ssrc: 0x1122_3344 };
        let n = write_packet(&mut buf, &h, &[9; 20]).unwrap();
        assert_eq!(n, 32);
        let v = parse(&buf[..n]).unwrap();
        assert_eq!(
            (v.header.marker, v.header.pt, v.header.seq, v.header.ts, v.header.ssrc),
            (true, 0, 7, 160, 0x1122_3344)
        );
        assert_eq!(v.payload(), &[9; 20]);
        assert_eq!(write_packet(&mut buf[..31], &h, &[9; 20]), Err(RtpError::BufferTooSmall));
        assert_eq!(write_packet(&mut buf, &RtpOut { pt: 128, ..h }, &[]), Err(RtpError::BadPayloadType));
    }

    #[test]
    fn parsers_never_panic_on_random_bytes() {
        let mut rng = Rng::new([3; 32]);
        let mut buf = [0u8; 96];
        for i in 0..20_000 {
            let len = (rng.next_u64() % 96) as usize;
            rng.fill(&mut buf[..len]);
            if i % 2 == 0 && len > 0 {
                buf[0] = (buf[0] & 0x3f) | 0x80;
            }
            if let Ok(v) = parse(&buf[..len]) {
                assert!(v.header.payload_offset <= v.header.payload_end && v.header.payload_end <= len);
                let _ = (v.payload(), v.csrcs().count(), v.extension());
            }
            let _ = parse_header(&buf[..len]);
            let _ = looks_like_rtcp(&buf[..len]);
        }
    }

    #[test]
    fn rewriter_keeps_one_source_aligned() {
        let start = crate::time::test_epoch();
        let mut rw = SeqTsRewriter::new(100, 5000);
        let a = rw.rewrite(start, 1, 40000, 1_000_000, 8000).unwrap();
        assert_eq!((a.seq, a.ext_seq, a.ts, a.new_source), (100, 100, 5000, true));
        let b = rw.rewrite(start + Duration::from_millis(20), 1, 40001, 1_000_160, 8000).unwrap();
        assert_eq!((b.seq, b.ts, b.new_source), (101, 5160, false));
        // Loss is preserved.
        let c = rw.rewrite(start + Duration::from_millis(60), 1, 40003, 1_000_480, 8000).unwrap();
        assert_eq!((c.seq, c.ts), (103, 5480));
        // Reordering is preserved; the late packet does not move `last`.
        let d = rw.rewrite(start + Duration::from_millis(61), 1, 40002, 1_000_320, 8000).unwrap();
        assert_eq!((d.seq, d.ts), (102, 5320));
        assert_eq!(rw.last_ext_seq(), Some(103));
        // A duplicate maps to the same number.
        assert_eq!(rw.rewrite(start + Duration::from_millis(62), 1, 40003, 1_000_480, 8000).unwrap().seq, 103);
    }

    #[test]
    fn rewriter_handles_16_bit_wrap_of_input_and_output() {
        let start = crate::time::test_epoch();
        let mut rw = SeqTsRewriter::new(65534, u32::MAX - 159);
        let mut outs = Vec::new();
        for (i, seq) in [65533u16, 65534, 65535, 0, 1, 2].into_iter().enumerate() {
            let ts = (i as u32) * 160;
            outs.push(rw.rewrite(start + Duration::from_millis(20 * i as u64), 9, seq, ts, 8000).unwrap());
        }
        let ext: Vec<u64> = outs.iter().map(|r| r.ext_seq).collect();
        assert_eq!(ext, [65534, 65535, 65536, 65537, 65538, 65539]);
        let seqs: Vec<u16> = outs.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [65534, 65535, 0, 1, 2, 3]);
        let ts: Vec<u32> = outs.iter().map(|r| r.ts).collect();
        assert_eq!(ts, [u32::MAX - 159, 0, 160, 320, 480, 640]);
    }

    #[test]
    fn rewriter_rebases_on_ssrc_change_with_elapsed_time() {
        let start = crate::time::test_epoch();
        let mut rw = SeqTsRewriter::new(1, 0);
        rw.rewrite(start, 0xaaaa, 500, 80_000, 8000).unwrap();
        let last = rw.rewrite(start + Duration::from_millis(20), 0xaaaa, 501, 80_160, 8000).unwrap();
        assert_eq!((last.seq, last.ts), (2, 160));
        // Early media → final media from another SSRC 100 ms later.
        let n = rw.rewrite(start + Duration::from_millis(120), 0xbbbb, 9, 3_000_000, 8000).unwrap();
        assert_eq!((n.seq, n.ts, n.new_source), (3, 160 + 800, true));
        let n2 = rw.rewrite(start + Duration::from_millis(140), 0xbbbb, 10, 3_000_160, 8000).unwrap();
        assert_eq!((n2.seq, n2.ts, n2.new_source), (4, 160 + 960, false));
        // A packet of the new source older than its first is dropped (it would reuse seq 2).
        assert_eq!(rw.rewrite(start + Duration::from_millis(141), 0xbbbb, 8, 2_999_840, 8000), None);
        // Late packets of the old source now look like a new source: they continue the sequence.
        let old = rw.rewrite(start + Duration::from_millis(142), 0xaaaa, 502, 80_320, 8000).unwrap();
        assert_eq!((old.seq, old.new_source), (5, true));
    }

    #[test]
    fn rewriter_rebases_on_explicit_reset_and_advances_at_least_one_tick() {
        let start = crate::time::test_epoch();
        let mut rw = SeqTsRewriter::new(10, 1000);
        rw.rewrite(start, 7, 100, 0, 90000).unwrap();
        rw.reset_source();
        let n = rw.rewrite(start, 7, 30000, 555, 90000).unwrap();
        assert_eq!((n.seq, n.ts, n.new_source), (11, 1001, true));
        // Opus clock: 1 s later is 48000 ticks.
        rw.reset_source();
        let m = rw.rewrite(start + Duration::from_secs(1), 7, 5, 0, 48000).unwrap();
        assert_eq!((m.seq, m.ts), (12, 1001 + 48000));
    }

    #[test]
    fn rewriter_confirms_large_jumps_like_rfc3550_a1() {
        let start = crate::time::test_epoch();
        let mut rw = SeqTsRewriter::new(0, 0);
        rw.rewrite(start, 1, 1000, 0, 8000).unwrap();
        // A lone jump is dropped …
        assert_eq!(rw.rewrite(start, 1, 20000, 99, 8000), None);
        // … and normal packets go on.
        assert_eq!(rw.rewrite(start, 1, 1001, 160, 8000).unwrap().seq, 1);
        // Two sequential packets after a jump confirm a restart.
        assert_eq!(rw.rewrite(start, 1, 30000, 7, 8000), None);
        let r = rw.rewrite(start + Duration::from_millis(40), 1, 30001, 7, 8000).unwrap();
        assert_eq!((r.seq, r.ts, r.new_source), (2, 160 + 320, true));
        // Large backwards steps are jumps too.
        assert_eq!(rw.rewrite(start, 1, 29000, 7, 8000), None);
    }

    #[test]
    fn rewriter_never_panics_and_stays_monotonic_per_source() {
        let mut rng = Rng::new([5; 32]);
        let start = crate::time::test_epoch();
        let mut rw = SeqTsRewriter::new(3, 3);
        let mut now = start;
        let mut seen_max = 0u64;
        for _ in 0..50_000 {
            let r = rng.next_u64();
            now += Duration::from_millis(r % 50);
            let ssrc = (r >> 8) as u32 % 3;
            let seq = (r >> 16) as u16;
            if r.is_multiple_of(97) {
                rw.reset_source();
            }
            if let Some(out) = rw.rewrite(now, ssrc, seq, (r >> 32) as u32, (r >> 40) as u32) {
                assert_eq!(out.seq, out.ext_seq as u16);
                if out.new_source {
                    assert!(out.ext_seq > seen_max || seen_max == 0, "a new source reuses numbers");
                }
                seen_max = seen_max.max(out.ext_seq);
            }
        }
    }

    #[test]
    fn pt_map() {
        let mut m = PtMap::identity([0, 8, 101]);
        assert_eq!(m.get(0), Some(0));
        assert_eq!(m.get(9), None);
        assert!(m.insert(101, 126));
        assert_eq!(m.get(101), Some(126));
        assert!(!m.insert(200, 1));
        assert!(!m.insert(1, 128));
        assert_eq!(m.get(255), None);
        m.remove(0);
        m.remove(250);
        assert_eq!(m.iter().collect::<Vec<_>>(), [(8, 8), (101, 126)]);
        assert_eq!(format!("{m:?}"), "{8: 8, 101: 126}");
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn latch_sends_to_sdp_then_to_the_first_source() {
        let mut l = Latch::new(addr("192.0.2.1:4000"), LatchPolicy::AnySource);
        assert_eq!(l.target(), Some(addr("192.0.2.1:4000")));
        assert_eq!(l.on_packet(addr("198.51.100.7:5555")), LatchVerdict::Latched(addr("198.51.100.7:5555")));
        assert_eq!(l.target(), Some(addr("198.51.100.7:5555")));
        assert_eq!(l.on_packet(addr("198.51.100.7:5555")), LatchVerdict::Accept);
        assert_eq!(l.on_packet(addr("192.0.2.1:4000")), LatchVerdict::Reject);
        // A re-INVITE with a new address re-latches.
        l.reset(addr("192.0.2.9:6000"));
        assert_eq!(l.latched(), None);
        assert_eq!(l.target(), Some(addr("192.0.2.9:6000")));
        assert_eq!(l.on_packet(addr("192.0.2.1:4000")), LatchVerdict::Latched(addr("192.0.2.1:4000")));
    }

    #[test]
    fn latch_strict_ip_and_hold_addresses() {
        let mut l = Latch::new(addr("192.0.2.1:4000"), LatchPolicy::SdpIpOnly);
        assert_eq!(l.on_packet(addr("192.0.2.2:4000")), LatchVerdict::Reject);
        // Same IP, another port (NAT): accepted; IPv4-mapped form compares equal.
        assert_eq!(l.on_packet(addr("[::ffff:192.0.2.1]:4100")), LatchVerdict::Latched(addr("192.0.2.1:4100")));
        assert!(l.is_sdp_ip("::ffff:192.0.2.1".parse().unwrap()));

        let mut hold = Latch::new(addr("0.0.0.0:4000"), LatchPolicy::SdpIpOnly);
        assert_eq!(hold.target(), None);
        assert_eq!(hold.on_packet(addr("0.0.0.0:4000")), LatchVerdict::Reject);
        let mut any = Latch::new(addr("[::]:4000"), LatchPolicy::AnySource);
        assert_eq!(any.target(), None);
        assert_eq!(any.on_packet(addr("[2001:db8::1]:4000")), LatchVerdict::Latched(addr("[2001:db8::1]:4000")));
        assert_eq!(Latch::new(addr("192.0.2.1:0"), LatchPolicy::AnySource).target(), None);
        assert_eq!(hold.sdp_addr(), addr("0.0.0.0:4000"));
    }
}
