//! The core's only source of randomness: a ChaCha20 keystream (RFC 8439 §2.3) keyed by the
//! 32-byte seed given to `Gateway::new`. Deterministic, so replays reproduce every value; and a
//! cryptographic generator, because its outputs go on the wire (tags, branches, Call-IDs) while
//! others must stay secret (SDES keys, ICE passwords, digest cnonces): seeing the former must
//! not reveal the latter. Draw values only in handlers (never while logging): the order of
//! draws is part of the behaviour that replay tests pin down.

/// ChaCha20 as a random number generator (the block counter runs through the 64-bit counter
/// and nonce words, so it never repeats in practice).
#[derive(Clone)]
pub struct Rng {
    key: [u32; 8],
    counter: u64,
    block: [u8; 64],
    used: usize,
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is the seed: never print it.
        f.debug_struct("Rng").field("counter", &self.counter).finish_non_exhaustive()
    }
}

const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

fn quarter(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

/// The ChaCha20 block function (RFC 8439 §2.3) for `key`, block counter and 96-bit nonce.
fn chacha20_block(key: &[u32; 8], counter: u32, nonce: [u32; 3]) -> [u8; 64] {
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&SIGMA);
    init[4..12].copy_from_slice(key);
    init[12] = counter;
    init[13..].copy_from_slice(&nonce);
    let mut s = init;
    for _ in 0..10 {
        quarter(&mut s, 0, 4, 8, 12);
        quarter(&mut s, 1, 5, 9, 13);
        quarter(&mut s, 2, 6, 10, 14);
        quarter(&mut s, 3, 7, 11, 15);
        quarter(&mut s, 0, 5, 10, 15);
        quarter(&mut s, 1, 6, 11, 12);
        quarter(&mut s, 2, 7, 8, 13);
        quarter(&mut s, 3, 4, 9, 14);
    }
    let mut out = [0u8; 64];
    for (i, word) in s.iter().zip(init.iter()).map(|(a, b)| a.wrapping_add(*b)).enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
    }
    out
}

impl Rng {
    /// Keys the generator with `seed`.
    pub fn new(seed: [u8; 32]) -> Self {
        let mut key = [0u32; 8];
        for (i, chunk) in seed.chunks_exact(4).enumerate() {
            key[i] = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Self { key, counter: 0, block: [0; 64], used: 64 }
    }

    fn refill(&mut self) {
        // The low 32 bits are the RFC's block counter, the high ones go into the nonce.
        let nonce = [(self.counter >> 32) as u32, 0, 0];
        self.block = chacha20_block(&self.key, self.counter as u32, nonce);
        self.counter = self.counter.wrapping_add(1);
        self.used = 0;
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            if self.used == 64 {
                self.refill();
            }
            *b = self.block[self.used];
            self.used += 1;
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// `n` random lowercase hex digits (tags, branches, Call-IDs).
    pub fn hex(&mut self, n: usize) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = vec![0u8; n.div_ceil(2)];
        self.fill(&mut bytes);
        bytes
            .iter()
            .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
            .take(n)
            .map(char::from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8439 §2.3.2 test vector.
    #[test]
    fn rfc8439_block() {
        let key_bytes: Vec<u8> = (0u8..32).collect();
        let mut key = [0u32; 8];
        for (i, c) in key_bytes.chunks_exact(4).enumerate() {
            key[i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        let nonce = [0x0900_0000, 0x4a00_0000, 0];
        let out = chacha20_block(&key, 1, nonce);
        let expected_start =
            [0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3, 0x20, 0x71, 0xc4];
        assert_eq!(&out[..16], &expected_start);
        assert_eq!(&out[60..], &[0xa2, 0x50, 0x3c, 0x4e]);
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::new([7; 32]);
        let mut b = Rng::new([7; 32]);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new([1; 32]).next_u64(), Rng::new([2; 32]).next_u64());
        let h = Rng::new([0; 32]).hex(21);
        assert_eq!(h.len(), 21);
        assert!(h.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
