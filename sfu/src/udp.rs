//! The media socket: one UDP socket for every peer, read in batches, with each datagram's
//! destination address.
//!
//! Bound to the unspecified address, a socket receives on every interface, but a reply sent
//! without a source address leaves from whatever address the kernel's routing picks, and the
//! SFU cannot tell which of its addresses (host candidates) a datagram was sent to. ICE needs
//! both (see [`crate::host`]). `quinn-udp` asks the kernel for the destination of each
//! datagram (`IP_PKTINFO`) and sets the source of each send, reads up to its batch size per
//! system call (`recvmmsg`, and GRO where the kernel coalesces a flow's datagrams), and sets
//! don't-fragment; it falls back to plain calls where a kernel lacks any of it.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::warn;

/// Room for one slot of a batch: GRO may coalesce several datagrams of one flow into it.
const SLOT_BYTES: usize = 64 * 1024;

/// One datagram: who sent it, to which of our addresses.
pub struct Datagram<'a> {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: &'a [u8],
}

pub struct MediaSocket {
    socket: UdpSocket,
    state: UdpSocketState,
    local_addr: SocketAddr,
    buffers: Vec<u8>,
    metas: Vec<RecvMeta>,
}

impl MediaSocket {
    /// Wraps a bound socket; must run inside a tokio runtime.
    pub fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        let local_addr = socket.local_addr()?;
        Ok(Self {
            socket: UdpSocket::from_std(socket)?,
            buffers: vec![0; quinn_udp::BATCH_SIZE * SLOT_BYTES],
            metas: vec![RecvMeta::default(); quinn_udp::BATCH_SIZE],
            state,
            local_addr,
        })
    }

    /// Asks the kernel for `bytes` of buffer each way (capped at `net.core.[rw]mem_max`);
    /// less only means less slack, so failures are logged, not returned.
    pub fn enlarge_buffers(&self, bytes: usize) {
        let sock = || (&self.socket).into();
        for (what, result) in [
            ("receive", self.state.set_recv_buffer_size(sock(), bytes)),
            ("send", self.state.set_send_buffer_size(sock(), bytes)),
        ] {
            if let Err(e) = result {
                warn!(error = %e, "cannot enlarge the UDP {what} buffer");
            }
        }
    }

    /// (receive, send) buffer sizes the kernel granted.
    pub fn buffer_sizes(&self) -> (usize, usize) {
        let sock = (&self.socket).into();
        let recv = self.state.recv_buffer_size(sock).unwrap_or_default();
        let sock = (&self.socket).into();
        (recv, self.state.send_buffer_size(sock).unwrap_or_default())
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Waits until a send would not block (after [`MediaSocket::send`] said `WouldBlock`).
    pub async fn writable(&self) -> io::Result<()> {
        self.socket.writable().await
    }

    /// Reads one batch without waiting and hands each datagram to `handle`. Returns how many
    /// datagrams there were (0 when nothing was waiting).
    pub fn recv_batch(&mut self, mut handle: impl FnMut(Datagram<'_>)) -> io::Result<usize> {
        let received = {
            let mut slices: Vec<IoSliceMut<'_>> = self
                .buffers
                .chunks_mut(SLOT_BYTES)
                .map(IoSliceMut::new)
                .collect();
            let (socket, state, metas) = (&self.socket, &self.state, &mut self.metas);
            match socket.try_io(Interest::READABLE, || {
                state.recv(socket.into(), &mut slices, metas)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
        };
        let mut count = 0;
        for (slot, meta) in self.metas[..received].iter().enumerate() {
            // Without IP_PKTINFO (not on this platform) the bound address is all we know.
            let to = SocketAddr::new(
                meta.dst_ip.unwrap_or(self.local_addr.ip()),
                self.local_addr.port(),
            );
            let data = &self.buffers[slot * SLOT_BYTES..slot * SLOT_BYTES + meta.len];
            for segment in data.chunks(meta.stride.max(1)) {
                count += 1;
                handle(Datagram {
                    from: meta.addr,
                    to,
                    data: segment,
                });
            }
        }
        Ok(count)
    }

    /// Sends one datagram from `from` (ignored when the socket is bound to one address)
    /// without waiting: `WouldBlock` when the send buffer is full.
    pub fn send(&self, from: IpAddr, to: SocketAddr, data: &[u8]) -> io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: data,
            segment_size: None,
            src_ip: self.local_addr.ip().is_unspecified().then_some(from),
        };
        self.socket.try_io(Interest::WRITABLE, || {
            self.state.try_send((&self.socket).into(), &transmit)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket on the unspecified address tells which loopback address each datagram was
    /// sent to, and replies from that address.
    #[tokio::test]
    async fn wildcard_socket_learns_and_uses_each_destination() {
        let std_socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = std_socket.local_addr().unwrap().port();
        let mut media = MediaSocket::new(std_socket).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client_addr = client.local_addr().unwrap();
        let targets: Vec<SocketAddr> = ["127.0.0.1", "127.0.0.3"]
            .iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
            .collect();
        for target in &targets {
            client.send_to(b"hello", target).unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..100 {
            if seen.len() == targets.len() {
                break;
            }
            tokio::time::timeout(std::time::Duration::from_secs(5), media.readable())
                .await
                .unwrap()
                .unwrap();
            media
                .recv_batch(|d| seen.push((d.from, d.to, d.data.to_vec())))
                .unwrap();
        }
        let want: Vec<_> = targets
            .iter()
            .map(|t| (client_addr, *t, b"hello".to_vec()))
            .collect();
        assert_eq!(seen, want);
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        for target in &targets {
            media.send(target.ip(), client_addr, b"reply").unwrap();
            let mut buf = [0u8; 16];
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&b"reply"[..], *target));
        }
    }
}
