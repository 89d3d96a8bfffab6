//! The one loop every `tc` daemon runs (the agent, the session, the alarm listener): one mio
//! poll over a UDP socket, the signals and a waker for worker threads. The daemon itself is a
//! [`Driver`]: it says what a datagram, a signal and a turn mean and when it must wake next;
//! this module does the system calls.
//!
//! Invariants:
//! - the poll timeout is the driver's next wake-up (none: wait for an event);
//! - a readable socket is drained until `WouldBlock`, or until the drain budget is spent, in
//!   which case the next poll does not wait (the socket is edge-triggered: no new event would
//!   come for what is already queued);
//! - `EINTR` from poll or receive is "not ready yet", never an error;
//! - every turn ends with `Driver::turn`, whatever woke the loop, so timers and worker results
//!   are never starved by a busy socket;
//! - an event for a token this module did not register is a bug: it is logged, once.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;

use crate::error::{Error, Result};

const SOCKET: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);

/// Datagrams read between two looks at the clock while draining: the clock is cheap, but not
/// free at a million datagrams a second.
const CLOCK_EVERY: u32 = 32;

/// Whether the loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// What a daemon does with what the loop hands it.
pub trait Driver {
    /// One datagram. `Stop` ends the loop at once (the rest of the socket stays unread).
    fn datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Flow;
    /// One of the signals given to [`Daemon::open`].
    fn signal(&mut self, now: Instant, signal: i32) -> Flow;
    /// Once per turn, after the socket and the signals: worker results, timers, flushing.
    fn turn(&mut self, now: Instant) -> Flow;
    /// When the loop must wake if nothing arrives (None: only an event wakes it).
    fn next_wake(&self, now: Instant) -> Option<Instant>;
}

pub struct Daemon {
    poll: Poll,
    sock: Arc<UdpSocket>,
    signals: Signals,
    waker: Arc<Waker>,
    events: Events,
    buf: Vec<u8>,
    drain_budget: Option<Duration>,
    /// The last drain stopped on its budget: datagrams may be waiting.
    more: bool,
    unknown_token_logged: bool,
}

impl Daemon {
    /// Bind `listen` (with a receive buffer sized for bursts) and watch it and `signals`.
    pub fn open(listen: SocketAddr, signals: &[i32]) -> Result<Daemon> {
        let mut sock = bind(listen)?;
        let poll = Poll::new().map_err(|e| Error::failed(format!("poll: {e}")))?;
        let mut sigs = Signals::new(signals).map_err(|e| Error::failed(format!("signals: {e}")))?;
        let reg = |e: std::io::Error| Error::failed(format!("poll registration: {e}"));
        poll.registry()
            .register(&mut sock, SOCKET, Interest::READABLE)
            .map_err(reg)?;
        poll.registry()
            .register(&mut sigs, SIGNALS, Interest::READABLE)
            .map_err(reg)?;
        let waker = Waker::new(poll.registry(), WAKER)
            .map(Arc::new)
            .map_err(|e| Error::failed(format!("waker: {e}")))?;
        Ok(Daemon {
            poll,
            sock: Arc::new(sock),
            signals: sigs,
            waker,
            events: Events::with_capacity(256),
            buf: vec![0u8; 65_536],
            drain_budget: None,
            more: false,
            unknown_token_logged: false,
        })
    }

    /// Read datagrams for at most this long per turn, so that finished work is handed back
    /// while a flood arrives (the agent: a CAPTURE costs a tcpdump spawn).
    pub fn with_drain_budget(mut self, budget: Duration) -> Daemon {
        self.drain_budget = Some(budget);
        self
    }

    /// The socket, to send from (the agent answers, the session requests, from it).
    pub fn socket(&self) -> Arc<UdpSocket> {
        Arc::clone(&self.sock)
    }

    /// Wakes the loop from a worker thread that has a result to hand back.
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    pub fn local_addr(&self) -> String {
        self.sock
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// Runs the driver until it says `Stop`.
    pub fn run(&mut self, d: &mut impl Driver) -> Result<()> {
        loop {
            let now = Instant::now();
            let timeout = if self.more {
                Some(Duration::ZERO)
            } else {
                d.next_wake(now).map(|w| w.saturating_duration_since(now))
            };
            let mut readable = std::mem::take(&mut self.more);
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => self.events.clear(),
                Err(e) => return Err(Error::failed(format!("poll: {e}"))),
            }
            let mut signalled = Vec::new();
            for ev in self.events.iter() {
                match ev.token() {
                    SOCKET => readable = true,
                    SIGNALS => signalled.extend(self.signals.pending()),
                    WAKER => {}
                    other => {
                        if !self.unknown_token_logged {
                            log::error!("poll: an event for unknown token {other:?} (a bug)");
                            self.unknown_token_logged = true;
                        }
                    }
                }
            }
            for sig in signalled {
                if d.signal(Instant::now(), sig) == Flow::Stop {
                    return Ok(());
                }
            }
            if readable && self.drain(d) == Flow::Stop {
                return Ok(());
            }
            if d.turn(Instant::now()) == Flow::Stop {
                return Ok(());
            }
        }
    }

    fn drain(&mut self, d: &mut impl Driver) -> Flow {
        let mut now = Instant::now();
        let until = self.drain_budget.map(|b| now + b);
        let mut n = 0u32;
        loop {
            n += 1;
            if n % CLOCK_EVERY == 0 {
                now = Instant::now();
                if until.is_some_and(|u| now >= u) {
                    self.more = true;
                    return Flow::Continue;
                }
            }
            match self.sock.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    if d.datagram(now, from, &self.buf[..len]) == Flow::Stop {
                        // What is left is read by the next `run`, without an event.
                        self.more = true;
                        return Flow::Stop;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Flow::Continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors for earlier sends surface here; they are not fatal, and the
                    // datagrams behind them are read next turn.
                    log::debug!("receive: {e}");
                    self.more = true;
                    return Flow::Continue;
                }
            }
        }
    }
}

/// Ask for a receive buffer that absorbs bursts (as root beyond rmem_max).
fn grow_receive_buffer(sock: &UdpSocket, bytes: usize) {
    use std::os::fd::AsFd;
    let fd = sock.as_fd();
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(fd, bytes).is_err()
        && rustix::net::sockopt::set_socket_recv_buffer_size(fd, bytes).is_err()
    {
        log::info!("could not enlarge the UDP receive buffer");
    }
}

pub fn bind(addr: SocketAddr) -> Result<UdpSocket> {
    let sock = UdpSocket::bind(addr).map_err(|e| {
        let hint = if e.kind() == ErrorKind::AddrInUse {
            " (another listener, or an agent, owns it)"
        } else {
            ""
        };
        Error::usage(format!("binding UDP {addr}: {e}{hint}"))
    })?;
    grow_receive_buffer(&sock, 8 << 20);
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use signal_hook::consts::SIGUSR2;

    /// Records what the loop hands it; stops as told.
    #[derive(Default)]
    struct Fake {
        datagrams: Vec<Vec<u8>>,
        signals: Vec<i32>,
        turns: u32,
        stop_after_datagrams: Option<usize>,
        stop_after_turns: Option<u32>,
        wake: Option<Instant>,
    }

    impl Driver for Fake {
        fn datagram(&mut self, _: Instant, _: SocketAddr, data: &[u8]) -> Flow {
            self.datagrams.push(data.to_vec());
            match self.stop_after_datagrams {
                Some(n) if self.datagrams.len() >= n => Flow::Stop,
                _ => Flow::Continue,
            }
        }
        fn signal(&mut self, _: Instant, signal: i32) -> Flow {
            self.signals.push(signal);
            Flow::Stop
        }
        fn turn(&mut self, _: Instant) -> Flow {
            self.turns += 1;
            match self.stop_after_turns {
                Some(n) if self.turns >= n => Flow::Stop,
                _ => Flow::Continue,
            }
        }
        fn next_wake(&self, _: Instant) -> Option<Instant> {
            self.wake
        }
    }

    /// Only the signal test listens for a signal: signal-hook hands a signal to every listener
    /// of the process, and the tests run side by side.
    fn open() -> Daemon {
        Daemon::open("127.0.0.1:0".parse().unwrap(), &[]).unwrap()
    }

    fn send(to: &Daemon, n: usize) {
        let to = to.sock.local_addr().unwrap();
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..n {
            s.send_to(format!("d{i}").as_bytes(), to).unwrap();
        }
    }

    #[test]
    fn every_datagram_in_order_then_stop_ends_the_loop_at_once() {
        let mut d = open();
        send(&d, 100);
        let mut f = Fake {
            stop_after_datagrams: Some(60),
            ..Fake::default()
        };
        d.run(&mut f).unwrap();
        assert_eq!(f.datagrams.len(), 60);
        assert_eq!(f.datagrams[59], b"d59");
        assert_eq!(f.turns, 0, "Stop from a datagram skips the turn");
        // The rest are still there for the next run.
        let mut g = Fake {
            stop_after_datagrams: Some(40),
            ..Fake::default()
        };
        d.run(&mut g).unwrap();
        assert_eq!(g.datagrams.first().map(Vec::as_slice), Some(&b"d60"[..]));
    }

    #[test]
    fn a_spent_drain_budget_hands_over_a_turn_and_reads_on_without_waiting() {
        let mut d = open().with_drain_budget(Duration::ZERO);
        send(&d, 200);
        let mut f = Fake {
            stop_after_datagrams: Some(200),
            // Without the `more` flag the loop would wait here for an event that never comes.
            wake: None,
            ..Fake::default()
        };
        d.run(&mut f).unwrap();
        assert_eq!(f.datagrams.len(), 200);
        // A zero budget is checked every CLOCK_EVERY datagrams: one turn per batch.
        assert!(f.turns >= 200 / CLOCK_EVERY - 1, "{} turns", f.turns);
    }

    #[test]
    fn the_drivers_deadline_wakes_the_loop_for_a_turn() {
        let mut d = open();
        let mut f = Fake {
            wake: Some(Instant::now()),
            stop_after_turns: Some(3),
            ..Fake::default()
        };
        d.run(&mut f).unwrap();
        assert_eq!((f.turns, f.datagrams.len()), (3, 0));
    }

    #[test]
    fn a_waker_from_another_thread_gives_a_turn() {
        let mut d = open();
        let w = d.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.wake().unwrap();
        });
        let mut f = Fake {
            stop_after_turns: Some(1),
            ..Fake::default()
        };
        d.run(&mut f).unwrap();
        t.join().unwrap();
        assert_eq!(f.turns, 1);
    }

    #[test]
    fn a_signal_reaches_the_driver() {
        let mut d = Daemon::open("127.0.0.1:0".parse().unwrap(), &[SIGUSR2]).unwrap();
        let t = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            signal_hook::low_level::raise(SIGUSR2).unwrap();
        });
        let mut f = Fake::default();
        d.run(&mut f).unwrap();
        t.join().unwrap();
        assert_eq!(f.signals, [SIGUSR2]);
    }
}
