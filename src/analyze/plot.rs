//! `--plot OUT.svg`: the timeline, one panel per direction, OVOC clock on the x axis: packets
//! sent and seen on the far side per time step, loss windows shaded red, the time outside the
//! receiving capture shaded grey, the alarm marked when known. Drawn with plotters' SVG backend.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::clock::Timeline;
use super::core::{sender, C2O, O2C};
use super::verdict::clock_time;
use super::Report;

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 900;
/// Time steps across the plot, at most.
const STEPS: i64 = 240;
const SECOND: i64 = 1_000_000_000;

const SENT: RGBColor = RGBColor(31, 119, 180);
const SEEN: RGBColor = RGBColor(44, 160, 44);
const LOST: RGBColor = RGBColor(214, 39, 40);

/// Counts per step of one direction: (step start, sent, seen).
fn steps(tl: &Timeline, dir: usize, from: i64, to: i64, step: i64) -> Vec<(i64, u32, u32)> {
    let n = ((to - from) / step + 1).max(1) as usize;
    let mut out: Vec<(i64, u32, u32)> = (0..n).map(|i| (from + i as i64 * step, 0, 0)).collect();
    for (i, b) in tl.buckets.iter().enumerate() {
        let t = tl.origin + i as i64 * tl.width;
        if t < from || t > to {
            continue;
        }
        let k = (((t - from) / step) as usize).min(n - 1);
        out[k].1 += b.dir[dir].sent;
        out[k].2 += b.dir[dir].seen;
    }
    out
}

/// A step of a whole number of seconds (or a round fraction of one) for the span.
fn step_for(span: i64) -> i64 {
    let raw = (span / STEPS).max(1);
    let nice = [
        SECOND / 100,
        SECOND / 10,
        SECOND,
        2 * SECOND,
        5 * SECOND,
        10 * SECOND,
        30 * SECOND,
        60 * SECOND,
        300 * SECOND,
        600 * SECOND,
        3600 * SECOND,
    ];
    nice.into_iter()
        .find(|s| *s >= raw)
        .unwrap_or((raw / (3600 * SECOND) + 1) * 3600 * SECOND)
}

fn step_words(step: i64) -> String {
    if step < SECOND {
        format!("{} ms", step / 1_000_000)
    } else if step < 60 * SECOND {
        format!("{} s", step / SECOND)
    } else {
        format!("{} min", step / (60 * SECOND))
    }
}

pub fn write(r: &Report, alarm_at: Option<i64>, out: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Debug| format!("drawing: {e:?}");
    let (from, to) = match r.windows {
        [Some(a), Some(b)] => (a.0.min(b.0), a.1.max(b.1)),
        [Some(a), None] | [None, Some(a)] => a,
        [None, None] => (0, SECOND),
    };
    let to = to.max(from + SECOND);
    let step = step_for(to - from);
    let root = SVGBackend::new(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!(
        "tc analyze {}: {} (OVOC clock, UTC)",
        r.device, r.verdict.verdict
    );
    let root = root
        .titled(&title, ("sans-serif", 26))
        .map_err(|e| err(&e))?;
    let (body, foot) = root.split_vertically(HEIGHT - 90);
    let panels = body.split_evenly((2, 1));
    for (panel, dir) in panels.iter().zip([O2C, C2O]) {
        draw_panel(r, dir, panel, (from, to, step), alarm_at).map_err(|e| err(&e))?;
    }
    let text = wrap(&r.verdict.text, 150);
    for (i, line) in text.iter().enumerate() {
        foot.draw_text(
            line,
            &("sans-serif", 18).into_font().color(&BLACK),
            (60, 10 + 24 * i as i32),
        )
        .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// One panel's x axis: seconds since the day's start, so that the axis' round numbers are round
/// times; and its span.
#[derive(Clone, Copy)]
struct Axis {
    day: i64,
    from: i64,
    to: i64,
    step: i64,
    ymax: f64,
}

impl Axis {
    fn x(&self, t: i64) -> f64 {
        (t - self.day) as f64 / SECOND as f64
    }
}

fn side_name(side: usize) -> &'static str {
    if side == super::core::CPE {
        "CPE"
    } else {
        "OVOC"
    }
}

fn draw_panel(
    r: &Report,
    dir: usize,
    area: &Area<'_>,
    (from, to, step): (i64, i64, i64),
    alarm_at: Option<i64>,
) -> DrawResult {
    let data = steps(&r.timeline, dir, from, to, step);
    let ax = Axis {
        day: from.div_euclid(86_400 * SECOND) * 86_400 * SECOND,
        from,
        to,
        step,
        // Headroom above the data for the legend.
        ymax: data.iter().map(|d| d.1.max(d.2)).max().unwrap_or(0).max(1) as f64 * 1.6,
    };
    let (lost, sent): (u64, u64) = r
        .flows
        .iter()
        .filter(|((d, _), _)| *d == dir)
        .fold((0, 0), |(l, s), (_, c)| (l + c.lost, s + c.sent));
    let caption = format!(
        "{} to {}: {sent} sent, {lost} lost (packets per {})",
        side_name(sender(dir)),
        side_name(1 - sender(dir)),
        step_words(step)
    );
    let formatter = |v: &f64| clock_time(ax.day + (*v * SECOND as f64) as i64)[..8].to_string();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(ax.x(from)..ax.x(to), 0f64..ax.ymax)?;
    chart
        .configure_mesh()
        .x_labels(12)
        .x_label_formatter(&formatter)
        .y_desc("packets")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    shade_absence(&mut chart, r, dir, &ax)?;
    shade_losses(&mut chart, r, dir, &ax)?;
    draw_lines(&mut chart, &data, dir, &ax)?;
    if let Some(t) = alarm_at.filter(|t| (from..=to).contains(t)) {
        mark_alarm(&mut chart, t, &ax)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
}

/// The sent and seen counts per step, as lines.
fn draw_lines(
    chart: &mut Chart<'_, '_>,
    data: &[(i64, u32, u32)],
    dir: usize,
    ax: &Axis,
) -> DrawResult {
    let half = ax.step as f64 / SECOND as f64 / 2.0;
    for (i, (color, width, what, side)) in [
        (SENT, 3, "sent", sender(dir)),
        (SEEN, 2, "seen", 1 - sender(dir)),
    ]
    .into_iter()
    .enumerate()
    {
        let count = |d: &(i64, u32, u32)| f64::from(if i == 0 { d.1 } else { d.2 });
        chart
            .draw_series(LineSeries::new(
                data.iter().map(|d| (ax.x(d.0) + half, count(d))),
                color.stroke_width(width),
            ))?
            .label(format!("{what} by {}", side_name(side)))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(width))
            });
    }
    Ok(())
}

/// The alarm's time, as a vertical line.
fn mark_alarm(chart: &mut Chart<'_, '_>, t: i64, ax: &Axis) -> DrawResult {
    let at = ax.x(t);
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(at, 0.0), (at, ax.ymax)],
            BLACK.stroke_width(2),
        )))?
        .label(format!("alarm {}", clock_time(t)))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(2)));
    Ok(())
}

/// Where a capture was not running nothing can be judged: the receiver's absence shaded
/// darker than the sender's.
fn shade_absence(chart: &mut Chart<'_, '_>, r: &Report, dir: usize, ax: &Axis) -> DrawResult {
    for (side, shade) in [(1 - sender(dir), 0.45), (sender(dir), 0.2)] {
        let Some((a, b)) = r.windows[side] else {
            continue;
        };
        let grey = RGBColor(150, 150, 150).mix(shade).filled();
        let mut bands = Vec::new();
        if a > ax.from {
            bands.push(Rectangle::new(
                [(ax.x(ax.from), 0.0), (ax.x(a), ax.ymax)],
                grey,
            ));
        }
        if b < ax.to {
            bands.push(Rectangle::new(
                [(ax.x(b), 0.0), (ax.x(ax.to), ax.ymax)],
                grey,
            ));
        }
        if bands.is_empty() {
            continue;
        }
        chart
            .draw_series(bands)?
            .label(format!("{} capture not running", side_name(side)))
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], grey));
    }
    Ok(())
}

/// The loss windows, one band for the union of overlapping ones (several classes lost at
/// once); a window one packet long still gets a visible band.
fn shade_losses(chart: &mut Chart<'_, '_>, r: &Report, dir: usize, ax: &Axis) -> DrawResult {
    let red = LOST.mix(0.25).filled();
    let min_width = ax.step as f64 / SECOND as f64;
    let spans: Vec<(f64, f64)> = r
        .losses
        .iter()
        .filter(|l| l.window.dir == dir)
        .map(|l| {
            let a = ax.x(l.window.start_t);
            (a, ax.x(l.window.end_t).max(a + min_width))
        })
        .collect();
    let windows: Vec<_> = union(spans)
        .into_iter()
        .map(|(a, b)| Rectangle::new([(a, 0.0), (b, ax.ymax)], red))
        .collect();
    if !windows.is_empty() {
        chart
            .draw_series(windows)?
            .label("loss window")
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], red));
    }
    Ok(())
}

/// Overlapping intervals merged.
fn union(mut spans: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Words into lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for w in text.split_whitespace() {
        let last = lines.last_mut().expect("one line");
        if !last.is_empty() && last.len() + 1 + w.len() > width {
            lines.push(w.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(w);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round_and_few() {
        assert_eq!(step_for(60 * SECOND), SECOND);
        assert_eq!(step_for(3600 * SECOND), 30 * SECOND);
        assert_eq!(step_for(SECOND), SECOND / 100);
        assert!(step_for(1000 * 3600 * SECOND) >= 3600 * SECOND);
        assert_eq!(step_words(30 * SECOND), "30 s");
    }

    #[test]
    fn counts_fall_into_their_step() {
        let mut tl = Timeline::new(0);
        tl.at(0).dir[0].sent = 2;
        tl.at(3 * SECOND).dir[0].sent = 5;
        tl.at(3 * SECOND).dir[0].seen = 4;
        let s = steps(&tl, 0, 0, 4 * SECOND, 2 * SECOND);
        assert_eq!(s, [(0, 2, 0), (2 * SECOND, 5, 4), (4 * SECOND, 0, 0)]);
    }

    #[test]
    fn overlapping_windows_make_one_band() {
        assert_eq!(
            union(vec![(5.0, 6.0), (1.0, 3.0), (2.0, 4.0)]),
            [(1.0, 4.0), (5.0, 6.0)]
        );
    }

    #[test]
    fn text_wraps_at_words() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("", 5), [""]);
    }
}
