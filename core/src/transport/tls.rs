//! TLS for stream connections with rustls' buffered API fed from memory: ciphertext in,
//! plaintext out, and back. One `ServerConfig` (certificate, key, aws-lc-rs) serves every
//! connection.

use crate::config::{ConfigError, TlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{Read, Write};
use std::sync::Arc;

/// Builds the shared server configuration from PEM text (ALPN `http/1.1`, for the web
/// listener).
pub fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let mut config = base_server_config(tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server configuration of the SIP TLS listener: the same certificate, no ALPN (SIP
/// clients do not negotiate one).
pub fn sip_server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    Ok(Arc::new(base_server_config(tls)?))
}

fn base_server_config(tls: &TlsConfig) -> Result<rustls::ServerConfig, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::Tls(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::Tls("no CERTIFICATE block found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(|e| ConfigError::Tls(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::Tls(e.to_string()))
}

/// One TLS server session over memory.
pub struct TlsStream {
    conn: rustls::ServerConnection,
}

/// The TLS session failed; `alert` holds the bytes to send before closing.
#[derive(Debug)]
pub struct TlsFailed {
    /// Why.
    pub error: String,
    /// A TLS alert for the peer (may be empty).
    pub alert: Vec<u8>,
}

impl TlsStream {
    /// A new server session.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<Self, String> {
        rustls::ServerConnection::new(config).map(|conn| Self { conn }).map_err(|e| e.to_string())
    }

    /// Feeds ciphertext; appends any decrypted plaintext to `plain`. Handshake records to send
    /// back are collected by [`TlsStream::take_ciphertext`]. Returns `Ok(true)` once the peer
    /// sent close_notify.
    pub fn receive(&mut self, mut data: &[u8], plain: &mut Vec<u8>) -> Result<bool, TlsFailed> {
        while !data.is_empty() {
            if let Err(e) = self.conn.read_tls(&mut data) {
                return Err(self.failed(e.to_string()));
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => return Err(self.failed(e.to_string())),
            };
            if state.plaintext_bytes_to_read() > 0 {
                let start = plain.len();
                plain.resize(start + state.plaintext_bytes_to_read(), 0);
                if let Err(e) = self.conn.reader().read_exact(&mut plain[start..]) {
                    return Err(self.failed(e.to_string()));
                }
            }
            if state.peer_has_closed() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Encrypts `plain` for sending (buffered until the handshake completes).
    pub fn send(&mut self, plain: &[u8]) {
        // Writing into rustls' buffer cannot fail short of memory exhaustion.
        let _ = self.conn.writer().write_all(plain);
    }

    /// Queues close_notify.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// Ciphertext waiting to go out.
    pub fn take_ciphertext(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        out
    }

    fn failed(&mut self, error: String) -> TlsFailed {
        TlsFailed { error, alert: self.take_ciphertext() }
    }
}
