//! systemd's readiness protocol (`sd_notify(3)`, `Type=notify`): one datagram `READY=1` to the
//! Unix socket named by `$NOTIFY_SOCKET` once the listeners are up, `RELOADING=1`/`READY=1`
//! around a reload, `STOPPING=1` at shutdown. No socket named: nothing is sent. A path starting
//! with `@` names a socket in the abstract namespace.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (`READY=1`, `STOPPING=1`, …) to `$NOTIFY_SOCKET`, if set; failures are logged
/// at debug level (a missing service manager is not an error of ours).
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            None => socket.send_to(state.as_bytes(), &path),
        }
    });
    match sent {
        Ok(_) => log::debug!("notified the service manager: {state}"),
        Err(e) => log::debug!("NOTIFY_SOCKET {}: {e}", path.to_string_lossy()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_the_socket() {
        let dir = std::env::temp_dir().join(format!("sylkgw-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        // The only test of this crate that sets NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        listener.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        notify("STOPPING=1"); // no socket named: nothing sent, no panic
        let _ = std::fs::remove_dir_all(&dir);
    }
}
