//! `tc alarm listen` fed by the real `logger` from util-linux.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

const LOST: &str = "New Alarm - Connection Alarm, Major, Source:Board#1, Description:Connection Lost, Device Name:MSBR-1, Tenant:Default, Region:Default, IP Address:192.168.200.218, Device Type:M500L-MSBR, Device Serial:123456, Device Description:Branch 1";

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn logger(port: u16, format: &str, prio: &str, msg: &str) {
    let st = Command::new("logger")
        .args([
            format,
            "--udp",
            "-n",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-t",
            "ovoc",
            "-p",
            prio,
            msg,
        ])
        .status()
        .expect("logger");
    assert!(st.success());
}

/// Start a listener, wait until its socket is bound, run `send`, collect its output.
fn listen(extra: &[&str], send: impl FnOnce(u16)) -> Run {
    let port = free_udp_port();
    let mut c = tc();
    c.args(["alarm", "listen", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let desc = format!("{c:?}");
    let child = c.spawn().unwrap();
    wait_bound(port);
    send(port);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let events = events(&stdout);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout,
        stderr,
        events,
        desc,
    }
}

/// The listener binds right after it starts; a datagram sent before would be lost.
fn wait_bound(port: u16) {
    for _ in 0..100 {
        if std::fs::read_to_string("/proc/net/udp")
            .unwrap()
            .contains(&format!(":{port:04X} "))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn rfc3164_from_logger_field_by_field() {
    require("logger");
    let r = listen(&["--count", "1", "--timeout", "20s"], |p| {
        logger(p, "--rfc3164", "local0.alert", LOST)
    })
    .expect(0);
    let alarms = r.of_type("alarm");
    assert_eq!(alarms.len(), 1, "{}", r.dump());
    let Event::Alarm {
        device,
        alarm,
        description,
        severity,
        syslog_severity,
        device_name,
        source,
        tenant,
        region,
        device_type,
        device_serial,
        device_description,
        connection_lost,
        wording,
        framing,
        sender,
        raw,
        extra,
        ..
    } = alarms[0]
    else {
        unreachable!()
    };
    assert_eq!(device.as_deref(), Some("192.168.200.218"));
    assert_eq!(alarm, "Connection Alarm");
    assert_eq!(description.as_deref(), Some("Connection Lost"));
    assert_eq!(severity.as_deref(), Some("Major"));
    assert_eq!(syslog_severity.as_deref(), Some("alert"));
    assert_eq!(device_name.as_deref(), Some("MSBR-1"));
    assert_eq!(source.as_deref(), Some("Board#1"));
    assert_eq!(tenant.as_deref(), Some("Default"));
    assert_eq!(region.as_deref(), Some("Default"));
    assert_eq!(device_type.as_deref(), Some("M500L-MSBR"));
    assert_eq!(device_serial.as_deref(), Some("123456"));
    assert_eq!(device_description.as_deref(), Some("Branch 1"));
    assert!(extra.is_empty());
    assert!(*connection_lost);
    assert_eq!(wording, "new-alarm");
    assert_eq!(framing, "rfc3164");
    assert!(sender.starts_with("127.0.0.1:"));
    assert!(
        raw.starts_with("<129>") && raw.ends_with("Branch 1"),
        "{raw}"
    );
    let Event::AlarmSummary {
        received,
        matched,
        reason,
        ..
    } = r.events.last().unwrap()
    else {
        panic!()
    };
    assert_eq!((*received, *matched, reason.as_str()), (1, 1, "count"));
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn rfc5424_template_wording_and_filters() {
    require("logger");
    let args = [
        "--device",
        "10.1.1.1",
        "--description",
        "connection lost",
        "--count",
        "1",
        "--timeout",
        "20s",
    ];
    let r = listen(&args, |p| {
        // Filtered out (other device, then a clear), then unparsed, then the match.
        logger(p, "--rfc5424", "user.crit", "New Alarm - Connection Alarm, Major, Description:Connection Lost, IP Address:10.1.1.2");
        logger(p, "--rfc5424", "user.notice", "New Alarm - Connection Alarm, Clear, Description:Connection established, IP Address:10.1.1.1");
        logger(p, "--rfc5424", "user.info", "not an alarm at all");
        logger(
            p,
            "--rfc5424",
            "user.crit",
            "Title: Alarm Connection Alarm, received from MSBR-2, 10.1.1.1 with Severity Major. Description: Board#1, Connection Lost",
        );
    })
    .expect(0);
    let alarms = r.of_type("alarm");
    assert_eq!(alarms.len(), 1, "{}", r.dump());
    let Event::Alarm {
        device,
        device_name,
        wording,
        framing,
        syslog_severity,
        source,
        ..
    } = alarms[0]
    else {
        unreachable!()
    };
    assert_eq!(device.as_deref(), Some("10.1.1.1"));
    assert_eq!(device_name.as_deref(), Some("MSBR-2"));
    assert_eq!(source.as_deref(), Some("Board#1"));
    assert_eq!(
        (wording.as_str(), framing.as_str()),
        ("template", "rfc5424")
    );
    assert_eq!(syslog_severity.as_deref(), Some("crit"));
    assert_eq!(r.of_type("syslog.unparsed").len(), 1, "{}", r.dump());
    let Event::AlarmSummary {
        received,
        matched,
        filtered,
        unparsed,
        ..
    } = r.events.last().unwrap()
    else {
        panic!()
    };
    assert_eq!((*received, *matched, *filtered, *unparsed), (4, 1, 2, 1));
}

#[test]
fn timeout_without_a_match_exits_1() {
    let r = listen(&["--count", "1", "--timeout", "300ms"], |_| {}).expect(1);
    let Event::AlarmSummary {
        reason, matched, ..
    } = r.events.last().unwrap()
    else {
        panic!("{}", r.dump())
    };
    assert_eq!((reason.as_str(), *matched), ("timeout", 0));
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn senders_outside_from_are_refused() {
    require("logger");
    let r = listen(&["--from", "10.0.0.0/8", "--timeout", "1s"], |p| {
        logger(p, "--rfc3164", "user.info", LOST)
    })
    .expect(1);
    let Event::AlarmSummary {
        refused, received, ..
    } = r.events.last().unwrap()
    else {
        panic!()
    };
    assert_eq!((*refused, *received), (1, 0), "{}", r.dump());
}

#[test]
fn garbage_and_oversized_datagrams_are_survived() {
    let r = listen(&["--count", "1", "--timeout", "20s"], |p| {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = format!("127.0.0.1:{p}");
        s.send_to(&[0xff; 65000], &to).unwrap();
        s.send_to(b"\0\0\0", &to).unwrap();
        s.send_to(b"<13>1 broken [sd", &to).unwrap();
        s.send_to(format!("{LOST}\0\0\0\0").as_bytes(), &to)
            .unwrap();
    })
    .expect(0);
    assert_eq!(r.of_type("alarm").len(), 1, "{}", r.dump());
    assert_eq!(r.of_type("syslog.unparsed").len(), 3, "{}", r.dump());
}

#[test]
fn sigterm_prints_the_summary_and_exits_0() {
    let port = free_udp_port();
    let mut c = tc();
    c.args(["alarm", "listen", "--listen", &format!("127.0.0.1:{port}")]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    wait_bound(port);
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(LOST.as_bytes(), ("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    signal(child.id(), 15);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let ev = events(&String::from_utf8_lossy(&out.stdout));
    let Some(Event::AlarmSummary {
        received: 1,
        matched: 1,
        reason,
        ..
    }) = ev.last()
    else {
        panic!("{ev:?}")
    };
    assert_eq!(reason, "signal");
}

/// Lines of a burst are written together, but a lone alarm must reach the reader while the
/// listener waits for the next datagram, not when it exits.
#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, logger): as root, cargo test -- --include-ignored"]
fn a_line_does_not_wait_for_the_next_datagram() {
    require("logger");
    use std::io::BufRead;
    let port = free_udp_port();
    let mut c = tc();
    c.args(["alarm", "listen", "--listen", &format!("127.0.0.1:{port}")]);
    c.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    wait_bound(port);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    logger(port, "--rfc3164", "user.crit", LOST);
    let line = rx.recv_timeout(Duration::from_secs(10));
    let still_running = child.try_wait().unwrap().is_none();
    signal(child.id(), libc::SIGTERM);
    let _ = child.wait();
    let line = line.expect("no alarm line within 10 s while the listener ran");
    assert!(
        still_running,
        "the listener exited before its line was read"
    );
    let evs = events(&line);
    assert!(matches!(evs.as_slice(), [Event::Alarm { .. }]), "{line}");
}
