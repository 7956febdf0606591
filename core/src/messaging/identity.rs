//! A messaging address: a URI with an optional display name, and its CPIM form
//! (RFC 3862 §3.3.1, §3.3.2: `[Formal-name] "<" URI ">"`).

use std::fmt;

use super::escape;

/// Longest URI accepted in an address, in bytes.
pub const MAX_URI_LEN: usize = 1024;
/// Longest display name accepted in an address, in bytes.
pub const MAX_DISPLAY_NAME_LEN: usize = 256;

/// Who sends or receives a message. `uri` is a full URI (`sip:alice@example.com`, `im:…`);
/// `display_name` never contains control characters once parsed (they are dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uri: String,
    pub display_name: Option<String>,
}

/// Why an address cannot be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityError {
    /// The URI is empty, too long, or has a character a URI cannot hold (space, control,
    /// `<`, `>`, `"`, `\`).
    BadUri,
    /// The display name is longer than [`MAX_DISPLAY_NAME_LEN`].
    DisplayNameTooLong,
    /// Not `[name] <uri>`: unbalanced quote or angle bracket, or text after the `>`.
    Syntax,
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdentityError::BadUri => "invalid URI in address",
            IdentityError::DisplayNameTooLong => "display name too long",
            IdentityError::Syntax => "invalid address syntax",
        })
    }
}

impl std::error::Error for IdentityError {}

impl Identity {
    /// An identity for `uri` as given (a full URI).
    pub fn new(uri: impl Into<String>, display_name: Option<&str>) -> Identity {
        Identity { uri: uri.into(), display_name: display_name.map(str::to_string) }
    }

    /// From an AOR as sylkRTC carries it (`alice@example.com`): `sip:` is prefixed unless the
    /// value already has a `sip:`, `sips:` or `im:` scheme. An empty display name is none.
    pub fn from_aor(aor: &str, display_name: Option<&str>) -> Identity {
        let uri = if scheme_len(aor).is_some() { aor.to_string() } else { format!("sip:{aor}") };
        Identity { uri, display_name: display_name.filter(|name| !name.is_empty()).map(str::to_string) }
    }

    /// The AOR that sylkRTC events carry (`sender.uri`): the URI without its `sip:`/`sips:`/
    /// `im:`/`pres:` scheme and without URI parameters or headers, e.g. `alice@example.com`.
    pub fn aor(&self) -> String {
        let uri = self.uri.trim();
        let body = match scheme_len(uri) {
            Some(n) => &uri[n..],
            None => uri,
        };
        let host_start = body.rfind('@').map_or(0, |at| at + 1);
        let end = body[host_start..].find([';', '?']).map_or(body.len(), |i| host_start + i);
        body[..end].to_string()
    }

    /// Parses the value of a CPIM `From`, `To` or `cc` header as received (escapes still in
    /// it). Accepts `<uri>`, `Name Words <uri>`, `"Quoted \"Name\"" <uri>`, and a bare URI.
    pub fn parse_cpim(raw: &str) -> Result<Identity, IdentityError> {
        let raw = raw.trim();
        // A quoted name must be followed by `<`; if not (sipsimple writes names unquoted, so
        // `"Bob" Smith <sip:…>` happens), the whole text before `<` is the name.
        let quoted = raw.strip_prefix('"').and_then(|quoted| {
            let end = closing_quote(quoted)?;
            let rest = quoted[end + 1..].trim_start();
            rest.starts_with('<').then(|| (Some(escape::unescape(&quoted[..end])), rest))
        });
        let (display, rest) = if let Some(quoted) = quoted {
            quoted
        } else if let Some(open) = raw.find('<') {
            let name = raw[..open].trim();
            (Some(escape::unescape(name)), &raw[open..])
        } else {
            (None, raw)
        };
        let uri = match rest.strip_prefix('<') {
            Some(inner) => inner.strip_suffix('>').ok_or(IdentityError::Syntax)?,
            None if display.is_none() => rest,
            None => return Err(IdentityError::Syntax),
        };
        check_uri(uri)?;
        let display_name = display.map(|name| clean_display_name(&name)).filter(|name| !name.is_empty());
        if display_name.as_ref().is_some_and(|name| name.len() > MAX_DISPLAY_NAME_LEN) {
            return Err(IdentityError::DisplayNameTooLong);
        }
        Ok(Identity { uri: uri.to_string(), display_name })
    }

    /// Appends the CPIM form: `"Display Name" <uri>` (quotes, backslashes and control
    /// characters escaped, RFC 3862 §3.2) or `<uri>` without a display name.
    pub fn write_cpim(&self, out: &mut String) -> Result<(), IdentityError> {
        check_uri(&self.uri)?;
        if let Some(name) = self.display_name.as_deref().filter(|name| !name.is_empty()) {
            if name.len() > MAX_DISPLAY_NAME_LEN {
                return Err(IdentityError::DisplayNameTooLong);
            }
            out.push('"');
            escape::escape_into(name, true, out);
            out.push_str("\" ");
        }
        out.push('<');
        out.push_str(&self.uri);
        out.push('>');
        Ok(())
    }
}

/// Length of a leading `sip:`, `sips:`, `im:` or `pres:` scheme (any case).
fn scheme_len(uri: &str) -> Option<usize> {
    let (scheme, _) = uri.split_once(':')?;
    ["sip", "sips", "im", "pres"].iter().any(|s| scheme.eq_ignore_ascii_case(s)).then_some(scheme.len() + 1)
}

/// Index of the `"` that closes a quoted string whose opening quote was just consumed.
fn closing_quote(quoted: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in quoted.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// A display name as forwarded: control characters (a decoded `\u000d\u000a`, say) dropped,
/// surrounding blanks trimmed.
fn clean_display_name(name: &str) -> String {
    let kept: String = name.chars().filter(|c| !c.is_control()).collect();
    kept.trim().to_string()
}

fn check_uri(uri: &str) -> Result<(), IdentityError> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | '\\');
    if uri.is_empty() || uri.len() > MAX_URI_LEN || uri.chars().any(bad) || !uri.contains(':') {
        return Err(IdentityError::BadUri);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(identity: &Identity) -> String {
        let mut out = String::new();
        identity.write_cpim(&mut out).unwrap();
        out
    }

    #[test]
    fn parses_the_forms_seen_on_the_wire() {
        let cases = [
            ("<sip:bob@example.com>", "sip:bob@example.com", None),
            ("Alice <sip:alice@example.com>", "sip:alice@example.com", Some("Alice")),
            ("MR SANDERS <im:piglet@100akerwood.com>", "im:piglet@100akerwood.com", Some("MR SANDERS")),
            ("\"Bob \\\"B\\\" Smith\" <sip:bob@example.com>", "sip:bob@example.com", Some("Bob \"B\" Smith")),
            ("\"\" <sip:bob@example.com>", "sip:bob@example.com", None),
            ("  sip:carol@example.com  ", "sip:carol@example.com", None),
            ("Zo\\u00eb <sip:zoe@example.com>", "sip:zoe@example.com", Some("Zoë")),
            ("\"Bob\" Smith <sip:bob@example.com>", "sip:bob@example.com", Some("\"Bob\" Smith")),
            ("Al \"x\" <sip:al@example.com>", "sip:al@example.com", Some("Al \"x\"")),
            ("\"Al <sip:al@example.com>", "sip:al@example.com", Some("\"Al")),
        ];
        for (raw, uri, name) in cases {
            let identity = Identity::parse_cpim(raw).unwrap();
            assert_eq!(identity.uri, uri, "{raw}");
            assert_eq!(identity.display_name.as_deref(), name, "{raw}");
        }
    }

    #[test]
    fn rejects_broken_addresses() {
        for raw in ["", "Alice", "Alice <sip:a@b", "<sip:a@b> trailing", "<>", "<sip:a b@c>", "<nouri>"] {
            assert!(Identity::parse_cpim(raw).is_err(), "{raw:?}");
        }
        let long = format!("<sip:{}@example.com>", "a".repeat(MAX_URI_LEN));
        assert_eq!(Identity::parse_cpim(&long), Err(IdentityError::BadUri));
        let long_name = format!("{} <sip:a@example.com>", "n".repeat(MAX_DISPLAY_NAME_LEN + 1));
        assert_eq!(Identity::parse_cpim(&long_name), Err(IdentityError::DisplayNameTooLong));
    }

    #[test]
    fn writes_quoted_and_escaped_display_names() {
        assert_eq!(
            written(&Identity::from_aor("alice@example.com", Some("Alice"))),
            "\"Alice\" <sip:alice@example.com>"
        );
        assert_eq!(written(&Identity::from_aor("bob@example.com", None)), "<sip:bob@example.com>");
        assert_eq!(written(&Identity::from_aor("bob@example.com", Some(""))), "<sip:bob@example.com>");
        let evil = Identity::from_aor("eve@example.com", Some("Eve\"\r\nTo: <sip:x@y>\\"));
        let out = written(&evil);
        assert_eq!(out, "\"Eve\\\"\\u000d\\u000aTo: <sip:x@y>\\\\\" <sip:eve@example.com>");
        assert!(!out.contains('\r') && !out.contains('\n'));
        // Read back: the structure holds, and the control characters are dropped from the name.
        let back = Identity::parse_cpim(&out).unwrap();
        assert_eq!(back.uri, "sip:eve@example.com");
        assert_eq!(back.display_name.as_deref(), Some("Eve\"To: <sip:x@y>\\"));
    }

    #[test]
    fn refuses_to_write_a_uri_that_would_break_the_header() {
        for uri in ["sip:a@b>\r\nX: y", "sip:a b@c", "", "sip:a\"@b"] {
            assert_eq!(Identity::new(uri, None).write_cpim(&mut String::new()), Err(IdentityError::BadUri));
        }
    }

    #[test]
    fn round_trips_through_the_cpim_form() {
        for (aor, name) in [("a@b.example", Some("Ann O'Neil, PhD")), ("x@y", None), ("u@h", Some("日本 \\ \""))] {
            let identity = Identity::from_aor(aor, name);
            assert_eq!(Identity::parse_cpim(&written(&identity)).unwrap(), identity);
        }
    }

    #[test]
    fn aor_drops_scheme_parameters_and_headers() {
        assert_eq!(Identity::new("sip:alice@example.com;transport=tcp", None).aor(), "alice@example.com");
        assert_eq!(Identity::new("SIPS:alice@example.com:5061?subject=x", None).aor(), "alice@example.com:5061");
        assert_eq!(Identity::new("im:bob@example.com", None).aor(), "bob@example.com");
        assert_eq!(Identity::new("sip:a;b@example.com;x", None).aor(), "a;b@example.com");
        assert_eq!(Identity::new("bob@example.com", None).aor(), "bob@example.com");
        assert_eq!(Identity::from_aor("sips:c@d", None).uri, "sips:c@d");
    }
}
