//! The gateway's media sockets: the WebRTC UDP socket the runtime binds at start (shared by every
//! browser leg), and the RTP/RTCP pairs of SIP legs, bound on request from the port range.
//!
//! # RTP/RTCP pairs
//! [`Gateway::request_rtp_pair`] takes the next pair from the [`PortPool`] and asks the runtime
//! to bind both ports ([`Output::BindUdp`]) on the IP of the WebRTC socket. Socket ids are the
//! core's: from [`FIRST_MEDIA_SOCKET`] upwards, two at a time (RTP even, RTCP = RTP + 1), never
//! reused, so a late answer for a released pair cannot be mistaken for a new one. A pair keeps
//! its ids for its whole life: when a bind fails (the port is taken), the pair waits for the
//! answer about its other socket, closes it if it was bound, marks the ports as failed in the
//! pool and binds both ids again at the next free pair (at most [`MAX_BIND_ATTEMPTS`] times). So
//! each id has at most one bind outstanding, and every answer is unambiguous. The port the
//! request returns is the first attempt's; the pair's final port is known when both sockets
//! are bound.
//!
//! Datagrams on any of these sockets go to [`Gateway::media_datagram`], never to SIP.

use super::Gateway;
use crate::drive::{Output, UdpPurpose};
use crate::ids::SocketId;
use crate::media::ports::PortPool;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// The first socket id the core chooses (the runtime's own, SIP and WebRTC, are below).
pub const FIRST_MEDIA_SOCKET: u32 = 16;

/// How many port pairs one request tries before it gives up.
pub const MAX_BIND_ATTEMPTS: u32 = 8;

/// The media sockets of one core.
#[derive(Debug)]
pub(super) struct MediaSockets {
    /// The WebRTC socket, once the runtime reported it bound.
    webrtc: Option<(SocketId, SocketAddr)>,
    /// The IP RTP/RTCP pairs are bound on (that of the WebRTC socket's configured address).
    ip: IpAddr,
    pool: PortPool,
    /// Pairs asked for and not released, by RTP socket id.
    pairs: BTreeMap<SocketId, RtpPair>,
    /// The next RTP socket id (even).
    next_id: u32,
}

#[derive(Debug)]
struct RtpPair {
    /// The RTP port of the current attempt.
    port: u16,
    rtp: Bind,
    rtcp: Bind,
    /// Attempts made, this one included.
    attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bind {
    /// Asked for, not answered yet.
    Pending,
    Bound(SocketAddr),
    Failed,
}

impl MediaSockets {
    pub(super) fn new(ip: IpAddr, rtp_ports: (u16, u16)) -> Self {
        Self { webrtc: None, ip, pool: PortPool::new(rtp_ports), pairs: BTreeMap::new(), next_id: FIRST_MEDIA_SOCKET }
    }

    /// Whether `socket` is one of ours (datagrams on it are media).
    pub(super) fn owns(&self, socket: SocketId) -> bool {
        self.webrtc.is_some_and(|(id, _)| id == socket) || self.pair_key(socket).is_some()
    }

    /// The WebRTC socket and its local address, once bound.
    pub(super) fn webrtc(&self) -> Option<(SocketId, SocketAddr)> {
        self.webrtc
    }

    /// RTP/RTCP pairs alive (binding or bound).
    pub(super) fn pair_count(&self) -> usize {
        self.pairs.len()
    }

    /// The RTP id of the pair `socket` belongs to, if it is alive.
    fn pair_key(&self, socket: SocketId) -> Option<SocketId> {
        let key = SocketId(socket.0 & !1);
        (socket.0 >= FIRST_MEDIA_SOCKET && self.pairs.contains_key(&key)).then_some(key)
    }
}

impl Gateway {
    /// Asks the runtime for an RTP/RTCP pair: emits the two [`Output::BindUdp`]s and returns
    /// the RTP id, the RTCP id and the RTP port asked for. `None` when every pair of the range
    /// is in use or cooling down after a failed bind.
    #[doc(hidden)]
    pub fn request_rtp_pair(&mut self) -> Option<(SocketId, SocketId, u16)> {
        let Some(port) = self.media.pool.allocate(self.now) else {
            log::warn!("no free RTP port pair in {:?} ({} in use)", self.media.pool.range(), self.media.pool.in_use());
            return None;
        };
        let rtp = SocketId(self.media.next_id);
        let rtcp = SocketId(self.media.next_id + 1);
        self.media.next_id = self.media.next_id.checked_add(2).unwrap_or(FIRST_MEDIA_SOCKET);
        self.media.pairs.insert(rtp, RtpPair { port, rtp: Bind::Pending, rtcp: Bind::Pending, attempts: 1 });
        self.bind_pair(rtp, port);
        Some((rtp, rtcp, port))
    }

    /// Gives a pair back (by its RTP id): closes both sockets and frees the ports. Unknown ids
    /// are ignored.
    #[doc(hidden)]
    pub fn release_rtp_pair(&mut self, rtp: SocketId) {
        let Some(pair) = self.media.pairs.remove(&rtp) else {
            log::debug!("{rtp}: released, but it is no RTP pair");
            return;
        };
        self.media.pool.release(pair.port);
        self.close_pair_sockets(rtp, &pair);
    }

    /// [`crate::Input::UdpBound`] for a WebRTC, RTP or RTCP socket.
    pub(super) fn media_bound(&mut self, socket: SocketId, purpose: UdpPurpose, local: SocketAddr) {
        if purpose == UdpPurpose::WebRtc {
            log::info!("WebRTC media on udp {local}");
            self.media.webrtc = Some((socket, local));
            return;
        }
        self.media_bind_answer(socket, Bind::Bound(local));
    }

    /// [`crate::Input::UdpBindFailed`].
    pub(super) fn media_bind_failed(&mut self, socket: SocketId, error: &str) {
        log::info!("{socket}: bind failed: {error}");
        self.media_bind_answer(socket, Bind::Failed);
    }

    fn media_bind_answer(&mut self, socket: SocketId, answer: Bind) {
        let Some(key) = self.media.pair_key(socket) else {
            // Released while its bind was outstanding: the runtime has closed it.
            log::debug!("{socket}: bind answer for a socket no longer wanted");
            return;
        };
        let Some(pair) = self.media.pairs.get_mut(&key) else { return };
        let slot = if socket == key { &mut pair.rtp } else { &mut pair.rtcp };
        if *slot != Bind::Pending {
            log::warn!("{socket}: a second bind answer; ignored");
            return;
        }
        *slot = answer;
        self.settle_pair(key);
    }

    /// Acts once both sockets of the pair have been answered: ready, or on to the next pair.
    fn settle_pair(&mut self, key: SocketId) {
        let Some(pair) = self.media.pairs.get(&key) else { return };
        match (pair.rtp, pair.rtcp) {
            (Bind::Pending, _) | (_, Bind::Pending) => {}
            (Bind::Bound(_), Bind::Bound(_)) => {
                let port = pair.port;
                self.rtp_pair_ready(key, SocketId(key.0 + 1), port);
            }
            _ => {
                let (old, attempts) = (pair.port, pair.attempts);
                // Whichever socket did bind is closed: the pair moves as a whole.
                for (socket, bind) in [(key, pair.rtp), (SocketId(key.0 + 1), pair.rtcp)] {
                    if matches!(bind, Bind::Bound(_)) {
                        self.emit(Output::CloseUdp { socket });
                    }
                }
                self.media.pool.fail(old, self.now);
                let next = (attempts < MAX_BIND_ATTEMPTS).then(|| self.media.pool.allocate(self.now)).flatten();
                let Some(port) = next else {
                    self.media.pairs.remove(&key);
                    self.rtp_pair_failed(key, SocketId(key.0 + 1), attempts);
                    return;
                };
                log::debug!("{key}: RTP pair {old} failed; trying {port}");
                if let Some(pair) = self.media.pairs.get_mut(&key) {
                    *pair = RtpPair { port, rtp: Bind::Pending, rtcp: Bind::Pending, attempts: attempts + 1 };
                }
                self.bind_pair(key, port);
            }
        }
    }

    fn bind_pair(&mut self, rtp: SocketId, port: u16) {
        let ip = self.media.ip;
        self.emit(Output::BindUdp { socket: rtp, purpose: UdpPurpose::Rtp, local: SocketAddr::new(ip, port) });
        let rtcp = SocketId(rtp.0 + 1);
        self.emit(Output::BindUdp { socket: rtcp, purpose: UdpPurpose::Rtcp, local: SocketAddr::new(ip, port + 1) });
    }

    /// Closes the sockets of a pair that are bound or being bound.
    fn close_pair_sockets(&mut self, rtp: SocketId, pair: &RtpPair) {
        for (socket, bind) in [(rtp, pair.rtp), (SocketId(rtp.0 + 1), pair.rtcp)] {
            if bind != Bind::Failed {
                self.emit(Output::CloseUdp { socket });
            }
        }
    }

    /// Both sockets of a pair are bound: its call takes it from here.
    fn rtp_pair_ready(&mut self, rtp: SocketId, rtcp: SocketId, port: u16) {
        log::debug!("{rtp}/{rtcp}: RTP pair bound on ports {port}/{}", port + 1);
        self.call_rtp_ready(rtp, port);
    }

    /// A pair could not be bound in [`MAX_BIND_ATTEMPTS`] tries, or the range ran out; it is
    /// forgotten, and its call fails.
    fn rtp_pair_failed(&mut self, rtp: SocketId, rtcp: SocketId, attempts: u32) {
        log::warn!("{rtp}/{rtcp}: no RTP port pair could be bound ({attempts} tried)");
        self.call_rtp_failed(rtp);
    }

    /// A datagram on the WebRTC socket or an RTP/RTCP socket: to its call.
    pub(super) fn media_datagram(&mut self, socket: SocketId, from: SocketAddr, data: &[u8]) {
        match self.media.webrtc {
            Some((webrtc, local)) if webrtc == socket => self.webrtc_datagram(local, from, data),
            _ => self.rtp_datagram(socket, from, data),
        }
    }

    /// Whether `socket` is a media socket whose datagrams captures leave out.
    pub(super) fn is_media_socket(&self, socket: SocketId) -> bool {
        self.media.owns(socket)
    }

    /// Records `out` and queues it.
    fn emit(&mut self, out: Output) {
        if let Some(rec) = &mut self.recorder {
            rec.output(self.now, &out);
        }
        self.out.push_back(out);
    }
}
