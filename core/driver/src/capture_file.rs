//! Capture files: where a worker's capture goes, and appending what its core recorded.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use sylkgw_core::Gateway;

/// The capture file of worker `index` out of `workers`: the path itself for one worker,
/// `PATH.N` for several.
pub fn capture_path(base: &Path, index: usize, workers: usize) -> PathBuf {
    if workers <= 1 {
        base.to_path_buf()
    } else {
        let mut s = base.as_os_str().to_owned();
        s.push(format!(".{index}"));
        PathBuf::from(s)
    }
}

/// An open capture file. Lines are written as the core records them.
pub struct CaptureFile {
    file: File,
}

impl CaptureFile {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, String> {
        File::create(path).map(|file| Self { file }).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Appends what the core recorded since the last call.
    pub fn write(&mut self, gw: &mut Gateway) {
        let text = gw.take_capture();
        if !text.is_empty() {
            if let Err(e) = self.file.write_all(text.as_bytes()).and_then(|()| self.file.flush()) {
                log::error!("capture file: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_worker() {
        assert_eq!(capture_path(Path::new("x.cap"), 0, 1), PathBuf::from("x.cap"));
        assert_eq!(capture_path(Path::new("x.cap"), 2, 4), PathBuf::from("x.cap.2"));
    }
}
