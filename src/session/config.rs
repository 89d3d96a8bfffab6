//! `tc session`'s resolve step: the command line, the inventory, the environment and the
//! terminal in; a checked plan out. Every flag is validated here, with the error the user sees;
//! nothing here touches a device, an agent or the out directory.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::core::Config;
use crate::cli::{ProbePacing, Register, SessionArgs};
use crate::cpe::run::{Context, FetchOpts, Snmp, Target};
use crate::error::{Error, Result};
use crate::netaddr::Cidr;
use crate::probe::ProbeConfig;
use crate::secret::Env;

pub struct Plan {
    /// Each device with the address of its agent.
    pub devices: Vec<(String, SocketAddr)>,
    pub targets: Vec<Target>,
    pub ctx: Context,
    pub snmp: Option<Snmp>,
    pub core: Config,
    pub fetch: FetchOpts,
    pub probes: ProbeConfig,
    pub listen: SocketAddr,
    pub out: PathBuf,
    pub journal: PathBuf,
    pub report: PathBuf,
    pub resume: bool,
    pub jobs: usize,
    pub alarm_jobs: usize,
    pub max_events: u32,
    /// Who may read what the session writes.
    pub modes: crate::util::Modes,
    /// `--agent-key`: the agents whose datagrams are signed (ovoc::auth).
    pub agent_keys: crate::ovoc::auth::AgentKeys,
    /// `--collect-ovoc`.
    pub collect: Option<Collect>,
}

/// `--collect-ovoc`: how each device's OVOC server is reached.
pub struct Collect {
    pub source: crate::ovoc::fetch::Source,
    /// Each device's OVOC server as the inventory (or `--ovoc`) names it: the SSH host.
    pub servers: HashMap<String, String>,
}

/// The SSH side of `--collect-ovoc`, checked (and the password asked for) before anything
/// starts.
fn collect(
    a: &SessionArgs,
    targets: &[Target],
    env: &Env,
    modes: crate::util::Modes,
) -> Result<Collect> {
    let s = &a.ovoc_ssh;
    crate::ovoc::fetch::validate_dir(&s.ovoc_dir).map_err(Error::usage)?;
    let servers = targets
        .iter()
        .filter_map(|t| {
            let spec = t.ovoc.as_ref().or(a.ovoc.as_ref())?;
            let (host, _) = crate::netaddr::split_host_port(spec, a.ovoc_port);
            Some((t.device.clone(), host.to_string()))
        })
        .collect();
    Ok(Collect {
        source: crate::ovoc::fetch::Source {
            user: s.ovoc_ssh_user.clone(),
            port: s.ovoc_ssh_port,
            login: crate::ovoc::fetch::resolve_login(s, env)?,
            dir: s.ovoc_dir.clone(),
            known_hosts: a
                .known_hosts
                .clone()
                .unwrap_or_else(crate::cpe::run::default_known_hosts),
            accept_new: a.accept_new_host_key,
            timeout: a.target.timeout,
            retries: a.target.retries,
            modes,
        },
        servers,
    })
}

pub fn resolve(a: &SessionArgs, env: &Env) -> Result<Plan> {
    if a.target.devices.is_none() {
        return Err(Error::usage("tc session needs --devices FILE (the inventory, with each device's agent in its ovoc column)"));
    }
    let kinds = crate::probe::parse_kinds(&a.probes).map_err(Error::usage)?;
    let snmp = crate::cpe::run::resolve_snmp(a.snmp_user.clone(), env)?;
    let (targets, ctx) = crate::cpe::run::resolve(&a.target, env)?;
    let (devices, ovoc_ips) = agents(a, &targets, crate::netaddr::server_addrs)?;
    let alarm_from = alarm_from(&a.alarm_from, &ovoc_ips)?;
    let modes = match &a.group {
        None => crate::util::Modes::private(),
        Some(g) => crate::util::Modes::group(
            crate::sys::group_id(g)
                .ok_or_else(|| Error::usage(format!("--group {g:?}: no such group")))?,
        ),
    };
    let probes = ProbeConfig {
        kinds,
        snmp_user: a
            .snmp_user
            .clone()
            .unwrap_or_else(|| "CaptureScript".into()),
        snmp_auth: env.secret("TC_SNMP_AUTH_KEY"),
        snmp_priv: env.secret("TC_SNMP_PRIV_KEY"),
        count: a.pacing.probe_count,
        interval: a.pacing.probe_interval,
        ..ProbeConfig::default()
    };
    let collect = if a.collect_ovoc {
        Some(collect(a, &targets, env, modes)?)
    } else {
        None
    };
    Ok(Plan {
        core: Config {
            max_events: a.max_events,
            register_attempts: a.register_attempts,
            retries: a.target.retries,
            fetch_retry_interval: a.fetch_retry_interval,
            resend: a.resend,
            probes: !probes.kinds.is_empty(),
            register: a.register == Register::Always,
            probe_time: probe_time(&a.pacing),
            alarm_from,
            wind_down: a.wind_down,
            collect: a.collect_ovoc,
        },
        devices,
        targets,
        ctx,
        snmp,
        fetch: FetchOpts {
            out: a.out.clone(),
            remote: a.remote_path.clone(),
            known_hosts: a
                .known_hosts
                .clone()
                .unwrap_or_else(crate::cpe::run::default_known_hosts),
            accept_new: a.accept_new_host_key,
            modes,
        },
        probes,
        listen: a.listen,
        journal: a.out.join(".tc-session").join("journal"),
        report: a.report.clone().unwrap_or_else(|| a.out.join("report.csv")),
        out: a.out.clone(),
        resume: a.resume,
        jobs: a.target.jobs as usize,
        alarm_jobs: a.alarm_jobs as usize,
        max_events: a.max_events,
        modes,
        agent_keys: crate::ovoc::auth::AgentKeys::parse(&a.agent_key).map_err(Error::usage)?,
        collect,
    })
}

/// `--alarm-from`: CIDRs, and `ovoc` for the OVOC hosts' addresses (also what none given
/// means): the OVOC server forwards its alarms from the host its agent runs on.
fn alarm_from(given: &[String], ovoc_ips: &[IpAddr]) -> Result<Vec<Cidr>> {
    let ovoc = || {
        ovoc_ips
            .iter()
            .map(|ip| Cidr::host(*ip))
            .collect::<Vec<_>>()
    };
    if given.is_empty() {
        return Ok(ovoc());
    }
    let mut out = Vec::new();
    for g in given {
        if g == "ovoc" {
            out.extend(ovoc());
        } else {
            out.push(Cidr::parse(g).map_err(|e| Error::usage(format!("--alarm-from: {e}")))?);
        }
    }
    Ok(out)
}

/// Resolves an agent spec (`host[:port]`) to every address it has, errors naming the flag.
type Resolver = fn(&str, u16, &str) -> std::result::Result<Vec<SocketAddr>, String>;

/// Each device with its agent's address.
type Agents = Vec<(String, SocketAddr)>;

/// Each device's agent (its inventory row's `ovoc`, else `--ovoc`), and every address the OVOC
/// hosts in use resolve to (sorted, once each): a host with several addresses may forward its
/// alarms from any of them. Each spec is resolved once, and `--ovoc` is checked even where
/// every row has its own.
fn agents(a: &SessionArgs, targets: &[Target], resolve: Resolver) -> Result<(Agents, Vec<IpAddr>)> {
    let mut known: HashMap<String, Vec<SocketAddr>> = HashMap::new();
    if let Some(o) = &a.ovoc {
        known.insert(
            o.clone(),
            resolve(o, a.ovoc_port, "--ovoc").map_err(Error::usage)?,
        );
    }
    let mut devices = Vec::with_capacity(targets.len());
    let mut ips = BTreeSet::new();
    for t in targets {
        let spec = t.ovoc.as_ref().or(a.ovoc.as_ref()).ok_or_else(|| {
            Error::usage(format!(
                "{}: no agent: fill the inventory's ovoc column or give --ovoc HOST",
                t.device
            ))
        })?;
        if !known.contains_key(spec) {
            let flag = format!("ovoc of {}", t.device);
            let addrs = resolve(spec, a.ovoc_port, &flag).map_err(Error::usage)?;
            known.insert(spec.clone(), addrs);
        }
        let addrs = &known[spec];
        ips.extend(addrs.iter().map(SocketAddr::ip));
        devices.push((t.device.clone(), addrs[0]));
    }
    Ok((devices, ips.into_iter().collect()))
}

/// How long this session's probes take, as `ProbeConfig::duration` counts it.
fn probe_time(p: &ProbePacing) -> Duration {
    ProbeConfig {
        count: p.probe_count,
        interval: p.probe_interval,
        ..ProbeConfig::default()
    }
    .duration()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const INVENTORY: &str = "device,type,interfaces,username,ovoc\n\
        10.0.0.1,msbr,eth-wan,Admin,127.0.0.9\n\
        10.0.0.2,gwsbc,,Admin,127.0.0.9:21000\n\
        10.0.0.3,gwsbc,,Admin,\n";

    fn session(argv: &[&str], env: &Env) -> Result<Plan> {
        let cli = crate::cli::Cli::try_parse_from(argv).expect("the table's lines parse");
        let crate::cli::Command::Session(a) = cli.command else {
            panic!("not a session: {argv:?}")
        };
        resolve(&a, env)
    }

    #[test]
    fn command_lines() {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("fleet.csv");
        std::fs::write(&inv, INVENTORY).unwrap();
        let inv = inv.to_str().unwrap();
        let pw = Env::of(&[("TC_CPE_PASSWORD", "pw")]);
        let keys = Env::of(&[
            ("TC_CPE_PASSWORD", "pw"),
            ("TC_SNMP_AUTH_KEY", "authkey123"),
            ("TC_SNMP_PRIV_KEY", "privkey456"),
        ]);
        let none = Env::of(&[]);
        let head = ["tc", "session", "--devices", inv, "--ovoc", "127.0.0.8"];
        let s = |extra: &[&'static str]| [&head[..], extra].concat();
        let errors: Vec<(Vec<&str>, &Env, String)> = vec![
            (vec!["tc", "session", "--device", "10.0.0.1"], &pw, "tc session needs --devices FILE (the inventory, with each device's agent in its ovoc column)".into()),
            (s(&["--probes", "icmp,ping"]), &pw, "unknown probe type \"ping\": expected a comma-separated list of icmp, snmp, tcp, or all, or none".into()),
            (s(&["--snmp-user", "bad name"]), &keys, "invalid SNMPv3 user name \"bad name\": 1-32 letters, digits, '_' or '-'".into()),
            (s(&["--snmp-user", "CaptureScript"]), &pw, "--snmp-user needs TC_SNMP_AUTH_KEY in the environment".into()),
            (s(&[]), &none, "no device password: set TC_CPE_PASSWORD, use --password-file FILE, or run on a terminal to be prompted".into()),
            (vec!["tc", "session", "--devices", inv], &pw, "10.0.0.3: no agent: fill the inventory's ovoc column or give --ovoc HOST".into()),
            (s(&["--alarm-from", "10.0.0.0/33"]), &pw, "--alarm-from: invalid CIDR \"10.0.0.0/33\": expected e.g. 10.0.0.0/8, 192.0.2.7 or ::1/128".into()),
            (s(&["--alarm-from", "ovoc.example.com"]), &pw, "--alarm-from: invalid CIDR \"ovoc.example.com\": expected e.g. 10.0.0.0/8, 192.0.2.7 or ::1/128".into()),
            (s(&["--group", "no-such-group-here"]), &pw, "--group \"no-such-group-here\": no such group".into()),
        ];
        for (argv, env, want) in errors {
            let got = session(&argv, env).err().map(|e| e.to_string());
            assert_eq!(got.as_deref(), Some(want.as_str()), "{argv:?}");
        }
        let p = session(
            &s(&[
                "--register",
                "never",
                "--probe-count",
                "4",
                "--probe-interval",
                "500ms",
            ]),
            &keys,
        )
        .unwrap();
        let agents: Vec<String> = p.devices.iter().map(|(d, a)| format!("{d}@{a}")).collect();
        assert_eq!(
            agents,
            [
                "10.0.0.1@127.0.0.9:20001",
                "10.0.0.2@127.0.0.9:21000",
                "10.0.0.3@127.0.0.8:20001"
            ]
        );
        assert!(!p.core.register);
        assert_eq!(p.core.probe_time, Duration::from_millis(3500));
        assert_eq!(
            (p.probes.count, p.probes.interval),
            (4, Duration::from_millis(500))
        );
        assert!(p.probes.snmp_auth.is_some() && p.snmp.is_none());
        // Alarms are believed from the agents' hosts, unless told otherwise.
        let from =
            |p: &Plan| -> Vec<String> { p.core.alarm_from.iter().map(|c| c.to_string()).collect() };
        assert_eq!(from(&p), ["127.0.0.8/32", "127.0.0.9/32"]);
        let bad = session(
            &["tc", "session", "--devices", inv, "--ovoc", "999.1.1.1"],
            &pw,
        );
        assert_eq!(
            bad.err().map(|e| e.to_string()).as_deref(),
            Some(
                "invalid --ovoc \"999.1.1.1\": not an IPv4 address (four numbers 0-255, no \
                 leading zeros) and not a host name (its last label is all digits)"
            )
        );
        let widened = session(
            &s(&["--alarm-from", "ovoc", "--alarm-from", "10.9.0.0/16"]),
            &pw,
        )
        .unwrap();
        assert_eq!(
            from(&widened),
            ["127.0.0.8/32", "127.0.0.9/32", "10.9.0.0/16"]
        );
        let replaced = session(&s(&["--alarm-from", "10.9.0.0/16"]), &pw).unwrap();
        assert_eq!(from(&replaced), ["10.9.0.0/16"]);
        assert_eq!(p.modes, crate::util::Modes::private());
        let grouped = session(&s(&["--group", "0"]), &pw).unwrap();
        assert_eq!((grouped.modes.file, grouped.modes.gid), (0o640, Some(0)));
        assert_eq!(p.report, PathBuf::from("./report.csv"));
        assert_eq!(p.journal, PathBuf::from("./.tc-session/journal"));
    }

    /// Review of issue 17, item 8: an OVOC host with several addresses may forward its alarms
    /// from any of them; each is believed, and each spec is resolved once.
    #[test]
    fn every_address_of_an_ovoc_host_is_believed() {
        use std::sync::atomic::{AtomicU32, Ordering};
        static CALLS: AtomicU32 = AtomicU32::new(0);
        fn fake(s: &str, port: u16, _: &str) -> std::result::Result<Vec<SocketAddr>, String> {
            CALLS.fetch_add(1, Ordering::Relaxed);
            match s {
                "ovoc.example" => Ok(vec![
                    SocketAddr::new("192.0.2.7".parse().unwrap(), port),
                    SocketAddr::new("2001:db8::7".parse().unwrap(), port),
                ]),
                _ => Ok(vec![SocketAddr::new("192.0.2.9".parse().unwrap(), port)]),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("fleet.csv");
        std::fs::write(
            &inv,
            "device,type,interfaces,username,ovoc\n\
             10.0.0.1,gwsbc,,Admin,ovoc.example\n\
             10.0.0.2,gwsbc,,Admin,ovoc.example\n\
             10.0.0.3,gwsbc,,Admin,\n",
        )
        .unwrap();
        let argv = [
            "tc",
            "session",
            "--devices",
            inv.to_str().unwrap(),
            "--ovoc",
            "other.example",
        ];
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let crate::cli::Command::Session(a) = cli.command else {
            panic!("not a session")
        };
        let env = Env::of(&[("TC_CPE_PASSWORD", "pw")]);
        let (targets, _) = crate::cpe::run::resolve(&a.target, &env).unwrap();
        let (devices, ips) = agents(&a, &targets, fake).unwrap();
        assert_eq!(CALLS.load(Ordering::Relaxed), 2, "once per spec");
        let agents: Vec<String> = devices.iter().map(|(d, a)| format!("{d}@{a}")).collect();
        assert_eq!(
            agents,
            [
                "10.0.0.1@192.0.2.7:20001",
                "10.0.0.2@192.0.2.7:20001",
                "10.0.0.3@192.0.2.9:20001"
            ]
        );
        let from: Vec<String> = alarm_from(&[], &ips)
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(from, ["192.0.2.7/32", "192.0.2.9/32", "2001:db8::7/128"]);
    }
}
