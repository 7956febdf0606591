//! sylkgw-driver: what the two runtimes (`sylkgw-mio`, `sylkgw`) share and the sans-IO core
//! (`sylkgw_core`) must not do: the command line and config file ([`settings`]), logging, the OS
//! seed and the wall clock ([`process`]), DNS queries ([`dns`]), socket set-up ([`sockets`]), batched UDP IO ([`udp_batch`]), capture files
//! ([`capture_file`]), the connection caps shared by every worker ([`limits`]), the storage pool ([`store_pool`]), and the one drive
//! loop over an IO trait ([`drive`]). A runtime is then its event loop and its sockets: it
//! implements [`Io`] and calls [`Driver`] for every event.

pub mod capture_file;
pub mod check;
pub mod dns;
pub mod drive;
pub mod footprint;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod process;
pub mod settings;
pub mod sockets;
pub mod store_pool;
pub mod udp_batch;

pub use capture_file::{capture_path, CaptureFile};
pub use check::check_config;
pub use drive::{BindAnswer, Deferred, Driver, Io};
pub use footprint::shed_startup_pages;
pub use limits::{Caps, ConnLimits, Permit, Refusal};
pub use notify::notify;
pub use process::{
    fatal, init_logging, listening_line, os_seed, stats_line, unix_time, ACCEPT_RETRY, CLOSE_LINGER, SHUTDOWN_GRACE,
};
pub use settings::{
    args, default_data_dir, load, webrtc_dtls_identity, Args, Settings, StorageSettings, DEFAULT_LISTEN,
    DEFAULT_SIP_TLS_CA_FILE,
};
pub use sockets::{bind_sip, enlarge_udp_buffers, host_address, reset_on_close, UDP_BUFFER};
pub use store_pool::{open_backend, Backend, StorePool};
