//! SIP transports (RFC 3261 §18): the gateway's UDP socket, and TCP connections (accepted on the
//! SIP listener or opened by us), keyed by remote address and reused; Content-Length framing
//! and CRLF keep-alives (RFC 5626 §3.5.1) on streams; idle connections closed.
//!
//! Connection ids the stack opens have [`OUTGOING_CONN_BIT`] set, so they never collide with
//! the ids the runtime chooses for accepted connections.

use super::framing::{Framed, StreamFramer};
use super::target::Transport;
use crate::ids::{ConnId, SocketId};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Set in the ids of connections the core opens (`Output::Connect`).
pub const OUTGOING_CONN_BIT: u64 = 1 << 63;

/// A stream flow with nothing in flight is closed after this long.
pub const IDLE_FLOW: Duration = Duration::from_secs(120);

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// Transport.
    pub transport: Transport,
    /// Remote address.
    pub addr: SocketAddr,
    /// The stream connection, for TCP/TLS.
    pub conn: Option<ConnId>,
}

/// What the transport layer asks the runtime for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportOut {
    /// A UDP datagram.
    Datagram { socket: SocketId, to: SocketAddr, payload: Vec<u8> },
    /// Open a TCP connection with this id.
    Connect { conn: ConnId, to: SocketAddr },
    /// Write to a connection.
    Write { conn: ConnId, data: Vec<u8> },
    /// Close a connection.
    Close { conn: ConnId },
}

/// Something that arrived.
#[derive(Debug)]
pub enum Arrival {
    /// One complete message's bytes.
    Message { peer: Peer, bytes: Vec<u8> },
    /// The connection failed or closed; transactions using it fail.
    FlowLost { conn: ConnId },
}

#[derive(Debug)]
struct Flow {
    transport: Transport,
    remote: SocketAddr,
    framer: StreamFramer,
    /// Writes waiting for the connection to come up.
    queued: Option<Vec<u8>>,
    last_used: Instant,
    /// Registrations and transactions keeping the flow open.
    users: u32,
}

/// The transport layer.
#[derive(Debug)]
pub struct Transports {
    udp: Option<(SocketId, SocketAddr)>,
    flows: BTreeMap<ConnId, Flow>,
    by_remote: BTreeMap<(Transport, SocketAddr), ConnId>,
    next_conn: u64,
    max_message: usize,
}

impl Transports {
    /// No sockets yet.
    pub fn new(max_message: usize) -> Self {
        Self { udp: None, flows: BTreeMap::new(), by_remote: BTreeMap::new(), next_conn: 1, max_message }
    }

    /// The runtime bound the SIP UDP socket.
    pub fn set_udp(&mut self, socket: SocketId, local: SocketAddr) {
        self.udp = Some((socket, local));
    }

    /// The UDP socket, if bound.
    pub fn udp(&self) -> Option<(SocketId, SocketAddr)> {
        self.udp
    }

    /// Whether `conn` is one of ours.
    pub fn owns(&self, conn: ConnId) -> bool {
        self.flows.contains_key(&conn)
    }

    /// Number of open stream flows.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// A TCP connection arrived on the SIP listener.
    pub fn accepted(&mut self, conn: ConnId, remote: SocketAddr, now: Instant) {
        self.flows.insert(conn, self.flow(Transport::Tcp, remote, None, now));
        self.by_remote.insert((Transport::Tcp, remote), conn);
    }

    fn flow(&self, transport: Transport, remote: SocketAddr, queued: Option<Vec<u8>>, now: Instant) -> Flow {
        Flow { transport, remote, framer: StreamFramer::new(self.max_message), queued, last_used: now, users: 0 }
    }

    /// Sends `bytes` to `peer`. Stream transports reuse the peer's connection or open one.
    /// Returns the connection used, if any.
    pub fn send(&mut self, peer: Peer, bytes: Vec<u8>, now: Instant, out: &mut Vec<TransportOut>) -> Option<ConnId> {
        match peer.transport {
            Transport::Udp => {
                match self.udp {
                    Some((socket, _)) => out.push(TransportOut::Datagram { socket, to: peer.addr, payload: bytes }),
                    None => log::warn!("SIP over UDP to {} but no UDP socket is bound", peer.addr),
                }
                None
            }
            Transport::Tcp | Transport::Tls => {
                let conn = peer
                    .conn
                    .filter(|c| self.flows.contains_key(c))
                    .or_else(|| self.by_remote.get(&(peer.transport, peer.addr)).copied());
                if let Some(conn) = conn {
                    let flow = self.flows.get_mut(&conn)?;
                    flow.last_used = now;
                    match &mut flow.queued {
                        Some(q) => q.extend_from_slice(&bytes),
                        None => out.push(TransportOut::Write { conn, data: bytes }),
                    }
                    return Some(conn);
                }
                let conn = ConnId(OUTGOING_CONN_BIT | self.next_conn);
                self.next_conn += 1;
                let flow = self.flow(peer.transport, peer.addr, Some(bytes), now);
                self.flows.insert(conn, flow);
                self.by_remote.insert((peer.transport, peer.addr), conn);
                out.push(TransportOut::Connect { conn, to: peer.addr });
                Some(conn)
            }
        }
    }

    /// The runtime finished connecting `conn`.
    pub fn connected(&mut self, conn: ConnId, ok: bool, out: &mut Vec<TransportOut>, arrivals: &mut Vec<Arrival>) {
        let Some(flow) = self.flows.get_mut(&conn) else { return };
        if ok {
            if let Some(q) = flow.queued.take() {
                if !q.is_empty() {
                    out.push(TransportOut::Write { conn, data: q });
                }
            }
        } else {
            log::info!("SIP connection to {} failed", flow.remote);
            self.drop_flow(conn);
            arrivals.push(Arrival::FlowLost { conn });
        }
    }

    /// A datagram on the SIP UDP socket.
    pub fn datagram(&mut self, from: SocketAddr, data: &[u8], arrivals: &mut Vec<Arrival>) {
        if super::framing::is_keepalive(data) {
            return;
        }
        if data.len() > self.max_message {
            log::info!("dropping a {}-byte datagram from {from}: over the SIP message limit", data.len());
            return;
        }
        arrivals.push(Arrival::Message {
            peer: Peer { transport: Transport::Udp, addr: from, conn: None },
            bytes: data.to_vec(),
        });
    }

    /// Bytes on a stream flow.
    pub fn stream_data(
        &mut self,
        conn: ConnId,
        data: &[u8],
        now: Instant,
        out: &mut Vec<TransportOut>,
        arrivals: &mut Vec<Arrival>,
    ) {
        let Some(flow) = self.flows.get_mut(&conn) else { return };
        flow.last_used = now;
        flow.framer.push(data);
        let peer = Peer { transport: flow.transport, addr: flow.remote, conn: Some(conn) };
        while let Some(item) = flow.framer.next() {
            match item {
                Ok(Framed::Message(bytes)) => arrivals.push(Arrival::Message { peer, bytes }),
                // RFC 5626 §3.5.1: a double CRLF ping gets a single CRLF pong.
                Ok(Framed::KeepAlivePing) => out.push(TransportOut::Write { conn, data: b"\r\n".to_vec() }),
                Ok(Framed::KeepAlivePong) => {}
                Err(e) => {
                    log::info!("SIP stream from {}: {e:?}; closing", flow.remote);
                    self.drop_flow(conn);
                    out.push(TransportOut::Close { conn });
                    arrivals.push(Arrival::FlowLost { conn });
                    return;
                }
            }
        }
    }

    /// The runtime reports the connection gone.
    pub fn closed(&mut self, conn: ConnId, arrivals: &mut Vec<Arrival>) {
        if self.flows.contains_key(&conn) {
            self.drop_flow(conn);
            arrivals.push(Arrival::FlowLost { conn });
        }
    }

    /// Marks one more (or one fewer) user of a flow, which keeps it from idling out.
    pub fn retain(&mut self, conn: ConnId, more: bool, now: Instant) {
        if let Some(f) = self.flows.get_mut(&conn) {
            f.users = if more { f.users + 1 } else { f.users.saturating_sub(1) };
            f.last_used = now;
        }
    }

    /// When the next idle flow should be closed.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.flows.values().filter(|f| f.users == 0).map(|f| f.last_used + IDLE_FLOW).min()
    }

    /// Closes flows idle for [`IDLE_FLOW`] with no users.
    pub fn close_idle(&mut self, now: Instant, out: &mut Vec<TransportOut>) {
        let idle: Vec<ConnId> = self
            .flows
            .iter()
            .filter(|(_, f)| f.users == 0 && f.last_used + IDLE_FLOW <= now)
            .map(|(c, _)| *c)
            .collect();
        for conn in idle {
            log::debug!("closing idle SIP connection {conn}");
            self.drop_flow(conn);
            out.push(TransportOut::Close { conn });
        }
    }

    fn drop_flow(&mut self, conn: ConnId) {
        if let Some(f) = self.flows.remove(&conn) {
            if self.by_remote.get(&(f.transport, f.remote)) == Some(&conn) {
                self.by_remote.remove(&(f.transport, f.remote));
            }
        }
    }
}
