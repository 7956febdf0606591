//! Captures: a line-oriented, human-readable record of every input the core consumed and every
//! output it produced, taken after TLS, with secrets redacted; and the replay that feeds a
//! capture to a fresh core and re-records it, so a test can compare the two texts.
//!
//! ```text
//! #! sylkgw-capture 1
//! #  seed   0000…
//! #  unix   1767225600.000
//! #  config {"web_origins":["*"],…}
//! 0            > conn:1    accept   web 127.0.0.1:40000
//! 0            > conn:1    http     "GET /webrtcgateway/ws HTTP/1.1\r\n…"
//! 0            < conn:1    http     "HTTP/1.1 101 Switching Protocols\r\n…"
//! 0            < conn:1    ws.text  {"sylkrtc":"ready-event"}
//! 0            < timer     120000   ws-ping
//! 12.5         > conn:1    ws.text  {"sylkrtc":"ping","transaction":"1"}
//! 12.5         + conn:1    ws.text  {"sylkrtc":"ping","transaction":"2"}
//! ```
//! Columns: time in milliseconds since start (fraction down to nanoseconds), direction, channel,
//! verb, payload. `>` is an input, `+` continues the input above (the same chunk of bytes), `<` is
//! an output. Verbs: `accept`, `http` (bytes before the upgrade, as a JSON string or `b64:`),
//! `ws.text`/`ws.binary`/`ws.ping`/`ws.pong`/`ws.close` (whole frames; masks dropped), `data`
//! (bytes that are not whole frames, `b64:`), `closed` (peer went away), `close` (we close),
//! `timer` (input: a timeout fired; output: the new deadline and its reason, written when it
//! changes), `shutdown`, `reload` (channel `gateway`: the configuration read again on SIGHUP, as
//! one-line JSON like the header's). SIP: `bound` (`udp:N`, the runtime bound a socket), `datagram`
//! (`udp:N<peer` in, `udp:N>peer` out), `connect`/`connected` (streams the core opens), `sip`
//! (bytes on a SIP stream), `resolve`/`resolved` (channel `dns`, by query id). Storage (channel
//! `storage`): `store` (`< storage store ID REQUEST`) and `stored` (`> storage stored ID
//! OUTCOME`), the request and outcome in their one-line JSON encoding (`crate::storage::line`). A `ws.text` payload is the text itself when it is one line, else a JSON
//! string. In `account-add` the `password` is masked (hex digits become `0`, other characters `*`),
//! and in SIP messages the digest `response` values are zeroed and SDES keys (`inline:`) blanked.
//!
//! Rooms across workers (channel `worker:N`, `crate::conference::remote`): `from` (an input
//! message of worker N's gateway), `failed` (one the runtime could not deliver to N) and `to` (an
//! output message to N), each the message's one-line JSON.
//!
//! Media sockets: `bound` with purpose `webrtc` (the runtime's socket at start), `bind` (`<
//! udp:N bind rtp|rtcp ADDR`, the core asks for a socket), `bindfailed` (`> udp:N bindfailed
//! "error"`), `closeudp` (`< udp:N closeudp`). Datagrams on media sockets are recorded like any
//! other (`udp:N<peer datagram b64:…`).
//!
//! TODO: elide media datagrams (RTP, RTCP, STUN, DTLS on the WebRTC and RTP sockets) from
//! captures, and mask what str0m draws itself, once calls carry media (architecture notes,
//! "Determinism and replay"); until then a capture holds every media packet.

use crate::api::py_str_repr;
use crate::base64;
use crate::config::Config;
use crate::drive::{Input, Output, TimeoutReason, UdpPurpose};
use crate::ids::{ConnId, Listener, SocketId};
use crate::storage::{line as store_line, StoreError, StoreId, StoreResult};
use crate::ws::frames::{client_frame, FrameOut, FrameSplitter, Segment};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// First line of every capture.
pub const MAGIC: &str = "#! sylkgw-capture 1";

/// Records what the core consumes and emits. Owned by the `Gateway` when capturing is on.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    text: String,
    conns: BTreeMap<ConnId, ConnRecord>,
    last_timer: Option<(Instant, TimeoutReason)>,
}

#[derive(Debug, Default)]
struct ConnRecord {
    /// A SIP stream (accepted on the SIP listener or opened by the core).
    sip: bool,
    websocket: bool,
    inbound: FrameSplitter,
    outbound: FrameSplitter,
}

impl Recorder {
    /// Starts a capture with its header.
    pub fn new(start: Instant, seed: &[u8; 32], unix: Duration, config: &Config) -> Self {
        let mut text = String::new();
        let seed_hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        let config_json = serde_json::to_string(config).unwrap_or_default();
        let _ = writeln!(text, "{MAGIC}");
        let _ = writeln!(text, "#  seed   {seed_hex}");
        let _ = writeln!(text, "#  unix   {}.{:03}", unix.as_secs(), unix.subsec_millis());
        let _ = writeln!(text, "#  config {config_json}");
        Self { start, text, conns: BTreeMap::new(), last_timer: None }
    }

    /// Takes the lines recorded since the last call.
    pub fn take(&mut self) -> String {
        std::mem::take(&mut self.text)
    }

    fn line(&mut self, now: Instant, dir: char, channel: &str, verb: &str, payload: &str) {
        let t = format_time(now.saturating_duration_since(self.start));
        let line = format!("{t:<12} {dir} {channel:<9} {verb:<8} {payload}");
        self.text.push_str(line.trim_end());
        self.text.push('\n');
    }

    /// Records an input other than `StreamData` (whose plaintext goes to [`Recorder::stream_in`]).
    pub fn input(&mut self, now: Instant, input: &Input<'_>) {
        match input {
            Input::Timeout => self.line(now, '>', "timer", "", ""),
            Input::Accepted { conn, listener, peer } => {
                let sip = matches!(listener, Listener::SipTcp | Listener::SipTls);
                self.conns.insert(*conn, ConnRecord { sip, ..ConnRecord::default() });
                self.line(now, '>', &conn.to_string(), "accept", &format!("{} {peer}", listener.name()));
            }
            Input::StreamData { .. } => {}
            Input::StreamClosed { conn } => {
                self.conns.remove(conn);
                self.line(now, '>', &conn.to_string(), "closed", "");
            }
            Input::Datagram { socket, from, data } => {
                self.line(now, '>', &format!("{socket}<{from}"), "datagram", &sip_payload(data));
            }
            Input::UdpBound { socket, purpose, local } => {
                self.line(now, '>', &socket.to_string(), "bound", &format!("{} {local}", purpose.name()));
            }
            Input::UdpBindFailed { socket, error } => {
                self.line(now, '>', &socket.to_string(), "bindfailed", &Value::from(error.as_str()).to_string());
            }
            Input::Connected { conn, result } => {
                let payload = match result {
                    Ok(()) => "ok".to_string(),
                    Err(e) => Value::from(e.as_str()).to_string(),
                };
                self.line(now, '>', &conn.to_string(), "connected", &payload);
            }
            Input::Resolved { query, result } => {
                self.line(now, '>', "dns", "resolved", &format!("{query} {}", crate::dns::line::encode(result)));
            }
            Input::Stored { id, result } => {
                self.line(now, '>', "storage", "stored", &format!("{id} {}", store_line::encode_outcome(result)))
            }
            Input::Shutdown => self.line(now, '>', "gateway", "shutdown", ""),
            Input::FromWorker { worker, msg } => {
                self.line(now, '>', &format!("worker:{worker}"), "from", &msg.encode())
            }
            Input::ToWorkerFailed { worker, msg } => {
                self.line(now, '>', &format!("worker:{worker}"), "failed", &msg.encode())
            }
            Input::Reload { config } => {
                let json = serde_json::to_string(config).unwrap_or_default();
                self.line(now, '>', "gateway", "reload", &json)
            }
        }
    }

    /// Records plaintext the core consumed from `conn`.
    pub fn stream_in(&mut self, now: Instant, conn: ConnId, plain: &[u8]) {
        if plain.is_empty() {
            return;
        }
        let channel = conn.to_string();
        let rec = self.conns.entry(conn).or_default();
        if rec.sip {
            self.line(now, '>', &channel, "sip", &sip_payload(plain));
            return;
        }
        if !rec.websocket {
            self.line(now, '>', &channel, "http", &bytes_payload(plain));
            return;
        }
        let segments = rec.inbound.split(plain, true);
        for (i, seg) in segments.iter().enumerate() {
            let dir = if i == 0 { '>' } else { '+' };
            let (verb, payload) = render_segment(seg, true);
            self.line(now, dir, &channel, verb, &payload);
        }
    }

    /// Records plaintext the core wrote to `conn`. Call once per logical write (the HTTP
    /// response separately from the frames that follow it).
    pub fn stream_out(&mut self, now: Instant, conn: ConnId, plain: &[u8]) {
        if plain.is_empty() {
            return;
        }
        let channel = conn.to_string();
        let rec = self.conns.entry(conn).or_default();
        if !rec.websocket {
            if plain.starts_with(b"HTTP/1.1 101 ") {
                rec.websocket = true;
            }
            self.line(now, '<', &channel, "http", &bytes_payload(plain));
            return;
        }
        let segments = rec.outbound.split(plain, false);
        for seg in &segments {
            let (verb, payload) = render_segment(seg, false);
            self.line(now, '<', &channel, verb, &payload);
        }
    }

    /// Records an output of the SIP side (web connections are recorded by
    /// [`Recorder::stream_out`] before TLS).
    pub fn output(&mut self, now: Instant, out: &Output) {
        match out {
            Output::Datagram(t) => {
                self.line(now, '<', &format!("{}>{}", t.socket, t.to), "datagram", &sip_payload(&t.payload))
            }
            Output::Connect { conn, to } => {
                self.conns.insert(*conn, ConnRecord { sip: true, ..ConnRecord::default() });
                self.line(now, '<', &conn.to_string(), "connect", &to.to_string());
            }
            Output::StreamWrite { conn, data } => self.line(now, '<', &conn.to_string(), "sip", &sip_payload(data)),
            Output::StreamClose { conn } => self.close_out(now, *conn),
            Output::Resolve { query, qtype, name } => {
                self.line(now, '<', "dns", "resolve", &format!("{query} {qtype} {name}"))
            }
            Output::BindUdp { socket, purpose, local } => {
                self.line(now, '<', &socket.to_string(), "bind", &format!("{} {local}", purpose.name()))
            }
            Output::CloseUdp { socket } => self.line(now, '<', &socket.to_string(), "closeudp", ""),
            Output::Store { id, request } => {
                self.line(now, '<', "storage", "store", &format!("{id} {}", store_line::encode_request(request)))
            }
            Output::ToWorker { worker, msg } => self.line(now, '<', &format!("worker:{worker}"), "to", &msg.encode()),
            Output::Timeout(_) => {}
        }
    }

    /// Records a media decision about `call` (media itself is left out).
    pub fn media_event(&mut self, now: Instant, call: crate::call::CallId, event: crate::call::MediaEvent) {
        self.line(now, '>', &format!("call:{}", call.0), "media", event.name());
    }

    /// Records that the core closed `conn`.
    pub fn close_out(&mut self, now: Instant, conn: ConnId) {
        self.conns.remove(&conn);
        self.line(now, '<', &conn.to_string(), "close", "");
    }

    /// Records the end-of-drain deadline when it changed.
    pub fn timer(&mut self, now: Instant, at: Instant, reason: TimeoutReason) {
        // The idle deadline moves with time; only a change of reason is news.
        let same = match self.last_timer {
            Some((_, TimeoutReason::Idle)) => reason == TimeoutReason::Idle,
            last => last == Some((at, reason)),
        };
        if same {
            return;
        }
        self.last_timer = Some((at, reason));
        let when = if reason == TimeoutReason::Idle {
            "never".to_string()
        } else {
            format_time(at.saturating_duration_since(self.start))
        };
        self.line(now, '<', "timer", &when, reason.name());
    }
}

fn render_segment(seg: &Segment, redact: bool) -> (&'static str, String) {
    match seg {
        Segment::Raw(bytes) => ("data", format!("b64:{}", base64::encode(bytes))),
        Segment::Frame(FrameOut::Text(t)) => {
            let t = if redact { redact_secrets(t) } else { t.clone() };
            ("ws.text", text_payload(&t))
        }
        Segment::Frame(FrameOut::Binary(b)) => ("ws.binary", format!("b64:{}", base64::encode(b))),
        Segment::Frame(FrameOut::Ping(b)) => ("ws.ping", format!("b64:{}", base64::encode(b))),
        Segment::Frame(FrameOut::Pong(b)) => ("ws.pong", format!("b64:{}", base64::encode(b))),
        Segment::Frame(FrameOut::Close(None)) => ("ws.close", String::new()),
        Segment::Frame(FrameOut::Close(Some((code, reason)))) => {
            ("ws.close", format!("{code} {}", Value::from(reason.as_str())))
        }
    }
}

/// Masks a request's `password` (hex digits become `0`, other characters `*`); other texts are
/// returned unchanged.
pub fn redact_secrets(text: &str) -> String {
    if !text.contains("\"password\"") {
        return text.to_string();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut map)) if map.get("password").is_some_and(Value::is_string) => {
            // Same length, so a replay validates the request the same way (1..9999 characters).
            // Hex digits become `0` and everything else `*`: the length and whether it looks like
            // an HA1 stay, the secret does not.
            let masked: String = map["password"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .map(|c| if c.is_ascii_hexdigit() { '0' } else { '*' })
                .collect();
            map.insert("password".into(), Value::from(masked));
            Value::Object(map).to_string()
        }
        _ => text.to_string(),
    }
}

fn text_payload(t: &str) -> String {
    let plain = !t.is_empty()
        && !t.starts_with(['"', ' ', '\t'])
        && !t.ends_with([' ', '\t'])
        && !t.starts_with("b64:")
        && !t.contains(['\n', '\r']);
    if plain {
        t.to_string()
    } else {
        Value::from(t).to_string()
    }
}

/// SIP text with its secrets blanked, every length kept (so stream framing holds, and replays
/// that compute them from redacted passwords or seeded keys record the same line): digest
/// `response` values become `0`s; SDES master keys and salts (`a=crypto:… inline:KEY`, RFC 4568)
/// become `A`s, base64 for zero bytes with the padding kept, so a replay still parses them.
fn sip_payload(b: &[u8]) -> String {
    let text = String::from_utf8_lossy(b);
    if !(text.contains("response=") || text.contains("inline:")) || std::str::from_utf8(b).is_err() {
        return bytes_payload(b);
    }
    let text = blank_after(&text, "response=\"", |c| c != '"', '0');
    let text = blank_after(&text, "inline:", |c| c.is_ascii_alphanumeric() || c == '+' || c == '/', 'A');
    Value::from(text).to_string()
}

/// `text` with the run of characters matching `secret` after each `marker` replaced by `with`.
fn blank_after(text: &str, marker: &str, secret: impl Fn(char) -> bool, with: char) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(marker) {
        let start = i + marker.len();
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after.find(|c: char| !secret(c)).unwrap_or(after.len());
        out.extend(after[..end].chars().map(|_| with));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn bytes_payload(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => Value::from(s).to_string(),
        Err(_) => format!("b64:{}", base64::encode(b)),
    }
}

/// `ms` or `ms.nnnnnn` (nanosecond precision, so replays hit deadlines exactly).
pub fn format_time(d: Duration) -> String {
    let ms = d.as_millis();
    let rest = d.as_nanos() % 1_000_000;
    if rest == 0 {
        ms.to_string()
    } else {
        format!("{ms}.{rest:06}")
    }
}

/// Inverse of [`format_time`].
pub fn parse_time(s: &str) -> Option<Duration> {
    let (ms, frac) = s.split_once('.').unwrap_or((s, ""));
    let ms: u64 = ms.parse().ok()?;
    let mut nanos = 0u64;
    if !frac.is_empty() {
        if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nanos = format!("{frac:0<6}").parse().ok()?;
    }
    Some(Duration::from_millis(ms) + Duration::from_nanos(nanos))
}

// ===== Reading captures =====

/// A parsed capture.
#[derive(Debug)]
pub struct Capture {
    /// The `#` lines at the top, verbatim.
    pub header: Vec<String>,
    /// Seed for the core.
    pub seed: [u8; 32],
    /// Wall time at start.
    pub unix: Duration,
    /// The core's configuration.
    pub config: Config,
    /// Input records grouped into what is fed at once, with their times.
    pub inputs: Vec<(Duration, ReplayInput)>,
}

/// One input to feed.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayInput {
    /// `accept`.
    Accept { conn: ConnId, listener: Listener, peer: SocketAddr },
    /// Bytes for a connection (a `>` line and the `+` lines after it).
    Data { conn: ConnId, bytes: Vec<u8> },
    /// `closed`.
    Closed { conn: ConnId },
    /// `timer`.
    Timer,
    /// `bound`: the runtime bound a UDP socket.
    UdpBound { socket: SocketId, purpose: UdpPurpose, local: SocketAddr },
    /// `bindfailed`: the runtime could not bind a socket the core asked for.
    UdpBindFailed { socket: SocketId, error: String },
    /// `datagram` received.
    Datagram { socket: SocketId, from: SocketAddr, bytes: Vec<u8> },
    /// `connected`.
    Connected { conn: ConnId, result: Result<(), String> },
    /// `resolved`.
    Resolved { query: u64, result: Result<crate::dns::Answer, String> },
    /// `stored`: the outcome of a storage request.
    Stored { id: StoreId, result: Result<StoreResult, StoreError> },
    /// `shutdown`.
    Shutdown,
    /// `worker:N from MSG`: a message from another worker's gateway.
    FromWorker { worker: usize, msg: crate::conference::remote::WorkerMsg },
    /// `worker:N failed MSG`: a message the runtime could not deliver to worker N.
    ToWorkerFailed { worker: usize, msg: crate::conference::remote::WorkerMsg },
    /// `reload`: the configuration read again (SIGHUP), as the header's `config` line writes it.
    Reload(Box<Config>),
    /// `call:N media <event>`: a media decision of the recorded run.
    Media { call: crate::call::CallId, event: crate::call::MediaEvent },
}

/// The SDP attribute of a browser leg that depends on the process's DTLS certificate (made from
/// the OS's randomness by the runtime, and afresh by a replay).
const VOLATILE_SDP: [&str; 1] = ["a=fingerprint:"];

/// `text` with the certificate fingerprints of SDPs (in `ws.text` lines only) replaced by `*`,
/// for comparing a replay with its capture; everything else the core and str0m decide stays
/// compared (str0m's own draws are seeded per leg, `media::webrtc`).
pub fn mask_media(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.contains(" worker:") && line.contains("v=0") {
            // The SDP is a JSON string inside the message's JSON: its line ends are escaped twice.
            let parts: Vec<String> = line
                .split("\\\\r\\\\n")
                .map(|seg| match VOLATILE_SDP.iter().find(|p| seg.starts_with(*p)) {
                    Some(p) => format!("{p}*"),
                    None => seg.to_string(),
                })
                .collect();
            out.push_str(&parts.join("\\\\r\\\\n"));
        } else if line.contains(" ws.text ") && line.contains("v=0") {
            let parts: Vec<String> = line
                .split("\\r\\n")
                .map(|seg| match VOLATILE_SDP.iter().find(|p| seg.starts_with(*p)) {
                    Some(p) => format!("{p}*"),
                    None => seg.to_string(),
                })
                .collect();
            out.push_str(&parts.join("\\r\\n"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Parses a capture. Output (`<`) lines are skipped: replay regenerates them.
pub fn parse(text: &str) -> Result<Capture, String> {
    let mut lines = text.lines().enumerate().peekable();
    let mut header = Vec::new();
    while let Some((_, l)) = lines.peek() {
        if !l.starts_with('#') {
            break;
        }
        header.push((*l).to_string());
        lines.next();
    }
    if header.first().map(String::as_str) != Some(MAGIC) {
        return Err(format!("not a capture: first line must be {MAGIC:?}"));
    }
    let field = |name: &str| {
        header.iter().find_map(|h| {
            let rest = h.strip_prefix('#')?.trim_start();
            let value = rest.strip_prefix(name)?;
            value.starts_with(' ').then(|| value.trim().to_string())
        })
    };
    let seed_hex = field("seed").ok_or("header has no seed")?;
    let mut seed = [0u8; 32];
    if seed_hex.len() != 64 || !seed_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("seed must be 64 hex digits".into());
    }
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::from_str_radix(&seed_hex[2 * i..2 * i + 2], 16).map_err(|e| format!("seed: {e}"))?;
    }
    let unix_text = field("unix").ok_or("header has no unix time")?;
    let unix = unix_text.parse::<f64>().map_err(|e| format!("unix: {e}"))?;
    let unix = Duration::from_millis((unix * 1000.0).round() as u64);
    let config: Config = match field("config") {
        Some(json) => serde_json::from_str(&json).map_err(|e| format!("config: {e}"))?,
        None => Config::default(),
    };
    let mut inputs: Vec<(Duration, ReplayInput)> = Vec::new();
    for (n, line) in lines {
        let lineno = n + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |m: &str| format!("line {lineno}: {m}: {line}");
        let mut parts = line.split_whitespace();
        let (Some(t), Some(dir), Some(channel)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("expected `time dir channel verb payload`"));
        };
        if dir == "<" {
            continue;
        }
        let t = parse_time(t).ok_or_else(|| err("bad time"))?;
        let rest = skip_ws_fields(line, 3);
        let (verb, payload) = match rest.split_once(char::is_whitespace) {
            Some((v, p)) => (v, p.trim()),
            None => (rest.trim(), ""),
        };
        let input = if channel == "timer" {
            ReplayInput::Timer
        } else if let (Some(id), "media") = (channel.strip_prefix("call:"), verb) {
            let call = crate::call::CallId(id.parse().map_err(|_| err("bad call id"))?);
            let event = crate::call::MediaEvent::from_name(payload).ok_or_else(|| err("unknown media event"))?;
            ReplayInput::Media { call, event }
        } else if channel == "gateway" && verb == "shutdown" {
            ReplayInput::Shutdown
        } else if channel == "gateway" && verb == "reload" {
            ReplayInput::Reload(Box::new(serde_json::from_str(payload).map_err(|e| err(&format!("config: {e}")))?))
        } else if channel == "dns" && verb == "resolved" {
            let (q, rest) = payload.split_once(' ').ok_or_else(|| err("resolved needs `query result`"))?;
            let query = q.parse().map_err(|_| err("bad query id"))?;
            let result = crate::dns::line::decode(rest).map_err(err)?;
            ReplayInput::Resolved { query, result }
        } else if channel == "storage" && verb == "stored" {
            let (id, rest) = payload.split_once(' ').ok_or_else(|| err("stored needs `id outcome`"))?;
            let id = StoreId(id.parse().map_err(|_| err("bad storage id"))?);
            let result = store_line::decode_outcome(rest.trim()).map_err(|e| err(&e.to_string()))?;
            ReplayInput::Stored { id, result }
        } else if let Some(w) = channel.strip_prefix("worker:") {
            let worker = w.parse().map_err(|_| err("bad worker index"))?;
            let msg = crate::conference::remote::WorkerMsg::decode(payload).map_err(|e| err(&e))?;
            match verb {
                "from" => ReplayInput::FromWorker { worker, msg },
                "failed" => ReplayInput::ToWorkerFailed { worker, msg },
                _ => return Err(err("unknown worker record")),
            }
        } else if let Some(rest) = channel.strip_prefix("udp:") {
            let (id, from) = match rest.split_once('<') {
                Some((id, from)) => (id, Some(from)),
                None => (rest, None),
            };
            let socket = SocketId(id.parse().map_err(|_| err("bad socket id"))?);
            match (verb, from) {
                ("bound", None) => {
                    let (p, local) = payload.split_once(' ').ok_or_else(|| err("bound needs `purpose address`"))?;
                    let purpose = UdpPurpose::from_name(p).ok_or_else(|| err("unknown socket purpose"))?;
                    let local = local.trim().parse().map_err(|_| err("bad address"))?;
                    ReplayInput::UdpBound { socket, purpose, local }
                }
                ("bindfailed", None) => ReplayInput::UdpBindFailed {
                    socket,
                    error: serde_json::from_str::<String>(payload).map_err(|_| err("bad bind error"))?,
                },
                ("datagram", Some(from)) => {
                    let from = from.parse().map_err(|_| err("bad sender address"))?;
                    ReplayInput::Datagram { socket, from, bytes: input_bytes("http", payload).map_err(|m| err(&m))? }
                }
                _ => return Err(err("unknown udp record")),
            }
        } else if let Some(id) = channel.strip_prefix("conn:") {
            let conn = ConnId(id.parse().map_err(|_| err("bad connection id"))?);
            match verb {
                "accept" => {
                    let (l, peer) = payload.split_once(' ').ok_or_else(|| err("accept needs `listener peer`"))?;
                    let listener = Listener::from_name(l).ok_or_else(|| err("unknown listener"))?;
                    let peer = peer.trim().parse().map_err(|_| err("bad peer address"))?;
                    ReplayInput::Accept { conn, listener, peer }
                }
                "closed" => ReplayInput::Closed { conn },
                "connected" if payload == "ok" => ReplayInput::Connected { conn, result: Ok(()) },
                "connected" => ReplayInput::Connected {
                    conn,
                    result: Err(serde_json::from_str::<String>(payload).map_err(|_| err("bad connect error"))?),
                },
                _ => ReplayInput::Data { conn, bytes: input_bytes(verb, payload).map_err(|m| err(&m))? },
            }
        } else {
            return Err(err("unknown channel"));
        };
        match (dir, input) {
            (">", input) => inputs.push((t, input)),
            ("+", ReplayInput::Data { conn, bytes }) => match inputs.last_mut() {
                Some((_, ReplayInput::Data { conn: prev, bytes: acc })) if *prev == conn => acc.extend(bytes),
                _ => return Err(err("`+` must follow a data line of the same connection")),
            },
            _ => return Err(err("bad direction")),
        }
    }
    Ok(Capture { header, seed, unix, config, inputs })
}

/// The text after the first `n` white-space separated fields.
fn skip_ws_fields(line: &str, n: usize) -> &str {
    let mut rest = line.trim_start();
    for _ in 0..n {
        rest = match rest.find(char::is_whitespace) {
            Some(i) => rest[i..].trim_start(),
            None => "",
        };
    }
    rest
}

/// Bytes for a data verb.
fn input_bytes(verb: &str, payload: &str) -> Result<Vec<u8>, String> {
    let b64 = |p: &str| -> Result<Vec<u8>, String> {
        match p.strip_prefix("b64:") {
            Some(b) => base64::decode(b).ok_or_else(|| "bad base64".to_string()),
            None if p.is_empty() => Ok(Vec::new()),
            None => Err("expected b64:".into()),
        }
    };
    let text = |p: &str| -> Result<String, String> {
        if p.starts_with('"') {
            serde_json::from_str::<String>(p).map_err(|e| format!("bad JSON string: {e}"))
        } else {
            Ok(p.to_string())
        }
    };
    Ok(match verb {
        "http" | "sip" if payload.starts_with("b64:") => b64(payload)?,
        "http" | "sip" => text(payload)?.into_bytes(),
        "data" => b64(payload)?,
        "ws.text" => client_frame(&FrameOut::Text(text(payload)?)),
        "ws.binary" => client_frame(&FrameOut::Binary(b64(payload)?)),
        "ws.ping" => client_frame(&FrameOut::Ping(b64(payload)?)),
        "ws.pong" => client_frame(&FrameOut::Pong(b64(payload)?)),
        "ws.close" if payload.is_empty() => client_frame(&FrameOut::Close(None)),
        "ws.close" => {
            let (code, reason) = payload.split_once(' ').unwrap_or((payload, "\"\""));
            let code = code.parse().map_err(|_| "bad close code".to_string())?;
            client_frame(&FrameOut::Close(Some((code, text(reason.trim())?))))
        }
        other => return Err(format!("unknown verb {}", py_str_repr(other))),
    })
}

/// Feeds `capture` to a fresh core (capturing on) and returns the core's own record of the run:
/// for a faithful core, the same text as the capture. `epoch` is any instant; times are offsets
/// from it.
pub fn replay(capture: &Capture, epoch: Instant) -> Result<String, String> {
    let mut config = capture.config.clone();
    config.capture = true;
    config.tls = None;
    // Captures are taken above TLS: SIP TLS flows replay as plaintext.
    config.sip.tls_replay_plaintext = true;
    // Media is not in captures: its decisions come from the capture; a certificate is still
    // needed to build browser legs (its fingerprint is masked by `mask_media`).
    config.replay = true;
    config.webrtc.dtls_cert = crate::media::webrtc::DtlsIdentity::generate();
    let mut gw = crate::Gateway::new(config, capture.seed, epoch, capture.unix).map_err(|e| e.to_string())?;
    let mut recorded = String::new();
    let drain = |gw: &mut crate::Gateway, recorded: &mut String| {
        while !matches!(gw.poll_output(), Output::Timeout(_)) {}
        recorded.push_str(&gw.take_capture());
    };
    drain(&mut gw, &mut recorded);
    for (t, input) in &capture.inputs {
        let now = epoch + *t;
        match input {
            ReplayInput::Accept { conn, listener, peer } => {
                gw.handle_input(now, Input::Accepted { conn: *conn, listener: *listener, peer: *peer })
            }
            ReplayInput::Data { conn, bytes } => gw.handle_input(now, Input::StreamData { conn: *conn, data: bytes }),
            ReplayInput::Closed { conn } => gw.handle_input(now, Input::StreamClosed { conn: *conn }),
            ReplayInput::Timer => gw.handle_input(now, Input::Timeout),
            ReplayInput::UdpBound { socket, purpose, local } => {
                gw.handle_input(now, Input::UdpBound { socket: *socket, purpose: *purpose, local: *local })
            }
            ReplayInput::UdpBindFailed { socket, error } => {
                gw.handle_input(now, Input::UdpBindFailed { socket: *socket, error: error.clone() })
            }
            ReplayInput::Datagram { socket, from, bytes } => {
                gw.handle_input(now, Input::Datagram { socket: *socket, from: *from, data: bytes })
            }
            ReplayInput::Connected { conn, result } => {
                gw.handle_input(now, Input::Connected { conn: *conn, result: result.clone() })
            }
            ReplayInput::Resolved { query, result } => {
                gw.handle_input(now, Input::Resolved { query: *query, result: result.clone() })
            }
            ReplayInput::Stored { id, result } => {
                gw.handle_input(now, Input::Stored { id: *id, result: result.clone() })
            }
            ReplayInput::Shutdown => gw.handle_input(now, Input::Shutdown),
            ReplayInput::FromWorker { worker, msg } => {
                gw.handle_input(now, Input::FromWorker { worker: *worker, msg: msg.clone() })
            }
            ReplayInput::ToWorkerFailed { worker, msg } => {
                gw.handle_input(now, Input::ToWorkerFailed { worker: *worker, msg: msg.clone() })
            }
            ReplayInput::Reload(config) => gw.handle_input(now, Input::Reload { config }),
            ReplayInput::Media { call, event } => gw.replay_media_event(now, *call, *event),
        }
        drain(&mut gw, &mut recorded);
    }
    // The replayed header is the capture's own (comments kept); the recorder's is dropped.
    let body: String = recorded.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    let mut out = capture.header.join("\n");
    out.push('\n');
    out.push_str(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trip() {
        for d in [Duration::ZERO, Duration::from_millis(120_000), Duration::from_nanos(1_500_001)] {
            assert_eq!(parse_time(&format_time(d)), Some(d));
        }
        assert_eq!(format_time(Duration::from_nanos(12_500_000)), "12.500000");
        assert_eq!(parse_time("12.5"), Some(Duration::from_micros(12_500)));
    }

    /// Found by the `capture_replay` fuzz campaign: a multi-byte character in the seed made the
    /// parser slice inside it and panic.
    #[test]
    fn seed_with_non_ascii_is_an_error() {
        let seed = format!("{}\u{9cf3}{}", "0".repeat(42), "1".repeat(19));
        assert_eq!(seed.len(), 64);
        let text = format!("{MAGIC}\n#  seed   {seed}\n#  unix   0.000\n");
        assert!(parse(&text).is_err());
    }

    #[test]
    fn sip_secrets_blanked() {
        let sip = "INVITE sip:b@x SIP/2.0\r\nAuthorization: Digest username=\"a\", response=\"0123abcd\"\r\n\r\n\
                   a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n\
                   a=crypto:2 AES_256_CM_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdA==\r\n";
        let got: String = serde_json::from_str(&sip_payload(sip.as_bytes())).unwrap();
        assert_eq!(got.len(), sip.len(), "lengths kept");
        assert!(got.contains("response=\"00000000\""), "{got}");
        assert!(got.contains(&format!("inline:{}|2^20|1:4\r\n", "A".repeat(40))), "{got}");
        assert!(got.contains(&format!("inline:{}==\r\n", "A".repeat(62))), "{got}");
        let key =
            crate::media::srtp::CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}", "A".repeat(40)));
        assert!(key.is_ok(), "a blanked key still parses");
        let plain = "OPTIONS sip:b@x SIP/2.0\r\n\r\n";
        assert_eq!(sip_payload(plain.as_bytes()), Value::from(plain).to_string());
    }

    #[test]
    fn redaction() {
        let r = redact_secrets(r#"{"sylkrtc":"account-add","password":"abc","account":"a@b"}"#);
        assert!(r.contains(r#""password":"000""#) && !r.contains("abc"));
        // An empty password stays empty: redaction must not change how a replay validates it.
        assert!(redact_secrets(r#"{"password":""}"#).contains(r#""password":"""#));
        assert_eq!(redact_secrets(r#"{"sylkrtc":"ping"}"#), r#"{"sylkrtc":"ping"}"#);
        assert_eq!(redact_secrets(&r), r, "idempotent");
    }

    #[test]
    fn media_socket_records_parse() {
        let text = format!(
            "{MAGIC}\n#  seed   {}\n#  unix   0.000\n\
             0            > udp:1     bound    webrtc 127.0.0.1:40000\n\
             0            < udp:16    bind     rtp 127.0.0.1:20000\n\
             0            < udp:17    bind     rtcp 127.0.0.1:20001\n\
             1            > udp:17    bindfailed \"Address in use\"\n\
             2            < udp:16    closeudp\n\
             3            > udp:1<127.0.0.1:5000 datagram b64:gAA=\n",
            "00".repeat(32)
        );
        let cap = parse(&text).unwrap();
        let inputs: Vec<ReplayInput> = cap.inputs.into_iter().map(|(_, i)| i).collect();
        assert_eq!(
            inputs,
            [
                ReplayInput::UdpBound {
                    socket: SocketId(1),
                    purpose: UdpPurpose::WebRtc,
                    local: "127.0.0.1:40000".parse().unwrap()
                },
                ReplayInput::UdpBindFailed { socket: SocketId(17), error: "Address in use".into() },
                ReplayInput::Datagram {
                    socket: SocketId(1),
                    from: "127.0.0.1:5000".parse().unwrap(),
                    bytes: vec![0x80, 0]
                },
            ]
        );
    }

    #[test]
    fn storage_records_round_trip() {
        use crate::storage::StoreRequest;
        let mut rec = Recorder::new(crate::time::test_epoch(), &[0; 32], Duration::ZERO, &Config::default());
        let now = rec.start;
        let request = StoreRequest::LookupPublicKey { account: "alice@example.com".into() };
        rec.output(now, &Output::Store { id: StoreId(3), request });
        let outcome = Ok(StoreResult::PublicKey { public_key: Some("line one\nline two".into()) });
        rec.input(now, &Input::Stored { id: StoreId(3), result: outcome.clone() });
        rec.input(now, &Input::Stored { id: StoreId(4), result: Err(StoreError::Unavailable("queue full".into())) });
        let text = rec.take();
        assert!(
            text.contains(r#"< storage   store    3 {"op":"lookup-public-key","account":"alice@example.com"}"#),
            "{text}"
        );
        let inputs: Vec<ReplayInput> = parse(&text).unwrap().inputs.into_iter().map(|(_, i)| i).collect();
        assert_eq!(
            inputs,
            [
                ReplayInput::Stored { id: StoreId(3), result: outcome },
                ReplayInput::Stored { id: StoreId(4), result: Err(StoreError::Unavailable("queue full".into())) },
            ]
        );
        for bad in
            ["0 > storage stored 1", "0 > storage stored x {\"ok\":{\"result\":\"done\"}}", "0 > storage stored 1 {}"]
        {
            let text = format!("{MAGIC}\n#  seed   {}\n#  unix   0.000\n{bad}\n", "00".repeat(32));
            assert!(parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn payload_forms() {
        assert_eq!(text_payload("{\"a\":1}"), "{\"a\":1}");
        assert_eq!(text_payload("a\nb"), "\"a\\nb\"");
        assert_eq!(text_payload("\"q\""), "\"\\\"q\\\"\"");
        assert_eq!(input_bytes("ws.text", "\"a\\nb\"").unwrap(), client_frame(&FrameOut::Text("a\nb".into())));
    }
}
