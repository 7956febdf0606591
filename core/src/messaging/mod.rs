//! Messaging bodies (issue #12 groundwork): pure builders and parsers for what SIP MESSAGE
//! carries between sylkRTC apps and SIP peers. No state, no IO.
//!
//! - [`cpim`]: `message/cpim` (RFC 3862) with the IMDN headers (RFC 5438 §6).
//! - [`imdn`]: `message/imdn+xml` (RFC 5438 §7.2) and the mapping from sylkRTC states.
//!
//! Every parse function here is total: any bytes give `Ok` or a typed error, never a panic.

pub mod content_type;
pub mod cpim;
mod escape;
pub mod identity;
pub mod imdn;
mod xml;

pub use content_type::ContentType;
pub use cpim::CpimMessage;
pub use identity::Identity;
pub use imdn::Imdn;
