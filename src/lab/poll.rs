//! The lab's OVOC polls its devices over SNMP. A real OVOC polls every managed device over SNMP
//! and raises "Connection Lost" itself after a number of missed polls, "Connection established"
//! when polls are answered again; the lab's WAN faults must be noticed the same way, by polls
//! going unanswered, not by the lab telling its OVOC what it broke.
//!
//! The poll is an SNMPv3 engine-discovery GetRequest (RFC 3414 §4): it needs no credentials, and
//! an agent answers it with a Report to anyone, so the lab's OVOC polls without knowing the
//! devices' SNMP users (which CLI scripts change under it). Any datagram from a device's address
//! and port 161 counts as an answer: whether the agent liked the request does not matter, only
//! that the path to it is up.
//!
//! `Poller` is the pure core (misses and changes as a function of answers and the time passed
//! in); `start` is the thin shell: one UDP socket, one thread, no decisions of its own.
//!
//! Invariants: a device is reported Lost once per outage and Established once per recovery, in
//! that order; changes come out of `round` only, in address order.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The SNMP agents' port: only datagrams from it count as answers.
pub const SNMP_PORT: u16 = 161;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollConfig {
    /// Time between two poll rounds.
    pub interval: Duration,
    /// Consecutive missed polls after which a device is Lost (0 acts as 1).
    pub misses: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Lost { device: Ipv4Addr, missed: u32 },
    Established { device: Ipv4Addr },
}

#[derive(Debug, Default, Clone, Copy)]
struct Device {
    /// Consecutive rounds that ended without an answer.
    missed: u32,
    lost: bool,
    /// An answer arrived since the last poll.
    answered: bool,
}

/// Poll state of every device, driven by the caller's clock.
#[derive(Debug)]
pub struct Poller {
    cfg: PollConfig,
    /// Ordered, so changes come out in the same order for the same inputs.
    devices: BTreeMap<Ipv4Addr, Device>,
    /// None until the first round has started.
    next: Option<Instant>,
}

impl Poller {
    pub fn new(devices: Vec<Ipv4Addr>, cfg: PollConfig) -> Poller {
        Poller {
            cfg,
            devices: devices
                .into_iter()
                .map(|d| (d, Device::default()))
                .collect(),
            next: None,
        }
    }

    /// A poll round is due at `now`: evaluate the round that just ended (a device that did not
    /// answer since the previous poll has missed one more; one that answered is back to 0
    /// missed), return the changes (Lost once when missed reaches cfg.misses, not again while
    /// still lost; Established once on the first answer after Lost), and start a new round. The
    /// very first call only starts a round (nothing to evaluate).
    pub fn round(&mut self, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        let first = self.next.is_none();
        let misses = self.cfg.misses.max(1);
        for (&addr, d) in &mut self.devices {
            // Answers before the first poll answered no poll of ours: they are dropped with it.
            if !first {
                if let Some(c) = evaluate(addr, d, misses) {
                    changes.push(c);
                }
            }
            d.answered = false;
        }
        // From `now`, not from the round's due time: a late round does not shorten the next.
        self.next = Some(now + self.cfg.interval);
        changes
    }

    /// An answer from `from` arrived (any SNMP datagram from a polled device's address and port
    /// 161 counts; unknown addresses are ignored).
    pub fn answer(&mut self, from: Ipv4Addr) {
        if let Some(d) = self.devices.get_mut(&from) {
            d.answered = true;
        }
    }

    /// When the next round is due; None before the first round, which is due at once.
    pub fn next_round(&self) -> Option<Instant> {
        self.next
    }

    /// The polled devices, in address order.
    pub fn devices(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.devices.keys().copied()
    }
}

/// One device at the end of a round.
fn evaluate(addr: Ipv4Addr, d: &mut Device, misses: u32) -> Option<Change> {
    if d.answered {
        d.missed = 0;
        let was_lost = std::mem::replace(&mut d.lost, false);
        return was_lost.then_some(Change::Established { device: addr });
    }
    d.missed = d.missed.saturating_add(1);
    if d.lost || d.missed < misses {
        return None;
    }
    d.lost = true;
    Some(Change::Lost {
        device: addr,
        missed: d.missed,
    })
}

/// The id after `id`, within 1..=i32::MAX: RFC 3412 bounds msgID to 0..2^31-1 and the
/// request-id is an Integer32, so larger ids would be out of range for the agent.
fn next_id(id: u32) -> u32 {
    if id >= i32::MAX as u32 {
        1
    } else {
        id + 1
    }
}

// BER (X.690) tags used by the request.
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const SEQUENCE: u8 = 0x30;
const GET_REQUEST: u8 = 0xA0;

/// BER definite length: short form below 128, else 0x80|n followed by n big-endian bytes.
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

fn constructed(tag: u8, parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

/// A non-negative INTEGER in the fewest bytes, with a leading 0x00 when the high bit is set (it
/// would otherwise read as negative).
fn integer(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    // Keep at least the last byte, so 0 is one 0x00.
    let skip = bytes[..7].iter().take_while(|b| **b == 0).count();
    let mut content = Vec::with_capacity(9);
    if bytes[skip] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(&bytes[skip..]);
    tlv(INTEGER, &content)
}

fn octets(b: &[u8]) -> Vec<u8> {
    tlv(OCTET_STRING, b)
}

/// An SNMPv3 engine-discovery GetRequest (RFC 3414 §4): noAuthNoPriv, reportable, empty
/// engine ID and user, no varbinds. An agent answers it with a Report (usmStatsUnknownEngineIDs)
/// without checking any credentials. `msg_id` is both msgID and request-id; keep it within
/// 0..=i32::MAX (RFC 3412's range), though any u32 is encoded.
pub fn discovery_request(msg_id: u32) -> Vec<u8> {
    let id = u64::from(msg_id);
    let global = constructed(
        SEQUENCE,
        &[
            integer(id),
            integer(65507),  // msgMaxSize: the largest UDP payload over IPv4
            octets(&[0x04]), // msgFlags: reportable, noAuthNoPriv
            integer(3),      // msgSecurityModel: USM
        ],
    );
    let usm = constructed(
        SEQUENCE,
        &[
            octets(b""), // msgAuthoritativeEngineID: unknown, which is what asks for it
            integer(0),  // msgAuthoritativeEngineBoots
            integer(0),  // msgAuthoritativeEngineTime
            octets(b""), // msgUserName
            octets(b""), // msgAuthenticationParameters
            octets(b""), // msgPrivacyParameters
        ],
    );
    let pdu = constructed(
        GET_REQUEST,
        &[
            integer(id),
            integer(0), // error-status
            integer(0), // error-index
            constructed(SEQUENCE, &[]),
        ],
    );
    let scoped = constructed(SEQUENCE, &[octets(b""), octets(b""), pdu]);
    constructed(SEQUENCE, &[integer(3), global, octets(&usm), scoped])
}

/// How long one receive waits: bounds how late a round starts and how long `stop` takes.
const READ_TIMEOUT: Duration = Duration::from_millis(50);

/// The polling thread; stopped by `stop` or when dropped.
pub struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Sets the flag and joins the thread (within about one read timeout).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Polls `devices` from one UDP socket on (`bind`, any port) in a thread, calling `on_change`
/// for every change. Fails only if the socket cannot be set up.
pub fn start(
    bind: Ipv4Addr,
    devices: Vec<Ipv4Addr>,
    cfg: PollConfig,
    on_change: Box<dyn Fn(&Change) + Send>,
) -> std::io::Result<Running> {
    let sock = UdpSocket::bind(SocketAddrV4::new(bind, 0))?;
    sock.set_read_timeout(Some(READ_TIMEOUT))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let poller = Poller::new(devices, cfg);
    let thread = std::thread::Builder::new()
        .name("lab-poll".into())
        .spawn(move || run(&sock, poller, &flag, &*on_change))?;
    Ok(Running {
        stop,
        thread: Some(thread),
    })
}

/// The loop: a round when one is due, else one receive; the flag is seen at least every
/// READ_TIMEOUT.
fn run(sock: &UdpSocket, mut poller: Poller, stop: &AtomicBool, on_change: &dyn Fn(&Change)) {
    let mut id = 0;
    let mut buf = [0u8; 2048];
    // This round's polls: an answer counts only from the device polled with its msgID, so a
    // stray or late datagram (a previous round's) proves nothing.
    let mut sent: HashMap<u32, Ipv4Addr> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if poller.next_round().is_none_or(|due| now >= due) {
            for c in poller.round(now) {
                on_change(&c);
            }
            sent.clear();
            let devices: Vec<Ipv4Addr> = poller.devices().collect();
            for device in devices {
                id = next_id(id);
                sent.insert(id, device);
                send(sock, device, id);
            }
        }
        if let Some((from, n)) = receive(sock, &mut buf) {
            if reply_msg_id(&buf[..n]).and_then(|m| sent.get(&m)) == Some(&from) {
                poller.answer(from);
            }
        }
    }
}

/// BER: (tag, contents, what follows), definite lengths of up to 4 bytes only.
fn read_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, b| a << 8 | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The msgID of an SNMPv3 message (`SEQUENCE { INTEGER 3, SEQUENCE { INTEGER msgID, ... } ...`),
/// if `b` is one.
pub fn reply_msg_id(b: &[u8]) -> Option<u32> {
    let (SEQUENCE, msg, _) = read_tlv(b)? else {
        return None;
    };
    let (INTEGER, [3], rest) = read_tlv(msg)? else {
        return None;
    };
    let (SEQUENCE, global, _) = read_tlv(rest)? else {
        return None;
    };
    let (INTEGER, id, _) = read_tlv(global)? else {
        return None;
    };
    if id.is_empty() || id.len() > 5 || (id.len() == 5 && id[0] != 0) {
        return None;
    }
    u32::try_from(id.iter().fold(0u64, |a, b| a << 8 | u64::from(*b))).ok()
}

fn send(sock: &UdpSocket, device: Ipv4Addr, id: u32) {
    let to = SocketAddrV4::new(device, SNMP_PORT);
    // A dropped route (EHOSTUNREACH, EPERM from a firewall) is a fault being rehearsed: the
    // missed poll is how it is noticed, so the send error itself only goes to the log.
    if let Err(e) = sock.send_to(&discovery_request(id), to) {
        log::debug!("lab poll: send to {to}: {e}");
    }
}

/// One datagram's source and length if it came from an SNMP port; None on timeout or anything
/// else.
fn receive(sock: &UdpSocket, buf: &mut [u8]) -> Option<(Ipv4Addr, usize)> {
    match sock.recv_from(buf) {
        Ok((n, SocketAddr::V4(src))) if src.port() == SNMP_PORT => Some((*src.ip(), n)),
        Ok(_) => None,
        Err(e) => {
            use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
            if !matches!(e.kind(), WouldBlock | TimedOut | Interrupted) {
                log::debug!("lab poll: receive: {e}");
                // Not a timeout, so it did not wait: wait here, or a lasting error would spin.
                std::thread::sleep(READ_TIMEOUT);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);
    const B: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 2);
    const UNKNOWN: Ipv4Addr = Ipv4Addr::new(127, 0, 9, 9);
    const SEC: Duration = Duration::from_secs(1);

    fn lost(device: Ipv4Addr, missed: u32) -> Change {
        Change::Lost { device, missed }
    }

    fn established(device: Ipv4Addr) -> Change {
        Change::Established { device }
    }

    /// Starts a round at t0, then for each entry of `rounds` feeds its answers and evaluates the
    /// round one interval later: the changes, each with the number of its evaluated round
    /// (1-based).
    fn simulate(devices: &[Ipv4Addr], misses: u32, rounds: &[&[Ipv4Addr]]) -> Vec<(usize, Change)> {
        let cfg = PollConfig {
            interval: SEC,
            misses,
        };
        let mut p = Poller::new(devices.to_vec(), cfg);
        let t0 = Instant::now();
        assert_eq!(p.round(t0), [], "the first round only starts");
        let mut out = Vec::new();
        for (i, answers) in rounds.iter().enumerate() {
            for a in *answers {
                p.answer(*a);
            }
            let n = i + 1;
            out.extend(p.round(t0 + SEC * n as u32).into_iter().map(|c| (n, c)));
        }
        out
    }

    /// Name, devices, misses, who answers in each round, the changes wanted.
    type Row<'a> = (
        &'a str,
        &'a [Ipv4Addr],
        u32,
        Vec<&'a [Ipv4Addr]>,
        Vec<(usize, Change)>,
    );

    #[test]
    fn poller_changes() {
        let none: &[Ipv4Addr] = &[];
        let cases: &[Row] = &[
            ("always answering", &[A], 3, vec![&[A]; 6], vec![]),
            (
                "3 misses: one Lost at the 3rd round, none after",
                &[A],
                3,
                vec![none; 8],
                vec![(3, lost(A, 3))],
            ),
            (
                "answer after lost: one Established",
                &[A],
                3,
                vec![none, none, none, none, &[A], &[A], &[A]],
                vec![(3, lost(A, 3)), (5, established(A))],
            ),
            (
                "2 misses then an answer: nothing",
                &[A],
                3,
                vec![none, none, &[A], none, none, &[A]],
                vec![],
            ),
            (
                "lost again after recovering",
                &[A],
                2,
                vec![none, none, &[A], none, none],
                vec![(2, lost(A, 2)), (3, established(A)), (5, lost(A, 2))],
            ),
            (
                "misses counted per device",
                &[A, B],
                3,
                vec![&[B], &[B], &[B], &[A], &[A], &[A], &[A, B]],
                vec![
                    (3, lost(A, 3)),
                    (4, established(A)),
                    (6, lost(B, 3)),
                    (7, established(B)),
                ],
            ),
            (
                "an unknown address is ignored",
                &[A],
                3,
                vec![&[UNKNOWN]; 4],
                vec![(3, lost(A, 3))],
            ),
            (
                "misses 1: the first miss",
                &[A],
                1,
                vec![none, &[A]],
                vec![(1, lost(A, 1)), (2, established(A))],
            ),
            (
                "misses 0 acts as 1",
                &[A],
                0,
                vec![none, none],
                vec![(1, lost(A, 1))],
            ),
            ("no devices", &[], 3, vec![none; 4], vec![]),
        ];
        for (name, devices, misses, rounds, want) in cases {
            assert_eq!(&simulate(devices, *misses, rounds), want, "{name}");
        }
    }

    #[test]
    fn poller_ignores_answers_before_the_first_poll() {
        let cfg = PollConfig {
            interval: SEC,
            misses: 1,
        };
        let mut p = Poller::new(vec![A], cfg);
        let t0 = Instant::now();
        p.answer(A);
        assert_eq!(p.round(t0), []);
        assert_eq!(p.round(t0 + SEC), [lost(A, 1)]);
    }

    #[test]
    fn poller_schedules_rounds_from_when_they_ran() {
        let cfg = PollConfig {
            interval: SEC,
            misses: 3,
        };
        let mut p = Poller::new(vec![B, A, A], cfg);
        assert_eq!(p.next_round(), None, "due at once");
        let t0 = Instant::now();
        p.round(t0);
        assert_eq!(p.next_round(), Some(t0 + SEC));
        let late = t0 + SEC + Duration::from_millis(300);
        p.round(late);
        assert_eq!(p.next_round(), Some(late + SEC));
        assert_eq!(
            p.devices().collect::<Vec<_>>(),
            [A, B],
            "deduplicated, ordered"
        );
    }

    #[test]
    fn ids_stay_in_snmp_range() {
        for (id, next) in [
            (0, 1),
            (1, 2),
            (0x7FFF_FFFE, 0x7FFF_FFFF),
            (0x7FFF_FFFF, 1),
            (u32::MAX, 1),
        ] {
            assert_eq!(next_id(id), next, "{id:#x}");
        }
    }

    #[test]
    fn ber_integers_are_minimal_and_non_negative() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x02, 0x01, 0x00]),
            (1, &[0x02, 0x01, 0x01]),
            (0x7F, &[0x02, 0x01, 0x7F]),
            (0x80, &[0x02, 0x02, 0x00, 0x80]),
            (0xFF, &[0x02, 0x02, 0x00, 0xFF]),
            (0x100, &[0x02, 0x02, 0x01, 0x00]),
            (65507, &[0x02, 0x03, 0x00, 0xFF, 0xE3]),
            (0x7FFF_FFFF, &[0x02, 0x04, 0x7F, 0xFF, 0xFF, 0xFF]),
            (0x8000_0001, &[0x02, 0x05, 0x00, 0x80, 0x00, 0x00, 0x01]),
            (
                u64::MAX,
                &[
                    0x02, 0x09, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                ],
            ),
        ];
        for (n, want) in cases {
            assert_eq!(integer(*n), *want, "{n:#x}");
        }
    }

    #[test]
    fn ber_lengths() {
        let cases: &[(usize, &[u8])] = &[
            (0, &[0x00]),
            (0x7F, &[0x7F]),
            (0x80, &[0x81, 0x80]),
            (0xFF, &[0x81, 0xFF]),
            (0x100, &[0x82, 0x01, 0x00]),
            (65507, &[0x82, 0xFF, 0xE3]),
        ];
        for (len, want) in cases {
            let mut out = Vec::new();
            push_len(&mut out, *len);
            assert_eq!(out, *want, "{len}");
        }
    }

    /// Derived by hand from RFC 3412 §6 and RFC 3414 §2.4, not from the encoder.
    #[test]
    fn discovery_request_for_id_1_byte_for_byte() {
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x30, 0x38,                                     // SNMPv3Message, 56 bytes
              0x02, 0x01, 0x03,                             // msgVersion 3
              0x30, 0x0E,                                   // msgGlobalData, 14 bytes
                0x02, 0x01, 0x01,                           // msgID 1
                0x02, 0x03, 0x00, 0xFF, 0xE3,               // msgMaxSize 65507
                0x04, 0x01, 0x04,                           // msgFlags: reportable
                0x02, 0x01, 0x03,                           // msgSecurityModel: USM
              0x04, 0x10,                                   // msgSecurityParameters, 16 bytes
                0x30, 0x0E,                                 // UsmSecurityParameters, 14 bytes
                  0x04, 0x00,                               // engine ID ""
                  0x02, 0x01, 0x00,                         // boots 0
                  0x02, 0x01, 0x00,                         // time 0
                  0x04, 0x00,                               // user name ""
                  0x04, 0x00,                               // auth params ""
                  0x04, 0x00,                               // priv params ""
              0x30, 0x11,                                   // ScopedPDU, 17 bytes
                0x04, 0x00,                                 // contextEngineID ""
                0x04, 0x00,                                 // contextName ""
                0xA0, 0x0B,                                 // GetRequest-PDU, 11 bytes
                  0x02, 0x01, 0x01,                         // request-id 1
                  0x02, 0x01, 0x00,                         // error-status 0
                  0x02, 0x01, 0x00,                         // error-index 0
                  0x30, 0x00,                               // no varbinds
        ];
        assert_eq!(discovery_request(1), want);
    }

    /// A msgID with the high bit set takes 5 bytes (4 more than id 1) in msgID and request-id:
    /// every enclosing length grows with it.
    #[test]
    fn discovery_request_lengths_for_a_high_id() {
        let m = discovery_request(0x8000_0001);
        assert_eq!(m.len(), 58 + 8);
        assert_eq!(m[..2], [0x30, 0x38 + 8], "message");
        assert_eq!(m[5..7], [0x30, 0x0E + 4], "msgGlobalData");
        assert_eq!(
            m[7..14],
            [0x02, 0x05, 0x00, 0x80, 0x00, 0x00, 0x01],
            "msgID"
        );
        let scoped = 7 + 0x12 + 18;
        assert_eq!(m[scoped..scoped + 2], [0x30, 0x11 + 4], "ScopedPDU");
        assert_eq!(
            m[scoped + 6..scoped + 8],
            [0xA0, 0x0B + 4],
            "GetRequest-PDU"
        );
        assert_eq!(
            m[scoped + 8..scoped + 15],
            [0x02, 0x05, 0x00, 0x80, 0x00, 0x00, 0x01],
            "request-id"
        );
    }

    /// snmp2 parses the header and USM parameters field by field, for ids of every length.
    #[test]
    fn discovery_request_reads_back_with_snmp2() {
        use snmp2::asn1::TYPE_SEQUENCE;
        use snmp2::AsnReader;
        for id in [
            0u32,
            1,
            0x7F,
            0x80,
            0xFFFF,
            0x7FFF_FFFF,
            0x8000_0001,
            u32::MAX,
        ] {
            let m = discovery_request(id);
            let mut outer = AsnReader::from_bytes(&m);
            let mut msg = AsnReader::from_bytes(outer.read_raw(TYPE_SEQUENCE).unwrap());
            assert_eq!(outer.bytes_left(), 0, "{id:#x}: one message, nothing after");
            assert_eq!(msg.read_asn_integer().unwrap(), 3);
            let mut global = AsnReader::from_bytes(msg.read_raw(TYPE_SEQUENCE).unwrap());
            assert_eq!(global.read_asn_integer().unwrap(), i64::from(id), "{id:#x}");
            assert_eq!(global.read_asn_integer().unwrap(), 65507);
            assert_eq!(global.read_asn_octetstring().unwrap(), [0x04]);
            assert_eq!(global.read_asn_integer().unwrap(), 3);
            let usm_bytes = msg.read_asn_octetstring().unwrap();
            let mut usm = AsnReader::from_bytes(
                AsnReader::from_bytes(usm_bytes)
                    .read_raw(TYPE_SEQUENCE)
                    .unwrap(),
            );
            assert_eq!(usm.read_asn_octetstring().unwrap(), b"");
            assert_eq!(usm.read_asn_integer().unwrap(), 0);
            assert_eq!(usm.read_asn_integer().unwrap(), 0);
            for _ in 0..3 {
                assert_eq!(usm.read_asn_octetstring().unwrap(), b"");
            }
            let mut scoped = AsnReader::from_bytes(msg.read_raw(TYPE_SEQUENCE).unwrap());
            assert_eq!(scoped.read_asn_octetstring().unwrap(), b"");
            assert_eq!(scoped.read_asn_octetstring().unwrap(), b"");
            let mut pdu = AsnReader::from_bytes(scoped.read_raw(snmp2::snmp::MSG_GET).unwrap());
            assert_eq!(pdu.read_asn_integer().unwrap(), i64::from(id), "{id:#x}");
            assert_eq!(pdu.read_asn_integer().unwrap(), 0);
            assert_eq!(pdu.read_asn_integer().unwrap(), 0);
            assert_eq!(pdu.read_raw(TYPE_SEQUENCE).unwrap(), b"");
            assert_eq!(msg.bytes_left() + pdu.bytes_left() + scoped.bytes_left(), 0);
        }
    }

    /// snmp2's own v3 parser takes it as a GetRequest. It parses v3 only with a Security, and
    /// takes an empty engine ID for a discovery step of its own; a noAuthNoPriv Security that
    /// already knows some engine ID reads the message through instead. No credentials are used.
    #[test]
    fn discovery_request_parses_as_a_v3_get_request_with_snmp2() {
        use snmp2::v3::{Auth, Security};
        for id in [1u32, 0x80, 0x7FFF_FFFF] {
            let m = discovery_request(id);
            let mut sec = Security::new(b"", b"")
                .with_auth(Auth::NoAuthNoPriv)
                .with_engine_id(b"known")
                .unwrap();
            let pdu = snmp2::Pdu::from_bytes_with_security(&m, Some(&mut sec)).unwrap();
            assert_eq!(pdu.version().unwrap(), snmp2::Version::V3);
            assert_eq!(pdu.message_type, snmp2::MessageType::GetRequest);
            assert_eq!(pdu.req_id, id as i32, "{id:#x}");
            assert_eq!(pdu.v3_msg_id, id as i32, "{id:#x}");
            assert_eq!((pdu.error_status, pdu.error_index), (0, 0));
            assert_eq!(pdu.community, b"", "user name");
            assert_eq!(pdu.varbinds.count(), 0);
        }
    }

    #[test]
    fn only_a_v3_message_with_an_id_in_range_is_an_answer() {
        let report = |id: u32| discovery_request(id);
        let cases: Vec<(&str, Vec<u8>, Option<u32>)> = vec![
            ("our own request's shape", report(7), Some(7)),
            ("a large id", report(0x7fff_ffff), Some(0x7fff_ffff)),
            ("empty", vec![], None),
            ("junk", b"hello snmp".to_vec(), None),
            ("v2c", vec![0x30, 0x05, 0x02, 0x01, 0x01, 0x04, 0x00], None),
            ("truncated", report(7)[..20].to_vec(), None),
            (
                "length beyond the datagram",
                vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
                None,
            ),
            (
                "six-byte id",
                {
                    let mut m = vec![0x02, 0x01, 0x03, 0x30, 0x08, 0x02, 0x06];
                    m.extend([1, 2, 3, 4, 5, 6]);
                    let mut out = vec![0x30, m.len() as u8];
                    out.extend(m);
                    out
                },
                None,
            ),
        ];
        for (what, bytes, want) in cases {
            assert_eq!(reply_msg_id(&bytes), want, "{what}");
        }
    }
}
