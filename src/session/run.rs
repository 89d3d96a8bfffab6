//! `tc session`: the I/O shell around the session core. One daemon loop (`crate::daemon`) owns
//! the UDP socket that receives both agent responses and forwarded alarms (the forwarding rule points at the
//! REGISTER source, which is this socket), the signals, and a waker for the bounded worker pool
//! that runs device REST/SFTP work and local probes. Devices progress independently: a slow
//! device holds one worker, never the loop.
//!
//! Durability: every task is appended to the CSV report and every step to the journal as it
//! happens, so a crash loses nothing; `--resume` replays the journal.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;

use crate::daemon::{Daemon, Driver, Flow};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::config::Plan;
use super::core::{Action, Core, Job, JobOk, Journal, Row};
use crate::cli::SessionArgs;
use crate::cpe::run::{Context, FetchOpts, Snmp, Target};
use crate::emit::emit;
use crate::error::{Error, ExitCode, Result};
use crate::event::Event;
use crate::probe::ProbeConfig;

struct Report {
    w: csv::Writer<std::fs::File>,
}

impl Report {
    fn open(path: &Path) -> Result<Report> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::usage(format!("opening report {}: {e}", path.display())))?;
        let empty = f.metadata().map(|m| m.len() == 0).unwrap_or(true);
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(f);
        if empty {
            w.write_record([
                "time",
                "device",
                "task",
                "status",
                "code",
                "description",
                "file",
            ])
            .and_then(|_| w.flush().map_err(csv::Error::from))
            .map_err(|e| Error::failed(format!("writing report: {e}")))?;
        }
        Ok(Report { w })
    }

    fn row(&mut self, r: &Row) {
        let code = r.code.map(|c| c.to_string()).unwrap_or_default();
        let time = crate::timefmt::Utc::now().rfc3339();
        let res = self
            .w
            .write_record([
                time.as_str(),
                &r.device,
                r.task,
                r.status,
                &code,
                &r.description,
                r.file.as_deref().unwrap_or(""),
            ])
            .and_then(|_| self.w.flush().map_err(csv::Error::from));
        if let Err(e) = res {
            log::error!("writing the report: {e}");
        }
    }
}

fn read_journal(path: &Path) -> Result<Vec<Journal>> {
    let f = std::fs::File::open(path)
        .map_err(|e| Error::usage(format!("--resume: no journal at {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
        match serde_json::from_str::<Journal>(&line) {
            Ok(j) => out.push(j),
            // A crash can cut the last line short; everything before it is good.
            Err(e) => log::warn!("{} line {}: skipped ({e})", path.display(), i + 1),
        }
    }
    Ok(out)
}

struct Worker {
    targets: HashMap<String, Target>,
    ctx: Context,
    fetch: FetchOpts,
    snmp: Option<Snmp>,
    probes: ProbeConfig,
}

impl Worker {
    fn run(&self, device: &str, job: Job) -> std::result::Result<JobOk, String> {
        let t = self.targets.get(device).ok_or("unknown device")?;
        match job {
            Job::CpeStart => {
                crate::cpe::run::start(&self.ctx, t, self.snmp.as_ref()).map(|_| JobOk::Done)
            }
            Job::CpeStop => crate::cpe::run::stop(&self.ctx, t).map(|_| JobOk::Done),
            Job::Fetch => match crate::cpe::run::fetch(&self.ctx, t, &self.fetch)? {
                Event::CpeFetched { path, .. } => Ok(JobOk::Fetched { path }),
                _ => Err("fetch gave no file".into()),
            },
            Job::Probe => Ok(JobOk::Probed(crate::probe::run(device, &self.probes))),
        }
    }
}

/// The journal's records (on `--resume`), the report and the journal, open for appending.
struct Files {
    records: Vec<Journal>,
    report: Report,
    journal: std::fs::File,
}

fn open_files(p: &Plan) -> Result<Files> {
    std::fs::create_dir_all(p.out.join(".tc-session"))
        .map_err(|e| Error::usage(format!("creating {}: {e}", p.out.display())))?;
    let records = if p.resume {
        read_journal(&p.journal)?
    } else {
        if p.journal.metadata().is_ok_and(|m| m.len() > 0) {
            return Err(Error::usage(format!(
                "{} holds the journal of an earlier session: continue it with --resume, or use another --out",
                p.journal.display()
            )));
        }
        Vec::new()
    };
    let report = Report::open(&p.report)?;
    let journal = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.journal)
        .map_err(|e| Error::usage(format!("opening {}: {e}", p.journal.display())))?;
    Ok(Files {
        records,
        report,
        journal,
    })
}

/// The queue of starts and fetches, and the pool that gives alarm work a thread at once.
type Pools = (
    mpsc::Sender<(String, Job)>,
    crate::pool::Elastic<(String, Job)>,
);

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
    let run_job = move |(device, job): (String, Job)| {
        // A bug in one device's job must not leave the device waiting forever for a result.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run(&device, job)))
            .unwrap_or_else(|_| Err(format!("internal error: the {job:?} job panicked")));
        (device, job, r)
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
    let job_tx = crate::pool::workers(jobs, "tc-session", run_job, done_tx, wake)
        .map_err(|e| Error::failed(format!("starting workers: {e}")))?;
    Ok((job_tx, urgent))
}

pub fn run(a: SessionArgs) -> Result<ExitCode> {
    let p = super::config::resolve(&a, &crate::secret::Env::process())?;
    let mut files = open_files(&p)?;
    let mut core = Core::new(p.core.clone(), p.devices.clone());
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
    });
    crate::sys::raise_fd_limit();
    let mut daemon = Daemon::open(p.listen, &[SIGINT, SIGTERM, SIGHUP])?;
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
    let mut sess = Loop {
        core,
        done_rx,
        io: Io {
            sock: daemon.socket(),
            job_tx: &job_tx,
            urgent: &urgent,
            urgent_running: 0,
            held: VecDeque::new(),
            report: &mut files.report,
            journal: &mut files.journal,
            agent_keys: p.agent_keys,
        },
    };
    let actions = sess.core.start(Instant::now());
    sess.io.perform(actions);
    if !sess.core.finished() {
        daemon.run(&mut sess)?;
    }
    let core = sess.core;
    drop((job_tx, urgent));
    Ok(summary(&core, p.devices.len(), started))
}

/// The last line, and the exit code it stands for.
fn summary(core: &Core, devices: usize, started: Instant) -> ExitCode {
    let tally = core.tally();
    let interrupted = core.is_interrupted();
    emit(&Event::SessionSummary {
        devices: devices as u32,
        completed: tally.completed,
        aborted: tally.aborted,
        failed: tally.failed,
        rounds: tally.rounds,
        seconds: started.elapsed().as_secs_f64(),
        reason: if interrupted {
            "interrupted".into()
        } else {
            "done".into()
        },
    });
    if interrupted {
        ExitCode::Interrupted
    } else if tally.completed as usize == devices {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    }
}

/// The session in the daemon loop: datagrams and worker results go to the core, its actions
/// to `Io`; the loop ends when every device is done.
struct Loop<'a> {
    core: Core,
    done_rx: mpsc::Receiver<(String, Job, std::result::Result<JobOk, String>)>,
    io: Io<'a>,
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
        crate::logging::warn_user("interrupted: stopping every capture, fetching its file, then exiting (again to exit now)");
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
        if self.core.finished() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.core
            .next_deadline()
            .into_iter()
            .chain(self.io.held_deadline())
            .min()
            .or(Some(now + Duration::from_secs(1)))
    }
}

/// What an alarm needs done now.
fn is_urgent(job: Job) -> bool {
    matches!(job, Job::CpeStop | Job::Probe)
}

/// How long a fetch may wait for alarm work to finish before it runs anyway.
const HOLD_MAX: Duration = Duration::from_secs(5);

struct Io<'a> {
    sock: Arc<UdpSocket>,
    job_tx: &'a mpsc::Sender<(String, Job)>,
    urgent: &'a crate::pool::Elastic<(String, Job)>,
    /// Stops and probes submitted and not yet done.
    urgent_running: usize,
    /// Fetches held back while stops and probes run: in an alarm storm, a thousand SSH
    /// handshakes would take the CPU the stops need (the files wait safely on the devices).
    held: VecDeque<(Instant, String)>,
    report: &'a mut Report,
    journal: &'a mut std::fs::File,
    /// `--agent-key`: signs the requests to agents with a key, checks their answers.
    agent_keys: crate::ovoc::auth::AgentKeys,
}

impl Io<'_> {
    /// When the oldest held fetch must run even if alarm work is still going on.
    fn held_deadline(&self) -> Option<Instant> {
        self.held.front().map(|(at, _)| *at + HOLD_MAX)
    }

    fn release_held(&mut self, now: Instant) {
        while let Some((at, _)) = self.held.front() {
            if self.urgent_running > 0 && now < *at + HOLD_MAX {
                break;
            }
            let (_, device) = self.held.pop_front().expect("front exists");
            let _ = self.job_tx.send((device, Job::Fetch));
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
                Action::Work { device, job } => {
                    if is_urgent(job) {
                        self.urgent_running += 1;
                        if let Err(((device, job), e)) = self.urgent.submit((device, job)) {
                            // No thread at all: the slower pool still does the work.
                            log::warn!("{device}: no thread for {job:?} ({e}); queued");
                            let _ = self.job_tx.send((device, job));
                        }
                    } else if job == Job::Fetch && self.urgent_running > 0 {
                        self.held.push_back((Instant::now(), device));
                    } else {
                        let _ = self.job_tx.send((device, job));
                    }
                }
                Action::Emit(ev) => emit(&ev),
                Action::Report(row) => {
                    self.report.row(&row);
                    emit(&Event::SessionTask {
                        device: row.device,
                        task: row.task.into(),
                        status: row.status.into(),
                        code: row.code,
                        description: row.description,
                        file: row.file,
                        round: row.round,
                    });
                }
                Action::Journal(j) => {
                    let mut line = serde_json::to_vec(&j).unwrap_or_default();
                    line.push(b'\n');
                    if let Err(e) = self.journal.write_all(&line) {
                        log::error!("writing the journal: {e}");
                    }
                }
            }
        }
    }
}
