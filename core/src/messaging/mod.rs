//! Messaging bodies (issue #12 groundwork): pure builders and parsers for what SIP MESSAGE
//! carries between sylkRTC apps and SIP peers. No state, no IO.
//!
//! - [`cpim`]: `message/cpim` (RFC 3862) with the IMDN headers (RFC 5438 §6).
//! - [`imdn`]: `message/imdn+xml` (RFC 5438 §7.2) and the mapping from sylkRTC states.
//! - [`body`]: what an incoming MESSAGE is (chat line, IMDN, sync entry, public key, …) and
//!   the fields the `account-event message` / `disposition-notification` need.
//! - [`outgoing`]: the bodies the gateway sends (chat line, IMDN, sync entry).
//! - [`content`]: the convention for carrying payload bytes in sylkRTC JSON strings.
//!
//! Every parse function here is total: any bytes give `Ok` or a typed error, never a panic.
//! A fuzz target (in the test kit, not here) should drive [`body::classify`] with an arbitrary
//! Content-Type and body (it reaches the CPIM, IMDN, XML and JSON readers), and check that
//! whatever [`CpimMessage::parse`] or [`Imdn::parse`] accepts and `encode` then writes parses
//! back equal.

pub mod body;
pub mod content;
pub mod content_type;
pub mod cpim;
mod escape;
pub mod identity;
pub mod imdn;
pub mod outgoing;
mod xml;

pub use body::{classify, Incoming};
pub use content_type::ContentType;
pub use cpim::CpimMessage;
pub use identity::Identity;
pub use imdn::Imdn;
