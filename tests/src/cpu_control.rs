//! CPU control for the benchmarks: pinning processes to a CPU and per-thread CPU quotas with
//! cgroup v1's `cpu` controller (`cpu.cfs_quota_us` / `cpu.cfs_period_us`, a thread moved by
//! writing its TID to the group's `tasks`).
//!
//! * [`pin_self`] / [`pin_process`]: `sched_setaffinity` of the calling thread (threads created
//!   after it inherit it) or of every thread of a process; [`nice_self`] / [`nice_process`] the
//!   same for the nice value (on a machine shared with other work, a pinned load client still
//!   competes for its CPU).
//! * [`WorkerThreads`]: the event-loop threads of a sylkgw process, found by name (`sylkgw-N` for
//!   `sylkgw`'s workers, the main thread for `sylkgw-mio`), and their CPU time.
//! * [`Quotas`]: one cgroup per thread, each allowed `pct` % of one core. The groups are named
//!   [`GROUP_PREFIX`]`<creator pid>-<n>`; dropping the value moves the threads back to the root
//!   group and removes the groups, and [`remove_stale`] removes any left by a process that was
//!   killed (the benchmark's outer process calls it after its inner one ended, however it ended).

use std::io;
use std::path::{Path, PathBuf};

/// Where cgroup v1's `cpu` controller is mounted.
pub const CPU_CGROUP_ROOT: &str = "/sys/fs/cgroup/cpu";
/// Name prefix of the groups [`Quotas`] creates.
pub const GROUP_PREFIX: &str = "sylkgw-bench-";
/// The CFS period of the groups, µs.
const PERIOD_US: u64 = 100_000;

/// Restricts the calling thread (and the threads it creates afterwards) to `cpu`.
pub fn pin_self(cpu: usize) -> io::Result<()> {
    set_affinity(0, cpu)
}

/// Restricts every thread of process `pid` to `cpu` (threads it creates later inherit the mask of
/// their creator); returns how many threads were pinned.
pub fn pin_process(pid: u32, cpu: usize) -> io::Result<usize> {
    let mut n = 0;
    for tid in tids(pid)? {
        match set_affinity(tid as libc::pid_t, cpu) {
            Ok(()) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {} // ended meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn set_affinity(tid: libc::pid_t, cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("cpu {cpu}")));
    }
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes inside `set`; `cpu` is below CPU_SETSIZE (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the nice value of the calling thread (threads it creates afterwards inherit it).
pub fn nice_self(nice: i32) -> io::Result<()> {
    set_nice(0, nice)
}

/// Starts a new session (`setsid`), hence, with `sched_autogroup` on, a new scheduling autogroup
/// of its own that the processes started afterwards share, and gives that autogroup the nice
/// value `nice` (`/proc/self/autogroup`). Autogroups compete with each other as wholes, so a
/// thread's own nice value weighs only against threads of its group: this is what makes the
/// benchmark's processes weigh more than other sessions' work. The group ends with its last
/// process; nothing is left to undo. Fails when the caller already leads a process group.
pub fn own_autogroup(nice: i32) -> io::Result<()> {
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    match std::fs::write("/proc/self/autogroup", nice.to_string()) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()), // no autogroups: nice alone
        r => r,
    }
}

/// The benchmarks' `--pin` and `--nice NI` for the calling process (load client, far end), to be
/// called before it starts any thread (they inherit both): pinned to CPU 1 when `pin`, and with
/// `nice`, an autogroup of its own ([`own_autogroup`]) at that nice value.
pub fn place_load(pin: bool, nice: Option<i32>) -> Result<(), String> {
    if pin {
        pin_self(1).map_err(|e| format!("--pin: CPU 1: {e}"))?;
    }
    if let Some(ni) = nice {
        own_autogroup(ni).and_then(|()| nice_self(ni)).map_err(|e| format!("--nice {ni}: {e}"))?;
    }
    Ok(())
}

/// Sets the nice value of every thread of process `pid` (threads it creates later inherit their
/// creator's); returns how many threads it set.
pub fn nice_process(pid: u32, nice: i32) -> io::Result<usize> {
    let mut n = 0;
    for tid in tids(pid)? {
        match set_nice(tid, nice) {
            Ok(()) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {} // ended meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn set_nice(tid: u32, nice: i32) -> io::Result<()> {
    // SAFETY: setpriority has no memory-safety preconditions; Linux applies PRIO_PROCESS to the
    // one thread `tid` names (0: the caller).
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The thread ids of process `pid`.
pub fn tids(pid: u32) -> io::Result<Vec<u32>> {
    let mut out: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The name (`comm`) of thread `tid` of `pid`.
fn thread_name(pid: u32, tid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok().map(|s| s.trim().to_owned())
}

/// utime + stime of thread `tid` of process `pid`, s (0 once it has ended).
pub fn thread_cpu_s(pid: u32, tid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else { return 0.0 };
    let Some((_, rest)) = s.rsplit_once(')') else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok())).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// The event-loop threads of a sylkgw process.
#[derive(Debug, Clone)]
pub struct WorkerThreads {
    /// The process.
    pub pid: u32,
    /// `(name, tid)` of each loop thread, in worker order.
    pub threads: Vec<(String, u32)>,
}

impl WorkerThreads {
    /// Finds them: the threads named `sylkgw-<N>` (`sylkgw`'s workers), else the main thread
    /// (`sylkgw-mio`, whose loop runs there).
    pub fn find(pid: u32) -> io::Result<Self> {
        let mut threads: Vec<(String, u32)> = tids(pid)?
            .into_iter()
            .filter_map(|tid| thread_name(pid, tid).map(|n| (n, tid)))
            .filter(|(n, _)| n.strip_prefix("sylkgw-").is_some_and(|i| i.parse::<u32>().is_ok()))
            .collect();
        threads.sort_by_key(|(n, _)| n.strip_prefix("sylkgw-").and_then(|i| i.parse::<u32>().ok()));
        if threads.is_empty() {
            threads.push((thread_name(pid, pid).unwrap_or_else(|| "main".into()), pid));
        }
        Ok(Self { pid, threads })
    }

    /// CPU time of each loop thread, s, in order.
    pub fn cpu_s(&self) -> Vec<f64> {
        self.threads.iter().map(|&(_, tid)| thread_cpu_s(self.pid, tid)).collect()
    }
}

/// One cgroup v1 `cpu` group per thread, each with a quota; removed on drop.
#[derive(Debug)]
pub struct Quotas {
    groups: Vec<(PathBuf, u32)>,
}

impl Quotas {
    /// Gives each of `tids` its own group allowed `pct` % of one core (`pct` in 1..=100 per
    /// period of 100 ms). On an error, the groups made so far are removed.
    pub fn apply(tids: &[u32], pct: u32) -> io::Result<Self> {
        if !(1..=100).contains(&pct) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("quota {pct} %: 1 to 100")));
        }
        let root = Path::new(CPU_CGROUP_ROOT);
        if !root.join("tasks").exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no cgroup v1 cpu controller at {CPU_CGROUP_ROOT}"),
            ));
        }
        let mut q = Self { groups: Vec::new() };
        for (i, &tid) in tids.iter().enumerate() {
            let dir = root.join(format!("{GROUP_PREFIX}{}-{i}", std::process::id()));
            std::fs::create_dir(&dir).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
            q.groups.push((dir.clone(), tid));
            std::fs::write(dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
            std::fs::write(dir.join("cpu.cfs_quota_us"), (PERIOD_US * u64::from(pct) / 100).to_string())?;
            std::fs::write(dir.join("tasks"), tid.to_string())
                .map_err(|e| io::Error::new(e.kind(), format!("thread {tid} into {}: {e}", dir.display())))?;
        }
        Ok(q)
    }

    /// Periods in which each group was throttled, and the time it was held back, s (`cpu.stat`).
    pub fn throttled(&self) -> Vec<(u64, f64)> {
        self.groups
            .iter()
            .map(|(dir, _)| {
                let stat = std::fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
                let field = |name: &str| {
                    stat.lines()
                        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<u64>().ok()))
                        .unwrap_or(0)
                };
                (field("nr_throttled "), field("throttled_time ") as f64 / 1e9)
            })
            .collect()
    }
}

impl Drop for Quotas {
    fn drop(&mut self) {
        let root_tasks = Path::new(CPU_CGROUP_ROOT).join("tasks");
        for (dir, tid) in self.groups.drain(..) {
            // A thread that has ended is no longer in `tasks`; the write then fails harmlessly.
            let _ = std::fs::write(&root_tasks, tid.to_string());
            if let Err(e) = std::fs::remove_dir(&dir) {
                eprintln!("cgroup {}: not removed: {e}", dir.display());
            }
        }
    }
}

/// Removes every group named [`GROUP_PREFIX`]… under the `cpu` controller (moving any thread
/// still in one back to the root group first); returns how many were removed.
pub fn remove_stale() -> usize {
    let root = Path::new(CPU_CGROUP_ROOT);
    let Ok(dir) = std::fs::read_dir(root) else { return 0 };
    let mut removed = 0;
    for entry in dir.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(GROUP_PREFIX) {
            continue;
        }
        let path = entry.path();
        for tid in std::fs::read_to_string(path.join("tasks")).unwrap_or_default().lines() {
            let _ = std::fs::write(root.join("tasks"), tid);
        }
        match std::fs::remove_dir(&path) {
            Ok(()) => removed += 1,
            Err(e) => eprintln!("cgroup {}: not removed: {e}", path.display()),
        }
    }
    removed
}
