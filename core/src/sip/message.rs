//! SIP messages (RFC 3261 §7): methods, header names, headers, requests and responses, how they
//! print, and typed views of the headers the stack reads.
//!
//! Headers are stored raw ([`Header::value`] is the unfolded bytes) and typed views parse on
//! demand, returning `Result<_, ParseError>`; a message whose Contact is malformed still parses,
//! so the UA can answer it. Printing ([`Request::to_bytes`], [`Response::to_bytes`]) writes the
//! start line, every header as `Canonical-Name: value` in order, a Content-Length computed from
//! the body (replacing any stored one), an empty line and the body bytes exactly.

use super::lex::{parse_u32, parse_usize, split_list, trim_wsp, ParseError};
pub use super::names::{HeaderName, Method};
use super::uri::Uri;
pub use super::views::{contact_list, name_addr_list, CSeq, ContactList, NameAddr, Via};
use std::borrow::Cow;

/// One header field: the name and the value, unfolded and trimmed, bytes exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name.
    pub name: HeaderName,
    /// The value.
    pub value: Vec<u8>,
}

impl Header {
    /// A header from a name and a value.
    pub fn new(name: HeaderName, value: impl Into<Vec<u8>>) -> Self {
        Header { name, value: value.into() }
    }

    /// The value as text, invalid UTF-8 replaced.
    pub fn value_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// The header fields of a message, in order. Lookups by [`HeaderName`] see compact and long
/// forms alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl From<Vec<Header>> for Headers {
    fn from(v: Vec<Header>) -> Self {
        Headers(v)
    }
}

impl FromIterator<Header> for Headers {
    fn from_iter<I: IntoIterator<Item = Header>>(iter: I) -> Self {
        Headers(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// The first header called `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&Header> {
        self.0.iter().find(|h| h.name == *name)
    }

    /// Every header called `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a Header> + 'a {
        self.0.iter().filter(move |h| h.name == *name)
    }

    /// How many headers are called `name`.
    pub fn count(&self, name: &HeaderName) -> usize {
        self.get_all(name).count()
    }

    /// The first value of `name` as text (invalid UTF-8 replaced).
    pub fn get_str(&self, name: &HeaderName) -> Option<Cow<'_, str>> {
        self.get(name).map(Header::value_str)
    }

    /// Appends a header.
    pub fn push(&mut self, name: HeaderName, value: impl Into<Vec<u8>>) {
        self.0.push(Header::new(name, value));
    }

    /// Replaces every header called `name` by one with `value`, at the place of the first (or
    /// at the end if there was none).
    pub fn set(&mut self, name: HeaderName, value: impl Into<Vec<u8>>) {
        let header = Header::new(name, value);
        match self.0.iter().position(|h| h.name == header.name) {
            Some(i) => {
                self.0.retain(|h| h.name != header.name);
                self.0.insert(i, header);
            }
            None => self.0.push(header),
        }
    }

    /// Removes every header called `name`; returns how many there were.
    pub fn remove(&mut self, name: &HeaderName) -> usize {
        let before = self.0.len();
        self.0.retain(|h| h.name != *name);
        before - self.0.len()
    }

    /// The headers in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// How many header fields there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The one value of a header that must appear at most once; missing is an error.
    fn single(&self, name: &HeaderName, what: &'static str) -> Result<&[u8], ParseError> {
        self.get(name).map(|h| trim_wsp(&h.value)).ok_or(ParseError::Invalid(what))
    }

    /// Every Via value, across repeated headers and comma-separated lists, topmost first.
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        let mut out = Vec::new();
        for h in self.get_all(&HeaderName::Via) {
            for item in split_list(&h.value)? {
                out.push(Via::parse(item)?);
            }
        }
        Ok(out)
    }

    /// The topmost Via (§8.2.6.2 / §18.2.2 route responses by it).
    pub fn top_via(&self) -> Result<Via, ParseError> {
        let h = self.get(&HeaderName::Via).ok_or(ParseError::Invalid("missing Via"))?;
        let first = split_list(&h.value)?.into_iter().next().ok_or(ParseError::Invalid("Via"))?;
        Via::parse(first)
    }

    /// The From header.
    pub fn from_header(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.single(&HeaderName::From, "missing From")?)
    }

    /// The To header.
    pub fn to_header(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.single(&HeaderName::To, "missing To")?)
    }

    /// The Contact headers (none is an empty list).
    pub fn contacts(&self) -> Result<ContactList, ParseError> {
        let mut out = Vec::new();
        let mut star = false;
        for h in self.get_all(&HeaderName::Contact) {
            match contact_list(&h.value)? {
                ContactList::Wildcard => star = true,
                ContactList::Bindings(v) => out.extend(v),
            }
        }
        match (star, out.is_empty()) {
            (true, true) => Ok(ContactList::Wildcard),
            (true, false) => Err(ParseError::Invalid("Contact: * with other contacts")),
            (false, _) => Ok(ContactList::Bindings(out)),
        }
    }

    /// Every Route value, in order.
    pub fn routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs(&HeaderName::Route)
    }

    /// Every Record-Route value, in order.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs(&HeaderName::RecordRoute)
    }

    fn name_addrs(&self, name: &HeaderName) -> Result<Vec<NameAddr>, ParseError> {
        let mut out = Vec::new();
        for h in self.get_all(name) {
            out.extend(name_addr_list(&h.value)?);
        }
        Ok(out)
    }

    /// The CSeq (§20.16).
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(self.single(&HeaderName::CSeq, "missing CSeq")?)
    }

    /// The Call-ID (§20.8): any non-empty run of visible characters, compared byte for byte.
    pub fn call_id(&self) -> Result<&str, ParseError> {
        let v = self.single(&HeaderName::CallId, "missing Call-ID")?;
        let s = std::str::from_utf8(v).map_err(|_| ParseError::Invalid("Call-ID"))?;
        if s.is_empty() || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(ParseError::Invalid("Call-ID"));
        }
        Ok(s)
    }

    /// Max-Forwards (§20.22), 0–255; `None` if absent.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        let value = self.number(&HeaderName::MaxForwards, "Max-Forwards")?;
        value.map(|n| u8::try_from(n).map_err(|_| ParseError::Invalid("Max-Forwards"))).transpose()
    }

    /// Expires (§20.19) in seconds; `None` if absent. A value beyond 2³²−1 is an error (RFC 4475
    /// `scalar02`); the registration code may treat it as absent.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.number(&HeaderName::Expires, "Expires")
    }

    /// Min-Expires (§20.23) in seconds; `None` if absent.
    pub fn min_expires(&self) -> Result<Option<u32>, ParseError> {
        self.number(&HeaderName::MinExpires, "Min-Expires")
    }

    /// The stored Content-Length; `None` if absent. (Printing always computes it from the body.)
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        self.get(&HeaderName::ContentLength)
            .map(|h| parse_usize(trim_wsp(&h.value)).ok_or(ParseError::Invalid("Content-Length")))
            .transpose()
    }

    fn number(&self, name: &HeaderName, what: &'static str) -> Result<Option<u32>, ParseError> {
        self.get(name).map(|h| parse_u32(trim_wsp(&h.value)).ok_or(ParseError::Invalid(what))).transpose()
    }

    /// Writes the headers; Content-Length is written as `body_len`, in place of the first stored
    /// one or at the end. CR and LF inside values print as SP, so a value never breaks a line.
    fn write(&self, out: &mut Vec<u8>, body_len: usize) {
        let mut wrote_cl = false;
        let content_length = format!("Content-Length: {body_len}\r\n");
        for h in &self.0 {
            if h.name == HeaderName::ContentLength {
                if !wrote_cl {
                    out.extend_from_slice(content_length.as_bytes());
                    wrote_cl = true;
                }
                continue;
            }
            out.extend_from_slice(h.name.canonical().as_bytes());
            out.extend_from_slice(b": ");
            out.extend(h.value.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
            out.extend_from_slice(b"\r\n");
        }
        if !wrote_cl {
            out.extend_from_slice(content_length.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// The headers.
    pub headers: Headers,
    /// The body, bytes exact.
    pub body: Vec<u8>,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, uri: Uri) -> Self {
        Request { method, uri, headers: Headers::new(), body: Vec::new() }
    }

    /// The wire form: `METHOD uri SIP/2.0`, headers, computed Content-Length, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(format!("{} {} SIP/2.0\r\n", self.method, self.uri).as_bytes());
        self.headers.write(&mut out, self.body.len());
        out.extend_from_slice(&self.body);
        out
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// 100–699.
    pub code: u16,
    /// The reason phrase (may be empty; invalid UTF-8 replaced).
    pub reason: String,
    /// The headers.
    pub headers: Headers,
    /// The body, bytes exact.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with no headers and no body.
    pub fn new(code: u16, reason: &str) -> Self {
        Response { code, reason: reason.to_string(), headers: Headers::new(), body: Vec::new() }
    }

    /// A response to `req` (RFC 3261 §8.2.6.2): all Via values in order, From, To, Call-ID and
    /// CSeq copied as they are. The caller adds the To tag (except to a request that already
    /// has one), Contact, and whatever else the response needs.
    pub fn for_request(req: &Request, code: u16, reason: &str) -> Response {
        let mut resp = Response::new(code, reason);
        for h in req.headers.iter() {
            if matches!(
                h.name,
                HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
            ) {
                resp.headers.0.push(h.clone());
            }
        }
        resp
    }

    /// The wire form: `SIP/2.0 code reason`, headers, computed Content-Length, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        let reason: String = self.reason.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
        out.extend_from_slice(format!("SIP/2.0 {:03} {}\r\n", self.code, reason).as_bytes());
        self.headers.write(&mut out, self.body.len());
        out.extend_from_slice(&self.body);
        out
    }
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl SipMessage {
    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SipMessage::Request(r) => r.to_bytes(),
            SipMessage::Response(r) => r.to_bytes(),
        }
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }

    /// The headers, mutably.
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            SipMessage::Request(r) => &mut r.headers,
            SipMessage::Response(r) => &mut r.headers,
        }
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        match self {
            SipMessage::Request(r) => &r.body,
            SipMessage::Response(r) => &r.body,
        }
    }
}

impl From<Request> for SipMessage {
    fn from(r: Request) -> Self {
        SipMessage::Request(r)
    }
}

impl From<Response> for SipMessage {
    fn from(r: Response) -> Self {
        SipMessage::Response(r)
    }
}

/// The reason phrase RFC 3261 §21 (and the extensions that define the code) gives a status
/// code; an unknown code gets the phrase of its class's x00 (§8.1.3.2 treats it as that), and
/// anything outside 100–699 `"Unknown"`.
pub fn default_reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        417 => "Unknown Resource-Priority",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        428 => "Use Identity Header",
        429 => "Provide Referrer Identity",
        433 => "Anonymity Disallowed",
        436 => "Bad Identity-Info",
        437 => "Unsupported Certificate",
        438 => "Invalid Identity Header",
        439 => "First Hop Lacks Outbound Support",
        440 => "Max-Breadth Exceeded",
        469 => "Bad Info Package",
        470 => "Consent Needed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        494 => "Security Agreement Required",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        555 => "Push Notification Service Not Supported",
        580 => "Precondition Failure",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        607 => "Unwanted",
        608 => "Rejected",
        _ => match code / 100 {
            1 => "Trying",
            2 => "OK",
            3 => "Multiple Choices",
            4 => "Bad Request",
            5 => "Server Internal Error",
            6 => "Busy Everywhere",
            _ => "Unknown",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::names::KNOWN;
    use crate::sip::uri::Host;

    #[test]
    fn header_names() {
        assert_eq!(HeaderName::parse("v"), HeaderName::Via);
        assert_eq!(HeaderName::parse("I"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("cAlL-iD"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("l").canonical(), "Content-Length");
        assert_eq!(HeaderName::parse("www-authenticate").canonical(), "WWW-Authenticate");
        assert_eq!(HeaderName::parse("u"), HeaderName::Other("allow-events".into()));
        assert_eq!(HeaderName::parse("X-Foo"), HeaderName::Other("x-foo".into()));
        assert_eq!(HeaderName::parse("X-Foo").canonical(), "X-Foo");
        assert_eq!(HeaderName::parse("min-se").canonical(), "Min-SE");
        for (n, long) in KNOWN {
            assert_eq!(n.canonical(), *long);
            assert_eq!(HeaderName::parse(long), *n);
        }
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(Method::from_token("INVITE"), Method::Invite);
        assert_eq!(Method::from_token("invite"), Method::Other("invite".into()));
        assert_eq!(Method::from_token("FOO").as_str(), "FOO");
    }

    #[test]
    fn headers_api() {
        let mut h = Headers::new();
        h.push(HeaderName::Via, "a");
        h.push(HeaderName::To, "t");
        h.push(HeaderName::Via, "b");
        assert_eq!(h.get_all(&HeaderName::Via).count(), 2);
        h.set(HeaderName::Via, "c");
        assert_eq!(h.iter().map(|x| x.value.clone()).collect::<Vec<_>>(), vec![b"c".to_vec(), b"t".to_vec()]);
        assert_eq!(h.remove(&HeaderName::Via), 1);
        assert_eq!(h.len(), 1);
        h.set(HeaderName::Other("X-A".into()), "1");
        assert_eq!(h.get_str(&HeaderName::Other("x-a".into())).as_deref(), Some("1"));
    }

    #[test]
    fn printing_computes_content_length() {
        let mut r = Request::new(Method::Options, "sip:bob@example.com".parse().unwrap());
        r.headers.push(HeaderName::ContentLength, "99");
        r.headers.push(HeaderName::Other("X-Evil".into()), "a\r\nInjected: 1");
        r.headers.push(HeaderName::ContentLength, "7");
        r.body = b"\xff\x00bin".to_vec();
        assert_eq!(
            r.to_bytes(),
            b"OPTIONS sip:bob@example.com SIP/2.0\r\nContent-Length: 5\r\nX-Evil: a  Injected: 1\r\n\r\n\xff\x00bin"
        );
        let resp = Response::new(183, default_reason(183));
        assert_eq!(resp.to_bytes(), b"SIP/2.0 183 Session Progress\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn reasons() {
        assert_eq!(default_reason(481), "Call/Transaction Does Not Exist");
        assert_eq!(default_reason(499), "Bad Request");
        assert_eq!(default_reason(699), "Busy Everywhere");
        assert_eq!(default_reason(42), "Unknown");
    }

    #[test]
    fn via_views() {
        let v = Via::parse(
            b"SIP / 2.0 / UDP [2001:db8::9:1] : 5060 ; branch = z9hG4bK1 ; rport ; received=[2001:db8::9:255]",
        )
        .unwrap();
        assert_eq!(v.protocol, "SIP/2.0");
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, Host::V6("2001:db8::9:1".parse().unwrap()));
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received_ip(), Some("2001:db8::9:255".parse().unwrap()));
        assert_eq!(v.to_string(), "SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bK1;rport;received=[2001:db8::9:255]");
        let v = Via::parse(b"SIP/2.0/TCP h;rport=5081;received=2001:db8::1").unwrap();
        assert_eq!(v.rport(), Some(Some(5081)));
        assert_eq!(v.received_ip(), Some("2001:db8::1".parse().unwrap()));
        assert!(Via::parse(b"SIP/2.0/UDP").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP 192.0.2.15;;").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP h:99999").is_err());
    }

    #[test]
    fn name_addr_views() {
        let n = NameAddr::parse(br#""J Rosenberg \\\""  <sip:jdrosen@example.com> ; tag = 98asjd8"#).unwrap();
        assert_eq!(n.display_name.as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = NameAddr::parse(b"sip:watson@example.com;tag=1;unknownparam").unwrap();
        assert_eq!(n.uri.to_string(), "sip:watson@example.com");
        assert_eq!(n.params.len(), 2);
        let n = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("caller"));
        let n = NameAddr::parse(b"A   B\t C <tel:+1555>").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("A B C"));
        assert_eq!(n.to_string(), "\"A B C\" <tel:+1555>");
        for bad in
            [&b"\"open <sip:a@b>"[..], b"Bell, Alexander <sip:a@b>", b"<sip:a@b", b"<sip:a@b>;;", b"sip:a@b junk", b""]
        {
            assert!(NameAddr::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn contact_lists() {
        let v = br#"<sip:alice@127.0.0.1:5080;transport=UDP>;expires=296, "Bob, Jr" <sip:b@h>;+sip.instance="<urn:uuid:1>";received="sip:192.0.2.1:5060""#;
        let ContactList::Bindings(list) = contact_list(v).unwrap() else { panic!() };
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].expires(), Some(296));
        assert_eq!(list[1].display_name.as_deref(), Some("Bob, Jr"));
        assert_eq!(list[1].params.value("+sip.instance"), Some("<urn:uuid:1>"));
        assert_eq!(list[1].params.value("received"), Some("sip:192.0.2.1:5060"));
        assert_eq!(contact_list(b" * ").unwrap(), ContactList::Wildcard);
        let printed = list[1].to_string();
        assert_eq!(NameAddr::parse(printed.as_bytes()).unwrap(), list[1]);
    }

    #[test]
    fn cseq() {
        assert_eq!(CSeq::parse(b"0009\t INVITE").unwrap(), CSeq { seq: 9, method: Method::Invite });
        assert!(CSeq::parse(b"36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse(b"1INVITE").is_err());
        assert!(CSeq::parse(b"1 INVITE x").is_err());
        assert!(CSeq::parse(b"INVITE").is_err());
    }

    #[test]
    fn response_for_request() {
        let text = b"INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
            v: SIP/2.0/UDP b;branch=z9hG4bK2, SIP/2.0/UDP c\r\nf: <sip:a@h>;tag=1\r\nt: <sip:b@h>\r\ni: x\r\n\
            CSeq: 1 INVITE\r\nContact: <sip:a@1.2.3.4>\r\nl: 0\r\n\r\n";
        let Ok(SipMessage::Request(req)) = super::super::parse::parse_message(text) else { panic!() };
        let resp = Response::for_request(&req, 486, default_reason(486));
        assert_eq!(resp.headers.vias().unwrap().len(), 3);
        assert_eq!(resp.headers.len(), 6);
        assert_eq!(resp.headers.cseq().unwrap().method, Method::Invite);
        assert!(resp.headers.get(&HeaderName::Contact).is_none());
    }
}
