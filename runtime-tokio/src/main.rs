//! `sylkgw`: the sans-IO core ([`Gateway`]) driven by tokio, one shared-nothing core per worker.
//!
//! # Contracts
//! - N worker OS threads, each with its own current-thread runtime, its own [`Gateway`] and its
//!   own listener on the same address (`SO_REUSEPORT`: the kernel spreads connections). Connection
//!   ids are per worker. The one thing shared is the connection counts ([`ConnLimits`]): every
//!   accepted socket is checked against the process's caps before its worker's core hears of it
//!   (refused: closed at once, the core never sees it; admitted: its permit lives with the
//!   socket), so `max_connections_per_ip` and the SIP TCP caps mean with N workers what they mean
//!   with one. Everything else, `max_sip_transactions` included, is per worker.
//! - In a worker, one task owns the core. Each connection task owns its socket: it sends what it
//!   reads (or that it closed) to the core task over a bounded channel, and carries out the core
//!   task's write and close commands, in order, from its own unbounded channel.
//! - The drive loop is [`Driver`]'s (shared with `sylkgw-mio`): the core task implements its
//!   [`Io`] ([`TokioIo`]), handing outputs to the connection tasks in order, and sleeps until the
//!   core's deadline.
//! - A connection the core closed is never mentioned to it again; one whose task reports EOF or an
//!   error is reported once with `Input::StreamClosed`.
//! - While a connection task writes, it does not read (backpressure on a peer that does not
//!   read). A connection the core closed gets [`CLOSE_LINGER`] to take its last bytes, then its
//!   task is aborted. The bytes handed to a task and not yet written are counted ([`Backlog`]);
//!   when they pass `max_pending_bytes` while the socket takes nothing (the task waits for it to
//!   become writable: a burst the task has not had a turn to write yet does not count), the
//!   connection is dropped: by the core task on its next write (it aborts the task and tells the
//!   core `Input::StreamClosed` right after the drain) or by the task when the socket stops taking
//!   bytes (it ends and reports `Event::Closed`), whichever comes first; its socket is closed with
//!   a TCP reset.
//! - SIP: each worker binds its own UDP socket and TCP listener on the SIP address, worker N on
//!   port + N, so that responses and in-dialog requests come back to the worker that owns the
//!   registration or call (the core advertises its own port in Via and Contact). Connections the
//!   core opens (`Output::Connect`) and name resolutions (`Output::Resolve`) run as tasks that
//!   report back over the same event channel.
//! - Media: each worker binds its own WebRTC UDP socket at start (the `--webrtc-listen` port + N,
//!   or a port of the OS's choosing when it is 0, the default) and takes the N-th of equal slices
//!   of the RTP port range (`MediaConfig::for_worker`). UDP sockets the core asks for
//!   (`Output::BindUdp`) are bound at once, inside the drain, and answered right after it. Every
//!   UDP socket but SIP's has a task that forwards its datagrams to the core task over the event
//!   channel, a batch at a time (`recvmmsg` into one [`RecvBatch`] per worker, so an idle socket
//!   holds no buffer; one event per batch). The core task queues each `Output::Datagram` and
//!   sends the queue with `sendmmsg`, a run per socket, before it waits for the next event
//!   ([`driver::udp_batch`]); `Output::CloseUdp` sends what is queued, aborts the task and drops
//!   the socket.
//! - Storage (`Output::Store`): the storage is opened once at start ([`driver::open_backend`]);
//!   each worker has its own bounded pool ([`driver::StorePool`]: 2 threads, each with its own
//!   connection, at most 256 waiting) whose threads report back over the worker's event channel.
//!   A request the pool cannot take (queue full, no storage) is answered `Unavailable` right
//!   after the drain.
//! - Once every worker is bound, and before `READY=1`, the clean read-only pages start-up mapped
//!   are shed ([`driver::shed_startup_pages`]).
//! - Rooms across workers (`sylkgw_core::conference::remote`): each core knows its index and the
//!   worker count (`ConferenceConfig::worker`/`workers`); `Output::ToWorker` goes over the
//!   receiving worker's bounded channel ([`WORKER_QUEUE`], `try_send`: a worker loop never waits
//!   for another, so two cannot block each other) and is fed there as `Input::FromWorker`, in
//!   order per sender; a message the channel does not take (full, or that worker has ended)
//!   comes back to its core as `Input::ToWorkerFailed` after the drain.
//! - The main thread waits for SIGINT/SIGTERM, tells the workers through a watch channel, and
//!   waits for them (each stops when its connections are gone or after the grace period).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sylkgw_core::dns::QueryType;
use sylkgw_core::drive::WorkerMsg;
use sylkgw_core::storage::{StoreId, StoreRequest};
use sylkgw_core::{ConnId, Gateway, Input, Listener, SocketId, Transmit, UdpPurpose};
use sylkgw_driver::udp_batch::{self, RecvBatch};
use sylkgw_driver::{
    self as driver, BindAnswer, CaptureFile, ConnLimits, Deferred, Driver, Io, Permit, ACCEPT_RETRY, CLOSE_LINGER,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};

/// Bytes asked of the socket per read (each read becomes one `Event::Data`).
const READ_CHUNK: usize = 16 * 1024;
/// Reads in flight from connection tasks to the core task, per worker (backpressure on readers).
const EVENT_QUEUE: usize = 256;
/// Events the core task takes from its queue in one turn at most, before it sends what they
/// caused (fewer if [`udp_batch::BATCH`] datagrams are waiting to go out first).
const EVENTS_PER_TURN: usize = 16;
/// Listen backlog of each worker's listener.
const BACKLOG: u32 = 1024;
/// The SIP socket's id towards the core.
const SIP_SOCKET: SocketId = SocketId(0);
/// The WebRTC socket's id towards the core.
const WEBRTC_SOCKET: SocketId = SocketId(1);
/// Largest datagram read.
const DATAGRAM: usize = 64 * 1024;
/// Messages from other workers' cores waiting for a worker's core.
const WORKER_QUEUE: usize = 1024;

/// A message for another worker's core, with the sender's index.
type WorkerMail = (usize, WorkerMsg);

fn main() {
    let args = driver::args();
    driver::init_logging(args.verbose);
    if let Some(path) = &args.check_config {
        driver::check_config(&args, path);
    }
    let settings = match driver::load(&args) {
        Ok(s) if s.threads == Some(0) => driver::fatal(2, "--threads must be at least 1"),
        Ok(s) => s,
        Err(e) => driver::fatal(2, e),
    };
    let workers = settings.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get));
    // One core per worker, built here so that a bad configuration stops us before we bind.
    let mut cores = Vec::with_capacity(workers);
    for index in 0..workers {
        let mut config = settings.core.clone();
        if config.sip.listen.port() != 0 {
            let port = u16::try_from(usize::from(config.sip.listen.port()) + index)
                .unwrap_or_else(|_| driver::fatal(2, "--sip-listen port + workers exceeds 65535"));
            config.sip.listen.set_port(port);
        }
        if let Some(tls) = config.sip.tls_listen.as_mut().filter(|t| t.port() != 0) {
            let port = u16::try_from(usize::from(tls.port()) + index)
                .unwrap_or_else(|_| driver::fatal(2, "--sip-tls-listen port + workers exceeds 65535"));
            tls.set_port(port);
        }
        config.media = config.media.for_worker(index, workers).unwrap_or_else(|e| driver::fatal(2, e));
        config.sip = config.sip.for_worker(workers);
        config.conference.worker = index;
        config.conference.workers = workers;
        let (rtp_low, rtp_high) = config.media.rtp_ports;
        log::info!("worker {index}: RTP ports {rtp_low}-{rtp_high}");
        let gw = Gateway::new(config, driver::os_seed(), Instant::now(), driver::unix_time())
            .unwrap_or_else(|e| driver::fatal(2, e));
        let path = settings.capture.as_deref().map(|base| driver::capture_path(base, index, workers));
        let capture = path.as_deref().map(CaptureFile::create).transpose().unwrap_or_else(|e| driver::fatal(2, e));
        cores.push(Driver::new(gw, capture));
    }
    let tls = settings.core.tls.is_some();
    let storage = driver::open_backend(&settings.storage).unwrap_or_else(|e| driver::fatal(2, e));
    let limits = ConnLimits::with_trusted(settings.caps, settings.core.trusted_proxies.clone());
    let board = settings.metrics_listen.map(|addr| {
        let board = driver::metrics::Board::new(workers);
        driver::metrics::serve(addr, Arc::clone(&board)).unwrap_or_else(|e| driver::fatal(2, e));
        board
    });
    let result = tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|rt| {
        let run = Run { listen: settings.listen, tls, stats_every: settings.stats_interval, board, args };
        rt.block_on(serve(run, cores, limits, storage))
    });
    if let Err(e) = result {
        driver::fatal(1, e);
    }
}

/// The main thread: binds, starts the workers, waits for a signal, stops the workers. A second
/// signal returns at once (the process exits without waiting for the workers).
/// SIGHUP re-reads the configuration and hands the reloadable options to every worker
/// (`Gateway::reload`) and the caps to the connection counts.
async fn serve(run: Run, cores: Vec<Driver>, limits: ConnLimits, storage: driver::Backend) -> io::Result<()> {
    let Run { listen, tls, stats_every, board, args } = run;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let (reload_tx, reload_rx) = watch::channel::<Option<Arc<sylkgw_core::Config>>>(None);
    let listeners = bind(listen, cores.len())?;
    let addr = listeners[0].local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every worker holds a sender; `recv` returns `None` once all workers have ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut handles = Vec::with_capacity(cores.len());
    let (peers, inboxes): (Vec<_>, Vec<_>) =
        (0..cores.len()).map(|_| mpsc::channel::<WorkerMail>(WORKER_QUEUE)).unzip();
    let peers: Arc<[mpsc::Sender<WorkerMail>]> = peers.into();
    // Each worker says when its sockets are bound; a worker that fails drops its sender.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    for (index, ((driver, listener), inbox)) in cores.into_iter().zip(listeners).zip(inboxes).enumerate() {
        let (stop, alive, limits, storage) = (stop_rx.clone(), alive_tx.clone(), limits.clone(), storage.clone());
        let metrics = board.as_ref().map(|b| driver::metrics::Publisher::new(Arc::clone(b), index));
        let ready = ready_tx.clone();
        let reload = reload_rx.clone();
        let peers = Arc::clone(&peers);
        let shared = Shared { limits, storage, stop, metrics, ready, reload, peers, inbox, _alive: alive };
        let handle = std::thread::Builder::new()
            .name(format!("sylkgw-{index}"))
            .spawn(move || worker(index, driver, listener, shared, stats_every))?;
        handles.push(handle);
    }
    drop(alive_tx);
    log::debug!("{} worker(s)", handles.len());
    log::info!("{}", driver::listening_line(addr, tls));
    drop(ready_tx);
    if (0..handles.len()).all(|_| ready_rx.recv().is_ok()) {
        driver::shed_startup_pages();
        driver::notify("READY=1");
    }
    loop {
        tokio::select! {
            () = signalled(&mut sigint, &mut sigterm) => break,
            _ = alive_rx.recv() => return Err(io::Error::other("every worker stopped")),
            _ = sighup.recv() => {
                log::info!("SIGHUP: reloading");
                driver::notify("RELOADING=1");
                match driver::load(&args) {
                    Ok(s) => {
                        limits.set_caps(s.caps);
                        limits.set_trusted(s.core.trusted_proxies.clone());
                        let _ = reload_tx.send(Some(Arc::new(s.core)));
                    }
                    Err(e) => log::error!("reload failed, keeping the running configuration: {e}"),
                }
                driver::notify("READY=1");
            }
        }
    }
    driver::notify("STOPPING=1");
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = alive_rx.recv() => {}
        () = signalled(&mut sigint, &mut sigterm) => {
            log::warn!("second signal: stopping now");
            return Ok(());
        }
    }
    for handle in handles {
        if handle.join().is_err() {
            log::error!("a worker panicked");
        }
    }
    log::info!("stopped");
    Ok(())
}

async fn signalled(sigint: &mut Signal, sigterm: &mut Signal) {
    tokio::select! {
        _ = sigint.recv() => log::info!("SIGINT"),
        _ = sigterm.recv() => log::info!("SIGTERM"),
    }
}

/// `n` listeners on `addr` sharing it through `SO_REUSEPORT`; with port 0 the first one picks
/// the port and the others bind the same. Must run in a runtime (`listen` registers the socket
/// with its reactor, `into_std` takes it back out, leaving it non-blocking).
fn bind(mut addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    (0..n)
        .map(|_| {
            let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(addr).map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))?;
            let listener = socket.listen(BACKLOG)?;
            addr = listener.local_addr()?;
            listener.into_std()
        })
        .collect()
}

/// What the main thread runs with.
struct Run {
    listen: SocketAddr,
    tls: bool,
    /// `--stats-interval`.
    stats_every: Option<Duration>,
    /// The `/metrics` board, when metrics are on.
    board: Option<Arc<driver::metrics::Board>>,
    /// The command line, read again on SIGHUP.
    args: driver::Args,
}

/// What every worker gets from the main thread.
struct Shared {
    /// A configuration reloaded on SIGHUP.
    reload: watch::Receiver<Option<Arc<sylkgw_core::Config>>>,
    /// The process's connection caps.
    limits: ConnLimits,
    /// Where the worker's storage pool opens its connections.
    storage: driver::Backend,
    /// Turns `true` at shutdown.
    stop: watch::Receiver<bool>,
    /// Told once the worker's sockets are bound (the service manager hears `READY=1` when all
    /// are).
    ready: std::sync::mpsc::Sender<()>,
    /// This worker's side of the `/metrics` board, when metrics are on.
    metrics: Option<driver::metrics::Publisher>,
    /// Every worker's inbox (by index), for `Output::ToWorker`.
    peers: Arc<[mpsc::Sender<WorkerMail>]>,
    /// This worker's inbox: other cores' messages.
    inbox: mpsc::Receiver<WorkerMail>,
    /// Dropped when the worker ends, however it ends.
    _alive: mpsc::Sender<()>,
}

/// One worker thread: its own runtime, running its core until shutdown. With `stats_every`, it
/// logs its core's [`driver::stats_line`] that often.
fn worker(
    index: usize,
    driver: Driver,
    listener: std::net::TcpListener,
    shared: Shared,
    stats_every: Option<Duration>,
) {
    let Shared { limits, storage, stop, metrics, ready, reload, peers, inbox, _alive } = shared;
    let result = tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|rt| {
        rt.block_on(async move {
            let listener = TcpListener::from_std(listener)?;
            let sip = driver.gateway().sip_listen();
            let named = |e: io::Error| io::Error::new(e.kind(), format!("SIP {sip}: {e}"));
            let (udp, sip_tcp) = driver::bind_sip(sip).map_err(named)?;
            let (udp, sip_tcp) = (UdpSocket::from_std(udp)?, TcpListener::from_std(sip_tcp)?);
            let rcvbuf = driver::enlarge_udp_buffers(std::os::fd::AsRawFd::as_raw_fd(&udp));
            log::debug!("worker {index}: SIP udp receive buffer: {rcvbuf} bytes");
            let udp = Arc::new(udp);
            let sip_local = udp.local_addr()?;
            log::info!("worker {index}: SIP on {sip_local} (udp, tcp)");
            let sip_tls = match driver.gateway().sip_tls_listen() {
                Some(addr) => {
                    let l = TcpListener::bind(addr)
                        .await
                        .map_err(|e| io::Error::new(e.kind(), format!("SIP TLS {addr}: {e}")))?;
                    log::info!("worker {index}: SIP on {} (tls)", l.local_addr()?);
                    Some(l)
                }
                None => None,
            };
            let webrtc_listen = driver.gateway().webrtc_listen();
            let webrtc = UdpSocket::bind(webrtc_listen)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("WebRTC {webrtc_listen}: {e}")))?;
            let rcvbuf = driver::enlarge_udp_buffers(std::os::fd::AsRawFd::as_raw_fd(&webrtc));
            log::debug!("worker {index}: WebRTC udp receive buffer: {rcvbuf} bytes");
            let webrtc_local = webrtc.local_addr()?;
            log::info!("worker {index}: WebRTC media on {webrtc_local} (udp)");
            let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
            let store = {
                let tx = events_tx.clone();
                // From a pool thread (outside the runtime): waits while the event queue is full.
                driver::StorePool::standard(&storage, move |id, outcome| {
                    let _ = tx.blocking_send(Event::Stored(id, outcome));
                })?
            };
            let max_pending = driver.gateway().max_pending_bytes();
            let mut core = Core {
                io: TokioIo {
                    udp: Arc::clone(&udp),
                    sockets: HashMap::new(),
                    events_tx,
                    store,
                    refused_stores: VecDeque::new(),
                    connects: Vec::new(),
                    conns: HashMap::new(),
                    dropped: Vec::new(),
                    lingering: VecDeque::new(),
                    max_pending,
                    resolver: None,
                    limits: limits.clone(),
                    peers,
                    index,
                    outbox: Vec::new(),
                },
                driver,
                limits,
                next_id: 1,
                stats: stats_every.map(|every| (index, every, Instant::now() + every)),
                metrics,
                index,
            };
            core.driver.drain(&mut core.io); // the contract: drain after `new`, before the first input
            core.feed(Input::UdpBound { socket: SIP_SOCKET, purpose: UdpPurpose::Sip, local: sip_local });
            core.io.add_socket(WEBRTC_SOCKET, webrtc);
            core.feed(Input::UdpBound { socket: WEBRTC_SOCKET, purpose: UdpPurpose::WebRtc, local: webrtc_local });
            let _ = ready.send(());
            drop(ready);
            core.run(listener, sip_tcp, sip_tls, udp, (events, inbox), (stop, reload)).await;
            Ok(())
        })
    });
    if let Err(e) = result {
        log::error!("worker {index}: {e}");
    }
}

/// From a connection task to the core task.
enum Event {
    Data(ConnId, Vec<u8>),
    /// EOF or an error; the task has ended.
    Closed(ConnId),
    /// An outgoing connection came up, or failed (its task has then ended).
    Connected(ConnId, Result<(), String>),
    /// A name resolution finished.
    Resolved(u64, Result<sylkgw_core::dns::Answer, String>),
    /// A storage request finished (sent from a storage pool thread).
    Stored(StoreId, driver::store_pool::Outcome),
    /// Datagrams on a UDP socket other than SIP's, in order: each one's source and length, and
    /// their bytes one after the other.
    Datagrams(SocketId, Vec<(SocketAddr, usize)>, Vec<u8>),
}

/// What the core task handed a connection task and it has not written yet, whether the task
/// waits for the socket to take more, and whether the connection was dropped for it (over
/// `limit`, `max_pending_bytes`).
struct Backlog {
    pending: AtomicUsize,
    stalled: AtomicBool,
    reset: AtomicBool,
    limit: usize,
}

impl Backlog {
    fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            pending: AtomicUsize::new(0),
            stalled: AtomicBool::new(false),
            reset: AtomicBool::new(false),
            limit,
        })
    }

    /// The log line of a drop.
    fn dropping(conn: ConnId, pending: usize, limit: usize) {
        log::warn!(
            "{conn}: {pending} bytes queued that the peer does not take (max_pending_bytes {limit}); dropping the connection"
        );
    }
}

/// A connection task's socket: closed with a TCP reset when dropped after the core task set
/// [`Backlog::reset`] (the task is aborted then, in the middle of a write to a peer that does not
/// read).
struct Socket {
    stream: TcpStream,
    backlog: Arc<Backlog>,
    /// The place an accepted connection holds under the process's caps (none for outgoing ones).
    _permit: Option<Permit>,
    /// Through a trusted reverse proxy: the place it holds under its client's address.
    client: Option<Permit>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        if self.backlog.reset.load(Ordering::Relaxed) {
            let _ = driver::reset_on_close(std::os::fd::AsRawFd::as_raw_fd(&self.stream));
        }
    }
}

/// From the core task to a connection task.
enum Command {
    Write(Vec<u8>),
    /// Write what came before, then shut down and end.
    Close,
    /// Hold this place under the client's address (a trusted proxy's connection).
    Client(Permit),
}

/// The task that owns a worker's [`Gateway`] (in its [`Driver`]) and turns events into inputs.
struct Core {
    driver: Driver,
    io: TokioIo,
    /// The process's connection caps (shared by every worker), checked at accept.
    limits: ConnLimits,
    next_id: u64,
    /// `--stats-interval`: this worker's index, the interval and when the next line is due.
    stats: Option<(usize, Duration, Instant)>,
    /// Publishes this worker's figures for `/metrics`.
    metrics: Option<driver::metrics::Publisher>,
    /// This worker's index.
    index: usize,
}

/// The worker's sockets and connection tasks, carrying out the core's outputs ([`Io`]).
struct TokioIo {
    /// The SIP UDP socket (shared with the receive loop in [`Core::run`]).
    udp: Arc<UdpSocket>,
    /// The other UDP sockets (WebRTC, and those the core asked for), with their receive tasks.
    sockets: HashMap<SocketId, (Arc<UdpSocket>, AbortHandle)>,
    /// For tasks started by outputs (connects, resolutions).
    events_tx: mpsc::Sender<Event>,
    /// This worker's storage pool (`Output::Store`).
    store: driver::StorePool,
    /// Storage requests the pool refused during a drain, answered after it.
    refused_stores: VecDeque<(StoreId, sylkgw_core::storage::StoreError)>,
    /// `Output::Connect`s of the last drains, started by [`Core::run`] (which owns the tasks).
    connects: Vec<(ConnId, SocketAddr)>,
    /// Command channels, tasks and backlogs of the connections the core knows.
    conns: HashMap<ConnId, (mpsc::UnboundedSender<Command>, AbortHandle, Arc<Backlog>)>,
    /// Connections dropped over `max_pending_bytes` during a drain, told to the core after it.
    dropped: Vec<ConnId>,
    /// Tasks of connections the core closed, by deadline: aborted (if still running) then.
    lingering: VecDeque<(Instant, AbortHandle)>,
    /// The core's `max_pending_bytes`.
    max_pending: usize,
    /// This worker's DNS resolver (or why there is none), made on the first `Output::Resolve`.
    resolver: Option<Result<hickory_resolver::TokioResolver, String>>,
    /// The process's connection caps, for connections readdressed by a trusted proxy.
    limits: ConnLimits,
    /// Every worker's inbox (`Output::ToWorker`).
    peers: Arc<[mpsc::Sender<WorkerMail>]>,
    /// This worker's index (the sender of its messages).
    index: usize,
    /// Datagrams of the drains since the last [`TokioIo::flush_datagrams`], in order.
    outbox: Vec<Transmit>,
}

impl Core {
    /// Runs until shutdown completes: no connections left in the core and no connection task
    /// left (all queues written and closed), or the grace period is over.
    async fn run(
        mut self,
        listener: TcpListener,
        sip_tcp: TcpListener,
        sip_tls: Option<TcpListener>,
        udp: Arc<UdpSocket>,
        (mut events, mut inbox): (mpsc::Receiver<Event>, mpsc::Receiver<WorkerMail>),
        (mut stop, mut reload): (watch::Receiver<bool>, watch::Receiver<Option<Arc<sylkgw_core::Config>>>),
    ) {
        let mut listener = Some(listener);
        let mut sip_tcp = Some(sip_tcp);
        let mut sip_tls = sip_tls;
        let events_tx = self.io.events_tx.clone();
        let mut tasks = JoinSet::new();
        let mut datagram = vec![0u8; DATAGRAM];
        let mut grace: Option<Instant> = None;
        let mut accept_retry: Option<Instant> = None;
        self.driver.drain(&mut self.io);
        let sleep = tokio::time::sleep_until(self.driver.deadline().into());
        tokio::pin!(sleep);
        loop {
            if let Some(end) = grace {
                if self.driver.gateway().connection_count() == 0 && tasks.is_empty() {
                    return;
                }
                if Instant::now() >= end {
                    log::warn!("stopping with {} connection(s) still open", tasks.len());
                    return;
                }
            }
            let linger = self.io.lingering.front().map(|&(at, _)| at);
            let next_stats = self.stats.map(|(_, _, at)| at);
            let publish = self.metrics.as_ref().map(|m| m.due());
            let wake = [Some(self.driver.deadline()), accept_retry, grace, linger, next_stats, publish]
                .into_iter()
                .flatten()
                .min()
                .expect("a deadline");
            sleep.as_mut().reset(wake.into());
            self.io.flush_datagrams();
            for (conn, to) in std::mem::take(&mut self.io.connects) {
                let (tx, rx) = mpsc::unbounded_channel();
                let backlog = Backlog::new(self.io.max_pending);
                let task = tasks.spawn(outgoing(conn, to, events_tx.clone(), rx, Arc::clone(&backlog)));
                self.io.conns.insert(conn, (tx, task, backlog));
            }
            tokio::select! {
                accepted = accept(listener.as_ref().filter(|_| accept_retry.is_none())) => match accepted {
                    Ok((stream, peer)) => self.accepted(&mut tasks, Listener::Web, stream, peer),
                    Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => {}
                    Err(e) => {
                        log::warn!("accept: {e}; retrying in {ACCEPT_RETRY:?}");
                        accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    }
                },
                accepted = accept(sip_tcp.as_ref().filter(|_| accept_retry.is_none())) => match accepted {
                    Ok((stream, peer)) => self.accepted(&mut tasks, Listener::SipTcp, stream, peer),
                    Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => {}
                    Err(e) => {
                        log::warn!("SIP accept: {e}; retrying in {ACCEPT_RETRY:?}");
                        accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    }
                },
                accepted = accept(sip_tls.as_ref().filter(|_| accept_retry.is_none())) => match accepted {
                    Ok((stream, peer)) => self.accepted(&mut tasks, Listener::SipTls, stream, peer),
                    Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => {}
                    Err(e) => {
                        log::warn!("SIP TLS accept: {e}; retrying in {ACCEPT_RETRY:?}");
                        accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    }
                },
                received = udp.recv_from(&mut datagram) => match received {
                    Ok((n, from)) => {
                        self.feed(Input::Datagram { socket: SIP_SOCKET, from, data: &datagram[..n] });
                    }
                    // ICMP errors of earlier sends surface here; they are not fatal.
                    Err(e) => log::debug!("SIP udp: {e}"),
                },
                Some(event) = events.recv() => {
                    self.event(event);
                    // The events already queued too, before the answers go out and the loop
                    // waits again: one flush (one `sendmmsg` per socket) for them all rather than
                    // one per event; bounded, so the first one's answers wait for few others.
                    for _ in 1..EVENTS_PER_TURN {
                        if self.io.outbox.len() >= udp_batch::BATCH {
                            break;
                        }
                        match events.try_recv() {
                            Ok(event) => self.event(event),
                            Err(_) => break,
                        }
                    }
                }
                Some(_) = tasks.join_next() => {} // reap ended connection tasks
                Some((from, msg)) = inbox.recv() => self.feed(Input::FromWorker { worker: from, msg }),
                () = &mut sleep => {
                    let now = Instant::now();
                    if accept_retry.is_some_and(|at| at <= now) {
                        accept_retry = None;
                    }
                    while self.io.lingering.front().is_some_and(|(at, _)| *at <= now) {
                        let (_, task) = self.io.lingering.pop_front().expect("front exists");
                        task.abort(); // a no-op if it has ended
                    }
                    if let Some((index, every, at)) = self.stats.as_mut() {
                        if *at <= now {
                            log::info!("{}", driver::stats_line(Some(*index), &self.driver.gateway().stats()));
                            *at = now + *every;
                        }
                    }
                    if let Some(m) = self.metrics.as_mut().filter(|m| m.due() <= now) {
                        m.publish(&self.driver);
                    }
                    self.driver.timer(&mut self.io);
                }
                Ok(()) = reload.changed() => {
                    let config = reload.borrow_and_update().clone();
                    if let Some(config) = config {
                        let changed = self.driver.reload(&mut self.io, &config);
                        let changed = if changed.is_empty() { "nothing".into() } else { changed.join(", ") };
                        log::info!("worker {}: reloaded; changed: {changed}", self.index);
                    }
                }
                _ = stop.changed(), if grace.is_none() => {
                    grace = Some(Instant::now() + driver::SHUTDOWN_GRACE);
                    listener = None;
                    sip_tcp = None;
                    sip_tls = None;
                    self.feed(Input::Shutdown);
                }
            }
        }
    }

    /// Feeds one event of a connection, UDP receive, resolver or storage task.
    fn event(&mut self, event: Event) {
        match event {
            Event::Connected(conn, result) if self.io.conns.contains_key(&conn) => {
                if result.is_err() {
                    self.io.conns.remove(&conn);
                }
                self.feed(Input::Connected { conn, result });
            }
            Event::Resolved(query, result) => {
                self.feed(Input::Resolved { query, result });
            }
            Event::Stored(id, result) => self.feed(Input::Stored { id, result }),
            Event::Connected(..) => {}
            Event::Datagrams(socket, datagrams, bytes) => {
                let mut at = 0;
                for (from, len) in datagrams {
                    if !self.io.sockets.contains_key(&socket) {
                        break; // the core closed that socket
                    }
                    let data = bytes.get(at..at + len).unwrap_or_default();
                    at += len;
                    self.feed(Input::Datagram { socket, from, data });
                }
            }
            Event::Data(conn, data) if self.io.conns.contains_key(&conn) => {
                self.feed(Input::StreamData { conn, data: &data });
            }
            Event::Closed(conn) if self.io.conns.remove(&conn).is_some() => {
                self.feed(Input::StreamClosed { conn });
            }
            Event::Data(..) | Event::Closed(_) => {} // the core already closed it
        }
    }

    /// Feeds `input` at the current time and drains.
    fn feed(&mut self, input: Input<'_>) {
        self.driver.feed(&mut self.io, input);
    }

    /// Starts the task of a connection accepted on `listener` and tells the core.
    /// A connection over the process's caps is closed at once, unseen by the core.
    fn accepted(&mut self, tasks: &mut JoinSet<()>, listener: Listener, stream: TcpStream, peer: SocketAddr) {
        let permit = match self.limits.admit(listener, peer.ip()) {
            Ok(p) => p,
            Err(refusal) => {
                log::warn!("{} connection from {peer} refused: {refusal}", listener.name());
                return; // dropping the stream closes it
            }
        };
        let conn = ConnId(self.next_id);
        self.next_id += 1;
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("{conn}: TCP_NODELAY: {e}");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Backlog::new(self.io.max_pending);
        let socket = Socket { stream, backlog: Arc::clone(&backlog), _permit: Some(permit), client: None };
        let task = tasks.spawn(connection(conn, socket, self.io.events_tx.clone(), rx));
        self.io.conns.insert(conn, (tx, task, backlog));
        self.feed(Input::Accepted { conn, listener, peer });
    }
}

impl Io for TokioIo {
    /// Hands `data` to the task of `conn`, unless that makes more than `max_pending_bytes` wait
    /// for its peer: then the task is aborted, its socket reset, and the core told after the
    /// drain (a peer that does not read must not make us hold an unbounded queue).
    fn write(&mut self, conn: ConnId, data: Vec<u8>) {
        let Some((tx, task, backlog)) = self.conns.get(&conn) else { return };
        let pending = backlog.pending.fetch_add(data.len(), Ordering::Relaxed) + data.len();
        if pending <= backlog.limit || !backlog.stalled.load(Ordering::Relaxed) {
            let _ = tx.send(Command::Write(data)); // fails only if the task ended: Closed is on its way
            return;
        }
        Backlog::dropping(conn, pending, backlog.limit);
        backlog.reset.store(true, Ordering::Relaxed);
        task.abort();
        self.conns.remove(&conn);
        self.dropped.push(conn);
    }

    fn close(&mut self, conn: ConnId) {
        self.connects.retain(|(c, _)| *c != conn);
        self.dropped.retain(|&d| d != conn);
        if let Some((tx, task, _)) = self.conns.remove(&conn) {
            let _ = tx.send(Command::Close);
            self.lingering.push_back((Instant::now() + CLOSE_LINGER, task));
        }
    }

    /// Queued; sent by [`TokioIo::flush_datagrams`] before the core task waits again.
    fn send_datagram(&mut self, t: Transmit) {
        self.outbox.push(t);
    }

    fn connect(&mut self, conn: ConnId, to: SocketAddr) {
        self.connects.push((conn, to));
    }

    fn resolve(&mut self, query: u64, qtype: QueryType, name: String) {
        let tx = self.events_tx.clone();
        // One resolver per worker, made on its first query (hickory, /etc/resolv.conf).
        let resolver = self.resolver.get_or_insert_with(driver::dns::system_resolver).clone();
        tokio::spawn(async move {
            let result = match resolver {
                Ok(r) => driver::dns::lookup(&r, qtype, &name).await,
                Err(e) => Err(e),
            };
            let _ = tx.send(Event::Resolved(query, result)).await;
        });
    }

    fn store(&mut self, id: StoreId, request: StoreRequest) {
        if let Err(refused) = self.store.submit(id, request) {
            log::warn!("storage request {id}: {refused}");
            self.refused_stores.push_back((id, refused));
        }
    }

    /// Binds a socket the core asked for and starts its receive task.
    fn bind_udp(&mut self, socket: SocketId, purpose: UdpPurpose, local: SocketAddr) -> BindAnswer {
        let bound = if socket == SIP_SOCKET || self.sockets.contains_key(&socket) {
            Err(io::Error::new(ErrorKind::AlreadyExists, format!("{socket} is already bound")))
        } else {
            std::net::UdpSocket::bind(local)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .and_then(UdpSocket::from_std)
                .and_then(|s| s.local_addr().map(|local| (s, local)))
        };
        match bound {
            Ok((s, local)) => {
                log::debug!("{socket}: {} on {local}", purpose.name());
                self.add_socket(socket, s);
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
        match self.sockets.remove(&socket) {
            Some((_, task)) => {
                task.abort(); // its socket closes with the task's handle
                log::debug!("{socket}: closed");
            }
            None => log::debug!("{socket}: close of a socket not bound"),
        }
    }

    /// Hands the connection task a place under the client's address; refused, drops the
    /// connection (its task aborted, the core told after the drain).
    fn readdress(&mut self, conn: ConnId, ip: IpAddr) {
        let Some((tx, task, _)) = self.conns.get(&conn) else { return };
        match self.limits.admit(Listener::Web, ip) {
            Ok(permit) => {
                let _ = tx.send(Command::Client(permit));
            }
            Err(refusal) => {
                log::warn!("{conn}: web connection from {ip} (through a proxy) refused: {refusal}");
                task.abort();
                self.conns.remove(&conn);
                self.dropped.push(conn);
            }
        }
    }

    /// Queues `msg` on worker `worker`'s inbox without waiting; full or gone: handed back.
    fn send_to_worker(&mut self, worker: usize, msg: WorkerMsg) -> Option<WorkerMsg> {
        let Some(peer) = self.peers.get(worker) else { return Some(msg) };
        peer.try_send((self.index, msg)).err().map(|e| e.into_inner().1)
    }

    fn take_deferred(&mut self) -> Option<Deferred> {
        match self.dropped.pop() {
            Some(conn) => Some(Deferred::Closed(conn)),
            None => self.refused_stores.pop_front().map(|(id, e)| Deferred::Stored(id, Err(e))),
        }
    }
}

impl TokioIo {
    /// Sends the queued datagrams: each run from one socket with `sendmmsg` (non-blocking, on
    /// the socket's fd). UDP: a datagram the socket cannot take now is lost, as on the wire.
    fn flush_datagrams(&mut self) {
        let mut outbox = std::mem::take(&mut self.outbox);
        udp_batch::send_transmits(&outbox, |id| {
            let socket = match id {
                SIP_SOCKET => Some(&self.udp),
                id => self.sockets.get(&id).map(|(s, _)| s),
            };
            socket.map(|s| std::os::fd::AsRawFd::as_raw_fd(&**s))
        });
        outbox.clear();
        self.outbox = outbox;
    }

    /// Keeps `udp` as `socket` and starts the task that forwards what it receives.
    fn add_socket(&mut self, socket: SocketId, udp: UdpSocket) {
        let udp = Arc::new(udp);
        let task = tokio::spawn(receive_datagrams(socket, Arc::clone(&udp), self.events_tx.clone()));
        self.sockets.insert(socket, (udp, task.abort_handle()));
    }
}

thread_local! {
    /// The receive batch of the UDP receive tasks of this worker (one thread, so one at a time).
    static RECV_BATCH: RefCell<RecvBatch> = RefCell::new(RecvBatch::new());
}

/// Forwards what UDP socket `socket` receives to the core task (reading until `WouldBlock` on
/// each readiness), as `Event::Datagram`; ends when the worker is gone or when aborted
/// (`Output::CloseUdp`).
async fn receive_datagrams(socket: SocketId, udp: Arc<UdpSocket>, events: mpsc::Sender<Event>) {
    loop {
        if let Err(e) = udp.readable().await {
            log::warn!("{socket}: {e}");
            return;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*udp);
        loop {
            // One batch, copied out (two allocations per batch), so the buffer is free for the
            // worker's other sockets while this task waits for the channel. A batch shorter than
            // `BATCH` emptied the socket: the closure then answers `WouldBlock` so that tokio
            // clears the readiness (only if no new event came since it was read: tokio compares
            // its tick), which saves the `recvmmsg` that would only say so; a SIP leg's RTP socket
            // carries one datagram per wake-up.
            let mut emptied = false;
            let received = RECV_BATCH.with_borrow_mut(|batch| {
                let mut got = None;
                let r = udp.try_io(tokio::io::Interest::READABLE, || {
                    let n = batch.recv(fd)?;
                    got = Some(n);
                    if n < udp_batch::BATCH {
                        Err(ErrorKind::WouldBlock.into())
                    } else {
                        Ok(())
                    }
                });
                let Some(n) = got else { return r.map(|()| (Vec::new(), Vec::new())) };
                emptied = n < udp_batch::BATCH;
                let mut datagrams = Vec::with_capacity(n);
                let mut bytes = Vec::new();
                for i in 0..n {
                    match batch.get(i) {
                        Some((from, data)) => {
                            datagrams.push((from, data.len()));
                            bytes.extend_from_slice(data);
                        }
                        None => log::debug!("{socket}: a datagram over {} bytes dropped", udp_batch::SLOT),
                    }
                }
                Ok((datagrams, bytes))
            });
            match received {
                Ok((datagrams, bytes)) => {
                    if !datagrams.is_empty() && events.send(Event::Datagrams(socket, datagrams, bytes)).await.is_err() {
                        return; // the worker is gone
                    }
                    if emptied {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // ICMP errors of earlier sends surface here; they are not fatal.
                Err(e) => log::debug!("{socket}: {e}"),
            }
        }
    }
}

/// Accepts from `listener`; never completes without one.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Owns one socket. Sends each read to the core task (the buffer is allocated only once the
/// socket is readable, so an idle connection holds none); carries out commands in order. Ends
/// after a close command, or after EOF or an error, which it reports as `Event::Closed`.
async fn connection(
    conn: ConnId,
    mut socket: Socket,
    events: mpsc::Sender<Event>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let stream = &mut socket.stream;
    let failure = loop {
        tokio::select! {
            ready = stream.readable() => {
                if let Err(e) = ready {
                    break e;
                }
                let mut data = Vec::with_capacity(READ_CHUNK);
                match stream.try_read_buf(&mut data) {
                    Ok(0) => break ErrorKind::UnexpectedEof.into(),
                    Ok(_) => {
                        if events.send(Event::Data(conn, data)).await.is_err() {
                            return; // the worker is gone
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                    Err(e) => break e,
                }
            }
            command = commands.recv() => match command {
                Some(Command::Write(data)) => {
                    let written = write_all(conn, stream, &data, &socket.backlog).await;
                    socket.backlog.pending.fetch_sub(data.len(), Ordering::Relaxed);
                    if let Err(e) = written {
                        break e;
                    }
                }
                Some(Command::Client(permit)) => socket.client = Some(permit),
                Some(Command::Close) | None => return close(conn, stream).await,
            }
        }
    };
    log::debug!("{conn}: {failure}");
    let _ = events.send(Event::Closed(conn)).await;
}

/// Writes all of `data`, marking `backlog` stalled while the socket takes nothing. Fails (and
/// marks the socket for a reset) when the socket stops taking bytes with more than the backlog's
/// limit still to write.
async fn write_all(conn: ConnId, stream: &TcpStream, data: &[u8], backlog: &Backlog) -> io::Result<()> {
    let mut done = 0;
    while done < data.len() {
        match stream.try_write(&data[done..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let pending = backlog.pending.load(Ordering::Relaxed) - done;
                if pending > backlog.limit {
                    Backlog::dropping(conn, pending, backlog.limit);
                    backlog.reset.store(true, Ordering::Relaxed);
                    return Err(io::Error::other("max_pending_bytes"));
                }
                backlog.stalled.store(true, Ordering::Relaxed);
                let ready = stream.writable().await;
                backlog.stalled.store(false, Ordering::Relaxed);
                ready?;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Connects to `to`, reports the outcome, then runs as [`connection`].
async fn outgoing(
    conn: ConnId,
    to: SocketAddr,
    events: mpsc::Sender<Event>,
    commands: mpsc::UnboundedReceiver<Command>,
    backlog: Arc<Backlog>,
) {
    match TcpStream::connect(to).await {
        Ok(stream) => {
            let _ = stream.set_nodelay(true);
            if events.send(Event::Connected(conn, Ok(()))).await.is_ok() {
                connection(conn, Socket { stream, backlog, _permit: None, client: None }, events, commands).await;
            }
        }
        Err(e) => {
            let _ = events.send(Event::Connected(conn, Err(e.to_string()))).await;
        }
    }
}

/// Discards unread input (so that closing does not turn into a reset that could destroy what we
/// just sent), then shuts down writing; the socket closes when dropped.
async fn close(conn: ConnId, stream: &mut TcpStream) {
    let mut scratch = [0u8; 4096];
    for _ in 0..16 {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    let _ = stream.shutdown().await;
    log::debug!("{conn}: closed");
}
