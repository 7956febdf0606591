//! `/metrics` on `--metrics-listen`: the text passes `promtool check metrics` (Debian's
//! `prometheus` package), shows what the gateway holds, and a real Prometheus started by the
//! test scrapes it and answers a query with the value. Each test runs in its own network
//! namespace; Prometheus is stopped by its PID and keeps its data in a temp dir.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::{binary, http_request, Server, TempDir, WsClient};

const STEP: Duration = Duration::from_secs(20);

/// The gateway `bin` with metrics on a port of the OS's choosing; returns it and the metrics
/// address (from its `metrics on http://ADDR/metrics` line).
fn gateway(bin: &str) -> (Server, SocketAddr) {
    let mut args = vec!["--metrics-listen", "127.0.0.1:0"];
    if bin == "sylkgw" {
        args.extend(["--threads", "2"]);
    }
    let gw = Server::start(binary(bin), &args);
    let deadline = Instant::now() + STEP;
    loop {
        let text = gw.stderr_text();
        let found = text.lines().find_map(|l| {
            let rest = &l[l.find("metrics on http://")? + "metrics on http://".len()..];
            rest.strip_suffix("/metrics")?.parse().ok()
        });
        if let Some(addr) = found {
            return (gw, addr);
        }
        assert!(Instant::now() < deadline, "no metrics line; stderr:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GET /metrics.
fn scrape(addr: SocketAddr) -> String {
    let r = http_request(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status(), 200, "{r:?}");
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4")), "{r:?}");
    r.body
}

/// Scrapes until a line equal to `line` shows (workers publish every second).
fn scrape_until(addr: SocketAddr, line: &str) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let text = scrape(addr);
        if text.lines().any(|l| l == line) {
            return text;
        }
        assert!(Instant::now() < deadline, "`{line}` never showed; last scrape:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `promtool check metrics` on `text`: passes, no lint problem.
fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; tests/run-all.sh installs it)");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\non:\n{text}");
}

/// A WebSocket with an account added, then a scrape that shows them and passes promtool; an
/// unknown path is 404.
fn metrics_pass_promtool(bin: &str) {
    let (gw, addr) = gateway(bin);
    let mut ws = WsClient::ready(&gw);
    let add = r#"{"sylkrtc":"account-add","transaction":"a","account":"alice@example.com","password":"x"}"#;
    assert_eq!(ws.request(add), r#"{"sylkrtc":"ack","transaction":"a"}"#);
    let bad = r#"{"sylkrtc":"account-remove","transaction":"b","account":"bob@example.com"}"#;
    assert!(ws.request(bad).contains(r#""sylkrtc":"error""#));
    scrape_until(addr, "sylkgw_websockets 1");
    let text = scrape_until(addr, "sylkgw_accounts 1");
    for line in [
        "sylkgw_requests_total{type=\"account-add\"} 1",
        "sylkgw_requests_total{type=\"account-remove\"} 1",
        "sylkgw_errors_total{type=\"request\"} 1",
        "sylkgw_calls{state=\"established\"} 0",
        "sylkgw_registrations{state=\"registered\"} 0",
        "sylkgw_call_setup_seconds_count{origin=\"outgoing\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "`{line}` missing in\n{text}");
    }
    for name in ["process_resident_memory_bytes ", "process_open_fds ", "sylkgw_event_loop_busy_ratio{worker=\"0\"} "] {
        assert!(text.lines().any(|l| l.starts_with(name)), "`{name}` missing in\n{text}");
    }
    if bin == "sylkgw" {
        assert!(text.contains("sylkgw_event_loop_busy_ratio{worker=\"1\"} "), "per-worker figures:\n{text}");
    }
    promtool(&text);
    let r = http_request(addr, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status(), 404);
    ws.close();
    scrape_until(addr, "sylkgw_websockets 0");
}

#[test]
fn metrics_promtool_mio() {
    if in_netns("metrics_promtool_mio") {
        metrics_pass_promtool("sylkgw-mio");
    }
}

#[test]
fn metrics_promtool_tokio() {
    if in_netns("metrics_promtool_tokio") {
        metrics_pass_promtool("sylkgw");
    }
}

/// Prometheus, killed by its PID on drop.
struct Prometheus {
    child: Child,
    web: SocketAddr,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second, its data in a temp dir.
    fn start(target: SocketAddr) -> Self {
        let dir = TempDir::new("prometheus");
        let config = dir.write(
            "prometheus.yml",
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sylkgw\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        );
        let web: SocketAddr = "127.0.0.1:9090".parse().expect("address");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package `prometheus`)");
        Self { child, web, _dir: dir }
    }

    /// The log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Queries `expr` until the answer holds `value`; panics with the log after [`STEP`] * 2.
    fn wait_value(&self, expr: &str, value: &str) {
        let deadline = Instant::now() + STEP * 2;
        let mut last = String::new();
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.web).is_ok() {
                let request =
                    format!("GET /api/v1/query?query={expr} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
                let r = http_request(self.web, &request);
                if r.status() == 200 && r.body.contains(r#""status":"success""#) && r.body.contains(value) {
                    return;
                }
                last = r.body;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("query {expr} never answered {value}; last answer {last}\nprometheus log:\n{}", self.log());
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus scrapes the gateway; its query API shows the WebSocket the test holds and
/// that the target is up.
fn prometheus_scrapes(bin: &str) {
    let (gw, addr) = gateway(bin);
    let ws = WsClient::ready(&gw);
    scrape_until(addr, "sylkgw_websockets 1");
    let prom = Prometheus::start(addr);
    prom.wait_value("up", r#""1"]"#);
    prom.wait_value("sylkgw_websockets", r#""1"]"#);
    ws.close();
    drop(prom);
}

#[test]
fn prometheus_scrapes_mio() {
    if in_netns("prometheus_scrapes_mio") {
        prometheus_scrapes("sylkgw-mio");
    }
}

#[test]
fn prometheus_scrapes_tokio() {
    if in_netns("prometheus_scrapes_tokio") {
        prometheus_scrapes("sylkgw");
    }
}
