//! `sendmmsg(2)` (Linux): many datagrams in one system call, each with its own destination and
//! its own source address (an `IP_PKTINFO` / `IPV6_PKTINFO` control message, as `quinn-udp`
//! sets on a single send), and several datagrams of one size to one destination as one message
//! with UDP GSO (a `UDP_SEGMENT` control message: the kernel cuts it into datagrams of that size
//! after one pass through its UDP and IP layers).
//!
//! This module holds the crate's only unsafe code: filling the kernel's C structures and the
//! call itself. Everything it points the kernel at is either borrowed for the whole call (the
//! datagrams' bytes) or owned here and left untouched until the call returns (addresses,
//! control messages, I/O vectors). The kernel only reads them (and writes each header's
//! `msg_len`). Socket options (don't-fragment, buffers) are the socket's, set by `quinn-udp`,
//! and apply to these sends as to any other.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::SockAddr;

/// Datagrams per system call at most. The kernel takes up to `UIO_MAXIOV` (1024); a class's
/// copies of one packet fit in one call up to this many students.
pub const MAX_BATCH: usize = 256;

/// Room for one message's control messages: its source address (`in6_pktinfo`, 20 bytes, takes
/// 40 with its header on 64-bit targets) and its GSO segment size (a `u16`, 24 with its header).
const CONTROL_LEN: usize = 64;

/// One message's control messages, aligned as the kernel's `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; CONTROL_LEN]);

/// One message to send: one datagram, or several with GSO.
pub struct Message<'a> {
    /// Our address to send from; `None` leaves it to the kernel (a socket bound to one address).
    pub src: Option<IpAddr>,
    pub dst: SocketAddr,
    /// One datagram; or several, each its own datagram, sent with UDP GSO: then every one but
    /// the last must be as long as the first, the last no longer, and the caller keeps within
    /// the kernel's limits (segment count, 64 KiB in all).
    pub datagrams: &'a [&'a [u8]],
}

/// The C structures of one call, kept from call to call so that a batch allocates nothing once
/// the vectors have grown to [`MAX_BATCH`].
#[derive(Default)]
pub struct Sendmmsg {
    names: Vec<SockAddr>,
    controls: Vec<(Control, usize)>,
    /// Each message's number of I/O vectors (datagrams).
    counts: Vec<usize>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: `iovecs` and `headers` hold raw pointers (which make them `!Send` and `!Sync`) only
// during `send`, which takes `&mut self`: they are cleared before it returns, so neither moving
// the value to another thread nor sharing `&Sendmmsg` (through which nothing can be read or
// sent) exposes a live pointer.
unsafe impl Send for Sendmmsg {}
unsafe impl Sync for Sendmmsg {}

impl Sendmmsg {
    /// Sends the first [`MAX_BATCH`] of `messages`, in order, in one `sendmmsg` call on the
    /// non-blocking `socket`. Returns how many messages the kernel took: at least one, fewer
    /// than given when the send buffer filled up or one of them failed (the kernel then drops
    /// the error; calling again from the first one not taken reports it). An error means the
    /// first was not sent (`WouldBlock`: the send buffer is full). `EINTR` is retried.
    pub fn send<'a>(
        &mut self,
        socket: BorrowedFd<'_>,
        messages: impl IntoIterator<Item = Message<'a>>,
    ) -> io::Result<usize> {
        self.names.clear();
        self.controls.clear();
        self.counts.clear();
        self.iovecs.clear();
        self.headers.clear();
        for message in messages.into_iter().take(MAX_BATCH) {
            let segment = match message.datagrams {
                [] | [_] => None,
                [first, ..] => Some(first.len() as u16),
            };
            self.names.push(SockAddr::from(message.dst));
            self.controls.push(control(message.src, segment));
            self.counts.push(message.datagrams.len());
            for datagram in message.datagrams {
                self.iovecs.push(libc::iovec {
                    iov_base: datagram.as_ptr().cast_mut().cast(),
                    iov_len: datagram.len(),
                });
            }
        }
        if self.iovecs.is_empty() {
            return Ok(0);
        }
        // The vectors are complete: nothing moves them while the kernel reads through the
        // pointers taken below.
        let mut iovecs = &mut self.iovecs[..];
        for ((name, (control, control_len)), &count) in self
            .names
            .iter()
            .zip(self.controls.iter_mut())
            .zip(&self.counts)
        {
            let (mine, rest) = iovecs.split_at_mut(count);
            iovecs = rest;
            // SAFETY: all zeroes is a valid `msghdr` (null pointers, zero lengths). Some targets
            // give it private padding fields, so it cannot be written as a struct literal.
            let mut header: libc::msghdr = unsafe { mem::zeroed() };
            header.msg_name = name.as_ptr().cast_mut().cast();
            header.msg_namelen = name.len();
            header.msg_iov = mine.as_mut_ptr();
            header.msg_iovlen = count as _;
            if *control_len > 0 {
                header.msg_control = control.0.as_mut_ptr().cast();
                header.msg_controllen = *control_len as _;
            }
            self.headers.push(libc::mmsghdr {
                msg_hdr: header,
                msg_len: 0,
            });
        }
        let result = loop {
            // SAFETY: `headers` holds `headers.len()` initialised entries; each points at an
            // address in `names`, control messages in `controls` (of the length given) and its
            // own run of I/O vectors in `iovecs` (of the count given), none of which changes
            // until after this call, and the vectors point at datagram bytes borrowed for `'a`,
            // which outlives the call. The kernel reads those and writes only the entries'
            // `msg_len`.
            let sent = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.headers.as_mut_ptr(),
                    self.headers.len() as _,
                    0,
                )
            };
            if sent >= 0 {
                break Ok(sent as usize);
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                break Err(error);
            }
        };
        // No pointer outlives the call (see the `Send` impl); the datagrams' borrow ends here.
        self.iovecs.clear();
        self.headers.clear();
        result
    }
}

/// The control messages for a message sent from `src` (none without one), cut into datagrams
/// of `segment` bytes (GSO) if given.
fn control(src: Option<IpAddr>, segment: Option<u16>) -> (Control, usize) {
    let mut buf = Control([0; CONTROL_LEN]);
    let mut len = match src {
        None => 0,
        Some(IpAddr::V4(ip)) => put(
            &mut buf,
            0,
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(ip.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            },
        ),
        Some(IpAddr::V6(ip)) => put(
            &mut buf,
            0,
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: 0,
            },
        ),
    };
    if let Some(segment) = segment {
        len += put(&mut buf, len, libc::SOL_UDP, libc::UDP_SEGMENT, segment);
    }
    (buf, len)
}

/// Writes one control message (header, then `value`) at `at` in `buf` (the end of the one
/// before, which the kernel's alignment rounds up to); returns the bytes it takes.
fn put<T: Copy>(
    buf: &mut Control,
    at: usize,
    level: libc::c_int,
    kind: libc::c_int,
    value: T,
) -> usize {
    let value_len = mem::size_of::<T>() as libc::c_uint;
    // SAFETY: these are C macros turned into functions: arithmetic on their argument only.
    let (space, len, value_at) = unsafe {
        (
            libc::CMSG_SPACE(value_len) as usize,
            libc::CMSG_LEN(value_len) as usize,
            libc::CMSG_LEN(0) as usize,
        )
    };
    assert!(at + space <= CONTROL_LEN && value_at + value_len as usize <= space);
    // SAFETY: all zeroes is a valid `cmsghdr`; some targets give it private padding fields.
    let mut header: libc::cmsghdr = unsafe { mem::zeroed() };
    header.cmsg_len = len as _;
    header.cmsg_level = level;
    header.cmsg_type = kind;
    let base = buf.0[at..].as_mut_ptr();
    // SAFETY: the header and the value both lie within `buf` (asserted above: `space` from
    // `at` covers them and fits); unaligned writes place no demand on `base`'s alignment.
    unsafe {
        base.cast::<libc::cmsghdr>().write_unaligned(header);
        base.add(value_at).cast::<T>().write_unaligned(value);
    }
    space
}
