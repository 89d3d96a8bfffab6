//! Real traffic for the emulated devices, captured by the real tcpdump, so each device's
//! debug-capture file is something a real capture tool produced rather than a generated file.
//!
//! One tcpdump on `lo` captures for every address at once (a thousand devices must not mean a
//! thousand tcpdumps); the capture is split per address afterwards. Every wait is bounded and
//! tcpdump is always stopped and its file removed, whatever fails.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lab::pcap;

pub const TCPDUMP: &str = "tcpdump";
/// The discard port: nothing listens on it in the lab, so the kernel answers each datagram with
/// ICMP port unreachable and every device shows two-way traffic.
const PORT: u16 = 9;
const FILTER: &str = "udp port 9 or icmp";
const ROUNDS: usize = 3;
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for the last ICMP replies to be written after the last datagram.
const SETTLE: Duration = Duration::from_millis(300);
/// Upper bound on waiting for tcpdump to write what was sent.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// As root: capture a few UDP datagrams from 127.0.0.1 to port 9 of every address, and the
/// kernel's ICMP answers, with one `tcpdump -i lo`, and return one libpcap file per address.
/// Every address must end up with at least one packet.
pub fn capture_real(
    addrs: &[Ipv4Addr],
    workdir: &Path,
) -> Result<HashMap<Ipv4Addr, Vec<u8>>, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let file = workdir.join(format!("tc-traffic-{}-{nanos}.pcap", std::process::id()));
    let mut tcpdump = Tcpdump::start(&file)?;
    tcpdump.wait_listening()?;
    send_rounds(addrs)?;
    // tcpdump -U writes each packet as it gets it; a fixed sleep alone lost the tail of the
    // capture under load, so wait (bounded) until every datagram is in the file. The kernel
    // queues its ICMP answer before the datagram is delivered, so the answers are in by then.
    let sent_at = Instant::now();
    loop {
        let elapsed = sent_at.elapsed();
        if elapsed >= DRAIN_TIMEOUT || (elapsed >= SETTLE && all_datagrams_written(&file, addrs)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let said = tcpdump.stop();
    let bytes = std::fs::read(&file)
        .map_err(|e| format!("read {}: {e} (tcpdump: {said})", file.display()))?;
    let split = pcap::split_by_ipv4(&bytes, addrs)
        .map_err(|e| format!("tcpdump capture {}: {e} (tcpdump: {said})", file.display()))?;
    check_every_address(addrs, &split).map_err(|e| format!("{e}; tcpdump: {said}"))?;
    Ok(split)
}

/// The one tcpdump, and what it says on stderr (its "listening on" line, errors, and the
/// packet counts at exit).
struct Tcpdump {
    guard: Guard,
    stderr: Arc<Mutex<String>>,
    /// `true` once it listens, `false` at its stderr's EOF.
    events: mpsc::Receiver<bool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Tcpdump {
    fn start(file: &Path) -> Result<Tcpdump, String> {
        let mut guard = Guard {
            child: None,
            file: file.to_path_buf(),
        };
        let mut cmd = Command::new(TCPDUMP);
        // --immediate-mode: without it packets wait in the kernel ring for up to a second and
        // those still there at SIGTERM are lost. Immediate mode gives every packet a ring slot of
        // snaplen bytes, so the default 256 KiB snaplen and 2 MiB buffer hold only a few packets:
        // -s 1514 (an Ethernet frame, all a CPE capture holds) and -B 32 MiB make room for 1000
        // devices' worth of datagrams and answers. -Z root: the default drop to the tcpdump user
        // could not write into a root-owned workdir.
        cmd.args([
            "-i",
            "lo",
            "-n",
            "-U",
            "--immediate-mode",
            "-s",
            "1514",
            "-B",
            "32768",
        ])
        .args(["-Z", "root", "-w"])
        .arg(file)
        .arg(FILTER);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("start {TCPDUMP}: {e}"))?;
        let stderr_pipe = child.stderr.take().expect("piped");
        guard.child = Some(child);
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, events) = mpsc::channel();
        let collected = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                let listening = line.contains("listening on");
                if let Ok(mut s) = collected.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
                if listening {
                    let _ = tx.send(true);
                }
            }
            // EOF: tcpdump exited (or closed stderr); wake the waiter instead of letting it time
            // out.
            let _ = tx.send(false);
        });
        Ok(Tcpdump {
            guard,
            stderr,
            events,
            reader: Some(reader),
        })
    }

    /// What tcpdump said so far, on one line.
    fn said(&self) -> String {
        self.stderr
            .lock()
            .map(|s| s.trim().replace('\n', " | "))
            .unwrap_or_default()
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        match self.events.recv_timeout(LISTEN_TIMEOUT) {
            Ok(true) => Ok(()),
            Ok(false) => {
                let said = self.stop();
                Err(format!(
                    "tcpdump exited before listening{}: {said}",
                    root_hint()
                ))
            }
            Err(_) => {
                self.guard.stop();
                Err(format!(
                    "tcpdump did not start listening within {LISTEN_TIMEOUT:?}: {}",
                    self.said()
                ))
            }
        }
    }

    /// Stops tcpdump and returns all it said: the reader ends at EOF once tcpdump is gone, and
    /// its last lines are the packet counts. The file stays until the `Guard` is dropped.
    fn stop(&mut self) -> String {
        self.guard.stop();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.said()
    }
}

/// `ROUNDS` datagrams from 127.0.0.1 to port 9 of every address.
fn send_rounds(addrs: &[Ipv4Addr]) -> Result<(), String> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("bind UDP on 127.0.0.1: {e}"))?;
    let mut sent = 0usize;
    for round in 0..ROUNDS {
        for addr in addrs {
            let payload = format!("tc lab traffic to {addr} #{round}");
            // A lost datagram is not fatal here: the per-address check decides.
            if let Err(e) = sock.send_to(payload.as_bytes(), SocketAddr::from((*addr, PORT))) {
                log::debug!("send to {addr}:{PORT}: {e}");
            }
            sent += 1;
            // Give tcpdump a moment to drain its ring now and then, so 1000 devices do not
            // become "dropped by kernel" on a busy machine.
            if sent % 256 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    Ok(())
}

/// Every address got at least one packet (a file of more than its 24-byte header).
fn check_every_address(
    addrs: &[Ipv4Addr],
    split: &HashMap<Ipv4Addr, Vec<u8>>,
) -> Result<(), String> {
    let empty: Vec<String> = addrs
        .iter()
        .filter(|a| split.get(*a).is_none_or(|f| f.len() <= 24))
        .map(|a| a.to_string())
        .collect();
    if empty.is_empty() {
        return Ok(());
    }
    let shown = empty
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = if empty.len() > 10 {
        format!(" and {} more", empty.len() - 10)
    } else {
        String::new()
    };
    Err(format!(
        "no packets captured for {} of {} addresses ({shown}{more})",
        empty.len(),
        addrs.len()
    ))
}

/// Whether the capture so far holds all `ROUNDS` datagrams to every address. A read can catch
/// tcpdump mid-record; that only means "not yet".
fn all_datagrams_written(file: &Path, addrs: &[Ipv4Addr]) -> bool {
    let Ok(bytes) = std::fs::read(file) else {
        return false;
    };
    let Ok(cap) = pcap::parse(&bytes) else {
        return false;
    };
    let mut seen: HashMap<Ipv4Addr, usize> = addrs.iter().map(|a| (*a, 0)).collect();
    for p in &cap.packets {
        if let Some((_, dst)) = pcap::ipv4_endpoints(cap.linktype, p.data) {
            if let Some(n) = seen.get_mut(&dst) {
                *n += 1;
            }
        }
    }
    seen.values().all(|n| *n >= ROUNDS)
}

fn root_hint() -> &'static str {
    if !crate::sys::is_root() {
        " (capturing on lo needs root or CAP_NET_RAW)"
    } else {
        ""
    }
}

/// Stops tcpdump and removes its file on every path out of `capture_real`.
struct Guard {
    child: Option<Child>,
    file: PathBuf,
}

impl Guard {
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            super::sshd::terminate(&mut c, "tcpdump");
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcpdump_missing() -> bool {
        !["/usr/bin/tcpdump", "/usr/sbin/tcpdump"]
            .iter()
            .any(|p| Path::new(p).exists())
    }

    #[test]
    #[ignore = "needs root and tcpdump: as root, cargo test -- --include-ignored"]
    fn real_capture_splits_per_address() {
        assert!(crate::sys::is_root(), "capturing on lo needs root");
        assert!(!tcpdump_missing(), "tcpdump is not installed");
        // Addresses derived from the pid so concurrent test runs do not see each other's devices.
        let b = (std::process::id() % 200) as u8 + 20;
        let addrs: Vec<Ipv4Addr> = (1..=5).map(|i| Ipv4Addr::new(127, 77, b, i)).collect();
        let dir = tempfile::tempdir().unwrap();
        let files = capture_real(&addrs, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(files.len(), 5);
        let mut replies = 0;
        for a in &addrs {
            let cap = pcap::parse(&files[a]).unwrap();
            assert!(
                cap.packets.len() >= ROUNDS,
                "{a}: {} packets",
                cap.packets.len()
            );
            for p in &cap.packets {
                let (s, d) = pcap::ipv4_endpoints(cap.linktype, p.data).expect("IPv4");
                assert!(s == *a || d == *a, "{a} got a packet {s} -> {d}");
                replies += usize::from(s == *a);
            }
        }
        // Not per address: the kernel's global ICMP rate limit (burst 50) is shared with anything
        // else running, so one answer proves the capture is two-way without making the test flaky.
        assert!(replies > 0, "no ICMP answer captured");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temporary capture removed"
        );
    }

    #[test]
    #[ignore = "needs root and tcpdump: as root, cargo test -- --include-ignored"]
    fn real_capture_scales_to_1000_addresses() {
        assert!(crate::sys::is_root(), "capturing on lo needs root");
        assert!(!tcpdump_missing(), "tcpdump is not installed");
        let addrs: Vec<Ipv4Addr> = (0..1000u32)
            .map(|i| Ipv4Addr::new(127, 78, (i / 250) as u8, (i % 250) as u8 + 1))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let files = capture_real(&addrs, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(files.len(), 1000);
        assert!(files
            .values()
            .all(|f| pcap::parse(f).unwrap().packets.len() >= ROUNDS));
    }
}
