//! The WAN lab: a real router (network namespaces, veth, nftables) between the OVOC side and
//! the devices; faults injected there and the verdicts `tc` gives for them.

use crate::harness::*;
use std::path::Path;
use std::process::Command;

/// One round's analysis lines (OUT/<device>/1/analysis.jsonl), by type.
fn analysis(out: &Path, device: &str) -> Vec<serde_json::Value> {
    let path = out.join(device).join("1").join("analysis.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of<'a>(lines: &'a [serde_json::Value], ty: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|l| l["type"] == ty).collect()
}

fn nanos(t: &str) -> i128 {
    t.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{t:?}: {e}"))
        .as_nanosecond()
}

/// What a demo's run says of each device: its verdict is `want`; with a drop, the earliest
/// loss window starts within 2 s of the fault's injection (OVOC clock: the host's); the
/// clock offset; returned for the caller's checks.
pub fn assert_verdicts(r: &Run, out: &Path, want: &str) -> Vec<f64> {
    let faults: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "lab.fault")
        .collect();
    let devices: Vec<String> = r
        .of_type("session.task")
        .iter()
        .filter_map(|e| match e {
            Event::SessionTask { device, task, .. } if task == "analyze" => Some(device.clone()),
            _ => None,
        })
        .collect();
    assert!(!devices.is_empty(), "no analysis\n{}", r.dump());
    let mut offsets = Vec::new();
    for d in &devices {
        let lines = analysis(out, d);
        let verdict = &of(&lines, "analyze.verdict")[0];
        assert_eq!(verdict["verdict"], want, "{d}: {verdict}\n{}", r.dump());
        let clock = &of(&lines, "analyze.clock")[0];
        offsets.push(clock["offset_ms"].as_f64().unwrap());
        if !want.starts_with("wan_loss") {
            continue;
        }
        let injected = faults
            .iter()
            .find(|f| f["device"] == d.as_str())
            .unwrap_or_else(|| panic!("{d}: no lab.fault line\n{}", r.dump()));
        let at = nanos(injected["ts"].as_str().unwrap());
        let start = of(&lines, "analyze.loss")
            .iter()
            .map(|l| nanos(l["start_ovoc"].as_str().unwrap()))
            .min()
            .unwrap_or_else(|| panic!("{d}: no loss window: {lines:?}"));
        let late = (start - at) as f64 / 1e9;
        assert!(
            (-0.5..=2.0).contains(&late),
            "{d}: loss began {late:.3} s after the injection"
        );
    }
    offsets
}

fn demo(fault: &str, extra: &[&str]) -> (Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tc();
    c.args(["lab", "demo", "--devices", "2", "--fault", fault, "--dir"])
        .arg(dir.path());
    c.args(extra);
    let t = std::time::Instant::now();
    let r = run(c).expect(0);
    println!(
        "tc lab demo --fault {fault} {extra:?} took {:?}",
        t.elapsed()
    );
    (r, dir)
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, nft): as root, cargo test -- --include-ignored"]
fn the_demo_names_each_injected_fault() {
    require_lab();
    require("nft");
    // One at a time: each is a whole demo. `ovoc-to-cpe` (the default) is the README's demo,
    // checked in demo.rs.
    let (r, dir) = demo("cpe-to-ovoc", &["--nat", "--clock-offset", "3.5s"]);
    let offsets = assert_verdicts(&r, &dir.path().join("captures"), "wan_loss_cpe_to_ovoc");
    for o in offsets {
        assert!(
            (o - 3500.0).abs() < 1.0,
            "offset {o} ms, the devices' clocks are 3500 ms ahead"
        );
    }
    let (r, dir) = demo("cpe-silent", &[]);
    assert_verdicts(&r, &dir.path().join("captures"), "cpe_silent");
    // `--fault none` is analyze.rs's demo_captures_have_no_loss.
}

fn namespaces() -> String {
    String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

fn links() -> String {
    String::from_utf8(
        Command::new("ip")
            .args(["-br", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

fn user_exists(user: &str) -> bool {
    Command::new("getent")
        .args(["passwd", user])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
#[ignore = "needs root, ip and nft: as root, cargo test -- --include-ignored"]
fn cleanup_after_kill_9_leaves_nothing() {
    require_lab();
    require("nft");
    let mut lab = Lab::up(2, &["--wan", "--nat"]);
    let subnet: u32 = lab.devices()[0].split('.').nth(2).unwrap().parse().unwrap();
    let (router, devices, host) = (
        format!("tclab-{subnet}-r"),
        format!("tclab-{subnet}-d"),
        format!("tclab{subnet}-o"),
    );
    assert!(namespaces().contains(&router) && namespaces().contains(&devices));
    assert!(links().contains(&host));
    let tables = Command::new("ip")
        .args(["netns", "exec", &router, "nft", "list", "tables"])
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout).to_string();
    assert!(
        tables.contains("inet tclab") && tables.contains("ip tclabnat"),
        "{tables}"
    );
    // A capture running at the kill: its tcpdump lives in the devices' namespace.
    let mut start = lab.tc();
    start
        .args(["cpe", "start", "--devices"])
        .arg(lab.inventory());
    run(start).expect(0);
    // A fault, so a set has an element when the lab dies.
    let mut f = lab.tc();
    f.args(["lab", "wan", "--dir"])
        .arg(lab.path())
        .arg(&lab.devices()[0])
        .args(["--drop", "both"]);
    let r = run(f).expect(0);
    assert_eq!(r.of_type("lab.fault").len(), 1, "{}", r.dump());
    let inode = |ns: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{ns}")).unwrap().ino()
    };
    let held = [inode(&router), inode(&devices)];
    let dir = lab.path();
    let mut child = lab.child.take().unwrap();
    signal(child.id(), 9);
    let _ = child.wait();
    assert!(
        namespaces().contains(&router),
        "kill -9 leaves the WAN behind"
    );
    let mut c = tc();
    c.args(["lab", "cleanup", "--user", &lab.user, "--dir"])
        .arg(&dir);
    let r = run_text(c).expect(0);
    assert!(r.stderr.contains("removed the lab's WAN"), "{}", r.dump());
    let ns = namespaces();
    assert!(!ns.contains(&router) && !ns.contains(&devices), "{ns}");
    assert!(!links().contains(&host), "{}", links());
    let root_tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&root_tables.stdout).contains("tclab"),
        "the lab makes no table outside its namespaces"
    );
    assert!(!user_exists(&lab.user), "user {} is left", lab.user);
    // The lab's processes went with it: no snmpd or sshd of its directory.
    assert!(!dir.exists(), "the lab directory is removed");
    let dir = dir.display().to_string();
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains(&dir))
        .map(String::from)
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Nothing lives on in a deleted namespace (ip netns list cannot show those).
    let mut inside = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(e.path().join("ns/net")) {
            if held.contains(&m.ino()) {
                inside.push(e.file_name());
            }
        }
    }
    assert!(
        inside.is_empty(),
        "processes still in the lab's namespaces: {inside:?}"
    );
}

/// What the device's side of the WAN saw during `f`: ICMP echo requests arriving at it and
/// echo replies leaving it, counted by a tcpdump on its interface.
fn seen_by_the_device(ns: &str, f: impl FnOnce()) -> (usize, usize) {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut dump = Command::new("ip")
        .args([
            "netns", "exec", ns, "tcpdump", "-i", "wan", "-n", "-U", "-w",
        ])
        .arg(file.path())
        .arg("icmp")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    f();
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(dump.id(), 15);
    let _ = dump.wait();
    let count = |filter: &str| {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(file.path())
            .args(["-Y", filter])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    (count("icmp.type == 8"), count("icmp.type == 0"))
}

#[test]
#[ignore = "needs root, ip and nft: as root, cargo test -- --include-ignored"]
fn a_dropped_direction_is_really_dropped_and_restored() {
    require_lab();
    require("nft");
    require("ping");
    let lab = Lab::up(1, &["--wan", "--nat"]);
    let d = lab.devices()[0].clone();
    let subnet = d.split('.').nth(2).unwrap().to_string();
    let ns = format!("tclab-{subnet}-d");
    let ping = |n: &str| {
        Command::new("ping")
            .args(["-c", n, "-i", "0.2", "-W", "1", &d])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        ping("2"),
        "the device answers across the router (through NAT)"
    );
    let wan = |args: &[&str]| {
        let mut c = lab.tc();
        c.args(["lab", "wan", "--dir"])
            .arg(lab.path())
            .arg(&d)
            .args(args);
        run(c)
    };
    // (fault, requests reach the device, the device answers)
    for (how, arrive, answer) in [
        ("to-device", false, false),
        ("from-device", true, true),
        ("both", false, false),
    ] {
        let r = wan(&["--drop", how]).expect(0);
        assert!(
            matches!(
                &r.of_type("lab.fault")[..],
                [Event::LabFault { seconds: None, .. }]
            ),
            "{}",
            r.dump()
        );
        let (requests, replies) =
            seen_by_the_device(&ns, || assert!(!ping("3"), "{how}: pings still answered"));
        assert_eq!(
            (requests > 0, replies > 0),
            (arrive, answer),
            "{how}: {requests} requests, {replies} replies at the device"
        );
        wan(&["--restore"]).expect(0);
        assert!(ping("2"), "{how}: not restored");
    }
    // --silent: the SNMP agent stops answering, the device still does. net-snmp's snmpget
    // with the lab's keys is the SNMP client.
    let snmp = || {
        let out = Command::new("snmpget")
            .args([
                "-v3",
                "-l",
                "authPriv",
                "-u",
                "CaptureScript",
                "-a",
                "SHA",
                "-A",
            ])
            .arg(&lab.env["TC_SNMP_AUTH_KEY"])
            .args(["-x", "AES", "-X"])
            .arg(&lab.env["TC_SNMP_PRIV_KEY"])
            .args(["-r", "0", "-t", "1", &d, "1.3.6.1.2.1.1.1.0"])
            .env("MIBS", "")
            .output()
            .expect("snmpget runs");
        out.status.success()
    };
    assert!(snmp(), "the device's snmpd answers through the router");
    wan(&["--silent"]).expect(0);
    assert!(!snmp(), "--silent: SNMP still answered");
    assert!(ping("2"), "--silent silences SNMP only");
    wan(&["--restore"]).expect(0);
    assert!(snmp(), "SNMP not restored");
    // --for: the kernel ends it; a second fault replaces the first's duration.
    wan(&["--drop", "to-device"]).expect(0);
    wan(&["--drop", "to-device", "--for", "1s"]).expect(0);
    assert!(!ping("1"));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert!(ping("2"), "the fault outlived its --for");
    // Bad input: named, nothing changed.
    let r = wan(&["--drop", "sideways"]).expect(2);
    assert!(r.stderr.contains("sideways"), "{}", r.dump());
    let mut c = lab.tc();
    c.args(["lab", "wan", "--dir"])
        .arg(lab.path())
        .args(["198.19.250.9", "--drop", "both"]);
    let r = run(c).expect(2);
    assert!(
        r.stderr.contains("not a device of this lab"),
        "{}",
        r.dump()
    );
    assert!(ping("2"));
}

#[test]
#[ignore = "needs root, ip and nft: as root, cargo test -- --include-ignored"]
fn a_lab_that_cannot_start_leaves_nothing() {
    require_lab();
    require("nft");
    // The emulated OVOC's REST address taken: the lab fails after its WAN, user, chroots and
    // sshds are up. Subnet 63 is outside the harness's (10 + 5n).
    let taken = std::net::TcpListener::bind("127.0.63.254:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let user = format!("tcf{}", std::process::id() % 100000);
    let mut c = tc();
    c.args([
        "lab",
        "up",
        "--wan",
        "--devices",
        "2",
        "--subnet",
        "63",
        "--rest-port",
        &port,
    ]);
    c.args(["--user", &user, "--dir"]).arg(dir.path());
    let r = run(c).expect(1);
    assert!(
        r.stderr.contains(&format!("127.0.63.254:{port}")),
        "{}",
        r.dump()
    );
    assert!(!user_exists(&user), "user {user} left behind");
    let ns = namespaces();
    assert!(!ns.contains("tclab-63-"), "{ns}");
    assert!(!links().contains("tclab63-o"));
    for f in ["chroot_root", "wan"] {
        assert!(
            !dir.path().join(f).exists(),
            "{f} left: its chroots or WAN were not removed"
        );
    }
}
