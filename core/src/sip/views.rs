//! Typed views of the header values the stack reads: Via, name-addr lists (From, To, Contact,
//! Route), Contact lists with `*`, and CSeq. Each parses on demand from the raw value.

use super::lex::{is_lws, is_token, lossy, parse_u32, split_list, trim_wsp, Cursor, ParseError};
use super::names::Method;
use super::uri::{write_quoted, Host, Params, Uri};
use std::fmt;

/// One Via value (RFC 3261 §20.42): `SIP/2.0/UDP host:port;params`. LWS is allowed around `/`,
/// `:`, `;` and `=` (RFC 4475 `wsinv`); the transport is any token (`UNKNOWN` in `transports`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `SIP/2.0`, whitespace removed.
    pub protocol: String,
    /// `UDP`, `TCP`, `TLS`, `WSS`, … as written.
    pub transport: String,
    /// The sent-by host.
    pub host: Host,
    /// The sent-by port.
    pub port: Option<u16>,
    /// `branch`, `received`, `rport`, ….
    pub params: Params,
}

impl Via {
    /// Parses one Via value (no commas).
    pub fn parse(v: &[u8]) -> Result<Via, ParseError> {
        let mut c = Cursor::new(v);
        c.skip_lws();
        let name = c.take_while(is_token);
        c.skip_lws();
        let slash1 = c.eat(b'/');
        c.skip_lws();
        let version = c.take_while(is_token);
        c.skip_lws();
        let slash2 = c.eat(b'/');
        c.skip_lws();
        let transport = c.take_while(is_token);
        if name.is_empty() || version.is_empty() || transport.is_empty() || !slash1 || !slash2 {
            return Err(ParseError::Invalid("Via protocol"));
        }
        if !c.skip_lws() {
            return Err(ParseError::Invalid("Via"));
        }
        let host = if c.peek() == Some(b'[') {
            let h = c.take_while(|b| b != b']');
            if !c.eat(b']') {
                return Err(ParseError::Invalid("Via host"));
            }
            let mut s = String::from_utf8_lossy(h).into_owned();
            s.push(']');
            s
        } else {
            String::from_utf8_lossy(c.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
                .into_owned()
        };
        let host = Host::parse(&host)?;
        c.skip_lws();
        let port = if c.eat(b':') {
            c.skip_lws();
            let digits = c.take_while(|b| b.is_ascii_digit());
            let p = parse_u32(digits).and_then(|p| u16::try_from(p).ok()).ok_or(ParseError::Invalid("Via port"))?;
            Some(p)
        } else {
            None
        };
        let params = c.header_params()?;
        let protocol = format!("{}/{}", String::from_utf8_lossy(name), String::from_utf8_lossy(version));
        Ok(Via { protocol, transport: String::from_utf8_lossy(transport).into_owned(), host, port, params })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }

    /// The `received` parameter as written (an IPv6 address may come with or without brackets,
    /// RFC 5118 §4.5; see [`Via::received_ip`]).
    pub fn received(&self) -> Option<&str> {
        self.params.value("received")
    }

    /// The `received` parameter as an address, brackets optional.
    pub fn received_ip(&self) -> Option<std::net::IpAddr> {
        let r = self.received()?;
        let r = r.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(r);
        r.parse().ok().or_else(|| super::uri::parse_ipv6(r).ok().map(std::net::IpAddr::V6))
    }

    /// `rport` (RFC 3581): `None` if absent, `Some(None)` without a value (or with one that is not
    /// a port), `Some(Some(port))` with one.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params.get("rport").map(|v| v.and_then(|p| p.parse().ok()))
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.protocol, self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// A `name-addr` or `addr-spec` with header parameters (RFC 3261 §20.10, §25.1): the value of
/// From, To, Contact, Route, Record-Route, Refer-To, ….
///
/// Without `<>`, parameters after the URI belong to the header, not the URI (§20.10; RFC 4475
/// `cparam01`). A quoted display name is unescaped; an unquoted one is its tokens joined by
/// single spaces. `Display` always writes `"display" <uri>;params`, quoting and escaping the
/// display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name.
    pub display_name: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters (`tag`, `expires`, `q`, `+sip.instance`, …).
    pub params: Params,
}

impl NameAddr {
    /// A bare URI.
    pub fn new(uri: Uri) -> Self {
        NameAddr { display_name: None, uri, params: Params::new() }
    }

    /// Parses one value (no list).
    pub fn parse(v: &[u8]) -> Result<NameAddr, ParseError> {
        let mut c = Cursor::new(v);
        c.skip_lws();
        let mut display_name = None;
        let angle = if c.peek() == Some(b'"') {
            display_name = Some(lossy(c.quoted()?));
            c.skip_lws();
            if c.peek() != Some(b'<') {
                return Err(ParseError::Invalid("name-addr"));
            }
            true
        } else {
            // Tokens and spaces up to `<` are a display name; anything else is an addr-spec.
            let start = c.pos;
            let name = c.take_while(|b| is_token(b) || is_lws(b));
            if c.peek() == Some(b'<') {
                let words: Vec<&[u8]> = name.split(|&b| is_lws(b)).filter(|w| !w.is_empty()).collect();
                if !words.is_empty() {
                    display_name = Some(String::from_utf8_lossy(&words.join(&b' ')).into_owned());
                }
                true
            } else {
                c.pos = start;
                false
            }
        };
        let uri_text = if angle {
            c.eat(b'<');
            let inner = c.take_while(|b| b != b'>');
            if !c.eat(b'>') {
                return Err(ParseError::Invalid("name-addr: missing >"));
            }
            trim_wsp(inner)
        } else {
            c.take_while(|b| b != b';' && !is_lws(b))
        };
        let uri_text = std::str::from_utf8(uri_text).map_err(|_| ParseError::Invalid("URI"))?;
        let uri: Uri = uri_text.parse()?;
        let params = c.header_params()?;
        Ok(NameAddr { display_name, uri, params })
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }

    /// The `expires` parameter of a Contact, if it is a number.
    pub fn expires(&self) -> Option<u32> {
        self.params.value("expires").and_then(|v| parse_u32(v.as_bytes()))
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            write_quoted(f, d)?;
            f.write_str(" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// A comma-separated list of name-addrs (Route, Record-Route, Contact without `*`). Commas
/// inside quoted display names and inside `<>` do not separate.
pub fn name_addr_list(value: &[u8]) -> Result<Vec<NameAddr>, ParseError> {
    split_list(value)?.into_iter().map(NameAddr::parse).collect()
}

/// The value of Contact headers (RFC 3261 §20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactList {
    /// `Contact: *` (REGISTER removing every binding).
    Wildcard,
    /// The bindings, in order (possibly none).
    Bindings(Vec<NameAddr>),
}

/// One Contact header value: `*` or a list of name-addrs.
pub fn contact_list(value: &[u8]) -> Result<ContactList, ParseError> {
    if trim_wsp(value) == b"*" {
        return Ok(ContactList::Wildcard);
    }
    name_addr_list(value).map(ContactList::Bindings)
}

/// CSeq (RFC 3261 §20.16): a sequence number that fits 32 bits and a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number.
    pub seq: u32,
    /// The method.
    pub method: Method,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`; leading zeros allowed, overflow an error.
    pub fn parse(v: &[u8]) -> Result<CSeq, ParseError> {
        let mut c = Cursor::new(v);
        c.skip_lws();
        let seq = parse_u32(c.take_while(|b| b.is_ascii_digit())).ok_or(ParseError::Invalid("CSeq number"))?;
        if !c.skip_lws() {
            return Err(ParseError::Invalid("CSeq"));
        }
        let method = c.take_while(is_token);
        c.skip_lws();
        if method.is_empty() || !c.at_end() {
            return Err(ParseError::Invalid("CSeq method"));
        }
        Ok(CSeq { seq, method: Method::from_token(&String::from_utf8_lossy(method)) })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Header parameters, read by the views (they build [`Params`], which [`super::lex`] does not know).
trait HeaderParams {
    fn header_params(&mut self) -> Result<Params, ParseError>;
}

impl HeaderParams for Cursor<'_> {
    /// Header parameters `*( SEMI generic-param )` up to the end (§7.3.1, §25.1): LWS around `;`
    /// and `=` is allowed, names are tokens, values are tokens, hosts (including IPv6 with or
    /// without brackets) or quoted strings (stored unquoted and unescaped).
    fn header_params(&mut self) -> Result<Params, ParseError> {
        let mut params = Params::default();
        loop {
            self.skip_lws();
            if self.at_end() {
                return Ok(params);
            }
            if !self.eat(b';') {
                return Err(ParseError::Invalid("header parameter"));
            }
            self.skip_lws();
            let name = self.take_while(is_token);
            if name.is_empty() {
                return Err(ParseError::Invalid("header parameter name"));
            }
            let name = String::from_utf8_lossy(name).into_owned();
            self.skip_lws();
            if !self.eat(b'=') {
                params.push(&name, None);
                continue;
            }
            self.skip_lws();
            let value = if self.peek() == Some(b'"') {
                lossy(self.quoted()?)
            } else {
                let v = self.take_while(|b| !is_lws(b) && !matches!(b, b';' | b',' | b'"'));
                String::from_utf8_lossy(v).into_owned()
            };
            params.push(&name, Some(&value));
        }
    }
}
