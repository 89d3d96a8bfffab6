//! `tc ovoc serve`: the agent's I/O shell around `core`, in a daemon loop (`crate::daemon`): the
//! UDP socket, the signals (INT, TERM, HUP, CHLD) and a waker for worker results; the loop wakes
//! at the core's next deadline (sooner while a tcpdump is starting or an adopted one is watched
//! through /proc).
//!
//! Invariants: the loop never blocks on anything but `poll`; OVOC REST calls and probes run on
//! worker threads; every child is reaped; state is written after each change that matters.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;

use crate::daemon::{Daemon, Driver, Flow};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

use super::core::{Action, CaptureId, Core, Found};
use super::rules::OvocClient;
use super::tcpdump::{self, Tcpdump};
use crate::cli::ServeArgs;
use crate::emit::emit;
use crate::error::{Error, ExitCode, Result};
use crate::event::{Event, ProbeReport};
use crate::probe::ProbeConfig;

use super::config::WORKERS;
/// Longest the loop reads datagrams in one turn before it handles finished work.
const DRAIN_BUDGET: Duration = Duration::from_millis(20);

type Job = Box<dyn FnOnce() -> Done + Send>;

enum Done {
    Rule {
        device: String,
        dest: SocketAddr,
        result: std::result::Result<(u64, &'static str), String>,
    },
    Deleted {
        device: String,
        rule_id: u64,
        result: std::result::Result<(), String>,
    },
    Verified {
        device: String,
        report: ProbeReport,
    },
    /// The saver wrote the state of request `seq` (and so of every earlier one).
    Saved {
        seq: u64,
        result: std::result::Result<(), String>,
    },
}

/// Writes the state off the loop, newest first: while one write and its fsync are under way,
/// later states pile up and only the newest is written next (a group commit). On a busy disk an
/// fsync can take a second; the loop keeps answering meanwhile, and each final reply waits only
/// for the save that covers it.
struct Saver {
    tx: Option<mpsc::Sender<(u64, Vec<u8>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Saver {
    fn start(dir: PathBuf, done: mpsc::Sender<Done>, wake: Arc<mio::Waker>) -> Result<Saver> {
        let (tx, rx) = mpsc::channel::<(u64, Vec<u8>)>();
        let thread = std::thread::Builder::new()
            .name("tc-ovoc-saver".into())
            .spawn(move || {
                while let Ok(mut job) = rx.recv() {
                    while let Ok(newer) = rx.try_recv() {
                        job = newer;
                    }
                    let result = super::state::write(&dir, &job.1);
                    if done.send(Done::Saved { seq: job.0, result }).is_err() {
                        break;
                    }
                    let _ = wake.wake();
                }
            })
            .map_err(|e| Error::failed(format!("starting the state saver: {e}")))?;
        Ok(Saver {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn request(&self, seq: u64, text: Vec<u8>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((seq, text));
        }
    }

    /// Lets the last requested write finish.
    fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Shell {
    sock: Arc<UdpSocket>,
    dir: PathBuf,
    tcpdump: Tcpdump,
    children: HashMap<CaptureId, Child>,
    /// Captures of an earlier run whose tcpdump is not our child: watched through /proc.
    adopted: HashMap<CaptureId, u32>,
    ovoc: Option<Arc<OvocClient>>,
    probes: Arc<ProbeConfig>,
    jobs: mpsc::Sender<Job>,
    dirty: bool,
    last_saved: Vec<u8>,
    /// Final replies of this turn, handed to `held` by `flush`.
    replies: Vec<(SocketAddr, String)>,
    saver: Saver,
    /// Sequence numbers of the last state handed to the saver and of the last one written.
    requested: u64,
    saved: u64,
    /// Final replies waiting for the save of the state they announce (its sequence number).
    held: VecDeque<(u64, SocketAddr, String)>,
}

/// The state an earlier run left: captures whose tcpdump still runs are adopted (watched through
/// /proc), the others closed out with what their log says.
fn restore(core: &mut Core, dir: &Path) -> Result<(Vec<Action>, HashMap<CaptureId, u32>)> {
    let mut adopted = HashMap::new();
    let restored = match super::state::load(dir).map_err(Error::usage)? {
        Some(p) => core.restore(p, Instant::now(), |c| {
            let alive =
                c.state == "running" && c.pid.is_some_and(|pid| tcpdump::proc_alive(pid, &c.base));
            if alive {
                adopted.insert(c.id, c.pid.unwrap_or(0));
                Found::Alive
            } else {
                let log =
                    std::fs::read_to_string(tcpdump::log_path(dir, &c.base)).unwrap_or_default();
                Found::Gone(tcpdump::parse_stats(&log))
            }
        }),
        None => Vec::new(),
    };
    Ok((restored, adopted))
}

/// DIR holds the captures (writable by tcpdump's user) and `.tc/` (root only: state, logs).
fn prepare_dir(dir: &Path, tcpdump_user: &str) -> Result<()> {
    std::fs::create_dir_all(dir.join(".tc"))
        .map_err(|e| Error::usage(format!("creating {}: {e}", dir.display())))?;
    std::fs::set_permissions(dir.join(".tc"), std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::usage(format!("{}: {e}", dir.display())))?;
    if tcpdump_user != "root" {
        let (uid, gid) = crate::sys::user_ids(tcpdump_user)
            .ok_or_else(|| Error::usage(format!("no user {tcpdump_user:?}")))?;
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
            Error::usage(format!(
                "making {} writable for {tcpdump_user}: {e}",
                dir.display()
            ))
        })?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
            .map_err(|e| Error::usage(format!("{}: {e}", dir.display())))?;
    }
    Ok(())
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    let p = super::config::resolve(&a, &crate::secret::Env::process())?;
    prepare_dir(&p.dir, &p.tcpdump_user)?;
    let dir = p
        .dir
        .canonicalize()
        .map_err(|e| Error::usage(format!("{}: {e}", p.dir.display())))?;
    let _lock = lock(&dir)?;
    let mut core = Core::new(p.core.clone());
    let (restored, adopted) = restore(&mut core, &dir)?;
    let mut daemon = Daemon::open(p.listen, &[SIGINT, SIGTERM, SIGHUP, SIGCHLD])?
        .with_drain_budget(DRAIN_BUDGET);
    let (done_tx, done_rx) = mpsc::channel();
    let mut sh = shell(&p, &dir, adopted, &daemon, done_tx)?;
    let (adopted_n, closed_n) = core.restored_counts();
    emit(&Event::OvocListening {
        listen: daemon.local_addr(),
        interface: p.interface.clone(),
        dir: dir.display().to_string(),
        allow: if a.allow_any {
            vec!["any".into()]
        } else {
            a.allow.iter().map(|c| c.to_string()).collect()
        },
        ovoc_rules: sh.ovoc.is_some(),
        adopted: adopted_n,
        closed_out: closed_n,
        pid: std::process::id(),
    });
    sh.perform(&mut core, restored);
    sh.flush(&core);
    let started = Instant::now();
    let mut agent = Agent {
        core,
        sh,
        done_rx,
        stopping_since: None,
        // tcpdump ignoring SIGTERM past the grace period (core sends SIGKILL then); an adopted
        // one we cannot reap is given up on after twice that.
        give_up: p.core.stop_flush + p.core.stop_grace * 2 + Duration::from_secs(1),
        stdout_warned: false,
    };
    daemon.run(&mut agent)?;
    agent.finish(started);
    Ok(ExitCode::Ok)
}

/// The shell's parts: tcpdump as configured, the state saver, the worker pool.
fn shell(
    p: &super::config::Plan,
    dir: &Path,
    adopted: HashMap<CaptureId, u32>,
    daemon: &Daemon,
    done_tx: mpsc::Sender<Done>,
) -> Result<Shell> {
    let waker = daemon.waker();
    let saver = Saver::start(dir.to_path_buf(), done_tx.clone(), Arc::clone(&waker))?;
    let jobs = crate::pool::workers(
        WORKERS,
        "tc-ovoc-worker",
        |job: Job| job(),
        done_tx,
        move || {
            let _ = waker.wake();
        },
    )
    .map_err(|e| Error::failed(format!("starting workers: {e}")))?;
    Ok(Shell {
        sock: daemon.socket(),
        dir: dir.to_path_buf(),
        tcpdump: Tcpdump {
            program: p.tcpdump_program.clone(),
            interface: p.interface.clone(),
            dir: dir.to_path_buf(),
            ring_files: p.ring_files,
            ring_size_mb: p.ring_size_mb,
            buffer_kib: p.buffer_kib,
            user: p.tcpdump_user.clone(),
        },
        children: HashMap::new(),
        adopted,
        ovoc: p.ovoc.clone(),
        probes: Arc::clone(&p.probes),
        jobs,
        dirty: true,
        last_saved: Vec::new(),
        replies: Vec::new(),
        saver,
        requested: 0,
        saved: 0,
        held: VecDeque::new(),
    })
}

/// The agent in the daemon loop: requests to the core, worker and child results every turn,
/// until a signal's shutdown has seen every tcpdump exit.
struct Agent {
    core: Core,
    sh: Shell,
    done_rx: mpsc::Receiver<Done>,
    stopping_since: Option<Instant>,
    give_up: Duration,
    stdout_warned: bool,
}

impl Agent {
    /// The last state written, the replies it held sent, the summary.
    fn finish(self, started: Instant) {
        let Agent { core, mut sh, .. } = self;
        sh.saver.finish();
        // Written whatever the saver managed: its last result is not read any more.
        sh.last_saved.clear();
        sh.save(&core);
        for (_, to, text) in std::mem::take(&mut sh.held) {
            sh.send(to, &text);
        }
        let c = &core.counters;
        emit(&Event::OvocSummary {
            requests: c.requests,
            responses: c.responses,
            dropped: c.dropped,
            refused: c.refused,
            captures_started: c.captures_started,
            captures_stopped: c.captures_stopped,
            seconds: started.elapsed().as_secs_f64(),
            reason: "signal".into(),
        });
    }
}

impl Driver for Agent {
    fn datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Flow {
        let actions = self.core.datagram(now, from, data);
        self.sh.perform(&mut self.core, actions);
        Flow::Continue
    }

    /// SIGCHLD only wakes the loop (every turn reaps); the others stop every capture, and a
    /// second one leaves at once. SIGHUP is a stop too: a daemon whose terminal went away is
    /// not left half running.
    fn signal(&mut self, now: Instant, sig: i32) -> Flow {
        match sig {
            SIGCHLD => {}
            _ if self.stopping_since.is_some() => {
                // Second signal: leave at once, state as last written.
                log::warn!("second signal: exiting without waiting for tcpdump");
                std::process::exit(ExitCode::Interrupted as i32);
            }
            _ => {
                log::info!("signal {sig}: stopping every capture");
                self.stopping_since = Some(now);
                let actions = self.core.shutdown(now);
                self.sh.perform(&mut self.core, actions);
            }
        }
        Flow::Continue
    }

    fn turn(&mut self, now: Instant) -> Flow {
        let (core, sh) = (&mut self.core, &mut self.sh);
        while let Ok(done) = self.done_rx.try_recv() {
            let actions = match done {
                Done::Rule {
                    device,
                    dest,
                    result,
                } => core.rule_done(&device, dest, result),
                Done::Deleted {
                    device,
                    rule_id,
                    result,
                } => core.rule_deleted(&device, rule_id, result),
                Done::Verified { device, report } => core.verified(&device, report),
                Done::Saved { seq, result } => {
                    sh.saved(seq, result);
                    continue;
                }
            };
            sh.perform(core, actions);
        }
        // Cheap enough to do every turn: a handful of children at most per turn.
        sh.reap(core);
        sh.check_starting(core);
        sh.check_adopted(core);
        let actions = core.tick(now);
        sh.perform(core, actions);
        sh.flush(core);
        if let Some(since) = self.stopping_since {
            if core.live().is_empty() {
                return Flow::Stop;
            }
            if since.elapsed() > self.give_up {
                log::warn!("some tcpdump did not exit; leaving");
                return Flow::Stop;
            }
        }
        if crate::emit::stdout_broken() && !self.stdout_warned {
            log::warn!("stdout closed; the agent keeps running");
            self.stdout_warned = true;
        }
        Flow::Continue
    }

    /// The core's next deadline, sooner while a tcpdump starts (its "listening" line), an
    /// adopted one is watched through /proc, or the agent shuts down.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let soon = |ms| Some(now + Duration::from_millis(ms));
        let mut wake = self.core.next_deadline();
        if !self.core.starting().is_empty() {
            wake = wake.min(soon(10)).or(soon(10));
        }
        if !self.sh.adopted.is_empty() {
            wake = wake.min(soon(500)).or(soon(500));
        }
        if self.stopping_since.is_some() {
            wake = wake.min(soon(50)).or(soon(50));
        }
        wake
    }
}

/// One agent per DIR: a second one would fight over the same captures and state.
fn lock(dir: &Path) -> Result<std::fs::File> {
    let p = dir.join(".tc").join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| Error::usage(format!("{}: {e}", p.display())))?;
    if !crate::sys::try_lock(&f) {
        return Err(Error::usage(format!(
            "another agent is using {} (lock {})",
            dir.display(),
            p.display()
        )));
    }
    Ok(f)
}

impl Shell {
    fn save(&mut self, core: &Core) {
        match super::state::save(&self.dir, &core.persisted(), &mut self.last_saved) {
            Ok(()) => self.dirty = false,
            Err(e) => log::error!("saving state: {e}"),
        }
    }

    /// Final replies wait in `replies` for [`Shell::flush`]: they go out only after the state
    /// they announce is on disk (a controller told "200 OK CAPTURE" must be able to rely on a
    /// restarted agent knowing that capture). `100 Trying` goes out at once.
    fn perform(&mut self, core: &mut Core, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Reply {
                    to,
                    text,
                    interim: true,
                } => self.send(to, &text),
                Action::Reply { to, text, .. } => self.replies.push((to, text)),
                Action::Emit(ev) => emit(&ev),
                Action::Persist => self.dirty = true,
                Action::Spawn { id, device, base } => {
                    let log = tcpdump::log_path(&self.dir, &base);
                    match self.tcpdump.spawn(&base, &device, &log) {
                        Ok(child) => {
                            core.spawned(id, child.id());
                            self.children.insert(id, child);
                        }
                        Err(e) => queue.extend(core.failed(id, &e)),
                    }
                }
                Action::Signal { id, kill } => self.signal(core, id, kill),
                Action::Rename { id, base, target } => {
                    let result = tcpdump::rename(&self.dir, &base, &target);
                    if result.is_ok() {
                        let _ = std::fs::remove_file(tcpdump::log_path(&self.dir, &base));
                    }
                    queue.extend(core.renamed(id, result));
                }
                Action::EnsureRule { device, dest } => {
                    let Some(ovoc) = self.ovoc.clone() else {
                        continue;
                    };
                    self.work(move || {
                        let result = ovoc
                            .ensure_rule(&device, dest)
                            .map(|o| (o.rule_id, o.action));
                        Done::Rule {
                            device,
                            dest,
                            result,
                        }
                    });
                }
                Action::DeleteRule { device, rule_id } => {
                    let Some(ovoc) = self.ovoc.clone() else {
                        continue;
                    };
                    self.work(move || {
                        let result = ovoc.delete_rule(rule_id);
                        Done::Deleted {
                            device,
                            rule_id,
                            result,
                        }
                    });
                }
                Action::Verify { device } => {
                    let cfg = Arc::clone(&self.probes);
                    self.work(move || {
                        let report = crate::probe::run(&device, &cfg);
                        Done::Verified { device, report }
                    });
                }
            }
        }
    }

    /// Once per turn of the loop: hands the state to the saver if it changed, and holds this
    /// turn's final replies until the saver has written it. Saving per reply, in line, rewrote
    /// and fsynced the whole state file a thousand times when a fleet registered.
    fn flush(&mut self, core: &Core) {
        if self.dirty {
            self.dirty = false;
            match super::state::encode(&core.persisted()) {
                Ok(text) if text == self.last_saved => {}
                Ok(text) => {
                    self.requested += 1;
                    self.saver.request(self.requested, text.clone());
                    self.last_saved = text;
                }
                Err(e) => log::error!("saving state: {e}"),
            }
        }
        // A reply that changed nothing still waits for any save in flight: it may announce
        // what an earlier turn changed.
        for (to, text) in std::mem::take(&mut self.replies) {
            self.held.push_back((self.requested, to, text));
        }
        self.release();
    }

    fn saved(&mut self, seq: u64, result: std::result::Result<(), String>) {
        if let Err(e) = result {
            // As before the saver existed: the replies still go out, and the next change
            // writes the whole state again.
            log::error!("saving state: {e}");
            self.last_saved.clear();
            self.dirty = true;
        }
        self.saved = self.saved.max(seq);
        self.release();
    }

    fn release(&mut self) {
        while self
            .held
            .front()
            .is_some_and(|(seq, ..)| *seq <= self.saved)
        {
            let (_, to, text) = self.held.pop_front().expect("front exists");
            self.send(to, &text);
        }
    }

    fn send(&self, to: SocketAddr, text: &str) {
        if let Err(e) = self.sock.send_to(text.as_bytes(), to) {
            log::warn!("replying to {to}: {e}");
        }
    }

    /// Off the loop: REST calls and probes take seconds. A bounded pool, so a fleet's REGISTERs
    /// queue here instead of opening a thousand connections to OVOC at once.
    fn work(&self, f: impl FnOnce() -> Done + Send + 'static) {
        if self.jobs.send(Box::new(f)).is_err() {
            log::error!("the worker pool is gone");
        }
    }

    fn signal(&mut self, core: &Core, id: CaptureId, kill: bool) {
        let pid = if let Some(child) = self.children.get(&id) {
            Some(child.id())
        } else if let Some(&pid) = self.adopted.get(&id) {
            // Never signal a pid the kernel may have handed to someone else.
            let base = core
                .base_of(id)
                .map(|(_, b, _)| b.to_string())
                .unwrap_or_default();
            tcpdump::proc_alive(pid, &base).then_some(pid)
        } else {
            None
        };
        if let Some(pid) = pid {
            let r = if kill {
                crate::sys::kill(pid)
            } else {
                crate::sys::terminate(pid)
            };
            if let Err(e) = r {
                log::debug!("signalling tcpdump {pid}: {e}");
            }
        }
    }

    fn log_of(&self, core: &Core, id: CaptureId) -> String {
        core.base_of(id)
            .and_then(|(_, base, _)| {
                std::fs::read_to_string(tcpdump::log_path(&self.dir, base)).ok()
            })
            .unwrap_or_default()
    }

    fn reap(&mut self, core: &mut Core) {
        let ids: Vec<CaptureId> = self.children.keys().copied().collect();
        for id in ids {
            let status = match self.children.get_mut(&id).map(|c| c.try_wait()) {
                Some(Ok(Some(st))) => st,
                _ => continue,
            };
            self.children.remove(&id);
            let log = self.log_of(core, id);
            let why = if core.starting().contains(&id) || !tcpdump::listening(&log) {
                tcpdump::error_text(&log)
            } else {
                format!("tcpdump exited ({status})")
            };
            let actions = core.exited(id, tcpdump::parse_stats(&log), &why);
            self.perform(core, actions);
        }
    }

    fn check_starting(&mut self, core: &mut Core) {
        for id in core.starting() {
            let Some((_, base, _)) = core.base_of(id) else {
                continue;
            };
            let base = base.to_string();
            let log = self.log_of(core, id);
            // Capturing and able to write: tcpdump said so and its first file exists.
            if tcpdump::listening(&log) && !tcpdump::ring_files(&self.dir, &base).is_empty() {
                let file = self.dir.join(&base).display().to_string();
                let actions = core.ready(id, &self.tcpdump.interface, &file);
                self.perform(core, actions);
            }
        }
    }

    fn check_adopted(&mut self, core: &mut Core) {
        let gone: Vec<(CaptureId, u32)> = self
            .adopted
            .iter()
            .filter(|(id, pid)| {
                let base = core
                    .base_of(**id)
                    .map(|(_, b, _)| b.to_string())
                    .unwrap_or_default();
                !tcpdump::proc_alive(**pid, &base)
            })
            .map(|(id, pid)| (*id, *pid))
            .collect();
        for (id, pid) in gone {
            self.adopted.remove(&id);
            let log = self.log_of(core, id);
            let actions = core.exited(
                id,
                tcpdump::parse_stats(&log),
                &format!("tcpdump {pid} exited"),
            );
            self.perform(core, actions);
        }
    }
}
