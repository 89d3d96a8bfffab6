//! `tc lab`: emulated AudioCodes CPEs for rehearsals and tests, built from the device facts in
//! the spec. REST is emulated (no device can run here); everything else is real: the SFTP side
//! is OpenSSH's sshd, the capture files hold traffic captured by tcpdump.
//!
//! `tc lab up` and `tc lab demo` are resolved first (`config.rs`: the flags in, a checked config
//! out), then run by their shells (`up.rs`, `demo.rs`). The pieces they wire: `device.rs` and
//! `ovoc.rs` (the emulated REST APIs, pure), `http.rs` and `acceptor.rs` (HTTPS), `pki.rs`,
//! `sshd.rs` and `cutproxy.rs` (SFTP), `snmpd.rs`, `traffic.rs` and `live.rs` (real captures),
//! `pcap.rs`; with `--wan`, `wan.rs` (the router and its faults) and `poll.rs` (the OVOC's SNMP
//! polls); `capgen.rs` is `tc lab captures`.

pub mod acceptor;
pub mod capgen;
pub mod config;
pub mod cutproxy;
pub mod demo;
pub mod device;
pub mod http;
pub mod live;
pub mod ovoc;
pub mod pcap;
pub mod pki;
pub mod poll;
pub mod snmpd;
pub mod sshd;
pub mod traffic;
pub mod up;
pub mod wan;

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::cli::{LabCleanupArgs, LabCommand, LabWanArgs, WanDrop};
use crate::error::{Error, ExitCode, Result};

pub fn run(cmd: LabCommand) -> Result<ExitCode> {
    match cmd {
        LabCommand::Up(a) => up::run(&config::up(&a, &config::ThisMachine).map_err(Error::usage)?),
        LabCommand::Alarm(a) => {
            crate::netaddr::validate_device(&a.device).map_err(Error::usage)?;
            let to = ovoc::send_alarm(&a.dir, &a.device, a.clear).map_err(Error::failed)?;
            log::info!("alarm for {} sent to {to}", a.device);
            Ok(ExitCode::Ok)
        }
        LabCommand::Demo(a) => {
            demo::run(&config::demo(&a, &config::ThisMachine).map_err(Error::usage)?)
        }
        LabCommand::Captures(a) => capgen::run(*a),
        LabCommand::Down(a) => {
            crate::netaddr::validate_device(&a.device).map_err(Error::usage)?;
            let until = std::time::SystemTime::now() + a.duration;
            let ms = until
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let path = a.dir.join(DOWN_FILE);
            let mut text = std::fs::read_to_string(&path).unwrap_or_default();
            text.push_str(&format!("{} {ms}\n", a.device));
            write_private(&path, &text)?;
            Ok(ExitCode::Ok)
        }
        LabCommand::Wan(a) => wan_fault(&a),
        LabCommand::Cleanup(a) => cleanup(a),
    }
}

/// `tc lab wan`: a fault on (or the end of every fault on) one device of a running WAN lab.
fn wan_fault(a: &LabWanArgs) -> Result<ExitCode> {
    let plan = wan::recorded(&a.dir)
        .map_err(Error::failed)?
        .ok_or_else(|| {
            Error::usage(format!(
                "{} is not the directory of a `tc lab up --wan` (it has no {} file)",
                a.dir.display(),
                wan::STATE_FILE
            ))
        })?;
    let device: Ipv4Addr = a
        .device
        .parse()
        .map_err(|_| Error::usage(format!("invalid device address {:?}", a.device)))?;
    if !wan::in_use(plan.subnet).map_err(Error::failed)?
        || !wan::netns_path(&plan.router_ns()).exists()
    {
        return Err(Error::failed(format!(
            "the lab's router ({}) is gone: is its `tc lab up` still running?",
            plan.router_ns()
        )));
    }
    // Bad values are the user's (exit 2) and change nothing; checked before anything runs.
    plan.own_address(device).map_err(Error::usage)?;
    if a.duration.is_some_and(|d| d.is_zero()) {
        return Err(Error::usage("--for must be longer than 0"));
    }
    let fault = match (a.restore, a.silent, a.drop) {
        (true, _, _) => None,
        (false, true, _) => Some(wan::Fault::Silent),
        (false, false, Some(WanDrop::ToDevice)) => Some(wan::Fault::ToDevice),
        (false, false, Some(WanDrop::FromDevice)) => Some(wan::Fault::FromDevice),
        (false, false, Some(WanDrop::Both) | None) => Some(wan::Fault::Both),
    };
    wan::inject(&plan, device, fault, a.duration).map_err(Error::failed)?;
    Ok(ExitCode::Ok)
}

/// Device `i` of a lab: `127.0.<subnet + i/250>.<1 + i%250>`, MSBR and gateway/SBC alternating.
pub fn lab_addr(subnet: u8, i: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, subnet + (i / 250) as u8, 1 + (i % 250) as u8)
}

pub fn lab_kind(i: u32) -> device::Kind {
    if i % 2 == 0 {
        device::Kind::Msbr
    } else {
        device::Kind::Gwsbc
    }
}

pub use crate::sys::is_root;

/// Writes `path` (mode 0600) through a temporary file, so a reader never sees half of it.
fn write_private(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::failed(format!("writing {}: {e}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::failed(format!("writing {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::failed(format!("writing {}: {e}", path.display())))
}

/// `tc lab down` lines: `<device> <unix ms until which it is down>`.
const DOWN_FILE: &str = "down";

pub fn which(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
                .any(|d| d.join(prog).is_file())
        })
        .unwrap_or(false)
}

fn cleanup(a: LabCleanupArgs) -> Result<ExitCode> {
    // The processes first (sshd, and everything in the WAN's namespaces): userdel refuses a
    // user that a login left running still uses.
    if let Some(d) = &a.dir {
        sshd::stop_leftover(d);
        sshd::stop_leftover(&d.join("wan-sshd"));
        match wan::cleanup(d) {
            Ok(true) => eprintln!("tc: removed the lab's WAN (namespaces, links, rules)"),
            Ok(false) => {}
            Err(e) => return Err(Error::failed(e)),
        }
    }
    match sshd::remove_user(&a.user) {
        Ok(true) => eprintln!("tc: removed system user {:?}", a.user),
        Ok(false) => eprintln!("tc: no system user {:?}", a.user),
        Err(e) => return Err(Error::failed(e)),
    }
    if let Some(d) = a.dir {
        remove_chroots(&d)?;
        std::fs::remove_dir_all(&d)
            .map_err(|e| Error::failed(format!("removing {}: {e}", d.display())))?;
    }
    Ok(ExitCode::Ok)
}

/// The chroots (devices' and the OVOC's, with the agent's captures) of the lab in `dir`, which
/// a killed lab leaves behind: `dir/chroot_root` names them.
fn remove_chroots(dir: &Path) -> Result<()> {
    let text = match std::fs::read_to_string(dir.join(up::CHROOT_ROOT_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::failed(format!("reading {}: {e}", dir.display()))),
    };
    let root = PathBuf::from(text.trim_end_matches('\n'));
    if !root.exists() {
        return Ok(());
    }
    // The file is the lab's, but check it names a lab's chroot root before a recursive delete.
    if !is_chroot_root(&root) {
        return Err(Error::failed(format!(
            "{} names {}, which is not a lab's chroot directory; not removing it",
            dir.join(up::CHROOT_ROOT_FILE).display(),
            root.display()
        )));
    }
    std::fs::remove_dir_all(&root)
        .map_err(|e| Error::failed(format!("removing {}: {e}", root.display())))?;
    eprintln!("tc: removed {}", root.display());
    Ok(())
}

/// `<absolute path>/lab-<port>` holding the lab's empty chroot, with no `..` on the way.
fn is_chroot_root(p: &Path) -> bool {
    let named = p
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("lab-"))
        .is_some_and(|port| port.parse::<u16>().is_ok());
    let plain = p
        .components()
        .all(|c| !matches!(c, std::path::Component::ParentDir));
    p.is_absolute() && named && plain && p.join("empty").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_kinds() {
        assert_eq!(lab_addr(1, 0), Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(lab_addr(1, 249), Ipv4Addr::new(127, 0, 1, 250));
        assert_eq!(lab_addr(1, 250), Ipv4Addr::new(127, 0, 2, 1));
        assert_eq!(lab_addr(5, 999), Ipv4Addr::new(127, 0, 8, 250));
        assert_eq!(lab_kind(0), device::Kind::Msbr);
        assert_eq!(lab_kind(1), device::Kind::Gwsbc);
    }

    #[test]
    fn cleanup_removes_only_what_names_a_chroot_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("lab-2222");
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::create_dir_all(t.path().join("lab-x/empty")).unwrap();
        std::fs::create_dir_all(t.path().join("lab-1/nothing")).unwrap();
        assert!(is_chroot_root(&root));
        for not in [
            t.path().join("lab-x"),
            t.path().join("lab-1"),
            PathBuf::from("lab-2222"),
            t.path().join("lab-2222/empty/../../lab-2222"),
        ] {
            assert!(!is_chroot_root(&not), "{}", not.display());
        }
        let lab = t.path().join("lab");
        std::fs::create_dir(&lab).unwrap();
        assert!(remove_chroots(&lab).is_ok(), "no file: nothing to do");
        std::fs::write(lab.join(up::CHROOT_ROOT_FILE), "/etc\n").unwrap();
        assert!(remove_chroots(&lab).is_err());
        assert!(Path::new("/etc").is_dir());
        std::fs::write(
            lab.join(up::CHROOT_ROOT_FILE),
            format!("{}\n", root.display()),
        )
        .unwrap();
        remove_chroots(&lab).unwrap();
        assert!(!root.exists());
        assert!(remove_chroots(&lab).is_ok(), "already gone");
    }
}
