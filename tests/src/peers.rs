//! Real SIP peers for end-to-end tests: kamailio (registrar + authenticating proxy), sipp
//! (scenario-driven UAC/UAS, stub registrar, echo UAS, UAC streaming a tone), baresip (a UA with
//! media: auto-answer, a WAV tone as its microphone, received audio recorded to WAV, driven over
//! ctrl_tcp) and a raw UDP SIP client for exact wire checks.
//!
//! Use them inside a private network namespace ([`crate::netns::in_netns`]): they listen on
//! 127.0.0.1 / ::1 at fixed ports (5060 by default), which is safe only there.
//!
//! Every process here is spawned by us, held as a [`Child`] and stopped by its PID (kamailio with
//! SIGTERM so that its main process stops its own children, then SIGKILL by PID for anything left;
//! sipp with SIGTERM, which it handles). As a safety net against a test process that dies
//! abruptly, helpers get `PR_SET_PDEATHSIG`: note that Linux sends it when the *thread* that
//! spawned the helper ends, so start peers from the test's own thread (or one that outlives them).
//!
//! Configs come from `tests/peers/` (copies of `shared/peers/`): `kamailio/kamailio.cfg` is a
//! template whose `$WORKDIR`, `$LISTEN`, `$MODULES_DIR`, `$AUTH_ALGORITHM`, `$USERS` and `$EXTRA`
//! are filled in at run time; `sipp/*.xml` are used as they are; `baresip/config` is a template
//! too (see [`Baresip::start`]).

use crate::netns::{alive, descendants, find_program, kill_pid, wait_deadline, Collector};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long kamailio may take to answer OPTIONS and accept TCP and ctl connections.
pub const KAMAILIO_START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a stopped process may take to exit before it is SIGKILLed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Default bound of one sipp run.
pub const SIPP_TIMEOUT: Duration = Duration::from_secs(20);

/// Default bound of one kamcmd call.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// `tests/peers/`: the config templates and sipp scenarios.
pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// The path of a program the tests need, or a panic that says how to install it.
pub fn require_program(name: &str, package: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!("`{name}` is not installed: apt-get install {package} (tests/run-all.sh installs it when missing)")
    })
}

/// Replaces each `$NAME` token (`NAME` = `[A-Z][A-Z0-9_]*`) of `template` with its value in
/// `vars`. Lines starting with `#` are left alone (they document the placeholders). Panics on an
/// uppercase `$NAME` that `vars` lacks, so that a typo cannot reach the peer. Lowercase or mixed
/// `$x` tokens (kamailio's pseudo-variables: `$fd`, `$rU`, `$sht(...)`) are kept as they are.
pub fn substitute(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    for line in template.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let len = after
                .char_indices()
                .find(|&(j, c)| !(c.is_ascii_uppercase() || (j > 0 && (c.is_ascii_digit() || c == '_'))))
                .map_or(after.len(), |(j, _)| j);
            let name = &after[..len];
            let next_is_ident = after[len..].chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if name.is_empty() || next_is_ident {
                out.push('$');
                rest = after;
                continue;
            }
            let value = vars
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("template placeholder ${name} has no value (known: {vars:?})"));
            out.push_str(value);
            rest = &after[len..];
        }
        out.push_str(rest);
    }
    out
}

// ===== Small process helpers =====

/// Asks the kernel to send `signal` to the child when the spawning thread ends.
fn die_with_parent(cmd: &mut Command, signal: i32) {
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `cmd` to completion, bounded by `timeout` (killed by PID on timeout). Returns `(exit
/// code, stdout, stderr)`, the code being `None` on timeout or signal.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> (Option<i32>, String, String) {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let out = Collector::new(child.stdout.take());
    let err = Collector::new(child.stderr.take());
    let status = wait_deadline(&mut child, Instant::now() + timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (status.and_then(|s| s.code()), out.finish(), err.finish())
}

/// Whether some socket is bound to local `port`: for TCP, listening; for UDP, bound. Reads
/// `/proc/net/{tcp,tcp6,udp,udp6}`, i.e. the current network namespace.
pub fn port_bound(transport: Transport, port: u16) -> bool {
    let (files, listen_only) = match transport {
        Transport::Udp => (["/proc/net/udp", "/proc/net/udp6"], false),
        Transport::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], true),
    };
    files.iter().any(|f| {
        std::fs::read_to_string(f).unwrap_or_default().lines().skip(1).any(|l| {
            let mut cols = l.split_whitespace();
            let local = cols.nth(1).unwrap_or("");
            let state = cols.nth(1).unwrap_or("");
            let p = local.rsplit(':').next().and_then(|h| u16::from_str_radix(h, 16).ok());
            p == Some(port) && (!listen_only || state == "0A")
        })
    })
}

/// A port on `ip` that is free for both UDP and TCP right now.
pub fn free_port(ip: IpAddr) -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind((ip, 0)).expect("bind udp :0");
        let port = udp.local_addr().expect("local_addr").port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}

/// Stops `child` (whose process tree is in `tree`, collected beforehand or now): SIGTERM to the
/// main PID, wait up to [`STOP_TIMEOUT`], then SIGKILL by PID for the main process and every
/// process of the tree still alive. Returns whether everything was gone in the end.
fn stop_tree(child: &mut Child, extra_pids: &[u32]) -> bool {
    let mut tree = descendants(child.id());
    for &p in extra_pids {
        if !tree.contains(&p) {
            tree.push(p);
        }
    }
    if matches!(child.try_wait(), Ok(None)) {
        kill_pid(child.id(), libc::SIGTERM);
        if wait_deadline(child, Instant::now() + STOP_TIMEOUT).is_none() {
            for p in descendants(child.id()) {
                if !tree.contains(&p) {
                    tree.push(p);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    } else {
        let _ = child.wait();
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while tree.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for &p in &tree {
        if alive(p) {
            kill_pid(p, libc::SIGKILL);
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    !tree.iter().any(|&p| alive(p))
}

/// Lines of a child's output, collected on threads.
#[derive(Clone, Default)]
struct LineLog(Arc<Mutex<Vec<String>>>);

impl LineLog {
    fn follow<R: Read + Send + 'static>(&self, pipe: Option<R>) {
        let Some(pipe) = pipe else { return };
        let log = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                log.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
    }

    fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }
}

// ===== kamailio =====

/// The digest algorithm kamailio challenges with (`modparam("auth", "algorithm", ...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// `algorithm=MD5` (sipp can answer it).
    Md5,
    /// `algorithm=SHA-256` (RFC 8760; sipp cannot answer it).
    Sha256,
}

impl DigestAlgorithm {
    /// The token on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }
}

/// What [`Kamailio::start`] configures.
#[derive(Debug, Clone)]
pub struct KamailioOpts {
    /// Challenge algorithm. Default MD5.
    pub algorithm: DigestAlgorithm,
    /// SIP port for every listener. Default 5060.
    pub port: u16,
    /// Listen on UDP. Default true.
    pub udp: bool,
    /// Listen on TCP. Default true.
    pub tcp: bool,
    /// Listen on IPv4 (at `ipv4_addr`). Default true.
    pub ipv4: bool,
    /// The IPv4 address to listen on (any 127/8 address is on loopback). Default 127.0.0.1.
    pub ipv4_addr: Ipv4Addr,
    /// Listen on [::1] too. Default false.
    pub ipv6: bool,
    /// `(user, plain-text password)`. Default alice/secret and bob/secret.
    pub users: Vec<(String, String)>,
    /// Extra global config lines, e.g. `modparam("registrar", "min_expires", 60)`.
    pub extra: Vec<String>,
    /// Shared memory in MiB (`-m`). Default 32: enough for the tests; a load run needs more
    /// (each finished non-INVITE transaction is kept for timer J/K, and past the pool kamailio
    /// answers `500 … (1/SL)`).
    pub shm_mb: u32,
}

impl Default for KamailioOpts {
    fn default() -> Self {
        Self {
            algorithm: DigestAlgorithm::Md5,
            port: 5060,
            udp: true,
            tcp: true,
            ipv4: true,
            ipv4_addr: Ipv4Addr::LOCALHOST,
            ipv6: false,
            users: vec![("alice".into(), "secret".into()), ("bob".into(), "secret".into())],
            extra: Vec::new(),
            shm_mb: 32,
        }
    }
}

impl KamailioOpts {
    /// The defaults with `algorithm`.
    pub fn with_algorithm(algorithm: DigestAlgorithm) -> Self {
        Self { algorithm, ..Self::default() }
    }
}

/// One contact of an AoR, from `ul.dump`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Binding {
    /// The AoR (the user part; usrloc runs without domains).
    pub aor: String,
    /// The Contact URI, e.g. `sip:alice@127.0.0.1:5081;transport=UDP`.
    pub address: String,
    /// Seconds left.
    pub expires: Option<i64>,
    /// The Call-ID of the REGISTER.
    pub call_id: String,
    /// The CSeq number of the REGISTER.
    pub cseq: Option<u32>,
    /// The User-Agent (`n/a` when none).
    pub user_agent: String,
    /// The source address when it differed from the Contact (`[not set]` otherwise).
    pub received: String,
    /// kamailio's socket it came in on, e.g. `udp:127.0.0.1:5060`.
    pub socket: String,
    /// Every `Key: value` of the contact.
    pub fields: Vec<(String, String)>,
}

/// Parses the text of `kamcmd ul.dump` into bindings.
pub fn parse_ul_dump(text: &str) -> Vec<Binding> {
    let mut out = Vec::new();
    let mut aor = String::new();
    let mut cur: Option<Binding> = None;
    for line in text.lines() {
        let t = line.trim();
        if t == "}" {
            if let Some(b) = cur.take() {
                out.push(b);
            }
            continue;
        }
        if t.starts_with("Contact:") && t.ends_with('{') {
            cur = Some(Binding { aor: aor.clone(), ..Binding::default() });
            continue;
        }
        let Some((key, value)) = t.split_once(": ") else { continue };
        let value = value.trim().to_string();
        match cur.as_mut() {
            None => {
                if key == "AoR" {
                    aor = value;
                }
            }
            Some(b) => {
                match key {
                    "Address" => b.address = value.clone(),
                    "Expires" => b.expires = value.parse().ok(),
                    "Call-ID" => b.call_id = value.clone(),
                    "CSeq" => b.cseq = value.parse().ok(),
                    "User-Agent" => b.user_agent = value.clone(),
                    "Received" => b.received = value.clone(),
                    "Socket" => b.socket = value.clone(),
                    _ => {}
                }
                b.fields.push((key.to_string(), value));
            }
        }
    }
    out
}

/// A running kamailio (`kamailio -DD -E`), configured from `tests/peers/kamailio/kamailio.cfg`.
/// Dropping it stops it and all its processes by PID.
pub struct Kamailio {
    child: Child,
    /// The options it was started with.
    pub opts: KamailioOpts,
    /// The generated config file.
    pub cfg_path: PathBuf,
    /// The ctl (binrpc) socket for kamcmd.
    pub ctl_path: PathBuf,
    /// The full command line, for messages.
    pub command: String,
    log: LineLog,
    pids: Vec<u32>,
    stopped: bool,
}

impl Kamailio {
    /// Writes `WORKDIR/kamailio/kamailio.cfg` from the template, starts
    /// `kamailio -f CFG -DD -E -Y WORKDIR/kamailio/run -m 32 -M 4`, and waits (bounded) until it
    /// answers OPTIONS on each UDP listener, accepts TCP on each TCP listener and its ctl socket
    /// accepts connections. Panics with kamailio's log when it does not.
    pub fn start(workdir: &Path, opts: KamailioOpts) -> Self {
        assert!(opts.udp || opts.tcp, "kamailio needs UDP or TCP");
        assert!(opts.ipv4 || opts.ipv6, "kamailio needs 127.0.0.1 or ::1");
        let bin = require_program("kamailio", "kamailio");
        let dir = workdir.join("kamailio");
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap_or_else(|e| panic!("{}: {e}", run.display()));
        let ctl_path = run.join("kamailio_ctl");
        assert!(
            ctl_path.as_os_str().len() < 100,
            "{} is too long for a unix socket path: use a shorter workdir",
            ctl_path.display()
        );
        let _ = std::fs::remove_file(&ctl_path);
        let cfg_path = dir.join("kamailio.cfg");
        let template = std::fs::read_to_string(peers_dir().join("kamailio/kamailio.cfg")).expect("kamailio template");
        std::fs::write(&cfg_path, render_kamailio_cfg(&template, workdir, &opts))
            .unwrap_or_else(|e| panic!("{}: {e}", cfg_path.display()));

        let mut cmd = Command::new(&bin);
        cmd.arg("-f").arg(&cfg_path).args(["-DD", "-E", "-Y"]).arg(&run).args([
            "-m",
            &opts.shm_mb.to_string(),
            "-M",
            "4",
        ]);
        cmd.current_dir(&dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Own process group: kamailio's shutdown signals may go to its group; keep us out of it.
        cmd.process_group(0);
        die_with_parent(&mut cmd, libc::SIGTERM);
        let command = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {command}: {e}"));
        let log = LineLog::default();
        log.follow(child.stdout.take());
        log.follow(child.stderr.take());
        let mut k = Self { child, opts, cfg_path, ctl_path, command, log, pids: Vec::new(), stopped: false };
        k.wait_ready();
        k.pids = descendants(k.pid());
        k
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + KAMAILIO_START_TIMEOUT;
        let udp: Vec<SocketAddr> = if self.opts.udp { self.addrs() } else { Vec::new() };
        let tcp: Vec<SocketAddr> = if self.opts.tcp { self.addrs() } else { Vec::new() };
        let mut udp_ok = vec![false; udp.len()];
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.stopped = true;
                panic!("kamailio exited during startup ({status}); {}\nlog:\n{}", self.command, self.log_text());
            }
            for (i, addr) in udp.iter().enumerate() {
                if !udp_ok[i] {
                    udp_ok[i] = options_ping(*addr, Duration::from_millis(100));
                }
            }
            let tcp_ok = tcp.iter().all(|a| TcpStream::connect_timeout(a, Duration::from_millis(100)).is_ok());
            let ctl_ok = UnixStream::connect(&self.ctl_path).is_ok();
            if udp_ok.iter().all(|&ok| ok) && tcp_ok && ctl_ok {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "kamailio not ready within {KAMAILIO_START_TIMEOUT:?} (udp {udp_ok:?}, tcp {tcp_ok}, ctl {ctl_ok}); \
                     {}\nlog:\n{}",
                    self.command,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The main process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every kamailio process id (main first), as seen after startup.
    pub fn pids(&self) -> Vec<u32> {
        let mut v = vec![self.pid()];
        v.extend(&self.pids);
        v
    }

    /// The listening addresses (one per IP family; each serves the enabled transports).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let mut v = Vec::new();
        if self.opts.ipv4 {
            v.push(SocketAddr::new(self.opts.ipv4_addr.into(), self.opts.port));
        }
        if self.opts.ipv6 {
            v.push(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.opts.port));
        }
        v
    }

    /// The first listening address (127.0.0.1:PORT unless IPv4 is off).
    pub fn addr(&self) -> SocketAddr {
        self.addrs()[0]
    }

    /// The SIP domain/realm users register under: the address's IP (`127.0.0.1`, or `[::1]`).
    /// kamailio challenges with `realm` = the From domain.
    pub fn domain(&self) -> String {
        match self.addr().ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        }
    }

    /// kamailio's stdout and stderr so far (`-E` logs to stderr, `debug=2`; each request is
    /// logged as `REQ METHOD RURI from IP:PORT/PROTO`).
    pub fn log_text(&self) -> String {
        self.log.text()
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "kamailio log has no {needle:?} after {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `kamcmd -s unix:CTL ARGS...` (bounded by [`RPC_TIMEOUT`]); its stdout, or the error.
    pub fn try_rpc(&self, args: &[&str]) -> Result<String, String> {
        let kamcmd = require_program("kamcmd", "kamailio");
        let mut cmd = Command::new(kamcmd);
        cmd.arg("-s").arg(format!("unix:{}", self.ctl_path.display())).args(args);
        match run_bounded(&mut cmd, RPC_TIMEOUT) {
            (Some(0), out, _) => Ok(out),
            (code, out, err) => Err(format!("kamcmd {args:?} exited with {code:?}: {out}{err}")),
        }
    }

    /// [`Self::try_rpc`], panicking on failure.
    pub fn rpc(&self, args: &[&str]) -> String {
        self.try_rpc(args).unwrap_or_else(|e| panic!("{e}\nkamailio log:\n{}", self.log_text()))
    }

    /// `kamcmd ul.dump`: every AoR and contact in the location table, as text.
    pub fn ul_dump(&self) -> String {
        self.rpc(&["ul.dump"])
    }

    /// The contacts registered for `aor` (the user name, e.g. `alice`).
    pub fn bindings(&self, aor: &str) -> Vec<Binding> {
        parse_ul_dump(&self.ul_dump()).into_iter().filter(|b| b.aor == aor).collect()
    }

    /// The first contact registered for `aor`, if any.
    pub fn binding(&self, aor: &str) -> Option<Binding> {
        self.bindings(aor).into_iter().next()
    }

    /// Waits until `aor` has a contact; panics with the dump and the log after `timeout`.
    pub fn wait_binding(&self, aor: &str, timeout: Duration) -> Binding {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(b) = self.binding(aor) {
                return b;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no binding for {aor} after {timeout:?}; ul.dump:\n{}\nlog:\n{}",
                    self.ul_dump(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `aor` has no contact left (after an un-REGISTER); panics after `timeout`.
    pub fn wait_no_binding(&self, aor: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.binding(aor).is_some() {
            assert!(Instant::now() < deadline, "{aor} still registered after {timeout:?}:\n{}", self.ul_dump());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kamcmd ul.rm location AOR`: forgets every contact of `aor`.
    pub fn ul_rm(&self, aor: &str) {
        self.rpc(&["ul.rm", "location", aor]);
    }

    /// Stops kamailio (SIGTERM to the main process, which stops its children; SIGKILL by PID for
    /// anything left after [`STOP_TIMEOUT`]) and panics unless every kamailio process is gone.
    pub fn stop(mut self) {
        let all = self.pids();
        self.stopped = true;
        assert!(stop_tree(&mut self.child, &all), "kamailio processes left after stop: {:?}", live(&all));
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if !self.stopped {
            let all = self.pids();
            stop_tree(&mut self.child, &all);
        }
        if std::thread::panicking() {
            std::thread::sleep(Duration::from_millis(50));
            eprintln!("---- kamailio log ({}) ----\n{}\n---- end ----", self.cfg_path.display(), self.log_text());
        }
    }
}

fn live(pids: &[u32]) -> Vec<u32> {
    pids.iter().copied().filter(|&p| alive(p)).collect()
}

/// kamailio's module dir: `/usr/lib/<multiarch>/kamailio/modules/` (or `/usr/lib/kamailio/modules/`).
pub fn kamailio_modules_dir() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .map(|d| d.flatten().map(|e| e.path().join("kamailio/modules")).collect())
        .unwrap_or_default();
    candidates.push(PathBuf::from("/usr/lib/kamailio/modules"));
    candidates.push(PathBuf::from("/usr/local/lib/kamailio/modules"));
    candidates.into_iter().find(|p| p.join("tm.so").is_file()).unwrap_or_else(|| {
        panic!("kamailio modules (tm.so) not found under /usr/lib/*/kamailio/modules: apt-get install kamailio")
    })
}

/// The kamailio config for `opts`, from the template text.
pub fn render_kamailio_cfg(template: &str, workdir: &Path, opts: &KamailioOpts) -> String {
    let mut listen = Vec::new();
    let v4 = opts.ipv4_addr.to_string();
    let hosts: Vec<String> = [(opts.ipv4, v4.as_str()), (opts.ipv6, "[::1]")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, h)| (*h).to_string())
        .collect();
    for host in &hosts {
        for (on, proto) in [(opts.udp, "udp"), (opts.tcp, "tcp")] {
            if on {
                listen.push(format!("listen={proto}:{host}:{}", opts.port));
            }
        }
    }
    for host in &hosts {
        listen.push(format!("alias=\"{host}:{}\"", opts.port));
    }
    if opts.ipv4 && opts.ipv4_addr == Ipv4Addr::LOCALHOST {
        listen.push(format!("alias=\"localhost:{}\"", opts.port));
    }
    let users: Vec<String> = opts
        .users
        .iter()
        .map(|(u, p)| {
            assert!(!u.contains(['"', '\\', '>']) && !p.contains(['"', '\\']), "unsupported user {u:?} / {p:?}");
            format!("    $sht(users=>{u}) = \"{p}\";")
        })
        .collect();
    let mut modules = kamailio_modules_dir().display().to_string();
    if !modules.ends_with('/') {
        modules.push('/');
    }
    substitute(
        template,
        &[
            ("WORKDIR", workdir.display().to_string()),
            ("LISTEN", listen.join("\n")),
            ("MODULES_DIR", modules),
            ("AUTH_ALGORITHM", opts.algorithm.as_str().to_string()),
            ("USERS", users.join("\n")),
            ("EXTRA", opts.extra.join("\n")),
        ],
    )
}

/// Sends one OPTIONS to `addr` over UDP and returns whether a 200 came back within `timeout`.
pub fn options_ping(addr: SocketAddr, timeout: Duration) -> bool {
    let Ok(sock) = SipUdp::bind(addr.ip()) else { return false };
    let host = match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let req = format!(
        "OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:ping@{host}>;tag={tag}\r\nTo: <sip:{host}:{port}>\r\n\
         Call-ID: {callid}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        port = addr.port(),
        local = sock.local_addr(),
        branch = new_branch(),
        tag = unique("t"),
        callid = unique("ping"),
    );
    if sock.send_to(&req, addr).is_err() {
        return false;
    }
    sock.recv(timeout).is_some_and(|m| m.status() == Some(200))
}

// ===== A raw SIP client over UDP =====

/// A unique token (`PREFIX-PID-N-NANOS`).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    format!("{prefix}{}x{n}x{nanos}", std::process::id())
}

/// A fresh RFC 3261 branch (`z9hG4bK...`).
pub fn new_branch() -> String {
    unique("z9hG4bK")
}

/// A SIP message as received: the raw text plus accessors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    /// The whole datagram.
    pub text: String,
}

impl SipMessage {
    /// The first line.
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// The status code of a response; `None` for a request.
    pub fn status(&self) -> Option<u16> {
        let rest = self.start_line().strip_prefix("SIP/2.0 ")?;
        rest.get(..3)?.parse().ok()
    }

    /// Every value of header `name` (case-insensitive, full names only), in order.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        let head = self.text.split("\r\n\r\n").next().unwrap_or("");
        head.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).into_iter().next()
    }
}

/// Splits a `Digest k=v, k="v"` challenge or credentials value into `(key, unquoted value)`.
pub fn digest_params(value: &str) -> Vec<(String, String)> {
    let v = value.trim();
    let v = v.strip_prefix("Digest").or_else(|| v.strip_prefix("digest")).unwrap_or(v).trim_start();
    let mut parts = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    for c in v.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
        .iter()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// A UDP socket on loopback for hand-written SIP.
pub struct SipUdp {
    sock: UdpSocket,
}

impl SipUdp {
    /// Binds `ip:0`.
    pub fn bind(ip: IpAddr) -> std::io::Result<Self> {
        Ok(Self { sock: UdpSocket::bind((ip, 0))? })
    }

    /// Binds `addr` exactly.
    pub fn bind_addr(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self { sock: UdpSocket::bind(addr)? })
    }

    /// The bound address (for Via and Contact).
    pub fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("local_addr")
    }

    /// Sends `text` to `to`.
    pub fn send_to(&self, text: &str, to: SocketAddr) -> std::io::Result<()> {
        self.sock.send_to(text.as_bytes(), to).map(|_| ())
    }

    /// The next datagram within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<SipMessage> {
        self.recv_from(timeout).map(|(m, _)| m)
    }

    /// The next datagram within `timeout`, with its source.
    pub fn recv_from(&self, timeout: Duration) -> Option<(SipMessage, SocketAddr)> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).ok()?;
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    return Some((SipMessage { text: String::from_utf8_lossy(&buf[..n]).into_owned() }, from))
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return None
                }
                // ICMP port unreachable from an earlier send: keep waiting.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(_) => return None,
            }
        }
    }

    /// Sends request `text` to `to` (retransmitting every 500 ms, as timer A would) and returns
    /// the first final (>= 200) response; panics after `timeout`.
    pub fn request(&self, text: &str, to: SocketAddr, timeout: Duration) -> SipMessage {
        let deadline = Instant::now() + timeout;
        let mut next_send = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline {
                panic!("no final response from {to} within {timeout:?} to:\n{text}");
            }
            if now >= next_send {
                self.send_to(text, to).unwrap_or_else(|e| panic!("sending to {to}: {e}"));
                next_send = now + Duration::from_millis(500);
            }
            let wait = next_send.min(deadline).saturating_duration_since(Instant::now());
            if let Some(m) = self.recv(wait.max(Duration::from_millis(1))) {
                if m.status().is_some_and(|s| s >= 200) {
                    return m;
                }
            }
        }
    }

    /// A REGISTER of `user@domain` (Request-URI `sip:DOMAIN`, Contact = this socket, Expires
    /// 3600) with `extra_headers` (each ending in `\r\n`) before Content-Length.
    pub fn register_request(&self, user: &str, domain: &str, call_id: &str, cseq: u32, extra_headers: &str) -> String {
        let local = self.local_addr();
        format!(
            "REGISTER sip:{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{user}@{domain}>;tag={tag}\r\nTo: <sip:{user}@{domain}>\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{local}>\r\nExpires: 3600\r\n{extra_headers}\
             User-Agent: sylkgw-tests\r\nContent-Length: 0\r\n\r\n",
            branch = new_branch(),
            tag = unique("tag"),
        )
    }
}

// ===== sipp =====

/// sipp's transport (`-t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `-t u1`: one UDP socket.
    Udp,
    /// `-t t1`: one TCP connection.
    Tcp,
}

impl Transport {
    /// The `-t` argument.
    pub fn sipp_arg(self) -> &'static str {
        match self {
            Self::Udp => "u1",
            Self::Tcp => "t1",
        }
    }
}

/// Which scenario sipp plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// `-sf FILE`.
    File(PathBuf),
    /// `-sn NAME` (`uac`, `uas`, ...).
    Builtin(String),
}

impl Scenario {
    /// `tests/peers/sipp/NAME` (e.g. `reg_auth_uac.xml`).
    pub fn peer_file(name: &str) -> Self {
        let p = peers_dir().join("sipp").join(name);
        assert!(p.is_file(), "{} is missing", p.display());
        Self::File(p)
    }

    fn label(&self) -> String {
        match self {
            Self::File(p) => p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            Self::Builtin(n) => n.clone(),
        }
    }
}

/// A sipp invocation (builder). [`Sipp::run`] runs it to the end; [`Sipp::spawn`] starts it in
/// the background (for a UAS or a stub registrar) with its PID held.
///
/// Always passed: `-i LOCAL_IP -p LOCAL_PORT -t u1|t1 -nostdin -trace_msg -message_file F
/// -trace_err -error_file F -timeout Ns -timeout_error`, the process's stdin is /dev/null, its
/// working dir is the workdir (relative pcap paths resolve there, see [`Sipp::link_pcaps`]).
#[derive(Debug, Clone)]
pub struct Sipp {
    workdir: PathBuf,
    scenario: Scenario,
    remote: Option<SocketAddr>,
    local: SocketAddr,
    transport: Transport,
    calls: Option<u32>,
    service: Option<String>,
    auth: Option<(String, String)>,
    vars: Vec<(String, String)>,
    media_port: Option<u16>,
    extra: Vec<OsString>,
    timeout: Duration,
}

/// The result of a sipp run.
#[derive(Debug, Clone)]
pub struct SippOutcome {
    /// Command line, for messages.
    pub command: String,
    /// Exit code: 0 all calls succeeded, 1 some failed, 97 exit by command, 99 no call, 255 fatal
    /// (also `-timeout` with `-timeout_error`). `None`: killed by a signal or by our timeout.
    pub code: Option<i32>,
    /// Whether our own bound ran out and the process was killed.
    pub killed: bool,
    /// sipp's stdout (the final statistics screen).
    pub stdout: String,
    /// sipp's stderr.
    pub stderr: String,
    /// The `-trace_msg` file: every message sent and received.
    pub messages: String,
    /// The `-trace_err` file: unexpected messages and errors.
    pub errors: String,
}

impl SippOutcome {
    /// Exit code 0, not killed.
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.killed
    }

    /// Panics with everything sipp said unless [`Self::success`].
    #[track_caller]
    pub fn assert_success(&self) {
        assert!(self.success(), "sipp did not succeed:\n{self}");
    }

    /// Panics with everything sipp said unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) {
        assert!(self.code == Some(code) && !self.killed, "expected sipp exit code {code}:\n{self}");
    }
}

impl std::fmt::Display for SippOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\nexit code {:?}{}\n--- stderr ---\n{}\n--- errors ---\n{}\n--- messages ---\n{}\n--- stdout (tail) ---\n{}",
            self.command,
            self.code,
            if self.killed { " (killed: timeout)" } else { "" },
            self.stderr,
            self.errors,
            self.messages,
            tail(&self.stdout, 40)
        )
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Sipp {
    /// sipp playing `scenario`, writing its trace files into `workdir`. Defaults: local
    /// 127.0.0.1:5080, UDP, no `-m`, timeout [`SIPP_TIMEOUT`].
    pub fn new(workdir: &Path, scenario: Scenario) -> Self {
        Self {
            workdir: workdir.to_path_buf(),
            scenario,
            remote: None,
            local: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 5080),
            transport: Transport::Udp,
            calls: None,
            service: None,
            auth: None,
            vars: Vec::new(),
            media_port: None,
            extra: Vec::new(),
            timeout: SIPP_TIMEOUT,
        }
    }

    /// The UAC of `tests/peers/sipp/reg_auth_uac.xml`: REGISTER `user` (digest `user`/`password`)
    /// at `registrar`, once, from `local`, with REGISTER-only behaviours (`-default_behaviors
    /// all,-bye`: no BYE on abort; a bare `-bye` would also drop `abortunexp`, and an unexpected
    /// 401 would then hang until `-timeout`).
    pub fn register(workdir: &Path, registrar: SocketAddr, local: SocketAddr, user: &str, password: &str) -> Self {
        Self::new(workdir, Scenario::peer_file("reg_auth_uac.xml"))
            .remote(registrar)
            .local(local)
            .service(user)
            .auth(user, password)
            .calls(1)
            .arg("-default_behaviors")
            .arg("all,-bye")
    }

    /// The stub registrar of `tests/peers/sipp/reg_auth_uas.xml` on `local`: challenges with
    /// `realm="sipp.test"`, `algorithm=MD5`, `qop="auth"`, answers 200 to alice/secret and 403
    /// otherwise. `calls` REGISTER transactions pairs, then it exits 0.
    pub fn stub_registrar(workdir: &Path, local: SocketAddr, calls: u32) -> Self {
        Self::new(workdir, Scenario::peer_file("reg_auth_uas.xml")).local(local).calls(calls)
    }

    /// The remote host (UAC target), first positional argument.
    pub fn remote(mut self, addr: SocketAddr) -> Self {
        self.remote = Some(addr);
        self
    }

    /// `-i IP -p PORT`.
    pub fn local(mut self, addr: SocketAddr) -> Self {
        self.local = addr;
        self
    }

    /// `-t u1|t1`.
    pub fn transport(mut self, t: Transport) -> Self {
        self.transport = t;
        self
    }

    /// `-m N`: stop after N calls.
    pub fn calls(mut self, n: u32) -> Self {
        self.calls = Some(n);
        self
    }

    /// `-s SERVICE` (`[service]`, the Request-URI user).
    pub fn service(mut self, s: &str) -> Self {
        self.service = Some(s.to_string());
        self
    }

    /// `-au USER -ap PASSWORD` for `[authentication]`.
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_string(), password.to_string()));
        self
    }

    /// `-set NAME VALUE` (the scenario must declare `<Global variables="NAME"/>`).
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    /// `-mp PORT`: the RTP (echo) port.
    pub fn media_port(mut self, port: u16) -> Self {
        self.media_port = Some(port);
        self
    }

    /// Any other argument (e.g. `-rtp_echo`, `-d 500`, `-auth_uri ...`).
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.extra.push(a.into());
        self
    }

    /// The bound for the run (also passed as `-timeout Ns -timeout_error`).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Creates `WORKDIR/pcap/` with links to sipp's shipped pcaps (`g711a.pcap`,
    /// `dtmf_2833_*.pcap`), the relative paths `uac_pcap.xml` uses.
    pub fn link_pcaps(workdir: &Path) {
        let dir = workdir.join("pcap");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for e in std::fs::read_dir("/usr/share/sip-tester").expect("/usr/share/sip-tester (apt-get install sip-tester)")
        {
            let p = e.expect("dir entry").path();
            if p.extension().is_some_and(|x| x == "pcap") {
                let _ = std::os::unix::fs::symlink(&p, dir.join(p.file_name().expect("file name")));
            }
        }
    }

    fn files(&self) -> (PathBuf, PathBuf) {
        let tag = unique(&format!("sipp-{}-", self.scenario.label()));
        (self.workdir.join(format!("{tag}-messages.log")), self.workdir.join(format!("{tag}-errors.log")))
    }

    fn command(&self, messages: &Path, errors: &Path) -> Command {
        let bin = require_program("sipp", "sip-tester");
        let mut cmd = Command::new(bin);
        if let Some(r) = self.remote {
            cmd.arg(r.to_string());
        }
        match &self.scenario {
            Scenario::File(p) => cmd.arg("-sf").arg(p),
            Scenario::Builtin(n) => cmd.arg("-sn").arg(n),
        };
        cmd.arg("-i").arg(self.local.ip().to_string()).arg("-p").arg(self.local.port().to_string());
        cmd.arg("-t").arg(self.transport.sipp_arg());
        if let Some(m) = self.calls {
            cmd.arg("-m").arg(m.to_string());
        }
        if let Some(s) = &self.service {
            cmd.arg("-s").arg(s);
        }
        if let Some((u, p)) = &self.auth {
            cmd.arg("-au").arg(u).arg("-ap").arg(p);
        }
        for (n, v) in &self.vars {
            cmd.arg("-set").arg(n).arg(v);
        }
        if let Some(mp) = self.media_port {
            cmd.arg("-mp").arg(mp.to_string());
        }
        cmd.args(["-nostdin", "-trace_msg", "-message_file"]).arg(messages);
        cmd.args(["-trace_err", "-error_file"]).arg(errors);
        cmd.arg("-timeout").arg(format!("{}s", self.timeout.as_secs().max(1))).arg("-timeout_error");
        cmd.args(&self.extra);
        cmd.current_dir(&self.workdir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        die_with_parent(&mut cmd, libc::SIGKILL);
        cmd
    }

    /// Starts sipp in the background (no `-bg`: we hold the process itself).
    pub fn spawn(&self) -> SippProcess {
        let (messages, errors) = self.files();
        let mut cmd = self.command(&messages, &errors);
        let command = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {command}: {e}"));
        let stdout = Collector::new(child.stdout.take());
        let stderr = Collector::new(child.stderr.take());
        SippProcess {
            child: Some(child),
            command,
            stdout: Some(stdout),
            stderr: Some(stderr),
            messages,
            errors,
            timeout: self.timeout + Duration::from_secs(5),
            local: self.local,
            transport: self.transport,
        }
    }

    /// Runs sipp to its end (bounded by the timeout plus 5 s; killed by PID past that).
    pub fn run(&self) -> SippOutcome {
        let p = self.spawn();
        let t = p.timeout;
        p.wait(t)
    }
}

/// A sipp process we started. Dropping it stops it (SIGTERM, then SIGKILL) by PID.
pub struct SippProcess {
    child: Option<Child>,
    /// Command line, for messages.
    pub command: String,
    stdout: Option<Collector>,
    stderr: Option<Collector>,
    /// The `-trace_msg` file.
    pub messages: PathBuf,
    /// The `-trace_err` file.
    pub errors: PathBuf,
    timeout: Duration,
    local: SocketAddr,
    transport: Transport,
}

impl SippProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits until sipp has bound its SIP port (UDP bound / TCP listening in this namespace);
    /// panics with its output if it exits or `timeout` passes first.
    pub fn wait_bound(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let port = self.local.port();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("sipp exited ({status}) before binding port {port}: {}\n{}", self.command, self.output_so_far());
            }
            if port_bound(self.transport, port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sipp did not bind {:?} port {port} within {timeout:?}: {}\n{}",
                self.transport,
                self.command,
                self.output_so_far()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn output_so_far(&self) -> String {
        format!(
            "stderr:\n{}\nstdout:\n{}",
            self.stderr.as_ref().map(Collector::text).unwrap_or_default(),
            tail(&self.stdout.as_ref().map(Collector::text).unwrap_or_default(), 30)
        )
    }

    /// Waits up to `timeout` for sipp to exit by itself (killing it by PID past that) and returns
    /// the outcome.
    pub fn wait(mut self, timeout: Duration) -> SippOutcome {
        let mut child = self.child.take().expect("child");
        let status = wait_deadline(&mut child, Instant::now() + timeout);
        let killed = status.is_none();
        if killed {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.outcome(status.and_then(|s| s.code()), killed)
    }

    /// Stops sipp now (SIGTERM, which sipp handles by ending cleanly; SIGKILL by PID after
    /// [`STOP_TIMEOUT`]) and returns the outcome.
    pub fn stop(mut self) -> SippOutcome {
        let mut child = self.child.take().expect("child");
        let code = stop_child(&mut child);
        self.outcome(code, false)
    }

    fn outcome(&mut self, code: Option<i32>, killed: bool) -> SippOutcome {
        SippOutcome {
            command: self.command.clone(),
            code,
            killed,
            stdout: self.stdout.take().map(Collector::finish).unwrap_or_default(),
            stderr: self.stderr.take().map(Collector::finish).unwrap_or_default(),
            messages: std::fs::read_to_string(&self.messages).unwrap_or_default(),
            errors: std::fs::read_to_string(&self.errors).unwrap_or_default(),
        }
    }
}

fn stop_child(child: &mut Child) -> Option<i32> {
    if let Ok(Some(status)) = child.try_wait() {
        return status.code();
    }
    kill_pid(child.id(), libc::SIGTERM);
    match wait_deadline(child, Instant::now() + STOP_TIMEOUT) {
        Some(status) => status.code(),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }
}

// ===== sipp call scenarios =====

impl Sipp {
    /// An echo UAS on `local` (`tests/peers/sipp/uas_rr.xml`: 180, 200 with PCMU only, keeps
    /// Record-Route, so it works behind kamailio) with `-rtp_echo -mp MEDIA_PORT`: every RTP
    /// packet is sent back to its source. One call (`-m 1`); it exits 0 after the BYE (and 4 s of
    /// timewait). Spawn it, [`SippProcess::wait_bound`], then call `sip:anything@LOCAL`.
    pub fn echo_uas(workdir: &Path, local: SocketAddr, media_port: u16) -> Self {
        Self::echo_with(workdir, "uas_rr.xml", local, media_port)
    }

    /// One call of the UAS scenario `file` (in `tests/peers/sipp/`) with `-rtp_echo` on `media_port`.
    fn echo_with(workdir: &Path, file: &str, local: SocketAddr, media_port: u16) -> Self {
        Self::new(workdir, Scenario::peer_file(file)).local(local).media_port(media_port).calls(1).arg("-rtp_echo")
    }

    /// [`Sipp::echo_uas`] answering PCMU plus telephone-event/8000 (payload 101,
    /// `tests/peers/sipp/uas_pcmu_te.xml`); RFC 4733 events are echoed like audio.
    pub fn echo_uas_te(workdir: &Path, local: SocketAddr, media_port: u16) -> Self {
        Self::echo_with(workdir, "uas_pcmu_te.xml", local, media_port)
    }

    /// [`Sipp::echo_uas_te`] answering video too: VP8 (payload 96) on `media_port + 2`, where
    /// `-rtp_echo` echoes as on `media_port` (`tests/peers/sipp/uas_video_echo.xml`).
    pub fn echo_uas_video(workdir: &Path, local: SocketAddr, media_port: u16) -> Self {
        Self::echo_with(workdir, "uas_video_echo.xml", local, media_port)
    }

    /// A UAC (`tests/peers/sipp/uac_auth_rtp.xml`) calling `callee` through `proxy` as
    /// `caller@PROXY_IP` with digest `caller`/`password` (answering the proxy's 407), offering PCMU,
    /// and once answered streaming a sine of `freq` Hz (µ-law, amplitude 0.3) for `talk`, then BYE.
    /// Writes `WORKDIR/uac_tone.ulaw` (the scenario's fixed file name).
    pub fn call_with_tone(
        workdir: &Path,
        proxy: SocketAddr,
        local: SocketAddr,
        (caller, password): (&str, &str),
        callee: &str,
        freq: f64,
        talk: Duration,
    ) -> Self {
        let file = workdir.join("uac_tone.ulaw");
        crate::audio::write_tone_ulaw(&file, freq, talk.as_secs_f64() + 5.0, 0.3)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        Self::new(workdir, Scenario::peer_file("uac_auth_rtp.xml"))
            .remote(proxy)
            .local(local)
            .service(callee)
            .auth(caller, password)
            .set("caller", caller)
            .calls(1)
            .arg("-d")
            .arg(talk.as_millis().to_string())
            .timeout(talk + Duration::from_secs(15))
    }
}

// ===== baresip =====

/// How long baresip may take to print `baresip is ready.` and accept ctrl_tcp connections.
pub const BARESIP_START_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`Baresip::start`] configures. [`BaresipOpts::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct BaresipOpts {
    /// The user part of the account (`bob`).
    pub user: String,
    /// The digest password (with a registrar). Default `secret`.
    pub password: String,
    /// Register to this registrar (an IP literal: baresip would look names up). The account is
    /// then `<sip:USER@IP:PORT>;auth_pass=PASSWORD;regint=300`, challenges are answered with it.
    /// `None`: no registration, the account is `<sip:USER@NET_IP>;regint=0` and calls reach it
    /// directly at [`Self::sip_listen`].
    pub registrar: Option<SocketAddr>,
    /// Send every outgoing request through this proxy (`;outbound="sip:IP:PORT"`). Default none.
    pub outbound: Option<SocketAddr>,
    /// SIP socket. Default 127.0.0.1:5064.
    pub sip_listen: SocketAddr,
    /// ctrl_tcp socket. Default 127.0.0.1:4444.
    pub ctrl_listen: SocketAddr,
    /// RTP/RTCP ports. Default 30000-30100 (clear of the gateway's default 20000-29999).
    pub rtp_ports: (u16, u16),
    /// `answermode=auto` (default) or manual (then [`Baresip::accept`]).
    pub auto_answer: bool,
    /// `audio_codecs=`. Default `pcmu,pcma`.
    pub codecs: String,
    /// Modules loaded besides the template's (`opus.so`, ...). Default none.
    pub modules: Vec<String>,
    /// The WAV played into every call (mono PCM16; 8 kHz avoids resampling). baresip hangs the
    /// call up when it reaches its end, so make it longer than the call.
    pub source_wav: PathBuf,
}

impl BaresipOpts {
    /// `user` playing `source_wav`, no registrar, auto-answer, the default ports.
    pub fn new(user: &str, source_wav: &Path) -> Self {
        Self {
            user: user.to_string(),
            password: "secret".into(),
            registrar: None,
            outbound: None,
            sip_listen: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 5064),
            ctrl_listen: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 4444),
            rtp_ports: (30000, 30100),
            auto_answer: true,
            codecs: "pcmu,pcma".into(),
            modules: Vec::new(),
            source_wav: source_wav.to_path_buf(),
        }
    }

    /// Registers to `registrar` with `password`.
    pub fn registered(mut self, registrar: SocketAddr, password: &str) -> Self {
        self.registrar = Some(registrar);
        self.password = password.to_string();
        self
    }

    /// The `accounts` line.
    pub fn account_line(&self) -> String {
        let answer = if self.auto_answer { "auto" } else { "manual" };
        let mut line = match self.registrar {
            Some(r) => format!(
                "<sip:{}@{}>;auth_pass={};answermode={answer};regint=300;audio_codecs={}",
                self.user,
                host_port(r),
                self.password,
                self.codecs
            ),
            None => format!(
                "<sip:{}@{}>;regint=0;answermode={answer};audio_codecs={}",
                self.user,
                host(self.sip_listen.ip()),
                self.codecs
            ),
        };
        if self.registrar.is_none() && self.outbound.is_some() {
            line.push_str(&format!(";auth_pass={}", self.password));
        }
        if let Some(o) = self.outbound {
            line.push_str(&format!(";outbound=\"sip:{}\"", host_port(o)));
        }
        line
    }
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

fn host_port(a: SocketAddr) -> String {
    format!("{}:{}", host(a.ip()), a.port())
}

/// Netstring framing of ctrl_tcp (`LEN:JSON,`).
pub fn netstring(payload: &str) -> String {
    format!("{}:{payload},", payload.len())
}

/// Splits complete netstrings off the front of `buf`; returns their payloads.
pub fn take_netstrings(buf: &mut Vec<u8>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(colon) = buf.iter().position(|&b| b == b':') {
        let Some(len) = std::str::from_utf8(&buf[..colon]).ok().and_then(|s| s.trim().parse::<usize>().ok()) else {
            // Garbage: drop up to the colon and resynchronise.
            buf.drain(..=colon);
            continue;
        };
        if buf.len() < colon + 1 + len + 1 {
            break;
        }
        out.push(String::from_utf8_lossy(&buf[colon + 1..colon + 1 + len]).into_owned());
        buf.drain(..colon + 1 + len + 1);
    }
    out
}

/// A running baresip (`baresip -f DIR -v`), configured from `tests/peers/baresip/config`, with a
/// ctrl_tcp connection for commands and events. Dropping it stops it by PID (SIGTERM, a second
/// SIGTERM after 3 s — baresip un-REGISTERs first and waits ~30 s when the registrar is gone —
/// then SIGKILL).
pub struct Baresip {
    child: Option<Child>,
    /// The options it was started with.
    pub opts: BaresipOpts,
    /// Its config dir (`config`, `accounts`, `uuid`, …).
    pub dir: PathBuf,
    /// Where sndfile writes the recordings.
    pub rec_dir: PathBuf,
    /// The command line, for messages.
    pub command: String,
    log: LineLog,
    ctrl: Option<TcpStream>,
    messages: Arc<Mutex<Vec<serde_json::Value>>>,
    next_token: u64,
}

impl Baresip {
    /// Writes `WORKDIR/baresip-USER/{config,accounts}`, starts baresip there and waits (bounded by
    /// [`BARESIP_START_TIMEOUT`]) until it is ready and ctrl_tcp accepts. It does not wait for the
    /// registration: use [`Self::wait_registered`] or the registrar's own view.
    pub fn start(workdir: &Path, opts: BaresipOpts) -> Self {
        let bin = require_program("baresip", "baresip-core");
        assert!(opts.source_wav.is_file(), "baresip's source WAV {} is missing", opts.source_wav.display());
        let dir = workdir.join(format!("baresip-{}", opts.user));
        let rec_dir = dir.join("rec");
        std::fs::create_dir_all(&rec_dir).unwrap_or_else(|e| panic!("{}: {e}", rec_dir.display()));
        let template = std::fs::read_to_string(peers_dir().join("baresip/config")).expect("baresip template");
        let config = substitute(
            &template,
            &[
                ("SIP_LISTEN", host_port(opts.sip_listen)),
                ("NET_IP", opts.sip_listen.ip().to_string()),
                ("AUDIO_SOURCE", opts.source_wav.display().to_string()),
                ("RTP_PORTS", format!("{}-{}", opts.rtp_ports.0, opts.rtp_ports.1)),
                ("CTRL_LISTEN", host_port(opts.ctrl_listen)),
                ("SND_PATH", rec_dir.display().to_string()),
                ("EXTRA_MODULES", opts.modules.iter().map(|m| format!("module\t\t\t{m}\n")).collect()),
            ],
        );
        std::fs::write(dir.join("config"), config).expect("writing baresip config");
        std::fs::write(dir.join("accounts"), format!("{}\n", opts.account_line())).expect("writing baresip accounts");

        let mut cmd = Command::new(&bin);
        cmd.arg("-f").arg(&dir).arg("-v");
        cmd.current_dir(&dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        die_with_parent(&mut cmd, libc::SIGKILL);
        let command = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {command}: {e}"));
        let log = LineLog::default();
        log.follow(child.stdout.take());
        log.follow(child.stderr.take());
        let mut b = Self {
            child: Some(child),
            opts,
            dir,
            rec_dir,
            command,
            log,
            ctrl: None,
            messages: Arc::new(Mutex::new(Vec::new())),
            next_token: 0,
        };
        b.wait_ready();
        b
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + BARESIP_START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("baresip exited during startup ({status}); {}\nlog:\n{}", self.command, self.log_text());
            }
            if self.log_text().contains("baresip is ready") {
                if let Ok(s) = TcpStream::connect_timeout(&self.opts.ctrl_listen, Duration::from_millis(200)) {
                    self.follow_ctrl(s);
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "baresip not ready within {BARESIP_START_TIMEOUT:?}; {}\nlog:\n{}",
                self.command,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn follow_ctrl(&mut self, s: TcpStream) {
        let mut reader = s.try_clone().expect("clone ctrl socket");
        let messages = Arc::clone(&self.messages);
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        for text in take_netstrings(&mut buf) {
                            let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                            messages.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                        }
                    }
                }
            }
        });
        self.ctrl = Some(s);
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The SIP URI calls reach it at without a registrar: `sip:USER@IP:PORT`.
    pub fn direct_uri(&self) -> String {
        format!("sip:{}@{}", self.opts.user, host_port(self.opts.sip_listen))
    }

    /// baresip's stdout and stderr so far (`-v`).
    pub fn log_text(&self) -> String {
        self.log.text()
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            assert!(Instant::now() < deadline, "baresip log has no {needle:?} after {timeout:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the registrar's `200 OK … [1 binding]` in the log.
    pub fn wait_registered(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().lines().any(|l| l.contains(" 200 ") && l.contains("binding")) {
            assert!(Instant::now() < deadline, "baresip not registered after {timeout:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every ctrl_tcp message so far (responses and events), in order.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        self.messages.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The ctrl_tcp events so far (`{"event":true,"type":"CALL_ESTABLISHED",…}`).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.messages().into_iter().filter(|m| m["event"] == true).collect()
    }

    /// The number of events so far (a cursor for [`Self::wait_event_since`]).
    pub fn event_count(&self) -> usize {
        self.events().len()
    }

    /// Waits for an event of type `kind` (`CALL_INCOMING`, `CALL_ESTABLISHED`, `CALL_CLOSED`, …)
    /// among the events from index `since` on; panics with the events and the log after `timeout`.
    pub fn wait_event_since(&self, since: usize, kind: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().skip(since).find(|e| e["type"] == kind) {
                return e;
            }
            if Instant::now() >= deadline {
                panic!(
                    "baresip: no {kind} event after {timeout:?}; events: {:?}\nlog:\n{}",
                    self.events().iter().map(|e| e["type"].to_string()).collect::<Vec<_>>(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Self::wait_event_since`] from the first event.
    pub fn wait_event(&self, kind: &str, timeout: Duration) -> serde_json::Value {
        self.wait_event_since(0, kind, timeout)
    }

    /// Sends ctrl_tcp command `command` with `params` and returns its response
    /// (`{"response":true,"ok":…,"data":…}`); panics when none comes within 5 s or it is not ok.
    pub fn command(&mut self, command: &str, params: &str) -> serde_json::Value {
        use std::io::Write;
        self.next_token += 1;
        let token = format!("t{}", self.next_token);
        let msg = serde_json::json!({"command": command, "params": params, "token": token}).to_string();
        let s = self.ctrl.as_mut().expect("ctrl_tcp connected");
        s.write_all(netstring(&msg).as_bytes()).unwrap_or_else(|e| panic!("baresip ctrl_tcp {command}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(r) = self.messages().into_iter().find(|m| m["response"] == true && m["token"] == token.as_str())
            {
                assert!(r["ok"] == true, "baresip {command} {params:?} failed: {r}\nlog:\n{}", self.log_text());
                return r;
            }
            assert!(Instant::now() < deadline, "baresip: no answer to {command} within 5 s\nlog:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `dial URI` (use IP literals: baresip would resolve names).
    pub fn dial(&mut self, uri: &str) -> serde_json::Value {
        self.command("dial", uri)
    }

    /// `hangup` (the current call).
    pub fn hangup(&mut self) -> serde_json::Value {
        self.command("hangup", "")
    }

    /// `accept` (answers the incoming call; with `auto_answer: false`).
    pub fn accept(&mut self) -> serde_json::Value {
        self.command("accept", "")
    }

    /// The recordings of received (decoded) audio, `dump-<time>-dec.wav`, oldest first. One per
    /// call; names have one-second resolution, so calls must start in different seconds.
    pub fn received_recordings(&self) -> Vec<PathBuf> {
        self.recordings("-dec.wav")
    }

    /// The recordings of sent (source) audio, `dump-<time>-enc.wav`, oldest first.
    pub fn sent_recordings(&self) -> Vec<PathBuf> {
        self.recordings("-enc.wav")
    }

    fn recordings(&self, suffix: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.rec_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix)))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The newest received-audio recording, decoded. Read it after the call closed (sndfile
    /// finalises the WAV header at the end of the call; [`crate::audio::read_wav`] copes anyway).
    pub fn last_received(&self) -> crate::audio::Wav {
        let path = self.received_recordings().pop().unwrap_or_else(|| {
            panic!("baresip recorded nothing in {}\nlog:\n{}", self.rec_dir.display(), self.log_text())
        });
        crate::audio::read_wav(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Stops baresip by PID: SIGTERM, a second SIGTERM after 3 s (it may be waiting for an
    /// un-REGISTER answer), SIGKILL after 3 s more. Returns its log. Panics if it survives.
    pub fn stop(mut self) -> String {
        let pid = self.pid();
        self.halt();
        assert!(!alive(pid), "baresip {pid} still runs after stop");
        self.log_text()
    }

    fn halt(&mut self) {
        self.ctrl = None;
        let Some(mut child) = self.child.take() else { return };
        for _ in 0..2 {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            kill_pid(child.id(), libc::SIGTERM);
            if wait_deadline(&mut child, Instant::now() + Duration::from_secs(3)).is_some() {
                break;
            }
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.halt();
        if std::thread::panicking() {
            std::thread::sleep(Duration::from_millis(50));
            eprintln!("---- baresip log ({}) ----\n{}\n---- end ----", self.dir.display(), self.log_text());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitute_placeholders() {
        let t = "# $LISTEN stays\nlisten $LISTEN\n$sht(users=>$au) $rU $WORKDIR/x $A1\n";
        let out = substitute(t, &[("LISTEN", "a\nb".into()), ("WORKDIR", "/w".into()), ("A1", "z".into())]);
        assert_eq!(out, "# $LISTEN stays\nlisten a\nb\n$sht(users=>$au) $rU /w/x z\n");
    }

    #[test]
    #[should_panic(expected = "$TYPO")]
    fn substitute_unknown_placeholder() {
        substitute("x $TYPO y", &[]);
    }

    #[test]
    fn ul_dump_parsing() {
        let dump = "{\n\tDomains: {\n\t\tDomain: {\n\t\t\tDomain: location\n\t\t\tAoRs: {\n\t\t\t\tInfo: {\n\
                    \t\t\t\t\tAoR: alice\n\t\t\t\t\tHashID: 1\n\t\t\t\t\tContacts: {\n\t\t\t\t\t\tContact: {\n\
                    \t\t\t\t\t\t\tAddress: sip:alice@127.0.0.1:5081;transport=UDP\n\t\t\t\t\t\t\tExpires: 3600\n\
                    \t\t\t\t\t\t\tCall-ID: 1-2@127.0.0.1\n\t\t\t\t\t\t\tCSeq: 2\n\t\t\t\t\t\t\tUser-Agent: n/a\n\
                    \t\t\t\t\t\t\tSocket: udp:127.0.0.1:5060\n\t\t\t\t\t\t}\n\t\t\t\t\t}\n\t\t\t\t}\n\
                    \t\t\t\tInfo: {\n\t\t\t\t\tAoR: bob\n\t\t\t\t\tContacts: {\n\t\t\t\t\t\tContact: {\n\
                    \t\t\t\t\t\t\tAddress: sip:bob@[::1]:5082;transport=TCP\n\t\t\t\t\t\t}\n\t\t\t\t\t}\n\t\t\t\t}\n\
                    \t\t\t}\n\t\t\tStats: {\n\t\t\t\tRecords: 2\n\t\t\t}\n\t\t}\n\t}\n}\n";
        let b = parse_ul_dump(dump);
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b[0].aor, "alice");
        assert_eq!(b[0].address, "sip:alice@127.0.0.1:5081;transport=UDP");
        assert_eq!((b[0].expires, b[0].cseq), (Some(3600), Some(2)));
        assert_eq!(b[0].socket, "udp:127.0.0.1:5060");
        assert_eq!((b[1].aor.as_str(), b[1].address.as_str()), ("bob", "sip:bob@[::1]:5082;transport=TCP"));
    }

    #[test]
    fn digest_challenge_params() {
        let p = digest_params(r#"Digest realm="a,b", nonce="n=1", qop="auth", algorithm=SHA-256"#);
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("realm"), Some("a,b"));
        assert_eq!(get("nonce"), Some("n=1"));
        assert_eq!(get("qop"), Some("auth"));
        assert_eq!(get("algorithm"), Some("SHA-256"));
    }

    #[test]
    fn netstrings() {
        let mut buf = b"3:abc,5:{\"a\"},2:x".to_vec();
        assert_eq!(take_netstrings(&mut buf), ["abc", "{\"a\"}"]);
        assert_eq!(buf, b"2:x");
        buf.extend_from_slice(b"y,");
        assert_eq!(take_netstrings(&mut buf), ["xy"]);
        assert!(buf.is_empty());
        assert_eq!(netstring("{}"), "2:{},");
    }

    #[test]
    fn baresip_account_lines() {
        let o = BaresipOpts::new("bob", Path::new("/t.wav"));
        assert_eq!(o.account_line(), "<sip:bob@127.0.0.1>;regint=0;answermode=auto;audio_codecs=pcmu,pcma");
        let r = o.clone().registered("127.0.0.1:5060".parse().unwrap(), "pw");
        assert_eq!(
            r.account_line(),
            "<sip:bob@127.0.0.1:5060>;auth_pass=pw;answermode=auto;regint=300;audio_codecs=pcmu,pcma"
        );
        let m = BaresipOpts { auto_answer: false, outbound: Some("127.0.0.1:5060".parse().unwrap()), ..r };
        assert!(m.account_line().contains("answermode=manual"), "{}", m.account_line());
        assert!(m.account_line().ends_with(";outbound=\"sip:127.0.0.1:5060\""), "{}", m.account_line());
    }

    #[test]
    fn sip_message_accessors() {
        let m = SipMessage {
            text: "SIP/2.0 401 Unauthorized\r\nVia: a\r\nWWW-Authenticate: Digest x=1\r\nvia: b\r\n\r\n".into(),
        };
        assert_eq!(m.status(), Some(401));
        assert_eq!(m.headers("Via"), ["a", "b"]);
        assert_eq!(m.header("www-authenticate"), Some("Digest x=1"));
    }
}
