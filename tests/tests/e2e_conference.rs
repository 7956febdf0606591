//! Conferences (issue #13) end to end: three participants in headless Chromium (one page, each
//! participant with its own WebSocket, its own tone and its own video size, see
//! `tests/src/web/conference_probe.js`) join one room through `sylkgw-mio`, each receives the
//! other two: audio checked by frequency, video decoded (frames rising, the publisher's size).
//! One leaves, one WebSocket vanishes; the others get `publishers-left`. On `sylkgw-mio`, and on
//! `sylkgw` with one worker (a room lives on one worker: docs/conferences.md). Each runs in its
//! own network namespace with only loopback; Chromium is stopped by PID.

use std::time::Duration;
use sylkgw_tests::browser::Browser;
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::{binary, Server};

const STEP: Duration = Duration::from_secs(20);
const PROBE: &str = include_str!("../src/web/conference_probe.js");
/// Each participant's tone (Hz) and video size.
const PARTIES: [(u32, u32, u32); 3] = [(440, 320, 240), (700, 352, 288), (1100, 400, 300)];

#[test]
fn e2e_three_chromium_participants_in_one_room_mio() {
    if in_netns("e2e_three_chromium_participants_in_one_room_mio") {
        three_participants(Server::start(binary("sylkgw-mio"), &[] as &[&str]));
    }
}

#[test]
fn e2e_three_chromium_participants_in_one_room_tokio() {
    if in_netns("e2e_three_chromium_participants_in_one_room_tokio") {
        three_participants(Server::start(binary("sylkgw"), &["--threads", "1"]));
    }
}

fn three_participants(gw: Server) {
    let mut b = Browser::launch(&format!("http://{}/", gw.addr));
    b.wait_for("typeof window.phone === 'object'", STEP);
    b.eval_ok(PROBE);
    for (i, (freq, w, h)) in PARTIES.iter().enumerate() {
        let joined = b.eval(&format!("conf.join({i}, {freq}, {w}, {h})"));
        assert_eq!(joined, Ok("established".into()), "gateway log:\n{}\n{}", gw.stderr_text(), b.diagnostics());
    }
    for i in 0..3 {
        for j in (0..3).filter(|j| *j != i) {
            let attached = b.eval(&format!("conf.attach({i}, {j})"));
            assert_eq!(attached, Ok("established".into()), "feed {i}{j}: {}\n{}", gw.stderr_text(), b.diagnostics());
        }
    }
    // Video decodes at each publisher's size, and keeps decoding.
    let freqs: Vec<u32> = PARTIES.iter().map(|p| p.0).collect();
    for i in 0..3 {
        for j in (0..3).filter(|j| *j != i) {
            let (_, w, h) = PARTIES[j];
            let expr = format!("conf.feedStats({i}, {j}).then(s => s.framesDecoded > 20 && s.width === {w} && s.height === {h} && s.packets > 50)");
            b.wait_for(&expr, STEP);
            let before = b.eval_ok(&format!("conf.feedStats({i}, {j})"))["framesDecoded"].as_u64().unwrap();
            b.wait_for(&format!("conf.feedStats({i}, {j}).then(s => s.framesDecoded > {before} + 10)"), STEP);
            let levels = b.eval_ok(&format!("conf.tone({i}, {j}, {freqs:?})"));
            assert_eq!(
                levels["dominant"].as_u64(),
                Some(u64::from(PARTIES[j].0)),
                "participant {i} hears {j}'s tone: {levels}"
            );
        }
    }
    media_extras(&mut b, &gw);
    // Participant 2 leaves: the others get publishers-left and close their feeds of it.
    assert_eq!(b.eval_ok("conf.leave(2)"), "left");
    for i in 0..2 {
        let expr = format!("conf.events({i}).some(e => e.event === 'publishers-left' && e.publishers[0] === 'p2')");
        b.wait_for(&expr, STEP);
        assert_eq!(b.eval_ok(&format!("conf.dropFeed({i}, 2)")), 1);
    }
    // Participant 1's WebSocket vanishes: participant 0 is told, and still has media from nobody
    // else; the gateway keeps serving (a new join works).
    assert_eq!(b.eval_ok("conf.vanish(1)"), "closed");
    b.wait_for("conf.events(0).some(e => e.event === 'publishers-left' && e.publishers[0] === 'p1')", STEP);
    assert_eq!(b.eval_ok("conf.dropFeed(0, 1)"), 0);
    assert_eq!(b.eval_ok("conf.leave(0)"), "left");
    assert_eq!(b.eval("conf.join(3, 500, 320, 240)"), Ok("established".into()), "{}", gw.stderr_text());
    b.close();
}

/// Audio levels and REMB with real browsers (docs/conferences.md): every participant is told the
/// others' tones are loud (`conference-audio-levels`, from Chromium's RFC 6464 extension); a
/// publisher that caps itself (`videoroom-session-update` `bitrate`) gets a REMB its send-side
/// estimate follows.
fn media_extras(b: &mut Browser, gw: &Server) {
    for i in 0..3 {
        // Each tone is at half of full scale; Chromium reports it at about -9 dBov (0.35).
        let others = (0..3).filter(|j| *j != i).map(|j| format!("'p{j}'")).collect::<Vec<_>>().join(",");
        let expr = format!(
            "(conf.levels({i}) || []).filter(l => [{others}].includes(l.participant_id) && l.rx_peak >= 0.2).length === 2"
        );
        b.wait_for(&expr, STEP);
    }
    assert_eq!(b.eval_ok("conf.update(0, {bitrate: 150000})"), "updated", "{}", gw.stderr_text());
    b.wait_for("conf.sendStats(0).then(s => s.available > 0 && s.available <= 160000)", STEP);
}
