//! How message payloads travel inside sylkRTC JSON strings (`content` of `account-message` and
//! of the `message` event), as SylkServer does it: `text/*` content is UTF-8 on the wire; any
//! other type is carried byte-for-byte as Latin-1 characters (U+0000–U+00FF), so binary
//! payloads survive JSON.

use std::fmt;

use super::content_type::ContentType;

/// Why an `account-message` content cannot be put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentError {
    /// Non-`text/*` content holds a character above U+00FF (SylkServer answers `Internal error`
    /// here; the messaging machine should answer a clear error).
    NotLatin1,
}

impl fmt::Display for ContentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("content of a non-text type must be Latin-1 (one character per byte)")
    }
}

impl std::error::Error for ContentError {}

/// The payload bytes for `content` of type `content_type`: UTF-8 for `text/*`, else one byte
/// per character.
pub fn to_wire(content: &str, content_type: &ContentType) -> Result<Vec<u8>, ContentError> {
    if content_type.is_text() {
        return Ok(content.as_bytes().to_vec());
    }
    content.chars().map(|c| u8::try_from(u32::from(c)).map_err(|_| ContentError::NotLatin1)).collect()
}

/// The JSON string for received payload bytes. Total and lossless: UTF-8 when the bytes are
/// UTF-8 (and the charset does not say Latin-1), else one character per byte.
pub fn from_wire(bytes: &[u8], content_type: &ContentType) -> String {
    let latin1_charset = content_type
        .charset
        .as_deref()
        .is_some_and(|c| matches!(c, "iso-8859-1" | "latin1" | "latin-1" | "l1" | "iso_8859-1"));
    if !latin1_charset {
        if let Ok(text) = std::str::from_utf8(bytes) {
            return text.to_string();
        }
    }
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(value: &str) -> ContentType {
        ContentType::parse(value).unwrap()
    }

    #[test]
    fn text_is_utf8_and_other_types_are_latin1() {
        assert_eq!(to_wire("héllo ✓", &ct("text/plain")).unwrap(), "héllo ✓".as_bytes());
        assert_eq!(to_wire("\u{0}\u{ff}é", &ct("application/octet-stream")).unwrap(), vec![0, 0xff, 0xe9]);
        assert_eq!(to_wire("✓", &ct("application/octet-stream")), Err(ContentError::NotLatin1));
    }

    #[test]
    fn received_bytes_become_strings_losslessly() {
        assert_eq!(from_wire("héllo".as_bytes(), &ct("text/plain; charset=utf-8")), "héllo");
        assert_eq!(from_wire(&[0x68, 0xe9], &ct("text/plain; charset=iso-8859-1")), "hé");
        assert_eq!(from_wire("é".as_bytes(), &ct("text/plain; charset=latin1")), "Ã©");
        assert_eq!(from_wire(&[0xff, 0x00, 0x80], &ct("text/plain")), "\u{ff}\u{0}\u{80}");
        let binary: Vec<u8> = (0..=255).collect();
        let carried = from_wire(&binary, &ct("image/png"));
        assert_eq!(to_wire(&carried, &ct("image/png")).unwrap(), binary);
    }
}
