//! HTTP/1.1 in front of the WebSocket: parsing the request head and deciding the upgrade
//! (`upgrade`), and the message history endpoint (`history`).

pub mod forwarded;
pub mod history;
pub mod upgrade;
