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
//! `quinn-udp` would set it), one system call for up to 256 messages. A message is one
//! datagram, or with UDP GSO a run of datagrams of one size to one destination (a class turn
//! holds each student's copies of every packet that arrived in the batch read: a frame's
//! packets are mostly of one size), which the kernel takes through its UDP and IP layers once
//! and cuts up after. It falls back to `quinn-udp`'s one send per datagram elsewhere, or for
//! good if the kernel says it has no `sendmmsg`; and to no GSO if a send with it fails.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
#[cfg(target_os = "linux")]
use std::ops::Range;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use std::os::fd::{AsFd, BorrowedFd};

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
    socket: Handle,
    state: UdpSocketState,
    local_addr: SocketAddr,
    buffers: Vec<u8>,
    metas: Vec<RecvMeta>,
    /// `None` where the kernel has no `sendmmsg` (then one send per datagram).
    #[cfg(target_os = "linux")]
    batch: Option<Batching>,
}

/// Datagrams in one GSO message at most (the kernel's `UDP_MAX_SEGMENTS`, 64 before 6.9 and
/// 128 since), and bytes: one IP packet's 64 KiB with headers, rounded down.
#[cfg(target_os = "linux")]
const GSO_MAX_SEGMENTS: usize = 64;
#[cfg(target_os = "linux")]
const GSO_MAX_BYTES: usize = 60_000;

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

/// What a [`MediaSocket::send_all`] took: system calls, those (batched) the kernel took only
/// part of, and datagrams that went out as a later segment of a GSO message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendCalls {
    pub calls: u64,
    pub partial: u64,
    pub coalesced: u64,
}

/// The socket as a [`MediaSocket`] holds it: registered with the runtime, to wait for
/// datagrams; or, for a handle that only sends (never waiting: a full buffer drops), plain,
/// so that the runtime is not woken by every datagram another thread reads.
enum Handle {
    Polled(UdpSocket),
    Plain(std::net::UdpSocket),
}

impl AsFd for Handle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Handle::Polled(socket) => socket.as_fd(),
            Handle::Plain(socket) => socket.as_fd(),
        }
    }
}

impl Handle {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Handle::Polled(socket) => socket.local_addr(),
            Handle::Plain(socket) => socket.local_addr(),
        }
    }

    /// Runs one non-blocking operation on the socket; a registered one's readiness for
    /// `interest` is cleared if it says `WouldBlock`.
    fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce(&Handle) -> io::Result<R>,
    ) -> io::Result<R> {
        match self {
            Handle::Polled(socket) => socket.try_io(interest, || f(self)),
            Handle::Plain(_) => f(self),
        }
    }
}

impl MediaSocket {
    /// Wraps a bound socket, to read and send; must run inside a tokio runtime.
    pub fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Self::wrap(
            Handle::Polled(UdpSocket::from_std(socket)?),
            quinn_udp::BATCH_SIZE,
        )
    }

    /// Wraps a handle of a socket another thread reads, to send only (a router shard's, see
    /// [`crate::shard`]): its runtime is not woken when datagrams arrive, and it keeps no
    /// receive buffers.
    pub fn sending_only(socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Self::wrap(Handle::Plain(socket), 0)
    }

    fn wrap(socket: Handle, slots: usize) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        let local_addr = socket.local_addr()?;
        #[cfg(target_os = "linux")]
        let batch = Some(Batching::new(&state));
        Ok(Self {
            socket,
            buffers: vec![0; slots * SLOT_BYTES],
            metas: vec![RecvMeta::default(); slots],
            state,
            local_addr,
            #[cfg(target_os = "linux")]
            batch,
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

    /// `sendmmsg` without GSO: one datagram per message (tests).
    #[cfg(test)]
    fn without_gso(mut self) -> Self {
        #[cfg(target_os = "linux")]
        if let Some(batching) = &mut self.batch {
            batching.max_segments = 1;
        }
        self
    }

    /// Whether runs of datagrams to one destination go out as one GSO message (tests).
    #[cfg(test)]
    fn gso(&self) -> bool {
        #[cfg(target_os = "linux")]
        if let Some(batching) = &self.batch {
            return batching.max_segments > 1;
        }
        false
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

    /// Waits until a read may find datagrams ([`MediaSocket::recv_batch`] clears that when it
    /// finds none).
    pub async fn readable(&self) -> io::Result<()> {
        match &self.socket {
            Handle::Polled(socket) => socket.readable().await,
            Handle::Plain(_) => std::future::pending().await,
        }
    }

    /// Waits until a send would not block (after [`MediaSocket::send`] said `WouldBlock`).
    pub async fn writable(&self) -> io::Result<()> {
        match &self.socket {
            Handle::Polled(socket) => socket.writable().await,
            Handle::Plain(_) => Ok(()),
        }
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
            match socket.try_io(Interest::READABLE, |socket| {
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
        self.socket.try_io(Interest::WRITABLE, |socket| {
            self.state.try_send(socket.into(), &transmit)
        })
    }

    /// The source address to set on a send: none when the socket is bound to one address.
    fn source(&self, from: IpAddr) -> Option<IpAddr> {
        self.local_addr.ip().is_unspecified().then_some(from)
    }

    /// Sends every datagram of `queue` without waiting, in as few system calls as the kernel
    /// allows, and tells `sent` how each went. As with [`MediaSocket::send`], a datagram that
    /// meets a full send buffer is dropped with `WouldBlock`, and each is tried once, whatever
    /// became of the one before. Datagrams to one destination leave in their order in `queue`;
    /// with GSO, those to different destinations may leave in another.
    pub fn send_all<T: ToSend>(
        &mut self,
        queue: &[T],
        mut sent: impl FnMut(&T, io::Result<()>),
    ) -> SendCalls {
        let mut calls = SendCalls::default();
        #[cfg(target_os = "linux")]
        if let Some(batching) = self.batch.take() {
            self.batch = self.send_batched(batching, queue, &mut sent, &mut calls);
            return calls;
        }
        for item in queue {
            let datagram = item.outgoing();
            calls.calls += 1;
            sent(item, self.send(datagram.from, datagram.to, datagram.data));
        }
        calls
    }

    /// [`MediaSocket::send_all`] with `sendmmsg`; returns `batching` unless the kernel refused
    /// it for good.
    #[cfg(target_os = "linux")]
    fn send_batched<T: ToSend>(
        &mut self,
        mut batching: Batching,
        queue: &[T],
        sent: &mut impl FnMut(&T, io::Result<()>),
        calls: &mut SendCalls,
    ) -> Option<Batching> {
        batching.plan(queue);
        let Batching {
            sendmmsg,
            max_segments,
            order,
            messages,
        } = &mut batching;
        let datagrams: Vec<&[u8]> = order.iter().map(|&i| queue[i].outgoing().data).collect();
        let unspecified = self.local_addr.ip().is_unspecified();
        let mut keep = true;
        let mut next = 0;
        while next < messages.len() {
            let socket = &self.socket;
            let result = socket.try_io(Interest::WRITABLE, |socket| {
                sendmmsg.send(
                    socket.as_fd(),
                    messages[next..].iter().map(|range| {
                        let first = queue[order[range.start]].outgoing();
                        sendmmsg::Message {
                            src: unspecified.then_some(first.from),
                            dst: first.to,
                            datagrams: &datagrams[range.clone()],
                        }
                    }),
                )
            });
            calls.calls += 1;
            let items = |range: &Range<usize>| order[range.clone()].iter().map(|&i| &queue[i]);
            let message = messages[next].clone();
            match result {
                Ok(taken) if taken > 0 => {
                    let tried = (messages.len() - next).min(sendmmsg::MAX_BATCH);
                    calls.partial += u64::from(taken < tried);
                    for range in &messages[next..next + taken] {
                        calls.coalesced += range.len() as u64 - 1;
                        items(range).for_each(|item| sent(item, Ok(())));
                    }
                    next += taken;
                }
                // Taken none without an error (cannot happen), or a full send buffer: this
                // message is dropped, as one send of each of its datagrams would have been.
                Ok(_) => {
                    items(&message)
                        .for_each(|item| sent(item, Err(io::ErrorKind::WouldBlock.into())));
                    next += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    items(&message)
                        .for_each(|item| sent(item, Err(io::ErrorKind::WouldBlock.into())));
                    next += 1;
                }
                Err(e) if unsupported(&e) => {
                    warn!(error = %e, "no sendmmsg: one system call per datagram from now on");
                    keep = false;
                    break;
                }
                // Some devices and kernels cannot segment (EIO, EINVAL): as `quinn-udp` does, no
                // GSO from now on; this turn's rest goes one datagram at a time.
                Err(e) if message.len() > 1 => {
                    warn!(error = %e, "UDP GSO failed: no GSO from now on");
                    *max_segments = 1;
                    break;
                }
                // One datagram failed. Alone through `quinn-udp`, which has fallbacks of its
                // own: if it goes that way, what failed was the batch, not the datagram.
                Err(e) => {
                    let item = &queue[order[message.start]];
                    let datagram = item.outgoing();
                    calls.calls += 1;
                    let alone = self.send(datagram.from, datagram.to, datagram.data);
                    next += 1;
                    if alone.is_ok() {
                        warn!(error = %e, "sendmmsg failed where a single send did not: one system call per datagram from now on");
                        keep = false;
                    }
                    sent(item, alone);
                    if !keep {
                        break;
                    }
                }
            }
        }
        for &i in messages[next..]
            .iter()
            .flat_map(|range| &order[range.clone()])
        {
            let datagram = queue[i].outgoing();
            calls.calls += 1;
            sent(
                &queue[i],
                self.send(datagram.from, datagram.to, datagram.data),
            );
        }
        keep.then_some(batching)
    }
}

/// How [`MediaSocket::send_all`] sends with `sendmmsg`, and its plan for one queue.
#[cfg(target_os = "linux")]
struct Batching {
    sendmmsg: sendmmsg::Sendmmsg,
    /// Datagrams per GSO message at most; 1 without GSO.
    max_segments: usize,
    /// The queue's indices in sending order: by destination with GSO (stable: each
    /// destination's datagrams in queue order), else the queue's order.
    order: Vec<usize>,
    /// Each message's run of `order`: one datagram, or several for GSO.
    messages: Vec<Range<usize>>,
}

#[cfg(target_os = "linux")]
impl Batching {
    fn new(state: &UdpSocketState) -> Self {
        Self {
            sendmmsg: sendmmsg::Sendmmsg::default(),
            max_segments: state.max_gso_segments().clamp(1, GSO_MAX_SEGMENTS),
            order: Vec::new(),
            messages: Vec::new(),
        }
    }

    /// Plans `queue` into messages: with GSO, each destination's datagrams from one source
    /// together, a run of one size (the last may be shorter) in one message.
    fn plan<T: ToSend>(&mut self, queue: &[T]) {
        self.order.clear();
        self.order.extend(0..queue.len());
        self.messages.clear();
        if self.max_segments > 1 {
            self.order.sort_by_key(|&i| queue[i].outgoing().to);
        }
        let mut start = 0;
        while start < self.order.len() {
            let first = queue[self.order[start]].outgoing();
            let size = first.data.len();
            let (mut end, mut bytes) = (start + 1, size);
            while end < self.order.len() && end - start < self.max_segments {
                let next = queue[self.order[end]].outgoing();
                let len = next.data.len();
                if next.to != first.to
                    || next.from != first.from
                    || len > size
                    || len == 0
                    || bytes + len > GSO_MAX_BYTES
                {
                    break;
                }
                (end, bytes) = (end + 1, bytes + len);
                if len < size {
                    break; // a shorter datagram ends a GSO message
                }
            }
            self.messages.push(start..end);
            start = end;
        }
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

    /// Sockets bound to `ips` (port chosen by the kernel), with room for all a test sends.
    fn receivers(ips: &[&str]) -> Vec<std::net::UdpSocket> {
        ips.iter()
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
            .collect()
    }

    /// Sends `queue` in one `send_all` and checks that each receiver got exactly its
    /// datagrams, intact, in the queue's order, each from the address it was sent from.
    async fn arrives_intact_once_from_its_sources(
        mut media: MediaSocket,
        receivers: &[std::net::UdpSocket],
        queue: &[Sent],
    ) -> SendCalls {
        let port = media.local_addr.port();
        // Until the runtime has seen the socket writable, `try_io` says `WouldBlock`.
        media.writable().await.unwrap();
        let mut reported = vec![0; queue.len()];
        let calls = media.send_all(queue, |sent, result| {
            result.unwrap();
            let index = queue.iter().position(|q| std::ptr::eq(q, sent)).unwrap();
            reported[index] += 1;
        });
        assert!(reported.iter().all(|&n| n == 1), "each reported once");
        for receiver in receivers {
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

    /// 600 datagrams of different sizes (1 to 1,400 bytes, each distinct), five at a time to
    /// each of four receivers on two loopback addresses, from three of the socket's addresses
    /// in turn.
    async fn mixed_batch(media: MediaSocket) -> SendCalls {
        let receivers = receivers(&["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"]);
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
        arrives_intact_once_from_its_sources(media, &receivers, &queue).await
    }

    /// A router turn in a class: four packets of a teacher's frame (1,100, 1,100, 1,100 and
    /// 700 bytes) and one of audio (120 bytes), each copied to six students, three on
    /// 127.0.0.1 and three on 127.0.0.2, each replied to from the address it uses; each copy
    /// distinct. Returns the queue with its receivers.
    fn class_turn() -> (Vec<std::net::UdpSocket>, Vec<Sent>) {
        let ips = ["127.0.0.1", "127.0.0.2"];
        let students = receivers(&[ips[0], ips[1], ips[0], ips[1], ips[0], ips[1]]);
        let mut queue = Vec::new();
        for (packet, len) in [1100usize, 1100, 1100, 700, 120].into_iter().enumerate() {
            for (s, student) in students.iter().enumerate() {
                let to = student.local_addr().unwrap();
                let data = (0..len).map(|b| (b + packet * 7 + s * 13) as u8).collect();
                queue.push(Sent {
                    from: to.ip(),
                    to,
                    data,
                });
            }
        }
        (students, queue)
    }

    fn wildcard_media_socket() -> MediaSocket {
        MediaSocket::new(std::net::UdpSocket::bind("0.0.0.0:0").unwrap()).unwrap()
    }

    #[tokio::test]
    async fn batched_sends_arrive_intact_once_from_their_sources() {
        for media in [
            wildcard_media_socket(),
            wildcard_media_socket().without_gso(),
        ] {
            let calls = mixed_batch(media).await;
            if cfg!(target_os = "linux") {
                // 600 datagrams in batches of `MAX_BATCH`; more only if the kernel split one.
                assert!(calls.calls >= 3 && calls.calls < 600, "{calls:?}");
            }
        }
    }

    #[tokio::test]
    async fn unbatched_sends_arrive_the_same() {
        let calls = mixed_batch(wildcard_media_socket().unbatched()).await;
        assert_eq!(
            calls,
            SendCalls {
                calls: 600,
                ..SendCalls::default()
            }
        );
    }

    /// With GSO, each student's copies of the frame go as one message (three of 1,100 bytes
    /// and the shorter 700 after them), the audio as another; each copy arrives as its own
    /// datagram, intact, in order, from the right address. Without GSO, one per datagram.
    #[tokio::test]
    async fn gso_sends_a_class_turn_as_one_message_per_student_and_run() {
        let (students, queue) = class_turn();
        let media = wildcard_media_socket();
        let gso = media.gso();
        let calls = arrives_intact_once_from_its_sources(media, &students, &queue).await;
        if gso {
            assert_eq!(calls.coalesced, 6 * 3, "{calls:?}");
        } else {
            assert_eq!(calls.coalesced, 0, "no GSO on this kernel: {calls:?}");
        }
        let (students, queue) = class_turn();
        let media = wildcard_media_socket().without_gso();
        let calls = arrives_intact_once_from_its_sources(media, &students, &queue).await;
        assert_eq!(calls.coalesced, 0);
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
