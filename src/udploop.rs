//! The shape every `tc` daemon loop shares (alarm listener, agent, session): one UDP socket and
//! the signals as sources of one mio poll, with named tokens, plus a waker for worker threads.

use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::UdpSocket;
use mio::{Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;

use crate::error::{Error, Result};

pub const SOCKET: Token = Token(0);
pub const SIGNALS: Token = Token(1);
pub const WAKER: Token = Token(2);

pub struct Loop {
    pub poll: Poll,
    pub sock: UdpSocket,
    pub signals: Signals,
}

/// Bind `listen` (with a receive buffer sized for bursts) and register it and `signals`.
pub fn open(listen: SocketAddr, signals: &[i32]) -> Result<Loop> {
    let mut sock = crate::alarm::listen::bind(listen)?;
    let poll = Poll::new().map_err(|e| Error::failed(format!("poll: {e}")))?;
    let mut sigs = Signals::new(signals).map_err(|e| Error::failed(format!("signals: {e}")))?;
    let reg = |e: std::io::Error| Error::failed(format!("poll registration: {e}"));
    poll.registry()
        .register(&mut sock, SOCKET, Interest::READABLE)
        .map_err(reg)?;
    poll.registry()
        .register(&mut sigs, SIGNALS, Interest::READABLE)
        .map_err(reg)?;
    Ok(Loop {
        poll,
        sock,
        signals: sigs,
    })
}

impl Loop {
    /// Wakes the poll from a worker thread that has a result to hand back.
    pub fn waker(&self) -> Result<Arc<Waker>> {
        Waker::new(self.poll.registry(), WAKER)
            .map(Arc::new)
            .map_err(|e| Error::failed(format!("waker: {e}")))
    }
}
