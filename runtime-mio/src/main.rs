//! `sylkgw-mio`: the sans-IO core ([`Gateway`]) driven by one thread and one mio `Poll`.
//!
//! The low-footprint binary: one shared 64 KiB read buffer, and per connection only the socket,
//! a write queue that holds no allocation while empty, a flag and the registered interest.
//!
//! # Contracts
//! - mio is edge-triggered: a readable event is read until `WouldBlock`, a writable one written
//!   until `WouldBlock`. Interest is `READABLE`, plus `WRITABLE` only while bytes are queued.
//!   Reading pauses while [`HIGH_WATER`] bytes or more are queued (a peer that sends but does
//!   not read cannot grow the queue without bound).
//! - A connection the core closed gets [`CLOSE_LINGER`] to take its last bytes, then is dropped.
//! - Tokens: 0 the listener, 1 the signal pipe, any other token is a connection and equals its
//!   [`ConnId`] (ids start at 2 and are never reused).
//! - Every `handle_input` is followed by a drain (`poll_output` until `Output::Timeout`) whose
//!   outputs are carried out in order; the poll timeout is the last `Output::Timeout` deadline.
//! - A connection the core closed (`Output::StreamClose`) is never mentioned to it again; one
//!   that failed or hit EOF is reported once with `Input::StreamClosed`, after the current drain.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use sylkgw_core::driver::{self, CaptureFile};
use sylkgw_core::{ConnId, Gateway, Input, Listener, Output};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
/// The first connection id (and token).
const FIRST_CONN: u64 = 2;
/// Size of the one read buffer shared by all connections.
const READ_BUF: usize = 64 * 1024;
/// Consecutive no-op Timeout wake-ups with a deadline already due before we warn of a busy loop.
const BUSY_WARN: u32 = 1000;
/// How long to wait before accepting again after a resource error (EMFILE, ENOBUFS, ...).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Queued bytes at which a connection stops being read until the peer takes some.
const HIGH_WATER: usize = 256 * 1024;
/// How long a connection the core closed may take to accept its last bytes.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args: driver::Args = argh::from_env();
    driver::init_logging(args.verbose);
    let settings = match driver::load(&args) {
        Ok(s) if s.threads.is_some_and(|t| t != 1) => return fail(2, "sylkgw-mio runs one thread"),
        Ok(s) => s,
        Err(e) => return fail(2, &e),
    };
    let scheme = if settings.core.tls.is_some() { "wss" } else { "ws" };
    let capture = match settings.capture.as_deref().map(CaptureFile::create).transpose() {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    let gw = match Gateway::new(settings.core, driver::os_seed(), Instant::now(), driver::unix_time()) {
        Ok(gw) => gw,
        Err(e) => return fail(2, &e.to_string()),
    };
    match run(gw, capture, settings.listen, scheme) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e.to_string()),
    }
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("sylkgw: {msg}");
    ExitCode::from(code)
}

/// Binds, then runs the loop until a signal-initiated shutdown completes or its grace ends.
fn run(gw: Gateway, capture: Option<CaptureFile>, listen: std::net::SocketAddr, scheme: &str) -> io::Result<()> {
    let poll = Poll::new()?;
    let mut listener = TcpListener::bind(listen).map_err(|e| io::Error::new(e.kind(), format!("{listen}: {e}")))?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
    log::info!("listening on {scheme}://{}/webrtcgateway/ws", listener.local_addr()?);

    let mut rt = Runtime {
        poll,
        listener: Some(listener),
        deadline: Instant::now(),
        gw,
        capture,
        conns: HashMap::new(),
        failed: Vec::new(),
        lingering: VecDeque::new(),
        buf: vec![0; READ_BUF].into_boxed_slice(),
        next_id: FIRST_CONN,
        busy: 0,
        accept_retry: None,
    };
    rt.drain();
    let mut events = Events::with_capacity(1024);
    let mut grace: Option<Instant> = None;
    loop {
        if let Some(end) = grace {
            if rt.gw.connection_count() == 0 && rt.conns.is_empty() {
                log::info!("stopped");
                return Ok(());
            }
            if Instant::now() >= end {
                log::warn!("stopping with {} connection(s) still open", rt.conns.len());
                return Ok(());
            }
        }
        let linger = rt.lingering.front().map(|&(at, _)| at);
        let wake = [Some(rt.deadline), rt.accept_retry, grace, linger].into_iter().flatten().min().expect("a deadline");
        match rt.poll.poll(&mut events, Some(wake.saturating_duration_since(Instant::now()))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            match event.token() {
                LISTENER => rt.accept(),
                SIGNALS => {
                    for signal in signals.pending() {
                        log::info!("{}", if signal == SIGINT { "SIGINT" } else { "SIGTERM" });
                        if grace.is_some() {
                            log::warn!("second signal: stopping now");
                            return Ok(());
                        }
                        grace = Some(Instant::now() + driver::SHUTDOWN_GRACE);
                        if let Some(mut l) = rt.listener.take() {
                            let _ = rt.poll.registry().deregister(&mut l);
                        }
                        rt.feed(Input::Shutdown);
                    }
                }
                Token(t) => {
                    let id = ConnId(t as u64);
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        rt.flush(id);
                    }
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        rt.read(id);
                    }
                }
            }
            rt.settle();
        }
        if rt.accept_retry.is_some_and(|at| at <= Instant::now()) {
            rt.accept_retry = None;
            rt.accept();
            rt.settle();
        }
        while let Some(&(at, conn)) = rt.lingering.front() {
            if at > Instant::now() {
                break;
            }
            rt.lingering.pop_front();
            if rt.conns.contains_key(&conn) {
                log::debug!("{conn}: did not take its last bytes within {CLOSE_LINGER:?}; dropped");
                rt.drop_conn(conn);
            }
        }
        rt.timer();
        rt.settle();
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
}

struct Runtime {
    poll: Poll,
    /// `None` once shutting down.
    listener: Option<TcpListener>,
    gw: Gateway,
    capture: Option<CaptureFile>,
    /// The last `Output::Timeout`.
    deadline: Instant,
    conns: HashMap<ConnId, Conn>,
    /// Live connections whose socket failed, to report to the core once the current drain ends.
    failed: Vec<ConnId>,
    /// Closed by the core with bytes still queued, by deadline: dropped when it passes.
    lingering: VecDeque<(Instant, ConnId)>,
    /// The shared read buffer.
    buf: Box<[u8]>,
    next_id: u64,
    /// Consecutive Timeout wake-ups that did nothing and left a deadline already due.
    busy: u32,
    /// When to try accepting again after a resource error.
    accept_retry: Option<Instant>,
}

impl Runtime {
    /// Feeds `input` at the current time and drains; returns whether anything but a Timeout came out.
    fn feed(&mut self, input: Input<'_>) -> bool {
        self.gw.handle_input(Instant::now(), input);
        self.drain()
    }

    /// Carries out the core's outputs until `Output::Timeout`, then appends to the capture file.
    fn drain(&mut self) -> bool {
        let mut any = false;
        loop {
            match self.gw.poll_output() {
                Output::StreamWrite { conn, data } => {
                    any = true;
                    match self.conns.get_mut(&conn) {
                        Some(c) if c.queue.is_empty() => c.queue = data,
                        Some(c) => c.queue.extend_from_slice(&data),
                        None => log::debug!("{conn}: {} bytes for a connection already gone", data.len()),
                    }
                    self.flush(conn);
                }
                Output::StreamClose { conn } => {
                    any = true;
                    self.failed.retain(|&f| f != conn);
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.closing = true;
                        self.flush(conn);
                        if self.conns.contains_key(&conn) {
                            self.lingering.push_back((Instant::now() + CLOSE_LINGER, conn));
                        }
                    }
                }
                Output::Datagram(t) => {
                    any = true;
                    log::debug!("{}: no UDP sockets yet; dropped {} bytes to {}", t.socket, t.payload.len(), t.to);
                }
                Output::Timeout(at) => {
                    self.deadline = at;
                    break;
                }
            }
        }
        if let Some(c) = &mut self.capture {
            c.write(&mut self.gw);
        }
        any
    }

    /// Reports the connections that failed during earlier drains (each drain may add more).
    fn settle(&mut self) {
        while let Some(conn) = self.failed.pop() {
            self.feed(Input::StreamClosed { conn });
        }
    }

    /// Feeds `Input::Timeout` if the deadline has passed, and watches for a busy loop.
    fn timer(&mut self) {
        let now = Instant::now();
        if now < self.deadline {
            return;
        }
        self.gw.handle_input(now, Input::Timeout);
        if !self.drain() && self.deadline <= now {
            self.busy += 1;
            if self.busy == BUSY_WARN {
                log::warn!("busy loop: {BUSY_WARN} timeouts in a row did nothing ({})", self.gw.last_timeout_reason());
            }
        } else {
            self.busy = 0;
        }
    }

    /// Accepts until `WouldBlock`.
    fn accept(&mut self) {
        loop {
            let accepted = match &self.listener {
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
            let conn = ConnId(self.next_id);
            self.next_id += 1;
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("{conn}: TCP_NODELAY: {e}");
            }
            if let Err(e) = self.poll.registry().register(&mut stream, token(conn), Interest::READABLE) {
                log::warn!("{conn}: cannot register {peer}: {e}");
                continue;
            }
            self.conns.insert(conn, Conn { stream, queue: Vec::new(), closing: false, interest: Interest::READABLE });
            self.feed(Input::Accepted { conn, listener: Listener::Web, peer });
        }
    }

    /// Reads `conn` until `WouldBlock` (or until [`HIGH_WATER`] is queued), feeding each read to
    /// the core (discarding it once the core has closed the connection).
    fn read(&mut self, conn: ConnId) {
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(c) = self.conns.get_mut(&conn) {
            let closing = c.closing;
            if !closing && c.queue.len() >= HIGH_WATER {
                break; // resumed by `flush` (re-registering READABLE reports data already there)
            }
            match c.stream.read(&mut buf) {
                Ok(0) if closing => break,
                Ok(0) => {
                    log::debug!("{conn}: EOF");
                    self.drop_conn(conn);
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
                    self.drop_conn(conn);
                    break;
                }
            }
        }
        self.buf = buf;
    }

    /// Writes what is queued for `conn` until `WouldBlock`; closes it once done if the core asked
    /// to; keeps the registration in line with [`interest`].
    fn flush(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
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

    /// Drops the socket of `conn` now; if the core still knows it, it is told at the next settle.
    fn drop_conn(&mut self, conn: ConnId) {
        let Some(mut c) = self.conns.remove(&conn) else { return };
        let _ = self.poll.registry().deregister(&mut c.stream);
        if !c.closing {
            self.failed.push(conn);
        }
    }
}

fn token(conn: ConnId) -> Token {
    Token(conn.0 as usize)
}

/// `READABLE` unless closing or at [`HIGH_WATER`]; `WRITABLE` while bytes are queued. (A conn
/// that is closing with nothing queued, or at high water with nothing queued, does not exist.)
fn interest(c: &Conn) -> Interest {
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
