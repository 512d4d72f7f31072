//! Sending a request on a new stream, again when the peer dropped it unread.

use std::io;

use libp2p::futures::AsyncWrite;

use super::io::write_frame;

/// Times a request the peer dropped unread is sent again.
pub const REQUEST_RETRIES: u32 = 2;
/// The pause before each retry.
pub const REQUEST_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// Opens a stream with `open` and writes `request` on it. A request the peer dropped
/// unread (its QUIC stopped our side with code 0 before answering) is sent again on a new
/// stream, at most [`REQUEST_RETRIES`] times: libp2p-stream hands inbound streams over through
/// a channel of one, and drops a stream that arrives while it is full, so a client opening
/// several at once sometimes loses one (seen in `make test`: a resumed get failed with
/// "sending stopped by peer: error 0"). Our server never stops a request unread otherwise.
pub async fn send_request<S, F, Fut>(mut open: F, request: &[u8]) -> Result<S, String>
where
    S: AsyncWrite + Unpin,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<S, String>>,
{
    let mut retries = 0;
    loop {
        let mut stream = open().await?;
        match write_frame(&mut stream, request).await {
            Ok(()) => return Ok(stream),
            Err(e) if dropped_unread(&e) && retries < REQUEST_RETRIES => {
                retries += 1;
                tracing::debug!(error = %e, "request dropped unread; sending it again");
                tokio::time::sleep(REQUEST_RETRY_PAUSE).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Whether a write failed because the peer stopped the stream with code 0 (what QUIC sends
/// when a stream is dropped unread).
fn dropped_unread(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<quinn::WriteError>())
        .is_some_and(|w| matches!(w, quinn::WriteError::Stopped(code) if code.into_inner() == 0))
}

#[cfg(test)]
mod tests {
    use std::{
        cell::Cell,
        collections::VecDeque,
        pin::Pin,
        task::{Context, Poll},
    };

    use super::*;

    /// A stream whose writes all fail with `refusal`, or all succeed.
    struct Scripted {
        refusal: Option<quinn::WriteError>,
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(match self.refusal.clone() {
                Some(refusal) => Err(refusal.into()),
                None => Ok(buf.len()),
            })
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn stopped(code: u32) -> Option<quinn::WriteError> {
        Some(quinn::WriteError::Stopped(quinn::VarInt::from_u32(code)))
    }

    /// Sends a request over streams refused as `script` says (then accepted); returns
    /// whether it was sent, and the number of streams opened.
    async fn send(script: Vec<Option<quinn::WriteError>>) -> (Result<(), String>, usize) {
        let script = std::cell::RefCell::new(VecDeque::from(script));
        let opened = Cell::new(0);
        let open = || {
            opened.set(opened.get() + 1);
            let refusal = script.borrow_mut().pop_front().flatten();
            async move { Ok(Scripted { refusal }) }
        };
        let sent = send_request(open, b"request").await.map(|_| ());
        (sent, opened.get())
    }

    #[tokio::test]
    async fn a_request_dropped_unread_is_sent_again_a_bounded_number_of_times() {
        let (sent, opened) = send(vec![stopped(0), None]).await;
        assert_eq!((sent, opened), (Ok(()), 2));

        let (sent, opened) = send(vec![stopped(0); 5]).await;
        assert!(sent.expect_err("still refused").contains("stopped by peer"));
        assert_eq!(opened, 1 + REQUEST_RETRIES as usize);
    }

    #[tokio::test]
    async fn other_write_failures_are_not_retried() {
        for refusal in [stopped(7), Some(quinn::WriteError::ClosedStream)] {
            let (sent, opened) = send(vec![refusal, None]).await;
            assert!(sent.is_err());
            assert_eq!(opened, 1);
        }
    }
}
