//! `message/cpim` (RFC 3862) as SIP MESSAGE bodies carry it, with the IMDN headers of
//! RFC 5438 §6 (`imdn.Message-ID`, `imdn.Disposition-Notification`).
//!
//! Written as SylkServer writes it (`From`, `To`, `DateTime`, `NS: imdn <urn:ietf:params:imdn>`,
//! `imdn.Message-ID`, `imdn.Disposition-Notification`, then the MIME part), but with CRLF
//! throughout and quoted display names. Read tolerantly: LF or CRLF line ends (SylkServer
//! itself writes the MIME part with bare LF), any header-name case, folded lines, the `imdn.`
//! prefix even without its `NS` declaration, optional headers missing, and a payload that is
//! not UTF-8 (kept as bytes). Limits: [`MAX_HEADERS`] lines per header block, each at most
//! [`MAX_HEADER_LINE`] bytes; the body size is the SIP layer's to limit.

use std::fmt;

use super::content_type::{ContentType, ContentTypeError};
use super::escape;
use super::identity::{Identity, IdentityError};

/// The IMDN namespace of CPIM headers (RFC 5438 §6).
pub const IMDN_NAMESPACE: &str = "urn:ietf:params:imdn";
/// Most header lines accepted in each of the two header blocks (CPIM, MIME).
pub const MAX_HEADERS: usize = 64;
/// Longest header line accepted (folded lines count together), in bytes.
pub const MAX_HEADER_LINE: usize = 4096;
/// Most values accepted in `imdn.Disposition-Notification`.
pub const MAX_DISPOSITIONS: usize = 8;

/// One message/cpim body. `disposition_notification` is `None` when the header is absent (the
/// sylkRTC `message` event then carries `null`), else its values, lower-cased, without
/// duplicates. `extra` holds the other CPIM headers (standard ones with `namespace: None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpimMessage {
    pub from: Option<Identity>,
    pub to: Vec<Identity>,
    pub cc: Vec<Identity>,
    pub subject: Option<String>,
    /// `DateTime` as written (RFC 3339 by RFC 3862 §3.3.6); not validated.
    pub datetime: Option<String>,
    pub message_id: Option<String>,
    pub disposition_notification: Option<Vec<String>>,
    pub extra: Vec<CpimHeader>,
    pub content_type: ContentType,
    /// The MIME `Content-Disposition` (`notification` on IMDNs, RFC 5438 §7.1).
    pub content_disposition: Option<String>,
    pub body: Vec<u8>,
}

/// A CPIM header this module does not interpret. `namespace` is the URI its prefix was
/// declared with (`None`: the standard namespace, or an undeclared prefix kept in `name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpimHeader {
    pub namespace: Option<String>,
    pub name: String,
    pub value: String,
}

/// Why bytes are not a message/cpim body, or a message cannot be written as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpimError {
    /// A header block is not ended by an empty line.
    NoSeparator,
    /// More than [`MAX_HEADERS`] lines in a header block.
    TooManyHeaders,
    /// A header line longer than [`MAX_HEADER_LINE`].
    HeaderTooLong,
    /// A header line without `name:`, or a name that is not a token.
    MalformedHeader,
    /// A header that may appear once appears again; names it.
    Duplicate(&'static str),
    /// A `From`, `To` or `cc` value that is not an address.
    BadAddress(IdentityError),
    /// An `NS` value that is not `[prefix] <uri>`.
    BadNamespace,
    /// The MIME part has no `Content-Type`.
    MissingContentType,
    /// The MIME `Content-Type` (or, when writing, `Content-Disposition`) is invalid.
    BadContentType,
    /// A `Content-Transfer-Encoding` other than 7bit, 8bit or binary.
    UnsupportedTransferEncoding,
    /// A disposition value that is not a token, or more than [`MAX_DISPOSITIONS`] of them.
    BadDisposition,
}

impl CpimError {
    /// A short reason for logs and SIP reason phrases (never message content).
    pub fn reason(&self) -> &'static str {
        match self {
            CpimError::NoSeparator => "CPIM header block not terminated",
            CpimError::TooManyHeaders => "too many CPIM headers",
            CpimError::HeaderTooLong => "CPIM header too long",
            CpimError::MalformedHeader => "malformed CPIM header",
            CpimError::Duplicate(_) => "duplicate CPIM header",
            CpimError::BadAddress(_) => "invalid CPIM address",
            CpimError::BadNamespace => "invalid CPIM NS header",
            CpimError::MissingContentType => "CPIM body without Content-Type",
            CpimError::BadContentType => "invalid CPIM Content-Type",
            CpimError::UnsupportedTransferEncoding => "unsupported Content-Transfer-Encoding",
            CpimError::BadDisposition => "invalid imdn.Disposition-Notification",
        }
    }
}

impl fmt::Display for CpimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpimError::Duplicate(name) => write!(f, "duplicate CPIM header {name}"),
            CpimError::BadAddress(e) => write!(f, "invalid CPIM address: {e}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for CpimError {}

impl From<ContentTypeError> for CpimError {
    fn from(_: ContentTypeError) -> Self {
        CpimError::BadContentType
    }
}

impl CpimMessage {
    /// A message with only the MIME part set; fill in the headers wanted.
    pub fn new(content_type: ContentType, body: Vec<u8>) -> CpimMessage {
        CpimMessage {
            from: None,
            to: Vec::new(),
            cc: Vec::new(),
            subject: None,
            datetime: None,
            message_id: None,
            disposition_notification: None,
            extra: Vec::new(),
            content_type,
            content_disposition: None,
            body,
        }
    }

    /// Parses a message/cpim body (RFC 3862 §3). Total: never panics, whatever the bytes.
    pub fn parse(data: &[u8]) -> Result<CpimMessage, CpimError> {
        let (cpim_headers, mime_start) = header_block(data)?;
        let (mime_headers, body_start) = header_block(&data[mime_start..])?;
        let mut body = &data[mime_start + body_start..];

        let mut content_type = None;
        let mut content_disposition = None;
        for (name, value) in mime_headers {
            if name.eq_ignore_ascii_case("Content-Type") {
                if content_type.is_some() {
                    return Err(CpimError::Duplicate("Content-Type"));
                }
                content_type = Some(ContentType::parse(&value)?);
            } else if name.eq_ignore_ascii_case("Content-Disposition") {
                content_disposition = Some(value);
            } else if name.eq_ignore_ascii_case("Content-Length") {
                // Optional; honoured when it is a number that fits (some senders add a CRLF).
                if let Ok(len) = value.parse::<usize>() {
                    if len <= body.len() {
                        body = &body[..len];
                    }
                }
            } else if name.eq_ignore_ascii_case("Content-Transfer-Encoding")
                && !["7bit", "8bit", "binary"].iter().any(|e| value.eq_ignore_ascii_case(e))
            {
                return Err(CpimError::UnsupportedTransferEncoding);
            }
        }
        let content_type = content_type.ok_or(CpimError::MissingContentType)?;
        let mut message = CpimMessage::new(content_type, body.to_vec());
        message.content_disposition = content_disposition;
        message.read_cpim_headers(cpim_headers)?;
        Ok(message)
    }

    /// Interprets the CPIM header block (RFC 3862 §3.3, §4; RFC 5438 §6).
    fn read_cpim_headers(&mut self, headers: Vec<(String, String)>) -> Result<(), CpimError> {
        // Prefix → namespace URI, from `NS` headers, in order (RFC 3862 §3.3.7).
        let mut namespaces: Vec<(String, String)> = Vec::new();
        for (name, value) in headers {
            let (prefix, local) = match name.rsplit_once('.') {
                Some((prefix, local)) => (Some(prefix), local),
                None => (None, name.as_str()),
            };
            let Some(prefix) = prefix else {
                self.read_standard_header(local, value, &mut namespaces)?;
                continue;
            };
            let declared = namespaces.iter().rev().find(|(p, _)| p == prefix).map(|(_, uri)| uri.clone());
            // Tolerated: `imdn.` used without declaring it.
            let namespace =
                declared.or_else(|| prefix.eq_ignore_ascii_case("imdn").then(|| IMDN_NAMESPACE.to_string()));
            match namespace {
                Some(ns) if ns == IMDN_NAMESPACE && local.eq_ignore_ascii_case("Message-ID") => {
                    if self.message_id.is_some() {
                        return Err(CpimError::Duplicate("imdn.Message-ID"));
                    }
                    self.message_id = Some(single_line(&value)?).filter(|id| !id.is_empty());
                }
                Some(ns) if ns == IMDN_NAMESPACE && local.eq_ignore_ascii_case("Disposition-Notification") => {
                    if self.disposition_notification.is_some() {
                        return Err(CpimError::Duplicate("imdn.Disposition-Notification"));
                    }
                    self.disposition_notification = Some(parse_dispositions(&escape::unescape(&value))?);
                }
                Some(ns) => self.extra.push(CpimHeader {
                    namespace: Some(ns),
                    name: local.to_string(),
                    value: escape::unescape(&value),
                }),
                None => self.extra.push(CpimHeader { namespace: None, name, value: escape::unescape(&value) }),
            }
        }
        Ok(())
    }

    fn read_standard_header(
        &mut self,
        name: &str,
        value: String,
        namespaces: &mut Vec<(String, String)>,
    ) -> Result<(), CpimError> {
        let address = |value: &str| Identity::parse_cpim(value).map_err(CpimError::BadAddress);
        if name.eq_ignore_ascii_case("From") {
            if self.from.is_some() {
                return Err(CpimError::Duplicate("From"));
            }
            self.from = Some(address(&value)?);
        } else if name.eq_ignore_ascii_case("To") {
            self.to.push(address(&value)?);
        } else if name.eq_ignore_ascii_case("cc") {
            self.cc.push(address(&value)?);
        } else if name.eq_ignore_ascii_case("DateTime") {
            if self.datetime.is_some() {
                return Err(CpimError::Duplicate("DateTime"));
            }
            self.datetime = Some(single_line(&value)?).filter(|datetime| !datetime.is_empty());
        } else if name.eq_ignore_ascii_case("Subject") {
            // `Subject: ;lang=fr Bonjour` is a translation; the first plain one is kept.
            if !value.starts_with(";lang=") && self.subject.is_none() {
                self.subject = Some(escape::unescape(&value));
            }
        } else if name.eq_ignore_ascii_case("NS") {
            namespaces.push(parse_namespace(&value)?);
        } else {
            self.extra.push(CpimHeader { namespace: None, name: name.to_string(), value: escape::unescape(&value) });
        }
        Ok(())
    }

    /// Writes the body: CPIM headers (values escaped per RFC 3862 §3.2, so no value can add a
    /// header line), an empty line, the MIME headers, an empty line, the payload. The `NS`
    /// declaration for IMDN is written when `message_id` or a disposition is set.
    pub fn encode(&self) -> Result<Vec<u8>, CpimError> {
        let mut head = String::new();
        if let Some(from) = &self.from {
            address("From", from, &mut head)?;
        }
        for to in &self.to {
            address("To", to, &mut head)?;
        }
        for cc in &self.cc {
            address("cc", cc, &mut head)?;
        }
        if let Some(subject) = &self.subject {
            push_header(&mut head, "Subject", subject);
        }
        let identifiers = [self.datetime.as_deref(), self.message_id.as_deref()];
        if identifiers.into_iter().flatten().any(|value| value.chars().any(char::is_control)) {
            return Err(CpimError::MalformedHeader);
        }
        if let Some(datetime) = &self.datetime {
            push_header(&mut head, "DateTime", datetime);
        }
        if self.message_id.is_some() || self.disposition_notification.is_some() {
            head.push_str("NS: imdn <urn:ietf:params:imdn>\r\n");
        }
        if let Some(id) = &self.message_id {
            push_header(&mut head, "imdn.Message-ID", id);
        }
        if let Some(dispositions) = &self.disposition_notification {
            if dispositions.len() > MAX_DISPOSITIONS || !dispositions.iter().all(|d| is_token(d)) {
                return Err(CpimError::BadDisposition);
            }
            push_header(&mut head, "imdn.Disposition-Notification", &dispositions.join(", "));
        }
        let mut declared: Vec<&str> = Vec::new();
        for header in &self.extra {
            if !is_token(&header.name) {
                return Err(CpimError::MalformedHeader);
            }
            match &header.namespace {
                None => push_header(&mut head, &header.name, &header.value),
                Some(ns) => {
                    let index = match declared.iter().position(|d| d == ns) {
                        Some(index) => index,
                        None => {
                            if ns.is_empty() || ns.contains(['<', '>']) {
                                return Err(CpimError::BadNamespace);
                            }
                            declared.push(ns);
                            let mut decl = format!("ns{} <", declared.len());
                            escape::escape_into(ns, false, &mut decl);
                            decl.push('>');
                            push_raw_header(&mut head, "NS", &decl);
                            declared.len() - 1
                        }
                    };
                    push_header(&mut head, &format!("ns{}.{}", index + 1, header.name), &header.value);
                }
            }
        }
        head.push_str("\r\n");
        head.push_str("Content-Type: ");
        head.push_str(&self.content_type.to_string());
        head.push_str("\r\n");
        if let Some(disposition) = &self.content_disposition {
            if disposition.is_empty() || disposition.chars().any(|c| c.is_control()) {
                return Err(CpimError::BadContentType);
            }
            head.push_str("Content-Disposition: ");
            head.push_str(disposition);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    /// The payload as text if it is UTF-8.
    pub fn body_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// Whether the sender asked for `disposition` (`positive-delivery`, `display`, …).
    pub fn wants(&self, disposition: &str) -> bool {
        self.disposition_notification
            .as_ref()
            .is_some_and(|list| list.iter().any(|d| d.eq_ignore_ascii_case(disposition)))
    }
}

fn address(name: &str, identity: &Identity, head: &mut String) -> Result<(), CpimError> {
    head.push_str(name);
    head.push_str(": ");
    identity.write_cpim(head).map_err(CpimError::BadAddress)?;
    head.push_str("\r\n");
    Ok(())
}

fn push_header(head: &mut String, name: &str, value: &str) {
    head.push_str(name);
    head.push_str(": ");
    escape::escape_value_into(value, head);
    head.push_str("\r\n");
}

fn push_raw_header(head: &mut String, name: &str, value: &str) {
    head.push_str(name);
    head.push_str(": ");
    head.push_str(value);
    head.push_str("\r\n");
}

/// Reads one header block: `(name, value)` pairs and the offset just past the empty line
/// that ends it. Lines end in LF or CRLF; a line starting with a blank continues the previous
/// one (RFC 5322 §2.2.3 folding, which the MIME part allows).
fn header_block(data: &[u8]) -> Result<(Vec<(String, String)>, usize), CpimError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(nl) = data[pos..].iter().position(|&b| b == b'\n') else {
            return Err(if data.len() - pos > MAX_HEADER_LINE {
                CpimError::HeaderTooLong
            } else {
                CpimError::NoSeparator
            });
        };
        if nl > MAX_HEADER_LINE {
            return Err(CpimError::HeaderTooLong);
        }
        let raw = &data[pos..pos + nl];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        pos += nl + 1;
        if line.is_empty() {
            return Ok((headers, pos));
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = headers.last_mut() else {
                return Err(CpimError::MalformedHeader);
            };
            if value.len() + line.len() > MAX_HEADER_LINE {
                return Err(CpimError::HeaderTooLong);
            }
            value.push(' ');
            value.push_str(line.trim());
            continue;
        }
        if headers.len() == MAX_HEADERS {
            return Err(CpimError::TooManyHeaders);
        }
        let (name, value) = line.split_once(':').ok_or(CpimError::MalformedHeader)?;
        let name = name.trim();
        if !name.split('.').all(is_token) {
            return Err(CpimError::MalformedHeader);
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
}

/// A value that is an identifier (`imdn.Message-ID`, `DateTime`): unescaped and trimmed, and
/// refused if that yields control characters.
fn single_line(value: &str) -> Result<String, CpimError> {
    let value = escape::unescape(value);
    if value.chars().any(char::is_control) {
        return Err(CpimError::MalformedHeader);
    }
    Ok(value.trim().to_string())
}

/// `NS: [prefix] <uri>` (RFC 3862 §3.3.7).
fn parse_namespace(value: &str) -> Result<(String, String), CpimError> {
    let open = value.find('<').ok_or(CpimError::BadNamespace)?;
    let prefix = value[..open].trim();
    let uri = value[open + 1..].trim_end().strip_suffix('>').ok_or(CpimError::BadNamespace)?;
    if !(prefix.is_empty() || is_token(prefix)) || prefix.contains('.') || uri.is_empty() || uri.contains(['<', '>']) {
        return Err(CpimError::BadNamespace);
    }
    Ok((prefix.to_string(), escape::unescape(uri)))
}

/// `positive-delivery, display` → `["positive-delivery", "display"]` (RFC 5438 §6.2).
fn parse_dispositions(value: &str) -> Result<Vec<String>, CpimError> {
    let mut list: Vec<String> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        if !is_token(item) {
            return Err(CpimError::BadDisposition);
        }
        let item = item.to_ascii_lowercase();
        if !list.contains(&item) {
            list.push(item);
        }
        if list.len() > MAX_DISPOSITIONS {
            return Err(CpimError::BadDisposition);
        }
    }
    Ok(list)
}

/// RFC 3862 §3.1 `Token`: printable ASCII except separators (`.` allowed).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What SylkServer's webrtcgateway sends for `account-message` (sipsimple's CPIMPayload:
    /// CRLF between CPIM headers, the MIME part written by Python's email package with LF).
    const SYLKSERVER: &[u8] = b"From: Alice <sip:alice@example.com>\r\n\
To: <sip:bob@example.com>\r\n\
DateTime: 2026-01-01T12:00:00.123456+00:00\r\n\
NS: imdn <urn:ietf:params:imdn>\r\n\
imdn.Message-ID: 6c1b9fb0-6a2a-4b51-a4a7-8d3e1f0f2c11\r\n\
imdn.Disposition-Notification: positive-delivery, display\r\n\
\r\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=\"utf-8\"\n\
\n\
Hello Bob \xc3\xa9";

    /// RFC 3862 §6.1 style example: other namespaces, `Content-type` in odd case, no IMDN.
    const RFC3862: &[u8] = b"From: MR SANDERS <im:piglet@100akerwood.com>\r\n\
To: Depressed Donkey <im:eeyore@100akerwood.com>\r\n\
DateTime: 2000-12-13T13:40:00-08:00\r\n\
Subject: the weather will be fine today\r\n\
Subject:;lang=fr beau temps prevu pour aujourd'hui\r\n\
NS: MyFeatures <mid:MessageFeatures@id.foo.com>\r\n\
Require: MyFeatures.VitalMessageOption\r\n\
MyFeatures.VitalMessageOption: Confirmation-requested\r\n\
MyFeatures.WackyMessageOption: Use-silly-font\r\n\
\r\n\
Content-type: text/xml; charset=utf-8\r\n\
Content-ID: <1234567890@foo.com>\r\n\
\r\n\
<body>\r\n\
Here is the text of my message.\r\n\
</body>\r\n";

    /// RFC 5438 §7.2 style: an IMDN inside CPIM.
    const RFC5438_IMDN: &[u8] = b"From: Bob <im:bob@example.com>\r\n\
To: Alice <im:alice@example.com>\r\n\
NS: imdn <urn:ietf:params:imdn>\r\n\
imdn.Message-ID: d834jied93rf\r\n\
Content-Disposition-Oops: no\r\n\
DateTime: 2008-04-04T12:16:49-05:00\r\n\
\r\n\
Content-type: message/imdn+xml\r\n\
Content-Disposition: notification\r\n\
Content-length: 4\r\n\
\r\n\
<x/>\r\n";

    fn outgoing() -> CpimMessage {
        let mut message = CpimMessage::new(ContentType::new("text/plain", Some("utf-8")).unwrap(), "Hi ✓".into());
        message.from = Some(Identity::from_aor("alice@example.com", Some("Alice Liddell")));
        message.to = vec![Identity::from_aor("bob@example.com", None)];
        message.datetime = Some("2026-01-01T12:00:00Z".into());
        message.message_id = Some("m-1".into());
        message.disposition_notification = Some(vec!["positive-delivery".into(), "display".into()]);
        message
    }

    #[test]
    fn reads_what_sylkserver_sends() {
        let message = CpimMessage::parse(SYLKSERVER).unwrap();
        let from = message.from.as_ref().unwrap();
        assert_eq!((from.uri.as_str(), from.display_name.as_deref()), ("sip:alice@example.com", Some("Alice")));
        assert_eq!(message.to, vec![Identity::new("sip:bob@example.com", None)]);
        assert_eq!(message.datetime.as_deref(), Some("2026-01-01T12:00:00.123456+00:00"));
        assert_eq!(message.message_id.as_deref(), Some("6c1b9fb0-6a2a-4b51-a4a7-8d3e1f0f2c11"));
        assert_eq!(message.disposition_notification, Some(vec!["positive-delivery".into(), "display".into()]));
        assert!(message.wants("positive-delivery") && message.wants("display") && !message.wants("processing"));
        assert_eq!(message.content_type, ContentType::new("text/plain", Some("utf-8")).unwrap());
        assert_eq!(message.body_text(), Some("Hello Bob é"));
        assert!(message.extra.is_empty());
    }

    #[test]
    fn reads_the_rfc_3862_example() {
        let message = CpimMessage::parse(RFC3862).unwrap();
        assert_eq!(message.from.unwrap().display_name.as_deref(), Some("MR SANDERS"));
        assert_eq!(message.to[0].uri, "im:eeyore@100akerwood.com");
        assert_eq!(message.subject.as_deref(), Some("the weather will be fine today"));
        assert_eq!(message.message_id, None);
        assert_eq!(message.disposition_notification, None);
        assert_eq!(message.content_type.media_type, "text/xml");
        assert_eq!(message.body, b"<body>\r\nHere is the text of my message.\r\n</body>\r\n");
        let ns = Some("mid:MessageFeatures@id.foo.com".to_string());
        assert!(message.extra.contains(&CpimHeader {
            namespace: ns.clone(),
            name: "VitalMessageOption".into(),
            value: "Confirmation-requested".into()
        }));
        assert!(message.extra.contains(&CpimHeader {
            namespace: ns,
            name: "WackyMessageOption".into(),
            value: "Use-silly-font".into()
        }));
        assert!(message.extra.iter().any(|h| h.namespace.is_none() && h.name == "Require"));
    }

    #[test]
    fn reads_an_rfc_5438_imdn_and_honours_content_length() {
        let message = CpimMessage::parse(RFC5438_IMDN).unwrap();
        assert_eq!(message.message_id.as_deref(), Some("d834jied93rf"));
        assert_eq!(message.content_type.media_type, "message/imdn+xml");
        assert_eq!(message.content_disposition.as_deref(), Some("notification"));
        assert_eq!(message.body, b"<x/>");
    }

    #[test]
    fn tolerates_lf_only_case_folding_and_undeclared_imdn_prefix() {
        let body = b"from: <sip:a@example.com>\nTO: <sip:b@example.com>\nIMDN.message-id: abc\n\
imdn.disposition-notification: Display,display , positive-delivery\n\ncontent-type: TEXT/PLAIN\n\nhi";
        let message = CpimMessage::parse(body).unwrap();
        assert_eq!(message.from.unwrap().uri, "sip:a@example.com");
        assert_eq!(message.message_id.as_deref(), Some("abc"));
        assert_eq!(message.disposition_notification, Some(vec!["display".into(), "positive-delivery".into()]));
        assert_eq!(message.content_type.media_type, "text/plain");
        assert_eq!(message.body, b"hi");
    }

    #[test]
    fn missing_optional_headers_are_fine() {
        let message = CpimMessage::parse(b"\r\nContent-Type: text/plain\r\n\r\n").unwrap();
        assert_eq!(message.from, None);
        assert!(message.to.is_empty());
        assert_eq!(message.datetime, None);
        assert!(message.body.is_empty());
    }

    #[test]
    fn keeps_a_binary_payload_as_bytes() {
        let mut data = b"From: <sip:a@b>\r\n\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        let payload: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, 0x00, b'\r', b'\n']).collect();
        data.extend_from_slice(&payload);
        let message = CpimMessage::parse(&data).unwrap();
        assert_eq!(message.body, payload);
        assert_eq!(message.body_text(), None);
    }

    #[test]
    fn folded_header_lines_are_joined() {
        let body =
            b"From: \"Alice\r\n  Liddell\" <sip:a@b>\r\n\r\nContent-Type: text/plain;\r\n\tcharset=utf-8\r\n\r\nx";
        let message = CpimMessage::parse(body).unwrap();
        assert_eq!(message.from.unwrap().display_name.as_deref(), Some("Alice Liddell"));
        assert_eq!(message.content_type.charset.as_deref(), Some("utf-8"));
    }

    #[test]
    fn writes_crlf_cpim_with_imdn_headers() {
        let encoded = outgoing().encode().unwrap();
        let expected = "From: \"Alice Liddell\" <sip:alice@example.com>\r\n\
To: <sip:bob@example.com>\r\n\
DateTime: 2026-01-01T12:00:00Z\r\n\
NS: imdn <urn:ietf:params:imdn>\r\n\
imdn.Message-ID: m-1\r\n\
imdn.Disposition-Notification: positive-delivery, display\r\n\
\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hi ✓";
        assert_eq!(String::from_utf8(encoded).unwrap(), expected);
    }

    #[test]
    fn round_trips() {
        let mut message = outgoing();
        message.cc = vec![Identity::from_aor("carol@example.com", Some("Carol \"C\""))];
        message.subject = Some("line one\r\nline two".into());
        message.extra = vec![
            CpimHeader {
                namespace: Some("urn:ag-projects:xml:ns:cpim".into()),
                name: "Message-Type".into(),
                value: "status".into(),
            },
            CpimHeader { namespace: None, name: "Required".into(), value: "x".into() },
            CpimHeader {
                namespace: Some("urn:ag-projects:xml:ns:cpim".into()),
                name: "Other".into(),
                value: "\\y".into(),
            },
        ];
        message.body = vec![0, 159, 146, 150, b'\r', b'\n', b'\r', b'\n'];
        let encoded = message.encode().unwrap();
        assert_eq!(CpimMessage::parse(&encoded).unwrap(), message);

        let mut imdn = CpimMessage::new(ContentType::new("message/imdn+xml", None).unwrap(), b"<imdn/>".to_vec());
        imdn.message_id = Some("n-1".into());
        imdn.content_disposition = Some("notification".into());
        let encoded = imdn.encode().unwrap();
        assert!(String::from_utf8_lossy(&encoded).contains("Content-Disposition: notification\r\n"));
        assert_eq!(CpimMessage::parse(&encoded).unwrap(), imdn);
    }

    #[test]
    fn injection_through_values_cannot_add_headers() {
        let mut message = outgoing();
        message.from = Some(Identity::from_aor("eve@example.com", Some("Eve\r\nimdn.Message-ID: forged\r\n\r\n")));
        message.subject = Some("hi\r\nTo: <sip:victim@example.com>\r\n\r\nContent-Type: text/html".into());
        let encoded = message.encode().unwrap();
        let parsed = CpimMessage::parse(&encoded).unwrap();
        assert_eq!(parsed.subject, message.subject);
        assert_eq!(parsed.to, message.to);
        assert_eq!(parsed.message_id, message.message_id);
        assert_eq!(parsed.content_type, message.content_type);
        assert_eq!(parsed.from.unwrap().display_name.as_deref(), Some("Eveimdn.Message-ID: forged"));

        let mut bad = outgoing();
        bad.message_id = Some("real\r\nTo: <sip:victim@example.com>".into());
        assert_eq!(bad.encode(), Err(CpimError::MalformedHeader));
        let mut bad = outgoing();
        bad.datetime = Some("now\nContent-Type: text/html".into());
        assert_eq!(bad.encode(), Err(CpimError::MalformedHeader));
        let mut bad = outgoing();
        bad.disposition_notification = Some(vec!["display\r\nX: y".into()]);
        assert_eq!(bad.encode(), Err(CpimError::BadDisposition));
        let mut bad = outgoing();
        bad.content_disposition = Some("notification\r\nX: y".into());
        assert_eq!(bad.encode(), Err(CpimError::BadContentType));
        let mut bad = outgoing();
        bad.extra = vec![CpimHeader { namespace: None, name: "X\r\nY".into(), value: String::new() }];
        assert_eq!(bad.encode(), Err(CpimError::MalformedHeader));
        let mut bad = outgoing();
        bad.to = vec![Identity::new("sip:b@x>\r\nX: y", None)];
        assert_eq!(bad.encode(), Err(CpimError::BadAddress(IdentityError::BadUri)));
    }

    #[test]
    fn rejects_hostile_and_broken_input() {
        let cases: Vec<(Vec<u8>, CpimError)> = vec![
            (b"".to_vec(), CpimError::NoSeparator),
            (b"From: <sip:a@b>\r\n".to_vec(), CpimError::NoSeparator),
            (b"From: <sip:a@b>\r\n\r\nContent-Type: text/plain".to_vec(), CpimError::NoSeparator),
            (b"From: <sip:a@b>\r\n\r\n\r\nhello".to_vec(), CpimError::MissingContentType),
            (b"just some text\r\n\r\nhello\r\n\r\n".to_vec(), CpimError::MalformedHeader),
            (b" folded first\r\n\r\n".to_vec(), CpimError::MalformedHeader),
            (b"Bad Name: x\r\n\r\n".to_vec(), CpimError::MalformedHeader),
            (
                b"From: nobody\r\n\r\nContent-Type: text/plain\r\n\r\n".to_vec(),
                CpimError::BadAddress(IdentityError::BadUri),
            ),
            (
                b"From: <sip:a@b>\r\nFrom: <sip:c@d>\r\n\r\nContent-Type: text/plain\r\n\r\n".to_vec(),
                CpimError::Duplicate("From"),
            ),
            (
                b"imdn.Message-ID: 1\r\nimdn.Message-ID: 2\r\n\r\nContent-Type: a/b\r\n\r\n".to_vec(),
                CpimError::Duplicate("imdn.Message-ID"),
            ),
            (b"NS: imdn urn:x\r\n\r\nContent-Type: a/b\r\n\r\n".to_vec(), CpimError::BadNamespace),
            (b"\r\nContent-Type: text\r\n\r\n".to_vec(), CpimError::BadContentType),
            (b"\r\nContent-Type: a/b\r\nContent-Type: a/b\r\n\r\n".to_vec(), CpimError::Duplicate("Content-Type")),
            (
                b"\r\nContent-Type: a/b\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec(),
                CpimError::UnsupportedTransferEncoding,
            ),
            (
                b"imdn.Disposition-Notification: a b\r\n\r\nContent-Type: a/b\r\n\r\n".to_vec(),
                CpimError::BadDisposition,
            ),
            (b"imdn.Message-ID: a\\u000db\r\n\r\nContent-Type: a/b\r\n\r\n".to_vec(), CpimError::MalformedHeader),
            (b"DateTime: \\u0000\r\n\r\nContent-Type: a/b\r\n\r\n".to_vec(), CpimError::MalformedHeader),
        ];
        for (data, error) in cases {
            assert_eq!(CpimMessage::parse(&data), Err(error), "{:?}", String::from_utf8_lossy(&data));
        }
    }

    #[test]
    fn enforces_header_limits() {
        let many = "X-A: b\r\n".repeat(MAX_HEADERS + 1) + "\r\nContent-Type: a/b\r\n\r\n";
        assert_eq!(CpimMessage::parse(many.as_bytes()), Err(CpimError::TooManyHeaders));
        let exactly = "X-A: b\r\n".repeat(MAX_HEADERS) + "\r\nContent-Type: a/b\r\n\r\n";
        assert_eq!(CpimMessage::parse(exactly.as_bytes()).unwrap().extra.len(), MAX_HEADERS);
        let long = format!("Subject: {}\r\n\r\nContent-Type: a/b\r\n\r\n", "x".repeat(MAX_HEADER_LINE));
        assert_eq!(CpimMessage::parse(long.as_bytes()), Err(CpimError::HeaderTooLong));
        let unterminated = "x".repeat(MAX_HEADER_LINE * 4);
        assert_eq!(CpimMessage::parse(unterminated.as_bytes()), Err(CpimError::HeaderTooLong));
        let folded = format!(
            "Subject: a\r\n{}\r\n\r\nContent-Type: a/b\r\n\r\n",
            format!(" {}\r\n", "y".repeat(1000)).repeat(5)
        );
        assert_eq!(CpimMessage::parse(folded.as_bytes()), Err(CpimError::HeaderTooLong));
        let dispositions = format!(
            "imdn.Disposition-Notification: {}\r\n\r\nContent-Type: a/b\r\n\r\n",
            (0..=MAX_DISPOSITIONS).map(|i| format!("d{i}")).collect::<Vec<_>>().join(",")
        );
        assert_eq!(CpimMessage::parse(dispositions.as_bytes()), Err(CpimError::BadDisposition));
    }

    #[test]
    fn what_parses_encodes_and_reads_back_the_same() {
        let mut checked = 0;
        for sample in [SYLKSERVER, RFC3862, RFC5438_IMDN] {
            for i in 0..sample.len() {
                for byte in [b' ', b'\\', b';', b'.', b'"', b'<', b',', 0xff] {
                    let mut mutated = sample.to_vec();
                    mutated[i] = byte;
                    let Ok(parsed) = CpimMessage::parse(&mutated) else { continue };
                    let Ok(encoded) = parsed.encode() else { continue };
                    assert_eq!(
                        CpimMessage::parse(&encoded).as_ref(),
                        Ok(&parsed),
                        "{:?}",
                        String::from_utf8_lossy(&mutated)
                    );
                    checked += 1;
                }
            }
        }
        let edges = [
            "DateTime: \\u0020x\\u0020\r\n",
            "Subject: \\u003blang=x\r\n",
            "Subject: \\u0020\r\n",
            "From: \" x \" <sip:a@b>\r\n",
            "From: \"\\u0020\" <sip:a@b>\r\n",
            "X-Ext: v\\u0020\r\n",
            "NS: p <urn:p>\r\np.X: \\u0009\r\n",
            "imdn.Message-ID: \\u0020\r\n",
        ];
        for edge in edges {
            let data = format!("{edge}\r\nContent-Type: text/plain\r\n\r\nx");
            let parsed = CpimMessage::parse(data.as_bytes()).unwrap();
            let encoded = parsed.encode().unwrap();
            assert_eq!(CpimMessage::parse(&encoded), Ok(parsed), "{edge}");
        }
        assert!(checked > 1000, "{checked}");
    }

    #[test]
    fn parse_is_total_on_prefixes_and_mutations() {
        // Every prefix and a sweep of single-byte mutations of real bodies: no panic.
        for sample in [SYLKSERVER, RFC3862, RFC5438_IMDN] {
            for end in 0..sample.len() {
                let _ = CpimMessage::parse(&sample[..end]);
            }
            for i in 0..sample.len() {
                for byte in [0u8, b'\n', b'\r', b':', b'<', b'"', b'\\', b'.', 0xff] {
                    let mut mutated = sample.to_vec();
                    mutated[i] = byte;
                    let _ = CpimMessage::parse(&mutated);
                }
            }
        }
    }
}
