//! The command line and the config file: what a runtime is told to do, checked and loaded (TLS
//! and PEM files read, the DTLS identity made, advertised addresses filled in).

use argh::FromArgs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use sylkgw_core::config::{parse_ini, Config, PemBundle, TlsConfig};
use sylkgw_core::media::webrtc::DtlsIdentity;

use crate::limits::{Caps, DEFAULT_SIP_TCP_PER_IP, DEFAULT_SIP_TCP_TOTAL};
use crate::sockets::host_address;

/// Default web listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10888";

/// The CA certificates SIP TLS servers are verified against when `sip_tls_ca_file` is not
/// given (Debian's bundle), if the file exists.
pub const DEFAULT_SIP_TLS_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// sylkgw: a WebRTC-to-SIP gateway speaking SylkServer's sylkRTC protocol on
/// ws(s)://HOST:PORT/webrtcgateway/ws.
#[derive(FromArgs, Debug, Default, Clone)]
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
    /// SIP TLS listener (RFC 3261 26.3.1), served with --tls-cert/--tls-key (none by default;
    /// with several workers, worker N uses PORT+N)
    #[argh(option)]
    pub sip_tls_listen: Option<SocketAddr>,
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
    /// directory of the SQLite message store (default /var/lib/sylkgw as root, else
    /// $XDG_DATA_HOME/sylkgw or ~/.local/share/sylkgw, else ./sylkgw-data)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    /// message store: sqlite (default; a file under --data-dir) or postgresql://USER@HOST/DB
    #[argh(option)]
    pub storage: Option<String>,
    /// serve Prometheus metrics on http://ADDR/metrics (off by default; config `metrics_listen`)
    #[argh(option)]
    pub metrics_listen: Option<SocketAddr>,
    /// check config file FILE (with the other options given), print the effective
    /// configuration and exit (0: valid, 2: not)
    #[argh(option)]
    pub check_config: Option<PathBuf>,
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
    /// How often to log a [`stats_line`](crate::stats_line) (`--stats-interval`), if at all.
    pub stats_interval: Option<Duration>,
    /// The core's configuration (TLS material loaded).
    pub core: Config,
    /// The connection caps the runtime enforces for the whole process (`crate::ConnLimits`).
    pub caps: Caps,
    /// Where messages are stored (`crate::store_pool`).
    pub storage: StorageSettings,
    /// Where `/metrics` is served (`crate::metrics`), if at all.
    pub metrics_listen: Option<SocketAddr>,
}

/// The message store: `storage` and `data_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSettings {
    /// `postgresql://…` (or `postgres://…`); `None` for SQLite under `data_dir`.
    pub url: Option<String>,
    /// The data directory (SQLite's file `sylkgw.sqlite3` is there).
    pub data_dir: PathBuf,
    /// `storage` or `data_dir` was given: failing to open it stops the process (exit code 2)
    /// instead of running without storage.
    pub explicit: bool,
}

impl StorageSettings {
    /// For logs: `sqlite DIR/sylkgw.sqlite3` or `postgresql HOST…` (no password).
    pub fn describe(&self) -> String {
        match &self.url {
            Some(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                let (path, query) = host.split_once('?').unwrap_or((host, ""));
                let kept: Vec<&str> =
                    query.split('&').filter(|p| !p.is_empty() && !p.starts_with("password=")).collect();
                match kept.is_empty() {
                    true => format!("postgresql {path}"),
                    false => format!("postgresql {path}?{}", kept.join("&")),
                }
            }
            None => format!("sqlite {}", self.data_dir.join(sylkgw_storage::Sqlite::FILE_NAME).display()),
        }
    }
}

/// Checks a `storage` value: `sqlite` → `None`, a PostgreSQL URL → itself.
fn storage_url(value: &str) -> Result<Option<String>, String> {
    match value.trim() {
        "sqlite" | "" => Ok(None),
        v if v.starts_with("postgresql://") || v.starts_with("postgres://") => Ok(Some(v.to_string())),
        v => Err(format!("storage: {v:?} is neither `sqlite` nor a postgresql:// URL")),
    }
}

/// Reads the config file and PEM files named by `args`; the command line wins over the file.
pub fn load(args: &Args) -> Result<Settings, String> {
    let mut core = Config::default();
    let mut listen: Option<SocketAddr> = None;
    let (mut local_ip, mut local_port): (Option<String>, Option<u16>) = (None, None);
    let mut threads = None;
    let (mut cert, mut key, mut combined): (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>) = (None, None, None);
    let mut sip_ca: Option<PathBuf> = None;
    let (mut sip_per_ip, mut sip_total) = (DEFAULT_SIP_TCP_PER_IP, DEFAULT_SIP_TCP_TOTAL);
    let (mut storage, mut data_dir): (Option<String>, Option<PathBuf>) = (None, None);
    let mut metrics_listen: Option<SocketAddr> = None;
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
                "metrics_listen" => metrics_listen = Some(e.value.parse().map_err(|_| bad("HOST:PORT"))?),
                "local_ip" => local_ip = Some(e.value.clone()),
                "local_port" => local_port = Some(e.value.parse().map_err(|_| bad("a port"))?),
                "threads" => threads = Some(e.value.parse().map_err(|_| bad("a number"))?),
                "certificate" => combined = Some(base.join(&e.value)),
                "tls_cert" => cert = Some(base.join(&e.value)),
                "tls_key" => key = Some(base.join(&e.value)),
                "sip_tls_ca_file" => sip_ca = (!e.value.is_empty()).then(|| base.join(&e.value)),
                "max_sip_tcp_connections_per_ip" => {
                    sip_per_ip = at_least_one(&e.value).ok_or_else(|| bad("a number >= 1"))?
                }
                "storage" => storage = Some(e.value.clone()),
                "data_dir" => data_dir = Some(base.join(&e.value)),
                "max_sip_tcp_connections" => sip_total = at_least_one(&e.value).ok_or_else(|| bad("a number >= 1"))?,
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
    if let Some(l) = args.sip_tls_listen {
        core.sip.tls_listen = Some(l);
    }
    if core.sip.tls_listen.is_some() && core.tls.is_none() {
        return Err("--sip-tls-listen needs a certificate and a key (--tls-cert and --tls-key)".into());
    }
    if let Some(a) = &args.sip_advertised_address {
        core.sip.advertised_address = Some(a.clone());
    }
    if let Some(p) = &args.outbound_proxy {
        sylkgw_core::sip::target::ProxySpec::parse(p).map_err(|e| format!("--outbound-proxy {p:?}: expected {e}"))?;
        core.sip.outbound_sip_proxy = Some(p.clone());
    }
    if core.sip.advertised_address.is_none() && core.sip.listen.ip().is_unspecified() {
        // Bound to every address: advertise the host's own (the first non-loopback one).
        let ip = host_address(core.sip.listen.is_ipv6());
        log::info!("SIP listens on {}; advertising {ip}", core.sip.listen);
        core.sip.advertised_address = Some(if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() });
    }
    apply_media_args(args, &mut core)?;
    let storage_text = args.storage.clone().or(storage);
    let data_dir = args.data_dir.clone().or(data_dir);
    let storage = StorageSettings {
        url: storage_text.as_deref().map(storage_url).transpose()?.flatten(),
        explicit: storage_text.is_some() || data_dir.is_some(),
        data_dir: data_dir.unwrap_or_else(default_data_dir),
    };
    Ok(Settings {
        listen: args.listen.or(listen).unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
        threads: args.threads.or(threads),
        capture: args.capture.clone(),
        stats_interval: args.stats_interval.filter(|&s| s > 0).map(Duration::from_secs),
        caps: Caps { web_per_ip: core.max_connections_per_ip, web_total: usize::MAX, sip_per_ip, sip_total },
        core,
        storage,
        metrics_listen: args.metrics_listen.or(metrics_listen),
    })
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
        core.media.rtp_ports = sylkgw_core::config::parse_port_range(r).map_err(|e| format!("--rtp-ports: {e}"))?;
    }
    if !args.media_address.is_empty() {
        let list = args.media_address.join(",");
        core.media.media_advertised_addresses =
            sylkgw_core::config::parse_media_addresses(&list).map_err(|e| format!("--media-address: {e}"))?;
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
        return Ok(read(default).ok().map(|pem| PemBundle(pem.into())));
    };
    let pem = read(&path)?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{}: no CERTIFICATE block (sip_tls_ca_file)", path.display()));
    }
    Ok(Some(PemBundle(pem.into())))
}

/// The default data directory: `/var/lib/sylkgw` for root; else `$XDG_DATA_HOME/sylkgw`, else
/// `$HOME/.local/share/sylkgw`; else `./sylkgw-data`.
pub fn default_data_dir() -> PathBuf {
    let root = std::os::unix::fs::MetadataExt::uid(&match std::fs::metadata("/proc/self") {
        Ok(m) => m,
        Err(_) => return user_data_dir(),
    }) == 0;
    if root {
        PathBuf::from("/var/lib/sylkgw")
    } else {
        user_data_dir()
    }
}

fn user_data_dir() -> PathBuf {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(xdg) = set("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return xdg.join("sylkgw");
    }
    match set("HOME") {
        Some(home) => home.join(".local/share/sylkgw"),
        None => PathBuf::from("sylkgw-data"),
    }
}

/// A count of at least 1.
fn at_least_one(value: &str) -> Option<usize> {
    value.parse().ok().filter(|&n| n >= 1)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
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
        assert_eq!(load(&args).unwrap().core.sip.tls_ca_pem.map(|p| p.0.to_vec()), Some(std::fs::read(&ca).unwrap()));
        let args = Args { sip_tls_ca_file: Some(dir.join("gw.ini")), ..Args::default() };
        assert!(load(&args).unwrap_err().contains("no CERTIFICATE"));
    }

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

    #[test]
    fn connection_caps() {
        let s = load(&Args::default()).unwrap();
        assert_eq!(
            s.caps,
            Caps { web_per_ip: 100, web_total: usize::MAX, sip_per_ip: DEFAULT_SIP_TCP_PER_IP, sip_total: 1000 }
        );
        let dir = std::env::temp_dir().join(format!("sylkgw-caps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("gw.ini");
        std::fs::write(
            &cfg,
            "max_connections_per_ip = 3\nmax_sip_tcp_connections_per_ip = 2\nmax_sip_tcp_connections = 5\n",
        )
        .unwrap();
        let caps = load(&Args { config: Some(cfg.clone()), ..Args::default() }).unwrap().caps;
        assert_eq!((caps.web_per_ip, caps.sip_per_ip, caps.sip_total), (3, 2, 5));
        std::fs::write(&cfg, "max_sip_tcp_connections = 0\n").unwrap();
        let e = load(&Args { config: Some(cfg), ..Args::default() }).unwrap_err();
        assert!(e.contains("max_sip_tcp_connections"), "{e}");
    }

    #[test]
    fn storage_options() {
        let s = load(&Args::default()).unwrap().storage;
        assert_eq!((s.url, s.explicit, s.data_dir), (None, false, default_data_dir()));
        let dir = std::env::temp_dir().join(format!("sylkgw-storage-opts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("gw.ini");
        std::fs::write(&cfg, "storage = postgresql://gw:secret@db.example/sylk\ndata_dir = data\n").unwrap();
        let s = load(&Args { config: Some(cfg.clone()), ..Args::default() }).unwrap().storage;
        assert_eq!(s.url.as_deref(), Some("postgresql://gw:secret@db.example/sylk"));
        assert_eq!((s.data_dir.clone(), s.explicit), (dir.join("data"), true), "relative to the config file");
        assert_eq!(s.describe(), "postgresql db.example/sylk", "no password in logs");
        let socket = StorageSettings { url: Some("postgresql://gw@/db?host=/run/pg&password=secret".into()), ..s };
        assert_eq!(socket.describe(), "postgresql /db?host=/run/pg");
        // The command line wins over the file.
        let args =
            Args { config: Some(cfg), storage: Some("sqlite".into()), data_dir: Some("/d".into()), ..Args::default() };
        let s = load(&args).unwrap().storage;
        assert_eq!((s.url.clone(), s.data_dir.clone(), s.explicit), (None, PathBuf::from("/d"), true));
        assert_eq!(s.describe(), "sqlite /d/sylkgw.sqlite3");
        let e = load(&Args { storage: Some("mysql://x".into()), ..Args::default() }).unwrap_err();
        assert!(e.contains("storage") && e.contains("mysql"), "{e}");
    }

    #[test]
    fn stats_interval() {
        let args = Args { stats_interval: Some(5), ..Args::default() };
        assert_eq!(load(&args).unwrap().stats_interval, Some(Duration::from_secs(5)));
    }
}
