//! Batched UDP IO for the media sockets: `recvmmsg(2)` takes up to [`BATCH`] datagrams in one
//! system call, `sendmmsg(2)` sends a run of datagrams from one socket in one. At a few hundred
//! calls every media socket has several datagrams waiting per wake-up, and one system call per
//! datagram each way was 40 % of the gateway's CPU (issue #14's profile).
//!
//! Contracts:
//! - Both work on a non-blocking socket's raw fd and never block (`MSG_DONTWAIT`).
//! - [`RecvBatch::recv`] returns how many datagrams it took (at least one), or the error of the
//!   first (`WouldBlock` when none is waiting). A datagram longer than [`SLOT`] is cut by the
//!   kernel and reported as truncated ([`RecvBatch::get`] gives `None` for it): media never is.
//! - [`send_batch`] sends every datagram it is given, in order; one the kernel refuses (a full
//!   buffer, an ICMP error of an earlier send) is lost, as a single `sendto` would lose it, and
//!   reported to the callback; the rest still go.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use sylkgw_core::{SocketId, Transmit};

/// A datagram to send: its destination and bytes.
pub trait Outgoing {
    /// Where it goes.
    fn to(&self) -> SocketAddr;
    /// What it carries.
    fn bytes(&self) -> &[u8];
}

impl Outgoing for (SocketAddr, &[u8]) {
    fn to(&self) -> SocketAddr {
        self.0
    }
    fn bytes(&self) -> &[u8] {
        self.1
    }
}

impl Outgoing for Transmit {
    fn to(&self) -> SocketAddr {
        self.to
    }
    fn bytes(&self) -> &[u8] {
        &self.payload
    }
}

/// Datagrams one [`RecvBatch::recv`] or one `sendmmsg` takes at most.
pub const BATCH: usize = 32;
/// Bytes of one receive slot: more than a media datagram (RTP, SRTP, DTLS records of at most
/// an MTU, STUN) ever is.
pub const SLOT: usize = 2048;

/// The receive buffers of one batch (`BATCH` × `SLOT` bytes, touched only as far as used) and
/// what the last [`RecvBatch::recv`] put into them.
pub struct RecvBatch {
    data: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage]>,
    /// Per slot, the `iovec` naming its part of `data`. Built once: it points into `data`'s heap
    /// block, which does not move when the `RecvBatch` does (issue #14: building the 32
    /// headers of a batch on every call was most of the userspace cost of a `recvmmsg` that
    /// takes one datagram, the usual case on a SIP leg's RTP socket).
    iov: Box<[libc::iovec]>,
    /// Per slot, the `recvmmsg` header naming its `iovec` and its part of `addrs` (built once, as
    /// `iov`); [`RecvBatch::recv`] only puts back the address length the kernel overwrote.
    msgs: Box<[libc::mmsghdr]>,
    /// Per slot: the datagram's length, and whether the kernel cut it.
    lens: [(usize, bool); BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("count", &self.count).finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Empty buffers.
    pub fn new() -> Self {
        // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid (AF_UNSPEC) value.
        #[allow(unsafe_code)]
        let zero: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: iovec and mmsghdr are plain old data; zeroes are valid before we fill them.
        #[allow(unsafe_code)]
        let (iov, msgs) = unsafe { (std::mem::zeroed::<libc::iovec>(), std::mem::zeroed::<libc::mmsghdr>()) };
        let mut batch = Self {
            data: vec![0; BATCH * SLOT].into_boxed_slice(),
            addrs: vec![zero; BATCH].into_boxed_slice(),
            iov: vec![iov; BATCH].into_boxed_slice(),
            msgs: vec![msgs; BATCH].into_boxed_slice(),
            lens: [(0, false); BATCH],
            count: 0,
        };
        let Self { data, addrs, iov, msgs, .. } = &mut batch;
        for (((slot, addr), iov), m) in
            data.chunks_exact_mut(SLOT).zip(addrs.iter_mut()).zip(iov.iter_mut()).zip(msgs.iter_mut())
        {
            *iov = libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: SLOT };
            let h = &mut m.msg_hdr;
            h.msg_name = std::ptr::from_mut(addr).cast();
            h.msg_iov = iov;
            h.msg_iovlen = 1;
        }
        batch
    }

    /// Receives up to [`BATCH`] datagrams waiting on `fd`; returns how many (at least one).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        for m in self.msgs.iter_mut() {
            // The kernel writes the source's length here (and the flags, which it sets whole).
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: every header points at a live slot of `SLOT` bytes of `data` and a live
        // sockaddr_storage of `addrs` of the size it states (set up in `new`; the boxes are never
        // replaced), through an `iovec` of `iov`; the kernel writes at most that much.
        #[allow(unsafe_code)]
        let n = unsafe {
            libc::recvmmsg(fd, self.msgs.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0).min(BATCH);
        for (len, m) in self.lens.iter_mut().zip(self.msgs.iter()).take(n) {
            let cut = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            *len = ((m.msg_len as usize).min(SLOT), cut);
        }
        self.count = n;
        Ok(n)
    }

    /// Datagrams the last [`RecvBatch::recv`] took.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the last [`RecvBatch::recv`] took none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagram `i` of the last receive: its source and bytes; `None` past the end, for a
    /// truncated one, or for a source of an unknown family.
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.count {
            return None;
        }
        let (len, cut) = self.lens[i];
        if cut {
            return None;
        }
        let from = from_storage(&self.addrs[i])?;
        Some((from, &self.data[i * SLOT..i * SLOT + len]))
    }
}

/// Sends the core's `transmits` in order, each run from one socket with [`send_batch`] on the
/// fd `fd_of` gives for it; a run for a socket it does not know is dropped. Refusals are logged
/// (UDP: a datagram the socket cannot take now is lost, as on the wire).
pub fn send_transmits(transmits: &[Transmit], mut fd_of: impl FnMut(SocketId) -> Option<RawFd>) {
    let mut rest = transmits;
    while let Some(first) = rest.first() {
        let run = rest.iter().take_while(|t| t.socket == first.socket).count();
        let (now, later) = rest.split_at(run);
        rest = later;
        let Some(fd) = fd_of(first.socket) else {
            log::debug!("{}: no such socket; {run} datagram(s) dropped", first.socket);
            continue;
        };
        send_batch(fd, now, |i, e| log::debug!("{}: send to {}: {e}", first.socket, now[i].to));
    }
}

/// Sends `datagrams` from `fd` in order, [`BATCH`] per system call. A datagram the kernel
/// refuses is reported to `refused` with its index and skipped.
pub fn send_batch<D: Outgoing>(fd: RawFd, datagrams: &[D], mut refused: impl FnMut(usize, io::Error)) {
    let mut done = 0;
    while done < datagrams.len() {
        let chunk = &datagrams[done..(done + BATCH).min(datagrams.len())];
        // Only the entries of this chunk are written (issue #14: zeroing the three whole arrays,
        // 6.5 KiB, was most of the userspace cost of a `sendmmsg` of a few datagrams).
        let mut addrs = [const { MaybeUninit::<libc::sockaddr_in6>::uninit() }; BATCH];
        let mut iov = [const { MaybeUninit::<libc::iovec>::uninit() }; BATCH];
        let mut msgs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; BATCH];
        for (i, d) in chunk.iter().enumerate() {
            let (to, bytes) = (d.to(), d.bytes());
            let addr = addrs[i].as_mut_ptr();
            let namelen = to_sockaddr(to, addr);
            let iov: *mut libc::iovec =
                iov[i].write(libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() });
            // SAFETY: mmsghdr is plain old data; zeroes (no control data, no flags) are valid.
            #[allow(unsafe_code)]
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = addr.cast();
            m.msg_hdr.msg_namelen = namelen;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            msgs[i].write(m);
        }
        // SAFETY: the first `chunk.len()` headers are written, each pointing at live bytes of the
        // length it states (the kernel only reads them) and at a written sockaddr of the length
        // it states; the kernel reads no header past `chunk.len()`.
        #[allow(unsafe_code)]
        let n =
            unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr().cast(), chunk.len() as libc::c_uint, libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The first of the chunk failed: it is lost, the others are tried again.
            refused(done, e);
            done += 1;
        } else {
            done += usize::try_from(n).unwrap_or(0).max(1).min(chunk.len());
        }
    }
}

/// Writes `addr` at `storage` as a `sockaddr_in` or `sockaddr_in6` (`storage` need not be
/// initialized: only that many bytes are written); returns its length.
fn to_sockaddr(addr: SocketAddr, storage: *mut libc::sockaddr_in6) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: `storage` is valid for writes of a sockaddr_in6, which is larger than a
            // sockaddr_in and aligned for it.
            #[allow(unsafe_code)]
            unsafe {
                storage.cast::<libc::sockaddr_in>().write(sin);
            }
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: `storage` is valid for writes of a sockaddr_in6.
            #[allow(unsafe_code)]
            unsafe {
                storage.write(sin6);
            }
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// The address the kernel wrote into `storage`; `None` for a family other than IPv4 and IPv6.
pub fn from_storage(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            #[allow(unsafe_code)]
            let sin = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            #[allow(unsafe_code)]
            let sin6 = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn pair(bind: &str) -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind(bind).unwrap();
        let b = UdpSocket::bind(bind).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    #[test]
    fn batches_both_ways_in_order_with_sources() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(_) = UdpSocket::bind(bind) else { continue }; // no IPv6 in this namespace
            let (a, b) = pair(bind);
            let to = b.local_addr().unwrap();
            let payloads: Vec<Vec<u8>> = (0..BATCH + 5).map(|i| vec![i as u8; 10 + i]).collect();
            let datagrams: Vec<(SocketAddr, &[u8])> = payloads.iter().map(|p| (to, p.as_slice())).collect();
            let mut errors = 0;
            send_batch(a.as_raw_fd(), &datagrams, |_, _| errors += 1);
            assert_eq!(errors, 0);
            let mut batch = RecvBatch::new();
            let mut got = Vec::new();
            while got.len() < payloads.len() {
                let n = batch.recv(b.as_raw_fd()).unwrap();
                assert!((1..=BATCH).contains(&n));
                for i in 0..n {
                    let (from, bytes) = batch.get(i).unwrap();
                    assert_eq!(from, a.local_addr().unwrap());
                    got.push(bytes.to_vec());
                }
                assert!(batch.get(n).is_none());
            }
            assert_eq!(got, payloads);
            let e = batch.recv(b.as_raw_fd()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
            assert!(batch.is_empty());
        }
    }

    #[test]
    fn a_refused_datagram_is_reported_and_the_rest_still_go() {
        let (a, b) = pair("127.0.0.1:0");
        let to = b.local_addr().unwrap();
        let v6: SocketAddr = "[::1]:9".parse().unwrap(); // wrong family for an IPv4 socket
        let datagrams: Vec<(SocketAddr, &[u8])> = vec![(v6, b"x"), (to, b"one"), (v6, b"y"), (to, b"two")];
        let mut refused = Vec::new();
        send_batch(a.as_raw_fd(), &datagrams, |i, _| refused.push(i));
        assert_eq!(refused, [0, 2]);
        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        while got.len() < 2 {
            if let Ok(n) = batch.recv(b.as_raw_fd()) {
                got.extend((0..n).map(|i| batch.get(i).unwrap().1.to_vec()));
            }
        }
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn an_oversized_datagram_is_dropped_not_cut() {
        let (a, b) = pair("127.0.0.1:0");
        a.send_to(&vec![7; SLOT + 1], b.local_addr().unwrap()).unwrap();
        a.send_to(b"after", b.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            if let Ok(n) = batch.recv(b.as_raw_fd()) {
                seen.extend((0..n).map(|i| batch.get(i).map(|(_, d)| d.to_vec())));
            }
        }
        assert_eq!(seen, [None, Some(b"after".to_vec())]);
    }
}
