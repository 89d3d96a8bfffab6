//! The resolve step of `tc lab up` and `tc lab demo`: the clap structs in, a checked config out.
//!
//! Every check of the flags and its exact error text lives here, so `up::run` and `demo::run`
//! receive a config they can trust and never validate flags themselves. Resolving creates
//! nothing (no directory, user, socket or process): what it must learn from the machine (root?
//! a program installed? the chroot path's owners and modes?) it asks a `Machine`, read-only, and
//! the tests answer with a fake.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{LabDemoArgs, LabUpArgs};

/// What resolving may learn from the machine, read-only.
pub trait Machine {
    fn is_root(&self) -> bool;
    /// Whether `prog` is installed (on PATH, /usr/sbin or /sbin).
    fn has(&self, prog: &str) -> bool;
    /// sshd's ChrootDirectory rule on the components of `p` that exist.
    fn check_chroot_path(&self, p: &Path) -> Result<(), String>;
    /// Where `tc lab demo` makes its directory when none is given.
    fn temp_dir(&self) -> PathBuf;
    /// Now, as a file-name stamp.
    fn stamp(&self) -> String;
}

/// The machine this runs on.
pub struct ThisMachine;

impl Machine for ThisMachine {
    fn is_root(&self) -> bool {
        crate::sys::is_root()
    }
    fn has(&self, prog: &str) -> bool {
        super::which(prog)
    }
    fn check_chroot_path(&self, p: &Path) -> Result<(), String> {
        super::sshd::check_chroot_path(p)
    }
    fn temp_dir(&self) -> PathBuf {
        std::env::temp_dir()
    }
    fn stamp(&self) -> String {
        crate::timefmt::Utc::now().file_stamp()
    }
}

/// `tc lab up`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct UpConfig {
    /// As given: `up` creates it and makes it absolute.
    pub dir: PathBuf,
    /// One per emulated device (`super::lab_addr`), MSBR and gateway/SBC alternating.
    pub addrs: Vec<Ipv4Addr>,
    /// The emulated OVOC and the address a local agent listens on sit beside the devices
    /// (which use .1-.250 of each /24).
    pub ovoc_ip: Ipv4Addr,
    pub agent_ip: Ipv4Addr,
    /// 0: a free port, the same on every address.
    pub rest_port: u16,
    /// The REST admin, and the system user of the SFTP logins.
    pub user: String,
    /// `None` with `--no-sftp`.
    pub sftp: Option<SftpConfig>,
    /// Each capture file padded to this size; 0 leaves it as captured.
    pub capture_bytes: u64,
    /// cliScript requests answered 409 Busy first, per device.
    pub busy_first: u32,
    pub latency: Duration,
    pub log_requests: bool,
    /// `--wan`: the router between this host and the devices.
    pub wan: Option<WanConfig>,
}

/// `tc lab up --wan`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct WanConfig {
    pub plan: super::wan::Plan,
    /// Device clock minus host clock, ns, and its drift.
    pub clock_offset_ns: i64,
    pub clock_drift_ppm: f64,
    pub poll: super::poll::PollConfig,
}

impl UpConfig {
    /// The address device `public` (as clients know it) has on its own side: another one
    /// behind the WAN's NAT, else the same.
    pub fn own(&self, public: Ipv4Addr) -> Ipv4Addr {
        self.wan
            .as_ref()
            .and_then(|w| w.plan.own_of(public))
            .unwrap_or(public)
    }
}

/// The SFTP side of `tc lab up`: a real sshd chrooting each device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpConfig {
    /// 0: a free port.
    pub port: u16,
    /// Root-owned parent of the per-lab chroot directory (`<root>/lab-<port>`).
    pub root: PathBuf,
    /// Cut each device's first SFTP connection after this many bytes.
    pub cut_after: Option<u64>,
    /// Record the traffic during each capture and serve that as the capture file.
    pub live_captures: bool,
    /// sshd's Ciphers: the only ones offered; `None` for sshd's defaults.
    pub ciphers: Option<String>,
}

/// `tc lab demo`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoConfig {
    /// As given, or a new name under the temporary directory; `demo` creates it.
    pub dir: PathBuf,
    pub devices: u32,
    pub fault: crate::cli::DemoFault,
    pub nat: bool,
    pub clock_offset_ns: i64,
    pub clock_drift_ppm: f64,
}

const UP_NEEDS_ROOT: &str = "tc lab up serves SFTP through a real sshd with per-device chroots, \
                             which needs root: run it with sudo, or add --no-sftp for the REST \
                             side only";
const LIVE_NEEDS_SFTP: &str = "--live-captures needs the SFTP side (not --no-sftp)";
const WAN_NEEDS_SFTP: &str = "--wan needs the SFTP side (not --no-sftp): its captures are live";
const WAN_NO_CUT: &str =
    "--cut-sftp-after is not available with --wan (drop traffic with `tc lab wan` instead)";

/// The devices' clock: within a day of the host's, drifting at most 1000 ppm.
fn check_clock(offset_ns: i64, drift_ppm: f64) -> Result<(), String> {
    if !(drift_ppm.is_finite() && drift_ppm.abs() <= 1000.0) {
        return Err(format!(
            "invalid --clock-drift {drift_ppm}: give -1000 to 1000 ppm"
        ));
    }
    if offset_ns.unsigned_abs() > 86_400 * 1_000_000_000 {
        return Err(format!(
            "invalid --clock-offset {} s: give at most a day either way",
            offset_ns as f64 / 1e9
        ));
    }
    Ok(())
}

/// `--wan`'s checks: root, `ip` and `nft`, a /24 of devices, a sane drift.
fn wan(a: &LabUpArgs, m: &dyn Machine) -> Result<Option<WanConfig>, String> {
    if !a.wan {
        return Ok(None);
    }
    if a.no_sftp {
        return Err(WAN_NEEDS_SFTP.into());
    }
    if a.cut_sftp_after.is_some() {
        return Err(WAN_NO_CUT.into());
    }
    for (prog, pkg) in [("ip", "iproute2"), ("nft", "nftables"), ("snmpd", "snmpd")] {
        if !m.has(prog) {
            return Err(format!(
                "--wan needs {prog} (Debian package {pkg}: apt-get install -y {pkg})"
            ));
        }
    }
    if a.devices > super::wan::MAX_DEVICES {
        return Err(format!(
            "--wan serves at most {} devices (each answers OVOC's SNMP polls with its own snmpd); \
             asked for {}",
            super::wan::MAX_DEVICES,
            a.devices
        ));
    }
    check_clock(a.clock_offset, a.clock_drift)?;
    if a.poll_interval < Duration::from_millis(100) {
        return Err(format!(
            "invalid --poll-interval {:?}: give at least 100ms",
            a.poll_interval
        ));
    }
    Ok(Some(WanConfig {
        plan: super::wan::Plan {
            subnet: a.subnet,
            nat: a.nat,
            devices: a.devices,
        },
        clock_offset_ns: a.clock_offset,
        clock_drift_ppm: a.clock_drift,
        poll: super::poll::PollConfig {
            interval: a.poll_interval,
            misses: a.poll_misses,
        },
    }))
}

pub fn up(a: &LabUpArgs, m: &dyn Machine) -> Result<UpConfig, String> {
    let wan = wan(a, m)?;
    let sftp = if a.no_sftp {
        if a.live_captures {
            return Err(LIVE_NEEDS_SFTP.into());
        }
        None
    } else {
        if !m.is_root() {
            return Err(UP_NEEDS_ROOT.into());
        }
        m.check_chroot_path(&a.sftp_root)?;
        super::sshd::check_config_path(&a.sftp_root)?;
        super::sshd::check_user_name(&a.user)?;
        Some(SftpConfig {
            port: a.ssh_port,
            root: a.sftp_root.clone(),
            cut_after: a.cut_sftp_after,
            live_captures: a.live_captures || wan.is_some(),
            ciphers: a
                .ssh_ciphers
                .as_deref()
                .map(super::sshd::check_ciphers)
                .transpose()?,
        })
    };
    let addrs = match &wan {
        Some(w) => (0..a.devices).map(|i| w.plan.public(i)).collect(),
        None => (0..a.devices)
            .map(|i| super::lab_addr(a.subnet, i))
            .collect(),
    };
    Ok(UpConfig {
        dir: a.dir.clone(),
        addrs,
        ovoc_ip: Ipv4Addr::new(127, 0, a.subnet, 254),
        agent_ip: Ipv4Addr::new(127, 0, a.subnet, 253),
        rest_port: a.rest_port,
        user: a.user.clone(),
        sftp,
        capture_bytes: a.capture_bytes,
        busy_first: a.busy_first,
        latency: Duration::from_millis(a.latency_ms),
        log_requests: a.log_requests,
        wan,
    })
}

pub fn demo(a: &LabDemoArgs, m: &dyn Machine) -> Result<DemoConfig, String> {
    requirements(m.is_root(), |p| m.has(p))?;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => m.temp_dir().join(format!("tc-demo-{}", m.stamp())),
    };
    if a.devices > super::wan::MAX_DEVICES {
        return Err(format!(
            "tc lab demo runs at most {} devices behind its router; asked for {}",
            super::wan::MAX_DEVICES,
            a.devices
        ));
    }
    check_clock(a.clock_offset, a.clock_drift)?;
    if !(m.has("ip") && m.has("nft")) {
        return Err(
            "tc lab demo puts a real router between OVOC and the devices, which needs \
                    ip and nft: apt-get install -y iproute2 nftables"
                .into(),
        );
    }
    Ok(DemoConfig {
        dir,
        devices: a.devices,
        fault: a.fault,
        nat: a.nat,
        clock_offset_ns: a.clock_offset,
        clock_drift_ppm: a.clock_drift,
    })
}

const INSTALL: &str = "apt-get install -y openssh-server tcpdump snmpd   (Debian/Ubuntu)\n  \
                       dnf install -y openssh-server tcpdump net-snmp    (RHEL/Rocky/Alma)";

/// What is missing for the demo, as one message with the command that fixes it.
pub fn requirements(root: bool, have: impl Fn(&str) -> bool) -> std::result::Result<(), String> {
    let mut missing = Vec::new();
    for (prog, pkg) in [
        ("sshd", "openssh-server"),
        ("tcpdump", "tcpdump"),
        ("snmpd", "snmpd"),
    ] {
        if !have(prog) {
            missing.push(format!("{prog} (package {pkg})"));
        }
    }
    match (root, missing.is_empty()) {
        (true, true) => Ok(()),
        (false, true) => Err(
            "tc lab demo needs root (sshd chroots per emulated device, tcpdump, port 161): \
                              run it with sudo"
                .into(),
        ),
        (r, false) => Err(format!(
            "tc lab demo needs {}{}; install with:\n  {INSTALL}",
            missing.join(", "),
            if r {
                ""
            } else {
                ", and root (run it with sudo)"
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_name_packages_and_the_command() {
        let all = |_: &str| true;
        assert!(requirements(true, all).is_ok());
        let e = requirements(false, all).unwrap_err();
        assert!(e.contains("root") && e.contains("sudo"), "{e}");
        let e = requirements(true, |p| p != "tcpdump").unwrap_err();
        assert!(
            e.contains("tcpdump (package tcpdump)") && e.contains("apt-get install -y"),
            "{e}"
        );
        let e = requirements(false, |p| p == "snmpd").unwrap_err();
        assert!(
            e.contains("sshd (package openssh-server)") && e.contains("root"),
            "{e}"
        );
    }
    use crate::cli::{Cli, Command, LabCommand};
    use clap::Parser;

    struct Fake {
        root: bool,
        missing: &'static [&'static str],
    }

    /// sshd's chroot rule answers as on a machine where only `/tmp` breaks it.
    impl Machine for Fake {
        fn is_root(&self) -> bool {
            self.root
        }
        fn has(&self, prog: &str) -> bool {
            !self.missing.contains(&prog)
        }
        fn check_chroot_path(&self, p: &Path) -> Result<(), String> {
            if !p.is_absolute() {
                Err(format!("chroot path {} is not absolute", p.display()))
            } else if p.starts_with("/tmp") {
                Err("chroot path component /tmp has mode 1777 (group or world writable)".into())
            } else {
                Ok(())
            }
        }
        fn temp_dir(&self) -> PathBuf {
            PathBuf::from("/tmp")
        }
        fn stamp(&self) -> String {
            "2026-11-27T07.42.13.899869".into()
        }
    }

    const ROOT: Fake = Fake {
        root: true,
        missing: &[],
    };
    const USER: Fake = Fake {
        root: false,
        missing: &[],
    };

    fn lab_args(line: &[&str]) -> LabCommand {
        let argv = ["tc", "lab"].iter().chain(line).copied();
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Lab(c),
                ..
            }) => c,
            Ok(other) => panic!("{line:?}: parsed as {:?}", other.command),
            Err(e) => panic!("{line:?}: {e}"),
        }
    }

    /// The config in one line, so a table row can state all of it.
    fn brief(c: &UpConfig) -> String {
        let sftp = match &c.sftp {
            None => "no sftp".to_string(),
            Some(s) => format!(
                "sftp port {} root {} cut {:?} live {}{}",
                s.port,
                s.root.display(),
                s.cut_after,
                s.live_captures,
                s.ciphers
                    .as_ref()
                    .map_or(String::new(), |c| format!(" ciphers {c}"))
            ),
        };
        format!(
            "dir {} devices {} first {} last {} ovoc {} agent {} rest {} user {} {sftp} \
             pad {} busy {} latency {:?} log {}",
            c.dir.display(),
            c.addrs.len(),
            c.addrs[0],
            c.addrs[c.addrs.len() - 1],
            c.ovoc_ip,
            c.agent_ip,
            c.rest_port,
            c.user,
            c.capture_bytes,
            c.busy_first,
            c.latency,
            c.log_requests
        )
    }

    #[test]
    fn up_command_lines() {
        let chroot_tmp = "chroot path component /tmp has mode 1777 (group or world writable)";
        let cases: &[(&[&str], &Fake, Result<&str, &str>)] = &[
            (
                &["up", "--dir", "/srv/lab"],
                &ROOT,
                Ok(
                    "dir /srv/lab devices 3 first 127.0.1.1 last 127.0.1.3 ovoc 127.0.1.254 \
                    agent 127.0.1.253 rest 0 user tclab sftp port 0 root /var/lib/tc-lab cut \
                    None live false pad 0 busy 0 latency 0ns log false",
                ),
            ),
            (
                &[
                    "up",
                    "--dir",
                    "lab",
                    "--devices",
                    "251",
                    "--subnet",
                    "7",
                    "--rest-port",
                    "443",
                    "--ssh-port",
                    "22",
                    "--user",
                    "lab_2",
                    "--sftp-root",
                    "/srv/chroots",
                    "--cut-sftp-after",
                    "65536",
                    "--live-captures",
                    "--capture-bytes",
                    "1000000",
                    "--busy-first",
                    "2",
                    "--latency-ms",
                    "150",
                    "--log-requests",
                ],
                &ROOT,
                Ok(
                    "dir lab devices 251 first 127.0.7.1 last 127.0.8.1 ovoc 127.0.7.254 \
                    agent 127.0.7.253 rest 443 user lab_2 sftp port 22 root /srv/chroots cut \
                    Some(65536) live true pad 1000000 busy 2 latency 150ms log true",
                ),
            ),
            // REST only: no root needed, and nothing of the SFTP side is checked.
            (
                &[
                    "up",
                    "--dir",
                    "/tmp/lab",
                    "--no-sftp",
                    "--user",
                    "Admin",
                    "--sftp-root",
                    "/tmp",
                ],
                &USER,
                Ok(
                    "dir /tmp/lab devices 3 first 127.0.1.1 last 127.0.1.3 ovoc 127.0.1.254 \
                    agent 127.0.1.253 rest 0 user Admin no sftp pad 0 busy 0 latency 0ns log \
                    false",
                ),
            ),
            (
                &[
                    "up",
                    "--dir",
                    "/tmp/lab",
                    "--devices",
                    "10000",
                    "--subnet",
                    "200",
                ],
                &ROOT,
                Ok(
                    "dir /tmp/lab devices 10000 first 127.0.200.1 last 127.0.239.250 ovoc \
                    127.0.200.254 agent 127.0.200.253 rest 0 user tclab sftp port 0 root \
                    /var/lib/tc-lab cut None live false pad 0 busy 0 latency 0ns log false",
                ),
            ),
            (
                &[
                    "up",
                    "--dir",
                    "/srv/lab",
                    "--ssh-ciphers",
                    "aes128-ctr,aes256-gcm@openssh.com,3des-cbc",
                ],
                &ROOT,
                Ok(
                    "dir /srv/lab devices 3 first 127.0.1.1 last 127.0.1.3 ovoc 127.0.1.254 \
                    agent 127.0.1.253 rest 0 user tclab sftp port 0 root /var/lib/tc-lab cut \
                    None live false ciphers aes128-ctr,aes256-gcm@openssh.com,3des-cbc pad 0 \
                    busy 0 latency 0ns log false",
                ),
            ),
            (
                &[
                    "up",
                    "--dir",
                    "/srv/lab",
                    "--ssh-ciphers",
                    "aes128-ctr,,aes256-ctr",
                ],
                &ROOT,
                Err(
                    "invalid --ssh-ciphers \"aes128-ctr,,aes256-ctr\": \"\" is not a cipher name \
                     (e.g. aes128-ctr,aes256-gcm@openssh.com)",
                ),
            ),
            (
                &[
                    "up",
                    "--dir",
                    "/srv/lab",
                    "--ssh-ciphers",
                    "aes128-ctr\nPermitRootLogin yes",
                ],
                &ROOT,
                Err(
                    "invalid --ssh-ciphers \"aes128-ctr\\nPermitRootLogin yes\": \
                     \"aes128-ctr\\nPermitRootLogin yes\" is not a cipher name \
                     (e.g. aes128-ctr,aes256-gcm@openssh.com)",
                ),
            ),
            (&["up", "--dir", "/srv/lab"], &USER, Err(UP_NEEDS_ROOT)),
            (
                &["up", "--dir", "/srv/lab", "--live-captures", "--no-sftp"],
                &USER,
                Err("--live-captures needs the SFTP side (not --no-sftp)"),
            ),
            (
                &["up", "--dir", "/srv/lab", "--sftp-root", "/tmp/chroots"],
                &ROOT,
                Err(chroot_tmp),
            ),
            (
                &["up", "--dir", "/srv/lab", "--sftp-root", "chroots"],
                &ROOT,
                Err("chroot path chroots is not absolute"),
            ),
            (
                &["up", "--dir", "/srv/lab", "--sftp-root", "/srv/100%"],
                &ROOT,
                Err(
                    "path \"/srv/100%\" contains a character sshd_config cannot hold (\", %, \\ \
                     or a control)",
                ),
            ),
            (
                &["up", "--dir", "/srv/lab", "--user", "Admin"],
                &ROOT,
                Err("invalid user name \"Admin\": use lowercase letters, digits, _ and -"),
            ),
            (
                &["up", "--dir", "/srv/lab", "--user=-rf"],
                &ROOT,
                Err("invalid user name \"-rf\": use lowercase letters, digits, _ and -"),
            ),
        ];
        for (line, machine, want) in cases {
            let LabCommand::Up(a) = lab_args(line) else {
                panic!("{line:?}: not lab up");
            };
            let got = up(&a, *machine);
            match (got, want) {
                (Ok(c), Ok(w)) => assert_eq!(brief(&c), *w, "{line:?}"),
                (Err(e), Err(w)) => assert_eq!(e, *w, "{line:?}"),
                (got, _) => panic!("{line:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn up_addresses_follow_lab_addr() {
        let LabCommand::Up(a) = lab_args(&["up", "--dir", "d", "--devices", "600", "--no-sftp"])
        else {
            panic!("not lab up");
        };
        let c = up(&a, &USER).unwrap();
        let want: Vec<Ipv4Addr> = (0..600).map(|i| super::super::lab_addr(1, i)).collect();
        assert_eq!(c.addrs, want);
    }

    #[test]
    fn demo_command_lines() {
        let install = "install with:\n  apt-get install -y openssh-server tcpdump snmpd   \
                       (Debian/Ubuntu)\n  dnf install -y openssh-server tcpdump net-snmp    \
                       (RHEL/Rocky/Alma)";
        let no_tcpdump = format!("tc lab demo needs tcpdump (package tcpdump); {install}");
        let nothing = format!(
            "tc lab demo needs sshd (package openssh-server), tcpdump (package tcpdump), snmpd \
             (package snmpd), and root (run it with sudo); {install}"
        );
        // (command line, machine, the directory and device count, or the error)
        type Row<'a> = (&'a [&'a str], Fake, Result<(&'a str, u32), &'a str>);
        let cases: Vec<Row> = vec![
            (
                &["demo"],
                ROOT,
                Ok(("/tmp/tc-demo-2026-11-27T07.42.13.899869", 3)),
            ),
            (
                &["demo", "--dir", "/srv/demo", "--devices", "100"],
                ROOT,
                Ok(("/srv/demo", 100)),
            ),
            (
                &["demo", "--fault", "none", "--clock-drift", "5000"],
                ROOT,
                Err("invalid --clock-drift 5000: give -1000 to 1000 ppm"),
            ),
            (
                &["demo", "--clock-offset", "2d"],
                ROOT,
                Err("invalid --clock-offset 172800 s: give at most a day either way"),
            ),
            (
                &["demo"],
                Fake {
                    root: true,
                    missing: &["nft"],
                },
                Err(
                    "tc lab demo puts a real router between OVOC and the devices, which needs \
                     ip and nft: apt-get install -y iproute2 nftables",
                ),
            ),
            (
                &["demo"],
                USER,
                Err(
                    "tc lab demo needs root (sshd chroots per emulated device, tcpdump, port \
                     161): run it with sudo",
                ),
            ),
            (
                &["demo"],
                Fake {
                    root: true,
                    missing: &["tcpdump"],
                },
                Err(&no_tcpdump),
            ),
            (
                &["demo"],
                Fake {
                    root: false,
                    missing: &["sshd", "tcpdump", "snmpd"],
                },
                Err(&nothing),
            ),
        ];
        for (line, machine, want) in cases {
            let LabCommand::Demo(a) = lab_args(line) else {
                panic!("{line:?}: not lab demo");
            };
            let got = demo(&a, &machine).map(|c| (c.dir.display().to_string(), c.devices));
            let want = want
                .map(|(d, n)| (d.to_string(), n))
                .map_err(str::to_string);
            assert_eq!(got, want, "{line:?}");
        }
    }

    /// clap's own ranges stay clap's: resolution never sees these.
    #[test]
    fn out_of_range_counts_are_clap_errors() {
        for line in [
            &["tc", "lab", "up", "--dir", "d", "--devices", "0"][..],
            &["tc", "lab", "up", "--dir", "d", "--devices", "10001"],
            &["tc", "lab", "up", "--dir", "d", "--subnet", "201"],
            &["tc", "lab", "demo", "--devices", "201"],
        ] {
            let e = Cli::try_parse_from(line).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{line:?}"
            );
        }
    }
}
