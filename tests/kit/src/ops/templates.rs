//! The messages `gateway_ops` sends: sylkRTC requests, SIP requests and responses, SDP of a
//! browser and of a SIP far end, and the call operations built from them.

use super::cursor::ByteCursor;
use super::harness::{GatewayHarness, SessionSeen, FUZZ_SIP_SOCKET};
use sylkgw_core::ids::ConnId;
use sylkgw_core::Input;

pub(super) const FUZZ_ACCOUNTS: [&str; 5] = ["alice@example.com", "bob@sip.test", "carol@192.0.2.5", "dave", "é@x"];
pub(super) const FUZZ_PASSWORDS: [&str; 4] = ["b1726872c344b6dc8365b774f8fd6412", "secret", "", "\u{0}\"\\"];

/// A sylkRTC request from the template list, fields chosen by the cursor.
pub(super) fn fuzz_sylkrtc_text(c: &mut ByteCursor<'_>) -> String {
    let tr = c.byte();
    let account = *c.pick(&FUZZ_ACCOUNTS);
    match c.below(12) {
        0 => format!(r#"{{"sylkrtc":"ping","transaction":"{tr}"}}"#),
        1 | 2 => {
            let password = c.pick(&FUZZ_PASSWORDS).escape_default();
            format!(r#"{{"sylkrtc":"account-add","transaction":"{tr}","account":"{account}","password":"{password}"}}"#)
        }
        3 => format!(r#"{{"sylkrtc":"account-remove","transaction":"{tr}","account":"{account}"}}"#),
        4 | 5 => format!(r#"{{"sylkrtc":"account-register","transaction":"{tr}","account":"{account}"}}"#),
        6 => format!(r#"{{"sylkrtc":"account-unregister","transaction":"{tr}","account":"{account}"}}"#),
        7 => {
            let platform = c.pick(&["ios", "android", ""]);
            let silent = c.byte() & 1 == 1;
            format!(
                r#"{{"sylkrtc":"account-devicetoken","transaction":"{tr}","account":"{account}","token":"t{tr}","platform":"{platform}","device":"d","silent":{silent},"app":"com.example"}}"#
            )
        }
        8 => {
            let sdp = c.pick(&["v=0\\r\\nm=audio 9 UDP/TLS/RTP/SAVPF 111\\r\\n", "", "garbage", "v=0\\r\\n\\r\\n"]);
            let session = c.byte() % 4;
            format!(
                r#"{{"sylkrtc":"session-create","transaction":"{tr}","account":"{account}","session":"s{session}","uri":"sip:bob@example.com","sdp":"{sdp}"}}"#
            )
        }
        9 => format!(r#"{{"sylkrtc":"session-terminate","transaction":"{tr}","session":"s{}"}}"#, c.byte() % 4),
        10 if c.byte().is_multiple_of(2) => fuzz_messaging_text(c, tr, account),
        10 => format!(r#"{{"sylkrtc":"{}","transaction":"{tr}"}}"#, c.pick(&["nope", "session-answer", "", "ack"])),
        _ => c.pick(&["{", "[]", "null", r#"{"sylkrtc":7}"#, r#"{"transaction":"1"}"#, "\u{feff}{}"]).to_string(),
    }
}

/// Header lines of `req` a response copies (Via, From, To, Call-ID, CSeq), To tagged.
pub(super) fn fuzz_echo_headers(req: &str, tag: u32) -> String {
    let mut out = String::new();
    for line in req.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
        if ["via", "v", "from", "f", "call-id", "i", "cseq"].contains(&name.as_str()) {
            out.push_str(line);
            out.push_str("\r\n");
        } else if name == "to" || name == "t" {
            out.push_str(line);
            if !line.contains(";tag=") {
                out.push_str(&format!(";tag=fz{tag}"));
            }
            out.push_str("\r\n");
        }
    }
    out
}

/// A SIP message from the template list, fields chosen by the cursor.
pub(super) fn fuzz_sip_text(h: &mut GatewayHarness, c: &mut ByteCursor<'_>) -> Vec<u8> {
    let n = h.next_id();
    match c.below(8) {
        0..=2 => {
            // A response to a request the gateway sent (a REGISTER, preferably).
            let pick = c.byte();
            let registers: Vec<&String> = h.sip_requests.iter().filter(|r| r.starts_with("REGISTER ")).collect();
            let req = if !registers.is_empty() && pick & 1 == 0 {
                registers[usize::from(pick >> 1) % registers.len()].clone()
            } else if !h.sip_requests.is_empty() {
                h.sip_requests[usize::from(pick >> 1) % h.sip_requests.len()].clone()
            } else {
                "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnone\r\n\
                 From: <sip:alice@example.com>;tag=a\r\nTo: <sip:alice@example.com>\r\nCall-ID: none\r\n\
                 CSeq: 1 REGISTER\r\n\r\n"
                    .to_string()
            };
            let echoed = fuzz_echo_headers(&req, n);
            let (code, extra) = match c.below(6) {
                0 | 1 => {
                    let expires = c.pick(&[0, 1, 30, 600, 3600]);
                    let contact = req
                        .split("\r\n")
                        .find(|l| l.to_ascii_lowercase().starts_with("contact:"))
                        .map(|l| format!("{l};expires={expires}\r\n"))
                        .unwrap_or_default();
                    (200, format!("{contact}Expires: {expires}\r\n"))
                }
                2 | 3 => {
                    let alg = c.pick(&["MD5", "SHA-256", "MD5-sess", "bogus"]);
                    let stale = c.byte() & 1 == 1;
                    (
                        401,
                        format!(
                            "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"n{n}\", algorithm={alg}, qop=\"auth\", stale={stale}\r\n"
                        ),
                    )
                }
                4 => (423, format!("Min-Expires: {}\r\n", c.pick(&[0, 60, 3600, 99999]))),
                _ => (*c.pick(&[500, 503, 403, 100, 183]), String::new()),
            };
            format!("SIP/2.0 {code} Fuzz\r\n{echoed}{extra}Content-Length: 0\r\n\r\n").into_bytes()
        }
        3 if c.byte().is_multiple_of(2) => {
            let user = match h.contact_users.is_empty() {
                true => "nobody".to_string(),
                false => h.contact_users[c.below(h.contact_users.len())].clone(),
            };
            fuzz_incoming_message(c, n, &user)
        }
        3 => format!(
            "OPTIONS sip:192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKo{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=o{n}\r\nTo: <sip:192.0.2.1>\r\n\
             Call-ID: opt{n}@fuzz\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes(),
        4 | 5 => {
            let user = match h.contact_users.is_empty() {
                true => "nobody".to_string(),
                false => h.contact_users[c.below(h.contact_users.len())].clone(),
            };
            let sdp = *c.pick(&[
                "v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
                "",
                "garbage\r\n",
            ]);
            fuzz_incoming_invite(h, n, &user, sdp)
        }
        6 => {
            let call = match h.calls.is_empty() {
                true => "nocall@fuzz".to_string(),
                false => h.calls[c.below(h.calls.len())].clone(),
            };
            format!(
                "BYE sip:x@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKb{n}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:caller@example.com>;tag=c{n}\r\nTo: <sip:x@example.com>;tag=g\r\n\
                 Call-ID: {call}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes()
        }
        _ => c.bytes(64).to_vec(),
    }
}

/// An INVITE from the far end to `user` (a registered Contact user, or not), remembered for
/// BYE and CANCEL.
pub(super) fn fuzz_incoming_invite(h: &mut GatewayHarness, n: u32, user: &str, sdp: &str) -> Vec<u8> {
    let call = format!("call{n}@fuzz");
    h.calls.push(call.clone());
    let invite = format!(
        "INVITE sip:{user}@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKi{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@example.com>;tag=c{n}\r\nTo: <sip:{user}@example.com>\r\n\
         Call-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@192.0.2.5:5060>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    if h.invites.len() == 8 {
        h.invites.remove(0);
    }
    h.invites.push(invite.clone());
    invite.into_bytes()
}

/// The value of the first header of `msg` with one of `names` (lower case, compact forms too).
pub(super) fn fuzz_header(msg: &str, names: &[&str]) -> Option<String> {
    msg.split("\r\n").skip(1).take_while(|l| !l.is_empty()).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        names.contains(&name.trim().to_ascii_lowercase().as_str()).then(|| value.trim().to_string())
    })
}

/// The URI inside a name-addr (`<…>`), or the value itself.
pub(super) fn fuzz_addr_uri(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_string(),
        _ => value.split(';').next().unwrap_or_default().to_string(),
    }
}

/// A browser's offer (str0m's, as a web phone would send it), audio or audio and video, in the
/// direction the byte picks.
pub(super) fn fuzz_browser_offer(pick: u8) -> String {
    const OFFER: &str = "v=0\r\no=str0m-0.25.0 3199069421313415948 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE Llc{bundle}\r\na=msid-semantic: WMS BjHabRKjHTSEDvgrdJOO\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 0 126\r\nc=IN IP4 0.0.0.0\r\n\
        a=candidate:fffeff7e32c583ef85edbb1a 1 udp 2130706175 127.0.0.1 50000 typ host\r\n\
        a=ice-ufrag:GX5GpifvBcXsLzzq\r\na=ice-pwd:9MfmQRVAU8vICAMaoUDfLb\r\na=ice-options:trickle\r\n\
        a=fingerprint:sha-256 8A:AF:C6:7E:4F:05:9F:30:B1:2E:B2:58:16:12:EF:D9:C1:4C:15:D3:08:89:B9:C3:0C:B9:95:2F:3A:17:F5:D7\r\n\
        a=setup:actpass\r\na=mid:Llc\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na={dir}\r\n\
        a=msid:BjHabRKjHTSEDvgrdJOO PTHesMVXGPEk16bTHUGO\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
        a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:126 telephone-event/8000\r\n\
        a=fmtp:126 0-16\r\na=ssrc:1716307424 cname:PTHesMVXGPEk16bTHUGO\r\n{video}";
    const VIDEO: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:GX5GpifvBcXsLzzq\r\na=ice-pwd:9MfmQRVAU8vICAMaoUDfLb\r\n\
        a=fingerprint:sha-256 8A:AF:C6:7E:4F:05:9F:30:B1:2E:B2:58:16:12:EF:D9:C1:4C:15:D3:08:89:B9:C3:0C:B9:95:2F:3A:17:F5:D7\r\n\
        a=setup:actpass\r\na=mid:Vv\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendrecv\r\n\
        a=msid:BjHabRKjHTSEDvgrdJOO VvHesMVXGPEk16bTHUGO\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n\
        a=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\na=rtpmap:102 H264/90000\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=ssrc:1716307425 cname:PTHesMVXGPEk16bTHUGO\r\n";
    let dir = ["sendrecv", "sendonly", "recvonly", "inactive"][usize::from(pick % 4)];
    let video = pick & 4 != 0;
    OFFER
        .replace("{dir}", dir)
        .replace("{bundle}", if video { " Vv" } else { "" })
        .replace("{video}", if video { VIDEO } else { "" })
}

/// A browser's answer to the gateway's `offer`: every m-line kept (port 0 stays 0), its first
/// format chosen.
pub(super) fn fuzz_browser_answer(offer: &str) -> String {
    let mut sections = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in offer.split("\r\n") {
        if let Some(m) = line.strip_prefix("m=") {
            sections.extend(current.take());
            current = Some((m.to_string(), Vec::new()));
        } else if let Some((_, attrs)) = current.as_mut() {
            attrs.push(line);
        }
    }
    sections.extend(current);
    let mut mids = Vec::new();
    let mut body = String::new();
    for (m, attrs) in &sections {
        let parts: Vec<&str> = m.split(' ').collect();
        let (kind, port, pt) = (parts[0], parts.get(1).copied().unwrap_or("9"), parts.get(3).copied().unwrap_or("0"));
        body.push_str(&format!(
            "m={kind} {port} UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:fzuf\r\n\
             a=ice-pwd:fuzzfuzzfuzzfuzzfuzzfuzz\r\na=fingerprint:sha-256 \
             8A:AF:C6:7E:4F:05:9F:30:B1:2E:B2:58:16:12:EF:D9:C1:4C:15:D3:08:89:B9:C3:0C:B9:95:2F:3A:17:F5:D7\r\n\
             a=setup:active\r\na=sendrecv\r\na=rtcp-mux\r\n"
        ));
        for a in attrs {
            let keep = a.starts_with("a=mid:")
                || a.starts_with(&format!("a=rtpmap:{pt} "))
                || a.starts_with(&format!("a=fmtp:{pt} "));
            if keep {
                body.push_str(a);
                body.push_str("\r\n");
            }
            if let Some(mid) = a.strip_prefix("a=mid:") {
                mids.push(mid.to_string());
            }
        }
    }
    format!("v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\n{body}", mids.join(" "))
}

/// A SIP far end's SDP (offer or answer): codecs, port (0 rejects), direction and maybe video,
/// all picked by the cursor.
pub(super) fn fuzz_far_sdp(c: &mut ByteCursor<'_>, n: u32) -> String {
    let port = *c.pick(&[30000, 0, 30002]);
    let (pts, maps) = *c.pick(&[
        ("0 101", "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"),
        ("8", ""),
        ("111 101", "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n"),
        ("9 0", ""),
        ("96", ""),
    ]);
    let dir = *c.pick(&["sendrecv", "sendonly", "recvonly", "inactive"]);
    let video = match c.byte() % 4 {
        0 => "m=video 30010 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack pli\r\n",
        1 => "m=video 0 RTP/AVP 96\r\n",
        _ => "",
    };
    format!(
        "v=0\r\no=far {n} {n} IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {pts}\r\n{maps}a={dir}\r\n{video}"
    )
}

/// One operation on calls, chosen by the cursor: a browser's session request (create with a
/// real offer, answer, update, trickle, DTMF, terminate), a far end's answer to an INVITE the
/// gateway sent (provisional, early media, 2xx with SDP on one of two forks, challenge, failure),
/// a request inside a dialog (BYE, re-INVITE, UPDATE, INFO, ACK, OPTIONS), CANCEL of an incoming
/// INVITE, an incoming INVITE with a full SDP, or RTP/RTCP on a media socket.
pub(super) fn fuzz_call_op(h: &mut GatewayHarness, c: &mut ByteCursor<'_>) {
    use serde_json::json;
    let n = h.next_id();
    match c.below(7) {
        0 => {
            let Some(conn) = h.pick_web(c) else { return };
            let account = *c.pick(&FUZZ_ACCOUNTS);
            let session = format!("s{}", c.byte() % 4);
            let uri = *c.pick(&["bob@example.com", "sip:bob@example.com;transport=tcp", "+15551234", "x"]);
            let sdp = fuzz_browser_offer(c.byte());
            let key = (conn, session.clone());
            if h.sessions.get(&key).is_none_or(|s| s.ended) {
                h.sessions.insert(key, SessionSeen { ended: false, offer: None });
            }
            let req = json!({"sylkrtc": "session-create", "transaction": format!("c{n}"), "account": account,
                "session": session, "uri": uri, "sdp": sdp});
            h.send_text(conn, &req.to_string());
        }
        1 => {
            let known: Vec<(ConnId, String)> =
                h.sessions.iter().filter(|(_, s)| !s.ended).map(|(k, _)| k.clone()).collect();
            if known.is_empty() {
                return;
            }
            let (conn, session) = c.pick(&known).clone();
            let tr = format!("c{n}");
            let req = match c.below(7) {
                0 | 1 => {
                    let offer = h.sessions.get(&(conn, session.clone())).and_then(|s| s.offer.clone());
                    let sdp = offer.as_deref().map(fuzz_browser_answer).unwrap_or_else(|| "v=0\r\n".into());
                    let headers = match c.byte() % 3 {
                        0 => json!({"X-Fuzz": "1", "Via": "SIP/2.0/UDP evil", "Bad Name": "x\r\nInjected: 1"}),
                        _ => json!({}),
                    };
                    json!({"sylkrtc": "session-answer", "transaction": tr, "session": session, "sdp": sdp, "headers": headers})
                }
                2 => {
                    let sdp = fuzz_browser_offer(c.byte());
                    json!({"sylkrtc": "session-update", "transaction": tr, "session": session, "sdp": sdp})
                }
                3 => {
                    let candidates = match c.byte() % 2 {
                        0 => json!([]),
                        _ => json!([{"candidate": "candidate:1 1 udp 2130706431 192.0.2.99 50000 typ host",
                            "sdpMid": "Llc", "sdpMLineIndex": 0}]),
                    };
                    json!({"sylkrtc": "session-trickle", "transaction": tr, "session": session, "candidates": candidates})
                }
                4 => {
                    let tones = *c.pick(&["1", "123#", "A*", "x", ""]);
                    json!({"sylkrtc": "session-dtmf-info", "transaction": tr, "session": session, "digit": tones})
                }
                _ => json!({"sylkrtc": "session-terminate", "transaction": tr, "session": session}),
            };
            h.send_text(conn, &req.to_string());
        }
        2 => {
            let invites: Vec<String> = h.sip_requests.iter().filter(|r| r.starts_with("INVITE ")).cloned().collect();
            if invites.is_empty() {
                return;
            }
            let req = c.pick(&invites).clone();
            let fork = u32::from(c.byte() % 2);
            let echoed = fuzz_echo_headers(&req, fork);
            let contact = "Contact: <sip:far@192.0.2.5:5060>\r\n";
            let (code, extra, body) = match c.below(8) {
                0 => (100, String::new(), String::new()),
                1 => (180, contact.to_string(), String::new()),
                2 => (183, contact.to_string(), fuzz_far_sdp(c, n)),
                3 | 4 => (200, contact.to_string(), fuzz_far_sdp(c, n)),
                5 => (
                    407,
                    format!("Proxy-Authenticate: Digest realm=\"example.com\", nonce=\"i{n}\", qop=\"auth\"\r\n"),
                    String::new(),
                ),
                6 => (486, String::new(), String::new()),
                _ => (*c.pick(&[487, 480, 503, 302, 603, 488]), String::new(), String::new()),
            };
            if (101..300).contains(&code) {
                h.far_dialog_from_invite(&req, fork);
            }
            let ctype = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
            let msg =
                format!("SIP/2.0 {code} Fuzz\r\n{echoed}{extra}{ctype}Content-Length: {}\r\n\r\n{body}", body.len());
            h.deliver_sip(c, msg.as_bytes());
        }
        3 => {
            if h.far_dialogs.is_empty() {
                return;
            }
            let d = c.pick(&h.far_dialogs).clone();
            let method = *c.pick(&["BYE", "INVITE", "UPDATE", "INFO", "ACK", "OPTIONS", "INVITE", "BYE"]);
            let cseq = if method == "ACK" { 1 } else { 100 + n };
            let (ctype, body) = match method {
                "INVITE" | "UPDATE" => ("application/sdp", fuzz_far_sdp(c, n)),
                "INFO" => ("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n".to_string()),
                _ => ("", String::new()),
            };
            let ctype = if ctype.is_empty() { String::new() } else { format!("Content-Type: {ctype}\r\n") };
            let msg = format!(
                "{method} {} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKd{n}\r\nMax-Forwards: 70\r\n\
                 From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
                 Contact: <sip:far@192.0.2.5:5060>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
                d.target,
                d.far,
                d.gateway,
                d.call_id,
                body.len()
            );
            h.deliver_sip(c, msg.as_bytes());
        }
        4 => {
            if h.invites.is_empty() {
                return;
            }
            let invite = c.pick(&h.invites).clone();
            let mut msg = String::new();
            for (i, line) in invite.split("\r\n").enumerate() {
                if i == 0 {
                    msg.push_str(&line.replacen("INVITE", "CANCEL", 1));
                } else if line.is_empty() {
                    break;
                } else if line.starts_with("CSeq:") {
                    msg.push_str("CSeq: 1 CANCEL");
                } else if line.starts_with("Content-") || line.starts_with("Contact:") {
                    continue;
                } else {
                    msg.push_str(line);
                }
                msg.push_str("\r\n");
            }
            msg.push_str("Content-Length: 0\r\n\r\n");
            h.deliver_sip(c, msg.as_bytes());
        }
        5 => {
            let user = match h.contact_users.is_empty() {
                true => "nobody".to_string(),
                false => h.contact_users[c.below(h.contact_users.len())].clone(),
            };
            let sdp = fuzz_far_sdp(c, n);
            let msg = fuzz_incoming_invite(h, n, &user, &sdp);
            h.deliver_sip(c, &msg);
        }
        _ => {
            let sockets: Vec<sylkgw_core::SocketId> =
                h.bound.iter().copied().filter(|s| *s != FUZZ_SIP_SOCKET).collect();
            if sockets.is_empty() {
                return;
            }
            let socket = *c.pick(&sockets);
            let from = *c.pick(&[([192, 0, 2, 5], 30000), ([198, 51, 100, 9], 7000), ([192, 0, 2, 5], 30001)]);
            let pt = *c.pick(&[0u8, 8, 101, 111, 96, 200, 201, 206]);
            let ssrc = 0x1122_3344u32 + u32::from(c.byte() % 2);
            let mut pkt = Vec::new();
            if pt >= 200 {
                // RTCP: SR, RR or PSFB (PLI), one packet, length in 32-bit words minus one.
                let words: u16 = match pt {
                    200 => 6,
                    201 => 1,
                    _ => 2,
                };
                pkt.extend_from_slice(&[if pt == 206 { 0x81 } else { 0x80 }, pt]);
                pkt.extend_from_slice(&words.to_be_bytes());
                pkt.extend_from_slice(&ssrc.to_be_bytes());
                pkt.resize(4 * (usize::from(words) + 1), c.byte());
            } else {
                let seq = (n as u16).wrapping_mul(u16::from(c.byte()) | 1);
                pkt.extend_from_slice(&[0x80, pt | (c.byte() & 0x80)]);
                pkt.extend_from_slice(&seq.to_be_bytes());
                pkt.extend_from_slice(&(n.wrapping_mul(160)).to_be_bytes());
                pkt.extend_from_slice(&ssrc.to_be_bytes());
                match pt {
                    101 => pkt.extend_from_slice(&[c.byte() % 16, c.byte(), 0, 160]),
                    _ => pkt.resize(12 + 160, c.byte()),
                }
            }
            h.input(Input::Datagram { socket, from: from.into(), data: &pkt });
        }
    }
}

/// One request as large as a WebSocket message allows (some a little larger), chosen by the
/// cursor: a long list (`incoming_header_prefixes`, `active_participants`, `participants`, with
/// or without duplicates), a long DTMF string (`session-dtmf-info`) or a flood of ICE candidates
/// (`session-trickle`), the last two on a session the connection has when there is one. The
/// gateway must answer each with its error or cap, in bounded work and output.
pub(super) fn fuzz_flood_op(h: &mut GatewayHarness, c: &mut ByteCursor<'_>) {
    use serde_json::json;
    let Some(conn) = h.pick_web(c) else { return };
    let tr = format!("f{}", h.next_id());
    let live: Vec<String> =
        h.sessions.iter().filter(|((k, _), s)| *k == conn && !s.ended).map(|((_, s), _)| s.clone()).collect();
    let session = match live.is_empty() {
        true => format!("s{}", c.byte() % 4),
        false => c.pick(&live).clone(),
    };
    let req = match c.below(3) {
        0 => {
            let n = *c.pick(&[3usize, 500, 20_000, 40_000]);
            let distinct = *c.pick(&[1usize, 2, 3, usize::MAX]);
            match c.below(3) {
                0 => {
                    let items: Vec<String> = (0..n).map(|i| format!("X-{}", i % distinct)).collect();
                    json!({"sylkrtc": "account-add", "transaction": tr, "account": FUZZ_ACCOUNTS[0],
                        "password": "secret", "incoming_header_prefixes": items})
                }
                1 => {
                    let items: Vec<String> = (0..n).map(|i| (i % distinct).to_string()).collect();
                    json!({"sylkrtc": "videoroom-configure", "transaction": tr, "session": session,
                        "active_participants": items})
                }
                _ => {
                    let items: Vec<String> = (0..n).map(|i| format!("u{}@x", i % distinct)).collect();
                    json!({"sylkrtc": "videoroom-invite", "transaction": tr, "session": session, "participants": items})
                }
            }
        }
        1 => {
            let n = *c.pick(&[13usize, 1_000, 50_000, 200_000]);
            let digits: String = "0123456789*#ABCD".chars().cycle().take(n).collect();
            json!({"sylkrtc": "session-dtmf-info", "transaction": tr, "session": session, "digit": digits})
        }
        _ => {
            let n = *c.pick(&[2usize, 100, 1_000, 2_200]);
            let candidates: Vec<_> = (0..n)
                .map(|i| {
                    json!({"candidate": format!("candidate:{i} 1 udp 2130706431 192.0.2.{} {} typ host", i % 250 + 1, 1024 + i % 60_000),
                        "sdpMid": "Llc", "sdpMLineIndex": 0})
                })
                .collect();
            json!({"sylkrtc": "session-trickle", "transaction": tr, "session": session, "candidates": candidates})
        }
    };
    h.send_text(conn, &req.to_string());
}

/// A messaging request (issue #12) with fields chosen by the cursor, good or bad.
pub(super) fn fuzz_messaging_text(c: &mut ByteCursor<'_>, tr: u8, account: &str) -> String {
    use serde_json::json;
    let uri = *c.pick(&["bob@example.com", "sip:bob@example.com", "x", ""]);
    let id = format!("m{}", c.byte() % 4);
    let req = match c.below(8) {
        0 => json!({"sylkrtc": "lookup-public-key", "uri": uri}),
        1 | 2 => {
            let (content, content_type) = *c.pick(&[
                ("hi ✓", "text/plain"),
                ("✓", "application/json"),
                ("-----BEGIN PGP PUBLIC KEY BLOCK-----", "text/pgp-public-key"),
                ("x", "bad type"),
                ("", "text/html"),
            ]);
            json!({"sylkrtc": "account-message", "account": account, "uri": uri, "message_id": id,
                   "content": content, "content_type": content_type, "timestamp": "2026-01-01T00:00:00Z"})
        }
        3 => {
            let state = *c.pick(&["delivered", "displayed", "failed", "forbidden", "error", "nope"]);
            json!({"sylkrtc": "account-disposition-notification", "account": account, "uri": uri,
                   "message_id": id, "state": state, "timestamp": "t"})
        }
        4 => {
            let since = *c.pick(&["2026-01-01T00:00:00Z", "yesterday", ""]);
            json!({"sylkrtc": "account-sync-conversations", "account": account, "message_id": id,
                   "since": since, "limit": i64::from(c.byte()) - 8})
        }
        5 => json!({"sylkrtc": "account-mark-conversation-read", "account": account, "contact": uri}),
        6 => json!({"sylkrtc": "account-remove-message", "account": account, "contact": uri, "message_id": id}),
        _ => json!({"sylkrtc": "account-remove-conversation", "account": account, "contact": uri}),
    };
    let mut req = req;
    req["transaction"] = json!(tr.to_string());
    req.to_string()
}

/// A MESSAGE for Contact user `user`: CPIM, IMDN, sync entries, plain text or garbage.
pub(super) fn fuzz_incoming_message(c: &mut ByteCursor<'_>, n: u32, user: &str) -> Vec<u8> {
    let cpim = |inner: &str, payload: &str| {
        format!(
            "From: <sip:bob@example.com>\r\nTo: <sip:x@example.com>\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
             imdn.Message-ID: m{n}\r\nimdn.Disposition-Notification: positive-delivery\r\n\r\nContent-Type: {inner}\r\n\r\n{payload}"
        )
    };
    let imdn = "<?xml version=\"1.0\"?><imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>m0</message-id>\
<datetime>t</datetime><delivery-notification><status><delivered/></status></delivery-notification></imdn>";
    let (content_type, body) = match c.below(7) {
        0 => ("message/cpim".to_string(), cpim("text/plain", "hello")),
        1 => ("message/cpim".to_string(), cpim("message/imdn+xml", imdn)),
        2 => ("message/imdn+xml".to_string(), imdn.to_string()),
        3 => ("application/sylk-conversation-read".to_string(), r#"{"contact":"bob@example.com"}"#.to_string()),
        4 => ("text/plain".to_string(), "plain".to_string()),
        5 => ("message/cpim".to_string(), String::from_utf8_lossy(c.bytes(40)).into_owned()),
        _ => (c.pick(&["", "text", "application/sylk-api-token"]).to_string(), "x".to_string()),
    };
    format!(
        "MESSAGE sip:{user}@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKmsg{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=m{n}\r\nTo: <sip:x@example.com>\r\nCall-ID: msg{n}@fuzz\r\n\
         CSeq: 1 MESSAGE\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An outcome for storage request `request`: the right kind (`ok`), a failure, or the wrong kind.
pub(super) fn fuzz_store_outcome(
    c: &mut ByteCursor<'_>,
    request: &sylkgw_core::storage::StoreRequest,
    ok: bool,
) -> Result<sylkgw_core::storage::StoreResult, sylkgw_core::storage::StoreError> {
    use sylkgw_core::storage::{AddOutcome, JournalEntry, StoreError, StoreRequest, StoreResult, UnixMicros};
    if !ok {
        return Err(match c.below(3) {
            0 => StoreError::NotFound,
            1 => StoreError::Unavailable("down".into()),
            _ => StoreError::Constraint("unique".into()),
        });
    }
    Ok(match (request, c.below(8)) {
        (_, 0) => StoreResult::Done,
        (StoreRequest::AddMessage { .. }, _) => StoreResult::Added {
            outcome: *c.pick(&[AddOutcome::Journaled, AddOutcome::Duplicate, AddOutcome::PublicKeyStored]),
        },
        (StoreRequest::Journal { .. }, _) => StoreResult::Journal {
            entries: vec![JournalEntry {
                contact: "bob@example.com".into(),
                timestamp: "t".into(),
                disposition: vec![],
                message_id: "m0".into(),
                content_type: "text/plain".into(),
                content: "\u{0}\"".into(),
                direction: None,
                state: None,
                created_at: UnixMicros(0),
            }],
        },
        (StoreRequest::LookupPublicKey { .. }, _) => {
            StoreResult::PublicKey { public_key: (c.byte().is_multiple_of(2)).then(|| "KEY".to_string()) }
        }
        (StoreRequest::RemoveMessage { .. } | StoreRequest::RemoveConversation { .. }, _) => {
            StoreResult::Removed { found: c.byte().is_multiple_of(2) }
        }
        (StoreRequest::TrimJournal { .. }, _) => StoreResult::Trimmed { dropped: 1 },
        _ => StoreResult::Done,
    })
}
