//! Audio for the end-to-end call tests: known tones in, tone detection out.
//!
//! - [`write_tone_wav`] writes a mono 16-bit PCM WAV holding a sine (baresip's `aufile` source,
//!   Chromium's `--use-file-for-fake-audio-capture`); [`write_tone_ulaw`] writes the same tone as
//!   headerless G.711 µ-law (sipp's `rtp_stream` action).
//! - [`read_wav`] reads a PCM16 WAV (any rate, mono or stereo, mixed down to mono), e.g. the
//!   `dump-…-dec.wav` that baresip's `sndfile` module records; it tolerates the header of a file
//!   whose writer never finalised it (data size 0 or past the end).
//! - [`goertzel_power`], [`relative_energy`], [`tone_report`] and [`dominant_tone_present`]: is a
//!   tone there, and does it clearly dominate its neighbourhood?
//!
//! Samples are `f32` in `[-1, 1]` (full scale = 1).

use std::io;
use std::path::Path;

/// A decoded WAV: mono samples (channels averaged) and the sample rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    /// Samples per second.
    pub rate: u32,
    /// Channels in the file (the samples are already mixed to mono).
    pub channels: u16,
    /// Mono samples, full scale 1.0.
    pub samples: Vec<f32>,
}

impl Wav {
    /// Length in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.rate.max(1))
    }
}

/// `seconds` of a sine at `freq` Hz, `amplitude` (0..=1 of full scale), as 16-bit samples.
pub fn tone_samples(freq: f64, rate: u32, seconds: f64, amplitude: f64) -> Vec<i16> {
    let n = (f64::from(rate) * seconds).round() as usize;
    let amp = amplitude.clamp(0.0, 1.0) * f64::from(i16::MAX);
    (0..n)
        .map(|i| {
            let v = amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin();
            v.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
        })
        .collect()
}

/// The bytes of a PCM16 WAV file holding `samples` (interleaved when `channels` > 1).
pub fn wav_bytes(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).expect("WAV data fits in 4 GiB");
    let block_align = channels * 2;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Writes a mono 16-bit PCM WAV of a sine: `freq` Hz, `rate` samples/s, `seconds` long,
/// `amplitude` 0..=1 of full scale.
pub fn write_tone_wav(path: &Path, freq: f64, rate: u32, seconds: f64, amplitude: f64) -> io::Result<()> {
    std::fs::write(path, wav_bytes(rate, 1, &tone_samples(freq, rate, seconds, amplitude)))
}

/// G.711 µ-law encoding of one 16-bit sample.
pub fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (7 - (s.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// G.711 µ-law decoding of one byte.
pub fn ulaw_decode(byte: u8) -> i16 {
    let u = !byte;
    let sign = u & 0x80;
    let exponent = i32::from((u >> 4) & 0x07);
    let mantissa = i32::from(u & 0x0f);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// Writes a sine as headerless 8 kHz G.711 µ-law (payload type 0), for sipp's
/// `<exec rtp_stream="FILE,LOOPS,0"/>`.
pub fn write_tone_ulaw(path: &Path, freq: f64, seconds: f64, amplitude: f64) -> io::Result<()> {
    let bytes: Vec<u8> = tone_samples(freq, 8000, seconds, amplitude).into_iter().map(ulaw_encode).collect();
    std::fs::write(path, bytes)
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Parses WAV bytes: RIFF/WAVE, a `fmt ` chunk with PCM (1) or WAVE_FORMAT_EXTENSIBLE, 16 bits,
/// 1 or 2 channels; chunks it does not know (`LIST`, `fact`, …) are skipped. A `data` chunk whose
/// size is 0, 0xFFFFFFFF or beyond the end (a writer killed before it finalised the header) is
/// taken to run to the end of the file.
pub fn parse_wav(bytes: &[u8]) -> io::Result<Wav> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(bad("not a RIFF/WAVE file".into()));
    }
    let mut at = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None; // format, channels, rate, bits
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = le32(bytes, at + 4).unwrap_or(0) as usize;
        let body = at + 8;
        if id == b"fmt " {
            let format = le16(bytes, body).ok_or_else(|| bad("short fmt chunk".into()))?;
            let channels = le16(bytes, body + 2).ok_or_else(|| bad("short fmt chunk".into()))?;
            let rate = le32(bytes, body + 4).ok_or_else(|| bad("short fmt chunk".into()))?;
            let bits = le16(bytes, body + 14).ok_or_else(|| bad("short fmt chunk".into()))?;
            fmt = Some((format, channels, rate, bits));
        } else if id == b"data" {
            let (format, channels, rate, bits) = fmt.ok_or_else(|| bad("data chunk before fmt chunk".into()))?;
            if format != 1 && format != 0xfffe {
                return Err(bad(format!("WAV format {format} is not PCM")));
            }
            if bits != 16 {
                return Err(bad(format!("{bits}-bit WAV: only 16-bit PCM is read")));
            }
            if channels == 0 || channels > 2 {
                return Err(bad(format!("{channels} channels: only mono and stereo are read")));
            }
            let end =
                if size == 0 || size == 0xffff_ffff || body + size > bytes.len() { bytes.len() } else { body + size };
            let frame = usize::from(channels) * 2;
            let data = &bytes[body..end];
            let samples = data
                .chunks_exact(frame)
                .map(|f| {
                    let sum: f32 =
                        f.chunks_exact(2).map(|s| f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0).sum();
                    sum / f32::from(channels)
                })
                .collect();
            return Ok(Wav { rate, channels, samples });
        }
        at = body + size + (size & 1);
    }
    Err(bad("no data chunk".into()))
}

/// Reads a PCM16 WAV file (see [`parse_wav`]).
pub fn read_wav(path: &Path) -> io::Result<Wav> {
    let bytes = std::fs::read(path)?;
    parse_wav(&bytes).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Root mean square (full scale sine ≈ 0.707).
pub fn rms(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// Goertzel power of `freq` over `samples` (rectangular window), normalised so that a sine of
/// amplitude A spanning the whole window gives ≈ A²/2 (its mean power), whatever the length.
pub fn goertzel_power(samples: &[f32], rate: u32, freq: f64) -> f64 {
    goertzel_windowed(samples, rate, freq, false)
}

fn goertzel_windowed(samples: &[f32], rate: u32, freq: f64, hann: bool) -> f64 {
    let n = samples.len();
    if n == 0 || rate == 0 {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut gain = 0.0f64;
    for (i, &x) in samples.iter().enumerate() {
        let win = if hann && n > 1 {
            0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1) as f64).cos()
        } else {
            1.0
        };
        gain += win;
        let s0 = f64::from(x) * win + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0);
    // |X|² of a sine A·sin() under a window of sum G is (A·G/2)²; report A²/2.
    2.0 * power / (gain * gain)
}

/// The share (0..=1) of the signal's power that sits at `freq`: Goertzel power over mean power.
/// ≈ 1 for a pure tone at `freq`, ≈ 0 for silence-free signals elsewhere, 0 for silence.
pub fn relative_energy(samples: &[f32], rate: u32, freq: f64) -> f64 {
    let total = rms(samples).powi(2);
    if total <= 1e-12 {
        return 0.0;
    }
    (goertzel_power(samples, rate, freq) / total).min(1.0)
}

/// Window length of the tone analysis.
pub const WINDOW_SECONDS: f64 = 0.05;

/// A window counts as sound when its RMS is at least this (about −46 dBFS).
pub const ACTIVE_RMS: f64 = 0.005;

/// What [`tone_report`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ToneReport {
    /// The frequency asked about.
    pub freq: f64,
    /// RMS of the whole signal.
    pub rms: f64,
    /// Seconds of signal with sound in it (windows of [`WINDOW_SECONDS`] at ≥ [`ACTIVE_RMS`]).
    pub active_seconds: f64,
    /// Summed (Hann-windowed Goertzel) power at `freq` over the active windows.
    pub power: f64,
    /// The same at `freq * 1.5` and `freq / 1.5`.
    pub neighbours: [(f64, f64); 2],
    /// `power` over the larger neighbour power (infinite when they are 0).
    pub ratio: f64,
    /// Summed power at `freq` over the summed mean power of the active windows (0..=1).
    pub share: f64,
}

impl std::fmt::Display for ToneReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} Hz: ratio {:.1} over {:.0} Hz ({:.2e}) / {:.0} Hz ({:.2e}), share {:.2}, rms {:.4}, {:.2} s active",
            self.freq,
            self.ratio,
            self.neighbours[0].0,
            self.neighbours[0].1,
            self.neighbours[1].0,
            self.neighbours[1].1,
            self.share,
            self.rms,
            self.active_seconds
        )
    }
}

/// Measures tone `freq` in `samples`: the signal is cut into windows of [`WINDOW_SECONDS`], the
/// windows with sound are analysed with a Hann window (so jitter-buffer splices and silence do
/// not smear the result), and the powers at `freq`, `freq * 1.5` and `freq / 1.5` are summed.
pub fn tone_report(samples: &[f32], rate: u32, freq: f64) -> ToneReport {
    let win = ((f64::from(rate) * WINDOW_SECONDS).round() as usize).max(16);
    let neighbours = [freq * 1.5, freq / 1.5];
    let (mut power, mut np, mut total, mut active) = (0.0, [0.0f64; 2], 0.0, 0usize);
    for chunk in samples.chunks_exact(win) {
        let r = rms(chunk);
        if r < ACTIVE_RMS {
            continue;
        }
        active += 1;
        total += r * r;
        power += goertzel_windowed(chunk, rate, freq, true);
        for (i, nf) in neighbours.iter().enumerate() {
            np[i] += goertzel_windowed(chunk, rate, *nf, true);
        }
    }
    let worst = np[0].max(np[1]);
    let ratio = if worst > 0.0 {
        power / worst
    } else if power > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    // The Hann window's coherent gain is 1/2 but power is normalised by it, so a pure tone
    // still gives ≈ A²/2 per window; the noise-equivalent bandwidth (1.5 bins) does not matter
    // for a tone.
    let share = if total > 0.0 { (power / total).min(1.0) } else { 0.0 };
    ToneReport {
        freq,
        rms: rms(samples),
        active_seconds: active as f64 * win as f64 / f64::from(rate.max(1)),
        power,
        neighbours: [(neighbours[0], np[0]), (neighbours[1], np[1])],
        ratio,
        share,
    }
}

/// Whether `freq` clearly dominates `samples`: at least 0.25 s of sound, the tone's power at least
/// 10× the power at `freq * 1.5` and at `freq / 1.5`, and at least a third of the signal's power.
pub fn dominant_tone_present(samples: &[f32], rate: u32, freq: f64) -> bool {
    tone_ok(&tone_report(samples, rate, freq))
}

/// The verdict of [`dominant_tone_present`] on a report.
pub fn tone_ok(r: &ToneReport) -> bool {
    r.active_seconds >= 0.25 && r.ratio >= 10.0 && r.share >= 0.33
}

/// Panics with the report unless [`dominant_tone_present`]; `what` names the signal.
#[track_caller]
pub fn assert_tone(samples: &[f32], rate: u32, freq: f64, what: &str) -> ToneReport {
    let r = tone_report(samples, rate, freq);
    assert!(tone_ok(&r), "{what}: no dominant {freq} Hz tone: {r}");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_f32(s: &[i16]) -> Vec<f32> {
        s.iter().map(|&x| f32::from(x) / 32768.0).collect()
    }

    #[test]
    fn wav_roundtrip_mono() {
        let dir = std::env::temp_dir().join(format!("sylkgw-audio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.wav");
        write_tone_wav(&p, 440.0, 8000, 0.5, 0.5).unwrap();
        let w = read_wav(&p).unwrap();
        assert_eq!((w.rate, w.channels, w.samples.len()), (8000, 1, 4000));
        assert!((rms(&w.samples) - 0.5 / 2f64.sqrt()).abs() < 0.01, "{}", rms(&w.samples));
        assert!((w.seconds() - 0.5).abs() < 1e-9);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wav_stereo_extra_chunks_and_unfinished_header() {
        // Stereo 48 kHz with a LIST chunk (odd size, padded) before data; left = tone, right = 0.
        let mono = tone_samples(1000.0, 48000, 0.5, 0.8);
        let inter: Vec<i16> = mono.iter().flat_map(|&s| [s, 0]).collect();
        let mut b = wav_bytes(48000, 2, &inter);
        let data_at = b.windows(4).position(|w| w == b"data").unwrap();
        let list = [b"LIST".as_slice(), &3u32.to_le_bytes(), b"abc", &[0u8]].concat();
        b.splice(data_at..data_at, list);
        let w = parse_wav(&b).unwrap();
        assert_eq!((w.rate, w.channels, w.samples.len()), (48000, 2, mono.len()));
        assert!((w.samples[10] - f32::from(mono[10]) / 65536.0).abs() < 1e-4);
        assert!(dominant_tone_present(&w.samples, 48000, 1000.0));
        // A data size of 0 (never finalised) runs to the end of the file.
        let data_at = b.windows(4).position(|w| w == b"data").unwrap();
        b[data_at + 4..data_at + 8].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse_wav(&b).unwrap().samples.len(), mono.len());
        // Not a WAV / not 16-bit.
        assert!(parse_wav(b"RIFX....WAVE").is_err());
        let mut b8 = wav_bytes(8000, 1, &[0; 10]);
        b8[34] = 8;
        assert!(parse_wav(&b8).unwrap_err().to_string().contains("8-bit"));
    }

    #[test]
    fn goertzel_measures_a_tone() {
        let s = to_f32(&tone_samples(440.0, 8000, 1.0, 0.5));
        let p = goertzel_power(&s, 8000, 440.0);
        assert!((p - 0.125).abs() < 0.005, "{p}"); // A²/2 with A = 0.5
        assert!(goertzel_power(&s, 8000, 660.0) < 1e-4);
        assert!(relative_energy(&s, 8000, 440.0) > 0.95);
        assert!(relative_energy(&s, 8000, 1000.0) < 0.01);
        assert_eq!(relative_energy(&[0.0; 800], 8000, 440.0), 0.0);
    }

    #[test]
    fn dominant_tone_detection() {
        let rate = 8000;
        let t440 = to_f32(&tone_samples(440.0, rate, 1.0, 0.3));
        let t1000 = to_f32(&tone_samples(1000.0, rate, 1.0, 0.3));
        assert!(dominant_tone_present(&t440, rate, 440.0), "{}", tone_report(&t440, rate, 440.0));
        assert!(!dominant_tone_present(&t440, rate, 1000.0), "{}", tone_report(&t440, rate, 1000.0));
        assert!(!dominant_tone_present(&t440, rate, 293.3));
        // Silence is not a tone; a tone with leading silence still is.
        assert!(!dominant_tone_present(&vec![0.0; 8000], rate, 440.0));
        let mut padded = vec![0.0f32; 16000];
        padded.extend_from_slice(&t1000);
        assert!(dominant_tone_present(&padded, rate, 1000.0));
        // An equal mix: neither tone holds a third… each holds about half, so both pass the share
        // test; but a mix of 440 with a 660 (= 440 * 1.5) tone of equal power fails the ratio.
        let t660 = to_f32(&tone_samples(660.0, rate, 1.0, 0.3));
        let mix: Vec<f32> = t440.iter().zip(&t660).map(|(a, b)| a + b).collect();
        assert!(!dominant_tone_present(&mix, rate, 440.0));
        // White-ish noise is not a tone.
        let mut x: u32 = 12345;
        let noise: Vec<f32> = (0..8000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((x >> 16) as f32 / 32768.0 - 1.0) * 0.3
            })
            .collect();
        assert!(!dominant_tone_present(&noise, rate, 440.0), "{}", tone_report(&noise, rate, 440.0));
        // Through G.711 µ-law the tone survives.
        let coded: Vec<f32> = tone_samples(1000.0, rate, 1.0, 0.3)
            .into_iter()
            .map(|s| f32::from(ulaw_decode(ulaw_encode(s))) / 32768.0)
            .collect();
        assert!(dominant_tone_present(&coded, rate, 1000.0), "{}", tone_report(&coded, rate, 1000.0));
    }

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_encode(-1), 0x7f);
        assert_eq!(ulaw_encode(32767), 0x80);
        assert_eq!(ulaw_encode(-32768), 0x00);
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        for s in [-30000i16, -1000, -100, 0, 7, 100, 1000, 30000] {
            let back = ulaw_decode(ulaw_encode(s));
            assert!((i32::from(back) - i32::from(s)).abs() <= (i32::from(s).abs() / 16).max(8), "{s} -> {back}");
        }
    }
}
