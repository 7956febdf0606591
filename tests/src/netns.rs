//! Running a `#[test]` body inside a private network namespace.
//!
//! Every end-to-end test runs in its own network namespace, created with `unshare -n`, in which
//! only `lo` exists and is up. Nothing the test or its helper processes send can leave that
//! namespace, and ports (5060…) never clash with other tests or other programs on the machine.
//!
//! ```ignore
//! #[test]
//! fn kamailio_register_udp() {
//!     if !sylkgw_tests::netns::in_netns("kamailio_register_udp") {
//!         return; // the body ran (and passed) in a child process inside a fresh namespace
//!     }
//!     // ...the body, now inside the namespace...
//! }
//! ```
//!
//! How: [`in_netns`] re-executes the current test binary as
//! `unshare -n -- sh -c 'ip link set lo up && exec "$@"' sh EXE TEST --exact --nocapture
//! --test-threads=1` with `SYLKGW_IN_NETNS=1`, waits for it (bounded, see [`NETNS_TIMEOUT`]),
//! forwards its output, and fails the outer test when the inner one failed or did not run. In the
//! inner process `in_netns` sees the variable, checks that the namespace really is isolated
//! ([`assert_isolated`]) and returns `true`.
//!
//! Requirements: root (CI runs as root), `unshare` (util-linux) and `ip` (iproute2). Without them
//! the test FAILS with a message saying so, unless `SYLKGW_SKIP_E2E=1` is set, in which case it
//! prints a loud `SKIP` line and passes.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Set (to `1`) in the environment of the re-executed test binary inside the namespace.
pub const ENV_INSIDE: &str = "SYLKGW_IN_NETNS";

/// When set to `1`, a machine that cannot create namespaces skips the end-to-end tests (with a
/// loud `SKIP` line) instead of failing them.
pub const ENV_SKIP: &str = "SYLKGW_SKIP_E2E";

/// How long the inner test may run before it (and every process below it) is killed. Override
/// with `SYLKGW_NETNS_TIMEOUT_SECS`.
pub const NETNS_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether this process is the re-executed test inside the namespace.
pub fn is_inside() -> bool {
    std::env::var_os(ENV_INSIDE).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Runs the test named `test_path` (its full libtest name, e.g. `kamailio_register_udp` or
/// `module::name`) in a fresh network namespace. Returns `true` when the caller IS inside the
/// namespace and must run the body; `false` when the body already ran in a child process (which
/// passed: a failure panics here) or the test is skipped, and the caller must return.
pub fn in_netns(test_path: &str) -> bool {
    in_netns_with_timeout(test_path, timeout_from_env())
}

/// [`in_netns`] with an explicit timeout for the inner run.
pub fn in_netns_with_timeout(test_path: &str, timeout: Duration) -> bool {
    if is_inside() {
        assert_isolated();
        return true;
    }
    if let Err(why) = prerequisites() {
        if skip_requested() {
            let line = format!("SKIP SKIP SKIP: end-to-end test `{test_path}` NOT RUN ({ENV_SKIP}=1): {why}");
            println!("{line}");
            eprintln!("{line}");
            return false;
        }
        panic!(
            "end-to-end test `{test_path}` cannot run: {why}. These tests need root, `unshare` (util-linux) and `ip` \
             (iproute2) to create a private network namespace; run them through tests/run-all.sh as root, or set \
             {ENV_SKIP}=1 to skip them explicitly"
        );
    }
    run_inside(test_path, timeout);
    false
}

fn skip_requested() -> bool {
    std::env::var(ENV_SKIP).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("yes"))
}

fn timeout_from_env() -> Duration {
    std::env::var("SYLKGW_NETNS_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(NETNS_TIMEOUT, Duration::from_secs)
}

/// `Ok` when this process can create network namespaces: effective uid 0, `unshare` and `ip`
/// found, and `unshare -n true` works (a container may forbid it). `Err` says what is missing.
/// Checked once per process.
pub fn prerequisites() -> Result<(), String> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED.get_or_init(check_prerequisites).clone()
}

fn check_prerequisites() -> Result<(), String> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mut missing = Vec::new();
    if euid != 0 {
        missing.push(format!("not root (euid {euid})"));
    }
    for prog in ["unshare", "ip"] {
        if find_program(prog).is_none() {
            missing.push(format!("`{prog}` not found in PATH or /usr/sbin, /sbin"));
        }
    }
    if !missing.is_empty() {
        return Err(missing.join(", "));
    }
    let unshare = find_program("unshare").expect("found above");
    let mut probe = Command::new(&unshare);
    probe.args(["-n", "--", "true"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = probe.spawn().map_err(|e| format!("spawning {}: {e}", unshare.display()))?;
    let err = Collector::new(child.stderr.take());
    match wait_deadline(&mut child, Instant::now() + Duration::from_secs(10)) {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("`unshare -n true` failed ({status}): {}", err.finish().trim())),
        None => {
            kill_tree(&mut child);
            Err("`unshare -n true` did not finish within 10 s".to_string())
        }
    }
}

/// The path of program `name`: the first executable match in `$PATH`, then in `/usr/sbin`,
/// `/sbin`, `/usr/bin`, `/bin` (root's sbin dirs are not always in `$PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let fallback = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    std::env::split_paths(&path).chain(fallback).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Panics unless this process is in an isolated namespace: `lo` is the only interface, it is
/// up, 127.0.0.1 works and an outside address (192.0.2.1, TEST-NET-1) has no route.
pub fn assert_isolated() {
    // /proc/net is per network namespace (/sys/class/net is not: it shows the namespace that
    // mounted sysfs).
    let dev = std::fs::read_to_string("/proc/net/dev").expect("reading /proc/net/dev");
    let mut ifaces: Vec<&str> = dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    ifaces.sort_unstable();
    assert_eq!(
        ifaces,
        ["lo"],
        "{ENV_INSIDE} is set but this is not a private network namespace (interfaces {ifaces:?})"
    );
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0 inside the namespace");
    s.set_read_timeout(Some(Duration::from_secs(2))).expect("read timeout");
    let me = s.local_addr().expect("local_addr");
    s.send_to(b"lo?", me).unwrap_or_else(|e| panic!("lo is not up inside the namespace: sending to {me}: {e}"));
    let mut buf = [0u8; 8];
    let n = s.recv(&mut buf).unwrap_or_else(|e| panic!("lo is not up inside the namespace: receiving on {me}: {e}"));
    assert_eq!(&buf[..n], b"lo?");
    let outside: SocketAddr = (Ipv4Addr::new(192, 0, 2, 1), 9).into();
    let routed = s.connect(outside).is_ok() && s.send(b"x").is_ok();
    assert!(!routed, "{outside} is reachable from inside the namespace: it is not isolated");
}

/// Re-executes the current test binary for `test_path` inside a new namespace; panics unless
/// it ran exactly that test and it passed.
fn run_inside(test_path: &str, timeout: Duration) {
    let exe = std::env::current_exe().expect("current_exe");
    let unshare = find_program("unshare").expect("checked by prerequisites");
    let ip = find_program("ip").expect("checked by prerequisites");
    let script = format!("'{}' link set lo up || exit 97; exec \"$@\"", ip.display());
    let mut cmd = Command::new(&unshare);
    cmd.args(["-n", "--", "sh", "-c", &script, "sh"])
        .arg(&exe)
        .args([test_path, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV_INSIDE, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {} -n: {e}", unshare.display()));
    let out = Collector::new(child.stdout.take());
    let err = Collector::new(child.stderr.take());
    let Some(status) = wait_deadline(&mut child, started + timeout) else {
        kill_tree(&mut child);
        let (out, err) = (out.finish(), err.finish());
        print!("{out}");
        eprint!("{err}");
        panic!("end-to-end test `{test_path}` did not finish within {timeout:?} inside its namespace; killed it");
    };
    let (out, err) = (out.finish(), err.finish());
    print!("{out}");
    eprint!("{err}");
    eprintln!("[netns] `{test_path}` ran in its own network namespace in {:.2?}", started.elapsed());
    if status.code() == Some(97) {
        panic!("`ip link set lo up` failed inside the new namespace");
    }
    assert!(status.success(), "end-to-end test `{test_path}` failed inside its namespace ({status})");
    assert!(
        out.contains("test result: ok. 1 passed"),
        "the re-executed test binary did not run exactly `{test_path}` (is the name passed to in_netns the test's \
         full libtest name?)"
    );
}

/// Waits for `child` until `deadline`; `None` on timeout.
pub(crate) fn wait_deadline(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
    }
}

/// SIGKILLs `child` and every process below it (found through `/proc`, by PID), then reaps it.
pub(crate) fn kill_tree(child: &mut Child) {
    let pids = descendants(child.id());
    let _ = child.kill();
    for pid in pids {
        kill_pid(pid, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub(crate) fn kill_pid(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 0 {
            // SAFETY: kill(2) has no memory-safety preconditions; pid is positive (a single process).
            unsafe { libc::kill(pid, signal) };
        }
    }
}

/// For a program (a benchmark, the soak) rather than a test: runs this executable again, with the
/// same arguments and `env_inside=1`, inside a fresh network namespace (`unshare -n sh -c 'ip
/// link set lo up && exec "$0" "$@"'`), and returns its outcome; past `timeout` it and every
/// process below it are killed by PID. The re-executed program checks `env_inside` to know it
/// is inside (and should call [`assert_isolated`]). Fails without root, `unshare` or `ip`.
pub fn reexec_self(name: &str, env_inside: &str, timeout: Duration) -> std::process::ExitCode {
    use std::process::ExitCode;
    if let Err(why) = prerequisites() {
        eprintln!("{name} needs root, `unshare` and `ip` for a private network namespace: {why}");
        return ExitCode::FAILURE;
    }
    let unshare = find_program("unshare").expect("checked");
    let ip = find_program("ip").expect("checked");
    let exe = std::env::current_exe().expect("current_exe");
    let script = format!("'{}' link set lo up && exec \"$0\" \"$@\"", ip.display());
    let mut child = Command::new(unshare)
        .args(["-n", "sh", "-c", &script])
        .arg(&exe)
        .args(std::env::args_os().skip(1))
        .env(env_inside, "1")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawning unshare");
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return ExitCode::SUCCESS,
            Ok(Some(status)) => {
                eprintln!("{name} (inside its namespace): {status}");
                return ExitCode::FAILURE;
            }
            Ok(None) if Instant::now() >= deadline => {
                eprintln!("{name} did not finish within {timeout:?}; killing it by PID");
                let pids = descendants(child.id());
                let _ = child.kill();
                for pid in pids {
                    if let Ok(pid) = i32::try_from(pid) {
                        // SAFETY: kill(2) has no memory-safety preconditions; pid is positive.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                let _ = child.wait();
                return ExitCode::FAILURE;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("waiting for the inner {name}: {e}"),
        }
    }
}

/// Every live process whose parent chain leads to `pid` (children first, then theirs…).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut table = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(ppid) = parent_of(p) {
                table.push((p, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &table {
            if pp == parent && !found.contains(&p) {
                found.push(p);
                frontier.push(p);
            }
        }
    }
    found
}

/// The parent PID of `pid`, from `/proc/PID/stat`.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

/// Reads a pipe to the end on a thread.
pub(crate) struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    pub(crate) fn new<R: Read + Send + 'static>(pipe: Option<R>) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let thread = pipe.map(|mut pipe| {
            let buf = Arc::clone(&buf);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&chunk[..n]),
                    }
                }
            })
        });
        Self { buf, thread }
    }

    /// What was read so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Waits (up to 2 s) for the writer side to close, then returns everything read.
    pub(crate) fn finish(mut self) -> String {
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        self.text()
    }
}
