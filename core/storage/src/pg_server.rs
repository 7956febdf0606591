//! A throw-away PostgreSQL server for tests and benchmarks: `initdb` in a temporary directory,
//! `postgres` listening only on a Unix socket there (no TCP at all), stopped by its PID and the
//! directory removed when the [`PgServer`] is dropped.
//!
//! Binaries come from `$SYLKGW_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin`
//! (Debian's `postgresql` package). `initdb` refuses to run as root, so as root both programs
//! run as the `postgres` user (`setpriv`, which execs: the PID held is the server's own).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections, and to stop.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The OS user the server runs as when we are root.
const SERVER_USER: &str = "postgres";

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A running server; dropped = stopped and its files removed.
pub struct PgServer {
    dir: PathBuf,
    child: Option<Child>,
    next_db: AtomicU64,
}

/// How durable the server is: tests turn fsync off, benchmarks keep the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Fast,
    Default,
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("SYLKGW_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|e| format!("{}: {e} (install Debian's postgresql package)", root.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| format!("no initdb under {}", root.display()))
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `program` with `args`, as the server user when we are root.
fn command(program: &Path, args: &[&str]) -> Command {
    let mut command = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", SERVER_USER, "--regid", SERVER_USER, "--init-groups", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.args(args).env("LC_ALL", "C").stdin(Stdio::null());
    command
}

impl PgServer {
    /// Initializes and starts a server, waiting until it accepts connections.
    pub fn start(durability: Durability) -> Result<PgServer, String> {
        let bin = bin_dir()?;
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sylkgw-pg-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // From here on, Drop removes `dir` (and stops the server once there is one).
        let mut server = PgServer { dir, child: None, next_db: AtomicU64::new(0) };
        let dir = server.dir.to_str().ok_or("temporary directory is not UTF-8")?.to_string();
        if is_root() {
            let status = Command::new("chown")
                .args([&format!("{SERVER_USER}:{SERVER_USER}"), &dir])
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!("chown {SERVER_USER} {dir}: {status} (does the {SERVER_USER} user exist?)"));
            }
        }
        let data = format!("{dir}/data");
        let log = server.dir.join("server.log");
        let initdb =
            command(&bin.join("initdb"), &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
                .stdout(Stdio::null())
                .stderr(File::create(server.dir.join("initdb.log")).map_err(|e| format!("initdb.log: {e}"))?)
                .status()
                .map_err(|e| format!("initdb: {e}"))?;
        if !initdb.success() {
            let output = std::fs::read_to_string(server.dir.join("initdb.log")).unwrap_or_default();
            return Err(format!("initdb failed ({initdb}): {output}"));
        }
        let mut args = vec!["-D", &data, "-k", &dir, "-c", "listen_addresses=", "-p", "5432"];
        if durability == Durability::Fast {
            args.extend(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
        }
        let child = command(&bin.join("postgres"), &args)
            .stdout(Stdio::null())
            .stderr(File::create(&log).map_err(|e| format!("server.log: {e}"))?)
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        server.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match postgres::Client::connect(&server.url("postgres"), postgres::NoTls) {
                Ok(_) => return Ok(server),
                Err(e) => {
                    let exited = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    if exited.is_some() || Instant::now() > deadline {
                        let output = std::fs::read_to_string(&log).unwrap_or_default();
                        return Err(format!("postgres did not start ({exited:?}, last error {e}): {output}"));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// The URL of `database` on this server (Unix socket, user `postgres`, no password).
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@/{database}?host={}&port=5432", self.dir.display())
    }

    /// Creates a fresh, empty database; its URL.
    pub fn create_database(&self) -> Result<String, String> {
        let name = format!("t{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).map_err(|e| e.to_string())?;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).map_err(|e| e.to_string())?;
        Ok(self.url(&name))
    }

    /// The server's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (fast shutdown, SIGINT to its PID; SIGKILL if it lingers).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // Ends only this PID; the server ends its own backends.
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        log::warn!("postgres {} did not stop in time; killing it", child.id());
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
