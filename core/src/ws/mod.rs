//! WebSocket connections after the upgrade: tungstenite's server role over an in-memory duplex.

pub mod conn;
pub mod frames;
