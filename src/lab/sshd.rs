//! The lab's SFTP side: one real OpenSSH `sshd` serving every emulated device's
//! `/debug-capture/debug-capture-data.pcap`.
//!
//! One daemon listens on `0.0.0.0:<port>` and chroots each login by the local address the client
//! connected to (`Match LocalAddress`), so a thousand 127.x.y.z devices need one process and no
//! 16-`ListenAddress` limit. Invariants:
//! - only the lab user may log in, only from loopback, only to `internal-sftp`: the lab never
//!   offers a login to the network;
//! - device addresses take a password only; the OVOC address (the agent's, whose capture
//!   directory is one more chroot) takes the lab's generated key only, as a real OVOC server's
//!   fetch logs in by key;
//! - a connection to an address without its own `Match` block lands in an empty chroot;
//! - every chroot path component is root-owned and not group/world-writable (sshd's rule), which
//!   `check_chroot_path` verifies up front instead of letting each login fail in the log;
//! - the password goes to `chpasswd` on stdin only, never argv, logs or error text;
//! - children run with a scrubbed environment, so the caller's `TC_*` secrets do not leak into
//!   sshd or the account tools.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::secret::Secret;

pub const SSHD: &str = "/usr/sbin/sshd";
/// Where a real device keeps its capture, relative to the SFTP root.
pub const CAPTURE_DIR: &str = "debug-capture";
pub const CAPTURE_FILE: &str = "debug-capture-data.pcap";
/// The agent's `--dir` inside the OVOC chroot: `/captures` as the SFTP login sees it.
pub const OVOC_CAPTURE_DIR: &str = "captures";
const HOST_KEY: &str = "ssh_host_ed25519_key";
/// The OVOC login's key pair in the lab directory, new on every start.
pub const LOGIN_KEY: &str = "ovoc_login_ed25519_key";
/// In the chroot root, not the lab directory: sshd reads it as the lab user and (StrictModes)
/// wants every directory above it root-owned and not group/world-writable, which the chroot
/// root already is and a lab directory under /tmp (0700, in a 1777 parent) is not.
const AUTHORIZED_KEYS: &str = "ovoc_authorized_keys";
const PRIVSEP_DIR: &str = "/run/sshd";
const CHILD_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
const START_TIMEOUT: Duration = Duration::from_secs(5);
const STOP_GRACE: Duration = Duration::from_secs(3);

pub struct SshdSpec {
    /// Lab directory: config, host key, pid file, log.
    pub dir: PathBuf,
    pub port: u16,
    pub user: String,
    /// Holds `empty/`, one `<addr>/` chroot per device and the OVOC's, and the OVOC login's
    /// authorized keys.
    pub chroot_root: PathBuf,
    pub addrs: Vec<String>,
    /// The emulated OVOC server's SFTP address: key login only, into `<chroot_root>/<addr>`.
    pub ovoc_addr: Option<String>,
    /// The network namespace sshd runs in (the WAN lab's devices' side), if not this one.
    pub netns: Option<String>,
    /// The one client address logins may come from; default any loopback address.
    pub client: Option<std::net::Ipv4Addr>,
    /// sshd_config's Ciphers ([`check_ciphers`]); `None` for sshd's defaults.
    pub ciphers: Option<String>,
}

/// The sshd_config for `spec`. Pure; `start` validates the spec first, so every path and
/// address here is representable in sshd's config syntax.
pub fn render_config(spec: &SshdSpec) -> String {
    let dir = &spec.dir;
    let root = &spec.chroot_root;
    let mut c = String::new();
    c.push_str("# Written by `tc lab`: one sshd serving every emulated device over SFTP.\n");
    c.push_str("ListenAddress 0.0.0.0\n");
    c.push_str(&format!("Port {}\n", spec.port));
    c.push_str(&format!("HostKey {}\n", quote(&dir.join(HOST_KEY))));
    c.push_str(&format!("PidFile {}\n", quote(&dir.join("sshd.pid"))));
    c.push_str(
        "UsePAM no\n\
         PasswordAuthentication yes\n\
         PermitEmptyPasswords no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication no\n\
         AuthorizedKeysFile none\n\
         PermitRootLogin no\n",
    );
    // The host part matches the client address (UseDNS is off): loopback clients only, or the
    // WAN lab's OVOC side.
    let client = spec.client.map_or("127.*".to_string(), |a| a.to_string());
    c.push_str(&format!("AllowUsers {}@{client}\n", spec.user));
    if let Some(list) = &spec.ciphers {
        c.push_str(&format!("Ciphers {list}\n"));
    }
    c.push_str(
        "AllowTcpForwarding no\n\
         AllowAgentForwarding no\n\
         AllowStreamLocalForwarding no\n\
         GatewayPorts no\n\
         PermitTunnel no\n\
         X11Forwarding no\n\
         PermitTTY no\n\
         PermitUserRC no\n\
         UseDNS no\n\
         LoginGraceTime 30\n",
    );
    // Tests fetch 50+ devices at once; the defaults (10:30:100, 10 sessions) would drop them.
    c.push_str("MaxStartups 1000:30:2000\nMaxSessions 100\n");
    c.push_str("Subsystem sftp internal-sftp\nForceCommand internal-sftp\n");
    c.push_str(&format!("ChrootDirectory {}\n", quote(&root.join("empty"))));
    for addr in &spec.addrs {
        c.push_str(&format!("\nMatch LocalAddress {addr}\n"));
        c.push_str(&format!(
            "    ChrootDirectory {}\n",
            quote(&root.join(addr))
        ));
    }
    if let Some(addr) = &spec.ovoc_addr {
        c.push_str(&ovoc_block(spec, addr));
    }
    c
}

/// The OVOC address's block: the globals say password and no key, this says the reverse, so a
/// device password never opens the OVOC's captures and the OVOC key never opens a device.
fn ovoc_block(spec: &SshdSpec, addr: &str) -> String {
    let root = &spec.chroot_root;
    format!(
        "\nMatch LocalAddress {addr}\n    \
         ChrootDirectory {}\n    \
         PasswordAuthentication no\n    \
         PubkeyAuthentication yes\n    \
         AuthorizedKeysFile {}\n    \
         AuthenticationMethods publickey\n",
        quote(&root.join(addr)),
        quote(&authorized_keys_path(spec)),
    )
}

pub fn authorized_keys_path(spec: &SshdSpec) -> PathBuf {
    spec.chroot_root.join(AUTHORIZED_KEYS)
}

/// The agent's `--dir` on the host: `<chroot_root>/<ovoc addr>/captures`.
pub fn ovoc_capture_dir(spec: &SshdSpec) -> Option<PathBuf> {
    let addr = spec.ovoc_addr.as_ref()?;
    Some(spec.chroot_root.join(addr).join(OVOC_CAPTURE_DIR))
}

/// Check sshd's `ChrootDirectory` rule on every existing component of `p`: owned by root and not
/// writable by group or others. Components that do not exist yet are skipped (they will be
/// created root-owned 0755).
pub fn check_chroot_path(p: &Path) -> Result<(), String> {
    if !p.is_absolute() {
        return Err(format!("chroot path {} is not absolute", p.display()));
    }
    let mut cur = PathBuf::new();
    for comp in p.components() {
        cur.push(comp);
        // sshd resolves symlinks before checking, so follow them as it does.
        let md = match fs::metadata(&cur) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(format!("chroot path component {}: {e}", cur.display())),
        };
        let bad = if !md.is_dir() {
            Some("is not a directory".to_string())
        } else if md.uid() != 0 {
            Some(format!("is owned by uid {}", md.uid()))
        } else if md.mode() & 0o022 != 0 {
            Some(format!(
                "has mode {:04o} (group or world writable)",
                md.mode() & 0o7777
            ))
        } else {
            None
        };
        if let Some(why) = bad {
            return Err(format!(
                "chroot path component {} {why}: sshd's ChrootDirectory requires every component \
                 of the path to be a root-owned directory not writable by group or others (else \
                 every login fails with \"bad ownership or modes for chroot directory \
                 component\"); put the lab under a root-owned 0755 directory such as /var/lib/tc-lab",
                cur.display()
            ));
        }
    }
    Ok(())
}

/// Lay out `<chroot_root>/<addr>/debug-capture/debug-capture-data.pcap` for every address in
/// `files` (directories root-owned 0755, file 0644), plus the empty global chroot
/// `<chroot_root>/empty`. Addresses of the spec without an entry in `files` get their
/// directories only. A file is replaced atomically so a concurrent fetch never sees half of it.
pub fn prepare_chroots(spec: &SshdSpec, files: &HashMap<String, Vec<u8>>) -> std::io::Result<()> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    for addr in files.keys() {
        if !spec.addrs.contains(addr) {
            return Err(invalid(format!(
                "capture for {addr}, which is not one of the lab's addresses"
            )));
        }
    }
    for addr in &spec.addrs {
        check_addr(addr).map_err(invalid)?;
    }
    root_dir(&spec.chroot_root)?;
    root_dir(&spec.chroot_root.join("empty"))?;
    for addr in &spec.addrs {
        let dev = spec.chroot_root.join(addr);
        root_dir(&dev)?;
        root_dir(&dev.join(CAPTURE_DIR))?;
        if let Some(bytes) = files.get(addr) {
            let path = capture_file_path(spec, addr);
            let tmp = path.with_extension("pcap.tmp");
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.set_permissions(fs::Permissions::from_mode(0o644))?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)?;
        }
    }
    Ok(())
}

pub fn capture_file_path(spec: &SshdSpec, addr: &str) -> PathBuf {
    spec.chroot_root
        .join(addr)
        .join(CAPTURE_DIR)
        .join(CAPTURE_FILE)
}

/// Lay out the OVOC chroot `<chroot_root>/<ovoc addr>/` (root-owned 0755, as sshd requires)
/// with an empty `captures/` for the agent to take over (it chowns it to tcpdump's user), and
/// write `authorized_public_key` (one `type base64` line) as the OVOC login's only key
/// (root-owned 0644: sshd reads it as the lab user). Returns the captures directory.
pub fn prepare_ovoc_chroot(
    spec: &SshdSpec,
    authorized_public_key: &str,
) -> std::io::Result<PathBuf> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    let addr = spec
        .ovoc_addr
        .as_ref()
        .ok_or_else(|| invalid("no OVOC address in the sshd spec".into()))?;
    check_addr(addr).map_err(invalid)?;
    if authorized_public_key.trim().is_empty() || authorized_public_key.trim().contains('\n') {
        return Err(invalid("the OVOC login key must be one line".into()));
    }
    root_dir(&spec.chroot_root)?;
    root_dir(&spec.chroot_root.join(addr))?;
    let captures = ovoc_capture_dir(spec).expect("an OVOC address");
    fs::create_dir_all(&captures)?;
    let keys = authorized_keys_path(spec);
    let tmp = keys.with_extension("tmp");
    fs::write(&tmp, format!("{}\n", authorized_public_key.trim()))?;
    std::os::unix::fs::chown(&tmp, Some(0), Some(0))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
    fs::rename(&tmp, &keys)?;
    Ok(captures)
}

/// A new key pair `<dir>/ovoc_login_ed25519_key{,.pub}` for the OVOC login, replacing any from
/// an earlier start (a key the last lab handed out opens nothing now); returns the private
/// key's path (mode 0600) and the public line ("ssh-ed25519 AAAA...", without comment).
/// ed25519 in OpenSSH's format: the fetch's libssh2 (1.11, vendored OpenSSL 3) logs in with it,
/// as the lab_ovoc integration test and `real_sshd_serves_each_device_its_own_file` check.
pub fn generate_login_key(dir: &Path) -> Result<(PathBuf, String), String> {
    let key = dir.join(LOGIN_KEY);
    let public = dir.join(format!("{LOGIN_KEY}.pub"));
    remove_login_key(dir).map_err(|e| format!("removing the old {}: {e}", key.display()))?;
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", "tc-lab-ovoc", "-f"])
        .arg(&key);
    run_tool(cmd, None, &format!("ssh-keygen -f {}", key.display()))?;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let line =
        fs::read_to_string(&public).map_err(|e| format!("read {}: {e}", public.display()))?;
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some(kind @ "ssh-ed25519"), Some(b64)) => Ok((key, format!("{kind} {b64}"))),
        _ => Err(format!(
            "{}: not an ssh-ed25519 public key",
            public.display()
        )),
    }
}

/// Delete the OVOC login's key pair, if there is one.
pub fn remove_login_key(dir: &Path) -> std::io::Result<()> {
    for name in [LOGIN_KEY.to_string(), format!("{LOGIN_KEY}.pub")] {
        match fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The group that may read the agent's captures: the primary group of tcpdump's user (the
/// agent's default `-Z` user), to which `tc ovoc serve` gives its DIR (0750). `None` when there
/// is no such user (the agent then runs tcpdump as root and its files are world-readable).
pub fn capture_group() -> Option<String> {
    let (_, gid) = crate::sys::user_ids("tcpdump")?;
    group_entry(&fs::read_to_string("/etc/group").ok()?, gid).map(|(name, _)| name)
}

/// Make `user` a supplementary member of `group` (`usermod -a -G`), so its SFTP logins can
/// enter a directory only that group may read. Returns whether it was added now (not a member
/// before), so the caller can undo exactly that.
pub fn join_group(user: &str, group: &str) -> Result<bool, String> {
    check_user_name(user)?;
    check_user_name(group)?;
    let members = fs::read_to_string("/etc/group")
        .ok()
        .and_then(|text| {
            let gid = crate::sys::group_id(group)?;
            group_entry(&text, gid).map(|(_, m)| m)
        })
        .ok_or_else(|| format!("no group {group:?} in /etc/group"))?;
    if members.iter().any(|m| m == user) {
        return Ok(false);
    }
    let mut cmd = Command::new("usermod");
    cmd.args(["-a", "-G", group, "--", user]);
    run_tool(cmd, None, &format!("usermod -a -G {group} {user}"))?;
    Ok(true)
}

/// Undo `join_group` (`gpasswd -d`, which every shadow-utils has; `usermod -r` is newer).
pub fn leave_group(user: &str, group: &str) -> Result<(), String> {
    check_user_name(user)?;
    check_user_name(group)?;
    let mut cmd = Command::new("gpasswd");
    cmd.args(["-d", user, group]);
    run_tool(cmd, None, &format!("gpasswd -d {user} {group}"))
}

/// `/etc/group`'s entry for `gid`: its name and supplementary members.
fn group_entry(text: &str, gid: u32) -> Option<(String, Vec<String>)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || f[2].parse::<u32>().ok()? != gid {
            return None;
        }
        let members = f[3]
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect();
        Some((f[0].to_string(), members))
    })
}

/// Create the lab's login account if it does not exist. Returns whether it was created now, so
/// the caller can tell the user and offer to remove it.
pub fn ensure_system_user(name: &str) -> Result<bool, String> {
    check_user_name(name)?;
    if user_exists(name)? {
        return Ok(false);
    }
    let mut cmd = Command::new("useradd");
    cmd.args([
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        "--",
        name,
    ]);
    run_tool(cmd, None, &format!("useradd {name}"))?;
    Ok(true)
}

/// Set the account's password through `chpasswd`'s stdin.
pub fn set_password(user: &str, password: &Secret) -> Result<(), String> {
    check_user_name(user)?;
    let pw = password.expose();
    if pw.is_empty() || pw.contains(['\n', '\r', '\0']) {
        return Err(format!(
            "password for {user} must be non-empty and on one line"
        ));
    }
    let line = format!("{user}:{pw}\n");
    run_tool(
        Command::new("chpasswd"),
        Some((&line, pw)),
        &format!("chpasswd for {user}"),
    )
}

/// Delete the account if it exists; returns whether it existed.
pub fn remove_user(name: &str) -> Result<bool, String> {
    check_user_name(name)?;
    if !user_exists(name)? {
        return Ok(false);
    }
    let mut cmd = Command::new("userdel");
    cmd.args(["--", name]);
    run_tool(cmd, None, &format!("userdel {name}"))?;
    Ok(true)
}

/// Create `<dir>/ssh_host_ed25519_key` unless it exists, and return its public key line
/// ("ssh-ed25519 AAAA...", without comment). Reusing the key keeps known_hosts valid across
/// lab restarts.
pub fn generate_host_key(dir: &Path) -> Result<String, String> {
    let key = dir.join(HOST_KEY);
    let public = dir.join(format!("{HOST_KEY}.pub"));
    if !key.exists() {
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", "tc-lab", "-f"])
            .arg(&key);
        run_tool(cmd, None, &format!("ssh-keygen -f {}", key.display()))?;
    }
    let line = match fs::read_to_string(&public) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A key without its .pub (copied, or .pub deleted): derive it instead of replacing the
            // key, which would invalidate every known_hosts entry.
            let mut cmd = Command::new("ssh-keygen");
            cmd.args(["-y", "-f"]).arg(&key);
            let out = output_of(cmd, &format!("ssh-keygen -y -f {}", key.display()))?;
            String::from_utf8_lossy(&out).into_owned()
        }
        Err(e) => return Err(format!("read {}: {e}", public.display())),
    };
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some(kind @ "ssh-ed25519"), Some(b64)) => Ok(format!("{kind} {b64}")),
        _ => Err(format!(
            "{}: not an ssh-ed25519 public key",
            public.display()
        )),
    }
}

/// The sshd a killed lab left running from `dir` (its pid file, and only if that process runs
/// sshd with `dir`'s config: a reused PID is left alone).
pub fn stop_leftover(dir: &Path) {
    let Some(pid) = fs::read_to_string(dir.join("sshd.pid"))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return;
    };
    let config = dir.join("sshd_config");
    // sshd rewrites its command line ("sshd: /usr/sbin/sshd -D -e -f <config> [listener]"),
    // so look for the config's path in it rather than for an argument.
    let needle = config.as_os_str().as_encoded_bytes();
    let ours = fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle));
    if ours {
        let _ = crate::sys::terminate(pid);
        eprintln!("tc: stopped the lab's sshd (pid {pid})");
    }
}

/// `from`'s host key pair into `to` (mode 0600 for the private half), so a second daemon shows
/// clients the key their known_hosts already holds.
pub fn copy_host_key(from: &Path, to: &Path) -> Result<(), String> {
    generate_host_key(from)?;
    for name in [HOST_KEY.to_string(), format!("{HOST_KEY}.pub")] {
        let (src, dst) = (from.join(&name), to.join(&name));
        fs::copy(&src, &dst)
            .map_err(|e| format!("copy {} to {}: {e}", src.display(), dst.display()))?;
    }
    fs::set_permissions(to.join(HOST_KEY), fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", to.join(HOST_KEY).display()))
}

/// known_hosts lines for every lab address: `[addr]:port key`, or plain `addr key` on port 22
/// (OpenSSH's own spelling, so clients match either way).
pub fn known_hosts(addrs: &[String], port: u16, pubkey: &str) -> String {
    let key = pubkey.trim();
    let mut out = String::new();
    for addr in addrs {
        if port == 22 {
            out.push_str(&format!("{addr} {key}\n"));
        } else {
            out.push_str(&format!("[{addr}]:{port} {key}\n"));
        }
    }
    out
}

/// A running lab sshd. Dropping it stops it.
pub struct Sshd {
    child: Option<Child>,
    #[cfg_attr(not(test), allow(dead_code))]
    pid: u32,
    pid_file: PathBuf,
    #[cfg_attr(not(test), allow(dead_code))]
    host_key: String,
}

impl Sshd {
    /// SIGTERM, then SIGKILL after 3 s. Sessions still open keep their own (setsid'ed)
    /// processes until the client disconnects, as with any sshd restart.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    #[cfg(test)]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The daemon's public host key ("ssh-ed25519 AAAA..."), for `known_hosts`.
    #[cfg(test)]
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    fn stop_inner(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        terminate(&mut child, "sshd");
        let _ = fs::remove_file(&self.pid_file);
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Write `<dir>/sshd_config`, validate it with `sshd -t`, start `sshd -D -e` (log in
/// `<dir>/sshd.log`) and wait until it listens. Creates the host key if missing; the chroots
/// must already exist (`prepare_chroots`).
pub fn start(spec: &SshdSpec) -> Result<Sshd, String> {
    validate_spec(spec)?;
    check_chroots(spec)?;
    let host_key = generate_host_key(&spec.dir)?;
    let config = write_config(spec)?;
    let log_path = spec.dir.join("sshd.log");
    let child = spawn_daemon(&config, &log_path, spec.netns.as_deref())?;
    let pid = child.id();
    let mut sshd = Sshd {
        child: Some(child),
        pid,
        pid_file: spec.dir.join("sshd.pid"),
        host_key,
    };
    sshd.wait_listening(spec, &log_path)?;
    log::debug!("lab sshd pid {pid} listening on port {}", spec.port);
    Ok(sshd)
}

/// The global empty chroot, every device's and the OVOC's exist and follow sshd's rule, and the
/// OVOC login has its key, so that no login fails later with a message only the log shows.
fn check_chroots(spec: &SshdSpec) -> Result<(), String> {
    check_chroot_path(&spec.chroot_root.join("empty"))?;
    for addr in spec.addrs.iter().chain(&spec.ovoc_addr) {
        let dir = spec.chroot_root.join(addr);
        if !dir.is_dir() {
            return Err(format!(
                "chroot {} does not exist (prepare_chroots first)",
                dir.display()
            ));
        }
        check_chroot_path(&dir)?;
    }
    if spec.ovoc_addr.is_some() {
        let keys = authorized_keys_path(spec);
        if !keys.is_file() {
            return Err(format!(
                "{} does not exist (prepare_ovoc_chroot first)",
                keys.display()
            ));
        }
    }
    Ok(())
}

/// `<dir>/sshd_config`, checked by `sshd -t`.
fn write_config(spec: &SshdSpec) -> Result<PathBuf, String> {
    let config = spec.dir.join("sshd_config");
    fs::write(&config, render_config(spec))
        .map_err(|e| format!("write {}: {e}", config.display()))?;
    // sshd refuses to start without its privilege-separation directory (normally made by the
    // distribution's service unit, which a lab does not run).
    root_dir(Path::new(PRIVSEP_DIR)).map_err(|e| format!("create {PRIVSEP_DIR}: {e}"))?;
    let mut test = Command::new(SSHD);
    test.arg("-t").arg("-f").arg(&config);
    run_tool(test, None, &format!("{SSHD} -t -f {}", config.display()))?;
    Ok(config)
}

/// `sshd -D -e -f <config>`, its stdout and stderr in `log_path`.
fn spawn_daemon(config: &Path, log_path: &Path, netns: Option<&str>) -> Result<Child, String> {
    let log =
        fs::File::create(log_path).map_err(|e| format!("create {}: {e}", log_path.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut cmd = match netns {
        Some(ns) => super::wan::command_in(ns, SSHD),
        None => Command::new(SSHD),
    };
    cmd.arg("-D").arg("-e").arg("-f").arg(config);
    scrub_env(&mut cmd);
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    cmd.spawn().map_err(|e| format!("start {SSHD}: {e}"))
}

impl Sshd {
    /// Until sshd accepts on the first address, within `START_TIMEOUT`; stops it if not.
    fn wait_listening(&mut self, spec: &SshdSpec, log_path: &Path) -> Result<(), String> {
        let first: IpAddr = spec
            .addrs
            .first()
            .map_or(Ok(IpAddr::from([127, 0, 0, 1])), |a| {
                a.parse().map_err(|_| format!("invalid address {a:?}"))
            })?;
        let target = SocketAddr::new(first, spec.port);
        // Wait for sshd's own "Server listening" line as well as a TCP accept: a port held by
        // another process would accept while our sshd dies with "Address already in use".
        let listening = format!("Server listening on 0.0.0.0 port {}", spec.port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("not stopped yet");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "sshd exited during start-up ({status}): {}",
                    log_tail(log_path)
                ));
            }
            let said = fs::read_to_string(log_path)
                .map(|l| l.contains(&listening))
                .unwrap_or(false);
            // In another namespace the address may not be reachable from here (behind NAT):
            // sshd's own line, with the process alive, is the sign there.
            let accepts = spec.netns.is_some()
                || TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok();
            if said && accepts {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tail = log_tail(log_path);
                self.stop_inner();
                return Err(format!(
                    "sshd did not accept on {target} within {START_TIMEOUT:?}: {tail}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// SIGTERM, wait up to `STOP_GRACE`, then SIGKILL; always reaps.
pub(crate) fn terminate(child: &mut Child, what: &str) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // Our own not-yet-reaped child, so the pid cannot have been reused.
    let _ = crate::sys::terminate(child.id());
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    log::warn!(
        "{what} (pid {}) ignored SIGTERM for {STOP_GRACE:?}; killing it",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn validate_spec(spec: &SshdSpec) -> Result<(), String> {
    if spec.port == 0 {
        return Err("sshd port must not be 0".into());
    }
    check_user_name(&spec.user)?;
    if let Some(list) = &spec.ciphers {
        check_ciphers(list)?;
    }
    for p in [&spec.dir, &spec.chroot_root] {
        check_config_path(p)?;
    }
    for addr in &spec.addrs {
        check_addr(addr)?;
    }
    if let Some(addr) = &spec.ovoc_addr {
        check_addr(addr)?;
        if spec.addrs.contains(addr) {
            return Err(format!(
                "OVOC address {addr} is also a device's: one address, one chroot"
            ));
        }
    }
    Ok(())
}

/// sshd_config has no escape for `"` and expands `%` tokens in ChrootDirectory; rather than
/// half-support them, refuse such paths with a clear message.
pub(crate) fn check_config_path(p: &Path) -> Result<(), String> {
    let s = p
        .to_str()
        .ok_or_else(|| format!("path {} is not UTF-8", p.display()))?;
    if !p.is_absolute() {
        return Err(format!("path {s} must be absolute"));
    }
    if s.chars()
        .any(|c| c.is_control() || c == '"' || c == '%' || c == '\\')
    {
        return Err(format!(
            "path {s:?} contains a character sshd_config cannot hold (\", %, \\ or a control)"
        ));
    }
    Ok(())
}

/// An address is a path component and a config token, so only a literal IP is accepted.
fn check_addr(addr: &str) -> Result<(), String> {
    addr.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| format!("lab address {addr:?} is not an IP address"))
}

/// The portable POSIX user-name subset; also keeps names from looking like options.
/// `--ssh-ciphers`: names as sshd_config spells them (letters, digits, `-`, `.`, `@`), comma
/// separated; whether sshd knows each is for sshd to say when it starts.
pub(crate) fn check_ciphers(list: &str) -> Result<String, String> {
    let name = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.@".contains(&b))
    };
    match list.split(',').find(|c| !name(c)) {
        Some(bad) => Err(format!(
            "invalid --ssh-ciphers {list:?}: {bad:?} is not a cipher name (e.g. aes128-ctr,aes256-gcm@openssh.com)"
        )),
        None => Ok(list.to_string()),
    }
}

pub(crate) fn check_user_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && name.len() <= 32 {
        Ok(())
    } else {
        Err(format!(
            "invalid user name {name:?}: use lowercase letters, digits, _ and -"
        ))
    }
}

fn quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.contains(|c: char| c.is_whitespace() || c == '#') {
        format!("\"{s}\"")
    } else {
        s
    }
}

fn user_exists(name: &str) -> Result<bool, String> {
    Ok(crate::sys::user_ids(name).is_some())
}

fn scrub_env(cmd: &mut Command) {
    cmd.env_clear().env("PATH", CHILD_PATH).env("LC_ALL", "C");
}

/// Run an account or key tool; on failure the error names it and carries its stderr. `stdin`
/// is `(text, secret_in_it)`: the secret is blanked from any output quoted in the error.
pub(super) fn run_tool(
    mut cmd: Command,
    stdin: Option<(&str, &str)>,
    what: &str,
) -> Result<(), String> {
    scrub_env(&mut cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if let Some((text, _)) = stdin {
        let mut pipe = child.stdin.take().expect("piped");
        let res = pipe.write_all(text.as_bytes());
        drop(pipe);
        if let Err(e) = res {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what}: write to stdin: {e}"));
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if msg.is_empty() {
        msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    if let Some((_, secret)) = stdin {
        if !secret.is_empty() {
            msg = msg.replace(secret, "[redacted]");
        }
    }
    Err(format!("{what} failed ({}): {msg}", out.status))
}

pub(super) fn output_of(mut cmd: Command, what: &str) -> Result<Vec<u8>, String> {
    scrub_env(&mut cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Create a directory (and parents) and make it root-owned 0755, as sshd requires of chroots.
fn root_dir(p: &Path) -> std::io::Result<()> {
    fs::create_dir_all(p)?;
    let md = fs::metadata(p)?;
    if md.uid() != 0 || md.gid() != 0 {
        std::os::unix::fs::chown(p, Some(0), Some(0))?;
    }
    if md.mode() & 0o7777 != 0o755 {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn log_tail(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join(" | ");
    if tail.is_empty() {
        format!("(nothing in {})", path.display())
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &str, root: &str, addrs: &[&str]) -> SshdSpec {
        SshdSpec {
            dir: PathBuf::from(dir),
            port: 2222,
            user: "tclab".into(),
            chroot_root: PathBuf::from(root),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            ovoc_addr: None,
            netns: None,
            client: None,
            ciphers: None,
        }
    }

    fn with_ovoc(mut s: SshdSpec, addr: &str) -> SshdSpec {
        s.ovoc_addr = Some(addr.into());
        s
    }

    #[test]
    fn config_has_the_essentials_in_order() {
        let c = render_config(&spec(
            "/var/lib/tc-lab",
            "/var/lib/tc-lab/root",
            &["127.0.1.1", "127.0.1.2"],
        ));
        for line in [
            "ListenAddress 0.0.0.0",
            "Port 2222",
            "HostKey /var/lib/tc-lab/ssh_host_ed25519_key",
            "PidFile /var/lib/tc-lab/sshd.pid",
            "UsePAM no",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication no",
            "PermitRootLogin no",
            "AllowUsers tclab@127.*",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PermitTTY no",
            "MaxStartups 1000:30:2000",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "ForceCommand internal-sftp",
            "ChrootDirectory /var/lib/tc-lab/root/empty",
            "Match LocalAddress 127.0.1.1",
            "    ChrootDirectory /var/lib/tc-lab/root/127.0.1.1",
            "Match LocalAddress 127.0.1.2",
            "    ChrootDirectory /var/lib/tc-lab/root/127.0.1.2",
        ] {
            assert!(c.lines().any(|l| l == line), "missing {line:?} in\n{c}");
        }
        // sshd applies only Match-able keywords after the first Match: every global line first.
        let first_match = c.find("\nMatch ").unwrap();
        assert!(c.find("ForceCommand").unwrap() < first_match);
        assert!(
            c.find("ChrootDirectory /var/lib/tc-lab/root/empty")
                .unwrap()
                < first_match
        );
        assert_eq!(c.matches("Match LocalAddress").count(), 2);
        assert!(!c.contains("Ciphers"), "sshd's own defaults unless asked");
        let only = SshdSpec {
            ciphers: Some("aes128-ctr,aes256-cbc".into()),
            ..spec("/a", "/b", &["127.0.1.1"])
        };
        let c = render_config(&only);
        assert!(
            c.lines().any(|l| l == "Ciphers aes128-ctr,aes256-cbc"),
            "{c}"
        );
        assert!(
            c.find("Ciphers").unwrap() < c.find("\nMatch ").unwrap(),
            "a global line"
        );
    }

    /// Each address's block as (address, its indented lines), in order.
    fn match_blocks(c: &str) -> Vec<(String, Vec<String>)> {
        let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
        for l in c.lines() {
            if let Some(a) = l.strip_prefix("Match LocalAddress ") {
                blocks.push((a.to_string(), Vec::new()));
            } else if let (Some(b), Some(inner)) = (blocks.last_mut(), l.strip_prefix("    ")) {
                b.1.push(inner.to_string());
            }
        }
        blocks
    }

    #[test]
    fn config_ovoc_address_takes_the_key_only_and_devices_the_password_only() {
        let root = "/var/lib/tc-lab/root";
        // (spec, each Match block: its address and indented lines)
        type Row<'a> = (SshdSpec, Vec<(&'a str, Vec<String>)>);
        let cases: Vec<Row> = vec![
            (
                spec("/l", root, &["127.0.1.1"]),
                vec![(
                    "127.0.1.1",
                    vec![format!("ChrootDirectory {root}/127.0.1.1")],
                )],
            ),
            (
                with_ovoc(spec("/l", root, &["127.0.1.1", "127.0.1.2"]), "127.0.1.253"),
                vec![
                    (
                        "127.0.1.1",
                        vec![format!("ChrootDirectory {root}/127.0.1.1")],
                    ),
                    (
                        "127.0.1.2",
                        vec![format!("ChrootDirectory {root}/127.0.1.2")],
                    ),
                    (
                        "127.0.1.253",
                        vec![
                            format!("ChrootDirectory {root}/127.0.1.253"),
                            "PasswordAuthentication no".into(),
                            "PubkeyAuthentication yes".into(),
                            format!("AuthorizedKeysFile {root}/ovoc_authorized_keys"),
                            "AuthenticationMethods publickey".into(),
                        ],
                    ),
                ],
            ),
            (
                with_ovoc(spec("/l", "/srv/tc lab", &[]), "127.0.9.253"),
                vec![(
                    "127.0.9.253",
                    vec![
                        "ChrootDirectory \"/srv/tc lab/127.0.9.253\"".into(),
                        "PasswordAuthentication no".into(),
                        "PubkeyAuthentication yes".into(),
                        "AuthorizedKeysFile \"/srv/tc lab/ovoc_authorized_keys\"".into(),
                        "AuthenticationMethods publickey".into(),
                    ],
                )],
            ),
        ];
        for (s, want) in cases {
            let c = render_config(&s);
            let got = match_blocks(&c);
            let want: Vec<(String, Vec<String>)> =
                want.into_iter().map(|(a, l)| (a.to_string(), l)).collect();
            assert_eq!(got, want, "{c}");
            // Globally: password, no key, the empty chroot, whatever the OVOC address.
            let global = &c[..c.find("\nMatch ").unwrap_or(c.len())];
            for line in [
                "PasswordAuthentication yes",
                "PubkeyAuthentication no",
                "AuthorizedKeysFile none",
            ] {
                assert!(global.lines().any(|l| l == line), "{line:?} in\n{c}");
            }
            assert_eq!(
                c.matches("PubkeyAuthentication yes").count(),
                usize::from(s.ovoc_addr.is_some())
            );
        }
    }

    #[test]
    fn ovoc_paths() {
        let s = with_ovoc(spec("/l", "/var/lib/tc-lab/lab-2222", &[]), "127.0.1.253");
        assert_eq!(
            ovoc_capture_dir(&s).unwrap(),
            Path::new("/var/lib/tc-lab/lab-2222/127.0.1.253/captures")
        );
        assert_eq!(
            authorized_keys_path(&s),
            Path::new("/var/lib/tc-lab/lab-2222/ovoc_authorized_keys")
        );
        assert_eq!(ovoc_capture_dir(&spec("/l", "/r", &[])), None);
    }

    #[test]
    fn group_entries() {
        let text = "root:x:0:\ntcpdump:x:105:tclab,other\nlonely:x:7:\nbroken:x\n";
        assert_eq!(
            group_entry(text, 105),
            Some(("tcpdump".into(), vec!["tclab".into(), "other".into()]))
        );
        assert_eq!(group_entry(text, 7), Some(("lonely".into(), vec![])));
        assert_eq!(group_entry(text, 8), None);
    }

    #[test]
    fn config_scales_past_sixteen_devices_and_quotes_spaces() {
        let addrs: Vec<String> = (1..=300)
            .map(|i| format!("127.0.{}.{}", i / 250, i % 250 + 1))
            .collect();
        let mut s = spec("/srv/tc lab", "/srv/tc lab/root", &[]);
        s.addrs = addrs;
        let c = render_config(&s);
        assert_eq!(c.matches("Match LocalAddress").count(), 300);
        assert_eq!(c.matches("ListenAddress").count(), 1);
        assert!(c.contains("HostKey \"/srv/tc lab/ssh_host_ed25519_key\"\n"));
        assert!(c.contains("ChrootDirectory \"/srv/tc lab/root/127.0.1.51\"\n"));
    }

    #[test]
    fn known_hosts_lines() {
        let addrs = vec!["127.0.1.1".to_string(), "::1".to_string()];
        assert_eq!(
            known_hosts(&addrs, 2222, "ssh-ed25519 AAAAC3x\n"),
            "[127.0.1.1]:2222 ssh-ed25519 AAAAC3x\n[::1]:2222 ssh-ed25519 AAAAC3x\n"
        );
        assert_eq!(
            known_hosts(&addrs, 22, "ssh-ed25519 K"),
            "127.0.1.1 ssh-ed25519 K\n::1 ssh-ed25519 K\n"
        );
        assert_eq!(known_hosts(&[], 22, "k"), "");
    }

    #[test]
    fn validation_table() {
        let ok = spec("/var/lib/tc-lab", "/var/lib/tc-lab/root", &["127.0.1.1"]);
        assert!(validate_spec(&ok).is_ok());
        assert!(validate_spec(&with_ovoc(ok, "127.0.1.253")).is_ok());
        let cases: Vec<(SshdSpec, &str)> = vec![
            (
                SshdSpec {
                    port: 0,
                    ..spec("/a", "/b", &[])
                },
                "port must not be 0",
            ),
            (
                SshdSpec {
                    user: "-o".into(),
                    ..spec("/a", "/b", &[])
                },
                "invalid user name",
            ),
            (
                SshdSpec {
                    user: "Root x".into(),
                    ..spec("/a", "/b", &[])
                },
                "invalid user name",
            ),
            (
                SshdSpec {
                    ciphers: Some("aes128-ctr\nPermitRootLogin yes".into()),
                    ..spec("/a", "/b", &[])
                },
                "is not a cipher name",
            ),
            (spec("relative", "/b", &[]), "must be absolute"),
            (spec("/a", "/b/%u", &[]), "cannot hold"),
            (spec("/a", "/b\"c", &[]), "cannot hold"),
            (spec("/a\nPermitRootLogin yes", "/b", &[]), "cannot hold"),
            (spec("/a", "/b", &["../../etc"]), "not an IP address"),
            (
                spec("/a", "/b", &["127.0.1.1\nMatch all"]),
                "not an IP address",
            ),
            (
                with_ovoc(spec("/a", "/b", &[]), "127.0.1.253\nMatch all"),
                "not an IP address",
            ),
            (
                with_ovoc(spec("/a", "/b", &["127.0.1.1"]), "127.0.1.1"),
                "also a device's",
            ),
        ];
        for (s, want) in cases {
            let err = validate_spec(&s).unwrap_err();
            assert!(err.contains(want), "got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn chroot_check_explains_sshd_rule() {
        assert!(check_chroot_path(Path::new("/")).is_ok());
        assert!(check_chroot_path(Path::new("/var/lib/tc-lab-does-not-exist/x/y")).is_ok());
        let err = check_chroot_path(Path::new("relative/x")).unwrap_err();
        assert!(err.contains("not absolute"), "{err}");
        // /tmp is world-writable (1777) on every sane system, which is exactly the trap.
        let err = check_chroot_path(&std::env::temp_dir().join("tc-lab/root")).unwrap_err();
        assert!(err.contains("group or world writable"), "{err}");
        assert!(
            err.contains("bad ownership or modes for chroot directory component"),
            "{err}"
        );
        assert!(err.contains("/var/lib/tc-lab"), "{err}");
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(check_chroot_path(f.path()).is_err());
    }

    #[test]
    fn user_name_rules() {
        for ok in ["tclab", "_tc", "tc-lab_2"] {
            assert!(check_user_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "Tc", "tc lab", "tc:lab", "a/b", &"x".repeat(33)] {
            assert!(check_user_name(bad).is_err(), "{bad}");
        }
    }

    fn cannot_run() -> Option<String> {
        if !crate::sys::is_root() {
            return Some("needs root (system user, chroot, /run/sshd)".into());
        }
        for tool in [
            SSHD,
            "/usr/sbin/useradd",
            "/usr/sbin/chpasswd",
            "/usr/bin/ssh-keygen",
        ] {
            if !Path::new(tool).exists() {
                return Some(format!("{tool} is not installed"));
            }
        }
        None
    }

    /// Undo everything the real test set up, whether it passed or panicked.
    struct Cleanup {
        sshd: Option<Sshd>,
        user: Option<&'static str>,
        dir: PathBuf,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(s) = self.sshd.take() {
                s.stop();
            }
            if let Some(u) = self.user {
                if let Err(e) = remove_user(u) {
                    eprintln!("cleanup: {e}");
                }
            }
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    enum Login<'a> {
        Password(&'a str),
        /// A private key file, as the OVOC fetch logs in.
        Key(&'a Path),
    }

    fn sftp_read(
        addr: &str,
        port: u16,
        user: &str,
        pw: &str,
        host_key: &str,
    ) -> Result<Vec<u8>, String> {
        let file = Path::new("/debug-capture/debug-capture-data.pcap");
        sftp_read_as(addr, port, user, Login::Password(pw), file, host_key)
    }

    fn sftp_read_as(
        addr: &str,
        port: u16,
        user: &str,
        login: Login,
        file: &Path,
        host_key: &str,
    ) -> Result<Vec<u8>, String> {
        let tcp =
            TcpStream::connect((addr, port)).map_err(|e| format!("connect {addr}:{port}: {e}"))?;
        let mut sess = ssh2::Session::new().map_err(|e| e.to_string())?;
        sess.set_timeout(10_000);
        sess.set_tcp_stream(tcp);
        sess.handshake()
            .map_err(|e| format!("handshake {addr}: {e}"))?;
        let (key, _) = sess.host_key().ok_or("no host key")?;
        let want = host_key.split_whitespace().nth(1).unwrap();
        assert_eq!(crate::util::base64(key), want, "host key served on {addr}");
        match login {
            Login::Password(pw) => sess.userauth_password(user, pw),
            Login::Key(key) => sess.userauth_pubkey_file(user, None, key, None),
        }
        .map_err(|e| format!("auth {addr}: {e}"))?;
        let sftp = sess.sftp().map_err(|e| format!("sftp {addr}: {e}"))?;
        let mut f = sftp
            .open(file)
            .map_err(|e| format!("open on {addr}: {e}"))?;
        let mut out = Vec::new();
        f.read_to_end(&mut out)
            .map_err(|e| format!("read on {addr}: {e}"))?;
        Ok(out)
    }

    #[test]
    #[ignore = "needs root and OpenSSH's sshd: as root, cargo test -- --include-ignored"]
    fn real_sshd_serves_each_device_its_own_file() {
        if let Some(why) = cannot_run() {
            panic!("cannot run here: {why}");
        }
        let user = "tclabtest";
        let dir = PathBuf::from(format!("/var/lib/tc-lab-test-{}", std::process::id()));
        let mut cleanup = Cleanup {
            sshd: None,
            user: None,
            dir: dir.clone(),
        };
        root_dir(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addrs = ["127.0.9.1", "127.0.9.2", "127.0.9.3"];
        let s = SshdSpec {
            dir: dir.clone(),
            port,
            user: user.into(),
            chroot_root: dir.join("root"),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            ovoc_addr: Some("127.0.9.253".into()),
            netns: None,
            client: None,
            ciphers: None,
        };
        let mut files = HashMap::new();
        for (i, a) in addrs.iter().enumerate() {
            let ip: std::net::Ipv4Addr = a.parse().unwrap();
            let pcap =
                crate::lab::pcap::synthetic(ip, std::net::Ipv4Addr::LOCALHOST, 3 + i as u32, 0);
            files.insert(a.to_string(), pcap);
        }
        prepare_chroots(&s, &files).unwrap();
        let md = fs::metadata(capture_file_path(&s, "127.0.9.2")).unwrap();
        assert_eq!(md.mode() & 0o777, 0o644);
        assert!(fs::read_dir(dir.join("root/empty"))
            .unwrap()
            .next()
            .is_none());

        let created = ensure_system_user(user).unwrap();
        cleanup.user = Some(user);
        assert!(
            !ensure_system_user(user).unwrap(),
            "second call finds the user"
        );
        let mut raw = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).unwrap();
        let pw = Secret::new(crate::util::hex(&raw));
        set_password(user, &pw).unwrap();

        let key = generate_host_key(&dir).unwrap();
        assert!(key.starts_with("ssh-ed25519 AAAA"), "{key}");
        assert_eq!(
            generate_host_key(&dir).unwrap(),
            key,
            "reused, not regenerated"
        );

        let (login_key, login_pub) = generate_login_key(&dir).unwrap();
        let md = fs::metadata(&login_key).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        let (again, again_pub) = generate_login_key(&dir).unwrap();
        assert_eq!(again, login_key);
        assert_ne!(again_pub, login_pub, "a new key on every start");
        let captures = prepare_ovoc_chroot(&s, &again_pub).unwrap();
        assert_eq!(Some(captures.clone()), ovoc_capture_dir(&s));
        let ovoc_file = b"OVOC side".to_vec();
        fs::write(captures.join("OVOC_x-0.pcap"), &ovoc_file).unwrap();

        let sshd = start(&s).unwrap_or_else(|e| panic!("start: {e}"));
        assert_eq!(sshd.host_key(), key);
        assert!(sshd.pid() > 0);
        cleanup.sshd = Some(sshd);

        for a in addrs {
            let got = sftp_read(a, port, user, pw.expose(), &key).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, files[a], "{a} serves its own file");
        }
        let err = sftp_read("127.0.9.4", port, user, pw.expose(), &key).unwrap_err();
        assert!(
            err.starts_with("open on 127.0.9.4"),
            "no Match block -> empty chroot: {err}"
        );
        let err = sftp_read("127.0.9.1", port, user, "wrong-password", &key).unwrap_err();
        assert!(err.starts_with("auth 127.0.9.1"), "{err}");

        // The OVOC address: libssh2 logs in with the ed25519 key (OpenSSH format), and only so.
        let ovoc = "127.0.9.253";
        let in_ovoc = Path::new("/captures/OVOC_x-0.pcap");
        let got = sftp_read_as(ovoc, port, user, Login::Key(&login_key), in_ovoc, &key)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, ovoc_file);
        let err = sftp_read_as(
            ovoc,
            port,
            user,
            Login::Password(pw.expose()),
            in_ovoc,
            &key,
        )
        .unwrap_err();
        assert!(err.starts_with("auth 127.0.9.253"), "{err}");
        let device_file = Path::new("/debug-capture/debug-capture-data.pcap");
        let err = sftp_read_as(
            addrs[0],
            port,
            user,
            Login::Key(&login_key),
            device_file,
            &key,
        )
        .unwrap_err();
        assert!(err.starts_with("auth 127.0.9.1"), "{err}");

        // A second daemon on the same port must fail with sshd's reason, not hang or "succeed".
        let err = start(&s).err().expect("port already taken");
        assert!(
            err.contains("Address already in use") || err.contains("Cannot bind"),
            "{err}"
        );

        cleanup.sshd.take().unwrap().stop();
        assert!(TcpStream::connect(("127.0.9.1", port)).is_err(), "stopped");
        assert!(!dir.join("sshd.pid").exists());
        cleanup.user = None;
        assert!(remove_user(user).unwrap(), "created now: {created}");
        assert!(!remove_user(user).unwrap());
    }
}
