//! [`CoalescingStream`]: the server's sockets, with the responses finished in
//! one turn of the runtime written out together.
//!
//! HTTP/2 flushes its connection every time its task runs. tokio runs a task
//! woken by another task right after it (the "LIFO slot"), so when a batch of
//! commands commits together, each finished response wakes its connection's
//! task, which runs at once and writes that one response: one `writev`, one
//! TCP segment and one wake-up of the peer per response. Under the write
//! benchmark the server made about 1.5 `writev`s per request.
//!
//! The wrapper accepts writes into a buffer and holds a flush until the
//! runtime thread has run every task that was ready (tokio's `yield_now`
//! deferral: the flush resumes when the worker next polls its I/O driver,
//! which it does when its queue is empty and every 61 tasks otherwise). By
//! then the other responses of the batch are in the buffer and go out in one
//! write. A lone request pays one more poll of its connection's task, not a
//! timer: nothing waits for a clock. The buffer is written through once it
//! holds [`HOLD_LIMIT`] bytes, so bulk streams (snapshots) do not pile up.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Bytes held before they are written without waiting for the turn's end.
///
/// A route change gives each connection of the fan-out about 50 KB (100 streams'
/// deltas of about 500 bytes): 16 KiB wrote it in about four sends, 32 KiB in about two.
/// Against 16 KiB, 32 KiB made 44% fewer sends, for 0.93 and 0.98 of the server's CPU
/// during a change and the same latencies (two A/Bs of four turns, bench/FINDINGS.md,
/// round 37); 64 KiB cut the sends by two thirds but delayed each connection's first
/// deltas (the median rose by 3%).
pub const HOLD_LIMIT: usize = 32 * 1024;

/// How many task polls a runtime thread makes between two polls of its I/O driver while
/// tasks are ready (tokio's `event_interval`; its default is 61). A turn, as the flush
/// waits for it, ends at such a poll, so this bounds how much a turn can gather, and how
/// long I/O readiness and timers wait while tasks are queued.
///
/// A route change wakes every watch stream at once, a connection's streams together
/// (`routing::relay`), so a turn of 1,024 polls holds each of the connections it reaches
/// whole and writes each once a change (about ten connections of the benchmark's 100
/// streams each). Before the relay the streams were woken scattered, and each turn wrote
/// to nearly every connection: with 10,000 streams on 100 connections, a turn of 61 polls
/// took about 3,900 writes a change and 1,024 about 1,200 (bench/FINDINGS.md, round 26),
/// so round 35 set 16,384, more than a change's polls on either thread. With the relay,
/// 1,024 against 16,384 made the same sends, the median delivery fell by about a quarter
/// (connections reached early are written early instead of at the change's end), and the
/// worst delivery and the server's CPU stayed level or fell (four runs); 256 lowered the
/// median by about a tenth more for 7% more sends, inside the turns' spread, and 61 cost
/// more sends and CPU (round 36). Writes were level too. `signpost serve` builds its
/// runtime with it, and so do the benchmark's do-nothing servers.
pub const RUNTIME_EVENT_INTERVAL: u32 = 1_024;

/// The buffer's first allocation in a turn. It is given back once written out,
/// so an idle connection (an edge between route changes) holds none.
const FIRST_CAPACITY: usize = 4 * 1024;

/// The connections `listener` accepts, as the control plane serves them: Nagle's algorithm
/// off (tonic's `tcp_nodelay` only applies to listeners it binds itself, and Nagle with
/// delayed ACKs adds ~40 ms to small replies), and each socket a [`CoalescingStream`].
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = io::Result<CoalescingStream<tokio::net::TcpStream>>> {
    tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |socket| {
            socket.map(|socket| {
                let _ = socket.set_nodelay(true);
                CoalescingStream::new(socket)
            })
        },
    )
}

/// A byte stream whose flushes wait for the end of the runtime's turn, so
/// that what several tasks write in one turn goes out in one write.
#[derive(Debug)]
pub struct CoalescingStream<S> {
    inner: S,
    /// Bytes accepted and not yet written to `inner`.
    pending: Vec<u8>,
    /// How much of `pending` `inner` has taken (a partial write).
    written: usize,
    /// Set while a flush waits for the turn to end.
    turn: Option<Arc<TurnEnd>>,
}

impl<S> CoalescingStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
            turn: None,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Woken by tokio when the turn in which a flush was asked for ends; wakes
/// the task that asked.
#[derive(Debug)]
struct TurnEnd {
    ended: AtomicBool,
    waiter: Mutex<Option<Waker>>,
}

impl Wake for TurnEnd {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ended.store(true, Ordering::SeqCst);
        let waiter = self.waiter.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }
}

impl<S: AsyncWrite + Unpin> CoalescingStream<S> {
    /// Ready once the runtime has finished the turn in which the current
    /// flush was first asked for.
    fn poll_turn_end(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let turn = match &self.turn {
            Some(turn) => turn.clone(),
            None => {
                let turn = Arc::new(TurnEnd {
                    ended: AtomicBool::new(false),
                    waiter: Mutex::new(Some(cx.waker().clone())),
                });
                // `yield_now` hands its waker to the worker's deferred list on
                // its first poll (outside a runtime it wakes it at once).
                let waker = Waker::from(turn.clone());
                let mut yielded = pin!(tokio::task::yield_now());
                let _ = yielded.as_mut().poll(&mut Context::from_waker(&waker));
                self.turn = Some(turn.clone());
                turn
            }
        };
        if !turn.ended.load(Ordering::SeqCst) {
            *turn.waiter.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            // The turn may have ended between the check and the store, after
            // the waiter was taken: look again now that ours is in place.
            if !turn.ended.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        self.turn = None;
        Poll::Ready(())
    }

    /// Writes everything pending to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `incoming` bytes: writes the pending ones out first if
    /// holding them all would pass [`HOLD_LIMIT`]. Ready(true) when the
    /// caller should write its bytes straight through (nothing pending and
    /// they alone pass the limit).
    fn poll_room(&mut self, cx: &mut Context<'_>, incoming: usize) -> Poll<io::Result<bool>> {
        if self.pending.len() + incoming > HOLD_LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        let through = incoming >= HOLD_LIMIT;
        if !through && self.pending.capacity() == 0 {
            self.pending.reserve(incoming.max(FIRST_CAPACITY));
        }
        Poll::Ready(Ok(through))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CoalescingStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if ready!(this.poll_room(cx, buf.len()))? {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if ready!(this.poll_room(cx, total))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for buf in bufs {
            this.pending.extend_from_slice(buf);
        }
        Poll::Ready(Ok(total))
    }

    /// False, although vectored writes are accepted: HTTP/2 (h2) decides by this how to
    /// buffer a DATA frame. Told true, it keeps every frame of 256 bytes or more (a route
    /// delta, a `Resolve` answer) aside to write it from its own buffer, and accepts no
    /// other frame until a flush has written that one; since a flush here waits for the
    /// end of the runtime's turn, a connection then sent one such message a turn (10,000
    /// watch streams on 100 connections took about 5,000 writes a change). Told false, it
    /// copies frames under 1 KiB into its 16 KiB buffer, so a turn's messages on a
    /// connection go out together. Everything is copied into `pending` here anyway, so
    /// the copy h2 makes is all it costs.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.written < this.pending.len() {
            ready!(this.poll_turn_end(cx));
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CoalescingStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: Connected> Connected for CoalescingStream<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// An inner stream that records each write it is given and takes at most
    /// `max_write` bytes of it.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        max_write: usize,
        flushes: usize,
        shut: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = buf.len().min(this.max_write.max(1));
            this.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    fn recorder(max_write: usize) -> CoalescingStream<Recorder> {
        CoalescingStream::new(Recorder {
            max_write,
            ..Recorder::default()
        })
    }

    fn written(stream: &CoalescingStream<Recorder>) -> Vec<u8> {
        stream.inner.writes.concat()
    }

    #[tokio::test]
    async fn flushes_asked_for_in_one_turn_go_out_in_one_write() {
        let mut stream = recorder(usize::MAX);
        poll_fn(|cx| {
            let mut s = Pin::new(&mut stream);
            assert!(matches!(
                s.as_mut().poll_write(cx, b"first"),
                Poll::Ready(Ok(5))
            ));
            assert!(
                s.as_mut().poll_flush(cx).is_pending(),
                "the turn has not ended"
            );
            assert!(matches!(
                s.as_mut().poll_write(cx, b"second"),
                Poll::Ready(Ok(6))
            ));
            assert!(
                s.as_mut().poll_flush(cx).is_pending(),
                "still the same turn"
            );
            Poll::Ready(())
        })
        .await;
        assert!(stream.inner.writes.is_empty(), "nothing written mid-turn");
        // Awaiting the flush lets the runtime end its turn.
        tokio::io::AsyncWriteExt::flush(&mut stream).await.unwrap();
        assert_eq!(stream.inner.writes, vec![b"firstsecond".to_vec()]);
        assert_eq!(stream.inner.flushes, 1);
    }

    #[tokio::test]
    async fn the_task_is_woken_when_the_turn_ends() {
        let mut stream = recorder(usize::MAX);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            tokio::io::AsyncWriteExt::write_all(&mut stream, b"reply")
                .await
                .unwrap();
            tokio::io::AsyncWriteExt::flush(&mut stream).await.unwrap();
            tx.send(()).unwrap();
            stream
        });
        rx.await.unwrap();
        let stream = task.await.unwrap();
        assert_eq!(written(&stream), b"reply");
    }

    #[tokio::test]
    async fn a_burst_past_the_limit_is_written_without_waiting() {
        let mut stream = recorder(usize::MAX);
        let chunk = vec![7u8; HOLD_LIMIT / 2 + 1];
        poll_fn(|cx| {
            let mut s = Pin::new(&mut stream);
            assert!(s.as_mut().poll_write(cx, &chunk).is_ready());
            assert!(s.as_mut().poll_write(cx, &chunk).is_ready());
            Poll::Ready(())
        })
        .await;
        assert_eq!(stream.inner.writes.len(), 1, "the first chunk went out");
        assert_eq!(stream.pending.len(), chunk.len(), "the second is held");
        let big = vec![9u8; HOLD_LIMIT];
        tokio::io::AsyncWriteExt::write_all(&mut stream, &big)
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::flush(&mut stream).await.unwrap();
        assert_eq!(written(&stream), [&chunk[..], &chunk, &big].concat());
        assert_eq!(stream.pending.capacity(), 0, "nothing held once written");
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_held() {
        let mut stream = recorder(3);
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"goodbye")
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut stream)
            .await
            .unwrap();
        assert_eq!(written(&stream), b"goodbye");
        assert!(stream.inner.shut);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the writes, partial writes below and flushes, the bytes
        /// come out whole and in order.
        #[test]
        fn bytes_come_out_whole_and_in_order(
            max_write in 300usize..5000,
            steps in proptest::collection::vec(
                (proptest::collection::vec(proptest::num::u8::ANY, 0..30_000), proptest::bool::ANY),
                1..12,
            ),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (stream, expected) = runtime.block_on(async move {
                use tokio::io::AsyncWriteExt;
                let mut stream = recorder(max_write);
                let mut expected = Vec::new();
                for (bytes, flush) in steps {
                    let slices = bytes.chunks(7000).map(IoSlice::new).collect::<Vec<_>>();
                    let mut done = 0;
                    while done < bytes.len() {
                        done += if done == 0 {
                            stream.write_vectored(&slices).await.unwrap()
                        } else {
                            stream.write(&bytes[done..]).await.unwrap()
                        };
                    }
                    expected.extend_from_slice(&bytes);
                    if flush {
                        stream.flush().await.unwrap();
                        proptest::prop_assert_eq!(written(&stream).len(), expected.len());
                    }
                }
                stream.flush().await.unwrap();
                Ok((stream, expected))
            })?;
            proptest::prop_assert_eq!(written(&stream), expected);
            proptest::prop_assert!(stream.pending.is_empty());
        }
    }
}
