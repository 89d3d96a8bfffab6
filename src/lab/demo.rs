//! `tc lab demo`: a newcomer's first five minutes. It runs the real pieces as separate
//! processes, exactly as a deployment would: `tc lab up` (emulated CPEs and OVOC), `tc ovoc
//! serve` (real tcpdump), `tc session`; sends traffic to the devices and, once every device is
//! capturing on both sides, a Connection Lost for each. Their JSON lines are relayed to stdout;
//! a short human summary goes to stderr.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::cli::LabDemoArgs;
use crate::error::{Error, ExitCode, Result};

const INSTALL: &str = "apt-get install -y openssh-server tcpdump snmpd   (Debian/Ubuntu)\n  \
                       dnf install -y openssh-server tcpdump net-snmp    (RHEL/Rocky/Alma)";

/// What is missing for the demo, as one message with the command that fixes it.
pub fn requirements(root: bool, have: impl Fn(&str) -> bool) -> std::result::Result<(), String> {
    let mut missing = Vec::new();
    for (prog, pkg) in [
        ("sshd", "openssh-server"),
        ("tcpdump", "tcpdump"),
        ("snmpd", "snmpd"),
    ] {
        if !have(prog) {
            missing.push(format!("{prog} (package {pkg})"));
        }
    }
    match (root, missing.is_empty()) {
        (true, true) => Ok(()),
        (false, true) => Err(
            "tc lab demo needs root (sshd chroots per emulated device, tcpdump, port 161): \
                              run it with sudo"
                .into(),
        ),
        (r, false) => Err(format!(
            "tc lab demo needs {}{}; install with:\n  {INSTALL}",
            missing.join(", "),
            if r {
                ""
            } else {
                ", and root (run it with sudo)"
            }
        )),
    }
}

struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(
        name: &'static str,
        mut cmd: Command,
        tx: mpsc::Sender<(&'static str, String)>,
    ) -> Result<Proc> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::failed(format!("starting {name}: {e}")))?;
        let out = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for l in BufReader::new(out)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if tx.send((name, l)).is_err() {
                    break;
                }
            }
        });
        Ok(Proc { name, child })
    }

    fn stop(mut self) {
        let _ = crate::sys::terminate(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        log::warn!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have(prog: &str) -> bool {
    super::which(prog)
}

fn tc(env: &HashMap<String, String>) -> Result<Command> {
    let exe =
        std::env::current_exe().map_err(|e| Error::failed(format!("finding this program: {e}")))?;
    let mut c = Command::new(exe);
    c.envs(env);
    Ok(c)
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').replace("'\\''", "'")))
        .collect()
}

fn size(p: &Path) -> String {
    let n = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

pub fn run(a: LabDemoArgs) -> Result<ExitCode> {
    requirements(super::is_root(), have).map_err(Error::usage)?;
    let dir = match a.dir.clone() {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "tc-demo-{}",
            crate::timefmt::Utc::now().file_stamp()
        )),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::usage(format!("creating {}: {e}", dir.display())))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| Error::usage(e.to_string()))?;
    let (lab_dir, agent_dir, out_dir) = (dir.join("lab"), dir.join("ovoc"), dir.join("captures"));
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<(&'static str, String)>();
    let interrupted = crate::sys::install_signals()?;

    eprintln!(
        "tc lab demo: {} emulated devices, everything under {}",
        a.devices,
        dir.display()
    );
    // Another demo (or lab, or agent) may be running: take a subnet whose agent address is free,
    // and a system user of its own.
    let (subnet, _subnet_lock) =
        free_subnet().ok_or_else(|| Error::failed("no free lab subnet in 127.0.77-199.x"))?;
    let mut lab_cmd = tc(&HashMap::new())?;
    lab_cmd.args([
        "lab",
        "up",
        "--live-captures",
        "--devices",
        &a.devices.to_string(),
    ]);
    lab_cmd.args([
        "--subnet",
        &subnet.to_string(),
        "--user",
        &format!("tcdemo{subnet}"),
        "--dir",
    ]);
    lab_cmd.arg(&lab_dir);
    let lab = Proc::spawn("lab", lab_cmd, tx.clone())?;
    let mut procs = vec![lab];
    let result = demo(
        &lab_dir,
        &agent_dir,
        &out_dir,
        &tx,
        &rx,
        &mut procs,
        &interrupted,
    );
    // Stop in reverse order: session (already gone), agent, lab.
    while let Some(p) = procs.pop() {
        p.stop();
    }
    while let Ok((_, l)) = rx.try_recv() {
        crate::emit::relay(&l);
    }
    let ok = result?;
    let failed = summary(&lab_dir, &agent_dir, &out_dir, started.elapsed());
    Ok(if ok && failed == 0 {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}

#[allow(clippy::too_many_arguments)]
fn demo(
    lab_dir: &Path,
    agent_dir: &Path,
    out_dir: &Path,
    tx: &mpsc::Sender<(&'static str, String)>,
    rx: &mpsc::Receiver<(&'static str, String)>,
    procs: &mut Vec<Proc>,
    interrupted: &AtomicBool,
) -> Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(55);
    let next = |until: Instant| -> Result<(&'static str, String)> {
        if interrupted.load(Ordering::Relaxed) {
            return Err(Error::interrupted());
        }
        let left = until.saturating_duration_since(Instant::now());
        rx.recv_timeout(left.min(Duration::from_millis(200)))
            .map_err(|_| Error::failed("timeout"))
    };
    // 1. The lab.
    loop {
        match next(deadline) {
            Ok((who, l)) => {
                crate::emit::relay(&l);
                if who == "lab" && l.contains("\"lab.ready\"") {
                    break;
                }
            }
            Err(e) if e.exit_code() == ExitCode::Interrupted => return Err(e),
            Err(_) if Instant::now() > deadline => {
                return Err(Error::failed("the lab did not start"))
            }
            Err(_) => {}
        }
    }
    let env = parse_env(
        &std::fs::read_to_string(lab_dir.join("env"))
            .map_err(|e| Error::failed(format!("reading the lab env: {e}")))?,
    );
    let inventory = lab_dir.join("devices.csv");
    let entries = crate::inventory::parse(&std::fs::read_to_string(&inventory).unwrap_or_default())
        .map_err(Error::failed)?;
    let agent_ip = entries[0].ovoc.clone().unwrap_or_default();
    eprintln!(
        "  lab ready: {} devices, emulated OVOC, sshd, snmpd",
        entries.len()
    );

    // 2. The agent, as on an OVOC server.
    let mut agent = tc(&env)?;
    agent.args([
        "ovoc",
        "serve",
        "--interface",
        "lo",
        "--allow",
        "127.0.0.0/8",
    ]);
    agent
        .args(["--listen", &format!("{agent_ip}:20001"), "--dir"])
        .arg(agent_dir);
    procs.push(Proc::spawn("agent", agent, tx.clone())?);
    std::thread::sleep(Duration::from_millis(300));
    if let Some(p) = procs.last_mut() {
        if let Ok(Some(st)) = p.child.try_wait() {
            return Err(Error::failed(format!(
                "the agent could not start ({st}); see its message above"
            )));
        }
    }

    // 3. Traffic to every device while the captures run.
    let traffic_stop = Arc::new(AtomicBool::new(false));
    let devices: Vec<String> = entries.iter().map(|e| e.device.clone()).collect();
    {
        let (stop, devs) = (Arc::clone(&traffic_stop), devices.clone());
        std::thread::spawn(move || {
            let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
                return;
            };
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                for d in &devs {
                    let _ = s.send_to(format!("tc demo traffic {n}").as_bytes(), (d.as_str(), 9));
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }

    // 4. The session, as on the controller host.
    std::thread::sleep(Duration::from_millis(300));
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|x| x.port())
        .unwrap_or(25001);
    let mut session = tc(&env)?;
    session
        .args(["session", "--devices"])
        .arg(&inventory)
        .arg("--out")
        .arg(out_dir);
    session.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--snmp-user",
        "CaptureScript",
        "--resend",
        "1s",
    ]);
    procs.push(Proc::spawn("session", session, tx.clone())?);
    eprintln!("  agent and session started; waiting until every device captures on both sides");

    // 5. Connection Lost for each device a few seconds after both sides capture.
    let mut capturing = 0usize;
    let mut alarm_at: Option<Instant> = None;
    let mut last_alarm = Instant::now();
    let mut ok = None;
    while ok.is_none() {
        match next(deadline) {
            Ok((who, l)) => {
                crate::emit::relay(&l);
                if who == "session" && l.contains("\"task\":\"capture\",\"status\":\"ok\"") {
                    capturing += 1;
                    if capturing == devices.len() {
                        eprintln!("  all {capturing} devices capturing; Connection Lost in 3 s");
                        alarm_at = Some(Instant::now() + Duration::from_secs(3));
                    }
                }
                if who == "session" && l.contains("\"session.summary\"") {
                    ok = Some(l.contains(&format!("\"completed\":{}", devices.len())));
                }
            }
            Err(e) if e.exit_code() == ExitCode::Interrupted => return Err(e),
            Err(_) if Instant::now() > deadline => {
                traffic_stop.store(true, Ordering::Relaxed);
                return Err(Error::failed("the demo did not finish within 55 s"));
            }
            Err(_) => {}
        }
        // OVOC sends the alarm once; a lost datagram on loopback is unlikely, but resend
        // every second to devices that have not moved on, as a patient operator would.
        if alarm_at.is_some_and(|t| Instant::now() >= t)
            && last_alarm.elapsed() >= Duration::from_secs(1)
        {
            last_alarm = Instant::now();
            for d in &devices {
                let _ = super::ovoc::send_alarm(lab_dir, d, false);
            }
        }
    }
    traffic_stop.store(true, Ordering::Relaxed);
    Ok(ok.unwrap_or(false))
}

/// The first lab subnet nobody uses: no other demo holds its lock (kept for the demo's whole
/// run, so two demos started together cannot pick the same one), and its agent address
/// (127.0.N.253:20001) and first device's SNMP port (127.0.N.1:161) are free.
fn free_subnet() -> Option<(u8, std::fs::File)> {
    let free = |s: u8, host: u8, port: u16| {
        UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, s, host), port)).is_ok()
    };
    (77..=199u8).find_map(|s| {
        let path = std::env::temp_dir().join(format!("tc-lab-demo-{s}.lock"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .ok()?;
        // Released when the file is closed.
        let locked = crate::sys::try_lock(&f);
        (locked && free(s, 253, 20001) && free(s, 1, 161)).then_some((s, f))
    })
}

/// Prints the human summary; returns the number of failed tasks in the report.
fn summary(lab_dir: &Path, agent_dir: &Path, out_dir: &Path, took: Duration) -> usize {
    let list = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let report = out_dir.join("report.csv");
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .filter_map(|r| r.ok())
        .collect();
    eprintln!("\ntc lab demo finished in {:.1} s", took.as_secs_f64());
    for cpe in list(out_dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
    {
        let name = cpe.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let device = name
            .strip_prefix("CPE_device_")
            .and_then(|s| s.split('_').next())
            .unwrap_or("?");
        let base = name
            .strip_prefix("CPE_")
            .and_then(|s| s.strip_suffix(".pcap"))
            .unwrap_or("");
        eprintln!("  {device}");
        eprintln!("    CPE  {} ({})", cpe.display(), size(cpe));
        for o in list(agent_dir).iter().filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("OVOC_{base}-")))
        }) {
            eprintln!("    OVOC {} ({})", o.display(), size(o));
        }
        if let Some(v) = rows
            .iter()
            .find(|r| r.get(1) == Some(device) && r.get(2) == Some("verify"))
        {
            eprintln!(
                "    probes: {} ({})",
                v.get(5).unwrap_or(""),
                v.get(3).unwrap_or("")
            );
        }
    }
    let failed = rows.iter().filter(|r| r.get(3) == Some("failed")).count();
    eprintln!(
        "  report: {} ({} rows, {failed} failed)",
        report.display(),
        rows.len()
    );
    eprintln!("  lab (stopped): {}", lab_dir.display());
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_name_packages_and_the_command() {
        let all = |_: &str| true;
        assert!(requirements(true, all).is_ok());
        let e = requirements(false, all).unwrap_err();
        assert!(e.contains("root") && e.contains("sudo"), "{e}");
        let e = requirements(true, |p| p != "tcpdump").unwrap_err();
        assert!(
            e.contains("tcpdump (package tcpdump)") && e.contains("apt-get install -y"),
            "{e}"
        );
        let e = requirements(false, |p| p == "snmpd").unwrap_err();
        assert!(
            e.contains("sshd (package openssh-server)") && e.contains("root"),
            "{e}"
        );
    }
}
