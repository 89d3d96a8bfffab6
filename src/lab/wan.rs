//! `tc lab up --wan`: a real router between the OVOC side and the devices, so the two captures
//! see different packets and a one-way loss can be rehearsed.
//!
//! The OVOC side is this host's own network namespace: the agent, the session, the emulated
//! OVOC and a user's own `tc` commands run there as on an OVOC server, unchanged. Two namespaces
//! are made per lab: a router (`tclab-<S>-r`, forwarding, nftables drop sets, and with `--nat` a
//! 1:1 NAT) and the devices' side (`tclab-<S>-d`, every device address on one interface,
//! their snmpd, sshd and live tcpdumps). veth pairs join them:
//!
//! ```text
//! host  tclab<S>-o 198.18.S.1 ── to-ovoc 198.18.S.2 [router] to-cpe ── wan  [devices]
//!                                          198.19.S.254 (100.64.S.254 with --nat)   198.19.S.n
//! ```
//!
//! The addresses come from the benchmarking block 198.18.0.0/15 (RFC 2544), and with `--nat`
//! the devices' own addresses from the carrier-grade NAT block 100.64.0.0/10 (RFC 6598), so a
//! lab never collides with a real network; two labs differ in `S`. Faults are elements of
//! nftables sets, with the kernel's own timeout for `--for`: a fault ends on time even if
//! nobody is left to end it.
//!
//! Pure here: the plan (names, addresses, the commands and rule sets). The shell runs `ip` and
//! `nft` with arguments, never through a shell.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The lab directory's record of its WAN, written before anything is made, so that `tc lab
/// cleanup` after a kill -9 and `tc lab wan` find it.
pub const STATE_FILE: &str = "wan";
/// Devices per WAN lab: each needs its own snmpd to answer OVOC's polls (a device without one
/// would be reported lost at once), and the lab runs at most 100 of them.
pub const MAX_DEVICES: u32 = 100;

/// One lab's WAN, all of it derived from the subnet number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub subnet: u8,
    pub nat: bool,
    pub devices: u32,
}

/// A fault on one device's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The router drops what OVOC sends to the device.
    ToDevice,
    /// The router drops what the device sends.
    FromDevice,
    Both,
    /// The device's SNMP agent stops answering: requests arrive (the device's capture shows
    /// them), nothing answers them. REST and SSH still answer, as on a device whose SNMP agent
    /// hung, so the capture can be stopped and fetched.
    Silent,
}

impl Fault {
    /// As `lab.fault` names it.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ToDevice => "to_device",
            Fault::FromDevice => "from_device",
            Fault::Both => "both",
            Fault::Silent => "silent",
        }
    }

    /// (namespace is the router's, set names).
    fn sets(self) -> (bool, &'static [&'static str]) {
        match self {
            Fault::ToDevice => (true, &["to_device"]),
            Fault::FromDevice => (true, &["from_device"]),
            Fault::Both => (true, &["to_device", "from_device"]),
            Fault::Silent => (false, &["silent"]),
        }
    }
}

/// One command of the set-up: `ip` or `nft` arguments, and what goes to its standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub program: &'static str,
    pub args: Vec<String>,
    pub stdin: Option<String>,
}

fn ip(args: &[&str]) -> Step {
    Step {
        program: "ip",
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: None,
    }
}

const ROUTER_OVOC_IF: &str = "to-ovoc";
const ROUTER_CPE_IF: &str = "to-cpe";
/// The devices' one interface in their namespace; their tcpdumps capture on it.
pub const DEVICE_IF: &str = "wan";

impl Plan {
    pub fn router_ns(&self) -> String {
        format!("tclab-{}-r", self.subnet)
    }
    pub fn device_ns(&self) -> String {
        format!("tclab-{}-d", self.subnet)
    }
    /// The OVOC side's interface (the agent's `--interface`).
    pub fn host_if(&self) -> String {
        format!("tclab{}-o", self.subnet)
    }
    /// The OVOC server's address as the devices see it.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 1)
    }
    fn router_ovoc_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 2)
    }
    /// Device `i` as OVOC, the controller and the inventory know it.
    pub fn public(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.subnet, 1 + i as u8)
    }
    /// Device `i` as it knows itself (another address behind NAT).
    pub fn own(&self, i: u32) -> Ipv4Addr {
        if self.nat {
            Ipv4Addr::new(100, 64, self.subnet, 1 + i as u8)
        } else {
            self.public(i)
        }
    }
    fn router_cpe_addr(&self) -> Ipv4Addr {
        if self.nat {
            Ipv4Addr::new(100, 64, self.subnet, 254)
        } else {
            Ipv4Addr::new(198, 19, self.subnet, 254)
        }
    }
    /// The device's own address for its public one.
    pub fn own_of(&self, public: Ipv4Addr) -> Option<Ipv4Addr> {
        (0..self.devices)
            .find(|i| self.public(*i) == public)
            .map(|i| self.own(i))
    }

    /// Everything `create` runs, in order.
    pub fn setup(&self) -> Vec<Step> {
        let (r, d, h) = (self.router_ns(), self.device_ns(), self.host_if());
        let cidr = |a: Ipv4Addr| format!("{a}/24");
        let mut steps = vec![
            ip(&["netns", "add", &r]),
            ip(&["netns", "add", &d]),
            ip(&[
                "link",
                "add",
                &h,
                "type",
                "veth",
                "peer",
                "name",
                ROUTER_OVOC_IF,
                "netns",
                &r,
            ]),
            ip(&[
                "-n",
                &r,
                "link",
                "add",
                ROUTER_CPE_IF,
                "type",
                "veth",
                "peer",
                "name",
                DEVICE_IF,
                "netns",
                &d,
            ]),
            ip(&["addr", "add", &cidr(self.host_addr()), "dev", &h]),
            ip(&["link", "set", &h, "up"]),
            ip(&[
                "route",
                "add",
                &format!("198.19.{}.0/24", self.subnet),
                "via",
                &self.router_ovoc_addr().to_string(),
                "dev",
                &h,
            ]),
        ];
        let mut router = format!(
            "addr add {} dev {ROUTER_OVOC_IF}\naddr add {} dev {ROUTER_CPE_IF}\n",
            cidr(self.router_ovoc_addr()),
            cidr(self.router_cpe_addr())
        );
        router.push_str(&format!(
            "link set lo up\nlink set {ROUTER_OVOC_IF} up\nlink set {ROUTER_CPE_IF} up\n"
        ));
        steps.push(batch(&r, router));
        let mut devices = String::new();
        for i in 0..self.devices {
            devices.push_str(&format!("addr add {} dev {DEVICE_IF}\n", cidr(self.own(i))));
        }
        devices.push_str(&format!(
            "link set lo up\nlink set {DEVICE_IF} up\nroute add default via {}\n",
            self.router_cpe_addr()
        ));
        steps.push(batch(&d, devices));
        steps.push(Step {
            program: "ip",
            args: [
                "netns",
                "exec",
                &r,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ]
            .map(String::from)
            .to_vec(),
            stdin: None,
        });
        steps.push(nft(&r, self.router_rules()));
        steps.push(nft(&d, self.device_rules()));
        steps
    }

    /// The router's tables: a drop set per direction (keyed by the device's own address: the
    /// forward hook sees it after DNAT and before SNAT), and with NAT one mapping each way.
    pub fn router_rules(&self) -> String {
        let mut t = String::from(
            "table inet tclab {\n  \
             set to_device { type ipv4_addr; flags timeout; }\n  \
             set from_device { type ipv4_addr; flags timeout; }\n  \
             chain forward { type filter hook forward priority 0; policy accept;\n    \
             ip daddr @to_device drop\n    ip saddr @from_device drop\n  }\n}\n",
        );
        if self.nat {
            let pairs = |from: &dyn Fn(u32) -> Ipv4Addr, to: &dyn Fn(u32) -> Ipv4Addr| {
                (0..self.devices)
                    .map(|i| format!("{} : {}", from(i), to(i)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let inbound = pairs(&|i| self.public(i), &|i| self.own(i));
            let outbound = pairs(&|i| self.own(i), &|i| self.public(i));
            // fully-random: the OVOC side sees other source ports than the devices use, as
            // behind a carrier's NAT.
            t.push_str(&format!(
                "table ip tclabnat {{\n  \
                 map inbound {{ type ipv4_addr : ipv4_addr; elements = {{ {inbound} }} }}\n  \
                 map outbound {{ type ipv4_addr : ipv4_addr; elements = {{ {outbound} }} }}\n  \
                 chain prerouting {{ type nat hook prerouting priority -100; policy accept;\n    \
                 iifname \"{ROUTER_OVOC_IF}\" dnat to ip daddr map @inbound\n  }}\n  \
                 chain postrouting {{ type nat hook postrouting priority 100; policy accept;\n    \
                 oifname \"{ROUTER_OVOC_IF}\" snat to ip saddr map @outbound fully-random\n  }}\n}}\n"
            ));
        }
        t
    }

    /// The devices' side: the set of devices whose SNMP agent is silent. The input hook runs
    /// after the capture tap, so the device's tcpdump still records the requests.
    pub fn device_rules(&self) -> String {
        "table inet tclabdev {\n  \
         set silent { type ipv4_addr; flags timeout; }\n  \
         chain input { type filter hook input priority 0; policy accept;\n    \
         ip daddr @silent udp dport 161 drop\n  }\n}\n"
            .into()
    }

    /// The `nft` step that starts `fault` on `public` (for `duration`, or until restored).
    pub fn fault(
        &self,
        public: Ipv4Addr,
        fault: Fault,
        duration: Option<Duration>,
    ) -> Result<Step, String> {
        let own = self.own_address(public)?;
        let (router, sets) = fault.sets();
        let timeout = match duration {
            Some(d) if d.as_millis() > 0 => format!(" timeout {}ms", d.as_millis()),
            Some(_) => return Err("--for must be longer than 0".into()),
            None => String::new(),
        };
        let table = if router {
            "inet tclab"
        } else {
            "inet tclabdev"
        };
        // Added, deleted and added again in one transaction: a fault already on gets the new
        // duration (a plain add keeps an existing element as it was).
        let script: String = sets
            .iter()
            .map(|s| {
                format!(
                    "add element {table} {s} {{ {own} }}\ndelete element {table} {s} {{ {own} }}\n\
                     add element {table} {s} {{ {own}{timeout} }}\n"
                )
            })
            .collect();
        Ok(nft(&self.fault_ns(router), script))
    }

    /// The `nft` steps that end every fault on `public`: each element added then deleted in one
    /// transaction, which succeeds whether or not the fault was on.
    pub fn restore(&self, public: Ipv4Addr) -> Result<Vec<Step>, String> {
        let own = self.own_address(public)?;
        let script = |table: &str, sets: &[&str]| -> String {
            sets.iter()
                .map(|s| {
                    format!(
                        "add element {table} {s} {{ {own} }}\ndelete element {table} {s} {{ {own} }}\n"
                    )
                })
                .collect()
        };
        Ok(vec![
            nft(
                &self.router_ns(),
                script("inet tclab", &["to_device", "from_device"]),
            ),
            nft(&self.device_ns(), script("inet tclabdev", &["silent"])),
        ])
    }

    fn fault_ns(&self, router: bool) -> String {
        if router {
            self.router_ns()
        } else {
            self.device_ns()
        }
    }

    /// The device's own address, or an error naming `public` and the lab's range.
    pub fn own_address(&self, public: Ipv4Addr) -> Result<Ipv4Addr, String> {
        self.own_of(public).ok_or_else(|| {
            format!(
                "{public} is not a device of this lab (198.19.{}.1-{})",
                self.subnet, self.devices
            )
        })
    }

    /// `STATE_FILE`'s text: everything else follows from it.
    pub fn state_text(&self) -> String {
        format!(
            "subnet {}\nnat {}\ndevices {}\n",
            self.subnet, self.nat as u8, self.devices
        )
    }

    /// Reads `state_text` back, strictly (names of namespaces to delete come from it): exactly
    /// the three keys, once each, in the ranges the command line allows.
    pub fn parse_state(text: &str) -> Result<Plan, String> {
        let mut fields = std::collections::HashMap::new();
        for line in text.lines() {
            let (k, v) = line
                .split_once(' ')
                .ok_or_else(|| format!("unreadable line {line:?}"))?;
            if !["subnet", "nat", "devices"].contains(&k) {
                return Err(format!("unknown key {k:?}"));
            }
            if fields.insert(k, v).is_some() {
                return Err(format!("{k:?} given twice"));
            }
        }
        let get = |k: &str, range: std::ops::RangeInclusive<u32>| -> Result<u32, String> {
            let v = fields.get(k).ok_or_else(|| format!("no {k:?}"))?;
            v.parse::<u32>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| format!("invalid {k} {v:?}: give {}-{}", range.start(), range.end()))
        };
        Ok(Plan {
            subnet: get("subnet", 1..=200)? as u8,
            nat: get("nat", 0..=1)? == 1,
            devices: get("devices", 1..=MAX_DEVICES)?,
        })
    }
}

fn batch(ns: &str, text: String) -> Step {
    Step {
        program: "ip",
        args: ["-n", ns, "-batch", "-"].map(String::from).to_vec(),
        stdin: Some(text),
    }
}

fn nft(ns: &str, script: String) -> Step {
    Step {
        program: "ip",
        args: ["netns", "exec", ns, "nft", "-f", "-"]
            .map(String::from)
            .to_vec(),
        stdin: Some(script),
    }
}

/// Starts `fault` on device `public` (with `None`, ends every fault on it) and says so in a
/// `lab.fault` line: what `tc lab wan` and `tc lab demo` share.
pub fn inject(
    plan: &Plan,
    public: Ipv4Addr,
    fault: Option<Fault>,
    duration: Option<Duration>,
) -> Result<(), String> {
    let (steps, name) = match fault {
        Some(f) => (vec![plan.fault(public, f, duration)?], f.name()),
        None => (plan.restore(public)?, "restored"),
    };
    for s in &steps {
        run_step(s)?;
    }
    crate::emit::emit(&crate::event::Event::LabFault {
        device: public.to_string(),
        fault: name.into(),
        seconds: duration
            .filter(|_| fault.is_some())
            .map(|d| d.as_secs_f64()),
    });
    Ok(())
}

/// `ip`, by its path: children run with a scrubbed environment.
fn ip_program() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("ip")
}

/// `prog` started inside namespace `ns` (`ip netns exec` enters it and execs `prog`, so the
/// child's PID is the program's own).
pub fn command_in(ns: &str, prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(ip_program());
    c.args(["netns", "exec", ns]).arg(prog);
    c
}

pub fn run_step(s: &Step) -> Result<(), String> {
    let mut cmd = Command::new(if s.program == "ip" {
        ip_program()
    } else {
        s.program
    });
    cmd.args(&s.args);
    let what = format!("{} {}", s.program, s.args.join(" "));
    super::sshd::run_tool(cmd, s.stdin.as_deref().map(|t| (t, "")), &what)
}

pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// A lab's WAN while it exists.
pub struct Wan {
    pub plan: Plan,
    state: PathBuf,
    /// The subnet's lock, held while the WAN exists (see `lock`).
    _lock: std::fs::File,
}

/// The lock a lab on `subnet` holds for its whole life (`/run/tclab-<S>.lock`): two labs racing
/// for one subnet, a cleanup of a stale directory, or `tc lab wan`, each learn from it whether
/// a live lab owns the namespaces, so none tears down or faults another lab's WAN. `Ok(None)`:
/// a live lab holds it.
fn lock(subnet: u8) -> Result<Option<std::fs::File>, String> {
    let path = PathBuf::from(format!("/run/tclab-{subnet}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    match crate::sys::lock_exclusive(&f) {
        Ok(true) => Ok(Some(f)),
        Ok(false) => Ok(None),
        Err(e) => Err(format!("locking {}: {e}", path.display())),
    }
}

/// Whether a running `tc lab up` owns `subnet`'s WAN.
pub fn in_use(subnet: u8) -> Result<bool, String> {
    Ok(lock(subnet)?.is_none())
}

impl Wan {
    /// Makes the namespaces, links, addresses, routes and rules of `plan`, after writing its
    /// record into `dir`; on a failure half-way, removes what was made.
    pub fn create(dir: &Path, plan: Plan) -> Result<Wan, String> {
        let lock = lock(plan.subnet)?.ok_or_else(|| {
            format!(
                "another running lab uses --subnet {}: choose another",
                plan.subnet
            )
        })?;
        for ns in [plan.router_ns(), plan.device_ns()] {
            if netns_path(&ns).exists() {
                return Err(format!(
                    "network namespace {ns} exists: another lab uses --subnet {} (or one was \
                     killed: tc lab cleanup --dir <its dir>, or ip netns delete {ns})",
                    plan.subnet
                ));
            }
        }
        if Path::new("/sys/class/net").join(plan.host_if()).exists() {
            return Err(format!(
                "interface {} exists: another lab uses --subnet {}",
                plan.host_if(),
                plan.subnet
            ));
        }
        let state = dir.join(STATE_FILE);
        if let Ok(Some(old)) = recorded(dir) {
            return Err(format!(
                "{} records the WAN of a lab on --subnet {} that did not stop cleanly: run tc \
                 lab cleanup --dir {} first",
                state.display(),
                old.subnet,
                dir.display()
            ));
        }
        std::fs::write(&state, plan.state_text())
            .map_err(|e| format!("writing {}: {e}", state.display()))?;
        let wan = Wan {
            plan,
            state,
            _lock: lock,
        };
        for step in plan.setup() {
            // On a failure half-way, dropping `wan` removes what was made.
            run_step(&step)?;
        }
        Ok(wan)
    }

    pub fn device_ns_path(&self) -> PathBuf {
        netns_path(&self.plan.device_ns())
    }

    /// Removes the WAN (processes left in its namespaces, the links, the namespaces with their
    /// tables) and its record; says what it could not remove.
    pub fn destroy(&self) {
        for e in teardown(&self.plan) {
            crate::logging::warn_user(&e);
        }
        let _ = std::fs::remove_file(&self.state);
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Removes everything of `plan` that exists; the errors of what could not be removed.
pub fn teardown(plan: &Plan) -> Vec<String> {
    let mut errors = Vec::new();
    for ns in [plan.device_ns(), plan.router_ns()] {
        if netns_path(&ns).exists() {
            kill_all_in(&ns);
        }
    }
    // The host's end first: deleting it deletes its peer whatever still holds the namespace.
    if Path::new("/sys/class/net").join(plan.host_if()).exists() {
        if let Err(e) = run_step(&ip(&["link", "delete", &plan.host_if()])) {
            errors.push(e);
        }
    }
    for ns in [plan.device_ns(), plan.router_ns()] {
        if netns_path(&ns).exists() {
            if let Err(e) = run_step(&ip(&["netns", "delete", &ns])) {
                errors.push(e);
            }
        }
    }
    errors
}

/// Every process inside `ns` (a killed lab's snmpd, sshd, tcpdump): SIGTERM, then SIGKILL.
fn kill_all_in(ns: &str) {
    let pids = |ns: &str| -> Vec<u32> {
        let mut c = Command::new(ip_program());
        c.args(["netns", "pids", ns]);
        super::sshd::output_of(c, "ip netns pids")
            .map(|o| {
                String::from_utf8_lossy(&o)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for p in pids(ns) {
        let _ = crate::sys::terminate(p);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !pids(ns).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in pids(ns) {
        let _ = crate::sys::kill(p);
    }
}

/// The plan recorded in lab directory `dir`, if it has a WAN.
pub fn recorded(dir: &Path) -> Result<Option<Plan>, String> {
    let path = dir.join(STATE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => Plan::parse_state(&t)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// `tc lab cleanup --dir`: the WAN a killed lab left, if any; whether there was one.
pub fn cleanup(dir: &Path) -> Result<bool, String> {
    let Some(plan) = recorded(dir)? else {
        return Ok(false);
    };
    // Held until the teardown is done: a lab starting on the subnet meanwhile waits its turn.
    let Some(_lock) = lock(plan.subnet)? else {
        return Err(format!(
            "a running lab uses --subnet {} (the one {} names): stop it first; this directory's \
             lab is not running",
            plan.subnet,
            dir.display()
        ));
    };
    let errors = teardown(&plan);
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let _ = std::fs::remove_file(dir.join(STATE_FILE));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(nat: bool) -> Plan {
        Plan {
            subnet: 7,
            nat,
            devices: 3,
        }
    }

    #[test]
    fn names_and_addresses_follow_the_subnet() {
        let p = plan(false);
        assert_eq!(
            (p.router_ns(), p.device_ns(), p.host_if()),
            ("tclab-7-r".into(), "tclab-7-d".into(), "tclab7-o".into())
        );
        assert!(Plan { subnet: 200, ..p }.host_if().len() <= 15, "IFNAMSIZ");
        assert_eq!(p.host_addr(), Ipv4Addr::new(198, 18, 7, 1));
        assert_eq!(p.public(0), Ipv4Addr::new(198, 19, 7, 1));
        assert_eq!(p.own(2), Ipv4Addr::new(198, 19, 7, 3));
        let n = plan(true);
        assert_eq!(n.public(2), Ipv4Addr::new(198, 19, 7, 3));
        assert_eq!(n.own(2), Ipv4Addr::new(100, 64, 7, 3));
        assert_eq!(n.own_of(n.public(1)), Some(Ipv4Addr::new(100, 64, 7, 2)));
        assert_eq!(
            n.own_of(Ipv4Addr::new(198, 19, 7, 4)),
            None,
            "beyond the devices"
        );
    }

    #[test]
    fn setup_builds_the_links_then_the_rules() {
        let steps = plan(true).setup();
        let lines: Vec<String> = steps.iter().map(|s| s.args.join(" ")).collect();
        assert_eq!(lines[0], "netns add tclab-7-r");
        assert_eq!(
            lines[2],
            "link add tclab7-o type veth peer name to-ovoc netns tclab-7-r"
        );
        assert!(lines.contains(&"route add 198.19.7.0/24 via 198.18.7.2 dev tclab7-o".into()));
        let devices = steps
            .iter()
            .find(|s| s.args.starts_with(&["-n".into(), "tclab-7-d".into()]))
            .and_then(|s| s.stdin.clone())
            .unwrap();
        assert!(devices.contains("addr add 100.64.7.3/24 dev wan\n"));
        assert!(devices.contains("route add default via 100.64.7.254\n"));
        let nat = &plan(true).router_rules();
        assert!(nat.contains("198.19.7.2 : 100.64.7.2"), "{nat}");
        assert!(nat.contains("100.64.7.2 : 198.19.7.2"));
        assert!(nat.contains("fully-random"));
        assert!(!plan(false).router_rules().contains("nat"));
        assert!(steps
            .last()
            .unwrap()
            .args
            .ends_with(&["nft".into(), "-f".into(), "-".into()]));
    }

    #[test]
    fn faults_are_set_elements_of_the_devices_own_address() {
        let p = plan(true);
        let d = p.public(1);
        let cases = [
            (
                Fault::ToDevice,
                None,
                "tclab-7-r",
                "add element inet tclab to_device { 100.64.7.2 }\n\
                 delete element inet tclab to_device { 100.64.7.2 }\n\
                 add element inet tclab to_device { 100.64.7.2 }\n",
            ),
            (
                Fault::FromDevice,
                Some(Duration::from_secs(8)),
                "tclab-7-r",
                "add element inet tclab from_device { 100.64.7.2 }\n\
                 delete element inet tclab from_device { 100.64.7.2 }\n\
                 add element inet tclab from_device { 100.64.7.2 timeout 8000ms }\n",
            ),
            (
                Fault::Silent,
                Some(Duration::from_millis(1500)),
                "tclab-7-d",
                "add element inet tclabdev silent { 100.64.7.2 }\n\
                 delete element inet tclabdev silent { 100.64.7.2 }\n\
                 add element inet tclabdev silent { 100.64.7.2 timeout 1500ms }\n",
            ),
        ];
        for (fault, dur, ns, script) in cases {
            let s = p.fault(d, fault, dur).unwrap();
            assert_eq!(s.args[2], ns, "{fault:?}");
            assert_eq!(s.stdin.as_deref(), Some(script), "{fault:?}");
        }
        let both = p.fault(d, Fault::Both, None).unwrap().stdin.unwrap();
        assert_eq!(both.lines().count(), 6);
        assert!(p
            .fault(Ipv4Addr::new(10, 0, 0, 1), Fault::Both, None)
            .is_err());
        assert!(p.fault(d, Fault::Both, Some(Duration::ZERO)).is_err());
        let restore = p.restore(d).unwrap();
        assert_eq!(restore.len(), 2);
        assert!(restore[0].stdin.as_ref().unwrap().contains(
            "add element inet tclab to_device { 100.64.7.2 }\ndelete element inet tclab to_device { 100.64.7.2 }\n"
        ));
    }

    #[test]
    fn the_state_file_reads_back_strictly() {
        let p = plan(true);
        assert_eq!(Plan::parse_state(&p.state_text()), Ok(p));
        for bad in [
            "",
            "subnet 7\nnat 1\n",
            "subnet 700\nnat 0\ndevices 3\n",
            "subnet 7\nnat 2\ndevices 3\n",
            "subnet 7\nnat 0\ndevices 101\n",
            "subnet 0\nnat 0\ndevices 3\n",
            "subnet 201\nnat 0\ndevices 3\n",
            "subnet 7\nnat 0\ndevices 3\nsubnet 8\n",
            "subnet 7\nnat 0\ndevices 3\nextra 1\n",
            "subnet x;rm\nnat 0\ndevices 3\n",
            "junk\n",
        ] {
            assert!(Plan::parse_state(bad).is_err(), "{bad:?}");
        }
    }
}
