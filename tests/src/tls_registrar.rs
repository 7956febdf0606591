//! A small SIP registrar over TLS for end-to-end tests: rustls' server side over std TCP
//! streams, one thread per connection, with a certificate rcgen makes for `sip.test` and
//! 127.0.0.1.
//!
//! It challenges every REGISTER without valid credentials with a 401 (Digest, MD5, realm
//! `sip.test`, `qop="auth"`), checks the answer against its users (user → password), answers a
//! valid REGISTER with 200 echoing the Contact with `;expires=600` (or, for `Expires: 0`, with
//! no binding), answers anything else with 405, and records everything it received, per TLS
//! connection and with the SNI the client sent, plus the TLS errors of failed connections.
//!
//! Use it inside a private network namespace ([`crate::netns::in_netns`]) when it listens on a
//! fixed port. Dropping it stops its threads.

use crate::peers::{digest_params, unique, SipMessage};
use crate::TempDir;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use sylkgw_core::sip::digest::Algorithm;

/// The realm of the challenges.
pub const REALM: &str = "sip.test";

/// One SIP message the registrar read.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which TLS connection, numbered from 0 in accept order.
    pub connection: usize,
    /// The server name the client sent (SNI); `None` when it sent none (as for an IP address).
    pub sni: Option<String>,
    /// The message.
    pub message: SipMessage,
    /// The status the registrar answered with.
    pub answered: u16,
}

impl Received {
    /// `Expires: 0` (or a Contact with `expires=0`): an un-REGISTER.
    pub fn is_unregister(&self) -> bool {
        self.message.header("Expires").is_some_and(|e| e.trim() == "0")
            || self.message.header("Contact").is_some_and(|c| c.replace(' ', "").contains(";expires=0"))
    }
}

#[derive(Debug, Default)]
struct Log {
    received: Vec<Received>,
    tls_errors: Vec<String>,
    connections: usize,
}

/// A running registrar.
pub struct TlsRegistrar {
    addr: SocketAddr,
    dir: TempDir,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl TlsRegistrar {
    /// Listens on `addr` with user `alice`, password `secret`.
    pub fn start(addr: SocketAddr) -> Self {
        Self::start_with_users(addr, &[("alice", "secret")])
    }

    /// Listens on `addr` with these `(user, password)` accounts.
    pub fn start_with_users(addr: SocketAddr, users: &[(&str, &str)]) -> Self {
        let ck = rcgen::generate_simple_self_signed(vec![REALM.to_string(), addr.ip().to_string()])
            .expect("rcgen certificate");
        let dir = TempDir::new("tls-registrar");
        dir.write("cert.pem", ck.cert.pem());
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).expect("private key");
        let cert: CertificateDer<'static> = ck.cert.der().clone();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server certificate");
        let config = Arc::new(config);
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("TLS registrar: binding {addr}: {e}"));
        let addr = listener.local_addr().expect("local_addr");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let users: Vec<(String, String)> = users.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect();
        let accept = {
            let (log, stop, threads) = (Arc::clone(&log), Arc::clone(&stop), Arc::clone(&threads));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((tcp, _)) => {
                            let index = {
                                let mut l = lock(&log);
                                l.connections += 1;
                                l.connections - 1
                            };
                            let session = Session {
                                index,
                                config: Arc::clone(&config),
                                log: Arc::clone(&log),
                                stop: Arc::clone(&stop),
                                users: users.clone(),
                            };
                            let handle = std::thread::spawn(move || session.run(tcp));
                            lock(&threads).push(handle);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Self { addr, dir, log, stop, threads, accept: Some(accept) }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its certificate (self-signed, so also the CA to trust), as a PEM file.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.log).received.clone()
    }

    /// The errors of TLS sessions that failed (handshake, certificate alerts).
    pub fn tls_errors(&self) -> Vec<String> {
        lock(&self.log).tls_errors.clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.log).connections
    }

    /// Waits up to `timeout` for a received message that satisfies `pred`; panics with what
    /// was received otherwise.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.received().into_iter().find(&pred) {
                return r;
            }
            if Instant::now() >= deadline {
                panic!("TLS registrar: no {what} within {timeout:?}; received: {:#?}", self.received());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for a TLS error; panics otherwise.
    pub fn wait_tls_error(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.tls_errors().into_iter().next() {
                return e;
            }
            if Instant::now() >= deadline {
                panic!("TLS registrar: no TLS error within {timeout:?}; received: {:#?}", self.received());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TlsRegistrar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        let handles = std::mem::take(&mut *lock(&self.threads));
        for h in handles {
            let _ = h.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One TLS connection.
struct Session {
    index: usize,
    config: Arc<rustls::ServerConfig>,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    users: Vec<(String, String)>,
}

impl Session {
    fn run(self, tcp: TcpStream) {
        let _ = tcp.set_nonblocking(false);
        let _ = tcp.set_read_timeout(Some(Duration::from_millis(50)));
        let _ = tcp.set_write_timeout(Some(Duration::from_secs(5)));
        let conn = match rustls::ServerConnection::new(Arc::clone(&self.config)) {
            Ok(c) => c,
            Err(e) => {
                lock(&self.log).tls_errors.push(e.to_string());
                return;
            }
        };
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        while !self.stop.load(Ordering::Relaxed) {
            match tls.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) => {
                    // rustls reports what went wrong (e.g. the client's alert) as InvalidData.
                    if tls.conn.is_handshaking() || e.kind() == io::ErrorKind::InvalidData {
                        lock(&self.log).tls_errors.push(e.to_string());
                    }
                    return;
                }
            }
            while let Some(message) = next_message(&mut buf) {
                let sni = tls.conn.server_name().map(String::from);
                let (answered, response) = answer(&self.users, &message);
                // Recorded before answering: whoever hears the answer finds the request here.
                lock(&self.log).received.push(Received { connection: self.index, sni, message, answered });
                if let Some(r) = &response {
                    if tls.write_all(r.as_bytes()).and_then(|()| tls.flush()).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The registrar's answer to `m`, a message from a client (none for a response): its status
/// and text. `users` maps user to password.
pub fn answer(users: &[(String, String)], m: &SipMessage) -> (u16, Option<String>) {
    if m.status().is_some() {
        return (0, None);
    }
    if !m.start_line().starts_with("REGISTER ") {
        return (405, Some(response(m, 405, "Method Not Allowed", &["Allow: REGISTER"])));
    }
    if !authorized(users, m) {
        let challenge = format!(
            "WWW-Authenticate: Digest realm=\"{REALM}\", nonce=\"{}\", qop=\"auth\", algorithm=MD5",
            unique("nonce")
        );
        return (401, Some(response(m, 401, "Unauthorized", &[&challenge])));
    }
    let unregister = m.header("Expires").is_some_and(|e| e.trim() == "0");
    let contact = m.header("Contact").and_then(|c| {
        let (start, end) = (c.find('<')?, c.find('>')?);
        Some(c[start..=end].to_string())
    });
    match (unregister, contact) {
        (false, Some(uri)) => (200, Some(response(m, 200, "OK", &[&format!("Contact: {uri};expires=600")]))),
        _ => (200, Some(response(m, 200, "OK", &[]))),
    }
}

/// Whether `m` carries a valid Digest answer (RFC 2617, MD5, `qop=auth`) for one of `users`
/// (user → password).
pub fn authorized(users: &[(String, String)], m: &SipMessage) -> bool {
    let Some(value) = m.header("Authorization") else { return false };
    let p = digest_params(value);
    let get = |k: &str| p.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).unwrap_or_default();
    let Some((_, password)) = users.iter().find(|(u, _)| u == get("username")) else { return false };
    if get("realm") != REALM || get("qop") != "auth" || !matches!(get("algorithm"), "" | "MD5" | "md5") {
        return false;
    }
    let md5 = |s: String| Algorithm::Md5.hash_hex(s.as_bytes());
    let ha1 = md5(format!("{}:{REALM}:{password}", get("username")));
    let ha2 = md5(format!("REGISTER:{}", get("uri")));
    let expected = md5(format!("{ha1}:{}:{}:{}:auth:{ha2}", get("nonce"), get("nc"), get("cnonce")));
    get("response") == expected
}

/// The next complete message in `buf` (Content-Length framing; CRLF keep-alives skipped).
pub fn next_message(buf: &mut Vec<u8>) -> Option<SipMessage> {
    let lead = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    buf.drain(..lead);
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length") || n.trim().eq_ignore_ascii_case("l"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if buf.len() < head_end + length {
        return None;
    }
    let bytes: Vec<u8> = buf.drain(..head_end + length).collect();
    Some(SipMessage { text: String::from_utf8_lossy(&bytes).into_owned() })
}

/// A response to `req` copying Via, From, To (with a tag), Call-ID and CSeq.
fn response(req: &SipMessage, code: u16, reason: &str, extra: &[&str]) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for via in req.headers("Via") {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    for name in ["From", "Call-ID", "CSeq"] {
        if let Some(v) = req.header(name) {
            out.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    if let Some(to) = req.header("To") {
        let tag = if to.contains(";tag=") { String::new() } else { ";tag=tlsreg".to_string() };
        out.push_str(&format!("To: {to}{tag}\r\n"));
    }
    for h in extra {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Server: sylkgw-tests TLS registrar\r\nContent-Length: 0\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_skips_keepalives_and_waits_for_the_body() {
        let mut buf = b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nab".to_vec();
        assert!(next_message(&mut buf).is_none());
        buf.extend_from_slice(b"cREG");
        let m = next_message(&mut buf).unwrap();
        assert!(m.text.ends_with("\r\n\r\nabc"));
        assert_eq!(buf, b"REG");
    }

    #[test]
    fn digest_check() {
        use sylkgw_core::sip::digest::{authorize, Answer, Challenge, Secret};
        let users = vec![("alice".to_string(), "secret".to_string())];
        let challenge =
            Challenge::parse("Digest realm=\"sip.test\", nonce=\"n1\", qop=\"auth\", algorithm=MD5").unwrap();
        let answer = Answer { username: "alice", method: "REGISTER", uri: "sip:sip.test", cnonce: "c1", nc: 1 };
        let req = |auth: &str| SipMessage {
            text: format!("REGISTER sip:sip.test SIP/2.0\r\nAuthorization: {auth}\r\nContent-Length: 0\r\n\r\n"),
        };
        // The answer the core computes from the HA1 passes; another nonce or password does not.
        let ha1 = Algorithm::Md5.hash_hex(b"alice:sip.test:secret");
        let value = authorize(&challenge, Secret::from_sylkrtc(&ha1), &answer).unwrap();
        assert!(authorized(&users, &req(&value)));
        assert!(!authorized(&users, &req(&value.replace("nonce=\"n1\"", "nonce=\"n2\""))));
        let wrong = Algorithm::Md5.hash_hex(b"alice:sip.test:wrong");
        let value = authorize(&challenge, Secret::from_sylkrtc(&wrong), &answer).unwrap();
        assert!(!authorized(&users, &req(&value)));
        assert!(!authorized(&users, &req("Digest username=\"alice\"")));
    }
}
