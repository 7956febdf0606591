//! Reverse proxies in front of the gateway, terminating TLS with a certificate made by the test:
//! HAProxy (`send-proxy-v2`) and nginx (`X-Forwarded-For`). With `trusted_proxies` naming the
//! proxy, 101 browsers from 101 addresses all get in (the proxy's own address would have hit
//! `max_connections_per_ip` long before), the cap holds per browser address, and the gateway
//! logs the browser's address. From a peer not trusted, a PROXY header closes the connection
//! and `X-Forwarded-For` is ignored. Every test runs in its own network namespace (browsers
//! bind 127.0.0.2 and up), and stops the proxy by its PID.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::{binary, config_file, SelfSigned, Server, Stream, TempDir, WsClient, REPLY_TIMEOUT};
use tungstenite::client::IntoClientRequest;

/// Browsers through the proxy, each from its own address.
const BROWSERS: u8 = 101;
/// The gateway's `max_connections_per_ip` in these tests.
const CAP: usize = 2;
/// Where the proxy listens (TLS).
const PROXY: &str = "127.0.0.1:8443";

/// The gateway `bin`, trusting 127.0.0.1 (where the proxy connects from), at most [`CAP`]
/// connections per IP. Keep the returned dir alive while it runs.
fn gateway(bin: &str) -> (Server, TempDir) {
    let (dir, cfg) = config_file(&format!("trusted_proxies = 127.0.0.1\nmax_connections_per_ip = {CAP}\n"));
    let cfg = cfg.display().to_string();
    let mut args = vec!["--config", cfg.as_str()];
    if bin == "sylkgw" {
        args.extend(["--threads", "2"]);
    }
    (Server::start(binary(bin), &args), dir)
}

/// A TCP connection from `src` to `to` (the source address bound first).
fn tcp_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else { panic!("IPv4 only") };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns; the addresses live on the
    // stack for the duration of each call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(src, 0);
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(*to.ip(), to.port());
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        Ok(stream)
    }
}

/// A browser at `src` opening wss://PROXY/webrtcgateway/ws; `Ok` once the ready event came.
fn browser(src: Ipv4Addr, cert: &SelfSigned) -> Result<WsClient, String> {
    let tcp = tcp_from(src, PROXY.parse().expect("address")).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("IP server name");
    let conn = rustls::ClientConnection::new(cert.client_config(), name).map_err(|e| e.to_string())?;
    let stream = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
    let mut request = format!("wss://{PROXY}/webrtcgateway/ws").into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", "sylkRTC-2".parse().expect("header value"));
    let (ws, response) = tungstenite::client::client_with_config(request, stream, None).map_err(|e| e.to_string())?;
    let mut c = WsClient { ws, response };
    let ready = c.recv_text();
    assert_eq!(ready, r#"{"sylkrtc":"ready-event"}"#);
    Ok(c)
}

/// Waits until the gateway's log has `needle` (its stderr is read by another thread).
fn wait_log(gw: &Server, needle: &str) {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while !gw.stderr_text().contains(needle) {
        assert!(Instant::now() < deadline, "`{needle}` not in the gateway log:\n{}", gw.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A proxy process, killed by its PID on drop.
struct Proxy {
    child: Child,
    dir: TempDir,
    name: &'static str,
}

impl Proxy {
    /// HAProxy terminating TLS on [`PROXY`], passing connections to `gw` with a PROXY v2 header.
    fn haproxy(gw: SocketAddr, cert: &SelfSigned) -> Self {
        let dir = TempDir::new("haproxy");
        let pem = [std::fs::read(&cert.cert_path).expect("cert"), std::fs::read(&cert.key_path).expect("key")].concat();
        let combined = dir.write("combined.pem", pem);
        let cfg = dir.write(
            "haproxy.cfg",
            format!(
                "global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  \
                 timeout server 60s\nfrontend wss\n  bind {PROXY} ssl crt {}\n  default_backend gw\nbackend gw\n  \
                 server gw {gw} send-proxy-v2\n",
                combined.display()
            ),
        );
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("log");
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("haproxy (Debian package `haproxy`)");
        Self { child, dir, name: "haproxy" }.ready()
    }

    /// nginx terminating TLS on [`PROXY`], passing WebSocket upgrades to `gw` with
    /// `X-Forwarded-For`. One process (`master_process off`), so the PID held is all of it.
    fn nginx(gw: SocketAddr, cert: &SelfSigned) -> Self {
        let dir = TempDir::new("nginx");
        let d = dir.path().display().to_string();
        let cfg = dir.write(
            "nginx.conf",
            format!(
                "daemon off;\nmaster_process off;\nuser root root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/proxy.log info;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
                 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
                 server {{\n    listen {PROXY} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
                 location / {{\n      proxy_pass http://{gw};\n      proxy_http_version 1.1;\n      \
                 proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n      \
                 proxy_set_header Host $host;\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      \
                 proxy_read_timeout 300s;\n    }}\n  }}\n}}\n",
                cert.cert_path.display(),
                cert.key_path.display()
            ),
        );
        let child = Command::new("nginx")
            .args(["-e", &format!("{d}/proxy.log"), "-p", &d, "-c"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian package `nginx-light`)");
        Self { child, dir, name: "nginx" }.ready()
    }

    /// Waits until the proxy accepts connections.
    fn ready(mut self) -> Self {
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(PROXY).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            assert!(Instant::now() < deadline, "{} does not listen on {PROXY}:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`BROWSERS`] browsers from as many addresses through `proxy`, all in; a [`CAP`]+1-th from
/// one address is refused; the gateway logs the browsers' addresses.
fn through(bin: &str, proxy: fn(SocketAddr, &SelfSigned) -> Proxy) {
    let cert = SelfSigned::generate();
    let (gw, _cfg) = gateway(bin);
    let proxy = proxy(gw.addr, &cert);
    let addr = |i: u8| Ipv4Addr::new(127, 0, 0, 2 + i);
    let mut open = Vec::new();
    for i in 0..BROWSERS {
        match browser(addr(i), &cert) {
            Ok(c) => open.push(c),
            Err(e) => panic!(
                "browser {i} from {} refused: {e}\n{} log:\n{}\ngateway log:\n{}",
                addr(i),
                proxy.name,
                proxy.log(),
                gw.stderr_text()
            ),
        }
    }
    // The cap holds per browser address: one more from 127.0.0.2 fits, the next does not.
    open.push(browser(addr(0), &cert).expect("a second connection from one browser"));
    assert!(browser(addr(0), &cert).is_err(), "over max_connections_per_ip from one browser address");
    for i in [0, 50, BROWSERS - 1] {
        wait_log(&gw, &format!("WebSocket from {}:", addr(i)));
    }
    wait_log(&gw, &format!("{CAP} connections from {} ", addr(0)));
    let log = gw.stderr_text();
    assert!(!log.contains("WebSocket from 127.0.0.1:"), "the proxy's address logged:\n{log}");
    for c in open {
        c.close();
    }
    drop(proxy);
}

#[test]
fn haproxy_proxy_v2_mio() {
    if in_netns("haproxy_proxy_v2_mio") {
        through("sylkgw-mio", Proxy::haproxy);
    }
}

#[test]
fn haproxy_proxy_v2_tokio() {
    if in_netns("haproxy_proxy_v2_tokio") {
        through("sylkgw", Proxy::haproxy);
    }
}

#[test]
fn nginx_forwarded_for_mio() {
    if in_netns("nginx_forwarded_for_mio") {
        through("sylkgw-mio", Proxy::nginx);
    }
}

#[test]
fn nginx_forwarded_for_tokio() {
    if in_netns("nginx_forwarded_for_tokio") {
        through("sylkgw", Proxy::nginx);
    }
}

/// From 127.0.0.9, not trusted: `X-Forwarded-For` is ignored (the log shows 127.0.0.9) and a
/// PROXY v2 header closes the connection without an answer.
fn untrusted(bin: &str) {
    let (gw, _cfg) = gateway(bin);
    let me = Ipv4Addr::new(127, 0, 0, 9);
    let mut s = tcp_from(me, gw.addr).expect("connect");
    let request = sylkgw_tests::upgrade_request(
        "/webrtcgateway/ws",
        "Sec-WebSocket-Protocol: sylkRTC-2\r\nX-Forwarded-For: 203.0.113.5\r\nForwarded: for=203.0.113.6\r\n",
    );
    s.write_all(request.as_bytes()).expect("write");
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 101"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    drop(s);
    let mut s = tcp_from(me, gw.addr).expect("connect");
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend([203, 0, 113, 7, 127, 0, 0, 1, 0x9c, 0x40, 0x2a, 0x68]);
    header.extend(request.as_bytes());
    s.write_all(&header).expect("write");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "an answer to a PROXY header from an untrusted peer: {:?}",
        String::from_utf8_lossy(&rest)
    );
    wait_log(&gw, &format!("PROXY protocol header from {me}:"));
    wait_log(&gw, &format!("WebSocket from {me}:"));
    let log = gw.stderr_text();
    assert!(log.contains(&format!("WebSocket from {me}:")) && !log.contains("203.0.113"), "{log}");
}

#[test]
fn untrusted_peers_headers_are_ignored_mio() {
    if in_netns("untrusted_peers_headers_are_ignored_mio") {
        untrusted("sylkgw-mio");
    }
}

#[test]
fn untrusted_peers_headers_are_ignored_tokio() {
    if in_netns("untrusted_peers_headers_are_ignored_tokio") {
        untrusted("sylkgw");
    }
}
