//! Running as a service: `contrib/sylkgw.service` passes `systemd-analyze verify`,
//! `--check-config FILE` prints the effective configuration (exit 0) or the error (exit 2), the
//! binaries send `READY=1` to `$NOTIFY_SOCKET` once listening, and SIGHUP reloads
//! `web_origins`, `sip_domains` and the limits while connections stay up.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use sylkgw_tests::churn::wait_for_within;
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::peers::Sipp;
use sylkgw_tests::webrtc_client::{Video, WebRtcClient};
use sylkgw_tests::{binary, config_file, send_signal, Offer, Server, TempDir, WsClient, REPLY_TIMEOUT};

#[test]
fn unit_passes_systemd_analyze_verify() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("SKIP: systemd-analyze is not installed (Debian package `systemd`); the unit was not verified");
        return;
    };
    assert!(out.status.success());
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/sylkgw.service"))
        .expect("contrib/sylkgw.service");
    assert!(unit.contains("Type=notify") && unit.contains("DynamicUser=yes"), "{unit}");
    assert!(unit.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE"), "{unit}");
    // The unit names the installed binary; verify it against the one just built.
    let dir = TempDir::new("unit");
    let bin = binary("sylkgw").display().to_string();
    let path = dir.write("sylkgw.service", unit.replace("/usr/local/bin/sylkgw", &bin));
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("sylkgw")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify: {said}");
}

/// `--check-config`: a valid file prints the effective configuration and exits 0; a bad one
/// names the problem and exits 2.
fn check_config(bin: &str) {
    let (_dir, cfg) = config_file(
        "web_origins = https://phone.example.com\nsip_domains = example.com\nmax_connections_per_ip = 7\n\
         trusted_proxies = 10.0.0.0/8\nmetrics_listen = 127.0.0.1:9101\nlisten = 127.0.0.1:10999\n",
    );
    let out = Command::new(binary(bin)).arg("--check-config").arg(&cfg).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let (json, ok) = stdout.trim_end().rsplit_once('\n').expect("JSON, then the OK line");
    assert!(ok.ends_with(": OK"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(json).expect("the effective configuration as JSON");
    assert_eq!(json["listen"], "127.0.0.1:10999", "{stdout}");
    assert_eq!(json["metrics_listen"], "127.0.0.1:9101");
    assert_eq!(json["core"]["web_origins"][0], "https://phone.example.com");
    assert_eq!(json["core"]["sip_domains"][0], "example.com");
    assert_eq!(json["core"]["max_connections_per_ip"], 7);
    assert_eq!(json["core"]["trusted_proxies"][0], "10.0.0.0/8");
    let (_bad_dir, bad) = config_file("max_connections_per_ip = none\n");
    let out = Command::new(binary(bin)).arg("--check-config").arg(&bad).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("max_connections_per_ip"), "{stderr}");
}

#[test]
fn check_config_mio() {
    check_config("sylkgw-mio");
}

#[test]
fn check_config_tokio() {
    check_config("sylkgw");
}

/// With `$NOTIFY_SOCKET` set, the binary sends `READY=1` once listening and `STOPPING=1` on
/// SIGTERM. Inside a namespace: the variable is set for that process only.
fn ready_notification(bin: &str) {
    let dir = TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
    std::env::set_var("NOTIFY_SOCKET", &path);
    let mut gw = Server::start(binary(bin), &["--threads", "2"][..usize::from(bin == "sylkgw") * 2]);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within the reply timeout");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(WsClient::connect(&gw, Offer::protocols("sylkRTC-2")).is_ok(), "listening when ready");
    gw.sigterm();
    let n = socket.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn ready_notification_mio() {
    if in_netns("ready_notification_mio") {
        ready_notification("sylkgw-mio");
    }
}

#[test]
fn ready_notification_tokio() {
    if in_netns("ready_notification_tokio") {
        ready_notification("sylkgw");
    }
}

/// Where the reload test serves metrics (inside its own namespace).
const METRICS: &str = "127.0.0.1:9101";

/// Scrapes `/metrics` until every line of `lines` is there.
fn metrics_show(lines: &[&str]) {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let r = sylkgw_tests::http_request(METRICS.parse().expect("address"), "GET /metrics HTTP/1.1\r\n\r\n");
        if lines.iter().all(|want| r.body.lines().any(|l| l == *want)) {
            return;
        }
        assert!(Instant::now() < deadline, "{lines:?} not all in:\n{}", r.body);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGHUP with a WebSocket open and a call up (to a sipp echo UAS): `web_origins` and
/// `sip_domains` change for what comes next; the WebSocket and the call stay up (the call still
/// ends with BYE/200 afterwards).
fn sighup_reload(bin: &str) {
    let work = TempDir::new("reload");
    let mut echo = Sipp::echo_uas(work.path(), "127.0.0.1:5076".parse().expect("address"), 6000).spawn();
    echo.wait_bound(Duration::from_secs(10));
    let cfg = work.write("gw.ini", "web_origins = https://a.example\nsip_domains = *\n");
    let cfg_arg = cfg.display().to_string();
    let mut args = vec!["--config", cfg_arg.as_str(), "--sip-listen", "127.0.0.1:5080"];
    args.extend(["--metrics-listen", METRICS]);
    args.extend(["--rtp-ports", "40000-40999", "--media-address", "127.0.0.1"]);
    if bin == "sylkgw" {
        args.extend(["--threads", "2"]);
    }
    let gw = Server::start(binary(bin), &args);
    let offer_from = |origin| Offer { protocols: Some("sylkRTC-2"), origin: Some(origin), tls: None };
    let mut ws = WsClient::connect(&gw, offer_from("https://a.example")).expect("origin a allowed");
    assert_eq!(ws.recv_text(), r#"{"sylkrtc":"ready-event"}"#);
    let add = r#"{"sylkrtc":"account-add","transaction":"a","account":"alice@127.0.0.1","password":"x"}"#;
    assert_eq!(ws.request(add), r#"{"sylkrtc":"ack","transaction":"a"}"#);
    let offer = WebRtcClient::browser(Instant::now(), "127.0.0.1:9".parse().expect("address"), Video::None)
        .offer(false)
        .expect("offer");
    let req = serde_json::json!({"sylkrtc": "session-create", "transaction": "c", "account": "alice@127.0.0.1",
        "session": "s1", "uri": "sip:echo@127.0.0.1:5076", "sdp": offer});
    assert_eq!(ws.request(&req.to_string()), r#"{"sylkrtc":"ack","transaction":"c"}"#);
    let accepted = wait_for_within(&mut ws, "accepted", REPLY_TIMEOUT * 2, |e| {
        e["state"] == "accepted" || e["state"] == "terminated"
    });
    assert_eq!(accepted["state"], "accepted", "{accepted}");
    // The call shows in the metrics, with its setup time observed.
    metrics_show(&["sylkgw_calls{state=\"accepted\"} 1", "sylkgw_call_setup_seconds_count{origin=\"outgoing\"} 1"]);

    std::fs::write(&cfg, "web_origins = https://b.example\nsip_domains = example.com\n").expect("rewrite");
    send_signal(gw.pid(), libc::SIGHUP);
    let workers = if bin == "sylkgw" { 2 } else { 1 };
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while gw.stderr_text().matches("reloaded; changed: web_origins, sip_domains").count() < workers {
        assert!(Instant::now() < deadline, "no reload logged:\n{}", gw.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    // What comes next follows the new file.
    assert!(WsClient::connect(&gw, offer_from("https://a.example")).is_err(), "origin a no longer allowed");
    let mut other = WsClient::connect(&gw, offer_from("https://b.example")).expect("origin b allowed");
    assert_eq!(other.recv_text(), r#"{"sylkrtc":"ready-event"}"#);
    let add_bob = r#"{"sylkrtc":"account-add","transaction":"b","account":"bob@127.0.0.1","password":"x"}"#;
    assert!(ws.request(add_bob).contains(r#""sylkrtc":"error""#), "127.0.0.1 is no longer in sip_domains");
    // The WebSocket and the call are still up.
    let ping = r#"{"sylkrtc":"ping","transaction":"p"}"#;
    assert_eq!(ws.request(ping), r#"{"sylkrtc":"ack","transaction":"p"}"#);
    let bye = r#"{"sylkrtc":"session-terminate","transaction":"t","session":"s1"}"#;
    ws.send_text(bye);
    let t = wait_for_within(&mut ws, "terminated", REPLY_TIMEOUT, |e| e["state"] == "terminated");
    assert_eq!(t["reason"], "200 OK", "the call ended by BYE after the reload: {t}");
    echo.wait(Duration::from_secs(10)).assert_success();
    metrics_show(&["sylkgw_calls{state=\"accepted\"} 0", "sylkgw_requests_total{type=\"session-terminate\"} 1"]);
    other.close();
    ws.close();
}

#[test]
fn sighup_reload_keeps_websockets_and_calls_mio() {
    if in_netns("sighup_reload_keeps_websockets_and_calls_mio") {
        sighup_reload("sylkgw-mio");
    }
}

#[test]
fn sighup_reload_keeps_websockets_and_calls_tokio() {
    if in_netns("sighup_reload_keeps_websockets_and_calls_tokio") {
        sighup_reload("sylkgw");
    }
}
