//! RFC 3263 against a real DNS server. In the test's network namespace, dnsmasq (started here
//! with its own configuration on 127.0.0.1:53, stopped by PID) publishes NAPTR and SRV records
//! for test domains whose targets are two kamailio instances on their own loopback addresses
//! (127.0.0.2 and 127.0.0.3). The gateway runs in its own mount namespace too, where
//! `/etc/resolv.conf` is a bind-mounted file naming dnsmasq only; nothing outside the test
//! namespaces is touched.
//!
//! - `sip.test`: NAPTR `SIP+D2U` → `_sip._udp.sip.test` → kam1 (priority 10), kam2 (20): the
//!   registration goes to kam1;
//! - `fo.test`: NAPTR `SIP+D2T` → `_sip._tcp.fo.test` → 127.0.0.4 (priority 10, nothing
//!   listens), kam2 (20): the connection is refused and the registration fails over to kam2
//!   (RFC 3263 §4.3);
//! - `nowhere.test`: no records: `account-register` is answered SylkServer's
//!   `DNS lookup error: no results found`.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::peers::{require_program, Kamailio, KamailioOpts};
use sylkgw_tests::{binary, ha1, Server, TempDir, WsClient};

const STEP: Duration = Duration::from_secs(10);

/// dnsmasq in the foreground with only the records given, killed on drop.
struct Dnsmasq {
    child: Child,
    log: mpsc::Receiver<String>,
}

impl Dnsmasq {
    /// Starts dnsmasq on 127.0.0.1:53 answering `records` (dnsmasq options) and NXDOMAIN for
    /// anything else under `.test`; waits (bounded) for its "started" line.
    fn start(work: &Path, records: &[&str]) -> Self {
        let bin = require_program("dnsmasq", "dnsmasq-base");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--pid-file={}", work.join("dnsmasq.pid").display()));
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--port=53",
            "--user=root",
            "--log-queries",
            "--log-facility=-",
            "--local=/test/",
        ]);
        cmd.args(records).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning dnsmasq: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let me = Self { child, log };
        let mut seen = Vec::new();
        loop {
            match me.log.recv_timeout(STEP) {
                Ok(line) if line.contains("started, version") => return me,
                Ok(line) => seen.push(line),
                Err(_) => panic!("dnsmasq did not start within {STEP:?}:\n{}", seen.join("\n")),
            }
        }
    }

    /// What it logged so far (its queries).
    fn log_text(&self) -> String {
        self.log.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kamailio on `addr`:5060 that takes the test domains as its own.
fn kamailio(work: &Path, addr: [u8; 4]) -> Kamailio {
    let opts = KamailioOpts {
        ipv4_addr: Ipv4Addr::from(addr),
        extra: vec![r#"alias="sip.test:5060""#.into(), r#"alias="fo.test:5060""#.into()],
        ..KamailioOpts::default()
    };
    Kamailio::start(work, opts)
}

/// A script that runs `bin` with its arguments in a new mount namespace whose
/// `/etc/resolv.conf` is `resolv` (the test's namespace keeps the machine's).
fn resolv_wrapper(work: &Path, bin: &Path, resolv: &Path) -> PathBuf {
    let script = work.join("gw-with-resolv.sh");
    let text = format!(
        "#!/bin/sh\nexec unshare -m sh -c 'mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"' '{}' '{}' \"$@\"\n",
        resolv.display(),
        bin.display()
    );
    std::fs::write(&script, text).expect("write the wrapper");
    let status = Command::new("chmod").arg("+x").arg(&script).status().expect("chmod");
    assert!(status.success());
    script
}

fn rfc3263(bin: &str) {
    let work = TempDir::new("gw-dns");
    let dns = Dnsmasq::start(
        work.path(),
        &[
            "--naptr-record=sip.test,10,10,S,SIP+D2U,,_sip._udp.sip.test",
            "--srv-host=_sip._udp.sip.test,kam1.sip.test,5060,10,0",
            "--srv-host=_sip._udp.sip.test,kam2.sip.test,5060,20,0",
            "--host-record=kam1.sip.test,127.0.0.2",
            "--host-record=kam2.sip.test,127.0.0.3",
            "--naptr-record=fo.test,10,10,S,SIP+D2T,,_sip._tcp.fo.test",
            "--srv-host=_sip._tcp.fo.test,down.fo.test,5060,10,0",
            "--srv-host=_sip._tcp.fo.test,kam2.fo.test,5060,20,0",
            "--host-record=down.fo.test,127.0.0.4",
            "--host-record=kam2.fo.test,127.0.0.3",
        ],
    );
    let (w1, w2) = (work.path().join("k1"), work.path().join("k2"));
    std::fs::create_dir_all(&w1).unwrap();
    std::fs::create_dir_all(&w2).unwrap();
    let kam1 = kamailio(&w1, [127, 0, 0, 2]);
    let kam2 = kamailio(&w2, [127, 0, 0, 3]);
    let resolv = work.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\noptions timeout:2 attempts:2\n").unwrap();
    let wrapper = resolv_wrapper(work.path(), &binary(bin), &resolv);
    let mut args = vec!["--sip-listen", "127.0.0.1:5080"];
    if bin == "sylkgw" {
        args.extend(["--threads", "1"]);
    }
    let gw = Server::start(&wrapper, &args);
    let logs = || format!("gateway log:\n{}\ndnsmasq log:\n{}", gw.stderr_text(), dns.log_text());

    // NAPTR → SRV → A: the priority 10 target.
    let mut ws = WsClient::ready(&gw);
    ws.add_and_register("alice@sip.test", &ha1("alice", "sip.test", "secret"));
    assert_eq!(ws.next_registration_state(), ("registered".into(), None), "{}", logs());
    let b = kam1.wait_binding("alice", STEP);
    assert!(b.address.contains("@127.0.0.1:5080"), "binding {b:?}");
    assert!(kam2.binding("alice").is_none(), "kam2 is only the second choice");

    // The first target refuses the connection: the next one (§4.3).
    let mut ws2 = WsClient::ready(&gw);
    ws2.add_and_register("alice@fo.test", &ha1("alice", "fo.test", "secret"));
    assert_eq!(ws2.next_registration_state(), ("registered".into(), None), "{}", logs());
    let b = kam2.wait_binding("alice", STEP);
    assert!(b.address.contains("transport=tcp"), "over TCP as the NAPTR record says: {b:?}");

    // Nothing resolves: SylkServer's error, no registration.
    let add = r#"{"sylkrtc":"account-add","transaction":"a","account":"carol@nowhere.test","password":"x"}"#;
    assert_eq!(ws.request(add), r#"{"sylkrtc":"ack","transaction":"a"}"#);
    let reg = r#"{"sylkrtc":"account-register","transaction":"r","account":"carol@nowhere.test"}"#;
    assert_eq!(
        ws.request(reg),
        r#"{"sylkrtc":"error","transaction":"r","error":"DNS lookup error: no results found"}"#,
        "{}",
        logs()
    );
    ws.close();
    ws2.close();
    kam1.wait_no_binding("alice", STEP);
    kam2.wait_no_binding("alice", STEP);
    kam1.stop();
    kam2.stop();
}

#[test]
fn rfc3263_mio() {
    if in_netns("rfc3263_mio") {
        rfc3263("sylkgw-mio");
    }
}

#[test]
fn rfc3263_tokio() {
    if in_netns("rfc3263_tokio") {
        rfc3263("sylkgw");
    }
}
