//! `sendmmsg(2)` (Linux): many datagrams in one system call, each with its own destination and
//! its own source address (an `IP_PKTINFO` / `IPV6_PKTINFO` control message, as `quinn-udp`
//! sets on a single send).
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

/// Room for one datagram's control messages: its source address (`in6_pktinfo`, 20 bytes,
/// takes 40 with its header on 64-bit targets).
const CONTROL_LEN: usize = 64;

/// One datagram's control messages, aligned as the kernel's `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; CONTROL_LEN]);

/// One datagram to send.
pub struct Message<'a> {
    /// Our address to send from; `None` leaves it to the kernel (a socket bound to one address).
    pub src: Option<IpAddr>,
    pub dst: SocketAddr,
    pub data: &'a [u8],
}

/// The C structures of one call, kept from call to call so that a batch allocates nothing once
/// the vectors have grown to [`MAX_BATCH`].
#[derive(Default)]
pub struct Sendmmsg {
    names: Vec<SockAddr>,
    controls: Vec<(Control, usize)>,
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
    /// Sends the first [`MAX_BATCH`] of `datagrams`, in order, in one `sendmmsg` call on the
    /// non-blocking `socket`. Returns how many the kernel took: at least one, fewer than given
    /// when the send buffer filled up or one of them failed (the kernel then drops the error;
    /// calling again from the first one not taken reports it). An error means the first was not
    /// sent (`WouldBlock`: the send buffer is full). `EINTR` is retried.
    pub fn send<'a>(
        &mut self,
        socket: BorrowedFd<'_>,
        datagrams: impl IntoIterator<Item = Message<'a>>,
    ) -> io::Result<usize> {
        self.names.clear();
        self.controls.clear();
        self.iovecs.clear();
        self.headers.clear();
        for datagram in datagrams.into_iter().take(MAX_BATCH) {
            self.names.push(SockAddr::from(datagram.dst));
            self.controls.push(control(datagram.src));
            self.iovecs.push(libc::iovec {
                iov_base: datagram.data.as_ptr().cast_mut().cast(),
                iov_len: datagram.data.len(),
            });
        }
        if self.iovecs.is_empty() {
            return Ok(0);
        }
        // The three vectors are complete: nothing moves them while the kernel reads through
        // the pointers taken below.
        for ((name, (control, control_len)), iovec) in self
            .names
            .iter()
            .zip(self.controls.iter_mut())
            .zip(self.iovecs.iter_mut())
        {
            // SAFETY: all zeroes is a valid `msghdr` (null pointers, zero lengths). Some targets
            // give it private padding fields, so it cannot be written as a struct literal.
            let mut header: libc::msghdr = unsafe { mem::zeroed() };
            header.msg_name = name.as_ptr().cast_mut().cast();
            header.msg_namelen = name.len();
            header.msg_iov = iovec;
            header.msg_iovlen = 1;
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
            // address in `names`, control messages in `controls` (of the length given) and one
            // I/O vector in `iovecs`, none of which changes until after this call, and the
            // vector points at datagram bytes borrowed for `'a`, which outlives the call. The
            // kernel reads those and writes only the entries' `msg_len`.
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

/// The control messages for a datagram sent from `src` (none without one).
fn control(src: Option<IpAddr>) -> (Control, usize) {
    let mut buf = Control([0; CONTROL_LEN]);
    let len = match src {
        None => 0,
        Some(IpAddr::V4(ip)) => put(
            &mut buf,
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
    (buf, len)
}

/// Writes one control message (header, then `value`) at the start of `buf`; returns the bytes
/// it takes.
fn put<T: Copy>(buf: &mut Control, level: libc::c_int, kind: libc::c_int, value: T) -> usize {
    let value_len = mem::size_of::<T>() as libc::c_uint;
    // SAFETY: these are C macros turned into functions: arithmetic on their argument only.
    let (space, len, value_at) = unsafe {
        (
            libc::CMSG_SPACE(value_len) as usize,
            libc::CMSG_LEN(value_len) as usize,
            libc::CMSG_LEN(0) as usize,
        )
    };
    assert!(space <= CONTROL_LEN && value_at + value_len as usize <= space);
    // SAFETY: all zeroes is a valid `cmsghdr`; some targets give it private padding fields.
    let mut header: libc::cmsghdr = unsafe { mem::zeroed() };
    header.cmsg_len = len as _;
    header.cmsg_level = level;
    header.cmsg_type = kind;
    let base = buf.0.as_mut_ptr();
    // SAFETY: the header and the value both lie within `buf` (asserted above: `space` covers
    // them and fits); unaligned writes place no demand on `base`'s alignment.
    unsafe {
        base.cast::<libc::cmsghdr>().write_unaligned(header);
        base.add(value_at).cast::<T>().write_unaligned(value);
    }
    space
}
