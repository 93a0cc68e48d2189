//! A yamux session driven by one task: [`start`] returns an [`Opener`] for outbound streams,
//! a receiver of inbound ones and the driver future, which must be polled for anything to
//! move (spawn it). The driver ends when the underlying pipe ends or fails; open streams then
//! fail and [`Opener::open`] answers an error.

use futures_util::io::{AsyncRead, AsyncWrite};
use std::future::Future;
use std::io;
use std::task::Poll;
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

pub use yamux::Mode;

/// A stream of the session, with tokio's `AsyncRead`/`AsyncWrite`.
pub type Stream = Compat<yamux::Stream>;

type OpenReply = oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>;

/// Opens outbound streams. Cheap to clone.
#[derive(Clone)]
pub struct Opener {
    tx: mpsc::Sender<OpenReply>,
}

impl Opener {
    pub async fn open(&self) -> io::Result<Stream> {
        let gone = || io::Error::new(io::ErrorKind::NotConnected, "the tunnel is closed");
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.map_err(|_| gone())?;
        match rx.await {
            Ok(Ok(s)) => Ok(s.compat()),
            Ok(Err(e)) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, e)),
            Err(_) => Err(gone()),
        }
    }

    /// True once the driver has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The session's configuration: at most `max_streams` open at once.
pub fn config(max_streams: usize) -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_max_num_streams(max_streams.max(1));
    c
}

/// Starts a session over `io`. Inbound streams arrive on the receiver (the server, which
/// opens every stream itself, drops them). It is unbounded so a burst of opens is never
/// dropped while the acceptor is busy; yamux's `max_streams` bounds it.
pub fn start<T>(
    io: T,
    mode: Mode,
    cfg: yamux::Config,
) -> (
    Opener,
    mpsc::UnboundedReceiver<Stream>,
    impl Future<Output = Result<(), String>> + Send,
)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (open_tx, mut open_rx) = mpsc::channel::<OpenReply>(64);
    let (in_tx, in_rx) = mpsc::unbounded_channel::<Stream>();
    let mut conn = yamux::Connection::new(io, cfg, mode);
    let driver = async move {
        let mut waiting: Option<OpenReply> = None;
        let mut openers_gone = false;
        std::future::poll_fn(move |cx| loop {
            if waiting.is_none() && !openers_gone {
                match open_rx.poll_recv(cx) {
                    Poll::Ready(Some(r)) => waiting = Some(r),
                    Poll::Ready(None) => openers_gone = true,
                    Poll::Pending => {}
                }
            }
            if let Some(r) = waiting.take() {
                if r.is_closed() {
                    continue;
                }
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(res) => {
                        let _ = r.send(res);
                        continue;
                    }
                    Poll::Pending => waiting = Some(r),
                }
            }
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(s))) => {
                    if in_tx.send(s.compat()).is_err() {
                        log::debug!("tunnel: inbound stream dropped (nobody accepts them)");
                    }
                    continue;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.to_string())),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    };
    (Opener { tx: open_tx }, in_rx, driver)
}
