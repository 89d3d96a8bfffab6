//! `tc session status` on out dirs made here, without the lab: a journal, a report and round
//! directories written as a session writes them, some of their values hostile.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::harness::*;

pub const EVIL: &str = "<script>alert(1)</script>";

fn journal_line(device: &str, step: &str, rounds: u32) -> String {
    serde_json::json!({
        "device": device, "step": step, "rounds": rounds, "cpe_capturing": false, "filename": null
    })
    .to_string()
        + "\n"
}

fn csv_row(fields: [&str; 8]) -> String {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.write_record(fields).unwrap();
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

/// A session's `--out` with `--collect-ovoc`: device 10.0.0.1 through one round (its files,
/// analysis and timeline in 10.0.0.1/1/), 10.0.0.2 at `second_step`, and rows for a device named
/// `<script>...` that the journal names too (as a hostile inventory or a forged report would).
pub fn synthetic_out(dir: &Path, second_step: &str) -> PathBuf {
    let out = dir.join("out");
    let round = out.join("10.0.0.1/1");
    std::fs::create_dir_all(&round).unwrap();
    std::fs::create_dir_all(out.join(".tc-session")).unwrap();
    let base = "device_10.0.0.1_2026-11-27T07.42.13.899869";
    let cpe = format!("CPE_{base}.pcap");
    std::fs::write(round.join(&cpe), b"cpe capture bytes").unwrap();
    std::fs::write(round.join(format!("OVOC_{base}-0.pcap")), b"ovoc ring 0").unwrap();
    std::fs::write(round.join(format!("OVOC_{base}-1.pcap")), b"ovoc ring 1").unwrap();
    std::fs::write(round.join(".merged.pcapng.tmp"), b"under way").unwrap();
    // What plotters would never write, but a hostile SVG must not get out of its <img>.
    std::fs::write(
        round.join("timeline.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\">\
         <script>alert(1)</script><text>\"'></text></svg>",
    )
    .unwrap();
    let ts = "2026-11-27T07:50:00.000000Z";
    let analysis = [
        serde_json::json!({"ts": ts, "type": "analyze.clock", "offset_ms": 1.5, "drift_ppm": -0.25,
            "uncertainty_ms": 0.125, "at": "2026-11-27T07:42:14Z",
            "one_way_delay_ms": {"ovoc_to_cpe": null, "cpe_to_ovoc": null}, "matched": 1234,
            "method": "estimated", "ovoc_addr": "10.9.9.9", "ovoc_addr_source": "found",
            "step_ms": null, "step_at": null}),
        serde_json::json!({"ts": ts, "type": "analyze.loss", "direction": "ovoc_to_cpe",
            "class": EVIL, "start_cpe": "2026-11-27T07:43:00Z", "end_cpe": "2026-11-27T07:43:09Z",
            "start_ovoc": "2026-11-27T07:43:01Z", "end_ovoc": "2026-11-27T07:43:10Z",
            "packets": 10}),
        serde_json::json!({"ts": ts, "type": "analyze.verdict", "device": EVIL,
            "verdict": "wan_loss_ovoc_to_cpe", "text": format!("{EVIL} never arrived")}),
    ];
    let lines: String = analysis.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(round.join("analysis.jsonl"), lines).unwrap();
    let journal = [
        journal_line("10.0.0.1", "register", 0),
        journal_line("10.0.0.2", "register", 0),
        journal_line(EVIL, "register", 0),
        journal_line("10.0.0.1", "done", 1),
        journal_line("10.0.0.2", second_step, 0),
        journal_line(EVIL, "done", 1),
    ]
    .concat();
    std::fs::write(out.join(".tc-session/journal"), journal).unwrap();
    let d = "10.0.0.1";
    let path = round.join(&cpe).display().to_string();
    let rows = [
        csv_row([
            "2026-11-27T07:42:00.000001Z",
            d,
            "register",
            "ok",
            "200",
            "200 OK",
            "",
            "",
        ]),
        csv_row([
            "2026-11-27T07:42:05.000001Z",
            d,
            "cpe_start",
            "ok",
            "",
            "capture active on the device",
            "",
            "",
        ]),
        csv_row([
            "2026-11-27T07:42:13.000001Z",
            d,
            "capture",
            "ok",
            "200",
            "200 OK",
            "",
            "",
        ]),
        csv_row([
            "2026-11-27T07:43:20.000001Z",
            d,
            "alarm",
            "ok",
            "",
            "Connection Lost",
            "",
            "",
        ]),
        csv_row([
            "2026-11-27T07:43:40.000001Z",
            d,
            "fetch",
            "ok",
            "",
            "CPE capture retrieved",
            &path,
            "",
        ]),
        csv_row([
            "2026-11-27T07:43:41.000001Z",
            d,
            "stop",
            "ok",
            "200",
            "200 OK",
            &cpe,
            "",
        ]),
        csv_row([
            "2026-11-27T07:43:50.000001Z",
            d,
            "analyze",
            "ok",
            "",
            "SNMP from OVOC never arrived.",
            "",
            "wan_loss_ovoc_to_cpe",
        ]),
        csv_row([
            "2026-11-27T07:43:51.000001Z",
            d,
            "done",
            "ok",
            "",
            "all rounds captured (1 round(s))",
            "",
            "",
        ]),
        csv_row([
            "2026-11-27T07:42:13.000002Z",
            "10.0.0.2",
            "capture",
            "ok",
            "200",
            "200 OK",
            "",
            "",
        ]),
        csv_row([
            "2026-11-27T07:42:13.000003Z",
            EVIL,
            "capture",
            "ok",
            "200",
            EVIL,
            "",
            "",
        ]),
        csv_row([
            "2026-11-27T07:43:41.000003Z",
            EVIL,
            "stop",
            "ok",
            "200",
            "200 OK",
            &format!("../{EVIL}"),
            "",
        ]),
        csv_row([
            "2026-11-27T07:43:50.000003Z",
            EVIL,
            "analyze",
            "ok",
            "",
            EVIL,
            "",
            "\"><img src=x onerror=alert(1)>",
        ]),
    ]
    .concat();
    std::fs::write(
        out.join("report.csv"),
        format!("time,device,task,status,code,description,file,verdict\n{rows}"),
    )
    .unwrap();
    out
}

fn status(out: &Path) -> Run {
    let mut c = tc();
    c.args(["session", "status", "--out"]).arg(out);
    run(c)
}

fn summary(r: &Run) -> (String, Option<u32>, u32) {
    match r.events.last() {
        Some(Event::SessionStatusSummary {
            state,
            pid,
            unfinished,
            ..
        }) => (state.clone(), *pid, *unfinished),
        other => panic!("no summary last: {other:?}\n{}", r.dump()),
    }
}

#[test]
fn status_says_finished_failed_or_running_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = synthetic_out(dir.path(), "armed");
    let before = tree(&out);
    // Killed mid-way (no lock holder, a device not done): finished with failures.
    let r = status(&out).expect(1);
    assert_eq!(summary(&r), ("failed".into(), None, 1));
    assert_eq!(tree(&out), before, "status changed the out dir");
    assert!(
        !out.join(".tc-session/lock").exists(),
        "status made a lock file"
    );
    let first = match &r.events[0] {
        Event::SessionStatus {
            device,
            step,
            round,
            capture_started,
            alarm,
            files,
            verdict,
            ..
        } => (device, step, *round, capture_started, alarm, files, verdict),
        e => panic!("{e:?}"),
    };
    let round = out.join("10.0.0.1/1");
    let base = "device_10.0.0.1_2026-11-27T07.42.13.899869";
    let want_files: Vec<String> = [
        format!("CPE_{base}.pcap"),
        format!("OVOC_{base}-0.pcap"),
        format!("OVOC_{base}-1.pcap"),
    ]
    .iter()
    .map(|n| round.join(n).display().to_string())
    .collect();
    assert_eq!(
        first,
        (
            &"10.0.0.1".to_string(),
            &"done".to_string(),
            1,
            &Some("2026-11-27T07:42:13.000001Z".to_string()),
            &Some("2026-11-27T07:43:20.000001Z".to_string()),
            &want_files,
            &Some("wan_loss_ovoc_to_cpe".to_string())
        ),
        "{}",
        r.dump()
    );
    assert_eq!(r.of_type("session.status").len(), 3, "{}", r.dump());

    // Every device done: finished.
    let done = tempfile::tempdir().unwrap();
    let out_done = synthetic_out(done.path(), "done");
    let r = status(&out_done).expect(0);
    assert_eq!(summary(&r), ("finished".into(), None, 0));

    // A live holder of the lock (this test process, as a session holds it): running, with the
    // holder's PID, whatever the steps say.
    let lock = out.join(".tc-session/lock");
    std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    let before_locked = tree(&out);
    let f = std::fs::File::open(&lock).unwrap();
    rustix::fs::flock(
        f.as_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .unwrap();
    let r = status(&out).expect(3);
    assert_eq!(summary(&r), ("running".into(), Some(std::process::id()), 1));
    // The lock is still this process's: status took nothing.
    let other = std::fs::File::open(&lock).unwrap();
    assert!(
        rustix::fs::flock(
            other.as_fd(),
            rustix::fs::FlockOperation::NonBlockingLockShared
        )
        .is_err(),
        "the lock is no longer held"
    );
    drop(f);
    let r = status(&out).expect(1);
    assert_eq!(summary(&r).0, "failed");
    assert_eq!(tree(&out), before_locked, "status changed the out dir");

    // No session there: a usage error, and nothing created.
    let empty = tempfile::tempdir().unwrap();
    let mut c = tc();
    c.args(["session", "status", "--out"]).arg(empty.path());
    let r = run(c).expect(2);
    assert!(r.stderr.contains("no session here"), "{}", r.dump());
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);

    // A session that has only taken its lock (no journal or report yet) is running.
    let lock = empty.path().join(".tc-session/lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    let f = std::fs::File::open(&lock).unwrap();
    rustix::fs::flock(
        f.as_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .unwrap();
    let r = status(empty.path()).expect(3);
    assert_eq!(summary(&r), ("running".into(), Some(std::process::id()), 0));
    drop(f);
    status(empty.path()).expect(2);
}
