//! Reads the fuzz input one byte at a time.

/// Reads the fuzz input one byte at a time; past the end every read is 0.
pub(crate) struct ByteCursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteCursor<'a> {
    /// A cursor at the start of `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub(crate) fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A number below `n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    pub(crate) fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len())]
    }

    /// Up to `max` raw bytes, the count chosen by the first.
    pub(crate) fn bytes(&mut self, max: usize) -> &[u8] {
        let n = self.below(max + 1).min(self.data.len().saturating_sub(self.pos));
        let start = self.pos.min(self.data.len());
        self.pos += n;
        &self.data[start..start + n]
    }
}
