//! The bodies of the stateless fuzz targets (every one but `gateway_ops`, see [`crate::ops`]).

use crate::wire::{drain, UPGRADE_V2};
use std::time::{Duration, Instant};
use sylkgw_core::ids::{ConnId, Listener};
use sylkgw_core::{api, capture, Config, Gateway, Input};

/// Fuzz body: any text as a sylkRTC request, decoded, handled by a client, and every resulting
/// event encoded in both dialects.
pub fn fuzz_sylkrtc_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = api::decode(text);
    let config = Config::default();
    for dialect in [api::Dialect::V1, api::Dialect::V2] {
        let mut client = sylkgw_core::client::Client::new(dialect);
        let mut out = Vec::new();
        let mut sip = sylkgw_core::sip::stack::SipStack::new(config.sip.clone());
        let mut rng = sylkgw_core::rng::Rng::new([2; 32]);
        let mut regs = std::collections::BTreeMap::new();
        let mut ctx = sylkgw_core::client::SipCtx {
            sip: &mut sip,
            rng: &mut rng,
            now: Instant::now(),
            conn: ConnId(1),
            regs: &mut regs,
        };
        client.handle_text(text, &config, &mut ctx, &mut out);
        client.handle_text(text, &config, &mut ctx, &mut out);
        for e in &out {
            let _ = dialect.encode(e);
        }
    }
}

/// Fuzz body: an arbitrary byte stream on one connection, cut into chunks by the first byte of
/// each chunk. Checks that the core never panics and that every drain ends with a deadline that
/// is not in the past unless output was produced.
pub fn fuzz_ws_stream(data: &[u8]) {
    let start = Instant::now();
    let Ok(mut gw) = Gateway::new(Config::default(), [1; 32], start, Duration::ZERO) else { return };
    let conn = ConnId(1);
    let mut now = start;
    gw.handle_input(now, Input::Accepted { conn, listener: Listener::Web, peer: ([127, 0, 0, 1], 1).into() });
    drain(&mut gw);
    // Half the inputs start with a valid upgrade so the frame layer is reached.
    if data.first().is_some_and(|b| b & 1 == 1) {
        gw.handle_input(now, Input::StreamData { conn, data: UPGRADE_V2.as_bytes() });
        drain(&mut gw);
    }
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        gw.handle_input(now, Input::StreamData { conn, data: chunk });
        let deadline = drain(&mut gw);
        now += Duration::from_millis(u64::from(len) * 50);
        if deadline <= now {
            gw.handle_input(now, Input::Timeout);
            // A timeout that leaves its own deadline in the past would make a runtime spin.
            assert!(drain(&mut gw) > now, "deadline did not move past a handled timeout");
        }
        rest = next;
    }
}

/// Fuzz body: capture text parsed and, if it parses, replayed twice with identical results.
pub fn fuzz_capture(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cap) = capture::parse(text) else { return };
    if cap.inputs.len() > 64 {
        return;
    }
    let epoch = Instant::now();
    let a = capture::replay(&cap, epoch);
    let b = capture::replay(&cap, epoch);
    assert_eq!(a, b, "replay is not deterministic");
}
/// Fuzz body: any bytes as one SIP datagram. Checks that parsing and every typed view never
/// panic, that printing is stable (print → parse → print gives the same bytes), and that the
/// typed views print to text that parses back to the same value.
pub fn fuzz_sip_message(data: &[u8]) {
    use sylkgw_core::sip::message::{CSeq, ContactList, NameAddr, SipMessage, Via};
    use sylkgw_core::sip::parse::{
        parse_message, parse_message_with, validate_request, validate_response, ParseOptions,
    };
    use sylkgw_core::sip::uri::Uri;

    let Ok(msg) = parse_message(data) else {
        let _ = parse_message_with(data, &ParseOptions { any_version: true, ..ParseOptions::default() });
        return;
    };
    match &msg {
        SipMessage::Request(r) => {
            let _ = validate_request(r);
            let uri: Uri = r.uri.to_string().parse().expect("a printed Request-URI parses");
            assert_eq!(uri, r.uri, "Request-URI does not survive printing");
        }
        SipMessage::Response(r) => {
            let _ = validate_response(r);
        }
    }
    let h = msg.headers();
    let _ = (h.top_via(), h.call_id(), h.max_forwards(), h.expires(), h.min_expires(), h.content_length());
    for via in h.vias().unwrap_or_default() {
        assert_eq!(Via::parse(via.to_string().as_bytes()).as_ref(), Ok(&via), "Via does not survive printing");
        let _ = (via.branch(), via.received_ip(), via.rport());
    }
    let mut addrs: Vec<NameAddr> = [h.from_header(), h.to_header()].into_iter().flatten().collect();
    addrs.extend(h.routes().unwrap_or_default());
    addrs.extend(h.record_routes().unwrap_or_default());
    if let Ok(ContactList::Bindings(list)) = h.contacts() {
        addrs.extend(list);
    }
    for a in addrs {
        assert_eq!(NameAddr::parse(a.to_string().as_bytes()).as_ref(), Ok(&a), "name-addr does not survive printing");
        let _ = (a.tag(), a.expires(), a.uri.equivalent(&a.uri));
    }
    if let Ok(cseq) = h.cseq() {
        assert_eq!(CSeq::parse(cseq.to_string().as_bytes()).as_ref(), Ok(&cseq));
    }
    let printed = msg.to_bytes();
    let reparsed = parse_message(&printed).expect("a printed message parses");
    assert_eq!(reparsed.to_bytes(), printed, "printing is not stable");
    assert_eq!(reparsed.body(), msg.body(), "the body changed");
}

/// Fuzz body: the first byte picks a chunking, the rest is a TCP byte stream. Checks that the
/// framer never panics and that the messages and errors it finds do not depend on how the
/// stream was cut into reads (keep-alives may: a split CRLFCRLF reads as pong then ping).
pub fn fuzz_sip_stream(data: &[u8]) {
    use sylkgw_core::sip::framing::{Framed, FramingError, StreamFramer};

    let Some((&mode, stream)) = data.split_first() else { return };
    let keep = |r: &Result<Framed, FramingError>| !matches!(r, Ok(Framed::KeepAlivePing | Framed::KeepAlivePong));
    let mut whole = StreamFramer::new(2048);
    whole.push(stream);
    let expected: Vec<_> = std::iter::from_fn(|| whole.next()).filter(keep).collect();

    let mut chunked = StreamFramer::new(2048);
    let mut got = Vec::new();
    let mut rest = stream;
    let mut k = usize::from(mode);
    while !rest.is_empty() {
        let n = if mode & 1 == 1 { 1 } else { 1 + (k * 31 + 7) % 97 };
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        chunked.push(chunk);
        got.extend(std::iter::from_fn(|| chunked.next()).filter(keep));
        rest = tail;
        k += 1;
    }
    assert_eq!(got, expected, "framing depends on how the stream is cut");
    for item in expected {
        if let Ok(Framed::Message(bytes)) = item {
            let _ = sylkgw_core::sip::parse::parse_message(&bytes);
        }
    }
}

/// Fuzz body: any bytes as a SIP peer's SDP offer. Checks that parsing never panics, and that the
/// answer we would build from it (codec intersection, RFC 3264 §6.1 directions, rejected lines,
/// an SDES answer key) is SDP we parse back to the same media count, ports, codecs, directions
/// and crypto.
pub fn fuzz_sip_sdp(data: &[u8]) {
    use sylkgw_core::media::sdp::{
        answer_direction, intersect, Codec, Direction, LocalMedia, LocalSession, MediaKind, Proto, SessionDescription,
    };
    use sylkgw_core::media::srtp::CryptoAttribute;

    let Ok(offer) = SessionDescription::parse(data) else { return };
    let supported = [
        Codec::opus(111),
        Codec::g722(),
        Codec::pcmu(),
        Codec::pcma(),
        Codec::telephone_event(101),
        Codec::vp8(96),
        Codec::h264(97, None),
    ];
    let mut rng = sylkgw_core::rng::Rng::new([3; 32]);
    let mut media = Vec::new();
    for (i, m) in offer.media.iter().enumerate() {
        let _ = (offer.rtp_addr(m), offer.rtcp_addr(m, m.rtcp_mux), offer.effective_direction(m));
        let codecs = intersect(&m.codecs(), &supported);
        let crypto = m.usable_crypto();
        if m.is_rejected()
            || !m.proto.is_rtp()
            || codecs.is_empty()
            || matches!(m.kind, MediaKind::Other(_))
            || (m.proto.is_secure() && crypto.is_none())
        {
            media.push(LocalMedia::rejected(m));
            continue;
        }
        let mut l = LocalMedia::new(m.kind.clone(), 20000 + 2 * i as u16, codecs);
        l.direction = answer_direction(offer.effective_direction(m), Direction::SendRecv);
        l.rtcp_mux = m.rtcp_mux;
        l.ptime = m.ptime;
        if let (true, Some(c)) = (m.proto.is_secure(), crypto) {
            l.proto = Proto::RtpSavp;
            l.crypto = vec![CryptoAttribute::answer(c, &mut rng)];
        }
        media.push(l);
    }
    let address = offer.connection.unwrap_or(std::net::IpAddr::from([192, 0, 2, 1]));
    let local = LocalSession { username: "-".into(), session_name: "sylkgw".into(), address, media };
    let text = local.write(1, 2);
    let back = SessionDescription::parse(text.as_bytes()).expect("our own SDP parses");
    assert_eq!(back.media.len(), local.media.len(), "m= lines lost");
    for (b, l) in back.media.iter().zip(&local.media) {
        assert_eq!((b.port, &b.kind, &b.proto), (l.port, &l.kind, &l.proto), "m= line changed");
        if l.port != 0 {
            assert_eq!(b.codecs(), l.codecs, "codecs changed");
            assert_eq!(back.media_direction(b), l.direction, "direction changed");
            assert_eq!(b.crypto, l.crypto, "crypto changed");
            assert_eq!(b.rtcp_mux, l.rtcp_mux);
        }
    }
}

/// Fuzz body: the first byte picks the SRTP suite and timing, the rest is one datagram seen as
/// RTP, RTCP and SRTP/SRTCP, then as a stream of 8-byte records (seq, ts, SSRC choice, delay)
/// for the sequence rewriter and the reception statistics. Checks that nothing panics, that
/// rebuilt headers and RTCP reports parse back to the same fields, and that SRTP and SRTCP
/// round-trip any packet they accept.
pub fn fuzz_rtp_rtcp(data: &[u8]) {
    use sylkgw_core::media::rtcp::{self, RtcpPacket};
    use sylkgw_core::media::rtp::{self, RtpOut};
    use sylkgw_core::media::srtp::{MasterKey, SrtpContext, SrtpProfile};

    let Some((&mode, pkt)) = data.split_first() else { return };
    let _ = (rtp::looks_like_rtcp(pkt), rtp::parse_header(pkt));
    let mut buf = vec![0u8; pkt.len() + 64];

    // RTP: rebuild a fresh header around the payload and parse it back.
    if let Ok(v) = rtp::parse(pkt) {
        let h = v.header;
        let _ = (v.csrcs().count(), v.extension());
        let out = RtpOut { marker: h.marker, pt: h.pt, seq: h.seq, ts: h.ts, ssrc: h.ssrc };
        let n = rtp::write_packet(&mut buf, &out, v.payload()).expect("room for a rebuilt packet");
        let back = rtp::parse(&buf[..n]).expect("a rebuilt packet parses");
        let b = back.header;
        assert_eq!((b.marker, b.pt, b.seq, b.ts, b.ssrc), (h.marker, h.pt, h.seq, h.ts, h.ssrc));
        assert_eq!(back.payload(), v.payload());
    }

    // RTCP: every SR/RR rebuilds to the same fields.
    let _ = (rtcp::validate_compound(pkt), rtcp::summarize(pkt));
    for p in rtcp::parse_compound(pkt).map_while(Result::ok) {
        let mut out = Vec::new();
        match p {
            RtcpPacket::SenderReport { ssrc, info, blocks } => {
                let blocks: Vec<_> = blocks.collect();
                rtcp::write_sr(&mut out, ssrc, &info, &blocks);
                let again = rtcp::parse_compound(&out).next().and_then(Result::ok);
                let Some(RtcpPacket::SenderReport { ssrc: s2, info: i2, blocks: b2 }) = again else {
                    panic!("a rebuilt SR does not parse")
                };
                assert_eq!((s2, i2, b2.collect::<Vec<_>>()), (ssrc, info, blocks));
            }
            RtcpPacket::ReceiverReport { ssrc, blocks } => {
                let blocks: Vec<_> = blocks.collect();
                rtcp::write_rr(&mut out, ssrc, &blocks);
                let again = rtcp::parse_compound(&out).next().and_then(Result::ok);
                let Some(RtcpPacket::ReceiverReport { ssrc: s2, blocks: b2 }) = again else {
                    panic!("a rebuilt RR does not parse")
                };
                assert_eq!((s2, b2.collect::<Vec<_>>()), (ssrc, blocks));
            }
            RtcpPacket::Bye { ssrcs, reason } => {
                let ssrcs: Vec<_> = ssrcs.collect();
                rtcp::write_bye(&mut out, &ssrcs, reason);
                assert_eq!(rtcp::validate_compound(&out), Err(rtcp::RtcpError::NotCompound));
                assert!(rtcp::summarize(&out).bye);
            }
            RtcpPacket::Fir { entries, .. } => {
                let _ = entries.count();
            }
            RtcpPacket::Pli { .. } | RtcpPacket::Other { .. } => {}
        }
    }

    // SRTP/SRTCP: foreign bytes never unprotect; our own protection round-trips.
    let profile = if mode & 1 == 0 { SrtpProfile::AesCm128HmacSha1_80 } else { SrtpProfile::AesCm128HmacSha1_32 };
    let key = MasterKey { key: [7; 16], salt: [9; 14] };
    let (Ok(mut tx), Ok(mut rx)) = (SrtpContext::new(profile, &key), SrtpContext::new(profile, &key)) else {
        panic!("context setup failed")
    };
    let mut copy = pkt.to_vec();
    let _ = rx.unprotect_rtp(&mut copy);
    let mut copy = pkt.to_vec();
    let _ = rx.unprotect_rtcp(&mut copy);
    buf[..pkt.len()].copy_from_slice(pkt);
    if let Ok(n) = tx.protect_rtp(&mut buf, pkt.len()) {
        let got = rx.unprotect_rtp(&mut buf[..n]).expect("our SRTP unprotects");
        assert_eq!(&buf[..got], pkt, "SRTP round trip changed the packet");
        assert_eq!(rx.unprotect_rtp(&mut buf[..n]), Err(sylkgw_core::media::srtp::SrtpError::Replayed));
    }
    buf[..pkt.len()].copy_from_slice(pkt);
    if let Ok(n) = tx.protect_rtcp(&mut buf, pkt.len()) {
        let got = rx.unprotect_rtcp(&mut buf[..n]).expect("our SRTCP unprotects");
        assert_eq!(&buf[..got], pkt, "SRTCP round trip changed the packet");
    }

    // The rewriter and the statistics over a stream of records.
    let epoch = Instant::now();
    let mut now = epoch;
    let clock = [8000, 48000, 90000][usize::from(mode >> 1) % 3];
    let mut rewriter = rtp::SeqTsRewriter::new(u16::from(mode), u32::from(mode) << 8);
    let mut stats = rtcp::ReceiveStats::new(1, clock);
    let mut send = rtcp::SendStats::new(clock);
    let mut last_new = None;
    for r in pkt.chunks_exact(8) {
        let seq = u16::from_be_bytes([r[0], r[1]]);
        let ts = u32::from_be_bytes([r[2], r[3], r[4], r[5]]);
        let ssrc = u32::from(r[6] % 3);
        now += Duration::from_millis(u64::from(r[7]));
        if r[6] == 0xff {
            rewriter.reset_source();
        }
        if let Some(out) = rewriter.rewrite(now, ssrc, seq, ts, clock) {
            assert_eq!(out.seq, out.ext_seq as u16);
            if out.new_source {
                assert!(last_new.is_none_or(|l| out.ext_seq > l), "a new source went backwards");
                last_new = Some(out.ext_seq);
            }
            send.on_sent(now, out.ts, 160);
        }
        if ssrc == 1 {
            stats.on_rtp(now, seq, ts);
        }
        if r[7] > 250 {
            stats.on_sender_report(now, rtcp::ntp_from_unix(now - epoch));
            let blocks: Vec<_> = stats.report_block(now).into_iter().collect();
            let info = send.sender_info(now, now - epoch);
            let mut out = Vec::new();
            rtcp::write_report(&mut out, 9, info.as_ref(), &blocks, b"fuzz");
            assert_eq!(rtcp::validate_compound(&out), Ok(()));
        }
    }
}
