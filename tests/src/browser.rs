//! Headless Chromium driven over the DevTools protocol, for the tests of the built-in web phone
//! (`core/src/web/phone.html`, served by the gateway at `/`).
//!
//! [`Browser::launch`] starts Debian's Chromium with a fresh profile, fake microphone and camera,
//! no network beyond 127.0.0.1 (`--host-resolver-rules`), and `--remote-debugging-port=0`; it
//! reads the DevTools address Chromium prints, attaches to the page over a WebSocket
//! (tungstenite) and loads the URL. [`Browser::eval`] runs JavaScript in the page and awaits the
//! promise it returns, so a test drives the phone through its `window.phone` API:
//!
//! ```ignore
//! let mut b = Browser::launch(&format!("http://{}/", gw.addr));
//! b.eval_ok("phone.connect()");
//! b.eval_ok("phone.addAccount('alice@127.0.0.1', 'secret', 'Alice')");
//! ```
//!
//! Chromium is stopped by its PID (then every process below it) when the [`Browser`] is dropped,
//! and it gets `PR_SET_PDEATHSIG` so it cannot outlive the thread that started it. Run it inside a
//! private network namespace ([`crate::netns::in_netns`]) like the other end-to-end tests: even
//! with every "disable" flag Chromium sends ICE connectivity checks from all interfaces.

use crate::netns::{find_program, kill_tree, wait_deadline};
use crate::TempDir;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// How long Chromium may take to print its DevTools address.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Default bound of one [`Browser::eval`] (the page's own `waitFor` timeouts should be shorter).
pub const EVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// The web phone's audio probe (`phone.toneLevels`), injected into every page the browser
/// loads (see the script's head comment).
pub const TONE_PROBE: &str = include_str!("web/tone_probe.js");

/// The flags every launch uses (plus `--user-data-dir` and `--remote-debugging-port=0`).
pub const FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost",
    // Loopback ICE candidates (none without it), raw IPs instead of mDNS names, WebAudio and
    // <audio> running without a user gesture (the audio meters).
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,1000",
];

/// Chromium's real binary (`/usr/bin/chromium` is a shell wrapper): `$SYLKGW_CHROMIUM`, else
/// `/usr/lib/chromium/chromium`, else `chromium` in `PATH`.
pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SYLKGW_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let real = PathBuf::from("/usr/lib/chromium/chromium");
    if real.is_file() {
        return Some(real);
    }
    find_program("chromium")
}

/// [`chromium`], or a panic that says how to install it.
pub fn require_chromium() -> PathBuf {
    chromium().unwrap_or_else(|| {
        panic!("Chromium is not installed: apt-get install chromium (tests/run-all.sh installs it when missing)")
    })
}

/// A headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    console: Vec<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium, attaches to its page and loads `url`; returns once `window.phone` (or,
    /// for other pages, the document) is there. Panics with Chromium's stderr on failure.
    pub fn launch(url: &str) -> Self {
        Self::launch_with(url, &[] as &[&str])
    }

    /// [`Self::launch`] with a fake microphone that plays `wav` (looped) instead of Chromium's
    /// beep: `--use-file-for-fake-audio-capture=WAV`. Write it with
    /// [`crate::audio::write_tone_wav`]: mono PCM16, 48 kHz (Chromium resamples other rates, but
    /// 48 kHz is what WebRTC runs at and what was verified).
    pub fn launch_with_fake_audio(url: &str, wav: &Path) -> Self {
        assert!(wav.is_file(), "fake audio capture file {} is missing", wav.display());
        Self::launch_with(url, &[format!("--use-file-for-fake-audio-capture={}", wav.display())])
    }

    /// [`Self::launch`] with extra Chromium flags after [`FLAGS`].
    pub fn launch_with<S: AsRef<std::ffi::OsStr>>(url: &str, extra_flags: &[S]) -> Self {
        let bin = require_chromium();
        let profile = TempDir::new("chromium");
        let mut cmd = Command::new(&bin);
        cmd.args(FLAGS)
            .args(extra_flags)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        {
            let pipe = child.stderr.take().expect("piped stderr");
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = line.split("DevTools listening on ").nth(1) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(addr.trim().to_string());
                        }
                    }
                    let mut log = stderr.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_back(line);
                    if log.len() > 200 {
                        log.pop_front();
                    }
                }
            });
        }
        let tail = |stderr: &Arc<Mutex<VecDeque<String>>>| {
            stderr.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect::<Vec<_>>().join("\n")
        };
        let Ok(devtools) = rx.recv_timeout(LAUNCH_TIMEOUT) else {
            kill_tree(&mut child);
            panic!(
                "{} printed no DevTools address within {LAUNCH_TIMEOUT:?}; stderr:\n{}",
                bin.display(),
                tail(&stderr)
            );
        };
        let ws = match connect_devtools(&devtools) {
            Ok(ws) => ws,
            Err(e) => {
                kill_tree(&mut child);
                panic!("connecting to Chromium's DevTools at {devtools}: {e}; stderr:\n{}", tail(&stderr));
            }
        };
        let mut b =
            Self { child, ws, session: String::new(), next_id: 0, console: Vec::new(), stderr, _profile: profile };
        let targets = b.command("Target.getTargets", json!({}));
        let target = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["targetId"].as_str())
            .map(String::from);
        let target = match target {
            Some(t) => t,
            None => b.command("Target.createTarget", json!({"url": "about:blank"}))["targetId"]
                .as_str()
                .expect("createTarget answers a targetId")
                .to_string(),
        };
        let attached = b.command("Target.attachToTarget", json!({"targetId": target, "flatten": true}));
        b.session = attached["sessionId"].as_str().expect("attachToTarget answers a sessionId").to_string();
        b.command("Runtime.enable", json!({}));
        b.command("Log.enable", json!({}));
        b.command("Page.enable", json!({}));
        // Test probes live here, not in the shipped page: every document gets them before its own scripts.
        b.command("Page.addScriptToEvaluateOnNewDocument", json!({"source": TONE_PROBE}));
        b.navigate(url);
        b
    }

    /// Loads `url` and waits until the new document has loaded.
    pub fn navigate(&mut self, url: &str) {
        let r = self.command("Page.navigate", json!({"url": url}));
        if let Some(err) = r["errorText"].as_str() {
            panic!("loading {url}: {err}\n{}", self.stderr_text());
        }
        self.wait_for("location.href !== 'about:blank' && document.readyState === 'complete'", Duration::from_secs(20));
    }

    /// The PID of Chromium's main process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Console messages (`console.TYPE: …`), browser log entries (`log.LEVEL (SOURCE): …`, e.g.
    /// CSP violations) and uncaught exceptions (`uncaught: …`) of the page so far.
    pub fn console(&self) -> &[String] {
        &self.console
    }

    /// The last lines Chromium wrote to stderr.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Evaluates `expr` in the page, awaiting a promise it returns. `Ok(value)` (JSON), or
    /// `Err(text)` when it threw or its promise rejected.
    pub fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self.command(
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true, "timeout": EVAL_TIMEOUT.as_millis() as u64}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            let text = ex["exception"]["description"]
                .as_str()
                .or_else(|| ex["exception"]["value"].as_str())
                .or_else(|| ex["text"].as_str())
                .unwrap_or("exception")
                .to_string();
            return Err(text);
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// [`Self::eval`], panicking (with the page's state and console) when it fails.
    pub fn eval_ok(&mut self, expr: &str) -> Value {
        match self.eval(expr) {
            Ok(v) => v,
            Err(e) => panic!("`{expr}` failed in the page: {e}\n{}", self.diagnostics()),
        }
    }

    /// Polls `expr` every 50 ms until it is truthy; panics after `timeout`.
    pub fn wait_for(&mut self, expr: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expr);
            if let Ok(v) = &v {
                if truthy(v) {
                    return v.clone();
                }
            }
            if Instant::now() >= deadline {
                panic!("`{expr}` not true within {timeout:?} (last: {v:?})\n{}", self.diagnostics());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The text of the element with id `id` (`None` when there is none).
    pub fn text_of(&mut self, id: &str) -> Option<String> {
        let expr = format!("(e => e ? e.textContent : null)(document.getElementById({}))", json!(id));
        self.eval_ok(&expr).as_str().map(String::from)
    }

    /// A PNG of the whole page.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let r = self.command("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true}));
        decode_base64(r["data"].as_str().unwrap_or_default()).expect("screenshot is base64")
    }

    /// Writes [`Self::screenshot`] to `path`.
    pub fn save_screenshot(&mut self, path: &Path) {
        let png = self.screenshot();
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// The page's `phone.state()` (without the event list), its console and Chromium's stderr
    /// tail, for failure messages.
    pub fn diagnostics(&mut self) -> String {
        let state = self
            .eval("window.phone ? JSON.stringify(Object.assign(phone.state(), {events: phone.state().events.length})) : 'no phone'")
            .unwrap_or_else(|e| Value::String(format!("state unavailable: {e}")));
        format!(
            "page state: {}\nconsole:\n{}\nchromium stderr (tail):\n{}",
            state.as_str().unwrap_or_default(),
            self.console.join("\n"),
            self.stderr_text()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    /// Stops Chromium (SIGTERM to its PID, then SIGKILL to it and everything below it).
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.ws.close(None);
        if matches!(self.child.try_wait(), Ok(None)) {
            let pids = crate::netns::descendants(self.child.id());
            crate::netns::kill_pid(self.child.id(), libc::SIGTERM);
            if wait_deadline(&mut self.child, Instant::now() + Duration::from_secs(5)).is_none() {
                kill_tree(&mut self.child);
            }
            for p in pids {
                if crate::netns::alive(p) {
                    crate::netns::kill_pid(p, libc::SIGKILL);
                }
            }
        }
        let _ = self.child.wait();
    }

    /// Sends DevTools command `method` (to the attached page once there is one) and returns its
    /// result; events that arrive meanwhile are kept (console) or dropped. Panics on an error
    /// answer or after [`EVAL_TIMEOUT`] plus a margin.
    pub fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() && !method.starts_with("Target.") {
            msg["sessionId"] = Value::String(self.session.clone());
        }
        self.ws.send(Message::text(msg.to_string())).unwrap_or_else(|e| panic!("DevTools {method}: {e}"));
        let deadline = Instant::now() + EVAL_TIMEOUT + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no DevTools answer to {method} in time\n{}", self.stderr_text());
            let text = match self.ws.read() {
                Ok(Message::Text(t)) => t.as_str().to_string(),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => panic!("DevTools connection lost during {method}: {e}\n{}", self.stderr_text()),
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
            if v["id"].as_u64() == Some(id) {
                if let Some(err) = v.get("error") {
                    panic!("DevTools {method} failed: {err}");
                }
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    fn event(&mut self, v: &Value) {
        match v["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args = v["params"]["args"].as_array().cloned().unwrap_or_default();
                let text: Vec<String> = args
                    .iter()
                    .map(|a| a.get("value").map_or_else(|| a["description"].to_string(), value_text))
                    .collect();
                self.console.push(format!(
                    "console.{}: {}",
                    v["params"]["type"].as_str().unwrap_or("log"),
                    text.join(" ")
                ));
            }
            Some("Log.entryAdded") => {
                // Browser-side reports: CSP violations, failed loads, mixed content…
                let e = &v["params"]["entry"];
                self.console.push(format!(
                    "log.{} ({}): {}",
                    e["level"].as_str().unwrap_or("info"),
                    e["source"].as_str().unwrap_or("other"),
                    e["text"].as_str().unwrap_or_default()
                ));
            }
            Some("Runtime.exceptionThrown") => {
                let d = &v["params"]["exceptionDetails"];
                let text = d["exception"]["description"].as_str().or_else(|| d["text"].as_str()).unwrap_or("exception");
                self.console.push(format!("uncaught: {text}"));
            }
            _ => {}
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop();
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Connects to a `ws://127.0.0.1:PORT/devtools/browser/ID` address (no `Origin` header, which
/// Chromium would refuse).
fn connect_devtools(addr: &str) -> Result<WebSocket<TcpStream>, String> {
    let hostport = addr
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .ok_or_else(|| format!("unexpected DevTools address {addr:?}"))?;
    let sock: std::net::SocketAddr = hostport.parse().map_err(|e| format!("{hostport}: {e}"))?;
    let tcp = TcpStream::connect_timeout(&sock, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_millis(500))).map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    // The read timeout interrupts a slow answer (Chromium on a loaded machine): resume the
    // handshake until the launch deadline.
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    let mut result = tungstenite::client::client(addr, tcp);
    loop {
        match result {
            Ok((ws, _)) => return Ok(ws),
            Err(tungstenite::HandshakeError::Interrupted(mid)) if Instant::now() < deadline => result = mid.handshake(),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Standard base64 (with or without padding).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("a*b").is_none());
    }

    /// A DevTools endpoint slower to answer the upgrade than one socket read timeout (Chromium
    /// on a loaded machine) is still connected to: the handshake resumes after `WouldBlock`.
    #[test]
    fn devtools_handshake_survives_a_slow_answer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            let mut ws = tungstenite::accept(stream).expect("server handshake");
            ws.send(Message::text("hello")).unwrap();
        });
        let mut ws = connect_devtools(&format!("ws://127.0.0.1:{port}/devtools/browser/x")).expect("connected");
        server.join().unwrap();
        assert_eq!(ws.read().unwrap(), Message::text("hello"));
    }

    #[test]
    fn truthiness() {
        assert!(!truthy(&Value::Null) && !truthy(&json!(false)) && !truthy(&json!(0)) && !truthy(&json!("")));
        assert!(truthy(&json!(true)) && truthy(&json!(1)) && truthy(&json!("x")) && truthy(&json!({})));
    }
}
