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
            assert!(matches!(r, Err(SrtpError::AuthFailed | SrtpError::BadHeader | SrtpError::TooShort)), "{i}: {r:?}");
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
    let wires: Vec<(u16, Vec<u8>)> = seqs.iter().map(|&s| (s, protect(&mut tx, &rtp(s, 5, &[s as u8; 20])))).collect();
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
    let attr =
        CryptoAttribute::parse("1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4")
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
    let a =
        CryptoAttribute::parse("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4")
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
        let s: String = (0..len).map(|_| alphabet[(rng.next_u64() % alphabet.len() as u64) as usize] as char).collect();
        let s = format!("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR{s}");
        if let Ok(a) = CryptoAttribute::parse(&s) {
            let _ = a.to_string();
        }
    }
}
