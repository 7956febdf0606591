//! The pure offer/answer decisions of the call layer: which m-lines and codecs we carry, our
//! m-lines, SDES crypto and keys (RFC 3264, RFC 4568). No gateway state.

use crate::call::{self, Slot, VideoLine};
use crate::config::SdesMode;
use crate::errors::SdpProblem;
use crate::media::bridge::SipMedia;
use crate::media::sdp::{self, Codec, LocalMedia, MediaKind, SessionDescription};
use crate::media::srtp::{CryptoAttribute, SrtpContext};

/// `sdp` parsed, with the index of its first audio m-line in use.
pub(super) fn parse_sdp(sdp: &[u8]) -> Result<(SessionDescription, usize), SdpProblem> {
    let desc = SessionDescription::parse(sdp).map_err(SdpProblem::Parse)?;
    let idx =
        desc.media.iter().position(|m| m.kind == MediaKind::Audio && !m.is_rejected()).ok_or(SdpProblem::NoAudio)?;
    Ok((desc, idx))
}

/// The SRTP contexts of a call: ours protects what we send, theirs checks what the peer sends.
pub(super) fn srtp_contexts(ours: &CryptoAttribute, theirs: &CryptoAttribute) -> Option<(SrtpContext, SrtpContext)> {
    Some((SrtpContext::from_crypto(ours).ok()?, SrtpContext::from_crypto(theirs).ok()?))
}

/// The codecs of `m` we carry, in `m`'s order and numbers (a telephone-event at another rate
/// than 8000 only when `m` has none at 8000: `dtmf_rate::carried`).
pub(super) fn carried(m: &sdp::MediaDescription) -> Vec<Codec> {
    crate::media::dtmf_rate::carried(&m.codecs(), &call::supported_codecs())
}

/// The first video m-line of `desc` in use (a port), if any.
pub(super) fn video_index(desc: &SessionDescription) -> Option<usize> {
    desc.media.iter().position(|m| m.kind == MediaKind::Video && !m.is_rejected())
}

/// The video codecs of `m` we carry (VP8, H.264), in `m`'s order and numbers.
pub(super) fn carried_video(m: &sdp::MediaDescription) -> Vec<Codec> {
    sdp::intersect(&m.codecs(), &call::supported_video_codecs())
}

/// The m-lines of a SIP offer as slots of our answer: the audio line we use (`audio`), the video
/// line (`video`, when we take it), every other line refused.
pub(super) fn answer_layout(desc: &SessionDescription, audio: usize, video: Option<usize>) -> Vec<Slot> {
    desc.media
        .iter()
        .enumerate()
        .map(|(i, m)| match i {
            i if i == audio => Slot::Audio,
            i if Some(i) == video => Slot::Video,
            _ => Slot::Reject(LocalMedia::rejected(m)),
        })
        .collect()
}

/// Our video m-line: in use (port, codecs, crypto, `direction`) or refused (port 0).
pub(super) fn video_local_media(video: Option<&VideoLine>, direction: sdp::Direction) -> LocalMedia {
    match video {
        Some(v) if v.is_open() && v.rtp.port.is_some() => LocalMedia {
            direction,
            proto: v.proto.clone(),
            crypto: v.local_crypto.clone(),
            rtcp_fb: v.feedback.rtcp_fb_lines(),
            ..LocalMedia::new(
                MediaKind::Video,
                v.rtp.port.unwrap_or(0),
                [v.sip_codecs(), v.feedback.rtx_codecs()].concat(),
            )
        },
        _ => LocalMedia {
            proto: video.map_or(sdp::Proto::RtpAvp, |v| v.proto.clone()),
            fallback_format: video.and_then(|v| v.offered.first()).map(|c| c.pt.to_string()),
            direction: sdp::Direction::Inactive,
            ..LocalMedia::new(MediaKind::Video, 0, Vec::new())
        },
    }
}

/// SDES for one m-line of an answer to our offer (RFC 4568 §7.1.2): the answer's crypto names one
/// of our offered lines by tag and suite. `Ok(None)`: plain RTP; `Err`: not acceptable.
pub(super) fn answered_crypto(
    m: &sdp::MediaDescription,
    ours: &[CryptoAttribute],
    mode: SdesMode,
) -> Result<Option<(CryptoAttribute, CryptoAttribute)>, ()> {
    match (m.usable_crypto(), ours.is_empty()) {
        (_, true) => Ok(None),
        (Some(theirs), false) => {
            let ours = ours.iter().find(|c| c.tag == theirs.tag && c.profile == theirs.profile).ok_or(())?;
            Ok(Some((ours.clone(), theirs.clone())))
        }
        (None, false) if mode == SdesMode::Mandatory => Err(()),
        (None, false) => Ok(None),
    }
}

/// A new SDP of the SIP peer for one m-line of an SRTP call (RFC 4568 §7.1.4): a changed
/// `a=crypto` gets new contexts, with our key under the peer's tag. False when the line is SRTP
/// and the SDP has no usable crypto (a plain line offered one stays plain).
pub(super) fn rekey(
    local: &mut Vec<CryptoAttribute>,
    remote: &mut Option<CryptoAttribute>,
    media: Option<&mut SipMedia>,
    theirs: Option<&CryptoAttribute>,
    rng: &mut crate::rng::Rng,
) -> bool {
    let Some(current) = remote.clone() else { return true };
    let Some(theirs) = theirs else { return false };
    if &current == theirs {
        return true;
    }
    let mut ours = local.first().cloned().unwrap_or_else(|| CryptoAttribute::answer(theirs, rng));
    if ours.profile != theirs.profile {
        ours = CryptoAttribute::answer(theirs, rng);
    }
    ours.tag = theirs.tag;
    let Some((tx, rx)) = srtp_contexts(&ours, theirs) else { return false };
    if let Some(media) = media {
        media.set_srtp(tx, rx);
    }
    *local = vec![ours];
    *remote = Some(theirs.clone());
    true
}
