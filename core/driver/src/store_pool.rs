//! Storage off the event loop: the core's `Output::Store` requests run on a small pool of
//! worker threads ([`StorePool`]), each with its own connection to the backend, fed by a queue
//! of at most a fixed number of waiting requests. A request that finds the queue full, or a
//! pool with no storage, is refused at once with [`StoreError::Unavailable`], which the runtime
//! feeds back right after the drain; every accepted request is answered exactly once, from the
//! worker thread, through the `done` callback (the runtime wakes its loop there).
//!
//! [`open_backend`] opens the configured storage once at start (creating the data directory,
//! the database and the schema, so configuration errors show before the gateway serves) and
//! yields a [`Backend`] from which each pool's threads open their own connections.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use sylkgw_core::storage::{StoreError, StoreId, StoreRequest, StoreResult};
use sylkgw_storage::Storage;

use crate::settings::StorageSettings;

/// Worker threads per pool (per core: `sylkgw` runs one pool per worker).
pub const THREADS: usize = 2;
/// Requests waiting for a thread, per pool, beyond those being carried out.
pub const QUEUE: usize = 256;
/// The longest [`StorePool::start`] waits for each of its threads' first connection.
pub const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a storage request gives.
pub type Outcome = Result<StoreResult, StoreError>;

/// A fresh connection to the storage, or why there is none.
type Opener = dyn Fn() -> Result<Box<dyn Storage + Send>, StoreError> + Send + Sync;

/// Where pools get their connections: the configured storage, or none (every request answered
/// `Unavailable` with the reason).
#[derive(Clone)]
pub enum Backend {
    /// Opens one connection per call (one per pool thread, again after it failed).
    Open(Arc<Opener>),
    /// No storage this run; the text says why.
    Unavailable(String),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open(_) => f.write_str("Backend::Open"),
            Self::Unavailable(why) => write!(f, "Backend::Unavailable({why:?})"),
        }
    }
}

/// Opens the storage `settings` name once (directory, database file or server, schema
/// migrated). If that fails: an error when the storage was configured explicitly (`storage`
/// or `--data-dir`), else a warning and [`Backend::Unavailable`], so that a host where the
/// default data directory cannot be made still runs everything that does not store.
pub fn open_backend(settings: &StorageSettings) -> Result<Backend, String> {
    let (url, dir) = (settings.url.clone(), settings.data_dir.clone());
    let what = settings.describe();
    match sylkgw_storage::open(url.as_deref(), &dir) {
        Ok(_) => {
            log::info!("storage: {what}");
            let open = move || sylkgw_storage::open(url.as_deref(), &dir);
            Ok(Backend::Open(Arc::new(open)))
        }
        Err(e) if settings.explicit => Err(format!("storage ({what}): {e}")),
        Err(e) => {
            log::warn!("storage ({what}): {e}; running without storage (set --data-dir or storage)");
            Ok(Backend::Unavailable(format!("{what}: {e}")))
        }
    }
}

/// The pool. Dropping it lets the threads end once the queue is empty.
pub struct StorePool {
    /// `Err(why)`: no storage; every request is refused with `Unavailable(why)`.
    jobs: Result<SyncSender<(StoreId, StoreRequest)>, String>,
    /// The queue's bound, for the refusal text.
    queue: usize,
}

impl StorePool {
    /// Starts `threads` threads for `backend`, with at most `queue` requests waiting, handing
    /// each outcome to `done` (on the pool thread). With [`Backend::Unavailable`] no thread is
    /// started.
    pub fn start(
        backend: &Backend,
        threads: usize,
        queue: usize,
        done: impl Fn(StoreId, Outcome) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let open = match backend {
            Backend::Open(open) => Arc::clone(open),
            Backend::Unavailable(why) => return Ok(Self { jobs: Err(why.clone()), queue: 0 }),
        };
        let (jobs, rx) = sync_channel::<(StoreId, StoreRequest)>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let done = Arc::new(done);
        let (opened_tx, opened) = std::sync::mpsc::channel::<()>();
        for n in 0..threads {
            let (rx, open, done, opened_tx) =
                (Arc::clone(&rx), Arc::clone(&open), Arc::clone(&done), opened_tx.clone());
            std::thread::Builder::new().name(format!("store-{n}")).spawn(move || {
                // Connected at start, so a process's open files do not grow with its first
                // request (the e2e churn tests compare them with the idle baseline); a failure
                // here is retried by the first request.
                let mut conn: Option<Box<dyn Storage + Send>> = open().ok();
                let _ = opened_tx.send(());
                drop(opened_tx);
                while let Some((id, request)) = next(&rx) {
                    done(id, execute(&mut conn, &*open, &request));
                }
            })?;
        }
        // Start-up ends once every connection is open (or failed), so that what opening touched
        // is over before the runtime sheds its start-up pages (`footprint`), and the process's
        // open files are those of the idle gateway. A server that does not answer is waited
        // for at most OPEN_WAIT per thread.
        drop(opened_tx);
        for _ in 0..threads {
            if opened.recv_timeout(OPEN_WAIT).is_err() {
                log::debug!("storage: connections still opening after {OPEN_WAIT:?}");
                break;
            }
        }
        Ok(Self { jobs: Ok(jobs), queue })
    }

    /// The pool a runtime uses: [`THREADS`] threads, [`QUEUE`] waiting.
    pub fn standard(
        backend: &Backend,
        done: impl Fn(StoreId, Outcome) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        Self::start(backend, THREADS, QUEUE, done)
    }

    /// Queues `request` as `id`; `Err` is its answer at once (no storage, or the queue is full).
    pub fn submit(&self, id: StoreId, request: StoreRequest) -> Result<(), StoreError> {
        let jobs = self.jobs.as_ref().map_err(|why| StoreError::Unavailable(why.clone()))?;
        match jobs.try_send((id, request)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(StoreError::Unavailable(format!(
                "too many storage requests at once ({} waiting); not carried out",
                self.queue
            ))),
            Err(TrySendError::Disconnected(_)) => Err(StoreError::Unavailable("storage threads ended".into())),
        }
    }
}

/// Carries out `request` on the thread's connection, opening it first if there is none; a
/// connection that answered `Unavailable` is dropped, so the next request opens a fresh one (a
/// server restarted, a file lock released).
fn execute(conn: &mut Option<Box<dyn Storage + Send>>, open: &Opener, request: &StoreRequest) -> Outcome {
    let storage = match conn {
        Some(storage) => storage,
        None => conn.insert(open()?),
    };
    let outcome = storage.execute(request);
    if let Err(StoreError::Unavailable(why)) = &outcome {
        log::warn!("storage: {why}; reconnecting on the next request");
        *conn = None;
    }
    outcome
}

/// The next job, or `None` once the pool is dropped.
fn next(rx: &Mutex<Receiver<(StoreId, StoreRequest)>>) -> Option<(StoreId, StoreRequest)> {
    rx.lock().unwrap_or_else(|e| e.into_inner()).recv().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::StorageSettings;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::{channel, Sender};
    use std::time::Duration;
    use sylkgw_core::storage::UnixMicros;

    const WAIT: Duration = Duration::from_secs(10);

    /// Answers `Done` once the test releases it, saying when it starts; while `fail` is above 0
    /// (shared by every connection) a request takes one off and answers `Unavailable`.
    struct Gated {
        started: Mutex<Sender<StoreId>>,
        release: Arc<Mutex<Receiver<()>>>,
        fail: Arc<AtomicUsize>,
    }

    impl Storage for Gated {
        fn execute(&mut self, request: &StoreRequest) -> Outcome {
            if self.fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(StoreError::Unavailable("connection lost".into()));
            }
            let StoreRequest::GetAccount { account } = request else { return Err(StoreError::NotFound) };
            let _ = self.started.lock().unwrap().send(StoreId(account.parse().unwrap()));
            let _ = self.release.lock().unwrap().recv_timeout(WAIT);
            Ok(StoreResult::Done)
        }
    }

    fn ask(n: u64) -> StoreRequest {
        StoreRequest::GetAccount { account: n.to_string() }
    }

    /// A backend of [`Gated`] connections, counting how many were opened.
    fn gated(fail_first: usize) -> (Backend, Receiver<StoreId>, Sender<()>, Arc<AtomicUsize>) {
        let (started_tx, started) = channel();
        let (release_tx, release) = channel();
        let release = Arc::new(Mutex::new(release));
        let opened = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&opened);
        let started_tx = Mutex::new(started_tx);
        let fail = Arc::new(AtomicUsize::new(fail_first));
        let open = move || -> Result<Box<dyn Storage + Send>, StoreError> {
            count.fetch_add(1, Ordering::SeqCst);
            let started = Mutex::new(started_tx.lock().unwrap().clone());
            Ok(Box::new(Gated { started, release: Arc::clone(&release), fail: Arc::clone(&fail) }))
        };
        (Backend::Open(Arc::new(open)), started, release_tx, opened)
    }

    fn answers() -> (impl Fn(StoreId, Outcome) + Send + Sync + 'static, Receiver<(StoreId, Outcome)>) {
        let (tx, rx) = channel();
        let tx = Mutex::new(tx);
        (move |id, outcome| drop(tx.lock().unwrap().send((id, outcome))), rx)
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_one_thread_answers_in_order() {
        let (backend, started, release, _) = gated(0);
        let (done, answered) = answers();
        let pool = StorePool::start(&backend, 1, 2, done).unwrap();
        pool.submit(StoreId(1), ask(1)).unwrap();
        assert_eq!(started.recv_timeout(WAIT).unwrap(), StoreId(1), "the thread took the first");
        pool.submit(StoreId(2), ask(2)).unwrap();
        pool.submit(StoreId(3), ask(3)).unwrap();
        let refused = pool.submit(StoreId(4), ask(4)).unwrap_err();
        assert!(matches!(&refused, StoreError::Unavailable(why) if why.contains("2 waiting")), "{refused:?}");
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        let order: Vec<StoreId> = (0..3).map(|_| answered.recv_timeout(WAIT).unwrap().0).collect();
        assert_eq!(order, [StoreId(1), StoreId(2), StoreId(3)], "one thread: in the order asked");
        assert!(answered.recv_timeout(Duration::from_millis(50)).is_err(), "the refused one is not answered again");
        // Room again once the queue drained.
        pool.submit(StoreId(5), ask(5)).unwrap();
        release.send(()).unwrap();
        assert_eq!(answered.recv_timeout(WAIT).unwrap(), (StoreId(5), Ok(StoreResult::Done)));
    }

    #[test]
    fn no_storage_answers_unavailable_with_the_reason() {
        let (done, answered) = answers();
        let pool = StorePool::start(&Backend::Unavailable("cannot create /nope".into()), 2, 8, done).unwrap();
        assert_eq!(pool.submit(StoreId(1), ask(1)), Err(StoreError::Unavailable("cannot create /nope".into())));
        assert!(answered.recv_timeout(Duration::from_millis(50)).is_err(), "refused at once, not later");
    }

    #[test]
    fn a_connection_that_went_unavailable_is_opened_again() {
        let (backend, _started, release, opened) = gated(1);
        let (done, answered) = answers();
        let pool = StorePool::start(&backend, 1, 4, done).unwrap();
        pool.submit(StoreId(1), ask(1)).unwrap();
        assert_eq!(
            answered.recv_timeout(WAIT).unwrap(),
            (StoreId(1), Err(StoreError::Unavailable("connection lost".into())))
        );
        release.send(()).unwrap();
        pool.submit(StoreId(2), ask(2)).unwrap();
        assert_eq!(answered.recv_timeout(WAIT).unwrap(), (StoreId(2), Ok(StoreResult::Done)));
        assert_eq!(opened.load(Ordering::SeqCst), 2, "opened lazily, then once more after the failure");
    }

    /// The real default backend, in a temporary data directory, through the pool.
    #[test]
    fn sqlite_in_a_data_dir_through_the_pool() {
        let dir = std::env::temp_dir().join(format!("sylkgw-store-pool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = StorageSettings { url: None, data_dir: dir.join("data"), explicit: true };
        let backend = open_backend(&settings).unwrap();
        assert!(dir.join("data/sylkgw.sqlite3").is_file(), "created at start");
        let (done, answered) = answers();
        let pool = StorePool::start(&backend, 2, 8, done).unwrap();
        let account = || "alice@example.com".to_string();
        let key =
            StoreRequest::StorePublicKey { account: account(), public_key: "KEY".into(), created_at: UnixMicros(1) };
        pool.submit(StoreId(1), key).unwrap();
        assert_eq!(answered.recv_timeout(WAIT).unwrap(), (StoreId(1), Ok(StoreResult::Done)));
        pool.submit(StoreId(2), StoreRequest::LookupPublicKey { account: account() }).unwrap();
        let (id, outcome) = answered.recv_timeout(WAIT).unwrap();
        assert_eq!((id, outcome), (StoreId(2), Ok(StoreResult::PublicKey { public_key: Some("KEY".into()) })));
        drop(pool);
        // A second start finds the data (the schema is not created twice).
        assert!(matches!(open_backend(&settings), Ok(Backend::Open(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_data_dir_that_cannot_be_made_stops_only_when_asked_for() {
        let file = std::env::temp_dir().join(format!("sylkgw-store-pool-file-{}", std::process::id()));
        std::fs::write(&file, "not a directory").unwrap();
        let mut settings = StorageSettings { url: None, data_dir: file.join("data"), explicit: true };
        let e = open_backend(&settings).unwrap_err();
        assert!(e.contains("storage (sqlite") && e.contains("cannot create"), "{e}");
        settings.explicit = false;
        let Ok(Backend::Unavailable(why)) = open_backend(&settings) else { panic!("the default falls back") };
        let (done, _answered) = answers();
        let pool = StorePool::standard(&Backend::Unavailable(why.clone()), done).unwrap();
        assert_eq!(pool.submit(StoreId(1), ask(1)), Err(StoreError::Unavailable(why)));
        let _ = std::fs::remove_file(&file);
    }
}
