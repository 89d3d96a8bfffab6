//! `tc cpe start|stop|status|fetch`: resolve the targets once (inventory, credentials, trust),
//! then work on the devices concurrently on a bounded pool. One device failing never stops the
//! others; each outcome is one event, followed by a summary.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::cli::{CpeCommand, DeviceType, TargetArgs};
use crate::cpe::rest::Client;
use crate::cpe::script::{self, SnmpUser};
use crate::emit::emit;
use crate::error::{Error, ExitCode, Result};
use crate::event::Event;
use crate::secret::{self, Secret};
use crate::sftp;
use crate::tls::Trust;

#[derive(Debug, Clone)]
pub struct Target {
    pub device: String,
    pub device_type: Option<DeviceType>,
    pub interfaces: Vec<String>,
    pub username: String,
    pub rest_port: u16,
    pub ssh_port: u16,
    pub trust: Trust,
    /// The agent on the OVOC server that manages this device (inventory `ovoc` column).
    pub ovoc: Option<String>,
}

/// Everything a device operation needs, shared read-only by the workers.
pub struct Context {
    pub password: Secret,
    pub retries: u32,
    pub timeout: std::time::Duration,
    agents: HashMap<Trust, ureq::Agent>,
}

impl Context {
    pub fn client(&self, t: &Target) -> Client {
        let agent = self
            .agents
            .get(&t.trust)
            .cloned()
            .expect("an agent per trust is built at resolve time");
        Client::new(
            agent,
            &t.device,
            t.rest_port,
            &t.username,
            &self.password,
            self.retries,
        )
    }
}

/// Targets and context from the command line, the inventory, the environment and the terminal.
pub fn resolve(a: &TargetArgs, env: &secret::Env) -> Result<(Vec<Target>, Context)> {
    let cli_trust = Trust::from_args(
        a.tls.ca_cert.as_deref(),
        a.tls.pin_sha256.as_deref(),
        a.tls.insecure,
    )
    .map_err(Error::usage)?;
    for i in &a.interface {
        crate::inventory::validate_interface(i).map_err(Error::usage)?;
    }
    crate::inventory::validate_username(&a.username)
        .map_err(|e| Error::usage(format!("--username: {e}")))?;
    let targets = match &a.devices {
        Some(path) => from_inventory(a, path, &cli_trust)?,
        None => from_flags(a, &cli_trust)?,
    };
    // Check what can be checked before touching any device.
    for t in &targets {
        if let Some(ty) = t.device_type {
            script::capture_interfaces(ty, &t.interfaces)
                .map_err(|e| Error::usage(format!("{}: {e}", t.device)))?;
        }
    }
    let mut agents = HashMap::new();
    for t in &targets {
        if !agents.contains_key(&t.trust) {
            let agent = crate::tls::agent(&t.trust, a.timeout, 3).map_err(Error::usage)?;
            agents.insert(t.trust.clone(), agent);
        }
    }
    let password = secret::resolve(
        &secret::Source {
            what: "device password",
            file: a.password_file.as_deref(),
            env: "TC_CPE_PASSWORD",
            file_flag: "--password-file",
        },
        env,
    )?;
    let unverified = targets
        .iter()
        .filter(|t| t.trust == Trust::Insecure)
        .count();
    if unverified > 0 {
        crate::logging::warn_user(&format!(
            "--insecure: the TLS certificates of {unverified} device(s) without a pin are not \
             verified; anyone on the path can read the device password (pins are still enforced)"
        ));
    }
    Ok((
        targets,
        Context {
            password,
            retries: a.retries,
            timeout: a.timeout,
            agents,
        },
    ))
}

/// One target per inventory row, the command line's options filling what a row leaves empty.
fn from_inventory(a: &TargetArgs, path: &std::path::Path, cli: &Trust) -> Result<Vec<Target>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("reading inventory {}: {e}", path.display())))?;
    let entries = crate::inventory::parse(&text)
        .map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let trust = match &e.pin_sha256 {
            // The row's pin holds whatever the command line says (--insecure included).
            Some(p) => Trust::Pin(crate::tls::parse_pin(p).map_err(Error::usage)?),
            None => cli.clone(),
        };
        out.push(Target {
            device: e.device,
            device_type: a.device_type.or(e.device_type),
            interfaces: if a.interface.is_empty() {
                e.interfaces
            } else {
                a.interface.clone()
            },
            username: e.username.unwrap_or_else(|| a.username.clone()),
            rest_port: e.rest_port.unwrap_or(a.rest_port),
            ssh_port: e.ssh_port.unwrap_or(a.ssh_port),
            trust,
            ovoc: e.ovoc,
        });
    }
    Ok(out)
}

/// One target per `--device` (a repeated one once).
fn from_flags(a: &TargetArgs, cli: &Trust) -> Result<Vec<Target>> {
    let mut out: Vec<Target> = Vec::new();
    for d in &a.device {
        crate::netaddr::validate_device(d).map_err(Error::usage)?;
        if out.iter().any(|t| &t.device == d) {
            continue;
        }
        out.push(Target {
            device: d.clone(),
            device_type: a.device_type,
            interfaces: a.interface.clone(),
            username: a.username.clone(),
            rest_port: a.rest_port,
            ssh_port: a.ssh_port,
            trust: cli.clone(),
            ovoc: None,
        });
    }
    Ok(out)
}

/// The device type: as configured, else from `productType`.
fn device_type(c: &Client, t: &Target) -> std::result::Result<DeviceType, String> {
    match t.device_type {
        Some(ty) => Ok(ty),
        None => {
            let st = c.status()?;
            Ok(script::detect_type(
                st.product_type.as_deref().unwrap_or_default(),
            ))
        }
    }
}

pub struct Snmp {
    pub name: String,
    pub auth: Secret,
    pub privk: Secret,
}

pub fn start(ctx: &Context, t: &Target, snmp: Option<&Snmp>) -> std::result::Result<Event, String> {
    let c = ctx.client(t);
    let ty = device_type(&c, t)?;
    let interfaces = script::capture_interfaces(ty, &t.interfaces)?;
    let user = snmp.map(|s| SnmpUser {
        name: &s.name,
        auth_key: &s.auth,
        priv_key: &s.privk,
    });
    let mut text = script::start_script(ty, &interfaces, user.as_ref());
    text.push_str(&script::show_script(ty));
    let out = c.cli(&text)?;
    c.confirm_from(ty, true, &out)?;
    Ok(Event::CpeCaptureStarted {
        device: t.device.clone(),
        device_type: ty.as_str().into(),
        interfaces,
        snmp_user: snmp.map(|s| s.name.clone()),
        requests: c.requests(),
    })
}

pub fn stop(ctx: &Context, t: &Target) -> std::result::Result<Event, String> {
    let c = ctx.client(t);
    let ty = device_type(&c, t)?;
    let text = script::stop_script(ty) + &script::show_script(ty);
    let out = c.cli(&text)?;
    c.confirm_from(ty, false, &out)?;
    Ok(Event::CpeCaptureStopped {
        device: t.device.clone(),
        device_type: ty.as_str().into(),
        requests: c.requests(),
    })
}

pub fn status(ctx: &Context, t: &Target) -> std::result::Result<Event, String> {
    let c = ctx.client(t);
    let st = c.status()?;
    let ty = t
        .device_type
        .unwrap_or_else(|| script::detect_type(st.product_type.as_deref().unwrap_or_default()));
    let out = c.cli(&script::show_script(ty))?;
    let active = script::parse_show(&out)
        .ok_or_else(|| format!("{}: unexpected show output {:?}", t.device, out.trim()))?;
    Ok(Event::CpeStatus {
        device: t.device.clone(),
        device_type: ty.as_str().into(),
        active,
        product_type: st.product_type,
        version: st.version,
        serial: st.serial,
    })
}

#[derive(Debug, Clone)]
pub struct FetchOpts {
    pub out: PathBuf,
    pub remote: Option<String>,
    pub known_hosts: PathBuf,
    pub accept_new: bool,
    pub modes: crate::util::Modes,
}

/// `tc cpe fetch`: the capture, kept once (its part name goes at once: nothing records it).
pub fn fetch(ctx: &Context, t: &Target, o: &FetchOpts) -> std::result::Result<Event, String> {
    let (ev, part) = fetch_kept(ctx, t, o)?;
    sftp::Fetched::done(&part);
    Ok(ev)
}

/// The capture, and its part name, a second link the caller removes once it has recorded the
/// capture (`sftp::Fetched::done`).
pub fn fetch_kept(
    ctx: &Context,
    t: &Target,
    o: &FetchOpts,
) -> std::result::Result<(Event, PathBuf), String> {
    let remote = o
        .remote
        .clone()
        .unwrap_or_else(|| sftp::DEFAULT_REMOTE.to_string());
    let f = sftp::fetch(&sftp::Spec {
        session: None,
        host: &t.device,
        label: &t.device,
        port: t.ssh_port,
        user: &t.username,
        auth: sftp::Auth::Password(&ctx.password),
        remote: &remote,
        local: sftp::Local::Cpe,
        out_dir: &o.out,
        known_hosts: &o.known_hosts,
        accept_new: o.accept_new,
        timeout: ctx.timeout,
        retries: ctx.retries,
        modes: o.modes,
    })?;
    let ev = Event::CpeFetched {
        device: t.device.clone(),
        path: f.path.display().to_string(),
        remote_path: remote,
        bytes: f.bytes,
        sha256: f.sha256,
        seconds: f.seconds,
        attempts: f.attempts,
    };
    Ok((ev, f.part))
}

pub fn default_known_hosts() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".ssh/known_hosts")
}

enum Op {
    Start(Option<Snmp>),
    Stop,
    Status,
    Fetch(FetchOpts),
}

/// `--snmp-user NAME` with its keys from the environment, checked before any device is touched.
pub fn resolve_snmp(name: Option<String>, env: &secret::Env) -> Result<Option<Snmp>> {
    let Some(name) = name else { return Ok(None) };
    crate::probe::validate_snmp_user(&name).map_err(Error::usage)?;
    let key = |var: &str| -> Result<Secret> {
        let k = env
            .secret(var)
            .ok_or_else(|| Error::usage(format!("--snmp-user needs {var} in the environment")))?;
        script::validate_snmp_key(var, &k).map_err(Error::usage)?;
        Ok(k)
    };
    Ok(Some(Snmp {
        name,
        auth: key("TC_SNMP_AUTH_KEY")?,
        privk: key("TC_SNMP_PRIV_KEY")?,
    }))
}

/// A `tc cpe` command, resolved: what to do, to which devices, with what.
pub struct Plan {
    name: &'static str,
    op: Op,
    targets: Vec<Target>,
    ctx: Context,
    jobs: usize,
}

/// Every flag checked, the inventory read, credentials found, before any device is touched.
pub fn plan(cmd: CpeCommand, env: &secret::Env) -> Result<Plan> {
    let (name, args, op) = match cmd {
        CpeCommand::Start(s) => {
            let snmp = resolve_snmp(s.snmp_user, env)?;
            ("start", s.target, Op::Start(snmp))
        }
        CpeCommand::Stop(t) => ("stop", t, Op::Stop),
        CpeCommand::Status(t) => ("status", t, Op::Status),
        CpeCommand::Fetch(f) => {
            if let Some(r) = &f.remote_path {
                if !r.starts_with('/') || r.contains('\0') {
                    return Err(Error::usage(format!(
                        "invalid --remote-path {r:?}: expected an absolute path"
                    )));
                }
            }
            let o = FetchOpts {
                out: f.out,
                remote: f.remote_path,
                known_hosts: f.known_hosts.unwrap_or_else(default_known_hosts),
                accept_new: f.accept_new_host_key,
                modes: crate::util::Modes::private(),
            };
            ("fetch", f.target, Op::Fetch(o))
        }
    };
    let (targets, ctx) = resolve(&args, env)?;
    Ok(Plan {
        name,
        op,
        targets,
        ctx,
        jobs: args.jobs as usize,
    })
}

pub fn run(cmd: CpeCommand) -> Result<ExitCode> {
    let Plan {
        name,
        op,
        targets,
        ctx,
        jobs,
    } = plan(cmd, &secret::Env::process())?;
    let interrupted = crate::sys::install_signals()?;
    let started = Instant::now();
    let shared = Arc::new((ctx, op, Arc::clone(&interrupted)));
    let (mut ok, mut failed) = (0u32, 0u32);
    crate::pool::run(
        targets,
        jobs,
        move |t: Target| {
            let (ctx, op, halt) = &*shared;
            if halt.load(Ordering::Relaxed) {
                let error = "not attempted: interrupted".to_string();
                return (
                    false,
                    Event::CpeError {
                        device: t.device,
                        op: name.into(),
                        error,
                    },
                );
            }
            let res = match op {
                Op::Start(snmp) => start(ctx, &t, snmp.as_ref()),
                Op::Stop => stop(ctx, &t),
                Op::Status => status(ctx, &t),
                Op::Fetch(o) => fetch(ctx, &t, o),
            };
            match res {
                Ok(ev) => (true, ev),
                Err(error) => (
                    false,
                    Event::CpeError {
                        device: t.device.clone(),
                        op: name.into(),
                        error,
                    },
                ),
            }
        },
        |(success, ev)| {
            if success {
                ok += 1;
            } else {
                failed += 1;
            }
            emit(&ev);
        },
    );
    crate::progress::finish();
    emit(&Event::Summary {
        command: format!("cpe {name}"),
        ok,
        failed,
        seconds: started.elapsed().as_secs_f64(),
    });
    if interrupted.load(Ordering::Relaxed) {
        return Err(Error::interrupted());
    }
    Ok(if failed == 0 {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn plan_of(argv: &[&str], env: &secret::Env) -> Result<Plan> {
        let cli = crate::cli::Cli::try_parse_from(argv).expect("the table's lines parse");
        let crate::cli::Command::Cpe(cmd) = cli.command else {
            panic!("not a cpe command: {argv:?}")
        };
        plan(cmd, env)
    }

    #[test]
    fn command_lines() {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("fleet.csv");
        std::fs::write(
            &inv,
            "device,type,interfaces,username,ovoc,rest_port,ssh_port,pin_sha256\n\
             10.0.0.1,msbr,eth-wan,Admin,,8443,2222,\n\
             10.0.0.2,gwsbc,,Admin,,,,\n",
        )
        .unwrap();
        let bad = dir.path().join("bad.csv");
        std::fs::write(
            &bad,
            "device,type,interfaces,username,ovoc\n10.0.0.1,router,,,\n",
        )
        .unwrap();
        let (inv, bad) = (inv.to_str().unwrap(), bad.to_str().unwrap());
        let pw = secret::Env::of(&[("TC_CPE_PASSWORD", "pw")]);
        let errors: Vec<(Vec<&str>, &str)> = vec![
            (vec!["tc", "cpe", "status", "--device", "10.0.0.1", "--username", "Ad\nmin"], "--username: invalid username \"Ad\\nmin\": 1-64 characters, no control characters"),
            (vec!["tc", "cpe", "status", "--device", "999.1.1.1"], "invalid device \"999.1.1.1\": not an IPv4 address (four numbers 0-255, no leading zeros) and not a host name (its last label is all digits)"),
            (vec!["tc", "cpe", "status", "--device", "a b"], "invalid device \"a b\": expected an IP address or a host name (letters, digits, '-', '.')"),
            (vec!["tc", "cpe", "start", "--device", "10.0.0.1", "--interface", "wan0"], "unknown MSBR interface \"wan0\": expected one of cellular-wan, fiber-wan, xdsl-wan, shdsl-wan, t1-e1-wan, eth-wan, eth-lan"),
            (vec!["tc", "cpe", "start", "--device", "10.0.0.1", "--snmp-user", "CaptureScript"], "--snmp-user needs TC_SNMP_AUTH_KEY in the environment"),
            (vec!["tc", "cpe", "fetch", "--device", "10.0.0.1", "--remote-path", "rel/x.pcap"], "invalid --remote-path \"rel/x.pcap\": expected an absolute path"),
            (vec!["tc", "cpe", "stop", "--device", "10.0.0.1", "--pin-sha256", "zz"], "invalid --pin-sha256 \"zz\": expected 64 hex digits (SHA-256 of the DER certificate)"),
        ];
        let mut wrong = Vec::new();
        for (argv, want) in errors {
            let got = plan_of(&argv, &pw).err().map(|e| e.to_string());
            if got.as_deref() != Some(want) {
                wrong.push(format!("{argv:?}\n  got  {got:?}\n  want {want:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        let got = plan_of(&["tc", "cpe", "status", "--devices", bad], &pw)
            .err()
            .map(|e| e.to_string());
        assert!(
            got.as_deref()
                .is_some_and(|e| e.starts_with(bad) && e.contains("line 2")),
            "{got:?}"
        );
        let got = plan_of(
            &["tc", "cpe", "status", "--devices", inv],
            &secret::Env::of(&[]),
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            got.as_deref(),
            Some("no device password: set TC_CPE_PASSWORD, use --password-file FILE, or run on a terminal to be prompted")
        );
        let p = plan_of(
            &["tc", "cpe", "status", "--devices", inv, "--username", "Mon"],
            &pw,
        )
        .unwrap();
        let t: Vec<(String, u16, u16, String)> = p
            .targets
            .iter()
            .map(|t| {
                (
                    t.device.clone(),
                    t.rest_port,
                    t.ssh_port,
                    t.username.clone(),
                )
            })
            .collect();
        assert_eq!(
            t,
            [
                ("10.0.0.1".into(), 8443, 2222, "Admin".into()),
                ("10.0.0.2".into(), 443, 22, "Admin".into())
            ]
        );
        assert_eq!((p.name, p.jobs), ("status", 32));
    }
}
