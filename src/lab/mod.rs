//! `tc lab`: emulated AudioCodes CPEs for rehearsals and tests, built from the device facts in
//! the spec. REST is emulated (no device can run here); everything else is real: the SFTP side
//! is OpenSSH's sshd, the capture files hold traffic captured by tcpdump.

pub mod acceptor;
pub mod capgen;
pub mod cutproxy;
pub mod demo;
pub mod device;
pub mod http;
pub mod live;
pub mod ovoc;
pub mod pcap;
pub mod pki;
pub mod snmpd;
pub mod sshd;
pub mod traffic;

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::{DeviceType, LabCleanupArgs, LabCommand, LabUpArgs};
use crate::emit::emit;
use crate::error::{Error, ExitCode, Result};
use crate::event::Event;
use crate::inventory::Entry;
use crate::secret::Secret;

pub fn run(cmd: LabCommand) -> Result<ExitCode> {
    match cmd {
        LabCommand::Up(a) => up(a),
        LabCommand::Alarm(a) => {
            crate::netaddr::validate_device(&a.device).map_err(Error::usage)?;
            let to = ovoc::send_alarm(&a.dir, &a.device, a.clear).map_err(Error::failed)?;
            log::info!("alarm for {} sent to {to}", a.device);
            Ok(ExitCode::Ok)
        }
        LabCommand::Demo(a) => demo::run(a),
        LabCommand::Captures(a) => capgen::run(a),
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
        LabCommand::Cleanup(a) => cleanup(a),
    }
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

const OVOC_USER: &str = "ovoc-operator";
const SNMP_MAX: usize = 100;

fn random_password() -> String {
    const ALNUM: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    (0..20)
        .map(|_| ALNUM[(crate::util::random_u64() % ALNUM.len() as u64) as usize] as char)
        .collect()
}

pub use crate::sys::is_root;

/// `'...'` quoting for the env file: the only character that needs care inside is `'`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

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

struct Lab {
    dir: PathBuf,
    live: Option<live::Live>,
    devices: HashMap<IpAddr, Mutex<device::DeviceState>>,
    ovoc: ovoc::LabOvoc,
    ovoc_ip: IpAddr,
    auth: device::Auth,
    /// Each device's real snmpd, given the users its CLI scripts configure.
    snmp: Option<snmpd::Agents>,
    latency: Duration,
    log_requests: bool,
    requests: AtomicU64,
}

impl Lab {
    fn down_for(&self, ip: IpAddr) -> Option<Duration> {
        let text = std::fs::read_to_string(self.dir.join(DOWN_FILE)).ok()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_millis();
        let until = text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(d, _)| d.parse::<IpAddr>().ok() == Some(ip))
            .filter_map(|(_, ms)| ms.trim().parse::<u128>().ok())
            .next_back()?;
        (until > now).then(|| Duration::from_millis((until - now) as u64))
    }
}

impl http::Handler for Lab {
    fn handle(&self, local: SocketAddr, _peer: SocketAddr, req: &http::Request) -> http::Response {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !self.latency.is_zero() {
            std::thread::sleep(self.latency);
        }
        if local.ip() == self.ovoc_ip {
            return self.ovoc.handle(local, _peer, req);
        }
        let Some(dev) = self.devices.get(&local.ip()) else {
            return http::Response::empty(404);
        };
        if let Some(left) = self.down_for(local.ip()) {
            // Unreachable: no answer within any sane client timeout.
            std::thread::sleep(left.min(Duration::from_secs(30)));
            return http::Response::empty(503);
        }
        let resp = {
            let mut d = dev.lock().unwrap_or_else(|p| p.into_inner());
            let was = d.capture_active();
            let users = d.snmp_config().to_vec();
            let resp = device::handle(&mut d, &self.auth, req);
            if let Some(live) = &self.live {
                live.transition(local.ip(), was, d.capture_active());
            }
            // As a real device: the new users answer SNMP before the script's reply is sent.
            if let (Some(snmp), IpAddr::V4(ip)) = (&self.snmp, local.ip()) {
                if d.snmp_config() != users.as_slice() {
                    if let Err(e) = snmp.provision(ip, d.snmp_config()) {
                        crate::logging::warn_user(&format!("{ip}: SNMP agent: {e}"));
                    }
                }
            }
            resp
        };
        if self.log_requests {
            emit(&Event::LabRequest {
                device: local.ip().to_string(),
                method: req.method.clone(),
                path: req.path.clone(),
                status: resp.status,
                user: req.basic_auth().map(|(u, _)| u),
            });
        }
        resp
    }
}

/// Bind every address on one port (a free one when `port` is 0).
fn bind_all(addrs: &[Ipv4Addr], port: u16) -> Result<(Vec<TcpListener>, u16)> {
    let mut last = String::new();
    for _ in 0..10 {
        let first = TcpListener::bind((addrs[0], port))
            .map_err(|e| Error::failed(format!("binding {}:{port}: {e}", addrs[0])))?;
        let p = first
            .local_addr()
            .map_err(|e| Error::failed(e.to_string()))?
            .port();
        let mut all = vec![first];
        let mut ok = true;
        for a in &addrs[1..] {
            match TcpListener::bind((*a, p)) {
                Ok(l) => all.push(l),
                Err(e) if port == 0 => {
                    last = format!("{a}:{p}: {e}");
                    ok = false;
                    break;
                }
                Err(e) => return Err(Error::failed(format!("binding {a}:{p}: {e}"))),
            }
        }
        if ok {
            return Ok((all, p));
        }
    }
    Err(Error::failed(format!(
        "no port free on every lab address ({last})"
    )))
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind(("0.0.0.0", 0))
        .map_err(|e| Error::failed(format!("finding a free port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| Error::failed(e.to_string()))?
        .port())
}

fn up(a: LabUpArgs) -> Result<ExitCode> {
    let sftp = !a.no_sftp;
    if sftp && !is_root() {
        return Err(Error::usage(
            "tc lab up serves SFTP through a real sshd with per-device chroots, which needs root: \
             run it with sudo, or add --no-sftp for the REST side only",
        ));
    }
    if sftp {
        crate::lab::sshd::check_chroot_path(&a.sftp_root).map_err(Error::usage)?;
    }
    crate::sys::raise_fd_limit();
    std::fs::create_dir_all(&a.dir)
        .map_err(|e| Error::usage(format!("creating {}: {e}", a.dir.display())))?;
    let dir = a
        .dir
        .canonicalize()
        .map_err(|e| Error::usage(format!("{}: {e}", a.dir.display())))?;
    let addrs: Vec<Ipv4Addr> = (0..a.devices).map(|i| lab_addr(a.subnet, i)).collect();
    // The emulated OVOC and the address a local agent listens on sit beside the devices
    // (which use .1-.250 of each /24).
    let ovoc_ip = Ipv4Addr::new(127, 0, a.subnet, 254);
    let agent_ip = Ipv4Addr::new(127, 0, a.subnet, 253);
    let interrupted = crate::sys::install_signals()?;

    // Certificates, one leaf per device.
    let ca = pki::new_ca().map_err(Error::failed)?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem())
        .map_err(|e| Error::failed(format!("writing {}: {e}", ca_path.display())))?;
    let mut tls = HashMap::new();
    let mut pins = String::new();
    for (i, addr) in addrs.iter().enumerate() {
        let leaf = ca
            .leaf(IpAddr::V4(*addr), &format!("tc-lab-device-{i}"))
            .map_err(Error::failed)?;
        pins.push_str(&format!("{addr} {}\n", leaf.pin));
        tls.insert(IpAddr::V4(*addr), leaf.config);
    }
    let ovoc_leaf = ca
        .leaf(IpAddr::V4(ovoc_ip), "tc-lab-ovoc")
        .map_err(Error::failed)?;
    tls.insert(IpAddr::V4(ovoc_ip), ovoc_leaf.config);
    std::fs::write(dir.join("pins"), &pins)
        .map_err(|e| Error::failed(format!("writing pins: {e}")))?;

    // Capture files: real traffic when root, generated otherwise; padded on request.
    let mut files: HashMap<Ipv4Addr, Vec<u8>> = if is_root() && which("tcpdump") {
        traffic::capture_real(&addrs, &dir).map_err(Error::failed)?
    } else {
        log::warn!("not root or no tcpdump: the lab's capture files hold generated packets");
        addrs
            .iter()
            .map(|a| {
                (
                    *a,
                    crate::lab::pcap::synthetic(Ipv4Addr::LOCALHOST, *a, 8, 0),
                )
            })
            .collect()
    };
    if a.capture_bytes > 0 {
        for (addr, f) in files.iter_mut() {
            crate::lab::pcap::pad_to(f, a.capture_bytes, Ipv4Addr::LOCALHOST, *addr);
        }
    }

    let password = random_password();
    let monitor_password = random_password();
    let auth = device::Auth {
        admin_user: a.user.clone(),
        admin_password: Secret::new(password.clone()),
        monitor_user: "monitor".into(),
        monitor_password: Secret::new(monitor_password.clone()),
    };

    // SFTP: a real sshd, optionally behind the connection-cutting proxy.
    let mut created_user = false;
    let mut sshd = None;
    let mut proxy = None;
    let mut chroot_root = None;
    let mut ssh_port = None;
    if sftp {
        let port = if a.ssh_port == 0 {
            free_port()?
        } else {
            a.ssh_port
        };
        let sshd_port = if a.cut_sftp_after.is_some() {
            free_port()?
        } else {
            port
        };
        let spec = sshd::SshdSpec {
            dir: dir.clone(),
            port: sshd_port,
            user: a.user.clone(),
            chroot_root: a.sftp_root.join(format!("lab-{port}")),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
        };
        let by_name: HashMap<String, Vec<u8>> = files
            .iter()
            .map(|(a, f)| (a.to_string(), f.clone()))
            .collect();
        sshd::prepare_chroots(&spec, &by_name)
            .map_err(|e| Error::failed(format!("preparing {}: {e}", spec.chroot_root.display())))?;
        created_user = sshd::ensure_system_user(&a.user).map_err(Error::failed)?;
        if created_user {
            crate::logging::warn_user(&format!(
                "created system user {:?} for the lab's SFTP logins; it is removed when the lab stops \
                 (or run: tc lab cleanup --user {})",
                a.user, a.user
            ));
        }
        sshd::set_password(&a.user, &auth.admin_password).map_err(Error::failed)?;
        let pubkey = sshd::generate_host_key(&dir).map_err(Error::failed)?;
        std::fs::write(
            dir.join("known_hosts"),
            sshd::known_hosts(&spec.addrs, port, &pubkey),
        )
        .map_err(|e| Error::failed(format!("writing known_hosts: {e}")))?;
        sshd = Some(sshd::start(&spec).map_err(Error::failed)?);
        if let Some(cut) = a.cut_sftp_after {
            let pairs = addrs
                .iter()
                .map(|ad| {
                    (
                        SocketAddr::new(IpAddr::V4(*ad), port),
                        SocketAddr::new(IpAddr::V4(*ad), sshd_port),
                    )
                })
                .collect();
            proxy = Some(
                cutproxy::start(pairs, cut)
                    .map_err(|e| Error::failed(format!("cut proxy: {e}")))?,
            );
        }
        chroot_root = Some(spec.chroot_root.clone());
        ssh_port = Some(port);
    }

    // SNMPv3 for the probes: a real snmpd per device (a process each, so a big lab serves SNMP
    // on its first SNMP_MAX devices only and says so), with the probe user the devices ship
    // with here; CLI scripts change it.
    let snmp_auth = random_password();
    let snmp_priv = random_password();
    let probe_user = device::SnmpUser {
        name: "CaptureScript".into(),
        auth_protocol: "sha-1".into(),
        priv_protocol: "aes-128".into(),
        auth_key: Some(Secret::new(snmp_auth.clone())),
        priv_key: Some(Secret::new(snmp_priv.clone())),
    };
    let snmp = if is_root() && Path::new(snmpd::SNMPD).exists() {
        if addrs.len() > SNMP_MAX {
            crate::logging::warn_user(&format!(
                "snmpd answers on the first {SNMP_MAX} devices only; SNMP probes to the others go unanswered"
            ));
        }
        let first: Vec<Ipv4Addr> = addrs.iter().take(SNMP_MAX).copied().collect();
        let users = std::slice::from_ref(&probe_user);
        Some(snmpd::Agents::start(&dir, &first, 161, users).map_err(Error::failed)?)
    } else {
        crate::logging::warn_user(
            "snmpd not available (apt-get install snmpd): SNMP probes will not be answered",
        );
        None
    };

    // REST over HTTPS, one listener per device address, and the emulated OVOC.
    let mut rest_addrs = addrs.clone();
    rest_addrs.push(ovoc_ip);
    let (listeners, rest_port) = bind_all(&rest_addrs, a.rest_port)?;
    let ovoc_devices: Vec<(u64, String, String)> = addrs
        .iter()
        .enumerate()
        .map(|(i, ad)| {
            let kind = if lab_kind(i as u32) == device::Kind::Msbr {
                "msbr"
            } else {
                "sbc"
            };
            (
                1000 + i as u64,
                ad.to_string(),
                format!("lab-{kind}-{}", i + 1),
            )
        })
        .collect();
    ovoc::write_devices(&dir, &ovoc_devices)
        .map_err(|e| Error::failed(format!("writing OVOC devices: {e}")))?;
    let ovoc_password = random_password();
    let lab_ovoc = ovoc::LabOvoc::new(
        ovoc_devices,
        OVOC_USER,
        Secret::new(ovoc_password.clone()),
        dir.join(ovoc::RULES_FILE),
    );
    let _ = std::fs::remove_file(dir.join(DOWN_FILE));
    let live = match (&chroot_root, a.live_captures) {
        (Some(root), true) => Some(live::Live::new(
            addrs
                .iter()
                .map(|ad| {
                    let f = root
                        .join(ad.to_string())
                        .join(sshd::CAPTURE_DIR)
                        .join(sshd::CAPTURE_FILE);
                    (IpAddr::V4(*ad), f)
                })
                .collect(),
        )),
        (None, true) => {
            return Err(Error::usage(
                "--live-captures needs the SFTP side (not --no-sftp)",
            ))
        }
        _ => None,
    };
    let lab = Arc::new(Lab {
        dir: dir.clone(),
        live,
        ovoc: lab_ovoc,
        ovoc_ip: IpAddr::V4(ovoc_ip),
        devices: addrs
            .iter()
            .enumerate()
            .map(|(i, ad)| {
                let serial = format!("TCLAB{:06}", i + 1);
                (
                    IpAddr::V4(*ad),
                    Mutex::new(
                        device::DeviceState::new(
                            &ad.to_string(),
                            lab_kind(i as u32),
                            &serial,
                            a.busy_first,
                        )
                        .with_snmp_users(vec![probe_user.clone()]),
                    ),
                )
            })
            .collect(),
        auth,
        snmp,
        latency: Duration::from_millis(a.latency_ms),
        log_requests: a.log_requests,
        requests: AtomicU64::new(0),
    });
    let tls = Arc::new(tls);
    let selector: http::TlsSelector =
        Arc::new(move |local: SocketAddr| tls.get(&local.ip()).cloned());
    let server = http::serve(listeners, selector, lab.clone())
        .map_err(|e| Error::failed(format!("HTTPS: {e}")))?;

    // The inventory and the env file a shell sources.
    let entries: Vec<Entry> = addrs
        .iter()
        .enumerate()
        .map(|(i, ad)| {
            let msbr = lab_kind(i as u32) == device::Kind::Msbr;
            Entry {
                device: ad.to_string(),
                device_type: Some(if msbr {
                    DeviceType::Msbr
                } else {
                    DeviceType::Gwsbc
                }),
                interfaces: if msbr {
                    vec!["eth-wan".into(), "eth-lan".into()]
                } else {
                    vec!["eth-lan".into()]
                },
                username: Some(a.user.clone()),
                ovoc: Some(agent_ip.to_string()),
                rest_port: Some(rest_port),
                ssh_port,
                pin_sha256: None,
            }
        })
        .collect();
    let inventory = dir.join("devices.csv");
    std::fs::write(&inventory, crate::inventory::to_csv(&entries))
        .map_err(|e| Error::failed(format!("writing {}: {e}", inventory.display())))?;
    let env_path = dir.join("env");
    let mut env = String::from(
        "# tc lab credentials and trust settings: . this file, then run tc against the lab.\n",
    );
    let mut export = |k: &str, v: &str| env.push_str(&format!("export {k}={}\n", sh_quote(v)));
    export("TC_CPE_USER", &a.user);
    export("TC_CPE_PASSWORD", &password);
    export("TC_LAB_MONITOR_PASSWORD", &monitor_password);
    export("TC_CA_CERT", &ca_path.display().to_string());
    export("TC_SNMP_AUTH_KEY", &snmp_auth);
    export("TC_SNMP_PRIV_KEY", &snmp_priv);
    export(
        "TC_OVOC_URL",
        &format!("https://{ovoc_ip}:{rest_port}/ovoc/v1"),
    );
    export("TC_OVOC_USER", OVOC_USER);
    export("TC_OVOC_PASSWORD", &ovoc_password);
    export("TC_LAB_INVENTORY", &inventory.display().to_string());
    if sftp {
        export(
            "TC_KNOWN_HOSTS",
            &dir.join("known_hosts").display().to_string(),
        );
    }
    write_private(&env_path, &env)?;

    emit(&Event::LabReady {
        dir: dir.display().to_string(),
        devices: a.devices,
        inventory: inventory.display().to_string(),
        env: env_path.display().to_string(),
        rest_port,
        ssh_port,
        sftp_root: chroot_root.as_ref().map(|p| p.display().to_string()),
        ca_cert: ca_path.display().to_string(),
        pid: std::process::id(),
    });

    while !interrupted.load(Ordering::Relaxed) && !crate::emit::stdout_broken() {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.shutdown();
    if let Some(l) = &lab.live {
        l.shutdown();
    }
    if let Some(p) = proxy {
        p.shutdown();
    }
    if let Some(s) = sshd {
        s.stop();
    }
    if let Some(s) = &lab.snmp {
        s.stop_all();
    }
    if created_user {
        if let Err(e) = sshd::remove_user(&a.user) {
            crate::logging::warn_user(&format!("could not remove system user {:?}: {e}", a.user));
        }
    }
    if let Some(root) = chroot_root {
        let _ = std::fs::remove_dir_all(root);
    }
    emit(&Event::LabStopped {
        requests: lab.requests.load(Ordering::Relaxed),
        signal: Some("SIGINT/SIGTERM".into()),
    });
    Ok(ExitCode::Ok)
}

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
    match sshd::remove_user(&a.user) {
        Ok(true) => eprintln!("tc: removed system user {:?}", a.user),
        Ok(false) => eprintln!("tc: no system user {:?}", a.user),
        Err(e) => return Err(Error::failed(e)),
    }
    if let Some(d) = a.dir {
        std::fs::remove_dir_all(&d)
            .map_err(|e| Error::failed(format!("removing {}: {e}", d.display())))?;
    }
    Ok(ExitCode::Ok)
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
    fn env_quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
