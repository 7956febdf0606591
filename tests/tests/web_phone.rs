//! The built-in web phone (`GET /`) in headless Chromium: it loads under its Content-Security-
//! Policy without errors, computes the HA1 itself, speaks sylkRTC-2 to the gateway that served
//! it, and registers alice with kamailio. Each test runs in its own network namespace with
//! only loopback; Chromium and kamailio are stopped by PID.
//!
//! `SYLKGW_SCREENSHOT_DIR=DIR` saves a PNG of the page at the end of each test.

use std::time::Duration;
use sylkgw_core::sip::digest::Algorithm;
use sylkgw_tests::browser::Browser;
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::peers::{Kamailio, KamailioOpts};
use sylkgw_tests::{binary, http_request, Server, TempDir};

const STEP: Duration = Duration::from_secs(10);

fn ha1(user: &str, realm: &str, password: &str) -> String {
    Algorithm::Md5.hash_hex(format!("{user}:{realm}:{password}").as_bytes())
}

fn maybe_screenshot(b: &mut Browser, name: &str) {
    if let Some(dir) = std::env::var_os("SYLKGW_SCREENSHOT_DIR") {
        let path = std::path::PathBuf::from(dir).join(format!("{name}.png"));
        b.save_screenshot(&path);
        eprintln!("screenshot: {}", path.display());
    }
}

/// The page alone: served with its headers, no console errors, its MD5 agrees with ours, and it
/// connects, adds an account with the right HA1, pings, and notices the gateway going away.
#[test]
fn web_phone_page() {
    if !in_netns("web_phone_page") {
        return;
    }
    let gw = Server::start(binary("sylkgw-mio"), &[] as &[&str]);
    let served = http_request(gw.addr, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(served.status(), 200);
    assert_eq!(served.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(served.header("cache-control"), Some("no-cache"));
    assert!(served.header("content-security-policy").is_some_and(|c| c.contains("connect-src 'self' ws: wss:")));
    assert_eq!(served.body, sylkgw_core::web::PHONE_HTML);

    let mut b = Browser::launch(&format!("http://{}/", gw.addr));
    b.wait_for("typeof window.phone === 'object'", STEP);
    for text in ["", "abc", "alice:example.com:secret", "h\u{e9}llo w\u{f6}rld \u{2713}", &"x".repeat(200)] {
        let got = b.eval_ok(&format!("phone.md5({})", serde_json::json!(text)));
        assert_eq!(got.as_str(), Some(Algorithm::Md5.hash_hex(text.as_bytes()).as_str()), "md5 of {text:?}");
    }
    assert_eq!(b.text_of("conn-state").as_deref(), Some("idle"));
    assert_eq!(b.eval_ok("phone.connect()"), "ready", "the default URL is this host's /webrtcgateway/ws");
    assert_eq!(b.eval_ok("phone.state().url"), format!("ws://{}/webrtcgateway/ws", gw.addr));
    assert_eq!(b.text_of("conn-state").as_deref(), Some("ready"));

    b.eval_ok("phone.addAccount('alice@example.com', 'secret', 'Alice')");
    assert_eq!(b.text_of("account-ha1").as_deref(), Some("b1726872c344b6dc8365b774f8fd6412"));
    assert_eq!(b.text_of("account-ha1"), Some(ha1("alice", "example.com", "secret")));
    assert_eq!(b.text_of("reg-state").as_deref(), Some("not registered"));
    let again = b.eval("phone.addAccount('alice@example.com', 'secret')").unwrap_err();
    assert!(again.contains("Account already added"), "{again}");
    assert!(b.eval_ok("phone.ping()").is_number());

    let state = b.eval_ok("phone.state()");
    let events = state["events"].as_array().expect("events").clone();
    assert_eq!(events.first(), Some(&serde_json::json!({"sylkrtc": "ready-event"})));
    assert!(events.iter().skip(1).all(|e| e["sylkrtc"] == "ack"), "{events:?}");
    let sent: Vec<&str> = state["sent"].as_array().expect("sent").iter().filter_map(|t| t.as_str()).collect();
    assert_eq!(sent.iter().filter(|t| **t != "ping").collect::<Vec<_>>(), [&"account-add"], "{sent:?}");
    assert!(sent.contains(&"ping"), "{sent:?}");
    assert_eq!(state["lastError"], serde_json::Value::Null);

    // An unknown session: the gateway's error comes back as the promise's rejection.
    let err = b.eval("phone.request('session-terminate', {session: 'nope'})").unwrap_err();
    assert!(err.contains("Unknown session nope"), "{err}");

    // The gateway goes away: the page sees 1001 and starts reconnecting.
    maybe_screenshot(&mut b, "web_phone_page");
    gw.sigterm();
    b.wait_for("phone.state().closeCode === 1001 && phone.state().reconnects > 0", STEP);
    assert_eq!(b.eval_ok("phone.state().accountAdded"), false);
    // Nothing went wrong in the page: no exception, no CSP violation, no failed load (the log
    // only shows the connection refused while reconnecting).
    let problems: Vec<&String> = b
        .console()
        .iter()
        .filter(|l| l.starts_with("uncaught") || l.starts_with("log.error") || l.contains("Content Security Policy"))
        .filter(|l| !l.contains("WebSocket connection to"))
        .collect();
    assert!(problems.is_empty(), "{problems:?}\nall: {:?}", b.console());
    // The CSP is in force: a script cannot reach another origin over HTTP.
    let blocked = b.eval("fetch('http://192.0.2.1/').then(() => 'fetched', e => 'blocked: ' + e.message)");
    assert!(blocked.as_ref().is_ok_and(|v| v.as_str().is_some_and(|s| s.starts_with("blocked"))), "{blocked:?}");
    assert!(
        b.console().iter().any(|l| l.contains("Content Security Policy") && l.contains("connect-src")),
        "no CSP report for the blocked fetch: {:?}",
        b.console()
    );
    b.close();
}

/// The phone registers alice@127.0.0.1 (password `secret`, HA1 computed in the page) with
/// kamailio through the gateway that served it, shows `registered`, and unregisters.
#[test]
fn web_phone_registers_with_kamailio() {
    if !in_netns("web_phone_registers_with_kamailio") {
        return;
    }
    let work = TempDir::new("web-phone");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let gw = Server::start(
        binary("sylkgw-mio"),
        &["--sip-listen", "127.0.0.1:5080", "--outbound-proxy", &kam.addr().to_string()],
    );
    let mut b = Browser::launch(&format!("http://{}/", gw.addr));
    b.wait_for("typeof window.phone === 'object'", STEP);
    assert_eq!(b.eval_ok("phone.connect()"), "ready");
    b.eval_ok("phone.addAccount('alice@127.0.0.1', 'secret', 'Alice')");
    assert_eq!(b.text_of("account-ha1"), Some(ha1("alice", "127.0.0.1", "secret")));
    b.eval_ok("phone.register()");
    let state = b.eval_ok("phone.waitFor('registration', ['registered', 'failed'], 20000)");
    assert_eq!(state["registration"], "registered", "gateway log:\n{}\n{}", gw.stderr_text(), b.diagnostics());
    assert_eq!(b.text_of("reg-state").as_deref(), Some("registered"));
    assert_eq!(b.text_of("header-reg").as_deref(), Some("alice@127.0.0.1: registered"));
    let binding = kam.wait_binding("alice", STEP);
    assert!(binding.address.contains("@127.0.0.1:5080"), "{binding:?}");
    assert!(binding.user_agent.starts_with("SylkRTC (Chrome "), "the page's user_agent reaches SIP: {binding:?}");
    maybe_screenshot(&mut b, "web_phone_registered");

    b.eval_ok("phone.unregister()");
    assert_eq!(b.text_of("reg-state").as_deref(), Some("not registered"));
    kam.wait_no_binding("alice", STEP);
    b.close();
    kam.stop();
}
