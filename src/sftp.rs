//! Fetch a capture file over SFTP (a CPE's `debug capture`, an OVOC agent's ring files): host key
//! checked against known_hosts, large reads (libssh2 is slow with small ones), written to a
//! hidden `.part` file that is renamed only when complete and recognised as a pcap/pcapng,
//! resumed from where a cut transfer stopped.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use ssh2::{CheckResult, HostKeyType, KnownHostFileKind, Session};

use crate::secret::Secret;
use crate::timefmt::Utc;

pub const DEFAULT_REMOTE: &str = "/debug-capture/debug-capture-data.pcap";
/// Chunks in flight between the reading and the writing thread.
const BUFFERS: usize = 3;
/// libssh2 keeps four chunks' worth of SFTP reads in flight, so a large chunk is what makes one
/// fetch fast; but a session fetching from --jobs devices at once would hold 3.5 MiB per fetch.
/// A fetch's chunk is sized when it starts, from the fetches running then: this budget split
/// between them, within the two bounds (a soft cap: fetches that started earlier keep theirs).
const CHUNK_BUDGET: usize = 6 << 20;
const CHUNK_MAX: usize = 512 << 10;
const CHUNK_MIN: usize = 64 << 10;

static FETCHING: AtomicUsize = AtomicUsize::new(0);

/// Counts a fetch in progress for as long as it lives.
struct Fetching;

impl Fetching {
    /// Registers a fetch and returns its chunk size given the fetches already running.
    fn begin() -> (Fetching, usize) {
        let n = FETCHING.fetch_add(1, Ordering::SeqCst) + 1;
        (Fetching, chunk_size(n))
    }
}

impl Drop for Fetching {
    fn drop(&mut self) {
        FETCHING.fetch_sub(1, Ordering::SeqCst);
    }
}

fn chunk_size(concurrent: usize) -> usize {
    (CHUNK_BUDGET / (concurrent.max(1) * BUFFERS)).clamp(CHUNK_MIN, CHUNK_MAX) & !4095
}

/// How the login proves who it is.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// What the CPEs take.
    Password(&'a Secret),
    /// A private key file (OpenSSH or PEM format), with its passphrase if it has one.
    Key {
        path: &'a Path,
        passphrase: Option<&'a Secret>,
    },
    /// The keys of the running ssh-agent (`SSH_AUTH_SOCK`).
    Agent,
}

/// The local name of the fetched file.
#[derive(Clone, Copy)]
pub enum Local<'a> {
    /// `CPE_device_<host>_<time>.pcap`, the time of the fetch (a device's one capture file is
    /// named by when it was taken); a part left by a cut fetch of the host is continued.
    Cpe,
    /// The remote file's own name (an agent's ring files are named once, at STOP).
    Named(&'a str),
}

#[derive(Clone, Copy)]
pub struct Spec<'a> {
    /// An SSH session already logged in to `host` (several files of one server), used for the
    /// first attempt; later attempts log in afresh.
    pub session: Option<&'a Session>,
    /// The SSH server: the device, or the OVOC server.
    pub host: &'a str,
    /// What the progress bar calls this transfer (the device).
    pub label: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub auth: Auth<'a>,
    pub remote: &'a str,
    pub local: Local<'a>,
    pub out_dir: &'a Path,
    pub known_hosts: &'a Path,
    pub accept_new: bool,
    pub timeout: Duration,
    pub retries: u32,
    pub modes: crate::util::Modes,
}

#[derive(Debug)]
pub struct Fetched {
    pub path: PathBuf,
    /// The part name, a second link to `path` until [`Fetched::done`].
    pub part: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub seconds: f64,
    pub attempts: u32,
}

impl Fetched {
    /// The capture's name is recorded: its part name goes.
    pub fn done(part: &Path) {
        if let Err(e) = std::fs::remove_file(part) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("removing {}: {e}", part.display());
            }
        }
    }
}

enum Failure {
    /// The part file left by an earlier fetch is not this capture's start (the device captured
    /// again since): it was unlinked, and the capture gets a name of its own.
    Stale,
    /// Worth another session: connect errors, timeouts, a transfer cut short.
    Retry(String),
    /// Would only fail again: wrong password, host key problems, missing file, not a capture.
    Fatal(String),
}

/// `CPE_device_<device>_<YYYY-MM-DDTHH.MM.SS.ffffff>.pcap`, as the original named it.
pub fn local_name(device: &str, at: Utc) -> String {
    format!("CPE_device_{device}_{}.pcap", at.file_stamp())
}

/// The part file a cut fetch of this device left in `dir`, if any: a fetch continues it (under
/// its name, so under the same final name) rather than starting a second copy.
fn leftover_part(dir: &Path, device: &str) -> Option<PathBuf> {
    let prefix = format!(".CPE_device_{device}_");
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".pcap.part")
        })
        .map(|e| e.path())
        .collect();
    // The newest stamp: names sort by time.
    parts.sort();
    parts.pop()
}

/// The final file for a part file `.<name>.part`.
fn final_of(part: &Path) -> Option<PathBuf> {
    let name = part.file_name()?.to_str()?;
    let name = name.strip_prefix('.')?.strip_suffix(".part")?;
    Some(part.with_file_name(name))
}

/// Fetches the device's capture into `out_dir`. The complete file is kept under its final name
/// and, until the caller calls [`Fetched::done`] (after recording the name, in a session's
/// journal), also under its part name: a fetch killed in between finds that part, sees it is
/// the remote file, and hands back the same file instead of fetching a second copy.
pub fn fetch(spec: &Spec) -> Result<Fetched, String> {
    fetch_or_why(spec).map_err(|(_, e)| e)
}

/// As [`fetch`], the error saying whether a later try may succeed (`(true, why)`: the server
/// was unreachable, a transfer was cut, a local write or mkdir failed, in every attempt) or not
/// (a refused login or host key, a missing file, not a capture).
pub fn fetch_or_why(spec: &Spec) -> Result<Fetched, (bool, String)> {
    let mut spec = *spec;
    let spec = &mut spec;
    let started = Instant::now();
    spec.modes
        .create_dir_all(spec.out_dir)
        .map_err(|e| (true, format!("creating {}: {e}", spec.out_dir.display())))?;
    let fresh = || {
        let name = match spec.local {
            Local::Cpe => local_name(spec.host, Utc::now()),
            Local::Named(n) => n.to_string(),
        };
        spec.out_dir.join(format!(".{name}.part"))
    };
    let progress = crate::progress::Transfer::start(spec.label);
    let mut part = match spec.local {
        Local::Cpe => leftover_part(spec.out_dir, spec.host).unwrap_or_else(fresh),
        Local::Named(_) => fresh(),
    };
    let mut last = String::new();
    let mut attempt = 0;
    while attempt <= spec.retries {
        attempt += 1;
        let final_path = final_of(&part).expect("part names are made here");
        match attempt_once(spec, &part, &final_path, &progress) {
            Ok((bytes, sha256, kept)) => {
                if !kept {
                    keep(spec.host, &part, &final_path, &sha256).map_err(|e| (false, e))?;
                }
                return Ok(Fetched {
                    path: final_path,
                    part,
                    bytes,
                    sha256,
                    seconds: started.elapsed().as_secs_f64(),
                    // Nothing was transferred: the file was here already.
                    attempts: if kept { 0 } else { attempt },
                });
            }
            Err(Failure::Stale) => {
                // Not an attempt at this capture: once more, under a name of its own.
                attempt -= 1;
                part = fresh();
            }
            Err(Failure::Fatal(e)) => {
                let _ = std::fs::remove_file(&part);
                return Err((false, e));
            }
            Err(Failure::Retry(e)) => {
                log::info!("{}: fetch attempt {attempt}: {e}", spec.host);
                // The shared session may be what failed.
                spec.session = None;
                last = e;
                if attempt <= spec.retries {
                    std::thread::sleep(Duration::from_millis(500 * u64::from(attempt.min(8))));
                }
            }
        }
    }
    // The part is kept: the next fetch of this device continues it.
    Err((
        true,
        format!(
            "{}: fetch gave up after {} attempts: {last}",
            spec.host,
            spec.retries + 1
        ),
    ))
}

/// The complete part file becomes the capture (the part name stays, a second link, until
/// [`Fetched::done`]). A hard link refuses to replace an existing file (rename would clobber
/// it); the one there already is this capture only if its bytes are.
fn keep(device: &str, part: &Path, final_path: &Path, sha256: &str) -> Result<(), String> {
    match std::fs::hard_link(part, final_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut f = File::open(final_path)
                .map_err(|e| format!("{device}: reading {}: {e}", final_path.display()))?;
            let mut h = ring::digest::Context::new(&ring::digest::SHA256);
            rehash(&mut f, &mut h)
                .map_err(|e| format!("{device}: reading {}: {e}", final_path.display()))?;
            if crate::util::hex(h.finish().as_ref()) != sha256 {
                return Err(format!(
                    "{device}: keeping {}: another file holds that name",
                    final_path.display()
                ));
            }
        }
        Err(e) => return Err(format!("{device}: keeping {}: {e}", final_path.display())),
    }
    Ok(())
}

fn ssh_err(device: &str, what: &str, e: ssh2::Error) -> Failure {
    use ssh2::ErrorCode::{Session as S, SFTP};
    let msg = format!("{device}: {what}: {e}");
    match e.code() {
        // LIBSSH2_ERROR_AUTHENTICATION_FAILED, PUBLICKEY_UNVERIFIED; SFTP NO_SUCH_FILE,
        // PERMISSION_DENIED, NO_SUCH_PATH.
        S(-18) | S(-19) | SFTP(2) | SFTP(3) | SFTP(10) => Failure::Fatal(msg),
        _ => Failure::Retry(msg),
    }
}

/// One attempt: the file's size, its sha256, and whether it was already kept under its final
/// name (a named file fetched before, by a run killed before it could say so).
fn attempt_once(
    spec: &Spec,
    part: &Path,
    final_path: &Path,
    progress: &crate::progress::Transfer,
) -> Result<(u64, String, bool), Failure> {
    let dev = spec.host;
    let owned;
    let sess = match spec.session {
        Some(s) => s,
        None => {
            owned = login(spec)?;
            &owned
        }
    };
    let sftp = sess.sftp().map_err(|e| ssh_err(dev, "sftp", e))?;
    let mut remote = sftp
        .open(Path::new(spec.remote))
        .map_err(|e| ssh_err(dev, &format!("open {}", spec.remote), e))?;
    let size = remote.stat().ok().and_then(|s| s.size);
    if let Local::Named(_) = spec.local {
        if let Some((bytes, sha256)) = already_kept(dev, &mut remote, size, final_path)? {
            log::info!("{dev}: {} is already here", final_path.display());
            let _ = std::fs::remove_file(part);
            return Ok((bytes, sha256, true));
        }
    }
    let mut t = Transfer::resume(part, size, &spec.modes)?;
    if t.have > 0 && !same_start(dev, &mut remote, part, t.have)? {
        // Left by a fetch of another capture (the device captured again since). It may be a
        // second link to that capture's kept file: unlinked, never emptied.
        log::info!(
            "{dev}: {} is not this capture's start; fetching anew",
            part.display()
        );
        drop(t);
        std::fs::remove_file(part)
            .map_err(|e| Failure::Fatal(format!("removing {}: {e}", part.display())))?;
        return Err(Failure::Stale);
    }
    if t.have > 0 {
        log::info!("{dev}: resuming at byte {}", t.have);
    }
    // Always: the checks above may have read from the start.
    remote
        .seek(SeekFrom::Start(t.have))
        .map_err(|e| Failure::Retry(format!("{dev}: seek: {e}")))?;
    progress.sized(size.unwrap_or(0), t.have);
    let local = t.copy(&mut remote, spec, part, progress)?;
    if let Some(s) = size {
        if t.have < s {
            return Err(Failure::Retry(format!(
                "{dev}: transfer ended at byte {} of {s}",
                t.have
            )));
        }
    }
    if capture_format(&t.head).is_none() {
        return Err(Failure::Fatal(not_a_capture(dev, spec.remote, &t.head)));
    }
    local
        .sync_all()
        .map_err(|e| Failure::Fatal(format!("syncing {}: {e}", part.display())))?;
    if spec.session.is_none() {
        let _ = sess.disconnect(None, "done", None);
    }
    Ok((t.have, crate::util::hex(t.hasher.finish().as_ref()), false))
}

/// A named file already kept is the remote one if it is as long and starts with the same bytes
/// (an agent's renamed ring file does not change): it is not fetched a second time.
fn already_kept(
    dev: &str,
    remote: &mut (impl Read + Seek),
    size: Option<u64>,
    kept: &Path,
) -> Result<Option<(u64, String)>, Failure> {
    let Ok(meta) = std::fs::metadata(kept) else {
        return Ok(None);
    };
    if size != Some(meta.len()) || !same_start(dev, remote, kept, meta.len())? {
        return Ok(None);
    }
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let bytes = File::open(kept)
        .and_then(|mut f| rehash(&mut f, &mut h))
        .map_err(|e| Failure::Fatal(format!("reading {}: {e}", kept.display())))?;
    Ok(Some((bytes, crate::util::hex(h.finish().as_ref()))))
}

/// The part file's first bytes (up to 64 KiB: the pcap header and the first packets, whose time
/// stamps tell two captures apart) are the remote file's. Only bytes that differ (or a remote
/// file shorter than the part) say no: a read that fails (the network cut, say) is retried, and
/// the part, maybe most of a capture, is kept.
fn same_start(
    dev: &str,
    remote: &mut (impl Read + Seek),
    part: &Path,
    have: u64,
) -> Result<bool, Failure> {
    let n = have.min(64 << 10) as usize;
    let (mut mine, mut theirs) = (vec![0u8; n], vec![0u8; n]);
    File::open(part)
        .and_then(|mut f| f.read_exact(&mut mine))
        .map_err(|e| Failure::Fatal(format!("reading {}: {e}", part.display())))?;
    let read = remote
        .seek(SeekFrom::Start(0))
        .and_then(|_| remote.read_exact(&mut theirs));
    match read {
        Ok(()) => Ok(mine == theirs),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(Failure::Retry(format!(
            "{dev}: reading the start of the remote file: {e}"
        ))),
    }
}

/// TCP, the SSH handshake, the host key checked, the login accepted.
fn login(spec: &Spec) -> Result<Session, Failure> {
    let dev = spec.host;
    let addr = (dev, spec.port)
        .to_socket_addrs()
        .map_err(|e| Failure::Retry(format!("{dev}: resolving: {e}")))?
        .next()
        .ok_or_else(|| Failure::Retry(format!("{dev}: no address")))?;
    let tcp = TcpStream::connect_timeout(&addr, spec.timeout)
        .map_err(|e| Failure::Retry(format!("connect {addr}: {e}")))?;
    let mut sess = Session::new().map_err(|e| ssh_err(dev, "ssh session", e))?;
    prefer_aes(&sess);
    // libssh2 sends its SFTP read requests as small packets; with Nagle's algorithm they wait
    // for the ACK of the previous ones and the read-ahead stalls.
    if let Err(e) = tcp.set_nodelay(true) {
        log::debug!("{dev}: TCP_NODELAY not set: {e}");
    }
    sess.set_tcp_stream(tcp);
    sess.set_timeout(spec.timeout.as_millis().min(u32::MAX as u128) as u32);
    sess.handshake()
        .map_err(|e| ssh_err(dev, "ssh handshake", e))?;
    log::debug!(
        "{dev}: ssh cipher {}",
        sess.methods(ssh2::MethodType::CryptSc).unwrap_or("?")
    );
    check_host_key(&sess, dev, spec.port, spec.known_hosts, spec.accept_new)
        .map_err(Failure::Fatal)?;
    authenticate(&sess, spec).map_err(|e| {
        let refused = matches!(e.code(), ssh2::ErrorCode::Session(-18 | -19));
        let msg = format!(
            "{dev}: SSH login {} for user {:?}: {}",
            if refused { "refused" } else { "failed" },
            spec.user,
            e.message()
        );
        // A refusal would only be refused again; a timeout, a cut connection or an ssh-agent
        // that is gone may pass next time.
        if refused {
            Failure::Fatal(msg)
        } else {
            Failure::Retry(msg)
        }
    })?;
    Ok(sess)
}

fn authenticate(sess: &Session, spec: &Spec) -> Result<(), ssh2::Error> {
    match spec.auth {
        Auth::Password(p) => sess.userauth_password(spec.user, p.expose()),
        Auth::Key { path, passphrase } => {
            sess.userauth_pubkey_file(spec.user, None, path, passphrase.map(|p| p.expose()))
        }
        Auth::Agent => sess.userauth_agent(spec.user),
    }
}

fn why(f: Failure) -> (bool, String) {
    match f {
        Failure::Retry(m) => (true, m),
        Failure::Fatal(m) => (false, m),
        Failure::Stale => (true, "try again".into()),
    }
}

/// An SSH session to `spec.host`, logged in and host key checked, for several operations (a
/// listing and the files it names: one login, where a fleet's collection makes thousands).
pub fn connect(spec: &Spec) -> Result<Session, (bool, String)> {
    login(spec).map_err(why)
}

/// The names in the remote directory `dir` that `keep` accepts, sorted, over `sess`. A failure
/// says whether another attempt may succeed (`Err((true, why))`).
pub fn list(
    sess: &Session,
    spec: &Spec,
    dir: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<String>, (bool, String)> {
    let dev = spec.host;
    let sftp = sess.sftp().map_err(|e| why(ssh_err(dev, "sftp", e)))?;
    let entries = sftp
        .readdir(Path::new(dir))
        .map_err(|e| why(ssh_err(dev, &format!("listing {dir}"), e)))?;
    let mut names: Vec<String> = entries
        .into_iter()
        // Not `is_file`: a server that sends no permission bits would list nothing.
        .filter(|(_, st)| !st.is_dir())
        .filter_map(|(p, _)| Some(p.file_name()?.to_str()?.to_string()))
        .filter(|n| keep(n))
        .collect();
    names.sort();
    Ok(names)
}

/// The part file being filled: its bytes so far, their hash, and the first four (the format).
struct Transfer {
    local: Option<File>,
    hasher: ring::digest::Context,
    have: u64,
    head: Vec<u8>,
}

/// A part with a second link is a capture already kept under its own name (see
/// `Fetched::done`): appending would change that file. The part becomes a copy of its own
/// (written beside it, renamed over it: the kept file loses only a link).
fn unshare(part: &Path, modes: &crate::util::Modes) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let shared = std::fs::metadata(part).is_ok_and(|m| m.nlink() > 1);
    if !shared {
        return Ok(());
    }
    let mut name = part.file_name().unwrap_or_default().to_os_string();
    name.push(".copy");
    let copy = part.with_file_name(name);
    let _ = std::fs::remove_file(&copy);
    let made = modes
        .open_append(&copy)
        .and_then(|mut to| {
            std::io::copy(&mut File::open(part)?, &mut to)?;
            to.sync_all()
        })
        .and_then(|_| std::fs::rename(&copy, part));
    made.map_err(|e| {
        let _ = std::fs::remove_file(&copy);
        Failure::Fatal(format!("copying {}: {e}", part.display()))
    })
}

impl Transfer {
    /// Whatever a cut attempt left in the part file is kept and hashed again (unless it is
    /// longer than the remote file: then it is not that file's start).
    fn resume(
        part: &Path,
        size: Option<u64>,
        modes: &crate::util::Modes,
    ) -> Result<Transfer, Failure> {
        unshare(part, modes)?;
        let mut local = modes
            .open_append(part)
            .map_err(|e| Failure::Fatal(format!("opening {}: {e}", part.display())))?;
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let have = rehash(&mut local, &mut hasher)
            .map_err(|e| Failure::Fatal(format!("reading {}: {e}", part.display())))?;
        if size.is_some_and(|s| have > s) {
            // Longer than the remote file: not its start (see same_start).
            drop(local);
            std::fs::remove_file(part)
                .map_err(|e| Failure::Fatal(format!("removing {}: {e}", part.display())))?;
            return Err(Failure::Stale);
        }
        let mut head = Vec::with_capacity(4);
        if have >= 4 {
            let mut f = File::open(part).map_err(|e| Failure::Fatal(e.to_string()))?;
            head.resize(4, 0);
            f.read_exact(&mut head)
                .map_err(|e| Failure::Fatal(e.to_string()))?;
        }
        Ok(Transfer {
            local: Some(local),
            hasher,
            have,
            head,
        })
    }

    /// The rest of `remote` into the part file. This thread reads (SSH decryption) and hashes;
    /// another writes, and buffers go round in a ring between them: hashing here reads each
    /// chunk while it is still in this core's cache, in time the reader otherwise spends waiting
    /// for the next packets.
    fn copy(
        &mut self,
        remote: &mut ssh2::File,
        spec: &Spec,
        part: &Path,
        progress: &crate::progress::Transfer,
    ) -> Result<File, Failure> {
        let local = self.local.take().expect("copied once");
        let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(BUFFERS);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        let (_fetching, chunk) = Fetching::begin();
        for _ in 0..BUFFERS {
            let _ = empty_tx.send(vec![0u8; chunk]);
        }
        let part_name = part.display().to_string();
        let (read, written) = std::thread::scope(|s| {
            let writer = s.spawn(move || -> Result<File, String> {
                let mut local = local;
                for (buf, n) in full_rx {
                    local
                        .write_all(&buf[..n])
                        .map_err(|e| format!("writing {part_name}: {e}"))?;
                    crate::sys::start_writeback(&local);
                    let _ = empty_tx.send(buf);
                }
                Ok(local)
            });
            let read = self.read_all(remote, spec, &empty_rx, &full_tx, progress);
            drop(full_tx);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err("the writer thread panicked".into()));
            (read, written)
        });
        // A local write error (a full disk) may pass: the part is kept for the next attempt.
        let local = written.map_err(Failure::Retry)?;
        read?;
        Ok(local)
    }

    /// Reads into the buffers the writer hands back, until the end or an error; checks the
    /// format as soon as four bytes are in.
    fn read_all(
        &mut self,
        remote: &mut ssh2::File,
        spec: &Spec,
        empty: &mpsc::Receiver<Vec<u8>>,
        full: &mpsc::SyncSender<(Vec<u8>, usize)>,
        progress: &crate::progress::Transfer,
    ) -> Result<(), Failure> {
        let dev = spec.host;
        loop {
            // No buffer back means the writer stopped on an error; join tells which.
            let Ok(mut buf) = empty.recv() else {
                return Ok(());
            };
            let n = match remote.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) => {
                    let have = self.have;
                    return Err(Failure::Retry(format!(
                        "{dev}: transfer cut at byte {have}: {e}"
                    )));
                }
            };
            if self.head.len() < 4 {
                let take = n.min(4 - self.head.len());
                self.head.extend_from_slice(&buf[..take]);
                if self.head.len() == 4 && capture_format(&self.head).is_none() {
                    return Err(Failure::Fatal(not_a_capture(dev, spec.remote, &self.head)));
                }
            }
            self.have += n as u64;
            self.hasher.update(&buf[..n]);
            progress.add(n as u64);
            if full.send((buf, n)).is_err() {
                return Ok(());
            }
        }
    }
}

/// libssh2 offers chacha20-poly1305 first, but its chacha20 and poly1305 are portable C, several
/// times slower than OpenSSL's AES-GCM/CTR with AES-NI. Offer the AES ciphers first and keep every
/// other cipher libssh2 supports, in its own order, after them (nothing is dropped).
fn prefer_aes(sess: &Session) {
    for t in [ssh2::MethodType::CryptCs, ssh2::MethodType::CryptSc] {
        let Ok(algs) = sess.supported_algs(t) else {
            continue;
        };
        let (mut aes, rest): (Vec<&str>, Vec<&str>) = algs
            .into_iter()
            .partition(|a| a.starts_with("aes") && (a.contains("-gcm") || a.ends_with("-ctr")));
        // The GCM modes first (one pass for cipher and MAC), then CTR; 128-bit keys before
        // 256 within each (fewer AES rounds, on both ends of the link).
        aes.sort_by_key(|a| (!a.contains("-gcm"), !a.starts_with("aes128")));
        aes.extend(rest);
        if let Err(e) = sess.method_pref(t, &aes.join(",")) {
            log::debug!("cipher preference not set: {e}");
        }
    }
}

fn not_a_capture(dev: &str, remote: &str, head: &[u8]) -> String {
    format!(
        "{dev}: {remote} is not a pcap or pcapng file (starts with {}); refusing to keep it",
        crate::util::hex(head)
    )
}

fn rehash(f: &mut File, hasher: &mut ring::digest::Context) -> std::io::Result<u64> {
    f.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

fn key_type_name(t: HostKeyType) -> &'static str {
    match t {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

/// The `known_hosts` host field: plain for port 22, `[host]:port` otherwise (as OpenSSH writes).
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

static KNOWN_HOSTS_LOCK: Mutex<()> = Mutex::new(());

fn check_host_key(
    sess: &Session,
    dev: &str,
    port: u16,
    file: &Path,
    accept_new: bool,
) -> Result<(), String> {
    let (key, ktype) = sess
        .host_key()
        .ok_or_else(|| format!("{dev}: the server sent no host key"))?;
    let _guard = KNOWN_HOSTS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut kh = sess
        .known_hosts()
        .map_err(|e| format!("known_hosts: {e}"))?;
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("reading {}: {e}", file.display())),
    };
    // Line by line: one entry libssh2 cannot read (a newer key type) must not hide the others.
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let _ = kh.read_str(line, KnownHostFileKind::OpenSSH);
    }
    let fp = crate::util::base64(&crate::util::sha256(key));
    let fp = fp.trim_end_matches('=');
    match kh.check_port(dev, port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(format!(
            "{dev}: HOST KEY CHANGED (now {} SHA256:{fp}); it does not match {}. Refusing to connect: \
             verify the device, then remove the old entry (ssh-keygen -R '{}' -f {})",
            key_type_name(ktype),
            file.display(),
            known_hosts_name(dev, port),
            file.display()
        )),
        CheckResult::NotFound if accept_new => {
            let line = format!("{} {} {}\n", known_hosts_name(dev, port), key_type_name(ktype), crate::util::base64(key));
            if let Some(parent) = file.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| format!("recording host key in {}: {e}", file.display()))?;
            log::warn!("{dev}: recorded new host key {} SHA256:{fp} in {}", key_type_name(ktype), file.display());
            Ok(())
        }
        CheckResult::NotFound => Err(format!(
            "{dev}: host key {} SHA256:{fp} is not in {}; check it, then rerun with --accept-new-host-key",
            key_type_name(ktype),
            file.display()
        )),
        CheckResult::Failure => Err(format!("{dev}: could not check the host key against {}", file.display())),
    }
}

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;

/// "pcap" (libpcap, either byte order, µs or ns) or "pcapng", from the first 4 bytes; None = not
/// a capture.
pub fn capture_format(head: &[u8]) -> Option<&'static str> {
    let magic: [u8; 4] = head.get(..4)?.try_into().ok()?;
    let le = u32::from_le_bytes(magic);
    let be = u32::from_be_bytes(magic);
    if [MAGIC_MICROS, MAGIC_NANOS]
        .iter()
        .any(|m| *m == le || *m == be)
    {
        Some("pcap")
    } else if le == PCAPNG_SHB {
        // The section header block type is a palindrome, so byte order does not matter.
        Some("pcapng")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remote file whose reads fail after `ok` bytes (a network cut).
    struct Cut {
        data: std::io::Cursor<Vec<u8>>,
        ok: u64,
    }

    impl Read for Cut {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.data.position() >= self.ok {
                return Err(std::io::Error::other("connection reset"));
            }
            let room = (self.ok - self.data.position()) as usize;
            let n = buf.len().min(room);
            self.data.read(&mut buf[..n])
        }
    }

    impl Seek for Cut {
        fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
            self.data.seek(to)
        }
    }

    /// Review of issue 17, item 12: a part that is a second link to a kept capture is copied
    /// before anything is appended: the kept file stays as it was reported.
    #[test]
    fn a_part_linked_to_a_kept_capture_is_copied_not_appended_to() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("CPE_device_x.pcap");
        let part = dir.path().join(".CPE_device_x.pcap.part");
        std::fs::write(&kept, b"\xd4\xc3\xb2\xa1kept").unwrap();
        std::fs::hard_link(&kept, &part).unwrap();
        let modes = crate::util::Modes::private();
        let mut t = Transfer::resume(&part, Some(100), &modes).ok().unwrap();
        assert_eq!(t.have, 8);
        t.local.as_mut().unwrap().write_all(b"more").unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"\xd4\xc3\xb2\xa1kept");
        assert_eq!(std::fs::read(&part).unwrap(), b"\xd4\xc3\xb2\xa1keptmore");
        assert_eq!(std::fs::metadata(&kept).unwrap().nlink(), 1);
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 2, "no copy left beside them");
    }

    /// Review of issue 17, item 6: only bytes that differ make a part stale; a read error is
    /// a retry (it threw a good part away, and the next fetch made a second copy).
    #[test]
    fn a_part_is_stale_only_when_its_bytes_differ() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(".x.part");
        let capture: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&part, &capture[..70_000]).unwrap();
        let mut other = capture.clone();
        other[100] ^= 1;
        // (remote file, reads that succeed, verdict: Some(same) or None for a retry)
        let table: &[(&[u8], u64, Option<bool>)] = &[
            (&capture, u64::MAX, Some(true)),
            (&other, u64::MAX, Some(false)),
            (&capture[..1000], u64::MAX, Some(false)),
            (&capture, 0, None),
            (&capture, 40_000, None),
        ];
        for (i, (remote, ok, want)) in table.iter().enumerate() {
            let mut r = Cut {
                data: std::io::Cursor::new(remote.to_vec()),
                ok: *ok,
            };
            let got = match same_start("10.0.0.1", &mut r, &part, 70_000) {
                Ok(same) => Some(same),
                Err(Failure::Retry(m)) => {
                    assert!(m.contains("connection reset"), "{m}");
                    None
                }
                Err(_) => panic!("case {i}: not a retry"),
            };
            assert_eq!(got, *want, "case {i}");
        }
        assert_eq!(std::fs::read(&part).unwrap(), &capture[..70_000], "kept");
    }

    #[test]
    fn capture_format_table() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (&[0xd4, 0xc3, 0xb2, 0xa1], Some("pcap")),
            (&[0xa1, 0xb2, 0xc3, 0xd4], Some("pcap")),
            (&[0x4d, 0x3c, 0xb2, 0xa1], Some("pcap")),
            (&[0xa1, 0xb2, 0x3c, 0x4d, 0, 0], Some("pcap")),
            (&[0x0a, 0x0d, 0x0d, 0x0a, 0x1c], Some("pcapng")),
            (b"<html>", None),
            (&[0xd4, 0xc3, 0xb2], None),
            (&[], None),
        ];
        for (head, want) in cases {
            assert_eq!(capture_format(head), *want, "{head:02x?}");
        }
    }

    #[test]
    fn concurrent_fetches_share_the_chunk_budget() {
        for (n, want) in [
            (0, 512 << 10),
            (1, 512 << 10),
            (4, 512 << 10),
            (5, 408 << 10),
            (8, 256 << 10),
            (16, 128 << 10),
            (32, 64 << 10),
            (1000, 64 << 10),
        ] {
            assert_eq!(chunk_size(n), want, "{n} fetches");
            assert!(n == 0 || n > 32 || n * BUFFERS * chunk_size(n) <= CHUNK_BUDGET);
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            local_name(
                "192.168.200.218",
                Utc::from_unix_micros(1_655_914_567_565_758)
            ),
            "CPE_device_192.168.200.218_2022-06-22T16.16.07.565758.pcap"
        );
        assert_eq!(known_hosts_name("10.0.0.1", 22), "10.0.0.1");
        assert_eq!(known_hosts_name("127.0.1.1", 2222), "[127.0.1.1]:2222");
    }
}
