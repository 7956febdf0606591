//! `/metrics`: the Prometheus text format (exposition format 0.0.4) on `--metrics-listen`.
//!
//! # Contract
//! - Each worker publishes its core's [`Figures`] and its event loop's busy time to the shared
//!   [`Board`] every [`PUBLISH_EVERY`] ([`Publisher::due`], [`Publisher::publish`]); the core is
//!   only read, between inputs, on its own thread. The HTTP server ([`serve`]) runs on a thread
//!   of its own and only reads the board, so a scrape never waits for a worker.
//! - Figures of the whole process are summed over the workers; what is per worker (the event
//!   loop's busy ratio and time) carries a `worker` label.
//! - The server answers `GET /metrics` (200), anything else 404 or 400, one request per
//!   connection, with a read timeout: a client that sends nothing cannot hold it.

#![allow(clippy::disallowed_methods)] // the busy ratio is measured with the real clock

use crate::drive::Driver;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use sylkgw_core::gateway::{Counters, Figures, CALL_STATES, REGISTRATION_STATES, SETUP_BUCKETS};

/// How often each worker publishes its figures.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How long the server waits for a request's head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// One worker's last published figures.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Its core's figures.
    pub figures: Figures,
    /// Time its event loop spent handling inputs since start.
    pub busy: Duration,
    /// Of the last publishing interval, the share spent handling inputs (0 to 1).
    pub busy_ratio: f64,
}

/// The figures of every worker (index = worker), shared by the workers and the server.
#[derive(Debug)]
pub struct Board {
    workers: Mutex<Vec<Report>>,
}

impl Board {
    /// A board for `workers` workers, all at zero.
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(Self { workers: Mutex::new(vec![Report::default(); workers.max(1)]) })
    }

    /// Stores worker `index`'s report.
    pub fn put(&self, index: usize, report: Report) {
        let mut w = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = w.get_mut(index) {
            *slot = report;
        }
    }

    /// The reports, by worker.
    pub fn reports(&self) -> Vec<Report> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A worker's side of the board: publishes its core's figures and busy ratio.
#[derive(Debug)]
pub struct Publisher {
    board: Arc<Board>,
    index: usize,
    /// The last publication: when, and the busy time then.
    last: (Instant, Duration),
}

impl Publisher {
    /// Worker `index` of `board`.
    pub fn new(board: Arc<Board>, index: usize) -> Self {
        Self { board, index, last: (Instant::now(), Duration::ZERO) }
    }

    /// When the next publication is due.
    pub fn due(&self) -> Instant {
        self.last.0 + PUBLISH_EVERY
    }

    /// Publishes `driver`'s figures if due (call it when [`Publisher::due`] has passed).
    pub fn publish(&mut self, driver: &Driver) {
        let now = Instant::now();
        if now < self.due() {
            return;
        }
        let busy = driver.busy();
        let wall = now.saturating_duration_since(self.last.0).as_secs_f64();
        let spent = busy.saturating_sub(self.last.1).as_secs_f64();
        let busy_ratio = if wall > 0.0 { (spent / wall).clamp(0.0, 1.0) } else { 0.0 };
        self.board.put(self.index, Report { figures: driver.gateway().figures(), busy, busy_ratio });
        self.last = (now, busy);
    }
}

/// Binds `addr` and serves `/metrics` from `board` on a thread of its own; returns the bound
/// address.
pub fn serve(addr: SocketAddr, board: Arc<Board>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).map_err(|e| io::Error::new(e.kind(), format!("metrics {addr}: {e}")))?;
    let local = listener.local_addr()?;
    std::thread::Builder::new().name("sylkgw-metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(s) => {
                    if let Err(e) = answer(s, &board) {
                        log::debug!("metrics: {e}");
                    }
                }
                Err(e) => {
                    log::warn!("metrics accept: {e}");
                    std::thread::sleep(crate::ACCEPT_RETRY);
                }
            }
        }
    })?;
    log::info!("metrics on http://{local}/metrics");
    Ok(local)
}

/// Reads one request head from `stream` and answers it.
fn answer(mut stream: TcpStream, board: &Board) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", "too large\n");
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = std::str::from_utf8(line).unwrap_or("").split(' ');
    match (parts.next(), parts.next().map(|p| p.split('?').next().unwrap_or(p))) {
        (Some("GET"), Some("/metrics")) => {
            let body = render(&board.reports(), process_figures());
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &body)
        }
        (Some(_), Some(_)) => respond(&mut stream, "404 Not Found", "text/plain", "try /metrics\n"),
        _ => respond(&mut stream, "400 Bad Request", "text/plain", "bad request\n"),
    }
}

fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// The process's resident set size in bytes and its open file descriptors, where /proc has them.
pub fn process_figures() -> (Option<u64>, Option<usize>) {
    (crate::process::vm_rss_kib().map(|k| k * 1024), std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count()))
}

/// One metric family: `# HELP`, `# TYPE`, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Self { out }
    }

    /// A sample `name{labels} value`; `labels` is `key="value",…` (may be empty).
    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) -> &mut Self {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
        self
    }
}

/// A gauge without labels.
fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    Family::new(out, name, "gauge", help).sample(name, "", value);
}

/// A float in the text format (`+Inf`, no exponent for ordinary values).
fn float(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

/// A per-worker gauge's value in a worker's figures.
type PerWorker = fn(&Figures) -> usize;

/// The text of `/metrics`: the workers' `reports` summed (per-worker figures labelled
/// `worker`), then the process's RSS and fds (`process`).
pub fn render(reports: &[Report], process: (Option<u64>, Option<usize>)) -> String {
    let mut out = String::new();
    let sum = |f: &dyn Fn(&Figures) -> u64| reports.iter().map(|r| f(&r.figures)).sum::<u64>();
    let gauges: [(&str, &str, u64); 7] = [
        ("sylkgw_connections", "Stream connections alive (web and SIP).", sum(&|f| f.stats.connections as u64)),
        ("sylkgw_websockets", "WebSocket connections alive.", sum(&|f| f.stats.websockets as u64)),
        ("sylkgw_accounts", "Accounts added over all connections.", sum(&|f| f.stats.accounts as u64)),
        ("sylkgw_sip_transactions", "SIP transactions in flight.", sum(&|f| f.stats.sip_transactions as u64)),
        ("sylkgw_sip_flows", "SIP stream connections.", sum(&|f| f.stats.sip_flows as u64)),
        ("sylkgw_sip_legs", "SIP call legs alive.", sum(&|f| f.stats.sip_legs as u64)),
        ("sylkgw_rtp_pairs", "RTP/RTCP socket pairs in use.", sum(&|f| f.stats.rtp_pairs as u64)),
    ];
    for (name, help, value) in gauges {
        gauge(&mut out, name, help, value);
    }
    let mut f = Family::new(&mut out, "sylkgw_registrations", "gauge", "SIP registrations by state.");
    for (i, state) in REGISTRATION_STATES.iter().enumerate() {
        f.sample("sylkgw_registrations", &format!("state=\"{state}\""), sum(&|x| x.registrations[i] as u64));
    }
    let mut f = Family::new(&mut out, "sylkgw_calls", "gauge", "Calls by state (SylkServer's state names).");
    for (i, state) in CALL_STATES.iter().enumerate() {
        f.sample("sylkgw_calls", &format!("state=\"{}\"", state.name()), sum(&|x| x.calls[i] as u64));
    }
    labelled_counter(&mut out, reports, "sylkgw_requests_total", "sylkRTC requests by type.", |c| &c.requests);
    labelled_counter(
        &mut out,
        reports,
        "sylkgw_errors_total",
        "Errors by type (request, websocket, http, proxy).",
        |c| &c.errors,
    );
    let mut f = Family::new(&mut out, "sylkgw_rtp_packets_total", "counter", "RTP packets forwarded, by direction.");
    f.sample("sylkgw_rtp_packets_total", "direction=\"to_sip\"", sum(&|x| x.counters.to_sip.packets));
    f.sample("sylkgw_rtp_packets_total", "direction=\"to_browser\"", sum(&|x| x.counters.to_browser.packets));
    let mut f = Family::new(&mut out, "sylkgw_rtp_bytes_total", "counter", "RTP bytes forwarded, by direction.");
    f.sample("sylkgw_rtp_bytes_total", "direction=\"to_sip\"", sum(&|x| x.counters.to_sip.bytes));
    f.sample("sylkgw_rtp_bytes_total", "direction=\"to_browser\"", sum(&|x| x.counters.to_browser.bytes));
    gauge(
        &mut out,
        "sylkgw_rtp_lost_packets",
        "Packets lost by the SIP side's sources of the live calls (RTCP receiver statistics).",
        sum(&|x| x.lost_live),
    );
    let mut f = Family::new(
        &mut out,
        "sylkgw_rtp_lost_packets_ended_total",
        "counter",
        "Packets lost by the SIP side's sources of the calls that have ended.",
    );
    f.sample("sylkgw_rtp_lost_packets_ended_total", "", sum(&|x| x.counters.lost_ended));
    let name = "sylkgw_call_setup_seconds";
    let mut f = Family::new(&mut out, name, "histogram", "Time from a call's start to its answer, by origin.");
    for origin in ["outgoing", "incoming"] {
        let h = |x: &Figures| {
            if origin == "outgoing" {
                x.counters.setup_outgoing.clone()
            } else {
                x.counters.setup_incoming.clone()
            }
        };
        let mut cumulative = 0;
        for (i, bound) in SETUP_BUCKETS.iter().copied().chain([f64::INFINITY]).enumerate() {
            cumulative += sum(&|x| h(x).counts[i]);
            let labels = format!("origin=\"{origin}\",le=\"{}\"", float(bound));
            f.sample(&format!("{name}_bucket"), &labels, cumulative);
        }
        let total: f64 = reports.iter().map(|r| h(&r.figures).sum).sum();
        f.sample(&format!("{name}_sum"), &format!("origin=\"{origin}\""), float(total));
        f.sample(&format!("{name}_count"), &format!("origin=\"{origin}\""), sum(&|x| h(x).count));
    }
    let mut f = Family::new(
        &mut out,
        "sylkgw_event_loop_busy_ratio",
        "gauge",
        "Share of the last second each worker's event loop spent handling inputs.",
    );
    for (i, r) in reports.iter().enumerate() {
        f.sample("sylkgw_event_loop_busy_ratio", &format!("worker=\"{i}\""), float(r.busy_ratio));
    }
    let mut f = Family::new(
        &mut out,
        "sylkgw_event_loop_busy_seconds_total",
        "counter",
        "Time each worker's event loop spent handling inputs.",
    );
    for (i, r) in reports.iter().enumerate() {
        f.sample("sylkgw_event_loop_busy_seconds_total", &format!("worker=\"{i}\""), float(r.busy.as_secs_f64()));
    }
    let per_worker: [(&str, &str, PerWorker); 4] = [
        ("sylkgw_worker_websockets", "WebSocket connections alive, per worker.", |f| f.stats.websockets),
        ("sylkgw_worker_rooms", "Conference rooms held, per worker (a room lives on its home worker).", |f| {
            f.conference.rooms
        }),
        (
            "sylkgw_worker_room_participants",
            "Conference participants (publishers) held, per worker, whichever worker holds their WebSocket.",
            |f| f.conference.participants,
        ),
        (
            "sylkgw_worker_remote_connections",
            "WebSockets of other workers with conference sessions on this worker.",
            |f| f.conference.remotes,
        ),
    ];
    for (name, help, value) in per_worker {
        let mut f = Family::new(&mut out, name, "gauge", help);
        for (i, r) in reports.iter().enumerate() {
            f.sample(name, &format!("worker=\"{i}\""), value(&r.figures) as u64);
        }
    }
    let (rss, fds) = process;
    if let Some(rss) = rss {
        gauge(&mut out, "process_resident_memory_bytes", "Resident memory size in bytes.", rss);
    }
    if let Some(fds) = fds {
        gauge(&mut out, "process_open_fds", "Number of open file descriptors.", fds);
    }
    out
}

/// A counter family labelled `type`, summed over the workers (no samples: no family).
fn labelled_counter(
    out: &mut String,
    reports: &[Report],
    name: &str,
    help: &str,
    map: impl Fn(&Counters) -> &std::collections::BTreeMap<&'static str, u64>,
) {
    let mut total = std::collections::BTreeMap::<&str, u64>::new();
    for r in reports {
        for (k, v) in map(&r.figures.counters) {
            *total.entry(k).or_default() += v;
        }
    }
    if total.is_empty() {
        return;
    }
    let mut f = Family::new(out, name, "counter", help);
    for (k, v) in total {
        f.sample(name, &format!("type=\"{k}\""), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_workers_and_labels_what_is_per_worker() {
        let mut a = Report { busy_ratio: 0.25, busy: Duration::from_millis(1500), ..Report::default() };
        a.figures.stats.connections = 2;
        a.figures.calls[4] = 1;
        a.figures.registrations[1] = 3;
        a.figures.counters.requests.insert("ping", 4);
        a.figures.counters.setup_outgoing.observe(0.3);
        let mut b = Report::default();
        b.figures.stats.connections = 5;
        b.figures.stats.websockets = 2;
        b.figures.conference.participants = 3;
        b.figures.conference.remotes = 1;
        b.figures.counters.requests.insert("ping", 1);
        b.figures.counters.requests.insert("account-add", 2);
        b.figures.counters.setup_outgoing.observe(100.0);
        let text = render(&[a, b], (Some(4096), Some(12)));
        for line in [
            "sylkgw_connections 7",
            "sylkgw_calls{state=\"established\"} 1",
            "sylkgw_registrations{state=\"registered\"} 3",
            "sylkgw_requests_total{type=\"ping\"} 5",
            "sylkgw_requests_total{type=\"account-add\"} 2",
            "sylkgw_call_setup_seconds_bucket{origin=\"outgoing\",le=\"0.25\"} 0",
            "sylkgw_call_setup_seconds_bucket{origin=\"outgoing\",le=\"0.5\"} 1",
            "sylkgw_call_setup_seconds_bucket{origin=\"outgoing\",le=\"+Inf\"} 2",
            "sylkgw_call_setup_seconds_count{origin=\"outgoing\"} 2",
            "sylkgw_call_setup_seconds_sum{origin=\"outgoing\"} 100.3",
            "sylkgw_event_loop_busy_ratio{worker=\"0\"} 0.25",
            "sylkgw_event_loop_busy_ratio{worker=\"1\"} 0",
            "sylkgw_event_loop_busy_seconds_total{worker=\"0\"} 1.5",
            "sylkgw_worker_websockets{worker=\"0\"} 0",
            "sylkgw_worker_websockets{worker=\"1\"} 2",
            "sylkgw_worker_room_participants{worker=\"1\"} 3",
            "sylkgw_worker_remote_connections{worker=\"1\"} 1",
            "process_resident_memory_bytes 4096",
            "process_open_fds 12",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("sylkgw_errors_total"), "a family with no samples is left out");
    }
}
