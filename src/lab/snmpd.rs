//! The lab's SNMP side: one real net-snmp `snmpd` answering on every emulated device's address
//! with the SNMPv3 user the probes use (authPriv, SHA-1/AES-128), so VERIFY is real end to end.
//! Its configuration (keys included) lives in the lab dir with mode 0600; nothing is read from
//! or written to the system's net-snmp directories.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::secret::Secret;

pub const SNMPD: &str = "/usr/sbin/snmpd";

pub fn render_config(
    addrs: &[String],
    port: u16,
    user: &str,
    auth: &Secret,
    privk: &Secret,
    persist: &Path,
) -> String {
    let listen: Vec<String> = addrs.iter().map(|a| format!("udp:{a}:{port}")).collect();
    format!(
        "# tc lab: emulated devices' SNMP agent\n\
         agentAddress {}\n\
         [snmp] persistentDir {}\n\
         createUser {user} SHA \"{}\" AES \"{}\"\n\
         rouser {user} priv\n\
         sysDescr tc lab emulated AudioCodes device\n\
         sysLocation tc lab\n",
        listen.join(","),
        persist.display(),
        auth.expose(),
        privk.expose()
    )
}

pub struct Snmpd {
    child: Option<Child>,
}

impl Snmpd {
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: SIGTERM to the child we spawned.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn bound(addr: &str, port: u16) -> bool {
    let Ok(ip) = addr.parse::<std::net::Ipv4Addr>() else {
        return false;
    };
    let o = ip.octets();
    // /proc/net/udp shows the address as a little-endian hex word, then the port.
    let needle = format!(
        "{:02X}{:02X}{:02X}{:02X}:{:04X}",
        o[3], o[2], o[1], o[0], port
    );
    std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| t.contains(&needle))
}

/// Start snmpd on `addrs` (all on `port`); waits until it has bound the last address.
pub fn start(
    dir: &Path,
    addrs: &[String],
    port: u16,
    user: &str,
    auth: &Secret,
    privk: &Secret,
) -> Result<Snmpd, String> {
    let persist = dir.join("snmp");
    std::fs::create_dir_all(&persist)
        .map_err(|e| format!("creating {}: {e}", persist.display()))?;
    let conf = dir.join("snmpd.conf");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&conf)
        .map_err(|e| format!("writing {}: {e}", conf.display()))?;
    f.write_all(render_config(addrs, port, user, auth, privk, &persist).as_bytes())
        .map_err(|e| format!("writing {}: {e}", conf.display()))?;
    let log: PathBuf = dir.join("snmpd.log");
    let child = Command::new(SNMPD)
        .args(["-f", "-C", "-Lf"])
        .arg(&log)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir.join("snmpd.pid"))
        .env_clear()
        .env("SNMP_PERSISTENT_DIR", &persist)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {SNMPD}: {e}"))?;
    let mut s = Snmpd { child: Some(child) };
    let last = addrs.last().cloned().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bound(&last, port) {
        if let Some(Ok(Some(st))) = s.child.as_mut().map(|c| c.try_wait()) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            s.child = None;
            return Err(format!("snmpd exited ({st}): {}", text.trim()));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "snmpd did not bind {last}:{port} within 10 s (see {})",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(s)
}

use std::os::unix::process::CommandExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_every_address_and_the_user() {
        let (a, p) = (
            Secret::new("authkey123".into()),
            Secret::new("privkey456".into()),
        );
        let c = render_config(
            &["127.0.1.1".into(), "127.0.1.2".into()],
            161,
            "CaptureScript",
            &a,
            &p,
            Path::new("/x/snmp"),
        );
        assert!(c.contains("agentAddress udp:127.0.1.1:161,udp:127.0.1.2:161\n"));
        assert!(c.contains("createUser CaptureScript SHA \"authkey123\" AES \"privkey456\"\n"));
        assert!(c.contains("rouser CaptureScript priv\n"));
        assert!(c.contains("[snmp] persistentDir /x/snmp\n"));
    }
}
