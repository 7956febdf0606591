//! sylkgw's test harness: start a gateway binary on a free port of 127.0.0.1, talk to it over
//! real sockets (tungstenite over TCP or rustls, raw HTTP, a raw WebSocket client that answers
//! only what it is told to), stop it with SIGTERM.
//!
//! Every blocking read here has a deadline, so a misbehaving gateway makes a test fail, never
//! hang.

pub mod audio;
pub mod bench;
pub mod browser;
pub mod call_load;
pub mod churn;
pub mod cpu_control;
pub mod gateway_sim;
pub mod janus;
pub mod netns;
pub mod peers;
pub mod sip_text;
pub mod sylkrtc1_client;
pub mod tls_registrar;
pub mod webrtc_client;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Response;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// The WebSocket path.
pub const WS_PATH: &str = "/webrtcgateway/ws";

/// How long a single expected reply may take before a test fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a server may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

// ===== Locating binaries =====

/// The directory holding the gateway binaries: `$SYLKGW_BIN_DIR`, else two levels above the
/// running executable (`target/debug/deps/x` → `target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SYLKGW_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("the test executable lives in target/PROFILE/deps").to_path_buf()
}

/// The path of binary `name` in [`bin_dir`]; panics with a hint when it is not built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!("{} is missing: build the binaries first: cargo build --workspace", path.display());
    }
    path
}

// ===== Temporary directories =====

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh, empty directory whose name contains `tag`.
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let path = std::env::temp_dir().join(format!("sylkgw-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ===== The server process =====

/// A running gateway process. Dropping it kills the process (by its PID) if it still runs;
/// when the current thread is panicking, the server's stderr is printed for diagnosis.
pub struct Server {
    child: Child,
    /// The bound address from the listening line.
    pub addr: SocketAddr,
    /// Whether it serves wss.
    pub tls: bool,
    /// Binary and arguments, for messages.
    pub command: String,
    log: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
    /// The data directory the harness gave it (removed with the server).
    _data_dir: Option<TempDir>,
}

impl Server {
    /// Starts `binary` with `--listen 127.0.0.1:0` (and `--sip-listen 127.0.0.1:0`,
    /// `--webrtc-listen 127.0.0.1:0` unless `extra_args` has them) and `extra_args`, and waits for its
    /// `listening on ws(s)://ADDR/webrtcgateway/ws` line.
    pub fn start<S: AsRef<OsStr>>(binary: impl AsRef<Path>, extra_args: &[S]) -> Self {
        let binary = binary.as_ref();
        let mut cmd = Command::new(binary);
        cmd.arg("--listen").arg("127.0.0.1:0");
        // Unless the test chooses, SIP takes any free loopback port: parallel tests never clash.
        if !extra_args.iter().any(|a| a.as_ref() == "--sip-listen") {
            cmd.arg("--sip-listen").arg("127.0.0.1:0");
        }
        if !extra_args.iter().any(|a| a.as_ref() == "--webrtc-listen") {
            cmd.arg("--webrtc-listen").arg("127.0.0.1:0");
        }
        // Its own data directory (the message store), never the machine's default
        // (/var/lib/sylkgw for root), so tests neither share nor leave a store behind.
        let data_dir = (!extra_args.iter().any(|a| a.as_ref() == "--data-dir")).then(|| TempDir::new("gw-data"));
        if let Some(dir) = &data_dir {
            cmd.arg("--data-dir").arg(dir.path());
        }
        cmd.args(extra_args);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let command = format!(
            "{} --listen 127.0.0.1:0 {}",
            binary.display(),
            extra_args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
        );
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {command}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(found) = parse_listening(&line) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(found);
                        }
                    }
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let mut server = Self {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            tls: false,
            command,
            log,
            status: None,
            _data_dir: data_dir,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok((tls, addr)) => {
                server.tls = tls;
                server.addr = addr;
                server
            }
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                let _ = server.child.kill();
                let _ = server.child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} did not print `listening on ws://ADDR{WS_PATH}` within {START_TIMEOUT:?} (exit status: {status:?}); stderr:\n{}",
                    server.command,
                    server.stderr_text()
                );
            }
        }
    }

    /// How many stderr lines were read so far.
    pub fn stderr_line_count(&self) -> usize {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The stderr lines from index `from` on (a reader that keeps its place reads a long log
    /// once, not over and over).
    pub fn stderr_lines_since(&self, from: usize) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.get(from..).map(<[String]>::to_vec).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        format!("{}://{}{WS_PATH}", if self.tls { "wss" } else { "ws" }, self.addr)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        send_signal(self.pid(), libc::SIGTERM);
    }

    /// Waits up to `timeout` for the process to exit and returns its exit code (`None` when a
    /// signal ended it). Panics with the server's stderr on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.status {
                return status.code();
            }
            match self.child.try_wait() {
                Ok(Some(status)) => self.status = Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    panic!("{} did not exit within {timeout:?}; stderr:\n{}", self.command, self.stderr_text())
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("waiting for {}: {e}", self.command),
            }
        }
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.status.is_none() && matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.status.is_none() {
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            // Give the reader thread a moment to collect the last lines.
            std::thread::sleep(Duration::from_millis(50));
            eprintln!("---- stderr of {} ----\n{}\n---- end ----", self.command, self.stderr_text());
        }
    }
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: u32, signal: i32) {
    let pid = i32::try_from(pid).expect("pid fits i32");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}): {}", io::Error::last_os_error());
}

/// `(tls, addr)` from a line containing `listening on ws://ADDR/webrtcgateway/ws`.
pub fn parse_listening(line: &str) -> Option<(bool, SocketAddr)> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let (tls, rest) =
        if let Some(r) = rest.strip_prefix("wss://") { (true, r) } else { (false, rest.strip_prefix("ws://")?) };
    let addr = &rest[..rest.find(WS_PATH)?];
    Some((tls, addr.parse().ok()?))
}

// ===== Configuration =====

/// A config file in a fresh temp dir. Keep the returned dir alive while the server runs.
pub fn config_file(ini: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new("cfg");
    let path = dir.write("sylkgw.ini", ini);
    (dir, path)
}

// ===== TLS =====

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files.
pub struct SelfSigned {
    /// Where the files are.
    pub dir: TempDir,
    /// PEM certificate.
    pub cert_path: PathBuf,
    /// PEM private key.
    pub key_path: PathBuf,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
}

impl SelfSigned {
    /// Generates a fresh certificate and key.
    pub fn generate() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("rcgen self-signed certificate");
        let dir = TempDir::new("tls");
        let cert_path = dir.write("cert.pem", ck.cert.pem());
        let key_path = dir.write("key.pem", ck.signing_key.serialize_pem());
        Self { dir, cert_path, key_path, cert_der: ck.cert.der().clone() }
    }

    /// `--tls-cert CERT --tls-key KEY`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert_path.display().to_string(),
            "--tls-key".into(),
            self.key_path.display().to_string(),
        ]
    }

    /// A client configuration that trusts exactly this certificate.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = ExactCert { cert: self.cert_der.clone(), provider: Arc::clone(&provider) };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// Trusts one certificate, byte for byte, and checks handshake signatures with its key.
#[derive(Debug)]
struct ExactCert {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ExactCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() && intermediates.is_empty() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

// ===== A tungstenite client =====

/// TCP, or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// ws.
    Plain(TcpStream),
    /// wss.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

/// What to send in the upgrade request.
#[derive(Debug, Default, Clone)]
pub struct Offer<'a> {
    /// `Sec-WebSocket-Protocol` value, if any.
    pub protocols: Option<&'a str>,
    /// `Origin` value, if any.
    pub origin: Option<&'a str>,
    /// The TLS client configuration for wss.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl<'a> Offer<'a> {
    /// Offers `protocols`.
    pub fn protocols(protocols: &'a str) -> Self {
        Self { protocols: Some(protocols), ..Self::default() }
    }
}

/// A connected WebSocket client.
pub struct WsClient {
    /// The socket.
    pub ws: WebSocket<Stream>,
    /// The server's `101` response.
    pub response: Response,
}

/// Whether an error is a read timeout.
fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

impl WsClient {
    /// Opens a WebSocket to `server` with `offer`. Handshake failures are returned.
    pub fn connect(server: &Server, offer: Offer<'_>) -> Result<Self, tungstenite::Error> {
        let tcp = TcpStream::connect_timeout(&server.addr, REPLY_TIMEOUT)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(REPLY_TIMEOUT))?;
        tcp.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let stream = match (&offer.tls, server.tls) {
            (Some(cfg), true) => {
                let name = ServerName::try_from("127.0.0.1").expect("IP server name");
                let conn = rustls::ClientConnection::new(Arc::clone(cfg), name)
                    .map_err(|e| tungstenite::Error::Io(io::Error::other(e)))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
            (None, false) => Stream::Plain(tcp),
            (None, true) => panic!("the server serves wss: give Offer::tls"),
            (Some(_), false) => panic!("the server serves plain ws, but a TLS config was given"),
        };
        let mut request = server.url().into_client_request()?;
        if let Some(p) = offer.protocols {
            request.headers_mut().insert("Sec-WebSocket-Protocol", p.parse().expect("header value"));
        }
        if let Some(o) = offer.origin {
            request.headers_mut().insert("Origin", o.parse().expect("header value"));
        }
        match tungstenite::client::client_with_config(request, stream, None) {
            Ok((ws, response)) => Ok(Self { ws, response }),
            Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
            Err(tungstenite::HandshakeError::Interrupted(_)) => {
                Err(tungstenite::Error::Io(io::Error::new(io::ErrorKind::TimedOut, "handshake timed out")))
            }
        }
    }

    /// Connects offering `sylkRTC-2` and checks the ready event.
    pub fn ready(server: &Server) -> Self {
        let mut c = Self::connect(server, Offer::protocols("sylkRTC-2"))
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", server.url()));
        assert_eq!(c.recv_text(), r#"{"sylkrtc":"ready-event"}"#);
        c
    }

    /// The negotiated `Sec-WebSocket-Protocol`.
    pub fn protocol(&self) -> Option<&str> {
        self.response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok())
    }

    /// Sets the read timeout of the socket.
    pub fn set_read_timeout(&self, t: Duration) {
        self.ws.get_ref().tcp().set_read_timeout(Some(t)).expect("set_read_timeout");
    }

    /// The next message before `deadline`: `Ok(None)` when the deadline passed first.
    pub fn next_before(&mut self, deadline: Instant) -> Result<Option<Message>, tungstenite::Error> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.set_read_timeout(left.max(Duration::from_millis(1)));
            match self.ws.read() {
                Ok(m) => return Ok(Some(m)),
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next text message, skipping WebSocket pings and pongs (pings are answered by
    /// tungstenite). Panics on anything else or after [`REPLY_TIMEOUT`].
    pub fn recv_text(&mut self) -> String {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            match self.next_before(deadline) {
                Ok(Some(Message::Text(t))) => return t.as_str().to_string(),
                Ok(Some(Message::Ping(_) | Message::Pong(_))) => continue,
                Ok(Some(other)) => panic!("expected a text message, got {other:?}"),
                Ok(None) => panic!("no text message within {REPLY_TIMEOUT:?}"),
                Err(e) => panic!("expected a text message, got error {e}"),
            }
        }
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap_or_else(|e| panic!("sending {text:?}: {e}"));
    }

    /// Sends `text` and returns the next text message.
    pub fn request(&mut self, text: &str) -> String {
        self.send_text(text);
        self.recv_text()
    }

    /// Waits for a Close frame and returns its code and reason (`None` for a close without a
    /// code), then keeps reading so tungstenite flushes its close reply, until the server
    /// closes the TCP connection. Text messages before the close are returned too.
    pub fn expect_close(&mut self) -> (Option<(u16, String)>, Vec<String>) {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut texts = Vec::new();
        let close = loop {
            match self.next_before(deadline) {
                Ok(Some(Message::Close(frame))) => {
                    break frame.map(|f| (u16::from(f.code), f.reason.as_str().to_string()))
                }
                Ok(Some(Message::Text(t))) => texts.push(t.as_str().to_string()),
                Ok(Some(_)) => continue,
                Ok(None) => panic!("no close frame within {REPLY_TIMEOUT:?} (texts: {texts:?})"),
                Err(e) => panic!("expected a close frame, got error {e} (texts: {texts:?})"),
            }
        };
        // Flush the close reply and wait for the server to finish.
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while let Ok(Some(_)) = self.next_before(deadline) {}
        (close, texts)
    }

    /// Closes from our side (1000) and waits for the server's reply close.
    pub fn close(mut self) {
        let _ = self.ws.close(Some(tungstenite::protocol::CloseFrame { code: CloseCode::Normal, reason: "".into() }));
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while let Ok(Some(_)) = self.next_before(deadline) {}
    }
}

/// A TLS client configuration for [`Offer::tls`].
pub fn tls_offer<'a>(cert: &SelfSigned, protocols: &'a str) -> Offer<'a> {
    Offer { protocols: Some(protocols), origin: None, tls: Some(cert.client_config()) }
}

// ===== Raw HTTP =====

/// An HTTP response read off a raw socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// `HTTP/1.1 404 Not Found`.
    pub status_line: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The body (per `Content-Length`, else up to EOF).
    pub body: String,
}

impl HttpResponse {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An upgrade request for `path` with `extra` header lines (each ending in `\r\n`).
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// Sends `request` as is and reads the response (the server is expected to answer and, for a
/// rejection, close).
pub fn http_request(addr: SocketAddr, request: &str) -> HttpResponse {
    let mut s = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
    s.write_all(request.as_bytes()).expect("write request");
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut head_end = None;
    loop {
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = head
                .lines()
                .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-length")))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok());
            if len.is_some_and(|len| buf.len() >= end + 4 + len) {
                break;
            }
        }
        if Instant::now() >= deadline {
            panic!("no complete HTTP response within {REPLY_TIMEOUT:?}; got {:?}", String::from_utf8_lossy(&buf));
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the HTTP response: {e}; got {:?}", String::from_utf8_lossy(&buf)),
        }
        if head_end.is_none() {
            head_end = find(&buf, b"\r\n\r\n");
        }
    }
    let end = head_end.unwrap_or_else(|| panic!("no HTTP response head in {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    let mut body = buf[end + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    HttpResponse { status_line, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ===== A raw WebSocket client =====

/// A WebSocket frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// Opcode (1 text, 2 binary, 8 close, 9 ping, 10 pong).
    pub opcode: u8,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Opcodes.
pub mod opcode {
    /// Text.
    pub const TEXT: u8 = 1;
    /// Binary.
    pub const BINARY: u8 = 2;
    /// Close.
    pub const CLOSE: u8 = 8;
    /// Ping.
    pub const PING: u8 = 9;
    /// Pong.
    pub const PONG: u8 = 10;
}

/// A minimal blocking WebSocket client over a bare `TcpStream`: it answers nothing on its own
/// and keeps only a small buffer, so thousands of them are cheap.
#[derive(Debug)]
pub struct RawWs {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Connects to `addr`, sends an upgrade offering `protocol` and checks the `101`. Returns
    /// the client and the response head.
    pub fn connect(addr: SocketAddr, protocol: &str) -> io::Result<(Self, String)> {
        let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let mut ws = Self { stream, buf: Vec::new() };
        let request = upgrade_request(WS_PATH, &format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
        ws.stream.write_all(request.as_bytes())?;
        let end = loop {
            if let Some(end) = find(&ws.buf, b"\r\n\r\n") {
                break end;
            }
            if ws.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the handshake"));
            }
        };
        let head = String::from_utf8_lossy(&ws.buf[..end]).into_owned();
        ws.buf.drain(..end + 4);
        ws.buf.shrink_to_fit();
        if !head.starts_with("HTTP/1.1 101 ") {
            return Err(io::Error::other(format!("upgrade refused: {head}")));
        }
        Ok((ws, head))
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 2048];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Sends one masked frame.
    pub fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = Vec::with_capacity(payload.len() + 14);
        f.push(0x80 | opcode);
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
        self.stream.write_all(&f)
    }

    /// Sends a text frame.
    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send_frame(opcode::TEXT, text.as_bytes())
    }

    /// Reads one frame (blocking up to the socket's read timeout per read). `Ok(None)` when the
    /// server closed the TCP connection.
    pub fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                if self.buf.capacity() > 4096 {
                    self.buf.shrink_to_fit();
                }
                return Ok(Some(frame));
            }
            match self.fill() {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next text message; WebSocket pings are answered with pongs. Panics on a close.
    pub fn recv_text(&mut self) -> io::Result<String> {
        loop {
            let frame = self
                .read_frame()?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"))?;
            match frame.opcode {
                opcode::TEXT => return String::from_utf8(frame.payload).map_err(io::Error::other),
                opcode::PING => self.send_frame(opcode::PONG, &frame.payload)?,
                opcode::PONG => {}
                other => return Err(io::Error::other(format!("unexpected frame {other}: {frame:?}"))),
            }
        }
    }
}

/// Parses one unmasked (server) frame at the start of `buf`: the frame and the bytes it used.
pub fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let (&b0, rest) = buf.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    let masked = b1 & 0x80 != 0;
    let (len, mut used) = match b1 & 0x7f {
        126 => (u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(used..used + 4)?.try_into().ok()?;
        used += 4;
        Some(m)
    } else {
        None
    };
    let mut payload = buf.get(used..used + len)?.to_vec();
    if let Some(m) = mask {
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= m[i % 4]);
    }
    Some((Frame { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, payload }, used + len))
}

/// The close code of a close frame's payload.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(payload.get(..2)?.try_into().ok()?))
}

// ===== Process memory =====

/// `VmRSS` of process `pid` in KiB.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// ===== sylkRTC helpers shared by the end-to-end tests =====

/// `md5("user:realm:password")` in hex: the HA1 a sylkRTC client sends as `password`.
pub fn ha1(user: &str, realm: &str, password: &str) -> String {
    sylkgw_core::sip::digest::Algorithm::Md5.hash_hex(format!("{user}:{realm}:{password}").as_bytes())
}

impl WsClient {
    /// Reads until a `registration-state` event arrives (40 s at most); returns
    /// `(state, reason)`.
    pub fn next_registration_state(&mut self) -> (String, Option<String>) {
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            let text = self.recv_text();
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON event");
            if v["event"] == "registration-state" {
                return (v["state"].as_str().unwrap_or_default().to_string(), v["reason"].as_str().map(String::from));
            }
        }
        panic!("no registration-state event within 40 s");
    }

    /// `account-add` then `account-register`, both acked, then the `registering` event.
    pub fn add_and_register(&mut self, account: &str, password: &str) {
        let add =
            format!(r#"{{"sylkrtc":"account-add","transaction":"a","account":"{account}","password":"{password}"}}"#);
        assert_eq!(self.request(&add), r#"{"sylkrtc":"ack","transaction":"a"}"#);
        let reg = format!(r#"{{"sylkrtc":"account-register","transaction":"r","account":"{account}"}}"#);
        assert_eq!(self.request(&reg), r#"{"sylkrtc":"ack","transaction":"r"}"#);
        assert_eq!(self.next_registration_state(), ("registering".into(), None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line() {
        let l = "[2026-01-01T00:00:00.000Z INFO  sylkgw] listening on ws://127.0.0.1:4321/webrtcgateway/ws";
        assert_eq!(parse_listening(l), Some((false, "127.0.0.1:4321".parse().unwrap())));
        let l = "listening on wss://[::1]:99/webrtcgateway/ws (2 workers)";
        assert_eq!(parse_listening(l), Some((true, "[::1]:99".parse().unwrap())));
        assert_eq!(parse_listening("starting"), None);
    }

    #[test]
    fn frames() {
        assert_eq!(parse_frame(&[0x81, 2, b'h']), None);
        let (f, used) = parse_frame(&[0x81, 2, b'h', b'i', 0]).unwrap();
        assert_eq!((f.opcode, f.payload.as_slice(), used), (opcode::TEXT, &b"hi"[..], 4));
        let mut long = vec![0x82, 126, 1, 0];
        long.extend(vec![7u8; 256]);
        assert_eq!(parse_frame(&long).unwrap().0.payload.len(), 256);
        assert_eq!(close_code(&[0x03, 0xe9]), Some(1001));
    }
}
