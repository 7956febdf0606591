//! A MIME `Content-Type` value (RFC 2045 §5.1) reduced to what messaging needs: the media type
//! and the `charset` parameter.

use std::fmt;

/// Longest Content-Type value accepted, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 512;

/// A parsed Content-Type: `media_type` is `type/subtype` in lower case, `charset` the
/// lower-cased `charset` parameter if present. Other parameters are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    pub media_type: String,
    pub charset: Option<String>,
}

/// Why a Content-Type value cannot be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentTypeError {
    /// Not `token/token *(; token=value)`, or longer than [`MAX_CONTENT_TYPE_LEN`].
    Invalid,
}

impl fmt::Display for ContentTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid Content-Type")
    }
}

impl std::error::Error for ContentTypeError {}

impl ContentType {
    /// A content type from its parts; `media_type` must be `token/token`, `charset` a token.
    pub fn new(media_type: &str, charset: Option<&str>) -> Result<ContentType, ContentTypeError> {
        let media_type = media_type.trim().to_ascii_lowercase();
        let valid_type = media_type.split_once('/').is_some_and(|(t, s)| is_token(t) && is_token(s));
        let valid_charset = charset.is_none_or(is_token);
        if !valid_type || !valid_charset || media_type.len() > MAX_CONTENT_TYPE_LEN {
            return Err(ContentTypeError::Invalid);
        }
        Ok(ContentType { media_type, charset: charset.map(str::to_ascii_lowercase) })
    }

    /// Parses a header value such as `text/plain; charset="UTF-8"`. Parameter values may be
    /// tokens or quoted strings; unknown parameters are skipped.
    pub fn parse(value: &str) -> Result<ContentType, ContentTypeError> {
        if value.len() > MAX_CONTENT_TYPE_LEN {
            return Err(ContentTypeError::Invalid);
        }
        let (media_type, mut rest) = value.split_once(';').unwrap_or((value, ""));
        let mut parsed = ContentType::new(media_type, None)?;
        while !rest.trim().is_empty() {
            let (name, after) = rest.split_once('=').ok_or(ContentTypeError::Invalid)?;
            let name = name.trim();
            if !is_token(name) {
                return Err(ContentTypeError::Invalid);
            }
            let after = after.trim_start();
            let (param, next) = if let Some(quoted) = after.strip_prefix('"') {
                let (inner, tail) = split_quoted(quoted).ok_or(ContentTypeError::Invalid)?;
                let tail = tail.trim_start();
                let next = match tail.strip_prefix(';') {
                    Some(next) => next,
                    None if tail.is_empty() => "",
                    None => return Err(ContentTypeError::Invalid),
                };
                (inner, next)
            } else {
                let (token, next) = after.split_once(';').unwrap_or((after, ""));
                let token = token.trim();
                if !is_token(token) {
                    return Err(ContentTypeError::Invalid);
                }
                (token.to_string(), next)
            };
            if name.eq_ignore_ascii_case("charset") {
                if !is_token(&param) {
                    return Err(ContentTypeError::Invalid);
                }
                parsed.charset = Some(param.to_ascii_lowercase());
            }
            rest = next;
        }
        Ok(parsed)
    }

    /// Whether the media type is `text/*`.
    pub fn is_text(&self) -> bool {
        self.media_type.starts_with("text/")
    }
}

impl fmt::Display for ContentType {
    /// `type/subtype` or `type/subtype; charset=…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.media_type)?;
        if let Some(charset) = &self.charset {
            write!(f, "; charset={charset}")?;
        }
        Ok(())
    }
}

/// RFC 2045 token: printable ASCII except space and tspecials.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// Splits `inner"rest` at the closing quote, decoding `\x` quoted pairs.
fn split_quoted(quoted: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in quoted.char_indices() {
        match c {
            _ if escaped => {
                out.push(c);
                escaped = false;
            }
            '\\' => escaped = true,
            '"' => return Some((out, &quoted[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_world_values() {
        let cases = [
            ("text/plain", "text/plain", None),
            ("Text/Plain; charset=UTF-8", "text/plain", Some("utf-8")),
            ("text/plain; charset=\"utf-8\"", "text/plain", Some("utf-8")),
            ("text/plain;charset=utf-8;format=flowed", "text/plain", Some("utf-8")),
            ("message/cpim", "message/cpim", None),
            ("  message/imdn+xml  ", "message/imdn+xml", None),
            ("text/html; name=\"a;b\"; charset=iso-8859-1", "text/html", Some("iso-8859-1")),
            ("application/sylk-file-transfer;", "application/sylk-file-transfer", None),
        ];
        for (value, media_type, charset) in cases {
            let parsed = ContentType::parse(value).unwrap();
            assert_eq!(parsed.media_type, media_type, "{value}");
            assert_eq!(parsed.charset.as_deref(), charset, "{value}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for value in [
            "",
            "text",
            "text/",
            "/plain",
            "text/plain charset=utf-8",
            "te xt/plain",
            "text/plain; charset",
            "text/plain; charset=\"utf-8",
            "text/plain; charset=\"a b\"",
            "text/plain\r\nX-Evil: 1",
            "text/plain; charset=\"u\" x",
        ] {
            assert_eq!(ContentType::parse(value), Err(ContentTypeError::Invalid), "{value:?}");
        }
        assert!(ContentType::parse(&format!("text/{}", "x".repeat(MAX_CONTENT_TYPE_LEN))).is_err());
        assert!(ContentType::new("text/plain", Some("utf 8")).is_err());
    }

    #[test]
    fn displays_and_reparses() {
        let ct = ContentType::new("Text/Plain", Some("UTF-8")).unwrap();
        assert_eq!(ct.to_string(), "text/plain; charset=utf-8");
        assert_eq!(ContentType::parse(&ct.to_string()).unwrap(), ct);
        assert!(ct.is_text());
        assert!(!ContentType::new("application/json", None).unwrap().is_text());
    }
}
