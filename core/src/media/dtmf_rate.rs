//! telephone-event at two clock rates (RFC 4733 §2.1, media spec §1.12): the browser leg carries
//! telephone-event/8000 only (str0m, one configuration per rate), while a SIP peer using Opus may
//! offer only telephone-event/48000 (RFC 7587 §7 asks for the codec's rate). Such a pair is
//! negotiated at each side's rate, and each event's duration (RFC 4733 §2.3.5: in timestamp
//! units of its payload's clock) is scaled on the way. The RTP timestamps are not: the event
//! travels in the audio stream of one SSRC, whose timeline is the audio codec's, the same on
//! both sides (no transcoding), so they are rewritten like the audio's.

use super::sdp::Codec;

/// The one telephone-event clock rate of the browser leg.
pub const BROWSER_RATE: u32 = 8000;

/// True for `telephone-event` at any clock rate.
pub fn is_event(c: &Codec) -> bool {
    c.name.eq_ignore_ascii_case("telephone-event") && c.clock_rate > 0
}

/// The codecs of an m-line (`codecs`, its order and numbers) that we carry: those `supported`
/// ([`Codec::matches`]), and, when the line has no telephone-event at [`BROWSER_RATE`], its first
/// telephone-event at another rate (mapped by [`pair_events`]).
pub fn carried(codecs: &[Codec], supported: &[Codec]) -> Vec<Codec> {
    let has_browser_rate = codecs.iter().any(|c| is_event(c) && c.clock_rate == BROWSER_RATE);
    let other_rate = if has_browser_rate { None } else { codecs.iter().position(is_event) };
    codecs
        .iter()
        .enumerate()
        .filter(|(i, c)| Some(*i) == other_rate || supported.iter().any(|s| s.matches(c)))
        .map(|(_, c)| c.clone())
        .collect()
}

/// The codecs to offer the browser for a SIP offer's `codecs` (incoming calls): a
/// telephone-event at another rate becomes telephone-event/8000 at the same number (the browser
/// leg's numbers are its own; [`pair_events`] joins the two).
pub fn for_browser(codecs: &[Codec]) -> Vec<Codec> {
    codecs
        .iter()
        .map(|c| match is_event(c) && c.clock_rate != BROWSER_RATE {
            true => Codec { clock_rate: BROWSER_RATE, channels: 1, ..c.clone() },
            false => c.clone(),
        })
        .collect()
}

/// The telephone-events to pair in an offer/answer (`browser_is_offer` says which side offered,
/// as for `bridge::pair_codecs`), as (browser's, SIP side's): the browser's telephone-event/8000
/// with the SIP side's telephone-event at 8000 if it has one, else at its rate. `None` when
/// either side has none.
pub fn pair_events<'a>(
    offer: &'a [Codec],
    answer: &'a [Codec],
    browser_is_offer: bool,
) -> Option<(&'a Codec, &'a Codec)> {
    let (browser, sip) = if browser_is_offer { (offer, answer) } else { (answer, offer) };
    let b = browser.iter().find(|c| is_event(c) && c.clock_rate == BROWSER_RATE)?;
    let s = sip
        .iter()
        .find(|c| is_event(c) && c.clock_rate == BROWSER_RATE)
        .or_else(|| sip.iter().find(|c| is_event(c)))?;
    Some((b, s))
}

/// A telephone-event negotiated at a different rate on each side: the browser's number and
/// both rates. Held by the SIP media, applied to every packet of that number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateMap {
    /// The browser side's payload type of the event.
    pub browser_pt: u8,
    /// The browser side's clock rate.
    pub browser_rate: u32,
    /// The SIP side's clock rate.
    pub sip_rate: u32,
}

impl RateMap {
    /// The map for a telephone-event at `browser_pt`, when its two rates differ.
    pub fn new(browser_pt: u8, browser_rate: u32, sip_rate: u32) -> Option<Self> {
        (browser_rate != sip_rate && browser_rate > 0 && sip_rate > 0).then_some(Self {
            browser_pt,
            browser_rate,
            sip_rate,
        })
    }

    /// A payload of browser type `pt` going to the SIP side: its duration rescaled in place.
    pub fn to_sip(&self, pt: u8, payload: &mut [u8]) {
        if pt == self.browser_pt {
            scale_duration(payload, self.browser_rate, self.sip_rate);
        }
    }

    /// A payload of browser type `pt` (already mapped) going to the browser: its duration
    /// rescaled in place.
    pub fn to_browser(&self, pt: u8, payload: &mut [u8]) {
        if pt == self.browser_pt {
            scale_duration(payload, self.sip_rate, self.browser_rate);
        }
    }
}

/// Rescales the duration field (bytes 2–3, RFC 4733 §2.3) of every 4-byte event in `payload`
/// (§2.5.1.5: several events may share a packet) from clock `from` to clock `to`, saturating at
/// the field's 16 bits. A payload shorter than one event is left alone.
pub fn scale_duration(payload: &mut [u8], from: u32, to: u32) {
    if from == 0 || from == to {
        return;
    }
    for event in payload.chunks_exact_mut(4) {
        let d = u64::from(u16::from_be_bytes([event[2], event[3]]));
        let scaled = (d * u64::from(to) + u64::from(from) / 2) / u64::from(from);
        event[2..4].copy_from_slice(&u16::try_from(scaled).unwrap_or(u16::MAX).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::bridge::{pair_codecs, SipMedia};
    use crate::media::rtp::{self, RtpOut};
    use crate::rng::Rng;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn te48(pt: u8) -> Codec {
        Codec { clock_rate: 48000, ..Codec::telephone_event(pt) }
    }

    #[test]
    fn only_a_line_without_telephone_event_8000_keeps_another_rate() {
        let supported = crate::call::supported_codecs();
        let opus_48 = [Codec::opus(111), te48(101)];
        assert_eq!(carried(&opus_48, &supported), opus_48);
        // Chrome offers both: the 8000 one is enough, the 48000 one is not carried.
        let chrome = [Codec::opus(111), te48(110), Codec::telephone_event(126)];
        assert_eq!(carried(&chrome, &supported), [Codec::opus(111), Codec::telephone_event(126)]);
        assert_eq!(for_browser(&opus_48), [Codec::opus(111), Codec::telephone_event(101)]);
    }

    #[test]
    fn events_pair_across_rates_both_ways() {
        // Incoming: the SIP side offered Opus and telephone-event/48000, the browser answered
        // with telephone-event/8000 at the same number.
        let sip = [Codec::opus(111), te48(101)];
        let browser = [Codec::opus(111), Codec::telephone_event(101)];
        let pairs = pair_codecs(&sip, &browser, false);
        let te = &pairs[1];
        assert_eq!((te.browser_pt, te.sip_pt, te.clock_rate, te.browser_clock_rate), (101, 101, 48000, 8000));
        assert_eq!(te.sip_codec(), te48(101), "our SIP answer keeps the offered rate");
        assert_eq!(te.browser_codec(), Codec::telephone_event(101));
        assert_eq!(
            RateMap::new(te.browser_pt, te.browser_clock_rate, te.clock_rate),
            Some(RateMap { browser_pt: 101, browser_rate: 8000, sip_rate: 48000 })
        );
        // Outgoing: the browser offered 8000 (126); a SIP answer at 48000 (102) pairs with it.
        let pairs = pair_codecs(&[Codec::pcmu(), Codec::telephone_event(126)], &[Codec::pcmu(), te48(102)], true);
        assert_eq!(pairs.iter().map(|p| (p.browser_pt, p.sip_pt)).collect::<Vec<_>>(), [(0, 0), (126, 102)]);
        assert_eq!(pairs[1].browser_codec(), Codec::telephone_event(126));
        // Same rate: no map, one pair.
        let same = pair_codecs(&[Codec::telephone_event(126)], &[Codec::telephone_event(101)], true);
        assert_eq!(same.len(), 1);
        assert_eq!(RateMap::new(same[0].browser_pt, same[0].browser_clock_rate, same[0].clock_rate), None);
        // Nothing to pair with.
        assert!(pair_events(&[Codec::pcmu()], &[te48(101)], true).is_none());
    }

    #[test]
    fn durations_scale_and_saturate() {
        let mut p = [5, 0x8a, 0x03, 0x20, 6, 0x0a, 0x00, 0xa0]; // 800 and 160 ticks at 8 kHz
        scale_duration(&mut p, 8000, 48000);
        assert_eq!(p, [5, 0x8a, 0x12, 0xc0, 6, 0x0a, 0x03, 0xc0], "4800 and 960");
        scale_duration(&mut p, 48000, 8000);
        assert_eq!(p, [5, 0x8a, 0x03, 0x20, 6, 0x0a, 0x00, 0xa0]);
        let mut long = [1, 0, 0x40, 0x00]; // 16384 ticks: 98304 at 48 kHz does not fit
        scale_duration(&mut long, 8000, 48000);
        assert_eq!(long, [1, 0, 0xff, 0xff]);
        let mut short = [1, 0, 9];
        scale_duration(&mut short, 8000, 48000);
        assert_eq!(short, [1, 0, 9], "not an event: untouched");
    }

    fn packet(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0; 1500];
        let n = rtp::write_packet(&mut buf, &RtpOut { marker: false, pt, seq, ts, ssrc: 99 }, payload).unwrap();
        buf.truncate(n);
        buf
    }

    /// The SIP media scales each event of the mapped number, both ways, and the events from
    /// SIP INFO go out at the browser's rate.
    #[test]
    fn sip_media_scales_events_both_ways() {
        let t0 = crate::time::test_epoch();
        let mut rng = Rng::new([7; 32]);
        let far: SocketAddr = "192.0.2.10:30000".parse().unwrap();
        // The browser answered at the number we offered it (101).
        let pairs =
            pair_codecs(&[Codec::opus(111), te48(101)], &[Codec::opus(111), Codec::telephone_event(101)], false);
        let mut m = SipMedia::new(far, pairs, t0, &mut rng);
        // Browser → SIP: 800 ticks at 8 kHz become 4800 at 48 kHz; Opus is untouched.
        let (_, out) = m.from_browser(t0, (101, 1, 960, true, 7), &[5, 0x0a, 0x03, 0x20]).unwrap();
        let view = rtp::parse(out).unwrap();
        assert_eq!((view.header.pt, &out[view.header.payload_offset..]), (101, &[5, 0x0a, 0x12, 0xc0][..]));
        let (_, out) = m.from_browser(t0, (111, 2, 1920, false, 7), &[0x03, 0x20]).unwrap();
        assert_eq!(&out[out.len() - 2..], [0x03, 0x20]);
        // SIP → browser: 4800 ticks at 48 kHz become 800.
        let got = m.from_sip(t0, far, &packet(101, 9, 4800, &[5, 0x8a, 0x12, 0xc0])).unwrap();
        assert_eq!((got.pt, m.rx_payload(got.payload)), (101, &[5, 0x8a, 0x03, 0x20][..]));
        // INFO DTMF: 200 ms at the browser's 8 kHz.
        let ev = m.dtmf_to_browser(
            t0 + Duration::from_millis(20),
            crate::media::dtmf::DtmfEvent { code: 1, duration_ms: 200 },
        );
        assert_eq!(ev.last().map(|(_, p)| *p), Some([1, 0x8a, 0x06, 0x40]));
    }
}
