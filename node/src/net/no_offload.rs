//! The bulk endpoint's UDP socket with segmentation offload off: quinn's own socket, but
//! one datagram per send system call and no coalesced receives (receives are still batched
//! by `recvmmsg`, a datagram per slot). quinn-udp turns UDP GSO and GRO on wherever the
//! kernel has them; some virtual NICs and middleboxes mishandle them, and turning them off
//! is how one measures what they save (`make cost-bench`, `bulk_offload = false`). Every
//! byte is verified either way: the choice changes system calls, never data.

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

/// A socket of `runtime` that tells quinn it can send and receive one datagram at a time.
pub struct NoOffload(Arc<dyn AsyncUdpSocket>);

impl fmt::Debug for NoOffload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NoOffload").field(&self.0).finish()
    }
}

impl NoOffload {
    /// Wraps `socket` for `runtime`, with the kernel's receive coalescing turned off again
    /// after quinn-udp turned it on (a coalesced receive into one datagram's buffer would be
    /// cut short).
    pub fn wrap(socket: UdpSocket, runtime: &dyn Runtime) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let inner = runtime.wrap_udp_socket(socket)?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        gro_off(fd)?;
        Ok(Arc::new(Self(inner)))
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

impl AsyncUdpSocket for NoOffload {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.0.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.0.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        1
    }

    fn may_fragment(&self) -> bool {
        self.0.may_fragment()
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
        let wrapped = NoOffload::wrap(socket, &quinn::TokioRuntime).expect("wrap");
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
            NoOffload::wrap(UdpSocket::bind("127.0.0.1:0").expect("bind"), &runtime).expect("wrap");
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
