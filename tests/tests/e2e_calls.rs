//! Calls with media, end to end, each test in its own network namespace (loopback only), every
//! helper process stopped by its PID.
//!
//! `harness_*` prove the call harness with the real peers alone (no gateway): kamailio as
//! registrar and authenticating proxy, baresip (auto-answer, a WAV tone as its microphone, what
//! it receives recorded to WAV, driven over ctrl_tcp), sipp (a UAC streaming a µ-law tone, an
//! `-rtp_echo` UAS), headless Chromium with a WAV tone as its fake microphone and the
//! `phone.toneLevels` probe the harness injects into the web phone (`tests/src/web/tone_probe.js`);
//! tones are checked with `sylkgw_tests::audio`.
//!
//! `gateway_*` are the acceptance tests of the gateway's call layer (web phone ⇄ sylkgw ⇄
//! kamailio ⇄ baresip / sipp). They fail fast (every wait ≤ 30 s) with a message naming the step
//! until calls work. The gateway runs as
//! `sylkgw-mio --sip-listen 127.0.0.1:5080 --outbound-proxy 127.0.0.1:5060 --rtp-ports 40000-40999
//! --media-address 127.0.0.1` (plus `--listen 127.0.0.1:0 --webrtc-listen 127.0.0.1:0`).
//!
//! Ports inside each namespace: kamailio 5060, gateway SIP 5080, baresip SIP 5064 / ctrl_tcp
//! 4444 / RTP 30000-30100, sipp UAC 5084, sipp echo UAS (also the holding one) 5076 / RTP 6000.
//!
//! The later `gateway_*` tests cover the rest of the calls issue's acceptance list: an incoming
//! call cancelled by the caller (487 + `missed-session`) or declined by the page (486 at the
//! caller), DTMF (RFC 4733 from the browser, `session-dtmf-info` as one INFO per digit), hold and
//! resume from the SIP side (re-INVITE answered by the page), codecs (a PCMU-only far end, an
//! Opus one) and faults (the far end SIGKILLed: media timeout + BYE; the WebSocket closed: BYE).
//! The media-timeout test gives the gateway `--config FILE -v` with `media_timeout = 3`.
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
use sylkgw_tests::peers::{Baresip, BaresipOpts, Kamailio, KamailioOpts, Scenario, Sipp};
use sylkgw_tests::{binary, send_signal, Server, TempDir};

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
    start_bob_with(work, kam, |o| o)
}

/// [`start_bob`] with its options changed by `tweak` (codecs, modules, ...).
fn start_bob_with(work: &TempDir, kam: &Kamailio, tweak: impl FnOnce(BaresipOpts) -> BaresipOpts) -> Baresip {
    let wav = tone_wav(work.path(), "bob440.wav", BOB_HZ, 8000, 60.0);
    let bob = Baresip::start(work.path(), tweak(BaresipOpts::new("bob", &wav).registered(kam.addr(), "secret")));
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
        "the tone probe (tests/src/web/tone_probe.js) was not injected into the page"
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
    let alice = ALICE_HZ;
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
            // Opus in a fresh loopback call needs a moment to settle (its first window once held
            // only 0.37 of the power under load): measure up to three windows, keep the best.
            let levels = null;
            for (let k = 0; k < 3; k++) {{
                const l = await phone.toneLevels({freqs}, {{stream: remote, ms: 1500}});
                const share = (l.levels || {{}})['{alice}'] || 0;
                if (!levels || share > ((levels.levels || {{}})['{alice}'] || 0)) levels = l;
                if (l.dominant === {alice} && share > 0.5) break;
            }}
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
    gateway_setup_with(work, None)
}

/// [`gateway_setup`] with the gateway reading `ini` as its config file (`--config`) and logging
/// at debug level (`-v`), when given.
fn gateway_setup_with(work: &TempDir, ini: Option<&str>) -> GatewaySetup {
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let proxy = kam.addr().to_string();
    let mut args = vec![
        "--sip-listen".to_string(),
        "127.0.0.1:5080".into(),
        "--outbound-proxy".into(),
        proxy,
        "--rtp-ports".into(),
        "40000-40999".into(),
        "--media-address".into(),
        "127.0.0.1".into(),
    ];
    if let Some(ini) = ini {
        let cfg = work.write("sylkgw.ini", ini);
        args.extend(["--config".to_string(), cfg.display().to_string(), "-v".into()]);
    }
    let gw = Server::start(binary("sylkgw-mio"), &args);
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
    wait_incoming(&mut s, &bob);
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

// ===== Shared steps of the acceptance tests below =====

/// Waits (≤ 15 s) until the page shows bob's incoming call; bob's call closing first, or nothing
/// arriving, fails at once with kamailio's, baresip's and the page's views.
fn wait_incoming(s: &mut GatewaySetup, bob: &Baresip) {
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
}

/// Waits (in the page, ≤ `ms`) until the JS predicate `pred` over the state `s` holds; panics
/// with `what` and the page's and gateway's views otherwise. Returns the state.
fn page_wait(s: &mut GatewaySetup, pred: &str, ms: u64, what: &str) -> Value {
    match s.b.eval(&format!("phone.waitFor((s) => {pred}, {ms})")) {
        Ok(st) => st,
        Err(e) => panic!("{what}: {e}\n{}", s.diagnostics()),
    }
}

/// The page calls bob (auto-answer): established on both sides.
fn page_calls_bob(s: &mut GatewaySetup, bob: &Baresip) {
    let since = bob.event_count();
    page_call(s, "bob@127.0.0.1");
    page_wait_call(s, "established", CALL_MS);
    bob.wait_event_since(since, "CALL_ESTABLISHED", STEP);
}

/// The page's RTP counters and codecs (`phone.rtpStats()`).
fn page_rtp(s: &mut GatewaySetup) -> Value {
    match s.b.eval("phone.rtpStats()") {
        Ok(v) => v,
        Err(e) => panic!("phone.rtpStats(): {e} (rebuild the binaries: cargo build --workspace)\n{}", s.diagnostics()),
    }
}

/// `(payload type, encoding name)` of each format of the first `m=audio` line of `sdp` (static
/// types without an rtpmap get their RFC 3551 name).
fn audio_formats(sdp: &str) -> Vec<(u8, String)> {
    let mut lines = sdp.lines().map(str::trim);
    let Some(m) = lines.by_ref().find(|l| l.starts_with("m=audio ")) else { return Vec::new() };
    let pts: Vec<u8> = m.split_whitespace().skip(3).filter_map(|p| p.parse().ok()).collect();
    let section: Vec<&str> = lines.take_while(|l| !l.starts_with("m=")).collect();
    pts.into_iter()
        .map(|pt| {
            let name = section
                .iter()
                .find_map(|l| l.strip_prefix(&format!("a=rtpmap:{pt} ")))
                .map(|r| r.split('/').next().unwrap_or("").to_string())
                .unwrap_or_else(|| match pt {
                    0 => "PCMU".into(),
                    8 => "PCMA".into(),
                    9 => "G722".into(),
                    _ => format!("pt{pt}?"),
                });
            (pt, name)
        })
        .collect()
}

/// The digits of baresip's log lines containing `marker` followed by `'D'`, in order, repeats of
/// the same digit in a row collapsed (RFC 4733 logs each event more than once).
fn logged_digits(log: &str, marker: &str) -> String {
    let mut out = String::new();
    for line in log.lines() {
        let Some(at) = line.find(marker) else { continue };
        let rest = &line[at + marker.len()..];
        let Some(d) = rest.trim_start().strip_prefix('\'').and_then(|r| r.chars().next()) else { continue };
        if !out.ends_with(d) {
            out.push(d);
        }
    }
    out
}

/// kamailio's `REQ METHOD ...` lines.
fn kam_requests(kam: &Kamailio, method: &str) -> Vec<String> {
    let needle = format!("REQ {method} ");
    kam.log_text().lines().filter(|l| l.contains(&needle)).map(str::to_string).collect()
}

// ===== Acceptance: incoming call ended before the answer =====

/// Incoming, the caller gives up first: baresip (bob) dials alice through kamailio, the page
/// rings, bob hangs up (CANCEL) before the answer → the page sees `terminated` with reason
/// `487 Request Terminated` and an `account-event` `missed-session` naming bob.
#[test]
fn gateway_incoming_cancelled_by_caller_is_missed() {
    if !in_netns("gateway_incoming_cancelled_by_caller_is_missed") {
        return;
    }
    let work = TempDir::new("gw-d");
    let mut s = gateway_setup(&work);
    let mut bob = start_bob(&work, &s.kam);

    bob.dial("sip:alice@127.0.0.1");
    wait_incoming(&mut s, &bob);
    let since = bob.event_count();
    bob.hangup();
    bob.wait_event_since(since, "CALL_CLOSED", STEP);
    let st = page_wait(&mut s, "s.call === 'terminated'", 10_000, "the page's call did not end after bob's CANCEL");
    assert_eq!(st["callReason"], "487 Request Terminated", "reason of the cancelled call:\n{}", s.diagnostics());
    assert!(s.kam.log_text().contains("REQ CANCEL sip:alice@"), "bob's CANCEL via kamailio:\n{}", s.kam.log_text());
    let st = page_wait(
        &mut s,
        "s.events.some((e) => e.sylkrtc === 'account-event' && e.event === 'missed-session')",
        5_000,
        "no account-event missed-session after the cancelled call",
    );
    let missed: Vec<&Value> = st["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["sylkrtc"] == "account-event" && e["event"] == "missed-session")
        .collect();
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert_eq!(missed[0]["account"], "alice@127.0.0.1", "{}", missed[0]);
    assert!(
        missed[0]["originator"]["uri"].as_str().is_some_and(|u| u.starts_with("bob@127.0.0.1")),
        "missed-session originator: {}",
        missed[0]
    );
    // The protocol orders them: `terminated` first, then `missed-session`.
    let events = st["events"].as_array().expect("events");
    let term = events.iter().position(|e| e["event"] == "state" && e["state"] == "terminated");
    let miss = events.iter().position(|e| e["event"] == "missed-session");
    assert!(term.is_some() && term < miss, "terminated must come before missed-session: {events:?}");
    assert_eq!(st["missed"][0]["uri"], missed[0]["originator"]["uri"], "the page lists the missed call: {st}");
    bob.stop();
    s.b.close();
    s.kam.stop();
}

/// Incoming, the page declines (`phone.decline()`: `session-terminate` before answering) → the
/// caller (baresip) gets `486 Busy Here` (the default `decline_code`), and the page `terminated`.
#[test]
fn gateway_incoming_declined_by_page_gives_486() {
    if !in_netns("gateway_incoming_declined_by_page_gives_486") {
        return;
    }
    let work = TempDir::new("gw-e");
    let mut s = gateway_setup(&work);
    let mut bob = start_bob(&work, &s.kam);

    let since = bob.event_count();
    bob.dial("sip:alice@127.0.0.1");
    wait_incoming(&mut s, &bob);
    s.b.eval_ok("phone.decline()");
    let closed = bob.wait_event_since(since, "CALL_CLOSED", STEP);
    assert!(
        closed["param"].as_str().is_some_and(|p| p.contains("486")),
        "bob's call must end with 486, got CALL_CLOSED {closed}\nbaresip log:\n{}\n{}",
        bob.log_text(),
        s.diagnostics()
    );
    let st = page_wait(&mut s, "s.call === 'terminated'", 5_000, "the page's call did not end after decline");
    assert!(st["events"].as_array().is_some_and(|e| !e.iter().any(|e| e["event"] == "missed-session")), "{st}");
    assert!(bob.received_recordings().is_empty(), "no media for a declined call");
    bob.stop();
    s.b.close();
    s.kam.stop();
}

// ===== Acceptance: DTMF =====

/// RFC 4733 from the browser: on an answered call the page sends "123" with
/// `RTCDTMFSender.insertDTMF` (`phone.dtmf('123', 'rtp')`); baresip receives the three events
/// ("received event: 'D'" in its log) and no INFO is sent.
#[test]
fn gateway_dtmf_rfc4733_from_browser_reaches_baresip() {
    if !in_netns("gateway_dtmf_rfc4733_from_browser_reaches_baresip") {
        return;
    }
    let work = TempDir::new("gw-f");
    let mut s = gateway_setup(&work);
    let bob = start_bob(&work, &s.kam);
    page_calls_bob(&mut s, &bob);
    page_hears(&mut s, BOB_HZ, "baresip's tone");

    s.b.eval_ok("phone.dtmf('123', 'rtp')");
    let deadline = Instant::now() + Duration::from_secs(8);
    while logged_digits(&bob.log_text(), "received event:") != "123" {
        if Instant::now() >= deadline {
            panic!(
                "baresip did not receive the RFC 4733 events 1, 2, 3 (got {:?}); answer SDP given to the page:\n{}\n\
                 baresip log:\n{}\n{}",
                logged_digits(&bob.log_text(), "received event:"),
                s.b.eval_ok("phone.state().remoteSdp"),
                bob.log_text(),
                s.diagnostics()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(kam_requests(&s.kam, "INFO").is_empty(), "RTP DTMF must not become INFO:\n{}", s.kam.log_text());
    page_hangup(&mut s);
    bob.stop();
    s.b.close();
    s.kam.stop();
}

/// `session-dtmf-info` with digit "123" (`phone.dtmf('123', 'info')`) → three SIP INFO requests
/// (application/dtmf-relay), one per digit, in order: kamailio relays three INFOs, baresip logs
/// "received DTMF: '1'", '2', '3'.
#[test]
fn gateway_dtmf_info_one_request_per_digit() {
    if !in_netns("gateway_dtmf_info_one_request_per_digit") {
        return;
    }
    let work = TempDir::new("gw-g");
    let mut s = gateway_setup(&work);
    let bob = start_bob(&work, &s.kam);
    page_calls_bob(&mut s, &bob);

    if let Err(e) = s.b.eval("phone.dtmf('123', 'info')") {
        panic!("the gateway refused session-dtmf-info: {e}\n{}", s.diagnostics());
    }
    let deadline = Instant::now() + Duration::from_secs(8);
    while logged_digits(&bob.log_text(), "received DTMF:") != "123" || kam_requests(&s.kam, "INFO").len() < 3 {
        if Instant::now() >= deadline {
            panic!(
                "expected 3 INFO (1, 2, 3) at baresip: it logged {:?}; kamailio relayed {:?}\nbaresip log:\n{}\n{}",
                logged_digits(&bob.log_text(), "received DTMF:"),
                kam_requests(&s.kam, "INFO"),
                bob.log_text(),
                s.diagnostics()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let infos = kam_requests(&s.kam, "INFO");
    assert_eq!(infos.len(), 3, "one INFO per digit, no more: {infos:?}");
    assert!(infos.iter().all(|l| l.contains("from 127.0.0.1:5080")), "INFOs from the gateway: {infos:?}");
    let received = bob.log_text().lines().filter(|l| l.contains("received DTMF:")).count();
    assert_eq!(received, 3, "baresip's DTMF lines:\n{}", bob.log_text());
    page_hangup(&mut s);
    bob.stop();
    s.b.close();
    s.kam.stop();
}

// ===== Acceptance: hold from the SIP side =====

/// The browser's count of RTP packets sent on the call.
fn page_packets_sent(s: &mut GatewaySetup) -> u64 {
    page_rtp(s)["outbound"]["packets"].as_u64().unwrap_or(0)
}

/// The offer of the last `update` `received` event the page got, and the page's answer to it.
fn last_update(st: &Value) -> (String, String) {
    let offer = st["events"]
        .as_array()
        .and_then(|ev| ev.iter().rev().find(|e| e["event"] == "update" && e["state"] == "received"))
        .and_then(|e| e["sdp"].as_str())
        .unwrap_or_else(|| panic!("no update/received event with an sdp: {st}"))
        .to_string();
    (offer, st["localSdp"].as_str().unwrap_or("").to_string())
}

/// Hold from the SIP side with baresip: on an answered call (page → bob), baresip holds
/// (ctrl_tcp `hold`: a re-INVITE with `a=sendonly` through kamailio) → the page gets `update`
/// `received`, answers it with `session-update` (`a=recvonly`) and the call stays established;
/// the held direction (browser → bob) stops at its source (the browser's RTP packet count
/// stands still; baresip 1.0 also stops sending while it holds, so the page hears nothing
/// either); `resume` → a second update, answered `sendrecv`: the browser sends again and hears
/// bob's 440 Hz again.
///
/// baresip 1.0 stops recording received audio after any re-INVITE (its sndfile filter is not set
/// up again when the audio restarts), so its recording cannot show the media coming back: the
/// held direction's media stopping and resuming end to end is checked by
/// `gateway_hold_from_sipp_echo`.
#[test]
fn gateway_hold_and_resume_from_baresip() {
    if !in_netns("gateway_hold_and_resume_from_baresip") {
        return;
    }
    let work = TempDir::new("gw-h");
    let mut s = gateway_setup(&work);
    let mut bob = start_bob(&work, &s.kam);
    page_calls_bob(&mut s, &bob);
    page_hears(&mut s, BOB_HZ, "baresip's tone");

    bob.command("hold", "");
    let st = page_wait(&mut s, "s.updates >= 1", 10_000, "the page did not answer bob's hold re-INVITE");
    let (offer, answer) = last_update(&st);
    assert!(offer.contains("a=sendonly"), "the hold offer given to the page:\n{offer}");
    assert!(answer.contains("a=recvonly"), "the page's answer to the hold:\n{answer}");
    assert_eq!(st["call"], "established", "{}", s.diagnostics());
    std::thread::sleep(Duration::from_millis(1000));
    let p1 = page_packets_sent(&mut s);
    std::thread::sleep(Duration::from_millis(1500));
    let p2 = page_packets_sent(&mut s);
    assert!(p2 <= p1 + 2, "on hold the browser still sends RTP: {p1} → {p2} packets\n{}", s.diagnostics());

    bob.command("resume", "");
    let st = page_wait(&mut s, "s.updates >= 2", 10_000, "the page did not answer bob's resume re-INVITE");
    let (offer, answer) = last_update(&st);
    assert!(!offer.contains("a=sendonly") && !offer.contains("a=inactive"), "the resume offer:\n{offer}");
    assert!(!answer.contains("a=recvonly") && !answer.contains("a=inactive"), "the page's answer:\n{answer}");
    std::thread::sleep(Duration::from_millis(1000));
    let p3 = page_packets_sent(&mut s);
    page_hears(&mut s, BOB_HZ, "baresip's tone after resume");
    std::thread::sleep(Duration::from_millis(500));
    let p4 = page_packets_sent(&mut s);
    assert!(p4 >= p3 + 25, "after resume the browser does not send again: {p3} → {p4} packets\n{}", s.diagnostics());
    let reinvites: Vec<String> =
        kam_requests(&s.kam, "INVITE").into_iter().filter(|l| l.contains("from 127.0.0.1:5064")).collect();
    assert_eq!(reinvites.len(), 2, "bob's hold and resume re-INVITEs: {reinvites:?}");
    assert!(!bob.events().iter().any(|e| e["type"] == "CALL_CLOSED"), "bob's call ended: {:?}", bob.events());
    page_hangup(&mut s);
    bob.stop();
    s.b.close();
    s.kam.stop();
}

/// Hold from the SIP side, media end to end: the page calls a sipp `-rtp_echo` UAS
/// (`tests/peers/sipp/uas_hold_echo.xml`) that re-INVITEs with `a=sendonly` 6 s after the answer
/// and with `a=sendrecv` 6 s later. The page hears its own 1000 Hz echoed; on hold it answers
/// `recvonly`, stops sending and hears silence (nothing left to echo); after the resume it hears
/// its echo again. sipp gets its two 200s, the BYE, and exits 0.
#[test]
fn gateway_hold_from_sipp_echo() {
    if !in_netns("gateway_hold_from_sipp_echo") {
        return;
    }
    let work = TempDir::new("gw-m");
    let mut s = gateway_setup(&work);
    let mut echo = Sipp::new(work.path(), Scenario::peer_file("uas_hold_echo.xml"))
        .local(addr(5076))
        .media_port(6000)
        .calls(1)
        .arg("-rtp_echo")
        .timeout(Duration::from_secs(40))
        .spawn();
    echo.wait_bound(STEP);

    page_call(&mut s, "echo@127.0.0.1:5076");
    page_wait_call(&mut s, "established", CALL_MS);
    page_hears(&mut s, ALICE_HZ, "its own tone echoed by sipp");

    let st = page_wait(&mut s, "s.updates >= 1", 12_000, "the page did not answer sipp's hold re-INVITE");
    let (offer, answer) = last_update(&st);
    assert!(offer.contains("a=sendonly"), "the hold offer given to the page:\n{offer}");
    assert!(answer.contains("a=recvonly"), "the page's answer to the hold:\n{answer}");
    std::thread::sleep(Duration::from_millis(800));
    let freqs = serde_json::to_string(&probe_freqs(ALICE_HZ)).expect("json");
    let held = s.b.eval_ok(&format!("phone.toneLevels({freqs}, {{ms: 1500}})"));
    eprintln!("[hold] page hears while held: {held}");
    assert!(
        held["dominant"].as_f64() != Some(ALICE_HZ) && held["rms"].as_f64().is_some_and(|r| r < 0.005),
        "on hold the echo of the browser's tone must stop: {held}\n{}",
        s.diagnostics()
    );

    let st = page_wait(&mut s, "s.updates >= 2", 12_000, "the page did not answer sipp's resume re-INVITE");
    let (offer, answer) = last_update(&st);
    assert!(offer.contains("a=sendrecv") || !offer.contains("a=sendonly"), "the resume offer:\n{offer}");
    assert!(!answer.contains("a=recvonly") && !answer.contains("a=inactive"), "the page's answer:\n{answer}");
    page_hears(&mut s, ALICE_HZ, "its own tone echoed again after the resume");
    page_hangup(&mut s);
    let done = echo.wait(STEP);
    done.assert_success();
    assert!(done.messages.contains("a=recvonly"), "the gateway answered the hold recvonly:\n{done}");
    s.b.close();
    s.kam.stop();
}

// ===== Acceptance: codecs =====

/// Panics unless the audio codecs (telephone-event aside) of `sdp` are exactly `want` and
/// telephone-event/8000 is there too.
#[track_caller]
fn assert_audio_codecs(sdp: &str, want: &[&str], what: &str) {
    let f = audio_formats(sdp);
    let audio: Vec<&str> =
        f.iter().map(|(_, n)| n.as_str()).filter(|n| !n.eq_ignore_ascii_case("telephone-event")).collect();
    assert!(
        audio.len() == want.len() && audio.iter().zip(want).all(|(a, w)| a.eq_ignore_ascii_case(w)),
        "{what}: audio codecs {f:?}, want only {want:?}:\n{sdp}"
    );
    assert!(
        f.iter().any(|(_, n)| n.eq_ignore_ascii_case("telephone-event")),
        "{what}: no telephone-event: {f:?}\n{sdp}"
    );
}

/// A PCMU-only far end (sipp echo UAS answering PCMU 0 + telephone-event 101): the answer the
/// page gets (`accepted`'s sdp) carries only PCMU (payload 0) and telephone-event; the browser
/// receives PCMU and hears its own tone.
#[test]
fn gateway_codecs_pcmu_only_far_end() {
    if !in_netns("gateway_codecs_pcmu_only_far_end") {
        return;
    }
    let work = TempDir::new("gw-i");
    let mut s = gateway_setup(&work);
    let mut echo = Sipp::echo_uas_te(work.path(), addr(5076), 6000).spawn();
    echo.wait_bound(STEP);

    page_call(&mut s, "echo@127.0.0.1:5076");
    page_wait_call(&mut s, "established", CALL_MS);
    let st = s.b.eval_ok("phone.state()");
    let sdp = st["remoteSdp"].as_str().unwrap_or_else(|| panic!("no answer SDP in the page's state: {st}"));
    let accepted = st["events"]
        .as_array()
        .and_then(|ev| ev.iter().find(|e| e["event"] == "state" && e["state"] == "accepted"))
        .and_then(|e| e["sdp"].as_str())
        .unwrap_or_else(|| panic!("no accepted event with an sdp: {st}"));
    assert_eq!(sdp, accepted, "remoteSdp is the accepted event's sdp");
    assert_audio_codecs(sdp, &["PCMU"], "the answer to the browser (PCMU-only far end)");
    assert!(audio_formats(sdp).iter().any(|(pt, n)| *pt == 0 && n == "PCMU"), "PCMU at payload 0:\n{sdp}");
    page_hears(&mut s, ALICE_HZ, "its own tone echoed by sipp (PCMU)");
    let rtp = page_rtp(&mut s);
    assert!(rtp["inbound"]["codec"].as_str().is_some_and(|c| c.eq_ignore_ascii_case("audio/PCMU")), "{rtp}");
    page_hangup(&mut s);
    echo.wait(STEP).assert_success();
    s.b.close();
    s.kam.stop();
}

/// An Opus far end: baresip with its `opus` module (baresip-core ships
/// /usr/lib/baresip/modules/opus.so), `audio_codecs=opus/48000/2` and a 48 kHz stereo source: the answer the page gets carries
/// opus as its only audio codec, the browser sends and receives opus (getStats), and the tones
/// still cross both ways (the page hears 440 Hz, baresip's recording holds 1000 Hz).
#[test]
fn gateway_codecs_opus_far_end() {
    if !in_netns("gateway_codecs_opus_far_end") {
        return;
    }
    assert!(
        Path::new("/usr/lib/baresip/modules/opus.so").is_file(),
        "baresip's opus module is missing: apt-get install baresip-core"
    );
    let work = TempDir::new("gw-j");
    let mut s = gateway_setup(&work);
    // baresip's aufile source must match the codec's format (48 kHz stereo for opus/48000/2):
    // it refuses the call's source otherwise ("No such device").
    let wav = work.path().join("bob440-48k-stereo.wav");
    let stereo: Vec<i16> = tone_samples(BOB_HZ, 48000, 60.0, 0.3).into_iter().flat_map(|x| [x, x]).collect();
    std::fs::write(&wav, audio::wav_bytes(48000, 2, &stereo)).expect("writing the stereo WAV");
    let bob = start_bob_with(&work, &s.kam, |mut o| {
        o.modules = vec!["opus.so".into()];
        o.codecs = "opus/48000/2".into();
        o.source_wav = wav;
        o
    });
    page_calls_bob(&mut s, &bob);
    let st = s.b.eval_ok("phone.state()");
    let sdp = st["remoteSdp"].as_str().unwrap_or_else(|| panic!("no answer SDP in the page's state: {st}"));
    let f = audio_formats(sdp);
    let audio: Vec<&str> =
        f.iter().map(|(_, n)| n.as_str()).filter(|n| !n.eq_ignore_ascii_case("telephone-event")).collect();
    assert!(
        audio.len() == 1 && audio[0].eq_ignore_ascii_case("opus"),
        "the answer to the browser (Opus far end): audio codecs {f:?}, want only opus:\n{sdp}\nbaresip log:\n{}",
        bob.log_text()
    );
    page_hears(&mut s, BOB_HZ, "baresip's tone over Opus");
    let rtp = page_rtp(&mut s);
    for dir in ["inbound", "outbound"] {
        assert!(rtp[dir]["codec"].as_str().is_some_and(|c| c.eq_ignore_ascii_case("audio/opus")), "{dir}: {rtp}");
    }
    std::thread::sleep(Duration::from_secs(1));
    page_hangup(&mut s);
    bob.wait_event("CALL_CLOSED", STEP);
    let log = bob.log_text();
    assert!(log.to_ascii_lowercase().contains("opus"), "baresip used opus:\n{log}");
    let rx = bob.last_received();
    let r = assert_tone(&rx.samples, rx.rate, ALICE_HZ, "what baresip received from the browser over Opus");
    eprintln!("[audio] baresip received over Opus ({} Hz): {r}", rx.rate);
    bob.stop();
    s.b.close();
    s.kam.stop();
}

// ===== Acceptance: faults =====

/// The gateway's media timeout in these tests, seconds (`media_timeout` in its config file).
const SHORT_MEDIA_TIMEOUT: u64 = 3;

/// The far end dies: on an answered call (page → bob), baresip is SIGKILLed by PID; with
/// `media_timeout = 3` the gateway ends the call after ~3 s without RTP: the page sees
/// `terminated` (`408 Media Timeout`), and the gateway sent a BYE (kamailio relays it).
#[test]
fn gateway_far_end_killed_media_timeout_ends_call() {
    if !in_netns("gateway_far_end_killed_media_timeout_ends_call") {
        return;
    }
    let work = TempDir::new("gw-k");
    let mut s = gateway_setup_with(&work, Some(&format!("media_timeout = {SHORT_MEDIA_TIMEOUT}\n")));
    let bob = start_bob(&work, &s.kam);
    page_calls_bob(&mut s, &bob);
    page_hears(&mut s, BOB_HZ, "baresip's tone");
    // Media flows for longer than the timeout: the timer is re-armed, not fired.
    std::thread::sleep(Duration::from_secs(SHORT_MEDIA_TIMEOUT + 1));
    assert_eq!(s.b.eval_ok("phone.state().call"), "established", "{}", s.diagnostics());

    let pid = bob.pid();
    send_signal(pid, libc::SIGKILL);
    let killed = Instant::now();
    let st = page_wait(&mut s, "s.call === 'terminated'", 15_000, "the call did not end after the far end died");
    let after = killed.elapsed();
    assert!(
        after >= Duration::from_secs(SHORT_MEDIA_TIMEOUT - 1) && after <= Duration::from_secs(SHORT_MEDIA_TIMEOUT + 5),
        "the call ended {after:?} after the kill; media_timeout is {SHORT_MEDIA_TIMEOUT} s\n{}",
        s.diagnostics()
    );
    assert_eq!(st["callReason"], "408 Media Timeout", "{}", s.diagnostics());
    let deadline = Instant::now() + STEP;
    while !kam_requests(&s.kam, "BYE").iter().any(|l| l.contains("from 127.0.0.1:5080")) {
        assert!(
            Instant::now() < deadline,
            "the gateway sent no BYE after the media timeout; kamailio log:\n{}\n{}",
            s.kam.log_text(),
            s.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(bob);
    assert!(!alive(pid));
    s.b.close();
    s.kam.stop();
}

/// The WebSocket closes mid-call (`phone.disconnect()`): the gateway sends a BYE (kamailio
/// relays it from the gateway) and baresip's call ends.
#[test]
fn gateway_websocket_closed_mid_call_sends_bye() {
    if !in_netns("gateway_websocket_closed_mid_call_sends_bye") {
        return;
    }
    let work = TempDir::new("gw-l");
    let mut s = gateway_setup(&work);
    let bob = start_bob(&work, &s.kam);
    page_calls_bob(&mut s, &bob);
    page_hears(&mut s, BOB_HZ, "baresip's tone");

    let since = bob.event_count();
    s.b.eval_ok("phone.disconnect()");
    assert_eq!(s.b.eval_ok("phone.state().connection"), "closed");
    let deadline = Instant::now() + STEP;
    while !bob.events().into_iter().skip(since).any(|e| e["type"] == "CALL_CLOSED") {
        assert!(
            Instant::now() < deadline,
            "baresip's call did not end after the WebSocket closed; kamailio log:\n{}\nbaresip log:\n{}\n{}",
            s.kam.log_text(),
            bob.log_text(),
            s.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let byes = kam_requests(&s.kam, "BYE");
    assert!(byes.iter().any(|l| l.contains("from 127.0.0.1:5080")), "the BYE came from the gateway: {byes:?}");
    // libre reports a BYE received as ECONNRESET.
    assert!(
        bob.log_text().contains("session closed: Connection reset by peer"),
        "baresip's call must end by the peer's BYE:\n{}",
        bob.log_text()
    );
    bob.stop();
    s.b.close();
    s.kam.stop();
}

// ===== Acceptance: video =====

/// The page's video RTP counters (`phone.rtpStats().video`), or `null` while none flow.
fn page_video(s: &mut GatewaySetup) -> Value {
    page_rtp(s)["video"].clone()
}

/// A video call: the web phone (Chromium's fake camera and its 1000 Hz microphone) calls a sipp
/// `-rtp_echo` UAS answering PCMU + telephone-event and VP8 on its media port + 2
/// (`tests/peers/sipp/uas_video_echo.xml`), behind kamailio. The INVITE carries an `m=video` line
/// on a second port of the gateway; the answer the page gets has video with VP8 only; the page
/// decodes its own video echoed by sipp (getStats `framesDecoded` > 0 and growing) and still hears
/// its own tone; the hangup reaches sipp as a BYE.
#[test]
fn gateway_video_call_to_sipp_echo() {
    if !in_netns("gateway_video_call_to_sipp_echo") {
        return;
    }
    let work = TempDir::new("gw-video");
    let mut s = gateway_setup(&work);
    let mut echo = Sipp::echo_uas_video(work.path(), addr(5076), 6000).spawn();
    echo.wait_bound(STEP);

    if let Err(e) = s.b.eval("phone.call('echo@127.0.0.1:5076', {video: true})") {
        panic!("the gateway refused the video call: {e}\n{}", s.diagnostics());
    }
    page_wait_call(&mut s, "established", CALL_MS);
    let st = s.b.eval_ok("phone.state()");
    let answer = st["remoteSdp"].as_str().unwrap_or_else(|| panic!("no answer SDP in the page's state: {st}"));
    let video = answer.split("m=video").nth(1).unwrap_or_else(|| panic!("no video in the answer:\n{answer}"));
    let video_line = video.lines().next().unwrap_or_default();
    assert!(!video_line.trim_start().starts_with("0 "), "video refused in the answer:\n{answer}");
    // Retransmission formats (rtx, which str0m answers for the browser's own NACKs) are no codecs.
    let rtpmaps: Vec<&str> = video
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=rtpmap:"))
        .filter(|m| !m.to_ascii_lowercase().ends_with(" rtx/90000"))
        .collect();
    assert!(
        rtpmaps.len() == 1 && rtpmaps[0].ends_with("VP8/90000"),
        "the answer's video has exactly the VP8 sipp took: {rtpmaps:?}\n{answer}"
    );
    // Decoded video frames arrive, and keep arriving.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut decoded = 0;
    loop {
        let v = page_video(&mut s);
        let now_decoded = v["inbound"]["framesDecoded"].as_u64().unwrap_or(0);
        if decoded > 0 && now_decoded > decoded {
            eprintln!("[video] page decodes its echoed video: {v}");
            assert!(v["inbound"]["codec"].as_str().is_some_and(|c| c.eq_ignore_ascii_case("video/VP8")), "{v}");
            break;
        }
        if now_decoded > 0 && decoded == 0 {
            decoded = now_decoded;
        }
        assert!(
            Instant::now() < deadline,
            "no (or no more) decoded video frames in the page: {v}\nsipp:\n{}\n{}",
            std::fs::read_to_string(&echo.messages).unwrap_or_default(),
            s.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    page_hears(&mut s, ALICE_HZ, "its own tone echoed by sipp (video call)");
    page_hangup(&mut s);
    let done = echo.wait(STEP);
    done.assert_success();
    let invite = done.messages.split("INVITE sip:").nth(1).unwrap_or_default();
    let m_video = invite.lines().map(str::trim).find(|l| l.starts_with("m=video ")).unwrap_or_default();
    let m_audio = invite.lines().map(str::trim).find(|l| l.starts_with("m=audio ")).unwrap_or_default();
    let port = |m: &str| m.split(' ').nth(1).and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
    assert!(
        m_video.contains(" RTP/AVP ") && (40000..41000).contains(&port(m_video)) && port(m_video) != port(m_audio),
        "the INVITE offers video on a second port of the gateway's range: {m_video:?} / {m_audio:?}\n{done}"
    );
    assert!(invite.contains("VP8/90000"), "the INVITE offers VP8:\n{done}");
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
