//! SIP as text, for scripted far ends in tests: read a header or the body of a message, and build
//! a response to a request (RFC 3261 §8.2.6: Via, From, Call-ID and CSeq copied from it).

/// The value of the first `name` header of `msg` (full name, exact case). Panics if it has none.
pub fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.split("\r\n")
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {name} in\n{msg}"))
}

/// The body of `msg` (empty if it has none).
pub fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// A `code` `reason` response to `req` with To `to`, the `extra` header lines (each ending in
/// CRLF) and `body`; Content-Length is computed.
pub fn response(req: &str, code: u16, reason: &str, to: &str, extra: &str, body: &str) -> String {
    format!(
        "SIP/2.0 {code} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        header(req, "Via"),
        header(req, "From"),
        header(req, "Call-ID"),
        header(req, "CSeq"),
        body.len()
    )
}
