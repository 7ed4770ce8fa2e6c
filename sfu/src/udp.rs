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
//!
//! Sends go out in batches: [`MediaSocket::send_all`] hands a router turn's datagrams to the
//! kernel with `sendmmsg` on Linux (`sendmmsg.rs`, each datagram with its own source address as
//! `quinn-udp` would set it), one system call for up to [`sendmmsg::MAX_BATCH`] of them, and
//! falls back to `quinn-udp`'s one send per datagram elsewhere, or for good if the kernel says
//! it has no `sendmmsg`.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
#[cfg(target_os = "linux")]
use std::os::fd::AsFd;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::warn;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sendmmsg;

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
    /// `None` where the kernel has no `sendmmsg` (then one send per datagram).
    #[cfg(target_os = "linux")]
    batch: Option<sendmmsg::Sendmmsg>,
}

/// One datagram to send: from which of our addresses (ignored when the socket is bound to
/// one), to whom.
pub struct Outgoing<'a> {
    pub from: IpAddr,
    pub to: SocketAddr,
    pub data: &'a [u8],
}

/// Something [`MediaSocket::send_all`] can send.
pub trait ToSend {
    fn outgoing(&self) -> Outgoing<'_>;
}

/// What a [`MediaSocket::send_all`] took: system calls, and those (batched) the kernel took
/// only part of.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendCalls {
    pub calls: u64,
    pub partial: u64,
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
            #[cfg(target_os = "linux")]
            batch: Some(sendmmsg::Sendmmsg::default()),
        })
    }

    /// One send per datagram from now on, as where the kernel has no `sendmmsg` (tests).
    #[cfg(test)]
    fn unbatched(mut self) -> Self {
        #[cfg(target_os = "linux")]
        {
            self.batch = None;
        }
        self
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
            src_ip: self.source(from),
        };
        self.socket.try_io(Interest::WRITABLE, || {
            self.state.try_send((&self.socket).into(), &transmit)
        })
    }

    /// The source address to set on a send: none when the socket is bound to one address.
    fn source(&self, from: IpAddr) -> Option<IpAddr> {
        self.local_addr.ip().is_unspecified().then_some(from)
    }

    /// Sends every datagram of `queue` in order without waiting, in as few system calls as the
    /// kernel allows, and tells `sent` how each went: as [`MediaSocket::send`] would have, a
    /// datagram that meets a full send buffer is dropped with `WouldBlock`, and each is tried
    /// once, whatever became of the one before.
    pub fn send_all<T: ToSend>(
        &mut self,
        queue: &[T],
        mut sent: impl FnMut(&T, io::Result<()>),
    ) -> SendCalls {
        let mut calls = SendCalls::default();
        #[allow(unused_mut)] // only batched on Linux
        let mut rest = queue;
        #[cfg(target_os = "linux")]
        while !rest.is_empty() {
            let Some(batch) = self.batch.as_mut() else {
                break;
            };
            let (socket, unspecified) = (&self.socket, self.local_addr.ip().is_unspecified());
            let result = socket.try_io(Interest::WRITABLE, || {
                batch.send(
                    socket.as_fd(),
                    rest.iter().map(|item| {
                        let datagram = item.outgoing();
                        sendmmsg::Message {
                            src: unspecified.then_some(datagram.from),
                            dst: datagram.to,
                            data: datagram.data,
                        }
                    }),
                )
            });
            calls.calls += 1;
            match result {
                Ok(taken) if taken > 0 => {
                    let tried = rest.len().min(sendmmsg::MAX_BATCH);
                    calls.partial += u64::from(taken < tried);
                    for item in &rest[..taken] {
                        sent(item, Ok(()));
                    }
                    rest = &rest[taken..];
                }
                // Taken none without an error: cannot happen, but the loop must go on.
                Ok(_) => {
                    sent(&rest[0], Err(io::ErrorKind::WouldBlock.into()));
                    rest = &rest[1..];
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sent(&rest[0], Err(e));
                    rest = &rest[1..];
                }
                Err(e) if unsupported(&e) => {
                    warn!(error = %e, "no sendmmsg: one system call per datagram from now on");
                    self.batch = None;
                }
                // The first datagram failed. Alone through `quinn-udp`, which has fallbacks of
                // its own: if it goes that way, what failed was the batch, not the datagram.
                Err(e) => {
                    let datagram = rest[0].outgoing();
                    calls.calls += 1;
                    let alone = self.send(datagram.from, datagram.to, datagram.data);
                    if alone.is_ok() {
                        warn!(error = %e, "sendmmsg failed where a single send did not: one system call per datagram from now on");
                        self.batch = None;
                    }
                    sent(&rest[0], alone);
                    rest = &rest[1..];
                }
            }
        }
        for item in rest {
            let datagram = item.outgoing();
            calls.calls += 1;
            sent(item, self.send(datagram.from, datagram.to, datagram.data));
        }
        calls
    }
}

/// Errors that say the kernel (or a sandbox in front of it) has no such system call.
#[cfg(target_os = "linux")]
fn unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSYS | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT)
    )
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

    struct Sent {
        from: IpAddr,
        to: SocketAddr,
        data: Vec<u8>,
    }

    impl ToSend for Sent {
        fn outgoing(&self) -> Outgoing<'_> {
            Outgoing {
                from: self.from,
                to: self.to,
                data: &self.data,
            }
        }
    }

    /// Sends 600 datagrams of different sizes (1 to 1,400 bytes) in one `send_all`, to four
    /// receivers on two loopback addresses, from three of the socket's addresses in turn, and
    /// checks that each receiver got exactly its datagrams, intact, in order, each from the
    /// address it was sent from.
    async fn batch_arrives_intact_once_from_its_sources(mut media: MediaSocket) -> SendCalls {
        let port = media.local_addr.port();
        let receivers: Vec<std::net::UdpSocket> =
            ["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"]
                .iter()
                .map(|ip| {
                    let socket =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
                            .unwrap();
                    // Room for everything at once: nothing reads until the batch is sent.
                    socket.set_recv_buffer_size(4 << 20).unwrap();
                    socket
                        .bind(&SocketAddr::new(ip.parse().unwrap(), 0).into())
                        .unwrap();
                    let socket: std::net::UdpSocket = socket.into();
                    socket
                        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                        .unwrap();
                    socket
                })
                .collect();
        let sources: Vec<IpAddr> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        let queue: Vec<Sent> = (0..600usize)
            .map(|i| {
                let len = 1 + (i * 7919) % 1400;
                let mut data: Vec<u8> = (0..len).map(|b| (b * 31 + i) as u8).collect();
                data[0] = (i % 251) as u8;
                Sent {
                    from: sources[i % sources.len()],
                    to: receivers[(i / 5) % receivers.len()].local_addr().unwrap(),
                    data,
                }
            })
            .collect();
        // Until the runtime has seen the socket writable, `try_io` says `WouldBlock`.
        media.writable().await.unwrap();
        let mut reported = vec![0; queue.len()];
        let calls = media.send_all(&queue, |sent, result| {
            result.unwrap();
            let index = queue.iter().position(|q| std::ptr::eq(q, sent)).unwrap();
            reported[index] += 1;
        });
        assert!(reported.iter().all(|&n| n == 1), "each reported once");
        for receiver in &receivers {
            let to = receiver.local_addr().unwrap();
            let mut buf = [0u8; 2048];
            for want in queue.iter().filter(|q| q.to == to) {
                let (n, from) = receiver.recv_from(&mut buf).unwrap();
                assert_eq!(from, SocketAddr::new(want.from, port));
                assert_eq!(&buf[..n], &want.data[..]);
            }
            // Loopback delivers during the send: a duplicate would be waiting already.
            receiver.set_nonblocking(true).unwrap();
            let extra = receiver.recv_from(&mut buf);
            assert_eq!(
                extra.map_err(|e| e.kind()).err(),
                Some(io::ErrorKind::WouldBlock),
                "nothing more for {to}"
            );
        }
        calls
    }

    fn wildcard_media_socket() -> MediaSocket {
        MediaSocket::new(std::net::UdpSocket::bind("0.0.0.0:0").unwrap()).unwrap()
    }

    #[tokio::test]
    async fn batched_sends_arrive_intact_once_from_their_sources() {
        let calls = batch_arrives_intact_once_from_its_sources(wildcard_media_socket()).await;
        if cfg!(target_os = "linux") {
            // 600 datagrams in batches of `MAX_BATCH`; more calls only if the kernel split one.
            assert!(calls.calls >= 3 && calls.calls < 600, "{calls:?}");
        }
    }

    #[tokio::test]
    async fn unbatched_sends_arrive_the_same() {
        let calls =
            batch_arrives_intact_once_from_its_sources(wildcard_media_socket().unbatched()).await;
        assert_eq!(
            calls,
            SendCalls {
                calls: 600,
                partial: 0
            }
        );
    }

    /// Datagrams leave with don't-fragment set (`quinn-udp`: `IP_MTU_DISCOVER` =
    /// `IP_PMTUDISC_PROBE`, and `IPV6_DONTFRAG`), for batched sends as for single ones: the
    /// option is the socket's.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn media_sockets_do_not_fragment() {
        assert!(!wildcard_media_socket().state.may_fragment());
        if let Ok(v6) = std::net::UdpSocket::bind("[::]:0") {
            assert!(!MediaSocket::new(v6).unwrap().state.may_fragment());
        }
    }
}
