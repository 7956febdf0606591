use super::*;
use crate::media::srtp::SrtpProfile;
use crate::rng::Rng;

const BARESIP: &str = "v=0\r\n\
    o=- 1618513711 3946293413 IN IP4 192.0.2.10\r\n\
    s=-\r\n\
    c=IN IP4 192.0.2.10\r\n\
    t=0 0\r\n\
    m=audio 30000 RTP/AVP 96 9 0 8 101\r\n\
    b=AS:64\r\n\
    a=rtpmap:96 opus/48000/2\r\n\
    a=fmtp:96 stereo=1;sprop-stereo=1\r\n\
    a=rtpmap:9 G722/8000\r\n\
    a=rtpmap:0 PCMU/8000\r\n\
    a=rtpmap:8 PCMA/8000\r\n\
    a=rtpmap:101 telephone-event/8000\r\n\
    a=fmtp:101 0-15\r\n\
    a=rtcp:30001\r\n\
    a=ssrc:12345 cname:foo\r\n\
    a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
    a=sendrecv\r\n\
    a=label:1\r\n\
    a=ptime:20\r\n";

#[test]
fn parses_a_baresip_offer_and_drops_unknown_lines() {
    let sdp = SessionDescription::parse(BARESIP.as_bytes()).unwrap();
    assert_eq!(sdp.origin.session_version, "3946293413");
    assert_eq!(sdp.origin.address, "192.0.2.10");
    assert_eq!(sdp.session_name, "-");
    assert_eq!(sdp.connection, Some("192.0.2.10".parse().unwrap()));
    assert_eq!(sdp.media.len(), 1);
    let m = &sdp.media[0];
    assert_eq!((&m.kind, m.port, &m.proto), (&MediaKind::Audio, 30000, &Proto::RtpAvp));
    assert_eq!(m.payload_types().collect::<Vec<_>>(), [96, 9, 0, 8, 101]);
    assert_eq!(m.ptime, Some(20));
    assert_eq!(m.rtcp, Some(RtcpAttr { port: 30001, addr: None }));
    assert_eq!(m.direction, Some(Direction::SendRecv));
    assert_eq!(m.fmtp(101), Some("0-15"));
    let codecs = m.codecs();
    assert_eq!(codecs[0], Codec { fmtp: Some("stereo=1;sprop-stereo=1".into()), ..Codec::opus(96) });
    assert_eq!(codecs[1], Codec::g722());
    assert_eq!(codecs[4], Codec { fmtp: Some("0-15".into()), ..Codec::telephone_event(101) });
    assert_eq!(sdp.rtp_addr(m), Some("192.0.2.10:30000".parse().unwrap()));
    assert_eq!(sdp.rtcp_addr(m, false), Some("192.0.2.10:30001".parse().unwrap()));
    assert_eq!(sdp.rtcp_addr(m, true), Some("192.0.2.10:30000".parse().unwrap()));
}

#[test]
fn parses_ipv6_srtp_hold_and_static_pts() {
    let text = "v=0\n\
        o=alice 1 2 IN IP6 2001:db8::1\n\
        s=call\n\
        t=0 0\n\
        a=sendonly\n\
        m=audio 4000 RTP/SAVP 0 18 13\n\
        c=IN IP6 2001:db8::2\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4\n\
        a=crypto:2 AEAD_AES_256_GCM inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBRPS1uQCVeeCFCanVm\n\
        a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj\n\
        a=rtcp:4001 IN IP6 2001:db8::3\n\
        a=rtcp-mux\n\
        m=video 0 RTP/AVP 96\n\
        m=image 5000 udptl t38\n\
        c=IN IP4 0.0.0.0\n";
    let sdp = SessionDescription::parse(text.as_bytes()).unwrap();
    assert_eq!(sdp.connection, None);
    assert_eq!(sdp.direction, Some(Direction::SendOnly));
    let a = &sdp.media[0];
    assert!(a.proto.is_secure());
    assert_eq!(a.crypto.len(), 2, "unsupported suites are skipped");
    assert_eq!(a.usable_crypto().unwrap().tag, 1);
    assert_eq!(a.crypto[1].profile, SrtpProfile::AesCm128HmacSha1_32);
    assert!(a.rtcp_mux);
    let codecs: Vec<_> = a.codecs().into_iter().map(|c| (c.pt, c.name, c.clock_rate)).collect();
    assert_eq!(codecs, [(0, "PCMU".into(), 8000), (18, "G729".into(), 8000), (13, "CN".into(), 8000)]);
    assert_eq!(sdp.media_direction(a), Direction::SendOnly);
    assert_eq!(sdp.rtp_addr(a), Some("[2001:db8::2]:4000".parse().unwrap()));
    assert_eq!(sdp.rtcp_addr(a, false), Some("[2001:db8::3]:4001".parse().unwrap()));
    let v = &sdp.media[1];
    assert!(v.is_rejected());
    assert_eq!(sdp.effective_direction(v), Direction::Inactive);
    assert_eq!(sdp.rtp_addr(v), None);
    assert_eq!(v.codecs(), [], "a dynamic PT without rtpmap has no codec");
    let img = &sdp.media[2];
    assert_eq!((&img.kind, &img.proto), (&MediaKind::Other("image".into()), &Proto::Other("udptl".into())));
    assert_eq!(img.formats, ["t38"]);
    // c=0.0.0.0: legacy hold. The sender cannot receive.
    assert_eq!(sdp.effective_direction(img), Direction::SendOnly);
    assert_eq!(sdp.rtp_addr(img), None);
}

#[test]
fn legacy_hold_folds_into_the_direction() {
    let text = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let sdp = SessionDescription::parse(text.as_bytes()).unwrap();
    let m = &sdp.media[0];
    assert_eq!(sdp.media_direction(m), Direction::SendRecv);
    assert_eq!(sdp.effective_direction(m), Direction::SendOnly);
    assert_eq!(answer_direction(sdp.effective_direction(m), Direction::SendRecv), Direction::RecvOnly);
    let text = text.replace("m=audio 4000 RTP/AVP 0\r\n", "m=audio 4000 RTP/AVP 0\r\na=recvonly\r\n");
    let sdp = SessionDescription::parse(text.as_bytes()).unwrap();
    assert_eq!(sdp.effective_direction(&sdp.media[0]), Direction::Inactive);
}

#[test]
fn rejects_malformed_sdp() {
    for (text, err) in [
        ("", SdpError::Syntax),
        ("v=1\r\n", SdpError::Syntax),
        ("o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n", SdpError::Syntax),
        ("v=0\r\nm=audio 1 RTP/AVP 0\r\n", SdpError::Origin),
        ("v=0\r\ns=-\r\n", SdpError::Origin),
        ("v=0\r\no=- x 1 IN IP4 1.2.3.4\r\n", SdpError::Origin),
        ("v=0\r\no=- 1 1 IN IP4\r\n", SdpError::Origin),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nbogus\r\n", SdpError::Syntax),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nX=1\r\n", SdpError::Syntax),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 host.example\r\n", SdpError::Connection),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP6 1.2.3.4\r\n", SdpError::Connection),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=XX IP4 1.2.3.4\r\n", SdpError::Connection),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio\r\n", SdpError::Media),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n", SdpError::Media),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 128\r\n", SdpError::Media),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP x\r\n", SdpError::Media),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1/x RTP/AVP 0\r\n", SdpError::Media),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP\u{1} 0\r\n", SdpError::Media),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=image 1 udptl t\u{e9}38\r\n", SdpError::Media),
    ] {
        assert_eq!(SessionDescription::parse(text.as_bytes()), Err(err), "{text:?}");
    }
    let many = format!("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n{}", "m=audio 1 RTP/AVP 0\r\n".repeat(MAX_MEDIA + 1));
    assert_eq!(SessionDescription::parse(many.as_bytes()), Err(SdpError::TooLarge));
    let fmts = format!("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP{}\r\n", " 0".repeat(MAX_FORMATS + 1));
    assert_eq!(SessionDescription::parse(fmts.as_bytes()), Err(SdpError::TooLarge));
    let lines = format!("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n{}", "a=x\r\n".repeat(MAX_LINES));
    assert_eq!(SessionDescription::parse(lines.as_bytes()), Err(SdpError::TooLarge));
}

#[test]
fn tolerates_odd_but_harmless_input() {
    // Blank lines, LF only, no s=/t=, malformed attributes (ignored), duplicate rtpmaps
    // (first wins), multicast suffix, port count.
    let text = "v=0\n\no=- 1 1 IN IP4 1.2.3.4\nc=IN IP4 233.252.0.1/127\nm=audio 49170/2 RTP/AVP 0 97\n\
        a=rtpmap:97 L16/0\na=rtpmap:0 PCMU/8000\na=rtpmap:0 PCMA/8000\na=rtpmap:x y\na=fmtp:200 a\n\
        a=ptime:abc\na=rtcp:99999\na=crypto:junk\na=direction:sendonly\na=fmtp:0 \u{1}\t \n\
        a=rtpmap:97 L\u{1}16/8000\n";
    let sdp = SessionDescription::parse(text.as_bytes()).unwrap();
    let m = &sdp.media[0];
    assert_eq!(sdp.connection, Some("233.252.0.1".parse().unwrap()));
    assert_eq!(m.port_count, Some(2));
    assert_eq!(m.rtpmaps.len(), 1);
    assert_eq!(m.codecs(), [Codec::pcmu()]);
    assert_eq!((m.ptime, m.rtcp, m.crypto.len(), m.direction), (None, None, 0, None));
    assert!(m.fmtps.is_empty());
    // Invalid UTF-8 in s= is replaced, not fatal.
    let mut bytes = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(b"\r\n");
    assert!(SessionDescription::parse(&bytes).is_ok());
}

#[test]
fn direction_answers_per_rfc3264_6_1() {
    use Direction::*;
    let table = [
        (SendRecv, SendRecv, SendRecv),
        (SendRecv, SendOnly, SendOnly),
        (SendRecv, RecvOnly, RecvOnly),
        (SendRecv, Inactive, Inactive),
        (SendOnly, SendRecv, RecvOnly),
        (SendOnly, SendOnly, Inactive),
        (SendOnly, RecvOnly, RecvOnly),
        (RecvOnly, SendRecv, SendOnly),
        (RecvOnly, RecvOnly, Inactive),
        (Inactive, SendRecv, Inactive),
    ];
    for (offered, wanted, answer) in table {
        assert_eq!(answer_direction(offered, wanted), answer, "{offered:?} {wanted:?}");
    }
    assert_eq!(SendOnly.reversed(), RecvOnly);
    assert_eq!(Inactive.reversed(), Inactive);
    assert_eq!(Direction::from_attr("recvonly"), Some(RecvOnly));
    assert_eq!(Direction::from_attr("sendrecv "), None);
}

fn supported() -> Vec<Codec> {
    vec![Codec::opus(111), Codec::g722(), Codec::pcmu(), Codec::pcma(), Codec::telephone_event(101)]
}

#[test]
fn intersection_keeps_offer_pts_and_order() {
    let sdp = SessionDescription::parse(BARESIP.as_bytes()).unwrap();
    let got = intersect(&sdp.media[0].codecs(), &supported());
    let pts: Vec<u8> = got.iter().map(|c| c.pt).collect();
    assert_eq!(pts, [96, 9, 0, 8, 101]);
    assert_eq!(got[4].fmtp.as_deref(), Some("0-15"), "the offer's fmtp is kept");
    // telephone-event at 48 kHz, opus mono, and unknown codecs do not match.
    let offered = vec![
        Codec::new(126, "telephone-event", 48000, 1, None),
        Codec::new(97, "OPUS", 48000, 1, None),
        Codec::new(98, "iLBC", 8000, 1, None),
        Codec::new(8, "pcma", 8000, 1, None),
        Codec::new(100, "VP8", 90000, 1, None),
    ];
    assert_eq!(intersect(&offered, &supported()), [Codec::new(8, "pcma", 8000, 1, None)]);
    assert_eq!(intersect(&offered, &[Codec::vp8(96)]), [Codec::new(100, "VP8", 90000, 1, None)]);
    assert!(intersect(&offered, &[]).is_empty());
}

#[test]
fn h264_formats_pair_by_packetization_mode_and_profile() {
    let cb = Codec::h264(102, Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"));
    let cb_low_level = Codec::h264(97, Some("profile-level-id=42E00D; packetization-mode=1"));
    let cb_mode0 = Codec::h264(103, Some("packetization-mode=0;profile-level-id=42e01f"));
    let baseline = Codec::h264(104, Some("packetization-mode=1;profile-level-id=42001f"));
    let cb_as_main = Codec::h264(105, Some("packetization-mode=1;profile-level-id=4d801f"));
    let high = Codec::h264(106, Some("packetization-mode=1;profile-level-id=64001f"));
    assert!(cb.same_format(&cb_low_level), "the level may differ");
    assert!(!cb.same_format(&cb_mode0), "packetization-mode must match");
    assert!(!cb.same_format(&baseline) && !cb.same_format(&high), "the profile must match");
    assert!(cb.same_format(&cb_as_main), "Constrained Baseline signalled through Main's flags");
    assert!(Codec::h264(1, None).same_format(&Codec::h264(2, Some("profile-level-id=42001e"))), "defaults");
    let bad = Codec::h264(1, Some("profile-level-id=zz"));
    assert!(!bad.same_format(&bad.clone()));
    assert!(cb.matches(&high), "`matches` is by name only");
    assert!(Codec::vp8(96).same_format(&Codec::vp8(100)) && Codec::pcmu().same_format(&Codec::pcmu()));
    assert!(Codec::vp8(96).is_video() && cb.is_video() && !Codec::pcmu().is_video());
    assert_eq!(fmtp_param(cb.fmtp.as_deref(), "PACKETIZATION-MODE"), Some("1"));
    assert_eq!(fmtp_param(None, "x"), None);
}

fn local(address: &str) -> LocalSession {
    let mut rng = Rng::new([11; 32]);
    let mut audio = LocalMedia::new(MediaKind::Audio, 20000, supported());
    audio.ptime = Some(20);
    audio.rtcp_port = Some(20001);
    audio.proto = Proto::RtpSavp;
    audio.crypto = vec![
        CryptoAttribute::generate(1, SrtpProfile::AesCm128HmacSha1_80, &mut rng),
        CryptoAttribute::generate(2, SrtpProfile::AesCm128HmacSha1_32, &mut rng),
    ];
    let mut video = LocalMedia::new(
        MediaKind::Video,
        20002,
        vec![Codec::vp8(96), Codec::h264(97, Some("profile-level-id=42e01f;packetization-mode=1"))],
    );
    video.direction = Direction::RecvOnly;
    LocalSession {
        username: String::new(),
        session_name: String::new(),
        address: address.parse().unwrap(),
        media: vec![audio, video],
    }
}

#[test]
fn writes_a_plain_sip_offer() {
    let s = local("198.51.100.1");
    let text = s.write(42, 43);
    let expected_head = "v=0\r\no=- 42 43 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n\
        m=audio 20000 RTP/SAVP 111 9 0 8 101\r\n\
        a=rtpmap:111 opus/48000/2\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=rtcp:20001\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:";
    assert!(text.starts_with(expected_head), "{text}");
    assert!(
        text.ends_with(
            "a=sendrecv\r\nm=video 20002 RTP/AVP 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 H264/90000\r\n\
         a=fmtp:97 profile-level-id=42e01f;packetization-mode=1\r\na=recvonly\r\n"
        ),
        "{text}"
    );
    // Only the attributes a plain SIP peer needs: no ICE, DTLS, mid, msid, ssrc, rtcp-fb, BUNDLE.
    let allowed = ["rtpmap", "fmtp", "ptime", "rtcp", "crypto", "sendrecv", "sendonly", "recvonly", "inactive"];
    for line in text.lines().filter_map(|l| l.strip_prefix("a=")) {
        let name = line.split(':').next().unwrap();
        assert!(allowed.contains(&name), "a={name} in {text}");
    }
    let kinds: String = text.lines().map(|l| &l[..1]).collect();
    assert_eq!(kinds, "vosctmaaaaaaaaaaamaaaa");
    // It parses back to the same thing.
    let back = SessionDescription::parse(text.as_bytes()).unwrap();
    assert_eq!(back.media[0].codecs(), s.media[0].codecs);
    assert_eq!(back.media[0].crypto, s.media[0].crypto);
    assert_eq!(back.media[1].codecs(), s.media[1].codecs);
    assert_eq!(back.media_direction(&back.media[1]), Direction::RecvOnly);
    assert_eq!(back.origin.session_version, "43");
}

#[test]
fn writes_ipv6_answers_with_rejected_lines() {
    let offer = SessionDescription::parse(
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 0\r\na=rtcp-mux\r\na=sendonly\r\nm=image 6 udptl t38\r\n",
    )
    .unwrap();
    let m = &offer.media[0];
    let mut audio = LocalMedia::new(MediaKind::Audio, 7000, intersect(&m.codecs(), &supported()));
    audio.direction = answer_direction(offer.effective_direction(m), Direction::SendRecv);
    audio.rtcp_mux = m.rtcp_mux;
    let s = LocalSession {
        username: "sylk gw\r\n".into(),
        session_name: "x\r\na=evil".into(),
        address: "2001:db8::9".parse().unwrap(),
        media: vec![audio, LocalMedia::rejected(&offer.media[1])],
    };
    let text = s.write(1, 1);
    assert_eq!(
        text,
        "v=0\r\no=sylkgw 1 1 IN IP6 2001:db8::9\r\ns=xa=evil\r\nc=IN IP6 2001:db8::9\r\nt=0 0\r\n\
         m=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=recvonly\r\nm=image 0 udptl t38\r\n"
    );
    let back = SessionDescription::parse(text.as_bytes()).unwrap();
    assert_eq!(back.media.len(), 2);
    assert!(back.media[1].is_rejected());
}

#[test]
fn versioner_bumps_only_on_change() {
    let mut v = SdpVersioner::new(7, 100);
    let mut s = local("192.0.2.1");
    assert!(v.render(&s).contains("o=- 7 100 IN IP4"));
    assert!(v.render(&s).contains("o=- 7 100 IN IP4"), "a refresh keeps the version");
    s.media[0].direction = Direction::SendOnly;
    assert!(v.render(&s).contains("o=- 7 101 IN IP4"));
    assert!(v.render(&s).contains("o=- 7 101 IN IP4"));
    s.media[0].direction = Direction::SendRecv;
    assert!(v.render(&s).contains("o=- 7 102 IN IP4"));
    assert_eq!(v.version(), 102);
}

#[test]
fn parser_never_panics_on_random_input() {
    let mut rng = Rng::new([12; 32]);
    let pieces: [&str; 24] = [
        "v=0\r\n",
        "o=- 1 2 IN IP4 1.2.3.4\r\n",
        "c=IN IP4 0.0.0.0\r\n",
        "c=IN IP6 ::1\r\n",
        "m=audio 9 RTP/AVP 0 8 101\r\n",
        "m=video 0 RTP/SAVP 96\r\n",
        "a=rtpmap:101 telephone-event/8000\r\n",
        "a=fmtp:101 0-16\r\n",
        "a=rtcp:9 IN IP4 1.1.1.1\r\n",
        "a=rtcp-mux\r\n",
        "a=sendonly\r\n",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n",
        "a=ptime:",
        "=",
        "\r",
        "\n",
        " ",
        ":",
        "/",
        "9",
        "a=rtpmap:",
        "\u{e9}",
        "\0",
        "t=0 0\r\n",
    ];
    for i in 0..20_000 {
        let mut text = String::new();
        if i % 2 == 0 {
            text.push_str("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n");
        }
        for _ in 0..rng.next_u64() % 24 {
            text.push_str(pieces[(rng.next_u64() % pieces.len() as u64) as usize]);
        }
        let mut bytes = text.into_bytes();
        if i % 5 == 0 && !bytes.is_empty() {
            let at = (rng.next_u64() % bytes.len() as u64) as usize;
            bytes[at] = rng.next_u64() as u8;
        }
        if let Ok(sdp) = SessionDescription::parse(&bytes) {
            for m in &sdp.media {
                let _ = (m.codecs(), sdp.effective_direction(m), sdp.rtp_addr(m), sdp.rtcp_addr(m, false));
            }
        }
    }
}
