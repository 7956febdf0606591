use super::*;
use std::time::Duration;

fn cert() -> DtlsIdentity {
    str0m::crypto::from_feature_flags().dtls_provider.generate_certificate().expect("certificate").into()
}

/// A browser-like offer (full ICE, Opus + PCMU + telephone-event/8000 at 126) and the pending
/// state to accept the answer with.
fn offer(now: Instant) -> (Rtc, String, SdpPendingOffer) {
    let mut config =
        RtcConfig::new().set_rtp_mode(true).clear_codecs().enable_opus(true, false).enable_pcmu(true, false);
    config.codec_config().add_config(
        126.into(),
        None,
        Codec::Tele,
        Frequency::EIGHT_KHZ,
        None,
        FormatParams::parse_line("0-16"),
    );
    let mut rtc = config.build(now);
    rtc.add_local_candidate(Candidate::host("192.0.2.10:50000".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, str0m::media::Direction::SendRecv, None, None, None);
    let (offer, pending) = api.apply().expect("an offer");
    (rtc, offer.to_sdp_string(), pending)
}

fn adv() -> Vec<SocketAddr> {
    vec!["198.51.100.1:40000".parse().unwrap(), "[2001:db8::1]:40000".parse().unwrap()]
}

#[test]
fn answers_with_only_the_allowed_codecs() {
    let now = crate::time::test_epoch();
    let (mut browser, offer_sdp, pending) = offer(now);
    let mut rng = Rng::new([3; 32]);
    let mut leg = BrowserLeg::new(&cert(), &adv(), &mut rng);
    assert_eq!(leg.ufrag().len(), UFRAG_HEX);
    assert_eq!(leg.ufrag(), Rng::new([3; 32]).hex(UFRAG_HEX), "credentials come from our Rng");
    assert_eq!(leg.poll(now), None, "nothing to do before the offer");
    // Trickled before the answer: kept for later.
    leg.add_remote_candidate("a=candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host").unwrap();
    leg.add_remote_candidate("").unwrap();
    assert!(matches!(leg.add_remote_candidate("candidate:nonsense"), Err(WebRtcError::BadCandidate(_))));

    let answer = leg.accept_offer(&offer_sdp, &[SdpCodec::pcmu(), SdpCodec::telephone_event(126)], now).unwrap();
    let m = answer.lines().find(|l| l.starts_with("m=audio")).unwrap();
    assert!(m.ends_with("UDP/TLS/RTP/SAVPF 0 126"), "{m}");
    assert!(!answer.to_ascii_lowercase().contains("opus"));
    assert!(answer.contains("a=ice-lite"));
    assert!(answer.contains(&format!("a=ice-ufrag:{}", leg.ufrag())));
    assert_eq!(answer.matches("a=candidate:").count(), 2, "{answer}");
    assert!(answer.contains("198.51.100.1 40000 typ host") && answer.contains("2001:db8::1 40000 typ host"));
    assert_eq!(leg.payload_types(), [0, 126]);
    // No bandwidth estimation on an audio call: neither TWCC nor abs-send-time (issue #14).
    assert!(!answer.contains("transport-wide-cc") && !answer.contains("abs-send-time"), "{answer}");
    assert!(answer.contains("urn:ietf:params:rtp-hdrext:sdes:mid"), "{answer}");
    browser.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    assert!(matches!(leg.poll(now), Some(LegOutput::Timeout(_))));
    assert_eq!(leg.write_rtp(now, false, 0, 1, 0, false, &[0xff; 160]), Err(WebRtcError::NotReady));
    leg.close();
    assert_eq!(leg.poll(now + Duration::from_millis(1)), Some(LegOutput::Closed));
    assert_eq!(leg.poll(now), None);
    assert!(!leg.is_alive());
}

/// A browser-like offer with audio (PCMU) and video (VP8 at 96, H.264 CB at 108).
fn video_offer(now: Instant) -> String {
    let mut config = RtcConfig::new().set_rtp_mode(true).clear_codecs().enable_pcmu(true, false);
    config.codec_config().add_config(96.into(), None, Codec::Vp8, Frequency::NINETY_KHZ, None, FormatParams::default());
    config.codec_config().add_h264(108.into(), None, true, 0x42e01f);
    let mut rtc = config.build(now);
    rtc.add_local_candidate(Candidate::host("192.0.2.10:50000".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, str0m::media::Direction::SendRecv, None, None, None);
    api.add_media(MediaKind::Video, str0m::media::Direction::SendRecv, None, None, None);
    api.apply().expect("an offer").0.to_sdp_string()
}

fn m_line<'a>(sdp: &'a str, kind: &str) -> &'a str {
    sdp.lines().find(|l| l.starts_with(&format!("m={kind} "))).unwrap()
}

#[test]
fn video_is_answered_with_exactly_the_allowed_format_or_refused() {
    let now = crate::time::test_epoch();
    let offer = video_offer(now);
    let h264 = SdpCodec::h264(108, Some("packetization-mode=1;profile-level-id=42e01f"));
    let mut leg = BrowserLeg::new(&cert(), &adv(), &mut Rng::new([6; 32]));
    let answer = leg.accept_offer(&offer, &[SdpCodec::pcmu(), h264], now).unwrap();
    assert!(m_line(&answer, "video").ends_with("UDP/TLS/RTP/SAVPF 108"), "{answer}");
    assert!(!answer.contains("VP8"), "{answer}");
    assert!(leg.has_video());
    // A leg with video keeps str0m's extensions for bandwidth estimation.
    assert!(answer.contains("transport-wide-cc") && answer.contains("abs-send-time"), "{answer}");
    assert_eq!(leg.write_rtp(now, true, 108, 1, 0, true, &[1]), Err(WebRtcError::NotReady), "not connected yet");
    assert!(leg.request_keyframe(false), "the browser's video stream is declared by its a=ssrc");
    // Video not allowed (the SIP side refused it): the m-line is refused, audio answered.
    let mut leg = BrowserLeg::new(&cert(), &adv(), &mut Rng::new([7; 32]));
    let answer = leg.accept_offer(&offer, &[SdpCodec::pcmu()], now).unwrap();
    assert!(m_line(&answer, "video").starts_with("m=video 0 "), "{answer}");
    assert!(m_line(&answer, "audio").ends_with(" 0"), "{answer}");
    assert!(!leg.has_video());
    assert!(!leg.request_keyframe(true));
    assert_eq!(leg.write_rtp(now, true, 96, 1, 0, true, &[1]), Err(WebRtcError::NotReady));
}

#[test]
fn offers_video_when_the_sip_side_has_it() {
    let now = crate::time::test_epoch();
    let mut leg = BrowserLeg::new(&cert(), &adv(), &mut Rng::new([8; 32]));
    let offer = leg.create_offer(&[SdpCodec::pcmu(), SdpCodec::vp8(100)], now).unwrap();
    assert!(m_line(&offer, "audio").ends_with("UDP/TLS/RTP/SAVPF 0"), "{offer}");
    assert!(m_line(&offer, "video").ends_with("UDP/TLS/RTP/SAVPF 100"), "{offer}");
    assert!(offer.contains("a=rtpmap:100 VP8/90000"), "{offer}");
    let mut leg = BrowserLeg::new(&cert(), &adv(), &mut Rng::new([9; 32]));
    let offer = leg.create_offer(&[SdpCodec::pcmu()], now).unwrap();
    assert!(!offer.contains("m=video"), "{offer}");
}

#[test]
fn refuses_offers_without_a_common_codec() {
    let now = crate::time::test_epoch();
    let (_browser, offer_sdp, _) = offer(now);
    let mut leg = BrowserLeg::new(&cert(), &adv(), &mut Rng::new([4; 32]));
    // Only things the browser leg does not carry.
    let vp8_only = [SdpCodec::vp8(96), SdpCodec::telephone_event(101)];
    assert_eq!(leg.accept_offer(&offer_sdp, &vp8_only, now), Err(WebRtcError::NoCodec));
    assert!(matches!(leg.accept_offer("v=0\r\nnonsense", &[SdpCodec::pcmu()], now), Err(WebRtcError::BadOffer(_))));
    // PCMA is carried but not offered: the audio m-line is refused.
    assert_eq!(leg.accept_offer(&offer_sdp, &[SdpCodec::pcma()], now), Err(WebRtcError::NoCodec));
}

#[test]
fn local_candidate_for_wildcard_and_nat() {
    let leg = BrowserLeg::new(&cert(), &adv(), &mut Rng::new([5; 32]));
    let v4: SocketAddr = "198.51.100.1:40000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
    assert_eq!(leg.local_candidate(v4), v4);
    assert_eq!(leg.local_candidate("0.0.0.0:40000".parse().unwrap()), v4);
    assert_eq!(leg.local_candidate("10.0.0.5:40000".parse().unwrap()), v4);
    assert_eq!(leg.local_candidate("[::]:40000".parse().unwrap()), v6);
}

#[test]
fn identity_debug_hides_the_key() {
    let id = DtlsIdentity::from_der(vec![1, 2, 3], vec![0x42; 40]);
    let text = format!("{id:?}");
    assert!(text.contains("certificate: 3") && !text.contains("66"), "{text}");
    assert_eq!(id.clone(), id);
    assert_ne!(id, DtlsIdentity::from_der(vec![1, 2, 3], vec![0x43; 40]));
}

/// A keyframe request before ICE has a pair cannot go out, and str0m keeps asking for its
/// timers at the instant it last ran them. The leg must then ask to be woken later, not at
/// `now` again: the gateway's call timer would fire at once, forever (fuzz finding
/// `gateway_ops/drain-spin`).
#[test]
fn a_stalled_str0m_timer_is_retried_later_not_at_once() {
    let now = crate::time::test_epoch();
    let h264 = SdpCodec::h264(108, Some("packetization-mode=1;profile-level-id=42e01f"));
    let mut leg = BrowserLeg::new(&cert(), &adv(), &mut Rng::new([10; 32]));
    leg.accept_offer(&video_offer(now), &[SdpCodec::pcmu(), h264], now).unwrap();
    assert!(leg.request_keyframe(false));
    for step in 0..1000 {
        match leg.poll(now) {
            Some(LegOutput::Timeout(at)) => {
                assert!(at > now, "poll {step} asks to be woken at {at:?}, not after now {now:?}");
                return;
            }
            Some(_) => continue,
            None => panic!("the leg went away"),
        }
    }
    panic!("no Timeout after 1000 polls");
}
