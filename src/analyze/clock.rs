//! The CPE clock against the OVOC clock, from packets seen in both captures.
//!
//! For a packet from OVOC to the CPE, `d = t_cpe - t_ovoc = offset + delay(OVOC->CPE)`; for one
//! from the CPE to OVOC, `d = offset - delay(CPE->OVOC)`. Delays are never negative and are
//! close to their minimum for the least-queued packets, so the lower envelope of the first kind
//! and the upper envelope of the second bound the offset from above and below. As in NTP and
//! in the clock-skew estimation literature (Moon, Skelly and Towsley's linear-programming
//! envelope), each envelope is the line under (over) every sample that is closest to the
//! samples on average: the hull edge spanning their mean time. Their mean is the offset under
//! the one assumption this needs, **equal minimum delays in both directions**; their slope is
//! the drift; half the gap between them is the uncertainty (the error if the minimum delays
//! were as unequal as they can be).
//!
//! Samples are kept per second of OVOC time (min, max and sums only), so memory follows the
//! captures' duration, not their packet count; a very long capture gets wider buckets.

/// Seconds, in nanoseconds.
const SECOND: i64 = 1_000_000_000;
/// Beyond this many buckets, neighbours are merged and the width doubles.
const MAX_BUCKETS: usize = 1 << 17;

/// One direction's share of a bucket: packet counts for the timeline, delay samples for the
/// clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirBucket {
    pub sent: u32,
    pub seen: u32,
    pub lost: u32,
    /// Matched samples of `t_cpe - t_ovoc`.
    pub n: u32,
    pub min: i64,
    pub t_min: i64,
    pub max: i64,
    pub t_max: i64,
}

impl DirBucket {
    fn sample(&mut self, t: i64, d: i64) {
        if self.n == 0 || d < self.min {
            self.min = d;
            self.t_min = t;
        }
        if self.n == 0 || d > self.max {
            self.max = d;
            self.t_max = t;
        }
        self.n += 1;
    }

    fn merge(&mut self, o: &DirBucket) {
        self.sent += o.sent;
        self.seen += o.seen;
        self.lost += o.lost;
        if o.n > 0 {
            if self.n == 0 || o.min < self.min {
                self.min = o.min;
                self.t_min = o.t_min;
            }
            if self.n == 0 || o.max > self.max {
                self.max = o.max;
                self.t_max = o.t_max;
            }
            self.n += o.n;
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Bucket {
    /// Indexed by direction: 0 = OVOC to CPE, 1 = CPE to OVOC.
    pub dir: [DirBucket; 2],
}

/// Running sums of one direction's samples, for the means.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    n: u64,
    /// Relative to the timeline's origin, seconds (f64 keeps 1e-7 s over a year).
    t: f64,
    d: f64,
}

/// Per-bucket counts and delay envelopes over OVOC time.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub origin: i64,
    pub width: i64,
    pub buckets: Vec<Bucket>,
    sums: [Sums; 2],
}

impl Timeline {
    pub fn new(origin: i64) -> Timeline {
        Timeline {
            origin,
            width: SECOND,
            buckets: Vec::new(),
            sums: [Sums::default(); 2],
        }
    }

    pub fn at(&mut self, t: i64) -> &mut Bucket {
        let mut i = ((t - self.origin).max(0) / self.width) as usize;
        while i >= MAX_BUCKETS {
            self.coarsen();
            i = ((t - self.origin).max(0) / self.width) as usize;
        }
        if i >= self.buckets.len() {
            self.buckets.resize(i + 1, Bucket::default());
        }
        &mut self.buckets[i]
    }

    fn coarsen(&mut self) {
        let old = std::mem::take(&mut self.buckets);
        self.buckets = old
            .chunks(2)
            .map(|pair| {
                let mut b = pair[0];
                if let Some(o) = pair.get(1) {
                    for d in 0..2 {
                        b.dir[d].merge(&o.dir[d]);
                    }
                }
                b
            })
            .collect();
        self.width *= 2;
    }

    /// A matched packet: `t` its OVOC time, `d` its CPE time minus its OVOC time.
    pub fn sample(&mut self, dir: usize, t: i64, d: i64) {
        self.at(t).dir[dir].sample(t, d);
        let s = &mut self.sums[dir];
        s.n += 1;
        s.t += (t - self.origin) as f64 / SECOND as f64;
        s.d += d as f64;
    }

    pub fn matched(&self) -> u64 {
        self.sums[0].n + self.sums[1].n
    }
}

/// `offset(t) = offset + drift * (t - at)`, in nanoseconds, t in OVOC time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    pub at: i64,
    pub offset: f64,
    /// Dimensionless (1e-6 = 1 ppm): CPE clock seconds gained per OVOC second.
    pub drift: f64,
}

impl Model {
    pub fn fixed(at: i64, offset: f64) -> Model {
        Model {
            at,
            offset,
            drift: 0.0,
        }
    }

    pub fn offset_at(self, t: i64) -> f64 {
        self.offset + self.drift * (t - self.at) as f64
    }

    /// The OVOC time of a CPE time.
    pub fn to_ovoc(self, t_cpe: i64) -> i64 {
        let rel = (t_cpe - self.at) as f64 - self.offset;
        self.at + (rel / (1.0 + self.drift)).round() as i64
    }

    /// The CPE time of an OVOC time.
    pub fn to_cpe(self, t_ovoc: i64) -> i64 {
        t_ovoc + self.offset_at(t_ovoc).round() as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delay {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub model: Model,
    /// None when only one direction had matched packets: the offset then includes that
    /// direction's delay, unknown.
    pub uncertainty: Option<f64>,
    /// Nanoseconds, per direction (0 = OVOC to CPE).
    pub delay: [Option<Delay>; 2],
}

/// A line `y = a + b (x - x0)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Line {
    a: f64,
    b: f64,
}

/// The line under every point that is highest at `x`: the lower convex hull's edge spanning
/// `x` (a flat line through the only point when there is one). Points sorted by x.
fn lower_support(points: &[(f64, f64)], x: f64) -> Option<Line> {
    let mut hull: Vec<(f64, f64)> = Vec::with_capacity(points.len());
    for &p in points {
        while hull.len() >= 2 {
            let (o, a) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            // Drop `a` when it is not strictly below the segment o-p.
            if (a.0 - o.0) * (p.1 - o.1) - (a.1 - o.1) * (p.0 - o.0) <= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(p);
    }
    match hull.as_slice() {
        [] => None,
        [p] => Some(Line { a: p.1, b: 0.0 }.at_x(p.0, x)),
        h => {
            let i = h
                .windows(2)
                .position(|w| w[1].0 >= x)
                .unwrap_or(h.len() - 2);
            let (p, q) = (h[i], h[i + 1]);
            let b = if q.0 > p.0 {
                (q.1 - p.1) / (q.0 - p.0)
            } else {
                0.0
            };
            Some(Line { a: p.1, b }.at_x(p.0, x))
        }
    }
}

impl Line {
    /// The same line, `a` being its value at `x` instead of at `from`.
    fn at_x(self, from: f64, x: f64) -> Line {
        Line {
            a: self.a + self.b * (x - from),
            b: self.b,
        }
    }
}

/// The clock model from the timeline's envelopes, stated at OVOC time `at`; None without any
/// matched packet.
pub fn estimate(tl: &Timeline, at: i64) -> Option<Estimate> {
    let x = |t: i64| (t - at) as f64 / SECOND as f64;
    let mut lines = [None, None];
    for (dir, line) in lines.iter_mut().enumerate() {
        let s = tl.sums[dir];
        if s.n == 0 {
            continue;
        }
        let mean_x = s.t / s.n as f64 - x(at) + x(tl.origin);
        let pts: Vec<(f64, f64)> = tl
            .buckets
            .iter()
            .map(|b| b.dir[dir])
            .filter(|b| b.n > 0)
            .map(|b| {
                if dir == 0 {
                    (x(b.t_min), b.min as f64)
                } else {
                    // The upper envelope is the lower one of the negated samples.
                    (x(b.t_max), -(b.max as f64))
                }
            })
            .collect();
        let mut l = lower_support(&pts, mean_x)?;
        if dir == 1 {
            l = Line { a: -l.a, b: -l.b };
        }
        *line = Some(l.at_x(mean_x, 0.0));
    }
    let (offset, slope, uncertainty) = match lines {
        [Some(down), Some(up)] => (
            (down.a + up.a) / 2.0,
            (down.b + up.b) / 2.0,
            Some(((down.a - up.a) / 2.0).abs()),
        ),
        [Some(l), None] | [None, Some(l)] => (l.a, l.b, None),
        [None, None] => return None,
    };
    let model = Model {
        at,
        offset,
        drift: slope / SECOND as f64,
    };
    let delay = [0, 1].map(|dir| delays(tl, &model, dir));
    Some(Estimate {
        model,
        uncertainty,
        delay,
    })
}

fn delays(tl: &Timeline, m: &Model, dir: usize) -> Option<Delay> {
    let s = tl.sums[dir];
    if s.n == 0 {
        return None;
    }
    let sign = if dir == 0 { 1.0 } else { -1.0 };
    let mean_t = tl.origin + (s.t / s.n as f64 * SECOND as f64) as i64;
    let mean = sign * (s.d / s.n as f64 - m.offset_at(mean_t));
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for b in tl.buckets.iter().map(|b| b.dir[dir]).filter(|b| b.n > 0) {
        for (t, d) in [(b.t_min, b.min), (b.t_max, b.max)] {
            let v = sign * (d as f64 - m.offset_at(t));
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    Some(Delay {
        min: lo,
        mean,
        max: hi,
    })
}

/// Seconds of envelopes on each side of a place compared for a step.
const STEP_SPAN: usize = 10;
/// The smallest step reported, ns: far above what queueing moves both envelopes by at once.
const MIN_STEP: f64 = 10e6;

/// A step of the CPE clock (an NTP step, a manual set): the place (OVOC time) where both
/// envelopes jump the same way by the most, compared over [`STEP_SPAN`] buckets each side by
/// their medians, and by how much (ns); None below [`MIN_STEP`]. Queueing moves one envelope
/// (and the two apart), a step moves both together, so it needs buckets with both directions.
/// The envelopes are compared as they are, not against the fitted model: a line fitted through
/// a step is tilted by it, while a real drift moves them by microseconds over the span.
pub fn step(tl: &Timeline) -> Option<(i64, f64)> {
    let pts: Vec<(i64, f64, f64)> = tl
        .buckets
        .iter()
        .filter(|b| b.dir[0].n > 0 && b.dir[1].n > 0)
        .map(|b| (b.dir[0].t_min, b.dir[0].min as f64, b.dir[1].max as f64))
        .collect();
    let k = STEP_SPAN;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let sizes: Vec<f64> = (k..pts.len().saturating_sub(k - 1))
        .map(|i| {
            let jump = |f: fn(&(i64, f64, f64)) -> f64| {
                let mut before: Vec<f64> = pts[i - k..i].iter().map(f).collect();
                let mut after: Vec<f64> = pts[i..i + k].iter().map(f).collect();
                median(&mut after) - median(&mut before)
            };
            let (a, b) = (jump(|p| p.1), jump(|p| p.2));
            if a.signum() == b.signum() {
                a.signum() * a.abs().min(b.abs())
            } else {
                0.0
            }
        })
        .collect();
    let (top, size) = sizes
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))?;
    if size.abs() < MIN_STEP {
        return None;
    }
    // The medians see the step from half a span before it to half a span after: the place is
    // the middle of that plateau.
    let near = |i: &usize| (sizes[*i] - size).abs() <= 0.1 * size.abs();
    let lo = (0..=top).rev().take_while(near).last().unwrap_or(top);
    let hi = (top..sizes.len()).take_while(near).last().unwrap_or(top);
    Some((pts[k + (lo + hi) / 2].0, size))
}

/// A first offset from a few matched pairs `(direction, t_ovoc, t_cpe - t_ovoc)`: the middle of
/// the two envelopes' extremes, or one envelope when only one direction matched; and the
/// one-way delay that leaves (half their gap; 0 with one direction).
pub fn first_offset(pairs: &[(usize, i64, i64)]) -> Option<(f64, i64)> {
    let down = pairs.iter().filter(|p| p.0 == 0).map(|p| p.2).min();
    let up = pairs.iter().filter(|p| p.0 == 1).map(|p| p.2).max();
    envelope_middle(down, up)
}

/// The offset and delay of a lower envelope of OVOC-to-CPE samples and an upper envelope of
/// CPE-to-OVOC ones.
pub fn envelope_middle(down: Option<i64>, up: Option<i64>) -> Option<(f64, i64)> {
    match (down, up) {
        (Some(d), Some(u)) => Some(((d as f64 + u as f64) / 2.0, (d - u) / 2)),
        (Some(x), None) | (None, Some(x)) => Some((x as f64, 0)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    /// Samples of a CPE clock `offset_ms + drift_ppm` against OVOC, with minimum delays
    /// `(down_ms, up_ms)` and a deterministic jitter above them.
    fn timeline(offset_ms: f64, drift_ppm: f64, down: f64, up: f64, secs: i64) -> Timeline {
        let origin = 1_700_000_000 * SECOND;
        let mut tl = Timeline::new(origin);
        let m = Model {
            at: origin,
            offset: offset_ms * MS as f64,
            drift: drift_ppm * 1e-6,
        };
        for i in 0..secs * 10 {
            let t = origin + i * SECOND / 10;
            // 0..7 ms of queueing, at its minimum once a second.
            let jitter = ((i * 7919) % 10) as f64 * 0.7 * MS as f64;
            let off = m.offset_at(t);
            tl.sample(0, t, (off + down * MS as f64 + jitter) as i64);
            tl.sample(1, t, (off - up * MS as f64 - jitter) as i64);
        }
        tl
    }

    #[test]
    fn offset_and_drift_come_back() {
        // (offset ms, drift ppm, min delay down, min delay up)
        let cases = [
            (0.0, 0.0, 5.0, 5.0),
            (1500.0, 0.0, 20.0, 20.0),
            (-73_000.25, 35.0, 12.0, 12.0),
            (250.0, -80.0, 1.0, 1.0),
        ];
        for (off, ppm, down, up) in cases {
            let tl = timeline(off, ppm, down, up, 600);
            let e = estimate(&tl, tl.origin).unwrap();
            let got_ms = e.model.offset / MS as f64;
            assert!((got_ms - off).abs() < 0.1, "{off} {ppm}: {got_ms}");
            assert!((e.model.drift * 1e6 - ppm).abs() < 0.1, "{ppm}: {e:?}");
            let u = e.uncertainty.unwrap() / MS as f64;
            assert!((u - down).abs() < 0.1, "{u}");
            let d = e.delay[0].unwrap();
            assert!((d.min / MS as f64 - down).abs() < 0.1, "{d:?}");
            assert!(d.max / MS as f64 > down + 5.0, "{d:?}");
        }
    }

    #[test]
    fn unequal_delays_shift_the_offset_by_half_their_difference() {
        let tl = timeline(100.0, 0.0, 30.0, 10.0, 60);
        let e = estimate(&tl, tl.origin).unwrap();
        let got = e.model.offset / MS as f64;
        // The stated assumption (equal minima) is off by (30 - 10) / 2 here.
        assert!((got - 110.0).abs() < 0.1, "{got}");
        assert!((e.uncertainty.unwrap() / MS as f64 - 20.0).abs() < 0.1);
    }

    #[test]
    fn one_direction_gives_no_uncertainty() {
        let mut tl = Timeline::new(0);
        tl.sample(1, SECOND, 5 * MS);
        tl.sample(1, 2 * SECOND, 4 * MS);
        let e = estimate(&tl, 0).unwrap();
        assert_eq!(e.uncertainty, None);
        assert!(e.delay[0].is_none());
        assert!(estimate(&Timeline::new(0), 0).is_none());
    }

    #[test]
    fn support_line_of_the_lower_hull() {
        let pts = [(0.0, 5.0), (1.0, 1.0), (2.0, 4.0), (3.0, 2.0), (4.0, 6.0)];
        // Hull: (0,5) (1,1) (3,2) (4,6). At x = 2 the edge (1,1)-(3,2).
        let l = lower_support(&pts, 2.0).unwrap();
        assert_eq!((l.a, l.b), (1.5, 0.5));
        let l = lower_support(&pts, 0.5).unwrap();
        assert_eq!(l.b, -4.0);
        assert_eq!(
            lower_support(&[(1.0, 3.0)], 5.0),
            Some(Line { a: 3.0, b: 0.0 })
        );
    }

    #[test]
    fn buckets_coarsen_without_losing_extremes() {
        let mut tl = Timeline::new(0);
        tl.sample(0, 0, 10);
        tl.sample(0, (MAX_BUCKETS as i64 + 5) * SECOND, 3);
        assert_eq!(tl.width, 2 * SECOND);
        let all: Vec<i64> = tl
            .buckets
            .iter()
            .filter(|b| b.dir[0].n > 0)
            .map(|b| b.dir[0].min)
            .collect();
        assert_eq!(all, [10, 3]);
    }

    /// A clock that steps by 200 ms half-way is found where it stepped, by about that much;
    /// without a step, or with queueing that raises one direction's delays for a while, none.
    #[test]
    fn a_clock_step_is_found() {
        let step_at = |tl: &mut Timeline, from: i64, size: i64| {
            for b in tl.buckets.iter_mut().skip(from as usize) {
                for d in &mut b.dir {
                    if d.n > 0 {
                        d.min += size;
                        d.max += size;
                    }
                }
            }
        };
        let mut tl = timeline(50.0, 3.0, 10.0, 10.0, 120);
        step_at(&mut tl, 60, 200 * MS);
        let (at, size) = step(&tl).expect("a step");
        assert!(((at - tl.origin) / SECOND - 60).abs() <= 1, "{at}");
        assert!((size / MS as f64 - 200.0).abs() < 10.0, "{size}");
        let tl = timeline(50.0, 3.0, 10.0, 10.0, 120);
        assert_eq!(step(&tl), None);
        // Queueing: 80 ms more delay OVOC to CPE for 40 s.
        let mut tl = timeline(50.0, 3.0, 10.0, 10.0, 120);
        for b in tl.buckets.iter_mut().skip(40).take(40) {
            b.dir[0].min += 80 * MS;
            b.dir[0].max += 80 * MS;
        }
        assert_eq!(step(&tl), None);
    }

    #[test]
    fn model_converts_both_ways() {
        let m = Model {
            at: 1000 * SECOND,
            offset: 2.5 * SECOND as f64,
            drift: 50e-6,
        };
        for t in [0, 1000 * SECOND, 5000 * SECOND] {
            let back = m.to_ovoc(m.to_cpe(t));
            assert!((back - t).abs() <= 1, "{t} {back}");
        }
        assert_eq!(
            first_offset(&[(0, 0, 30), (0, 1, 20), (1, 2, 10), (1, 3, 0)]),
            Some((15.0, 5))
        );
        assert_eq!(first_offset(&[(1, 2, 10)]), Some((10.0, 0)));
    }
}
