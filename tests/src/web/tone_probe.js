// Test probe for the web phone (core/src/web/phone.html), injected by the DevTools harness
// (tests/src/browser.rs, `Page.addScriptToEvaluateOnNewDocument`) so the shipped page carries no
// test code. It adds `phone.toneLevels` once the page defines `window.phone`:
//
//   phone.toneLevels(freqs, {source: 'remote'|'mic', stream, ms})
//     -> {levels: {freq: share 0..1}, power, rms, dominant, ...} of the audio received on the
//        call (WebAudio + Goertzel)
//
// It sees only what the page shows: the call's remote audio is the stream playing in
// #remote-audio; the microphone is the newest stream getUserMedia gave the page whose audio is
// still live (the call's, or the microphone test's: the page stops both when done).
(() => {
'use strict';
const micStreams = [];
if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
  const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await getUserMedia(constraints);
    micStreams.push(stream);
    return stream;
  };
}

/** The newest microphone stream with a live audio track, or null. */
function liveMic() {
  for (let i = micStreams.length - 1; i >= 0; i--) {
    if (micStreams[i].getAudioTracks().some((t) => t.readyState === 'live')) return micStreams[i];
  }
  return null;
}

let audioCtx = null;
/** The probe's own AudioContext (the page's is internal to it). */
function audioContext() {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return null;
  if (!audioCtx) audioCtx = new Ctx();
  return audioCtx;
}

/** Goertzel power of `freq` in `buf` under a Hann window, normalised: a sine of amplitude A gives A²/2. */
function goertzel(buf, rate, freq) {
  const n = buf.length;
  const coeff = 2 * Math.cos(2 * Math.PI * freq / rate);
  let s1 = 0, s2 = 0, gain = 0;
  for (let i = 0; i < n; i++) {
    const win = 0.5 - 0.5 * Math.cos(2 * Math.PI * i / (n - 1));
    gain += win;
    const s0 = buf[i] * win + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  return gain > 0 ? 2 * Math.max(0, s1 * s1 + s2 * s2 - coeff * s1 * s2) / (gain * gain) : 0;
}

/**
 * Measures tones in the audio the browser RECEIVES on the current call (or, with
 * {source: 'mic'}, the microphone; with {stream}, any MediaStream): a dedicated AnalyserNode on a
 * MediaStreamSource of the track (Chrome feeds WebAudio from a remote WebRTC track only while the
 * stream also plays in a media element: the call's plays in #remote-audio), snapshots of
 * fftSize samples taken back to back for `ms` (default 1000), Goertzel per frequency.
 * Resolves {sampleRate, windows, activeWindows, rms, peakRms,
 *           levels: {FREQ: share of the signal's power at FREQ, 0..1 (≈1 for a pure tone)},
 *           power: {FREQ: mean power at FREQ (A²/2 of a sine of amplitude A)},
 *           dominant: the FREQ holding ≥ 1/3 of the power and ≥ 10× every other asked FREQ, or null}.
 * Windows quieter than RMS 0.001 count in `rms` but not in `levels`.
 */
async function toneLevels(freqs, opts) {
  opts = opts || {};
  const list = (Array.isArray(freqs) ? freqs : [freqs]).map(Number).filter((f) => f > 0);
  if (!list.length) throw new Error('toneLevels needs frequencies');
  const source = opts.source || 'remote';
  let stream = opts.stream || null;
  if (!stream) {
    if (source === 'mic') stream = liveMic();
    else if (source === 'remote') stream = phone.state().callActive ? document.getElementById('remote-audio').srcObject : null;
    else throw new Error(`Unknown source ${source}`);
  }
  if (!stream || !stream.getAudioTracks().length) throw new Error(`No ${source} audio to measure`);
  const ctx = audioContext();
  if (!ctx) throw new Error('No WebAudio in this browser');
  if (ctx.state !== 'running') await ctx.resume();
  const src = ctx.createMediaStreamSource(stream);
  const an = ctx.createAnalyser();
  an.fftSize = opts.fftSize || 8192;
  an.smoothingTimeConstant = 0;
  src.connect(an);
  const buf = new Float32Array(an.fftSize);
  const windowMs = an.fftSize / ctx.sampleRate * 1000;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const power = {}, share = {};
  list.forEach((f) => { power[f] = 0; });
  let windows = 0, active = 0, sumSq = 0, activeSq = 0, peakRms = 0;
  try {
    await sleep(windowMs); // let the analyser's buffer fill with this stream's samples
    const end = Date.now() + (opts.ms || 1000);
    do {
      an.getFloatTimeDomainData(buf);
      let sq = 0;
      for (let i = 0; i < buf.length; i++) sq += buf[i] * buf[i];
      const mean = sq / buf.length;
      windows += 1;
      sumSq += mean;
      peakRms = Math.max(peakRms, Math.sqrt(mean));
      if (Math.sqrt(mean) >= 0.001) {
        active += 1;
        activeSq += mean;
        list.forEach((f) => { power[f] += goertzel(buf, ctx.sampleRate, f); });
      }
      await sleep(windowMs);
    } while (Date.now() < end);
  } finally {
    try { src.disconnect(); } catch (e) { /* gone */ }
  }
  list.forEach((f) => {
    share[f] = activeSq > 0 ? Math.min(1, power[f] / activeSq) : 0;
    power[f] = active ? power[f] / active : 0;
  });
  let dominant = null;
  const best = list.reduce((a, f) => (share[f] > share[a] ? f : a), list[0]);
  if (share[best] >= 1 / 3 && list.every((f) => f === best || power[best] >= 10 * power[f])) dominant = best;
  return {
    sampleRate: ctx.sampleRate, windows, activeWindows: active,
    rms: windows ? Math.sqrt(sumSq / windows) : 0, peakRms, levels: share, power, dominant,
  };
}

// The page assigns `window.phone` once; the probe joins it there.
let phone;
Object.defineProperty(window, 'phone', {
  configurable: true,
  enumerable: true,
  get: () => phone,
  set: (value) => {
    phone = value;
    if (phone && typeof phone === 'object') phone.toneLevels = toneLevels;
  },
});
})();
