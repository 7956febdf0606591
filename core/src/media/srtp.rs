//! SDES-SRTP towards SIP peers (RFC 3711, RFC 4568): AES_CM_128_HMAC_SHA1_80 and
//! AES_CM_128_HMAC_SHA1_32 for RTP and RTCP (media spec §2.1 "SRTP towards SIP", §2.3 point 9).
//!
//! - Key derivation: RFC 3711 §4.3 with the AES-CM PRF (§4.3.3), key derivation rate 0 (session
//!   keys are derived once; SDES `KDR=` is not supported, see [`CryptoAttribute::is_usable`]).
//! - Encryption: AES-128 in counter mode (§4.1.1), IV = salt·2^16 ⊕ SSRC·2^64 ⊕ index·2^16.
//! - Authentication: HMAC-SHA1 (§4.2.1) over the packet and the ROC (RTP) or the E‖index word
//!   (RTCP), truncated to 80 bits (or 32 bits for RTP with `_32`; SRTCP always 80).
//! - ROC tracking and index estimation (§3.3.1, Appendix A), a 128-packet replay window per SSRC
//!   (§3.3.2), and the SRTCP index with the E bit (§3.4).
//!
//! Packets are processed in place in caller buffers; nothing allocates per packet except the
//! first packet of a new SSRC (one map entry). AES and HMAC-SHA1 come from aws-lc-rs.
//!
//! The `a=crypto` attribute (RFC 4568 §9.1) is parsed and formatted by [`CryptoAttribute`].

use crate::rng::Rng;
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use std::collections::BTreeMap;
use std::fmt;

/// Master key length of both suites (RFC 4568 §6.2.1).
pub const MASTER_KEY_LEN: usize = 16;
/// Master salt length of both suites.
pub const MASTER_SALT_LEN: usize = 14;
/// SRTCP authentication tag length (always 80 bits for these suites, RFC 4568 §6.2.1).
pub const SRTCP_TAG_LEN: usize = 10;
/// Replay window size in packets (RFC 3711 §3.3.2 asks for at least 64).
pub const REPLAY_WINDOW: u64 = 128;
/// At most this many SSRCs are tracked per context; packets of further SSRCs are refused.
pub const MAX_STREAMS: usize = 64;
/// The highest SRTCP index (31 bits).
pub const MAX_SRTCP_INDEX: u32 = 0x7fff_ffff;

/// The supported crypto suites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SrtpProfile {
    /// AES_CM_128_HMAC_SHA1_80 (RFC 4568 §6.2.1): 80-bit RTP and RTCP tags.
    AesCm128HmacSha1_80,
    /// AES_CM_128_HMAC_SHA1_32 (RFC 4568 §6.2.2): 32-bit RTP tag, 80-bit RTCP tag.
    AesCm128HmacSha1_32,
}

impl SrtpProfile {
    /// Both suites, in our order of preference.
    pub const ALL: [SrtpProfile; 2] = [SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AesCm128HmacSha1_32];

    /// The SDP name.
    pub fn name(self) -> &'static str {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpProfile::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// The suite for an SDP name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Authentication tag length of SRTP packets.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => 10,
            SrtpProfile::AesCm128HmacSha1_32 => 4,
        }
    }

    /// Authentication tag length of SRTCP packets.
    pub fn rtcp_tag_len(self) -> usize {
        SRTCP_TAG_LEN
    }
}

impl fmt::Display for SrtpProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a packet could not be protected or unprotected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrtpError {
    /// Too short for a header plus trailer.
    TooShort,
    /// Not an RTP/RTCP version 2 header.
    BadHeader,
    /// The authentication tag does not verify.
    AuthFailed,
    /// The index was seen before (§3.3.2).
    Replayed,
    /// The index is behind the replay window.
    TooOld,
    /// The MKI does not name our master key.
    MkiMismatch,
    /// The buffer has no room for the trailer.
    BufferTooSmall,
    /// The master key is used up (2^48 SRTP or 2^31 SRTCP packets, §9.2): re-key.
    KeyExhausted,
    /// An SRTCP packet with the E bit clear: we never negotiate unencrypted SRTCP.
    Unencrypted,
    /// More than [`MAX_STREAMS`] SSRCs.
    TooManyStreams,
    /// The crypto library refused an operation (not expected to happen).
    Crypto,
}

impl SrtpError {
    /// A short reason for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SrtpError::TooShort => "packet too short",
            SrtpError::BadHeader => "bad header",
            SrtpError::AuthFailed => "authentication failed",
            SrtpError::Replayed => "replayed packet",
            SrtpError::TooOld => "packet behind the replay window",
            SrtpError::MkiMismatch => "unknown MKI",
            SrtpError::BufferTooSmall => "buffer too small",
            SrtpError::KeyExhausted => "master key exhausted",
            SrtpError::Unencrypted => "unencrypted SRTCP",
            SrtpError::TooManyStreams => "too many SSRCs",
            SrtpError::Crypto => "crypto library error",
        }
    }
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A master key and salt (RFC 3711 §3.2.1). `Debug` does not print the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    /// The 128-bit master key.
    pub key: [u8; MASTER_KEY_LEN],
    /// The 112-bit master salt.
    pub salt: [u8; MASTER_SALT_LEN],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From the 30-byte key‖salt concatenation used by `inline:`.
    pub fn from_bytes(b: &[u8; MASTER_KEY_LEN + MASTER_SALT_LEN]) -> Self {
        let mut key = [0; MASTER_KEY_LEN];
        let mut salt = [0; MASTER_SALT_LEN];
        key.copy_from_slice(&b[..MASTER_KEY_LEN]);
        salt.copy_from_slice(&b[MASTER_KEY_LEN..]);
        Self { key, salt }
    }

    /// The 30-byte key‖salt concatenation.
    pub fn to_bytes(&self) -> [u8; MASTER_KEY_LEN + MASTER_SALT_LEN] {
        let mut b = [0; MASTER_KEY_LEN + MASTER_SALT_LEN];
        b[..MASTER_KEY_LEN].copy_from_slice(&self.key);
        b[MASTER_KEY_LEN..].copy_from_slice(&self.salt);
        b
    }

    /// 30 bytes drawn from the caller's generator.
    ///
    /// The core's [`Rng`] is a ChaCha20 keystream keyed by the OS seed, so values it put on the
    /// wire (tags, Call-IDs) reveal nothing about the keys drawn from it.
    pub fn generate(rng: &mut Rng) -> Self {
        let mut b = [0; MASTER_KEY_LEN + MASTER_SALT_LEN];
        rng.fill(&mut b);
        Self::from_bytes(&b)
    }
}

/// RFC 3711 §4.3.1 key derivation labels.
const LABEL_RTP_ENC: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_ENC: u8 = 3;
const LABEL_RTCP_AUTH: u8 = 4;
const LABEL_RTCP_SALT: u8 = 5;
/// HMAC-SHA1 session authentication key length (RFC 3711 §4.2.1: 160 bits).
const AUTH_KEY_LEN: usize = 20;

fn aes_ctr_key(key: &[u8; 16]) -> Result<EncryptingKey, SrtpError> {
    let unbound = UnboundCipherKey::new(&AES_128, key).map_err(|_| SrtpError::Crypto)?;
    EncryptingKey::ctr(unbound).map_err(|_| SrtpError::Crypto)
}

/// XORs the AES-CM keystream starting at counter block `iv` into `data` (RFC 3711 §4.1.1:
/// block i is E(k, IV + i mod 2^128)).
fn aes_cm(key: &EncryptingKey, iv: [u8; 16], data: &mut [u8]) -> Result<(), SrtpError> {
    if data.is_empty() {
        return Ok(());
    }
    key.less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
        .map(|_| ())
        .map_err(|_| SrtpError::Crypto)
}

/// RFC 3711 §4.3.1/§4.3.3 with key_derivation_rate 0 (so r = 0): fills `out` with
/// PRF(master_key, (label‖0^48 ⊕ master_salt)·2^16).
pub fn derive_session_key(master: &MasterKey, label: u8, out: &mut [u8]) -> Result<(), SrtpError> {
    let prf = aes_ctr_key(&master.key)?;
    let mut iv = [0u8; 16];
    iv[..MASTER_SALT_LEN].copy_from_slice(&master.salt);
    iv[7] ^= label;
    out.fill(0);
    aes_cm(&prf, iv, out)
}

/// The counter-mode IV of RFC 3711 §4.1.1.
fn packet_iv(salt: &[u8; MASTER_SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..MASTER_SALT_LEN].copy_from_slice(salt);
    for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *d ^= s;
    }
    iv
}

/// The session keys of one of RTP / RTCP.
struct SessionKeys {
    enc: EncryptingKey,
    salt: [u8; MASTER_SALT_LEN],
    auth: hmac::Key,
}

impl SessionKeys {
    fn derive(master: &MasterKey, labels: [u8; 3]) -> Result<Self, SrtpError> {
        let mut enc = [0u8; 16];
        let mut auth = [0u8; AUTH_KEY_LEN];
        let mut salt = [0u8; MASTER_SALT_LEN];
        derive_session_key(master, labels[0], &mut enc)?;
        derive_session_key(master, labels[1], &mut auth)?;
        derive_session_key(master, labels[2], &mut salt)?;
        Ok(Self { enc: aes_ctr_key(&enc)?, salt, auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth) })
    }

    /// The full 20-byte HMAC-SHA1 of `parts`.
    fn mac(&self, parts: &[&[u8]]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.auth);
        for p in parts {
            ctx.update(p);
        }
        ctx.sign()
    }
}

/// RFC 3711 §3.3.2 sliding window over 48-bit (SRTP) or 31-bit (SRTCP) indices.
#[derive(Clone, Copy, Debug, Default)]
struct ReplayWindow {
    /// Highest authenticated index, once one was seen.
    max: Option<u64>,
    /// Bit i set: index `max - i` was received.
    bits: u128,
}

impl ReplayWindow {
    fn check(&self, index: u64) -> Result<(), SrtpError> {
        let Some(max) = self.max else { return Ok(()) };
        if index > max {
            return Ok(());
        }
        let delta = max - index;
        if delta >= REPLAY_WINDOW {
            Err(SrtpError::TooOld)
        } else if (self.bits >> delta) & 1 == 1 {
            Err(SrtpError::Replayed)
        } else {
            Ok(())
        }
    }

    fn update(&mut self, index: u64) {
        match self.max {
            Some(max) if index <= max => self.bits |= 1 << (max - index),
            Some(max) => {
                let shift = index - max;
                self.bits = if shift >= REPLAY_WINDOW { 1 } else { (self.bits << shift) | 1 };
                self.max = Some(index);
            }
            None => {
                self.bits = 1;
                self.max = Some(index);
            }
        }
    }
}

/// RFC 3711 Appendix A: the packet index of `seq` given the highest index so far (whose upper
/// bits are the ROC and lower 16 bits s_l). Errors: [`SrtpError::TooOld`] if the guessed ROC
/// would be −1 (a packet from before the first one), [`SrtpError::KeyExhausted`] past ROC 2^32−1.
pub fn estimate_index(highest: Option<u64>, seq: u16) -> Result<u64, SrtpError> {
    let Some(highest) = highest else { return Ok(u64::from(seq)) };
    let roc = (highest >> 16) as i64;
    let s_l = (highest & 0xffff) as i64;
    let seq = i64::from(seq);
    let v = if s_l < 32768 {
        if seq - s_l > 32768 {
            roc - 1
        } else {
            roc
        }
    } else if s_l - 32768 > seq {
        roc + 1
    } else {
        roc
    };
    if v < 0 {
        Err(SrtpError::TooOld)
    } else if v > i64::from(u32::MAX) {
        Err(SrtpError::KeyExhausted)
    } else {
        Ok(((v as u64) << 16) | seq as u64)
    }
}

#[derive(Clone, Debug, Default)]
struct StreamState {
    /// SRTP indices sent: a packet index is never encrypted twice (keystream reuse), as in
    /// libsrtp without `allow_repeat_tx`.
    rtp_sent: ReplayWindow,
    rtp_recv: ReplayWindow,
    /// Last SRTCP index sent (0 = none yet; the first packet carries 1, as libsrtp does).
    rtcp_sent: u32,
    rtcp_recv: ReplayWindow,
}

/// One SRTP/SRTCP crypto context: one master key, one direction's worth of streams.
///
/// With SDES each side has its own key, so a call uses two contexts: one with our key for
/// [`protect_rtp`](Self::protect_rtp)/[`protect_rtcp`](Self::protect_rtcp), one with the peer's
/// for [`unprotect_rtp`](Self::unprotect_rtp)/[`unprotect_rtcp`](Self::unprotect_rtcp). State is
/// kept per SSRC and only updated for packets that authenticate.
pub struct SrtpContext {
    profile: SrtpProfile,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    mki: Vec<u8>,
    streams: BTreeMap<u32, StreamState>,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("mki_len", &self.mki.len())
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Derives the session keys for `profile` from `master` (no MKI in packets).
    pub fn new(profile: SrtpProfile, master: &MasterKey) -> Result<Self, SrtpError> {
        Ok(Self {
            profile,
            rtp: SessionKeys::derive(master, [LABEL_RTP_ENC, LABEL_RTP_AUTH, LABEL_RTP_SALT])?,
            rtcp: SessionKeys::derive(master, [LABEL_RTCP_ENC, LABEL_RTCP_AUTH, LABEL_RTCP_SALT])?,
            mki: Vec::new(),
            streams: BTreeMap::new(),
        })
    }

    /// A context for the key of an `a=crypto` line, with its MKI if it has one.
    pub fn from_crypto(attr: &CryptoAttribute) -> Result<Self, SrtpError> {
        let mut ctx = Self::new(attr.profile, &attr.master)?;
        ctx.mki = attr.mki.map(|m| m.to_bytes()).unwrap_or_default();
        Ok(ctx)
    }

    /// The suite.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Bytes [`protect_rtp`](Self::protect_rtp) appends.
    pub fn rtp_overhead(&self) -> usize {
        self.mki.len() + self.profile.rtp_tag_len()
    }

    /// Bytes [`protect_rtcp`](Self::protect_rtcp) appends.
    pub fn rtcp_overhead(&self) -> usize {
        4 + self.mki.len() + SRTCP_TAG_LEN
    }

    fn stream(&mut self, ssrc: u32) -> Result<&mut StreamState, SrtpError> {
        if !self.streams.contains_key(&ssrc) && self.streams.len() >= MAX_STREAMS {
            return Err(SrtpError::TooManyStreams);
        }
        Ok(self.streams.entry(ssrc).or_default())
    }

    /// Protects the RTP packet in `buf[..len]` in place (RFC 3711 §3.3): encrypts the payload
    /// (everything after the CSRCs and header extension), appends MKI and tag. Returns the SRTP
    /// length; `buf` must have [`rtp_overhead`](Self::rtp_overhead) bytes of room after `len`.
    /// A sequence number whose index was already sent (or lies behind the 128-packet window) is
    /// refused with [`SrtpError::Replayed`] / [`SrtpError::TooOld`]: reusing an index would
    /// reuse keystream.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let out_len = len + self.rtp_overhead();
        if out_len > buf.len() {
            return Err(if len > buf.len() { SrtpError::TooShort } else { SrtpError::BufferTooSmall });
        }
        let h = super::rtp::parse_header(&buf[..len]).map_err(|_| SrtpError::BadHeader)?;
        let state = self.stream(h.ssrc)?;
        let index = estimate_index(state.rtp_sent.max, h.seq)?;
        state.rtp_sent.check(index)?;
        state.rtp_sent.update(index);
        aes_cm(&self.rtp.enc, packet_iv(&self.rtp.salt, h.ssrc, index), &mut buf[h.payload_offset..len])?;
        let roc = ((index >> 16) as u32).to_be_bytes();
        let tag = self.rtp.mac(&[&buf[..len], &roc]);
        let mki_end = len + self.mki.len();
        buf[len..mki_end].copy_from_slice(&self.mki);
        buf[mki_end..out_len].copy_from_slice(&tag.as_ref()[..self.profile.rtp_tag_len()]);
        Ok(out_len)
    }

    /// Unprotects the SRTP packet `buf` in place (RFC 3711 §3.3): checks MKI, replay and tag
    /// before touching the payload, then decrypts. Returns the RTP length (`buf[..n]`). On error
    /// `buf` and the context are unchanged.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.profile.rtp_tag_len();
        let len = buf.len().checked_sub(self.rtp_overhead()).ok_or(SrtpError::TooShort)?;
        let h = super::rtp::parse_header(&buf[..len]).map_err(|e| match e {
            super::rtp::RtpError::TooShort => SrtpError::TooShort,
            _ => SrtpError::BadHeader,
        })?;
        if buf[len..len + self.mki.len()] != self.mki[..] {
            return Err(SrtpError::MkiMismatch);
        }
        let (highest, window) = match self.streams.get(&h.ssrc) {
            Some(s) => (s.rtp_recv.max, s.rtp_recv),
            None if self.streams.len() >= MAX_STREAMS => return Err(SrtpError::TooManyStreams),
            None => (None, ReplayWindow::default()),
        };
        let index = estimate_index(highest, h.seq)?;
        window.check(index)?;
        let roc = ((index >> 16) as u32).to_be_bytes();
        let tag = self.rtp.mac(&[&buf[..len], &roc]);
        let got = &buf[buf.len() - tag_len..];
        aws_lc_rs::constant_time::verify_slices_are_equal(&tag.as_ref()[..tag_len], got)
            .map_err(|_| SrtpError::AuthFailed)?;
        aes_cm(&self.rtp.enc, packet_iv(&self.rtp.salt, h.ssrc, index), &mut buf[h.payload_offset..len])?;
        self.stream(h.ssrc)?.rtp_recv.update(index);
        Ok(len)
    }

    /// Protects the (compound) RTCP packet in `buf[..len]` in place (RFC 3711 §3.4): encrypts
    /// everything after the first 8 bytes, appends E‖SRTCP index, MKI and the 80-bit tag.
    /// Returns the SRTCP length; `buf` needs [`rtcp_overhead`](Self::rtcp_overhead) bytes of room.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let out_len = len + self.rtcp_overhead();
        if len > buf.len() || len < 8 {
            return Err(SrtpError::TooShort);
        }
        if out_len > buf.len() {
            return Err(SrtpError::BufferTooSmall);
        }
        if buf[0] >> 6 != 2 {
            return Err(SrtpError::BadHeader);
        }
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let state = self.stream(ssrc)?;
        if state.rtcp_sent >= MAX_SRTCP_INDEX {
            return Err(SrtpError::KeyExhausted);
        }
        state.rtcp_sent += 1;
        let index = state.rtcp_sent;
        aes_cm(&self.rtcp.enc, packet_iv(&self.rtcp.salt, ssrc, u64::from(index)), &mut buf[8..len])?;
        buf[len..len + 4].copy_from_slice(&(0x8000_0000 | index).to_be_bytes());
        let tag = self.rtcp.mac(&[&buf[..len + 4]]);
        let mki_end = len + 4 + self.mki.len();
        buf[len + 4..mki_end].copy_from_slice(&self.mki);
        buf[mki_end..out_len].copy_from_slice(&tag.as_ref()[..SRTCP_TAG_LEN]);
        Ok(out_len)
    }

    /// Unprotects the SRTCP packet `buf` in place (RFC 3711 §3.4). Returns the RTCP length. On
    /// error `buf` and the context are unchanged.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let len = buf.len().checked_sub(self.rtcp_overhead()).filter(|&l| l >= 8).ok_or(SrtpError::TooShort)?;
        if buf[0] >> 6 != 2 {
            return Err(SrtpError::BadHeader);
        }
        let mki_start = len + 4;
        if buf[mki_start..mki_start + self.mki.len()] != self.mki[..] {
            return Err(SrtpError::MkiMismatch);
        }
        let e_index = u32::from_be_bytes([buf[len], buf[len + 1], buf[len + 2], buf[len + 3]]);
        let index = u64::from(e_index & MAX_SRTCP_INDEX);
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        match self.streams.get(&ssrc) {
            Some(s) => s.rtcp_recv.check(index)?,
            None if self.streams.len() >= MAX_STREAMS => return Err(SrtpError::TooManyStreams),
            None => {}
        }
        let tag = self.rtcp.mac(&[&buf[..mki_start]]);
        let got = &buf[buf.len() - SRTCP_TAG_LEN..];
        aws_lc_rs::constant_time::verify_slices_are_equal(&tag.as_ref()[..SRTCP_TAG_LEN], got)
            .map_err(|_| SrtpError::AuthFailed)?;
        if e_index & 0x8000_0000 == 0 {
            return Err(SrtpError::Unencrypted);
        }
        aes_cm(&self.rtcp.enc, packet_iv(&self.rtcp.salt, ssrc, index), &mut buf[8..len])?;
        self.stream(ssrc)?.rtcp_recv.update(index);
        Ok(len)
    }
}

/// The MKI of a key (RFC 4568 §9.1 `mki = mki-value ":" mki-length`): `len` bytes, big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mki {
    /// The value.
    pub value: u64,
    /// The field length in bytes, 1–128.
    pub len: u8,
}

impl Mki {
    /// The MKI field as carried in packets.
    pub fn to_bytes(self) -> Vec<u8> {
        let len = usize::from(self.len);
        let mut v = vec![0u8; len];
        let be = self.value.to_be_bytes();
        let n = len.min(8);
        v[len - n..].copy_from_slice(&be[8 - n..]);
        v
    }
}

/// Why an `a=crypto` value was not understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoError {
    /// Not `tag suite key-params …`.
    Syntax,
    /// A suite we do not implement (e.g. AEAD_AES_256_GCM, AES_256_CM_…); skip the line.
    UnsupportedSuite,
    /// The key is not `inline:` base64 of exactly 30 bytes.
    BadKey,
    /// A malformed lifetime or MKI.
    BadKeyParams,
}

/// One `a=crypto` attribute (RFC 4568 §9.1) with a supported suite.
///
/// Only the first key-param is kept (several keys with MKIs are rare in SIP); session parameters
/// are kept as text, and [`CryptoAttribute::is_usable`] tells whether we can honour them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// The tag, 1–999999999.
    pub tag: u32,
    /// The suite.
    pub profile: SrtpProfile,
    /// Key and salt.
    pub master: MasterKey,
    /// The key lifetime in packets, if given (`2^31` or decimal).
    pub lifetime: Option<u64>,
    /// The MKI, if given.
    pub mki: Option<Mki>,
    /// Session parameters (`UNENCRYPTED_SRTP`, `KDR=…`, `WSH=…`, …), verbatim.
    pub session_params: Vec<String>,
}

impl CryptoAttribute {
    /// A fresh attribute with a key drawn from `rng` (no lifetime, no MKI).
    pub fn generate(tag: u32, profile: SrtpProfile, rng: &mut Rng) -> Self {
        Self { tag, profile, master: MasterKey::generate(rng), lifetime: None, mki: None, session_params: Vec::new() }
    }

    /// Our answer to `offered` (RFC 4568 §7.1.2): the same tag and suite, a fresh key of ours
    /// drawn from `rng`, no MKI. Check [`is_usable`](Self::is_usable) on the offer first.
    pub fn answer(offered: &CryptoAttribute, rng: &mut Rng) -> Self {
        Self::generate(offered.tag, offered.profile, rng)
    }

    /// True if every session parameter is one we honour: only `WSH=` (a window size hint; our
    /// window is fixed at 128). RFC 4568 §6.3.7: an attribute with a parameter we cannot honour
    /// must not be accepted.
    pub fn is_usable(&self) -> bool {
        self.session_params.iter().all(|p| p.starts_with("WSH="))
    }

    /// Parses the value of an `a=crypto:` line (the text after the colon).
    pub fn parse(value: &str) -> Result<Self, CryptoError> {
        let mut fields = value.split_ascii_whitespace();
        let tag = fields.next().ok_or(CryptoError::Syntax)?;
        let suite = fields.next().ok_or(CryptoError::Syntax)?;
        let key_params = fields.next().ok_or(CryptoError::Syntax)?;
        let session_params: Vec<String> = fields.take(32).map(str::to_owned).collect();
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoError::Syntax);
        }
        let tag: u32 = tag.parse().map_err(|_| CryptoError::Syntax)?;
        let profile = SrtpProfile::from_name(suite).ok_or(CryptoError::UnsupportedSuite)?;
        // Several key-params are separated by ';': keep the first.
        let first = key_params.split(';').next().unwrap_or_default();
        let inline = first.strip_prefix("inline:").ok_or(CryptoError::BadKey)?;
        let mut parts = inline.split('|');
        let key = parts.next().unwrap_or_default();
        if key.len() != 40 {
            return Err(CryptoError::BadKey);
        }
        let bytes = crate::base64::decode(key).ok_or(CryptoError::BadKey)?;
        let bytes: [u8; 30] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        let mut lifetime = None;
        let mut mki = None;
        for part in parts {
            if let Some((value, len)) = part.split_once(':') {
                if mki.is_some() {
                    return Err(CryptoError::BadKeyParams);
                }
                let value = parse_decimal(value).ok_or(CryptoError::BadKeyParams)?;
                let len = parse_decimal(len).filter(|l| (1..=128).contains(l)).ok_or(CryptoError::BadKeyParams)?;
                if len < 8 && value >> (8 * len) != 0 {
                    return Err(CryptoError::BadKeyParams);
                }
                mki = Some(Mki { value, len: len as u8 });
            } else if lifetime.is_none() && mki.is_none() {
                let l = match part.strip_prefix("2^") {
                    Some(exp) => parse_decimal(exp).filter(|&e| e < 64).map(|e| 1u64 << e),
                    None => parse_decimal(part),
                };
                lifetime = Some(l.ok_or(CryptoError::BadKeyParams)?);
            } else {
                return Err(CryptoError::BadKeyParams);
            }
        }
        Ok(Self { tag, profile, master: MasterKey::from_bytes(&bytes), lifetime, mki, session_params })
    }
}

fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The attribute value (without `a=crypto:`): `tag suite inline:key[|lifetime][|mki:len] …`.
impl fmt::Display for CryptoAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} inline:{}", self.tag, self.profile, crate::base64::encode(&self.master.to_bytes()))?;
        if let Some(l) = self.lifetime {
            if l.is_power_of_two() {
                write!(f, "|2^{}", l.trailing_zeros())?;
            } else {
                write!(f, "|{l}")?;
            }
        }
        if let Some(m) = self.mki {
            write!(f, "|{}:{}", m.value, m.len)?;
        }
        for p in &self.session_params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn rfc_master() -> MasterKey {
        let mut b = [0u8; 30];
        b[..16].copy_from_slice(&hex("E1F97A0D3E018BE0D64FA32C06DE4139"));
        b[16..].copy_from_slice(&hex("0EC675AD498AFEEBB6960B3AABE6"));
        MasterKey::from_bytes(&b)
    }

    /// RFC 3711 Appendix B.2: AES-CM keystream with key 2B7E…, salt F0F1…FD, SSRC 0, index 0.
    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        let iv = packet_iv(&salt, 0, 0);
        assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
        let mut stream = vec![0u8; 16 * 0xff02];
        aes_cm(&aes_ctr_key(&key).unwrap(), iv, &mut stream).unwrap();
        let block = |i: usize| stream[16 * i..16 * (i + 1)].to_vec();
        assert_eq!(block(0), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(block(1), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(block(2), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
        assert_eq!(block(0xfeff), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
        assert_eq!(block(0xff00), hex("362B7C3C6773516318A077D7FC5073AE"));
        assert_eq!(block(0xff01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
    }

    /// RFC 3711 Appendix B.3: key derivation.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let m = rfc_master();
        let mut enc = [0u8; 16];
        derive_session_key(&m, LABEL_RTP_ENC, &mut enc).unwrap();
        assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        derive_session_key(&m, LABEL_RTP_SALT, &mut salt).unwrap();
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 94];
        derive_session_key(&m, LABEL_RTP_AUTH, &mut auth).unwrap();
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2")
        );
    }

    const RTP_PLAIN: &str = "800f1234decafbadcafebabe abababababababababababababababab";
    const SRTP_80: &str = "800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb";
    const RTCP_PLAIN: &str = "81c8000bcafebabe abababababababababababababababab";
    const SRTCP_80: &str = "81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798";

    /// libsrtp `srtp_validate` known answers (same master key as B.3, SSRC 0xcafebabe, seq
    /// 0x1234, SRTCP index 1), for both suites.
    #[test]
    fn libsrtp_known_answers() {
        for (profile, srtp) in [
            (SrtpProfile::AesCm128HmacSha1_80, hex(SRTP_80)),
            (SrtpProfile::AesCm128HmacSha1_32, hex(SRTP_80)[..32].to_vec()),
        ] {
            let mut tx = SrtpContext::new(profile, &rfc_master()).unwrap();
            let mut buf = hex(RTP_PLAIN);
            let len = buf.len();
            buf.resize(len + tx.rtp_overhead(), 0);
            assert_eq!(tx.protect_rtp(&mut buf, len).unwrap(), srtp.len());
            assert_eq!(buf, srtp, "{profile}");
            let mut rx = SrtpContext::new(profile, &rfc_master()).unwrap();
            let n = rx.unprotect_rtp(&mut buf).unwrap();
            assert_eq!(buf[..n], hex(RTP_PLAIN)[..]);

            let mut buf = hex(RTCP_PLAIN);
            let len = buf.len();
            buf.resize(len + tx.rtcp_overhead(), 0);
            assert_eq!(tx.protect_rtcp(&mut buf, len).unwrap(), buf.len());
            assert_eq!(buf, hex(SRTCP_80), "{profile}");
            let n = rx.unprotect_rtcp(&mut buf).unwrap();
            assert_eq!(buf[..n], hex(RTCP_PLAIN)[..]);
        }
    }

    fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 12 + payload.len() + 32];
        let h = super::super::rtp::RtpOut { marker: false, pt: 0, seq, ts: u32::from(seq) * 160, ssrc };
        let n = super::super::rtp::write_packet(&mut v, &h, payload).unwrap();
        v.truncate(n);
        v
    }

    fn protect(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + ctx.rtp_overhead(), 0);
        let n = ctx.protect_rtp(&mut buf, plain.len()).unwrap();
        buf.truncate(n);
        buf
    }

    fn pair(profile: SrtpProfile) -> (SrtpContext, SrtpContext) {
        let mut rng = Rng::new([9; 32]);
        let key = MasterKey::generate(&mut rng);
        (SrtpContext::new(profile, &key).unwrap(), SrtpContext::new(profile, &key).unwrap())
    }

    #[test]
    fn round_trip_tamper_and_replay() {
        for profile in SrtpProfile::ALL {
            let (mut tx, mut rx) = pair(profile);
            let plain = rtp(7, 42, &[0x55; 160]);
            let wire = protect(&mut tx, &plain);
            assert_eq!(wire.len(), plain.len() + profile.rtp_tag_len());
            assert_eq!(wire[..12], plain[..12]);
            assert_ne!(wire[12..172], plain[12..]);
            // Every single-bit flip fails authentication and leaves the context untouched.
            for i in (0..wire.len()).step_by(7) {
                let mut bad = wire.clone();
                bad[i] ^= 0x10;
                let r = rx.unprotect_rtp(&mut bad);
                assert!(
                    matches!(r, Err(SrtpError::AuthFailed | SrtpError::BadHeader | SrtpError::TooShort)),
                    "{i}: {r:?}"
                );
            }
            let mut good = wire.clone();
            assert_eq!(rx.unprotect_rtp(&mut good), Ok(plain.len()));
            assert_eq!(good[..plain.len()], plain[..]);
            let mut again = wire.clone();
            assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replayed));
            assert_eq!(again, wire, "a rejected packet is left as it was");
            // Wrong key.
            let mut other = SrtpContext::new(profile, &MasterKey { key: [1; 16], salt: [2; 14] }).unwrap();
            assert_eq!(other.unprotect_rtp(&mut wire.clone()), Err(SrtpError::AuthFailed));
        }
    }

    #[test]
    fn an_index_is_never_encrypted_twice() {
        let (mut tx, _) = pair(SrtpProfile::AesCm128HmacSha1_80);
        protect(&mut tx, &rtp(10, 1, &[1; 8]));
        protect(&mut tx, &rtp(12, 1, &[2; 8]));
        protect(&mut tx, &rtp(11, 1, &[3; 8])); // late but new: fine
        let mut again = rtp(12, 1, &[4; 8]);
        let len = again.len();
        again.resize(len + 10, 0);
        assert_eq!(tx.protect_rtp(&mut again, len), Err(SrtpError::Replayed));
        let mut old = rtp(65000, 1, &[4; 8]);
        old.resize(len + 10, 0);
        assert_eq!(tx.protect_rtp(&mut old, len), Err(SrtpError::TooOld));
        // Another SSRC has its own indices.
        protect(&mut tx, &rtp(12, 2, &[5; 8]));
    }

    #[test]
    fn replay_window_accepts_reordering_and_rejects_old() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let wires: Vec<Vec<u8>> = (0..300u16).map(|s| protect(&mut tx, &rtp(s, 1, &[s as u8; 10]))).collect();
        // Deliver 200 first, then older ones.
        assert!(rx.unprotect_rtp(&mut wires[200].clone()).is_ok());
        assert!(rx.unprotect_rtp(&mut wires[199].clone()).is_ok());
        assert!(rx.unprotect_rtp(&mut wires[73].clone()).is_ok()); // 127 behind: inside
        assert_eq!(rx.unprotect_rtp(&mut wires[72].clone()), Err(SrtpError::TooOld));
        assert_eq!(rx.unprotect_rtp(&mut wires[199].clone()), Err(SrtpError::Replayed));
        // A jump forward beyond the window clears it.
        assert!(rx.unprotect_rtp(&mut wires[299].clone()).is_ok());
        assert!(rx.unprotect_rtp(&mut wires[250].clone()).is_ok());
        assert_eq!(rx.unprotect_rtp(&mut wires[200].clone()), Err(SrtpError::Replayed));
    }

    #[test]
    fn roc_rollover_and_reordering_across_it() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_32);
        let seqs: Vec<u16> = (65500..=65535).chain(0..100).collect();
        let wires: Vec<(u16, Vec<u8>)> =
            seqs.iter().map(|&s| (s, protect(&mut tx, &rtp(s, 5, &[s as u8; 20])))).collect();
        assert_eq!(tx.streams[&5].rtp_sent.max, Some(65536 + 99));
        // Deliver with the packets around the wrap swapped.
        let mut order: Vec<usize> = (0..wires.len()).collect();
        order.swap(35, 37); // 65535 after 1
        order.swap(34, 36); // 65534 after 0
        for i in order {
            let (seq, w) = &wires[i];
            let mut b = w.clone();
            let n = rx.unprotect_rtp(&mut b).unwrap_or_else(|e| panic!("seq {seq}: {e}"));
            assert_eq!(b[..n], rtp(*seq, 5, &[*seq as u8; 20])[..]);
        }
        assert_eq!(rx.streams[&5].rtp_recv.max, Some(65536 + 99));
        // A receiver that first sees a packet after the wrap also decrypts with ROC 0: it cannot
        // know, which is why senders start with ROC 0 and the rewriter starts small.
        let (_, mut late) = pair(SrtpProfile::AesCm128HmacSha1_32);
        assert_eq!(late.unprotect_rtp(&mut wires[40].1.clone()), Err(SrtpError::AuthFailed));
    }

    #[test]
    fn index_estimation_appendix_a() {
        assert_eq!(estimate_index(None, 5), Ok(5));
        assert_eq!(estimate_index(Some(10), 11), Ok(11));
        assert_eq!(estimate_index(Some(10), 65530), Err(SrtpError::TooOld)); // would be ROC −1
        assert_eq!(estimate_index(Some(65530), 3), Ok(65536 + 3));
        assert_eq!(estimate_index(Some(65536 + 3), 65530), Ok(65530));
        assert_eq!(estimate_index(Some((7 << 16) + 40000), 100), Ok((8 << 16) + 100));
        assert_eq!(estimate_index(Some((7 << 16) + 100), 30000), Ok((7 << 16) + 30000));
        assert_eq!(estimate_index(Some((7 << 16) + 100), 40000 + 100), Ok((6 << 16) + 40100));
        assert_eq!(estimate_index(Some((u64::from(u32::MAX) << 16) + 65000), 10), Err(SrtpError::KeyExhausted));
    }

    #[test]
    fn srtcp_round_trip_replay_and_e_bit() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_32);
        let mut report = Vec::new();
        super::super::rtcp::write_report(&mut report, 77, None, &[], b"cname");
        let mut wires = Vec::new();
        for _ in 0..3 {
            let mut b = report.clone();
            b.resize(report.len() + tx.rtcp_overhead(), 0);
            let n = tx.protect_rtcp(&mut b, report.len()).unwrap();
            assert_eq!(n, report.len() + 14);
            wires.push(b);
        }
        assert_eq!(wires[0][report.len()..report.len() + 4], [0x80, 0, 0, 1]);
        assert_eq!(wires[2][report.len()..report.len() + 4], [0x80, 0, 0, 3]);
        let mut b = wires[1].clone();
        assert_eq!(rx.unprotect_rtcp(&mut b), Ok(report.len()));
        assert_eq!(b[..report.len()], report[..]);
        assert!(rx.unprotect_rtcp(&mut wires[0].clone()).is_ok());
        assert_eq!(rx.unprotect_rtcp(&mut wires[1].clone()), Err(SrtpError::Replayed));
        let mut bad = wires[2].clone();
        bad[10] ^= 1;
        assert_eq!(rx.unprotect_rtcp(&mut bad), Err(SrtpError::AuthFailed));
        // Clearing the E bit breaks the tag, which covers it.
        let mut clear = wires[2].clone();
        clear[report.len()] &= 0x7f;
        assert_eq!(rx.unprotect_rtcp(&mut clear), Err(SrtpError::AuthFailed));
        // A validly authenticated packet with E=0 is still refused.
        let mut plain = report.clone();
        plain.extend_from_slice(&[0, 0, 0, 9]);
        let tag = tx.rtcp.mac(&[&plain]);
        plain.extend_from_slice(&tag.as_ref()[..10]);
        assert_eq!(rx.unprotect_rtcp(&mut plain), Err(SrtpError::Unencrypted));
    }

    #[test]
    fn mki_is_sent_and_checked() {
        let attr = CryptoAttribute::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
        )
        .unwrap();
        let mut tx = SrtpContext::from_crypto(&attr).unwrap();
        let mut rx = SrtpContext::from_crypto(&attr).unwrap();
        assert_eq!(tx.rtp_overhead(), 14);
        let wire = protect(&mut tx, &rtp(1, 2, &[3; 4]));
        assert_eq!(wire[16..20], [0, 0, 0, 1]);
        let mut other = attr.clone();
        other.mki = Some(Mki { value: 2, len: 4 });
        let mut rx2 = SrtpContext::from_crypto(&other).unwrap();
        assert_eq!(rx2.unprotect_rtp(&mut wire.clone()), Err(SrtpError::MkiMismatch));
        assert!(rx.unprotect_rtp(&mut wire.clone()).is_ok());
        let mut rtcp = vec![0x80, 201, 0, 1, 0, 0, 0, 2];
        rtcp.resize(8 + tx.rtcp_overhead(), 0);
        let n = tx.protect_rtcp(&mut rtcp, 8).unwrap();
        assert_eq!(rtcp[12..16], [0, 0, 0, 1]);
        assert_eq!(rx.unprotect_rtcp(&mut rtcp[..n]), Ok(8));
    }

    #[test]
    fn buffers_and_headers_are_checked() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let plain = rtp(1, 2, &[3; 4]);
        let mut small = plain.clone();
        assert_eq!(tx.protect_rtp(&mut small, plain.len()), Err(SrtpError::BufferTooSmall));
        assert_eq!(tx.protect_rtp(&mut small, plain.len() + 1), Err(SrtpError::TooShort));
        let mut junk = vec![0u8; 40];
        assert_eq!(tx.protect_rtp(&mut junk, 20), Err(SrtpError::BadHeader));
        assert_eq!(rx.unprotect_rtp(&mut [0x80; 21]), Err(SrtpError::TooShort));
        assert_eq!(rx.unprotect_rtp(&mut [0u8; 40]), Err(SrtpError::BadHeader));
        assert_eq!(tx.protect_rtcp(&mut [0x80; 10], 7), Err(SrtpError::TooShort));
        assert_eq!(tx.protect_rtcp(&mut [0x80; 10], 8), Err(SrtpError::BufferTooSmall));
        assert_eq!(tx.protect_rtcp(&mut [0u8; 30], 8), Err(SrtpError::BadHeader));
        assert_eq!(rx.unprotect_rtcp(&mut [0x80; 21]), Err(SrtpError::TooShort));
    }

    #[test]
    fn too_many_streams_are_refused() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        for ssrc in 0..MAX_STREAMS as u32 {
            let w = protect(&mut tx, &rtp(1, ssrc, &[0; 4]));
            assert!(rx.unprotect_rtp(&mut w.clone()).is_ok());
        }
        let mut b = rtp(1, 1000, &[0; 4]);
        b.resize(b.len() + 10, 0);
        assert_eq!(tx.protect_rtp(&mut b, 16), Err(SrtpError::TooManyStreams));
        assert_eq!(rx.unprotect_rtp(&mut [0x80; 40]), Err(SrtpError::TooManyStreams));
    }

    #[test]
    fn unprotect_never_panics_on_random_bytes() {
        let mut rng = Rng::new([8; 32]);
        let (_, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let mut buf = [0u8; 80];
        for _ in 0..5_000 {
            let len = (rng.next_u64() % 80) as usize;
            rng.fill(&mut buf[..len]);
            buf[0] = buf[0] & 0x3f | 0x80;
            assert!(rx.unprotect_rtp(&mut buf[..len]).is_err());
            assert!(rx.unprotect_rtcp(&mut buf[..len]).is_err());
        }
    }

    #[test]
    fn crypto_attribute_parse_and_format() {
        let long_mki = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32";
        assert_eq!(CryptoAttribute::parse(long_mki).unwrap().mki.unwrap().to_bytes().len(), 32);
        let a = CryptoAttribute::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
        )
        .unwrap();
        assert_eq!((a.tag, a.profile, a.lifetime), (1, SrtpProfile::AesCm128HmacSha1_80, Some(1 << 20)));
        assert_eq!(a.mki, Some(Mki { value: 1, len: 4 }));
        assert_eq!(a.to_string(), "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4");
        assert!(a.is_usable());

        let b = CryptoAttribute::parse(
            "2  aes_cm_128_hmac_sha1_32   inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|1000;inline:xx  KDR=1 WSH=64",
        )
        .unwrap();
        assert_eq!((b.tag, b.profile, b.lifetime, b.mki), (2, SrtpProfile::AesCm128HmacSha1_32, Some(1000), None));
        assert_eq!(b.session_params, ["KDR=1", "WSH=64"]);
        assert!(!b.is_usable());
        assert!(b.to_string().ends_with("|1000 KDR=1 WSH=64"));

        for bad in [
            "",
            "1",
            "1 AES_CM_128_HMAC_SHA1_80",
            "x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1234567890 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 key:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaV",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaV!R",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^64",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1:0",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|256:1",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1:1|2",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1|2",
        ] {
            assert!(CryptoAttribute::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            CryptoAttribute::parse("1 AEAD_AES_256_GCM inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"),
            Err(CryptoError::UnsupportedSuite)
        );
    }

    #[test]
    fn generated_attributes_round_trip() {
        let mut rng = Rng::new([1; 32]);
        let a = CryptoAttribute::generate(1, SrtpProfile::AesCm128HmacSha1_80, &mut rng);
        let b = CryptoAttribute::generate(2, SrtpProfile::AesCm128HmacSha1_32, &mut rng);
        assert_ne!(a.master, b.master);
        assert_eq!(format!("{:?}", a.master), "MasterKey(..)");
        for x in [a, b] {
            let text = x.to_string();
            assert_eq!(CryptoAttribute::parse(&text).unwrap(), x, "{text}");
        }
        let with_mki = CryptoAttribute {
            lifetime: Some(1000),
            mki: Some(Mki { value: 300, len: 10 }),
            ..CryptoAttribute::generate(3, SrtpProfile::AesCm128HmacSha1_80, &mut rng)
        };
        assert_eq!(CryptoAttribute::parse(&with_mki.to_string()).unwrap(), with_mki);
        assert_eq!(with_mki.mki.unwrap().to_bytes(), [0, 0, 0, 0, 0, 0, 0, 0, 1, 44]);
        let ans = CryptoAttribute::answer(&with_mki, &mut rng);
        assert_eq!((ans.tag, ans.profile, ans.mki, ans.lifetime), (3, SrtpProfile::AesCm128HmacSha1_80, None, None));
        assert_ne!(ans.master, with_mki.master);
    }

    #[test]
    fn crypto_parse_never_panics() {
        let mut rng = Rng::new([6; 32]);
        let alphabet = b"0123456789 |:^;AES_CM_128_HMAC_SHA1_80inline:+/=abcXYZ";
        for _ in 0..20_000 {
            let len = (rng.next_u64() % 90) as usize;
            let s: String =
                (0..len).map(|_| alphabet[(rng.next_u64() % alphabet.len() as u64) as usize] as char).collect();
            let s = format!("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR{s}");
            if let Ok(a) = CryptoAttribute::parse(&s) {
                let _ = a.to_string();
            }
        }
    }
}
