//! The SIP-side SDP (RFC 8866, offer/answer per RFC 3264; media spec §2.3 points 1, 2, 7).
//!
//! - [`SessionDescription::parse`] reads what a plain SIP peer sends: `v o s c t m` lines and the
//!   attributes the gateway acts on (`rtpmap`, `fmtp`, `ptime`, `maxptime`, `rtcp`, `rtcp-mux`,
//!   `rtcp-fb`, direction, `crypto`). Every other line is dropped, so nothing the peer wrote leaks into the
//!   other leg. Never panics; sizes are bounded.
//! - [`LocalSession::write`] generates our offers and answers: plain `RTP/AVP` or `RTP/SAVP`,
//!   rtpmap/fmtp for the given codecs, direction, optional `a=ptime`, `a=rtcp`, `a=rtcp-mux`
//!   (answers only), `a=crypto`, and on video lines the `a=rtcp-fb` and RTX formats negotiated
//!   (`sip_video_fb`) — never ICE, DTLS, fingerprint, mid, msid, ssrc or BUNDLE lines (media spec §2.3 point 1). [`SdpVersioner`] keeps `o=` right across
//!   re-offers (RFC 3264 §8: the version increases exactly when the description changes).
//! - [`intersect`] matches codecs by name, clock rate and channels, keeping the offer's PTs and
//!   order (media spec §1.6, §2.3 point 2); [`answer_direction`] answers directions per
//!   RFC 3264 §6.1.

use super::srtp::CryptoAttribute;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// At most this many m= lines are accepted.
pub const MAX_MEDIA: usize = 16;
/// At most this many formats per m= line are accepted.
pub const MAX_FORMATS: usize = 64;
/// At most this many lines are read (the rest of a longer SDP is an error).
pub const MAX_LINES: usize = 1024;
/// At most this many `a=crypto` lines per m= line are kept.
pub const MAX_CRYPTO: usize = 16;

/// Why an SDP was rejected (answer 488 or 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdpError {
    /// A line is not `<letter>=<value>`, or the first line is not `v=0`.
    Syntax,
    /// No `o=` line, or a malformed one.
    Origin,
    /// A `c=` line whose address is not an IP address.
    Connection,
    /// A malformed `m=` line.
    Media,
    /// More lines, media or formats than the limits above.
    TooLarge,
}

impl SdpError {
    /// A short reason for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SdpError::Syntax => "SDP syntax",
            SdpError::Origin => "bad or missing o= line",
            SdpError::Connection => "bad c= line",
            SdpError::Media => "bad m= line",
            SdpError::TooLarge => "SDP too large",
        }
    }
}

impl std::fmt::Display for SdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Media direction (RFC 3264 §5.1, §6.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    #[default]
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// From "does this side send" and "does this side receive".
    pub fn from_flags(sends: bool, receives: bool) -> Self {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// From an attribute name.
    pub fn from_attr(s: &str) -> Option<Self> {
        [Direction::SendRecv, Direction::SendOnly, Direction::RecvOnly, Direction::Inactive]
            .into_iter()
            .find(|d| d.as_str() == s)
    }

    /// True for sendrecv and sendonly.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// True for sendrecv and recvonly.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The same stream seen from the other end (sendonly ↔ recvonly).
    pub fn reversed(self) -> Self {
        Direction::from_flags(self.receives(), self.sends())
    }
}

/// RFC 3264 §6.1: the answer's direction for an `offered` one, given what we would like
/// (`wanted`, from our side). We send only if the offerer receives and we want to send; we
/// receive only if the offerer sends and we want to receive: sendonly → recvonly (or inactive),
/// recvonly → sendonly (or inactive), inactive → inactive, sendrecv → `wanted`.
pub fn answer_direction(offered: Direction, wanted: Direction) -> Direction {
    Direction::from_flags(offered.receives() && wanted.sends(), offered.sends() && wanted.receives())
}

/// The media type of an m= line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaKind {
    /// `audio`.
    Audio,
    /// `video`.
    Video,
    /// Anything else (`application`, `image`, …): only ever rejected.
    Other(String),
}

impl MediaKind {
    fn parse(s: &str) -> Self {
        match s {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            other => MediaKind::Other(other.to_string()),
        }
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Other(s) => s,
        }
    }
}

/// The transport protocol of an m= line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proto {
    /// `RTP/AVP` (RFC 3551).
    RtpAvp,
    /// `RTP/SAVP` (RFC 3711): SDES-SRTP with `a=crypto`.
    RtpSavp,
    /// `RTP/AVPF` (RFC 4585).
    RtpAvpf,
    /// `RTP/SAVPF`.
    RtpSavpf,
    /// Anything else (`UDP/TLS/RTP/SAVPF`, `udptl`, …).
    Other(String),
}

impl Proto {
    fn parse(s: &str) -> Self {
        match s {
            "RTP/AVP" => Proto::RtpAvp,
            "RTP/SAVP" => Proto::RtpSavp,
            "RTP/AVPF" => Proto::RtpAvpf,
            "RTP/SAVPF" => Proto::RtpSavpf,
            other => Proto::Other(other.to_string()),
        }
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        match self {
            Proto::RtpAvp => "RTP/AVP",
            Proto::RtpSavp => "RTP/SAVP",
            Proto::RtpAvpf => "RTP/AVPF",
            Proto::RtpSavpf => "RTP/SAVPF",
            Proto::Other(s) => s,
        }
    }

    /// True for the four plain RTP profiles the gateway can speak.
    pub fn is_rtp(&self) -> bool {
        !matches!(self, Proto::Other(_))
    }

    /// True for SAVP and SAVPF (SDES-SRTP).
    pub fn is_secure(&self) -> bool {
        matches!(self, Proto::RtpSavp | Proto::RtpSavpf)
    }
}

/// The `o=` line (RFC 8866 §5.2). Id and version are kept as the digits the peer sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Username (`-` usually).
    pub username: String,
    /// Session id.
    pub session_id: String,
    /// Session version: a changed value means a changed description.
    pub session_version: String,
    /// The address field (may be a name).
    pub address: String,
}

/// `a=rtpmap` (RFC 8866 §6.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpMap {
    /// Payload type.
    pub pt: u8,
    /// Encoding name as written.
    pub name: String,
    /// Clock rate.
    pub clock_rate: u32,
    /// Channels (1 when omitted).
    pub channels: u8,
}

/// `a=rtcp` (RFC 3605).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcpAttr {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, if given.
    pub addr: Option<IpAddr>,
}

/// One m= section as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDescription {
    /// Media type.
    pub kind: MediaKind,
    /// Port; 0 means the stream is rejected or disabled.
    pub port: u16,
    /// The `/count` suffix of the port, if any.
    pub port_count: Option<u16>,
    /// Transport protocol.
    pub proto: Proto,
    /// The format tokens (PTs for RTP protocols), in order.
    pub formats: Vec<String>,
    /// Media-level `c=` address.
    pub connection: Option<IpAddr>,
    /// `a=rtpmap` lines (first per PT).
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp` lines as (PT, parameters) (first per PT; control characters removed, trimmed,
    /// empty ones dropped).
    pub fmtps: Vec<(u8, String)>,
    /// `a=ptime`.
    pub ptime: Option<u32>,
    /// `a=maxptime`.
    pub maxptime: Option<u32>,
    /// `a=rtcp`.
    pub rtcp: Option<RtcpAttr>,
    /// `a=rtcp-mux`.
    pub rtcp_mux: bool,
    /// Media-level direction attribute.
    pub direction: Option<Direction>,
    /// `a=crypto` lines with supported suites, in offer order (others are skipped).
    pub crypto: Vec<CryptoAttribute>,
    /// `a=rtcp-fb` lines (RFC 4585 §4.2) as (format token or `*`, the rest), at most
    /// [`MAX_FORMATS`]; read by `sip_video_fb`.
    pub rtcp_fb: Vec<(String, String)>,
}

impl MediaDescription {
    fn new(kind: MediaKind, port: u16, port_count: Option<u16>, proto: Proto, formats: Vec<String>) -> Self {
        Self {
            kind,
            port,
            port_count,
            proto,
            formats,
            connection: None,
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
            ptime: None,
            maxptime: None,
            rtcp: None,
            rtcp_mux: false,
            direction: None,
            crypto: Vec::new(),
            rtcp_fb: Vec::new(),
        }
    }

    /// True if the port is 0.
    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }

    /// The numeric formats (PTs 0–127) of an RTP m= line, in order.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse::<u8>().ok()).filter(|&pt| pt < 128)
    }

    /// The fmtp parameters of `pt`.
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.fmtps.iter().find(|(p, _)| *p == pt).map(|(_, s)| s.as_str())
    }

    /// The codecs of the m= line, in format order: the rtpmap of each PT, else the RFC 3551
    /// static assignment; dynamic PTs without rtpmap are skipped.
    pub fn codecs(&self) -> Vec<Codec> {
        self.payload_types()
            .filter_map(|pt| {
                let (name, clock_rate, channels) = match self.rtpmaps.iter().find(|r| r.pt == pt) {
                    Some(r) => (r.name.clone(), r.clock_rate, r.channels),
                    None => {
                        let (name, clock) = static_pt(pt)?;
                        (name.to_string(), clock, 1)
                    }
                };
                Some(Codec { pt, name, clock_rate, channels, fmtp: self.fmtp(pt).map(str::to_string) })
            })
            .collect()
    }

    /// The first `a=crypto` whose session parameters we can honour (RFC 4568 §7.1.1: the
    /// answerer picks one offered attribute).
    pub fn usable_crypto(&self) -> Option<&CryptoAttribute> {
        self.crypto.iter().find(|c| c.is_usable())
    }
}

/// RFC 3551 §6 static payload types the gateway may meet.
fn static_pt(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        34 => ("H263", 90000),
        _ => return None,
    })
}

/// A parsed SIP-side session description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDescription {
    /// `o=`.
    pub origin: Origin,
    /// `s=` (empty if absent).
    pub session_name: String,
    /// Session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// Session-level direction attribute.
    pub direction: Option<Direction>,
    /// The m= sections, in order.
    pub media: Vec<MediaDescription>,
}

fn parse_connection(value: &str) -> Result<IpAddr, SdpError> {
    let mut f = value.split_ascii_whitespace();
    if f.next() != Some("IN") {
        return Err(SdpError::Connection);
    }
    let addrtype = f.next().ok_or(SdpError::Connection)?;
    let addr = f.next().ok_or(SdpError::Connection)?;
    // Multicast TTL / count suffixes.
    let addr = addr.split('/').next().unwrap_or_default();
    let ip: IpAddr = addr.parse().map_err(|_| SdpError::Connection)?;
    match (addrtype, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(SdpError::Connection),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

fn parse_media_line(value: &str) -> Result<MediaDescription, SdpError> {
    let mut f = value.split_ascii_whitespace();
    if !value.split_ascii_whitespace().all(is_token) {
        return Err(SdpError::Media);
    }
    let kind = MediaKind::parse(f.next().ok_or(SdpError::Media)?);
    let port_field = f.next().ok_or(SdpError::Media)?;
    let (port, count) = match port_field.split_once('/') {
        Some((p, c)) => (p, Some(c.parse::<u16>().map_err(|_| SdpError::Media)?)),
        None => (port_field, None),
    };
    let port: u16 = port.parse().map_err(|_| SdpError::Media)?;
    let proto = Proto::parse(f.next().ok_or(SdpError::Media)?);
    let mut formats = Vec::new();
    for fmt in f {
        if formats.len() == MAX_FORMATS {
            return Err(SdpError::TooLarge);
        }
        if proto.is_rtp() && fmt.parse::<u8>().map_or(true, |pt| pt > 127) {
            return Err(SdpError::Media);
        }
        formats.push(fmt.to_string());
    }
    Ok(MediaDescription::new(kind, port, count, proto, formats))
}

fn parse_rtpmap(value: &str) -> Option<RtpMap> {
    let (pt, enc) = value.split_once(' ')?;
    let pt: u8 = pt.parse().ok().filter(|&p| p < 128)?;
    let mut parts = enc.trim().split('/');
    let name = parts.next().filter(|n| is_token(n))?.to_string();
    let clock_rate: u32 = parts.next()?.parse().ok().filter(|&c| c > 0)?;
    let channels = match parts.next() {
        Some(c) => c.parse().ok().filter(|&c| c > 0)?,
        None => 1,
    };
    Some(RtpMap { pt, name, clock_rate, channels })
}

fn parse_rtcp(value: &str) -> Option<RtcpAttr> {
    let mut f = value.split_ascii_whitespace();
    let port: u16 = f.next()?.parse().ok()?;
    let addr = match f.next() {
        Some(_) => Some(parse_connection(value.split_once(' ')?.1).ok()?),
        None => None,
    };
    Some(RtcpAttr { port, addr })
}

fn parse_origin(value: &str) -> Result<Origin, SdpError> {
    let f: Vec<&str> = value.split_ascii_whitespace().collect();
    let [username, id, version, "IN", _addrtype, address] = f[..] else { return Err(SdpError::Origin) };
    if [id, version].iter().any(|s| s.is_empty() || s.len() > 24 || !s.bytes().all(|b| b.is_ascii_digit())) {
        return Err(SdpError::Origin);
    }
    Ok(Origin {
        username: username.to_string(),
        session_id: id.to_string(),
        session_version: version.to_string(),
        address: address.to_string(),
    })
}

impl SessionDescription {
    /// Parses an SDP body (RFC 8866 §5). Lines end in CRLF or LF; blank lines are skipped;
    /// unknown line types and attributes are dropped, as are malformed attributes we would not
    /// use (a bad rtpmap just leaves its PT without codec). Invalid UTF-8 is replaced.
    pub fn parse(body: &[u8]) -> Result<Self, SdpError> {
        let text = String::from_utf8_lossy(body);
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).filter(|l| !l.is_empty());
        if lines.next() != Some("v=0") {
            return Err(SdpError::Syntax);
        }
        let mut origin = None;
        let mut session_name = String::new();
        let mut connection = None;
        let mut direction = None;
        let mut media: Vec<MediaDescription> = Vec::new();
        for (n, line) in lines.enumerate() {
            if n >= MAX_LINES {
                return Err(SdpError::TooLarge);
            }
            let bytes = line.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
                return Err(SdpError::Syntax);
            }
            let value = &line[2..];
            match (bytes[0], media.last_mut()) {
                (b'o', None) if origin.is_none() => origin = Some(parse_origin(value)?),
                (b's', None) => session_name = value.to_string(),
                (b'c', None) => connection = Some(parse_connection(value)?),
                (b'c', Some(m)) => m.connection = Some(parse_connection(value)?),
                (b'm', _) => {
                    if origin.is_none() {
                        return Err(SdpError::Origin);
                    }
                    if media.len() == MAX_MEDIA {
                        return Err(SdpError::TooLarge);
                    }
                    media.push(parse_media_line(value)?);
                }
                (b'a', None) => {
                    if let Some(d) = Direction::from_attr(value) {
                        direction = Some(d);
                    }
                }
                (b'a', Some(m)) => media_attribute(m, value),
                _ => {}
            }
        }
        let origin = origin.ok_or(SdpError::Origin)?;
        Ok(Self { origin, session_name, connection, direction, media })
    }

    /// The address of `m`: its own `c=`, else the session's.
    pub fn media_connection(&self, m: &MediaDescription) -> Option<IpAddr> {
        m.connection.or(self.connection)
    }

    /// The declared direction of `m` from the SDP sender's side: media-level attribute, else
    /// session-level, else sendrecv.
    pub fn media_direction(&self, m: &MediaDescription) -> Direction {
        m.direction.or(self.direction).unwrap_or_default()
    }

    /// Like [`media_direction`](Self::media_direction) but folding the RFC 2543 hold: with a
    /// `c=` of 0.0.0.0 or `::` the sender cannot receive, so its receive half is cleared
    /// (sendrecv → sendonly, recvonly → inactive; RFC 3264 §8.4). A rejected stream is inactive.
    pub fn effective_direction(&self, m: &MediaDescription) -> Direction {
        let d = self.media_direction(m);
        if m.is_rejected() {
            Direction::Inactive
        } else if self.media_connection(m).is_some_and(|ip| ip.is_unspecified()) {
            Direction::from_flags(d.sends(), false)
        } else {
            d
        }
    }

    /// Where to send RTP for `m` (before latching), or `None` if rejected or on hold.
    pub fn rtp_addr(&self, m: &MediaDescription) -> Option<SocketAddr> {
        let ip = self.media_connection(m).filter(|ip| !ip.is_unspecified())?;
        (m.port != 0).then(|| SocketAddr::new(ip, m.port))
    }

    /// Where to send RTCP for `m`: the RTP address when rtcp-mux was negotiated (`mux`), else
    /// `a=rtcp` (RFC 3605), else RTP port + 1 (RFC 3550 §11).
    pub fn rtcp_addr(&self, m: &MediaDescription, mux: bool) -> Option<SocketAddr> {
        let rtp = self.rtp_addr(m)?;
        if mux {
            return Some(rtp);
        }
        match m.rtcp {
            Some(r) => Some(SocketAddr::new(r.addr.unwrap_or(rtp.ip()), r.port)).filter(|a| a.port() != 0),
            None => rtp.port().checked_add(1).map(|p| SocketAddr::new(rtp.ip(), p)),
        }
    }
}

fn media_attribute(m: &mut MediaDescription, value: &str) {
    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
    match name {
        "rtpmap" => {
            if let Some(r) = parse_rtpmap(arg) {
                if !m.rtpmaps.iter().any(|x| x.pt == r.pt) && m.rtpmaps.len() < MAX_FORMATS {
                    m.rtpmaps.push(r);
                }
            }
        }
        "fmtp" => {
            if let Some((pt, params)) = arg.split_once(' ') {
                let params: String = params.chars().filter(|c| !c.is_control()).collect();
                let params = params.trim();
                if let Some(pt) = pt.parse::<u8>().ok().filter(|&p| p < 128) {
                    if !params.is_empty() && !m.fmtps.iter().any(|(p, _)| *p == pt) && m.fmtps.len() < MAX_FORMATS {
                        m.fmtps.push((pt, params.to_string()));
                    }
                }
            }
        }
        "ptime" => m.ptime = arg.trim().parse().ok(),
        "maxptime" => m.maxptime = arg.trim().parse().ok(),
        "rtcp" => m.rtcp = parse_rtcp(arg),
        "rtcp-mux" => m.rtcp_mux = true,
        "rtcp-fb" => {
            let arg: String = arg.chars().filter(|c| !c.is_control()).collect();
            if let Some((fmt, rest)) = arg.trim().split_once(' ') {
                if m.rtcp_fb.len() < MAX_FORMATS {
                    m.rtcp_fb.push((fmt.to_string(), rest.trim().to_string()));
                }
            }
        }
        "crypto" => {
            if m.crypto.len() < MAX_CRYPTO {
                if let Ok(c) = CryptoAttribute::parse(arg) {
                    m.crypto.push(c);
                }
            }
        }
        _ => {
            if let Some(d) = Direction::from_attr(value) {
                m.direction = Some(d);
            }
        }
    }
}

/// A codec on an m= line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codec {
    /// Payload type.
    pub pt: u8,
    /// Encoding name (`opus`, `PCMU`, `telephone-event`, …).
    pub name: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Channels (written only when not 1).
    pub channels: u8,
    /// fmtp parameters.
    pub fmtp: Option<String>,
}

impl Codec {
    fn new(pt: u8, name: &str, clock_rate: u32, channels: u8, fmtp: Option<&str>) -> Self {
        Self { pt, name: name.to_string(), clock_rate, channels, fmtp: fmtp.map(str::to_string) }
    }

    /// `opus/48000/2` (RFC 7587) at `pt`.
    pub fn opus(pt: u8) -> Self {
        Self::new(pt, "opus", 48000, 2, None)
    }

    /// `G722/8000` at its static PT 9 (the RTP clock is 8000 by RFC 3551's mistake).
    pub fn g722() -> Self {
        Self::new(9, "G722", 8000, 1, None)
    }

    /// `PCMU/8000` at PT 0.
    pub fn pcmu() -> Self {
        Self::new(0, "PCMU", 8000, 1, None)
    }

    /// `PCMA/8000` at PT 8.
    pub fn pcma() -> Self {
        Self::new(8, "PCMA", 8000, 1, None)
    }

    /// `telephone-event/8000` with events `0-16` (RFC 4733; media spec §1.12) at `pt`.
    pub fn telephone_event(pt: u8) -> Self {
        Self::new(pt, "telephone-event", 8000, 1, Some("0-16"))
    }

    /// `VP8/90000` at `pt`.
    pub fn vp8(pt: u8) -> Self {
        Self::new(pt, "VP8", 90000, 1, None)
    }

    /// `H264/90000` at `pt` with the given fmtp (profile-level-id, packetization-mode).
    pub fn h264(pt: u8, fmtp: Option<&str>) -> Self {
        Self::new(pt, "H264", 90000, 1, fmtp)
    }

    /// Same codec: name (case-insensitive), clock rate and channels. PT and fmtp are not
    /// compared: this is "do we carry it" (see [`Codec::same_format`] for offer/answer pairing).
    pub fn matches(&self, other: &Codec) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.clock_rate == other.clock_rate
            && self.channels == other.channels
    }

    /// Same payload format, for pairing an answer's codec with an offered one: [`Codec::matches`]
    /// and, for H.264, the same `packetization-mode` (0 when absent) and the same profile of
    /// `profile-level-id` (RFC 6184 §8.2.2: the profile must match, the level may differ; absent
    /// means `420010`, Baseline).
    pub fn same_format(&self, other: &Codec) -> bool {
        if !self.matches(other) {
            return false;
        }
        if !self.name.eq_ignore_ascii_case("H264") {
            return true;
        }
        let (a, b) = (self.fmtp.as_deref(), other.fmtp.as_deref());
        packetization_mode(a) == packetization_mode(b)
            && h264_profile(a).is_some()
            && h264_profile(a) == h264_profile(b)
    }

    /// True for the video codecs the gateway carries (VP8, H.264 at 90 kHz).
    pub fn is_video(&self) -> bool {
        self.clock_rate == 90000 && (self.name.eq_ignore_ascii_case("VP8") || self.name.eq_ignore_ascii_case("H264"))
    }
}

/// The value of parameter `name` in an fmtp line (`a=1;b=2`), names compared case-insensitively.
pub fn fmtp_param<'a>(fmtp: Option<&'a str>, name: &str) -> Option<&'a str> {
    fmtp?.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// H.264 `packetization-mode` (RFC 6184 §8.1: 0 when absent).
fn packetization_mode(fmtp: Option<&str>) -> Option<u8> {
    match fmtp_param(fmtp, "packetization-mode") {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

/// The H.264 profile of `profile-level-id` (RFC 6184 §8.1; `420010` when absent), with the
/// constrained profiles told apart by their constraint flags as RFC 6184 Table 5 and libwebrtc do:
/// `(profile_idc, constrained)`. `None` for a malformed value.
fn h264_profile(fmtp: Option<&str>) -> Option<(u8, bool)> {
    let id = fmtp_param(fmtp, "profile-level-id").unwrap_or("420010");
    if id.len() != 6 {
        return None;
    }
    let v = u32::from_str_radix(id, 16).ok()?;
    let (idc, iop) = ((v >> 16) as u8, (v >> 8) as u8);
    let constrained = match idc {
        0x42 => iop & 0x40 != 0,
        0x4d => iop & 0x80 != 0,
        0x58 => iop & 0xc0 == 0xc0,
        0x64 => iop & 0x0c == 0x0c,
        _ => false,
    };
    // Constrained Baseline, whichever profile_idc carries it, is one profile.
    let cb = constrained && matches!(idc, 0x42 | 0x4d | 0x58);
    Some(if cb { (0x42, true) } else { (idc, constrained) })
}

/// The offered codecs that match one of `supported`, keeping the offer's PTs, fmtp and order
/// (media spec §2.3 point 2: the answer reuses the offer's numbers, so no renumbering).
pub fn intersect(offered: &[Codec], supported: &[Codec]) -> Vec<Codec> {
    offered.iter().filter(|o| supported.iter().any(|s| s.matches(o))).cloned().collect()
}

/// One m= line we generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMedia {
    /// Media type.
    pub kind: MediaKind,
    /// Our RTP port; 0 rejects or disables the stream (then only the m= line is written).
    pub port: u16,
    /// `RTP/AVP`, or `RTP/SAVP` with `crypto`; `Other` only for rejected lines.
    pub proto: Proto,
    /// Codecs in preference order.
    pub codecs: Vec<Codec>,
    /// The format written when `codecs` is empty (rejected lines must still name one): the
    /// offer's first format, else `0`.
    pub fallback_format: Option<String>,
    /// Our direction.
    pub direction: Direction,
    /// `a=ptime`.
    pub ptime: Option<u32>,
    /// `a=rtcp:<port>` when RTCP is not on port+1.
    pub rtcp_port: Option<u16>,
    /// `a=rtcp-mux`: only in an answer to an offer that had it.
    pub rtcp_mux: bool,
    /// `a=crypto` lines (one in an answer).
    pub crypto: Vec<CryptoAttribute>,
    /// `a=rtcp-fb` values (`<pt> nack`, …; RFC 4585 §4.2), video lines only.
    pub rtcp_fb: Vec<String>,
}

impl LocalMedia {
    /// An active audio or video line with the given codecs: RTP/AVP, sendrecv, nothing else.
    pub fn new(kind: MediaKind, port: u16, codecs: Vec<Codec>) -> Self {
        Self {
            kind,
            port,
            proto: Proto::RtpAvp,
            codecs,
            fallback_format: None,
            direction: Direction::SendRecv,
            ptime: None,
            rtcp_port: None,
            rtcp_mux: false,
            crypto: Vec::new(),
            rtcp_fb: Vec::new(),
        }
    }

    /// The answer line rejecting `offered` (RFC 3264 §6: port 0, same media type and protocol,
    /// one of its formats).
    pub fn rejected(offered: &MediaDescription) -> Self {
        Self {
            proto: offered.proto.clone(),
            fallback_format: offered.formats.first().cloned(),
            direction: Direction::Inactive,
            ..Self::new(offered.kind.clone(), 0, Vec::new())
        }
    }
}

/// A session description we generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSession {
    /// `o=` username (`-` if empty).
    pub username: String,
    /// `s=` (`-` if empty).
    pub session_name: String,
    /// Our media address, written in `o=` and the session-level `c=`.
    pub address: IpAddr,
    /// The m= lines, in order (an answer has exactly the offer's count).
    pub media: Vec<LocalMedia>,
}

/// Drops control characters (CR, LF, …) so no value can start a new line.
fn clean(s: &str) -> impl std::fmt::Display + '_ {
    struct Clean<'a>(&'a str);
    impl std::fmt::Display for Clean<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.chars().filter(|c| !c.is_control()).try_for_each(|c| f.write_char(c))
        }
    }
    Clean(s)
}

fn token(s: &str) -> impl std::fmt::Display + '_ {
    struct Token<'a>(&'a str);
    impl std::fmt::Display for Token<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let mut any = false;
            for c in self.0.chars().filter(|c| c.is_ascii_graphic()) {
                f.write_char(c)?;
                any = true;
            }
            if !any {
                f.write_char('-')?;
            }
            Ok(())
        }
    }
    Token(s)
}

fn addr_type(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    }
}

impl LocalSession {
    /// Writes the SDP with CRLF line ends (RFC 8866 §5). Strings are sanitised: tokens lose
    /// whitespace and control characters, free text loses control characters.
    pub fn write(&self, session_id: u64, session_version: u64) -> String {
        let mut s = String::with_capacity(256 + 256 * self.media.len());
        let at = addr_type(self.address);
        let _ =
            write!(s, "v=0\r\no={} {session_id} {session_version} IN {at} {}\r\n", token(&self.username), self.address);
        let name = if self.session_name.is_empty() { "-" } else { &self.session_name };
        let _ = write!(s, "s={}\r\nc=IN {at} {}\r\nt=0 0\r\n", clean(name), self.address);
        for m in &self.media {
            let _ = write!(s, "m={} {} {}", token(m.kind.as_str()), m.port, token(m.proto.as_str()));
            if m.codecs.is_empty() {
                let _ = write!(s, " {}", token(m.fallback_format.as_deref().unwrap_or("0")));
            }
            for c in &m.codecs {
                let _ = write!(s, " {}", c.pt);
            }
            s.push_str("\r\n");
            if m.port == 0 {
                continue;
            }
            for c in &m.codecs {
                let _ = write!(s, "a=rtpmap:{} {}/{}", c.pt, token(&c.name), c.clock_rate);
                if c.channels != 1 {
                    let _ = write!(s, "/{}", c.channels);
                }
                s.push_str("\r\n");
                if let Some(f) = c.fmtp.as_deref().filter(|f| !f.is_empty()) {
                    let _ = write!(s, "a=fmtp:{} {}\r\n", c.pt, clean(f));
                }
            }
            for fb in &m.rtcp_fb {
                let _ = write!(s, "a=rtcp-fb:{}\r\n", clean(fb));
            }
            if let Some(p) = m.ptime {
                let _ = write!(s, "a=ptime:{p}\r\n");
            }
            if let Some(p) = m.rtcp_port {
                let _ = write!(s, "a=rtcp:{p}\r\n");
            }
            if m.rtcp_mux {
                s.push_str("a=rtcp-mux\r\n");
            }
            for c in &m.crypto {
                let _ = write!(s, "a=crypto:{}\r\n", clean(&c.to_string()));
            }
            let _ = write!(s, "a={}\r\n", m.direction.as_str());
        }
        s
    }
}

/// Keeps our `o=` line right across a dialog (RFC 3264 §8, §5): the session id is fixed, the
/// version goes up by one whenever the description differs from the previous one we sent and
/// stays the same when it does not (session refreshes).
#[derive(Clone, Debug)]
pub struct SdpVersioner {
    session_id: u64,
    version: u64,
    last: Option<LocalSession>,
}

impl SdpVersioner {
    /// Draw `session_id` (and, often, the same value as `first_version`) from the caller's
    /// `Rng`; keep both below 2^62 so the version never overflows in practice.
    pub fn new(session_id: u64, first_version: u64) -> Self {
        Self { session_id, version: first_version, last: None }
    }

    /// The version of the last SDP rendered.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Renders `session`, bumping the version if it changed since the last call.
    pub fn render(&mut self, session: &LocalSession) -> String {
        match &self.last {
            Some(last) if last == session => {}
            Some(_) => {
                self.version = self.version.wrapping_add(1);
                self.last = Some(session.clone());
            }
            None => self.last = Some(session.clone()),
        }
        session.write(self.session_id, self.version)
    }
}

#[cfg(test)]
mod tests;
