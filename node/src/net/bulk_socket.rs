//! The bulk endpoint's UDP socket as quinn sees it ([`BulkSocket`]): quinn's own socket,
//! with its segmented sends capped so that a batch always fits one UDP send, or with
//! segmentation offload off.
//!
//! Why a cap: quinn puts up to ten datagrams in one segmented (GSO) send, whatever their
//! size, and the kernel refuses a send of more than [`UDP_MAX_SEND`] bytes with `EMSGSIZE`,
//! which quinn-udp counts as sent: with datagrams over a tenth of that, every full batch
//! would be lost (measured: docs/benchmarks.md, cost part 9).
//!
//! Why offload off: quinn-udp turns UDP GSO and GRO on wherever the kernel has them; some
//! virtual NICs and middleboxes mishandle them, and turning them off is how one measures
//! what they save (`make cost-bench`, `bulk_offload = false`): one datagram per send system
//! call and no coalesced receives (receives are still batched by `recvmmsg`, a datagram per
//! slot). Every byte is verified either way: these change system calls, never data.

use std::{
    fmt,
    io::{self, IoSliceMut},
    net::{SocketAddr, UdpSocket},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use quinn::{
    udp::{RecvMeta, Transmit},
    AsyncUdpSocket, Runtime, UdpPoller,
};

/// Largest payload of one UDP send: an IPv4 datagram's 65,535 bytes less its IP (20) and
/// UDP (8) headers (IPv6 allows 20 more; the smaller limit serves both).
pub const UDP_MAX_SEND: usize = 65_507;

/// quinn's socket for a runtime, telling quinn how many datagrams to put in one send and
/// to take from one receive.
pub struct BulkSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    /// Datagrams per send at most (quinn-udp's own figure may be lower).
    max_segments: usize,
    /// Whether the kernel coalesces received datagrams (GRO) as quinn-udp set it up.
    coalesced: bool,
}

impl fmt::Debug for BulkSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkSocket")
            .field("inner", &self.inner)
            .field("max_segments", &self.max_segments)
            .field("coalesced", &self.coalesced)
            .finish()
    }
}

impl BulkSocket {
    /// Wraps `socket` for `runtime` and datagrams of at most `max_payload` bytes, with
    /// offload where the kernel has it: no more datagrams in one segmented send than fit
    /// [`UDP_MAX_SEND`] bytes at that size. The cap follows the largest datagram the
    /// endpoint may send, not the path's (a socket does not know which connection sends),
    /// so it holds on every path.
    pub fn fitted(
        socket: UdpSocket,
        runtime: &dyn Runtime,
        max_payload: u16,
    ) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        Ok(Arc::new(Self {
            inner: runtime.wrap_udp_socket(socket)?,
            max_segments: segments_per_send(max_payload),
            coalesced: true,
        }))
    }

    /// Wraps `socket` for `runtime` to send and receive one datagram at a time, with the
    /// kernel's receive coalescing turned off again after quinn-udp turned it on (a
    /// coalesced receive into one datagram's buffer would be cut short).
    pub fn no_offload(
        socket: UdpSocket,
        runtime: &dyn Runtime,
    ) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let inner = runtime.wrap_udp_socket(socket)?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        gro_off(fd)?;
        Ok(Arc::new(Self {
            inner,
            max_segments: 1,
            coalesced: false,
        }))
    }
}

/// How many datagrams of `max_payload` bytes fit one UDP send, at least one: a datagram too
/// large for any send is the kernel's to refuse, as an MTU probe's would be (quinn refuses
/// a payload under 1,200 bytes before a socket is made; 0 gets one, never a division by 0).
pub const fn segments_per_send(max_payload: u16) -> usize {
    let fit = match max_payload {
        0 => 1,
        payload => UDP_MAX_SEND / payload as usize,
    };
    if fit == 0 {
        1
    } else {
        fit
    }
}

/// `setsockopt(fd, IPPROTO_UDP, UDP_GRO, 0)`; `fd` is open (owned by the wrapped socket).
/// quinn-udp turns GRO on for Linux and Android.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
fn gro_off(fd: std::os::fd::RawFd) -> io::Result<()> {
    let off: libc::c_int = 0;
    // SAFETY: `fd` is a valid socket for the call's duration and `off` outlives it; the
    // length is the option's size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_UDP,
            libc::UDP_GRO,
            std::ptr::addr_of!(off).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => {
            let e = io::Error::last_os_error();
            // A kernel or sandbox without UDP GRO coalesces nothing: nothing to turn off
            // (quinn-udp's own attempt to turn it on failed the same way).
            if matches!(e.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EOPNOTSUPP)) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

impl AsyncUdpSocket for BulkSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Asked before every batch: quinn-udp lowers its own figure to one when the kernel
    /// turns segmented sends down.
    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments().min(self.max_segments)
    }

    fn max_receive_segments(&self) -> usize {
        match self.coalesced {
            true => self.inner.max_receive_segments(),
            false => 1,
        }
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket's `UDP_GRO` option, or `None` where the kernel cannot report it (reading
    /// it came later than setting it).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[allow(unsafe_code)]
    fn gro_on(fd: std::os::fd::RawFd) -> Option<bool> {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` is an open socket; `value` and `len` outlive the call.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_UDP,
                libc::UDP_GRO,
                std::ptr::addr_of_mut!(value).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(value != 0)
    }

    #[tokio::test]
    async fn a_wrapped_socket_reports_one_segment_each_way_and_keeps_its_address() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let wrapped = BulkSocket::no_offload(socket, &quinn::TokioRuntime).expect("wrap");
        assert_eq!(wrapped.max_transmit_segments(), 1);
        assert_eq!(wrapped.max_receive_segments(), 1);
        assert_eq!(wrapped.local_addr().expect("addr"), addr);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        assert_ne!(
            gro_on(fd),
            Some(true),
            "the kernel still coalesces receives"
        );
    }

    #[tokio::test]
    async fn a_fitted_socket_puts_no_more_datagrams_in_a_send_than_fit_one() {
        let runtime = quinn::TokioRuntime;
        let own = quinn::Runtime::wrap_udp_socket(
            &runtime,
            UdpSocket::bind("127.0.0.1:0").expect("bind"),
        )
        .expect("wrap");
        let kernel = own.max_transmit_segments();
        for (max_payload, fit) in [(0, 1), (1_472, 44), (6_500, 10), (8_972, 7), (65_527, 1)] {
            assert_eq!(segments_per_send(max_payload), fit);
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let fitted = BulkSocket::fitted(socket, &runtime, max_payload).expect("wrap");
            assert_eq!(fitted.max_transmit_segments(), kernel.min(fit));
            assert!(
                fitted.max_transmit_segments() * usize::from(max_payload)
                    <= UDP_MAX_SEND.max(usize::from(max_payload))
            );
            assert_eq!(fitted.max_receive_segments(), own.max_receive_segments());
        }
    }

    /// The check above can fail: quinn's own socket has GRO on (where the kernel says).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn quinns_own_socket_has_receive_coalescing_on() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let wrapped = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket).expect("wrap");
        if wrapped.max_receive_segments() > 1 {
            assert_ne!(gro_on(fd), Some(false), "quinn-udp left GRO off");
        }
    }

    /// A burst sent as one segmented (GSO) send arrives as separate datagrams, each whole,
    /// in the one-datagram slots quinn gives a socket that reports one receive segment.
    #[tokio::test]
    async fn a_segmented_burst_arrives_as_whole_separate_datagrams() {
        const SEGMENT: usize = 1200;
        const SEGMENTS: usize = 10;
        let runtime = quinn::TokioRuntime;
        let receiver =
            BulkSocket::no_offload(UdpSocket::bind("127.0.0.1:0").expect("bind"), &runtime)
                .expect("wrap");
        let sender = quinn::Runtime::wrap_udp_socket(
            &runtime,
            UdpSocket::bind("127.0.0.1:0").expect("bind"),
        )
        .expect("wrap");
        let segments = sender.max_transmit_segments().min(SEGMENTS);
        let contents: Vec<u8> = (0..segments * SEGMENT)
            .map(|i| (i / SEGMENT) as u8)
            .collect();
        let transmit = Transmit {
            destination: receiver.local_addr().expect("addr"),
            ecn: None,
            contents: &contents,
            segment_size: (segments > 1).then_some(SEGMENT),
            src_ip: None,
        };
        let mut poller = sender.clone().create_io_poller();
        loop {
            match sender.try_send(&transmit) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
                        .await
                        .expect("writable");
                }
                Err(e) => panic!("send: {e}"),
            }
        }

        let mut slots = vec![[0u8; 1472]; 32];
        let mut got = Vec::new();
        while got.len() < segments {
            let mut bufs: Vec<IoSliceMut<'_>> =
                slots.iter_mut().map(|s| IoSliceMut::new(s)).collect();
            let mut meta = vec![RecvMeta::default(); bufs.len()];
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                std::future::poll_fn(|cx| receiver.poll_recv(cx, &mut bufs, &mut meta)),
            )
            .await
            .expect("the burst arrives")
            .expect("receive");
            for (m, buf) in meta[..n].iter().zip(&bufs) {
                assert_eq!((m.len, m.stride), (SEGMENT, SEGMENT), "a coalesced receive");
                got.push(buf[0]);
            }
        }
        let expected: Vec<u8> = (0..segments as u8).collect();
        assert_eq!(got, expected);
    }
}
