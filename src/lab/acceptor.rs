//! One thread accepting on many listeners (a lab has one per emulated device, thousands of
//! them), shared by the lab's HTTPS server and its SFTP cut proxy. Each accepted connection is
//! handed to `on_accept` with the index of its listener. Events are edge-triggered, so an accept
//! that fails (EMFILE, say) is retried after a pause rather than waiting for an event that will
//! not come again.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token, Waker};

const WAKER: Token = Token(usize::MAX);
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

pub struct Acceptor {
    name: &'static str,
    stop: Arc<AtomicBool>,
    waker: Waker,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    pub fn start(
        name: &'static str,
        mut listeners: Vec<mio::net::TcpListener>,
        mut on_accept: impl FnMut(usize, TcpStream, SocketAddr) + Send + 'static,
    ) -> io::Result<Acceptor> {
        let mut poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry().register(l, Token(i), Interest::READABLE)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("{name}-accept"))
            .spawn(move || {
                let mut events = Events::with_capacity(1024);
                let mut retry: Vec<usize> = Vec::new();
                loop {
                    let timeout = (!retry.is_empty()).then_some(ACCEPT_RETRY);
                    if let Err(e) = poll.poll(&mut events, timeout) {
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        log::error!("{name}: poll: {e}");
                        return;
                    }
                    if flag.load(Ordering::SeqCst) {
                        return;
                    }
                    let mut ready = std::mem::take(&mut retry);
                    ready.extend(
                        events
                            .iter()
                            .map(|e| e.token())
                            .filter(|t| *t != WAKER)
                            .map(|t| t.0),
                    );
                    ready.sort_unstable();
                    ready.dedup();
                    for i in ready {
                        let Some(l) = listeners.get(i) else { continue };
                        loop {
                            match l.accept() {
                                Ok((stream, peer)) => on_accept(i, TcpStream::from(stream), peer),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        io::ErrorKind::Interrupted
                                            | io::ErrorKind::ConnectionAborted
                                    ) => {}
                                Err(e) => {
                                    log::warn!("{name}: accept on {:?}: {e}", l.local_addr().ok());
                                    retry.push(i);
                                    break;
                                }
                            }
                        }
                    }
                }
            })?;
        Ok(Acceptor {
            name,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// Stops accepting and joins the accept thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            log::warn!("{}: waking the accept thread: {e}", self.name);
        }
        if thread.join().is_err() {
            log::error!("{}: the accept thread panicked", self.name);
        }
    }
}

impl Drop for Acceptor {
    // A forgotten handle must not leave listeners accepting behind the caller's back.
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
