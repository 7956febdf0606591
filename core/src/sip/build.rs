//! Small pieces for building the messages we send and reading the ones we get: header helpers,
//! our Via and Contact, the ACK of a non-2xx final response, and where a response goes.

use super::message::{HeaderName, Headers, Method, Request, Response};
use super::target::Transport;
use super::transport::Peer;
use std::net::SocketAddr;

/// Methods we answer; sent in `Allow` (RFC 3261 §20.5).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, MESSAGE";

/// Our Via value: `SIP/2.0/<T> host:port;rport;branch=…` (RFC 3581 `rport` always).
pub(super) fn via_value(transport: Transport, host: &str, port: u16, branch: &str) -> String {
    format!("SIP/2.0/{} {host}:{port};rport;branch={branch}", transport.via_token())
}

/// Our Contact URI: `sip:<user>@host:port`, with `;transport=` unless UDP.
pub(super) fn contact_uri(user: &str, host: &str, port: u16, transport: Transport) -> String {
    let mut contact = format!("sip:{user}@{host}:{port}");
    if transport != Transport::Udp {
        contact.push_str(&format!(";transport={}", transport.param()));
    }
    contact
}

/// The client-transaction key of the CANCEL for the INVITE with `branch`.
pub(super) fn cancel_key(branch: &str) -> String {
    format!("{branch}:CANCEL")
}

pub(super) fn put(h: &mut Headers, name: HeaderName, value: &str) {
    h.push(name, value.as_bytes().to_vec());
}

pub(super) fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

pub(super) fn header_values(h: &Headers, name: HeaderName) -> Vec<String> {
    h.get_all(&name).map(|v| v.value_str().into_owned()).collect()
}

pub(super) fn first_value(h: &Headers, name: HeaderName) -> Option<String> {
    h.get(&name).map(|v| v.value_str().into_owned())
}

/// The option tags of the request's Require headers we do not support (§8.2.2.3): all but
/// `100rel` in an INVITE (RFC 3262).
pub(super) fn unsupported_required(req: &Request) -> Vec<String> {
    header_values(&req.headers, HeaderName::Require)
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .filter(|t| !(req.method == Method::Invite && t.eq_ignore_ascii_case("100rel")))
        .map(String::from)
        .collect()
}

/// RFC 3581 / §18.2.2: responses go back over the request's connection, or for UDP to the
/// source address (with `rport`) or the Via's sent-by port.
pub(super) fn response_peer(req: &Request, peer: Peer) -> Peer {
    if peer.transport != Transport::Udp {
        return peer;
    }
    let Ok(via) = req.headers.top_via() else { return peer };
    if via.rport().is_some() {
        return peer;
    }
    Peer { addr: SocketAddr::new(peer.addr.ip(), via.port.unwrap_or(5060)), ..peer }
}

/// §17.1.1.3: the ACK for a non-2xx final response to `invite`: its Request-URI, top Via, From,
/// Call-ID and Route; the response's To; the INVITE's CSeq number with method ACK.
pub(super) fn non_2xx_ack(invite: &Request, resp: &Response) -> Request {
    let mut h = Headers::default();
    if let Some(v) = invite.headers.get(&HeaderName::Via) {
        h.push(HeaderName::Via, v.value.clone());
    }
    put(&mut h, HeaderName::MaxForwards, "70");
    for name in [HeaderName::From, HeaderName::CallId] {
        if let Some(v) = invite.headers.get(&name) {
            h.push(name, v.value.clone());
        }
    }
    if let Some(to) = resp.headers.get(&HeaderName::To) {
        h.push(HeaderName::To, to.value.clone());
    }
    let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or_default();
    put(&mut h, HeaderName::CSeq, &format!("{seq} ACK"));
    for r in invite.headers.get_all(&HeaderName::Route) {
        h.push(HeaderName::Route, r.value.clone());
    }
    Request { method: Method::Ack, uri: invite.uri.clone(), headers: h, body: Vec::new() }
}
