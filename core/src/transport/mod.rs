//! The byte pipeline under everything: an in-memory duplex that lets stream-oriented libraries
//! (tungstenite) run over buffers, and TLS over memory with rustls' buffered API.

pub mod duplex;
pub mod tls;
