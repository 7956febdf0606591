//! The call load of `bench_compare`: one load client (str0m browsers, [`WebRtcClient`]) that
//! places audio calls through either sylkgw (sylkRTC-2) or Janus 1.1 (`janus.plugin.sip`), against
//! one SIP far end with an RTP echo ([`FarEnd`]), and measures from outside the gateway what it
//! adds per hop.
//!
//! * [`FarEnd`]: an in-process SIP UAS on 127.0.0.1 (100 + 200 OK with PCMU/telephone-event to
//!   every INVITE, 200 to BYE and the rest) and one RTP echo socket shared by every call. The echo
//!   writes its receive time into each packet's payload before sending it back, with the same
//!   clock ([`Clock`]) as the browsers; so a browser computes both hops of each packet:
//!   browser → gateway → echo ("out") and echo → gateway → browser ("back").
//! * [`Load`]: `threads` client threads (epoll over their sockets). Per browser, sylkgw gets its
//!   own WebSocket and a guest `account-add`; Janus gets a session, a SIP handle and a guest
//!   `register` (`outbound_proxy` = the far end), all over one WebSocket per client thread, as a
//!   backend multiplexes its users. [`Load::prepare`] makes the browsers, [`Load::call`] places
//!   the calls (at most `concurrency` in flight), [`Load::window`] lets the first `active` calls
//!   send a 20 ms PCMU packet every 20 ms and measures loss, hops, and the gateway's CPU, RSS,
//!   threads and fds. A call is set up when the browser applied the answer and its ICE + DTLS are
//!   up (the same definition for both gateways). Shard 0 also runs a plain UDP probe to the echo
//!   (the baseline of the hops without a gateway).
//! * [`Load::stop`] hangs every call up (sylkgw: closes the WebSockets; Janus: `hangup`, then
//!   `destroy` of each session) and joins the threads.

use crate::webrtc_client::{self, ClientOutput, Video, WebRtcClient};
use crate::{opcode, parse_frame, RawWs};
use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use str0m::RtcConfig;

/// Marks the payloads of call packets: `MAGIC`, sequence (u32), send time, the echo's receive
/// time (taken by the kernel), the echo's send time (ns; see [`Stamps`]).
pub const MAGIC: &[u8; 4] = b"SYLK";
/// The same for the baseline probe's packets.
pub const PROBE_MAGIC: &[u8; 4] = b"PRBE";
/// A 20 ms PCMU payload.
pub const PAYLOAD_LEN: usize = 160;
/// Packet interval of a call.
pub const PTIME: Duration = Duration::from_millis(20);
/// The far end's telephone-event PT.
const FAR_TELE: u8 = 101;
/// A setup taking longer than this counts as failed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Before a window: every sender runs this long first.
const WARMUP: Duration = Duration::from_secs(2);
/// After a window: echoes of its last packets may still arrive.
const SETTLE: Duration = Duration::from_secs(1);
/// Receive buffer of the load client's sockets.
pub const RCVBUF: i32 = 1 << 20;
/// Janus drops a session silent for `session_timeout` (60 s).
const JANUS_KEEPALIVE: Duration = Duration::from_secs(20);
/// Epoll token of the probe socket and of a shard's Janus WebSocket.
const PROBE: u64 = u64::MAX;
const JANUS_WS: u64 = u64::MAX - 1;

/// Which API the load client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// sylkgw's sylkRTC-2.
    Sylkgw,
    /// Janus's API with `janus.plugin.sip`.
    Janus,
}

// ===== The clock and window shared by the far end and the browsers =====

/// One clock for every timestamp, and the measurement window (ns since `epoch`).
///
/// Stamps are `CLOCK_REALTIME` ns since the clock was made: the clock of the receive times the
/// kernel takes (`SO_TIMESTAMPNS`, [`recv_stamped`]), so a packet's path is timed from the
/// socket it was written to up to the socket queue it landed in, not up to the moment a busy
/// receiver got round to reading it. `Instant`s (the window's bounds) map onto it through the
/// two epochs, sampled together.
pub struct Clock {
    epoch: Instant,
    /// `CLOCK_REALTIME` at `epoch`, ns.
    epoch_rt: u64,
    window_start: AtomicU64,
    window_end: AtomicU64,
}

/// `CLOCK_REALTIME`, ns.
fn realtime_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    timespec_ns(&ts)
}

fn timespec_ns(ts: &libc::timespec) -> u64 {
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

impl Clock {
    /// A clock starting now, no window.
    pub fn new() -> Arc<Self> {
        let epoch = Instant::now();
        let epoch_rt = realtime_ns();
        Arc::new(Self { epoch, epoch_rt, window_start: AtomicU64::new(u64::MAX), window_end: AtomicU64::new(u64::MAX) })
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Now, ns since the epoch (the unit of every stamp).
    pub fn now_ns(&self) -> u64 {
        realtime_ns().saturating_sub(self.epoch_rt)
    }

    /// A receive time the kernel took (`CLOCK_REALTIME`), in this clock.
    pub fn kernel_ns(&self, ts: &libc::timespec) -> u64 {
        timespec_ns(ts).saturating_sub(self.epoch_rt)
    }

    /// Whether a packet sent at `ns` counts (is in the open window).
    pub fn in_window(&self, ns: u64) -> bool {
        ns >= self.window_start.load(Ordering::Relaxed) && ns < self.window_end.load(Ordering::Relaxed)
    }

    /// Opens the window `[start, start + len)`.
    pub fn open_window(&self, start: Instant, len: Duration) {
        self.window_start.store(self.ns(start), Ordering::Relaxed);
        self.window_end.store(self.ns(start + len), Ordering::Relaxed);
    }

    /// Closes it: no packet counts until the next [`Clock::open_window`].
    pub fn close_window(&self) {
        self.window_start.store(u64::MAX, Ordering::Relaxed);
    }
}

// ===== Receive times taken by the kernel =====

/// Asks the kernel to stamp every datagram socket `fd` receives (`SO_TIMESTAMPNS`: the time it
/// was queued on the socket, `CLOCK_REALTIME`). Best effort: without it [`recv_stamped`] returns
/// no stamp and callers fall back to the time they read it. The first socket that asks turns
/// stamping on for the whole system a moment later (a deferred kernel work item); datagrams that
/// arrive before are stamped when they are read. The load client's sockets all ask seconds
/// before a measurement window opens.
pub fn enable_rx_stamps(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one int; fd is an open socket of ours.
    let _ = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// One datagram from `fd` (non-blocking or not, as the socket is) with its sender and the
/// kernel's receive time (in `clock`), if [`enable_rx_stamps`] was set on it.
pub fn recv_stamped(fd: RawFd, buf: &mut [u8], clock: &Clock) -> io::Result<(usize, Option<SocketAddr>, Option<u64>)> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // 128 bytes, aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                stamp = Some(clock.kernel_ns(&ts));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, sylkgw_driver::udp_batch::from_storage(&addr), stamp))
}

// ===== Payloads =====

/// A payload marked `magic`, with sequence `seq` and send time `sent_ns` (the echo writes its two
/// [`Stamps`] after it).
pub fn make_payload(magic: &[u8; 4], seq: u32, sent_ns: u64) -> [u8; PAYLOAD_LEN] {
    let mut p = [0xffu8; PAYLOAD_LEN]; // µ-law silence
    p[..4].copy_from_slice(magic);
    p[4..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(&sent_ns.to_be_bytes());
    p
}

/// The times a call or probe payload carries (ns, [`Clock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamps {
    /// When the sender wrote it (just before its own str0m encrypted it, for a call).
    pub sent: u64,
    /// When it was queued on the echo's socket (the kernel's stamp; the echo's read time if the
    /// kernel gave none).
    pub echo_rx: u64,
    /// When the echo sent it back.
    pub echo_tx: u64,
}

/// The send phase of call (or flow) `i` within the ptime: the golden-ratio sequence, spread
/// evenly for any first N, as independent callers' phases are on average.
pub fn phase(i: usize) -> Duration {
    PTIME.mul_f64((i as f64 * 0.618_033_988_749_895).fract())
}

/// The [`Stamps`] of a payload marked `magic` (all of them, once the echo has written its two).
pub fn stamps(p: &[u8], magic: &[u8; 4]) -> Option<Stamps> {
    if p.len() < 32 || &p[..4] != magic {
        return None;
    }
    let at = |i: usize| p[i..i + 8].try_into().ok().map(u64::from_be_bytes);
    Some(Stamps { sent: at(8)?, echo_rx: at(16)?, echo_tx: at(24)? })
}

/// A plain RTP packet (PT 0, no SSRC) around [`make_payload`]: the baseline probe's, and any
/// plain-UDP flow shaped like a call.
pub fn plain_rtp_packet(magic: &[u8; 4], seq: u32, sent_ns: u64) -> [u8; 12 + PAYLOAD_LEN] {
    let mut pkt = [0u8; 12 + PAYLOAD_LEN];
    pkt[0] = 0x80;
    pkt[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    pkt[12..].copy_from_slice(&make_payload(magic, seq, sent_ns));
    pkt
}

/// Where the payload of a plain RTP packet lies.
pub fn rtp_payload_range(p: &[u8]) -> Option<std::ops::Range<usize>> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let mut off = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let ext = p.get(off + 2..off + 4)?;
        off += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*p.last()?))?;
    }
    (off <= end).then_some(off..end)
}

// ===== The far end =====

/// The SIP far end with its RTP echo (see the module documentation). Stopped by [`FarEnd::stop`].
pub struct FarEnd {
    /// Its SIP address (UDP).
    pub sip: SocketAddr,
    /// Its RTP echo.
    pub rtp: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Call packets echoed whose send time is in the window.
    pub echoed_in_window: Arc<AtomicU64>,
    /// Distinct INVITE dialogs and BYEs seen.
    pub invites: Arc<AtomicU64>,
    /// BYEs seen.
    pub byes: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

/// Sets `SO_RCVBUF` of socket `fd` (best effort).
pub fn set_rcvbuf(fd: RawFd, bytes: i32) {
    // SAFETY: setsockopt reads `bytes` (an int) for its size; fd is an open socket of ours.
    let _ = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
}

/// An even RTP port with its RTCP neighbour on 127.0.0.1 (below the ephemeral range).
fn bind_rtp_pair() -> io::Result<(UdpSocket, UdpSocket)> {
    for port in (30000u16..32000).step_by(2) {
        let Ok(rtp) = UdpSocket::bind(("127.0.0.1", port)) else { continue };
        let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) else { continue };
        return Ok((rtp, rtcp));
    }
    Err(io::Error::other("no free RTP pair in 30000-31999"))
}

impl FarEnd {
    /// Binds and starts the SIP and echo threads.
    pub fn start(clock: Arc<Clock>) -> io::Result<Self> {
        let sip = UdpSocket::bind("127.0.0.1:0")?;
        let (rtp, rtcp) = bind_rtp_pair()?;
        for s in [&sip, &rtp, &rtcp] {
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
            set_rcvbuf(s.as_raw_fd(), 4 * RCVBUF);
        }
        let (sip_addr, rtp_addr) = (sip.local_addr()?, rtp.local_addr()?);
        let stop = Arc::new(AtomicBool::new(false));
        let echoed_in_window = Arc::new(AtomicU64::new(0));
        let invites = Arc::new(AtomicU64::new(0));
        let byes = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        {
            let (stop, invites, byes) = (stop.clone(), invites.clone(), byes.clone());
            threads.push(std::thread::spawn(move || far_sip(&sip, sip_addr, rtp_addr.port(), &stop, &invites, &byes)));
        }
        {
            let (stop, echoed) = (stop.clone(), echoed_in_window.clone());
            threads.push(std::thread::spawn(move || echo(&rtp, &clock, &stop, &echoed)));
        }
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let _ = rtcp.recv_from(&mut buf);
                }
            }));
        }
        Ok(Self { sip: sip_addr, rtp: rtp_addr, stop, echoed_in_window, invites, byes, threads })
    }

    /// Stops and joins its threads.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The RTP echo: writes into our payloads the time the kernel queued them on its socket and the
/// time it sends them back ([`Stamps`]), sends every datagram back to its source, counts call
/// packets sent in the window. Between the two stamps is the echo's own queue, which is in
/// neither hop.
fn echo(sock: &UdpSocket, clock: &Clock, stop: &AtomicBool, echoed: &AtomicU64) {
    let mut buf = [0u8; 2048];
    enable_rx_stamps(sock.as_raw_fd());
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, Some(from), kernel)) = recv_stamped(sock.as_raw_fd(), &mut buf, clock) else { continue };
        let rx = kernel.unwrap_or_else(|| clock.now_ns());
        let mut mine = None;
        if let Some(r) = rtp_payload_range(&buf[..n]) {
            let p = &buf[r.clone()];
            let call = p.len() >= 32 && &p[..4] == MAGIC;
            if p.len() >= 32 && (call || &p[..4] == PROBE_MAGIC) {
                mine = Some(r);
                if call && stamps(p, MAGIC).is_some_and(|s| clock.in_window(s.sent)) {
                    echoed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(r) = mine {
            let p = &mut buf[r];
            p[16..24].copy_from_slice(&rx.to_be_bytes());
            p[24..32].copy_from_slice(&clock.now_ns().to_be_bytes());
        }
        let _ = sock.send_to(&buf[..n], from);
    }
}

/// Header `name` of a SIP message (full form, case-insensitive): every value in order.
fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    let short = match name {
        "Via" => "v",
        "From" => "f",
        "To" => "t",
        "Call-ID" => "i",
        _ => "",
    };
    headers(msg, name).first().or(headers(msg, short).first()).copied().unwrap_or("")
}

/// A response to `req`: `tag` goes on To unless it has one.
fn reply(req: &str, code: u16, reason: &str, tag: &str, extra: &str, body: &str) -> String {
    let to = header(req, "To");
    let to = if to.contains(";tag=") || code == 100 { to.to_string() } else { format!("{to};tag={tag}") };
    let mut vias = headers(req, "Via");
    vias.extend(headers(req, "v"));
    let vias: String = vias.iter().map(|v| format!("Via: {v}\r\n")).collect();
    format!(
        "SIP/2.0 {code} {reason}\r\n{vias}From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        header(req, "From"),
        header(req, "Call-ID"),
        header(req, "CSeq"),
        body.len()
    )
}

fn far_sdp(rtp_port: u16) -> String {
    format!(
        "v=0\r\no=far 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0 {FAR_TELE}\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:{FAR_TELE} telephone-event/8000\r\na=fmtp:{FAR_TELE} 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3))
}

/// The SIP far end: 100 + 200 to INVITE, nothing to ACK, 200 to the rest; responses ignored.
fn far_sip(sock: &UdpSocket, me: SocketAddr, rtp_port: u16, stop: &AtomicBool, invites: &AtomicU64, byes: &AtomicU64) {
    let mut buf = vec![0u8; 65536];
    let sdp = far_sdp(rtp_port);
    let contact = format!("Contact: <sip:echo@{me}>\r\n");
    let mut dialogs = std::collections::HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
        let Ok(text) = std::str::from_utf8(&buf[..n]) else { continue };
        if text.starts_with("SIP/2.0") || text.trim().is_empty() {
            continue;
        }
        let method = text.split(' ').next().unwrap_or("");
        let tag = format!("far{:x}", fnv1a(header(text, "Call-ID").as_bytes()));
        let out = match method {
            "INVITE" => {
                if dialogs.insert(header(text, "Call-ID").to_string()) {
                    invites.fetch_add(1, Ordering::Relaxed);
                }
                let _ = sock.send_to(reply(text, 100, "Trying", &tag, "", "").as_bytes(), from);
                let extra = format!("{contact}Content-Type: application/sdp\r\n");
                reply(text, 200, "OK", &tag, &extra, &sdp)
            }
            "ACK" => continue,
            "BYE" => {
                byes.fetch_add(1, Ordering::Relaxed);
                reply(text, 200, "OK", &tag, "", "")
            }
            _ => reply(text, 200, "OK", &tag, "", ""),
        };
        let _ = sock.send_to(out.as_bytes(), from);
    }
}

// ===== epoll and non-blocking WebSockets =====

/// epoll over our sockets (level-triggered).
pub struct Epoll(RawFd);

impl Epoll {
    /// A new epoll instance.
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    /// Watches `fd` for input, reported as `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: epoll_ctl reads the event struct we pass; both descriptors are open.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn del(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`.
        unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Waits up to `timeout_ms` for events; `out` gets their tokens.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32, out: &mut Vec<u64>) {
        out.clear();
        // SAFETY: the kernel writes at most `events.len()` entries into `events`.
        let n = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, timeout_ms) };
        for ev in events.iter().take(n.max(0) as usize) {
            out.push(ev.u64);
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor.
        unsafe { libc::close(self.0) };
    }
}

/// A WebSocket on a non-blocking stream, after the handshake.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

impl Conn {
    fn from_raw(ws: RawWs) -> io::Result<Self> {
        let RawWs { stream, .. } = ws;
        stream.set_nonblocking(true)?;
        Ok(Self { stream, buf: Vec::new(), closed: false })
    }

    /// Sends a masked frame (retries briefly on a full send buffer).
    fn send(&mut self, op: u8, payload: &[u8]) -> io::Result<()> {
        const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x08];
        let mut f = Vec::with_capacity(payload.len() + 14);
        f.push(0x80 | op);
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&MASK);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        let mut off = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while off < f.len() {
            match self.stream.write(&f[off..]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "WebSocket closed")),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn send_json(&mut self, v: &Value) -> io::Result<()> {
        self.send(opcode::TEXT, v.to_string().as_bytes())
    }

    /// Reads what is there; the text messages parsed as JSON (pings answered).
    fn read(&mut self) -> Vec<Value> {
        let mut chunk = [0u8; 16384];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        let mut out = Vec::new();
        let mut used_total = 0;
        while let Some((frame, used)) = parse_frame(&self.buf[used_total..]) {
            used_total += used;
            match frame.opcode {
                opcode::TEXT => {
                    if let Ok(v) = serde_json::from_slice::<Value>(&frame.payload) {
                        out.push(v);
                    }
                }
                opcode::PING => {
                    let _ = self.send(opcode::PONG, &frame.payload);
                }
                opcode::CLOSE => self.closed = true,
                _ => {}
            }
        }
        self.buf.drain(..used_total);
        out
    }
}

// ===== The load client =====

/// Hop samples and counts of a set of packets.
#[derive(Debug, Default)]
pub struct Media {
    /// Sent in the window.
    pub sent: u64,
    /// Of those, echoed back.
    pub received: u64,
    /// browser → echo, µs: from the sender's stamp to the kernel queueing it on the echo's socket.
    pub out_us: Vec<u32>,
    /// echo → browser, µs: from the echo's send to the kernel queueing it on the browser's socket.
    pub back_us: Vec<u32>,
    /// Not in either hop, µs: how long the echo took to read and send a packet back (its own queue).
    pub echo_wait_us: Vec<u32>,
    /// Not in either hop, µs: how long the receiving client thread took to read a packet the kernel
    /// had queued for it (its own queue, busy with other calls' packets).
    pub rx_wait_us: Vec<u32>,
    /// Sends skipped because the client thread came more than a ptime late.
    pub slips: u64,
}

fn us(from: u64, to: u64) -> u32 {
    (to.saturating_sub(from) / 1000).min(u64::from(u32::MAX)) as u32
}

impl Media {
    /// Adds `o`'s counts and samples.
    pub fn merge(&mut self, o: Media) {
        self.sent += o.sent;
        self.received += o.received;
        self.out_us.extend(o.out_us);
        self.back_us.extend(o.back_us);
        self.echo_wait_us.extend(o.echo_wait_us);
        self.rx_wait_us.extend(o.rx_wait_us);
        self.slips += o.slips;
    }

    /// One echo of a packet stamped `s`, queued on the receiver's socket at `rx` (the kernel's
    /// stamp, or the read time when there is none) and read at `read` (ns).
    pub fn record(&mut self, s: Stamps, rx: u64, read: u64) {
        self.received += 1;
        self.out_us.push(us(s.sent, s.echo_rx));
        self.back_us.push(us(s.echo_tx, rx));
        self.echo_wait_us.push(us(s.echo_rx, s.echo_tx));
        self.rx_wait_us.push(us(rx, read));
    }

    /// Sorts every sample list (before percentiles are read).
    pub fn sort(&mut self) {
        for v in [&mut self.out_us, &mut self.back_us, &mut self.echo_wait_us, &mut self.rx_wait_us] {
            v.sort_unstable();
        }
    }
}

/// Commands from the main thread, read by every client thread.
struct Shared {
    clock: Arc<Clock>,
    /// Browsers with an index below it are to exist (accounts prepared).
    prepare: AtomicUsize,
    /// Browsers with an index below it are to be in a call.
    target: AtomicUsize,
    /// Calls with an index below it send media.
    active: AtomicUsize,
    /// Raised by the main thread: every client thread reports its [`Media`] and starts afresh.
    collect: AtomicU64,
    end: AtomicBool,
    in_flight: AtomicU64,
    concurrency: u64,
}

enum Report {
    Prepared { target: usize, error: Option<String> },
    Setup { target: usize, established: Vec<Instant>, setup: Vec<Duration>, failed: Vec<String> },
    Media { calls: Media, probe: Media, dropped: Vec<String> },
}

/// How to reach the gateway under test.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The API.
    pub api: Api,
    /// Its WebSocket address.
    pub ws: SocketAddr,
    /// The address the browsers' UDP sockets bind (a gateway's ICE candidates must reach it).
    pub media_ip: IpAddr,
    /// The far end's SIP address (Janus: each account's `outbound_proxy`).
    pub far_sip: SocketAddr,
    /// Its RTP echo (the baseline probe's target).
    pub far_rtp: SocketAddr,
    /// Client threads.
    pub threads: usize,
    /// Call setups in flight at most.
    pub concurrency: usize,
}

/// What [`Load::call`] measured.
#[derive(Debug, Default)]
pub struct Setup {
    /// Calls set up in this step.
    pub established: usize,
    /// From the go to the last setup.
    pub wall: Duration,
    /// Request → set up, per call.
    pub latency: Vec<Duration>,
    /// Why calls failed.
    pub failed: Vec<String>,
}

/// What [`Load::window`] measured.
#[derive(Debug, Default)]
pub struct Window {
    /// Calls that sent media.
    pub active: usize,
    /// Its length.
    pub seconds: f64,
    /// Through the gateway.
    pub calls: Media,
    /// The baseline probe (no gateway).
    pub probe: Media,
    /// Call packets the far end echoed.
    pub echoed: u64,
    /// The gateway's CPU time over the window, s (every thread).
    pub gw_cpu_s: f64,
    /// Of which userspace (utime), s.
    pub gw_user_s: f64,
    /// The load client's own CPU time (its far end included), s.
    pub client_cpu_s: f64,
    /// Calls that ended during the window.
    pub dropped: Vec<String>,
}

impl Window {
    /// Loss through the gateway, %.
    pub fn loss_pct(&self) -> f64 {
        if self.calls.sent == 0 {
            return f64::NAN;
        }
        100.0 * (self.calls.sent as f64 - self.calls.received as f64) / self.calls.sent as f64
    }

    /// What the path adds per hop at percentile `p` (samples sorted): the mean over both
    /// directions of the path's percentile minus the baseline probe's, ms.
    pub fn added_ms(&self, p: f64) -> f64 {
        let out = pct_ms(&self.calls.out_us, p) - pct_ms(&self.probe.out_us, p);
        let back = pct_ms(&self.calls.back_us, p) - pct_ms(&self.probe.back_us, p);
        (out + back) / 2.0
    }

    /// The waits outside the hops (p50/p99): the echo's own queue, and the load client's
    /// (kernel queued → read) for the calls and the probe.
    pub fn waits_line(&self) -> String {
        let pp = |v: &[u32]| format!("{:.3}/{:.3}", pct_ms(v, 50.0), pct_ms(v, 99.0));
        format!(
            "not in the hops (p50/p99 ms): echo wait {} (probe {}), client read wait {} (probe {})",
            pp(&self.calls.echo_wait_us),
            pp(&self.probe.echo_wait_us),
            pp(&self.calls.rx_wait_us),
            pp(&self.probe.rx_wait_us)
        )
    }
}

/// The running load client. See the module documentation.
pub struct Load {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Report>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts the client threads (no browser yet).
    pub fn start(cfg: &LoadConfig, clock: Arc<Clock>) -> Result<Self, String> {
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or("client DTLS certificate")?;
        let rtc = webrtc_client::config(Video::None, true).set_dtls_cert(cert);
        let shared = Arc::new(Shared {
            clock,
            prepare: AtomicUsize::new(0),
            target: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            collect: AtomicU64::new(0),
            end: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            concurrency: cfg.concurrency.max(1) as u64,
        });
        let (tx, rx) = mpsc::channel();
        let threads = (0..cfg.threads.max(1))
            .map(|t| {
                let (shared, tx, rtc, cfg) = (shared.clone(), tx.clone(), rtc.clone(), cfg.clone());
                std::thread::spawn(move || {
                    let (n, rtc_cfg) = (cfg.threads.max(1), rtc);
                    match Shard::new(t, n, &cfg, &shared, rtc_cfg, tx.clone()) {
                        Ok(mut shard) => shard.run(),
                        Err(e) => {
                            let _ = tx.send(Report::Prepared { target: usize::MAX, error: Some(e) });
                        }
                    }
                })
            })
            .collect();
        Ok(Self { shared, rx, threads })
    }

    fn shards(&self) -> usize {
        self.threads.len()
    }

    /// Makes browsers `0..n` (accounts added / registered as guests); waits up to `timeout`.
    pub fn prepare(&self, n: usize, timeout: Duration) -> Result<(), String> {
        self.shared.prepare.store(n, Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        let mut errors = Vec::new();
        for _ in 0..self.shards() {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Report::Prepared { error: Some(e), .. }) => errors.push(e),
                Ok(Report::Prepared { target, .. }) if target == n => {}
                Ok(_) => return Err("unexpected report while preparing".into()),
                Err(_) => return Err(format!("browsers not prepared within {timeout:?}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Calls on browsers `0..n` (those not in a call yet); waits for every setup or failure.
    pub fn call(&self, n: usize) -> Result<Setup, String> {
        let t0 = Instant::now();
        self.shared.target.store(n, Ordering::Relaxed);
        let mut s = Setup::default();
        let mut last = t0;
        for _ in 0..self.shards() {
            match self.rx.recv_timeout(SETUP_TIMEOUT + Duration::from_secs(30 + n as u64 / 10)) {
                Ok(Report::Setup { target, established, setup, failed }) if target == n => {
                    s.established += established.len();
                    last = established.iter().copied().fold(last, Instant::max);
                    s.latency.extend(setup);
                    s.failed.extend(failed);
                }
                Ok(_) => return Err("unexpected report while calling".into()),
                Err(_) => return Err("call setups did not finish".into()),
            }
        }
        s.wall = last - t0;
        s.latency.sort_unstable();
        Ok(s)
    }

    /// Calls `0..active` send media; after the warm-up, a window of `seconds` is measured
    /// (the gateway `pid`'s CPU too).
    pub fn window(&self, active: usize, seconds: f64, pid: u32, far: &FarEnd) -> Result<Window, String> {
        self.shared.active.store(active, Ordering::Relaxed);
        std::thread::sleep(WARMUP);
        let clock = &self.shared.clock;
        let cpu0 = (pid_cpu_s(pid), pid_cpu_s(std::process::id()), pid_user_s(pid));
        let echoed0 = far.echoed_in_window.load(Ordering::Relaxed);
        let w0 = Instant::now();
        let len = Duration::from_secs_f64(seconds);
        clock.open_window(w0, len);
        std::thread::sleep(len);
        let mut w = Window {
            active,
            seconds: w0.elapsed().as_secs_f64(),
            gw_cpu_s: pid_cpu_s(pid) - cpu0.0,
            gw_user_s: pid_user_s(pid) - cpu0.2,
            client_cpu_s: pid_cpu_s(std::process::id()) - cpu0.1,
            ..Window::default()
        };
        std::thread::sleep(SETTLE);
        // Echoes later than the settle are lost: close the window before collecting, so that
        // none of them lands in the next window's counts.
        clock.close_window();
        w.echoed = far.echoed_in_window.load(Ordering::Relaxed) - echoed0;
        self.shared.collect.fetch_add(1, Ordering::Relaxed);
        for _ in 0..self.shards() {
            match self.rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Report::Media { calls, probe, dropped }) => {
                    w.calls.merge(calls);
                    w.probe.merge(probe);
                    w.dropped.extend(dropped);
                }
                Ok(_) => return Err("unexpected report in a window".into()),
                Err(_) => return Err("client threads did not report".into()),
            }
        }
        w.calls.sort();
        w.probe.sort();
        Ok(w)
    }

    /// Hangs every call up and joins the client threads.
    pub fn stop(self) {
        self.shared.end.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A percentile of sorted µs samples, in ms.
pub fn pct_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p / 100.0) as usize).min(sorted.len() - 1);
    f64::from(sorted[i]) / 1000.0
}

/// A percentile of sorted durations, in ms.
pub fn pct_d_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p / 100.0) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of process `pid` (every thread, ended ones included), s.
pub fn pid_cpu_s(pid: u32) -> f64 {
    pid_ticks_s(pid, &[11, 12])
}

/// The same, userspace only (utime).
pub fn pid_user_s(pid: u32) -> f64 {
    pid_ticks_s(pid, &[11])
}

fn pid_ticks_s(pid: u32, fields: &[usize]) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some((_, rest)) = s.rsplit_once(')') else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.iter().filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok())).sum();
    ticks as f64 / clk_tck()
}

// ===== One client thread =====

#[derive(Debug, Clone, PartialEq, Eq)]
enum CallState {
    Idle,
    /// The call request went out at this instant.
    Offered(Instant),
    Established,
    Failed(String),
}

/// Where a Janus browser is in its preparation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prep {
    Creating,
    Attaching,
    Registering,
    Ready,
    Failed,
}

struct Client {
    idx: usize,
    sock: UdpSocket,
    local: SocketAddr,
    /// sylkgw: the browser's own WebSocket.
    ws: Option<Conn>,
    /// Janus: session, handle, preparation.
    session: u64,
    handle: u64,
    prep: Prep,
    rtc: Option<WebRtcClient>,
    answered: bool,
    state: CallState,
    next_send: Option<Instant>,
    rtp_seq: u64,
    pkt_seq: u32,
}

struct Shard {
    shard: usize,
    shards: usize,
    api: Api,
    gw: SocketAddr,
    media_ip: IpAddr,
    far_sip: SocketAddr,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Report>,
    epoll: Epoll,
    config: RtcConfig,
    clients: Vec<Client>,
    /// Janus: this thread's WebSocket, and handle → client slot.
    janus: Option<Conn>,
    handles: std::collections::HashMap<u64, usize>,
    last_keepalive: Instant,
    probe: Option<UdpSocket>,
    /// While a received datagram is drained: (when the kernel queued it, when we read it), ns.
    rx_stamp: Option<(u64, u64)>,
    probe_next: Instant,
    probe_seq: u32,
    calls: Media,
    probe_media: Media,
    established: Vec<Instant>,
    setup: Vec<Duration>,
    dropped: Vec<String>,
    prepared_reported: usize,
    setup_reported: usize,
    collected: u64,
    next_call: usize,
    buf: Vec<u8>,
}

impl Shard {
    fn new(
        shard: usize,
        shards: usize,
        cfg: &LoadConfig,
        shared: &Arc<Shared>,
        config: RtcConfig,
        tx: mpsc::Sender<Report>,
    ) -> Result<Self, String> {
        let epoll = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
        let janus = match cfg.api {
            Api::Janus => {
                let (ws, _) = RawWs::connect(cfg.ws, "janus-protocol").map_err(|e| format!("janus WebSocket: {e}"))?;
                let conn = Conn::from_raw(ws).map_err(|e| e.to_string())?;
                epoll.add(conn.stream.as_raw_fd(), JANUS_WS).map_err(|e| e.to_string())?;
                Some(conn)
            }
            Api::Sylkgw => None,
        };
        let probe = if shard == 0 {
            let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            s.connect(cfg.far_rtp).map_err(|e| e.to_string())?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            enable_rx_stamps(s.as_raw_fd());
            epoll.add(s.as_raw_fd(), PROBE).map_err(|e| e.to_string())?;
            Some(s)
        } else {
            None
        };
        Ok(Self {
            shard,
            shards,
            api: cfg.api,
            gw: cfg.ws,
            media_ip: cfg.media_ip,
            far_sip: cfg.far_sip,
            shared: shared.clone(),
            tx,
            epoll,
            config,
            clients: Vec::new(),
            janus,
            handles: std::collections::HashMap::new(),
            last_keepalive: Instant::now(),
            probe,
            probe_next: Instant::now(),
            probe_seq: 0,
            calls: Media::default(),
            probe_media: Media::default(),
            established: Vec::new(),
            setup: Vec::new(),
            dropped: Vec::new(),
            prepared_reported: 0,
            setup_reported: 0,
            collected: 0,
            next_call: 0,
            buf: vec![0u8; 4096],
            rx_stamp: None,
        })
    }

    fn run(&mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut ready = Vec::with_capacity(1024);
        let mut next_due = Instant::now();
        while !self.shared.end.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.grow(now);
            self.admit(now);
            self.report_setup();
            if self.janus.is_some() && now - self.last_keepalive >= JANUS_KEEPALIVE {
                self.janus_keepalives();
                self.last_keepalive = now;
            }
            let mut wait_ms = next_due.saturating_duration_since(now).as_micros().div_ceil(1000).min(20) as i32;
            if self.admitting() {
                wait_ms = wait_ms.min(2);
            }
            self.epoll.wait(&mut events, wait_ms, &mut ready);
            for &token in &ready {
                match token {
                    PROBE => self.on_probe(),
                    JANUS_WS => self.on_janus(),
                    t if t % 2 == 0 => self.on_udp((t / 2) as usize),
                    t => self.on_ws((t / 2) as usize),
                }
            }
            let now = Instant::now();
            if now >= next_due {
                next_due = self.scan(now);
            } else {
                for c in &self.clients {
                    if let Some(rtc) = &c.rtc {
                        next_due = next_due.min(rtc.timeout);
                    }
                }
            }
            if self.probe.is_some() {
                self.send_probe(now);
                next_due = next_due.min(self.probe_next);
            }
            let collect = self.shared.collect.load(Ordering::Relaxed);
            if collect > self.collected {
                self.collected = collect;
                let _ = self.tx.send(Report::Media {
                    calls: std::mem::take(&mut self.calls),
                    probe: std::mem::take(&mut self.probe_media),
                    dropped: std::mem::take(&mut self.dropped),
                });
            }
        }
        self.hang_up();
    }

    /// My browsers below `n`.
    fn mine_below(&self, n: usize) -> usize {
        (n + self.shards - 1 - self.shard) / self.shards
    }

    /// Makes the browsers the main thread asked for; reports when they are ready.
    fn grow(&mut self, now: Instant) {
        let want = self.shared.prepare.load(Ordering::Relaxed);
        if want <= self.prepared_reported {
            return;
        }
        let mut error = None;
        while self.clients.len() < self.mine_below(want) {
            let idx = self.shard + self.clients.len() * self.shards;
            match self.open_client(idx) {
                Ok(()) => {}
                Err(e) => {
                    error = Some(format!("browser {idx}: {e}"));
                    break;
                }
            }
        }
        let _ = now;
        let pending =
            self.clients.iter().any(|c| matches!(c.prep, Prep::Creating | Prep::Attaching | Prep::Registering));
        if error.is_none() && pending {
            return;
        }
        if error.is_none() {
            let failed = self.clients.iter().filter(|c| c.prep == Prep::Failed).count();
            if failed > 0 {
                error = Some(format!("{failed} browsers failed to register"));
            }
        }
        self.prepared_reported = want;
        let _ = self.tx.send(Report::Prepared { target: want, error });
    }

    fn open_client(&mut self, idx: usize) -> Result<(), String> {
        let sock = UdpSocket::bind((self.media_ip, 0)).map_err(|e| e.to_string())?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        set_rcvbuf(sock.as_raw_fd(), RCVBUF);
        enable_rx_stamps(sock.as_raw_fd());
        let local = sock.local_addr().map_err(|e| e.to_string())?;
        let slot = self.clients.len();
        self.epoll.add(sock.as_raw_fd(), slot as u64 * 2).map_err(|e| e.to_string())?;
        let mut client = Client {
            idx,
            sock,
            local,
            ws: None,
            session: 0,
            handle: 0,
            prep: Prep::Ready,
            rtc: None,
            answered: false,
            state: CallState::Idle,
            next_send: None,
            rtp_seq: 1,
            pkt_seq: 0,
        };
        match self.api {
            Api::Sylkgw => {
                let (mut ws, _) = RawWs::connect(self.gw, "sylkRTC-2").map_err(|e| e.to_string())?;
                let ready = ws.recv_text().map_err(|e| e.to_string())?;
                if ready != r#"{"sylkrtc":"ready-event"}"# {
                    return Err(format!("expected the ready-event, got {ready}"));
                }
                let add = json!({"sylkrtc": "account-add", "transaction": format!("a{idx}"),
                    "account": format!("load{idx}@127.0.0.1"), "password": "0123456789abcdef0123456789abcdef"});
                ws.send_text(&add.to_string()).map_err(|e| e.to_string())?;
                let ack = ws.recv_text().map_err(|e| e.to_string())?;
                if !ack.starts_with(r#"{"sylkrtc":"ack""#) {
                    return Err(format!("account-add: {ack}"));
                }
                // Nothing else is sent before a session-create: RawWs's buffer is empty.
                let conn = Conn::from_raw(ws).map_err(|e| e.to_string())?;
                self.epoll.add(conn.stream.as_raw_fd(), slot as u64 * 2 + 1).map_err(|e| e.to_string())?;
                client.ws = Some(conn);
            }
            Api::Janus => {
                client.prep = Prep::Creating;
                let conn = self.janus.as_mut().ok_or("no Janus WebSocket")?;
                conn.send_json(&json!({"janus": "create", "transaction": format!("c:{slot}")}))
                    .map_err(|e| e.to_string())?;
            }
        }
        self.clients.push(client);
        Ok(())
    }

    fn admitting(&self) -> bool {
        let target = self.shared.target.load(Ordering::Relaxed);
        self.next_call < self.clients.len() && self.clients[self.next_call].idx < target
    }

    /// Starts calls while the bound on setups in flight allows.
    fn admit(&mut self, now: Instant) {
        while self.admitting() && self.shared.in_flight.load(Ordering::Relaxed) < self.shared.concurrency {
            let c = self.next_call;
            self.next_call += 1;
            self.start_call(c, now);
        }
    }

    fn report_setup(&mut self) {
        let target = self.shared.target.load(Ordering::Relaxed);
        if target <= self.setup_reported || self.admitting() {
            return;
        }
        let mine = self.mine_below(target).min(self.clients.len());
        if self.clients[..mine].iter().any(|c| matches!(c.state, CallState::Offered(_) | CallState::Idle)) {
            return;
        }
        let failed = self.clients[..mine]
            .iter()
            .skip(self.mine_below(self.setup_reported))
            .filter_map(|c| match &c.state {
                CallState::Failed(why) => Some(why.clone()),
                _ => None,
            })
            .collect();
        self.setup_reported = target;
        let _ = self.tx.send(Report::Setup {
            target,
            established: std::mem::take(&mut self.established),
            setup: std::mem::take(&mut self.setup),
            failed,
        });
    }

    fn start_call(&mut self, c: usize, now: Instant) {
        let client = &mut self.clients[c];
        if client.prep != Prep::Ready {
            client.state = CallState::Failed(format!("browser {}: not prepared", client.idx));
            return;
        }
        let mut rtc = match WebRtcClient::new(self.config.clone(), None, now, client.local) {
            Ok(r) => r,
            Err(e) => {
                client.state = CallState::Failed(format!("browser {}: {e}", client.idx));
                return;
            }
        };
        let offer = match rtc.offer(false) {
            Ok(o) => o,
            Err(e) => {
                client.state = CallState::Failed(format!("browser {}: offer: {e}", client.idx));
                return;
            }
        };
        client.rtc = Some(rtc);
        let idx = client.idx;
        let sent = match self.api {
            Api::Sylkgw => {
                let req = json!({
                    "sylkrtc": "session-create", "transaction": format!("c{idx}"),
                    "account": format!("load{idx}@127.0.0.1"), "session": format!("s{idx}"),
                    "uri": "echo@127.0.0.1", "sdp": offer,
                });
                client.ws.as_mut().map_or(Err(io::Error::other("no WebSocket")), |ws| ws.send_json(&req))
            }
            Api::Janus => {
                let req = json!({
                    "janus": "message", "transaction": format!("k:{c}"),
                    "session_id": client.session, "handle_id": client.handle,
                    "body": {"request": "call", "uri": "sip:echo@127.0.0.1"},
                    "jsep": {"type": "offer", "sdp": offer, "trickle": false},
                });
                self.janus.as_mut().map_or(Err(io::Error::other("no WebSocket")), |ws| ws.send_json(&req))
            }
        };
        match sent {
            Ok(()) => {
                self.clients[c].state = CallState::Offered(now);
                self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.clients[c].state = CallState::Failed(format!("browser {idx}: call request: {e}")),
        }
        self.drain(c, now);
    }

    /// Feeds str0m's outputs to the socket and the bookkeeping.
    fn drain(&mut self, c: usize, now: Instant) {
        let client = &mut self.clients[c];
        let Some(rtc) = client.rtc.as_mut() else { return };
        let phase = phase(client.idx);
        let (sock, clock, calls, next_send, rx_stamp) =
            (&client.sock, &*self.shared.clock, &mut self.calls, &mut client.next_send, self.rx_stamp);
        let result = rtc.poll(|o| match o {
            ClientOutput::Transmit { to, data, .. } => {
                let _ = sock.send_to(&data, to);
            }
            // The first packet at the call's own phase of the ptime (see [`phase`]), not at
            // the instant it connected: calls connect in clumps (setups are admitted C at a
            // time and answered together), and calls that send in step make bursts that
            // real callers, whose phases are independent, do not.
            ClientOutput::Connected => *next_send = Some(now + phase),
            ClientOutput::Rtp(p) => {
                if let Some(s) = stamps(&p.payload, MAGIC) {
                    // `rx` is when the kernel queued the datagram on our socket (on_udp), `read`
                    // when we read it, both before str0m decrypted it.
                    if clock.in_window(s.sent) {
                        let (rx, read) = rx_stamp.unwrap_or((clock.ns(now), clock.ns(now)));
                        calls.record(s, rx, read);
                    }
                }
            }
            ClientOutput::KeyframeRequest(..) => {}
        });
        if let Err(e) = result {
            self.fail(c, format!("str0m: {e}"));
            return;
        }
        self.check_established(c, now);
    }

    /// A call is set up once the answer is applied and ICE + DTLS are up.
    fn check_established(&mut self, c: usize, now: Instant) {
        let client = &mut self.clients[c];
        let connected = client.rtc.as_ref().is_some_and(|r| r.connected);
        if let (CallState::Offered(at), true, true) = (&client.state, client.answered, connected) {
            let at = *at;
            client.state = CallState::Established;
            self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.established.push(now);
            self.setup.push(now - at);
        }
    }

    /// Ends browser `c`'s call (failed, or dropped when it was established).
    fn fail(&mut self, c: usize, why: String) {
        let client = &mut self.clients[c];
        let why = format!("browser {}: {why}", client.idx);
        match std::mem::replace(&mut client.state, CallState::Failed(why.clone())) {
            CallState::Established => self.dropped.push(why),
            CallState::Offered(_) => {
                self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
            CallState::Idle => {}
            CallState::Failed(first) => {
                client.state = CallState::Failed(first);
                return;
            }
        }
        client.rtc = None;
    }

    fn on_answer(&mut self, c: usize, sdp: &str) {
        let now = Instant::now();
        let client = &mut self.clients[c];
        let Some(rtc) = client.rtc.as_mut().filter(|r| r.pending.is_some()) else { return };
        match rtc.accept_answer(sdp) {
            Ok(()) => {
                client.answered = true;
                self.drain(c, now);
            }
            Err(e) => self.fail(c, format!("accept_answer: {e}")),
        }
    }

    fn on_udp(&mut self, c: usize) {
        loop {
            let client = &mut self.clients[c];
            let clock = &self.shared.clock;
            let Ok((n, from, kernel)) = recv_stamped(client.sock.as_raw_fd(), &mut self.buf, clock) else { return };
            let Some(from) = from else { continue };
            let now = Instant::now();
            let read = clock.now_ns();
            let Some(rtc) = client.rtc.as_mut() else { continue };
            if rtc.receive(now, from, client.local, &self.buf[..n]).is_ok() {
                self.rx_stamp = Some((kernel.unwrap_or(read), read));
                self.drain(c, now);
                self.rx_stamp = None;
            }
        }
    }

    /// sylkgw: browser `c`'s WebSocket.
    fn on_ws(&mut self, c: usize) {
        let Some(ws) = self.clients[c].ws.as_mut() else { return };
        let msgs = ws.read();
        let closed = ws.closed;
        for v in msgs {
            match v["sylkrtc"].as_str() {
                Some("error") => self.fail(c, format!("error: {v}")),
                Some("session-event") if v["event"] == "state" => match v["state"].as_str() {
                    Some("accepted") => {
                        if let Some(sdp) = v["sdp"].as_str() {
                            self.on_answer(c, sdp);
                        }
                    }
                    Some("terminated") => {
                        let reason = v["reason"].as_str().unwrap_or("?").to_string();
                        self.fail(c, format!("terminated: {reason}"));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        if closed {
            if let Some(ws) = self.clients[c].ws.take() {
                self.epoll.del(ws.stream.as_raw_fd());
            }
            if !self.shared.end.load(Ordering::Relaxed) {
                self.fail(c, "the gateway closed the WebSocket".into());
            }
        }
    }

    /// Janus: this thread's WebSocket.
    fn on_janus(&mut self) {
        let Some(ws) = self.janus.as_mut() else { return };
        let msgs = ws.read();
        if ws.closed {
            let ws = self.janus.take();
            if let Some(ws) = ws {
                self.epoll.del(ws.stream.as_raw_fd());
            }
            for c in 0..self.clients.len() {
                self.fail(c, "Janus closed the WebSocket".into());
            }
        }
        for v in msgs {
            self.on_janus_msg(&v);
        }
    }

    fn on_janus_msg(&mut self, v: &Value) {
        let kind = v["janus"].as_str().unwrap_or("");
        let tx = v["transaction"].as_str().unwrap_or("");
        let slot = |tx: &str| tx.split_once(':').and_then(|(_, s)| s.parse::<usize>().ok());
        match kind {
            "success" => {
                let Some(c) = slot(tx).filter(|&c| c < self.clients.len()) else { return };
                let id = v["data"]["id"].as_u64().unwrap_or(0);
                let idx = self.clients[c].idx;
                let far = self.far_sip;
                let next = if tx.starts_with("c:") {
                    self.clients[c].session = id;
                    self.clients[c].prep = Prep::Attaching;
                    json!({"janus": "attach", "transaction": format!("a:{c}"), "session_id": id, "plugin": "janus.plugin.sip"})
                } else if tx.starts_with("a:") {
                    self.clients[c].handle = id;
                    self.clients[c].prep = Prep::Registering;
                    self.handles.insert(id, c);
                    json!({"janus": "message", "transaction": format!("r:{c}"),
                        "session_id": self.clients[c].session, "handle_id": id,
                        "body": {"request": "register", "type": "guest", "username": format!("sip:load{idx}@127.0.0.1"),
                                 "outbound_proxy": format!("sip:{far}")}})
                } else {
                    return;
                };
                if let Some(ws) = self.janus.as_mut() {
                    if ws.send_json(&next).is_err() {
                        self.clients[c].prep = Prep::Failed;
                    }
                }
            }
            "error" => {
                let Some(c) = slot(tx).filter(|&c| c < self.clients.len()) else { return };
                if self.clients[c].prep != Prep::Ready {
                    self.clients[c].prep = Prep::Failed;
                } else {
                    self.fail(c, format!("janus error: {v}"));
                }
            }
            "event" => {
                let Some(&c) = v["sender"].as_u64().and_then(|h| self.handles.get(&h)) else { return };
                let data = &v["plugindata"]["data"];
                if data.get("error").is_some() {
                    if self.clients[c].prep == Prep::Registering {
                        self.clients[c].prep = Prep::Failed;
                    } else {
                        self.fail(c, format!("plugin error: {data}"));
                    }
                    return;
                }
                match data["result"]["event"].as_str() {
                    Some("registered") => self.clients[c].prep = Prep::Ready,
                    Some("registration_failed") => self.clients[c].prep = Prep::Failed,
                    Some("accepted") => {
                        if let Some(sdp) = v["jsep"]["sdp"].as_str() {
                            self.on_answer(c, sdp);
                        }
                    }
                    Some("hangup") => {
                        let reason = data["result"]["reason"].as_str().unwrap_or("?").to_string();
                        self.fail(c, format!("hangup: {reason}"));
                    }
                    _ => {}
                }
            }
            "trickle" => {
                let Some(&c) = v["sender"].as_u64().and_then(|h| self.handles.get(&h)) else { return };
                if let Some(cand) = v["candidate"]["candidate"].as_str() {
                    if let (Some(rtc), Ok(cand)) =
                        (self.clients[c].rtc.as_mut(), str0m::Candidate::from_sdp_string(cand))
                    {
                        rtc.rtc.add_remote_candidate(cand);
                        self.drain(c, Instant::now());
                    }
                }
            }
            "hangup" => {
                let Some(&c) = v["sender"].as_u64().and_then(|h| self.handles.get(&h)) else { return };
                self.fail(c, format!("PeerConnection closed: {}", v["reason"]));
            }
            _ => {}
        }
    }

    fn janus_keepalives(&mut self) {
        let Some(ws) = self.janus.as_mut() else { return };
        for c in self.clients.iter().filter(|c| c.session != 0) {
            let _ = ws.send_json(&json!({"janus": "keepalive", "session_id": c.session, "transaction": "ka"}));
        }
    }

    /// Timers and media of every browser; the next instant something is due.
    fn scan(&mut self, now: Instant) -> Instant {
        let mut next = now + Duration::from_millis(50);
        let active = self.shared.active.load(Ordering::Relaxed);
        for c in 0..self.clients.len() {
            let client = &mut self.clients[c];
            let Some(rtc) = client.rtc.as_mut() else { continue };
            if rtc.timeout <= now {
                if rtc.handle_timeout(now).is_err() {
                    continue;
                }
                self.drain(c, now);
            }
            if let CallState::Offered(at) = self.clients[c].state {
                if now - at > SETUP_TIMEOUT {
                    self.fail(c, format!("not set up after {SETUP_TIMEOUT:?}"));
                    continue;
                }
            }
            let sending = self.clients[c].idx < active;
            if sending {
                self.send_media(c, now);
            }
            let client = &self.clients[c];
            if let Some(rtc) = &client.rtc {
                next = next.min(rtc.timeout);
            }
            if let (Some(t), true) = (client.next_send, sending) {
                next = next.min(t);
            }
        }
        next
    }

    fn send_media(&mut self, c: usize, now: Instant) {
        let clock = self.shared.clock.clone();
        let client = &mut self.clients[c];
        let Some(due) = client.next_send else { return };
        if client.state != CallState::Established || due > now {
            return;
        }
        let mut next = due + PTIME;
        if next <= now {
            // More than a ptime late: skip what was missed rather than bursting, and keep the
            // call's phase (a late scan must not put every late call in step).
            let missed = ((now - due).as_nanos() / PTIME.as_nanos()) as u32;
            if clock.in_window(clock.ns(now)) {
                self.calls.slips += u64::from(missed);
            }
            next = due + PTIME * (missed + 1);
        }
        client.next_send = Some(next);
        let Some(rtc) = client.rtc.as_mut() else { return };
        let Some(mid) = rtc.audio else { return };
        // Stamped now, not at the scan's `now`: the calls due in one scan go out one after the
        // other, and the later ones' wait in this loop is not the gateway's.
        let sent_ns = clock.now_ns();
        let payload = make_payload(MAGIC, client.pkt_seq, sent_ns);
        client.pkt_seq = client.pkt_seq.wrapping_add(1);
        let seq = client.rtp_seq;
        client.rtp_seq += 1;
        if !rtc.write_rtp(now, mid, (0, seq, (seq * 160) as u32, false), &payload[..]) {
            return;
        }
        if clock.in_window(sent_ns) {
            self.calls.sent += 1;
        }
        self.drain(c, now);
    }

    fn send_probe(&mut self, now: Instant) {
        let Some(p) = &self.probe else { return };
        if now < self.probe_next || self.shared.active.load(Ordering::Relaxed) == 0 {
            return;
        }
        let clock = &self.shared.clock;
        let sent_ns = clock.now_ns();
        let pkt = plain_rtp_packet(PROBE_MAGIC, self.probe_seq, sent_ns);
        self.probe_seq = self.probe_seq.wrapping_add(1);
        if p.send(&pkt).is_ok() && clock.in_window(sent_ns) {
            self.probe_media.sent += 1;
        }
        self.probe_next = if self.probe_next + PTIME > now { self.probe_next + PTIME } else { now + PTIME };
    }

    fn on_probe(&mut self) {
        let Some(p) = &self.probe else { return };
        let clock = &self.shared.clock;
        let mut b = [0u8; 512];
        while let Ok((n, _, kernel)) = recv_stamped(p.as_raw_fd(), &mut b, clock) {
            let read = clock.now_ns();
            let Some(r) = rtp_payload_range(&b[..n]) else { continue };
            if let Some(s) = stamps(&b[r], PROBE_MAGIC) {
                if clock.in_window(s.sent) {
                    self.probe_media.record(s, kernel.unwrap_or(read), read);
                }
            }
        }
    }

    /// Hangs up: sylkgw, closing each WebSocket (the gateway sends the BYE); Janus, `hangup` on
    /// each call, then `destroy` of each session.
    fn hang_up(&mut self) {
        match self.api {
            Api::Sylkgw => {
                for c in &mut self.clients {
                    if let Some(ws) = c.ws.as_mut() {
                        let _ = ws.send(opcode::CLOSE, &1000u16.to_be_bytes());
                    }
                }
            }
            Api::Janus => {
                let Some(ws) = self.janus.as_mut() else { return };
                for (slot, c) in self.clients.iter().enumerate() {
                    if c.state == CallState::Established {
                        let _ = ws.send_json(&json!({"janus": "message", "transaction": format!("h:{slot}"),
                            "session_id": c.session, "handle_id": c.handle, "body": {"request": "hangup"}}));
                    }
                }
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(2) {
                    let _ = ws.read();
                    std::thread::sleep(Duration::from_millis(20));
                }
                for (slot, c) in self.clients.iter().enumerate().filter(|(_, c)| c.session != 0) {
                    let _ = ws.send_json(
                        &json!({"janus": "destroy", "transaction": format!("d:{slot}"), "session_id": c.session}),
                    );
                }
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(1) {
                    let _ = ws.read();
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = ws.send(opcode::CLOSE, &1000u16.to_be_bytes());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_stamp_lies_between_the_send_and_the_read() {
        let clock = Clock::new();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_rx_stamps(rx.as_raw_fd());
        // The first socket to ask turns stamping on for the system a moment later (a deferred
        // kernel work item); until then a datagram is stamped when it is read. So: try until a
        // datagram that waited 5 ms in the socket shows it.
        let mut waited = Vec::new();
        for seq in 0..40 {
            let sent = clock.now_ns();
            tx.send_to(&plain_rtp_packet(MAGIC, seq, sent), rx.local_addr().unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            let mut buf = [0u8; 512];
            let (n, from, kernel) = recv_stamped(rx.as_raw_fd(), &mut buf, &clock).unwrap();
            let read = clock.now_ns();
            assert_eq!(from, Some(tx.local_addr().unwrap()));
            let kernel = kernel.expect("SO_TIMESTAMPNS gives a stamp");
            assert!(sent <= kernel && kernel <= read, "{sent} <= {kernel} <= {read}");
            let payload = &buf[rtp_payload_range(&buf[..n]).unwrap()];
            assert_eq!(stamps(payload, MAGIC).map(|s| s.sent), Some(sent));
            assert_eq!(stamps(payload, PROBE_MAGIC), None);
            waited.push(read - kernel);
            if read - kernel >= 4_000_000 {
                return; // the 5 ms in the socket are after the kernel's stamp
            }
        }
        panic!("the kernel never stamped on arrival: read − stamp {waited:?} ns");
    }

    #[test]
    fn the_phases_of_any_first_calls_spread_over_the_ptime() {
        for n in [10usize, 100, 1000] {
            let mut p: Vec<Duration> = (0..n).map(phase).collect();
            p.sort_unstable();
            assert!(p.iter().all(|&x| x < PTIME));
            let widest = p.windows(2).map(|w| w[1] - w[0]).chain([PTIME - p[n - 1] + p[0]]).max().unwrap();
            // Evenly spread would be PTIME / n; the golden-ratio sequence stays within 3×.
            assert!(widest <= PTIME * 3 / n as u32, "{n}: {widest:?}");
        }
    }
}
