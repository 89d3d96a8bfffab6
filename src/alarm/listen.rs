//! `tc alarm listen`: a daemon loop (`crate::daemon`) over a UDP socket and the signals. Every
//! datagram becomes an `alarm` or `syslog.unparsed` line, or a count. The decision per datagram
//! (`Listener::datagram`) is pure and tested without sockets.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::UdpSocket;

use crate::daemon::{Daemon, Driver, Flow};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::cli::AlarmListenArgs;
use crate::emit::{emit, Batch};
use crate::error::{Error, ExitCode, Result};
use crate::event::Event;
use crate::netaddr::Cidr;

pub struct Filter {
    pub alarms: Vec<String>,
    pub descriptions: Vec<String>,
    pub devices: Vec<IpAddr>,
    pub from: Vec<Cidr>,
}

impl Filter {
    fn accepts(&self, a: &super::ovoc::Alarm) -> bool {
        let any_ci = |wanted: &[String], got: Option<&str>| {
            wanted.is_empty()
                || got.is_some_and(|g| {
                    wanted
                        .iter()
                        .any(|w| w.trim().eq_ignore_ascii_case(g.trim()))
                })
        };
        let device_ok = self.devices.is_empty()
            || a.device
                .and_then(|d| d.trim().parse::<IpAddr>().ok())
                .is_some_and(|d| self.devices.contains(&d));
        any_ci(&self.alarms, Some(a.name)) && any_ci(&self.descriptions, a.description) && device_ok
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub received: u64,
    pub matched: u64,
    pub filtered: u64,
    pub unparsed: u64,
    pub refused: u64,
}

pub struct Listener {
    pub filter: Filter,
    pub quiet_unparsed: bool,
    pub counts: Counts,
    /// The last sender and its text: OVOC sends from one address, and formatting it for every
    /// line was a twentieth of the listener's time.
    pub sender: Option<(SocketAddr, String)>,
    /// The last alarm line's event, filled again for the next (`fill_alarm_event`).
    pub line: Option<Event>,
}

impl Listener {
    /// Reads one datagram and hands `sink` what it gives to print, if anything (else it is
    /// only counted).
    pub fn datagram(&mut self, data: &[u8], sender: SocketAddr, sink: &mut dyn FnMut(&Event)) {
        if !self.filter.from.is_empty() && !self.filter.from.iter().any(|c| c.contains(sender.ip()))
        {
            self.counts.refused += 1;
            log::debug!("dropped a datagram from {sender}: not in --from");
            return;
        }
        self.counts.received += 1;
        let text = super::syslog::text(data);
        let mut alarm = super::ovoc::Alarm::default();
        let (frame, is_alarm) = super::read_into(&text, &mut alarm);
        match is_alarm.then_some(&alarm) {
            Some(a) if self.filter.accepts(a) => {
                self.counts.matched += 1;
                let s = match &mut self.sender {
                    Some((addr, s)) if *addr == sender => s,
                    cached => &cached.insert((sender, sender.to_string())).1,
                };
                let line = match &mut self.line {
                    Some(ev) => {
                        super::fill_alarm_event(ev, &frame, a, s, &text);
                        ev
                    }
                    none => none.insert(super::alarm_event(&frame, a, s, &text)),
                };
                sink(line);
            }
            Some(_) => self.counts.filtered += 1,
            None => {
                self.counts.unparsed += 1;
                if !self.quiet_unparsed {
                    sink(&Event::SyslogUnparsed {
                        sender: sender.to_string(),
                        framing: frame.framing.to_string(),
                        raw: super::raw_text(&text).into_owned(),
                    });
                }
            }
        }
    }
}

/// Kernel drops of the UDP socket with this inode, from /proc/net/udp{,6} text (last column).
pub fn drops_for_inode(proc_net_udp: &str, inode: u64) -> Option<u64> {
    proc_net_udp.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.len() >= 13 && cols[9].parse::<u64>().ok() == Some(inode))
            .then(|| cols[12].parse().ok())
            .flatten()
    })
}

fn socket_inode(fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

pub fn kernel_drops(sock: &UdpSocket) -> Option<u64> {
    let inode = socket_inode(sock.as_raw_fd())?;
    ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|p| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| drops_for_inode(&t, inode))
    })
}

/// The listener in the daemon loop: every datagram is read, parsed and batched; the batch is
/// written at the end of each turn, before the loop waits again.
struct Listen {
    l: Listener,
    batch: Batch,
    /// Benchmark baseline: count only.
    bare: bool,
    count: Option<u64>,
    deadline: Option<Instant>,
    reason: &'static str,
}

impl Driver for Listen {
    fn datagram(&mut self, _: Instant, from: SocketAddr, data: &[u8]) -> Flow {
        if self.bare {
            // The baseline BENCHMARKS.md compares parsing against.
            self.l.counts.received += 1;
            self.l.counts.matched += u64::from(!data.is_empty());
        } else {
            let batch = &mut self.batch;
            self.l.datagram(data, from, &mut |ev| batch.push(ev));
        }
        if crate::emit::stdout_broken() {
            self.reason = "stdout-closed";
            return Flow::Stop;
        }
        if self.count.is_some_and(|c| self.l.counts.matched >= c) {
            self.reason = "count";
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn signal(&mut self, _: Instant, _: i32) -> Flow {
        self.reason = "signal";
        Flow::Stop
    }

    fn turn(&mut self, now: Instant) -> Flow {
        self.batch.flush();
        if self.deadline.is_some_and(|d| now >= d) {
            self.reason = "timeout";
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn next_wake(&self, _: Instant) -> Option<Instant> {
        self.deadline
    }
}

/// The resolve step: the listener the flags describe, the deadline counted from `started`.
fn listen_of(a: &AlarmListenArgs, started: Instant) -> Result<Listen> {
    let mut devices = Vec::new();
    for d in &a.device {
        devices.push(d.parse::<IpAddr>().map_err(|_| {
            Error::usage(format!("invalid --device {d:?}: expected an IP address"))
        })?);
    }
    Ok(Listen {
        l: Listener {
            filter: Filter {
                alarms: a.alarm.clone(),
                descriptions: a.description.clone(),
                devices,
                from: a.from.clone(),
            },
            quiet_unparsed: a.quiet_unparsed,
            counts: Counts::default(),
            sender: None,
            line: None,
        },
        batch: Batch::default(),
        bare: a.bare,
        count: a.count,
        deadline: a.timeout.map(|t| started + t),
        reason: "timeout",
    })
}

pub fn run(a: AlarmListenArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let mut listen = listen_of(&a, started)?;
    let mut daemon = Daemon::open(a.listen, &[SIGINT, SIGTERM])?;
    log::info!("listening for syslog on {}", daemon.local_addr());
    let result = daemon.run(&mut listen);
    listen.batch.flush();
    result?;
    let c = &listen.l.counts;
    emit(&Event::AlarmSummary {
        received: c.received,
        matched: c.matched,
        filtered: c.filtered,
        unparsed: c.unparsed,
        refused: c.refused,
        dropped_kernel: kernel_drops(&daemon.socket()),
        seconds: started.elapsed().as_secs_f64(),
        reason: listen.reason.into(),
    });
    Ok(match listen.reason {
        "timeout" => ExitCode::Failed,
        "signal" if a.count.is_some() => ExitCode::Interrupted,
        _ => ExitCode::Ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(argv: &[&str]) -> AlarmListenArgs {
        use clap::Parser;
        let full = [&["tc", "alarm", "listen"][..], argv].concat();
        match crate::cli::Cli::try_parse_from(full)
            .expect("parses")
            .command
        {
            crate::cli::Command::Alarm(crate::cli::AlarmCommand::Listen(a)) => a,
            _ => unreachable!("alarm listen"),
        }
    }

    #[test]
    fn command_lines_and_how_the_listener_ends() {
        let t = Instant::now();
        let err = listen_of(&args(&["--device", "host.example"]), t)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid --device \"host.example\": expected an IP address")
        );
        // --count: the loop stops on the datagram that reaches it.
        let mut l = listen_of(&args(&["--count", "2", "--quiet-unparsed"]), t).unwrap();
        let from: SocketAddr = "10.9.9.9:514".parse().unwrap();
        assert_eq!(l.datagram(t, from, LOST), Flow::Continue);
        assert_eq!(l.datagram(t, from, b"noise"), Flow::Continue);
        assert_eq!(l.datagram(t, from, LOST), Flow::Stop);
        assert_eq!(l.reason, "count");
        // --timeout: the loop wakes at the deadline and stops there.
        let mut l = listen_of(&args(&["--timeout", "2s"]), t).unwrap();
        assert_eq!(l.next_wake(t), Some(t + std::time::Duration::from_secs(2)));
        assert_eq!(
            l.turn(t + std::time::Duration::from_secs(1)),
            Flow::Continue
        );
        assert_eq!(l.turn(t + std::time::Duration::from_secs(2)), Flow::Stop);
        assert_eq!(l.reason, "timeout");
        // A signal ends it whatever else.
        assert_eq!(l.signal(t, 15), Flow::Stop);
        assert_eq!(l.reason, "signal");
    }

    fn listener(alarms: &[&str], descs: &[&str], devices: &[&str], from: &[&str]) -> Listener {
        Listener {
            filter: Filter {
                alarms: alarms.iter().map(|s| s.to_string()).collect(),
                descriptions: descs.iter().map(|s| s.to_string()).collect(),
                devices: devices.iter().map(|s| s.parse().unwrap()).collect(),
                from: from.iter().map(|s| Cidr::parse(s).unwrap()).collect(),
            },
            quiet_unparsed: false,
            counts: Counts::default(),
            sender: None,
            line: None,
        }
    }

    /// The listener fills one event again for each alarm: every line must be the line a fresh
    /// event gives, whatever the alarm before it held (fields gone, extras, a long raw text).
    #[test]
    fn a_reused_alarm_line_is_a_fresh_one() {
        let long = format!(
            "<129>Jun 22 16:16:05 ovoc : New Alarm - Connection Alarm, Major, Description:{}",
            "x".repeat(5000)
        );
        let datagrams: Vec<Vec<u8>> = vec![
            b"<129>Jun 22 16:16:05 ovoc : New Alarm - Connection Alarm, Major, Source:Board#1, Description:Connection Lost, Device Name:MSBR-1, Tenant:Default, Region:Default, IP Address:192.168.200.218, Device Type:M500L-MSBR, Device Serial:123456, Device Description:Branch 1, Odd Key:v1".to_vec(),
            LOST.to_vec(),
            b"New Alarm - Power Supply Alarm, Minor, Description:PSU 2".to_vec(),
            long.into_bytes(),
            b"<13>1 2026-06-22T16:16:05Z host app - - - New Alarm - Connection Alarm, Clear, IP Address:10.0.0.2".to_vec(),
            LOST.to_vec(),
        ];
        let from: SocketAddr = "10.9.9.9:514".parse().unwrap();
        let mut l = listener(&[], &[], &[], &[]);
        for d in &datagrams {
            let got = one(&mut l, d, from).expect("an alarm line");
            let text = crate::alarm::syslog::text(d);
            let (frame, alarm) = crate::alarm::read(&text);
            let fresh = crate::alarm::alarm_event(&frame, &alarm.unwrap(), "10.9.9.9:514", &text);
            assert_eq!(
                serde_json::to_string(&got).unwrap(),
                serde_json::to_string(&fresh).unwrap(),
                "{}",
                String::from_utf8_lossy(d)
            );
        }
    }

    /// What `datagram` hands out, if anything.
    fn one(l: &mut Listener, data: &[u8], from: SocketAddr) -> Option<Event> {
        let mut got = None;
        l.datagram(data, from, &mut |ev| got = Some(ev.clone()));
        got
    }

    const LOST: &[u8] = b"<129>Jun 22 16:16:05 ovoc : New Alarm - Connection Alarm, Major, Source:Board#1, Description:Connection Lost, IP Address:10.0.0.1\0\0";

    #[test]
    fn filters_and_counts() {
        let from: SocketAddr = "10.9.9.9:514".parse().unwrap();
        let mut l = listener(
            &["connection alarm"],
            &["CONNECTION LOST"],
            &["10.0.0.1"],
            &["10.9.0.0/16"],
        );
        let Some(Event::Alarm {
            device,
            connection_lost,
            syslog_severity,
            raw,
            sender,
            ..
        }) = one(&mut l, LOST, from)
        else {
            panic!()
        };
        assert_eq!(device.as_deref(), Some("10.0.0.1"));
        assert!(connection_lost);
        assert_eq!(syslog_severity.as_deref(), Some("alert"));
        assert!(!raw.contains('\0'));
        assert_eq!(sender, "10.9.9.9:514");
        // Other device, other description, other sender, not an alarm.
        let other = b"New Alarm - Connection Alarm, Major, Description:Connection Lost, IP Address:10.0.0.2";
        assert!(one(&mut l, other, from).is_none());
        assert!(one(&mut l, b"New Alarm - Connection Alarm, Clear, Description:Connection established, IP Address:10.0.0.1", from).is_none());
        assert!(one(&mut l, LOST, "192.0.2.1:514".parse().unwrap()).is_none());
        assert!(matches!(
            one(&mut l, b"garbage \xff", from),
            Some(Event::SyslogUnparsed { .. })
        ));
        assert_eq!(
            l.counts,
            Counts {
                received: 4,
                matched: 1,
                filtered: 2,
                unparsed: 1,
                refused: 1
            }
        );
        l.quiet_unparsed = true;
        assert!(one(&mut l, b"more garbage", from).is_none());
        assert_eq!(l.counts.unparsed, 2);
    }

    #[test]
    fn proc_net_udp_drops() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  123: 00000000:4E21 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 98765 2 0000000000000000 17\n\
  124: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 11111 2 0000000000000000 0\n";
        assert_eq!(drops_for_inode(text, 98765), Some(17));
        assert_eq!(drops_for_inode(text, 11111), Some(0));
        assert_eq!(drops_for_inode(text, 5), None);
        assert_eq!(drops_for_inode("", 5), None);
    }

    #[test]
    fn random_datagrams_never_panic() {
        let mut l = listener(&[], &[], &[], &[]);
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut next = crate::util::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let pieces: &[&[u8]] = &[
            b"<",
            b">",
            b"13",
            b"1 ",
            b"New Alarm - ",
            b"Title: ",
            b", received from ",
            b" with Severity ",
            b". Description:",
            b",",
            b":",
            b"IP Address:",
            b"\0",
            b"\xff",
            b"[",
            b"]",
            b"\\",
            b"Jun 22 16:16:05 ",
            b" ",
        ];
        for _ in 0..100_000 {
            let mut d = Vec::new();
            for _ in 0..(next() % 12) {
                if next() % 3 == 0 {
                    d.push(next() as u8);
                } else {
                    d.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
                }
            }
            let _ = one(&mut l, &d, from);
        }
        assert_eq!(l.counts.received, 100_000);
    }
}
