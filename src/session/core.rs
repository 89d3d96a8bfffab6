//! The session's pure core: one state machine per device, driven by datagrams (agent
//! responses, forwarded alarms), worker outcomes and the clock, answering with actions
//! (send a datagram, run a job, report a task, journal a step). No sockets, no threads.
//!
//! Per device: REGISTER -> CPE start -> CAPTURE -> wait for Connection Lost -> VERIFY with local
//! probes -> CPE stop -> fetch (retried every interval, never abandoned) -> STOP <file> -> next
//! round or done. Control datagrams are retransmitted until answered (UDP loses them); the
//! agent's requests are idempotent, so a duplicate does no harm.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::event::{Event, ProbeReport};
use crate::proto::{self, Request, Verb};

#[derive(Debug, Clone)]
pub struct Config {
    /// Rounds per device; 0 = until interrupted.
    pub max_events: u32,
    pub register_attempts: u32,
    /// Sends of CAPTURE, VERIFY and STOP before giving up on an answer.
    pub retries: u32,
    pub fetch_retry_interval: Duration,
    /// Wait before resending an unanswered request.
    pub resend: Duration,
    /// Wait after `100 Trying` before resending.
    pub trying_wait: Duration,
    pub probes: bool,
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
    Done,
    Aborted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    CpeStart,
    CpeStop,
    Fetch,
    Probe,
}

/// What a finished job reports.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOk {
    Done,
    Fetched { path: String },
    Probed(ProbeReport),
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
    Work { device: String, job: Job },
    Emit(Event),
    Report(Row),
    Journal(Journal),
}

#[derive(Debug, Clone)]
struct Dev {
    agent: SocketAddr,
    step: Step,
    rounds: u32,
    sent: u32,
    next_send: Option<Instant>,
    /// The CPE capture was started and not yet stopped: it must be stopped on the way out.
    cpe_capturing: bool,
    job_running: bool,
    filename: Option<String>,
    agent_verify: Option<(u16, String)>,
    local_verify: Option<ProbeReport>,
    retry_at: Option<Instant>,
    winding_down: bool,
}

pub struct Core {
    cfg: Config,
    devs: BTreeMap<String, Dev>,
    interrupted: bool,
}

fn trim_to_word(s: &str) -> String {
    s.chars().take(200).collect()
}

/// The wait after the `sent`-th send of a request. REGISTER backs off (`resend`, doubling with
/// each resend up to 4x): an agent that is slow because a whole fleet registered at once (each
/// REGISTER costs it OVOC REST calls) gets time to catch up instead of a growing backlog of
/// duplicates. The others keep `resend`: a VERIFY given up late would keep the CPE capture
/// running long after its Connection Lost.
fn resend_wait(verb: Verb, resend: Duration, sent: u32) -> Duration {
    match verb {
        Verb::Register => resend * (1u32 << sent.saturating_sub(1).min(2)),
        _ => resend,
    }
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
                        cpe_capturing: false,
                        job_running: false,
                        filename: None,
                        agent_verify: None,
                        local_verify: None,
                        retry_at: None,
                        winding_down: false,
                    },
                )
            })
            .collect();
        Core {
            cfg,
            devs,
            interrupted: false,
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
                Step::Verify | Step::CpeStop => Step::CpeStop,
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
        })
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
        d.next_send = Some(now + resend_wait(verb, resend, d.sent));
        out.push(Action::Send { to: d.agent, text });
    }

    fn enter(&mut self, out: &mut Vec<Action>, now: Instant, device: &str, step: Step) {
        {
            let d = self.devs.get_mut(device).expect("known device");
            d.step = step;
            d.sent = 0;
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
                d.job_running = true;
                out.push(Action::Work {
                    device: device.into(),
                    job: Job::Probe,
                });
                self.send(out, now, device, Verb::Verify);
            }
            Step::CpeStart | Step::CpeStop | Step::Fetch => {
                let job = match step {
                    Step::CpeStart => Job::CpeStart,
                    Step::CpeStop => Job::CpeStop,
                    _ => Job::Fetch,
                };
                self.devs.get_mut(device).expect("known").job_running = true;
                out.push(Action::Work {
                    device: device.into(),
                    job,
                });
            }
            Step::Armed | Step::Done | Step::Aborted => {}
        }
        self.journal(out, device);
    }

    /// Start every device (or resume it where the journal left it).
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let names: Vec<(String, Step)> =
            self.devs.iter().map(|(n, d)| (n.clone(), d.step)).collect();
        for (n, step) in names {
            if !matches!(step, Step::Done | Step::Aborted) {
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
        if winding || (max > 0 && rounds >= max) {
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
        let text = crate::alarm::syslog::text(data);
        if proto::looks_like_response(&text) {
            match proto::parse_response(&text) {
                Some(r) => self.response(&mut out, now, from, r),
                None => out.push(Action::Emit(Event::SessionIgnored {
                    device: None,
                    reason: format!("unreadable response {:?}", trim_to_word(&text)),
                    sender: from.to_string(),
                })),
            }
            return out;
        }
        let (frame, alarm) = crate::alarm::read(&text);
        let Some(alarm) = alarm else {
            out.push(Action::Emit(Event::SessionIgnored {
                device: None,
                reason: "neither an agent response nor an OVOC alarm".into(),
                sender: from.to_string(),
            }));
            return out;
        };
        let device = alarm.device.unwrap_or_default().to_string();
        let lost = alarm.is_connection_lost();
        out.push(Action::Emit(crate::alarm::alarm_event(
            &frame, &alarm, from, &text,
        )));
        if !lost {
            return out;
        }
        let step = self.devs.get(&device).map(|d| d.step);
        match step {
            None => out.push(Action::Emit(Event::SessionIgnored {
                device: Some(device),
                reason: "Connection Lost for a device not in the inventory".into(),
                sender: from.to_string(),
            })),
            Some(Step::Armed) if !self.interrupted => {
                out.push(self.row(&device, "alarm", "ok", None, "Connection Lost".into(), None));
                let next = if self.cfg.probes {
                    Step::Verify
                } else {
                    Step::CpeStop
                };
                self.enter(&mut out, now, &device, next);
            }
            Some(s) => out.push(Action::Emit(Event::SessionIgnored {
                device: Some(device),
                reason: format!("Connection Lost while the device is not capturing (step {s:?})"),
                sender: from.to_string(),
            })),
        }
        out
    }

    fn response(
        &mut self,
        out: &mut Vec<Action>,
        now: Instant,
        from: SocketAddr,
        r: proto::Response,
    ) {
        let Some(d) = self.devs.get(&r.device) else {
            out.push(Action::Emit(Event::SessionIgnored {
                device: Some(r.device),
                reason: "response for a device not in the inventory".into(),
                sender: from.to_string(),
            }));
            return;
        };
        // The agent answers from its listen socket; anything else is not our agent.
        if from.ip() != d.agent.ip() {
            out.push(Action::Emit(Event::SessionIgnored {
                device: Some(r.device),
                reason: format!(
                    "response from {from}, not from the device's agent {}",
                    d.agent
                ),
                sender: from.to_string(),
            }));
            return;
        }
        let expected = match d.step {
            Step::Register => Verb::Register,
            Step::Capture => Verb::Capture,
            Step::Verify => Verb::Verify,
            Step::Stop => Verb::Stop,
            _ => return, // a late duplicate: nothing waits for it
        };
        // Agents before 1.0.6 do not name the request; then the step decides.
        if r.verb.is_some_and(|v| v != expected) {
            return;
        }
        let device = r.device.clone();
        if r.code == 100 {
            let wait = self.cfg.trying_wait;
            if let Some(d) = self.devs.get_mut(&device) {
                d.next_send = Some(now + wait);
            }
            return;
        }
        let desc = format!("{} {}", r.code, r.reason);
        match (expected, r.code) {
            (Verb::Register, 200) => {
                out.push(self.row(&device, "register", "ok", Some(200), desc, None));
                self.enter(out, now, &device, Step::CpeStart);
            }
            (Verb::Capture, 200) => {
                out.push(self.row(&device, "capture", "ok", Some(200), desc, None));
                self.enter(out, now, &device, Step::Armed);
                if self.interrupted || self.devs[&device].winding_down {
                    self.enter(out, now, &device, Step::CpeStop);
                }
            }
            (Verb::Verify, code) => {
                if let Some(d) = self.devs.get_mut(&device) {
                    if d.agent_verify.is_none() {
                        d.agent_verify = Some((code, desc));
                        d.next_send = None;
                    }
                }
                self.verify_progress(out, now, &device);
            }
            (Verb::Stop, 200) => {
                let file = self.devs[&device].filename.clone();
                out.push(self.row(&device, "stop", "ok", Some(200), desc, file));
                self.finish_round(out, now, &device);
            }
            (verb, code) => {
                // 503 and friends: try again after the resend delay, within the budget.
                out.push(self.row(&device, verb_task(verb), "retry", Some(code), desc, None));
            }
        }
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
        let interval = self.cfg.fetch_retry_interval;
        match (job, result) {
            (Job::CpeStart, Ok(_)) => {
                d.cpe_capturing = true;
                out.push(self.row(
                    device,
                    "cpe_start",
                    "ok",
                    None,
                    "capture active on the device".into(),
                    None,
                ));
                self.enter(&mut out, now, device, Step::Capture);
            }
            (Job::CpeStart, Err(e)) => self.abort(&mut out, now, device, e),
            (Job::CpeStop, Ok(_)) => {
                d.cpe_capturing = false;
                out.push(self.row(
                    device,
                    "cpe_stop",
                    "ok",
                    None,
                    "capture stopped on the device".into(),
                    None,
                ));
                self.enter(&mut out, now, device, Step::Fetch);
            }
            (Job::Fetch, Ok(JobOk::Fetched { path })) => {
                let name = std::path::Path::new(&path)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
                    .to_string();
                d.filename = Some(name);
                out.push(self.row(
                    device,
                    "fetch",
                    "ok",
                    None,
                    "CPE capture retrieved".into(),
                    Some(path),
                ));
                self.enter(&mut out, now, device, Step::Stop);
            }
            // The device may be unreachable (that is what the alarm said): keep trying.
            (Job::CpeStop | Job::Fetch, r) => {
                let task = if job == Job::CpeStop {
                    "cpe_stop"
                } else {
                    "fetch"
                };
                let e = r.err().unwrap_or_else(|| "unexpected job result".into());
                d.retry_at = Some(now + interval);
                out.push(self.row(
                    device,
                    task,
                    "retry",
                    None,
                    format!("{e}; retrying in {interval:?}"),
                    None,
                ));
            }
            (Job::Probe, r) => {
                let report = match r {
                    Ok(JobOk::Probed(p)) => p,
                    _ => ProbeReport::default(),
                };
                d.local_verify = Some(report);
                self.verify_progress(&mut out, now, device);
            }
        }
        out
    }

    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let names: Vec<String> = self.devs.keys().cloned().collect();
        for n in names {
            let d = &self.devs[&n];
            if let Some(at) = d.retry_at.filter(|t| *t <= now) {
                let _ = at;
                let step = d.step;
                self.enter(&mut out, now, &n, step);
                continue;
            }
            let Some(at) = d.next_send else { continue };
            if at > now {
                continue;
            }
            let (step, sent) = (d.step, d.sent);
            let budget = if step == Step::Register {
                self.cfg.register_attempts
            } else {
                self.cfg.retries + 1
            };
            let verb = match step {
                Step::Register => Verb::Register,
                Step::Capture => Verb::Capture,
                Step::Verify => Verb::Verify,
                Step::Stop => Verb::Stop,
                _ => continue,
            };
            if sent < budget {
                self.send(&mut out, now, &n, verb);
                continue;
            }
            let why = format!("no answer to {verb} after {sent} sends");
            match step {
                Step::Verify => {
                    let d = self.devs.get_mut(&n).expect("known");
                    d.next_send = None;
                    d.agent_verify = Some((0, why));
                    self.verify_progress(&mut out, now, &n);
                }
                Step::Stop => {
                    // The CPE file is safe; the agent keeps its files under their tmp_ names.
                    let file = self.devs[&n].filename.clone();
                    out.push(self.row(&n, "stop", "failed", None, why, file));
                    self.finish_round(&mut out, now, &n);
                }
                _ => self.abort(&mut out, now, &n, why),
            }
        }
        out
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.devs
            .values()
            .flat_map(|d| [d.next_send, d.retry_at])
            .flatten()
            .min()
    }

    /// SIGINT/SIGTERM: wind every device down (stop captures, fetch, STOP), start nothing new.
    pub fn interrupt(&mut self, now: Instant) -> Vec<Action> {
        self.interrupted = true;
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
            .all(|d| matches!(d.step, Step::Done | Step::Aborted) && !d.job_running)
    }

    /// (completed, aborted, total rounds)
    pub fn tally(&self) -> (u32, u32, u32) {
        let done = self.devs.values().filter(|d| d.step == Step::Done).count() as u32;
        let aborted = self
            .devs
            .values()
            .filter(|d| d.step == Step::Aborted)
            .count() as u32;
        (done, aborted, self.devs.values().map(|d| d.rounds).sum())
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted
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
            trying_wait: Duration::from_secs(10),
            probes: true,
        }
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
                if let Action::Work { job, .. } = x {
                    Some(*job)
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
            assert_eq!(c.tally(), (1, 0, 1));
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
        assert_eq!(c.tally(), (1, 0, 2));
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
        assert_eq!(c.tally(), (0, 1, 0));
    }

    #[test]
    fn capture_resent_then_trying_extends_the_wait() {
        let t = Instant::now();
        let mut c = core(cfg());
        c.start(t);
        reply(&mut c, t, "200 OK 10.0.0.1 REGISTER");
        c.job_done(t, "10.0.0.1", Job::CpeStart, Ok(JobOk::Done));
        assert_eq!(
            sends(&c.tick(t + Duration::from_secs(3))),
            ["CAPTURE 10.0.0.1"]
        );
        reply(
            &mut c,
            t + Duration::from_secs(4),
            "100 Trying 10.0.0.1 CAPTURE",
        );
        assert!(sends(&c.tick(t + Duration::from_secs(10))).is_empty());
        assert_eq!(
            sends(&c.tick(t + Duration::from_secs(14))),
            ["CAPTURE 10.0.0.1"]
        );
        // CAPTURE does not back off (only REGISTER does): out of budget after the fourth send,
        // the CPE capture that runs is stopped and its file kept.
        assert_eq!(
            sends(&c.tick(t + Duration::from_secs(17))),
            ["CAPTURE 10.0.0.1"]
        );
        assert!(jobs(&c.tick(t + Duration::from_secs(19))).is_empty());
        let a = c.tick(t + Duration::from_secs(20));
        assert_eq!(jobs(&a), [Job::CpeStop]);
        c.job_done(t, "10.0.0.1", Job::CpeStop, Ok(JobOk::Done));
        let a = c.job_done(
            t,
            "10.0.0.1",
            Job::Fetch,
            Ok(JobOk::Fetched {
                path: "/o/CPE_c.pcap".into(),
            }),
        );
        assert_eq!(sends(&a), ["STOP 10.0.0.1 CPE_c.pcap"]);
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
    }
}
