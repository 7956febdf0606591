//! Which call a datagram on the shared WebRTC UDP socket belongs to (media spec §1.4), without
//! asking every leg: str0m's example calls `Rtc::accepts` on each `Rtc` in turn, O(calls) per
//! packet; here it is two map lookups.
//!
//! - A STUN Binding request names its target in USERNAME, `ours:theirs` (RFC 8445 §7.2.2): the
//!   part before the colon is the ufrag of one of our legs ([`Demux::register`]). Only as much STUN
//!   as that needs is parsed ([`stun_local_ufrag`]: RFC 5389 §6 header, §15 attributes).
//! - Everything else (DTLS, SRTP, SRTCP, STUN without USERNAME) goes by the source address, learned
//!   ([`Demux::learn`]) once the leg has accepted a datagram from it — for STUN, str0m has then
//!   checked MESSAGE-INTEGRITY, so an address is never learned from a forged request.
//!
//! The leg still has the last word ([`super::webrtc::BrowserLeg::handle_datagram`] asks its own
//! `Rtc::accepts`): routing only picks which one leg to ask.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The STUN magic cookie (RFC 5389 §6).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header.
pub const STUN_HEADER_LEN: usize = 20;
/// STUN message type of a Binding request (method 0x001, class request).
pub const BINDING_REQUEST: u16 = 0x0001;
/// The USERNAME attribute (RFC 5389 §15.3).
pub const ATTR_USERNAME: u16 = 0x0006;
/// The MESSAGE-INTEGRITY attribute (RFC 5389 §15.4): attributes after it are not covered.
pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
/// USERNAME is shorter than 513 bytes (RFC 5389 §15.3).
pub const MAX_USERNAME: usize = 512;
/// Source addresses remembered per call (a browser may check from host, reflexive and relay
/// candidates of two families); the oldest is forgotten first.
pub const MAX_ADDRS_PER_CALL: usize = 8;

/// The local (our) ufrag of a STUN Binding request: the part of USERNAME before the first `:`.
/// `None` for anything else — not STUN (RFC 7983: first byte 0–3), not a well-formed RFC 5389
/// message (length, cookie, attribute bounds), not a Binding request, or without USERNAME.
pub fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    if data.len() < STUN_HEADER_LEN || data[0] & 0xC0 != 0 {
        return None;
    }
    let msg_type = u16::from_be_bytes([data[0], data[1]]);
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let cookie = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    if msg_type != BINDING_REQUEST || cookie != MAGIC_COOKIE || len % 4 != 0 || STUN_HEADER_LEN + len != data.len() {
        return None;
    }
    let mut attrs = &data[STUN_HEADER_LEN..];
    while attrs.len() >= 4 {
        let typ = u16::from_be_bytes([attrs[0], attrs[1]]);
        let alen = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + alen)?;
        match typ {
            ATTR_USERNAME => {
                if alen > MAX_USERNAME {
                    return None;
                }
                let username = std::str::from_utf8(value).ok()?;
                let (ours, _theirs) = username.split_once(':')?;
                return (!ours.is_empty()).then_some(ours);
            }
            ATTR_MESSAGE_INTEGRITY => return None,
            _ => {}
        }
        // Values are padded to a multiple of 4 bytes.
        let next = 4 + alen.next_multiple_of(4);
        attrs = attrs.get(next..).unwrap_or(&[]);
    }
    None
}

/// A ufrag that another call already uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UfragTaken;

impl std::fmt::Display for UfragTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ICE ufrag already in use")
    }
}

impl std::error::Error for UfragTaken {}

#[derive(Debug)]
struct Routes {
    ufrag: String,
    /// Learned source addresses, oldest first.
    addrs: Vec<SocketAddr>,
}

/// The routing table of one shared WebRTC socket: ufrag → call and learned address → call. `K`
/// is the caller's call (leg) id. Deterministic (ordered maps only).
#[derive(Debug)]
pub struct Demux<K: Ord + Copy> {
    by_ufrag: BTreeMap<String, K>,
    by_addr: BTreeMap<SocketAddr, K>,
    calls: BTreeMap<K, Routes>,
}

impl<K: Ord + Copy> Default for Demux<K> {
    fn default() -> Self {
        Self { by_ufrag: BTreeMap::new(), by_addr: BTreeMap::new(), calls: BTreeMap::new() }
    }
}

impl<K: Ord + Copy> Demux<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls registered.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True when no call is registered.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Routes STUN requests naming `ufrag` to `call`. A call has one ufrag: registering again
    /// (an ICE restart) replaces the old one and keeps the learned addresses. Fails if another
    /// call has this ufrag (draw new credentials).
    pub fn register(&mut self, ufrag: &str, call: K) -> Result<(), UfragTaken> {
        match self.by_ufrag.get(ufrag) {
            Some(k) if *k != call => return Err(UfragTaken),
            Some(_) => return Ok(()),
            None => {}
        }
        if let Some(routes) = self.calls.get_mut(&call) {
            self.by_ufrag.remove(&routes.ufrag);
            routes.ufrag = ufrag.to_string();
        } else {
            self.calls.insert(call, Routes { ufrag: ufrag.to_string(), addrs: Vec::new() });
        }
        self.by_ufrag.insert(ufrag.to_string(), call);
        Ok(())
    }

    /// Routes datagrams from `from` to `call` (call it when the call's leg accepted a datagram
    /// from `from`). An address learned by another call before moves to this one (a NAT reused
    /// the mapping). Ignored for unregistered calls.
    pub fn learn(&mut self, from: SocketAddr, call: K) {
        // The usual case, every media packet: known already (one lookup, nothing written).
        if self.by_addr.get(&from) == Some(&call) {
            return;
        }
        if !self.calls.contains_key(&call) {
            return;
        }
        match self.by_addr.insert(from, call) {
            Some(old) if old == call => return,
            Some(old) => {
                if let Some(r) = self.calls.get_mut(&old) {
                    r.addrs.retain(|a| *a != from);
                }
            }
            None => {}
        }
        let Some(routes) = self.calls.get_mut(&call) else {
            return;
        };
        routes.addrs.push(from);
        if routes.addrs.len() > MAX_ADDRS_PER_CALL {
            let oldest = routes.addrs.remove(0);
            self.by_addr.remove(&oldest);
        }
    }

    /// The call a datagram from `from` belongs to: a STUN Binding request by the ufrag in its
    /// USERNAME (never by address, so it cannot be routed to a stale call), anything else by
    /// learned source address. `None`: drop it.
    pub fn route(&self, from: SocketAddr, data: &[u8]) -> Option<K> {
        self.route_learned(from, data).map(|(call, _)| call)
    }

    /// [`Demux::route`], and whether the call was found by `from`, learned already: then
    /// [`Demux::learn`] of `from` for it would change nothing, and the caller skips it (one
    /// lookup less per media packet; issue #14).
    pub fn route_learned(&self, from: SocketAddr, data: &[u8]) -> Option<(K, bool)> {
        if let Some(ufrag) = stun_local_ufrag(data) {
            return self.by_ufrag.get(ufrag).map(|call| (*call, false));
        }
        self.by_addr.get(&from).map(|call| (*call, true))
    }

    /// The call whose ufrag this is.
    pub fn call_of_ufrag(&self, ufrag: &str) -> Option<K> {
        self.by_ufrag.get(ufrag).copied()
    }

    /// Forgets `call`: its ufrag and learned addresses.
    pub fn remove(&mut self, call: K) {
        if let Some(routes) = self.calls.remove(&call) {
            self.by_ufrag.remove(&routes.ufrag);
            for a in routes.addrs {
                if self.by_addr.get(&a) == Some(&call) {
                    self.by_addr.remove(&a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Binding request with USERNAME `username`, PRIORITY and a fake MESSAGE-INTEGRITY.
    fn binding(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        let mut attr = |typ: u16, value: &[u8]| {
            attrs.extend_from_slice(&typ.to_be_bytes());
            attrs.extend_from_slice(&(value.len() as u16).to_be_bytes());
            attrs.extend_from_slice(value);
            attrs.resize(attrs.len().next_multiple_of(4), 0);
        };
        attr(0x0024, &[0x6e, 0x00, 0x1e, 0xff]); // PRIORITY
        attr(ATTR_USERNAME, username.as_bytes());
        attr(ATTR_MESSAGE_INTEGRITY, &[0; 20]);
        let mut m = Vec::new();
        m.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_local_ufrag() {
        assert_eq!(stun_local_ufrag(&binding("ours1:theirs")), Some("ours1"));
        // Odd lengths are padded.
        assert_eq!(stun_local_ufrag(&binding("abcde:f")), Some("abcde"));
        assert_eq!(stun_local_ufrag(&binding("nocolon")), None);
        assert_eq!(stun_local_ufrag(&binding(":theirs")), None);
    }

    #[test]
    fn rejects_what_is_not_a_binding_request() {
        let good = binding("a:b");
        // Truncated, extended, wrong cookie, a response, not STUN at all.
        assert_eq!(stun_local_ufrag(&good[..good.len() - 4]), None);
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 4]);
        assert_eq!(stun_local_ufrag(&longer), None);
        let mut cookie = good.clone();
        cookie[4] ^= 1;
        assert_eq!(stun_local_ufrag(&cookie), None);
        let mut response = good.clone();
        response[0..2].copy_from_slice(&0x0101u16.to_be_bytes());
        assert_eq!(stun_local_ufrag(&response), None);
        let mut rtp = good.clone();
        rtp[0] = 0x80;
        assert_eq!(stun_local_ufrag(&rtp), None);
        assert_eq!(stun_local_ufrag(&[]), None);
        // An attribute claiming more than there is.
        let mut bad = good.clone();
        bad[22..24].copy_from_slice(&0x4000u16.to_be_bytes());
        assert_eq!(stun_local_ufrag(&bad), None);
    }

    #[test]
    fn routes_by_ufrag_then_by_learned_address() {
        let mut d: Demux<u32> = Demux::new();
        d.register("aaaa", 1).unwrap();
        d.register("bbbb", 2).unwrap();
        assert_eq!(d.register("aaaa", 2), Err(UfragTaken));
        assert_eq!(d.register("aaaa", 1), Ok(()));
        let (x, y) = (addr("192.0.2.1:5000"), addr("[2001:db8::2]:6000"));
        assert_eq!(d.route(x, &binding("aaaa:zz")), Some(1));
        assert_eq!(d.route(y, &binding("bbbb:zz")), Some(2));
        assert_eq!(d.route(y, &binding("cccc:zz")), None);
        let dtls = [22u8, 254, 253, 0, 0];
        assert_eq!(d.route(x, &dtls), None, "not learned yet");
        d.learn(x, 1);
        d.learn(y, 2);
        assert_eq!(d.route(x, &dtls), Some(1));
        assert_eq!(d.route(y, &dtls), Some(2));
        // Found by a learned address: learning it again would change nothing.
        assert_eq!(d.route_learned(x, &dtls), Some((1, true)));
        assert_eq!(d.route_learned(x, &binding("aaaa:zz")), Some((1, false)));
        // A STUN request goes by its ufrag even from another call's address.
        assert_eq!(d.route(x, &binding("bbbb:zz")), Some(2));
        // An address moves when another call learns it.
        d.learn(x, 2);
        assert_eq!(d.route(x, &dtls), Some(2));
        d.remove(2);
        assert_eq!(d.route(x, &dtls), None);
        assert_eq!(d.route(y, &binding("bbbb:zz")), None);
        assert_eq!(d.len(), 1);
        d.learn(y, 2); // unregistered: ignored
        assert_eq!(d.route(y, &dtls), None);
    }

    #[test]
    fn ice_restart_and_address_cap() {
        let mut d: Demux<u32> = Demux::new();
        d.register("old", 7).unwrap();
        d.learn(addr("192.0.2.1:1"), 7);
        d.register("new", 7).unwrap();
        assert_eq!(d.call_of_ufrag("old"), None);
        assert_eq!(d.call_of_ufrag("new"), Some(7));
        assert_eq!(d.route(addr("192.0.2.1:1"), &[0x80, 0, 0]), Some(7));
        for p in 2..=(MAX_ADDRS_PER_CALL as u16 + 1) {
            d.learn(SocketAddr::from(([192, 0, 2, 1], p)), 7);
        }
        assert_eq!(d.route(addr("192.0.2.1:1"), &[0x80, 0, 0]), None, "oldest forgotten");
        assert_eq!(d.route(addr("192.0.2.1:2"), &[0x80, 0, 0]), Some(7));
        d.remove(7);
        assert!(d.is_empty());
    }
}
