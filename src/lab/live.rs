//! Live device captures for the lab (`tc lab up --live-captures`): while an emulated device's
//! debug capture is active, a real tcpdump records the traffic to its address, and its file
//! replaces the one the device serves over SFTP when the capture stops. Then a fetched CPE pcap
//! holds what happened during the capture, probes included, as on a real device.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Live {
    /// The file each device serves (inside its SFTP chroot).
    files: HashMap<IpAddr, PathBuf>,
    running: Mutex<HashMap<IpAddr, Child>>,
    at: Where,
}

/// Where the devices' traffic passes, and the devices' clock.
#[derive(Debug, Clone, Default)]
pub struct Where {
    /// The WAN lab's devices' namespace; `None`: this one.
    pub netns: Option<String>,
    /// `lo` unless set.
    pub interface: Option<String>,
    /// (device clock minus host clock in ns, drift ppm, host time in ns the offset holds at).
    pub clock: Option<(i64, f64, i64)>,
}

fn part(file: &std::path::Path) -> PathBuf {
    file.with_extension("pcap.live")
}

impl Live {
    pub fn new(files: HashMap<IpAddr, PathBuf>, at: Where) -> Live {
        Live {
            files,
            running: Mutex::new(HashMap::new()),
            at,
        }
    }

    /// The device's capture went from `was` to `now`.
    pub fn transition(&self, ip: IpAddr, was: bool, now: bool) {
        match (was, now) {
            (false, true) => self.start(ip),
            (true, false) => self.stop(ip),
            _ => {}
        }
    }

    fn start(&self, ip: IpAddr) {
        let Some(file) = self.files.get(&ip) else {
            return;
        };
        let tcpdump = crate::ovoc::tcpdump::find_program(None).unwrap_or_else(|_| "tcpdump".into());
        let mut cmd = match &self.at.netns {
            Some(ns) => super::wan::command_in(ns, tcpdump),
            None => Command::new(tcpdump),
        };
        let child = cmd
            .args([
                "-i",
                self.at.interface.as_deref().unwrap_or("lo"),
                "-n",
                "-U",
                "--immediate-mode",
                "-Z",
                "root",
                "-w",
            ])
            .arg(part(file))
            .args(["host", &ip.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(c) => {
                let old = self
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(ip, c);
                if let Some(mut o) = old {
                    let _ = o.kill();
                    let _ = o.wait();
                }
            }
            Err(e) => log::warn!("lab: live capture for {ip}: {e}"),
        }
    }

    fn stop(&self, ip: IpAddr) {
        let Some(mut c) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip)
        else {
            return;
        };
        let _ = crate::sys::terminate(c.id());
        let deadline = Instant::now() + Duration::from_secs(3);
        while !matches!(c.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(file) = self.files.get(&ip) {
            if let Some(clock) = self.at.clock {
                if let Err(e) = device_clock(&part(file), clock) {
                    crate::logging::warn_user(&format!(
                        "lab: the capture of {ip} keeps the host's clock: {e}"
                    ));
                }
            }
            // rename replaces the served file at once: a fetch sees the old or the new, whole.
            if let Err(e) = std::fs::rename(part(file), file) {
                log::warn!("lab: live capture for {ip}: {e}");
            }
        }
    }

    pub fn shutdown(&self) {
        let ips: Vec<IpAddr> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        for ip in ips {
            self.stop(ip);
        }
    }
}

/// The capture's timestamps in the device's clock instead of the host's.
fn device_clock(file: &std::path::Path, (offset, ppm, at): (i64, f64, i64)) -> Result<(), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let shifted = super::pcap::shift_clock(&bytes, offset, ppm, at)?;
    std::fs::write(file, shifted).map_err(|e| format!("writing {}: {e}", file.display()))
}
