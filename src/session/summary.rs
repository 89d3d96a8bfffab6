//! The summary a person reads at the end of a session (on a terminal) and of `tc lab demo`:
//! per device and round the files, the probes' result and the verdict with its timeline, then
//! the report. Made from the report's rows and the round directories, so it says what the files
//! say, whichever process wrote them.

use std::path::{Path, PathBuf};

use super::status::{self, Row};

/// The whole summary. `per_round`: the session collected OVOC files into
/// `OUT/<device>/<round>/`; else the CPE files are in OUT and named by the fetch rows.
/// `rows` as `status::parse_report` reads them.
pub fn text(out: &Path, report: &Path, rows: &[Row], per_round: bool) -> String {
    let mut s = String::new();
    if per_round {
        for (device, round) in rounds(out) {
            s += &round_summary(&device, &round, rows);
        }
    } else {
        for r in rows
            .iter()
            .filter(|r| r.task == "fetch" && r.status == "ok")
        {
            s += &format!("  {}\n    CPE  {}\n", r.device, r.file);
            s += &probes_row(last(rows, &r.device, "verify"));
        }
    }
    let failed = rows.iter().filter(|r| r.status == "failed").count();
    s += &format!(
        "  report: {} ({} rows, {failed} failed)\n",
        report.display(),
        rows.len()
    );
    s
}

pub fn size(p: &Path) -> String {
    let n = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

fn sorted(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(d)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Every `<device>/<round>/` directory under `out`.
fn rounds(out: &Path) -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    for dev in sorted(out).into_iter().filter(|p| p.is_dir()) {
        let Some(name) = dev.file_name().and_then(|n| n.to_str()).map(String::from) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        // Rounds by number (10 after 9).
        let mut rounds: Vec<(u32, PathBuf)> = sorted(&dev)
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|r| Some((r.file_name()?.to_str()?.parse().ok()?, r)))
            .collect();
        rounds.sort();
        v.extend(rounds.into_iter().map(|(_, r)| (name.clone(), r)));
    }
    v
}

/// The verdict and its sentence the round's `analysis.jsonl` holds.
fn verdict_of(dir: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(dir.join("analysis.jsonl")).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v.get("type")? == "analyze.verdict").then(|| {
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
            (s("verdict"), s("text"))
        })
    })
}

/// The device's last row of `task`.
fn last<'a>(rows: &'a [Row], device: &str, task: &str) -> Option<&'a Row> {
    rows.iter()
        .rev()
        .find(|r| r.device == device && r.task == task)
}

fn probes_row(v: Option<&Row>) -> String {
    v.map_or(String::new(), |v| {
        format!(
            "    probes: {} ({})
",
            v.description, v.status
        )
    })
}

/// One round: its files, the probes' result and the verdict with its timeline. The verdict is
/// the round's own (its `analysis.jsonl`); the probes are from the round's rows as
/// `status::rounds` splits the report (it has no round column).
fn round_summary(device: &str, dir: &Path, rows: &[Row]) -> String {
    let mut s = format!("  {device}\n");
    for f in sorted(dir) {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let side = if name.starts_with("CPE_") {
            "CPE "
        } else if name.starts_with("OVOC_") {
            "OVOC"
        } else {
            continue;
        };
        s += &format!("    {side} {} ({})\n", f.display(), size(&f));
    }
    let round: usize = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let of_device = rows.iter().filter(|r| r.device == device);
    let verify = status::rounds(of_device)
        .get(round.saturating_sub(1))
        .and_then(|r| r.iter().rev().find(|r| r.task == "verify").copied());
    s += &probes_row(verify);
    match verdict_of(dir) {
        Some((verdict, text)) => {
            s += &format!(
                "    verdict: {verdict} - {text}\n    timeline: {}\n",
                dir.join("timeline.svg").display()
            );
        }
        None => match last(rows, device, "analyze").filter(|a| a.status != "ok") {
            Some(a) => s += &format!("    no verdict: {}\n", a.description),
            None => s += "    no verdict: not analysed\n",
        },
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "time,device,task,status,code,description,file,verdict\n\
        t,10.0.0.1,verify,ok,200,\"agent: 200 OK; here: icmp 10/10\",,\n\
        t,10.0.0.1,fetch,ok,,CPE capture retrieved,/o/10.0.0.1/1/CPE_device_10.0.0.1_T.pcap,\n\
        t,10.0.0.1,analyze,ok,,SNMP from OVOC never reached the CPE.,,wan_loss_ovoc_to_cpe\n\
        t,10.0.0.2,collect,failed,,HOST KEY CHANGED,,\n";

    #[test]
    fn each_round_with_its_files_probes_and_verdict() {
        let out = tempfile::tempdir().unwrap();
        for d in ["10.0.0.1", "10.0.0.2"] {
            let round = out.path().join(d).join("1");
            std::fs::create_dir_all(&round).unwrap();
            std::fs::write(round.join(format!("CPE_device_{d}_T.pcap")), [0u8; 2048]).unwrap();
        }
        std::fs::write(
            out.path().join("10.0.0.1/1/OVOC_device_10.0.0.1_T-0.pcap"),
            [0u8; 1024],
        )
        .unwrap();
        let verdict = r#"{"ts":"t","type":"analyze.verdict","device":"10.0.0.1","verdict":"wan_loss_ovoc_to_cpe","text":"SNMP from OVOC never reached the CPE."}"#;
        std::fs::write(out.path().join("10.0.0.1/1/analysis.jsonl"), verdict).unwrap();
        let report = out.path().join("report.csv");
        let got = text(
            out.path(),
            &report,
            &status::parse_report(REPORT.as_bytes()),
            true,
        );
        let o = out.path().display();
        let want = format!(
            "  10.0.0.1\n    CPE  {o}/10.0.0.1/1/CPE_device_10.0.0.1_T.pcap (2.0 KiB)\n    \
             OVOC {o}/10.0.0.1/1/OVOC_device_10.0.0.1_T-0.pcap (1.0 KiB)\n    \
             probes: agent: 200 OK; here: icmp 10/10 (ok)\n    \
             verdict: wan_loss_ovoc_to_cpe - SNMP from OVOC never reached the CPE.\n    \
             timeline: {o}/10.0.0.1/1/timeline.svg\n  \
             10.0.0.2\n    CPE  {o}/10.0.0.2/1/CPE_device_10.0.0.2_T.pcap (2.0 KiB)\n    \
             no verdict: not analysed\n  \
             report: {o}/report.csv (4 rows, 1 failed)\n"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn without_collection_the_fetched_files_are_named_by_the_rows() {
        let got = text(
            Path::new("/o"),
            Path::new("/o/report.csv"),
            &status::parse_report(REPORT.as_bytes()),
            false,
        );
        assert_eq!(
            got,
            "  10.0.0.1\n    CPE  /o/10.0.0.1/1/CPE_device_10.0.0.1_T.pcap\n    \
             probes: agent: 200 OK; here: icmp 10/10 (ok)\n  \
             report: /o/report.csv (4 rows, 1 failed)\n"
        );
    }

    /// Review finding 3: each round says its own verdict and probes, rounds in number order.
    #[test]
    fn rounds_in_number_order_each_with_its_own_verdict() {
        let out = tempfile::tempdir().unwrap();
        let report = "time,device,task,status,code,description,file,verdict\n";
        let mut report = report.to_string();
        for round in 1..=10 {
            let dir = out.path().join("d").join(round.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            let line = format!(
                r#"{{"type":"analyze.verdict","device":"d","verdict":"v{round}","text":"t{round}"}}"#
            );
            std::fs::write(dir.join("analysis.jsonl"), line).unwrap();
            // A round as a session reports it: started, probed, stopped.
            report += "t,d,cpe_start,ok,,,,\n";
            report += &format!("t,d,verify,ok,200,probes {round},,\n");
            report += "t,d,stop,ok,200,200 OK,CPE_x.pcap,\n";
        }
        let got = text(
            out.path(),
            Path::new("r.csv"),
            &status::parse_report(report.as_bytes()),
            true,
        );
        let order: Vec<&str> = got.lines().filter(|l| l.contains("verdict:")).collect();
        assert_eq!(order.len(), 10);
        for (i, l) in order.iter().enumerate() {
            assert!(l.ends_with(&format!("v{} - t{}", i + 1, i + 1)), "{l}");
        }
        assert!(got.contains("probes: probes 10 (ok)"));
        let p2 = got.find("probes: probes 2 (ok)").unwrap();
        let p10 = got.find("probes: probes 10 (ok)").unwrap();
        assert!(p2 < p10, "{got}");
    }
}
