//! tcpdump as the agent runs it: spawned from an argv (never a shell), in its own process
//! group (a Ctrl-C to the agent's terminal must not reach it), stderr to a log file in DIR so
//! that its "listening" line and end-of-capture statistics survive an agent restart. Parsing of
//! that log, ring-file discovery and the no-clobber rename are here too.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::core::Stats;

#[derive(Debug, Clone)]
pub struct Tcpdump {
    pub program: PathBuf,
    pub interface: String,
    pub dir: PathBuf,
    pub ring_files: u32,
    pub ring_size_mb: u32,
    /// `-B`: the kernel capture buffer, KiB.
    pub buffer_kib: u32,
    /// `-Z` user: tcpdump drops to it after opening the interface, so DIR must be writable by it.
    pub user: String,
}

impl Tcpdump {
    pub fn argv(&self, base: &str, device: &str) -> Vec<String> {
        vec![
            "-i".into(),
            self.interface.clone(),
            "-n".into(),
            // Packet-buffered: what was captured is on disk even if tcpdump is killed.
            "-U".into(),
            // Not --immediate-mode: that makes libpcap use TPACKET_V2, a ring of one-packet
            // frames sized for the largest packet the interface may deliver (64 KiB on lo, or
            // with offloads), so a 512 KiB buffer holds 8 packets and a tcpdump not scheduled
            // in time drops the rest of a burst. TPACKET_V3 blocks hold hundreds; the price is
            // that a block reaches tcpdump up to 1 s late, which the agent waits out before
            // SIGTERM (--stop-flush).
            "-w".into(),
            self.dir.join(base).display().to_string(),
            "-W".into(),
            self.ring_files.to_string(),
            "-C".into(),
            self.ring_size_mb.to_string(),
            // libpcap's default is 2 MiB of kernel memory per capture, zeroed at start: 2 GB
            // and seconds of CPU for a thousand devices' management traffic.
            "-B".into(),
            self.buffer_kib.to_string(),
            "-Z".into(),
            self.user.clone(),
            "host".into(),
            device.into(),
        ]
    }

    pub fn spawn(&self, base: &str, device: &str, log: &Path) -> Result<Child, String> {
        let err = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        Command::new(&self.program)
            .args(self.argv(base, device))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .process_group(0)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.program.display()))
    }
}

pub fn log_path(dir: &Path, base: &str) -> PathBuf {
    dir.join(".tc").join(format!("{base}.log"))
}

/// tcpdump prints "listening on <if>, link-type ..." once the capture is set up.
pub fn listening(log: &str) -> bool {
    log.lines().any(|l| l.contains("listening on "))
}

/// What tcpdump said went wrong: its lines other than the banner and statistics.
pub fn error_text(log: &str) -> String {
    error_lines(log).unwrap_or_else(|| "tcpdump exited without a message".into())
}

/// tcpdump's lines other than the banner and statistics, if any (a running tcpdump prints
/// nothing else unless something went wrong).
pub fn error_lines(log: &str) -> Option<String> {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.contains("listening on ")
                && !l.contains("packets ")
                && !l.starts_with("Warning:")
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// Bytes in DIR's capture files (running and finished: `tmp_device_*`, `OVOC_*`).
pub fn dir_usage(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("tmp_device_") || n.starts_with("OVOC_")
        })
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

pub fn parse_stats(log: &str) -> Stats {
    let mut s = Stats::default();
    for l in log.lines() {
        let mut w = l.split_whitespace();
        let (Some(n), Some("packets")) = (w.next().and_then(|n| n.parse::<u64>().ok()), w.next())
        else {
            continue;
        };
        let rest: Vec<&str> = w.collect();
        match rest.as_slice() {
            ["captured", ..] => s.captured = Some(n),
            ["received", "by", "filter", ..] => s.received = Some(n),
            ["dropped", "by", "kernel", ..] => s.dropped_kernel = Some(n),
            _ => {}
        }
    }
    s
}

/// The ring files of a capture: `<base><digits>`, sorted by their number.
pub fn ring_files(dir: &Path, base: &str) -> Vec<(u32, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(u32, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let digits = name.strip_prefix(base)?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok().map(|n| (n, e.path())))
                .flatten()
        })
        .collect();
    v.sort();
    v
}

/// Rename `<base><n>` to `OVOC_<target>-<n>.pcap` inside DIR, never replacing an existing file
/// (a taken name gets `.1`, `.2`, ... before `.pcap`). Returns the new names.
pub fn rename(dir: &Path, base: &str, target: &str) -> Result<Vec<String>, String> {
    let files = ring_files(dir, base);
    if files.is_empty() {
        return Err(format!("no capture files {base}* in {}", dir.display()));
    }
    let mut out = Vec::new();
    for (n, from) in files {
        let mut k = 0;
        loop {
            let name = if k == 0 {
                crate::proto::ovoc_name(target, n)
            } else {
                format!("OVOC_{target}-{n}.{k}.pcap")
            };
            let to = dir.join(&name);
            // link + unlink: unlike rename, link refuses to replace an existing file.
            match std::fs::hard_link(&from, &to) {
                Ok(()) => {
                    std::fs::remove_file(&from)
                        .map_err(|e| format!("removing {}: {e}", from.display()))?;
                    out.push(name);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && k < 100 => k += 1,
                Err(e) => return Err(format!("renaming {} to {name}: {e}", from.display())),
            }
        }
    }
    Ok(out)
}

/// Complete packets in a capture's ring files (a record cut short by a full disk is not one).
pub fn packets_on_disk(dir: &Path, base: &str) -> u64 {
    ring_files(dir, base)
        .iter()
        .map(|(_, p)| count_records(p).unwrap_or(0))
        .sum()
}

/// Records of a pcap file whose whole data is there; None when it is not a pcap file.
fn count_records(path: &Path) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut head = [0u8; 24];
    f.read_exact(&mut head).ok()?;
    let magic = u32::from_le_bytes(head[..4].try_into().ok()?);
    let little = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => return None,
    };
    let (mut pos, mut n) = (24u64, 0u64);
    let mut rec = [0u8; 16];
    while pos + 16 <= len {
        f.read_exact(&mut rec).ok()?;
        let b: [u8; 4] = rec[8..12].try_into().ok()?;
        let incl = u64::from(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        });
        if pos + 16 + incl > len {
            break;
        }
        pos += 16 + incl;
        n += 1;
        f.seek(SeekFrom::Start(pos)).ok()?;
    }
    Some(n)
}

/// Is `pid` still the tcpdump writing `base`? Checked through /proc (command line), not just
/// the pid, which the kernel may have given to another process since.
pub fn proc_alive(pid: u32, base: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_tcpdump = args.first().is_some_and(|a| a.ends_with(b"tcpdump"));
    let writes_base = args.iter().any(|a| a.ends_with(base.as_bytes()));
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    is_tcpdump && writes_base && !zombie
}

/// Find the tcpdump program: `TC_TCPDUMP`, else the usual places.
pub fn find_program(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("tcpdump not found at {}", p.display()))
        };
    }
    [
        "/usr/sbin/tcpdump",
        "/usr/bin/tcpdump",
        "/sbin/tcpdump",
        "/usr/local/sbin/tcpdump",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .ok_or_else(|| {
        "tcpdump is not installed (apt-get install tcpdump / yum install tcpdump)".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_the_originals_without_a_shell() {
        let t = Tcpdump {
            program: "/usr/sbin/tcpdump".into(),
            interface: "eth0".into(),
            dir: "/var/lib/tc".into(),
            ring_files: 3,
            ring_size_mb: 10,
            buffer_kib: 512,
            user: "tcpdump".into(),
        };
        assert_eq!(
            t.argv("tmp_device_10.0.0.1_X.pcap", "10.0.0.1").join(" "),
            "-i eth0 -n -U -w /var/lib/tc/tmp_device_10.0.0.1_X.pcap -W 3 -C 10 -B 512 -Z tcpdump host 10.0.0.1"
        );
    }

    #[test]
    fn logs() {
        let ok = "tcpdump: listening on lo, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n\
                  12 packets captured\n14 packets received by filter\n2 packets dropped by kernel\n";
        assert!(listening(ok));
        assert_eq!(
            parse_stats(ok),
            Stats {
                captured: Some(12),
                received: Some(14),
                dropped_kernel: Some(2)
            }
        );
        let bad = "tcpdump: eth9: No such device exists\n(SIOCGIFHWADDR: No such device)\n";
        assert!(!listening(bad));
        assert_eq!(
            error_text(bad),
            "tcpdump: eth9: No such device exists; (SIOCGIFHWADDR: No such device)"
        );
        assert_eq!(parse_stats(bad), Stats::default());
        assert_eq!(error_text(""), "tcpdump exited without a message");
    }

    #[test]
    fn ring_files_and_no_clobber_rename() {
        let d = tempfile::tempdir().unwrap();
        let base = "tmp_device_10.0.0.1_X.pcap";
        for n in ["0", "1", "2"] {
            std::fs::write(d.path().join(format!("{base}{n}")), n).unwrap();
        }
        std::fs::write(d.path().join(format!("{base}.log")), "not a ring file").unwrap();
        std::fs::write(d.path().join("OVOC_t-1.pcap"), "older").unwrap();
        assert_eq!(ring_files(d.path(), base).len(), 3);
        let names = rename(d.path(), base, "t").unwrap();
        assert_eq!(names, ["OVOC_t-0.pcap", "OVOC_t-1.1.pcap", "OVOC_t-2.pcap"]);
        assert_eq!(
            std::fs::read_to_string(d.path().join("OVOC_t-1.pcap")).unwrap(),
            "older"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("OVOC_t-1.1.pcap")).unwrap(),
            "1"
        );
        assert!(ring_files(d.path(), base).is_empty());
        assert!(rename(d.path(), base, "t")
            .unwrap_err()
            .contains("no capture files"));
    }

    #[test]
    fn packets_on_disk_counts_only_whole_records() {
        let d = tempfile::tempdir().unwrap();
        let base = "tmp_device_x.pcap";
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        f.extend([0u8; 8]);
        f.extend(262_144u32.to_le_bytes());
        f.extend(1u32.to_le_bytes());
        for len in [60u32, 1000] {
            f.extend([0u8; 8]);
            f.extend(len.to_le_bytes());
            f.extend(len.to_le_bytes());
            f.extend(vec![0xab; len as usize]);
        }
        std::fs::write(d.path().join(format!("{base}0")), &f).unwrap();
        // The second file is cut in the middle of its second record.
        f.extend([0u8; 8]);
        f.extend(500u32.to_le_bytes());
        f.extend(500u32.to_le_bytes());
        f.extend(vec![0xab; 100]);
        std::fs::write(d.path().join(format!("{base}1")), &f).unwrap();
        std::fs::write(d.path().join(format!("{base}2")), b"garbage").unwrap();
        assert_eq!(packets_on_disk(d.path(), base), 4);
    }

    #[test]
    fn proc_checks_the_command_line_not_just_the_pid() {
        assert!(!proc_alive(std::process::id(), "tmp_device_x"));
        assert!(!proc_alive(u32::MAX - 1, "tmp_device_x"));
    }
}
