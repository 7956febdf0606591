//! RTCP for the SIP leg (RFC 3550 §6, RFC 4585 §6.3.1, RFC 5104 §4.3.1).
//!
//! RTCP is terminated per leg (media spec §1.10, §2.3 point 4): we parse what the SIP peer sends
//! far enough to see SR (for LSR/DLSR), RR, BYE and keyframe requests (PLI, FIR), and we build
//! our own SR/RR + SDES CNAME every few seconds from [`ReceiveStats`] (RFC 3550 A.1, A.3, A.8)
//! and [`SendStats`], plus PLI/FIR to ask the SIP side for a keyframe.
//!
//! Parsing never panics and never allocates; builders append to a `Vec<u8>`.

use std::time::{Duration, Instant};

/// Sender report (RFC 3550 §6.4.1).
pub const PT_SR: u8 = 200;
/// Receiver report (RFC 3550 §6.4.2).
pub const PT_RR: u8 = 201;
/// Source description (RFC 3550 §6.5).
pub const PT_SDES: u8 = 202;
/// Goodbye (RFC 3550 §6.6).
pub const PT_BYE: u8 = 203;
/// Application-defined (RFC 3550 §6.7).
pub const PT_APP: u8 = 204;
/// Transport-layer feedback (RFC 4585 §6.2).
pub const PT_RTPFB: u8 = 205;
/// Payload-specific feedback (RFC 4585 §6.3).
pub const PT_PSFB: u8 = 206;
/// PSFB FMT of Picture Loss Indication (RFC 4585 §6.3.1).
pub const FMT_PLI: u8 = 1;
/// PSFB FMT of Full Intra Request (RFC 5104 §4.3.1).
pub const FMT_FIR: u8 = 4;

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Why an RTCP datagram was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcpError {
    /// Shorter than a header or than its length field claims.
    TooShort,
    /// The version field is not 2.
    BadVersion,
    /// A packet's body is too short for its type and count.
    BadLength,
    /// Padding on a packet that is not the last, or a bad padding count (RFC 3550 A.2).
    BadPadding,
    /// The first packet of a compound is not SR or RR (RFC 3550 §6.1, A.2).
    NotCompound,
}

impl RtcpError {
    /// A short reason for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RtcpError::TooShort => "truncated RTCP packet",
            RtcpError::BadVersion => "RTCP version is not 2",
            RtcpError::BadLength => "RTCP packet too short for its type",
            RtcpError::BadPadding => "bad RTCP padding",
            RtcpError::NotCompound => "compound RTCP does not start with SR or RR",
        }
    }
}

impl std::fmt::Display for RtcpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportBlock {
    /// SSRC of the source reported on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative number of packets lost (24-bit signed, clamped).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub ext_highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR from that source (0 if none).
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s (0 if none).
    pub dlsr: u32,
}

impl ReportBlock {
    fn parse(b: &[u8]) -> Self {
        let lost = (u32::from(b[5]) << 16) | (u32::from(b[6]) << 8) | u32::from(b[7]);
        // Sign-extend 24 bits.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        ReportBlock {
            ssrc: be32(&b[0..4]),
            fraction_lost: b[4],
            cumulative_lost,
            ext_highest_seq: be32(&b[8..12]),
            jitter: be32(&b[12..16]),
            lsr: be32(&b[16..20]),
            dlsr: be32(&b[20..24]),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.push(self.fraction_lost);
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32;
        out.extend_from_slice(&lost.to_be_bytes()[1..]);
        out.extend_from_slice(&self.ext_highest_seq.to_be_bytes());
        out.extend_from_slice(&self.jitter.to_be_bytes());
        out.extend_from_slice(&self.lsr.to_be_bytes());
        out.extend_from_slice(&self.dlsr.to_be_bytes());
    }
}

/// The report blocks of an SR or RR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportBlocks<'a> {
    data: &'a [u8],
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;
    fn next(&mut self) -> Option<ReportBlock> {
        let (block, rest) = self.data.split_at_checked(24)?;
        self.data = rest;
        Some(ReportBlock::parse(block))
    }
}

/// The sender info of an SR (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp (see [`ntp_from_unix`]).
    pub ntp: u64,
    /// RTP timestamp corresponding to `ntp`.
    pub rtp_ts: u32,
    /// Packets sent since the start.
    pub packet_count: u32,
    /// Payload octets sent since the start.
    pub octet_count: u32,
}

/// A list of 32-bit SSRCs (BYE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsrcList<'a> {
    data: &'a [u8],
}

impl Iterator for SsrcList<'_> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        let (s, rest) = self.data.split_at_checked(4)?;
        self.data = rest;
        Some(be32(s))
    }
}

/// FIR entries: (target SSRC, command sequence number) (RFC 5104 §4.3.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirEntries<'a> {
    data: &'a [u8],
}

impl Iterator for FirEntries<'_> {
    type Item = (u32, u8);
    fn next(&mut self) -> Option<(u32, u8)> {
        let (e, rest) = self.data.split_at_checked(8)?;
        self.data = rest;
        Some((be32(e), e[4]))
    }
}

/// One packet of a compound RTCP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// SR.
    SenderReport {
        /// The sender's SSRC.
        ssrc: u32,
        /// NTP/RTP time and counters.
        info: SenderInfo,
        /// Its report blocks.
        blocks: ReportBlocks<'a>,
    },
    /// RR.
    ReceiverReport {
        /// The reporter's SSRC.
        ssrc: u32,
        /// Its report blocks.
        blocks: ReportBlocks<'a>,
    },
    /// BYE.
    Bye {
        /// The sources leaving.
        ssrcs: SsrcList<'a>,
        /// The optional reason text (raw bytes, not checked for UTF-8).
        reason: Option<&'a [u8]>,
    },
    /// PSFB PLI: a keyframe request.
    Pli {
        /// Who asks.
        sender_ssrc: u32,
        /// The stream that should send a keyframe.
        media_ssrc: u32,
    },
    /// PSFB FIR: a keyframe request.
    Fir {
        /// Who asks.
        sender_ssrc: u32,
        /// Target SSRCs and command sequence numbers.
        entries: FirEntries<'a>,
    },
    /// Anything else (SDES, APP, NACK, REMB, XR, …), header fields and body after the 4-byte
    /// header, padding excluded.
    Other {
        /// Packet type.
        pt: u8,
        /// The 5-bit count / FMT field.
        count: u8,
        /// The body after the common header.
        body: &'a [u8],
    },
}

impl RtcpPacket<'_> {
    /// True for PLI and FIR.
    pub fn is_keyframe_request(&self) -> bool {
        matches!(self, RtcpPacket::Pli { .. } | RtcpPacket::Fir { .. })
    }
}

/// Iterator over the packets of a compound RTCP datagram; see [`parse_compound`].
#[derive(Clone, Debug)]
pub struct Compound<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// Iterates over the packets in `data` (RFC 3550 §6.1). Each item is a packet or the error that
/// ends the iteration (at most one error, then `None`). Lenient: it does not require SR/RR first
/// (RFC 5506 reduced size); use [`validate_compound`] for the strict A.2 checks.
pub fn parse_compound(data: &[u8]) -> Compound<'_> {
    Compound { rest: data, failed: false }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match split_packet(self.rest) {
            Ok((packet, rest)) => {
                self.rest = rest;
                Some(Ok(packet))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

struct RawPacket<'a> {
    padding: bool,
    count: u8,
    pt: u8,
    body: &'a [u8],
}

/// Splits one packet off the front of `data` (header checks, length, padding).
fn split_raw(data: &[u8]) -> Result<(RawPacket<'_>, &[u8]), RtcpError> {
    let hdr = data.get(..4).ok_or(RtcpError::TooShort)?;
    if hdr[0] >> 6 != 2 {
        return Err(RtcpError::BadVersion);
    }
    let len = (usize::from(u16::from_be_bytes([hdr[2], hdr[3]])) + 1) * 4;
    let (packet, rest) = data.split_at_checked(len).ok_or(RtcpError::TooShort)?;
    let padding = hdr[0] & 0x20 != 0;
    let mut body = &packet[4..];
    if padding {
        let n = usize::from(*packet.last().unwrap_or(&0));
        if n == 0 || n > body.len() {
            return Err(RtcpError::BadPadding);
        }
        body = &body[..body.len() - n];
    }
    Ok((RawPacket { padding, count: hdr[0] & 0x1f, pt: hdr[1], body }, rest))
}

fn split_packet(data: &[u8]) -> Result<(RtcpPacket<'_>, &[u8]), RtcpError> {
    let (raw, rest) = split_raw(data)?;
    let body = raw.body;
    let blocks = |from: usize| -> Result<ReportBlocks<'_>, RtcpError> {
        let end = from + 24 * usize::from(raw.count);
        Ok(ReportBlocks { data: body.get(from..end).ok_or(RtcpError::BadLength)? })
    };
    let packet = match (raw.pt, raw.count) {
        (PT_SR, _) => {
            let f = body.get(..24).ok_or(RtcpError::BadLength)?;
            let info = SenderInfo {
                ntp: (u64::from(be32(&f[4..8])) << 32) | u64::from(be32(&f[8..12])),
                rtp_ts: be32(&f[12..16]),
                packet_count: be32(&f[16..20]),
                octet_count: be32(&f[20..24]),
            };
            RtcpPacket::SenderReport { ssrc: be32(f), info, blocks: blocks(24)? }
        }
        (PT_RR, _) => {
            let f = body.get(..4).ok_or(RtcpError::BadLength)?;
            RtcpPacket::ReceiverReport { ssrc: be32(f), blocks: blocks(4)? }
        }
        (PT_BYE, n) => {
            let end = 4 * usize::from(n);
            let ssrcs = SsrcList { data: body.get(..end).ok_or(RtcpError::BadLength)? };
            let reason = match body.get(end) {
                Some(&l) => Some(body.get(end + 1..end + 1 + usize::from(l)).ok_or(RtcpError::BadLength)?),
                None => None,
            };
            RtcpPacket::Bye { ssrcs, reason }
        }
        (PT_PSFB, FMT_PLI) => {
            let f = body.get(..8).ok_or(RtcpError::BadLength)?;
            RtcpPacket::Pli { sender_ssrc: be32(f), media_ssrc: be32(&f[4..]) }
        }
        (PT_PSFB, FMT_FIR) => {
            let f = body.get(..8).ok_or(RtcpError::BadLength)?;
            let fci = &body[8..];
            RtcpPacket::Fir { sender_ssrc: be32(f), entries: FirEntries { data: &fci[..fci.len() / 8 * 8] } }
        }
        (pt, count) => RtcpPacket::Other { pt, count, body },
    };
    Ok((packet, rest))
}

/// The RFC 3550 A.2 validity checks for a received compound packet: version 2 everywhere, the
/// first packet SR or RR, padding only on the last, and lengths that add up to the datagram.
pub fn validate_compound(data: &[u8]) -> Result<(), RtcpError> {
    let mut rest = data;
    let mut first = true;
    if rest.is_empty() {
        return Err(RtcpError::TooShort);
    }
    while !rest.is_empty() {
        let (raw, next) = split_raw(rest)?;
        if first && raw.pt != PT_SR && raw.pt != PT_RR {
            return Err(RtcpError::NotCompound);
        }
        if raw.padding && !next.is_empty() {
            return Err(RtcpError::BadPadding);
        }
        first = false;
        rest = next;
    }
    parse_compound(data).try_for_each(|p| p.map(|_| ()))
}

/// A datagram summary for the gateway: is there a keyframe request, a BYE, an SR?
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtcpSummary {
    /// A PLI or FIR was present.
    pub keyframe_request: bool,
    /// A BYE was present.
    pub bye: bool,
    /// The (first) SR: sender SSRC and NTP timestamp, for [`ReceiveStats::on_sender_report`].
    pub sender_report: Option<(u32, u64)>,
}

/// Summarises the packets of `data` that parse (stops at the first malformed one).
pub fn summarize(data: &[u8]) -> RtcpSummary {
    let mut s = RtcpSummary::default();
    for p in parse_compound(data).map_while(Result::ok) {
        match p {
            RtcpPacket::SenderReport { ssrc, info, .. } if s.sender_report.is_none() => {
                s.sender_report = Some((ssrc, info.ntp))
            }
            RtcpPacket::Bye { .. } => s.bye = true,
            p if p.is_keyframe_request() => s.keyframe_request = true,
            _ => {}
        }
    }
    s
}

/// The 64-bit NTP timestamp (RFC 3550 §4) of a wall-clock time given as time since the Unix
/// epoch (the caller's clock; the core never reads one). Wraps at the NTP era boundary (2036) as
/// the 32-bit seconds field does.
pub fn ntp_from_unix(since_epoch: Duration) -> u64 {
    let secs = since_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET) & 0xffff_ffff;
    let frac = (u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp (LSR, RFC 3550 §6.4.1).
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

fn header(out: &mut Vec<u8>, count: u8, pt: u8, words_after_header: usize) {
    out.push(0x80 | (count & 0x1f));
    out.push(pt);
    out.extend_from_slice(&(words_after_header as u16).to_be_bytes());
}

/// At most this many report blocks fit in one SR/RR (5-bit count).
pub const MAX_REPORT_BLOCKS: usize = 31;

/// Appends an SR (RFC 3550 §6.4.1). Blocks beyond [`MAX_REPORT_BLOCKS`] are left out.
pub fn write_sr(out: &mut Vec<u8>, ssrc: u32, info: &SenderInfo, blocks: &[ReportBlock]) {
    let blocks = &blocks[..blocks.len().min(MAX_REPORT_BLOCKS)];
    header(out, blocks.len() as u8, PT_SR, 6 + 6 * blocks.len());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&info.ntp.to_be_bytes());
    out.extend_from_slice(&info.rtp_ts.to_be_bytes());
    out.extend_from_slice(&info.packet_count.to_be_bytes());
    out.extend_from_slice(&info.octet_count.to_be_bytes());
    blocks.iter().for_each(|b| b.write(out));
}

/// Appends an RR (RFC 3550 §6.4.2). Blocks beyond [`MAX_REPORT_BLOCKS`] are left out.
pub fn write_rr(out: &mut Vec<u8>, ssrc: u32, blocks: &[ReportBlock]) {
    let blocks = &blocks[..blocks.len().min(MAX_REPORT_BLOCKS)];
    header(out, blocks.len() as u8, PT_RR, 1 + 6 * blocks.len());
    out.extend_from_slice(&ssrc.to_be_bytes());
    blocks.iter().for_each(|b| b.write(out));
}

/// Appends an SDES with one chunk carrying CNAME (RFC 3550 §6.5.1); `cname` is cut to 255 bytes.
pub fn write_sdes_cname(out: &mut Vec<u8>, ssrc: u32, cname: &[u8]) {
    let cname = &cname[..cname.len().min(255)];
    // SSRC + type + length + text + at least one null octet, padded to a word.
    let chunk = 4 + 2 + cname.len() + 1;
    let words = chunk.div_ceil(4);
    header(out, 1, PT_SDES, words);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(cname.len() as u8);
    out.extend_from_slice(cname);
    out.resize(out.len() + words * 4 - (chunk - 1), 0);
}

/// Appends a BYE (RFC 3550 §6.6) for up to 31 SSRCs, with an optional reason (cut to 255 bytes).
pub fn write_bye(out: &mut Vec<u8>, ssrcs: &[u32], reason: Option<&[u8]>) {
    let ssrcs = &ssrcs[..ssrcs.len().min(31)];
    let reason = reason.map(|r| &r[..r.len().min(255)]);
    let reason_len = reason.map_or(0, |r| (1 + r.len()).div_ceil(4) * 4);
    header(out, ssrcs.len() as u8, PT_BYE, ssrcs.len() + reason_len / 4);
    ssrcs.iter().for_each(|s| out.extend_from_slice(&s.to_be_bytes()));
    if let Some(r) = reason {
        out.push(r.len() as u8);
        out.extend_from_slice(r);
        out.resize(out.len() + reason_len - 1 - r.len(), 0);
    }
}

/// Appends a PLI (RFC 4585 §6.3.1) asking `media_ssrc` for a keyframe.
pub fn write_pli(out: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32) {
    header(out, FMT_PLI, PT_PSFB, 2);
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    out.extend_from_slice(&media_ssrc.to_be_bytes());
}

/// Appends a FIR (RFC 5104 §4.3.1) for `target_ssrc`. `seq_nr` is the command sequence number:
/// the caller increments it for each *new* request (repeats of one request keep it).
pub fn write_fir(out: &mut Vec<u8>, sender_ssrc: u32, target_ssrc: u32, seq_nr: u8) {
    header(out, FMT_FIR, PT_PSFB, 4);
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes()); // media source SSRC SHALL be 0 (RFC 5104 §4.3.1.2)
    out.extend_from_slice(&target_ssrc.to_be_bytes());
    out.extend_from_slice(&[seq_nr, 0, 0, 0]);
}

/// Appends our periodic compound report: SR if we have sent media since the last report
/// (`sender` is `Some`), else RR; then SDES CNAME (RFC 3550 §6.1).
pub fn write_report(out: &mut Vec<u8>, ssrc: u32, sender: Option<&SenderInfo>, blocks: &[ReportBlock], cname: &[u8]) {
    match sender {
        Some(info) => write_sr(out, ssrc, info, blocks),
        None => write_rr(out, ssrc, blocks),
    }
    write_sdes_cname(out, ssrc, cname);
}

const RTP_SEQ_MOD: u32 = 1 << 16;
const MAX_DROPOUT: u32 = 3000;
const MAX_MISORDER: u32 = 100;
const MIN_SEQUENTIAL: u32 = 2;

/// Reception statistics of one incoming stream (one SSRC), per RFC 3550 A.1 (sequence
/// validation, with probation), A.3 (loss) and A.8 (jitter).
///
/// Contract: feed every received RTP packet of the stream to [`ReceiveStats::on_rtp`] with its
/// arrival time, and every SR of that SSRC to [`ReceiveStats::on_sender_report`]; call
/// [`ReceiveStats::report_block`] once per report interval (it moves the "prior" counters that
/// fraction lost is computed from). A new SSRC needs a new `ReceiveStats`.
#[derive(Clone, Debug)]
pub struct ReceiveStats {
    ssrc: u32,
    clock_rate: u32,
    started: bool,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    epoch: Option<Instant>,
    transit: Option<u32>,
    /// Jitter × 16 (A.8 integer form).
    jitter: u64,
    last_sr: Option<(u32, Instant)>,
}

impl ReceiveStats {
    /// Statistics for `ssrc`, whose RTP clock is `clock_rate` Hz.
    pub fn new(ssrc: u32, clock_rate: u32) -> Self {
        Self {
            ssrc,
            clock_rate,
            started: false,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: RTP_SEQ_MOD + 1,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            epoch: None,
            transit: None,
            jitter: 0,
            last_sr: None,
        }
    }

    /// The SSRC reported on.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// RFC 3550 A.1 `update_seq`; returns whether the packet is valid (counted).
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = u32::from(seq.wrapping_sub(self.max_seq));
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return true;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return false;
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if udelta <= RTP_SEQ_MOD - MAX_MISORDER {
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets after a jump: the source restarted.
                self.init_seq(seq);
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return false;
            }
        }
        // else: duplicate or reordered packet.
        self.received = self.received.wrapping_add(1);
        true
    }

    /// Records one RTP packet of this stream that arrived at `now`. Returns false while the
    /// source is on probation or the packet is an unconfirmed jump (RFC 3550 A.1).
    pub fn on_rtp(&mut self, now: Instant, seq: u16, rtp_ts: u32) -> bool {
        if !self.started {
            self.started = true;
            self.init_seq(seq);
            self.max_seq = seq.wrapping_sub(1);
            self.probation = MIN_SEQUENTIAL;
        }
        if !self.update_seq(seq) {
            return false;
        }
        // A.8: arrival time in RTP units from an arbitrary local epoch.
        let epoch = *self.epoch.get_or_insert(now);
        let nanos = now.saturating_duration_since(epoch).as_nanos();
        let arrival = (nanos * u128::from(self.clock_rate) / 1_000_000_000) as u32;
        let transit = arrival.wrapping_sub(rtp_ts);
        if let Some(prev) = self.transit {
            let d = u64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            self.jitter = self.jitter + d - ((self.jitter + 8) >> 4);
        }
        self.transit = Some(transit);
        true
    }

    /// Records an SR from this source (for LSR/DLSR).
    pub fn on_sender_report(&mut self, now: Instant, ntp: u64) {
        self.last_sr = Some((ntp_middle(ntp), now));
    }

    /// The extended highest sequence number received (A.3), once the source is valid.
    pub fn extended_max(&self) -> Option<u32> {
        (self.started && self.probation == 0).then(|| self.cycles.wrapping_add(u32::from(self.max_seq)))
    }

    /// Packets counted as received.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Cumulative loss (A.3): expected − received, clamped to the 24-bit signed field.
    pub fn cumulative_lost(&self) -> i32 {
        let Some(ext) = self.extended_max() else { return 0 };
        let expected = i64::from(ext.wrapping_sub(self.base_seq)) + 1;
        (expected - i64::from(self.received)).clamp(-0x80_0000, 0x7f_ffff) as i32
    }

    /// Interarrival jitter in RTP units (A.8).
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter >> 4).unwrap_or(u32::MAX)
    }

    /// The report block for the interval since the previous call, or `None` while the source is
    /// not yet valid (nothing to report).
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let ext = self.extended_max()?;
        let expected = ext.wrapping_sub(self.base_seq).wrapping_add(1);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                let units = (d.as_nanos() << 16) / 1_000_000_000;
                (lsr, u32::try_from(units).unwrap_or(u32::MAX))
            }
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost(),
            ext_highest_seq: ext,
            jitter: self.jitter(),
            lsr,
            dlsr,
        })
    }
}

/// Counters of one stream we send, for our SR (RFC 3550 §6.4.1).
#[derive(Clone, Debug)]
pub struct SendStats {
    clock_rate: u32,
    packets: u32,
    octets: u32,
    last: Option<(u32, Instant)>,
    sent_since_report: bool,
}

impl SendStats {
    /// Counters for a stream with an RTP clock of `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Self {
        Self { clock_rate, packets: 0, octets: 0, last: None, sent_since_report: false }
    }

    /// Records one packet sent at `now` with RTP timestamp `rtp_ts` and `payload_len` payload
    /// octets (header and padding excluded).
    pub fn on_sent(&mut self, now: Instant, rtp_ts: u32, payload_len: usize) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
        self.last = Some((rtp_ts, now));
        self.sent_since_report = true;
    }

    /// Packets sent.
    pub fn packets(&self) -> u32 {
        self.packets
    }

    /// The sender info for a report at `now` (wall clock `unix_now`), or `None` if we have not
    /// sent since the previous report (then an RR is due, RFC 3550 §6.4). The RTP timestamp is
    /// extrapolated from the last packet sent.
    pub fn sender_info(&mut self, now: Instant, unix_now: Duration) -> Option<SenderInfo> {
        if !std::mem::take(&mut self.sent_since_report) {
            return None;
        }
        let (ts, at) = self.last?;
        let elapsed = now.saturating_duration_since(at).as_nanos();
        let ticks = (elapsed * u128::from(self.clock_rate) / 1_000_000_000) as u32;
        Some(SenderInfo {
            ntp: ntp_from_unix(unix_now),
            rtp_ts: ts.wrapping_add(ticks),
            packet_count: self.packets,
            octet_count: self.octets,
        })
    }
}

#[cfg(test)]
mod tests;
