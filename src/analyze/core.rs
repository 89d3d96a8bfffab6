//! The matcher: a pure function of the two captures' packets, fed in OVOC-time order.
//!
//! Each side keeps the packets of the last `window` seconds: those it sent (waiting to be
//! finalised in their own order, matched or not) and those it received that nothing matched
//! yet. A packet is looked up among the other side's waiting packets by its key (joined with
//! its direction); among equal keys (retransmissions, repeated payloads) the candidate with the
//! same TCP sequence number and then the nearest in time is taken, which keeps duplicates in
//! time order. When a sent packet leaves the
//! window it is final: seen, lost, or outside the other capture's window (that capture had not
//! started or had ended: never counted as loss). So memory follows the packet rate times the
//! window, never the file size.
//!
//! Request/response exchanges are followed within each capture on its own, which is what tells
//! "the request never arrived" (the network) from "it arrived and was not answered" (the host).

use std::collections::{BTreeMap, VecDeque};

use super::clock::Timeline;
use super::dissect::{Class, Exchange, Pkt, Role};

pub const OVOC: usize = 0;
pub const CPE: usize = 1;
/// Directions index arrays: 0 = OVOC to CPE, 1 = CPE to OVOC.
pub const O2C: usize = 0;
pub const C2O: usize = 1;

pub const DIRECTIONS: [&str; 2] = ["ovoc_to_cpe", "cpe_to_ovoc"];

/// Which side sends in a direction.
pub fn sender(dir: usize) -> usize {
    if dir == O2C {
        OVOC
    } else {
        CPE
    }
}

/// Maps keyed by hashes already (the packet keys) or by a few numbers: rustc's FxHash (the
/// rustc-hash crate) instead of std's SipHash, which was a tenth of the analysis. A crafted
/// capture can collide keys on purpose whatever the hasher (they come from a fixed-seed hash);
/// that only slows it down, and the chain walk is bounded ([`CHAIN_STEPS`]).
type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// Candidates looked at among the waiting packets of one key; beyond them the walk stops (and
/// says so in [`Outcome::chain_limit`]). Chains hold unmatched packets only.
pub const CHAIN_STEPS: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Largest difference between a packet's times on both sides (after the clock correction)
    /// that still makes them the same packet, ns.
    pub window: i64,
    /// A packet sent this close to the other capture's last packet may have arrived after it
    /// ended: outside its window, ns.
    pub end_guard: i64,
    /// A packet sent before the other capture's first packet plus this is outside its window.
    pub start_guard: i64,
    /// How long a request waits for its answer, ns.
    pub answer_timeout: i64,
    /// Most packets waiting per side. The window bounds them in time; this bounds them when
    /// the packet rate does not (a flood): the oldest are settled early, as unmatchable.
    pub max_waiting: usize,
    /// Most requests waiting for their answer per side; beyond, the oldest are settled early.
    pub max_requests: usize,
    /// Most loss windows kept; beyond, a window is merged into the last one of its own
    /// direction and class (never another's).
    pub max_windows: usize,
    /// Frame numbers of lost packets kept for `--merge` (0 without it); beyond, counted only.
    pub max_lost_frames: usize,
}

/// The default bounds hold the worst case near 50 MB: 2 x 262,144 waiting packets of 64 bytes
/// with their chain index, 2 x 65,536 open requests; a management link's 5 s window is
/// thousands of packets, so they are reached only by a flood.
impl Default for Params {
    fn default() -> Params {
        Params {
            window: 5_000_000_000,
            end_guard: 1_000_000_000,
            start_guard: 100_000_000,
            answer_timeout: 10_000_000_000,
            max_waiting: 1 << 18,
            max_requests: 1 << 16,
            max_windows: 100_000,
            max_lost_frames: 0,
        }
    }
}

/// One packet as the matcher sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub side: usize,
    pub dir: usize,
    /// OVOC time (the CPE's own time corrected by the running clock estimate).
    pub t: i64,
    /// The time in its own capture's clock.
    pub native: i64,
    /// The frame's number in its side's capture, from 0 (the merged file's comments).
    pub frame: u64,
    pub pkt: Pkt,
}

/// What a waiting packet keeps of its [`Seen`]: a few words, so that a window of a busy
/// capture stays small and moves fast.
#[derive(Debug, Clone, Copy)]
struct Compact {
    t: i64,
    native: i64,
    frame: u64,
    seq: u32,
    class: Class,
    side: u8,
    dir: u8,
    strong: bool,
    /// Cut by the capture's snap length below what the keys cover: cannot be matched.
    cut: bool,
}

impl Compact {
    fn of(s: &Seen) -> Compact {
        Compact {
            t: s.t,
            native: s.native,
            frame: s.frame,
            seq: s.pkt.seq,
            class: s.pkt.class,
            side: s.side as u8,
            dir: s.dir as u8,
            strong: s.pkt.strong,
            cut: s.pkt.cut,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    seen: Compact,
    /// The previous waiting entry of this side with the same key, by id.
    prev: u64,
    /// Sent: matched by a packet of the other side. Received: taken by a sent packet.
    matched: bool,
    /// The far side's native time of the match (sent entries), for the clock samples.
    far_native: i64,
}

const NONE: u64 = u64::MAX;

/// The waiting packets of one side: a FIFO in arrival order, and chains of equal keys linked
/// from the newest back. Only unmatched packets are linked (a taken one is unlinked), so a
/// walk's steps are all candidates. The map holds each chain's newest id and is not touched
/// when entries leave the FIFO (a lookup there was most of the cost of expiry: a cache miss per
/// packet); chains whose newest entry left are dropped in bulk once they are as many as the
/// live ones.
#[derive(Default)]
struct Waiting {
    fifo: VecDeque<Entry>,
    /// Id of the FIFO's front entry.
    base: u64,
    /// key -> id of the chain's newest entry (stale when below `base`).
    tails: FastMap<u64, u64>,
    /// Walks cut short at [`CHAIN_STEPS`].
    chain_limit: u64,
}

impl Waiting {
    /// Queues an entry; `link` puts it in its key's chain (an unmatched one, to be found).
    fn push(&mut self, key: u64, mut e: Entry, link: bool) {
        let id = self.base + self.fifo.len() as u64;
        if link {
            if let Some(last) = self.tails.insert(key, id) {
                e.prev = last;
            }
        }
        self.fifo.push_back(e);
        if self.tails.len() > 2 * self.fifo.len() + 1024 {
            let base = self.base;
            self.tails.retain(|_, last| *last >= base);
        }
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Entry> {
        let i = id.checked_sub(self.base)?;
        self.fifo.get_mut(i as usize)
    }

    /// The unmatched entry with this key within `window` of `t` (corrected time) that is
    /// nearest to `expected` (where its copy should be: a one-way delay before or after `t`),
    /// preferring one with sequence number `seq` (when not 0), taken out of its chain. Nearest,
    /// not first: when equal keys meet (pure ACKs of look-alike sessions whose 16-bit IP ids
    /// collide, a retransmission of which only one copy arrived), the copy one delay away is
    /// the right one, and copies that all arrived still pair up in time order.
    fn take(
        &mut self,
        key: u64,
        t: i64,
        expected: i64,
        seq: u32,
        window: i64,
    ) -> Option<&mut Entry> {
        let mut id = *self.tails.get(&key)?;
        // (cost, id, the newer entry whose `prev` is it)
        let mut best: Option<((bool, i64), u64, Option<u64>)> = None;
        let mut newer = None;
        let mut steps = 0;
        while id != NONE {
            if steps == CHAIN_STEPS {
                self.chain_limit += 1;
                break;
            }
            let Some(e) = self.get_mut(id) else { break };
            if (e.seen.t - t).abs() <= window {
                let cost = (seq != 0 && e.seen.seq != seq, (e.seen.t - expected).abs());
                if best.is_none_or(|(c, ..)| cost <= c) {
                    best = Some((cost, id, newer));
                }
            }
            newer = Some(id);
            id = e.prev;
            steps += 1;
        }
        let (_, id, newer) = best?;
        let prev = self.get_mut(id)?.prev;
        let base = self.base;
        match newer.and_then(|n| self.get_mut(n)) {
            Some(n) => n.prev = prev,
            None if prev != NONE && prev >= base => {
                self.tails.insert(key, prev);
            }
            None => {
                self.tails.remove(&key);
            }
        }
        let e = self.get_mut(id)?;
        e.prev = NONE;
        Some(e)
    }

    /// Removes the front entry if it is older than `before`.
    fn pop_before(&mut self, before: i64) -> Option<Entry> {
        if self.fifo.front()?.seen.t >= before {
            return None;
        }
        self.pop()
    }

    fn pop(&mut self) -> Option<Entry> {
        let e = self.fifo.pop_front()?;
        self.base += 1;
        Some(e)
    }
}

fn chain_key(s: &Seen) -> u64 {
    s.pkt.key ^ (s.dir as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Counts per direction and class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounts {
    pub sent: u64,
    pub seen: u64,
    pub lost: u64,
    pub outside_window: u64,
    /// Sent, but neither seen nor lost: cut by a snap length below what the keys cover, or
    /// settled early when the matcher's bounds were reached, or in the same window as a copy
    /// that the receiver's capture cut.
    pub unmatchable: u64,
    /// Received (this direction's receiver), and no sent packet matched it: the sender's
    /// capture missed it (its drops), or the receiver's duplicated it.
    pub unexpected: u64,
}

/// A run of lost packets of one direction and class, no packet of theirs seen in between.
/// Times are the sender's (native) and OVOC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossWindow {
    pub dir: usize,
    pub class: Class,
    pub start_native: i64,
    pub end_native: i64,
    pub start_t: i64,
    pub end_t: i64,
    pub packets: u64,
}

/// Requests of one direction and kind, as one capture saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeCounts {
    pub requests: u64,
    pub answered: u64,
    /// Requests still unanswered at the end, in a row (no answered request after them).
    pub trailing_unanswered: u64,
    /// Native time of the first of those.
    pub trailing_since: Option<i64>,
}

/// Exchanges followed in one capture.
#[derive(Default)]
struct Exchanges {
    /// (kind, id) -> (requests waiting, answered since the last one).
    open: FastMap<(Exchange, u64), (u32, bool)>,
    fifo: VecDeque<(i64, usize, Exchange, u64)>,
    counts: FastMap<(usize, Exchange), ExchangeCounts>,
    /// Requests settled before their timeout because `max` were waiting.
    early: u64,
}

impl Exchanges {
    fn request(&mut self, native: i64, dir: usize, kind: Exchange, id: u64, max: usize) {
        let e = self.open.entry((kind, id)).or_insert((0, false));
        if e.0 == 0 {
            e.1 = false;
        }
        e.0 = e.0.saturating_add(1);
        self.fifo.push_back((native, dir, kind, id));
        while self.fifo.len() > max {
            self.early += 1;
            self.settle_front();
        }
    }

    fn response(&mut self, kind: Exchange, id: u64) {
        if let Some(e) = self.open.get_mut(&(kind, id)) {
            e.1 = true;
        }
    }

    /// Settles the requests older than `before` (native time); at the end, those younger are
    /// left out as undecided.
    fn settle(&mut self, before: i64) {
        while self.fifo.front().is_some_and(|f| f.0 < before) {
            self.settle_front();
        }
    }

    fn settle_front(&mut self) {
        let Some((t, dir, kind, id)) = self.fifo.pop_front() else {
            return;
        };
        let answered = match self.open.get_mut(&(kind, id)) {
            Some(e) => {
                e.0 -= 1;
                let a = e.1;
                if e.0 == 0 {
                    self.open.remove(&(kind, id));
                }
                a
            }
            None => false,
        };
        let c = self.counts.entry((dir, kind)).or_default();
        c.requests += 1;
        if answered {
            c.answered += 1;
            c.trailing_unanswered = 0;
            c.trailing_since = None;
        } else {
            c.trailing_unanswered += 1;
            c.trailing_since.get_or_insert(t);
        }
    }
}

/// Where the matcher's bounds were reached: what it let go of, counted (never silent).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// Packets settled before their window ended ([`Params::max_waiting`]).
    pub waiting: u64,
    /// Requests settled before their answer timeout ([`Params::max_requests`]).
    pub requests: u64,
    /// Loss windows merged into the previous one of their direction and class.
    pub windows: u64,
    /// Lost packets whose frame number was not kept (their merged-file comment is missing).
    pub lost_frames: u64,
    /// Lookups cut short at [`CHAIN_STEPS`] candidates of one key.
    pub chain_limit: u64,
}

/// What the matcher found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub flows: BTreeMap<(usize, Class), FlowCounts>,
    pub losses: Vec<LossWindow>,
    /// Frames (per side) of the packets lost in transit, the first `max_lost_frames`.
    pub lost_frames: [Vec<u64>; 2],
    /// Per side, per (request direction, kind).
    pub exchanges: [BTreeMap<(usize, Exchange), ExchangeCounts>; 2],
    /// Per direction, OVOC time of the last sent packet that the far side saw.
    pub last_seen: [Option<i64>; 2],
    pub overflow: Overflow,
}

pub struct Matcher {
    p: Params,
    waiting: [Waiting; 2],
    exchanges: [Exchanges; 2],
    /// Each side's capture window in OVOC time: first packet, and last once it ended.
    first: [Option<i64>; 2],
    last: [Option<i64>; 2],
    last_native: [i64; 2],
    ended: [bool; 2],
    open_runs: FastMap<(usize, Class), LossWindow>,
    /// Index in `out.losses` of the last closed window of each direction and class.
    last_window: FastMap<(usize, Class), usize>,
    /// Per side, the OVOC time of the newest received packet it let go of unmatched (early
    /// by `max_waiting`, or cut by its snap length): a sent packet near it cannot be called
    /// lost.
    blind: [Option<i64>; 2],
    /// Counted here, handed over sorted as `Outcome::flows`.
    flows: FastMap<(usize, Class), FlowCounts>,
    pub timeline: Timeline,
    /// See [`Matcher::set_delay`].
    delay: i64,
    out: Outcome,
}

impl Matcher {
    pub fn new(p: Params, origin: i64) -> Matcher {
        Matcher {
            p,
            waiting: Default::default(),
            exchanges: Default::default(),
            first: [None; 2],
            last: [None; 2],
            last_native: [i64::MIN; 2],
            ended: [false; 2],
            open_runs: FastMap::default(),
            last_window: FastMap::default(),
            blind: [None; 2],
            flows: FastMap::default(),
            timeline: Timeline::new(origin),
            delay: 0,
            out: Outcome::default(),
        }
    }

    /// The one-way delay expected in corrected time (the clock estimate makes both directions'
    /// equal), for choosing among equal keys.
    pub fn set_delay(&mut self, delay: i64) {
        self.delay = delay.max(0);
    }

    /// A frame of `side` at OVOC time `t` that is not part of the analysed traffic: it still
    /// says the capture was running.
    pub fn running(&mut self, side: usize, t: i64, native: i64) {
        self.first[side].get_or_insert(t);
        self.last[side] = Some(self.last[side].map_or(t, |l| l.max(t)));
        self.last_native[side] = self.last_native[side].max(native);
    }

    /// The side's capture has a packet near OVOC time `t` that cannot be compared (a record
    /// skipped for its timestamp): the other side's packets near it are unmatchable, not lost.
    pub fn blind(&mut self, side: usize, t: i64) {
        self.blind[side] = Some(self.blind[side].map_or(t, |b| b.max(t)));
    }

    /// The side's capture has no more packets.
    pub fn end(&mut self, side: usize) {
        self.ended[side] = true;
    }

    pub fn push(&mut self, s: Seen) {
        self.running(s.side, s.t, s.native);
        self.expire(s.t - self.p.window);
        self.exchange(&s);
        let is_sent = sender(s.dir) == s.side;
        let entry = |matched: bool, far_native: i64| Entry {
            seen: Compact::of(&s),
            prev: NONE,
            matched,
            far_native,
        };
        if s.pkt.cut {
            // Nothing can match it; a sent one is settled as unmatchable, a received one
            // makes the sent packets around it unmatchable rather than lost.
            if !is_sent {
                self.blind[s.side] = Some(self.blind[s.side].map_or(s.t, |b| b.max(s.t)));
            }
            return self.queue(s.side, 0, entry(false, 0), false);
        }
        let key = chain_key(&s);
        // A received packet's copy was sent a delay earlier; a sent one's arrives a delay later.
        let expected = if is_sent {
            s.t + self.delay
        } else {
            s.t - self.delay
        };
        let window = self.p.window;
        if let Some(e) = self.waiting[1 - s.side].take(key, s.t, expected, s.pkt.seq, window) {
            e.matched = true;
            e.far_native = s.native;
            let far = e.seen.native;
            if is_sent {
                // The receiver's copy came first; this one is final when it leaves the window.
                self.queue(s.side, key, entry(true, far), false);
            }
            return;
        }
        self.queue(s.side, key, entry(false, 0), true);
    }

    /// Queues an entry, settling the oldest early when the side holds `max_waiting`.
    fn queue(&mut self, side: usize, key: u64, e: Entry, link: bool) {
        self.waiting[side].push(key, e, link);
        while self.waiting[side].fifo.len() > self.p.max_waiting {
            let Some(old) = self.waiting[side].pop() else {
                break;
            };
            self.out.overflow.waiting += 1;
            if !old.matched && sender(usize::from(old.seen.dir)) != side {
                let t = old.seen.t;
                self.blind[side] = Some(self.blind[side].map_or(t, |b| b.max(t)));
            }
            self.finalize(old, true);
        }
    }

    fn exchange(&mut self, s: &Seen) {
        let x = &mut self.exchanges[s.side];
        match s.pkt.role {
            Role::Request(kind, id) => x.request(s.native, s.dir, kind, id, self.p.max_requests),
            Role::Response(kind, id) => x.response(kind, id),
            Role::None => {}
        }
        x.settle(s.native.saturating_sub(self.p.answer_timeout));
    }

    fn expire(&mut self, before: i64) {
        for side in [OVOC, CPE] {
            while let Some(e) = self.waiting[side].pop_before(before) {
                self.finalize(e, false);
            }
        }
    }

    /// A packet leaves the window: counted as seen, lost, outside the other capture's window,
    /// or unmatchable (`early`: settled before its window ended, by the bounds).
    fn finalize(&mut self, e: Entry, early: bool) {
        let s = e.seen;
        let (side, dir) = (usize::from(s.side), usize::from(s.dir));
        let flow = self.flows.entry((dir, s.class)).or_default();
        if sender(dir) != side {
            if !e.matched && !s.cut && !early {
                flow.unexpected += 1;
            }
            return;
        }
        let far = 1 - side;
        flow.sent += 1;
        let bucket = self.timeline.at(s.t);
        bucket.dir[dir].sent += 1;
        if e.matched {
            flow.seen += 1;
            bucket.dir[dir].seen += 1;
            let (t_ovoc, t_cpe) = if side == OVOC {
                (s.native, e.far_native)
            } else {
                (e.far_native, s.native)
            };
            // Only packets with a payload time the clocks: two pure ACKs whose IP ids collide
            // could be matched across sessions, and one wrong sample bends an envelope.
            if s.strong {
                self.timeline.sample(dir, t_ovoc, t_cpe - t_ovoc);
            }
            let last = &mut self.out.last_seen[dir];
            *last = Some(last.map_or(s.t, |l: i64| l.max(s.t)));
            if let Some(w) = self.open_runs.remove(&(dir, s.class)) {
                self.close(w);
            }
            return;
        }
        let started = self.first[far].is_some_and(|f| s.t >= f + self.p.start_guard);
        let ended = self.ended[far] && self.last[far].is_none_or(|l| s.t + self.p.end_guard > l);
        if !started || ended {
            flow.outside_window += 1;
            return;
        }
        let blind = self.blind[far].is_some_and(|b| (b - s.t).abs() <= self.p.window);
        if early || s.cut || blind {
            flow.unmatchable += 1;
            return;
        }
        self.lost(s, dir);
    }

    fn lost(&mut self, s: Compact, dir: usize) {
        let side = usize::from(s.side);
        self.flows.entry((dir, s.class)).or_default().lost += 1;
        self.timeline.at(s.t).dir[dir].lost += 1;
        if self.out.lost_frames[side].len() < self.p.max_lost_frames {
            self.out.lost_frames[side].push(s.frame);
        } else if self.p.max_lost_frames > 0 {
            self.out.overflow.lost_frames += 1;
        }
        let run = self.open_runs.entry((dir, s.class)).or_insert(LossWindow {
            dir,
            class: s.class,
            start_native: s.native,
            end_native: s.native,
            start_t: s.t,
            end_t: s.t,
            packets: 0,
        });
        run.end_native = s.native;
        run.end_t = s.t;
        run.packets += 1;
    }

    /// A loss window is over. Past `max_windows`, it joins the last one of its own direction
    /// and class; the first of each is always kept, so every direction with losses has one.
    fn close(&mut self, w: LossWindow) {
        let k = (w.dir, w.class);
        let last = self.last_window.get(&k).copied();
        match last {
            Some(i) if self.out.losses.len() >= self.p.max_windows => {
                self.out.overflow.windows += 1;
                let l = &mut self.out.losses[i];
                l.packets += w.packets;
                l.end_native = l.end_native.max(w.end_native);
                l.end_t = l.end_t.max(w.end_t);
            }
            _ => {
                self.last_window.insert(k, self.out.losses.len());
                self.out.losses.push(w);
            }
        }
    }

    /// Both captures ended: settles everything still waiting.
    pub fn finish(mut self) -> (Outcome, Timeline) {
        self.ended = [true, true];
        self.expire(i64::MAX);
        let mut runs: Vec<LossWindow> = std::mem::take(&mut self.open_runs).into_values().collect();
        runs.sort_by_key(|w| (w.start_t, w.dir, w.class));
        for w in runs {
            self.close(w);
        }
        self.out.flows = std::mem::take(&mut self.flows).into_iter().collect();
        self.out.losses.sort_by_key(|w| (w.start_t, w.dir, w.class));
        for side in [OVOC, CPE] {
            // Requests whose answer could have come after the capture ended are undecided.
            let end = self.last_native[side];
            let x = &mut self.exchanges[side];
            let cut = end.saturating_sub(self.p.answer_timeout);
            x.settle(cut);
            self.out.overflow.requests += x.early;
            self.out.exchanges[side] = std::mem::take(&mut x.counts).into_iter().collect();
            self.out.overflow.chain_limit += self.waiting[side].chain_limit;
        }
        for v in &mut self.out.lost_frames {
            v.sort_unstable();
        }
        (self.out, self.timeline)
    }

    /// The capture windows in OVOC time: (first, last) per side.
    pub fn windows(&self) -> [Option<(i64, i64)>; 2] {
        [0, 1].map(|s| Some((self.first[s]?, self.last[s]?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const MS: i64 = 1_000_000;
    /// A frame outside the analysed traffic: its capture was running.
    const RUNNING: usize = 9;

    fn pkt(key: u64, class: Class, role: Role) -> Pkt {
        let a = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Pkt {
            src: a,
            dst: a,
            class,
            key,
            seq: 0,
            role,
            strong: true,
            cut: false,
        }
    }

    /// A scenario as (side, dir, time ms, key): runs it and returns the outcome.
    fn run(events: &[(usize, usize, i64, u64)]) -> Outcome {
        run_with(events, |_, _| Role::None)
    }

    fn run_with(events: &[(usize, usize, i64, u64)], role: impl Fn(usize, u64) -> Role) -> Outcome {
        let p = Params {
            max_lost_frames: 100,
            ..Params::default()
        };
        let mut m = Matcher::new(p, 0);
        let mut ev = events.to_vec();
        ev.sort_by_key(|e| e.2);
        for (i, &(side, dir, t, key)) in ev.iter().enumerate() {
            if dir == RUNNING {
                m.running(side, t * MS, t * MS);
                continue;
            }
            m.push(Seen {
                side,
                dir,
                t: t * MS,
                native: t * MS + if side == CPE { 7 } else { 0 },
                frame: i as u64,
                pkt: pkt(key, Class::Snmp, role(side, key)),
            });
        }
        m.finish().0
    }

    fn counts(o: &Outcome, dir: usize) -> (u64, u64, u64, u64) {
        let c = o
            .flows
            .get(&(dir, Class::Snmp))
            .copied()
            .unwrap_or_default();
        (c.sent, c.seen, c.lost, c.outside_window)
    }

    #[test]
    fn losses_windows_and_matches() {
        // Capture windows: OVOC 0..20 s, CPE 1..20 s.
        let mut ev = vec![(OVOC, O2C, 0, 1000), (CPE, RUNNING, 1000, 0)];
        for i in 0..10 {
            let t = 2000 + i * 1000;
            ev.push((OVOC, O2C, t, i as u64));
            // Packets 4..6 from OVOC never arrive.
            if !(4..=6).contains(&i) {
                ev.push((CPE, O2C, t + 20, i as u64));
            }
            ev.push((CPE, C2O, t + 500, 100 + i as u64));
            ev.push((OVOC, C2O, t + 520, 100 + i as u64));
        }
        ev.push((OVOC, O2C, 20_000, 77));
        ev.push((CPE, C2O, 20_000, 78));
        let o = run(&ev);
        // OVOC's first packet (at 0) went before the CPE capture started; 77 and 78 were sent
        // as both captures ended.
        assert_eq!(counts(&o, O2C), (12, 7, 3, 2));
        assert_eq!(counts(&o, C2O), (11, 10, 0, 1));
        assert_eq!(o.losses.len(), 1);
        let w = o.losses[0];
        assert_eq!(
            (w.dir, w.packets, w.start_t, w.end_t),
            (O2C, 3, 6000 * MS, 8000 * MS)
        );
        assert_eq!(o.lost_frames[OVOC].len(), 3);
        assert!(o.lost_frames[CPE].is_empty());
    }

    #[test]
    fn duplicates_match_in_time_order_and_receivers_may_come_first() {
        let ev = [
            (OVOC, O2C, 0, 9),
            (CPE, C2O, 0, 8),
            // Key 5 sent twice, arrived once: one loss.
            (OVOC, O2C, 1000, 5),
            (OVOC, O2C, 2000, 5),
            (CPE, O2C, 1010, 5),
            // The CPE clock reads early: its copy is before OVOC's send.
            (CPE, O2C, 2990, 6),
            (OVOC, O2C, 3000, 6),
            // Key 7 sent twice, only the second copy arrived: the first is the lost one.
            (OVOC, O2C, 3500, 7),
            (OVOC, O2C, 4000, 7),
            (CPE, O2C, 4010, 7),
            // Key 8 sent twice, both arrived: both seen.
            (OVOC, O2C, 5000, 8),
            (OVOC, O2C, 5200, 8),
            (CPE, O2C, 5010, 8),
            (CPE, O2C, 5210, 8),
            (OVOC, O2C, 9000, 1),
            (CPE, O2C, 9001, 1),
            (OVOC, C2O, 9000, 2),
            (CPE, C2O, 9000, 2),
        ];
        let o = run(&ev);
        assert_eq!(counts(&o, O2C).2, 2);
        let starts: Vec<i64> = o.losses.iter().map(|w| w.start_t / MS).collect();
        // Key 6 got through at 3000, between the two losses: two windows.
        assert_eq!(starts, [2000, 3500]);
        assert_eq!(counts(&o, O2C).1, 6);
    }

    /// Two copies sent 42 ms apart, both waiting (the CPE's clock is behind, or the path is
    /// slow) when the first arrives 76 ms after the first was sent: nearer in time to the
    /// second copy, but one delay away from the first.
    #[test]
    fn equal_keys_pair_one_delay_apart() {
        for (delay_ms, want) in [(77, [-76, -79]), (0, [-34, -121])] {
            let mut m = Matcher::new(Params::default(), 0);
            m.set_delay(delay_ms * MS);
            let ev = [
                (OVOC, O2C, 0, 1),
                (CPE, C2O, 0, 2),
                (CPE, C2O, 960, 5),
                (CPE, C2O, 1002, 5),
                (OVOC, C2O, 1036, 5),
                (OVOC, C2O, 1081, 5),
            ];
            for (i, &(side, dir, t, key)) in ev.iter().enumerate() {
                m.push(Seen {
                    side,
                    dir,
                    t: t * MS,
                    native: t * MS,
                    frame: i as u64,
                    pkt: pkt(key, Class::Tcp(443), Role::None),
                });
            }
            let (o, tl) = m.finish();
            assert_eq!(o.flows[&(C2O, Class::Tcp(443))].seen, 2, "{delay_ms}");
            let b = tl.buckets.iter().find(|b| b.dir[C2O].n == 2).unwrap().dir[C2O];
            assert_eq!([b.max / MS, b.min / MS], want, "{delay_ms}");
        }
    }

    #[test]
    fn far_apart_copies_are_not_the_same_packet() {
        let ev = [
            (OVOC, O2C, 0, 3),
            (CPE, C2O, 0, 4),
            (OVOC, O2C, 1000, 5),
            (CPE, O2C, 7000, 5),
            (OVOC, O2C, 20_000, 6),
            (CPE, O2C, 20_000, 6),
        ];
        let o = run(&ev);
        assert_eq!(counts(&o, O2C).2, 1);
        assert_eq!(o.flows[&(O2C, Class::Snmp)].unexpected, 1);
    }

    fn seen(side: usize, dir: usize, t_ms: i64, key: u64, class: Class) -> Seen {
        Seen {
            side,
            dir,
            t: t_ms * MS,
            native: t_ms * MS,
            frame: t_ms as u64,
            pkt: pkt(key, class, Role::None),
        }
    }

    /// Past `max_windows`, windows join the last one of their own direction and class: never
    /// another's, never a panic, and every direction with losses keeps a window.
    #[test]
    fn the_window_cap_merges_within_a_direction_and_class() {
        let p = Params {
            max_windows: 2,
            ..Params::default()
        };
        let mut m = Matcher::new(p, 0);
        m.push(seen(OVOC, O2C, 0, 1, Class::Snmp));
        m.push(seen(CPE, C2O, 0, 2, Class::Snmp));
        // Every 2 s OVOC sends a lost SNMP packet then a seen one (a window each time); the
        // CPE sends a lost syslog packet once, late.
        for i in 1..20 {
            let t = i * 2000;
            m.push(seen(OVOC, O2C, t, 100 + i as u64, Class::Snmp));
            m.push(seen(OVOC, O2C, t + 500, 200 + i as u64, Class::Snmp));
            m.push(seen(CPE, O2C, t + 510, 200 + i as u64, Class::Snmp));
            if i == 15 {
                m.push(seen(CPE, C2O, t, 300, Class::Syslog));
                m.push(seen(CPE, C2O, t + 1, 301, Class::Syslog));
            }
        }
        m.push(seen(OVOC, O2C, 60_000, 9, Class::Icmp));
        m.push(seen(CPE, O2C, 60_000, 9, Class::Icmp));
        let (o, _) = m.finish();
        let of = |dir: usize, class: Class| -> (usize, u64) {
            let ws: Vec<&LossWindow> = o
                .losses
                .iter()
                .filter(|w| (w.dir, w.class) == (dir, class))
                .collect();
            (ws.len(), ws.iter().map(|w| w.packets).sum())
        };
        assert_eq!(of(O2C, Class::Snmp), (2, 19), "{:?}", o.losses);
        assert_eq!(of(C2O, Class::Syslog), (1, 2), "{:?}", o.losses);
        assert_eq!(o.losses.len(), 3);
        assert_eq!(o.overflow.windows, 17);
        assert_eq!(o.flows[&(O2C, Class::Snmp)].lost, 19);
    }

    /// More packets waiting than `max_waiting`: the oldest are settled early as unmatchable
    /// (not lost), the packets near a received one let go likewise, and it is counted.
    #[test]
    fn the_waiting_bound_makes_unmatchable_not_lost() {
        let p = Params {
            max_waiting: 50,
            ..Params::default()
        };
        let mut m = Matcher::new(p, 0);
        m.push(seen(OVOC, O2C, 0, 1, Class::Snmp));
        m.push(seen(CPE, C2O, 0, 2, Class::Snmp));
        // 200 packets from OVOC in 2 s, each seen by the CPE 1 s later.
        for i in 0..200 {
            m.push(seen(OVOC, O2C, 1000 + i * 10, 1000 + i as u64, Class::Snmp));
        }
        for i in 0..200 {
            m.push(seen(CPE, O2C, 2000 + i * 10, 1000 + i as u64, Class::Snmp));
        }
        m.push(seen(OVOC, O2C, 30_000, 7, Class::Icmp));
        m.push(seen(CPE, O2C, 30_000, 7, Class::Icmp));
        let (o, _) = m.finish();
        let f = o.flows[&(O2C, Class::Snmp)];
        assert_eq!(f.lost, 0, "{f:?}");
        assert_eq!(f.sent, 201);
        assert_eq!(f.seen + f.unmatchable + f.outside_window, 201, "{f:?}");
        assert!(
            f.unmatchable > 0 && o.overflow.waiting > 0,
            "{f:?} {:?}",
            o.overflow
        );
    }

    /// A hundred copies of one key (a repeated poll), all arrived: every one is matched. The
    /// chain walk stops after 64 candidates, and matched copies are not candidates (they are
    /// unlinked), so the older copies are still found.
    #[test]
    fn many_equal_keys_all_match() {
        let mut m = Matcher::new(Params::default(), 0);
        m.push(seen(OVOC, O2C, 0, 1, Class::Snmp));
        m.push(seen(CPE, C2O, 0, 2, Class::Snmp));
        for i in 0..100 {
            m.push(seen(OVOC, O2C, 1000 + i, 5, Class::Snmp));
        }
        for i in 0..100 {
            m.push(seen(CPE, O2C, 1500 + i, 5, Class::Snmp));
        }
        m.push(seen(OVOC, O2C, 30_000, 7, Class::Icmp));
        m.push(seen(CPE, O2C, 30_000, 7, Class::Icmp));
        let (o, _) = m.finish();
        let f = o.flows[&(O2C, Class::Snmp)];
        // The first packet (key 1) went before the CPE capture started.
        assert_eq!(
            (f.sent, f.seen, f.lost, f.unexpected),
            (101, 100, 0, 0),
            "{f:?}"
        );
        // The first lookups had more than 64 candidates: said, not silent.
        assert!(o.overflow.chain_limit > 0);
    }

    /// Cut by a snap length: a sent packet is unmatchable; one the receiver's capture cut makes
    /// the unmatched sent packets near it unmatchable, not lost; far from it, losses are losses.
    #[test]
    fn cut_packets_are_unmatchable() {
        let mut m = Matcher::new(Params::default(), 0);
        let cut = |mut s: Seen| {
            s.pkt.cut = true;
            s
        };
        m.push(seen(OVOC, O2C, 0, 1, Class::Snmp));
        m.push(seen(CPE, C2O, 0, 2, Class::Snmp));
        m.push(cut(seen(OVOC, O2C, 1000, 10, Class::Snmp)));
        m.push(seen(OVOC, O2C, 2000, 11, Class::Snmp));
        m.push(cut(seen(CPE, O2C, 2020, 11, Class::Snmp)));
        m.push(seen(OVOC, O2C, 20_000, 12, Class::Snmp));
        m.push(seen(OVOC, O2C, 21_000, 13, Class::Snmp));
        m.push(seen(OVOC, O2C, 40_000, 7, Class::Snmp));
        m.push(seen(CPE, O2C, 40_000, 7, Class::Snmp));
        let (o, _) = m.finish();
        let f = o.flows[&(O2C, Class::Snmp)];
        assert_eq!((f.unmatchable, f.lost, f.unexpected), (2, 2, 0), "{f:?}");
    }

    #[test]
    fn unanswered_requests_at_the_end_are_counted() {
        // Requests from OVOC at 0..10 s; the CPE answers those before 5 s.
        let mut ev = Vec::new();
        for i in 0..30 {
            let t = i * 1000;
            ev.push((OVOC, O2C, t, i as u64));
            ev.push((CPE, O2C, t + 10, i as u64));
            if t < 5000 {
                ev.push((CPE, C2O, t + 20, 1000 + i as u64));
                ev.push((OVOC, C2O, t + 30, 1000 + i as u64));
            }
        }
        let o = run_with(&ev, |side, key| match (side, key) {
            (_, k) if k < 1000 => Role::Request(Exchange::Snmp, k),
            (_, k) => Role::Response(Exchange::Snmp, k - 1000),
        });
        let cpe = o.exchanges[CPE][&(O2C, Exchange::Snmp)];
        // 30 requests; those of the capture's last 10 s are undecided (it ended).
        assert_eq!(cpe.requests, 19);
        assert_eq!(cpe.answered, 5);
        assert_eq!(cpe.trailing_unanswered, 14);
        assert_eq!(cpe.trailing_since, Some(5010 * MS + 7));
        assert_eq!(counts(&o, O2C).2, 0);
    }
}
