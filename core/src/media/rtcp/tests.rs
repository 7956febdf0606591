use super::*;
use crate::rng::Rng;

#[test]
fn builds_and_parses_sr_rr_sdes() {
    let block = ReportBlock {
        ssrc: 0x0102_0304,
        fraction_lost: 25,
        cumulative_lost: -3,
        ext_highest_seq: 0x0001_0005,
        jitter: 42,
        lsr: 0xaabb_ccdd,
        dlsr: 65536,
    };
    let info = SenderInfo { ntp: 0xe000_0000_8000_0000, rtp_ts: 1234, packet_count: 10, octet_count: 1600 };
    let mut out = Vec::new();
    write_report(&mut out, 0x5555, Some(&info), &[block], b"sylkgw@example");
    assert_eq!(out.len() % 4, 0);
    assert_eq!(validate_compound(&out), Ok(()));
    let packets: Vec<_> = parse_compound(&out).collect::<Result<_, _>>().unwrap();
    assert_eq!(packets.len(), 2);
    let RtcpPacket::SenderReport { ssrc, info: got, blocks } = packets[0] else { panic!() };
    assert_eq!((ssrc, got), (0x5555, info));
    assert_eq!(blocks.collect::<Vec<_>>(), [block]);
    let RtcpPacket::Other { pt: PT_SDES, count: 1, body } = packets[1] else { panic!() };
    assert_eq!(&body[..6], &[0, 0, 0x55, 0x55, 1, 14]);
    assert_eq!(&body[6..20], b"sylkgw@example");
    assert_eq!(body[20], 0);

    let mut rr = Vec::new();
    write_report(&mut rr, 7, None, &[], b"x");
    let p: Vec<_> = parse_compound(&rr).collect::<Result<_, _>>().unwrap();
    assert_eq!(p[0], RtcpPacket::ReceiverReport { ssrc: 7, blocks: ReportBlocks { data: &[] } });
    assert_eq!(validate_compound(&rr), Ok(()));
    // RR with 1 block: header 8 + 24.
    let mut rr1 = Vec::new();
    write_rr(&mut rr1, 7, &[block; 40]);
    assert_eq!(rr1.len(), 8 + 24 * MAX_REPORT_BLOCKS);
}

#[test]
fn sdes_padding_always_has_a_null_terminator() {
    for n in 0..12 {
        let mut out = Vec::new();
        write_sdes_cname(&mut out, 1, &vec![b'a'; n]);
        assert_eq!(out.len() % 4, 0);
        assert_eq!(*out.last().unwrap(), 0, "cname of {n}");
        assert_eq!(parse_compound(&out).count(), 1);
        assert_eq!((usize::from(u16::from_be_bytes([out[2], out[3]])) + 1) * 4, out.len());
    }
}

#[test]
fn keyframe_requests_and_bye() {
    let mut out = Vec::new();
    write_rr(&mut out, 1, &[]);
    write_pli(&mut out, 1, 2);
    write_fir(&mut out, 1, 3, 9);
    write_bye(&mut out, &[1, 4], Some(b"bye now"));
    assert_eq!(validate_compound(&out), Ok(()));
    let p: Vec<_> = parse_compound(&out).collect::<Result<_, _>>().unwrap();
    assert_eq!(p[1], RtcpPacket::Pli { sender_ssrc: 1, media_ssrc: 2 });
    let RtcpPacket::Fir { sender_ssrc: 1, entries } = p[2] else { panic!() };
    assert_eq!(entries.collect::<Vec<_>>(), [(3, 9)]);
    let RtcpPacket::Bye { ssrcs, reason } = p[3] else { panic!() };
    assert_eq!(ssrcs.collect::<Vec<_>>(), [1, 4]);
    assert_eq!(reason, Some(&b"bye now"[..]));
    let s = summarize(&out);
    assert!(s.keyframe_request && s.bye);
    assert_eq!(s.sender_report, None);

    let mut bare = Vec::new();
    write_bye(&mut bare, &[5], None);
    assert_eq!(bare, [0x81, PT_BYE, 0, 1, 0, 0, 0, 5]);
    // PLI as sent by browsers and str0m: V=2 FMT=1 PT=206 length 2.
    let mut pli = Vec::new();
    write_pli(&mut pli, 0xaabbccdd, 0x11223344);
    assert_eq!(pli, [0x81, 206, 0, 2, 0xaa, 0xbb, 0xcc, 0xdd, 0x11, 0x22, 0x33, 0x44]);
}

#[test]
fn parses_a_foreign_compound_with_padding() {
    // SR (no blocks) + SDES + padded APP packet at the end.
    let mut out = Vec::new();
    write_sr(&mut out, 9, &SenderInfo { ntp: 1 << 32, ..Default::default() }, &[]);
    out.extend_from_slice(&[0xa0, PT_APP, 0, 2, 0, 0, 0, 9, 0, 0, 0, 4]);
    assert_eq!(validate_compound(&out), Ok(()));
    let p: Vec<_> = parse_compound(&out).collect::<Result<_, _>>().unwrap();
    assert_eq!(p[1], RtcpPacket::Other { pt: PT_APP, count: 0, body: &[0, 0, 0, 9] });
    assert_eq!(summarize(&out).sender_report, Some((9, 1 << 32)));
}

#[test]
fn rejects_malformed_compounds() {
    assert_eq!(validate_compound(&[]), Err(RtcpError::TooShort));
    assert_eq!(validate_compound(&[0x80, 201, 0]), Err(RtcpError::TooShort));
    assert_eq!(validate_compound(&[0x40, 201, 0, 0]), Err(RtcpError::BadVersion));
    assert_eq!(validate_compound(&[0x80, 201, 0, 1, 0, 0, 0]), Err(RtcpError::TooShort));
    // BYE first: not a valid compound, but parse_compound takes it.
    let bye = [0x81, PT_BYE, 0, 1, 0, 0, 0, 5];
    assert_eq!(validate_compound(&bye), Err(RtcpError::NotCompound));
    assert!(parse_compound(&bye).all(|p| p.is_ok()));
    // RR claiming a block it does not carry.
    assert_eq!(validate_compound(&[0x81, 201, 0, 1, 0, 0, 0, 1]), Err(RtcpError::BadLength));
    // Padding on a packet that is not the last.
    let mut pad = vec![0xa0, 201, 0, 1, 0, 0, 0, 4];
    pad.extend_from_slice(&bye);
    assert_eq!(validate_compound(&pad), Err(RtcpError::BadPadding));
    assert_eq!(validate_compound(&[0xa0, 201, 0, 1, 0, 0, 0, 0]), Err(RtcpError::BadPadding));
    // The iterator yields one error, then stops.
    let mut it = parse_compound(&[0x80, 201, 0, 5]);
    assert_eq!(it.next(), Some(Err(RtcpError::TooShort)));
    assert_eq!(it.next(), None);
}

#[test]
fn cumulative_lost_is_24_bit_signed() {
    let b = ReportBlock { cumulative_lost: -1, ..Default::default() };
    let mut out = Vec::new();
    b.write(&mut out);
    assert_eq!(&out[4..8], &[0, 0xff, 0xff, 0xff]);
    assert_eq!(ReportBlock::parse(&out).cumulative_lost, -1);
    out.clear();
    ReportBlock { cumulative_lost: 1 << 30, ..Default::default() }.write(&mut out);
    assert_eq!(ReportBlock::parse(&out).cumulative_lost, 0x7f_ffff);
}

#[test]
fn ntp_conversion() {
    assert_eq!(ntp_from_unix(Duration::ZERO), NTP_UNIX_OFFSET << 32);
    assert_eq!(ntp_from_unix(Duration::from_millis(1500)), ((NTP_UNIX_OFFSET + 1) << 32) | 0x8000_0000);
    // 2026-01-01T00:00:00Z.
    let ntp = ntp_from_unix(Duration::from_secs(1_767_225_600));
    assert_eq!(ntp >> 32, 1_767_225_600 + NTP_UNIX_OFFSET);
    assert_eq!(ntp_middle(0x1122_3344_5566_7788), 0x3344_5566);
}

#[test]
fn receive_stats_follow_rfc3550_a1_a3() {
    let t = crate::time::test_epoch();
    let mut s = ReceiveStats::new(0x77, 8000);
    assert_eq!(s.report_block(t), None);
    // Probation: the first packet is not counted, the second validates the source.
    assert!(!s.on_rtp(t, 65530, 0));
    assert!(s.on_rtp(t + Duration::from_millis(20), 65531, 160));
    // 65532..=65535, 0..=5 with 65534 and 2 lost, then 2 arrives late.
    let mut now = t + Duration::from_millis(20);
    for seq in [65532u16, 65533, 65535, 0, 1, 3, 4, 5] {
        now += Duration::from_millis(20);
        assert!(s.on_rtp(now, seq, u32::from(seq.wrapping_sub(65530)) * 160));
    }
    let b = s.report_block(now).unwrap();
    assert_eq!(b.ssrc, 0x77);
    assert_eq!(b.ext_highest_seq, 65536 + 5);
    // Expected 65531..=65541: 11; received 9.
    assert_eq!(b.cumulative_lost, 2);
    assert_eq!(b.fraction_lost, (2 * 256 / 11) as u8);
    assert_eq!((b.lsr, b.dlsr), (0, 0));
    // The late packet makes up for one loss; the next interval has 1 expected more …
    assert!(s.on_rtp(now, 2, 7 * 160));
    assert!(s.on_rtp(now + Duration::from_millis(20), 6, 12 * 160));
    let b2 = s.report_block(now + Duration::from_millis(20)).unwrap();
    assert_eq!(b2.cumulative_lost, 1);
    // … 1 expected, 2 received: negative interval loss reports 0.
    assert_eq!(b2.fraction_lost, 0);
    assert_eq!(s.received(), 11);
}

#[test]
fn receive_stats_jitter_per_a8() {
    let t = crate::time::test_epoch();
    let mut s = ReceiveStats::new(1, 8000);
    // Perfectly paced packets: zero jitter.
    for i in 0..50u16 {
        s.on_rtp(t + Duration::from_millis(20 * u64::from(i)), i, u32::from(i) * 160);
    }
    assert_eq!(s.jitter(), 0);
    // Alternate arrivals 10 ms late and on time: |D| = 80 ticks each time, and J converges to it.
    let mut s = ReceiveStats::new(1, 8000);
    for i in 0..400u16 {
        let skew = if i % 2 == 0 { 10 } else { 0 };
        s.on_rtp(t + Duration::from_millis(20 * u64::from(i) + skew), i, u32::from(i) * 160);
    }
    assert!((76..=80).contains(&s.jitter()), "jitter {}", s.jitter());
}

#[test]
fn receive_stats_lsr_dlsr_and_restart() {
    let t = crate::time::test_epoch();
    let mut s = ReceiveStats::new(1, 8000);
    s.on_rtp(t, 10, 0);
    s.on_rtp(t, 11, 0);
    s.on_sender_report(t, 0x0000_1234_5678_0000);
    let b = s.report_block(t + Duration::from_millis(500)).unwrap();
    assert_eq!((b.lsr, b.dlsr), (0x1234_5678, 32768));
    // A jump is confirmed by the next sequential packet: stats restart there.
    assert!(!s.on_rtp(t, 40000, 0));
    assert!(s.on_rtp(t, 40001, 0));
    assert_eq!(s.extended_max(), Some(40001));
    assert_eq!(s.cumulative_lost(), 0);
}

#[test]
fn send_stats_produce_sender_info() {
    let t = crate::time::test_epoch();
    let mut s = SendStats::new(8000);
    assert_eq!(s.sender_info(t, Duration::ZERO), None);
    s.on_sent(t, 1000, 160);
    s.on_sent(t + Duration::from_millis(20), 1160, 160);
    let info = s.sender_info(t + Duration::from_millis(120), Duration::from_secs(10)).unwrap();
    assert_eq!(info.rtp_ts, 1160 + 800);
    assert_eq!((info.packet_count, info.octet_count), (2, 320));
    assert_eq!(info.ntp >> 32, 10 + NTP_UNIX_OFFSET);
    // Nothing sent since: RR next time.
    assert_eq!(s.sender_info(t + Duration::from_secs(5), Duration::from_secs(15)), None);
    assert_eq!(s.packets(), 2);
}

#[test]
fn parser_never_panics_on_random_bytes() {
    let mut rng = Rng::new([4; 32]);
    let mut buf = [0u8; 128];
    for i in 0..20_000 {
        let len = (rng.next_u64() % 128) as usize;
        rng.fill(&mut buf[..len]);
        if i % 2 == 0 && len >= 4 {
            buf[0] = (buf[0] & 0x3f) | 0x80;
            buf[1] = 200 + (buf[1] % 8);
            buf[2] = 0;
            buf[3] %= 32;
        }
        for p in parse_compound(&buf[..len]).map_while(Result::ok) {
            if let RtcpPacket::SenderReport { blocks, .. } | RtcpPacket::ReceiverReport { blocks, .. } = p {
                blocks.count();
            }
            if let RtcpPacket::Bye { ssrcs, .. } = p {
                ssrcs.count();
            }
            if let RtcpPacket::Fir { entries, .. } = p {
                entries.count();
            }
        }
        let _ = validate_compound(&buf[..len]);
        let _ = summarize(&buf[..len]);
    }
}
