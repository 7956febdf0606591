// Test client for conferences (issue #13), evaluated in a page the gateway served (the web
// phone's origin, so its WebSockets are same-origin). It speaks sylkRTC-2's videoroom requests
// the way sylkrtc.js does (send-only publisher, one receive PeerConnection per feed, trickle),
// with its own media per participant: a WebAudio tone of the participant's frequency and a
// canvas of the participant's size. Defines `window.conf`:
//
//   conf.join(i, freq, width, height)  -> participant i joins ROOM as session `p<i>`
//   conf.attach(i, j)                  -> i receives j (feed `f<i><j>`)
//   conf.feedStats(i, j)               -> {packets, framesDecoded, width, height} of that feed
//   conf.tone(i, j, freqs)             -> phone.toneLevels of the feed's audio
//   conf.leave(i), conf.vanish(i)      -> videoroom-leave / the WebSocket just closes
//   conf.events(i)                     -> the videoroom events i received
//   conf.dialect('sylkRTC-1')          -> later joins speak sylkRTC-1 (SylkServer 4.1, issue #16):
//                                         the requests become 4.1's (`videoroom-ctl` options,
//                                         `videoroom-terminate`), its events are read into the
//                                         names above, each with the message as received in `raw`
//   conf.connect(i), conf.disconnect(i) -> opens (closes) i's WebSocket ahead of its join, so a
//                                         test can see which worker took it before it joins
//   conf.levels(i)                     -> the levels of the last conference-audio-levels i got
//   conf.update(i, options)            -> videoroom-session-update of i's publisher session
//   conf.sendStats(i)                  -> {available, target} send bitrates of i's publisher
(() => {
'use strict';
const ROOM = 'room@videoconference.example.com';
const parties = {};
const early = {};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let nextTx = 0;
let DIALECT = 'sylkRTC-2';

function open() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${location.host}/webrtcgateway/ws`, DIALECT);
    ws.onmessage = (m) => {
      const e = JSON.parse(m.data);
      if (e.sylkrtc === 'ready-event' || (e.sylkrtc === 'event' && e.event === 'ready')) resolve(ws);
    };
    ws.onerror = () => reject(new Error('WebSocket failed'));
  });
}

function trickler(p, session, pc) {
  const queue = [];
  let ready = false;
  const send = (c) => p.req('videoroom-session-trickle', {session, candidates: c}).catch(() => {});
  pc.onicecandidate = (ev) => {
    const c = ev.candidate
      ? [{candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid, sdpMLineIndex: ev.candidate.sdpMLineIndex}]
      : [];
    if (ready) send(c); else queue.push(c);
  };
  return () => { ready = true; queue.splice(0).forEach(send); };
}

async function connect(i) {
  early[i] = await open();
  return 'open';
}

function disconnect(i) {
  if (early[i]) { early[i].close(); delete early[i]; }
  return 'closed';
}

/** A sylkRTC-2 videoroom request of publisher session `own` as sylkRTC-1 (4.1) says it. */
function v1Request(own, type, body) {
  const ctl = (option, fields) => ({session: own, option, [option.replace('-', '_')]: fields});
  switch (type) {
    case 'videoroom-session-trickle':
      return ['videoroom-ctl', ctl('trickle', body.session === own
        ? {candidates: body.candidates} : {session: body.session, candidates: body.candidates})];
    case 'videoroom-feed-attach':
      return ['videoroom-ctl', ctl('feed-attach', {session: body.feed, publisher: body.publisher})];
    case 'videoroom-feed-answer':
      return ['videoroom-ctl', ctl('feed-answer', {session: body.feed, sdp: body.sdp})];
    case 'videoroom-feed-detach':
      return ['videoroom-ctl', ctl('feed-detach', {session: body.feed})];
    case 'videoroom-leave':
      return ['videoroom-terminate', body];
    default:
      return [type, body];
  }
}

/** A sylkRTC-1 `videoroom_event` read into the sylkRTC-2 names (`raw`: as received). */
function v1Event(e) {
  const d = e.data || {};
  const base = {sylkrtc: 'videoroom-event', session: e.session, raw: e};
  switch (e.event) {
    case 'state': return Object.assign(base, {event: 'session-state', state: d.state, sdp: d.sdp});
    case 'feed_attached': return Object.assign(base, {event: 'feed-attached', feed: d.subscription, sdp: d.sdp});
    case 'feed_established': return Object.assign(base, {event: 'feed-established', feed: d.subscription});
    default: return Object.assign(base, d, {event: e.event.replace(/_/g, '-')});
  }
}

async function join(i, freq, width, height) {
  const ws = early[i] || await open();
  delete early[i];
  const v1 = DIALECT === 'sylkRTC-1';
  const p = {i, ws, session: `p${i}`, events: [], pending: new Map(), feeds: {}};
  parties[i] = p;
  ws.onmessage = (m) => {
    const e = JSON.parse(m.data);
    const waiting = e.transaction && p.pending.get(e.transaction);
    if (waiting) {
      p.pending.delete(e.transaction);
      if (e.sylkrtc === 'ack') waiting[0](e); else waiting[1](new Error(e.error));
    } else if (e.sylkrtc === 'videoroom-event') {
      p.events.push(e);
    } else if (e.sylkrtc === 'videoroom_event') {
      p.events.push(v1Event(e));
    }
  };
  p.req = (type, body) => new Promise((ok, ko) => {
    const transaction = `t${nextTx++}`;
    p.pending.set(transaction, [ok, ko]);
    const [kind, fields] = v1 ? v1Request(p.session, type, body) : [type, body];
    ws.send(JSON.stringify(Object.assign({sylkrtc: kind, transaction}, fields)));
  });
  p.wait = async (pred, ms) => {
    const end = Date.now() + (ms || 20000);
    for (;;) {
      const e = p.events.find(pred);
      if (e) return e;
      if (Date.now() > end) throw new Error(`timeout; events: ${p.events.map((x) => x.event + ':' + (x.state || '')).join(' ')}`);
      await sleep(50);
    }
  };
  const account = `u${i}@example.com`;
  await p.req('account-add', {account, password: '0123456789abcdef0123456789abcdef', display_name: `U${i}`});
  // Media: a tone of `freq` and a `width`×`height` canvas that keeps changing.
  const ctx = new AudioContext();
  const osc = ctx.createOscillator();
  osc.frequency.value = freq;
  const gain = ctx.createGain();
  gain.gain.value = 0.5;
  const dst = ctx.createMediaStreamDestination();
  osc.connect(gain).connect(dst);
  osc.start();
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const g = canvas.getContext('2d');
  let n = 0;
  p.painter = setInterval(() => {
    g.fillStyle = `hsl(${(n * 13) % 360},80%,50%)`;
    g.fillRect(0, 0, width, height);
    g.fillStyle = '#000';
    g.fillRect((n * 4) % width, 0, 16, height);
    n += 1;
  }, 33);
  const stream = new MediaStream([dst.stream.getAudioTracks()[0], canvas.captureStream(30).getVideoTracks()[0]]);
  const pc = new RTCPeerConnection();
  p.pc = pc;
  stream.getTracks().forEach((t) => pc.addTransceiver(t, {direction: 'sendonly', streams: [stream]}));
  const go = trickler(p, p.session, pc);
  await pc.setLocalDescription(await pc.createOffer());
  await p.req('videoroom-join', {account, session: p.session, uri: ROOM, sdp: pc.localDescription.sdp});
  go();
  const accepted = await p.wait((e) => e.event === 'session-state' && e.state === 'accepted');
  await pc.setRemoteDescription({type: 'answer', sdp: accepted.sdp});
  await p.wait((e) => e.event === 'session-state' && e.state === 'established');
  return 'established';
}

async function attach(i, j) {
  const p = parties[i];
  const feed = `f${i}${j}`;
  const pc = new RTCPeerConnection();
  const f = {pc, stream: null, audio: null};
  p.feeds[j] = f;
  pc.ontrack = (ev) => {
    f.stream = ev.streams[0] || new MediaStream([ev.track]);
    if (ev.track.kind === 'audio' && !f.audio) {
      // Chrome feeds WebAudio from a remote track only while it also plays in a media element.
      f.audio = new Audio();
      f.audio.srcObject = new MediaStream([ev.track]);
      f.audio.play().catch(() => {});
      f.audioStream = f.audio.srcObject;
    }
  };
  const go = trickler(p, feed, pc);
  await p.req('videoroom-feed-attach', {session: p.session, publisher: `p${j}`, feed});
  const attached = await p.wait((e) => e.event === 'feed-attached' && e.feed === feed);
  await pc.setRemoteDescription({type: 'offer', sdp: attached.sdp});
  await pc.setLocalDescription(await pc.createAnswer());
  await p.req('videoroom-feed-answer', {session: p.session, feed, sdp: pc.localDescription.sdp});
  go();
  await p.wait((e) => e.event === 'feed-established' && e.feed === feed);
  return 'established';
}

async function feedStats(i, j) {
  const f = parties[i].feeds[j];
  const out = {packets: 0, framesDecoded: 0, width: 0, height: 0};
  (await f.pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    if (s.kind === 'audio') out.packets = s.packetsReceived;
    if (s.kind === 'video') {
      out.video = {packets: s.packetsReceived, lost: s.packetsLost, nacks: s.nackCount, plis: s.pliCount,
        firs: s.firCount, received: s.framesReceived, keyframes: s.keyFramesDecoded, dropped: s.framesDropped,
        codec: s.decoderImplementation};
      out.framesDecoded = s.framesDecoded || 0;
      out.width = s.frameWidth || 0;
      out.height = s.frameHeight || 0;
    }
  });
  return out;
}

function tone(i, j, freqs) {
  return window.phone.toneLevels(freqs, {stream: parties[i].feeds[j].audioStream, ms: 1500});
}

async function leave(i) {
  const p = parties[i];
  await p.req('videoroom-leave', {session: p.session});
  finish(p);
  return 'left';
}

function vanish(i) {
  const p = parties[i];
  p.ws.close();
  finish(p);
  return 'closed';
}

function finish(p) {
  clearInterval(p.painter);
  p.pc.close();
  Object.values(p.feeds).forEach((f) => f.pc.close());
}

/** Closes i's feed of j (after `publishers-left` for j, as sylkrtc.js does). */
function dropFeed(i, j) {
  const f = parties[i].feeds[j];
  if (f) { f.pc.close(); delete parties[i].feeds[j]; }
  return Object.keys(parties[i].feeds).length;
}

function dialect(d) {
  DIALECT = d;
  return d;
}

function levels(i) {
  const l = parties[i].events.filter((e) => e.event === 'conference-audio-levels').pop();
  return l ? l.levels : null;
}

async function update(i, options) {
  const p = parties[i];
  await p.req('videoroom-session-update', {session: p.session, options});
  return 'updated';
}

/** The browser's send-side estimate (the selected pair's availableOutgoingBitrate), which a
 * REMB caps, and the video encoder's target. */
async function sendStats(i) {
  const out = {available: 0, target: 0};
  (await parties[i].pc.getStats()).forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.availableOutgoingBitrate) out.available = s.availableOutgoingBitrate;
    if (s.type === 'outbound-rtp' && s.kind === 'video' && s.targetBitrate) out.target = s.targetBitrate;
  });
  return out;
}

window.conf = {connect, disconnect, join, attach, feedStats, tone, leave, vanish, dropFeed, dialect, levels, update,
  sendStats, events: (i) => parties[i].events};
})();
