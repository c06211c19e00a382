//! `408` for a client too slow to send its first request's headers.
//!
//! hyper's own header timeout closes the connection without a word. hookd
//! promises a JSON answer, so the socket is shared (`Arc`) between hyper and a
//! timer: if no request has started within the read timeout, the timer writes
//! the 408 itself and shuts the socket down. Later requests on a keep-alive
//! connection are left to hyper's timeout: closing an idle keep-alive
//! connection silently is what clients expect.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A socket usable through `&self`, as tokio's TCP and unix streams are.
pub(crate) trait SharedSocket: AsRawFd + Send + Sync + 'static {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

macro_rules! shared_socket {
    ($t:ty) => {
        impl SharedSocket for $t {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$t>::try_read(self, buf)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_write_ready(self, cx)
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$t>::try_write(self, buf)
            }
            fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                <$t>::try_write_vectored(self, bufs)
            }
        }
    };
}

shared_socket!(tokio::net::TcpStream);
shared_socket!(tokio::net::UnixStream);

/// The hyper side of a shared socket.
pub(crate) struct Shared<S>(pub Arc<S>);

impl<S: SharedSocket> AsyncRead for Shared<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // try_read clears readiness on WouldBlock, so the loop waits again.
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<S: SharedSocket> AsyncWrite for Shared<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = nix::sys::socket::shutdown(self.0.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        Poll::Ready(Ok(()))
    }
}

const WAITING: u8 = 0;
const STARTED: u8 = 1;
const TIMED_OUT: u8 = 2;

/// Whether the first request beat the timer; exactly one of them wins.
#[derive(Default)]
pub(crate) struct FirstRequest(AtomicU8);

impl FirstRequest {
    /// Called for every request; true unless the timer already answered 408.
    pub(crate) fn started(&self) -> bool {
        match self
            .0
            .compare_exchange(WAITING, STARTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == STARTED,
        }
    }

    /// Called by a timer: true when no request started, so the timer answers 408.
    pub(crate) fn time_out(&self) -> bool {
        self.0
            .compare_exchange(WAITING, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

const BODY: &str = "{\"error\":\"request_timeout\",\"message\":\"the headers did not arrive within the read timeout\"}\n";

/// The whole 408 answer, written to the socket as it is.
pub(crate) fn answer() -> String {
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    )
}

/// After `limit`, answers 408 and shuts the socket down unless a request
/// started first. Runs as its own task; ends early when the request wins.
pub(crate) async fn watch<S: SharedSocket>(
    socket: Arc<S>,
    first: Arc<FirstRequest>,
    limit: Duration,
) {
    tokio::time::sleep(limit).await;
    if first.time_out() {
        // A fresh connection's send buffer is empty: the answer fits at once.
        let _ = socket.try_write(answer().as_bytes());
        let _ = nix::sys::socket::shutdown(socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canned_answer_has_the_right_length() {
        let text = answer();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "request_timeout");
    }

    #[test]
    fn exactly_one_of_request_and_timer_wins() {
        let f = FirstRequest::default();
        assert!(f.started());
        assert!(f.started(), "later requests on the connection still run");
        assert!(f
            .0
            .compare_exchange(WAITING, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
            .is_err());
        let g = FirstRequest::default();
        g.0.store(TIMED_OUT, Ordering::Release);
        assert!(!g.started());
    }
}
