//! The summary a person reads at the end of a session (on a terminal) and of `tc lab demo`:
//! per device and round the files, the probes' result and the verdict with its timeline, then
//! the report. Made from the report's rows and the round directories, so it says what the files
//! say, whichever process wrote them.

use std::path::{Path, PathBuf};

/// The report's rows (header skipped; a row that does not parse is left out).
pub fn rows(report_csv: &str) -> Vec<csv::StringRecord> {
    csv::Reader::from_reader(report_csv.as_bytes())
        .records()
        .filter_map(|r| r.ok())
        .collect()
}

/// The whole summary. `per_round`: the session collected OVOC files into
/// `OUT/<device>/<round>/`; else the CPE files are in OUT and named by the fetch rows.
pub fn text(out: &Path, report: &Path, rows: &[csv::StringRecord], per_round: bool) -> String {
    let mut s = String::new();
    if per_round {
        for (device, round) in rounds(out) {
            s += &round_summary(&device, &round, rows);
        }
    } else {
        for r in rows
            .iter()
            .filter(|r| field(r, 2) == "fetch" && field(r, 3) == "ok")
        {
            s += &format!("  {}\n    CPE  {}\n", field(r, 1), field(r, 6));
            s += &probes(field(r, 1), rows);
        }
    }
    let failed = rows.iter().filter(|r| field(r, 3) == "failed").count();
    s += &format!(
        "  report: {} ({} rows, {failed} failed)\n",
        report.display(),
        rows.len()
    );
    s
}

fn field(r: &csv::StringRecord, i: usize) -> &str {
    r.get(i).unwrap_or("")
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
        v.extend(
            sorted(&dev)
                .into_iter()
                .filter(|p| p.is_dir())
                .map(|r| (name.clone(), r)),
        );
    }
    v
}

/// The device's last row of `task`.
fn last<'a>(
    rows: &'a [csv::StringRecord],
    device: &str,
    task: &str,
) -> Option<&'a csv::StringRecord> {
    rows.iter()
        .rev()
        .find(|r| field(r, 1) == device && field(r, 2) == task)
}

fn probes(device: &str, rows: &[csv::StringRecord]) -> String {
    last(rows, device, "verify").map_or(String::new(), |v| {
        format!("    probes: {} ({})\n", field(v, 5), field(v, 3))
    })
}

/// One round: its files, the probes' result and the verdict with its timeline.
fn round_summary(device: &str, dir: &Path, rows: &[csv::StringRecord]) -> String {
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
    s += &probes(device, rows);
    match last(rows, device, "analyze") {
        Some(a) if field(a, 3) == "ok" => {
            s += &format!(
                "    verdict: {} - {}\n    timeline: {}\n",
                field(a, 7),
                field(a, 5),
                dir.join("timeline.svg").display()
            );
        }
        Some(a) => s += &format!("    no verdict: {}\n", field(a, 5)),
        None => s += "    no verdict: not analysed\n",
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
        let report = out.path().join("report.csv");
        let got = text(out.path(), &report, &rows(REPORT), true);
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
            &rows(REPORT),
            false,
        );
        assert_eq!(
            got,
            "  10.0.0.1\n    CPE  /o/10.0.0.1/1/CPE_device_10.0.0.1_T.pcap\n    \
             probes: agent: 200 OK; here: icmp 10/10 (ok)\n  \
             report: /o/report.csv (4 rows, 1 failed)\n"
        );
    }
}
