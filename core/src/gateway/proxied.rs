//! Web connections through a reverse proxy (`trusted_proxies`, `http::forwarded`): the PROXY
//! protocol v2 header before anything else on the stream, or `Forwarded`/`X-Forwarded-For` in
//! the upgrade request, give the client's address; the connection is then counted, logged and
//! checked under it.
//!
//! # Contract
//! - Every web connection starts with its preamble undecided; the first bytes decide it. A
//!   PROXY header from a trusted proxy is consumed (and recorded in captures as stream input,
//!   so a replay decides the same); from anyone else, or malformed, it closes the connection.
//! - A connection from a trusted proxy is not held to `max_connections_per_ip` at accept; it
//!   is once its client's address is known, and refused then (closed, or HTTP 503 during the
//!   upgrade) when that address has `max_connections_per_ip` connections already.
//! - A client address from a PROXY header wins over the request's headers.
//! - The connections readdressed during an input are listed until the next input
//!   ([`Gateway::take_readdressed`]): a runtime with several cores holds them to its
//!   process-wide per-IP cap too (`sylkgw_driver::Io::readdress`).

use super::{ConnId, Gateway};
use crate::http::forwarded::{self, Preamble};
use crate::http::upgrade::{RequestHead, Response};
use std::net::{IpAddr, SocketAddr};

/// How a web connection reached us.
#[derive(Debug, Default)]
pub(super) struct Forwarding {
    /// The first bytes, while it is not known whether they start with a PROXY header.
    preamble: Option<Vec<u8>>,
    /// The trusted proxy the connection came from, if it did.
    proxy: Option<SocketAddr>,
    /// The client's address is known (from a PROXY header or the request's headers).
    known: bool,
}

impl Forwarding {
    /// A connection accepted from `peer` on a web listener (`web`: the preamble is watched).
    pub(super) fn new(web: bool, peer: SocketAddr, trusted: bool) -> Self {
        Self { preamble: web.then(Vec::new), proxy: trusted.then_some(peer), known: false }
    }

    /// Whether the first bytes are still undecided.
    pub(super) fn undecided(&self) -> bool {
        self.preamble.is_some()
    }
}

impl Gateway {
    /// The connections whose client address became known during the last input, with that
    /// address (each once; the list is cleared by the next input).
    pub fn take_readdressed(&mut self) -> Vec<(ConnId, IpAddr)> {
        std::mem::take(&mut self.readdressed)
    }

    /// Feeds `data`, the start of connection `id`, to its undecided preamble. Returns the bytes
    /// that follow the preamble (the stream's own), or `None` when more are needed or the
    /// connection was closed for a bad or untrusted PROXY header.
    pub(super) fn preamble(&mut self, id: ConnId, data: &[u8]) -> Option<Vec<u8>> {
        let conn = self.conns.get_mut(&id)?;
        let buf = conn.fwd.preamble.as_mut()?;
        buf.extend_from_slice(data);
        let verdict = forwarded::proxy_v2(buf);
        let (peer, proxy) = (conn.peer, conn.fwd.proxy);
        match verdict {
            Preamble::Partial if buf.len() <= forwarded::MAX_PROXY_HEADER => None,
            Preamble::Absent => conn.fwd.preamble.take(),
            Preamble::Proxy { len, source } if proxy.is_some() => {
                let mut rest = conn.fwd.preamble.take().unwrap_or_default();
                let header: Vec<u8> = rest.drain(..len).collect();
                conn.fwd.known = source.is_some();
                if let Some(rec) = &mut self.recorder {
                    rec.stream_in(self.now, id, &header);
                }
                match source {
                    Some(client) if !self.readdress(id, client) => {
                        self.close_now(id);
                        None
                    }
                    _ => Some(rest),
                }
            }
            Preamble::Proxy { .. } | Preamble::Partial | Preamble::Invalid(_) => {
                let why = match verdict {
                    Preamble::Invalid(why) => why,
                    Preamble::Partial => "header too long",
                    _ => "not from a trusted proxy",
                };
                log::warn!("{id}: PROXY protocol header from {peer} refused ({why}); closing");
                self.tally.error("proxy");
                let bytes = conn.fwd.preamble.take().unwrap_or_default();
                if let Some(rec) = &mut self.recorder {
                    rec.stream_in(self.now, id, &bytes);
                }
                self.close_now(id);
                None
            }
        }
    }

    /// The upgrade request `head` of connection `id`: from a trusted proxy whose PROXY header
    /// gave no address, the client's address comes from `Forwarded`/`X-Forwarded-For` and the
    /// `Host` the origin check compares with from `X-Forwarded-Host`/`Forwarded: host=`.
    /// Returns false when the connection was refused (HTTP 503: too many from that client).
    pub(super) fn forwarded_head(&mut self, id: ConnId, head: &mut RequestHead) -> bool {
        let Some(conn) = self.conns.get(&id) else { return false };
        if conn.fwd.proxy.is_none() {
            return true;
        }
        if let Some(host) = forwarded::forwarded_host(&head.headers) {
            match head.headers.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case("host")) {
                Some((_, v)) => *v = host,
                None => head.headers.push(("Host".into(), host)),
            }
        }
        if conn.fwd.known {
            return true;
        }
        let Some(client) = self.config.trusted_proxies.client(&forwarded::forwarded_for(&head.headers)) else {
            return true; // nothing forwarded: the proxy's own address stays
        };
        if self.readdress(id, SocketAddr::new(client, 0)) {
            return true;
        }
        let cap = self.config.max_connections_per_ip;
        self.reject(id, Response::text(503, format!("{cap} connections from {client} already")));
        false
    }

    /// Connection `id` is the client `client`'s: counted under its address from now on (and
    /// logged with it). False, and nothing changed, when that address has
    /// `max_connections_per_ip` connections already.
    fn readdress(&mut self, id: ConnId, client: SocketAddr) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else { return false };
        let old = conn.peer;
        conn.fwd.known = true;
        if old.ip() == client.ip() {
            conn.peer = client;
            return true;
        }
        let n = self.per_ip.get(&client.ip()).copied().unwrap_or(0);
        if n >= self.config.max_connections_per_ip {
            log::warn!("{id}: {n} connections from {} (through proxy {old}) already; closing", client.ip());
            return false;
        }
        conn.peer = client;
        if let Some(count) = self.per_ip.get_mut(&old.ip()) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&old.ip());
            }
        }
        *self.per_ip.entry(client.ip()).or_default() += 1;
        self.readdressed.push((id, client.ip()));
        log::info!("{id}: client {client} through proxy {old}");
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::http::forwarded::{TrustedProxies, PROXY_V2_SIGNATURE};
    use crate::{Config, ConnId, Gateway, Input, Listener, Output};
    use std::time::{Duration, Instant};

    const PROXY: &str = "10.0.0.1:5000";

    fn gateway(t0: Instant) -> Gateway {
        let config = Config {
            capture: true,
            trusted_proxies: TrustedProxies::parse("10.0.0.0/24").unwrap(),
            max_connections_per_ip: 1,
            web_origins: vec!["https://only.example".into()],
            ..Config::default()
        };
        let mut gw = Gateway::new(config, [3; 32], t0, Duration::from_secs(1_767_225_600)).unwrap();
        drain(&mut gw);
        gw
    }

    /// The outputs until the Timeout: what was written (as text) and whether it was closed.
    fn drain(gw: &mut Gateway) -> (String, bool) {
        let (mut text, mut closed) = (String::new(), false);
        loop {
            match gw.poll_output() {
                Output::StreamWrite { data, .. } => text.push_str(&String::from_utf8_lossy(&data)),
                Output::StreamClose { .. } => closed = true,
                Output::Timeout(_) => return (text, closed),
                _ => {}
            }
        }
    }

    /// A connection `n` from `peer` sending `bytes`: what came back.
    fn exchange(gw: &mut Gateway, now: Instant, n: u64, peer: &str, bytes: &[u8]) -> (String, bool) {
        let conn = ConnId(16 + n);
        gw.handle_input(now, Input::Accepted { conn, listener: Listener::Web, peer: peer.parse().unwrap() });
        let (_, refused) = drain(gw);
        gw.handle_input(now, Input::StreamData { conn, data: bytes });
        let (text, closed) = drain(gw);
        (text, closed || refused)
    }

    fn upgrade(extra: &str) -> Vec<u8> {
        let origin = if extra.contains("Origin:") { "" } else { "Origin: https://only.example\r\n" };
        format!(
            "GET /webrtcgateway/ws HTTP/1.1\r\nHost: 10.0.0.2:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: sylkRTC-2\r\n{origin}{extra}\r\n"
        )
        .into_bytes()
    }

    fn proxy_v2(client: [u8; 4], rest: &[u8]) -> Vec<u8> {
        let mut b = PROXY_V2_SIGNATURE.to_vec();
        b.extend([0x21, 0x11, 0, 12]);
        b.extend(client);
        b.extend([10, 0, 0, 2, 0x9c, 0x40, 0x1f, 0x90]);
        b.extend(rest);
        b
    }

    #[test]
    fn forwarded_clients_are_counted_under_their_own_address() {
        let t0 = crate::time::test_epoch();
        let mut gw = gateway(t0);
        let xff = upgrade("X-Forwarded-For: 198.51.100.1, 203.0.113.5\r\n");
        let (text, _) = exchange(&mut gw, t0, 0, PROXY, &xff);
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        assert_eq!(gw.take_readdressed(), [(ConnId(16), "203.0.113.5".parse().unwrap())]);
        // The cap (1) holds per client, whatever the proxy's count.
        let (text, closed) = exchange(&mut gw, t0, 1, PROXY, &xff);
        assert!(text.starts_with("HTTP/1.1 503") && closed, "{text}");
        let (text, _) = exchange(&mut gw, t0, 2, PROXY, &upgrade("Forwarded: for=203.0.113.6\r\n"));
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        // A PROXY header gives the client before TLS or HTTP; it wins over the headers.
        let (text, _) = exchange(&mut gw, t0, 3, PROXY, &proxy_v2([203, 0, 113, 7], &xff));
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        let (text, closed) = exchange(&mut gw, t0, 4, "10.0.0.3:1", &proxy_v2([203, 0, 113, 7], b""));
        assert!(text.is_empty() && closed, "over the cap: closed before any answer");
        assert_eq!(gw.stats().per_ip, 3, "203.0.113.5 .6 .7");
        // The PROXY headers are in the capture: the replay decides the same.
        let text = gw.take_capture();
        let capture = crate::capture::parse(&text).expect("the capture parses");
        assert_eq!(crate::capture::replay(&capture, crate::time::test_epoch()).expect("replay"), text);
    }

    #[test]
    fn untrusted_peers_are_taken_at_their_word_only_for_their_own_address() {
        let t0 = crate::time::test_epoch();
        let mut gw = gateway(t0);
        let (text, closed) = exchange(&mut gw, t0, 0, "192.0.2.1:1", &proxy_v2([203, 0, 113, 7], &upgrade("")));
        assert!(text.is_empty() && closed, "a PROXY header from an untrusted peer: {text}");
        let (text, _) = exchange(&mut gw, t0, 1, "192.0.2.1:2", &upgrade("X-Forwarded-For: 203.0.113.5\r\n"));
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        assert!(gw.take_readdressed().is_empty());
        let (text, closed) = exchange(&mut gw, t0, 2, "192.0.2.1:3", &upgrade("X-Forwarded-For: 203.0.113.6\r\n"));
        assert!(closed && text.is_empty(), "the second from 192.0.2.1 is over the cap: {text}");
        // The origin check compares with the host the proxy was asked for.
        let origin = "Origin: https://gw.example.com\r\nX-Forwarded-Host: gw.example.com\r\n";
        let (text, _) = exchange(&mut gw, t0, 3, "192.0.2.9:1", &upgrade(origin));
        assert!(text.starts_with("HTTP/1.1 403"), "not from a proxy: {text}");
        let (text, _) = exchange(&mut gw, t0, 4, PROXY, &upgrade(origin));
        assert!(text.starts_with("HTTP/1.1 101"), "through the proxy: {text}");
        // Bytes split inside the signature wait for the rest.
        let conn = ConnId(40);
        gw.handle_input(t0, Input::Accepted { conn, listener: Listener::Web, peer: PROXY.parse().unwrap() });
        drain(&mut gw);
        let whole = proxy_v2([198, 51, 100, 9], &upgrade(""));
        gw.handle_input(t0, Input::StreamData { conn, data: &whole[..5] });
        assert_eq!(drain(&mut gw), (String::new(), false));
        gw.handle_input(t0, Input::StreamData { conn, data: &whole[5..] });
        assert!(drain(&mut gw).0.starts_with("HTTP/1.1 101"));
    }
}
