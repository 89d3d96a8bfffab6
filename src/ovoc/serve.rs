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

use super::auth::{Dir, Key, Opened, Replays};
use super::core::{Action, CaptureId, Core, Found};
use super::limits::Disk;
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
/// Threads that spawn tcpdump: a spawn takes about 13 ms, so two keep up with a fleet while
/// the loop answers.
const SPAWNERS: usize = 2;
/// How often DIR's free space and capture files are measured, and tcpdump's logs looked at.
const DISK_EVERY: Duration = Duration::from_secs(1);
/// Below this free on DIR's filesystem tcpdump cannot write a packet for sure (it writes up to
/// 256 KiB at once and says nothing when a write fails): running captures end.
const FULL_BELOW: u64 = 1 << 20;
/// The saver's retry delays after a failed write: doubling from the first to the last. The
/// last is short enough that an answer held for the save waits less than the original
/// controller's 3 s resend twice over, once there is room again.
const SAVE_RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(4));

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
    /// A VERIFY of a name that resolved to an address it may not probe.
    VerifyRefused {
        device: String,
        why: String,
    },
    /// tcpdump spawned (off the loop: a fork and exec take milliseconds).
    Spawned {
        id: CaptureId,
        result: std::result::Result<Child, String>,
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

/// `--key-file`'s state: the key, who may still send plain requests, the nonces seen, and the
/// sources whose signed requests passed (their answers are signed, each bound to the nonce of
/// the request it answers).
struct Auth {
    key: Key,
    allow_plain: Vec<crate::netaddr::Cidr>,
    replays: Replays,
    peers: HashMap<SocketAddr, Peer>,
    pruned: Instant,
}

/// A signed source: when it last asked, and the nonce of its last request per device and
/// verb (an answer binds to the request it answers; `last` for one that names no request).
struct Peer {
    at: Instant,
    last: String,
    asked: HashMap<(String, &'static str), String>,
}

/// Requests remembered per signed source (a session's devices times four verbs fit).
const PEER_ASKED: usize = 65_536;

/// A signed source is answered signed for this long after its last request.
const PEER_TTL: Duration = Duration::from_secs(600);

impl Auth {
    fn datagram(
        &mut self,
        core: &mut Core,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Vec<Action> {
        let wall = super::auth::unix_now();
        if now.duration_since(self.pruned) >= Duration::from_secs(10) {
            self.replays.prune(wall);
            self.peers
                .retain(|_, p| now.duration_since(p.at) < PEER_TTL);
            self.pruned = now;
        }
        match super::auth::open(&self.key, Dir::Request, data, wall, &mut self.replays, &[]) {
            Opened::Signed(body) => {
                self.remember(now, from, data, body);
                core.datagram(now, from, body)
            }
            Opened::Plain(d) if self.allow_plain.iter().any(|c| c.contains(from.ip())) => {
                core.datagram(now, from, d)
            }
            Opened::Plain(d) => core.unauthenticated(
                now,
                from,
                d,
                "no MAC: this agent has --key-file and the source is not in --allow-unauthenticated",
            ),
            Opened::Forged(why) => core.forged(now, from, &why),
        }
    }

    /// A signed request's nonce, by the device and verb it names.
    fn remember(&mut self, now: Instant, from: SocketAddr, data: &[u8], body: &[u8]) {
        let nonce = super::auth::nonce_of(data).unwrap_or_default();
        let p = self.peers.entry(from).or_insert_with(|| Peer {
            at: now,
            last: String::new(),
            asked: HashMap::new(),
        });
        p.at = now;
        p.last = nonce.clone();
        if let Ok(req) = crate::proto::parse_request(body) {
            if p.asked.len() >= PEER_ASKED {
                p.asked.clear();
            }
            let device = crate::netaddr::canonical_device(&req.device);
            p.asked.insert((device, req.verb.as_str()), nonce);
        }
    }

    /// `text` as it goes to `to`: signed when `to` signs its requests, bound to the request
    /// it answers.
    fn seal(&self, to: SocketAddr, text: &str) -> Option<String> {
        let p = self.peers.get(&to)?;
        let answers = crate::proto::parse_response(text)
            .and_then(|r| {
                let device = crate::netaddr::canonical_device(&r.device);
                p.asked.get(&(device, r.verb?.as_str()))
            })
            .unwrap_or(&p.last);
        Some(
            self.key
                .seal_answer(text, super::auth::unix_now(), super::auth::nonce(), answers),
        )
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
    /// This turn's events, printed by `flush` once the turn's answers are out: a controller's
    /// answer does not wait on stdout (a pipe to jq, say).
    events: Vec<Event>,
    saver: Saver,
    /// Sequence numbers of the last state handed to the saver and of the last one written.
    requested: u64,
    saved: u64,
    /// Final replies waiting for the save of the state they announce (its sequence number).
    held: VecDeque<(u64, SocketAddr, String)>,
    /// The last save's error while saves fail (logged once per change), and when to retry.
    save_failing: Option<String>,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    spawner: mpsc::Sender<Job>,
    auth: Option<Auth>,
    /// What VERIFY may never probe (the core checks literals; names are checked here).
    own: Arc<(Vec<std::net::IpAddr>, Vec<std::net::IpAddr>)>,
    disk_at: Option<Instant>,
    /// Length of each running capture's log when last read, and the captures ended because
    /// tcpdump could not write (why).
    log_len: HashMap<CaptureId, u64>,
    write_failed: HashMap<CaptureId, String>,
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
    let pool = |n, name, done_tx| {
        let waker = Arc::clone(&waker);
        crate::pool::workers(
            n,
            name,
            |job: Job| job(),
            done_tx,
            move || {
                let _ = waker.wake();
            },
        )
        .map_err(|e| Error::failed(format!("starting {name}: {e}")))
    };
    let jobs = pool(WORKERS, "tc-ovoc-worker", done_tx.clone())?;
    let spawner = pool(SPAWNERS, "tc-ovoc-spawner", done_tx)?;
    let auth = p.key.clone().map(|key| Auth {
        key,
        allow_plain: p.allow_unauthenticated.clone(),
        replays: Replays::default(),
        peers: HashMap::new(),
        pruned: Instant::now(),
    });
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
        events: Vec::new(),
        saver,
        requested: 0,
        saved: 0,
        held: VecDeque::new(),
        save_failing: None,
        retry_at: None,
        retry_delay: SAVE_RETRY.0,
        spawner,
        auth,
        own: Arc::new((p.core.own.clone(), p.core.broadcast.clone())),
        disk_at: None,
        log_len: HashMap::new(),
        write_failed: HashMap::new(),
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
            forbidden: c.forbidden,
            limited: c.limited,
            unauthenticated: c.unauthenticated,
            seconds: started.elapsed().as_secs_f64(),
            reason: "signal".into(),
        });
    }
}

impl Driver for Agent {
    fn datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Flow {
        self.core.set_wall(crate::timefmt::Utc::now());
        let actions = match &mut self.sh.auth {
            Some(auth) => auth.datagram(&mut self.core, now, from, data),
            None => self.core.datagram(now, from, data),
        };
        self.sh.perform(&mut self.core, actions);
        Flow::Continue
    }

    /// SIGCHLD only wakes the loop (every turn reaps). SIGHUP is ignored with one line: the
    /// agent has no configuration to reload, and `nohup tc ovoc serve &` must survive the
    /// logout (the handler replaces nohup's ignore, so ignoring is ours to do). SIGINT and
    /// SIGTERM stop every capture, and a second one leaves at once.
    fn signal(&mut self, now: Instant, sig: i32) -> Flow {
        match sig {
            SIGCHLD => {}
            SIGHUP => log::warn!(
                "SIGHUP ignored: captures go on (nothing to reload; restart to change flags, \
                 SIGTERM to stop)"
            ),
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
                Done::VerifyRefused { device, why } => core.verify_refused(&device, &why),
                Done::Spawned { id, result } => {
                    sh.spawned(core, id, result);
                    continue;
                }
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
        sh.check_disk(core, now);
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
        // DIR's free space and the running tcpdumps' logs, and a state save to retry.
        if !self.core.running().is_empty() {
            wake = wake.min(soon(1000)).or(soon(1000));
        }
        if let Some(t) = self.sh.retry_at {
            wake = Some(wake.map_or(t, |w| w.min(t)));
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

/// Events held for the end of a turn at most: a burst read in one turn prints as it goes.
const EVENTS_PER_TURN: usize = 256;

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
                Action::Emit(ev) => {
                    self.events.push(ev);
                    if self.events.len() >= EVENTS_PER_TURN {
                        self.print_events();
                    }
                }
                Action::Persist => self.dirty = true,
                Action::Spawn { id, device, base } => {
                    let log = tcpdump::log_path(&self.dir, &base);
                    let t = self.tcpdump.clone();
                    let job: Job = Box::new(move || Done::Spawned {
                        id,
                        result: t.spawn(&base, &device, &log),
                    });
                    if self.spawner.send(job).is_err() {
                        queue.extend(core.failed(id, "the tcpdump spawner is gone"));
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
                Action::Verify {
                    device,
                    requester_loopback,
                } => {
                    let (cfg, own) = (Arc::clone(&self.probes), Arc::clone(&self.own));
                    self.work(move || {
                        let check = |ip| {
                            crate::probe::target_refusal(ip, requester_loopback, &own.0, &own.1)
                        };
                        match crate::probe::run_checked(&device, &cfg, check) {
                            Ok(report) => Done::Verified { device, report },
                            Err(why) => Done::VerifyRefused { device, why },
                        }
                    });
                }
            }
        }
    }

    /// Once per turn of the loop: hands the state to the saver if it changed (unless a failed
    /// save waits for its retry), and holds this turn's final replies until the saver has
    /// written it. Saving per reply, in line, rewrote and fsynced the whole state file a
    /// thousand times when a fleet registered.
    fn flush(&mut self, core: &Core) {
        let now = Instant::now();
        if self.dirty && self.retry_at.is_none_or(|t| now >= t) {
            self.dirty = false;
            self.retry_at = None;
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
        // what an earlier turn changed. While a failed save waits for its retry, replies wait
        // for that retry's save.
        let seq = self.requested + u64::from(self.dirty);
        for (to, text) in std::mem::take(&mut self.replies) {
            self.held.push_back((seq, to, text));
        }
        self.release();
        self.print_events();
    }

    fn print_events(&mut self) {
        for ev in self.events.drain(..) {
            emit(&ev);
        }
    }

    /// The saver's outcome. A failure is logged once per distinct error (not once per retry:
    /// a full disk made 269,329 lines in 14 s), retried after a doubling delay, and the
    /// replies that waited for it go out as 503: a 200 must not announce unsaved state.
    fn saved(&mut self, seq: u64, result: std::result::Result<(), String>) {
        match result {
            Ok(()) => {
                if let Some(e) = self.save_failing.take() {
                    log::warn!("state saved again (it failed: {e})");
                }
                self.retry_delay = SAVE_RETRY.0;
            }
            Err(e) => {
                if self.save_failing.as_deref() != Some(e.as_str()) {
                    log::error!(
                        "saving state: {e}; answering 503 to changes until a save succeeds"
                    );
                }
                self.save_failing = Some(e.clone());
                self.retry_at = Some(Instant::now() + self.retry_delay);
                self.retry_delay = (self.retry_delay * 2).min(SAVE_RETRY.1);
                self.last_saved.clear();
                self.dirty = true;
                self.refuse_held(seq, &e);
            }
        }
        self.saved = self.saved.max(seq);
        self.release();
    }

    /// The held final replies covered by the failed save `seq`: a 200 becomes 503 (the `199`
    /// before it goes too), with an event saying why.
    fn refuse_held(&mut self, seq: u64, e: &str) {
        for (s, to, text) in self.held.iter_mut() {
            if *s > seq {
                break;
            }
            let Some(r) =
                crate::proto::parse_response(text).filter(|r| r.code / 100 == 1 || r.code == 200)
            else {
                continue;
            };
            let Some(verb) = r.verb else { continue };
            if r.code != 200 {
                text.clear();
                continue;
            }
            let refused = crate::proto::Response::new(503, &r.device, verb);
            *text = refused.to_wire();
            emit(&Event::OvocResponse {
                device: r.device,
                request: verb.as_str().into(),
                code: 503,
                reason: refused.reason,
                to: to.to_string(),
                detail: Some(format!("state not saved: {e}")),
            });
        }
    }

    fn release(&mut self) {
        while self
            .held
            .front()
            .is_some_and(|(seq, ..)| *seq <= self.saved)
        {
            let (_, to, text) = self.held.pop_front().expect("front exists");
            if !text.is_empty() {
                self.send(to, &text);
            }
        }
    }

    fn send(&self, to: SocketAddr, text: &str) {
        let sealed = self.auth.as_ref().and_then(|a| a.seal(to, text));
        let text = sealed.as_deref().unwrap_or(text);
        if let Err(e) = self.sock.send_to(text.as_bytes(), to) {
            log::warn!("replying to {to}: {e}");
        }
    }

    /// A spawn finished. A capture that timed out or failed meanwhile gets its tcpdump killed
    /// (and reaped like any child).
    fn spawned(
        &mut self,
        core: &mut Core,
        id: CaptureId,
        result: std::result::Result<Child, String>,
    ) {
        match result {
            Ok(child) => {
                let pid = child.id();
                let known = core.base_of(id).is_some();
                self.children.insert(id, child);
                if known {
                    let actions = core.spawned(id, pid);
                    self.perform(core, actions);
                } else if let Err(e) = crate::sys::kill(pid) {
                    log::debug!("killing tcpdump {pid} of a capture given up: {e}");
                }
            }
            Err(e) => {
                let actions = core.failed(id, &e);
                self.perform(core, actions);
            }
        }
    }

    /// Every `DISK_EVERY`: DIR's free space and capture files for the core's limits, and
    /// whether each running tcpdump can still write. tcpdump says nothing when a write fails
    /// on a full disk (it keeps counting packets it did not write), so a full filesystem ends
    /// the running captures; anything it does print past its banner ends that capture too.
    fn check_disk(&mut self, core: &mut Core, now: Instant) {
        if self
            .disk_at
            .is_some_and(|t| now.duration_since(t) < DISK_EVERY)
        {
            return;
        }
        self.disk_at = Some(now);
        let free = crate::sys::free_bytes(&self.dir).ok();
        core.set_disk(Disk {
            free,
            used: tcpdump::dir_usage(&self.dir),
        });
        let full = free.filter(|f| *f < FULL_BELOW).map(|f| {
            format!(
                "no space left in {} ({} free): tcpdump cannot write",
                self.dir.display(),
                super::limits::bytes(f)
            )
        });
        for id in core.running() {
            if self.write_failed.contains_key(&id) {
                continue;
            }
            let Some(why) = full.clone().or_else(|| self.log_error(core, id)) else {
                continue;
            };
            let Some(pid) = self.children.get(&id).map(Child::id) else {
                continue;
            };
            log::warn!("capture {id}: {why}; stopping its tcpdump {pid}");
            self.write_failed.insert(id, why);
            if let Err(e) = crate::sys::terminate(pid) {
                log::debug!("signalling tcpdump {pid}: {e}");
            }
        }
        self.log_len.retain(|id, _| core.base_of(*id).is_some());
    }

    /// What a running tcpdump printed past its banner, read only when its log grew.
    fn log_error(&mut self, core: &Core, id: CaptureId) -> Option<String> {
        let (_, base, _) = core.base_of(id)?;
        let len = std::fs::metadata(tcpdump::log_path(&self.dir, base))
            .ok()?
            .len();
        if self.log_len.insert(id, len) == Some(len) {
            return None;
        }
        tcpdump::error_lines(&self.log_of(core, id))
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
            // Ended for a write failure (ours) or with an error of its own (e.g. a ring file
            // it could not create): its count then includes packets it did not write.
            let starting = core.starting().contains(&id);
            let failed = self.write_failed.remove(&id).or_else(|| {
                (!starting && tcpdump::listening(&log))
                    .then(|| tcpdump::error_lines(&log))
                    .flatten()
            });
            let on_disk = failed.as_ref().and_then(|_| {
                core.base_of(id)
                    .map(|(_, base, _)| tcpdump::packets_on_disk(&self.dir, base))
            });
            let why = if let Some(w) = failed {
                format!("write failed: {w}")
            } else if starting || !tcpdump::listening(&log) {
                tcpdump::error_text(&log)
            } else {
                format!("tcpdump exited ({status})")
            };
            let actions = core.exited(id, tcpdump::parse_stats(&log), &why, on_disk);
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
                None,
            );
            self.perform(core, actions);
        }
    }
}
