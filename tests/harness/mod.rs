//! A small harness over the real `tc` binary: scrubbed environment, every stdout line checked
//! against the event schema, every output checked for the secrets the tests know, and panics that
//! show the command, status, stdout and stderr.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[path = "../../src/event.rs"]
pub mod event;

pub use event::Event;

pub const TC: &str = env!("CARGO_BIN_EXE_tc");

/// Secrets the tests have handed to `tc`; no output may contain any of them.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn register_secret(s: &str) {
    SECRETS.lock().unwrap().push(s.to_string());
}

pub fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS.lock().unwrap().iter() {
        assert!(
            !text.contains(s.as_str()),
            "a secret appeared in {what}:\n{text}"
        );
    }
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn have(prog: &str) -> bool {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"]
        .iter()
        .any(|d| Path::new(d).join(prog).exists())
}

/// Returns why the lab cannot run here, if it cannot.
pub fn lab_unavailable() -> Option<String> {
    if !is_root() {
        return Some("not root: the lab's sshd chroots need root".into());
    }
    for p in ["sshd", "tcpdump", "capinfos"] {
        if !have(p) {
            return Some(format!(
                "{p} is not installed (apt-get install openssh-server tcpdump tshark)"
            ));
        }
    }
    None
}

/// Tests that need the lab are `#[ignore]`d with the reason, so that where they cannot run they
/// are reported as not run; asked to run (`--include-ignored`) where they cannot, they fail and
/// say why.
pub fn require_lab() {
    if let Some(why) = lab_unavailable() {
        panic!("this test needs the lab and cannot run here: {why}");
    }
}

/// A program the test runs; missing, the test fails and names the package.
pub fn require(prog: &str) {
    assert!(
        have(prog),
        "this test needs {prog}, which is not installed (.ci/run installs what the tests need)"
    );
}

pub fn tc() -> Command {
    let mut c = Command::new(TC);
    c.env_clear();
    c.env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    c.env("HOME", std::env::temp_dir());
    c.stdin(Stdio::null());
    c
}

/// `ts` as the README says: RFC 3339, UTC (`Z`), microseconds.
fn is_rfc3339_micros(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 27
        && b[10] == b'T'
        && b[19] == b'.'
        && b[26] == b'Z'
        && s.parse::<jiff::Timestamp>().is_ok()
}

/// tests/schema.txt: record type -> (field, JSON type, may be null), in the file's order.
type Schema = HashMap<String, Vec<(String, String, bool)>>;

pub fn schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let text = include_str!("../schema.txt");
        let mut map = Schema::new();
        for l in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let mut words = l.split_whitespace();
            let ty = words.next().expect("a type").to_string();
            let fields = words
                .map(|w| {
                    let (name, t) = w.split_once(':').unwrap_or_else(|| panic!("schema: {w}"));
                    let (t, null) = t.strip_suffix('?').map_or((t, false), |t| (t, true));
                    assert!(
                        ["string", "number", "bool", "array", "object"].contains(&t),
                        "schema: {w}"
                    );
                    (name.to_string(), t.to_string(), null)
                })
                .collect();
            assert!(
                map.insert(ty.clone(), fields).is_none(),
                "schema: {ty} twice"
            );
        }
        map
    })
}

/// One record against tests/schema.txt (the object without its `ts`).
fn check_schema(v: &serde_json::Value, line: &str) {
    let m = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"));
    let ty = m["type"]
        .as_str()
        .unwrap_or_else(|| panic!("no type: {line}"));
    let fields = schema()
        .get(ty)
        .unwrap_or_else(|| panic!("type {ty:?} is not in tests/schema.txt: {line}"));
    let mut keys: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "type")
        .collect();
    let mut want: Vec<&str> = fields.iter().map(|(n, _, _)| n.as_str()).collect();
    keys.sort();
    want.sort();
    assert_eq!(
        keys, want,
        "{ty}: fields differ from tests/schema.txt: {line}"
    );
    for (name, t, null) in fields {
        let x = &m[name];
        let ok = match x {
            serde_json::Value::Null => *null,
            serde_json::Value::String(_) => t == "string",
            serde_json::Value::Number(_) => t == "number",
            serde_json::Value::Bool(_) => t == "bool",
            serde_json::Value::Array(_) => t == "array",
            serde_json::Value::Object(_) => t == "object",
        };
        let q = if *null { "?" } else { "" };
        assert!(
            ok,
            "{ty}.{name} is {x}, tests/schema.txt says {t}{q}: {line}"
        );
    }
}

/// Parse and schema-check every stdout line: against tests/schema.txt, then into `Event` with
/// unknown fields refused (for the tests' own matching).
pub fn events(stdout: &str) -> Vec<Event> {
    stdout
        .lines()
        .map(|l| {
            let mut v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            let ts = v
                .as_object_mut()
                .and_then(|m| m.remove("ts"))
                .unwrap_or_else(|| panic!("no ts: {l}"));
            assert!(
                is_rfc3339_micros(ts.as_str().unwrap_or("")),
                "bad ts in {l}"
            );
            check_schema(&v, l);
            serde_json::from_value::<Event>(v)
                .unwrap_or_else(|e| panic!("schema violation ({e}): {l}"))
        })
        .collect()
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub events: Vec<Event>,
    pub desc: String,
}

impl Run {
    pub fn dump(&self) -> String {
        format!(
            "{}\nexit {}\n--- stdout\n{}--- stderr\n{}",
            self.desc, self.code, self.stdout, self.stderr
        )
    }

    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "{}", self.dump());
        self
    }

    pub fn of_type(&self, ty: &str) -> Vec<&Event> {
        self.events.iter().filter(|e| type_name(e) == ty).collect()
    }
}

pub fn type_name(e: &Event) -> String {
    serde_json::to_value(e).unwrap()["type"]
        .as_str()
        .unwrap()
        .to_string()
}

pub fn run(c: Command) -> Run {
    run_opts(c, true)
}

/// For commands whose stdout is not JSON lines (`--version`, `--help`, `generate`).
pub fn run_text(c: Command) -> Run {
    run_opts(c, false)
}

fn run_opts(mut c: Command, json: bool) -> Run {
    let desc = format!("{c:?}");
    let out: Output = c
        .output()
        .unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
    finish(desc, out, json)
}

fn finish(desc: String, out: Output, json: bool) -> Run {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_no_secret(&format!("stdout of {desc}"), &stdout);
    assert_no_secret(&format!("stderr of {desc}"), &stderr);
    assert!(!stderr.contains("panicked"), "{desc} panicked:\n{stderr}");
    let events = if json { events(&stdout) } else { Vec::new() };
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout,
        stderr,
        events,
        desc,
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique small number in this test process (file names, listen addresses, nonces).
pub fn unique() -> u32 {
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// A running `tc lab up`; SIGTERM on drop, and its output goes through the same checks.
pub struct Lab {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
    pub ready: serde_json::Value,
    pub user: String,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// Labs started in this process: their own count, so that other uses of `unique` (log files,
/// listen addresses) do not make two labs share a subnet (38 labs per cycle).
static LABS: AtomicU32 = AtomicU32::new(0);

impl Lab {
    pub fn up(devices: u32, extra: &[&str]) -> Lab {
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        // Third octets 10..200, distinct per lab in this process.
        let subnet = 10 + (n * 5) % 190;
        let user = format!("tct{}x{n}", std::process::id() % 100000);
        let dir = tempfile::tempdir().unwrap();
        let mut c = tc();
        c.args(["lab", "up", "--dir"]).arg(dir.path());
        c.args([
            "--devices",
            &devices.to_string(),
            "--subnet",
            &subnet.to_string(),
            "--user",
            &user,
        ]);
        c.args(extra);
        c.stdout(Stdio::piped()).stderr(stderr_log("lab"));
        let mut child = c.spawn().expect("spawn tc lab up");
        let rx = line_reader(&mut child);
        let first = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("tc lab up printed no lab.ready line")
            });
        let ev = events(&first);
        assert!(matches!(ev[0], Event::LabReady { .. }), "{first}");
        let ready: serde_json::Value = serde_json::from_str(&first).unwrap();
        let env = parse_env(&std::fs::read_to_string(dir.path().join("env")).unwrap());
        for k in [
            "TC_CPE_PASSWORD",
            "TC_LAB_MONITOR_PASSWORD",
            "TC_OVOC_PASSWORD",
            "TC_SNMP_AUTH_KEY",
            "TC_SNMP_PRIV_KEY",
        ] {
            register_secret(&env[k]);
        }
        Lab {
            child: Some(child),
            dir,
            env,
            ready,
            user,
            lines: rx,
            seen: vec![first],
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    pub fn inventory(&self) -> PathBuf {
        self.path().join("devices.csv")
    }

    /// Device addresses in inventory order.
    pub fn devices(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.inventory()).unwrap();
        text.lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().to_string())
            .collect()
    }

    /// The bytes the emulated device serves over SFTP.
    pub fn capture_of(&self, device: &str) -> Vec<u8> {
        let root = self.ready["sftp_root"].as_str().expect("lab has sftp");
        std::fs::read(
            Path::new(root)
                .join(device)
                .join("debug-capture/debug-capture-data.pcap"),
        )
        .unwrap()
    }

    /// The agent's `--dir` that the lab's sshd serves at the agent's address (`/captures` to
    /// the OVOC login): `lab.ready`'s `agent_dir`.
    pub fn agent_dir(&self) -> PathBuf {
        let dir = self.ready["agent_dir"].as_str().expect("lab has sftp");
        PathBuf::from(dir)
    }

    /// Where a local agent listens for this lab (the inventory's `ovoc` column).
    pub fn ovoc_agent_addr(&self) -> String {
        let text = std::fs::read_to_string(self.inventory()).unwrap();
        let line = text.lines().nth(1).unwrap();
        line.split(',').nth(4).unwrap().to_string()
    }

    pub fn pin_of(&self, device: &str) -> String {
        let text = std::fs::read_to_string(self.path().join("pins")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{device} ")).map(str::to_string))
            .unwrap_or_else(|| panic!("no pin for {device}"))
    }

    /// `tc` with this lab's env file applied.
    pub fn tc(&self) -> Command {
        let mut c = tc();
        c.envs(&self.env);
        c
    }

    /// Lines the lab printed since the last call (waits `settle` for stragglers).
    pub fn drain(&mut self, settle: Duration) -> Vec<String> {
        let deadline = Instant::now() + settle;
        let mut out = Vec::new();
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            out.push(l);
        }
        assert_no_secret("lab stdout", &out.join("\n"));
        events(&out.join("\n"));
        self.seen.extend(out.iter().cloned());
        out
    }

    pub fn stop(&mut self) -> Vec<String> {
        let Some(mut child) = self.child.take() else {
            return Vec::new();
        };
        signal(child.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                assert!(st.success(), "tc lab up exited {st:?}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tc lab up did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let rest = self.drain(Duration::from_millis(200));
        assert!(
            rest.iter().any(|l| l.contains("\"lab.stopped\"")),
            "no lab.stopped: {rest:?}"
        );
        rest
    }
}

/// The lines a child prints on stdout, read on a thread so the test never blocks on them.
pub fn line_reader(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

static STDERR_LOGS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Where a long-running child's stderr goes: a file that `check_stderr_logs` greps for secrets
/// (and that a failing test's output points at).
pub fn stderr_log(what: &str) -> Stdio {
    let path = std::env::temp_dir().join(format!(
        "tc-test-{what}-{}-{}.stderr",
        std::process::id(),
        unique()
    ));
    let f = std::fs::File::create(&path).expect("stderr log");
    STDERR_LOGS.lock().unwrap().push(path);
    Stdio::from(f)
}

/// `stderr_log`, and the file's path (for a test that reads what the child logged).
pub fn stderr_log_at(what: &str) -> (Stdio, PathBuf) {
    let path = std::env::temp_dir().join(format!(
        "tc-test-{what}-{}-{}.stderr",
        std::process::id(),
        unique()
    ));
    let f = std::fs::File::create(&path).expect("stderr log");
    STDERR_LOGS.lock().unwrap().push(path.clone());
    (Stdio::from(f), path)
}

/// No secret in anything the long-running children wrote on stderr so far.
pub fn check_stderr_logs() {
    for p in STDERR_LOGS.lock().unwrap().iter() {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        assert_no_secret(&format!("stderr {}", p.display()), &text);
    }
}

/// `sig` (a libc signal number) to a child the test spawned.
pub fn signal(pid: u32, sig: i32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a child's pid");
    let sig = rustix::process::Signal::from_named_raw(sig).expect("a named signal");
    rustix::process::kill_process(pid, sig).expect("signalling a child");
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            check_stderr_logs();
        }
        if let Some(mut c) = self.child.take() {
            signal(c.id(), 15);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').replace("'\\''", "'")))
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        });
    String::from_utf8(out.unwrap().stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Every file and directory under `dir`, with what would show a change: inode, size, mode,
/// modification time and, for files, the sha256 of the content.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, (u64, u64, u32, i64, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let sha = if m.is_file() {
                sha256_hex(&std::fs::read(&p).unwrap())
            } else {
                String::new()
            };
            if m.is_dir() {
                todo.push(p.clone());
            }
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            out.insert(
                rel,
                (
                    m.ino(),
                    m.len(),
                    m.mode(),
                    m.mtime_nsec() + m.mtime() * 1_000_000_000,
                    sha,
                ),
            );
        }
    }
    out
}

/// `capinfos -c` packet counts of the given files (panics if capinfos refuses one).
pub fn capinfos_packets(files: &[PathBuf]) -> Vec<u64> {
    let out = Command::new("capinfos")
        .arg("-c")
        .arg("-M")
        .args(files)
        .output()
        .expect("capinfos");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "capinfos failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("Number of packets:"))
        .map(|n| n.trim().parse().unwrap())
        .collect()
}

#[test]
fn the_ts_checker_takes_what_the_readme_says_and_nothing_near() {
    assert!(is_rfc3339_micros("2022-06-22T16:16:07.565758Z"));
    for bad in [
        "2022-06-22T16:16:07Z",
        "2022-06-22 16:16:07.565758Z",
        "2022-06-22T16:16:07.565758",
        "2022-06-22T16:16:07.565758+00:00",
        "2022-13-22T16:16:07.565758Z",
    ] {
        assert!(!is_rfc3339_micros(bad), "{bad}");
    }
}

/// The README's table of records says what tests/schema.txt says: the same types, each with the
/// same fields (a field's first back-quoted word in the table's last column, outside brackets).
#[test]
fn the_readme_lists_the_schema() {
    let readme = include_str!("../../README.md");
    let mut listed: HashMap<String, Vec<String>> = HashMap::new();
    for row in readme.lines().filter(|l| l.starts_with("| `")) {
        let cols: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        if cols.len() != 3 {
            continue;
        }
        let types: Vec<&str> = cols[0]
            .split(" / ")
            .map(|t| t.trim().trim_matches('`'))
            .collect();
        let groups: Vec<&str> = cols[2].split(" / ").collect();
        if types.len() != groups.len() || !types.iter().all(|t| schema().contains_key(*t)) {
            continue;
        }
        for (t, g) in types.iter().zip(groups) {
            listed.insert(t.to_string(), top_level_names(g));
        }
    }
    for (ty, fields) in schema() {
        let mut want: Vec<String> = fields.iter().map(|(n, _, _)| n.clone()).collect();
        let mut got = listed
            .get(ty)
            .unwrap_or_else(|| panic!("README's table of records has no row for {ty}"))
            .clone();
        got.sort();
        want.sort();
        assert_eq!(
            got, want,
            "README lists other fields for {ty} than tests/schema.txt"
        );
    }
}

/// `a`, `b` (`x`, `y`), `c` -> a, b, c: the first name of each comma-separated item at
/// bracket depth 0.
fn top_level_names(col: &str) -> Vec<String> {
    let mut names = Vec::new();
    let (mut depth, mut in_name, mut took) = (0, false, false);
    let mut name = String::new();
    for c in col.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => took = false,
            '`' if depth == 0 && !took => {
                if in_name {
                    names.push(std::mem::take(&mut name));
                    took = true;
                }
                in_name = !in_name;
            }
            _ if in_name => name.push(c),
            _ => {}
        }
    }
    names
}

/// The schema check fails a line whose field was renamed, retyped, added or dropped.
#[test]
fn the_schema_check_can_fail() {
    let good = r#"{"type":"cpe.error","device":"10.0.0.1","op":"start","error":"x"}"#;
    let check = |l: &str| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        std::panic::catch_unwind(|| check_schema(&v, l)).is_ok()
    };
    assert!(check(good));
    for bad in [
        r#"{"type":"cpe.error","device":"10.0.0.1","operation":"start","error":"x"}"#,
        r#"{"type":"cpe.error","device":"10.0.0.1","op":7,"error":"x"}"#,
        r#"{"type":"cpe.error","device":"10.0.0.1","op":"start","error":"x","more":1}"#,
        r#"{"type":"cpe.error","device":"10.0.0.1","error":"x"}"#,
        r#"{"type":"cpe.error","device":null,"op":"start","error":"x"}"#,
        r#"{"type":"cpe.oops","device":"10.0.0.1"}"#,
    ] {
        assert!(!check(bad), "{bad}");
    }
}

/// A pseudo-terminal for a child's stderr (tc draws progress only on a terminal): what the child
/// writes there is collected from the master side.
pub struct Pty {
    output: std::sync::Arc<Mutex<Vec<u8>>>,
    slave: Option<std::fs::File>,
}

impl Pty {
    pub fn open() -> Pty {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().expect("pts name"))
            .expect("open the pty's slave");
        let output = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&output);
        let mut master = std::fs::File::from(master);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            // EIO once no process holds the slave open any more.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            output,
            slave: Some(slave),
        }
    }

    /// The terminal, for one child's stderr (the parent keeps no copy of it open).
    pub fn stdio(&mut self) -> Stdio {
        Stdio::from(self.slave.take().expect("one child per pty"))
    }

    /// What reached the terminal so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }
}
