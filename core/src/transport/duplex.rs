//! An in-memory `Read + Write` pair: reads drain what the core was given, writes collect what it
//! will emit. `Read` returns `WouldBlock` when empty, which is how tungstenite learns to wait.

use std::io::{self, Read, Write};

/// Capacity above which an emptied buffer is released, so idle connections stay small.
const KEEP_CAPACITY: usize = 1024;

/// Inbound bytes not yet consumed, outbound bytes not yet emitted.
#[derive(Debug, Default)]
pub struct Duplex {
    inbound: Vec<u8>,
    read_pos: usize,
    outbound: Vec<u8>,
}

impl Duplex {
    /// Appends received bytes.
    pub fn push_inbound(&mut self, data: &[u8]) {
        if self.read_pos == self.inbound.len() {
            self.inbound.clear();
            self.read_pos = 0;
        }
        self.inbound.extend_from_slice(data);
    }

    /// Takes everything written so far.
    pub fn take_outbound(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outbound)
    }

    /// True when something was written and not taken.
    pub fn has_outbound(&self) -> bool {
        !self.outbound.is_empty()
    }

    /// Drops consumed input and releases large idle buffers.
    pub fn compact(&mut self) {
        if self.read_pos == self.inbound.len() {
            self.inbound.clear();
            self.read_pos = 0;
            if self.inbound.capacity() > KEEP_CAPACITY {
                self.inbound = Vec::new();
            }
        }
    }
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = &self.inbound[self.read_pos..];
        if avail.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.read_pos += n;
        Ok(n)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbound.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_then_would_block() {
        let mut d = Duplex::default();
        d.push_inbound(b"abc");
        let mut buf = [0u8; 2];
        assert_eq!(d.read(&mut buf).unwrap(), 2);
        assert_eq!(d.read(&mut buf).unwrap(), 1);
        assert_eq!(d.read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        d.write_all(b"xy").unwrap();
        assert_eq!(d.take_outbound(), b"xy");
        assert!(!d.has_outbound());
    }
}
