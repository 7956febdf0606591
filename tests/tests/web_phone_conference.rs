//! The built-in web phone in a conference room (issue #13): headless Chromium pages, each with
//! its own fake microphone tone and its own camera size, open the web phone the gateway serves,
//! add an account and join one room. Each page shows every other participant as a tile with
//! their name, whose video plays (frames decoded, rising, at the publisher's size) and whose
//! audio is the publisher's tone (WebAudio + Goertzel, `phone.toneLevels`, measured on the
//! tile's own `<audio>`). A raised hand shows on the others' tiles; muting the room mutes the
//! others' microphones (their tiles say so); a participant who leaves loses its tile
//! everywhere. Three pages on `sylkgw-mio`, two on `sylkgw --threads 1` (a room lives on one
//! worker: docs/conferences.md). Each runs in its own network namespace with only loopback;
//! Chromium is stopped by PID.
//!
//! `SYLKGW_SCREENSHOT_DIR=DIR` saves a PNG of the first page with its tiles.

use serde_json::json;
use std::path::Path;
use std::time::Duration;
use sylkgw_tests::browser::Browser;
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::{audio, binary, Server, TempDir};

const STEP: Duration = Duration::from_secs(30);
const ROOM: &str = "room@videoconference.example.com";

/// A participant: display name, tone (Hz) of its fake microphone, camera size asked for.
struct Party {
    name: &'static str,
    freq: u32,
    width: u32,
    height: u32,
}

const PARTIES: [Party; 3] = [
    Party { name: "Ann", freq: 440, width: 320, height: 240 },
    Party { name: "Ben", freq: 700, width: 352, height: 288 },
    Party { name: "Cy", freq: 1100, width: 400, height: 300 },
];

#[test]
fn web_phone_conference_three_pages_mio() {
    if in_netns("web_phone_conference_three_pages_mio") {
        conference(Server::start(binary("sylkgw-mio"), &[] as &[&str]), 3);
    }
}

#[test]
fn web_phone_conference_two_pages_tokio() {
    if in_netns("web_phone_conference_two_pages_tokio") {
        conference(Server::start(binary("sylkgw"), &["--threads", "1"]), 2);
    }
}

/// `expr` about the tile of `session` (`t` in `expr`), or false when there is no such tile.
fn tile(session: &str, expr: &str) -> String {
    format!("(t => !!t && ({expr}))(document.querySelector('#tiles .tile[data-session={}]'))", json!(session))
}

fn join(b: &mut Browser, i: usize) -> String {
    let p = &PARTIES[i];
    b.wait_for("typeof window.phone === 'object'", STEP);
    assert_eq!(b.eval_ok("phone.connect()"), "ready");
    b.eval_ok(&format!("phone.addAccount('u{i}@example.com', 'secret', '{}')", p.name));
    // The tones are steady: the microphone's echo canceller and noise suppressor would take
    // them for echo or noise (a participant who hears one other is soon silenced).
    let raw = "{echoCancellation: false, noiseSuppression: false, autoGainControl: false}";
    let session =
        b.eval_ok(&format!("phone.joinRoom('{ROOM}', {{width: {}, height: {}, audio: {raw}}})", p.width, p.height));
    b.wait_for("phone.state().room.state === 'established'", STEP);
    // Our own tile comes first, with our camera.
    b.wait_for(
        &tile(session.as_str().unwrap(), "t.classList.contains('self') && t.classList.contains('playing')"),
        STEP,
    );
    session.as_str().expect("the publisher session").to_string()
}

fn conference(gw: Server, n: usize) {
    let work = TempDir::new("web-phone-conference");
    let url = format!("http://{}/", gw.addr);
    let mut pages: Vec<Browser> = PARTIES[..n]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let wav = work.path().join(format!("tone{i}.wav"));
            audio::write_tone_wav(&wav, f64::from(p.freq), 48_000, 10.0, 0.3).expect("tone wav");
            Browser::launch_with_fake_audio(&url, Path::new(&wav))
        })
        .collect();
    let sessions: Vec<String> = (0..n).map(|i| join(&mut pages[i], i)).collect();
    let freqs: Vec<u32> = PARTIES[..n].iter().map(|p| p.freq).collect();

    for (i, b) in pages.iter_mut().enumerate() {
        b.wait_for(&format!("phone.state().room.participants.length === {n}"), STEP);
        for (j, p) in PARTIES[..n].iter().enumerate().filter(|(j, _)| *j != i) {
            let s = &sessions[j];
            // The tile: their name, their video playing at their size, frames still coming.
            b.wait_for(&tile(s, &format!("t.querySelector('.who').textContent === '{}'", p.name)), STEP);
            b.wait_for(&tile(s, "t.classList.contains('playing')"), STEP);
            let stats = format!("phone.roomStats().then(r => r.feeds[{}])", json!(s));
            let sized = format!(
                "{stats}.then(f => f.framesDecoded > 20 && f.width === {} && f.height === {} && f.audioPackets > 50)",
                p.width, p.height
            );
            b.wait_for(&sized, STEP);
            let before = b.eval_ok(&stats)["framesDecoded"].as_u64().expect("framesDecoded");
            b.wait_for(&format!("{stats}.then(f => f.framesDecoded > {before} + 10)"), STEP);
            // Their tone on the tile's audio element.
            let probe = format!(
                "phone.toneLevels({freqs:?}, {{stream: document.querySelector('#tiles .tile[data-session={}] audio').srcObject, ms: 1500}})",
                json!(s)
            );
            let levels = b.eval_ok(&probe);
            assert_eq!(levels["dominant"].as_u64(), Some(u64::from(p.freq)), "page {i} hears {}: {levels}", p.name);
        }
    }

    // A raised hand shows on the others' tiles of that participant.
    pages[0].eval_ok("phone.toggleHand()");
    for b in pages.iter_mut() {
        b.wait_for(&tile(&sessions[0], "t.classList.contains('hand')"), STEP);
    }
    // Muting the room (videoroom-mute-audio-participants) mutes everybody else's microphone,
    // and their own tile says so.
    pages[0].eval_ok("phone.request('videoroom-mute-audio-participants', {session: phone.state().room.session})");
    for (b, s) in pages.iter_mut().zip(&sessions).skip(1) {
        b.wait_for(&tile(s, "t.classList.contains('muted') && document.getElementById('mute').checked"), STEP);
    }
    assert_eq!(pages[0].eval_ok(&tile(&sessions[0], "t.classList.contains('muted')")), false);
    if let Some(dir) = std::env::var_os("SYLKGW_SCREENSHOT_DIR") {
        pages[0].save_screenshot(&std::path::PathBuf::from(dir).join(format!("web_phone_conference_{n}.png")));
    }

    // The last one leaves: its tile goes from the others' pages, its own page has none left.
    let last = n - 1;
    pages[last].eval_ok("phone.leaveRoom()");
    assert_eq!(pages[last].eval_ok("phone.state().room.state"), "terminated");
    assert_eq!(pages[last].eval_ok("document.querySelectorAll('#tiles .tile').length"), 0);
    for b in pages[..last].iter_mut() {
        b.wait_for(&format!("!document.querySelector('#tiles .tile[data-session={}]')", json!(sessions[last])), STEP);
        assert_eq!(b.eval_ok("phone.state().room.participants.length"), json!(last));
    }
    for b in pages {
        b.close();
    }
}
