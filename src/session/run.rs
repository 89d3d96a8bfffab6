//! `tc session`: the I/O shell around the session core. One daemon loop (`crate::daemon`) owns
//! the UDP socket that receives both agent responses and forwarded alarms (the forwarding rule points at the
//! REGISTER source, which is this socket), the signals, and a waker for the bounded worker pool
//! that runs device REST/SFTP work and local probes. Devices progress independently: a slow
//! device holds one worker, never the loop.
//!
//! Durability: every task is appended to the CSV report and every step to the journal as it
//! happens, so a crash loses nothing; `--resume` replays the journal.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;

use crate::daemon::{Daemon, Driver, Flow};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::config::{Collect, Plan};
use super::core::{Action, Census, Core, Job, JobOk, Journal, Step, Work};
use super::files::{self, Layout, Lines, Lock, Report};
use crate::cli::SessionArgs;
use crate::cpe::run::{Context, FetchOpts, Snmp, Target};
use crate::emit::emit;
use crate::error::{Error, ExitCode, Result};
use crate::event::Event;
use crate::probe::ProbeConfig;

struct Worker {
    targets: HashMap<String, Target>,
    ctx: Context,
    fetch: FetchOpts,
    snmp: Option<Snmp>,
    probes: ProbeConfig,
    layout: Layout,
    collect: Option<Collect>,
}

impl Worker {
    fn run(&self, w: &Work) -> std::result::Result<JobOk, String> {
        let device = w.device.as_str();
        let t = self.targets.get(device).ok_or("unknown device")?;
        match w.job {
            Job::CpeStart => {
                crate::cpe::run::start(&self.ctx, t, self.snmp.as_ref()).map(|_| JobOk::Done)
            }
            Job::CpeStop => crate::cpe::run::stop(&self.ctx, t).map(|_| JobOk::Done),
            // The part name stays until the journal records the file (Io::perform).
            Job::Fetch => {
                let o = FetchOpts {
                    out: self.layout.round_dir(device, w.round),
                    ..self.fetch.clone()
                };
                match crate::cpe::run::fetch_kept(&self.ctx, t, &o)? {
                    (Event::CpeFetched { path, .. }, _) => Ok(JobOk::Fetched { path }),
                    _ => Err("fetch gave no file".into()),
                }
            }
            Job::Probe => Ok(JobOk::Probed(crate::probe::run(device, &self.probes))),
            Job::Collect => self.collect(w),
            Job::Analyze => self.analyze(w),
        }
    }

    /// The round's OVOC files into its directory, beside the CPE file.
    fn collect(&self, w: &Work) -> std::result::Result<JobOk, String> {
        // Neither can change by waiting (and --resume refuses another layout).
        let Some(c) = self.collect.as_ref() else {
            return Ok(JobOk::Uncollectable("--collect-ovoc is off".into()));
        };
        let Some(server) = c.servers.get(&w.device) else {
            return Ok(JobOk::Uncollectable(
                "no OVOC server for this device".into(),
            ));
        };
        let file = w.file.as_deref().ok_or("no CPE file to match")?;
        let dir = self.layout.round_dir(&w.device, w.round);
        match crate::ovoc::fetch::collect(&c.source, server, &w.device, file, &dir) {
            Ok(events) => Ok(JobOk::Collected(events)),
            Err((true, e)) => Err(e),
            Err((false, e)) => Ok(JobOk::Uncollectable(e)),
        }
    }

    /// Both sides of the round compared; the files beside the captures.
    fn analyze(&self, w: &Work) -> std::result::Result<JobOk, String> {
        let file = w.file.as_deref().ok_or("no CPE file")?;
        // From the journal on --resume: a plain name, never a path.
        crate::proto::validate_filename(file)?;
        let dir = self.layout.round_dir(&w.device, w.round);
        let base = crate::proto::ovoc_base(file);
        let ovoc: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| crate::ovoc::fetch::is_ring_file(n, &base))
            })
            .map(|e| e.path())
            .collect();
        let device = device_ip(&w.device)?;
        let (verdict, text) =
            crate::analyze::write_round(&dir.join(file), &ovoc, device, &dir, self.fetch.modes)?;
        Ok(JobOk::Analyzed { verdict, text })
    }
}

/// The device's address as the captures hold it (a host name is looked up, as the agent's
/// tcpdump filter was).
fn device_ip(device: &str) -> std::result::Result<std::net::IpAddr, String> {
    if let Ok(ip) = device.parse() {
        return Ok(ip);
    }
    std::net::ToSocketAddrs::to_socket_addrs(&(device, 0))
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip())
        .ok_or_else(|| format!("{device}: no address to find it by in the captures"))
}

/// The journal's records (on `--resume`), the report and the journal, open for appending, and
/// the out dir's lock.
struct Files {
    records: Vec<Journal>,
    report: Report,
    journal: Lines,
    lock: Lock,
}

fn open_files(p: &Plan) -> Result<Files> {
    let state = p.out.join(".tc-session");
    p.modes
        .create_dir_all(&state)
        .map_err(|e| Error::usage(format!("creating {}: {e}", state.display())))?;
    // Before anything is read or written: the journal may be another live session's.
    let lock = Lock::take(&state.join("lock"), p.modes)?;
    let records = if p.resume {
        files::check_layout(&state, p.core.collect)?;
        files::read_journal(&p.journal)?
    } else {
        if p.journal.metadata().is_ok_and(|m| m.len() > 0) {
            return Err(Error::usage(format!(
                "{} holds the journal of an earlier session: continue it with --resume, or use another --out",
                p.journal.display()
            )));
        }
        files::write_layout(&state, p.core.collect, p.modes)?;
        Vec::new()
    };
    if let Some(dir) = p.report.parent().filter(|d| !d.as_os_str().is_empty()) {
        p.modes
            .create_dir_all(dir)
            .map_err(|e| Error::usage(format!("creating {}: {e}", dir.display())))?;
    }
    let report = Report::open(&p.report, p.modes)?;
    let journal = Lines::open(&p.journal, p.modes)
        .map_err(|e| Error::usage(format!("opening {}: {e}", p.journal.display())))?;
    Ok(Files {
        records,
        report,
        journal,
        lock,
    })
}

/// The queue of starts and fetches, and the pool that gives alarm work a thread at once.
type Pools = (mpsc::Sender<Work>, crate::pool::Elastic<Work>);

/// The `--jobs` workers' nice value (0 is the default, 19 the lowest priority).
const BULK_NICE: i32 = 10;

/// The result a device's job hands back to the loop.
type Done = (String, Job, std::result::Result<JobOk, String>);

/// Starts and fetches (a fleet has a thousand at once) run on `--jobs` workers. What an alarm
/// needs now (the CPE stop, the probes) never queues behind them: it gets a thread of its own on
/// arrival, up to --alarm-jobs, so a storm of alarms stops every capture at once.
fn pools(
    (jobs, alarm_jobs): (usize, usize),
    worker: Arc<Worker>,
    done_tx: mpsc::Sender<Done>,
    waker: Arc<mio::Waker>,
) -> Result<Pools> {
    let run_job = move |w: Work| {
        // A bug in one device's job must not leave the device waiting forever for a result.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run(&w)))
            .unwrap_or_else(|_| Err(format!("internal error: the {:?} job panicked", w.job)));
        (w.device, w.job, r)
    };
    let wake = move || {
        let _ = waker.wake();
    };
    let urgent = crate::pool::Elastic::new(
        alarm_jobs,
        Duration::from_secs(5),
        "tc-session-alarm",
        run_job.clone(),
        done_tx.clone(),
        wake.clone(),
    );
    // Starts, fetches and analyses are bulk work (a fleet's fetches are a thousand SSH
    // handshakes): their threads yield the CPU to the alarm threads and the loop, so a storm's
    // stop requests do not wait behind them. Alone on a core they run as fast as before.
    let bulk = move |w: Work| {
        thread_local!(static NICED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        if !NICED.replace(true) {
            crate::sys::set_thread_nice(BULK_NICE);
        }
        run_job(w)
    };
    let job_tx = crate::pool::workers(jobs, "tc-session", bulk, done_tx, wake)
        .map_err(|e| Error::failed(format!("starting workers: {e}")))?;
    Ok((job_tx, urgent))
}

pub fn run(a: SessionArgs) -> Result<ExitCode> {
    let p = super::config::resolve(&a, &crate::secret::Env::process())?;
    let mut files = open_files(&p)?;
    let mut core = Core::new(p.core.clone(), p.devices.clone());
    let layout = Layout {
        out: p.out.clone(),
        per_round: p.core.collect,
    };
    core.resume(&files.records);
    let worker = Arc::new(Worker {
        targets: p
            .targets
            .iter()
            .map(|t| (t.device.clone(), t.clone()))
            .collect(),
        ctx: p.ctx,
        fetch: p.fetch,
        snmp: p.snmp,
        probes: p.probes,
        layout: layout.clone(),
        collect: p.collect,
    });
    crate::sys::raise_fd_limit();
    // A datagram flood must not hold the loop in its read: signals (the wind-down, a second
    // signal) and worker results are handled between slices of reading.
    let mut daemon =
        Daemon::open(p.listen, &[SIGINT, SIGTERM, SIGHUP])?.with_drain_budget(DRAIN_BUDGET);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let (job_tx, urgent) = pools((p.jobs, p.alarm_jobs), worker, done_tx, daemon.waker())?;
    emit(&Event::SessionStarted {
        devices: p.devices.len() as u32,
        listen: daemon.local_addr(),
        out: p.out.display().to_string(),
        report: p.report.display().to_string(),
        resumed: p.resume,
        max_events: p.max_events,
    });
    let started = Instant::now();
    let (last, parts) = journal_state(&files.records, &layout);
    let mut sess = Loop {
        core,
        done_rx,
        gave_up: false,
        status: crate::progress::Status::start(),
        shown: None,
        io: Io {
            sock: daemon.socket(),
            job_tx: &job_tx,
            urgent: &urgent,
            urgent_running: 0,
            held: VecDeque::new(),
            report: &mut files.report,
            journal: &mut files.journal,
            lock: &mut files.lock,
            last,
            modes: p.modes,
            gaps: 0,
            taken: false,
            layout,
            parts,
            agent_keys: p.agent_keys,
        },
    };
    let actions = sess.core.start(Instant::now());
    sess.io.perform(actions);
    if !sess.core.finished() && !sess.io.taken {
        daemon.run(&mut sess)?;
    }
    sess.io.write_turn();
    sess.io.warn_unwritten();
    let end = End {
        gave_up: sess.gave_up,
        gaps: sess.io.gaps,
        taken: sess.io.taken,
    };
    // For a person at a terminal (where the status line was): what the files now hold.
    let human = crate::progress::drawing().then(|| {
        let rows = super::status::parse_report(sess.io.report.text());
        super::summary::text(&p.out, &p.report, &rows, p.core.collect)
    });
    drop(sess.status);
    crate::progress::finish();
    let core = sess.core;
    drop((job_tx, urgent));
    if let Some(h) = human {
        crate::progress::suspend(|| eprint!("\n{h}"));
    }
    Ok(summary(&core, p.devices.len(), started, end))
}

/// Each device's last journal record, and the part names of fetched captures the journal
/// already names (killed after it recorded the file, before the part name went).
fn journal_state(
    records: &[Journal],
    out: &Layout,
) -> (HashMap<String, Journal>, Vec<std::path::PathBuf>) {
    let last: HashMap<String, Journal> = records
        .iter()
        .map(|j| (j.device.clone(), j.clone()))
        .collect();
    let parts = last.values().filter_map(|j| part_of(out, j)).collect();
    (last, parts)
}

/// How the loop ended, beside what the core says.
struct End {
    /// The wind-down ran out.
    gave_up: bool,
    /// Times the out dir was found deleted or replaced.
    gaps: u32,
    /// Another session took the out dir.
    taken: bool,
}

/// The last line, and the exit code it stands for.
/// A gap (the out dir deleted under the session) fails the session: files were lost. The out
/// dir taken by another session is exit 2, as a second session refused at its start is.
fn summary(core: &Core, devices: usize, started: Instant, end: End) -> ExitCode {
    let End {
        gave_up,
        gaps,
        taken,
    } = end;
    let tally = core.tally();
    let interrupted = core.is_interrupted();
    emit(&Event::SessionSummary {
        devices: devices as u32,
        completed: tally.completed,
        aborted: tally.aborted,
        failed: tally.failed,
        rounds: tally.rounds,
        ignored: tally.ignored,
        refused: tally.refused,
        verdicts: tally.verdicts.clone(),
        unanalysed: tally.unanalysed,
        seconds: started.elapsed().as_secs_f64(),
        reason: match (interrupted, gave_up) {
            _ if taken => "out_dir_taken".into(),
            (_, true) => "wind_down_expired".into(),
            (true, false) => "interrupted".into(),
            (false, false) => "done".into(),
        },
    });
    if taken {
        ExitCode::Usage
    } else if interrupted {
        ExitCode::Interrupted
    } else if tally.completed as usize == devices && gaps == 0 && tally.unanalysed == 0 {
        // A collection or analysis asked for and not done is a failure too.
        ExitCode::Ok
    } else {
        ExitCode::Failed
    }
}

/// The session in the daemon loop: datagrams and worker results go to the core, its actions
/// to `Io`; the loop ends when every device is done, or when a wind-down runs out.
struct Loop<'a> {
    core: Core,
    done_rx: mpsc::Receiver<(String, Job, std::result::Result<JobOk, String>)>,
    /// The wind-down ran out: what is left is journaled, not done.
    gave_up: bool,
    io: Io<'a>,
    /// The line a person at a terminal sees, and what it said last.
    status: crate::progress::Status,
    shown: Option<Census>,
}

impl Driver for Loop<'_> {
    fn datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Flow {
        let Some(data) = self.io.agent_keys.open(from, data) else {
            return Flow::Continue;
        };
        let actions = self.core.datagram(now, from, data);
        self.io.perform(actions);
        Flow::Continue
    }

    /// SIGINT, SIGTERM and SIGHUP (a closed terminal) all wind down; a second one exits now.
    fn signal(&mut self, now: Instant, _: i32) -> Flow {
        if self.core.is_interrupted() {
            log::warn!("second signal: exiting now; the journal is intact (--resume continues)");
            std::process::exit(ExitCode::Interrupted as i32);
        }
        crate::logging::warn_user("interrupted: stopping every capture, fetching (and collecting) its files, then exiting (again to exit now)");
        let actions = self.core.interrupt(now);
        self.io.perform(actions);
        Flow::Continue
    }

    fn turn(&mut self, _: Instant) -> Flow {
        while let Ok((device, job, r)) = self.done_rx.try_recv() {
            if is_urgent(job) {
                self.io.urgent_running = self.io.urgent_running.saturating_sub(1);
            }
            let actions = self.core.job_done(Instant::now(), &device, job, r);
            self.io.perform(actions);
        }
        self.io.release_held(Instant::now());
        let actions = self.core.tick(Instant::now());
        self.io.perform(actions);
        self.io.write_turn();
        let now = self.core.census();
        if self.shown != Some(now) {
            self.status.set(now.line());
            self.shown = Some(now);
        }
        if self.io.taken {
            return Flow::Stop;
        }
        if self.core.wind_down_over(Instant::now()) {
            self.give_up();
            return Flow::Stop;
        }
        if self.core.finished() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn next_wake(&self, now: Instant) -> Option<Instant> {
        // At least once a second: lines a full disk held back are retried, and the out dir's
        // lock and files are checked (a deadline can be minutes away).
        let check = now + Duration::from_secs(1);
        self.core
            .next_deadline()
            .into_iter()
            .chain(self.io.held_deadline())
            .chain([check])
            .min()
    }
}

impl Loop<'_> {
    /// The wind-down ran out: say what is left, which the journal keeps for `--resume`.
    fn give_up(&mut self) {
        self.gave_up = true;
        let left = self.core.unfinished();
        crate::logging::warn_user(&format!(
            "the wind-down ran out (--wind-down) with {} device(s) unfinished: exiting; the \
             journal keeps them, --resume finishes them",
            left.len()
        ));
        for u in left {
            emit(&Event::SessionUnfinished {
                device: u.device,
                step: u.step.name().into(),
                capturing: u.capturing,
                file: u.file,
            });
        }
    }
}

/// What an alarm needs done now.
fn is_urgent(job: Job) -> bool {
    matches!(job, Job::CpeStop | Job::Probe)
}

/// What waits while alarm work runs: SSH handshakes and the analysis would take the CPU the
/// stops need (the files wait safely where they are).
fn is_heavy(job: Job) -> bool {
    matches!(job, Job::Fetch | Job::Collect | Job::Analyze)
}

/// The longest the loop reads datagrams before it looks at signals and results again.
const DRAIN_BUDGET: Duration = Duration::from_millis(20);

/// How long a fetch may wait for alarm work to finish before it runs anyway.
const HOLD_MAX: Duration = Duration::from_secs(5);

struct Io<'a> {
    sock: Arc<UdpSocket>,
    job_tx: &'a mpsc::Sender<Work>,
    urgent: &'a crate::pool::Elastic<Work>,
    /// Stops and probes submitted and not yet done.
    urgent_running: usize,
    /// Fetches held back while stops and probes run: in an alarm storm, a thousand SSH
    /// handshakes would take the CPU the stops need (the files wait safely on the devices).
    held: VecDeque<(Instant, Work)>,
    report: &'a mut Report,
    journal: &'a mut Lines,
    lock: &'a mut Lock,
    /// Each device's last journal record: the journal as it stands, to write again if it is lost.
    last: HashMap<String, Journal>,
    modes: crate::util::Modes,
    /// Times the out dir was found deleted or replaced.
    gaps: u32,
    /// Another session took the out dir's lock: nothing there is touched again.
    taken: bool,
    /// Where the captures go.
    layout: Layout,
    /// Part names of fetched captures, removed once the journal line naming the file is written
    /// (a fetch killed before that finds the part and keeps the same file, not a second copy).
    parts: Vec<std::path::PathBuf>,
    /// `--agent-key`: signs the requests to agents with a key, checks their answers.
    agent_keys: crate::ovoc::auth::AgentKeys,
}

/// The part name of the capture a journal record names as fetched.
fn part_of(out: &Layout, j: &Journal) -> Option<std::path::PathBuf> {
    let f = j.filename.as_ref().filter(|_| j.step == Step::Stop)?;
    // The journal is a file on disk: a name in it that is not a plain one names nothing here.
    crate::proto::validate_filename(f).ok()?;
    crate::netaddr::validate_device(&j.device).ok()?;
    Some(
        out.round_dir(&j.device, j.rounds + 1)
            .join(format!(".{f}.part")),
    )
}

impl Io<'_> {
    /// A disk still full at the end: what the files lack is said, not dropped silently.
    fn warn_unwritten(&self) {
        if self.has_pending() {
            crate::logging::warn_user(&format!(
                "{} report row(s) and {} journal line(s) could not be written (see above); the \
                 report lacks them, and --resume continues from the journal as it is",
                self.report.lines.pending(),
                self.journal.pending()
            ));
        }
    }

    fn has_pending(&self) -> bool {
        self.report.lines.has_pending() || self.journal.has_pending()
    }

    /// Once per turn: a check that the out dir is still this session's (its lock), lines a
    /// full disk held back, and a check that the report and the journal are still the files in
    /// `--out`. After the out dir is found taken, nothing in it is touched again.
    fn write_turn(&mut self) {
        if self.taken || !self.lock_held() {
            return;
        }
        self.report.lines.flush();
        self.journal.flush();
        self.remove_parts();
        let report = self.report.lines.replaced();
        let journal = self.journal.replaced();
        if report || journal {
            self.recreate(report, journal);
        }
    }

    /// The lock file is still ours, or was taken again (deleted alone, or with the out dir: a
    /// new one is taken before anything is written there). False when another session holds
    /// the lock now: the out dir is its, and this session stops at once.
    fn lock_held(&mut self) -> bool {
        if self.lock.intact() {
            return true;
        }
        match self.lock.retake(self.modes) {
            Ok(()) => {
                crate::logging::warn_user(&format!(
                    "the out dir's lock {} was deleted or replaced: taken again",
                    self.lock.path().display()
                ));
                true
            }
            Err(e) => {
                self.taken = true;
                crate::logging::warn_user(&format!(
                    "the out dir is not this session's any more: {e}. Stopping now and touching \
                     nothing in it; captures this session started may still run, and its \
                     journal (if still there) says what was done"
                ));
                false
            }
        }
    }

    /// The part names of fetched captures the journal now names, once it is on disk.
    fn remove_parts(&mut self) {
        if !self.journal.has_pending() && !self.taken {
            for p in self.parts.drain(..) {
                crate::sftp::Fetched::done(&p);
            }
        }
    }

    /// The report or the journal (or the out dir with both) was deleted or replaced under the
    /// session: each one lost is written again from memory; one still in place is left alone.
    fn recreate(&mut self, report: bool, journal: bool) {
        self.gaps += 1;
        for (what, lost) in [("report", report), ("journal", journal)] {
            if !lost {
                continue;
            }
            let path = if what == "report" {
                self.report.lines.path().display().to_string()
            } else {
                self.journal.path().display().to_string()
            };
            crate::logging::warn_user(&format!(
                "the {what} {path} is gone or not the session's file any more (--out deleted or \
                 replaced?): writing it again from memory; files this session kept there before \
                 may be lost"
            ));
            emit(&Event::SessionGap {
                file: path,
                reason: format!("the {what} was deleted or replaced while the session ran"),
            });
            let r = if what == "report" {
                self.report.recreate()
            } else {
                let mut last: Vec<&Journal> = self.last.values().collect();
                last.sort_by(|a, b| a.device.cmp(&b.device));
                let text: Vec<u8> = last.into_iter().flat_map(files::journal_line).collect();
                self.journal.recreate(&text)
            };
            if let Err(e) = r {
                crate::logging::warn_user(&format!(
                    "writing the {what} again: {e}; tried next turn"
                ));
            }
        }
        let gap = "the report or the journal was deleted or replaced: written again from \
                   memory; files kept in --out before may be lost";
        let time = crate::timefmt::Utc::now().rfc3339();
        self.report
            .row([time.as_str(), "", "gap", "failed", "", gap, "", ""]);
    }

    /// When the oldest held fetch must run even if alarm work is still going on.
    fn held_deadline(&self) -> Option<Instant> {
        self.held.front().map(|(at, _)| *at + HOLD_MAX)
    }

    fn release_held(&mut self, now: Instant) {
        while let Some((at, _)) = self.held.front() {
            if self.urgent_running > 0 && now < *at + HOLD_MAX {
                break;
            }
            let (_, work) = self.held.pop_front().expect("front exists");
            let _ = self.job_tx.send(work);
        }
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, text } => {
                    let text = self.agent_keys.seal(to, &text);
                    if let Err(e) = self.sock.send_to(text.as_bytes(), to) {
                        log::warn!("sending {text:?} to {to}: {e}");
                    }
                }
                Action::Work(w) => {
                    if is_urgent(w.job) {
                        self.urgent_running += 1;
                        if let Err((w, e)) = self.urgent.submit(w) {
                            // No thread at all: the slower pool still does the work.
                            log::warn!("{}: no thread for {:?} ({e}); queued", w.device, w.job);
                            let _ = self.job_tx.send(w);
                        }
                    } else if is_heavy(w.job) && self.urgent_running > 0 {
                        self.held.push_back((Instant::now(), w));
                    } else {
                        let _ = self.job_tx.send(w);
                    }
                }
                Action::Emit(ev) => emit(&ev),
                Action::Report(row) => {
                    let code = row.code.map(|c| c.to_string()).unwrap_or_default();
                    let time = crate::timefmt::Utc::now().rfc3339();
                    self.report.row([
                        time.as_str(),
                        &row.device,
                        row.task,
                        row.status,
                        &code,
                        &row.description,
                        row.file.as_deref().unwrap_or(""),
                        row.verdict.as_deref().unwrap_or(""),
                    ]);
                    emit(&Event::SessionTask {
                        device: row.device,
                        task: row.task.into(),
                        status: row.status.into(),
                        code: row.code,
                        description: row.description,
                        file: row.file,
                        round: row.round,
                        verdict: row.verdict,
                    });
                }
                Action::Journal(j) => {
                    self.journal.push(files::journal_line(&j));
                    self.parts.extend(part_of(&self.layout, &j));
                    self.last.insert(j.device.clone(), j);
                    self.remove_parts();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_part_is_looked_for_in_its_round_directory() {
        let j = |step| Journal {
            device: "10.0.0.1".into(),
            step,
            rounds: 1,
            cpe_capturing: false,
            filename: Some("CPE_x.pcap".into()),
        };
        let flat = Layout {
            out: "/o".into(),
            per_round: false,
        };
        let rounds = Layout {
            per_round: true,
            ..flat.clone()
        };
        let cases = [
            (&flat, Step::Stop, Some("/o/.CPE_x.pcap.part")),
            (&rounds, Step::Stop, Some("/o/10.0.0.1/2/.CPE_x.pcap.part")),
            (&rounds, Step::Collect, None),
        ];
        for (layout, step, want) in cases {
            assert_eq!(
                part_of(layout, &j(step)),
                want.map(std::path::PathBuf::from),
                "{step:?}"
            );
        }
    }
}
