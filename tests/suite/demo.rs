//! `tc lab demo`, as a newcomer runs it.

use crate::harness::*;

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn demo_runs_a_complete_session() {
    require_lab();
    let dir = tempfile::tempdir().unwrap();
    let mut c = tc();
    c.args(["lab", "demo", "--devices", "3", "--dir"])
        .arg(dir.path());
    let t = std::time::Instant::now();
    let r = run(c).expect(0);
    // The README says it ends within a minute; a timed assertion would only measure the machine.
    println!("tc lab demo took {:?}", t.elapsed());
    let summary = r.of_type("session.summary");
    assert!(
        matches!(
            summary[..],
            [Event::SessionSummary {
                completed: 3,
                aborted: 0,
                ..
            }]
        ),
        "{}",
        r.dump()
    );
    assert!(
        r.stderr.contains("report:") && r.stderr.contains("0 failed"),
        "{}",
        r.dump()
    );
    // Each device's round: its CPE file, the OVOC files the session collected, the analysis.
    let out = dir.path().join("captures");
    let mut cpe = Vec::new();
    let mut ovoc = Vec::new();
    let report = std::fs::read_to_string(out.join("report.csv")).unwrap();
    let tasks = r.of_type("session.task");
    for d in std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()) {
        if !d.is_dir() || d.file_name().unwrap().to_str().unwrap().starts_with('.') {
            continue;
        }
        let device = d.file_name().unwrap().to_str().unwrap().to_string();
        let round = d.join("1");
        let names: Vec<String> = std::fs::read_dir(&round)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mine: Vec<&String> = names
            .iter()
            .filter(|n| n.starts_with("CPE_device_"))
            .collect();
        assert_eq!(mine.len(), 1, "{device}: {names:?}");
        let base = mine[0]
            .strip_prefix("CPE_")
            .unwrap()
            .strip_suffix(".pcap")
            .unwrap();
        assert!(
            names.contains(&format!("OVOC_{base}-0.pcap")),
            "{device}: {names:?}"
        );
        for a in ["analysis.jsonl", "merged.pcapng", "timeline.svg"] {
            assert!(
                names.iter().any(|n| n == a),
                "{device}: no {a} in {names:?}"
            );
        }
        cpe.push(round.join(mine[0]));
        ovoc.push(round.join(format!("OVOC_{base}-0.pcap")));
        // The verdict: in the JSON lines, the report, and the summary on stderr.
        let verdict = tasks
            .iter()
            .find_map(|e| match e {
                Event::SessionTask {
                    device: dev,
                    task,
                    verdict: Some(v),
                    ..
                } if *dev == device && task == "analyze" => Some(v.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{device}: no verdict\n{}", r.dump()));
        assert!(
            report
                .lines()
                .any(|l| l.contains(&format!(",{device},analyze,ok,"))
                    && l.ends_with(&format!(",{verdict}"))),
            "{device}: {report}"
        );
        assert!(
            r.stderr.contains(&format!("verdict: {verdict} - "))
                && r.stderr
                    .contains(&round.join("timeline.svg").display().to_string()),
            "{device}: {}",
            r.dump()
        );
    }
    assert_eq!((cpe.len(), ovoc.len()), (3, 3), "{cpe:?} {ovoc:?}");
    let all: Vec<_> = cpe.iter().chain(&ovoc).cloned().collect();
    assert!(capinfos_packets(&all).iter().all(|&n| n > 0));
    // Both sides recorded the probes sent on Connection Lost (the lab runs live captures).
    for f in &all {
        let out = std::process::Command::new("tshark")
            .arg("-r")
            .arg(f)
            .args(["-Y", "icmp.type == 8"])
            .output()
            .unwrap();
        let echo_requests = String::from_utf8_lossy(&out.stdout).lines().count();
        assert!(
            echo_requests >= 3,
            "{}: {echo_requests} ICMP echo requests",
            f.display()
        );
    }
    assert_eq!(
        report.lines().filter(|l| l.contains(",done,ok,")).count(),
        3,
        "{report}"
    );
    // The README's demo drops OVOC's traffic to the devices at the router, and says so.
    super::wan::assert_verdicts(&r, &out, "wan_loss_ovoc_to_cpe");
}

#[test]
fn iproute2_words_say_which_tool_this_is() {
    for word in ["qdisc", "class", "filter"] {
        let mut c = tc();
        c.args([word, "show", "dev", "lo"]);
        let r = run_text(c).expect(2);
        assert!(
            r.stderr.contains("not iproute2's traffic control")
                && r.stderr.contains("/usr/sbin/tc"),
            "{}",
            r.dump()
        );
    }
}
