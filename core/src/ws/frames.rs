//! WebSocket frames as whole values, for captures: split a byte chunk into frames (keeping
//! partial or odd frames as raw bytes), and encode client frames with a fixed mask for replay.

use std::io::Cursor;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

/// The mask replayed client frames carry. Masks change nothing a server sees (RFC 6455 §5.3).
pub const REPLAY_MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x3e];

/// One complete, final, unfragmented frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameOut {
    /// Text message.
    Text(String),
    /// Binary message.
    Binary(Vec<u8>),
    /// Ping with payload.
    Ping(Vec<u8>),
    /// Pong with payload.
    Pong(Vec<u8>),
    /// Close with optional code and reason.
    Close(Option<(u16, String)>),
}

/// A piece of a chunk: a whole frame, or bytes kept verbatim (partial frames, fragments, frames
/// a peer should not have sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A whole frame.
    Frame(FrameOut),
    /// Verbatim bytes.
    Raw(Vec<u8>),
}

/// Encodes `f` as a client (masked) frame.
pub fn client_frame(f: &FrameOut) -> Vec<u8> {
    let mut frame = match f {
        FrameOut::Text(t) => Frame::message(t.clone().into_bytes(), OpCode::Data(Data::Text), true),
        FrameOut::Binary(b) => Frame::message(b.clone(), OpCode::Data(Data::Binary), true),
        FrameOut::Ping(p) => Frame::ping(p.clone()),
        FrameOut::Pong(p) => Frame::pong(p.clone()),
        FrameOut::Close(None) => Frame::close(None),
        FrameOut::Close(Some((code, reason))) => {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(reason.as_bytes());
            let h = FrameHeader { opcode: OpCode::Control(Control::Close), ..FrameHeader::default() };
            Frame::from_payload(h, payload.into())
        }
    };
    frame.header_mut().mask = Some(REPLAY_MASK);
    let mut out = Vec::with_capacity(frame.len());
    // Formatting into a Vec cannot fail.
    let _ = frame.format(&mut out);
    out
}

/// Splits one direction of a stream into segments, carrying partial frames across chunks.
#[derive(Debug, Default)]
pub struct FrameSplitter {
    pending: Vec<u8>,
}

impl FrameSplitter {
    /// Splits `chunk`. `masked` is whether frames in this direction must be masked (client to
    /// server). The segments' bytes, concatenated, are equivalent to `chunk` for a server.
    pub fn split(&mut self, chunk: &[u8], masked: bool) -> Vec<Segment> {
        let skip = self.pending.len();
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let mut cursor = Cursor::new(&buf[pos..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(_) => {
                    push_raw(&mut out, &buf[pos.max(skip)..]);
                    return out;
                }
            };
            let start = pos + cursor.position() as usize;
            let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
                push_raw(&mut out, &buf[pos.max(skip)..]);
                return out;
            };
            if end > buf.len() {
                break;
            }
            if pos < skip {
                push_raw(&mut out, &buf[skip..end]);
            } else {
                match whole_frame(&header, &buf[start..end], masked) {
                    Some(f) => out.push(Segment::Frame(f)),
                    None => push_raw(&mut out, &buf[pos..end]),
                }
            }
            pos = end;
        }
        push_raw(&mut out, &buf[pos.max(skip)..]);
        self.pending = buf.split_off(pos);
        out
    }
}

fn push_raw(out: &mut Vec<Segment>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if let Some(Segment::Raw(prev)) = out.last_mut() {
        prev.extend_from_slice(bytes);
    } else {
        out.push(Segment::Raw(bytes.to_vec()));
    }
}

fn whole_frame(h: &FrameHeader, payload: &[u8], masked: bool) -> Option<FrameOut> {
    if !h.is_final || h.rsv1 || h.rsv2 || h.rsv3 || h.mask.is_some() != masked {
        return None;
    }
    let mut data = payload.to_vec();
    if let Some(mask) = h.mask {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Some(match h.opcode {
        OpCode::Data(Data::Text) => FrameOut::Text(String::from_utf8(data).ok()?),
        OpCode::Data(Data::Binary) => FrameOut::Binary(data),
        OpCode::Control(Control::Ping) => FrameOut::Ping(data),
        OpCode::Control(Control::Pong) => FrameOut::Pong(data),
        OpCode::Control(Control::Close) if data.is_empty() => FrameOut::Close(None),
        OpCode::Control(Control::Close) if data.len() >= 2 => {
            let code = u16::from_be_bytes([data[0], data[1]]);
            FrameOut::Close(Some((code, String::from_utf8(data[2..].to_vec()).ok()?)))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_partial_and_carried() {
        let a = client_frame(&FrameOut::Text("hello".into()));
        let b = client_frame(&FrameOut::Close(Some((1000, "bye".into()))));
        let mut s = FrameSplitter::default();
        let mut chunk = a.clone();
        chunk.extend_from_slice(&b[..3]);
        assert_eq!(
            s.split(&chunk, true),
            vec![Segment::Frame(FrameOut::Text("hello".into())), Segment::Raw(b[..3].to_vec())]
        );
        assert_eq!(s.split(&b[3..], true), vec![Segment::Raw(b[3..].to_vec())]);
        assert_eq!(s.split(&a, true), vec![Segment::Frame(FrameOut::Text("hello".into()))]);
    }

    #[test]
    fn unmasked_client_frame_stays_raw() {
        let mut s = FrameSplitter::default();
        assert_eq!(s.split(&[0x81, 0x01, b'x'], true), vec![Segment::Raw(vec![0x81, 0x01, b'x'])]);
    }
}
