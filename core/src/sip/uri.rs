//! URIs in SIP: `sip:` and `sips:` (RFC 3261 §19.1, grammar §25.1), `tel:` (RFC 3966), and any
//! other scheme kept opaque; hosts with IPv6 references (RFC 5118); URI comparison (§19.1.4).
//!
//! # Representation
//! User, password, URI parameters and URI headers are stored **as written**, still %-escaped,
//! so printing a parsed URI gives back its text and nothing is lost when an escape decodes to a
//! byte that is not UTF-8 (RFC 4475 `escnull`). [`unescape`] decodes; [`SipUri::equivalent`]
//! compares decoded values. Code that builds a URI from arbitrary text escapes it with
//! [`escape_user`].
//!
//! IPv6 hosts must be in brackets (`sip:[2001:db8::10]:5070`); `sip:[2001:db8::10:5070]` is an
//! address ending in `:5070` with no port (RFC 5118 §4.3). The RFC 3261 ABNF accident
//! `[2001:db8:::192.0.2.1]` (three colons before an embedded IPv4 address) is tolerated and
//! read as `2001:db8::192.0.2.1`, as RFC 5118 §4.10 requires ("an implementation must tolerate
//! both of the above constructs"); `:::` anywhere else is an error.

use super::lex::{is_token, ParseError};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Ordered `name[=value]` parameters, of a URI or of a header value. Names compare
/// case-insensitively. In header parameters a quoted value is stored unquoted and unescaped;
/// [`fmt::Display`] quotes it again when it is not a token or a host. URI parameters are stored
/// as written (still %-escaped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Params(Vec::new())
    }

    /// `None` if `name` is absent, `Some(None)` if present without a value, `Some(Some(v))`
    /// with one. The first occurrence wins.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref())
    }

    /// The value of `name`, if present with a value.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).flatten()
    }

    /// Whether `name` is present, with or without a value.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a parameter (no check for duplicates).
    pub fn push(&mut self, name: &str, value: Option<&str>) {
        self.0.push((name.to_string(), value.map(str::to_string)));
    }

    /// Sets `name`: replaces the first occurrence in place (removing any later ones), or appends.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        match self.0.iter().position(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(i) => {
                self.0[i].1 = value.map(str::to_string);
                let mut seen = 0;
                self.0.retain(|(n, _)| {
                    let same = n.eq_ignore_ascii_case(name);
                    seen += usize::from(same);
                    !same || seen == 1
                });
            }
            None => self.push(name, value),
        }
    }

    /// Removes every occurrence of `name`; returns whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.0.len() != before
    }

    /// The parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Header-parameter form: `;name` or `;name=value`, the value quoted (with `\` before `"` and
/// `\`) unless it is a token or a host. CR and LF, which no quoted string can carry, print as SP.
impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in &self.0 {
            write!(f, ";{name}")?;
            if let Some(v) = value {
                f.write_str("=")?;
                if is_bare_param_value(v) {
                    f.write_str(v)?;
                } else {
                    write_quoted(f, v)?;
                }
            }
        }
        Ok(())
    }
}

/// Whether a header-parameter value can be printed without quotes: a token, or a host (IPv4,
/// bracketed or bare IPv6, domain — all token characters plus `:[]`).
fn is_bare_param_value(v: &str) -> bool {
    if v.is_empty() {
        return false;
    }
    if v.bytes().all(is_token) {
        return true;
    }
    let inner = v.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(v);
    inner.parse::<Ipv6Addr>().is_ok()
}

/// Writes `s` as a quoted string (RFC 3261 §25.1 `quoted-string`).
pub(crate) fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            '\r' | '\n' => f.write_char(' ')?,
            c if (c as u32) < 0x20 || c == '\x7f' => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// A host: a domain name, an IPv4 address or an IPv6 address (RFC 3261 §25.1 `host`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name, as written.
    Domain(String),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address (written in brackets in URIs and Via).
    V6(Ipv6Addr),
}

impl Host {
    /// The address, if the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Domain(_) => None,
            Host::V4(a) => Some(IpAddr::V4(*a)),
            Host::V6(a) => Some(IpAddr::V6(*a)),
        }
    }

    /// Parses a host as it appears in a URI or a Via `sent-by`: IPv6 only in brackets.
    pub fn parse(s: &str) -> Result<Host, ParseError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(ParseError::Invalid("IPv6 reference"))?;
            return parse_ipv6(inner).map(Host::V6);
        }
        if s.is_empty() {
            return Err(ParseError::Invalid("host"));
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            // All digits and dots: it must be an IPv4 address (a toplabel starts with a letter).
            return s.parse::<Ipv4Addr>().map(Host::V4).map_err(|_| ParseError::Invalid("IPv4 address"));
        }
        let ok = s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            && !s.starts_with('.')
            && !s.contains("..");
        if ok {
            Ok(Host::Domain(s.to_string()))
        } else {
            Err(ParseError::Invalid("host"))
        }
    }

    /// Case-insensitive comparison of domains (RFC 3261 §19.1.4), address comparison otherwise.
    pub fn equivalent(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Domain(a), Host::Domain(b)) => a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.')),
            (a, b) => a == b,
        }
    }
}

impl FromStr for Host {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Host::parse(s)
    }
}

/// IPv6 in brackets.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// An IPv6 address as inside `[]`, tolerating RFC 5118 §4.10's `hexpart ":::" IPv4address`.
pub(crate) fn parse_ipv6(s: &str) -> Result<Ipv6Addr, ParseError> {
    if let Ok(a) = s.parse::<Ipv6Addr>() {
        return Ok(a);
    }
    // Only `:::` directly before a dotted IPv4 address that ends the reference, and only once.
    if let Some(i) = s.find(":::") {
        let tail = &s[i + 3..];
        if !s[i + 1..].contains(":::") && tail.parse::<Ipv4Addr>().is_ok() {
            let fixed = format!("{}::{}", &s[..i], tail);
            if let Ok(a) = fixed.parse::<Ipv6Addr>() {
                return Ok(a);
            }
        }
    }
    Err(ParseError::Invalid("IPv6 address"))
}

/// A `sip:` or `sips:` URI (RFC 3261 §19.1.1). Text fields are as written, %-escapes included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:`.
    pub secure: bool,
    /// The user part (may contain `;`, `?`, `/`, escapes, … RFC 4475 `semiuri`, `intmeth`).
    pub user: Option<String>,
    /// The password after `user:` (deprecated, but parsed).
    pub password: Option<String>,
    /// The host.
    pub host: Host,
    /// The port, if written.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp;lr`), as written.
    pub params: Params,
    /// URI headers (`?Replaces=…&x=y`), as written.
    pub headers: Vec<(String, String)>,
}

impl SipUri {
    /// `sip:host` with nothing else.
    pub fn new(host: Host) -> Self {
        SipUri {
            secure: false,
            user: None,
            password: None,
            host,
            port: None,
            params: Params::new(),
            headers: Vec::new(),
        }
    }

    /// The `transport` parameter.
    pub fn transport(&self) -> Option<&str> {
        self.params.value("transport")
    }

    /// Whether the `lr` parameter (loose routing, §16.12.1) is present, with or without a value
    /// (some proxies write `lr=on`).
    pub fn lr(&self) -> bool {
        self.params.contains("lr")
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&str> {
        self.params.value("maddr")
    }

    /// The user part %-decoded.
    pub fn user_unescaped(&self) -> Option<Vec<u8>> {
        self.user.as_deref().map(unescape)
    }

    /// URI equivalence (RFC 3261 §19.1.4): same scheme; user and password equal after
    /// %-decoding (case-sensitive); hosts equal ignoring case; ports both absent or equal;
    /// `user`, `ttl`, `method`, `maddr` and `transport` parameters equal if either URI has them;
    /// other parameters equal where both have them; headers all present in both and equal.
    pub fn equivalent(&self, other: &SipUri) -> bool {
        let opt_eq = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => unescape(a) == unescape(b),
            _ => false,
        };
        if self.secure != other.secure
            || !opt_eq(&self.user, &other.user)
            || !opt_eq(&self.password, &other.password)
            || !self.host.equivalent(&other.host)
            || self.port != other.port
        {
            return false;
        }
        // Maps keep this O(n log n) however many parameters an adversary writes.
        let params = |u: &SipUri| {
            let mut m: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for (name, value) in u.params.iter() {
                let value = unescape(value.unwrap_or("")).to_ascii_lowercase();
                m.entry(String::from_utf8_lossy(&unescape(name)).to_ascii_lowercase()).or_insert(value);
            }
            m
        };
        let (mine, theirs) = (params(self), params(other));
        for name in ["user", "ttl", "method", "maddr", "transport"] {
            if mine.get(name) != theirs.get(name) {
                return false;
            }
        }
        if mine.iter().any(|(name, value)| theirs.get(name).is_some_and(|v| v != value)) {
            return false;
        }
        let headers = |u: &SipUri| {
            let mut v: Vec<(Vec<u8>, Vec<u8>)> =
                u.headers.iter().map(|(n, v)| (unescape(n).to_ascii_lowercase(), unescape(v))).collect();
            v.sort();
            v.dedup();
            v
        };
        headers(self) == headers(other)
    }

    /// Parses what follows `sip:` / `sips:`.
    fn parse_rest(secure: bool, rest: &str) -> Result<SipUri, ParseError> {
        let (userinfo, hostpart) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.find(':') {
                    Some(c) => (&ui[..c], Some(&ui[c + 1..])),
                    None => (ui, None),
                };
                if u.is_empty() || !u.bytes().all(is_user_char) {
                    return Err(ParseError::Invalid("URI user"));
                }
                if let Some(p) = p {
                    if !p.bytes().all(is_password_char) {
                        return Err(ParseError::Invalid("URI password"));
                    }
                }
                (Some(u.to_string()), p.map(str::to_string))
            }
        };
        let (hostport, after) = match hostpart.find([';', '?']) {
            Some(i) => (&hostpart[..i], &hostpart[i..]),
            None => (hostpart, ""),
        };
        let (host, port) = split_hostport(hostport)?;
        let (params_text, headers_text) = match after.find('?') {
            Some(i) => (&after[..i], Some(&after[i + 1..])),
            None => (after, None),
        };
        let mut params = Params::new();
        if let Some(p) = params_text.strip_prefix(';') {
            for item in p.split(';') {
                let (name, value) = match item.find('=') {
                    Some(e) => (&item[..e], Some(&item[e + 1..])),
                    None => (item, None),
                };
                if name.is_empty() || !name.bytes().all(is_param_char) {
                    return Err(ParseError::Invalid("URI parameter"));
                }
                if let Some(v) = value {
                    if !v.bytes().all(is_param_char) {
                        return Err(ParseError::Invalid("URI parameter"));
                    }
                }
                params.push(name, value);
            }
        }
        let mut headers = Vec::new();
        if let Some(h) = headers_text {
            for item in h.split('&') {
                let (name, value) = match item.find('=') {
                    Some(e) => (&item[..e], &item[e + 1..]),
                    None => (item, ""),
                };
                if name.is_empty() || !name.bytes().all(is_hnv_char) || !value.bytes().all(is_hnv_char) {
                    return Err(ParseError::Invalid("URI header"));
                }
                headers.push((name.to_string(), value.to_string()));
            }
        }
        Ok(SipUri { secure, user, password, host, port, params, headers })
    }
}

/// `host [":" port]`, IPv6 in brackets.
fn split_hostport(s: &str) -> Result<(Host, Option<u16>), ParseError> {
    let (host, port) = if s.starts_with('[') {
        let close = s.find(']').ok_or(ParseError::Invalid("IPv6 reference"))?;
        let after = &s[close + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(ParseError::Invalid("port"))?),
        };
        (&s[..=close], port)
    } else {
        match s.find(':') {
            Some(c) => (&s[..c], Some(&s[c + 1..])),
            None => (s, None),
        }
    };
    let host = Host::parse(host)?;
    let port = match port {
        None => None,
        Some(p) => {
            let digits_ok = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
            Some(p.parse::<u16>().ok().filter(|_| digits_ok).ok_or(ParseError::Invalid("port"))?)
        }
    };
    Ok((host, port))
}

/// `scheme:user:password@host:port;params?headers`.
impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(pw) = &self.password {
                write!(f, ":{pw}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        for (name, value) in &self.params.0 {
            write!(f, ";{name}")?;
            if let Some(v) = value {
                write!(f, "={v}")?;
            }
        }
        for (i, (name, value)) in self.headers.iter().enumerate() {
            write!(f, "{}{name}={value}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

/// A `tel:` URI (RFC 3966): the number as written and its parameters (as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    /// `+1-201-555-0123` or a local number such as `7042`.
    pub number: String,
    /// `;phone-context=…`, `;ext=…`, ….
    pub params: Params,
}

impl TelUri {
    /// A global number starts with `+`.
    pub fn is_global(&self) -> bool {
        self.number.starts_with('+')
    }

    /// The number without visual separators (`-`, `.`, `(`, `)`).
    pub fn digits(&self) -> String {
        self.number.chars().filter(|c| !matches!(c, '-' | '.' | '(' | ')')).collect()
    }

    /// RFC 3966 §4: numbers equal without visual separators (case-insensitively), same
    /// parameters in any order.
    pub fn equivalent(&self, other: &TelUri) -> bool {
        let norm = |p: &Params| {
            let mut v: Vec<(String, Option<String>)> = p
                .iter()
                .map(|(n, v)| {
                    (n.to_ascii_lowercase(), v.map(|v| String::from_utf8_lossy(&unescape(v)).to_ascii_lowercase()))
                })
                .collect();
            v.sort();
            v
        };
        self.digits().eq_ignore_ascii_case(&other.digits()) && norm(&self.params) == norm(&other.params)
    }

    fn parse_rest(rest: &str) -> Result<TelUri, ParseError> {
        let (number, params_text) = match rest.find(';') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let number_ok = number.bytes().any(|b| b.is_ascii_hexdigit() || b == b'*' || b == b'#')
            && number.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_hexdigit() || matches!(b, b'*' | b'#' | b'-' | b'.' | b'(' | b')') || (b == b'+' && i == 0)
            });
        if !number_ok {
            return Err(ParseError::Invalid("tel number"));
        }
        let mut params = Params::new();
        if let Some(p) = params_text {
            for item in p.split(';') {
                let (name, value) = match item.find('=') {
                    Some(e) => (&item[..e], Some(&item[e + 1..])),
                    None => (item, None),
                };
                if name.is_empty()
                    || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    || !value.unwrap_or("").bytes().all(is_param_char)
                {
                    return Err(ParseError::Invalid("tel parameter"));
                }
                params.push(name, value);
            }
        }
        Ok(TelUri { number: number.to_string(), params })
    }
}

impl FromStr for TelUri {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<Uri>()? {
            Uri::Tel(u) => Ok(u),
            _ => Err(ParseError::Invalid("not a tel URI")),
        }
    }
}

impl fmt::Display for TelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tel:{}", self.number)?;
        for (name, value) in &self.params.0 {
            write!(f, ";{name}")?;
            if let Some(v) = value {
                write!(f, "={v}")?;
            }
        }
        Ok(())
    }
}

/// Any URI that can appear in SIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// `tel:`.
    Tel(TelUri),
    /// Any other scheme (`mailto:`, `urn:`, `http:`, …), kept opaque. As a Request-URI it gets
    /// 416 (RFC 3261 §8.2.2.1).
    Other {
        /// The scheme as written.
        scheme: String,
        /// Everything after the first `:`.
        rest: String,
    },
}

impl Uri {
    /// The scheme, lower-case for the known ones.
    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other { scheme, .. } => scheme,
        }
    }

    /// The SIP URI, if it is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// URI equivalence: [`SipUri::equivalent`], [`TelUri::equivalent`], or for other schemes a
    /// case-insensitive scheme and an identical rest. URIs of different schemes never match.
    pub fn equivalent(&self, other: &Uri) -> bool {
        match (self, other) {
            (Uri::Sip(a), Uri::Sip(b)) => a.equivalent(b),
            (Uri::Tel(a), Uri::Tel(b)) => a.equivalent(b),
            (Uri::Other { scheme: s1, rest: r1 }, Uri::Other { scheme: s2, rest: r2 }) => {
                s1.eq_ignore_ascii_case(s2) && r1 == r2
            }
            _ => false,
        }
    }
}

impl FromStr for Uri {
    type Err = ParseError;

    /// Parses a whole URI; no surrounding whitespace or `<>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let colon = s.find(':').ok_or(ParseError::Invalid("URI scheme"))?;
        let (scheme, rest) = (&s[..colon], &s[colon + 1..]);
        let scheme_ok = scheme.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(ParseError::Invalid("URI scheme"));
        }
        if rest.is_empty() || rest.bytes().any(|b| b <= b' ' || matches!(b, 0x7f | b'<' | b'>' | b'"')) {
            return Err(ParseError::Invalid("URI"));
        }
        if scheme.eq_ignore_ascii_case("sip") {
            SipUri::parse_rest(false, rest).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("sips") {
            SipUri::parse_rest(true, rest).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            TelUri::parse_rest(rest).map(Uri::Tel)
        } else {
            Ok(Uri::Other { scheme: scheme.to_string(), rest: rest.to_string() })
        }
    }
}

impl FromStr for SipUri {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<Uri>()? {
            Uri::Sip(u) => Ok(u),
            _ => Err(ParseError::Invalid("not a SIP URI")),
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Tel(u) => u.fmt(f),
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

impl From<SipUri> for Uri {
    fn from(u: SipUri) -> Self {
        Uri::Sip(u)
    }
}

/// Decodes `%HH` escapes; a `%` not followed by two hex digits stays as it is.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex(b: &u8) -> Option<u8> {
    char::from(*b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Escapes `s` for the user part of a SIP URI: everything but unreserved and user-unreserved
/// characters becomes `%HH` (RFC 3261 §25.1 `user`).
pub fn escape_user(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes `s` for a URI parameter name or value: everything but `paramchar` (unreserved and
/// `[]/:&+$`, RFC 3261 §25.1) becomes `%HH`, `%` included, so [`unescape`] gives `s` back and
/// no value can end the parameter, the URI or the header.
pub fn escape_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')')
}

fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'%' | b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'%' | b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'%' | b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

fn is_hnv_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'%' | b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn full_sip_uri() {
        let u = sip("sips:alice:secret@atlanta.example.com:5061;transport=tls;lr?subject=project%20x&priority=urgent");
        assert!(u.secure);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Host::Domain("atlanta.example.com".into()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some("tls"));
        assert!(u.lr());
        assert_eq!(u.headers, vec![("subject".into(), "project%20x".into()), ("priority".into(), "urgent".into())]);
        assert_eq!(u.to_string().parse::<SipUri>().unwrap(), u);
    }

    #[test]
    fn semicolon_in_user_part() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(u.host, Host::Domain("example.com".into()));
        assert!(u.params.is_empty());
    }

    #[test]
    fn ipv6_hosts() {
        let u = sip("sip:[2001:db8::10]:5070");
        assert_eq!(u.host, Host::V6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port, Some(5070));
        let u = sip("sip:[2001:db8::10:5070]");
        assert_eq!(u.host, Host::V6("2001:db8::10:5070".parse().unwrap()));
        assert_eq!(u.port, None);
        assert!("sip:2001:db8::10".parse::<Uri>().is_err());
        let u = sip("sip:user@[::ffff:192.0.2.10]");
        assert_eq!(u.host, Host::V6("::ffff:192.0.2.10".parse().unwrap()));
        assert_eq!(u.to_string(), "sip:user@[::ffff:192.0.2.10]");
        // RFC 5118 §4.10: tolerated, same address as the correct form.
        assert_eq!(sip("sip:[2001:db8:::192.0.2.1]").host, sip("sip:[2001:db8::192.0.2.1]").host);
        assert!("sip:[2001:db8:::10]".parse::<Uri>().is_err());
        assert!("sip:[2001:db8::1:::192.0.2.1]".parse::<Uri>().is_err());
    }

    #[test]
    fn bad_uris() {
        for s in [
            "sip:",
            "sip:@host",
            "sip:host:",
            "sip:host:99999",
            "sip:host:5060x",
            "sip:host;",
            "sip:a b",
            "sip:h;x=<",
            "1sip:x",
            ":x",
            "sip:[::1",
            "sip:300.1.1.1",
        ] {
            assert!(s.parse::<Uri>().is_err(), "{s}");
        }
    }

    #[test]
    fn tel_and_other() {
        let u: Uri = "tel:+1-201-555-0123;phone-context=example.com".parse().unwrap();
        let Uri::Tel(t) = &u else { panic!() };
        assert!(t.is_global());
        assert_eq!(t.digits(), "+12015550123");
        assert_eq!(t.params.value("phone-context"), Some("example.com"));
        assert!(u.equivalent(&"tel:+12015550123;PHONE-CONTEXT=Example.com".parse().unwrap()));
        assert_eq!(u.to_string(), "tel:+1-201-555-0123;phone-context=example.com");
        let o: Uri = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6".parse().unwrap();
        assert_eq!(o.scheme(), "urn");
        assert_eq!(o.to_string(), "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6");
    }

    #[test]
    fn equivalence_rfc3261_19_1_4() {
        let eq = |a: &str, b: &str| sip(a).equivalent(&sip(b));
        // The RFC's equal examples.
        assert!(eq("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"));
        assert!(eq("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"));
        assert!(eq("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"));
        assert!(eq(
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"
        ));
        assert!(eq(
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x"
        ));
        // And its unequal ones.
        assert!(!eq("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"));
        assert!(!eq("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"));
        assert!(!eq("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"));
        assert!(!eq("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"));
        assert!(!eq("sip:a@h", "sips:a@h"));
    }

    #[test]
    fn params_api_and_quoting() {
        let mut p = Params::new();
        p.push("expires", Some("300"));
        p.push("+sip.instance", Some("<urn:uuid:1>"));
        p.push("received", Some("sip:192.0.2.1:5060"));
        p.push("lr", None);
        p.push("r", Some("[2001:db8::1]"));
        p.push("q", Some("say \"hi\"\\"));
        assert_eq!(
            p.to_string(),
            r#";expires=300;+sip.instance="<urn:uuid:1>";received="sip:192.0.2.1:5060";lr;r=[2001:db8::1];q="say \"hi\"\\""#
        );
        assert_eq!(p.get("EXPIRES"), Some(Some("300")));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("nope"), None);
        p.set("expires", Some("60"));
        p.push("Expires", Some("1"));
        p.set("expires", Some("61"));
        assert_eq!(p.iter().filter(|(n, _)| n.eq_ignore_ascii_case("expires")).count(), 1);
        assert!(p.remove("lr"));
        assert!(!p.contains("lr"));
    }

    #[test]
    fn escaping() {
        for v in ["plain-token", "a;b=c>d, <sip:x@y>", "%41 \"q\" ?h=v&x\r\n", "ü"] {
            let e = escape_param(v);
            assert!(e.bytes().all(is_param_char), "{e}");
            assert_eq!(unescape(&e), v.as_bytes());
        }
        assert_eq!(unescape("null-%00-null"), b"null-\0-null");
        assert_eq!(unescape("100%"), b"100%");
        assert_eq!(unescape("%zz%4"), b"%zz%4");
        assert_eq!(escape_user("a b@c"), "a%20b%40c");
    }
}
