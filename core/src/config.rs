//! The core's configuration. Option names follow SylkServer's `webrtcgateway.ini` where one
//! exists (`web_origins`, `sip_domains`, `websocket_ping_interval`); the rest are ours.
//!
//! The same text format serves the config file of both runtimes: INI with optional `[Section]`
//! headers (ignored, so SylkServer's sections can be kept, except SylkServer's per-room sections
//! `[room@domain]`, whose keys are that conference room's options), `key = value` lines, `;` or
//! `#` comments, and comma-separated lists.

use crate::media::webrtc::DtlsIdentity;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Everything the core needs to know at construction. Built by the runtime from its CLI and
/// config file; serialised into capture headers (without secrets) so a replay rebuilds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Allowed `Origin` values of WebSocket upgrades; `*` allows any (and a missing origin).
    /// Entries may contain `*` wildcards, e.g. `https://*.example.com`.
    pub web_origins: Vec<String>,
    /// Domains allowed in `account-add`; `*` allows any.
    pub sip_domains: Vec<String>,
    /// Seconds between the WebSocket Pings the server sends; a Pong must come within half of it.
    pub websocket_ping_interval: u64,
    /// Largest HTTP request head accepted before the upgrade (bytes); larger → 431.
    pub max_http_header_size: usize,
    /// Largest WebSocket message (bytes); larger → close 1009.
    pub max_websocket_message_size: usize,
    /// Seconds a client has to complete the HTTP upgrade before the connection is dropped.
    pub http_handshake_timeout: u64,
    /// Most accounts one WebSocket may add (default 20); one more `account-add` gets the
    /// `error` "Too many accounts on this connection".
    pub max_accounts_per_connection: usize,
    /// Most sylkRTC requests (WebSocket text messages) one connection may send in any 1-second
    /// window (default 50, at least 1). The first one over it gets the `error` "Too many
    /// requests" and the WebSocket is closed with 1008 (policy violation).
    pub max_requests_per_second: usize,
    /// Most live web connections (any phase) from one peer IP (default 100, at least 1). A
    /// connection accepted beyond it is closed at once, before any HTTP.
    pub max_connections_per_ip: usize,
    /// Most sylkRTC sessions (calls, outgoing and incoming, from offer to `terminated`) one
    /// WebSocket may have at once (default 10, at least 1). One more `session-create` gets the
    /// `error` "Too many sessions on this connection"; an incoming call for an account of a
    /// connection at the limit is declined on the SIP side with 486 Busy Here.
    pub max_sessions_per_connection: usize,
    /// Bytes queued towards one stream connection (WebSocket or SIP TCP/TLS) that its peer has
    /// not taken yet (default 1 MiB, at least 1). Enforced by the runtime, which holds the write
    /// queues: a connection over it while its socket takes no more is dropped at once with a TCP
    /// reset (a WebSocket close frame would only queue behind what the peer does not read) and
    /// reported to the core as gone (`Input::StreamClosed`), so everything it owned is released
    /// as on any close.
    pub max_pending_bytes: usize,
    /// The SIP final response for an incoming call the browser declines (`session-terminate`
    /// before answering): 486 (Busy Here, the default) or 603 (Decline). SylkServer's name.
    pub decline_code: u16,
    /// Seconds without media from the SIP side (RTP or RTCP) after which an answered call is hung
    /// up (BYE, `terminated`); 0 disables it. Default 30, as Janus's `rtp_timeout`-like checks.
    pub media_timeout: u64,
    /// Header names (case-insensitive) a client may put in `session-create`/`session-answer`
    /// `headers`, besides every `X-` header (default none). Identity (`P-Asserted-Identity`,
    /// `P-Preferred-Identity`, …), routing (`Route`, `Record-Route`, `Via`, `Path`, …), auth
    /// (`Authorization`, `Proxy-Authorization`, `WWW-`/`Proxy-Authenticate`, …),
    /// `Require`/`Proxy-Require`/`Supported`, body (`Content-*`) and the stack's own headers
    /// are refused even when listed (`call::custom_headers`).
    pub allowed_client_headers: Vec<String>,
    /// SDES-SRTP on the SIP side (RFC 4568; `sdes_srtp`): `disabled` (RTP/AVP only; an RTP/SAVP
    /// offer is refused with 488), `optional` (our offers are RTP/AVP with `a=crypto`, used if the
    /// peer answers with one; RTP/SAVP offers are accepted) or `mandatory` (RTP/SAVP only).
    pub sdes_srtp: SdesMode,
    /// Largest `content` of an `account-message`/`session-message`, in bytes (default 64 KiB,
    /// at least 1); larger gets the `error` "Message too large: at most N bytes".
    pub max_message_size: usize,
    /// Most `account-message`s per account in any 1-second window, over all its connections on
    /// this core (default 20, at least 1); one more gets the `error` "Too many messages".
    pub max_messages_per_second: usize,
    /// Journal entries kept per account (default 10000; 0 keeps all): past it the oldest are
    /// dropped (`StoreRequest::TrimJournal` after each new entry).
    pub max_journal_entries: u64,
    /// Addressbook items (contacts, groups and policies together) kept per account (default
    /// 10000; 0: no bound): an `account-update-addressbook` adding one more gets
    /// `addressbook-update-failed` ("storage constraint violated: addressbook holds at most N
    /// items").
    pub max_addressbook_items: u32,
    /// Reverse proxies whose forwarded client address (`Forwarded`, `X-Forwarded-For`, PROXY
    /// protocol v2) is believed (`trusted_proxies`: addresses and CIDRs; default none;
    /// `http::forwarded`).
    #[serde(skip_serializing_if = "crate::http::forwarded::TrustedProxies::is_empty")]
    pub trusted_proxies: crate::http::forwarded::TrustedProxies,
    /// The SIP side.
    pub sip: SipConfig,
    /// The browser (WebRTC) media legs.
    pub webrtc: WebRtcConfig,
    /// Media sockets: the WebRTC UDP socket, the RTP port range, the addresses put in SDP.
    pub media: MediaConfig,
    /// Conferences: limits and per-room options (`conference::limits`). Left out of capture
    /// headers while it has its defaults.
    #[serde(skip_serializing_if = "crate::conference::limits::ConferenceConfig::is_default")]
    pub conference: crate::conference::limits::ConferenceConfig,
    /// TLS for the web listener (wss). `None` serves plain ws. Never serialised.
    #[serde(skip)]
    pub tls: Option<TlsConfig>,
    /// Record a capture of every input and output (see `capture`).
    #[serde(skip)]
    pub capture: bool,
    /// The core replays a capture: media, which captures leave out, is not judged (no media
    /// timeout, no ICE state); the media decisions the capture recorded are fed instead
    /// (`capture::replay`). Never set it otherwise. Never serialised.
    #[serde(skip)]
    pub replay: bool,
    /// The web listener's public base URL (`https://gw.example.com:10888`), put in front of the
    /// history path handed to SIP devices with their API token (SylkServer's `server.url`);
    /// `None`: they get the bare path (`/webrtcgateway/messages/history/<account>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
}

/// SDES-SRTP on the SIP side ([`Config::sdes_srtp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SdesMode {
    /// Plain RTP only.
    #[default]
    Disabled,
    /// SRTP when the peer takes it.
    Optional,
    /// SRTP or no call.
    Mandatory,
}

impl SdesMode {
    /// The mode named `name` (`disabled`, `optional`, `mandatory`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "disabled" => Some(Self::Disabled),
            "optional" => Some(Self::Optional),
            "mandatory" => Some(Self::Mandatory),
            _ => None,
        }
    }
}

/// SIP options. Names follow SylkServer (`outbound_sip_proxy`) and Janus (`register_ttl`)
/// where they exist.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Where the SIP UDP socket and TCP listener are bound (`--sip-listen`).
    pub listen: SocketAddr,
    /// Where the SIP TLS listener is bound (`--sip-tls-listen`, `sip_tls_listen`), serving the
    /// web listener's certificate (`tls_cert`/`tls_key`). `None`: no TLS listener (TLS is then
    /// only a client). Left out of capture headers when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<SocketAddr>,
    /// Host (and optional port) put in Via and Contact, when it differs from the bound address
    /// (NAT, 0.0.0.0). The runtime fills it in for a wildcard `listen` when not configured.
    pub advertised_address: Option<String>,
    /// `host[:port][;transport=udp|tcp|tls]`: every out-of-dialog request goes there (loose
    /// route), instead of to the domain of its Request-URI.
    pub outbound_sip_proxy: Option<String>,
    /// Seconds asked for in REGISTER (Janus' `register_ttl`).
    pub register_ttl: u32,
    /// Seconds before the first retry of a registration that failed with a timeout or 5xx;
    /// doubles per failure up to 30 min (`register_retry_interval`, default 30). Left out of
    /// capture headers when it is the default.
    #[serde(skip_serializing_if = "is_default_retry")]
    pub register_retry_interval: u32,
    /// `User-Agent` / `Server` when the account gives none.
    pub user_agent: String,
    /// Largest SIP message accepted (bytes), on every transport.
    pub max_message_size: usize,
    /// Most of our own SIP client transactions alive at once (`max_sip_transactions`, default
    /// 10000). A REGISTER beyond it is not sent and fails at once as if answered 503 (the
    /// registration reports `failed` "503 Service Unavailable"). Call legs' transactions count
    /// but are not refused. Incoming requests never take this room (see the next options).
    pub max_transactions: usize,
    /// Most SIP server transactions alive at once (`max_sip_server_transactions`, default
    /// 10000): incoming INVITEs and requests inside our calls' dialogs. A new one beyond it is
    /// answered 503 statelessly.
    pub max_server_transactions: usize,
    /// Most recent answers kept to absorb retransmissions of the incoming non-INVITE requests
    /// answered at once (OPTIONS, 404, 405, 481, 501, …; `max_sip_answered`, default 4096):
    /// those get no server transaction; the oldest answer is forgotten first, and a
    /// retransmission of a forgotten one is answered again.
    pub max_answered: usize,
    /// Incoming SIP requests accepted per second from one source IP
    /// (`max_sip_requests_per_second_per_ip`, default 500; 0: no limit). Over it, a request over
    /// UDP is dropped silently (a response would be reflected to a possibly spoofed address,
    /// and UDP senders retransmit); over TCP/TLS it is answered 503 with Retry-After (the source
    /// is real, and its transaction would otherwise wait for Timer F). Responses are not counted.
    pub max_requests_per_second_per_ip: u32,
    /// PEM text of the CA certificates that SIP TLS servers are verified against (RFC 5922):
    /// the runtime reads `sip_tls_ca_file` into it. `None`: TLS flows fail (no trust roots).
    /// Never serialised.
    #[serde(skip)]
    pub tls_ca_pem: Option<PemBundle>,
    /// Replay only: TLS flows carry plaintext, without TLS. Captures are taken above TLS, so a
    /// replay runs a captured TLS flow on a plain core (see `capture::replay`). Never set it
    /// otherwise. Never serialised.
    #[serde(skip)]
    pub tls_replay_plaintext: bool,
}

/// The browser media legs (`media::webrtc`). Their ICE host candidates are the WebRTC socket's
/// advertised addresses ([`MediaConfig`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebRtcConfig {
    /// The DTLS certificate every browser leg uses. Made outside the core, which has no OS
    /// randomness (`driver::webrtc_dtls_identity`); tests and replays pass a fixed one. `None`: no
    /// browser leg can be built. Never serialised.
    #[serde(skip)]
    pub dtls_cert: Option<DtlsIdentity>,
}

/// PEM text (CA certificates); printed by `Debug` as its size only. Shared, not copied, by
/// clones: every worker's configuration and its SIP stack hold the same bytes (the system's
/// bundle is ≈ 220 KiB).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PemBundle(pub std::sync::Arc<[u8]>);

impl fmt::Debug for PemBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PemBundle({} bytes)", self.0.len())
    }
}

/// Default `register_retry_interval` (seconds).
const DEFAULT_REGISTER_RETRY: u32 = 30;

fn is_default_retry(v: &u32) -> bool {
    *v == DEFAULT_REGISTER_RETRY
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 5060)),
            tls_listen: None,
            advertised_address: None,
            outbound_sip_proxy: None,
            register_ttl: 600,
            register_retry_interval: DEFAULT_REGISTER_RETRY,
            user_agent: concat!("sylkgw/", env!("CARGO_PKG_VERSION")).to_string(),
            max_message_size: 64 * 1024,
            max_transactions: 10_000,
            max_server_transactions: 10_000,
            max_answered: 4096,
            max_requests_per_second_per_ip: 500,
            tls_ca_pem: None,
            tls_replay_plaintext: false,
        }
    }
}

impl SipConfig {
    /// The share of one worker out of `workers` (the tokio binary): the process-wide SIP caps
    /// (`max_sip_transactions`, `max_sip_server_transactions`, `max_sip_answered`,
    /// `max_sip_requests_per_second_per_ip`) divided into equal shares, rounded up, so that
    /// `sylkgw` with N workers holds what the documented figure says in all, as `sylkgw-mio`
    /// does. Each worker has its own SIP stack and port, so nothing is shared at run time.
    /// `0` (no per-source limit) stays `0`.
    pub fn for_worker(&self, workers: usize) -> SipConfig {
        let workers = workers.max(1);
        let share = |cap: usize| if cap == 0 { 0 } else { cap.div_ceil(workers) };
        let mut out = self.clone();
        out.max_transactions = share(self.max_transactions);
        out.max_server_transactions = share(self.max_server_transactions);
        out.max_answered = share(self.max_answered);
        out.max_requests_per_second_per_ip =
            u32::try_from(share(self.max_requests_per_second_per_ip as usize)).unwrap_or(u32::MAX);
        out
    }
}

// ===== Media sockets (`MediaConfig`) =====

/// Media sockets. The WebRTC UDP socket (one per core, shared by every browser leg) is bound by
/// the runtime at start; RTP/RTCP pairs for the SIP legs are bound on request
/// (`Output::BindUdp`) from `rtp_ports`, on the IP of the WebRTC socket.
///
/// With several workers (the tokio binary), worker `i` of `n` gets [`MediaConfig::for_worker`]:
/// the WebRTC port + `i` (unless it is 0, which lets the OS choose for each), and the `i`-th of
/// `n` equal slices of the RTP pairs (a remainder of fewer than `n` pairs is left unused).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Where the WebRTC UDP socket is bound (`webrtc_listen`, `--webrtc-listen`). `None`: the
    /// SIP listen IP with port 0 (chosen by the OS); see [`Config::webrtc_listen`].
    pub webrtc_listen: Option<SocketAddr>,
    /// First and last port (inclusive) of the RTP/RTCP pairs (`rtp_ports = LOW-HIGH`,
    /// `--rtp-ports`): RTP on an even port, RTCP on the odd one above it. LOW is even, LOW < HIGH.
    pub rtp_ports: (u16, u16),
    /// IPs put in SDP (`media_advertised_addresses`, `--media-address`). Empty: the runtime fills
    /// in the WebRTC socket's IP, or the host's address when that is a wildcard.
    pub media_advertised_addresses: Vec<String>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self { webrtc_listen: None, rtp_ports: (20000, 29999), media_advertised_addresses: Vec::new() }
    }
}

/// Parses `LOW-HIGH` (a port range for RTP/RTCP pairs: LOW even, LOW < HIGH).
pub fn parse_port_range(value: &str) -> Result<(u16, u16), ConfigError> {
    let bad = |expected| ConfigError::BadValue { key: "rtp_ports".into(), value: value.into(), expected };
    let (low, high) = value.split_once('-').ok_or_else(|| bad("LOW-HIGH (two ports)"))?;
    let low: u16 = low.trim().parse().map_err(|_| bad("LOW-HIGH (two ports)"))?;
    let high: u16 = high.trim().parse().map_err(|_| bad("LOW-HIGH (two ports)"))?;
    check_port_range((low, high))?;
    Ok((low, high))
}

/// LOW even (RTP on even ports), non-zero, and below HIGH.
fn check_port_range((low, high): (u16, u16)) -> Result<(), ConfigError> {
    let bad = |expected| ConfigError::BadValue { key: "rtp_ports".into(), value: format!("{low}-{high}"), expected };
    if low == 0 || low % 2 != 0 {
        return Err(bad("a range whose LOW is an even port above 0 (RTP on even ports, RTCP on odd)"));
    }
    if low >= high {
        return Err(bad("a range with LOW < HIGH"));
    }
    Ok(())
}

/// Parses a list of IPs (for SDP), normalised.
pub fn parse_media_addresses(value: &str) -> Result<Vec<String>, ConfigError> {
    parse_list(value)
        .iter()
        .map(|a| {
            a.parse::<IpAddr>().map(|ip| ip.to_string()).map_err(|_| ConfigError::BadValue {
                key: "media_advertised_addresses".into(),
                value: a.clone(),
                expected: "an IP address",
            })
        })
        .collect()
}

impl MediaConfig {
    /// Applies a media option; `Ok(false)` for other keys.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        match key {
            "webrtc_listen" => {
                self.webrtc_listen = non_empty(value).map(|v| parse_num(key, &v, "HOST:PORT")).transpose()?
            }
            "rtp_ports" => self.rtp_ports = parse_port_range(value)?,
            "media_advertised_addresses" => self.media_advertised_addresses = parse_media_addresses(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks what [`MediaConfig::apply`] checks, for a configuration built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_port_range(self.rtp_ports)?;
        for a in &self.media_advertised_addresses {
            parse_media_addresses(a)?;
        }
        Ok(())
    }

    /// The share of worker `index` out of `workers` (see the type's documentation). Fails when a
    /// WebRTC port + index passes 65535 or the range holds less than one pair per worker.
    pub fn for_worker(&self, index: usize, workers: usize) -> Result<MediaConfig, ConfigError> {
        self.validate()?;
        let workers = workers.max(1);
        let mut out = self.clone();
        if let Some(listen) = &mut out.webrtc_listen {
            if listen.port() != 0 {
                let port = u16::try_from(usize::from(listen.port()) + index).map_err(|_| ConfigError::BadValue {
                    key: "webrtc_listen".into(),
                    value: format!("{listen} with {workers} workers"),
                    expected: "a port that leaves one port per worker below 65536",
                })?;
                listen.set_port(port);
            }
        }
        let (low, high) = self.rtp_ports;
        let pairs = (usize::from(high) - usize::from(low)).div_ceil(2);
        let per = pairs / workers;
        if per == 0 {
            return Err(ConfigError::BadValue {
                key: "rtp_ports".into(),
                value: format!("{low}-{high} ({pairs} pairs) with {workers} workers"),
                expected: "a range with at least one RTP/RTCP port pair per worker",
            });
        }
        let first = usize::from(low) + 2 * per * index;
        let last = first + 2 * per - 1;
        // `index < workers`, so the slice is within the range.
        out.rtp_ports = (first as u16, last as u16);
        Ok(out)
    }
}

impl Config {
    /// Where the WebRTC UDP socket is bound: `media.webrtc_listen`, else the SIP listen IP with
    /// port 0. RTP/RTCP pairs are bound on its IP.
    pub fn webrtc_listen(&self) -> SocketAddr {
        self.media.webrtc_listen.unwrap_or_else(|| SocketAddr::new(self.sip.listen.ip(), 0))
    }
}

// ===== End of media sockets =====

/// PEM text of the server certificate chain and private key (they may be the same text, as in
/// SylkServer's `certificate` option, which holds both).
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// One or more `CERTIFICATE` blocks, leaf first.
    pub cert_pem: Vec<u8>,
    /// A `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block.
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret: never print it.
        f.debug_struct("TlsConfig").field("cert_pem", &self.cert_pem.len()).finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            web_origins: vec!["*".into()],
            sip_domains: vec!["*".into()],
            websocket_ping_interval: 120,
            max_http_header_size: 8 * 1024,
            max_websocket_message_size: 256 * 1024,
            http_handshake_timeout: 10,
            max_accounts_per_connection: 20,
            max_requests_per_second: 50,
            max_connections_per_ip: 100,
            max_sessions_per_connection: 10,
            max_pending_bytes: 1024 * 1024,
            decline_code: 486,
            media_timeout: 30,
            allowed_client_headers: Vec::new(),
            sdes_srtp: SdesMode::Disabled,
            max_message_size: 64 * 1024,
            max_messages_per_second: 20,
            max_journal_entries: 10_000,
            max_addressbook_items: 10_000,
            trusted_proxies: Default::default(),
            sip: SipConfig::default(),
            webrtc: WebRtcConfig::default(),
            media: MediaConfig::default(),
            conference: Default::default(),
            tls: None,
            capture: false,
            replay: false,
            web_url: None,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A line of the config text is not `key = value` or a section header.
    Syntax { line: usize, text: String },
    /// A key no part of sylkgw knows.
    UnknownKey { line: usize, key: String },
    /// A value of the wrong shape.
    BadValue { key: String, value: String, expected: &'static str },
    /// The TLS certificate or key could not be used.
    Tls(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax { line, text } => write!(f, "line {line}: expected `key = value`, got {text:?}"),
            Self::UnknownKey { line, key } => write!(f, "line {line}: unknown option `{key}`"),
            Self::BadValue { key, value, expected } => {
                write!(f, "option `{key}`: {value:?} is not {expected}")
            }
            Self::Tls(e) => write!(f, "TLS certificate or key: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One `key = value` line of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniEntry {
    /// 1-based line number, for messages.
    pub line: usize,
    /// The option name, lower-cased.
    pub key: String,
    /// The value with surrounding white space and quotes removed.
    pub value: String,
    /// The conference room whose section (`[room@domain]`: a name with `@`) the line is in;
    /// `None` in any other section or before the first.
    pub room: Option<String>,
}

/// Splits INI text into entries. Section headers are accepted; a room section's name goes
/// with its entries ([`IniEntry::room`]), other section names are dropped.
pub fn parse_ini(text: &str) -> Result<Vec<IniEntry>, ConfigError> {
    let mut out = Vec::new();
    let mut room = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            let name = line[1..line.len() - 1].trim();
            room = name.contains('@').then(|| name.to_ascii_lowercase());
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(ConfigError::Syntax { line: i + 1, text: raw.to_string() });
        };
        let key = k.trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err(ConfigError::Syntax { line: i + 1, text: raw.to_string() });
        }
        let mut value = v.trim();
        if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            value = &value[1..value.len() - 1];
        }
        out.push(IniEntry { line: i + 1, key, value: value.to_string(), room: room.clone() });
    }
    Ok(out)
}

/// A comma-separated list, white space trimmed, empty items dropped.
pub fn parse_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str, expected: &'static str) -> Result<T, ConfigError> {
    value.parse().map_err(|_| ConfigError::BadValue { key: key.into(), value: value.into(), expected })
}

/// A count that must be at least 1 (0 would refuse everything).
fn parse_at_least_one(key: &str, value: &str) -> Result<usize, ConfigError> {
    match parse_num(key, value, "a number (at least 1)")? {
        0 => Err(ConfigError::BadValue { key: key.into(), value: value.into(), expected: "at least 1" }),
        n => Ok(n),
    }
}

fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

impl Config {
    /// Applies one config-file entry if it is a core option. Returns `Ok(false)` for keys that
    /// are not the core's (the runtime's own options), so the caller can try them.
    pub fn apply(&mut self, entry: &IniEntry) -> Result<bool, ConfigError> {
        let (k, v) = (entry.key.as_str(), entry.value.as_str());
        if let Some(room) = &entry.room {
            return self.apply_room(room, entry).map(|()| true);
        }
        if self.media.apply(k, v)? {
            return Ok(true);
        }
        match k {
            "web_origins" => self.web_origins = parse_list(v),
            "web_url" => self.web_url = Some(v.trim().trim_end_matches('/').to_string()).filter(|u| !u.is_empty()),
            "sip_domains" => self.sip_domains = parse_list(v),
            "websocket_ping_interval" => {
                self.websocket_ping_interval = parse_num(k, v, "a number of seconds (at least 1)")?;
                if self.websocket_ping_interval == 0 {
                    return Err(ConfigError::BadValue { key: k.into(), value: v.into(), expected: "at least 1" });
                }
            }
            "max_http_header_size" => self.max_http_header_size = parse_num(k, v, "a size in bytes")?,
            "max_websocket_message_size" => self.max_websocket_message_size = parse_num(k, v, "a size in bytes")?,
            "http_handshake_timeout" => self.http_handshake_timeout = parse_num(k, v, "a number of seconds")?,
            "max_accounts_per_connection" => self.max_accounts_per_connection = parse_num(k, v, "a number")?,
            "max_requests_per_second" => self.max_requests_per_second = parse_at_least_one(k, v)?,
            "max_connections_per_ip" => self.max_connections_per_ip = parse_at_least_one(k, v)?,
            "max_sessions_per_connection" => self.max_sessions_per_connection = parse_at_least_one(k, v)?,
            "max_pending_bytes" => self.max_pending_bytes = parse_at_least_one(k, v)?,
            "max_message_size" => self.max_message_size = parse_at_least_one(k, v)?,
            "max_messages_per_second" => self.max_messages_per_second = parse_at_least_one(k, v)?,
            "max_journal_entries" => self.max_journal_entries = parse_num(k, v, "a number (0 keeps all)")?,
            "max_addressbook_items" => self.max_addressbook_items = parse_num(k, v, "a number (0: no bound)")?,
            "max_rooms" => self.conference.max_rooms = parse_num(k, v, "a number")?,
            "max_participants_per_room" => self.conference.max_participants_per_room = parse_at_least_one(k, v)?,
            "max_feeds_per_connection" => self.conference.max_feeds_per_connection = parse_num(k, v, "a number")?,
            "max_bitrate" => self.conference.max_bitrate = parse_num(k, v, "a bit rate in bit/s")?,
            "decline_code" => {
                self.decline_code = match v.trim() {
                    "486" => 486,
                    "603" => 603,
                    _ => return Err(ConfigError::BadValue { key: k.into(), value: v.into(), expected: "486 or 603" }),
                }
            }
            "sdes_srtp" => {
                self.sdes_srtp = SdesMode::from_name(v.trim()).ok_or_else(|| ConfigError::BadValue {
                    key: k.into(),
                    value: v.into(),
                    expected: "disabled, optional or mandatory",
                })?
            }
            "allowed_client_headers" => self.allowed_client_headers = parse_list(v),
            "trusted_proxies" => {
                self.trusted_proxies = crate::http::forwarded::TrustedProxies::parse(v).map_err(|_| {
                    ConfigError::BadValue { key: k.into(), value: v.into(), expected: "addresses or CIDRs" }
                })?
            }
            "media_timeout" => self.media_timeout = parse_num(k, v, "a number of seconds (0 disables)")?,
            "sip_listen" => self.sip.listen = parse_num(k, v, "HOST:PORT")?,
            "sip_tls_listen" => {
                self.sip.tls_listen = non_empty(v).map(|v| parse_num(k, &v, "HOST:PORT")).transpose()?
            }
            "sip_advertised_address" => self.sip.advertised_address = non_empty(v),
            "outbound_sip_proxy" => {
                if let Some(p) = non_empty(v) {
                    crate::sip::target::ProxySpec::parse(&p).map_err(|expected| ConfigError::BadValue {
                        key: k.into(),
                        value: v.into(),
                        expected,
                    })?;
                }
                self.sip.outbound_sip_proxy = non_empty(v);
            }
            "register_ttl" => self.sip.register_ttl = parse_num(k, v, "a number of seconds")?,
            "register_retry_interval" => {
                self.sip.register_retry_interval = parse_num(k, v, "a number of seconds (at least 1)")?;
                if self.sip.register_retry_interval == 0 {
                    return Err(ConfigError::BadValue { key: k.into(), value: v.into(), expected: "at least 1" });
                }
            }
            "sip_user_agent" => self.sip.user_agent = v.to_string(),
            "max_sip_message_size" => self.sip.max_message_size = parse_num(k, v, "a size in bytes")?,
            "max_sip_transactions" => self.sip.max_transactions = parse_num(k, v, "a number")?,
            "max_sip_server_transactions" => self.sip.max_server_transactions = parse_num(k, v, "a number")?,
            "max_sip_answered" => self.sip.max_answered = parse_num(k, v, "a number")?,
            "max_sip_requests_per_second_per_ip" => {
                self.sip.max_requests_per_second_per_ip = parse_num(k, v, "a number (0: no limit)")?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Config {
    /// One option of conference room `room` (SylkServer `webrtcgateway.ini` `[room@domain]`,
    /// spec §6.1): `access_policy`, `allow`, `deny`, `max_bitrate`, `video_codec`,
    /// `video_disabled`. Any other key in a room section is an error.
    fn apply_room(&mut self, room: &str, entry: &IniEntry) -> Result<(), ConfigError> {
        use crate::conference::limits::{AccessPolicy, RoomConfig};
        let (k, v) = (entry.key.as_str(), entry.value.trim());
        let rooms = &mut self.conference.rooms;
        let i = match rooms.iter().position(|r| r.uri == room) {
            Some(i) => i,
            None => {
                rooms.push(RoomConfig::for_uri(room));
                rooms.len() - 1
            }
        };
        let r = &mut rooms[i];
        let bad = |expected| ConfigError::BadValue { key: k.into(), value: v.into(), expected };
        match k {
            "access_policy" => {
                let words: Vec<String> = parse_list(v).iter().map(|w| w.to_ascii_lowercase()).collect();
                r.access_policy = match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                    ["allow", "deny"] => AccessPolicy::AllowDeny,
                    ["deny", "allow"] => AccessPolicy::DenyAllow,
                    _ => return Err(bad("`allow, deny` or `deny, allow`")),
                };
            }
            "allow" => r.allow = parse_list(v),
            "deny" => r.deny = parse_list(v),
            "max_bitrate" => r.max_bitrate = Some(parse_num(k, v, "a bit rate in bit/s")?),
            "video_codec" => {
                r.video_codec = match v.to_ascii_lowercase().as_str() {
                    "" | "any" => None,
                    c @ ("vp8" | "h264") => Some(c.to_string()),
                    _ => return Err(bad("vp8 or h264")),
                }
            }
            "video_disabled" => {
                r.video_disabled = match v.to_ascii_lowercase().as_str() {
                    "1" | "yes" | "true" | "on" => true,
                    "0" | "no" | "false" | "off" => false,
                    _ => return Err(bad("yes or no")),
                }
            }
            _ => return Err(ConfigError::UnknownKey { line: entry.line, key: k.to_string() }),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process-wide SIP caps split over workers: N shares that add up to at least the cap
    /// (and never over it by more than N - 1); a single worker keeps them as they are.
    #[test]
    fn sip_caps_split_over_workers() {
        let sip = SipConfig { max_requests_per_second_per_ip: 500, ..SipConfig::default() };
        assert_eq!(sip.for_worker(1).max_transactions, 10_000);
        let two = sip.for_worker(2);
        assert_eq!(
            (two.max_transactions, two.max_server_transactions, two.max_answered, two.max_requests_per_second_per_ip),
            (5_000, 5_000, 2_048, 250)
        );
        let three = sip.for_worker(3);
        assert_eq!((three.max_transactions, three.max_requests_per_second_per_ip), (3_334, 167));
        let unlimited = SipConfig { max_requests_per_second_per_ip: 0, ..SipConfig::default() };
        assert_eq!(unlimited.for_worker(4).max_requests_per_second_per_ip, 0);
    }

    /// SylkServer's per-room sections (`webrtcgateway.ini` `[room@…]`, spec §6.1) set that room's
    /// options; keys after them that are no room option are an error, not silently global.
    #[test]
    fn room_sections_set_room_options() {
        use crate::conference::limits::{AccessPolicy, RoomConfig};
        let text = "[General]\nsip_domains = example.com\nmax_bitrate = 800000\n\
                    [room@videoconference.example.com]\naccess_policy = deny, allow\n\
                    deny = all\nallow = example.com, bob@other.test\nmax_bitrate = 500000\n\
                    video_codec = VP8\nvideo_disabled = yes\n\
                    [quiet@videoconference.example.com]\nvideo_disabled = false\n";
        let mut c = Config::default();
        for e in parse_ini(text).unwrap() {
            assert!(c.apply(&e).unwrap(), "{e:?}");
        }
        assert_eq!(c.sip_domains, ["example.com"]);
        let room = c.conference.room("room@videoconference.example.com");
        assert_eq!(room.access_policy, AccessPolicy::DenyAllow);
        assert_eq!(
            (room.deny.as_slice(), room.allow.as_slice()),
            (&["all".to_string()][..], &["example.com".to_string(), "bob@other.test".to_string()][..])
        );
        assert_eq!(
            (room.max_bitrate, room.video_codec.as_deref(), room.video_disabled),
            (Some(500_000), Some("vp8"), true)
        );
        assert!(room.allows("alice@example.com") && !room.allows("eve@evil.test"));
        let quiet = c.conference.room("quiet@videoconference.example.com");
        assert!(!quiet.video_disabled);
        assert_eq!(quiet.max_bitrate, Some(800_000), "the gateway's max_bitrate for rooms without their own");
        assert_eq!(
            c.conference.room("other@videoconference.example.com"),
            RoomConfig { max_bitrate: Some(800_000), ..RoomConfig::for_uri("other@videoconference.example.com") }
        );
        for bad in [
            "[r@x]\nweb_origins = *\n",
            "[r@x]\naccess_policy = sometimes\n",
            "[r@x]\nvideo_codec = av1\n",
            "[r@x]\nmax_bitrate = lots\n",
        ] {
            let mut c = Config::default();
            let e = parse_ini(bad).unwrap();
            assert!(c.apply(&e[0]).is_err(), "{bad:?} is accepted");
        }
    }

    #[test]
    fn sylkserver_style_file() {
        let text = "[General]\n; comment\nweb_origins = https://a.example, https://*.b.example\n\
                    sip_domains=example.com\nwebsocket_ping_interval = 30\n";
        let mut c = Config::default();
        for e in parse_ini(text).unwrap() {
            assert!(c.apply(&e).unwrap(), "{e:?}");
        }
        assert_eq!(c.web_origins, ["https://a.example", "https://*.b.example"]);
        assert_eq!(c.sip_domains, ["example.com"]);
        assert_eq!(c.websocket_ping_interval, 30);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse_ini("a = 1\nnonsense\n"), Err(ConfigError::Syntax { line: 2, text: "nonsense".into() }));
        let mut c = Config::default();
        let e = &parse_ini("websocket_ping_interval = soon").unwrap()[0];
        assert!(matches!(c.apply(e), Err(ConfigError::BadValue { .. })));
        let e = &parse_ini("listen = 1").unwrap()[0];
        assert_eq!(c.apply(e), Ok(false));
    }

    #[test]
    fn limits() {
        let c = Config::default();
        assert_eq!((c.max_accounts_per_connection, c.max_requests_per_second, c.max_connections_per_ip), (20, 50, 100));
        assert_eq!(c.sip.max_transactions, 10_000);
        assert_eq!((c.max_sessions_per_connection, c.max_pending_bytes), (10, 1 << 20));
        let text = "max_accounts_per_connection = 0\nmax_requests_per_second = 5\n\
                    max_connections_per_ip = 2\nmax_sip_transactions = 7\n\
                    max_sessions_per_connection = 3\nmax_pending_bytes = 4096\n";
        let mut c = Config::default();
        for e in parse_ini(text).unwrap() {
            assert!(c.apply(&e).unwrap(), "{e:?}");
        }
        assert_eq!((c.max_accounts_per_connection, c.max_requests_per_second, c.max_connections_per_ip), (0, 5, 2));
        assert_eq!(c.sip.max_transactions, 7);
        assert_eq!((c.max_sessions_per_connection, c.max_pending_bytes), (3, 4096));
        for bad in [
            "max_requests_per_second = 0",
            "max_connections_per_ip = 0",
            "max_sip_transactions = many",
            "max_sessions_per_connection = 0",
            "max_pending_bytes = 0",
            "max_pending_bytes = 1M",
        ] {
            let e = &parse_ini(bad).unwrap()[0];
            assert!(matches!(c.apply(e), Err(ConfigError::BadValue { .. })), "{bad}");
        }
    }

    #[test]
    fn media_options() {
        let mut c = Config::default();
        assert_eq!(c.media.rtp_ports, (20000, 29999));
        assert_eq!(c.webrtc_listen(), "0.0.0.0:0".parse().unwrap(), "the SIP IP, port 0");
        c.sip.listen = "127.0.0.1:5060".parse().unwrap();
        assert_eq!(c.webrtc_listen(), "127.0.0.1:0".parse().unwrap());
        let text = "webrtc_listen = 127.0.0.2:4000\nrtp_ports = 30000-30099\n\
                    media_advertised_addresses = 192.0.2.1, ::1\n";
        for e in parse_ini(text).unwrap() {
            assert!(c.apply(&e).unwrap(), "{e:?}");
        }
        assert_eq!(c.webrtc_listen(), "127.0.0.2:4000".parse().unwrap());
        assert_eq!(c.media.rtp_ports, (30000, 30099));
        assert_eq!(c.media.media_advertised_addresses, ["192.0.2.1", "::1"]);
        for bad in [
            "rtp_ports = 30001-30099",
            "rtp_ports = 30000-30000",
            "rtp_ports = 3-",
            "rtp_ports = 0-9",
            "media_advertised_addresses = example.com",
            "webrtc_listen = 1.2.3.4",
        ] {
            let e = &parse_ini(bad).unwrap()[0];
            assert!(matches!(c.apply(e), Err(ConfigError::BadValue { .. })), "{bad}");
        }
        let e = parse_port_range("30001-30099").unwrap_err().to_string();
        assert!(e.contains("rtp_ports") && e.contains("even"), "{e}");
    }

    #[test]
    fn media_per_worker() {
        let m = MediaConfig { webrtc_listen: Some("127.0.0.1:4000".parse().unwrap()), ..MediaConfig::default() };
        let w: Vec<MediaConfig> = (0..3).map(|i| m.for_worker(i, 3).unwrap()).collect();
        // 5000 pairs: 1666 each, the last 2 pairs unused.
        assert_eq!(w[0].rtp_ports, (20000, 23331));
        assert_eq!(w[1].rtp_ports, (23332, 26663));
        assert_eq!(w[2].rtp_ports, (26664, 29995));
        assert_eq!(w[2].webrtc_listen, Some("127.0.0.1:4002".parse().unwrap()));
        assert_eq!(m.for_worker(0, 1).unwrap().rtp_ports, (20000, 29999), "one worker: the whole range");
        let any = MediaConfig::default();
        assert_eq!(any.for_worker(5, 8).unwrap().webrtc_listen, None, "port 0 stays for the OS to choose");
        let small = MediaConfig { rtp_ports: (20000, 20005), ..MediaConfig::default() };
        assert_eq!(small.for_worker(2, 3).unwrap().rtp_ports, (20004, 20005));
        let e = small.for_worker(0, 4).unwrap_err().to_string();
        assert!(e.contains("at least one") && e.contains("4 workers"), "{e}");
        let top = MediaConfig { webrtc_listen: Some("127.0.0.1:65535".parse().unwrap()), ..MediaConfig::default() };
        assert!(top.for_worker(1, 2).is_err());
    }

    #[test]
    fn register_retry_interval_option() {
        let mut c = Config::default();
        assert_eq!(c.sip.register_retry_interval, 30);
        for e in parse_ini("register_retry_interval = 2\n").unwrap() {
            assert!(c.apply(&e).unwrap());
        }
        assert_eq!(c.sip.register_retry_interval, 2);
        assert!(!serde_json::to_string(&Config::default()).unwrap().contains("register_retry_interval"));
        for e in parse_ini("register_retry_interval = 0\n").unwrap() {
            assert!(c.apply(&e).is_err());
        }
    }
}
