//! SIP (RFC 3261) for the gateway's SIP side.
//!
//! The message layer is the project's own (see `shared/spec/sip.md` §0 for why not rsip):
//! - [`message`]: methods, header names, headers, requests and responses, printing, and typed
//!   views of the headers the stack reads (Via, From/To/Contact/Route, CSeq, …);
//! - [`uri`]: `sip:`, `sips:` and `tel:` URIs, hosts including IPv6 references (RFC 5118), and
//!   URI comparison (RFC 3261 §19.1.4);
//! - [`parse`]: one complete message from bytes, and the request checks behind 400/416/505;
//! - [`framing`]: cutting a TCP/TLS byte stream into messages and CRLF keep-alives.
//!
//! Everything here is pure: bytes in, values out, no IO and no clock.

pub mod calls;
pub mod dialog;
pub mod digest;
pub mod framing;
pub mod incoming;
mod indialog;
pub mod invite;
pub mod message;
mod midcall;
pub mod parse;
pub mod registration;
pub mod stack;
pub mod target;
pub mod transaction;
pub mod transport;
pub mod uri;
