//! The incident page, pure: what was read of a session's `--out` in, the page's values out,
//! rendered by the compile-time template `templates/report.html` (askama). Every value the
//! template prints is HTML-escaped by askama (the file is `.html`); nothing is marked safe. The
//! timelines go in as `data:image/svg+xml;base64,` URIs of `<img>` elements: an SVG shown as an
//! image runs no script and fetches nothing, and base64 cannot close the attribute it is in,
//! whatever the SVG holds.

use askama::Template;

use serde::Deserialize;

use crate::session::status::{self, DeviceStatus, Row, State};

/// One file of a round: its name, size and sha256 (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The records of a round's analysis.jsonl that the page shows, as `tc analyze` writes them
/// (src/event.rs); other records and other fields (`ts`, ...) are passed over. Types of the
/// page's own rather than `Event`: deserializing the whole `Event` enum would build its code for
/// every variant into the binary (about 600 KB of the static build) to read four of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum Record {
    #[serde(rename = "analyze.clock")]
    Clock {
        offset_ms: f64,
        drift_ppm: f64,
        uncertainty_ms: Option<f64>,
        at: String,
        matched: u64,
        method: String,
        step_ms: Option<f64>,
        step_at: Option<String>,
    },
    #[serde(rename = "analyze.flow")]
    Flow {
        direction: String,
        class: String,
        sent: u64,
        seen: u64,
        lost: u64,
        outside_window: u64,
    },
    #[serde(rename = "analyze.loss")]
    Loss {
        direction: String,
        class: String,
        start_cpe: String,
        end_cpe: String,
        start_ovoc: String,
        end_ovoc: String,
        packets: u64,
    },
    #[serde(rename = "analyze.verdict")]
    Verdict { verdict: String, text: String },
    /// `analyze.input`, `analyze.requests`, and anything else.
    #[serde(other)]
    Other,
}

/// What was read of one round's directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundInput {
    pub device: String,
    /// From 1.
    pub round: u32,
    /// Where its files are (OUT, or OUT/<device>/<round>).
    pub dir: String,
    /// The records of its analysis.jsonl that the page shows.
    pub analysis: Vec<Record>,
    /// timeline.svg, as written.
    pub svg: Option<Vec<u8>>,
    pub files: Vec<FileInfo>,
    /// What could not be read, said on the page.
    pub notes: Vec<String>,
}

pub struct Input {
    pub out: String,
    /// RFC 3339, when the page was made.
    pub generated: String,
    pub state: State,
    pub pid: Option<u32>,
    pub devices: Vec<DeviceStatus>,
    pub rows: Vec<Row>,
    pub rounds: Vec<RoundInput>,
}

#[derive(Template)]
#[template(path = "report.html")]
pub struct Page {
    out: String,
    generated: String,
    version: &'static str,
    state: String,
    state_class: &'static str,
    devices: Vec<DeviceView>,
    log: Vec<LogView>,
}

struct DeviceView {
    name: String,
    /// The section's id: a number, never the name.
    anchor: String,
    step: String,
    rounds: u32,
    verdicts: Vec<VerdictView>,
    views: Vec<RoundView>,
}

struct VerdictView {
    round: u32,
    verdict: String,
    class: &'static str,
}

struct RoundView {
    round: u32,
    dir: String,
    capture_started: String,
    alarm: String,
    verdict: Option<VerdictText>,
    clock: Option<String>,
    losses: Vec<LossView>,
    flows: Vec<FlowView>,
    /// `data:image/svg+xml;base64,...`
    timeline: Option<String>,
    timeline_alt: String,
    files: Vec<FileView>,
    notes: Vec<String>,
}

struct VerdictText {
    verdict: String,
    class: &'static str,
    text: String,
}

struct LossView {
    direction: String,
    class: String,
    start_ovoc: String,
    end_ovoc: String,
    start_cpe: String,
    end_cpe: String,
    packets: u64,
}

struct FlowView {
    direction: String,
    class: String,
    sent: u64,
    seen: u64,
    lost: u64,
    outside_window: u64,
    loss_class: &'static str,
}

struct FileView {
    name: String,
    bytes: String,
    sha256: String,
}

struct LogView {
    time: String,
    device: String,
    task: String,
    status: String,
    status_class: &'static str,
    code: String,
    description: String,
    /// The path as the report has it (shown on hover), and its last part (shown).
    file: String,
    file_name: String,
    verdict: String,
}

/// The CSS class of a verdict: a fixed word, never the verdict's own text.
fn verdict_class(v: &str) -> &'static str {
    match v {
        "no_loss" => "good",
        v if v.starts_with("wan_loss") => "bad",
        "cpe_silent" | "ovoc_silent" => "warn",
        _ => "unknown",
    }
}

fn status_class(s: &str) -> &'static str {
    match s {
        "ok" => "good",
        "failed" => "bad",
        "retry" | "incomplete" => "warn",
        _ => "unknown",
    }
}

/// 1234567 -> "1,234,567"
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn or_dash(t: &Option<String>) -> String {
    t.clone().unwrap_or_else(|| "-".into())
}

fn clock_text(e: &Record) -> Option<String> {
    let Record::Clock {
        offset_ms,
        drift_ppm,
        uncertainty_ms,
        at,
        matched,
        method,
        step_ms,
        step_at,
    } = e
    else {
        return None;
    };
    let mut s = format!("CPE clock minus OVOC clock: {offset_ms:+.3} ms");
    if let Some(u) = uncertainty_ms {
        s += &format!(" (± {u:.3} ms)");
    }
    s += &format!(
        " at {at}, drift {drift_ppm:+.2} ppm; {method} from {} packets seen on both sides",
        grouped(*matched)
    );
    if let (Some(step), Some(at)) = (step_ms, step_at) {
        s += &format!("; the CPE clock stepped by {step:+.3} ms at {at}");
    }
    Some(s)
}

fn round_view(
    d: &DeviceStatus,
    rows: &[&Row],
    input: Option<&RoundInput>,
    round: u32,
) -> RoundView {
    let first = |task: &str| {
        rows.iter()
            .find(|r| r.task == task && r.status == "ok")
            .map(|r| r.time.clone())
    };
    let analysis: &[Record] = input.map_or(&[], |i| i.analysis.as_slice());
    let from_row = rows
        .iter()
        .rev()
        .find(|r| r.task == "analyze" && !r.verdict.is_empty())
        .map(|r| (r.verdict.clone(), r.description.clone()));
    let from_file = analysis.iter().rev().find_map(|e| match e {
        Record::Verdict { verdict, text } => Some((verdict.clone(), text.clone())),
        _ => None,
    });
    let verdict = from_file.or(from_row).map(|(verdict, text)| VerdictText {
        class: verdict_class(&verdict),
        verdict,
        text,
    });
    let losses = analysis
        .iter()
        .filter_map(|e| match e {
            Record::Loss {
                direction,
                class,
                start_cpe,
                end_cpe,
                start_ovoc,
                end_ovoc,
                packets,
            } => Some(LossView {
                direction: direction.clone(),
                class: class.clone(),
                start_ovoc: start_ovoc.clone(),
                end_ovoc: end_ovoc.clone(),
                start_cpe: start_cpe.clone(),
                end_cpe: end_cpe.clone(),
                packets: *packets,
            }),
            _ => None,
        })
        .collect();
    let flows = analysis
        .iter()
        .filter_map(|e| match e {
            Record::Flow {
                direction,
                class,
                sent,
                seen,
                lost,
                outside_window,
            } => Some(FlowView {
                direction: direction.clone(),
                class: class.clone(),
                sent: *sent,
                seen: *seen,
                lost: *lost,
                outside_window: *outside_window,
                loss_class: if *lost > 0 { "bad" } else { "" },
            }),
            _ => None,
        })
        .collect();
    RoundView {
        round,
        dir: input.map_or_else(String::new, |i| i.dir.clone()),
        capture_started: or_dash(&first("capture")),
        alarm: or_dash(&first("alarm")),
        verdict,
        clock: analysis.iter().find_map(clock_text),
        losses,
        flows,
        timeline: input
            .and_then(|i| i.svg.as_ref())
            .map(|svg| format!("data:image/svg+xml;base64,{}", crate::util::base64(svg))),
        timeline_alt: format!("Timeline of {}, round {round}", d.device),
        files: input
            .map(|i| i.files.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|f| FileView {
                name: f.name.clone(),
                bytes: grouped(f.bytes),
                sha256: f.sha256.clone(),
            })
            .collect(),
        notes: input.map_or_else(Vec::new, |i| i.notes.clone()),
    }
}

/// The page's values from what was read.
pub fn build(input: &Input) -> Page {
    let devices = input
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let split = status::rounds(input.rows.iter().filter(|r| r.device == d.device));
            let dirs = input.rounds.iter().filter(|r| r.device == d.device);
            let n = dirs
                .map(|r| r.round as usize)
                .max()
                .unwrap_or(0)
                .max(split.len());
            let views: Vec<RoundView> = (1..=n as u32)
                .map(|round| {
                    let rows = split.get(round as usize - 1).map_or(&[][..], Vec::as_slice);
                    let read = input
                        .rounds
                        .iter()
                        .find(|r| r.device == d.device && r.round == round);
                    round_view(d, rows, read, round)
                })
                .collect();
            let verdicts = views
                .iter()
                .filter_map(|v| {
                    v.verdict.as_ref().map(|t| VerdictView {
                        round: v.round,
                        verdict: t.verdict.clone(),
                        class: t.class,
                    })
                })
                .collect();
            DeviceView {
                name: d.device.clone(),
                anchor: format!("device-{}", i + 1),
                step: d.step.clone(),
                rounds: d.rounds,
                verdicts,
                views,
            }
        })
        .collect();
    let (state, state_class) = match (input.state, input.pid) {
        (State::Running, Some(pid)) if pid != 0 => (format!("running (pid {pid})"), "warn"),
        (State::Running, _) => ("running".into(), "warn"),
        (State::Finished, _) => ("finished: every device done".into(), "good"),
        (State::Failed, _) => ("finished with failures".into(), "bad"),
    };
    Page {
        out: input.out.clone(),
        generated: input.generated.clone(),
        version: env!("CARGO_PKG_VERSION"),
        state,
        state_class,
        devices,
        log: input
            .rows
            .iter()
            .map(|r| LogView {
                time: r.time.clone(),
                device: r.device.clone(),
                task: r.task.clone(),
                status: r.status.clone(),
                status_class: status_class(&r.status),
                code: r.code.clone(),
                description: r.description.clone(),
                file: r.file.clone(),
                file_name: r.file.rsplit('/').next().unwrap_or_default().to_string(),
                verdict: r.verdict.clone(),
            })
            .collect(),
    }
}

impl Page {
    /// Rounds shown, over every device.
    pub fn rounds(&self) -> usize {
        self.devices.iter().map(|d| d.views.len()).sum()
    }

    pub fn devices(&self) -> usize {
        self.devices.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::core::{Journal, Step};

    const EVIL: &str = "<script>alert(1)</script>";

    fn row(device: &str, task: &str, status: &str, description: &str, verdict: &str) -> Row {
        Row {
            time: "2026-11-27T07:42:13.899869Z".into(),
            device: device.into(),
            task: task.into(),
            status: status.into(),
            description: description.into(),
            verdict: verdict.into(),
            ..Row::default()
        }
    }

    fn input() -> Input {
        let journal = [Journal {
            device: "10.0.0.1".into(),
            step: Step::Done,
            rounds: 1,
            cpe_capturing: false,
            filename: None,
        }];
        let rows = vec![
            row("10.0.0.1", "capture", "ok", "200 OK", ""),
            row("10.0.0.1", "alarm", "ok", "Connection Lost", ""),
            row("10.0.0.1", "stop", "ok", "200 OK", ""),
            row(
                "10.0.0.1",
                "analyze",
                "ok",
                "SNMP from OVOC was lost.",
                "wan_loss_ovoc_to_cpe",
            ),
            row(EVIL, "alarm", "ok", EVIL, ""),
            row(
                EVIL,
                "analyze",
                "ok",
                EVIL,
                "\"><img src=x onerror=alert(1)>",
            ),
        ];
        let devices = status::devices(&journal, &rows, &Default::default());
        let svg = br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#;
        Input {
            out: format!("/srv/{EVIL}"),
            generated: "2026-11-27T08:00:00.000000Z".into(),
            state: State::Finished,
            pid: None,
            devices,
            rows,
            rounds: vec![RoundInput {
                device: "10.0.0.1".into(),
                round: 1,
                dir: "/srv/out/10.0.0.1/1".into(),
                analysis: vec![
                    Record::Loss {
                        direction: "ovoc_to_cpe".into(),
                        class: EVIL.into(),
                        start_cpe: "a".into(),
                        end_cpe: "b".into(),
                        start_ovoc: "c".into(),
                        end_ovoc: "d".into(),
                        packets: 1234,
                    },
                    Record::Verdict {
                        verdict: "wan_loss_ovoc_to_cpe".into(),
                        text: format!("{EVIL} & more"),
                    },
                ],
                svg: Some(svg.to_vec()),
                files: vec![FileInfo {
                    name: format!("{EVIL}.pcap"),
                    bytes: 1_234_567,
                    sha256: "ab".repeat(32),
                }],
                notes: vec![],
            }],
        }
    }

    #[test]
    fn every_value_is_escaped_and_nothing_is_fetched() {
        let page = build(&input());
        assert_eq!((page.devices(), page.rounds()), (2, 2));
        let html = page.render().unwrap();
        let lower = html.to_lowercase();
        for bad in [
            "<script",
            "<img src=x",
            "http://",
            "https://",
            "src=\"//",
            "href=\"//",
            "<link",
            "@import",
            "url(",
        ] {
            assert!(!lower.contains(bad), "{bad} in\n{html}");
        }
        // askama writes `<` as `&#60;`; either form is the text, never markup.
        let escaped = [
            "&lt;script&gt;alert(1)&lt;/script&gt;",
            "&#60;script&#62;alert(1)&#60;/script&#62;",
        ];
        assert!(escaped.iter().any(|e| html.contains(e)), "{html}");
        assert!(html.contains("1,234,567"), "{html}");
        assert!(html.contains("data:image/svg+xml;base64,"), "{html}");
        // The SVG's own script is inside the base64, where it can neither run nor end the
        // attribute.
        let b64 = crate::util::base64(
            br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#,
        );
        assert!(html.contains(&b64), "{html}");
        assert!(html.contains("class=\"verdict bad\""), "{html}");
    }

    #[test]
    fn numbers_are_grouped() {
        for (n, want) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(grouped(n), want);
        }
    }

    #[test]
    fn verdicts_get_a_fixed_class() {
        let table = [
            ("no_loss", "good"),
            ("wan_loss_both", "bad"),
            ("wan_loss_cpe_to_ovoc", "bad"),
            ("cpe_silent", "warn"),
            ("inconclusive", "unknown"),
            ("\" onmouseover=\"x", "unknown"),
        ];
        for (v, want) in table {
            assert_eq!(verdict_class(v), want, "{v}");
        }
    }
}
