//! The WebSocket upgrade on `/webrtcgateway/ws` (RFC 6455 §4.2), with SylkServer's rejections:
//! 404 for other paths, 403 for an `Origin` outside `web_origins`, 406
//! `No compatible protocol specified` when neither `sylkRTC-2` nor `sylkRTC-1` is offered.
//! Besides the upgrade, `GET /` (and `/index.html`) serves the built-in web phone
//! ([`crate::web::PHONE_HTML`]).

use crate::api::Dialect;
use crate::config::Config;

/// The WebSocket endpoint.
pub const WS_PATH: &str = "/webrtcgateway/ws";

/// The paths that serve the built-in web phone.
pub const PHONE_PATHS: [&str; 2] = ["/", "/index.html"];

/// The Content-Security-Policy of the web phone: everything from this origin or inline, media
/// from the page's own streams, and WebSocket connections to any gateway (the URL is editable).
pub const PHONE_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
                             img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; \
                             base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `GET`, …
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Comma-separated tokens of every header named `name`.
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// Not a complete head yet.
    Partial,
    /// The head is larger than allowed.
    TooLarge,
    /// Not HTTP.
    Malformed,
    /// A complete head of `len` bytes.
    Complete { head: RequestHead, len: usize },
}

/// Parses the request head at the start of `buf`.
pub fn parse_head(buf: &[u8], max_size: usize) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_size => {
            let path = req.path.unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path).to_string();
            let headers = req
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            Head::Complete { head: RequestHead { method: req.method.unwrap_or("").to_string(), path, headers }, len }
        }
        Ok(httparse::Status::Complete(_)) => Head::TooLarge,
        Ok(httparse::Status::Partial) if buf.len() > max_size => Head::TooLarge,
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(httparse::Error::TooManyHeaders) => Head::TooLarge,
        Err(_) => Head::Malformed,
    }
}

/// The answer to a request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Switch protocols.
    Upgrade {
        /// `Sec-WebSocket-Accept` value.
        accept: String,
        /// Negotiated dialect.
        dialect: Dialect,
    },
    /// Answer with an error and close.
    Reject(Response),
    /// Serve a page (the web phone) and close.
    Page(Response),
}

/// An HTTP response: plain text unless made with [`Response::html`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body text (logged for rejections).
    pub body: String,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// An answer to `HEAD`: the headers (with the body's `Content-Length`) but no body.
    pub head_only: bool,
}

impl Response {
    /// A response with `body` as text.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            headers: Vec::new(),
            content_type: "text/plain; charset=utf-8",
            head_only: false,
        }
    }

    /// A response with `body` as HTML.
    pub fn html(status: u16, body: impl Into<String>) -> Self {
        Self { content_type: "text/html; charset=utf-8", ..Self::text(status, body) }
    }

    /// The bytes on the wire; the connection closes after it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            s.push_str(&format!("{name}: {value}\r\n"));
        }
        s.push_str("\r\n");
        if !self.head_only {
            s.push_str(&self.body);
        }
        s.into_bytes()
    }
}

/// The web phone page for `GET` (`head_only` for `HEAD`).
pub fn phone_page(head_only: bool) -> Response {
    let mut r = Response::html(200, crate::web::PHONE_HTML);
    r.head_only = head_only;
    r.headers.push(("Cache-Control", "no-cache".into()));
    r.headers.push(("Content-Security-Policy", PHONE_CSP.into()));
    r.headers.push(("X-Content-Type-Options", "nosniff".into()));
    r.headers.push(("Referrer-Policy", "no-referrer".into()));
    r
}

/// The `101 Switching Protocols` answer.
pub fn switching_protocols(accept: &str, dialect: Dialect) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
        dialect.token()
    )
    .into_bytes()
}

/// Decides what to do with a complete request head.
pub fn decide(head: &RequestHead, config: &Config) -> Decision {
    let upgrade = head.tokens("upgrade").any(|t| t.eq_ignore_ascii_case("websocket"));
    if PHONE_PATHS.contains(&head.path.as_str()) && !upgrade {
        return match head.method.as_str() {
            "GET" => Decision::Page(phone_page(false)),
            "HEAD" => Decision::Page(phone_page(true)),
            _ => {
                let mut r = Response::text(405, "Method Not Allowed");
                r.headers.push(("Allow", "GET, HEAD".into()));
                Decision::Reject(r)
            }
        };
    }
    if head.path != WS_PATH {
        return Decision::Reject(Response::text(404, "Not Found"));
    }
    if head.method != "GET" {
        let mut r = Response::text(405, "Method Not Allowed");
        r.headers.push(("Allow", "GET".into()));
        return Decision::Reject(r);
    }
    let connection = head.tokens("connection").any(|t| t.eq_ignore_ascii_case("upgrade"));
    if !upgrade || !connection {
        let mut r = Response::text(426, "WebSocket upgrade required");
        r.headers.push(("Upgrade", "websocket".into()));
        return Decision::Reject(r);
    }
    if head.header("sec-websocket-version").map(str::trim) != Some("13") {
        let mut r = Response::text(426, "Unsupported WebSocket version");
        r.headers.push(("Sec-WebSocket-Version", "13".into()));
        return Decision::Reject(r);
    }
    let Some(key) = head.header("sec-websocket-key").map(str::trim).filter(|k| !k.is_empty()) else {
        return Decision::Reject(Response::text(400, "Missing Sec-WebSocket-Key"));
    };
    let origin = head.header("origin").map(str::trim);
    if !origin_allowed(origin, &config.web_origins) && !same_origin(origin, head.header("host")) {
        let shown = origin.unwrap_or("null");
        return Decision::Reject(Response::text(
            403,
            format!("WebSocket connection denied: origin '{shown}' not allowed"),
        ));
    }
    let Some(dialect) = Dialect::negotiate(head.tokens("sec-websocket-protocol")) else {
        return Decision::Reject(Response::text(406, "No compatible protocol specified"));
    };
    Decision::Upgrade { accept: tungstenite::handshake::derive_accept_key(key.as_bytes()), dialect }
}

/// `web_origins` check: `*` allows everything including a missing or `null` origin; otherwise the
/// origin must match an entry, where `*` in an entry matches any run of characters.
pub fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a == "*") {
        return true;
    }
    match origin {
        None | Some("null") => false,
        Some(o) => allowed.iter().any(|pattern| glob_match(pattern.as_bytes(), o.as_bytes())),
    }
}

/// The built-in web phone connects from the gateway's own origin: `http(s)://<Host>` is always
/// allowed. (A browser cannot forge both headers; other clients can send anything anyway.)
fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    match (origin, host) {
        (Some(o), Some(h)) => {
            let h = h.trim();
            !h.is_empty() && (o.strip_prefix("http://") == Some(h) || o.strip_prefix("https://") == Some(h))
        }
        _ => false,
    }
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob_match(rest, &text[i..])),
        Some((c, rest)) => text.first().is_some_and(|t| t.eq_ignore_ascii_case(c)) && glob_match(rest, &text[1..]),
    }
}

/// Reason phrases for the statuses this module sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(extra: &str) -> RequestHead {
        let text = format!(
            "GET /webrtcgateway/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        );
        match parse_head(text.as_bytes(), 8192) {
            Head::Complete { head, .. } => head,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prefers_sylkrtc_2() {
        let d = decide(&head("Sec-WebSocket-Protocol: sylkRTC-1, sylkRTC-2\r\n"), &Config::default());
        assert_eq!(d, Decision::Upgrade { accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(), dialect: Dialect::V2 });
        let d = decide(&head("Sec-WebSocket-Protocol: sylkRTC-1\r\n"), &Config::default());
        assert!(matches!(d, Decision::Upgrade { dialect: Dialect::V1, .. }));
    }

    #[test]
    fn rejections() {
        let d = decide(&head("Sec-WebSocket-Protocol: chat\r\n"), &Config::default());
        assert_eq!(d, Decision::Reject(Response::text(406, "No compatible protocol specified")));
        let cfg = Config { web_origins: vec!["https://*.example.com".into()], ..Config::default() };
        let d = decide(&head("Origin: https://evil.test\r\nSec-WebSocket-Protocol: sylkRTC-2\r\n"), &cfg);
        assert!(matches!(d, Decision::Reject(Response { status: 403, .. })));
        let d = decide(&head("Origin: https://app.example.com\r\nSec-WebSocket-Protocol: sylkRTC-2\r\n"), &cfg);
        assert!(matches!(d, Decision::Upgrade { .. }));
        let d = decide(&head("Sec-WebSocket-Protocol: sylkRTC-2\r\n"), &cfg);
        assert!(matches!(d, Decision::Reject(Response { status: 403, .. })), "no origin with a list");
        // The gateway's own page (Host is `x` in these requests) is same-origin.
        let d = decide(&head("Origin: http://x\r\nSec-WebSocket-Protocol: sylkRTC-2\r\n"), &cfg);
        assert!(matches!(d, Decision::Upgrade { .. }), "same origin");
    }

    fn plain(request: &str) -> RequestHead {
        match parse_head(request.as_bytes(), 8192) {
            Head::Complete { head, .. } => head,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn serves_the_phone() {
        let cfg = Config::default();
        for path in ["/", "/index.html", "/?autorun=1"] {
            let d = decide(&plain(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")), &cfg);
            let Decision::Page(r) = d else { panic!("{path}: {d:?}") };
            assert_eq!((r.status, r.content_type, r.head_only), (200, "text/html; charset=utf-8", false));
            assert_eq!(r.body, crate::web::PHONE_HTML);
            let bytes = String::from_utf8(r.to_bytes()).unwrap();
            let (head, body) = bytes.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"), "{head}");
            assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", crate::web::PHONE_HTML.len())), "{head}");
            assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
            assert!(head.contains("\r\nCache-Control: no-cache"), "{head}");
            assert!(head.contains("\r\nContent-Security-Policy: default-src 'self'; "), "{head}");
            assert!(head.contains("connect-src 'self' ws: wss:"), "{head}");
            assert_eq!(body, crate::web::PHONE_HTML);
        }
        // HEAD: the same headers, no body.
        let Decision::Page(r) = decide(&plain("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"), &cfg) else { panic!() };
        let bytes = String::from_utf8(r.to_bytes()).unwrap();
        assert!(bytes.ends_with("\r\n\r\n") && bytes.contains(&format!("Content-Length: {}", r.body.len())));
        assert!(bytes.contains("Content-Type: text/html; charset=utf-8"), "{bytes}");
        // Other methods on the page, other paths, and an upgrade aimed at `/`.
        let d = decide(&plain("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"), &cfg);
        assert!(matches!(d, Decision::Reject(Response { status: 405, .. })), "{d:?}");
        let d = decide(&plain("GET /phone.html HTTP/1.1\r\nHost: x\r\n\r\n"), &cfg);
        assert_eq!(d, Decision::Reject(Response::text(404, "Not Found")));
        let d = decide(&plain("GET /index.html/ HTTP/1.1\r\nHost: x\r\n\r\n"), &cfg);
        assert_eq!(d, Decision::Reject(Response::text(404, "Not Found")));
        let upgrade = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                       Sec-WebSocket-Protocol: sylkRTC-2\r\n\r\n";
        assert_eq!(decide(&plain(upgrade), &cfg), Decision::Reject(Response::text(404, "Not Found")));
        // A plain GET on the WebSocket path still asks for the upgrade.
        let d = decide(&plain("GET /webrtcgateway/ws HTTP/1.1\r\nHost: x\r\n\r\n"), &cfg);
        assert!(matches!(d, Decision::Reject(Response { status: 426, .. })), "{d:?}");
    }

    #[test]
    fn head_limits() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n", 8192), Head::Partial);
        assert_eq!(parse_head(&[b'a'; 100], 50), Head::TooLarge);
        assert_eq!(parse_head(b"\x16\x03\x01\x02\x00\x01", 8192), Head::Malformed);
    }
}
