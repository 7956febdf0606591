use super::*;
use crate::media::bridge::{CodecPair, SipMedia};
use crate::media::sdp::{LocalMedia, LocalSession, MediaKind, SessionDescription};
use crate::rng::Rng;
use std::net::SocketAddr;

/// A SIP peer's video offer: VP8 100 with nack, nack pli, ccm fir and goog-remb; H.264 102 with
/// `*` nack; RTX 101 for 100, 103 for 102, and an RTX for a format we do not carry.
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
m=video 30002 RTP/AVP 100 101 102 103 104 105\r\n\
a=rtpmap:100 VP8/90000\r\na=rtcp-fb:100 nack\r\na=rtcp-fb:100  NACK  PLI\r\na=rtcp-fb:100 ccm fir\r\n\
a=rtcp-fb:100 goog-remb\r\na=rtpmap:101 rtx/90000\r\na=fmtp:101 apt=100\r\n\
a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\na=rtcp-fb:* nack\r\n\
a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\na=rtpmap:104 VP9/90000\r\na=rtpmap:105 rtx/90000\r\na=fmtp:105 apt=104\r\n";

fn offer() -> SessionDescription {
    SessionDescription::parse(OFFER.as_bytes()).unwrap()
}

#[test]
fn the_answer_lists_what_the_offer_listed_for_the_formats_we_keep() {
    let desc = offer();
    let m = &desc.media[0];
    let codecs = crate::media::sdp::intersect(&m.codecs(), &crate::call::supported_video_codecs());
    let mut fb = VideoFeedback::listed(m, &codecs);
    assert_eq!(fb.rtx, [Rtx { pt: 101, apt: 100 }, Rtx { pt: 103, apt: 102 }], "not the RTX of VP9");
    assert!(fb.nack());
    // The answer kept VP8 only.
    fb.retain(&[100]);
    assert_eq!(fb.rtcp_fb_lines(), ["100 nack", "100 nack pli", "100 ccm fir"]);
    let mut codecs = vec![Codec::vp8(100)];
    codecs.extend(fb.rtx_codecs());
    let session = LocalSession {
        username: "-".into(),
        session_name: "-".into(),
        address: "192.0.2.1".parse().unwrap(),
        media: vec![LocalMedia { rtcp_fb: fb.rtcp_fb_lines(), ..LocalMedia::new(MediaKind::Video, 40002, codecs) }],
    };
    let sdp = session.write(1, 1);
    assert!(sdp.contains("m=video 40002 RTP/AVP 100 101\r\n"), "{sdp}");
    assert!(sdp.contains("a=rtpmap:101 rtx/90000\r\na=fmtp:101 apt=100\r\n"), "{sdp}");
    assert!(sdp.contains("a=rtcp-fb:100 nack\r\na=rtcp-fb:100 nack pli\r\na=rtcp-fb:100 ccm fir\r\n"), "{sdp}");
    assert!(!sdp.contains("remb") && !sdp.contains("103"), "{sdp}");
    // Our own answer parses back to the same feedback.
    let back = SessionDescription::parse(sdp.as_bytes()).unwrap();
    assert_eq!(VideoFeedback::listed(&back.media[0], &[Codec::vp8(100)]), fb);
    // An offer without rtcp-fb or rtx: nothing.
    let plain = SessionDescription::parse(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=video 1 RTP/AVP 100\r\na=rtpmap:100 VP8/90000\r\n",
    )
    .unwrap();
    assert!(VideoFeedback::listed(&plain.media[0], &[Codec::vp8(100)]).is_empty());
}

fn vp8() -> Vec<CodecPair> {
    vec![CodecPair {
        browser_pt: 96,
        sip_pt: 100,
        clock_rate: 90000,
        browser_clock_rate: 90000,
        codec: Codec::vp8(100),
    }]
}

fn nack(sender: u32, media: u32, pid: u16, blp: u16) -> Vec<u8> {
    let mut out = Vec::new();
    rtcp::write_rr(&mut out, sender, &[]);
    out.extend_from_slice(&[0x80 | FMT_NACK, rtcp::PT_RTPFB, 0, 3]);
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(&media.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(&blp.to_be_bytes());
    out
}

/// Sends browser packets first..first + n to the SIP side: their (sequence number, datagram).
fn send(m: &mut SipMedia, t: std::time::Instant, first: u16, n: u16) -> Vec<(u16, Vec<u8>)> {
    (first..first + n)
        .map(|i| {
            let (_, p) = m.from_browser(t, (96, 1000 + i, 90 * u32::from(i), i == 0, 7), &[i as u8; 20]).unwrap();
            (rtp::parse_header(p).unwrap().seq, p.to_vec())
        })
        .collect()
}

#[test]
fn a_nack_is_answered_with_the_original_packet_without_rtx() {
    let t0 = crate::time::test_epoch();
    let mut rng = Rng::new([7; 32]);
    let far: SocketAddr = "192.0.2.10:30002".parse().unwrap();
    let mut m = SipMedia::new(far, vp8(), t0, &mut rng);
    let fb = VideoFeedback { fb: vec![(100, FbKind::Nack)], rtx: Vec::new() };
    m.set_video_feedback(fb, &mut rng);
    let sent = send(&mut m, t0, 0, 6);
    let ours = rtp::parse_header(&sent[0].1).unwrap().ssrc;
    // PID = packet 1, BLP bit 1 = packet 3.
    assert!(!m.rtcp_from_sip(t0, "192.0.2.10:30003".parse().unwrap(), &nack(0xabc, ours, sent[1].0, 0b10)));
    let resent = m.take_resends();
    assert_eq!(resent, [(far, sent[1].1.clone()), (far, sent[3].1.clone())]);
    assert!(m.take_resends().is_empty(), "each NACK answered once");
    // A NACK for another SSRC, or for a packet long gone, resends nothing.
    m.rtcp_from_sip(t0, far, &nack(0xabc, ours ^ 1, sent[1].0, 0));
    m.rtcp_from_sip(t0, far, &nack(0xabc, ours, sent[0].0.wrapping_sub(1), 0));
    assert!(m.take_resends().is_empty());
    send(&mut m, t0, 6, HISTORY as u16);
    m.rtcp_from_sip(t0, far, &nack(0xabc, ours, sent[2].0, 0));
    assert!(m.take_resends().is_empty(), "out of the history");
}

#[test]
fn a_nack_is_answered_as_rtx_when_negotiated() {
    let t0 = crate::time::test_epoch();
    let mut rng = Rng::new([8; 32]);
    let far: SocketAddr = "192.0.2.10:30002".parse().unwrap();
    let mut m = SipMedia::new(far, vp8(), t0, &mut rng);
    let fb = VideoFeedback { fb: vec![(100, FbKind::Nack)], rtx: vec![Rtx { pt: 101, apt: 100 }] };
    m.set_video_feedback(fb, &mut rng);
    let sent = send(&mut m, t0, 0, 4);
    let orig = rtp::parse(&sent[2].1).unwrap();
    m.rtcp_from_sip(t0, far, &nack(0xabc, orig.header.ssrc, sent[2].0, 0b1));
    let resent = m.take_resends();
    assert_eq!(resent.len(), 2);
    let (a, b) = (rtp::parse(&resent[0].1).unwrap(), rtp::parse(&resent[1].1).unwrap());
    // RFC 4588 §4: the RTX format, its own SSRC and sequence, the original timestamp, OSN first.
    assert_eq!(a.header.pt, 101);
    assert_ne!(a.header.ssrc, orig.header.ssrc);
    assert_eq!(b.header.seq, a.header.seq.wrapping_add(1));
    assert_eq!(a.header.ts, orig.header.ts);
    assert_eq!(&a.payload()[..2], &sent[2].0.to_be_bytes());
    assert_eq!(&a.payload()[2..], orig.payload());
    assert_eq!(&b.payload()[..2], &sent[3].0.to_be_bytes());
}

fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0; 1500];
    let n = rtp::write_packet(&mut buf, &RtpOut { marker: false, pt, seq, ts, ssrc }, payload).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn the_peer_s_rtx_reaches_the_browser_as_the_original_packet() {
    let t0 = crate::time::test_epoch();
    let mut rng = Rng::new([9; 32]);
    let far: SocketAddr = "192.0.2.10:30002".parse().unwrap();
    let mut m = SipMedia::new(far, vp8(), t0, &mut rng);
    m.set_video_feedback(VideoFeedback { fb: Vec::new(), rtx: vec![Rtx { pt: 101, apt: 100 }] }, &mut rng);
    // Before the original stream: nothing to repair.
    let mut rtx = packet(101, 500, 9000, 0x77, &[0, 11, 0xaa, 0xbb]);
    assert_eq!(m.from_sip(t0, far, &rtx), Err(crate::media::bridge::Dropped::Rtx));
    for seq in 7..10 {
        m.from_sip(t0, far, &packet(100, seq, 9000, 0x55, b"p")).unwrap();
    }
    let a = m.from_sip(t0, far, &packet(100, 10, 9000, 0x55, b"p10")).unwrap();
    let c = m.from_sip(t0, far, &packet(100, 12, 9000, 0x55, b"p12")).unwrap();
    assert_eq!(m.lost(), 1);
    // Packet 11 comes back as RTX (another SSRC, OSN 11): it takes its place between 10 and 12.
    let b = m.from_sip(t0, far, &rtx).unwrap();
    assert_eq!((b.pt, b.seq, b.ts), (96, a.seq + 1, a.ts));
    assert_eq!(c.seq, a.seq + 2);
    assert_eq!(m.rx_payload(b.payload), [0xaa, 0xbb]);
    assert_eq!(m.lost(), 1, "the repair is not counted as received in our reports");
    // Padding-only probes (no OSN) are dropped.
    rtx = packet(101, 501, 9000, 0x77, &[]);
    assert_eq!(m.from_sip(t0, far, &rtx), Err(crate::media::bridge::Dropped::Rtx));
    // Without RTX negotiated the format is unknown.
    let mut plain = SipMedia::new(far, vp8(), t0, &mut rng);
    assert_eq!(
        plain.from_sip(t0, far, &packet(101, 1, 0, 0x77, &[0, 1, 2])),
        Err(crate::media::bridge::Dropped::UnknownPt)
    );
}
