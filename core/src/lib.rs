//! sylkgw-core: the WebRTC-to-SIP gateway as a deterministic state machine.
//!
//! This crate is the whole product logic: HTTP and WebSocket (tungstenite's server role over
//! memory), TLS (rustls' buffered API over memory), the sylkRTC API in both dialects, the SIP
//! user agent, calls and media, and the pure parts of messaging and storage. **It performs no IO and spawns nothing**: bytes,
//! datagrams and time (`now`) are inputs, and everything it wants done is an [`Output`]. Its own
//! code never reads a clock (clippy bans `Instant::now`/`SystemTime::now` here) and draws all its
//! randomness (ids, tags, branches, nonces, ICE credentials, str0m's `fastrand` draws) from the
//! 32-byte seed. Given the same seed, start time and inputs, it produces the same outputs above
//! TLS and outside media, which is what capture replay ([`capture`]) relies on.
//!
//! Exactly where that stops, all inside the libraries it embeds:
//! - TLS: rustls (the wss server, SIP over TLS) draws its randoms and key shares from the OS
//!   through aws-lc-rs, so the bytes on a TLS connection are not reproducible. Captures are taken
//!   above TLS and replay that plaintext on a core without TLS.
//! - Media: str0m's DTLS (dimpl over aws-lc-rs) draws from the OS as well, and str0m reads
//!   `Instant::now()` and `SystemTime::now()` once per process to map instants to NTP time for
//!   RTCP. Media is therefore not replayable; captures leave media out (its decisions are recorded
//!   as `media` events) and a replay masks the DTLS fingerprint ([`capture::mask_media`]).
//! - The DTLS certificate ([`media::webrtc::DtlsIdentity`]) is made from OS randomness outside
//!   the state machine: by the runtime at start, or by [`capture::replay`] for a replay.
//!
//! The command line, config files, logging, the OS seed and the drive loop the runtimes share
//! live in the separate `sylkgw-driver` crate (`core/driver`).
//!
//! # The contract
//! 1. Build with [`Gateway::new`]`(config, seed, now, unix_time)`.
//! 2. Drain: call [`Gateway::poll_output`] until it returns [`Output::Timeout`]. Do this after
//!    `new` and after **every** [`Gateway::handle_input`]; other outputs (writes, closes,
//!    datagrams) are to be carried out in the order given.
//! 3. Feed one [`Input`] at a time with the current time. `now` MUST NOT go backwards. Feed
//!    [`Input::Timeout`] once the last `Output::Timeout` instant has passed.
//! 4. Connection ids are the runtime's to choose ([`Input::Accepted`]); after
//!    [`Output::StreamClose`] or [`Input::StreamClosed`] the core has forgotten that id.
//! 5. UDP sockets: at start the runtime binds the SIP socket ([`Gateway::sip_listen`]) and the
//!    WebRTC socket ([`Gateway::webrtc_listen`]) under ids below 16 of its choosing and reports
//!    each with [`Input::UdpBound`]. The core asks for more with [`Output::BindUdp`] (ids from
//!    16), answered once each, after the drain, by [`Input::UdpBound`] or
//!    [`Input::UdpBindFailed`]; [`Output::CloseUdp`] ends one. [`Output::Datagram`] is sent from
//!    the socket its `socket` names.
//!
//! # Run loop
//! ```
//! use std::time::{Duration, Instant};
//! use sylkgw_core::{Config, ConnId, Gateway, Input, Listener, Output};
//!
//! let start = Instant::now();
//! let mut gw = Gateway::new(Config::default(), [7; 32], start, Duration::from_secs(1_767_225_600)).unwrap();
//! let mut next_timeout = drain(&mut gw);
//!
//! // A socket accepted a connection and read an upgrade request:
//! let conn = ConnId(1);
//! gw.handle_input(start, Input::Accepted { conn, listener: Listener::Web, peer: "127.0.0.1:40000".parse().unwrap() });
//! next_timeout = drain(&mut gw);
//! let request = "GET /webrtcgateway/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
//!                Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!                Sec-WebSocket-Protocol: sylkRTC-2\r\n\r\n";
//! gw.handle_input(start, Input::StreamData { conn, data: request.as_bytes() });
//! next_timeout = drain(&mut gw);
//!
//! // When the clock reaches `next_timeout`:
//! gw.handle_input(next_timeout, Input::Timeout);
//! drain(&mut gw);
//!
//! fn drain(gw: &mut Gateway) -> Instant {
//!     loop {
//!         match gw.poll_output() {
//!             Output::StreamWrite { conn, data } => { /* write `data` to the socket of `conn` */ }
//!             Output::StreamClose { conn } => { /* flush, then close the socket of `conn` */ }
//!             Output::Datagram(t) => { /* send t.payload from socket t.socket to t.to */ }
//!             Output::Connect { conn, to } => { /* connect; answer with Input::Connected */ }
//!             Output::Resolve { query, qtype, name } => { /* one DNS query; answer with Input::Resolved */ }
//!             Output::BindUdp { socket, purpose, local } => { /* bind; answer after the drain */ }
//!             Output::CloseUdp { socket } => { /* close that socket */ }
//!             Output::Store { id, request } => { /* off the loop; answer with Input::Stored */ }
//!             Output::ToWorker { worker, msg } => { /* to that worker's core, as Input::FromWorker */ }
//!             Output::Timeout(at) => return at,
//!         }
//!     }
//! }
//! ```
//!
//! # Layout
//! `api` (sylkRTC requests, events, dialect codecs) · `http` (the upgrade) · `ws` (WebSocket
//! over memory) · `transport` (in-memory duplex, TLS) · `client` and `account` (one connection's
//! sylkRTC state) · `gateway` (routing, timers, outputs; `gateway::calls`, the call layer) ·
//! `call` (one call) · `errors` (typed client and call errors, SylkServer's strings) · `sip` (the
//! SIP user agent) · `media` (str0m browser legs, SIP-side RTP, SDP) · `messaging` (CPIM, IMDN,
//! MESSAGE bodies) · `storage` (what the core asks of storage) · `capture` (record and replay).

#![deny(unsafe_code)]

pub mod account;
pub mod api;
mod base64;
pub mod call;
pub mod capture;
pub mod client;
pub mod conference;
pub mod config;
pub mod dns;
pub mod drive;
pub mod errors;
pub mod gateway;
pub mod http;
pub mod ids;
pub mod media;
pub mod messaging;
pub mod rng;
pub mod sip;
pub mod storage;
pub mod time;
pub mod transport;
pub mod web;
pub mod ws;

pub use config::{Config, ConfigError, TlsConfig};
pub use drive::{Input, Output, TimeoutReason, Transmit, UdpPurpose};
pub use gateway::{Gateway, Stats};
pub use ids::{ConnId, Listener, SocketId};
