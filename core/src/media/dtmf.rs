//! DTMF from SIP INFO to RFC 4733 (media spec §1.12, sip spec "INFO DTMF"): reading the two
//! INFO bodies carriers send — `application/dtmf-relay` (`Signal=5` and `Duration=160` lines,
//! milliseconds; a vendor format) and `application/dtmf` (the digit or event number alone) —
//! and writing the telephone-event payloads (RFC 4733 §2.3) that carry one event.

/// The default length of an event whose INFO gives none (what Janus and SylkServer send).
pub const DEFAULT_DURATION_MS: u32 = 160;

/// Longest event we generate: one RFC 4733 packet's duration field is 16 bits (8.19 s at
/// 8000 Hz); carriers send 100–250 ms.
pub const MAX_DURATION_MS: u32 = 5000;

/// The volume we send (RFC 4733 §2.3.4: −10 dBm0, as libwebrtc does).
const VOLUME: u8 = 10;

/// One DTMF event: its RFC 4733 code (§3.2: 0–9, `*` 10, `#` 11, A–D 12–15, flash 16) and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// The event code.
    pub code: u8,
    /// Milliseconds.
    pub duration_ms: u32,
}

/// The RFC 4733 code of a DTMF signal as INFO bodies write it: a key (`0`–`9`, `*`, `#`,
/// `A`–`D`, any case) or the event number (`10`, `16`).
fn signal_code(s: &str) -> Option<u8> {
    let s = s.trim();
    let mut chars = s.chars();
    let (Some(c), None) = (chars.next(), chars.clone().next()) else {
        return s.parse::<u8>().ok().filter(|n| *n <= 16);
    };
    match c.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        l @ 'A'..='D' => Some(l as u8 - b'A' + 12),
        _ => None,
    }
}

/// The event an INFO carries, if its `content_type` is `application/dtmf-relay` or
/// `application/dtmf` (parameters and case ignored) and its body names a DTMF signal. A missing
/// or unreadable duration is [`DEFAULT_DURATION_MS`]; durations are kept within 1 ms and
/// [`MAX_DURATION_MS`].
pub fn from_info(content_type: &str, body: &[u8]) -> Option<DtmfEvent> {
    let mime = content_type.split(';').next()?.trim().to_ascii_lowercase();
    let text = std::str::from_utf8(body).ok()?;
    let (code, duration) = match mime.as_str() {
        "application/dtmf-relay" => {
            let mut signal = None;
            let mut duration = None;
            for line in text.lines() {
                let Some((key, value)) = line.split_once('=') else { continue };
                match key.trim().to_ascii_lowercase().as_str() {
                    "signal" => signal = signal_code(value),
                    "duration" => duration = value.trim().parse::<u32>().ok(),
                    _ => {}
                }
            }
            (signal?, duration)
        }
        "application/dtmf" => (signal_code(text)?, None),
        _ => return None,
    };
    let duration_ms = duration.unwrap_or(DEFAULT_DURATION_MS).clamp(1, MAX_DURATION_MS);
    Some(DtmfEvent { code, duration_ms })
}

/// The telephone-event packets of `event` at `clock_rate` Hz, as (marker, payload): the start
/// (M bit, duration one 20 ms frame or less) and the end three times (E bit, the full duration;
/// RFC 4733 §2.5.1.4 asks for the end to be sent three times). All share one RTP timestamp.
pub fn packets(event: DtmfEvent, clock_rate: u32) -> Vec<(bool, [u8; 4])> {
    let ticks = |ms: u32| (u64::from(ms) * u64::from(clock_rate) / 1000).min(u64::from(u16::MAX)) as u16;
    let total = ticks(event.duration_ms).max(1);
    let first = ticks(20).min(total).max(1);
    let payload = |end: bool, duration: u16| {
        let d = duration.to_be_bytes();
        [event.code, if end { 0x80 | VOLUME } else { VOLUME }, d[0], d[1]]
    };
    let mut out = vec![(true, payload(false, first))];
    out.extend(std::iter::repeat_n((false, payload(true, total)), 3));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dtmf_relay_and_dtmf_bodies() {
        let ev = |code, duration_ms| Some(DtmfEvent { code, duration_ms });
        assert_eq!(from_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"), ev(5, 160));
        assert_eq!(from_info("Application/DTMF-Relay; x=y", b"signal= #\nduration = 250"), ev(11, 250));
        assert_eq!(from_info("application/dtmf-relay", b"Signal=*"), ev(10, DEFAULT_DURATION_MS));
        assert_eq!(from_info("application/dtmf-relay", b"Signal=16\r\nDuration=0"), ev(16, 1));
        assert_eq!(from_info("application/dtmf-relay", b"Signal=d\r\nDuration=999999"), ev(15, MAX_DURATION_MS));
        assert_eq!(from_info("application/dtmf", b"7"), ev(7, DEFAULT_DURATION_MS));
        assert_eq!(from_info("application/dtmf", b"11\r\n"), ev(11, DEFAULT_DURATION_MS));
        for (ct, body) in [
            ("application/dtmf-relay", &b"Signal=E"[..]),
            ("application/dtmf-relay", b"Signal=17"),
            ("application/dtmf-relay", b"Duration=100"),
            ("application/dtmf-relay", b"Signal=\xff"),
            ("application/dtmf", b""),
            ("application/dtmf", b"12x"),
            ("text/plain", b"5"),
            ("", b"Signal=5"),
        ] {
            assert_eq!(from_info(ct, body), None, "{ct} {body:?}");
        }
    }

    #[test]
    fn one_event_is_a_start_and_three_ends() {
        let p = packets(DtmfEvent { code: 9, duration_ms: 160 }, 8000);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0], (true, [9, 10, 0, 160]));
        assert!(p[1..].iter().all(|x| *x == (false, [9, 0x8a, 0x05, 0x00])), "1280 ticks, E bit: {p:?}");
        let p = packets(DtmfEvent { code: 1, duration_ms: 100 }, 48000);
        assert_eq!(u16::from_be_bytes([p[0].1[2], p[0].1[3]]), 960, "20 ms at 48 kHz");
        assert_eq!(u16::from_be_bytes([p[3].1[2], p[3].1[3]]), 4800);
        let p = packets(DtmfEvent { code: 1, duration_ms: MAX_DURATION_MS }, 48000);
        assert_eq!(u16::from_be_bytes([p[3].1[2], p[3].1[3]]), u16::MAX, "capped at one packet's field");
    }
}
