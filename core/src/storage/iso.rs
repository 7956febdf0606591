//! ISO 8601 text ↔ [`UnixMicros`], for the journal's wall times: `since` as clients send it
//! (with or without a UTC offset; none means UTC) and the timestamps of journal markers.

use crate::storage::message::UnixMicros;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn number(text: &str, digits: usize, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| range.contains(n))
}

/// Parses `YYYY-MM-DD[T| ]HH:MM[:SS[.fraction]][Z|±HH[:]MM]`; `None` if it is not that.
pub fn parse(text: &str) -> Option<UnixMicros> {
    let text = text.trim();
    let date = text.get(..10)?;
    let (year, month, day) = (
        number(date.get(..4)?, 4, 0..=9999)?,
        number(date.get(5..7)?, 2, 1..=12)?,
        number(date.get(8..10)?, 2, 1..=31)?,
    );
    if &date[4..5] != "-" || &date[7..8] != "-" {
        return None;
    }
    let rest = text.get(10..)?;
    let rest = rest.strip_prefix('T').or_else(|| rest.strip_prefix('t')).or_else(|| rest.strip_prefix(' '))?;
    // Split off the offset: a trailing `Z`, or the last `+`/`-`.
    let (clock, offset_minutes) = if let Some(clock) = rest.strip_suffix('Z').or_else(|| rest.strip_suffix('z')) {
        (clock, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        let sign = if &rest[at..=at] == "-" { -1 } else { 1 };
        let offset = rest[at + 1..].replace(':', "");
        let (h, m) = (number(offset.get(..2)?, 2, 0..=23)?, number(offset.get(2..)?, 2, 0..=59)?);
        (&rest[..at], sign * (h * 60 + m))
    } else {
        (rest, 0)
    };
    let (hms, fraction) = clock.split_once('.').map_or((clock, ""), |(a, b)| (a, b));
    let mut parts = hms.split(':');
    let hour = number(parts.next()?, 2, 0..=23)?;
    let minute = number(parts.next()?, 2, 0..=59)?;
    let second = parts.next().map_or(Some(0), |s| number(s, 2, 0..=60))?;
    if parts.next().is_some() || (!fraction.is_empty() && !fraction.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    if clock.contains('.') && fraction.is_empty() {
        return None;
    }
    let micros: i64 = format!("{fraction:0<6}").get(..6)?.parse().ok()?;
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(UnixMicros(seconds * 1_000_000 + micros))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`, the form SylkServer gives its own timestamps.
pub fn format(at: UnixMicros) -> String {
    let seconds = at.0.div_euclid(1_000_000);
    let micros = at.0.rem_euclid(1_000_000);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let s = seconds.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}+00:00", s / 3600, s % 3600 / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW_YEAR_2026: i64 = 1_767_225_600_000_000;

    #[test]
    fn parses_what_clients_send() {
        let cases = [
            ("2026-01-01T00:00:00Z", NEW_YEAR_2026),
            ("2026-01-01T00:00:00.000Z", NEW_YEAR_2026),
            ("2026-01-01T00:00:00.5Z", NEW_YEAR_2026 + 500_000),
            ("2026-01-01T00:00:00.1234567Z", NEW_YEAR_2026 + 123_456),
            ("2026-01-01T02:00:00+02:00", NEW_YEAR_2026),
            ("2025-12-31T19:30:00-0430", NEW_YEAR_2026),
            ("2026-01-01 00:00:00", NEW_YEAR_2026),
            ("2026-01-01T00:00", NEW_YEAR_2026),
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59.999999Z", -1),
            ("2024-02-29T12:00:00Z", 1_709_208_000_000_000),
        ];
        for (text, micros) in cases {
            assert_eq!(parse(text), Some(UnixMicros(micros)), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        for text in [
            "",
            "2026",
            "2026-01-01",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00.1x",
            "2026-01-01T00:00:00+2",
            "2026-01-01T00:00:00:00",
            "2026/01/01T00:00:00",
            "yesterday",
            "2026-01-01T00:00:00+ä",
            "２026-01-01T00:00:00Z",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }

    #[test]
    fn format_and_parse_agree() {
        assert_eq!(format(UnixMicros(NEW_YEAR_2026 + 42)), "2026-01-01T00:00:00.000042+00:00");
        assert_eq!(format(UnixMicros(-1)), "1969-12-31T23:59:59.999999+00:00");
        for micros in [0, -1, 1, NEW_YEAR_2026, 951_782_400_123_456, 4_102_444_799_999_999, -62_135_596_800_000_000] {
            assert_eq!(parse(&format(UnixMicros(micros))), Some(UnixMicros(micros)), "{micros}");
        }
    }
}
