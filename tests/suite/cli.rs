//! Command-line behaviour that needs no lab: usage errors, secrets, exit codes.

use crate::harness::*;

#[test]
fn version_names_version_and_commit() {
    let r = run_text({
        let mut c = tc();
        c.arg("--version");
        c
    })
    .expect(0);
    assert!(r.stdout.starts_with("tc 0."), "{}", r.dump());
    assert!(r.stdout.contains('('), "{}", r.dump());
}

#[test]
fn hostile_device_names_are_usage_errors() {
    for bad in ["x$(id)", "a;b", "`id`", "a b", "../etc", "-rf"] {
        let mut c = tc();
        c.args(["cpe", "status", &format!("--device={bad}")])
            .env("TC_CPE_PASSWORD", "pw-not-used-1");
        let r = run(c).expect(2);
        assert!(r.stderr.contains("invalid device"), "{}", r.dump());
        assert!(r.stdout.is_empty(), "{}", r.dump());
    }
}

#[test]
fn no_password_without_a_terminal_is_a_usage_error() {
    let mut c = tc();
    c.args(["cpe", "status", "--device", "127.0.0.1"]);
    let r = run(c).expect(2);
    assert!(
        r.stderr.contains("TC_CPE_PASSWORD") && r.stderr.contains("--password-file"),
        "{}",
        r.dump()
    );
}

#[test]
fn password_is_not_a_flag() {
    let mut c = tc();
    c.args([
        "cpe",
        "status",
        "--device",
        "127.0.0.1",
        "--password",
        "hunter2",
    ]);
    let r = run(c).expect(2);
    assert!(r.stderr.contains("--password"), "{}", r.dump());
}

#[test]
fn bad_inventory_names_line_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("d.csv");
    std::fs::write(
        &inv,
        "device,type,interfaces,username,ovoc\n10.0.0.1,msbr,eth-wan,,\n10.0.0.2,msbr,../x,,\n",
    )
    .unwrap();
    let mut c = tc();
    c.args(["cpe", "start", "--devices"])
        .arg(&inv)
        .env("TC_CPE_PASSWORD", "pw-not-used-2");
    let r = run(c).expect(2);
    assert!(
        r.stderr.contains("line 3") && r.stderr.contains("\"../x\""),
        "{}",
        r.dump()
    );
}

#[test]
fn unreachable_device_is_exit_1_with_an_error_event_and_summary() {
    let mut c = tc();
    c.args([
        "cpe",
        "status",
        "--device",
        "127.0.0.1",
        "--rest-port",
        "1",
        "--retries",
        "1",
        "--insecure",
    ]);
    c.env("TC_CPE_PASSWORD", "pw-not-used-3");
    register_secret("pw-not-used-3");
    let r = run(c).expect(1);
    assert_eq!(r.of_type("cpe.error").len(), 1, "{}", r.dump());
    assert!(r.stderr.contains("--insecure"), "{}", r.dump());
    match r.events.last().unwrap() {
        Event::Summary {
            ok: 0, failed: 1, ..
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn password_file_is_read_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "file-secret-77\n").unwrap();
    register_secret("file-secret-77");
    let mut c = tc();
    c.args([
        "cpe",
        "status",
        "--device",
        "127.0.0.1",
        "--rest-port",
        "1",
        "--retries",
        "0",
        "--insecure",
        "-vv",
    ]);
    c.arg("--password-file").arg(&pw);
    run(c).expect(1);
}

/// The committed man pages and completions are exactly what the binary generates.
#[test]
fn man_pages_and_completions_are_up_to_date() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for what in ["man", "completions"] {
        let fresh = tempfile::tempdir().unwrap();
        let mut c = tc();
        c.args(["generate", what]).arg(fresh.path());
        run_text(c).expect(0);
        let list = |d: &std::path::Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        let committed = root.join(what);
        assert_eq!(
            list(fresh.path()),
            list(&committed),
            "{what}: run `tc generate {what} {what}`"
        );
        for f in list(fresh.path()) {
            let a = std::fs::read(fresh.path().join(&f)).unwrap();
            let b = std::fs::read(committed.join(&f)).unwrap();
            assert!(
                a == b,
                "{what}/{f} is stale: run `cargo run -- generate {what} {what}`"
            );
        }
    }
}
