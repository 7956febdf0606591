//! SIP transports (RFC 3261 §18): the gateway's UDP socket, and TCP connections (accepted on the
//! SIP listener or opened by us), keyed by remote address and reused; Content-Length framing
//! and CRLF keep-alives (RFC 5626 §3.5.1) on streams; idle connections closed.
//!
//! TLS (RFC 3261 §26.3.1, RFC 5922, RFC 5630) as a server: a connection accepted on the SIP TLS
//! listener ([`Transports::accepted_tls`]) gets a `rustls::ServerConnection` with the web
//! listener's certificate (no client certificates asked for); the rest is as below.
//!
//! TLS as a client: a flow to a `transport=tls` or `sips`
//! next hop is a TCP connection the runtime opens (`Connect`) with a `rustls::ClientConnection`
//! on top, fed from memory (ciphertext in, plaintext out, and back). The server certificate is
//! verified against the configured CA certificates for the next hop's *domain* (the host name
//! of the proxy or of the AOR's domain, as SNI too; an IP literal is checked against the
//! certificate's IP addresses), with the core's own clock. What is written before the handshake
//! completes waits in rustls. A handshake or verification failure loses the flow, so its
//! transactions fail. Framing above TLS is the same as on TCP.
//!
//! Captures are taken above TLS: with tapping on, a TLS flow reports its plaintext
//! ([`TransportOut::Tap`]), its TLS records are [`TransportOut::WriteTls`], and a failure below
//! SIP is [`TransportOut::CloseTls`] (recorded as the stream going away). A replay runs TLS flows
//! as plaintext ([`Transports::set_tls_replay_plaintext`]).
//!
//! Connection ids the stack opens have [`OUTGOING_CONN_BIT`] set, so they never collide with
//! the ids the runtime chooses for accepted connections.

use super::framing::{Framed, StreamFramer};
use super::target::Transport;
use crate::ids::{ConnId, SocketId};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set in the ids of connections the core opens (`Output::Connect`).
pub const OUTGOING_CONN_BIT: u64 = 1 << 63;

/// A stream flow with nothing in flight is closed after this long.
pub const IDLE_FLOW: Duration = Duration::from_secs(120);

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// Transport.
    pub transport: Transport,
    /// Remote address.
    pub addr: SocketAddr,
    /// The stream connection, for TCP/TLS.
    pub conn: Option<ConnId>,
}

/// What the transport layer asks the runtime for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportOut {
    /// A UDP datagram.
    Datagram { socket: SocketId, to: SocketAddr, payload: Vec<u8> },
    /// Open a TCP connection with this id.
    Connect { conn: ConnId, to: SocketAddr },
    /// Write to a connection.
    Write { conn: ConnId, data: Vec<u8> },
    /// Close a connection.
    Close { conn: ConnId },
    /// TLS records for a TLS flow: written like [`TransportOut::Write`], but below what
    /// captures record (the plaintext inside is in [`TransportOut::Tap`]).
    WriteTls { conn: ConnId, data: Vec<u8> },
    /// A TLS flow failed or ended below SIP (handshake, certificate, a bad record, the peer's
    /// close_notify): close it like [`TransportOut::Close`]; captures record it as the stream
    /// going away.
    CloseTls { conn: ConnId },
    /// Plaintext of a TLS flow, for captures only: nothing for the runtime to do. Emitted only
    /// with tapping on ([`Transports::set_tap`]).
    Tap { conn: ConnId, sent: bool, plain: Vec<u8> },
}

/// Something that arrived.
#[derive(Debug)]
pub enum Arrival {
    /// One complete message's bytes.
    Message { peer: Peer, bytes: Vec<u8> },
    /// The connection failed or closed; transactions using it fail.
    FlowLost { conn: ConnId },
    /// A TLS flow failed or ended below SIP, after the messages that came before: hand it to
    /// [`Transports::lose_tls`], then treat it as [`Arrival::FlowLost`].
    TlsLost { conn: ConnId },
}

/// The wall clock as the core knows it (its `now` and the Unix time it started at), for
/// rustls' certificate validity checks: the core never reads the system clock.
#[derive(Debug, Default)]
struct CoreClock {
    /// Unix seconds + 1; 0 while unknown.
    secs: AtomicU64,
}

impl rustls::time_provider::TimeProvider for CoreClock {
    fn current_time(&self) -> Option<UnixTime> {
        match self.secs.load(Ordering::Relaxed) {
            0 => None,
            s => Some(UnixTime::since_unix_epoch(Duration::from_secs(s - 1))),
        }
    }
}

/// The client side of SIP over TLS: trust roots, the shared rustls configuration (built on
/// first use) and the clock it reads.
struct TlsClients {
    roots_pem: Option<Arc<[u8]>>,
    config: Option<Result<Arc<rustls::ClientConfig>, String>>,
    clock: Arc<CoreClock>,
    /// `(start, unix time at start)`.
    anchor: Option<(Instant, Duration)>,
    /// Replay: TLS flows carry plaintext.
    replay_plaintext: bool,
    /// The SIP TLS listener's server configuration, when there is one.
    server: Option<Arc<rustls::ServerConfig>>,
    /// Report plaintext for captures.
    tap: bool,
}

impl std::fmt::Debug for TlsClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClients")
            .field("roots_pem", &self.roots_pem.as_ref().map(|p| p.len()))
            .field("built", &self.config.as_ref().map(|c| c.as_ref().map(|_| ())))
            .field("replay_plaintext", &self.replay_plaintext)
            .field("tap", &self.tap)
            .finish_non_exhaustive()
    }
}

impl TlsClients {
    /// Tells the clock the time before rustls looks at it.
    fn tick(&self, now: Instant) {
        if let Some((start, unix)) = self.anchor {
            let t = unix + now.saturating_duration_since(start);
            self.clock.secs.store(t.as_secs() + 1, Ordering::Relaxed);
        }
    }

    /// A new client session verifying `name`.
    fn session(&mut self, name: &str) -> Result<rustls::ClientConnection, String> {
        let config = match &self.config {
            Some(c) => c.clone(),
            None => {
                let built = client_config(self.roots_pem.as_deref(), self.clock.clone());
                self.roots_pem = None; // parsed once; the configuration holds the roots now
                self.config = Some(built.clone());
                built
            }
        }?;
        let server_name =
            ServerName::try_from(name.to_string()).map_err(|e| format!("{name:?} is not a TLS server name: {e}"))?;
        let mut conn = rustls::ClientConnection::new(config, server_name).map_err(|e| e.to_string())?;
        // Bounded by the SIP messages we send: nothing is dropped before the handshake is done.
        conn.set_buffer_limit(None);
        Ok(conn)
    }
}

/// The rustls client configuration shared by every SIP TLS flow of a core: the CA certificates
/// in `roots_pem`, aws-lc-rs, TLS 1.2 and 1.3, the core's clock.
fn client_config(
    roots_pem: Option<&[u8]>,
    clock: Arc<dyn rustls::time_provider::TimeProvider>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let Some(pem) = roots_pem else {
        return Err("no CA certificates to verify SIP TLS servers with (set sip_tls_ca_file)".into());
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect();
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "no usable CA certificate in sip_tls_ca_file ({ignored} unusable): SIP TLS servers cannot be verified"
        ));
    }
    log::debug!("SIP TLS: {added} CA certificates ({ignored} unusable)");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_details(provider, clock)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Why a TLS flow ended below SIP.
#[derive(Debug)]
enum TlsEnd {
    Failed(String),
    PeerClosed,
}

/// Feeds ciphertext to a session; appends the plaintext to `plain`.
fn tls_receive(tls: &mut rustls::Connection, mut data: &[u8], plain: &mut Vec<u8>) -> Result<(), TlsEnd> {
    while !data.is_empty() {
        tls.read_tls(&mut data).map_err(|e| TlsEnd::Failed(e.to_string()))?;
        let state = tls.process_new_packets().map_err(|e| TlsEnd::Failed(e.to_string()))?;
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            let start = plain.len();
            plain.resize(start + n, 0);
            tls.reader().read_exact(&mut plain[start..]).map_err(|e| TlsEnd::Failed(e.to_string()))?;
        }
        if state.peer_has_closed() {
            return Err(TlsEnd::PeerClosed);
        }
    }
    Ok(())
}

/// TLS records waiting to go out.
fn tls_take(tls: &mut rustls::Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while tls.wants_write() {
        if tls.write_tls(&mut out).is_err() {
            break;
        }
    }
    out
}

struct Flow {
    transport: Transport,
    remote: SocketAddr,
    /// The TLS server name (the next hop's domain or IP); empty for TCP.
    name: String,
    framer: StreamFramer,
    /// Writes waiting for the connection to come up.
    queued: Option<Vec<u8>>,
    last_used: Instant,
    /// Registrations and transactions keeping the flow open.
    users: u32,
    /// The TLS session of an up TLS flow (not in a plaintext replay): a client session for the
    /// flows we open, a server session for those accepted on the SIP TLS listener.
    tls: Option<Box<rustls::Connection>>,
    /// The TLS handshake completed (logged once).
    tls_up: bool,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("transport", &self.transport)
            .field("remote", &self.remote)
            .field("name", &self.name)
            .field("users", &self.users)
            .field("tls_up", &self.tls_up)
            .finish_non_exhaustive()
    }
}

impl Flow {
    /// Sends plaintext: queued while connecting, through TLS on a TLS flow.
    fn write(&mut self, conn: ConnId, bytes: Vec<u8>, tap: bool, out: &mut Vec<TransportOut>) {
        if let Some(q) = &mut self.queued {
            q.extend_from_slice(&bytes);
            return;
        }
        let Some(tls) = &mut self.tls else {
            out.push(TransportOut::Write { conn, data: bytes });
            return;
        };
        // Writing into rustls' (unlimited) buffer cannot fail short of memory exhaustion.
        let _ = tls.writer().write_all(&bytes);
        if tap {
            out.push(TransportOut::Tap { conn, sent: true, plain: bytes });
        }
        let data = tls_take(tls);
        if !data.is_empty() {
            out.push(TransportOut::WriteTls { conn, data });
        }
    }

    /// Sends close_notify on a TLS flow.
    fn close_notify(&mut self, conn: ConnId, out: &mut Vec<TransportOut>) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let data = tls_take(tls);
            if !data.is_empty() {
                out.push(TransportOut::WriteTls { conn, data });
            }
        }
    }
}

/// The transport layer.
#[derive(Debug)]
pub struct Transports {
    udp: Option<(SocketId, SocketAddr)>,
    flows: BTreeMap<ConnId, Flow>,
    /// `(transport, remote, TLS server name)`.
    by_remote: BTreeMap<(Transport, SocketAddr, String), ConnId>,
    next_conn: u64,
    max_message: usize,
    tls: TlsClients,
}

impl Transports {
    /// No sockets yet.
    pub fn new(max_message: usize) -> Self {
        Self {
            udp: None,
            flows: BTreeMap::new(),
            by_remote: BTreeMap::new(),
            next_conn: 1,
            max_message,
            tls: TlsClients {
                roots_pem: None,
                config: None,
                clock: Arc::default(),
                anchor: None,
                replay_plaintext: false,
                server: None,
                tap: false,
            },
        }
    }

    /// The PEM text of the CA certificates TLS servers are verified against (parsed on the
    /// first TLS flow). Without it, TLS flows fail.
    pub fn set_tls_roots(&mut self, pem: Option<Arc<[u8]>>) {
        self.tls.roots_pem = pem;
        self.tls.config = None;
    }

    /// Anchors the clock rustls checks certificate validity with: `unix` is the Unix time at
    /// `start`; later times follow the `now` of each call.
    pub fn set_clock(&mut self, start: Instant, unix: Duration) {
        self.tls.anchor = Some((start, unix));
    }

    /// Replay only: TLS flows carry plaintext (no TLS), as captures record them.
    pub fn set_tls_replay_plaintext(&mut self, on: bool) {
        self.tls.replay_plaintext = on;
    }

    /// Reports the plaintext of TLS flows as [`TransportOut::Tap`] (for captures).
    pub fn set_tap(&mut self, on: bool) {
        self.tls.tap = on;
    }

    /// The runtime bound the SIP UDP socket.
    pub fn set_udp(&mut self, socket: SocketId, local: SocketAddr) {
        self.udp = Some((socket, local));
    }

    /// The UDP socket, if bound.
    pub fn udp(&self) -> Option<(SocketId, SocketAddr)> {
        self.udp
    }

    /// Whether `conn` is one of ours.
    pub fn owns(&self, conn: ConnId) -> bool {
        self.flows.contains_key(&conn)
    }

    /// Whether the bytes of `conn` are TLS records (a TLS flow, not in a plaintext replay).
    pub fn encrypted(&self, conn: ConnId) -> bool {
        self.flows.get(&conn).is_some_and(|f| f.transport == Transport::Tls && !self.tls.replay_plaintext)
    }

    /// Number of open stream flows.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// A TCP connection arrived on the SIP listener.
    pub fn accepted(&mut self, conn: ConnId, remote: SocketAddr, now: Instant) {
        self.flows.insert(conn, self.flow(Transport::Tcp, remote, String::new(), None, now));
        self.by_remote.insert((Transport::Tcp, remote, String::new()), conn);
    }

    /// The server configuration of the SIP TLS listener.
    pub fn set_tls_server(&mut self, config: Arc<rustls::ServerConfig>) {
        self.tls.server = Some(config);
    }

    /// A TCP connection arrived on the SIP TLS listener: a TLS flow whose server session waits
    /// for the peer's ClientHello (plaintext in a replay). False when it cannot be served (no
    /// server configuration): the caller closes it.
    pub fn accepted_tls(&mut self, conn: ConnId, remote: SocketAddr, now: Instant) -> bool {
        let tls = if self.tls.replay_plaintext {
            None
        } else {
            let Some(config) = self.tls.server.clone() else {
                log::warn!("SIP TLS connection from {remote} but no TLS server configuration; closing");
                return false;
            };
            match rustls::ServerConnection::new(config) {
                Ok(c) => Some(Box::new(rustls::Connection::Server(c))),
                Err(e) => {
                    log::warn!("SIP TLS session for {remote}: {e}; closing");
                    return false;
                }
            }
        };
        let mut flow = self.flow(Transport::Tls, remote, remote.ip().to_string(), None, now);
        flow.tls = tls;
        self.flows.insert(conn, flow);
        self.by_remote.insert((Transport::Tls, remote, remote.ip().to_string()), conn);
        true
    }

    fn flow(
        &self,
        transport: Transport,
        remote: SocketAddr,
        name: String,
        queued: Option<Vec<u8>>,
        now: Instant,
    ) -> Flow {
        Flow {
            transport,
            remote,
            name,
            framer: StreamFramer::new(self.max_message),
            queued,
            last_used: now,
            users: 0,
            tls: None,
            tls_up: false,
        }
    }

    /// Sends `bytes` to `peer`. Stream transports reuse the peer's connection or open one.
    /// Returns the connection used, if any. A new TLS flow verifies the remote's IP address;
    /// see [`Transports::send_named`].
    pub fn send(&mut self, peer: Peer, bytes: Vec<u8>, now: Instant, out: &mut Vec<TransportOut>) -> Option<ConnId> {
        self.send_named(peer, None, bytes, now, out)
    }

    /// [`Transports::send`] where a TLS flow is to the domain `name` (SNI and certificate
    /// check; RFC 5922 §4), or to the remote's IP address when `None`.
    pub fn send_named(
        &mut self,
        peer: Peer,
        name: Option<&str>,
        bytes: Vec<u8>,
        now: Instant,
        out: &mut Vec<TransportOut>,
    ) -> Option<ConnId> {
        match peer.transport {
            Transport::Udp => {
                match self.udp {
                    Some((socket, _)) => out.push(TransportOut::Datagram { socket, to: peer.addr, payload: bytes }),
                    None => log::warn!("SIP over UDP to {} but no UDP socket is bound", peer.addr),
                }
                None
            }
            Transport::Tcp | Transport::Tls => {
                let name = match peer.transport {
                    Transport::Tls => name.map_or_else(|| peer.addr.ip().to_string(), str::to_ascii_lowercase),
                    _ => String::new(),
                };
                let key = (peer.transport, peer.addr, name);
                let conn =
                    peer.conn.filter(|c| self.flows.contains_key(c)).or_else(|| self.by_remote.get(&key).copied());
                if let Some(conn) = conn {
                    let tap = self.tls.tap;
                    let flow = self.flows.get_mut(&conn)?;
                    flow.last_used = now;
                    self.tls.tick(now);
                    flow.write(conn, bytes, tap, out);
                    return Some(conn);
                }
                let conn = ConnId(OUTGOING_CONN_BIT | self.next_conn);
                self.next_conn += 1;
                let flow = self.flow(peer.transport, peer.addr, key.2.clone(), Some(bytes), now);
                self.flows.insert(conn, flow);
                self.by_remote.insert(key, conn);
                out.push(TransportOut::Connect { conn, to: peer.addr });
                Some(conn)
            }
        }
    }

    /// The runtime finished connecting `conn`. A TLS flow starts its handshake; what was
    /// queued waits in the TLS session for the handshake to complete.
    pub fn connected(
        &mut self,
        conn: ConnId,
        ok: bool,
        now: Instant,
        out: &mut Vec<TransportOut>,
        arrivals: &mut Vec<Arrival>,
    ) {
        let Some(flow) = self.flows.get_mut(&conn) else { return };
        if !ok {
            log::info!("SIP connection to {} failed", flow.remote);
            self.drop_flow(conn);
            arrivals.push(Arrival::FlowLost { conn });
            return;
        }
        let queued = flow.queued.take().unwrap_or_default();
        if flow.transport != Transport::Tls || self.tls.replay_plaintext {
            if !queued.is_empty() {
                out.push(TransportOut::Write { conn, data: queued });
            }
            return;
        }
        self.tls.tick(now);
        // Seen from above TLS, what was queued is written now (it waits in rustls).
        if self.tls.tap && !queued.is_empty() {
            out.push(TransportOut::Tap { conn, sent: true, plain: queued.clone() });
        }
        match self.tls.session(&flow.name) {
            Ok(tls) => {
                log::debug!("SIP TLS to {} ({}): handshake started", flow.name, flow.remote);
                let mut tls = rustls::Connection::Client(tls);
                let _ = tls.writer().write_all(&queued);
                let data = tls_take(&mut tls);
                flow.tls = Some(Box::new(tls));
                if !data.is_empty() {
                    out.push(TransportOut::WriteTls { conn, data });
                }
            }
            Err(e) => {
                log::warn!("SIP TLS to {} ({}) failed: {e}", flow.name, flow.remote);
                self.drop_flow(conn);
                out.push(TransportOut::CloseTls { conn });
                arrivals.push(Arrival::FlowLost { conn });
            }
        }
    }

    /// A datagram on the SIP UDP socket.
    pub fn datagram(&mut self, from: SocketAddr, data: &[u8], arrivals: &mut Vec<Arrival>) {
        if super::framing::is_keepalive(data) {
            return;
        }
        if data.len() > self.max_message {
            log::info!("dropping a {}-byte datagram from {from}: over the SIP message limit", data.len());
            return;
        }
        arrivals.push(Arrival::Message {
            peer: Peer { transport: Transport::Udp, addr: from, conn: None },
            bytes: data.to_vec(),
        });
    }

    /// Bytes on a stream flow (TLS records on an encrypted flow).
    pub fn stream_data(
        &mut self,
        conn: ConnId,
        data: &[u8],
        now: Instant,
        out: &mut Vec<TransportOut>,
        arrivals: &mut Vec<Arrival>,
    ) {
        let tap = self.tls.tap;
        self.tls.tick(now);
        let Some(flow) = self.flows.get_mut(&conn) else { return };
        flow.last_used = now;
        let mut end = None;
        if let Some(tls) = &mut flow.tls {
            let mut plain = Vec::new();
            if let Err(e) = tls_receive(tls, data, &mut plain) {
                end = Some(e);
            }
            if matches!(end, Some(TlsEnd::PeerClosed)) {
                tls.send_close_notify();
            }
            let records = tls_take(tls);
            if !records.is_empty() {
                out.push(TransportOut::WriteTls { conn, data: records });
            }
            if !flow.tls_up && !tls.is_handshaking() && end.is_none() {
                flow.tls_up = true;
                log::info!(
                    "SIP TLS to {} ({}): up, {} {}",
                    flow.name,
                    flow.remote,
                    tls.protocol_version().map_or_else(String::new, |v| format!("{v:?}")),
                    tls.negotiated_cipher_suite().map_or_else(String::new, |s| format!("{:?}", s.suite())),
                );
            }
            if tap && !plain.is_empty() {
                out.push(TransportOut::Tap { conn, sent: false, plain: plain.clone() });
            }
            flow.framer.push(&plain);
        } else {
            flow.framer.push(data);
        }
        let peer = Peer { transport: flow.transport, addr: flow.remote, conn: Some(conn) };
        while let Some(item) = flow.framer.next() {
            match item {
                Ok(Framed::Message(bytes)) => arrivals.push(Arrival::Message { peer, bytes }),
                // RFC 5626 §3.5.1: a double CRLF ping gets a single CRLF pong.
                Ok(Framed::KeepAlivePing) => flow.write(conn, b"\r\n".to_vec(), tap, out),
                Ok(Framed::KeepAlivePong) => {}
                Err(e) => {
                    log::info!("SIP stream from {}: {e:?}; closing", flow.remote);
                    flow.close_notify(conn, out);
                    self.drop_flow(conn);
                    out.push(TransportOut::Close { conn });
                    arrivals.push(Arrival::FlowLost { conn });
                    return;
                }
            }
        }
        match end {
            Some(TlsEnd::Failed(e)) => {
                log::warn!("SIP TLS to {} ({}) failed: {e}", flow.name, flow.remote);
                arrivals.push(Arrival::TlsLost { conn });
            }
            Some(TlsEnd::PeerClosed) => {
                log::info!("SIP TLS to {} ({}): the peer closed (close_notify)", flow.name, flow.remote);
                arrivals.push(Arrival::TlsLost { conn });
            }
            None => {}
        }
    }

    /// Forgets a TLS flow reported by [`Arrival::TlsLost`] and closes it; `false` when it was
    /// already gone.
    pub fn lose_tls(&mut self, conn: ConnId, out: &mut Vec<TransportOut>) -> bool {
        if !self.flows.contains_key(&conn) {
            return false;
        }
        self.drop_flow(conn);
        out.push(TransportOut::CloseTls { conn });
        true
    }

    /// The runtime reports the connection gone.
    pub fn closed(&mut self, conn: ConnId, arrivals: &mut Vec<Arrival>) {
        if self.flows.contains_key(&conn) {
            self.drop_flow(conn);
            arrivals.push(Arrival::FlowLost { conn });
        }
    }

    /// Marks one more (or one fewer) user of a flow, which keeps it from idling out.
    pub fn retain(&mut self, conn: ConnId, more: bool, now: Instant) {
        if let Some(f) = self.flows.get_mut(&conn) {
            f.users = if more { f.users + 1 } else { f.users.saturating_sub(1) };
            f.last_used = now;
        }
    }

    /// When the next idle flow should be closed.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.flows.values().filter(|f| f.users == 0).map(|f| f.last_used + IDLE_FLOW).min()
    }

    /// Closes flows idle for [`IDLE_FLOW`] with no users.
    pub fn close_idle(&mut self, now: Instant, out: &mut Vec<TransportOut>) {
        let idle: Vec<ConnId> = self
            .flows
            .iter()
            .filter(|(_, f)| f.users == 0 && f.last_used + IDLE_FLOW <= now)
            .map(|(c, _)| *c)
            .collect();
        for conn in idle {
            log::debug!("closing idle SIP connection {conn}");
            if let Some(f) = self.flows.get_mut(&conn) {
                f.close_notify(conn, out);
            }
            self.drop_flow(conn);
            out.push(TransportOut::Close { conn });
        }
    }

    fn drop_flow(&mut self, conn: ConnId) {
        if let Some(f) = self.flows.remove(&conn) {
            let key = (f.transport, f.remote, f.name);
            if self.by_remote.get(&key) == Some(&conn) {
                self.by_remote.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0_UNIX: Duration = Duration::from_secs(1_767_225_600); // 2026-01-01

    /// A self-signed certificate for `names` and an in-memory rustls server using it.
    fn server(names: &[&str]) -> (Vec<u8>, Arc<rustls::ServerConfig>) {
        let ck =
            rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("rcgen");
        let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).expect("key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        (ck.cert.pem().into_bytes(), Arc::new(config))
    }

    fn transports(roots: Option<Vec<u8>>, start: Instant) -> Transports {
        let mut t = Transports::new(64 * 1024);
        t.set_tls_roots(roots.map(Into::into));
        t.set_clock(start, T0_UNIX);
        t
    }

    fn tls_peer() -> Peer {
        Peer { transport: Transport::Tls, addr: "192.0.2.5:5061".parse().unwrap(), conn: None }
    }

    /// Moves TLS records between the flow and the server until neither has anything to say;
    /// returns the plaintext the server read, what arrived at the flow, and the server's
    /// error, if any.
    fn pump(
        t: &mut Transports,
        conn: ConnId,
        srv: &mut rustls::ServerConnection,
        mut out: Vec<TransportOut>,
        now: Instant,
    ) -> (Vec<u8>, Vec<Arrival>, Option<rustls::Error>) {
        let (mut server_plain, mut arrivals, mut error) = (Vec::new(), Vec::new(), None);
        for _ in 0..20 {
            let mut to_server = Vec::new();
            for o in out.drain(..) {
                match &o {
                    TransportOut::WriteTls { conn: c, data } if *c == conn => to_server.extend_from_slice(data),
                    TransportOut::Write { conn: c, .. } if *c == conn => panic!("plaintext on a TLS flow: {o:?}"),
                    _ => {}
                }
            }
            let mut rd = &to_server[..];
            while !rd.is_empty() && error.is_none() {
                srv.read_tls(&mut rd).unwrap();
                error = srv.process_new_packets().err();
            }
            let _ = srv.reader().read_to_end(&mut server_plain);
            let mut to_client = Vec::new();
            while srv.wants_write() {
                srv.write_tls(&mut to_client).unwrap();
            }
            if to_server.is_empty() && to_client.is_empty() {
                break;
            }
            if !to_client.is_empty() && t.owns(conn) {
                t.stream_data(conn, &to_client, now, &mut out, &mut arrivals);
            }
        }
        (server_plain, arrivals, error)
    }

    #[test]
    fn handshake_then_messages_both_ways() {
        let start = crate::time::test_epoch();
        let (ca, server_config) = server(&["sip.test"]);
        let mut t = transports(Some(ca), start);
        t.set_tap(true);
        let mut out = Vec::new();
        let register = b"REGISTER sip:sip.test SIP/2.0\r\nContent-Length: 0\r\n\r\n".to_vec();
        let conn = t.send_named(tls_peer(), Some("SIP.test"), register.clone(), start, &mut out).unwrap();
        assert_eq!(out, [TransportOut::Connect { conn, to: tls_peer().addr }]);
        assert!(t.encrypted(conn));
        // Queued until the TCP connection is up, then handed to TLS: only records go out.
        let (mut out, mut arrivals) = (Vec::new(), Vec::new());
        t.connected(conn, true, start, &mut out, &mut arrivals);
        assert!(arrivals.is_empty());
        assert_eq!(out[0], TransportOut::Tap { conn, sent: true, plain: register.clone() });
        assert!(matches!(&out[1], TransportOut::WriteTls { conn: c, data } if *c == conn && data[0] == 0x16));
        let mut srv = rustls::ServerConnection::new(server_config).unwrap();
        let (got, arrivals, _) = pump(&mut t, conn, &mut srv, out, start);
        assert_eq!(got, register, "the server reads the REGISTER once the handshake is done");
        assert!(arrivals.is_empty(), "{arrivals:?}");
        assert_eq!(srv.server_name(), Some("sip.test"), "SNI is the domain, lower-cased");
        // A response in two records, and a CRLF keep-alive ping, are framed above TLS.
        let response = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        srv.writer().write_all(&response[..10]).unwrap();
        let mut records = Vec::new();
        while srv.wants_write() {
            srv.write_tls(&mut records).unwrap();
        }
        srv.writer().write_all(&response[10..]).unwrap();
        srv.writer().write_all(b"\r\n\r\n").unwrap();
        while srv.wants_write() {
            srv.write_tls(&mut records).unwrap();
        }
        let (mut out, mut arrivals) = (Vec::new(), Vec::new());
        t.stream_data(conn, &records, start, &mut out, &mut arrivals);
        assert!(
            matches!(&arrivals[..], [Arrival::Message { peer, bytes }] if bytes == response && peer.conn == Some(conn) && peer.transport == Transport::Tls),
            "{arrivals:?}"
        );
        assert!(out.contains(&TransportOut::Tap { conn, sent: false, plain: [&response[..], b"\r\n\r\n"].concat() }));
        assert!(out.contains(&TransportOut::Tap { conn, sent: true, plain: b"\r\n".to_vec() }), "pong: {out:?}");
        let (got, _, _) = pump(&mut t, conn, &mut srv, out, start);
        assert_eq!(got, b"\r\n");
        // The same flow is reused for the same domain; another name gets its own flow.
        let mut out = Vec::new();
        assert_eq!(t.send_named(tls_peer(), Some("sip.test"), b"x".to_vec(), start, &mut out), Some(conn));
        let other = t.send_named(tls_peer(), Some("other.test"), b"x".to_vec(), start, &mut out).unwrap();
        assert_ne!(other, conn);
        // Idle: close_notify, then the close.
        let mut out = Vec::new();
        t.retain(other, false, start);
        t.close_idle(start + IDLE_FLOW, &mut out);
        assert!(matches!(out.last(), Some(TransportOut::Close { .. })));
        assert!(out.iter().any(|o| matches!(o, TransportOut::WriteTls { conn: c, .. } if *c == conn)));
        assert_eq!(t.flow_count(), 0);
    }

    /// A connection accepted on the SIP TLS listener: a server session with the configured
    /// certificate; a TLS client's request arrives framed, with the flow's transport TLS, and
    /// the answer goes back encrypted on the same connection. Without a server configuration
    /// the connection is refused; a replay runs it as plaintext.
    #[test]
    fn accepted_tls_serves_a_tls_client() {
        let start = crate::time::test_epoch();
        let (ca, server_config) = server(&["gw.test"]);
        let mut t = transports(None, start);
        let conn = ConnId(7);
        let remote: SocketAddr = "192.0.2.9:40000".parse().unwrap();
        assert!(!t.accepted_tls(conn, remote, start), "no server configuration: refused");
        t.set_tls_server(server_config);
        assert!(t.accepted_tls(conn, remote, start));
        assert!(t.encrypted(conn) && t.owns(conn));
        // A rustls client trusting the certificate.
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut cli = rustls::ClientConnection::new(Arc::new(config), "gw.test".try_into().unwrap()).unwrap();
        let options = b"OPTIONS sip:gw.test SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        cli.writer().write_all(options).unwrap();
        let (mut arrivals, mut client_plain) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            let mut records = Vec::new();
            while cli.wants_write() {
                cli.write_tls(&mut records).unwrap();
            }
            let mut out = Vec::new();
            if !records.is_empty() {
                t.stream_data(conn, &records, start, &mut out, &mut arrivals);
            }
            if let Some(Arrival::Message { peer, .. }) = arrivals.first() {
                if client_plain.is_empty() {
                    t.send(*peer, b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(), start, &mut out);
                }
            }
            let to_client: Vec<u8> = out
                .iter()
                .filter_map(|o| match o {
                    TransportOut::WriteTls { conn: c, data } if *c == conn => Some(data.clone()),
                    TransportOut::Write { .. } => panic!("plaintext on a TLS flow: {o:?}"),
                    _ => None,
                })
                .flatten()
                .collect();
            let mut rd = &to_client[..];
            while !rd.is_empty() {
                cli.read_tls(&mut rd).unwrap();
                cli.process_new_packets().unwrap();
            }
            let _ = cli.reader().read_to_end(&mut client_plain);
            if records.is_empty() && to_client.is_empty() {
                break;
            }
        }
        assert!(
            matches!(&arrivals[..], [Arrival::Message { peer, bytes }] if bytes == options && peer.conn == Some(conn) && peer.transport == Transport::Tls && peer.addr == remote),
            "{arrivals:?}"
        );
        assert_eq!(client_plain, b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        // A replay carries the plaintext the capture recorded.
        let mut r = transports(None, start);
        r.set_tls_replay_plaintext(true);
        assert!(r.accepted_tls(conn, remote, start), "no configuration needed in a replay");
        assert!(!r.encrypted(conn));
    }

    /// The certificate names another host: the handshake fails, an alert goes out and the
    /// flow is lost, with nothing of the queued plaintext reaching the server.
    #[test]
    fn certificate_for_another_name_fails() {
        let start = crate::time::test_epoch();
        let (ca, server_config) = server(&["elsewhere.test"]);
        let mut t = transports(Some(ca), start);
        let mut out = Vec::new();
        let conn = t.send_named(tls_peer(), Some("sip.test"), b"REGISTER".to_vec(), start, &mut out).unwrap();
        let (mut out, mut arrivals) = (Vec::new(), Vec::new());
        t.connected(conn, true, start, &mut out, &mut arrivals);
        let mut srv = rustls::ServerConnection::new(server_config).unwrap();
        let (got, arrivals, server_error) = pump(&mut t, conn, &mut srv, out, start);
        assert!(got.is_empty());
        assert!(
            matches!(server_error, Some(rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate))),
            "the server hears why: {server_error:?}"
        );
        assert!(matches!(&arrivals[..], [Arrival::TlsLost { conn: c }] if *c == conn), "{arrivals:?}");
        let mut out = Vec::new();
        assert!(t.lose_tls(conn, &mut out));
        assert_eq!(out, [TransportOut::CloseTls { conn }]);
        assert!(!t.owns(conn) && !t.lose_tls(conn, &mut out));
    }

    /// An IP literal is checked against the certificate's IP addresses (no SNI).
    #[test]
    fn ip_literal_checks_ip_san() {
        let start = crate::time::test_epoch();
        for (names, ok) in [(&["192.0.2.5"][..], true), (&["192.0.2.6", "sip.test"][..], false)] {
            let (ca, server_config) = server(names);
            let mut t = transports(Some(ca), start);
            let mut out = Vec::new();
            let conn = t.send_named(tls_peer(), Some("192.0.2.5"), b"OPTIONS".to_vec(), start, &mut out).unwrap();
            let (mut out, mut arrivals) = (Vec::new(), Vec::new());
            t.connected(conn, true, start, &mut out, &mut arrivals);
            let mut srv = rustls::ServerConnection::new(server_config).unwrap();
            let (got, arrivals, _) = pump(&mut t, conn, &mut srv, out, start);
            assert_eq!(srv.server_name(), None);
            assert_eq!((got == b"OPTIONS", arrivals.is_empty()), (ok, ok), "{names:?}: {arrivals:?}");
        }
    }

    /// The validity period is checked with the core's clock, not the system's.
    #[test]
    fn expiry_uses_the_core_clock() {
        let start = crate::time::test_epoch();
        let (ca, server_config) = server(&["sip.test"]);
        let mut t = Transports::new(64 * 1024);
        t.set_tls_roots(Some(ca.into()));
        // rcgen certificates are valid until 4096: in 5000 they have expired.
        t.set_clock(start, Duration::from_secs(95_617_584_000));
        let mut out = Vec::new();
        let conn = t.send_named(tls_peer(), Some("sip.test"), b"x".to_vec(), start, &mut out).unwrap();
        let (mut out, mut arrivals) = (Vec::new(), Vec::new());
        t.connected(conn, true, start, &mut out, &mut arrivals);
        let mut srv = rustls::ServerConnection::new(server_config).unwrap();
        let (_, arrivals, _) = pump(&mut t, conn, &mut srv, out, start);
        assert!(matches!(&arrivals[..], [Arrival::TlsLost { .. }]), "{arrivals:?}");
    }

    /// No trust roots, or none usable: the flow fails once connected, with no TLS record sent.
    #[test]
    fn no_roots_fail_the_flow() {
        let start = crate::time::test_epoch();
        for roots in [None, Some(b"not PEM".to_vec())] {
            let mut t = transports(roots, start);
            let mut out = Vec::new();
            let conn = t.send_named(tls_peer(), Some("sip.test"), b"x".to_vec(), start, &mut out).unwrap();
            let (mut out, mut arrivals) = (Vec::new(), Vec::new());
            t.connected(conn, true, start, &mut out, &mut arrivals);
            assert_eq!(out, [TransportOut::CloseTls { conn }]);
            assert!(matches!(&arrivals[..], [Arrival::FlowLost { conn: c }] if *c == conn));
            assert_eq!(t.flow_count(), 0);
        }
    }

    /// The peer's close_notify ends the flow after the messages before it, and is answered.
    #[test]
    fn close_notify_ends_the_flow() {
        let start = crate::time::test_epoch();
        let (ca, server_config) = server(&["sip.test"]);
        let mut t = transports(Some(ca), start);
        let mut out = Vec::new();
        let conn = t.send_named(tls_peer(), Some("sip.test"), b"x".to_vec(), start, &mut out).unwrap();
        let (mut out, mut arrivals) = (Vec::new(), Vec::new());
        t.connected(conn, true, start, &mut out, &mut arrivals);
        let mut srv = rustls::ServerConnection::new(server_config).unwrap();
        pump(&mut t, conn, &mut srv, out, start);
        srv.writer().write_all(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n").unwrap();
        srv.send_close_notify();
        let mut records = Vec::new();
        while srv.wants_write() {
            srv.write_tls(&mut records).unwrap();
        }
        let (mut out, mut arrivals) = (Vec::new(), Vec::new());
        t.stream_data(conn, &records, start, &mut out, &mut arrivals);
        assert!(matches!(&arrivals[..], [Arrival::Message { .. }, Arrival::TlsLost { .. }]), "{arrivals:?}");
        assert!(matches!(&out[..], [TransportOut::WriteTls { .. }]), "our close_notify: {out:?}");
    }

    /// In a replay, TLS flows carry plaintext.
    #[test]
    fn replay_runs_tls_flows_as_plaintext() {
        let start = crate::time::test_epoch();
        let mut t = transports(None, start);
        t.set_tls_replay_plaintext(true);
        let mut out = Vec::new();
        let conn = t.send_named(tls_peer(), Some("sip.test"), b"REGISTER".to_vec(), start, &mut out).unwrap();
        assert!(!t.encrypted(conn));
        let (mut out, mut arrivals) = (Vec::new(), Vec::new());
        t.connected(conn, true, start, &mut out, &mut arrivals);
        assert_eq!(out, [TransportOut::Write { conn, data: b"REGISTER".to_vec() }]);
        t.stream_data(conn, b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", start, &mut out, &mut arrivals);
        assert!(matches!(&arrivals[..], [Arrival::Message { .. }]));
    }
}
