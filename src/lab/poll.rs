//! The emulated OVOC's polling (`tc lab up --wan`): a real OVOC polls each device it manages
//! over SNMP and raises "Connection Lost" after a number of polls go unanswered, "Connection
//! established" once one is answered again. The lab's WAN faults are noticed the same way, so a
//! rehearsal's alarm comes from the fault, not from a script.
//!
//! The poll is an SNMPv3 engine discovery (RFC 3414 §4): it needs no credentials, so the lab's
//! OVOC polls without knowing the users the session provisions, and every snmpd answers it with
//! a Report. Pure core (`Poller`, `discovery_request`), thin shell (`start`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct PollConfig {
    pub interval: Duration,
    /// Unanswered polls in a row that make the connection lost.
    pub misses: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Lost { device: Ipv4Addr, missed: u32 },
    Established { device: Ipv4Addr },
}

#[derive(Debug, Default)]
struct Dev {
    missed: u32,
    lost: bool,
    answered: bool,
}

pub struct Poller {
    devices: Vec<Ipv4Addr>,
    state: HashMap<Ipv4Addr, Dev>,
    cfg: PollConfig,
    next: Option<Instant>,
}

impl Poller {
    pub fn new(devices: Vec<Ipv4Addr>, cfg: PollConfig) -> Poller {
        let state = devices.iter().map(|d| (*d, Dev::default())).collect();
        Poller {
            devices,
            state,
            cfg,
            next: None,
        }
    }

    /// A round is due at `now`: the round that ended is judged (no answer since the last poll
    /// is one more miss), then a new one starts. The first call only starts one.
    pub fn round(&mut self, now: Instant) -> Vec<Change> {
        let first = self.next.is_none();
        self.next = Some(now + self.cfg.interval);
        let mut changes = Vec::new();
        for device in &self.devices {
            let d = self
                .state
                .get_mut(device)
                .expect("every device has a state");
            let answered = std::mem::take(&mut d.answered);
            if first {
                continue;
            }
            if answered {
                d.missed = 0;
                if std::mem::take(&mut d.lost) {
                    changes.push(Change::Established { device: *device });
                }
                continue;
            }
            d.missed += 1;
            if d.missed >= self.cfg.misses && !d.lost {
                d.lost = true;
                changes.push(Change::Lost {
                    device: *device,
                    missed: d.missed,
                });
            }
        }
        changes
    }

    /// An answer from `from`; addresses not polled are ignored.
    pub fn answer(&mut self, from: Ipv4Addr) {
        if let Some(d) = self.state.get_mut(&from) {
            d.answered = true;
        }
    }

    pub fn next_round(&self) -> Option<Instant> {
        self.next
    }

    pub fn devices(&self) -> &[Ipv4Addr] {
        &self.devices
    }
}

/// BER: tag, definite length, contents.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A non-negative INTEGER, minimal (a leading 0 when the high bit would make it negative).
fn integer(v: u32) -> Vec<u8> {
    let mut b: Vec<u8> = v
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    if b.first().is_none_or(|x| x & 0x80 != 0) {
        b.insert(0, 0);
    }
    tlv(0x02, &b)
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// An SNMPv3 engine-discovery GetRequest: noAuthNoPriv, reportable, empty user and engine.
pub fn discovery_request(msg_id: u32) -> Vec<u8> {
    let empty = || tlv(0x04, &[]);
    let usm = seq(&[empty(), integer(0), integer(0), empty(), empty(), empty()]);
    let global = seq(&[
        integer(msg_id),
        integer(65507),
        tlv(0x04, &[0x04]),
        integer(3),
    ]);
    let pdu = tlv(
        0xa0,
        &[integer(msg_id), integer(0), integer(0), seq(&[])].concat(),
    );
    let scoped = seq(&[empty(), empty(), pdu]);
    seq(&[integer(3), global, tlv(0x04, &usm), scoped])
}

/// The poller while it runs.
pub struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub type OnChange = Box<dyn Fn(&Change) + Send>;

/// Polls `devices` from `bind` every interval until stopped; `on_change` hears each change.
pub fn start(
    bind: Ipv4Addr,
    devices: Vec<Ipv4Addr>,
    cfg: PollConfig,
    on_change: OnChange,
) -> std::io::Result<Running> {
    let socket = UdpSocket::bind((bind, 0))?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("ovoc-poll".into())
        .spawn(move || run(&socket, Poller::new(devices, cfg), &flag, &on_change))?;
    Ok(Running {
        stop,
        thread: Some(thread),
    })
}

fn run(socket: &UdpSocket, mut p: Poller, stop: &AtomicBool, on_change: &OnChange) {
    let mut id: u32 = 1;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if p.next_round().is_none_or(|t| now >= t) {
            for c in p.round(now) {
                on_change(&c);
            }
            for d in p.devices().to_vec() {
                id = id.wrapping_add(1).max(1);
                // A router dropping the poll may answer with an error: a missed poll, no more.
                if let Err(e) = socket.send_to(&discovery_request(id), (d, 161)) {
                    log::debug!("lab OVOC poll of {d}: {e}");
                }
            }
        }
        match socket.recv_from(&mut buf) {
            Ok((_, SocketAddr::V4(from))) if from.port() == 161 => p.answer(*from.ip()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => log::debug!("lab OVOC poll: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
    const B: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);

    /// Rounds where each listed device answers; the changes of each round.
    fn script(rounds: &[&[Ipv4Addr]]) -> Vec<Vec<Change>> {
        let t = Instant::now();
        let mut p = Poller::new(
            vec![A, B],
            PollConfig {
                interval: Duration::from_secs(1),
                misses: 3,
            },
        );
        assert!(p.round(t).is_empty(), "the first round only starts");
        rounds
            .iter()
            .enumerate()
            .map(|(i, answering)| {
                for a in *answering {
                    p.answer(*a);
                }
                p.answer(Ipv4Addr::new(10, 9, 9, 9));
                let at = t + Duration::from_secs(i as u64 + 1);
                let c = p.round(at);
                assert_eq!(p.next_round(), Some(at + Duration::from_secs(1)));
                c
            })
            .collect()
    }

    #[test]
    fn misses_make_one_lost_and_an_answer_one_established() {
        let lost = |d| Change::Lost {
            device: d,
            missed: 3,
        };
        let none: Vec<Change> = vec![];
        type Case<'a> = (&'a str, Vec<&'a [Ipv4Addr]>, Vec<Vec<Change>>);
        let cases: Vec<Case> = vec![
            ("always answered", vec![&[A, B]; 4], vec![none.clone(); 4]),
            (
                "three misses, then more",
                vec![&[B], &[B], &[B], &[B], &[B]],
                vec![
                    none.clone(),
                    none.clone(),
                    vec![lost(A)],
                    none.clone(),
                    none.clone(),
                ],
            ),
            (
                "two misses and an answer",
                vec![&[B], &[B], &[A, B], &[B], &[B]],
                vec![none.clone(); 5],
            ),
            (
                "lost, then answered",
                vec![&[B], &[B], &[B], &[A, B], &[A, B]],
                vec![
                    none.clone(),
                    none.clone(),
                    vec![lost(A)],
                    vec![Change::Established { device: A }],
                    none.clone(),
                ],
            ),
            (
                "each device counted alone",
                vec![&[], &[], &[A], &[A]],
                vec![none.clone(), none.clone(), vec![lost(B)], none.clone()],
            ),
            (
                "both lost at once",
                vec![&[], &[], &[]],
                vec![none.clone(), none.clone(), vec![lost(A), lost(B)]],
            ),
        ];
        for (what, rounds, want) in cases {
            assert_eq!(script(&rounds), want, "{what}");
        }
    }

    #[test]
    fn the_discovery_request_is_minimal_ber() {
        let m = discovery_request(1);
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            0x30, 0x38,
              0x02, 0x01, 0x03,
              0x30, 0x0e, 0x02, 0x01, 0x01, 0x02, 0x03, 0x00, 0xff, 0xe3, 0x04, 0x01, 0x04,
                          0x02, 0x01, 0x03,
              0x04, 0x10, 0x30, 0x0e, 0x04, 0x00, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00,
                          0x04, 0x00, 0x04, 0x00, 0x04, 0x00,
              0x30, 0x11, 0x04, 0x00, 0x04, 0x00,
                0xa0, 0x0b, 0x02, 0x01, 0x01, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30, 0x00,
        ];
        assert_eq!(m, want);
        // A 32-bit id with the high bit set takes a leading zero: 5 content bytes.
        assert_eq!(
            integer(0x8000_0001),
            vec![0x02, 0x05, 0x00, 0x80, 0x00, 0x00, 0x01]
        );
        assert_eq!(integer(0), vec![0x02, 0x01, 0x00]);
        assert_eq!(discovery_request(0x8000_0001).len(), m.len() + 8);
        assert_eq!(tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
    }
}
