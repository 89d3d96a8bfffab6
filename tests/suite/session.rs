//! `tc session` end to end on loopback: `tc lab up` (emulated CPEs and OVOC REST, real sshd and
//! snmpd), a real `tc ovoc serve` with real tcpdump, alarms from `tc lab alarm`, and faults.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::ovoc::Agent;
use crate::harness::*;

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Session {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Session {
    fn start(lab: &Lab, inventory: &Path, out: &Path, listen: u16, extra: &[&str]) -> Session {
        let mut c = lab.tc();
        c.args(["session", "--devices"])
            .arg(inventory)
            .arg("--out")
            .arg(out);
        c.args([
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--snmp-user",
            "CaptureScript",
        ]);
        // Quick resends, unless the test says otherwise.
        if !extra.contains(&"--resend") {
            c.args(["--resend", "1s"]);
        }
        c.args(["--fetch-retry-interval", "3s", "--timeout", "3s"])
            .args(extra);
        c.stdout(Stdio::piped()).stderr(stderr_log("session"));
        let mut child = c.spawn().expect("spawn tc session");
        let rx = line_reader(&mut child);
        Session {
            child: Some(child),
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn pump(&mut self, wait: Duration) {
        if let Ok(l) = self.lines.recv_timeout(wait) {
            assert_no_secret("session stdout", &l);
            events(&l);
            self.seen.push(l);
        }
    }

    /// Wait until `pred` holds over the lines seen.
    fn wait_until(&mut self, what: &str, timeout: Duration, pred: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !pred(&self.seen) {
            assert!(
                Instant::now() < deadline,
                "session: no {what} within {timeout:?}; saw:\n{}",
                self.seen.join("\n")
            );
            self.pump(Duration::from_millis(100));
        }
    }

    /// Wait until `n` devices capture on both sides.
    fn wait_capturing(&mut self, n: usize) {
        self.wait_until("every capture", Duration::from_secs(60), |l| {
            l.iter()
                .filter(|x| x.contains("\"task\":\"capture\",\"status\":\"ok\""))
                .count()
                == n
        });
    }

    /// Wait for exit; returns the exit code.
    fn wait(&mut self, timeout: Duration) -> i32 {
        let mut c = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            self.pump(Duration::from_millis(50));
            if let Some(st) = c.try_wait().unwrap() {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    events(&l);
                    self.seen.push(l);
                }
                return st.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!(
                    "session did not finish within {timeout:?}; saw:\n{}",
                    self.seen.join("\n")
                );
            }
        }
    }

    fn kill(&mut self, sig: i32) -> i32 {
        signal(self.child.as_ref().unwrap().id(), sig);
        self.wait(Duration::from_secs(120))
    }

    fn count(&self, needle: &str) -> usize {
        self.seen.iter().filter(|l| l.contains(needle)).count()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends each device's Connection Lost every 700 ms (through `tc lab alarm`) until dropped:
/// OVOC sends an alarm once, but the session ignores alarms that arrive before it captures.
struct Alarms {
    stop: Arc<AtomicBool>,
    t: Option<std::thread::JoinHandle<()>>,
}

impl Alarms {
    fn start(lab: &Lab, devices: Vec<String>) -> Alarms {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, dir, env) = (Arc::clone(&stop), lab.path(), lab.env.clone());
        let t = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                for d in &devices {
                    let mut c = tc();
                    c.envs(&env)
                        .args(["lab", "alarm", "--dir"])
                        .arg(&dir)
                        .arg(d);
                    c.stdout(Stdio::null()).stderr(Stdio::null());
                    let _ = c.status();
                }
                std::thread::sleep(Duration::from_millis(700));
            }
        });
        Alarms { stop, t: Some(t) }
    }
}

impl Drop for Alarms {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
    }
}

/// Every device has `rounds` CPE pcaps in `out` and, per CPE file, the OVOC file named to match.
fn check_evidence(out: &Path, agent_dir: &Path, devices: &[String], rounds: usize) {
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let (cpe, ovoc) = (names(out), names(agent_dir));
    let mut all = Vec::new();
    for d in devices {
        let mine: Vec<&String> = cpe
            .iter()
            .filter(|n| n.starts_with(&format!("CPE_device_{d}_")))
            .collect();
        assert_eq!(mine.len(), rounds, "{d}: CPE files {mine:?}");
        for f in mine {
            let base = f
                .strip_prefix("CPE_")
                .unwrap()
                .strip_suffix(".pcap")
                .unwrap();
            let want = format!("OVOC_{base}-0.pcap");
            assert!(ovoc.contains(&want), "{d}: no {want} among {ovoc:?}");
            all.push(out.join(f));
            all.push(agent_dir.join(want));
        }
    }
    let counts = capinfos_packets(&all);
    assert_eq!(counts.len(), all.len());
    // The OVOC side holds the VERIFY probe traffic of that round.
    for (f, n) in all.iter().zip(&counts) {
        assert!(*n > 0, "{} is empty", f.display());
    }
    let report = std::fs::read_to_string(out.join("report.csv")).unwrap();
    assert!(
        report.starts_with("time,device,task,status,code,description,file\n"),
        "{report}"
    );
    for d in devices {
        let rows = report
            .lines()
            .filter(|l| l.contains(&format!(",{d},")))
            .count();
        // register, cpe_start, capture, (alarm, verify,) cpe_stop, fetch, stop per round, done.
        assert!(rows > 6 * rounds, "{d}: {rows} report rows");
        assert!(
            report
                .lines()
                .any(|l| l.contains(&format!(",{d},done,ok,"))),
            "{d} not done:\n{report}"
        );
    }
}

fn run_session(devices: u32, max_events: u32) {
    let lab = Lab::up(devices, &[]);
    let agent_dir = tempfile::tempdir().unwrap();
    let _agent = Agent::start(&lab, agent_dir.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let devs = lab.devices();
    let mut s = Session::start(
        &lab,
        &lab.inventory(),
        out.path(),
        free_udp(),
        &["--max-events", &max_events.to_string()],
    );
    let _alarms = Alarms::start(&lab, devs.clone());
    assert_eq!(s.wait(Duration::from_secs(240)), 0, "{}", s.seen.join("\n"));
    let last = s.seen.last().unwrap();
    assert!(
        last.contains("\"session.summary\"") && last.contains(&format!("\"completed\":{devices}")),
        "{last}"
    );
    check_evidence(out.path(), agent_dir.path(), &devs, max_events as usize);
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn one_device() {
    require_lab();
    run_session(1, 1);
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn twenty_devices() {
    require_lab();
    run_session(20, 1);
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn two_rounds() {
    require_lab();
    run_session(2, 2);
}

/// A relay between the session and the agent that drops `loss` of the control datagrams in
/// each direction (alarms pass: OVOC's are not ours to lose, and the test resends them anyway).
fn lossy_relay(agent: SocketAddr, loss: f64) -> (SocketAddr, Arc<AtomicBool>) {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    front
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    back.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let addr = front.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut session: Option<SocketAddr> = None;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut drop_it = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 1000) as f64 / 1000.0 < loss
        };
        let mut buf = [0u8; 65536];
        while !flag.load(Ordering::Relaxed) {
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                session = Some(from);
                if !drop_it() {
                    let _ = back.send_to(&buf[..n], agent);
                }
            }
            if let Ok((n, _)) = back.recv_from(&mut buf) {
                let is_alarm = String::from_utf8_lossy(&buf[..n]).contains("New Alarm");
                if let Some(s) = session {
                    if is_alarm || !drop_it() {
                        let _ = front.send_to(&buf[..n], s);
                    }
                }
            }
        }
    });
    (addr, stop)
}

/// The inventory with every device's agent replaced.
fn inventory_with_agent(lab: &Lab, agent: SocketAddr, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    let mut out = String::new();
    for (i, l) in text.lines().enumerate() {
        if i == 0 {
            out.push_str(l);
        } else {
            let mut f: Vec<String> = l.split(',').map(String::from).collect();
            f[4] = agent.to_string();
            out.push_str(&f.join(","));
        }
        out.push('\n');
    }
    let p = dir.join("devices.csv");
    std::fs::write(&p, out).unwrap();
    p
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn thirty_percent_of_control_datagrams_lost() {
    require_lab();
    let lab = Lab::up(4, &[]);
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&lab, agent_dir.path(), &[]);
    let (relay, stop) = lossy_relay(agent.listen, 0.3);
    let work = tempfile::tempdir().unwrap();
    let inv = inventory_with_agent(&lab, relay, work.path());
    let out = work.path().join("out");
    let devs = lab.devices();
    let mut s = Session::start(
        &lab,
        &inv,
        &out,
        free_udp(),
        &["--register-attempts", "20", "--retries", "20"],
    );
    let _alarms = Alarms::start(&lab, devs.clone());
    assert_eq!(s.wait(Duration::from_secs(240)), 0, "{}", s.seen.join("\n"));
    stop.store(true, Ordering::Relaxed);
    check_evidence(&out, agent_dir.path(), &devs, 1);
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn device_unreachable_for_90s_is_retried_until_fetched() {
    require_lab();
    let lab = Lab::up(2, &[]);
    let agent_dir = tempfile::tempdir().unwrap();
    let _agent = Agent::start(&lab, agent_dir.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let devs = lab.devices();
    let mut s = Session::start(
        &lab,
        &lab.inventory(),
        out.path(),
        free_udp(),
        &["--retries", "1"],
    );
    s.wait_capturing(2);
    // The first device drops off the network as its Connection Lost fires.
    let mut c = lab.tc();
    c.args(["lab", "down", "--dir"])
        .arg(lab.path())
        .args([&devs[0], "--for", "90s"]);
    run_text(c).expect(0);
    let t = Instant::now();
    let _alarms = Alarms::start(&lab, devs.clone());
    assert_eq!(s.wait(Duration::from_secs(300)), 0, "{}", s.seen.join("\n"));
    assert!(
        t.elapsed() >= Duration::from_secs(85),
        "finished while the device was down: {:?}",
        t.elapsed()
    );
    assert!(
        s.count("\"status\":\"retry\"") >= 5,
        "retried every interval"
    );
    check_evidence(out.path(), agent_dir.path(), &devs, 1);
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn agent_killed_and_restarted_mid_session() {
    require_lab();
    let lab = Lab::up(2, &[]);
    let agent_dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&lab, agent_dir.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let devs = lab.devices();
    let mut s = Session::start(&lab, &lab.inventory(), out.path(), free_udp(), &[]);
    s.wait_capturing(2);
    agent.kill9();
    std::thread::sleep(Duration::from_secs(1));
    let _agent = Agent::start(&lab, agent_dir.path(), &[]);
    let _alarms = Alarms::start(&lab, devs.clone());
    assert_eq!(s.wait(Duration::from_secs(240)), 0, "{}", s.seen.join("\n"));
    check_evidence(out.path(), agent_dir.path(), &devs, 1);
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn session_killed_with_9_and_resumed() {
    require_lab();
    let lab = Lab::up(2, &[]);
    let agent_dir = tempfile::tempdir().unwrap();
    let _agent = Agent::start(&lab, agent_dir.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let devs = lab.devices();
    let port = free_udp();
    let mut s = Session::start(&lab, &lab.inventory(), out.path(), port, &[]);
    s.wait_capturing(2);
    s.kill(9);
    // Without --resume the journal is not silently replaced.
    let mut c = lab.tc();
    c.args(["session", "--devices"])
        .arg(lab.inventory())
        .arg("--out")
        .arg(out.path());
    let r = run(c).expect(2);
    assert!(r.stderr.contains("--resume"), "{}", r.dump());
    let mut s = Session::start(&lab, &lab.inventory(), out.path(), port, &["--resume"]);
    let _alarms = Alarms::start(&lab, devs.clone());
    assert_eq!(s.wait(Duration::from_secs(240)), 0, "{}", s.seen.join("\n"));
    assert!(s.seen[0].contains("\"resumed\":true"));
    check_evidence(out.path(), agent_dir.path(), &devs, 1);
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn sigint_mid_capture_winds_down_and_keeps_everything() {
    require_lab();
    let lab = Lab::up(2, &[]);
    let agent_dir = tempfile::tempdir().unwrap();
    let _agent = Agent::start(&lab, agent_dir.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let devs = lab.devices();
    let mut s = Session::start(
        &lab,
        &lab.inventory(),
        out.path(),
        free_udp(),
        &["--max-events", "0"],
    );
    s.wait_capturing(2);
    assert_eq!(s.kill(2), 130, "{}", s.seen.join("\n"));
    check_evidence(out.path(), agent_dir.path(), &devs, 1);
    // Nothing is left capturing on the devices.
    let r = {
        let mut c = lab.tc();
        c.args(["cpe", "status", "--devices"]).arg(lab.inventory());
        run(c).expect(0)
    };
    assert!(
        r.of_type("cpe.status")
            .iter()
            .all(|e| matches!(e, Event::CpeStatus { active: false, .. })),
        "{}",
        r.dump()
    );
}

/// Behaves on the wire as the original 1.0.6 agent does (read from its code): one thread that
/// reads a datagram, works on it, and only then reads the next; answers `<code> <reason>
/// <device>` without the request word; REGISTER gets no `100 Trying`; a VERIFY takes 10 s; a
/// repeated STOP gets 503 and a third one crashes it. It stands in for OVOC too: 2 s after a
/// capture starts, that device's Connection Lost goes to the REGISTER source.
struct OriginalAgent {
    addr: SocketAddr,
    read: Arc<std::sync::Mutex<Vec<String>>>,
    crashed: Arc<AtomicBool>,
    refused: Arc<std::sync::atomic::AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl OriginalAgent {
    fn start() -> OriginalAgent {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let a = OriginalAgent {
            addr: sock.local_addr().unwrap(),
            read: Arc::default(),
            crashed: Arc::default(),
            refused: Arc::default(),
            stop: Arc::default(),
        };
        let (read, crashed, refused, stop) = (
            Arc::clone(&a.read),
            Arc::clone(&a.crashed),
            Arc::clone(&a.refused),
            Arc::clone(&a.stop),
        );
        let (alarm_tx, alarm_rx) = mpsc::channel::<(SocketAddr, String)>();
        std::thread::spawn(move || {
            let ovoc = UdpSocket::bind("127.0.0.1:0").unwrap();
            while let Ok((to, device)) = alarm_rx.recv() {
                std::thread::sleep(Duration::from_secs(2));
                let text = format!(
                    "<129>Jun 22 16:16:05 ovoc : New Alarm - Connection Alarm, Major, \
                     Source:Board#1, Description:Connection Lost, IP Address:{device}"
                );
                let _ = ovoc.send_to(text.as_bytes(), to);
            }
        });
        std::thread::spawn(move || {
            let mut stops: std::collections::HashMap<String, u32> = Default::default();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                read.lock().unwrap().push(text.clone());
                let w: Vec<&str> = text.split(' ').collect();
                let (verb, device) = (w[0], w.get(1).copied().unwrap_or(""));
                let say = |s: &str| {
                    let _ = sock.send_to(format!("{s} {device}").as_bytes(), from);
                };
                match verb {
                    "REGISTER" => say("200 OK"),
                    "CAPTURE" => {
                        say("100 Trying");
                        std::thread::sleep(Duration::from_millis(300));
                        say("200 OK");
                        let _ = alarm_tx.send((from, device.to_string()));
                    }
                    "VERIFY" => {
                        say("100 Trying");
                        std::thread::sleep(Duration::from_secs(10));
                        say("200 OK");
                    }
                    "STOP" => {
                        say("100 Trying");
                        let n = stops.entry(device.to_string()).or_insert(0);
                        *n += 1;
                        match *n {
                            1 => say("200 OK"),
                            2 => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                say("503 Service Unavailable");
                            }
                            _ => {
                                crashed.store(true, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
        a
    }
}

impl Drop for OriginalAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn three_devices_on_an_original_agent_each_request_once() {
    require_lab();
    let lab = Lab::up(3, &[]);
    let agent = OriginalAgent::start();
    let work = tempfile::tempdir().unwrap();
    let inv = inventory_with_agent(&lab, agent.addr, work.path());
    let out = work.path().join("out");
    // The session's default resend (3 s), not the 1 s of the other tests.
    let mut s = Session::start(&lab, &inv, &out, free_udp(), &["--resend", "3s"]);
    assert_eq!(s.wait(Duration::from_secs(240)), 0, "{}", s.seen.join("\n"));
    assert!(
        s.seen.last().unwrap().contains("\"completed\":3"),
        "{}",
        s.seen.join("\n")
    );
    assert!(!agent.crashed.load(Ordering::Relaxed), "the agent crashed");
    assert_eq!(
        agent.refused.load(Ordering::Relaxed),
        0,
        "a STOP was repeated"
    );
    let mut read = agent.read.lock().unwrap().clone();
    read.sort();
    let mut want = Vec::new();
    for d in lab.devices() {
        for verb in ["REGISTER", "CAPTURE", "VERIFY"] {
            want.push(format!("{verb} {d}"));
        }
    }
    let stops: Vec<String> = read
        .iter()
        .filter(|r| r.starts_with("STOP "))
        .cloned()
        .collect();
    read.retain(|r| !r.starts_with("STOP "));
    want.sort();
    assert_eq!(read, want, "every request read exactly once");
    assert_eq!(stops.len(), 3, "{stops:?}");
    assert_eq!(s.count("\"task\":\"stop\",\"status\":\"ok\""), 3);
}

/// Passes the control datagrams between the session and an agent, dropping every STOP while
/// `drop_stops` is set.
fn stop_eating_relay(agent: SocketAddr, drop_stops: Arc<AtomicBool>) -> SocketAddr {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&front, &back] {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    }
    let addr = front.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut session: Option<SocketAddr> = None;
        let mut buf = [0u8; 65536];
        loop {
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                session = Some(from);
                if !(buf.starts_with(b"STOP ") && drop_stops.load(Ordering::Relaxed)) {
                    let _ = back.send_to(&buf[..n], agent);
                }
            }
            if let Ok((n, _)) = back.recv_from(&mut buf) {
                if let Some(s) = session {
                    let _ = front.send_to(&buf[..n], s);
                }
            }
        }
    });
    addr
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn a_stop_never_answered_fails_the_device_and_resume_completes_it() {
    require_lab();
    let lab = Lab::up(1, &[]);
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&lab, agent_dir.path(), &[]);
    let drop_stops = Arc::new(AtomicBool::new(true));
    let relay = stop_eating_relay(agent.listen, Arc::clone(&drop_stops));
    let work = tempfile::tempdir().unwrap();
    let inv = inventory_with_agent(&lab, relay, work.path());
    let out = work.path().join("out");
    let devs = lab.devices();
    let port = free_udp();
    let mut s = Session::start(&lab, &inv, &out, port, &["--retries", "2"]);
    let alarms = Alarms::start(&lab, devs.clone());
    assert_eq!(s.wait(Duration::from_secs(240)), 1, "{}", s.seen.join("\n"));
    drop(alarms);
    let last = s.seen.last().unwrap();
    assert!(
        last.contains("\"completed\":0") && last.contains("\"failed\":1"),
        "{last}"
    );
    assert_eq!(s.count("\"task\":\"stop\",\"status\":\"failed\""), 1);
    assert_eq!(s.count("\"task\":\"done\",\"status\":\"failed\""), 1);
    let report = std::fs::read_to_string(out.join("report.csv")).unwrap();
    assert!(report.contains(",stop,failed,"), "{report}");

    // The agent is reachable again: --resume sends the STOP, and the device completes.
    drop_stops.store(false, Ordering::Relaxed);
    let mut s = Session::start(&lab, &inv, &out, port, &["--resume"]);
    assert_eq!(s.wait(Duration::from_secs(120)), 0, "{}", s.seen.join("\n"));
    assert!(s.seen.last().unwrap().contains("\"completed\":1"));
    assert_eq!(
        s.count("\"task\":\"fetch\""),
        0,
        "the CPE file is not fetched again"
    );
    check_evidence(&out, agent_dir.path(), &devs, 1);
}
