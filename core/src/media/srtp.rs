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
mod tests;
