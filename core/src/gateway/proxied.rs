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

use super::{ConnId, Gateway};
use crate::http::forwarded::{self, Preamble};
use crate::http::upgrade::{RequestHead, Response};
use std::net::SocketAddr;

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
        log::info!("{id}: client {client} through proxy {old}");
        true
    }
}
