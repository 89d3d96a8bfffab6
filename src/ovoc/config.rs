//! `tc ovoc serve`'s resolve step: the command line and the environment in, a checked plan out.
//! Every flag is validated here, with the error the user sees; the directory, the lock, the
//! state and the sockets are the shell's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::core::Config;
use super::rules::OvocClient;
use crate::cli::ServeArgs;
use crate::error::{Error, Result};
use crate::probe::ProbeConfig;
use crate::secret::Env;

/// OVOC REST calls and probes running at once.
pub const WORKERS: usize = 64;

pub struct Plan {
    pub core: Config,
    pub listen: SocketAddr,
    /// As given (the shell creates and canonicalizes it).
    pub dir: PathBuf,
    pub interface: String,
    pub tcpdump_program: PathBuf,
    pub tcpdump_user: String,
    pub ring_files: u32,
    pub ring_size_mb: u32,
    pub buffer_kib: u32,
    pub ovoc: Option<Arc<OvocClient>>,
    pub probes: Arc<ProbeConfig>,
    /// `--key-file`: requests must be signed, but from `allow_unauthenticated`.
    pub key: Option<super::auth::Key>,
    pub allow_unauthenticated: Vec<crate::netaddr::Cidr>,
}

pub fn resolve(a: &ServeArgs, env: &Env) -> Result<Plan> {
    if a.allow.is_empty() && !a.allow_any {
        return Err(Error::usage(
            "refusing to start without --allow CIDR (the controllers that may send requests); \
             --allow-any accepts requests from anywhere, as the original agent did",
        ));
    }
    crate::netaddr::validate_interface(&a.interface).map_err(Error::usage)?;
    let kinds = crate::probe::parse_kinds(&a.probes).map_err(Error::usage)?;
    crate::probe::validate_snmp_user(&a.snmp_user).map_err(Error::usage)?;
    let tcpdump_program =
        super::tcpdump::find_program(a.tcpdump.as_deref()).map_err(Error::usage)?;
    let tcpdump_user = a.tcpdump_user.clone().unwrap_or_else(|| {
        if crate::sys::user_ids("tcpdump").is_some() {
            "tcpdump".into()
        } else {
            "root".into()
        }
    });
    let key = a
        .key_file
        .as_deref()
        .map(super::auth::Key::read)
        .transpose()
        .map_err(Error::usage)?;
    let (mut own, broadcast) = crate::netaddr::host_addresses();
    if !a.listen.ip().is_unspecified() {
        own.push(crate::netaddr::canonical_ip(a.listen.ip()));
    }
    let ovoc = if a.no_ovoc_rules {
        None
    } else {
        Some(Arc::new(ovoc_client(a, env)?))
    };
    Ok(Plan {
        core: Config {
            allow: a.allow.clone(),
            allow_any: a.allow_any,
            ovoc_rules: ovoc.is_some(),
            rule_idle: a.rule_idle,
            start_timeout: a.start_timeout,
            stop_grace: a.stop_grace,
            stop_flush: a.stop_flush,
            limits: limits(a),
            own,
            broadcast,
        },
        listen: a.listen,
        dir: a.dir.clone(),
        interface: a.interface.clone(),
        tcpdump_program,
        tcpdump_user,
        ring_files: a.ring_files,
        ring_size_mb: a.ring_size,
        buffer_kib: a.buffer_size,
        ovoc,
        probes: Arc::new(ProbeConfig {
            kinds,
            snmp_user: a.snmp_user.clone(),
            snmp_auth: env.secret("TC_SNMP_AUTH_KEY"),
            snmp_priv: env.secret("TC_SNMP_PRIV_KEY"),
            count: a.pacing.probe_count,
            interval: a.pacing.probe_interval,
            ..ProbeConfig::default()
        }),
        key,
        allow_unauthenticated: a.allow_unauthenticated.clone(),
    })
}

fn limits(a: &ServeArgs) -> super::limits::Limits {
    super::limits::Limits {
        max_captures: a.max_captures as usize,
        min_free: a.min_free,
        disk_budget: a.disk_budget,
        capture_bytes: u64::from(a.ring_files) * u64::from(a.ring_size) * 1_000_000,
        rate: a.rate_limit,
        burst: a.rate_limit.saturating_mul(2),
        max_verifies: a.max_verifies as usize,
        verify_rate: a.verify_rate,
    }
}

/// OVOC's REST API, with the account and trust the command line and environment give.
fn ovoc_client(a: &ServeArgs, env: &Env) -> Result<OvocClient> {
    let user = a.ovoc_user.clone().ok_or_else(|| {
        Error::usage("no OVOC user: set TC_OVOC_USER or --ovoc-user (or --no-ovoc-rules)")
    })?;
    let password = crate::secret::resolve(
        &crate::secret::Source {
            what: "OVOC password",
            file: a.ovoc_password_file.as_deref(),
            env: "TC_OVOC_PASSWORD",
            file_flag: "--ovoc-password-file",
        },
        env,
    )?;
    let trust = crate::tls::Trust::from_args(
        a.tls.ca_cert.as_deref(),
        a.tls.pin_sha256.as_deref(),
        a.tls.insecure,
    )
    .map_err(Error::usage)?;
    if let Some(w) = insecure_warning(a.tls.insecure, a.tls.pin_sha256.is_some()) {
        crate::logging::warn_user(w);
    }
    OvocClient::new(
        &a.ovoc_url,
        &user,
        &password,
        &trust,
        Duration::from_secs(10),
        WORKERS,
    )
    .map_err(Error::usage)
}

/// What `--insecure` leaves unchecked: with a pin, only the chain (the pin is enforced).
fn insecure_warning(insecure: bool, pinned: bool) -> Option<&'static str> {
    match (insecure, pinned) {
        (false, _) => None,
        (true, false) => Some("--insecure: OVOC's certificate is not verified"),
        (true, true) => Some(
            "--insecure: OVOC's certificate chain is not verified; its --pin-sha256 pin still is",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review of issue 17, item 12: with a pin, --insecure does not say the certificate goes
    /// unverified (the pin is enforced).
    #[test]
    fn insecure_says_what_it_skips() {
        let table = [
            ((false, false), None),
            ((false, true), None),
            (
                (true, false),
                Some("--insecure: OVOC's certificate is not verified"),
            ),
            (
                (true, true),
                Some("--insecure: OVOC's certificate chain is not verified; its --pin-sha256 pin still is"),
            ),
        ];
        for ((insecure, pinned), want) in table {
            assert_eq!(
                insecure_warning(insecure, pinned),
                want,
                "{insecure} {pinned}"
            );
        }
    }
    use clap::Parser;

    fn serve(argv: &[&str], env: &Env) -> Result<Plan> {
        let cli = crate::cli::Cli::try_parse_from(argv).expect("the table's lines parse");
        let crate::cli::Command::Ovoc(crate::cli::OvocCommand::Serve(a)) = cli.command else {
            panic!("not ovoc serve: {argv:?}")
        };
        resolve(&a, env)
    }

    #[test]
    fn command_lines() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("tcpdump");
        std::fs::write(&fake, "").unwrap();
        let fake = fake.to_str().unwrap();
        let head = [
            "tc",
            "ovoc",
            "serve",
            "--interface",
            "eth0",
            "--tcpdump",
            fake,
        ];
        let base = |extra: &[&'static str]| [&head[..], extra].concat();
        let ovoc = Env::of(&[("TC_OVOC_USER", "op"), ("TC_OVOC_PASSWORD", "pw")]);
        let none = Env::of(&[]);
        let errors: Vec<(Vec<&str>, &Env, &str)> = vec![
            (base(&[]), &ovoc, "refusing to start without --allow CIDR (the controllers that may send requests); --allow-any accepts requests from anywhere, as the original agent did"),
            (vec!["tc", "ovoc", "serve", "--interface", "eth0;rm", "--allow-any"], &ovoc, "invalid interface \"eth0;rm\": see /proc/net/dev for the names"),
            (base(&["--allow-any", "--probes", "icmp,icmp"]), &ovoc, "probe type \"icmp\" given twice"),
            (base(&["--allow-any", "--snmp-user", "a:b"]), &ovoc, "invalid SNMPv3 user name \"a:b\": 1-32 letters, digits, '_' or '-'"),
            (vec!["tc", "ovoc", "serve", "--interface", "eth0", "--allow-any", "--tcpdump", "/nonexistent/tcpdump"], &ovoc, "tcpdump not found at /nonexistent/tcpdump"),
            (base(&["--allow-any"]), &none, "no OVOC user: set TC_OVOC_USER or --ovoc-user (or --no-ovoc-rules)"),
            (base(&["--allow-any", "--ovoc-user", "op"]), &none, "no OVOC password: set TC_OVOC_PASSWORD, use --ovoc-password-file FILE, or run on a terminal to be prompted"),
            (base(&["--allow-any", "--no-ovoc-rules", "--key-file", "/nonexistent/k"]), &none, "key file /nonexistent/k: No such file or directory (os error 2)"),
        ];
        for (argv, env, want) in errors {
            let got = serve(&argv, env).err().map(|e| e.to_string());
            assert_eq!(got.as_deref(), Some(want), "{argv:?}");
        }
        let p = serve(
            &base(&[
                "--allow",
                "10.0.0.0/8",
                "--no-ovoc-rules",
                "--probe-count",
                "2",
            ]),
            &none,
        )
        .unwrap();
        assert!(p.ovoc.is_none() && !p.core.ovoc_rules);
        assert_eq!(
            p.core.limits,
            super::super::limits::Limits {
                max_captures: 1024,
                min_free: 1 << 30,
                disk_budget: None,
                capture_bytes: 30_000_000,
                rate: 1000,
                burst: 2000,
                max_verifies: 32,
                verify_rate: 10,
            },
            "the defaults the README states"
        );
        assert!(p.key.is_none());
        assert_eq!(p.core.allow.len(), 1);
        assert_eq!(p.probes.count, 2);
        assert_eq!(p.tcpdump_program, PathBuf::from(fake));
    }
}
