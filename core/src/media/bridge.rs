//! The SIP side of one call's media and the rules that join it to the browser leg (media spec
//! §2.3): payload-type mapping between the two sides' numbers, SSRC/sequence/timestamp rewriting
//! per direction (sequence numbers start small, so the browser leg's SRTP rollover counter starts
//! at 0), symmetric-RTP latching of the SIP peer, hold by direction, and the time of the last
//! packet for the media timeout. Sans-IO: datagrams in, datagrams (or RTP for the browser leg) out.

use super::dtmf_rate::RateMap;
use super::rtcp::{self, ReceiveStats, SendStats};
use super::rtp::{self, Latch, LatchPolicy, LatchVerdict, PtMap, RtpOut, SeqTsRewriter};
use super::sdp::{Codec, Direction};
use super::sip_video_fb::{Feedback, VideoFeedback};
use super::srtp::SrtpContext;
use crate::rng::Rng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The interval of our RTCP reports on the SIP side (RFC 3550 §6.2: 5 s minimum).
pub const RTCP_INTERVAL: Duration = Duration::from_secs(5);

/// The SSRC the rewriter knows DTMF events from INFO by (never on the wire: the browser leg
/// sends with its own).
const DTMF_SSRC: u32 = 0x4454_4d46;

/// The largest RTP packet we forward (the SIP side has no use for more than a UDP MTU).
pub const MAX_RTP: usize = 1500;

/// One negotiated codec, as each side numbers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecPair {
    /// The payload type towards and from the browser.
    pub browser_pt: u8,
    /// The payload type we send to the SIP peer (its answer's or its offer's number).
    pub sip_pt: u8,
    /// RTP clock rate (the SIP side's).
    pub clock_rate: u32,
    /// The browser side's clock rate: `clock_rate` but for a telephone-event mapped across
    /// rates (`dtmf_rate`).
    pub browser_clock_rate: u32,
    /// The codec itself (name, channels, fmtp), at the SIP number and rate.
    pub codec: Codec,
}

impl CodecPair {
    /// The codec as the browser side has it: its number and clock rate.
    pub fn browser_codec(&self) -> Codec {
        Codec { pt: self.browser_pt, clock_rate: self.browser_clock_rate, ..self.codec.clone() }
    }

    /// The codec as the SIP side has it: its number and clock rate.
    pub fn sip_codec(&self) -> Codec {
        Codec { pt: self.sip_pt, clock_rate: self.clock_rate, ..self.codec.clone() }
    }
}

/// An RTP packet for the browser leg ([`super::webrtc::BrowserLeg::write_rtp`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToBrowser {
    /// Payload type, in the browser's numbering.
    pub pt: u8,
    /// Extended sequence number (starts small; its upper bits are the SRTP rollover counter).
    pub seq: u64,
    /// Rewritten timestamp.
    pub ts: u32,
    /// M bit.
    pub marker: bool,
    /// Payload offset and length in the packet handed to [`SipMedia::from_sip`].
    pub payload: std::ops::Range<usize>,
}

/// Why a datagram from the SIP side was not forwarded (counted, logged at debug).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Not RTP (or RTCP on the RTP port).
    NotRtp,
    /// From a source other than the latched one.
    WrongSource,
    /// A payload type not negotiated.
    UnknownPt,
    /// Sequence number out of the acceptable window (a stray or a restart being confirmed).
    Sequence,
    /// SRTP authentication or replay check failed.
    Srtp,
    /// We are on hold towards the browser (the browser does not receive).
    Hold,
    /// An RTX packet without payload or before the stream it repairs (`sip_video_fb`).
    Rtx,
}

/// The SIP leg's media of one call.
#[derive(Debug)]
pub struct SipMedia {
    latch: Latch,
    /// Codecs both sides carry.
    codecs: Vec<CodecPair>,
    /// The telephone-event negotiated at a different rate on each side, if any.
    event_rates: Option<RateMap>,
    /// SIP number (sent or offered) → browser number.
    from_sip: PtMap,
    /// Browser number → SIP number.
    to_sip: PtMap,
    ssrc: u32,
    to_sip_rw: SeqTsRewriter,
    to_browser_rw: SeqTsRewriter,
    /// Our direction towards the SIP peer (what our last SDP said).
    direction: Direction,
    /// The last valid RTP or RTCP from the SIP peer (or the start).
    last_rx: Instant,
    buf: Vec<u8>,
    /// The last packet from the SIP peer, decrypted (payloads of [`ToBrowser`] point into it).
    rx_buf: Vec<u8>,
    /// SDES-SRTP: our sending context and the peer's (RFC 4568), when negotiated.
    /// Boxed: the two contexts are most of a `SipMedia`'s size, and most calls have no SDES.
    srtp: Option<Box<(SrtpContext, SrtpContext)>>,
    /// Our RTCP: what we sent, what we received (per the peer's SSRC), the RTCP peer.
    send_stats: SendStats,
    recv_stats: Option<ReceiveStats>,
    rtcp_from: Option<SocketAddr>,
    cname: String,
    /// Video: negotiated `a=rtcp-fb` / RTX and their state (`sip_video_fb`).
    fb: Option<Box<Feedback>>,
    /// Packets forwarded each way, for logs and tests.
    pub sent: u64,
    /// Packets received from the SIP peer and forwarded.
    pub received: u64,
}

impl SipMedia {
    /// Media towards `remote` (the SIP SDP's RTP address) with `codecs`; SSRC and the first
    /// sequence numbers and timestamps come from `rng` (sequence numbers below 2^15, so no
    /// rollover starts the stream). `now` starts the media-timeout clock.
    pub fn new(remote: SocketAddr, codecs: Vec<CodecPair>, now: Instant, rng: &mut Rng) -> Self {
        let r = rng.next_u64();
        let r2 = rng.next_u64();
        let mut media = Self {
            latch: Latch::new(remote, LatchPolicy::AnySource),
            codecs: Vec::new(),
            event_rates: None,
            from_sip: PtMap::new(),
            to_sip: PtMap::new(),
            ssrc: (r >> 32) as u32,
            to_sip_rw: SeqTsRewriter::new((r & 0x7fff) as u16, r2 as u32),
            to_browser_rw: SeqTsRewriter::new(((r >> 16) & 0x7fff) as u16, (r2 >> 32) as u32),
            direction: Direction::SendRecv,
            last_rx: now,
            // Both grow to the largest packet seen (≈ 200 bytes for audio), not MAX_RTP: a
            // call's buffers are most of its bridge's bytes (issue #14).
            buf: Vec::new(),
            rx_buf: Vec::new(),
            srtp: None,
            send_stats: SendStats::new(8000),
            recv_stats: None,
            rtcp_from: None,
            cname: format!("sylkgw-{:08x}", (r2 >> 8) as u32),
            fb: None,
            sent: 0,
            received: 0,
        };
        media.set_codecs(codecs);
        media
    }

    /// SDES-SRTP from now on: `tx` protects what we send, `rx` checks what the peer sends.
    pub fn set_srtp(&mut self, tx: SrtpContext, rx: SrtpContext) {
        self.srtp = Some(Box::new((tx, rx)));
    }

    /// Video feedback negotiated on the line (`sip_video_fb`); the RTX SSRC and first sequence
    /// number come from `rng` (drawn only when RTX was negotiated). Nothing negotiated turns it off.
    pub fn set_video_feedback(&mut self, fb: VideoFeedback, rng: &mut Rng) {
        if fb.is_empty() {
            self.fb = None;
        } else if self.fb.as_ref().is_none_or(|f| *f.negotiated() != fb) {
            // Only an RTX stream of ours needs an SSRC and first sequence number.
            let r = if fb.rtx.is_empty() { 0 } else { rng.next_u64() };
            self.fb = Some(Box::new(Feedback::new(fb, (r >> 32) as u32 ^ 1, (r & 0x7fff) as u16)));
        }
    }

    /// The packets the peer's NACKs asked for since the last call (RFC 4585 §6.2.1; RTX when
    /// negotiated), ready for the RTP socket (SRTP when on), and where to send them.
    pub fn take_resends(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        let Some(fb) = &mut self.fb else { return Vec::new() };
        let packets = fb.take();
        let Some(to) = self.latch.target().filter(|_| self.direction.sends()) else { return Vec::new() };
        packets
            .into_iter()
            .filter_map(|mut p| {
                if let Some((tx, _)) = self.srtp.as_deref_mut() {
                    let len = p.len();
                    p.resize(len + tx.rtp_overhead(), 0);
                    let n = tx.protect_rtp(&mut p, len).ok()?;
                    p.truncate(n);
                }
                Some((to, p))
            })
            .collect()
    }

    /// Whether SRTP is on.
    pub fn is_secure(&self) -> bool {
        self.srtp.is_some()
    }

    /// Replaces the codec table (a new answer).
    pub fn set_codecs(&mut self, codecs: Vec<CodecPair>) {
        if let Some(first) = codecs.first() {
            self.send_stats = SendStats::new(first.clock_rate);
        }
        self.from_sip = PtMap::new();
        self.to_sip = PtMap::new();
        for c in &codecs {
            self.to_sip.insert(c.browser_pt, c.sip_pt);
            // The peer may send with its own number or with the one we offered (RFC 3264 §6.1
            // asks for ours, not every phone does).
            self.from_sip.insert(c.sip_pt, c.browser_pt);
            self.from_sip.insert(c.browser_pt, c.browser_pt);
        }
        self.event_rates = codecs
            .iter()
            .filter(|c| super::dtmf_rate::is_event(&c.codec))
            .find_map(|c| RateMap::new(c.browser_pt, c.browser_clock_rate, c.clock_rate));
        self.codecs = codecs;
    }

    /// The codec table.
    pub fn codecs(&self) -> &[CodecPair] {
        &self.codecs
    }

    /// A new remote address from a new SDP (re-INVITE, 200 after early media): latching starts
    /// over if it changed.
    pub fn set_remote(&mut self, remote: SocketAddr) {
        if self.latch.sdp_addr() != SocketAddr::new(remote.ip().to_canonical(), remote.port()) {
            self.latch.reset(remote);
        }
    }

    /// Our direction towards the SIP peer: `sends()` false stops forwarding to it, `receives()`
    /// false drops what it sends.
    pub fn set_direction(&mut self, direction: Direction) {
        self.direction = direction;
    }

    /// Our direction towards the SIP peer.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Where RTP to the SIP peer goes now.
    pub fn target(&self) -> Option<SocketAddr> {
        self.latch.target()
    }

    /// The last time the SIP peer sent valid media (or when the media started).
    pub fn last_rx(&self) -> Instant {
        self.last_rx
    }

    /// Restarts the media-timeout clock (hold, a new answer).
    pub fn touch(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// An RTP packet from the browser: the datagram for the SIP peer, or `None` (unknown payload
    /// type, on hold, nowhere to send, out-of-window sequence).
    pub fn from_browser(
        &mut self,
        now: Instant,
        pkt: (u8, u16, u32, bool, u32),
        payload: &[u8],
    ) -> Option<(SocketAddr, &[u8])> {
        let (pt, seq, ts, marker, ssrc) = pkt;
        if !self.direction.sends() {
            return None;
        }
        let sip_pt = self.to_sip.get(pt)?;
        let clock = self.clock_of_browser_pt(pt);
        let to = self.latch.target()?;
        let rw = self.to_sip_rw.rewrite(now, ssrc, seq, ts, clock)?;
        let out = RtpOut { marker, pt: sip_pt, seq: rw.seq, ts: rw.ts, ssrc: self.ssrc };
        // Room for the header and an SRTP tag.
        let need = payload.len() + 12 + 16;
        if need > MAX_RTP {
            return None;
        }
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        let mut len = rtp::write_packet(&mut self.buf, &out, payload).ok()?;
        if let Some(rates) = &self.event_rates {
            rates.to_sip(pt, &mut self.buf[len - payload.len()..len]);
        }
        if let Some(fb) = &mut self.fb {
            fb.record(&self.buf[..len]);
        }
        if let Some((tx, _)) = self.srtp.as_deref_mut() {
            len = tx.protect_rtp(&mut self.buf, len).ok()?;
        }
        self.send_stats.on_sent(now, rw.ts, payload.len());
        self.sent += 1;
        Some((to, &self.buf[..len]))
    }

    /// A datagram on the SIP leg's RTP socket from `from`: what to write to the browser leg (its
    /// payload is [`SipMedia::rx_payload`]).
    pub fn from_sip(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Result<ToBrowser, Dropped> {
        if rtp::looks_like_rtcp(data) {
            return Err(Dropped::NotRtp);
        }
        rtp::parse_header(data).map_err(|_| Dropped::NotRtp)?;
        self.rx_buf.clear();
        self.rx_buf.extend_from_slice(data);
        if let Some((_, rx)) = self.srtp.as_deref_mut() {
            let len = rx.unprotect_rtp(&mut self.rx_buf).map_err(|_| Dropped::Srtp)?;
            self.rx_buf.truncate(len);
        }
        let peer = self.recv_stats.as_ref().map(ReceiveStats::ssrc);
        let repair = match &self.fb {
            Some(fb) => fb.unwrap_rtx(&mut self.rx_buf, peer).map_err(|_| Dropped::Rtx)?,
            None => false,
        };
        let view = rtp::parse(&self.rx_buf).map_err(|_| Dropped::NotRtp)?;
        let h = view.header;
        let browser_pt = self.from_sip.get(h.pt).ok_or(Dropped::UnknownPt)?;
        match self.latch.on_packet(from) {
            LatchVerdict::Accept => {}
            LatchVerdict::Latched(src) => log::debug!("SIP media latched to {src}"),
            LatchVerdict::Reject => return Err(Dropped::WrongSource),
        }
        self.last_rx = now;
        if !self.direction.receives() {
            return Err(Dropped::Hold);
        }
        let clock = self.clock_of_browser_pt(browser_pt);
        if self.recv_stats.as_ref().is_none_or(|r| r.ssrc() != h.ssrc) {
            self.recv_stats = Some(ReceiveStats::new(h.ssrc, clock));
        }
        if let Some(stats) = self.recv_stats.as_mut().filter(|_| !repair) {
            stats.on_rtp(now, h.seq, h.ts);
        }
        let rw = self.to_browser_rw.rewrite(now, h.ssrc, h.seq, h.ts, clock).ok_or(Dropped::Sequence)?;
        if let (Some(rates), Some(payload)) = (&self.event_rates, self.rx_buf.get_mut(h.payload_offset..h.payload_end))
        {
            rates.to_browser(browser_pt, payload);
        }
        self.received += 1;
        Ok(ToBrowser {
            pt: browser_pt,
            seq: rw.ext_seq,
            ts: rw.ts,
            marker: h.marker,
            payload: h.payload_offset..h.payload_end,
        })
    }

    /// Packets lost from the SIP peer's current source so far (RFC 3550 A.3, never negative).
    pub fn lost(&self) -> u64 {
        self.recv_stats.as_ref().map_or(0, |r| u64::try_from(r.cumulative_lost()).unwrap_or(0))
    }

    /// A DTMF event from the SIP side's INFO as RFC 4733 packets for the browser (media spec
    /// §1.12): at the browser's telephone-event number and clock rate, in the stream towards the
    /// browser (sequence numbers and timestamp continue it, as a source of its own between the
    /// peer's packets). Empty when no telephone-event was negotiated or we do not send to the
    /// browser (hold). Each payload goes with its [`ToBrowser`] (whose `payload` range is unused).
    pub fn dtmf_to_browser(&mut self, now: Instant, event: super::dtmf::DtmfEvent) -> Vec<(ToBrowser, [u8; 4])> {
        let te = self.codecs.iter().find(|c| c.codec.name.eq_ignore_ascii_case("telephone-event"));
        let Some((pt, clock)) = te.map(|c| (c.browser_pt, c.browser_clock_rate)) else { return Vec::new() };
        if !self.direction.receives() {
            return Vec::new();
        }
        // A source of its own, so that the peer's next packet starts a new one after it.
        let peer = self.recv_stats.as_ref().map(ReceiveStats::ssrc);
        let ssrc = if peer == Some(DTMF_SSRC) { DTMF_SSRC ^ 1 } else { DTMF_SSRC };
        self.to_browser_rw.reset_source();
        let mut out = Vec::new();
        for (i, (marker, payload)) in super::dtmf::packets(event, clock).into_iter().enumerate() {
            let Some(rw) = self.to_browser_rw.rewrite(now, ssrc, i as u16, 0, clock) else { continue };
            out.push((ToBrowser { pt, seq: rw.ext_seq, ts: rw.ts, marker, payload: 0..0 }, payload));
        }
        self.to_browser_rw.reset_source();
        out
    }

    /// The payload of the last [`ToBrowser`].
    pub fn rx_payload(&self, range: std::ops::Range<usize>) -> &[u8] {
        self.rx_buf.get(range).unwrap_or_default()
    }

    /// A datagram on the RTCP socket from `from`: RTCP is terminated per leg (media spec §2.3),
    /// so it only proves the peer alive, tells where its RTCP comes from, and feeds the delay
    /// since its last SR into our reports. Returns true when it asks for a key frame (PLI or FIR,
    /// RFC 4585 §6.3.1, RFC 5104 §4.3.1): the one thing forwarded to the other leg.
    pub fn rtcp_from_sip(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        let mut buf = data.to_vec();
        if let Some((_, rx)) = self.srtp.as_deref_mut() {
            match rx.unprotect_rtcp(&mut buf) {
                Ok(len) => buf.truncate(len),
                Err(_) => return false,
            }
        }
        if !rtp::looks_like_rtcp(&buf) || rtcp::validate_compound(&buf).is_err() {
            return false;
        }
        self.last_rx = now;
        self.rtcp_from = Some(from);
        if let Some(fb) = &mut self.fb {
            fb.on_rtcp(&buf, self.ssrc);
        }
        let summary = rtcp::summarize(&buf);
        if let (Some(stats), Some((ssrc, ntp))) = (&mut self.recv_stats, summary.sender_report) {
            if stats.ssrc() == ssrc {
                stats.on_sender_report(now, ntp);
            }
        }
        summary.keyframe_request
    }

    /// Our compound RTCP report (SR or RR with SDES CNAME; SRTCP when SRTP is on) and where to
    /// send it: the peer's RTCP source, else its RTP address with port + 1 (RFC 3550 §11).
    pub fn rtcp_report(&mut self, now: Instant, unix_now: Duration) -> Option<(SocketAddr, Vec<u8>)> {
        self.compound(now, unix_now, false)
    }

    /// Asks the SIP peer for a key frame (the browser sent a PLI or FIR on our video stream; media
    /// spec §2.3 point 4): our report (SR or RR, SDES) followed by a PLI (RFC 4585 §6.3.1) from
    /// our SSRC for the peer's media SSRC (0 while we have not heard it), as a compound RTCP
    /// packet (SRTCP when SRTP is on), and where to send it (as [`SipMedia::rtcp_report`]).
    pub fn keyframe_request(&mut self, now: Instant, unix_now: Duration) -> Option<(SocketAddr, Vec<u8>)> {
        self.compound(now, unix_now, true)
    }

    fn compound(&mut self, now: Instant, unix_now: Duration, pli: bool) -> Option<(SocketAddr, Vec<u8>)> {
        let to = self.rtcp_from.or_else(|| {
            let rtp = self.latch.target()?;
            Some(SocketAddr::new(rtp.ip(), rtp.port().checked_add(1)?))
        })?;
        let sender = self.send_stats.sender_info(now, unix_now);
        let blocks: Vec<_> = self.recv_stats.as_mut().and_then(|r| r.report_block(now)).into_iter().collect();
        let mut out = Vec::with_capacity(128);
        rtcp::write_report(&mut out, self.ssrc, sender.as_ref(), &blocks, self.cname.as_bytes());
        if pli {
            let media_ssrc = self.recv_stats.as_ref().map_or(0, |r| r.ssrc());
            rtcp::write_pli(&mut out, self.ssrc, media_ssrc);
        }
        if let Some((tx, _)) = self.srtp.as_deref_mut() {
            let len = out.len();
            out.resize(len + tx.rtcp_overhead(), 0);
            let n = tx.protect_rtcp(&mut out, len).ok()?;
            out.truncate(n);
        }
        Some((to, out))
    }

    fn clock_of_browser_pt(&self, pt: u8) -> u32 {
        self.codecs.iter().find(|c| c.browser_pt == pt).map_or(8000, |c| c.clock_rate)
    }
}

/// Pairs the codecs of `answer` (the side that chose, with its numbers) with `offer` (the other
/// side, with its numbers): each answered codec that matches an offered one
/// ([`Codec::same_format`]: H.264 by packetization mode and profile too), in the answer's order. `browser_is_offer` says which side the offer came from.
/// telephone-event pairs once, across clock rates when the sides differ (`dtmf_rate::pair_events`).
pub fn pair_codecs(offer: &[Codec], answer: &[Codec], browser_is_offer: bool) -> Vec<CodecPair> {
    let mut events = super::dtmf_rate::pair_events(offer, answer, browser_is_offer).map(|(b, s)| {
        let a = if browser_is_offer { s } else { b };
        let codec = Codec { clock_rate: s.clock_rate, ..a.clone() };
        CodecPair { browser_pt: b.pt, sip_pt: s.pt, clock_rate: s.clock_rate, browser_clock_rate: b.clock_rate, codec }
    });
    answer
        .iter()
        .filter_map(|a| {
            if super::dtmf_rate::is_event(a) {
                return events.take();
            }
            let o = offer
                .iter()
                .find(|x| x.same_format(a) && x.pt == a.pt)
                .or_else(|| offer.iter().find(|x| x.same_format(a)))?;
            let (browser_pt, sip_pt) = if browser_is_offer { (o.pt, a.pt) } else { (a.pt, o.pt) };
            let clock_rate = a.clock_rate;
            Some(CodecPair { browser_pt, sip_pt, clock_rate, browser_clock_rate: clock_rate, codec: a.clone() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0; 1500];
        let n = rtp::write_packet(&mut buf, &RtpOut { marker: false, pt, seq, ts, ssrc }, payload).unwrap();
        buf.truncate(n);
        buf
    }

    fn pcmu_pair() -> Vec<CodecPair> {
        vec![
            CodecPair { browser_pt: 0, sip_pt: 0, clock_rate: 8000, browser_clock_rate: 8000, codec: Codec::pcmu() },
            CodecPair {
                browser_pt: 126,
                sip_pt: 101,
                clock_rate: 8000,
                browser_clock_rate: 8000,
                codec: Codec::telephone_event(101),
            },
        ]
    }

    #[test]
    fn codecs_pair_by_name_with_each_side_s_number() {
        let browser = [Codec::opus(111), Codec::g722(), Codec::pcmu(), Codec::telephone_event(126)];
        let sip_answer = [Codec::pcmu(), Codec::telephone_event(101)];
        let pairs = pair_codecs(&browser, &sip_answer, true);
        assert_eq!(pairs.iter().map(|p| (p.browser_pt, p.sip_pt)).collect::<Vec<_>>(), [(0, 0), (126, 101)]);
        // The other way round (incoming): the SIP side offered, the browser answered.
        let pairs = pair_codecs(&sip_answer, &[Codec::telephone_event(101), Codec::pcmu()], false);
        assert_eq!(pairs.iter().map(|p| (p.browser_pt, p.sip_pt)).collect::<Vec<_>>(), [(101, 101), (0, 0)]);
    }

    #[test]
    fn dtmf_from_info_continues_the_stream_to_the_browser() {
        let t0 = crate::time::test_epoch();
        let mut rng = Rng::new([4; 32]);
        let far: SocketAddr = "192.0.2.10:30000".parse().unwrap();
        let mut m = SipMedia::new(far, pcmu_pair(), t0, &mut rng);
        let a = m.from_sip(t0, far, &packet(0, 9, 800, 99, b"abc")).unwrap();
        let t1 = t0 + Duration::from_millis(20);
        let ev = super::super::dtmf::DtmfEvent { code: 5, duration_ms: 160 };
        let got = m.dtmf_to_browser(t1, ev);
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(|(p, _)| p.pt == 126), "the browser's telephone-event number");
        assert_eq!(got.iter().map(|(p, _)| p.seq).collect::<Vec<_>>(), (1..=4).map(|i| a.seq + i).collect::<Vec<_>>());
        assert!(got.iter().all(|(p, _)| p.ts == got[0].0.ts), "one timestamp");
        assert_eq!(got[0].0.ts, a.ts.wrapping_add(160), "20 ms after the last packet at 8 kHz");
        assert!(got[0].0.marker && !got[1].0.marker);
        assert_eq!(got[0].1, [5, 10, 0, 160]);
        assert_eq!(got[3].1, [5, 0x8a, 0x05, 0x00]);
        // The peer's audio goes on after the event.
        let b = m.from_sip(t1 + Duration::from_millis(20), far, &packet(0, 10, 960, 99, b"def")).unwrap();
        assert_eq!(b.seq, got[3].0.seq + 1);
        assert!(b.ts.wrapping_sub(got[0].0.ts) < 0x8000_0000 && b.ts != got[0].0.ts, "timestamps go forward");
        // No telephone-event negotiated: nothing.
        let mut plain = SipMedia::new(far, pcmu_pair()[..1].to_vec(), t0, &mut rng);
        assert!(plain.dtmf_to_browser(t1, ev).is_empty());
    }

    #[test]
    fn rewrites_both_ways_and_latches() {
        let t0 = crate::time::test_epoch();
        let mut rng = Rng::new([3; 32]);
        let sdp_addr: SocketAddr = "192.0.2.10:30000".parse().unwrap();
        let mut m = SipMedia::new(sdp_addr, pcmu_pair(), t0, &mut rng);
        // Browser → SIP: to the SDP address until latched, our SSRC, SIP numbering.
        let (to, pkt) = m.from_browser(t0, (126, 50_000, 1000, true, 7), b"ev").unwrap();
        assert_eq!(to, sdp_addr);
        let h = rtp::parse_header(pkt).unwrap();
        assert_eq!(h.pt, 101);
        assert!(h.seq < 0x8000);
        let first_seq = h.seq;
        let (_, pkt) = m.from_browser(t0, (0, 50_001, 1160, false, 7), b"x").unwrap();
        assert_eq!(rtp::parse_header(pkt).unwrap().seq, first_seq.wrapping_add(1));
        // SIP → browser: latches on the first valid packet, from any source (NAT).
        let natted: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        let data = packet(0, 9, 80, 99, b"abc");
        let got = m.from_sip(t0 + Duration::from_millis(20), natted, &data).unwrap();
        assert_eq!((got.pt, &data[got.payload.clone()]), (0, &b"abc"[..]));
        assert!(got.seq < 0x8000);
        assert_eq!(m.target(), Some(natted));
        // Another source is refused now; unknown PTs and RTCP too.
        assert_eq!(m.from_sip(t0, sdp_addr, &packet(0, 10, 240, 99, b"x")), Err(Dropped::WrongSource));
        assert_eq!(m.from_sip(t0, natted, &packet(18, 10, 240, 99, b"x")), Err(Dropped::UnknownPt));
        assert_eq!(m.from_sip(t0, natted, &[0x80, 200, 0, 1, 0, 0, 0, 0]), Err(Dropped::NotRtp));
        // The peer's number for telephone-event maps back to the browser's.
        assert_eq!(m.from_sip(t0, natted, &packet(101, 10, 240, 99, b"e")).unwrap().pt, 126);
        assert_eq!(m.last_rx(), t0);
    }

    #[test]
    fn h264_pairs_with_the_offered_format_of_the_same_profile() {
        let cb = "packetization-mode=1;profile-level-id=42e01f";
        let browser = [
            Codec::vp8(96),
            Codec::h264(102, Some("packetization-mode=1;profile-level-id=42001f")),
            Codec::h264(108, Some(cb)),
            Codec::h264(109, Some("packetization-mode=0;profile-level-id=42e01f")),
        ];
        // The SIP side answers Constrained Baseline, mode 1, a lower level, at its own number.
        let answer = [Codec::h264(99, Some("profile-level-id=42e00d;packetization-mode=1"))];
        let pairs = pair_codecs(&browser, &answer, true);
        assert_eq!(
            pairs.iter().map(|p| (p.browser_pt, p.sip_pt, p.clock_rate)).collect::<Vec<_>>(),
            [(108, 99, 90000)]
        );
        // A profile nobody offered pairs with nothing.
        assert!(pair_codecs(&browser, &[Codec::h264(99, Some("profile-level-id=640c1f"))], true).is_empty());
    }

    #[test]
    fn keyframe_requests_both_ways_on_rtcp() {
        let t0 = crate::time::test_epoch();
        let mut rng = Rng::new([5; 32]);
        let addr: SocketAddr = "192.0.2.10:30002".parse().unwrap();
        let vp8 = vec![CodecPair {
            browser_pt: 96,
            sip_pt: 100,
            clock_rate: 90000,
            browser_clock_rate: 90000,
            codec: Codec::vp8(100),
        }];
        let mut m = SipMedia::new(addr, vp8, t0, &mut rng);
        let unix = Duration::from_secs(1_700_000_000);
        // Before any RTP from the peer: a PLI for SSRC 0, after an RR, to RTP port + 1.
        let (to, pkt) = m.keyframe_request(t0, unix).unwrap();
        assert_eq!(to, "192.0.2.10:30003".parse().unwrap());
        assert!(rtcp::validate_compound(&pkt).is_ok());
        let plis: Vec<_> = rtcp::parse_compound(&pkt)
            .filter_map(|p| match p {
                Ok(rtcp::RtcpPacket::Pli { media_ssrc, .. }) => Some(media_ssrc),
                _ => None,
            })
            .collect();
        assert_eq!(plis, [0]);
        // Once the peer sends, the PLI names its SSRC.
        m.from_sip(t0, addr, &packet(100, 1, 90, 0xabc, b"kf")).unwrap();
        let (_, pkt) = m.keyframe_request(t0, unix).unwrap();
        assert!(rtcp::parse_compound(&pkt)
            .any(|p| p == Ok(rtcp::RtcpPacket::Pli { sender_ssrc: m.ssrc, media_ssrc: 0xabc })));
        // A plain report is no keyframe request; the peer's PLI or FIR is.
        let (_, report) = m.rtcp_report(t0, unix).unwrap();
        assert!(!rtcp::summarize(&report).keyframe_request);
        let rtcp_from: SocketAddr = "192.0.2.10:30003".parse().unwrap();
        assert!(!m.rtcp_from_sip(t0, rtcp_from, &report));
        let mut pli = Vec::new();
        rtcp::write_rr(&mut pli, 0xabc, &[]);
        rtcp::write_pli(&mut pli, 0xabc, m.ssrc);
        assert!(m.rtcp_from_sip(t0, rtcp_from, &pli));
        let mut fir = Vec::new();
        rtcp::write_rr(&mut fir, 0xabc, &[]);
        rtcp::write_fir(&mut fir, 0xabc, m.ssrc, 1);
        assert!(m.rtcp_from_sip(t0, rtcp_from, &fir));
        assert!(!m.rtcp_from_sip(t0, rtcp_from, b"junk"));
    }

    #[test]
    fn hold_stops_each_direction() {
        let t0 = crate::time::test_epoch();
        let mut rng = Rng::new([4; 32]);
        let addr: SocketAddr = "192.0.2.10:30000".parse().unwrap();
        let mut m = SipMedia::new(addr, pcmu_pair(), t0, &mut rng);
        m.set_direction(Direction::RecvOnly);
        assert!(m.from_browser(t0, (0, 1, 1, false, 1), b"x").is_none());
        assert!(m.from_sip(t0, addr, &packet(0, 1, 1, 2, b"x")).is_ok());
        m.set_direction(Direction::SendOnly);
        assert_eq!(m.from_sip(t0, addr, &packet(0, 2, 161, 2, b"x")), Err(Dropped::Hold));
        assert!(m.from_browser(t0, (0, 2, 161, false, 1), b"x").is_some());
    }
}
