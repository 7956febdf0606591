//! Outgoing calls in the SIP stack: the INVITE client session ([`super::invite::UacInvite`])
//! wired to transactions and dialogs — building the INVITE (and its authenticated retry), the
//! ACKs (§17.1.1.3 for non-2xx, §13.2.2.4 for 2xx), CANCEL (§9.1) and BYE (§15.1). Requests
//! inside the answered dialog, either way, are [`super::indialog`]'s. The SDP is the caller's:
//! the media layer builds it; this module only carries it.

use super::dialog::Dialog;
use super::digest::{self, Answer, Secret};
use super::indialog::DialogCtx;
use super::invite::{CallProgress, UacAction, UacInvite};
use super::message::{HeaderName, Headers, Method, Request, Response};
use super::midcall::MidCall;
use super::stack::{cancel_key, put, via_value, Owner, SipEvent, SipOutput, SipStack, ALLOW};
use super::target::{ProxySpec, Transport};
use super::transaction::{Kind, ResponseVerdict};
use super::transport::Peer;
use crate::rng::Rng;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// A call leg's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LegId(pub u64);

/// Which of a leg's requests a client transaction carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegTx {
    /// The INVITE (or its authenticated retry).
    Invite,
    /// The CANCEL.
    Cancel,
    /// A BYE.
    Bye,
    /// An INFO in the dialog.
    Info,
    /// A re-INVITE in the dialog.
    Reinvite,
}

/// Who calls whom, and what.
#[derive(Clone, Debug)]
pub struct CallParams {
    /// The caller's account.
    pub identity: super::stack::SipIdentity,
    /// The callee, `user@domain` (no scheme).
    pub target: String,
    /// The SDP offer for the SIP side.
    pub sdp: Vec<u8>,
    /// Extra headers for the INVITE (sylkRTC `headers`).
    pub headers: Vec<(String, String)>,
}

/// One outgoing call.
pub(super) struct LegEntry {
    uac: UacInvite,
    params: CallParams,
    call_id: String,
    from_tag: String,
    cseq: u32,
    hop: ProxySpec,
    resolved: Option<SocketAddr>,
    /// The INVITE as last sent, and its branch.
    invite: Option<(Request, String)>,
    /// Dialogs by remote tag (early ones from 1xx with a tag, confirmed from 2xx).
    dialogs: BTreeMap<String, Dialog>,
    /// Authorization for the next INVITE.
    auth: Option<(HeaderName, String)>,
    /// INFO, re-INVITE and UPDATE once answered.
    pub(super) mid: MidCall,
}

impl LegEntry {
    /// The To tag of the answered dialog, while the call is up.
    pub(super) fn confirmed_tag(&self) -> Option<String> {
        self.uac.confirmed_tag().map(String::from)
    }
}

impl SipStack {
    /// Places a call; progress arrives as [`SipEvent::Call`].
    pub fn invite(&mut self, params: CallParams, now: Instant, rng: &mut Rng) -> LegId {
        let id = LegId(self.next_leg);
        self.next_leg += 1;
        let domain = params.target.split_once('@').map_or(params.target.as_str(), |(_, d)| d).to_string();
        let hop = self.proxy.clone().unwrap_or_else(|| {
            ProxySpec::parse(&domain).unwrap_or(ProxySpec {
                host: domain.clone(),
                port: None,
                transport: Transport::Udp,
            })
        });
        let resolved = hop.ip().map(|ip| SocketAddr::new(ip, hop.port_or_default()));
        let entry = LegEntry {
            uac: UacInvite::new(),
            params,
            call_id: format!("{}@sylkgw", rng.hex(24)),
            from_tag: rng.hex(16),
            cseq: (rng.next_u64() % 10_000) as u32 + 1,
            hop,
            resolved,
            invite: None,
            dialogs: BTreeMap::new(),
            auth: None,
            mid: MidCall::default(),
        };
        let host = entry.hop.host.clone();
        self.legs.insert(id, entry);
        if resolved.is_some() {
            self.send_invite(id, now, rng);
        } else {
            let query = self.next_query;
            self.next_query += 1;
            self.queries.insert(query, Owner::Leg(id, LegTx::Invite));
            self.out.push_back(SipOutput::Resolve { query, name: host });
        }
        id
    }

    /// Hangs up: CANCEL before an answer (once a provisional came), BYE after.
    pub fn hang_up(&mut self, id: LegId, now: Instant, rng: &mut Rng) {
        self.abandon_reoffer(id, now);
        if self.inbound_hang_up(id, now, rng) {
            return;
        }
        let Some(leg) = self.legs.get_mut(&id) else { return };
        if leg.invite.is_none() {
            // Still resolving: nothing went out.
            self.legs.remove(&id);
            self.events.push_back(SipEvent::Call {
                leg: id,
                progress: CallProgress::Ended { reason: "487 Request Terminated".into() },
            });
            return;
        }
        let actions = leg.uac.hang_up();
        self.leg_actions(id, actions, None, now, rng);
    }

    /// Number of call legs alive (outgoing and incoming).
    pub fn leg_count(&self) -> usize {
        self.legs.len() + self.inbound.len()
    }

    /// Every dialog (early or confirmed) of every call leg, outgoing and incoming, with its leg:
    /// the stateful fuzz target checks that no two share an id.
    #[doc(hidden)]
    pub fn dialog_ids_for_test(&self) -> Vec<(LegId, super::dialog::DialogId)> {
        let out = self.legs.iter().flat_map(|(id, leg)| leg.dialogs.values().map(|d| (*id, d.id.clone())));
        out.chain(self.inbound_dialog_ids_for_test()).collect()
    }

    /// The Call-ID of outgoing leg `id`.
    pub fn leg_call_id(&self, id: LegId) -> Option<String> {
        self.legs.get(&id).map(|l| l.call_id.clone())
    }

    pub(super) fn leg_resolved(&mut self, id: LegId, result: Result<Vec<IpAddr>, String>, now: Instant, rng: &mut Rng) {
        let Some(leg) = self.legs.get_mut(&id) else { return };
        match result.ok().and_then(|ips| ips.first().copied()) {
            Some(ip) => {
                leg.resolved = Some(SocketAddr::new(ip, leg.hop.port_or_default()));
                self.send_invite(id, now, rng);
            }
            None => self.end_leg(id, "503 Service Unavailable"),
        }
    }

    fn send_invite(&mut self, id: LegId, now: Instant, rng: &mut Rng) {
        let proxy = self.proxy.is_some();
        let Some(leg) = self.legs.get(&id) else { return };
        let transport = leg.hop.transport;
        let (vhost, vport) = self.advertised(transport);
        let branch = format!("z9hG4bK{}", rng.hex(20));
        let Some(leg) = self.legs.get_mut(&id) else { return };
        leg.cseq += 1;
        let p = &leg.params;
        let mut h = Headers::default();
        put(&mut h, HeaderName::Via, &via_value(transport, &vhost, vport, &branch));
        put(&mut h, HeaderName::MaxForwards, "70");
        let from = p.identity.tagged_from(&leg.from_tag);
        put(&mut h, HeaderName::From, &from);
        put(&mut h, HeaderName::To, &format!("<sip:{}>", p.target));
        put(&mut h, HeaderName::CallId, &leg.call_id);
        put(&mut h, HeaderName::CSeq, &format!("{} INVITE", leg.cseq));
        if proxy {
            put(&mut h, HeaderName::Route, &leg.hop.route());
        }
        put(
            &mut h,
            HeaderName::Contact,
            &format!("<{}>", contact_uri(&p.identity.contact_user, &vhost, vport, transport)),
        );
        if let Some((name, value)) = &leg.auth {
            put(&mut h, name.clone(), value);
        }
        for (name, value) in &p.headers {
            h.push(HeaderName::parse(name), value.as_bytes().to_vec());
        }
        let ua = p.identity.user_agent.clone().unwrap_or_else(|| self.cfg.user_agent.clone());
        put(&mut h, HeaderName::UserAgent, &ua);
        put(&mut h, HeaderName::Allow, ALLOW);
        put(&mut h, HeaderName::ContentType, "application/sdp");
        let Ok(uri) = format!("sip:{}", p.target).parse() else {
            log::info!("call from {}: bad target {}", p.identity.aor, p.target);
            return self.end_leg(id, "416 Unsupported URI Scheme");
        };
        let req = Request { method: Method::Invite, uri, headers: h, body: p.sdp.clone() };
        let bytes = req.to_bytes();
        let Some(addr) = leg.resolved else { return };
        let peer = Peer { transport, addr, conn: None };
        let name = leg.hop.host.clone();
        leg.invite = Some((req, branch.clone()));
        self.send_client(branch, bytes, peer, &name, Owner::Leg(id, LegTx::Invite), Kind::Invite, now);
    }

    /// A response matched one of the leg's client transactions.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn leg_response(
        &mut self,
        id: LegId,
        tx: LegTx,
        branch: &str,
        resp: &Response,
        verdict: ResponseVerdict,
        now: Instant,
        rng: &mut Rng,
    ) {
        if verdict == ResponseVerdict::Absorb {
            return;
        }
        match tx {
            LegTx::Info => self.info_response(id, branch, resp, now, rng),
            LegTx::Reinvite => self.reinvite_response(id, branch, resp, verdict, now, rng),
            LegTx::Cancel => {} // the INVITE's 487 tells the outcome
            LegTx::Bye if resp.code >= 200 => {
                let actions = self.legs.get_mut(&id).map(|l| l.uac.on_bye_response()).unwrap_or_default();
                self.leg_actions(id, actions, None, now, rng);
            }
            LegTx::Bye => {}
            LegTx::Invite => {
                if matches!(verdict, ResponseVerdict::DeliverAndAck | ResponseVerdict::AckAgain) {
                    self.ack_non_2xx(id, branch, resp, now);
                }
                if verdict == ResponseVerdict::AckAgain {
                    return;
                }
                let to_tag = resp.headers.to_header().ok().and_then(|t| t.tag().map(String::from));
                let sdp = (!resp.body.is_empty()).then(|| resp.body.clone());
                let challenge_header =
                    if resp.code == 407 { HeaderName::ProxyAuthenticate } else { HeaderName::WwwAuthenticate };
                let challenges = super::stack::header_values(&resp.headers, challenge_header);
                let Some(leg) = self.legs.get_mut(&id) else { return };
                // Remember the dialog of every tagged 1xx/2xx (§12.1.2), refreshing its target.
                if let (Some(tag), Some((invite, _))) = (&to_tag, &leg.invite) {
                    if (101..300).contains(&resp.code) {
                        match leg.dialogs.get_mut(tag) {
                            Some(d) if resp.code >= 200 => {
                                if let Ok(fresh) = Dialog::uac(invite, resp) {
                                    *d = fresh;
                                }
                            }
                            Some(_) => {}
                            None => {
                                if let Ok(d) = Dialog::uac(invite, resp) {
                                    leg.dialogs.insert(tag.clone(), d);
                                }
                            }
                        }
                    }
                }
                let actions = leg.uac.on_response(resp.code, &resp.reason, to_tag.as_deref(), sdp, &challenges);
                self.leg_actions(id, actions, Some(resp), now, rng);
            }
        }
    }

    /// A client transaction (`branch`) of the leg failed without a response.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn leg_failed(
        &mut self,
        id: LegId,
        tx: LegTx,
        branch: &str,
        code: u16,
        reason: &str,
        now: Instant,
        rng: &mut Rng,
    ) {
        match tx {
            LegTx::Info => return self.info_finished(id, branch, now, rng),
            LegTx::Reinvite => return self.reinvite_failed(id, branch, code, reason, now, rng),
            _ => {}
        }
        let Some(leg) = self.legs.get_mut(&id) else { return };
        let actions = match tx {
            LegTx::Invite => leg.uac.on_response(code, reason, None, None, &[]),
            LegTx::Bye => leg.uac.on_bye_response(),
            LegTx::Cancel | LegTx::Info | LegTx::Reinvite => Vec::new(),
        };
        self.leg_actions(id, actions, None, now, rng);
    }

    fn leg_actions(
        &mut self,
        id: LegId,
        actions: Vec<UacAction>,
        resp: Option<&Response>,
        now: Instant,
        rng: &mut Rng,
    ) {
        for action in actions {
            match action {
                UacAction::Report(progress) => {
                    let ended = matches!(progress, CallProgress::Ended { .. });
                    self.events.push_back(SipEvent::Call { leg: id, progress });
                    if ended && self.legs.get(&id).is_some_and(|l| l.uac.is_ended()) {
                        self.legs.remove(&id);
                    }
                }
                UacAction::Authenticate { challenge, proxy, nc } => {
                    let Some(leg) = self.legs.get_mut(&id) else { continue };
                    let username =
                        leg.params.identity.aor.split_once('@').map_or(leg.params.identity.aor.as_str(), |(u, _)| u);
                    let uri = format!("sip:{}", leg.params.target);
                    let cnonce = rng.hex(16);
                    let answer = Answer { username, method: "INVITE", uri: &uri, cnonce: &cnonce, nc };
                    match digest::authorize(&challenge, Secret::from_sylkrtc(&leg.params.identity.secret), &answer) {
                        Ok(value) => {
                            let name = if proxy { HeaderName::ProxyAuthorization } else { HeaderName::Authorization };
                            leg.auth = Some((name, value));
                            self.send_invite(id, now, rng);
                        }
                        Err(e) => {
                            log::info!("call from {}: {e}", leg.params.identity.aor);
                            let code = if proxy { "407 Proxy Authentication Required" } else { "401 Unauthorized" };
                            self.end_leg(id, code);
                        }
                    }
                }
                UacAction::Cancel => self.send_cancel(id, now),
                UacAction::Ack { to_tag } => self.ack_2xx(id, &to_tag, resp, now, rng),
                UacAction::Bye { to_tag } => self.send_bye(id, &to_tag, now, rng),
            }
        }
    }

    fn end_leg(&mut self, id: LegId, reason: &str) {
        if self.legs.remove(&id).is_some() {
            self.events.push_back(SipEvent::Call { leg: id, progress: CallProgress::Ended { reason: reason.into() } });
        }
    }

    /// §17.1.1.3: the ACK for a non-2xx final response, built by the INVITE transaction: the
    /// INVITE's Request-URI, top Via, From, Call-ID and Route; the response's To; CSeq ACK.
    fn ack_non_2xx(&mut self, id: LegId, branch: &str, resp: &Response, now: Instant) {
        let Some(leg) = self.legs.get(&id) else { return };
        let Some((invite, _)) = &leg.invite else { return };
        let Some(c) = self.clients.get(branch) else { return };
        let peer = c.peer;
        let ack = super::indialog::non_2xx_ack(invite, resp);
        self.transmit(peer, ack.to_bytes(), now);
    }

    /// Where requests inside the dialog go: the next hop of the INVITE when there is a route
    /// (outbound proxy or Record-Route), else the remote target when it is an address.
    fn dialog_peer(&self, leg: &LegEntry, dialog: &Dialog) -> Option<Peer> {
        let hop = leg.resolved?;
        let transport = leg.hop.transport;
        if self.proxy.is_some() || !dialog.route_set.is_empty() {
            return Some(Peer { transport, addr: hop, conn: None });
        }
        match &dialog.remote_target {
            super::uri::Uri::Sip(u) => {
                let ip: Option<IpAddr> = u.host.to_string().trim_start_matches('[').trim_end_matches(']').parse().ok();
                let port = u.port.unwrap_or(transport.default_port());
                Some(Peer { transport, addr: ip.map_or(hop, |ip| SocketAddr::new(ip, port)), conn: None })
            }
            _ => Some(Peer { transport, addr: hop, conn: None }),
        }
    }

    /// §13.2.2.4: the ACK for a 2xx, built by the UA core in the dialog (a new branch, the
    /// INVITE's CSeq number).
    fn ack_2xx(&mut self, id: LegId, to_tag: &str, resp: Option<&Response>, now: Instant, rng: &mut Rng) {
        let Some(leg) = self.legs.get(&id) else { return };
        let Some(mut dialog) = leg.dialogs.get(to_tag).cloned() else { return };
        if let Some(r) = resp {
            dialog.refresh_target(&r.headers);
        }
        let Some(peer) = self.dialog_peer(leg, &dialog) else { return };
        let cseq = leg.cseq;
        let (vhost, vport) = self.advertised(peer.transport);
        let via = via_value(peer.transport, &vhost, vport, &format!("z9hG4bK{}", rng.hex(20)));
        let ack = dialog.request(Method::Ack, &via, None, Some(cseq));
        self.transmit(peer, ack.to_bytes(), now);
    }

    /// §9.1: CANCEL with the INVITE's Request-URI, top Via (same branch), From, To, Call-ID
    /// and Route, CSeq CANCEL; its own non-INVITE transaction.
    fn send_cancel(&mut self, id: LegId, now: Instant) {
        let Some(leg) = self.legs.get(&id) else { return };
        let Some((invite, branch)) = &leg.invite else { return };
        let Some(c) = self.clients.get(branch) else { return };
        let peer = c.peer;
        let mut h = Headers::default();
        for name in [HeaderName::Via, HeaderName::MaxForwards, HeaderName::From, HeaderName::To, HeaderName::CallId] {
            if let Some(v) = invite.headers.get(&name) {
                h.push(name, v.value.clone());
            }
        }
        put(&mut h, HeaderName::CSeq, &format!("{} CANCEL", leg.cseq));
        for r in invite.headers.get_all(&HeaderName::Route) {
            h.push(HeaderName::Route, r.value.clone());
        }
        let cancel = Request { method: Method::Cancel, uri: invite.uri.clone(), headers: h, body: Vec::new() };
        let key = cancel_key(branch);
        let name = leg.hop.host.clone();
        self.send_client(key, cancel.to_bytes(), peer, &name, Owner::Leg(id, LegTx::Cancel), Kind::NonInvite, now);
    }

    pub(super) fn send_bye(&mut self, id: LegId, to_tag: &str, now: Instant, rng: &mut Rng) {
        let Some(leg) = self.legs.get(&id) else { return };
        let Some(mut dialog) = leg.dialogs.get(to_tag).cloned() else { return };
        let Some(peer) = self.dialog_peer(leg, &dialog) else { return };
        let (vhost, vport) = self.advertised(peer.transport);
        let branch = format!("z9hG4bK{}", rng.hex(20));
        let via = via_value(peer.transport, &vhost, vport, &branch);
        let bye = dialog.request(Method::Bye, &via, None, None);
        let name = leg.hop.host.clone();
        if let Some(leg) = self.legs.get_mut(&id) {
            leg.dialogs.insert(to_tag.to_string(), dialog);
        }
        self.send_client(branch, bye.to_bytes(), peer, &name, Owner::Leg(id, LegTx::Bye), Kind::NonInvite, now);
    }

    /// The outgoing leg whose dialog `req` is in: the leg, the peer's tag, and whether that
    /// dialog is the answered one.
    pub(super) fn leg_of_request(&self, req: &Request) -> Option<(LegId, String, bool)> {
        let to_tag = req.headers.to_header().ok()?.tag()?.to_string();
        let from_tag = req.headers.from_header().ok()?.tag().unwrap_or_default().to_string();
        let call_id = req.headers.call_id().ok()?;
        let (id, leg) = self.legs.iter().find(|(_, l)| l.call_id == call_id && l.from_tag == to_tag)?;
        if !leg.dialogs.contains_key(&from_tag) {
            return None;
        }
        let established = leg.uac.confirmed_tag() == Some(from_tag.as_str());
        Some((*id, from_tag, established))
    }

    /// The leg's dialog with the peer's tag `remote_tag`.
    pub(super) fn leg_dialog_mut(&mut self, id: LegId, remote_tag: &str) -> Option<&mut Dialog> {
        self.legs.get_mut(&id)?.dialogs.get_mut(remote_tag)
    }

    /// The answered dialog of an outgoing leg, and what requests in it need.
    pub(super) fn leg_dialog_ctx(&self, id: LegId) -> Option<DialogCtx> {
        let leg = self.legs.get(&id)?;
        let dialog = leg.dialogs.get(leg.uac.confirmed_tag()?)?.clone();
        let peer = self.dialog_peer(leg, &dialog)?;
        let identity = &leg.params.identity;
        let (vhost, vport) = self.advertised(leg.hop.transport);
        Some(DialogCtx {
            dialog,
            peer,
            name: leg.hop.host.clone(),
            contact: contact_uri(&identity.contact_user, &vhost, vport, leg.hop.transport),
            user_agent: identity.user_agent.clone().unwrap_or_else(|| self.cfg.user_agent.clone()),
            identity: Some(identity.clone()),
        })
    }

    /// Stores an outgoing leg's dialog back (by its remote tag).
    pub(super) fn leg_store_dialog(&mut self, id: LegId, dialog: Dialog) {
        if let Some(leg) = self.legs.get_mut(&id) {
            leg.dialogs.insert(dialog.id.remote_tag.clone(), dialog);
        }
    }

    /// Our Contact URI in the leg (either direction).
    pub(super) fn contact_of(&self, id: LegId) -> Option<String> {
        if let Some(leg) = self.legs.get(&id) {
            let (vhost, vport) = self.advertised(leg.hop.transport);
            return Some(contact_uri(&leg.params.identity.contact_user, &vhost, vport, leg.hop.transport));
        }
        self.inbound.get(&id).map(|l| l.contact.clone())
    }

    /// After answering an in-dialog request: a BYE ends the call.
    pub(super) fn leg_after_request(&mut self, req: &Request, now: Instant, rng: &mut Rng) {
        if req.method != Method::Bye {
            return;
        }
        if self.inbound_after_bye(req, now) {
            return;
        }
        let Ok(call_id) = req.headers.call_id() else { return };
        let id = self.legs.iter().find(|(_, l)| l.call_id == call_id).map(|(id, _)| *id);
        if let Some(id) = id {
            let actions = self.legs.get_mut(&id).map(|l| l.uac.on_remote_bye()).unwrap_or_default();
            self.leg_actions(id, actions, None, now, rng);
        }
    }
}

/// Our Contact URI: `sip:<user>@host:port`, with `;transport=` unless UDP.
fn contact_uri(user: &str, host: &str, port: u16, transport: Transport) -> String {
    let mut contact = format!("sip:{user}@{host}:{port}");
    if transport != Transport::Udp {
        contact.push_str(&format!(";transport={}", transport.param()));
    }
    contact
}
