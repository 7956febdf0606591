//! `message/imdn+xml` (RFC 5438 §7.2): build and read disposition notifications, and map the
//! sylkRTC `account-disposition-notification` states onto them.
//!
//! SylkServer builds `delivered` as a delivery notification and `displayed` and `error` as
//! display notifications, and fails on `failed`/`forbidden`. Here every state maps
//! ([`DispositionState::notification`]): `failed` can only be a delivery status
//! (RFC 5438 §7.2.1.1); `forbidden`, a privacy refusal, goes with `error` in a display
//! notification, the receipt an app withholds or cannot give.

use std::fmt;

use super::xml::{self, Element, XmlError};

/// The media type of IMDN documents.
pub const CONTENT_TYPE: &str = "message/imdn+xml";
/// The XML namespace of IMDN documents (RFC 5438 §10.2).
pub const XML_NAMESPACE: &str = "urn:ietf:params:xml:ns:imdn";
/// Largest IMDN document accepted, in bytes.
pub const MAX_IMDN_SIZE: usize = 16 * 1024;
/// Longest text of any field (message-id, datetime, URIs, subject), in bytes.
pub const MAX_FIELD_LEN: usize = 1024;

/// Which disposition a notification reports (RFC 5438 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    Delivery,
    Display,
    Processing,
}

impl NotificationKind {
    /// The element name: `delivery-notification`, …
    pub fn element(self) -> &'static str {
        match self {
            NotificationKind::Delivery => "delivery-notification",
            NotificationKind::Display => "display-notification",
            NotificationKind::Processing => "processing-notification",
        }
    }

    fn from_element(name: &str) -> Option<NotificationKind> {
        [NotificationKind::Delivery, NotificationKind::Display, NotificationKind::Processing]
            .into_iter()
            .find(|kind| kind.element() == name)
    }
}

/// The status inside a notification. Its name is also the sylkRTC `disposition-notification`
/// `state` an incoming IMDN becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Delivered,
    Failed,
    Forbidden,
    Error,
    Displayed,
    Processed,
    Stored,
}

impl Status {
    const ALL: [Status; 7] = [
        Status::Delivered,
        Status::Failed,
        Status::Forbidden,
        Status::Error,
        Status::Displayed,
        Status::Processed,
        Status::Stored,
    ];

    /// The element name, and the sylkRTC state.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Forbidden => "forbidden",
            Status::Error => "error",
            Status::Displayed => "displayed",
            Status::Processed => "processed",
            Status::Stored => "stored",
        }
    }

    fn from_element(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.as_str() == name)
    }

    /// Whether the schema allows this status in `kind` (RFC 5438 §7.2.1.1–3).
    pub fn allowed_in(self, kind: NotificationKind) -> bool {
        match kind {
            NotificationKind::Delivery => {
                matches!(self, Status::Delivered | Status::Failed | Status::Forbidden | Status::Error)
            }
            NotificationKind::Display => matches!(self, Status::Displayed | Status::Forbidden | Status::Error),
            NotificationKind::Processing => {
                matches!(self, Status::Processed | Status::Stored | Status::Forbidden | Status::Error)
            }
        }
    }
}

/// The `state` values of `account-disposition-notification` (SylkServer's
/// `AccountDispositionNotificationRequest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispositionState {
    Delivered,
    Failed,
    Displayed,
    Forbidden,
    Error,
}

impl DispositionState {
    /// Reads a request's `state`; `None` for anything else.
    pub fn parse(state: &str) -> Option<DispositionState> {
        match state {
            "delivered" => Some(DispositionState::Delivered),
            "failed" => Some(DispositionState::Failed),
            "displayed" => Some(DispositionState::Displayed),
            "forbidden" => Some(DispositionState::Forbidden),
            "error" => Some(DispositionState::Error),
            _ => None,
        }
    }

    /// The notification and status to send (see the module doc for the choice).
    pub fn notification(self) -> (NotificationKind, Status) {
        match self {
            DispositionState::Delivered => (NotificationKind::Delivery, Status::Delivered),
            DispositionState::Failed => (NotificationKind::Delivery, Status::Failed),
            DispositionState::Displayed => (NotificationKind::Display, Status::Displayed),
            DispositionState::Forbidden => (NotificationKind::Display, Status::Forbidden),
            DispositionState::Error => (NotificationKind::Display, Status::Error),
        }
    }
}

/// One IMDN document. `datetime` is the date of the *original* message (RFC 5438 §7.2.1.2),
/// which the sylkRTC event carries as `message_timestamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imdn {
    pub message_id: String,
    pub datetime: String,
    pub recipient_uri: Option<String>,
    pub original_recipient_uri: Option<String>,
    pub subject: Option<String>,
    pub kind: NotificationKind,
    pub status: Status,
}

/// Why a document is not an IMDN, or cannot be written as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImdnError {
    /// Larger than [`MAX_IMDN_SIZE`].
    TooLarge,
    /// Not UTF-8.
    NotUtf8,
    /// Not well-formed, or refused by the reader's limits.
    Xml(XmlError),
    /// The root is not `<imdn>` in the IMDN namespace.
    NotImdn,
    /// A required element is absent or empty; names it.
    Missing(&'static str),
    /// An element appears twice, or an unknown one in the IMDN namespace; names it.
    Unexpected(&'static str),
    /// A status the notification kind does not allow (e.g. `displayed` in a delivery one).
    StatusNotAllowed,
    /// A field is longer than [`MAX_FIELD_LEN`] or holds a character XML cannot carry.
    BadField(&'static str),
}

impl ImdnError {
    /// A short reason for logs (never message content).
    pub fn reason(&self) -> &'static str {
        match self {
            ImdnError::TooLarge => "IMDN too large",
            ImdnError::NotUtf8 => "IMDN not UTF-8",
            ImdnError::Xml(_) => "IMDN not well-formed",
            ImdnError::NotImdn => "not an IMDN document",
            ImdnError::Missing(_) => "IMDN element missing",
            ImdnError::Unexpected(_) => "unexpected IMDN element",
            ImdnError::StatusNotAllowed => "IMDN status not allowed for the notification",
            ImdnError::BadField(_) => "invalid IMDN field",
        }
    }
}

impl fmt::Display for ImdnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImdnError::Xml(e) => write!(f, "IMDN: {e}"),
            ImdnError::Missing(what) | ImdnError::Unexpected(what) | ImdnError::BadField(what) => {
                write!(f, "{}: {what}", self.reason())
            }
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ImdnError {}

impl Imdn {
    /// The IMDN answering `message_id` (sent at `datetime`) with a sylkRTC `state`.
    pub fn for_state(message_id: &str, datetime: &str, recipient_uri: Option<&str>, state: DispositionState) -> Imdn {
        let (kind, status) = state.notification();
        Imdn {
            message_id: message_id.to_string(),
            datetime: datetime.to_string(),
            recipient_uri: recipient_uri.map(str::to_string),
            original_recipient_uri: recipient_uri.map(str::to_string),
            subject: None,
            kind,
            status,
        }
    }

    /// The sylkRTC `disposition-notification` `state` this IMDN reports.
    pub fn state(&self) -> &'static str {
        self.status.as_str()
    }

    /// Reads an IMDN document (RFC 5438 §7.2). Elements of other namespaces (schema
    /// extensions) are skipped; an unqualified document is read as if it were in the IMDN
    /// namespace. Total: never panics.
    pub fn parse(data: &[u8]) -> Result<Imdn, ImdnError> {
        if data.len() > MAX_IMDN_SIZE {
            return Err(ImdnError::TooLarge);
        }
        let text = std::str::from_utf8(data).map_err(|_| ImdnError::NotUtf8)?;
        let root = xml::parse(text).map_err(ImdnError::Xml)?;
        if !ours(&root) || root.name != "imdn" {
            return Err(ImdnError::NotImdn);
        }
        let mut message_id = None;
        let mut datetime = None;
        let mut recipient_uri = None;
        let mut original_recipient_uri = None;
        let mut subject = None;
        let mut notification = None;
        for child in root.children.iter().filter(|child| ours(child)) {
            let slot = match child.name.as_str() {
                "message-id" => &mut message_id,
                "datetime" => &mut datetime,
                "recipient-uri" => &mut recipient_uri,
                "original-recipient-uri" => &mut original_recipient_uri,
                "subject" => &mut subject,
                name => {
                    let kind = NotificationKind::from_element(name).ok_or(ImdnError::Unexpected("unknown element"))?;
                    if notification.is_some() {
                        return Err(ImdnError::Unexpected("second notification"));
                    }
                    notification = Some((kind, read_status(child)?));
                    continue;
                }
            };
            if slot.is_some() {
                return Err(ImdnError::Unexpected("repeated element"));
            }
            let value = child.text.trim();
            if value.len() > MAX_FIELD_LEN {
                return Err(ImdnError::BadField("field too long"));
            }
            *slot = Some(value.to_string());
        }
        let message_id = message_id.filter(|id| !id.is_empty()).ok_or(ImdnError::Missing("message-id"))?;
        let datetime = datetime.filter(|d| !d.is_empty()).ok_or(ImdnError::Missing("datetime"))?;
        let (kind, status) = notification.ok_or(ImdnError::Missing("notification"))?;
        if !status.allowed_in(kind) {
            return Err(ImdnError::StatusNotAllowed);
        }
        Ok(Imdn { message_id, datetime, recipient_uri, original_recipient_uri, subject, kind, status })
    }

    /// Writes the document (UTF-8, text escaped). Refuses an empty `message_id` or
    /// `datetime`, a status the kind does not allow, and fields XML cannot carry.
    pub fn encode(&self) -> Result<String, ImdnError> {
        if !self.status.allowed_in(self.kind) {
            return Err(ImdnError::StatusNotAllowed);
        }
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str("<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\n");
        let fields = [
            ("message-id", Some(&self.message_id)),
            ("datetime", Some(&self.datetime)),
            ("recipient-uri", self.recipient_uri.as_ref()),
            ("original-recipient-uri", self.original_recipient_uri.as_ref()),
            ("subject", self.subject.as_ref()),
        ];
        for (name, value) in fields {
            let Some(value) = value else { continue };
            if value.trim().is_empty() && matches!(name, "message-id" | "datetime") {
                return Err(ImdnError::Missing(name));
            }
            if value.len() > MAX_FIELD_LEN {
                return Err(ImdnError::BadField(name));
            }
            out.push_str(&format!("  <{name}>"));
            if !xml::escape_into(value, &mut out) {
                return Err(ImdnError::BadField(name));
            }
            out.push_str(&format!("</{name}>\n"));
        }
        let element = self.kind.element();
        out.push_str(&format!("  <{element}><status><{}/></status></{element}>\n", self.status.as_str()));
        out.push_str("</imdn>\n");
        Ok(out)
    }
}

/// In the IMDN namespace, or unqualified (tolerated).
fn ours(element: &Element) -> bool {
    element.ns.as_deref().is_none_or(|ns| ns == XML_NAMESPACE)
}

/// `<status><delivered/></status>`: exactly one known status element in our namespace.
fn read_status(notification: &Element) -> Result<Status, ImdnError> {
    let mut statuses = notification.children.iter().filter(|child| ours(child));
    let status = statuses.next().filter(|s| s.name == "status").ok_or(ImdnError::Missing("status"))?;
    if statuses.next().is_some() {
        return Err(ImdnError::Unexpected("extra element in notification"));
    }
    let mut values = status.children.iter().filter(|child| ours(child));
    let value = values.next().ok_or(ImdnError::Missing("status value"))?;
    if values.next().is_some() {
        return Err(ImdnError::Unexpected("second status value"));
    }
    Status::from_element(&value.name).ok_or(ImdnError::Unexpected("unknown status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5438 §7.2.1.1-style delivery notification.
    const RFC5438: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<imdn xmlns="urn:ietf:params:xml:ns:imdn"
      xmlns:myns="http://example.com">
   <message-id>34jk324j</message-id>
   <datetime>2008-04-04T12:16:49-05:00</datetime>
   <recipient-uri>im:bob@example.com</recipient-uri>
   <original-recipient-uri
      >im:bob@example.com</original-recipient-uri>
   <subject>Weekly report</subject>
   <delivery-notification>
      <status>
         <delivered/>
      </status>
   </delivery-notification>
   <myns:some-element>whatever</myns:some-element>
</imdn>
"#;

    /// What sipsimple's IMDNDocument writes for SylkServer (one line, default namespace).
    const SIPSIMPLE: &str = "<?xml version='1.0' encoding='UTF-8'?>\n<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\
<message-id>m-42</message-id><datetime>2026-01-01T12:00:00.000000+00:00</datetime><recipient-uri>alice@example.com</recipient-uri>\
<original-recipient-uri>alice@example.com</original-recipient-uri><display-notification><status><displayed/></status></display-notification></imdn>";

    fn imdn(xml: &str) -> Result<Imdn, ImdnError> {
        Imdn::parse(xml.as_bytes())
    }

    #[test]
    fn reads_the_rfc_example() {
        let parsed = imdn(RFC5438).unwrap();
        assert_eq!(parsed.message_id, "34jk324j");
        assert_eq!(parsed.datetime, "2008-04-04T12:16:49-05:00");
        assert_eq!(parsed.recipient_uri.as_deref(), Some("im:bob@example.com"));
        assert_eq!(parsed.original_recipient_uri.as_deref(), Some("im:bob@example.com"));
        assert_eq!(parsed.subject.as_deref(), Some("Weekly report"));
        assert_eq!(
            (parsed.kind, parsed.status, parsed.state()),
            (NotificationKind::Delivery, Status::Delivered, "delivered")
        );
    }

    #[test]
    fn reads_what_sylkserver_sends() {
        let parsed = imdn(SIPSIMPLE).unwrap();
        assert_eq!(
            (parsed.message_id.as_str(), parsed.kind, parsed.state()),
            ("m-42", NotificationKind::Display, "displayed")
        );
    }

    #[test]
    fn reads_prefixed_and_unqualified_documents() {
        let prefixed = "<i:imdn xmlns:i=\"urn:ietf:params:xml:ns:imdn\"><i:message-id>a&amp;b</i:message-id>\
<i:datetime>d</i:datetime><i:processing-notification><i:status><i:stored/></i:status></i:processing-notification></i:imdn>";
        let parsed = imdn(prefixed).unwrap();
        assert_eq!(
            (parsed.message_id.as_str(), parsed.kind, parsed.status),
            ("a&b", NotificationKind::Processing, Status::Stored)
        );
        let bare = "<imdn><message-id>x</message-id><datetime>d</datetime>\
<delivery-notification><status><failed/></status></delivery-notification></imdn>";
        assert_eq!(imdn(bare).unwrap().status, Status::Failed);
    }

    #[test]
    fn every_sylkrtc_state_maps_to_a_valid_imdn_that_reads_back() {
        for (state, kind) in [
            ("delivered", NotificationKind::Delivery),
            ("failed", NotificationKind::Delivery),
            ("displayed", NotificationKind::Display),
            ("forbidden", NotificationKind::Display),
            ("error", NotificationKind::Display),
        ] {
            let parsed_state = DispositionState::parse(state).unwrap();
            let built = Imdn::for_state("m-1", "2026-01-01T12:00:00Z", Some("sip:bob@example.com"), parsed_state);
            assert_eq!(built.kind, kind);
            let xml = built.encode().unwrap();
            let back = imdn(&xml).unwrap();
            assert_eq!(back, built);
            assert_eq!(back.state(), state);
        }
        assert_eq!(DispositionState::parse("accepted"), None);
        assert_eq!(DispositionState::parse("Delivered"), None);
    }

    #[test]
    fn writes_the_rfc_shape() {
        let built =
            Imdn::for_state("m<1>&", "2026-01-01T12:00:00Z", Some("sip:bob@example.com"), DispositionState::Delivered);
        let expected = [
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            "<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">",
            "  <message-id>m&lt;1&gt;&amp;</message-id>",
            "  <datetime>2026-01-01T12:00:00Z</datetime>",
            "  <recipient-uri>sip:bob@example.com</recipient-uri>",
            "  <original-recipient-uri>sip:bob@example.com</original-recipient-uri>",
            "  <delivery-notification><status><delivered/></status></delivery-notification>",
            "</imdn>",
            "",
        ];
        assert_eq!(built.encode().unwrap(), expected.join("\n"));
    }

    #[test]
    fn refuses_to_write_invalid_documents() {
        let mut bad = Imdn::for_state("", "d", None, DispositionState::Delivered);
        assert_eq!(bad.encode(), Err(ImdnError::Missing("message-id")));
        bad.message_id = "id\u{1}".into();
        assert_eq!(bad.encode(), Err(ImdnError::BadField("message-id")));
        bad.message_id = "x".repeat(MAX_FIELD_LEN + 1);
        assert_eq!(bad.encode(), Err(ImdnError::BadField("message-id")));
        bad.message_id = "ok".into();
        bad.kind = NotificationKind::Display;
        assert_eq!(bad.encode(), Err(ImdnError::StatusNotAllowed));
    }

    #[test]
    fn rejects_bad_documents() {
        let notification = "<delivery-notification><status><delivered/></status></delivery-notification>";
        let cases: Vec<(String, ImdnError)> = vec![
            ("<imdn>".into(), ImdnError::Xml(XmlError::Syntax("unterminated element"))),
            ("<other xmlns=\"urn:ietf:params:xml:ns:imdn\"/>".into(), ImdnError::NotImdn),
            ("<imdn xmlns=\"urn:x\"/>".into(), ImdnError::NotImdn),
            (format!("<imdn><datetime>d</datetime>{notification}</imdn>"), ImdnError::Missing("message-id")),
            (format!("<imdn><message-id> </message-id><datetime>d</datetime>{notification}</imdn>"), ImdnError::Missing("message-id")),
            (format!("<imdn><message-id>m</message-id>{notification}</imdn>"), ImdnError::Missing("datetime")),
            ("<imdn><message-id>m</message-id><datetime>d</datetime></imdn>".into(), ImdnError::Missing("notification")),
            (format!("<imdn><message-id>m</message-id><message-id>n</message-id><datetime>d</datetime>{notification}</imdn>"),
                ImdnError::Unexpected("repeated element")),
            (format!("<imdn><message-id>m</message-id><datetime>d</datetime>{notification}{notification}</imdn>"),
                ImdnError::Unexpected("second notification")),
            (format!("<imdn><message-id>m</message-id><datetime>d</datetime><bogus/>{notification}</imdn>"),
                ImdnError::Unexpected("unknown element")),
            ("<imdn><message-id>m</message-id><datetime>d</datetime><display-notification><status><delivered/></status></display-notification></imdn>".into(),
                ImdnError::StatusNotAllowed),
            ("<imdn><message-id>m</message-id><datetime>d</datetime><display-notification><status><read/></status></display-notification></imdn>".into(),
                ImdnError::Unexpected("unknown status")),
            ("<imdn><message-id>m</message-id><datetime>d</datetime><display-notification><status/></display-notification></imdn>".into(),
                ImdnError::Missing("status value")),
            ("<imdn><message-id>m</message-id><datetime>d</datetime><display-notification/></imdn>".into(),
                ImdnError::Missing("status")),
            ("<imdn><message-id>m</message-id><datetime>d</datetime><display-notification><status><displayed/><error/></status></display-notification></imdn>".into(),
                ImdnError::Unexpected("second status value")),
            (format!("<imdn><message-id>{}</message-id><datetime>d</datetime>{notification}</imdn>", "m".repeat(MAX_FIELD_LEN + 1)),
                ImdnError::BadField("field too long")),
            ("<!DOCTYPE imdn><imdn/>".to_string(), ImdnError::Xml(XmlError::Doctype)),
        ];
        for (doc, error) in cases {
            assert_eq!(imdn(&doc), Err(error), "{doc}");
        }
        assert_eq!(Imdn::parse(b"<imdn>\xff</imdn>"), Err(ImdnError::NotUtf8));
        assert_eq!(Imdn::parse(&vec![b' '; MAX_IMDN_SIZE + 1]), Err(ImdnError::TooLarge));
    }

    #[test]
    fn what_parses_encodes_and_reads_back_the_same() {
        let mut checked = 0;
        for sample in [RFC5438, SIPSIMPLE] {
            let bytes = sample.as_bytes();
            for i in 0..bytes.len() {
                for byte in [b' ', b'&', b'\r', b'x', b'"'] {
                    let mut mutated = bytes.to_vec();
                    mutated[i] = byte;
                    let Ok(parsed) = Imdn::parse(&mutated) else { continue };
                    let encoded = parsed.encode().unwrap();
                    assert_eq!(imdn(&encoded), Ok(parsed), "{:?}", String::from_utf8_lossy(&mutated));
                    checked += 1;
                }
            }
        }
        let edges = "<imdn><message-id>a&#13;b</message-id><datetime> &lt;&amp;&gt;&quot;&apos; </datetime>\
<subject><![CDATA[x]]>&#x1F600;</subject><display-notification><status><error/></status></display-notification></imdn>";
        let parsed = imdn(edges).unwrap();
        assert_eq!((parsed.message_id.as_str(), parsed.datetime.as_str()), ("a\rb", "<&>\"'"));
        assert_eq!(imdn(&parsed.encode().unwrap()), Ok(parsed));
        assert!(checked > 500, "{checked}");
    }

    #[test]
    fn parse_is_total_on_prefixes_and_mutations() {
        for sample in [RFC5438, SIPSIMPLE] {
            let bytes = sample.as_bytes();
            for end in 0..bytes.len() {
                let _ = Imdn::parse(&bytes[..end]);
            }
            for i in 0..bytes.len() {
                for byte in [b'<', b'>', b'/', b'&', b';', b'"', b':', b' ', 0xc3] {
                    let mut mutated = bytes.to_vec();
                    mutated[i] = byte;
                    let _ = Imdn::parse(&mutated);
                }
            }
        }
    }
}
