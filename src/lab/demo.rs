//! `tc lab demo`: a newcomer's first five minutes. It runs the real pieces as separate
//! processes, exactly as a deployment would: `tc lab up --wan` (emulated CPEs behind a real
//! router, an emulated OVOC polling them), `tc ovoc serve` (real tcpdump on the OVOC side of the
//! WAN), `tc session`; sends traffic to the devices and, once every device is capturing on both
//! sides, injects the fault asked for on every device's path. OVOC's polls go unanswered, it
//! raises Connection Lost and forwards it, the session stops, collects and analyses; with no
//! fault the demo raises Connection Lost itself. Their JSON lines are relayed to stdout; a short
//! human summary goes to stderr, ending with each device's verdict, which names the fault.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::config::DemoConfig;
use crate::cli::DemoFault;
use crate::error::{Error, ExitCode, Result};

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

/// Lines of the child processes' stdout, by process name.
type Lines = (&'static str, String);

/// The whole demo is bounded: it is over (one way or the other) within this.
const DEMO_TIME: Duration = Duration::from_secs(55);

pub fn run(cfg: &DemoConfig) -> Result<ExitCode> {
    std::fs::create_dir_all(&cfg.dir)
        .map_err(|e| Error::usage(format!("creating {}: {e}", cfg.dir.display())))?;
    let dir = cfg
        .dir
        .canonicalize()
        .map_err(|e| Error::usage(e.to_string()))?;
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<Lines>();
    let mut demo = Demo {
        lab_dir: dir.join("lab"),
        out_dir: dir.join("captures"),
        tx,
        rx,
        procs: Vec::new(),
        interrupted: crate::sys::install_signals()?,
        deadline: started + DEMO_TIME,
    };
    eprintln!(
        "tc lab demo: {} emulated devices, everything under {}",
        cfg.devices,
        dir.display()
    );
    // Another demo (or lab, or agent) may be running: take a subnet whose agent address is free,
    // and a system user of its own.
    let (subnet, _subnet_lock) =
        free_subnet().ok_or_else(|| Error::failed("no free lab subnet in 127.0.77-199.x"))?;
    let result = demo
        .start_lab(cfg, subnet)
        .and_then(|()| demo.steps(cfg.fault));
    demo.stop();
    let ok = result?;
    let failed = summary(&demo.lab_dir, &demo.out_dir, started.elapsed(), cfg.fault);
    Ok(if ok && failed == 0 {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}

/// The running demo: its directories, the processes started so far and their output.
struct Demo {
    lab_dir: PathBuf,
    out_dir: PathBuf,
    tx: mpsc::Sender<Lines>,
    rx: mpsc::Receiver<Lines>,
    /// In start order: lab, agent, session.
    procs: Vec<Proc>,
    interrupted: Arc<AtomicBool>,
    deadline: Instant,
}

/// What the lab says about itself once ready: its env file and its devices.
struct Ready {
    env: HashMap<String, String>,
    /// The agent's interface: the OVOC side of the WAN.
    interface: String,
    inventory: PathBuf,
    devices: Vec<String>,
    agent_ip: String,
    agent_dir: PathBuf,
}

impl Demo {
    /// The demo proper, once the lab is started: whether the session completed every device.
    fn steps(&mut self, fault: DemoFault) -> Result<bool> {
        let ready = self.wait_for_lab()?;
        self.start_agent(&ready)?;
        let _traffic = Traffic::start(ready.devices.clone());
        std::thread::sleep(Duration::from_millis(300));
        self.start_session(&ready)?;
        eprintln!("  agent and session started; waiting until every device captures on both sides");
        self.fault_until_summary(&ready.devices, fault)
    }

    /// The next line from a child (relayed by the caller), or an error once the wait is over:
    /// `interrupted` on a signal, else a timeout at `until`'s slice of 200 ms.
    fn next(&self, until: Instant) -> Result<Lines> {
        if self.interrupted.load(Ordering::Relaxed) {
            return Err(Error::interrupted());
        }
        let left = until.saturating_duration_since(Instant::now());
        self.rx
            .recv_timeout(left.min(Duration::from_millis(200)))
            .map_err(|_| Error::failed("timeout"))
    }

    fn spawn(&mut self, name: &'static str, cmd: Command) -> Result<()> {
        self.procs.push(Proc::spawn(name, cmd, self.tx.clone())?);
        Ok(())
    }

    /// Step 1: the lab, on `subnet` with a system user of its own, behind a real router.
    fn start_lab(&mut self, cfg: &DemoConfig, subnet: u8) -> Result<()> {
        let mut lab = tc(&HashMap::new())?;
        lab.args(["lab", "up", "--wan", "--devices", &cfg.devices.to_string()]);
        if cfg.nat {
            lab.arg("--nat");
        }
        if cfg.clock_offset_ns != 0 {
            lab.arg(format!(
                "--clock-offset={}s",
                cfg.clock_offset_ns as f64 / 1e9
            ));
        }
        if cfg.clock_drift_ppm != 0.0 {
            lab.arg(format!("--clock-drift={}", cfg.clock_drift_ppm));
        }
        lab.args([
            "--subnet",
            &subnet.to_string(),
            "--user",
            &format!("tcdemo{subnet}"),
            "--dir",
        ]);
        lab.arg(&self.lab_dir);
        self.spawn("lab", lab)
    }

    fn wait_for_lab(&self) -> Result<Ready> {
        loop {
            match self.next(self.deadline) {
                Ok((who, l)) => {
                    crate::emit::relay(&l);
                    if who == "lab" && l.contains("\"lab.ready\"") {
                        break;
                    }
                }
                Err(e) if e.exit_code() == ExitCode::Interrupted => return Err(e),
                Err(_) if Instant::now() > self.deadline => {
                    return Err(Error::failed("the lab did not start"))
                }
                Err(_) => {}
            }
        }
        let env = parse_env(
            &std::fs::read_to_string(self.lab_dir.join("env"))
                .map_err(|e| Error::failed(format!("reading the lab env: {e}")))?,
        );
        let inventory = self.lab_dir.join("devices.csv");
        let entries =
            crate::inventory::parse(&std::fs::read_to_string(&inventory).unwrap_or_default())
                .map_err(Error::failed)?;
        eprintln!(
            "  lab ready: {} devices behind a router (network namespaces, nftables), emulated \
             OVOC polling them, sshd, snmpd",
            entries.len()
        );
        let interface = env
            .get("TC_LAB_OVOC_INTERFACE")
            .cloned()
            .ok_or_else(|| Error::failed("the lab's env names no TC_LAB_OVOC_INTERFACE"))?;
        let agent_dir = env
            .get("TC_LAB_AGENT_DIR")
            .map(PathBuf::from)
            .ok_or_else(|| Error::failed("the lab's env names no TC_LAB_AGENT_DIR"))?;
        Ok(Ready {
            env,
            interface,
            inventory,
            agent_dir,
            agent_ip: entries[0].ovoc.clone().unwrap_or_default(),
            devices: entries.into_iter().map(|e| e.device).collect(),
        })
    }

    /// Step 2: the agent, as on an OVOC server, writing where the lab's sshd serves the OVOC.
    fn start_agent(&mut self, ready: &Ready) -> Result<()> {
        let mut agent = tc(&ready.env)?;
        agent.args([
            "ovoc",
            "serve",
            "--interface",
            &ready.interface,
            "--allow",
            "127.0.0.0/8",
        ]);
        agent
            .args(["--listen", &format!("{}:20001", ready.agent_ip), "--dir"])
            .arg(&ready.agent_dir);
        self.spawn("agent", agent)?;
        std::thread::sleep(Duration::from_millis(300));
        if let Some(p) = self.procs.last_mut() {
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(Error::failed(format!(
                    "the agent could not start ({st}); see its message above"
                )));
            }
        }
        Ok(())
    }

    /// Step 4: the session, as on the controller host.
    fn start_session(&mut self, ready: &Ready) -> Result<()> {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|x| x.port())
            .unwrap_or(25001);
        let mut session = tc(&ready.env)?;
        session
            .args(["session", "--devices"])
            .arg(&ready.inventory)
            .arg("--out")
            .arg(&self.out_dir);
        session.args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--snmp-user",
            "CaptureScript",
            "--resend",
            "1s",
            // While the WAN drops, the CPE's REST API cannot be reached: try again soon.
            "--timeout",
            "3s",
            "--retries",
            "2",
            "--fetch-retry-interval",
            "2s",
            "--collect-ovoc",
            // The demo prints the summary itself, after the session (and its status line).
            "--progress",
            "never",
        ]);
        self.spawn("session", session)
    }

    /// Step 5: three seconds after every device captures on both sides, the fault on every
    /// device's path (with none, a Connection Lost for each, as OVOC would send); then wait for
    /// the session's summary: whether it completed every device.
    fn fault_until_summary(&self, devices: &[String], fault: DemoFault) -> Result<bool> {
        let mut capturing = 0usize;
        let mut inject_at: Option<Instant> = None;
        let mut injected = false;
        let mut last_alarm = Instant::now();
        loop {
            match self.next(self.deadline) {
                Ok((who, l)) => {
                    crate::emit::relay(&l);
                    if who == "session" && l.contains("\"task\":\"capture\",\"status\":\"ok\"") {
                        capturing += 1;
                        if capturing == devices.len() {
                            eprintln!(
                                "  all {capturing} devices capturing; {} in 3 s",
                                said(fault)
                            );
                            inject_at = Some(Instant::now() + Duration::from_secs(3));
                        }
                    }
                    if who == "lab" && l.contains("\"lab.connection\"") && l.contains("\"lost\"") {
                        eprintln!(
                            "  OVOC: polls unanswered, Connection Lost forwarded to the agent"
                        );
                    }
                    if who == "session" && l.contains("\"session.summary\"") {
                        return Ok(l.contains(&format!("\"completed\":{}", devices.len())));
                    }
                }
                Err(e) if e.exit_code() == ExitCode::Interrupted => return Err(e),
                Err(_) if Instant::now() > self.deadline => {
                    return Err(Error::failed("the demo did not finish within 55 s"));
                }
                Err(_) => {}
            }
            if inject_at.is_none_or(|t| Instant::now() < t) {
                continue;
            }
            if !injected {
                injected = true;
                self.inject(devices, fault)?;
            }
            // With no fault the demo is OVOC: the alarm, resent every second as a patient
            // operator would, until the session moves on.
            if fault == DemoFault::None && last_alarm.elapsed() >= Duration::from_secs(1) {
                last_alarm = Instant::now();
                for d in devices {
                    let _ = super::ovoc::send_alarm(&self.lab_dir, d, false);
                }
            }
        }
    }

    /// The fault on every device, as `tc lab wan` makes it; a `lab.fault` line for each.
    fn inject(&self, devices: &[String], fault: DemoFault) -> Result<()> {
        let kind = match fault {
            DemoFault::OvocToCpe => super::wan::Fault::ToDevice,
            DemoFault::CpeToOvoc => super::wan::Fault::FromDevice,
            DemoFault::CpeSilent => super::wan::Fault::Silent,
            DemoFault::None => return Ok(()),
        };
        // A dropping WAN ends on its own, so the session can then stop and fetch the CPE's
        // capture; a silent SNMP agent stays silent (REST still answers).
        let duration = (kind != super::wan::Fault::Silent).then_some(FAULT_TIME);
        let plan = super::wan::recorded(&self.lab_dir)
            .map_err(Error::failed)?
            .ok_or_else(|| Error::failed("the lab has no WAN"))?;
        for d in devices {
            let ip = d
                .parse()
                .map_err(|_| Error::failed(format!("device {d:?} is not an address")))?;
            super::wan::inject(&plan, ip, Some(kind), duration).map_err(Error::failed)?;
        }
        eprintln!("  {}", injected(fault));
        Ok(())
    }

    /// Stops in reverse order (session, if not gone already; agent; lab), then relays what
    /// they said last. The session collected the agent's files before the lab (and so its
    /// OVOC chroot) goes.
    fn stop(&mut self) {
        while let Some(p) = self.procs.pop() {
            p.stop();
        }
        // A lab that had to be killed left its WAN: remove it now, not at the next run.
        if let Err(e) = super::wan::cleanup(&self.lab_dir) {
            crate::logging::warn_user(&format!("the lab's WAN: {e}"));
        }
        while let Ok((_, l)) = self.rx.try_recv() {
            crate::emit::relay(&l);
        }
    }
}

/// How long a demo's WAN drops: past OVOC's notice (three missed polls) and into the probes.
const FAULT_TIME: Duration = Duration::from_secs(8);

fn said(fault: DemoFault) -> &'static str {
    match fault {
        DemoFault::OvocToCpe => "the router drops OVOC's traffic to the devices",
        DemoFault::CpeToOvoc => "the router drops the devices' traffic to OVOC",
        DemoFault::CpeSilent => "the devices' SNMP agents go silent",
        DemoFault::None => "no fault; Connection Lost",
    }
}

fn injected(fault: DemoFault) -> String {
    match fault {
        DemoFault::CpeSilent => {
            "fault injected: SNMP requests reach the devices and go unanswered; waiting for \
             OVOC to notice"
                .into()
        }
        DemoFault::None => String::new(),
        _ => format!(
            "fault injected for {} s at the router; waiting for OVOC to notice",
            FAULT_TIME.as_secs()
        ),
    }
}

/// Step 3: traffic to every device while the captures run; stops when dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
}

impl Traffic {
    fn start(devices: Vec<String>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
                return;
            };
            let mut n = 0u32;
            while !flag.load(Ordering::Relaxed) {
                for d in &devices {
                    let _ = s.send_to(format!("tc demo traffic {n}").as_bytes(), (d.as_str(), 9));
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Traffic { stop }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
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
        let wan = super::wan::Plan {
            subnet: s,
            nat: false,
            devices: 0,
        };
        let no_wan = !super::wan::in_use(s).unwrap_or(true)
            && !super::wan::netns_path(&wan.router_ns()).exists()
            && !Path::new("/sys/class/net").join(wan.host_if()).exists();
        (locked && no_wan && free(s, 253, 20001) && free(s, 1, 161)).then_some((s, f))
    })
}

/// The verdict each device's analysis must give for `fault`.
fn expected_verdict(fault: DemoFault) -> &'static str {
    match fault {
        DemoFault::OvocToCpe => "wan_loss_ovoc_to_cpe",
        DemoFault::CpeToOvoc => "wan_loss_cpe_to_ovoc",
        DemoFault::CpeSilent => "cpe_silent",
        DemoFault::None => "no_loss",
    }
}

/// Prints the human summary, each round's files, probes and verdict, and whether the verdicts
/// name the fault; returns what went wrong: failed tasks and verdicts that do not name the
/// fault. With a fault, probes that failed are its evidence, not the demo's failure.
fn summary(lab_dir: &Path, out_dir: &Path, took: Duration, fault: DemoFault) -> usize {
    let report = out_dir.join("report.csv");
    let rows = crate::session::status::parse_report(&std::fs::read(&report).unwrap_or_default());
    eprintln!("\ntc lab demo finished in {:.1} s", took.as_secs_f64());
    eprint!(
        "{}",
        crate::session::summary::text(out_dir, &report, &rows, true)
    );
    eprintln!("  lab (stopped): {}", lab_dir.display());
    let want = expected_verdict(fault);
    let verdicts: Vec<&str> = rows
        .iter()
        .filter(|r| r.task == "analyze" && r.status == "ok")
        .map(|r| r.verdict.as_str())
        .collect();
    let wrong = verdicts.iter().filter(|v| **v != want).count();
    let mut devices: Vec<&str> = rows.iter().map(|r| r.device.as_str()).collect();
    devices.sort_unstable();
    devices.dedup();
    let missing = devices.len().saturating_sub(verdicts.len());
    if verdicts.is_empty() || wrong > 0 || missing > 0 {
        eprintln!(
            "  the fault was {fault:?}, which is {want}: {wrong} of {} verdicts say otherwise, \
             {missing} devices have none",
            verdicts.len()
        );
    } else {
        eprintln!("  every verdict names the fault injected: {want}");
    }
    let evidence =
        |r: &&crate::session::status::Row| fault != DemoFault::None && r.task == "verify";
    rows.iter()
        .filter(|r| r.status == "failed" && !evidence(r))
        .count()
        + wrong
        + missing
        + usize::from(verdicts.is_empty())
}
