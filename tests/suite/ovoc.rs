//! `tc ovoc serve` with the real tcpdump on loopback, against `tc lab up` (emulated CPEs and
//! OVOC REST, real sshd and snmpd), driven by `tc ovoc send` and by raw datagrams.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A running agent; its stdout lines are collected and schema-checked.
pub struct Agent {
    pub child: Option<Child>,
    pub listen: SocketAddr,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    /// Its stderr, shown when it ends before a line the test waits for.
    err: PathBuf,
}

impl Agent {
    pub fn start(lab: &Lab, dir: &Path, extra: &[&str]) -> Agent {
        let listen: SocketAddr = format!("{}:20001", lab.ovoc_agent_addr()).parse().unwrap();
        let mut c = lab.tc();
        c.args([
            "ovoc",
            "serve",
            "--interface",
            "lo",
            "--listen",
            &listen.to_string(),
            "--allow",
            "127.0.0.0/8",
        ]);
        c.arg("--dir")
            .arg(dir)
            .args(["--probes", "icmp,snmp,tcp"])
            .args(extra);
        Agent::spawn(c, listen).0
    }

    /// A `tc ovoc serve` command line, started; its stderr's path too.
    pub fn spawn(mut c: std::process::Command, listen: SocketAddr) -> (Agent, PathBuf) {
        let (err, path) = stderr_log_at("agent");
        c.stdout(Stdio::piped()).stderr(err);
        let mut child = c.spawn().expect("spawn tc ovoc serve");
        let rx = line_reader(&mut child);
        let mut a = Agent {
            child: Some(child),
            listen,
            lines: rx,
            seen: Vec::new(),
            err: path.clone(),
        };
        a.wait_for("ovoc.listening", Duration::from_secs(20));
        (a, path)
    }

    /// The lines so far that contain `needle`.
    pub fn lines_with(&mut self, needle: &str) -> Vec<String> {
        self.drain();
        self.seen
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Wait for a line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    assert_no_secret("agent stdout", &l);
                    events(&l);
                    self.seen.push(l);
                }
                Err(e) => panic!(
                    "agent printed no {needle:?} ({}); saw:\n{}\nits stderr ({}):\n{}",
                    match e {
                        mpsc::RecvTimeoutError::Timeout => format!("within {timeout:?}"),
                        mpsc::RecvTimeoutError::Disconnected => "it closed its stdout".into(),
                    },
                    self.seen.join("\n"),
                    self.err.display(),
                    std::fs::read_to_string(&self.err).unwrap_or_default()
                ),
            }
        }
    }

    pub fn drain(&mut self) {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
            assert_no_secret("agent stdout", &l);
            events(&l);
            self.seen.push(l);
        }
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn terminate(&mut self) -> i32 {
        let mut c = self.child.take().unwrap();
        signal(c.id(), 15);
        let st = wait_timeout(&mut c, Duration::from_secs(30));
        self.drain();
        st
    }

    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        signal(c.id(), 9);
        let _ = c.wait();
        self.drain();
    }

    pub fn send(&self, lab: &Lab, verb: &str, device: &str, file: Option<&str>) -> Run {
        send(&lab.env, self.listen, verb, device, file)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), 15);
            wait_timeout(&mut c, Duration::from_secs(20));
        }
    }
}

fn wait_timeout(c: &mut Child, t: Duration) -> i32 {
    let deadline = Instant::now() + t;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("process did not exit within {t:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tc ovoc send` with a lab's environment (usable from many threads at once).
pub fn send(
    env: &HashMap<String, String>,
    to: SocketAddr,
    verb: &str,
    device: &str,
    file: Option<&str>,
) -> Run {
    let mut c = tc();
    c.envs(env);
    c.args([
        "ovoc",
        "send",
        "--server",
        &to.to_string(),
        "--timeout",
        "20s",
        verb,
        device,
    ]);
    if let Some(f) = file {
        c.arg(f);
    }
    run(c)
}

pub fn final_code(r: &Run) -> u16 {
    match r
        .events
        .iter()
        .rev()
        .find(|e| matches!(e, Event::OvocReply { is_final: true, .. }))
    {
        Some(Event::OvocReply { code, .. }) => *code,
        _ => panic!("no final reply:\n{}", r.dump()),
    }
}

pub fn cpe_name(device: &str, n: u32) -> String {
    format!("CPE_device_{device}_2026-11-27T07.00.0{n}.000000.pcap")
}

pub fn ovoc_files(dir: &Path, device: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("OVOC_device_{device}_"))
        })
        .collect();
    v.sort();
    v
}

pub fn lab_rules(lab: &Lab) -> Vec<serde_json::Value> {
    let text =
        std::fs::read_to_string(lab.path().join("ovoc-rules.json")).unwrap_or_else(|_| "[]".into());
    serde_json::from_str::<Vec<serde_json::Value>>(&text).unwrap()
}

/// REGISTER, CAPTURE, VERIFY, STOP for each device, all devices at once.
fn cycle(devices: u32) {
    let lab = Lab::up(devices, &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&lab, dir.path(), &[]);
    let devs = lab.devices();
    let (env, to) = (lab.env.clone(), agent.listen);
    std::thread::scope(|s| {
        for (i, d) in devs.iter().enumerate() {
            let env = &env;
            s.spawn(move || {
                assert_eq!(final_code(&send(env, to, "REGISTER", d, None)), 200, "{d}");
                assert_eq!(final_code(&send(env, to, "CAPTURE", d, None)), 200, "{d}");
                let v = send(env, to, "VERIFY", d, None);
                assert_eq!(final_code(&v), 200, "{d}: {}", v.dump());
                let stop = send(env, to, "STOP", d, Some(&cpe_name(d, (i % 10) as u32)));
                assert_eq!(final_code(&stop), 200, "{d}");
                // 100 Trying first, as 1.0.6 agents answer.
                assert!(
                    matches!(stop.events[0], Event::OvocReply { code: 100, .. }),
                    "{}",
                    stop.dump()
                );
            });
        }
    });
    // Rules point at the controllers' sockets, one per device.
    let rules = lab_rules(&lab);
    assert_eq!(rules.len(), devs.len(), "{rules:?}");
    for (i, d) in devs.iter().enumerate() {
        let files = ovoc_files(dir.path(), d);
        let want = format!("OVOC_device_{d}_2026-11-27T07.00.0{}.000000-0.pcap", i % 10);
        assert_eq!(
            files
                .iter()
                .map(|f| f.file_name().unwrap().to_str().unwrap())
                .collect::<Vec<_>>(),
            [want.as_str()]
        );
        let n = capinfos_packets(&files);
        // The VERIFY probes (ICMP, SNMP, TCP) to this device went through its capture.
        assert!(n[0] >= 3, "{d}: {n:?}");
    }
    agent.drain();
    let verifies = agent
        .seen
        .iter()
        .filter(|l| l.contains("\"ovoc.verify\""))
        .count();
    assert_eq!(verifies, devs.len());
    assert_eq!(agent.terminate(), 0);
    assert!(agent.seen.last().unwrap().contains("\"ovoc.summary\""));
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn one_device_register_capture_verify_stop() {
    require_lab();
    cycle(1);
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn twenty_devices_at_once() {
    require_lab();
    cycle(20);
}

#[test]
fn refuses_to_start_without_allow() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tc();
    c.args([
        "ovoc",
        "serve",
        "--interface",
        "lo",
        "--no-ovoc-rules",
        "--listen",
        "127.0.0.1:0",
        "--dir",
    ])
    .arg(dir.path());
    let r = run(c).expect(2);
    assert!(r.stderr.contains("--allow"), "{}", r.dump());
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn idle_rules_are_deleted_by_the_timer() {
    require_lab();
    let lab = Lab::up(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&lab, dir.path(), &["--rule-idle", "2s"]);
    let devs = lab.devices();
    for d in &devs {
        assert_eq!(final_code(&agent.send(&lab, "REGISTER", d, None)), 200);
    }
    // The second device keeps capturing: its rule must stay.
    assert_eq!(
        final_code(&agent.send(&lab, "CAPTURE", &devs[1], None)),
        200
    );
    assert_eq!(lab_rules(&lab).len(), 2);
    agent.wait_for("\"action\":\"deleted\"", Duration::from_secs(10));
    let rules = lab_rules(&lab);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(rules[0]["name"].as_str().unwrap().ends_with(&devs[1]));
}

/// The next datagram on `s` that is not the agent's `101 tc Agent` marker (None: timed out).
fn answer(s: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = s.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("101 tc Agent ") {
            return Some(text);
        }
    }
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn hostile_datagrams_change_nothing() {
    require_lab();
    let lab = Lab::up(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let agent_dir = dir.path().join("agent");
    // The rate limit is lifted: this test is about what a datagram can do, not how many.
    let mut agent = Agent::start(
        &lab,
        &agent_dir,
        &["--no-ovoc-rules", "--rate-limit", "1000000"],
    );
    let dev = &lab.devices()[0];
    let marker = outside.join("pwned");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut answers: HashMap<String, String> = HashMap::new();
    let hostile: Vec<Vec<u8>> = vec![
        format!("CAPTURE x$(touch {})", marker.display()).into_bytes(),
        format!("CAPTURE a;touch {}", marker.display()).into_bytes(),
        format!("CAPTURE `touch {}`", marker.display()).into_bytes(),
        b"CAPTURE a b".to_vec(),
        format!("REGISTER {dev}").into_bytes(),
        format!("STOP {dev} ../outside/x.pcap").into_bytes(),
        format!("STOP {dev} /etc/passwd").into_bytes(),
        format!("STOP {dev} a\0b.pcap").into_bytes(),
    ];
    for h in &hostile {
        s.send_to(h, agent.listen).unwrap();
        if let Some(a) = answer(&s) {
            answers.insert(String::from_utf8_lossy(h).into_owned(), a);
        }
    }
    assert_eq!(
        answers[&format!("CAPTURE x$(touch {})", marker.display())],
        format!("400 Bad Request x$(touch CAPTURE")
    );
    assert!(answers["CAPTURE a b"].starts_with("400 Bad Request a CAPTURE"));
    assert_eq!(
        answers[&format!("STOP {dev} ../outside/x.pcap")],
        format!("400 Bad Request {dev} STOP")
    );
    assert_eq!(
        answers[&format!("STOP {dev} /etc/passwd")],
        format!("400 Bad Request {dev} STOP")
    );
    assert!(
        !answers.contains_key(&format!("STOP {dev} a\0b.pcap")),
        "NUL: dropped, no answer"
    );
    // 64 KiB and 10,000 random datagrams.
    s.send_to(&vec![b'A'; 65_000], agent.listen).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..10_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 300) as usize;
        let mut d: Vec<u8> = (0..len).map(|j| (x >> (j % 56)) as u8 ^ j as u8).collect();
        if i % 3 == 0 {
            d.splice(0..0, b"STOP ".iter().copied());
        }
        let _ = s.send_to(&d, agent.listen);
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Still answers a valid request.
    assert_eq!(final_code(&agent.send(&lab, "REGISTER", dev, None)), 200);
    assert!(!marker.exists(), "a request reached a shell");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "a file appeared outside DIR"
    );
    assert!(!Path::new("/etc/passwd.pcap").exists());
    assert_eq!(agent.terminate(), 0);
    let summary = agent.seen.last().unwrap().clone();
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert!(v["dropped"].as_u64().unwrap() > 1000, "{summary}");
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn kill_9_then_restart_adopts_and_stop_completes() {
    require_lab();
    let lab = Lab::up(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let dev = lab.devices()[0].clone();
    let mut agent = Agent::start(&lab, dir.path(), &["--no-ovoc-rules"]);
    assert_eq!(final_code(&agent.send(&lab, "REGISTER", &dev, None)), 200);
    assert_eq!(final_code(&agent.send(&lab, "CAPTURE", &dev, None)), 200);
    let started = agent.wait_for("ovoc.capture_started", Duration::from_secs(5));
    let pid = serde_json::from_str::<serde_json::Value>(&started).unwrap()["pid"]
        .as_u64()
        .unwrap();
    agent.kill9();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "tcpdump must outlive the agent"
    );
    let mut agent = Agent::start(&lab, dir.path(), &["--no-ovoc-rules"]);
    let adopted = agent.wait_for("ovoc.capture_adopted", Duration::from_secs(5));
    assert!(adopted.contains(&format!("\"pid\":{pid}")), "{adopted}");
    // Probe traffic after the restart lands in the adopted capture.
    assert_eq!(final_code(&agent.send(&lab, "VERIFY", &dev, None)), 200);
    assert_eq!(
        final_code(&agent.send(&lab, "STOP", &dev, Some(&cpe_name(&dev, 1)))),
        200
    );
    assert!(!tcpdump_alive(pid as u32), "tcpdump {pid} still running");
    let files = ovoc_files(dir.path(), &dev);
    assert_eq!(files.len(), 1);
    assert!(capinfos_packets(&files)[0] >= 3);
    assert_eq!(agent.terminate(), 0);
}

pub fn tcpdump_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn sigterm_mid_capture_stops_tcpdump_and_keeps_files() {
    require_lab();
    let lab = Lab::up(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let dev = lab.devices()[0].clone();
    let mut agent = Agent::start(&lab, dir.path(), &["--no-ovoc-rules"]);
    assert_eq!(final_code(&agent.send(&lab, "REGISTER", &dev, None)), 200);
    assert_eq!(final_code(&agent.send(&lab, "CAPTURE", &dev, None)), 200);
    assert_eq!(final_code(&agent.send(&lab, "VERIFY", &dev, None)), 200);
    let started = agent.wait_for("ovoc.capture_started", Duration::from_secs(5));
    let pid = serde_json::from_str::<serde_json::Value>(&started).unwrap()["pid"]
        .as_u64()
        .unwrap() as u32;
    assert_eq!(agent.terminate(), 0);
    assert!(!tcpdump_alive(pid));
    assert!(agent
        .seen
        .iter()
        .any(|l| l.contains("\"ovoc.capture_ended\"") && l.contains("agent shutdown")));
    let tmp: Vec<PathBuf> = std::fs::read_dir(dir.path())
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
    assert_eq!(tmp.len(), 1, "{tmp:?}");
    assert!(capinfos_packets(&tmp)[0] >= 3);
    // A restarted agent can still name them after the CPE file.
    let mut agent = Agent::start(&lab, dir.path(), &["--no-ovoc-rules"]);
    assert_eq!(
        final_code(&agent.send(&lab, "STOP", &dev, Some(&cpe_name(&dev, 2)))),
        200
    );
    assert_eq!(ovoc_files(dir.path(), &dev).len(), 1);
    assert_eq!(agent.terminate(), 0);
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn tcpdump_failure_is_a_503_with_its_own_error() {
    require_lab();
    let lab = Lab::up(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let dev = lab.devices()[0].clone();
    let listen = format!("{}:20001", lab.ovoc_agent_addr());
    let mut c = lab.tc();
    c.args([
        "ovoc",
        "serve",
        "--interface",
        "nosuchif0",
        "--listen",
        &listen,
        "--allow",
        "127.0.0.0/8",
        "--no-ovoc-rules",
    ]);
    c.arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let send = |verb: &str| {
        let mut c = lab.tc();
        c.args([
            "ovoc",
            "send",
            "--server",
            &listen,
            "--timeout",
            "20s",
            verb,
            &dev,
        ]);
        run(c)
    };
    assert_eq!(final_code(&send("REGISTER")), 200);
    assert_eq!(final_code(&send("CAPTURE")), 503);
    signal(child.id(), 15);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    events(&text);
    assert!(
        text.lines()
            .any(|l| l.contains("\"code\":503") && l.contains("nosuchif0")),
        "the 503 event carries tcpdump's error:\n{text}"
    );
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn a_verify_in_progress_does_not_delay_other_devices() {
    require_lab();
    let lab = Lab::up(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&lab, dir.path(), &["--no-ovoc-rules"]);
    let devs = lab.devices();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Longer than the VERIFY (10 probes 1 s apart), which is answered last.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 512];
    let ask = |req: &str| {
        s.send_to(req.as_bytes(), agent.listen).unwrap();
    };
    ask(&format!("REGISTER {}", devs[0]));
    ask(&format!("REGISTER {}", devs[1]));
    for _ in 0..2 {
        answer(&s).unwrap();
    }
    // VERIFY is for a device being captured.
    ask(&format!("CAPTURE {}", devs[0]));
    while answer(&s).unwrap() != format!("200 OK {} CAPTURE", devs[0]) {}
    // VERIFY takes at least the ICMP probe spacing (several hundred ms).
    ask(&format!("VERIFY {}", devs[0]));
    let (n, _) = s.recv_from(&mut buf).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("100 Trying {} VERIFY", devs[0])
    );
    ask(&format!("CAPTURE {}", devs[1]));
    let mut order = Vec::new();
    while order.len() < 3 {
        order.push(answer(&s).unwrap());
    }
    let trying = order
        .iter()
        .position(|x| *x == format!("100 Trying {} CAPTURE", devs[1]))
        .expect("100 Trying for CAPTURE");
    let capture_ok = order
        .iter()
        .position(|x| *x == format!("200 OK {} CAPTURE", devs[1]))
        .unwrap();
    let verify_done = order
        .iter()
        .position(|x| x.ends_with(&format!("{} VERIFY", devs[0])))
        .unwrap();
    assert!(
        trying < verify_done && capture_ok < verify_done,
        "CAPTURE waited for VERIFY: {order:?}"
    );
}
