//! DNS queries on a bounded pool, off the event loop: lookups run on up to [`THREADS`] threads
//! (each blocking on its own current-thread tokio runtime and hickory resolver, [`driver::dns`])
//! fed by a queue of at most [`QUEUE`] waiting queries. A lookup that finds the queue full is
//! refused at once ([`Refused::Full`]); the runtime answers the core's `Output::Resolve` with that error,
//! which the core reports like any DNS failure. A client choosing domains cannot make the
//! process start threads or hold work without bound.
//!
//! Threads start with the lookups, not with the process: each of the first [`THREADS`] lookups
//! starts one (and the thread makes its resolver then), so a gateway that resolves no name has
//! no lookup thread, no runtime and no resolver (idle footprint, issue #14).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use sylkgw_core::dns::QueryType;
use sylkgw_driver as driver;

/// Lookup threads.
pub const THREADS: usize = 4;
/// Names waiting for a thread, beyond those being looked up.
pub const QUEUE: usize = 64;

/// What a lookup gives: the records, or the error text.
pub type Answer = Result<sylkgw_core::dns::Answer, String>;

/// One query.
type Job = (u64, QueryType, String);

/// Why a lookup was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The queue was full.
    Full,
    /// No lookup thread runs and none could be started (the OS error).
    NoThread(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full => {
                write!(f, "too many DNS lookups at once ({THREADS} running, {QUEUE} waiting); not looked up")
            }
            Self::NoThread(e) => write!(f, "no DNS lookup thread ({e}); not looked up"),
        }
    }
}

/// One thread's lookup.
type Lookup = Box<dyn FnMut(QueryType, &str) -> Answer>;
/// Makes a lookup, on its thread.
type Make = dyn Fn() -> Lookup + Send + Sync;
/// Where answers go.
type Done = dyn Fn(u64, Answer) + Send + Sync;

/// The pool. Dropping it lets the threads end once the queue is empty.
pub struct Resolver {
    jobs: SyncSender<Job>,
    rx: Arc<Mutex<Receiver<Job>>>,
    make: Arc<Make>,
    done: Arc<Done>,
    /// Threads started so far, and the most there may be.
    started: usize,
    threads: usize,
}

impl Resolver {
    /// A pool of at most `threads` threads, each looking names up with its own lookup made by
    /// `make` (on that thread, before its first query; dropped when the thread ends), handing
    /// each answer to `done` (from the lookup thread), with at most `queue` names waiting. No
    /// thread starts before the first [`Resolver::submit`].
    pub fn start<L: FnMut(QueryType, &str) -> Answer + 'static>(
        threads: usize,
        queue: usize,
        make: impl Fn() -> L + Send + Sync + 'static,
        done: impl Fn(u64, Answer) + Send + Sync + 'static,
    ) -> Self {
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let make: Arc<Make> = Arc::new(move || Box::new(make()) as Lookup);
        Self { jobs, rx, make, done: Arc::new(done), started: 0, threads }
    }

    /// The pool the runtime uses: [`THREADS`] threads, [`QUEUE`] waiting, the system's DNS
    /// configuration.
    pub fn system(done: impl Fn(u64, Answer) + Send + Sync + 'static) -> Self {
        Self::start(THREADS, QUEUE, system_lookup, done)
    }

    /// Queues `name` for lookup as `query`, starting a thread while fewer than the pool's run;
    /// refuses it at once when the queue is full (or when no thread runs and none can start).
    pub fn submit(&mut self, query: u64, qtype: QueryType, name: String) -> Result<(), Refused> {
        if self.started < self.threads {
            match self.spawn() {
                Ok(()) => self.started += 1,
                Err(e) if self.started == 0 => return Err(Refused::NoThread(e.to_string())),
                Err(e) => log::warn!("DNS lookup thread {}: {e}", self.started),
            }
        }
        match self.jobs.try_send((query, qtype, name)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Refused::Full),
        }
    }

    /// Starts lookup thread number `started`.
    fn spawn(&self) -> std::io::Result<()> {
        let (rx, make, done) = (Arc::clone(&self.rx), Arc::clone(&self.make), Arc::clone(&self.done));
        std::thread::Builder::new().name(format!("resolve-{}", self.started)).spawn(move || {
            let mut lookup = make();
            while let Some((query, qtype, name)) = next(&rx) {
                done(query, lookup(qtype, &name));
            }
        })?;
        Ok(())
    }
}

/// The next job, or `None` once the pool is dropped.
fn next(rx: &Mutex<Receiver<Job>>) -> Option<Job> {
    rx.lock().unwrap_or_else(|e| e.into_inner()).recv().ok()
}

/// A pool thread's lookup: its own current-thread tokio runtime and hickory resolver (or why
/// there is none: every query is answered with that error).
fn system_lookup() -> impl FnMut(QueryType, &str) -> Answer {
    let local =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string()).and_then(|rt| {
            // Built inside the runtime, in case the resolver starts tasks.
            let resolver = rt.block_on(async { driver::dns::system_resolver() })?;
            Ok((rt, resolver))
        });
    move |qtype, name| match &local {
        Ok((rt, resolver)) => rt.block_on(driver::dns::lookup(resolver, qtype, name)),
        Err(e) => Err(e.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Sender};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn no_thread_and_no_lookup_before_the_first_query() {
        let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&made);
        let make = move || {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            |_: QueryType, _: &str| Ok(sylkgw_core::dns::Answer::ips(vec![std::net::IpAddr::from([127, 0, 0, 1])]))
        };
        let (done_tx, done) = channel::<(u64, Answer)>();
        let done_tx = Mutex::new(done_tx);
        let mut pool = Resolver::start(4, 8, make, move |q, a| {
            let _ = done_tx.lock().unwrap().send((q, a));
        });
        assert_eq!((pool.started, made.load(std::sync::atomic::Ordering::SeqCst)), (0, 0), "nothing before a query");
        pool.submit(7, QueryType::Ip, "a.example".into()).unwrap();
        let (query, answer) = done.recv_timeout(WAIT).expect("an answer");
        assert_eq!((query, answer.is_ok()), (7, true));
        assert_eq!((pool.started, made.load(std::sync::atomic::Ordering::SeqCst)), (1, 1), "one thread, one lookup");
    }

    #[test]
    fn busy_pool_refuses_beyond_its_queue_and_answers_every_accepted_lookup() {
        // Lookups block until the test releases them, and say when they start.
        let (started_tx, started) = channel::<String>();
        let (release_tx, release) = channel::<()>();
        let release = Mutex::new(release);
        let started_tx = Mutex::new(started_tx);
        let (done_tx, done) = channel::<(u64, Answer)>();
        let done_tx: Mutex<Sender<_>> = Mutex::new(done_tx);
        let (started_tx, release) = (Arc::new(started_tx), Arc::new(release));
        let lookup = move || {
            let (started_tx, release) = (Arc::clone(&started_tx), Arc::clone(&release));
            move |_: QueryType, name: &str| {
                let _ = started_tx.lock().unwrap().send(name.to_string());
                let _ = release.lock().unwrap().recv_timeout(WAIT);
                Ok(sylkgw_core::dns::Answer::ips(vec![std::net::IpAddr::from([127, 0, 0, 1])]))
            }
        };
        let mut pool = Resolver::start(2, 3, lookup, move |q, a| {
            let _ = done_tx.lock().unwrap().send((q, a));
        });
        // Two running (both threads busy), then three waiting fill the queue.
        for q in 0..2 {
            pool.submit(q, QueryType::Ip, format!("n{q}.example")).unwrap();
        }
        for _ in 0..2 {
            started.recv_timeout(WAIT).expect("a lookup started");
        }
        for q in 2..5 {
            pool.submit(q, QueryType::Ip, format!("n{q}.example")).unwrap();
        }
        assert_eq!(
            pool.submit(5, QueryType::Ip, "over.example".into()),
            Err(Refused::Full),
            "the sixth is refused at once"
        );
        assert!(Refused::Full.to_string().contains("too many DNS lookups"));
        for _ in 0..5 {
            release_tx.send(()).unwrap();
        }
        let mut answered: Vec<u64> = (0..5).map(|_| done.recv_timeout(WAIT).expect("an answer").0).collect();
        answered.sort_unstable();
        assert_eq!(answered, [0, 1, 2, 3, 4], "every accepted lookup is answered, the refused one is not");
        // Room again once the queue drains.
        pool.submit(6, QueryType::Ip, "again.example".into()).unwrap();
        release_tx.send(()).unwrap();
        assert_eq!(done.recv_timeout(WAIT).expect("an answer").0, 6);
    }
}
