//! `tc analyze`: which side of the WAN lost the traffic.
//!
//! [`analyze`] is the library entry point (a [`Config`] in, a [`Report`] out, nothing printed),
//! for the command line here and for a session that analyses its own captures. It reads both
//! captures twice at most: a bounded first look at their beginnings for a first clock offset
//! and the OVOC server's address as the CPE sees it, then one streaming pass that merges the
//! two in OVOC time, matches packets within a sliding window and keeps per-second envelopes for
//! the final clock estimate. [`merge::write`] (a third pass, only with `--merge`) and
//! [`plot::write`] turn the report into files; [`run`] is the thin command-line shell.

pub mod clock;
pub mod core;
pub mod dissect;
pub mod merge;
pub mod plot;
pub mod read;
pub mod verdict;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use self::clock::{Estimate, Model, Timeline};
use self::core::{
    ExchangeCounts, FlowCounts, LossWindow, Matcher, Overflow, Params, Seen, C2O, CPE, DIRECTIONS,
    O2C, OVOC,
};
use self::dissect::{Class, Dissector, Exchange, Pkt};
use self::read::{FileStats, Source};
use crate::cli::AnalyzeArgs;
use crate::emit::emit;
use crate::error::{Error, ExitCode, Result};
use crate::event::{DelayMs, Event, OneWayDelays};
use crate::timefmt::Utc;
use rustc_hash::FxHashMap as FastMap;

/// What to analyse.
#[derive(Debug, Clone)]
pub struct Config {
    pub cpe: PathBuf,
    /// In any order.
    pub ovoc: Vec<PathBuf>,
    /// The device's address in the OVOC capture.
    pub device: IpAddr,
    /// The OVOC server's address in the CPE capture, if known.
    pub ovoc_addr: Option<IpAddr>,
    /// A clock model to use instead of the estimate: (offset ns, drift).
    pub clock: Option<(i64, f64)>,
    pub params: Params,
    /// Transport payload bytes a key covers: set by [`analyze`] from the files' snap lengths
    /// (whatever is given here is replaced).
    pub hash_limit: usize,
}

/// One input file.
#[derive(Debug, Clone)]
pub struct Input {
    pub side: usize,
    pub stats: FileStats,
    pub selected: u64,
    pub ring_position: Option<u32>,
    /// What the dissector made of the file's frames.
    pub dissected: Dissected,
}

/// Per file: frames that are not IP, and fragmented datagrams given up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dissected {
    pub not_ip: u64,
    pub fragments_given_up: u64,
}

#[derive(Debug, Clone)]
pub struct Clock {
    pub estimate: Estimate,
    pub matched: u64,
    pub given: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    pub window: LossWindow,
    /// Send times of the first and last lost packet in each clock.
    pub start_cpe: i64,
    pub end_cpe: i64,
    pub start_ovoc: i64,
    pub end_ovoc: i64,
}

/// Requests of one direction and kind: `sent`/`answers_received` in the requester's capture,
/// the rest in the responder's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub sent: u64,
    pub answers_received: u64,
    pub arrived: u64,
    pub answered: u64,
    pub unanswered_at_end: u64,
}

/// Everything `tc analyze` found.
#[derive(Debug, Clone)]
pub struct Report {
    pub device: IpAddr,
    pub inputs: Vec<Input>,
    pub wrapped: bool,
    /// The OVOC files in time order.
    pub ovoc_files: Vec<PathBuf>,
    pub ovoc_addr: Option<IpAddr>,
    pub ovoc_addr_given: bool,
    pub clock: Option<Clock>,
    pub flows: Vec<((usize, Class), FlowCounts)>,
    pub losses: Vec<Loss>,
    pub requests: Vec<((usize, Exchange), Requests)>,
    pub verdict: verdict::Verdict,
    /// Per-second counts over OVOC time, for the timeline.
    pub timeline: Timeline,
    /// Each capture's window, OVOC time.
    pub windows: [Option<(i64, i64)>; 2],
    /// Frame numbers, per side, of the packets lost in transit (kept for `--merge` only).
    pub lost_frames: [Vec<u64>; 2],
    /// Where the matcher's bounds were reached.
    pub overflow: Overflow,
    /// A step of the CPE clock against OVOC's: (OVOC time, size ns).
    pub step: Option<(i64, f64)>,
}

impl Report {
    /// The clock model in force (identity when nothing could be estimated).
    pub fn model(&self) -> Model {
        self.clock
            .as_ref()
            .map_or(Model::fixed(0, 0.0), |c| c.estimate.model)
    }
}

/// The first look: OVOC's packets to or from the device with a payload kept (their keys), and
/// the matches after which it stops. The CPE's side is bounded by time, not by frames: it reads
/// on past any amount of unrelated traffic until the first match, then at most the OVOC
/// prefix's span (plus [`LOOK_SLACK`]) after it.
const PREFIX_OVOC: u64 = 50_000;
const PREFIX_MATCHES: usize = 10_000;
const LOOK_SLACK: i64 = 60_000_000_000;

/// OVOC as each capture sees it: pairs of (its address in the OVOC capture, its address in the
/// CPE capture), found by matching; the first is the one reported. An OVOC-side address of
/// `None` (only `--ovoc-addr` given, nothing matched) takes any peer of the device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peers(pub Vec<(Option<IpAddr>, IpAddr)>);

impl Peers {
    fn cpe_view(&self) -> Option<IpAddr> {
        self.0.first().map(|p| p.1)
    }

    /// The direction of a packet between the device and OVOC, as `side` sees it.
    fn direction(&self, side: usize, p: &Pkt, device: IpAddr) -> Option<usize> {
        if side == OVOC {
            let ovoc = |a: IpAddr| self.0.iter().any(|(o, _)| o.is_none_or(|o| o == a));
            return match (p.src == device, p.dst == device) {
                (false, true) if ovoc(p.src) => Some(O2C),
                (true, false) if ovoc(p.dst) => Some(C2O),
                _ => None,
            };
        }
        let ovoc = |a: IpAddr| self.0.iter().any(|(_, c)| *c == a);
        match (ovoc(p.src), ovoc(p.dst)) {
            (true, false) => Some(O2C),
            (false, true) => Some(C2O),
            _ => None,
        }
    }
}

/// Any packet to or from the device in the OVOC capture, before OVOC's own address is known.
fn device_direction(p: &Pkt, device: IpAddr) -> Option<usize> {
    match (p.src == device, p.dst == device) {
        (false, true) => Some(O2C),
        (true, false) => Some(C2O),
        _ => None,
    }
}

struct FirstLook {
    peers: Peers,
    /// (direction, OVOC time, CPE time - OVOC time)
    pairs: Vec<(usize, i64, i64)>,
}

/// The beginnings of both captures: OVOC's address in each (the peers of the packets that
/// match), and matched pairs for a first offset. Only packets whose key is unique on both
/// sides count, so a retransmission cannot pose as a long delay.
fn first_look(cfg: &Config, ovoc_files: &[PathBuf]) -> Result<FirstLook, String> {
    let ovoc = ovoc_prefix(cfg, ovoc_files)?;
    let found = cpe_prefix(cfg, &ovoc)?;
    Ok(first_peers(cfg, &found))
}

/// key -> (direction, OVOC-side peer, time, count)
type Prefix = FastMap<u64, (usize, IpAddr, i64, u32)>;
/// key -> ((OVOC-side peer, CPE-side peer), direction, OVOC time, CPE time, count)
type Found = FastMap<u64, ((IpAddr, IpAddr), usize, i64, i64, u32)>;

fn dissector(cfg: &Config, filter: Vec<IpAddr>) -> Dissector {
    let mut d = Dissector::default();
    d.filter = filter;
    d.hash_limit = cfg.hash_limit;
    d
}

/// The keys of OVOC's first packets to or from the device.
fn ovoc_prefix(cfg: &Config, ovoc_files: &[PathBuf]) -> Result<Prefix, String> {
    let mut src = Source::new(ovoc_files.to_vec());
    let mut d = dissector(cfg, vec![cfg.device]);
    let mut pkts = Vec::new();
    let mut ovoc = Prefix::default();
    let mut n = 0;
    while n < PREFIX_OVOC && src.advance()? {
        let f = src.frame();
        d.dissect(&f, &mut pkts);
        for p in pkts.iter().filter(|p| p.strong) {
            if let Some(dir) = device_direction(p, cfg.device) {
                n += 1;
                let peer = if dir == O2C { p.src } else { p.dst };
                ovoc.entry(p.key).or_insert((dir, peer, f.ts_ns, 0)).3 += 1;
            }
        }
    }
    Ok(ovoc)
}

/// The CPE's packets whose key is one of the OVOC prefix's, read until enough matched or the
/// CPE capture went past the prefix's span after its first match.
fn cpe_prefix(cfg: &Config, ovoc: &Prefix) -> Result<Found, String> {
    let span = match (
        ovoc.values().map(|v| v.2).min(),
        ovoc.values().map(|v| v.2).max(),
    ) {
        (Some(a), Some(b)) => b - a,
        _ => return Ok(Found::default()),
    };
    let mut src = Source::new(vec![cfg.cpe.clone()]);
    let mut d = dissector(cfg, Vec::new());
    let mut pkts = Vec::new();
    let mut found = Found::default();
    let mut until = i64::MAX;
    while found.len() < PREFIX_MATCHES && src.advance()? {
        let f = src.frame();
        if f.ts_ns > until {
            break;
        }
        d.dissect(&f, &mut pkts);
        for p in pkts.iter().filter(|p| p.strong) {
            let Some(&(dir, peer, t, 1)) = ovoc.get(&p.key) else {
                continue;
            };
            let seen = if dir == O2C { p.src } else { p.dst };
            found
                .entry(p.key)
                .or_insert(((peer, seen), dir, t, f.ts_ns, 0))
                .4 += 1;
            if until == i64::MAX {
                until = f.ts_ns.saturating_add(span + LOOK_SLACK);
            }
        }
    }
    Ok(found)
}

/// OVOC's address in each capture: the pairs of peers that matched most.
fn first_peers(cfg: &Config, found: &Found) -> FirstLook {
    let mut votes: HashMap<(IpAddr, IpAddr), u64> = HashMap::new();
    for v in found.values().filter(|v| v.4 == 1) {
        *votes.entry(v.0).or_default() += 1;
    }
    let mut ranked: Vec<((IpAddr, IpAddr), u64)> = votes
        .into_iter()
        .filter(|(p, _)| cfg.ovoc_addr.is_none_or(|a| a == p.1))
        .collect();
    ranked.sort_by_key(|(p, n)| (std::cmp::Reverse(*n), *p));
    // A pair seen once, beside others seen often, is a coincidence of keys.
    let top = ranked.first().map_or(0, |r| r.1);
    let mut peers = Peers(
        ranked
            .iter()
            .filter(|(_, n)| *n * 100 >= top && (*n >= 2 || *n == top))
            .map(|((o, c), _)| (Some(*o), *c))
            .collect(),
    );
    if let (Some(a), true) = (cfg.ovoc_addr, peers.0.is_empty()) {
        peers.0.push((None, a));
    }
    let pairs: Vec<(usize, i64, i64)> = found
        .values()
        .filter(|v| v.4 == 1 && peers.0.contains(&(Some(v.0 .0), v.0 .1)))
        .map(|&(_, dir, t, tc, _)| (dir, t, tc - t))
        .collect();
    FirstLook {
        peers,
        pairs: near_median(pairs),
    }
}

/// The pairs whose `t_cpe - t_ovoc` is within 2 s of the median: a packet of the OVOC prefix
/// that the CPE capture has beyond the prefix's span is gone, but an equal key of another
/// packet there is not, and would pose as a delay of minutes.
fn near_median(mut pairs: Vec<(usize, i64, i64)>) -> Vec<(usize, i64, i64)> {
    if pairs.is_empty() {
        return pairs;
    }
    let mut d: Vec<i64> = pairs.iter().map(|p| p.2).collect();
    let mid = d.len() / 2;
    let median = *d.select_nth_unstable(mid).1;
    pairs.retain(|p| (p.2 - median).abs() <= 2_000_000_000);
    pairs
}

/// The OVOC files in time order, with whether the ring wrapped, and the snap length of each
/// file (the CPE's last).
fn order_ovoc(cfg: &Config) -> Result<(Vec<PathBuf>, bool, Vec<u32>), String> {
    let mut timed = Vec::with_capacity(cfg.ovoc.len());
    let mut snaplens = Vec::new();
    for f in &cfg.ovoc {
        let (t, snap) = read::head(f)?;
        timed.push((f.clone(), t));
        snaplens.push(snap);
    }
    snaplens.push(read::head(&cfg.cpe)?.1);
    let (files, wrapped) = read::order_ring(&timed);
    Ok((files, wrapped, snaplens))
}

/// Runs the analysis.
pub fn analyze(cfg: &Config) -> Result<Report, String> {
    let (ovoc_files, wrapped, snaplens) = order_ovoc(cfg)?;
    let cfg = &Config {
        hash_limit: dissect::hash_limit(&snaplens),
        ..cfg.clone()
    };
    let look = first_look(cfg, &ovoc_files)?;
    let first_ovoc = ovoc_files
        .iter()
        .find_map(|f| read::head(f).ok().and_then(|h| h.0))
        .unwrap_or(0);
    let model = match cfg.clock {
        Some((offset, drift)) => Model {
            at: first_ovoc,
            offset: offset as f64,
            drift,
        },
        None => Model::fixed(
            first_ovoc,
            clock::first_offset(&look.pairs).map_or(0.0, |f| f.0),
        ),
    };
    let delay = clock::first_offset(&look.pairs).map_or(0, |f| f.1);
    let pass = main_pass(cfg, &ovoc_files, &look.peers, model, delay)?;
    Ok(report(
        cfg,
        ovoc_files,
        wrapped,
        look.peers.cpe_view(),
        pass,
    ))
}

struct Pass {
    outcome: core::Outcome,
    timeline: Timeline,
    windows: [Option<(i64, i64)>; 2],
    stats: [Vec<FileStats>; 2],
    selected: [Vec<u64>; 2],
    dissected: [Vec<Dissected>; 2],
    model: Model,
}

/// The streaming pass: both captures merged in OVOC time through the matcher.
fn main_pass(
    cfg: &Config,
    ovoc_files: &[PathBuf],
    peers: &Peers,
    mut model: Model,
    delay: i64,
) -> Result<Pass, String> {
    let mut src = [
        Source::new(ovoc_files.to_vec()),
        Source::new(vec![cfg.cpe.clone()]),
    ];
    // Only the analysed hosts: other traffic's fragments and flows are never held.
    let cpe_filter = peers.0.iter().map(|p| p.1).collect();
    let mut diss = [dissector(cfg, vec![cfg.device]), dissector(cfg, cpe_filter)];
    let mut has = [src[0].advance()?, src[1].advance()?];
    let mut m = Matcher::new(cfg.params, origin(&src, has, &model));
    m.set_delay(delay);
    let mut selected: [Vec<u64>; 2] = [vec![0; ovoc_files.len()], vec![0]];
    let mut dissected = [
        vec![Dissected::default(); ovoc_files.len()],
        vec![Dissected::default()],
    ];
    let mut pkts = Vec::new();
    let mut tracker = Tracker::new(cfg.clock.is_none());
    for s in [0, 1] {
        if !has[s] {
            m.end(s);
        }
    }
    loop {
        let t = [0, 1].map(|s| has[s].then(|| side_time(&model, s, src[s].frame().ts_ns)));
        let side = match t {
            [Some(a), Some(b)] => usize::from(b < a),
            [Some(_), None] => OVOC,
            [None, Some(_)] => CPE,
            [None, None] => break,
        };
        let now = t[side].expect("picked");
        let f = src[side].frame();
        let counts = &mut dissected[side][src[side].file_index()];
        dissect_counted(&mut diss[side], &f, &mut pkts, counts);
        let at = Place {
            side,
            now,
            frame: src[side].frames - 1,
        };
        if feed(&mut m, cfg.device, peers, at, &f, &pkts) {
            selected[side][src[side].file_index()] += 1;
        }
        let skipped = src[side].bad_time();
        has[side] = src[side].advance()?;
        if src[side].bad_time() > skipped {
            // Records skipped between this frame and the next.
            m.blind(side, now);
        }
        if !has[side] {
            m.end(side);
        }
        if side == CPE {
            if let Some(delay) = tracker.follow(&m.timeline, now, &mut model) {
                m.set_delay(delay);
            }
        }
    }
    let windows = m.windows();
    let (outcome, timeline) = m.finish();
    let [o, c] = src;
    Ok(Pass {
        outcome,
        timeline,
        windows,
        stats: [o.done, c.done],
        selected,
        dissected,
        model,
    })
}

/// The timeline's origin: 10 s before the first frame of either side, OVOC time.
fn origin(src: &[Source; 2], has: [bool; 2], model: &Model) -> i64 {
    [0, 1]
        .into_iter()
        .filter(|s| has[*s])
        .map(|s| side_time(model, s, src[s].frame().ts_ns))
        .min()
        .unwrap_or(0)
        - 10_000_000_000
}

/// Dissects a frame, counting in its file's record what the dissector skipped or gave up.
fn dissect_counted(d: &mut Dissector, f: &read::Frame<'_>, pkts: &mut Vec<Pkt>, c: &mut Dissected) {
    let before = (d.skipped, d.fragments_given_up());
    d.dissect(f, pkts);
    c.not_ip += d.skipped - before.0;
    c.fragments_given_up += d.fragments_given_up() - before.1;
}

/// Where a frame is: its side, its OVOC time, its number in its side's capture.
#[derive(Clone, Copy)]
struct Place {
    side: usize,
    now: i64,
    frame: u64,
}

/// One frame's packets to the matcher; true when any of them was between the device and OVOC.
/// Without OVOC's address nothing can be matched: OVOC's packets are still counted, for the
/// report to say what it found.
fn feed(
    m: &mut Matcher,
    device: IpAddr,
    peers: &Peers,
    at: Place,
    f: &read::Frame<'_>,
    pkts: &[Pkt],
) -> bool {
    let known = !peers.0.is_empty();
    let mut any = false;
    for p in pkts {
        let dir = match (at.side, known) {
            (OVOC, false) => device_direction(p, device),
            _ => peers.direction(at.side, p, device),
        };
        let Some(dir) = dir else { continue };
        any = true;
        if known {
            m.push(Seen {
                side: at.side,
                dir,
                t: at.now,
                native: f.ts_ns,
                frame: at.frame,
                pkt: *p,
            });
        }
    }
    if !any {
        m.running(at.side, at.now, f.ts_ns);
    }
    any
}

fn side_time(model: &Model, side: usize, native: i64) -> i64 {
    if side == OVOC {
        native
    } else {
        model.to_ovoc(native)
    }
}

/// Follows a drifting clock during the pass, so that the window stays centred: every 10 s of
/// OVOC time, the offset from the last minute's envelopes (when both directions had matches).
struct Tracker {
    on: bool,
    next: i64,
}

impl Tracker {
    const EVERY: i64 = 10_000_000_000;
    const SPAN: usize = 60;

    fn new(on: bool) -> Tracker {
        Tracker { on, next: 0 }
    }

    /// Moves the model; returns the one-way delay it leaves.
    fn follow(&mut self, tl: &Timeline, now: i64, model: &mut Model) -> Option<i64> {
        if !self.on || now < self.next {
            return None;
        }
        self.next = now + Self::EVERY;
        let recent = tl.buckets.iter().rev().take(Self::SPAN);
        let (mut down, mut up) = (None::<i64>, None::<i64>);
        for b in recent {
            let [o2c, c2o] = b.dir;
            if o2c.n > 0 {
                down = Some(down.map_or(o2c.min, |d| d.min(o2c.min)));
            }
            if c2o.n > 0 {
                up = Some(up.map_or(c2o.max, |u| u.max(c2o.max)));
            }
        }
        let (offset, delay) =
            clock::envelope_middle(down, up).filter(|_| down.and(up).is_some())?;
        *model = Model::fixed(now, offset);
        Some(delay)
    }
}

fn report(
    cfg: &Config,
    ovoc_files: Vec<PathBuf>,
    wrapped: bool,
    ovoc_addr: Option<IpAddr>,
    pass: Pass,
) -> Report {
    let Pass {
        outcome: o,
        timeline,
        windows,
        stats,
        selected,
        dissected,
        model: running,
    } = pass;
    let common = match windows {
        [Some(a), Some(b)] if a.0.max(b.0) < a.1.min(b.1) => Some((a.0.max(b.0), a.1.min(b.1))),
        _ => None,
    };
    let at = common.map_or(running.at, |c| c.0);
    let clock = final_clock(cfg, &timeline, running, at);
    let model = clock.as_ref().map_or(running, |c| c.estimate.model);
    let mut inputs = Vec::new();
    for side in [OVOC, CPE] {
        for (i, st) in stats[side].iter().enumerate() {
            inputs.push(Input {
                side,
                stats: st.clone(),
                selected: selected[side].get(i).copied().unwrap_or(0),
                ring_position: (side == OVOC).then_some(i as u32),
                dissected: dissected[side].get(i).copied().unwrap_or_default(),
            });
        }
    }
    let losses: Vec<Loss> = o.losses.iter().map(|w| in_both_clocks(w, &model)).collect();
    let requests = requests(&o.exchanges);
    let step = clock
        .as_ref()
        .filter(|c| !c.given)
        .and_then(|_| clock::step(&timeline));
    let why = inconclusive(cfg, ovoc_addr, &clock, common, &inputs);
    let facts = facts(why, &o, &timeline, common, &inputs, model);
    let verdict = verdict::decide(&facts);
    Report {
        device: cfg.device,
        inputs,
        wrapped,
        ovoc_files,
        ovoc_addr,
        ovoc_addr_given: cfg.ovoc_addr.is_some(),
        clock,
        flows: o.flows.into_iter().collect(),
        losses,
        requests,
        verdict,
        timeline,
        windows,
        lost_frames: o.lost_frames,
        overflow: o.overflow,
        step,
    }
}

/// The clock as given (`--offset`) or as estimated from the whole pass, stated at `at`.
fn final_clock(cfg: &Config, tl: &Timeline, running: Model, at: i64) -> Option<Clock> {
    match cfg.clock {
        Some((offset, drift)) => Some(Clock {
            estimate: Estimate {
                model: Model {
                    at: running.at,
                    offset: offset as f64,
                    drift,
                },
                uncertainty: None,
                delay: [None, None],
            },
            matched: tl.matched(),
            given: true,
        }),
        None => clock::estimate(tl, at).map(|estimate| Clock {
            estimate,
            matched: tl.matched(),
            given: false,
        }),
    }
}

/// A loss window's first and last packet in both clocks (the sender's own, and the other's
/// through the model).
fn in_both_clocks(w: &LossWindow, model: &Model) -> Loss {
    let (s, e) = (w.start_native, w.end_native);
    let (start_ovoc, end_ovoc, start_cpe, end_cpe) = if core::sender(w.dir) == OVOC {
        (s, e, model.to_cpe(s), model.to_cpe(e))
    } else {
        (model.to_ovoc(s), model.to_ovoc(e), s, e)
    };
    Loss {
        window: *w,
        start_cpe,
        end_cpe,
        start_ovoc,
        end_ovoc,
    }
}

fn requests(
    x: &[std::collections::BTreeMap<(usize, Exchange), ExchangeCounts>; 2],
) -> Vec<((usize, Exchange), Requests)> {
    let mut keys: Vec<(usize, Exchange)> = x[0].keys().chain(x[1].keys()).copied().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let requester = core::sender(k.0);
            let asker = x[requester].get(&k).copied().unwrap_or_default();
            let answerer = x[1 - requester].get(&k).copied().unwrap_or_default();
            (
                k,
                Requests {
                    sent: asker.requests,
                    answers_received: asker.answered,
                    arrived: answerer.requests,
                    answered: answerer.answered,
                    unanswered_at_end: answerer.trailing_unanswered,
                },
            )
        })
        .collect()
}

/// Why nothing can be said, when that is so.
fn inconclusive(
    cfg: &Config,
    ovoc_addr: Option<IpAddr>,
    clock: &Option<Clock>,
    common: Option<(i64, i64)>,
    inputs: &[Input],
) -> Option<String> {
    let selected = |side: usize| -> u64 {
        inputs
            .iter()
            .filter(|i| i.side == side)
            .map(|i| i.selected)
            .sum()
    };
    if selected(OVOC) == 0 {
        Some(format!(
            "the OVOC capture has no packet to or from {}",
            cfg.device
        ))
    } else if ovoc_addr.is_none() {
        Some(
            "no packet of the OVOC capture was found in the CPE capture (not the same device, \
             or captures that do not overlap in time); --ovoc-addr and --offset compare them \
             anyway"
                .to_string(),
        )
    } else if selected(CPE) == 0 {
        Some(format!(
            "the CPE capture has no packet to or from {}",
            ovoc_addr.map_or("OVOC".into(), |a| a.to_string())
        ))
    } else if common.is_none() {
        Some("the two captures do not overlap in time".into())
    } else if clock.is_none() {
        Some("no packet was found in both captures, so the clocks cannot be compared".into())
    } else {
        None
    }
}

fn facts(
    inconclusive: Option<String>,
    o: &core::Outcome,
    tl: &Timeline,
    common: Option<(i64, i64)>,
    inputs: &[Input],
    model: Model,
) -> verdict::Facts {
    let mut f = verdict::Facts {
        inconclusive,
        losses: o.losses.clone(),
        exchanges: o.exchanges.clone(),
        common_end: common.map(|c| c.1),
        last_seen: o.last_seen,
        offset_ns: model.offset_at(common.map_or(model.at, |c| c.0)) as i64,
        ..verdict::Facts::default()
    };
    for ((dir, _), c) in &o.flows {
        f.sent[*dir] += c.sent - c.outside_window;
        f.seen[*dir] += c.seen;
        f.lost[*dir] += c.lost;
        f.unexpected[*dir] += c.unexpected;
    }
    for i in inputs {
        // A direction's receiver is the other side: its capture's own drops.
        let dir = if i.side == CPE { O2C } else { C2O };
        f.receiver_drops[dir] += i.stats.capture_drops.unwrap_or(0);
    }
    for dir in [O2C, C2O] {
        f.sent_span[dir] = sent_span(tl, dir);
        f.usual_gap[dir] = usual_gap(tl, dir);
    }
    for dir in [O2C, C2O] {
        if let Some((_, last, _)) = f.sent_span[1 - dir] {
            let from = ((last - tl.origin) / tl.width + 1).max(0) as usize;
            f.sent_after_other_stopped[dir] = tl
                .buckets
                .iter()
                .skip(from)
                .map(|b| u64::from(b.dir[dir].sent))
                .sum();
        }
    }
    f
}

/// (first, last, count) of a direction's sent packets, OVOC time, from the timeline.
fn sent_span(tl: &Timeline, dir: usize) -> Option<(i64, i64, u64)> {
    let mut span: Option<(i64, i64, u64)> = None;
    for (i, b) in tl.buckets.iter().enumerate() {
        let n = u64::from(b.dir[dir].sent);
        if n == 0 {
            continue;
        }
        let t = tl.origin + i as i64 * tl.width;
        span = Some(match span {
            None => (t, t, n),
            Some((a, _, c)) => (a, t, c + n),
        });
    }
    span
}

/// The median gap between a direction's sending buckets (its usual polling interval, whatever
/// its bursts and pauses), ns.
fn usual_gap(tl: &Timeline, dir: usize) -> Option<i64> {
    let busy: Vec<i64> = (0..tl.buckets.len())
        .filter(|i| tl.buckets[*i].dir[dir].sent > 0)
        .map(|i| i as i64 * tl.width)
        .collect();
    let mut gaps: Vec<i64> = busy.windows(2).map(|w| w[1] - w[0]).collect();
    if gaps.is_empty() {
        return None;
    }
    let mid = gaps.len() / 2;
    Some(*gaps.select_nth_unstable(mid).1)
}

/// The device address in a file name tc writes: `CPE_device_<device>_<time>.pcap`,
/// `OVOC_device_<device>_<time>-<n>.pcap`, `tmp_device_<device>_<time>.pcap<n>`.
pub fn device_from_name(path: &Path) -> Option<IpAddr> {
    let name = path.file_name()?.to_str()?;
    let rest = ["CPE_device_", "OVOC_device_", "tmp_device_"]
        .iter()
        .find_map(|p| name.strip_prefix(p))?;
    rest.split('_').next()?.parse().ok()
}

/// Lost packets whose frame number `--merge` keeps, to comment them (8 bytes each).
const MAX_LOST_FRAMES: usize = 1_000_000;

/// What the report cannot say in its records: bounds reached, a clock that stepped.
fn warnings(r: &Report) -> Vec<String> {
    let o = r.overflow;
    let mut w = Vec::new();
    if o.waiting > 0 {
        w.push(format!(
            "analyze: {} packets were settled before their matching window ended (more than {} \
             waiting): counted as unmatchable, not lost",
            o.waiting,
            Params::default().max_waiting
        ));
    }
    if o.requests > 0 {
        w.push(format!(
            "analyze: {} requests were settled before their answer timeout (too many waiting)",
            o.requests
        ));
    }
    if o.windows > 0 {
        w.push(format!(
            "analyze: {} loss windows were merged into the previous one of their direction and \
             class (more than {} windows)",
            o.windows,
            Params::default().max_windows
        ));
    }
    if o.lost_frames > 0 {
        w.push(format!(
            "analyze: {} lost packets carry no comment in the merged file (more than \
             {MAX_LOST_FRAMES} lost)",
            o.lost_frames
        ));
    }
    if o.chain_limit > 0 {
        w.push(format!(
            "analyze: {} lookups stopped after {} packets of one key (a flood of identical \
             packets)",
            o.chain_limit,
            core::CHAIN_STEPS
        ));
    }
    if let Some((at, size)) = r.step {
        w.push(format!(
            "analyze: the CPE clock stepped by {:+.3} ms at {} (OVOC clock): one offset and \
             drift do not describe it, and times across the step are off by that much",
            size / 1e6,
            rfc3339(at)
        ));
    }
    w
}

/// One round of a session, analysed into `dir`: `analysis.jsonl` (the records `tc analyze`
/// prints), `merged.pcapng` and `timeline.svg`, each written under a temporary name and renamed
/// when complete (a failure leaves no temporary file behind); the warnings `tc analyze` prints
/// are logged. Returns the verdict and its sentence.
pub fn write_round(
    cpe: &Path,
    ovoc: &[PathBuf],
    device: IpAddr,
    dir: &Path,
    modes: crate::util::Modes,
) -> std::result::Result<(String, String), String> {
    let cfg = Config {
        cpe: cpe.to_path_buf(),
        ovoc: ovoc.to_vec(),
        device,
        ovoc_addr: None,
        clock: None,
        params: Params {
            max_lost_frames: MAX_LOST_FRAMES,
            ..Params::default()
        },
        hash_limit: usize::MAX,
    };
    let report = analyze(&cfg).map_err(|e| format!("reading captures: {e}"))?;
    let finish = |tmp: &Path, name: &str| -> std::result::Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let to = dir.join(name);
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(modes.file))
            .and_then(|_| modes.own(tmp, modes.file))
            .and_then(|_| std::fs::rename(tmp, &to))
            .map_err(|e| format!("writing {}: {e}", to.display()))
    };
    let tmp = |name: &str| dir.join(format!(".{name}.tmp"));
    let written = (|| {
        merge::write(&cfg, &report, &tmp("merged.pcapng"))
            .map_err(|e| format!("writing merged.pcapng: {e}"))?;
        finish(&tmp("merged.pcapng"), "merged.pcapng")?;
        plot::write(&report, None, &tmp("timeline.svg"))
            .map_err(|e| format!("writing timeline.svg: {e}"))?;
        finish(&tmp("timeline.svg"), "timeline.svg")?;
        let lines: Vec<u8> = events(&report)
            .iter()
            .flat_map(crate::emit::record)
            .collect();
        std::fs::write(tmp("analysis.jsonl"), lines)
            .map_err(|e| format!("writing analysis.jsonl: {e}"))?;
        finish(&tmp("analysis.jsonl"), "analysis.jsonl")
    })();
    if written.is_err() {
        for name in ["merged.pcapng", "timeline.svg", "analysis.jsonl"] {
            let _ = std::fs::remove_file(tmp(name));
        }
    }
    written?;
    for w in warnings(&report) {
        log::warn!("{}: {w}", dir.display());
    }
    Ok((
        report.verdict.verdict.to_string(),
        report.verdict.text.clone(),
    ))
}

/// `tc analyze`: resolve the arguments, analyse, print.
pub fn run(a: AnalyzeArgs) -> Result<ExitCode> {
    let device = match a.device {
        Some(d) => d,
        None => std::iter::once(&a.cpe)
            .chain(&a.ovoc)
            .find_map(|p| device_from_name(p))
            .ok_or_else(|| {
                Error::usage(
                    "no --device given, and the file names do not name one \
                     (CPE_device_<device>_<time>.pcap)",
                )
            })?,
    };
    let cfg = Config {
        cpe: a.cpe.clone(),
        ovoc: a.ovoc.clone(),
        device,
        ovoc_addr: a.ovoc_addr,
        clock: a.offset.map(|o| (o, a.drift_ppm.unwrap_or(0.0) * 1e-6)),
        params: Params {
            // Frame numbers of lost packets are needed only to comment them in the merged file.
            max_lost_frames: if a.merge.is_some() {
                MAX_LOST_FRAMES
            } else {
                0
            },
            ..Params::default()
        },
        hash_limit: usize::MAX,
    };
    let report = analyze(&cfg).map_err(|e| Error::failed(format!("reading captures: {e}")))?;
    if let Some(out) = &a.merge {
        merge::write(&cfg, &report, out)
            .map_err(|e| Error::failed(format!("writing {}: {e}", out.display())))?;
    }
    if let Some(out) = &a.plot {
        plot::write(&report, a.alarm_at, out)
            .map_err(|e| Error::failed(format!("writing {}: {e}", out.display())))?;
    }
    for ev in events(&report) {
        emit(&ev);
    }
    for w in warnings(&report) {
        crate::logging::warn_user(&w);
    }
    if std::io::stderr().is_terminal() {
        eprint!("{}", summary(&report));
    }
    Ok(ExitCode::Ok)
}

fn rfc3339(ns: i64) -> String {
    Utc::from_unix_micros(ns.div_euclid(1000)).rfc3339()
}

fn ms(ns: f64) -> f64 {
    (ns / 1e3).round() / 1e3
}

/// The report as records, in the order of the schema: inputs, clock, flows, requests, losses,
/// verdict.
pub fn events(r: &Report) -> Vec<Event> {
    let mut out: Vec<Event> = r.inputs.iter().map(|i| input_event(r, i)).collect();
    out.extend(clock_event(r));
    for ((dir, class), c) in &r.flows {
        out.push(Event::AnalyzeFlow {
            direction: DIRECTIONS[*dir].into(),
            class: class.name(),
            sent: c.sent,
            seen: c.seen,
            lost: c.lost,
            outside_window: c.outside_window,
            unmatchable: c.unmatchable,
            unexpected: c.unexpected,
        });
    }
    for ((dir, kind), q) in &r.requests {
        out.push(Event::AnalyzeRequests {
            direction: DIRECTIONS[*dir].into(),
            kind: kind.name().into(),
            sent: q.sent,
            answers_received: q.answers_received,
            arrived: q.arrived,
            answered: q.answered,
            unanswered_at_end: q.unanswered_at_end,
        });
    }
    for l in &r.losses {
        out.push(Event::AnalyzeLoss {
            direction: DIRECTIONS[l.window.dir].into(),
            class: l.window.class.name(),
            start_cpe: rfc3339(l.start_cpe),
            end_cpe: rfc3339(l.end_cpe),
            start_ovoc: rfc3339(l.start_ovoc),
            end_ovoc: rfc3339(l.end_ovoc),
            packets: l.window.packets,
        });
    }
    out.push(Event::AnalyzeVerdict {
        device: r.device.to_string(),
        verdict: r.verdict.verdict.into(),
        text: r.verdict.text.clone(),
    });
    out
}

fn input_event(r: &Report, i: &Input) -> Event {
    let s = &i.stats;
    Event::AnalyzeInput {
        side: if i.side == OVOC { "ovoc" } else { "cpe" }.into(),
        file: s.path.display().to_string(),
        format: s.format.into(),
        link_type: s
            .link_types
            .iter()
            .map(|l| read::linktype_name(*l))
            .collect::<Vec<_>>()
            .join(","),
        packets: s.packets,
        selected: i.selected,
        first: s.first_ns.map(rfc3339),
        last: s.last_ns.map(rfc3339),
        ring_position: i.ring_position,
        wrapped: i.side == OVOC && r.wrapped,
        truncated: s.truncated,
        snapped: s.snapped,
        capture_drops: s.capture_drops,
        bad_time: s.bad_time,
        not_ip: i.dissected.not_ip,
        fragments_given_up: i.dissected.fragments_given_up,
    }
}

fn clock_event(r: &Report) -> Option<Event> {
    let c = r.clock.as_ref()?;
    let e = &c.estimate;
    let delay = |d: Option<clock::Delay>| {
        d.map(|d| DelayMs {
            min: ms(d.min),
            mean: ms(d.mean),
            max: ms(d.max),
        })
    };
    Some(Event::AnalyzeClock {
        offset_ms: ms(e.model.offset),
        drift_ppm: (e.model.drift * 1e9).round() / 1e3,
        uncertainty_ms: e.uncertainty.map(ms),
        at: rfc3339(e.model.at),
        one_way_delay_ms: OneWayDelays {
            ovoc_to_cpe: delay(e.delay[O2C]),
            cpe_to_ovoc: delay(e.delay[C2O]),
        },
        matched: c.matched,
        method: if c.given { "given" } else { "estimated" }.into(),
        ovoc_addr: r.ovoc_addr.map(|a| a.to_string()),
        ovoc_addr_source: if r.ovoc_addr_given { "given" } else { "found" }.into(),
        step_ms: r.step.map(|s| ms(s.1)),
        step_at: r.step.map(|s| rfc3339(s.0)),
    })
}

/// A few lines for a person at a terminal.
fn summary(r: &Report) -> String {
    let mut s = format!(
        "tc analyze {}: {}\n  {}\n",
        r.device, r.verdict.verdict, r.verdict.text
    );
    if let Some(c) = &r.clock {
        let e = &c.estimate;
        s += &format!(
            "  clock: CPE {:+.3} ms vs OVOC, drift {:+.2} ppm{} ({} packets matched{})\n",
            e.model.offset / 1e6,
            e.model.drift * 1e6,
            e.uncertainty.map_or(String::new(), |u| format!(
                ", uncertainty ±{:.3} ms",
                u / 1e6
            )),
            c.matched,
            if c.given { ", offset given" } else { "" }
        );
    }
    for dir in [O2C, C2O] {
        let (mut sent, mut seen, mut lost, mut out) = (0, 0, 0, 0);
        for ((d, _), c) in &r.flows {
            if *d == dir {
                sent += c.sent;
                seen += c.seen;
                lost += c.lost;
                out += c.outside_window;
            }
        }
        s += &format!(
            "  {}: {sent} sent, {seen} seen, {lost} lost, {out} outside the other capture\n",
            DIRECTIONS[dir]
        );
    }
    if r.wrapped {
        s += "  the OVOC ring wrapped: its oldest packets were overwritten\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_from_the_names_tc_writes() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "/x/CPE_device_192.0.2.10_2026-11-27T07.42.13.899869.pcap",
                Some("192.0.2.10"),
            ),
            (
                "OVOC_device_10.0.0.1_2026-11-27T07.42.13.899869-2.pcap",
                Some("10.0.0.1"),
            ),
            (
                "tmp_device_2001:db8::1_2026-11-27T07.42.13.899869.pcap0",
                Some("2001:db8::1"),
            ),
            ("CPE_device_host.example_2026.pcap", None),
            ("capture.pcap", None),
        ];
        for (name, want) in cases {
            let got = device_from_name(Path::new(name));
            assert_eq!(got, want.map(|w| w.parse().unwrap()), "{name}");
        }
    }

    #[test]
    fn pairs_far_from_the_median_are_coincidences() {
        const S: i64 = 1_000_000_000;
        let pairs = vec![
            (0, 1, 3 * S),
            (1, 2, 3 * S - 5),
            (0, 3, 3 * S + 9),
            (0, 4, 70 * S),
        ];
        assert_eq!(near_median(pairs).len(), 3);
        assert!(near_median(Vec::new()).is_empty());
    }

    #[test]
    fn directions_by_side() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let (dev, ovoc, seen, other) = (
            ip("198.51.100.7"),
            ip("10.20.0.5"),
            ip("203.0.113.5"),
            ip("10.9.9.9"),
        );
        let p = |src, dst| Pkt {
            src,
            dst,
            class: Class::Other,
            key: 0,
            seq: 0,
            role: dissect::Role::None,
            strong: true,
            cut: false,
        };
        let peers = Peers(vec![(Some(ovoc), seen)]);
        let any = Peers(vec![(None, seen)]);
        let cases = [
            (&peers, OVOC, p(ovoc, dev), Some(O2C)),
            (&peers, OVOC, p(dev, ovoc), Some(C2O)),
            // The device's traffic with another host of the OVOC side is not OVOC's.
            (&peers, OVOC, p(other, dev), None),
            (&any, OVOC, p(other, dev), Some(O2C)),
            (&peers, OVOC, p(ovoc, other), None),
            (&peers, CPE, p(seen, other), Some(O2C)),
            (&peers, CPE, p(other, seen), Some(C2O)),
            (&peers, CPE, p(other, dev), None),
        ];
        for (peers, side, pkt, want) in cases {
            assert_eq!(peers.direction(side, &pkt, dev), want, "{side} {pkt:?}");
        }
        assert_eq!(device_direction(&p(other, dev), dev), Some(O2C));
    }
}
