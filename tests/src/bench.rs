//! Helpers the benchmark binaries share.

use std::path::PathBuf;

/// `$SYLKGW_BIN_DIR/sylkgw-mio`, else `target/release/sylkgw-mio`, else the debug build.
pub fn locate_binary() -> PathBuf {
    locate("sylkgw-mio")
}

/// `$SYLKGW_BIN_DIR/NAME`, else `target/release/NAME`, else the debug build (with a warning).
pub fn locate(name: &str) -> PathBuf {
    if std::env::var_os("SYLKGW_BIN_DIR").is_some() {
        return crate::binary(name);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().expect("target/PROFILE");
    let target = profile_dir.parent().expect("target");
    let release = target.join("release").join(name);
    if release.is_file() {
        return release;
    }
    let debug = target.join("debug").join(name);
    if debug.is_file() {
        eprintln!("warning: {} is missing; measuring the DEBUG build {}", release.display(), debug.display());
        return debug;
    }
    panic!("{name} is missing: build the binaries first: cargo build --release --workspace");
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (inherited by the server).
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass and nothing else.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            panic!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            } else {
                eprintln!("warning: setrlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}
