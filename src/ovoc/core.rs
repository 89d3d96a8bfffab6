//! The agent's pure core: a table of devices and captures, driven by inputs (datagrams, tcpdump
//! and worker outcomes, the clock) and answering with actions for the I/O shell to perform.
//! No sockets, no processes, no sleeps: tests feed inputs with synthetic time.
//!
//! Invariants:
//! - every request gets exactly one final answer per requester (200/400/404/430/503), preceded
//!   by `100 Trying` for CAPTURE, VERIFY and STOP, as the 1.0.6 agent did;
//! - a device has at most one live capture; a capture's files are never deleted;
//! - repeated requests are idempotent: CAPTURE on a running capture answers 200, a STOP after
//!   the capture was stopped answers 200 with the same result.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::limits::{Admit, Bucket, Disk, Limits, Rates};
use crate::event::{Event, ProbeReport};
use crate::netaddr::{canonical_device, canonical_ip, Cidr};
use crate::proto::{self, Reject, Request, Response, Verb};
use crate::timefmt::Utc;

pub type CaptureId = u64;

#[derive(Debug, Clone)]
pub struct Config {
    pub allow: Vec<Cidr>,
    pub allow_any: bool,
    pub ovoc_rules: bool,
    pub rule_idle: Duration,
    pub start_timeout: Duration,
    pub stop_grace: Duration,
    /// From STOP (or shutdown) to tcpdump's SIGTERM. libpcap hands packets to tcpdump in blocks
    /// that the kernel closes at most a second (tcpdump's timeout) after their first packet; a
    /// SIGTERM before that loses what the open block holds.
    pub stop_flush: Duration,
    pub limits: Limits,
    /// The agent's own addresses (not loopback) and its networks' broadcast addresses: never a
    /// VERIFY target.
    pub own: Vec<IpAddr>,
    pub broadcast: Vec<IpAddr>,
}

/// End-of-capture figures tcpdump prints on exit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub captured: Option<u64>,
    pub received: Option<u64>,
    pub dropped_kernel: Option<u64>,
}

impl Stats {
    /// tcpdump said it lost nothing in the kernel (unknown, e.g. after SIGKILL, is not complete).
    pub fn complete(&self) -> bool {
        self.dropped_kernel == Some(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopResult {
    pub filename: String,
    pub files: Vec<String>,
    pub stats: Stats,
    /// Why the capture ended before the STOP came (a full disk, tcpdump died, the agent shut
    /// down): the files do not cover the time up to the STOP, so it is not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
}

/// Exited reasons that a STOP itself caused (its rename failed, or the agent restarted while
/// renaming): a later STOP does not report them as an early end.
const RENAME_FAILED: &str = "rename failed";
const RENAMING: &str = "stopping";

fn ended_before_stop(reason: String) -> Option<String> {
    (reason != RENAMING && !reason.starts_with(RENAME_FAILED)).then_some(reason)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Starting {
        waiters: Vec<SocketAddr>,
        deadline: Instant,
    },
    Running,
    /// Waiting for tcpdump to have written everything (`term_at`), then for it to exit.
    Stopping {
        /// None: the agent is shutting down; the files keep their tmp_ names.
        filename: Option<String>,
        waiters: Vec<SocketAddr>,
        term_at: Instant,
        kill_at: Instant,
        /// 0 none yet, 1 SIGTERM, 2 SIGKILL.
        signalled: u8,
    },
    /// tcpdump is gone without a STOP (died, agent shutdown, found dead on restart).
    Exited {
        stats: Stats,
        reason: String,
    },
    Renaming {
        filename: String,
        waiters: Vec<SocketAddr>,
        stats: Stats,
        /// The capture had ended before the STOP (`StopResult::ended`).
        ended: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct Capture {
    device: String,
    /// The device's owner (canonical address) for the capture's life: while it is unfinished
    /// only the owner's address may re-register, so this cannot change.
    owner: Option<IpAddr>,
    /// File name of the capture in DIR, without tcpdump's ring digits.
    base: String,
    pid: Option<u32>,
    phase: Phase,
}

#[derive(Debug, Clone, Default)]
struct Device {
    /// The device as its owner spells it, for the answers (the table is keyed by
    /// `canonical_device`; a controller matches answers by its own spelling).
    name: String,
    /// Source of the last REGISTER answered 200: where OVOC forwards this device's alarms, and
    /// the device's owner. Only the owner's address (any port: a restarted controller) may ask
    /// about the device; others may take it over by REGISTER only while it has no unfinished
    /// capture.
    registered: Option<SocketAddr>,
    rule_id: Option<u64>,
    /// A rule operation is in flight; these requesters wait for its outcome.
    rule_waiters: Vec<SocketAddr>,
    rule_dest_pending: Option<SocketAddr>,
    rule_deleting: bool,
    verify_waiters: Vec<SocketAddr>,
    last_seen: Option<Instant>,
    current: Option<CaptureId>,
    last_stop: Option<StopResult>,
}

// Actions live for one turn of the loop; boxing the events would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Reply {
        to: SocketAddr,
        text: String,
        /// `100 Trying`: announces nothing that must be on disk first, so it goes out at once.
        interim: bool,
    },
    Spawn {
        id: CaptureId,
        device: String,
        base: String,
    },
    /// SIGTERM (`kill: false`) or SIGKILL to the capture's tcpdump.
    Signal {
        id: CaptureId,
        kill: bool,
    },
    /// Rename the capture's ring files `<base><n>` to `OVOC_<target>-<n>.pcap`.
    Rename {
        id: CaptureId,
        base: String,
        target: String,
    },
    EnsureRule {
        device: String,
        dest: SocketAddr,
    },
    DeleteRule {
        device: String,
        rule_id: u64,
    },
    /// Probe the device (a name is resolved first, and its address checked as a literal's
    /// was: `probe::target_refusal`).
    Verify {
        device: String,
        requester_loopback: bool,
    },
    Emit(Event),
    Persist,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub responses: u64,
    pub dropped: u64,
    pub refused: u64,
    pub captures_started: u64,
    pub captures_stopped: u64,
    /// Requests about a device owned by another source (answered 403).
    pub forbidden: u64,
    /// Datagrams over the per-source rate (dropped unanswered).
    pub limited: u64,
    /// Requests without a valid MAC where --key-file requires one.
    pub unauthenticated: u64,
}

pub struct Core {
    cfg: Config,
    devices: BTreeMap<String, Device>,
    captures: BTreeMap<CaptureId, Capture>,
    next_id: CaptureId,
    pub counters: Counters,
    stopping: bool,
    rates: Rates,
    /// One bucket for every datagram whose sender is not proven (forged MACs, plain requests
    /// where a key is required): they may carry any allowed source, the owner's included, so
    /// they must not spend that source's bucket.
    unproven: Option<Bucket>,
    last_prune: Option<Instant>,
    verify_starts: Option<Bucket>,
    verifies_running: usize,
    disk: Disk,
    /// The wall clock as the shell last gave it (`set_wall`): it names new capture files, and
    /// the core never reads a clock itself.
    wall: Utc,
}

/// What survives a restart (written atomically to DIR/.tc/state.json).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Persisted {
    pub next_id: CaptureId,
    pub devices: Vec<PersistedDevice>,
    pub captures: Vec<PersistedCapture>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PersistedDevice {
    pub device: String,
    /// The owner's spelling (absent in the state of agents before it).
    #[serde(default)]
    pub name: Option<String>,
    pub registered: Option<SocketAddr>,
    pub rule_id: Option<u64>,
    pub last_stop: Option<StopResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PersistedCapture {
    pub id: CaptureId,
    pub device: String,
    pub base: String,
    pub pid: Option<u32>,
    /// `running` (tcpdump may still be alive) or `exited`.
    pub state: String,
    pub stats: Stats,
    pub reason: Option<String>,
}

/// How a persisted running capture was found on restart.
pub enum Found {
    /// Still our tcpdump (checked through /proc): keep running.
    Alive,
    /// Gone: close it out, files kept.
    Gone(Stats),
}

impl Core {
    pub fn new(cfg: Config) -> Core {
        Core {
            cfg,
            devices: BTreeMap::new(),
            captures: BTreeMap::new(),
            next_id: 1,
            counters: Counters::default(),
            stopping: false,
            rates: Rates::default(),
            unproven: None,
            last_prune: None,
            verify_starts: None,
            verifies_running: 0,
            disk: Disk::default(),
            wall: Utc::from_unix_micros(0),
        }
    }

    /// The wall clock now; the shell sets it before it hands the core a request.
    pub fn set_wall(&mut self, wall: Utc) {
        self.wall = wall;
    }

    /// What the shell last measured of DIR (free space, capture files).
    pub fn set_disk(&mut self, disk: Disk) {
        self.disk = disk;
    }

    /// The spelling of `key` in answers about it.
    fn name_of(&self, key: &str) -> String {
        self.devices
            .get(key)
            .map(|d| d.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| key.to_string())
    }

    fn reply(
        &mut self,
        out: &mut Vec<Action>,
        to: SocketAddr,
        code: u16,
        device: &str,
        verb: Verb,
        detail: Option<String>,
    ) {
        let r = Response::new(code, device, verb);
        self.counters.responses += 1;
        out.push(Action::Reply {
            to,
            text: r.to_wire(),
            interim: code == 100,
        });
        out.push(Action::Emit(Event::OvocResponse {
            device: device.into(),
            request: verb.as_str().into(),
            code,
            reason: r.reason,
            to: to.to_string(),
            detail,
        }));
    }

    fn allowed(&self, from: SocketAddr) -> bool {
        self.cfg.allow_any || self.cfg.allow.iter().any(|c| c.contains(from.ip()))
    }

    pub fn datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.allowed(from) {
            self.counters.refused += 1;
            log::info!("refused a datagram from {from}: not in --allow");
            return out;
        }
        if !self.admitted(now, from, &mut out) {
            return out;
        }
        let req = match proto::parse_request(data) {
            Ok(r) => r,
            Err(Reject::Drop(why)) => {
                self.counters.dropped += 1;
                log::info!(
                    "dropped a datagram from {from} ({} bytes): {why}",
                    data.len()
                );
                return out;
            }
            Err(Reject::BadRequest { verb, device, why }) => {
                self.counters.requests += 1;
                log::info!("bad {verb} from {from}: {why}");
                self.reply(&mut out, from, 400, &device, verb, Some(why));
                return out;
            }
        };
        // Room for a request's usual actions (its events, replies, a persist) at once: growing
        // the vector per request was most of musl's allocator calls in the agent's loop. Only
        // here: a refused or dropped datagram (a flood's) allocates nothing.
        out.reserve(8);
        self.request(now, from, req, out)
    }

    /// A plain request where `--key-file` requires a MAC: refused with 401, counted. (The
    /// source must still be allowed and within its rate.)
    pub fn unauthenticated(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        why: &str,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.allowed(from) {
            self.counters.refused += 1;
            return out;
        }
        if !self.admitted_unproven(now, from, &mut out) {
            return out;
        }
        self.counters.unauthenticated += 1;
        log::info!("unauthenticated request from {from}: {why}");
        if let Ok(req) = proto::parse_request(data) {
            self.counters.requests += 1;
            self.reply(&mut out, from, 401, &req.device, req.verb, Some(why.into()));
        }
        out
    }

    /// A datagram whose MAC does not check out: dropped unanswered (it may come from anyone
    /// who can spoof an allowed address), counted, logged.
    pub fn forged(&mut self, now: Instant, from: SocketAddr, why: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.allowed(from) {
            self.counters.refused += 1;
            return out;
        }
        if self.admitted_unproven(now, from, &mut out) {
            self.counters.unauthenticated += 1;
            log::info!("dropped a signed datagram from {from}: {why}");
        }
        out
    }

    /// Does `ip` own a device whose capture is not finished? Such a controller is never
    /// rate limited: a flood from other sources (or the table filling up) must not silence
    /// the one that has to STOP. (Without a key its address can be spoofed: the price of
    /// never locking the owner out.)
    /// (A capture is in the table until it is renamed: unfinished.) Asked only of a source
    /// over its rate, so a flood's cost per datagram stays a scan of at most the live captures.
    fn owns_a_capture(&self, ip: IpAddr) -> bool {
        self.captures.values().any(|c| c.owner == Some(ip))
    }

    /// The rate of datagrams whose sender is not proven, all sources together.
    fn admitted_unproven(&mut self, now: Instant, from: SocketAddr, out: &mut Vec<Action>) -> bool {
        let (rate, burst) = (self.cfg.limits.rate, self.cfg.limits.burst);
        let b = self.unproven.get_or_insert_with(|| Bucket::new(now, burst));
        match super::limits::admit_bucket(b, now, rate, burst) {
            Admit::Yes => true,
            Admit::No { first } => {
                self.counters.limited += 1;
                if first {
                    out.push(Action::Emit(Event::OvocLimited {
                        from: from.to_string(),
                        limit: format!(
                            "{rate} unauthenticated or forged datagrams per second from all \
                             sources together, burst {burst} (--rate-limit)"
                        ),
                    }));
                }
                false
            }
        }
    }

    /// The per-source rate: over it, datagrams are dropped unanswered (an answer would feed
    /// the flood), counted, and one `ovoc.limited` event says so each time a source passes it.
    fn admitted(&mut self, now: Instant, from: SocketAddr, out: &mut Vec<Action>) -> bool {
        let (rate, burst) = (self.cfg.limits.rate, self.cfg.limits.burst);
        if self
            .last_prune
            .is_none_or(|t| now.duration_since(t) >= super::limits::PRUNE_EVERY)
        {
            self.rates.prune(now, rate, burst);
            self.last_prune = Some(now);
        }
        let ip = canonical_ip(from.ip());
        match self.rates.admit(now, ip, rate, burst) {
            Admit::Yes => true,
            Admit::No { .. } if self.owns_a_capture(ip) => true,
            Admit::No { first } => {
                self.counters.limited += 1;
                if first {
                    out.push(Action::Emit(Event::OvocLimited {
                        from: from.to_string(),
                        limit: format!(
                            "{rate} requests per second per source, burst {burst} (--rate-limit)"
                        ),
                    }));
                }
                false
            }
        }
    }

    /// A parsed request from an allowed, admitted source.
    pub fn request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        req: Request,
        mut out: Vec<Action>,
    ) -> Vec<Action> {
        self.counters.requests += 1;
        out.push(Action::Emit(Event::OvocRequest {
            device: req.device.clone(),
            request: req.verb.as_str().into(),
            filename: req.filename.clone(),
            from: from.to_string(),
        }));
        if self.stopping {
            self.reply(
                &mut out,
                from,
                503,
                &req.device,
                req.verb,
                Some("agent is shutting down".into()),
            );
            return out;
        }
        let key = canonical_device(&req.device);
        if let Some(owner) = self.foreign(&key, from, req.verb) {
            self.counters.forbidden += 1;
            log::warn!(
                "{} {} from {from} refused: the device belongs to {owner}",
                req.verb,
                req.device
            );
            let why = format!("device {key} belongs to {owner}, whose capture is not finished");
            let why = if req.verb == Verb::Register {
                why
            } else {
                format!("device {key} belongs to {owner}")
            };
            self.reply(&mut out, from, 403, &req.device, req.verb, Some(why));
            return out;
        }
        if matches!(req.verb, Verb::Register | Verb::Capture) {
            out.push(Action::Reply {
                to: from,
                text: proto::tc_agent(&req.device, req.verb).to_wire(),
                interim: true,
            });
        }
        match req.verb {
            Verb::Register => self.register(now, from, &req, &key, &mut out),
            Verb::Capture => self.capture(now, from, &req, &key, &mut out),
            Verb::Verify => self.verify(now, from, &req, &key, &mut out),
            Verb::Stop => self.stop(now, from, &req, &key, &mut out),
        }
        out
    }

    /// The owner's address when `from` may not make this request about `key`: any request but
    /// REGISTER needs the owner's address; REGISTER from another address is refused only while
    /// the device has a capture that is not finished (before that, the original allowed it).
    fn foreign(&self, key: &str, from: SocketAddr, verb: Verb) -> Option<IpAddr> {
        let d = self.devices.get(key)?;
        let owner = canonical_ip(d.registered?.ip());
        if owner == canonical_ip(from.ip()) {
            return None;
        }
        (verb != Verb::Register || d.current.is_some()).then_some(owner)
    }

    fn register(
        &mut self,
        now: Instant,
        from: SocketAddr,
        req: &Request,
        key: &str,
        out: &mut Vec<Action>,
    ) {
        let ovoc_rules = self.cfg.ovoc_rules;
        if !self.devices.contains_key(key) {
            self.devices.insert(key.to_string(), Device::default());
        }
        let dev = self.devices.get_mut(key).expect("inserted above");
        dev.last_seen = Some(now);
        // A controller re-registers the same device from the same address over and over:
        // that changes nothing on disk, and encoding the whole state for it costs each time.
        let renamed = dev.name != req.device;
        let changed = renamed || dev.registered != Some(from);
        if renamed {
            dev.name = req.device.clone();
        }
        if !ovoc_rules {
            dev.registered = Some(from);
            self.reply(out, from, 200, &req.device, Verb::Register, None);
            if changed {
                out.push(Action::Persist);
            }
            return;
        }
        if !dev.rule_waiters.contains(&from) {
            dev.rule_waiters.push(from);
        }
        if dev.rule_dest_pending.is_none() {
            dev.rule_dest_pending = Some(from);
            out.push(Action::EnsureRule {
                device: key.to_string(),
                dest: from,
            });
        }
    }

    /// The owner's address while the device has an unfinished capture: then only that
    /// address (any port) may point the rule anywhere.
    fn guarded_owner(&self, device: &str) -> Option<SocketAddr> {
        let d = self.devices.get(device)?;
        d.current.and(d.registered)
    }

    /// The outcome of an EnsureRule.
    pub fn rule_done(
        &mut self,
        device: &str,
        dest: SocketAddr,
        result: Result<(u64, &'static str), String>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        // The owner's CAPTURE may have started while a stranger's REGISTER was in flight
        // (ownership was checked on arrival only): the stranger must not take the device now.
        let guard = self.guarded_owner(device);
        let owns =
            |a: &SocketAddr| guard.is_none_or(|o| canonical_ip(o.ip()) == canonical_ip(a.ip()));
        let Some(dev) = self.devices.get_mut(device) else {
            return out;
        };
        dev.rule_dest_pending = None;
        let waiters = std::mem::take(&mut dev.rule_waiters);
        let (strangers, waiters): (Vec<_>, Vec<_>) = waiters.into_iter().partition(|w| !owns(w));
        let (code, detail) = match &result {
            Ok((id, _)) => {
                dev.rule_id = Some(*id);
                if owns(&dest) {
                    dev.registered = Some(dest);
                }
                (200, None)
            }
            Err(e) => (503, Some(e.clone())),
        };
        out.push(Action::Emit(rule_event(device, dest, result)));
        self.refuse_strangers(&mut out, device, &strangers);
        // A requester other than the rule's destination arrived meanwhile: re-point the rule
        // at the newest one rather than answering 200 for a rule that points elsewhere. The
        // rule just pointed at a stranger goes back to the owner.
        let newest = waiters.last().copied().or(guard.filter(|_| !owns(&dest)));
        let name = self.name_of(device);
        for w in waiters.iter().filter(|w| code != 200 || **w == dest) {
            self.reply(&mut out, *w, code, &name, Verb::Register, detail.clone());
        }
        // A refused REGISTER leaves nothing behind that CAPTURE could use.
        let bare = self.devices.get(device).is_some_and(|d| {
            d.registered.is_none()
                && d.current.is_none()
                && d.last_stop.is_none()
                && d.rule_waiters.is_empty()
        });
        if code != 200 && bare {
            self.devices.remove(device);
        }
        if code == 200 {
            if let Some(n) = newest.filter(|n| *n != dest) {
                let dev = self.devices.get_mut(device).expect("present above");
                dev.rule_waiters = waiters.into_iter().filter(|w| *w != dest).collect();
                dev.rule_dest_pending = Some(n);
                out.push(Action::EnsureRule {
                    device: device.into(),
                    dest: n,
                });
            }
            out.push(Action::Persist);
        }
        out
    }

    /// REGISTERs that were waiting on a rule operation when the device's owner started a
    /// capture: answered as any other request about an owned device would be.
    fn refuse_strangers(&mut self, out: &mut Vec<Action>, device: &str, strangers: &[SocketAddr]) {
        let Some(owner) = self.guarded_owner(device) else {
            return;
        };
        let owner = canonical_ip(owner.ip());
        let name = self.name_of(device);
        for s in strangers {
            self.counters.forbidden += 1;
            log::warn!("REGISTER {name} from {s} refused: the device belongs to {owner}");
            let why = format!("device {device} belongs to {owner}, whose capture is not finished");
            self.reply(out, *s, 403, &name, Verb::Register, Some(why));
        }
    }

    pub fn rule_deleted(
        &mut self,
        device: &str,
        rule_id: u64,
        result: Result<(), String>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(dev) = self.devices.get_mut(device) {
            dev.rule_deleting = false;
            if result.is_ok() && dev.rule_id == Some(rule_id) {
                dev.rule_id = None;
                // `registered` is also the owner: an exited capture not yet renamed still
                // belongs to it, whatever became of the forwarding rule.
                if dev.current.is_none() {
                    dev.registered = None;
                }
            }
        }
        out.push(Action::Emit(Event::OvocRule {
            device: device.into(),
            action: if result.is_ok() {
                "deleted".into()
            } else {
                "delete_failed".into()
            },
            rule_id: Some(rule_id),
            dest: None,
            error: result.err(),
        }));
        out.push(Action::Persist);
        out
    }

    /// A device REGISTER made usable (or one with a capture to finish); else 404.
    fn known(
        &mut self,
        now: Instant,
        from: SocketAddr,
        req: &Request,
        key: &str,
        out: &mut Vec<Action>,
    ) -> bool {
        let usable = |d: &&mut Device| {
            d.registered.is_some() || d.current.is_some() || d.last_stop.is_some()
        };
        match self.devices.get_mut(key).filter(usable) {
            Some(d) => {
                d.last_seen = Some(now);
                // Answered as last spelled (only the owner gets here for a capture).
                d.name = req.device.clone();
                true
            }
            None => {
                self.reply(
                    out,
                    from,
                    404,
                    &req.device,
                    req.verb,
                    Some("unknown device: send REGISTER first".into()),
                );
                false
            }
        }
    }

    fn trying(&mut self, out: &mut Vec<Action>, to: SocketAddr, device: &str, verb: Verb) {
        self.reply(out, to, 100, device, verb, None);
    }

    fn capture(
        &mut self,
        now: Instant,
        from: SocketAddr,
        req: &Request,
        key: &str,
        out: &mut Vec<Action>,
    ) {
        if !self.known(now, from, req, key, out) {
            return;
        }
        self.trying(out, from, &req.device, Verb::Capture);
        if let Some(id) = self.devices[key].current {
            if self.capture_again(from, req, id, out) {
                return;
            }
        }
        if let Some(why) = self
            .cfg
            .limits
            .capture_refusal(self.live().len(), &self.disk)
        {
            log::warn!("CAPTURE {} from {from} refused: {why}", req.device);
            self.reply(out, from, 503, &req.device, Verb::Capture, Some(why));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let base = format!("tmp_device_{}_{}.pcap", key, self.wall.file_stamp());
        let owner = self.devices[key].registered.map(|o| canonical_ip(o.ip()));
        self.captures.insert(
            id,
            Capture {
                device: key.to_string(),
                owner,
                base: base.clone(),
                pid: None,
                phase: Phase::Starting {
                    waiters: vec![from],
                    deadline: now + self.cfg.start_timeout,
                },
            },
        );
        self.devices.get_mut(key).expect("known").current = Some(id);
        out.push(Action::Spawn {
            id,
            device: key.to_string(),
            base,
        });
    }

    /// CAPTURE for a device that has a capture: true when that answers it (a starting one is
    /// waited for, a running one confirmed, a stopping one refused); false when the old one is
    /// over and a new one may start (its files stay, under their tmp_ names).
    fn capture_again(
        &mut self,
        from: SocketAddr,
        req: &Request,
        id: CaptureId,
        out: &mut Vec<Action>,
    ) -> bool {
        let cap = self.captures.get_mut(&id).expect("current capture exists");
        let (code, why) = match &mut cap.phase {
            Phase::Starting { waiters, .. } => {
                if !waiters.contains(&from) {
                    waiters.push(from);
                }
                return true;
            }
            Phase::Running => (200, "already capturing"),
            Phase::Stopping { .. } | Phase::Renaming { .. } => {
                (503, "the previous capture is stopping")
            }
            Phase::Exited { .. } => return false,
        };
        self.reply(
            out,
            from,
            code,
            &req.device,
            Verb::Capture,
            Some(why.into()),
        );
        true
    }

    /// tcpdump was spawned with this pid (before it is known to capture). The spawn runs off
    /// the loop, so a STOP or a start timeout may have signalled it already: sent again now
    /// that there is a pid to send it to.
    pub fn spawned(&mut self, id: CaptureId, pid: u32) -> Vec<Action> {
        let Some(c) = self.captures.get_mut(&id) else {
            return Vec::new();
        };
        c.pid = Some(pid);
        match c.phase {
            Phase::Stopping { signalled, .. } if signalled > 0 => vec![Action::Signal {
                id,
                kill: signalled == 2,
            }],
            _ => Vec::new(),
        }
    }

    /// tcpdump said it is listening and its file exists.
    pub fn ready(&mut self, id: CaptureId, interface: &str, dir_file: &str) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(cap) = self.captures.get_mut(&id) else {
            return out;
        };
        let Phase::Starting { waiters, .. } = &mut cap.phase else {
            return out;
        };
        let waiters = std::mem::take(waiters);
        cap.phase = Phase::Running;
        let (device, pid) = (cap.device.clone(), cap.pid.unwrap_or(0));
        self.counters.captures_started += 1;
        let name = self.name_of(&device);
        out.push(Action::Emit(Event::OvocCaptureStarted {
            device: device.clone(),
            pid,
            file: dir_file.into(),
            interface: interface.into(),
        }));
        for w in waiters {
            self.reply(&mut out, w, 200, &name, Verb::Capture, None);
        }
        out.push(Action::Persist);
        out
    }

    /// tcpdump could not start (spawn error, exited early, no "listening" in time).
    pub fn failed(&mut self, id: CaptureId, error: &str) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(cap) = self.captures.remove(&id) else {
            return out;
        };
        if let Some(d) = self.devices.get_mut(&cap.device) {
            if d.current == Some(id) {
                d.current = None;
            }
        }
        let waiters = match cap.phase {
            Phase::Starting { waiters, .. } => waiters,
            Phase::Stopping { waiters, .. } => waiters,
            _ => Vec::new(),
        };
        let name = self.name_of(&cap.device);
        for w in waiters {
            self.reply(
                &mut out,
                w,
                503,
                &name,
                Verb::Capture,
                Some(error.to_string()),
            );
        }
        out
    }

    /// tcpdump exited (reaped child, or an adopted pid gone from /proc). `on_disk`: the
    /// complete packets in its files, counted when it could not write (then `why` says why).
    pub fn exited(
        &mut self,
        id: CaptureId,
        stats: Stats,
        why: &str,
        on_disk: Option<u64>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(cap) = self.captures.get_mut(&id) else {
            return out;
        };
        match std::mem::replace(&mut cap.phase, Phase::Running) {
            starting @ Phase::Starting { .. } => {
                cap.phase = starting;
                return self.failed(id, why);
            }
            Phase::Stopping {
                filename: Some(filename),
                waiters,
                ..
            } => {
                let target = proto::ovoc_base(&filename);
                out.push(Action::Rename {
                    id,
                    base: cap.base.clone(),
                    target,
                });
                cap.phase = Phase::Renaming {
                    filename,
                    waiters,
                    stats,
                    ended: None,
                };
            }
            Phase::Running | Phase::Stopping { filename: None, .. } => {
                let reason = if self.stopping && on_disk.is_none() {
                    "agent shutdown".to_string()
                } else {
                    why.to_string()
                };
                out.push(Action::Emit(Event::OvocCaptureEnded {
                    device: cap.device.clone(),
                    reason: reason.clone(),
                    files: vec![cap.base.clone()],
                    packets_captured: stats.captured,
                    packets_dropped_kernel: stats.dropped_kernel,
                    packets_on_disk: on_disk,
                }));
                // What the files hold goes with the reason, for the STOP that renames them.
                let reason = match on_disk {
                    Some(n) => format!("{reason} ({n} packets on disk)"),
                    None => reason,
                };
                cap.phase = Phase::Exited { stats, reason };
                out.push(Action::Persist);
            }
            other => cap.phase = other,
        }
        out
    }

    /// The rename of a stopped capture's files finished.
    pub fn renamed(&mut self, id: CaptureId, result: Result<Vec<String>, String>) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(cap) = self.captures.get(&id).cloned() else {
            return out;
        };
        let Phase::Renaming {
            filename,
            waiters,
            stats,
            ended,
        } = cap.phase
        else {
            return out;
        };
        match result {
            Ok(files) => {
                self.captures.remove(&id);
                self.counters.captures_stopped += 1;
                let res = StopResult {
                    filename: filename.clone(),
                    files: files.clone(),
                    stats: stats.clone(),
                    ended: ended.clone(),
                };
                if let Some(d) = self.devices.get_mut(&cap.device) {
                    d.last_stop = Some(res.clone());
                    if d.current == Some(id) {
                        d.current = None;
                    }
                }
                out.push(Action::Emit(Event::OvocCaptureStopped {
                    device: cap.device.clone(),
                    filename,
                    files,
                    packets_captured: stats.captured,
                    packets_received: stats.received,
                    packets_dropped_kernel: stats.dropped_kernel,
                    complete: stats.complete() && ended.is_none(),
                }));
                let name = self.name_of(&cap.device);
                for w in waiters {
                    self.stopped_reply(&mut out, w, &name, &res, None);
                }
            }
            Err(e) => {
                // Files stay under their tmp_ names; a later STOP tries again.
                if let Some(c) = self.captures.get_mut(&id) {
                    c.phase = Phase::Exited {
                        stats,
                        reason: ended.unwrap_or_else(|| format!("{RENAME_FAILED}: {e}")),
                    };
                }
                let name = self.name_of(&cap.device);
                for w in waiters {
                    self.reply(&mut out, w, 503, &name, Verb::Stop, Some(e.clone()));
                }
            }
        }
        out.push(Action::Persist);
        out
    }

    /// The final answer to a STOP that renamed the files, preceded by `199` when the capture
    /// is incomplete (drops, or it ended before the STOP), so that a `tc` session can flag it.
    fn stopped_reply(
        &mut self,
        out: &mut Vec<Action>,
        to: SocketAddr,
        device: &str,
        res: &StopResult,
        detail: Option<String>,
    ) {
        // An early end loses what came after it: how many packets, nobody knows.
        if res.ended.is_some() || !res.stats.complete() {
            let dropped = res.stats.dropped_kernel.filter(|_| res.ended.is_none());
            out.push(Action::Reply {
                to,
                text: proto::incomplete(device, dropped).to_wire(),
                interim: false,
            });
        }
        let detail = match (&res.ended, detail) {
            (Some(e), Some(d)) => Some(format!("{d}; capture ended before STOP: {e}")),
            (Some(e), None) => Some(format!("capture ended before STOP: {e}")),
            (None, d) => d,
        };
        self.reply(out, to, 200, device, Verb::Stop, detail);
    }

    /// SIGTERM after the flush wait (at once when there is nothing to flush).
    fn stopping(
        &self,
        now: Instant,
        filename: Option<String>,
        waiters: Vec<SocketAddr>,
        flush: bool,
    ) -> Phase {
        let flush = if flush {
            self.cfg.stop_flush
        } else {
            Duration::ZERO
        };
        Phase::Stopping {
            filename,
            waiters,
            term_at: now + flush,
            kill_at: now + flush + self.cfg.stop_grace,
            signalled: 0,
        }
    }

    /// STOP for a device without a capture: the last STOP's result again (idempotent), or 404.
    fn stop_again(&mut self, from: SocketAddr, req: &Request, key: &str, out: &mut Vec<Action>) {
        match self.devices[key].last_stop.clone() {
            Some(last) => {
                let again = Some("already stopped".into());
                self.stopped_reply(out, from, &req.device, &last, again)
            }
            None => {
                let why = Some("no capture for this device".into());
                self.reply(out, from, 404, &req.device, Verb::Stop, why)
            }
        }
    }

    fn stop(
        &mut self,
        now: Instant,
        from: SocketAddr,
        req: &Request,
        key: &str,
        out: &mut Vec<Action>,
    ) {
        if !self.known(now, from, req, key, out) {
            return;
        }
        self.trying(out, from, &req.device, Verb::Stop);
        let filename = req.filename.clone().unwrap_or_default();
        let Some(id) = self.devices[key].current else {
            self.stop_again(from, req, key, out);
            return;
        };
        let phase = self.captures[&id].phase.clone();
        match phase {
            Phase::Starting { waiters, .. } => {
                // Stopped before it started: nothing to flush; CAPTURE waiters learn it failed.
                let p = self.stopping(now, Some(filename), vec![from], false);
                self.captures.get_mut(&id).expect("current").phase = p;
                for w in waiters {
                    self.reply(
                        out,
                        w,
                        503,
                        &req.device,
                        Verb::Capture,
                        Some("stopped before it started".into()),
                    );
                }
            }
            Phase::Running => {
                let p = self.stopping(now, Some(filename), vec![from], true);
                self.captures.get_mut(&id).expect("current").phase = p;
            }
            Phase::Stopping { .. } | Phase::Renaming { .. } => {
                let cap = self.captures.get_mut(&id).expect("current");
                if let Phase::Stopping { waiters, .. } | Phase::Renaming { waiters, .. } =
                    &mut cap.phase
                {
                    if !waiters.contains(&from) {
                        waiters.push(from);
                    }
                }
            }
            Phase::Exited { stats, reason } => {
                let cap = self.captures.get_mut(&id).expect("current");
                out.push(Action::Rename {
                    id,
                    base: cap.base.clone(),
                    target: proto::ovoc_base(&filename),
                });
                cap.phase = Phase::Renaming {
                    filename,
                    waiters: vec![from],
                    stats,
                    ended: ended_before_stop(reason),
                };
            }
        }
        // A flush of zero signals now rather than on the next tick.
        out.extend(self.signals_due(now, id));
    }

    /// VERIFY makes the agent (root) send probes: only for a device its owner captures (the
    /// ownership check came first), never to an address that is not one device, and at most
    /// `max_verifies` runs at once and `verify_rate` new runs per second.
    fn verify(
        &mut self,
        now: Instant,
        from: SocketAddr,
        req: &Request,
        key: &str,
        out: &mut Vec<Action>,
    ) {
        if !self.known(now, from, req, key, out) {
            return;
        }
        let capturing = self.devices[key].current.is_some_and(|id| {
            self.captures
                .get(&id)
                .is_some_and(|c| matches!(c.phase, Phase::Running | Phase::Starting { .. }))
        });
        if !capturing {
            let why = "no capture running for this device: VERIFY needs CAPTURE first".into();
            self.reply(out, from, 404, &req.device, Verb::Verify, Some(why));
            return;
        }
        let loopback = canonical_ip(from.ip()).is_loopback();
        let target = key.parse::<IpAddr>().ok();
        if let Some(why) = target.and_then(|ip| {
            crate::probe::target_refusal(ip, loopback, &self.cfg.own, &self.cfg.broadcast)
        }) {
            log::warn!("VERIFY {} from {from} refused: {why}", req.device);
            self.reply(out, from, 400, &req.device, Verb::Verify, Some(why));
            return;
        }
        self.trying(out, from, &req.device, Verb::Verify);
        if self.devices[key].verify_waiters.is_empty() {
            if let Some(why) = self.verify_refusal(now) {
                log::warn!("VERIFY {} from {from} refused: {why}", req.device);
                self.reply(out, from, 503, &req.device, Verb::Verify, Some(why));
                return;
            }
            self.verifies_running += 1;
            out.push(Action::Verify {
                device: key.to_string(),
                requester_loopback: loopback,
            });
        }
        let dev = self.devices.get_mut(key).expect("known");
        if !dev.verify_waiters.contains(&from) {
            dev.verify_waiters.push(from);
        }
    }

    /// Why no probe run may start now, if so (the bucket is taken from when it may).
    fn verify_refusal(&mut self, now: Instant) -> Option<String> {
        let l = &self.cfg.limits;
        if self.verifies_running >= l.max_verifies {
            return Some(format!(
                "limit: {} VERIFY probe runs at once (--max-verifies {})",
                self.verifies_running, l.max_verifies
            ));
        }
        let (rate, burst) = (l.verify_rate, l.max_verifies as u32);
        let bucket = self
            .verify_starts
            .get_or_insert_with(|| super::limits::verify_bucket(now, l));
        (!bucket.take(now, rate, burst))
            .then(|| format!("limit: {rate} VERIFY probe runs per second (--verify-rate {rate})"))
    }

    pub fn verified(&mut self, device: &str, report: ProbeReport) -> Vec<Action> {
        self.verifies_running = self.verifies_running.saturating_sub(1);
        let mut out = Vec::new();
        let waiters = self
            .devices
            .get_mut(device)
            .map(|d| std::mem::take(&mut d.verify_waiters))
            .unwrap_or_default();
        let ok = report.ok();
        out.push(Action::Emit(Event::OvocVerify {
            device: device.into(),
            ok,
            probes: report,
        }));
        let name = self.name_of(device);
        for w in waiters {
            let code = if ok { 200 } else { 430 };
            self.reply(&mut out, w, code, &name, Verb::Verify, None);
        }
        out
    }

    /// A VERIFY of a name that resolved to an address it may not probe (see `verify`).
    pub fn verify_refused(&mut self, device: &str, why: &str) -> Vec<Action> {
        self.verifies_running = self.verifies_running.saturating_sub(1);
        let mut out = Vec::new();
        let waiters = self
            .devices
            .get_mut(device)
            .map(|d| std::mem::take(&mut d.verify_waiters))
            .unwrap_or_default();
        let name = self.name_of(device);
        for w in waiters {
            self.reply(&mut out, w, 400, &name, Verb::Verify, Some(why.into()));
        }
        out
    }

    /// SIGTERM once the flush wait is over, SIGKILL once the grace after it is.
    fn signals_due(&mut self, now: Instant, id: CaptureId) -> Vec<Action> {
        let Some(Capture {
            phase:
                Phase::Stopping {
                    term_at,
                    kill_at,
                    signalled,
                    ..
                },
            ..
        }) = self.captures.get_mut(&id)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if *signalled == 0 && *term_at <= now {
            *signalled = 1;
            out.push(Action::Signal { id, kill: false });
        }
        if *signalled == 1 && *kill_at <= now {
            *signalled = 2;
            out.push(Action::Signal { id, kill: true });
        }
        out
    }

    /// Timers: start timeouts, SIGTERM after the flush, SIGKILL after the grace, idle rules.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let ids: Vec<CaptureId> = self.captures.keys().copied().collect();
        for id in ids {
            let cap = self.captures.get_mut(&id).expect("listed");
            match &mut cap.phase {
                Phase::Starting { deadline, .. } if *deadline <= now => {
                    out.push(Action::Signal { id, kill: true });
                    let secs = self.cfg.start_timeout.as_secs_f64();
                    out.extend(self.failed(
                        id,
                        &format!("tcpdump did not report capturing within {secs} s"),
                    ));
                }
                Phase::Stopping { .. } => out.extend(self.signals_due(now, id)),
                _ => {}
            }
        }
        if self.cfg.ovoc_rules && !self.stopping {
            let idle = self.cfg.rule_idle;
            for (name, d) in self.devices.iter_mut() {
                let capturing = d.current.is_some_and(|id| {
                    self.captures
                        .get(&id)
                        .is_some_and(|c| !matches!(c.phase, Phase::Exited { .. }))
                });
                let idle_for_long = d.last_seen.is_some_and(|t| now.duration_since(t) >= idle);
                if let (Some(rule_id), false, true, false) =
                    (d.rule_id, capturing, idle_for_long, d.rule_deleting)
                {
                    d.rule_deleting = true;
                    out.push(Action::DeleteRule {
                        device: name.clone(),
                        rule_id,
                    });
                }
            }
        }
        out
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let caps = self.captures.values().filter_map(|c| match &c.phase {
            Phase::Starting { deadline, .. } => Some(*deadline),
            Phase::Stopping {
                term_at,
                signalled: 0,
                ..
            } => Some(*term_at),
            Phase::Stopping {
                kill_at,
                signalled: 1,
                ..
            } => Some(*kill_at),
            _ => None,
        });
        let rules = self
            .devices
            .values()
            .filter(|d| self.cfg.ovoc_rules && d.rule_id.is_some() && !d.rule_deleting)
            .filter_map(|d| d.last_seen.map(|t| t + self.cfg.rule_idle));
        caps.chain(rules).min()
    }

    /// SIGINT/SIGTERM: stop every tcpdump (after the flush wait); the shell exits once `live()`
    /// is empty. The files keep their tmp_ names until a STOP renames them.
    pub fn shutdown(&mut self, now: Instant) -> Vec<Action> {
        self.stopping = true;
        let mut out = Vec::new();
        let ids: Vec<CaptureId> = self.captures.keys().copied().collect();
        for id in ids {
            let (device, phase) = {
                let c = &self.captures[&id];
                (c.device.clone(), c.phase.clone())
            };
            let next = match phase {
                Phase::Starting { waiters, .. } => {
                    for w in waiters {
                        let r = Response::new(503, &device, Verb::Capture);
                        out.push(Action::Reply {
                            to: w,
                            text: r.to_wire(),
                            interim: false,
                        });
                    }
                    self.stopping(now, None, Vec::new(), false)
                }
                Phase::Running => self.stopping(now, None, Vec::new(), true),
                _ => continue,
            };
            self.captures.get_mut(&id).expect("listed").phase = next;
            out.extend(self.signals_due(now, id));
        }
        out
    }

    /// Captures whose tcpdump may still be running (the shell waits for these on shutdown).
    pub fn live(&self) -> Vec<CaptureId> {
        self.captures
            .iter()
            .filter(|(_, c)| {
                matches!(
                    c.phase,
                    Phase::Running | Phase::Starting { .. } | Phase::Stopping { .. }
                )
            })
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn base_of(&self, id: CaptureId) -> Option<(&str, &str, Option<u32>)> {
        self.captures
            .get(&id)
            .map(|c| (c.device.as_str(), c.base.as_str(), c.pid))
    }

    /// Captures whose tcpdump should be writing (not starting, not stopping).
    pub fn running(&self) -> Vec<CaptureId> {
        self.captures
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Running))
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn starting(&self) -> Vec<CaptureId> {
        self.captures
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Starting { .. }))
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn persisted(&self) -> Persisted {
        Persisted {
            next_id: self.next_id,
            devices: self
                .devices
                .iter()
                .map(|(key, d)| PersistedDevice {
                    device: key.clone(),
                    name: Some(d.name.clone()).filter(|n| !n.is_empty() && n != key),
                    registered: d.registered,
                    rule_id: d.rule_id,
                    last_stop: d.last_stop.clone(),
                })
                .collect(),
            captures: self
                .captures
                .iter()
                .map(|(id, c)| {
                    let (state, stats, reason) = match &c.phase {
                        Phase::Exited { stats, reason } => {
                            ("exited", stats.clone(), Some(reason.clone()))
                        }
                        Phase::Renaming { stats, ended, .. } => (
                            "exited",
                            stats.clone(),
                            Some(ended.clone().unwrap_or(RENAMING.into())),
                        ),
                        _ => ("running", Stats::default(), None),
                    };
                    PersistedCapture {
                        id: *id,
                        device: c.device.clone(),
                        base: c.base.clone(),
                        pid: c.pid,
                        state: state.into(),
                        stats,
                        reason,
                    }
                })
                .collect(),
        }
    }

    /// Rebuild from disk. `check` says whether a persisted running tcpdump is still alive.
    pub fn restore(
        &mut self,
        p: Persisted,
        now: Instant,
        mut check: impl FnMut(&PersistedCapture) -> Found,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        self.next_id = p.next_id.max(1);
        for d in p.devices {
            // Keys of an older agent's state may be spelled as the requester did.
            let key = canonical_device(&d.device);
            self.devices.insert(
                key,
                Device {
                    name: d.name.unwrap_or(d.device),
                    registered: d.registered,
                    rule_id: d.rule_id,
                    last_stop: d.last_stop,
                    last_seen: Some(now),
                    ..Device::default()
                },
            );
        }
        for c in p.captures {
            self.next_id = self.next_id.max(c.id + 1);
            let phase = match (c.state.as_str(), check(&c)) {
                ("running", Found::Alive) => {
                    out.push(Action::Emit(Event::OvocCaptureAdopted {
                        device: c.device.clone(),
                        pid: c.pid.unwrap_or(0),
                        file: c.base.clone(),
                    }));
                    Phase::Running
                }
                ("running", Found::Gone(stats)) => {
                    out.push(Action::Emit(Event::OvocCaptureEnded {
                        device: c.device.clone(),
                        reason: "tcpdump gone when the agent restarted".into(),
                        files: vec![c.base.clone()],
                        packets_captured: stats.captured,
                        packets_dropped_kernel: stats.dropped_kernel,
                        packets_on_disk: None,
                    }));
                    Phase::Exited {
                        stats,
                        reason: "tcpdump gone when the agent restarted".into(),
                    }
                }
                _ => Phase::Exited {
                    stats: c.stats.clone(),
                    reason: c.reason.clone().unwrap_or_default(),
                },
            };
            let key = canonical_device(&c.device);
            let dev = self.devices.entry(key.clone()).or_default();
            dev.current = Some(c.id);
            let owner = dev.registered.map(|o| canonical_ip(o.ip()));
            self.captures.insert(
                c.id,
                Capture {
                    device: key,
                    owner,
                    base: c.base,
                    pid: c.pid,
                    phase,
                },
            );
        }
        out.push(Action::Persist);
        out
    }

    /// (adopted running, closed out) counts after `restore`.
    pub fn restored_counts(&self) -> (u32, u32) {
        let running = self
            .captures
            .values()
            .filter(|c| matches!(c.phase, Phase::Running))
            .count() as u32;
        let exited = self
            .captures
            .values()
            .filter(|c| matches!(c.phase, Phase::Exited { .. }))
            .count() as u32;
        (running, exited)
    }
}

/// The `ovoc.rule` event for an EnsureRule's outcome.
fn rule_event(
    device: &str,
    dest: SocketAddr,
    result: Result<(u64, &'static str), String>,
) -> Event {
    match result {
        Ok((id, action)) => Event::OvocRule {
            device: device.into(),
            action: action.into(),
            rule_id: Some(id),
            dest: Some(dest.to_string()),
            error: None,
        },
        Err(e) => Event::OvocRule {
            device: device.into(),
            action: "failed".into(),
            rule_id: None,
            dest: Some(dest.to_string()),
            error: Some(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ovoc_rules: bool) -> Config {
        Config {
            allow: vec![Cidr::parse("127.0.0.0/8").unwrap()],
            allow_any: false,
            ovoc_rules,
            rule_idle: Duration::from_secs(7200),
            start_timeout: Duration::from_secs(5),
            stop_grace: Duration::from_secs(5),
            // Most tests look at the order of things, not at the flush wait (its own test).
            stop_flush: Duration::ZERO,
            limits: Limits {
                rate: 1_000_000,
                burst: 1_000_000,
                ..Limits::defaults()
            },
            own: vec!["192.0.2.100".parse().unwrap()],
            broadcast: vec!["192.0.2.255".parse().unwrap()],
        }
    }

    fn ctl() -> SocketAddr {
        "127.0.0.1:20001".parse().unwrap()
    }

    /// The answers sent, but for the `101 tc Agent` marker (its own test).
    fn replies(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply { text, .. } if !text.starts_with("101 ") => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn register_and_capture_say_first_that_this_is_a_tc_agent() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        let first = |a: &[Action]| {
            a.iter().find_map(|x| match x {
                Action::Reply { text, interim, .. } => Some((text.clone(), *interim)),
                _ => None,
            })
        };
        let a = c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        assert_eq!(
            first(&a),
            Some(("101 tc Agent 10.0.0.1 REGISTER".into(), true))
        );
        let a = c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1");
        assert_eq!(
            first(&a),
            Some(("101 tc Agent 10.0.0.1 CAPTURE".into(), true))
        );
        for req in [&b"VERIFY 10.0.0.1"[..], b"STOP 10.0.0.1 CPE_a.pcap"] {
            let a = c.datagram(t0, ctl(), req);
            assert!(
                !replies_all(&a).iter().any(|r| r.starts_with("101 ")),
                "{a:?}"
            );
        }
    }

    fn replies_all(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    fn spawned(actions: &[Action]) -> Option<CaptureId> {
        actions.iter().find_map(|a| {
            if let Action::Spawn { id, .. } = a {
                Some(*id)
            } else {
                None
            }
        })
    }

    #[test]
    fn full_cycle_with_rules() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(true));
        let a = c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        assert!(replies(&a).is_empty());
        assert!(a.contains(&Action::EnsureRule {
            device: "10.0.0.1".into(),
            dest: ctl()
        }));
        let a = c.rule_done("10.0.0.1", ctl(), Ok((7, "created")));
        assert_eq!(replies(&a), ["200 OK 10.0.0.1 REGISTER"]);

        let a = c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1");
        assert_eq!(replies(&a), ["100 Trying 10.0.0.1 CAPTURE"]);
        let id = spawned(&a).unwrap();
        c.spawned(id, 4242);
        // A retransmitted CAPTURE while starting waits for the same tcpdump.
        let a = c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1");
        assert_eq!(replies(&a), ["100 Trying 10.0.0.1 CAPTURE"]);
        assert!(spawned(&a).is_none());
        let a = c.ready(id, "lo", "/d/tmp_x");
        assert_eq!(
            replies(&a),
            ["200 OK 10.0.0.1 CAPTURE"],
            "one 200 per requester address"
        );
        let a = c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1");
        assert_eq!(
            replies(&a),
            ["100 Trying 10.0.0.1 CAPTURE", "200 OK 10.0.0.1 CAPTURE"]
        );

        let a = c.datagram(t0, ctl(), b"VERIFY 10.0.0.1");
        assert!(a.contains(&Action::Verify {
            device: "10.0.0.1".into(),
            requester_loopback: true
        }));
        let bad = ProbeReport {
            tcp: Some(crate::event::ProbeCounts {
                sent: 3,
                answered: 0,
                error: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            replies(&c.verified("10.0.0.1", bad)),
            ["430 Flow Failed 10.0.0.1 VERIFY"]
        );

        let a = c.datagram(t0, ctl(), b"STOP 10.0.0.1 CPE_device_10.0.0.1_X.pcap");
        assert_eq!(replies(&a), ["100 Trying 10.0.0.1 STOP"]);
        assert!(a.contains(&Action::Signal { id, kill: false }));
        let a = c.exited(
            id,
            Stats {
                captured: Some(5),
                received: Some(5),
                dropped_kernel: Some(0),
            },
            "exit 0",
            None,
        );
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::Rename { target, .. } if target == "device_10.0.0.1_X")));
        let a = c.renamed(id, Ok(vec!["OVOC_device_10.0.0.1_X-0.pcap".into()]));
        assert_eq!(replies(&a), ["200 OK 10.0.0.1 STOP"]);
        // Idempotent: the same STOP again answers 200, twice.
        for _ in 0..2 {
            let a = c.datagram(t0, ctl(), b"STOP 10.0.0.1 CPE_device_10.0.0.1_X.pcap");
            assert_eq!(
                replies(&a),
                ["100 Trying 10.0.0.1 STOP", "200 OK 10.0.0.1 STOP"]
            );
        }
    }

    #[test]
    fn unknown_devices_bad_input_and_sources() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        for verb in ["CAPTURE", "VERIFY"] {
            let a = c.datagram(t0, ctl(), format!("{verb} 10.9.9.9").as_bytes());
            assert_eq!(replies(&a), [format!("404 Not Found 10.9.9.9 {verb}")]);
        }
        let a = c.datagram(t0, ctl(), b"STOP 10.9.9.9 CPE_a.pcap");
        assert_eq!(replies(&a), ["404 Not Found 10.9.9.9 STOP"]);
        assert_eq!(
            replies(&c.datagram(t0, ctl(), b"CAPTURE x$(id)")),
            ["400 Bad Request x$(id) CAPTURE"]
        );
        assert_eq!(
            replies(&c.datagram(t0, ctl(), b"STOP 10.0.0.1 ../../etc/passwd")),
            ["400 Bad Request 10.0.0.1 STOP"]
        );
        assert!(c.datagram(t0, ctl(), &[0u8; 70_000]).is_empty());
        assert!(c.datagram(t0, ctl(), b"\xff\xfe").is_empty());
        assert!(c
            .datagram(t0, "192.0.2.1:20001".parse().unwrap(), b"REGISTER 10.0.0.1")
            .is_empty());
        assert_eq!(c.counters.dropped, 2);
        assert_eq!(c.counters.refused, 1);
        // Without rules REGISTER is answered at once.
        assert_eq!(
            replies(&c.datagram(t0, ctl(), b"REGISTER 10.0.0.1")),
            ["200 OK 10.0.0.1 REGISTER"]
        );
        // Known device, no capture yet: STOP is 404, not a crash.
        assert_eq!(
            replies(&c.datagram(t0, ctl(), b"STOP 10.0.0.1 CPE_a.pcap")),
            ["100 Trying 10.0.0.1 STOP", "404 Not Found 10.0.0.1 STOP"]
        );
    }

    /// Without rules, a REGISTER saves the state only when it changes what is saved: a new
    /// device, another source address, another name for the device.
    #[test]
    fn a_repeated_register_persists_only_what_changed() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        let other: SocketAddr = "127.0.0.2:20001".parse().unwrap();
        for (from, text, persists) in [
            (ctl(), "REGISTER 10.0.0.1", true),
            (ctl(), "REGISTER 10.0.0.1", false),
            (other, "REGISTER 10.0.0.1", true),
            (other, "REGISTER 10.0.0.1", false),
            (ctl(), "REGISTER 10.0.0.2", true),
        ] {
            let a = c.datagram(t0, from, text.as_bytes());
            assert_eq!(replies(&a).len(), 1, "{text} from {from}");
            assert_eq!(a.contains(&Action::Persist), persists, "{text} from {from}");
        }
        assert_eq!(c.persisted().devices.len(), 2);
        assert_eq!(c.persisted().devices[0].registered, Some(other));
    }

    #[test]
    fn tcpdump_that_dies_on_start_gives_503_with_its_error() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1")).unwrap();
        let a = c.exited(
            id,
            Stats::default(),
            "tcpdump: eth9: No such device exists",
            None,
        );
        assert_eq!(replies(&a), ["503 Service Unavailable 10.0.0.1 CAPTURE"]);
        assert!(a.iter().any(|x| matches!(x, Action::Emit(Event::OvocResponse { detail: Some(d), .. }) if d.contains("No such device"))));
        // And a start that never reports "listening" times out into 503 plus SIGKILL.
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1")).unwrap();
        assert!(c.tick(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_secs(5)));
        let a = c.tick(t0 + Duration::from_secs(5));
        assert!(a.contains(&Action::Signal { id, kill: true }));
        assert_eq!(replies(&a), ["503 Service Unavailable 10.0.0.1 CAPTURE"]);
    }

    #[test]
    fn stop_escalates_to_sigkill_after_grace() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1")).unwrap();
        c.ready(id, "lo", "f");
        c.datagram(t0, ctl(), b"STOP 10.0.0.1 CPE_a.pcap");
        assert!(c.tick(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(
            c.tick(t0 + Duration::from_secs(5)),
            vec![Action::Signal { id, kill: true }]
        );
        assert!(
            c.tick(t0 + Duration::from_secs(6)).is_empty(),
            "SIGKILL once"
        );
    }

    #[test]
    fn stop_waits_for_tcpdump_to_flush_then_flags_an_incomplete_capture() {
        let s = Duration::from_millis;
        let t0 = Instant::now();
        let mut c = Core::new(Config {
            stop_flush: s(1500),
            ..cfg(false)
        });
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1")).unwrap();
        c.ready(id, "lo", "f");
        let a = c.datagram(t0, ctl(), b"STOP 10.0.0.1 CPE_a.pcap");
        assert_eq!(replies(&a), ["100 Trying 10.0.0.1 STOP"]);
        assert!(!a.iter().any(|x| matches!(x, Action::Signal { .. })));
        // (time in ms, the signal the tick sends)
        let table: &[(u64, Option<bool>)] = &[
            (1499, None),
            (1500, Some(false)), // SIGTERM once the flush is over
            (3000, None),
            (6500, Some(true)), // SIGKILL after the 5 s grace
            (9000, None),
        ];
        for &(at, want) in table {
            let got: Vec<bool> = c
                .tick(t0 + s(at))
                .iter()
                .filter_map(|x| match x {
                    Action::Signal { kill, .. } => Some(*kill),
                    _ => None,
                })
                .collect();
            assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "at {at} ms");
        }
        let dropped = Stats {
            captured: Some(40),
            received: Some(52),
            dropped_kernel: Some(12),
        };
        c.exited(id, dropped, "signal", None);
        let a = c.renamed(id, Ok(vec!["OVOC_a-0.pcap".into()]));
        assert_eq!(
            replies(&a),
            [
                "199 Dropped 12 Packets 10.0.0.1 STOP",
                "200 OK 10.0.0.1 STOP"
            ]
        );
        assert!(a.iter().any(|x| matches!(
            x,
            Action::Emit(Event::OvocCaptureStopped {
                complete: false,
                packets_dropped_kernel: Some(12),
                ..
            })
        )));
        // A repeated STOP says the same again.
        let a = c.datagram(t0 + s(9000), ctl(), b"STOP 10.0.0.1 CPE_a.pcap");
        assert_eq!(
            replies(&a),
            [
                "100 Trying 10.0.0.1 STOP",
                "199 Dropped 12 Packets 10.0.0.1 STOP",
                "200 OK 10.0.0.1 STOP"
            ]
        );
    }

    #[test]
    fn shutdown_flushes_before_sigterm() {
        let t0 = Instant::now();
        let mut c = Core::new(Config {
            stop_flush: Duration::from_millis(1500),
            ..cfg(false)
        });
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1")).unwrap();
        c.ready(id, "lo", "f");
        assert!(c.shutdown(t0).is_empty());
        assert_eq!(c.live(), vec![id]);
        assert_eq!(
            c.tick(t0 + Duration::from_millis(1500)),
            vec![Action::Signal { id, kill: false }]
        );
    }

    #[test]
    fn idle_rules_are_deleted_by_the_timer_but_not_while_capturing() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(true));
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        c.rule_done("10.0.0.1", ctl(), Ok((7, "created")));
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.2");
        c.rule_done("10.0.0.2", ctl(), Ok((8, "created")));
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 10.0.0.2")).unwrap();
        c.ready(id, "lo", "f");
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_secs(7200)));
        let a = c.tick(t0 + Duration::from_secs(7200));
        assert_eq!(
            a,
            vec![Action::DeleteRule {
                device: "10.0.0.1".into(),
                rule_id: 7
            }]
        );
        assert!(
            c.tick(t0 + Duration::from_secs(7300)).is_empty(),
            "one delete in flight"
        );
        c.rule_deleted("10.0.0.1", 7, Ok(()));
        assert!(c.tick(t0 + Duration::from_secs(9000)).is_empty());
    }

    #[test]
    fn register_from_a_new_source_repoints_the_rule() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(true));
        let other: SocketAddr = "127.0.0.2:30000".parse().unwrap();
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        let a = c.datagram(t0, other, b"REGISTER 10.0.0.1");
        assert!(
            replies(&a).is_empty(),
            "waits for the rule operation in flight"
        );
        let a = c.rule_done("10.0.0.1", ctl(), Ok((7, "created")));
        assert_eq!(replies(&a), ["200 OK 10.0.0.1 REGISTER"]);
        assert!(a.contains(&Action::EnsureRule {
            device: "10.0.0.1".into(),
            dest: other
        }));
        let a = c.rule_done("10.0.0.1", other, Ok((7, "updated")));
        assert_eq!(
            a.iter()
                .filter(|x| matches!(x, Action::Reply { to, .. } if *to == other))
                .count(),
            1
        );
        // An OVOC failure is a 503, never a crash.
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        assert_eq!(
            replies(&c.rule_done("10.0.0.1", ctl(), Err("HTTP 500".into()))),
            ["503 Service Unavailable 10.0.0.1 REGISTER"]
        );
    }

    #[test]
    fn shutdown_then_restart_closes_out_and_a_later_stop_renames() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1")).unwrap();
        c.spawned(id, 99);
        c.ready(id, "lo", "f");
        assert_eq!(c.shutdown(t0), vec![Action::Signal { id, kill: false }]);
        assert_eq!(c.live(), vec![id]);
        c.exited(
            id,
            Stats {
                captured: Some(3),
                received: Some(3),
                dropped_kernel: Some(0),
            },
            "signal",
            None,
        );
        assert!(c.live().is_empty());
        let saved = c.persisted();
        assert_eq!(saved.captures[0].state, "exited");

        let mut c2 = Core::new(cfg(false));
        c2.restore(saved, t0, |_| Found::Alive);
        assert_eq!(c2.restored_counts(), (0, 1));
        let a = c2.datagram(t0, ctl(), b"STOP 10.0.0.1 CPE_b.pcap");
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::Rename { target, .. } if target == "b")));
        // The agent's shutdown ended the capture before the STOP: the files stop there.
        assert_eq!(
            replies(&c2.renamed(id, Ok(vec!["OVOC_b-0.pcap".into()]))),
            ["199 Drops Unknown 10.0.0.1 STOP", "200 OK 10.0.0.1 STOP"]
        );
    }

    #[test]
    fn restart_adopts_a_live_tcpdump() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1")).unwrap();
        c.spawned(id, 99);
        c.ready(id, "lo", "f");
        let saved = c.persisted();
        let mut c2 = Core::new(cfg(false));
        let a = c2.restore(saved.clone(), t0, |p| {
            assert_eq!(p.pid, Some(99));
            Found::Alive
        });
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::Emit(Event::OvocCaptureAdopted { pid: 99, .. }))));
        assert_eq!(c2.restored_counts(), (1, 0));
        let a = c2.datagram(t0, ctl(), b"STOP 10.0.0.1 CPE_b.pcap");
        assert!(a.contains(&Action::Signal { id, kill: false }));
        let mut c3 = Core::new(cfg(false));
        c3.restore(saved, t0, |_| Found::Gone(Stats::default()));
        assert_eq!(c3.restored_counts(), (0, 1));
        // A new capture id never reuses an old one.
        let id2 = spawned(&c3.datagram(t0, ctl(), b"CAPTURE 10.0.0.1")).unwrap();
        assert!(id2 > id);
    }

    fn other() -> SocketAddr {
        "127.0.0.2:40000".parse().unwrap()
    }

    /// The detail of the last `ovoc.response` event.
    fn detail(actions: &[Action]) -> Option<String> {
        actions.iter().rev().find_map(|a| match a {
            Action::Emit(Event::OvocResponse { detail, .. }) => detail.clone(),
            _ => None,
        })
    }

    fn running(c: &mut Core, t0: Instant, from: SocketAddr, dev: &str) -> CaptureId {
        c.datagram(t0, from, format!("REGISTER {dev}").as_bytes());
        let id = spawned(&c.datagram(t0, from, format!("CAPTURE {dev}").as_bytes())).unwrap();
        c.spawned(id, 7);
        c.ready(id, "lo", "f");
        id
    }

    #[test]
    fn a_device_with_an_unfinished_capture_belongs_to_its_registrant() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        let id = running(&mut c, t0, ctl(), "127.0.80.1");
        let table: &[(&str, &str)] = &[
            ("REGISTER 127.0.80.1", "403 Forbidden 127.0.80.1 REGISTER"),
            ("CAPTURE 127.0.80.1", "403 Forbidden 127.0.80.1 CAPTURE"),
            ("VERIFY 127.0.80.1", "403 Forbidden 127.0.80.1 VERIFY"),
            (
                "STOP 127.0.80.1 CPE_attacker.pcap",
                "403 Forbidden 127.0.80.1 STOP",
            ),
        ];
        for (req, want) in table {
            let a = c.datagram(t0, other(), req.as_bytes());
            assert_eq!(replies(&a), [*want], "{req}");
            assert!(!a
                .iter()
                .any(|x| matches!(x, Action::Signal { .. } | Action::Persist)));
            assert_eq!(
                detail(&a).unwrap().split(',').next().unwrap(),
                "device 127.0.80.1 belongs to 127.0.0.1"
            );
        }
        assert_eq!(c.counters.forbidden, 4);
        // The owner from a new port (a restarted controller) is the owner.
        let restarted: SocketAddr = "127.0.0.1:31000".parse().unwrap();
        assert_eq!(
            replies(&c.datagram(t0, restarted, b"REGISTER 127.0.80.1")),
            ["200 OK 127.0.80.1 REGISTER"]
        );
        let a = c.datagram(t0, restarted, b"STOP 127.0.80.1 CPE_x.pcap");
        assert!(a.contains(&Action::Signal { id, kill: false }));
        c.exited(id, Stats::default(), "signal", None);
        let a = c.renamed(id, Ok(vec!["OVOC_x-0.pcap".into()]));
        assert!(replies(&a).contains(&"200 OK 127.0.80.1 STOP".to_string()));
        // Finished: another controller may now take the device over, as the original allowed.
        assert_eq!(
            replies(&c.datagram(t0, other(), b"REGISTER 127.0.80.1")),
            ["200 OK 127.0.80.1 REGISTER"]
        );
        assert_eq!(
            replies(&c.datagram(t0, restarted, b"CAPTURE 127.0.80.1")),
            ["403 Forbidden 127.0.80.1 CAPTURE"]
        );
    }

    /// A stranger's REGISTER accepted before the owner's CAPTURE (no capture yet) and whose
    /// rule operation ends after it: refused, and the rule goes back to the owner.
    #[test]
    fn a_register_racing_the_owners_capture_does_not_take_the_device() {
        let t0 = Instant::now();
        let dev = "127.0.80.1";
        // Order A: the stranger's rule operation is the one in flight.
        let mut c = Core::new(cfg(true));
        c.datagram(t0, ctl(), b"REGISTER 127.0.80.1");
        c.rule_done(dev, ctl(), Ok((7, "created")));
        assert!(c
            .datagram(t0, other(), b"REGISTER 127.0.80.1")
            .contains(&Action::EnsureRule {
                device: dev.into(),
                dest: other()
            }));
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 127.0.80.1")).unwrap();
        c.ready(id, "lo", "f");
        let a = c.rule_done(dev, other(), Ok((7, "updated")));
        assert_eq!(replies(&a), ["403 Forbidden 127.0.80.1 REGISTER"]);
        assert!(a.contains(&Action::EnsureRule {
            device: dev.into(),
            dest: ctl()
        }));
        assert_eq!(c.devices[dev].registered, Some(ctl()));
        assert_eq!(c.counters.forbidden, 1);
        let a = c.rule_done(dev, ctl(), Ok((7, "updated")));
        assert!(
            replies(&a).is_empty(),
            "nobody waits for the restore: {a:?}"
        );
        assert!(!a.iter().any(|x| matches!(x, Action::EnsureRule { .. })));
        // Order B: the stranger waits on the owner's rule operation (re-point to `newest`).
        let mut c = Core::new(cfg(true));
        c.datagram(t0, ctl(), b"REGISTER 127.0.80.1");
        c.datagram(t0, other(), b"REGISTER 127.0.80.1");
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 127.0.80.1"));
        assert!(id.is_none(), "not registered yet: 404");
        let a = c.rule_done(dev, ctl(), Ok((7, "created")));
        assert_eq!(replies(&a), ["200 OK 127.0.80.1 REGISTER"]);
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 127.0.80.1")).unwrap();
        c.ready(id, "lo", "f");
        // Order C: both wait on a rule operation when the owner's capture has begun.
        c.datagram(t0, ctl(), b"REGISTER 127.0.80.1");
        let a = c.datagram(t0, other(), b"REGISTER 127.0.80.1");
        assert_eq!(
            replies(&a),
            ["403 Forbidden 127.0.80.1 REGISTER"],
            "checked on arrival"
        );
        let mut c = Core::new(cfg(true));
        c.datagram(t0, ctl(), b"REGISTER 127.0.80.1");
        c.rule_done(dev, ctl(), Ok((7, "created")));
        c.datagram(t0, ctl(), b"REGISTER 127.0.80.1");
        c.datagram(t0, other(), b"REGISTER 127.0.80.1");
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 127.0.80.1")).unwrap();
        c.ready(id, "lo", "f");
        let a = c.rule_done(dev, ctl(), Ok((7, "updated")));
        assert_eq!(
            replies(&a),
            [
                "403 Forbidden 127.0.80.1 REGISTER",
                "200 OK 127.0.80.1 REGISTER"
            ]
        );
        assert!(
            !a.iter().any(|x| matches!(x, Action::EnsureRule { .. })),
            "no re-point at the stranger: {a:?}"
        );
        assert_eq!(c.devices[dev].registered, Some(ctl()));
    }

    /// The idle timer deletes the rule of an exited capture not yet renamed: its owner stays.
    #[test]
    fn an_idle_rule_deletion_keeps_the_owner_of_an_unfinished_capture() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(true));
        c.datagram(t0, ctl(), b"REGISTER 127.0.80.1");
        c.rule_done("127.0.80.1", ctl(), Ok((7, "created")));
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 127.0.80.1")).unwrap();
        c.ready(id, "lo", "f");
        c.exited(id, Stats::default(), "tcpdump exited", None);
        let later = t0 + Duration::from_secs(7200);
        assert_eq!(
            c.tick(later),
            [Action::DeleteRule {
                device: "127.0.80.1".into(),
                rule_id: 7
            }]
        );
        c.rule_deleted("127.0.80.1", 7, Ok(()));
        for req in [
            "STOP 127.0.80.1 CPE_x.pcap",
            "REGISTER 127.0.80.1",
            "CAPTURE 127.0.80.1",
        ] {
            let a = c.datagram(later, other(), req.as_bytes());
            assert!(replies(&a)[0].starts_with("403 Forbidden"), "{req}: {a:?}");
            assert!(
                !a.iter().any(|x| matches!(x, Action::Rename { .. })),
                "{req}"
            );
        }
        let a = c.datagram(later, ctl(), b"STOP 127.0.80.1 CPE_x.pcap");
        assert!(
            a.iter().any(|x| matches!(x, Action::Rename { .. })),
            "{a:?}"
        );
        c.renamed(id, Ok(vec!["OVOC_x-0.pcap".into()]));
    }

    /// A capture that ended before its STOP (here a full disk, tcpdump having lost nothing in
    /// the kernel) is reported incomplete, with the cause and what is on disk, again on a
    /// repeated STOP; one stopped by its STOP is complete.
    #[test]
    fn a_stop_after_an_early_end_reports_an_incomplete_capture() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        let clean = Stats {
            captured: Some(64_359),
            received: Some(64_359),
            dropped_kernel: Some(0),
        };
        /// (early end: cause and packets on disk, final answers, complete)
        type Row<'a> = (Option<(&'a str, Option<u64>)>, &'a [&'a str], bool);
        let table: &[Row] = &[
            (
                Some(("write failed: No space left on device", Some(4_037))),
                &[
                    "199 Drops Unknown 127.0.80.1 STOP",
                    "200 OK 127.0.80.1 STOP",
                ],
                false,
            ),
            (
                Some(("tcpdump exited", None)),
                &[
                    "199 Drops Unknown 127.0.80.1 STOP",
                    "200 OK 127.0.80.1 STOP",
                ],
                false,
            ),
            (None, &["200 OK 127.0.80.1 STOP"], true),
        ];
        for (early, want, complete) in table {
            let id = running(&mut c, t0, ctl(), "127.0.80.1");
            if let Some((why, on_disk)) = early {
                c.exited(id, clean.clone(), why, *on_disk);
            }
            let a = c.datagram(t0, ctl(), b"STOP 127.0.80.1 CPE_x.pcap");
            if early.is_none() {
                c.exited(id, clean.clone(), "signal", None);
            } else {
                assert!(a.iter().any(|x| matches!(x, Action::Rename { .. })));
            }
            let a = c.renamed(id, Ok(vec!["OVOC_x-0.pcap".into()]));
            assert_eq!(replies(&a), *want, "{early:?}");
            let stopped = a.iter().find_map(|x| match x {
                Action::Emit(Event::OvocCaptureStopped { complete, .. }) => Some(*complete),
                _ => None,
            });
            assert_eq!(stopped, Some(*complete), "{early:?}");
            let again = c.datagram(t0, ctl(), b"STOP 127.0.80.1 CPE_x.pcap");
            let finals: Vec<String> = replies(&again)
                .into_iter()
                .filter(|r| !r.starts_with("100 "))
                .collect();
            assert_eq!(finals, *want, "again: {early:?}");
            match early {
                Some((why, on_disk)) => {
                    let d = detail(&a).unwrap();
                    assert!(d.starts_with("capture ended before STOP: "), "{d}");
                    assert!(d.contains(why), "{d}");
                    let n = on_disk.map(|n| format!("({n} packets on disk)"));
                    assert!(n.is_none_or(|n| d.contains(&n)), "{d}");
                    assert!(detail(&again).unwrap().contains(why));
                }
                None => assert_eq!(detail(&a), None),
            }
        }
    }

    /// The capture's file name carries the wall time the shell gave, not a clock of the core's.
    #[test]
    fn capture_files_are_named_by_the_wall_time_given() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        c.datagram(t0, ctl(), b"REGISTER 127.0.80.1");
        for (us, stamp) in [
            (1_796_083_200_000_000, "2026-12-01T00.00.00.000000"),
            (1_796_169_599_123_456, "2026-12-01T23.59.59.123456"),
        ] {
            c.set_wall(Utc::from_unix_micros(us));
            let a = c.datagram(t0, ctl(), b"CAPTURE 127.0.80.1");
            let want = format!("tmp_device_127.0.80.1_{stamp}.pcap");
            assert!(
                a.iter()
                    .any(|x| matches!(x, Action::Spawn { base, .. } if *base == want)),
                "{want} in {a:?}"
            );
            let id = spawned(&a).unwrap();
            c.failed(id, "test: no tcpdump");
        }
    }

    #[test]
    fn spellings_of_one_host_are_one_device_answered_as_spelled() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        c.datagram(t0, ctl(), b"REGISTER localhost");
        let a = c.datagram(t0, ctl(), b"CAPTURE LOCALHOST");
        let id = spawned(&a).unwrap();
        assert!(a.iter().any(
            |x| matches!(x, Action::Spawn { device, base, .. } if device == "127.0.0.1" && base.starts_with("tmp_device_127.0.0.1_"))
        ));
        for same in ["127.0.0.1", "::ffff:127.0.0.1", "localhost"] {
            let a = c.datagram(t0, ctl(), format!("CAPTURE {same}").as_bytes());
            assert!(spawned(&a).is_none(), "{same}: a second capture");
            assert_eq!(replies(&a), [format!("100 Trying {same} CAPTURE")]);
        }
        // Spellings libc would read as the same address but that are not dotted quads (or
        // names: a last label of digits) are refused outright, and change nothing.
        for odd in ["127.1", "2130706433", "0x7f.1", "127.0.0.1."] {
            let a = c.datagram(t0, ctl(), format!("CAPTURE {odd}").as_bytes());
            assert!(spawned(&a).is_none(), "{odd}: a capture");
            assert_eq!(replies(&a), [format!("400 Bad Request {odd} CAPTURE")]);
        }
        // Later answers use the owner's spelling (its REGISTER's).
        assert_eq!(
            replies(&c.ready(id, "lo", "f")),
            ["200 OK localhost CAPTURE"],
            "one answer per requester"
        );
        assert_eq!(c.persisted().devices[0].device, "127.0.0.1");
        assert_eq!(c.persisted().devices[0].name.as_deref(), Some("localhost"));
    }

    #[test]
    fn a_register_ovoc_refused_leaves_nothing_usable() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(true));
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.9");
        let a = c.rule_done("10.0.0.9", ctl(), Err("device not managed by OVOC".into()));
        assert_eq!(replies(&a), ["503 Service Unavailable 10.0.0.9 REGISTER"]);
        for req in [
            "CAPTURE 10.0.0.9",
            "VERIFY 10.0.0.9",
            "STOP 10.0.0.9 CPE_a.pcap",
        ] {
            let a = c.datagram(t0, ctl(), req.as_bytes());
            let verb = req.split(' ').next().unwrap();
            assert_eq!(
                replies(&a),
                [format!("404 Not Found 10.0.0.9 {verb}")],
                "{req}"
            );
        }
        assert!(c.persisted().devices.is_empty());
        // Nor may a CAPTURE slip in while the rule is being made.
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.9");
        assert_eq!(
            replies(&c.datagram(t0, ctl(), b"CAPTURE 10.0.0.9")),
            ["404 Not Found 10.0.0.9 CAPTURE"]
        );
    }

    #[test]
    fn capture_limits_answer_503_with_the_reason() {
        let t0 = Instant::now();
        let mut c = Core::new(Config {
            limits: Limits {
                max_captures: 2,
                ..cfg(false).limits
            },
            ..cfg(false)
        });
        running(&mut c, t0, ctl(), "10.0.0.1");
        running(&mut c, t0, ctl(), "10.0.0.2");
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.3");
        let a = c.datagram(t0, ctl(), b"CAPTURE 10.0.0.3");
        assert_eq!(
            replies(&a),
            [
                "100 Trying 10.0.0.3 CAPTURE",
                "503 Service Unavailable 10.0.0.3 CAPTURE"
            ]
        );
        assert!(spawned(&a).is_none());
        assert_eq!(
            detail(&a).as_deref(),
            Some("limit: 2 captures running (--max-captures 2)")
        );
        // A running capture is still confirmed (idempotent), whatever the limit.
        assert_eq!(
            replies(&c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1")),
            ["100 Trying 10.0.0.1 CAPTURE", "200 OK 10.0.0.1 CAPTURE"]
        );
        let mut c = Core::new(cfg(false));
        c.set_disk(Disk {
            free: Some(1000),
            used: 0,
        });
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        let a = c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1");
        assert!(spawned(&a).is_none());
        assert_eq!(
            detail(&a).as_deref(),
            Some("disk: 1000 B free in DIR, less than --min-free 1.0 GiB")
        );
    }

    #[test]
    fn over_the_rate_a_source_is_dropped_with_one_event() {
        let t0 = Instant::now();
        let mut c = Core::new(Config {
            limits: Limits {
                rate: 10,
                burst: 3,
                ..cfg(false).limits
            },
            ..cfg(false)
        });
        let limited = |a: &[Action]| {
            a.iter()
                .filter(|x| matches!(x, Action::Emit(Event::OvocLimited { .. })))
                .count()
        };
        let mut events = 0;
        for _ in 0..3 {
            let a = c.datagram(t0, other(), b"REGISTER 10.0.0.1");
            assert_eq!(replies(&a).len(), 1);
        }
        for _ in 0..100 {
            let a = c.datagram(t0, other(), b"REGISTER 10.0.0.1");
            assert!(replies(&a).is_empty());
            events += limited(&a);
        }
        assert_eq!((events, c.counters.limited), (1, 100));
        // Another source is served meanwhile; the first again once it slowed down.
        assert_eq!(
            replies(&c.datagram(t0, ctl(), b"REGISTER 10.0.0.2")).len(),
            1
        );
        let later = t0 + Duration::from_millis(100);
        assert_eq!(
            replies(&c.datagram(later, other(), b"REGISTER 10.0.0.1")).len(),
            1
        );
    }

    /// The owner of an unfinished capture is never rate limited: not by its own pace, not by
    /// forged or unauthenticated datagrams carrying its address (those share one bucket of
    /// their own), not by a table full of other sources.
    #[test]
    fn the_rate_limiter_never_silences_the_owner_of_a_capture() {
        let t0 = Instant::now();
        let mut c = Core::new(Config {
            limits: Limits {
                rate: 1,
                burst: 3,
                ..cfg(false).limits
            },
            ..cfg(false)
        });
        // REGISTER and CAPTURE take 2 of the owner's 3 tokens; it owns a capture from now on.
        running(&mut c, t0, ctl(), "127.0.80.1");
        let spoofed: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        for _ in 0..50 {
            c.forged(t0, spoofed, "wrong MAC");
            c.unauthenticated(t0, spoofed, b"STOP 127.0.80.1 CPE_x.pcap", "no MAC");
        }
        assert_eq!(
            c.counters.unauthenticated, 3,
            "one bucket for all unproven datagrams"
        );
        assert_eq!(c.counters.limited, 97);
        // A full table: sources past it share one bucket, soon empty.
        for i in 0..70_000u32 {
            let [_, a, b, d] = (0x7f00_0000 + 0x0001_0000 + i).to_be_bytes();
            let from = SocketAddr::from(([127, a, b, d], 9));
            c.datagram(t0, from, b"REGISTER 10.9.9.9");
        }
        let flooders_limited = c.counters.limited;
        assert!(flooders_limited > 97, "the overflow bucket ran dry");
        for i in 0..20 {
            let a = c.datagram(t0, ctl(), b"VERIFY 127.0.80.2");
            assert_eq!(replies(&a).len(), 1, "owner's request {i}: {a:?}");
        }
        // Pruning, ten seconds on, forgets refilled sources; the owner is still served.
        let later = t0 + Duration::from_secs(60);
        c.datagram(later, other(), b"REGISTER 10.9.9.8");
        let a = c.datagram(later, ctl(), b"STOP 127.0.80.1 CPE_x.pcap");
        assert!(
            a.iter().any(|x| matches!(x, Action::Signal { .. })),
            "{a:?}"
        );
        assert_eq!(c.counters.limited, flooders_limited);
        // Once finished, the owner is a source like any other.
        let id = c.devices["127.0.80.1"].current.unwrap();
        c.exited(id, Stats::default(), "signal", None);
        c.renamed(id, Ok(vec!["OVOC_x-0.pcap".into()]));
        let refilled = later + Duration::from_secs(10);
        let answered = (0..10)
            .filter(|_| !replies(&c.datagram(refilled, ctl(), b"REGISTER 10.9.9.7")).is_empty())
            .count();
        assert_eq!(answered, 3, "the burst, then limited");
    }

    #[test]
    fn verify_only_for_the_owners_capture_and_only_of_one_device() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        let a = c.datagram(t0, ctl(), b"VERIFY 10.0.0.1");
        assert_eq!(
            replies(&a),
            ["404 Not Found 10.0.0.1 VERIFY"],
            "no capture yet"
        );
        let remote: SocketAddr = "10.9.0.1:20001".parse().unwrap();
        let mut c = Core::new(Config {
            allow_any: true,
            ..cfg(false)
        });
        let targets: &[(&str, SocketAddr, Option<&str>)] = &[
            ("224.0.0.1", ctl(), Some("a multicast address")),
            ("ff02::1", ctl(), Some("a multicast address")),
            ("0.0.0.0", ctl(), Some("an unspecified address")),
            ("::", ctl(), Some("an unspecified address")),
            ("255.255.255.255", ctl(), Some("the broadcast address")),
            (
                "192.0.2.255",
                ctl(),
                Some("a broadcast address of this host's networks"),
            ),
            (
                "192.0.2.100",
                ctl(),
                Some("one of the agent's own addresses"),
            ),
            (
                "127.0.0.9",
                remote,
                Some("a loopback address, from a requester on another host"),
            ),
            ("127.0.0.10", ctl(), None),
            ("192.0.2.7", remote, None),
        ];
        for (dev, from, why) in targets {
            running(&mut c, t0, *from, dev);
            let a = c.datagram(t0, *from, format!("VERIFY {dev}").as_bytes());
            let probes = a.iter().any(|x| matches!(x, Action::Verify { .. }));
            match why {
                Some(w) => {
                    assert_eq!(replies(&a), [format!("400 Bad Request {dev} VERIFY")]);
                    assert!(detail(&a).unwrap().ends_with(w), "{dev}: {a:?}");
                    assert!(!probes);
                }
                None => assert!(probes, "{dev}"),
            }
        }
    }

    #[test]
    fn verify_runs_are_bounded_at_once_and_per_second() {
        let t0 = Instant::now();
        let mut c = Core::new(Config {
            limits: Limits {
                max_verifies: 2,
                verify_rate: 1,
                ..cfg(false).limits
            },
            ..cfg(false)
        });
        for d in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            running(&mut c, t0, ctl(), d);
        }
        let verify = |c: &mut Core, at: Instant, d: &str| {
            let a = c.datagram(at, ctl(), format!("VERIFY {d}").as_bytes());
            (replies(&a), detail(&a))
        };
        assert_eq!(
            verify(&mut c, t0, "10.0.0.1").0,
            ["100 Trying 10.0.0.1 VERIFY"]
        );
        assert_eq!(
            verify(&mut c, t0, "10.0.0.2").0,
            ["100 Trying 10.0.0.2 VERIFY"]
        );
        let (r, d) = verify(&mut c, t0, "10.0.0.3");
        assert_eq!(r[1], "503 Service Unavailable 10.0.0.3 VERIFY");
        assert_eq!(
            d.as_deref(),
            Some("limit: 2 VERIFY probe runs at once (--max-verifies 2)")
        );
        c.verified("10.0.0.1", ProbeReport::default());
        let (_, d) = verify(&mut c, t0, "10.0.0.3");
        assert_eq!(
            d.as_deref(),
            Some("limit: 1 VERIFY probe runs per second (--verify-rate 1)")
        );
        let (r, _) = verify(&mut c, t0 + Duration::from_secs(1), "10.0.0.3");
        assert_eq!(r, ["100 Trying 10.0.0.3 VERIFY"]);
        // A name that resolved to a refused address: 400 to its waiters, and the slot is free.
        let a = c.verify_refused(
            "10.0.0.3",
            "VERIFY target 224.0.0.1 refused: a multicast address",
        );
        assert_eq!(replies(&a), ["400 Bad Request 10.0.0.3 VERIFY"]);
        assert_eq!(c.verifies_running, 1);
    }

    #[test]
    fn unauthenticated_and_forged_requests() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        let a = c.unauthenticated(t0, ctl(), b"REGISTER 10.0.0.1", "no MAC");
        assert_eq!(replies(&a), ["401 Unauthorized 10.0.0.1 REGISTER"]);
        assert!(c.forged(t0, ctl(), "wrong MAC").is_empty());
        let outside: SocketAddr = "192.0.2.1:20001".parse().unwrap();
        assert!(c
            .unauthenticated(t0, outside, b"REGISTER 10.0.0.1", "no MAC")
            .is_empty());
        assert_eq!((c.counters.unauthenticated, c.counters.refused), (2, 1));
        assert!(c.persisted().devices.is_empty());
    }

    #[test]
    fn a_stop_before_the_spawn_returned_signals_the_pid_when_it_comes() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        c.datagram(t0, ctl(), b"REGISTER 10.0.0.1");
        let id = spawned(&c.datagram(t0, ctl(), b"CAPTURE 10.0.0.1")).unwrap();
        let a = c.datagram(t0, ctl(), b"STOP 10.0.0.1 CPE_a.pcap");
        assert!(a.contains(&Action::Signal { id, kill: false }));
        assert_eq!(c.spawned(id, 99), vec![Action::Signal { id, kill: false }]);
    }

    #[test]
    fn random_datagrams_never_panic_and_always_get_at_most_bounded_answers() {
        let t0 = Instant::now();
        let mut c = Core::new(cfg(false));
        let mut next = crate::util::xorshift(0x1234_5678_9abc_def1u64);
        let words: &[&[u8]] = &[
            b"REGISTER ",
            b"CAPTURE ",
            b"VERIFY ",
            b"STOP ",
            b"10.0.0.1",
            b" CPE_a.pcap",
            b"..",
            b"/",
            b"$(id)",
            b" ",
        ];
        for _ in 0..10_000 {
            let mut d = Vec::new();
            for _ in 0..(next() % 5) {
                if next() % 5 == 0 {
                    d.push(next() as u8);
                } else {
                    d.extend_from_slice(words[(next() % words.len() as u64) as usize]);
                }
            }
            let a = c.datagram(t0, ctl(), &d);
            assert!(replies(&a).len() <= 2);
        }
        assert!(c.counters.requests + c.counters.dropped == 10_000);
    }
}
