//! One server-side WebSocket over memory. tungstenite does the framing, masking checks, UTF-8
//! validation, fragmentation, automatic Pong and the close handshake (RFC 6455 §5, §7); this
//! wrapper turns its results into [`WsEvent`]s and close codes.

use crate::transport::duplex::Duplex;
use std::io;
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::{CloseFrame, Utf8Bytes};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Message};

/// Read buffer tungstenite keeps per connection; messages larger than this grow it temporarily.
const READ_BUFFER: usize = 512;

/// What the peer did.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent {
    /// A complete text message.
    Text(String),
    /// A binary message of this many bytes (sylkRTC ignores them).
    Binary(usize),
    /// A Pong (answer to our Ping).
    Pong,
    /// The peer started or answered the close handshake.
    Close(Option<u16>),
}

/// The connection must end: send what [`WsConn::take_outbound`] holds, then close the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEnd {
    /// The close handshake completed or the peer vanished.
    Closed,
    /// A violation; a close frame with this code was queued (1002, 1007, 1009).
    Failed { code: u16, why: String },
}

/// A server WebSocket over an in-memory duplex.
pub struct WsConn {
    ctx: WebSocketContext,
    io: Duplex,
}

impl WsConn {
    /// A new connection allowing messages up to `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        Self { ctx: WebSocketContext::new(Role::Server, Some(config)), io: Duplex::default() }
    }

    /// Hands received bytes to the connection.
    pub fn feed(&mut self, data: &[u8]) {
        self.io.push_inbound(data);
    }

    /// The next event from the bytes fed so far; `Ok(None)` when more bytes are needed.
    pub fn poll(&mut self) -> Result<Option<WsEvent>, WsEnd> {
        loop {
            match self.ctx.read(&mut self.io) {
                Ok(Message::Text(t)) => return Ok(Some(WsEvent::Text(t.as_str().to_owned()))),
                Ok(Message::Binary(b)) => return Ok(Some(WsEvent::Binary(b.len()))),
                // tungstenite queues the Pong itself.
                Ok(Message::Ping(_)) => continue,
                Ok(Message::Pong(_)) => return Ok(Some(WsEvent::Pong)),
                Ok(Message::Close(frame)) => {
                    return Ok(Some(WsEvent::Close(frame.map(|f| u16::from(f.code)))));
                }
                Ok(Message::Frame(_)) => continue,
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.io.compact();
                    return Ok(None);
                }
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => return Err(WsEnd::Closed),
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// Queues a text message.
    pub fn send_text(&mut self, text: String) -> Result<(), WsEnd> {
        self.write(Message::Text(Utf8Bytes::from(text)))
    }

    /// Queues a Ping.
    pub fn send_ping(&mut self) -> Result<(), WsEnd> {
        self.write(Message::Ping(Bytes::new()))
    }

    /// Starts the close handshake with `code` (RFC 6455 §7.1.2).
    pub fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code: CloseCode::from(code), reason: Utf8Bytes::from(reason.to_owned()) };
        let _ = self.ctx.close(&mut self.io, Some(frame));
    }

    /// Bytes to send.
    pub fn take_outbound(&mut self) -> Vec<u8> {
        // Flush anything tungstenite holds back (Pongs, close replies).
        let _ = self.ctx.flush(&mut self.io);
        self.io.take_outbound()
    }

    /// True while messages may still be sent.
    pub fn can_write(&self) -> bool {
        self.ctx.can_write()
    }

    fn write(&mut self, msg: Message) -> Result<(), WsEnd> {
        match self.ctx.write(&mut self.io, msg) {
            Ok(()) => self.ctx.flush(&mut self.io).or(Ok(())),
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Err(WsEnd::Closed),
            Err(WsError::Protocol(ProtocolError::SendAfterClosing)) => Err(WsEnd::Closed),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn fail(&mut self, e: WsError) -> WsEnd {
        let code = match &e {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => 1009,
            WsError::Capacity(_) => 1009,
            WsError::Utf8(_) => 1007,
            _ => 1002,
        };
        let why = e.to_string();
        self.close(code, "");
        WsEnd::Failed { code, why }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frames::client_frame;

    #[test]
    fn text_then_close_handshake() {
        let mut ws = WsConn::new(1024);
        ws.feed(&client_frame(&crate::ws::frames::FrameOut::Text("{\"a\":1}".into())));
        assert_eq!(ws.poll(), Ok(Some(WsEvent::Text("{\"a\":1}".into()))));
        assert_eq!(ws.poll(), Ok(None));
        ws.feed(&client_frame(&crate::ws::frames::FrameOut::Close(Some((1000, String::new())))));
        assert_eq!(ws.poll(), Ok(Some(WsEvent::Close(Some(1000)))));
        assert!(!ws.take_outbound().is_empty(), "close reply");
        assert_eq!(ws.poll(), Err(WsEnd::Closed));
    }

    #[test]
    fn oversized_message_closes_1009() {
        let mut ws = WsConn::new(16);
        ws.feed(&client_frame(&crate::ws::frames::FrameOut::Text("x".repeat(100))));
        assert!(matches!(ws.poll(), Err(WsEnd::Failed { code: 1009, .. })));
    }

    #[test]
    fn unmasked_frame_closes_1002() {
        let mut ws = WsConn::new(1024);
        ws.feed(&[0x81, 0x01, b'x']);
        assert!(matches!(ws.poll(), Err(WsEnd::Failed { code: 1002, .. })));
    }
}
