//! Request methods and header names (RFC 3261 §7.1, §7.3.3, §20): the vocabulary shared by
//! messages, header views and the stack.

use std::fmt;
use std::hash::{Hash, Hasher};

/// A request method (RFC 3261 §7.1 and the extensions the gateway meets). Methods are
/// case-sensitive: `invite` is an unknown method, not INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// RFC 3261.
    Invite,
    /// RFC 3261.
    Ack,
    /// RFC 3261.
    Bye,
    /// RFC 3261.
    Cancel,
    /// RFC 3261.
    Register,
    /// RFC 3261.
    Options,
    /// RFC 6086.
    Info,
    /// RFC 3311.
    Update,
    /// RFC 3262.
    Prack,
    /// RFC 6665.
    Subscribe,
    /// RFC 6665.
    Notify,
    /// RFC 3515.
    Refer,
    /// RFC 3428.
    Message,
    /// RFC 3903.
    Publish,
    /// Any other token, as written.
    Other(String),
}

impl Method {
    /// The method token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }

    /// The method for a token, case-sensitively (RFC 3261 §7.1); anything else is
    /// [`Method::Other`]. No syntax check: the parser checks that the token is a `token`.
    pub fn from_token(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A header field name. Parsing ([`HeaderName::parse`]) is case-insensitive and maps compact
/// forms (RFC 3261 §7.3.3 and the IANA registry); unknown names are kept as written in
/// [`HeaderName::Other`], which compares case-insensitively.
#[derive(Debug, Clone)]
pub enum HeaderName {
    /// `Via`, `v`.
    Via,
    /// `From`, `f`.
    From,
    /// `To`, `t`.
    To,
    /// `Call-ID`, `i`.
    CallId,
    /// `CSeq`.
    CSeq,
    /// `Contact`, `m`.
    Contact,
    /// `Max-Forwards`.
    MaxForwards,
    /// `Content-Length`, `l`.
    ContentLength,
    /// `Content-Type`, `c`.
    ContentType,
    /// `Content-Encoding`, `e`.
    ContentEncoding,
    /// `Expires`.
    Expires,
    /// `Min-Expires`.
    MinExpires,
    /// `Route`.
    Route,
    /// `Record-Route`.
    RecordRoute,
    /// `WWW-Authenticate`.
    WwwAuthenticate,
    /// `Authorization`.
    Authorization,
    /// `Proxy-Authenticate`.
    ProxyAuthenticate,
    /// `Proxy-Authorization`.
    ProxyAuthorization,
    /// `Authentication-Info`.
    AuthenticationInfo,
    /// `User-Agent`.
    UserAgent,
    /// `Server`.
    Server,
    /// `Allow`.
    Allow,
    /// `Supported`, `k`.
    Supported,
    /// `Require`.
    Require,
    /// `Proxy-Require`.
    ProxyRequire,
    /// `Unsupported`.
    Unsupported,
    /// `Accept`.
    Accept,
    /// `Subject`, `s`.
    Subject,
    /// `Event`, `o` (RFC 6665).
    Event,
    /// `Refer-To`, `r` (RFC 3515).
    ReferTo,
    /// `Referred-By`, `b` (RFC 3892).
    ReferredBy,
    /// `Session-Expires`, `x` (RFC 4028).
    SessionExpires,
    /// `Min-SE` (RFC 4028).
    MinSe,
    /// `RSeq` (RFC 3262).
    RSeq,
    /// `RAck` (RFC 3262).
    RAck,
    /// `Date`.
    Date,
    /// `Timestamp`.
    Timestamp,
    /// `Retry-After`.
    RetryAfter,
    /// `Warning`.
    Warning,
    /// Any other name, as written (or the long form of a compact name without a variant:
    /// `u` Allow-Events, `a` Accept-Contact, `j` Reject-Contact, `d` Request-Disposition,
    /// `y` Identity, `n` Identity-Info).
    Other(String),
}

pub(super) const KNOWN: &[(HeaderName, &str)] = &[
    (HeaderName::Via, "Via"),
    (HeaderName::From, "From"),
    (HeaderName::To, "To"),
    (HeaderName::CallId, "Call-ID"),
    (HeaderName::CSeq, "CSeq"),
    (HeaderName::Contact, "Contact"),
    (HeaderName::MaxForwards, "Max-Forwards"),
    (HeaderName::ContentLength, "Content-Length"),
    (HeaderName::ContentType, "Content-Type"),
    (HeaderName::ContentEncoding, "Content-Encoding"),
    (HeaderName::Expires, "Expires"),
    (HeaderName::MinExpires, "Min-Expires"),
    (HeaderName::Route, "Route"),
    (HeaderName::RecordRoute, "Record-Route"),
    (HeaderName::WwwAuthenticate, "WWW-Authenticate"),
    (HeaderName::Authorization, "Authorization"),
    (HeaderName::ProxyAuthenticate, "Proxy-Authenticate"),
    (HeaderName::ProxyAuthorization, "Proxy-Authorization"),
    (HeaderName::AuthenticationInfo, "Authentication-Info"),
    (HeaderName::UserAgent, "User-Agent"),
    (HeaderName::Server, "Server"),
    (HeaderName::Allow, "Allow"),
    (HeaderName::Supported, "Supported"),
    (HeaderName::Require, "Require"),
    (HeaderName::ProxyRequire, "Proxy-Require"),
    (HeaderName::Unsupported, "Unsupported"),
    (HeaderName::Accept, "Accept"),
    (HeaderName::Subject, "Subject"),
    (HeaderName::Event, "Event"),
    (HeaderName::ReferTo, "Refer-To"),
    (HeaderName::ReferredBy, "Referred-By"),
    (HeaderName::SessionExpires, "Session-Expires"),
    (HeaderName::MinSe, "Min-SE"),
    (HeaderName::RSeq, "RSeq"),
    (HeaderName::RAck, "RAck"),
    (HeaderName::Date, "Date"),
    (HeaderName::Timestamp, "Timestamp"),
    (HeaderName::RetryAfter, "Retry-After"),
    (HeaderName::Warning, "Warning"),
];

impl HeaderName {
    /// The name for `s`, case-insensitively, compact forms included.
    pub fn parse(s: &str) -> HeaderName {
        if s.len() == 1 {
            let compact = match s.as_bytes()[0].to_ascii_lowercase() {
                b'i' => Some(HeaderName::CallId),
                b'm' => Some(HeaderName::Contact),
                b'e' => Some(HeaderName::ContentEncoding),
                b'l' => Some(HeaderName::ContentLength),
                b'c' => Some(HeaderName::ContentType),
                b'f' => Some(HeaderName::From),
                b's' => Some(HeaderName::Subject),
                b'k' => Some(HeaderName::Supported),
                b't' => Some(HeaderName::To),
                b'v' => Some(HeaderName::Via),
                b'o' => Some(HeaderName::Event),
                b'r' => Some(HeaderName::ReferTo),
                b'b' => Some(HeaderName::ReferredBy),
                b'x' => Some(HeaderName::SessionExpires),
                b'u' => Some(HeaderName::Other("Allow-Events".into())),
                b'a' => Some(HeaderName::Other("Accept-Contact".into())),
                b'j' => Some(HeaderName::Other("Reject-Contact".into())),
                b'd' => Some(HeaderName::Other("Request-Disposition".into())),
                b'y' => Some(HeaderName::Other("Identity".into())),
                b'n' => Some(HeaderName::Other("Identity-Info".into())),
                _ => None,
            };
            if let Some(name) = compact {
                return name;
            }
        }
        KNOWN
            .iter()
            .find(|(_, long)| long.eq_ignore_ascii_case(s))
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| HeaderName::Other(s.to_string()))
    }

    /// The long canonical spelling (for [`HeaderName::Other`], the name as stored).
    pub fn canonical(&self) -> &str {
        match self {
            HeaderName::Other(s) => s,
            known => KNOWN
                .iter()
                .find(|(n, _)| std::mem::discriminant(n) == std::mem::discriminant(known))
                .map_or("", |(_, s)| s),
        }
    }
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl Eq for HeaderName {}

impl Hash for HeaderName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        if let HeaderName::Other(s) = self {
            s.to_ascii_lowercase().hash(state);
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.canonical())
    }
}
