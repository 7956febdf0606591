//! Conferences (issue #13) end to end: three participants in headless Chromium (one page, each
//! participant with its own WebSocket, its own tone and its own video size, see
//! `tests/src/web/conference_probe.js`) join one room through `sylkgw-mio`, each receives the
//! other two: audio checked by frequency, video decoded (frames rising, the publisher's size).
//! One leaves, one WebSocket vanishes; the others get `publishers-left`. On `sylkgw-mio`, on
//! `sylkgw` with one worker, and on `sylkgw --threads 2` with the participants' WebSockets
//! provably on both workers (the per-worker gauges of `/metrics` say which worker took each
//! WebSocket before it joins; the room lives on its home worker: docs/conferences.md). Each runs
//! in its own network namespace with only loopback; Chromium is stopped by PID.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use sylkgw_core::conference::remote::home_of;
use sylkgw_tests::browser::Browser;
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::{binary, http_request, Server};

const STEP: Duration = Duration::from_secs(20);
const PROBE: &str = include_str!("../src/web/conference_probe.js");
/// Each participant's tone (Hz) and video size.
const PARTIES: [(u32, u32, u32); 3] = [(440, 320, 240), (700, 352, 288), (1100, 400, 300)];
/// The probe's room.
const ROOM: &str = "room@videoconference.example.com";

#[test]
fn e2e_three_chromium_participants_in_one_room_mio() {
    if in_netns("e2e_three_chromium_participants_in_one_room_mio") {
        three_participants(Server::start(binary("sylkgw-mio"), &[] as &[&str]), None);
    }
}

#[test]
fn e2e_three_chromium_participants_in_one_room_tokio() {
    if in_netns("e2e_three_chromium_participants_in_one_room_tokio") {
        three_participants(Server::start(binary("sylkgw"), &["--threads", "1"]), None);
    }
}

#[test]
fn e2e_three_chromium_participants_over_two_workers_tokio() {
    if in_netns("e2e_three_chromium_participants_over_two_workers_tokio") {
        let gw = Server::start(binary("sylkgw"), &["--threads", "2", "--metrics-listen", "127.0.0.1:0"]);
        let metrics = metrics_addr(&gw);
        three_participants(gw, Some(metrics));
    }
}

/// The address of `/metrics` (from the `metrics on http://ADDR/metrics` line).
fn metrics_addr(gw: &Server) -> SocketAddr {
    let deadline = Instant::now() + STEP;
    loop {
        let text = gw.stderr_text();
        let found = text.lines().find_map(|l| {
            let rest = &l[l.find("metrics on http://")? + "metrics on http://".len()..];
            rest.strip_suffix("/metrics")?.parse().ok()
        });
        if let Some(addr) = found {
            return addr;
        }
        assert!(Instant::now() < deadline, "no metrics line; stderr:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The per-worker samples of gauge `name` (`name{worker="N"} V`), by worker.
fn per_worker(addr: SocketAddr, name: &str) -> Vec<u64> {
    let r = http_request(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status(), 200, "{r:?}");
    let prefix = format!("{name}{{worker=\"");
    r.body
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|rest| rest.split_once(' ').expect("a value").1.parse().expect("a number"))
        .collect()
}

/// Scrapes until `name`'s per-worker samples satisfy `pred` (workers publish every second).
fn scrape_until(addr: SocketAddr, name: &str, pred: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = Instant::now() + STEP;
    loop {
        let got = per_worker(addr, name);
        if pred(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{name} never got there: {got:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Opens participant `i`'s WebSocket and returns the worker that took it (the one whose
/// `sylkgw_worker_websockets` rose). The last participant's is reopened until the three are not
/// all on one worker.
fn place(b: &mut Browser, metrics: SocketAddr, i: usize, taken: &[usize]) -> usize {
    for _ in 0..30 {
        let before = scrape_until(metrics, "sylkgw_worker_websockets", |_| true);
        let total: u64 = before.iter().sum();
        assert_eq!(b.eval_ok(&format!("conf.connect({i})")), "open");
        let after = scrape_until(metrics, "sylkgw_worker_websockets", |w| w.iter().sum::<u64>() == total + 1);
        let worker = (0..after.len()).find(|w| after[*w] > before[*w]).expect("one worker took it");
        let workers: BTreeSet<usize> = taken.iter().copied().chain([worker]).collect();
        if i + 1 < PARTIES.len() || workers.len() > 1 {
            return worker;
        }
        assert_eq!(b.eval_ok(&format!("conf.disconnect({i})")), "closed");
        scrape_until(metrics, "sylkgw_worker_websockets", |w| w.iter().sum::<u64>() == total);
    }
    panic!("the kernel never spread the WebSockets over both workers");
}

/// With `metrics` (`sylkgw --threads 2`), the participants' WebSockets are placed on both workers
/// and the room is checked to be whole on its home worker.
fn three_participants(gw: Server, metrics: Option<SocketAddr>) {
    let mut b = Browser::launch(&format!("http://{}/", gw.addr));
    b.wait_for("typeof window.phone === 'object'", STEP);
    b.eval_ok(PROBE);
    let mut placed = Vec::new();
    for (i, (freq, w, h)) in PARTIES.iter().enumerate() {
        if let Some(m) = metrics {
            let worker = place(&mut b, m, i, &placed);
            placed.push(worker);
        }
        let joined = b.eval(&format!("conf.join({i}, {freq}, {w}, {h})"));
        assert_eq!(joined, Ok("established".into()), "gateway log:\n{}\n{}", gw.stderr_text(), b.diagnostics());
    }
    for i in 0..3 {
        for j in (0..3).filter(|j| *j != i) {
            let attached = b.eval(&format!("conf.attach({i}, {j})"));
            assert_eq!(attached, Ok("established".into()), "feed {i}{j}: {}\n{}", gw.stderr_text(), b.diagnostics());
        }
    }
    if let Some(m) = metrics {
        // One room, whole on its home worker, serving the WebSockets of the other worker.
        let home = home_of(ROOM, 2);
        let away = placed.iter().filter(|w| **w != home).count() as u64;
        assert!(away > 0 && away < 3, "placed on {placed:?}, home {home}");
        let participants = scrape_until(m, "sylkgw_worker_room_participants", |p| p.get(home) == Some(&3));
        assert_eq!(participants.iter().sum::<u64>(), 3, "no half room on the other worker: {participants:?}");
        let rooms = per_worker(m, "sylkgw_worker_rooms");
        assert_eq!((rooms.iter().sum::<u64>(), rooms[home]), (1, 1), "{rooms:?}");
        let remotes = per_worker(m, "sylkgw_worker_remote_connections");
        assert_eq!(remotes[home], away, "the home serves the other worker's WebSockets: {remotes:?}");
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
    if let Some(m) = metrics {
        assert_eq!(b.eval_ok("conf.leave(3)"), "left");
        // Everybody left: no room, participant or remote connection on any worker.
        for name in ["sylkgw_worker_rooms", "sylkgw_worker_room_participants", "sylkgw_worker_remote_connections"] {
            scrape_until(m, name, |v| v.iter().all(|x| *x == 0));
        }
    }
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
