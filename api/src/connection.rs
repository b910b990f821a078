//! What bounds the life of every accepted connection, whatever the client
//! does (docs/SECURITY.md, "Connections"):
//!
//! - **A request head must arrive in time.** [`Connection`] wraps the socket
//!   and closes it (an I/O error to actix, so the client sees the connection
//!   end, never a status) when a request head has not arrived within
//!   `HTTP_REQUEST_TIMEOUT_MS` of its first byte (of the accept, for the first
//!   request). It replaces actix's own head timer, which answers `408`, a
//!   status a browser's `EventSource` treats as final, and which measures
//!   against a clock cached per worker thread: on a busy worker that clock
//!   lags, and heads that had arrived long ago were answered `408` (a reconnect
//!   storm, docs/SECURITY.md). Here the bytes already in the socket are read
//!   before the deadline is looked at, and the deadline is a real timer.
//! - **A client that vanishes or stops reading is cut off.** The listening
//!   socket carries `TCP_USER_TIMEOUT` and TCP keepalive, inherited by every
//!   accepted socket: data unacknowledged for `HTTP_WRITE_TIMEOUT_SECS` (a
//!   peer gone without a FIN), or a receive window shut for that long (a
//!   peer that stopped reading), makes the kernel abort the connection. That
//!   bound has to live in the kernel: actix stops polling a response body
//!   while its write buffer is full, so no timer inside a stream would ever
//!   fire for a client that stopped reading.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Idle time before the first keepalive probe, and between probes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Sets the options every accepted socket inherits: the kernel send buffer
/// (`send_buffer` bytes, 0 keeps the kernel's autotuning), the write timeout
/// (`TCP_USER_TIMEOUT`) and keepalive probes.
pub fn configure_listener(
    listener: &std::net::TcpListener,
    send_buffer: usize,
    write_timeout: Duration,
) -> io::Result<()> {
    let socket = SockRef::from(listener);
    if send_buffer > 0 {
        // A stalled client then holds at most this much kernel memory.
        socket.set_send_buffer_size(send_buffer)?;
    }
    socket.set_tcp_user_timeout(Some(write_timeout))?;
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL),
    )?;
    Ok(())
}

/// The end of a request head, found a byte at a time: an empty line, ended
/// by `\r\n` or a bare `\n` as HTTP/1 parsers accept.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Scan {
    #[default]
    InLine,
    /// Just after a line feed.
    LineStart,
    /// A carriage return right after a line feed.
    LineStartCr,
}

impl Scan {
    /// Feeds one byte; true when it ends the head.
    fn feed(&mut self, byte: u8) -> bool {
        match (byte, *self) {
            (b'\n', Scan::LineStart | Scan::LineStartCr) => {
                *self = Scan::InLine;
                true
            }
            (b'\n', _) => {
                *self = Scan::LineStart;
                false
            }
            (b'\r', Scan::LineStart) => {
                *self = Scan::LineStartCr;
                false
            }
            _ => {
                *self = Scan::InLine;
                false
            }
        }
    }
}

/// Where a connection stands with respect to request heads.
#[derive(Debug)]
struct HeadWatch {
    timeout: Duration,
    /// Armed while a head is on its way.
    deadline: Option<Pin<Box<Sleep>>>,
    scan: Scan,
    /// The server has written since the last head ended: the next byte read
    /// starts the next request's head. Bytes read before that are a body.
    answered: bool,
}

impl HeadWatch {
    fn new(timeout: Duration) -> Self {
        HeadWatch {
            timeout,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            scan: Scan::default(),
            answered: false,
        }
    }

    fn read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.deadline.is_none() {
            if !self.answered {
                return; // a request body, or the rest of a pipelined request
            }
            self.answered = false;
            self.scan = Scan::default();
            self.deadline = Some(Box::pin(tokio::time::sleep(self.timeout)));
        }
        if bytes.iter().any(|&b| self.scan.feed(b)) {
            self.deadline = None;
        }
    }

    fn wrote(&mut self) {
        if self.deadline.is_none() {
            self.answered = true;
        }
    }

    /// Ready when the head is late.
    fn poll_late(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.deadline {
            Some(deadline) => deadline.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// An accepted connection: the socket, and the deadline of the request head
/// on its way (see the module docs).
pub struct Connection<IO> {
    io: IO,
    head: HeadWatch,
}

impl<IO> Connection<IO> {
    pub fn new(io: IO, head_timeout: Duration) -> Self {
        Connection {
            io,
            head: HeadWatch::new(head_timeout),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Connection<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.head.read(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            // Nothing to read: only now is the deadline looked at, so a head
            // that has arrived is never refused for the server's slowness.
            Poll::Pending => match this.head.poll_late(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request head did not arrive in time",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Connection<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.head.wrote();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.head.wrote();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(bytes: &[u8]) -> Option<usize> {
        let mut scan = Scan::default();
        bytes.iter().position(|&b| scan.feed(b))
    }

    #[test]
    fn the_end_of_a_head_is_an_empty_line() {
        assert_eq!(ends(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Some(26));
        assert_eq!(ends(b"GET / HTTP/1.0\n\n"), Some(15));
        assert_eq!(ends(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(ends(b"GET / HTTP/1.1\r\nX: a\rb\r\n"), None);
        assert_eq!(ends(b"\r\r\n\r"), None);
    }

    #[test]
    fn the_listener_carries_the_bounds_its_connections_inherit() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        configure_listener(&listener, 16 * 1024, Duration::from_secs(7)).expect("options");
        let socket = SockRef::from(&listener);
        assert_eq!(
            socket.tcp_user_timeout().expect("get"),
            Some(Duration::from_secs(7))
        );
        assert!(socket.keepalive().expect("get"));
        assert_eq!(socket.tcp_keepalive_time().expect("get"), KEEPALIVE_IDLE);
        // Linux doubles the figure for its bookkeeping.
        assert_eq!(socket.send_buffer_size().expect("get"), 2 * 16 * 1024);
        // 0 leaves the kernel's own size alone.
        let untouched = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let before = SockRef::from(&untouched).send_buffer_size().expect("get");
        configure_listener(&untouched, 0, Duration::from_secs(7)).expect("options");
        assert_eq!(
            SockRef::from(&untouched).send_buffer_size().expect("get"),
            before
        );
    }

    #[tokio::test]
    async fn bytes_pass_through_both_ways_unchanged() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let mut client = client.expect("connect");
        let (server, _) = accepted.expect("accept");
        let mut wrapped = Connection::new(server, Duration::from_secs(5));
        assert!(wrapped.is_write_vectored(), "as the socket it wraps");
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut head = [0u8; 18];
        wrapped.read_exact(&mut head).await.expect("read");
        assert_eq!(&head, b"GET / HTTP/1.1\r\n\r\n");
        wrapped
            .write_all(b"HTTP/1.1 200 OK\r\n")
            .await
            .expect("write");
        let parts = [io::IoSlice::new(b"a: 1\r\n"), io::IoSlice::new(b"\r\n")];
        let n = wrapped.write_vectored(&parts).await.expect("write");
        assert!(n > 0, "a vectored write writes");
        wrapped
            .write_all(&b"a: 1\r\n\r\n"[n..])
            .await
            .expect("write");
        wrapped.flush().await.expect("flush");
        wrapped.shutdown().await.expect("shutdown");
        let mut answer = Vec::new();
        // The shutdown reached the peer: its read ends (while the wrapper lives).
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
            .await
            .expect("the peer sees the end of the stream")
            .expect("read");
        assert_eq!(answer, b"HTTP/1.1 200 OK\r\na: 1\r\n\r\n");
        drop(wrapped);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_is_timed_from_its_first_byte_after_an_answer() {
        let mut head = HeadWatch::new(Duration::from_secs(5));
        assert!(head.deadline.is_some(), "armed from the accept");
        head.read(b"GET / HTTP/1.1\r\n");
        assert!(head.deadline.is_some());
        head.read(b"\r\n");
        assert!(head.deadline.is_none(), "the head is complete");
        head.read(b"a body, or a pipelined request");
        assert!(
            head.deadline.is_none(),
            "bytes before the answer are a body"
        );
        head.wrote();
        head.read(b"G");
        assert!(head.deadline.is_some(), "the next head has begun");
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(head.poll_late(&mut cx).is_pending());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(head.poll_late(&mut cx).is_ready(), "late after the timeout");
    }
}
