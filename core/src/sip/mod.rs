//! SIP (RFC 3261) for the gateway's SIP side.
//!
//! The message layer is the project's own (see `shared/spec/sip.md` §0 for why not rsip), in
//! layers that import only downwards:
//! - `lex` (tokens, whitespace, [`parse::ParseError`]) ← [`uri`] (`sip:`, `sips:`, `tel:` URIs,
//!   RFC 5118 hosts, §19.1.4 comparison) ← `names` (methods, header names) ← `views` (Via,
//!   name-addr, Contact, CSeq) ← [`message`] (headers, requests, responses, printing; re-exports
//!   the names and views) ← [`parse`] (one message from bytes; the 400/416/505 checks);
//! - [`framing`]: cutting a TCP/TLS byte stream into messages and CRLF keep-alives.
//!
//! The user agent is cooperating machines, also layered:
//! - [`stack::SipStack`], the parent: routes each input by id to the machine it belongs to,
//!   answers what needs no machine, and forgets machines once they are over;
//! - the machines, which own their state and never see the stack or each other: `registrant`
//!   (one registration's REGISTERs), `leg` (a call leg and the requests inside its dialog) over
//!   [`calls`] (outgoing) and [`incoming`], with `midcall` for the rules of INFO, re-INVITE and
//!   UPDATE and `reliable` for those of PRACK (RFC 3262); [`pager`] for one outgoing MESSAGE (RFC 3428);
//! - `services`, what they share, reached by ids: transports, client and server transactions,
//!   named timers, name queries, the event and output queues; under it `build` (message pieces),
//!   `events` (ids, [`stack::SipEvent`], [`stack::SipOutput`]) and `identity` (accounts).
//!
//! Everything here is pure: bytes in, values out, no IO and no clock.

mod answered;
mod budget;
mod build;
pub mod calls;
pub mod dialog;
pub mod digest;
mod events;
pub mod framing;
mod identity;
pub mod incoming;
pub mod invite;
mod leg;
mod lex;
pub mod message;
mod midcall;
mod names;
pub mod pager;
pub mod parse;
mod registrant;
pub mod registration;
mod reliable;
pub mod rfc3263;
mod services;
pub mod stack;
pub mod target;
pub mod transaction;
pub mod transport;
pub mod uri;
mod views;
