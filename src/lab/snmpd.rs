//! The lab's SNMP side: one real net-snmp `snmpd` per emulated device, answering on that
//! device's address with the SNMPv3 users the device has, so VERIFY is real end to end. A device
//! starts with the lab's probe user (CaptureScript, authPriv SHA-1/AES-128, the lab's keys); a
//! CLI script that changes its `snmp v3-users` restarts its snmpd with the new users, as a real
//! device applies them: probes with other keys then fail. One daemon per device also gives each
//! device its own SNMP engine, as real devices have.
//!
//! Configuration (keys included) lives in the lab dir with mode 0600; nothing is read from or
//! written to the system's net-snmp directories.

use std::collections::HashMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lab::device::SnmpUser;

pub const SNMPD: &str = "/usr/sbin/snmpd";

/// Characters net-snmp's config reader would take for syntax inside a quoted key or a name.
fn configurable(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"\\#".contains(&b))
}

/// snmpd.conf for one device. A user snmpd cannot be given (a key with a quote, say, or one
/// level of security without its key) is left out: probes as that user fail, as they would
/// against a device whose key the prober does not know.
pub fn render_config(addr: Ipv4Addr, port: u16, users: &[SnmpUser], persist: &Path) -> String {
    let mut c = format!(
        "# tc lab: emulated device {addr}'s SNMP agent\n\
         agentAddress udp:{addr}:{port}\n\
         [snmp] persistentDir {}\n\
         sysDescr tc lab emulated AudioCodes device\n\
         sysLocation tc lab\n",
        persist.display()
    );
    for u in users.iter().filter(|u| configurable(&u.name)) {
        let key = |k: &Option<crate::secret::Secret>| {
            k.as_ref()
                .map(|k| k.expose().to_string())
                .filter(|k| configurable(k))
        };
        let auth = match u.auth_protocol.as_str() {
            "sha-1" => Some("SHA"),
            "md5" => Some("MD5"),
            _ => None,
        };
        let privacy = match u.priv_protocol.as_str() {
            "aes-128" => Some("AES"),
            "des" => Some("DES"),
            _ => None,
        };
        let line = match (auth, key(&u.auth_key), privacy, key(&u.priv_key)) {
            (None, _, None, _) => format!("createUser {}\nrouser {} noauth\n", u.name, u.name),
            (Some(a), Some(ak), None, _) => {
                format!(
                    "createUser {} {a} \"{ak}\"\nrouser {} auth\n",
                    u.name, u.name
                )
            }
            (Some(a), Some(ak), Some(p), Some(pk)) => format!(
                "createUser {} {a} \"{ak}\" {p} \"{pk}\"\nrouser {} priv\n",
                u.name, u.name
            ),
            _ => continue,
        };
        c.push_str(&line);
    }
    c
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn stop(mut self) {
        // Our child, not yet reaped: its pid cannot have been reused.
        let _ = crate::sys::terminate(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid` has bound `addr:port`: its own `/proc/<pid>/net/udp` is its network
/// namespace's table, which for a WAN lab's device is not this process's.
fn bound(pid: u32, addr: Ipv4Addr, port: u16) -> bool {
    let o = addr.octets();
    // /proc/net/udp shows the address as a little-endian hex word, then the port.
    let needle = format!(
        "{:02X}{:02X}{:02X}{:02X}:{:04X}",
        o[3], o[2], o[1], o[0], port
    );
    std::fs::read_to_string(format!("/proc/{pid}/net/udp")).is_ok_and(|t| t.contains(&needle))
}

/// Every device's snmpd.
pub struct Agents {
    dir: PathBuf,
    port: u16,
    /// The WAN lab's devices' namespace, where the daemons run.
    netns: Option<String>,
    daemons: Mutex<HashMap<Ipv4Addr, Daemon>>,
}

impl Agents {
    /// One snmpd per address with `users`; waits until each has bound its address.
    pub fn start(
        dir: &Path,
        addrs: &[Ipv4Addr],
        port: u16,
        users: &[SnmpUser],
        netns: Option<String>,
    ) -> Result<Agents, String> {
        let agents = Agents {
            dir: dir.join("snmp"),
            port,
            netns,
            daemons: Mutex::new(HashMap::new()),
        };
        // Spawned together, waited for together: one daemon binds in milliseconds.
        let mut started = Vec::new();
        for a in addrs {
            started.push((*a, agents.spawn(*a, users)?));
        }
        let mut daemons = agents.lock();
        for (a, mut d) in started {
            let r = agents.wait_bound(a, &mut d);
            daemons.insert(a, d);
            r?;
        }
        drop(daemons);
        Ok(agents)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Ipv4Addr, Daemon>> {
        self.daemons.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Give `addr`'s snmpd these users: restart it with a fresh configuration and a fresh
    /// persistent store (net-snmp keeps users there and would bring the old keys back).
    pub fn provision(&self, addr: Ipv4Addr, users: &[SnmpUser]) -> Result<(), String> {
        let mut daemons = self.lock();
        let Some(old) = daemons.remove(&addr) else {
            return Ok(()); // beyond the lab's SNMP devices: nothing answers SNMP there
        };
        old.stop();
        let mut d = self.spawn(addr, users)?;
        let r = self.wait_bound(addr, &mut d);
        daemons.insert(addr, d);
        r
    }

    pub fn stop_all(&self) {
        let daemons = std::mem::take(&mut *self.lock());
        for (_, d) in daemons {
            d.stop();
        }
    }

    fn spawn(&self, addr: Ipv4Addr, users: &[SnmpUser]) -> Result<Daemon, String> {
        let own = self.dir.join(addr.to_string());
        let persist = own.join("persist");
        let _ = std::fs::remove_dir_all(&persist);
        std::fs::create_dir_all(&persist)
            .map_err(|e| format!("creating {}: {e}", persist.display()))?;
        let conf = own.join("snmpd.conf");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&conf)
            .map_err(|e| format!("writing {}: {e}", conf.display()))?;
        f.write_all(render_config(addr, self.port, users, &persist).as_bytes())
            .map_err(|e| format!("writing {}: {e}", conf.display()))?;
        let mut cmd = match &self.netns {
            Some(ns) => super::wan::command_in(ns, SNMPD),
            None => Command::new(SNMPD),
        };
        let child = cmd
            .args(["-f", "-C", "-Lf"])
            .arg(own.join("snmpd.log"))
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(own.join("snmpd.pid"))
            .env_clear()
            .env("SNMP_PERSISTENT_DIR", &persist)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {SNMPD}: {e}"))?;
        Ok(Daemon { child })
    }

    fn wait_bound(&self, addr: Ipv4Addr, d: &mut Daemon) -> Result<(), String> {
        let log = self.dir.join(addr.to_string()).join("snmpd.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bound(d.child.id(), addr, self.port) {
            if let Ok(Some(st)) = d.child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let last: Vec<&str> = text.lines().rev().take(3).collect();
                return Err(format!(
                    "snmpd for {addr} exited ({st}): {}",
                    last.join("; ")
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "snmpd did not bind {addr}:{} within 10 s (see {})",
                    self.port,
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn user(name: &str, auth: &str, privacy: &str, ak: Option<&str>, pk: Option<&str>) -> SnmpUser {
        SnmpUser {
            name: name.into(),
            auth_protocol: auth.into(),
            priv_protocol: privacy.into(),
            auth_key: ak.map(|k| Secret::new(k.into())),
            priv_key: pk.map(|k| Secret::new(k.into())),
        }
    }

    #[test]
    fn config_has_the_devices_users_and_nothing_snmpd_would_misread() {
        let users = [
            user(
                "CaptureScript",
                "sha-1",
                "aes-128",
                Some("authkey123"),
                Some("privkey456"),
            ),
            user("Mon", "md5", "none", Some("monkey999"), None),
            user("Open", "none", "none", None, None),
            user("Quoted", "sha-1", "none", Some("ab\"cd\"efgh"), None),
            user("NoKey", "sha-1", "aes-128", None, None),
        ];
        let c = render_config(
            "127.0.1.2".parse().unwrap(),
            161,
            &users,
            Path::new("/x/snmp/127.0.1.2/persist"),
        );
        assert!(c.contains("agentAddress udp:127.0.1.2:161\n"), "{c}");
        assert!(c.contains("[snmp] persistentDir /x/snmp/127.0.1.2/persist\n"));
        let users: Vec<&str> = c.lines().filter(|l| l.starts_with("createUser")).collect();
        assert_eq!(
            users,
            [
                "createUser CaptureScript SHA \"authkey123\" AES \"privkey456\"",
                "createUser Mon MD5 \"monkey999\"",
                "createUser Open",
            ]
        );
        assert!(c.contains("rouser CaptureScript priv\n"));
        assert!(c.contains("rouser Mon auth\n") && c.contains("rouser Open noauth\n"));
        assert!(!c.contains("Quoted") && !c.contains("NoKey"));
    }
}
