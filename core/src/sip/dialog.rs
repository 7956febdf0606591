//! Dialogs (RFC 3261 §12): the state two user agents share for a call — Call-ID, tags, CSeq
//! numbers, the remote target and the route set — and how requests inside a dialog are built.
//! Pure data and functions; the INVITE session machines own a `Dialog` each.

use super::message::{HeaderName, Headers, Method, NameAddr, Request, Response};
use super::parse::ParseError;
use super::uri::Uri;

/// Call-ID, local tag, remote tag (§12): what identifies a dialog.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

/// One dialog, from our side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Call-ID and tags.
    pub id: DialogId,
    /// Our URI (`From` of our requests), display name included, no tag.
    pub local: NameAddr,
    /// The peer's URI (`To` of our requests), no tag.
    pub remote: NameAddr,
    /// CSeq of our last request.
    pub local_cseq: u32,
    /// CSeq of the peer's last request, once it sent one.
    pub remote_cseq: Option<u32>,
    /// Where our requests go (the peer's Contact), §12.1.
    pub remote_target: Uri,
    /// Route set, in the order our requests carry it.
    pub route_set: Vec<NameAddr>,
}

/// Why a dialog could not be formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogError {
    /// A header the dialog needs is missing or unreadable.
    Header(&'static str),
}

impl From<ParseError> for DialogError {
    fn from(_: ParseError) -> Self {
        Self::Header("unreadable header")
    }
}

fn first_contact(h: &Headers) -> Result<Uri, DialogError> {
    match h.contacts()? {
        super::message::ContactList::Bindings(list) => {
            list.into_iter().next().map(|na| na.uri).ok_or(DialogError::Header("Contact"))
        }
        super::message::ContactList::Wildcard => Err(DialogError::Header("Contact")),
    }
}

fn untagged(mut na: NameAddr) -> NameAddr {
    na.params.remove("tag");
    na
}

impl Dialog {
    /// The UAC's dialog from its INVITE and a 1xx (with To tag) or 2xx response (§12.1.2): the
    /// route set is the response's Record-Route reversed, the remote target its Contact.
    pub fn uac(invite: &Request, response: &Response) -> Result<Self, DialogError> {
        let from = invite.headers.from_header()?;
        let to = response.headers.to_header()?;
        let id = DialogId {
            call_id: invite.headers.call_id()?.to_string(),
            local_tag: from.tag().ok_or(DialogError::Header("From tag"))?.to_string(),
            remote_tag: to.tag().ok_or(DialogError::Header("To tag"))?.to_string(),
        };
        let mut route_set = response.headers.record_routes()?;
        route_set.reverse();
        Ok(Self {
            id,
            local: untagged(from),
            remote: untagged(to),
            local_cseq: invite.headers.cseq()?.seq,
            remote_cseq: None,
            remote_target: first_contact(&response.headers)?,
            route_set,
        })
    }

    /// The UAS's dialog from an incoming INVITE and the tag we put in our To (§12.1.1): the
    /// route set is the request's Record-Route in order, the remote target its Contact.
    pub fn uas(invite: &Request, local_tag: &str) -> Result<Self, DialogError> {
        let from = invite.headers.from_header()?;
        let to = invite.headers.to_header()?;
        let id = DialogId {
            call_id: invite.headers.call_id()?.to_string(),
            local_tag: local_tag.to_string(),
            remote_tag: from.tag().unwrap_or_default().to_string(),
        };
        Ok(Self {
            id,
            local: untagged(to),
            remote: untagged(from),
            local_cseq: 0,
            remote_cseq: Some(invite.headers.cseq()?.seq),
            remote_target: first_contact(&invite.headers)?,
            route_set: invite.headers.record_routes()?,
        })
    }

    /// Builds a request inside the dialog (§12.2.1.1). The CSeq increases by one, except for
    /// ACK (which reuses `ack_cseq`, the INVITE's number). `via` is the complete Via value,
    /// `contact` our Contact URI for target-refresh requests.
    pub fn request(&mut self, method: Method, via: &str, contact: Option<&str>, ack_cseq: Option<u32>) -> Request {
        let cseq = match (&method, ack_cseq) {
            (Method::Ack, Some(n)) => n,
            _ => {
                self.local_cseq = self.local_cseq.wrapping_add(1).max(1);
                self.local_cseq
            }
        };
        // Loose routing: Request-URI = remote target, Route = route set. Strict (first route
        // without `lr`): Request-URI = first route's URI, Route = the rest + remote target.
        let (uri, routes): (Uri, Vec<String>) = match self.route_set.first() {
            Some(first) if !is_loose(first) => {
                let mut routes: Vec<String> = self.route_set[1..].iter().map(|r| r.to_string()).collect();
                routes.push(format!("<{}>", self.remote_target));
                (strip_uri_params(&first.uri), routes)
            }
            _ => (self.remote_target.clone(), self.route_set.iter().map(|r| r.to_string()).collect()),
        };
        let mut h = Headers::default();
        h.push(HeaderName::Via, via.as_bytes().to_vec());
        h.push(HeaderName::MaxForwards, b"70".to_vec());
        h.push(HeaderName::From, format!("{};tag={}", self.local, self.id.local_tag).into_bytes());
        let to = if self.id.remote_tag.is_empty() {
            self.remote.to_string()
        } else {
            format!("{};tag={}", self.remote, self.id.remote_tag)
        };
        h.push(HeaderName::To, to.into_bytes());
        h.push(HeaderName::CallId, self.id.call_id.as_bytes().to_vec());
        h.push(HeaderName::CSeq, format!("{cseq} {}", method.as_str()).into_bytes());
        for r in routes {
            h.push(HeaderName::Route, r.into_bytes());
        }
        if let Some(c) = contact {
            h.push(HeaderName::Contact, format!("<{c}>").into_bytes());
        }
        Request { method, uri, headers: h, body: Vec::new() }
    }

    /// Checks the CSeq of a request from the peer (§12.2.2): `false` if it is lower than the
    /// last one (the caller answers 500); otherwise it becomes the remote CSeq.
    pub fn accept_remote_cseq(&mut self, cseq: u32) -> bool {
        if self.remote_cseq.is_some_and(|last| cseq < last) {
            return false;
        }
        self.remote_cseq = Some(cseq);
        true
    }

    /// Target refresh (§12.2.1.2, §12.2.2): a re-INVITE or UPDATE and their 2xx replace the
    /// remote target with their Contact.
    pub fn refresh_target(&mut self, headers: &Headers) {
        if let Ok(uri) = first_contact(headers) {
            self.remote_target = uri;
        }
    }
}

fn is_loose(route: &NameAddr) -> bool {
    match &route.uri {
        Uri::Sip(u) => u.lr(),
        _ => true,
    }
}

/// A strict route's URI as a Request-URI: without the `lr`-less route's header part.
fn strip_uri_params(uri: &Uri) -> Uri {
    match uri {
        Uri::Sip(u) => {
            let mut u = u.clone();
            u.headers.clear();
            Uri::Sip(u)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::SipMessage;
    use crate::sip::parse::parse_message;

    fn req(text: &str) -> Request {
        match parse_message(text.replace('\n', "\r\n").as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => panic!("not a request"),
        }
    }

    fn resp(text: &str) -> Response {
        match parse_message(text.replace('\n', "\r\n").as_bytes()).unwrap() {
            SipMessage::Response(r) => r,
            SipMessage::Request(_) => panic!("not a response"),
        }
    }

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bKaaa
Max-Forwards: 70
From: \"Alice\" <sip:alice@example.com>;tag=a1
To: <sip:bob@example.com>
Call-ID: call-1@gw
CSeq: 10 INVITE
Contact: <sip:alice-x@192.0.2.1:5060>
Content-Length: 0

";

    #[test]
    fn uac_dialog_reverses_record_route_and_builds_bye() {
        let invite = req(INVITE);
        let ok = resp(
            "SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.1:5060;rport=5060;branch=z9hG4bKaaa
Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>
From: \"Alice\" <sip:alice@example.com>;tag=a1
To: <sip:bob@example.com>;tag=b1
Call-ID: call-1@gw
CSeq: 10 INVITE
Contact: <sip:bob@198.51.100.7:5062;transport=tcp>
Content-Length: 0

",
        );
        let mut d = Dialog::uac(&invite, &ok).unwrap();
        assert_eq!(d.id, DialogId { call_id: "call-1@gw".into(), local_tag: "a1".into(), remote_tag: "b1".into() });
        let ack = d.request(Method::Ack, "SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bKack", None, Some(10));
        let text = String::from_utf8(ack.to_bytes()).unwrap();
        assert!(text.starts_with("ACK sip:bob@198.51.100.7:5062;transport=tcp SIP/2.0\r\n"), "{text}");
        assert!(text.contains("CSeq: 10 ACK\r\n"));
        let bye = d.request(Method::Bye, "SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bKbye", None, None);
        let text = String::from_utf8(bye.to_bytes()).unwrap();
        assert!(text.contains("CSeq: 11 BYE\r\n"), "{text}");
        let routes: Vec<&str> = text.lines().filter(|l| l.starts_with("Route:")).collect();
        assert_eq!(routes, ["Route: <sip:p1.example.com;lr>", "Route: <sip:p2.example.com;lr>"]);
        assert!(text.contains("From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n"));
        assert!(text.contains("To: <sip:bob@example.com>;tag=b1\r\n"));
    }

    #[test]
    fn uas_dialog_keeps_record_route_order_and_checks_cseq() {
        let invite = req(&INVITE.replace("Contact:", "Record-Route: <sip:p1.example.com;lr>\nContact:"));
        let mut d = Dialog::uas(&invite, "b9").unwrap();
        assert_eq!(d.id.remote_tag, "a1");
        assert_eq!(d.route_set.len(), 1);
        assert!(d.accept_remote_cseq(11));
        assert!(!d.accept_remote_cseq(5), "lower CSeq gets 500");
        let bye = d.request(Method::Bye, "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKb", None, None);
        let text = String::from_utf8(bye.to_bytes()).unwrap();
        assert!(text.starts_with("BYE sip:alice-x@192.0.2.1:5060 SIP/2.0\r\n"), "{text}");
        assert!(text.contains("From: <sip:bob@example.com>;tag=b9\r\n") && text.contains("CSeq: 1 BYE"));
    }

    #[test]
    fn strict_route_moves_target_to_last_route() {
        let invite = req(INVITE);
        let ok = resp(
            "SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKaaa
Record-Route: <sip:strict.example.com>
From: <sip:alice@example.com>;tag=a1
To: <sip:bob@example.com>;tag=b1
Call-ID: call-1@gw
CSeq: 10 INVITE
Contact: <sip:bob@198.51.100.7>
Content-Length: 0

",
        );
        let mut d = Dialog::uac(&invite, &ok).unwrap();
        let bye = d.request(Method::Bye, "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKb", None, None);
        let text = String::from_utf8(bye.to_bytes()).unwrap();
        assert!(text.starts_with("BYE sip:strict.example.com SIP/2.0\r\n"), "{text}");
        assert!(text.contains("Route: <sip:bob@198.51.100.7>\r\n"), "{text}");
        d.refresh_target(&ok.headers);
    }
}
