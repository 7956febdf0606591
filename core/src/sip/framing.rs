//! Cutting a TCP or TLS byte stream into SIP messages (RFC 3261 §7.5, §18.3) and CRLF
//! keep-alives (RFC 5626 §3.5.1), and recognising UDP keep-alives.
//!
//! On a stream every message must carry a Content-Length (long form or compact `l`); without
//! one the stream cannot be framed and the connection must be closed. Framing looks only at the
//! header block's line structure and its Content-Length: whether the message then parses is
//! [`super::parse::parse_message`]'s business.

use std::fmt;

/// What the framer found next in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// Exactly one message, header block and body, ready for `parse_message`.
    Message(Vec<u8>),
    /// A CRLFCRLF keep-alive ping (RFC 5626 §3.5.1): answer with a single CRLF.
    KeepAlivePing,
    /// A lone CRLF: the pong to our ping, or a CRLF before a message (RFC 3261 §7.5 says to
    /// ignore those); either way nothing to do but note the peer is alive.
    KeepAlivePong,
}

/// Why the stream cannot be framed any further. The caller closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// The header block has no Content-Length (mandatory on streams, RFC 3261 §18.3).
    MissingContentLength,
    /// Content-Length is not a number, or several disagree.
    InvalidContentLength,
    /// The header block is longer than the limit.
    HeadersTooLarge,
    /// Header block plus Content-Length exceed the limit.
    MessageTooLarge,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FramingError::MissingContentLength => "message without Content-Length on a stream",
            FramingError::InvalidContentLength => "invalid Content-Length",
            FramingError::HeadersTooLarge => "header block too large",
            FramingError::MessageTooLarge => "message too large",
        })
    }
}

impl std::error::Error for FramingError {}

/// Frames one connection's byte stream.
///
/// Feed received bytes with [`StreamFramer::push`] and take results with [`StreamFramer::next`]
/// until it returns `None` (nothing complete yet). Messages may arrive pipelined, split at any
/// byte, with CRLFs before them (skipped and reported as [`Framed::KeepAlivePong`]); bare LFs
/// between messages are skipped silently and header lines may end in LF only.
///
/// A CRLFCRLF arriving in one piece is a [`Framed::KeepAlivePing`]. A lone CRLF is reported as a
/// pong at once; if the next two bytes are another CRLF they are reported as a ping (a ping split
/// across reads), so answering pings stays correct whatever the segmentation.
///
/// Limits: the header block, and the header block plus Content-Length, must fit in
/// `max_message` bytes. After an error the framer yields nothing more. Work is linear in the
/// bytes pushed (the header-end search resumes where it stopped).
#[derive(Debug, Clone)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// Start of the unconsumed data in `buf`.
    pos: usize,
    /// Where the search for the end of the current header block resumes.
    scan: usize,
    /// Header block length and Content-Length of the message being completed.
    pending: Option<(usize, usize)>,
    max_message: usize,
    after_pong: bool,
    failed: bool,
}

impl StreamFramer {
    /// A framer accepting messages of up to `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        StreamFramer { buf: Vec::new(), pos: 0, scan: 0, pending: None, max_message, after_pong: false, failed: false }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.scan -= self.pos.min(self.scan);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete item, or `None` until more bytes are pushed (or for good after an
    /// error). Not an `Iterator`: `None` means "not yet", and items may follow the next `push`.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<Framed, FramingError>> {
        if self.failed {
            return None;
        }
        self.step()
    }

    /// Bytes received but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn fail(&mut self, e: FramingError) -> Option<Result<Framed, FramingError>> {
        self.failed = true;
        self.buf = Vec::new();
        self.pos = 0;
        self.scan = 0;
        Some(Err(e))
    }

    fn step(&mut self) -> Option<Result<Framed, FramingError>> {
        loop {
            if let Some((head, body)) = self.pending {
                let total = head + body;
                if self.buf.len() - self.pos < total {
                    return None;
                }
                let msg = self.buf.get(self.pos..self.pos + total)?.to_vec();
                self.pos += total;
                self.scan = self.pos;
                self.pending = None;
                self.after_pong = false;
                return Some(Ok(Framed::Message(msg)));
            }
            let data = self.buf.get(self.pos..)?;
            match data {
                [] => return None,
                [b'\n', ..] => {
                    self.pos += 1;
                    continue;
                }
                [b'\r'] | [b'\r', b'\n', b'\r'] => return None,
                [b'\r', b'\n', b'\r', b'\n', ..] => {
                    self.pos += 4;
                    self.after_pong = false;
                    return Some(Ok(Framed::KeepAlivePing));
                }
                [b'\r', b'\n', ..] => {
                    self.pos += 2;
                    if self.after_pong {
                        self.after_pong = false;
                        return Some(Ok(Framed::KeepAlivePing));
                    }
                    self.after_pong = true;
                    return Some(Ok(Framed::KeepAlivePong));
                }
                _ => {}
            }
            self.scan = self.scan.max(self.pos);
            let Some(head) = self.find_header_end() else {
                if self.buf.len() - self.pos > self.max_message {
                    return self.fail(FramingError::HeadersTooLarge);
                }
                return None;
            };
            if head > self.max_message {
                return self.fail(FramingError::HeadersTooLarge);
            }
            let block = self.buf.get(self.pos..self.pos + head)?;
            let body = match content_length(block) {
                Ok(len) => len,
                Err(e) => return self.fail(e),
            };
            if body > self.max_message - head {
                return self.fail(FramingError::MessageTooLarge);
            }
            self.pending = Some((head, body));
        }
    }

    /// Looks for the empty line ending the header block from `scan`; returns the block's length
    /// (through the empty line) relative to `pos`, or records where to resume.
    fn find_header_end(&mut self) -> Option<usize> {
        let buf = &self.buf;
        let mut j = self.scan;
        while j < buf.len() {
            if buf[j] == b'\n' {
                match (buf.get(j + 1), buf.get(j + 2)) {
                    (Some(b'\n'), _) => return Some(j + 2 - self.pos),
                    (Some(b'\r'), Some(b'\n')) => return Some(j + 3 - self.pos),
                    (None, _) | (Some(b'\r'), None) => break,
                    _ => {}
                }
            }
            j += 1;
        }
        self.scan = j;
        None
    }
}

/// The Content-Length of a header block (start line, header lines, empty line), with folding
/// and compact `l`. Several equal values are accepted.
fn content_length(block: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<usize> = None;
    // The value of the Content-Length being read, while continuation lines may follow.
    let mut current: Option<Vec<u8>> = None;
    let mut finish = |value: Option<Vec<u8>>| -> Result<(), FramingError> {
        if let Some(v) = value {
            let n = super::lex::parse_usize(super::lex::trim_wsp(&v)).ok_or(FramingError::InvalidContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(FramingError::InvalidContentLength);
            }
            found = Some(n);
        }
        Ok(())
    };
    for line in block.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let [b' ' | b'\t', ..] = line {
            if let Some(v) = current.as_mut() {
                v.push(b' ');
                v.extend_from_slice(line);
            }
            continue;
        }
        finish(current.take())?;
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let name = super::lex::trim_wsp(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            current = Some(line[colon + 1..].to_vec());
        }
    }
    finish(current.take())?;
    found.ok_or(FramingError::MissingContentLength)
}

/// Whether a UDP datagram is a keep-alive rather than a message: non-empty and only CR, LF,
/// SP, HT or NUL (RFC 5626 §3.5.1 CRLF keep-alives, and the NUL or blank ones some UAs send).
pub fn is_keepalive(datagram: &[u8]) -> bool {
    !datagram.is_empty() && datagram.iter().all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nl: 5\r\nVia: SIP/2.0/TCP h\r\n\r\nhello";

    fn all(f: &mut StreamFramer) -> Vec<Result<Framed, FramingError>> {
        std::iter::from_fn(|| f.next()).collect()
    }

    #[test]
    fn pipelined_and_keepalives() {
        let mut f = StreamFramer::new(1000);
        let mut input = b"\r\n\r\n".to_vec();
        input.extend_from_slice(MSG);
        input.extend_from_slice(MSG);
        input.extend_from_slice(b"\r\n");
        f.push(&input);
        assert_eq!(
            all(&mut f),
            vec![
                Ok(Framed::KeepAlivePing),
                Ok(Framed::Message(MSG.to_vec())),
                Ok(Framed::Message(MSG.to_vec())),
                Ok(Framed::KeepAlivePong),
            ]
        );
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn byte_by_byte() {
        let mut f = StreamFramer::new(1000);
        let mut out = Vec::new();
        for b in MSG.iter().chain(MSG) {
            f.push(&[*b]);
            out.extend(all(&mut f));
        }
        assert_eq!(out, vec![Ok(Framed::Message(MSG.to_vec())), Ok(Framed::Message(MSG.to_vec()))]);
    }

    #[test]
    fn split_ping_is_still_a_ping() {
        let mut f = StreamFramer::new(1000);
        f.push(b"\r\n");
        assert_eq!(all(&mut f), vec![Ok(Framed::KeepAlivePong)]);
        f.push(b"\r\n");
        assert_eq!(all(&mut f), vec![Ok(Framed::KeepAlivePing)]);
    }

    #[test]
    fn lf_only_and_folded_content_length() {
        let mut f = StreamFramer::new(1000);
        f.push(b"MESSAGE sip:a@b SIP/2.0\nContent-Length:\n  3\n\nabcNEXT");
        assert_eq!(
            all(&mut f),
            vec![Ok(Framed::Message(b"MESSAGE sip:a@b SIP/2.0\nContent-Length:\n  3\n\nabc".to_vec()))]
        );
        assert_eq!(f.buffered(), 4);
    }

    #[test]
    fn errors() {
        let mut f = StreamFramer::new(1000);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(all(&mut f), vec![Err(FramingError::MissingContentLength)]);
        f.push(MSG);
        assert_eq!(all(&mut f), vec![]);

        let mut f = StreamFramer::new(1000);
        f.push(b"A sip:a@b SIP/2.0\r\nl: -1\r\n\r\n");
        assert_eq!(all(&mut f), vec![Err(FramingError::InvalidContentLength)]);

        let mut f = StreamFramer::new(1000);
        f.push(b"A sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(all(&mut f), vec![Err(FramingError::InvalidContentLength)]);

        let mut f = StreamFramer::new(40);
        f.push(b"A sip:a@b SIP/2.0\r\nl: 30\r\n\r\n");
        assert_eq!(all(&mut f), vec![Err(FramingError::MessageTooLarge)]);

        let mut f = StreamFramer::new(40);
        f.push(&[b'x'; 41]);
        assert_eq!(all(&mut f), vec![Err(FramingError::HeadersTooLarge)]);
    }

    #[test]
    fn keepalive_datagrams() {
        assert!(is_keepalive(b"\r\n"));
        assert!(is_keepalive(b"\r\n\r\n"));
        assert!(is_keepalive(b"\0\0\0\0"));
        assert!(!is_keepalive(b""));
        assert!(!is_keepalive(MSG));
    }
}
