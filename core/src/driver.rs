//! What the two runtimes share and the sans-IO core must not do: the command line, reading the
//! config file and PEM files, logging, the OS seed, the wall clock, and writing capture files.
//! Compiled only with the `driver` feature; nothing in the state machine uses it.

#![allow(clippy::disallowed_methods)] // this module is where the real clock is read

use crate::config::{parse_ini, Config, PemBundle, TlsConfig};
use crate::media::webrtc::DtlsIdentity;
use argh::FromArgs;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default web listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10888";

/// The CA certificates SIP TLS servers are verified against when `sip_tls_ca_file` is not
/// given (Debian's bundle), if the file exists.
pub const DEFAULT_SIP_TLS_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How long a stopping process waits for WebSockets to finish their close handshake.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How long a connection the core closed (`Output::StreamClose`) may take to accept its last
/// bytes before its socket is dropped.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// How long to wait before accepting again after a resource error (EMFILE, ENOBUFS, ...).
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// sylkgw: a WebRTC-to-SIP gateway speaking SylkServer's sylkRTC protocol on
/// ws(s)://HOST:PORT/webrtcgateway/ws.
#[derive(FromArgs, Debug, Default)]
pub struct Args {
    /// address for HTTP and WebSocket (default 127.0.0.1:10888)
    #[argh(option)]
    pub listen: Option<SocketAddr>,
    /// config file: INI with SylkServer option names (web_origins, sip_domains,
    /// websocket_ping_interval, certificate, ...)
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// PEM certificate chain; with --tls-key, serves wss instead of ws
    #[argh(option)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[argh(option)]
    pub tls_key: Option<PathBuf>,
    /// write a capture of everything the core consumes and emits to this file (one file per
    /// worker thread: FILE.N when there are several)
    #[argh(option)]
    pub capture: Option<PathBuf>,
    /// SIP UDP socket and TCP listener (default 0.0.0.0:5060; with several workers, worker N
    /// uses PORT+N)
    #[argh(option)]
    pub sip_listen: Option<SocketAddr>,
    /// host[:port] put in Via and Contact instead of the bound address (NAT, 0.0.0.0)
    #[argh(option)]
    pub sip_advertised_address: Option<String>,
    /// send every out-of-dialog SIP request to host[:port][;transport=udp|tcp|tls]
    /// (SylkServer's outbound_sip_proxy)
    #[argh(option)]
    pub outbound_proxy: Option<String>,
    /// PEM file of the CA certificates that SIP TLS servers (transport=tls, sips) are verified
    /// against (default /etc/ssl/certs/ca-certificates.crt when it exists)
    #[argh(option)]
    pub sip_tls_ca_file: Option<PathBuf>,
    // ----- Media sockets (see `apply_media_args`) -----
    /// UDP address of the WebRTC socket shared by all browser legs (default: the SIP listen IP
    /// with a port chosen by the OS; with several workers, worker N uses PORT+N unless PORT is 0)
    #[argh(option)]
    pub webrtc_listen: Option<SocketAddr>,
    /// RTP/RTCP ports LOW-HIGH: RTP on even ports, RTCP on the odd one above; LOW even (default
    /// 20000-29999; with several workers, worker N gets the N-th of equal slices)
    #[argh(option)]
    pub rtp_ports: Option<String>,
    /// IP put in SDP for media; repeat it or give a comma list (default: the IP of the WebRTC
    /// socket, or the host's address when that is a wildcard)
    #[argh(option)]
    pub media_address: Vec<String>,
    // ----- End of media sockets -----
    /// worker threads, each with its own core (sylkgw only; default: number of cores)
    #[argh(option)]
    pub threads: Option<usize>,
    /// log the core's table sizes, RSS and open fds every SECS seconds, one `stats {json}` line
    /// at info level (per worker with several workers)
    #[argh(option)]
    pub stats_interval: Option<u64>,
    /// more logging: -v debug, -vv trace (RUST_LOG overrides)
    #[argh(switch, short = 'v')]
    pub verbose: u8,
}

/// The command line of the running process (prints help or an error and exits if it is not
/// valid).
pub fn args() -> Args {
    argh::from_env()
}

/// Everything a runtime needs to start.
#[derive(Debug)]
pub struct Settings {
    /// Web listener address.
    pub listen: SocketAddr,
    /// Worker threads asked for, if any.
    pub threads: Option<usize>,
    /// Capture file, if any.
    pub capture: Option<PathBuf>,
    /// How often to log a [`stats_line`] (`--stats-interval`), if at all.
    pub stats_interval: Option<Duration>,
    /// The core's configuration (TLS material loaded).
    pub core: Config,
}

/// Reads the config file and PEM files named by `args`; the command line wins over the file.
pub fn load(args: &Args) -> Result<Settings, String> {
    let mut core = Config::default();
    let mut listen: Option<SocketAddr> = None;
    let (mut local_ip, mut local_port): (Option<String>, Option<u16>) = (None, None);
    let mut threads = None;
    let (mut cert, mut key, mut combined): (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>) = (None, None, None);
    let mut sip_ca: Option<PathBuf> = None;
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let entries = parse_ini(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for e in &entries {
            if core.apply(e).map_err(|err| format!("{}: {err}", path.display()))? {
                continue;
            }
            let bad = |what: &str| format!("{}: line {}: `{}` is not {what}", path.display(), e.line, e.key);
            match e.key.as_str() {
                "listen" => listen = Some(e.value.parse().map_err(|_| bad("HOST:PORT"))?),
                "local_ip" => local_ip = Some(e.value.clone()),
                "local_port" => local_port = Some(e.value.parse().map_err(|_| bad("a port"))?),
                "threads" => threads = Some(e.value.parse().map_err(|_| bad("a number"))?),
                "certificate" => combined = Some(base.join(&e.value)),
                "tls_cert" => cert = Some(base.join(&e.value)),
                "tls_key" => key = Some(base.join(&e.value)),
                "sip_tls_ca_file" => sip_ca = (!e.value.is_empty()).then(|| base.join(&e.value)),
                _ => return Err(format!("{}: line {}: unknown option `{}`", path.display(), e.line, e.key)),
            }
        }
    }
    if listen.is_none() && (local_ip.is_some() || local_port.is_some()) {
        let ip = local_ip.unwrap_or_else(|| "127.0.0.1".into());
        let port = local_port.unwrap_or(10888);
        let text = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
        listen = Some(text.parse().map_err(|_| format!("local_ip/local_port: {text} is not an address"))?);
    }
    if let Some(c) = &args.tls_cert {
        cert = Some(c.clone());
    }
    if let Some(k) = &args.tls_key {
        key = Some(k.clone());
    }
    core.tls = match (cert.or(combined.clone()), key.or(combined)) {
        (Some(c), Some(k)) => Some(TlsConfig { cert_pem: read(&c)?, key_pem: read(&k)? }),
        (None, None) => None,
        _ => return Err("TLS needs both a certificate and a key (--tls-cert and --tls-key)".into()),
    };
    core.sip.tls_ca_pem = sip_tls_roots(args.sip_tls_ca_file.clone().or(sip_ca))?;
    core.webrtc.dtls_cert = Some(webrtc_dtls_identity()?);
    core.capture = args.capture.is_some();
    if let Some(l) = args.sip_listen {
        core.sip.listen = l;
    }
    if let Some(a) = &args.sip_advertised_address {
        core.sip.advertised_address = Some(a.clone());
    }
    if let Some(p) = &args.outbound_proxy {
        crate::sip::target::ProxySpec::parse(p).map_err(|e| format!("--outbound-proxy {p:?}: expected {e}"))?;
        core.sip.outbound_sip_proxy = Some(p.clone());
    }
    if core.sip.advertised_address.is_none() && core.sip.listen.ip().is_unspecified() {
        // Bound to every address: advertise the host's own (the first non-loopback one).
        let ip = host_address(core.sip.listen.is_ipv6());
        log::info!("SIP listens on {}; advertising {ip}", core.sip.listen);
        core.sip.advertised_address = Some(if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() });
    }
    apply_media_args(args, &mut core)?;
    Ok(Settings {
        listen: args.listen.or(listen).unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
        threads: args.threads.or(threads),
        capture: args.capture.clone(),
        stats_interval: args.stats_interval.filter(|&s| s > 0).map(Duration::from_secs),
        core,
    })
}

/// The `--stats-interval` log line: `stats {json}` with every [`Stats`](crate::Stats) field,
/// `worker` (when given), and the process's `rss_kib` (VmRSS) and `fds` (entries of
/// /proc/self/fd), both process-wide; `null` where /proc cannot be read.
pub fn stats_line(worker: Option<usize>, stats: &crate::Stats) -> String {
    let mut v = serde_json::to_value(stats).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        if let Some(w) = worker {
            obj.insert("worker".into(), w.into());
        }
        obj.insert("rss_kib".into(), vm_rss_kib().into());
        obj.insert("fds".into(), std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count()).into());
    }
    format!("stats {v}")
}

/// This process's resident set size in KiB (`VmRSS` of /proc/self/status).
fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// A fresh self-signed DTLS certificate (ECDSA P-256, about 1.4 ms) for the browser legs: one per
/// process, shared by every leg (media spec §1.7). Made here because it draws OS randomness,
/// which the sans-IO core never does; it reaches the core in `Config::webrtc`.
pub fn webrtc_dtls_identity() -> Result<DtlsIdentity, String> {
    DtlsIdentity::generate().ok_or_else(|| "could not generate the WebRTC DTLS certificate".to_string())
}

// ===== Media sockets =====

/// Applies the media options of the command line (they win over the config file), checks them,
/// and fills in the default `media_advertised_addresses`: the WebRTC socket's IP, or the host's
/// own address when that is a wildcard (as for SIP's advertised address).
fn apply_media_args(args: &Args, core: &mut Config) -> Result<(), String> {
    if let Some(l) = args.webrtc_listen {
        core.media.webrtc_listen = Some(l);
    }
    if let Some(r) = &args.rtp_ports {
        core.media.rtp_ports = crate::config::parse_port_range(r).map_err(|e| format!("--rtp-ports: {e}"))?;
    }
    if !args.media_address.is_empty() {
        let list = args.media_address.join(",");
        core.media.media_advertised_addresses =
            crate::config::parse_media_addresses(&list).map_err(|e| format!("--media-address: {e}"))?;
    }
    core.media.validate().map_err(|e| e.to_string())?;
    if core.media.media_advertised_addresses.is_empty() {
        let ip = core.webrtc_listen().ip();
        let ip = if ip.is_unspecified() { host_address(ip.is_ipv6()) } else { ip };
        log::debug!("media binds on {}; advertising {ip}", core.webrtc_listen());
        core.media.media_advertised_addresses = vec![ip.to_string()];
    }
    Ok(())
}

// ===== End of media sockets =====

/// Reads the CA certificates for SIP TLS: `path` (which must hold at least one `CERTIFICATE`
/// block), else [`DEFAULT_SIP_TLS_CA_FILE`] if it exists; `None` leaves TLS flows failing with
/// a clear error.
fn sip_tls_roots(path: Option<PathBuf>) -> Result<Option<PemBundle>, String> {
    let Some(path) = path else {
        let default = Path::new(DEFAULT_SIP_TLS_CA_FILE);
        if !default.is_file() {
            log::debug!("no {DEFAULT_SIP_TLS_CA_FILE}: SIP over TLS needs --sip-tls-ca-file");
            return Ok(None);
        }
        return Ok(read(default).ok().map(PemBundle));
    };
    let pem = read(&path)?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{}: no CERTIFICATE block (sip_tls_ca_file)", path.display()));
    }
    Ok(Some(PemBundle(pem)))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The host's first non-loopback address of the family (loopback when there is none, as in a
/// test's network namespace).
pub fn host_address(v6: bool) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let fallback = if v6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };
    let mut found = None;
    // SAFETY: getifaddrs fills a linked list we only read and then free with freeifaddrs.
    #[allow(unsafe_code)]
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return fallback;
        }
        let mut cur = head;
        while !cur.is_null() && found.is_none() {
            let ifa = &*cur;
            let up = ifa.ifa_flags & (libc::IFF_UP as u32) != 0;
            let lo = ifa.ifa_flags & (libc::IFF_LOOPBACK as u32) != 0;
            if up && !lo && !ifa.ifa_addr.is_null() {
                match (i32::from((*ifa.ifa_addr).sa_family), v6) {
                    (libc::AF_INET, false) => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        found = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
                    }
                    (libc::AF_INET6, true) => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        if (ip.segments()[0] & 0xffc0) != 0xfe80 {
                            found = Some(IpAddr::V6(ip));
                        }
                    }
                    _ => {}
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    found.unwrap_or(fallback)
}

/// Binds the SIP UDP socket and the SIP TCP listener on the same address, both non-blocking.
/// With port 0 the OS picks the UDP port, and the TCP port may already be taken by another
/// process: then both are dropped and a fresh port is tried (up to 16 times). A fixed port that
/// is taken is an error.
pub fn bind_sip(addr: SocketAddr) -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let udp = std::net::UdpSocket::bind(addr)?;
        let local = udp.local_addr()?;
        match std::net::TcpListener::bind(local) {
            Ok(tcp) => {
                udp.set_nonblocking(true)?;
                tcp.set_nonblocking(true)?;
                return Ok((udp, tcp));
            }
            Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into()))
}

/// Bytes asked for as the SIP UDP socket's receive and send buffers: a burst of registrations
/// or a reconnect storm must not be dropped by the kernel before the loop reads it.
pub const UDP_BUFFER: usize = 4 << 20;

/// Enlarges a UDP socket's kernel buffers to [`UDP_BUFFER`]: `SO_RCVBUFFORCE` when the process
/// may (root, CAP_NET_ADMIN), else `SO_RCVBUF`, which the kernel caps at `net.core.rmem_max`
/// (raise that sysctl for non-root deployments). Returns the receive buffer obtained.
pub fn enlarge_udp_buffers(fd: std::os::fd::RawFd) -> usize {
    let size = libc::c_int::try_from(UDP_BUFFER).unwrap_or(libc::c_int::MAX);
    let set = |opt: libc::c_int| {
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid c_int.
        #[allow(unsafe_code)]
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                std::ptr::addr_of!(size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    if !set(libc::SO_RCVBUFFORCE) {
        set(libc::SO_RCVBUF);
    }
    if !set(libc::SO_SNDBUFFORCE) {
        set(libc::SO_SNDBUF);
    }
    let mut got: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a valid c_int.
    #[allow(unsafe_code)]
    let ok = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, std::ptr::addr_of_mut!(got).cast(), &mut len) == 0
    };
    if ok {
        usize::try_from(got).unwrap_or(0)
    } else {
        0
    }
}

/// Makes the next close of TCP socket `fd` abortive (`SO_LINGER` on with 0 s): the kernel
/// discards what is still queued and sends a reset instead of keeping the socket around until
/// a peer that does not read takes its bytes. For a connection dropped over
/// `Config::max_pending_bytes`; call it just before the socket is dropped.
pub fn reset_on_close(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a valid `linger`.
    #[allow(unsafe_code)]
    let ok = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        ) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Starts logging to stderr: info by default, debug with `-v`, trace with `-vv`; `RUST_LOG`
/// overrides. tungstenite never logs below debug, whatever is asked: at trace it prints every
/// message it receives, `account-add` passwords included.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .filter_module("tungstenite", log::LevelFilter::Debug)
        .format_timestamp_millis()
        .init();
}

/// Prints `sylkgw: MSG` to stderr and exits the process with `code` (2: bad command line,
/// configuration or files; 1: failed while running).
pub fn fatal(code: i32, msg: impl std::fmt::Display) -> ! {
    eprintln!("sylkgw: {msg}");
    std::process::exit(code)
}

/// The line logged once the web listener is bound: `listening on ws://ADDR/webrtcgateway/ws`
/// (`wss://` with TLS). Tests and scripts look for it to learn the bound address.
pub fn listening_line(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "wss" } else { "ws" };
    format!("listening on {scheme}://{addr}/webrtcgateway/ws")
}

/// Watches for a busy loop: counts consecutive `Input::Timeout` wake-ups that produced nothing
/// but a Timeout and left a deadline that is already due, and warns once when the count reaches
/// [`BusyGuard::WARN_AT`].
#[derive(Debug, Default)]
pub struct BusyGuard {
    count: u32,
}

impl BusyGuard {
    /// Consecutive no-op wake-ups with a deadline already due before the warning.
    pub const WARN_AT: u32 = 1000;

    /// Records one `Input::Timeout` fed at `now` and its drain: `output` is whether anything but
    /// a Timeout came out, `deadline` the Timeout it ended with.
    pub fn record(&mut self, gw: &crate::Gateway, now: Instant, output: bool, deadline: Instant) {
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

/// 32 bytes from the operating system's CSPRNG (through rustls' aws-lc-rs provider).
pub fn os_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut seed)
        .expect("the OS random number generator failed");
    seed
}

/// Wall-clock time as a duration since the Unix epoch.
pub fn unix_time() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The capture file of worker `index` out of `workers`: the path itself for one worker,
/// `PATH.N` for several.
pub fn capture_path(base: &Path, index: usize, workers: usize) -> PathBuf {
    if workers <= 1 {
        base.to_path_buf()
    } else {
        let mut s = base.as_os_str().to_owned();
        s.push(format!(".{index}"));
        PathBuf::from(s)
    }
}

/// An open capture file. Lines are written as the core records them.
pub struct CaptureFile {
    file: File,
}

impl CaptureFile {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, String> {
        File::create(path).map(|file| Self { file }).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Appends what the core recorded since the last call.
    pub fn write(&mut self, gw: &mut crate::Gateway) {
        let text = gw.take_capture();
        if !text.is_empty() {
            if let Err(e) = self.file.write_all(text.as_bytes()).and_then(|()| self.file.flush()) {
                log::error!("capture file: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_and_file() {
        let dir = std::env::temp_dir().join(format!("sylkgw-driver-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("gw.ini");
        std::fs::write(
            &cfg,
            "[WebServer]\nlocal_ip = 127.0.0.2\nlocal_port = 9999\n[General]\nsip_domains = example.com\n",
        )
        .unwrap();
        let args = Args { config: Some(cfg.clone()), ..Args::default() };
        let s = load(&args).unwrap();
        assert_eq!(s.listen, "127.0.0.2:9999".parse().unwrap());
        assert_eq!(s.core.sip_domains, ["example.com"]);
        let args = Args { config: Some(cfg), listen: Some("127.0.0.1:1".parse().unwrap()), ..Args::default() };
        assert_eq!(load(&args).unwrap().listen, "127.0.0.1:1".parse().unwrap());
        let args = Args { tls_cert: Some(dir.join("c.pem")), ..Args::default() };
        assert!(load(&args).unwrap_err().contains("both"));
        // SIP TLS trust roots: the flag wins over the file; a file without certificates is an
        // error; a missing one too.
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n").unwrap();
        let cfg2 = dir.join("gw2.ini");
        std::fs::write(&cfg2, "sip_tls_ca_file = nothing.pem\n").unwrap();
        let args = Args { config: Some(cfg2.clone()), ..Args::default() };
        assert!(load(&args).unwrap_err().contains("nothing.pem"));
        let args = Args { config: Some(cfg2), sip_tls_ca_file: Some(ca.clone()), ..Args::default() };
        assert_eq!(load(&args).unwrap().core.sip.tls_ca_pem.map(|p| p.0), Some(std::fs::read(&ca).unwrap()));
        let args = Args { sip_tls_ca_file: Some(dir.join("gw.ini")), ..Args::default() };
        assert!(load(&args).unwrap_err().contains("no CERTIFICATE"));
        assert_eq!(capture_path(Path::new("x.cap"), 2, 4), PathBuf::from("x.cap.2"));
    }

    #[test]
    fn sip_pair_shares_one_port() {
        for _ in 0..20 {
            let (udp, tcp) = bind_sip("127.0.0.1:0".parse().unwrap()).unwrap();
            assert_eq!(udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        }
        // A fixed port whose TCP side is taken is an error, not a silent move.
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(bind_sip(busy.local_addr().unwrap()).is_err());
    }

    #[test]
    fn listening() {
        let addr: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        assert_eq!(listening_line(addr, false), "listening on ws://127.0.0.1:4321/webrtcgateway/ws");
        let addr: SocketAddr = "[::1]:99".parse().unwrap();
        assert_eq!(listening_line(addr, true), "listening on wss://[::1]:99/webrtcgateway/ws");
    }

    #[test]
    fn stats_line_has_every_table_and_the_process_figures() {
        let stats = crate::Stats { calls: 2, sip_legs: 3, ..crate::Stats::default() };
        let line = stats_line(Some(1), &stats);
        let json: serde_json::Value = serde_json::from_str(line.strip_prefix("stats ").expect("prefix")).unwrap();
        assert_eq!(
            (json["calls"].as_u64(), json["sip_legs"].as_u64(), json["worker"].as_u64()),
            (Some(2), Some(3), Some(1))
        );
        for key in ["connections", "websockets", "accounts", "timers", "sip_transactions", "sip_registrations"] {
            assert_eq!(json[key].as_u64(), Some(0), "{key} in {line}");
        }
        assert!(json["rss_kib"].as_u64().is_some_and(|k| k > 0), "{line}");
        assert!(json["fds"].as_u64().is_some_and(|n| n >= 3), "{line}");
        assert!(!stats_line(None, &stats).contains("worker"));
        let args = Args { stats_interval: Some(5), ..Args::default() };
        assert_eq!(load(&args).unwrap().stats_interval, Some(Duration::from_secs(5)));
    }
}

#[cfg(test)]
mod media_tests {
    use super::*;

    #[test]
    fn media_args() {
        let args = Args { sip_listen: Some("127.0.0.1:5060".parse().unwrap()), ..Args::default() };
        let m = load(&args).unwrap().core;
        assert_eq!(m.webrtc_listen(), "127.0.0.1:0".parse().unwrap(), "SIP IP, OS-chosen port");
        assert_eq!(m.media.rtp_ports, (20000, 29999));
        assert_eq!(m.media.media_advertised_addresses, ["127.0.0.1"], "the bound IP by default");
        let args = Args {
            webrtc_listen: Some("127.0.0.2:4000".parse().unwrap()),
            rtp_ports: Some("30000-30999".into()),
            media_address: vec!["192.0.2.1,192.0.2.2".into(), "2001:db8::1".into()],
            ..Args::default()
        };
        let m = load(&args).unwrap().core.media;
        assert_eq!(m.webrtc_listen, Some("127.0.0.2:4000".parse().unwrap()));
        assert_eq!(m.rtp_ports, (30000, 30999));
        assert_eq!(m.media_advertised_addresses, ["192.0.2.1", "192.0.2.2", "2001:db8::1"]);
        // A wildcard is advertised as the host's address.
        let args = Args { webrtc_listen: Some("0.0.0.0:0".parse().unwrap()), ..Args::default() };
        let m = load(&args).unwrap().core.media;
        assert_eq!(m.media_advertised_addresses, [host_address(false).to_string()]);
        for (bad, says) in [("30001-30999", "even"), ("30000-30000", "LOW < HIGH"), ("30000", "LOW-HIGH")] {
            let args = Args { rtp_ports: Some(bad.into()), ..Args::default() };
            let e = load(&args).unwrap_err();
            assert!(e.contains("--rtp-ports") && e.contains(says), "{e}");
        }
        let args = Args { media_address: vec!["media.example.com".into()], ..Args::default() };
        assert!(load(&args).unwrap_err().contains("--media-address"));
    }
}
