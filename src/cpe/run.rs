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
use crate::cpe::sftp;
use crate::emit::emit;
use crate::error::{Error, ExitCode, Result};
use crate::event::Event;
use crate::secret::{self, Secret};
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
pub fn resolve(a: &TargetArgs) -> Result<(Vec<Target>, Context)> {
    let cli_trust = Trust::from_args(
        a.tls.ca_cert.as_deref(),
        a.tls.pin_sha256.as_deref(),
        a.tls.insecure,
    )
    .map_err(Error::usage)?;
    for i in &a.interface {
        crate::inventory::validate_interface(i).map_err(Error::usage)?;
    }
    let targets: Vec<Target> = match &a.devices {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::usage(format!("reading inventory {}: {e}", path.display())))?;
            let entries = crate::inventory::parse(&text)
                .map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                let trust = match &e.pin_sha256 {
                    Some(p) if !a.tls.insecure => {
                        Trust::Pin(crate::tls::parse_pin(p).map_err(Error::usage)?)
                    }
                    _ => cli_trust.clone(),
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
            out
        }
        None => {
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
                    trust: cli_trust.clone(),
                    ovoc: None,
                });
            }
            out
        }
    };
    // Check what can be checked before touching any device.
    for t in &targets {
        if let Some(ty) = t.device_type {
            script::capture_interfaces(ty, &t.interfaces)
                .map_err(|e| Error::usage(format!("{}: {e}", t.device)))?;
        }
    }
    if a.tls.insecure {
        crate::logging::warn_user("--insecure: TLS certificates are not verified; anyone on the path can read the device password");
    }
    let mut agents = HashMap::new();
    for t in &targets {
        if !agents.contains_key(&t.trust) {
            let agent = crate::tls::agent(&t.trust, a.timeout, 3).map_err(Error::usage)?;
            agents.insert(t.trust.clone(), agent);
        }
    }
    let password = secret::resolve(&secret::Source {
        what: "device password",
        file: a.password_file.as_deref(),
        env: "TC_CPE_PASSWORD",
        file_flag: "--password-file",
    })?;
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

pub struct FetchOpts {
    pub out: PathBuf,
    pub remote: Option<String>,
    pub known_hosts: PathBuf,
    pub accept_new: bool,
}

pub fn fetch(ctx: &Context, t: &Target, o: &FetchOpts) -> std::result::Result<Event, String> {
    let remote = o
        .remote
        .clone()
        .unwrap_or_else(|| sftp::DEFAULT_REMOTE.to_string());
    let f = sftp::fetch(&sftp::Spec {
        device: &t.device,
        port: t.ssh_port,
        user: &t.username,
        password: &ctx.password,
        remote: &remote,
        out_dir: &o.out,
        known_hosts: &o.known_hosts,
        accept_new: o.accept_new,
        timeout: ctx.timeout,
        retries: ctx.retries,
    })?;
    Ok(Event::CpeFetched {
        device: t.device.clone(),
        path: f.path.display().to_string(),
        remote_path: remote,
        bytes: f.bytes,
        sha256: f.sha256,
        seconds: f.seconds,
        attempts: f.attempts,
    })
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
pub fn resolve_snmp(name: Option<String>) -> Result<Option<Snmp>> {
    let Some(name) = name else { return Ok(None) };
    crate::probe::validate_snmp_user(&name).map_err(Error::usage)?;
    let key = |var: &str| -> Result<Secret> {
        let k = secret::from_env(var)
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

pub fn run(cmd: CpeCommand) -> Result<ExitCode> {
    let (name, args, op) = match cmd {
        CpeCommand::Start(s) => {
            let snmp = resolve_snmp(s.snmp_user)?;
            ("start", s.target, Op::Start(snmp))
        }
        CpeCommand::Stop(t) => ("stop", t, Op::Stop),
        CpeCommand::Status(t) => ("status", t, Op::Status),
        CpeCommand::Fetch(f) => {
            let o = FetchOpts {
                out: f.out,
                remote: f.remote_path,
                known_hosts: f.known_hosts.unwrap_or_else(default_known_hosts),
                accept_new: f.accept_new_host_key,
            };
            if let Some(r) = &o.remote {
                if !r.starts_with('/') || r.contains('\0') {
                    return Err(Error::usage(format!(
                        "invalid --remote-path {r:?}: expected an absolute path"
                    )));
                }
            }
            ("fetch", f.target, Op::Fetch(o))
        }
    };
    let (targets, ctx) = resolve(&args)?;
    let interrupted = crate::sys::install_signals()?;
    let started = Instant::now();
    let shared = Arc::new((ctx, op, Arc::clone(&interrupted)));
    let (mut ok, mut failed) = (0u32, 0u32);
    crate::pool::run(
        targets,
        args.jobs as usize,
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
