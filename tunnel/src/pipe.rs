//! A byte pipe over channels of [`Bytes`]: what yamux reads and writes, whatever WebSocket
//! library moves the messages. Writes are gathered into messages of up to [`MAX_MESSAGE`]
//! bytes (yamux writes a 12-byte header and a body separately; one message each would double
//! the per-message cost).

use bytes::{Bytes, BytesMut};
use futures_util::io::{AsyncRead, AsyncWrite};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Largest WebSocket message a side sends.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// The yamux side of the pipe.
pub struct Pipe {
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
    tx: PollSender<Bytes>,
    out: BytesMut,
}

/// The WebSocket side: feed received binary messages into `incoming`, send what comes out of
/// `outgoing`. Dropping `incoming` is end of stream for yamux; `outgoing` ends when yamux
/// closes.
pub struct Ends {
    pub incoming: mpsc::Sender<Bytes>,
    pub outgoing: mpsc::Receiver<Bytes>,
}

pub fn pipe() -> (Pipe, Ends) {
    let (in_tx, in_rx) = mpsc::channel(64);
    let (out_tx, out_rx) = mpsc::channel(64);
    (
        Pipe {
            rx: in_rx,
            pending: Bytes::new(),
            tx: PollSender::new(out_tx),
            out: BytesMut::new(),
        },
        Ends {
            incoming: in_tx,
            outgoing: out_rx,
        },
    )
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed")
}

impl Pipe {
    /// Hands the gathered bytes to the WebSocket side.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.tx.poll_reserve(cx)).map_err(|_| closed())?;
        let msg = self.out.split().freeze();
        self.tx.send_item(msg).map_err(|_| closed())?;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        while self.pending.is_empty() {
            match ready!(self.rx.poll_recv(cx)) {
                Some(b) => self.pending = b,
                None => return Poll::Ready(Ok(0)),
            }
        }
        let n = buf.len().min(self.pending.len());
        let chunk = self.pending.split_to(n);
        buf[..n].copy_from_slice(&chunk);
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.out.len() >= MAX_MESSAGE {
            ready!(self.poll_send(cx))?;
        }
        let n = buf.len().min(MAX_MESSAGE - self.out.len().min(MAX_MESSAGE));
        self.out.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}
