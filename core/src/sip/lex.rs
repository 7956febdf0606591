//! Lexical pieces shared by the URI parser, the header views and the message parser (RFC 3261
//! §25.1), and [`ParseError`], the one error they all return.

use std::fmt;

/// Why bytes are not a SIP message, or a header value not what its view expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Syntax error; the text names the part (`"Request-URI"`, `"CSeq"`, …).
    Invalid(&'static str),
    /// The SIP-Version is not 2.0 (RFC 3261 §21.5.6, RFC 4475 `badvers`: answer 505).
    Version,
    /// The body is shorter than Content-Length (RFC 3261 §18.3: answer 400 / drop).
    Truncated,
    /// A limit in [`super::parse::ParseOptions`] was exceeded.
    TooLarge,
}

impl ParseError {
    /// The short reason, fit for logs (never contains message content).
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Invalid(what) => what,
            ParseError::Version => "SIP version not supported",
            ParseError::Truncated => "body shorter than Content-Length",
            ParseError::TooLarge => "message too large",
        }
    }

    /// The status a request failing this way deserves: 505 for [`ParseError::Version`], 513 for
    /// [`ParseError::TooLarge`], 400 otherwise. (Only answerable if the headers can be read; see
    /// [`super::parse::ParseOptions::any_version`].)
    pub fn status(&self) -> u16 {
        match self {
            ParseError::Version => 505,
            ParseError::TooLarge => 513,
            _ => 400,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Invalid(what) => write!(f, "invalid {what}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ParseError {}

/// `token` characters: alphanumerics and `-.!%*_+`'~`.
pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~')
}

/// SP or HT.
pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whitespace inside an (unfolded) header value: SP, HT, and CR/LF for robustness.
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub(crate) fn trim_wsp_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_lws(*first) {
            break;
        }
        s = rest;
    }
    s
}

pub(crate) fn trim_wsp_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s {
        if !is_lws(*last) {
            break;
        }
        s = rest;
    }
    s
}

pub(crate) fn trim_wsp(s: &[u8]) -> &[u8] {
    trim_wsp_end(trim_wsp_start(s))
}

/// `1*DIGIT` with any number of leading zeros, as a `u64`; `None` if empty, not digits, or too
/// large.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

pub(crate) fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).and_then(|v| u32::try_from(v).ok())
}

pub(crate) fn parse_usize(s: &[u8]) -> Option<usize> {
    parse_u64(s).and_then(|v| usize::try_from(v).ok())
}

/// Splits a header value at the commas that separate list elements (RFC 3261 §7.3.1), ignoring
/// commas inside quoted strings and inside `<…>`. Elements are trimmed; an empty element or an
/// unterminated quoted string is an error.
pub(crate) fn split_list(value: &[u8]) -> Result<Vec<&[u8]>, ParseError> {
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    let (mut in_quotes, mut in_angle) = (false, false);
    while i < value.len() {
        let b = value[i];
        if in_quotes {
            match b {
                b'\\' => i += 1,
                b'"' => in_quotes = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_quotes = true,
                b'<' => in_angle = true,
                b'>' => in_angle = false,
                b',' if !in_angle => {
                    out.push(&value[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    if in_quotes {
        return Err(ParseError::Invalid("unterminated quoted string"));
    }
    out.push(value.get(start..).unwrap_or_default());
    let out: Vec<&[u8]> = out.into_iter().map(trim_wsp).collect();
    if out.iter().any(|e| e.is_empty()) {
        return Err(ParseError::Invalid("empty list element"));
    }
    Ok(out)
}

/// A cursor over a header value.
pub(crate) struct Cursor<'a> {
    pub(crate) s: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a [u8]) -> Self {
        Cursor { s, pos: 0 }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// Skips whitespace; returns whether there was any.
    pub(crate) fn skip_lws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_lws) {
            self.pos += 1;
        }
        self.pos > start
    }

    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    /// A quoted string starting at the cursor (which must be on `"`), unescaped (§25.1
    /// `quoted-pair`). CR and LF inside are errors.
    pub(crate) fn quoted(&mut self) -> Result<Vec<u8>, ParseError> {
        if !self.eat(b'"') {
            return Err(ParseError::Invalid("quoted string"));
        }
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r' | b'\n') => return Err(ParseError::Invalid("unterminated quoted string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        None | Some(b'\r' | b'\n') => return Err(ParseError::Invalid("unterminated quoted string")),
                        Some(c) => out.push(c),
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

/// Bytes to a `String`, replacing invalid UTF-8 (only where the API promises a `String`).
pub(crate) fn lossy(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
