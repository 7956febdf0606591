//! The one drive loop both runtimes run: feed one [`Input`], drain the core's outputs into the
//! runtime's sockets ([`Io`]), feed the answers that had to wait for the drain's end, write the
//! capture file, and keep the core's timer.
//!
//! # Contract (the core's, `sylkgw_core` crate doc)
//! - Every `handle_input` is followed by a drain (`poll_output` until `Output::Timeout`) whose
//!   outputs are handed to the [`Io`] in order; [`Driver::deadline`] is the last Timeout.
//! - Answers the runtime has at once but the core may not hear mid-drain (the result of
//!   [`Io::bind_udp`], the [`Deferred`] inputs [`Io::take_deferred`] hands back) are fed right
//!   after the drain that caused them, each followed by its own drain: bind answers first, in
//!   order, then messages to other workers that could not be delivered
//!   (`Input::ToWorkerFailed`), then the deferred inputs.
//! - `now` is read from the real clock for every input, so it never goes backwards. The
//!   datagrams a runtime feeds one after the other in one wake-up ([`Driver::feed_next`]) share
//!   readings: the clock read at the end of one's drain is the next one's `now` (one clock read
//!   per datagram, not two: issue #14); any other input, and [`Driver::woke`], end the chain.

#![allow(clippy::disallowed_methods)] // the drive loop reads the real clock for `now`

use crate::capture_file::CaptureFile;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use sylkgw_core::dns::{Answer, QueryType};
use sylkgw_core::drive::WorkerMsg;
use sylkgw_core::storage::{StoreError, StoreId, StoreRequest, StoreResult};
use sylkgw_core::{ConnId, Gateway, Input, Output, SocketId, Transmit, UdpPurpose};

/// The answer to an `Output::BindUdp`: the purpose and bound address, or the error text.
pub type BindAnswer = Result<(UdpPurpose, SocketAddr), String>;

/// An input a runtime learned inside a drain (or between events) that the core hears after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deferred {
    /// A connection the core still knows whose socket the runtime dropped (failed, EOF, over
    /// `max_pending_bytes`): `Input::StreamClosed`.
    Closed(ConnId),
    /// An `Output::Connect` that failed at once: `Input::Connected`.
    Connected(ConnId, Result<(), String>),
    /// An `Output::Resolve` answered at once (a lookup that could not start): `Input::Resolved`.
    Resolved(u64, Result<Answer, String>),
    /// An `Output::Store` refused at once (no storage, queue full): `Input::Stored`.
    Stored(StoreId, Result<StoreResult, StoreError>),
}

impl Deferred {
    /// The input it stands for.
    fn input(&self) -> Input<'_> {
        match self {
            Self::Closed(conn) => Input::StreamClosed { conn: *conn },
            Self::Connected(conn, result) => Input::Connected { conn: *conn, result: result.clone() },
            Self::Resolved(query, result) => Input::Resolved { query: *query, result: result.clone() },
            Self::Stored(id, result) => Input::Stored { id: *id, result: result.clone() },
        }
    }
}

/// What a runtime does for its core: the side effects of each [`Output`] but `Timeout`. Each
/// method is called inside a drain and must not call back into the core.
pub trait Io {
    /// `Output::StreamWrite`: queue `data` on `conn` (a connection already gone drops it).
    fn write(&mut self, conn: ConnId, data: Vec<u8>);
    /// `Output::StreamClose`: write what is queued, then close; the core has forgotten `conn`.
    fn close(&mut self, conn: ConnId);
    /// `Output::Datagram`: send from the socket `t.socket` names; one it cannot take is lost.
    fn send_datagram(&mut self, t: Transmit);
    /// `Output::Connect`: open a TCP connection; answered later with `Input::Connected`.
    fn connect(&mut self, conn: ConnId, to: SocketAddr);
    /// `Output::Resolve`: look `name` up for `qtype` records (see [`crate::dns`]); answered later
    /// with `Input::Resolved` (an error one when the lookup cannot even start).
    fn resolve(&mut self, query: u64, qtype: QueryType, name: String);
    /// `Output::Store`: carry `request` out off the event loop; answered later with
    /// `Input::Stored` (a [`Deferred::Stored`] `Unavailable` one when it cannot even be queued).
    fn store(&mut self, id: StoreId, request: StoreRequest);
    /// `Output::BindUdp`: bind and start reading `socket`; the result is fed after the drain.
    fn bind_udp(&mut self, socket: SocketId, purpose: UdpPurpose, local: SocketAddr) -> BindAnswer;
    /// `Output::CloseUdp`: stop reading `socket` and drop it.
    fn close_udp(&mut self, socket: SocketId);
    /// The next input that waited for the end of a drain; `None` when none is left.
    fn take_deferred(&mut self) -> Option<Deferred>;
    /// The core learnt from a trusted reverse proxy that `conn` is client `ip`'s (before any
    /// output of that input): hold it to the process's per-IP cap under `ip`, and drop it
    /// (reporting [`Deferred::Closed`]) when that refuses it. Does nothing by default.
    fn readdress(&mut self, conn: ConnId, ip: IpAddr) {
        let _ = (conn, ip);
    }
    /// `Output::ToWorker`: queue `msg` for worker `worker`'s core without waiting (`None`); a
    /// message it cannot queue (full, worker gone) is handed back (`Some`) and fed after the drain as
    /// `Input::ToWorkerFailed`. A runtime with one worker has no other: every message comes back.
    fn send_to_worker(&mut self, worker: usize, msg: WorkerMsg) -> Option<WorkerMsg> {
        let _ = worker;
        Some(msg)
    }
}

/// A core, its capture file, its timer and what waits for the end of a drain.
pub struct Driver {
    gw: Gateway,
    capture: Option<CaptureFile>,
    /// The last `Output::Timeout`.
    deadline: Instant,
    /// Answers to `Output::BindUdp`, fed once the drain that asked is over.
    bind_answers: VecDeque<(SocketId, BindAnswer)>,
    /// `Output::ToWorker` messages the runtime could not deliver, fed once the drain is over.
    bounced: VecDeque<(usize, WorkerMsg)>,
    /// Watches the Timeout wake-ups for a busy loop.
    busy: BusyGuard,
    /// Time spent in the core and in [`Io`] since start (metrics' busy ratio).
    working: std::time::Duration,
    /// The clock read at the end of the last [`Driver::feed_next`]'s drain: the next one's `now`.
    /// `None` after any other input and after [`Driver::woke`].
    chain: Option<Instant>,
}

impl Driver {
    /// Drives `gw`, appending what it records to `capture`. Call [`Driver::drain`] before the
    /// first input (the core's contract).
    pub fn new(gw: Gateway, capture: Option<CaptureFile>) -> Self {
        Self {
            gw,
            capture,
            deadline: Instant::now(),
            bind_answers: VecDeque::new(),
            bounced: VecDeque::new(),
            busy: BusyGuard::default(),
            working: std::time::Duration::ZERO,
            chain: None,
        }
    }

    /// The core, to read (stats, connection count, configuration).
    pub fn gateway(&self) -> &Gateway {
        &self.gw
    }

    /// Reloads the core's reloadable options from `config`: feeds `Input::Reload` (so the
    /// capture records it) and drains; returns the names of the options that changed.
    pub fn reload(&mut self, io: &mut impl Io, config: &sylkgw_core::Config) -> Vec<&'static str> {
        let changed = self.gw.reload_changes(config);
        self.feed(io, Input::Reload { config });
        changed
    }

    /// When the core wants `Input::Timeout` (the last `Output::Timeout`).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Feeds `input` at the current time and drains; returns whether anything but a Timeout came
    /// out.
    pub fn feed(&mut self, io: &mut impl Io, input: Input<'_>) -> bool {
        self.chain = None;
        let start = Instant::now();
        self.gw.handle_input(start, input);
        let any = self.drain(io);
        self.working += start.elapsed();
        any
    }

    /// [`Driver::feed`] for the next of the inputs (datagrams) a runtime feeds one after the
    /// other in one wake-up: its `now` is the clock read at the end of the previous one's drain
    /// (read here for the first), and the reading at the end of its own drain is kept for the
    /// next. So the time between the two (the receive system call, a flush of sends) counts as
    /// busy, and a datagram's `now` may precede its arrival by that much (microseconds). The
    /// runtime calls [`Driver::woke`] when it wakes from sleep, so that no reading from before
    /// the sleep is used.
    pub fn feed_next(&mut self, io: &mut impl Io, input: Input<'_>) -> bool {
        let start = self.chain.take().unwrap_or_else(Instant::now);
        self.gw.handle_input(start, input);
        let any = self.drain(io);
        let end = Instant::now();
        self.working += end.saturating_duration_since(start);
        self.chain = Some(end);
        any
    }

    /// The runtime woke from sleep (or is about to feed after work of its own): the next
    /// [`Driver::feed_next`] reads the clock afresh.
    pub fn woke(&mut self) {
        self.chain = None;
    }

    /// Time spent handling inputs (the core and the [`Io`] calls of its drains) since start.
    pub fn busy(&self) -> std::time::Duration {
        self.working
    }

    /// Carries out the core's outputs until `Output::Timeout`, then feeds the answers that waited
    /// for the drain's end (bind answers, then dropped connections), each with its own drain.
    pub fn drain(&mut self, io: &mut impl Io) -> bool {
        self.chain = None; // it may feed inputs of its own, at a later `now`
        let mut any = self.drain_outputs(io);
        loop {
            if let Some((socket, answer)) = self.bind_answers.pop_front() {
                self.gw.handle_input(Instant::now(), Input::udp_bind_result(socket, answer));
            } else if let Some((worker, msg)) = self.bounced.pop_front() {
                self.gw.handle_input(Instant::now(), Input::ToWorkerFailed { worker, msg });
            } else if let Some(deferred) = io.take_deferred() {
                self.gw.handle_input(Instant::now(), deferred.input());
            } else {
                return any;
            }
            any |= self.drain_outputs(io);
        }
    }

    /// Feeds what the runtime deferred outside a drain (a read that hit EOF or an error), each
    /// with its own drain.
    pub fn settle(&mut self, io: &mut impl Io) {
        while let Some(deferred) = io.take_deferred() {
            self.chain = None;
            let start = Instant::now();
            self.gw.handle_input(start, deferred.input());
            self.drain(io);
            self.working += start.elapsed();
        }
    }

    /// Feeds `Input::Timeout` if the deadline has passed, and watches for a busy loop.
    pub fn timer(&mut self, io: &mut impl Io) {
        let now = Instant::now();
        if now < self.deadline {
            return;
        }
        self.chain = None;
        self.gw.handle_input(now, Input::Timeout);
        let output = self.drain(io);
        self.busy.record(&self.gw, now, output, self.deadline);
        self.working += now.elapsed();
    }

    /// Hands the core's outputs to `io` until `Output::Timeout`, then appends to the capture file.
    fn drain_outputs(&mut self, io: &mut impl Io) -> bool {
        let mut any = false;
        for (conn, ip) in self.gw.take_readdressed() {
            io.readdress(conn, ip);
        }
        loop {
            match self.gw.poll_output() {
                Output::StreamWrite { conn, data } => io.write(conn, data),
                Output::StreamClose { conn } => io.close(conn),
                Output::Datagram(t) => io.send_datagram(t),
                Output::BindUdp { socket, purpose, local } => {
                    let answer = io.bind_udp(socket, purpose, local);
                    self.bind_answers.push_back((socket, answer));
                }
                Output::CloseUdp { socket } => io.close_udp(socket),
                Output::Connect { conn, to } => io.connect(conn, to),
                Output::Resolve { query, qtype, name } => io.resolve(query, qtype, name),
                Output::Store { id, request } => io.store(id, request),
                Output::ToWorker { worker, msg } => {
                    if let Some(msg) = io.send_to_worker(worker, msg) {
                        self.bounced.push_back((worker, msg));
                    }
                }
                Output::Timeout(at) => {
                    self.deadline = at;
                    break;
                }
            }
            any = true;
        }
        if let Some(c) = &mut self.capture {
            c.write(&mut self.gw);
        }
        any
    }
}

/// Watches for a busy loop: counts consecutive `Input::Timeout` wake-ups that produced nothing
/// but a Timeout and left a deadline that is already due, and warns once when the count reaches
/// [`BusyGuard::WARN_AT`].
#[derive(Debug, Default)]
struct BusyGuard {
    count: u32,
}

impl BusyGuard {
    /// Consecutive no-op wake-ups with a deadline already due before the warning.
    const WARN_AT: u32 = 1000;

    /// Records one `Input::Timeout` fed at `now` and its drain: `output` is whether anything but
    /// a Timeout came out, `deadline` the Timeout it ended with.
    fn record(&mut self, gw: &Gateway, now: Instant, output: bool, deadline: Instant) {
        if !output && deadline <= now {
            self.count += 1;
            if self.count == Self::WARN_AT {
                log::warn!("busy loop: {} timeouts in a row did nothing ({})", Self::WARN_AT, gw.last_timeout_reason());
            }
        } else {
            self.count = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use sylkgw_core::{Config, Listener};

    /// Records what the driver asks and hands back the connections it is told were dropped.
    #[derive(Default)]
    struct Recorded {
        writes: Vec<(ConnId, Vec<u8>)>,
        closes: Vec<ConnId>,
        deferred: Vec<Deferred>,
        stores: Vec<StoreId>,
    }

    impl Io for Recorded {
        fn write(&mut self, conn: ConnId, data: Vec<u8>) {
            self.writes.push((conn, data));
        }
        fn close(&mut self, conn: ConnId) {
            self.closes.push(conn);
        }
        fn send_datagram(&mut self, _: Transmit) {}
        fn connect(&mut self, _: ConnId, _: SocketAddr) {}
        fn resolve(&mut self, _: u64, _: QueryType, _: String) {}
        fn store(&mut self, id: StoreId, _: StoreRequest) {
            self.stores.push(id);
        }
        fn bind_udp(&mut self, s: SocketId, _: UdpPurpose, _: SocketAddr) -> BindAnswer {
            Err(format!("{s}: not in this test"))
        }
        fn close_udp(&mut self, _: SocketId) {}
        fn take_deferred(&mut self) -> Option<Deferred> {
            self.deferred.pop()
        }
    }

    #[test]
    fn outputs_reach_the_io_and_dropped_connections_reach_the_core() {
        let gw = Gateway::new(Config::default(), [1; 32], Instant::now(), Duration::from_secs(1_767_225_600)).unwrap();
        let (mut driver, mut io) = (Driver::new(gw, None), Recorded::default());
        driver.drain(&mut io);
        let conn = ConnId(16);
        driver
            .feed(&mut io, Input::Accepted { conn, listener: Listener::Web, peer: "127.0.0.1:40000".parse().unwrap() });
        let request = "GET /webrtcgateway/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                       Sec-WebSocket-Protocol: sylkRTC-2\r\n\r\n";
        assert!(driver.feed(&mut io, Input::StreamData { conn, data: request.as_bytes() }));
        let first = io.writes.first().map(|(c, d)| (*c, String::from_utf8_lossy(d).into_owned()));
        assert!(first.is_some_and(|(c, d)| c == conn && d.starts_with("HTTP/1.1 101")), "{:?}", io.writes);
        assert_eq!(driver.gateway().connection_count(), 1);
        // Dropped by the runtime during a drain: the core hears of it right after that drain.
        io.deferred.push(Deferred::Closed(conn));
        driver.drain(&mut io);
        assert_eq!(driver.gateway().connection_count(), 0);
        assert!(io.closes.is_empty(), "a connection the runtime dropped is not closed again");
        assert!(driver.deadline() > Instant::now() - Duration::from_secs(1));
    }

    #[test]
    fn chained_inputs_share_clock_readings_and_never_go_back() {
        let gw = Gateway::new(Config::default(), [1; 32], Instant::now(), Duration::from_secs(1_767_225_600)).unwrap();
        let (mut driver, mut io) = (Driver::new(gw, None), Recorded::default());
        driver.drain(&mut io);
        let datagram = || Input::Datagram { socket: SocketId(9), from: "127.0.0.1:4000".parse().unwrap(), data: b"x" };
        driver.feed_next(&mut io, datagram());
        let first = driver.chain.expect("the end of its drain is kept");
        driver.feed_next(&mut io, datagram());
        assert!(driver.chain.is_some_and(|end| end >= first));
        // Any other input ends the chain (it ran at a later `now`; the core asserts time never
        // goes back, in debug builds).
        driver.feed(&mut io, Input::Timeout);
        assert_eq!(driver.chain, None);
        driver.feed_next(&mut io, datagram());
        driver.woke();
        assert_eq!(driver.chain, None);
        driver.feed_next(&mut io, datagram());
        driver.timer(&mut io);
        assert!(driver.busy() > Duration::ZERO);
    }

    #[test]
    fn store_requests_reach_the_io_and_refusals_reach_the_core() {
        let config = Config { capture: true, ..Config::default() };
        let mut gw = Gateway::new(config, [1; 32], Instant::now(), Duration::from_secs(1_767_225_600)).unwrap();
        let id = gw.store_for_test(StoreRequest::LookupPublicKey { account: "a@b".into() });
        let (mut driver, mut io) = (Driver::new(gw, None), Recorded::default());
        driver.drain(&mut io);
        assert_eq!(io.stores, [id]);
        // Refused at once by the runtime: fed right after the drain; an id never asked is dropped.
        io.deferred.push(Deferred::Stored(StoreId(99), Ok(StoreResult::Done)));
        io.deferred.push(Deferred::Stored(id, Err(StoreError::Unavailable("queue full".into()))));
        driver.drain(&mut io);
        assert!(io.deferred.is_empty());
        assert_eq!(driver.gateway().connection_count(), 0);
    }
}
