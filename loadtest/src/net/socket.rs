//! One UDP socket shared by many peers, each with its own local address.
//!
//! The SFU tells peers apart by their address (after the first STUN request), so two peers
//! must never share an `ip:port`. Instead of one socket per peer, every peer gets its own
//! loopback alias (127.100.x.y — all of 127/8 is local on Linux) on one socket bound to the
//! wildcard address: `IP_PKTINFO` tells us which alias a datagram was sent to and lets us pick
//! the source alias for each send. The SFU's own media socket ([`aula_sfu::udp::MediaSocket`],
//! on `quinn-udp`) does the cmsg work and reads in `recvmmsg` batches, which is what lets
//! hundreds of subscribers run in one task.
//!
//! Datagrams from anywhere but loopback are dropped: the wildcard bind must not make the load
//! generator a thing the network can talk to.
//!
//! A server in a network namespace (Janus, which offers no loopback candidates) cannot reach
//! our loopback aliases. For it, [`Addressing::Netns`] binds the socket to the host side of
//! the namespace's veth pair instead: every peer then has that one address and the same port,
//! which still keeps flows apart because each of the server's peers (Janus handles) uses a
//! port of its own; and datagrams are accepted from the server's address besides loopback.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use aula_sfu::udp::MediaSocket;
/// Kernel buffers: a burst of keyframes to hundreds of subscribers must not overflow them.
const SOCKET_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// A datagram as received: who sent it, to which of our addresses, when.
pub struct Datagram<'a> {
    pub from: SocketAddr,
    pub to: IpAddr,
    pub at: Instant,
    pub data: &'a [u8],
}

/// Which local addresses the peers use, and whom datagrams are accepted from.
#[derive(Debug, Clone, Copy)]
pub enum Addressing {
    /// Wildcard bind, one loopback alias per peer, loopback sources only.
    Loopback,
    /// Bound to `local` (our side of a veth pair); sources: loopback and `server`.
    Netns { local: IpAddr, server: IpAddr },
}

pub struct MuxSocket {
    socket: MediaSocket,
    addressing: Addressing,
    port: u16,
    dropped_foreign: u64,
}

impl MuxSocket {
    /// Binds a socket on the wildcard address (or the netns address). Must run inside a tokio
    /// runtime.
    pub fn bind(addressing: Addressing) -> io::Result<Self> {
        let ip = match addressing {
            Addressing::Loopback => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Addressing::Netns { local, .. } => local,
        };
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
        let port = std_socket.local_addr()?.port();
        // Best effort: larger buffers only make drops less likely.
        let forced = force_buffer(&std_socket, libc::SO_RCVBUFFORCE)
            && force_buffer(&std_socket, libc::SO_SNDBUFFORCE);
        let socket = MediaSocket::new(std_socket)?;
        if !forced {
            socket.enlarge_buffers(SOCKET_BUFFER_BYTES);
        }
        Ok(Self {
            socket,
            addressing,
            port,
            dropped_foreign: 0,
        })
    }

    /// The local address of the `n`-th peer on this socket: its own alias, this socket's port.
    /// 250 hosts per /24 keeps clear of .0 and .255, which some tools treat specially.
    pub fn peer_addr(&self, n: u32) -> SocketAddr {
        if let Addressing::Netns { local, .. } = self.addressing {
            return SocketAddr::new(local, self.port);
        }
        let ip = Ipv4Addr::new(
            127,
            100,
            u8::try_from(n / 250).unwrap_or(u8::MAX),
            u8::try_from(n % 250 + 1).unwrap_or(1),
        );
        SocketAddr::new(IpAddr::V4(ip), self.port)
    }

    /// Datagrams dropped because they came from somewhere other than the target.
    pub fn dropped_foreign(&self) -> u64 {
        self.dropped_foreign
    }

    /// Waits until the socket has something to read.
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Reads one batch without waiting and hands each datagram to `handle`. Returns how many
    /// datagrams there were (0 when nothing was waiting), foreign ones included.
    pub fn recv_batch(&mut self, mut handle: impl FnMut(Datagram<'_>)) -> io::Result<usize> {
        let at = Instant::now();
        let (addressing, dropped_foreign) = (self.addressing, &mut self.dropped_foreign);
        self.socket.recv_batch(|datagram| {
            let from = datagram.from;
            let allowed = from.ip().is_loopback()
                || matches!(addressing, Addressing::Netns { server, .. } if server == from.ip());
            if !allowed {
                *dropped_foreign += 1;
                return;
            }
            handle(Datagram {
                from,
                to: datagram.to.ip(),
                at,
                data: datagram.data,
            });
        })
    }

    /// Sends one datagram from `from` (a peer's address on this socket). Waits for buffer
    /// space a bounded number of times, then drops it: UDP may lose packets, and the loss
    /// shows in the report.
    pub async fn send(&self, from: IpAddr, to: SocketAddr, data: &[u8]) -> io::Result<()> {
        for _ in 0..3 {
            match self.socket.send(from, to, data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.socket.writable().await?,
                result => return result,
            }
        }
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// `SO_RCVBUF`/`SO_SNDBUF` are capped by `net.core.[rw]mem_max` (208 KiB by default), which
/// a burst of keyframes to hundreds of subscribers overflows while the task is descheduled;
/// the `*FORCE` variants (root only) are not. Returns whether it worked.
fn force_buffer(socket: &std::net::UdpSocket, option: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(SOCKET_BUFFER_BYTES).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is open for the duration of the call and setsockopt reads exactly
    // `size_of::<c_int>()` bytes from `value`.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    result == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn aliases_round_trip_through_one_socket() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let server_addr = server.local_addr().unwrap();
        let mut mux = MuxSocket::bind(Addressing::Loopback).unwrap();
        let (a, b) = (mux.peer_addr(0), mux.peer_addr(251));
        assert_ne!(a.ip(), b.ip());
        assert_eq!(b.ip(), IpAddr::V4(Ipv4Addr::new(127, 100, 1, 2)));
        mux.send(a.ip(), server_addr, b"from a").await.unwrap();
        mux.send(b.ip(), server_addr, b"from b").await.unwrap();
        let mut buf = [0u8; 16];
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            seen.push((from, buf[..n].to_vec()));
            server.send_to(b"reply", from).unwrap();
        }
        assert!(seen.contains(&(a, b"from a".to_vec())));
        assert!(seen.contains(&(b, b"from b".to_vec())));
        let mut replies = Vec::new();
        while replies.len() < 2 {
            mux.readable().await.unwrap();
            mux.recv_batch(|d| replies.push((d.to, d.data.to_vec())))
                .unwrap();
        }
        replies.sort();
        let mut want = vec![(a.ip(), b"reply".to_vec()), (b.ip(), b"reply".to_vec())];
        want.sort();
        assert_eq!(replies, want);
    }
}
