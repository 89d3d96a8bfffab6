//! `tc session`'s resolve step: the command line, the inventory, the environment and the
//! terminal in; a checked plan out. Every flag is validated here, with the error the user sees;
//! nothing here touches a device, an agent or the out directory.

use std::net::SocketAddr;
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
}

pub fn resolve(a: &SessionArgs, env: &Env) -> Result<Plan> {
    if a.target.devices.is_none() {
        return Err(Error::usage("tc session needs --devices FILE (the inventory, with each device's agent in its ovoc column)"));
    }
    let kinds = crate::probe::parse_kinds(&a.probes).map_err(Error::usage)?;
    let snmp = crate::cpe::run::resolve_snmp(a.snmp_user.clone(), env)?;
    let (targets, ctx) = crate::cpe::run::resolve(&a.target, env)?;
    let devices = agents(a, &targets)?;
    let alarm_from = alarm_from(&a.alarm_from, &devices)?;
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
    })
}

/// `--alarm-from`: CIDRs, and `ovoc` for the agents' addresses (also what none given means): the
/// OVOC server forwards its alarms from the host its agent runs on.
fn alarm_from(given: &[String], devices: &[(String, SocketAddr)]) -> Result<Vec<Cidr>> {
    let ovoc = || {
        let mut v: Vec<Cidr> = devices.iter().map(|(_, a)| Cidr::host(a.ip())).collect();
        v.sort_by_key(|c| c.to_string());
        v.dedup();
        v
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

/// Each device's agent: its inventory row's `ovoc`, else `--ovoc`.
fn agents(a: &SessionArgs, targets: &[Target]) -> Result<Vec<(String, SocketAddr)>> {
    let mut devices = Vec::with_capacity(targets.len());
    for t in targets {
        let spec = t.ovoc.clone().or_else(|| a.ovoc.clone()).ok_or_else(|| {
            Error::usage(format!(
                "{}: no agent: fill the inventory's ovoc column or give --ovoc HOST",
                t.device
            ))
        })?;
        let agent = crate::ovoc::send::server_addr(&spec, a.ovoc_port).map_err(Error::usage)?;
        devices.push((t.device.clone(), agent));
    }
    Ok(devices)
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
}
