//! Janus 1.1 as a benchmark peer: its process, its config, and a client of its WebSocket API.
//!
//! [`Janus::start`] copies `/etc/janus` (Debian's `janus` package) to a directory, writes the
//! three configs of `tests/peers/janus/` over the copy (see the comments there), starts
//! `janus -C DIR/janus.jcfg -F DIR -o` and waits until its WebSocket port accepts. Dropping it
//! stops it by PID (SIGTERM, then SIGKILL after 5 s).
//!
//! [`JanusWs`] speaks the Janus API over one WebSocket (subprotocol `janus-protocol`): session
//! `create`, `attach` of `janus.plugin.sip`, the plugin's `register` with the HA1
//! (`ha1_secret`), `keepalive`, `destroy`. One WebSocket carries many sessions, as a gateway
//! backend (SylkServer) does. Replies are matched by transaction; everything else (plugin
//! events) is queued for [`JanusWs::next_event`].

use crate::peers::{peers_dir, substitute};
use crate::RawWs;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Janus may take to open its WebSocket port.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How Janus is configured (the rest is in `tests/peers/janus/`).
#[derive(Debug, Clone)]
pub struct JanusOpts {
    /// `event_loops` in janus.jcfg (the number of cores is what a user would set).
    pub event_loops: usize,
    /// The WebSocket API port on 127.0.0.1.
    pub ws_port: u16,
    /// `ice_enforce_list`: the interface for ICE candidates (Janus skips loopback ones).
    pub ice_iface: String,
}

impl Default for JanusOpts {
    fn default() -> Self {
        Self { event_loops: 2, ws_port: 8188, ice_iface: "v0".into() }
    }
}

/// A running Janus; dropping it stops it by PID.
pub struct Janus {
    child: Option<Child>,
    /// The WebSocket API address.
    pub addr: SocketAddr,
    /// The config directory (the edited copy of /etc/janus).
    pub dir: PathBuf,
    log: PathBuf,
}

impl Janus {
    /// Whether the `janus` program is installed; otherwise the message naming the package.
    pub fn available() -> Result<PathBuf, String> {
        crate::netns::find_program("janus").ok_or_else(|| "`janus` is not installed: apt-get install janus".to_string())
    }

    /// Copies `/etc/janus` to `workdir/janus`, applies the edits and starts Janus; waits for its
    /// WebSocket port.
    pub fn start(workdir: &Path, opts: &JanusOpts) -> Result<Self, String> {
        let program = Self::available()?;
        let dir = workdir.join("janus");
        let _ = std::fs::remove_dir_all(&dir);
        let status = Command::new("cp")
            .args(["-r", "/etc/janus"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("cp -r /etc/janus: {e}"))?;
        if !status.success() {
            return Err(format!("cp -r /etc/janus {}: {status}", dir.display()));
        }
        let vars = [
            ("DIR", dir.display().to_string()),
            ("EVENT_LOOPS", opts.event_loops.to_string()),
            ("ICE_IFACE", opts.ice_iface.clone()),
            ("WS_PORT", opts.ws_port.to_string()),
        ];
        for name in ["janus.jcfg", "janus.transport.websockets.jcfg", "janus.plugin.sip.jcfg"] {
            let template = std::fs::read_to_string(peers_dir().join("janus").join(name))
                .map_err(|e| format!("tests/peers/janus/{name}: {e}"))?;
            std::fs::write(dir.join(name), substitute(&template, &vars)).map_err(|e| format!("writing {name}: {e}"))?;
        }
        let log = workdir.join("janus.log");
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(program)
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .arg("-F")
            .arg(&dir)
            .arg("-o")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawning janus: {e}"))?;
        let addr: SocketAddr = ([127, 0, 0, 1], opts.ws_port).into();
        let mut janus = Self { child: Some(child), addr, dir, log };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(janus);
            }
            if let Some(c) = janus.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!("janus exited with {status}; log:\n{}", janus.log_text()));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("janus did not open {addr} within {START_TIMEOUT:?}; log:\n{}", janus.log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What Janus logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops Janus (SIGTERM, SIGKILL after 5 s) and reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(None) = child.try_wait() {
            crate::send_signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One WebSocket to the Janus API.
pub struct JanusWs {
    ws: RawWs,
    next_tx: u64,
    /// Messages that were not the reply being waited for (plugin events, …).
    queued: VecDeque<Value>,
}

/// A plugin event of the SIP plugin: the handle it came from and `plugindata.data`.
#[derive(Debug, Clone)]
pub struct SipEvent {
    /// `sender`: the handle id.
    pub handle: u64,
    /// `plugindata.data` (`{"sip":"event","result":{"event":…}}` or an error).
    pub data: Value,
    /// The JSEP that came with it, if any.
    pub jsep: Option<Value>,
}

impl SipEvent {
    /// `result.event` (`registering`, `registered`, `accepted`, `hangup`, …), or `error`.
    pub fn name(&self) -> &str {
        if self.data.get("error").is_some() {
            return "error";
        }
        self.data["result"]["event"].as_str().unwrap_or("")
    }
}

impl JanusWs {
    /// Opens a WebSocket to `addr` offering `janus-protocol`.
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let (ws, _) = RawWs::connect(addr, "janus-protocol")?;
        Ok(Self { ws, next_tx: 0, queued: VecDeque::new() })
    }

    /// Sets the read timeout of the socket.
    pub fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        self.ws.stream.set_read_timeout(Some(t))
    }

    /// Sends `body` with a fresh transaction; returns the transaction.
    pub fn send(&mut self, mut body: Value) -> io::Result<String> {
        self.next_tx += 1;
        let tx = format!("t{}", self.next_tx);
        body["transaction"] = Value::String(tx.clone());
        self.ws.send_text(&body.to_string())?;
        Ok(tx)
    }

    fn recv(&mut self) -> io::Result<Value> {
        let text = self.ws.recv_text()?;
        serde_json::from_str(&text).map_err(|e| io::Error::other(format!("{e}: {text}")))
    }

    /// Waits for the reply to `tx` that is not an `ack` (`success`, `error`, or the plugin's
    /// `event`); queues the rest.
    pub fn reply(&mut self, tx: &str) -> io::Result<Value> {
        loop {
            let v = self.recv()?;
            if v["transaction"] == tx && v["janus"] != "ack" {
                if v["janus"] == "error" {
                    return Err(io::Error::other(format!("janus error: {v}")));
                }
                return Ok(v);
            }
            if v["transaction"] != tx {
                self.queued.push_back(v);
            }
        }
    }

    /// `create`: a new session id.
    pub fn create_session(&mut self) -> io::Result<u64> {
        let tx = self.send(json!({"janus": "create"}))?;
        let v = self.reply(&tx)?;
        v["data"]["id"].as_u64().ok_or_else(|| io::Error::other(format!("create: {v}")))
    }

    /// `attach` of `janus.plugin.sip` to `session`: the handle id.
    pub fn attach_sip(&mut self, session: u64) -> io::Result<u64> {
        let tx = self.send(json!({"janus": "attach", "session_id": session, "plugin": "janus.plugin.sip"}))?;
        let v = self.reply(&tx)?;
        v["data"]["id"].as_u64().ok_or_else(|| io::Error::other(format!("attach: {v}")))
    }

    /// Sends the SIP plugin's `register` for `sip:USER@DOMAIN` with the HA1 of its password,
    /// at `proxy` (`sip:HOST:PORT`). The outcome comes as events (`registering`, then
    /// `registered` or `registration_failed`).
    pub fn send_register(
        &mut self,
        session: u64,
        handle: u64,
        user: &str,
        domain: &str,
        ha1: &str,
        proxy: &str,
    ) -> io::Result<()> {
        let body = json!({"request": "register", "username": format!("sip:{user}@{domain}"), "ha1_secret": ha1, "proxy": proxy});
        self.send(json!({"janus": "message", "session_id": session, "handle_id": handle, "body": body}))?;
        Ok(())
    }

    /// `keepalive` for `session` (Janus drops a session silent for `session_timeout`).
    pub fn send_keepalive(&mut self, session: u64) -> io::Result<()> {
        self.send(json!({"janus": "keepalive", "session_id": session}))?;
        Ok(())
    }

    /// `destroy` of `session` (Janus unregisters its accounts); does not wait.
    pub fn send_destroy(&mut self, session: u64) -> io::Result<()> {
        self.send(json!({"janus": "destroy", "session_id": session}))?;
        Ok(())
    }

    /// The next event of the SIP plugin (queued ones first); other messages (`ack`,
    /// `webrtcup`, `media`, …) are skipped.
    pub fn next_event(&mut self) -> io::Result<SipEvent> {
        loop {
            let v = match self.queued.pop_front() {
                Some(v) => v,
                None => self.recv()?,
            };
            if v["janus"] == "event" && v["plugindata"]["plugin"] == "janus.plugin.sip" {
                return Ok(SipEvent {
                    handle: v["sender"].as_u64().unwrap_or(0),
                    data: v["plugindata"]["data"].clone(),
                    jsep: v.get("jsep").cloned(),
                });
            }
        }
    }

    /// Closes the WebSocket (close 1000).
    pub fn close(mut self) {
        let _ = self.ws.send_frame(crate::opcode::CLOSE, &1000u16.to_be_bytes());
    }
}
