//! Conferences on `sylkRTC-1` end to end (issue #16): three participants in headless Chromium
//! (`tests/src/web/conference_probe.js` in its sylkRTC-1 dialect: SylkServer 4.1's
//! `videoroom-join`, `videoroom-ctl` with `trickle` / `feed-attach` / `feed-answer`,
//! `videoroom-terminate`) join one room of `sylkgw-mio`, each receives the other two: audio
//! checked by frequency, video decoded (frames rising, the publisher's size). One terminates:
//! the others get 4.1's `publishers_left`; one WebSocket vanishes, the last one gets it too. In
//! its own network namespace with only loopback; Chromium is stopped by PID.

use std::time::Duration;
use sylkgw_tests::browser::Browser;
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::{binary, Server};

const STEP: Duration = Duration::from_secs(20);
const PROBE: &str = include_str!("../src/web/conference_probe.js");
/// Each participant's tone (Hz) and video size.
const PARTIES: [(u32, u32, u32); 3] = [(440, 320, 240), (700, 352, 288), (1100, 400, 300)];

#[test]
fn e2e_three_sylkrtc1_participants_in_one_room() {
    if !in_netns("e2e_three_sylkrtc1_participants_in_one_room") {
        return;
    }
    let gw = Server::start(binary("sylkgw-mio"), &[] as &[&str]);
    let mut b = Browser::launch(&format!("http://{}/", gw.addr));
    b.wait_for("typeof window.phone === 'object'", STEP);
    b.eval_ok(PROBE);
    assert_eq!(b.eval_ok("conf.dialect('sylkRTC-1')"), "sylkRTC-1");
    for (i, (freq, w, h)) in PARTIES.iter().enumerate() {
        let joined = b.eval(&format!("conf.join({i}, {freq}, {w}, {h})"));
        assert_eq!(joined, Ok("established".into()), "gateway log:\n{}\n{}", gw.stderr_text(), b.diagnostics());
    }
    // What came is 4.1's: `videoroom_event`, details under `data`.
    let accepted = "conf.events(0).find(e => e.state === 'accepted').raw";
    assert_eq!(b.eval_ok(&format!("{accepted}.sylkrtc + ' ' + {accepted}.event")), "videoroom_event state");
    let joined = "conf.events(0).find(e => e.event === 'publishers-joined').raw.data.publishers[0]";
    assert_eq!(b.eval_ok(&format!("{joined}.id + ' ' + {joined}.uri")), "p1 u1@example.com");
    for i in 0..3 {
        for j in (0..3).filter(|j| *j != i) {
            let attached = b.eval(&format!("conf.attach({i}, {j})"));
            assert_eq!(attached, Ok("established".into()), "feed {i}{j}: {}\n{}", gw.stderr_text(), b.diagnostics());
        }
    }
    let feed = "conf.events(0).find(e => e.event === 'feed-established').raw";
    assert_eq!(b.eval_ok(&format!("{feed}.event + ' ' + {feed}.data.subscription")), "feed_established f01");
    // Video decodes at each publisher's size and keeps decoding; each hears the others' tones.
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
    // Participant 2 terminates (`videoroom-terminate`, acked, then `state` `terminated`): the
    // others get 4.1's `publishers_left`.
    assert_eq!(b.eval_ok("conf.leave(2)"), "left");
    b.wait_for("conf.events(2).some(e => e.raw.event === 'state' && e.raw.data.state === 'terminated')", STEP);
    for i in 0..2 {
        let expr = format!(
            "conf.events({i}).some(e => e.raw.sylkrtc === 'videoroom_event' && e.raw.event === 'publishers_left' \
             && e.raw.session === 'p{i}' && e.raw.data.publishers[0] === 'p2')"
        );
        b.wait_for(&expr, STEP);
        assert_eq!(b.eval_ok(&format!("conf.dropFeed({i}, 2)")), 1);
    }
    // Media goes on between the two left.
    let before = b.eval_ok("conf.feedStats(0, 1)")["framesDecoded"].as_u64().unwrap();
    b.wait_for(&format!("conf.feedStats(0, 1).then(s => s.framesDecoded > {before} + 10)"), STEP);
    // Participant 1's WebSocket vanishes: participant 0 is told.
    assert_eq!(b.eval_ok("conf.vanish(1)"), "closed");
    b.wait_for(
        "conf.events(0).some(e => e.raw.event === 'publishers_left' && e.raw.data.publishers[0] === 'p1')",
        STEP,
    );
    assert_eq!(b.eval_ok("conf.dropFeed(0, 1)"), 0);
    assert_eq!(b.eval_ok("conf.leave(0)"), "left");
    b.close();
}
