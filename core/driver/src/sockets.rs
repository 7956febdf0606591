//! Socket set-up the runtimes share: the SIP UDP/TCP pair on one port, kernel buffer sizes, an
//! abortive close, and the host's own address. The crate's `unsafe` (libc calls) is here and in [`crate::udp_batch`].

use std::net::SocketAddr;

/// The host's first non-loopback address of the family (loopback when there is none, as in a
/// test's network namespace).
pub fn host_address(v6: bool) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let fallback = if v6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };
    let mut found = None;
    // SAFETY: getifaddrs fills a linked list we only read and then free with freeifaddrs.
    #[allow(unsafe_code)]
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return fallback;
        }
        let mut cur = head;
        while !cur.is_null() && found.is_none() {
            let ifa = &*cur;
            let up = ifa.ifa_flags & (libc::IFF_UP as u32) != 0;
            let lo = ifa.ifa_flags & (libc::IFF_LOOPBACK as u32) != 0;
            if up && !lo && !ifa.ifa_addr.is_null() {
                match (i32::from((*ifa.ifa_addr).sa_family), v6) {
                    (libc::AF_INET, false) => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        found = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
                    }
                    (libc::AF_INET6, true) => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        if (ip.segments()[0] & 0xffc0) != 0xfe80 {
                            found = Some(IpAddr::V6(ip));
                        }
                    }
                    _ => {}
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    found.unwrap_or(fallback)
}

/// Binds the SIP UDP socket and the SIP TCP listener on the same address, both non-blocking.
/// With port 0 the OS picks the UDP port, and the TCP port may already be taken by another
/// process: then both are dropped and a fresh port is tried (up to 16 times). A fixed port that
/// is taken is an error.
pub fn bind_sip(addr: SocketAddr) -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let udp = std::net::UdpSocket::bind(addr)?;
        let local = udp.local_addr()?;
        match std::net::TcpListener::bind(local) {
            Ok(tcp) => {
                udp.set_nonblocking(true)?;
                tcp.set_nonblocking(true)?;
                return Ok((udp, tcp));
            }
            Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into()))
}

/// Bytes asked for as the SIP UDP socket's receive and send buffers: a burst of registrations
/// or a reconnect storm must not be dropped by the kernel before the loop reads it.
pub const UDP_BUFFER: usize = 4 << 20;

/// Enlarges a UDP socket's kernel buffers to [`UDP_BUFFER`]: `SO_RCVBUFFORCE` when the process
/// may (root, CAP_NET_ADMIN), else `SO_RCVBUF`, which the kernel caps at `net.core.rmem_max`
/// (raise that sysctl for non-root deployments). Returns the receive buffer obtained.
pub fn enlarge_udp_buffers(fd: std::os::fd::RawFd) -> usize {
    let size = libc::c_int::try_from(UDP_BUFFER).unwrap_or(libc::c_int::MAX);
    let set = |opt: libc::c_int| {
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid c_int.
        #[allow(unsafe_code)]
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                std::ptr::addr_of!(size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    if !set(libc::SO_RCVBUFFORCE) {
        set(libc::SO_RCVBUF);
    }
    if !set(libc::SO_SNDBUFFORCE) {
        set(libc::SO_SNDBUF);
    }
    let mut got: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a valid c_int.
    #[allow(unsafe_code)]
    let ok = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, std::ptr::addr_of_mut!(got).cast(), &mut len) == 0
    };
    if ok {
        usize::try_from(got).unwrap_or(0)
    } else {
        0
    }
}

/// Makes the next close of TCP socket `fd` abortive (`SO_LINGER` on with 0 s): the kernel
/// discards what is still queued and sends a reset instead of keeping the socket around until
/// a peer that does not read takes its bytes. For a connection dropped over
/// `Config::max_pending_bytes`; call it just before the socket is dropped.
pub fn reset_on_close(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a valid `linger`.
    #[allow(unsafe_code)]
    let ok = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        ) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_pair_shares_one_port() {
        for _ in 0..20 {
            let (udp, tcp) = bind_sip("127.0.0.1:0".parse().unwrap()).unwrap();
            assert_eq!(udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        }
        // A fixed port whose TCP side is taken is an error, not a silent move.
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(bind_sip(busy.local_addr().unwrap()).is_err());
    }
}
