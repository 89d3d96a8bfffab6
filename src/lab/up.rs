//! `tc lab up`: serve emulated CPEs and an emulated OVOC until SIGINT/SIGTERM.
//!
//! `run` receives a checked `UpConfig` (see `config.rs`) and reads as the steps it takes: make
//! the lab directory; issue the certificates; make each device's capture file; start the SFTP
//! side (system user, chroots, the OVOC's chroot and login key, sshd, the optional cutting
//! proxy) and the SNMP agents; serve REST
//! for the devices and the OVOC; write the inventory and the env file; say `lab.ready`; wait for
//! a signal; tear down in reverse. The REST answers themselves are `Lab::handle`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::config::{SftpConfig, UpConfig};
use super::{cutproxy, device, http, live, ovoc, pki, poll, snmpd, sshd, traffic, wan};
use super::{is_root, lab_kind, which, write_private, DOWN_FILE};
use crate::cli::DeviceType;
use crate::emit::emit;
use crate::error::{Error, ExitCode, Result};
use crate::event::Event;
use crate::inventory::Entry;
use crate::secret::Secret;

const OVOC_USER: &str = "ovoc-operator";
/// snmpd is a process per device, so a big lab serves SNMP on its first devices only.
const SNMP_MAX: usize = 100;

pub fn run(cfg: &UpConfig) -> Result<ExitCode> {
    crate::sys::raise_fd_limit();
    let dir = make_dir(&cfg.dir)?;
    let interrupted = crate::sys::install_signals()?;
    // First made, last removed (dropped at the end, after everything that runs inside it).
    let wan = match &cfg.wan {
        Some(w) => Some(wan::Wan::create(&dir, w.plan).map_err(Error::failed)?),
        None => None,
    };
    let certs = issue_certificates(&dir, cfg)?;
    let files = capture_files(&dir, cfg)?;
    let secrets = Secrets::new(&cfg.user);
    let sftp = match &cfg.sftp {
        Some(s) => Some(SftpSide::start(&dir, cfg, s, &files, &secrets.auth)?),
        None => None,
    };
    let own: Vec<Ipv4Addr> = cfg.addrs.iter().map(|a| cfg.own(*a)).collect();
    let netns = cfg.wan.as_ref().map(|w| w.plan.device_ns());
    let snmp = snmp_agents(&dir, &own, &secrets.probe_user, netns)?;
    let (listeners, rest_port) = match &wan {
        Some(w) => bind_wan(w, &own, cfg.ovoc_ip, cfg.rest_port)?,
        None => bind_all(&rest_addrs(cfg), cfg.rest_port)?,
    };
    let lab = Arc::new(Lab::new(&dir, cfg, sftp.as_ref(), snmp, &secrets)?);
    let server = serve_rest(listeners, certs.tls, Arc::clone(&lab))?;
    let poller = match &cfg.wan {
        Some(w) => Some(start_polling(&dir, cfg, w)?),
        None => None,
    };
    let inventory = write_inventory(&dir, cfg, rest_port, sftp.as_ref().map(|s| s.port))?;
    let env = write_env(
        &dir,
        cfg,
        rest_port,
        sftp.as_ref(),
        &secrets,
        &certs.ca_path,
        &inventory,
    )?;
    emit(&Event::LabReady {
        dir: dir.display().to_string(),
        devices: cfg.addrs.len() as u32,
        inventory: inventory.display().to_string(),
        env: env.display().to_string(),
        rest_port,
        ssh_port: sftp.as_ref().map(|s| s.port),
        sftp_root: sftp.as_ref().map(|s| s.chroot_root.display().to_string()),
        agent_dir: sftp
            .as_ref()
            .map(|s| s.ovoc.agent_dir.display().to_string()),
        ca_cert: certs.ca_path.display().to_string(),
        pid: std::process::id(),
    });
    wait_for_signal(&interrupted);
    if let Some(p) = poller {
        p.stop();
    }
    server.shutdown();
    if let Some(l) = &lab.live {
        l.shutdown();
    }
    if let Some(s) = sftp {
        s.stop();
    }
    if let Some(s) = &lab.snmp {
        s.stop_all();
    }
    emit(&Event::LabStopped {
        requests: lab.requests.load(Ordering::Relaxed),
        signal: Some("SIGINT/SIGTERM".into()),
    });
    drop(wan);
    Ok(ExitCode::Ok)
}

/// The emulated OVOC's SNMP polls from the OVOC side's address: Connection Lost after the
/// configured misses, forwarded by the rule an agent registered, as OVOC does; Connection
/// established when a device answers again.
fn start_polling(
    dir: &Path,
    cfg: &UpConfig,
    w: &super::config::WanConfig,
) -> Result<poll::Running> {
    let dir = dir.to_path_buf();
    let on_change = move |c: &poll::Change| {
        let (device, state, missed, clear) = match c {
            poll::Change::Lost { device, missed } => (*device, "lost", Some(*missed), false),
            poll::Change::Established { device } => (*device, "established", None, true),
        };
        let forwarded = ovoc::send_alarm(&dir, &device.to_string(), clear);
        emit(&Event::LabConnection {
            device: device.to_string(),
            state: state.into(),
            missed,
            forwarded_to: forwarded.as_ref().ok().map(|a| a.to_string()),
            error: forwarded.err(),
        });
    };
    poll::start(
        w.plan.host_addr(),
        cfg.addrs.clone(),
        w.poll,
        Box::new(on_change),
    )
    .map_err(|e| {
        Error::failed(format!(
            "the emulated OVOC's SNMP poller on {}: {e}",
            w.plan.host_addr()
        ))
    })
}

/// REST for a WAN lab: the OVOC's address here, the devices' own addresses inside their
/// namespace, all on one port (a fresh namespace has every port free).
fn bind_wan(
    w: &wan::Wan,
    own: &[Ipv4Addr],
    ovoc_ip: Ipv4Addr,
    rest_port: u16,
) -> Result<(Vec<TcpListener>, u16)> {
    let (mut all, port) = bind_all(&[ovoc_ip], rest_port)?;
    let ns = w.device_ns_path();
    let devices = crate::sys::in_net_namespace(&ns, || {
        own.iter()
            .map(|a| {
                TcpListener::bind((*a, port))
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{a}:{port}: {e}")))
            })
            .collect::<std::io::Result<Vec<_>>>()
    })
    .map_err(|e| {
        Error::failed(format!(
            "binding the devices' REST listeners in {}: {e}",
            ns.display()
        ))
    })?;
    all.extend(devices);
    Ok((all, port))
}

/// Creates the lab directory and returns it absolute, as the files written there name it.
fn make_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::usage(format!("creating {}: {e}", dir.display())))?;
    dir.canonicalize()
        .map_err(|e| Error::usage(format!("{}: {e}", dir.display())))
}

fn wait_for_signal(interrupted: &AtomicBool) {
    while !interrupted.load(Ordering::Relaxed) && !crate::emit::stdout_broken() {
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Certificates {
    ca_path: PathBuf,
    /// The server configuration of each REST address (devices and OVOC).
    tls: HashMap<IpAddr, Arc<rustls::ServerConfig>>,
}

/// A lab CA (`ca.pem`), one leaf per device and one for the OVOC; each device's pin in `pins`.
fn issue_certificates(dir: &Path, cfg: &UpConfig) -> Result<Certificates> {
    let ca = pki::new_ca().map_err(Error::failed)?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem())
        .map_err(|e| Error::failed(format!("writing {}: {e}", ca_path.display())))?;
    let mut tls = HashMap::new();
    let mut pins = String::new();
    for (i, addr) in cfg.addrs.iter().enumerate() {
        let leaf = ca
            .leaf(IpAddr::V4(*addr), &format!("tc-lab-device-{i}"))
            .map_err(Error::failed)?;
        pins.push_str(&format!("{addr} {}\n", leaf.pin));
        // Served where the device listens: its own address (another one behind NAT).
        tls.insert(IpAddr::V4(cfg.own(*addr)), leaf.config);
    }
    let ovoc_leaf = ca
        .leaf(IpAddr::V4(cfg.ovoc_ip), "tc-lab-ovoc")
        .map_err(Error::failed)?;
    tls.insert(IpAddr::V4(cfg.ovoc_ip), ovoc_leaf.config);
    std::fs::write(dir.join("pins"), &pins)
        .map_err(|e| Error::failed(format!("writing pins: {e}")))?;
    Ok(Certificates { ca_path, tls })
}

/// Each device's capture file: real traffic when root, generated otherwise; padded on request.
fn capture_files(dir: &Path, cfg: &UpConfig) -> Result<HashMap<Ipv4Addr, Vec<u8>>> {
    let mut files = if let Some(w) = &cfg.wan {
        // Replaced by the live capture when a capture stops; until then, a few packets.
        let host = w.plan.host_addr();
        cfg.addrs
            .iter()
            .map(|a| (*a, super::pcap::synthetic(host, cfg.own(*a), 8, 0)))
            .collect()
    } else if is_root() && which(traffic::TCPDUMP) {
        traffic::capture_real(&cfg.addrs, dir).map_err(Error::failed)?
    } else {
        log::warn!("not root or no tcpdump: the lab's capture files hold generated packets");
        cfg.addrs
            .iter()
            .map(|a| (*a, super::pcap::synthetic(Ipv4Addr::LOCALHOST, *a, 8, 0)))
            .collect()
    };
    if cfg.capture_bytes > 0 {
        for (addr, f) in files.iter_mut() {
            super::pcap::pad_to(f, cfg.capture_bytes, Ipv4Addr::LOCALHOST, *addr);
        }
    }
    Ok(files)
}

/// The lab's credentials, new on every start; the env file hands them to the user.
struct Secrets {
    /// Admin (the lab user) and monitor, for REST and the SFTP login.
    auth: device::Auth,
    /// The SNMPv3 user the devices ship with here; CLI scripts change it.
    probe_user: device::SnmpUser,
    ovoc_password: Secret,
}

impl Secrets {
    fn new(user: &str) -> Secrets {
        Secrets {
            auth: device::Auth {
                admin_user: user.to_string(),
                admin_password: Secret::new(random_password()),
                monitor_user: "monitor".into(),
                monitor_password: Secret::new(random_password()),
            },
            probe_user: device::SnmpUser {
                name: "CaptureScript".into(),
                auth_protocol: "sha-1".into(),
                priv_protocol: "aes-128".into(),
                auth_key: Some(Secret::new(random_password())),
                priv_key: Some(Secret::new(random_password())),
            },
            ovoc_password: Secret::new(random_password()),
        }
    }
}

fn random_password() -> String {
    const ALNUM: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    (0..20)
        .map(|_| ALNUM[(crate::util::random_u64() % ALNUM.len() as u64) as usize] as char)
        .collect()
}

/// The SFTP side while it runs: a real sshd, optionally behind the connection-cutting proxy.
struct SftpSide {
    /// The port clients use (the proxy's when there is one).
    port: u16,
    /// `<sftp root>/lab-<port>`: one chroot per device and the OVOC's, removed on stop.
    chroot_root: PathBuf,
    /// `None` once stopped.
    sshd: Option<sshd::Sshd>,
    /// A WAN lab's second sshd, on the devices' side (`sshd` then serves the OVOC only).
    device_sshd: Option<sshd::Sshd>,
    proxy: Option<cutproxy::CutProxy>,
    /// Whether this lab created its system user (and so removes it on stop).
    created_user: bool,
    live_captures: bool,
    ovoc: OvocLogin,
    /// The lab directory and the login user, for the teardown.
    dir: PathBuf,
    user: String,
}

/// A start that fails after the SFTP side is up (binding REST, the poller...) still removes
/// the system user, the login key and the chroots.
impl Drop for SftpSide {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// What the SFTP side made for its logins, removed: the system user if it made it (else the
/// group it joined), the OVOC login key, the chroots and their record.
fn remove_logins(
    dir: &Path,
    chroot_root: &Path,
    user: &str,
    created_user: bool,
    joined: Option<&str>,
) {
    if created_user {
        // userdel also drops the user from every group it joined.
        if let Err(e) = sshd::remove_user(user) {
            crate::logging::warn_user(&format!("could not remove system user {user:?}: {e}"));
        }
    } else if let Some(g) = joined {
        if let Err(e) = sshd::leave_group(user, g) {
            crate::logging::warn_user(&format!("could not take {user:?} out of group {g:?}: {e}"));
        }
    }
    if let Err(e) = sshd::remove_login_key(dir) {
        crate::logging::warn_user(&format!("could not remove the OVOC login key: {e}"));
    }
    let _ = std::fs::remove_dir_all(chroot_root);
    let _ = std::fs::remove_file(dir.join(CHROOT_ROOT_FILE));
}

/// The emulated OVOC server's SFTP login: key only, at the agent's address, into the chroot
/// whose `captures/` is the agent's `--dir`.
struct OvocLogin {
    /// sshd's own port: the cutting proxy forwards the devices' addresses only.
    port: u16,
    /// The private key (mode 0600) in the lab directory.
    key: PathBuf,
    /// `<chroot_root>/<agent_ip>/captures` on the host; `/captures` over SFTP.
    agent_dir: PathBuf,
    /// The group the lab user joined to read tcpdump's files, if it was not a member before.
    joined: Option<String>,
}

/// What `tc lab cleanup --dir` reads to find the chroots of a lab that was killed.
pub const CHROOT_ROOT_FILE: &str = "chroot_root";

impl SftpSide {
    fn start(
        dir: &Path,
        cfg: &UpConfig,
        s: &SftpConfig,
        files: &HashMap<Ipv4Addr, Vec<u8>>,
        auth: &device::Auth,
    ) -> Result<SftpSide> {
        let port = if s.port == 0 { free_port()? } else { s.port };
        let sshd_port = if s.cut_after.is_some() {
            free_port()?
        } else {
            port
        };
        let spec = sshd::SshdSpec {
            dir: dir.to_path_buf(),
            port: sshd_port,
            user: cfg.user.clone(),
            chroot_root: s.root.join(format!("lab-{port}")),
            // sshd tells the devices apart by the address a login reached: their own.
            addrs: cfg.addrs.iter().map(|a| cfg.own(*a).to_string()).collect(),
            ovoc_addr: Some(cfg.agent_ip.to_string()),
            netns: None,
            client: None,
            ciphers: s.ciphers.clone(),
        };
        let by_name: HashMap<String, Vec<u8>> = files
            .iter()
            .map(|(a, f)| (cfg.own(*a).to_string(), f.clone()))
            .collect();
        // Written first, so a cleanup after a crash anywhere below finds the chroots.
        write_private(
            &dir.join(CHROOT_ROOT_FILE),
            &format!("{}\n", spec.chroot_root.display()),
        )?;
        sshd::prepare_chroots(&spec, &by_name)
            .map_err(|e| Error::failed(format!("preparing {}: {e}", spec.chroot_root.display())))?;
        let created_user = login_user(&cfg.user, &auth.admin_password)?;
        let started = (|| {
            let ovoc = OvocLogin::prepare(dir, &spec, sshd_port)?;
            write_known_hosts(dir, &spec, &cfg.addrs, port, sshd_port)?;
            let (sshd, device_sshd) = match &cfg.wan {
                Some(w) => start_wan_sshds(dir, &spec, w)?,
                None => (sshd::start(&spec).map_err(Error::failed)?, None),
            };
            let proxy = match s.cut_after {
                Some(cut) => Some(cut_proxy(&cfg.addrs, port, sshd_port, cut)?),
                None => None,
            };
            Ok((ovoc, sshd, device_sshd, proxy))
        })();
        // A start that failed half-way leaves no system user or chroot behind.
        let (ovoc, sshd, device_sshd, proxy) = match started {
            Ok(v) => v,
            Err(e) => {
                remove_logins(dir, &spec.chroot_root, &cfg.user, created_user, None);
                return Err(e);
            }
        };
        Ok(SftpSide {
            port,
            chroot_root: spec.chroot_root,
            sshd: Some(sshd),
            device_sshd,
            proxy,
            created_user,
            live_captures: s.live_captures,
            ovoc,
            dir: dir.to_path_buf(),
            user: cfg.user.clone(),
        })
    }

    fn stop(mut self) {
        self.teardown();
    }

    /// Once: what `stop` and `Drop` share.
    fn teardown(&mut self) {
        let Some(sshd) = self.sshd.take() else {
            return;
        };
        if let Some(p) = self.proxy.take() {
            p.shutdown();
        }
        sshd.stop();
        if let Some(d) = self.device_sshd.take() {
            d.stop();
        }
        remove_logins(
            &self.dir,
            &self.chroot_root,
            &self.user,
            self.created_user,
            self.ovoc.joined.as_deref(),
        );
    }

    /// Where device `ip` (its own address)'s capture file lives, for the live captures.
    fn capture_file(&self, ip: Ipv4Addr) -> PathBuf {
        self.chroot_root
            .join(ip.to_string())
            .join(sshd::CAPTURE_DIR)
            .join(sshd::CAPTURE_FILE)
    }
}

impl OvocLogin {
    /// A new key pair, the OVOC chroot with its authorized key and `captures/`, and the lab user
    /// in the group tcpdump's files belong to (the agent makes its DIR 0750 for that group).
    fn prepare(dir: &Path, spec: &sshd::SshdSpec, port: u16) -> Result<OvocLogin> {
        let (key, public) = sshd::generate_login_key(dir).map_err(Error::failed)?;
        let agent_dir = sshd::prepare_ovoc_chroot(spec, &public)
            .map_err(|e| Error::failed(format!("preparing the OVOC chroot: {e}")))?;
        let joined = match sshd::capture_group() {
            Some(g) => sshd::join_group(&spec.user, &g)
                .map_err(Error::failed)?
                .then_some(g),
            None => None,
        };
        Ok(OvocLogin {
            port,
            key,
            agent_dir,
            joined,
        })
    }
}

/// A WAN lab's two sshds on one port and one host key: the OVOC's here, the devices' inside
/// their namespace, taking logins from the OVOC side's address only.
fn start_wan_sshds(
    dir: &Path,
    spec: &sshd::SshdSpec,
    w: &super::config::WanConfig,
) -> Result<(sshd::Sshd, Option<sshd::Sshd>)> {
    let own_dir = dir.join("wan-sshd");
    std::fs::create_dir_all(&own_dir)
        .map_err(|e| Error::failed(format!("creating {}: {e}", own_dir.display())))?;
    sshd::copy_host_key(dir, &own_dir).map_err(Error::failed)?;
    let devices = sshd::SshdSpec {
        dir: own_dir,
        port: spec.port,
        user: spec.user.clone(),
        chroot_root: spec.chroot_root.clone(),
        addrs: spec.addrs.clone(),
        ovoc_addr: None,
        netns: Some(w.plan.device_ns()),
        client: Some(w.plan.host_addr()),
        ciphers: spec.ciphers.clone(),
    };
    let ovoc = sshd::SshdSpec {
        dir: spec.dir.clone(),
        port: spec.port,
        user: spec.user.clone(),
        chroot_root: spec.chroot_root.clone(),
        addrs: Vec::new(),
        ovoc_addr: spec.ovoc_addr.clone(),
        netns: None,
        client: None,
        ciphers: spec.ciphers.clone(),
    };
    let device_sshd = sshd::start(&devices).map_err(Error::failed)?;
    let sshd = sshd::start(&ovoc).map_err(Error::failed)?;
    Ok((sshd, Some(device_sshd)))
}

/// `known_hosts` for the devices (at the addresses and port clients use) and the OVOC address
/// (at sshd's).
fn write_known_hosts(
    dir: &Path,
    spec: &sshd::SshdSpec,
    public: &[Ipv4Addr],
    port: u16,
    sshd_port: u16,
) -> Result<()> {
    let pubkey = sshd::generate_host_key(dir).map_err(Error::failed)?;
    let public: Vec<String> = public.iter().map(|a| a.to_string()).collect();
    let mut text = sshd::known_hosts(&public, port, &pubkey);
    let ovoc: Vec<String> = spec.ovoc_addr.iter().cloned().collect();
    text.push_str(&sshd::known_hosts(&ovoc, sshd_port, &pubkey));
    std::fs::write(dir.join("known_hosts"), text)
        .map_err(|e| Error::failed(format!("writing known_hosts: {e}")))
}

/// The system user of the SFTP logins, with the lab's admin password; whether it was created
/// now (then the user is told, and it is removed on stop).
fn login_user(user: &str, password: &Secret) -> Result<bool> {
    let created = sshd::ensure_system_user(user).map_err(Error::failed)?;
    if created {
        crate::logging::warn_user(&format!(
            "created system user {user:?} for the lab's SFTP logins; it is removed when the lab stops \
             (or run: tc lab cleanup --user {user})"
        ));
    }
    sshd::set_password(user, password).map_err(Error::failed)?;
    Ok(created)
}

/// Every device's `port` forwarded to sshd's, each connection cut after `cut` bytes.
fn cut_proxy(
    addrs: &[Ipv4Addr],
    port: u16,
    sshd_port: u16,
    cut: u64,
) -> Result<cutproxy::CutProxy> {
    let pairs = addrs
        .iter()
        .map(|ad| {
            (
                SocketAddr::new(IpAddr::V4(*ad), port),
                SocketAddr::new(IpAddr::V4(*ad), sshd_port),
            )
        })
        .collect();
    cutproxy::start(pairs, cut).map_err(|e| Error::failed(format!("cut proxy: {e}")))
}

/// SNMPv3 for the probes: a real snmpd per device, on the first `SNMP_MAX` devices (and saying
/// so), answering `probe_user`; none when snmpd is missing or not root.
fn snmp_agents(
    dir: &Path,
    addrs: &[Ipv4Addr],
    probe_user: &device::SnmpUser,
    netns: Option<String>,
) -> Result<Option<snmpd::Agents>> {
    if !(is_root() && Path::new(snmpd::SNMPD).exists()) {
        crate::logging::warn_user(
            "snmpd not available (apt-get install snmpd): SNMP probes will not be answered",
        );
        return Ok(None);
    }
    if addrs.len() > SNMP_MAX {
        crate::logging::warn_user(&format!(
            "snmpd answers on the first {SNMP_MAX} devices only; SNMP probes to the others go unanswered"
        ));
    }
    let first: Vec<Ipv4Addr> = addrs.iter().take(SNMP_MAX).copied().collect();
    let users = std::slice::from_ref(probe_user);
    Ok(Some(
        snmpd::Agents::start(dir, &first, 161, users, netns).map_err(Error::failed)?,
    ))
}

/// REST listens on every device address and on the OVOC's.
fn rest_addrs(cfg: &UpConfig) -> Vec<Ipv4Addr> {
    let mut v = cfg.addrs.clone();
    v.push(cfg.ovoc_ip);
    v
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

/// HTTPS on every listener, each address with its own certificate.
fn serve_rest(
    listeners: Vec<TcpListener>,
    tls: HashMap<IpAddr, Arc<rustls::ServerConfig>>,
    lab: Arc<Lab>,
) -> Result<http::ServerHandle> {
    let tls = Arc::new(tls);
    let selector: http::TlsSelector =
        Arc::new(move |local: SocketAddr| tls.get(&local.ip()).cloned());
    http::serve(listeners, selector, lab).map_err(|e| Error::failed(format!("HTTPS: {e}")))
}

/// `devices.csv`: every device, as `tc cpe` and `tc session` read it.
fn write_inventory(
    dir: &Path,
    cfg: &UpConfig,
    rest_port: u16,
    ssh_port: Option<u16>,
) -> Result<PathBuf> {
    let entries: Vec<Entry> = cfg
        .addrs
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
                username: Some(cfg.user.clone()),
                ovoc: Some(cfg.agent_ip.to_string()),
                rest_port: Some(rest_port),
                ssh_port,
                pin_sha256: None,
            }
        })
        .collect();
    let inventory = dir.join("devices.csv");
    std::fs::write(&inventory, crate::inventory::to_csv(&entries))
        .map_err(|e| Error::failed(format!("writing {}: {e}", inventory.display())))?;
    Ok(inventory)
}

/// The env file a shell sources (mode 0600: it holds the passwords).
fn write_env(
    dir: &Path,
    cfg: &UpConfig,
    rest_port: u16,
    sftp: Option<&SftpSide>,
    secrets: &Secrets,
    ca_path: &Path,
    inventory: &Path,
) -> Result<PathBuf> {
    let env_path = dir.join("env");
    let mut env = String::from(
        "# tc lab credentials and trust settings: . this file, then run tc against the lab.\n",
    );
    let mut export = |k: &str, v: &str| env.push_str(&format!("export {k}={}\n", sh_quote(v)));
    let snmp = &secrets.probe_user;
    let key = |k: &Option<Secret>| {
        k.as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default()
    };
    export("TC_CPE_USER", &cfg.user);
    export("TC_CPE_PASSWORD", secrets.auth.admin_password.expose());
    export(
        "TC_LAB_MONITOR_PASSWORD",
        secrets.auth.monitor_password.expose(),
    );
    export("TC_CA_CERT", &ca_path.display().to_string());
    export("TC_SNMP_AUTH_KEY", &key(&snmp.auth_key));
    export("TC_SNMP_PRIV_KEY", &key(&snmp.priv_key));
    export(
        "TC_OVOC_URL",
        &format!("https://{}:{rest_port}/ovoc/v1", cfg.ovoc_ip),
    );
    export("TC_OVOC_USER", OVOC_USER);
    export("TC_OVOC_PASSWORD", secrets.ovoc_password.expose());
    export("TC_LAB_INVENTORY", &inventory.display().to_string());
    if let Some(s) = sftp {
        export(
            "TC_KNOWN_HOSTS",
            &dir.join("known_hosts").display().to_string(),
        );
        // The OVOC server's SFTP login (`tc ovoc fetch`, `tc session --collect-ovoc`).
        export("TC_OVOC_SSH_USER", &cfg.user);
        export("TC_OVOC_SSH_KEY", &s.ovoc.key.display().to_string());
        export("TC_OVOC_SSH_PORT", &s.ovoc.port.to_string());
        export("TC_OVOC_DIR", &format!("/{}", sshd::OVOC_CAPTURE_DIR));
        export("TC_LAB_AGENT_DIR", &s.ovoc.agent_dir.display().to_string());
    }
    if let Some(w) = &cfg.wan {
        // The agent's --interface: the OVOC side of the WAN.
        export("TC_LAB_OVOC_INTERFACE", &w.plan.host_if());
    }
    write_private(&env_path, &env)?;
    Ok(env_path)
}

/// `'...'` quoting for the env file: the only character that needs care inside is `'`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The REST side's state: every emulated device, the emulated OVOC, and what both share.
struct Lab {
    dir: PathBuf,
    /// Each device's address as clients know it, by the address it listens on (the same but
    /// behind a WAN lab's NAT).
    public: HashMap<IpAddr, IpAddr>,
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
    /// The devices (serials `TCLAB000001`...), the OVOC that knows them (its device list
    /// written to the lab directory for `tc lab alarm`), no device down.
    fn new(
        dir: &Path,
        cfg: &UpConfig,
        sftp: Option<&SftpSide>,
        snmp: Option<snmpd::Agents>,
        secrets: &Secrets,
    ) -> Result<Lab> {
        let ovoc_devices = ovoc_devices(&cfg.addrs);
        ovoc::write_devices(dir, &ovoc_devices)
            .map_err(|e| Error::failed(format!("writing OVOC devices: {e}")))?;
        let lab_ovoc = ovoc::LabOvoc::new(
            ovoc_devices,
            OVOC_USER,
            secrets.ovoc_password.clone(),
            dir.join(ovoc::RULES_FILE),
        );
        let _ = std::fs::remove_file(dir.join(DOWN_FILE));
        let at = live_where(cfg);
        let live = sftp.filter(|s| s.live_captures).map(|s| {
            live::Live::new(
                cfg.addrs
                    .iter()
                    .map(|ad| cfg.own(*ad))
                    .map(|own| (IpAddr::V4(own), s.capture_file(own)))
                    .collect(),
                at,
            )
        });
        let devices = cfg
            .addrs
            .iter()
            .enumerate()
            .map(|(i, ad)| {
                let serial = format!("TCLAB{:06}", i + 1);
                let own = cfg.own(*ad);
                let state = device::DeviceState::new(
                    &own.to_string(),
                    lab_kind(i as u32),
                    &serial,
                    cfg.busy_first,
                )
                .with_snmp_users(vec![secrets.probe_user.clone()]);
                (IpAddr::V4(own), Mutex::new(state))
            })
            .collect();
        let public = cfg
            .addrs
            .iter()
            .map(|a| (IpAddr::V4(cfg.own(*a)), IpAddr::V4(*a)))
            .collect();
        Ok(Lab {
            dir: dir.to_path_buf(),
            public,
            live,
            ovoc: lab_ovoc,
            ovoc_ip: IpAddr::V4(cfg.ovoc_ip),
            devices,
            auth: secrets.auth.clone(),
            snmp,
            latency: cfg.latency,
            log_requests: cfg.log_requests,
            requests: AtomicU64::new(0),
        })
    }

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

    /// One device's answer; its snmpd follows the SNMP users the request configured.
    fn device_answer(
        &self,
        ip: IpAddr,
        dev: &Mutex<device::DeviceState>,
        req: &http::Request,
    ) -> http::Response {
        let mut d = dev.lock().unwrap_or_else(|p| p.into_inner());
        let was = d.capture_active();
        let users = d.snmp_config().to_vec();
        let resp = device::handle(&mut d, &self.auth, req);
        if let Some(live) = &self.live {
            live.transition(ip, was, d.capture_active());
        }
        // As a real device: the new users answer SNMP before the script's reply is sent.
        if let (Some(snmp), IpAddr::V4(ip)) = (&self.snmp, ip) {
            if d.snmp_config() != users.as_slice() {
                if let Err(e) = snmp.provision(ip, d.snmp_config()) {
                    crate::logging::warn_user(&format!("{ip}: SNMP agent: {e}"));
                }
            }
        }
        resp
    }
}

/// Where the live captures record: the devices' side of a WAN, in the devices' clock.
fn live_where(cfg: &UpConfig) -> live::Where {
    let Some(w) = &cfg.wan else {
        return live::Where::default();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let clock = (w.clock_offset_ns != 0 || w.clock_drift_ppm != 0.0).then_some((
        w.clock_offset_ns,
        w.clock_drift_ppm,
        now,
    ));
    live::Where {
        netns: Some(w.plan.device_ns()),
        interface: Some(wan::DEVICE_IF.into()),
        clock,
    }
}

/// The OVOC's view of the devices: (id, address, name).
fn ovoc_devices(addrs: &[Ipv4Addr]) -> Vec<(u64, String, String)> {
    addrs
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
        .collect()
}

impl http::Handler for Lab {
    fn handle(&self, local: SocketAddr, peer: SocketAddr, req: &http::Request) -> http::Response {
        // The connection's thread calls this as soon as the request is read.
        let received = crate::timefmt::Utc::now();
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !self.latency.is_zero() {
            std::thread::sleep(self.latency);
        }
        if local.ip() == self.ovoc_ip {
            return self.ovoc.handle(local, peer, req);
        }
        let Some(dev) = self.devices.get(&local.ip()) else {
            return http::Response::empty(404);
        };
        let device = self.public.get(&local.ip()).copied().unwrap_or(local.ip());
        if let Some(left) = self.down_for(device) {
            // Unreachable: no answer within any sane client timeout.
            std::thread::sleep(left.min(Duration::from_secs(30)));
            return http::Response::empty(503);
        }
        let resp = self.device_answer(local.ip(), dev, req);
        if self.log_requests {
            emit(&Event::LabRequest {
                device: device.to_string(),
                method: req.method.clone(),
                path: req.path.clone(),
                status: resp.status,
                user: req.basic_auth().map(|(u, _)| u),
                received: received.rfc3339(),
            });
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn ovoc_names_alternate_like_the_devices() {
        let addrs: Vec<Ipv4Addr> = (0..3).map(|i| super::super::lab_addr(1, i)).collect();
        assert_eq!(
            ovoc_devices(&addrs),
            vec![
                (1000, "127.0.1.1".into(), "lab-msbr-1".into()),
                (1001, "127.0.1.2".into(), "lab-sbc-2".into()),
                (1002, "127.0.1.3".into(), "lab-msbr-3".into()),
            ]
        );
    }
}
