//! Messaging bodies (issue #12 groundwork): pure builders and parsers for what SIP MESSAGE
//! carries between sylkRTC apps and SIP peers. No state, no IO.
//!
//! - [`cpim`]: `message/cpim` (RFC 3862) with the IMDN headers (RFC 5438 §6).
//!
//! Every parse function here is total: any bytes give `Ok` or a typed error, never a panic.

pub mod content_type;
pub mod cpim;
mod escape;
pub mod identity;

pub use content_type::ContentType;
pub use cpim::CpimMessage;
pub use identity::Identity;
