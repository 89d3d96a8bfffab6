//! `tc session status`: what a running or finished session has done, read from its journal and
//! report without disturbing it. Nothing in `--out` is created, written, truncated or locked:
//! the files are only read, and whether the session still runs is asked of /proc/locks
//! ([`files::lock_holder`]), never by taking the lock.
//!
//! The derivation is pure (journal records and report rows in, one status per device out) and
//! tested by tables; `run` only reads the files and prints.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::core::{Journal, Step};
use super::files::{self, Holder, Layout};
use crate::cli::SessionStatusArgs;
use crate::error::{Error, ExitCode, Result};
use crate::event::Event;

/// One row of the CSV report, as read back (every column as text, empty when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub time: String,
    pub device: String,
    pub task: String,
    pub status: String,
    pub code: String,
    pub description: String,
    pub file: String,
    pub verdict: String,
}

/// The report's rows in `text` (a file a session may be appending to): the header is skipped,
/// and so is a last line not yet ended. Reports from before the `verdict` column have 7 columns.
pub fn parse_report(text: &[u8]) -> Vec<Row> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(files::whole_lines(text));
    r.records()
        .filter_map(|rec| rec.ok())
        .filter(|rec| rec.len() >= 7 && !(rec.get(0) == Some("time") && rec.get(2) == Some("task")))
        .map(|rec| {
            let f = |i: usize| rec.get(i).unwrap_or("").to_string();
            Row {
                time: f(0),
                device: f(1),
                task: f(2),
                status: f(3),
                code: f(4),
                description: f(5),
                file: f(6),
                verdict: f(7),
            }
        })
        .collect()
}

/// One device's rows split into its rounds, the first round first. A round starts at the
/// device's first row, and again at a `cpe_start` once the round before has its `stop`
/// confirmed: a `cpe_start` in a round not yet stopped is `--resume` starting that round again,
/// and a second `stop` one a resumed STOP, not new rounds.
pub fn rounds<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Vec<Vec<&'a Row>> {
    let mut out: Vec<Vec<&Row>> = Vec::new();
    let mut stopped = false;
    for r in rows {
        if out.is_empty() || (stopped && r.task == "cpe_start") {
            out.push(Vec::new());
            stopped = false;
        }
        if r.task == "stop" && matches!(r.status.as_str(), "ok" | "incomplete") {
            stopped = true;
        }
        if let Some(round) = out.last_mut() {
            round.push(r);
        }
    }
    out
}

/// What `tc session status` says of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    pub device: String,
    /// The journal's step (`unknown` for a device the report names and the journal does not).
    pub step: String,
    /// Completed rounds, as journaled.
    pub rounds: u32,
    /// The round shown: the one under way, else the last; counted from 1, as OUT/<device>/<n>.
    pub round: u32,
    /// Time of the round's first `capture ok` row: both captures running.
    pub capture_started: Option<String>,
    /// Time of the round's first `alarm ok` row: the Connection Lost it acted on.
    pub alarm: Option<String>,
    /// The round's files so far: the CPE file (fetch and stop rows), then the OVOC files found.
    pub files: Vec<String>,
    pub verdict: Option<String>,
    /// The device's last report row: its task, status and time.
    pub last_task: Option<String>,
    pub last_status: Option<String>,
    pub updated: Option<String>,
}

/// OVOC files found on disk, by device and round: their paths.
pub type OvocFiles = BTreeMap<(String, u32), Vec<String>>;

/// Every device of the session, in the journal's order (then any the report alone names),
/// from the journal (its last record per device is the device's state) and the report.
pub fn devices(journal: &[Journal], rows: &[Row], ovoc: &OvocFiles) -> Vec<DeviceStatus> {
    let mut order: Vec<&str> = Vec::new();
    let mut last: BTreeMap<&str, &Journal> = BTreeMap::new();
    for j in journal {
        if last.insert(&j.device, j).is_none() {
            order.push(&j.device);
        }
    }
    for r in rows.iter().filter(|r| !r.device.is_empty()) {
        if !last.contains_key(r.device.as_str()) && !order.contains(&r.device.as_str()) {
            order.push(&r.device);
        }
    }
    order
        .into_iter()
        .map(|d| device(d, last.get(d).copied(), rows, ovoc))
        .collect()
}

fn device(name: &str, j: Option<&Journal>, rows: &[Row], ovoc: &OvocFiles) -> DeviceStatus {
    let mine: Vec<&Row> = rows.iter().filter(|r| r.device == name).collect();
    let split = rounds(mine.iter().copied());
    let terminal = j.is_none_or(|j| matches!(j.step, Step::Done | Step::Aborted | Step::Failed));
    // A round under way is the journal's (its rows may not have begun yet); a device that has
    // ended shows its last round.
    let round = match j {
        Some(j) if !terminal => j.rounds + 1,
        _ => split.len().max(1) as u32,
    };
    let these: &[&Row] = split.get(round as usize - 1).map_or(&[], Vec::as_slice);
    let first = |task: &str| {
        these
            .iter()
            .find(|r| r.task == task && r.status == "ok")
            .map(|r| r.time.clone())
    };
    let mut files: Vec<String> = Vec::new();
    for r in these.iter().filter(|r| {
        !r.file.is_empty() && ((r.task == "fetch" && r.status == "ok") || r.task == "stop")
    }) {
        // The fetch row names the path, the stop row the name: the same file once.
        let name = file_name(&r.file);
        if !files.iter().any(|f| file_name(f) == name) {
            files.push(r.file.clone());
        }
    }
    files.extend(
        ovoc.get(&(name.to_string(), round))
            .into_iter()
            .flatten()
            .cloned(),
    );
    let verdict = these
        .iter()
        .rev()
        .find(|r| r.task == "analyze" && !r.verdict.is_empty())
        .map(|r| r.verdict.clone());
    let last = mine.last();
    DeviceStatus {
        device: name.to_string(),
        step: j.map_or("unknown", |j| j.step.name()).to_string(),
        rounds: j.map_or(0, |j| j.rounds),
        round,
        capture_started: first("capture"),
        alarm: first("alarm"),
        files,
        verdict,
        last_task: last.map(|r| r.task.clone()),
        last_status: last.map(|r| r.status.clone()),
        updated: last.map(|r| r.time.clone()),
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The session as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A live process holds the out dir's lock.
    Running,
    /// No holder, and every device is done (and the report was never lost under it).
    Finished,
    /// No holder, and a device aborted, failed, or was left mid-way (the session was killed, or
    /// its wind-down ran out), or the report was lost and written again (a `gap` row).
    Failed,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Finished => "finished",
            State::Failed => "failed",
        }
    }

    /// The documented exit codes (README, `--help`).
    pub fn exit_code(self) -> ExitCode {
        match self {
            State::Running => ExitCode::Running,
            State::Finished => ExitCode::Ok,
            State::Failed => ExitCode::Failed,
        }
    }
}

pub fn state(devices: &[DeviceStatus], rows: &[Row], running: bool) -> State {
    let gap = rows.iter().any(|r| r.task == "gap");
    if running {
        State::Running
    } else if !devices.is_empty() && !gap && devices.iter().all(|d| d.step == "done") {
        State::Finished
    } else {
        State::Failed
    }
}

/// The last line: the session's state and its devices counted by step.
pub fn summary(out: &str, devices: &[DeviceStatus], state: State, holder: Option<Holder>) -> Event {
    let count = |step: &str| devices.iter().filter(|d| d.step == step).count() as u32;
    let (done, aborted, failed) = (count("done"), count("aborted"), count("failed"));
    Event::SessionStatusSummary {
        out: out.to_string(),
        state: state.name().into(),
        pid: holder.map(|h| h.pid),
        devices: devices.len() as u32,
        done,
        aborted,
        failed,
        unfinished: devices.len() as u32 - done - aborted - failed,
    }
}

pub fn event(d: &DeviceStatus) -> Event {
    Event::SessionStatus {
        device: d.device.clone(),
        step: d.step.clone(),
        rounds: d.rounds,
        round: d.round,
        capture_started: d.capture_started.clone(),
        alarm: d.alarm.clone(),
        files: d.files.clone(),
        verdict: d.verdict.clone(),
        last_task: d.last_task.clone(),
        last_status: d.last_status.clone(),
        updated: d.updated.clone(),
    }
}

/// The aligned table a terminal gets instead of JSON lines. Times lose their fraction; files
/// are shown by name. Control characters (a device name is the inventory's, a file name the
/// report's) are shown escaped, so no cell can move the cursor or recolour the terminal.
pub fn table(devices: &[DeviceStatus], state: State, holder: Option<Holder>) -> String {
    let header = [
        "DEVICE",
        "STEP",
        "ROUND",
        "CAPTURING SINCE",
        "ALARM",
        "VERDICT",
        "FILES",
    ];
    let cells: Vec<[String; 7]> = devices
        .iter()
        .map(|d| {
            let time = |t: &Option<String>| t.as_deref().map_or("-".into(), short_time);
            let files: Vec<&str> = d.files.iter().map(|f| file_name(f)).collect();
            [
                d.device.clone(),
                d.step.clone(),
                d.round.to_string(),
                time(&d.capture_started),
                time(&d.alarm),
                d.verdict.clone().unwrap_or_else(|| "-".into()),
                if files.is_empty() {
                    "-".into()
                } else {
                    files.join(" ")
                },
            ]
            .map(|c| printable(&c))
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in row.iter().zip(width).enumerate() {
            if i + 1 == row.len() {
                s += c;
            } else {
                s += &format!("{c:<w$}  ");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut s = line(&header.map(String::from));
    for row in &cells {
        s += &line(row);
    }
    let count = |step: &str| devices.iter().filter(|d| d.step == step).count();
    let unfinished = devices.len() - count("done") - count("aborted") - count("failed");
    let what = match (state, holder) {
        (State::Running, Some(Holder { pid })) if pid != 0 => format!("running (pid {pid})"),
        (State::Running, _) => "running".into(),
        (State::Finished, _) => "finished, every device done".into(),
        (State::Failed, _) => "finished with failures".into(),
    };
    s += &format!(
        "\nsession {what}: {} device(s), {} done, {} aborted, {} failed, {unfinished} unfinished\n",
        devices.len(),
        count("done"),
        count("aborted"),
        count("failed"),
    );
    s
}

/// `2026-11-27T07:42:13.899869Z` -> `2026-11-27T07:42:13Z`.
fn short_time(t: &str) -> String {
    match (t.find('.'), t.strip_suffix('Z')) {
        (Some(dot), Some(_)) => format!("{}Z", &t[..dot]),
        _ => t.to_string(),
    }
}

fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// What was read of a session's files at one moment.
pub struct Snapshot {
    pub rows: Vec<Row>,
    pub devices: Vec<DeviceStatus>,
}

/// Where a session keeps its files.
pub struct Paths {
    pub out: PathBuf,
    pub journal: PathBuf,
    pub report: PathBuf,
    pub lock: PathBuf,
}

impl Paths {
    pub fn new(out: &Path, report: Option<&Path>) -> Paths {
        let state = out.join(".tc-session");
        Paths {
            out: out.to_path_buf(),
            journal: state.join("journal"),
            report: report.map_or_else(|| out.join("report.csv"), Path::to_path_buf),
            lock: state.join("lock"),
        }
    }
}

/// Reads a file that may not exist (yet).
fn read_if_there(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::usage(format!("reading {}: {e}", path.display()))),
    }
}

/// The journal, the report and the OVOC files of each device's round directories, read (only).
/// Neither file there is no session, unless one holds the lock (`live`): a session that has
/// only just taken it has written neither yet.
pub fn read(p: &Paths, live: bool) -> Result<Snapshot> {
    let journal = read_if_there(&p.journal)?;
    let report = read_if_there(&p.report)?;
    if journal.is_none() && report.is_none() && !live {
        return Err(Error::usage(format!(
            "{}: no session here (neither {} nor {}); give the session's --out (and --report)",
            p.out.display(),
            p.journal.display(),
            p.report.display()
        )));
    }
    let journal = files::parse_journal(&journal.unwrap_or_default());
    let rows = parse_report(&report.unwrap_or_default());
    let ovoc = ovoc_files(&p.out, &journal, &rows);
    let devices = devices(&journal, &rows, &ovoc);
    Ok(Snapshot { rows, devices })
}

/// `OUT/<device>/<round>/OVOC_*` of every device (`--collect-ovoc`; none without it).
fn ovoc_files(out: &Path, journal: &[Journal], rows: &[Row]) -> OvocFiles {
    let layout = Layout {
        out: out.to_path_buf(),
        per_round: true,
    };
    let mut names: Vec<&str> = journal.iter().map(|j| j.device.as_str()).collect();
    names.extend(rows.iter().map(|r| r.device.as_str()));
    names.sort_unstable();
    names.dedup();
    let mut found = OvocFiles::new();
    for d in names {
        let Some(dev_dir) = layout
            .round_dir_checked(d, 1)
            .and_then(|r| r.parent().map(Path::to_path_buf))
        else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(&dev_dir) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let Some(round) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(files) = std::fs::read_dir(e.path()) else {
                continue;
            };
            let mut ovoc: Vec<String> = files
                .filter_map(|f| f.ok())
                .filter_map(|f| f.file_name().into_string().ok())
                // A `.name.part` is a transfer under way.
                .filter(|n| n.starts_with("OVOC_"))
                .map(|n| e.path().join(n).display().to_string())
                .collect();
            ovoc.sort();
            if !ovoc.is_empty() {
                found.insert((d.to_string(), round), ovoc);
            }
        }
    }
    found
}

pub fn run(a: SessionStatusArgs) -> Result<ExitCode> {
    let p = Paths::new(&a.out, a.report.as_deref());
    let (holder, snap) = look(&p)?;
    let state = state(&snap.devices, &snap.rows, holder.is_some());
    if std::io::stdout().is_terminal() {
        crate::emit::text(&table(&snap.devices, state, holder));
    } else {
        for d in &snap.devices {
            crate::emit::emit(&event(d));
        }
        crate::emit::emit(&summary(
            &p.out.display().to_string(),
            &snap.devices,
            state,
            holder,
        ));
    }
    Ok(state.exit_code())
}

/// The lock's holder and the files, read in an order that cannot call a session that ended
/// while they were read "finished with failures": holder, files, holder again; a session that
/// ended in between is read again, now that its files are whole.
pub fn look(p: &Paths) -> Result<(Option<Holder>, Snapshot)> {
    let before = files::lock_holder(&p.lock)?;
    let snap = read(p, before.is_some())?;
    if before.is_none() {
        return Ok((None, snap));
    }
    match files::lock_holder(&p.lock)? {
        None => Ok((None, read(p, false)?)),
        now => Ok((now, snap)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(time: &str, device: &str, task: &str, status: &str, file: &str, verdict: &str) -> Row {
        Row {
            time: time.into(),
            device: device.into(),
            task: task.into(),
            status: status.into(),
            file: file.into(),
            verdict: verdict.into(),
            ..Row::default()
        }
    }

    fn j(device: &str, step: Step, rounds: u32) -> Journal {
        Journal {
            device: device.into(),
            step,
            rounds,
            cpe_capturing: false,
            filename: None,
        }
    }

    #[test]
    fn the_report_is_read_back_whole_lines_only() {
        let text = "time,device,task,status,code,description,file,verdict\n\
                    t1,10.0.0.1,register,ok,200,200 OK,,\n\
                    t2,10.0.0.1,cpe_start,ok,,\"a, \"\"quoted\"\"\nline\",,\n\
                    t3,10.0.0.1,stop,ok,200,200 OK,CPE_x.pcap\n\
                    t4,10.0.0.1,analyze,ok,,Nothing was lost.,,no_loss\n\
                    t5,10.0.0.1,done,ok,,all rounds captured (1 ro";
        let rows = parse_report(text.as_bytes());
        let tasks: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| (r.task.as_str(), r.file.as_str(), r.verdict.as_str()))
            .collect();
        assert_eq!(
            tasks,
            [
                ("register", "", ""),
                ("cpe_start", "", ""),
                ("stop", "CPE_x.pcap", ""),
                ("analyze", "", "no_loss"),
            ]
        );
        assert_eq!(rows[1].description, "a, \"quoted\"\nline");
        assert_eq!(rows[0].code, "200");
        assert!(parse_report(b"").is_empty());
    }

    #[test]
    fn rows_are_split_into_rounds() {
        // (tasks with their status, the rounds they fall into)
        let table: &[(&[&str], &[usize])] = &[
            (&[], &[]),
            (&["register ok", "cpe_start ok", "capture ok"], &[3]),
            (
                &[
                    "cpe_start ok",
                    "capture ok",
                    "stop ok",
                    "cpe_start ok",
                    "capture ok",
                ],
                &[3, 2],
            ),
            // --resume started the round again: one round.
            (
                &["cpe_start ok", "cpe_start ok", "capture ok", "capture ok"],
                &[4],
            ),
            // collected and analysed after the stop: the same round.
            (
                &[
                    "stop ok",
                    "collect retry",
                    "collect ok",
                    "analyze ok",
                    "cpe_start ok",
                ],
                &[4, 1],
            ),
            // a STOP unconfirmed, then resumed: one round.
            (&["stop failed", "done failed", "stop ok", "done ok"], &[4]),
            (
                &["stop incomplete", "cpe_start ok", "stop ok", "done ok"],
                &[1, 3],
            ),
        ];
        for (tasks, want) in table {
            let rows: Vec<Row> = tasks
                .iter()
                .map(|t| {
                    let (task, status) = t.split_once(' ').unwrap();
                    row("t", "d", task, status, "", "")
                })
                .collect();
            let got: Vec<usize> = rounds(&rows).iter().map(Vec::len).collect();
            assert_eq!(&got, want, "{tasks:?}");
        }
    }

    #[test]
    fn each_device_shows_its_round() {
        let d = "10.0.0.1";
        let r1 = [
            row("t1", d, "register", "ok", "", ""),
            row("t2", d, "cpe_start", "ok", "", ""),
            row("t3", d, "capture", "ok", "", ""),
            row("t4", d, "alarm", "ok", "", ""),
            row("t5", d, "verify", "ok", "", ""),
            row("t6", d, "cpe_stop", "ok", "", ""),
            row("t7", d, "fetch", "ok", "/o/10.0.0.1/1/CPE_1.pcap", ""),
            row("t8", d, "stop", "ok", "CPE_1.pcap", ""),
            row("t9", d, "collect", "ok", "", ""),
            row("t10", d, "analyze", "ok", "", "no_loss"),
        ];
        let r2 = [
            row("t11", d, "cpe_start", "ok", "", ""),
            row("t12", d, "capture", "ok", "", ""),
            row("t13", d, "capture", "ok", "", ""),
        ];
        let both: Vec<Row> = r1.iter().chain(&r2).cloned().collect();
        let flat_done = [
            row("t1", d, "capture", "ok", "", ""),
            row("t2", d, "alarm", "skipped", "", ""),
            row("t3", d, "alarm", "ok", "", ""),
            row("t4", d, "fetch", "retry", "", ""),
            row("t5", d, "fetch", "ok", "out/CPE_1.pcap", ""),
            row("t6", d, "stop", "incomplete", "CPE_1.pcap", ""),
            row("t7", d, "done", "ok", "", ""),
        ];
        let none = OvocFiles::new();
        let mut ovoc = OvocFiles::new();
        ovoc.insert(
            (d.into(), 1),
            vec![
                "/o/10.0.0.1/1/OVOC_1-0.pcap".into(),
                "/o/10.0.0.1/1/OVOC_1-1.pcap".into(),
            ],
        );
        /// step, round, capture_started, alarm, files, verdict, last_task
        type Want<'a> = (
            &'a str,
            u32,
            Option<&'a str>,
            Option<&'a str>,
            &'a [&'a str],
            Option<&'a str>,
            Option<&'a str>,
        );
        struct Case<'a> {
            what: &'a str,
            journal: Journal,
            rows: &'a [Row],
            ovoc: &'a OvocFiles,
            want: Want<'a>,
        }
        let cases = [
            Case {
                what: "registering, no row yet",
                journal: j(d, Step::Register, 0),
                rows: &[],
                ovoc: &none,
                want: ("register", 1, None, None, &[], None, None),
            },
            Case {
                what: "round 1 analysed, round 2 not begun in the report",
                journal: j(d, Step::CpeStart, 1),
                rows: &r1,
                ovoc: &ovoc,
                want: ("cpe_start", 2, None, None, &[], None, Some("analyze")),
            },
            Case {
                what: "round 2 capturing (CAPTURE resumed: the first time counts)",
                journal: j(d, Step::Armed, 1),
                rows: &both,
                ovoc: &ovoc,
                want: ("armed", 2, Some("t12"), None, &[], None, Some("capture")),
            },
            Case {
                what: "done after round 1: its files, the OVOC ones found, the verdict",
                journal: j(d, Step::Done, 1),
                rows: &r1,
                ovoc: &ovoc,
                want: (
                    "done",
                    1,
                    Some("t3"),
                    Some("t4"),
                    &[
                        "/o/10.0.0.1/1/CPE_1.pcap",
                        "/o/10.0.0.1/1/OVOC_1-0.pcap",
                        "/o/10.0.0.1/1/OVOC_1-1.pcap",
                    ],
                    Some("no_loss"),
                    Some("analyze"),
                ),
            },
            Case {
                what: "without --collect-ovoc: the fetched file once, a skipped alarm not taken",
                journal: j(d, Step::Done, 1),
                rows: &flat_done,
                ovoc: &none,
                want: (
                    "done",
                    1,
                    Some("t1"),
                    Some("t3"),
                    &["out/CPE_1.pcap"],
                    None,
                    Some("done"),
                ),
            },
        ];
        for c in cases {
            let got = devices(&[j(d, Step::Register, 0), c.journal], c.rows, c.ovoc);
            assert_eq!(got.len(), 1, "{}", c.what);
            let g = &got[0];
            let files: Vec<&str> = g.files.iter().map(String::as_str).collect();
            assert_eq!(
                (
                    g.step.as_str(),
                    g.round,
                    g.capture_started.as_deref(),
                    g.alarm.as_deref(),
                    files.as_slice(),
                    g.verdict.as_deref(),
                    g.last_task.as_deref()
                ),
                c.want,
                "{}",
                c.what
            );
        }
    }

    #[test]
    fn devices_keep_the_journals_order_and_the_state_follows_them() {
        let journal = [
            j("b", Step::Register, 0),
            j("a", Step::Register, 0),
            j("b", Step::Done, 1),
            j("a", Step::Done, 1),
        ];
        let rows = [
            row("t", "c", "capture", "ok", "", ""),
            row("t", "", "gap", "failed", "", ""),
        ];
        let all = devices(&journal, &rows, &OvocFiles::new());
        let names: Vec<&str> = all.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["b", "a", "c"]);
        assert_eq!(all[2].step, "unknown");
        let done = &all[..2];
        let step = |s: &str| DeviceStatus {
            step: s.into(),
            ..all[0].clone()
        };
        // (devices' steps, a gap row, a live holder) -> state
        let table: &[(&[&str], bool, bool, State)] = &[
            (&["done", "done"], false, false, State::Finished),
            (&["done", "done"], false, true, State::Running),
            (&["done", "capture"], false, true, State::Running),
            (&["done", "capture"], false, false, State::Failed),
            (&["done", "aborted"], false, false, State::Failed),
            (&["failed"], false, false, State::Failed),
            (&["done", "done"], true, false, State::Failed),
            (&[], false, false, State::Failed),
        ];
        for (steps, gap, live, want) in table {
            let devs: Vec<DeviceStatus> = steps.iter().map(|s| step(s)).collect();
            let rows = if *gap { &rows[1..] } else { &[][..] };
            assert_eq!(
                state(&devs, rows, *live),
                *want,
                "{steps:?} gap {gap} live {live}"
            );
        }
        assert_eq!(state(done, &[], false).exit_code(), ExitCode::Ok);
        assert_eq!(State::Failed.exit_code(), ExitCode::Failed);
        assert_eq!(State::Running.exit_code() as i32, 3);
    }

    #[test]
    fn the_table_is_aligned_and_escapes_control_characters() {
        let d = DeviceStatus {
            device: "10.0.0.1".into(),
            step: "done".into(),
            rounds: 1,
            round: 1,
            capture_started: Some("2026-11-27T07:42:13.899869Z".into()),
            alarm: Some("2026-11-27T07:43:00.000001Z".into()),
            files: vec![
                "/o/10.0.0.1/1/CPE_1.pcap".into(),
                "/o/10.0.0.1/1/OVOC_1-0.pcap".into(),
            ],
            verdict: Some("no_loss".into()),
            last_task: Some("done".into()),
            last_status: Some("ok".into()),
            updated: None,
        };
        let evil = DeviceStatus {
            device: "sbc\u{1b}[2J".into(),
            step: "capture".into(),
            round: 2,
            capture_started: None,
            alarm: None,
            files: vec![],
            verdict: None,
            ..d.clone()
        };
        let got = table(&[d, evil], State::Running, Some(Holder { pid: 42 }));
        assert_eq!(
            got,
            "DEVICE        STEP     ROUND  CAPTURING SINCE       ALARM                 VERDICT  FILES\n\
             10.0.0.1      done     1      2026-11-27T07:42:13Z  2026-11-27T07:43:00Z  no_loss  CPE_1.pcap OVOC_1-0.pcap\n\
             sbc\\u{1b}[2J  capture  2      -                     -                     -        -\n\
             \n\
             session running (pid 42): 2 device(s), 1 done, 0 aborted, 0 failed, 1 unfinished\n"
        );
    }
}
