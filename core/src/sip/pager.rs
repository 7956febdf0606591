//! Pager-mode instant messages (RFC 3428): one outgoing MESSAGE ([`Pager`]) — out of dialog
//! to the target's domain or the outbound proxy, with its authenticated retry, or built by a
//! call leg inside its dialog — wired to its non-INVITE client transaction through
//! [`Services`]; and what an incoming MESSAGE tells the transaction user
//! ([`IncomingMessage`]). The stack routes an outgoing MESSAGE's inputs here by [`MsgId`] and
//! forgets it once [`Pager::is_gone`].

use super::build::{header_values, put, via_value};
use super::digest::{self, Answer, Challenge, Secret};
use super::events::{IncomingMessage, MsgId, SipEvent};
use super::identity::SipIdentity;
use super::invite::ChallengeMemory;
use super::message::{HeaderName, Headers, Method, Request, Response};
use super::rfc3263::{Resolution, Target};
use super::services::{Owner, Services};
use super::target::{next_hop, ProxySpec, Transport};
use super::transaction::{Kind, ResponseVerdict};
use super::transport::Peer;
use super::uri::Uri;
use crate::rng::Rng;
use std::time::{Duration, Instant};

/// How long an incoming MESSAGE waits for the transaction user's answer before the stack
/// answers 480 (the sender may try again). Well inside the sender's Timer F (64·T1 = 32 s), and
/// past its retransmissions' T2 (4 s), which the server transaction absorbs meanwhile.
pub const MESSAGE_ANSWER_WAIT: Duration = Duration::from_secs(8);

/// RFC 3261 §18.1.1: a request over this many bytes does not go over UDP (when the path MTU is
/// unknown) but over a congestion-controlled transport.
const UDP_LIMIT: usize = 1300;

/// An outgoing MESSAGE out of dialog.
#[derive(Clone, Debug)]
pub struct MessageParams {
    /// The sender's account (From, digest credentials, User-Agent).
    pub identity: SipIdentity,
    /// The recipient, `user@domain` (no scheme): the Request-URI and To.
    pub target: String,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// The body (CPIM, IMDN, plain text…).
    pub body: Vec<u8>,
    /// Extra headers (names must be tokens; the caller filters them).
    pub headers: Vec<(String, String)>,
}

/// A MESSAGE built inside a call's dialog, ready to go.
pub(super) struct DialogMessage {
    pub(super) branch: String,
    pub(super) req: Request,
    pub(super) peer: Peer,
    /// The next hop's name (TLS server name).
    pub(super) name: String,
}

/// Out of dialog: what building (and authenticating) the request needs.
struct Direct {
    params: MessageParams,
    call_id: String,
    from_tag: String,
    cseq: u32,
    hop: ProxySpec,
    /// The next hop's targets (RFC 3263), in order, and the one in use.
    targets: Vec<Target>,
    current: usize,
    auth: ChallengeMemory,
}

/// One outgoing MESSAGE, until its final response.
pub(super) struct Pager {
    id: MsgId,
    /// `None` inside a dialog: the dialog's CSeq belongs to the leg, so a challenge there is
    /// the result (no retry).
    direct: Option<Direct>,
    /// The branch of the request in flight.
    branch: Option<String>,
    /// Over: the stack drops it.
    gone: bool,
}

impl Pager {
    /// A MESSAGE out of dialog for `params`, not started. The next hop is the outbound proxy,
    /// else the target's domain (as for INVITE, spec §5.3).
    pub(super) fn new(id: MsgId, params: MessageParams, svc: &Services, rng: &mut Rng) -> Self {
        let hop = next_hop(&params.target, svc.proxy.as_ref());
        let direct = Direct {
            params,
            call_id: format!("{}@sylkgw", rng.hex(24)),
            from_tag: rng.hex(16),
            cseq: (rng.next_u64() % 10_000) as u32 + 1,
            hop,
            targets: Vec::new(),
            current: 0,
            auth: ChallengeMemory::default(),
        };
        Self { id, direct: Some(direct), branch: None, gone: false }
    }

    /// A MESSAGE the leg built in its dialog; [`Pager::send_in_dialog`] sends it.
    pub(super) fn in_dialog(id: MsgId) -> Self {
        Self { id, direct: None, branch: None, gone: false }
    }

    /// Whether it is over (the stack forgets it).
    pub(super) fn is_gone(&self) -> bool {
        self.gone
    }

    /// Sends the MESSAGE, or first resolves the next hop (RFC 3263).
    pub(super) fn start(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) {
        let Some(d) = &self.direct else { return };
        let hop = d.hop.clone();
        if let Some(result) = svc.resolve(Owner::Msg(self.id), &hop, now, rng) {
            self.on_resolved(svc, result, now, rng);
        }
    }

    /// The next hop's lookup ended: the MESSAGE goes to the first target (or fails: 503).
    pub(super) fn on_resolved(&mut self, svc: &mut Services, result: Resolution, now: Instant, rng: &mut Rng) {
        let Some(d) = self.direct.as_mut() else { return };
        match result {
            Ok(targets) => {
                d.targets = targets;
                d.current = 0;
                self.send(svc, None, now, rng);
            }
            Err(e) => {
                log::info!(
                    "MESSAGE {:?}: cannot resolve {}: {}",
                    self.id,
                    d.hop.host,
                    e.as_deref().unwrap_or("no records")
                );
                self.finish(svc, 503, "Service Unavailable");
            }
        }
    }

    /// RFC 3263 §4.3: after a timeout, a 503 or a transport failure out of dialog, the MESSAGE
    /// goes to the next target as a new transaction; `false` when there is none.
    fn fail_over(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) -> bool {
        let Some(d) = self.direct.as_mut() else { return false };
        if d.current + 1 >= d.targets.len() {
            return false;
        }
        d.current += 1;
        log::info!(
            "MESSAGE {:?}: trying the next target, {} {}",
            self.id,
            d.targets[d.current].transport,
            d.targets[d.current].addr
        );
        self.send(svc, None, now, rng);
        true
    }

    /// Sends the MESSAGE built in a dialog (`SipStack::send_message_in_dialog`).
    pub(super) fn send_in_dialog(&mut self, svc: &mut Services, msg: DialogMessage, now: Instant) {
        if svc.transactions_full() {
            log::warn!("{} SIP transactions in flight; MESSAGE not sent", svc.cfg.max_transactions);
            return self.finish(svc, 503, "Service Unavailable");
        }
        let DialogMessage { branch, mut req, peer, name } = msg;
        let (vhost, vport) = svc.advertised(peer.transport);
        let transport = fit_transport(&mut req, peer.transport, &vhost, vport, &branch);
        let peer = if transport == peer.transport { peer } else { Peer { transport, conn: None, ..peer } };
        self.branch = Some(branch.clone());
        svc.send_client(branch, req.to_bytes(), peer, &name, Owner::Msg(self.id), Kind::NonInvite, now);
    }

    /// Builds and sends the MESSAGE out of dialog (a new transaction, the next CSeq), with
    /// credentials for `auth` = (challenge, proxy, nc) when it answers a 401/407.
    fn send(&mut self, svc: &mut Services, auth: Option<(Challenge, bool, u32)>, now: Instant, rng: &mut Rng) {
        if self.gone {
            return;
        }
        // `SipConfig::max_transactions`: no room for the MESSAGE's transaction; it fails at once.
        if svc.transactions_full() {
            log::warn!("{} SIP transactions in flight; MESSAGE not sent", svc.cfg.max_transactions);
            return self.finish(svc, 503, "Service Unavailable");
        }
        let Some(d) = self.direct.as_mut() else { return };
        let Some(Target { transport, addr }) = d.targets.get(d.current).copied() else { return };
        d.cseq += 1;
        let branch = format!("z9hG4bK{}", rng.hex(20));
        let (vhost, vport) = svc.advertised(transport);
        let p = &d.params;
        let ruri = format!("sip:{}", p.target);
        let Ok(uri) = ruri.parse::<Uri>() else {
            log::info!("MESSAGE from {}: bad target {}", p.identity.aor, p.target);
            return self.finish(svc, 416, "Unsupported URI Scheme");
        };
        let mut h = Headers::default();
        put(&mut h, HeaderName::Via, &via_value(transport, &vhost, vport, &branch));
        put(&mut h, HeaderName::MaxForwards, "70");
        put(&mut h, HeaderName::From, &p.identity.tagged_from(&d.from_tag));
        put(&mut h, HeaderName::To, &format!("<{ruri}>"));
        put(&mut h, HeaderName::CallId, &d.call_id);
        put(&mut h, HeaderName::CSeq, &format!("{} MESSAGE", d.cseq));
        if svc.proxy.is_some() {
            put(&mut h, HeaderName::Route, &d.hop.route());
        }
        if let Some((challenge, proxy, nc)) = auth {
            let cnonce = rng.hex(16);
            let answer = Answer { username: p.identity.username(), method: "MESSAGE", uri: &ruri, cnonce: &cnonce, nc };
            match digest::authorize(&challenge, Secret::from_sylkrtc(&p.identity.secret), &answer) {
                Ok(value) => {
                    let name = if proxy { HeaderName::ProxyAuthorization } else { HeaderName::Authorization };
                    put(&mut h, name, &value);
                }
                Err(e) => {
                    log::info!("MESSAGE from {}: {e}", p.identity.aor);
                    let (code, reason) =
                        if proxy { (407, "Proxy Authentication Required") } else { (401, "Unauthorized") };
                    return self.finish(svc, code, reason);
                }
            }
        }
        for (name, value) in &p.headers {
            h.push(HeaderName::parse(name), value.as_bytes().to_vec());
        }
        put(&mut h, HeaderName::UserAgent, &svc.user_agent(Some(&p.identity)));
        put(&mut h, HeaderName::ContentType, &p.content_type);
        let mut req = Request { method: Method::Message, uri, headers: h, body: p.body.clone() };
        let transport = fit_transport(&mut req, transport, &vhost, vport, &branch);
        let peer = Peer { transport, addr, conn: None };
        // RFC 5922 §4: a TLS next hop is verified (and named in SNI) by its domain.
        let name = d.hop.host.clone();
        self.branch = Some(branch.clone());
        svc.send_client(branch, req.to_bytes(), peer, &name, Owner::Msg(self.id), Kind::NonInvite, now);
    }

    /// A response to its MESSAGE: a final one is the result, except a first 401/407 out of
    /// dialog, answered with credentials (RFC 3261 §22.2, once unless the nonce was stale).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_response(
        &mut self,
        svc: &mut Services,
        branch: &str,
        resp: &Response,
        verdict: ResponseVerdict,
        now: Instant,
        rng: &mut Rng,
    ) {
        if verdict == ResponseVerdict::Absorb || resp.code < 200 || self.branch.as_deref() != Some(branch) {
            return;
        }
        self.branch = None;
        if resp.code == 503 && self.fail_over(svc, now, rng) {
            return;
        }
        if let (401 | 407, Some(d)) = (resp.code, self.direct.as_mut()) {
            let header = if resp.code == 407 { HeaderName::ProxyAuthenticate } else { HeaderName::WwwAuthenticate };
            if let Some((challenge, nc)) = d.auth.next(&header_values(&resp.headers, header)) {
                return self.send(svc, Some((challenge, resp.code == 407, nc)), now, rng);
            }
        }
        self.finish(svc, resp.code, &resp.reason);
    }

    /// Its transaction failed without a response (408 timeout, 503 transport error): the next
    /// target out of dialog (RFC 3263 §4.3), else that is the result.
    pub(super) fn on_failed(
        &mut self,
        svc: &mut Services,
        branch: &str,
        code: u16,
        reason: &str,
        now: Instant,
        rng: &mut Rng,
    ) {
        if self.branch.as_deref() == Some(branch) {
            self.branch = None;
            if !self.fail_over(svc, now, rng) {
                self.finish(svc, code, reason);
            }
        }
    }

    /// Reports the result once; the stack then forgets it.
    fn finish(&mut self, svc: &mut Services, code: u16, reason: &str) {
        if !self.gone {
            self.gone = true;
            self.branch = None;
            svc.event(SipEvent::MessageResult { id: self.id, code, reason: reason.into() });
        }
    }
}

/// RFC 3261 §18.1.1: a request over [`UDP_LIMIT`] bytes meant for UDP goes over TCP instead,
/// its Via saying so. Returns the transport to use.
fn fit_transport(req: &mut Request, transport: Transport, vhost: &str, vport: u16, branch: &str) -> Transport {
    if transport != Transport::Udp || req.to_bytes().len() <= UDP_LIMIT {
        return transport;
    }
    req.headers.set(HeaderName::Via, via_value(Transport::Tcp, vhost, vport, branch).into_bytes());
    Transport::Tcp
}

/// What the transaction user hears of the MESSAGE `req`.
pub(super) fn incoming_message(req: &Request) -> IncomingMessage {
    let from = req.headers.from_header().ok();
    let to = req.headers.to_header().ok();
    IncomingMessage {
        from_uri: from.as_ref().map(|f| without_scheme(&f.uri)).unwrap_or_default(),
        display_name: from.and_then(|f| f.display_name),
        to_uri: to.as_ref().map(|t| without_scheme(&t.uri)).unwrap_or_default(),
        call_id: req.headers.call_id().unwrap_or_default().to_string(),
        content_type: req.headers.get_str(&HeaderName::ContentType).unwrap_or_default().into_owned(),
        body: req.body.clone(),
        headers: req.headers.iter().map(|h| (h.name.canonical().to_string(), h.value_str().into_owned())).collect(),
    }
}

/// `user@host` of a SIP URI (no scheme, port or parameters); other URIs as written.
fn without_scheme(uri: &Uri) -> String {
    match uri {
        Uri::Sip(u) => match &u.user {
            Some(user) => format!("{user}@{}", u.host),
            None => u.host.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::SipMessage;
    use crate::sip::parse::parse_message;

    fn request(text: &str) -> Request {
        match parse_message(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn message(body: &str) -> Request {
        request(&format!(
            "MESSAGE sip:alice-1@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKa\r\n\
             Max-Forwards: 70\r\nFrom: \"Bob\" <sip:bob@example.com:5070;transport=tcp>;tag=1\r\n\
             To: <tel:+15551234>\r\nCall-ID: c1\r\nCSeq: 1 MESSAGE\r\nContent-Type: message/cpim\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    #[test]
    fn only_large_udp_requests_move_to_tcp() {
        let mut small = message("hi");
        assert_eq!(fit_transport(&mut small, Transport::Udp, "192.0.2.1", 5060, "z9hG4bKb"), Transport::Udp);
        assert!(small.headers.top_via().is_ok_and(|v| v.branch() == Some("z9hG4bKa")), "untouched");
        let mut large = message(&"x".repeat(UDP_LIMIT));
        assert_eq!(fit_transport(&mut large, Transport::Udp, "192.0.2.1", 5060, "z9hG4bKb"), Transport::Tcp);
        let via = large.headers.get_str(&HeaderName::Via).unwrap_or_default().into_owned();
        assert_eq!(via, "SIP/2.0/TCP 192.0.2.1:5060;rport;branch=z9hG4bKb");
        let mut tls = message(&"x".repeat(UDP_LIMIT));
        assert_eq!(fit_transport(&mut tls, Transport::Tls, "192.0.2.1", 5061, "z9hG4bKb"), Transport::Tls);
    }

    #[test]
    fn incoming_message_names_sender_and_recipient_without_scheme() {
        let m = incoming_message(&message("body"));
        assert_eq!(m.from_uri, "bob@example.com", "no port or parameters");
        assert_eq!(m.display_name.as_deref(), Some("Bob"));
        assert_eq!(m.to_uri, "tel:+15551234", "a non-SIP URI as written");
        assert_eq!(
            (m.call_id.as_str(), m.content_type.as_str(), m.body.as_slice()),
            ("c1", "message/cpim", &b"body"[..])
        );
        assert!(m.headers.iter().any(|(n, v)| n == "CSeq" && v == "1 MESSAGE"));
    }
}
