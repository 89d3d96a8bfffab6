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
    let files = |sub: &str, prefix: &str| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir.path().join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
            .collect();
        v.sort();
        v
    };
    let (cpe, ovoc) = (
        files("captures", "CPE_device_"),
        files("ovoc", "OVOC_device_"),
    );
    assert_eq!((cpe.len(), ovoc.len()), (3, 3), "{cpe:?} {ovoc:?}");
    for c in &cpe {
        let base = c
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .strip_prefix("CPE_")
            .unwrap()
            .strip_suffix(".pcap")
            .unwrap();
        assert!(
            ovoc.iter()
                .any(|o| o.ends_with(format!("OVOC_{base}-0.pcap"))),
            "{base}"
        );
    }
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
    let report = std::fs::read_to_string(dir.path().join("captures/report.csv")).unwrap();
    assert_eq!(
        report.lines().filter(|l| l.contains(",done,ok,")).count(),
        3,
        "{report}"
    );
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
