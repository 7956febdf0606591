//! What start-up leaves resident that a running gateway does not need.
//!
//! Start-up runs code that serving never runs again: argument and config parsing, the DTLS
//! certificate (key generation, aws-lc's entropy self-test), opening and migrating the
//! storage (most of SQLite's parser). Each instruction fetch on a page not yet mapped maps the
//! whole 64 KiB around it (the kernel's fault-around), so about 100 such faults leave 6–8 MiB
//! of the executable and libc counted in VmRSS of an idle gateway, all of it a clean copy of
//! the file. [`shed_startup_pages`] unmaps those clean copies once start-up is done: the pages
//! stay in the page cache (shared, reclaimable), and whatever the gateway runs again is mapped
//! back on its first use by an ordinary minor fault.
//!
//! # Contracts
//! - Only file mappings that are not writable and hold no page of their own (smaps
//!   `Anonymous: 0 kB`) are touched: text and read-only data as the file has them. The RELRO
//!   part of a data segment (written by the dynamic loader, then made read-only) has private
//!   pages and is left alone, as is every writable, anonymous or special mapping (heap, stacks,
//!   `[vdso]`).
//! - Never fails: a mapping the kernel refuses, or a /proc that cannot be read, is skipped.

/// What [`shed_startup_pages`] unmapped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shed {
    /// Mappings unmapped.
    pub mappings: usize,
    /// Their resident KiB just before.
    pub kib: u64,
}

/// A mapping of /proc/self/smaps that may be unmapped: a clean, read-only copy of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Clean {
    start: usize,
    len: usize,
    rss_kib: u64,
}

/// Unmaps the clean read-only file pages (see the module's contracts) and gives back freed heap
/// memory to the OS (`malloc_trim`). Call once start-up is over, before serving.
pub fn shed_startup_pages() -> Shed {
    let smaps = match std::fs::read_to_string("/proc/self/smaps") {
        Ok(s) => s,
        Err(e) => {
            log::debug!("/proc/self/smaps: {e}; start-up pages kept");
            return Shed::default();
        }
    };
    let mut shed = Shed::default();
    for m in clean_file_mappings(&smaps) {
        // SAFETY: MADV_DONTNEED on a private file mapping that has no private page drops only
        // page-table entries of pages identical to the file; the next access maps the same
        // bytes back from the page cache. No Rust object lives in such a mapping's memory as
        // anything but immutable bytes of the file.
        #[allow(unsafe_code)]
        let done = unsafe { libc::madvise(m.start as *mut libc::c_void, m.len, libc::MADV_DONTNEED) };
        if done == 0 {
            shed.mappings += 1;
            shed.kib += m.rss_kib;
        }
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
    log::debug!("start-up pages shed: {} KiB in {} mappings", shed.kib, shed.mappings);
    shed
}

/// The mappings of `smaps` (the text of /proc/PID/smaps) that are file-backed (a path), not
/// writable, private, resident, and hold no anonymous (copied-on-write) page.
fn clean_file_mappings(smaps: &str) -> Vec<Clean> {
    let mut found = Vec::new();
    // The mapping being read: (start, len, eligible so far), its Rss, its Anonymous.
    let mut current: Option<(usize, usize, bool)> = None;
    let (mut rss, mut anon) = (None::<u64>, None::<u64>);
    let mut finish = |current: Option<(usize, usize, bool)>, rss: Option<u64>, anon: Option<u64>| {
        if let (Some((start, len, true)), Some(rss_kib), Some(0)) = (current, rss, anon) {
            if rss_kib > 0 {
                found.push(Clean { start, len, rss_kib });
            }
        }
    };
    for line in smaps.lines() {
        if let Some(header) = mapping_header(line) {
            finish(current, rss, anon);
            (current, rss, anon) = (Some(header), None, None);
        } else if let Some(v) = field_kib(line, "Rss:") {
            rss = Some(v);
        } else if let Some(v) = field_kib(line, "Anonymous:") {
            anon = Some(v);
        }
    }
    finish(current, rss, anon);
    found
}

/// A header line (`START-END PERMS OFFSET DEV INODE [PATH]`) as (start, length, eligible):
/// eligible when the permissions are `r--p` or `r-xp` and the path is a file.
fn mapping_header(line: &str) -> Option<(usize, usize, bool)> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
    let perms = fields.next()?;
    if perms.len() != 4 || end <= start {
        return None;
    }
    let path = fields.nth(3);
    let eligible = matches!(perms, "r--p" | "r-xp") && path.is_some_and(|p| p.starts_with('/'));
    Some((start, end - start, eligible))
}

/// The value of a `NAME:   N kB` line.
fn field_kib(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5598d1ac3000-5598d1eb1000 r--p 00000000 fe:00 5540421                    /usr/bin/sylkgw-mio
Size:               4024 kB
Rss:                1552 kB
Anonymous:             0 kB
VmFlags: rd mr mw me dw sd
5598d1eb1000-5598d2b93000 r-xp 003ee000 fe:00 5540421                    /usr/bin/sylkgw-mio
Size:              13192 kB
Rss:                6552 kB
Anonymous:             0 kB
5598d2b93000-5598d2bfc000 r--p 010d0000 fe:00 5540421                    /usr/bin/sylkgw-mio
Rss:                 396 kB
Anonymous:           396 kB
5598d2bfc000-5598d2c04000 rw-p 01139000 fe:00 5540421                    /usr/bin/sylkgw-mio
Rss:                  32 kB
Anonymous:            32 kB
559904bf9000-559904c8e000 rw-p 00000000 00:00 0                          [heap]
Rss:                 412 kB
Anonymous:           412 kB
7f424813d000-7f4248145000 rw-s 00000000 fe:00 10020092                   /tmp/x/sylkgw.sqlite3-shm
Rss:                  32 kB
Anonymous:             0 kB
7f4248a23000-7f4248b79000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 884 kB
Anonymous:             0 kB
7f4248b80000-7f4248b90000 r--p 00000000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libm.so.6
Rss:                   0 kB
Anonymous:             0 kB
7ffd6f1d6000-7ffd6f1d8000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_are_shed() {
        let found = clean_file_mappings(SMAPS);
        let starts: Vec<usize> = found.iter().map(|c| c.start).collect();
        assert_eq!(starts, [0x5598d1ac3000, 0x5598d1eb1000, 0x7f4248a23000], "{found:?}");
        assert_eq!(found[1], Clean { start: 0x5598d1eb1000, len: 0x5598d2b93000 - 0x5598d1eb1000, rss_kib: 6552 });
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(clean_file_mappings("garbage\nRss: x kB\nzz-yy r--p 0 0 0 /a\nRss: 4 kB\nAnonymous: 0 kB\n").is_empty());
        assert_eq!(mapping_header("1000-0800 r--p 0 fe:00 1 /a"), None);
        assert_eq!(field_kib("Rss:   12 kB", "Rss:"), Some(12));
    }

    /// In this very process: the shed pages come back when used, and what is mapped after it is
    /// less than before.
    #[test]
    fn the_process_runs_on_after_shedding() {
        let file_kib = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .unwrap()
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        let before = file_kib();
        let shed = shed_startup_pages();
        assert!(shed.mappings > 0 && shed.kib > 0, "{shed:?}");
        assert!(file_kib() < before, "RssFile {} KiB after, {before} KiB before", file_kib());
        // Code and read-only data are mapped back on use.
        let text = format!("{:?}", clean_file_mappings(SMAPS));
        assert!(text.contains("rss_kib: 884"));
    }
}
