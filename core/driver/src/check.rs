//! `--check-config FILE`: the configuration a runtime would start with, checked and printed,
//! without binding anything.

use crate::settings::{load, Args};
use std::path::Path;

/// Loads `path` with the rest of the command line `args` (as a start would: PEM files read,
/// addresses checked), prints the effective configuration as JSON on stdout and exits 0; on an
/// error, prints it on stderr and exits 2. Secrets (TLS keys, the DTLS identity) are not
/// printed.
pub fn check_config(args: &Args, path: &Path) -> ! {
    let args = Args { config: Some(path.to_path_buf()), ..args.clone() };
    let settings = match load(&args) {
        Ok(s) => s,
        Err(e) => crate::fatal(2, e),
    };
    let caps = settings.caps;
    let effective = serde_json::json!({
        "config_file": path.display().to_string(),
        "listen": settings.listen.to_string(),
        "tls": settings.core.tls.is_some(),
        "threads": settings.threads,
        "metrics_listen": settings.metrics_listen.map(|a| a.to_string()),
        "storage": settings.storage.describe(),
        "max_sip_tcp_connections_per_ip": caps.sip_per_ip,
        "max_sip_tcp_connections": caps.sip_total,
        "core": settings.core,
    });
    println!("{}", serde_json::to_string_pretty(&effective).unwrap_or_default());
    println!("{}: OK", path.display());
    std::process::exit(0)
}
