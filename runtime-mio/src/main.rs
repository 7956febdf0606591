//! `sylkgw-mio`: the sans-IO core ([`Gateway`]) driven by one thread and one mio `Poll`.
//!
//! The low-footprint binary: one shared 64 KiB read buffer, and per connection only the socket,
//! a write queue that holds no allocation while empty, a flag and the registered interest.
//!
//! # Contracts
//! - mio is edge-triggered: a readable event is read until `WouldBlock`, a writable one written
//!   until `WouldBlock`. Interest is `READABLE`, plus `WRITABLE` only while bytes are queued.
//!   Reading pauses while [`HIGH_WATER`] bytes or more are queued (a peer that sends but does
//!   not read cannot grow the queue without bound). A connection whose queue grows beyond
//!   `max_pending_bytes` anyway (events the core sends on its own) is dropped with a TCP reset
//!   and reported with `Input::StreamClosed`.
//! - A connection the core closed gets [`CLOSE_LINGER`] to take its last bytes, then is dropped.
//! - Tokens: 0 the web listener, 1 the signal pipe, 2 the SIP UDP socket, 3 the SIP TCP
//!   listener, 4 the waker of the name-resolution and storage pools; a token with bit 62 ([`UDP_TOKEN`]) set is a UDP
//!   socket other than SIP's, its [`SocketId`] in the low bits (1 the WebRTC socket, bound at
//!   start; 16 and up those the core asks for with `Output::BindUdp`); any other token is a
//!   connection and equals its [`ConnId`] (accepted ids start at 16 and are never reused; ids of
//!   connections the core opens have the high bit set).
//! - UDP sockets the core asks for are bound at once, inside the drain; the answer
//!   (`Input::UdpBound` or `Input::UdpBindFailed`) is fed right after the drain. Per socket the
//!   runtime keeps only the mio socket; `Output::CloseUdp` drops it (after sending what is queued
//!   for it). `Output::Datagram` goes out of the socket its id names, batched: datagrams are
//!   queued during drains and sent with `sendmmsg` after each batch of received datagrams and
//!   before the loop sleeps ([`driver::udp_batch`]). Every UDP socket is read until `WouldBlock`:
//!   SIP's into the shared 64 KiB buffer one datagram at a time (a SIP message may be that long),
//!   media sockets with `recvmmsg`, up to [`driver::udp_batch::BATCH`] datagrams per call.
//! - DNS queries (`Output::Resolve`: A/AAAA, SRV, NAPTR, with hickory-resolver) block, so they
//!   run on a bounded pool ([`resolver`]: up to 4 threads, started by the first lookups, at most
//!   64 waiting) that reports back through a channel and the waker; a query beyond the queue is
//!   answered with an error right after the drain.
//! - Storage (`Output::Store`) runs on a bounded pool ([`driver::StorePool`]: 2 threads, each
//!   with its own connection, at most 256 waiting) that reports back through a channel and the
//!   same waker; a request the pool cannot take (queue full, no storage) is answered
//!   `Unavailable` right after the drain. The storage is opened at start ([`driver::open_backend`]).
//! - Once bound, and before `READY=1`, the clean read-only pages start-up mapped are shed
//!   ([`driver::shed_startup_pages`]): the idle process counts only what it runs again.
//! - Every accepted socket is checked against the process's connection caps
//!   ([`sylkgw_driver::limits`]) before the core hears of it: refused, it is closed at once and
//!   the core never sees it; admitted, its permit lives with the socket.
//! - The drive loop is [`Driver`]'s (shared with `sylkgw`): this file implements its [`Io`]
//!   ([`MioIo`]) and turns mio events into inputs; the poll timeout is the core's deadline.
//! - A connection the core closed (`Output::StreamClose`) is never mentioned to it again; one
//!   that failed or hit EOF is reported once with `Input::StreamClosed`, after the current drain
//!   (or, outside a drain, after the event that found it). A connect that fails at once is
//!   answered after the drain that asked for it.

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use sylkgw_core::dns::QueryType;
use sylkgw_core::storage::{StoreId, StoreRequest};
use sylkgw_core::{ConnId, Gateway, Input, Listener, SocketId, Transmit, UdpPurpose};
use sylkgw_driver::udp_batch::{self, RecvBatch};
use sylkgw_driver::{
    self as driver, BindAnswer, CaptureFile, ConnLimits, Deferred, Driver, Io, Permit, ACCEPT_RETRY, CLOSE_LINGER,
};

mod resolver;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const SIP_UDP: Token = Token(2);
const SIP_TCP: Token = Token(3);
const WAKER: Token = Token(4);
const SIP_TLS: Token = Token(5);
/// Set in the token of every UDP socket but SIP's; the socket id is in the low bits.
const UDP_TOKEN: usize = 1 << 62;
/// The first connection id (and token).
const FIRST_CONN: u64 = 16;
/// The SIP socket's id towards the core.
const SIP_SOCKET: SocketId = SocketId(0);
/// The WebRTC socket's id towards the core.
const WEBRTC_SOCKET: SocketId = SocketId(1);
/// Size of the one read buffer shared by all connections.
const READ_BUF: usize = 64 * 1024;
/// Queued bytes at which a connection stops being read until the peer takes some.
const HIGH_WATER: usize = 256 * 1024;

fn main() {
    let args = driver::args();
    driver::init_logging(args.verbose);
    if let Some(path) = &args.check_config {
        driver::check_config(&args, path);
    }
    let settings = match driver::load(&args) {
        Ok(s) if s.threads.is_some_and(|t| t != 1) => driver::fatal(2, "sylkgw-mio runs one thread"),
        Ok(s) => s,
        Err(e) => driver::fatal(2, e),
    };
    let tls = settings.core.tls.is_some();
    let sip_listen = settings.core.sip.listen;
    let (rtp_low, rtp_high) = settings.core.media.rtp_ports;
    log::info!("RTP ports {rtp_low}-{rtp_high}");
    let capture =
        settings.capture.as_deref().map(CaptureFile::create).transpose().unwrap_or_else(|e| driver::fatal(2, e));
    let trusted = settings.core.trusted_proxies.clone();
    let gw = Gateway::new(settings.core, driver::os_seed(), Instant::now(), driver::unix_time())
        .unwrap_or_else(|e| driver::fatal(2, e));
    let limits = ConnLimits::with_trusted(settings.caps, trusted);
    let storage = driver::open_backend(&settings.storage).unwrap_or_else(|e| driver::fatal(2, e));
    let driver = Driver::new(gw, capture);
    let metrics = settings.metrics_listen.map(|addr| {
        let board = driver::metrics::Board::new(1);
        driver::metrics::serve(addr, Arc::clone(&board)).unwrap_or_else(|e| driver::fatal(2, e));
        driver::metrics::Publisher::new(board, 0)
    });
    let reload = Reload { args, limits: limits.clone() };
    if let Err(e) =
        run(driver, limits, &storage, settings.listen, sip_listen, tls, settings.stats_interval, metrics, reload)
    {
        driver::fatal(1, e);
    }
}

/// Binds, then runs the loop until a signal-initiated shutdown completes or its grace ends.
/// With `stats_every`, logs a [`driver::stats_line`] that often; with `metrics`, publishes the
/// core's figures for `/metrics`.
#[allow(clippy::too_many_arguments)]
fn run(
    driver: Driver,
    limits: ConnLimits,
    storage: &driver::Backend,
    listen: SocketAddr,
    sip: SocketAddr,
    tls: bool,
    stats_every: Option<Duration>,
    mut metrics: Option<driver::metrics::Publisher>,
    reload: Reload,
) -> io::Result<()> {
    let poll = Poll::new()?;
    let named = |addr: SocketAddr| move |e: io::Error| io::Error::new(e.kind(), format!("{addr}: {e}"));
    let mut listener = TcpListener::bind(listen).map_err(named(listen))?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let (sip_udp, sip_tcp) = driver::bind_sip(sip).map_err(named(sip))?;
    let (mut sip_udp, mut sip_tcp) = (UdpSocket::from_std(sip_udp), TcpListener::from_std(sip_tcp));
    let rcvbuf = driver::enlarge_udp_buffers(std::os::fd::AsRawFd::as_raw_fd(&sip_udp));
    log::debug!("SIP udp receive buffer: {rcvbuf} bytes");
    poll.registry().register(&mut sip_udp, SIP_UDP, Interest::READABLE)?;
    let sip_local = sip_udp.local_addr()?;
    poll.registry().register(&mut sip_tcp, SIP_TCP, Interest::READABLE)?;
    let sip_tls = match driver.gateway().sip_tls_listen() {
        Some(addr) => {
            let mut l = TcpListener::bind(addr).map_err(named(addr))?;
            poll.registry().register(&mut l, SIP_TLS, Interest::READABLE)?;
            log::info!("SIP on {} (tls)", l.local_addr()?);
            Some(l)
        }
        None => None,
    };
    let webrtc_listen = driver.gateway().webrtc_listen();
    let mut webrtc = UdpSocket::bind(webrtc_listen).map_err(named(webrtc_listen))?;
    let rcvbuf = driver::enlarge_udp_buffers(std::os::fd::AsRawFd::as_raw_fd(&webrtc));
    log::debug!("WebRTC udp receive buffer: {rcvbuf} bytes");
    poll.registry().register(&mut webrtc, udp_token(WEBRTC_SOCKET), Interest::READABLE)?;
    let webrtc_local = webrtc.local_addr()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (resolved_tx, resolved_rx) = mpsc::channel();
    let resolver = {
        let waker = Arc::clone(&waker);
        let tx = Mutex::new(resolved_tx);
        resolver::Resolver::system(move |query, answer| {
            let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send((query, answer));
            let _ = waker.wake();
        })
    };
    let (stored_tx, stored_rx) = mpsc::channel();
    let store = {
        let waker = Arc::clone(&waker);
        let tx = Mutex::new(stored_tx);
        driver::StorePool::standard(storage, move |id, outcome| {
            let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send((id, outcome));
            let _ = waker.wake();
        })?
    };
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
    log::info!("{}", driver::listening_line(listener.local_addr()?, tls));

    let max_pending = driver.gateway().max_pending_bytes();
    let mut rt = Runtime {
        io: MioIo {
            poll,
            sip_udp,
            udp: HashMap::from([(WEBRTC_SOCKET, webrtc)]),
            resolver,
            store,
            conns: HashMap::new(),
            deferred: VecDeque::new(),
            lingering: VecDeque::new(),
            max_pending,
            limits: limits.clone(),
            outbox: Vec::new(),
        },
        driver,
        limits,
        listener: Some(listener),
        sip_tcp: Some(sip_tcp),
        sip_tls,
        resolved_rx,
        stored_rx,
        buf: vec![0; READ_BUF].into_boxed_slice(),
        batch: RecvBatch::new(),
        next_id: FIRST_CONN,
        accept_retry: None,
    };
    rt.driver.drain(&mut rt.io);
    rt.feed(Input::UdpBound { socket: SIP_SOCKET, purpose: UdpPurpose::Sip, local: sip_local });
    log::info!("SIP on {sip_local} (udp, tcp)");
    rt.feed(Input::UdpBound { socket: WEBRTC_SOCKET, purpose: UdpPurpose::WebRtc, local: webrtc_local });
    log::info!("WebRTC media on {webrtc_local} (udp)");
    driver::shed_startup_pages();
    driver::notify("READY=1");
    let mut events = Events::with_capacity(1024);
    let mut grace: Option<Instant> = None;
    let mut next_stats = stats_every.map(|every| Instant::now() + every);
    loop {
        if let (Some(at), Some(every)) = (next_stats, stats_every) {
            if at <= Instant::now() {
                log::info!("{}", driver::stats_line(None, &rt.driver.gateway().stats()));
                next_stats = Some(Instant::now() + every);
            }
        }
        rt.io.flush_datagrams();
        if let Some(end) = grace {
            if rt.driver.gateway().connection_count() == 0 && rt.io.conns.is_empty() {
                log::info!("stopped");
                return Ok(());
            }
            if Instant::now() >= end {
                log::warn!("stopping with {} connection(s) still open", rt.io.conns.len());
                return Ok(());
            }
        }
        let linger = rt.io.lingering.front().map(|&(at, _)| at);
        if let Some(m) = metrics.as_mut().filter(|m| m.due() <= Instant::now()) {
            m.publish(&rt.driver);
        }
        let publish = metrics.as_ref().map(|m| m.due());
        let wake = [Some(rt.driver.deadline()), rt.accept_retry, grace, linger, next_stats, publish]
            .into_iter()
            .flatten()
            .min()
            .expect("a deadline");
        match rt.io.poll.poll(&mut events, Some(wake.saturating_duration_since(Instant::now()))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        rt.driver.woke();
        for (handled, event) in events.iter().enumerate() {
            if handled > 0 && handled % EVENTS_PER_FLUSH == 0 {
                rt.io.flush_datagrams();
            }
            match event.token() {
                LISTENER => rt.accept(Listener::Web),
                SIP_TCP => rt.accept(Listener::SipTcp),
                SIP_TLS => rt.accept(Listener::SipTls),
                SIP_UDP => rt.receive_datagrams(SIP_SOCKET),
                Token(t) if t & UDP_TOKEN != 0 => rt.receive_datagrams(SocketId((t & !UDP_TOKEN) as u32)),
                WAKER => rt.answered(),
                SIGNALS => {
                    for signal in signals.pending() {
                        if signal == SIGHUP {
                            reload.apply(&mut rt.driver, &mut rt.io);
                            continue;
                        }
                        log::info!("{}", if signal == SIGINT { "SIGINT" } else { "SIGTERM" });
                        if grace.is_some() {
                            log::warn!("second signal: stopping now");
                            return Ok(());
                        }
                        grace = Some(Instant::now() + driver::SHUTDOWN_GRACE);
                        driver::notify("STOPPING=1");
                        if let Some(mut l) = rt.listener.take() {
                            let _ = rt.io.poll.registry().deregister(&mut l);
                        }
                        if let Some(mut l) = rt.sip_tcp.take() {
                            let _ = rt.io.poll.registry().deregister(&mut l);
                        }
                        if let Some(mut l) = rt.sip_tls.take() {
                            let _ = rt.io.poll.registry().deregister(&mut l);
                        }
                        rt.feed(Input::Shutdown);
                    }
                }
                Token(t) => {
                    let id = ConnId(t as u64);
                    if rt.io.conns.get(&id).is_some_and(|c| c.connecting) {
                        rt.connect_progress(id);
                    }
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        rt.io.flush(id);
                    }
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        rt.read(id);
                    }
                }
            }
            rt.driver.settle(&mut rt.io);
        }
        if rt.accept_retry.is_some_and(|at| at <= Instant::now()) {
            rt.accept_retry = None;
            rt.accept(Listener::Web);
            rt.accept(Listener::SipTcp);
            rt.accept(Listener::SipTls);
            rt.driver.settle(&mut rt.io);
        }
        while let Some(&(at, conn)) = rt.io.lingering.front() {
            if at > Instant::now() {
                break;
            }
            rt.io.lingering.pop_front();
            if rt.io.conns.contains_key(&conn) {
                log::debug!("{conn}: did not take its last bytes within {CLOSE_LINGER:?}; dropped");
                rt.io.drop_conn(conn);
            }
        }
        rt.driver.timer(&mut rt.io);
        rt.driver.settle(&mut rt.io);
    }
}

/// What a SIGHUP reloads: the configuration the command line names, into the core and the
/// connection caps.
struct Reload {
    args: driver::Args,
    limits: ConnLimits,
}

impl Reload {
    /// Reads the configuration again and applies what can change while running; a file that
    /// does not load leaves everything as it was.
    fn apply(&self, driver: &mut Driver, io: &mut impl Io) {
        log::info!("SIGHUP: reloading");
        driver::notify("RELOADING=1");
        match driver::load(&self.args) {
            Ok(s) => {
                self.limits.set_caps(s.caps);
                self.limits.set_trusted(s.core.trusted_proxies.clone());
                let changed = driver.reload(io, &s.core);
                log::info!(
                    "reloaded; changed: {}",
                    if changed.is_empty() { "nothing".into() } else { changed.join(", ") }
                );
            }
            Err(e) => log::error!("reload failed, keeping the running configuration: {e}"),
        }
        driver::notify("READY=1");
    }
}

/// One accepted socket.
struct Conn {
    stream: TcpStream,
    /// Bytes the core asked to write that the socket has not taken yet (`Vec::new()` when empty).
    queue: Vec<u8>,
    /// The core sent `StreamClose` and forgot the id: close once `queue` is written.
    closing: bool,
    /// What it is registered for (see [`interest`]).
    interest: Interest,
    /// An outgoing connection not yet established (`Output::Connect`).
    connecting: bool,
    /// The place an accepted connection holds under the process's caps (none for outgoing ones).
    _permit: Option<Permit>,
    /// Through a trusted reverse proxy: the place it holds under its client's address.
    _client: Option<Permit>,
}

/// The event loop: the core's driver, the sockets, and what turns events into inputs.
struct Runtime {
    driver: Driver,
    io: MioIo,
    /// The process's connection caps, checked at accept.
    limits: ConnLimits,
    /// `None` once shutting down.
    listener: Option<TcpListener>,
    /// `None` once shutting down.
    sip_tcp: Option<TcpListener>,
    /// The SIP TLS listener, when configured.
    sip_tls: Option<TcpListener>,
    resolved_rx: mpsc::Receiver<(u64, resolver::Answer)>,
    stored_rx: mpsc::Receiver<(StoreId, driver::store_pool::Outcome)>,
    /// The shared read buffer.
    buf: Box<[u8]>,
    /// The media sockets' receive batch.
    batch: RecvBatch,
    next_id: u64,
    /// When to try accepting again after a resource error.
    accept_retry: Option<Instant>,
}

/// The sockets, carrying out the core's outputs ([`Io`]).
struct MioIo {
    poll: Poll,
    sip_udp: UdpSocket,
    /// The other UDP sockets: WebRTC, and those the core asked for (`Output::BindUdp`).
    udp: HashMap<SocketId, UdpSocket>,
    /// The lookup pool (`Output::Resolve`).
    resolver: resolver::Resolver,
    /// The storage pool (`Output::Store`).
    store: driver::StorePool,
    conns: HashMap<ConnId, Conn>,
    /// Inputs for the core once the current drain ends: live connections whose socket failed,
    /// connects that failed at once.
    deferred: VecDeque<Deferred>,
    /// Closed by the core with bytes still queued, by deadline: dropped when it passes.
    lingering: VecDeque<(Instant, ConnId)>,
    /// The core's `max_pending_bytes`.
    max_pending: usize,
    /// The process's connection caps, for connections readdressed by a trusted proxy.
    limits: ConnLimits,
    /// Datagrams of the drains since the last [`MioIo::flush_datagrams`], in order.
    outbox: Vec<Transmit>,
}

impl Runtime {
    /// Feeds `input` at the current time and drains.
    fn feed(&mut self, input: Input<'_>) {
        self.driver.feed(&mut self.io, input);
    }

    /// A readiness event on a connection still connecting: up, failed, or not yet.
    fn connect_progress(&mut self, conn: ConnId) {
        let Some(c) = self.io.conns.get_mut(&conn) else { return };
        let failed = match c.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e.to_string()),
            Ok(None) => match c.stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => Some(e.to_string()),
            },
        };
        match failed {
            Some(e) => {
                let mut c = self.io.conns.remove(&conn).expect("present");
                let _ = self.io.poll.registry().deregister(&mut c.stream);
                log::debug!("{conn}: connect failed: {e}");
                self.feed(Input::Connected { conn, result: Err(e) });
            }
            None => {
                c.connecting = false;
                let _ = c.stream.set_nodelay(true);
                self.feed(Input::Connected { conn, result: Ok(()) });
            }
        }
    }

    /// Reads UDP socket `socket` until `WouldBlock` (or until the core closes it): SIP's one
    /// datagram at a time, the others in batches, each batch's answers sent after it.
    fn receive_datagrams(&mut self, socket: SocketId) {
        if socket != SIP_SOCKET {
            return self.receive_batches(socket);
        }
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(udp) = self.io.udp_socket(socket) {
            match udp.recv_from(&mut buf) {
                Ok((n, from)) => {
                    self.feed(Input::Datagram { socket, from, data: &buf[..n] });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors of earlier sends surface here; they are not fatal.
                    log::debug!("{socket}: {e}");
                }
            }
        }
        self.buf = buf;
    }

    /// Reads media socket `socket` with `recvmmsg` until it is empty (or until the core closes
    /// it), feeding each datagram in order; what the core sends in answer goes out once
    /// [`udp_batch::BATCH`] datagrams wait, else after [`EVENTS_PER_FLUSH`] events of the
    /// wake-up (so that the answers to many RTP sockets' datagrams, all from the one WebRTC
    /// socket, leave in one `sendmmsg`), else before the loop sleeps. A batch shorter than [`udp_batch::BATCH`] emptied the socket: mio's readiness is
    /// edge-triggered, so a datagram arriving after it is a new event, and the `recvmmsg` that
    /// would only answer `WouldBlock` is saved (one system call per wake-up of a SIP leg's RTP
    /// socket, which carries one datagram per 20 ms).
    fn receive_batches(&mut self, socket: SocketId) {
        while let Some(fd) = self.io.udp_socket(socket).map(std::os::fd::AsRawFd::as_raw_fd) {
            match self.batch.recv(fd) {
                Ok(n) => {
                    for i in 0..n {
                        if self.io.udp_socket(socket).is_none() {
                            break; // closed by the core meanwhile
                        }
                        match self.batch.get(i) {
                            Some((from, data)) => {
                                // One clock read per datagram: the end of one's drain is the
                                // next one's `now` (`Driver::feed_next`).
                                self.driver.feed_next(&mut self.io, Input::Datagram { socket, from, data });
                            }
                            None => log::debug!("{socket}: a datagram over {} bytes dropped", udp_batch::SLOT),
                        }
                    }
                    if self.io.outbox.len() >= udp_batch::BATCH {
                        self.io.flush_datagrams();
                    }
                    if n < udp_batch::BATCH {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors of earlier sends surface here; they are not fatal.
                    log::debug!("{socket}: {e}");
                }
            }
        }
    }

    /// Answers finished name resolutions and storage requests.
    fn answered(&mut self) {
        while let Ok((query, result)) = self.resolved_rx.try_recv() {
            self.feed(Input::Resolved { query, result });
        }
        while let Ok((id, result)) = self.stored_rx.try_recv() {
            self.feed(Input::Stored { id, result });
        }
    }

    /// Accepts on `which` until `WouldBlock`.
    fn accept(&mut self, which: Listener) {
        loop {
            let listener = match which {
                Listener::SipTcp => self.sip_tcp.as_ref(),
                Listener::SipTls => self.sip_tls.as_ref(),
                _ => self.listener.as_ref(),
            };
            let accepted = match listener {
                Some(l) => l.accept(),
                None => return,
            };
            let (mut stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => continue,
                Err(e) => {
                    log::warn!("accept: {e}; retrying in {ACCEPT_RETRY:?}");
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            };
            let permit = match self.limits.admit(which, peer.ip()) {
                Ok(p) => p,
                Err(refusal) => {
                    log::warn!("{} connection from {peer} refused: {refusal}", which.name());
                    continue; // dropping the stream closes it
                }
            };
            let conn = ConnId(self.next_id);
            self.next_id += 1;
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("{conn}: TCP_NODELAY: {e}");
            }
            if let Err(e) = self.io.poll.registry().register(&mut stream, token(conn), Interest::READABLE) {
                log::warn!("{conn}: cannot register {peer}: {e}");
                continue;
            }
            let c = Conn {
                stream,
                queue: Vec::new(),
                closing: false,
                interest: Interest::READABLE,
                connecting: false,
                _permit: Some(permit),
                _client: None,
            };
            self.io.conns.insert(conn, c);
            self.feed(Input::Accepted { conn, listener: which, peer });
        }
    }

    /// Reads `conn` until `WouldBlock` (or until [`HIGH_WATER`] is queued), feeding each read to
    /// the core (discarding it once the core has closed the connection).
    fn read(&mut self, conn: ConnId) {
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(c) = self.io.conns.get_mut(&conn) {
            let closing = c.closing;
            if !closing && c.queue.len() >= HIGH_WATER {
                break; // resumed by `flush` (re-registering READABLE reports data already there)
            }
            match c.stream.read(&mut buf) {
                Ok(0) if closing => break,
                Ok(0) => {
                    log::debug!("{conn}: EOF");
                    self.io.drop_conn(conn);
                    break;
                }
                Ok(_) if closing => {}
                Ok(n) => {
                    self.feed(Input::StreamData { conn, data: &buf[..n] });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("{conn}: read: {e}");
                    self.io.drop_conn(conn);
                    break;
                }
            }
        }
        self.buf = buf;
    }
}

impl Io for MioIo {
    fn write(&mut self, conn: ConnId, data: Vec<u8>) {
        match self.conns.get_mut(&conn) {
            Some(c) if c.queue.is_empty() => c.queue = data,
            Some(c) => c.queue.extend_from_slice(&data),
            None => log::debug!("{conn}: {} bytes for a connection already gone", data.len()),
        }
        self.flush(conn);
        self.check_backlog(conn);
    }

    fn close(&mut self, conn: ConnId) {
        self.deferred.retain(|d| *d != Deferred::Closed(conn));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.closing = true;
            self.flush(conn);
            if self.conns.contains_key(&conn) {
                self.lingering.push_back((Instant::now() + CLOSE_LINGER, conn));
            }
        }
    }

    /// Queued; sent by [`MioIo::flush_datagrams`] (after the receive batch, before sleeping).
    fn send_datagram(&mut self, t: Transmit) {
        self.outbox.push(t);
    }

    /// Starts connecting `conn` to `to`; the core hears `Input::Connected` once it is up (or
    /// after this drain if it fails at once).
    fn connect(&mut self, conn: ConnId, to: SocketAddr) {
        let registered = TcpStream::connect(to).and_then(|mut stream| {
            let interest = Interest::READABLE | Interest::WRITABLE;
            self.poll.registry().register(&mut stream, token(conn), interest)?;
            Ok((stream, interest))
        });
        match registered {
            Ok((stream, interest)) => {
                let c = Conn {
                    stream,
                    queue: Vec::new(),
                    closing: false,
                    interest,
                    connecting: true,
                    _permit: None,
                    _client: None,
                };
                self.conns.insert(conn, c);
            }
            Err(e) => {
                log::debug!("{conn}: connect failed: {e}");
                self.deferred.push_back(Deferred::Connected(conn, Err(e.to_string())));
            }
        }
    }

    /// Queues the lookup on the pool; over its queue, answers with the error after the drain.
    fn resolve(&mut self, query: u64, qtype: QueryType, name: String) {
        if let Err(refused) = self.resolver.submit(query, qtype, name) {
            log::warn!("dns {query}: {refused}");
            self.deferred.push_back(Deferred::Resolved(query, Err(refused.to_string())));
        }
    }

    /// Binds a socket the core asked for and registers it.
    fn store(&mut self, id: StoreId, request: StoreRequest) {
        if let Err(refused) = self.store.submit(id, request) {
            log::warn!("storage request {id}: {refused}");
            self.deferred.push_back(Deferred::Stored(id, Err(refused)));
        }
    }

    fn bind_udp(&mut self, socket: SocketId, purpose: UdpPurpose, local: SocketAddr) -> BindAnswer {
        let bound = if self.udp_socket(socket).is_some() {
            Err(io::Error::new(ErrorKind::AlreadyExists, format!("{socket} is already bound")))
        } else {
            UdpSocket::bind(local).and_then(|mut s| {
                self.poll.registry().register(&mut s, udp_token(socket), Interest::READABLE)?;
                let local = s.local_addr()?;
                Ok((s, local))
            })
        };
        match bound {
            Ok((s, local)) => {
                log::debug!("{socket}: {} on {local}", purpose.name());
                self.udp.insert(socket, s);
                Ok((purpose, local))
            }
            Err(e) => {
                log::debug!("{socket}: bind {local}: {e}");
                Err(e.to_string())
            }
        }
    }

    fn close_udp(&mut self, socket: SocketId) {
        self.flush_datagrams(); // what the core sent from it before closing it
        match self.udp.remove(&socket) {
            Some(mut s) => {
                let _ = self.poll.registry().deregister(&mut s);
                log::debug!("{socket}: closed");
            }
            None => log::debug!("{socket}: close of a socket not bound"),
        }
    }

    fn take_deferred(&mut self) -> Option<Deferred> {
        self.deferred.pop_front()
    }

    /// Takes a place under the client's address; refused, drops the connection.
    fn readdress(&mut self, conn: ConnId, ip: IpAddr) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        match self.limits.admit(Listener::Web, ip) {
            Ok(permit) => c._client = Some(permit),
            Err(refusal) => {
                log::warn!("{conn}: web connection from {ip} (through a proxy) refused: {refusal}");
                self.drop_conn(conn);
            }
        }
    }
}

impl MioIo {
    /// Sends the queued datagrams: each run from one socket with `sendmmsg`. UDP: a datagram
    /// the socket cannot take now is lost, as on the wire.
    fn flush_datagrams(&mut self) {
        let mut outbox = std::mem::take(&mut self.outbox);
        udp_batch::send_transmits(&outbox, |id| self.udp_socket(id).map(std::os::fd::AsRawFd::as_raw_fd));
        // Keep the allocation for the next drains.
        outbox.clear();
        self.outbox = outbox;
    }

    /// The UDP socket `id` names.
    fn udp_socket(&self, id: SocketId) -> Option<&UdpSocket> {
        if id == SIP_SOCKET {
            Some(&self.sip_udp)
        } else {
            self.udp.get(&id)
        }
    }

    /// Writes what is queued for `conn` until `WouldBlock`; closes it once done if the core asked
    /// to; keeps the registration in line with [`interest`].
    fn flush(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.connecting {
            return; // queued until the connection is up
        }
        if let Err(e) = write_out(&mut c.stream, &mut c.queue) {
            log::debug!("{conn}: write: {e}");
            return self.drop_conn(conn);
        }
        if c.queue.is_empty() {
            c.queue = Vec::new();
            if c.closing {
                return self.finish(conn);
            }
        }
        let want = interest(c);
        if want != c.interest {
            c.interest = want;
            if let Err(e) = self.poll.registry().reregister(&mut c.stream, token(conn), want) {
                log::warn!("{conn}: reregister: {e}");
                self.drop_conn(conn);
            }
        }
    }

    /// Closes a connection whose queue is written: discards unread input (so that closing does
    /// not turn into a reset that could destroy what we just sent), then shuts down writing.
    fn finish(&mut self, conn: ConnId) {
        let Some(mut c) = self.conns.remove(&conn) else { return };
        let _ = self.poll.registry().deregister(&mut c.stream);
        let mut scratch = [0u8; 4096];
        for _ in 0..16 {
            match c.stream.read(&mut scratch) {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                _ => break,
            }
        }
        let _ = c.stream.shutdown(Shutdown::Write);
        log::debug!("{conn}: closed");
    }

    /// Drops `conn` with a TCP reset when more than `max_pending_bytes` wait for its peer (a
    /// peer that does not read must not make us hold an unbounded queue); the core hears
    /// `Input::StreamClosed` after the drain and releases what the connection owned.
    fn check_backlog(&mut self, conn: ConnId) {
        let limit = self.max_pending;
        let Some(c) = self.conns.get(&conn) else { return };
        if c.queue.len() <= limit {
            return;
        }
        log::warn!(
            "{conn}: {} bytes queued that the peer does not take (max_pending_bytes {limit}); dropping the connection",
            c.queue.len()
        );
        if let Err(e) = driver::reset_on_close(std::os::fd::AsRawFd::as_raw_fd(&c.stream)) {
            log::debug!("{conn}: SO_LINGER: {e}");
        }
        self.drop_conn(conn);
    }

    /// Drops the socket of `conn` now; if the core still knows it, it is told after the drain
    /// (or the event) that found it.
    fn drop_conn(&mut self, conn: ConnId) {
        let Some(mut c) = self.conns.remove(&conn) else { return };
        let _ = self.poll.registry().deregister(&mut c.stream);
        if !c.closing {
            self.deferred.push_back(Deferred::Closed(conn));
        }
    }
}

/// Events of one wake-up handled at most before the datagrams they caused are sent.
const EVENTS_PER_FLUSH: usize = 16;

fn token(conn: ConnId) -> Token {
    Token(conn.0 as usize)
}

fn udp_token(socket: SocketId) -> Token {
    Token(UDP_TOKEN | socket.0 as usize)
}

/// `READABLE` unless closing or at [`HIGH_WATER`]; `WRITABLE` while bytes are queued. (A conn
/// that is closing with nothing queued, or at high water with nothing queued, does not exist.)
fn interest(c: &Conn) -> Interest {
    if c.connecting {
        return Interest::READABLE | Interest::WRITABLE;
    }
    let readable = !c.closing && c.queue.len() < HIGH_WATER;
    match (readable, !c.queue.is_empty()) {
        (true, true) => Interest::READABLE | Interest::WRITABLE,
        (true, false) => Interest::READABLE,
        (false, _) => Interest::WRITABLE,
    }
}

/// Writes `queue` until it is empty or the socket would block, removing what was written.
fn write_out(stream: &mut TcpStream, queue: &mut Vec<u8>) -> io::Result<()> {
    let mut done = 0;
    let result = loop {
        if done == queue.len() {
            break Ok(());
        }
        match stream.write(&queue[done..]) {
            Ok(0) => break Err(ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    queue.drain(..done);
    result
}
