//! Parsing one complete SIP message (RFC 3261 §7), and the request checks that decide between
//! processing a request and answering it with 400, 416 or 505 (RFC 3261 §8.2, RFC 4475).
//!
//! # Contract of [`parse_message`]
//! - The input is one whole message: a UDP datagram, or what [`super::framing::StreamFramer`]
//!   cut out of a stream.
//! - CRLFs before the start line are skipped (§7.5). Lines may end in CRLF or in a bare LF.
//! - Header lines may be folded (a line starting with SP or HT continues the previous one, §7.3.1);
//!   the stored value is unfolded (each line break plus the following whitespace becomes one SP)
//!   and trimmed, and otherwise keeps its bytes exactly, UTF-8 or not.
//! - Whitespace is allowed before the `:` of a header (`Via  : …`), names are case-insensitive and
//!   compact forms are recognised (§7.3.3, see [`HeaderName::parse`]).
//! - Unknown methods and unknown headers parse, so a UA can answer 501 or ignore them.
//! - Only `SIP/2.0` is accepted (case-insensitively); any other `SIP/x.y` is
//!   [`ParseError::Version`], which a request answers with 505.
//! - The body is framed by Content-Length (§18.3): bytes after it are discarded (a datagram with a
//!   second message after the first, RFC 4475 `dblreq`); a body shorter than it is
//!   [`ParseError::Truncated`]; without a Content-Length the rest of the input is the body. A
//!   negative or non-numeric Content-Length is an error.
//! - If the input ends right after a complete header line without the empty line, the message
//!   has no body (lenient, for datagrams); a header block cut inside a line is an error.
//! - No fixed buffers: the only limits are the ones in [`ParseOptions`].
//! - It never panics, and runs in time linear in the input.

pub use super::lex::ParseError;
use super::lex::{is_token, is_wsp, parse_usize, trim_wsp, trim_wsp_end, trim_wsp_start};
use super::message::{CSeq, Header, HeaderName, Headers, Method, Request, Response, SipMessage};
use super::uri::Uri;
use std::fmt;

/// Options of [`parse_message_with`]. The default has no limits and accepts only SIP/2.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Largest accepted input, in bytes.
    pub max_message: usize,
    /// Largest number of header fields.
    pub max_headers: usize,
    /// Accept any `SIP/x.y` version instead of failing with [`ParseError::Version`]. The caller
    /// uses this to read a request it must answer with 505 (it needs the Via, From, … for that).
    pub any_version: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions { max_message: usize::MAX, max_headers: usize::MAX, any_version: false }
    }
}

/// Parses one complete message; see the module documentation for the exact contract.
pub fn parse_message(bytes: &[u8]) -> Result<SipMessage, ParseError> {
    parse_message_with(bytes, &ParseOptions::default())
}

/// [`parse_message`] with limits and options.
pub fn parse_message_with(bytes: &[u8], opts: &ParseOptions) -> Result<SipMessage, ParseError> {
    if bytes.len() > opts.max_message {
        return Err(ParseError::TooLarge);
    }
    let mut lines = Lines { buf: bytes, pos: 0 };
    // §7.5: CRLFs before the start line are ignored.
    while let Some(rest) = bytes.get(lines.pos..) {
        if rest.starts_with(b"\r\n") {
            lines.pos += 2;
        } else if rest.starts_with(b"\n") {
            lines.pos += 1;
        } else {
            break;
        }
    }
    let Some((start, _)) = lines.next_line() else {
        return Err(ParseError::Invalid("empty message"));
    };

    // Header block.
    let mut headers: Vec<Header> = Vec::new();
    let mut ended = false;
    while let Some((line, terminated)) = lines.next_line() {
        if line.is_empty() {
            ended = true;
            break;
        }
        if !terminated {
            return Err(ParseError::Invalid("header block cut short"));
        }
        if is_wsp(line[0]) {
            // §7.3.1 folding: continues the previous header.
            let Some(last) = headers.last_mut() else {
                return Err(ParseError::Invalid("continuation line before any header"));
            };
            let cont = trim_wsp(line);
            if !cont.is_empty() {
                last.value.push(b' ');
                last.value.extend_from_slice(cont);
            }
            continue;
        }
        if headers.len() >= opts.max_headers {
            return Err(ParseError::TooLarge);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(ParseError::Invalid("header line without a colon"));
        };
        let name = trim_wsp_end(&line[..colon]);
        if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
            return Err(ParseError::Invalid("header name"));
        }
        let name = HeaderName::parse(&String::from_utf8_lossy(name));
        headers.push(Header { name, value: trim_wsp_start(&line[colon + 1..]).to_vec() });
    }
    if !ended && !bytes.ends_with(b"\n") {
        return Err(ParseError::Invalid("header block cut short"));
    }
    for h in &mut headers {
        let start = h.value.len() - trim_wsp_start(&h.value).len();
        h.value.drain(..start);
        let end = trim_wsp_end(&h.value).len();
        h.value.truncate(end);
    }
    let headers = Headers::from(headers);

    // Body, framed by Content-Length (§18.3).
    let rest = bytes.get(lines.pos..).unwrap_or_default();
    let body = match headers.get(&HeaderName::ContentLength) {
        None => rest,
        Some(h) => {
            let len = parse_usize(trim_wsp(&h.value)).ok_or(ParseError::Invalid("Content-Length"))?;
            rest.get(..len).ok_or(ParseError::Truncated)?
        }
    };
    let body = body.to_vec();

    if start.len() >= 4 && start[..4].eq_ignore_ascii_case(b"SIP/") {
        let (code, reason) = parse_status_line(start, opts)?;
        Ok(SipMessage::Response(Response { code, reason, headers, body }))
    } else {
        let (method, uri) = parse_request_line(start, opts)?;
        Ok(SipMessage::Request(Request { method, uri, headers, body }))
    }
}

/// Splits a buffer into lines ending in LF (an optional CR before it is stripped).
struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Lines<'a> {
    /// The next line and whether it had a terminator; `None` at the end.
    fn next_line(&mut self) -> Option<(&'a [u8], bool)> {
        let rest = self.buf.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                self.pos += nl + 1;
                let line = &rest[..nl];
                Some((line.strip_suffix(b"\r").unwrap_or(line), true))
            }
            None => {
                self.pos = self.buf.len();
                Some((rest, false))
            }
        }
    }
}

/// `SIP-Version SP Status-Code SP Reason-Phrase` (§7.2).
fn parse_status_line(line: &[u8], opts: &ParseOptions) -> Result<(u16, String), ParseError> {
    let sp = line.iter().position(|&b| b == b' ').ok_or(ParseError::Invalid("status line"))?;
    check_version(&line[..sp], opts)?;
    let rest = &line[sp + 1..];
    let (code, reason) = match rest.iter().position(|&b| b == b' ') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::Invalid("status code"));
    }
    let code = code.iter().fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    if !(100..=699).contains(&code) {
        return Err(ParseError::Invalid("status code"));
    }
    Ok((code, String::from_utf8_lossy(reason).into_owned()))
}

/// `Method SP Request-URI SP SIP-Version` (§7.1). Runs of whitespace between the elements and
/// trailing whitespace are tolerated (RFC 4475 `lwsstart`, `trws`); whitespace inside the
/// Request-URI is not (`lwsruri`), nor is a Request-URI in `<>` (`ltgtruri`).
fn parse_request_line(line: &[u8], opts: &ParseOptions) -> Result<(Method, Uri), ParseError> {
    let mut parts = line.split(|&b| is_wsp(b)).filter(|p| !p.is_empty());
    let (Some(method), Some(uri), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ParseError::Invalid("request line"));
    };
    if parts.next().is_some() {
        return Err(ParseError::Invalid("whitespace in Request-URI"));
    }
    // The version is checked first: RFC 4475 `badvers` expects 505 whatever else is wrong.
    check_version(version, opts)?;
    if !method.iter().all(|&b| is_token(b)) {
        return Err(ParseError::Invalid("method"));
    }
    if uri.first() == Some(&b'<') {
        return Err(ParseError::Invalid("Request-URI in <>"));
    }
    let uri = std::str::from_utf8(uri).map_err(|_| ParseError::Invalid("Request-URI"))?;
    let uri: Uri = uri.parse().map_err(|_| ParseError::Invalid("Request-URI"))?;
    let method = Method::from_token(&String::from_utf8_lossy(method));
    Ok((method, uri))
}

fn check_version(v: &[u8], opts: &ParseOptions) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok(());
    }
    let well_formed = v.len() > 4
        && v[..4].eq_ignore_ascii_case(b"SIP/")
        && v[4..].split(|&b| b == b'.').count() == 2
        && v[4..].split(|&b| b == b'.').all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    match (well_formed, opts.any_version) {
        (true, true) => Ok(()),
        (true, false) => Err(ParseError::Version),
        (false, _) => Err(ParseError::Invalid("SIP version")),
    }
}

/// A request the UAS must not process, and the response it deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// 400, 416 or 505.
    pub code: u16,
    /// A reason phrase naming the problem (RFC 3261 §21.4.1 allows any text after the code).
    pub reason: &'static str,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

const fn bad(reason: &'static str) -> Rejection {
    Rejection { code: 400, reason }
}

/// The checks a UAS makes before processing a parsed request (RFC 3261 §8.2, §8.1.1, §20;
/// RFC 4475 §3.1.2 and §3.3):
/// - To, From, Call-ID, CSeq and Via present (Max-Forwards may be missing, RFC 2543 peers), else
///   400 (`insuf`);
/// - To, From, Call-ID, CSeq, Max-Forwards and Content-Length at most once, else 400 (`multi01`,
///   `mcl01`);
/// - CSeq a 32-bit number and a method equal to the request's, else 400 (`scalar02`,
///   `mismatch01`, `mismatch02`);
/// - Max-Forwards 0–255, else 400 (`scalar02`);
/// - To, From, Via, Contact, Route and Record-Route syntactically valid, else 400 (`quotbal`,
///   `baddn`, `badinv01`);
/// - the Request-URI a `sip:`, `sips:` or `tel:` URI, else 416 (`unkscm`, `novelsc`).
///
/// A non-2.0 version never gets here: [`parse_message`] fails with [`ParseError::Version`] (505).
/// Not checked, because they are the application's business: Require (420), Content-Type (415),
/// Accept (406), Expires and Date values, authentication.
pub fn validate_request(req: &Request) -> Result<(), Rejection> {
    let h = &req.headers;
    for (name, missing) in [
        (HeaderName::To, "Missing To"),
        (HeaderName::From, "Missing From"),
        (HeaderName::CallId, "Missing Call-ID"),
        (HeaderName::CSeq, "Missing CSeq"),
        (HeaderName::Via, "Missing Via"),
    ] {
        if h.get(&name).is_none() {
            return Err(bad(missing));
        }
    }
    for (name, dup) in [
        (HeaderName::To, "Multiple To"),
        (HeaderName::From, "Multiple From"),
        (HeaderName::CallId, "Multiple Call-ID"),
        (HeaderName::CSeq, "Multiple CSeq"),
        (HeaderName::MaxForwards, "Multiple Max-Forwards"),
        (HeaderName::ContentLength, "Multiple Content-Length"),
    ] {
        if h.count(&name) > 1 {
            return Err(bad(dup));
        }
    }
    let cseq: CSeq = h.cseq().map_err(|_| bad("Bad CSeq"))?;
    if cseq.method != req.method {
        return Err(bad("CSeq Method Mismatch"));
    }
    h.call_id().map_err(|_| bad("Bad Call-ID"))?;
    h.max_forwards().map_err(|_| bad("Bad Max-Forwards"))?;
    h.from_header().map_err(|_| bad("Bad From"))?;
    h.to_header().map_err(|_| bad("Bad To"))?;
    h.vias().map_err(|_| bad("Bad Via"))?;
    h.contacts().map_err(|_| bad("Bad Contact"))?;
    h.routes().map_err(|_| bad("Bad Route"))?;
    h.record_routes().map_err(|_| bad("Bad Record-Route"))?;
    match req.uri {
        Uri::Sip(_) | Uri::Tel(_) => Ok(()),
        Uri::Other { .. } => Err(Rejection { code: 416, reason: "Unsupported URI Scheme" }),
    }
}

/// The checks that decide whether a parsed response is used or silently dropped (RFC 3261
/// §8.1.3.3, §18.1.2; RFC 4475 `scalarlg`): Via, From, To, Call-ID and CSeq present, the
/// single-valued ones once, CSeq, From, To and Via valid.
pub fn validate_response(resp: &Response) -> Result<(), ParseError> {
    let h = &resp.headers;
    for name in [HeaderName::To, HeaderName::From, HeaderName::CallId, HeaderName::CSeq, HeaderName::ContentLength] {
        if h.count(&name) > 1 {
            return Err(ParseError::Invalid("repeated single-value header"));
        }
    }
    h.cseq()?;
    h.call_id()?;
    h.from_header()?;
    h.to_header()?;
    if h.vias()?.is_empty() {
        return Err(ParseError::Invalid("Via"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::lex::{parse_u32, parse_u64, split_list};

    fn req(text: &str) -> Request {
        match parse_message(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    const OPTIONS: &str = "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
        To: <sip:bob@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\
        Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn minimal_request_parses_and_validates() {
        let r = req(OPTIONS);
        assert_eq!(r.method, Method::Options);
        assert_eq!(r.headers.len(), 7);
        assert_eq!(validate_request(&r), Ok(()));
    }

    #[test]
    fn leading_crlfs_and_lf_only_lines() {
        let text = format!("\r\n\r\n{}", OPTIONS.replace("\r\n", "\n"));
        let r = req(&text);
        assert_eq!(r.headers.call_id(), Ok("c1"));
    }

    #[test]
    fn folding_is_unfolded_and_lws_before_colon_allowed() {
        let text = OPTIONS.replace("Call-ID: c1", "Subject : a\r\n  folded\r\n\tvalue\r\nCall-ID: c1");
        let r = req(&text);
        assert_eq!(r.headers.get(&HeaderName::Subject).unwrap().value, b"a folded value");
    }

    #[test]
    fn content_length_frames_the_body() {
        let base = OPTIONS.replace("Content-Length: 0", "Content-Length: 5");
        assert_eq!(req(&format!("{base}helloEXTRA")).body, b"hello");
        assert_eq!(parse_message(format!("{base}hel").as_bytes()), Err(ParseError::Truncated));
        let neg = OPTIONS.replace("Content-Length: 0", "Content-Length: -5");
        assert_eq!(parse_message(neg.as_bytes()), Err(ParseError::Invalid("Content-Length")));
        let none = OPTIONS.replace("Content-Length: 0\r\n", "");
        assert_eq!(req(&format!("{none}rest is body")).body, b"rest is body");
    }

    #[test]
    fn versions() {
        let v7 = OPTIONS.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia");
        assert_eq!(parse_message(v7.as_bytes()), Err(ParseError::Version));
        let opts = ParseOptions { any_version: true, ..ParseOptions::default() };
        assert!(parse_message_with(v7.as_bytes(), &opts).is_ok());
        let junk = OPTIONS.replace("SIP/2.0\r\nVia", "HTTP/1.1\r\nVia");
        assert_eq!(parse_message(junk.as_bytes()), Err(ParseError::Invalid("SIP version")));
        assert_eq!(parse_message(b"SIP/2.0 4294967301 big\r\n\r\n"), Err(ParseError::Invalid("status code")));
    }

    #[test]
    fn limits() {
        let opts = ParseOptions { max_headers: 3, ..ParseOptions::default() };
        assert_eq!(parse_message_with(OPTIONS.as_bytes(), &opts), Err(ParseError::TooLarge));
        let opts = ParseOptions { max_message: 10, ..ParseOptions::default() };
        assert_eq!(parse_message_with(OPTIONS.as_bytes(), &opts), Err(ParseError::TooLarge));
    }

    #[test]
    fn header_block_without_empty_line() {
        let text = OPTIONS.trim_end_matches("\r\n").to_string() + "\r\n";
        assert!(parse_message(text.as_bytes()).is_ok());
        let cut = &OPTIONS[..OPTIONS.find("From:").unwrap() + 8];
        assert_eq!(parse_message(cut.as_bytes()), Err(ParseError::Invalid("header block cut short")));
    }

    #[test]
    fn validation_codes() {
        let unknown_scheme = OPTIONS.replace("OPTIONS sip:bob@example.com", "OPTIONS foo:bar");
        assert_eq!(validate_request(&req(&unknown_scheme)).unwrap_err().code, 416);
        let mismatch = OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
        assert_eq!(validate_request(&req(&mismatch)).unwrap_err().reason, "CSeq Method Mismatch");
        let big = OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 4294967296 OPTIONS");
        assert_eq!(validate_request(&req(&big)).unwrap_err().reason, "Bad CSeq");
        let mf = OPTIONS.replace("Max-Forwards: 70", "Max-Forwards: 256");
        assert_eq!(validate_request(&req(&mf)).unwrap_err().reason, "Bad Max-Forwards");
        let missing = OPTIONS.replace("Call-ID: c1\r\n", "");
        assert_eq!(validate_request(&req(&missing)).unwrap_err().reason, "Missing Call-ID");
        let dup = OPTIONS.replace("Call-ID: c1\r\n", "Call-ID: c1\r\ni: c2\r\n");
        assert_eq!(validate_request(&req(&dup)).unwrap_err().reason, "Multiple Call-ID");
    }

    #[test]
    fn list_splitting_respects_quotes_and_angles() {
        let v = br#""a, b" <sip:x@y;p=1,2>;q="1,2", <sip:z>"#;
        let parts = split_list(v).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], b"<sip:z>");
        assert!(split_list(b"a,,b").is_err());
        assert!(split_list(b"\"open, b").is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u32(b"0009"), Some(9));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u64(b"000000000000000000000000000000001"), Some(1));
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b""), None);
    }

    #[test]
    fn garbage_never_panics() {
        for input in [&b""[..], b"\r\n", b"\n\n\n", b"SIP/", b"SIP/2.0", b"INVITE", b"A B C\n D", b"\xff\xfe"] {
            let _ = parse_message(input);
        }
    }
}
