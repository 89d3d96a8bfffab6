//! `tc ovoc serve` on a shared network (issue 16): other allowed senders, floods, VERIFY as a
//! reflector, a full disk, SIGHUP, and the shared key. Real agent, real tcpdump on loopback;
//! other senders are other loopback addresses inside `--allow 127.0.0.0/8`.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::ovoc::{cpe_name, final_code, lab_rules, ovoc_files, tcpdump_alive, Agent};
use crate::harness::*;

/// A listen address of its own for an agent without a lab (the labs use 127.0.10-200.x).
fn own_listen() -> SocketAddr {
    format!("127.0.{}.253:20001", 201 + unique() % 50)
        .parse()
        .unwrap()
}

/// `tc ovoc serve --no-ovoc-rules` on lo with quick probes, plus `extra`.
fn agent(dir: &Path, extra: &[&str]) -> (Agent, PathBuf) {
    let listen = own_listen();
    let mut c = tc();
    c.args(["ovoc", "serve", "--interface", "lo", "--listen"])
        .arg(listen.to_string())
        .args(["--allow", "127.0.0.0/8", "--no-ovoc-rules", "--dir"])
        .arg(dir)
        .args(["--probes", "icmp,tcp", "--probe-count", "2"])
        .args(["--probe-interval", "100ms"])
        .args(extra);
    Agent::spawn(c, listen)
}

/// A controller on its own socket: the original's way, one socket, plain datagrams.
struct Ctl {
    sock: UdpSocket,
    agent: SocketAddr,
}

impl Ctl {
    fn at(addr: &str, agent: SocketAddr) -> Ctl {
        let sock = UdpSocket::bind(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // Room for a burst's three answers per request while the test reads elsewhere.
        rustix::net::sockopt::set_socket_recv_buffer_size(&sock, 4 << 20).unwrap();
        Ctl { sock, agent }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn send(&self, req: &str) {
        self.sock.send_to(req.as_bytes(), self.agent).unwrap();
    }

    /// Every answer up to the final one (not the `101 tc Agent` marker); None: no final
    /// answer in time.
    fn answers(&self) -> Option<Vec<String>> {
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        loop {
            let (n, _) = self.sock.recv_from(&mut buf).ok()?;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.starts_with("101 ") {
                continue;
            }
            let code: u16 = text.split(' ').next()?.parse().ok()?;
            got.push(text);
            if code >= 200 {
                return Some(got);
            }
        }
    }

    /// The final answer to `req`.
    fn ask(&self, req: &str) -> String {
        self.send(req);
        self.answers()
            .unwrap_or_else(|| panic!("no final answer to {req:?}"))
            .pop()
            .unwrap()
    }
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap()
}

fn summary(agent: &mut Agent) -> serde_json::Value {
    assert_eq!(agent.terminate(), 0);
    json(agent.seen.last().unwrap())
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn another_source_cannot_take_over_a_device_its_owner_is_capturing() {
    require_lab();
    let lab = Lab::up(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&lab, dir.path(), &[]);
    let dev = lab.devices()[0].clone();
    let owner = Ctl::at("127.0.0.1:0", agent.listen);
    let attacker = Ctl::at("127.0.0.2:0", agent.listen);
    assert_eq!(
        owner.ask(&format!("REGISTER {dev}")),
        format!("200 OK {dev} REGISTER")
    );
    assert_eq!(
        owner.ask(&format!("CAPTURE {dev}")),
        format!("200 OK {dev} CAPTURE")
    );
    let rule_port = |lab: &Lab| lab_rules(lab)[0]["dest_port"].as_u64();
    assert_eq!(rule_port(&lab), Some(u64::from(owner.addr().port())));
    for req in [
        format!("REGISTER {dev}"),
        format!("STOP {dev} CPE_attacker_chosen.pcap"),
        format!("VERIFY {dev}"),
        format!("CAPTURE {dev}"),
    ] {
        let verb = req.split(' ').next().unwrap();
        assert_eq!(attacker.ask(&req), format!("403 Forbidden {dev} {verb}"));
    }
    // `tc ovoc send` from a third address: refused too, and says so by its exit code.
    let mut c = lab.tc();
    c.args(["ovoc", "send", "--bind", "127.0.0.3:0", "--server"])
        .arg(agent.listen.to_string())
        .args(["REGISTER", &dev]);
    let r = run(c).expect(1);
    assert_eq!(final_code(&r), 403, "{}", r.dump());
    // Nothing moved: the rule points at the owner, the capture runs.
    assert_eq!(rule_port(&lab), Some(u64::from(owner.addr().port())));
    let refusals = agent.lines_with("\"code\":403");
    assert_eq!(refusals.len(), 5, "{refusals:?}");
    assert!(
        refusals[0].contains("belongs to 127.0.0.1"),
        "{}",
        refusals[0]
    );
    // The owner restarted on a new port: its REGISTER re-points the rule; its STOP works.
    drop(owner);
    let owner = Ctl::at("127.0.0.1:0", agent.listen);
    assert_eq!(
        owner.ask(&format!("REGISTER {dev}")),
        format!("200 OK {dev} REGISTER")
    );
    assert_eq!(rule_port(&lab), Some(u64::from(owner.addr().port())));
    let cpe = cpe_name(&dev, 3);
    assert_eq!(
        owner.ask(&format!("STOP {dev} {cpe}")),
        format!("200 OK {dev} STOP")
    );
    let files = ovoc_files(dir.path(), &dev);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0]
        .to_str()
        .unwrap()
        .ends_with("07.00.03.000000-0.pcap"));
    let s = summary(&mut agent);
    assert_eq!(s["forbidden"], 5, "{s}");
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn a_register_ovoc_refuses_creates_nothing_usable() {
    require_lab();
    let lab = Lab::up(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&lab, dir.path(), &[]);
    let ctl = Ctl::at("127.0.0.1:0", agent.listen);
    // 127.0.254.9 is no device of the lab's OVOC.
    let r = ctl.ask("REGISTER 127.0.254.9");
    assert_eq!(r, "503 Service Unavailable 127.0.254.9 REGISTER");
    for (req, verb) in [
        ("CAPTURE 127.0.254.9", "CAPTURE"),
        ("VERIFY 127.0.254.9", "VERIFY"),
    ] {
        assert_eq!(ctl.ask(req), format!("404 Not Found 127.0.254.9 {verb}"));
    }
    assert!(agent.lines_with("ovoc.capture_started").is_empty());
    assert!(lab_rules(&lab).is_empty());
    let state = std::fs::read_to_string(dir.path().join(".tc/state.json")).unwrap_or_default();
    assert!(!state.contains("127.0.254.9"), "{state}");
}

#[test]
#[ignore = "needs root and tcpdump (captures on lo): as root, cargo test -- --include-ignored"]
fn four_spellings_of_one_host_are_one_capture() {
    require("tcpdump");
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, _) = agent(dir.path(), &[]);
    let ctl = Ctl::at("127.0.0.1:0", agent.listen);
    assert_eq!(ctl.ask("REGISTER localhost"), "200 OK localhost REGISTER");
    for spelling in ["localhost", "LOCALHOST", "127.0.0.1", "::ffff:127.0.0.1"] {
        assert_eq!(
            ctl.ask(&format!("CAPTURE {spelling}")),
            format!("200 OK {spelling} CAPTURE")
        );
    }
    // inet_aton's other forms of the address are not dotted quads, nor host names (a last label
    // of digits): refused, so they cannot start a second capture either.
    // With the final dot of a fully qualified name too.
    for odd in ["127.1", "2130706433", "127.1.", "2130706433.", "0x7f.1."] {
        assert_eq!(
            ctl.ask(&format!("CAPTURE {odd}")),
            format!("400 Bad Request {odd} CAPTURE")
        );
    }
    let started = agent.lines_with("ovoc.capture_started");
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(json(&started[0])["device"], "127.0.0.1");
    assert_eq!(
        ctl.ask("STOP 127.0.0.1 CPE_device_localhost_X.pcap"),
        "200 OK 127.0.0.1 STOP"
    );
    // One capture's files: its ring may have turned (on lo, 127.0.0.1 also carries the other
    // tests' traffic), so one or more parts, all of this one STOP's name.
    let files = ovoc_files(dir.path(), "localhost");
    assert!(
        !files.is_empty()
            && files.iter().all(|f| f
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("OVOC_device_localhost_X-"))),
        "{files:?}"
    );
    assert_eq!(summary(&mut agent)["captures_started"], 1);
}

/// REGISTER for `n` devices 127.0.77.x from `ctl`, then CAPTURE for all, sent at once.
fn send_captures(ctl: &Ctl, n: u32) {
    for i in 1..=n {
        ctl.send(&format!("REGISTER 127.0.77.{i}"));
    }
    for _ in 1..=n {
        ctl.answers().unwrap();
    }
    for i in 1..=n {
        ctl.send(&format!("CAPTURE 127.0.77.{i}"));
    }
}

/// The final answers to `n` requests, in arrival order.
fn finals(ctl: &Ctl, n: u32) -> Vec<String> {
    (0..n)
        .map(|_| ctl.answers().unwrap().pop().unwrap())
        .collect()
}

#[test]
#[ignore = "needs root and tcpdump (captures on lo): as root, cargo test -- --include-ignored"]
fn captures_past_the_limit_are_refused_and_the_loop_keeps_answering() {
    require("tcpdump");
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, _) = agent(dir.path(), &["--max-captures", "60"]);
    let flood = Ctl::at("127.0.0.2:0", agent.listen);
    let legit = Ctl::at("127.0.0.1:0", agent.listen);
    send_captures(&flood, 100);
    // Sent while the flood's tcpdumps are being spawned.
    assert_eq!(
        legit.ask("REGISTER 127.0.78.1"),
        "200 OK 127.0.78.1 REGISTER"
    );
    let finals = finals(&flood, 100);
    let ok = finals.iter().filter(|a| a.starts_with("200 OK")).count();
    let refused = finals.iter().filter(|a| a.starts_with("503")).count();
    assert_eq!((ok, refused), (60, 40), "{finals:?}");
    agent.drain();
    // The legitimate REGISTER was handled before most of those tcpdumps had started: the
    // loop does not wait for spawns (in the loop, each took 13 ms).
    let at = |pred: &dyn Fn(&String) -> bool, nth: usize| {
        agent
            .seen
            .iter()
            .enumerate()
            .filter(|(_, l)| pred(l))
            .nth(nth)
            .map(|(i, _)| i)
    };
    let legit_ok = at(
        &|l| {
            l.contains("\"ovoc.response\"")
                && l.contains("127.0.78.1")
                && l.contains("\"code\":200")
        },
        0,
    );
    let started_20th = at(&|l| l.contains("\"ovoc.capture_started\""), 19);
    assert!(
        legit_ok.unwrap() < started_20th.unwrap(),
        "{:?} {:?}",
        legit_ok,
        started_20th
    );
    let why = agent.lines_with("\"code\":503");
    assert_eq!(why.len(), 40);
    assert!(
        why.iter()
            .all(|l| l.contains("limit: 60 captures running (--max-captures 60)")),
        "{why:?}"
    );
    // Once one capture is stopped, the legitimate controller's capture starts.
    assert_eq!(
        flood.ask("STOP 127.0.77.1 CPE_a.pcap"),
        "200 OK 127.0.77.1 STOP"
    );
    assert_eq!(legit.ask("CAPTURE 127.0.78.1"), "200 OK 127.0.78.1 CAPTURE");
    assert_eq!(summary(&mut agent)["captures_started"], 61);
}

#[test]
#[ignore = "needs root and tcpdump (captures on lo): as root, cargo test -- --include-ignored"]
fn the_disk_budget_refuses_new_captures_and_deletes_nothing() {
    require("tcpdump");
    let dir = tempfile::tempdir().unwrap();
    // A capture may write 3 x 1 MB: with 10 MiB, three run and a fourth is refused.
    let (mut agent, _) = agent(
        dir.path(),
        &[
            "--ring-size",
            "1",
            "--disk-budget",
            "10MiB",
            "--min-free",
            "0",
        ],
    );
    let ctl = Ctl::at("127.0.0.1:0", agent.listen);
    send_captures(&ctl, 4);
    let finals = finals(&ctl, 4);
    let refused: Vec<&String> = finals.iter().filter(|a| a.starts_with("503")).collect();
    assert_eq!(refused.len(), 1, "{finals:?}");
    let why = agent.lines_with("\"code\":503");
    assert!(why[0].contains("over --disk-budget 10.0 MiB"), "{why:?}");
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(files >= 3, "captures' files are kept");
    summary(&mut agent);
}

#[test]
#[ignore = "needs root and tcpdump (captures on lo): as root, cargo test -- --include-ignored"]
fn a_flooding_source_is_limited_while_another_is_served() {
    require("tcpdump");
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, _) = agent(dir.path(), &["--rate-limit", "50"]);
    let flood = Ctl::at("127.0.0.2:0", agent.listen);
    for i in 0..3000 {
        if i % 100 == 0 {
            // Paced a little, so that the socket's buffer holds what is sent.
            std::thread::sleep(Duration::from_millis(2));
        }
        flood.send(&format!("REGISTER 127.0.79.{}", i % 250 + 1));
    }
    let legit = Ctl::at("127.0.0.1:0", agent.listen);
    assert_eq!(
        legit.ask("REGISTER 127.0.78.2"),
        "200 OK 127.0.78.2 REGISTER"
    );
    let events = agent.lines_with("\"ovoc.limited\"");
    assert!(!events.is_empty());
    assert!(events[0].contains("127.0.0.2"), "{events:?}");
    // One each time the source goes over, not one per datagram: at most once per pause.
    assert!(events.len() <= 31, "{events:?}");
    let s = summary(&mut agent);
    assert!(s["limited"].as_u64().unwrap() > events.len() as u64, "{s}");
    // What was let through is the burst and the rate, not the flood.
    let from_flood = agent
        .lines_with("\"ovoc.request\"")
        .iter()
        .filter(|l| l.contains("127.0.0.2:"))
        .count() as u64;
    assert!(
        from_flood < 1000,
        "{from_flood} of the flood's 3,000 let through"
    );
}

#[test]
#[ignore = "needs root and tcpdump (captures on lo): as root, cargo test -- --include-ignored"]
fn verify_is_no_reflector() {
    require("tcpdump");
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, _) = agent(dir.path(), &["--max-verifies", "2"]);
    let owner = Ctl::at("127.0.0.1:0", agent.listen);
    let other = Ctl::at("127.0.0.2:0", agent.listen);
    let listen_ip = agent.listen.ip().to_string();
    // No VERIFY without a capture, nor of another source's device.
    owner.ask("REGISTER 127.0.76.1");
    assert_eq!(
        owner.ask("VERIFY 127.0.76.1"),
        "404 Not Found 127.0.76.1 VERIFY"
    );
    assert_eq!(owner.ask("CAPTURE 127.0.76.1"), "200 OK 127.0.76.1 CAPTURE");
    assert_eq!(
        other.ask("VERIFY 127.0.76.1"),
        "403 Forbidden 127.0.76.1 VERIFY"
    );
    // Groups of hosts, nothing, the agent itself: 400, no probe.
    for target in ["224.0.0.1", "0.0.0.0", "255.255.255.255", "::", &listen_ip] {
        owner.ask(&format!("REGISTER {target}"));
        owner.ask(&format!("CAPTURE {target}"));
        assert_eq!(
            owner.ask(&format!("VERIFY {target}")),
            format!("400 Bad Request {target} VERIFY")
        );
    }
    assert!(agent.lines_with("\"ovoc.verify\"").is_empty());
    // Probe runs at once are bounded: past two, 503 with the reason.
    for i in 2..=4 {
        owner.ask(&format!("REGISTER 127.0.76.{i}"));
        owner.ask(&format!("CAPTURE 127.0.76.{i}"));
    }
    for i in 1..=4 {
        owner.send(&format!("VERIFY 127.0.76.{i}"));
    }
    let finals: Vec<String> = (0..4)
        .map(|_| owner.answers().unwrap().pop().unwrap())
        .collect();
    let busy = finals.iter().filter(|a| a.starts_with("503")).count();
    assert_eq!(busy, 2, "{finals:?}");
    assert!(agent
        .lines_with("\"code\":503")
        .iter()
        .all(|l| l.contains("--max-verifies 2")));
    // The two that ran were answered (every probe bounded by its deadline).
    assert_eq!(agent.lines_with("\"ovoc.verify\"").len(), 2);
    summary(&mut agent);
}

/// A tmpfs of `mib` MiB at a new directory (unmounted on drop).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(mib: u32) -> Tmpfs {
        let d = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(d.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        Tmpfs(d)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// Fills the filesystem of `file` to the last byte.
fn fill(file: PathBuf) {
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4096"])
        .arg(format!("of={}", file.display()))
        .stderr(std::process::Stdio::null())
        .status();
}

#[test]
#[ignore = "needs root and tcpdump (captures on lo): as root, cargo test -- --include-ignored"]
fn a_full_disk_ends_the_capture_with_the_count_on_disk_and_no_log_flood() {
    require("tcpdump");
    require("ping");
    require("capinfos");
    let fs = Tmpfs::new(6);
    // 3 MiB of other data, removed at the end to make room again.
    let filler = fs.path().join("filler");
    let st = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=3"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let (mut agent, stderr) = agent(
        fs.path(),
        &[
            "--ring-files",
            "10",
            "--ring-size",
            "1",
            "--min-free",
            "1MiB",
        ],
    );
    let ctl = Ctl::at("127.0.0.1:0", agent.listen);
    ctl.ask("REGISTER 127.0.75.1");
    assert_eq!(ctl.ask("CAPTURE 127.0.75.1"), "200 OK 127.0.75.1 CAPTURE");
    // About 5,000 x 2 packets of 1,442 bytes: more than 6 MiB.
    let _ = Command::new("ping")
        .args(["-f", "-c", "5000", "-s", "1400", "127.0.75.1"])
        .stdout(std::process::Stdio::null())
        .status();
    let ended = json(&agent.wait_for("\"ovoc.capture_ended\"", Duration::from_secs(20)));
    assert!(
        ended["reason"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("no space left"),
        "{ended}"
    );
    let files: Vec<PathBuf> = std::fs::read_dir(fs.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("tmp_device_")
        })
        .collect();
    let on_disk = ended["packets_on_disk"].as_u64().unwrap();
    let counted: u64 = files.iter().map(|f| tshark_count(f)).sum();
    assert_eq!(on_disk, counted, "{ended}");
    assert!(ended["packets_captured"].as_u64().unwrap() >= on_disk);
    // New captures are refused with the reason, not a misleading timeout.
    ctl.ask("REGISTER 127.0.75.2");
    let _ = ctl.ask("CAPTURE 127.0.75.2");
    let refused = agent.lines_with("less than --min-free 1.0 MiB");
    assert_eq!(refused.len(), 1, "{refused:?}");
    // Every byte gone: a change that cannot be saved is not answered 200.
    fill(fs.path().join("more"));
    assert_eq!(
        ctl.ask("REGISTER 127.0.75.3"),
        "503 Service Unavailable 127.0.75.3 REGISTER"
    );
    assert!(agent
        .lines_with("state not saved")
        .iter()
        .any(|l| l.contains("127.0.75.3")));
    std::thread::sleep(Duration::from_secs(3));
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(fs.path().join("more")).unwrap();
    assert_eq!(ctl.ask("REGISTER 127.0.75.3"), "200 OK 127.0.75.3 REGISTER");
    summary(&mut agent);
    let log = std::fs::read_to_string(&stderr).unwrap();
    let errors = log.lines().filter(|l| l.contains("saving state")).count();
    assert_eq!(
        errors, 1,
        "one line per state change, not per retry:\n{log}"
    );
    assert!(log.contains("state saved again"), "{log}");
}

/// Packets tshark reads in a file (a record cut short at the end is not one).
fn tshark_count(f: &Path) -> u64 {
    let out = Command::new("capinfos")
        .args(["-c", "-M"])
        .arg(f)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Number of packets:"))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

#[test]
#[ignore = "needs root and tcpdump (captures on lo): as root, cargo test -- --include-ignored"]
fn sighup_is_ignored_and_the_agent_keeps_capturing() {
    require("tcpdump");
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, stderr) = agent(dir.path(), &[]);
    let ctl = Ctl::at("127.0.0.1:0", agent.listen);
    ctl.ask("REGISTER 127.0.74.1");
    assert_eq!(ctl.ask("CAPTURE 127.0.74.1"), "200 OK 127.0.74.1 CAPTURE");
    let pid = json(&agent.wait_for("ovoc.capture_started", Duration::from_secs(5)))["pid"]
        .as_u64()
        .unwrap() as u32;
    let agent_pid = agent.child.as_ref().unwrap().id();
    let hups = || {
        let log = std::fs::read_to_string(&stderr).unwrap();
        log.lines().filter(|l| l.contains("SIGHUP ignored")).count()
    };
    for n in 1..=2 {
        // Twice: a second SIGHUP is no "second signal, exit at once" either.
        signal(agent_pid, 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while hups() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(hups(), n, "SIGHUP {n} not handled");
        // Handled: a shutting-down agent would answer 503 here.
        assert_eq!(ctl.ask("REGISTER 127.0.74.1"), "200 OK 127.0.74.1 REGISTER");
    }
    assert!(
        agent.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent exited on SIGHUP"
    );
    assert!(tcpdump_alive(pid), "tcpdump {pid} stopped by SIGHUP");
    // The capture goes on and ends as any other, by its controller's STOP.
    assert_eq!(
        ctl.ask("STOP 127.0.74.1 CPE_device_hup_X.pcap"),
        "200 OK 127.0.74.1 STOP"
    );
    assert_eq!(ovoc_files(dir.path(), "hup").len(), 1);
    let s = summary(&mut agent);
    assert_eq!(s["captures_started"], 1);
    assert!(agent.lines_with("agent shutdown").is_empty());
    assert_eq!(hups(), 2, "one line per SIGHUP");
}

/// The shared key, in a file only root reads.
fn key_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("agent.key");
    std::fs::write(&p, "a shared key of the test, 32 bytes\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn signed_send(
    agent: &Agent,
    key: Option<&Path>,
    verb: &str,
    dev: &str,
    file: Option<&str>,
) -> Run {
    let mut c = tc();
    c.args([
        "ovoc",
        "send",
        "--bind",
        "127.0.0.1:0",
        "--timeout",
        "10s",
        "--server",
    ])
    .arg(agent.listen.to_string());
    if let Some(k) = key {
        c.arg("--key-file").arg(k);
    }
    c.args([verb, dev]).args(file);
    run(c)
}

#[test]
#[ignore = "needs root and tcpdump (captures on lo): as root, cargo test -- --include-ignored"]
fn with_a_key_signed_controllers_work_and_plain_ones_only_where_allowed() {
    require("tcpdump");
    require("openssl");
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let data = dir.path().join("agent");
    let (mut agent, _) = agent(
        &data,
        &[
            "--key-file",
            key.to_str().unwrap(),
            "--allow-unauthenticated",
            "127.0.0.3/32",
        ],
    );
    let dev = "127.0.73.1";
    for (verb, file) in [("REGISTER", None), ("CAPTURE", None), ("VERIFY", None)] {
        let r = signed_send(&agent, Some(&key), verb, dev, file);
        assert_eq!(final_code(&r), 200, "{}", r.dump());
    }
    let r = signed_send(
        &agent,
        Some(&key),
        "STOP",
        dev,
        Some("CPE_device_127.0.73.1_X.pcap"),
    );
    assert_eq!(final_code(&r), 200, "{}", r.dump());
    // A plain original-format controller outside --allow-unauthenticated: refused.
    let plain = Ctl::at("127.0.0.1:0", agent.listen);
    assert_eq!(
        plain.ask("REGISTER 127.0.73.2"),
        "401 Unauthorized 127.0.73.2 REGISTER"
    );
    let r = signed_send(&agent, None, "REGISTER", "127.0.73.2", None);
    assert_eq!(final_code(&r), 401, "{}", r.dump());
    // Inside it: a whole round in plain 1.0.6, answered in plain 1.0.6.
    let original = Ctl::at("127.0.0.3:0", agent.listen);
    original_round(&original, "127.0.73.3");
    // A replayed signed request and a forged one are dropped unanswered.
    let k = std::fs::read(&key).unwrap();
    let replay = Ctl::at("127.0.0.1:0", agent.listen);
    replay
        .sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let signed = sign(&k[..k.len() - 1], "REGISTER 127.0.73.4");
    replay.send(&signed);
    assert!(replay.answers().unwrap().last().unwrap().contains("tc1 "));
    replay.send(&signed);
    assert!(replay.answers().is_none(), "a replay was answered");
    replay.send(&signed.replace("127.0.73.4", "127.0.73.5"));
    assert!(replay.answers().is_none(), "a forged request was answered");
    let s = summary(&mut agent);
    assert_eq!(s["unauthenticated"], 4, "{s}");
}

/// A signed request, built here from the README's description (not by the agent's code).
fn sign(key: &[u8], body: &str) -> String {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let nonce = format!("{:016x}", unique() as u64 ^ 0x5eed_0000_0000);
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-mac", "HMAC", "-macopt"])
        .arg(format!("hexkey:{}", hex(key)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(format!("tc1 req\n{ts}\n{nonce}\n{body}").as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text.rsplit(' ').next().unwrap().trim();
    assert_eq!(mac.len(), 64, "openssl: {text}");
    format!("{body} tc1 {ts} {nonce} {mac}")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// REGISTER, CAPTURE, VERIFY, STOP as the original controller sends them, every answer in the
/// 1.0.6 form (no trailer).
fn original_round(ctl: &Ctl, dev: &str) {
    let cpe = format!("CPE_device_{dev}_2026-11-27T07.00.00.000000.pcap");
    for (req, want) in [
        (
            format!("REGISTER {dev}"),
            vec![format!("200 OK {dev} REGISTER")],
        ),
        (
            format!("CAPTURE {dev}"),
            vec![
                format!("100 Trying {dev} CAPTURE"),
                format!("200 OK {dev} CAPTURE"),
            ],
        ),
        (
            format!("VERIFY {dev}"),
            vec![
                format!("100 Trying {dev} VERIFY"),
                format!("200 OK {dev} VERIFY"),
            ],
        ),
        (
            format!("STOP {dev} {cpe}"),
            vec![
                format!("100 Trying {dev} STOP"),
                format!("200 OK {dev} STOP"),
            ],
        ),
    ] {
        ctl.send(&req);
        assert_eq!(ctl.answers().unwrap(), want, "{req}");
    }
}

#[test]
#[ignore = "needs root and tcpdump (captures on lo): as root, cargo test -- --include-ignored"]
fn without_a_key_an_original_controller_completes_a_round() {
    require("tcpdump");
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, _) = agent(dir.path(), &[]);
    original_round(&Ctl::at("127.0.0.1:0", agent.listen), "127.0.72.1");
    assert_eq!(ovoc_files(dir.path(), "127.0.72.1").len(), 1);
    summary(&mut agent);
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn a_session_with_the_agents_key_completes_a_round() {
    require_lab();
    let lab = Lab::up(1, &[]);
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path());
    let agent_dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(
        &lab,
        agent_dir.path(),
        &["--key-file", key.to_str().unwrap()],
    );
    let out = tempfile::tempdir().unwrap();
    let listen = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = lab.tc();
    c.args(["session", "--devices"])
        .arg(lab.inventory())
        .arg("--out")
        .arg(out.path())
        .args([
            "--listen",
            &listen.to_string(),
            "--snmp-user",
            "CaptureScript",
        ])
        .args([
            "--resend",
            "1s",
            "--fetch-retry-interval",
            "3s",
            "--timeout",
            "3s",
        ])
        .arg("--agent-key")
        .arg(format!("{}={}", agent.listen, key.display()));
    c.stdout(std::process::Stdio::piped())
        .stderr(stderr_log("session"));
    let session = c.spawn().unwrap();
    // OVOC's Connection Lost, again and again (the session ignores it until it captures).
    let dev = lab.devices()[0].clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let alarms = {
        let (done, dir, env, dev) = (done.clone(), lab.path(), lab.env.clone(), dev.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let mut c = tc();
                c.envs(&env)
                    .args(["lab", "alarm", "--dir"])
                    .arg(&dir)
                    .arg(&dev);
                c.stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
                let _ = c.status();
                std::thread::sleep(Duration::from_millis(700));
            }
        })
    };
    let output = session.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    alarms.join().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    events(&text);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.lines().last().unwrap().contains("\"completed\":1"),
        "{text}"
    );
    assert_eq!(ovoc_files(agent_dir.path(), &dev).len(), 1);
    let s = summary(&mut agent);
    assert_eq!(s["unauthenticated"], 0, "{s}");
}

/// `tc ovoc send` takes answers from the server's own address only: a `200` from the server's
/// host on another port, sent before the server's own `503`, is not the answer.
#[test]
fn ovoc_send_takes_answers_from_the_server_only() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let side = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, client) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"REGISTER 127.0.73.1");
        side.send_to(b"200 OK 127.0.73.1 REGISTER", client).unwrap();
        server
            .send_to(b"503 Service Unavailable 127.0.73.1 REGISTER", client)
            .unwrap();
    });
    let mut c = tc();
    c.args(["ovoc", "send", "--bind", "127.0.0.1:0", "--timeout", "20s"])
        .arg("--server")
        .arg(addr.to_string())
        .args(["REGISTER", "127.0.73.1"]);
    let r = run(c);
    fake.join().unwrap();
    assert_eq!(final_code(&r), 503, "{}", r.dump());
    assert_eq!(r.of_type("ovoc.reply").len(), 1, "{}", r.dump());
}
