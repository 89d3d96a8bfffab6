//! The session's pure core: one state machine per device, driven by datagrams (agent
//! responses, forwarded alarms), worker outcomes and the clock, answering with actions
//! (send a datagram, run a job, report a task, journal a step). No sockets, no threads.
//!
//! Per device: REGISTER -> CPE start -> CAPTURE -> wait for Connection Lost -> VERIFY with local
//! probes -> CPE stop -> fetch (retried every interval, never abandoned) -> STOP <file> ->
//! (with `--collect-ovoc`: collect the agent's files, retried while the server is unreachable,
//! then analyse both sides) -> next round or done. A device whose STOP was never confirmed has not completed (`failed`): its
//! journal still says STOP, so `--resume` sends it again.
//!
//! Resending, right for `tc` agents and for the original single-threaded ones alike:
//! - one request per device at a time (the device's step);
//! - an unanswered request is resent with backoff (`resend`, doubling per send up to 8x) until
//!   its budget of sends is spent;
//! - a request answered `100 Trying` has arrived: it is not sent again while its final answer
//!   can still come ([`trying_wait`], per request kind and agent); only when that wait passes is
//!   the final answer taken as lost;
//! - an agent that has not shown it works on two requests at once may be the original, which
//!   reads one datagram, works on it (about 10 s for a VERIFY) and only then reads the next:
//!   while it answers another device's request, this device's unanswered request is queued at
//!   the agent, not lost, so it is held and its resend clock starts again once the agent is free.
//!   A duplicate would cost the original agent another 10 s VERIFY, or turn a STOP into a 503
//!   and, the third time, a crash.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::event::{Event, ProbeReport};
use crate::netaddr::Cidr;
use crate::proto::{self, Request, Verb};

#[derive(Debug, Clone)]
pub struct Config {
    /// Rounds per device; 0 = until interrupted.
    pub max_events: u32,
    pub register_attempts: u32,
    /// Sends of CAPTURE, VERIFY and STOP before giving up on an answer.
    pub retries: u32,
    pub fetch_retry_interval: Duration,
    /// Wait before the first resend of an unanswered request (doubling per send).
    pub resend: Duration,
    pub probes: bool,
    /// Send REGISTER first (false: the forwarding rules are set by hand, or the agent is the
    /// 1.0.1 one, which ignores REGISTER).
    pub register: bool,
    /// How long this session's own probes take (a `tc` agent's take about as long).
    pub probe_time: Duration,
    /// Who may send alarms: the OVOC servers (by default the inventory's `ovoc` addresses). An
    /// alarm from anyone else would stop captures and end rounds: it changes nothing.
    pub alarm_from: Vec<Cidr>,
    /// How long a wind-down may take after the first signal before the session gives up on what
    /// is left (the journal keeps it for `--resume`).
    pub wind_down: Duration,
    /// After STOP, fetch the round's OVOC files and analyse them with the CPE file.
    pub collect: bool,
}

/// How long the final answer to a request that got `100 Trying` may take before it is taken as
/// lost. An agent not (yet) seen working on two requests at once may be the original, whose
/// VERIFY takes 10 s or more and to which a resend costs dearly: 60 s, 120 s for VERIFY. A `tc`
/// agent (it works on requests at once) bounds its own answers, and a resend does it no harm:
/// CAPTURE once tcpdump listens (5 s at most by default), STOP once tcpdump has flushed and
/// exited (1.5 s, then 5 s grace), VERIFY after its probes, taken as twice this session's own;
/// REGISTER once OVOC's REST API has made the rule, three calls per device queued behind the
/// `queued` other REGISTERs that agent has in hand: 15 s and 50 ms for each of them, at most
/// 60 s: a whole fleet registering at once gets its answers well within that (session-fleet
/// benchmark), and a lost answer to one of a few devices is not waited for a minute. Resent
/// sooner, a REGISTER is still not given up sooner: see [`REGISTER_BOUND`].
pub fn trying_wait(verb: Verb, concurrent: bool, probe_time: Duration, queued: usize) -> Duration {
    match (concurrent, verb) {
        (false, Verb::Verify) => Duration::from_secs(120),
        (false, _) => Duration::from_secs(60),
        (true, Verb::Verify) => probe_time * 2 + Duration::from_secs(5),
        (true, Verb::Register) => {
            let queued = u32::try_from(queued).unwrap_or(u32::MAX);
            let queue = Duration::from_millis(50).saturating_mul(queued);
            (Duration::from_secs(15) + queue).min(REGISTER_BOUND)
        }
        (true, _) => Duration::from_secs(15),
    }
}

/// How long a `tc` agent may take to answer a REGISTER it acknowledged: OVOC's REST API makes
/// the rule in three or four calls of at most 10 s each (a slow OVOC under a fleet's load may
/// use most of that). Until this has passed since its first `101`, a REGISTER whose final answer
/// is lost is resent without spending `--register-attempts`, so the shorter wait of
/// [`trying_wait`] never gives a device up sooner than the old one did.
pub const REGISTER_BOUND: Duration = Duration::from_secs(60);

/// The wait after the `sent`-th send of an unanswered request: `resend`, doubling with each
/// resend up to 8x (3, 6, 12, 24 s by default). An agent that is slow because a whole fleet asked
/// at once gets time to catch up instead of a growing backlog of duplicates.
pub fn backoff(resend: Duration, sent: u32) -> Duration {
    resend * (1u32 << sent.saturating_sub(1).min(3))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Register,
    CpeStart,
    Capture,
    Armed,
    Verify,
    CpeStop,
    Fetch,
    Stop,
    /// The round's OVOC files are fetched from the OVOC server (`--collect-ovoc`).
    Collect,
    /// Both sides of the round are compared.
    Analyze,
    Done,
    Aborted,
    /// STOP was never confirmed: the device has not completed; `--resume` retries the STOP.
    Failed,
}

impl Step {
    /// As the journal writes it.
    pub fn name(self) -> &'static str {
        match self {
            Step::Register => "register",
            Step::CpeStart => "cpe_start",
            Step::Capture => "capture",
            Step::Armed => "armed",
            Step::Verify => "verify",
            Step::CpeStop => "cpe_stop",
            Step::Fetch => "fetch",
            Step::Stop => "stop",
            Step::Collect => "collect",
            Step::Analyze => "analyze",
            Step::Done => "done",
            Step::Aborted => "aborted",
            Step::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    CpeStart,
    CpeStop,
    Fetch,
    Probe,
    Collect,
    Analyze,
}

/// What a finished job reports.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOk {
    Done,
    Fetched {
        path: String,
    },
    Probed(ProbeReport),
    /// The round's OVOC files, one `ovoc.fetched` event each.
    Collected(Vec<Event>),
    /// The collection cannot succeed however often it is tried (the host key changed, the login
    /// was refused, the agent has no such files): the round goes on without its analysis.
    Uncollectable(String),
    Analyzed {
        verdict: String,
        text: String,
    },
}

/// A job for a worker: the job, and the round it belongs to (1 for the first), with the CPE file
/// of the round once it is fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    pub device: String,
    pub job: Job,
    pub round: u32,
    pub file: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub device: String,
    pub task: &'static str,
    pub status: &'static str,
    pub code: Option<u16>,
    pub description: String,
    pub file: Option<String>,
    pub round: u32,
    /// The analysis' verdict (the `analyze` task only).
    pub verdict: Option<String>,
}

/// A journal record: enough to resume a device after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub device: String,
    pub step: Step,
    pub rounds: u32,
    pub cpe_capturing: bool,
    pub filename: Option<String>,
}

// Actions live for one turn of the loop.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send { to: SocketAddr, text: String },
    Work(Work),
    Emit(Event),
    Report(Row),
    Journal(Journal),
}

#[derive(Debug, Clone)]
struct Dev {
    agent: SocketAddr,
    step: Step,
    rounds: u32,
    /// Sends of the current request.
    sent: u32,
    /// When the current request is next resent or given up; None while held or none is out.
    next_send: Option<Instant>,
    /// The agent answered `100 Trying` to the current request (at this time): it arrived.
    trying: Option<Instant>,
    /// When the agent first acknowledged the current request, kept across its resends.
    first_trying: Option<Instant>,
    /// The current request got `100 Trying` at some send (a 503 to a repeated STOP then means an
    /// original agent confused by the repeat, not a capture that failed to stop).
    acked: bool,
    /// Unanswered, and held while its (possibly single-threaded) agent works on another request.
    held: bool,
    /// The agent said (`199`) that this round's capture lost packets: Some(None) = unknown count.
    incomplete: Option<Option<u64>>,
    /// The CPE capture was started and not yet stopped: it must be stopped on the way out.
    cpe_capturing: bool,
    job_running: bool,
    filename: Option<String>,
    agent_verify: Option<(u16, String)>,
    local_verify: Option<ProbeReport>,
    retry_at: Option<Instant>,
    winding_down: bool,
    /// Why the capture cycle was left (the files are still collected): the device ends aborted.
    aborted: Option<String>,
}

/// How the devices ended, for the session summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub completed: u32,
    pub aborted: u32,
    /// Captured, but the agent never confirmed STOP.
    pub failed: u32,
    pub rounds: u32,
    /// Datagrams that changed nothing (at most 10 a second per sender shown as
    /// `session.ignored` lines; all counted).
    pub ignored: u32,
    /// Of those, alarms from senders that are not OVOC servers (`--alarm-from`).
    pub refused: u32,
    /// Rounds analysed, by verdict.
    pub verdicts: BTreeMap<String, u32>,
    /// Rounds whose OVOC files could not be collected or whose analysis failed
    /// (`--collect-ovoc`): asked for, not done.
    pub unanalysed: u32,
}

/// A device the session gave up on when its wind-down ran out: what the journal keeps for
/// `--resume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub device: String,
    pub step: Step,
    /// The CPE capture is still running on the device.
    pub capturing: bool,
    /// The CPE file fetched (None: not fetched, or nothing to fetch).
    pub file: Option<String>,
}

pub struct Core {
    cfg: Config,
    devs: BTreeMap<String, Dev>,
    /// Agents seen working on two requests at once: never single-threaded, nothing is held.
    concurrent: BTreeSet<SocketAddr>,
    interrupted: bool,
    /// When the wind-down gives up (set by the first signal).
    wind_down_until: Option<Instant>,
    ignored: u32,
    refused: u32,
    quiet: Quiet,
    verdicts: BTreeMap<String, u32>,
    /// Connection Lost alarms acted on.
    alarms: u32,
    unanalysed: u32,
}

/// Where the devices are now, for the status line a person at a terminal sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    pub devices: u32,
    /// Past REGISTER (and its CPE start).
    pub registered: u32,
    pub capturing: u32,
    /// Alarmed: probing, stopping, fetching.
    pub alarmed: u32,
    /// The CPE file fetched: STOP, collection, analysis.
    pub fetched: u32,
    /// Rounds analysed (a verdict each).
    pub analysed: u32,
    pub done: u32,
    /// Aborted, or STOP never confirmed.
    pub failed: u32,
    pub alarms: u32,
}

impl Census {
    pub fn line(&self) -> String {
        format!(
            "{} devices: {} registered, {} capturing, {} alarmed, {} fetched, {} analysed, {} \
             done, {} failed; {} alarms",
            self.devices,
            self.registered,
            self.capturing,
            self.alarmed,
            self.fetched,
            self.analysed,
            self.done,
            self.failed,
            self.alarms
        )
    }
}

/// `session.ignored` lines shown per sender and second: a flood of junk (hostile, or a
/// misrouted syslog) must not bury the report's stream in lines; the summary counts them all.
pub const IGNORED_PER_SECOND: u32 = 10;
/// Senders tracked in one second; lines from more (a spoofed flood) are counted, not shown.
const QUIET_SENDERS: usize = 1024;

/// How many `session.ignored` lines each sender had in the current one-second window.
#[derive(Default)]
struct Quiet {
    window: Option<Instant>,
    shown: HashMap<IpAddr, u32>,
}

impl Quiet {
    /// May one more ignored line from `from` be shown at `now`?
    fn allow(&mut self, now: Instant, from: IpAddr) -> bool {
        let fresh = self
            .window
            .is_none_or(|w| now.saturating_duration_since(w) >= Duration::from_secs(1));
        if fresh {
            self.window = Some(now);
            self.shown.clear();
        }
        if !self.shown.contains_key(&from) && self.shown.len() >= QUIET_SENDERS {
            return false;
        }
        let n = self.shown.entry(from).or_insert(0);
        *n += 1;
        *n <= IGNORED_PER_SECOND
    }
}

fn trim_to_word(s: &str) -> String {
    s.chars().take(200).collect()
}

impl Core {
    pub fn new(cfg: Config, devices: Vec<(String, SocketAddr)>) -> Core {
        let devs = devices
            .into_iter()
            .map(|(d, agent)| {
                (
                    d,
                    Dev {
                        agent,
                        step: Step::Register,
                        rounds: 0,
                        sent: 0,
                        next_send: None,
                        trying: None,
                        first_trying: None,
                        acked: false,
                        held: false,
                        incomplete: None,
                        cpe_capturing: false,
                        job_running: false,
                        filename: None,
                        agent_verify: None,
                        local_verify: None,
                        retry_at: None,
                        winding_down: false,
                        aborted: None,
                    },
                )
            })
            .collect();
        Core {
            cfg,
            devs,
            concurrent: BTreeSet::new(),
            interrupted: false,
            wind_down_until: None,
            ignored: 0,
            refused: 0,
            quiet: Quiet::default(),
            verdicts: BTreeMap::new(),
            alarms: 0,
            unanalysed: 0,
        }
    }

    /// Resume from journal records (the last one per device wins).
    pub fn resume(&mut self, records: &[Journal]) {
        for r in records {
            let Some(d) = self.devs.get_mut(&r.device) else {
                continue;
            };
            d.rounds = r.rounds;
            d.cpe_capturing = r.cpe_capturing;
            d.filename = r.filename.clone();
            d.step = match r.step {
                // The captures are still running: CAPTURE again is answered 200 by the agent.
                Step::Capture | Step::Armed => Step::Capture,
                // The alarm came: its VERIFY (and the probes) are redone before the stop, as
                // everything not journaled as done is.
                Step::Verify => Step::Verify,
                // Whatever the journal says was not confirmed is redone (all idempotent).
                s => s,
            };
        }
    }

    fn row(
        &self,
        device: &str,
        task: &'static str,
        status: &'static str,
        code: Option<u16>,
        description: String,
        file: Option<String>,
    ) -> Action {
        let round = self.devs.get(device).map_or(0, |d| d.rounds);
        Action::Report(Row {
            device: device.into(),
            task,
            status,
            code,
            description,
            file,
            round,
            verdict: None,
        })
    }

    /// A job for the device's current round.
    fn work(&mut self, out: &mut Vec<Action>, device: &str, job: Job) {
        let d = self.devs.get_mut(device).expect("known");
        d.job_running = true;
        out.push(Action::Work(Work {
            device: device.into(),
            job,
            round: d.rounds + 1,
            file: d.filename.clone(),
        }));
    }

    fn journal(&self, out: &mut Vec<Action>, device: &str) {
        if let Some(d) = self.devs.get(device) {
            out.push(Action::Journal(Journal {
                device: device.into(),
                step: d.step,
                rounds: d.rounds,
                cpe_capturing: d.cpe_capturing,
                filename: d.filename.clone(),
            }));
        }
    }

    fn send(&mut self, out: &mut Vec<Action>, now: Instant, device: &str, verb: Verb) {
        let resend = self.cfg.resend;
        let d = self.devs.get_mut(device).expect("known device");
        let filename = if verb == Verb::Stop {
            d.filename.clone()
        } else {
            None
        };
        let text = Request {
            verb,
            device: device.into(),
            filename,
        }
        .to_wire();
        d.sent += 1;
        d.next_send = Some(now + backoff(resend, d.sent));
        out.push(Action::Send { to: d.agent, text });
    }

    /// The current request is no longer in the agent's hands (answered, given up, or the step
    /// moved on). If it was, requests held behind it at a single-threaded agent get a fresh
    /// resend clock: the agent now reads the next datagram in its queue.
    fn settle(&mut self, now: Instant, device: &str) {
        let d = self.devs.get_mut(device).expect("known device");
        d.held = false;
        let Some(_) = d.trying.take() else {
            return;
        };
        let agent = d.agent;
        if self.concurrent.contains(&agent) {
            return;
        }
        let resend = self.cfg.resend;
        for d in self
            .devs
            .values_mut()
            .filter(|d| d.held && d.agent == agent)
        {
            d.held = false;
            d.next_send = Some(now + backoff(resend, d.sent));
        }
    }

    /// Another device's request to `agent` is being worked on (answered `100 Trying`, no final).
    fn agent_busy(&self, agent: SocketAddr, except: &str) -> bool {
        self.devs
            .iter()
            .any(|(n, d)| n != except && d.agent == agent && d.trying.is_some())
    }

    fn enter(&mut self, out: &mut Vec<Action>, now: Instant, device: &str, step: Step) {
        self.settle(now, device);
        {
            let d = self.devs.get_mut(device).expect("known device");
            d.step = step;
            d.sent = 0;
            d.acked = false;
            d.first_trying = None;
            if step == Step::Stop {
                d.incomplete = None;
            }
            d.next_send = None;
            d.retry_at = None;
        }
        match step {
            Step::Register => self.send(out, now, device, Verb::Register),
            Step::Capture => self.send(out, now, device, Verb::Capture),
            Step::Stop => self.send(out, now, device, Verb::Stop),
            Step::Verify => {
                let d = self.devs.get_mut(device).expect("known");
                d.agent_verify = None;
                d.local_verify = None;
                self.work(out, device, Job::Probe);
                self.send(out, now, device, Verb::Verify);
            }
            Step::CpeStart => self.work(out, device, Job::CpeStart),
            Step::CpeStop => self.work(out, device, Job::CpeStop),
            Step::Fetch => self.work(out, device, Job::Fetch),
            Step::Collect => self.work(out, device, Job::Collect),
            Step::Analyze => self.work(out, device, Job::Analyze),
            Step::Armed | Step::Done | Step::Aborted | Step::Failed => {}
        }
        // A failed STOP stays journaled as STOP, so that --resume sends it again.
        if step != Step::Failed {
            self.journal(out, device);
        }
    }

    /// Start every device (or resume it where the journal left it).
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let names: Vec<(String, Step)> =
            self.devs.iter().map(|(n, d)| (n.clone(), d.step)).collect();
        for (n, step) in names {
            let step = match step {
                Step::Register if !self.cfg.register => Step::CpeStart,
                s => s,
            };
            if !matches!(step, Step::Done | Step::Aborted | Step::Failed) {
                self.enter(&mut out, now, &n, step);
            }
        }
        out
    }

    /// Leave the device's capture cycle: stop what runs, fetch it, name the agent's files.
    fn abort(&mut self, out: &mut Vec<Action>, now: Instant, device: &str, why: String) {
        let task = match self.devs[device].step {
            Step::Register => "register",
            Step::CpeStart => "cpe_start",
            Step::Capture => "capture",
            _ => "abort",
        };
        out.push(self.row(device, task, "failed", None, why.clone(), None));
        let d = self.devs.get_mut(device).expect("known");
        d.winding_down = true;
        d.aborted = Some(why.clone());
        if d.cpe_capturing {
            // Nothing is left running on the device; its file is still worth keeping.
            self.enter(out, now, device, Step::CpeStop);
        } else {
            self.enter(out, now, device, Step::Aborted);
            out.push(self.row(device, "abort", "failed", None, why, None));
        }
    }

    fn finish_round(&mut self, out: &mut Vec<Action>, now: Instant, device: &str) {
        let max = self.cfg.max_events;
        let d = self.devs.get_mut(device).expect("known");
        d.rounds += 1;
        d.filename = None;
        let (rounds, winding) = (d.rounds, d.winding_down || self.interrupted);
        if let Some(why) = d.aborted.clone() {
            // Its files are kept, but the device did not get through its rounds.
            self.enter(out, now, device, Step::Aborted);
            out.push(self.row(
                device,
                "abort",
                "failed",
                None,
                format!("{why}; the capture's files were kept ({rounds} round(s))"),
                None,
            ));
        } else if winding || (max > 0 && rounds >= max) {
            self.enter(out, now, device, Step::Done);
            let why = if winding {
                "wound down"
            } else {
                "all rounds captured"
            };
            out.push(self.row(
                device,
                "done",
                "ok",
                None,
                format!("{why} ({rounds} round(s))"),
                None,
            ));
        } else {
            self.enter(out, now, device, Step::CpeStart);
        }
    }

    pub fn datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Vec<Action> {
        let mut out = Vec::new();
        self.read_datagram(&mut out, now, from, data);
        let before = out.len();
        out.retain(|a| {
            if !matches!(a, Action::Emit(Event::SessionIgnored { .. })) {
                return true;
            }
            self.ignored = self.ignored.saturating_add(1);
            self.quiet.allow(now, from.ip())
        });
        if out.len() < before {
            log::debug!("{from}: session.ignored lines beyond {IGNORED_PER_SECOND} a second counted, not shown");
        }
        out
    }

    fn read_datagram(
        &mut self,
        out: &mut Vec<Action>,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) {
        let text = crate::alarm::syslog::text(data);
        let ignored = |device: Option<String>, reason: String| {
            Action::Emit(Event::SessionIgnored {
                device,
                reason,
                sender: from.to_string(),
            })
        };
        if proto::looks_like_response(&text) {
            match proto::parse_response(&text) {
                Some(r) => self.response(out, now, from, r),
                None => out.push(ignored(
                    None,
                    format!("unreadable response {:?}", trim_to_word(&text)),
                )),
            }
            return;
        }
        let (frame, alarm) = crate::alarm::read(&text);
        let Some(alarm) = alarm else {
            out.push(ignored(
                None,
                "neither an agent response nor an OVOC alarm".into(),
            ));
            return;
        };
        let device = alarm.device.unwrap_or_default().to_string();
        // Anyone can send a datagram in OVOC's wording; only the OVOC servers' are believed.
        if !self.cfg.alarm_from.iter().any(|c| c.contains(from.ip())) {
            self.refused = self.refused.saturating_add(1);
            let why = format!(
                "alarm from {}, which is not an OVOC server of this session (--alarm-from): \
                 not believed",
                from.ip()
            );
            // The device named is the sender's word: kept short.
            let device = Some(trim_to_word(&device)).filter(|d| !d.is_empty());
            out.push(ignored(device, why));
            return;
        }
        out.push(Action::Emit(crate::alarm::alarm_event(
            &frame,
            &alarm,
            &from.to_string(),
            &text,
        )));
        if is_clear(&alarm) && self.devs.contains_key(&device) {
            // OVOC says the device is back: what was done (a stop, a fetch) stays done.
            let why = "Connection Alarm cleared by OVOC: nothing already done is undone".into();
            out.push(self.row(&device, "alarm", "skipped", None, why, None));
            return;
        }
        if alarm.is_connection_lost() {
            self.connection_lost(out, now, from, device);
        }
    }

    fn connection_lost(
        &mut self,
        out: &mut Vec<Action>,
        now: Instant,
        from: SocketAddr,
        device: String,
    ) {
        let step = self.devs.get(&device).map(|d| d.step);
        let ignored = |device: String, reason: String| {
            Action::Emit(Event::SessionIgnored {
                device: Some(device),
                reason,
                sender: from.to_string(),
            })
        };
        match step {
            None => out.push(ignored(
                device,
                "Connection Lost for a device not in the inventory".into(),
            )),
            Some(Step::Armed) if !self.interrupted => {
                self.alarms += 1;
                out.push(self.row(&device, "alarm", "ok", None, "Connection Lost".into(), None));
                let next = if self.cfg.probes {
                    Step::Verify
                } else {
                    Step::CpeStop
                };
                self.enter(out, now, &device, next);
            }
            Some(s) => out.push(ignored(
                device,
                format!("Connection Lost while the device is not capturing (step {s:?})"),
            )),
        }
    }

    /// A response from `from`: its device's agent, about the request the device waits on?
    fn response(
        &mut self,
        out: &mut Vec<Action>,
        now: Instant,
        from: SocketAddr,
        r: proto::Response,
    ) {
        let ignored = |reason: String| {
            Action::Emit(Event::SessionIgnored {
                device: Some(r.device.clone()),
                reason,
                sender: from.to_string(),
            })
        };
        let Some(d) = self.devs.get(&r.device) else {
            out.push(ignored("response for a device not in the inventory".into()));
            return;
        };
        // The agent answers from its listen socket; anything else is not our agent.
        if from.ip() != d.agent.ip() {
            let why = format!(
                "response from {from}, not from the device's agent {}",
                d.agent
            );
            out.push(ignored(why));
            return;
        }
        let agent = d.agent;
        if r.code == proto::TC_AGENT {
            self.mark_concurrent(now, agent);
            // It also says the request arrived: REGISTER has no `100 Trying`, and its answer
            // waits on OVOC's REST API (for a whole fleet registering at once, many seconds).
            let step = step_verb(self.devs[&r.device].step);
            if let Some(v) = step.filter(|v| r.verb == Some(*v)) {
                self.trying_received(now, &r.device, v);
            }
            return;
        }
        self.answered_while_busy(now, agent, &r.device);
        let Some(expected) = step_verb(self.devs[&r.device].step) else {
            return; // a late duplicate: nothing waits for it
        };
        // Agents before 1.0.6 do not name the request; then the step decides.
        if r.verb.is_some_and(|v| v != expected) {
            return;
        }
        match r.code {
            100 => self.trying_received(now, &r.device, expected),
            // Other provisional answers only inform; `199` says the agent's capture lost packets.
            101..=199 => {
                if let Some(dropped) =
                    proto::parse_incomplete(&r).filter(|_| expected == Verb::Stop)
                {
                    self.devs.get_mut(&r.device).expect("known").incomplete = Some(dropped);
                }
            }
            _ => self.final_answer(out, now, &r, expected),
        }
    }

    /// The final answer to the request `r.device` waits on.
    fn final_answer(
        &mut self,
        out: &mut Vec<Action>,
        now: Instant,
        r: &proto::Response,
        expected: Verb,
    ) {
        let device = r.device.as_str();
        let desc = format!("{} {}", r.code, r.reason);
        self.settle(now, device);
        match (expected, r.code) {
            (Verb::Register, 200) => {
                out.push(self.row(device, "register", "ok", Some(200), desc, None));
                self.enter(out, now, device, Step::CpeStart);
            }
            (Verb::Capture, 200) => {
                out.push(self.row(device, "capture", "ok", Some(200), desc, None));
                self.enter(out, now, device, Step::Armed);
                if self.interrupted || self.devs[device].winding_down {
                    self.enter(out, now, device, Step::CpeStop);
                }
            }
            (Verb::Verify, code) => {
                let d = self.devs.get_mut(device).expect("known");
                if d.agent_verify.is_none() {
                    d.agent_verify = Some((code, desc));
                    d.next_send = None;
                }
                self.verify_progress(out, now, device);
            }
            (Verb::Stop, 200) => {
                let d = &self.devs[device];
                let (status, desc) = stop_outcome(desc, d.incomplete);
                out.push(self.row(device, "stop", status, Some(200), desc, d.filename.clone()));
                if self.cfg.collect {
                    self.enter(out, now, device, Step::Collect);
                } else {
                    self.finish_round(out, now, device);
                }
            }
            (Verb::Stop, 503) if self.devs[device].acked => {
                let why = format!(
                    "{desc} to a repeated STOP (an answer was lost; the original agent refuses a \
                     second STOP): not sent again, --resume retries it"
                );
                self.stop_failed(out, now, device, why);
            }
            (verb, code) => {
                // 503 and friends: try again after the resend delay, within the budget.
                let resend = self.cfg.resend;
                let d = self.devs.get_mut(device).expect("known");
                d.next_send = Some(now + backoff(resend, d.sent));
                out.push(self.row(device, verb_task(verb), "retry", Some(code), desc, None));
            }
        }
    }

    /// `100 Trying`: the request arrived; its final answer may take up to [`trying_wait`].
    fn trying_received(&mut self, now: Instant, device: &str, verb: Verb) {
        let d = &self.devs[device];
        if d.trying.is_some() || (verb == Verb::Verify && d.agent_verify.is_some()) {
            return; // the Trying of a duplicate: the first one set the wait
        }
        let wait = self.trying_wait(verb, d.agent);
        let d = self.devs.get_mut(device).expect("known");
        d.trying = Some(now);
        d.first_trying.get_or_insert(now);
        d.acked = true;
        d.held = false;
        d.next_send = Some(now + wait);
    }

    fn trying_wait(&self, verb: Verb, agent: SocketAddr) -> Duration {
        let queued = match verb {
            Verb::Register => self.in_hand(agent, verb),
            _ => 0,
        };
        trying_wait(
            verb,
            self.concurrent.contains(&agent),
            self.cfg.probe_time,
            queued,
        )
    }

    /// How many of `agent`'s devices have a `verb` it has acknowledged and not yet answered.
    fn in_hand(&self, agent: SocketAddr, verb: Verb) -> usize {
        self.devs
            .values()
            .filter(|d| d.agent == agent && d.trying.is_some() && step_verb(d.step) == Some(verb))
            .count()
    }

    /// The agent answered about `device` while another device's request was in its hands. A
    /// single-threaded agent sends one request's final answer before it reads the next, so this
    /// one works on requests at once (a `tc` agent, unless an answer was lost).
    fn answered_while_busy(&mut self, now: Instant, agent: SocketAddr, device: &str) {
        if !self.concurrent.contains(&agent) && self.agent_busy(agent, device) {
            self.mark_concurrent(now, agent);
        }
    }

    /// A `tc` agent: nothing is held for it, and its answers come within its own bounds.
    fn mark_concurrent(&mut self, now: Instant, agent: SocketAddr) {
        if !self.concurrent.insert(agent) {
            return;
        }
        let probe_time = self.cfg.probe_time;
        let registering = self.in_hand(agent, Verb::Register);
        for d in self.devs.values_mut().filter(|d| d.agent == agent) {
            if d.held {
                d.held = false;
                d.next_send = Some(now);
            }
            // Requests it has: their final answers now come within a tc agent's bounds (a
            // REGISTER's behind the others in hand, as in `trying_received`).
            if let (Some(at), Some(verb)) = (d.trying, step_verb(d.step)) {
                let others = registering.saturating_sub(usize::from(verb == Verb::Register));
                d.next_send = Some(at + trying_wait(verb, true, probe_time, others));
            }
        }
    }

    /// STOP never got its 200: the CPE file is safe, the agent keeps its files under their tmp_
    /// names, and the device has not completed.
    fn stop_failed(&mut self, out: &mut Vec<Action>, now: Instant, device: &str, why: String) {
        let file = self.devs[device].filename.clone();
        out.push(self.row(device, "stop", "failed", None, why, file));
        self.enter(out, now, device, Step::Failed);
        out.push(self.row(
            device,
            "done",
            "failed",
            None,
            "the agent never confirmed STOP: its files are not renamed; --resume sends it again"
                .into(),
            None,
        ));
    }

    fn verify_progress(&mut self, out: &mut Vec<Action>, now: Instant, device: &str) {
        let d = &self.devs[device];
        let (Some((code, desc)), Some(local)) = (d.agent_verify.clone(), d.local_verify.clone())
        else {
            return;
        };
        let counts = |r: &ProbeReport| {
            let f = |name: &str, c: &Option<crate::event::ProbeCounts>| {
                c.as_ref()
                    .map(|c| format!("{name} {}/{}", c.answered, c.sent))
            };
            [f("icmp", &r.icmp), f("snmp", &r.snmp), f("tcp", &r.tcp)]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ")
        };
        let description = format!("agent: {desc}; here: {}", counts(&local));
        let status = if code == 200 && local.ok() {
            "ok"
        } else {
            "failed"
        };
        out.push(self.row(device, "verify", status, Some(code), description, None));
        self.enter(out, now, device, Step::CpeStop);
    }

    pub fn job_done(
        &mut self,
        now: Instant,
        device: &str,
        job: Job,
        result: Result<JobOk, String>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(d) = self.devs.get_mut(device) else {
            return out;
        };
        d.job_running = false;
        let (next, text, file) = match (job, result) {
            (Job::CpeStart, Ok(_)) => {
                d.cpe_capturing = true;
                (Step::Capture, "capture active on the device".into(), None)
            }
            (Job::CpeStart, Err(e)) => {
                self.abort(&mut out, now, device, e);
                return out;
            }
            (Job::CpeStop, Ok(_)) => {
                d.cpe_capturing = false;
                (Step::Fetch, "capture stopped on the device".into(), None)
            }
            (Job::Fetch, Ok(JobOk::Fetched { path })) => {
                let name = std::path::Path::new(&path)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
                    .to_string();
                d.filename = Some(name);
                (Step::Stop, "CPE capture retrieved".into(), Some(path))
            }
            // The device may be unreachable (that is what the alarm said): keep trying.
            (Job::CpeStop | Job::Fetch, r) => {
                let e = r.err().unwrap_or_else(|| "unexpected job result".into());
                let interval = self.cfg.fetch_retry_interval;
                d.retry_at = Some(now + interval);
                let why = format!("{e}; retrying in {interval:?}");
                out.push(self.row(device, job_task(job), "retry", None, why, None));
                return out;
            }
            (Job::Probe, r) => {
                d.local_verify = Some(match r {
                    Ok(JobOk::Probed(p)) => p,
                    _ => ProbeReport::default(),
                });
                self.verify_progress(&mut out, now, device);
                return out;
            }
            (Job::Collect | Job::Analyze, r) => {
                self.analysis_done(&mut out, now, device, job, r);
                return out;
            }
        };
        out.push(self.row(device, job_task(job), "ok", None, text, file));
        self.enter(&mut out, now, device, next);
        out
    }

    /// A collection or an analysis ended: the next step, or a retry while the OVOC server may
    /// come back (never abandoned, as the CPE fetch is not).
    fn analysis_done(
        &mut self,
        out: &mut Vec<Action>,
        now: Instant,
        device: &str,
        job: Job,
        result: Result<JobOk, String>,
    ) {
        let task = job_task(job);
        match (job, result) {
            (Job::Collect, Ok(JobOk::Collected(events))) => {
                let n = events.len();
                out.extend(events.into_iter().map(Action::Emit));
                let text = format!("{n} OVOC file(s) collected");
                out.push(self.row(device, task, "ok", None, text, None));
                self.enter(out, now, device, Step::Analyze);
            }
            (Job::Collect, Ok(JobOk::Uncollectable(why))) => {
                self.unanalysed += 1;
                let why = format!("{why}; the round is not analysed");
                out.push(self.row(device, task, "failed", None, why, None));
                self.finish_round(out, now, device);
            }
            (Job::Analyze, Ok(JobOk::Analyzed { verdict, text })) => {
                *self.verdicts.entry(verdict.clone()).or_insert(0) += 1;
                if let Action::Report(mut row) = self.row(device, task, "ok", None, text, None) {
                    row.verdict = Some(verdict);
                    out.push(Action::Report(row));
                }
                self.finish_round(out, now, device);
            }
            (Job::Analyze, r) => {
                self.unanalysed += 1;
                let why = r.err().unwrap_or_else(|| "unexpected job result".into());
                out.push(self.row(device, task, "failed", None, why, None));
                self.finish_round(out, now, device);
            }
            (_, r) => {
                let e = r.err().unwrap_or_else(|| "unexpected job result".into());
                let interval = self.cfg.fetch_retry_interval;
                self.devs.get_mut(device).expect("known").retry_at = Some(now + interval);
                let why = format!("{e}; retrying in {interval:?}");
                out.push(self.row(device, task, "retry", None, why, None));
            }
        }
    }

    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let names: Vec<String> = self.devs.keys().cloned().collect();
        for n in names {
            let d = &self.devs[&n];
            if d.retry_at.is_some_and(|t| t <= now) {
                let step = d.step;
                self.enter(&mut out, now, &n, step);
            } else if d.next_send.is_some_and(|t| t <= now) {
                self.request_due(&mut out, now, &n);
            }
        }
        out
    }

    /// The current request's wait is over: resend it, hold it, or give up.
    fn request_due(&mut self, out: &mut Vec<Action>, now: Instant, n: &str) {
        let d = &self.devs[n];
        let Some(verb) = step_verb(d.step) else {
            self.devs.get_mut(n).expect("known").next_send = None;
            return;
        };
        let (agent, sent, lost_final) = (d.agent, d.sent, d.trying.is_some());
        let first_trying = d.first_trying;
        // A tc agent still working on a REGISTER it acknowledged: resent, budget unspent.
        let unspent = verb == Verb::Register
            && self.concurrent.contains(&agent)
            && first_trying.is_some_and(|t| now < t + REGISTER_BOUND);
        if lost_final {
            self.settle(now, n);
        } else if !self.concurrent.contains(&agent) && self.agent_busy(agent, n) {
            let d = self.devs.get_mut(n).expect("known");
            d.held = true;
            d.next_send = None;
            return;
        }
        let budget = if verb == Verb::Register {
            self.cfg.register_attempts
        } else {
            self.cfg.retries + 1
        };
        if sent < budget || unspent {
            self.send(out, now, n, verb);
            return;
        }
        let why = if lost_final {
            let waited = first_trying.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            format!(
                "100 Trying to {verb}, then no final answer within {} s ({sent} send(s))",
                waited.as_secs()
            )
        } else {
            format!("no answer to {verb} after {sent} sends")
        };
        match verb {
            Verb::Verify => {
                let d = self.devs.get_mut(n).expect("known");
                d.next_send = None;
                d.agent_verify = Some((0, why));
                self.verify_progress(out, now, n);
            }
            Verb::Stop => self.stop_failed(out, now, n, why),
            _ => self.abort(out, now, n, why),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.devs
            .values()
            .flat_map(|d| [d.next_send, d.retry_at])
            .chain([self.wind_down_until])
            .flatten()
            .min()
    }

    /// The wind-down has run out: the session ends with what is left journaled.
    pub fn wind_down_over(&self, now: Instant) -> bool {
        self.wind_down_until.is_some_and(|t| now >= t) && !self.finished()
    }

    /// The devices not done, aborted or failed: what a wind-down that ran out leaves.
    pub fn unfinished(&self) -> Vec<Unfinished> {
        self.devs
            .iter()
            .filter(|(_, d)| {
                !matches!(d.step, Step::Done | Step::Aborted | Step::Failed) || d.job_running
            })
            .map(|(n, d)| Unfinished {
                device: n.clone(),
                step: d.step,
                capturing: d.cpe_capturing,
                file: d.filename.clone(),
            })
            .collect()
    }

    /// SIGINT/SIGTERM: wind every device down (stop captures, fetch, STOP), start nothing new.
    pub fn interrupt(&mut self, now: Instant) -> Vec<Action> {
        self.interrupted = true;
        self.wind_down_until = Some(now + self.cfg.wind_down);
        let mut out = Vec::new();
        let names: Vec<String> = self.devs.keys().cloned().collect();
        for n in names {
            let d = self.devs.get_mut(&n).expect("known");
            d.winding_down = true;
            match d.step {
                Step::Register => {
                    self.enter(&mut out, now, &n, Step::Aborted);
                    out.push(self.row(
                        &n,
                        "abort",
                        "skipped",
                        None,
                        "interrupted before capturing".into(),
                        None,
                    ));
                }
                // The CPE capture runs (or a job is finishing); stop it and collect the file.
                Step::Capture | Step::Armed => self.enter(&mut out, now, &n, Step::CpeStop),
                // Jobs in flight finish first; their outcome moves on to the wind-down path.
                _ => {}
            }
        }
        out
    }

    pub fn finished(&self) -> bool {
        self.devs
            .values()
            .all(|d| matches!(d.step, Step::Done | Step::Aborted | Step::Failed) && !d.job_running)
    }

    pub fn tally(&self) -> Tally {
        let count = |s: Step| self.devs.values().filter(|d| d.step == s).count() as u32;
        Tally {
            completed: count(Step::Done),
            aborted: count(Step::Aborted),
            failed: count(Step::Failed),
            rounds: self.devs.values().map(|d| d.rounds).sum(),
            ignored: self.ignored,
            refused: self.refused,
            verdicts: self.verdicts.clone(),
            unanalysed: self.unanalysed,
        }
    }

    pub fn census(&self) -> Census {
        let mut c = Census {
            devices: self.devs.len() as u32,
            analysed: self.verdicts.values().sum(),
            alarms: self.alarms,
            ..Census::default()
        };
        for d in self.devs.values() {
            let n = match d.step {
                Step::Register => continue,
                Step::CpeStart => &mut c.registered,
                Step::Capture | Step::Armed => &mut c.capturing,
                Step::Verify | Step::CpeStop | Step::Fetch => &mut c.alarmed,
                Step::Stop | Step::Collect | Step::Analyze => &mut c.fetched,
                Step::Done => &mut c.done,
                Step::Aborted | Step::Failed => &mut c.failed,
            };
            *n += 1;
        }
        // Registered counts everyone past REGISTER, wherever they are now.
        c.registered += c.capturing + c.alarmed + c.fetched + c.done;
        c
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted
    }
}

/// OVOC's clear of the connection alarm (severity `Clear`).
fn is_clear(a: &crate::alarm::ovoc::Alarm) -> bool {
    a.name.trim().eq_ignore_ascii_case("Connection Alarm")
        && a.severity
            .is_some_and(|s| s.trim().eq_ignore_ascii_case("clear"))
}

/// The stop task's status and description: `incomplete` when the agent said (`199`) that its
/// capture lost packets.
fn stop_outcome(desc: String, incomplete: Option<Option<u64>>) -> (&'static str, String) {
    match incomplete {
        None => ("ok", desc),
        Some(dropped) => (
            "incomplete",
            format!(
                "{desc}; the agent's capture is incomplete: {} (tcpdump)",
                match dropped {
                    Some(n) => format!("{n} packets dropped by the kernel"),
                    None => "its kernel drops are unknown".into(),
                }
            ),
        ),
    }
}

/// The task a job's row reports.
fn job_task(job: Job) -> &'static str {
    match job {
        Job::CpeStart => "cpe_start",
        Job::CpeStop => "cpe_stop",
        Job::Fetch => "fetch",
        Job::Probe => "verify",
        Job::Collect => "collect",
        Job::Analyze => "analyze",
    }
}

/// The request a step waits on.
fn step_verb(step: Step) -> Option<Verb> {
    match step {
        Step::Register => Some(Verb::Register),
        Step::Capture => Some(Verb::Capture),
        Step::Verify => Some(Verb::Verify),
        Step::Stop => Some(Verb::Stop),
        _ => None,
    }
}

fn verb_task(v: Verb) -> &'static str {
    match v {
        Verb::Register => "register",
        Verb::Capture => "capture",
        Verb::Verify => "verify",
        Verb::Stop => "stop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = "127.0.0.9:20001";
    const LOST: &[u8] = b"<130>Jun 22 16:16:05 ovoc : New Alarm - Connection Alarm, Major, Description:Connection Lost, IP Address:10.0.0.1";

    fn cfg() -> Config {
        Config {
            max_events: 1,
            register_attempts: 2,
            retries: 3,
            fetch_retry_interval: Duration::from_secs(30),
            resend: Duration::from_secs(3),
            probes: true,
            register: true,
            probe_time: Duration::from_secs(11),
            // The agent's host, and the OVOC server of `round`'s alarms.
            alarm_from: vec![
                Cidr::parse("127.0.0.9").unwrap(),
                Cidr::parse("127.0.0.50").unwrap(),
            ],
            wind_down: Duration::from_secs(300),
            collect: false,
        }
    }

    /// (completed, aborted, failed, rounds)
    fn tally(completed: u32, aborted: u32, failed: u32, rounds: u32) -> (u32, u32, u32, u32) {
        (completed, aborted, failed, rounds)
    }

    fn outcome(c: &Core) -> (u32, u32, u32, u32) {
        let t = c.tally();
        (t.completed, t.aborted, t.failed, t.rounds)
    }

    fn core(c: Config) -> Core {
        Core::new(c, vec![("10.0.0.1".into(), AGENT.parse().unwrap())])
    }

    fn agent() -> SocketAddr {
        AGENT.parse().unwrap()
    }

    fn sends(a: &[Action]) -> Vec<String> {
        a.iter()
            .filter_map(|x| {
                if let Action::Send { text, .. } = x {
                    Some(text.clone())
                } else {
                    None
                }
            })
            .collect()
    }

    fn jobs(a: &[Action]) -> Vec<Job> {
        a.iter()
            .filter_map(|x| {
                if let Action::Work(w) = x {
                    Some(w.job)
                } else {
                    None
                }
            })
            .collect()
    }

    fn tasks(a: &[Action]) -> Vec<(String, String)> {
        a.iter()
            .filter_map(|x| {
                if let Action::Report(r) = x {
                    Some((r.task.to_string(), r.status.to_string()))
                } else {
                    None
                }
            })
            .collect()
    }

    fn reply(c: &mut Core, t: Instant, text: &str) -> Vec<Action> {
        c.datagram(t, agent(), text.as_bytes())
    }

    fn probes_ok() -> JobOk {
        let ok = crate::event::ProbeCounts {
            sent: 3,
            answered: 3,
            error: None,
        };
        JobOk::Probed(ProbeReport {
            icmp: Some(ok.clone()),
            snmp: Some(ok.clone()),
            tcp: Some(ok),
        })
    }

    /// Drive one device through a whole round; returns the actions of the last step.
    fn round(c: &mut Core, t: Instant, form: &str) -> Vec<Action> {
        let a = reply(c, t, &format!("200 OK 10.0.0.1{form}"));
        assert_eq!(jobs(&a), [Job::CpeStart]);
        let a = c.job_done(t, "10.0.0.1", Job::CpeStart, Ok(JobOk::Done));
        assert_eq!(sends(&a), ["CAPTURE 10.0.0.1"]);
        reply(c, t, "100 Trying 10.0.0.1 CAPTURE");
        reply(
            c,
            t,
            &format!(
                "200 OK 10.0.0.1{}",
                if form.is_empty() { "" } else { " CAPTURE" }
            ),
        );
        let a = c.datagram(t, "127.0.0.50:514".parse().unwrap(), LOST);
        assert_eq!(sends(&a), ["VERIFY 10.0.0.1"]);
        assert_eq!(jobs(&a), [Job::Probe]);
        reply(
            c,
            t,
            &format!(
                "200 OK 10.0.0.1{}",
                if form.is_empty() { "" } else { " VERIFY" }
            ),
        );
        let a = c.job_done(t, "10.0.0.1", Job::Probe, Ok(probes_ok()));
        assert_eq!(tasks(&a)[0], ("verify".into(), "ok".into()));
        assert_eq!(jobs(&a), [Job::CpeStop]);
        let a = c.job_done(t, "10.0.0.1", Job::CpeStop, Ok(JobOk::Done));
        assert_eq!(jobs(&a), [Job::Fetch]);
        let a = c.job_done(
            t,
            "10.0.0.1",
            Job::Fetch,
            Ok(JobOk::Fetched {
                path: "/o/CPE_device_10.0.0.1_X.pcap".into(),
            }),
        );
        assert_eq!(sends(&a), ["STOP 10.0.0.1 CPE_device_10.0.0.1_X.pcap"]);
        reply(
            c,
            t,
            &format!(
                "200 OK 10.0.0.1{}",
                if form.is_empty() { "" } else { " STOP" }
            ),
        )
    }

    #[test]
    fn one_round_in_every_response_form() {
        for form in [" REGISTER", ""] {
            let t = Instant::now();
            let mut c = core(cfg());
            assert_eq!(sends(&c.start(t)), ["REGISTER 10.0.0.1"]);
            let a = round(&mut c, t, form);
            assert!(tasks(&a).contains(&("done".into(), "ok".into())));
            assert!(c.finished());
            assert_eq!(outcome(&c), tally(1, 0, 0, 1));
        }
        // 1.0.1 agents: `OK <device>`.
        let t = Instant::now();
        let mut c = core(cfg());
        c.start(t);
        let a = reply(&mut c, t, "OK 10.0.0.1");
        assert_eq!(jobs(&a), [Job::CpeStart]);
    }

    #[test]
    fn host_name_devices_work() {
        let t = Instant::now();
        let mut c = Core::new(cfg(), vec![("msbr-1.example.com".into(), agent())]);
        assert_eq!(sends(&c.start(t)), ["REGISTER msbr-1.example.com"]);
        let a = reply(&mut c, t, "200 OK msbr-1.example.com REGISTER");
        assert_eq!(jobs(&a), [Job::CpeStart]);
        c.job_done(t, "msbr-1.example.com", Job::CpeStart, Ok(JobOk::Done));
        let a = reply(&mut c, t, "200 OK msbr-1.example.com");
        assert!(
            tasks(&a).contains(&("capture".into(), "ok".into())),
            "1.0.2-1.0.5 form with a host name"
        );
    }

    #[test]
    fn two_rounds_then_done() {
        let t = Instant::now();
        let mut c = core(Config {
            max_events: 2,
            ..cfg()
        });
        c.start(t);
        let a = round(&mut c, t, " REGISTER");
        assert_eq!(jobs(&a), [Job::CpeStart], "second round starts");
        let a = c.job_done(t, "10.0.0.1", Job::CpeStart, Ok(JobOk::Done));
        assert_eq!(sends(&a), ["CAPTURE 10.0.0.1"]);
        reply(&mut c, t, "200 OK 10.0.0.1 CAPTURE");
        c.datagram(t, agent(), LOST);
        reply(&mut c, t, "430 Flow Failed 10.0.0.1 VERIFY");
        let a = c.job_done(t, "10.0.0.1", Job::Probe, Ok(probes_ok()));
        assert_eq!(
            tasks(&a)[0],
            ("verify".into(), "failed".into()),
            "430 is recorded, the round goes on"
        );
        c.job_done(t, "10.0.0.1", Job::CpeStop, Ok(JobOk::Done));
        c.job_done(
            t,
            "10.0.0.1",
            Job::Fetch,
            Ok(JobOk::Fetched {
                path: "/o/CPE_b.pcap".into(),
            }),
        );
        let a = reply(&mut c, t, "200 OK 10.0.0.1 STOP");
        assert!(tasks(&a).contains(&("done".into(), "ok".into())));
        assert_eq!(outcome(&c), tally(1, 0, 0, 2));
    }

    #[test]
    fn lost_datagrams_are_resent_and_register_gives_up() {
        let t = Instant::now();
        let mut c = core(cfg());
        c.start(t);
        assert_eq!(c.next_deadline(), Some(t + Duration::from_secs(3)));
        assert_eq!(
            sends(&c.tick(t + Duration::from_secs(3))),
            ["REGISTER 10.0.0.1"]
        );
        // The second send waits twice as long (backoff) before the device is given up.
        let a = c.tick(t + Duration::from_secs(6));
        assert!(sends(&a).is_empty());
        assert!(tasks(&a).is_empty());
        let a = c.tick(t + Duration::from_secs(9));
        assert!(sends(&a).is_empty());
        assert!(tasks(&a).contains(&("register".into(), "failed".into())));
        assert!(c.finished());
        assert_eq!(outcome(&c), tally(0, 1, 0, 0));
    }

    /// Up to CAPTURE; returns the time CAPTURE was sent.
    fn to_capture(c: &mut Core, t: Instant) {
        c.start(t);
        reply(c, t, "200 OK 10.0.0.1 REGISTER");
        let a = c.job_done(t, "10.0.0.1", Job::CpeStart, Ok(JobOk::Done));
        assert_eq!(sends(&a), ["CAPTURE 10.0.0.1"]);
    }

    #[test]
    fn unanswered_capture_backs_off_then_trying_stops_the_resends() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut c = core(cfg());
        to_capture(&mut c, t);
        // (time, what the agent says first or None, CAPTURE sent at that tick?)
        let table: &[(u64, Option<&str>, bool)] = &[
            (2, None, false),
            (3, None, true), // 1st resend after 3 s
            (8, None, false),
            (9, None, true), // then 6 s
            (10, Some("100 Trying 10.0.0.1 CAPTURE"), false),
            // Arrived: nothing more for 60 s, although the budget would allow two more sends.
            (21, None, false),
            (40, None, false),
            (69, None, false),
        ];
        for (at, said, resent) in table {
            if let Some(text) = said {
                assert!(sends(&reply(&mut c, t + s(*at), text)).is_empty());
            }
            let a = c.tick(t + s(*at));
            assert_eq!(!sends(&a).is_empty(), *resent, "at {at} s: {a:?}");
        }
        let a = reply(&mut c, t + s(69), "200 OK 10.0.0.1 CAPTURE");
        assert!(tasks(&a).contains(&("capture".into(), "ok".into())));
        assert_eq!(c.next_deadline(), None, "armed: nothing to resend");
    }

    #[test]
    fn trying_without_a_final_answer_is_lost_after_the_wait() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut c = core(cfg());
        to_capture(&mut c, t);
        reply(&mut c, t, "100 Trying 10.0.0.1 CAPTURE");
        assert_eq!(c.next_deadline(), Some(t + Duration::from_secs(60)));
        // A duplicate Trying does not move the wait.
        reply(&mut c, t + s(30), "100 Trying 10.0.0.1 CAPTURE");
        assert!(sends(&c.tick(t + s(59))).is_empty());
        assert_eq!(sends(&c.tick(t + s(60))), ["CAPTURE 10.0.0.1"]);
        // Budget of 4 sends: 2 more after 6 and 12 s, then the device is given up.
        assert_eq!(sends(&c.tick(t + s(66))), ["CAPTURE 10.0.0.1"]);
        assert_eq!(sends(&c.tick(t + s(78))), ["CAPTURE 10.0.0.1"]);
        let a = c.tick(t + s(102));
        assert!(sends(&a).is_empty());
        assert_eq!(
            jobs(&a),
            [Job::CpeStop],
            "the CPE capture is stopped, its file kept"
        );
        assert!(tasks(&a).contains(&("capture".into(), "failed".into())));
    }

    /// Up to STOP.
    fn to_stop(c: &mut Core, t: Instant) {
        to_capture(c, t);
        reply(c, t, "200 OK 10.0.0.1 CAPTURE");
        c.datagram(t, agent(), LOST);
        reply(c, t, "200 OK 10.0.0.1 VERIFY");
        c.job_done(t, "10.0.0.1", Job::Probe, Ok(probes_ok()));
        c.job_done(t, "10.0.0.1", Job::CpeStop, Ok(JobOk::Done));
        let a = c.job_done(
            t,
            "10.0.0.1",
            Job::Fetch,
            Ok(JobOk::Fetched {
                path: "/o/CPE_s.pcap".into(),
            }),
        );
        assert_eq!(sends(&a), ["STOP 10.0.0.1 CPE_s.pcap"]);
    }

    fn journals(a: &[Action]) -> Vec<Step> {
        a.iter()
            .filter_map(|x| match x {
                Action::Journal(j) => Some(j.step),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_stop_never_answered_leaves_the_device_failed_not_completed() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut c = core(cfg());
        to_stop(&mut c, t);
        for at in [3, 9, 21] {
            assert_eq!(sends(&c.tick(t + s(at))), ["STOP 10.0.0.1 CPE_s.pcap"]);
        }
        let a = c.tick(t + s(45));
        assert_eq!(
            tasks(&a),
            [
                ("stop".into(), "failed".into()),
                ("done".into(), "failed".into())
            ]
        );
        assert!(journals(&a).is_empty(), "the journal still says STOP");
        assert!(c.finished());
        assert_eq!(outcome(&c), tally(0, 0, 1, 0));
        // --resume: the journal's STOP is sent again, and completes the device.
        let mut c = core(cfg());
        c.resume(&[Journal {
            device: "10.0.0.1".into(),
            step: Step::Stop,
            rounds: 0,
            cpe_capturing: false,
            filename: Some("CPE_s.pcap".into()),
        }]);
        assert_eq!(sends(&c.start(t)), ["STOP 10.0.0.1 CPE_s.pcap"]);
        reply(&mut c, t, "200 OK 10.0.0.1 STOP");
        assert_eq!(outcome(&c), tally(1, 0, 0, 1));
    }

    #[test]
    fn a_503_to_a_repeated_stop_is_not_answered_with_a_third() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut c = core(cfg());
        to_stop(&mut c, t);
        reply(&mut c, t, "100 Trying 10.0.0.1 STOP");
        // The final 200 was lost: after the wait STOP goes once more; the original answers 503.
        assert_eq!(
            sends(&c.tick(t + Duration::from_secs(60))),
            ["STOP 10.0.0.1 CPE_s.pcap"]
        );
        let a = reply(&mut c, t + s(61), "503 Service Unavailable 10.0.0.1 STOP");
        assert!(tasks(&a).contains(&("stop".into(), "failed".into())));
        assert!(sends(&c.tick(t + s(600))).is_empty());
        assert_eq!(outcome(&c), tally(0, 0, 1, 0));
        // Without a Trying first, a 503 is a refusal worth another try.
        let mut c = core(cfg());
        to_stop(&mut c, t);
        let a = reply(&mut c, t, "503 Service Unavailable 10.0.0.1 STOP");
        assert_eq!(tasks(&a), [("stop".into(), "retry".into())]);
        assert_eq!(sends(&c.tick(t + s(3))), ["STOP 10.0.0.1 CPE_s.pcap"]);
    }

    #[test]
    fn an_incomplete_agent_capture_is_flagged_on_the_stop_row() {
        let t = Instant::now();
        for (said, status, text) in [
            (
                Some("199 Dropped 12 Packets 10.0.0.1 STOP"),
                "incomplete",
                "12 packets dropped by the kernel",
            ),
            (
                Some("199 Drops Unknown 10.0.0.1 STOP"),
                "incomplete",
                "unknown",
            ),
            // Other provisional answers only inform; a 199 for another request means nothing.
            (Some("183 Session Progress 10.0.0.1 STOP"), "ok", "200 OK"),
            (None, "ok", "200 OK"),
        ] {
            let mut c = core(cfg());
            to_stop(&mut c, t);
            reply(&mut c, t, "100 Trying 10.0.0.1 STOP");
            if let Some(said) = said {
                let a = reply(&mut c, t, said);
                assert!(a.is_empty(), "{said}: {a:?}");
            }
            let a = reply(&mut c, t, "200 OK 10.0.0.1 STOP");
            let row = a
                .iter()
                .find_map(|x| match x {
                    Action::Report(r) if r.task == "stop" => Some(r.clone()),
                    _ => None,
                })
                .expect("a stop row");
            assert_eq!(row.status, status, "{said:?}");
            assert!(
                row.description.contains(text),
                "{said:?}: {}",
                row.description
            );
            assert_eq!(
                outcome(&c),
                tally(1, 0, 0, 1),
                "incomplete is still completed"
            );
        }
    }

    #[test]
    fn a_tc_agent_says_so_and_its_answers_are_awaited_less() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut c = core(cfg());
        to_capture(&mut c, t);
        reply(&mut c, t, "100 Trying 10.0.0.1 CAPTURE");
        assert_eq!(
            c.next_deadline(),
            Some(t + s(60)),
            "maybe the original agent"
        );
        let a = reply(&mut c, t + s(1), "101 tc Agent 10.0.0.1 CAPTURE");
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(
            c.next_deadline(),
            Some(t + s(15)),
            "a tc agent bounds its answers"
        );
        assert_eq!(sends(&c.tick(t + s(15))), ["CAPTURE 10.0.0.1"]);
    }

    /// A tc agent's `101` to REGISTER says it arrived: no resend while OVOC's REST API makes
    /// the rule (a fleet registering at once waited 9 s, and the second send's wait ran out),
    /// but a lost answer to one of a few devices is not awaited a minute.
    #[test]
    fn a_register_a_tc_agent_has_is_awaited_not_resent() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut c = core(cfg());
        assert_eq!(sends(&c.start(t)), ["REGISTER 10.0.0.1"]);
        reply(&mut c, t, "101 tc Agent 10.0.0.1 REGISTER");
        assert_eq!(c.next_deadline(), Some(t + s(15)));
        for after in [3, 9, 14] {
            assert!(sends(&c.tick(t + s(after))).is_empty(), "{after} s");
        }
        let a = reply(&mut c, t + s(10), "200 OK 10.0.0.1 REGISTER");
        assert_eq!(tasks(&a)[0], ("register".into(), "ok".into()));
        // No final answer at all: sent again after the wait, then given up as before.
        let mut c = core(cfg());
        c.start(t);
        reply(&mut c, t, "101 tc Agent 10.0.0.1 REGISTER");
        assert_eq!(sends(&c.tick(t + s(15))), ["REGISTER 10.0.0.1"]);
        // The budget (2 sends) is spent, but the agent acknowledged it 15 s ago, and OVOC's
        // REST API may take 60 s: sent again until then, given up at the first due time after.
        for (after, send) in [(15, true), (30, true), (45, false)] {
            reply(&mut c, t + s(after), "101 tc Agent 10.0.0.1 REGISTER");
            assert_eq!(c.next_deadline(), Some(t + s(after + 15)), "{after} s");
            let a = c.tick(t + s(after + 15));
            assert_eq!(sends(&a).len(), usize::from(send), "{after} s: {a:?}");
            if !send {
                let failed = a.iter().any(|a| {
                    matches!(a, Action::Report(r) if r.task == "register" && r.status == "failed"
                        && r.description.contains("no final answer within 60 s (4 send(s))"))
                });
                assert!(failed, "{a:?}");
            }
        }
        // A resend that gets no answer of any kind is resent on its backoff until the bound,
        // then given up at its next due time.
        let mut c = core(cfg());
        c.start(t);
        reply(&mut c, t, "101 tc Agent 10.0.0.1 REGISTER");
        assert_eq!(sends(&c.tick(t + s(15))), ["REGISTER 10.0.0.1"]);
        assert_eq!(sends(&c.tick(t + s(21))), ["REGISTER 10.0.0.1"]);
        let a = c.tick(t + s(200));
        assert!(
            tasks(&a).contains(&("register".into(), "failed".into())),
            "{a:?}"
        );
    }

    /// The wait grows with the REGISTERs the agent already has in hand (each waits on OVOC's
    /// REST API behind the others), up to 60 s.
    #[test]
    fn a_register_queued_behind_others_is_awaited_longer() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        for (n, last_wait) in [
            (1, ms(15_000)),
            (2, ms(15_050)),
            (101, ms(20_000)),
            (2000, ms(60_000)),
        ] {
            let devs = (0..n)
                .map(|i| (format!("10.1.{}.{}", i / 250, i % 250 + 1), agent()))
                .collect();
            let mut c = Core::new(cfg(), devs);
            assert_eq!(sends(&c.start(t)).len(), n, "{n}");
            for i in 0..n {
                let dev = format!("10.1.{}.{}", i / 250, i % 250 + 1);
                reply(&mut c, t, &format!("101 tc Agent {dev} REGISTER"));
            }
            let last = format!("10.1.{}.{}", (n - 1) / 250, (n - 1) % 250 + 1);
            assert_eq!(c.devs[&last].next_send, Some(t + last_wait), "{n} devices");
            // The first to be acknowledged had none in hand before it.
            assert_eq!(c.devs["10.1.0.1"].next_send, Some(t + ms(15_000)), "{n}");
        }
        // The original agent sends no 101: its 100 Trying-less REGISTER is resent as before.
        assert_eq!(
            trying_wait(Verb::Register, false, Duration::ZERO, 500),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn register_never_starts_at_the_cpe() {
        let t = Instant::now();
        let mut c = core(Config {
            register: false,
            ..cfg()
        });
        let a = c.start(t);
        assert!(sends(&a).is_empty());
        assert_eq!(jobs(&a), [Job::CpeStart]);
        // A journal from a session that did register resumes the same way.
        let mut c = core(Config {
            register: false,
            ..cfg()
        });
        c.resume(&[Journal {
            device: "10.0.0.1".into(),
            step: Step::Register,
            rounds: 1,
            cpe_capturing: false,
            filename: None,
        }]);
        assert_eq!(jobs(&c.start(t)), [Job::CpeStart]);
    }

    #[test]
    fn unreachable_device_is_fetched_later_never_abandoned() {
        let t = Instant::now();
        let mut c = core(cfg());
        c.start(t);
        reply(&mut c, t, "200 OK 10.0.0.1 REGISTER");
        c.job_done(t, "10.0.0.1", Job::CpeStart, Ok(JobOk::Done));
        reply(&mut c, t, "200 OK 10.0.0.1 CAPTURE");
        c.datagram(t, agent(), LOST);
        reply(&mut c, t, "200 OK 10.0.0.1 VERIFY");
        c.job_done(t, "10.0.0.1", Job::Probe, Ok(probes_ok()));
        for i in 0..5u64 {
            let at = t + Duration::from_secs(30 * i);
            let a = c.job_done(
                at,
                "10.0.0.1",
                Job::CpeStop,
                Err("connect timed out".into()),
            );
            assert_eq!(tasks(&a), [("cpe_stop".into(), "retry".into())]);
            assert!(jobs(&c.tick(at + Duration::from_secs(29))).is_empty());
            assert_eq!(jobs(&c.tick(at + Duration::from_secs(30))), [Job::CpeStop]);
        }
        c.job_done(t, "10.0.0.1", Job::CpeStop, Ok(JobOk::Done));
        let a = c.job_done(t, "10.0.0.1", Job::Fetch, Err("connection reset".into()));
        assert_eq!(tasks(&a), [("fetch".into(), "retry".into())]);
        assert_eq!(jobs(&c.tick(t + Duration::from_secs(30))), [Job::Fetch]);
    }

    #[test]
    fn alarms_for_others_or_too_early_are_ignored() {
        let t = Instant::now();
        let mut c = core(cfg());
        c.start(t);
        let a = c.datagram(t, agent(), LOST);
        assert!(a.iter().any(|x| matches!(x, Action::Emit(Event::SessionIgnored { reason, .. }) if reason.contains("not capturing"))));
        assert!(jobs(&a).is_empty());
        let other = b"New Alarm - Connection Alarm, Major, Description:Connection Lost, IP Address:10.9.9.9";
        let a = c.datagram(t, agent(), other);
        assert!(a.iter().any(|x| matches!(x, Action::Emit(Event::SessionIgnored { reason, .. }) if reason.contains("not in the inventory"))));
        // A response from somewhere else than the agent changes nothing.
        let a = c.datagram(
            t,
            "127.0.0.77:20001".parse().unwrap(),
            b"200 OK 10.0.0.1 REGISTER",
        );
        assert!(jobs(&a).is_empty());
        assert!(c
            .datagram(t, agent(), b"\xff\xfegarbage")
            .iter()
            .all(|x| matches!(x, Action::Emit(_))));
    }

    #[test]
    fn a_flood_of_junk_shows_ten_lines_a_second_per_sender_and_counts_all() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        // (sender, at, datagrams, lines shown, tally.ignored after)
        let table: &[(&str, Duration, u32, usize, u32)] = &[
            ("127.0.0.66:514", ms(0), 25, 10, 25),
            // Another sender has lines of its own in the same second.
            ("127.0.0.67:514", ms(100), 3, 3, 28),
            // The same host from another port is the same sender.
            ("127.0.0.66:515", ms(999), 5, 0, 33),
            // A new second: ten more.
            ("127.0.0.66:514", ms(1000), 12, 10, 45),
        ];
        let mut c = core(cfg());
        c.start(t);
        for (from, at, n, shown, total) in table {
            let mut lines = 0;
            for _ in 0..*n {
                let a = c.datagram(t + *at, from.parse().unwrap(), b"junk");
                lines += a
                    .iter()
                    .filter(|x| matches!(x, Action::Emit(Event::SessionIgnored { .. })))
                    .count();
            }
            assert_eq!(lines, *shown, "{from} at {at:?}");
            assert_eq!(c.tally().ignored, *total, "{from} at {at:?}");
        }
    }

    #[test]
    fn alarms_are_believed_only_from_the_ovoc_servers() {
        let t = Instant::now();
        // (sender, what it says, believed: the round moves to VERIFY)
        let table: &[(&str, &[u8], bool)] = &[
            ("127.0.0.9:514", LOST, true),
            ("127.0.0.50:40000", LOST, true),
            ("127.0.0.66:514", LOST, false),
            ("[::1]:514", LOST, false),
            ("10.0.0.1:514", LOST, false),
        ];
        for (from, text, believed) in table {
            let mut c = core(cfg());
            to_capture(&mut c, t);
            reply(&mut c, t, "200 OK 10.0.0.1 CAPTURE");
            let a = c.datagram(t, from.parse().unwrap(), text);
            assert_eq!(!sends(&a).is_empty(), *believed, "{from}: {a:?}");
            let refused = a.iter().any(|x| {
                matches!(x, Action::Emit(Event::SessionIgnored { reason, device, .. })
                if reason.contains("not an OVOC server") && device.as_deref() == Some("10.0.0.1"))
            });
            assert_eq!(refused, !believed, "{from}: {a:?}");
            let alarm_line = a
                .iter()
                .any(|x| matches!(x, Action::Emit(Event::Alarm { .. })));
            assert_eq!(
                alarm_line, *believed,
                "{from}: a forged alarm is no alarm line"
            );
            let tally = c.tally();
            assert_eq!(
                (tally.ignored, tally.refused),
                if *believed { (0, 0) } else { (1, 1) },
                "{from}"
            );
        }
    }

    #[test]
    fn a_clear_is_reported_and_cancels_nothing() {
        let t = Instant::now();
        let clear = b"<133>Jun 22 16:17:05 ovoc : New Alarm - Connection Alarm, Clear, Description:Connection established, IP Address:10.0.0.1";
        let mut c = core(cfg());
        to_capture(&mut c, t);
        reply(&mut c, t, "200 OK 10.0.0.1 CAPTURE");
        c.datagram(t, agent(), LOST);
        reply(&mut c, t, "200 OK 10.0.0.1 VERIFY");
        let a = c.datagram(t, agent(), clear);
        assert_eq!(tasks(&a), [("alarm".into(), "skipped".into())]);
        assert!(sends(&a).is_empty() && jobs(&a).is_empty(), "{a:?}");
        // The round goes on as if the clear had not come.
        let a = c.job_done(t, "10.0.0.1", Job::Probe, Ok(probes_ok()));
        assert_eq!(jobs(&a), [Job::CpeStop]);
    }

    #[test]
    fn a_wind_down_that_runs_out_says_what_is_left() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut c = core(Config {
            wind_down: s(20),
            ..cfg()
        });
        to_capture(&mut c, t);
        reply(&mut c, t, "200 OK 10.0.0.1 CAPTURE");
        assert!(!c.wind_down_over(t + s(3600)), "no signal, no wind-down");
        assert_eq!(jobs(&c.interrupt(t)), [Job::CpeStop]);
        // The device is unreachable: the stop is retried, the wind-down runs out.
        c.job_done(t + s(3), "10.0.0.1", Job::CpeStop, Err("timed out".into()));
        assert_eq!(c.next_deadline(), Some(t + s(20)));
        assert!(!c.wind_down_over(t + s(19)));
        assert!(c.wind_down_over(t + s(20)));
        assert_eq!(
            c.unfinished(),
            [Unfinished {
                device: "10.0.0.1".into(),
                step: Step::CpeStop,
                capturing: true,
                file: None,
            }]
        );
    }

    #[test]
    fn interrupt_winds_down_running_captures() {
        let t = Instant::now();
        let mut c = Core::new(
            cfg(),
            vec![("10.0.0.1".into(), agent()), ("10.0.0.2".into(), agent())],
        );
        c.start(t);
        reply(&mut c, t, "200 OK 10.0.0.1 REGISTER");
        c.job_done(t, "10.0.0.1", Job::CpeStart, Ok(JobOk::Done));
        reply(&mut c, t, "200 OK 10.0.0.1 CAPTURE");
        let a = c.interrupt(t);
        assert_eq!(jobs(&a), [Job::CpeStop]);
        assert!(
            tasks(&a).contains(&("abort".into(), "skipped".into())),
            "10.0.0.2 never captured"
        );
        c.job_done(t, "10.0.0.1", Job::CpeStop, Ok(JobOk::Done));
        c.job_done(
            t,
            "10.0.0.1",
            Job::Fetch,
            Ok(JobOk::Fetched {
                path: "/o/CPE_d.pcap".into(),
            }),
        );
        let a = reply(&mut c, t, "200 OK 10.0.0.1 STOP");
        assert!(tasks(&a).contains(&("done".into(), "ok".into())));
        assert!(c.finished());
    }

    #[test]
    fn resume_continues_where_the_journal_stopped() {
        let t = Instant::now();
        let mut c = core(cfg());
        let j = |step, filename: Option<&str>| Journal {
            device: "10.0.0.1".into(),
            step,
            rounds: 0,
            cpe_capturing: false,
            filename: filename.map(String::from),
        };
        c.resume(&[j(Step::Armed, None)]);
        assert_eq!(sends(&c.start(t)), ["CAPTURE 10.0.0.1"]);
        // Killed between the alarm and the end of VERIFY: VERIFY and the probes again.
        let mut c = core(cfg());
        c.resume(&[j(Step::Verify, None)]);
        let a = c.start(t);
        assert_eq!(sends(&a), ["VERIFY 10.0.0.1"]);
        assert_eq!(jobs(&a), [Job::Probe]);
        let mut c = core(cfg());
        c.resume(&[j(Step::CpeStop, None)]);
        assert_eq!(jobs(&c.start(t)), [Job::CpeStop]);
        let mut c = core(cfg());
        c.resume(&[j(Step::Stop, Some("CPE_x.pcap"))]);
        let a = c.start(t);
        assert_eq!(
            sends(&a),
            ["STOP 10.0.0.1 CPE_x.pcap"],
            "fetched already: not fetched twice"
        );
        assert!(jobs(&a).is_empty());
        let mut c = core(cfg());
        c.resume(&[j(Step::Done, None)]);
        assert!(c.start(t).is_empty());
        assert!(c.finished());
        // Killed while collecting or analysing: that step again, for the journaled file.
        for step in [Step::Collect, Step::Analyze] {
            let mut c = core(Config {
                collect: true,
                ..cfg()
            });
            c.resume(&[j(step, Some("CPE_x.pcap"))]);
            let w = works(&c.start(t));
            assert_eq!(w.len(), 1, "{step:?}");
            assert_eq!((w[0].round, w[0].file.as_deref()), (1, Some("CPE_x.pcap")));
        }
    }

    fn works(a: &[Action]) -> Vec<Work> {
        a.iter()
            .filter_map(|x| match x {
                Action::Work(w) => Some(w.clone()),
                _ => None,
            })
            .collect()
    }

    fn rows(a: &[Action]) -> Vec<Row> {
        a.iter()
            .filter_map(|x| match x {
                Action::Report(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// `--collect-ovoc`: after STOP, collect then analyse, each for the round's CPE file; a
    /// collection is retried while the server is unreachable, given up when it cannot succeed;
    /// the verdict reaches the report and the tally.
    #[test]
    fn collected_rounds_are_analysed_and_their_verdicts_counted() {
        let t = Instant::now();
        let collecting = || {
            let mut c = core(Config {
                collect: true,
                max_events: 2,
                ..cfg()
            });
            to_stop(&mut c, t);
            let a = reply(&mut c, t, "200 OK 10.0.0.1 STOP");
            let w = works(&a);
            assert_eq!(w.len(), 1);
            assert_eq!(w[0].job, Job::Collect);
            assert_eq!((w[0].round, w[0].file.as_deref()), (1, Some("CPE_s.pcap")));
            assert_eq!(journals(&a).last(), Some(&Step::Collect));
            c
        };
        // Collected, analysed: the next round starts, the verdict is counted.
        let mut c = collecting();
        let fetched = Event::OvocFetched {
            server: "127.0.0.9".into(),
            device: "10.0.0.1".into(),
            path: "/o/10.0.0.1/1/OVOC_s-0.pcap".into(),
            remote_path: "/var/lib/tc-ovoc/OVOC_s-0.pcap".into(),
            bytes: 24,
            sha256: "00".repeat(32),
            seconds: 0.1,
            attempts: 1,
        };
        let a = c.job_done(
            t,
            "10.0.0.1",
            Job::Collect,
            Ok(JobOk::Collected(vec![fetched.clone()])),
        );
        assert!(a.contains(&Action::Emit(fetched)));
        assert_eq!(tasks(&a), [("collect".into(), "ok".into())]);
        assert_eq!(jobs(&a), [Job::Analyze]);
        let verdict = JobOk::Analyzed {
            verdict: "wan_loss_ovoc_to_cpe".into(),
            text: "From 14:03:22 SNMP from OVOC never reached the CPE.".into(),
        };
        let a = c.job_done(t, "10.0.0.1", Job::Analyze, Ok(verdict));
        let r = &rows(&a)[0];
        assert_eq!((r.task, r.status), ("analyze", "ok"));
        assert_eq!(r.verdict.as_deref(), Some("wan_loss_ovoc_to_cpe"));
        assert!(r.description.contains("never reached"));
        assert_eq!(jobs(&a), [Job::CpeStart], "round 2");
        assert_eq!(c.tally().verdicts.get("wan_loss_ovoc_to_cpe"), Some(&1));
        assert_eq!(c.tally().rounds, 1);
        // The server unreachable: retried every interval, never given up.
        let mut c = collecting();
        for _ in 0..3 {
            let a = c.job_done(t, "10.0.0.1", Job::Collect, Err("connect: refused".into()));
            assert_eq!(tasks(&a), [("collect".into(), "retry".into())]);
            assert!(jobs(&a).is_empty());
            assert!(jobs(&c.tick(t + Duration::from_secs(29))).is_empty());
            assert_eq!(jobs(&c.tick(t + Duration::from_secs(30))), [Job::Collect]);
        }
        // A refusal: the round goes on without its analysis.
        let mut c = collecting();
        let no = JobOk::Uncollectable("HOST KEY CHANGED".into());
        let a = c.job_done(t, "10.0.0.1", Job::Collect, Ok(no));
        assert_eq!(tasks(&a)[0], ("collect".into(), "failed".into()));
        assert_eq!(jobs(&a), [Job::CpeStart]);
        assert!(c.tally().verdicts.is_empty());
        assert_eq!(c.tally().unanalysed, 1);
        // An analysis that fails is reported; the round goes on.
        let mut c = collecting();
        c.job_done(
            t,
            "10.0.0.1",
            Job::Collect,
            Ok(JobOk::Collected(Vec::new())),
        );
        let a = c.job_done(
            t,
            "10.0.0.1",
            Job::Analyze,
            Err("reading captures: truncated".into()),
        );
        assert_eq!(tasks(&a)[0], ("analyze".into(), "failed".into()));
        assert_eq!(jobs(&a), [Job::CpeStart]);
        assert_eq!(c.tally().unanalysed, 1);
    }
}

/// The resend policy against simulated agents, in synthetic time: the original's single-threaded
/// agent (reads one datagram, works on it, then reads the next; 10 s per VERIFY; 503 to a
/// repeated STOP, a crash at the third) and a `tc`-like agent that works on requests at once.
#[cfg(test)]
mod sim {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, VecDeque};

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Kind {
        Serial,
        Concurrent,
    }

    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
    enum Dir {
        ToAgent,
        ToSession,
    }

    #[derive(Debug)]
    enum Ev {
        ToAgent(String),
        /// The agent has worked on a request: its final answer (None: the agent crashed).
        AgentDone(String, Option<String>),
        ToSession(String),
        Job(String, Job),
    }

    const MS: Duration = Duration::from_millis(1);

    struct Sim<'a> {
        t0: Instant,
        now: Instant,
        core: Core,
        kind: Kind,
        queue: BinaryHeap<Reverse<(Duration, u64)>>,
        events: BTreeMap<u64, Ev>,
        seq: u64,
        lose: &'a dyn Fn(Dir, &str, u32) -> bool,
        seen: BTreeMap<(Dir, String), u32>,
        // The agent.
        inbox: VecDeque<String>,
        busy: bool,
        working: BTreeSet<String>,
        stops: BTreeMap<String, u32>,
        crashed: bool,
        /// (device, verb) -> requests the agent read.
        read: BTreeMap<(String, String), u32>,
        answered_503: u32,
        // The session.
        trying_seen: BTreeSet<(String, String)>,
        resent_after_trying: u32,
    }

    fn words(text: &str) -> (String, String) {
        let mut w = text.split(' ');
        let verb = w.next().unwrap_or("").to_string();
        (w.next().unwrap_or("").to_string(), verb)
    }

    impl Sim<'_> {
        fn at(&mut self, after: Duration, ev: Ev) {
            self.seq += 1;
            let when = self.now + after - self.t0;
            self.queue.push(Reverse((when, self.seq)));
            self.events.insert(self.seq, ev);
        }

        /// UDP: a datagram arrives 1 ms later, unless the loss rule takes it.
        fn datagram(&mut self, dir: Dir, text: String) {
            let n = self.seen.entry((dir, text.clone())).or_insert(0);
            *n += 1;
            if !(self.lose)(dir, &text, *n) {
                let ev = match dir {
                    Dir::ToAgent => Ev::ToAgent(text),
                    Dir::ToSession => Ev::ToSession(text),
                };
                self.at(MS, ev);
            }
        }

        fn perform(&mut self, actions: Vec<Action>) {
            for a in actions {
                match a {
                    Action::Send { text, .. } => {
                        let key = words(&text);
                        if self.trying_seen.contains(&key) {
                            self.resent_after_trying += 1;
                        }
                        self.datagram(Dir::ToAgent, text);
                    }
                    Action::Work(Work { device, job, .. }) => {
                        let secs = match job {
                            Job::CpeStart | Job::CpeStop => 1000,
                            Job::Fetch | Job::Collect => 2000,
                            Job::Analyze => 500,
                            Job::Probe => 10_000,
                        };
                        self.at(MS * secs, Ev::Job(device, job));
                    }
                    Action::Report(r) if r.task == "capture" && r.status == "ok" => {
                        let alarm = format!(
                            "New Alarm - Connection Alarm, Major, Description:Connection Lost, \
                             IP Address:{}",
                            r.device
                        );
                        self.at(MS * 5000, Ev::ToSession(alarm));
                    }
                    _ => {}
                }
            }
        }

        /// The agent reads one request: `100 Trying` at once, the final answer after the work.
        fn agent_read(&mut self, text: String) {
            let (device, verb) = words(&text);
            *self.read.entry((device.clone(), verb.clone())).or_insert(0) += 1;
            if self.kind == Kind::Concurrent && (verb == "REGISTER" || verb == "CAPTURE") {
                self.datagram(Dir::ToSession, format!("101 tc Agent {device} {verb}"));
            }
            if self.kind == Kind::Concurrent && !self.working.insert(text.clone()) {
                // A duplicate of a request being worked on: one more waiter, one final answer.
                self.datagram(Dir::ToSession, format!("100 Trying {device} {verb}"));
                return;
            }
            let (ms, final_code) = match verb.as_str() {
                "REGISTER" => (500, Some(200)),
                "CAPTURE" => (1000, Some(200)),
                "VERIFY" => (10_000, Some(200)),
                _ => {
                    let n = self.stops.entry(device.clone()).or_insert(0);
                    *n += 1;
                    match (self.kind, *n) {
                        (Kind::Serial, 2) => (0, Some(503)),
                        (Kind::Serial, 3..) => (0, None),
                        _ => (500, Some(200)),
                    }
                }
            };
            if verb != "REGISTER" {
                self.datagram(Dir::ToSession, format!("100 Trying {device} {verb}"));
            }
            let answer = final_code.map(|c| format!("{c} {} {device} {verb}", proto::reason(c)));
            self.busy = true;
            self.at(MS * ms, Ev::AgentDone(text, answer));
        }

        fn step(&mut self, ev: Ev) {
            match ev {
                Ev::ToAgent(text) if !self.crashed => match self.kind {
                    Kind::Concurrent => self.agent_read(text),
                    Kind::Serial => {
                        self.inbox.push_back(text);
                        if !self.busy {
                            let next = self.inbox.pop_front().expect("pushed");
                            self.agent_read(next);
                        }
                    }
                },
                Ev::ToAgent(_) => {}
                Ev::AgentDone(text, answer) => {
                    self.working.remove(&text);
                    match answer {
                        None => self.crashed = true,
                        Some(a) => {
                            self.answered_503 += u32::from(a.starts_with("503"));
                            self.datagram(Dir::ToSession, a);
                        }
                    }
                    self.busy = false;
                    if self.kind == Kind::Serial && !self.crashed {
                        if let Some(next) = self.inbox.pop_front() {
                            self.agent_read(next);
                        }
                    }
                }
                Ev::ToSession(text) => {
                    if let Some(rest) = text.strip_prefix("100 Trying ") {
                        let mut w = rest.split(' ');
                        let device = w.next().unwrap_or("").to_string();
                        self.trying_seen
                            .insert((device, w.next().unwrap_or("").to_string()));
                    }
                    let from: SocketAddr = AGENT.parse().expect("address");
                    let a = self.core.datagram(self.now, from, text.as_bytes());
                    self.perform(a);
                }
                Ev::Job(device, job) => {
                    let r = match job {
                        Job::Probe => Ok(probes_ok()),
                        Job::Fetch => Ok(JobOk::Fetched {
                            path: format!("/o/CPE_device_{device}_T.pcap"),
                        }),
                        Job::Collect => Ok(JobOk::Collected(Vec::new())),
                        Job::Analyze => Ok(JobOk::Analyzed {
                            verdict: "no_loss".into(),
                            text: "No loss.".into(),
                        }),
                        _ => Ok(JobOk::Done),
                    };
                    let a = self.core.job_done(self.now, &device, job, r);
                    self.perform(a);
                }
            }
        }

        fn run(&mut self) {
            let a = self.core.start(self.now);
            self.perform(a);
            while !self.core.finished() {
                let ev_at = self.queue.peek().map(|Reverse((d, _))| self.t0 + *d);
                let tick_at = self.core.next_deadline();
                let next = match (ev_at, tick_at) {
                    (Some(e), Some(t)) => e.min(t),
                    (e, t) => e.or(t).expect("the session waits for nothing: stuck"),
                };
                assert!(
                    next - self.t0 < Duration::from_secs(3600),
                    "not done in an hour"
                );
                self.now = self.now.max(next);
                if ev_at == Some(next) {
                    let Reverse((_, id)) = self.queue.pop().expect("peeked");
                    let ev = self.events.remove(&id).expect("scheduled");
                    self.step(ev);
                } else {
                    let a = self.core.tick(self.now);
                    self.perform(a);
                }
            }
        }
    }

    const AGENT: &str = "127.0.0.9:20001";

    fn probes_ok() -> JobOk {
        let ok = crate::event::ProbeCounts {
            sent: 10,
            answered: 10,
            error: None,
        };
        JobOk::Probed(ProbeReport {
            icmp: Some(ok.clone()),
            snmp: Some(ok.clone()),
            tcp: Some(ok),
        })
    }

    struct Row {
        name: &'static str,
        kind: Kind,
        devices: u32,
        lose: &'static dyn Fn(Dir, &str, u32) -> bool,
        /// (completed, failed)
        outcome: (u32, u32),
        /// Requests the agent read more than once: (device, verb, times).
        repeated: &'static [(&'static str, &'static str, u32)],
        resent_after_trying: u32,
        answered_503: u32,
    }

    fn lossy(dir: Dir, text: &str, n: u32) -> bool {
        // Deterministic, about one datagram in eight in each direction: FNV-1a over what makes
        // this datagram this one (its text, which send of that text, its direction).
        let h = text
            .bytes()
            .chain(n.to_le_bytes())
            .chain([dir as u8])
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        (h >> 32) % 8 == 0
    }

    #[test]
    fn resend_policy_table() {
        let rows: &[Row] = &[
            Row {
                name: "original agent, 3 devices",
                kind: Kind::Serial,
                devices: 3,
                lose: &|_, _, _| false,
                outcome: (3, 0),
                repeated: &[],
                resent_after_trying: 0,
                answered_503: 0,
            },
            Row {
                name: "original agent, 3 devices, a VERIFY lost on the way",
                kind: Kind::Serial,
                devices: 3,
                lose: &|d, t, n| d == Dir::ToAgent && t == "VERIFY 10.0.0.2" && n == 1,
                outcome: (3, 0),
                repeated: &[],
                resent_after_trying: 0,
                answered_503: 0,
            },
            Row {
                name: "original agent, 3 devices, the 200 to a STOP lost",
                kind: Kind::Serial,
                devices: 3,
                lose: &|d, t, n| d == Dir::ToSession && t == "200 OK 10.0.0.1 STOP" && n == 1,
                // Resent once after the 60 s wait; the 503 to the repeat ends it, no third STOP.
                outcome: (2, 1),
                repeated: &[("10.0.0.1", "STOP", 2)],
                resent_after_trying: 1,
                answered_503: 1,
            },
            Row {
                name: "original agent, 1 device, STOP never arrives",
                kind: Kind::Serial,
                devices: 1,
                lose: &|d, t, _| d == Dir::ToAgent && t.starts_with("STOP"),
                outcome: (0, 1),
                repeated: &[],
                resent_after_trying: 0,
                answered_503: 0,
            },
            Row {
                name: "tc agent, 10 devices",
                kind: Kind::Concurrent,
                devices: 10,
                lose: &|_, _, _| false,
                outcome: (10, 0),
                repeated: &[],
                resent_after_trying: 0,
                answered_503: 0,
            },
        ];
        for row in rows {
            let t0 = Instant::now();
            let devices = (1..=row.devices)
                .map(|i| (format!("10.0.0.{i}"), AGENT.parse().expect("address")))
                .collect();
            let mut sim = Sim {
                t0,
                now: t0,
                core: Core::new(
                    Config {
                        max_events: 1,
                        register_attempts: 2,
                        retries: 3,
                        fetch_retry_interval: Duration::from_secs(30),
                        resend: Duration::from_secs(3),
                        probes: true,
                        register: true,
                        probe_time: Duration::from_secs(11),
                        alarm_from: vec![Cidr::parse("127.0.0.9").expect("CIDR")],
                        wind_down: Duration::from_secs(300),
                        collect: false,
                    },
                    devices,
                ),
                kind: row.kind,
                queue: BinaryHeap::new(),
                events: BTreeMap::new(),
                seq: 0,
                lose: row.lose,
                seen: BTreeMap::new(),
                inbox: VecDeque::new(),
                busy: false,
                working: BTreeSet::new(),
                stops: BTreeMap::new(),
                crashed: false,
                read: BTreeMap::new(),
                answered_503: 0,
                trying_seen: BTreeSet::new(),
                resent_after_trying: 0,
            };
            sim.run();
            let t = sim.core.tally();
            assert_eq!((t.completed, t.failed), row.outcome, "{}", row.name);
            assert!(!sim.crashed, "{}: the agent crashed", row.name);
            let repeated: Vec<(String, String, u32)> = sim
                .read
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|((d, v), n)| (d.clone(), v.clone(), *n))
                .collect();
            let want: Vec<(String, String, u32)> = row
                .repeated
                .iter()
                .map(|(d, v, n)| (d.to_string(), v.to_string(), *n))
                .collect();
            assert_eq!(repeated, want, "{}: requests read more than once", row.name);
            assert_eq!(
                sim.resent_after_trying, row.resent_after_trying,
                "{}: resent after 100 Trying",
                row.name
            );
            assert_eq!(sim.answered_503, row.answered_503, "{}", row.name);
        }
    }

    #[test]
    fn tc_agent_on_a_lossy_network_completes_every_device() {
        let t0 = Instant::now();
        let devices = (1..=20)
            .map(|i| (format!("10.0.0.{i}"), AGENT.parse().expect("address")))
            .collect();
        let mut sim = Sim {
            t0,
            now: t0,
            core: Core::new(
                Config {
                    max_events: 2,
                    // The default budget of the other requests; REGISTER's default (2 sends,
                    // the original's) gives up too soon on a network this lossy.
                    register_attempts: 4,
                    retries: 5,
                    fetch_retry_interval: Duration::from_secs(30),
                    resend: Duration::from_secs(3),
                    probes: true,
                    register: true,
                    probe_time: Duration::from_secs(11),
                    alarm_from: vec![Cidr::parse("127.0.0.9").expect("CIDR")],
                    wind_down: Duration::from_secs(300),
                    collect: true,
                },
                devices,
            ),
            kind: Kind::Concurrent,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            lose: &lossy,
            seen: BTreeMap::new(),
            inbox: VecDeque::new(),
            busy: false,
            working: BTreeSet::new(),
            stops: BTreeMap::new(),
            crashed: false,
            read: BTreeMap::new(),
            answered_503: 0,
            trying_seen: BTreeSet::new(),
            resent_after_trying: 0,
        };
        sim.run();
        let t = sim.core.tally();
        assert_eq!((t.completed, t.failed, t.rounds), (20, 0, 40));
        // With --collect-ovoc: every round of every device analysed once.
        assert_eq!(t.verdicts.get("no_loss"), Some(&40));
        assert!(
            sim.read.values().any(|n| *n > 1),
            "the loss rule lost nothing: the test would not test resending"
        );
    }
}
