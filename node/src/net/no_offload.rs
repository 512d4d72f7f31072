//! The bulk endpoint's UDP socket with segmentation offload off: quinn's own socket, but
//! one datagram per send and per receive. quinn-udp turns UDP GSO and GRO on wherever the
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
        #[cfg(target_os = "linux")]
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let inner = runtime.wrap_udp_socket(socket)?;
        #[cfg(target_os = "linux")]
        gro_off(fd)?;
        Ok(Arc::new(Self(inner)))
    }
}

/// `UDP_GRO` of linux/udp.h (the libc crate defines it only for some targets).
#[cfg(target_os = "linux")]
const UDP_GRO: libc::c_int = 104;

/// `setsockopt(fd, IPPROTO_UDP, UDP_GRO, 0)`; `fd` is open (owned by the wrapped socket).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn gro_off(fd: std::os::fd::RawFd) -> io::Result<()> {
    let off: libc::c_int = 0;
    // SAFETY: `fd` is a valid socket for the call's duration and `off` outlives it; the
    // length is the option's size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_UDP,
            UDP_GRO,
            std::ptr::addr_of!(off).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => {
            let e = io::Error::last_os_error();
            // A kernel without UDP GRO (before 5.0) coalesces nothing: nothing to turn off.
            if e.raw_os_error() == Some(libc::ENOPROTOOPT) {
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

    /// The socket's `UDP_GRO` option (Linux).
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn gro_on(fd: std::os::fd::RawFd) -> bool {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` is an open socket; `value` and `len` outlive the call.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_UDP,
                UDP_GRO,
                std::ptr::addr_of_mut!(value).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt: {}", io::Error::last_os_error());
        value != 0
    }

    #[tokio::test]
    async fn a_wrapped_socket_reports_one_segment_each_way_and_keeps_its_address() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        #[cfg(target_os = "linux")]
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let wrapped = NoOffload::wrap(socket, &quinn::TokioRuntime).expect("wrap");
        assert_eq!(wrapped.max_transmit_segments(), 1);
        assert_eq!(wrapped.max_receive_segments(), 1);
        assert_eq!(wrapped.local_addr().expect("addr"), addr);
        #[cfg(target_os = "linux")]
        assert!(!gro_on(fd), "the kernel still coalesces receives");
    }

    /// The check above can fail: quinn's own socket has GRO on (where the kernel has it).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn quinns_own_socket_has_receive_coalescing_on() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let _wrapped = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket).expect("wrap");
        assert!(gro_on(fd), "quinn-udp left GRO off on this kernel");
    }
}
