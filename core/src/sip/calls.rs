//! An outgoing call leg: the INVITE client session ([`UacInvite`]) wired to transactions and
//! dialogs through `Services` — building the INVITE (and its authenticated retry), the ACKs
//! (§17.1.1.3 for non-2xx, §13.2.2.4 for 2xx), CANCEL (§9.1) and BYE (§15.1). Requests inside
//! the answered dialog, either way, are `leg`'s. The SDP is the caller's: the media
//! layer builds it; this module only carries it.

use super::build::{cancel_key, contact_uri, non_2xx_ack, put, via_value, ALLOW};
use super::dialog::Dialog;
use super::digest::{self, Answer, Secret};
use super::events::SipEvent;
pub use super::events::{LegId, LegTx};
use super::identity::SipIdentity;
use super::invite::{CallProgress, UacAction, UacInvite};
use super::message::{HeaderName, Headers, Method, Request, Response};
use super::midcall::MidCall;
use super::reliable::{self, ReliableUac};
use super::rfc3263::{Resolution, Target};
use super::services::{DialogCtx, Owner, Services};
use super::target::{next_hop, ProxySpec};
use super::transaction::{Kind, ResponseVerdict};
use super::transport::Peer;
use super::uri::Uri;
use crate::rng::Rng;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Who calls whom, and what.
#[derive(Clone, Debug)]
pub struct CallParams {
    /// The caller's account.
    pub identity: SipIdentity,
    /// The callee, `user@domain` (no scheme).
    pub target: String,
    /// The SDP offer for the SIP side.
    pub sdp: Vec<u8>,
    /// Extra headers for the INVITE (sylkRTC `headers`).
    pub headers: Vec<(String, String)>,
}

/// One outgoing call.
pub(super) struct OutLeg {
    id: LegId,
    uac: UacInvite,
    params: CallParams,
    call_id: String,
    from_tag: String,
    cseq: u32,
    hop: ProxySpec,
    /// The next hop's targets (RFC 3263), in order, and the one in use.
    targets: Vec<Target>,
    current: usize,
    /// The INVITE as last sent, and its branch.
    invite: Option<(Request, String)>,
    /// Dialogs by remote tag (early ones from 1xx with a tag, confirmed from 2xx). Boxed: a
    /// B-tree node has room for 11, and a call has one or two (issue #14).
    dialogs: BTreeMap<String, Box<Dialog>>,
    /// Authorization for the next INVITE.
    auth: Option<(HeaderName, String)>,
    /// INFO, re-INVITE and UPDATE once answered.
    pub(super) mid: MidCall,
    /// The RSeqs of the reliable provisionals we PRACKed (RFC 3262 §4).
    reliable: ReliableUac,
    /// Over: the stack drops it.
    gone: bool,
}

impl OutLeg {
    /// A call for `params`, not started.
    pub(super) fn new(id: LegId, params: CallParams, svc: &Services, rng: &mut Rng) -> Self {
        let hop = next_hop(&params.target, svc.proxy.as_ref());
        Self {
            id,
            uac: UacInvite::new(),
            params,
            call_id: format!("{}@sylkgw", rng.hex(24)),
            from_tag: rng.hex(16),
            cseq: (rng.next_u64() % 10_000) as u32 + 1,
            hop,
            targets: Vec::new(),
            current: 0,
            invite: None,
            dialogs: BTreeMap::new(),
            auth: None,
            mid: MidCall::default(),
            reliable: ReliableUac::default(),
            gone: false,
        }
    }

    /// Sends the INVITE, or first resolves the next hop (RFC 3263).
    pub(super) fn start(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) {
        let hop = self.hop.clone();
        if let Some(result) = svc.resolve(Owner::Leg(self.id, LegTx::Invite), &hop, now, rng) {
            self.on_resolved(svc, result, now, rng);
        }
    }

    /// Whether the call is over (the stack forgets it).
    pub(super) fn is_gone(&self) -> bool {
        self.gone
    }

    /// The SIP Call-ID.
    pub(super) fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Every dialog, early or confirmed.
    pub(super) fn dialogs(&self) -> impl Iterator<Item = &Dialog> {
        self.dialogs.values().map(|d| &**d)
    }

    /// The To tag of the answered dialog, while the call is up.
    pub(super) fn confirmed_tag(&self) -> Option<String> {
        self.uac.confirmed_tag().map(String::from)
    }

    /// Hangs up: CANCEL before an answer (once a provisional came), BYE after.
    pub(super) fn hang_up(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) {
        if self.invite.is_none() {
            // Still resolving: nothing went out.
            self.gone = true;
            svc.event(SipEvent::Call {
                leg: self.id,
                progress: CallProgress::Ended { reason: "487 Request Terminated".into() },
            });
            return;
        }
        let actions = self.uac.hang_up();
        self.actions(svc, actions, None, now, rng);
    }

    /// The next hop's lookup ended: the INVITE goes to the first target (or the call ends 503).
    pub(super) fn on_resolved(&mut self, svc: &mut Services, result: Resolution, now: Instant, rng: &mut Rng) {
        match result {
            Ok(targets) => {
                self.targets = targets;
                self.current = 0;
                self.send_invite(svc, now, rng);
            }
            Err(_) => self.end(svc, "503 Service Unavailable"),
        }
    }

    /// RFC 3263 §4.3: the INVITE timed out, failed to connect or was answered 503 before any
    /// dialog formed: it goes to the next target as a new transaction; `false` when there is
    /// none.
    fn fail_over(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) -> bool {
        if !self.dialogs.is_empty() || self.current + 1 >= self.targets.len() {
            return false;
        }
        self.current += 1;
        let t = self.targets[self.current];
        log::info!("call {:?}: trying the next target, {} {}", self.id, t.transport, t.addr);
        self.send_invite(svc, now, rng);
        true
    }

    fn send_invite(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) {
        if self.gone {
            return;
        }
        let Some(Target { transport, addr }) = self.targets.get(self.current).copied() else { return };
        let (vhost, vport) = svc.advertised(transport);
        let branch = format!("z9hG4bK{}", rng.hex(20));
        self.cseq += 1;
        let p = &self.params;
        let mut h = Headers::default();
        put(&mut h, HeaderName::Via, &via_value(transport, &vhost, vport, &branch));
        put(&mut h, HeaderName::MaxForwards, "70");
        put(&mut h, HeaderName::From, &p.identity.tagged_from(&self.from_tag));
        put(&mut h, HeaderName::To, &format!("<sip:{}>", p.target));
        put(&mut h, HeaderName::CallId, &self.call_id);
        put(&mut h, HeaderName::CSeq, &format!("{} INVITE", self.cseq));
        if svc.proxy.is_some() {
            put(&mut h, HeaderName::Route, &self.hop.route());
        }
        put(
            &mut h,
            HeaderName::Contact,
            &format!("<{}>", contact_uri(&p.identity.contact_user, &vhost, vport, transport)),
        );
        if let Some((name, value)) = &self.auth {
            put(&mut h, name.clone(), value);
        }
        for (name, value) in &p.headers {
            h.push(HeaderName::parse(name), value.as_bytes().to_vec());
        }
        put(&mut h, HeaderName::UserAgent, &svc.user_agent(Some(&p.identity)));
        put(&mut h, HeaderName::Allow, ALLOW);
        // RFC 3262 §4: reliable provisionals are welcome (carriers send early media that way).
        put(&mut h, HeaderName::Supported, reliable::TAG);
        put(&mut h, HeaderName::ContentType, "application/sdp");
        let Ok(uri) = format!("sip:{}", p.target).parse() else {
            log::info!("call from {}: bad target {}", p.identity.aor, p.target);
            return self.end(svc, "416 Unsupported URI Scheme");
        };
        let req = Request { method: Method::Invite, uri, headers: h, body: p.sdp.clone() };
        let bytes = req.to_bytes();
        let peer = Peer { transport, addr, conn: None };
        let name = self.hop.host.clone();
        self.invite = Some((req, branch.clone()));
        svc.send_client(branch, bytes, peer, &name, Owner::Leg(self.id, LegTx::Invite), Kind::Invite, now);
    }

    /// A response to its INVITE, CANCEL or BYE (`tx`; INFO and re-INVITE are `leg`'s).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_response(
        &mut self,
        svc: &mut Services,
        tx: LegTx,
        branch: &str,
        resp: &Response,
        verdict: ResponseVerdict,
        now: Instant,
        rng: &mut Rng,
    ) {
        match tx {
            // The INVITE's 487 tells the outcome of a CANCEL; a PRACK's answer changes nothing.
            LegTx::Cancel | LegTx::Info | LegTx::Reinvite | LegTx::Prack => {}
            LegTx::Bye if resp.code >= 200 => {
                let actions = self.uac.on_bye_response();
                self.actions(svc, actions, None, now, rng);
            }
            LegTx::Bye => {}
            LegTx::Invite => {
                if matches!(verdict, ResponseVerdict::DeliverAndAck | ResponseVerdict::AckAgain) {
                    self.ack_non_2xx(svc, branch, resp, now);
                }
                if verdict == ResponseVerdict::AckAgain {
                    return;
                }
                if resp.code == 503 && self.fail_over(svc, now, rng) {
                    return;
                }
                let to_tag = resp.headers.to_header().ok().and_then(|t| t.tag().map(String::from));
                let sdp = (!resp.body.is_empty()).then(|| resp.body.clone());
                let challenge_header =
                    if resp.code == 407 { HeaderName::ProxyAuthenticate } else { HeaderName::WwwAuthenticate };
                let challenges = super::build::header_values(&resp.headers, challenge_header);
                // Remember the dialog of every tagged 1xx/2xx (§12.1.2), refreshing its target.
                if let (Some(tag), Some((invite, _))) = (&to_tag, &self.invite) {
                    if (101..300).contains(&resp.code) {
                        match self.dialogs.get_mut(tag) {
                            Some(d) if resp.code >= 200 => {
                                if let Ok(mut fresh) = Dialog::uac(invite, resp) {
                                    // Requests of the early dialog (PRACK) used CSeqs already.
                                    fresh.local_cseq = fresh.local_cseq.max(d.local_cseq);
                                    **d = fresh;
                                }
                            }
                            Some(_) => {}
                            None => {
                                if let Ok(d) = Dialog::uac(invite, resp) {
                                    self.dialogs.insert(tag.clone(), Box::new(d));
                                }
                            }
                        }
                    }
                }
                // RFC 3262 §4: a reliable provisional is PRACKed once; its retransmissions and
                // out-of-order ones are discarded.
                if let (Some(tag), Some(rseq), 101..=199) = (&to_tag, reliable::reliable_rseq(&resp.headers), resp.code)
                {
                    if !self.reliable.accept(tag, rseq) {
                        return;
                    }
                    self.send_prack(svc, tag, rseq, now, rng);
                }
                let actions = self.uac.on_response(resp.code, &resp.reason, to_tag.as_deref(), sdp, &challenges);
                self.actions(svc, actions, Some(resp), now, rng);
            }
        }
    }

    /// Its INVITE, CANCEL or BYE failed without a response.
    pub(super) fn on_failed(
        &mut self,
        svc: &mut Services,
        tx: LegTx,
        code: u16,
        reason: &str,
        now: Instant,
        rng: &mut Rng,
    ) {
        if tx == LegTx::Invite && self.fail_over(svc, now, rng) {
            return;
        }
        let actions = match tx {
            LegTx::Invite => self.uac.on_response(code, reason, None, None, &[]),
            LegTx::Bye => self.uac.on_bye_response(),
            LegTx::Cancel | LegTx::Info | LegTx::Reinvite | LegTx::Prack => Vec::new(),
        };
        self.actions(svc, actions, None, now, rng);
    }

    /// The peer's BYE was answered: the call ends.
    pub(super) fn on_remote_bye(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) {
        let actions = self.uac.on_remote_bye();
        self.actions(svc, actions, None, now, rng);
    }

    fn actions(
        &mut self,
        svc: &mut Services,
        actions: Vec<UacAction>,
        resp: Option<&Response>,
        now: Instant,
        rng: &mut Rng,
    ) {
        for action in actions {
            if let UacAction::Report(progress) = action {
                let ended = matches!(progress, CallProgress::Ended { .. });
                svc.event(SipEvent::Call { leg: self.id, progress });
                if ended && !self.gone && self.uac.is_ended() {
                    self.gone = true;
                }
                continue;
            }
            if self.gone {
                continue;
            }
            match action {
                UacAction::Report(_) => {}
                UacAction::Authenticate { challenge, proxy, nc } => {
                    let identity = &self.params.identity;
                    let uri = format!("sip:{}", self.params.target);
                    let cnonce = rng.hex(16);
                    let answer =
                        Answer { username: identity.username(), method: "INVITE", uri: &uri, cnonce: &cnonce, nc };
                    match digest::authorize(&challenge, Secret::from_sylkrtc(&identity.secret), &answer) {
                        Ok(value) => {
                            let name = if proxy { HeaderName::ProxyAuthorization } else { HeaderName::Authorization };
                            self.auth = Some((name, value));
                            self.send_invite(svc, now, rng);
                        }
                        Err(e) => {
                            log::info!("call from {}: {e}", identity.aor);
                            let code = if proxy { "407 Proxy Authentication Required" } else { "401 Unauthorized" };
                            self.end(svc, code);
                        }
                    }
                }
                UacAction::Cancel => self.send_cancel(svc, now),
                UacAction::Ack { to_tag } => self.ack_2xx(svc, &to_tag, resp, now, rng),
                UacAction::Bye { to_tag } => self.send_bye(svc, &to_tag, now, rng),
            }
        }
    }

    /// Over, without an event (the caller reports it).
    pub(super) fn end_silently(&mut self) {
        self.gone = true;
    }

    /// Ends the call with `reason` (no request goes out).
    pub(super) fn end(&mut self, svc: &mut Services, reason: &str) {
        if !self.gone {
            self.gone = true;
            svc.event(SipEvent::Call { leg: self.id, progress: CallProgress::Ended { reason: reason.into() } });
        }
    }

    /// §17.1.1.3: the ACK for a non-2xx final response, built by the INVITE transaction: the
    /// INVITE's Request-URI, top Via, From, Call-ID and Route; the response's To; CSeq ACK.
    fn ack_non_2xx(&mut self, svc: &mut Services, branch: &str, resp: &Response, now: Instant) {
        let Some((invite, _)) = &self.invite else { return };
        let Some(peer) = svc.client_peer(branch) else { return };
        let ack = non_2xx_ack(invite, resp);
        svc.transmit(peer, ack.to_bytes(), now);
    }

    /// Where requests inside the dialog go: the next hop of the INVITE when there is a route
    /// (outbound proxy or Record-Route), else the remote target when it is an address.
    fn dialog_peer(&self, svc: &Services, dialog: &Dialog) -> Option<Peer> {
        let Target { transport, addr: hop } = *self.targets.get(self.current)?;
        if svc.proxy.is_some() || !dialog.route_set.is_empty() {
            return Some(Peer { transport, addr: hop, conn: None });
        }
        match &dialog.remote_target {
            Uri::Sip(u) => {
                let ip: Option<IpAddr> = u.host.to_string().trim_start_matches('[').trim_end_matches(']').parse().ok();
                let port = u.port.unwrap_or(transport.default_port());
                Some(Peer { transport, addr: ip.map_or(hop, |ip| SocketAddr::new(ip, port)), conn: None })
            }
            _ => Some(Peer { transport, addr: hop, conn: None }),
        }
    }

    /// §13.2.2.4: the ACK for a 2xx, built by the UA core in the dialog (a new branch, the
    /// INVITE's CSeq number).
    fn ack_2xx(&mut self, svc: &mut Services, to_tag: &str, resp: Option<&Response>, now: Instant, rng: &mut Rng) {
        let Some(mut dialog) = self.dialogs.get(to_tag).cloned() else { return };
        if let Some(r) = resp {
            dialog.refresh_target(&r.headers);
        }
        let Some(peer) = self.dialog_peer(svc, &dialog) else { return };
        let (vhost, vport) = svc.advertised(peer.transport);
        let via = via_value(peer.transport, &vhost, vport, &format!("z9hG4bK{}", rng.hex(20)));
        let ack = dialog.request(Method::Ack, &via, None, Some(self.cseq));
        svc.transmit(peer, ack.to_bytes(), now);
    }

    /// §9.1: CANCEL with the INVITE's Request-URI, top Via (same branch), From, To, Call-ID
    /// and Route, CSeq CANCEL; its own non-INVITE transaction.
    fn send_cancel(&mut self, svc: &mut Services, now: Instant) {
        let Some((invite, branch)) = &self.invite else { return };
        let Some(peer) = svc.client_peer(branch) else { return };
        let mut h = Headers::default();
        for name in [HeaderName::Via, HeaderName::MaxForwards, HeaderName::From, HeaderName::To, HeaderName::CallId] {
            if let Some(v) = invite.headers.get(&name) {
                h.push(name, v.value.clone());
            }
        }
        put(&mut h, HeaderName::CSeq, &format!("{} CANCEL", self.cseq));
        for r in invite.headers.get_all(&HeaderName::Route) {
            h.push(HeaderName::Route, r.value.clone());
        }
        let cancel = Request { method: Method::Cancel, uri: invite.uri.clone(), headers: h, body: Vec::new() };
        let key = cancel_key(branch);
        let owner = Owner::Leg(self.id, LegTx::Cancel);
        svc.send_client(key, cancel.to_bytes(), peer, &self.hop.host, owner, Kind::NonInvite, now);
    }

    /// RFC 3262 §7.2: PRACK in the early dialog with the peer's tag `to_tag` (its next CSeq),
    /// `RAck: <rseq> <INVITE CSeq> INVITE`; its own non-INVITE transaction.
    fn send_prack(&mut self, svc: &mut Services, to_tag: &str, rseq: u32, now: Instant, rng: &mut Rng) {
        let Some(mut dialog) = self.dialogs.get(to_tag).cloned() else { return };
        let Some(peer) = self.dialog_peer(svc, &dialog) else { return };
        let (vhost, vport) = svc.advertised(peer.transport);
        let branch = format!("z9hG4bK{}", rng.hex(20));
        let via = via_value(peer.transport, &vhost, vport, &branch);
        let mut prack = dialog.request(Method::Prack, &via, None, None);
        put(&mut prack.headers, HeaderName::RAck, &format!("{rseq} {} INVITE", self.cseq));
        put(&mut prack.headers, HeaderName::UserAgent, &svc.user_agent(Some(&self.params.identity)));
        self.dialogs.insert(to_tag.to_string(), dialog);
        let owner = Owner::Leg(self.id, LegTx::Prack);
        svc.send_client(branch, prack.to_bytes(), peer, &self.hop.host, owner, Kind::NonInvite, now);
    }

    /// Sends BYE in the dialog with the peer's tag `to_tag`.
    pub(super) fn send_bye(&mut self, svc: &mut Services, to_tag: &str, now: Instant, rng: &mut Rng) {
        let Some(mut dialog) = self.dialogs.get(to_tag).cloned() else { return };
        let Some(peer) = self.dialog_peer(svc, &dialog) else { return };
        let (vhost, vport) = svc.advertised(peer.transport);
        let branch = format!("z9hG4bK{}", rng.hex(20));
        let via = via_value(peer.transport, &vhost, vport, &branch);
        let bye = dialog.request(Method::Bye, &via, None, None);
        self.dialogs.insert(to_tag.to_string(), dialog);
        let owner = Owner::Leg(self.id, LegTx::Bye);
        svc.send_client(branch, bye.to_bytes(), peer, &self.hop.host, owner, Kind::NonInvite, now);
    }

    /// Whether `req` is in one of this call's dialogs: the peer's tag, and whether that dialog
    /// is the answered one.
    pub(super) fn of_request(&self, req: &Request) -> Option<(String, bool)> {
        let to_tag = req.headers.to_header().ok()?.tag()?.to_string();
        let from_tag = req.headers.from_header().ok()?.tag().unwrap_or_default().to_string();
        let call_id = req.headers.call_id().ok()?;
        if self.call_id != call_id || self.from_tag != to_tag || !self.dialogs.contains_key(&from_tag) {
            return None;
        }
        let established = self.uac.confirmed_tag() == Some(from_tag.as_str());
        Some((from_tag, established))
    }

    /// The dialog with the peer's tag `remote_tag`.
    pub(super) fn dialog_mut(&mut self, remote_tag: &str) -> Option<&mut Dialog> {
        self.dialogs.get_mut(remote_tag).map(|d| &mut **d)
    }

    /// The answered dialog, and what requests in it need.
    pub(super) fn dialog_ctx(&self, svc: &Services) -> Option<DialogCtx> {
        let dialog = Dialog::clone(self.dialogs.get(self.uac.confirmed_tag()?)?);
        let peer = self.dialog_peer(svc, &dialog)?;
        let identity = &self.params.identity;
        let (vhost, vport) = svc.advertised(self.hop.transport);
        Some(DialogCtx {
            dialog,
            peer,
            name: self.hop.host.clone(),
            contact: contact_uri(&identity.contact_user, &vhost, vport, self.hop.transport),
            user_agent: svc.user_agent(Some(identity)),
            identity: Some(identity.clone()),
        })
    }

    /// Stores a dialog back (by its remote tag).
    pub(super) fn store_dialog(&mut self, dialog: Dialog) {
        self.dialogs.insert(dialog.id.remote_tag.clone(), Box::new(dialog));
    }

    /// Our Contact URI in this call.
    pub(super) fn contact(&self, svc: &Services) -> String {
        let (vhost, vport) = svc.advertised(self.hop.transport);
        contact_uri(&self.params.identity.contact_user, &vhost, vport, self.hop.transport)
    }
}
