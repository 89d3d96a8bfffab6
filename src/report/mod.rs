//! `tc report --out DIR --html FILE`: one self-contained HTML file for an incident, made from a
//! session's `--out` (running or finished) without disturbing it: the journal, the report and
//! the round directories are only read, as `tc session status` reads them. The page itself is
//! built by the pure [`page`] from what this shell reads; the file is written beside its final
//! name and renamed into place, so a reader never sees half a page.

mod page;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::cli::ReportArgs;
use crate::error::{Error, ExitCode, Result};
use crate::event::Event;
use crate::session::files::Layout;
use crate::session::status::{self, DeviceStatus, Row};
use page::{FileInfo, Record, RoundInput};

/// The largest timeline embedded: plotters' SVGs of a round are tens of KiB; anything far past
/// that is not ours.
const MAX_SVG: u64 = 16 << 20;

pub fn run(a: ReportArgs) -> Result<ExitCode> {
    let p = status::Paths::new(&a.out, a.report.as_deref());
    let (holder, snap) = status::look(&p)?;
    let state = status::state(&snap.devices, &snap.rows, holder.is_some());
    let mut rounds = Vec::new();
    for d in &snap.devices {
        rounds.extend(read_rounds(&p.out, d, &snap.rows));
    }
    let page = page::build(&page::Input {
        out: p.out.display().to_string(),
        generated: crate::timefmt::Utc::now().rfc3339(),
        state,
        pid: holder.map(|h| h.pid),
        devices: snap.devices,
        rows: snap.rows,
        rounds,
    });
    let html = askama::Template::render(&page)
        .map_err(|e| Error::failed(format!("rendering the report: {e}")))?;
    write_whole(&a.html, html.as_bytes())
        .map_err(|e| Error::failed(format!("writing {}: {e}", a.html.display())))?;
    crate::emit::emit(&Event::ReportWritten {
        path: a.html.display().to_string(),
        devices: page.devices() as u32,
        rounds: page.rounds() as u32,
        bytes: html.len() as u64,
        state: state.name().into(),
    });
    Ok(ExitCode::Ok)
}

/// The device's rounds as its directories hold them: `OUT/<device>/<n>/` with
/// `--collect-ovoc`, else `OUT` itself, where a round's files are the CPE files its rows name.
fn read_rounds(out: &Path, d: &DeviceStatus, rows: &[Row]) -> Vec<RoundInput> {
    let split = status::rounds(rows.iter().filter(|r| r.device == d.device));
    let per_round = Layout {
        out: out.to_path_buf(),
        per_round: true,
    };
    let dev_dir = per_round
        .round_dir_checked(&d.device, 1)
        .and_then(|r| r.parent().map(Path::to_path_buf))
        .filter(|p| p.is_dir());
    let Some(dev_dir) = dev_dir else {
        // Without --collect-ovoc: the CPE files the round's rows name, in OUT.
        return split
            .iter()
            .enumerate()
            .map(|(i, rows)| {
                let names = cpe_files(rows);
                let mut r = RoundInput {
                    device: d.device.clone(),
                    round: i as u32 + 1,
                    dir: out.display().to_string(),
                    ..RoundInput::default()
                };
                for n in names {
                    match file_info(&out.join(&n)) {
                        Ok(Some(f)) => r.files.push(f),
                        Ok(None) => {}
                        Err(e) => r.notes.push(e),
                    }
                }
                r
            })
            .collect();
    };
    let mut numbers: Vec<u32> = std::fs::read_dir(&dev_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .filter(|&n: &u32| n > 0)
                .collect()
        })
        .unwrap_or_default();
    numbers.sort_unstable();
    numbers
        .into_iter()
        .map(|round| read_round_dir(&d.device, round, &dev_dir.join(round.to_string())))
        .collect()
}

/// The names of the CPE files a round's fetch and stop rows name.
fn cpe_files(rows: &[&Row]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| !r.file.is_empty() && matches!(r.task.as_str(), "fetch" | "stop"))
    {
        let name = Path::new(&r.file)
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| crate::session::files::is_plain_name(n));
        if let Some(n) = name.filter(|n| !names.iter().any(|m| m == n)) {
            names.push(n.to_string());
        }
    }
    names
}

fn read_round_dir(device: &str, round: u32, dir: &Path) -> RoundInput {
    let mut r = RoundInput {
        device: device.to_string(),
        round,
        dir: dir.display().to_string(),
        ..RoundInput::default()
    };
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            // `.name.part`, `.name.tmp`: transfers and analyses under way.
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(e) => {
            r.notes.push(format!("reading {}: {e}", dir.display()));
            Vec::new()
        }
    };
    // The evidence first: the CPE file, the OVOC ring, then what the analysis made.
    let rank = |n: &str| match n {
        n if n.starts_with("CPE_") => 0,
        n if n.starts_with("OVOC_") => 1,
        _ => 2,
    };
    names.sort_by(|a, b| (rank(a), a).cmp(&(rank(b), b)));
    for n in &names {
        match file_info(&dir.join(n)) {
            Ok(Some(f)) => r.files.push(f),
            Ok(None) => {}
            Err(e) => r.notes.push(e),
        }
    }
    match std::fs::read_to_string(dir.join("analysis.jsonl")) {
        Ok(text) => {
            let (records, bad) = analysis_records(&text);
            r.analysis = records;
            if bad > 0 {
                r.notes.push(format!(
                    "analysis.jsonl: {bad} line(s) that do not parse were left out"
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => r.notes.push(format!("reading analysis.jsonl: {e}")),
    }
    let svg = dir.join("timeline.svg");
    match std::fs::symlink_metadata(&svg) {
        Ok(m) if m.is_file() && m.len() <= MAX_SVG => match std::fs::read(&svg) {
            Ok(b) => r.svg = Some(b),
            Err(e) => r.notes.push(format!("reading timeline.svg: {e}")),
        },
        Ok(m) if m.is_file() => r.notes.push(format!(
            "timeline.svg is {} bytes: too large to embed",
            m.len()
        )),
        _ => {}
    }
    r
}

/// The records of an analysis.jsonl the page shows, and how many lines did not parse.
fn analysis_records(text: &str) -> (Vec<Record>, usize) {
    let mut bad = 0;
    let mut records = Vec::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Record>(l) {
            Ok(Record::Other) => {}
            Ok(r) => records.push(r),
            Err(_) => bad += 1,
        }
    }
    (records, bad)
}

/// A regular file's size and sha256 (ring, streamed); None for what is not a regular file (a
/// directory, or a symlink, which could point anywhere).
fn file_info(path: &Path) -> std::result::Result<Option<FileInfo>, String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) => return Err(format!("{name}: {e}")),
    }
    let mut f = std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?;
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 256 << 10];
    let mut bytes = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    Ok(Some(FileInfo {
        name,
        bytes,
        sha256: crate::util::hex(h.finish().as_ref()),
    }))
}

/// `bytes` at `path`, written under another name beside it and renamed into place. Mode 0600,
/// as the session's own files are by default: the page lists the fleet's addresses and its
/// evidence; whoever shares it decides with whom (chmod, or a copy).
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp: PathBuf = path.with_file_name(name);
    // Left by a run killed here before: ours to replace.
    let _ = std::fs::remove_file(&tmp);
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|_| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_analysis_records_are_taken() {
        let text = concat!(
            r#"{"ts":"2026-11-27T07:42:13.899869Z","type":"analyze.verdict","device":"10.0.0.1","verdict":"no_loss","text":"ok"}"#,
            "\n",
            r#"{"ts":"2026-11-27T07:42:13.899869Z","type":"cpe.error","device":"a","op":"b","error":"c"}"#,
            "\nnot json\n\n",
        );
        let (records, bad) = analysis_records(text);
        assert_eq!(
            records,
            [Record::Verdict {
                verdict: "no_loss".into(),
                text: "ok".into()
            }]
        );
        assert_eq!(bad, 1, "the line that is no JSON");
    }

    #[test]
    fn round_files_are_named_once_and_never_lead_elsewhere() {
        let r = |task: &str, file: &str| Row {
            task: task.into(),
            file: file.into(),
            ..Row::default()
        };
        let rows = [
            r("fetch", "/srv/out/CPE_a.pcap"),
            r("stop", "CPE_a.pcap"),
            r("stop", "../etc/passwd"),
            r("fetch", ".."),
            r("capture", "CPE_b.pcap"),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        assert_eq!(cpe_files(&refs), ["CPE_a.pcap", "passwd"]);
    }
}
