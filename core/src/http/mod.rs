//! HTTP/1.1 in front of the WebSocket: parsing the request head and deciding the upgrade.

pub mod forwarded;
pub mod upgrade;
