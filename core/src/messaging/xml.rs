//! A small, strict XML 1.0 reader for the few documents messaging reads (IMDN), and the text
//! escaping for what it writes. It builds a bounded element tree with resolved namespaces:
//! no DTD (a `<!DOCTYPE` is refused, so no entity expansion), only the five predefined
//! entities and character references, limits on depth, element count and attributes.

use std::fmt;

/// Deepest element nesting accepted.
pub(crate) const MAX_DEPTH: usize = 8;
/// Most elements accepted in one document.
pub(crate) const MAX_ELEMENTS: usize = 64;
/// Most attributes accepted on one element.
pub(crate) const MAX_ATTRIBUTES: usize = 16;

/// One element: namespace URI (`None` if unqualified), local name, text content (entities
/// decoded, child text excluded) and children in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub ns: Option<String>,
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

/// Why a document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlError {
    /// Not well-formed (names the construct).
    Syntax(&'static str),
    /// A `<!DOCTYPE`: DTDs are not accepted.
    Doctype,
    /// An entity other than the predefined five, or a bad character reference.
    Entity,
    /// A namespace prefix that no `xmlns:` declares.
    UnboundPrefix,
    /// Past [`MAX_DEPTH`], [`MAX_ELEMENTS`] or [`MAX_ATTRIBUTES`].
    Limit,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmlError::Syntax(what) => write!(f, "malformed XML: {what}"),
            XmlError::Doctype => f.write_str("XML DOCTYPE not accepted"),
            XmlError::Entity => f.write_str("unknown XML entity"),
            XmlError::UnboundPrefix => f.write_str("undeclared XML namespace prefix"),
            XmlError::Limit => f.write_str("XML document too complex"),
        }
    }
}

impl std::error::Error for XmlError {}

/// Parses a whole document into its root element. Total: never panics.
pub(crate) fn parse(doc: &str) -> Result<Element, XmlError> {
    let mut reader = Reader { s: doc.strip_prefix('\u{feff}').unwrap_or(doc), pos: 0, elements: 0 };
    reader.misc()?;
    if !reader.rest().starts_with('<') {
        return Err(XmlError::Syntax("no root element"));
    }
    let mut scopes = Vec::new();
    let root = reader.element(1, &mut scopes)?;
    reader.misc()?;
    if !reader.rest().is_empty() {
        return Err(XmlError::Syntax("content after the root element"));
    }
    Ok(root)
}

/// Appends `text` escaped for element content or a quoted attribute. Returns false (and
/// appends nothing more) at the first character XML 1.0 cannot carry (C0 controls other than
/// tab, LF, CR).
pub(crate) fn escape_into(text: &str, out: &mut String) -> bool {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c if !is_xml_char(c) => return false,
            c => out.push(c),
        }
    }
    true
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{fffe}' && c != '\u{ffff}')
}

struct Reader<'a> {
    s: &'a str,
    pos: usize,
    elements: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start_matches([' ', '\t', '\r', '\n']).len();
    }

    /// Moves past `end`, which must occur.
    fn skip_past(&mut self, end: &str, what: &'static str) -> Result<&'a str, XmlError> {
        let rest = self.rest();
        let at = rest.find(end).ok_or(XmlError::Syntax(what))?;
        self.pos += at + end.len();
        Ok(&rest[..at])
    }

    /// Whitespace, comments and processing instructions (the XML declaration included).
    fn misc(&mut self) -> Result<(), XmlError> {
        loop {
            self.skip_ws();
            let rest = self.rest();
            if rest.starts_with("<!--") {
                self.pos += 4;
                self.skip_past("-->", "unterminated comment")?;
            } else if rest.starts_with("<?") {
                self.pos += 2;
                self.skip_past("?>", "unterminated processing instruction")?;
            } else if rest.starts_with("<!DOCTYPE") || rest.starts_with("<!doctype") {
                return Err(XmlError::Doctype);
            } else {
                return Ok(());
            }
        }
    }

    fn name(&mut self) -> Result<&'a str, XmlError> {
        let rest = self.rest();
        let len =
            rest.find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))).unwrap_or(rest.len());
        let name = &rest[..len];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.') {
            return Err(XmlError::Syntax("bad name"));
        }
        self.pos += len;
        Ok(name)
    }

    /// One element starting at `<`; `scopes` holds the prefix bindings in force.
    fn element(&mut self, depth: usize, scopes: &mut Vec<(String, String)>) -> Result<Element, XmlError> {
        self.elements += 1;
        if depth > MAX_DEPTH || self.elements > MAX_ELEMENTS {
            return Err(XmlError::Limit);
        }
        self.pos += 1; // '<'
        let qname = self.name()?;
        let scope_mark = scopes.len();
        let mut attributes: Vec<&str> = Vec::new();
        let empty = loop {
            let before = self.pos;
            self.skip_ws();
            let rest = self.rest();
            if let Some(after) = rest.strip_prefix("/>") {
                self.pos = self.s.len() - after.len();
                break true;
            }
            if rest.starts_with('>') {
                self.pos += 1;
                break false;
            }
            if self.pos == before {
                return Err(XmlError::Syntax("attribute without preceding space"));
            }
            let name = self.name()?;
            if attributes.contains(&name) {
                return Err(XmlError::Syntax("duplicate attribute"));
            }
            attributes.push(name);
            if attributes.len() > MAX_ATTRIBUTES {
                return Err(XmlError::Limit);
            }
            self.skip_ws();
            if !self.rest().starts_with('=') {
                return Err(XmlError::Syntax("attribute without value"));
            }
            self.pos += 1;
            self.skip_ws();
            let Some(quote @ ('"' | '\'')) = self.rest().chars().next() else {
                return Err(XmlError::Syntax("unquoted attribute value"));
            };
            self.pos += 1;
            let raw = self.skip_past(if quote == '"' { "\"" } else { "'" }, "unterminated attribute value")?;
            if raw.contains('<') {
                return Err(XmlError::Syntax("'<' in attribute value"));
            }
            let value = decode(raw)?;
            if name == "xmlns" {
                scopes.push((String::new(), value));
            } else if let Some(prefix) = name.strip_prefix("xmlns:") {
                if value.is_empty() {
                    return Err(XmlError::Syntax("empty namespace binding"));
                }
                scopes.push((prefix.to_string(), value));
            }
        };
        let (prefix, local) = qname.split_once(':').unwrap_or(("", qname));
        let ns = match scopes.iter().rev().find(|(p, _)| p == prefix) {
            Some((_, uri)) if uri.is_empty() => None,
            Some((_, uri)) => Some(uri.clone()),
            None if prefix.is_empty() => None,
            None => return Err(XmlError::UnboundPrefix),
        };
        let mut element = Element { ns, name: local.to_string(), text: String::new(), children: Vec::new() };
        if !empty {
            self.content(depth, qname, &mut element, scopes)?;
        }
        scopes.truncate(scope_mark);
        Ok(element)
    }

    /// Content up to and including the end tag of `qname`.
    fn content(
        &mut self,
        depth: usize,
        qname: &str,
        element: &mut Element,
        scopes: &mut Vec<(String, String)>,
    ) -> Result<(), XmlError> {
        loop {
            let rest = self.rest();
            if let Some(after) = rest.strip_prefix("</") {
                self.pos = self.s.len() - after.len();
                let name = self.name()?;
                self.skip_ws();
                if name != qname || !self.rest().starts_with('>') {
                    return Err(XmlError::Syntax("mismatched end tag"));
                }
                self.pos += 1;
                return Ok(());
            } else if rest.starts_with("<!--") {
                self.pos += 4;
                self.skip_past("-->", "unterminated comment")?;
            } else if rest.starts_with("<![CDATA[") {
                self.pos += 9;
                let text = self.skip_past("]]>", "unterminated CDATA")?;
                element.text.push_str(text);
            } else if rest.starts_with("<?") {
                self.pos += 2;
                self.skip_past("?>", "unterminated processing instruction")?;
            } else if rest.starts_with("<!") {
                return Err(XmlError::Syntax("markup declaration in content"));
            } else if rest.starts_with('<') {
                let child = self.element(depth + 1, scopes)?;
                element.children.push(child);
            } else if rest.is_empty() {
                return Err(XmlError::Syntax("unterminated element"));
            } else {
                let len = rest.find('<').unwrap_or(rest.len());
                element.text.push_str(&decode(&rest[..len])?);
                self.pos += len;
            }
        }
    }
}

/// Decodes the predefined entities and character references of `raw`.
fn decode(raw: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..].find(';').ok_or(XmlError::Entity)?;
        let entity = &rest[amp + 1..amp + semi];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse::<u32>().ok()
                } else {
                    None
                };
                code.filter(|_| entity.len() <= 10)
                    .and_then(char::from_u32)
                    .filter(|c| is_xml_char(*c))
                    .ok_or(XmlError::Entity)?
            }
        };
        out.push(c);
        rest = &rest[amp + semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_namespaces_text_and_children() {
        let doc = "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c -->\n<a:root xmlns:a=\"urn:a\" xmlns=\"urn:d\">\
<child x='1'>one &amp; &lt;two&gt; &#233;&#xe9; <![CDATA[<raw>&amp;]]></child><a:e/><plain xmlns=\"\"/></a:root>\n";
        let root = parse(doc).unwrap();
        assert_eq!((root.ns.as_deref(), root.name.as_str()), (Some("urn:a"), "root"));
        assert_eq!(root.children.len(), 3);
        assert_eq!(root.children[0].ns.as_deref(), Some("urn:d"));
        assert_eq!(root.children[0].text, "one & <two> éé <raw>&amp;");
        assert_eq!((root.children[1].ns.as_deref(), root.children[1].name.as_str()), (Some("urn:a"), "e"));
        assert_eq!(root.children[2].ns, None);
    }

    #[test]
    fn refuses_what_it_does_not_support_or_is_malformed() {
        let cases = [
            ("", XmlError::Syntax("no root element")),
            ("text", XmlError::Syntax("no root element")),
            ("<!DOCTYPE x [<!ENTITY a \"b\">]><x/>", XmlError::Doctype),
            ("<x>&a;</x>", XmlError::Entity),
            ("<x>&#0;</x>", XmlError::Entity),
            ("<x>&#x110000;</x>", XmlError::Entity),
            ("<x>&amp</x>", XmlError::Entity),
            ("<p:x/>", XmlError::UnboundPrefix),
            ("<x></y>", XmlError::Syntax("mismatched end tag")),
            ("<x>", XmlError::Syntax("unterminated element")),
            ("<x/><y/>", XmlError::Syntax("content after the root element")),
            ("<x a=\"1\" a=\"2\"/>", XmlError::Syntax("duplicate attribute")),
            ("<x a=1/>", XmlError::Syntax("unquoted attribute value")),
            ("<x a=\"<\"/>", XmlError::Syntax("'<' in attribute value")),
            ("<x a=\"1\"b=\"2\"/>", XmlError::Syntax("attribute without preceding space")),
            ("<x><!ENTITY y></x>", XmlError::Syntax("markup declaration in content")),
            ("<1x/>", XmlError::Syntax("bad name")),
            ("<x xmlns:p=\"\"/>", XmlError::Syntax("empty namespace binding")),
        ];
        for (doc, error) in cases {
            assert_eq!(parse(doc), Err(error), "{doc:?}");
        }
    }

    #[test]
    fn enforces_limits() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deep), Err(XmlError::Limit));
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        let wide = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS));
        assert_eq!(parse(&wide), Err(XmlError::Limit));
        let attrs: String = (0..=MAX_ATTRIBUTES).map(|i| format!(" a{i}=\"\"")).collect();
        assert_eq!(parse(&format!("<x{attrs}/>")), Err(XmlError::Limit));
        // A billion-laughs style document dies at the DOCTYPE, before any expansion.
        let laughs = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><lolz>&lol2;</lolz>";
        assert_eq!(parse(laughs), Err(XmlError::Doctype));
    }

    #[test]
    fn escapes_what_it_writes() {
        let mut out = String::new();
        assert!(escape_into("<a href=\"x\">'&'</a>\r\n\t", &mut out));
        assert_eq!(out, "&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;&#13;\n\t");
        let doc = format!("<x>{out}</x>");
        assert_eq!(parse(&doc).unwrap().text, "<a href=\"x\">'&'</a>\r\n\t");
        assert!(!escape_into("bell\u{7}", &mut String::new()));
    }
}
