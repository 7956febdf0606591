//! Connection caps the runtimes enforce for the whole process (`sylkgw_driver::limits`): the same
//! with `sylkgw --threads 2` (two cores, connections spread by the kernel or on two SIP ports)
//! as with `sylkgw-mio`. Web connections per IP (`max_connections_per_ip`), SIP TCP connections
//! per IP and in total (`max_sip_tcp_connections_per_ip`, `max_sip_tcp_connections`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use sylkgw_tests::{binary, config_file, upgrade_request, Server, REPLY_TIMEOUT, WS_PATH};

/// The two runtimes as these tests start them: `sylkgw` with two workers, and `sylkgw-mio`.
fn runtimes() -> [(&'static str, &'static [&'static str]); 2] {
    [("sylkgw", &["--threads", "2"]), ("sylkgw-mio", &[])]
}

fn start(bin: &str, extra: &[&str], ini: &str) -> (sylkgw_tests::TempDir, Server) {
    let (dir, cfg) = config_file(ini);
    let cfg = cfg.to_string_lossy().into_owned();
    let mut args: Vec<&str> = vec!["--config", &cfg];
    args.extend_from_slice(extra);
    let server = Server::start(binary(bin), &args);
    (dir, server)
}

/// What came back on a connection after it sent its request.
#[derive(Debug, PartialEq)]
enum Answer {
    /// The start of a response (`prefix` matched).
    Served,
    /// Closed (EOF or reset) with no response.
    Closed,
}

/// Connects to `addr`, sends `request` and reads until a response starting with `prefix` or a
/// close; the stream is returned open when served.
fn try_connect(addr: SocketAddr, request: &str, prefix: &str) -> (Answer, Option<TcpStream>) {
    let mut s = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
    if s.write_all(request.as_bytes()).is_err() {
        return (Answer::Closed, None);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (Answer::Closed, None),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() >= prefix.len() {
                    assert!(got.starts_with(prefix.as_bytes()), "unexpected answer: {}", String::from_utf8_lossy(&got));
                    return (Answer::Served, Some(s));
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                return (Answer::Closed, None)
            }
            Err(e) => panic!("{addr}: no answer and no close within {REPLY_TIMEOUT:?}: {e}"),
        }
    }
}

fn ws(addr: SocketAddr) -> (Answer, Option<TcpStream>) {
    let request = upgrade_request(WS_PATH, "Sec-WebSocket-Protocol: sylkRTC-2\r\n");
    try_connect(addr, &request, "HTTP/1.1 101")
}

fn options(addr: SocketAddr, n: usize) -> (Answer, Option<TcpStream>) {
    let request = format!(
        "OPTIONS sip:gw@{addr} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-limit{n}\r\n\
         From: <sip:t@127.0.0.1>;tag=t{n}\r\nTo: <sip:gw@{addr}>\r\nCall-ID: limit{n}@test\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    try_connect(addr, &request, "SIP/2.0 ")
}

/// Waits for a stderr line containing `needle` (the server logs it before it closes the socket,
/// but the harness reads stderr on its own thread).
fn logged(server: &Server, needle: &str) -> bool {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while !server.stderr_text().contains(needle) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The SIP addresses the server logged (`SIP on ADDR (udp, tcp)`, one per worker), by worker.
fn sip_addrs(server: &Server, workers: usize) -> Vec<SocketAddr> {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let text = server.stderr_text();
        let mut found: Vec<(usize, SocketAddr)> = text
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find("SIP on ")? + "SIP on ".len()..];
                let addr = rest.split(' ').next()?.parse().ok()?;
                let worker = l.find("worker ").and_then(|i| l[i + 7..].split(':').next()?.parse().ok()).unwrap_or(0);
                Some((worker, addr))
            })
            .collect();
        if found.len() >= workers {
            found.sort_unstable();
            return found.into_iter().map(|(_, a)| a).collect();
        }
        assert!(Instant::now() < deadline, "no `SIP on` line for every worker:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn max_connections_per_ip_holds_across_workers() {
    for (bin, extra) in runtimes() {
        let (_dir, server) = start(bin, extra, "max_connections_per_ip = 3\n");
        let mut open: Vec<TcpStream> = (0..3)
            .map(|i| match ws(server.addr) {
                (Answer::Served, Some(s)) => s,
                other => panic!("{bin}: connection {i} within the limit: {other:?}"),
            })
            .collect();
        // Whatever worker the kernel hands them to, each one more is refused before any HTTP.
        for i in 0..6 {
            assert_eq!(ws(server.addr).0, Answer::Closed, "{bin}: connection {} over the limit of 3", 4 + i);
        }
        assert!(logged(&server, "refused: 3 connections from 127.0.0.1 already"), "{bin}: refusal logged");
        // A connection that goes frees its place (once its socket is closed on the server too).
        drop(open.pop());
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            match ws(server.addr) {
                (Answer::Served, Some(s)) => break open.push(s),
                _ => assert!(Instant::now() < deadline, "{bin}: the freed place was never given back"),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn sip_tcp_accepts_are_limited_per_ip_and_in_total() {
    for (bin, extra) in runtimes() {
        let workers = if bin == "sylkgw" { 2 } else { 1 };
        // Per IP: three from 127.0.0.1 (over both workers' ports), the fourth refused.
        let (_dir, server) = start(bin, extra, "max_sip_tcp_connections_per_ip = 3\n");
        let sip = sip_addrs(&server, workers);
        let mut open = Vec::new();
        for n in 0..3 {
            match options(sip[n % sip.len()], n) {
                (Answer::Served, Some(s)) => open.push(s),
                other => panic!("{bin}: SIP connection {n} within the limit: {other:?}"),
            }
        }
        for (n, addr) in sip.iter().enumerate() {
            assert_eq!(options(*addr, 10 + n).0, Answer::Closed, "{bin}: SIP connection over 3 from one IP to {addr}");
        }
        assert!(logged(&server, "sip-tcp connection from 127.0.0.1:"), "{bin}: refusal logged");
        drop(open);
        drop(server);
        // In total: the per-IP cap is higher, the total of 2 refuses the third.
        let (_dir, server) = start(bin, extra, "max_sip_tcp_connections_per_ip = 10\nmax_sip_tcp_connections = 2\n");
        let sip = sip_addrs(&server, workers);
        let open: Vec<TcpStream> = (0..2)
            .map(|n| match options(sip[n % sip.len()], n) {
                (Answer::Served, Some(s)) => s,
                other => panic!("{bin}: SIP connection {n} within the total: {other:?}"),
            })
            .collect();
        for (n, addr) in sip.iter().enumerate() {
            assert_eq!(options(*addr, 20 + n).0, Answer::Closed, "{bin}: SIP connection over the total to {addr}");
        }
        assert!(logged(&server, "refused: 2 connections already"), "{bin}: refusal logged");
        drop(open);
    }
}
