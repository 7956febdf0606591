//! The CPIM header character escapes (RFC 3862 §3.2): `\\` for a backslash, `\"` for a double
//! quote inside a quoted string, and `\uXXXX` for any other character, which is how control
//! characters (CR and LF above all) travel inside a header value without ending the line.

/// Appends `value` to `out` escaped for a CPIM header value: backslash as `\\`, control
/// characters (C0 and DEL) as `\uXXXX`, and, if `in_quotes`, `"` as `\"`. The result never
/// contains CR or LF, so no value can start a header of its own.
pub(crate) fn escape_into(value: &str, in_quotes: bool, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' if in_quotes => out.push_str("\\\""),
            c if c.is_ascii_control() => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
}

/// Appends a whole header value escaped ([`escape_into`] without quotes), with leading and
/// trailing spaces and a leading `;` (which would read as a `Subject` language tag) also as
/// `\uXXXX`, so that the reader's trimming gives back exactly `value`.
pub(crate) fn escape_value_into(value: &str, out: &mut String) {
    let core = value.trim_matches(' ');
    let lead = value.len() - value.trim_start_matches(' ').len();
    out.push_str(&"\\u0020".repeat(lead));
    let rest = match core.strip_prefix(';') {
        Some(rest) => {
            out.push_str("\\u003b");
            rest
        }
        None => core,
    };
    escape_into(rest, false, out);
    out.push_str(&"\\u0020".repeat(value.len() - lead - core.len()));
}

/// Decodes the escapes of a CPIM header value. Total: `\\`, `\"`, `\uXXXX` (surrogate pairs
/// joined, a lone surrogate becomes U+FFFD), and the `\r`, `\n`, `\t` that some senders use are
/// decoded; any other backslash sequence is kept as written.
pub(crate) fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let mut chars = rest.chars();
        chars.next(); // the backslash
        match chars.next() {
            Some('\\') => {
                out.push('\\');
                rest = &rest[2..];
            }
            Some('"') => {
                out.push('"');
                rest = &rest[2..];
            }
            Some('r') => {
                out.push('\r');
                rest = &rest[2..];
            }
            Some('n') => {
                out.push('\n');
                rest = &rest[2..];
            }
            Some('t') => {
                out.push('\t');
                rest = &rest[2..];
            }
            Some('u') => match hex4(&rest[2..]) {
                Some(unit) => {
                    rest = &rest[6..];
                    if (0xD800..0xDC00).contains(&unit) {
                        // A high surrogate: join it with a following `\uDCxx`.
                        let low = rest.strip_prefix("\\u").and_then(hex4).filter(|u| (0xDC00..0xE000).contains(u));
                        match low {
                            Some(low) => {
                                let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                                out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                                rest = &rest[6..];
                            }
                            None => out.push(char::REPLACEMENT_CHARACTER),
                        }
                    } else {
                        out.push(char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                }
                None => {
                    out.push_str("\\u");
                    rest = &rest[2..];
                }
            },
            Some(other) => {
                out.push('\\');
                out.push(other);
                rest = &rest[1 + other.len_utf8()..];
            }
            None => {
                out.push('\\');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Four hex digits at the start of `s`.
fn hex4(s: &str) -> Option<u32> {
    let digits = s.get(..4)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(value: &str, in_quotes: bool) -> String {
        let mut out = String::new();
        escape_into(value, in_quotes, &mut out);
        out
    }

    #[test]
    fn control_characters_and_backslash_are_escaped() {
        assert_eq!(escaped("a\r\nb\\c\"d\u{7f}", false), "a\\u000d\\u000ab\\\\c\"d\\u007f");
        assert_eq!(escaped("say \"hi\"", true), "say \\\"hi\\\"");
        assert_eq!(escaped("Zoë 日本", true), "Zoë 日本");
    }

    #[test]
    fn escapes_round_trip() {
        for value in ["plain", "a\r\nTo: <sip:evil@x>", "back\\slash \"quoted\"", "tab\there", "é\u{1}\u{1f600}"] {
            assert_eq!(unescape(&escaped(value, true)), value);
            assert_eq!(unescape(&escaped(value, false)), value);
        }
    }

    #[test]
    fn whole_values_keep_their_edges() {
        for value in ["", " ", "  x ", ";lang=fr x", " ;a ", "a;b", "x\r\n"] {
            let mut out = String::new();
            escape_value_into(value, &mut out);
            assert!(!out.starts_with([' ', ';']) && !out.ends_with(' '), "{out:?}");
            assert_eq!(unescape(&out), value);
        }
    }

    #[test]
    fn unescape_is_total() {
        assert_eq!(unescape("\\ud83d\\ude00"), "\u{1f600}");
        assert_eq!(unescape("\\ud83dx"), "\u{fffd}x");
        assert_eq!(unescape("\\ude00"), "\u{fffd}");
        assert_eq!(unescape("\\u12"), "\\u12");
        assert_eq!(unescape("\\uzzzz"), "\\uzzzz");
        assert_eq!(unescape("end\\"), "end\\");
        assert_eq!(unescape("\\q\\é"), "\\q\\é");
        assert_eq!(unescape("\\u00e9\\r\\n\\t"), "é\r\n\t");
    }
}
