//! VERIFY probes: ICMP echo, SNMPv3 GET of sysDescr.0 and TCP connect, sent to one device.
//!
//! Invariants: `run` returns within about the configured timeout whatever the device (or the
//! resolver) does, never panics and never blocks the caller's loop for longer than that. Each
//! enabled kind runs on its own thread and bounds its blocking calls by a shared deadline; `run`
//! additionally stops waiting at the deadline plus a small slack and reports what each kind
//! counted so far. Keys only ever go to the SNMP library: no error, log line or report holds them.
//! No shell and no external program is involved.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{ipproto, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::event::{ProbeCounts, ProbeReport};
use crate::secret::Secret;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Icmp,
    Snmp,
    Tcp,
}

impl ProbeKind {
    const ALL: [ProbeKind; 3] = [ProbeKind::Icmp, ProbeKind::Snmp, ProbeKind::Tcp];

    fn name(self) -> &'static str {
        match self {
            ProbeKind::Icmp => "icmp",
            ProbeKind::Snmp => "snmp",
            ProbeKind::Tcp => "tcp",
        }
    }
}

/// "icmp,snmp,tcp" (any subset, any order, case-insensitive, no duplicates) or "all"/"none";
/// errors name the bad word.
pub fn parse_kinds(s: &str) -> Result<Vec<ProbeKind>, String> {
    const EXPECTED: &str = "expected a comma-separated list of icmp, snmp, tcp, or all, or none";
    let trimmed = s.trim();
    if trimmed.eq_ignore_ascii_case("all") {
        return Ok(ProbeKind::ALL.to_vec());
    }
    if trimmed.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    if trimmed.is_empty() {
        return Err(format!("empty probe list: {EXPECTED}"));
    }
    let mut kinds = Vec::new();
    for word in trimmed.split(',') {
        let w = word.trim();
        let kind = ProbeKind::ALL
            .into_iter()
            .find(|k| w.eq_ignore_ascii_case(k.name()))
            .ok_or_else(|| {
                if w.eq_ignore_ascii_case("all") || w.eq_ignore_ascii_case("none") {
                    format!("probe list: {w:?} cannot be combined with other words")
                } else {
                    format!(
                        "unknown probe type {:?}: {EXPECTED}",
                        w.escape_debug().to_string()
                    )
                }
            })?;
        if kinds.contains(&kind) {
            return Err(format!("probe type {:?} given twice", kind.name()));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

pub fn validate_snmp_user(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid SNMPv3 user name {:?}: 1-32 letters, digits, '_' or '-'",
            name.escape_debug().to_string()
        ))
    }
}

/// Why VERIFY may not probe `ip`, if so: it must name one device, not a group of hosts (the
/// root agent would reflect each request to all of them), not nothing, not the agent itself,
/// and not a loopback address unless the requester is on this host too (from elsewhere, a
/// loopback address means the requester's host, which the agent cannot reach).
pub fn target_refusal(
    ip: IpAddr,
    requester_loopback: bool,
    own: &[IpAddr],
    broadcast: &[IpAddr],
) -> Option<String> {
    let ip = crate::netaddr::canonical_ip(ip);
    let why = match ip {
        _ if ip.is_unspecified() => "an unspecified address",
        _ if ip.is_multicast() => "a multicast address",
        IpAddr::V4(v4) if v4.is_broadcast() => "the broadcast address",
        _ if broadcast.contains(&ip) => "a broadcast address of this host's networks",
        IpAddr::V4(v4) if v4.octets()[0] == 0 => "an address of 'this network' (0.0.0.0/8)",
        _ if ip.is_loopback() && !requester_loopback => {
            "a loopback address, from a requester on another host"
        }
        _ if own.contains(&ip) => "one of the agent's own addresses",
        _ => return None,
    };
    Some(format!("VERIFY target {ip} refused: {why}"))
}

#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub kinds: Vec<ProbeKind>,
    /// Probes per kind (the original sent 10).
    pub count: u32,
    /// From one probe of a kind to the next (the original: 1 s). A probe waits for its answer
    /// until the next one is due, so an unreachable device still gets every probe on time.
    pub interval: Duration,
    /// How long the last probe of each kind waits for its answer.
    pub timeout: Duration,
    pub snmp_user: String,
    pub snmp_auth: Option<Secret>,
    pub snmp_priv: Option<Secret>,
    pub snmp_port: u16,
    pub tcp_port: u16,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            kinds: ProbeKind::ALL.to_vec(),
            count: 10,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            snmp_user: "CaptureScript".to_string(),
            snmp_auth: None,
            snmp_priv: None,
            snmp_port: 161,
            tcp_port: 443,
        }
    }
}

impl ProbeConfig {
    /// From the first probe until the last answer can come: the kinds run in parallel, so this
    /// bounds `run` too.
    pub fn duration(&self) -> Duration {
        self.interval * self.count.saturating_sub(1) + self.timeout
    }

    /// When probe `i` (from 0) is due, and until when it may wait for its answer.
    fn slot(&self, start: Instant, i: u32) -> (Instant, Instant) {
        let due = start + self.interval * i;
        let until = if i + 1 >= self.count {
            due + self.timeout
        } else {
            (due + self.interval).min(due + self.timeout)
        };
        (due, until)
    }
}

/// Threads are scheduled late and sockets time out a little after their deadline; past this,
/// `run` reports what it has rather than wait.
const SLACK: Duration = Duration::from_millis(300);
const SYS_DESCR: [u64; 9] = [1, 3, 6, 1, 2, 1, 1, 1, 0];
pub const NO_SNMP_KEYS: &str = "no SNMPv3 keys (TC_SNMP_AUTH_KEY/TC_SNMP_PRIV_KEY)";

/// Blocking; the enabled kinds run in parallel threads; returns within about `timeout` (+ small
/// slack) whatever the device does. Never panics.
pub fn run(device: &str, cfg: &ProbeConfig) -> ProbeReport {
    let start = Instant::now();
    let resolved =
        resolve(device, start + cfg.timeout).map_err(|e| format!("resolving {device}: {e}"));
    run_resolved(resolved, cfg, Instant::now())
}

/// `run`, but the address a name resolves to is checked first (`check` says why it may not be
/// probed): a name must not reach what its literal address could not.
pub fn run_checked(
    device: &str,
    cfg: &ProbeConfig,
    check: impl Fn(IpAddr) -> Option<String>,
) -> Result<ProbeReport, String> {
    let start = Instant::now();
    let resolved =
        resolve(device, start + cfg.timeout).map_err(|e| format!("resolving {device}: {e}"));
    if let Some(why) = resolved.as_ref().ok().and_then(|a| check(a.ip())) {
        return Err(why);
    }
    Ok(run_resolved(resolved, cfg, Instant::now()))
}

fn run_resolved(
    resolved: Result<SocketAddr, String>,
    cfg: &ProbeConfig,
    start: Instant,
) -> ProbeReport {
    let deadline = start + cfg.duration();
    let mut kinds = cfg.kinds.clone();
    let mut seen = HashSet::new();
    kinds.retain(|k| seen.insert(*k));

    let mut report = ProbeReport::default();
    let addr = match resolved {
        Ok(a) => a,
        Err(e) => {
            for k in kinds {
                *slot(&mut report, k) = Some(ProbeCounts {
                    sent: 0,
                    answered: 0,
                    error: Some(e.clone()),
                });
            }
            return report;
        }
    };

    let (done_tx, done_rx) = mpsc::channel();
    let mut running = Vec::new();
    for kind in kinds {
        let tally = Tally::default();
        let spawned = {
            let tally = tally.clone();
            let cfg = cfg.clone();
            let done = Done {
                tx: done_tx.clone(),
                kind,
                tally: tally.clone(),
            };
            std::thread::Builder::new()
                .name(format!("probe-{}", kind.name()))
                .spawn(move || {
                    let _done = done;
                    match kind {
                        ProbeKind::Icmp => icmp(addr, &cfg, start, &tally),
                        ProbeKind::Snmp => snmp(addr, &cfg, start, &tally),
                        ProbeKind::Tcp => tcp(addr, &cfg, start, &tally),
                    }
                })
        };
        if let Err(e) = spawned {
            tally.fail(format!("starting the {} probe thread: {e}", kind.name()));
        }
        running.push((kind, tally));
    }
    drop(done_tx);

    let hard = deadline + SLACK;
    let mut finished = HashSet::new();
    while finished.len() < running.len() {
        let left = hard.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(kind) => {
                finished.insert(kind);
            }
            // Disconnected: every thread ended or failed to start.
            Err(_) => break,
        }
    }
    for (kind, tally) in running {
        let mut counts = tally.snapshot();
        if !finished.contains(&kind) && counts.error.is_none() {
            counts.error = Some(format!(
                "still waiting for answers after {} ms",
                cfg.duration().as_millis()
            ));
        }
        *slot(&mut report, kind) = Some(counts);
    }
    report
}

fn slot(report: &mut ProbeReport, kind: ProbeKind) -> &mut Option<ProbeCounts> {
    match kind {
        ProbeKind::Icmp => &mut report.icmp,
        ProbeKind::Snmp => &mut report.snmp,
        ProbeKind::Tcp => &mut report.tcp,
    }
}

/// Shared with `run` so that a probe still blocked at the hard deadline reports what it counted.
#[derive(Clone, Default)]
struct Tally(Arc<Mutex<ProbeCounts>>);

impl Tally {
    fn with<R>(&self, f: impl FnOnce(&mut ProbeCounts) -> R) -> R {
        // A panicking probe must not take the report down with it.
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }
    fn sent(&self) {
        self.with(|c| c.sent += 1);
    }
    fn answered(&self) {
        self.with(|c| c.answered += 1);
    }
    fn fail(&self, e: String) {
        self.with(|c| c.error = Some(e));
    }
    fn snapshot(&self) -> ProbeCounts {
        self.with(|c| c.clone())
    }
}

/// Tells `run` a probe thread ended, also when it ended by panicking (the guard drops while
/// unwinding), so `run` need not wait for the hard deadline.
struct Done {
    tx: mpsc::Sender<ProbeKind>,
    kind: ProbeKind,
    tally: Tally,
}

impl Drop for Done {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.tally
                .fail(format!("internal error in the {} probe", self.kind.name()));
        }
        let _ = self.tx.send(self.kind);
    }
}

/// getaddrinfo cannot be cancelled, so a slow resolver is left behind on its own thread rather
/// than allowed to hold `run` past the deadline.
fn resolve(device: &str, deadline: Instant) -> Result<SocketAddr, String> {
    if let Ok(ip) = device.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 0));
    }
    let (tx, rx) = mpsc::channel();
    let name = device.to_string();
    std::thread::Builder::new()
        .name("probe-resolve".into())
        .spawn(move || {
            let r = (name.as_str(), 0u16)
                .to_socket_addrs()
                .map(|mut it| it.next());
            let _ = tx.send(r);
        })
        .map_err(|e| format!("starting the resolver thread: {e}"))?;
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(Some(a))) => Ok(a),
        Ok(Ok(None)) => Err("no addresses".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(mpsc::RecvTimeoutError::Timeout) => Err("timed out".into()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("resolver thread failed".into()),
    }
}

/// Sleeps until probe `i` is due; returns how long it may wait for its answer.
fn pace(cfg: &ProbeConfig, start: Instant, i: u32) -> Duration {
    let (due, until) = cfg.slot(start, i);
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
    until
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

// ---------------------------------------------------------------------------------------------
// TCP

fn tcp(addr: SocketAddr, cfg: &ProbeConfig, start: Instant, tally: &Tally) {
    let target = SocketAddr::new(addr.ip(), cfg.tcp_port);
    let mut last_err = None;
    for i in 0..cfg.count {
        let budget = pace(cfg, start, i);
        tally.sent();
        match TcpStream::connect_timeout(&target, budget) {
            Ok(_) => tally.answered(),
            // The RST proves the device is there; only the port is closed.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => tally.answered(),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last_err = Some(format!(
                    "connect {target}: timed out after {} ms",
                    budget.as_millis()
                ))
            }
            Err(e) => last_err = Some(format!("connect {target}: {e}")),
        }
    }
    if let Some(e) = last_err {
        tally.fail(e);
    }
}

// ---------------------------------------------------------------------------------------------
// SNMPv3

fn snmp(addr: SocketAddr, cfg: &ProbeConfig, start: Instant, tally: &Tally) {
    let (Some(auth), Some(privacy)) = (&cfg.snmp_auth, &cfg.snmp_priv) else {
        tally.fail(NO_SNMP_KEYS.to_string());
        return;
    };
    let target = SocketAddr::new(addr.ip(), cfg.snmp_port);
    let mut last_err = None;
    for i in 0..cfg.count {
        let budget = pace(cfg, start, i);
        match snmp_get(target, &cfg.snmp_user, auth, privacy, budget, tally) {
            Ok(()) => tally.answered(),
            Err(e) => last_err = Some(e),
        }
    }
    if let Some(e) = last_err {
        tally.fail(e);
    }
}

/// One attempt on a fresh session, like one `snmpget`: a new socket means a late answer to an
/// earlier attempt cannot be mistaken for (or spoil) this one, and the device sees a complete
/// discovery + GET exchange each time.
fn snmp_get(
    target: SocketAddr,
    user: &str,
    auth: &Secret,
    privacy: &Secret,
    budget: Duration,
    tally: &Tally,
) -> Result<(), String> {
    use snmp2::v3::{Auth, AuthProtocol, Cipher, Security};

    let security = Security::new(user.as_bytes(), auth.expose().as_bytes())
        .with_auth_protocol(AuthProtocol::Sha1)
        .with_auth(Auth::AuthPriv {
            cipher: Cipher::Aes128,
            privacy_password: privacy.expose().as_bytes().to_vec(),
        });
    let mut sess = snmp2::SyncSession::new_v3(target, Some(budget), random_u16().into(), security)
        .map_err(|e| format!("SNMPv3 {target}: opening a UDP socket: {e}"))?;
    tally.sent();
    let started = Instant::now();
    sess.init()
        .map_err(|e| snmp_error(target, user, Step::Discovery, e, started, budget))?;
    let oid = snmp2::Oid::from(&SYS_DESCR)
        .map_err(|_| format!("SNMPv3 {target}: cannot encode sysDescr.0"))?;
    let started = Instant::now();
    // The first authenticated request may only teach us the agent's boots/time (a REPORT the
    // library turns into AuthUpdated); the retry is then expected to succeed.
    let first = match sess.get(&oid) {
        Ok(pdu) => Some(has_varbind(&pdu, &oid)),
        Err(snmp2::Error::AuthUpdated) => None,
        Err(e) => return Err(snmp_error(target, user, Step::Get, e, started, budget)),
    };
    let found = match first {
        Some(found) => found,
        None => match sess.get(&oid) {
            Ok(pdu) => has_varbind(&pdu, &oid),
            Err(e) => return Err(snmp_error(target, user, Step::Get, e, started, budget)),
        },
    };
    found.map_err(|status| {
        format!(
            "SNMPv3 GET sysDescr.0 from {target} as {user}: response without sysDescr.0 \
             (error-status {status})"
        )
    })
}

fn has_varbind(pdu: &snmp2::Pdu<'_>, oid: &snmp2::Oid<'_>) -> Result<(), u32> {
    if pdu.varbinds.clone().any(|(name, _)| name == *oid) {
        Ok(())
    } else {
        Err(pdu.error_status)
    }
}

/// Describes a failure by the library's error kind only; the library never puts keys into its
/// errors, and neither does this.
fn snmp_error(
    target: SocketAddr,
    user: &str,
    step: Step,
    e: snmp2::Error,
    started: Instant,
    budget: Duration,
) -> String {
    let elapsed = started.elapsed();
    let why = match e {
        // The library folds timeouts and ICMP port-unreachable into one error; time tells them
        // apart.
        snmp2::Error::Receive if elapsed + Duration::from_millis(20) >= budget => match step {
            Step::Discovery => format!("no answer within {} ms", budget.as_millis()),
            // Agents drop what they cannot decrypt without a REPORT, so silence after a
            // successful discovery usually means the priv key.
            Step::Get => format!(
                "no answer within {} ms, though the agent answered engine discovery \
                 (wrong priv key?)",
                budget.as_millis()
            ),
        },
        snmp2::Error::Receive => format!(
            "receive failed after {} ms (port closed or unreachable?)",
            elapsed.as_millis()
        ),
        snmp2::Error::Send => "send failed".to_string(),
        snmp2::Error::AuthFailure(kind) => {
            format!("rejected or unverifiable answer: {kind} (wrong user, auth key or priv key?)")
        }
        snmp2::Error::AuthUpdated => "agent kept resynchronising engine time".to_string(),
        other => other.to_string(),
    };
    let what = match step {
        Step::Discovery => "engine discovery with",
        Step::Get => "GET sysDescr.0 from",
    };
    format!("SNMPv3 {what} {target} as {user}: {why}")
}

#[derive(Clone, Copy)]
enum Step {
    Discovery,
    Get,
}

// ---------------------------------------------------------------------------------------------
// ICMP

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;
/// Lets a reply be told from someone else's echo that happens to reuse our id and sequence.
const ICMP_PAYLOAD: &[u8; 32] = b"tc verify probe tc verify probe!";

/// RFC 1071 Internet checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request. The ICMPv6 checksum covers a pseudo-header with addresses only the kernel
/// knows for sure, and the kernel always fills it in, so it is left zero.
fn echo_request(family: Family, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let kind = match family {
        Family::V4 => ICMP_ECHO_REQUEST,
        Family::V6 => ICMP6_ECHO_REQUEST,
    };
    let mut p = Vec::with_capacity(8 + payload.len());
    p.extend_from_slice(&[kind, 0, 0, 0]);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    if family == Family::V4 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

#[derive(Debug, PartialEq, Eq)]
struct EchoReply<'a> {
    id: u16,
    seq: u16,
    payload: &'a [u8],
}

/// Parses what a socket received as an echo reply, or `None` for anything else. Raw IPv4
/// sockets hand over the IP header too (`with_ip_header`); the kernel checks ICMPv6 checksums
/// itself but not ICMP ones on raw IPv4 sockets.
fn echo_reply(family: Family, with_ip_header: bool, packet: &[u8]) -> Option<EchoReply<'_>> {
    let icmp = if family == Family::V4 && with_ip_header {
        let first = *packet.first()?;
        let ihl = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || ihl < 20 || packet.len() < ihl || packet.get(9) != Some(&1) {
            return None;
        }
        &packet[ihl..]
    } else {
        packet
    };
    if icmp.len() < 8 || icmp[1] != 0 {
        return None;
    }
    let want = match family {
        Family::V4 => ICMP_ECHO_REPLY,
        Family::V6 => ICMP6_ECHO_REPLY,
    };
    if icmp[0] != want {
        return None;
    }
    if family == Family::V4 && with_ip_header && checksum(icmp) != 0 {
        return None;
    }
    Some(EchoReply {
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        payload: &icmp[8..],
    })
}

struct IcmpSocket {
    fd: OwnedFd,
    /// A raw socket: sees every ICMP packet of the host and, on IPv4, the IP header. Otherwise a
    /// ping socket: the kernel picks the identifier and delivers only our replies.
    raw: bool,
}

fn open_socket(family: Family, ty: SocketType) -> io::Result<OwnedFd> {
    let (domain, proto) = match family {
        Family::V4 => (AddressFamily::INET, ipproto::ICMP),
        Family::V6 => (AddressFamily::INET6, ipproto::ICMPV6),
    };
    rustix::net::socket_with(domain, ty, SocketFlags::CLOEXEC, Some(proto)).map_err(io::Error::from)
}

fn is_permission(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::PermissionDenied)
}

impl IcmpSocket {
    fn open(family: Family) -> Result<IcmpSocket, String> {
        match open_socket(family, SocketType::RAW) {
            Ok(fd) => return Ok(IcmpSocket { fd, raw: true }),
            Err(e) if is_permission(&e) => {
                log::debug!("icmp: raw socket not allowed ({e}); trying a ping socket");
            }
            Err(e) => return Err(format!("opening a raw ICMP socket: {e}")),
        }
        match open_socket(family, SocketType::DGRAM) {
            Ok(fd) => Ok(IcmpSocket { fd, raw: false }),
            Err(e) if is_permission(&e) => {
                let sysctl = match family {
                    Family::V4 => "net.ipv4.ping_group_range",
                    Family::V6 => "net.ipv4.ping_group_range, which also governs ICMPv6",
                };
                Err(format!("ICMP needs root or CAP_NET_RAW (or {sysctl})"))
            }
            Err(e) => Err(format!("opening an ICMP ping socket: {e}")),
        }
    }

    fn send_to(&self, packet: &[u8], to: SocketAddr) -> io::Result<()> {
        rustix::net::sendto(&self.fd, packet, SendFlags::empty(), &to)
            .map(|_| ())
            .map_err(io::Error::from)
    }

    /// Waits up to `wait` for something to read. EINTR counts as "not ready yet".
    fn wait_readable(&self, wait: Duration) -> io::Result<bool> {
        let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) => Ok(n > 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// One datagram without blocking, or `None` when none is queued.
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<Option<(usize, Option<IpAddr>)>> {
        match rustix::net::recvfrom(&self.fd, buf, RecvFlags::DONTWAIT) {
            Ok((n, _, from)) => {
                let ip = from
                    .and_then(|a| SocketAddr::try_from(a).ok())
                    .map(|a| a.ip());
                Ok(Some((n, ip)))
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    if crate::sys::random(&mut b) {
        return u16::from_ne_bytes(b);
    }
    // Unpredictability is not a security property here, only a way to differ from other pingers.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id()) as u16
}

/// One ICMP probe run: the echo requests of `cfg`'s slots, and the replies that are ours.
struct Pinger<'a> {
    sock: IcmpSocket,
    family: Family,
    target: SocketAddr,
    addr: SocketAddr,
    id: u16,
    /// The next sequence number to send (1-based).
    next_seq: u32,
    answered: HashSet<u16>,
    last_err: Option<String>,
    tally: &'a Tally,
}

fn icmp(addr: SocketAddr, cfg: &ProbeConfig, start: Instant, tally: &Tally) {
    let deadline = start + cfg.duration();
    let family = match addr {
        SocketAddr::V4(_) => Family::V4,
        SocketAddr::V6(_) => Family::V6,
    };
    let sock = match IcmpSocket::open(family) {
        Ok(s) => s,
        Err(e) => return tally.fail(e),
    };
    let target = match (SocketAddr::new(addr.ip(), 0), addr) {
        (SocketAddr::V6(mut t), SocketAddr::V6(a)) => {
            t.set_scope_id(a.scope_id());
            SocketAddr::V6(t)
        }
        (t, _) => t,
    };
    let mut p = Pinger {
        sock,
        family,
        target,
        addr,
        id: random_u16(),
        next_seq: 1,
        answered: HashSet::new(),
        last_err: None,
        tally,
    };
    // Sequence numbers are 1..=count; `count` is u32 but beyond u16 the wire cannot tell them
    // apart, and nobody sends that many probes in one VERIFY.
    let count = cfg.count.min(u32::from(u16::MAX));
    let mut next_send = start;
    loop {
        let now = Instant::now();
        if p.answered.len() as u32 >= count || now >= deadline {
            break;
        }
        if p.next_seq <= count && now >= next_send {
            p.send();
            next_send = cfg.slot(start, p.next_seq - 1).0;
            continue;
        }
        let until = if p.next_seq <= count {
            next_send.min(deadline)
        } else {
            deadline
        };
        match p.sock.wait_readable(until.saturating_duration_since(now)) {
            Ok(false) => continue,
            Ok(true) => p.take_replies(),
            Err(e) => {
                p.last_err = Some(format!("waiting for echo replies: {e}"));
                break;
            }
        }
    }
    p.report(count);
}

impl Pinger<'_> {
    fn send(&mut self) {
        let seq = self.next_seq as u16;
        self.next_seq += 1;
        let packet = echo_request(self.family, self.id, seq, ICMP_PAYLOAD);
        match self.sock.send_to(&packet, self.target) {
            Ok(()) => self.tally.sent(),
            Err(e) => {
                self.last_err = Some(format!("sending echo request to {}: {e}", self.addr.ip()))
            }
        }
    }

    /// Everything queued on the socket; our replies are counted once each.
    fn take_replies(&mut self) {
        let mut buf = [0u8; 2048];
        loop {
            match self.sock.recv_from(&mut buf) {
                Ok(Some((n, from))) => {
                    if from != Some(self.addr.ip()) {
                        continue;
                    }
                    let with_ip_header = self.sock.raw && self.family == Family::V4;
                    let Some(reply) = echo_reply(self.family, with_ip_header, &buf[..n]) else {
                        continue;
                    };
                    // A ping socket's identifier is the kernel's choice, and the kernel already
                    // routes only our replies to it.
                    let ours = (!self.sock.raw || reply.id == self.id)
                        && reply.seq >= 1
                        && u32::from(reply.seq) < self.next_seq
                        && reply.payload == ICMP_PAYLOAD;
                    if ours && self.answered.insert(reply.seq) {
                        self.tally.answered();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // ICMP errors queued on the socket (e.g. EHOSTUNREACH) are worth reporting
                    // but do not end the probe.
                    let ip = self.addr.ip();
                    self.last_err = Some(format!("receiving echo replies from {ip}: {e}"));
                    break;
                }
            }
        }
    }

    fn report(self, count: u32) {
        let sent = self.tally.snapshot().sent;
        let missing = count.saturating_sub(self.answered.len() as u32);
        if missing == 0 {
            return;
        }
        let ip = self.addr.ip();
        self.tally.fail(self.last_err.unwrap_or_else(|| {
            if sent < count {
                format!("sent only {sent} of {count} echo requests to {ip} in time")
            } else {
                format!("{missing} of {count} echo requests to {ip} unanswered")
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener, UdpSocket};
    use std::process::{Child, Command, Stdio};

    use crate::sys::is_root;

    /// 3 probes 100 ms apart, the last waiting 300 ms: quick on loopback.
    fn only(kind: ProbeKind) -> ProbeConfig {
        ProbeConfig {
            kinds: vec![kind],
            count: 3,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            ..ProbeConfig::default()
        }
    }

    #[test]
    fn parse_kinds_table() {
        use ProbeKind::*;
        let ok: &[(&str, &[ProbeKind])] = &[
            ("icmp,snmp,tcp", &[Icmp, Snmp, Tcp]),
            ("tcp,icmp", &[Tcp, Icmp]),
            ("SNMP", &[Snmp]),
            (" Icmp , TCP ", &[Icmp, Tcp]),
            ("all", &[Icmp, Snmp, Tcp]),
            ("ALL", &[Icmp, Snmp, Tcp]),
            ("none", &[]),
            ("None", &[]),
        ];
        for (input, want) in ok {
            assert_eq!(parse_kinds(input).as_deref(), Ok(*want), "{input:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("icmp,udp", "unknown probe type \"udp\""),
            ("ping", "unknown probe type \"ping\""),
            ("icmp,,tcp", "unknown probe type \"\""),
            ("icmp,ICMP", "probe type \"icmp\" given twice"),
            ("all,tcp", "\"all\" cannot be combined"),
            ("tcp,none", "\"none\" cannot be combined"),
            ("", "empty probe list"),
            ("  ", "empty probe list"),
        ];
        for (input, want) in bad {
            let err = parse_kinds(input).unwrap_err();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn probes_are_paced_and_wait_until_the_next_is_due() {
        let ms = Duration::from_millis;
        let t = Instant::now();
        // (count, interval, timeout, probe) -> (due, waits until), in ms from the start
        let table: &[(u32, u64, u64, u32, u64, u64)] = &[
            (10, 1000, 2000, 0, 0, 1000),
            (10, 1000, 2000, 8, 8000, 9000),
            (10, 1000, 2000, 9, 9000, 11000), // the last waits the whole timeout
            (3, 1000, 300, 1, 1000, 1300),    // a timeout shorter than the interval
            (1, 1000, 2000, 0, 0, 2000),
        ];
        for &(count, interval, timeout, i, due, until) in table {
            let c = ProbeConfig {
                count,
                interval: ms(interval),
                timeout: ms(timeout),
                ..ProbeConfig::default()
            };
            assert_eq!(c.slot(t, i), (t + ms(due), t + ms(until)), "{count} {i}");
        }
    }

    #[test]
    fn default_config() {
        let c = ProbeConfig::default();
        assert_eq!(c.kinds, ProbeKind::ALL);
        // The original's pacing: 10 of each kind, one a second.
        assert_eq!(
            (c.count, c.interval, c.timeout),
            (10, Duration::from_secs(1), Duration::from_secs(2))
        );
        assert_eq!(c.duration(), Duration::from_secs(11));
        assert_eq!(c.snmp_user, "CaptureScript");
        assert_eq!((c.snmp_port, c.tcp_port), (161, 443));
        assert!(c.snmp_auth.is_none() && c.snmp_priv.is_none());
    }

    #[test]
    fn checksum_table() {
        let table: &[(&[u8], u16)] = &[
            (&[], 0xffff),
            // RFC 1071 section 3 example: sum 0xddf2.
            (&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], !0xddf2),
            // Odd length: the last byte is padded with a zero on the right.
            (&[0x01], 0xfeff),
            (&[0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x00, 0x01], 0xe5ca),
            // End-around carry: 0xffff + 0x0001 = 0x1_0000 -> 0x0001.
            (&[0xff, 0xff, 0x00, 0x01], 0xfffe),
            (&[0xff, 0xff], 0x0000),
        ];
        for (data, want) in table {
            assert_eq!(checksum(data), *want, "{data:02x?}");
        }
    }

    #[test]
    fn echo_request_table() {
        // family, id, seq, payload, packet
        type Row<'a> = (Family, u16, u16, &'a [u8], &'a [u8]);
        let table: &[Row] = &[
            (
                Family::V4,
                0x1234,
                1,
                b"",
                &[8, 0, 0xe5, 0xca, 0x12, 0x34, 0, 1],
            ),
            (
                Family::V4,
                0xffff,
                0xffff,
                b"ab",
                &[8, 0, 0x96, 0x9d, 0xff, 0xff, 0xff, 0xff, b'a', b'b'],
            ),
            (
                Family::V6,
                0x1234,
                2,
                b"x",
                &[128, 0, 0, 0, 0x12, 0x34, 0, 2, b'x'],
            ),
        ];
        for (family, id, seq, payload, want) in table {
            let p = echo_request(*family, *id, *seq, payload);
            assert_eq!(&p[..], *want, "{family:?} {id} {seq}");
            if *family == Family::V4 {
                assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
            }
        }
    }

    fn ipv4_header(ihl_words: u8, proto: u8, icmp_len: usize) -> Vec<u8> {
        let len = usize::from(ihl_words) * 4;
        let mut h = vec![0u8; len];
        h[0] = 0x40 | ihl_words;
        h[2..4].copy_from_slice(&((len + icmp_len) as u16).to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&[127, 0, 0, 1]);
        h[16..20].copy_from_slice(&[127, 0, 0, 1]);
        h
    }

    fn v4_reply(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = echo_request(Family::V4, id, seq, payload);
        p[0] = ICMP_ECHO_REPLY;
        p[2..4].copy_from_slice(&[0, 0]);
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn echo_reply_table() {
        let reply = v4_reply(0xbeef, 3, b"data");
        let with = |ihl: u8, proto: u8, icmp: &[u8]| {
            let mut p = ipv4_header(ihl, proto, icmp.len());
            p.extend_from_slice(icmp);
            p
        };
        let mut bad_sum = reply.clone();
        bad_sum[9] ^= 1;
        let request = echo_request(Family::V4, 0xbeef, 3, b"data");
        let mut v6 = echo_request(Family::V6, 7, 9, b"z");
        v6[0] = ICMP6_ECHO_REPLY;
        let mut v6_code = v6.clone();
        v6_code[1] = 1;
        let want = Some((0xbeef, 3, &b"data"[..]));
        // name, family, with IP header, packet, (id, seq, payload)
        type Row<'a> = (&'a str, Family, bool, Vec<u8>, Option<(u16, u16, &'a [u8])>);
        let table: &[Row] = &[
            (
                "raw v4, plain header",
                Family::V4,
                true,
                with(5, 1, &reply),
                want,
            ),
            (
                "raw v4, header with options",
                Family::V4,
                true,
                with(6, 1, &reply),
                want,
            ),
            (
                "ping socket, no header",
                Family::V4,
                false,
                reply.clone(),
                want,
            ),
            (
                "our own request on loopback",
                Family::V4,
                true,
                with(5, 1, &request),
                None,
            ),
            ("bad checksum", Family::V4, true, with(5, 1, &bad_sum), None),
            ("not ICMP", Family::V4, true, with(5, 6, &reply), None),
            (
                "truncated ICMP",
                Family::V4,
                true,
                with(5, 1, &reply[..7]),
                None,
            ),
            (
                "IHL beyond the packet",
                Family::V4,
                true,
                with(15, 1, &[])[..30].to_vec(),
                None,
            ),
            (
                "IHL below minimum",
                Family::V4,
                true,
                {
                    let mut p = with(5, 1, &reply);
                    p[0] = 0x44;
                    p
                },
                None,
            ),
            (
                "not IPv4",
                Family::V4,
                true,
                {
                    let mut p = with(5, 1, &reply);
                    p[0] = 0x65;
                    p
                },
                None,
            ),
            ("empty", Family::V4, true, vec![], None),
            (
                "v6 reply",
                Family::V6,
                true,
                v6.clone(),
                Some((7, 9, &b"z"[..])),
            ),
            ("v6 nonzero code", Family::V6, true, v6_code, None),
            (
                "v4 reply type on a v6 socket",
                Family::V6,
                true,
                reply.clone(),
                None,
            ),
            (
                "v6 request",
                Family::V6,
                true,
                echo_request(Family::V6, 7, 9, b"z"),
                None,
            ),
        ];
        for (name, family, hdr, packet, want) in table {
            let got = echo_reply(*family, *hdr, packet).map(|r| (r.id, r.seq, r.payload));
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn resolution_failure_fails_every_enabled_kind() {
        let cfg = ProbeConfig {
            kinds: vec![ProbeKind::Tcp, ProbeKind::Icmp],
            ..ProbeConfig::default()
        };
        let err = "resolving nowhere.example: no addresses".to_string();
        let r = run_resolved(Err(err.clone()), &cfg, Instant::now());
        let want = Some(ProbeCounts {
            sent: 0,
            answered: 0,
            error: Some(err),
        });
        assert_eq!((&r.icmp, &r.tcp), (&want, &want));
        assert_eq!(r.snmp, None);
        assert!(!r.ok());
    }

    #[test]
    fn resolve_literals_and_names() {
        let soon = Instant::now() + Duration::from_secs(3);
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        assert_eq!(
            resolve("127.0.0.1", soon),
            Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        );
        assert_eq!(resolve("::1", soon), Ok(v6));
        // /etc/hosts answers this one; no resolver traffic leaves the host.
        assert!(resolve("localhost", soon).unwrap().ip().is_loopback());
        // A literal needs no time at all.
        assert!(resolve("127.0.0.1", Instant::now()).is_ok());
    }

    #[test]
    fn none_probes_nothing() {
        let cfg = ProbeConfig {
            kinds: vec![],
            ..ProbeConfig::default()
        };
        assert_eq!(run("127.0.0.1", &cfg), ProbeReport::default());
    }

    #[test]
    fn tcp_accepted_counts_as_answered() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let cfg = ProbeConfig {
            tcp_port: l.local_addr().unwrap().port(),
            ..only(ProbeKind::Tcp)
        };
        let r = run("127.0.0.1", &cfg);
        let want = ProbeCounts {
            sent: 3,
            answered: 3,
            error: None,
        };
        assert_eq!(r.tcp, Some(want));
        assert!(r.ok() && r.icmp.is_none() && r.snmp.is_none());
    }

    #[test]
    fn tcp_refused_counts_as_answered() {
        let port = {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let cfg = ProbeConfig {
            tcp_port: port,
            ..only(ProbeKind::Tcp)
        };
        let r = run("127.0.0.1", &cfg);
        let want = ProbeCounts {
            sent: 3,
            answered: 3,
            error: None,
        };
        assert_eq!(r.tcp, Some(want));
    }

    #[test]
    fn snmp_without_keys_sends_nothing() {
        let cfg = only(ProbeKind::Snmp);
        let r = run("127.0.0.1", &cfg);
        let want = ProbeCounts {
            sent: 0,
            answered: 0,
            error: Some(NO_SNMP_KEYS.into()),
        };
        assert_eq!(r.snmp, Some(want));
    }

    /// The timeout path without any network: a UDP socket that receives and never answers.
    #[test]
    fn snmp_silent_agent_times_out_within_the_bound() {
        let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let cfg = ProbeConfig {
            snmp_port: silent.local_addr().unwrap().port(),
            snmp_auth: Some(Secret::new("authpass123".into())),
            snmp_priv: Some(Secret::new("privpass123".into())),
            timeout: Duration::from_millis(900),
            ..only(ProbeKind::Snmp)
        };
        let r = run("127.0.0.1", &cfg);
        let c = r.snmp.unwrap();
        assert_eq!((c.sent, c.answered), (3, 0), "{c:?}");
        let err = c.error.unwrap();
        assert!(err.contains("no answer within"), "{err}");
        assert!(!err.contains("authpass123") && !err.contains("privpass123"));
    }

    #[test]
    #[ignore = "needs root (raw ICMP sockets): as root, cargo test -- --include-ignored"]
    fn icmp_loopback_v4_answered() {
        assert!(is_root(), "raw ICMP sockets need root");
        let r = run("127.0.0.1", &only(ProbeKind::Icmp));
        let want = ProbeCounts {
            sent: 3,
            answered: 3,
            error: None,
        };
        assert_eq!(r.icmp, Some(want));
    }

    /// Without root the raw socket is refused; the ping socket then works or the error says
    /// what would make it work. (As root the raw socket works.)
    #[test]
    fn icmp_unprivileged_falls_back_or_explains() {
        let c = run("127.0.0.1", &only(ProbeKind::Icmp)).icmp.unwrap();
        match c.error {
            None => assert_eq!((c.sent, c.answered), (3, 3)),
            Some(e) => {
                assert_eq!((c.sent, c.answered), (0, 0));
                assert!(
                    e.contains("CAP_NET_RAW") && e.contains("ping_group_range"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    #[ignore = "needs root (raw ICMP sockets): as root, cargo test -- --include-ignored"]
    fn icmp_loopback_v6_answered() {
        assert!(is_root(), "raw ICMP sockets need root");
        assert!(
            UdpSocket::bind("[::1]:0").is_ok(),
            "no IPv6 loopback here (::1)"
        );
        let r = run("::1", &only(ProbeKind::Icmp));
        let want = ProbeCounts {
            sent: 3,
            answered: 3,
            error: None,
        };
        assert_eq!(r.icmp, Some(want));
    }

    /// Two probes of the same host at once each count only their own replies, though each raw
    /// socket sees both.
    #[test]
    #[ignore = "needs root (raw ICMP sockets): as root, cargo test -- --include-ignored"]
    fn icmp_concurrent_probes_do_not_count_each_others_replies() {
        assert!(is_root(), "raw ICMP sockets need root");
        let cfg = ProbeConfig {
            count: 5,
            ..only(ProbeKind::Icmp)
        };
        let other = {
            let cfg = cfg.clone();
            std::thread::spawn(move || run("127.0.0.1", &cfg))
        };
        let a = run("127.0.0.1", &cfg);
        let b = other.join().unwrap();
        for r in [a, b] {
            let c = r.icmp.unwrap();
            assert_eq!((c.sent, c.answered), (5, 5), "{c:?}");
        }
    }

    #[test]
    #[ignore = "needs root (raw ICMP sockets): as root, cargo test -- --include-ignored"]
    fn all_kinds_in_parallel_on_loopback() {
        assert!(is_root(), "raw ICMP sockets need root");
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let cfg = ProbeConfig {
            tcp_port: l.local_addr().unwrap().port(),
            snmp_port: silent.local_addr().unwrap().port(),
            snmp_auth: Some(Secret::new("authpass123".into())),
            snmp_priv: Some(Secret::new("privpass123".into())),
            timeout: Duration::from_secs(1),
            kinds: ProbeKind::ALL.to_vec(),
            ..only(ProbeKind::Icmp)
        };
        let r = run("127.0.0.1", &cfg);
        assert_eq!(r.icmp.as_ref().map(|c| c.answered), Some(3), "{r:?}");
        assert_eq!(r.tcp.as_ref().map(|c| c.answered), Some(3), "{r:?}");
        assert_eq!(
            r.snmp.as_ref().map(|c| (c.sent, c.answered)),
            Some((3, 0)),
            "{r:?}"
        );
        assert!(!r.ok());
    }

    /// An snmpd started by a test, stopped by its PID when the test ends, however it ends.
    struct Snmpd {
        child: Child,
        log: std::path::PathBuf,
    }

    impl Snmpd {
        fn log(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }
    }

    impl Drop for Snmpd {
        fn drop(&mut self) {
            let _ = crate::sys::terminate(self.child.id());
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn snmp_cfg(port: u16, user: &str, auth: &str, privacy: &str) -> ProbeConfig {
        ProbeConfig {
            snmp_port: port,
            snmp_user: user.into(),
            snmp_auth: Some(Secret::new(auth.into())),
            snmp_priv: Some(Secret::new(privacy.into())),
            ..only(ProbeKind::Snmp)
        }
    }

    #[test]
    #[ignore = "needs root and snmpd: as root, cargo test -- --include-ignored"]
    fn snmpv3_against_real_snmpd() {
        const SNMPD: &str = "/usr/sbin/snmpd";
        assert!(is_root(), "the snmpd test runs as root only");
        assert!(
            std::path::Path::new(SNMPD).exists(),
            "{SNMPD} is not installed (apt-get install snmpd)"
        );
        let dir = tempfile::tempdir().unwrap();
        let persist = dir.path().join("persist");
        std::fs::create_dir(&persist).unwrap();
        let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("udp:127.0.0.1:{port}");
        let conf = dir.path().join("snmpd.conf");
        // No agentaddress line: snmpd would open it in addition to the argv endpoint, and the
        // second bind of the same port fails.
        std::fs::write(
            &conf,
            "createUser tcprobe SHA \"authpass123\" AES \"privpass123\"\n\
             rouser tcprobe priv\n\
             sysDescr tc probe test agent\n",
        )
        .unwrap();
        let log = dir.path().join("snmpd.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(SNMPD)
            .args(["-f", "-Lo", "-C", "-c"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.path().join("snmpd.pid"))
            .arg(&listen)
            // Keeps snmpd's persistent user and boots data (normally /var/lib/snmp) in the
            // temp dir, so the test leaves nothing behind.
            .env("SNMP_PERSISTENT_DIR", &persist)
            .env("MIBS", "")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let snmpd = Snmpd { child, log };

        let good = snmp_cfg(port, "tcprobe", "authpass123", "privpass123");
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let probe = ProbeConfig {
                count: 1,
                timeout: Duration::from_millis(300),
                ..good.clone()
            };
            if run("127.0.0.1", &probe).ok() {
                break;
            }
            assert!(
                Instant::now() < until,
                "snmpd never answered; log:\n{}",
                snmpd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }

        let r = run("127.0.0.1", &good);
        let want = ProbeCounts {
            sent: 3,
            answered: 3,
            error: None,
        };
        assert_eq!(r.snmp, Some(want), "log:\n{}", snmpd.log());

        let wrong: &[(&str, &str, &str)] = &[
            ("wrong priv key", "authpass123", "wrongpriv99"),
            ("wrong auth key", "wrongauth99", "privpass123"),
        ];
        for (name, auth, privacy) in wrong {
            let cfg = ProbeConfig {
                timeout: Duration::from_millis(1500),
                ..snmp_cfg(port, "tcprobe", auth, privacy)
            };
            let c = run("127.0.0.1", &cfg).snmp.unwrap();
            assert_eq!((c.sent, c.answered), (3, 0), "{name}: {c:?}");
            let err = c.error.unwrap_or_default();
            assert!(!err.is_empty(), "{name}");
            for key in ["authpass123", "privpass123", auth, privacy] {
                assert!(!err.contains(key), "{name}: error shows a key: {err}");
            }
            println!("{name}: {err}");
        }

        let c = run(
            "127.0.0.1",
            &snmp_cfg(port, "nobody", "authpass123", "privpass123"),
        )
        .snmp
        .unwrap();
        assert_eq!(c.answered, 0, "unknown user: {c:?}");
        println!("unknown user: {}", c.error.unwrap_or_default());

        drop(snmpd);
        let leftovers: Vec<_> = std::fs::read_dir(&persist)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        println!("snmpd persistent files kept in the temp dir: {leftovers:?}");
    }
}
