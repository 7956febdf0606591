//! Identifiers the runtime and the core share. All are plain, ordered newtypes so that tables
//! keyed by them iterate deterministically.

use std::fmt;

/// A stream connection (TCP, or TLS over TCP). Chosen by the runtime when it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// A UDP socket the runtime bound on the core's behalf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId(pub u32);

/// Which listening socket accepted a stream connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Listener {
    /// The web listener: HTTP, WebSocket upgrade on `/webrtcgateway/ws` (TLS when configured).
    Web,
    /// The SIP TCP listener (`sip.listen`).
    SipTcp,
    /// The SIP TLS listener (`sip.tls_listen`, RFC 3261 §26.3.1): TLS peers open flows to us.
    SipTls,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn:{}", self.0)
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "udp:{}", self.0)
    }
}

impl Listener {
    /// The name used in captures and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::SipTcp => "sip-tcp",
            Self::SipTls => "sip-tls",
        }
    }

    /// Inverse of [`Listener::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "web" => Some(Self::Web),
            "sip-tcp" => Some(Self::SipTcp),
            "sip-tls" => Some(Self::SipTls),
            _ => None,
        }
    }
}
