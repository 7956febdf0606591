//! Calls with media, end to end, each test in its own network namespace (loopback only), every
//! helper process stopped by its PID.
//!
//! `harness_*` prove the call harness with the real peers alone (no gateway): kamailio as
//! registrar and authenticating proxy, baresip (auto-answer, a WAV tone as its microphone, what
//! it receives recorded to WAV, driven over ctrl_tcp), sipp (a UAC streaming a µ-law tone, an
//! `-rtp_echo` UAS), headless Chromium with a WAV tone as its fake microphone and the web phone's
//! `phone.toneLevels` probe; tones are checked with `sylkgw_tests::audio`.
//!
//! `gateway_*` are the acceptance tests of the gateway's call layer (web phone ⇄ sylkgw ⇄
//! kamailio ⇄ baresip / sipp). They fail fast (every wait ≤ 30 s) with a message naming the step
//! until calls work. The gateway runs as
//! `sylkgw-mio --sip-listen 127.0.0.1:5080 --outbound-proxy 127.0.0.1:5060 --rtp-ports 40000-40999
//! --media-address 127.0.0.1` (plus `--listen 127.0.0.1:0 --webrtc-listen 127.0.0.1:0`).
//!
//! Ports inside each namespace: kamailio 5060, gateway SIP 5080, baresip SIP 5064 / ctrl_tcp
//! 4444 / RTP 30000-30100, sipp UAC 5084, sipp echo UAS 5076 / RTP 6000.
//!
//! Tones: baresip plays 440 Hz, the browser's microphone (and the sipp UAC) 1000 Hz. Each side
//! must receive the other's tone, dominant (≥ 10× the power at f·1.5 and f/1.5).
//!
//! Needs root, `unshare`, `ip`, kamailio, sipp, baresip and Chromium (tests/run-all.sh installs
//! them); `SYLKGW_SKIP_E2E=1` skips these tests loudly instead of failing them.

use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use sylkgw_tests::audio::{self, assert_tone, tone_report, tone_samples};
use sylkgw_tests::browser::Browser;
use sylkgw_tests::netns::{alive, in_netns};
use sylkgw_tests::peers::{Baresip, BaresipOpts, Kamailio, KamailioOpts, Sipp};
use sylkgw_tests::{binary, Server, TempDir};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const STEP: Duration = Duration::from_secs(10);
/// Baresip's tone (its microphone).
const BOB_HZ: f64 = 440.0;
/// The browser's fake microphone and the sipp UAC's stream.
const ALICE_HZ: f64 = 1000.0;
/// How long media flows before it is measured/hung up.
const TALK: Duration = Duration::from_secs(3);
/// Page-side bound for a call to be established, ms.
const CALL_MS: u64 = 20_000;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(V4, port)
}

/// Writes `NAME` in `dir`: `freq` Hz, mono PCM16 at `rate`, `secs` long, amplitude 0.3.
fn tone_wav(dir: &Path, name: &str, freq: f64, rate: u32, secs: f64) -> PathBuf {
    let p = dir.join(name);
    audio::write_tone_wav(&p, freq, rate, secs, 0.3).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

/// Frequencies to ask the page about: `f`, its neighbours f·1.5 and f/1.5, and the other tone.
fn probe_freqs(f: f64) -> Vec<f64> {
    let other = if f == BOB_HZ { ALICE_HZ } else { BOB_HZ };
    vec![f, f * 1.5, f / 1.5, other]
}

/// baresip as bob, registered to kamailio with digest, auto-answering, playing 440 Hz.
fn start_bob(work: &TempDir, kam: &Kamailio) -> Baresip {
    let wav = tone_wav(work.path(), "bob440.wav", BOB_HZ, 8000, 60.0);
    let bob = Baresip::start(work.path(), BaresipOpts::new("bob", &wav).registered(kam.addr(), "secret"));
    bob.wait_registered(STEP);
    kam.wait_binding("bob", STEP);
    bob
}

// ===== The harness alone =====

/// kamailio + baresip (bob, registered) + sipp:
/// 1. a sipp UAC (alice, answering kamailio's 407) calls bob through kamailio and streams
///    1000 Hz for 3 s; baresip auto-answers; its recording of what it received holds 1000 Hz,
///    what it sent holds its own 440 Hz;
/// 2. baresip dials a sipp `-rtp_echo` UAS answering PCMU + telephone-event (over ctrl_tcp,
///    through kamailio as outbound proxy, answering its 407 too); the echo of its 440 Hz comes
///    back and is in its recording; hangup over ctrl_tcp; sipp sees the BYE and exits 0;
/// 3. every process is stopped by its PID.
#[test]
fn harness_sipp_calls_baresip_and_audio_recorded() {
    if !in_netns("harness_sipp_calls_baresip_and_audio_recorded") {
        return;
    }
    let t0 = Instant::now();
    let work = TempDir::new("calls");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let wav = tone_wav(work.path(), "bob440.wav", BOB_HZ, 8000, 60.0);
    let mut opts = BaresipOpts::new("bob", &wav).registered(kam.addr(), "secret");
    opts.outbound = Some(kam.addr());
    let mut bob = Baresip::start(work.path(), opts);
    bob.wait_registered(STEP);
    let binding = kam.wait_binding("bob", STEP);
    assert!(binding.address.contains("@127.0.0.1:5064"), "{binding:?}");

    // 1. sipp → kamailio → baresip, 1000 Hz.
    let out =
        Sipp::call_with_tone(work.path(), kam.addr(), addr(5084), ("alice", "secret"), "bob", ALICE_HZ, TALK).run();
    out.assert_success();
    assert!(out.messages.contains("SIP/2.0 407"), "kamailio challenged alice:\n{out}");
    let ev = bob.wait_event("CALL_CLOSED", STEP);
    assert_eq!(ev["direction"], "incoming", "{ev}");
    let log = bob.log_text();
    assert!(log.contains("Call established: sip:alice@127.0.0.1"), "{log}");
    assert!(log.contains("answering call"), "auto-answer: {log}");
    let rx = bob.last_received();
    assert!(rx.rate == 8000 && rx.seconds() > 2.0, "recording {} s at {} Hz", rx.seconds(), rx.rate);
    let r = assert_tone(&rx.samples, rx.rate, ALICE_HZ, "what baresip received from sipp");
    eprintln!("[audio] baresip received from sipp: {r}");
    assert!(
        !audio::dominant_tone_present(&rx.samples, rx.rate, BOB_HZ),
        "{}",
        tone_report(&rx.samples, rx.rate, BOB_HZ)
    );
    let tx = audio::read_wav(bob.sent_recordings().last().expect("an -enc.wav")).expect("enc.wav");
    assert_tone(&tx.samples, tx.rate, BOB_HZ, "what baresip sent");

    // The recordings are named by the second the call started in: make the next one differ.
    std::thread::sleep(Duration::from_millis(1100));

    // 2. baresip → kamailio → sipp echo (PCMU + telephone-event).
    let mut echo = Sipp::echo_uas_te(work.path(), addr(5076), 6000).spawn();
    echo.wait_bound(STEP);
    let since = bob.event_count();
    bob.dial("sip:echo@127.0.0.1:5076");
    bob.wait_event_since(since, "CALL_ESTABLISHED", STEP);
    std::thread::sleep(TALK);
    bob.hangup();
    let ev = bob.wait_event_since(since, "CALL_CLOSED", STEP);
    assert_eq!(ev["direction"], "outgoing", "{ev}");
    let done = echo.wait(STEP);
    done.assert_success();
    assert!(done.messages.contains("telephone-event/8000"), "{done}");
    assert!(done.messages.contains("BYE sip:"), "{done}");
    assert_eq!(bob.received_recordings().len(), 2, "{:?}", bob.received_recordings());
    let rx = bob.last_received();
    let r = assert_tone(&rx.samples, rx.rate, BOB_HZ, "baresip's own tone echoed by sipp");
    eprintln!("[audio] baresip heard its echo: {r}");
    let klog = kam.log_text();
    assert!(klog.contains("REQ INVITE sip:bob@127.0.0.1"), "{klog}");
    assert!(klog.contains("REQ INVITE sip:echo@127.0.0.1:5076"), "baresip dialled through kamailio: {klog}");

    // 3. Stop by PID: baresip first (it un-REGISTERs), then kamailio.
    let (bpid, kpids) = (bob.pid(), kam.pids());
    let log = bob.stop();
    assert!(log.contains("ua: stop all"), "{log}");
    kam.stop();
    assert!(!alive(bpid) && kpids.iter().all(|&p| !alive(p)));
    eprintln!("[timing] whole test {:.2?}", t0.elapsed());
}

/// Chromium with a 1000 Hz WAV as its fake microphone, on the web phone served by the gateway
/// (no call layer needed): `phone.toneLevels` finds 1000 Hz on the microphone and on the remote
/// track of an in-page loopback RTCPeerConnection (Opus over 127.0.0.1), and nothing at 1000 Hz
/// on a silent source.
#[test]
fn harness_browser_fake_mic_and_tone_probe() {
    if !in_netns("harness_browser_fake_mic_and_tone_probe") {
        return;
    }
    let work = TempDir::new("probe");
    let wav = tone_wav(work.path(), "alice1000.wav", ALICE_HZ, 48000, 30.0);
    let gw = Server::start(binary("sylkgw-mio"), &[] as &[&str]);
    let mut b = Browser::launch_with_fake_audio(&format!("http://{}/", gw.addr), &wav);
    b.wait_for("typeof window.phone === 'object'", STEP);
    assert_eq!(
        b.eval_ok("typeof phone.toneLevels"),
        "function",
        "the served page has no phone.toneLevels: rebuild the binaries (cargo build --workspace)"
    );

    // No call, no microphone: a clear error.
    let err = b.eval("phone.toneLevels([1000])").unwrap_err();
    assert!(err.contains("No remote audio to measure"), "{err}");

    assert_eq!(b.eval_ok("phone.micTest(true)"), true);
    let freqs = serde_json::to_string(&probe_freqs(ALICE_HZ)).expect("json");
    let mic = b.eval_ok(&format!("phone.toneLevels({freqs}, {{source: 'mic'}})"));
    eprintln!("[audio] page mic: {mic}");
    assert_dominant(&mic, ALICE_HZ, "the fake microphone");
    b.eval_ok("phone.micTest(false)");

    // The remote side of a WebRTC loopback inside the page.
    let remote = b.eval_ok(&format!(
        r#"(async () => {{
            const mic = await navigator.mediaDevices.getUserMedia({{audio: true}});
            const a = new RTCPeerConnection(), z = new RTCPeerConnection();
            a.onicecandidate = (e) => e.candidate && z.addIceCandidate(e.candidate);
            z.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
            const got = new Promise((r) => {{ z.ontrack = (e) => r(e.streams[0] || new MediaStream([e.track])); }});
            mic.getTracks().forEach((t) => a.addTrack(t, mic));
            await a.setLocalDescription(await a.createOffer());
            await z.setRemoteDescription(a.localDescription);
            await z.setLocalDescription(await z.createAnswer());
            await a.setRemoteDescription(z.localDescription);
            const remote = await got;
            const el = document.createElement('audio');
            el.autoplay = true;
            el.srcObject = remote;
            document.body.appendChild(el);
            await el.play().catch(() => {{}});
            for (let i = 0; i < 100 && !['connected', 'completed'].includes(z.iceConnectionState); i++) {{
                await new Promise((r) => setTimeout(r, 100));
            }}
            await new Promise((r) => setTimeout(r, 500));
            const levels = await phone.toneLevels({freqs}, {{stream: remote, ms: 1500}});
            levels.ice = z.iceConnectionState;
            const silent = new AudioContext().createMediaStreamDestination().stream;
            levels.silent = await phone.toneLevels({freqs}, {{stream: silent, ms: 300}});
            a.close(); z.close(); mic.getTracks().forEach((t) => t.stop());
            return levels;
        }})()"#
    ));
    eprintln!("[audio] page remote (loopback): {remote}");
    assert!(remote["ice"] == "connected" || remote["ice"] == "completed", "{remote}");
    assert_dominant(&remote, ALICE_HZ, "the remote track of a loopback call");
    assert!(remote["silent"]["dominant"].is_null(), "{remote}");
    assert!(remote["silent"]["rms"].as_f64().is_some_and(|r| r < 0.001), "{remote}");
    b.close();
}

/// Panics unless the page's `toneLevels` answer has `freq` dominant and audible.
#[track_caller]
fn assert_dominant(levels: &Value, freq: f64, what: &str) {
    assert!(levels["dominant"].as_f64() == Some(freq), "{what}: {freq} Hz not dominant: {levels}");
    let share = levels["levels"][format!("{freq}")].as_f64().unwrap_or(0.0);
    assert!(share > 0.5, "{what}: {freq} Hz holds only {share} of the power: {levels}");
    assert!(levels["rms"].as_f64().is_some_and(|r| r > 0.01), "{what}: too quiet: {levels}");
}

// ===== The gateway's call layer (acceptance) =====

/// kamailio, the gateway (registering through kamailio as outbound proxy), and the web phone in
/// Chromium with a 1000 Hz microphone, connected with alice@127.0.0.1 registered.
struct GatewaySetup {
    kam: Kamailio,
    gw: Server,
    b: Browser,
}

impl GatewaySetup {
    /// The page's state and console, and the gateway's last log lines, for failure messages.
    fn diagnostics(&mut self) -> String {
        let log = self.gw.stderr_text();
        let lines: Vec<&str> = log.lines().collect();
        format!("{}\ngateway log (tail):\n{}", self.b.diagnostics(), lines[lines.len().saturating_sub(40)..].join("\n"))
    }
}

fn gateway_setup(work: &TempDir) -> GatewaySetup {
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let gw = Server::start(
        binary("sylkgw-mio"),
        &[
            "--sip-listen",
            "127.0.0.1:5080",
            "--outbound-proxy",
            &kam.addr().to_string(),
            "--rtp-ports",
            "40000-40999",
            "--media-address",
            "127.0.0.1",
        ],
    );
    let wav = tone_wav(work.path(), "alice1000.wav", ALICE_HZ, 48000, 30.0);
    let mut b = Browser::launch_with_fake_audio(&format!("http://{}/", gw.addr), &wav);
    b.wait_for("typeof window.phone === 'object'", STEP);
    assert_eq!(b.eval_ok("phone.connect()"), "ready");
    b.eval_ok("phone.addAccount('alice@127.0.0.1', 'secret', 'Alice')");
    b.eval_ok("phone.register()");
    let st = b.eval_ok("phone.waitFor('registration', ['registered', 'failed'], 15000)");
    assert_eq!(st["registration"], "registered", "alice did not register via the gateway:\n{}", gw.stderr_text());
    kam.wait_binding("alice", STEP);
    GatewaySetup { kam, gw, b }
}

/// Places a call from the page; panics with a clear message when the gateway refuses it.
fn page_call(s: &mut GatewaySetup, target: &str) {
    if let Err(e) = s.b.eval(&format!("phone.call({})", serde_json::json!(target))) {
        panic!(
            "the gateway refused session-create to {target}: {e}\n(the call layer is expected to place a SIP INVITE)\n{}",
            s.diagnostics()
        );
    }
}

/// Waits (in the page, ≤ `ms`) until the call is in `want` (or terminated); panics with the
/// page's state unless it reached `want`.
fn page_wait_call(s: &mut GatewaySetup, want: &str, ms: u64) -> Value {
    let r = s.b.eval(&format!("phone.waitFor('call', [{}, 'terminated'], {ms})", serde_json::json!(want)));
    match r {
        Ok(st) if st["call"] == want => st,
        Ok(st) => panic!(
            "call ended instead of reaching {want}: reason {:?}, lastError {:?}\n{}",
            st["callReason"],
            st["lastError"],
            s.diagnostics()
        ),
        Err(e) => panic!("call never reached {want}: {e}\n{}", s.diagnostics()),
    }
}

/// What the page hears on the call: `freq` must dominate (the browser's remote audio, via
/// WebAudio). Retries for a few seconds while the jitter buffer and the bridge settle.
fn page_hears(s: &mut GatewaySetup, freq: f64, what: &str) -> Value {
    let freqs = serde_json::to_string(&probe_freqs(freq)).expect("json");
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let levels = s.b.eval(&format!("phone.toneLevels({freqs}, {{ms: 1000}})"));
        if let Ok(l) = &levels {
            if l["dominant"].as_f64() == Some(freq) {
                eprintln!("[audio] page hears {what}: {l}");
                return l.clone();
            }
        }
        if Instant::now() >= deadline {
            let stats =
                s.b.eval("phone.state().mediaInfo || JSON.stringify(phone.state().remoteAudioLevel)")
                    .unwrap_or(Value::Null);
            panic!(
                "the browser does not hear {what} ({freq} Hz): last probe {levels:?}, media {stats}\n{}",
                s.diagnostics()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Hangs up from the page and waits for `terminated` there.
fn page_hangup(s: &mut GatewaySetup) {
    s.b.eval_ok("phone.hangup()");
    s.b.eval_ok("phone.waitFor('call', 'terminated', 10000)");
}

/// (a) The web phone (alice, 1000 Hz microphone) calls bob (baresip, registered to kamailio,
/// auto-answer, 440 Hz): the call is established on both sides, the page hears 440 Hz, baresip's
/// recording holds 1000 Hz, and a hangup from the page ends baresip's call.
#[test]
fn gateway_web_phone_calls_baresip_audio_both_ways() {
    if !in_netns("gateway_web_phone_calls_baresip_audio_both_ways") {
        return;
    }
    let work = TempDir::new("gw-a");
    let mut s = gateway_setup(&work);
    let bob = start_bob(&work, &s.kam);

    page_call(&mut s, "bob@127.0.0.1");
    page_wait_call(&mut s, "established", CALL_MS);
    bob.wait_event("CALL_ESTABLISHED", STEP);
    assert!(s.kam.log_text().contains("REQ INVITE sip:bob@127.0.0.1"), "{}", s.kam.log_text());
    page_hears(&mut s, BOB_HZ, "baresip's tone");
    std::thread::sleep(Duration::from_secs(1));
    page_hangup(&mut s);
    bob.wait_event("CALL_CLOSED", STEP);
    let rx = bob.last_received();
    let r = assert_tone(&rx.samples, rx.rate, ALICE_HZ, "what baresip received from the browser");
    eprintln!("[audio] baresip received from the browser: {r}");
    bob.stop();
    s.b.close();
    s.kam.stop();
}

/// (b) The web phone calls a sipp `-rtp_echo` UAS (PCMU only, behind kamailio): the browser hears
/// its own 1000 Hz, and the page's hangup reaches sipp as a BYE.
#[test]
fn gateway_web_phone_calls_sipp_echo_hears_itself() {
    if !in_netns("gateway_web_phone_calls_sipp_echo_hears_itself") {
        return;
    }
    let work = TempDir::new("gw-b");
    let mut s = gateway_setup(&work);
    let mut echo = Sipp::echo_uas(work.path(), addr(5076), 6000).spawn();
    echo.wait_bound(STEP);

    page_call(&mut s, "echo@127.0.0.1:5076");
    page_wait_call(&mut s, "established", CALL_MS);
    page_hears(&mut s, ALICE_HZ, "its own tone echoed by sipp");
    page_hangup(&mut s);
    let done = echo.wait(STEP);
    done.assert_success();
    assert!(done.messages.contains("BYE sip:"), "{done}");
    s.b.close();
    s.kam.stop();
}

/// (c) Incoming: baresip (bob) dials alice through kamailio; the page gets the incoming call,
/// answers it (`phone.answer()`); the page hears 440 Hz, baresip's recording holds 1000 Hz; bob
/// hangs up and the page sees `terminated`.
#[test]
fn gateway_baresip_calls_web_phone_incoming_audio_both_ways() {
    if !in_netns("gateway_baresip_calls_web_phone_incoming_audio_both_ways") {
        return;
    }
    let work = TempDir::new("gw-c");
    let mut s = gateway_setup(&work);
    let mut bob = start_bob(&work, &s.kam);

    bob.dial("sip:alice@127.0.0.1");
    // The page must see `incoming` within 15 s; bob's call closing first fails at once.
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.b.eval_ok("phone.state().call") != "incoming" {
        let closed = bob.events().into_iter().find(|e| e["type"] == "CALL_CLOSED");
        if closed.is_some() || Instant::now() >= deadline {
            panic!(
                "the page got no incoming call from bob ({}); kamailio log:\n{}\nbaresip log:\n{}\n{}",
                closed.map_or("nothing within 15 s".to_string(), |e| format!("bob's call closed: {}", e["param"])),
                s.kam.log_text(),
                bob.log_text(),
                s.diagnostics()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = s.b.eval_ok("phone.state()");
    assert!(st["remoteIdentity"]["uri"].as_str().is_some_and(|u| u.starts_with("bob@127.0.0.1")), "{st}");
    s.b.eval_ok("phone.answer()");
    page_wait_call(&mut s, "established", CALL_MS);
    bob.wait_event("CALL_ESTABLISHED", STEP);
    page_hears(&mut s, BOB_HZ, "baresip's tone");
    std::thread::sleep(Duration::from_secs(1));
    let since = bob.event_count();
    bob.hangup();
    bob.wait_event_since(since, "CALL_CLOSED", STEP);
    s.b.eval_ok("phone.waitFor('call', 'terminated', 10000)");
    let rx = bob.last_received();
    let r = assert_tone(&rx.samples, rx.rate, ALICE_HZ, "what baresip received from the browser");
    eprintln!("[audio] baresip received from the browser: {r}");
    bob.stop();
    s.b.close();
    s.kam.stop();
}

/// The tone helpers agree with themselves on what the tests feed the peers.
#[test]
fn tone_files_hold_their_tones() {
    let work = TempDir::new("tones");
    for (freq, rate) in [(BOB_HZ, 8000), (ALICE_HZ, 48000)] {
        let w = audio::read_wav(&tone_wav(work.path(), "t.wav", freq, rate, 1.0)).expect("wav");
        assert_tone(&w.samples, w.rate, freq, "tone file");
    }
    let s: Vec<f32> = tone_samples(ALICE_HZ, 8000, 1.0, 0.3)
        .into_iter()
        .map(|x| f32::from(audio::ulaw_decode(audio::ulaw_encode(x))) / 32768.0)
        .collect();
    assert_tone(&s, 8000, ALICE_HZ, "µ-law tone");
}
