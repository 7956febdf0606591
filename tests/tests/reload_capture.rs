//! SIGHUP reloads recorded in captures, and `trusted_proxies` among the options a reload changes
//! (issue #15, docs/operations.md "Reloading"): both binaries, each in its own network namespace,
//! with `--capture`. Before the reload, proxied upgrades from 127.0.0.1 are held to
//! `max_connections_per_ip` under 127.0.0.1; after `trusted_proxies = 127.0.0.1` is reloaded, each
//! is held under its `X-Forwarded-For` client instead. Every capture file holds the `gateway
//! reload` line and replays to the same text.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::{binary, send_signal, upgrade_request, Server, TempDir, REPLY_TIMEOUT, WS_PATH};

/// An upgrade from 127.0.0.1 on behalf of `client` (`X-Forwarded-For`): the open socket and the
/// status line (empty when the gateway closed the socket without answering).
fn proxied_upgrade(addr: SocketAddr, client: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
    let extra = format!("Sec-WebSocket-Protocol: sylkRTC-2\r\nX-Forwarded-For: {client}\r\n");
    // A refused socket may be closed before the request is written: that is an empty answer.
    let _ = s.write_all(upgrade_request(WS_PATH, &extra).as_bytes());
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (s, String::from_utf8_lossy(&head).trim_end().to_string())
}

fn reload_is_captured(bin: &str) {
    let work = TempDir::new("reload-capture");
    let cfg = work.write("gw.ini", "web_origins = *\nmax_connections_per_ip = 1\n");
    let capture = work.path().join("run.cap");
    let (cfg_arg, cap_arg) = (cfg.display().to_string(), capture.display().to_string());
    let mut args = vec!["--config", cfg_arg.as_str(), "--capture", cap_arg.as_str()];
    let workers = if bin == "sylkgw" { 2 } else { 1 };
    if workers == 2 {
        args.extend(["--threads", "2"]);
    }
    let mut gw = Server::start(binary(bin), &args);

    // Not trusted yet: every upgrade counts under 127.0.0.1.
    let (_a, status) = proxied_upgrade(gw.addr, "192.0.2.1");
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    let (_b, status) = proxied_upgrade(gw.addr, "192.0.2.2");
    assert!(!status.starts_with("HTTP/1.1 101"), "a second connection from 127.0.0.1 is over the cap: {status}");

    std::fs::write(&cfg, "web_origins = *\nmax_connections_per_ip = 1\ntrusted_proxies = 127.0.0.1\n")
        .expect("rewrite");
    send_signal(gw.pid(), libc::SIGHUP);
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while gw.stderr_text().matches("reloaded; changed: trusted_proxies").count() < workers {
        assert!(Instant::now() < deadline, "no reload logged:\n{}", gw.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Trusted now: each client has its own place, and is held to the cap itself.
    let (_c, status) = proxied_upgrade(gw.addr, "192.0.2.3");
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    let (_d, status) = proxied_upgrade(gw.addr, "192.0.2.4");
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols", "another client behind the proxy");
    let (_e, status) = proxied_upgrade(gw.addr, "192.0.2.3");
    // 503 from the worker holding 192.0.2.3's first connection, a close from another one.
    assert!(!status.starts_with("HTTP/1.1 101"), "192.0.2.3 is over the cap: {status}");

    gw.sigterm();
    assert_eq!(gw.wait_exit(Duration::from_secs(5)), Some(0));
    let files: Vec<PathBuf> = if workers == 2 {
        (0..2).map(|i| PathBuf::from(format!("{}.{i}", capture.display()))).collect()
    } else {
        vec![capture]
    };
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let reloads: Vec<&str> = text.lines().filter(|l| l.contains(" gateway ") && l.contains(" reload ")).collect();
        assert_eq!(reloads.len(), 1, "one reload recorded in {}:\n{text}", f.display());
        assert!(reloads[0].contains(r#""trusted_proxies":["127.0.0.1"#), "{}", reloads[0]);
        let cap = sylkgw_core::capture::parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", f.display()));
        let replayed = sylkgw_core::capture::replay(&cap, Instant::now())
            .unwrap_or_else(|e| panic!("replaying {}: {e}", f.display()));
        assert_eq!(replayed, text, "replay of {} differs", f.display());
    }
}

#[test]
fn reload_is_captured_and_trusted_proxies_reload_mio() {
    if in_netns("reload_is_captured_and_trusted_proxies_reload_mio") {
        reload_is_captured("sylkgw-mio");
    }
}

#[test]
fn reload_is_captured_and_trusted_proxies_reload_tokio() {
    if in_netns("reload_is_captured_and_trusted_proxies_reload_tokio") {
        reload_is_captured("sylkgw");
    }
}
